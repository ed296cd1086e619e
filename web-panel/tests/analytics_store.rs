//! System analytics' storage and API on both backends, driven by explicit
//! times (no collector, no server): readings become raw points and rates;
//! a rollup averages finished 5-minute, hourly and daily buckets and then
//! deletes the points each tier no longer keeps — never one not yet
//! rolled up; a day of collections every minute leaves 60 raw points,
//! and a simulated year leaves no more rows than the stated bound; the
//! series API answers each range from the right tier (the newest part
//! averaged from finer points), refuses an unknown range with 422 naming
//! `range`, and tells outsiders nothing (404) and SSH-only members no
//! (403); the graphs page draws the series as SVG.

mod api_support;

use api_support::{catalog_and_pool, session_of, start, Backend, Cred, Panel, START};
use keel_panel::services::analytics::{self, Counters, Point, Reading, TIERS};
use serde_json::json;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

async fn count(p: &Panel, service: i64, resolution: i64) -> i64 {
    let mut rc = p.db().read().await.unwrap();
    keel_panel::scalar!(
        &mut rc.conn(),
        i64,
        "SELECT COUNT(*) FROM server_metrics WHERE service_id = $1 AND resolution = $2",
        service,
        resolution
    )
    .unwrap()
    .unwrap_or(0)
}

async fn rows_of(p: &Panel, service: i64) -> i64 {
    let mut rc = p.db().read().await.unwrap();
    keel_panel::scalar!(
        &mut rc.conn(),
        i64,
        "SELECT COUNT(*) FROM server_metrics WHERE service_id = $1",
        service
    )
    .unwrap()
    .unwrap_or(0)
}

/// A reading whose counters grow with `minute`: 6 CPU-seconds a minute on
/// one vCPU (10 %), 600 bytes a minute in (10 B/s), 120 requests a
/// minute (2/s); memory `mem`.
fn reading(minute: i64, mem: f64) -> Reading {
    Reading {
        cpus: 1,
        memory_used: Some(mem),
        memory_total: Some(1000.0),
        disk_used: Some(50.0),
        disk_total: Some(100.0),
        counters: Counters {
            cpu_ns: Some(minute as f64 * 6e9),
            net_rx_bytes: Some(minute as f64 * 600.0),
            http_requests: Some(minute as f64 * 120.0),
            ..Counters::default()
        },
    }
}

async fn setup(b: Backend) -> (Panel, Cred, Cred, Cred, i64) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 10).await;
    let (_, ann_t) = p.user("ann", false).await;
    let (_, bob_t) = p.user("bob", false).await;
    let (_, sam_t) = p.user("sam", false).await;
    let (ann, bob, sam) = (
        Cred::Bearer(ann_t),
        Cred::Bearer(bob_t),
        Cred::Bearer(sam_t),
    );
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &ann,
            Some(json!({"name": "ann-site", "owner_email": "o@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let r = p
        .call(
            "PUT",
            &format!("/api/v1/sites/{site}/members"),
            &ann,
            Some(json!({"user": "sam", "role": "ssh"})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &ann,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["service"]["id"].as_i64().unwrap();
    (p, ann, bob, sam, id)
}

async fn story(b: Backend) {
    let (p, ann, bob, sam, id) = setup(b).await;
    let db = p.db();
    // Aligned to a day, so buckets are easy to count.
    let t0 = (START / DAY + 1) * DAY;

    // The first reading has gauges only; the second its rates.
    let first = analytics::record(db, id, t0, &reading(0, 100.0))
        .await
        .unwrap();
    assert_eq!(first.mem_used, Some(100.0));
    assert_eq!(first.cpu_pct, None);
    let second = analytics::record(db, id, t0 + MIN, &reading(1, 300.0))
        .await
        .unwrap();
    assert_eq!(second.cpu_pct, Some(10.0));
    assert_eq!(second.net_rx_bps, Some(10.0));
    assert_eq!(second.http_rps, Some(2.0));

    // A rollup at t0 + 4 min finishes no 5-minute bucket yet.
    let r = analytics::rollup(db, t0 + 4 * MIN).await.unwrap();
    assert_eq!(r.rolled, [0, 0, 0]);
    assert_eq!(count(&p, id, 0).await, 2);

    // Ten minutes of collections: two finished 5-minute buckets.
    for m in 2..10 {
        analytics::record(db, id, t0 + m * MIN, &reading(m, 100.0 * m as f64))
            .await
            .unwrap();
    }
    let r = analytics::rollup(db, t0 + 10 * MIN + 1).await.unwrap();
    assert_eq!(r.rolled[0], 2, "{r:?}");
    assert_eq!(count(&p, id, 300).await, 2);
    // Raw points are an hour old at the earliest: none pruned yet.
    assert_eq!(r.pruned[0], 0);
    // Running it again changes nothing: each bucket is written once.
    let again = analytics::rollup(db, t0 + 10 * MIN + 2).await.unwrap();
    assert_eq!(again.rolled, [0, 0, 0]);
    assert_eq!(count(&p, id, 300).await, 2);
    let series = {
        let mut rc = db.read().await.unwrap();
        analytics::series_of(&mut rc.conn(), id, analytics::Range::Day, t0 + 10 * MIN + 2)
            .await
            .unwrap()
    };
    // The first bucket averages minutes 0-4: memory 100, 300, 200, 300, 400.
    assert_eq!(series.points[0].at, t0);
    assert_eq!(series.points[0].mem_used, Some(260.0));
    // CPU is known from the second point on, always 10 %.
    assert_eq!(series.points[0].cpu_pct, Some(10.0));
    assert_eq!(series.points.len(), 2);

    // A day of collections, every minute, with a rollup after each, as
    // the job does: old raw points are rolled up, then pruned.
    let mut pruned_raw = 0;
    for m in 10..(DAY / MIN + 10) {
        let at = t0 + m * MIN;
        analytics::record(db, id, at, &reading(m, 500.0))
            .await
            .unwrap();
        pruned_raw += analytics::rollup(db, at).await.unwrap().pruned[0];
    }
    let now = t0 + (DAY / MIN + 9) * MIN;
    let raw = count(&p, id, 0).await;
    assert!((60..=61).contains(&raw), "raw points kept: {raw}");
    assert!(pruned_raw > 1300, "{pruned_raw}");
    // No raw point older than an hour, and every older one rolled up.
    let oldest_raw = {
        let mut rc = db.read().await.unwrap();
        keel_panel::scalar!(
            &mut rc.conn(),
            i64,
            "SELECT MIN(at) FROM server_metrics WHERE service_id = $1 AND resolution = 0",
            id
        )
        .unwrap()
        .unwrap()
    };
    assert!(oldest_raw >= now - HOUR, "{oldest_raw} vs {now}");
    let five = count(&p, id, 300).await;
    assert!((287..=289).contains(&five), "5-minute points: {five}");
    assert_eq!(count(&p, id, 3600).await, 24);
    assert_eq!(count(&p, id, 86_400).await, 1);

    // Through the API: the hour from raw points, the week from hourly
    // averages plus the newest part, averaged on the fly.
    p.clock.set(now);
    let r = p
        .call(
            "GET",
            &format!("/api/v1/services/{id}/metrics?range=hour"),
            &ann,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["resolution_secs"], 0);
    let pts = r.json["points"].as_array().unwrap();
    assert!((60..=61).contains(&pts.len()), "{}", pts.len());
    assert!(pts.iter().all(|p| p["cpu_pct"] == 10.0), "{pts:?}");
    assert!(pts.iter().all(|p| p["http_rps"] == 2.0));
    let r = p
        .call(
            "GET",
            &format!("/api/v1/services/{id}/metrics?range=week"),
            &ann,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["resolution_secs"], 3600);
    let pts = r.json["points"].as_array().unwrap();
    // 24 rolled hours and the current one, whose points are not rolled up.
    assert_eq!(pts.len(), 25, "{}", r.json);
    let ats: Vec<i64> = pts.iter().map(|p| p["at"].as_i64().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[1] - w[0] == HOUR), "{ats:?}");
    // Default range: the hour.
    let r = p
        .call("GET", &format!("/api/v1/services/{id}/metrics"), &ann, None)
        .await;
    assert_eq!(r.json["range"], "hour");
    let r = p
        .call(
            "GET",
            &format!("/api/v1/services/{id}/metrics?range=month"),
            &ann,
            None,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["field"], "range");
    // Outsiders learn nothing; SSH-only members may not read it.
    let r = p
        .call("GET", &format!("/api/v1/services/{id}/metrics"), &bob, None)
        .await;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = p
        .call("GET", &format!("/api/v1/services/{id}/metrics"), &sam, None)
        .await;
    assert_eq!(r.status, 403, "{}", r.json);

    // The graphs page draws them: each graph with points has a polyline.
    let session = session_of(&p.login("ann", "ann-password").await);
    let r = p
        .call(
            "GET",
            &format!("/servers/{id}/graphs?range=hour"),
            &session,
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let html = r.json.as_str().unwrap().to_string();
    for g in ["cpu", "memory", "disk", "network", "http"] {
        let at = html
            .find(&format!("id=\"graph-{g}\""))
            .unwrap_or_else(|| panic!("{g}: {html}"));
        let figure = &html[at..at + html[at..].find("</figure>").unwrap()];
        let points = figure
            .split(" points=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("{g} has no polyline: {figure}"));
        assert!(points.split(' ').count() > 50, "{g}: {points}");
    }
    // The graphs are drawn on the server: the page's only script is the
    // panel's own deferred file, which every page loads.
    assert_eq!(
        html.matches("<script").count(),
        1,
        "the graphs need no script: {html}"
    );
    assert!(
        html.contains(r#"<script src="/static/keel.js" defer></script>"#),
        "{html}"
    );
    let outsider = session_of(&p.login("bob", "bob-password").await);
    let r = p
        .call("GET", &format!("/servers/{id}/graphs"), &outsider, None)
        .await;
    assert_eq!(r.status, 404);
    // The server page links to the graphs.
    let r = p
        .call("GET", &format!("/servers/{id}"), &session, None)
        .await;
    assert!(
        r.json
            .as_str()
            .unwrap()
            .contains(&format!("href=\"/servers/{id}/graphs\"")),
        "{}",
        r.json
    );
}

/// A year and five days of collections every 30 minutes (fewer rows to
/// write than every minute; the tiers above the raw one are the same),
/// a day's points per transaction and a rollup after each day: the rows
/// kept stay within the bound, and the year graph has a point per day.
async fn a_year_stays_bounded(b: Backend) {
    let (p, _, _, _, id) = setup(b).await;
    let db = p.db();
    let t0 = (START / DAY + 1) * DAY;
    let step = 30 * MIN;
    let mut now = t0;
    for day in 0..370 {
        let mut tx = db.begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        for i in 0..(DAY / step) {
            now = t0 + day * DAY + i * step;
            analytics::insert_point(
                &mut conn,
                id,
                0,
                &Point {
                    at: now,
                    cpu_pct: Some((i % 100) as f64),
                    ..Point::default()
                },
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        analytics::rollup(db, now).await.unwrap();
    }
    let rows = rows_of(&p, id).await;
    // The bound at 30-minute collections: 2 raw + 288 + 744 + 366, plus
    // one unfinished bucket per tier.
    let bound = analytics::rows_per_server_bound(1800) + TIERS.len() as i64;
    assert!(rows <= bound, "{rows} rows > {bound}");
    // Nothing older than a tier keeps is left.
    for t in TIERS {
        let mut rc = db.read().await.unwrap();
        let oldest = keel_panel::scalar!(
            &mut rc.conn(),
            i64,
            "SELECT MIN(at) FROM server_metrics WHERE service_id = $1 AND resolution = $2",
            id,
            t.resolution_secs
        )
        .unwrap()
        .unwrap();
        assert!(
            oldest >= now - t.keep_secs * 1000 - t.resolution_secs * 1000,
            "tier {}: {oldest} is older than {} s before {now}",
            t.resolution_secs,
            t.keep_secs
        );
    }
    let days = count(&p, id, 86_400).await;
    assert!((365..=366).contains(&days), "{days}");
    // A year on, the site admin's token has expired: a platform admin's
    // new one reads it.
    p.clock.set(now);
    let root = Cred::Bearer(p.user("root", true).await.1);
    let r = p
        .call(
            "GET",
            &format!("/api/v1/services/{id}/metrics?range=year"),
            &root,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["resolution_secs"], 86_400);
    let n = r.json["points"].as_array().unwrap().len();
    assert!((364..=366).contains(&n), "{n}");
}

both_backends!(readings_rollups_series_and_access, story);
both_backends!(
    a_year_of_points_stays_within_the_bound,
    a_year_stays_bounded
);
