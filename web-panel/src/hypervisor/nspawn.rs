//! The container driver: `systemd-nspawn --boot` machines on an overlay of
//! the base rootfs, each in its own network namespace.
//!
//! It implements the same [`Driver`] contract as libvirt and reads the same
//! cloud-init NoCloud seed, but a container reaches the phone-home callback
//! in a few seconds instead of tens, so fault tests and many-host tests use
//! it. Layout of one container, under `<state_dir>/<name>/`:
//! - `upper/`, `work/`, `merged/`: the overlay (lower = the image's
//!   `rootfs/`, which is never written); the seed is placed in
//!   `upper/var/lib/cloud/seed/nocloud/`, where cloud-init's NoCloud looks;
//! - `seed/`: a copy of the three seed documents, for reference;
//! - `meta.json`: the spec and the addresses (written last: its presence
//!   means "created");
//! - `pid`: nspawn's pid and start time; `console.log`: its output;
//! - `snapshots/<snap>/upper`: copies of `upper/`.
//!
//! Networking: a netns `/run/netns/<name>` holds the container side of a
//! veth pair (renamed `eth0`, configured by cloud-init's ifupdown renderer
//! from the seed: addresses with their pool's prefixes, gateways). By
//! default (the container's private network) the host side carries the
//! gateway address (/32) and a host route to the container's address, so
//! the panel reaches its sshd at the allocated address. When the VM's pool
//! is on a bridge (`NetIdentity::attach`), the host side joins that bridge
//! instead and carries nothing: the container is then a host on the
//! bridge's network, reached (and calling back) at its own address through
//! whatever the bridge connects to. That is what `systemd-nspawn
//! --network-bridge` does, but the driver keeps making the pair itself, so
//! the netns stays the one it names and finds again (power state, stats,
//! cleanup). nspawn does not keep `CAP_NET_ADMIN` with
//! `--network-namespace-path`, so the driver grants it explicitly; it only
//! reaches the container's own netns.
//!
//! Figures (`stats`): CPU time, memory and disk I/O from the container's
//! own cgroup (`keel/<name>` in the unified hierarchy: `cpu.stat`'s
//! `usage_usec`, `memory.current`, `io.stat`), network bytes from its
//! network namespace (`/proc/<init>/net/dev`, every interface but `lo`).
//! On a hybrid cgroup host whose unified hierarchy has no memory
//! controller, memory is the resident set of the container's processes
//! instead, and disk I/O is unknown.
//!
//! Nothing is kept in memory: status comes from the pid file and `/proc`,
//! so a restarted panel finds its running containers again. nspawn runs in
//! its own process group and outlives the panel process.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{
    check_snapshot_name, Driver, DriverError, DriverResult, ImageStore, PowerState, SeedData,
    SnapshotInfo, VmExport, VmInfo, VmSpec, VmStats,
};

/// Where container state lives unless configured otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/keel/nspawn";
/// Names the panel gives its machines; `list` only reports these.
pub const DEFAULT_PREFIX: &str = "keel-";
/// Where the seed goes inside the container's root.
const NOCLOUD_DIR: &str = "var/lib/cloud/seed/nocloud";

/// How the driver is set up.
#[derive(Debug, Clone)]
pub struct NspawnConfig {
    pub images: ImageStore,
    pub state_dir: PathBuf,
    pub prefix: String,
    /// How long `power_off` waits for nspawn to exit after killing it.
    pub stop_timeout: Duration,
}

impl NspawnConfig {
    pub fn new(images: ImageStore) -> Self {
        NspawnConfig {
            images,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            prefix: DEFAULT_PREFIX.to_string(),
            stop_timeout: Duration::from_secs(15),
        }
    }
}

/// The addresses the host side needs, read from the seed's network-config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerNet {
    /// Host-side veth interface name (≤ 15 characters).
    pub veth: String,
    pub ipv4: Option<Ipv4Addr>,
    pub gateway4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub gateway6: Option<Ipv6Addr>,
    /// The host bridge the veth joins; `None`: routed from the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
}

/// `meta.json`: what was created, so a later process can manage it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    spec: VmSpec,
    net: ContainerNet,
    /// The image's rootfs, the overlay's lower dir.
    lower: PathBuf,
    created_at: i64,
}

/// systemd-nspawn containers. Cheap to share; holds no container state.
pub struct NspawnDriver {
    cfg: NspawnConfig,
    /// Serialises mutating calls per container within this process.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl NspawnDriver {
    pub fn new(cfg: NspawnConfig) -> Self {
        NspawnDriver {
            cfg,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &NspawnConfig {
        &self.cfg
    }

    /// The directory holding one container's state.
    pub fn container_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join(name)
    }

    /// The container's root as it sees it (the overlay mount point).
    pub fn root_dir(&self, name: &str) -> PathBuf {
        self.container_dir(name).join("merged")
    }

    /// The addresses the driver configured for `name` on the host side.
    pub async fn network(&self, name: &str) -> DriverResult<ContainerNet> {
        check_name(name)?;
        Ok(self.load(name).await?.net)
    }

    fn lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    async fn load(&self, name: &str) -> DriverResult<Meta> {
        let path = self.container_dir(name).join("meta.json");
        let text = match tokio::fs::read(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DriverError::NotFound(format!("container {name}")))
            }
            Err(e) => return Err(io_err(&path, e)),
        };
        serde_json::from_slice(&text)
            .map_err(|e| DriverError::Permanent(format!("corrupt {}: {e}", path.display())))
    }

    fn info(&self, name: &str, power: PowerState) -> VmInfo {
        VmInfo {
            name: name.to_string(),
            vm_ref: name.to_string(),
            power,
            ssh_endpoint: None,
        }
    }

    /// Power state from the pid file and `/proc`, never from memory. The
    /// `/proc` reads (a full scan for a stopped container) run off the
    /// async runtime.
    async fn power(&self, name: &str) -> PowerState {
        let dir = self.container_dir(name);
        let name = name.to_string();
        tokio::task::spawn_blocking(move || power_at(&dir, &name))
            .await
            .unwrap_or(PowerState::Other)
    }

    /// nspawn's pid when the pid file names a live nspawn process.
    fn running_pid(&self, name: &str) -> Option<u32> {
        running_pid_at(&self.container_dir(name))
    }

    async fn create_locked(&self, spec: &VmSpec) -> DriverResult<VmInfo> {
        check_name(&spec.name)?;
        if self.load(&spec.name).await.is_ok() {
            return Ok(self.info(&spec.name, self.power(&spec.name).await));
        }
        let image = self.cfg.images.image_dir(&spec.image)?;
        let lower = image.join("rootfs");
        if !lower.join("sbin/init").exists() && !lower.join("lib/systemd/systemd").exists() {
            return Err(DriverError::Permanent(format!(
                "image {} has no bootable rootfs at {}",
                spec.image,
                lower.display()
            )));
        }
        let net = net_of(&spec.name, spec)?;
        let meta = Meta {
            spec: spec.clone(),
            net,
            lower,
            created_at: chrono::Utc::now().timestamp(),
        };
        let tmp = self.fresh_tmp(&spec.name).await?;
        let built = async {
            for d in ["upper", "work", "merged", "snapshots"] {
                mkdir(&tmp.join(d)).await?;
            }
            self.write_seed(&tmp, &spec.seed).await?;
            write_private(
                &tmp.join("meta.json"),
                &serde_json::to_vec_pretty(&meta).unwrap(),
            )
            .await
        }
        .await;
        self.commit_tmp(&tmp, &spec.name, built).await?;
        Ok(self.info(&spec.name, PowerState::Stopped))
    }

    /// A new private directory in the state dir, renamed into place once
    /// complete so that a half-built container is never seen.
    async fn fresh_tmp(&self, name: &str) -> DriverResult<PathBuf> {
        mkdir(&self.cfg.state_dir).await?;
        let tmp = self
            .cfg
            .state_dir
            .join(format!(".tmp-{name}-{:08x}", fastrand::u32(..)));
        tokio::fs::create_dir(&tmp)
            .await
            .map_err(|e| io_err(&tmp, e))?;
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(|e| io_err(&tmp, e))?;
        Ok(tmp)
    }

    async fn commit_tmp(
        &self,
        tmp: &Path,
        name: &str,
        built: DriverResult<()>,
    ) -> DriverResult<()> {
        let dest = self.container_dir(name);
        let result = match built {
            Ok(()) => tokio::fs::rename(tmp, &dest)
                .await
                .map_err(|e| io_err(&dest, e)),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(tmp).await;
        }
        result
    }

    /// Writes the seed into `seed/` and into the overlay's upper layer.
    /// Writing to `upper/` is only done while the overlay is unmounted.
    async fn write_seed(&self, dir: &Path, seed: &SeedData) -> DriverResult<()> {
        let nocloud = dir.join("upper").join(NOCLOUD_DIR);
        mkdir(&dir.join("seed")).await?;
        // Directories the overlay shows over the image's: keep them world
        // readable as in the image (they hold only the seed's own dir).
        let mut p = dir.join("upper");
        for part in NOCLOUD_DIR.split('/') {
            p.push(part);
            mkdir(&p).await?;
            tokio::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .await
                .map_err(|e| io_err(&p, e))?;
        }
        for (file, text) in [
            ("meta-data", &seed.meta_data),
            ("user-data", &seed.user_data),
            ("network-config", &seed.network_config),
        ] {
            write_private(&dir.join("seed").join(file), text.as_bytes()).await?;
            write_private(&nocloud.join(file), text.as_bytes()).await?;
        }
        Ok(())
    }

    async fn start_locked(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        let meta = self.load(name).await?;
        if self.running_pid(name).is_some() {
            return Ok(());
        }
        // Leftovers of a crashed nspawn would hold the netns and the mount.
        kill_netns_processes(name).await;
        self.mount_overlay(name, &meta).await?;
        setup_network(name, &meta.net).await?;

        let dir = self.container_dir(name);
        let log_path = dir.join("console.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io_err(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| io_err(&log_path, e))?;
        let merged = dir.join("merged");
        // nspawn runs in a cgroup of its own (see `cgroups_for`), entered by
        // a shell that then execs it; the arguments pass through as "$@".
        let cgroups = cgroups_for(name).await;
        let mut enter = String::new();
        for (i, _) in cgroups.iter().enumerate() {
            enter.push_str(&format!(
                "echo $$ 2>/dev/null > \"$KEEL_CG{i}\"/cgroup.procs || :; "
            ));
        }
        enter.push_str("exec systemd-nspawn \"$@\"");
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(&enter).arg("systemd-nspawn");
        for (i, cg) in cgroups.iter().enumerate() {
            cmd.env(format!("KEEL_CG{i}"), cg);
        }
        cmd.arg("--boot")
            .arg("--register=no")
            .arg("--keep-unit")
            .arg("--quiet")
            .arg("--machine")
            .arg(name)
            .arg("--directory")
            .arg(&merged)
            .arg(format!("--network-namespace-path=/run/netns/{name}"))
            .arg("--capability=CAP_NET_ADMIN")
            .arg("--console=read-only")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Own process group: the panel's terminal signals and its death
            // do not reach the container.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| DriverError::Unavailable(format!("spawn systemd-nspawn: {e}")))?;
        let pid = child
            .id()
            .ok_or_else(|| DriverError::Unavailable("systemd-nspawn exited at once".into()))?;
        let stat = ProcStat::read(pid)
            .ok_or_else(|| DriverError::Unavailable("systemd-nspawn exited at once".into()))?;
        let pid_path = dir.join("pid");
        write_private(&pid_path, format!("{pid} {}\n", stat.start_time).as_bytes()).await?;

        // Started means: the container's init exists. A broken root makes
        // nspawn exit within moments; report that instead of "started".
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = tokio::fs::remove_file(&pid_path).await;
                return Err(DriverError::Unavailable(format!(
                    "systemd-nspawn exited ({status}): {}",
                    tail(&log_path, 800).await
                )));
            }
            let probe = name.to_string();
            let up = tokio::task::spawn_blocking(move || {
                !children_of(pid).is_empty() && !netns_pids(&probe).is_empty()
            })
            .await
            .unwrap_or(false);
            if up {
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The child is dropped: tokio reaps it if it exits while this
        // process lives; otherwise it is reparented.
        drop(child);
        Ok(())
    }

    async fn mount_overlay(&self, name: &str, meta: &Meta) -> DriverResult<()> {
        let dir = self.container_dir(name);
        let merged = dir.join("merged");
        if is_mountpoint(&merged) {
            return Ok(());
        }
        for p in [&meta.lower, &dir] {
            let s = p.to_string_lossy();
            if s.contains([',', ':', '\\']) {
                return Err(DriverError::Permanent(format!(
                    "path {s:?} cannot be used in overlay options"
                )));
            }
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            meta.lower.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        run(
            "mount",
            &["-t", "overlay", "overlay", "-o", &opts, path_str(&merged)?],
        )
        .await?;
        Ok(())
    }

    async fn power_off_locked(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        self.load(name).await?;
        let pid_path = self.container_dir(name).join("pid");
        if let Some(pid) = self.running_pid(name) {
            // Killing nspawn alone leaves the container's init running;
            // kill the init (which ends its pid namespace) and nspawn.
            let children = tokio::task::spawn_blocking(move || children_of(pid))
                .await
                .unwrap_or_default();
            for child in children {
                signal(child, "KILL").await;
            }
            kill_netns_processes(name).await;
            let deadline = Instant::now() + self.cfg.stop_timeout;
            while self.running_pid(name).is_some() {
                if Instant::now() > deadline {
                    signal(pid, "KILL").await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if self.running_pid(name).is_some() {
                        return Err(DriverError::Unavailable(format!(
                            "systemd-nspawn {pid} for {name} does not exit"
                        )));
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        kill_netns_processes(name).await;
        let _ = tokio::fs::remove_file(&pid_path).await;
        Ok(())
    }

    async fn unmount(&self, name: &str) -> DriverResult<()> {
        let merged = self.root_dir(name);
        for _ in 0..50 {
            if !is_mountpoint(&merged) {
                return Ok(());
            }
            if run("umount", &[path_str(&merged)?]).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        run("umount", &["--lazy", path_str(&merged)?])
            .await
            .map(|_| ())
    }

    async fn delete_locked(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        let dir = self.container_dir(name);
        let meta = self.load(name).await.ok();
        if meta.is_some() {
            self.power_off_locked(name).await?;
        } else {
            kill_netns_processes(name).await;
        }
        if dir.exists() {
            self.unmount(name).await?;
        }
        teardown_network(name, meta.as_ref().map(|m| m.net.veth.as_str())).await?;
        remove_cgroups(name).await;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir, e)),
        }
    }

    fn snapshot_dir(&self, name: &str, snapshot: &str) -> PathBuf {
        self.container_dir(name).join("snapshots").join(snapshot)
    }

    async fn snapshot_create_locked(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        check_name(name)?;
        check_snapshot_name(snapshot)?;
        self.load(name).await?;
        let dest = self.snapshot_dir(name, snapshot);
        if dest.join("created_at").exists() {
            return Ok(());
        }
        let snaps = self.container_dir(name).join("snapshots");
        mkdir(&snaps).await?;
        let tmp = snaps.join(format!(".tmp-{snapshot}-{:08x}", fastrand::u32(..)));
        mkdir(&tmp).await?;
        // A copy of a running container's upper layer is crash-consistent,
        // as a live disk snapshot without guest quiescing is.
        let built = async {
            copy_tree(&self.container_dir(name).join("upper"), &tmp.join("upper")).await?;
            let now = chrono::Utc::now().timestamp().to_string();
            write_private(&tmp.join("created_at"), now.as_bytes()).await
        }
        .await;
        let result = match built {
            Ok(()) => {
                let _ = tokio::fs::remove_dir_all(&dest).await;
                tokio::fs::rename(&tmp, &dest)
                    .await
                    .map_err(|e| io_err(&dest, e))
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        }
        result
    }

    async fn snapshot_revert_locked(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        check_name(name)?;
        check_snapshot_name(snapshot)?;
        self.load(name).await?;
        let snap = self.snapshot_dir(name, snapshot);
        if !snap.join("created_at").exists() {
            return Err(DriverError::NotFound(format!(
                "snapshot {snapshot} of {name}"
            )));
        }
        let was_running = self.running_pid(name).is_some();
        self.power_off_locked(name).await?;
        self.unmount(name).await?;
        let dir = self.container_dir(name);
        let fresh = dir.join(format!(".upper-{:08x}", fastrand::u32(..)));
        if let Err(e) = copy_tree(&snap.join("upper"), &fresh).await {
            let _ = tokio::fs::remove_dir_all(&fresh).await;
            return Err(e);
        }
        let old = dir.join(format!(".old-upper-{:08x}", fastrand::u32(..)));
        let upper = dir.join("upper");
        tokio::fs::rename(&upper, &old)
            .await
            .map_err(|e| io_err(&upper, e))?;
        tokio::fs::rename(&fresh, &upper)
            .await
            .map_err(|e| io_err(&upper, e))?;
        let _ = tokio::fs::remove_dir_all(&old).await;
        // The work dir belongs to the old upper layer.
        let work = dir.join("work");
        let _ = tokio::fs::remove_dir_all(&work).await;
        mkdir(&work).await?;
        if was_running {
            self.start_locked(name).await?;
        }
        Ok(())
    }

    /// A container copied from another host's state directory: its upper
    /// layer (the disk, the seed inside it), its snapshots, its seed copy
    /// and its `meta.json` (spec and addresses), with the overlay's lower
    /// directory taken from this host's image store.
    async fn import_locked(&self, name: &str, from: &VmExport) -> DriverResult<VmInfo> {
        check_name(name)?;
        if self.load(name).await.is_ok() {
            return Ok(self.info(name, self.power(name).await));
        }
        if from.kind != self.kind() {
            return Err(DriverError::Permanent(format!(
                "{name} comes from a {} host; an nspawn host takes containers only",
                from.kind
            )));
        }
        if from.dir == self.container_dir(name) {
            return Err(DriverError::Permanent(format!(
                "{name}: the source and target hosts share one state directory"
            )));
        }
        let meta_path = from.dir.join("meta.json");
        let text = tokio::fs::read(&meta_path)
            .await
            .map_err(|e| io_err(&meta_path, e))?;
        let mut meta: Meta = serde_json::from_slice(&text)
            .map_err(|e| DriverError::Permanent(format!("corrupt {}: {e}", meta_path.display())))?;
        meta.lower = self.cfg.images.image_dir(&meta.spec.image)?.join("rootfs");
        let tmp = self.fresh_tmp(name).await?;
        let built = async {
            copy_tree(&from.dir.join("upper"), &tmp.join("upper")).await?;
            for d in ["seed", "snapshots"] {
                if from.dir.join(d).is_dir() {
                    copy_tree(&from.dir.join(d), &tmp.join(d)).await?;
                }
            }
            for d in ["work", "merged", "snapshots"] {
                mkdir(&tmp.join(d)).await?;
            }
            write_private(
                &tmp.join("meta.json"),
                &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
            )
            .await
        }
        .await;
        self.commit_tmp(&tmp, name, built).await?;
        Ok(self.info(name, PowerState::Stopped))
    }

    async fn clone_locked(&self, source: &str, spec: &VmSpec) -> DriverResult<VmInfo> {
        check_name(source)?;
        check_name(&spec.name)?;
        let target = spec.name.as_str();
        if self.load(target).await.is_ok() {
            return Ok(self.info(target, self.power(target).await));
        }
        let src = self.load(source).await?;
        if src.spec.image != spec.image {
            return Err(DriverError::Permanent(format!(
                "a clone of {source} runs its image {}, not {}",
                src.spec.image, spec.image
            )));
        }
        // The clone's identity is the spec's (as `create` reads it), never
        // the source's.
        let net = net_of(target, spec)?;
        let meta = Meta {
            net,
            spec: spec.clone(),
            lower: src.lower.clone(),
            created_at: chrono::Utc::now().timestamp(),
        };
        let tmp = self.fresh_tmp(target).await?;
        let built = async {
            // The source's upper layer is its disk: a copy of a running
            // container's is what a power cut would leave.
            copy_tree(
                &self.container_dir(source).join("upper"),
                &tmp.join("upper"),
            )
            .await?;
            for d in ["work", "merged", "snapshots"] {
                mkdir(&tmp.join(d)).await?;
            }
            // The clone is a new machine: a new machine-id (the image's is
            // empty, so systemd makes one) and the new seed, whose new
            // instance-id makes cloud-init run its first-boot modules again
            // (hostname, network, the seed's host keys after deleting the
            // copied ones, phone_home).
            let _ = tokio::fs::remove_file(tmp.join("upper/etc/machine-id")).await;
            self.write_seed(&tmp, &spec.seed).await?;
            write_private(
                &tmp.join("meta.json"),
                &serde_json::to_vec_pretty(&meta).unwrap(),
            )
            .await
        }
        .await;
        self.commit_tmp(&tmp, target, built).await?;
        Ok(self.info(target, PowerState::Stopped))
    }
}

#[async_trait]
impl Driver for NspawnDriver {
    fn kind(&self) -> &'static str {
        "nspawn"
    }

    async fn create(&self, spec: &VmSpec) -> DriverResult<VmInfo> {
        let lock = self.lock(&spec.name);
        let _g = lock.lock().await;
        self.create_locked(spec).await
    }

    async fn start(&self, name: &str) -> DriverResult<()> {
        let lock = self.lock(name);
        let _g = lock.lock().await;
        self.start_locked(name).await
    }

    /// SIGTERM to nspawn: with `--boot` it sends SIGRTMIN+3 to the
    /// container's systemd, an orderly poweroff (systemd-nspawn(1),
    /// `--kill-signal=`).
    async fn shutdown(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        self.load(name).await?;
        if let Some(pid) = self.running_pid(name) {
            signal(pid, "TERM").await;
        }
        Ok(())
    }

    async fn power_off(&self, name: &str) -> DriverResult<()> {
        let lock = self.lock(name);
        let _g = lock.lock().await;
        self.power_off_locked(name).await
    }

    async fn reset(&self, name: &str) -> DriverResult<()> {
        let lock = self.lock(name);
        let _g = lock.lock().await;
        self.power_off_locked(name).await?;
        self.start_locked(name).await
    }

    async fn status(&self, name: &str) -> DriverResult<VmInfo> {
        check_name(name)?;
        self.load(name).await?;
        Ok(self.info(name, self.power(name).await))
    }

    async fn delete(&self, name: &str) -> DriverResult<()> {
        let lock = self.lock(name);
        let _g = lock.lock().await;
        self.delete_locked(name).await
    }

    async fn list(&self) -> DriverResult<Vec<VmInfo>> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(&self.cfg.state_dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&self.cfg.state_dir, e)),
        };
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| io_err(&self.cfg.state_dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&self.cfg.prefix) || check_name(&name).is_err() {
                continue;
            }
            if self.load(&name).await.is_ok() {
                out.push(self.info(&name, self.power(&name).await));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn snapshot_create(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        let lock = self.lock(name);
        let _g = lock.lock().await;
        self.snapshot_create_locked(name, snapshot).await
    }

    async fn snapshot_list(&self, name: &str) -> DriverResult<Vec<SnapshotInfo>> {
        check_name(name)?;
        self.load(name).await?;
        let dir = self.container_dir(name).join("snapshots");
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&dir, e)),
        };
        while let Some(entry) = rd.next_entry().await.map_err(|e| io_err(&dir, e))? {
            let snap = entry.file_name().to_string_lossy().into_owned();
            if snap.starts_with('.') {
                continue;
            }
            let Ok(text) = tokio::fs::read_to_string(entry.path().join("created_at")).await else {
                continue;
            };
            out.push(SnapshotInfo {
                name: snap,
                created_at: text.trim().parse().unwrap_or(0),
            });
        }
        out.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(out)
    }

    async fn snapshot_revert(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        let lock = self.lock(name);
        let _g = lock.lock().await;
        self.snapshot_revert_locked(name, snapshot).await
    }

    async fn snapshot_delete(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        check_name(name)?;
        check_snapshot_name(snapshot)?;
        let lock = self.lock(name);
        let _g = lock.lock().await;
        self.load(name).await?;
        let dir = self.snapshot_dir(name, snapshot);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir, e)),
        }
    }

    fn files_dir(&self, name: &str) -> Option<PathBuf> {
        Some(self.container_dir(name))
    }

    async fn export_vm(&self, name: &str) -> DriverResult<VmExport> {
        check_name(name)?;
        self.load(name).await?;
        if self.running_pid(name).is_some() {
            return Err(DriverError::Permanent(format!(
                "container {name} runs: stop it before moving it"
            )));
        }
        Ok(VmExport {
            kind: self.kind().to_string(),
            dir: self.container_dir(name),
        })
    }

    async fn import_vm(&self, name: &str, from: &VmExport) -> DriverResult<VmInfo> {
        let lock = self.lock(name);
        let _g = lock.lock().await;
        self.import_locked(name, from).await
    }

    async fn clone_vm(&self, source: &str, spec: &VmSpec) -> DriverResult<VmInfo> {
        let lock = self.lock(&spec.name);
        let _g = lock.lock().await;
        self.clone_locked(source, spec).await
    }

    async fn stats(&self, name: &str) -> DriverResult<VmStats> {
        check_name(name)?;
        let meta = self.load(name).await?;
        let Some(pid) = self.running_pid(name) else {
            return Err(DriverError::Unavailable(format!(
                "container {name} is not running"
            )));
        };
        let name = name.to_string();
        let mut stats = tokio::task::spawn_blocking(move || container_stats(&name, pid))
            .await
            .map_err(|e| DriverError::Unavailable(format!("reading figures: {e}")))?;
        stats.cpus = meta.spec.cpus.max(1);
        stats.memory_total = Some(meta.spec.ram_mb.saturating_mul(1 << 20));
        Ok(stats)
    }
}

/// The figures of the container whose nspawn is `pid` (blocking reads of
/// `/sys/fs/cgroup` and `/proc`).
fn container_stats(name: &str, pid: u32) -> VmStats {
    let mut out = VmStats::default();
    for root in cgroup_roots() {
        let dir = root.join("keel").join(name);
        if let Ok(text) = std::fs::read_to_string(dir.join("cpu.stat")) {
            if let Some(usec) = cgroup_key(&text, "usage_usec") {
                out.cpu_ns = Some(usec.saturating_mul(1000));
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("memory.current")) {
            out.memory_used = text.trim().parse().ok();
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("io.stat")) {
            let (r, w) = io_stat_bytes(&text);
            out.disk_read_bytes = Some(r);
            out.disk_write_bytes = Some(w);
        }
    }
    // The container's init (nspawn's child) lives in its network namespace.
    let procs = netns_pids(name);
    if out.memory_used.is_none() {
        let page = 4096u64;
        let rss: u64 = procs
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/statm")).ok())
            .filter_map(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.memory_used = Some(rss * page);
    }
    let init = children_of(pid)
        .into_iter()
        .next()
        .or(procs.first().copied());
    if let Some(init) = init {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{init}/net/dev")) {
            let (rx, tx) = net_dev_bytes(&text);
            out.net_rx_bytes = Some(rx);
            out.net_tx_bytes = Some(tx);
        }
    }
    out
}

/// A `key value` line of a cgroup file such as `cpu.stat`.
fn cgroup_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Bytes read and written over every device of a cgroup's `io.stat`
/// (`8:0 rbytes=… wbytes=… rios=…`).
fn io_stat_bytes(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            r += v.parse::<u64>().unwrap_or(0);
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            w += v.parse::<u64>().unwrap_or(0);
        }
    }
    (r, w)
}

/// Received and sent bytes over every interface but loopback in
/// `/proc/net/dev` (two header lines, then `iface: rx_bytes … tx_bytes …`,
/// the ninth value being the first sent one).
fn net_dev_bytes(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        rx += v.first().copied().unwrap_or(0);
        tx += v.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

/// Container names become directory, netns and machine names.
pub fn check_name(name: &str) -> DriverResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 60
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(DriverError::Permanent(format!(
            "invalid container name {name:?} (want [a-z0-9-], at most 60 characters)"
        )))
    }
}

/// The host-side veth name: stable per container (so a restarted panel
/// finds it) and within the kernel's 15-character limit.
pub fn veth_name(name: &str) -> String {
    // FNV-1a: stable across runs and Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("vk{:012x}", h & 0xffff_ffff_ffff)
}

/// What the host side of `name`'s veth needs: the spec's addresses (else
/// the seed's) and the bridge its pool's network names, if any.
fn net_of(name: &str, spec: &VmSpec) -> DriverResult<ContainerNet> {
    let mut net = if spec.net.ipv4.is_some() || spec.net.ipv6.is_some() {
        ContainerNet {
            veth: veth_name(name),
            ipv4: spec.net.ipv4,
            gateway4: spec.net.gateway4,
            ipv6: spec.net.ipv6,
            gateway6: spec.net.gateway6,
            bridge: None,
        }
    } else {
        container_net(name, &spec.seed)?
    };
    if let Some(bridge) = spec.net.attach.bridge() {
        if !super::valid_interface_name(bridge) {
            return Err(DriverError::Permanent(format!(
                "bridge {bridge:?} is not an interface name"
            )));
        }
        net.bridge = Some(bridge.to_string());
    }
    Ok(net)
}

/// Reads the addresses the host side needs from the seed's network-config
/// (version 1 as `seed::render` writes it, or version 2).
pub fn container_net(name: &str, seed: &SeedData) -> DriverResult<ContainerNet> {
    let bad = |why: &str| DriverError::Permanent(format!("network-config of {name}: {why}"));
    let doc: Json =
        yaml_serde::from_str(&seed.network_config).map_err(|e| bad(&format!("not YAML: {e}")))?;
    let mut net = ContainerNet {
        veth: veth_name(name),
        ipv4: None,
        gateway4: None,
        ipv6: None,
        gateway6: None,
        bridge: None,
    };
    let mut take = |addr: &str, gateway: Option<&str>| {
        let ip = addr.split('/').next().unwrap_or_default();
        if let Ok(v4) = ip.parse::<Ipv4Addr>() {
            if net.ipv4.is_none() {
                net.ipv4 = Some(v4);
                net.gateway4 = gateway.and_then(|g| g.parse().ok());
            }
        } else if let Ok(v6) = ip.parse::<Ipv6Addr>() {
            if net.ipv6.is_none() {
                net.ipv6 = Some(v6);
                net.gateway6 = gateway.and_then(|g| g.parse().ok());
            }
        }
    };
    match doc.get("version").and_then(Json::as_u64) {
        Some(1) => {
            for iface in doc
                .get("config")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                for s in iface
                    .get("subnets")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    let ty = s.get("type").and_then(Json::as_str).unwrap_or_default();
                    if !matches!(ty, "static" | "static6") {
                        continue;
                    }
                    if let Some(a) = s.get("address").and_then(Json::as_str) {
                        take(a, s.get("gateway").and_then(Json::as_str));
                    }
                }
            }
        }
        Some(2) => {
            for eth in doc
                .get("ethernets")
                .and_then(Json::as_object)
                .into_iter()
                .flat_map(|m| m.values())
            {
                let default_via = |v6: bool| {
                    eth.get("routes")?.as_array()?.iter().find_map(|r| {
                        let to = r.get("to")?.as_str()?;
                        let is_default = to == "default" || to == "0.0.0.0/0" || to == "::/0";
                        let via = r.get("via")?.as_str()?;
                        (is_default && via.contains(':') == v6).then(|| via.to_string())
                    })
                };
                let gw4 = eth
                    .get("gateway4")
                    .and_then(Json::as_str)
                    .map(str::to_string)
                    .or_else(|| default_via(false));
                let gw6 = eth
                    .get("gateway6")
                    .and_then(Json::as_str)
                    .map(str::to_string)
                    .or_else(|| default_via(true));
                for a in eth
                    .get("addresses")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(a) = a.as_str() {
                        let gw = if a.contains(':') { &gw6 } else { &gw4 };
                        take(a, gw.as_deref());
                    }
                }
            }
        }
        _ => return Err(bad("want version 1 or 2")),
    }
    if net.ipv4.is_none() && net.ipv6.is_none() {
        return Err(bad(
            "the container driver needs a static address (there is no DHCP server on its veth)",
        ));
    }
    Ok(net)
}

async fn setup_network(name: &str, net: &ContainerNet) -> DriverResult<()> {
    let ns_path = PathBuf::from(format!("/run/netns/{name}"));
    let veth = net.veth.as_str();
    if let Some(bridge) = &net.bridge {
        // A missing bridge is the operator's to create; retrying cannot help.
        if !Path::new("/sys/class/net")
            .join(bridge)
            .join("bridge")
            .is_dir()
        {
            return Err(DriverError::Permanent(format!(
                "bridge {bridge} does not exist on this host (networks.<pool>.bridge)"
            )));
        }
    }
    let host_side = Path::new("/sys/class/net").join(veth).exists();
    if !ns_path.exists() {
        // A veth left from an earlier netns points nowhere useful.
        if host_side {
            run("ip", &["link", "del", veth]).await?;
        }
        run("ip", &["netns", "add", name]).await?;
    }
    if !Path::new("/sys/class/net").join(veth).exists() {
        run(
            "ip",
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name,
            ],
        )
        .await?;
    }
    if let Some(bridge) = &net.bridge {
        // On the bridge the container is a host of the bridge's network:
        // no address or route on the host side.
        run("ip", &["link", "set", veth, "master", bridge]).await?;
        run("ip", &["link", "set", veth, "up"]).await?;
        run("ip", &["-n", name, "link", "set", "lo", "up"]).await?;
        return Ok(());
    }
    if let Some(gw) = net.gateway4 {
        run("ip", &["addr", "replace", &format!("{gw}/32"), "dev", veth]).await?;
    }
    if let Some(gw) = net.gateway6 {
        run(
            "ip",
            &[
                "-6",
                "addr",
                "replace",
                &format!("{gw}/128"),
                "dev",
                veth,
                "nodad",
            ],
        )
        .await?;
    }
    run("ip", &["link", "set", veth, "up"]).await?;
    if let Some(ip) = net.ipv4 {
        let dst = format!("{ip}/32");
        let mut args = vec!["route", "replace", dst.as_str(), "dev", veth];
        let src = net.gateway4.map(|g| g.to_string());
        if let Some(src) = &src {
            args.extend(["src", src.as_str()]);
        }
        run("ip", &args).await?;
    }
    if let Some(ip) = net.ipv6 {
        run(
            "ip",
            &["-6", "route", "replace", &format!("{ip}/128"), "dev", veth],
        )
        .await?;
    }
    run("ip", &["-n", name, "link", "set", "lo", "up"]).await?;
    Ok(())
}

/// The cgroups a container's nspawn runs in: `keel/<name>` in each
/// hierarchy systemd uses (the named `systemd` one and the unified one of a
/// hybrid host, or the single cgroup2 tree). Without them every container
/// started by one process shares that process's cgroup, and the containers'
/// systemds create the same unit cgroups in it and fail each other's units
/// (`status=219/CGROUP`).
async fn cgroups_for(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in cgroup_roots() {
        let dir = root.join("keel").join(name);
        match tokio::fs::create_dir_all(&dir).await {
            Ok(()) => out.push(dir),
            // Not ours to manage (say, a delegated systemd subtree): nspawn
            // then shares its parent's cgroup, as it did before.
            Err(e) => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "no cgroup of its own for the container")
            }
        }
    }
    out
}

fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.procs").exists() {
        // cgroup2 only.
        return vec![base.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| base.join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// Removes a container's cgroups (depth first: its systemd leaves its own
/// unit cgroups behind). Best effort: a cgroup still in use stays.
async fn remove_cgroups(name: &str) {
    for root in cgroup_roots() {
        let dir = root.join("keel").join(name);
        let _ = tokio::task::spawn_blocking(move || rmdir_tree(&dir)).await;
    }
}

fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

async fn teardown_network(name: &str, veth: Option<&str>) -> DriverResult<()> {
    if Path::new(&format!("/run/netns/{name}")).exists() {
        run("ip", &["netns", "del", name]).await?;
    }
    let veth = veth.map(str::to_string).unwrap_or_else(|| veth_name(name));
    // Deleting the netns destroys the pair; this covers a veth whose peer
    // never made it into the netns.
    if Path::new("/sys/class/net").join(&veth).exists() {
        match run("ip", &["link", "del", &veth]).await {
            // The pair went away with the netns in the meantime.
            Err(_) if !Path::new("/sys/class/net").join(&veth).exists() => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// Runs a command (no shell); failures are transient for the retry policy.
async fn run(program: &str, args: &[&str]) -> DriverResult<std::process::Output> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| DriverError::Unavailable(format!("run {program}: {e}")))?;
    if !out.status.success() {
        return Err(DriverError::Unavailable(format!(
            "{program} {}: {} ({})",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )));
    }
    Ok(out)
}

async fn signal(pid: u32, sig: &str) {
    let _ = tokio::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// See [`NspawnDriver::power`].
fn power_at(dir: &Path, name: &str) -> PowerState {
    if running_pid_at(dir).is_some() {
        return PowerState::Running;
    }
    // nspawn is gone but something still lives in the netns: a crash the
    // next power_off cleans up.
    if !netns_pids(name).is_empty() {
        return PowerState::Other;
    }
    PowerState::Stopped
}

/// nspawn's pid when `<dir>/pid` names a live nspawn process.
fn running_pid_at(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("pid")).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start: u64 = it.next()?.parse().ok()?;
    let stat = ProcStat::read(pid)?;
    if stat.state == 'Z' || stat.state == 'X' || stat.start_time != start {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = cmdline
        .split(|b| *b == 0)
        .next()
        .is_some_and(|argv0| argv0.ends_with(b"systemd-nspawn"));
    ours.then_some(pid)
}

/// Processes in the container's network namespace (its whole process tree:
/// nspawn itself stays in the host's).
fn netns_pids(name: &str) -> Vec<u32> {
    let Ok(ns) = std::fs::metadata(format!("/run/netns/{name}")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pid in all_pids() {
        if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            if m.dev() == ns.dev() && m.ino() == ns.ino() {
                if let Some(stat) = ProcStat::read(pid) {
                    if stat.state != 'Z' && stat.state != 'X' {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out
}

async fn kill_netns_processes(name: &str) {
    for _ in 0..20 {
        let probe = name.to_string();
        let pids = tokio::task::spawn_blocking(move || netns_pids(&probe))
            .await
            .unwrap_or_default();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            signal(pid, "KILL").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn children_of(parent: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| ProcStat::read(*pid).is_some_and(|s| s.ppid == parent && s.state != 'Z'))
        .collect()
}

/// The parts of `/proc/<pid>/stat` the driver uses.
struct ProcStat {
    state: char,
    ppid: u32,
    /// Clock ticks after boot; with the pid, identifies one process.
    start_time: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is parenthesised and may contain anything.
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcStat {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }
}

fn is_mountpoint(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mount(mp) == want)
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

async fn copy_tree(from: &Path, to: &Path) -> DriverResult<()> {
    // cp -a keeps what an overlay upper layer holds: whiteout devices,
    // `trusted.overlay.*` xattrs, owners and modes.
    run(
        "cp",
        &["-a", "--reflink=auto", path_str(from)?, path_str(to)?],
    )
    .await?;
    Ok(())
}

async fn mkdir(path: &Path) -> DriverResult<()> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|e| io_err(path, e))
}

/// Seeds and meta hold the host's private key: root-only.
async fn write_private(path: &Path, data: &[u8]) -> DriverResult<()> {
    let tmp = path.with_extension("tmp");
    let write = async {
        let mut opts = tokio::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true).mode(0o600);
        let mut f = opts.open(&tmp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut f, data).await?;
        f.sync_all().await?;
        tokio::fs::rename(&tmp, path).await
    };
    write.await.map_err(|e| io_err(path, e))
}

async fn tail(path: &Path, max: usize) -> String {
    let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].trim().to_string()
}

fn path_str(p: &Path) -> DriverResult<&str> {
    p.to_str()
        .ok_or_else(|| DriverError::Permanent(format!("path {} is not UTF-8", p.display())))
}

fn io_err(path: &Path, e: std::io::Error) -> DriverError {
    DriverError::Unavailable(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_and_proc_figures_parse() {
        let cpu = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(cgroup_key(cpu, "usage_usec"), Some(123_456));
        assert_eq!(cgroup_key(cpu, "usage"), None);
        let io = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=1 wbytes=2 rios=1 wios=1\n";
        assert_eq!(io_stat_bytes(io), (4097, 8194));
        let dev = "Inter-|   Receive                                                |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                   lo:  500       5    0    0    0     0          0         0      500       5    0    0    0     0       0          0\n  \
                   eth0: 1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0\n";
        assert_eq!(net_dev_bytes(dev), (1000, 2000));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("keel-42").is_ok());
        for bad in ["", "Keel", "a/b", "-x", "a b", "x.y", &"a".repeat(61)] {
            assert!(
                matches!(check_name(bad), Err(DriverError::Permanent(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        let a = veth_name("keel-1");
        assert_eq!(a, veth_name("keel-1"));
        assert_ne!(a, veth_name("keel-2"));
        assert!(a.len() <= 15, "{a}");
    }

    #[test]
    fn addresses_come_from_v1_and_v2_network_config() {
        let seed = |nc: &str| SeedData {
            meta_data: String::new(),
            user_data: String::new(),
            network_config: nc.to_string(),
        };
        let v1 = "version: 1\nconfig:\n- type: physical\n  name: eth0\n  subnets:\n  - {type: static, address: 10.9.0.5/24, gateway: 10.9.0.1}\n  - {type: static6, address: 'fd00:9::5/64', gateway: 'fd00:9::1'}\n";
        let n = container_net("keel-a", &seed(v1)).unwrap();
        assert_eq!(n.ipv4, Some(Ipv4Addr::new(10, 9, 0, 5)));
        assert_eq!(n.gateway4, Some(Ipv4Addr::new(10, 9, 0, 1)));
        assert_eq!(n.ipv6, Some("fd00:9::5".parse().unwrap()));
        assert_eq!(n.gateway6, Some("fd00:9::1".parse().unwrap()));
        let v2 = "version: 2\nethernets:\n  eth0:\n    addresses: [192.168.4.2/24, 'fd00::2/64']\n    routes: [{to: default, via: 192.168.4.1}, {to: '::/0', via: 'fd00::1'}]\n";
        let n = container_net("keel-a", &seed(v2)).unwrap();
        assert_eq!(n.ipv4, Some(Ipv4Addr::new(192, 168, 4, 2)));
        assert_eq!(n.gateway4, Some(Ipv4Addr::new(192, 168, 4, 1)));
        assert_eq!(n.gateway6, Some("fd00::1".parse().unwrap()));
        let dhcp =
            "version: 1\nconfig:\n- type: physical\n  name: eth0\n  subnets: [{type: dhcp}]\n";
        assert!(matches!(
            container_net("keel-a", &seed(dhcp)),
            Err(DriverError::Permanent(_))
        ));
    }
}
