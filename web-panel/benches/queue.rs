//! Job queue benchmark, on SQLite and PostgreSQL with 1, 4 and 16 workers
//! (each running up to 64 jobs at once):
//!
//! - throughput: enqueue `KEEL_BENCH_JOBS` no-op jobs (default 10,000) in
//!   transactions of 100 while the workers run, and time until every job is
//!   claimed, run and recorded. Each transaction enqueues its 100 jobs
//!   either one statement per job (`queue::enqueue`, column `enqueue` =
//!   `one`) or in one statement (`queue::enqueue_many`, `many`);
//!   `KEEL_BENCH_ENQUEUE=one|many` runs only one of them, and
//!   `KEEL_BENCH_WORKERS=4` (a comma list) only those worker counts. Pickup latency
//!   (enqueue to handler start) in this mode is mostly time spent waiting
//!   behind the backlog.
//! - idle latency: with the workers idle, enqueue one job at a time and time
//!   enqueue to handler start (the wake-up path: in-process notification,
//!   and LISTEN/NOTIFY on PostgreSQL).
//!
//! CPU time is counted too (this process, plus the PostgreSQL server's
//! processes), as CPU ms per 1,000 jobs: on a shared machine the wall-clock
//! rate depends on what else runs, the CPU cost much less.
//!
//! Prints a Markdown table. Run:
//! `cargo bench -p keel-panel --bench queue --features testsupport --profile bench-fast`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::{self, JobContext, JobError, JobHandler, JobSpec};
use keel_panel::store::Store;
use keel_panel::testsupport::PgServer;
use tokio_util::sync::CancellationToken;

/// Jobs enqueued one by one in the idle-latency run.
const IDLE_JOBS: usize = 200;

struct Noop {
    done: Arc<AtomicUsize>,
    latencies: Arc<Mutex<Vec<u64>>>,
    t0: Instant,
}

#[async_trait]
impl JobHandler for Noop {
    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let enq = ctx.job.payload["t"].as_u64().unwrap_or(0);
        let now = self.t0.elapsed().as_micros() as u64;
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now.saturating_sub(enq));
        self.done.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

struct Pool {
    done: Arc<AtomicUsize>,
    latencies: Arc<Mutex<Vec<u64>>>,
    t0: Instant,
    shutdown: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<Result<(), keel_panel::store::StoreError>>>,
}

fn start_workers(store: &Store, workers: usize) -> Pool {
    let done = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let shutdown = CancellationToken::new();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let mut reg = Registry::new();
        reg.register(
            "noop",
            Noop {
                done: done.clone(),
                latencies: latencies.clone(),
                t0,
            },
        );
        let w = Arc::new(Worker::new(
            store.clone(),
            reg,
            WorkerConfig {
                queues: vec![QueueConfig::new("default")],
                concurrency: 64,
                batch: 64,
                ..WorkerConfig::default()
            },
        ));
        handles.push(tokio::spawn(w.run(shutdown.clone())));
    }
    Pool {
        done,
        latencies,
        t0,
        shutdown,
        handles,
    }
}

impl Pool {
    async fn stop(self) -> Vec<u64> {
        self.shutdown.cancel();
        for h in self.handles {
            h.await.expect("worker task").expect("worker");
        }
        let mut l = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        l.sort_unstable();
        l
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

async fn unfinished(store: &Store) -> i64 {
    let sql = "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')";
    if let Some(pool) = store.as_sqlite_pool() {
        sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .expect("count")
    } else {
        let pool = store.as_postgres_pool().expect("a pool");
        sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .expect("count")
    }
}

/// CPU time (user + system, in clock ticks) of process `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
    get(11) + get(12)
}

/// CPU ticks of the PostgreSQL server: the postmaster and its children.
fn pg_cpu_ticks(pg: &PgServer) -> u64 {
    let Some(master) = std::fs::read_to_string(pg.dir.join("data/postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0;
    };
    let mut total = cpu_ticks(master);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(master) {
            total += cpu_ticks(pid);
        }
    }
    total
}

/// CPU milliseconds used so far by this process and the PostgreSQL server.
fn cpu_ms(pg: &PgServer) -> f64 {
    // Clock ticks are 1/100 s on Linux.
    (cpu_ticks(std::process::id()) + pg_cpu_ticks(pg)) as f64 * 10.0
}

/// How the throughput run enqueues each transaction's 100 jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enqueue {
    /// `queue::enqueue`, one statement per job.
    One,
    /// `queue::enqueue_many`, one statement per transaction.
    Many,
}

impl Enqueue {
    fn label(self) -> &'static str {
        match self {
            Enqueue::One => "one",
            Enqueue::Many => "many",
        }
    }
}

/// Returns jobs/s and the sorted pickup latencies (µs).
async fn throughput(store: &Store, workers: usize, jobs: usize, how: Enqueue) -> (f64, Vec<u64>) {
    let pool = start_workers(store, workers);
    let t0 = pool.t0;
    for chunk in 0..jobs / 100 {
        let mut tx = store.begin().await.expect("begin");
        let spec = |i: usize| {
            let t = t0.elapsed().as_micros() as u64;
            JobSpec::new("noop", serde_json::json!({"t": t, "i": chunk * 100 + i}))
        };
        match how {
            Enqueue::One => {
                for i in 0..100 {
                    queue::enqueue(&mut tx, spec(i)).await.expect("enqueue");
                }
            }
            Enqueue::Many => {
                let specs: Vec<JobSpec> = (0..100).map(spec).collect();
                queue::enqueue_many(&mut tx, &specs)
                    .await
                    .expect("enqueue_many");
            }
        }
        tx.commit().await.expect("commit");
    }
    while pool.done.load(Ordering::Acquire) < jobs {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Handlers are done; wait until the last results are recorded.
    while unfinished(store).await > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let lat = pool.stop().await;
    (jobs as f64 / elapsed, lat)
}

/// Sorted pickup latencies (µs) of jobs enqueued one at a time to idle workers.
async fn idle_latency(store: &Store, workers: usize) -> Vec<u64> {
    let pool = start_workers(store, workers);
    // Let every worker reach its wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..IDLE_JOBS {
        let t = pool.t0.elapsed().as_micros() as u64;
        queue::enqueue_now(
            store,
            JobSpec::new("noop", serde_json::json!({"t": t, "i": i})),
        )
        .await
        .expect("enqueue");
        while pool.done.load(Ordering::Acquire) <= i {
            tokio::task::yield_now().await;
        }
        // Let the completion land so the next job meets idle workers.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pool.stop().await
}

async fn open(backend: &str, pg: &PgServer, dir: &tempfile::TempDir) -> Store {
    if backend == "sqlite" {
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        Store::connect(&url).await.expect("sqlite store")
    } else {
        Store::connect(&pg.fresh_database().await)
            .await
            .expect("postgres store")
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::var("KEEL_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let only = std::env::var("KEEL_BENCH_BACKEND").ok();
    let modes: Vec<Enqueue> = match std::env::var("KEEL_BENCH_ENQUEUE").ok().as_deref() {
        Some("one") => vec![Enqueue::One],
        Some("many") => vec![Enqueue::Many],
        _ => vec![Enqueue::One, Enqueue::Many],
    };
    let worker_counts: Vec<usize> = std::env::var("KEEL_BENCH_WORKERS")
        .ok()
        .map(|s| s.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16]);
    let pg = PgServer::start(true);
    println!(
        "| backend | enqueue | workers | jobs | jobs/s | CPU ms / 1k jobs | backlog p50 | backlog p99 | idle p50 | idle p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|b| b != backend) {
            continue;
        }
        for &how in &modes {
            for &workers in &worker_counts {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = open(backend, &pg, &dir).await;
                let cpu0 = cpu_ms(&pg);
                let (rate, backlog) = throughput(&store, workers, jobs, how).await;
                let cpu = (cpu_ms(&pg) - cpu0) / jobs as f64 * 1000.0;
                let dir2 = tempfile::tempdir().expect("temp dir");
                let store = open(backend, &pg, &dir2).await;
                let idle = idle_latency(&store, workers).await;
                println!(
                    "| {backend} | {} | {workers} | {jobs} | {rate:.0} | {cpu:.0} | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms |",
                    how.label(),
                    pct(&backlog, 0.50),
                    pct(&backlog, 0.99),
                    pct(&idle, 0.50),
                    pct(&idle, 0.99),
                );
            }
        }
    }
}
