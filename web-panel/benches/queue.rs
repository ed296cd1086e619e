//! Job queue benchmark: end-to-end jobs per second (enqueue, claim, run a
//! no-op, complete) with 1, 4 and 16 workers on SQLite and PostgreSQL, plus
//! p50/p99 pickup latency (enqueue to handler start). Prints a Markdown
//! table. Run: `cargo bench -p keel-panel --bench queue`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::{self, JobContext, JobError, JobHandler, JobSpec};
use keel_panel::store::Store;
use keel_panel::testsupport::PgServer;
use tokio_util::sync::CancellationToken;

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
        self.latencies.lock().unwrap().push(now.saturating_sub(enq));
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn run_case(store: Store, workers: usize, jobs: usize) -> (f64, u64, u64) {
    let done = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(jobs)));
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
                poll_every: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
        ));
        handles.push(tokio::spawn(w.run(shutdown.clone())));
    }
    let enqueuer = {
        let store = store.clone();
        tokio::spawn(async move {
            for chunk in 0..jobs / 100 {
                let mut tx = store.begin().await.unwrap();
                for i in 0..100 {
                    let t = t0.elapsed().as_micros() as u64;
                    queue::enqueue(
                        &mut tx,
                        JobSpec::new("noop", serde_json::json!({"t": t, "i": chunk * 100 + i})),
                    )
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
            }
        })
    };
    enqueuer.await.unwrap();
    while done.load(Ordering::Relaxed) < jobs {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Wait until the last completions are recorded.
    loop {
        let left = store
            .jobs(&keel_panel::queue::JobFilter {
                state: Some(keel_panel::queue::JobState::Running),
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    shutdown.cancel();
    for h in handles {
        let _ = h.await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    (jobs as f64 / elapsed, pct(0.50), pct(0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::var("KEEL_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let pg = PgServer::start(true);
    println!("| backend | workers | jobs | jobs/s | p50 pickup | p99 pickup |");
    println!("|---|---|---|---|---|---|");
    for backend in ["sqlite", "postgres"] {
        for workers in [1usize, 4, 16] {
            let dir = tempfile::tempdir().unwrap();
            let store = if backend == "sqlite" {
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                Store::connect(&url).await.unwrap()
            } else {
                Store::connect(&pg.fresh_database().await).await.unwrap()
            };
            let (rate, p50, p99) = run_case(store, workers, jobs).await;
            println!(
                "| {backend} | {workers} | {jobs} | {rate:.0} | {:.1} ms | {:.1} ms |",
                p50 as f64 / 1000.0,
                p99 as f64 / 1000.0
            );
        }
    }
}
