//! The attack pass's secrets check (issue 18): a user's password, an API
//! token, a vault password, a VM's private host key and a database root
//! password are planted through the API (the host key as the provision
//! step stores it), a flow uses each of them — logins right and wrong, a
//! password reset, a token used and revoked, a credential edited with a
//! bad request, a server's pages and inventory, its DB password changed —
//! and then every place a secret could leak is searched for each one: the
//! panel's own log output (captured at debug level), the job log, the job
//! rows, the audit rows, the server's SSE stream, `/metrics`, every answer
//! the flow got (errors included) except the one that hands the secret out
//! by design, and the pages. Both backends.

mod api_support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use api_support::{session_of, start, Backend, Cred, Panel, Reply};
use serde_json::json;

/// Everything the panel logs in this test process (all tests share it;
/// each test's secrets are its own random strings).
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let make = move || Capture(w.clone());
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(make)
            .with_ansi(false)
            .init();
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secret(what: &str) -> String {
    format!("{what}-{:016x}", fastrand::u64(..))
}

/// Answers collected as the flow goes (errors included).
#[derive(Default)]
struct Seen(String);

impl Seen {
    fn add(&mut self, what: &str, r: &Reply) -> serde_json::Value {
        self.0
            .push_str(&format!("\n{what} {} {:?} {}", r.status, r.headers, r.json));
        r.json.clone()
    }
}

async fn dump(p: &Panel, sql: &'static str) -> String {
    let mut rc = p.db().read().await.unwrap();
    let mut conn = rc.conn();
    let rows: Vec<(String,)> = keel_panel::fetch_all!(&mut conn, (String,), sql).unwrap();
    rows.into_iter().map(|r| r.0 + "\n").collect()
}

async fn planted_secrets_never_appear(b: Backend) {
    let logs = log_buffer();
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_path_buf();
    let p = start(b, move |c| c.data_dir = d).await;
    api_support::catalog_and_pool(&p, 3).await;
    let (_, root_token) = p.user("root", true).await;
    let root = Cred::Bearer(root_token.clone());
    let mut seen = Seen::default();

    // A user's password: created, used right and wrong, reset; a second
    // account with the same name (refused) carrying another one.
    let password = secret("user-password");
    let password2 = secret("user-password-two");
    let password3 = secret("user-password-dup");
    let r = p
        .call(
            "POST",
            "/api/v1/admin/users",
            &root,
            Some(json!({"name": "victim", "password": password})),
        )
        .await;
    let victim = seen.add("create user", &r)["id"]
        .as_i64()
        .expect("user created");
    let r = p.login("victim", &password).await;
    assert_eq!(r.status, 200);
    let sess = session_of(&r);
    seen.add("login", &r);
    seen.add(
        "wrong login",
        &p.login("victim", &format!("{password}x")).await,
    );
    seen.add(
        "dup user",
        &p.call(
            "POST",
            "/api/v1/admin/users",
            &root,
            Some(json!({"name": "victim", "password": password3})),
        )
        .await,
    );
    seen.add(
        "reset",
        &p.call(
            "PUT",
            &format!("/api/v1/admin/users/{victim}/password"),
            &root,
            Some(json!({"password": password2})),
        )
        .await,
    );
    seen.add(
        "old session",
        &p.call("GET", "/api/v1/me", &sess, None).await,
    );
    seen.add("login 2", &p.login("victim", &password2).await);

    // An API token: made (its one answer is not searched), used, revoked,
    // used again, and sent malformed.
    let r = p
        .call(
            "POST",
            "/api/v1/me/tokens",
            &root,
            Some(json!({"name": "ci", "expires_in_days": 1})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let token = r.json["secret"].as_str().unwrap().to_string();
    let token_id = r.json["token"]["id"].as_i64().unwrap();
    seen.add(
        "use token",
        &p.call("GET", "/api/v1/me", &Cred::Bearer(token.clone()), None)
            .await,
    );
    seen.add(
        "revoke",
        &p.call(
            "DELETE",
            &format!("/api/v1/me/tokens/{token_id}"),
            &root,
            None,
        )
        .await,
    );
    seen.add(
        "revoked token",
        &p.call("GET", "/api/v1/me", &Cred::Bearer(token.clone()), None)
            .await,
    );
    seen.add(
        "revoked token post",
        &p.call(
            "POST",
            "/api/v1/sites",
            &Cred::Bearer(token.clone()),
            Some(json!({"name": "x", "owner_email": "x@example.org"})),
        )
        .await,
    );
    seen.add(
        "bad header",
        &p.call_with(
            "GET",
            "/api/v1/me",
            &Cred::Anonymous,
            None,
            &[("authorization", &format!("Token {token}"))],
        )
        .await,
    );

    // A vault password: stored, listed, edited with a bad request.
    let vault = secret("vault-password");
    let vault2 = secret("vault-password-two");
    let r = p
        .call(
            "POST",
            "/api/v1/credentials",
            &root,
            Some(json!({"name": "vault", "kind": "vault_password", "secret": vault})),
        )
        .await;
    let cred = seen.add("credential", &r)["id"]
        .as_i64()
        .expect("credential");
    seen.add(
        "credentials",
        &p.call("GET", "/api/v1/credentials", &root, None).await,
    );
    seen.add(
        "credential",
        &p.call("GET", &format!("/api/v1/credentials/{cred}"), &root, None)
            .await,
    );
    seen.add(
        "bad edit",
        &p.call(
            "PUT",
            &format!("/api/v1/credentials/{cred}"),
            &root,
            Some(json!({"name": "", "kind": "vault_password", "secret": vault2})),
        )
        .await,
    );
    seen.add(
        "bad kind",
        &p.call(
            "PUT",
            &format!("/api/v1/credentials/{cred}"),
            &root,
            Some(json!({"name": "v", "kind": "no-such-kind", "secret": vault2})),
        )
        .await,
    );

    // A server, ready, whose VM's private host key is where the provision
    // step keeps it until the seed is built.
    let r = p
        .call(
            "POST",
            "/api/v1/sites",
            &root,
            Some(json!({"name": "s", "owner_email": "o@example.org"})),
        )
        .await;
    let site = seen.add("site", &r)["id"].as_i64().unwrap();
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &root,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    let service = seen.add("service", &r)["service"]["id"].as_i64().unwrap();
    let host_key = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----",
        secret("host-key")
    );
    {
        use keel_panel::lifecycle::Status;
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        keel_panel::execute!(
            &mut conn,
            "INSERT INTO vm_provisioning (service_id, vm_name, pool_type, callback_secret, host_key_public, host_key_private, created_at, updated_at) \
             VALUES ($1, $2, 'public', $3, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH', $4, 0, 0)",
            service,
            format!("keel-{service}"),
            "5a".repeat(32),
            host_key.as_str()
        )
        .unwrap();
        keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &keel_panel::domain::Principal::system(),
            service,
            &[Status::Requested],
            Status::Ready,
            None,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    for path in [
        format!("/api/v1/services/{service}"),
        "/api/v1/services".to_string(),
        "/api/v1/inventory".to_string(),
        format!("/api/v1/inventory?host=keel-{service}"),
        format!("/api/v1/services/{service}/access"),
        format!("/api/v1/services/{service}/jobs"),
    ] {
        seen.add(&path, &p.call("GET", &path, &root, None).await);
    }

    // A database root password: answered once (that answer is the one
    // place it may be), then looked for everywhere else.
    let r = p
        .call(
            "POST",
            &format!("/api/v1/services/{service}/db-password"),
            &root,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    let db_password = r.json["password"]
        .as_str()
        .expect("the password, once")
        .to_string();
    seen.add(
        "db password again",
        &p.call(
            "POST",
            &format!("/api/v1/services/{service}/db-password"),
            &sess,
            None,
        )
        .await,
    );
    for path in [
        format!("/servers/{service}"),
        "/admin/audit".to_string(),
        "/admin/jobs".to_string(),
        "/credentials".to_string(),
        "/keys".to_string(),
    ] {
        seen.add(&path, &p.call("GET", &path, &root, None).await);
    }
    seen.add(
        "audit api",
        &p.call("GET", "/api/v1/admin/audit?limit=500", &root, None)
            .await,
    );
    seen.add(
        "jobs api",
        &p.call("GET", "/api/v1/admin/jobs", &root, None).await,
    );
    seen.add(
        "metrics",
        &p.call("GET", "/metrics", &Cred::Anonymous, None).await,
    );

    // The server's event stream, for as long as it gives within 3 s.
    let mut sse = String::new();
    let mut resp = p
        .client
        .get(format!("{}/api/v1/services/{service}/events", p.base))
        .bearer_auth(&root_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(3), resp.chunk()).await
    {
        sse.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(sse.contains("event:"), "the stream gave nothing: {sse:?}");

    let stores = [
        ("the job log", dump(&p, "SELECT CAST(line AS TEXT) FROM job_log").await),
        ("the jobs", dump(&p, "SELECT CAST(payload AS TEXT) || COALESCE(last_error, '') FROM jobs").await),
        ("the audit rows", dump(&p, "SELECT action || COALESCE(before_json, '') || COALESCE(after_json, '') FROM audit_log").await),
    ];
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        logged.contains("keel_panel") || logged.contains("DEBUG"),
        "the log capture caught nothing"
    );
    let places = [
        ("the panel's log", logged),
        ("the SSE stream", sse),
        ("the answers", seen.0),
    ];
    for (what, value) in [
        ("the user password", &password),
        ("the reset password", &password2),
        ("the refused account's password", &password3),
        ("the API token", &token),
        ("the vault password", &vault),
        ("the refused vault password", &vault2),
        ("the VM's private host key", &host_key),
        ("the database root password", &db_password),
    ] {
        // The key's random middle line, without its armour.
        let needle = value.lines().nth(1).unwrap_or(value);
        for (place, text) in places.iter().chain(stores.iter()) {
            assert!(!text.contains(needle), "{what} appears in {place}");
        }
    }
}
both_backends!(planted_secrets_never_appear_, planted_secrets_never_appear);
