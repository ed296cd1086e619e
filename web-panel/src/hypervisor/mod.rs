//! Hypervisor drivers: the only code in the panel that talks to a hypervisor.
//!
//! One [`Driver`] trait covers what the provisioning flow needs (create by
//! name, power, status, delete, snapshots, clone) and the figures the
//! system analytics collect (`stats`). Drivers:
//! - `libvirt`: KVM/QEMU (or TCG when `/dev/kvm` cannot boot a guest) and
//!   Xen through libvirt; a VM is a domain on a qcow2 overlay of the base
//!   image, installed by a cloud-init NoCloud seed ISO. Built only with the
//!   cargo feature `libvirt` (on by default), as it links the system libvirt;
//!   [`LIBVIRT_BUILT`] tells the config and the driver factory.
//! - `nspawn`: containers booted with `systemd-nspawn --boot` from the same
//!   base rootfs and the same seed, each in its own network namespace.
//! - `vsphere`: VMs cloned from templates in a vCenter over the vSphere Web
//!   Services API (our own small SOAP client), the seed in `guestinfo`.
//! - `docker`: containers on Docker Engine nodes through the Engine API
//!   (`bollard`), over the node's unix socket or TCP with TLS client
//!   certificates; CPU and memory limits enforced by the container's
//!   cgroup, snapshots and clones as committed images. Built only with the
//!   cargo feature `docker` (on by default); [`DOCKER_BUILT`] tells the
//!   config and the driver factory.
//! - `faulty`: a wrapper that makes a share of calls fail, for fault tests.
//!
//! Every operation is idempotent where the flow retries it: `create` of a
//! name that exists returns the existing VM, `delete` of a missing VM is
//! `Ok`. Errors say whether a retry can help ([`DriverError::is_retryable`]).

#[cfg(feature = "docker")]
pub mod docker;
pub mod faulty;
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod nspawn;
pub mod seed;
pub mod vsphere;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Whether this build has the libvirt driver (cargo feature `libvirt`).
pub const LIBVIRT_BUILT: bool = cfg!(feature = "libvirt");

/// What to do about a config that names `libvirt` in a build without it.
pub const LIBVIRT_NOT_BUILT: &str = "this keel-panel was built without the libvirt driver \
     (cargo feature `libvirt`): rebuild it with the default features, which needs \
     libvirt's development files (apt install libvirt-dev pkg-config), or choose \
     hypervisor.driver = \"nspawn\" or \"none\"";

/// Whether this build has the docker driver (cargo feature `docker`).
pub const DOCKER_BUILT: bool = cfg!(feature = "docker");

/// What to do about a config that names `docker` in a build without it.
pub const DOCKER_NOT_BUILT: &str = "this keel-panel was built without the docker driver \
     (cargo feature `docker`): rebuild it with the default features";

/// What a driver needs to create one VM. Everything is decided by the panel
/// before the driver is called, so a retried `create` builds the same VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Unique, stable name (the panel uses `keel-<service id>`); the
    /// idempotency key of `create`.
    pub name: String,
    pub cpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    /// Name of the OS image (a server type's `os_image`, e.g. `debian-bookworm`).
    pub image: String,
    /// The cloud-init NoCloud seed this VM boots with.
    pub seed: SeedData,
    /// The allocated network identity (also inside the seed). Drivers that
    /// build the VM's network themselves (user-mode forwards, veth pairs)
    /// read the addresses from here rather than parsing the seed.
    pub net: NetIdentity,
}

/// A cloud-init NoCloud seed: the three documents, already rendered.
/// Drivers write them to an ISO (libvirt) or a directory (nspawn).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedData {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: String,
}

/// The network a VM is built with: the identity from its pool allocation,
/// and where its NIC attaches (the pool's network, `[networks.<pool>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetIdentity {
    pub hostname: String,
    pub ipv4: Option<Ipv4Addr>,
    /// Prefix length of `ipv4`'s network.
    pub prefix4: u8,
    pub gateway4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Prefix length of `ipv6`'s network, as the pool gives it. Absent in
    /// what was written before pools carried it, and then /64.
    #[serde(default = "default_prefix6")]
    pub prefix6: u8,
    pub gateway6: Option<Ipv6Addr>,
    /// The driver's own private network, or an operator's bridge.
    #[serde(default)]
    pub attach: Attachment,
}

/// The IPv6 prefix length of an address whose pool names none.
pub const DEFAULT_PREFIX6: u8 = 64;

fn default_prefix6() -> u8 {
    DEFAULT_PREFIX6
}

/// Where a VM's NIC is attached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Attachment {
    /// The driver's own network for this one VM, the single-machine
    /// default: QEMU user-mode networking with the VM's sshd forwarded to a
    /// loopback port (libvirt), a veth routed from the host (nspawn).
    #[default]
    Private,
    /// A NIC on the network the VM's pool addresses belong to, named by
    /// `bridge`: an existing Linux bridge of the hypervisor host (say
    /// `br0`) under libvirt and nspawn, the datacenter's port group of that
    /// name (standard or distributed, say `VM Network`) under vSphere. The
    /// VM is reached at its allocated address, port 22.
    Bridge { bridge: String },
}

impl Attachment {
    /// The bridge, when the NIC is on one.
    pub fn bridge(&self) -> Option<&str> {
        match self {
            Attachment::Private => None,
            Attachment::Bridge { bridge } => Some(bridge),
        }
    }
}

/// Checks a VM or snapshot name a driver turns into file, XML or inventory
/// names: 1 to `max` bytes of letters, digits, `-`, `_` and `.`, not
/// starting with `.`.
pub(crate) fn check_plain_name(what: &str, name: &str, max: usize) -> DriverResult<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(DriverError::Permanent(format!(
            "invalid {what} name {name:?}"
        )))
    }
}

/// Checks a snapshot name the container drivers turn into directory names
/// and image tags: 1 to 60 of `[A-Za-z0-9_-]`, not starting with `-`.
pub(crate) fn check_snapshot_name(name: &str) -> DriverResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 60
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(DriverError::Permanent(format!(
            "invalid snapshot name {name:?} (want [A-Za-z0-9_-], at most 60 characters)"
        )))
    }
}

/// Whether `name` can be a Linux interface name (at most 15 bytes, no
/// slash, colon or white space, not `.` or `..`): the one check the config
/// and the drivers share for bridge names.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `name` can name a vSphere network (a port group): 1 to 80
/// characters, none of them a control character. vSphere's own limit;
/// spaces, slashes and the like are fine, because the name never reaches a
/// shell or a path (the driver compares it with the networks' names).
pub fn valid_port_group_name(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= 80 && !name.chars().any(char::is_control)
}

/// Power state as the hypervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    Running,
    Stopped,
    Paused,
    /// Crashed, or a state the driver cannot map.
    Other,
}

impl PowerState {
    /// The value stored in `vms.power_state`.
    pub fn as_db(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
            PowerState::Paused | PowerState::Other => "unknown",
        }
    }
}

/// A VM as the driver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub name: String,
    /// The hypervisor's own id for it (libvirt UUID, machine name, vSphere moref).
    pub vm_ref: String,
    pub power: PowerState,
    /// Where the panel reaches the VM's sshd, when the driver forwards it
    /// (user-mode networking); `None` means "at its allocated address".
    pub ssh_endpoint: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// Unix seconds, as the hypervisor reports it.
    pub created_at: i64,
}

/// A running VM's figures as its hypervisor accounts them (the analytics
/// collector, `provision/steps/metrics.rs`, turns counters into rates).
/// Counters are cumulative since the VM started; a figure the driver
/// cannot see is `None`, and the collector then takes it from the guest's
/// node exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStats {
    /// CPU time the guest used, in nanoseconds (libvirt's domain CPU time,
    /// a container's cgroup `usage_usec`).
    pub cpu_ns: Option<u64>,
    /// vCPUs the guest has: CPU time over wall time over this is the
    /// guest's CPU use as a share of what it was given.
    pub cpus: u32,
    /// Memory in use, in bytes, as the guest sees it (libvirt's balloon
    /// figures when the guest reports them; a container's cgroup memory).
    pub memory_used: Option<u64>,
    /// Memory the guest was given, in bytes.
    pub memory_total: Option<u64>,
    /// Bytes read from and written to the guest's disk.
    pub disk_read_bytes: Option<u64>,
    pub disk_write_bytes: Option<u64>,
    /// Bytes the guest received and sent on its network interface.
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

/// A stopped VM's files as its driver lays them out, for another host's
/// driver of the same kind to copy (a cold migration): [`Driver::export_vm`]
/// on the source host, [`Driver::import_vm`] on the target. The directory
/// must be readable where the target's driver runs (the panel's machine:
/// local disks, or the hosts' state directories mounted there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmExport {
    /// The driver kind that wrote it (`nspawn`, `libvirt`).
    pub kind: String,
    /// The VM's directory on the source host.
    pub dir: PathBuf,
}

/// Why a driver call failed, classified for the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The VM (or snapshot) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Connection refused, timeout, hypervisor busy: a retry may succeed.
    #[error("hypervisor unavailable: {0}")]
    Unavailable(String),
    /// Bad spec, missing image, not supported: retrying will not help.
    #[error("{0}")]
    Permanent(String),
}

impl DriverError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DriverError::Unavailable(_))
    }
}

pub type DriverResult<T> = Result<T, DriverError>;

/// A hypervisor. Implementations are cheap to share (`Arc<dyn Driver>`);
/// blocking client libraries run their calls on `spawn_blocking`.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Short name stored in `vms.hypervisor` (`libvirt`, `nspawn`, …).
    fn kind(&self) -> &'static str;

    /// Creates the VM and its disk/seed, not started. Creating a name that
    /// exists returns the existing VM unchanged (the flow retries this).
    async fn create(&self, spec: &VmSpec) -> DriverResult<VmInfo>;
    /// Starts (boots) the VM; starting a running VM is `Ok`.
    async fn start(&self, name: &str) -> DriverResult<()>;
    /// Asks the guest OS to shut down (ACPI); returns without waiting.
    async fn shutdown(&self, name: &str) -> DriverResult<()>;
    /// Cuts the power; powering off a stopped VM is `Ok`.
    async fn power_off(&self, name: &str) -> DriverResult<()>;
    /// Hard reset of a running VM.
    async fn reset(&self, name: &str) -> DriverResult<()>;
    /// The VM's state; `NotFound` when it does not exist.
    async fn status(&self, name: &str) -> DriverResult<VmInfo>;
    /// Powers off and removes the VM with its disks, seed and snapshots.
    /// Deleting a missing VM is `Ok`.
    async fn delete(&self, name: &str) -> DriverResult<()>;
    /// Every VM this driver manages (names with the panel's prefix), for
    /// the reconciliation job.
    async fn list(&self) -> DriverResult<Vec<VmInfo>>;

    async fn snapshot_create(&self, name: &str, snapshot: &str) -> DriverResult<()>;
    async fn snapshot_list(&self, name: &str) -> DriverResult<Vec<SnapshotInfo>>;
    async fn snapshot_revert(&self, name: &str, snapshot: &str) -> DriverResult<()>;
    async fn snapshot_delete(&self, name: &str, snapshot: &str) -> DriverResult<()>;
    /// Creates the VM `spec` describes (not started), as `create` does,
    /// but with a copy of VM `source`'s disk instead of a fresh one from the
    /// image: `spec.name`, its sizes, its seed and its network are the new
    /// VM's own, so it boots as itself with the source's data. The source
    /// may be running: the copy is then what a power cut would leave.
    /// `spec.image` must be the source's image, and the new disk cannot be
    /// smaller than the source's (`Permanent` otherwise). Idempotent by
    /// `spec.name`: a VM of that name is returned as it is.
    async fn clone_vm(&self, source: &str, spec: &VmSpec) -> DriverResult<VmInfo>;

    /// The directory this host keeps VM `name`'s files in, for a driver
    /// that keeps them in one the panel sees (`None` otherwise). Two hosts
    /// that answer the same directory share storage: a move between them
    /// copies nothing.
    fn files_dir(&self, name: &str) -> Option<std::path::PathBuf> {
        let _ = name;
        None
    }

    /// Where a stopped VM's files are, for [`Driver::import_vm`] on another
    /// host (cold migration). `Permanent` while it runs, and from a driver
    /// that cannot move VMs.
    async fn export_vm(&self, name: &str) -> DriverResult<VmExport> {
        Err(DriverError::Permanent(format!(
            "the {} driver cannot move {name} to another host",
            self.kind()
        )))
    }

    /// Makes VM `name` on this host (not started) from a copy of another
    /// host's export of the same VM: its disk (and snapshots, where the
    /// driver keeps them in its files), its seed and its network, so it
    /// boots as the same machine with the same host keys. Idempotent by
    /// name: a VM of that name is returned as it is.
    async fn import_vm(&self, name: &str, from: &VmExport) -> DriverResult<VmInfo> {
        let _ = from;
        Err(DriverError::Permanent(format!(
            "the {} driver cannot take {name} from another host",
            self.kind()
        )))
    }

    /// This host's address for a live migration to it (libvirt's
    /// connection URI); `None` for a driver that cannot take one.
    fn live_migration_uri(&self) -> Option<String> {
        None
    }

    /// Moves running VM `name` to the host at `target_uri` without
    /// stopping it (libvirt's migration with its disk copied along).
    async fn migrate_live(&self, name: &str, target_uri: &str) -> DriverResult<()> {
        let _ = target_uri;
        Err(DriverError::Permanent(format!(
            "the {} driver cannot move {name} while it runs",
            self.kind()
        )))
    }

    /// The VM's serial console, for the panel's console page; `None` when
    /// the driver has none (containers and vSphere VMs: the panel opens a
    /// shell over SSH instead). `NotFound` when the VM does not exist.
    async fn serial_console(&self, name: &str) -> DriverResult<Option<Console>> {
        let _ = name;
        Ok(None)
    }

    /// A running VM's CPU, memory, disk and network figures; `NotFound`
    /// when it does not exist. A driver that accounts nothing keeps this
    /// default, and the collector relies on the guest's exporter alone.
    async fn stats(&self, name: &str) -> DriverResult<VmStats> {
        Err(DriverError::Permanent(format!(
            "the {} driver reports no figures for {name}",
            self.kind()
        )))
    }
}

/// What a console carries towards the server: keystrokes, or the size of
/// the terminal that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleInput {
    Data(Vec<u8>),
    Resize { cols: u16, rows: u16 },
}

/// An open console, whatever carries it (a VM's serial line through its
/// hypervisor, or a terminal over SSH): what the server writes arrives on
/// `output`, which ends when the console does; what is sent on `input`
/// goes to the server, and dropping `input` closes the console.
#[derive(Debug)]
pub struct Console {
    pub output: tokio::sync::mpsc::Receiver<Vec<u8>>,
    pub input: tokio::sync::mpsc::Sender<ConsoleInput>,
}

/// Where drivers find base images: `<dir>/<image>/{disk.qcow2,vmlinuz,initrd.img,rootfs/}`
/// as `images/build-debian` writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStore {
    pub dir: PathBuf,
}

impl ImageStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ImageStore { dir: dir.into() }
    }

    /// The directory of one image, checked to be complete (`BUILT` exists).
    pub fn image_dir(&self, image: &str) -> DriverResult<PathBuf> {
        if image.is_empty() || image.contains('/') || image.starts_with('.') {
            return Err(DriverError::Permanent(format!(
                "invalid image name {image:?}"
            )));
        }
        let dir = self.dir.join(image);
        if !dir.join("BUILT").is_file() {
            return Err(DriverError::Permanent(format!(
                "image {image} is not built in {} (run images/build-debian)",
                self.dir.display()
            )));
        }
        Ok(dir)
    }
}
