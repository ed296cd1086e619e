//! The provisioning flow: from "Create server" to a configured, running VM.
//!
//! `services::servers::create` claims the address and enqueues `provision`;
//! from there every step is a durable, idempotent job (`steps/`, one file
//! per job kind):
//!
//! ```text
//! requested ─► allocating ─► creating_vm ─► installing_os ─► configuring ─► ready
//!   provision job: address, seed,            │ vm_os_ready job:   │ configure job:
//!   driver create + start                    │ timeout, reset, N× │ host key, roles
//!                                            └─ POST /callback/vm-ready (HMAC) ─┘
//! any step, for good ─► failed (reason, failed step; compensation) ─► retry ─► requested
//! delete ─► deleting ─► deprovision job ─► deleted
//! ```
//!
//! Layout: `steps/` the step handlers and their compensation, `callback.rs`
//! the VM-ready callback (HMAC, replay safety), `hostkey.rs` the SSH banner
//! wait, host-key check and known_hosts files, `inventory.rs` the dynamic
//! inventory (served to consumers and used by the role run), `scrape.rs`
//! the pages a server serves only to itself (its node exporter, Apache's
//! status page), fetched through its SSH connection for the analytics,
//! `console.rs` the backends of the console page (a libvirt VM's serial
//! line, or a shell over SSH with the pinned host key).
//!
//! Only the hypervisor drivers talk to the hypervisor; this module decides
//! what to ask them and records what they answered.

pub mod callback;
pub mod console;
pub mod hostkey;
pub mod hosts;
pub mod inventory;
pub mod reason;
pub mod scrape;
pub mod steps;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{
    AccessConfig, AcmeConfig, AnalyticsConfig, Config, DnsConfig, HypervisorConfig, LdapConfig,
    NetworkConfig, SitesConfig,
};
use crate::db::Db;
use crate::domain::PanelError;
use crate::hypervisor::seed::{HostKeys, SeedError};
use crate::hypervisor::{Driver, DriverError};
use crate::lifecycle::Step;
use crate::queue::JobError;

pub use hosts::HostDrivers;
pub use reason::FailureReason;
pub use steps::{reconverge, register};

/// Why a step failed. [`ProvisionError::into_job_error`] classifies it for
/// the step's retry policy.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Panel(#[from] PanelError),
    #[error("seed: {0}")]
    Seed(#[from] SeedError),
    /// Publishing DNS records failed (`dns` jobs).
    #[error("dns: {0}")]
    Dns(#[from] crate::dns::DnsError),
    /// Ordering a certificate from the ACME server failed (`certificate`
    /// jobs).
    #[error("{0}")]
    Acme(#[from] crate::acme::AcmeError),
    /// A certificate cannot be installed as it is (the ACME server's does
    /// not cover the vhost, say): no retry helps.
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The VM presented another host key than the one the panel generated.
    #[error("host key mismatch: expected {expected}, the VM presented {seen}")]
    HostKeyMismatch { expected: String, seen: String },
    /// The pools of the service's type have no free address left.
    #[error("no free address left in the {pool_type} pools")]
    PoolExhausted { pool_type: String },
    /// No hypervisor host may take the server (the reason for each).
    #[error("{0}")]
    NoCapacity(String),
    /// The OS-ready wait gives up: no callback, power cycles included.
    #[error("the VM did not call back within {timeout_secs} s, {resets} power cycle(s) included")]
    NoCallback { timeout_secs: u64, resets: i64 },
    /// sshd not up yet, connection refused, handshake cut: try again.
    #[error("ssh: {0}")]
    Ssh(String),
    /// The playbook does not load: no retry will help.
    #[error("playbook: {0}")]
    Playbook(String),
    /// The role run failed or a host was unreachable; `task` is the last
    /// task that failed a host, when the engine got that far.
    #[error("role run failed: {detail}")]
    RoleRun {
        task: Option<String>,
        detail: String,
    },
    /// A fact the flow needs is missing (no address, no state row).
    #[error("{0}")]
    Missing(String),
    /// A clone's production server is not ready to be copied.
    #[error("the production server is {status}, not ready")]
    SourceNotReady { status: crate::lifecycle::Status },
    /// The server is not ready for this job yet (an `access` job waiting
    /// for `configure` to finish): try again later.
    #[error("not ready yet: {0}")]
    NotReady(String),
    /// The job's lease was lost, it was cancelled or the worker is
    /// stopping: the step stops between two actions. Retryable, so a lost
    /// lease leaves the work to whichever worker owns the job now.
    #[error("stopped: the job was cancelled or its lease lost")]
    Cancelled,
}

impl ProvisionError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ProvisionError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn into_job_error(self) -> JobError {
        match &self {
            ProvisionError::Driver(e) if e.is_retryable() => JobError::retryable(self),
            ProvisionError::Dns(e) if e.is_retryable() => JobError::retryable(self),
            ProvisionError::Acme(e) if e.is_retryable() => JobError::retryable(self),
            ProvisionError::Driver(_)
            | ProvisionError::Dns(_)
            | ProvisionError::Acme(_)
            | ProvisionError::Certificate(_)
            | ProvisionError::Seed(_)
            | ProvisionError::HostKeyMismatch { .. }
            | ProvisionError::PoolExhausted { .. }
            | ProvisionError::NoCapacity(_)
            | ProvisionError::NoCallback { .. }
            | ProvisionError::Playbook(_)
            | ProvisionError::SourceNotReady { .. }
            | ProvisionError::Missing(_) => JobError::permanent(self),
            ProvisionError::Panel(_)
            | ProvisionError::Io { .. }
            | ProvisionError::Ssh(_)
            | ProvisionError::RoleRun { .. }
            | ProvisionError::NotReady(_)
            | ProvisionError::Cancelled => JobError::retryable(self),
        }
    }

    /// [`Self::into_job_error`] for a step of the flow, carrying the
    /// tenant's reason (from this error's variant) to the step's
    /// `on_failure`, should this error kill the job.
    pub fn into_step_error(self, step: Step, os_ready_resets: u32) -> JobError {
        let reason = FailureReason::of(step, &self, os_ready_resets);
        self.into_job_error().with_detail(reason.to_detail())
    }
}

impl ProvisionError {
    /// A domain error, with "no host has room" kept apart: no retry helps.
    pub fn from_panel(e: PanelError) -> Self {
        match e {
            PanelError::NoCapacity(why) => ProvisionError::NoCapacity(why),
            e => ProvisionError::Panel(e),
        }
    }
}

impl From<crate::store::StoreError> for ProvisionError {
    fn from(e: crate::store::StoreError) -> Self {
        ProvisionError::Panel(PanelError::Store(e))
    }
}

impl From<sqlx::Error> for ProvisionError {
    fn from(e: sqlx::Error) -> Self {
        ProvisionError::Panel(PanelError::Database(e))
    }
}

/// The panel's own SSH key pair, the admin key every VM is seeded with and
/// the identity of the role run. Generated once into the data directory.
#[derive(Debug, Clone)]
pub struct PanelKey {
    /// OpenSSH private key file (mode 0600).
    pub private_path: PathBuf,
    /// `ssh-ed25519 AAAA… keel-panel`.
    pub public_line: String,
}

impl PanelKey {
    /// Loads `<dir>/id_ed25519(.pub)`, generating the pair the first time.
    ///
    /// An existing private key is never replaced: every VM trusts it, so a
    /// new one would lock the panel out of all of them. The public line is
    /// derived from it (and the `.pub` file rewritten when it is missing).
    pub fn load_or_create(dir: &Path) -> Result<PanelKey, ProvisionError> {
        let private_path = dir.join("id_ed25519");
        let public_path = dir.join("id_ed25519.pub");
        if private_path.exists() {
            let invalid = |e: ssh_key::Error| {
                ProvisionError::io(
                    format!("reading {}", private_path.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                )
            };
            let key = ssh_key::PrivateKey::read_openssh_file(&private_path).map_err(invalid)?;
            let public_line = key
                .public_key()
                .to_openssh()
                .map_err(invalid)?
                .trim()
                .to_string();
            if !public_path.is_file() {
                std::fs::write(&public_path, format!("{public_line}\n")).map_err(|e| {
                    ProvisionError::io(format!("writing {}", public_path.display()), e)
                })?;
            }
            return Ok(PanelKey {
                private_path,
                public_line,
            });
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| ProvisionError::io(format!("creating {}", dir.display()), e))?;
        let keys = HostKeys::generate("keel-panel")?;
        write_private(&private_path, keys.ed25519_private.as_bytes())?;
        std::fs::write(&public_path, format!("{}\n", keys.ed25519_public.trim()))
            .map_err(|e| ProvisionError::io(format!("writing {}", public_path.display()), e))?;
        Ok(PanelKey {
            private_path,
            public_line: keys.ed25519_public.trim().to_string(),
        })
    }
}

/// Writes a secret file readable by its owner only, atomically.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| ProvisionError::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ProvisionError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| ProvisionError::io(format!("renaming to {}", path.display()), e))
}

/// What the step handlers share: the database, the driver of each
/// hypervisor host (none when `hypervisor.driver = "none"` and no hosts
/// are configured), the flow's configuration and the panel's files (SSH
/// key, known_hosts).
#[derive(Clone)]
pub struct Provisioner {
    pub db: Db,
    /// The driver of each host; [`Provisioner::driver_for`] finds the one
    /// that holds a server's VM.
    pub hosts: HostDrivers,
    pub config: HypervisorConfig,
    /// UID and GID ranges and the playbook of `access` jobs.
    pub access: AccessConfig,
    /// The directory behind lookup groups (`lookup_refresh` jobs).
    pub ldap: LdapConfig,
    /// Where servers' records are published (`dns` jobs); off when its
    /// `server` is empty.
    pub dns: DnsConfig,
    /// The playbooks of what site admins apply (`vhosts`, `packages` jobs).
    pub sites: SitesConfig,
    /// The ACME server certificates are ordered from (`certificate` jobs);
    /// off when its `directory_url` is empty.
    pub acme: AcmeConfig,
    /// How figures are read from servers (`metrics_collect` jobs).
    pub analytics: AnalyticsConfig,
    pub data_dir: PathBuf,
    /// Port VMs call back on when `callback_url` is empty.
    pub callback_port: u16,
    /// `None` without a hypervisor driver: no VM will ever need it, and a
    /// panel without one leaves no key behind.
    pub key: Option<PanelKey>,
    /// Where connections to user-supplied locations may go (`outbound.rs`).
    pub outbound: crate::outbound::Outbound,
    /// Each pool's network (`[networks.<pool>]`), by pool name.
    pub networks: std::collections::BTreeMap<String, crate::config::NetworkConfig>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("hosts", &self.hosts)
            .field("data_dir", &self.data_dir)
            .field("callback_port", &self.callback_port)
            .finish()
    }
}

impl Provisioner {
    /// Builds the flow's context from the panel configuration with one
    /// driver (or none), registered as the configured host's (the only
    /// one, or [`DEFAULT_HOST`](crate::config::DEFAULT_HOST)); with a
    /// driver, generates the panel's SSH key on first use.
    pub fn new(
        db: Db,
        driver: Option<Arc<dyn Driver>>,
        config: &Config,
    ) -> Result<Provisioner, ProvisionError> {
        let hosts = match driver {
            Some(d) => {
                let list = config.hypervisor.host_list();
                let name = match list.as_slice() {
                    [only] => only.name.clone(),
                    _ => crate::config::DEFAULT_HOST.to_string(),
                };
                HostDrivers::single(&name, d)
            }
            None => HostDrivers::default(),
        };
        Self::with_hosts(db, hosts, config)
    }

    /// The flow's context with the driver of each host.
    pub fn with_hosts(
        db: Db,
        hosts: HostDrivers,
        config: &Config,
    ) -> Result<Provisioner, ProvisionError> {
        let callback_port = match config.hypervisor.callback_listen() {
            Ok(Some(addr)) => addr.port(),
            _ => config.listen.port(),
        };
        let key = match hosts.is_empty() {
            false => Some(PanelKey::load_or_create(&config.data_dir.join("ssh"))?),
            true => None,
        };
        Ok(Provisioner {
            db,
            hosts,
            config: config.hypervisor.clone(),
            access: config.access.clone(),
            ldap: config.ldap.clone(),
            dns: config.dns.clone(),
            sites: config.sites.clone(),
            acme: config.acme.clone(),
            analytics: config.analytics.clone(),
            data_dir: config.data_dir.clone(),
            callback_port,
            key,
            outbound: crate::outbound::Outbound::new(&config.outbound),
            networks: config.networks.clone(),
        })
    }

    /// The driver of the host that holds service `id`'s VM; `None` when
    /// no driver is configured, or when the service holds no host and
    /// several are configured (its VM was deleted and its room given back,
    /// or it was never placed). A host marked down answers "unavailable",
    /// which the steps retry, so nothing is done to (or concluded about) a
    /// VM on it until it is back.
    pub async fn driver_for(&self, id: i64) -> Result<Option<Arc<dyn Driver>>, ProvisionError> {
        let placement = {
            let mut rc = self.db.read().await?;
            crate::services::hosts::placement_of(&mut rc.conn(), id).await?
        };
        self.driver_at(placement.host.as_deref(), placement.host_state.as_deref())
    }

    /// [`Self::driver_for`] with the host already read.
    pub fn driver_at(
        &self,
        host: Option<&str>,
        state: Option<&str>,
    ) -> Result<Option<Arc<dyn Driver>>, ProvisionError> {
        let Some(name) = host else {
            return Ok(self.hosts.only().map(|(_, d)| d.clone()));
        };
        if state == Some(crate::services::hosts::HostState::Down.as_str()) {
            return Err(
                DriverError::Unavailable(format!("hypervisor host {name} is marked down")).into(),
            );
        }
        match self.hosts.get(name) {
            Some(d) => Ok(Some(d.clone())),
            None => Err(DriverError::Unavailable(format!(
                "hypervisor host {name} is not configured in this process"
            ))
            .into()),
        }
    }

    /// [`Self::driver_for`], which must find one.
    pub async fn require_driver_for(&self, id: i64) -> Result<Arc<dyn Driver>, ProvisionError> {
        self.driver_for(id)
            .await?
            .ok_or_else(|| ProvisionError::Missing("no hypervisor driver is configured".into()))
    }

    /// The panel's SSH key, which seeds and role runs need.
    pub fn panel_key(&self) -> Result<&PanelKey, ProvisionError> {
        self.key.as_ref().ok_or_else(|| {
            ProvisionError::Missing(
                "no hypervisor driver is configured, so no panel SSH key".into(),
            )
        })
    }

    /// The name of a service's VM (`<vm_prefix><id>`, `keel-<id>` by
    /// default): stable, so a retried `create` finds it.
    pub fn vm_name(&self, service_id: i64) -> String {
        format!("{}{service_id}", self.config.vm_prefix)
    }

    /// The known_hosts file of one VM (the role run trusts only this).
    pub fn known_hosts_path(&self, vm: &str) -> PathBuf {
        self.data_dir.join("known_hosts.d").join(vm)
    }

    /// The network of pool `pool`, when `[networks.<pool>]` names it.
    pub fn network_of(&self, pool: &str) -> Option<&NetworkConfig> {
        self.networks.get(pool)
    }

    /// The resolvers a VM gets: its network's, else the configured ones,
    /// else QEMU user-mode's built-in one (network address + 3) under
    /// libvirt's private network. A VM on a bridge with none configured
    /// gets none: its network's resolvers are the operator's to name.
    pub fn nameservers(
        &self,
        network: Option<&NetworkConfig>,
        net: &crate::hypervisor::NetIdentity,
    ) -> Vec<std::net::IpAddr> {
        if let Some(n) = network.filter(|n| !n.nameservers.is_empty()) {
            return n.nameservers.clone();
        }
        if !self.config.nameservers.is_empty() {
            return self.config.nameservers.clone();
        }
        if net.attach.bridge().is_some() {
            return Vec::new();
        }
        match (self.hosts.common_kind(), net.ipv4) {
            (Some("libvirt"), Some(ip)) => {
                let Ok(network) = ipnet::Ipv4Net::new(ip, net.prefix4) else {
                    return Vec::new();
                };
                let dns = u32::from(network.network()).saturating_add(3);
                vec![std::net::IpAddr::V4(std::net::Ipv4Addr::from(dns))]
            }
            _ => Vec::new(),
        }
    }

    /// The base of the callback URL for a VM on `network` whose IPv4
    /// gateway is `gateway4`: the network's `callback_url`, else
    /// `hypervisor.callback_url`, else the panel's port at the gateway.
    pub fn callback_base(
        &self,
        network: Option<&NetworkConfig>,
        gateway4: Option<&str>,
    ) -> Result<String, ProvisionError> {
        let own = network.map(|n| n.callback_url.trim()).unwrap_or_default();
        let base = if own.is_empty() {
            self.config.callback_url.trim()
        } else {
            own
        }
        .trim_end_matches('/');
        if !base.is_empty() {
            return Ok(base.to_string());
        }
        let gw = gateway4.ok_or_else(|| {
            ProvisionError::Missing(
                "hypervisor.callback_url is empty and the address has no IPv4 gateway to derive it from"
                    .into(),
            )
        })?;
        Ok(format!(
            "http://{}",
            SocketAddr::new(
                gw.parse().map_err(|_| ProvisionError::Missing(format!(
                    "gateway {gw:?} is not an IP address"
                )))?,
                self.callback_port
            )
        ))
    }
}
