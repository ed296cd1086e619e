//! Shared harness of the end-to-end tests under `tests/e2e/`: what they need
//! to run a panel on a real hypervisor driver and watch it through its REST
//! API.
//!
//! - [`Scratch`]: a throw-away directory under `/var/tmp` that libvirt's
//!   QEMU user can traverse;
//! - [`PanelProcess`]: the real `keel-panel serve` binary on a TOML config,
//!   killed (SIGKILL) when dropped;
//! - [`Api`]: REST calls with an API token, status polling, the audit log,
//!   job history and job logs;
//! - [`seed_fixture`]/[`admin_token`]: data written through the library into
//!   the panel's SQLite file before a process opens it;
//! - [`Sweeper`]: deletes every VM of a test's unique name prefix when the
//!   test ends, passed or not.
#![allow(dead_code)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_panel::alloc;
use keel_panel::auth::{self, Passwords};
use keel_panel::config::AuthConfig;
use keel_panel::db::Db;
use keel_panel::domain::Principal;
use keel_panel::hypervisor::Driver;
use keel_panel::services::catalog::{self, NewServerType};
use keel_panel::services::sites::{self, NewSite};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const IMAGES: &str = "/var/cache/keel/images";
pub const IMAGE: &str = "debian-bookworm";

/// True when the test process runs as root (drivers need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// True when the base image is built.
pub fn image_built() -> bool {
    Path::new(IMAGES).join(IMAGE).join("BUILT").is_file()
}

/// Whether the nspawn driver can run here; prints why not.
pub fn can_run_nspawn() -> bool {
    let ok = is_root() && image_built() && Path::new("/usr/bin/systemd-nspawn").exists();
    if !ok {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, so this test may not skip: needs root, systemd-nspawn and {IMAGES}/{IMAGE} (images/build-debian)"
        );
        eprintln!("SKIP: needs root, systemd-nspawn and {IMAGES}/{IMAGE} (images/build-debian)");
    }
    ok
}

/// Whether real libvirt can run here; prints why not.
pub fn can_run_libvirt() -> bool {
    let virsh_ok = Command::new("virsh")
        .args(["-q", "-c", "qemu:///system", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ok = is_root() && image_built() && virsh_ok;
    if !ok {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, so this test may not skip: needs root, a running libvirtd (scripts/libvirt-up) and {IMAGES}/{IMAGE}"
        );
        eprintln!("SKIP: needs root, a running libvirtd (scripts/libvirt-up) and {IMAGES}/{IMAGE}");
    }
    ok
}

/// A VM name prefix no other test (or concurrent run) uses: drivers only
/// list and sweep names under it. Valid for libvirt and nspawn names.
pub fn unique_prefix(tag: &str) -> String {
    format!(
        "ke2e{tag}{}x{}-",
        std::process::id() % 100_000,
        fastrand::u16(..)
    )
}

/// A loopback TCP port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throw-away directory libvirt's unprivileged QEMU can traverse.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("keel-e2e-{tag}-"))
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A subdirectory, created traversable.
    pub fn sub(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).unwrap();
        p
    }
}

/// A stand-in for `playbooks/site.yml` for guests without Internet access
/// (nspawn containers have no NAT): writes a file from inventory vars.
pub const FILE_PLAYBOOK: &str = r#"# Written by tests/e2e: proves the role run reached the host as the
# admin user with become, with the panel's inventory vars.
- hosts: all
  gather_facts: false
  tasks:
    - name: record the identity the panel gave this host
      ansible.builtin.copy:
        dest: /etc/keel-e2e
        content: "{{ keel_hostname }} {{ keel_service_id }} {{ ansible_user }}\n"
        mode: "0644"
"#;

/// Writes [`FILE_PLAYBOOK`] into `dir` and returns its path.
pub fn write_file_playbook(dir: &Path) -> PathBuf {
    let path = dir.join("site.yml");
    std::fs::write(&path, FILE_PLAYBOOK).unwrap();
    path
}

/// Settings of one `keel-panel serve` process, rendered to TOML.
pub struct ServeConfig {
    pub port: u16,
    pub data_dir: PathBuf,
    /// The whole `[hypervisor]` table body.
    pub hypervisor: String,
}

impl ServeConfig {
    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.data_dir.join("panel.db").display())
    }

    /// Writes the TOML next to the data dir and returns its path.
    pub fn write(&self, path: &Path) -> PathBuf {
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\n\
             data_dir = \"{data}\"\n\
             database_url = \"{url}\"\n\
             \n[auth]\nargon2_memory_kib = 256\nargon2_iterations = 1\n\
             \n[workers]\nconcurrency = 6\nqueues = [\"default\", \"hypervisor=6\"]\n\
             \n[hypervisor]\n{hv}\n",
            port = self.port,
            data = self.data_dir.display(),
            url = self.database_url(),
            hv = self.hypervisor,
        );
        std::fs::write(path, text).unwrap();
        path.to_path_buf()
    }
}

/// Cheap password hashing for the accounts tests create.
pub fn test_auth() -> AuthConfig {
    AuthConfig {
        argon2_memory_kib: 256,
        argon2_iterations: 1,
        ..AuthConfig::default()
    }
}

/// Opens (and migrates) the panel database at `url`.
pub async fn open_db(url: &str) -> Db {
    Db::open(url).await.unwrap()
}

/// A platform admin's API token (the user is created when missing).
pub async fn admin_token(db: &Db, name: &str) -> String {
    let pw = Passwords::new(&test_auth()).unwrap();
    let user = match auth::user_by_name(db, name).await.unwrap() {
        Some(u) => u,
        None => auth::create_user(
            db,
            &pw,
            &Principal::system(),
            name,
            None,
            Some(format!("{name}-password")),
            true,
        )
        .await
        .unwrap(),
    };
    let who = Principal {
        user_id: user.id,
        name: user.name,
        is_admin: true,
    };
    auth::create_token(db, &test_auth(), &who, "e2e", 1)
        .await
        .unwrap()
        .1
}

/// What a test needs to create servers: an admin token and a site.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub token: String,
    pub site: i64,
}

/// A server type `small` on the base image, a site `e2e` and a public pool
/// of `count` addresses in 10.234.`subnet`.0/24 (gateway .1) with the
/// given quarantine.
pub async fn seed_fixture(db: &Db, subnet: u8, count: u64, quarantine_secs: i64) -> Fixture {
    let system = Principal::system();
    catalog::create(
        db,
        &system,
        &NewServerType {
            name: "small".into(),
            cpus: 1,
            ram_mb: 512,
            disk_gb: 4,
            os_image: IMAGE.into(),
            roles: vec![],
            stack: None,
        },
    )
    .await
    .unwrap();
    let cidr = format!("10.234.{subnet}.0/24").parse().unwrap();
    let mut pool = alloc::generate(
        &format!("e2e{subnet}"),
        "public",
        Some(cidr),
        None,
        &format!("e2e{subnet}-{{n:02}}.keel.test"),
        count,
    )
    .unwrap();
    pool.quarantine_secs = Some(quarantine_secs);
    alloc::import(db, &system, &pool, quarantine_secs)
        .await
        .unwrap();
    let site = sites::create(
        db,
        &system,
        &NewSite {
            name: "e2e".into(),
            description: "end-to-end tests".into(),
            owner_email: "e2e@keel.test".into(),
        },
    )
    .await
    .unwrap();
    Fixture {
        token: admin_token(db, "e2e-admin").await,
        site: site.id,
    }
}

/// The real `keel-panel serve` binary, output appended to a log file.
pub struct PanelProcess {
    child: Option<Child>,
    pub base: String,
    pub log: PathBuf,
    config: PathBuf,
    pub started: u32,
}

impl PanelProcess {
    /// Starts `keel-panel --config <config> serve` and waits until its API answers.
    pub async fn start(config: &Path, port: u16, log: &Path) -> PanelProcess {
        let mut p = PanelProcess {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
            config: config.to_path_buf(),
            started: 0,
        };
        p.restart().await;
        p
    }

    /// (Re)starts the process on the same config and database.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(out, "==== keel-panel start #{} ====", self.started + 1).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keel-panel"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env(
                "RUST_LOG",
                std::env::var("KEEL_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning keel-panel");
        self.child = Some(child);
        self.started += 1;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Any HTTP answer (401 without a token) means the server is up.
            if client
                .get(format!("{}/api/v1/me", self.base))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("keel-panel exited with {status}:\n{}", self.log_tail(40));
            }
            assert!(
                Instant::now() < deadline,
                "keel-panel did not answer in 60 s:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown path runs, leases stay taken until they expire.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last `n` lines of the process log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for PanelProcess {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            eprintln!("---- keel-panel log tail ----\n{}", self.log_tail(60));
        }
    }
}

/// Deletes every VM its driver lists (all under the test's own prefix)
/// when dropped, so a failing test leaves nothing behind.
pub struct Sweeper {
    pub driver: Arc<dyn Driver>,
}

impl Sweeper {
    pub fn new(driver: Arc<dyn Driver>) -> Sweeper {
        Sweeper { driver }
    }

    /// Deletes what is listed now; returns the names it found.
    pub async fn sweep(&self) -> Vec<String> {
        sweep_driver(self.driver.as_ref()).await
    }
}

/// Deletes every VM `driver` lists; returns their names.
pub async fn sweep_driver(driver: &dyn Driver) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(vms) = driver.list().await {
        for vm in vms {
            if let Err(e) = driver.delete(&vm.name).await {
                eprintln!("sweeper: deleting {}: {e}", vm.name);
            }
            names.push(vm.name);
        }
    }
    names
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        let driver = self.driver.clone();
        // Drop may run inside a runtime: sweep on a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let left = rt.block_on(sweep_driver(driver.as_ref()));
            if !left.is_empty() {
                eprintln!("sweeper: deleted leftovers {left:?}");
            }
        })
        .join();
    }
}

/// One answer of the REST API.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub json: Value,
}

/// The REST API with a bearer token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            base: base.to_string(),
            token: token.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// A call that may fail at the transport (the panel is down).
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply { status, json })
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `POST /api/v1/services`; returns the new service's id.
    pub async fn create_server(&self, site: i64, server_type: &str) -> i64 {
        let r = self
            .call(
                "POST",
                "/api/v1/services",
                Some(json!({"site_id": site, "server_type": server_type})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        r.json["service"]["id"].as_i64().unwrap()
    }

    pub async fn service(&self, id: i64) -> Value {
        let r = self
            .call("GET", &format!("/api/v1/services/{id}"), None)
            .await;
        assert!(r.status.is_success(), "{}", r.json);
        r.json
    }

    /// Polls until the service has status `want`; a `failed` service (when
    /// not wanted) ends the wait at once with its reason.
    pub async fn wait_status(&self, id: i64, want: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.service(id).await;
            let status = s["status"].as_str().unwrap_or_default();
            if status == want {
                return s;
            }
            assert!(
                status != "failed",
                "service {id} failed while waiting for {want}: {}",
                s["failure_reason"]
            );
            assert!(
                Instant::now() < deadline,
                "service {id} is {status}, not {want}, after {timeout:?}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Audit entries about one service, oldest first.
    pub async fn audit(&self, id: i64) -> Vec<Value> {
        let r = self
            .call(
                "GET",
                &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=500"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        let mut items = r.json["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|e| e["id"].as_i64());
        items
    }

    /// The statuses the audit log recorded for a service: (at ms, status).
    pub async fn status_history(&self, id: i64) -> Vec<(i64, String)> {
        self.audit(id)
            .await
            .iter()
            .filter(|e| e["action"] == "service.status")
            .filter_map(|e| {
                let after: Value = serde_json::from_str(e["after_json"].as_str()?).ok()?;
                Some((e["at"].as_i64()?, after["status"].as_str()?.to_string()))
            })
            .collect()
    }

    /// The service's jobs, oldest first.
    pub async fn jobs(&self, id: i64) -> Vec<Value> {
        let r = self
            .call("GET", &format!("/api/v1/services/{id}/jobs"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        let mut jobs = r.json.as_array().cloned().unwrap_or_default();
        jobs.sort_by_key(|j| j["id"].as_i64());
        jobs
    }

    /// Every line a job logged, in order.
    pub async fn job_log(&self, job_id: i64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let r = self
                .call(
                    "GET",
                    &format!("/api/v1/jobs/{job_id}/log?after={after}&limit=1000"),
                    None,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.json);
            let items = r.json["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return out;
            }
            after = r.json["next_after"].as_i64().unwrap();
            out.extend(items);
        }
    }

    /// One pool's use (`GET /api/v1/admin/pools`).
    pub async fn pool(&self, name: &str) -> Value {
        let r = self.call("GET", "/api/v1/admin/pools", None).await;
        assert_eq!(r.status, 200, "{}", r.json);
        r.json
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no pool {name}: {}", r.json))
    }

    /// Polls until the pool has `free` addresses (quarantine over).
    pub async fn wait_pool_free(&self, name: &str, free: i64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.pool(name).await;
            if p["free"].as_i64() == Some(free) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "pool {name} never had {free} free: {p}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The status path with no immediate repetitions.
pub fn statuses(history: &[(i64, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, s) in history {
        if out.last() != Some(s) {
            out.push(s.clone());
        }
    }
    out
}

/// When `status` was first entered, in ms.
pub fn entered(history: &[(i64, String)], status: &str) -> Option<i64> {
    history.iter().find(|(_, s)| s == status).map(|(at, _)| *at)
}
