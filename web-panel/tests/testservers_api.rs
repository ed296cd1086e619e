//! Test servers and "clone production to test" through the API and the
//! server page, on both backends: a production server gets one test server
//! of its site (409 for a second, and for a test server's own), with its
//! own hostname and addresses from the pool; the server type defaults to
//! production's and must have its image and at least its disk (422 naming
//! `server_type`), the pool type is checked (422 `pool_type`); the quotas
//! count the test server (it is refused over the quota, and once made it
//! takes the quota's last server from the next production server);
//! outsiders learn nothing (404) and SSH-only members are refused (403). A
//! clone is for a ready or failed test server of a ready production server
//! (409 otherwise), with the test server's hostname typed (422 `confirm`),
//! and queues one coalesced `clone` job on the hypervisor queue under the
//! test server's key; both pages show the section.

mod api_support;

use api_support::{catalog_and_pool, session_of, start, Backend, Cred, Panel};
use keel_panel::domain::Principal;
use keel_panel::lifecycle::Status;
use keel_panel::queue::JobFilter;
use keel_panel::services::catalog::{self, NewServerType};
use serde_json::{json, Value};

async fn set_status(p: &Panel, id: i64, to: Status) {
    let mut tx = p.db().begin().await.unwrap();
    let mut conn = keel_panel::db::tx_conn(&mut tx);
    let moved = keel_panel::lifecycle::transition::transition(
        &mut conn,
        p.db().now(),
        &Principal::system(),
        id,
        &Status::ALL,
        to,
        None,
    )
    .await
    .unwrap();
    assert!(moved);
    tx.commit().await.unwrap();
}

async fn server_type(p: &Panel, name: &str, disk_gb: i64, os_image: &str) {
    catalog::create(
        p.db(),
        &Principal::system(),
        &NewServerType {
            name: name.into(),
            cpus: 2,
            ram_mb: 2048,
            disk_gb,
            os_image: os_image.into(),
            roles: vec![],
            stack: None,
        },
    )
    .await
    .unwrap();
}

async fn quota(p: &Panel, admin: &Cred, user: i64, max_vms: i64) {
    let r = p
        .call(
            "PUT",
            "/api/v1/admin/quotas",
            admin,
            Some(
                json!({"subject_kind": "user", "subject_id": user, "max_vms": max_vms,
                        "max_vcpus": 100, "max_ram_mb": 100000, "max_disk_gb": 1000}),
            ),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
}

async fn story(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 10).await;
    // `small` is 20 GB of debian-12.
    server_type(&p, "big", 40, "debian-12").await;
    server_type(&p, "tiny", 10, "debian-12").await;
    server_type(&p, "trixie", 40, "debian-13").await;
    let (ann_p, ann_t) = p.user("ann", false).await;
    let (_, bob_t) = p.user("bob", false).await;
    let (_, carl_t) = p.user("carl", false).await;
    let (_, root_t) = p.user("root", true).await;
    let (ann, bob, carl, root) = (
        Cred::Bearer(ann_t),
        Cred::Bearer(bob_t),
        Cred::Bearer(carl_t),
        Cred::Bearer(root_t),
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
    keel_panel::services::sites::set_member(p.db(), &Principal::system(), site, "carl", "ssh")
        .await
        .unwrap();
    let prod = p
        .call(
            "POST",
            "/api/v1/services",
            &ann,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await
        .json["service"]
        .clone();
    let prod_id = prod["id"].as_i64().unwrap();
    assert_eq!(prod["test_of"], Value::Null);
    let pair_url = format!("/api/v1/services/{prod_id}/test-server");

    let r = p.call("GET", &pair_url, &ann, None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json,
        json!({"production_id": prod_id, "test": null, "clone": null})
    );

    // Who may.
    let r = p.call("POST", &pair_url, &bob, Some(json!({}))).await;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = p.call("GET", &pair_url, &bob, None).await;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = p.call("POST", &pair_url, &carl, Some(json!({}))).await;
    assert_eq!(r.status, 403, "{}", r.json);

    // What is checked, each naming its field.
    for (body, field) in [
        (json!({"server_type": "nope"}), "server_type"),
        (json!({"server_type": "tiny"}), "server_type"),
        (json!({"server_type": "trixie"}), "server_type"),
        (json!({"pool_type": "moon"}), "pool_type"),
    ] {
        let r = p.call("POST", &pair_url, &ann, Some(body.clone())).await;
        assert_eq!(r.status, 422, "{body}: {}", r.json);
        assert_eq!(r.json["field"], field, "{body}: {}", r.json);
    }
    let r = p
        .call("POST", &pair_url, &ann, Some(json!({"colour": "red"})))
        .await;
    assert!(r.status.is_client_error(), "{}", r.json);

    // The quota counts the test server: with one server allowed, there is
    // no room for it.
    quota(&p, &root, ann_p.user_id, 1).await;
    let r = p.call("POST", &pair_url, &ann, Some(json!({}))).await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert_eq!(r.json["error"], "quota_exceeded", "{}", r.json);
    quota(&p, &root, ann_p.user_id, 2).await;
    let r = p
        .call("POST", &pair_url, &ann, Some(json!({"server_type": "big"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let test = r.json["service"].clone();
    let test_id = test["id"].as_i64().unwrap();
    assert_eq!(test["kind"], "test");
    assert_eq!(test["test_of"], prod_id);
    assert_eq!(test["site_id"], site);
    assert_eq!(test["server_type"], "big");
    assert_eq!(test["status"], "requested");
    assert!(r.json["job_id"].as_i64().is_some());
    for f in ["hostname", "ipv4", "ipv6"] {
        assert!(test[f].is_string(), "{f}: {test}");
        assert_ne!(test[f], prod[f], "the test server has its own {f}");
    }
    // ... and now a second production server is over the quota.
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &ann,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert_eq!(r.json["error"], "quota_exceeded", "{}", r.json);
    quota(&p, &root, ann_p.user_id, 10).await;

    // One test server per production server; none for a test server.
    let r = p.call("POST", &pair_url, &ann, Some(json!({}))).await;
    assert_eq!(r.status, 409, "{}", r.json);
    let r = p
        .call(
            "POST",
            &format!("/api/v1/services/{test_id}/test-server"),
            &ann,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.json);

    // The pair, from either side.
    for id in [prod_id, test_id] {
        let r = p
            .call(
                "GET",
                &format!("/api/v1/services/{id}/test-server"),
                &ann,
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(r.json["production_id"], prod_id);
        assert_eq!(r.json["test"]["id"], test_id);
        assert_eq!(r.json["clone"], Value::Null);
    }

    // Clone: only a test server, only when both are in shape.
    let clone_url = format!("/api/v1/services/{test_id}/clone");
    let hostname = test["hostname"].as_str().unwrap().to_string();
    let confirm = json!({ "confirm": hostname });
    let r = p
        .call(
            "POST",
            &format!("/api/v1/services/{prod_id}/clone"),
            &ann,
            Some(json!({"confirm": prod["hostname"]})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    let r = p
        .call("POST", &clone_url, &ann, Some(confirm.clone()))
        .await;
    assert_eq!(r.status, 409, "the test server is not ready: {}", r.json);
    set_status(&p, test_id, Status::Ready).await;
    let r = p
        .call("POST", &clone_url, &ann, Some(confirm.clone()))
        .await;
    assert_eq!(r.status, 409, "production is not ready: {}", r.json);
    set_status(&p, prod_id, Status::Ready).await;
    let r = p
        .call("POST", &clone_url, &ann, Some(json!({"confirm": "yes"})))
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["field"], "confirm");
    let r = p
        .call("POST", &clone_url, &bob, Some(confirm.clone()))
        .await;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = p
        .call("POST", &clone_url, &carl, Some(confirm.clone()))
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    let clone_jobs = || async {
        p.db()
            .store()
            .jobs(&JobFilter {
                kind: Some("clone".into()),
                ..JobFilter::default()
            })
            .await
            .unwrap()
    };
    assert!(clone_jobs().await.is_empty(), "refusals queue nothing");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = p
            .call("POST", &clone_url, &ann, Some(confirm.clone()))
            .await;
        assert_eq!(r.status, 202, "{}", r.json);
        ids.push(r.json["job_id"].as_i64().unwrap());
    }
    assert_eq!(ids[0], ids[1], "a request while one waits is that one");
    let jobs = clone_jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].id, ids[0]);
    assert_eq!(jobs[0].queue, "hypervisor");
    assert_eq!(jobs[0].payload, json!({ "service_id": test_id }));
    assert_eq!(
        jobs[0].serial_key.as_deref(),
        Some(format!("service:{test_id}").as_str())
    );
    let r = p.call("GET", &pair_url, &ann, None).await;
    assert_eq!(r.json["clone"]["state"], "queued", "{}", r.json);
    assert_eq!(r.json["clone"]["job_id"], ids[0]);
    assert_eq!(r.json["clone"]["source_id"], prod_id);

    // The pages.
    let session = session_of(&p.login("ann", "ann-password").await);
    let page = p
        .call("GET", &format!("/servers/{test_id}"), &session, None)
        .await;
    let page = page.json.as_str().unwrap();
    assert!(page.contains("id=\"clone-form\""), "{page}");
    assert!(page.contains("id=\"clone-state\""), "{page}");
    assert!(page.contains(&format!("/servers/{prod_id}")), "{page}");
    let page = p
        .call("GET", &format!("/servers/{prod_id}"), &session, None)
        .await;
    let page = page.json.as_str().unwrap();
    assert!(
        page.contains(&format!("href=\"/servers/{test_id}\" id=\"test-link\"")),
        "{page}"
    );

    let audit = p
        .call("GET", "/api/v1/admin/audit?limit=500", &root, None)
        .await
        .json
        .to_string();
    for a in ["service.test_server", "service.clone_request"] {
        assert!(audit.contains(a), "{a}");
    }
}
both_backends!(testservers, story);
