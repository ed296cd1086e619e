//! A headless Chromium driven over the W3C WebDriver protocol by
//! chromedriver (a few JSON calls, so no WebDriver crate), for tests
//! outside `browser.rs` that open a page, read it and keep a screenshot.
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages
//! `chromium` and `chromium-driver`); installs them with apt when missing.
//!
//! Screenshots go to `target/screenshots/<name>.png` (under the
//! workspace's target directory, or `KEEL_SCREENSHOT_DIR` when set).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
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

/// chromedriver with one browser session, stopped when dropped.
pub struct Browser {
    child: Child,
    base: String,
    http: reqwest::Client,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    pub async fn start() -> Browser {
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
        let mut b = Browser {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b
            .http
            .get(format!("{}/status", b.base))
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
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1000,1400"]
            }
        }}});
        let r = b.cmd("POST", "/session", Some(caps)).await;
        b.session = r["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    pub async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
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

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Clicks a button that submits a form and waits for the next page.
    pub async fn click(&self, css: &str) {
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
            if !v["value"]["error"].is_null() {
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

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Saves the page as `<screenshot dir>/<name>.png`; returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64 PNG"))
            .expect("the screenshot decodes");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// `KEEL_SCREENSHOT_DIR`, else `target/screenshots` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KEEL_SCREENSHOT_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("screenshots")
}
