//! Snapshots through the API and the server page, on both backends: only
//! ready servers are snapshotted or restored (409); the site's schedule
//! has its default (daily, keep 7), is checked (hourly at most, keep 1 to
//! 100: 422 naming the field) and audited; outsiders learn nothing (404);
//! a snapshot request queues one coalesced `snapshot` job on the
//! hypervisor queue; a restore of a snapshot of another server is a 404;
//! the server page shows the section and its forms.

mod api_support;

use api_support::{catalog_and_pool, session_of, start, Backend, Cred, Panel};
use keel_panel::domain::Principal;
use keel_panel::lifecycle::Status;
use keel_panel::queue::JobFilter;
use serde_json::json;

async fn make_ready(p: &Panel, id: i64) {
    let mut tx = p.db().begin().await.unwrap();
    let mut conn = keel_panel::db::tx_conn(&mut tx);
    let moved = keel_panel::lifecycle::transition::transition(
        &mut conn,
        p.db().now(),
        &Principal::system(),
        id,
        &[Status::Requested],
        Status::Ready,
        None,
    )
    .await
    .unwrap();
    assert!(moved);
    tx.commit().await.unwrap();
}

async fn story(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 10).await;
    let (_, ann_t) = p.user("ann", false).await;
    let (_, bob_t) = p.user("bob", false).await;
    let (ann, bob) = (Cred::Bearer(ann_t), Cred::Bearer(bob_t));
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
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = p
            .call(
                "POST",
                "/api/v1/services",
                &ann,
                Some(json!({"site_id": site, "server_type": "small"})),
            )
            .await;
        ids.push(r.json["service"]["id"].as_i64().unwrap());
    }
    let (id, other) = (ids[0], ids[1]);
    let snaps = format!("/api/v1/services/{id}/snapshots");
    let sched = format!("/api/v1/sites/{site}/snapshot-schedule");

    let r = p.call("POST", &snaps, &ann, None).await;
    assert_eq!(r.status, 409, "{}", r.json);
    let r = p.call("GET", &sched, &ann, None).await;
    assert_eq!(
        r.json,
        json!({"every_secs": 86400, "keep": 7, "enabled": true})
    );
    for (body, field) in [
        (
            json!({"every_secs": 60, "keep": 3, "enabled": true}),
            "every_secs",
        ),
        (
            json!({"every_secs": 3600, "keep": 0, "enabled": true}),
            "keep",
        ),
    ] {
        let r = p.call("PUT", &sched, &ann, Some(body.clone())).await;
        assert_eq!(r.status, 422, "{body}: {}", r.json);
        assert_eq!(r.json["field"], field);
    }
    let r = p
        .call(
            "PUT",
            &sched,
            &ann,
            Some(json!({"every_secs": 7200, "keep": 3, "enabled": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let r = p.call("GET", &sched, &bob, None).await;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = p.call("GET", &snaps, &bob, None).await;
    assert_eq!(r.status, 404, "{}", r.json);

    make_ready(&p, id).await;
    for _ in 0..2 {
        let r = p.call("POST", &snaps, &ann, None).await;
        assert_eq!(r.status, 202, "{}", r.json);
    }
    let jobs = p
        .db()
        .store()
        .jobs(&JobFilter {
            kind: Some("snapshot".into()),
            serial_key: Some(format!("service:{id}")),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].queue, "hypervisor");
    assert_eq!(
        jobs[0].payload,
        json!({"service_id": id, "origin": "manual"})
    );

    // A snapshot of another server cannot be restored onto this one.
    let theirs = {
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        let s = keel_panel::scalar!(
            &mut conn,
            i64,
            "INSERT INTO snapshots (service_id, name, origin, created_at) VALUES ($1, 'keel-j9', 'manual', 1) RETURNING id",
            other
        )
        .unwrap()
        .unwrap();
        tx.commit().await.unwrap();
        s
    };
    let r = p
        .call(
            "POST",
            &format!("/api/v1/services/{id}/snapshots/{theirs}/restore"),
            &ann,
            Some(json!({"confirm": "x"})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.json);

    // The page.
    let session = session_of(&p.login("ann", "ann-password").await);
    let r = p
        .call("GET", &format!("/servers/{id}"), &session, None)
        .await;
    let page = r.json.as_str().unwrap();
    assert!(page.contains("id=\"snapshot-take\""), "{page}");
    assert!(
        page.contains("name=\"every_hours\" size=\"3\" value=\"2\""),
        "{page}"
    );

    let audit = p
        .call(
            "GET",
            "/api/v1/admin/audit?limit=200",
            &Cred::Bearer(p.user("root", true).await.1),
            None,
        )
        .await
        .json
        .to_string();
    for a in ["site.snapshot_schedule", "service.snapshot_request"] {
        assert!(audit.contains(a), "{a}");
    }
}
both_backends!(snapshots, story);
