//! Full test hosts: a whole Debian system per host, booted by
//! `systemd-nspawn -b` with systemd as PID 1, for module and role tests that
//! need real systemd, dpkg/apt, sudo and daemons (Apache, MariaDB).
//!
//! Where it sits: tests call [`FullHosts::start`] (or the builder), get
//! running hosts reachable by SSH from this machine, drive them with Keel,
//! then inspect real state with [`FullHosts::exec`]. Dropping [`FullHosts`]
//! kills the containers and removes their network namespaces.
//!
//! Layers of one host's root filesystem (overlayfs, top first):
//!
//! 1. the host's own upper directory (`<base>/full-slot-N/<name>/upper`);
//! 2. optionally a cached *package layer* with [`FullHostsBuilder::preinstall`]
//!    packages already installed (`<cache>/fullhosts/pkgs-<hash>`);
//! 3. a cached *prep layer*: apt pointed at the local repository (lists
//!    already fetched), the test users, sshd settings, cloud-init disabled
//!    (`<cache>/fullhosts/prep-<hash>`);
//! 4. the Debian base image's `rootfs/` (built by `images/build-debian`).
//!
//! Packages come from a local file repository built once on this machine
//! (`<cache>/fullhosts/repo-<hash>`, `apt-get install --download-only` in a
//! throwaway chroot, then `dpkg-scanpackages`). Hosts see it read-only at
//! `/srv/keel-repo` and their `sources.list` names only it, so tests never
//! reach the internet once the cache exists.
//!
//! Networking: host `i` of slot `S` lives in network namespace
//! `keelf-S-i`, joined to this machine by a veth pair: `10.78.S.i` on the
//! machine's side, `10.78.S.(10+i)` on the container's `eth0`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{
    base_dir, client_keys, keygen, known_hosts_name, lock, run, sh_quote, ClientKeys,
    KEELTEST_PASSWORD, ROOT_PASSWORD,
};

/// Packages always present in the local repository: what the seed's MWS
/// roles install, plus small packages for module tests.
pub const REPO_PACKAGES: &[&str] = &[
    "apache2",
    "git",
    "screen",
    "vim",
    "mariadb-server",
    "mariadb-client",
    "prometheus-node-exporter",
    "tzdata",
    "unzip",
    "zip",
    "tree",
    "htop",
    "rsync",
    "openssh-server",
    "sudo",
    "curl",
    "ca-certificates",
    "less",
];

/// What the shipped stacks (`playbooks/weblab.yml`, `calipsoplus.yml`,
/// `ccserver.yml`, `emission.yml`) install beyond [`REPO_PACKAGES`]: the
/// extra packages of `engine/tests/seed_stacks.rs` and of the panel's
/// stack tests, one list so both use one repository
/// ([`local_repo`]`(SEED_STACK_PACKAGES)`, built once).
pub const SEED_STACK_PACKAGES: &[&str] = &[
    // WebLab-Deusto
    "redis-server",
    "supervisor",
    "python3-venv",
    "python3-gunicorn",
    "python3-redis",
    "python3-pymysql",
    "openssl",
    // CalipsoPlus
    "python3-django",
    "python3-mysqldb",
    "uwsgi",
    "uwsgi-plugin-python3",
    // e-mission
    "postgresql",
    "postgresql-client",
    "python3-psycopg2",
    "ufw",
    "jupyter-notebook",
    // CC-Server's Docker nodes (busybox-static: the test's image)
    "docker.io",
    "busybox-static",
];

/// Where the repository is mounted inside every host.
pub const REPO_MOUNT: &str = "/srv/keel-repo";

/// Bump when the layout of the cached repository or layers changes.
const CACHE_VERSION: &str = "fullhosts-v1";
const SLOTS: u32 = 200;
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// One running full host.
#[derive(Debug, Clone)]
pub struct FullHost {
    pub name: String,
    /// The container's address, reachable from this machine.
    pub addr: String,
    /// sshd's port (22).
    pub port: u16,
    /// The host's public key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// The host's filesystem seen from outside (`/proc/<pid 1>/root`).
    pub root: PathBuf,
    /// PID (in this machine's namespace) of the container's systemd.
    pub pid: u32,
    /// The container's console output (systemd's boot messages).
    pub console_log: PathBuf,
    /// The host's network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// From spawning `systemd-nspawn` until systemd reported the boot done
    /// and sshd answered.
    pub boot_time: Duration,
}

/// How long each part of [`FullHosts`] setup took.
#[derive(Debug, Clone, Default)]
pub struct SetupTimings {
    /// Making sure the base image exists (seconds only when it was built).
    pub base_image: Duration,
    /// Building (cold) or finding (cached) the local repository.
    pub repo: Duration,
    pub repo_cold: bool,
    /// Building or finding the prep and package layers.
    pub layers: Duration,
    pub layers_cold: bool,
    /// From the first spawn until every host was up (hosts boot in parallel).
    pub boot_all: Duration,
}

/// Options for [`FullHosts`]; see [`FullHosts::builder`].
#[derive(Debug, Clone, Default)]
pub struct FullHostsBuilder {
    preinstall: Vec<String>,
    packages: Vec<String>,
    names: Vec<String>,
}

struct Running {
    name: String,
    nspawn: Child,
    netns: String,
}

/// A set of running full hosts (one slot's worth).
pub struct FullHosts {
    pub hosts: Vec<FullHost>,
    /// The default client key (ed25519, no passphrase).
    pub client_key: PathBuf,
    /// This run's state directory.
    pub dir: PathBuf,
    /// The local apt repository the hosts use.
    pub repo: PathBuf,
    pub timings: SetupTimings,
    known_hosts: PathBuf,
    keys: ClientKeys,
    running: Vec<Running>,
    _lock: File,
}

impl FullHostsBuilder {
    /// Packages to have installed before boot, through a cached overlay
    /// layer (built once per package list).
    pub fn preinstall(mut self, pkgs: &[&str]) -> Self {
        self.preinstall.extend(pkgs.iter().map(|s| s.to_string()));
        self
    }

    /// Extra packages to make available in the local repository (beyond
    /// [`REPO_PACKAGES`]). Changing this list rebuilds the repository.
    pub fn packages(mut self, pkgs: &[&str]) -> Self {
        self.packages.extend(pkgs.iter().map(|s| s.to_string()));
        self
    }

    /// Hostnames, in order (default `f1..fN`); missing ones get the default.
    pub fn names(mut self, names: &[&str]) -> Self {
        self.names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Builds what is missing from the caches and boots `n` hosts.
    pub fn start(self, n: usize) -> Result<FullHosts> {
        FullHosts::start_with(self, n)
    }
}

/// Directory of the cached repository and layers.
fn cache_dir() -> PathBuf {
    std::env::var_os("KEEL_FULLHOSTS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/keel/fullhosts"))
}

/// Directory `images/build-debian` writes to.
fn image_dir() -> PathBuf {
    std::env::var_os("KEEL_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/keel/images"))
        .join("debian-bookworm")
}

/// FNV-1a: a stable hash for cache keys (std's hasher may change).
fn fnv(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Tells what is missing on this machine for full hosts, if anything.
pub fn preflight() -> Result<()> {
    super::preflight()?;
    let mut missing = Vec::new();
    for (bin, pkg) in [
        ("/usr/bin/systemd-nspawn", "systemd-container"),
        ("/usr/bin/dpkg-scanpackages", "dpkg-dev"),
        ("/usr/sbin/ip", "iproute2"),
        ("/usr/sbin/debootstrap", "debootstrap"),
    ] {
        if !Path::new(bin).exists() {
            missing.push(format!("{bin} (package {pkg})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "full test hosts need: {}; install them with apt-get",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Builds the base image with `images/build-debian` unless it is there.
fn ensure_base_image() -> Result<(PathBuf, String, Duration)> {
    let t = Instant::now();
    let dir = image_dir();
    let built = dir.join("BUILT");
    if !built.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/build-debian");
        eprintln!(
            "full hosts: building the base image with {}",
            script.display()
        );
        fs::create_dir_all(cache_dir())?;
        let _l = lock(&cache_dir().join("image.lock"), true)?;
        if !built.exists() {
            let st = Command::new(&script)
                .stdin(Stdio::null())
                .status()
                .with_context(|| format!("running {}", script.display()))?;
            if !st.success() {
                bail!("{} failed ({st})", script.display());
            }
        }
    }
    let stamp = fs::read_to_string(&built)?;
    Ok((dir.join("rootfs"), stamp, t.elapsed()))
}

/// Runs `script` with `/bin/sh` chrooted into an overlay of `lowers` (top
/// first) with `upper` as the writable layer, in a private mount namespace
/// so nothing stays mounted. `/proc`, `/dev`, `/run` and `/tmp` are
/// provided; `binds` are `(outside, inside)` bind mounts.
fn in_overlay_chroot(
    lowers: &[&Path],
    upper: &Path,
    binds: &[(&Path, &str)],
    setup_outside: &str,
    script: &str,
    log: &Path,
) -> Result<()> {
    let scratch = upper.with_extension("scratch");
    let work = scratch.join("work");
    let merged = scratch.join("merged");
    for d in [upper, &work, &merged] {
        fs::create_dir_all(d)?;
    }
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let m = merged.display().to_string();
    let mut outer = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir={l},upperdir={u},workdir={w} {m}\n\
         mount -t proc proc {m}/proc\nmount --rbind /dev {m}/dev\n\
         mount -t tmpfs tmpfs {m}/run\nmount -t tmpfs -o mode=1777 tmpfs {m}/tmp\n",
        l = lowerdir.join(":"),
        u = upper.display(),
        w = work.display(),
    );
    for (src, dst) in binds {
        outer.push_str(&format!(
            "mkdir -p {m}{dst}\nmount --bind {} {m}{dst}\n",
            src.display()
        ));
    }
    outer.push_str(&setup_outside.replace("$M", &m));
    outer.push_str(&format!(
        "\nexec chroot {m} /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
         DEBIAN_FRONTEND=noninteractive LANG=C /bin/sh -c {}\n",
        sh_quote(&format!("set -e\n{script}"))
    ));
    let out = File::create(log)?;
    let st = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(&outer)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("running unshare")?;
    let _ = fs::remove_dir_all(&scratch);
    if !st.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "building in a chroot failed ({st}); log {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// Builds `<cache>/<name>` with `build(tmp_dir)` unless it exists; the
/// result appears atomically (rename), so a killed build leaves no half
/// cache behind. Returns whether it was built now.
fn cached(name: &str, build: impl FnOnce(&Path) -> Result<()>) -> Result<(PathBuf, bool)> {
    let cache = cache_dir();
    let dest = cache.join(name);
    if dest.exists() {
        return Ok((dest, false));
    }
    fs::create_dir_all(&cache)?;
    let _l = lock(&cache.join("build.lock"), true)?;
    if dest.exists() {
        return Ok((dest, false));
    }
    let tmp = cache.join(format!(".tmp-{name}"));
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_dir_all(tmp.with_extension("scratch"));
    fs::create_dir_all(&tmp)?;
    build(&tmp).with_context(|| format!("building cache {}", dest.display()))?;
    fs::rename(&tmp, &dest)?;
    Ok((dest, true))
}

/// The local repository holding `pkgs` and everything they depend on
/// (recommends included, so installs with or without them resolve).
fn ensure_repo(rootfs: &Path, stamp: &str, pkgs: &[String]) -> Result<(PathBuf, bool)> {
    let key = fnv(&format!("{CACHE_VERSION}\n{stamp}\n{}", pkgs.join(" ")));
    cached(&format!("repo-{key}"), |out| {
        eprintln!(
            "full hosts: building the local apt repository ({} packages asked)",
            pkgs.len()
        );
        let upper = out.with_extension("dl");
        let _ = fs::remove_dir_all(&upper);
        let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let script = format!(
            "rm -f /etc/resolv.conf\nprintf '%s' {resolv} > /etc/resolv.conf\n\
             apt-get update -q\n\
             apt-get install -q -y --download-only -o APT::Install-Recommends=true {pkgs}\n\
             cp /var/cache/apt/archives/*.deb /srv/out/\n",
            resolv = sh_quote(&resolv),
            pkgs = pkgs.join(" "),
        );
        let log = cache_dir().join("repo-build.log");
        let r = in_overlay_chroot(&[rootfs], &upper, &[(out, "/srv/out")], "", &script, &log);
        let _ = fs::remove_dir_all(&upper);
        r?;
        let packages = run(Command::new("dpkg-scanpackages")
            .args(["-m", ".", "/dev/null"])
            .current_dir(out))?;
        fs::write(out.join("Packages"), &packages.stdout)?;
        Ok(())
    })
}

/// The local apt repository with [`REPO_PACKAGES`] and `extra`, built if
/// it is missing (and the base image with it): for tests that boot their
/// own containers (the panel's nspawn driver) and point apt at it.
pub fn local_repo(extra: &[&str]) -> Result<PathBuf> {
    preflight()?;
    let (rootfs, stamp, _) = ensure_base_image()?;
    let mut pkgs: Vec<String> = REPO_PACKAGES.iter().map(|s| s.to_string()).collect();
    pkgs.extend(extra.iter().map(|s| s.to_string()));
    pkgs.sort();
    pkgs.dedup();
    Ok(ensure_repo(&rootfs, &stamp, &pkgs)?.0)
}

/// The prep layer: apt pointed at the repository (lists fetched), test
/// users, sshd settings, cloud-init off.
fn ensure_prep_layer(rootfs: &Path, repo: &Path) -> Result<(PathBuf, bool)> {
    let repo_name = repo.file_name().unwrap().to_string_lossy().to_string();
    let key = fnv(&format!("{CACHE_VERSION}\nprep\n{repo_name}"));
    cached(&format!("prep-{key}"), |out| {
        let script = format!(
            "printf '%s\\n' 'deb [trusted=yes] file:{REPO_MOUNT} ./' > /etc/apt/sources.list\n\
             rm -f /etc/apt/sources.list.d/*\n\
             apt-get update -q\n\
             touch /etc/cloud/cloud-init.disabled\n\
             mkdir -p /etc/ssh/sshd_config.d /etc/keel-test\n\
             printf '%s\\n' 'HostKey /etc/ssh/ssh_host_ed25519_key' \
               'AuthorizedKeysFile .ssh/authorized_keys /etc/keel-test/authorized_keys' \
               'UseDNS no' > /etc/ssh/sshd_config.d/keel-test.conf\n\
             useradd -m -s /bin/bash keeltest\nuseradd -m -s /bin/bash keelnopw\n\
             printf '%s\\n' 'keeltest:{KEELTEST_PASSWORD}' 'keelnopw:{KEELTEST_PASSWORD}' \
               'root:{ROOT_PASSWORD}' | chpasswd\n\
             printf '%s\\n' 'keeltest ALL=(ALL:ALL) ALL' 'keelnopw ALL=(ALL:ALL) NOPASSWD: ALL' \
               > /etc/sudoers.d/keel-test\n\
             chmod 0440 /etc/sudoers.d/keel-test\n"
        );
        let log = cache_dir().join("prep-build.log");
        in_overlay_chroot(&[rootfs], out, &[(repo, REPO_MOUNT)], "", &script, &log)
    })
}

/// The package layer: `pkgs` installed from the repository, services not
/// started (no systemd in the chroot; `policy-rc.d` says no anyway).
fn ensure_pkg_layer(
    rootfs: &Path,
    prep: &Path,
    repo: &Path,
    pkgs: &[String],
) -> Result<(PathBuf, bool)> {
    let prep_name = prep.file_name().unwrap().to_string_lossy().to_string();
    let key = fnv(&format!(
        "{CACHE_VERSION}\npkgs\n{prep_name}\n{}",
        pkgs.join(" ")
    ));
    cached(&format!("pkgs-{key}"), |out| {
        eprintln!(
            "full hosts: building the package layer ({})",
            pkgs.join(" ")
        );
        let script = format!(
            "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d\nchmod 755 /usr/sbin/policy-rc.d\n\
             apt-get install -q -y {}\n\
             rm -f /usr/sbin/policy-rc.d\napt-get clean\n",
            pkgs.join(" ")
        );
        let log = cache_dir().join("pkgs-build.log");
        in_overlay_chroot(
            &[prep, rootfs],
            out,
            &[(repo, REPO_MOUNT)],
            "",
            &script,
            &log,
        )
    })
}

/// PID (in our namespace) of the process that is PID 1 of a new PID
/// namespace below `parent`, if it exists yet.
fn find_init(parent: u32) -> Option<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut nspid_one: Vec<u32> = Vec::new();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if let Some(pp) = field("PPid:").and_then(|v| v.parse::<u32>().ok()) {
            children.entry(pp).or_default().push(pid);
        }
        if let Some(ns) = field("NSpid:") {
            let parts: Vec<&str> = ns.split_whitespace().collect();
            if parts.len() > 1 && parts.last() == Some(&"1") {
                nspid_one.push(pid);
            }
        }
    }
    let mut stack = vec![parent];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(|v| v.as_slice()).unwrap_or(&[]) {
            if nspid_one.contains(&c) {
                return Some(c);
            }
            stack.push(c);
        }
    }
    None
}

fn nsenter(pid: u32, cmd: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["-t", &pid.to_string(), "-a", "/bin/sh", "-c", cmd])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C")
        .stdin(Stdio::null());
    c
}

/// Processes whose network namespace is the named one under /run/netns.
fn processes_in_netns(name: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(format!("/run/netns/{name}")) else {
        return Vec::new();
    };
    let want = format!("net:[{}]", meta.ino());
    let mut pids = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let ns = fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            if ns.as_deref().and_then(|p| p.to_str()) == Some(want.as_str()) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Removes what a killed earlier run of `slot` left: every process inside
/// its hosts' network namespaces (so the containers, whose overlays live in
/// nspawn's private mount namespace), the namespaces, the state directory.
/// Only called with the slot's lock held, so no live run owns these.
fn clean_slot(slot: u32, dir: &Path) {
    let prefix = format!("keelf-{slot}-");
    let names: Vec<String> = fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    for name in &names {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = processes_in_netns(name);
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // SAFETY: plain syscall.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
    }
    if dir.exists() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Cleans every slot that has leftovers but no live owner (its lock is free).
fn sweep_stale(locks: &Path) {
    let base = base_dir();
    let mut stale: Vec<u32> = Vec::new();
    if let Ok(rd) = fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if let Some(slot) = n
                .strip_prefix("keelf-")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u32>().ok())
            {
                stale.push(slot);
            }
        }
    }
    if let Ok(rd) = fs::read_dir(&base) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if let Some(slot) = n.strip_prefix("full-slot-").and_then(|s| s.parse().ok()) {
                stale.push(slot);
            }
        }
    }
    stale.sort_unstable();
    stale.dedup();
    for slot in stale {
        if let Ok(Some(_l)) = lock(&locks.join(format!("full-slot-{slot}.lock")), false) {
            clean_slot(slot, &base.join(format!("full-slot-{slot}")));
        }
    }
}

fn take_slot() -> Result<(u32, File)> {
    let locks = base_dir().join("locks");
    fs::create_dir_all(&locks)?;
    sweep_stale(&locks);
    let start = std::process::id() % SLOTS;
    for i in 0..SLOTS {
        let slot = (start + i) % SLOTS;
        if let Some(f) = lock(&locks.join(format!("full-slot-{slot}.lock")), false)? {
            return Ok((slot, f));
        }
    }
    bail!("all {SLOTS} full test host slots are busy")
}

fn random_machine_id() -> Result<String> {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")?;
    Ok(uuid.trim().replace('-', ""))
}

impl FullHosts {
    /// Options: preinstalled packages, extra repository packages, names.
    pub fn builder() -> FullHostsBuilder {
        FullHostsBuilder::default()
    }

    /// Boots `n` hosts `f1..fN` with the default options.
    pub fn start(n: usize) -> Result<FullHosts> {
        Self::builder().start(n)
    }

    fn start_with(opts: FullHostsBuilder, n: usize) -> Result<FullHosts> {
        preflight()?;
        let mut timings = SetupTimings::default();
        let (rootfs, stamp, t) = ensure_base_image()?;
        timings.base_image = t;

        let mut pkgs: Vec<String> = REPO_PACKAGES.iter().map(|s| s.to_string()).collect();
        pkgs.extend(opts.packages.iter().cloned());
        pkgs.extend(opts.preinstall.iter().cloned());
        pkgs.sort();
        pkgs.dedup();
        let t = Instant::now();
        let (repo, cold) = ensure_repo(&rootfs, &stamp, &pkgs)?;
        timings.repo = t.elapsed();
        timings.repo_cold = cold;

        let t = Instant::now();
        let (prep, cold1) = ensure_prep_layer(&rootfs, &repo)?;
        let mut lowers = vec![prep.clone(), rootfs.clone()];
        let mut cold2 = false;
        if !opts.preinstall.is_empty() {
            let mut pre = opts.preinstall.clone();
            pre.sort();
            pre.dedup();
            let (layer, c) = ensure_pkg_layer(&rootfs, &prep, &repo, &pre)?;
            cold2 = c;
            lowers.insert(0, layer);
        }
        timings.layers = t.elapsed();
        timings.layers_cold = cold1 || cold2;

        let (slot, lock) = take_slot()?;
        let dir = base_dir().join(format!("full-slot-{slot}"));
        clean_slot(slot, &dir);
        fs::create_dir_all(&dir)?;
        let keys = client_keys(&base_dir())?;
        let mut authorized = String::new();
        for k in [
            &keys.ed25519,
            &keys.ed25519_passphrase,
            &keys.rsa,
            &keys.ecdsa,
        ] {
            authorized.push_str(&fs::read_to_string(k.with_extension("pub"))?);
        }
        let mut fh = FullHosts {
            hosts: Vec::new(),
            client_key: keys.ed25519.clone(),
            dir: dir.clone(),
            repo: repo.clone(),
            timings,
            known_hosts: dir.join("known_hosts"),
            keys,
            running: Vec::new(),
            _lock: lock,
        };

        // Spawn every host, then wait for all: boots overlap.
        let t = Instant::now();
        let mut pending = Vec::new();
        for i in 1..=n {
            let name = opts
                .names
                .get(i - 1)
                .cloned()
                .unwrap_or_else(|| format!("f{i}"));
            let spawned = spawn_host(&dir, slot, i, &name, &lowers, &repo, &authorized)
                .with_context(|| format!("starting full host {name}"))?;
            fh.running.push(Running {
                name: name.clone(),
                nspawn: spawned.child,
                netns: spawned.netns.clone(),
            });
            pending.push(spawned.plan);
        }
        for (i, p) in pending.into_iter().enumerate() {
            let h = wait_booted(p, fh.running[i].nspawn.id())
                .context("waiting for a full host to boot")?;
            fh.hosts.push(h);
        }
        fh.timings.boot_all = t.elapsed();

        let mut kh = String::new();
        for h in &fh.hosts {
            kh.push_str(&format!(
                "{} {}\n",
                known_hosts_name(&h.addr, h.port),
                h.host_key
            ));
        }
        fs::write(&fh.known_hosts, kh)?;
        Ok(fh)
    }

    /// Host `idx`.
    pub fn host(&self, idx: usize) -> &FullHost {
        &self.hosts[idx]
    }

    /// A known_hosts file listing every host's key under its address.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// Client keys authorized for root, `keeltest` and `keelnopw`.
    pub fn client_keys(&self) -> &ClientKeys {
        &self.keys
    }

    /// Runs `cmd` with `/bin/sh -c` as root inside host `idx` (all the
    /// namespaces of its PID 1), to prepare or check real state.
    pub fn exec(&self, idx: usize, cmd: &str) -> Output {
        nsenter(self.init_pid(idx), cmd)
            .output()
            .expect("running nsenter")
    }

    /// PID of host `idx`'s current systemd: a reboot inside the host starts
    /// a new container (see `spawn_host`), so [`FullHost::pid`] may be stale.
    pub fn init_pid(&self, idx: usize) -> u32 {
        self.running
            .iter()
            .find(|r| r.name == self.hosts[idx].name)
            .and_then(|r| find_init(r.nspawn.id()))
            .unwrap_or(self.hosts[idx].pid)
    }

    /// Like [`FullHosts::exec`], but returns stdout and panics on failure.
    pub fn sh(&self, idx: usize, cmd: &str) -> String {
        let out = self.exec(idx, cmd);
        assert!(
            out.status.success(),
            "`{cmd}` on {} failed ({}): {}{}",
            self.hosts[idx].name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An INI inventory listing every host in group `[testhosts]`, with the
    /// connection vars Keel needs, plus `extra_host_vars` on every line.
    pub fn inventory_ini(&self, extra_host_vars: &str) -> String {
        let mut s = String::from("[testhosts]\n");
        for h in &self.hosts {
            s.push_str(&format!(
                "{} ansible_host={} ansible_port={} ansible_user=root \
                 ansible_ssh_private_key_file={} \
                 ansible_ssh_common_args='-o UserKnownHostsFile={}' {}\n",
                h.name,
                h.addr,
                h.port,
                self.client_key.display(),
                self.known_hosts.display(),
                extra_host_vars
            ));
        }
        s
    }
}

impl Drop for FullHosts {
    fn drop(&mut self) {
        // SIGKILL to a PID namespace's init ends every process in it; then
        // nspawn exits and its private mount namespace (the overlay) goes.
        // A host that failed to boot is not in `hosts`: find its init anew.
        for r in &self.running {
            let init = find_init(r.nspawn.id());
            if let Some(pid) = init {
                // SAFETY: plain syscall.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        for r in &mut self.running {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match r.nspawn.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = r.nspawn.kill();
                        let _ = r.nspawn.wait();
                        break;
                    }
                    Ok(None) => {
                        // A host caught rebooting has a new init by now.
                        if let Some(pid) = find_init(r.nspawn.id()) {
                            // SAFETY: plain syscall.
                            unsafe {
                                libc::kill(pid as i32, libc::SIGKILL);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(20))
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &r.netns])
                .stderr(Stdio::null())
                .status();
            for root in [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified",
            ] {
                rmdir_tree(&Path::new(root).join("keel").join(&r.netns));
            }
        }
        if std::env::var_os("KEEL_FULLHOSTS_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

struct HostPlan {
    name: String,
    netns: String,
    addr: String,
    host_key: String,
    hdir: PathBuf,
    console_log: PathBuf,
    started: Instant,
}

struct Spawned {
    child: Child,
    netns: String,
    plan: HostPlan,
}

fn spawn_host(
    dir: &Path,
    slot: u32,
    i: usize,
    name: &str,
    lowers: &[PathBuf],
    repo: &Path,
    authorized: &str,
) -> Result<Spawned> {
    if i > 200 {
        bail!("at most 200 full hosts per slot");
    }
    let hdir = dir.join(name);
    let upper = hdir.join("upper");
    let work = hdir.join("work");
    let merged = hdir.join("merged");
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d)?;
    }
    // Files the host starts with, placed in its upper layer before mounting
    // (directories get the modes the lower layers have).
    for d in ["etc", "etc/ssh", "etc/keel-test"] {
        fs::create_dir_all(upper.join(d))?;
        fs::set_permissions(upper.join(d), fs::Permissions::from_mode(0o755))?;
    }
    let key = upper.join("etc/ssh/ssh_host_ed25519_key");
    keygen(&key, "ed25519", None, "", &format!("root@{name}"))?;
    fs::write(upper.join("etc/keel-test/authorized_keys"), authorized)?;
    fs::write(upper.join("etc/hostname"), format!("{name}\n"))?;
    fs::write(
        upper.join("etc/hosts"),
        format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        ),
    )?;
    fs::write(
        upper.join("etc/machine-id"),
        format!("{}\n", random_machine_id()?),
    )?;
    fs::set_permissions(
        upper.join("etc/machine-id"),
        fs::Permissions::from_mode(0o444),
    )?;

    // The network: a namespace of its own, a veth pair to this machine.
    let netns = format!("keelf-{slot}-{i}");
    let outside = format!("10.78.{slot}.{i}");
    let inside = format!("10.78.{slot}.{}", i + 10);
    let veth = format!("kf{slot}h{i}");
    let _ = Command::new("ip")
        .args(["netns", "del", &netns])
        .stderr(Stdio::null())
        .status();
    run(Command::new("ip").args(["netns", "add", &netns]))?;
    let ip = |args: &str| -> Result<()> {
        let v: Vec<&str> = args.split_whitespace().collect();
        run(Command::new("ip").args(&v))?;
        Ok(())
    };
    ip(&format!(
        "link add {veth} type veth peer name eth0 netns {netns}"
    ))?;
    ip(&format!("addr add {outside} peer {inside} dev {veth}"))?;
    ip(&format!("link set {veth} up"))?;
    ip(&format!("-n {netns} link set lo up"))?;
    ip(&format!(
        "-n {netns} addr add {inside} peer {outside} dev eth0"
    ))?;
    ip(&format!("-n {netns} link set eth0 up"))?;
    ip(&format!(
        "-n {netns} route add default via {outside} dev eth0"
    ))?;

    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let script = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir={l},upperdir={u},workdir={w} {m}\n\
         set +e\n\
         # A cgroup of its own in each hierarchy: containers sharing one\n\
         # fail each other's units (status=219/CGROUP).\n\
         for cg in /sys/fs/cgroup /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do\n\
         [ -e $cg/cgroup.procs ] && mkdir -p $cg/keel/{netns} && echo $$ > $cg/keel/{netns}/cgroup.procs\n\
         done 2>/dev/null\n\
         # CAP_NET_ADMIN: firewall tests (iptables, ufw) change the netfilter\n\
         # rules of the container's own network namespace.\n\
         # The key-management calls: Docker's runc (CC-Server's nodes) makes\n\
         # a session keyring for each container, which nspawn's default\n\
         # system-call filter refuses.\n\
         # A reboot inside the container makes nspawn exit 133: boot it again.\n\
         while :; do\n\
         systemd-nspawn -q -D {m} -b --register=no --keep-unit -M {netns} \
         --hostname={name} --network-namespace-path=/run/netns/{netns} \
         --capability=CAP_NET_ADMIN --system-call-filter='add_key keyctl request_key' \
         --bind-ro={repo}:{REPO_MOUNT} --console=read-only\n\
         rc=$?; [ $rc -eq 133 ] || exit $rc\n\
         done\n",
        l = lowerdir.join(":"),
        u = upper.display(),
        w = work.display(),
        m = merged.display(),
        repo = repo.display(),
    );
    let console_log = hdir.join("console.log");
    let out = File::create(&console_log)?;
    let started = Instant::now();
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("spawning unshare/systemd-nspawn")?;
    fs::write(hdir.join("nspawn.pid"), child.id().to_string())?;
    let pubkey = fs::read_to_string(key.with_extension("pub"))?;
    let host_key: Vec<&str> = pubkey.split_whitespace().take(2).collect();
    Ok(Spawned {
        child,
        netns: netns.clone(),
        plan: HostPlan {
            name: name.to_string(),
            netns: netns.clone(),
            addr: inside,
            host_key: host_key.join(" "),
            hdir,
            console_log,
            started,
        },
    })
}

/// Waits until systemd in the host reports the boot finished (running or
/// degraded) and sshd answers with its banner.
fn wait_booted(p: HostPlan, nspawn_pid: u32) -> Result<FullHost> {
    let deadline = p.started + BOOT_TIMEOUT;
    let fail = |what: &str| -> anyhow::Error {
        let log = fs::read_to_string(&p.console_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::anyhow!(
            "full host {}: {what}; console:\n{}",
            p.name,
            tail.join("\n")
        )
    };
    let pid = loop {
        if let Some(pid) = find_init(nspawn_pid) {
            break pid;
        }
        if !Path::new(&format!("/proc/{nspawn_pid}")).exists() || Instant::now() > deadline {
            return Err(fail("systemd-nspawn did not start a container"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    fs::write(p.hdir.join("init.pid"), pid.to_string())?;
    // Early on systemd's bus is not up yet; retry until it answers.
    let state = loop {
        let out = nsenter(pid, "timeout 170 systemctl is-system-running --wait")
            .output()
            .context("running nsenter")?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "running" || state == "degraded" {
            break state;
        }
        if matches!(state.as_str(), "maintenance" | "stopping") || Instant::now() > deadline {
            return Err(fail(&format!("systemd reports {state:?}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if state == "degraded" {
        let failed = nsenter(pid, "systemctl --failed --no-legend --plain")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!(
            "full host {}: boot degraded; failed units:\n{failed}",
            p.name
        );
    }
    let addr: SocketAddr = format!("{}:22", p.addr).parse()?;
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut b = [0u8; 4];
            if s.read_exact(&mut b).is_ok() && &b == b"SSH-" {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err(fail("sshd did not answer on port 22"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(FullHost {
        name: p.name,
        addr: p.addr,
        port: 22,
        host_key: p.host_key,
        root: PathBuf::from(format!("/proc/{pid}/root")),
        pid,
        console_log: p.console_log,
        netns: p.netns,
        boot_time: p.started.elapsed(),
    })
}

/// Removes a cgroup directory and the ones the container's systemd left in
/// it, deepest first (cgroup directories go with rmdir, not unlink).
fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for entry in rd.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
