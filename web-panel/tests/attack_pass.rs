//! The attack pass on the panel's HTTP side (issue 18): each test tries an
//! attack against a real server and checks it fails. Security headers and
//! CSP on every answer (HSTS over TLS), `/metrics` closed to a network and
//! a token, cross-site request forgery against every state-changing API
//! route (walked from `api::all_routes()`) and every page form (read from
//! the `ui/` router's source), session fixation, revoked and expired
//! tokens on two nodes, and login brute force from 50 concurrent
//! attackers on several source addresses, on one node and on two nodes
//! sharing PostgreSQL. Both backends where the store matters.
//! Results are tabled in `docs/reliability.md` ("Attack pass").

mod api_support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api_support::{session_of, start, Backend, Cred, Panel};
use keel_panel::api::all_routes;
use keel_panel::db::Db;
use keel_panel::http::guard::{CONTENT_SECURITY_POLICY, HSTS};
use keel_panel::http::AppState;
use keel_panel::server;
use keel_panel::store::Store;
use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A second panel node on the first one's database and clock, as a
/// second `keel-panel serve` on the same PostgreSQL would be.
struct Node {
    base: String,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn second_node(p: &Panel) -> Node {
    let store = Store::connect(&p.url)
        .await
        .unwrap()
        .with_clock(p.clock.clone());
    let db = Db::from_store(store, &p.url).await.unwrap();
    let state = AppState::new(db, (*p.state.config).clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(state, listener, shutdown.clone()));
    Node { base, shutdown }
}

async fn count(p: &Panel, sql: &'static str) -> i64 {
    let mut rc = p.db().read().await.unwrap();
    let mut conn = rc.conn();
    keel_panel::scalar!(&mut conn, i64, sql)
        .unwrap()
        .unwrap_or(0)
}

/// What a refused request may have changed: audit rows, jobs, sessions,
/// tokens.
async fn footprint(p: &Panel) -> [i64; 4] {
    [
        count(p, "SELECT COUNT(*) FROM audit_log").await,
        count(p, "SELECT COUNT(*) FROM jobs").await,
        count(p, "SELECT COUNT(*) FROM sessions").await,
        count(p, "SELECT COUNT(*) FROM api_tokens").await,
    ]
}

// ---------------------------------------------------------------------
// Headers

fn assert_security_headers(what: &str, h: &reqwest::header::HeaderMap) {
    let get = |n: &str| {
        h.get(n)
            .unwrap_or_else(|| panic!("{what}: no {n} header"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let csp = get("content-security-policy");
    assert_eq!(csp, CONTENT_SECURITY_POLICY, "{what}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("referrer-policy"), "same-origin", "{what}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
}

async fn security_headers_on_every_answer(b: Backend) {
    let p = start(b, |_| {}).await;
    p.user("alice", false).await;
    let sess = session_of(&p.login("alice", "alice-password").await);
    for (method, path, cred) in [
        ("GET", "/login", Cred::Anonymous),
        ("GET", "/servers", sess.clone()),
        ("GET", "/sites", sess.clone()),
        ("GET", "/servers/999999", sess.clone()),
        ("GET", "/api/v1/me", sess.clone()),
        ("GET", "/api/v1/me", Cred::Anonymous),
        ("GET", "/api/v1/openapi.json", Cred::Anonymous),
        ("GET", "/metrics", Cred::Anonymous),
        ("GET", "/static/keel.js", Cred::Anonymous),
        ("GET", "/no/such/page", Cred::Anonymous),
        ("POST", "/api/v1/auth/login", Cred::Anonymous),
    ] {
        let r = p.call(method, path, &cred, None).await;
        assert_security_headers(&format!("{method} {path} -> {}", r.status), &r.headers);
        assert!(
            r.headers.get("strict-transport-security").is_none(),
            "HSTS over plain HTTP: {path}"
        );
    }
    // What the pages load instead of inline code, with its real type.
    let r = p
        .call("GET", "/static/keel.js", &Cred::Anonymous, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let r = p
        .call("GET", "/static/keel.css", &Cred::Anonymous, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}
both_backends!(
    security_headers_on_every_answer_,
    security_headers_on_every_answer
);

/// The CSP allows no inline script or style, so no template may need one:
/// no `<script>` without `src`, no `on…=` handler, no `style` element or
/// attribute, no `javascript:` URL. (The browser tests run the pages under
/// the policy, so a violation there would also show as a dead page.)
#[test]
fn templates_need_no_inline_script_or_style() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let html = std::fs::read_to_string(&path).unwrap().to_lowercase();
        let name = path.display();
        let mut rest = html.as_str();
        while let Some(i) = rest.find("<script") {
            let tag_end = rest[i..].find('>').unwrap() + i;
            assert!(
                rest[i..tag_end].contains(" src="),
                "{name}: inline <script>"
            );
            rest = &rest[tag_end..];
        }
        assert!(!html.contains("<style"), "{name}: <style> element");
        assert!(!html.contains(" style=\""), "{name}: style attribute");
        assert!(!html.contains("javascript:"), "{name}: javascript: URL");
        let bytes = html.as_bytes();
        for (i, _) in html.match_indices(" on") {
            let word: String = html[i + 3..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            let after = bytes.get(i + 3 + word.len()).copied();
            assert!(
                word.is_empty() || after != Some(b'='),
                "{name}: inline handler on{word}="
            );
        }
        checked += 1;
    }
    assert!(checked > 10, "read only {checked} templates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_only_when_serving_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success());
    let mut config = api_support::test_config();
    config.tls.cert_file = cert.display().to_string();
    config.tls.key_file = key.display().to_string();
    let url = format!("sqlite://{}", dir.path().join("panel.db").display());
    let state = AppState::new(Db::open(&url).await.unwrap(), config.clone()).unwrap();
    let tls = server::tls_config(&config.tls.cert_file, &config.tls.key_file).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve_tls(state, listener, tls, shutdown.clone()));
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for path in ["/login", "/api/v1/me", "/metrics"] {
        let r = client
            .get(format!("https://localhost:{port}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some(HSTS),
            "{path}"
        );
        assert_security_headers(path, r.headers());
    }
    shutdown.cancel();
}

// ---------------------------------------------------------------------
// /metrics

async fn metrics_restricted_to_token_and_network(b: Backend) {
    // The default stays open, as before.
    let p = start(b, |_| {}).await;
    let r = p.call("GET", "/metrics", &Cred::Anonymous, None).await;
    assert_eq!(r.status, StatusCode::OK);
    drop(p);

    // A network the test's loopback peer is not in.
    let p = start(b, |c| {
        c.metrics.allow_from = vec!["10.9.9.0/24".parse().unwrap()]
    })
    .await;
    let r = p.call("GET", "/metrics", &Cred::Anonymous, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.json);
    assert!(!r.json.to_string().contains("keel_http_requests_total"));
    drop(p);
    let p = start(b, |c| {
        c.metrics.allow_from = vec!["127.0.0.0/8".parse().unwrap()]
    })
    .await;
    let r = p.call("GET", "/metrics", &Cred::Anonymous, None).await;
    assert_eq!(r.status, StatusCode::OK);
    drop(p);

    // A token.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.token");
    std::fs::write(&file, "scrape-secret-1\n").unwrap();
    let f = file.display().to_string();
    let p = start(b, |c| c.metrics.token_file = f).await;
    let (_, admin_token) = p.user("root", true).await;
    let admin_session = session_of(&p.login("root", "root-password").await);
    for (what, cred) in [
        ("no token", Cred::Anonymous),
        ("a wrong token", Cred::Bearer("scrape-secret-2".into())),
        ("an admin's API token", Cred::Bearer(admin_token.clone())),
        ("an admin's session", admin_session),
    ] {
        let r = p.call("GET", "/metrics", &cred, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", r.json);
        assert!(
            !r.json.to_string().contains("keel_http"),
            "{what}: metrics leaked"
        );
    }
    let r = p
        .call(
            "GET",
            "/metrics",
            &Cred::Bearer("scrape-secret-1".into()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r
        .json
        .as_str()
        .unwrap()
        .contains("keel_http_requests_total"));
    // Replaced without a restart.
    std::fs::write(&file, "scrape-secret-2").unwrap();
    let r = p
        .call(
            "GET",
            "/metrics",
            &Cred::Bearer("scrape-secret-1".into()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = p
        .call(
            "GET",
            "/metrics",
            &Cred::Bearer("scrape-secret-2".into()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The metrics token is no API token.
    let r = p
        .call(
            "GET",
            "/api/v1/me",
            &Cred::Bearer("scrape-secret-2".into()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
both_backends!(
    metrics_restricted_to_token_and_network_,
    metrics_restricted_to_token_and_network
);

// ---------------------------------------------------------------------
// CSRF

/// `/sites/{id}/members/{user_id}` → `/sites/1/members/1`: the refusal
/// comes before any handler, so the ids need not exist.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').unwrap() + i;
        out.push_str(if &rest[i + 1..end] == "name" {
            "staff"
        } else {
            "1"
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn api_csrf_on_every_state_changing_route(b: Backend) {
    let p = start(b, |_| {}).await;
    p.user("root", true).await;
    let sess = session_of(&p.login("root", "root-password").await);
    let Cred::Session { cookie, csrf } = sess.clone() else {
        unreachable!()
    };
    let routes: Vec<_> = all_routes()
        .filter(|r| r.0 != "GET")
        // The logins act on their body's credentials, not the session's.
        .filter(|r| r.1 != "/auth/login")
        .collect();
    assert!(
        routes.len() > 40,
        "only {} state-changing routes",
        routes.len()
    );
    let before = footprint(&p).await;
    for (method, path, _, _) in &routes {
        let url = format!("/api/v1{}", concrete(path));
        let forged = [
            ("no token", None),
            ("an empty token", Some(String::new())),
            ("a wrong token", Some("0".repeat(64))),
            (
                "a token one character off",
                Some(csrf[..63].to_string() + "x"),
            ),
        ];
        for (what, header) in forged {
            let mut req = p
                .client
                .request(method.parse().unwrap(), format!("{}{url}", p.base))
                .header("cookie", format!("keel_session={cookie}"))
                .json(&json!({}));
            if let Some(h) = header {
                req = req.header("x-csrf-token", h);
            }
            let r = req.send().await.unwrap();
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {url} with {what}: {body}"
            );
            assert_eq!(body["error"], "csrf", "{method} {url} with {what}");
        }
        // A form-encoded body with a csrf field does not stand in for the
        // header on the API when the header is wrong.
        let r = p
            .client
            .request(method.parse().unwrap(), format!("{}{url}", p.base))
            .header("cookie", format!("keel_session={cookie}"))
            .header("x-csrf-token", "wrong")
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "{method} {url}: header wrong, form right"
        );
        // The right token, but sent by a browser from another site.
        let r = p
            .call_with(
                method,
                &url,
                &sess,
                Some(json!({})),
                &[("origin", "https://evil.example")],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {url} cross-origin"
        );
        let r = p
            .call_with(
                method,
                &url,
                &sess,
                Some(json!({})),
                &[("sec-fetch-site", "cross-site")],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {url} cross-site");
    }
    assert_eq!(
        footprint(&p).await,
        before,
        "a refused request changed something"
    );

    // The control: with the token, from the panel's own origin, the same
    // requests get past the check (to their handlers' own answers).
    let host = p.base.trim_start_matches("http://").to_string();
    let origin = p.base.clone();
    let mut controls: Vec<_> = routes.clone();
    controls.sort_by_key(|r| r.1 == "/auth/logout");
    for (method, path, _, _) in controls {
        let url = format!("/api/v1{}", concrete(path));
        let r = p
            .call_with(
                method,
                &url,
                &sess,
                Some(json!({})),
                &[
                    ("origin", origin.as_str()),
                    ("sec-fetch-site", "same-origin"),
                ],
            )
            .await;
        assert_ne!(
            r.json["error"], "csrf",
            "{method} {url} with the token ({host}): {:?}",
            r.json
        );
    }
}
both_backends!(
    api_csrf_on_every_state_changing_route_,
    api_csrf_on_every_state_changing_route
);

/// Every `.route("PATH", … post(…) …)` in `src/ui/`: the page forms. Read
/// from the source so a new form is walked the day it is added.
fn ui_post_routes() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ui");
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, _) in src.match_indices(".route(") {
            let rest = &src[i + 7..];
            let q1 = rest.find('"').unwrap();
            let q2 = rest[q1 + 1..].find('"').unwrap() + q1 + 1;
            let path = &rest[q1 + 1..q2];
            // The call's own text, to its closing parenthesis.
            let mut depth = 1;
            let mut end = 0;
            for (j, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = j;
                    break;
                }
            }
            if rest[..end].contains("post(") {
                out.push(path.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn form_posts_need_the_csrf_field(b: Backend) {
    let p = start(b, |_| {}).await;
    p.user("root", true).await;
    let Cred::Session { cookie, csrf } = session_of(&p.login("root", "root-password").await) else {
        unreachable!()
    };
    let forms = ui_post_routes();
    assert!(
        forms.len() > 40,
        "only {} form routes: {forms:?}",
        forms.len()
    );
    assert!(
        forms.iter().any(|f| f == "/servers/{id}/delete"),
        "{forms:?}"
    );
    let before = footprint(&p).await;
    let post = |path: String,
                fields: Vec<(&'static str, String)>,
                extra: Option<(&'static str, &'static str)>| {
        let mut req = p
            .client
            .post(format!("{}{path}", p.base))
            .header("cookie", format!("keel_session={cookie}"))
            .form(&fields);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap() }
    };
    let mut refused = BTreeMap::new();
    for form in forms.iter().filter(|f| *f != "/login") {
        let url = concrete(form);
        for (what, fields, extra) in [
            ("no csrf field", vec![("name", "x".to_string())], None),
            (
                "a forged csrf field",
                vec![("csrf", "f".repeat(64)), ("name", "x".to_string())],
                None,
            ),
            ("an empty csrf field", vec![("csrf", String::new())], None),
            (
                "the right field from another site",
                vec![("csrf", csrf.clone())],
                Some(("origin", "https://evil.example")),
            ),
        ] {
            let r = post(url.clone(), fields, extra).await;
            let status = r.status();
            let body = r.text().await.unwrap();
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "POST {url} with {what}: {body}"
            );
            assert!(
                body.to_lowercase().contains("csrf") || body.contains("cross-site"),
                "{url}: {body}"
            );
            if extra.is_none() {
                // The refusal is a page of the panel that keeps its
                // navigation, not a dead end.
                assert!(
                    body.contains(r#"href="/static/keel.css""#)
                        && body.contains(r#"<nav class="main""#)
                        && body.contains(r#"href="/servers""#),
                    "{url}: {body}"
                );
            }
            *refused.entry(url.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(
        footprint(&p).await,
        before,
        "a refused form changed something"
    );
    // The control: the right field passes the check.
    for form in forms.iter().filter(|f| *f != "/login" && *f != "/logout") {
        let url = concrete(form);
        let r = post(url.clone(), vec![("csrf", csrf.clone())], None).await;
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("CSRF token is missing"),
            "POST {url} with the right field: {body}"
        );
    }
    // A login form posted from another site (login CSRF) is refused too.
    let r = p
        .client
        .post(format!("{}/login", p.base))
        .header("origin", "https://evil.example")
        .form(&[("name", "root"), ("password", "root-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());
}
both_backends!(
    form_posts_need_the_csrf_field_,
    form_posts_need_the_csrf_field
);

// ---------------------------------------------------------------------
// Session fixation

fn cookie_secret(h: &reqwest::header::HeaderMap) -> String {
    let c = h["set-cookie"].to_str().unwrap();
    c.split(';')
        .next()
        .unwrap()
        .strip_prefix("keel_session=")
        .unwrap()
        .to_string()
}

async fn session_fixation(b: Backend) {
    let mut p = start(b, |_| {}).await;
    // See the login's own answer (its Set-Cookie), not where it redirects.
    p.client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    p.user("alice", false).await;
    p.user("mallory", false).await;
    let as_cookie = |s: &str| Cred::Session {
        cookie: s.to_string(),
        csrf: String::new(),
    };
    let me = |c: Cred| {
        let p = &p;
        async move { p.call("GET", "/api/v1/me", &c, None).await }
    };

    // 1. A value the attacker made up, planted before the login form.
    let planted = "a".repeat(64);
    let r = p
        .client
        .post(format!("{}/login", p.base))
        .header("cookie", format!("keel_session={planted}"))
        .form(&[("name", "alice"), ("password", "alice-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let issued = cookie_secret(r.headers());
    assert_ne!(issued, planted);
    assert_eq!(
        me(as_cookie(&planted)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(as_cookie(&issued)).await.json["name"], "alice");

    // 2. The attacker's own live session, planted in the victim's browser:
    //    the victim's login ends it and issues a new one (page and API).
    for api in [false, true] {
        let mallory = match session_of(&p.login("mallory", "mallory-password").await) {
            Cred::Session { cookie, .. } => cookie,
            _ => unreachable!(),
        };
        assert_eq!(me(as_cookie(&mallory)).await.json["name"], "mallory");
        let req = if api {
            p.client
                .post(format!("{}/api/v1/auth/login", p.base))
                .json(&json!({"name": "alice", "password": "alice-password"}))
        } else {
            p.client
                .post(format!("{}/login", p.base))
                .form(&[("name", "alice"), ("password", "alice-password")])
        };
        let r = req
            .header("cookie", format!("keel_session={mallory}"))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status() == StatusCode::SEE_OTHER,
            "api={api}: {}",
            r.status()
        );
        let issued = cookie_secret(r.headers());
        assert_ne!(issued, mallory, "api={api}");
        assert_eq!(
            me(as_cookie(&mallory)).await.status,
            StatusCode::UNAUTHORIZED,
            "api={api}: the session from before the login survived it"
        );
        assert_eq!(me(as_cookie(&issued)).await.json["name"], "alice");
    }

    // 3. A failed login leaves no session behind and sets no cookie.
    let sessions = count(&p, "SELECT COUNT(*) FROM sessions").await;
    let r = p.login("alice", "wrong-password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get("set-cookie").is_none());
    assert_eq!(count(&p, "SELECT COUNT(*) FROM sessions").await, sessions);
}
both_backends!(session_fixation_, session_fixation);

// ---------------------------------------------------------------------
// Tokens and sessions on two nodes

async fn revoked_and_expired_tokens_refused_on_every_node(b: Backend) {
    let p = start(b, |_| {}).await;
    let node2 = second_node(&p).await;
    let bases = [p.base.clone(), node2.base.clone()];
    let (_, token) = p.user("alice", false).await;
    let status = |base: String, token: String| {
        let client = p.client.clone();
        async move {
            client
                .get(format!("{base}/api/v1/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for base in &bases {
        assert_eq!(status(base.clone(), token.clone()).await, StatusCode::OK);
    }
    // Revoked on node 1: node 2 refuses it on the next request.
    let list = p
        .call(
            "GET",
            "/api/v1/me/tokens",
            &Cred::Bearer(token.clone()),
            None,
        )
        .await;
    let id = list.json[0]["id"].as_i64().unwrap();
    let (_, other) = {
        let r = p
            .call(
                "POST",
                "/api/v1/me/tokens",
                &Cred::Bearer(token.clone()),
                Some(json!({"name": "one-day", "expires_in_days": 1})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        (
            r.json["token"]["id"].as_i64(),
            r.json["secret"].as_str().unwrap().to_string(),
        )
    };
    let r = p
        .call(
            "DELETE",
            &format!("/api/v1/me/tokens/{id}"),
            &Cred::Bearer(token.clone()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json);
    for base in &bases {
        assert_eq!(
            status(base.clone(), token.clone()).await,
            StatusCode::UNAUTHORIZED,
            "{base}"
        );
        assert_eq!(
            status(base.clone(), other.clone()).await,
            StatusCode::OK,
            "{base}"
        );
    }
    // Expired: one millisecond past its day, on both nodes.
    p.clock.advance(Duration::from_millis(86_400_000));
    for base in &bases {
        assert_eq!(
            status(base.clone(), other.clone()).await,
            StatusCode::UNAUTHORIZED,
            "{base}"
        );
    }

    // A session ended on one node is ended on the other.
    p.user("bob", false).await;
    let Cred::Session { cookie, csrf } = session_of(&p.login("bob", "bob-password").await) else {
        unreachable!()
    };
    let r = p
        .client
        .post(format!("{}/api/v1/auth/logout", node2.base))
        .header("cookie", format!("keel_session={cookie}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for base in &bases {
        let r = p
            .client
            .get(format!("{base}/api/v1/me"))
            .header("cookie", format!("keel_session={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{base}");
    }
}
both_backends!(
    revoked_and_expired_tokens_refused_on_every_node_,
    revoked_and_expired_tokens_refused_on_every_node
);

// ---------------------------------------------------------------------
// Login brute force

/// A client whose connections come from `addr` (any 127/8 address works
/// on Linux loopback), so the panel sees that peer.
fn client_from(addr: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `attackers` concurrent login attempts for `user` with wrong passwords,
/// spread over the given source addresses and panel nodes; the answers by
/// status.
async fn attack(
    bases: &[String],
    sources: &[IpAddr],
    user: impl Fn(usize) -> String,
    attackers: usize,
) -> BTreeMap<u16, usize> {
    let clients: Vec<_> = sources.iter().map(|a| client_from(*a)).collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(attackers));
    let mut tasks = vec![];
    for i in 0..attackers {
        let client = clients[i % clients.len()].clone();
        let url = format!("{}/api/v1/auth/login", bases[i % bases.len()]);
        let body = json!({"name": user(i), "password": format!("guess-{i}")});
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut by_status = BTreeMap::new();
    for t in tasks {
        *by_status.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    by_status
}

fn sources(from: u8, n: u8) -> Vec<IpAddr> {
    (from..from + n)
        .map(|i| IpAddr::from([127, 0, 0, i]))
        .collect()
}

async fn login_as(base: &str, from: IpAddr, name: &str, password: &str) -> StatusCode {
    client_from(from)
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn brute_force_throttled(b: Backend, nodes: usize) {
    let p = start(b, |_| {}).await;
    let node2 = second_node(&p).await;
    let bases: Vec<String> = [p.base.clone(), node2.base.clone()][..nodes].to_vec();
    let max = p.state.config.auth.login_max_failures as usize;
    p.user("alice", false).await;
    p.user("bob", false).await;

    // 1. 50 attackers on one account from 5 addresses: the password is
    //    tried at most `max` times; everyone else is throttled.
    let seen = attack(&bases, &sources(10, 5), |_| "alice".into(), 50).await;
    assert_eq!(seen.values().sum::<usize>(), 50, "{seen:?}");
    let tried = seen.get(&401).copied().unwrap_or(0);
    assert!(
        tried <= max,
        "{tried} guesses reached the password check (limit {max}): {seen:?}"
    );
    assert_eq!(seen.get(&429).copied().unwrap_or(0), 50 - tried, "{seen:?}");
    // The account is blocked on every node, from any address, even for the
    // right password.
    for base in &bases {
        assert_eq!(
            login_as(
                base,
                IpAddr::from([127, 0, 0, 99]),
                "alice",
                "alice-password"
            )
            .await,
            StatusCode::TOO_MANY_REQUESTS,
            "{base}"
        );
    }

    // 2. 50 attackers on 50 accounts (spraying) from 5 addresses: each
    //    address is tried at most `max` times, then blocked for every account.
    let seen = attack(&bases, &sources(20, 5), |i| format!("user{i}"), 50).await;
    let tried = seen.get(&401).copied().unwrap_or(0);
    assert!(
        tried <= 5 * max,
        "{tried} guesses from 5 addresses (limit {max} each): {seen:?}"
    );
    for a in sources(20, 5) {
        for base in &bases {
            assert_eq!(
                login_as(base, a, "bob", "bob-password").await,
                StatusCode::TOO_MANY_REQUESTS,
                "{a} on {base}"
            );
        }
    }
    // Others are not locked out by it.
    assert_eq!(
        login_as(
            &bases[0],
            IpAddr::from([127, 0, 0, 98]),
            "bob",
            "bob-password"
        )
        .await,
        StatusCode::OK
    );

    // 3. After the block window, the account opens again.
    p.clock.advance(Duration::from_secs(
        p.state.config.auth.login_block_secs as u64 + 1,
    ));
    assert_eq!(
        login_as(
            bases.last().unwrap(),
            IpAddr::from([127, 0, 0, 97]),
            "alice",
            "alice-password"
        )
        .await,
        StatusCode::OK
    );
}

async fn brute_force_one_node(b: Backend) {
    brute_force_throttled(b, 1).await;
}
both_backends!(brute_force_one_node_, brute_force_one_node);

/// The per-account block holds across two nodes on one PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_two_nodes_on_postgres() {
    brute_force_throttled(Backend::Postgres, 2).await;
}

// ---------------------------------------------------------------------
// Callbacks

/// A service waiting for its VM's callback (`installing_os`, generation 2
/// of its VM, a known secret): the state the provision step leaves.
async fn waiting_service(p: &Panel, admin: &Cred) -> (i64, String, String) {
    api_support::catalog_and_pool(p, 4).await;
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            admin,
            Some(json!({"name": "cb", "owner_email": "o@example.org"})),
        )
        .await;
    assert_eq!(site.status, StatusCode::CREATED, "{:?}", site.json);
    let svc = p
        .call(
            "POST",
            "/api/v1/services",
            admin,
            Some(json!({"site_id": site.json["id"], "server_type": "small"})),
        )
        .await;
    assert!(svc.status.is_success(), "{:?}", svc.json);
    let id = svc.json["service"]["id"].as_i64().unwrap();
    let vm = format!("keel-{id}");
    let secret = "5a".repeat(32);
    let mut tx = p.db().begin().await.unwrap();
    let mut conn = keel_panel::db::tx_conn(&mut tx);
    let now = p.db().now();
    keel_panel::execute!(
        &mut conn,
        "INSERT INTO vm_provisioning (service_id, vm_name, pool_type, callback_secret, host_key_public, generation, created_at, updated_at) \
         VALUES ($1, $2, 'public', $3, 'ssh-ed25519 AAAA', 2, $4, $4)",
        id,
        vm.as_str(),
        secret.as_str(),
        now
    )
    .unwrap();
    keel_panel::execute!(
        &mut conn,
        "UPDATE services SET status = 'installing_os' WHERE id = $1",
        id
    )
    .unwrap();
    tx.commit().await.unwrap();
    (id, vm, secret)
}

async fn callback_state(p: &Panel, id: i64) -> (String, Option<i64>, i64) {
    let mut rc = p.db().read().await.unwrap();
    let mut conn = rc.conn();
    let status = keel_panel::scalar!(
        &mut conn,
        String,
        "SELECT status FROM services WHERE id = $1",
        id
    )
    .unwrap()
    .unwrap();
    let at = keel_panel::scalar!(
        &mut conn,
        Option<i64>,
        "SELECT callback_at FROM vm_provisioning WHERE service_id = $1",
        id
    )
    .unwrap()
    .flatten();
    let configures = keel_panel::scalar!(
        &mut conn,
        i64,
        "SELECT COUNT(*) FROM jobs WHERE kind = 'configure'"
    )
    .unwrap()
    .unwrap_or(0);
    (status, at, configures)
}

/// `n` callbacks posted at once (each from `urls(i)`) while `writes` sites
/// are created through the API; every write must complete. The callbacks'
/// statuses.
async fn flood(
    p: &Panel,
    admin: &Cred,
    urls: impl Fn(usize) -> String,
    n: usize,
    writes: usize,
) -> BTreeMap<u16, usize> {
    let mut tasks = vec![];
    for i in 0..n {
        let client = p.client.clone();
        let url = format!("{}{}", p.base, urls(i));
        tasks.push(tokio::spawn(async move {
            client.post(url).send().await.unwrap().status().as_u16()
        }));
    }
    let mut written = vec![];
    for i in 0..writes {
        let r = p
            .call("POST", "/api/v1/sites", admin, Some(json!({"name": format!("w{i}-{}", fastrand::u32(..)), "owner_email": "o@example.org"})));
        written.push(r);
    }
    // The other writes complete (a hang guard, not a timing assertion).
    let done = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(written))
        .await
        .expect("writes starved behind the callback flood");
    for r in done {
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    }
    let mut by = BTreeMap::new();
    for t in tasks {
        *by.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    by
}

async fn forged_and_replayed_callbacks_change_nothing(b: Backend) {
    let p = start(b, |_| {}).await;
    let (_, token) = p.user("root", true).await;
    let admin = Cred::Bearer(token);
    let (id, vm, secret) = waiting_service(&p, &admin).await;
    let cb = |vm: &str, gen: i64, sig: &str| {
        format!("/api/v1/callback/vm-ready?vm={vm}&gen={gen}&sig={sig}")
    };
    let before = callback_state(&p, id).await;
    assert_eq!(before, ("installing_os".to_string(), None, 0));

    // Forged (random signatures, another VM's secret, an unknown VM) and
    // replayed from the VM's previous generation, 300 at once, while 20
    // other writes go through.
    let prev = keel_panel::provision::callback::sign(&secret, &vm, 1);
    let other = keel_panel::provision::callback::sign(&"77".repeat(32), &vm, 2);
    let seen = flood(
        &p,
        &admin,
        |i| match i % 4 {
            0 => cb(&vm, 2, &format!("{:064x}", fastrand::u128(..))),
            1 => cb(&vm, 2, &other),
            2 => cb("keel-999999", 2, &other),
            _ => cb(&vm, 1, &prev),
        },
        300,
        20,
    )
    .await;
    assert_eq!(seen.get(&403), Some(&225), "{seen:?}");
    assert_eq!(seen.get(&409), Some(&75), "{seen:?}");
    assert_eq!(
        callback_state(&p, id).await,
        before,
        "a forged or stale callback changed the service"
    );

    // The real one is taken once; 200 replays of it at once change nothing
    // more, and the writes still complete.
    let good = keel_panel::provision::callback::sign(&secret, &vm, 2);
    let r = p
        .call("POST", &cb(&vm, 2, &good), &Cred::Anonymous, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["status"], "accepted");
    let after = callback_state(&p, id).await;
    assert_eq!((after.0.as_str(), after.2), ("configuring", 1));
    let seen = flood(&p, &admin, |_| cb(&vm, 2, &good), 200, 20).await;
    assert_eq!(seen.get(&200), Some(&200), "{seen:?}");
    assert_eq!(
        callback_state(&p, id).await,
        after,
        "a replay changed something"
    );
}
both_backends!(
    forged_and_replayed_callbacks_change_nothing_,
    forged_and_replayed_callbacks_change_nothing
);
