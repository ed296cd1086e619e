//! A real browser against the panel: headless Debian chromium driven over
//! the W3C WebDriver protocol by chromedriver (a few JSON calls, so no
//! WebDriver crate). Logs in, creates a site and a server through the
//! forms, sees the server queued, watches job output and a status change
//! arrive live on the server page (EventSource), and finds the audit entry.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages
//! `chromium` and `chromium-driver`); the test installs them with apt when
//! they are missing.

mod api_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api_support::{catalog_and_pool, start, Backend};
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn ensure_browser() {
    if std::path::Path::new("/usr/bin/chromedriver").exists()
        && std::path::Path::new("/usr/bin/chromium").exists()
    {
        return;
    }
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver",
        ])
        .status()
        .expect("run apt-get");
    assert!(
        status.success(),
        "installing chromium and chromium-driver with apt failed"
    );
}

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        ensure_browser();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while d
            .http
            .get(format!("{}/status", d.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            }
        }}});
        let r = d.cmd("POST", "/session", Some(caps)).await;
        d.session = r["sessionId"].as_str().expect("a session id").to_string();
        d
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}/session", self.base)
        } else {
            format!("{}/session/{}{}", self.base, self.session, path)
        };
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(
            v["value"]["error"].is_null(),
            "webdriver {method} {path}: {v}"
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// How many elements match `css`.
    async fn count(&self, css: &str) -> usize {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .map_or(0, |a| a.len())
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Clicks a button that submits a form, then waits for the next page:
    /// until the clicked element is gone (stale) and the new document has
    /// loaded. Without this, the next lookup can race the navigation.
    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = format!("{}/session/{}/element/{e}/name", self.base, self.session);
            let v: Value = self
                .http
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let stale = !v["value"]["error"].is_null();
            if stale {
                let ready = self
                    .cmd(
                        "POST",
                        "/execute/sync",
                        Some(json!({"script": "return document.readyState", "args": []})),
                    )
                    .await;
                if ready == "complete" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no page load after clicking {css}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_create_a_server_and_see_it_audited() {
    let p = start(Backend::Sqlite, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    p.user("root", true).await;
    let d = Driver::start().await;

    d.goto(&format!("{}/servers", p.base)).await;
    assert!(
        d.url().await.ends_with("/login"),
        "anonymous visitors go to the login page"
    );
    d.type_into("#name", "root").await;
    d.type_into("#password", "root-password").await;
    d.click("#login").await;
    assert!(d.url().await.ends_with("/servers"));

    d.goto(&format!("{}/servers/new", p.base)).await;
    d.type_into("#site_name", "browser-site").await;
    d.type_into("#owner_email", "root@example.org").await;
    d.click("#create-site-button").await;
    assert!(d.url().await.ends_with("/servers/new"));
    d.click("#create").await;

    assert!(d.url().await.contains("/servers/"), "on the server page");
    assert_eq!(d.text("#hostname").await, "mws-00001.example.org");
    assert_eq!(d.text("#status").await, "requested");
    assert_eq!(d.text("#jobs .job-state").await, "queued");

    // Live: output written to the server's job and a status change reach
    // the open page through its EventSource, without a reload.
    let service_id: i64 = d.url().await.rsplit('/').next().unwrap().parse().unwrap();
    wait_for_text(&d, "#joblog-note", "Live.").await;
    let job = p
        .db()
        .store()
        .jobs(&keel_panel::queue::JobFilter {
            serial_key: Some(format!("service:{service_id}")),
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id;
    let log = keel_panel::queue::log::JobLog::open_with(
        p.db().store(),
        job,
        1,
        keel_panel::queue::log::JobLogConfig::default(),
    )
    .await
    .unwrap();
    log.message("TASK [common : install <b>packages</b>]");
    log.flush().await.unwrap();
    wait_for_text(&d, "#joblog", "TASK [common : install <b>packages</b>]").await;
    assert_eq!(
        d.count("#joblog b").await,
        0,
        "markup in a log line is text, not HTML"
    );
    {
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        use keel_panel::lifecycle::Status;
        let moved = keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &keel_panel::domain::Principal::system(),
            service_id,
            &[Status::Requested],
            Status::CreatingVm,
            None,
        )
        .await
        .unwrap();
        assert!(moved);
        tx.commit().await.unwrap();
    }
    wait_for_text(&d, "#status", "creating_vm").await;

    d.goto(&format!("{}/admin/audit", p.base)).await;
    let actions = d.text("#audit").await;
    assert!(actions.contains("service.create"), "{actions}");
    assert!(actions.contains("site.create"), "{actions}");
    d.cmd("DELETE", "", None).await;
}

/// The walk of issue #15: a site admin (not a platform admin) adds a user
/// to their site and an SSH key of their own through the pages, sees both
/// on the server page's "Who can log in", sees the `access` job those
/// changes queued (one, coalesced) in the job log, watches its output
/// arrive live, and cancels it with the job view's button. No worker runs
/// here: the job's output is written to its log as a role run would
/// (`access_flow.rs` runs the real thing on a container).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_admin_adds_a_user_and_a_key_and_watches_the_access_job() {
    let p = start(Backend::Sqlite, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    let (_, ann_token) = p.user("ann", false).await;
    p.user("bob", false).await;
    let ann = api_support::Cred::Bearer(ann_token);
    let r = p
        .call(
            "POST",
            "/api/v1/sites",
            &ann,
            Some(json!({"name": "ann-site", "owner_email": "ann@example.org"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let site_id = r.json["id"].as_i64().unwrap();
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &ann,
            Some(json!({"site_id": site_id, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let service_id = r.json["service"]["id"].as_i64().unwrap();
    // The server is ready (the flow itself is other tests' business), so
    // people changes queue access runs for it.
    {
        use keel_panel::lifecycle::Status;
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        let moved = keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &keel_panel::domain::Principal::system(),
            service_id,
            &[Status::Requested],
            Status::Ready,
            None,
        )
        .await
        .unwrap();
        assert!(moved);
        tx.commit().await.unwrap();
    }

    let d = Driver::start().await;
    d.goto(&format!("{}/login", p.base)).await;
    d.type_into("#name", "ann").await;
    d.type_into("#password", "ann-password").await;
    d.click("#login").await;

    // Sites → the site → add bob as an SSH-only user.
    d.goto(&format!("{}/sites", p.base)).await;
    d.click("#sites a").await;
    assert_eq!(d.text("h1").await, "Site ann-site");
    d.type_into("#member_user", "bob").await;
    d.click("#add-member-button").await;
    let members = words(&d.text("#members").await);
    assert!(members.contains("bob ssh"), "{members}");

    // My SSH keys → add one.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH ann@laptop";
    d.goto(&format!("{}/keys", p.base)).await;
    d.type_into("#key_name", "laptop").await;
    d.type_into("#public_key", key).await;
    d.click("#add-key").await;
    let keys = words(&d.text("#keys").await);
    assert!(keys.contains("laptop SHA256:"), "{keys}");

    // The server page: both can log in, and one access job waits.
    d.goto(&format!("{}/servers/{service_id}", p.base)).await;
    let logins = d.text("#logins").await;
    assert!(logins.contains("ann"), "{logins}");
    assert!(logins.contains("admin (sudo)"), "{logins}");
    assert!(logins.contains("bob"), "{logins}");
    assert!(logins.contains("SSH only"), "{logins}");
    assert!(logins.contains("SHA256:"), "ann's key is listed: {logins}");
    assert_eq!(
        d.count("#jobs tr[data-kind=access]").await,
        1,
        "two changes, one coalesced access job"
    );
    assert_eq!(
        d.text("#jobs tr[data-kind=access] .job-state").await,
        "queued"
    );
    let job = p
        .db()
        .store()
        .jobs(&keel_panel::queue::JobFilter {
            kind: Some("access".into()),
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id;

    // Its output arrives live on the open page.
    wait_for_text(&d, "#joblog-note", "Live.").await;
    let log = keel_panel::queue::log::JobLog::open_with(
        p.db().store(),
        job,
        1,
        keel_panel::queue::log::JobLogConfig::default(),
    )
    .await
    .unwrap();
    log.message("TASK [mwsusers : Accounts of the site's people]");
    log.message("changed: [flow] => (item=bob)");
    log.flush().await.unwrap();
    wait_for_text(&d, "#joblog", "changed: [flow] => (item=bob)").await;

    // The job view's cancel button.
    d.click("#jobs tr[data-kind=access] .cancel-job").await;
    assert!(d.url().await.ends_with(&format!("/servers/{service_id}")));
    assert_eq!(
        d.text("#jobs tr[data-kind=access] .job-state").await,
        "cancelled"
    );
    d.cmd("DELETE", "", None).await;
}

/// Text with every run of whitespace (a table's cell separators) one space.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Waits (up to 15 s) until the element's text contains `want`.
async fn wait_for_text(d: &Driver, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = d.text(css).await;
        if text.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {want:?}; it shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
