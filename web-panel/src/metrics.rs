//! Prometheus metrics at `/metrics`: HTTP request counts and latency per
//! route, job queue depth per state and dead jobs, and free addresses per
//! pool. Request metrics live in memory; the rest is read from the
//! database at scrape time, so every node reports the cluster's view.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::db::Db;
use crate::domain::PanelError;
use crate::{alloc, fetch_all, scalar};

/// Latency buckets, in seconds.
const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; 10],
}

/// In-memory request metrics.
#[derive(Default)]
pub struct Metrics {
    /// (method, route, status) → count; (method, route) → latency.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Series>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        *self
            .requests
            .lock()
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        let mut lat = self.latency.lock();
        let s = lat
            .entry((method.to_string(), route.to_string()))
            .or_default();
        s.count += 1;
        s.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    /// The text exposition format.
    pub async fn render(&self, db: &Db) -> Result<String, PanelError> {
        let mut out = String::new();
        out.push_str("# HELP keel_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE keel_http_requests_total counter\n");
        for ((m, r, s), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "keel_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {n}",
                esc(r)
            );
        }
        out.push_str("# HELP keel_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE keel_http_request_duration_seconds histogram\n");
        for ((m, r), s) in self.latency.lock().iter() {
            let labels = format!("method=\"{m}\",route=\"{}\"", esc(r));
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "keel_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "keel_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "keel_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "keel_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        let mut rc = db.read().await?;
        let mut conn = rc.conn();
        let states = fetch_all!(
            &mut conn,
            (String, String, i64),
            "SELECT queue, state, COUNT(*) FROM jobs WHERE state IN ('queued', 'running') GROUP BY queue, state"
        )?;
        out.push_str(
            "# HELP keel_jobs Jobs waiting or running, by queue.\n# TYPE keel_jobs gauge\n",
        );
        for (q, s, n) in states {
            let _ = writeln!(out, "keel_jobs{{queue=\"{}\",state=\"{s}\"}} {n}", esc(&q));
        }
        let dead = scalar!(&mut conn, i64, "SELECT COUNT(*) FROM job_failures")?.unwrap_or(0);
        out.push_str("# HELP keel_job_failures_total Jobs that exhausted their retries.\n");
        let _ = writeln!(
            out,
            "# TYPE keel_job_failures_total counter\nkeel_job_failures_total {dead}"
        );
        drop(rc);
        out.push_str("# HELP keel_pool_addresses Addresses per pool and state.\n# TYPE keel_pool_addresses gauge\n");
        for p in alloc::pool_use(db).await? {
            let name = esc(&p.name);
            for (state, n) in [
                ("free", p.free),
                ("quarantined", p.quarantined),
                ("allocated", p.allocated),
            ] {
                let _ = writeln!(
                    out,
                    "keel_pool_addresses{{pool=\"{name}\",type=\"{}\",state=\"{state}\"}} {n}",
                    p.pool_type
                );
            }
        }
        Ok(out)
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
