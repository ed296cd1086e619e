//! The provisioning flow end to end on the real container driver
//! (`systemd-nspawn` machines booted from the base image): create through
//! the API, VM created, cloud-init's phone_home reaches the callback, the
//! host key is checked, the role run writes a file, `ready`; and the
//! failure paths: wrong HMAC, replayed callback, host-key mismatch, delete,
//! coalesced re-converge. Needs root and the built image; skips otherwise,
//! or fails when `KEEL_REQUIRE_REAL` is set.
//! The `regression_*` tests pin races a review found: forged callbacks
//! holding the write lock, a callback arriving before `installing_os`
//! commits, an OS-ready failure losing to a callback, compensation whose VM
//! delete fails, a panel key whose public half went missing.
//!
//! [`FlowPanel`] (a panel with a driver, a worker on chosen queues and the
//! callback-only listener) lives in `flow_support/`, shared with
//! `access_flow.rs`.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_support::{start, Backend, Cred};
use flow_support::FlowPanel;
use keel_panel::domain::Principal;
use keel_panel::hypervisor::nspawn::NspawnDriver;
use keel_panel::hypervisor::{Driver, DriverError};
use keel_panel::provision::{self, callback};
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::JobFilter;
use keel_panel::services::{servers, sites};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(240);

/// Whether the nspawn driver can run here. The e2e tests' check: it skips
/// with a message, or fails when `KEEL_REQUIRE_REAL` is set (scripts/test),
/// so a broken setup cannot pass as nine skipped tests.
fn can_run() -> bool {
    e2e_support::can_run_nspawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_reaches_ready_then_delete_returns_the_address() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(11, 1).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let detail = f.wait_status(id, "ready").await;
    assert_eq!(
        f.status_history(id).await,
        [
            "allocating",
            "creating_vm",
            "installing_os",
            "configuring",
            "ready"
        ]
    );
    let written = std::fs::read_to_string(f.role_file(id)).unwrap();
    assert_eq!(written, "flow11-0.example.org small keeladmin\n");
    for kind in ["provision", "configure"] {
        assert_eq!(f.jobs_of_kind(id, kind).await, 1, "{kind}");
    }
    let kinds: Vec<&str> = detail["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"provision") && kinds.contains(&"configure"),
        "{kinds:?}"
    );
    assert_eq!(detail["vm"]["hypervisor"], "nspawn");
    // The role run streamed the engine's events into the configure job's log.
    let configure_id = detail["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "configure")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let lines = keel_panel::queue::log::read(f.panel.db().store(), configure_id, 0, 1000)
        .await
        .unwrap();
    let text: Vec<String> = lines.iter().map(|l| l.line.to_string()).collect();
    assert!(
        text.iter()
            .any(|l| l.contains("record what the panel told us")),
        "{text:?}"
    );
    assert!(text.iter().any(|l| l.contains("host key of")), "{text:?}");
    let vm = f.prov.vm_name(id);
    let known = std::fs::read_to_string(f.prov.known_hosts_path(&vm)).unwrap();
    assert!(known.starts_with("10.233.11.10 ssh-ed25519 "), "{known}");
    // The detail shows the fingerprint of exactly the key the VM proved it has.
    let key_line = known.split_once(' ').unwrap().1.trim();
    let want = ssh_key::PublicKey::from_openssh(key_line)
        .unwrap()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    assert_eq!(detail["host_keys"][0]["algorithm"], "ssh-ed25519");
    assert_eq!(detail["host_keys"][0]["fingerprint"], want.as_str());

    // The inventory the consumers pull shows the host with its vars.
    let inv = f
        .panel
        .call(
            "GET",
            "/api/v1/inventory",
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await;
    assert_eq!(inv.status, 200);
    assert_eq!(
        inv.json["site_main_site"]["hosts"],
        json!(["flow11-0.example.org"])
    );
    let hv = &inv.json["_meta"]["hostvars"]["flow11-0.example.org"];
    assert_eq!(hv["ansible_host"], "10.233.11.10");
    assert_eq!(hv["keel_users"][0]["name"], "owner");

    // A second server cannot get an address: the pool has one.
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/services",
            &f.owner,
            Some(json!({"site_id": f.site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.json["error"], "pool_exhausted", "{}", r.json);

    let r = f
        .panel
        .call("DELETE", &format!("/api/v1/services/{id}"), &f.owner, None)
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    f.wait_status(id, "deleted").await;
    assert!(matches!(
        f.driver.status(&vm).await,
        Err(DriverError::NotFound(_))
    ));
    assert!(!f.prov.known_hosts_path(&vm).exists());
    // The address is in quarantine, then claimable again.
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/services",
            &f.owner,
            Some(json!({"site_id": f.site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 409, "still in quarantine: {}", r.json);
    f.panel.clock.advance(Duration::from_secs(3601));
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/services",
            &f.owner,
            Some(json!({"site_id": f.site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["service"]["hostname"], "flow11-0.example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hmac_is_rejected_replay_is_a_noop_and_reconverge_coalesces() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(12, 2).await;
    // Only the hypervisor queue: the callback queues `configure`, which
    // then waits, so the test sees the state between the two.
    f.worker(&["hypervisor"]);
    let id = f.create().await;
    f.wait_status(id, "configuring").await;
    let (vm, gen, secret) = f.callback_params(id).await;
    assert_eq!(f.jobs_of_kind(id, "configure").await, 1);

    // Wrong signature: 403, nothing changes.
    let bad = callback::sign(&"ab".repeat(32), &vm, gen);
    let r = f.post_callback(&vm, gen, &bad).await;
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(r.json["error"], "forbidden");
    assert!(r.json["message"].is_string());
    // Unknown VM: the same answer.
    let r = f.post_callback("nope-1", gen, &bad).await;
    assert_eq!(r.status, 403);
    // With the source check on, even a valid signature from an address
    // other than the VM's is refused.
    let mut strict = (*f.panel.state.config).clone();
    strict.hypervisor.callback_check_source = true;
    let mut state = f.panel.state.clone();
    state.config = Arc::new(strict);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let strict_addr = listener.local_addr().unwrap();
    let app = keel_panel::api::callback_router(state)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = f
        .panel
        .client
        .post(format!(
            "http://{strict_addr}/api/v1/callback/vm-ready?vm={vm}&gen={gen}&sig={}",
            callback::sign(&secret, &vm, gen)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The callback-only listener serves nothing else.
    let r = f
        .panel
        .client
        .get(format!("http://{strict_addr}/api/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Replay of the real callback: answered, no second configure.
    let good = callback::sign(&secret, &vm, gen);
    let r = f.post_callback(&vm, gen, &good).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "duplicate");
    // A callback for another generation is refused.
    let r = f
        .post_callback(&vm, gen + 1, &callback::sign(&secret, &vm, gen + 1))
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert_eq!(f.jobs_of_kind(id, "configure").await, 1);
    assert_eq!(f.service(id).await["status"], "configuring");

    // Coalescing: claim the queued configure (it is now running), then ask
    // for re-converges: exactly one follow-up run.
    let claimer = Worker::new(
        f.panel.db().store().clone(),
        Registry::new(),
        WorkerConfig {
            queues: vec![QueueConfig::new("default")],
            ..WorkerConfig::default()
        },
    );
    let running = claimer.claim(1).await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].kind, "configure");
    let sys = Principal::system();
    let first = provision::reconverge(f.panel.db(), &sys, id).await.unwrap();
    let second = provision::reconverge(f.panel.db(), &sys, id).await.unwrap();
    let third = provision::reconverge(f.panel.db(), &sys, id).await.unwrap();
    assert_ne!(first, running[0].id);
    assert_eq!(first, second);
    assert_eq!(second, third);
    assert_eq!(f.jobs_of_kind(id, "configure").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_mismatch_stops_the_flow() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(13, 1).await;
    f.worker(&["hypervisor"]);
    let id = f.create().await;
    f.wait_status(id, "configuring").await;
    // The panel now expects another key than the one the VM was seeded with.
    let other = keel_panel::hypervisor::seed::HostKeys::generate("impostor").unwrap();
    {
        let mut tx = f.panel.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        keel_panel::execute!(
            &mut conn,
            "UPDATE vm_provisioning SET host_key_public = $1 WHERE service_id = $2",
            other.ed25519_public.as_str(),
            id
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    f.worker(&["default"]);
    let s = f.wait_status(id, "failed").await;
    assert_eq!(s["failure_reason"], "host key mismatch");
    // No role ran, nothing was trusted, the VM is kept for inspection.
    assert!(!f.role_file(id).exists());
    let vm = f.prov.vm_name(id);
    assert!(!f.prov.known_hosts_path(&vm).exists());
    assert!(f.driver.status(&vm).await.is_ok());
    assert_eq!(f.jobs_of_kind(id, "configure").await, 1);
    let failures = f
        .panel
        .call(
            "GET",
            "/api/v1/admin/audit?object_type=service&limit=200",
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await;
    assert!(
        failures.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "service.host_key_mismatch"),
        "{}",
        failures.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_http_inventory_loader_reads_the_endpoint_sqlite() {
    inventory_story(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_http_inventory_loader_reads_the_endpoint_postgres() {
    inventory_story(Backend::Postgres).await;
}

async fn inventory_story(backend: Backend) {
    // No VM needed: a service with its address is already in the inventory.
    let p = start(backend, |_| {}).await;
    api_support::catalog_and_pool(&p, 3).await;
    let (_, owner_t) = p.user("owner", false).await;
    let (_, admin_t) = p.user("root", true).await;
    let owner = Cred::Bearer(owner_t.clone());
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &owner,
            Some(json!({"name": "web-shop", "owner_email": "o@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let (ssh_user, _) = p.user("deploy", false).await;
    sites::set_member(p.db(), &Principal::system(), site, "deploy", "ssh")
        .await
        .unwrap();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH deploy@laptop";
    keel_panel::services::keys::add(p.db(), &ssh_user, "laptop", key)
        .await
        .unwrap();
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &owner,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let host = r.json["service"]["hostname"].as_str().unwrap().to_string();
    // Non-admins are refused.
    let r = p.call("GET", "/api/v1/inventory", &owner, None).await;
    assert_eq!(r.status, 403);

    let url = format!("{}/api/v1/inventory", p.base);
    let opts = keel::inventory::LoadOptions {
        http_token: Some(admin_t.clone()),
        ..Default::default()
    };
    let inv = keel::inventory::Inventory::load_async(vec![url.clone()], opts)
        .await
        .unwrap();
    assert_eq!(inv.group_hosts("site_web_shop"), vec![host.clone()]);
    let vars = inv.host_vars(&host);
    assert_eq!(vars["keel_hostname"].as_str(), Some(host.as_str()));
    assert_eq!(vars["keel_server_type"].as_str(), Some("small"));
    assert_eq!(vars["ansible_port"].as_i64(), Some(22));
    // ?host= gives one host's vars.
    let one = p
        .call(
            "GET",
            &format!("/api/v1/inventory?host={host}"),
            &Cred::Bearer(admin_t.clone()),
            None,
        )
        .await;
    assert_eq!(one.json["keel_hostname"], host.as_str());
    let users = one.json["keel_users"].as_array().unwrap();
    let by_name = |n: &str| users.iter().find(|u| u["name"] == n).cloned().unwrap();
    assert_eq!(by_name("owner")["role"], "admin");
    let deploy = by_name("deploy");
    assert_eq!(deploy["role"], "ssh");
    // The UID the panel stored for the person, from its configured range.
    let stored = {
        let mut rc = p.db().read().await.unwrap();
        keel_panel::scalar!(
            &mut rc.conn(),
            i64,
            "SELECT uid FROM unix_ids WHERE user_id = $1",
            ssh_user.user_id
        )
        .unwrap()
        .unwrap()
    };
    assert_eq!(deploy["uid"], stored);
    assert!((10_000..=59_999).contains(&stored), "{stored}");
    assert_eq!(deploy["ssh_keys"], json!([key]));
    // An unknown host has no vars.
    let none = p
        .call(
            "GET",
            "/api/v1/inventory?host=nope.example.org",
            &Cred::Bearer(admin_t.clone()),
            None,
        )
        .await;
    assert_eq!(none.json, json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_callback_power_cycles_then_fails_compensates_and_retry_recreates() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(14, 2).await;
    // Callbacks go to a port nothing listens on yet.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    {
        let p = Arc::get_mut(&mut f.prov).unwrap();
        p.callback_port = port;
        p.config.os_ready_resets = 1;
    }
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    f.wait_status(id, "installing_os").await;
    let vm = f.prov.vm_name(id);
    let resets = |f: &FlowPanel| {
        let db = f.panel.db().clone();
        async move {
            let mut rc = db.read().await.unwrap();
            let mut conn = rc.conn();
            keel_panel::scalar!(
                &mut conn,
                i64,
                "SELECT resets FROM vm_provisioning WHERE service_id = $1",
                id
            )
            .unwrap()
            .unwrap()
        }
    };
    // First timeout: a power cycle, and the wait is armed again.
    f.panel.clock.advance(Duration::from_secs(301));
    let deadline = Instant::now() + WAIT;
    while resets(&f).await == 0 {
        assert!(Instant::now() < deadline, "no power cycle");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(f.service(id).await["status"], "installing_os");
    // Second timeout: out of power cycles, failed, compensated.
    f.panel.clock.advance(Duration::from_secs(301));
    let s = f.wait_status(id, "failed").await;
    let reason = s["failure_reason"].as_str().unwrap();
    assert!(reason.starts_with("the VM did not call back after "), "{s}");
    // Timeouts are job detail, not what the tenant's admins are told.
    assert!(!reason.contains(" s,"), "{s}");
    // The compensation runs after the status change commits: the VM goes,
    // then the address.
    let deadline = Instant::now() + WAIT;
    let s = loop {
        let s = f.service(id).await;
        if s["network"].is_null() {
            break s;
        }
        assert!(Instant::now() < deadline, "address not released: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(s["status"], "failed");
    assert!(s["vm"].is_null(), "{s}");
    assert!(matches!(
        f.driver.status(&vm).await,
        Err(DriverError::NotFound(_))
    ));

    // The callback listener comes up; a retry builds a new VM (new seed
    // generation) on a new address (the old one is in quarantine).
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .unwrap();
    let app = keel_panel::api::callback_router(f.panel.state.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/retry"),
            &f.owner,
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    let s = f.wait_status(id, "ready").await;
    assert_eq!(s["hostname"], "flow14-1.example.org");
    let (_, gen, _) = f.callback_params(id).await;
    assert_eq!(gen, 2);
    assert_eq!(
        std::fs::read_to_string(f.role_file(id)).unwrap(),
        "flow14-1.example.org small keeladmin\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_role_run_keeps_the_vm_and_retry_resumes_at_configure() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(15, 1).await;
    f.worker(&["hypervisor"]);
    let id = f.create().await;
    f.wait_status(id, "configuring").await;
    let vm = f.prov.vm_name(id);
    let switch = f.driver.root_dir(&vm).join("etc/keel-fail");
    std::fs::write(&switch, "").unwrap();
    f.worker(&["default"]);
    // Three attempts, a (manual) second apart.
    let deadline = Instant::now() + WAIT;
    let s = loop {
        let s = f.service(id).await;
        if s["status"] == "failed" {
            break s;
        }
        assert!(Instant::now() < deadline, "not failed: {s}");
        f.panel.clock.advance(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Site admins see the step and the failing task, not the engine's output.
    assert_eq!(
        s["failure_reason"], "the configuration run failed: fail when asked to",
        "{s}"
    );
    let configure = f
        .panel
        .db()
        .store()
        .jobs(&JobFilter {
            kind: Some("configure".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(configure.len(), 1);
    assert_eq!(configure[0].attempts, 3);
    // The full detail stays in the job history, for platform admins.
    let detail = configure[0].last_error.as_deref().unwrap_or_default();
    assert!(detail.starts_with("role run failed: "), "{detail}");
    assert!(detail.contains("exit code 2"), "{detail}");
    // The VM and the address stay for an admin to look at.
    assert!(f.driver.status(&vm).await.is_ok());
    assert_eq!(s["hostname"], "flow15-0.example.org");

    std::fs::remove_file(&switch).unwrap();
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/retry"),
            &f.owner,
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    f.wait_status(id, "ready").await;
    // Resumed at the role run: same VM, same seed generation.
    let (_, gen, _) = f.callback_params(id).await;
    assert_eq!(gen, 1);
    assert_eq!(f.jobs_of_kind(id, "configure").await, 2);
    assert!(f.role_file(id).exists());
}

/// The nspawn driver with hooks the race tests need: `start` can hold its
/// answer until the VM has called back (the provision step is slow to
/// commit after starting the VM), and `delete` can fail (compensation
/// meets a hypervisor that does not answer).
struct HookedDriver {
    inner: Arc<NspawnDriver>,
    db: keel_panel::db::Db,
    hold_start: std::sync::atomic::AtomicBool,
    fail_delete: std::sync::atomic::AtomicBool,
    /// The service status seen when the held `start` saw the callback.
    status_at_callback: std::sync::Mutex<Option<String>>,
}

impl HookedDriver {
    fn new(f: &FlowPanel) -> Arc<HookedDriver> {
        Arc::new(HookedDriver {
            inner: f.driver.clone(),
            db: f.panel.db().clone(),
            hold_start: Default::default(),
            fail_delete: Default::default(),
            status_at_callback: Default::default(),
        })
    }

    /// Waits (up to two minutes) until the VM's callback is recorded.
    async fn wait_for_callback(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let mut rc = self.db.read().await.unwrap();
            let mut conn = rc.conn();
            let seen = keel_panel::fetch_opt!(
                &mut conn,
                (Option<i64>, String),
                "SELECT p.callback_at, s.status FROM vm_provisioning p \
                 JOIN services s ON s.id = p.service_id WHERE p.vm_name = $1",
                name
            )
            .unwrap();
            if let Some((Some(_), status)) = seen {
                *self.status_at_callback.lock().unwrap() = Some(status);
                return;
            }
            drop(rc);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait::async_trait]
impl Driver for HookedDriver {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn create(
        &self,
        spec: &keel_panel::hypervisor::VmSpec,
    ) -> Result<keel_panel::hypervisor::VmInfo, DriverError> {
        self.inner.create(spec).await
    }
    async fn start(&self, name: &str) -> Result<(), DriverError> {
        self.inner.start(name).await?;
        if self.hold_start.load(std::sync::atomic::Ordering::SeqCst) {
            self.wait_for_callback(name).await;
        }
        Ok(())
    }
    async fn shutdown(&self, name: &str) -> Result<(), DriverError> {
        self.inner.shutdown(name).await
    }
    async fn power_off(&self, name: &str) -> Result<(), DriverError> {
        self.inner.power_off(name).await
    }
    async fn reset(&self, name: &str) -> Result<(), DriverError> {
        self.inner.reset(name).await
    }
    async fn status(&self, name: &str) -> Result<keel_panel::hypervisor::VmInfo, DriverError> {
        self.inner.status(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), DriverError> {
        if self.fail_delete.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(DriverError::Unavailable(
                "injected: hypervisor API down".into(),
            ));
        }
        self.inner.delete(name).await
    }
    async fn list(&self) -> Result<Vec<keel_panel::hypervisor::VmInfo>, DriverError> {
        self.inner.list().await
    }
    async fn snapshot_create(&self, name: &str, snapshot: &str) -> Result<(), DriverError> {
        self.inner.snapshot_create(name, snapshot).await
    }
    async fn snapshot_list(
        &self,
        name: &str,
    ) -> Result<Vec<keel_panel::hypervisor::SnapshotInfo>, DriverError> {
        self.inner.snapshot_list(name).await
    }
    async fn snapshot_revert(&self, name: &str, snapshot: &str) -> Result<(), DriverError> {
        self.inner.snapshot_revert(name, snapshot).await
    }
    async fn snapshot_delete(&self, name: &str, snapshot: &str) -> Result<(), DriverError> {
        self.inner.snapshot_delete(name, snapshot).await
    }
    async fn clone_vm(
        &self,
        source: &str,
        spec: &keel_panel::hypervisor::VmSpec,
    ) -> Result<keel_panel::hypervisor::VmInfo, DriverError> {
        self.inner.clone_vm(source, spec).await
    }
}

/// Puts `driver` under the flow (before any worker starts).
fn use_driver(f: &mut FlowPanel, driver: Arc<HookedDriver>) {
    let d: Arc<dyn Driver> = driver;
    Arc::get_mut(&mut f.prov).unwrap().hosts =
        keel_panel::provision::HostDrivers::single(keel_panel::config::DEFAULT_HOST, d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_bad_callback_does_not_wait_for_the_write_lock() {
    // The signature used to be checked inside the write transaction, so
    // every unauthenticated POST queued behind (and then held) the single
    // SQLite writer. Hold the writer and post: the refusal must not wait.
    let p = start(Backend::Sqlite, |_| {}).await;
    let held = p.db().begin().await.unwrap();
    let sig = callback::sign(&"ab".repeat(32), "keel-1", 1);
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        p.call(
            "POST",
            &format!("/api/v1/callback/vm-ready?vm=keel-1&gen=1&sig={sig}"),
            &Cred::Anonymous,
            None,
        ),
    )
    .await
    .expect("a forged callback waited for the write lock");
    assert_eq!(r.status, 403, "{}", r.json);
    assert_eq!(r.json["error"], "forbidden");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_callback_before_installing_os_commits_is_not_lost() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(16, 1).await;
    // The provision step starts the VM and then does not commit until the
    // VM has phoned home: the callback meets a service in `creating_vm`.
    let hooked = HookedDriver::new(&f);
    hooked
        .hold_start
        .store(true, std::sync::atomic::Ordering::SeqCst);
    use_driver(&mut f, hooked.clone());
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    f.wait_status(id, "ready").await;
    assert_eq!(
        hooked.status_at_callback.lock().unwrap().as_deref(),
        Some("creating_vm")
    );
    assert_eq!(
        f.status_history(id).await,
        [
            "allocating",
            "creating_vm",
            "installing_os",
            "configuring",
            "ready"
        ]
    );
    // No OS-ready wait was armed, and one role run did the work.
    assert_eq!(f.jobs_of_kind(id, "vm_os_ready").await, 0);
    assert_eq!(f.jobs_of_kind(id, "configure").await, 1);
    assert!(f.role_file(id).exists());
    // The callback was recorded once: a replay now is a duplicate.
    let (vm, gen, secret) = f.callback_params(id).await;
    let r = f
        .post_callback(&vm, gen, &callback::sign(&secret, &vm, gen))
        .await;
    assert_eq!(r.json["status"], "duplicate", "{}", r.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_os_ready_failure_after_a_callback_keeps_the_vm() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(17, 1).await;
    // Only the hypervisor queue: the service stays in `configuring`.
    f.worker(&["hypervisor"]);
    let id = f.create().await;
    f.wait_status(id, "configuring").await;
    let vm = f.prov.vm_name(id);
    // The last OS-ready attempt decided "no callback" just before the
    // callback committed, and now gives up: it must change nothing.
    let os_ready = f
        .panel
        .db()
        .store()
        .jobs(&JobFilter {
            kind: Some("vm_os_ready".into()),
            serial_key: Some(servers::service_key(id)),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(os_ready.len(), 1);
    let step = provision::steps::os_ready::OsReadyStep(f.prov.clone());
    keel_panel::queue::JobHandler::on_failure(
        &step,
        f.panel.db().store(),
        &os_ready[0],
        keel_panel::queue::Failure::text(
            "the VM did not call back within 300 s, 2 power cycle(s) included",
        ),
    )
    .await
    .unwrap();
    let s = f.service(id).await;
    assert_eq!(s["status"], "configuring", "{s}");
    assert_eq!(s["hostname"], "flow17-0.example.org", "{s}");
    assert!(!s["vm"].is_null(), "{s}");
    assert!(f.driver.status(&vm).await.is_ok());
    // And the flow goes on to `ready`.
    f.worker(&["default"]);
    f.wait_status(id, "ready").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_failed_compensation_delete_keeps_the_address_and_retry_replaces_the_vm() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(18, 1).await;
    // Callbacks go to a port nothing listens on yet; no power cycles.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    {
        let p = Arc::get_mut(&mut f.prov).unwrap();
        p.callback_port = port;
        p.config.os_ready_resets = 0;
    }
    let hooked = HookedDriver::new(&f);
    hooked
        .fail_delete
        .store(true, std::sync::atomic::Ordering::SeqCst);
    use_driver(&mut f, hooked.clone());
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    f.wait_status(id, "installing_os").await;
    let vm = f.prov.vm_name(id);
    f.panel.clock.advance(Duration::from_secs(301));
    let s = f.wait_status(id, "failed").await;
    // The VM could not be deleted: it, its record and its address stay.
    assert!(f.driver.status(&vm).await.is_ok());
    assert!(!s["vm"].is_null(), "{s}");
    assert_eq!(s["hostname"], "flow18-0.example.org", "{s}");
    let mut rc = f.panel.db().read().await.unwrap();
    let mut conn = rc.conn();
    let step = keel_panel::scalar!(
        &mut conn,
        String,
        "SELECT failed_step FROM vm_provisioning WHERE service_id = $1",
        id
    )
    .unwrap();
    assert_eq!(step.as_deref(), Some("os_ready"));
    drop(rc);
    let old_root = f.driver.root_dir(&vm);
    let marker = old_root.join("etc/keel-old-vm");
    std::fs::write(&marker, "").unwrap();

    // The hypervisor answers again; a retry removes the stale VM and builds
    // a new one (new seed generation) on the address it kept.
    hooked
        .fail_delete
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .unwrap();
    let app = keel_panel::api::callback_router(f.panel.state.clone())
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/retry"),
            &f.owner,
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    let s = f.wait_status(id, "ready").await;
    assert_eq!(s["hostname"], "flow18-0.example.org");
    let (_, gen, _) = f.callback_params(id).await;
    assert_eq!(gen, 2);
    assert!(!f.driver.root_dir(&vm).join("etc/keel-old-vm").exists());
    assert_eq!(
        std::fs::read_to_string(f.role_file(id)).unwrap(),
        "flow18-0.example.org small keeladmin\n"
    );
}

#[test]
fn regression_panel_key_survives_a_missing_public_half() {
    let dir = tempfile::tempdir().unwrap();
    let first = provision::PanelKey::load_or_create(dir.path()).unwrap();
    let private = std::fs::read(&first.private_path).unwrap();
    std::fs::remove_file(dir.path().join("id_ed25519.pub")).unwrap();
    let again = provision::PanelKey::load_or_create(dir.path()).unwrap();
    assert_eq!(std::fs::read(&again.private_path).unwrap(), private);
    let key_of = |line: &str| {
        ssh_key::PublicKey::from_openssh(line)
            .unwrap()
            .key_data()
            .clone()
    };
    assert_eq!(key_of(&again.public_line), key_of(&first.public_line));
    let written = std::fs::read_to_string(dir.path().join("id_ed25519.pub")).unwrap();
    assert_eq!(written.trim(), again.public_line);
}

/// Polls a job until it leaves `queued`/`running`; returns its final state.
async fn wait_job(f: &FlowPanel, id: i64, job: i64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = f.service(id).await;
        let state = s["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["id"] == job))
            .and_then(|j| j["state"].as_str())
            .unwrap_or_default()
            .to_string();
        if !matches!(state.as_str(), "" | "queued" | "running") {
            return state;
        }
        assert!(Instant::now() < deadline, "job {job} still {state}: {s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_off_and_start_a_ready_server_through_jobs() {
    if !can_run() {
        return;
    }
    let mut f = FlowPanel::start(19, 1).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    f.wait_status(id, "ready").await;
    let vm = f.prov.vm_name(id);
    let url = format!("/api/v1/services/{id}/power");

    // SSH-only members of the site may not power the server.
    let (_, ssh_t) = f.panel.user("sshonly", false).await;
    sites::set_member(f.panel.db(), &Principal::system(), f.site, "sshonly", "ssh")
        .await
        .unwrap();
    let r = f
        .panel
        .call(
            "POST",
            &url,
            &Cred::Bearer(ssh_t),
            Some(json!({"action": "power_off"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json);
    let r = f
        .panel
        .call("POST", &url, &f.owner, Some(json!({"action": "hibernate"})))
        .await;
    assert_eq!(r.status, 422, "{}", r.json);
    assert_eq!(r.json["field"], "action", "{}", r.json);
    assert_eq!(f.jobs_of_kind(id, "power").await, 0);

    let r = f
        .panel
        .call("POST", &url, &f.owner, Some(json!({"action": "power_off"})))
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    let job = r.json["job_id"].as_i64().unwrap();
    assert_eq!(wait_job(&f, id, job).await, "succeeded");
    assert_eq!(
        f.driver.status(&vm).await.unwrap().power,
        keel_panel::hypervisor::PowerState::Stopped
    );
    assert_eq!(f.service(id).await["vm"]["power_state"], "stopped");

    let r = f
        .panel
        .call("POST", &url, &f.owner, Some(json!({"action": "start"})))
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    let job = r.json["job_id"].as_i64().unwrap();
    assert_eq!(wait_job(&f, id, job).await, "succeeded");
    assert_eq!(
        f.driver.status(&vm).await.unwrap().power,
        keel_panel::hypervisor::PowerState::Running
    );
    assert_eq!(f.service(id).await["vm"]["power_state"], "running");
    assert_eq!(f.jobs_of_kind(id, "power").await, 2);

    // Each request left an audit row naming its action.
    let audit = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=200"),
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await;
    let actions: Vec<String> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service.power")
        .filter_map(|e| {
            let after: Value = serde_json::from_str(e["after_json"].as_str()?).ok()?;
            Some(after["action"].as_str()?.to_string())
        })
        .collect();
    assert_eq!(actions.len(), 2, "{}", audit.json);
    assert!(
        actions.contains(&"power_off".to_string()) && actions.contains(&"start".to_string()),
        "{actions:?}"
    );

    // Once the server is going away, power requests are refused.
    let r = f
        .panel
        .call("DELETE", &format!("/api/v1/services/{id}"), &f.owner, None)
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    let r = f
        .panel
        .call("POST", &url, &f.owner, Some(json!({"action": "start"})))
        .await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ready"),
        "{}",
        r.json
    );
    f.wait_status(id, "deleted").await;
    assert_eq!(f.jobs_of_kind(id, "power").await, 2);
}
