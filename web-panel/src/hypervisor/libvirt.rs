//! The libvirt [`Driver`]: VMs as libvirt domains (QEMU with KVM, or TCG
//! when `/dev/kvm` cannot run a stock guest).
//!
//! A VM is a persistent domain named `<prefix><…>` whose files live in
//! `<state_dir>/<name>/`: `disk.qcow2` (an overlay of the image's
//! `disk.qcow2`), `seed.iso` (the cloud-init NoCloud seed) and `console.log`
//! (everything the serial console printed). The serial console is a pty
//! that libvirt also logs to that file, so the panel's console page can
//! attach to it (`serial_console`, a stream polled on a thread of its own)
//! while the log keeps the boot messages. The guest kernel is booted directly from the image
//! (`vmlinuz`, `initrd.img`, `root=/dev/vda`), with `panic=-1`, a pvpanic
//! device and `on_crash=destroy` so a broken guest stops instead of looping.
//!
//! Networking never uses libvirt's NAT networks. In [`Networking::UserMode`]
//! each VM gets its own QEMU user-mode (slirp) network built around the VM's
//! allocated address (read from its seed's network-config): the slirp
//! network is the VM's IPv4 network, the slirp host address is the VM's
//! gateway, and the VM's sshd is forwarded to `127.0.0.1:<port>`; the port
//! is kept in the domain's `<metadata>`, so [`Driver::status`] reports it as
//! [`VmInfo::ssh_endpoint`]. Slirp maps the gateway address to the host's
//! loopback, so a guest reaches a panel listening on `127.0.0.1` at its
//! gateway IP: phone-home URLs must use that IP.
//!
//! Figures (`stats`): the domain's CPU time and vCPUs (`virDomainGetInfo`),
//! the guest's own memory view from the balloon driver's statistics
//! (`available` − `usable`, reported every 10 s), block I/O of `vda`, and
//! with a bridge the interface counters by MAC address; a user-mode NIC
//! is QEMU's own, which libvirt does not see, so its traffic comes from
//! the guest's exporter.
//!
//! Moves between hosts: [`Driver::export_vm`] writes a stopped domain's
//! definition and its snapshots' definitions into `<vm dir>/export/`, and
//! [`Driver::import_vm`] on another host copies the disk (internal
//! snapshots included) and the seed into its own state directory, defines
//! the domain there with the same UUID, MAC and network (a new forwarded
//! port under user-mode networking) and redefines the snapshots around the
//! copied files. Both hosts' state directories must be reachable from the
//! panel (local, or mounted), and the image store is shared: the copied
//! overlay keeps its backing image. Hosts whose state directory is the same
//! (shared storage) move with libvirt's own migration instead
//! ([`Driver::migrate_live`]).
//!
//! libvirt calls block, so each runs on `spawn_blocking` with one shared
//! connection (reopened after a connection error). Errors are classified:
//! connection/RPC/timeouts are [`DriverError::Unavailable`], a missing
//! domain or snapshot is [`DriverError::NotFound`], the rest is permanent.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::error::{ErrorDomain, ErrorNumber};
use virt::sys;

use super::seed::{self, StaticIpv4};
use super::{
    Attachment, Console, ConsoleInput, Driver, DriverError, DriverResult, ImageStore, PowerState,
    SeedData, SnapshotInfo, VmExport, VmInfo, VmSpec, VmStats,
};

/// XML namespace of the driver's domain metadata.
pub const METADATA_NS: &str = "https://keel.dev/xmlns/libvirt/1";
const METADATA_PREFIX: &str = "keel";
/// Kernel command line of every VM. `net.ifnames=0` makes the NIC `eth0`,
/// the name the seed's network-config uses.
pub const KERNEL_CMDLINE: &str =
    "root=/dev/vda rw console=ttyS0 net.ifnames=0 no_timer_check panic=-1";
/// Added to [`KERNEL_CMDLINE`] when QEMU emulates the CPU (TCG, no usable
/// KVM: development and test machines): no address-space randomisation.
/// QEMU keys its cache of translated code by guest virtual address, so with
/// randomised mappings every process start translates its code again; without
/// them a process starts in about half the time (docs/benchmarks.md), and a
/// boot and a role run are mostly process starts. KVM guests keep it.
pub const TCG_CMDLINE_EXTRA: &str = "norandmaps";

/// The kernel command line of a domain of type `t`.
pub fn kernel_cmdline(t: DomainType) -> String {
    match t {
        DomainType::Kvm => KERNEL_CMDLINE.to_string(),
        DomainType::Qemu => format!("{KERNEL_CMDLINE} {TCG_CMDLINE_EXTRA}"),
    }
}

/// Carries one serial console between libvirt and the panel, on a thread
/// of its own for the console's whole life: libvirt's stream calls block,
/// so the stream is opened non-blocking and polled, the guest's output
/// handed to `output`, and what arrives on `input` written to the guest.
/// The console holds its own connection, so a long session never holds
/// the driver's shared one. It ends when the guest's side closes (the VM
/// stops), when libvirt fails, or when the panel drops its side.
fn serial_pump(
    uri: &str,
    name: &str,
    ready: tokio::sync::oneshot::Sender<DriverResult<()>>,
    output: tokio::sync::mpsc::Sender<Vec<u8>>,
    mut input: tokio::sync::mpsc::Receiver<ConsoleInput>,
) {
    let opened = (|| {
        let conn = Connect::open(Some(uri))
            .map_err(|e| DriverError::Unavailable(format!("connect to {uri}: {}", e.message())))?;
        let dom = LibvirtDriver::lookup(&conn, name)?;
        let stream =
            virt::stream::Stream::new(&conn, sys::VIR_STREAM_NONBLOCK).map_err(classify)?;
        // No FORCE flag: a console someone else has open stays theirs,
        // and this one fails with libvirt's "active console session".
        dom.open_console(None, &stream, 0).map_err(classify)?;
        Ok((conn, stream))
    })();
    let (mut conn, stream) = match opened {
        Ok(pair) => {
            let _ = ready.send(Ok(()));
            pair
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 4096];
    'pump: loop {
        let mut busy = false;
        // SAFETY: the stream is open for this loop's whole life and `buf`
        // is a valid buffer of the length given.
        let got =
            unsafe { sys::virStreamRecv(stream.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match got {
            n if n > 0 => {
                busy = true;
                let n = usize::try_from(n).unwrap_or(0).min(buf.len());
                if output.blocking_send(buf[..n].to_vec()).is_err() {
                    break 'pump;
                }
            }
            0 => break 'pump, // the guest's side closed
            -2 => {}          // nothing to read yet
            _ => break 'pump,
        }
        loop {
            if pending.is_empty() {
                match input.try_recv() {
                    Ok(ConsoleInput::Data(d)) => pending = d,
                    // A serial line has no size to change.
                    Ok(ConsoleInput::Resize { .. }) => continue,
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break 'pump,
                }
            }
            // SAFETY: as above; `pending` is valid for its length.
            let sent = unsafe {
                sys::virStreamSend(stream.as_ptr(), pending.as_ptr().cast(), pending.len())
            };
            match sent {
                n if n > 0 => {
                    busy = true;
                    let n = usize::try_from(n).unwrap_or(0).min(pending.len());
                    pending.drain(..n);
                }
                -2 => break, // libvirt's buffer is full: try again later
                _ => break 'pump,
            }
        }
        if output.is_closed() {
            break;
        }
        if !busy {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let _ = stream.abort();
    let _ = conn.close();
}

/// How VMs are attached to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Networking {
    /// A private QEMU user-mode network per VM; sshd is forwarded to a
    /// loopback port taken from `ssh_ports`.
    UserMode { ssh_ports: RangeInclusive<u16> },
    /// A NIC on an existing host bridge; the VM is reached at its own address.
    Bridge { bridge: String },
}

impl Default for Networking {
    fn default() -> Self {
        Networking::UserMode {
            ssh_ports: 22000..=22999,
        }
    }
}

/// libvirt's domain type for a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    Kvm,
    /// QEMU's TCG emulator: slow but works anywhere.
    Qemu,
}

impl DomainType {
    /// `kvm` when `/dev/kvm` can be opened and is not the nested PVM device
    /// (`/sys/module/kvm_pvm`), which cannot boot a stock kernel.
    pub fn detect() -> DomainType {
        let pvm = Path::new("/sys/module/kvm_pvm").exists();
        let kvm_usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let chosen = if kvm_usable && !pvm {
            DomainType::Kvm
        } else {
            DomainType::Qemu
        };
        tracing::info!(?chosen, kvm_usable, pvm, "libvirt domain type");
        chosen
    }

    fn as_str(self) -> &'static str {
        match self {
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        }
    }
}

/// Configuration of a [`LibvirtDriver`].
#[derive(Debug, Clone)]
pub struct LibvirtConfig {
    /// `qemu:///system` in production; `test:///default` in tests.
    pub uri: String,
    pub images: ImageStore,
    /// Per-VM directories; must be traversable by libvirt's QEMU user
    /// (libvirt's DAC driver hands the files themselves to it at start).
    pub state_dir: PathBuf,
    /// Names this driver manages start with it (`keel-`).
    pub prefix: String,
    pub networking: Networking,
    /// `None`: [`DomainType::detect`].
    pub domain_type: Option<DomainType>,
}

impl LibvirtConfig {
    pub fn new(uri: impl Into<String>, images: ImageStore, state_dir: impl Into<PathBuf>) -> Self {
        LibvirtConfig {
            uri: uri.into(),
            images,
            state_dir: state_dir.into(),
            prefix: "keel-".to_string(),
            networking: Networking::default(),
            domain_type: None,
        }
    }
}

/// What the driver records about a VM in its domain's `<metadata>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmMeta {
    pub image: String,
    pub cpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    /// Loopback port forwarded to the guest's sshd (user-mode networking).
    pub ssh_port: Option<u16>,
}

/// Everything the domain XML is generated from (see [`domain_xml`]).
#[derive(Debug, Clone)]
pub struct DomainParams {
    pub name: String,
    /// The domain's UUID; `None` lets libvirt choose one. A VM moved to
    /// another host keeps its own (snapshot definitions name it).
    pub uuid: Option<String>,
    pub domain_type: DomainType,
    pub meta: VmMeta,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub seed_iso: PathBuf,
    pub console_log: PathBuf,
    pub mac: String,
    pub net: NetAttachment,
}

/// The NIC part of [`DomainParams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAttachment {
    /// `-netdev user,…` via `<qemu:commandline>` (libvirt 9.0 has no native
    /// way to forward ports of a slirp interface).
    UserMode {
        network: Ipv4Addr,
        prefix: u8,
        host: Ipv4Addr,
        guest: Ipv4Addr,
        ssh_port: u16,
    },
    Bridge(String),
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn path_xml(p: &Path) -> String {
    xml_escape(&p.to_string_lossy())
}

/// The `<metadata>` element for `meta`.
pub fn metadata_xml(meta: &VmMeta) -> String {
    let mut s = format!(
        "<{p}:vm xmlns:{p}='{METADATA_NS}'><{p}:image>{}</{p}:image><{p}:cpus>{}</{p}:cpus>\
         <{p}:ram-mb>{}</{p}:ram-mb><{p}:disk-gb>{}</{p}:disk-gb>",
        xml_escape(&meta.image),
        meta.cpus,
        meta.ram_mb,
        meta.disk_gb,
        p = METADATA_PREFIX
    );
    if let Some(port) = meta.ssh_port {
        s.push_str(&format!(
            "<{p}:ssh-port>{port}</{p}:ssh-port>",
            p = METADATA_PREFIX
        ));
    }
    s.push_str(&format!("</{}:vm>", METADATA_PREFIX));
    s
}

/// The text of the first `<tag>…</tag>` (any namespace prefix) in `xml`.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = xml[from..].find('<') {
        let start = from + i + 1;
        let end = start + xml[start..].find('>')?;
        let name = &xml[start..end];
        let local = name.rsplit(':').next().unwrap_or(name);
        if local == tag && !name.starts_with('/') {
            let body = &xml[end + 1..];
            let close = body.find("</")?;
            return Some(body[..close].trim());
        }
        from = end;
    }
    None
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// Parses what [`metadata_xml`] wrote (as libvirt gives it back).
pub fn parse_metadata(xml: &str) -> Option<VmMeta> {
    Some(VmMeta {
        image: unescape(xml_text(xml, "image")?),
        cpus: xml_text(xml, "cpus")?.parse().ok()?,
        ram_mb: xml_text(xml, "ram-mb")?.parse().ok()?,
        disk_gb: xml_text(xml, "disk-gb")?.parse().ok()?,
        ssh_port: xml_text(xml, "ssh-port").and_then(|p| p.parse().ok()),
    })
}

/// The libvirt domain definition of a VM.
pub fn domain_xml(p: &DomainParams) -> String {
    let cpu = match p.domain_type {
        DomainType::Kvm => "  <cpu mode='host-passthrough'/>\n",
        DomainType::Qemu => "",
    };
    let (nic, qemu_args) = match &p.net {
        NetAttachment::Bridge(bridge) => (
            format!(
                "    <interface type='bridge'><source bridge='{}'/><mac address='{}'/><model type='virtio'/></interface>\n",
                xml_escape(bridge),
                p.mac
            ),
            String::new(),
        ),
        NetAttachment::UserMode {
            network,
            prefix,
            host,
            guest,
            ssh_port,
        } => {
            let netdev = format!(
                "user,id=keelnet0,net={network}/{prefix},host={host},hostfwd=tcp:127.0.0.1:{ssh_port}-{guest}:22"
            );
            // QEMU may place this device before libvirt's own, so it takes a
            // fixed slot at the end of the bus, far from libvirt's allocation
            // (which counts up from slot 2).
            let device = format!("virtio-net-pci,netdev=keelnet0,mac={},addr=0x1e", p.mac);
            (
                String::new(),
                format!(
                    "  <qemu:commandline>\n    <qemu:arg value='-netdev'/>\n    <qemu:arg value='{}'/>\n    \
                     <qemu:arg value='-device'/>\n    <qemu:arg value='{}'/>\n  </qemu:commandline>\n",
                    xml_escape(&netdev),
                    xml_escape(&device)
                ),
            )
        }
    };
    format!(
        "<domain type='{dtype}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
{uuid}  <metadata>{meta}</metadata>
  <memory unit='MiB'>{ram}</memory>
  <vcpu>{cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/><apic/></features>
{cpu}  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom' snapshot='no'>
      <driver name='qemu' type='raw'/>
      <source file='{seed}'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
{nic}    <serial type='pty'>
      <log file='{console}' append='on'/>
      <target port='0'/>
    </serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='virtio'><stats period='10'/></memballoon>
    <panic model='isa'/>
  </devices>
{qemu_args}</domain>
",
        dtype = p.domain_type.as_str(),
        name = xml_escape(&p.name),
        uuid = p
            .uuid
            .as_deref()
            .map(|u| format!("  <uuid>{}</uuid>\n", xml_escape(u)))
            .unwrap_or_default(),
        meta = metadata_xml(&p.meta),
        ram = p.meta.ram_mb,
        cpus = p.meta.cpus,
        kernel = path_xml(&p.kernel),
        initrd = path_xml(&p.initrd),
        cmdline = kernel_cmdline(p.domain_type),
        disk = path_xml(&p.disk),
        seed = path_xml(&p.seed_iso),
        console = path_xml(&p.console_log),
    )
}

/// How one VM is networked: on its own bridge when its pool's network
/// names one (no forwarded port: the panel reaches it at its address),
/// else as the driver is configured.
pub fn networking_for(driver: &Networking, attach: &Attachment) -> DriverResult<Networking> {
    match attach {
        Attachment::Private => Ok(driver.clone()),
        Attachment::Bridge { bridge } if super::valid_interface_name(bridge) => {
            Ok(Networking::Bridge {
                bridge: bridge.clone(),
            })
        }
        Attachment::Bridge { bridge } => Err(DriverError::Permanent(format!(
            "bridge {bridge:?} is not an interface name"
        ))),
    }
}

/// The value of attribute `name` in the first tag of `xml` (either quote).
fn attr_value<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(i) = tag.find(&key) {
            let rest = &tag[i + key.len()..];
            return rest.find(quote).map(|end| &rest[..end]);
        }
    }
    None
}

/// The NIC of a domain this driver defined, read back from its XML (as
/// [`domain_xml`] wrote it, or as libvirt returns it): the bridge of an
/// `<interface type='bridge'>`, or the user-mode network of the
/// `-netdev user,id=keelnet0,…` argument.
pub fn net_attachment_of(xml: &str) -> Option<NetAttachment> {
    let mut from = 0;
    while let Some(i) = xml[from..].find("<interface") {
        let start = from + i;
        let end = start + xml[start..].find("</interface>")?;
        let iface = &xml[start..end];
        let head = &iface[..iface.find('>')?];
        if attr_value(head, "type") == Some("bridge") {
            let src = iface.find("<source")?;
            return attr_value(&iface[src..], "bridge").map(|b| NetAttachment::Bridge(unescape(b)));
        }
        from = end;
    }
    let i = xml.find("user,id=keelnet0,")?;
    let rest = &xml[i..];
    let value = &rest[..rest.find(['\'', '"', '<'])?];
    let (mut network, mut prefix, mut host, mut fwd) = (None, None, None, None);
    for field in value.split(',') {
        if let Some(v) = field.strip_prefix("net=") {
            let (n, p) = v.split_once('/')?;
            network = n.parse::<Ipv4Addr>().ok();
            prefix = p.parse::<u8>().ok();
        } else if let Some(v) = field.strip_prefix("host=") {
            host = v.parse::<Ipv4Addr>().ok();
        } else if let Some(v) = field.strip_prefix("hostfwd=tcp:127.0.0.1:") {
            // `<port>-<guest>:22`
            let (port, guest) = v.split_once('-')?;
            let guest = guest.strip_suffix(":22")?;
            fwd = Some((port.parse::<u16>().ok()?, guest.parse::<Ipv4Addr>().ok()?));
        }
    }
    let (ssh_port, guest) = fwd?;
    Some(NetAttachment::UserMode {
        network: network?,
        prefix: prefix?,
        host: host?,
        guest,
        ssh_port,
    })
}

/// One snapshot in an export's `snapshots.json`, parents first.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ExportedSnapshot {
    /// The file under `export/snapshots/` holding its definition.
    file: String,
    /// Whether it was the domain's current snapshot.
    current: bool,
}

/// Copies `from` to `to` through a temporary name, so a half-copied file is
/// never taken for a whole one; the copy is private to root.
async fn copy_private(from: &Path, to: &Path) -> DriverResult<()> {
    let part = to.with_extension("part");
    tokio::fs::copy(from, &part).await.map_err(io_err(format!(
        "copy {} to {}",
        from.display(),
        part.display()
    )))?;
    set_mode(&part, 0o600).await?;
    tokio::fs::rename(&part, to)
        .await
        .map_err(io_err(format!("rename {}", part.display())))
}

/// A stable, locally administered MAC (QEMU's 52:54:00 prefix) for a name.
fn mac_for(name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(name.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

fn classify(e: virt::error::Error) -> DriverError {
    let unavailable = matches!(
        e.code(),
        ErrorNumber::NoConnect
            | ErrorNumber::SystemError
            | ErrorNumber::Rpc
            | ErrorNumber::OperationTimeout
            | ErrorNumber::AgentUnresponsive
            | ErrorNumber::ResourceBusy
    ) || matches!(e.domain(), ErrorDomain::Rpc | ErrorDomain::Remote);
    let msg = e.message().to_string();
    if matches!(
        e.code(),
        ErrorNumber::NoDomain | ErrorNumber::NoDomainSnapshot
    ) {
        DriverError::NotFound(msg)
    } else if unavailable {
        DriverError::Unavailable(msg)
    } else {
        DriverError::Permanent(msg)
    }
}

fn is_code(e: &virt::error::Error, code: ErrorNumber) -> bool {
    e.code() == code
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> DriverError {
    move |e| DriverError::Permanent(format!("{context}: {e}"))
}

/// Names of VMs and snapshots become file and XML names: keep them plain.
fn check_name(what: &str, name: &str) -> DriverResult<()> {
    super::check_plain_name(what, name, 64)
}

fn seed_err(e: seed::SeedError) -> DriverError {
    DriverError::Permanent(format!("seed: {e}"))
}

/// See the module documentation.
pub struct LibvirtDriver {
    cfg: Arc<LibvirtConfig>,
    domain_type: DomainType,
    conn: Arc<Mutex<Option<Connect>>>,
    /// Serialises create/clone/delete so two calls for one name (or two
    /// port allocations) cannot interleave.
    ops: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LibvirtDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtDriver")
            .field("cfg", &self.cfg)
            .field("domain_type", &self.domain_type)
            .finish_non_exhaustive()
    }
}

impl LibvirtDriver {
    /// A driver; it connects on first use.
    pub fn new(cfg: LibvirtConfig) -> Self {
        // libvirt prints every error to stderr by default; ours are returned.
        virt::error::clear_error_callback();
        let domain_type = cfg.domain_type.unwrap_or_else(DomainType::detect);
        LibvirtDriver {
            cfg: Arc::new(cfg),
            domain_type,
            conn: Arc::new(Mutex::new(None)),
            ops: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &LibvirtConfig {
        &self.cfg
    }

    pub fn domain_type(&self) -> DomainType {
        self.domain_type
    }

    /// The directory holding a VM's disk, seed and console log.
    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join(name)
    }

    /// Runs `f` with the shared connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> DriverResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> DriverResult<T> + Send + 'static,
    {
        let slot = self.conn.clone();
        let uri = self.cfg.uri.clone();
        tokio::task::spawn_blocking(move || {
            let conn = {
                let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                let alive = guard
                    .as_ref()
                    .map(|c| c.is_alive().unwrap_or(false))
                    .unwrap_or(false);
                if !alive {
                    let c = Connect::open(Some(&uri)).map_err(|e| {
                        DriverError::Unavailable(format!("connect to {uri}: {}", e.message()))
                    })?;
                    *guard = Some(c);
                }
                guard.as_ref().cloned().expect("connection just set")
            };
            let result = f(&conn);
            if matches!(result, Err(DriverError::Unavailable(_))) {
                // Reconnect next time; the connection may be broken.
                let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                *guard = None;
            }
            result
        })
        .await
        .map_err(|e| DriverError::Permanent(format!("libvirt task failed: {e}")))?
    }

    fn lookup(conn: &Connect, name: &str) -> DriverResult<Domain> {
        Domain::lookup_by_name(conn, name).map_err(classify)
    }

    fn lookup_opt(conn: &Connect, name: &str) -> DriverResult<Option<Domain>> {
        match Domain::lookup_by_name(conn, name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is_code(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    fn meta_of(dom: &Domain) -> Option<VmMeta> {
        dom.get_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_NS),
            0,
        )
        .ok()
        .and_then(|x| parse_metadata(&x))
    }

    fn info_of(dom: &Domain) -> DriverResult<VmInfo> {
        let (state, _) = dom.get_state().map_err(classify)?;
        let power = match state {
            sys::VIR_DOMAIN_RUNNING => PowerState::Running,
            sys::VIR_DOMAIN_SHUTOFF => PowerState::Stopped,
            sys::VIR_DOMAIN_PAUSED => PowerState::Paused,
            _ => PowerState::Other,
        };
        let ssh_endpoint = Self::meta_of(dom)
            .and_then(|m| m.ssh_port)
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
        Ok(VmInfo {
            name: dom.get_name().map_err(classify)?,
            vm_ref: dom.get_uuid_string().map_err(classify)?,
            power,
            ssh_endpoint,
        })
    }

    async fn status_opt(&self, name: &str) -> DriverResult<Option<VmInfo>> {
        let name = name.to_string();
        self.with_conn(move |c| match Self::lookup_opt(c, &name)? {
            Some(d) => Self::info_of(&d).map(Some),
            None => Ok(None),
        })
        .await
    }

    /// Ports recorded by every managed domain.
    async fn used_ports(&self) -> DriverResult<Vec<u16>> {
        let prefix = self.cfg.prefix.clone();
        self.with_conn(move |c| {
            let doms = c.list_all_domains(0).map_err(classify)?;
            Ok(doms
                .iter()
                .filter(|d| {
                    d.get_name()
                        .map(|n| n.starts_with(&prefix))
                        .unwrap_or(false)
                })
                .filter_map(|d| Self::meta_of(d).and_then(|m| m.ssh_port))
                .collect())
        })
        .await
    }

    /// A loopback port for `name`'s sshd: first free one from a start
    /// derived from the name, skipping ports other VMs hold (running or not)
    /// and ports something on this host is bound to.
    async fn allocate_port(&self, name: &str, range: &RangeInclusive<u16>) -> DriverResult<u16> {
        use sha2::Digest;
        let used = self.used_ports().await?;
        let (lo, hi) = (*range.start() as u32, *range.end() as u32);
        if lo > hi {
            return Err(DriverError::Permanent("empty SSH port range".into()));
        }
        let span = hi - lo + 1;
        let h = sha2::Sha256::digest(name.as_bytes());
        let start = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % span;
        for i in 0..span {
            let port = (lo + (start + i) % span) as u16;
            if used.contains(&port) {
                continue;
            }
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
        Err(DriverError::Unavailable(format!(
            "no free SSH forwarding port in {lo}..={hi}"
        )))
    }

    /// Writes the seed ISO and defines the domain around an existing disk,
    /// its NIC on the VM's own bridge when `attach` names one (its pool's
    /// network), else as the driver's `networking` says.
    async fn define(
        &self,
        name: &str,
        meta: VmMeta,
        seed_data: &SeedData,
        image_dir: &Path,
        attach: &Attachment,
        addr: Option<StaticIpv4>,
    ) -> DriverResult<VmInfo> {
        let networking = networking_for(&self.cfg.networking, attach)?;
        let dir = self.vm_dir(name);
        let iso = dir.join("seed.iso");
        seed::write_iso(seed_data, &iso).await.map_err(seed_err)?;
        set_mode(&iso, 0o600).await?;
        let mut meta = meta;
        let net = match networking {
            Networking::Bridge { bridge } => NetAttachment::Bridge(bridge),
            Networking::UserMode { ssh_ports } => {
                let StaticIpv4 {
                    address,
                    prefix,
                    gateway,
                } = addr.unwrap_or(StaticIpv4 {
                    // Slirp's defaults; the guest gets .15 by DHCP.
                    address: Ipv4Addr::new(10, 0, 2, 15),
                    prefix: 24,
                    gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                });
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(prefix))
                };
                let network = Ipv4Addr::from(u32::from(address) & mask);
                let host = gateway.unwrap_or(Ipv4Addr::from(u32::from(network) + 2));
                let port = self.allocate_port(name, &ssh_ports).await?;
                meta.ssh_port = Some(port);
                NetAttachment::UserMode {
                    network,
                    prefix,
                    host,
                    guest: address,
                    ssh_port: port,
                }
            }
        };
        let params = DomainParams {
            name: name.to_string(),
            uuid: None,
            domain_type: self.domain_type,
            meta,
            kernel: image_dir.join("vmlinuz"),
            initrd: image_dir.join("initrd.img"),
            disk: dir.join("disk.qcow2"),
            seed_iso: iso,
            console_log: dir.join("console.log"),
            mac: mac_for(name),
            net,
        };
        let xml = domain_xml(&params);
        let name = name.to_string();
        self.with_conn(move |c| {
            let dom = Domain::define_xml(c, &xml).map_err(classify)?;
            tracing::info!(vm = %name, "defined libvirt domain");
            Self::info_of(&dom)
        })
        .await
    }

    async fn make_vm_dir(&self, name: &str) -> DriverResult<PathBuf> {
        let dir = self.vm_dir(name);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err(format!("create {}", dir.display())))?;
        // QEMU (libvirt's unprivileged user) only needs to traverse it.
        set_mode(&self.cfg.state_dir, 0o711).await?;
        set_mode(&dir, 0o711).await?;
        Ok(dir)
    }

    /// Runs a simple state change on a domain.
    async fn on_domain<F>(&self, name: &str, f: F) -> DriverResult<()>
    where
        F: FnOnce(&Domain) -> DriverResult<()> + Send + 'static,
    {
        let name = name.to_string();
        self.with_conn(move |c| f(&Self::lookup(c, &name)?)).await
    }
}

async fn set_mode(path: &Path, mode: u32) -> DriverResult<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(io_err(format!("chmod {}", path.display())))
}

/// Runs a tool (never through a shell) and maps failure to `Permanent`.
async fn run(program: &str, args: &[&std::ffi::OsStr]) -> DriverResult<Vec<u8>> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(io_err(format!("run {program}")))?;
    if !out.status.success() {
        return Err(DriverError::Permanent(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// Virtual size in bytes of a disk image.
async fn virtual_size(image: &Path) -> DriverResult<u64> {
    let out = run(
        "qemu-img",
        &[
            "info".as_ref(),
            "-U".as_ref(),
            "--output=json".as_ref(),
            image.as_os_str(),
        ],
    )
    .await?;
    let v: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| DriverError::Permanent(format!("qemu-img info: {e}")))?;
    v["virtual-size"]
        .as_u64()
        .ok_or_else(|| DriverError::Permanent("qemu-img info: no virtual-size".into()))
}

/// The backing file a qcow2 overlay names, if any.
async fn backing_file(disk: &Path) -> DriverResult<Option<PathBuf>> {
    let out = run(
        "qemu-img",
        &[
            "info".as_ref(),
            "-U".as_ref(),
            "--output=json".as_ref(),
            disk.as_os_str(),
        ],
    )
    .await?;
    let v: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| DriverError::Permanent(format!("qemu-img info: {e}")))?;
    Ok(v["full-backing-filename"]
        .as_str()
        .or_else(|| v["backing-filename"].as_str())
        .map(PathBuf::from))
}

/// Writes a file only root can read.
async fn write_private(path: &Path, data: &[u8]) -> DriverResult<()> {
    tokio::fs::write(path, data)
        .await
        .map_err(io_err(format!("write {}", path.display())))?;
    set_mode(path, 0o600).await
}

fn snapshot_xml(name: &str) -> String {
    format!(
        "<domainsnapshot><name>{}</name></domainsnapshot>",
        xml_escape(name)
    )
}

#[async_trait]
impl Driver for LibvirtDriver {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    async fn create(&self, spec: &VmSpec) -> DriverResult<VmInfo> {
        check_name("VM", &spec.name)?;
        let _guard = self.ops.lock().await;
        if let Some(info) = self.status_opt(&spec.name).await? {
            return Ok(info);
        }
        let image_dir = self.cfg.images.image_dir(&spec.image)?;
        let base = image_dir.join("disk.qcow2");
        let size = spec.disk_gb.saturating_mul(1 << 30);
        if size < virtual_size(&base).await? {
            return Err(DriverError::Permanent(format!(
                "disk_gb {} is smaller than image {}",
                spec.disk_gb, spec.image
            )));
        }
        let dir = self.make_vm_dir(&spec.name).await?;
        // Not defined yet, so any disk here is a leftover of a failed
        // attempt that nothing uses: start over.
        let disk = dir.join("disk.qcow2");
        let _ = tokio::fs::remove_file(&disk).await;
        let size_arg = format!("{}G", spec.disk_gb);
        run(
            "qemu-img",
            &[
                "create".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                "-F".as_ref(),
                "qcow2".as_ref(),
                "-b".as_ref(),
                base.as_os_str(),
                disk.as_os_str(),
                size_arg.as_ref(),
            ],
        )
        .await?;
        set_mode(&disk, 0o600).await?;
        let meta = VmMeta {
            image: spec.image.clone(),
            cpus: spec.cpus.max(1),
            ram_mb: spec.ram_mb,
            disk_gb: spec.disk_gb,
            ssh_port: None,
        };
        let addr = spec
            .net
            .ipv4
            .map(|address| StaticIpv4 {
                address,
                prefix: spec.net.prefix4.min(32),
                gateway: spec.net.gateway4,
            })
            .or_else(|| seed::static_ipv4(&spec.seed.network_config));
        self.define(
            &spec.name,
            meta,
            &spec.seed,
            &image_dir,
            &spec.net.attach,
            addr,
        )
        .await
    }

    async fn start(&self, name: &str) -> DriverResult<()> {
        self.on_domain(name, |d| {
            if d.is_active().map_err(classify)? {
                return Ok(());
            }
            match d.create() {
                Ok(_) => Ok(()),
                // Raced with another start.
                Err(e)
                    if is_code(&e, ErrorNumber::OperationInvalid)
                        && d.is_active().unwrap_or(false) =>
                {
                    Ok(())
                }
                Err(e) => Err(classify(e)),
            }
        })
        .await
    }

    async fn shutdown(&self, name: &str) -> DriverResult<()> {
        self.on_domain(name, |d| {
            if !d.is_active().map_err(classify)? {
                return Ok(());
            }
            d.shutdown().map(|_| ()).map_err(classify)
        })
        .await
    }

    async fn power_off(&self, name: &str) -> DriverResult<()> {
        self.on_domain(name, |d| match d.destroy() {
            Ok(()) => Ok(()),
            Err(e) if is_code(&e, ErrorNumber::OperationInvalid) => Ok(()),
            Err(e) => Err(classify(e)),
        })
        .await
    }

    async fn reset(&self, name: &str) -> DriverResult<()> {
        self.on_domain(name, |d| d.reset().map(|_| ()).map_err(classify))
            .await
    }

    async fn status(&self, name: &str) -> DriverResult<VmInfo> {
        self.status_opt(name)
            .await?
            .ok_or_else(|| DriverError::NotFound(format!("VM {name}")))
    }

    async fn delete(&self, name: &str) -> DriverResult<()> {
        check_name("VM", name)?;
        let _guard = self.ops.lock().await;
        let n = name.to_string();
        self.with_conn(move |c| {
            let Some(d) = Self::lookup_opt(c, &n)? else {
                return Ok(());
            };
            match d.destroy() {
                Ok(()) => {}
                Err(e) if is_code(&e, ErrorNumber::OperationInvalid) => {}
                Err(e) => return Err(classify(e)),
            }
            let flags = sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
            // Hypervisors that know no NVRAM or checkpoints (libvirt's test
            // driver) refuse those flags; the basic pair is enough for them.
            let basic =
                sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE;
            let undefined = match d.undefine_flags(flags) {
                Err(e) if is_code(&e, ErrorNumber::InvalidArg) => d.undefine_flags(basic),
                other => other,
            };
            match undefined {
                Ok(()) => {}
                Err(e) if is_code(&e, ErrorNumber::NoDomain) => {}
                Err(e) => return Err(classify(e)),
            }
            tracing::info!(vm = %n, "undefined libvirt domain");
            Ok(())
        })
        .await?;
        let dir = self.vm_dir(name);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", dir.display()))(e)),
        }
    }

    async fn list(&self) -> DriverResult<Vec<VmInfo>> {
        let prefix = self.cfg.prefix.clone();
        let mut vms = self
            .with_conn(move |c| {
                let doms = c.list_all_domains(0).map_err(classify)?;
                let mut out = Vec::new();
                for d in &doms {
                    let Ok(name) = d.get_name() else { continue };
                    if !name.starts_with(&prefix) {
                        continue;
                    }
                    match Self::info_of(d) {
                        Ok(info) => out.push(info),
                        // Undefined between listing and looking.
                        Err(DriverError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            })
            .await?;
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vms)
    }

    async fn snapshot_create(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        check_name("snapshot", snapshot)?;
        let snapshot = snapshot.to_string();
        self.on_domain(name, move |d| {
            match DomainSnapshot::lookup_by_name(d, &snapshot, 0) {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, ErrorNumber::NoDomainSnapshot) => {}
                Err(e) => return Err(classify(e)),
            }
            DomainSnapshot::create_xml(
                d,
                &snapshot_xml(&snapshot),
                sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
            )
            .map(|_| ())
            .map_err(classify)
        })
        .await
    }

    async fn snapshot_list(&self, name: &str) -> DriverResult<Vec<SnapshotInfo>> {
        let name = name.to_string();
        let mut snaps = self
            .with_conn(move |c| {
                let d = Self::lookup(c, &name)?;
                let mut out = Vec::new();
                for s in d.list_all_snapshots(0).map_err(classify)? {
                    let xml = s.get_xml_desc(0).map_err(classify)?;
                    out.push(SnapshotInfo {
                        name: s.get_name().map_err(classify)?,
                        created_at: xml_text(&xml, "creationTime")
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0),
                    });
                }
                Ok(out)
            })
            .await?;
        snaps.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(snaps)
    }

    async fn snapshot_revert(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        let snapshot = snapshot.to_string();
        self.on_domain(name, move |d| {
            let s = DomainSnapshot::lookup_by_name(d, &snapshot, 0).map_err(classify)?;
            s.revert(0).map_err(classify)
        })
        .await
    }

    async fn snapshot_delete(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        let snapshot = snapshot.to_string();
        self.on_domain(name, move |d| {
            match DomainSnapshot::lookup_by_name(d, &snapshot, 0) {
                Ok(s) => s.delete(0).map_err(classify),
                Err(e) if is_code(&e, ErrorNumber::NoDomainSnapshot) => Ok(()),
                Err(e) => Err(classify(e)),
            }
        })
        .await
    }

    async fn stats(&self, name: &str) -> DriverResult<VmStats> {
        check_name("VM", name)?;
        let name = name.to_string();
        let bridged = matches!(self.cfg.networking, Networking::Bridge { .. });
        self.with_conn(move |c| {
            let dom = Self::lookup(c, &name)?;
            let info = dom.get_info().map_err(classify)?;
            let mut out = VmStats {
                cpu_ns: Some(info.cpu_time),
                cpus: info.nr_virt_cpu.max(1),
                memory_total: Some(info.max_mem.saturating_mul(1024)),
                ..VmStats::default()
            };
            if let Ok(mem) = dom.memory_stats(0) {
                let tag = |t: u32| mem.iter().find(|m| m.tag == t).map(|m| m.val);
                let available = tag(sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE);
                let free = tag(sys::VIR_DOMAIN_MEMORY_STAT_USABLE)
                    .or(tag(sys::VIR_DOMAIN_MEMORY_STAT_UNUSED));
                if let (Some(a), Some(f)) = (available, free) {
                    out.memory_used = Some(a.saturating_sub(f).saturating_mul(1024));
                    out.memory_total = Some(a.saturating_mul(1024));
                }
            }
            if let Ok(b) = dom.get_block_stats("vda") {
                out.disk_read_bytes = u64::try_from(b.rd_bytes).ok();
                out.disk_write_bytes = u64::try_from(b.wr_bytes).ok();
            }
            if bridged {
                if let Ok(n) = dom.interface_stats(&mac_for(&name)) {
                    out.net_rx_bytes = u64::try_from(n.rx_bytes).ok();
                    out.net_tx_bytes = u64::try_from(n.tx_bytes).ok();
                }
            }
            Ok(out)
        })
        .await
    }

    fn files_dir(&self, name: &str) -> Option<PathBuf> {
        Some(self.vm_dir(name))
    }

    /// Writes the stopped domain's definition and its snapshots'
    /// definitions (parents first) into `<vm dir>/export/`, for
    /// [`Driver::import_vm`] on another host; `Permanent` while it runs.
    async fn export_vm(&self, name: &str) -> DriverResult<VmExport> {
        check_name("VM", name)?;
        let _guard = self.ops.lock().await;
        let n = name.to_string();
        let (xml, snapshots) = self
            .with_conn(move |c| {
                let d = Self::lookup(c, &n)?;
                if d.is_active().map_err(classify)? {
                    return Err(DriverError::Permanent(format!(
                        "VM {n} runs: stop it before moving it to a host without shared storage"
                    )));
                }
                let xml = d
                    .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE)
                    .map_err(classify)?;
                let mut snapshots = Vec::new();
                for s in d
                    .list_all_snapshots(sys::VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
                    .map_err(classify)?
                {
                    let sx = s
                        .get_xml_desc(sys::VIR_DOMAIN_SNAPSHOT_XML_SECURE)
                        .map_err(classify)?;
                    snapshots.push((sx, s.is_current(0).map_err(classify)?));
                }
                Ok((xml, snapshots))
            })
            .await?;
        let dir = self.vm_dir(name);
        let out = dir.join("export");
        match tokio::fs::remove_dir_all(&out).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("remove {}", out.display()))(e)),
        }
        let snap_dir = out.join("snapshots");
        tokio::fs::create_dir_all(&snap_dir)
            .await
            .map_err(io_err(format!("create {}", snap_dir.display())))?;
        set_mode(&out, 0o700).await?;
        let mut manifest = Vec::new();
        for (i, (sx, current)) in snapshots.iter().enumerate() {
            let file = format!("{:04}.xml", i + 1);
            write_private(&snap_dir.join(&file), sx.as_bytes()).await?;
            manifest.push(ExportedSnapshot {
                file,
                current: *current,
            });
        }
        let manifest = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| DriverError::Permanent(format!("snapshot list: {e}")))?;
        write_private(&out.join("snapshots.json"), &manifest).await?;
        // Written last: its presence says the export is complete.
        write_private(&out.join("domain.xml"), xml.as_bytes()).await?;
        Ok(VmExport {
            kind: self.kind().to_string(),
            dir,
        })
    }

    /// Makes VM `name` here from another libvirt host's export: its disk
    /// (with its internal snapshots) and seed are copied into this host's
    /// state directory, the domain is defined with the source's UUID, MAC,
    /// sizes and network (under user-mode networking with a forwarded port
    /// of this host's range), and the snapshots are redefined around the
    /// copied files. Nothing is defined unless all of it succeeds.
    async fn import_vm(&self, name: &str, from: &VmExport) -> DriverResult<VmInfo> {
        check_name("VM", name)?;
        let _guard = self.ops.lock().await;
        if let Some(info) = self.status_opt(name).await? {
            return Ok(info);
        }
        if from.kind != self.kind() {
            return Err(DriverError::Permanent(format!(
                "{name} comes from a {} host; a libvirt host takes libvirt VMs only",
                from.kind
            )));
        }
        let dir = self.vm_dir(name);
        if from.dir == dir {
            return Err(DriverError::Permanent(format!(
                "{name}: the source and target hosts share one state directory; \
                 move it with libvirt's migration"
            )));
        }
        let export = from.dir.join("export");
        let read = |p: PathBuf| async move {
            tokio::fs::read_to_string(&p).await.map_err(|e| {
                DriverError::Permanent(format!(
                    "{}: {e} (the source host's export is incomplete)",
                    p.display()
                ))
            })
        };
        let xml = read(export.join("domain.xml")).await?;
        let corrupt = |what: &str| {
            DriverError::Permanent(format!(
                "{}: no {what} in the exported definition",
                export.join("domain.xml").display()
            ))
        };
        let mut meta = parse_metadata(&xml).ok_or_else(|| corrupt("Keel metadata"))?;
        let uuid = xml_text(&xml, "uuid")
            .map(str::to_string)
            .ok_or_else(|| corrupt("uuid"))?;
        let old_net = net_attachment_of(&xml).ok_or_else(|| corrupt("Keel network"))?;
        let manifest: Vec<ExportedSnapshot> =
            serde_json::from_str(&read(export.join("snapshots.json")).await?)
                .map_err(|e| corrupt(&format!("readable snapshot list ({e})")))?;
        let mut snapshots = Vec::new();
        for s in &manifest {
            if s.file.contains('/') || s.file.starts_with('.') {
                return Err(corrupt("safe snapshot file name"));
            }
            snapshots.push((
                read(export.join("snapshots").join(&s.file)).await?,
                s.current,
            ));
        }
        let image_dir = self.cfg.images.image_dir(&meta.image)?;

        let dir = self.make_vm_dir(name).await?;
        let disk = dir.join("disk.qcow2");
        copy_private(&from.dir.join("disk.qcow2"), &disk).await?;
        let base = image_dir.join("disk.qcow2");
        let backing = backing_file(&disk).await?;
        if backing.as_deref() != Some(base.as_path()) {
            return Err(DriverError::Permanent(format!(
                "{name}'s disk is an overlay of {}, not of this host's {}: \
                 both hosts must share the image store",
                backing
                    .map(|b| b.display().to_string())
                    .unwrap_or_else(|| "no image".into()),
                base.display()
            )));
        }
        let iso = dir.join("seed.iso");
        copy_private(&from.dir.join("seed.iso"), &iso).await?;

        let old_port = match &old_net {
            NetAttachment::UserMode { ssh_port, .. } => Some(*ssh_port),
            NetAttachment::Bridge(_) => None,
        };
        let net = match old_net {
            NetAttachment::Bridge(b) => NetAttachment::Bridge(b),
            NetAttachment::UserMode {
                network,
                prefix,
                host,
                guest,
                ..
            } => {
                let Networking::UserMode { ssh_ports } = &self.cfg.networking else {
                    return Err(DriverError::Permanent(format!(
                        "{name} uses user-mode networking, which this host does not offer"
                    )));
                };
                let ssh_port = self.allocate_port(name, ssh_ports).await?;
                meta.ssh_port = Some(ssh_port);
                NetAttachment::UserMode {
                    network,
                    prefix,
                    host,
                    guest,
                    ssh_port,
                }
            }
        };
        // Snapshot definitions hold the domain as it was then: point them
        // at this host's files and port.
        let old_files = format!("{}/", path_xml(&from.dir));
        let new_files = format!("{}/", path_xml(&dir));
        let snapshots: Vec<(String, bool)> = snapshots
            .into_iter()
            .map(|(sx, current)| {
                let mut sx = sx.replace(&old_files, &new_files);
                if let (Some(old), Some(new)) = (old_port, meta.ssh_port) {
                    sx = sx
                        .replace(
                            &format!("hostfwd=tcp:127.0.0.1:{old}-"),
                            &format!("hostfwd=tcp:127.0.0.1:{new}-"),
                        )
                        .replace(&format!("ssh-port>{old}<"), &format!("ssh-port>{new}<"));
                }
                (sx, current)
            })
            .collect();
        let params = DomainParams {
            name: name.to_string(),
            uuid: Some(uuid),
            domain_type: self.domain_type,
            meta,
            kernel: image_dir.join("vmlinuz"),
            initrd: image_dir.join("initrd.img"),
            disk,
            seed_iso: iso,
            console_log: dir.join("console.log"),
            mac: mac_for(name),
            net,
        };
        let dxml = domain_xml(&params);
        let n = name.to_string();
        self.with_conn(move |c| {
            let dom = Domain::define_xml(c, &dxml).map_err(classify)?;
            for (sx, current) in &snapshots {
                let mut flags = sys::VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE;
                if *current {
                    flags |= sys::VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT;
                }
                if let Err(e) = DomainSnapshot::create_xml(&dom, sx, flags) {
                    // Not half-made: the next attempt starts over.
                    let _ = dom.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA);
                    return Err(classify(e));
                }
            }
            tracing::info!(vm = %n, snapshots = snapshots.len(), "imported libvirt domain");
            Self::info_of(&dom)
        })
        .await
    }

    async fn serial_console(&self, name: &str) -> DriverResult<Option<Console>> {
        check_name("VM", name)?;
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(64);
        let (in_tx, in_rx) = tokio::sync::mpsc::channel(64);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let uri = self.cfg.uri.clone();
        let name = name.to_string();
        std::thread::Builder::new()
            .name("libvirt-console".into())
            .spawn(move || serial_pump(&uri, &name, ready_tx, out_tx, in_rx))
            .map_err(|e| DriverError::Unavailable(format!("starting the console thread: {e}")))?;
        ready_rx
            .await
            .map_err(|_| DriverError::Permanent("the console thread ended early".into()))??;
        Ok(Some(Console {
            output: out_rx,
            input: in_tx,
        }))
    }

    fn live_migration_uri(&self) -> Option<String> {
        Some(self.cfg.uri.clone())
    }

    /// libvirt's own migration, peer to peer (this host's libvirtd
    /// connects to the target's): live while the domain runs, offline (the
    /// definition only) while it is stopped; the target keeps the domain
    /// defined and the source forgets it. The VM's files are not copied:
    /// both hosts must see `<state_dir>/<name>/` and the image store at
    /// the same paths (shared storage), as a cluster of libvirt hosts does.
    async fn migrate_live(&self, name: &str, target_uri: &str) -> DriverResult<()> {
        check_name("VM", name)?;
        let target = target_uri.to_string();
        self.on_domain(name, move |d| {
            let active = d.is_active().map_err(classify)?;
            let mut flags = sys::VIR_MIGRATE_PEER2PEER
                | sys::VIR_MIGRATE_PERSIST_DEST
                | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
            flags |= if active {
                sys::VIR_MIGRATE_LIVE
            } else {
                sys::VIR_MIGRATE_OFFLINE
            };
            d.migrate_to_uri(&target, flags, None, 0).map_err(classify)
        })
        .await
    }

    async fn clone_vm(&self, source: &str, spec: &VmSpec) -> DriverResult<VmInfo> {
        check_name("VM", &spec.name)?;
        let target = spec.name.as_str();
        let _guard = self.ops.lock().await;
        if let Some(info) = self.status_opt(target).await? {
            return Ok(info);
        }
        let n = source.to_string();
        let src_meta = self
            .with_conn(move |c| {
                let d = Self::lookup(c, &n)?;
                Self::meta_of(&d).ok_or_else(|| {
                    DriverError::Permanent(format!("VM {n} has no Keel metadata (not ours?)"))
                })
            })
            .await?;
        if src_meta.image != spec.image {
            return Err(DriverError::Permanent(format!(
                "a clone of {source} runs its image {}, not {}",
                src_meta.image, spec.image
            )));
        }
        let image_dir = self.cfg.images.image_dir(&spec.image)?;
        let base = image_dir.join("disk.qcow2");
        let from = self.vm_dir(source).join("disk.qcow2");
        let want = spec.disk_gb.saturating_mul(1 << 30);
        let have = virtual_size(&from).await?;
        if want < have {
            return Err(DriverError::Permanent(format!(
                "disk_gb {} is smaller than the disk of {source} ({have} bytes)",
                spec.disk_gb
            )));
        }
        let dir = self.make_vm_dir(target).await?;
        // Not defined yet, so any disk here is a leftover of a failed
        // attempt that nothing uses: start over.
        let disk = dir.join("disk.qcow2");
        let _ = tokio::fs::remove_file(&disk).await;
        // Only what differs from the base image is copied; the new disk is
        // again an overlay of the base. `-U` reads a running VM's disk.
        run(
            "qemu-img",
            &[
                "convert".as_ref(),
                "-U".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                "-O".as_ref(),
                "qcow2".as_ref(),
                "-B".as_ref(),
                base.as_os_str(),
                "-F".as_ref(),
                "qcow2".as_ref(),
                from.as_os_str(),
                disk.as_os_str(),
            ],
        )
        .await?;
        if want > have {
            let size_arg = format!("{}G", spec.disk_gb);
            run(
                "qemu-img",
                &[
                    "resize".as_ref(),
                    "-q".as_ref(),
                    disk.as_os_str(),
                    size_arg.as_ref(),
                ],
            )
            .await?;
        }
        set_mode(&disk, 0o600).await?;
        let meta = VmMeta {
            image: spec.image.clone(),
            cpus: spec.cpus.max(1),
            ram_mb: spec.ram_mb,
            disk_gb: spec.disk_gb,
            ssh_port: None,
        };
        let addr = spec
            .net
            .ipv4
            .map(|address| StaticIpv4 {
                address,
                prefix: spec.net.prefix4.min(32),
                gateway: spec.net.gateway4,
            })
            .or_else(|| seed::static_ipv4(&spec.seed.network_config));
        self.define(target, meta, &spec.seed, &image_dir, &spec.net.attach, addr)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(net: NetAttachment, dtype: DomainType) -> DomainParams {
        DomainParams {
            name: "keel-7".into(),
            uuid: None,
            domain_type: dtype,
            meta: VmMeta {
                image: "debian-bookworm".into(),
                cpus: 2,
                ram_mb: 1024,
                disk_gb: 8,
                ssh_port: Some(22123),
            },
            kernel: "/img/vmlinuz".into(),
            initrd: "/img/initrd.img".into(),
            disk: "/st/keel-7/disk.qcow2".into(),
            seed_iso: "/st/keel-7/seed.iso".into(),
            console_log: "/st/keel-7/console.log".into(),
            mac: mac_for("keel-7"),
            net,
        }
    }

    #[test]
    fn production_xml_has_kernel_boot_slirp_and_crash_policy() {
        let xml = domain_xml(&params(
            NetAttachment::UserMode {
                network: Ipv4Addr::new(10, 9, 0, 0),
                prefix: 24,
                host: Ipv4Addr::new(10, 9, 0, 1),
                guest: Ipv4Addr::new(10, 9, 0, 7),
                ssh_port: 22123,
            },
            DomainType::Qemu,
        ));
        assert!(xml.starts_with(
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        ));
        assert!(xml.contains("<kernel>/img/vmlinuz</kernel>"));
        assert!(xml.contains("<initrd>/img/initrd.img</initrd>"));
        assert!(xml.contains(&format!(
            "<cmdline>{KERNEL_CMDLINE} {TCG_CMDLINE_EXTRA}</cmdline>"
        )));
        assert!(KERNEL_CMDLINE.contains("panic=-1") && KERNEL_CMDLINE.contains("root=/dev/vda"));
        assert!(xml.contains("<on_crash>destroy</on_crash>"));
        assert!(xml.contains("<on_reboot>restart</on_reboot>"));
        assert!(xml.contains("<panic model='isa'/>"));
        assert!(xml.contains("<source file='/st/keel-7/disk.qcow2'/>"));
        assert!(xml.contains("device='cdrom' snapshot='no'"));
        assert!(xml.contains("<log file='/st/keel-7/console.log' append='on'/>"));
        assert!(xml.contains(
            "<qemu:arg value='user,id=keelnet0,net=10.9.0.0/24,host=10.9.0.1,hostfwd=tcp:127.0.0.1:22123-10.9.0.7:22'/>"
        ));
        assert!(xml.contains(&format!(
            "virtio-net-pci,netdev=keelnet0,mac={}",
            mac_for("keel-7")
        )));
        assert!(
            !xml.contains("<interface"),
            "user mode must not use a libvirt network"
        );
        assert!(!xml.contains("host-passthrough"));
        let meta = xml_text(&xml, "metadata")
            .map(|_| ())
            .and(parse_metadata(&xml));
        assert_eq!(meta.unwrap().ssh_port, Some(22123));
    }

    #[test]
    fn kvm_and_bridge_variants() {
        let xml = domain_xml(&params(
            NetAttachment::Bridge("br0".into()),
            DomainType::Kvm,
        ));
        assert!(xml.starts_with("<domain type='kvm'"));
        assert!(xml.contains("<cpu mode='host-passthrough'/>"));
        // Address-space randomisation stays on under KVM.
        assert!(xml.contains(&format!("<cmdline>{KERNEL_CMDLINE}</cmdline>")));
        assert!(xml.contains("<interface type='bridge'><source bridge='br0'/>"));
        assert!(!xml.contains("<qemu:commandline>"));
    }

    /// A VM whose pool is on a bridge gets a virtio NIC on that bridge and
    /// no forwarded port, whatever the driver's default; a VM of a pool
    /// without a network keeps the driver's user-mode network.
    #[test]
    fn a_bridged_pool_puts_the_nic_on_its_bridge() {
        let user = Networking::default();
        let br = Attachment::Bridge {
            bridge: "br0".into(),
        };
        assert_eq!(
            networking_for(&user, &br).unwrap(),
            Networking::Bridge {
                bridge: "br0".into()
            }
        );
        assert_eq!(networking_for(&user, &Attachment::Private).unwrap(), user);
        let bad = Attachment::Bridge {
            bridge: "br0'/><x".into(),
        };
        assert!(matches!(
            networking_for(&user, &bad),
            Err(DriverError::Permanent(_))
        ));
        let mut p = params(NetAttachment::Bridge("br0".into()), DomainType::Qemu);
        p.meta.ssh_port = None;
        let xml = domain_xml(&p);
        assert!(xml.contains(&format!(
            "<interface type='bridge'><source bridge='br0'/><mac address='{}'/><model type='virtio'/></interface>",
            mac_for("keel-7")
        )));
        assert!(!xml.contains("hostfwd") && !xml.contains("<qemu:commandline>"));
        assert!(!xml.contains("ssh-port"), "no forwarded port on a bridge");
        assert_eq!(parse_metadata(&xml).unwrap().ssh_port, None);
    }

    #[test]
    fn the_network_reads_back_from_the_domain_xml() {
        let user = NetAttachment::UserMode {
            network: Ipv4Addr::new(10, 77, 0, 0),
            prefix: 24,
            host: Ipv4Addr::new(10, 77, 0, 1),
            guest: Ipv4Addr::new(10, 77, 0, 20),
            ssh_port: 23456,
        };
        let bridge = NetAttachment::Bridge("br-pub".into());
        for net in [user, bridge] {
            let xml = domain_xml(&params(net.clone(), DomainType::Qemu));
            assert_eq!(net_attachment_of(&xml), Some(net));
        }
        // As libvirt gives a bridged NIC back: other elements first, and
        // an earlier interface of another type.
        let returned =
            "<domain><devices><interface type='network'><source network='x'/></interface>\n\
            <interface type='bridge'>\n  <mac address='52:54:00:00:00:01'/>\n  \
            <source bridge='br0'/>\n  <model type='virtio'/>\n</interface></devices></domain>";
        assert_eq!(
            net_attachment_of(returned),
            Some(NetAttachment::Bridge("br0".into()))
        );
        assert_eq!(net_attachment_of("<domain><devices/></domain>"), None);
        let uuid = "0b6f7f43-7a3c-4d1a-9d0e-2f1f5f2a6e11";
        let mut p = params(NetAttachment::Bridge("br0".into()), DomainType::Qemu);
        p.uuid = Some(uuid.into());
        assert_eq!(xml_text(&domain_xml(&p), "uuid"), Some(uuid));
    }

    #[test]
    fn metadata_roundtrips_as_libvirt_returns_it() {
        let meta = VmMeta {
            image: "img&co".into(),
            cpus: 1,
            ram_mb: 512,
            disk_gb: 4,
            ssh_port: None,
        };
        assert_eq!(parse_metadata(&metadata_xml(&meta)), Some(meta.clone()));
        // libvirt hands the element back without our prefix.
        let returned = "<vm>\n  <image>img&amp;co</image>\n  <cpus>1</cpus>\n  <ram-mb>512</ram-mb>\n  <disk-gb>4</disk-gb>\n</vm>";
        assert_eq!(parse_metadata(returned), Some(meta));
    }

    #[test]
    fn macs_are_stable_and_local() {
        assert_eq!(mac_for("keel-1"), mac_for("keel-1"));
        assert_ne!(mac_for("keel-1"), mac_for("keel-2"));
        assert!(mac_for("keel-1").starts_with("52:54:00:"));
    }
}
