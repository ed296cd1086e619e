//! "Clone production to test", end to end on the real container driver
//! (`systemd-nspawn`): a production server is made ready, a file is written
//! on it over SSH, its test server is made (its own hostname and address
//! from the pool), and a site admin asks for a clone with the test
//! server's hostname typed. The `clone` job copies production's disk into
//! the test server, which boots with its own identity, calls back and has
//! its roles run again. Then the test server:
//! - answers SSH with its own new host key, pinned by the panel (strict
//!   checking against the panel's known_hosts), which is neither
//!   production's nor its own key from before the clone, and is exactly
//!   what `ssh-keyscan` sees at its address;
//! - says its own hostname and carries its own address on eth0, not
//!   production's;
//! - has production's file;
//! - had its roles run again with its own inventory (`/etc/keel-provisioned`
//!   names it), and its clone is `done`.
//!
//! Production is untouched: same host key, same hostname. Needs root and
//! the built image; skips otherwise, or fails when `KEEL_REQUIRE_REAL` is
//! set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::process::Command;

use flow_support::FlowPanel;
use serde_json::json;

/// The host key the panel holds for a server (`ssh-ed25519 AAAA…`).
async fn pinned_key(f: &FlowPanel, id: i64) -> String {
    let mut rc = f.panel.db().read().await.unwrap();
    let key = keel_panel::scalar!(
        &mut rc.conn(),
        String,
        "SELECT host_key_public FROM vm_provisioning WHERE service_id = $1",
        id
    )
    .unwrap()
    .unwrap();
    key_body(&key)
}

/// `type base64`, without the comment.
fn key_body(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ed25519 host key the server at `ip` presents, as `ssh-keyscan` sees it.
fn scanned_key(ip: &str) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-T", "10", ip])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("ssh-ed25519"))
        .unwrap_or_else(|| panic!("ssh-keyscan {ip} saw no key: {out:?}"));
    // `host type base64`
    line.split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn ssh_text(f: &FlowPanel, id: i64, command: &str) -> String {
    let out = f.ssh_admin(id, command).await;
    assert!(out.status.success(), "{command}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_carries_production_content_under_the_test_servers_own_identity() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let mut f = FlowPanel::start(71, 2).await;
    f.worker(&["hypervisor", "default"]);
    let prod = f.create().await;
    let pd = f.wait_status(prod, "ready").await;
    let prod_host = pd["hostname"].as_str().unwrap().to_string();
    let prod_ip = pd["ipv4"].as_str().unwrap().to_string();
    let prod_key = pinned_key(&f, prod).await;

    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{prod}/test-server"),
            &f.owner,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let test = r.json["service"]["id"].as_i64().unwrap();
    let td = f.wait_status(test, "ready").await;
    let test_host = td["hostname"].as_str().unwrap().to_string();
    let test_ip = td["ipv4"].as_str().unwrap().to_string();
    assert_ne!(test_host, prod_host);
    assert_ne!(test_ip, prod_ip);
    let old_test_key = pinned_key(&f, test).await;
    assert_ne!(old_test_key, prod_key);

    // Production's content.
    let marker = format!("production data {}", fastrand::u64(..));
    ssh_text(
        &f,
        prod,
        &format!("echo '{marker}' | sudo tee /root/prod-file >/dev/null"),
    )
    .await;
    let out = f.ssh_admin(test, "sudo test -e /root/prod-file").await;
    assert_eq!(out.status.code(), Some(1), "not on test yet: {out:?}");

    let configures = f.jobs_of_kind(test, "configure").await;
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{test}/clone"),
            &f.owner,
            Some(json!({ "confirm": test_host })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    let job = r.json["job_id"].as_i64().unwrap();
    f.settle_kind(test, "clone", 0).await;
    f.settle_kind(test, "configure", configures).await;
    let after = f.wait_status(test, "ready").await;
    assert_eq!(after["hostname"], test_host.as_str());
    assert_eq!(after["ipv4"], test_ip.as_str());

    // Its own new host key, pinned by the panel, and the one it presents.
    let new_key = pinned_key(&f, test).await;
    assert_ne!(new_key, prod_key, "never production's host key");
    assert_ne!(new_key, old_test_key, "new host keys for the copy");
    assert_eq!(scanned_key(&test_ip), new_key);
    assert_eq!(scanned_key(&prod_ip), prod_key);
    // `ssh_admin` checks strictly against the panel's known_hosts.
    let shown = ssh_text(&f, test, "hostname").await;
    assert!(
        test_host.split('.').next() == Some(shown.as_str()),
        "{shown} vs {test_host}"
    );
    let addrs = ssh_text(&f, test, "ip -o -4 addr show dev eth0").await;
    assert!(addrs.contains(&format!("{test_ip}/")), "{addrs}");
    assert!(!addrs.contains(&format!("{prod_ip}/")), "{addrs}");
    assert_eq!(ssh_text(&f, test, "sudo cat /root/prod-file").await, marker);
    let keys = ssh_text(&f, test, "sudo cat /etc/ssh/ssh_host_ed25519_key.pub").await;
    assert_eq!(key_body(&keys), new_key);

    // The roles ran again, with the test server's own inventory.
    let provisioned = std::fs::read_to_string(f.role_file(test)).unwrap();
    assert!(provisioned.starts_with(&test_host), "{provisioned}");

    // Production is untouched.
    assert_eq!(pinned_key(&f, prod).await, prod_key);
    let shown = ssh_text(&f, prod, "hostname").await;
    assert!(prod_host.starts_with(&shown), "{shown} vs {prod_host}");

    // The record: the clone is done, the status went round, and the audit
    // log has the request, the take-over and the copy with its new key.
    let pair = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/services/{test}/test-server"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(pair.json["clone"]["state"], "done", "{}", pair.json);
    assert_eq!(pair.json["clone"]["job_id"], job);
    let history = f.status_history(test).await;
    let tail: Vec<&str> = history
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        ["creating_vm", "installing_os", "configuring", "ready"],
        "{history:?}"
    );
    assert_eq!(f.audit_after(test, "service.clone_request").await.len(), 1);
    assert_eq!(f.audit_after(test, "service.clone_started").await.len(), 1);
    let cloned = f.audit_after(test, "service.cloned").await;
    assert_eq!(cloned.len(), 1, "{cloned:?}");
    assert_eq!(cloned[0]["source_id"], prod);
    assert_eq!(key_body(cloned[0]["host_key"].as_str().unwrap()), new_key);
    let log = f.job_log(job).await;
    assert!(log.contains("copy of"), "{log}");
}
