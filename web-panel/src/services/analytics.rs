//! System analytics: each ready server's CPU, memory, disk, network and
//! HTTP figures, stored with downsampling and read back as graph series.
//!
//! The `metrics_collect` job (`provision/steps/metrics.rs`, on the queue's
//! cron every `analytics.every_secs`) reads a [`Reading`] per server — the
//! hypervisor driver's figures and the guest's node exporter and Apache
//! status page — and [`record`]s it: gauges are stored as they are,
//! counters become rates against the previous reading (kept in
//! `server_metric_counters`), so a point needs two readings and a counter
//! that went backwards (a reboot) gives no rate for that point.
//!
//! Storage is four tiers of one table, `server_metrics`, told apart by
//! `resolution` (seconds a point covers; 0 is raw):
//!
//! | tier | point | kept | rows per server |
//! | --- | --- | --- | --- |
//! | raw | one per collection (1 min) | 1 hour | 60 |
//! | 5 min | average of the raw points | 1 day | 288 |
//! | 1 hour | average of the 5-min points | 31 days | 744 |
//! | 1 day | average of the 1-hour points | 366 days | 366 |
//!
//! [`rollup`] (run after each collection) averages every finished bucket
//! of a tier into the next one, from where it last got to
//! (`metric_rollups.done_until`, so a panel that was down catches up), and
//! then deletes the points older than their tier keeps — never one not yet
//! rolled up. **The bound:** at most 1,458 rows per server, whatever the
//! panel's age (60 + 288 + 744 + 366, plus the points of one unfinished
//! bucket per tier), i.e. ~1.46 million rows for 1,000 servers; at the
//! measured size of a row with its indexes (115 bytes on SQLite, 185 on
//! PostgreSQL; docs/panel.md, "System analytics") that is about 0.17 GB
//! and 0.27 GB for 1,000 servers, however many years they run.
//!
//! [`series`] answers the graphs of the last hour (raw points), day (5-min
//! buckets), week (1-hour buckets) or year (1-day buckets): each bucket
//! from the coarsest tier that has it, the newest part, not rolled up yet,
//! averaged from the finer tiers on the fly. Site admins and platform
//! admins read a server's series, as they see its page
//! (`servers::load_managed`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::config::AnalyticsConfig;
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::MetricsCollectJob;
use crate::queue::cron::Schedule;
use crate::{execute, fetch_all, fetch_opt};

/// One tier of the storage: points covering `resolution_secs` (0: raw),
/// deleted once older than `keep_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub resolution_secs: i64,
    pub keep_secs: i64,
}

/// The tiers, finest first; each is rolled up into the next.
pub const TIERS: [Tier; 4] = [
    Tier {
        resolution_secs: 0,
        keep_secs: 3600,
    },
    Tier {
        resolution_secs: 300,
        keep_secs: 86_400,
    },
    Tier {
        resolution_secs: 3600,
        keep_secs: 31 * 86_400,
    },
    Tier {
        resolution_secs: 86_400,
        keep_secs: 366 * 86_400,
    },
];

/// The collector's cron schedule: every `every_secs` (none when 0). A
/// fire missed while no worker ran is skipped: a late point would only
/// fill a gap with the same figures as the next one.
pub fn collect_schedule(cfg: &AnalyticsConfig) -> Option<Schedule> {
    (cfg.every_secs > 0).then(|| {
        Schedule::interval(
            "metrics_collect",
            Duration::from_secs(cfg.every_secs),
            MetricsCollectJob {}.spec(),
        )
    })
}

/// The most rows one server keeps at steady state (see the module doc).
pub fn rows_per_server_bound(collect_every_secs: i64) -> i64 {
    let raw = TIERS[0].keep_secs / collect_every_secs.max(1);
    raw + TIERS[1..]
        .iter()
        .map(|t| t.keep_secs / t.resolution_secs)
        .sum::<i64>()
}

/// What one collection read from one server. Gauges and cumulative
/// counters; `None` is "could not be read".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// vCPUs, to turn the driver's CPU time into a share.
    pub cpus: u32,
    pub memory_used: Option<f64>,
    pub memory_total: Option<f64>,
    pub disk_used: Option<f64>,
    pub disk_total: Option<f64>,
    pub counters: Counters,
}

/// The cumulative counters of a reading, kept until the next one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// CPU time from the hypervisor, nanoseconds.
    #[serde(default)]
    pub cpu_ns: Option<f64>,
    /// Busy and total CPU seconds from the node exporter (used when the
    /// driver gives no CPU time).
    #[serde(default)]
    pub cpu_busy_secs: Option<f64>,
    #[serde(default)]
    pub cpu_total_secs: Option<f64>,
    #[serde(default)]
    pub disk_read_bytes: Option<f64>,
    #[serde(default)]
    pub disk_write_bytes: Option<f64>,
    #[serde(default)]
    pub net_rx_bytes: Option<f64>,
    #[serde(default)]
    pub net_tx_bytes: Option<f64>,
    /// Apache's `Total Accesses`.
    #[serde(default)]
    pub http_requests: Option<f64>,
}

/// One point of a series: the figures at `at` (a raw point), or averaged
/// over the bucket starting at `at`. Rates are per second; sizes in bytes;
/// `cpu_pct` is the share of the server's vCPUs in use (0–100).
#[derive(Debug, Clone, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Point {
    /// Unix milliseconds.
    pub at: i64,
    pub cpu_pct: Option<f64>,
    pub mem_used: Option<f64>,
    pub mem_total: Option<f64>,
    pub disk_used: Option<f64>,
    pub disk_total: Option<f64>,
    pub disk_read_bps: Option<f64>,
    pub disk_write_bps: Option<f64>,
    pub net_rx_bps: Option<f64>,
    pub net_tx_bps: Option<f64>,
    pub http_rps: Option<f64>,
}

const COLUMNS: &str = "cpu_pct, mem_used, mem_total, disk_used, disk_total, disk_read_bps, \
                       disk_write_bps, net_rx_bps, net_tx_bps, http_rps";

/// The rate of a counter between two readings `secs` apart; none when
/// either is missing or the counter went backwards (a restart).
fn rate(before: Option<f64>, now: Option<f64>, secs: f64) -> Option<f64> {
    let (b, n) = (before?, now?);
    (n >= b && secs > 0.0).then(|| (n - b) / secs)
}

/// The point a reading makes, given the counters of the one before
/// (`before`, taken `secs` earlier).
pub fn point_of(at: UnixMillis, reading: &Reading, before: Option<(&Counters, f64)>) -> Point {
    let mut p = Point {
        at,
        mem_used: reading.memory_used,
        mem_total: reading.memory_total,
        disk_used: reading.disk_used,
        disk_total: reading.disk_total,
        ..Point::default()
    };
    let Some((b, secs)) = before else {
        return p;
    };
    let c = &reading.counters;
    let cpus = f64::from(reading.cpus.max(1));
    p.cpu_pct = rate(b.cpu_ns, c.cpu_ns, secs)
        .map(|ns_per_sec| ns_per_sec / 1e9 / cpus * 100.0)
        .or_else(|| {
            let busy = c.cpu_busy_secs? - b.cpu_busy_secs?;
            let total = c.cpu_total_secs? - b.cpu_total_secs?;
            (busy >= 0.0 && total > 0.0).then(|| busy / total * 100.0)
        })
        .map(|pct| pct.clamp(0.0, 100.0));
    p.disk_read_bps = rate(b.disk_read_bytes, c.disk_read_bytes, secs);
    p.disk_write_bps = rate(b.disk_write_bytes, c.disk_write_bytes, secs);
    p.net_rx_bps = rate(b.net_rx_bytes, c.net_rx_bytes, secs);
    p.net_tx_bps = rate(b.net_tx_bytes, c.net_tx_bytes, secs);
    p.http_rps = rate(b.http_requests, c.http_requests, secs);
    p
}

/// Stores server `service_id`'s reading taken at `at` as a raw point and
/// keeps its counters for the next one, in one transaction.
pub async fn record(
    db: &Db,
    service_id: i64,
    at: UnixMillis,
    reading: &Reading,
) -> Result<Point, PanelError> {
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let before = fetch_opt!(
        &mut conn,
        (i64, String),
        "SELECT at, counters FROM server_metric_counters WHERE service_id = $1",
        service_id
    )?
    .and_then(|(t, text)| Some((t, serde_json::from_str::<Counters>(&text).ok()?)));
    let point = point_of(
        at,
        reading,
        before
            .as_ref()
            .filter(|(t, _)| *t < at)
            .map(|(t, c)| (c, (at - t) as f64 / 1000.0)),
    );
    insert_point(&mut conn, service_id, 0, &point).await?;
    let counters = serde_json::to_string(&reading.counters)
        .map_err(|e| PanelError::Internal(format!("counters: {e}")))?;
    execute!(
        &mut conn,
        "INSERT INTO server_metric_counters (service_id, at, counters) VALUES ($1, $2, $3) \
         ON CONFLICT (service_id) DO UPDATE SET at = excluded.at, counters = excluded.counters",
        service_id,
        at,
        counters
    )?;
    tx.commit().await?;
    Ok(point)
}

/// Writes one point of tier `resolution` (a second point at the same
/// instant is dropped).
pub async fn insert_point(
    conn: &mut Conn<'_>,
    service_id: i64,
    resolution: i64,
    p: &Point,
) -> Result<(), PanelError> {
    execute!(
        conn,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO server_metrics (service_id, resolution, at, {COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (service_id, resolution, at) DO NOTHING"
        )),
        service_id,
        resolution,
        p.at,
        p.cpu_pct,
        p.mem_used,
        p.mem_total,
        p.disk_used,
        p.disk_total,
        p.disk_read_bps,
        p.disk_write_bps,
        p.net_rx_bps,
        p.net_tx_bps,
        p.http_rps
    )?;
    Ok(())
}

/// What one [`rollup`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupReport {
    /// Points written per target tier (5 min, 1 hour, 1 day).
    pub rolled: [u64; 3],
    /// Points deleted per tier (raw, 5 min, 1 hour, 1 day).
    pub pruned: [u64; 4],
}

/// How far each tier is rolled up: points of a tier's source finer tier
/// before this time are in it.
async fn watermarks(conn: &mut Conn<'_>) -> Result<[i64; 4], PanelError> {
    let rows = fetch_all!(
        conn,
        (i64, i64),
        "SELECT resolution, done_until FROM metric_rollups"
    )?;
    let mut out = [0i64; 4];
    for (i, t) in TIERS.iter().enumerate() {
        out[i] = rows
            .iter()
            .find(|(r, _)| *r == t.resolution_secs)
            .map_or(0, |(_, d)| *d);
    }
    Ok(out)
}

/// Averages every finished bucket into the next tier, then deletes the
/// points each tier no longer keeps, in one transaction. Idempotent: a
/// bucket is written once (its watermark moves past it in the same
/// transaction), and only points already rolled up are deleted.
pub async fn rollup(db: &Db, now: UnixMillis) -> Result<RollupReport, PanelError> {
    let mut report = RollupReport::default();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let mut done = watermarks(&mut conn).await?;
    for i in 1..TIERS.len() {
        let (src, dst) = (TIERS[i - 1], TIERS[i]);
        let step = dst.resolution_secs * 1000;
        let cutoff = now.div_euclid(step) * step;
        if cutoff <= done[i] {
            continue;
        }
        let avgs = COLUMNS
            .split(',')
            .map(|c| format!("AVG({})", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        report.rolled[i - 1] = execute!(
            &mut conn,
            sqlx::AssertSqlSafe(format!(
                "INSERT INTO server_metrics (service_id, resolution, at, {COLUMNS}) \
                 SELECT service_id, $1, (at / $2) * $2, {avgs} FROM server_metrics \
                 WHERE resolution = $3 AND at >= $4 AND at < $5 \
                 GROUP BY service_id, (at / $2) * $2 \
                 ON CONFLICT (service_id, resolution, at) DO NOTHING"
            )),
            dst.resolution_secs,
            step,
            src.resolution_secs,
            done[i],
            cutoff
        )?;
        execute!(
            &mut conn,
            "INSERT INTO metric_rollups (resolution, done_until) VALUES ($1, $2) \
             ON CONFLICT (resolution) DO UPDATE SET done_until = excluded.done_until",
            dst.resolution_secs,
            cutoff
        )?;
        done[i] = cutoff;
    }
    for (i, t) in TIERS.iter().enumerate() {
        let mut before = now - t.keep_secs * 1000;
        // A point leaves only once the next tier has it.
        if let Some(next) = done.get(i + 1) {
            before = before.min(*next);
        }
        report.pruned[i] = execute!(
            &mut conn,
            "DELETE FROM server_metrics WHERE resolution = $1 AND at < $2",
            t.resolution_secs,
            before
        )?;
    }
    tx.commit().await?;
    Ok(report)
}

/// The spans a graph can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Range {
    #[default]
    Hour,
    Day,
    Week,
    Year,
}

impl Range {
    pub const ALL: [Range; 4] = [Range::Hour, Range::Day, Range::Week, Range::Year];

    pub fn as_str(self) -> &'static str {
        match self {
            Range::Hour => "hour",
            Range::Day => "day",
            Range::Week => "week",
            Range::Year => "year",
        }
    }

    pub fn parse(s: &str) -> Result<Range, PanelError> {
        Range::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| PanelError::invalid("range", "range is one of hour, day, week, year"))
    }

    /// How far back it reaches, in seconds.
    pub fn span_secs(self) -> i64 {
        match self {
            Range::Hour => 3600,
            Range::Day => 86_400,
            Range::Week => 7 * 86_400,
            Range::Year => 365 * 86_400,
        }
    }

    /// The tier its buckets come from (an index into [`TIERS`]).
    fn tier(self) -> usize {
        match self {
            Range::Hour => 0,
            Range::Day => 1,
            Range::Week => 2,
            Range::Year => 3,
        }
    }
}

/// A graph's points, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Series {
    pub range: Range,
    /// Seconds each point covers (0: raw points, one per collection).
    pub resolution_secs: i64,
    /// Unix milliseconds: the span shown.
    pub from: i64,
    pub to: i64,
    pub points: Vec<Point>,
}

/// Server `service_id`'s series over `range` ending at `now`, for those
/// who manage it.
pub async fn series(
    db: &Db,
    who: &Principal,
    service_id: i64,
    range: Range,
    now: UnixMillis,
) -> Result<Series, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    crate::services::servers::load_managed(&mut conn, who, service_id).await?;
    series_of(&mut conn, service_id, range, now).await
}

/// [`series`] and the server it is of (for the graphs page's title).
pub async fn server_series(
    db: &Db,
    who: &Principal,
    service_id: i64,
    range: Range,
    now: UnixMillis,
) -> Result<(crate::services::model::Service, Series), PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let service = crate::services::servers::load_managed(&mut conn, who, service_id).await?;
    let series = series_of(&mut conn, service_id, range, now).await?;
    Ok((service, series))
}

/// [`series`] without the authorisation, for callers that made it.
pub async fn series_of(
    conn: &mut Conn<'_>,
    service_id: i64,
    range: Range,
    now: UnixMillis,
) -> Result<Series, PanelError> {
    let from = now - range.span_secs() * 1000;
    let k = range.tier();
    let done = watermarks(conn).await?;
    let mut rows: Vec<Point> = Vec::new();
    // Tier k holds everything before its watermark; each finer tier adds
    // what the coarser ones do not have yet.
    for j in (0..=k).rev() {
        let since = if j == k { from } else { from.max(done[j + 1]) };
        rows.extend(fetch_all!(
            conn,
            Point,
            sqlx::AssertSqlSafe(format!(
                "SELECT at, {COLUMNS} FROM server_metrics \
                 WHERE service_id = $1 AND resolution = $2 AND at >= $3 AND at <= $4 ORDER BY at"
            )),
            service_id,
            TIERS[j].resolution_secs,
            since,
            now
        )?);
    }
    rows.sort_by_key(|p| p.at);
    let resolution = TIERS[k].resolution_secs;
    let points = if resolution == 0 {
        rows
    } else {
        bucket(&rows, resolution * 1000)
    };
    Ok(Series {
        range,
        resolution_secs: resolution,
        from,
        to: now,
        points,
    })
}

/// Averages points (sorted by time) into buckets of `step` milliseconds,
/// each field over the points that have it.
pub fn bucket(points: &[Point], step: i64) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let start = points[i].at.div_euclid(step) * step;
        let group: Vec<&Point> = points[i..]
            .iter()
            .take_while(|p| p.at.div_euclid(step) * step == start)
            .collect();
        i += group.len();
        let avg = |f: fn(&Point) -> Option<f64>| {
            let vals: Vec<f64> = group.iter().filter_map(|p| f(p)).collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
        };
        out.push(Point {
            at: start,
            cpu_pct: avg(|p| p.cpu_pct),
            mem_used: avg(|p| p.mem_used),
            mem_total: avg(|p| p.mem_total),
            disk_used: avg(|p| p.disk_used),
            disk_total: avg(|p| p.disk_total),
            disk_read_bps: avg(|p| p.disk_read_bps),
            disk_write_bps: avg(|p| p.disk_write_bps),
            net_rx_bps: avg(|p| p.net_rx_bps),
            net_tx_bps: avg(|p| p.net_tx_bps),
            http_rps: avg(|p| p.http_rps),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu_ns: f64, rx: f64, http: f64) -> Reading {
        Reading {
            cpus: 2,
            memory_used: Some(100.0),
            memory_total: Some(400.0),
            counters: Counters {
                cpu_ns: Some(cpu_ns),
                net_rx_bytes: Some(rx),
                http_requests: Some(http),
                ..Counters::default()
            },
            ..Reading::default()
        }
    }

    #[test]
    fn counters_become_rates_and_a_restart_gives_none() {
        let first = point_of(0, &reading(0.0, 0.0, 0.0), None);
        assert_eq!(first.mem_used, Some(100.0));
        assert_eq!((first.cpu_pct, first.net_rx_bps), (None, None));
        let before = reading(1e9, 1000.0, 10.0).counters;
        // 60 s later: 30 CPU-seconds on 2 vCPUs is 25 %.
        let p = point_of(60_000, &reading(31e9, 7000.0, 130.0), Some((&before, 60.0)));
        assert_eq!(p.cpu_pct, Some(25.0));
        assert_eq!(p.net_rx_bps, Some(100.0));
        assert_eq!(p.http_rps, Some(2.0));
        // The counters went back (the server restarted): no rates.
        let p = point_of(60_000, &reading(5e8, 10.0, 1.0), Some((&before, 60.0)));
        assert_eq!((p.cpu_pct, p.net_rx_bps, p.http_rps), (None, None, None));
    }

    #[test]
    fn exporter_cpu_is_used_without_driver_cpu_time() {
        let mut r = Reading::default();
        r.counters.cpu_busy_secs = Some(130.0);
        r.counters.cpu_total_secs = Some(600.0);
        let b = Counters {
            cpu_busy_secs: Some(100.0),
            cpu_total_secs: Some(480.0),
            ..Counters::default()
        };
        assert_eq!(point_of(1, &r, Some((&b, 60.0))).cpu_pct, Some(25.0));
    }

    #[test]
    fn buckets_average_each_field_over_the_points_that_have_it() {
        let pts = [
            Point {
                at: 10,
                cpu_pct: Some(10.0),
                ..Point::default()
            },
            Point {
                at: 20,
                cpu_pct: Some(30.0),
                http_rps: Some(4.0),
                ..Point::default()
            },
            Point {
                at: 100,
                cpu_pct: Some(50.0),
                ..Point::default()
            },
        ];
        let b = bucket(&pts, 100);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].at, b[0].cpu_pct, b[0].http_rps),
            (0, Some(20.0), Some(4.0))
        );
        assert_eq!(
            (b[1].at, b[1].cpu_pct, b[1].http_rps),
            (100, Some(50.0), None)
        );
    }

    #[test]
    fn the_bound_is_what_the_tiers_keep() {
        assert_eq!(rows_per_server_bound(60), 60 + 288 + 744 + 366);
        assert_eq!(Range::parse("week").unwrap(), Range::Week);
        assert!(matches!(
            Range::parse("month"),
            Err(PanelError::Invalid { .. })
        ));
    }
}
