//! Several hypervisor hosts, end to end on the real container driver: two
//! nspawn hosts (`hv-a`, room for two servers; `hv-b`, room for one), each
//! a driver of its own with its own machine directory, behind one panel.
//!
//! - **Placement** across both hosts: three servers, two on `hv-a` and one
//!   on `hv-b`, each container in its own host's directory only; each
//!   becomes ready through its own host's driver.
//! - **Capacity**: a fourth is refused with 409 `no_capacity`, naming each
//!   host's shortfall, and holds nothing.
//! - **Draining**: with `hv-b` draining, the server deleted from it gives
//!   its room back, but a new server is still refused ("hv-b is draining").
//! - **Cold migration**: a running server cannot be moved; once powered
//!   off, it is moved from `hv-a` to `hv-b`: its files are copied, it is
//!   deleted from `hv-a`, started on `hv-b`, and its host key checked
//!   (`check_reachable`); SSH with the panel's pinned key works afterwards
//!   and a file written before the move is still there.
//! - **A down host** (marked down, and one whose `list` fails): a delete of
//!   a server on it waits (no driver call, no address released, the
//!   container stays), the server shows `host_down`, and reconciliation
//!   skips the host entirely (no deletion, nothing reported missing, no
//!   compensation); once the host is back, the delete goes through.
//!
//! Needs root and the built image; skips otherwise, or fails when
//! `KEEL_REQUIRE_REAL` is set. Addresses from 10.233.91.0/24.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_support::Cred;
use flow_support::{FlowPanel, WAIT};
use keel_panel::config::HostConfig;
use keel_panel::hypervisor::faulty::FaultyDriver;
use keel_panel::hypervisor::nspawn::NspawnDriver;
use keel_panel::provision::HostDrivers;
use serde_json::{json, Value};

fn host(name: &str, vcpus: u64) -> HostConfig {
    HostConfig {
        name: name.to_string(),
        driver: "nspawn".to_string(),
        vcpus,
        ..HostConfig::default()
    }
}

fn driver_of(f: &FlowPanel, host: &str) -> Arc<NspawnDriver> {
    f.host_drivers
        .iter()
        .find(|(n, _)| n == host)
        .map(|(_, d)| d.clone())
        .unwrap()
}

fn exists_on(f: &FlowPanel, host: &str, vm: &str) -> bool {
    driver_of(f, host)
        .container_dir(vm)
        .join("meta.json")
        .exists()
}

async fn hosts(f: &FlowPanel) -> Value {
    f.panel
        .call("GET", "/api/v1/admin/hosts", &admin(f), None)
        .await
        .json
}

fn admin(f: &FlowPanel) -> Cred {
    Cred::Bearer(f.admin_token.clone())
}

async fn set_state(f: &FlowPanel, host: &str, state: &str) {
    let r = f
        .panel
        .call(
            "PUT",
            &format!("/api/v1/admin/hosts/{host}/state"),
            &admin(f),
            Some(json!({ "state": state })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
}

async fn try_create(f: &FlowPanel) -> api_support::Reply {
    f.panel
        .call(
            "POST",
            "/api/v1/services",
            &f.owner,
            Some(json!({"site_id": f.site, "server_type": "small"})),
        )
        .await
}

async fn allocated(f: &FlowPanel) -> i64 {
    let pools = f
        .panel
        .call("GET", "/api/v1/admin/pools", &admin(f), None)
        .await;
    pools.json[0]["allocated"].as_i64().unwrap()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_placement_capacity_draining_migration_and_a_down_host() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let mut f = FlowPanel::start_with(91, 6, |c| {
        c.hypervisor.driver = "none".into();
        // The server type takes 1 vCPU: two fit on hv-a, one on hv-b.
        c.hypervisor.hosts = vec![host("hv-a", 2), host("hv-b", 1)];
    })
    .await;
    f.worker(&["hypervisor", "default"]);

    // Placement: the host with the most room left first.
    let s1 = f.create().await;
    let s2 = f.create().await;
    let s3 = f.create().await;
    let mut on = std::collections::HashMap::new();
    for id in [s1, s2, s3] {
        let d = f.wait_status(id, "ready").await;
        on.insert(id, d["host"].as_str().unwrap().to_string());
    }
    assert_eq!(
        (on[&s1].as_str(), on[&s2].as_str(), on[&s3].as_str()),
        ("hv-a", "hv-a", "hv-b"),
        "{on:?}"
    );
    for id in [s1, s2, s3] {
        let vm = f.prov.vm_name(id);
        let other = if on[&id] == "hv-a" { "hv-b" } else { "hv-a" };
        assert!(exists_on(&f, &on[&id], &vm), "{vm} on {}", on[&id]);
        assert!(!exists_on(&f, other, &vm), "{vm} also on {other}");
    }
    let h = hosts(&f).await;
    assert_eq!(h[0]["name"], "hv-a");
    assert_eq!(
        (&h[0]["used_vcpus"], &h[1]["used_vcpus"]),
        (&json!(2), &json!(1))
    );

    // Capacity: no room anywhere; the refusal holds nothing.
    let before = allocated(&f).await;
    let r = try_create(&f).await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert_eq!(r.json["error"], "no_capacity");
    let msg = r.json["message"].as_str().unwrap();
    assert!(msg.contains("hv-a has 0 vCPUs free, 1 asked"), "{msg}");
    assert!(msg.contains("hv-b has 0 vCPUs free, 1 asked"), "{msg}");
    assert_eq!(allocated(&f).await, before);

    // Draining: hv-b keeps its server but takes no new one, even with room.
    set_state(&f, "hv-b", "draining").await;
    let r = f
        .panel
        .call("DELETE", &format!("/api/v1/services/{s3}"), &f.owner, None)
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    f.wait_status(s3, "deleted").await;
    assert!(!exists_on(&f, "hv-b", &f.prov.vm_name(s3)));
    let h = hosts(&f).await;
    assert_eq!(
        (&h[1]["used_vcpus"], &h[1]["servers"]),
        (&json!(0), &json!(0))
    );
    let r = try_create(&f).await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("hv-b is draining"),
        "{}",
        r.json
    );
    set_state(&f, "hv-b", "active").await;

    // Cold migration of s1 from hv-a to hv-b.
    let marker = format!("before the move {}", fastrand::u64(..));
    let out = f
        .ssh_admin(
            s1,
            &format!("echo '{marker}' | sudo tee /root/moved >/dev/null && sync"),
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let migrate = |id: i64, to: &'static str| {
        let p = &f.panel;
        let cred = admin(&f);
        async move {
            p.call(
                "POST",
                &format!("/api/v1/services/{id}/migrate"),
                &cred,
                Some(json!({ "host": to })),
            )
            .await
        }
    };
    let r = migrate(s1, "hv-b").await;
    assert_eq!(
        r.status, 409,
        "a running nspawn server cannot move: {}",
        r.json
    );
    assert!(
        r.json["message"].as_str().unwrap().contains("power it off"),
        "{}",
        r.json
    );
    let r = migrate(s1, "hv-a").await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["field"], "host");
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{s1}/power"),
            &f.owner,
            Some(json!({"action": "power_off"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    wait_for("s1 stopped", async || {
        f.service(s1).await["vm"]["power_state"] == "stopped"
    })
    .await;
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{s1}/migrate"),
            &f.owner,
            Some(json!({ "host": "hv-b" })),
        )
        .await;
    assert_eq!(r.status, 403, "site admins do not move servers: {}", r.json);
    let r = migrate(s1, "hv-b").await;
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(r.json["mode"], "cold");
    // The target's room is taken at once.
    let h = hosts(&f).await;
    assert_eq!(h[1]["used_vcpus"], 1, "{h}");
    let vm1 = f.prov.vm_name(s1);
    wait_for("s1 moved, running and checked", async || {
        let d = f.service(s1).await;
        d["host"] == "hv-b"
            && d["vm"]["power_state"] == "running"
            && d["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["kind"] == "migrate" && j["state"] == "succeeded")
    })
    .await;
    assert!(exists_on(&f, "hv-b", &vm1));
    assert!(!exists_on(&f, "hv-a", &vm1), "the source's copy is deleted");
    let out = f.ssh_admin(s1, "sudo cat /root/moved").await;
    assert!(
        out.status.success(),
        "pinned host key after the move: {out:?}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), marker);
    let h = hosts(&f).await;
    assert_eq!(
        (&h[0]["used_vcpus"], &h[1]["used_vcpus"]),
        (&json!(1), &json!(1))
    );

    // A down host: s2 is on hv-a. Its delete waits; nothing is released.
    let vm2 = f.prov.vm_name(s2);
    set_state(&f, "hv-a", "down").await;
    assert_eq!(f.service(s2).await["host_down"], true);
    let allocated_before = allocated(&f).await;
    let r = f
        .panel
        .call("DELETE", &format!("/api/v1/services/{s2}"), &f.owner, None)
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    // The deprovision job runs and is told the host is down (retryable).
    wait_for("deprovision attempted", async || {
        f.jobs_json(s2, "deprovision")
            .await
            .iter()
            .any(|j| j["attempts"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.service(s2).await["status"], "deleting");
    assert!(exists_on(&f, "hv-a", &vm2), "no driver call to a down host");
    assert_eq!(allocated(&f).await, allocated_before, "no address released");

    // Reconciliation skips the down host: the orphan-looking s2 (being
    // deleted) and everything else on hv-a stay.
    let report = keel_panel::reconcile::reconcile_hosts(
        f.panel.db(),
        &f.prov.hosts,
        &f.panel.state.config.hypervisor.vm_prefix,
    )
    .await
    .unwrap();
    assert_eq!(report.hosts_skipped, ["hv-a"], "{report:?}");
    assert!(report.orphans_deleted.is_empty(), "{report:?}");
    assert!(
        report.missing.is_empty() && report.compensated.is_empty(),
        "{report:?}"
    );
    assert!(exists_on(&f, "hv-a", &vm2));

    // A host that is active but cannot be listed: every call to it fails.
    let mut failing = HostDrivers::default();
    let broken = NspawnDriver::new(driver_of(&f, "hv-a").config().clone());
    failing.insert("hv-a", Arc::new(FaultyDriver::new(broken, 1.0, 7)));
    failing.insert("hv-b", driver_of(&f, "hv-b"));
    // Active again for the pass. The delete's retry is due only when the
    // test moves the panel's clock, so it waits meanwhile.
    set_state(&f, "hv-a", "active").await;
    let report = keel_panel::reconcile::reconcile_hosts(
        f.panel.db(),
        &failing,
        &f.panel.state.config.hypervisor.vm_prefix,
    )
    .await
    .unwrap();
    assert_eq!(report.hosts_unreachable, ["hv-a"], "{report:?}");
    assert!(report.orphans_deleted.is_empty(), "{report:?}");
    assert!(
        report.missing.is_empty() && report.compensated.is_empty(),
        "{report:?}"
    );
    // s1 on hv-b is seen where it should be.
    assert!(!report.missing.contains(&s1));

    assert!(exists_on(&f, "hv-a", &vm2));
    assert_eq!(f.service(s2).await["status"], "deleting");

    // Back up: the retry comes due, the delete goes through, the room and
    // the address come back.
    f.panel.clock.advance(Duration::from_secs(5));
    f.wait_status(s2, "deleted").await;
    assert!(!exists_on(&f, "hv-a", &vm2));
    assert_eq!(allocated(&f).await, allocated_before - 1);
    let h = hosts(&f).await;
    assert_eq!(
        (&h[0]["used_vcpus"], &h[0]["servers"]),
        (&json!(0), &json!(0))
    );

    for id in [s1] {
        let r = f
            .panel
            .call("DELETE", &format!("/api/v1/services/{id}"), &f.owner, None)
            .await;
        assert_eq!(r.status, 202, "{}", r.json);
        f.wait_status(id, "deleted").await;
    }
}
