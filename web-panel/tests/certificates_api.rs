//! Vhost certificates through the API, on both backends: an upload is
//! refused with 422 naming the field when the certificate is no PEM
//! certificate, the key is not a key or not the certificate's, its names
//! miss the vhost's name or an alias, it has expired or is not yet valid;
//! a good one (a wildcard covering the aliases) is stored `pending` with
//! its names, issuer and expiry, queues one `certificate` job and is
//! audited without its key; the key is in no answer. Asking for an ACME
//! certificate without an ACME server is a 409, and so is anything on a
//! server that is not ready. Certificates come from a test CA (rcgen); the
//! panel's clock is the test's (2027-01-15).

mod api_support;
mod tls_support;

use api_support::{catalog_and_pool, start, Backend, Cred, Panel};
use keel_panel::domain::Principal;
use keel_panel::lifecycle::Status;
use keel_panel::queue::JobFilter;
use serde_json::{json, Value};
use tls_support::TestCa;

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

async fn certificate_jobs(p: &Panel, id: i64) -> usize {
    p.db()
        .store()
        .jobs(&JobFilter {
            kind: Some("certificate".into()),
            serial_key: Some(format!("service:{id}")),
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .len()
}

async fn story(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 10).await;
    let (_, ann_t) = p.user("ann", false).await;
    let (_, admin_t) = p.user("root", true).await;
    let ann = Cred::Bearer(ann_t);
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
            "POST",
            "/api/v1/services",
            &ann,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["service"]["id"].as_i64().unwrap();
    let r = p
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts"),
            &ann,
            Some(
                json!({"name": "www.ann.example", "aliases": ["shop.ann.example", "ann.example"]}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let vid = r.json["id"].as_i64().unwrap();
    let url = format!("/api/v1/services/{id}/vhosts/{vid}/certificate");

    let ca = TestCa::new("Ann's test CA");
    let names = ["ann.example", "*.ann.example"];
    let good = ca.issue(&names, (2026, 1, 1), (2027, 6, 1));
    let upload = |cert: &str, key: &str| json!({"certificate": cert, "key": key});

    // Nothing yet: the names a certificate must cover, and no certificate.
    let r = p.call("GET", &url, &ann, None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json["names"],
        json!(["www.ann.example", "ann.example", "shop.ann.example"])
    );
    assert_eq!(r.json["certificate"], Value::Null);

    // A server that is not ready takes no certificate.
    let r = p
        .call("PUT", &url, &ann, Some(upload(&good.cert, &good.key)))
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    make_ready(&p, id).await;

    // Without an ACME server, ordering is refused.
    let r = p.call("POST", &format!("{url}/acme"), &ann, None).await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert!(
        r.json["message"].as_str().unwrap().contains("ACME"),
        "{}",
        r.json
    );

    // Each refusal names its field and says why.
    let other = ca.issue(&names, (2026, 1, 1), (2027, 6, 1));
    let narrow = ca.issue(
        &["www.ann.example", "ann.example"],
        (2026, 1, 1),
        (2027, 6, 1),
    );
    let expired = ca.issue(&names, (2025, 1, 1), (2026, 6, 1));
    let early = ca.issue(&names, (2027, 3, 1), (2028, 1, 1));
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "not PEM",
            upload("hello", &good.key),
            "certificate",
            "BEGIN CERTIFICATE",
        ),
        (
            "a key for a certificate",
            upload(&good.key, &good.key),
            "certificate",
            "BEGIN CERTIFICATE",
        ),
        (
            "no key",
            upload(&good.cert, "not a key"),
            "key",
            "no PEM private key",
        ),
        (
            "another certificate's key",
            upload(&good.cert, &other.key),
            "key",
            "does not match",
        ),
        (
            "an alias not covered",
            upload(&narrow.cert, &narrow.key),
            "certificate",
            "does not cover shop.ann.example",
        ),
        (
            "expired",
            upload(&expired.cert, &expired.key),
            "certificate",
            "expired on 2026-06-01",
        ),
        (
            "not yet valid",
            upload(&early.cert, &early.key),
            "certificate",
            "not valid before 2027-03-01",
        ),
    ];
    for (what, body, field, reason) in cases {
        let r = p.call("PUT", &url, &ann, Some(body)).await;
        assert_eq!(r.status, 422, "{what}: {}", r.json);
        assert_eq!(r.json["field"], field, "{what}: {}", r.json);
        let message = r.json["message"].as_str().unwrap();
        assert!(message.contains(reason), "{what}: {message}");
        assert!(
            message.starts_with(&format!("{field}:")),
            "{what}: {message}"
        );
    }
    assert_eq!(certificate_jobs(&p, id).await, 0);
    let r = p.call("GET", &url, &ann, None).await;
    assert_eq!(
        r.json["certificate"],
        Value::Null,
        "a refusal stored nothing"
    );

    // A good one: stored pending, one job, audited without the key.
    let r = p
        .call("PUT", &url, &ann, Some(upload(&good.cert, &good.key)))
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    let cert = &r.json["certificate"];
    assert_eq!(cert["source"], "upload");
    assert_eq!(cert["state"], "pending");
    assert_eq!(cert["names"], json!(names));
    assert_eq!(cert["issuer"], "CN=Ann's test CA");
    assert_eq!(cert["not_after"], 1_811_808_000_000_i64); // 2027-06-01
    assert!(r.json["job_id"].as_i64().is_some());
    assert_eq!(certificate_jobs(&p, id).await, 1);
    let key_body: String = good
        .key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let secret = &key_body[..32];
    for answer in [
        r.json.to_string(),
        p.call("GET", &url, &ann, None).await.json.to_string(),
        p.call("GET", &format!("/api/v1/services/{id}"), &ann, None)
            .await
            .json
            .to_string(),
    ] {
        assert!(
            !answer.contains(secret),
            "the key is in an answer: {answer}"
        );
        assert!(!answer.contains("PRIVATE KEY"), "{answer}");
    }
    let audit = p
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=vhost&object_id={vid}&limit=50"),
            &Cred::Bearer(admin_t),
            None,
        )
        .await;
    let rows: Vec<&Value> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "certificate.upload")
        .collect();
    assert_eq!(rows.len(), 1, "{}", audit.json);
    assert!(!rows[0].to_string().contains(secret));
    assert!(rows[0]["after_json"]
        .as_str()
        .unwrap()
        .contains("*.ann.example"));

    // A second upload while the job waits coalesces into it.
    let r = p
        .call("PUT", &url, &ann, Some(upload(&other.cert, &other.key)))
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(certificate_jobs(&p, id).await, 1);
}

both_backends!(uploads_are_checked_and_queued, story);
