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
        let dir = tempfile::Builder::new()
            .prefix("keel-flow-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let data_dir = dir.path().join("data");
        let prefix = format!("kf{subnet}x{}-", fastrand::u16(..));
        let playbook =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/provision_flow_data/site.yml");
        let dd = data_dir.clone();
        let pf = prefix.clone();
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
            cfg.prefix = prefix.clone();
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
            pool: format!("flow-{subnet}"),
            pool_type: "public".into(),
            quarantine_secs: Some(3600),
            addresses: (0..addresses)
                .map(|i| AddressRecord {
                    hostname: format!("flow{subnet}-{i}.example.org"),
                    ipv4: Some(Ipv4Addr::new(10, 233, subnet, 10 + i).to_string()),
                    ipv6: None,
                    gateway4: Some(Ipv4Addr::new(10, 233, subnet, 1).to_string()),
                    netmask4: Some("255.255.255.0".into()),
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
            if let Ok(vms) = rt.block_on(driver.list()) {
                for vm in vms {
                    let _ = rt.block_on(driver.delete(&vm.name));
                }
            }
        })
        .join();
    }
}
