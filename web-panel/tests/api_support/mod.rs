//! Shared harness for the panel's HTTP tests: a real server on
//! `127.0.0.1:0` over a fresh SQLite file or PostgreSQL database (from
//! `keel_panel::testsupport`), a manual clock, cheap argon2 settings, and
//! helpers to make users, tokens and requests.
#![allow(dead_code)]

use std::sync::Arc;

use keel_panel::auth;
use keel_panel::clock::ManualClock;
use keel_panel::config::Config;
use keel_panel::db::Db;
use keel_panel::domain::Principal;
use keel_panel::http::AppState;
use keel_panel::server;
use keel_panel::store::Store;
use keel_panel::testsupport::PgServer;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Panel {
    pub base: String,
    /// The database URL, for opening a second store handle.
    pub url: String,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Panel {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs `$body` (an async fn taking a `Backend`) once per backend as two tests.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(api_support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(api_support::Backend::Postgres).await;
            }
        }
    };
}

pub const START: i64 = 1_800_000_000_000;

pub fn test_config() -> Config {
    let mut c = Config::default();
    c.auth.argon2_memory_kib = 256;
    c.auth.argon2_iterations = 1;
    // The tests' webhook receivers, HTTP inventories, git servers and ACME
    // server listen on loopback, which the SSRF guard refuses by default
    // (`outbound.rs`); the attack-pass tests take this back out.
    c.outbound.allow_internal = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    c
}

pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Panel {
    let (url, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("panel.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => (PgServer::shared().fresh_database().await, None),
    };
    let clock = ManualClock::new(START);
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_clock(clock.clone());
    let db = Db::from_store(store, &url).await.unwrap();
    let mut config = test_config();
    tweak(&mut config);
    let state = AppState::new(db, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(state.clone(), listener, shutdown.clone()));
    Panel {
        base,
        url,
        state,
        clock,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        shutdown,
        _dir: dir,
    }
}

/// How a request authenticates.
#[derive(Debug, Clone, Default)]
pub enum Cred {
    #[default]
    Anonymous,
    Bearer(String),
    Session {
        cookie: String,
        csrf: String,
    },
}

pub struct Reply {
    pub status: StatusCode,
    pub json: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Panel {
    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// A user made through the library, with an API token.
    pub async fn user(&self, name: &str, admin: bool) -> (Principal, String) {
        let u = auth::create_user(
            self.db(),
            &self.state.passwords,
            &Principal::system(),
            name,
            None,
            Some(format!("{name}-password")),
            admin,
        )
        .await
        .unwrap();
        let p = Principal {
            user_id: u.id,
            name: u.name,
            is_admin: admin,
        };
        let (_, secret) = auth::create_token(self.db(), &self.state.config.auth, &p, "test", 30)
            .await
            .unwrap();
        (p, secret)
    }

    pub async fn call(&self, method: &str, path: &str, cred: &Cred, body: Option<Value>) -> Reply {
        self.call_with(method, path, cred, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        cred: &Cred,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url);
        match cred {
            Cred::Anonymous => {}
            Cred::Bearer(t) => req = req.bearer_auth(t),
            Cred::Session { cookie, csrf } => {
                req = req
                    .header("cookie", format!("keel_session={cookie}"))
                    .header("x-csrf-token", csrf)
            }
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let streaming = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if streaming {
            // An event stream never ends: the status is the answer here;
            // tests that read events use their own client.
            return Reply {
                status,
                json: Value::Null,
                headers,
            };
        }
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            json,
            headers,
        }
    }

    /// Posts an HTML form as a signed-in browser would (the session
    /// cookie; the CSRF token goes in the form); the page comes back as a
    /// JSON string.
    pub async fn call_form(&self, path: &str, cred: &Cred, form: &[(&str, &str)]) -> Reply {
        let mut req = self
            .client
            .post(format!("{}{}", self.base, path))
            .form(form);
        if let Cred::Session { cookie, .. } = cred {
            req = req.header("cookie", format!("keel_session={cookie}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Reply {
            status,
            json: Value::String(text),
            headers,
        }
    }

    /// Logs in through the API and returns the session credential.
    pub async fn login(&self, name: &str, password: &str) -> Reply {
        self.call(
            "POST",
            "/api/v1/auth/login",
            &Cred::Anonymous,
            Some(serde_json::json!({"name": name, "password": password})),
        )
        .await
    }
}

/// The session credential from a successful login reply.
pub fn session_of(r: &Reply) -> Cred {
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    let secret = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("keel_session=")
        .unwrap()
        .to_string();
    Cred::Session {
        cookie: secret,
        csrf: r.json["csrf_token"].as_str().unwrap().to_string(),
    }
}

/// A server type `small` and a public pool of `n` addresses.
pub async fn catalog_and_pool(p: &Panel, n: u64) {
    let admin = Principal::system();
    keel_panel::services::catalog::create(
        p.db(),
        &admin,
        &keel_panel::services::catalog::NewServerType {
            name: "small".into(),
            cpus: 2,
            ram_mb: 2048,
            disk_gb: 20,
            os_image: "debian-12".into(),
            roles: vec!["web".into()],
            stack: None,
        },
    )
    .await
    .unwrap();
    let file = keel_panel::alloc::generate(
        "public-a",
        "public",
        Some("10.0.0.0/20".parse().unwrap()),
        Some("2001:db8::/64".parse().unwrap()),
        "mws-{n:05}.example.org",
        n,
    )
    .unwrap();
    keel_panel::alloc::import(p.db(), &admin, &file, 3600)
        .await
        .unwrap();
}
