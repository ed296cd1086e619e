//! 1,000 concurrent "create server" requests over HTTP against a pool of
//! 800 addresses, on SQLite and PostgreSQL: exactly 800 servers, no
//! address given twice, and 200 clear "pool exhausted" answers.

mod api_support;

use std::collections::HashSet;
use std::sync::Arc;

use api_support::{catalog_and_pool, start, Backend, Cred};
use reqwest::StatusCode;
use serde_json::json;

async fn thousand_creates_for_eight_hundred_addresses(b: Backend) {
    let p = Arc::new(start(b, |_| {}).await);
    catalog_and_pool(&p, 800).await;
    let (_, token) = p.user("alice", false).await;
    let cred = Cred::Bearer(token);
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &cred,
            Some(json!({"name": "big", "owner_email": "a@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let p = p.clone();
        let cred = cred.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("race-{i}");
            let r = p
                .call_with(
                    "POST",
                    "/api/v1/services",
                    &cred,
                    Some(json!({"site_id": site, "server_type": "small"})),
                    &[("idempotency-key", &key)],
                )
                .await;
            (r.status, r.json)
        }));
    }
    let mut hostnames = HashSet::new();
    let mut ipv4s = HashSet::new();
    let (mut created, mut exhausted) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => {
                created += 1;
                assert!(hostnames.insert(body["service"]["hostname"].as_str().unwrap().to_string()));
                assert!(ipv4s.insert(body["service"]["ipv4"].as_str().unwrap().to_string()));
            }
            StatusCode::CONFLICT => {
                assert_eq!(body["error"], "pool_exhausted", "{body}");
                assert_eq!(
                    body["message"],
                    "no free addresses left in the public pools"
                );
                exhausted += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created, exhausted), (800, 200));
    // The database agrees: 800 live services, 800 allocated addresses, 800 jobs.
    let list = p.call("GET", "/api/v1/services?limit=1", &cred, None).await;
    assert_eq!(list.json["total"], 800);
    let (_, admin) = p.user("root", true).await;
    let pools = p
        .call(
            "GET",
            "/api/v1/admin/pools",
            &Cred::Bearer(admin.clone()),
            None,
        )
        .await;
    assert_eq!(pools.json[0]["allocated"], 800);
    assert_eq!(pools.json[0]["free"], 0);
    let jobs = p
        .call(
            "GET",
            "/api/v1/admin/jobs?kind=provision&state=queued&limit=500",
            &Cred::Bearer(admin),
            None,
        )
        .await;
    assert_eq!(jobs.json.as_array().unwrap().len(), 500);
}
both_backends!(race, thousand_creates_for_eight_hundred_addresses);
