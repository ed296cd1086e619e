//! The service list's paging (issue 22): cursor pages walk exactly the
//! services a caller may manage, newest first, for every filter, on SQLite
//! and PostgreSQL; they stay put when services are made or deleted between
//! pages; `offset` gives the same pages; long lists get a cached total.
//! Services are seeded straight into the database, as the `api` bench does.

#[macro_use]
mod api_support;

use std::collections::{BTreeMap, HashSet};

use api_support::{session_of, start, Backend, Cred, Panel};
use keel_panel::db::tx_conn;
use keel_panel::domain::Principal;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The server type `small` and a public pool of `n` addresses (a /16).
async fn catalog_and_pool(p: &Panel, n: u64) {
    let admin = Principal::system();
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
        Some("10.0.0.0/16".parse().unwrap()),
        Some("2001:db8::/64".parse().unwrap()),
        "mws-{n:05}.example.org",
        n,
    )
    .unwrap();
    keel_panel::alloc::import(p.db(), &admin, &file, 3600)
        .await
        .unwrap();
}

/// Runs `sql` in one transaction.
async fn exec(p: &Panel, sql: String) -> u64 {
    let mut tx = p.db().begin().await.unwrap();
    let n = keel_panel::execute!(&mut tx_conn(&mut tx), sqlx::AssertSqlSafe(sql)).unwrap();
    tx.commit().await.unwrap();
    n
}

/// Inserts services `from..=to` (ids, in a fresh database), each in site
/// `site_of(i)` with status `status_of(i)`, made by `user`, all at the same
/// instant (so their times tie and only the id orders them). Service `i`
/// holds address `i` unless it is deleted.
async fn seed(p: &Panel, from: i64, to: i64, site_sql: &str, status_sql: &str, user: i64) {
    let now = p.db().now();
    exec(
        p,
        format!(
            "WITH RECURSIVE seq(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM seq WHERE i < {to}) \
             INSERT INTO services (id, site_id, kind, server_type_id, status, cpus, ram_mb, disk_gb, \
               created_by, created_at, updated_at) \
             SELECT i, {site_sql}, 'production', (SELECT id FROM server_types WHERE name = 'small'), \
               {status_sql}, 2, 2048, 20, {user}, {now}, {now} FROM seq"
        ),
    )
    .await;
    exec(
        p,
        format!(
            "UPDATE pool_addresses SET state = 'allocated', service_id = id, allocated_at = {now} \
             WHERE id BETWEEN {from} AND {to} \
               AND id IN (SELECT id FROM services WHERE status <> 'deleted')"
        ),
    )
    .await;
    if p.db().is_pg() {
        // Explicit ids leave the identity behind; the API's creates
        // continue after the seeded rows.
        exec(
            p,
            "SELECT setval(pg_get_serial_sequence('services', 'id'), (SELECT MAX(id) FROM services))"
                .into(),
        )
        .await;
    }
}

/// A seeded service as the test knows it, independently of the list code.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    site_id: i64,
    status: String,
    hostname: Option<String>,
}

async fn all_rows(p: &Panel) -> Vec<Row> {
    let mut rc = p.db().read().await.unwrap();
    let mut conn = rc.conn();
    let rows = keel_panel::fetch_all!(
        &mut conn,
        (i64, i64, String, Option<String>),
        "SELECT s.id, s.site_id, s.status, a.hostname FROM services s \
         LEFT JOIN pool_addresses a ON a.service_id = s.id"
    )
    .unwrap();
    rows.into_iter()
        .map(|(id, site_id, status, hostname)| Row {
            id,
            site_id,
            status,
            hostname,
        })
        .collect()
}

/// Walks every cursor page of `query` (which has no cursor); returns the
/// ids in order, and the total of the first page.
async fn walk(p: &Panel, cred: &Cred, query: &str) -> (Vec<i64>, Value) {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut first = None;
    for _ in 0..1000 {
        let path = match &cursor {
            None => format!("/api/v1/services?{query}"),
            Some(c) => format!("/api/v1/services?{query}&cursor={c}"),
        };
        let r = p.call("GET", &path, cred, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.json);
        first.get_or_insert_with(|| r.json.clone());
        let items = r.json["items"].as_array().unwrap();
        ids.extend(items.iter().map(|s| s["id"].as_i64().unwrap()));
        match r.json["next"].as_str() {
            Some(next) => {
                assert_eq!(items.len() as u64, r.json["limit"].as_u64().unwrap());
                cursor = Some(next.to_string());
            }
            None => return (ids, first.unwrap()),
        }
    }
    panic!("{query}: more than 1,000 pages");
}

async fn cursor_pages_walk_exactly_what_each_caller_may_see(backend: Backend) {
    let p = start(backend, |_| {}).await;
    catalog_and_pool(&p, 300).await;
    let (_, admin_token) = p.user("root", true).await;
    let (ann, ann_token) = p.user("ann", false).await;
    let (_, bob_token) = p.user("bob", false).await;
    let (_, carl_token) = p.user("carl", false).await;
    let (admin_c, ann_c, bob_c, carl_c) = (
        Cred::Bearer(admin_token),
        Cred::Bearer(ann_token),
        Cred::Bearer(bob_token),
        Cred::Bearer(carl_token),
    );
    let mut site = BTreeMap::new();
    for (name, cred) in [("a", &ann_c), ("b", &bob_c)] {
        let r = p
            .call(
                "POST",
                "/api/v1/sites",
                cred,
                Some(json!({"name": name, "owner_email": "o@example.org"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
        site.insert(name, r.json["id"].as_i64().unwrap());
    }
    let (a, b) = (site["a"], site["b"]);
    // Sites interleave (every third service is b's), so a caller's pages
    // skip the others' services; every fifth is deleted.
    seed(
        &p,
        1,
        150,
        &format!("CASE WHEN i % 3 = 0 THEN {b} ELSE {a} END"),
        "CASE i % 5 WHEN 0 THEN 'deleted' WHEN 1 THEN 'ready' WHEN 2 THEN 'failed' \
         WHEN 3 THEN 'requested' ELSE 'configuring' END",
        ann.user_id,
    )
    .await;
    let rows = all_rows(&p).await;
    assert_eq!(rows.len(), 150);
    let some_host = rows
        .iter()
        .find(|r| r.id == 37)
        .and_then(|r| r.hostname.clone())
        .unwrap();
    // A substring in the middle of one hostname, a prefix many share,
    // and one too short for the trigram index.
    let middle = some_host[2..9].to_string();
    let shared = some_host[..7].to_string();
    let short = some_host[6..8].to_string();

    type Sees = fn(&Row, i64, i64) -> bool;
    let callers: [(&str, &Cred, Sees); 4] = [
        ("admin", &admin_c, |_, _, _| true),
        ("ann", &ann_c, |r, a, _| r.site_id == a),
        ("bob", &bob_c, |r, _, b| r.site_id == b),
        ("carl", &carl_c, |_, _, _| false),
    ];
    type Keep = Box<dyn Fn(&Row) -> bool>;
    let filters: Vec<(String, Keep)> = vec![
        ("limit=7".into(), Box::new(|r: &Row| r.status != "deleted")),
        (
            "limit=7&status=failed".into(),
            Box::new(|r: &Row| r.status == "failed"),
        ),
        (
            "limit=4&status=deleted".into(),
            Box::new(|r: &Row| r.status == "deleted"),
        ),
        (
            format!("limit=7&site_id={a}"),
            Box::new(move |r: &Row| r.site_id == a && r.status != "deleted"),
        ),
        (format!("limit=3&q={middle}"), {
            let m = middle.clone();
            Box::new(move |r: &Row| {
                r.status != "deleted" && r.hostname.as_ref().is_some_and(|h| h.contains(&m))
            })
        }),
        (format!("limit=6&q={shared}"), {
            let m = shared.clone();
            Box::new(move |r: &Row| {
                r.status != "deleted" && r.hostname.as_ref().is_some_and(|h| h.contains(&m))
            })
        }),
        (format!("limit=9&q={short}&status=ready"), {
            let m = short.clone();
            Box::new(move |r: &Row| {
                r.status == "ready" && r.hostname.as_ref().is_some_and(|h| h.contains(&m))
            })
        }),
    ];
    for (who, cred, sees) in &callers {
        for (query, keep) in &filters {
            let mut expect: Vec<i64> = rows
                .iter()
                .filter(|r| sees(r, a, b) && keep(r))
                .map(|r| r.id)
                .collect();
            expect.sort_unstable_by(|x, y| y.cmp(x));
            let (got, first) = walk(&p, cred, query).await;
            assert_eq!(got, expect, "{who} {query}");
            assert_eq!(first["total"], expect.len(), "{who} {query}");
            assert_eq!(first["total_estimated"], false, "{who} {query}");
        }
    }
    assert!(
        !walk(&p, &ann_c, &format!("limit=3&q={middle}"))
            .await
            .0
            .is_empty(),
        "the hostname search found something"
    );

    // Offset pages give the same rows as cursor pages.
    let (by_cursor, _) = walk(&p, &ann_c, "limit=7").await;
    let mut by_offset = Vec::new();
    for offset in (0..by_cursor.len() + 7).step_by(7) {
        let r = p
            .call(
                "GET",
                &format!("/api/v1/services?limit=7&offset={offset}"),
                &ann_c,
                None,
            )
            .await;
        assert_eq!(r.json["offset"], offset);
        by_offset.extend(
            r.json["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_i64().unwrap()),
        );
    }
    assert_eq!(by_offset, by_cursor);

    // A page after a cursor stays put when a service is made and another
    // deleted meanwhile: nothing repeats, nothing below is skipped.
    let page1 = p
        .call("GET", "/api/v1/services?limit=10", &ann_c, None)
        .await;
    let ids1: Vec<i64> = page1.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    let next = page1.json["next"].as_str().unwrap().to_string();
    let made = p
        .call(
            "POST",
            "/api/v1/services",
            &ann_c,
            Some(json!({"site_id": a, "server_type": "small"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.json);
    let made_id = made.json["service"]["id"].as_i64().unwrap();
    assert!(made_id > ids1[0]);
    let (rest_before, _) = walk(&p, &ann_c, "limit=10").await;
    let below: Vec<i64> = rest_before
        .iter()
        .copied()
        .filter(|id| *id < *ids1.last().unwrap())
        .collect();
    let gone = below[3];
    exec(
        &p,
        format!("UPDATE services SET status = 'deleted' WHERE id = {gone}"),
    )
    .await;
    let page2 = p
        .call(
            "GET",
            &format!("/api/v1/services?limit=10&cursor={next}"),
            &ann_c,
            None,
        )
        .await;
    let ids2: Vec<i64> = page2.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = below
        .iter()
        .copied()
        .filter(|id| *id != gone)
        .take(10)
        .collect();
    assert_eq!(ids2, want);
    let seen: HashSet<i64> = ids1.iter().chain(&ids2).copied().collect();
    assert_eq!(seen.len(), ids1.len() + ids2.len(), "no service twice");

    // Cursors are checked.
    for bad in ["cursor=abc", "cursor=-4", "cursor=0", "cursor=20&offset=7"] {
        let r = p
            .call("GET", &format!("/api/v1/services?{bad}"), &ann_c, None)
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {:?}",
            r.json
        );
        assert_eq!(r.json["field"], "cursor", "{bad}");
    }

    // The Servers page pages by cursor too.
    let login = p.login("ann", "ann-password").await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.json);
    let session = session_of(&login);
    let html = p.call("GET", "/servers", &session, None).await;
    assert_eq!(html.status, StatusCode::OK);
    let html = html.json.as_str().unwrap().to_string();
    let href = html
        .split("href=\"")
        .find(|h| h.contains("cursor="))
        .and_then(|h| h.split('"').next())
        .expect("a Next link with a cursor")
        .replace("&amp;", "&");
    let page = p
        .call("GET", &format!("/servers{href}"), &session, None)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let page = page.json.as_str().unwrap();
    assert!(page.contains("First page"), "{page}");
}
both_backends!(
    cursor_pages,
    cursor_pages_walk_exactly_what_each_caller_may_see
);

async fn long_lists_get_a_cached_total(backend: Backend) {
    let p = start(backend, |_| {}).await;
    catalog_and_pool(&p, 1100).await;
    let (ann, token) = p.user("ann", false).await;
    let cred = Cred::Bearer(token);
    let r = p
        .call(
            "POST",
            "/api/v1/sites",
            &cred,
            Some(json!({"name": "a", "owner_email": "o@example.org"})),
        )
        .await;
    let a = r.json["id"].as_i64().unwrap();
    seed(
        &p,
        1,
        1050,
        &a.to_string(),
        "CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'ready' END",
        ann.user_id,
    )
    .await;
    // Counted in full the first time, then served from the cache.
    let first = p.call("GET", "/api/v1/services", &cred, None).await;
    assert_eq!(first.json["total"], 1050);
    assert_eq!(first.json["total_estimated"], false);
    let again = p.call("GET", "/api/v1/services?limit=5", &cred, None).await;
    assert_eq!(again.json["total"], 1050);
    assert_eq!(again.json["total_estimated"], true);
    assert_eq!(again.json["items"].as_array().unwrap().len(), 5);
    assert_eq!(again.json["items"][0]["id"], 1050);
    // A short list is still counted exactly on every request.
    let failed = p
        .call("GET", "/api/v1/services?status=failed", &cred, None)
        .await;
    assert_eq!(failed.json["total"], 10);
    assert_eq!(failed.json["total_estimated"], false);
    // The whole list, page after page.
    let (ids, _) = walk(&p, &cred, "limit=500").await;
    assert_eq!(ids, (1..=1050).rev().collect::<Vec<i64>>());
}
both_backends!(cached_total, long_lists_get_a_cached_total);
