//! A stack server type end to end on the real container driver: a type
//! whose `stack` names a playbook beside the panel's, a group and a
//! secret. Its server is configured by the panel's playbook and then by
//! the stack's, which selects the server through the stack's group and
//! writes the secret the panel generated: 32 letters and digits, stored
//! only sealed, in no job log, and the same after a re-converge. Bad
//! stacks are refused with 422 naming the field.
//!
//! Needs root and the built image; skips otherwise, or fails when
//! `KEEL_REQUIRE_REAL` is set. Addresses from 10.233.64.0/24.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use api_support::Cred;
use flow_support::FlowPanel;
use serde_json::json;

const IMAGE: &str = "debian-bookworm";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_server_type_runs_its_playbook_with_generated_secrets() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let mut f = FlowPanel::start(64, 2).await;
    f.worker(&["hypervisor", "default"]);
    let admin = Cred::Bearer(f.admin_token.clone());

    for (stack, field) in [
        (json!({"playbook": "../site.yml"}), "stack.playbook"),
        (
            json!({"playbook": "teststack.yml", "groups": ["all"]}),
            "stack.groups",
        ),
        (
            json!({"playbook": "teststack.yml", "groups": ["a-b"]}),
            "stack.groups",
        ),
        (
            json!({"playbook": "teststack.yml", "secrets": ["ansible_password"]}),
            "stack.secrets",
        ),
    ] {
        let r = f
            .panel
            .call(
                "POST",
                "/api/v1/server-types",
                &admin,
                Some(
                    json!({"name": "bad", "cpus": 1, "ram_mb": 512, "disk_gb": 4,
                            "os_image": IMAGE, "stack": stack}),
                ),
            )
            .await;
        assert_eq!(r.status, 422, "{stack}: {}", r.json);
        assert!(r.json.to_string().contains(field), "{stack}: {}", r.json);
    }
    let stack = json!({"playbook": "teststack.yml", "groups": ["teststack"],
                       "secrets": ["teststack_password"]});
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/server-types",
            &admin,
            Some(
                json!({"name": "stacked", "cpus": 1, "ram_mb": 512, "disk_gb": 4,
                        "os_image": IMAGE, "stack": stack}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let types = f
        .panel
        .call("GET", "/api/v1/server-types", &f.owner, None)
        .await;
    let listed = types.json.as_array().unwrap();
    let stacked = listed.iter().find(|t| t["name"] == "stacked").unwrap();
    assert_eq!(stacked["stack"], stack);
    let small = listed.iter().find(|t| t["name"] == "small").unwrap();
    assert!(small["stack"].is_null(), "{small}");

    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/services",
            &f.owner,
            Some(json!({"site_id": f.site, "server_type": "stacked"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["service"]["id"].as_i64().unwrap();
    f.wait_status(id, "ready").await;

    let read = |out: std::process::Output| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // The panel's playbook ran first, then the stack's.
    read(f.ssh_admin(id, "test -f /etc/keel-provisioned").await);
    let groups = read(f.ssh_admin(id, "cat /etc/teststack.groups").await);
    assert!(groups.split(',').any(|g| g == "teststack"), "{groups}");
    let secret = read(f.ssh_admin(id, "sudo cat /etc/teststack.secret").await);
    assert_eq!(secret.len(), 32, "{secret}");
    assert!(
        secret.chars().all(|c| c.is_ascii_alphanumeric()),
        "{secret}"
    );

    // Stored sealed only, and in no job log.
    let mut rc = f.panel.db().read().await.unwrap();
    let sealed: Vec<(String, String)> = keel_panel::fetch_all!(
        &mut rc.conn(),
        (String, String),
        "SELECT name, sealed FROM service_secrets WHERE service_id = $1",
        id
    )
    .unwrap();
    drop(rc);
    assert_eq!(sealed.len(), 1);
    assert_eq!(sealed[0].0, "teststack_password");
    assert!(!sealed[0].1.contains(&secret));
    let configure = f.jobs_json(id, "configure").await;
    assert_eq!(configure.len(), 1);
    let log = f.job_log(configure[0]["id"].as_i64().unwrap()).await;
    assert!(
        log.contains("teststack.yml"),
        "the stack's run is in the log: {log}"
    );
    assert!(!log.contains(&secret), "the secret is in the job log");

    // A re-converge runs the stack again with the same secret.
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/converge"),
            &f.owner,
            None,
        )
        .await;
    assert!(r.status == 202 || r.status == 200, "{}", r.json);
    f.settle_kind(id, "configure", 1).await;
    assert_eq!(
        read(f.ssh_admin(id, "sudo cat /etc/teststack.secret").await),
        secret
    );
}
