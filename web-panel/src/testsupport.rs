//! Test support: a real, throw-away PostgreSQL server per test process, and
//! a fresh database per test, so story tests run in parallel. The server
//! runs as the `postgres` OS user (it refuses root) from a temp dir, on a
//! loopback port with its socket in the same dir; a watchdog stops it and
//! removes the dir when the test process exits. If PostgreSQL is missing it
//! is installed with apt. [`FileClock`] gives several processes one manual
//! clock.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::clock::{millis, Clock, UnixMillis};
use crate::store::{Store, StoreError};

/// A running test server.
#[derive(Debug)]
pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();

fn pg_bin_dir() -> PathBuf {
    let find = || -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("postgres").exists())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    if let Some(d) = find() {
        return d;
    }
    let status = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql"])
        .status()
        .expect("run apt-get");
    assert!(status.success(), "installing postgresql with apt failed");
    find().expect("postgresql binaries after apt install")
}

fn run_as_postgres(cmd: &str) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", cmd])
        .output()
        .expect("runuser")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

/// A cluster initialised once per machine and copied per process: initdb
/// is the slow part.
fn template(bin: &Path) -> PathBuf {
    let tmpl = std::env::temp_dir().join("keel-pg-template");
    if tmpl.join("PG_VERSION").exists() {
        return tmpl;
    }
    let staging = std::env::temp_dir().join(format!("keel-pg-template.{}", std::process::id()));
    std::fs::create_dir_all(&staging).expect("staging dir");
    chown_postgres(&staging);
    let out = run_as_postgres(&format!(
        "{}/initdb -D {} -A trust -U postgres -E UTF8 --no-sync >/dev/null",
        bin.display(),
        staging.display()
    ));
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another process may have won the race; either template is fine.
    if std::fs::rename(&staging, &tmpl).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    tmpl
}

fn chown_postgres(p: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(p)
        .status()
        .expect("chown");
    assert!(status.success());
}

impl PgServer {
    /// The server for this process, started on first use.
    pub fn shared() -> &'static PgServer {
        SERVER.get_or_init(|| PgServer::start(false))
    }

    /// Starts a server. `durable` keeps fsync on (benchmarks); tests turn it off.
    // The server and its watchdog outlive this call on purpose; the
    // watchdog stops the server when the test process exits.
    #[allow(clippy::zombie_processes)]
    pub fn start(durable: bool) -> PgServer {
        let bin = pg_bin_dir();
        let tmpl = template(&bin);
        let dir = tempfile::Builder::new()
            .prefix("keel-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let data = dir.join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(&tmpl)
            .arg(&data)
            .status()
            .expect("cp");
        assert!(status.success(), "copy template cluster");
        chown_postgres(&dir);
        let port = free_port();
        let sync = if durable { "on" } else { "off" };
        let log = dir.join("postgres.log");
        let cmd = format!(
            "exec {bin}/postgres -D {data} -k {sock} -p {port} -c listen_addresses=127.0.0.1 \
             -c fsync={sync} -c synchronous_commit={sync} -c full_page_writes={sync} \
             -c max_connections=300 -c shared_buffers=128MB >{log} 2>&1",
            bin = bin.display(),
            data = data.display(),
            sock = dir.display(),
            log = log.display(),
        );
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", &cmd])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        // Watchdog: when this process goes away, stop the server and clean up.
        let watchdog = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; \
             runuser -u postgres -- {bin}/pg_ctl -D {data} stop -m immediate >/dev/null 2>&1; \
             kill {pid} 2>/dev/null; rm -rf {dir}",
            me = std::process::id(),
            bin = bin.display(),
            data = data.display(),
            pid = child.id(),
            dir = dir.display(),
        );
        Command::new("setsid")
            .args(["sh", "-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("watchdog");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PgServer { port, dir }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, db)
    }

    /// Creates an empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        use sqlx::Connection as _;
        let name = format!("test_{:016x}", fastrand::u64(..));
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        self.url(&name)
    }
}

/// A store on a fresh PostgreSQL database of this process's server.
pub async fn postgres_store() -> Result<Store, StoreError> {
    let url = PgServer::shared().fresh_database().await;
    Store::connect(&url).await
}

/// A store on a fresh SQLite file. Keep the returned dir alive.
pub async fn sqlite_store() -> Result<(Store, tempfile::TempDir), StoreError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("panel.db").display());
    Ok((Store::connect(&url).await?, dir))
}

/// A manual clock shared by processes through a file holding Unix
/// milliseconds: the test process moves it, worker processes read it on
/// every `now()`. Writes replace the file atomically (write, then rename).
#[derive(Debug)]
pub struct FileClock {
    path: PathBuf,
}

impl FileClock {
    /// Creates the file at `start`.
    pub fn create(path: impl Into<PathBuf>, start: UnixMillis) -> std::sync::Arc<Self> {
        let clock = Self { path: path.into() };
        clock.set(start);
        std::sync::Arc::new(clock)
    }

    /// Reads a clock another process created.
    pub fn open(path: impl Into<PathBuf>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self { path: path.into() })
    }

    pub fn set(&self, to: UnixMillis) {
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, to.to_string()).expect("write clock file");
        std::fs::rename(&tmp, &self.path).expect("replace clock file");
    }

    pub fn advance(&self, by: Duration) {
        self.set(self.now().saturating_add(millis(by)));
    }
}

impl Clock for FileClock {
    fn now(&self) -> UnixMillis {
        // The rename is atomic, so a read sees the old or the new time.
        let text = std::fs::read_to_string(&self.path).expect("read clock file");
        text.trim()
            .parse()
            .expect("clock file holds Unix milliseconds")
    }
}
