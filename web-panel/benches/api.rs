//! API benchmark (not a test). Seeds N services (default 10,000) straight
//! into the database, then, over HTTP on loopback with a few concurrent
//! clients: creates M more servers through the API (create p50/p99), and
//! hammers `GET /api/v1/services` for a few seconds per query shape (the
//! default page, a status filter, a hostname search, a deep page),
//! reporting requests per second and p50/p99 latency. Runs on SQLite and
//! on a throw-away PostgreSQL (`KEEL_BENCH_PG=0` skips PostgreSQL).
//!
//! `cargo bench -p keel-panel --bench api --features testsupport --profile bench-fast`;
//! knobs: `KEEL_BENCH_SERVICES` (100000 for the large run), `KEEL_BENCH_CREATES`,
//! `KEEL_BENCH_CLIENTS`, `KEEL_BENCH_SECS`, `KEEL_BENCH_PG=0` (SQLite only),
//! `KEEL_BENCH_SQLITE=0` (PostgreSQL only), `KEEL_BENCH_PG_LOG=1` (PostgreSQL
//! logs every statement of the creates with its duration, to see where a
//! create's time goes; the log's path is printed). Quick check in debug:
//! `KEEL_BENCH_SERVICES=500 KEEL_BENCH_CREATES=50 KEEL_BENCH_SECS=1 cargo test -p keel-panel --features testsupport --bench api`.

#[path = "../tests/api_support/mod.rs"]
mod api_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_support::{start, Backend, Cred, Panel};
use keel_panel::db::tx_conn;
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

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The server type `small` and one public pool of `n` addresses (in a
/// /15, room for 131,072: larger than the test harness's pool).
async fn catalog_and_big_pool(p: &Panel, n: u64) {
    let admin = keel_panel::domain::Principal::system();
    keel_panel::services::catalog::create(
        p.db(),
        &admin,
        &keel_panel::services::catalog::NewServerType {
            name: "small".into(),
            cpus: 2,
            ram_mb: 2048,
            disk_gb: 20,
            os_image: "debian-12".into(),
            roles: vec!["web".into()],
            stack: None,
        },
    )
    .await
    .unwrap();
    let file = keel_panel::alloc::generate(
        "public-a",
        "public",
        Some("10.0.0.0/15".parse().unwrap()),
        Some("2001:db8::/64".parse().unwrap()),
        "mws-{n:05}.example.org",
        n,
    )
    .unwrap();
    keel_panel::alloc::import(p.db(), &admin, &file, 3600)
        .await
        .unwrap();
}

/// Statuses the seeded services cycle through, so filters select a share.
const SEED_STATUSES: &[&str] = &["ready", "requested", "failed", "configuring"];

/// Inserts `n` services of `site` (made by `user`), each holding one
/// address of the pool, in one transaction. Service and address ids both
/// start at 1 in a fresh database.
async fn seed(p: &Panel, site: i64, user: i64, n: usize) {
    let now = p.db().now();
    let mut tx = p.db().begin().await.unwrap();
    let mut conn = tx_conn(&mut tx);
    let statuses = SEED_STATUSES
        .iter()
        .enumerate()
        .map(|(i, s)| format!("WHEN {i} THEN '{s}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let k = SEED_STATUSES.len();
    let sql = format!(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) \
         INSERT INTO services (site_id, kind, server_type_id, status, cpus, ram_mb, disk_gb, \
           created_by, created_at, updated_at) \
         SELECT {site}, 'production', (SELECT id FROM server_types WHERE name = 'small'), \
           CASE i % {k} {statuses} END, 2, 2048, 20, {user}, {now}, {now} FROM seq"
    );
    keel_panel::execute!(&mut conn, sqlx::AssertSqlSafe(sql)).unwrap();
    let sql = format!(
        "UPDATE pool_addresses SET state = 'allocated', service_id = id, allocated_at = {now} \
         WHERE id <= {n}"
    );
    let claimed = keel_panel::execute!(&mut conn, sqlx::AssertSqlSafe(sql)).unwrap();
    assert_eq!(claimed as usize, n);
    tx.commit().await.unwrap();
    if p.db().is_pg() {
        let pool = p.db().store().as_postgres_pool().unwrap();
        sqlx::query("ANALYZE").execute(pool).await.unwrap();
    } else {
        let pool = p.db().store().as_sqlite_pool().unwrap();
        sqlx::query("ANALYZE").execute(pool).await.unwrap();
    }
}

/// `clients` loops calling GET `path` for `secs` seconds; returns the
/// sorted latencies.
async fn hammer(
    p: &Arc<Panel>,
    cred: &Cred,
    path: &str,
    clients: usize,
    secs: u64,
    check: fn(&serde_json::Value),
) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (p, cred, path) = (p.clone(), cred.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = p.call("GET", &path, &cred, None).await;
                lat.push(t.elapsed());
                assert_eq!(r.status, 200, "{path}: {:?}", r.json);
                check(&r.json);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort();
    lat
}

async fn run(backend: Backend) {
    let n = env_num("KEEL_BENCH_SERVICES", 10_000);
    let creates = env_num("KEEL_BENCH_CREATES", 1_000);
    let clients = env_num("KEEL_BENCH_CLIENTS", 8);
    let secs = env_num("KEEL_BENCH_SECS", 5) as u64;
    let p = Arc::new(start(backend, |_| {}).await);
    catalog_and_big_pool(&p, (n + creates) as u64).await;
    let (user, token) = p.user("bench", false).await;
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

    let t = Instant::now();
    seed(&p, site, user.user_id, n).await;
    println!(
        "{backend:?}: seeded {n} services in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Creates through the API: allocation, quota check, audit and the
    // provision job, each in one transaction.
    let pg_log = p.db().is_pg() && std::env::var("KEEL_BENCH_PG_LOG").is_ok_and(|v| v == "1");
    if pg_log {
        pg_log_statements(&p, true).await;
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (p, cred, next) = (p.clone(), cred.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < creates {
                let t = Instant::now();
                let r = p
                    .call(
                        "POST",
                        "/api/v1/services",
                        &cred,
                        Some(json!({"site_id": site, "server_type": "small"})),
                    )
                    .await;
                lat.push(t.elapsed());
                assert_eq!(r.status, 201, "{:?}", r.json);
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
    if pg_log {
        pg_log_statements(&p, false).await;
    }
    println!(
        "{backend:?}: POST /api/v1/services x{creates} on top of {n}, {clients} clients: {:.0}/s, p50 {}, p99 {}, max {}",
        creates as f64 / took.as_secs_f64(),
        ms(pct(&lat, 0.50)),
        ms(pct(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );

    let total = n + creates;
    let failed = (1..=n).filter(|i| i % SEED_STATUSES.len() == 2).count();
    let shapes: [(&str, String); 5] = [
        ("default page", "/api/v1/services".to_string()),
        (
            "status=failed",
            "/api/v1/services?status=failed".to_string(),
        ),
        // Ten seeded hostnames share this prefix.
        (
            "q=hostname",
            format!("/api/v1/services?q=mws-{:04}", (n / 20).max(1)),
        ),
        // Keyset paging from the middle: the `next` of a page there.
        (
            "cursor page",
            format!("/api/v1/services?limit=50&cursor={}", total / 2),
        ),
        (
            "offset page",
            format!("/api/v1/services?limit=50&offset={}", total / 2),
        ),
    ];
    for (label, path) in shapes {
        let check: fn(&serde_json::Value) = match label {
            "default page" | "offset page" => |j| assert!(j["total"].as_u64().unwrap() >= 10),
            "cursor page" => |j| assert_eq!(j["items"].as_array().unwrap().len(), 50),
            _ => |j| assert!(j["items"].is_array()),
        };
        let lat = hammer(&p, &cred, &path, clients, secs, check).await;
        let probe = p.call("GET", &path, &cred, None).await.json;
        match label {
            "default page" | "offset page" | "cursor page" => assert_eq!(probe["total"], total),
            "status=failed" => assert_eq!(probe["total"], failed),
            _ => assert!(probe["total"].as_u64().unwrap() >= 1),
        }
        println!(
            "{backend:?}: GET {path} ({label}, {} of {total} match, total_estimated {}) x{} with {clients} clients: {:.0} req/s, p50 {}, p99 {}",
            probe["total"],
            probe["total_estimated"],
            lat.len(),
            lat.len() as f64 / secs as f64,
            ms(pct(&lat, 0.50)),
            ms(pct(&lat, 0.99))
        );
    }
}

/// Turns PostgreSQL's logging of every statement with its duration on or
/// off (`log_min_duration_statement`), and says where the log is.
async fn pg_log_statements(p: &Panel, on: bool) {
    let pool = p.db().store().as_postgres_pool().unwrap();
    let value = if on { "0" } else { "-1" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER SYSTEM SET log_min_duration_statement = {value}"
    )))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(pool)
        .await
        .unwrap();
    if on {
        let log = keel_panel::testsupport::PgServer::shared()
            .dir
            .join("postgres.log");
        println!("PostgreSQL logs every statement to {}", log.display());
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if !std::env::var("KEEL_BENCH_SQLITE").is_ok_and(|v| v == "0") {
        rt.block_on(run(Backend::Sqlite));
    }
    if !std::env::var("KEEL_BENCH_PG").is_ok_and(|v| v == "0") {
        rt.block_on(run(Backend::Postgres));
    }
}
