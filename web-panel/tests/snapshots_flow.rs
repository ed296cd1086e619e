//! Snapshots and restore, end to end on the real container driver
//! (`systemd-nspawn`): a site admin takes a snapshot (a `snapshot` job on
//! the hypervisor queue), a file is written on the server over SSH, a
//! restore without the typed hostname is refused (422), with it the
//! `restore` job reverts the server; the file is gone, and the server still
//! answers on SSH with the host key the panel pinned (strict checking
//! against the panel's known_hosts) under its own hostname; the site's
//! people are applied again. Then retention: with `keep` 2, two more
//! snapshots leave two, in the panel and in the driver. The site's
//! schedule reaches the queue's scheduler as one daily interval per ready
//! server. Needs root and the built image; skips otherwise, or fails when
//! `KEEL_REQUIRE_REAL` is set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_support::FlowPanel;
use keel_panel::hypervisor::Driver;
use keel_panel::queue::cron::{Every, ScheduleSource};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn snapshots(f: &FlowPanel, id: i64) -> Vec<Value> {
    let r = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/services/{id}/snapshots"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json.as_array().unwrap().clone()
}

async fn take(f: &FlowPanel, id: i64, before: usize) -> usize {
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/snapshots"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    f.settle_kind(id, "snapshot", before).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_server_loses_later_files_and_keeps_its_identity() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let access = repo().join("playbooks/access.yml");
    let mut f = FlowPanel::start_with(53, 1, move |c| c.access.playbook = access).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let detail = f.wait_status(id, "ready").await;
    let hostname = detail["hostname"].as_str().unwrap().to_string();
    let vm = f.prov.vm_name(id);

    // The schedule the scheduler sees: daily by default.
    let schedules = keel_panel::services::snapshots::ScheduledSnapshots(f.panel.db().clone())
        .schedules()
        .await
        .unwrap();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].name, format!("snapshots:{id}"));
    assert!(
        matches!(schedules[0].every, Every::Interval(d) if d == Duration::from_secs(86_400)),
        "{:?}",
        schedules[0].every
    );
    assert_eq!(schedules[0].job.kind, "snapshot");

    let mut taken = take(&f, id, 0).await;
    let list = snapshots(&f, id).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["origin"], "manual");
    let snap = list[0]["id"].as_i64().unwrap();
    assert_eq!(f.driver.snapshot_list(&vm).await.unwrap().len(), 1);

    // A file written after the snapshot.
    let out = f
        .ssh_admin(id, "sudo sh -c 'echo later > /root/after-snapshot'")
        .await;
    assert!(out.status.success(), "{out:?}");
    assert!(f
        .ssh_admin(id, "sudo test -e /root/after-snapshot")
        .await
        .status
        .success());

    // A restore needs the hostname typed.
    let url = format!("/api/v1/services/{id}/snapshots/{snap}/restore");
    let r = f
        .panel
        .call("POST", &url, &f.owner, Some(json!({"confirm": "yes"})))
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["field"], "confirm");
    assert!(f.jobs_json(id, "restore").await.is_empty());
    let accesses = f.jobs_json(id, "access").await.len();
    let r = f
        .panel
        .call("POST", &url, &f.owner, Some(json!({"confirm": hostname})))
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    f.settle_kind(id, "restore", 0).await;

    // The file is gone; SSH answers with the pinned key (a changed key
    // would make ssh fail with 255, not `test` with 1), as the same host.
    let out = f.ssh_admin(id, "sudo test -e /root/after-snapshot").await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = f.ssh_admin(id, "hostname -f || hostname").await;
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        hostname.starts_with(&shown) || shown == hostname,
        "{shown} vs {hostname}"
    );
    let restored = f.audit_after(id, "service.restored").await;
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0]["snapshot"], list[0]["name"]);
    // The people are applied again after the restore.
    f.settle_kind(id, "access", accesses).await;
    assert_eq!(f.service(id).await["status"], "ready");

    // Retention: keep 2.
    let site = detail["site_id"].as_i64().unwrap();
    let r = f
        .panel
        .call(
            "PUT",
            &format!("/api/v1/sites/{site}/snapshot-schedule"),
            &f.owner,
            Some(json!({"every_secs": 86400, "keep": 2, "enabled": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    taken = take(&f, id, taken).await;
    take(&f, id, taken).await;
    let list = snapshots(&f, id).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|s| s["id"] != snap), "{list:?}");
    let mut names: Vec<String> = f
        .driver
        .snapshot_list(&vm)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    let mut want: Vec<String> = list
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(f.audit_after(id, "service.snapshot_expired").await.len(), 1);
}
