//! A server's console in a real browser (issue #21), on the real container
//! driver (`systemd-nspawn`, as the flow tests) and headless chromium over
//! WebDriver (`browser_support/`):
//!
//! - a site admin logs in, opens the console from the server's page, types
//!   a command into the xterm.js terminal and reads its output back from
//!   the terminal's buffer: the shell runs on the container, as their own
//!   account there (`id -un`);
//! - an SSH-only member of the site is refused the WebSocket upgrade (403),
//!   an outsider is told the server does not exist (404), and an upgrade
//!   that carries the site admin's own session cookie from another origin
//!   is refused (403) where the same upgrade from the panel's origin
//!   switches protocols (101);
//! - logging out (here from another tab, through the API) closes the open
//!   console within seconds, and the page says why;
//! - the audit log has the console's `console.open` and `console.close`
//!   rows (the kind, the account, the reason; never the keystrokes).
//!
//! Needs root, the built image, chromium and chromedriver; skips without
//! the first two (or fails when `KEEL_REQUIRE_REAL` is set).

mod api_support;
mod browser_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api_support::Cred;
use browser_support::Driver;
use flow_support::{FlowPanel, WAIT};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Waits until every `access` job of the service has succeeded.
async fn access_settled(f: &FlowPanel, id: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let detail = f.service(id).await;
        let jobs: Vec<Value> = detail["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["kind"] == "access")
            .cloned()
            .collect();
        if !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| j["state"] != "queued" && j["state"] != "running")
        {
            for j in &jobs {
                assert_eq!(j["state"], "succeeded", "{j}");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "access jobs still running: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A WebSocket upgrade request for the console, as a browser would send
/// it; returns the status and the JSON error, if any.
async fn upgrade(base: &str, id: i64, headers: &[(&str, String)]) -> (reqwest::StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .get(format!("{base}/api/v1/services/{id}/console"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = if status == reqwest::StatusCode::SWITCHING_PROTOCOLS {
        Value::Null
    } else {
        resp.json().await.unwrap_or(Value::Null)
    };
    (status, body)
}

/// The terminal's text, as the page's script reads it from xterm.js's
/// buffer.
async fn terminal_text(d: &Driver) -> String {
    d.script("return window.keelConsole ? window.keelConsole.text() : ''")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn wait_terminal(d: &Driver, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = terminal_text(d).await;
        if text.contains(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the terminal never showed {want:?}; it shows:\n{text}\nstate: {}",
            d.text("#console-state").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_state(d: &Driver, want: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let state = d
            .script("return window.keelConsole ? window.keelConsole.state() : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state == want {
            return d.text("#console-state").await;
        }
        assert!(
            Instant::now() < deadline,
            "the console is {state:?}, not {want:?}, after {secs} s: {}",
            d.text("#console-state").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The service's audit rows of `action`, oldest first.
async fn audit_rows(f: &FlowPanel, id: i64, action: &str) -> Vec<Value> {
    let r = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=200"),
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await;
    let mut rows: Vec<Value> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect();
    rows.sort_by_key(|e| e["id"].as_i64());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_admin_runs_a_command_in_the_console_and_logout_closes_it() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let playbook = repo().join("playbooks/access.yml");
    let mut f = FlowPanel::start_with(23, 1, move |c| c.access.playbook = playbook).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    f.wait_status(id, "ready").await;

    // A site admin and an SSH-only member; the access run gives both an
    // account on the container.
    let (_, _ann_t) = f.panel.user("ann", false).await;
    let (_, bob_t) = f.panel.user("bob", false).await;
    let (_, carl_t) = f.panel.user("carl", false).await;
    for (user, role) in [("ann", "admin"), ("bob", "ssh")] {
        let r = f
            .panel
            .call(
                "PUT",
                &format!("/api/v1/sites/{}/members", f.site),
                &f.owner,
                Some(json!({"user": user, "role": role})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    access_settled(&f, id).await;

    let base = f.panel.base.clone();
    let origin = base.trim_end_matches('/').to_string();
    let d = Driver::start().await;
    d.set_window(1280, 1000).await;
    d.goto(&format!("{base}/login")).await;
    d.type_into("#name", "ann").await;
    d.type_into("#password", "ann-password").await;
    d.click("#login").await;
    d.goto(&format!("{base}/servers/{id}")).await;
    d.click("#open-console").await;
    assert!(
        d.url().await.ends_with(&format!("/servers/{id}/console")),
        "{}",
        d.url().await
    );
    wait_state(&d, "open", 30).await;
    // A prompt first, then the command; Enter is WebDriver's U+E007.
    wait_terminal(&d, "$").await;
    d.type_into(
        ".xterm-helper-textarea",
        "echo keel-$((6*7)) as $(id -un)\u{E007}",
    )
    .await;
    let text = wait_terminal(&d, "keel-42 as ann").await;
    eprintln!("terminal:\n{text}");
    d.screenshot("console").await;
    let a11y = d.serious_a11y_violations().await;
    assert!(a11y.is_empty(), "console page: {a11y:#?}");

    // Refusals on the upgrade itself.
    let (bob_status, bob_body) =
        upgrade(&base, id, &[("Authorization", format!("Bearer {bob_t}"))]).await;
    assert_eq!(bob_status, 403, "SSH-only member: {bob_body}");
    let (carl_status, _) =
        upgrade(&base, id, &[("Authorization", format!("Bearer {carl_t}"))]).await;
    assert_eq!(carl_status, 404, "an outsider learns nothing");
    let cookie = d.cmd("GET", "/cookie/keel_session", None).await["value"]
        .as_str()
        .expect("the session cookie")
        .to_string();
    let session = format!("keel_session={cookie}");
    let (evil, body) = upgrade(
        &base,
        id,
        &[
            ("Cookie", session.clone()),
            ("Origin", "http://evil.example".to_string()),
        ],
    )
    .await;
    assert_eq!(evil, 403, "cross-origin upgrade: {body}");
    assert_eq!(body["error"], "cross_origin", "{body}");
    let (no_origin, _) = upgrade(&base, id, &[("Cookie", session.clone())]).await;
    assert_eq!(no_origin, 403, "a cookie without an Origin");
    let (own, body) = upgrade(
        &base,
        id,
        &[("Cookie", session.clone()), ("Origin", origin.clone())],
    )
    .await;
    assert_eq!(own, 101, "the same upgrade from the panel's origin: {body}");

    // The console page is still open; logging out from elsewhere ends the
    // session, and with it the console.
    let csrf = d
        .script("return document.querySelector('input[name=csrf]').value")
        .await
        .as_str()
        .unwrap()
        .to_string();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/logout"))
        .header("Cookie", &session)
        .header("X-CSRF-Token", &csrf)
        .header("Origin", &origin)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "logout: {}", r.status());
    let closed = wait_state(&d, "closed", 15).await;
    assert!(closed.contains("session ended"), "{closed}");

    // Audited: who, which server, what kind, as whom, why it closed.
    let opens = audit_rows(&f, id, "console.open").await;
    assert!(opens.len() >= 2, "{opens:?}");
    let first: Value = serde_json::from_str(opens[0]["after_json"].as_str().unwrap()).unwrap();
    assert_eq!(opens[0]["actor_name"], "ann");
    assert_eq!(first["kind"], "ssh");
    assert_eq!(first["account"], "ann");
    let deadline = Instant::now() + Duration::from_secs(10);
    let closes = loop {
        let closes = audit_rows(&f, id, "console.close").await;
        if closes.len() >= opens.len() {
            break closes;
        }
        assert!(
            Instant::now() < deadline,
            "closes {closes:?} for opens {opens:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reasons: Vec<String> = closes
        .iter()
        .map(|c| {
            let after: Value = serde_json::from_str(c["after_json"].as_str().unwrap()).unwrap();
            assert!(after["duration_secs"].as_i64().is_some(), "{after}");
            after["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        reasons.contains(&"session_ended".to_string()),
        "{reasons:?}"
    );
    for row in opens.iter().chain(closes.iter()) {
        let text = row["after_json"].as_str().unwrap();
        assert!(
            !text.contains("keel-"),
            "keystrokes in the audit log: {text}"
        );
    }
}
