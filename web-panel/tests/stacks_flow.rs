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
use flow_support::{Bridge, FlowPanel, HostRule};
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

const BRIDGE: &str = "kbr65";

/// A multi-server stack type: one request makes both servers, each gets
/// the panel's playbook, then the stack's playbook runs once against
/// both, the `db` member reached only through `web`. With the panel's
/// own direct way to `db` blocked, a re-converge still reaches it through
/// `web`. Deleting one server deletes the stack. Addresses from
/// 10.233.65.0/24, on the bridge `kbr65`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_server_stack_is_made_configured_through_its_jump_host_and_deleted_together() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    // The servers share a bridge (so web reaches db) whose host address
    // is the pool's gateway.
    let _bridge = Bridge::up(BRIDGE, "10.233.65.1/24");
    let mut f = FlowPanel::start_with(65, 2, |c| {
        c.networks.insert(
            "flow-65".into(),
            keel_panel::config::NetworkConfig {
                bridge: BRIDGE.into(),
                nameservers: vec![],
                callback_url: String::new(),
            },
        );
    })
    .await;
    f.worker(&["hypervisor", "default"]);
    let admin = Cred::Bearer(f.admin_token.clone());
    let member = |name: &str, groups: &[&str]| json!({"name": name, "groups": groups});
    for (members, why) in [
        (json!([member("web", &[])]), "2 to 8 members"),
        (
            json!([member("web", &[]), member("web", &[])]),
            "two members are named",
        ),
        (
            json!([member("web", &[]), {"name": "db", "jump": "cache"}]),
            "which is not a member",
        ),
        (
            json!([{"name": "web", "jump": "db"}, member("db", &[])]),
            "must be reached directly",
        ),
        (
            json!([member("web", &[]), member("db", &["all"])]),
            "not a group it can be put in",
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
                            "os_image": IMAGE,
                            "stack": {"playbook": "multistack.yml", "members": members}}),
                ),
            )
            .await;
        assert_eq!(r.status, 422, "{members}: {}", r.json);
        let said = r.json.to_string();
        assert!(
            said.contains("stack.members") && said.contains(why),
            "{said}"
        );
    }
    let stack = json!({"playbook": "multistack.yml", "groups": ["mstack"],
                       "secrets": ["mstack_password"],
                       "vars": {"mstack_addr": "{{ keel_ipv4 }}"},
                       "members": [{"name": "web", "groups": ["mstack_web"]},
                                   {"name": "db", "groups": ["mstack_db"], "jump": "web"}]});
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/server-types",
            &admin,
            Some(
                json!({"name": "mstack", "cpus": 1, "ram_mb": 512, "disk_gb": 4,
                        "os_image": IMAGE, "stack": stack}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);

    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/services",
            &f.owner,
            Some(json!({"site_id": f.site, "server_type": "mstack"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let ids: Vec<i64> = r.json["stack_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{}", r.json);
    let (web, db) = (ids[0], ids[1]);
    assert_eq!(r.json["service"]["id"], web);
    f.wait_stack_ready(web, &[web, db]).await;
    let detail = f.service(db).await;
    let members: Vec<(i64, String)> = detail["stack_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["member"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(members, [(web, "web".to_string()), (db, "db".to_string())]);
    let web_ip = f.service(web).await["ipv4"].as_str().unwrap().to_string();
    let db_ip = detail["ipv4"].as_str().unwrap().to_string();

    // Both had the panel's playbook, then the stack's, in their groups.
    for id in [web, db] {
        assert!(f.role_file(id).exists(), "site.yml ran on {id}");
    }
    let root = |id: i64| f.driver.root_dir(&f.prov.vm_name(id));
    let groups = std::fs::read_to_string(root(web).join("etc/mstack.groups")).unwrap();
    assert_eq!(groups.trim(), "mstack,mstack_web,site_main_site");
    let seen = std::fs::read_to_string(root(db).join("etc/mstack.seen")).unwrap();
    assert!(
        seen.contains(&format!("client={web_ip}\n")),
        "db was reached through web: {seen}"
    );
    assert!(seen.contains(&format!("web={web_ip}\n")), "{seen}");
    assert!(seen.contains(&format!("own={db_ip}\n")), "{seen}");
    assert!(
        seen.contains("groups=mstack,mstack_db,site_main_site\n"),
        "{seen}"
    );
    assert!(seen.contains("secret=32\n"), "{seen}");
    // One stack run, in the first server's job log, with no secret in it.
    let runs = f.jobs_json(web, "stack_configure").await;
    assert!(!runs.is_empty());
    assert!(runs.iter().all(|j| j["state"] == "succeeded"), "{runs:?}");
    let log = f.job_log(runs[0]["id"].as_i64().unwrap()).await;
    assert!(log.contains("multistack.yml"), "{log}");
    assert!(log.contains("is reached through"), "{log}");

    // The panel can no longer reach db directly; the stack's run still
    // can, through web.
    let rule = HostRule::insert(&[
        "OUTPUT", "-d", &db_ip, "-p", "tcp", "--dport", "22", "-j", "REJECT",
    ]);
    assert!(
        !f.ssh_admin(db, "true").await.status.success(),
        "db is still reachable directly"
    );
    std::fs::remove_file(root(db).join("etc/mstack.seen")).unwrap();
    let before = runs.len();
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{web}/converge"),
            &f.owner,
            None,
        )
        .await;
    assert!(r.status == 202 || r.status == 200, "{}", r.json);
    f.settle_kind(web, "stack_configure", before).await;
    let seen = std::fs::read_to_string(root(db).join("etc/mstack.seen")).unwrap();
    assert!(seen.contains(&format!("client={web_ip}\n")), "{seen}");
    drop(rule);

    // Deleting one server deletes the stack; both addresses go back.
    let r = f
        .panel
        .call("DELETE", &format!("/api/v1/services/{db}"), &f.owner, None)
        .await;
    assert!(r.status == 202 || r.status == 200, "{}", r.json);
    f.wait_status(web, "deleted").await;
    f.wait_status(db, "deleted").await;
}
