//! Cron from the worker loop. Across processes: three worker processes run
//! the same interval schedule against one database (SQLite file or
//! PostgreSQL), and each fire time runs exactly once. Time is a
//! [`FileClock`] the test moves minute by minute; the workers are this test
//! binary re-run in child mode (`cron_worker_child`), each ticking the
//! schedule from its worker loop. In one process: a clock that moves at any
//! point of the loop (mid-tick included) and then stands still never loses
//! the fire it made due.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_panel::clock::{Clock, UnixMillis};
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

/// Where the schedule's fires and jobs stand, for a failure message: an
/// unclaimed fire, a queued job and a running one are different bugs.
async fn queue_state(store: &Store) -> String {
    let fires: Vec<(i64, Option<i64>)> = on_pool!(store, |p| sqlx::query_as(
        "SELECT fire_at, job_id FROM schedule_fires ORDER BY fire_at"
    )
    .fetch_all(p)
    .await
    .expect("fires"));
    let jobs: Vec<(i64, String, i64)> = on_pool!(store, |p| sqlx::query_as(
        "SELECT id, state, attempts FROM jobs ORDER BY id"
    )
    .fetch_all(p)
    .await
    .expect("jobs"));
    let fires: Vec<String> = fires
        .iter()
        .map(|(at, job)| format!("T0+{}s -> job {job:?}", (at - T0) / 1000))
        .collect();
    format!("fires claimed: {fires:?}; jobs (id, state, attempts): {jobs:?}")
}

async fn wait_for(store: &Store, sql: &'static str, want: i64, deadline: Instant, what: &str) {
    loop {
        let n = count(store, sql).await;
        if n >= want {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{what}: {n}/{want}; {}", queue_state(store).await);
        }
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
    // Starting three processes (exec, connect, migrate) is the slow part on
    // a loaded machine; it gets its own deadline, and each fire its own, so
    // a slow start-up is not reported as a lost fire.
    let deadline = Instant::now() + Duration::from_secs(60);
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
        // its result is recorded before moving time on. The workers poll
        // every 20 ms, so this is hundreds of loop turns per process.
        wait_for(
            &store,
            "SELECT COUNT(*) FROM jobs WHERE kind = 'cron_probe' AND state = 'succeeded'",
            k,
            Instant::now() + Duration::from_secs(25),
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

/// A clock that stands at `T0`, jumps one interval forward on its `jump_on`th
/// read, and stands still again; it counts its reads, so a test can tell a
/// worker loop that keeps running (reading the clock) without firing from
/// one that is merely slow.
#[derive(Debug)]
struct JumpClock {
    now: AtomicI64,
    reads: AtomicU64,
    jump_on: u64,
}

impl JumpClock {
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

impl Clock for JumpClock {
    fn now(&self) -> UnixMillis {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.jump_on {
            self.now.fetch_add(60_000, Ordering::SeqCst);
        }
        self.now.load(Ordering::SeqCst)
    }
}

/// The job of a claimed fire; `None` while the fire is unclaimed.
async fn fire_job(store: &Store, name: &str, fire_at: i64) -> Option<Option<i64>> {
    on_pool!(store, |p| sqlx::query_scalar(
        "SELECT job_id FROM schedule_fires WHERE name = $1 AND fire_at = $2"
    )
    .bind(name)
    .bind(fire_at)
    .fetch_optional(p)
    .await
    .expect("fire row"))
}

/// Regression: the worker loop timed its next schedule tick from a clock
/// reading taken *after* the tick. When the clock moved while a tick ran
/// (the tick had read the old time) and then stood still, the next tick was
/// due a second after the new time, which a standing clock never reaches:
/// the fire the move made due was never claimed. Under load, all three
/// processes of `three_worker_processes_fire_each_time_once_postgres` were
/// mid-tick when the test moved its clock ("fires run: 0/1" after 26 s).
///
/// Here the jump happens at every read position of the first loop
/// iterations in turn, and each time the fire must be claimed and run.
/// Loss and slowness are told apart by the clock's own read count: a loop
/// that keeps reading the clock well past the jump without claiming the
/// fire has lost it; a slow machine only makes the reads come later.
async fn a_clock_moving_anywhere_in_the_loop_loses_no_fire(url: String) {
    let base = Store::connect(&url).await.expect("connect");
    on_pool!(base, |p| {
        sqlx::query("CREATE TABLE cron_runs (job_id BIGINT NOT NULL, pid BIGINT NOT NULL)")
            .execute(p)
            .await
            .expect("runs table");
    });
    // A loop iteration reads the clock a handful of times; this many reads
    // after the jump is many iterations without a claim.
    const READS_AFTER_JUMP: u64 = 200;
    // Only a stalled loop (no reads at all) runs into this.
    let stalled_after = Duration::from_secs(120);
    for jump_on in 1..=12u64 {
        let name = format!("jump-{jump_on}");
        let clock = Arc::new(JumpClock {
            now: AtomicI64::new(T0),
            reads: AtomicU64::new(0),
            jump_on,
        });
        let store = base.clone().with_clock(clock.clone());
        // Anchored before the worker starts, so wherever the jump falls the
        // clock ends one interval after the anchor: exactly one fire is due.
        assert_eq!(store.schedule_anchor(&name, T0).await.expect("anchor"), T0);
        let mut reg = Registry::new();
        reg.register("cron_probe", Probe);
        let worker = Arc::new(
            Worker::new(
                store.clone(),
                reg,
                WorkerConfig {
                    queues: vec![QueueConfig::new("default")],
                    concurrency: 2,
                    poll_every: Duration::from_millis(5),
                    ..WorkerConfig::default()
                },
            )
            .with_scheduler(Scheduler::new(
                store.clone(),
                vec![Schedule::interval(
                    &name,
                    Duration::from_secs(60),
                    JobSpec::new("cron_probe", serde_json::json!({})),
                )],
            )),
        );
        let stop = CancellationToken::new();
        let running = tokio::spawn(worker.run(stop.clone()));
        let fire_at = T0 + 60_000;
        let started = Instant::now();
        let job_id = loop {
            if let Some(job) = fire_job(&store, &name, fire_at).await {
                break job.expect("an on-time fire enqueues its job");
            }
            let reads = clock.reads();
            assert!(
                reads < jump_on + READS_AFTER_JUMP,
                "jump on read {jump_on}: fire at {fire_at} never claimed, \
                 though the worker loop read the clock {reads} times"
            );
            assert!(
                started.elapsed() < stalled_after,
                "jump on read {jump_on}: the worker loop stalled after {reads} clock reads"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let claimed_at = clock.reads();
        loop {
            let ran: i64 = on_pool!(store, |p| sqlx::query_scalar(
                "SELECT COUNT(*) FROM cron_runs WHERE job_id = $1"
            )
            .bind(job_id)
            .fetch_one(p)
            .await
            .expect("runs"));
            if ran > 0 {
                assert_eq!(ran, 1, "jump on read {jump_on}: the fire's job ran once");
                break;
            }
            let reads = clock.reads();
            assert!(
                reads < claimed_at + READS_AFTER_JUMP,
                "jump on read {jump_on}: job {job_id} never ran, \
                 though the worker loop read the clock {reads} times"
            );
            assert!(
                started.elapsed() < stalled_after,
                "jump on read {jump_on}: the worker loop stalled after {reads} clock reads"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        running.await.expect("worker task").expect("worker loop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_clock_moving_mid_tick_loses_no_fire_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("cron.db").display());
    a_clock_moving_anywhere_in_the_loop_loses_no_fire(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_clock_moving_mid_tick_loses_no_fire_postgres() {
    let url = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    a_clock_moving_anywhere_in_the_loop_loses_no_fire(url).await;
}
