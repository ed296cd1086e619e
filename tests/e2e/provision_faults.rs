//! Fault tests of the provisioning flow on the real container driver
//! (`systemd-nspawn` machines booted from the base image):
//! - 30% of hypervisor calls fail (before or after the real call, through
//!   `FaultyDriver`): every server still reaches `ready`, no duplicate VM;
//! - the real `keel-panel serve` process is SIGKILLed mid-provisioning and
//!   restarted on the same database: the flow resumes, nothing leaks, and
//!   deleting everything leaves no container and no network namespace;
//! - reconciliation deletes an orphaned container, reports a service whose
//!   container vanished, and leaves healthy ones alone.
//!
//! The wrong-HMAC and wrong-host-key cases live in
//! `web-panel/tests/provision_flow.rs`. Each test has its own VM name
//! prefix and its own 10.234.N.0/24 pool, so tests running at once never
//! share containers, veths or addresses. Needs root and the image; skips
//! otherwise.

mod support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_panel::config::Config;
use keel_panel::db::Db;
use keel_panel::http::AppState;
use keel_panel::hypervisor::faulty::FaultyDriver;
use keel_panel::hypervisor::nspawn::{self, NspawnConfig, NspawnDriver};
use keel_panel::hypervisor::seed::{self, HostKeys, SeedParams};
use keel_panel::hypervisor::{Driver, DriverError, ImageStore, NetIdentity, PowerState, VmSpec};
use keel_panel::provision::{self, Provisioner};
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::reconcile;
use keel_panel::server;
use keel_panel::services::servers;
use serde_json::Value;
use support::{Api, Fixture, PanelProcess, Scratch, ServeConfig, Sweeper, IMAGES};
use tokio_util::sync::CancellationToken;

/// Containers call back within seconds; leave room for a loaded machine
/// and, after a SIGKILL, for the 30 s leases of the dead process to expire.
const READY_WAIT: Duration = Duration::from_secs(240);

fn nspawn_driver(state_dir: &Path, prefix: &str) -> NspawnDriver {
    let mut cfg = NspawnConfig::new(ImageStore::new(IMAGES));
    cfg.state_dir = state_dir.to_path_buf();
    cfg.prefix = prefix.to_string();
    NspawnDriver::new(cfg)
}

/// Network namespaces under the test's prefix.
fn netns_with(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// A panel inside the test process: HTTP API, a callback listener on every
/// address (containers reach it at their gateway), and a worker with the
/// flow's handlers over `driver`. Its files live in the test's [`Scratch`],
/// which the test declares first so it outlives the [`Sweeper`].
struct InProcess {
    api: Api,
    db: Db,
    fixture: Fixture,
    prov: Arc<Provisioner>,
    stop: CancellationToken,
}

impl InProcess {
    async fn start(
        scratch: &Scratch,
        subnet: u8,
        addresses: u64,
        driver: Arc<dyn Driver>,
        prefix: &str,
    ) -> InProcess {
        let data_dir = scratch.sub("data");
        let url = format!("sqlite://{}", data_dir.join("panel.db").display());
        let db = support::open_db(&url).await;
        let fixture = support::seed_fixture(&db, subnet, addresses, 3600).await;
        let mut config = Config {
            data_dir,
            database_url: url,
            auth: support::test_auth(),
            ..Default::default()
        };
        config.hypervisor.driver = "nspawn".into();
        config.hypervisor.vm_prefix = prefix.to_string();
        config.hypervisor.playbook = support::write_file_playbook(scratch.path());
        config.hypervisor.api_retry_secs = 1;
        config.hypervisor.configure_retry_secs = 1;
        // The default three role-run attempts: the role run makes no
        // hypervisor call, so driver faults cannot use them up.
        let stop = CancellationToken::new();
        let state = AppState::new(db.clone(), config.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(state.clone(), listener, stop.clone()));
        let callbacks = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let mut prov = Provisioner::new(db.clone(), Some(driver), &config).unwrap();
        prov.callback_port = callbacks.local_addr().unwrap().port();
        let app = keel_panel::api::callback_router(state)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(callbacks, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
        });
        let prov = Arc::new(prov);
        let mut registry = Registry::new();
        provision::register(&mut registry, prov.clone());
        let worker = Arc::new(Worker::new(
            db.store().clone(),
            registry,
            WorkerConfig {
                concurrency: 8,
                queues: vec![QueueConfig::new("default"), QueueConfig::new("hypervisor")],
                poll_every: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
        ));
        tokio::spawn(worker.run(stop.clone()));
        InProcess {
            api: Api::new(&base, &fixture.token),
            db,
            fixture,
            prov,
            stop,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The first seed whose first 16 calls through `FaultyDriver` (at
/// `fraction`) fail at least twice before and twice after the real call.
/// Four servers make only a few dozen driver calls, so an unlucky seed could
/// inject just one kind; this replays the wrapper's draws (an `f64` against
/// the fraction, then a `bool` for before/after) to rule that out.
fn mixed_fault_seed(fraction: f64) -> u64 {
    (1..)
        .find(|seed| {
            let mut rng = fastrand::Rng::with_seed(*seed);
            let (mut before, mut after) = (0, 0);
            for _ in 0..16 {
                if rng.f64() < fraction {
                    if rng.bool() {
                        before += 1;
                    } else {
                        after += 1;
                    }
                }
            }
            before >= 2 && after >= 2
        })
        .unwrap()
}

/// What the test playbook wrote into a container.
fn role_file(driver: &NspawnDriver, vm: &str) -> PathBuf {
    driver.root_dir(vm).join("etc/keel-e2e")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_driver_faults_still_reach_ready_without_duplicates() {
    if !support::can_run_nspawn() {
        return;
    }
    let started = Instant::now();
    let scratch = Scratch::new("faults");
    let prefix = support::unique_prefix("ft");
    let seed = std::env::var("KEEL_E2E_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| mixed_fault_seed(0.3));
    eprintln!("fault seed {seed} (KEEL_E2E_FAULT_SEED replays another)");
    let faulty = Arc::new(FaultyDriver::new(
        nspawn_driver(&scratch.sub("vms"), &prefix),
        0.3,
        seed,
    ));
    let inner = faulty.inner();
    // The sweeper goes through a fault-free driver on the same state.
    let _sweeper = Sweeper::new(Arc::new(nspawn_driver(&inner.config().state_dir, &prefix)));
    let p = InProcess::start(&scratch, 1, 6, faulty.clone(), &prefix).await;

    let ids: Vec<i64> =
        futures::future::join_all((0..4).map(|_| p.api.create_server(p.fixture.site, "small")))
            .await;
    for id in &ids {
        p.api.wait_status(*id, "ready", READY_WAIT).await;
    }
    let (before, after) = faulty.injected();
    eprintln!(
        "4 servers ready in {:.1} s; faults injected: {before} before the call, {after} after it",
        started.elapsed().as_secs_f64()
    );
    assert!(before > 0 && after > 0, "before={before} after={after}");

    // Exactly one container per server, each with the identity it was given.
    let listed: Vec<String> = inner
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    let want: Vec<String> = {
        let mut w: Vec<String> = ids.iter().map(|id| p.prov.vm_name(*id)).collect();
        w.sort();
        w
    };
    assert_eq!(listed, want);
    assert_eq!(netns_with(&prefix).len(), 4);
    for id in &ids {
        let s = p.api.service(*id).await;
        let vm = p.prov.vm_name(*id);
        assert_eq!(inner.status(&vm).await.unwrap().power, PowerState::Running);
        assert_eq!(
            std::fs::read_to_string(role_file(inner, &vm)).unwrap(),
            format!("{} {id} keeladmin\n", s["hostname"].as_str().unwrap())
        );
        // Retries happened inside the steps' jobs, not as extra runs.
        let jobs = p.api.jobs(*id).await;
        for kind in ["provision", "configure"] {
            let js: Vec<&Value> = jobs.iter().filter(|j| j["kind"] == kind).collect();
            assert_eq!(js.len(), 1, "{kind}: {jobs:?}");
            assert_eq!(js[0]["state"], "succeeded", "{kind}: {jobs:?}");
        }
        assert_eq!(
            support::statuses(&p.api.status_history(*id).await),
            [
                "allocating",
                "creating_vm",
                "installing_os",
                "configuring",
                "ready"
            ]
        );
    }
    let pool = p.api.pool("e2e1").await;
    assert_eq!(pool["allocated"], 4, "{pool}");

    // Deleting under the same faults also converges, leaving nothing.
    for id in &ids {
        let r = p
            .api
            .call("DELETE", &format!("/api/v1/services/{id}"), None)
            .await;
        assert_eq!(r.status, 202, "{}", r.json);
    }
    for id in &ids {
        p.api.wait_status(*id, "deleted", READY_WAIT).await;
    }
    assert!(inner.list().await.unwrap().is_empty());
    assert!(netns_with(&prefix).is_empty());
    let pool = p.api.pool("e2e1").await;
    assert_eq!(pool["allocated"], 0, "{pool}");
    eprintln!(
        "faults test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_provisioning_resumes_after_restart_without_leaks() {
    if !support::can_run_nspawn() {
        return;
    }
    let started = Instant::now();
    let scratch = Scratch::new("sigkill");
    let data_dir = scratch.sub("data");
    let state_dir = scratch.sub("vms");
    let prefix = support::unique_prefix("sk");
    let port = support::free_port();
    let callback_port = support::free_port();
    let playbook = support::write_file_playbook(scratch.path());
    let cfg = ServeConfig {
        port,
        data_dir: data_dir.clone(),
        hypervisor: format!(
            "driver = \"nspawn\"\n\
             image_dir = \"{IMAGES}\"\n\
             state_dir = \"{state}\"\n\
             callback_listen = \"0.0.0.0:{callback_port}\"\n\
             vm_prefix = \"{prefix}\"\n\
             playbook = \"{playbook}\"\n\
             api_retry_secs = 1\n\
             configure_retry_secs = 2\n\
             configure_attempts = 5\n",
            state = state_dir.display(),
            playbook = playbook.display(),
        ),
    };
    let config_path = cfg.write(&scratch.path().join("panel.toml"));
    let fixture = {
        let db = support::open_db(&cfg.database_url()).await;
        support::seed_fixture(&db, 2, 5, 0).await
    };
    let driver = Arc::new(nspawn_driver(&state_dir, &prefix));
    let _sweeper = Sweeper::new(driver.clone());
    let mut panel =
        PanelProcess::start(&config_path, port, &scratch.path().join("panel.log")).await;
    let api = Api::new(&panel.base, &fixture.token);

    let ids: Vec<i64> =
        futures::future::join_all((0..3).map(|_| api.create_server(fixture.site, "small"))).await;
    // Kill as soon as the flow is between the hypervisor call and the callback.
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(
                api.service(*id).await["status"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        if statuses
            .iter()
            .any(|s| s == "creating_vm" || s == "installing_os")
        {
            panel.sigkill();
            break statuses;
        }
        assert!(
            Instant::now() < deadline,
            "never saw creating_vm/installing_os: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "SIGKILL after {:.1} s with statuses {at_kill:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        at_kill.iter().any(|s| s != "ready"),
        "nothing was in flight: {at_kill:?}"
    );
    assert!(
        api.try_call("GET", "/api/v1/me", None).await.is_err(),
        "still up"
    );

    panel.restart().await;
    for id in &ids {
        api.wait_status(*id, "ready", READY_WAIT).await;
    }
    eprintln!(
        "all ready {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );
    let names: Vec<String> = driver
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    let mut want: Vec<String> = ids.iter().map(|id| format!("{prefix}{id}")).collect();
    want.sort();
    assert_eq!(names, want, "exactly one container per server");
    assert_eq!(netns_with(&prefix), want.iter().cloned().collect());
    let pool = api.pool("e2e2").await;
    assert_eq!(pool["allocated"], 3, "{pool}");
    for id in &ids {
        let vm = format!("{prefix}{id}");
        let s = api.service(*id).await;
        assert_eq!(
            std::fs::read_to_string(role_file(&driver, &vm)).unwrap(),
            format!("{} {id} keeladmin\n", s["hostname"].as_str().unwrap())
        );
        let jobs = api.jobs(*id).await;
        assert!(
            jobs.iter().all(|j| j["state"] != "dead"),
            "a step gave up: {jobs:?}"
        );
        assert_eq!(
            jobs.iter().filter(|j| j["kind"] == "provision").count(),
            1,
            "{jobs:?}"
        );
    }
    let failures = api.call("GET", "/api/v1/admin/job-failures", None).await;
    assert_eq!(failures.json, serde_json::json!([]), "{}", failures.json);

    // Delete everything: no container, netns, veth, state dir or address left.
    for id in &ids {
        let r = api
            .call("DELETE", &format!("/api/v1/services/{id}"), None)
            .await;
        assert_eq!(r.status, 202, "{}", r.json);
    }
    for id in &ids {
        api.wait_status(*id, "deleted", READY_WAIT).await;
    }
    assert!(driver.list().await.unwrap().is_empty());
    assert!(netns_with(&prefix).is_empty());
    for vm in &want {
        assert!(!link_exists(&nspawn::veth_name(vm)), "veth of {vm} left");
        assert!(!driver.container_dir(vm).exists(), "state of {vm} left");
    }
    let pool = api.pool("e2e2").await;
    assert_eq!(pool["allocated"], 0, "{pool}");
    assert_eq!(pool["free"], 5, "{pool}");
    eprintln!(
        "SIGKILL test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_deletes_orphans_reports_missing_and_keeps_healthy_vms() {
    if !support::can_run_nspawn() {
        return;
    }
    let scratch = Scratch::new("reconcile");
    let prefix = support::unique_prefix("rc");
    let driver = Arc::new(nspawn_driver(&scratch.sub("vms"), &prefix));
    let _sweeper = Sweeper::new(driver.clone());
    let p = InProcess::start(&scratch, 3, 4, driver.clone(), &prefix).await;

    let healthy = p.api.create_server(p.fixture.site, "small").await;
    let vanished = p.api.create_server(p.fixture.site, "small").await;
    let stuck = p.api.create_server(p.fixture.site, "small").await;
    for id in [healthy, vanished, stuck] {
        p.api.wait_status(id, "ready", READY_WAIT).await;
    }
    // A compensation cut short: the service failed before its OS was up
    // and the delete of its VM did not go through, so the VM and the
    // address are still held.
    {
        let mut tx = p.db.begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        keel_panel::execute!(
            &mut conn,
            "UPDATE services SET status = 'failed', failure_reason = 'no callback' WHERE id = $1",
            stuck
        )
        .unwrap();
        keel_panel::execute!(
            &mut conn,
            "UPDATE vm_provisioning SET failed_step = 'os_ready' WHERE service_id = $1",
            stuck
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    let allocated_before = p.api.pool("e2e3").await["allocated"].as_i64().unwrap();
    // Behind the panel's back: a container for a service that never
    // existed, one whose name is not the panel's pattern, and a service's
    // container deleted.
    let orphan_id = 999_999;
    let orphan = format!("{prefix}{orphan_id}");
    let stray = format!("{prefix}scratch");
    for (name, host) in [(&orphan, 200u8), (&stray, 201)] {
        let net = NetIdentity {
            hostname: format!("stray{host}.keel.test"),
            ipv4: Some(Ipv4Addr::new(10, 234, 3, host)),
            prefix4: 24,
            gateway4: Some(Ipv4Addr::new(10, 234, 3, 1)),
            ipv6: None,
            prefix6: keel_panel::hypervisor::DEFAULT_PREFIX6,
            gateway6: None,
            attach: keel_panel::hypervisor::Attachment::Private,
        };
        let params = SeedParams::new(
            format!("{name}-g1"),
            net.clone(),
            HostKeys::generate(name).unwrap(),
        );
        driver
            .create(&VmSpec {
                name: name.clone(),
                cpus: 1,
                ram_mb: 256,
                disk_gb: 1,
                image: support::IMAGE.into(),
                seed: seed::render(&params).unwrap(),
                net,
            })
            .await
            .unwrap();
    }
    driver.start(&orphan).await.unwrap();
    let vanished_vm = p.prov.vm_name(vanished);
    driver.delete(&vanished_vm).await.unwrap();

    let report = reconcile::reconcile(&p.db, driver.clone(), &prefix)
        .await
        .unwrap();
    assert_eq!(
        report.orphans_deleted,
        std::slice::from_ref(&orphan),
        "{report:?}"
    );
    assert!(report.orphans_failed.is_empty(), "{report:?}");
    assert_eq!(report.missing, [vanished], "{report:?}");
    assert_eq!(report.unknown, std::slice::from_ref(&stray), "{report:?}");
    assert!(matches!(
        driver.status(&orphan).await,
        Err(DriverError::NotFound(_))
    ));
    assert!(!netns_with(&orphan).iter().any(|n| n == &orphan));
    // The stray and the healthy VM are untouched.
    assert!(driver.status(&stray).await.is_ok());
    let healthy_vm = p.prov.vm_name(healthy);
    assert_eq!(
        driver.status(&healthy_vm).await.unwrap().power,
        PowerState::Running
    );
    let h = p.api.service(healthy).await;
    assert_eq!(h["status"], "ready", "{h}");
    assert_ne!(h["vm"]["power_state"], "absent", "{h}");
    assert!(
        !p.api
            .audit(healthy)
            .await
            .iter()
            .any(|e| e["action"].as_str().unwrap().starts_with("reconcile.")),
        "healthy service touched"
    );
    // The cut-short compensation is finished: VM gone, row gone, address
    // released into quarantine.
    assert_eq!(report.compensated, [stuck], "{report:?}");
    assert!(matches!(
        driver.status(&p.prov.vm_name(stuck)).await,
        Err(DriverError::NotFound(_))
    ));
    let st = p.api.service(stuck).await;
    assert_eq!(st["status"], "failed", "{st}");
    assert!(st["vm"].is_null(), "{st}");
    assert_eq!(
        p.api.pool("e2e3").await["allocated"].as_i64().unwrap(),
        allocated_before - 1
    );
    // The vanished VM is reported, not re-created.
    let v = p.api.service(vanished).await;
    assert_eq!(v["vm"]["power_state"], "absent", "{v}");
    let missing_rows = |audit: &[Value]| {
        audit
            .iter()
            .filter(|e| e["action"] == "reconcile.vm_missing")
            .count()
    };
    assert_eq!(missing_rows(&p.api.audit(vanished).await), 1);
    assert!(p
        .api
        .audit(orphan_id)
        .await
        .iter()
        .any(|e| e["action"] == "reconcile.orphan_deleted"));

    // A second pass finds nothing new to do and writes no second alarm.
    let again = reconcile::reconcile(&p.db, driver.clone(), &prefix)
        .await
        .unwrap();
    assert!(again.orphans_deleted.is_empty(), "{again:?}");
    assert!(again.compensated.is_empty(), "{again:?}");
    assert_eq!(again.missing, [vanished], "{again:?}");
    assert_eq!(missing_rows(&p.api.audit(vanished).await), 1);
}

/// Regression: a step's compensation runs after its job turned `dead`, so a
/// crash in between left the service in a transitional status with no job,
/// and nothing ever moved it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_resumes_a_flow_whose_job_was_lost() {
    if !support::can_run_nspawn() {
        return;
    }
    let scratch = Scratch::new("resume");
    let prefix = support::unique_prefix("rs");
    let driver = Arc::new(nspawn_driver(&scratch.sub("vms"), &prefix));
    let _sweeper = Sweeper::new(driver.clone());
    let p = InProcess::start(&scratch, 4, 4, driver.clone(), &prefix).await;

    let lost = p.api.create_server(p.fixture.site, "small").await;
    let live = p.api.create_server(p.fixture.site, "small").await;
    let recent = p.api.create_server(p.fixture.site, "small").await;
    for id in [lost, live, recent] {
        p.api.wait_status(id, "ready", READY_WAIT).await;
    }
    // All three back in `configuring` with no job, as a crash between a
    // dead `configure` and its compensation leaves them. `lost` and `live`
    // changed (and last ran a job) longer ago than the grace; `recent` just
    // now. `live` gets a queued step job, due later.
    let stale = 2 * reconcile::RESUME_GRACE_MS;
    {
        let mut tx = p.db.begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        for id in [lost, live, recent] {
            let back = if id == recent { 0 } else { stale };
            keel_panel::execute!(
                &mut conn,
                "UPDATE services SET status = 'configuring', updated_at = updated_at - $2 WHERE id = $1",
                id,
                back
            )
            .unwrap();
            // The OS-ready wait armed at boot is still queued (due after
            // the timeout); it would find the callback and do nothing. It
            // counts as live until then, so let it have fired.
            keel_panel::execute!(
                &mut conn,
                "UPDATE jobs SET state = 'succeeded', finished_at = $2 \
                 WHERE serial_key = $1 AND kind = 'vm_os_ready' AND state = 'queued'",
                servers::service_key(id),
                p.db.now()
            )
            .unwrap();
            keel_panel::execute!(
                &mut conn,
                "UPDATE jobs SET finished_at = finished_at - $2, created_at = created_at - $2 \
                 WHERE serial_key = $1",
                servers::service_key(id),
                back
            )
            .unwrap();
        }
        let spec = keel_panel::lifecycle::jobs::ConfigureJob { service_id: live }
            .spec(None)
            .run_at(keel_panel::queue::RunAt::After(Duration::from_secs(3600)));
        keel_panel::queue::enqueue(&mut tx, spec).await.unwrap();
        tx.commit().await.unwrap();
    }
    let configure_jobs = |id: i64| {
        let db = p.db.clone();
        async move {
            db.store()
                .jobs(&keel_panel::queue::JobFilter {
                    serial_key: Some(servers::service_key(id)),
                    kind: Some("configure".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .len()
        }
    };
    let live_jobs = configure_jobs(live).await;
    let recent_jobs = configure_jobs(recent).await;

    let report = reconcile::reconcile(&p.db, driver.clone(), &prefix)
        .await
        .unwrap();
    assert_eq!(report.resumed, [lost], "{report:?}");
    assert!(report.missing.is_empty(), "{report:?}");
    let resumed_rows = |audit: &[Value]| {
        audit
            .iter()
            .filter(|e| e["action"] == "reconcile.resumed")
            .count()
    };
    assert_eq!(resumed_rows(&p.api.audit(lost).await), 1);
    // The resumed `configure` runs the roles again and the flow finishes.
    p.api.wait_status(lost, "ready", READY_WAIT).await;
    // A service with a live job, or changed within the grace, is left alone.
    for (id, jobs) in [(live, live_jobs), (recent, recent_jobs)] {
        assert_eq!(resumed_rows(&p.api.audit(id).await), 0);
        assert_eq!(configure_jobs(id).await, jobs);
        assert_eq!(p.api.service(id).await["status"], "configuring");
    }

    // Nothing is stalled any more: a second pass resumes nothing.
    let again = reconcile::reconcile(&p.db, driver.clone(), &prefix)
        .await
        .unwrap();
    assert!(again.resumed.is_empty(), "{again:?}");
    assert_eq!(resumed_rows(&p.api.audit(lost).await), 1);
}
