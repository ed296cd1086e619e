//! The database root password, end to end on the real container driver
//! (`systemd-nspawn`, apt pointed at the full test hosts' local
//! repository): a site admin asks for a new MariaDB root password; the
//! answer shows it once (202, `Cache-Control: no-store`); the
//! `db_password` job's role run (`playbooks/dbpassword.yml`,
//! `roles/mwsmariadb`) installs MariaDB, sets the password and writes a
//! root-only `/root/.my.cnf`; `mysql` over TCP logs in with it and not with
//! a wrong one; a second change replaces it. Then the password is looked
//! for everywhere the panel writes: the job logs, every audit row, the
//! job list (payloads), the database table that held it sealed, and
//! everything the panel logged through `tracing` during the test
//! (captured at debug level, trace for Keel's own crates): it is in none.
//! Needs root and the built image; skips otherwise, or fails when
//! `KEEL_REQUIRE_REAL` is set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use api_support::Cred;
use flow_support::FlowPanel;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Everything the process logs through `tracing`, kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install() -> Captured {
        let c = Captured::default();
        let writer = c.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,keel_panel=trace,keel=trace",
            ))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        c
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Asks for a new password through the API; returns it and its job.
async fn change(f: &FlowPanel, id: i64) -> (String, i64) {
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/db-password"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(r.headers["cache-control"], "no-store");
    let password = r.json["password"].as_str().unwrap().to_string();
    assert_eq!(password.len(), 24, "{password}");
    assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
    (password, r.json["job_id"].as_i64().unwrap())
}

/// `mysql` as root over TCP (so MariaDB's unix_socket login of OS root
/// plays no part) with `password`, run on the server by its admin
/// account; the output of `SELECT CURRENT_USER()`.
async fn mysql_login(f: &FlowPanel, id: i64, password: &str) -> std::process::Output {
    f.ssh_admin(
        id,
        &format!(
            "MYSQL_PWD={password} mysql --protocol=TCP -h 127.0.0.1 -u root -N -e 'SELECT CURRENT_USER()'"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_changes_logs_in_and_is_logged_nowhere() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let logs = Captured::install();
    let playbook = repo().join("playbooks/dbpassword.yml");
    let mut f =
        FlowPanel::start_with(52, 1, move |c| c.sites.db_password_playbook = playbook).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    f.wait_status(id, "ready").await;
    let root = f.driver.root_dir(&f.prov.vm_name(id));
    f.use_local_repo(id);

    let (first, job1) = change(&f, id).await;
    let jobs = f.settle_kind(id, "db_password", 0).await;
    let cnf = root.join("root/.my.cnf");
    let meta = std::fs::metadata(&cnf).expect("/root/.my.cnf written");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let text = std::fs::read_to_string(&cnf).unwrap();
    assert!(text.contains(&format!("password=\"{first}\"")), "{text}");
    let out = mysql_login(&f, id, &first).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "root@localhost"
    );
    let out = mysql_login(&f, id, "not-the-password").await;
    assert!(!out.status.success(), "a wrong password logged in: {out:?}");
    // root's own client reads .my.cnf.
    let out = f.ssh_admin(id, "sudo -H mysql -N -e 'SELECT 1'").await;
    assert!(out.status.success(), "{out:?}");

    // A second change replaces it.
    let (second, job2) = change(&f, id).await;
    assert_ne!(first, second);
    f.settle_kind(id, "db_password", jobs).await;
    assert!(mysql_login(&f, id, &second).await.status.success());
    assert!(!mysql_login(&f, id, &first).await.status.success());
    let applied = f.audit_after(id, "service.db_password_applied").await;
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert!(applied.iter().all(|a| a["set"] == true), "{applied:?}");

    // Now look for both passwords everywhere the panel writes.
    let mut places: Vec<(String, String)> = Vec::new();
    for job in [job1, job2] {
        let log = f.job_log(job).await;
        // The log is there, with the password tasks in it, censored.
        assert!(log.contains("set the root password"), "{log}");
        assert!(log.contains("keep the root password in root's client configuration"));
        places.push((format!("job {job}'s log"), log));
    }
    let admin = Cred::Bearer(f.admin_token.clone());
    let audit = f
        .panel
        .call("GET", "/api/v1/admin/audit?limit=500", &admin, None)
        .await
        .json
        .to_string();
    assert!(audit.contains("service.db_password_change"), "{audit}");
    places.push(("the audit log".into(), audit));
    let jobs = f
        .panel
        .call("GET", "/api/v1/admin/jobs?limit=500", &admin, None)
        .await
        .json
        .to_string();
    places.push(("the job list".into(), jobs));
    places.push(("the service".into(), f.service(id).await.to_string()));
    let panel_log = logs.text();
    assert!(panel_log.contains("db_password"), "nothing captured?");
    places.push(("the panel's log".into(), panel_log));
    for (what, text) in &places {
        for pw in [&first, &second] {
            assert!(!text.contains(pw.as_str()), "the password is in {what}");
        }
    }
    // The sealed copy went with the runs.
    let mut rc = f.panel.db().read().await.unwrap();
    let left = keel_panel::scalar!(
        &mut rc.conn(),
        i64,
        "SELECT COUNT(*) FROM db_password_changes"
    )
    .unwrap();
    assert_eq!(left, Some(0));
}
