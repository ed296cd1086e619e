//! Crash test: worker processes are killed with SIGKILL mid-job, 20 times.
//! Afterwards every job has completed, none was lost, and no two runs of
//! jobs with the same serialisation key overlapped. Run intervals are
//! recorded in the database by the handler itself. The worker processes
//! are this test binary re-run in child mode (`crash_worker_child`).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::{
    self, JobContext, JobError, JobFilter, JobHandler, JobSpec, JobState, RetryPolicy,
};
use keel_panel::store::Store;
use tokio_util::sync::CancellationToken;

const JOBS: usize = 60;
const KEYS: usize = 6;
const KILLS: usize = 20;

struct Recorder;

#[async_trait]
impl JobHandler for Recorder {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::fixed(Duration::from_millis(50)).max_attempts(1000)
    }
    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let pool = ctx.store.as_sqlite_pool().expect("sqlite");
        let key = ctx.job.serial_key.clone().unwrap_or_default();
        let started = now_micros();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (job_id, serial_key, started) VALUES ($1, $2, $3) RETURNING rowid",
        )
        .bind(ctx.job.id)
        .bind(&key)
        .bind(started)
        .fetch_one(pool)
        .await
        .map_err(JobError::retryable)?;
        tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(..60))).await;
        sqlx::query("UPDATE runs SET ended = $1 WHERE rowid = $2")
            .bind(now_micros())
            .bind(id)
            .execute(pool)
            .await
            .map_err(JobError::retryable)?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_test_sigkill_workers_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    let store = Store::connect(&url).await.unwrap();
    let pool = store.as_sqlite_pool().unwrap().clone();
    sqlx::query(
        "CREATE TABLE runs (job_id INTEGER, serial_key TEXT, started INTEGER, ended INTEGER)",
    )
    .execute(&pool)
    .await
    .unwrap();
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

    let runs: Vec<(i64, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT job_id, serial_key, started, ended FROM runs ORDER BY serial_key, started",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
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
