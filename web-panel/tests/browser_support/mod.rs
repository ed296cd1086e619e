//! The WebDriver harness the browser tests share: headless Debian chromium
//! driven over the W3C WebDriver protocol by chromedriver (a few JSON
//! calls, so no WebDriver crate), plus screenshots and the axe-core
//! accessibility check (`tests/vendor/axe-core/`).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages
//! `chromium` and `chromium-driver`); [`Driver::start`] installs them with
//! apt when they are missing.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub fn ensure_browser() {
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

/// chromedriver, stopped when dropped together with the browser it
/// started: chromedriver's SIGKILL alone left chromium's processes running.
pub struct Driver {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    pub session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Ending the session makes chromedriver close the browser. Drop is
        // not async, so this is one plain HTTP/1.1 request.
        if !self.session.is_empty() {
            let addr = self.base.trim_start_matches("http://");
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    self.session
                );
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        // Whatever is left of chromedriver's process group (its own group,
        // made at spawn), the browser's helpers included.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub async fn start() -> Driver {
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
            .process_group(0)
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
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1000,1400"]
            }
        }}});
        let r = d.cmd("POST", "/session", Some(caps)).await;
        d.session = r["sessionId"].as_str().expect("a session id").to_string();
        d
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

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .await
        .as_array()
        .map_or(0, |a| a.len())
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

    /// Clicks a button that submits a form, then waits for the next page:
    /// until the clicked element is gone (stale) and the new document has
    /// loaded. Without this, the next lookup can race the navigation.
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

    pub async fn clear(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
    }

    /// Clicks something that does not leave the page (a checkbox, an
    /// option of a select).
    pub async fn pick(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Text with every run of whitespace (a table's cell separators) one space.
pub fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Waits (up to 15 s) until the element's text contains `want`.
pub async fn wait_for_text(d: &Driver, css: &str, want: &str) {
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

/// Waits (up to `secs`) until an element matching `css` exists and its
/// text contains `want` (the element may come with a page load).
pub async fn wait_for_element_text(d: &Driver, css: &str, want: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if d.count(css).await > 0 {
            let text = d.text(css).await;
            if text.contains(want) {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {want:?}; the page is {}",
            d.source().await
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

impl Driver {
    /// Accepts the open `confirm()` dialog, waiting for it to appear.
    pub async fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = format!("{}/session/{}/alert/text", self.base, self.session);
            let v: Value = self
                .http
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["value"]["error"].is_null() {
                self.cmd("POST", "/alert/accept", Some(json!({}))).await;
                return;
            }
            assert!(Instant::now() < deadline, "no dialog opened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the open dialog.
    pub async fn dialog_text(&self) -> String {
        self.cmd("GET", "/alert/text", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the document at a new URL has loaded (after a click
    /// whose form posts once a dialog is accepted).
    pub async fn wait_for_url(&self, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = self.url().await;
            let ready = self
                .cmd(
                    "POST",
                    "/execute/sync",
                    Some(json!({"script": "return document.readyState", "args": []})),
                )
                .await;
            if pred(&url) && ready == "complete" {
                return;
            }
            assert!(Instant::now() < deadline, "still at {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `<screenshot dir>/<name>.png`
    /// ([`screenshot_dir`]) and returns its path.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 screenshot"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn script(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Runs axe-core (vendored, `tests/vendor/axe-core/`) on the current
    /// page and returns its violations of impact `serious` or `critical`,
    /// each as "rule: help (targets)".
    pub async fn serious_a11y_violations(&self) -> Vec<String> {
        let axe = include_str!("../vendor/axe-core/axe.min.js");
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": format!("{axe}\n;return true;"), "args": []})),
        )
        .await;
        let v = self
            .cmd(
                "POST",
                "/execute/async",
                Some(json!({
                    "script": "var done = arguments[arguments.length - 1];\
                        axe.run(document, {resultTypes: ['violations']})\
                          .then(function (r) { done(r.violations.map(function (v) {\
                            return {id: v.id, impact: v.impact, help: v.help,\
                                    nodes: v.nodes.map(function (n) { return n.target.join(' '); })}; })); })\
                          .catch(function (e) { done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]); });",
                    "args": []
                })),
            )
            .await;
        v.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|x| matches!(x["impact"].as_str(), Some("serious" | "critical")))
            .map(|x| format!("{}: {} ({})", x["id"], x["help"], x["nodes"]))
            .collect()
    }
}

/// Where the browser tests save their screenshots: `$KEEL_SCREENSHOT_DIR`,
/// else `screenshots/` in the workspace's target directory
/// (`$CARGO_TARGET_DIR` when set).
pub fn screenshot_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("KEEL_SCREENSHOT_DIR") {
        return std::path::PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("screenshots")
}
