//! System packages, end to end on the real container driver
//! (`systemd-nspawn` machines booted from the base image, apt pointed at
//! the full test hosts' local repository): a platform admin allows `tree`
//! and `less`; the site admin's pick of `htop`, which is in the repository
//! but not on the list, is refused and never reaches the server; picking
//! `tree` and `less` makes the `packages` job's role run
//! (`playbooks/packages.yml`, `roles/mwspackages`) install `tree`; one more
//! run changes nothing, and neither does ansible-playbook 2.19 on the same
//! inventory; when both are unpicked, `tree` (which the role installed) is
//! removed and `less` (which the image had) stays. Needs root and the built
//! image; skips otherwise, or fails when `KEEL_REQUIRE_REAL` is set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api_support::Cred;
use flow_support::{FlowPanel, WAIT};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The service's `packages` jobs, as the API shows them.
async fn packages_jobs(f: &FlowPanel, id: i64) -> Vec<Value> {
    f.service(id).await["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "packages")
        .cloned()
        .collect()
}

/// Waits until more than `before` packages jobs exist and all have
/// finished; each must have succeeded. Returns how many there are.
async fn settle(f: &FlowPanel, id: i64, before: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let jobs = packages_jobs(f, id).await;
        if jobs.len() > before
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
            "packages jobs still running: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The `after` of the newest `service.packages_applied` audit row.
async fn last_applied(f: &FlowPanel, id: i64) -> Value {
    let r = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=200"),
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await;
    r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service.packages_applied")
        .max_by_key(|e| e["id"].as_i64().unwrap())
        .map(|e| serde_json::from_str(e["after_json"].as_str().unwrap()).unwrap())
        .expect("a packages_applied row")
}

/// Whether dpkg on the container says `name` is installed.
fn installed(root: &Path, name: &str) -> bool {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    status.split("\n\n").any(|stanza| {
        stanza.lines().any(|l| l == format!("Package: {name}"))
            && stanza.lines().any(|l| l == "Status: install ok installed")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_package_is_installed_and_a_disallowed_one_refused() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let playbook = repo().join("playbooks/packages.yml");
    let mut f = FlowPanel::start_with(51, 1, move |c| c.sites.packages_playbook = playbook).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    f.wait_status(id, "ready").await;
    let vm = f.prov.vm_name(id);
    let root = f.driver.root_dir(&vm);
    f.use_local_repo(id);
    assert!(installed(&root, "less") && !installed(&root, "tree"));
    assert!(!installed(&root, "htop"));

    let admin = Cred::Bearer(f.admin_token.clone());
    for (name, description) in [
        ("tree", "directory listings as a tree"),
        ("less", "a pager"),
    ] {
        let r = f
            .panel
            .call(
                "POST",
                "/api/v1/admin/packages",
                &admin,
                Some(json!({"name": name, "description": description})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let url = format!("/api/v1/services/{id}/packages");

    // htop is in the repository, but not on the list: refused, no job.
    let r = f
        .panel
        .call("PUT", &url, &f.owner, Some(json!({"packages": ["htop"]})))
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("\"htop\" is not in the list of allowed packages"),
        "{}",
        r.json
    );
    assert!(packages_jobs(&f, id).await.is_empty());

    // The allowed ones are installed by the role run.
    let r = f
        .panel
        .call(
            "PUT",
            &url,
            &f.owner,
            Some(json!({"packages": ["tree", "less"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let mut jobs = settle(&f, id, 0).await;
    let applied = last_applied(&f, id).await;
    assert!(applied["changed"].as_i64().unwrap() > 0, "{applied}");
    assert_eq!(applied["packages"], json!(["less", "tree"]));
    assert!(installed(&root, "tree"));
    assert!(root.join("usr/bin/tree").is_file());
    assert!(!installed(&root, "htop"));
    let state = std::fs::read_to_string(root.join("var/lib/keel/packages")).unwrap();
    assert_eq!(
        state
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        ["tree"],
        "only what the role installed is its own: {state}"
    );

    // One more run finds everything in place.
    let r = f
        .panel
        .call(
            "PUT",
            &url,
            &f.owner,
            Some(json!({"packages": ["less", "tree"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    jobs = settle(&f, id, jobs).await;
    assert_eq!(last_applied(&f, id).await["changed"], 0);

    // So does ansible-playbook 2.19 on the panel's inventory for this host.
    let inventory = f
        .panel
        .call("GET", "/api/v1/inventory", &admin, None)
        .await
        .json;
    let dir = tempfile::tempdir().unwrap();
    if let Some(text) = f.ansible_run(
        dir.path(),
        &inventory,
        &vm,
        &repo().join("playbooks/packages.yml"),
    ) {
        assert!(text.contains("changed=0"), "{text}");
        assert!(text.contains("failed=0"), "{text}");
    }

    // Unpicked: the role's own package goes, the image's stays.
    let r = f
        .panel
        .call("PUT", &url, &f.owner, Some(json!({"packages": []})))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    settle(&f, id, jobs).await;
    assert!(last_applied(&f, id).await["changed"].as_i64().unwrap() > 0);
    assert!(!installed(&root, "tree"));
    assert!(!root.join("usr/bin/tree").exists());
    assert!(installed(&root, "less"));
}
