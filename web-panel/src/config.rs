//! Panel configuration: built-in defaults, then an optional TOML file
//! (`--config FILE`), then `KEEL_*` environment variables, then command-line
//! flags. With nothing given, `keel-panel serve` keeps SQLite in
//! `./keel-panel-data/panel.db` and listens on 127.0.0.1:8080. Every key and
//! its default is listed in `docs/panel.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration. Unknown keys in the file are errors, so a typo
/// is not silently ignored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Directory for the embedded database (and later job output).
    pub data_dir: PathBuf,
    /// `sqlite:PATH` or `postgres://…`; empty means SQLite in `data_dir`.
    pub database_url: String,
    /// The URL users reach the panel at; `https://…` marks cookies `Secure`.
    pub public_url: String,
    pub auth: AuthConfig,
    pub sso: SsoConfig,
    pub workers: WorkersConfig,
    pub alloc: AllocConfig,
    pub tls: TlsConfig,
    pub hypervisor: HypervisorConfig,
    pub access: AccessConfig,
    pub ldap: LdapConfig,
    pub dns: DnsConfig,
    pub sites: SitesConfig,
    pub acme: AcmeConfig,
    pub analytics: AnalyticsConfig,
    pub metrics: MetricsConfig,
    pub outbound: OutboundConfig,
    /// The network of each address pool, by pool name
    /// (`[networks.<pool>]`); a pool without one uses the driver's private
    /// network (QEMU user-mode, a routed veth), the single-machine default.
    pub networks: BTreeMap<String, NetworkConfig>,
    /// The vCenter the `vsphere` driver works in (`hypervisor.driver = "vsphere"`).
    pub vsphere: VsphereConfig,
    /// Fault injection for the chaos soak; off unless set.
    pub chaos: ChaosConfig,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The database URL may carry a password.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("auth", &self.auth)
            .field("sso", &self.sso)
            .field("workers", &self.workers)
            .field("alloc", &self.alloc)
            .field("tls", &self.tls)
            .field("hypervisor", &self.hypervisor)
            .field("access", &self.access)
            .field("ldap", &self.ldap)
            .field("dns", &self.dns)
            .field("sites", &self.sites)
            .field("acme", &self.acme)
            .field("analytics", &self.analytics)
            .field("metrics", &self.metrics)
            .field("outbound", &self.outbound)
            .field("networks", &self.networks)
            .field("vsphere", &self.vsphere)
            .field("chaos", &self.chaos)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Failed logins (per account and per source address) before blocking.
    pub login_max_failures: i64,
    /// How long a block lasts, in seconds.
    pub login_block_secs: i64,
    pub session_ttl_secs: i64,
    /// Longest lifetime a new API token may ask for.
    pub token_max_days: i64,
    /// argon2id cost. The defaults are OWASP's (19 MiB, 2 passes).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsoConfig {
    /// Trust a user-name header set by a reverse proxy. Off by default.
    pub enabled: bool,
    pub header: String,
    /// Only requests from these peer addresses may carry the header.
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Job workers started inside `serve`; 0 runs none (a separate
    /// `keel-panel worker` process does the work).
    pub concurrency: usize,
    /// Queues as `NAME` or `NAME=LIMIT`.
    pub queues: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllocConfig {
    /// Quarantine for pools created without one, in seconds.
    pub default_quarantine_secs: i64,
}

/// Who may scrape `GET /metrics`. Both empty (the default) leaves it open
/// to anyone who reaches the listener, as the panel always did; either one
/// set closes it to everyone else, both set need both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A file holding the bearer token scrapers send
    /// (`Authorization: Bearer TOKEN`); read at each scrape, so it can be
    /// replaced without a restart. Empty: no token needed.
    pub token_file: String,
    /// Peer networks (CIDRs) allowed to scrape. Empty: any address.
    pub allow_from: Vec<IpNet>,
}

/// Where the panel may connect for locations users type in (HTTP
/// inventories, git URLs, webhooks, the ACME directory): `outbound.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// The networks such connections may reach at all.
    pub allow: Vec<IpNet>,
    /// Loopback, link-local (the metadata address 169.254.169.254 among
    /// them) and unspecified addresses are refused unless listed here too.
    pub allow_internal: Vec<IpNet>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow: vec![
                "0.0.0.0/0".parse().expect("a network"),
                "::/0".parse().expect("a network"),
            ],
            allow_internal: vec![],
        }
    }
}

/// Fault injection, for the chaos soak (`tests/e2e/chaos_soak.rs`,
/// `scripts/soak`) only: every share is 0 by default, which injects
/// nothing. A panel in production never sets these.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosConfig {
    /// Share of hypervisor driver calls that fail, half before and half
    /// after the real call (`hypervisor::faulty::FaultyDriver`), 0 to 1.
    pub driver_fault_fraction: f64,
    /// Seed of those faults; 0 draws one per process.
    pub driver_fault_seed: u64,
    /// Share of VM-ready callbacks answered 503 and otherwise ignored, as
    /// if lost on the way (the VM's cloud-init tries again), 0 to 1.
    pub callback_drop_fraction: f64,
}

impl ChaosConfig {
    /// Whether any fault is injected.
    pub fn enabled(&self) -> bool {
        self.driver_fault_fraction > 0.0 || self.callback_drop_fraction > 0.0
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("chaos.driver_fault_fraction", self.driver_fault_fraction),
            ("chaos.callback_drop_fraction", self.callback_drop_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "{key} is a share between 0 and 1, not {v}"
                )));
            }
        }
        Ok(())
    }
}

/// TLS served by the panel itself. Both files empty (the default) means
/// plain HTTP, for use behind a TLS-terminating proxy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

/// The hypervisor and the provisioning flow (`web-panel/src/provision/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HypervisorConfig {
    /// `none` (servers fail with a reason an admin can act on), `libvirt`,
    /// `nspawn`, `vsphere` (configured in `[vsphere]`) or `docker` (this
    /// machine's Docker Engine socket; other nodes are `[[hypervisor.hosts]]`).
    pub driver: String,
    /// libvirt connection URI.
    pub uri: String,
    /// Base images, as `images/build-debian` writes them.
    pub image_dir: PathBuf,
    /// Per-VM disks, seeds and machine state; empty means `<data_dir>/vms`.
    pub state_dir: PathBuf,
    /// Base URL VMs call back to (`…/api/v1/callback/vm-ready` is added).
    /// Empty: `http://<the VM's IPv4 gateway>:<port of callback_listen, or
    /// of listen>`, which is the host under user-mode networking (libvirt)
    /// and on the host veth (nspawn).
    pub callback_url: String,
    /// An extra listener that serves only the callback route, so VM
    /// networks never reach the UI. Empty: none.
    pub callback_listen: String,
    /// Accept a callback only from the VM's allocated IPv4/IPv6. Off for
    /// user-mode networking, where every guest connects from the host.
    pub callback_check_source: bool,
    /// VM names are `<vm_prefix><service id>`; drivers manage only names
    /// with this prefix.
    pub vm_prefix: String,
    /// The playbook the role run applies to each new server.
    pub playbook: PathBuf,
    /// The account the panel logs in as on its VMs (created by the seed).
    pub admin_user: String,
    /// DNS servers written into each VM's resolv.conf. Empty: for libvirt
    /// (QEMU user-mode networking) the built-in resolver at the fourth
    /// address of the VM's network (`10.77.0.3` in `10.77.0.0/24`); none
    /// otherwise.
    pub nameservers: Vec<std::net::IpAddr>,
    /// Hypervisor API calls: retry delay and attempts (every 5 min for 24 h).
    pub api_retry_secs: u64,
    pub api_retry_attempts: u32,
    /// How long a VM may take from start to its callback before a power cycle.
    pub os_ready_timeout_secs: u64,
    /// Power cycles before the OS-ready wait gives up.
    pub os_ready_resets: u32,
    /// How long the host-key check waits for the VM's SSH banner.
    pub ssh_wait_secs: u64,
    /// Role run: attempts and the delay between them.
    pub configure_attempts: u32,
    pub configure_retry_secs: u64,
    /// How often the reconciliation job compares the hypervisor's VMs with
    /// the store (0: never).
    pub reconcile_every_secs: u64,
    /// Several hypervisor hosts (`[[hypervisor.hosts]]`), each with its
    /// driver, capacity and what it may serve; servers are placed on them
    /// by free capacity (`services::hosts`). Empty: the one host that
    /// `driver` and `uri` describe, named `default`, without a capacity
    /// limit (none at all when `driver = "none"`).
    pub hosts: Vec<HostConfig>,
}

/// One hypervisor host (`[[hypervisor.hosts]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// The host's name in the panel (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// `libvirt`, `nspawn`, `vsphere` or `docker`.
    pub driver: String,
    /// libvirt connection URI (`qemu:///system`, `qemu+ssh://root@hv2/system`).
    pub uri: String,
    /// Where this host's VM disks, seeds and machine state live (the
    /// machine root of an nspawn host); empty: `hypervisor.state_dir`.
    pub state_dir: PathBuf,
    /// What the host has: vCPUs, MB of RAM, GB of disk; 0 is no limit.
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    /// Overcommit: the host takes up to `vcpus × cpu_overcommit` vCPUs of
    /// servers, and so on.
    pub cpu_overcommit: f64,
    pub ram_overcommit: f64,
    pub disk_overcommit: f64,
    /// Names of the sites whose servers it may hold; empty: any.
    pub sites: Vec<String>,
    /// Names of the server types it may hold; empty: any.
    pub server_types: Vec<String>,
    /// `active`, `draining` or `down`: the state the host gets when the
    /// panel first meets it. Afterwards the database's state counts,
    /// which admins change (`PUT /api/v1/admin/hosts/{name}/state`).
    pub state: String,
    /// A Docker node's API and container settings (`driver = "docker"`).
    pub docker: DockerHostConfig,
}

/// How the `docker` driver reaches one Docker node and makes containers
/// there (`[hypervisor.hosts.docker]`, `hypervisor/docker.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerHostConfig {
    /// `unix:///var/run/docker.sock`, or `tcp://host:port` with TLS client
    /// certificates (`ca_file`, `cert_file`, `key_file`, all needed):
    /// plain TCP is refused, as whoever reaches it is root on the node.
    pub endpoint: String,
    /// PEM CA that signed the daemon's certificate.
    pub ca_file: String,
    /// PEM certificate and key the panel presents to the daemon.
    pub cert_file: String,
    pub key_file: String,
    /// The Docker image of a server type's `os_image` is this prefix and
    /// the name (`keel/debian-bookworm`), unless `images` maps the name.
    pub image_prefix: String,
    /// `os_image` name → Docker image reference, ahead of `image_prefix`.
    pub images: BTreeMap<String, String>,
    /// The Docker network containers join; on a user-defined network they
    /// get their pool addresses.
    pub network: String,
    /// The container's command; empty: the image's own `CMD`.
    pub command: Vec<String>,
    /// How long a shutdown waits before Docker kills the container.
    pub stop_timeout_secs: u64,
    /// Timeout of one API request (more than `stop_timeout_secs`).
    pub request_timeout_secs: u64,
}

impl Default for DockerHostConfig {
    fn default() -> Self {
        DockerHostConfig {
            endpoint: "unix:///var/run/docker.sock".to_string(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            image_prefix: "keel/".to_string(),
            images: BTreeMap::new(),
            network: "bridge".to_string(),
            command: Vec::new(),
            stop_timeout_secs: 30,
            request_timeout_secs: 120,
        }
    }
}

/// Where a Docker node's API is, as `DockerHostConfig::endpoint` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerApi {
    /// A unix socket on this machine.
    Unix(PathBuf),
    /// `host:port`, over TLS with client certificates.
    Tls { address: String },
}

impl DockerHostConfig {
    /// The endpoint, checked, with the rest of the table; the error names
    /// the key under `at` (`hypervisor.hosts[0].docker`).
    pub fn check(&self, at: &str) -> Result<DockerApi, String> {
        let tls_files = [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ];
        let api = if let Some(path) = self.endpoint.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{at}.endpoint {:?}: a unix socket needs an absolute path (unix:///var/run/docker.sock)",
                    self.endpoint
                ));
            }
            if let Some((key, _)) = tls_files.iter().find(|(_, v)| !v.is_empty()) {
                return Err(format!(
                    "{at}.{key} is set, but TLS files apply only to tcp:// endpoints, not {:?}",
                    self.endpoint
                ));
            }
            DockerApi::Unix(PathBuf::from(path))
        } else if let Some(address) = self.endpoint.strip_prefix("tcp://") {
            let address = address.trim_end_matches('/');
            let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok || address.contains('/') {
                return Err(format!(
                    "{at}.endpoint {:?}: want tcp://host:port (Docker's TLS port is 2376)",
                    self.endpoint
                ));
            }
            let missing: Vec<&str> = tls_files
                .iter()
                .filter(|(_, v)| v.is_empty())
                .map(|(k, _)| *k)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{at}.endpoint {:?} needs TLS with client certificates: set {at}.{} \
                     (Keel never uses the Docker API over plain TCP: whoever reaches it is root on the node)",
                    self.endpoint,
                    missing.join(format!(", {at}.").as_str())
                ));
            }
            DockerApi::Tls {
                address: address.to_string(),
            }
        } else {
            return Err(format!(
                "{at}.endpoint is unix:///path or tcp://host:port (with TLS), not {:?}",
                self.endpoint
            ));
        };
        if self.network.is_empty() {
            return Err(format!(
                "{at}.network is empty (Docker's default is \"bridge\")"
            ));
        }
        if let Some((name, _)) = self
            .images
            .iter()
            .find(|(k, v)| k.is_empty() || v.is_empty())
        {
            return Err(format!("{at}.images: {name:?} maps to an empty image"));
        }
        if self.request_timeout_secs <= self.stop_timeout_secs {
            return Err(format!(
                "{at}.request_timeout_secs ({}) must be more than {at}.stop_timeout_secs ({}): \
                 a shutdown waits within one request",
                self.request_timeout_secs, self.stop_timeout_secs
            ));
        }
        Ok(api)
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            name: String::new(),
            driver: String::new(),
            uri: "qemu:///system".to_string(),
            state_dir: PathBuf::new(),
            vcpus: 0,
            ram_mb: 0,
            disk_gb: 0,
            cpu_overcommit: 1.0,
            ram_overcommit: 1.0,
            disk_overcommit: 1.0,
            sites: Vec::new(),
            server_types: Vec::new(),
            state: "active".to_string(),
            docker: DockerHostConfig::default(),
        }
    }
}

/// The name of the one host a config without `[[hypervisor.hosts]]` has.
pub const DEFAULT_HOST: &str = "default";

impl Default for HypervisorConfig {
    fn default() -> Self {
        HypervisorConfig {
            driver: "none".to_string(),
            uri: "qemu:///system".to_string(),
            image_dir: PathBuf::from("/var/cache/keel/images"),
            state_dir: PathBuf::new(),
            callback_url: String::new(),
            callback_listen: String::new(),
            callback_check_source: false,
            vm_prefix: "keel-".to_string(),
            playbook: PathBuf::from("playbooks/site.yml"),
            admin_user: "keeladmin".to_string(),
            nameservers: Vec::new(),
            api_retry_secs: 300,
            api_retry_attempts: 288,
            os_ready_timeout_secs: 300,
            os_ready_resets: 2,
            ssh_wait_secs: 120,
            configure_attempts: 3,
            configure_retry_secs: 30,
            reconcile_every_secs: 600,
            hosts: Vec::new(),
        }
    }
}

impl HypervisorConfig {
    /// Drivers `driver` may name.
    pub const DRIVERS: &'static [&'static str] =
        &["none", "libvirt", "nspawn", "vsphere", "docker"];

    /// Where per-VM state lives.
    pub fn state_dir(&self, data_dir: &Path) -> PathBuf {
        if self.state_dir.as_os_str().is_empty() {
            data_dir.join("vms")
        } else {
            self.state_dir.clone()
        }
    }

    /// The hypervisor hosts: `hosts`, or the one host `driver` and `uri`
    /// describe (named [`DEFAULT_HOST`], no capacity limit), or none for
    /// `driver = "none"`.
    pub fn host_list(&self) -> Vec<HostConfig> {
        if !self.hosts.is_empty() {
            return self.hosts.clone();
        }
        if self.driver == "none" {
            return Vec::new();
        }
        vec![HostConfig {
            name: DEFAULT_HOST.to_string(),
            driver: self.driver.clone(),
            uri: self.uri.clone(),
            ..HostConfig::default()
        }]
    }

    /// Where one host's per-VM state lives.
    pub fn host_state_dir(&self, host: &HostConfig, data_dir: &Path) -> PathBuf {
        if host.state_dir.as_os_str().is_empty() {
            self.state_dir(data_dir)
        } else {
            host.state_dir.clone()
        }
    }

    fn validate_hosts(&self) -> Result<(), ConfigError> {
        if !self.hosts.is_empty() && self.driver != "none" {
            return Err(ConfigError::Invalid(format!(
                "hypervisor.driver = {:?} and [[hypervisor.hosts]] both name hypervisors: \
                 give each host its driver in hypervisor.hosts and leave hypervisor.driver out",
                self.driver
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let at = |key: &str| format!("hypervisor.hosts[{i}].{key}");
            let good_name = !h.name.is_empty()
                && h.name.len() <= 64
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !good_name {
                return Err(ConfigError::Invalid(format!(
                    "{} {:?}: a host name has 1-64 letters, digits, '.', '_' or '-'",
                    at("name"),
                    h.name
                )));
            }
            if !seen.insert(h.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "{}: two hosts are named {:?}",
                    at("name"),
                    h.name
                )));
            }
            if !["libvirt", "nspawn", "vsphere", "docker"].contains(&h.driver.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "{} is \"libvirt\", \"nspawn\", \"vsphere\" or \"docker\", not {:?}",
                    at("driver"),
                    h.driver
                )));
            }
            if h.driver == "libvirt" && !crate::hypervisor::LIBVIRT_BUILT {
                return Err(ConfigError::Invalid(format!(
                    "{} = \"libvirt\": {}",
                    at("driver"),
                    crate::hypervisor::LIBVIRT_NOT_BUILT
                )));
            }
            if h.driver == "docker" {
                if !crate::hypervisor::DOCKER_BUILT {
                    return Err(ConfigError::Invalid(format!(
                        "{} = \"docker\": {}",
                        at("driver"),
                        crate::hypervisor::DOCKER_NOT_BUILT
                    )));
                }
                h.docker
                    .check(&at("docker"))
                    .map_err(ConfigError::Invalid)?;
            }
            for (key, v) in [
                ("cpu_overcommit", h.cpu_overcommit),
                ("ram_overcommit", h.ram_overcommit),
                ("disk_overcommit", h.disk_overcommit),
            ] {
                if !(v.is_finite() && v > 0.0 && v <= 100.0) {
                    return Err(ConfigError::Invalid(format!(
                        "{} is a ratio above 0 and at most 100, not {v}",
                        at(key)
                    )));
                }
            }
            if !["active", "draining", "down"].contains(&h.state.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "{} is \"active\", \"draining\" or \"down\", not {:?}",
                    at("state"),
                    h.state
                )));
            }
        }
        Ok(())
    }

    /// The callback-only listener, when configured.
    pub fn callback_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.callback_listen.trim().is_empty() {
            return Ok(None);
        }
        self.callback_listen.trim().parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "hypervisor.callback_listen {:?} is not an address:port",
                self.callback_listen
            ))
        })
    }
}

/// The network the servers of one address pool live on
/// (`[networks.<pool name>]`): the addresses, gateways and prefixes come
/// from the pool; this says where the NIC goes and what else the seed
/// tells the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The network the VMs' NICs join: on libvirt and nspawn hosts a Linux
    /// bridge of the host (`br0`), on vSphere hosts the datacenter's port
    /// group of that name, standard or distributed (`VM Network`). The
    /// panel then reaches each VM at its allocated address, port 22.
    /// Empty: the driver's private network (under vSphere: the template's
    /// network), as for a pool with no section.
    pub bridge: String,
    /// Resolvers the seed gives these VMs, instead of
    /// `hypervisor.nameservers`.
    pub nameservers: Vec<IpAddr>,
    /// Base URL these VMs call back to, instead of `hypervisor.callback_url`
    /// (on a bridge the pool's gateway is usually a router, not the panel).
    pub callback_url: String,
}

impl NetworkConfig {
    /// Where a VM on this network attaches.
    pub fn attachment(&self) -> crate::hypervisor::Attachment {
        match self.bridge.trim() {
            "" => crate::hypervisor::Attachment::Private,
            b => crate::hypervisor::Attachment::Bridge {
                bridge: b.to_string(),
            },
        }
    }

    /// `vsphere_only`: every hypervisor host is a vSphere one, so `bridge`
    /// names a port group and need not be a Linux interface name. With
    /// any libvirt or nspawn host (or none configured yet) it must be one,
    /// since a pool's servers may be placed on any host.
    fn validate(&self, pool: &str, vsphere_only: bool) -> Result<(), ConfigError> {
        let bridge = self.bridge.trim();
        if !bridge.is_empty() {
            if vsphere_only {
                if !crate::hypervisor::valid_port_group_name(bridge) {
                    return Err(ConfigError::Invalid(format!(
                        "networks.{pool}.bridge {:?} is not a vSphere port group name (1 to 80 characters, no control characters)",
                        self.bridge
                    )));
                }
            } else if !crate::hypervisor::valid_interface_name(bridge) {
                return Err(ConfigError::Invalid(format!(
                    "networks.{pool}.bridge {:?} is not a Linux interface name (at most 15 letters, digits, '-', '_' or '.'), \
                     which libvirt and nspawn hosts need (when every host is a vSphere one, it may name any port group)",
                    self.bridge
                )));
            }
        }
        let url = self.callback_url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "networks.{pool}.callback_url {:?} is not an http:// or https:// URL",
                self.callback_url
            )));
        }
        Ok(())
    }
}

/// The vCenter (or ESXi host) the `vsphere` driver works in
/// (`hypervisor/vsphere.rs`): where new VMs are cloned from, and where they
/// go. Inventory paths are as vSphere's `FindByInventoryPath` reads them,
/// relative to the datacenter. The password is never in this file (nor in
/// its `Debug`): it is read from `password_file` at each login. The
/// server's certificate is always verified, against `ca_file` or else the
/// system's roots; there is no switch to turn that off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VsphereConfig {
    /// The SDK endpoint, `https://vcenter.example.org/sdk`.
    pub url: String,
    /// The user the panel logs in as (`keel@vsphere.local`).
    pub username: String,
    /// A file holding the password (trailing newline ignored).
    pub password_file: String,
    /// PEM file of the CA certificates the server's certificate is checked
    /// against (a vCenter's own VMCA root, say); empty: the system's.
    pub ca_file: String,
    /// The datacenter's name.
    pub datacenter: String,
    /// The cluster (or standalone host) whose resources new VMs use, under
    /// the datacenter's host folder.
    pub cluster: String,
    /// A resource pool under the cluster's root pool (`keel` or
    /// `tenants/keel`); empty: the root pool itself.
    pub resource_pool: String,
    /// The VM folder new VMs go into, under the datacenter's VM folder;
    /// it must exist. Empty: the VM folder itself.
    pub folder: String,
    /// The folder of the templates, under the datacenter's VM folder: a
    /// server type's `os_image` names the template cloned for it.
    pub template_folder: String,
    /// The datastore new VMs' disks go to; empty: the template's.
    pub datastore: String,
    /// Timeout of one API request, and how long one vSphere task is
    /// waited for.
    pub request_timeout_secs: u64,
    pub task_timeout_secs: u64,
}

impl Default for VsphereConfig {
    fn default() -> Self {
        VsphereConfig {
            url: String::new(),
            username: String::new(),
            password_file: String::new(),
            ca_file: String::new(),
            datacenter: String::new(),
            cluster: String::new(),
            resource_pool: String::new(),
            folder: String::new(),
            template_folder: "templates".into(),
            datastore: String::new(),
            request_timeout_secs: 60,
            task_timeout_secs: 1800,
        }
    }
}

impl VsphereConfig {
    /// Why this configuration cannot be used (checked at load time when
    /// `hypervisor.driver = "vsphere"`).
    pub fn check(&self) -> Result<(), String> {
        if !self.url.starts_with("https://") {
            return Err(format!(
                "vsphere.url {:?}: an https:// URL of the SDK endpoint is needed (the API is only spoken over TLS)",
                self.url
            ));
        }
        for (key, value) in [
            ("username", &self.username),
            ("password_file", &self.password_file),
            ("datacenter", &self.datacenter),
            ("cluster", &self.cluster),
            ("template_folder", &self.template_folder),
        ] {
            if value.trim().is_empty() {
                return Err(format!(
                    "vsphere.{key} is needed when hypervisor.driver = \"vsphere\""
                ));
            }
        }
        for (key, value) in [
            ("datacenter", &self.datacenter),
            ("cluster", &self.cluster),
            ("resource_pool", &self.resource_pool),
            ("folder", &self.folder),
            ("template_folder", &self.template_folder),
        ] {
            if value.starts_with('/') || value.ends_with('/') || value.contains("//") {
                return Err(format!(
                    "vsphere.{key} {value:?} is a path relative to its parent, without a leading, trailing or doubled '/'"
                ));
            }
        }
        if self.request_timeout_secs == 0 || self.task_timeout_secs == 0 {
            return Err(
                "vsphere.request_timeout_secs and vsphere.task_timeout_secs must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What site admins do with their servers (`services::vhosts`): the
/// playbooks of the jobs that apply it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SitesConfig {
    /// The playbook a `vhosts` job runs against one ready server
    /// (`roles/mwsvhosts`).
    pub vhosts_playbook: PathBuf,
    /// The playbook a `packages` job runs against one ready server
    /// (`roles/mwspackages`).
    pub packages_playbook: PathBuf,
    /// The playbook a `db_password` job runs against one ready server
    /// (`roles/mwsmariadb`), with the new password as an extra variable.
    pub db_password_playbook: PathBuf,
}

impl Default for SitesConfig {
    fn default() -> Self {
        SitesConfig {
            vhosts_playbook: PathBuf::from("playbooks/vhosts.yml"),
            packages_playbook: PathBuf::from("playbooks/packages.yml"),
            db_password_playbook: PathBuf::from("playbooks/dbpassword.yml"),
        }
    }
}

/// TLS certificates from an ACME server (`services::certificates`, the
/// `certificate` job, `acme.rs`): off while `directory_url` is empty, and
/// then only uploaded certificates are installed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME server's directory (`https://…/directory`).
    pub directory_url: String,
    /// A PEM file of CA certificates the ACME server's own HTTPS
    /// certificate is checked against, instead of the system's (a test or
    /// private ACME server).
    pub ca_file: String,
    /// A contact address given to the ACME server when the panel's account
    /// is created (`mailto:` is added); empty: none.
    pub contact: String,
    /// The playbook that writes (and removes) HTTP-01 challenge files on a
    /// server for Apache to serve (`roles/mwsvhosts`, `tasks_from:
    /// challenge`).
    pub challenge_playbook: PathBuf,
    /// A certificate from the ACME server is renewed this many days before
    /// it expires.
    pub renew_before_days: u32,
    /// How often the `certificate_renewal` job looks for certificates due
    /// for renewal; 0: never.
    pub renew_check_secs: u64,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory_url: String::new(),
            ca_file: String::new(),
            contact: String::new(),
            challenge_playbook: PathBuf::from("playbooks/acme-challenge.yml"),
            renew_before_days: 30,
            renew_check_secs: 86_400,
        }
    }
}

/// System analytics (`services::analytics`, the `metrics_collect` job):
/// how often figures are read from every ready server, and where on the
/// server's loopback its exporters answer (fetched through its SSH
/// connection, `provision/scrape.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Seconds between two collections (each makes a raw point per
    /// server); 0: never.
    pub every_secs: u64,
    /// Servers read at once.
    pub concurrency: usize,
    /// How long one server's reading may take.
    pub timeout_secs: u64,
    /// The node exporter's port (`roles/metrics_service`, `metrics_port`).
    pub node_exporter_port: u16,
    /// Apache's port, whose `/server-status?auto` gives the request count.
    pub apache_port: u16,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            every_secs: 60,
            concurrency: 16,
            timeout_secs: 20,
            node_exporter_port: 9100,
            apache_port: 80,
        }
    }
}

impl AcmeConfig {
    pub fn enabled(&self) -> bool {
        !self.directory_url.trim().is_empty()
    }
}

/// The people on the servers (`services::access`, `roles/mwsusers`): where
/// UIDs and GIDs come from and the playbook of an `access` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// The range the panel allocates UIDs from for people without an LDAP
    /// `uidNumber` (inclusive). A person's own group gets GID = UID.
    pub uid_min: i64,
    pub uid_max: i64,
    /// The range of the GIDs of Unix groups site admins define (inclusive);
    /// it must not overlap the UID range, since personal groups use UIDs.
    pub gid_min: i64,
    pub gid_max: i64,
    /// The playbook an `access` job runs against one ready server.
    pub playbook: PathBuf,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            uid_min: 10_000,
            uid_max: 59_999,
            gid_min: 60_000,
            gid_max: 64_999,
            playbook: PathBuf::from("playbooks/access.yml"),
        }
    }
}

impl AccessConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let a = &self;
        if a.uid_min < 1000 || a.uid_min > a.uid_max || a.gid_min < 1000 || a.gid_min > a.gid_max {
            return Err(ConfigError::Invalid(
                "access: uid_min..uid_max and gid_min..gid_max must be ranges from 1000 up".into(),
            ));
        }
        if a.uid_min <= a.gid_max && a.gid_min <= a.uid_max {
            return Err(ConfigError::Invalid(
                "access: the UID and GID ranges overlap; personal groups take their UID as GID"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The LDAP directory behind lookup groups (`ldap.rs`,
/// `services::lookup`). Off while `url` is empty: lookup groups are then
/// only the panel's own groups. The password is never in this file (nor in
/// its `Debug`): it is read from `bind_password_file` at each connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (required for it).
    pub starttls: bool,
    /// PEM file of the CA certificates the server's certificate is checked
    /// against; empty: the system's. The certificate is always verified.
    pub ca_file: String,
    pub bind_dn: String,
    /// A file holding the bind password (trailing newline ignored).
    pub bind_password_file: String,
    /// Where groups and people are searched (subtree).
    pub base_dn: String,
    /// Which entries are groups; a lookup group `NAME` is
    /// `(&GROUP_FILTER(cn=NAME))`.
    pub group_filter: String,
    /// Which entries are people, for `memberUid` lookups and `member` DNs.
    pub user_filter: String,
    /// How often the `lookup_refresh` job re-reads every site's lookup
    /// groups (the queue's cron, once across all nodes); 0: never.
    pub refresh_every_secs: u64,
    /// Connect, bind and search timeout.
    pub timeout_secs: u64,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: String::new(),
            starttls: false,
            ca_file: String::new(),
            bind_dn: String::new(),
            bind_password_file: String::new(),
            base_dn: String::new(),
            group_filter: "(|(objectClass=posixGroup)(objectClass=groupOfNames))".into(),
            user_filter: "(objectClass=posixAccount)".into(),
            refresh_every_secs: 86_400,
            timeout_secs: 10,
        }
    }
}

impl LdapConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Why this configuration cannot be used; the same check at load time
    /// and before each connection.
    pub fn check(&self) -> Result<(), String> {
        let tls =
            self.url.starts_with("ldaps://") || (self.url.starts_with("ldap://") && self.starttls);
        if !tls {
            return Err(format!(
                "ldap.url {:?}: use ldaps://, or ldap:// with ldap.starttls = true (the directory is only read over TLS)",
                self.url
            ));
        }
        if self.starttls && self.url.starts_with("ldaps://") {
            return Err("ldap.starttls is for ldap:// URLs; ldaps:// is TLS already".into());
        }
        for (key, value) in [
            ("bind_dn", &self.bind_dn),
            ("bind_password_file", &self.bind_password_file),
            ("base_dn", &self.base_dn),
            ("group_filter", &self.group_filter),
            ("user_filter", &self.user_filter),
        ] {
            if value.trim().is_empty() {
                return Err(format!("ldap.{key} is needed when ldap.url is set"));
            }
        }
        for (key, filter) in [
            ("group_filter", &self.group_filter),
            ("user_filter", &self.user_filter),
        ] {
            if !(filter.starts_with('(') && filter.ends_with(')')) {
                return Err(format!(
                    "ldap.{key} {filter:?} is not an LDAP filter in parentheses"
                ));
            }
        }
        if self.timeout_secs == 0 {
            return Err("ldap.timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// DNS publishing (`dns.rs`, the `dns` job): each ready server's A, AAAA
/// and SSHFP records sent to `server` as RFC 2136 updates signed with TSIG.
/// Off while `server` is empty: then nothing is published and no job is
/// queued. The TSIG secret is never in this file (nor in its `Debug`): it
/// is read from `key_file` at each update.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// The primary server that accepts the updates: `IP` or `IP:PORT`
    /// (port 53 when omitted).
    pub server: String,
    /// The zones the panel may update; a record goes to the longest zone
    /// its name ends with.
    pub zones: Vec<String>,
    /// The TSIG key's name, as the server knows it.
    pub key_name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub key_algorithm: String,
    /// A file holding the key's base64 secret, alone or as the `key`
    /// clause `tsig-keygen` prints.
    pub key_file: String,
    /// TTL of the published records, in seconds.
    pub ttl: u32,
    /// Connect and answer timeout of one update.
    pub timeout_secs: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            server: String::new(),
            zones: Vec::new(),
            key_name: String::new(),
            key_algorithm: "hmac-sha256".into(),
            key_file: String::new(),
            ttl: 300,
            timeout_secs: 10,
        }
    }
}

impl DnsConfig {
    pub const ALGORITHMS: [&'static str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

    pub fn enabled(&self) -> bool {
        !self.server.trim().is_empty()
    }

    /// The server's address; port 53 unless given.
    pub fn server_addr(&self) -> Result<SocketAddr, String> {
        let s = self.server.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(addr);
        }
        s.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, 53))
            .map_err(|_| format!("dns.server {s:?} is not an IP address or IP:PORT"))
    }

    /// Why this configuration cannot be used; the same check at load time
    /// and before each update.
    pub fn check(&self) -> Result<(), String> {
        self.server_addr()?;
        if self
            .zones
            .iter()
            .all(|z| z.trim().trim_end_matches('.').is_empty())
        {
            return Err("dns.zones is needed when dns.server is set".into());
        }
        for (key, value) in [("key_name", &self.key_name), ("key_file", &self.key_file)] {
            if value.trim().is_empty() {
                return Err(format!(
                    "dns.{key} is needed when dns.server is set (updates are signed with TSIG)"
                ));
            }
        }
        if !Self::ALGORITHMS.contains(&self.key_algorithm.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "dns.key_algorithm is one of {:?}, not {:?}",
                Self::ALGORITHMS,
                self.key_algorithm
            ));
        }
        if self.ttl == 0 || self.timeout_secs == 0 {
            return Err("dns.ttl and dns.timeout_secs must be at least 1".into());
        }
        Ok(())
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty() || !self.key_file.is_empty()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("keel-panel-data"),
            database_url: String::new(),
            public_url: String::new(),
            auth: AuthConfig::default(),
            sso: SsoConfig::default(),
            workers: WorkersConfig::default(),
            alloc: AllocConfig::default(),
            tls: TlsConfig::default(),
            hypervisor: HypervisorConfig::default(),
            access: AccessConfig::default(),
            ldap: LdapConfig::default(),
            dns: DnsConfig::default(),
            sites: SitesConfig::default(),
            acme: AcmeConfig::default(),
            analytics: AnalyticsConfig::default(),
            metrics: MetricsConfig::default(),
            outbound: OutboundConfig::default(),
            networks: BTreeMap::new(),
            vsphere: VsphereConfig::default(),
            chaos: ChaosConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            login_max_failures: 3,
            login_block_secs: 120,
            session_ttl_secs: 12 * 3600,
            token_max_days: 365,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
        }
    }
}

impl Default for SsoConfig {
    fn default() -> Self {
        SsoConfig {
            enabled: false,
            header: "X-Remote-User".to_string(),
            trusted_proxies: vec![],
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            concurrency: 8,
            queues: vec!["default".to_string(), "hypervisor=8".to_string()],
        }
    }
}

impl Default for AllocConfig {
    fn default() -> Self {
        AllocConfig {
            default_quarantine_secs: 86400,
        }
    }
}

impl Config {
    /// Whether hypervisor hosts `a` and `b` keep their VMs' files in one
    /// directory (shared storage): a move between two such libvirt hosts is
    /// libvirt's own migration, and live; otherwise the files are copied
    /// and the VM must be stopped.
    pub fn hosts_share_storage(&self, a: &str, b: &str) -> bool {
        let hosts = self.hypervisor.host_list();
        let dir = |name: &str| {
            hosts
                .iter()
                .find(|h| h.name == name)
                .map(|h| self.hypervisor.host_state_dir(h, &self.data_dir))
        };
        matches!((dir(a), dir(b)), (Some(x), Some(y)) if x == y)
    }

    /// Defaults, then `file` (if any), then `KEEL_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: file
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| "environment".into()),
                    source: Box::new(e),
                })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.login_max_failures < 1 {
            return Err(ConfigError::Invalid(
                "auth.login_max_failures must be at least 1".into(),
            ));
        }
        if self.tls.enabled() && (self.tls.cert_file.is_empty() || self.tls.key_file.is_empty()) {
            return Err(ConfigError::Invalid(
                "tls needs both cert_file and key_file".into(),
            ));
        }
        if !HypervisorConfig::DRIVERS.contains(&self.hypervisor.driver.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "hypervisor.driver is one of {:?}, not {:?}",
                HypervisorConfig::DRIVERS,
                self.hypervisor.driver
            )));
        }
        if self.hypervisor.driver == "libvirt" && !crate::hypervisor::LIBVIRT_BUILT {
            return Err(ConfigError::Invalid(format!(
                "hypervisor.driver = \"libvirt\": {}",
                crate::hypervisor::LIBVIRT_NOT_BUILT
            )));
        }
        if self.hypervisor.driver == "docker" && !crate::hypervisor::DOCKER_BUILT {
            return Err(ConfigError::Invalid(format!(
                "hypervisor.driver = \"docker\": {}",
                crate::hypervisor::DOCKER_NOT_BUILT
            )));
        }
        self.hypervisor.callback_listen()?;
        let hosts = self.hypervisor.host_list();
        let vsphere_only = !hosts.is_empty() && hosts.iter().all(|h| h.driver == "vsphere");
        for (pool, network) in &self.networks {
            network.validate(pool, vsphere_only)?;
        }
        self.hypervisor.validate_hosts()?;
        if self.hypervisor.driver == "vsphere"
            || self.hypervisor.hosts.iter().any(|h| h.driver == "vsphere")
        {
            self.vsphere.check().map_err(ConfigError::Invalid)?;
        }
        self.access.validate()?;
        self.chaos.validate()?;
        if self.ldap.enabled() {
            self.ldap.check().map_err(ConfigError::Invalid)?;
        }
        if self.dns.enabled() {
            self.dns.check().map_err(ConfigError::Invalid)?;
        }
        if self.sso.enabled && self.sso.trusted_proxies.is_empty() {
            return Err(ConfigError::Invalid(
                "sso.enabled needs sso.trusted_proxies: the header is only trusted from them"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The database URL: the configured one, or SQLite in `data_dir`.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("panel.db").display())
        } else {
            self.database_url.clone()
        }
    }

    /// Cookies get `Secure` when users reach the panel over https: the
    /// panel serves TLS itself, or its public URL is https (a TLS proxy).
    pub fn secure_cookies(&self) -> bool {
        self.tls.enabled() || self.public_url.starts_with("https://")
    }
}

/// Maps `KEEL_LISTEN` to `listen`, `KEEL_AUTH_LOGIN_MAX_FAILURES` to
/// `auth.login_max_failures`, and so on, for every key the config has.
/// Values parse as TOML (numbers, booleans, arrays) and fall back to strings.
/// `KEEL_*` variables the panel does not know (say, `KEEL_LOG`) are ignored.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix("KEEL_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        // Strings stay strings when the key is a string key (a URL is not TOML).
        let fix = |default: &toml::Value| match default {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            _ => value.clone(),
        };
        if let Some(default) = defaults.get(&rest) {
            if !default.is_table() {
                table.insert(rest, fix(default));
                continue;
            }
        }
        for (section, keys) in defaults
            .iter()
            .filter_map(|(k, v)| Some((k, v.as_table()?)))
        {
            let Some(key) = rest.strip_prefix(&format!("{section}_")) else {
                continue;
            };
            if let Some(default) = keys.get(key) {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let Some(sub) = entry.as_table_mut() else {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("{section} is not a table in the config file"),
                    });
                };
                sub.insert(key.to_string(), fix(default));
                break;
            }
        }
    }
    Ok(())
}

/// Hides the password in a database URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url(), "sqlite://keel-panel-data/panel.db");
        assert_eq!(c.auth.login_max_failures, 3);
        assert_eq!(c.auth.login_block_secs, 120);
        assert!(!c.sso.enabled);
    }

    #[test]
    fn ldap_is_off_by_default_and_only_read_over_tls() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(!c.ldap.enabled());
        let base = [
            ("KEEL_LDAP_BIND_DN", "cn=panel,dc=example,dc=org"),
            ("KEEL_LDAP_BIND_PASSWORD_FILE", "/etc/keel/ldap.pw"),
            ("KEEL_LDAP_BASE_DN", "dc=example,dc=org"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            Config::load(None, env(&all))
        };
        let err = with(&[("KEEL_LDAP_URL", "ldap://ldap.example.org")]).unwrap_err();
        assert!(err.to_string().contains("starttls"), "{err}");
        let c = with(&[
            ("KEEL_LDAP_URL", "ldap://ldap.example.org"),
            ("KEEL_LDAP_STARTTLS", "true"),
        ])
        .unwrap();
        assert!(c.ldap.enabled() && c.ldap.starttls);
        assert!(with(&[("KEEL_LDAP_URL", "ldaps://ldap.example.org")]).is_ok());
        let err =
            Config::load(None, env(&[("KEEL_LDAP_URL", "ldaps://ldap.example.org")])).unwrap_err();
        assert!(err.to_string().contains("ldap.bind_dn"), "{err}");
    }

    #[test]
    fn dns_is_off_by_default_and_needs_zones_and_a_key_when_on() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(!c.dns.enabled());
        let err = Config::load(None, env(&[("KEEL_DNS_SERVER", "192.0.2.53")])).unwrap_err();
        assert!(err.to_string().contains("dns.zones"), "{err}");
        let with = |server: &'static str, algorithm: &'static str| {
            Config::load(
                None,
                env(&[
                    ("KEEL_DNS_SERVER", server),
                    ("KEEL_DNS_ZONES", "[\"example.org\"]"),
                    ("KEEL_DNS_KEY_NAME", "keel-panel"),
                    ("KEEL_DNS_KEY_FILE", "/etc/keel/dns.key"),
                    ("KEEL_DNS_KEY_ALGORITHM", algorithm),
                ]),
            )
        };
        let c = with("192.0.2.53", "hmac-sha256").unwrap();
        assert_eq!(
            c.dns.server_addr().unwrap(),
            "192.0.2.53:53".parse().unwrap()
        );
        let c = with("[2001:db8::53]:5353", "HMAC-SHA512").unwrap();
        assert_eq!(
            c.dns.server_addr().unwrap(),
            "[2001:db8::53]:5353".parse().unwrap()
        );
        let err = with("ns.example.org", "hmac-sha256").unwrap_err();
        assert!(err.to_string().contains("not an IP address"), "{err}");
        let err = with("192.0.2.53", "hmac-md5").unwrap_err();
        assert!(err.to_string().contains("dns.key_algorithm"), "{err}");
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("panel.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\n[auth]\nlogin_max_failures = 5\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("KEEL_AUTH_LOGIN_BLOCK_SECS", "30"),
                ("KEEL_DATABASE_URL", "postgres://u:secret@db/panel"),
                ("KEEL_UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.auth.login_max_failures, 5);
        assert_eq!(c.auth.login_block_secs, 30);
        assert_eq!(c.database_url(), "postgres://u:secret@db/panel");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn unknown_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("panel.toml");
        std::fs::write(&path, "[auth]\nlogin_max_failure = 5\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("login_max_failure"), "{err}");
    }

    #[test]
    fn chaos_is_off_by_default_and_takes_shares_only() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(!c.chaos.enabled());
        let c = Config::load(
            None,
            env(&[
                ("KEEL_CHAOS_DRIVER_FAULT_FRACTION", "0.3"),
                ("KEEL_CHAOS_CALLBACK_DROP_FRACTION", "0.25"),
                ("KEEL_CHAOS_DRIVER_FAULT_SEED", "7"),
            ]),
        )
        .unwrap();
        assert!(c.chaos.enabled());
        assert_eq!(c.chaos.driver_fault_fraction, 0.3);
        assert_eq!(c.chaos.callback_drop_fraction, 0.25);
        assert_eq!(c.chaos.driver_fault_seed, 7);
        for (var, value) in [
            ("KEEL_CHAOS_DRIVER_FAULT_FRACTION", "1.5"),
            ("KEEL_CHAOS_CALLBACK_DROP_FRACTION", "-0.1"),
        ] {
            let err = Config::load(None, env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().contains("between 0 and 1"), "{err}");
        }
    }

    #[test]
    fn hypervisor_section_is_checked() {
        let err = Config::load(None, env(&[("KEEL_HYPERVISOR_DRIVER", "vmware")])).unwrap_err();
        assert!(err.to_string().contains("hypervisor.driver"), "{err}");
        let err =
            Config::load(None, env(&[("KEEL_HYPERVISOR_CALLBACK_LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("callback_listen"), "{err}");
        let c = Config::load(
            None,
            env(&[
                ("KEEL_HYPERVISOR_DRIVER", "nspawn"),
                ("KEEL_HYPERVISOR_CALLBACK_LISTEN", "0.0.0.0:8081"),
                ("KEEL_HYPERVISOR_OS_READY_RESETS", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(c.hypervisor.driver, "nspawn");
        assert_eq!(c.hypervisor.os_ready_resets, 4);
        assert_eq!(
            c.hypervisor.callback_listen().unwrap(),
            Some("0.0.0.0:8081".parse().unwrap())
        );
        assert_eq!(c.hypervisor.state_dir(Path::new("/d")), Path::new("/d/vms"));
    }

    #[test]
    fn hosts_list_or_the_one_legacy_host() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.hypervisor.host_list().is_empty());
        let c = Config::load(None, env(&[("KEEL_HYPERVISOR_DRIVER", "nspawn")])).unwrap();
        let hosts = c.hypervisor.host_list();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].name, DEFAULT_HOST);
        assert_eq!(
            (hosts[0].vcpus, hosts[0].ram_mb, hosts[0].disk_gb),
            (0, 0, 0)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("panel.toml");
        let write = |text: &str| std::fs::write(&path, text).unwrap();
        write(
            "[[hypervisor.hosts]]\nname = \"hv1\"\ndriver = \"nspawn\"\nvcpus = 8\ncpu_overcommit = 4.0\n\
             sites = [\"web\"]\n[[hypervisor.hosts]]\nname = \"hv2\"\ndriver = \"nspawn\"\nstate = \"draining\"\n",
        );
        let c = Config::load(Some(&path), env(&[])).unwrap();
        let hosts = c.hypervisor.host_list();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].cpu_overcommit, 4.0);
        assert_eq!(hosts[0].sites, vec!["web".to_string()]);
        assert_eq!(hosts[1].state, "draining");
        for (text, needle) in [
            ("[[hypervisor.hosts]]\nname = \"a b\"\ndriver = \"nspawn\"\n", "hosts[0].name"),
            ("[[hypervisor.hosts]]\nname = \"a\"\ndriver = \"xen\"\n", "hosts[0].driver"),
            ("[[hypervisor.hosts]]\nname = \"a\"\ndriver = \"nspawn\"\nram_overcommit = 0.0\n", "hosts[0].ram_overcommit"),
            ("[[hypervisor.hosts]]\nname = \"a\"\ndriver = \"nspawn\"\nstate = \"off\"\n", "hosts[0].state"),
            ("[[hypervisor.hosts]]\nname = \"a\"\ndriver = \"nspawn\"\n[[hypervisor.hosts]]\nname = \"a\"\ndriver = \"nspawn\"\n", "two hosts"),
            ("[hypervisor]\ndriver = \"nspawn\"\n[[hypervisor.hosts]]\nname = \"a\"\ndriver = \"nspawn\"\n", "both name"),
        ] {
            write(text);
            let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    /// A Docker node is its unix socket or TCP with TLS client
    /// certificates; plain TCP is refused, as is a half-set TLS table.
    #[test]
    fn docker_hosts_speak_tls_over_tcp_or_use_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("panel.toml");
        let host = |table: &str| {
            format!("[[hypervisor.hosts]]\nname = \"d1\"\ndriver = \"docker\"\n[hypervisor.hosts.docker]\n{table}")
        };
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Config::load(Some(&path), env(&[]))
        };
        if !crate::hypervisor::DOCKER_BUILT {
            let err = load(&host("")).unwrap_err().to_string();
            assert!(err.contains("without the docker driver"), "{err}");
            return;
        }
        let c = load(&host("")).unwrap();
        let h = &c.hypervisor.host_list()[0];
        assert_eq!(h.docker.endpoint, "unix:///var/run/docker.sock");
        assert_eq!(
            h.docker.check("x"),
            Ok(DockerApi::Unix("/var/run/docker.sock".into()))
        );
        let c = load(&host(
            "endpoint = \"tcp://dock1.example.org:2376\"\nca_file = \"/etc/keel/ca.pem\"\n\
             cert_file = \"/etc/keel/cert.pem\"\nkey_file = \"/etc/keel/key.pem\"\n\
             network = \"keel\"\n[hypervisor.hosts.docker.images]\ndebian-bookworm = \"keel/debian:12\"\n",
        ))
        .unwrap();
        let d = &c.hypervisor.host_list()[0].docker;
        assert_eq!(
            d.check("x"),
            Ok(DockerApi::Tls {
                address: "dock1.example.org:2376".into()
            })
        );
        assert_eq!(d.images["debian-bookworm"], "keel/debian:12");
        for (table, needle) in [
            ("endpoint = \"tcp://dock1:2375\"\n", "plain TCP"),
            (
                "endpoint = \"tcp://dock1:2376\"\nca_file = \"/ca\"\ncert_file = \"/c\"\n",
                "docker.key_file",
            ),
            ("endpoint = \"http://dock1:2375\"\n", "docker.endpoint"),
            ("endpoint = \"tcp://dock1\"\n", "tcp://host:port"),
            ("endpoint = \"unix://run/docker.sock\"\n", "absolute path"),
            ("cert_file = \"/c\"\n", "docker.cert_file is set"),
            ("network = \"\"\n", "docker.network"),
            ("stop_timeout_secs = 200\n", "request_timeout_secs"),
            ("socket = \"/x\"\n", "socket"),
        ] {
            let err = load(&host(table)).unwrap_err().to_string();
            assert!(err.contains(needle), "{table}: {err}");
            assert!(
                err.contains("hosts[0]") || needle == "socket",
                "{table}: {err}"
            );
        }
        // The one legacy host may be a docker node too: this machine's socket.
        let c = Config::load(None, env(&[("KEEL_HYPERVISOR_DRIVER", "docker")])).unwrap();
        assert_eq!(c.hypervisor.host_list()[0].driver, "docker");
    }

    #[test]
    fn vsphere_needs_its_section_over_https() {
        let base = [
            ("KEEL_HYPERVISOR_DRIVER", "vsphere"),
            ("KEEL_VSPHERE_USERNAME", "keel@vsphere.local"),
            ("KEEL_VSPHERE_PASSWORD_FILE", "/etc/keel/vsphere.pw"),
            ("KEEL_VSPHERE_DATACENTER", "DC1"),
            ("KEEL_VSPHERE_CLUSTER", "Cluster A"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            Config::load(None, env(&all))
        };
        let err = with(&[("KEEL_VSPHERE_URL", "http://vc.example.org/sdk")]).unwrap_err();
        assert!(err.to_string().contains("vsphere.url"), "{err}");
        let c = with(&[("KEEL_VSPHERE_URL", "https://vc.example.org/sdk")]).unwrap();
        assert_eq!(c.vsphere.cluster, "Cluster A");
        assert_eq!(c.vsphere.template_folder, "templates");
        let err = with(&[
            ("KEEL_VSPHERE_URL", "https://vc.example.org/sdk"),
            ("KEEL_VSPHERE_FOLDER", "/keel"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("vsphere.folder"), "{err}");
        let err = Config::load(
            None,
            env(&[
                ("KEEL_HYPERVISOR_DRIVER", "vsphere"),
                ("KEEL_VSPHERE_URL", "https://vc.example.org/sdk"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("vsphere.username"), "{err}");
        // Not checked while another driver is chosen.
        assert!(Config::load(None, env(&[("KEEL_VSPHERE_URL", "ftp://x")])).is_ok());
    }

    /// A build without the `libvirt` feature refuses a config that selects
    /// the driver, at load, and says how to get it; a build with it accepts.
    #[test]
    fn libvirt_driver_is_refused_by_a_build_without_it() {
        let loaded = Config::load(None, env(&[("KEEL_HYPERVISOR_DRIVER", "libvirt")]));
        if cfg!(feature = "libvirt") {
            assert_eq!(loaded.unwrap().hypervisor.driver, "libvirt");
        } else {
            let err = loaded.unwrap_err().to_string();
            assert!(
                err.contains("without the libvirt driver") && err.contains("libvirt-dev"),
                "{err}"
            );
        }
    }

    #[test]
    fn networks_are_per_pool_and_default_to_the_private_network() {
        use crate::hypervisor::Attachment;
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.networks.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("panel.toml");
        std::fs::write(
            &path,
            "[networks.campus]\nbridge = \"br0\"\nnameservers = [\"192.0.2.53\", \"2001:db8::53\"]\n\
             callback_url = \"http://192.0.2.1:8081\"\n[networks.demo]\nnameservers = [\"10.0.0.3\"]\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), env(&[])).unwrap();
        let campus = &c.networks["campus"];
        assert_eq!(
            campus.attachment(),
            Attachment::Bridge {
                bridge: "br0".into()
            }
        );
        assert_eq!(campus.nameservers.len(), 2);
        assert_eq!(campus.callback_url, "http://192.0.2.1:8081");
        assert_eq!(c.networks["demo"].attachment(), Attachment::Private);
        for (bad, key) in [
            (
                "[networks.p]\nbridge = \"br0; reboot\"\n",
                "networks.p.bridge",
            ),
            (
                "[networks.p]\nbridge = \"a-bridge-name-too-long\"\n",
                "networks.p.bridge",
            ),
            (
                "[networks.p]\ncallback_url = \"ftp://x\"\n",
                "networks.p.callback_url",
            ),
            ("[networks.p]\nbrige = \"br0\"\n", "brige"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = Config::load(Some(&path), env(&[])).unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn a_bridge_names_a_port_group_when_every_host_is_a_vsphere_one() {
        use crate::hypervisor::Attachment;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("panel.toml");
        let vsphere = "[vsphere]\nurl = \"https://vc.example.org/sdk\"\nusername = \"keel\"\n\
                       password_file = \"/etc/keel/vsphere.pw\"\ndatacenter = \"DC0\"\ncluster = \"C0\"\n";
        let load = |hosts: &str, networks: &str| {
            std::fs::write(&path, format!("{hosts}\n{vsphere}\n{networks}")).unwrap();
            Config::load(Some(&path), env(&[]))
        };
        let networks =
            "[networks.campus]\nbridge = \"VM Network\"\n[networks.lab]\nbridge = \"DC0_DVPG0\"\n";
        let one = "[hypervisor]\ndriver = \"vsphere\"\n";
        let c = load(one, networks).unwrap();
        assert_eq!(
            c.networks["campus"].attachment(),
            Attachment::Bridge {
                bridge: "VM Network".into()
            }
        );
        assert_eq!(
            c.networks["lab"].attachment(),
            Attachment::Bridge {
                bridge: "DC0_DVPG0".into()
            }
        );
        let two = "[[hypervisor.hosts]]\nname = \"vc1\"\ndriver = \"vsphere\"\n\
                   [[hypervisor.hosts]]\nname = \"vc2\"\ndriver = \"vsphere\"\n";
        assert!(load(two, networks).is_ok());
        // A pool's servers may land on any host: with an nspawn host among
        // them the name must also be a Linux bridge's.
        let mixed = "[[hypervisor.hosts]]\nname = \"vc1\"\ndriver = \"vsphere\"\n\
                     [[hypervisor.hosts]]\nname = \"n1\"\ndriver = \"nspawn\"\n";
        let err = load(mixed, networks).unwrap_err().to_string();
        assert!(
            err.contains("networks.campus.bridge") && err.contains("Linux interface name"),
            "{err}"
        );
        assert!(load(mixed, "[networks.campus]\nbridge = \"br0\"\n").is_ok());
        // No host yet (driver "none"): the Linux rule, as before.
        let err = load("", networks).unwrap_err().to_string();
        assert!(err.contains("Linux interface name"), "{err}");
        for bad in [
            "[networks.campus]\nbridge = \"VM\\tNetwork\"\n".to_string(),
            format!("[networks.campus]\nbridge = \"{}\"\n", "p".repeat(81)),
        ] {
            let err = load(one, &bad).unwrap_err().to_string();
            assert!(
                err.contains("networks.campus.bridge") && err.contains("port group"),
                "{bad}: {err}"
            );
        }
        assert!(load(
            one,
            &format!("[networks.campus]\nbridge = \"{}\"\n", "p".repeat(80))
        )
        .is_ok());
    }

    #[test]
    fn sso_needs_trusted_proxies() {
        let err = Config::load(None, env(&[("KEEL_SSO_ENABLED", "true")])).unwrap_err();
        assert!(err.to_string().contains("trusted_proxies"), "{err}");
    }
}
