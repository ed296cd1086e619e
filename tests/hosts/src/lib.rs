//! Test hosts: real OpenSSH `sshd` processes that look like separate machines.
//!
//! Used by Keel's transport, module and end-to-end tests (and by benchmarks)
//! in place of VMs. Each host is one `sshd` running:
//!
//! - on its own loopback address `127.77.<slot>.<n>` (port 2222) in the root
//!   network namespace, so tests reach it as ordinary processes;
//! - in its own mount namespace, chrooted into an overlayfs whose lower layer
//!   is the machine's `/` and whose upper layer is private to the host, so a
//!   file written on one host is seen neither on the others nor on the
//!   machine; `/run` and `/tmp` are fresh tmpfs mounts;
//! - in its own UTS namespace, with hostname `h<n>`;
//! - with its own ed25519 host key, listed in [`TestHosts::known_hosts`].
//!
//! Every host has a user `keeltest` (password [`KEELTEST_PASSWORD`], sudo
//! with a password), a user `keelnopw` (sudo `NOPASSWD`), and root's password
//! set to [`ROOT_PASSWORD`] (for `su`), all created inside the overlay.
//!
//! Parallel test processes each take a *slot* (a `flock`ed lock file), which
//! picks the address range and the state directory. Dropping [`TestHosts`]
//! kills every process of its hosts; the mounts die with their namespaces.
//!
//! [`TestHosts::start_jump_chain`] builds hosts that can only be reached
//! through the first one; see its doc and README.md.

pub mod full;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Password of the `keeltest` user on every host.
pub const KEELTEST_PASSWORD: &str = "keeltest-pw";
/// Password of `root` on every host (for `su`).
pub const ROOT_PASSWORD: &str = "root-pw";
/// Passphrase of [`ClientKeys::ed25519_passphrase`].
pub const KEY_PASSPHRASE: &str = "keel-passphrase";
/// Port every root-namespace host listens on.
pub const PORT: u16 = 2222;

const SLOTS: u32 = 240;
/// The slot used by the `up`/`down` scripts.
pub const SCRIPT_SLOT: u32 = 250;

/// Client keys authorized for every user on every host.
#[derive(Debug, Clone)]
pub struct ClientKeys {
    pub ed25519: PathBuf,
    /// Encrypted with [`KEY_PASSPHRASE`].
    pub ed25519_passphrase: PathBuf,
    pub rsa: PathBuf,
    pub ecdsa: PathBuf,
}

/// One running host.
#[derive(Debug, Clone)]
pub struct TestHost {
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// The host's filesystem seen from outside (`/proc/<pid>/root`).
    pub root: PathBuf,
    /// Pid of the host's `sshd` listener.
    pub pid: u32,
    /// The host's public key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// The host's sshd log (LogLevel VERBOSE).
    pub log: PathBuf,
    /// For hosts only reachable through others: the hops, first to last.
    pub jump: Vec<(String, u16)>,
}

pub struct TestHosts {
    pub hosts: Vec<TestHost>,
    pub known_hosts: PathBuf,
    /// The default client key (ed25519, no passphrase).
    pub client_key: PathBuf,
    pub keys: ClientKeys,
    pub dir: PathBuf,
    slot: u32,
    _lock: Option<File>,
    stop: Arc<AtomicBool>,
    _silent: TcpListener,
    keep: bool,
}

fn base_dir() -> PathBuf {
    std::env::var_os("KEEL_TESTHOSTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/keel-testhosts"))
}

/// Tells what is missing on this machine, if anything.
pub fn preflight() -> Result<()> {
    let mut missing = Vec::new();
    for (bin, pkg) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
        ("/usr/bin/sudo", "sudo"),
        ("/usr/bin/unshare", "util-linux"),
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/sbin/useradd", "passwd"),
        ("/usr/sbin/chpasswd", "passwd"),
        ("/usr/lib/openssh/sftp-server", "openssh-sftp-server"),
    ] {
        if !Path::new(bin).exists() {
            missing.push(format!("{bin} (package {pkg})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "test hosts need: {}; run tests/hosts/up (installs them with apt-get)",
            missing.join(", ")
        );
    }
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!("test hosts need root (namespaces, overlay mounts, sshd)");
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn lock(path: &Path, block: bool) -> Result<Option<File>> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let flags = if block {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), flags) } == 0 {
        Ok(Some(f))
    } else {
        Ok(None)
    }
}

fn keygen(path: &Path, kind: &str, bits: Option<&str>, pass: &str, comment: &str) -> Result<()> {
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-t", kind, "-N", pass, "-C", comment, "-f"])
        .arg(path);
    if let Some(b) = bits {
        c.args(["-b", b]);
    }
    run(&mut c)?;
    Ok(())
}

/// Client keys are shared by every run (made once, under a lock).
fn client_keys(base: &Path) -> Result<ClientKeys> {
    let dir = base.join("client-keys");
    fs::create_dir_all(&dir)?;
    let _l = lock(&base.join("client-keys.lock"), true)?;
    let keys = ClientKeys {
        ed25519: dir.join("id_ed25519"),
        ed25519_passphrase: dir.join("id_ed25519_pass"),
        rsa: dir.join("id_rsa"),
        ecdsa: dir.join("id_ecdsa"),
    };
    for (p, kind, bits, pass) in [
        (&keys.ed25519, "ed25519", None, ""),
        (&keys.ed25519_passphrase, "ed25519", None, KEY_PASSPHRASE),
        (&keys.rsa, "rsa", Some("2048"), ""),
        (&keys.ecdsa, "ecdsa", Some("256"), ""),
    ] {
        if !p.exists() || !p.with_extension("pub").exists() {
            let _ = fs::remove_file(p);
            let _ = fs::remove_file(p.with_extension("pub"));
            keygen(p, kind, bits, pass, "keel-test-client")?;
        }
        // sshd and ssh refuse private keys readable by others.
        fs::set_permissions(p, fs::Permissions::from_mode(0o600))?;
    }
    Ok(keys)
}

/// Kills every process whose mount namespace is the one of `pid`.
fn kill_namespace(pid: u32) {
    let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
        return;
    };
    let own = fs::read_link("/proc/self/ns/mnt").ok();
    if Some(&ns) == own.as_ref() {
        return;
    }
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if fs::read_link(format!("/proc/{p}/ns/mnt")).ok().as_ref() == Some(&ns) {
                // SAFETY: plain syscall.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
        }
    }
}

/// When the kernel started process `pid` (field 22 of `/proc/<pid>/stat`,
/// in clock ticks since boot). With the pid it names one process for good:
/// a pid alone may since belong to another run's host.
fn start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// Kills the hosts a crashed earlier run recorded in `dir`, but only a
/// process that is still the one recorded: a recycled pid may now be a host
/// of another test process, and killing its namespace would cut that test's
/// connections mid-command.
fn kill_recorded(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(rec) = fs::read_to_string(e.path().join("pid")) else {
            continue;
        };
        let mut parts = rec.split_whitespace();
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        match (parts.next(), start_time(pid)) {
            (Some(recorded), Some(now)) if recorded == now => kill_namespace(pid),
            _ => {}
        }
    }
}

/// Connects to `addr` from inside the network namespace of `pid`.
fn connect_in_netns(pid: u32, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns only changes this short-lived thread's namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        })
        .join()
        .expect("connect thread")
    })
}

struct HostPlan {
    name: String,
    addr: String,
    port: u16,
    /// Run inside the network namespace of this pid (jump chains).
    netns_of: Option<usize>,
    /// Create a fresh network namespace for this host.
    new_netns: bool,
}

impl TestHosts {
    /// Starts `n` hosts `h1..hN` on `127.77.<slot>.1..N:2222`.
    pub fn start(n: usize) -> Result<TestHosts> {
        let (slot, lock) = Self::take_slot()?;
        let plans = (1..=n)
            .map(|i| HostPlan {
                name: format!("h{i}"),
                addr: format!("127.77.{slot}.{i}"),
                port: PORT,
                netns_of: None,
                new_netns: false,
            })
            .collect();
        Self::start_plans(slot, Some(lock), plans, false)
    }

    /// Starts hosts for the `up` script: a fixed slot, and they stay up after
    /// this process exits (until `down`).
    pub fn start_detached(n: usize) -> Result<TestHosts> {
        let dir = base_dir().join(format!("slot-{SCRIPT_SLOT}"));
        kill_recorded(&dir);
        let plans = (1..=n)
            .map(|i| HostPlan {
                name: format!("h{i}"),
                addr: format!("127.77.{SCRIPT_SLOT}.{i}"),
                port: PORT,
                netns_of: None,
                new_netns: false,
            })
            .collect();
        Self::start_plans(SCRIPT_SLOT, None, plans, true)
    }

    /// Stops the hosts started by [`TestHosts::start_detached`].
    pub fn stop_detached() -> Result<()> {
        let dir = base_dir().join(format!("slot-{SCRIPT_SLOT}"));
        kill_recorded(&dir);
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    /// Starts a jump topology of `1 + inner` hosts:
    ///
    /// - `hosts[0]` (`j1`) is the only host reachable from here, on
    ///   `127.77.<slot>.1:2222`;
    /// - `hosts[1..]` (`t1..`) listen on `127.0.0.<k+1>:22` inside a private
    ///   network namespace that has only a loopback interface, so nothing in
    ///   the root namespace can reach them.
    ///
    /// `j1`'s sshd also lives in that namespace; a forwarding thread in this
    /// process accepts on `127.77.<slot>.1:2222` in the root namespace and
    /// relays to it. So the only way to `t1` is a `direct-tcpip` channel
    /// opened on `j1`'s sshd. Each inner host's [`TestHost::jump`] lists the
    /// hops through the previous hosts (`t2` is reached via `j1`, then `t1`).
    pub fn start_jump_chain(inner: usize) -> Result<TestHosts> {
        let (slot, lock) = Self::take_slot()?;
        let mut plans = vec![HostPlan {
            name: "j1".into(),
            addr: "127.0.0.1".into(),
            port: 22,
            netns_of: None,
            new_netns: true,
        }];
        for k in 1..=inner {
            plans.push(HostPlan {
                name: format!("t{k}"),
                addr: format!("127.0.0.{}", k + 1),
                port: 22,
                netns_of: Some(0),
                new_netns: false,
            });
        }
        let mut th = Self::start_plans(slot, Some(lock), plans, false)?;
        // Expose j1 in the root namespace through the relay.
        let listen: SocketAddr = format!("127.77.{slot}.1:{PORT}").parse()?;
        let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        listener.set_nonblocking(true)?;
        let inner_pid = th.hosts[0].pid;
        let stop = th.stop.clone();
        std::thread::spawn(move || {
            relay(listener, inner_pid, "127.0.0.1:22".parse().unwrap(), stop)
        });
        let entry_key = th.hosts[0].host_key.clone();
        th.hosts[0].addr = format!("127.77.{slot}.1");
        th.hosts[0].port = PORT;
        let mut hops = vec![(th.hosts[0].addr.clone(), PORT)];
        for h in th.hosts.iter_mut().skip(1) {
            h.jump = hops.clone();
            hops.push((h.addr.clone(), h.port));
        }
        // known_hosts: the entry under its outside address.
        let mut kh = format!("[127.77.{slot}.1]:{PORT} {entry_key}\n");
        for h in th.hosts.iter().skip(1) {
            kh.push_str(&format!("{} {}\n", h.addr, h.host_key));
        }
        fs::write(&th.known_hosts, kh)?;
        Ok(th)
    }

    fn take_slot() -> Result<(u32, File)> {
        preflight()?;
        let locks = base_dir().join("locks");
        fs::create_dir_all(&locks)?;
        let start = std::process::id() % SLOTS;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            if let Some(f) = lock(&locks.join(format!("slot-{slot}.lock")), false)? {
                return Ok((slot, f));
            }
        }
        bail!("all {SLOTS} test host slots are busy")
    }

    fn start_plans(
        slot: u32,
        lock: Option<File>,
        plans: Vec<HostPlan>,
        keep: bool,
    ) -> Result<TestHosts> {
        preflight()?;
        let base = base_dir();
        let dir = base.join(format!("slot-{slot}"));
        // A crashed earlier run may have left hosts behind in this slot.
        kill_recorded(&dir);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;
        fs::create_dir_all("/run/sshd")?;
        let keys = client_keys(&base)?;
        let mut authorized = String::new();
        for k in [
            &keys.ed25519,
            &keys.ed25519_passphrase,
            &keys.rsa,
            &keys.ecdsa,
        ] {
            authorized.push_str(&fs::read_to_string(k.with_extension("pub"))?);
        }
        let silent = TcpListener::bind(format!("127.77.{slot}.253:{PORT}"))?;
        let mut th = TestHosts {
            hosts: Vec::new(),
            known_hosts: dir.join("known_hosts"),
            client_key: keys.ed25519.clone(),
            keys,
            dir: dir.clone(),
            slot,
            _lock: lock,
            stop: Arc::new(AtomicBool::new(false)),
            _silent: silent,
            keep,
        };
        let mut pids: Vec<u32> = Vec::new();
        for p in &plans {
            let netns_pid = p.netns_of.map(|i| pids[i]);
            let h = start_host(&dir, p, netns_pid, &authorized)
                .with_context(|| format!("starting test host {}", p.name))?;
            pids.push(h.pid);
            th.hosts.push(h);
        }
        let mut kh = String::new();
        for h in &th.hosts {
            kh.push_str(&format!(
                "{} {}\n",
                known_hosts_name(&h.addr, h.port),
                h.host_key
            ));
        }
        fs::write(&th.known_hosts, kh)?;
        // Wait until every sshd accepts connections.
        for h in &th.hosts {
            let addr: SocketAddr = format!("{}:{}", h.addr, h.port).parse()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = connect_in_netns(h.pid, addr);
                if let Ok(mut s) = r {
                    let mut b = [0u8; 4];
                    if s.read_exact(&mut b).is_ok() && &b == b"SSH-" {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    let log = fs::read_to_string(&h.log).unwrap_or_default();
                    bail!(
                        "test host {} ({addr}) did not answer; sshd log:\n{log}",
                        h.name
                    );
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        Ok(th)
    }

    /// Runs `cmd` with `/bin/sh -c` inside host `idx` (its mount, UTS and
    /// network namespaces and root), to check real state.
    pub fn exec(&self, idx: usize, cmd: &str) -> Output {
        let h = &self.hosts[idx];
        Command::new("nsenter")
            .args([
                "-t",
                &h.pid.to_string(),
                "-m",
                "-u",
                "-n",
                "-r",
                "-w",
                "/bin/sh",
                "-c",
                cmd,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running nsenter")
    }

    /// Like [`TestHosts::exec`], but returns stdout and panics on failure.
    pub fn sh(&self, idx: usize, cmd: &str) -> String {
        let out = self.exec(idx, cmd);
        assert!(
            out.status.success(),
            "`{cmd}` on {} failed: {}",
            self.hosts[idx].name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An INI inventory listing every host in group `[testhosts]`, with the
    /// connection vars Keel needs, plus `extra_host_vars` on every line.
    pub fn inventory_ini(&self, extra_host_vars: &str) -> String {
        let mut s = String::from("[testhosts]\n");
        for h in &self.hosts {
            let mut common = format!("-o UserKnownHostsFile={}", self.known_hosts.display());
            if !h.jump.is_empty() {
                let hops: Vec<String> = h
                    .jump
                    .iter()
                    .map(|(a, p)| format!("root@{a}:{p}"))
                    .collect();
                common.push_str(&format!(" -o ProxyJump={}", hops.join(",")));
            }
            s.push_str(&format!(
                "{} ansible_host={} ansible_port={} ansible_user=root \
                 ansible_ssh_private_key_file={} ansible_ssh_common_args='{}' {}\n",
                h.name,
                h.addr,
                h.port,
                self.client_key.display(),
                common,
                extra_host_vars
            ));
        }
        s
    }

    /// An address where nothing listens (connections are refused at once).
    pub fn refused_addr(&self) -> (String, u16) {
        (format!("127.77.{}.254", self.slot), PORT)
    }

    /// An address that accepts TCP but never speaks SSH (a hung server).
    pub fn silent_addr(&self) -> (String, u16) {
        (format!("127.77.{}.253", self.slot), PORT)
    }

    /// A known_hosts file that lists a *different* key for host `idx` (for
    /// host-key mismatch tests).
    pub fn wrong_known_hosts(&self, idx: usize) -> Result<PathBuf> {
        let h = &self.hosts[idx];
        let key = self.dir.join(format!("wrong-key-{idx}"));
        if !key.exists() {
            keygen(&key, "ed25519", None, "", "wrong")?;
        }
        let pubkey = fs::read_to_string(key.with_extension("pub"))?;
        let pubkey: Vec<&str> = pubkey.split_whitespace().take(2).collect();
        let path = self.dir.join(format!("known_hosts.wrong-{idx}"));
        fs::write(
            &path,
            format!(
                "{} {}\n",
                known_hosts_name(&h.addr, h.port),
                pubkey.join(" ")
            ),
        )?;
        Ok(path)
    }

    /// Writes `text` to `name` under the run directory and returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        let mut f = File::create(&p)?;
        f.write_all(text.as_bytes())?;
        Ok(p)
    }

    /// Count of sshd session processes (one per open connection) on host `idx`.
    pub fn log_text(&self, idx: usize) -> String {
        fs::read_to_string(&self.hosts[idx].log).unwrap_or_default()
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.keep {
            return;
        }
        for h in &self.hosts {
            kill_namespace(h.pid);
        }
    }
}

/// The name under which a host appears in known_hosts.
pub fn known_hosts_name(addr: &str, port: u16) -> String {
    if port == 22 {
        addr.to_string()
    } else {
        format!("[{addr}]:{port}")
    }
}

fn start_host(
    dir: &Path,
    p: &HostPlan,
    netns_pid: Option<u32>,
    authorized: &str,
) -> Result<TestHost> {
    let hdir = dir.join(&p.name);
    let upper = hdir.join("upper");
    let work = hdir.join("work");
    let merged = hdir.join("merged");
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d)?;
    }
    // Files the host starts with, placed in its upper layer before mounting.
    let kt = upper.join("etc/keel-test");
    fs::create_dir_all(&kt)?;
    fs::set_permissions(upper.join("etc"), fs::Permissions::from_mode(0o755))?;
    keygen(
        &kt.join("ssh_host_ed25519_key"),
        "ed25519",
        None,
        "",
        &p.name,
    )?;
    fs::write(kt.join("authorized_keys"), authorized)?;
    let log = hdir.join("sshd.log");
    fs::write(
        kt.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress {addr}\nHostKey /etc/keel-test/ssh_host_ed25519_key\n\
             PidFile none\nAuthorizedKeysFile /etc/keel-test/authorized_keys\n\
             PermitRootLogin yes\nPubkeyAuthentication yes\nPasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n\
             PrintMotd no\nPrintLastLog no\nMaxStartups 200:30:400\nLogLevel VERBOSE\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            port = p.port,
            addr = p.addr
        ),
    )?;
    let mut hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    hosts.push_str(&format!("\n127.0.1.1 {}\n", p.name));
    fs::write(upper.join("etc/hosts"), hosts)?;
    fs::write(upper.join("etc/hostname"), format!("{}\n", p.name))?;
    // A real server's root has a trivial shell rc; the machine's may not.
    let root_home = upper.join("root");
    fs::create_dir_all(&root_home)?;
    fs::set_permissions(&root_home, fs::Permissions::from_mode(0o700))?;
    fs::write(root_home.join(".bashrc"), "")?;
    fs::write(root_home.join(".profile"), "")?;

    let m = merged.display();
    let setup_users = format!(
        "useradd -m -s /bin/sh keeltest && useradd -m -s /bin/sh keelnopw && \
         printf '%s\\n' 'keeltest:{KEELTEST_PASSWORD}' 'keelnopw:{KEELTEST_PASSWORD}' 'root:{ROOT_PASSWORD}' | chpasswd && \
         mkdir -p /etc/sudoers.d && \
         printf '%s\\n' 'keeltest ALL=(ALL:ALL) ALL' 'keelnopw ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/keel-test && \
         chmod 0440 /etc/sudoers.d/keel-test"
    );
    let script = format!(
        "set -e\n\
         mount -t overlay overlay -o lowerdir=/,upperdir={u},workdir={w} {m}\n\
         mount --rbind /dev {m}/dev\nmount --rbind /proc {m}/proc\nmount --rbind /sys {m}/sys\n\
         mount -t tmpfs -o mode=755 tmpfs {m}/run\nmkdir -p {m}/run/sshd\n\
         mount -t tmpfs -o mode=1777 tmpfs {m}/tmp\n\
         hostname {name}\n\
         {lo}\
         chroot {m} /bin/sh -c {users}\n\
         exec chroot {m} /usr/sbin/sshd -D -f /etc/keel-test/sshd_config -E /etc/keel-test/sshd.log\n",
        u = upper.display(),
        w = work.display(),
        name = p.name,
        lo = if p.new_netns { "ip link set lo up\n" } else { "" },
        users = sh_quote(&setup_users),
    );
    let mut cmd = match netns_pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg("unshare");
            c
        }
        None => Command::new("unshare"),
    };
    cmd.args(["--mount", "--uts", "--propagation", "private"]);
    if p.new_netns {
        cmd.arg("--net");
    }
    cmd.args(["--", "/bin/sh", "-c", &script]);
    let err_path = hdir.join("start.err");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path)?);
    let child = cmd.spawn().context("spawning unshare")?;
    // nsenter and unshare exec in place: the child becomes the host's sshd.
    let pid = child.id();
    std::mem::forget(child);
    // The host's log lives in its upper layer; link it for readers outside.
    let real_log = upper.join("etc/keel-test/sshd.log");
    let _ = std::os::unix::fs::symlink(&real_log, &log);
    let started = start_time(pid).unwrap_or_default();
    fs::write(hdir.join("pid"), format!("{pid} {started}"))?;
    let pubkey = fs::read_to_string(kt.join("ssh_host_ed25519_key.pub"))?;
    let host_key: Vec<&str> = pubkey.split_whitespace().take(2).collect();
    // Wait for the exec into sshd (the chroot is the sign the setup is done).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.as_deref().map(|e| e.ends_with("sshd")).unwrap_or(false) {
            break;
        }
        if exe.is_none() || Instant::now() > deadline {
            let err = fs::read_to_string(&err_path).unwrap_or_default();
            bail!("host setup failed: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(TestHost {
        name: p.name.clone(),
        addr: p.addr.clone(),
        port: p.port,
        root: PathBuf::from(format!("/proc/{pid}/root")),
        pid,
        host_key: host_key.join(" "),
        log,
        jump: Vec::new(),
    })
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Relays connections accepted in the root namespace to `target` inside the
/// network namespace of `pid`.
fn relay(listener: TcpListener, pid: u32, target: SocketAddr, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let Ok(server) = connect_in_netns(pid, target) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || pump(client, server));
                std::thread::spawn(move || pump(s2, c2));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => break,
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}
