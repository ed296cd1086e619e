//! The attack pass's server-side request forgery tests (issue 18): every
//! location an admin types in — a git project's URL, an HTTP inventory, a
//! webhook — is tried against loopback, link-local and the cloud metadata
//! address, by literal address, by a name that resolves there
//! (`localhost`) and by a redirect from an allowed server. A bait listener
//! on each refused address counts connections: the guard must refuse
//! before connecting, so the count stays 0. Controls show the same
//! requests do connect when `outbound.allow_internal` allows the address,
//! so the bait would have seen a connection. Both backends.

mod api_support;

use std::net::{IpAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use api_support::{start, Backend, Cred, Panel};
use keel_panel::automation::{self, Automation};
use keel_panel::provision::Provisioner;
use keel_panel::queue::worker::{Registry, Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A TCP listener that only counts the connections it is offered.
struct Bait {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn bait(ip: &str) -> Bait {
    let l = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            h.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    Bait { port, hits }
}

impl Bait {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn worker(p: &Panel) -> Worker {
    let prov = Provisioner::new(p.db().clone(), None, &p.state.config).unwrap();
    let a = Automation::new(Arc::new(prov)).unwrap();
    let mut reg = Registry::new();
    automation::register(&mut reg, Arc::new(a));
    Worker::new(p.db().store().clone(), reg, WorkerConfig::default())
}

async fn ok(p: &Panel, method: &str, path: &str, c: &Cred, body: Option<Value>) -> Value {
    let r = p.call(method, path, c, body).await;
    assert!(
        r.status.is_success(),
        "{method} {path}: {} {}",
        r.status,
        r.json
    );
    r.json
}

/// A git project with `url`, synced now: the answer.
async fn sync_git(p: &Panel, admin: &Cred, url: &str) -> (StatusCode, Value) {
    let proj = ok(
        p,
        "POST",
        "/api/v1/projects",
        admin,
        Some(json!({"name": format!("p{}", fastrand::u32(..)), "kind": "git", "git_url": url})),
    )
    .await;
    let r = p
        .call(
            "POST",
            &format!("/api/v1/projects/{}/sync", proj["id"]),
            admin,
            None,
        )
        .await;
    (r.status, r.json)
}

/// A directory project with a trivial playbook, an HTTP inventory at
/// `inv_url` and a webhook target at `hook_url` told of failures; one run
/// launched and worked off (with the notification). The run and the
/// notify job's last error.
async fn run_with(
    p: &Panel,
    admin: &Cred,
    w: &Worker,
    inv_url: &str,
    hook_url: &str,
) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ping:\n",
    )
    .unwrap();
    let n = fastrand::u32(..);
    let project = ok(
        p,
        "POST",
        "/api/v1/projects",
        admin,
        Some(json!({"name": format!("d{n}"), "kind": "directory", "path": dir.path()})),
    )
    .await;
    let inv = ok(
        p,
        "POST",
        "/api/v1/inventories",
        admin,
        Some(json!({"name": format!("i{n}"), "kind": "http", "url": inv_url})),
    )
    .await;
    let hook = ok(
        p,
        "POST",
        "/api/v1/notification-targets",
        admin,
        Some(
            json!({"name": format!("h{n}"), "kind": "webhook", "address": hook_url, "secret": "k"}),
        ),
    )
    .await;
    let tpl = ok(
        p,
        "POST",
        "/api/v1/templates",
        admin,
        Some(json!({"name": format!("t{n}"), "project_id": project["id"], "playbook": "site.yml", "inventory_id": inv["id"],
                    "notifications": [{"target_id": hook["id"], "on_success": true, "on_failure": true, "on_drift": false}]})),
    )
    .await;
    let run = ok(
        p,
        "POST",
        &format!("/api/v1/templates/{}/launch", tpl["id"]),
        admin,
        None,
    )
    .await;
    w.run_until_idle().await.unwrap();
    let run = ok(
        p,
        "GET",
        &format!("/api/v1/runs/{}", run["id"]),
        admin,
        None,
    )
    .await;
    let mut rc = p.db().read().await.unwrap();
    let mut conn = rc.conn();
    let err = keel_panel::scalar!(
        &mut conn,
        Option<String>,
        "SELECT last_error FROM jobs WHERE kind = 'notify' ORDER BY id DESC LIMIT 1"
    )
    .unwrap()
    .flatten()
    .unwrap_or_default();
    drop(dir);
    (run, err)
}

/// An HTTP server on `ip` answering every request with `answer`.
async fn server(ip: &str, answer: axum::routing::MethodRouter) -> u16 {
    let listener = tokio::net::TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(answer);
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

async fn defaults_refuse_internal_addresses(b: Backend) {
    // The defaults: loopback, link-local and metadata refused.
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_path_buf();
    let p = start(b, move |c| {
        c.data_dir = d;
        c.outbound = Default::default();
    })
    .await;
    let (_, token) = p.user("root", true).await;
    let admin = Cred::Bearer(token);
    let lo = bait("127.0.0.1");

    // Git: literal loopback, a name that resolves to it, metadata, git://,
    // ssh:// and scp-like. (IPv6 literals never get this far: a git URL
    // with `::` is refused when saved, as a remote-helper form.)
    for (url, class) in [
        (format!("http://127.0.0.1:{}/r.git", lo.port), "loopback"),
        (format!("http://localhost:{}/r.git", lo.port), "loopback"),
        (
            format!("https://user:pw@localhost:{}/r.git", lo.port),
            "loopback",
        ),
        (
            "http://169.254.169.254/latest/meta-data".to_string(),
            "cloud metadata",
        ),
        (format!("git://127.0.0.1:{}/r.git", lo.port), "loopback"),
        (format!("ssh://git@127.0.0.1:{}/r.git", lo.port), "loopback"),
        ("git@localhost:r.git".to_string(), "loopback"),
        ("http://0.0.0.0/r.git".to_string(), "unspecified"),
    ] {
        let (status, body) = sync_git(&p, &admin, &url).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["field"], "git_url", "{url}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(class),
            "{url}: {body}"
        );
        assert!(
            !body.to_string().contains(":pw@"),
            "{url}: the password shown: {body}"
        );
    }
    assert_eq!(lo.hits(), 0, "git connected to a refused address");

    // An HTTP inventory and a webhook: the run fails for good on the
    // inventory, and the failure's webhook is refused for good too.
    let w = worker(&p);
    for (inv, hook, class) in [
        (
            format!("http://localhost:{}/inv", lo.port),
            format!("http://127.0.0.1:{}/hook", lo.port),
            "loopback",
        ),
        (
            "http://169.254.169.254/inv".to_string(),
            "http://169.254.169.254/hook".to_string(),
            "cloud metadata",
        ),
        (
            "http://[fe80::1]:80/inv".to_string(),
            format!("http://localhost:{}/hook", lo.port),
            "link-local",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{}/inv", lo.port),
            format!("http://[::1]:{}/hook", lo.port),
            "loopback",
        ),
    ] {
        let (run, hook_err) = run_with(&p, &admin, &w, &inv, &hook).await;
        assert_eq!(run["status"], "failed", "{inv}: {run}");
        assert!(
            run["error"].as_str().unwrap_or("").contains(class),
            "{inv}: {run}"
        );
        assert!(hook_err.contains("refused"), "{hook}: {hook_err}");
    }
    assert_eq!(
        lo.hits(),
        0,
        "an inventory or webhook fetch connected to a refused address"
    );
}
both_backends!(
    defaults_refuse_internal_addresses_,
    defaults_refuse_internal_addresses
);

async fn allow_list_and_redirects(b: Backend) {
    // 127.0.0.1 allowed (as a test setup would); 127.0.0.2 still refused.
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_path_buf();
    let p = start(b, move |c| {
        c.data_dir = d;
        c.outbound = Default::default();
        c.outbound.allow_internal = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let (_, token) = p.user("root", true).await;
    let admin = Cred::Bearer(token);
    let allowed = bait("127.0.0.1");
    let refused = bait("127.0.0.2");

    // The control: git does connect where the list allows.
    let (status, body) = sync_git(
        &p,
        &admin,
        &format!("http://127.0.0.1:{}/r.git", allowed.port),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(allowed.hits() > 0, "the control did not connect");
    let (status, body) = sync_git(
        &p,
        &admin,
        &format!("http://127.0.0.2:{}/r.git", refused.port),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // An allowed server that redirects to a refused address.
    let to = format!("http://127.0.0.2:{}/x", refused.port);
    let redirect = server(
        "127.0.0.1",
        axum::routing::any(move || {
            let to = to.clone();
            async move { axum::response::Redirect::temporary(&to) }
        }),
    )
    .await;
    let redirect_meta = server(
        "127.0.0.1",
        axum::routing::any(|| async {
            axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data/")
        }),
    )
    .await;
    let inventory = server(
        "127.0.0.1",
        axum::routing::get(|| async {
            axum::Json(json!({"all": {"hosts": []}, "_meta": {"hostvars": {}}}))
        }),
    )
    .await;
    let hooked = Arc::new(AtomicUsize::new(0));
    let h = hooked.clone();
    let hook = server(
        "127.0.0.1",
        axum::routing::post(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::NO_CONTENT }
        }),
    )
    .await;
    let w = worker(&p);
    for target in [
        format!("http://127.0.0.1:{redirect}/inv"),
        format!("http://127.0.0.1:{redirect_meta}/inv"),
    ] {
        let (run, hook_err) = run_with(
            &p,
            &admin,
            &w,
            &target,
            &format!("http://127.0.0.1:{redirect}/hook"),
        )
        .await;
        assert_eq!(run["status"], "failed", "{target}: {run}");
        let err = run["error"].as_str().unwrap_or("");
        assert!(err.contains("refused"), "{target}: {run}");
        // Webhooks follow no redirect at all.
        assert!(
            !hook_err.is_empty(),
            "the redirected webhook was taken as delivered"
        );
    }
    assert_eq!(refused.hits(), 0, "a redirect led to a refused address");

    // The control: an allowed inventory and webhook work.
    let (run, hook_err) = run_with(
        &p,
        &admin,
        &w,
        &format!("http://127.0.0.1:{inventory}/inv"),
        &format!("http://127.0.0.1:{hook}/hook"),
    )
    .await;
    assert!(
        !run["error"].as_str().unwrap_or("").contains("inventory"),
        "{run}"
    );
    assert_eq!(
        hooked.load(Ordering::SeqCst),
        1,
        "the allowed webhook was not delivered: {hook_err}"
    );
}
both_backends!(allow_list_and_redirects_, allow_list_and_redirects);

#[test]
fn test_config_allows_loopback_explicitly() {
    // The other tests' receivers are on loopback: their config says so.
    let c = api_support::test_config();
    assert!(c
        .outbound
        .allow_internal
        .iter()
        .any(|n| n.contains(&"127.0.0.1".parse::<IpAddr>().unwrap())));
}
