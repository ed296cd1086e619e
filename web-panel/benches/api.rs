//! API benchmark (not a test): creates N services over HTTP (default
//! 10,000) with a few concurrent clients and reports create latency
//! (p50/p99), then hammers `GET /api/v1/services` for a few seconds and
//! reports requests per second and latency. SQLite by default; set
//! `KEEL_BENCH_PG=1` to also run on a throw-away PostgreSQL.
//!
//! `cargo bench -p keel-panel --bench api` (release), or quickly in debug:
//! `KEEL_BENCH_SERVICES=500 cargo test -p keel-panel --bench api`.

#[path = "../tests/api_support/mod.rs"]
mod api_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_support::{catalog_and_pool, start, Backend, Cred};
use serde_json::json;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(backend: Backend) {
    let n = env_num("KEEL_BENCH_SERVICES", 10_000);
    let clients = env_num("KEEL_BENCH_CLIENTS", 8);
    let secs = env_num("KEEL_BENCH_SECS", 5) as u64;
    let p = Arc::new(start(backend, |_| {}).await);
    catalog_and_pool(&p, n as u64).await;
    let (_, token) = p.user("bench", false).await;
    let cred = Cred::Bearer(token);
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &cred,
            Some(json!({"name": "bench", "owner_email": "b@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();

    // Creates.
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (p, cred, next) = (p.clone(), cred.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t = Instant::now();
                let r = p
                    .call(
                        "POST",
                        "/api/v1/services",
                        &cred,
                        Some(json!({"site_id": site, "server_type": "small"})),
                    )
                    .await;
                assert_eq!(r.status, 201, "{:?}", r.json);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort();
    let took = started.elapsed();
    println!(
        "{backend:?}: create x{n} with {clients} clients: {:.0}/s, p50 {:?}, p99 {:?}, max {:?}",
        n as f64 / took.as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );

    // Lists.
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (p, cred) = (p.clone(), cred.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = p
                    .call("GET", "/api/v1/services?limit=50", &cred, None)
                    .await;
                assert_eq!(r.status, 200);
                assert_eq!(r.json["total"], n);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort();
    println!(
        "{backend:?}: GET /api/v1/services?limit=50 over {n} services, {clients} clients: {:.0} req/s, p50 {:?}, p99 {:?}",
        lat.len() as f64 / secs as f64,
        pct(&lat, 0.50),
        pct(&lat, 0.99)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(Backend::Sqlite));
    if std::env::var("KEEL_BENCH_PG").is_ok_and(|v| v == "1") {
        rt.block_on(run(Backend::Postgres));
    }
}
