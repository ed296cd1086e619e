//! Worker processes under signals, on SQLite and PostgreSQL.
//!
//! Crash test: worker processes are killed with SIGKILL mid-job, 20 times.
//! Afterwards every job has completed, none was lost, and no two runs of
//! jobs with the same serialisation key overlapped. Run intervals are
//! recorded in the database by the handler itself. The worker processes
//! are this test binary re-run in child mode (`crash_worker_child`).
//!
//! Graceful stop: the `keel-panel worker` binary, sent SIGTERM, lets a
//! running job finish within the grace period, or gives its lease back so
//! another worker takes the job at once.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_panel::queue::worker::SLEEP_KIND;
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::{
    self, JobContext, JobError, JobFilter, JobHandler, JobSpec, JobState, RetryPolicy,
};
use keel_panel::store::Store;
use tokio_util::sync::CancellationToken;

const JOBS: usize = 60;
const KEYS: usize = 6;
const KILLS: usize = 20;

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

struct Recorder;

#[async_trait]
impl JobHandler for Recorder {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::fixed(Duration::from_millis(50)).max_attempts(1000)
    }
    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let key = ctx.job.serial_key.clone().unwrap_or_default();
        let started = now_micros();
        let id: i64 = on_pool!(ctx.store, |p| sqlx::query_scalar(
            "INSERT INTO runs (job_id, serial_key, started) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(ctx.job.id)
        .bind(&key)
        .bind(started)
        .fetch_one(p)
        .await
        .map_err(JobError::retryable))?;
        tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(..60))).await;
        on_pool!(ctx.store, |p| sqlx::query(
            "UPDATE runs SET ended = $1 WHERE id = $2"
        )
        .bind(now_micros())
        .bind(id)
        .execute(p)
        .await
        .map(|_| ())
        .map_err(JobError::retryable))?;
        Ok(())
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Child mode: a worker process on the database named by the env var.
#[test]
#[ignore = "run by `crash_test_sigkill_workers` as a child process"]
fn crash_worker_child() {
    let url = std::env::var("KEEL_CRASH_DB").expect("KEEL_CRASH_DB");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = Store::connect(&url).await.unwrap();
        let mut reg = Registry::new();
        reg.register("record", Recorder);
        let w = Arc::new(Worker::new(
            store,
            reg,
            WorkerConfig {
                queues: vec![QueueConfig::new("default")],
                concurrency: 4,
                lease: Duration::from_millis(600),
                heartbeat_every: Duration::from_millis(150),
                poll_every: Duration::from_millis(50),
                ..WorkerConfig::default()
            },
        ));
        w.run(CancellationToken::new()).await.unwrap();
    });
}

fn spawn_child(url: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["crash_worker_child", "--exact", "--ignored", "--nocapture"])
        .env("KEEL_CRASH_DB", url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker child")
}

async fn crash_story(url: String, create_runs: &'static str) {
    let store = Store::connect(&url).await.unwrap();
    on_pool!(store, |p| {
        sqlx::query(create_runs).execute(p).await.unwrap();
    });
    for i in 0..JOBS {
        queue::enqueue_now(
            &store,
            JobSpec::new("record", serde_json::json!({"i": i}))
                .serial_key(format!("svc:{}", i % KEYS)),
        )
        .await
        .unwrap();
    }

    let mut children = vec![spawn_child(&url), spawn_child(&url)];
    for k in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(120 + fastrand::u64(..120))).await;
        let victim = k % children.len();
        children[victim].kill().expect("SIGKILL"); // Child::kill sends SIGKILL
        children[victim].wait().unwrap();
        children[victim] = spawn_child(&url);
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = store
            .jobs(&JobFilter {
                state: Some(JobState::Succeeded),
                ..JobFilter::default()
            })
            .await
            .unwrap()
            .len();
        if done == JOBS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done}/{JOBS} jobs finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mut c in children {
        c.kill().unwrap();
        c.wait().unwrap();
    }

    let runs: Vec<(i64, String, i64, Option<i64>)> = on_pool!(store, |p| sqlx::query_as(
        "SELECT job_id, serial_key, started, ended FROM runs ORDER BY serial_key, started",
    )
    .fetch_all(p)
    .await
    .unwrap());
    let killed = runs.iter().filter(|r| r.3.is_none()).count();
    assert!(killed > 0, "the kills should interrupt some runs");
    // Completed runs of one key never overlap; an interrupted run (no end)
    // must not be followed by a start before it... we only know its start,
    // so it must at least start after the previous completed run ended.
    for pair in runs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.1 != b.1 {
            continue;
        }
        if let Some(end) = a.3 {
            assert!(b.2 >= end, "runs of {} overlap: {a:?} and {b:?}", a.1);
        }
    }
    // Every job completed exactly once successfully (it may have been
    // interrupted before).
    let completed: std::collections::HashMap<i64, usize> = runs
        .iter()
        .filter(|r| r.3.is_some())
        .fold(Default::default(), |mut m, r| {
            *m.entry(r.0).or_default() += 1;
            m
        });
    assert_eq!(completed.len(), JOBS, "every job has a completed run");
    eprintln!("{} runs, {killed} interrupted by SIGKILL", runs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_test_sigkill_workers_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    crash_story(
        url,
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, job_id INTEGER, serial_key TEXT, \
         started INTEGER, ended INTEGER)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_test_sigkill_workers_postgres() {
    let url = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    crash_story(
        url,
        "CREATE TABLE runs (id BIGSERIAL PRIMARY KEY, job_id BIGINT, serial_key TEXT, \
         started BIGINT, ended BIGINT)",
    )
    .await;
}

/// Starts `keel-panel worker` on `url` with the given shutdown grace.
fn spawn_binary(url: &str, grace_secs: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keel-panel"))
        .args(["--database-url", url, "worker", "--queue", "default"])
        .args(["--shutdown-grace", &grace_secs.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keel-panel worker")
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

/// Waits for the process to exit; panics after `limit`.
async fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keel-panel worker did not exit within {limit:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_running(store: &Store, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.job(id).await.unwrap().unwrap().state != JobState::Running {
        assert!(Instant::now() < deadline, "the worker never took the job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sigterm_lets_a_running_job_finish(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let id = queue::enqueue_now(
        &store,
        JobSpec::new(SLEEP_KIND, serde_json::json!({"ms": 1500})),
    )
    .await
    .unwrap()
    .job_id;
    let mut child = spawn_binary(&url, 20);
    wait_running(&store, id).await;
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(15)).await;
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let attempts = store.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "succeeded");
}

async fn sigterm_gives_back_a_job_that_outlasts_the_grace(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let id = queue::enqueue_now(
        &store,
        JobSpec::new(SLEEP_KIND, serde_json::json!({"ms": 600_000})),
    )
    .await
    .unwrap()
    .job_id;
    let mut child = spawn_binary(&url, 1);
    wait_running(&store, id).await;
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(15)).await;
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running, "{job:?}");
    assert_eq!(job.lease_token, None, "lease given back: {job:?}");
    assert_eq!(job.attempts, 0, "a released attempt is not counted");
    assert!(
        store.attempts(id).await.unwrap().is_empty(),
        "the interrupted attempt left no result"
    );
    // Another worker takes it straight away, without waiting for a lease.
    let mut reg = Registry::new();
    reg.register(SLEEP_KIND, keel_panel::queue::worker::Sleep);
    let other = Worker::new(store.clone(), reg, WorkerConfig::default());
    let taken = other.claim(1).await.unwrap();
    assert_eq!(taken.len(), 1, "released job is claimable at once");
    assert_eq!(taken[0].id, id);
    assert_eq!(taken[0].attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_job_finish_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("term.db").display());
    sigterm_lets_a_running_job_finish(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_job_finish_postgres() {
    let url = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    sigterm_lets_a_running_job_finish(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_back_a_job_that_outlasts_the_grace_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("term.db").display());
    sigterm_gives_back_a_job_that_outlasts_the_grace(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_back_a_job_that_outlasts_the_grace_postgres() {
    let url = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    sigterm_gives_back_a_job_that_outlasts_the_grace(url).await;
}

/// `keel-panel worker --config FILE` claims from the database the file
/// names, as `serve` with the same file does (it used to fall back to
/// `sqlite://keel-panel.db` in the working directory unless
/// `--database-url` was given).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_uses_the_configured_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("configured.db").display());
    let config = dir.path().join("panel.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{url}\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let store = Store::connect(&url).await.unwrap();
    let id = queue::enqueue_now(
        &store,
        JobSpec::new(SLEEP_KIND, serde_json::json!({"ms": 10})),
    )
    .await
    .unwrap()
    .job_id;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel-panel"))
        .arg("--config")
        .arg(&config)
        .args(["worker", "--queue", "default"])
        .env_remove("KEEL_DATABASE_URL")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keel-panel worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = store.job(id).await.unwrap().unwrap().state;
        if state == JobState::Succeeded || Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    sigterm(&child);
    wait_exit(&mut child, Duration::from_secs(15)).await;
    assert_eq!(
        state,
        JobState::Succeeded,
        "the worker ran the configured queue's job"
    );
    assert!(
        !dir.path().join("keel-panel.db").exists(),
        "no stray database in the working directory"
    );
}
