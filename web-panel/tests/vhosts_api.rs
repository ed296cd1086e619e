//! Vhosts through the API and the server page, on both backends: names
//! checked as host names (422 with the field), a name or alias another
//! site uses refused (409, without naming the site), the same refusals on
//! the page's form, audit rows, and the `vhosts` job: none while the
//! server is not ready, one (coalesced) for several edits of a ready
//! server, and the inventory's `keel_vhosts` as the role reads it.

mod api_support;

use api_support::{catalog_and_pool, session_of, start, Backend, Cred, Panel};
use keel_panel::domain::Principal;
use keel_panel::lifecycle::Status;
use keel_panel::queue::JobFilter;
use serde_json::{json, Value};

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

async fn site_and_server(p: &Panel, cred: &Cred, name: &str) -> (i64, i64) {
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            cred,
            Some(json!({"name": name, "owner_email": "o@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            cred,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    (site, r.json["service"]["id"].as_i64().unwrap())
}

async fn vhosts_jobs(p: &Panel, id: i64) -> Vec<keel_panel::queue::Job> {
    p.db()
        .store()
        .jobs(&JobFilter {
            kind: Some("vhosts".into()),
            serial_key: Some(format!("service:{id}")),
            ..JobFilter::default()
        })
        .await
        .unwrap()
}

async fn story(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 10).await;
    let (_, ann_t) = p.user("ann", false).await;
    let (_, bob_t) = p.user("bob", false).await;
    let (_, admin_t) = p.user("root", true).await;
    let (ann, bob) = (Cred::Bearer(ann_t), Cred::Bearer(bob_t));
    let (_, s1) = site_and_server(&p, &ann, "ann-site").await;
    let (_, s2) = site_and_server(&p, &bob, "bob-site").await;
    let url = |id: i64| format!("/api/v1/services/{id}/vhosts");

    // A vhost on a server that is not ready yet: stored, no job.
    let r = p
        .call(
            "POST",
            &url(s1),
            &ann,
            Some(json!({"name": "www.ann.example", "aliases": ["ann.example"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["kind"], "static");
    assert_eq!(r.json["document_root"], "/var/www/www.ann.example");
    let www = r.json["id"].as_i64().unwrap();
    assert!(vhosts_jobs(&p, s1).await.is_empty());

    // Bad names: 422 naming the field.
    for (body, field) in [
        (json!({"name": "localhost"}), "name"),
        (json!({"name": "a_b.example"}), "name"),
        (
            json!({"name": "x.ann.example", "aliases": ["-x.example"]}),
            "aliases",
        ),
        (json!({"name": "x.ann.example", "kind": "proxy"}), "target"),
        (
            json!({"name": "x.ann.example", "document_root": "/etc/x"}),
            "document_root",
        ),
    ] {
        let r = p.call("POST", &url(s1), &ann, Some(body.clone())).await;
        assert_eq!(r.status, 422, "{body}: {}", r.json);
        assert_eq!(r.json["field"], field, "{body}: {}", r.json);
    }

    // Names another site uses are refused, as name and as alias, without
    // saying whose they are.
    for body in [
        json!({"name": "www.ann.example"}),
        json!({"name": "ann.example"}),
        json!({"name": "www.bob.example", "aliases": ["ANN.example"]}),
    ] {
        let r = p.call("POST", &url(s2), &bob, Some(body.clone())).await;
        assert_eq!(r.status, 409, "{body}: {}", r.json);
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.contains("another site"), "{msg}");
        assert!(!msg.contains("ann-site"), "{msg}");
    }
    // The same server cannot serve one name twice.
    let r = p
        .call("POST", &url(s1), &ann, Some(json!({"name": "ann.example"})))
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    // Bob may not touch Ann's server at all.
    let r = p.call("GET", &url(s1), &bob, None).await;
    assert_eq!(r.status, 404, "{}", r.json);

    // The server page's form refuses the same way, with the message.
    let login = p.login("bob", "bob-password").await;
    assert_eq!(login.status, 200, "{}", login.json);
    let session = session_of(&login);
    let Cred::Session { csrf, .. } = &session else {
        unreachable!()
    };
    let r = p
        .call_form(
            &format!("/servers/{s2}/vhosts"),
            &session,
            &[("csrf", csrf.as_str()), ("name", "www.ann.example")],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    let page = r.json.as_str().unwrap_or_default().to_string();
    assert!(page.contains("is already used by another site"), "{page}");
    let r = p
        .call_form(
            &format!("/servers/{s2}/vhosts"),
            &session,
            &[("csrf", csrf.as_str()), ("name", "bad_name.example")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    // A form without the session's token changes nothing.
    let r = p
        .call_form(
            &format!("/servers/{s2}/vhosts"),
            &session,
            &[("csrf", "stale"), ("name", "www.bob.example")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    // The page lists a vhost added through the form.
    let r = p
        .call_form(
            &format!("/servers/{s2}/vhosts"),
            &session,
            &[
                ("csrf", csrf.as_str()),
                ("name", "www.bob.example"),
                ("aliases", "bob.example, m.bob.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let page = r.json.as_str().unwrap_or_default().to_string();
    assert!(page.contains("data-vhost=\"www.bob.example\""), "{page}");
    assert!(page.contains("bob.example, m.bob.example"), "{page}");

    // Once the server is ready, edits queue one coalesced run.
    make_ready(&p, s1).await;
    let r = p
        .call(
            "POST",
            &url(s1),
            &ann,
            Some(json!({"name": "api.ann.example", "kind": "proxy", "target": "http://127.0.0.1:8080/"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = p
        .call(
            "PUT",
            &format!("{}/{www}", url(s1)),
            &ann,
            Some(
                json!({"name": "www.ann.example", "aliases": ["ann.example", "shop.ann.example"]}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json["aliases"],
        json!(["ann.example", "shop.ann.example"])
    );
    let jobs = vhosts_jobs(&p, s1).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");

    // The role's view of them.
    let inv = p
        .call(
            "GET",
            "/api/v1/inventory",
            &Cred::Bearer(admin_t.clone()),
            None,
        )
        .await
        .json;
    let host = inv["_meta"]["hostvars"]
        .as_object()
        .unwrap()
        .values()
        .find(|h| h["keel_service_id"] == s1)
        .unwrap()
        .clone();
    let vh: Vec<Value> = host["keel_vhosts"].as_array().unwrap().clone();
    assert_eq!(vh.len(), 2, "{vh:?}");
    assert_eq!(
        vh[0],
        json!({"name": "api.ann.example", "aliases": [], "kind": "proxy",
               "document_root": "/var/www/api.ann.example", "target": "http://127.0.0.1:8080/",
               "tls": false})
    );
    assert_eq!(vh[1]["aliases"], json!(["ann.example", "shop.ann.example"]));

    // Deleting frees the names for other sites.
    let r = p
        .call("DELETE", &format!("{}/{www}", url(s1)), &ann, None)
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    let r = p
        .call("POST", &url(s2), &bob, Some(json!({"name": "ann.example"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.json);

    // Every change is audited.
    let audit = p
        .call(
            "GET",
            "/api/v1/admin/audit?object_type=vhost&limit=50",
            &Cred::Bearer(admin_t),
            None,
        )
        .await
        .json;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["vhost.create", "vhost.update", "vhost.delete"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}
both_backends!(vhosts, story);
