//! A throw-away PostgreSQL server for the `postgresql_*` module tests: a
//! fresh cluster (trust authentication) on a free loopback port, which the
//! sshd test hosts reach because they share this machine's network. The
//! server is stopped and its directory removed when the guard drops. (The
//! panel's test support has its own, in `keel-panel`, which the engine's
//! tests cannot depend on.)
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

fn as_postgres(cmd: &str) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", cmd])
        .output()
        .expect("runuser")
}

impl PgServer {
    /// Starts a server, or `None` (skip) where PostgreSQL is not installed,
    /// unless `KEEL_REQUIRE_REAL` is set (scripts/test installs it).
    pub fn start() -> Option<PgServer> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            let mut v: Vec<PathBuf> = d
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|p| p.join("postgres").exists())
                .collect();
            v.sort();
            v.pop()
        });
        let Some(bin) = bin else {
            assert!(
                std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
                "KEEL_REQUIRE_REAL is set, but PostgreSQL is not installed"
            );
            eprintln!("skipping: PostgreSQL is not installed");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("keel-pg-")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        assert!(Command::new("chown")
            .args(["postgres", &d])
            .status()
            .unwrap()
            .success());
        let out = as_postgres(&format!(
            "{b}/initdb -D {d}/data -A trust -U postgres -E UTF8 --no-sync >/dev/null",
            b = bin.display()
        ));
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = as_postgres(&format!(
            "{b}/pg_ctl -D {d}/data -l {d}/log -o '-k {d} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off' start >/dev/null",
            b = bin.display()
        ));
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(PgServer { port, bin, dir })
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {}/data stop -m immediate >/dev/null 2>&1",
            self.bin.display(),
            self.dir.path().display()
        ));
    }
}
