//! The acceptance test of the provisioning flow: a real `keel-panel serve`
//! process on SQLite with the libvirt driver (`qemu:///system`, TCG when KVM
//! is unusable), the demo data (`keel_panel::demo::seed`), and the shipped
//! `playbooks/site.yml`. Through the REST API with a token it creates a
//! server and follows it to `ready` (creating_vm → installing_os →
//! configuring → ready in the audit log, every step in the job history),
//! checks over SSH what the roles wrote, deletes the server and checks that
//! the domain, its files and the address are gone back.
//!
//! Prints the step timings (define, boot to callback, host-key check, roles,
//! total, the platform's own overhead). Needs root, libvirtd and the image;
//! skips otherwise.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_panel::alloc;
use keel_panel::auth::Passwords;
use keel_panel::demo;
use keel_panel::domain::{Page, Principal};
use keel_panel::hypervisor::libvirt::{LibvirtConfig, LibvirtDriver};
use keel_panel::hypervisor::{Driver, DriverError, ImageStore};
use keel_panel::services::sites;
use serde_json::Value;
use support::{Api, PanelProcess, Scratch, ServeConfig, Sweeper, IMAGE, IMAGES};

/// TCG boots take 35-40 s on an idle machine and minutes on a loaded one.
const READY_WAIT: Duration = Duration::from_secs(600);
const DELETE_WAIT: Duration = Duration::from_secs(300);
/// Short, so the test sees the address come back.
const QUARANTINE_SECS: i64 = 5;

fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .args(["-q", "-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("running virsh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `script` on the VM as the panel's admin user with the panel's key,
/// trusting only the host key the panel wrote to its known_hosts.
fn ssh(key: &Path, known_hosts: &Path, endpoint: std::net::SocketAddr, script: &str) -> String {
    let out = Command::new("ssh")
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-p",
        ])
        .arg(endpoint.port().to_string())
        .arg(format!("keeladmin@{}", endpoint.ip()))
        .arg(script)
        .output()
        .expect("running ssh");
    assert!(
        out.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ms timestamp of the first log line of a job whose message contains `needle`.
fn log_at(lines: &[Value], needle: &str) -> Option<i64> {
    lines
        .iter()
        .find(|l| {
            l["line"]["event"] == "message"
                && l["line"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
        })
        .and_then(|l| l["at_ms"].as_i64())
}

/// `ok=… changed=… skipped=…` counts of the role run's host results.
fn role_summary(lines: &[Value]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for l in lines
        .iter()
        .filter(|l| l["line"]["event"] == "host_result" && l["line"]["is_item"] != true)
    {
        let status = l["line"]["status"].as_str().unwrap_or("?").to_string();
        *counts.entry(status).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The role run's slowest tasks: from each task's start to the next one's.
fn slowest_tasks(lines: &[Value], n: usize) -> String {
    let starts: Vec<(i64, &str)> = lines
        .iter()
        .filter(|l| l["line"]["event"] == "task_start")
        .filter_map(|l| Some((l["at_ms"].as_i64()?, l["line"]["name"].as_str()?)))
        .collect();
    let end = lines.iter().filter_map(|l| l["at_ms"].as_i64()).max();
    let mut took: Vec<(i64, &str)> = starts
        .iter()
        .enumerate()
        .filter_map(|(i, (at, name))| {
            let next = starts.get(i + 1).map(|s| s.0).or(end)?;
            Some((next - at, *name))
        })
        .collect();
    took.sort_by_key(|t| std::cmp::Reverse(t.0));
    took.iter()
        .take(n)
        .map(|(ms, name)| format!("{name} {:.1} s", secs(*ms)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_configure_check_over_ssh_and_delete_a_real_vm() {
    if !support::can_run_libvirt() {
        return;
    }
    let test_start = Instant::now();
    let scratch = Scratch::new("libvirt");
    let data_dir = scratch.sub("data");
    let state_dir = scratch.sub("vms");
    let prefix = support::unique_prefix("lv");
    let port = support::free_port();
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../playbooks/site.yml")
        .canonicalize()
        .unwrap();
    let cfg = ServeConfig {
        port,
        data_dir: data_dir.clone(),
        hypervisor: format!(
            "driver = \"libvirt\"\n\
             uri = \"qemu:///system\"\n\
             image_dir = \"{IMAGES}\"\n\
             state_dir = \"{state}\"\n\
             callback_url = \"http://{gw}:{port}\"\n\
             vm_prefix = \"{prefix}\"\n\
             playbook = \"{playbook}\"\n\
             api_retry_secs = 5\n\
             os_ready_timeout_secs = 480\n\
             ssh_wait_secs = 300\n\
             configure_retry_secs = 10\n",
            state = state_dir.display(),
            gw = demo::DEMO_GATEWAY,
            playbook = playbook.display(),
        ),
    };
    let config_path = cfg.write(&scratch.path().join("panel.toml"));

    // The demo data, with a short quarantine on its pool, written before
    // the process opens the database.
    let (token, site) = {
        let db = support::open_db(&cfg.database_url()).await;
        let system = Principal::system();
        let mut pool = alloc::generate(
            demo::DEMO_POOL,
            "public",
            Some(demo::DEMO_CIDR.parse().unwrap()),
            None,
            "demo-{n:03}.keel.test",
            20,
        )
        .unwrap();
        pool.quarantine_secs = Some(QUARANTINE_SECS);
        alloc::import(&db, &system, &pool, QUARANTINE_SECS)
            .await
            .unwrap();
        demo::seed(&db, &Passwords::new(&support::test_auth()).unwrap(), IMAGE)
            .await
            .unwrap();
        let site = sites::list(
            &db,
            &system,
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|s| s.name == demo::DEMO_SITE)
        .unwrap()
        .id;
        (support::admin_token(&db, demo::DEMO_ADMIN).await, site)
    };

    let mut lcfg = LibvirtConfig::new("qemu:///system", ImageStore::new(IMAGES), &state_dir);
    lcfg.prefix = prefix.clone();
    let driver = Arc::new(LibvirtDriver::new(lcfg));
    // Dropped after the process (declared before it): nothing recreates VMs
    // while the sweeper deletes them.
    let _sweeper = Sweeper::new(driver.clone());
    let panel = PanelProcess::start(&config_path, port, &scratch.path().join("panel.log")).await;
    let api = Api::new(&panel.base, &token);

    let before = api.pool(demo::DEMO_POOL).await;
    assert_eq!(before["free"], 20, "{before}");

    let id = api.create_server(site, demo::DEMO_SERVER_TYPE).await;
    let vm = format!("{prefix}{id}");
    let detail = api.wait_status(id, "ready", READY_WAIT).await;
    let hostname = detail["hostname"].as_str().unwrap().to_string();
    assert!(hostname.ends_with(".keel.test"), "{detail}");

    // The audit log shows every status, in order.
    let history = api.status_history(id).await;
    assert_eq!(
        support::statuses(&history),
        [
            "allocating",
            "creating_vm",
            "installing_os",
            "configuring",
            "ready"
        ],
        "{history:?}"
    );
    // The job history: one provision and one configure, both done; the
    // role run's log has the host-key check and the engine's events.
    let jobs = api.jobs(id).await;
    let of_kind =
        |kind: &str| -> Vec<&Value> { jobs.iter().filter(|j| j["kind"] == kind).collect() };
    for kind in ["provision", "configure"] {
        let js = of_kind(kind);
        assert_eq!(js.len(), 1, "{kind}: {jobs:?}");
        assert_eq!(js[0]["state"], "succeeded", "{kind}: {jobs:?}");
    }
    let configure_log = api
        .job_log(of_kind("configure")[0]["id"].as_i64().unwrap())
        .await;
    let sshd_wait = log_at(&configure_log, "waiting for sshd").expect("sshd wait logged");
    let sshd_up = log_at(&configure_log, "answered").expect("sshd's banner logged");
    let key_ok = log_at(&configure_log, "verified").expect("host-key check logged");
    let tasks: Vec<&str> = configure_log
        .iter()
        .filter(|l| l["line"]["event"] == "task_start")
        .filter_map(|l| l["line"]["name"].as_str())
        .collect();
    assert!(
        configure_log
            .iter()
            .filter(|l| l["line"]["event"] != "message")
            .count()
            > 5,
        "engine events in the job log: {configure_log:?}"
    );

    // Over SSH, as the panel's admin with the panel's key and known_hosts.
    let info = driver.status(&vm).await.unwrap();
    let endpoint = info
        .ssh_endpoint
        .expect("user-mode networking forwards sshd");
    let out = ssh(
        &data_dir.join("ssh/id_ed25519"),
        &data_dir.join("known_hosts.d").join(&vm),
        endpoint,
        "hostname -f; cat /etc/motd; sudo -n cat /etc/sudoers.d/mwsadmin; id -u mwsadmin",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], hostname, "{out}");
    assert_eq!(
        lines[1],
        format!("{hostname} is managed by Keel; local changes will be overwritten."),
        "{out}"
    );
    assert_eq!(lines[2], "mwsadmin ALL=(ALL) NOPASSWD: ALL", "{out}");
    assert!(lines[3].parse::<u32>().is_ok(), "{out}");
    let (ok, running) = virsh(&["list", "--name"]);
    assert!(ok && running.lines().any(|l| l.trim() == vm), "{running}");
    let after_create = api.pool(demo::DEMO_POOL).await;
    assert_eq!(after_create["allocated"], 1, "{after_create}");

    // Delete: the domain, its files and the address go.
    let r = api
        .call("DELETE", &format!("/api/v1/services/{id}"), None)
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    api.wait_status(id, "deleted", DELETE_WAIT).await;
    let (_, all) = virsh(&["list", "--all", "--name"]);
    assert!(!all.lines().any(|l| l.trim() == vm), "{all}");
    assert!(matches!(
        driver.status(&vm).await,
        Err(DriverError::NotFound(_))
    ));
    assert!(!state_dir.join(&vm).exists(), "VM files left behind");
    assert!(!data_dir.join("known_hosts.d").join(&vm).exists());
    let released = api.pool(demo::DEMO_POOL).await;
    assert_eq!(released["allocated"], 0, "{released}");
    api.wait_pool_free(demo::DEMO_POOL, 20, Duration::from_secs(60))
        .await;
    let jobs_after = api.jobs(id).await;
    assert!(
        jobs_after
            .iter()
            .any(|j| j["kind"] == "deprovision" && j["state"] == "succeeded"),
        "{jobs_after:?}"
    );
    let tail = support::statuses(&api.status_history(id).await);
    assert_eq!(tail[tail.len() - 2..], ["deleting", "deleted"], "{tail:?}");

    // Timings, from the audit log and the role run's job log.
    let at = |s: &str| support::entered(&history, s).unwrap();
    let requested = api.audit(id).await[0]["at"].as_i64().unwrap();
    let define = at("installing_os") - at("creating_vm");
    // The guest boots until its sshd answers: the image's cloud-init calls
    // back right before sshd starts (images/build-debian).
    let callback = at("configuring") - at("installing_os");
    let boot = sshd_up.max(at("configuring")) - at("installing_os");
    let host_key = key_ok - sshd_up.max(at("configuring"));
    let roles = at("ready") - key_ok;
    let total = at("ready") - requested;
    let summary: Vec<String> = jobs_after
        .iter()
        .map(|j| {
            format!(
                "{}={}x{}",
                j["kind"].as_str().unwrap_or("?"),
                j["state"].as_str().unwrap_or("?"),
                j["attempts"]
            )
        })
        .collect();
    eprintln!("job history: {}", summary.join(", "));
    eprintln!("provisioning timings ({vm}, {} tasks run):", tasks.len());
    eprintln!(
        "  request to creating_vm  {:>7.1} s",
        secs(at("creating_vm") - requested)
    );
    eprintln!("  define + start          {:>7.1} s", secs(define));
    eprintln!("  boot to callback        {:>7.1} s", secs(callback));
    eprintln!(
        "  boot to sshd's banner   {:>7.1} s (the panel waited from {:.1} s after the callback)",
        secs(boot),
        secs(sshd_wait - at("configuring"))
    );
    eprintln!(
        "  host-key check + login  {:>7.1} s (one connection)",
        secs(host_key)
    );
    eprintln!("  roles (site.yml)        {:>7.1} s", secs(roles));
    eprintln!("  total to ready          {:>7.1} s", secs(total));
    eprintln!(
        "  platform overhead       {:>7.1} s (total minus boot to sshd and roles)",
        secs(total - boot - roles)
    );
    eprintln!(
        "  role run                {} tasks: {}",
        tasks.len(),
        role_summary(&configure_log)
    );
    eprintln!(
        "  slowest tasks           {}",
        slowest_tasks(&configure_log, 6)
    );
    eprintln!(
        "  test wall time          {:>7.1} s",
        test_start.elapsed().as_secs_f64()
    );
}
