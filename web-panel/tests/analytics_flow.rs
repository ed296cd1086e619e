//! System analytics end to end on the real container driver
//! (`systemd-nspawn`, apt pointed at the full test hosts' local
//! repository): the server is configured with the shipped
//! `playbooks/site.yml` (its `metrics_service` role installs
//! prometheus-node-exporter, listening on the loopback only) and gets a
//! vhost (`roles/mwsvhosts`: Apache with mod_status). The collector
//! (`metrics_collect`'s body, called directly, the test's clock moved a
//! minute between readings) reads the driver's cgroup and network figures
//! and, through the server's SSH connection, the exporter and Apache's
//! status page; HTTP requests sent meanwhile show as requests per second.
//! The API's hour series has CPU, memory, disk use, network and HTTP
//! figures. Then a headless Chromium signs in as the site admin, follows
//! the server page's link to the graphs page, finds every graph drawn
//! with more than one point, and saves a screenshot to
//! `target/screenshots/analytics-graphs.png`. Needs root and the built
//! image; skips otherwise, or fails when `KEEL_REQUIRE_REAL` is set.

mod api_support;
mod browser_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flow_support::FlowPanel;
use keel_panel::provision::steps::metrics;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Until the local repository is in the container, the configure run
/// does nothing (the shipped roles would need the internet).
const WAITING: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: wait for the local repository\n      ansible.builtin.debug:\n        msg: nothing yet\n";

fn curl(name: &str, ip: &str) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "10", "--resolve"])
        .arg(format!("{name}:80:{ip}"))
        .arg(format!("http://{name}/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {name}: {out:?}");
}

async fn series(f: &FlowPanel, id: i64) -> Value {
    let r = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/services/{id}/metrics?range=hour"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_figures_are_graphed() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("site.yml");
    std::fs::write(&playbook, WAITING).unwrap();
    let (pb, vhosts) = (playbook.clone(), repo().join("playbooks/vhosts.yml"));
    let mut f = FlowPanel::start_with(61, 1, move |c| {
        c.hypervisor.playbook = pb;
        c.sites.vhosts_playbook = vhosts;
    })
    .await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let detail = f.wait_status(id, "ready").await;
    let ip = detail["ipv4"].as_str().unwrap().to_string();

    // The shipped site playbook, now that apt has the local repository.
    f.use_local_repo(id);
    std::fs::write(
        &playbook,
        format!(
            "- import_playbook: {}\n",
            repo().join("playbooks/site.yml").display()
        ),
    )
    .unwrap();
    let configures = f.jobs_json(id, "configure").await.len();
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/converge"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    f.settle_kind(id, "configure", configures).await;
    // The exporter answers on the loopback only.
    let out = f.ssh_admin(id, "ss -Hltn").await;
    let listening = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listening.contains("127.0.0.1:9100"), "{listening}");
    assert!(
        !listening.contains("*:9100") && !listening.contains("0.0.0.0:9100"),
        "{listening}"
    );

    // A web site, so Apache (with mod_status) runs.
    let name = "graphs61.example.org";
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts"),
            &f.owner,
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    f.settle_kind(id, "vhosts", 0).await;
    curl(name, &ip);

    // Four readings a minute apart on the test's clock, with requests
    // between them.
    for round in 0..4 {
        if round > 0 {
            for _ in 0..20 {
                curl(name, &ip);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            f.panel.clock.advance(Duration::from_secs(60));
        }
        let done = metrics::collect(&f.prov).await.unwrap();
        assert_eq!((done.read, done.failed), (1, 0), "round {round}: {done:?}");
    }

    let s = series(&f, id).await;
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "{s}");
    for p in &points[1..] {
        for field in [
            "cpu_pct",
            "mem_used",
            "mem_total",
            "disk_used",
            "disk_total",
            "net_rx_bps",
            "net_tx_bps",
            "http_rps",
        ] {
            assert!(p[field].is_number(), "{field} missing: {p}");
        }
        let cpu = p["cpu_pct"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&cpu), "{p}");
        assert!(p["mem_used"].as_f64().unwrap() > 0.0, "{p}");
        assert!(
            p["disk_used"].as_f64().unwrap() > 0.0
                && p["disk_used"].as_f64() < p["disk_total"].as_f64(),
            "{p}"
        );
        // The requests sent between two readings (at least 20 in 60 s).
        assert!(p["http_rps"].as_f64().unwrap() >= 20.0 / 60.0, "{p}");
        assert!(p["net_rx_bps"].as_f64().unwrap() > 0.0, "{p}");
    }

    // The graphs page in a real browser.
    let b = browser_support::Driver::start().await;
    b.goto(&format!("{}/login", f.panel.base)).await;
    b.type_into("#name", "owner").await;
    b.type_into("#password", "owner-password").await;
    b.click("#login").await;
    b.goto(&format!("{}/servers/{id}", f.panel.base)).await;
    b.click("#graphs-link a").await;
    assert!(
        b.url().await.ends_with(&format!("/servers/{id}/graphs")),
        "{}",
        b.url().await
    );
    for g in ["cpu", "memory", "disk", "network", "http"] {
        let n = b
            .script(&format!(
                "const l = document.querySelector('#graph-{g} svg polyline'); \
                 return l ? l.points.numberOfItems : 0;"
            ))
            .await;
        assert!(n.as_u64().unwrap_or(0) > 1, "graph {g} has {n} points");
    }
    let shot = b.screenshot("analytics-graphs").await;
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 10_000, "{} is only {size} bytes", shot.display());
    eprintln!("screenshot: {}", shot.display());
    b.cmd("DELETE", "", None).await;
}
