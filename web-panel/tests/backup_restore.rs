//! `keel-panel admin backup` and `admin restore` (issue 18), on SQLite and
//! on a real PostgreSQL, taken while a worker runs jobs and a producer
//! queues more.
//!
//! Every queued job is written with its `probe.queued` audit row in one
//! transaction, and the handler writes a `probe.ran` audit row before its
//! job is marked succeeded. A backup that is one consistent snapshot
//! therefore holds exactly one `probe.queued` row per job, a `probe.ran`
//! row for every succeeded job, job ids with no gap, and a job count
//! between the counts seen just before and just after the backup ran.
//! After the restore (the real binary, into an empty data directory and an
//! empty database) a sealed credential opens with the restored key, the
//! secret files are identical and private, the queue hands out the next id
//! and a worker finishes every job left queued or running at the snapshot.
//! Restores into anything but an empty target are refused.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_panel::audit::{self, Change};
use keel_panel::automation::catalog::{self, NewCredential};
use keel_panel::automation::model::CredentialKind;
use keel_panel::automation::secrets::Sealer;
use keel_panel::db::{tx_conn, Db};
use keel_panel::domain::Principal;
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::{self, JobContext, JobError, JobHandler, JobSpec, RetryPolicy};
use keel_panel::store::Store;
use tokio_util::sync::CancellationToken;

const VAULT_SECRET: &str = "correct horse battery staple";

/// Runs `$body` with `$p` bound to whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, |$p:ident| $body:expr) => {
        match ($store.as_sqlite_pool(), $store.as_postgres_pool()) {
            (Some($p), _) => $body,
            (_, Some($p)) => $body,
            _ => unreachable!("a store has one pool"),
        }
    };
}

/// The job: records that it ran (an audit row), then takes a little time,
/// so a backlog builds up behind it.
struct Probe;

#[async_trait]
impl JobHandler for Probe {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::fixed(Duration::from_millis(50)).max_attempts(100)
    }
    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let mut tx = ctx.store.begin().await.map_err(JobError::retryable)?;
        audit::record(
            &mut tx_conn(&mut tx),
            ctx.store.now(),
            &Principal::system(),
            Change::new("probe.ran", "job", ctx.job.id),
        )
        .await
        .map_err(JobError::retryable)?;
        tx.commit().await.map_err(JobError::retryable)?;
        tokio::time::sleep(Duration::from_millis(15)).await;
        Ok(())
    }
}

fn worker(store: Store) -> Arc<Worker> {
    let mut reg = Registry::new();
    reg.register("probe", Probe);
    Arc::new(Worker::new(
        store,
        reg,
        WorkerConfig {
            queues: vec![QueueConfig::new("default")],
            concurrency: 2,
            lease: Duration::from_millis(1500),
            heartbeat_every: Duration::from_millis(300),
            poll_every: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
    ))
}

/// Queues one probe job with its audit row, in one transaction.
async fn queue_probe(db: &Db, n: u64) -> i64 {
    let mut tx = db.begin().await.unwrap();
    let out = queue::enqueue(
        &mut tx,
        JobSpec::new("probe", serde_json::json!({ "n": n })),
    )
    .await
    .unwrap();
    let id = out.job_id;
    audit::record(
        &mut tx_conn(&mut tx),
        db.now(),
        &Principal::system(),
        Change::new("probe.queued", "job", id),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn count_jobs(store: &Store) -> i64 {
    on_pool!(store, |p| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM jobs WHERE kind = 'probe'"
    )
    .fetch_one(p)
    .await
    .unwrap())
}

async fn ids(store: &Store, sql: &str) -> Vec<i64> {
    on_pool!(store, |p| sqlx::query_scalar::<_, i64>(
        sqlx::AssertSqlSafe(sql.to_string())
    )
    .fetch_all(p)
    .await
    .unwrap())
}

fn panel(data_dir: &Path, url: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel-panel"));
    cmd.arg("--data-dir").arg(data_dir);
    cmd.env_remove("KEEL_DATABASE_URL");
    if let Some(u) = url {
        cmd.args(["--database-url", u]);
    }
    cmd.args(args).output().expect("run keel-panel")
}

fn ok(out: std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "keel-panel failed: {text}");
    text
}

fn refused(out: std::process::Output, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a refusal ({why})");
    assert!(err.contains(why), "refusal should say {why:?}: {err}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Sets up the source panel's secrets: a sealed credential (creating
/// automation.key), the panel's SSH key, an ACME account file, a
/// known_hosts file.
async fn seed_secrets(db: &Db, data_dir: &Path) {
    let sealer = Sealer::for_data_dir(data_dir).unwrap();
    catalog::create_credential(
        db,
        &sealer,
        &Principal::system(),
        &NewCredential {
            name: "vault".into(),
            kind: CredentialKind::VaultPassword,
            username: None,
            vault_id: None,
            secret: VAULT_SECRET.into(),
            passphrase: None,
        },
    )
    .await
    .unwrap();
    keel_panel::provision::PanelKey::load_or_create(&data_dir.join("ssh")).unwrap();
    for (dir, name, text) in [
        (
            "acme",
            "account-0123abcd.json",
            "{\"id\":\"https://acme.test/acct/1\"}",
        ),
        (
            "known_hosts.d",
            "keel-1",
            "[127.0.0.1]:2201 ssh-ed25519 AAAAC3Nz\n",
        ),
    ] {
        std::fs::create_dir_all(data_dir.join(dir)).unwrap();
        let p = data_dir.join(dir).join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

struct Snapshot {
    before: i64,
    after: i64,
}

/// Runs the source panel (worker plus producer) and takes the backup with
/// the binary meanwhile.
async fn backup_while_running(source_url: &str, data_dir: &Path, archive: &Path) -> (Db, Snapshot) {
    let db = Db::open(source_url).await.unwrap();
    seed_secrets(&db, data_dir).await;
    let w = worker(db.store().clone());
    let stop_worker = CancellationToken::new();
    let worker_task = tokio::spawn(w.run(stop_worker.clone()));
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (db, producing) = (db.clone(), producing.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while producing.load(Ordering::Relaxed) {
                queue_probe(&db, n).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            n
        })
    };
    // Let a backlog build and the worker finish some.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = count_jobs(db.store()).await;
    let (dir, url, file) = (
        data_dir.to_path_buf(),
        source_url.to_string(),
        archive.to_path_buf(),
    );
    let out = tokio::task::spawn_blocking(move || {
        panel(
            &dir,
            Some(&url),
            &["admin", "backup", file.to_str().unwrap()],
        )
    })
    .await
    .unwrap();
    let after = count_jobs(db.store()).await;
    let text = ok(out);
    eprintln!("{text}");
    // The panel keeps running a little after the backup, then stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    producing.store(false, Ordering::Relaxed);
    let produced = producer.await.unwrap();
    stop_worker.cancel();
    worker_task.await.unwrap().unwrap();
    assert!(
        after > before,
        "jobs were queued while the backup ran ({before} before, {after} after, {produced} in all)"
    );
    (db, Snapshot { before, after })
}

/// What must hold of the restored database, and the restored files.
async fn check_restored(
    restored: &Store,
    live: &Store,
    snap: &Snapshot,
    source_dir: &Path,
    restored_dir: &Path,
) {
    let jobs = ids(
        restored,
        "SELECT id FROM jobs WHERE kind = 'probe' ORDER BY id",
    )
    .await;
    let n = jobs.len() as i64;
    assert!(
        snap.before <= n && n <= snap.after,
        "the backup holds {n} jobs; {} existed before it started and {} after it ended",
        snap.before,
        snap.after
    );
    let first = jobs[0];
    assert_eq!(
        jobs,
        (first..first + n).collect::<Vec<_>>(),
        "job ids without a gap"
    );
    // Each job and its audit row were one transaction: both or neither.
    let queued = ids(
        restored,
        "SELECT object_id FROM audit_log WHERE action = 'probe.queued' ORDER BY object_id",
    )
    .await;
    assert_eq!(queued, jobs, "one probe.queued audit row per job, no more");
    // A handler writes probe.ran before its job is marked succeeded.
    let ran = ids(
        restored,
        "SELECT DISTINCT object_id FROM audit_log WHERE action = 'probe.ran' ORDER BY object_id",
    )
    .await;
    let succeeded = ids(
        restored,
        "SELECT id FROM jobs WHERE kind = 'probe' AND state = 'succeeded' ORDER BY id",
    )
    .await;
    for id in &succeeded {
        assert!(
            ran.binary_search(id).is_ok(),
            "job {id} is succeeded in the backup but its probe.ran row is not"
        );
    }
    assert!(ran.iter().all(|id| jobs.binary_search(id).is_ok()));
    let pending = ids(
        restored,
        "SELECT id FROM jobs WHERE kind = 'probe' AND state IN ('queued', 'running') ORDER BY id",
    )
    .await;
    eprintln!(
        "snapshot: {n} jobs ({} before the backup, {} after), {} succeeded, {} queued or running",
        snap.before,
        snap.after,
        succeeded.len(),
        pending.len()
    );
    assert!(
        !succeeded.is_empty() && !pending.is_empty(),
        "the snapshot was taken mid-run"
    );
    // What a job was queued with is what the live database has.
    let payloads = |s: &Store| {
        let s = s.clone();
        async move {
            on_pool!(s, |p| sqlx::query_as::<_, (i64, String)>(
                "SELECT id, CAST(payload AS TEXT) FROM jobs WHERE kind = 'probe' ORDER BY id"
            )
            .fetch_all(p)
            .await
            .unwrap())
        }
    };
    let live_rows = payloads(live).await;
    let restored_rows = payloads(restored).await;
    assert_eq!(restored_rows[..], live_rows[..restored_rows.len()]);

    // The secrets came back, identical and private.
    for f in [
        "automation.key",
        "ssh/id_ed25519",
        "ssh/id_ed25519.pub",
        "acme/account-0123abcd.json",
        "known_hosts.d/keel-1",
    ] {
        let (a, b) = (source_dir.join(f), restored_dir.join(f));
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap_or_else(|e| panic!("{f} restored: {e}")),
            "{f}"
        );
        assert_eq!(mode(&b), 0o600, "{f} is private");
    }
    for d in ["", "ssh", "acme", "known_hosts.d"] {
        assert_eq!(mode(&restored_dir.join(d)), 0o700, "{d}/ is private");
    }
    // The sealed credential opens with the restored key.
    let sealed: String = on_pool!(restored, |p| sqlx::query_scalar(
        "SELECT sealed FROM credentials WHERE name = 'vault'"
    )
    .fetch_one(p)
    .await
    .unwrap());
    let opened = Sealer::for_data_dir(restored_dir)
        .unwrap()
        .open("credential:vault_password", &sealed)
        .expect("the restored key opens the sealed credential");
    assert!(opened.expose().contains(VAULT_SECRET));
}

/// The restored queue works: the next id follows the restored ones, and a
/// worker finishes every job, including those running at the snapshot.
async fn queue_after_restore(restored_url: &str) {
    let db = Db::open(restored_url).await.unwrap();
    let jobs = ids(
        db.store(),
        "SELECT id FROM jobs WHERE kind = 'probe' ORDER BY id",
    )
    .await;
    let next = queue_probe(&db, 1_000_000).await;
    assert!(
        next > *jobs.last().unwrap(),
        "new job {next} after restored ids up to {}",
        jobs.last().unwrap()
    );
    let w = worker(db.store().clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(w.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = ids(
            db.store(),
            "SELECT id FROM jobs WHERE kind = 'probe' AND state <> 'succeeded'",
        )
        .await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restored jobs not finished: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let ran = ids(
        db.store(),
        "SELECT DISTINCT object_id FROM audit_log WHERE action = 'probe.ran' ORDER BY object_id",
    )
    .await;
    let all = ids(
        db.store(),
        "SELECT id FROM jobs WHERE kind = 'probe' ORDER BY id",
    )
    .await;
    assert_eq!(ran, all, "every job ran");
}

fn archive_checks(archive: &Path) {
    assert_eq!(mode(archive), 0o600, "the archive is private");
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in tar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    assert_eq!(names[0], "keel-backup.json");
    for f in [
        "data/automation.key",
        "data/ssh/id_ed25519",
        "data/acme/account-0123abcd.json",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} in {names:?}");
    }
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let restored = tmp.path().join("restored");
    let archive = tmp.path().join("panel.keel-backup");
    std::fs::create_dir_all(&source).unwrap();
    (tmp, source, restored, archive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_while_jobs_run_sqlite() {
    let (_tmp, source, restored, archive) = dirs();
    let source_url = format!("sqlite://{}", source.join("panel.db").display());
    let (live, snap) = backup_while_running(&source_url, &source, &archive).await;
    archive_checks(&archive);
    // A second backup never overwrites the first.
    refused(
        panel(
            &source,
            Some(&source_url),
            &["admin", "backup", archive.to_str().unwrap()],
        ),
        "already exists",
    );
    // A SQLite backup does not go into PostgreSQL.
    let pg = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    refused(
        panel(
            &restored,
            Some(&pg),
            &["admin", "restore", archive.to_str().unwrap()],
        ),
        "this backup is of a SQLite panel but the configured database is PostgreSQL",
    );
    assert!(!restored.exists(), "a refused restore writes nothing");

    // The default database: SQLite in the (new) data directory.
    ok(panel(
        &restored,
        None,
        &["admin", "restore", archive.to_str().unwrap()],
    ));
    let restored_url = format!("sqlite://{}", restored.join("panel.db").display());
    let store = Store::connect(&restored_url).await.unwrap();
    check_restored(&store, live.store(), &snap, &source, &restored).await;
    drop(store);
    // The data directory is no longer empty: a second restore is refused.
    refused(
        panel(
            &restored,
            None,
            &["admin", "restore", archive.to_str().unwrap()],
        ),
        "is not empty",
    );
    queue_after_restore(&restored_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_while_jobs_run_postgres() {
    let (_tmp, source, restored, archive) = dirs();
    let server = keel_panel::testsupport::PgServer::shared();
    let source_url = server.fresh_database().await;
    let (live, snap) = backup_while_running(&source_url, &source, &archive).await;
    archive_checks(&archive);

    let restored_url = server.fresh_database().await;
    ok(panel(
        &restored,
        Some(&restored_url),
        &["admin", "restore", archive.to_str().unwrap()],
    ));
    let store = Store::connect(&restored_url).await.unwrap();
    check_restored(&store, live.store(), &snap, &source, &restored).await;
    drop(store);
    // The database now has tables: a restore into it (even with an empty
    // data directory) is refused and names what it found.
    let other = _tmp.path().join("other");
    refused(
        panel(
            &other,
            Some(&restored_url),
            &["admin", "restore", archive.to_str().unwrap()],
        ),
        "the PostgreSQL database is not empty",
    );
    assert!(!other.exists(), "a refused restore writes nothing");
    queue_after_restore(&restored_url).await;
}
