//! System packages through the API and the pages, on both backends: only
//! platform admins curate the allowed list (403 for others; a bad Debian
//! name 422, a listed one 409); site admins pick from it, and a name
//! outside the list is refused (422 with a clear message) by the API and
//! by the server page's form alike; the picks are audited, reach the
//! inventory's `keel_packages`, and queue one coalesced `packages` job once
//! the server is ready; a package still picked cannot leave the list.

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

async fn site_and_server(p: &Panel, cred: &Cred, name: &str) -> i64 {
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
    r.json["service"]["id"].as_i64().unwrap()
}

async fn packages_jobs(p: &Panel, id: i64) -> usize {
    p.db()
        .store()
        .jobs(&JobFilter {
            kind: Some("packages".into()),
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
    let (_, bob_t) = p.user("bob", false).await;
    let (_, admin_t) = p.user("root", true).await;
    let (ann, bob, admin) = (
        Cred::Bearer(ann_t),
        Cred::Bearer(bob_t),
        Cred::Bearer(admin_t),
    );
    let s1 = site_and_server(&p, &ann, "ann-site").await;
    let url = format!("/api/v1/services/{s1}/packages");

    // Platform admins curate the list; nobody else may.
    let r = p
        .call(
            "POST",
            "/api/v1/admin/packages",
            &ann,
            Some(json!({"name": "tree", "description": "directory listings as a tree"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    let r = p
        .call(
            "POST",
            "/api/v1/admin/packages",
            &admin,
            Some(json!({"name": "tree", "description": "directory listings as a tree"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let tree = r.json["id"].as_i64().unwrap();
    for (body, status, field) in [
        (
            json!({"name": "Tree;rm", "description": "x"}),
            422,
            Some("name"),
        ),
        (
            json!({"name": "zip", "description": " "}),
            422,
            Some("description"),
        ),
        (json!({"name": "tree", "description": "again"}), 409, None),
    ] {
        let r = p
            .call("POST", "/api/v1/admin/packages", &admin, Some(body.clone()))
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.json);
        if let Some(field) = field {
            assert_eq!(r.json["field"], field, "{body}: {}", r.json);
        }
    }
    let r = p.call("GET", "/api/v1/packages", &bob, None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json,
        json!([{"id": tree, "name": "tree", "description": "directory listings as a tree"}])
    );

    // A name outside the list is refused, with the name and the reason.
    let r = p
        .call(
            "PUT",
            &url,
            &ann,
            Some(json!({"packages": ["tree", "htop"]})),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["field"], "packages");
    let msg = r.json["message"].as_str().unwrap();
    assert!(
        msg.contains("\"htop\" is not in the list of allowed packages"),
        "{msg}"
    );
    assert_eq!(
        p.call("GET", &url, &ann, None).await.json["packages"],
        json!([])
    );
    // Another site's admin learns nothing.
    let r = p.call("GET", &url, &bob, None).await;
    assert_eq!(r.status, 404, "{}", r.json);
    let r = p
        .call("PUT", &url, &bob, Some(json!({"packages": ["tree"]})))
        .await;
    assert_eq!(r.status, 404, "{}", r.json);

    // Picked on a server that is not ready: stored, no job yet.
    let r = p
        .call(
            "PUT",
            &url,
            &ann,
            Some(json!({"packages": ["tree", "tree"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["packages"], json!(["tree"]));
    assert_eq!(packages_jobs(&p, s1).await, 0);

    // The page: the form refuses the same way, and shows the picks.
    let login = p.login("ann", "ann-password").await;
    assert_eq!(login.status, 200, "{}", login.json);
    let session = session_of(&login);
    let Cred::Session { csrf, .. } = &session else {
        unreachable!()
    };
    let form = format!("/servers/{s1}/packages");
    let r = p
        .call_form(
            &form,
            &session,
            &[("csrf", csrf.as_str()), ("package", "htop")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    let page = r.json.as_str().unwrap_or_default().to_string();
    assert!(
        page.contains("is not in the list of allowed packages"),
        "{page}"
    );
    let r = p
        .call_form(&form, &session, &[("csrf", "stale"), ("package", "tree")])
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    let r = p
        .call_form(
            &form,
            &session,
            &[("csrf", csrf.as_str()), ("package", "tree")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let page = r.json.as_str().unwrap_or_default().to_string();
    // The refused-then-accepted form shows the package ticked in its row.
    let row = page
        .split(r#"<tr data-package="tree">"#)
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for tree: {page}"));
    assert!(
        row.contains(r#"name="package""#) && row.contains(r#"value="tree" checked"#),
        "{row}"
    );

    // Once the server is ready, changes queue one coalesced run.
    make_ready(&p, s1).await;
    for want in [json!([]), json!(["tree"])] {
        let r = p
            .call("PUT", &url, &ann, Some(json!({ "packages": want })))
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    assert_eq!(packages_jobs(&p, s1).await, 1);

    // The role's view of them.
    let inv = p.call("GET", "/api/v1/inventory", &admin, None).await.json;
    let host = inv["_meta"]["hostvars"]
        .as_object()
        .unwrap()
        .values()
        .find(|h| h["keel_service_id"] == s1)
        .unwrap()
        .clone();
    assert_eq!(host["keel_packages"], json!(["tree"]));

    // A picked package cannot leave the list; an unpicked one can.
    let r = p
        .call(
            "DELETE",
            &format!("/api/v1/admin/packages/{tree}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    let zip = p
        .call(
            "POST",
            "/api/v1/admin/packages",
            &admin,
            Some(json!({"name": "zip", "description": "zip archives"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let r = p
        .call(
            "DELETE",
            &format!("/api/v1/admin/packages/{zip}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);

    // The admins' page lists what is allowed; others may not see it.
    let root = session_of(&p.login("root", "root-password").await);
    let r = p.call("GET", "/admin/packages", &root, None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    let page = r.json.as_str().unwrap_or_default().to_string();
    assert!(page.contains(r#"data-package="tree""#), "{page}");
    assert!(page.contains("directory listings as a tree"), "{page}");
    let r = p.call("GET", "/admin/packages", &session, None).await;
    assert_eq!(r.status, 403, "{}", r.json);

    // Every change is audited.
    let audit = p
        .call("GET", "/api/v1/admin/audit?limit=200", &admin, None)
        .await
        .json;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["package.allow", "package.disallow", "service.packages"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}
both_backends!(packages, story);
