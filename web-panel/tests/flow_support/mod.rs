//! [`FlowPanel`]: a panel with the provisioning flow on the real container
//! driver (`systemd-nspawn`), a worker on chosen queues and the
//! callback-only listener, as the flow tests (`provision_flow.rs`,
//! `access_flow.rs`) drive it through the REST API.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api_support::{self, start, Backend, Cred, Panel};
use crate::e2e_support::{IMAGE, IMAGES};
use keel_panel::alloc::{self, AddressRecord, PoolFile};
use keel_panel::domain::Principal;
use keel_panel::hypervisor::nspawn::{NspawnConfig, NspawnDriver};
use keel_panel::hypervisor::{Driver, ImageStore};
use keel_panel::provision::{self, Provisioner};
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::JobFilter;
use keel_panel::services::{catalog, servers};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(240);

/// A panel with the provisioning flow on a real driver.
pub struct FlowPanel {
    pub panel: Panel,
    /// The driver of the first (or only) host.
    pub driver: Arc<NspawnDriver>,
    /// With `[[hypervisor.hosts]]` configured: each host's driver, each in
    /// a state directory of its own (`<tmp>/state-<host>`).
    pub host_drivers: Vec<(String, Arc<NspawnDriver>)>,
    pub prov: Arc<Provisioner>,
    pub owner: Cred,
    pub admin_token: String,
    pub site: i64,
    workers: Vec<CancellationToken>,
    _dir: tempfile::TempDir,
}

/// The name of the flow's pool with `gateway`: `flow-<third octet>` for
/// 10.233.X.1, else `flow-<the address with dashes>` (a network
/// configured for the pool takes this name).
pub fn pool_name(gateway: Ipv4Addr) -> String {
    match gateway.octets() {
        [10, 233, x, 1] => format!("flow-{x}"),
        o => format!("flow-{}-{}-{}-{}", o[0], o[1], o[2], o[3]),
    }
}

impl FlowPanel {
    /// `subnet`: the third octet of this test's 10.233.X.0/24 pool, so
    /// tests running at once never share addresses; `addresses`: pool size.
    pub async fn start(subnet: u8, addresses: u8) -> FlowPanel {
        Self::start_with(subnet, addresses, |_| {}).await
    }

    /// [`Self::start`] with more configuration (`tweak` runs last).
    pub async fn start_with(
        subnet: u8,
        addresses: u8,
        tweak: impl FnOnce(&mut keel_panel::config::Config) + Send + 'static,
    ) -> FlowPanel {
        Self::start_on(Backend::Sqlite, subnet, addresses, tweak).await
    }

    /// [`Self::start_with`] on the given database backend.
    pub async fn start_on(
        backend: Backend,
        subnet: u8,
        addresses: u8,
        tweak: impl FnOnce(&mut keel_panel::config::Config) + Send + 'static,
    ) -> FlowPanel {
        Self::start_in(
            backend,
            Ipv4Addr::new(10, 233, subnet, 1),
            24,
            addresses,
            tweak,
        )
        .await
    }

    /// [`Self::start_on`] with the pool in `gateway/prefix`: the gateway
    /// is its first address, the servers' addresses follow from the
    /// gateway's plus 9, and the pool is named [`pool_name`]`(gateway)`.
    pub async fn start_in(
        backend: Backend,
        gateway: Ipv4Addr,
        prefix: u8,
        addresses: u8,
        tweak: impl FnOnce(&mut keel_panel::config::Config) + Send + 'static,
    ) -> FlowPanel {
        let subnet = gateway.octets()[2];
        let addr = |n: u8| Ipv4Addr::from(u32::from(gateway) + u32::from(n) - 1).to_string();
        let netmask = Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix))).to_string();
        let dir = tempfile::Builder::new()
            .prefix("keel-flow-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let data_dir = dir.path().join("data");
        let vm_prefix = format!("kf{subnet}x{}-", fastrand::u16(..));
        let playbook =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/provision_flow_data/site.yml");
        let dd = data_dir.clone();
        let pf = vm_prefix.clone();
        let panel = start(backend, move |c| {
            c.data_dir = dd;
            c.hypervisor.driver = "nspawn".into();
            c.hypervisor.vm_prefix = pf;
            c.hypervisor.playbook = playbook;
            c.hypervisor.configure_retry_secs = 1;
            c.hypervisor.api_retry_secs = 1;
            tweak(c);
        })
        .await;
        let hosts = panel.state.config.hypervisor.hosts.clone();
        let nspawn = |state: &str| {
            let mut cfg = NspawnConfig::new(ImageStore::new(IMAGES));
            cfg.state_dir = dir.path().join(state);
            cfg.prefix = vm_prefix.clone();
            Arc::new(NspawnDriver::new(cfg))
        };
        let (driver, host_drivers, mut prov) = if hosts.is_empty() {
            let driver = nspawn("state");
            let dyn_driver: Arc<dyn Driver> = driver.clone();
            let prov = Provisioner::new(panel.db().clone(), Some(dyn_driver), &panel.state.config)
                .unwrap();
            (driver, Vec::new(), prov)
        } else {
            let mut registry = provision::HostDrivers::default();
            let mut list = Vec::new();
            for h in &hosts {
                let d = nspawn(&format!("state-{}", h.name));
                registry.insert(&h.name, d.clone());
                list.push((h.name.clone(), d));
            }
            keel_panel::services::hosts::sync(panel.db(), &panel.state.config.hypervisor)
                .await
                .unwrap();
            let prov =
                Provisioner::with_hosts(panel.db().clone(), registry, &panel.state.config).unwrap();
            (list[0].1.clone(), list, prov)
        };
        // The callback-only listener, on every address: containers reach it
        // at their gateway (the host side of their veth).
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        prov.callback_port = listener.local_addr().unwrap().port();
        let app = keel_panel::api::callback_router(panel.state.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let system = Principal::system();
        catalog::create(
            panel.db(),
            &system,
            &catalog::NewServerType {
                name: "small".into(),
                cpus: 1,
                ram_mb: 512,
                disk_gb: 4,
                os_image: IMAGE.into(),
                roles: vec![],
                stack: None,
            },
        )
        .await
        .unwrap();
        let pool = PoolFile {
            pool: pool_name(gateway),
            pool_type: "public".into(),
            quarantine_secs: Some(3600),
            addresses: (0..addresses)
                .map(|i| AddressRecord {
                    hostname: format!("flow{subnet}-{i}.example.org"),
                    ipv4: Some(addr(10 + i)),
                    ipv6: None,
                    gateway4: Some(addr(1)),
                    netmask4: Some(netmask.clone()),
                    gateway6: None,
                    prefix6: None,
                })
                .collect(),
        };
        alloc::import(panel.db(), &system, &pool, 3600)
            .await
            .unwrap();
        let (_, owner_t) = panel.user("owner", false).await;
        let (_, admin_t) = panel.user("root", true).await;
        let owner = Cred::Bearer(owner_t);
        let site = panel
            .call(
                "POST",
                "/api/v1/sites",
                &owner,
                Some(json!({"name": "Main Site", "owner_email": "o@example.org"})),
            )
            .await
            .json["id"]
            .as_i64()
            .unwrap();
        FlowPanel {
            panel,
            driver,
            host_drivers,
            prov: Arc::new(prov),
            owner,
            admin_token: admin_t,
            site,
            workers: Vec::new(),
            _dir: dir,
        }
    }

    /// Starts a worker on `queues` with the flow's handlers.
    pub fn worker(&mut self, queues: &[&str]) {
        let mut registry = Registry::new();
        provision::register(&mut registry, self.prov.clone());
        let cfg = WorkerConfig {
            concurrency: 4,
            queues: queues.iter().map(|q| QueueConfig::new(*q)).collect(),
            poll_every: Duration::from_millis(200),
            // Cancellation reaches a running job at its next heartbeat.
            heartbeat_every: Duration::from_millis(500),
            ..WorkerConfig::default()
        };
        let w = Arc::new(Worker::new(self.panel.db().store().clone(), registry, cfg));
        let stop = CancellationToken::new();
        tokio::spawn(w.run(stop.clone()));
        self.workers.push(stop);
    }

    pub async fn create(&self) -> i64 {
        let r = self
            .panel
            .call(
                "POST",
                "/api/v1/services",
                &self.owner,
                Some(json!({"site_id": self.site, "server_type": "small"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        r.json["service"]["id"].as_i64().unwrap()
    }

    pub async fn service(&self, id: i64) -> Value {
        self.panel
            .call("GET", &format!("/api/v1/services/{id}"), &self.owner, None)
            .await
            .json
    }

    pub async fn wait_status(&self, id: i64, want: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.service(id).await;
            let status = s["status"].as_str().unwrap_or_default().to_string();
            if status == want {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "service {id} is {status}, not {want}, after {WAIT:?}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The statuses the audit log recorded for a service, in order.
    pub async fn status_history(&self, id: i64) -> Vec<String> {
        let r = self
            .panel
            .call(
                "GET",
                &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=200"),
                &Cred::Bearer(self.admin_token.clone()),
                None,
            )
            .await;
        let items = r.json["items"].as_array().cloned().unwrap_or_default();
        let mut out: Vec<(i64, String)> = items
            .iter()
            .filter(|e| e["action"] == "service.status")
            .filter_map(|e| {
                let after: Value = serde_json::from_str(e["after_json"].as_str()?).ok()?;
                Some((e["id"].as_i64()?, after["status"].as_str()?.to_string()))
            })
            .collect();
        out.sort();
        out.into_iter().map(|(_, s)| s).collect()
    }

    pub async fn jobs_of_kind(&self, id: i64, kind: &str) -> usize {
        self.panel
            .db()
            .store()
            .jobs(&JobFilter {
                serial_key: Some(servers::service_key(id)),
                kind: Some(kind.into()),
                ..JobFilter::default()
            })
            .await
            .unwrap()
            .len()
    }

    pub fn role_file(&self, id: i64) -> std::path::PathBuf {
        self.driver
            .root_dir(&self.prov.vm_name(id))
            .join("etc/keel-provisioned")
    }

    /// The current generation and secret of a VM, as stored.
    pub async fn callback_params(&self, id: i64) -> (String, i64, String) {
        let mut rc = self.panel.db().read().await.unwrap();
        let mut conn = rc.conn();
        let (name, gen, secret) = keel_panel::fetch_opt!(
            &mut conn,
            (String, i64, String),
            "SELECT vm_name, generation, callback_secret FROM vm_provisioning WHERE service_id = $1",
            id
        )
        .unwrap()
        .unwrap();
        (name, gen, secret)
    }

    pub async fn post_callback(&self, vm: &str, gen: i64, sig: &str) -> api_support::Reply {
        self.panel
            .call(
                "POST",
                &format!("/api/v1/callback/vm-ready?vm={vm}&gen={gen}&sig={sig}"),
                &Cred::Anonymous,
                None,
            )
            .await
    }
}

impl FlowPanel {
    /// Points apt on service `id`'s container at the local repository of
    /// the full test hosts (`keel_testhosts::full::local_repo`), copied
    /// into it, so roles install packages without the internet.
    pub fn use_local_repo(&self, id: i64) {
        let repo = keel_testhosts::full::local_repo(&[]).expect("the local apt repository");
        let root = self.driver.root_dir(&self.prov.vm_name(id));
        let inside = root.join(keel_testhosts::full::REPO_MOUNT.trim_start_matches('/'));
        std::fs::create_dir_all(&inside).unwrap();
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", repo.display()))
            .arg(&inside)
            .output()
            .unwrap();
        assert!(out.status.success(), "copying the repository: {out:?}");
        std::fs::write(
            root.join("etc/apt/sources.list"),
            format!(
                "deb [trusted=yes] file:{} ./\n",
                keel_testhosts::full::REPO_MOUNT
            ),
        )
        .unwrap();
        if let Ok(dir) = std::fs::read_dir(root.join("etc/apt/sources.list.d")) {
            for e in dir.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // The image carries the package lists of its build. Within the hour
        // after a build, `cache_valid_time: 3600` (as Ansible does) trusts
        // them and would look for packages at the build's mirror, so drop
        // them: the roles' `update_cache` then reads the local repository.
        if let Ok(dir) = std::fs::read_dir(root.join("var/lib/apt/lists")) {
            for e in dir.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) && e.file_name() != "lock" {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// ansible-playbook 2.19 runs `playbook` on the panel's inventory for
    /// the VM `vm`, with the panel's key and the VM's known_hosts; returns
    /// its output, `None` when it is not installed. Fails when it fails.
    pub fn ansible_run(
        &self,
        dir: &Path,
        inventory: &Value,
        vm: &str,
        playbook: &Path,
    ) -> Option<String> {
        let bin = Path::new("/opt/ansible-2.19/bin/ansible-playbook");
        if !bin.exists() {
            eprintln!("ansible-playbook 2.19 not installed: the cross-check is skipped");
            return None;
        }
        let script = dir.join("inventory.sh");
        let data = dir.join("inventory.json");
        std::fs::write(&data, inventory.to_string()).unwrap();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ \"$1\" = --list ]; then cat {}; else echo '{{}}'; fi\n",
                data.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let known = self.prov.known_hosts_path(vm);
        let key = &self.prov.panel_key().unwrap().private_path;
        let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles");
        let out = std::process::Command::new(bin)
            .env("ANSIBLE_ROLES_PATH", roles)
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .env("ANSIBLE_NOCOLOR", "1")
            .arg("-i")
            .arg(&script)
            .arg("--private-key")
            .arg(key)
            .arg("--ssh-common-args")
            .arg(format!("-o UserKnownHostsFile={}", known.display()))
            .arg(playbook)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "ansible-playbook failed:\n{text}");
        Some(text)
    }
}

impl FlowPanel {
    /// Runs `command` on service `id`'s server over SSH as the panel's
    /// admin account, with the panel's key and the server's pinned
    /// known_hosts only (`StrictHostKeyChecking=yes`): it fails when the
    /// server presents any other host key.
    pub async fn ssh_admin(&self, id: i64, command: &str) -> std::process::Output {
        let detail = self.service(id).await;
        let ip = detail["ipv4"].as_str().expect("the server's address");
        let vm = self.prov.vm_name(id);
        std::process::Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "PasswordAuthentication=no"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.prov.known_hosts_path(&vm).display()
            ))
            .arg("-i")
            .arg(&self.prov.panel_key().unwrap().private_path)
            .arg(format!(
                "{}@{ip}",
                self.panel.state.config.hypervisor.admin_user
            ))
            .arg(command)
            .output()
            .unwrap()
    }

    /// The service's jobs of `kind`, newest first, as the API shows them.
    pub async fn jobs_json(&self, id: i64, kind: &str) -> Vec<Value> {
        self.service(id).await["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["kind"] == kind)
            .cloned()
            .collect()
    }

    /// Waits until more than `before` jobs of `kind` exist and all have
    /// finished; each must have succeeded. Returns how many there are.
    pub async fn settle_kind(&self, id: i64, kind: &str, before: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let jobs = self.jobs_json(id, kind).await;
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
                "{kind} jobs still running: {jobs:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The text of a job's log, one line per event.
    pub async fn job_log(&self, job: i64) -> String {
        let r = self
            .panel
            .call(
                "GET",
                &format!("/api/v1/jobs/{job}/log?limit=1000"),
                &Cred::Bearer(self.admin_token.clone()),
                None,
            )
            .await;
        r.json["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|l| l["line"].to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| r.json.to_string())
    }

    /// Every audit row about service `id` with `action`, oldest first (the
    /// rows' `after`, parsed).
    pub async fn audit_after(&self, id: i64, action: &str) -> Vec<Value> {
        let r = self
            .panel
            .call(
                "GET",
                &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=500"),
                &Cred::Bearer(self.admin_token.clone()),
                None,
            )
            .await;
        let mut rows: Vec<(i64, Value)> = r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| {
                let after = e["after_json"]
                    .as_str()
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or(Value::Null);
                (e["id"].as_i64().unwrap(), after)
            })
            .collect();
        rows.sort_by_key(|(id, _)| *id);
        rows.into_iter().map(|(_, after)| after).collect()
    }
}

impl FlowPanel {
    /// Waits until every server in `ids` is ready; a stack run (in
    /// `first`'s job log) that fails on the way fails the test with its log.
    pub async fn wait_stack_ready(&self, first: i64, ids: &[i64]) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let mut ready = true;
            for id in ids {
                ready &= self.service(*id).await["status"] == "ready";
            }
            if ready {
                return;
            }
            for j in self.jobs_json(first, "stack_configure").await {
                if !j["last_error"].is_null() {
                    let log = self.job_log(j["id"].as_i64().unwrap()).await;
                    panic!("the stack's run failed: {j}\n{log}");
                }
            }
            assert!(Instant::now() < deadline, "not ready: {ids:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A bridge of the test's own with the pool's gateway address (`cidr`,
/// e.g. `10.233.65.1/24`), for servers that must reach each other (a
/// network configured with `bridge`); removed when dropped (a leftover
/// of a killed run is removed first).
pub struct Bridge(&'static str);

impl Bridge {
    pub fn up(name: &'static str, cidr: &str) -> Bridge {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", name])
            .output();
        for args in [
            ["link", "add", name, "type", "bridge"].as_slice(),
            &["addr", "add", cidr, "dev", name],
            &["link", "set", name, "up"],
        ] {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
        Bridge(name)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", self.0])
            .output();
    }
}

/// A host firewall rule (`iptables -I`), removed when dropped (a failed
/// assertion too).
pub struct HostRule(Vec<String>);

impl HostRule {
    pub fn insert(rule: &[&str]) -> HostRule {
        let rule: Vec<String> = rule.iter().map(|s| s.to_string()).collect();
        let out = std::process::Command::new("iptables")
            .args(["-w", "-I"])
            .args(&rule)
            .output()
            .unwrap();
        assert!(out.status.success(), "iptables: {out:?}");
        HostRule(rule)
    }
}

impl Drop for HostRule {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .args(["-w", "-D"])
            .args(&self.0)
            .output();
    }
}

/// A local apt repository (`keel_testhosts::full::local_repo`) served
/// over HTTP on one host address, so servers install from it
/// (`deb [trusted=yes] <url> ./`) and fetch only the packages they
/// install, instead of a copy of the whole repository each. Stops when
/// dropped.
pub struct RepoServer {
    pub url: String,
    stop: CancellationToken,
}

impl RepoServer {
    pub async fn start(repo: std::path::PathBuf, on: Ipv4Addr) -> RepoServer {
        use axum::extract::{Path as UrlPath, State};
        use axum::http::StatusCode;
        async fn file(
            State(root): State<Arc<std::path::PathBuf>>,
            UrlPath(path): UrlPath<String>,
        ) -> Result<Vec<u8>, StatusCode> {
            // A flat repository: file names only (apt asks for `./Packages`).
            let parts: Vec<&str> = path
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .collect();
            let [name] = parts[..] else {
                return Err(StatusCode::NOT_FOUND);
            };
            if name.starts_with('.') {
                return Err(StatusCode::NOT_FOUND);
            }
            tokio::fs::read(root.join(name))
                .await
                .map_err(|_| StatusCode::NOT_FOUND)
        }
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::get(file))
            .with_state(Arc::new(repo));
        let listener = tokio::net::TcpListener::bind((on, 0)).await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until.cancelled_owned())
                .await
        });
        RepoServer { url, stop }
    }
}

impl Drop for RepoServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Drop for FlowPanel {
    fn drop(&mut self) {
        for w in &self.workers {
            w.cancel();
        }
        let driver = self.driver.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            // All at once: removing a converged server's files takes a
            // while, and a stack has several.
            if let Ok(vms) = rt.block_on(driver.list()) {
                let _in = rt.enter();
                let mut all = tokio::task::JoinSet::new();
                for vm in vms {
                    let driver = driver.clone();
                    all.spawn(async move { driver.delete(&vm.name).await });
                }
                rt.block_on(all.join_all());
            }
        })
        .join();
    }
}
