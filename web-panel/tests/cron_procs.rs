//! Cron across processes: three worker processes run the same interval
//! schedule against one database (SQLite file or PostgreSQL), and each fire
//! time runs exactly once. Time is a [`FileClock`] the test moves minute by
//! minute; the workers are this test binary re-run in child mode
//! (`cron_worker_child`), each ticking the schedule from its worker loop.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_panel::queue::cron::{Schedule, Scheduler};
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::{JobContext, JobError, JobHandler, JobSpec};
use keel_panel::store::Store;
use keel_panel::testsupport::FileClock;
use tokio_util::sync::CancellationToken;

/// On a minute boundary.
const T0: i64 = 1_699_999_980_000;
const NODES: usize = 3;
const FIRES: i64 = 8;
const SCHEDULE: &str = "probe";

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

/// Records which process ran which job.
struct Probe;

#[async_trait]
impl JobHandler for Probe {
    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let pid = i64::from(std::process::id());
        on_pool!(ctx.store, |p| sqlx::query(
            "INSERT INTO cron_runs (job_id, pid) VALUES ($1, $2)"
        )
        .bind(ctx.job.id)
        .bind(pid)
        .execute(p)
        .await
        .map(|_| ())
        .map_err(JobError::retryable))?;
        Ok(())
    }
}

fn schedule() -> Schedule {
    Schedule::interval(
        SCHEDULE,
        Duration::from_secs(60),
        JobSpec::new("cron_probe", serde_json::json!({})),
    )
}

/// Child mode: a worker process with a scheduler, on the database and clock
/// named by the environment.
#[test]
#[ignore = "run by the cron tests as a child process"]
fn cron_worker_child() {
    let url = std::env::var("KEEL_CRON_DB").expect("KEEL_CRON_DB");
    let clock = FileClock::open(std::env::var("KEEL_CRON_CLOCK").expect("KEEL_CRON_CLOCK"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let store = Store::connect(&url)
            .await
            .expect("connect")
            .with_clock(clock);
        on_pool!(store, |p| {
            sqlx::query("INSERT INTO cron_nodes (pid) VALUES ($1)")
                .bind(i64::from(std::process::id()))
                .execute(p)
                .await
                .expect("register node");
        });
        let mut reg = Registry::new();
        reg.register("cron_probe", Probe);
        let w = Worker::new(
            store.clone(),
            reg,
            WorkerConfig {
                queues: vec![QueueConfig::new("default")],
                concurrency: 2,
                poll_every: Duration::from_millis(20),
                ..WorkerConfig::default()
            },
        )
        .with_scheduler(Scheduler::new(store, vec![schedule()]));
        Arc::new(w)
            .run(CancellationToken::new())
            .await
            .expect("worker");
    });
}

fn spawn_child(url: &str, clock: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["cron_worker_child", "--exact", "--ignored", "--nocapture"])
        .env("KEEL_CRON_DB", url)
        .env("KEEL_CRON_CLOCK", clock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker child")
}

/// Kills the children however the test ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    on_pool!(store, |p| sqlx::query_scalar(sql)
        .fetch_one(p)
        .await
        .expect("count"))
}

async fn wait_for(store: &Store, sql: &'static str, want: i64, deadline: Instant, what: &str) {
    loop {
        let n = count(store, sql).await;
        if n >= want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {n}/{want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn three_worker_processes_fire_each_time_once(url: String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock_path = dir.path().join("clock");
    let clock = FileClock::create(&clock_path, T0);
    let store = Store::connect(&url).await.expect("connect");
    for sql in [
        "CREATE TABLE cron_nodes (pid BIGINT NOT NULL)",
        "CREATE TABLE cron_runs (job_id BIGINT NOT NULL, pid BIGINT NOT NULL)",
    ] {
        on_pool!(store, |p| {
            sqlx::query(sql).execute(p).await.expect(sql);
        });
    }
    let _children = Children((0..NODES).map(|_| spawn_child(&url, &clock_path)).collect());
    let deadline = Instant::now() + Duration::from_secs(25);
    wait_for(
        &store,
        "SELECT COUNT(*) FROM cron_nodes",
        NODES as i64,
        deadline,
        "worker processes up",
    )
    .await;
    // The first tick registers the schedule; fires count from there.
    wait_for(
        &store,
        "SELECT COUNT(*) FROM schedules",
        1,
        deadline,
        "schedule registered",
    )
    .await;
    for k in 1..=FIRES {
        clock.advance(Duration::from_secs(60));
        // Each minute has one fire time; wait until its job has run and
        // its result is recorded before moving time on.
        wait_for(
            &store,
            "SELECT COUNT(*) FROM jobs WHERE kind = 'cron_probe' AND state = 'succeeded'",
            k,
            deadline,
            "fires run",
        )
        .await;
    }
    // Give a slow node one more round to (wrongly) fire again.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let fires: Vec<(i64, Option<i64>)> = on_pool!(store, |p| sqlx::query_as(
        "SELECT fire_at, job_id FROM schedule_fires WHERE name = $1 ORDER BY fire_at"
    )
    .bind(SCHEDULE)
    .fetch_all(p)
    .await
    .expect("fires"));
    let expected: Vec<i64> = (1..=FIRES).map(|k| T0 + k * 60_000).collect();
    assert_eq!(
        fires.iter().map(|f| f.0).collect::<Vec<_>>(),
        expected,
        "each fire time claimed once"
    );
    let runs: Vec<(i64, i64)> = on_pool!(store, |p| sqlx::query_as(
        "SELECT job_id, pid FROM cron_runs ORDER BY job_id"
    )
    .fetch_all(p)
    .await
    .expect("runs"));
    let fired_jobs: Vec<i64> = fires
        .iter()
        .map(|f| f.1.expect("on-time fires enqueue a job"))
        .collect();
    assert_eq!(
        runs.iter().map(|r| r.0).collect::<Vec<_>>(),
        fired_jobs,
        "each fire's job ran exactly once"
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM jobs WHERE kind = 'cron_probe'"
        )
        .await,
        FIRES,
        "no job besides the fires' own"
    );
    let by_pid = runs.iter().fold(HashMap::<i64, usize>::new(), |mut m, r| {
        *m.entry(r.1).or_default() += 1;
        m
    });
    eprintln!("runs per worker process: {by_pid:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_fire_each_time_once_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("cron.db").display());
    three_worker_processes_fire_each_time_once(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_fire_each_time_once_postgres() {
    let url = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    three_worker_processes_fire_each_time_once(url).await;
}
