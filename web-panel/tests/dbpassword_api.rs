//! The database root password request through the API and the server
//! page, on both backends: only a ready server's site admins may ask (409
//! before it is ready, 404 to outsiders); the answer carries a new random
//! password once, with `Cache-Control: no-store`; what waits for the job
//! is only the sealed text (the payload names the server, nothing else);
//! two requests before a run make one `db_password` job and keep only the
//! newer password; the page's button answers a page with the password
//! and refuses a stale CSRF token; the audit row names the job, not the
//! password.

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

async fn sealed_rows(p: &Panel) -> Vec<(i64, String)> {
    let mut rc = p.db().read().await.unwrap();
    keel_panel::fetch_all!(
        &mut rc.conn(),
        (i64, String),
        "SELECT service_id, sealed FROM db_password_changes ORDER BY service_id"
    )
    .unwrap()
}

async fn story(b: Backend) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let p = start(b, move |c| c.data_dir = data_dir).await;
    catalog_and_pool(&p, 10).await;
    let (_, ann_t) = p.user("ann", false).await;
    let (_, bob_t) = p.user("bob", false).await;
    let (_, admin_t) = p.user("root", true).await;
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
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &ann,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    let id = r.json["service"]["id"].as_i64().unwrap();
    let url = format!("/api/v1/services/{id}/db-password");

    let r = p.call("POST", &url, &ann, None).await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert!(r.json["message"].as_str().unwrap().contains("ready"));
    make_ready(&p, id).await;
    let r = p.call("POST", &url, &bob, None).await;
    assert_eq!(r.status, 404, "{}", r.json);
    assert!(sealed_rows(&p).await.is_empty());

    let first = p.call("POST", &url, &ann, None).await;
    assert_eq!(first.status, 202, "{}", first.json);
    assert_eq!(first.headers["cache-control"], "no-store");
    let pw1 = first.json["password"].as_str().unwrap().to_string();
    let rows = sealed_rows(&p).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, id);
    assert!(!rows[0].1.contains(&pw1));
    let second = p.call("POST", &url, &ann, None).await;
    assert_eq!(second.status, 202, "{}", second.json);
    let pw2 = second.json["password"].as_str().unwrap().to_string();
    assert_ne!(pw1, pw2);
    // One queued run, which will set the newer password.
    assert_eq!(first.json["job_id"], second.json["job_id"]);
    let jobs = p
        .db()
        .store()
        .jobs(&JobFilter {
            kind: Some("db_password".into()),
            serial_key: Some(format!("service:{id}")),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].payload, json!({ "service_id": id }));
    let rows = sealed_rows(&p).await;
    assert_eq!(rows.len(), 1);
    let sealer = keel_panel::automation::secrets::Sealer::for_data_dir(data.path()).unwrap();
    let opened = sealer
        .open(&format!("db_root_password:{id}"), &rows[0].1)
        .unwrap();
    assert_eq!(opened.expose(), pw2);

    // The page's button.
    let login = p.login("ann", "ann-password").await;
    let session = session_of(&login);
    let Cred::Session { csrf, .. } = &session else {
        unreachable!()
    };
    let form = format!("/servers/{id}/db-password");
    let r = p.call_form(&form, &session, &[("csrf", "stale")]).await;
    assert_eq!(r.status, 403, "{}", r.json);
    let r = p
        .call_form(&form, &session, &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.headers["cache-control"], "no-store");
    let page = r.json.as_str().unwrap();
    let shown = page
        .split("<code id=\"db-password\">")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .unwrap();
    assert_eq!(shown.len(), 24, "{page}");
    assert_ne!(shown, pw2);
    let server_page = p
        .call("GET", &format!("/servers/{id}"), &session, None)
        .await;
    let server_page = server_page.json.as_str().unwrap();
    assert!(server_page.contains("db-password-change"), "{server_page}");
    assert!(!server_page.contains(shown));

    // Audited, without the password.
    let audit = p
        .call(
            "GET",
            "/api/v1/admin/audit?limit=200",
            &Cred::Bearer(admin_t),
            None,
        )
        .await
        .json;
    let rows: Vec<&serde_json::Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service.db_password_change")
        .collect();
    assert_eq!(rows.len(), 3, "{audit}");
    let text = audit.to_string();
    for pw in [&pw1, &pw2, &shown.to_string()] {
        assert!(!text.contains(pw.as_str()));
    }
}
both_backends!(db_password, story);
