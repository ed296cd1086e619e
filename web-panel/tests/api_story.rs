//! The panel's HTTP API end to end, on SQLite and PostgreSQL: sessions and
//! CSRF, login throttling on the controlled clock, tokens and expiry, SSO,
//! sites and servers with idempotency keys, quotas, the job lifecycle
//! through a real worker, SSH keys, the audit log, metrics and OpenAPI.

mod api_support;

use std::time::Duration;

use api_support::{catalog_and_pool, session_of, start, Backend, Cred};
use keel_panel::queue::worker::QueueConfig;
use keel_panel::queue::{Registry, Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::json;

async fn sessions_csrf_and_logout(b: Backend) {
    let p = start(b, |_| {}).await;
    p.user("alice", false).await;
    let anon = p.call("GET", "/api/v1/me", &Cred::Anonymous, None).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anon.json["error"], "unauthenticated");

    let r = p.login("alice", "alice-password").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http must not set Secure: {cookie}"
    );
    let sess = session_of(&r);
    let me = p.call("GET", "/api/v1/me", &sess, None).await;
    assert_eq!(me.json["name"], "alice");

    // A state-changing call with the cookie but without the CSRF token fails.
    let Cred::Session { cookie: secret, .. } = &sess else {
        unreachable!()
    };
    let no_csrf = Cred::Session {
        cookie: secret.clone(),
        csrf: "wrong".into(),
    };
    let site = json!({"name": "blog", "owner_email": "alice@example.org"});
    let r = p
        .call("POST", "/api/v1/sites", &no_csrf, Some(site.clone()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json["error"], "csrf");
    let r = p.call("POST", "/api/v1/sites", &sess, Some(site)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);

    // Logout deletes the session row: the same cookie no longer works.
    let r = p.call("POST", "/api/v1/auth/logout", &sess, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = p.call("GET", "/api/v1/me", &sess, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
both_backends!(sessions_csrf_and_logout_, sessions_csrf_and_logout);

async fn login_throttling(b: Backend) {
    let p = start(b, |_| {}).await;
    p.user("alice", false).await;
    p.user("bob", false).await;
    for _ in 0..3 {
        let r = p.login("alice", "wrong-password").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["error"], "bad_credentials");
    }
    // Blocked now, even with the right password, and so is this address
    // for every account.
    let r = p.login("alice", "alice-password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", r.json);
    assert_eq!(r.headers["retry-after"], "120");
    let r = p.login("bob", "bob-password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    p.clock.advance(Duration::from_secs(119));
    assert_eq!(
        p.login("alice", "alice-password").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    p.clock.advance(Duration::from_secs(2));
    assert_eq!(
        p.login("alice", "alice-password").await.status,
        StatusCode::OK
    );
}
both_backends!(login_throttling_, login_throttling);

async fn tokens_expire_and_revoke(b: Backend) {
    let p = start(b, |_| {}).await;
    let (_, token) = p.user("alice", false).await;
    let bearer = Cred::Bearer(token.clone());
    let r = p
        .call(
            "POST",
            "/api/v1/me/tokens",
            &bearer,
            Some(json!({"name": "ci", "expires_in_days": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let short = Cred::Bearer(r.json["secret"].as_str().unwrap().to_string());
    let short_id = r.json["token"]["id"].as_i64().unwrap();
    assert_eq!(
        p.call("GET", "/api/v1/me", &short, None).await.status,
        StatusCode::OK
    );
    // Only the hash is stored.
    let list = p.call("GET", "/api/v1/me/tokens", &bearer, None).await;
    assert!(!list.json.to_string().contains(&token));
    p.clock.advance(Duration::from_secs(2 * 86400));
    let r = p.call("GET", "/api/v1/me", &short, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = p
        .call(
            "DELETE",
            &format!("/api/v1/me/tokens/{short_id}"),
            &bearer,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = p
        .call(
            "GET",
            "/api/v1/me",
            &Cred::Bearer("keel_nonsense".into()),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = p
        .call(
            "POST",
            "/api/v1/me/tokens",
            &bearer,
            Some(json!({"name": "x", "expires_in_days": 9999})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["field"], "expires_in_days");
}
both_backends!(tokens_expire_and_revoke_, tokens_expire_and_revoke);

async fn sso_header_only_from_trusted_proxies(b: Backend) {
    let trusted = start(b, |c| {
        c.sso.enabled = true;
        c.sso.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let r = trusted
        .call_with(
            "GET",
            "/api/v1/me",
            &Cred::Anonymous,
            None,
            &[("x-remote-user", "carol")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["name"], "carol");
    assert!(r.headers.contains_key("set-cookie"));
    // The account was created on the fly, once.
    let r = trusted
        .call_with(
            "GET",
            "/api/v1/me",
            &Cred::Anonymous,
            None,
            &[("x-remote-user", "carol")],
        )
        .await;
    assert_eq!(r.json["name"], "carol");
    // The session it started works on its own; a header naming someone
    // else wins over a session cookie for carol.
    let cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let carol = Cred::Session {
        cookie: cookie["keel_session=".len()..].to_string(),
        csrf: r.json["csrf_token"].as_str().unwrap().to_string(),
    };
    let me = trusted.call("GET", "/api/v1/me", &carol, None).await;
    assert_eq!(me.json["name"], "carol");
    let r = trusted
        .call_with(
            "GET",
            "/api/v1/me",
            &carol,
            None,
            &[("x-remote-user", "dave")],
        )
        .await;
    assert_eq!(r.json["name"], "dave");

    let untrusted = start(b, |c| {
        c.sso.enabled = true;
        c.sso.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let r = untrusted
        .call_with(
            "GET",
            "/api/v1/me",
            &Cred::Anonymous,
            None,
            &[("x-remote-user", "carol")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let off = start(b, |_| {}).await;
    let r = off
        .call_with(
            "GET",
            "/api/v1/me",
            &Cred::Anonymous,
            None,
            &[("x-remote-user", "carol")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
both_backends!(sso_, sso_header_only_from_trusted_proxies);

async fn server_lifecycle(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    let (_, admin) = p.user("root", true).await;
    let admin = Cred::Bearer(admin);
    let (alice_p, alice) = p.user("alice", false).await;
    let alice = Cred::Bearer(alice);
    let r = p
        .call(
            "POST",
            "/api/v1/sites",
            &alice,
            Some(json!({"name": "blog", "owner_email": "a@example.org"})),
        )
        .await;
    let site = r.json["id"].as_i64().unwrap();

    let body = json!({"site_id": site, "server_type": "small"});
    let key = [("idempotency-key", "create-1")];
    let r = p
        .call_with("POST", "/api/v1/services", &alice, Some(body.clone()), &key)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let id = r.json["service"]["id"].as_i64().unwrap();
    assert_eq!(r.json["service"]["hostname"], "mws-00001.example.org");
    assert_eq!(r.json["service"]["ipv4"], "10.0.0.2");
    assert_eq!(r.json["service"]["status"], "requested");
    // Replaying the key returns the same server; reusing it for another request is refused.
    let again = p
        .call_with("POST", "/api/v1/services", &alice, Some(body.clone()), &key)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["service"]["id"], id);
    let other = json!({"site_id": site, "server_type": "small", "kind": "test"});
    let r = p
        .call_with("POST", "/api/v1/services", &alice, Some(other), &key)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    let list = p.call("GET", "/api/v1/services", &alice, None).await;
    assert_eq!(list.json["total"], 1);
    let list = p
        .call("GET", "/api/v1/services?status=ready", &alice, None)
        .await;
    assert_eq!(list.json["total"], 0);
    let list = p
        .call("GET", "/api/v1/services?q=00001", &alice, None)
        .await;
    assert_eq!(list.json["total"], 1);
    let bad = p
        .call("GET", "/api/v1/services?status=bogus", &alice, None)
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.json["field"], "status");

    // The provision job is queued in the same transaction.
    let detail = p
        .call("GET", &format!("/api/v1/services/{id}"), &alice, None)
        .await;
    assert_eq!(detail.json["jobs"][0]["kind"], "provision");
    assert_eq!(detail.json["jobs"][0]["state"], "queued");
    assert_eq!(detail.json["network"]["gateway4"], "10.0.0.1");

    // A worker runs it; without a hypervisor driver the service fails with a reason.
    let mut registry = Registry::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = p.state.config.as_ref().clone();
    config.data_dir = data.path().to_path_buf();
    let flow = keel_panel::provision::Provisioner::new(p.db().clone(), None, &config).unwrap();
    keel_panel::provision::register(&mut registry, std::sync::Arc::new(flow));
    let worker = Worker::new(
        p.db().store().clone(),
        registry,
        WorkerConfig {
            queues: vec![QueueConfig::new("hypervisor")],
            ..WorkerConfig::default()
        },
    );
    worker.run_until_idle().await.unwrap();
    let detail = p
        .call("GET", &format!("/api/v1/services/{id}"), &alice, None)
        .await;
    assert_eq!(detail.json["status"], "failed");
    assert_eq!(
        detail.json["failure_reason"],
        "no hypervisor driver is configured"
    );
    let r = p
        .call(
            "POST",
            &format!("/api/v1/services/{id}/retry"),
            &alice,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.json);
    worker.run_until_idle().await.unwrap();

    // Delete: the address goes to quarantine.
    let r = p
        .call("DELETE", &format!("/api/v1/services/{id}"), &alice, None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.json);
    worker.run_until_idle().await.unwrap();
    let r = p
        .call("GET", "/api/v1/services?status=deleted", &alice, None)
        .await;
    assert_eq!(r.json["total"], 1);
    let pools = p.call("GET", "/api/v1/admin/pools", &admin, None).await;
    assert_eq!(pools.json[0]["quarantined"], 1, "{:?}", pools.json);
    assert_eq!(pools.json[0]["free"], 2);

    // Every change is in the audit log with its actor.
    let audit = p
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=service&object_id={id}"),
            &admin,
            None,
        )
        .await;
    let actions: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"service.create"), "{actions:?}");
    let create = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "service.create")
        .unwrap();
    assert_eq!(create["actor_id"], alice_p.user_id);
    assert!(create["after_json"].as_str().unwrap().contains("mws-00001"));
    assert_eq!(
        p.call("GET", "/api/v1/admin/audit", &alice, None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // Metrics and OpenAPI.
    let m = p.call("GET", "/metrics", &Cred::Anonymous, None).await;
    let text = m
        .json
        .as_str()
        .unwrap_or_else(|| panic!("{} {:?}", m.status, m.json));
    assert!(
        text.contains(
            "keel_http_requests_total{method=\"POST\",route=\"/api/v1/services\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "keel_pool_addresses{pool=\"public-a\",type=\"public\",state=\"quarantined\"} 1"
        ),
        "{text}"
    );
    let api = p
        .call("GET", "/api/v1/openapi.json", &Cred::Anonymous, None)
        .await;
    let schemas = &api.json["components"]["schemas"];
    assert!(
        schemas["CreateServer"]["properties"]["site_id"].is_object(),
        "{schemas}"
    );
    assert_eq!(
        api.json["paths"]["/services"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/CreateServer"
    );
    // Every schema reference resolves.
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                    out.push(r.trim_start_matches("#/components/schemas/").to_string());
                }
                m.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&api.json, &mut all);
    assert!(all.len() > 20);
    for r in all {
        assert!(schemas[&r].is_object(), "dangling schema reference {r}");
    }
    for (method, path, _, _) in keel_panel::api::all_routes() {
        assert!(
            api.json["paths"][path][method.to_ascii_lowercase()].is_object(),
            "{method} {path}"
        );
    }
}
both_backends!(server_lifecycle_, server_lifecycle);

async fn quotas_and_exhaustion(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 2).await;
    let (_, admin) = p.user("root", true).await;
    let (bob_p, bob) = p.user("bob", false).await;
    let bob = Cred::Bearer(bob);
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &bob,
            Some(json!({"name": "s", "owner_email": "b@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let quota = json!({"subject_kind": "user", "subject_id": bob_p.user_id, "max_vms": 5, "max_vcpus": 2, "max_ram_mb": 100000, "max_disk_gb": 1000});
    let r = p
        .call(
            "PUT",
            "/api/v1/admin/quotas",
            &Cred::Bearer(admin.clone()),
            Some(quota.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let body = json!({"site_id": site, "server_type": "small"});
    assert_eq!(
        p.call("POST", "/api/v1/services", &bob, Some(body.clone()))
            .await
            .status,
        StatusCode::CREATED
    );
    let r = p
        .call("POST", "/api/v1/services", &bob, Some(body.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["error"], "quota_exceeded");
    assert!(
        r.json["message"].as_str().unwrap().contains("vCPUs"),
        "{:?}",
        r.json
    );
    // Raise the quota: the pool (2 addresses) is the next limit.
    let mut q = quota;
    q["max_vcpus"] = json!(100);
    p.call("PUT", "/api/v1/admin/quotas", &Cred::Bearer(admin), Some(q))
        .await;
    assert_eq!(
        p.call("POST", "/api/v1/services", &bob, Some(body.clone()))
            .await
            .status,
        StatusCode::CREATED
    );
    let r = p.call("POST", "/api/v1/services", &bob, Some(body)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["error"], "pool_exhausted");
    // The refused creates left nothing behind.
    let list = p.call("GET", "/api/v1/services", &bob, None).await;
    assert_eq!(list.json["total"], 2);
}
both_backends!(quotas_and_exhaustion_, quotas_and_exhaustion);

async fn ssh_keys(b: Backend) {
    let p = start(b, |_| {}).await;
    let (_, t) = p.user("alice", false).await;
    let alice = Cred::Bearer(t);
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH user@example";
    let r = p
        .call(
            "POST",
            "/api/v1/me/ssh-keys",
            &alice,
            Some(json!({"public_key": key})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    assert_eq!(
        r.json["fingerprint"],
        "SHA256:4dAX5WVUziy1Syy1iPHTuqm9GHR3uu2VvxZ9Al0IfxM"
    );
    assert_eq!(r.json["name"], "user@example");
    let dup = p
        .call(
            "POST",
            "/api/v1/me/ssh-keys",
            &alice,
            Some(json!({"public_key": key})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = p
        .call(
            "POST",
            "/api/v1/me/ssh-keys",
            &alice,
            Some(json!({"public_key": "ssh-rsa nonsense"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.json["field"], "public_key");
    let list = p.call("GET", "/api/v1/me/ssh-keys", &alice, None).await;
    assert_eq!(list.json.as_array().unwrap().len(), 1);
}
both_backends!(ssh_keys_, ssh_keys);

async fn groups_share_quotas_and_grant_roles(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 10).await;
    let (_, admin) = p.user("root", true).await;
    let admin = Cred::Bearer(admin);
    let (_, ann) = p.user("ann", false).await;
    let (_, ben) = p.user("ben", false).await;
    let (ann, ben) = (Cred::Bearer(ann), Cred::Bearer(ben));
    let g = p
        .call(
            "POST",
            "/api/v1/admin/groups",
            &admin,
            Some(json!({"name": "staff"})),
        )
        .await;
    assert_eq!(g.status, StatusCode::CREATED, "{:?}", g.json);
    let gid = g.json["id"].as_i64().unwrap();
    for user in ["ann", "ben"] {
        let r = p
            .call(
                "PUT",
                &format!("/api/v1/admin/groups/{gid}/members"),
                &admin,
                Some(json!({"user": user})),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
    let groups = p.call("GET", "/api/v1/admin/groups", &admin, None).await;
    assert_eq!(groups.json[0]["members"], "ann,ben");
    // One server for the whole group.
    let quota = json!({"subject_kind": "group", "subject_id": gid, "max_vms": 1, "max_vcpus": 100, "max_ram_mb": 100000, "max_disk_gb": 1000});
    p.call("PUT", "/api/v1/admin/quotas", &admin, Some(quota))
        .await;

    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &ann,
            Some(json!({"name": "shared", "owner_email": "a@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    // Ben cannot see the site until the group is granted admin on it.
    assert_eq!(
        p.call("GET", &format!("/api/v1/sites/{site}"), &ben, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = p
        .call(
            "PUT",
            &format!("/api/v1/sites/{site}/lookup-groups"),
            &ann,
            Some(json!({"group": "staff", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(
        p.call("GET", &format!("/api/v1/sites/{site}"), &ben, None)
            .await
            .status,
        StatusCode::OK
    );

    let body = json!({"site_id": site, "server_type": "small"});
    assert_eq!(
        p.call("POST", "/api/v1/services", &ann, Some(body.clone()))
            .await
            .status,
        StatusCode::CREATED
    );
    let r = p.call("POST", "/api/v1/services", &ben, Some(body)).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json["error"], "quota_exceeded");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .starts_with("group quota exceeded: 1 servers in use"),
        "{:?}",
        r.json
    );
    // Ben sees the group's server as a site admin through the group.
    assert_eq!(
        p.call("GET", "/api/v1/services", &ben, None).await.json["total"],
        1
    );
}
both_backends!(groups_, groups_share_quotas_and_grant_roles);
