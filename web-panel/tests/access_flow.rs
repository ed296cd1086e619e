//! The people on a server, end to end on the real container driver
//! (`systemd-nspawn` machines booted from the base image): a server becomes
//! ready; a site admin and an SSH-only user, each created in the panel, add
//! an SSH key through the API; the `access` job's role run
//! (`playbooks/access.yml`, `roles/mwsusers`) puts both on the container;
//! `ssh` as each logs in, `sudo -n true` works for the admin and fails for
//! the SSH-only user; a second run changes nothing, and neither does
//! ansible-playbook 2.19 on the same inventory; after the key is removed
//! (and the admin taken off the site) the login fails, the account is gone
//! and its home directory is kept. Needs root and the built image; skips
//! otherwise, or fails when `KEEL_REQUIRE_REAL` is set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use api_support::Cred;
use flow_support::{FlowPanel, WAIT};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh ed25519 key pair in `dir`; returns (private key path, public line).
fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    keypair_with_comment(dir, name, &format!("{name}@test"))
}

fn keypair_with_comment(dir: &Path, name: &str, comment: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(comment)
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

/// `ssh user@ip command` with only `key`, trusting only the VM's recorded
/// host key.
fn ssh(known_hosts: &Path, key: &Path, user: &str, ip: &str, command: &str) -> Output {
    Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args([
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args(["-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(key)
        .arg(format!("{user}@{ip}"))
        .arg(command)
        .output()
        .unwrap()
}

/// The service's `access` jobs, newest first, as the API shows them.
async fn access_jobs(f: &FlowPanel, id: i64) -> Vec<Value> {
    let detail = f.service(id).await;
    detail["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "access")
        .cloned()
        .collect()
}

/// Waits until every access job of the service has finished; returns how
/// many there are. Fails on one that did not succeed.
async fn settle(f: &FlowPanel, id: i64) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let jobs = access_jobs(f, id).await;
        if !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| j["state"] != "queued" && j["state"] != "running")
        {
            for j in &jobs {
                assert_eq!(j["state"], "succeeded", "{j}");
            }
            return jobs.len();
        }
        assert!(
            Instant::now() < deadline,
            "access jobs still running: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The `changed` count of the newest `service.access_applied` audit row.
async fn last_changed(f: &FlowPanel, id: i64) -> i64 {
    let r = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=200"),
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await;
    let entry = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service.access_applied")
        .max_by_key(|e| e["id"].as_i64())
        .cloned()
        .expect("an access_applied audit row");
    let after: Value = serde_json::from_str(entry["after_json"].as_str().unwrap()).unwrap();
    after["changed"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_added_in_the_panel_log_in_and_removed_keys_do_not() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let playbook = repo().join("playbooks/access.yml");
    let mut f = FlowPanel::start_with(31, 1, move |c| c.access.playbook = playbook).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let detail = f.wait_status(id, "ready").await;
    let ip = detail["ipv4"].as_str().unwrap().to_string();
    let vm = f.prov.vm_name(id);
    let known = f.prov.known_hosts_path(&vm);
    let root = f.driver.root_dir(&vm);
    let dir = tempfile::tempdir().unwrap();

    // Two people created in the panel: a site admin and an SSH-only user.
    let (_, ann_t) = f.panel.user("ann", false).await;
    let (_, bob_t) = f.panel.user("bob", false).await;
    let (ann, bob) = (Cred::Bearer(ann_t), Cred::Bearer(bob_t));
    for (user, role) in [("ann", "admin"), ("bob", "ssh")] {
        let r = f
            .panel
            .call(
                "PUT",
                &format!("/api/v1/sites/{}/members", f.site),
                &f.owner,
                Some(json!({"user": user, "role": role})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/sites/{}/unix-groups", f.site),
            &f.owner,
            Some(json!({"name": "devs"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let devs_gid = r.json["gid"].as_i64().unwrap();
    let r = f
        .panel
        .call(
            "PUT",
            &format!(
                "/api/v1/sites/{}/unix-groups/{}/members",
                f.site, r.json["id"]
            ),
            &f.owner,
            Some(json!({"user": "bob"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);

    // Each adds a key of their own. Ann's comment is a template: the
    // access role must write it as text, not run its lookup on the panel's
    // machine (the inventory hands it over as `__ansible_unsafe`).
    let marker = dir.path().join("lookup-ran");
    let (ann_key, ann_pub) = keypair_with_comment(
        dir.path(),
        "ann",
        &format!("{{{{ lookup('pipe', 'touch {}') }}}}", marker.display()),
    );
    let (bob_key, bob_pub) = keypair(dir.path(), "bob");
    let mut bob_key_id = 0;
    for (cred, line) in [(&ann, &ann_pub), (&bob, &bob_pub)] {
        let r = f
            .panel
            .call(
                "POST",
                "/api/v1/me/ssh-keys",
                cred,
                Some(json!({"public_key": line})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        bob_key_id = r.json["id"].as_i64().unwrap();
    }
    let runs = settle(&f, id).await;
    // Six changes, coalesced: one run waiting takes them all, so at most
    // one more than were running when a change came.
    assert!(runs <= 3, "{runs} access runs for six quick changes");
    eprintln!("{runs} access run(s) for six changes");

    // The keys reached the container; ssh logs in as each.
    let authorized = std::fs::read_to_string(root.join("home/ann/.ssh/authorized_keys")).unwrap();
    assert_eq!(authorized.trim(), ann_pub);
    assert!(!marker.exists(), "a key comment was templated");
    let out = ssh(
        &known,
        &ann_key,
        "ann",
        &ip,
        "id -u; sudo -n true && echo SUDO-OK",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "ann: {out:?}");
    assert!(text.contains("SUDO-OK"), "{text}");
    let out = ssh(&known, &bob_key, "bob", &ip, "id; sudo -n true");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "bob has sudo: {out:?}");
    assert!(text.contains(&format!("{devs_gid}(devs)")), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password is required"),
        "{out:?}"
    );
    let out = ssh(&known, &bob_key, "bob", &ip, "true");
    assert!(out.status.success(), "bob cannot log in: {out:?}");

    // The UIDs are the panel's, and the server page says who logs in.
    let access = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/services/{id}/access"),
            &f.owner,
            None,
        )
        .await
        .json;
    let logins = access["logins"].as_array().unwrap();
    let ann_uid = logins.iter().find(|l| l["name"] == "ann").unwrap()["uid"]
        .as_i64()
        .unwrap();
    let out = ssh(&known, &ann_key, "ann", &ip, "id -u");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ann_uid.to_string()
    );
    assert_eq!(access["last_run"]["state"], "succeeded", "{access}");
    let sshd =
        std::fs::read_to_string(root.join("etc/ssh/sshd_config.d/00-keel-access.conf")).unwrap();
    assert!(sshd.contains("PasswordAuthentication no"), "{sshd}");

    // Idempotent: another run changes nothing, and ansible-playbook agrees.
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/access"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    settle(&f, id).await;
    assert_eq!(last_changed(&f, id).await, 0);
    let inventory = f
        .panel
        .call(
            "GET",
            "/api/v1/inventory",
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await
        .json;
    if let Some(text) = f.ansible_run(
        dir.path(),
        &inventory,
        &vm,
        &repo().join("playbooks/access.yml"),
    ) {
        assert!(
            text.contains("changed=0") && text.contains("failed=0"),
            "{text}"
        );
    }

    // Bob's key goes, and Ann leaves the site: neither logs in any more.
    let r = f
        .panel
        .call(
            "DELETE",
            &format!("/api/v1/me/ssh-keys/{bob_key_id}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    let ann_id = f.panel.call("GET", "/api/v1/me", &ann, None).await.json["id"]
        .as_i64()
        .unwrap();
    let r = f
        .panel
        .call(
            "DELETE",
            &format!("/api/v1/sites/{}/members/{}", f.site, ann_id),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    settle(&f, id).await;
    let out = ssh(&known, &bob_key, "bob", &ip, "true");
    assert!(!out.status.success(), "bob still logs in: {out:?}");
    let out = ssh(&known, &ann_key, "ann", &ip, "true");
    assert!(!out.status.success(), "ann still logs in: {out:?}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(!passwd.contains("\nann:"), "{passwd}");
    assert!(passwd.contains("\nbob:"), "{passwd}");
    assert!(root.join("home/ann").is_dir(), "ann's home is kept");
    assert!(!root.join("home/bob/.ssh/authorized_keys").exists());
}

/// The state of job `job` as the server's job list shows it.
async fn job_state(f: &FlowPanel, id: i64, job: i64) -> String {
    f.service(id).await["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job)
        .map(|j| j["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running access job cancelled through the API: its role run finishes
/// the task in progress, starts no other, and the job ends `cancelled`.
/// Only its owner (or a platform admin) may cancel it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_role_run_stops_it_between_tasks() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("slow.yml");
    std::fs::write(
        &playbook,
        "- hosts: all\n  gather_facts: false\n  tasks:\n\
         \x20   - name: first\n      copy: {dest: /etc/keel-cancel-1, content: \"1\\n\"}\n\
         \x20   - name: slow\n      command: sleep 4\n\
         \x20   - name: last\n      copy: {dest: /etc/keel-cancel-3, content: \"3\\n\"}\n",
    )
    .unwrap();
    let mut f = FlowPanel::start_with(32, 1, move |c| c.access.playbook = playbook).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    f.wait_status(id, "ready").await;
    let root = f.driver.root_dir(&f.prov.vm_name(id));
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/access"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    let job = r.json["job_id"].as_i64().unwrap();
    wait_for("the first task", async || {
        root.join("etc/keel-cancel-1").exists()
    })
    .await;

    // Someone else may not cancel it; its owner may.
    let (_, other) = f.panel.user("mallory", false).await;
    let cancel = format!("/api/v1/jobs/{job}/cancel");
    let r = f
        .panel
        .call("POST", &cancel, &Cred::Bearer(other), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    let r = f.panel.call("POST", &cancel, &f.owner, None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["outcome"], "stopping", "{}", r.json);
    wait_for("the job to end", async || {
        !matches!(job_state(&f, id, job).await.as_str(), "running" | "queued")
    })
    .await;
    assert_eq!(job_state(&f, id, job).await, "cancelled");
    assert!(
        !root.join("etc/keel-cancel-3").exists(),
        "the task after the cancel ran"
    );
    // Cancelling a finished job is refused.
    let r = f.panel.call("POST", &cancel, &f.owner, None).await;
    assert_eq!(r.status, 409, "{}", r.json);
}

/// Suspending a site blocks logins on its servers, then shuts them down;
/// unsuspending starts them and lets people in again. Both are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_blocks_logins_and_stops_servers_unsuspend_restores_both() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let playbook = repo().join("playbooks/access.yml");
    let mut f = FlowPanel::start_with(33, 1, move |c| c.access.playbook = playbook).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let detail = f.wait_status(id, "ready").await;
    let ip = detail["ipv4"].as_str().unwrap().to_string();
    let vm = f.prov.vm_name(id);
    let known = f.prov.known_hosts_path(&vm);
    let root = f.driver.root_dir(&vm);
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "owner");
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/me/ssh-keys",
            &f.owner,
            Some(json!({"public_key": public})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    settle(&f, id).await;
    assert!(ssh(&known, &key, "owner", &ip, "true").status.success());

    let admin = Cred::Bearer(f.admin_token.clone());
    let suspend = format!("/api/v1/sites/{}/suspend", f.site);
    let r = f.panel.call("POST", &suspend, &f.owner, None).await;
    assert_eq!(r.status, 403, "site admins may not suspend: {}", r.json);
    let r = f.panel.call("POST", &suspend, &admin, None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["state"], "suspended");
    wait_for("the server to stop", async || {
        f.service(id).await["vm"]["power_state"] == "stopped"
    })
    .await;
    settle(&f, id).await;
    assert!(!ssh(&known, &key, "owner", &ip, "true").status.success());
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/power"),
            &f.owner,
            Some(json!({"action": "start"})),
        )
        .await;
    assert_eq!(r.status, 409, "suspended servers stay off: {}", r.json);
    let access = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/services/{id}/access"),
            &f.owner,
            None,
        )
        .await
        .json;
    assert_eq!(access["blocked"], true, "{access}");

    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/sites/{}/unsuspend", f.site),
            &admin,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    wait_for("the server to run", async || {
        f.service(id).await["vm"]["power_state"] == "running"
    })
    .await;
    // The start queued an access run, which lets people in again.
    wait_for("logins", async || {
        ssh(&known, &key, "owner", &ip, "true").status.success()
    })
    .await;
    settle(&f, id).await;
    let sshd =
        std::fs::read_to_string(root.join("etc/ssh/sshd_config.d/00-keel-access.conf")).unwrap();
    assert!(!sshd.contains("DenyGroups"), "{sshd}");
    let audit = f
        .panel
        .call(
            "GET",
            &format!(
                "/api/v1/admin/audit?object_type=site&object_id={}&limit=200",
                f.site
            ),
            &admin,
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
    for a in ["site.suspend", "site.unsuspend"] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
    // The run that blocked logins is on record.
    let blocked = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=200"),
            &admin,
            None,
        )
        .await
        .json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service.access_applied")
        .any(|e| {
            e["after_json"]
                .as_str()
                .unwrap_or("")
                .contains("\"blocked\":true")
        });
    assert!(blocked, "no access run blocked logins");
}
