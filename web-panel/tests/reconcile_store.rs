//! Reconciliation's store queries on both backends: a flow whose job was
//! lost is found (after the grace period) and resumed once; a flow with a
//! live job is left alone. The hypervisor side of reconciliation runs
//! against real containers in `tests/e2e/provision_faults.rs`.

mod api_support;

use api_support::{catalog_and_pool, start, Backend, Cred};
use keel_panel::db::tx_conn;
use keel_panel::reconcile::{resume_stalled, RESUME_GRACE_MS};
use reqwest::StatusCode;
use serde_json::json;

async fn lost_job_is_resumed_once(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    let (_, alice) = p.user("alice", false).await;
    let alice = Cred::Bearer(alice);
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &alice,
            Some(json!({"name": "blog", "owner_email": "a@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &alice,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let id = r.json["service"]["id"].as_i64().unwrap();
    let key = format!("service:{id}");

    // Its provision job is queued: nothing to resume, even much later.
    p.clock
        .advance(std::time::Duration::from_millis(2 * RESUME_GRACE_MS as u64));
    assert!(resume_stalled(p.db()).await.unwrap().is_empty());

    // The job is lost (a crash between "dead" and its compensation): the
    // service stays `requested` with no live job.
    let now = p.db().now();
    {
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = tx_conn(&mut tx);
        keel_panel::execute!(
            &mut conn,
            "UPDATE jobs SET state = 'dead', finished_at = $1 WHERE serial_key = $2",
            now,
            key.as_str()
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    // Within the grace period after the job finished: still left alone.
    assert!(resume_stalled(p.db()).await.unwrap().is_empty());

    p.clock
        .advance(std::time::Duration::from_millis(RESUME_GRACE_MS as u64 + 1));
    assert_eq!(resume_stalled(p.db()).await.unwrap(), [id]);
    let queued = p
        .db()
        .store()
        .jobs(&keel_panel::queue::JobFilter {
            serial_key: Some(key.clone()),
            state: Some(keel_panel::queue::JobState::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].kind, "provision");

    // Resumed once: the new job is live, so a second pass does nothing.
    assert!(resume_stalled(p.db()).await.unwrap().is_empty());
    let audit = keel_panel::audit::list(
        p.db(),
        &keel_panel::domain::Principal::system(),
        &keel_panel::audit::AuditFilter {
            object_type: Some("service".into()),
            object_id: Some(id),
            actor_id: None,
        },
        keel_panel::domain::Page {
            limit: 100,
            offset: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        audit
            .items
            .iter()
            .filter(|e| e.action == "reconcile.resumed")
            .count(),
        1
    );
}

both_backends!(lost_job, lost_job_is_resumed_once);
