//! The libvirt driver for real: a Debian VM on `qemu:///system` (TCG when
//! KVM is unusable) booted from the base image with a cloud-init seed. It
//! must phone home to a listener on the host's loopback (reached through the
//! user-mode network's gateway), start sshd on the forwarded port and present
//! exactly the host key the panel generated; delete must leave nothing.
//!
//! `a_bridged_vm_is_reached_at_its_own_addresses` boots one on a bridge of
//! its own (10.233.82.0/24, fd00:233:82::/112): it calls back from its
//! allocated address, and answers SSH with its pinned key at that address,
//! port 22, on IPv4 and IPv6 — no forwarded port.
//!
//! Needs root, a running libvirtd (`scripts/libvirt-up`) and the image
//! (`images/build-debian`); skips with a message when the image is missing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_panel::hypervisor::libvirt::{LibvirtConfig, LibvirtDriver};
use keel_panel::hypervisor::seed::{self, HostKeys, SeedParams};
use keel_panel::hypervisor::{
    ConsoleInput, Driver, DriverError, ImageStore, NetIdentity, PowerState, VmSpec,
};
use russh::keys::PublicKeyOrCertificate;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const IMAGES: &str = "/var/cache/keel/images";
const IMAGE: &str = "debian-bookworm";

/// Destroys and undefines the domain if the test dies half-way.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in [
            vec!["destroy", &self.0],
            vec!["undefine", "--snapshots-metadata", &self.0],
        ] {
            let _ = std::process::Command::new("virsh")
                .args(["-q", "-c", "qemu:///system"])
                .args(args)
                .output();
        }
    }
}

/// One HTTP request as the listener saw it.
#[derive(Debug)]
struct Request {
    line: String,
    body: String,
    /// Where the request came from.
    peer: std::net::SocketAddr,
}

/// A minimal HTTP/1.0 endpoint: answers 200 to everything and reports what
/// it received.
async fn phone_home_listener() -> (u16, mpsc::UnboundedReceiver<Request>) {
    phone_home_listener_on(Ipv4Addr::LOCALHOST).await
}

/// [`phone_home_listener`] on address `ip`.
async fn phone_home_listener_on(ip: Ipv4Addr) -> (u16, mpsc::UnboundedReceiver<Request>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; len.min(65536)];
                let _ = reader.read_exact(&mut body).await;
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = tx.send(Request {
                    line: line.trim().to_string(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    peer,
                });
            });
        }
    });
    (port, rx)
}

/// Reads the first line sshd sends; `None` until sshd answers (user-mode
/// forwards accept a TCP connection before anything listens in the guest).
async fn ssh_banner(addr: std::net::SocketAddr) -> Option<String> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .ok()?
        .ok()?;
    line.starts_with("SSH-").then(|| line.trim().to_string())
}

/// Records the host key the server presents.
struct KeyRecorder(Arc<Mutex<Option<String>>>);

impl russh::client::Handler for KeyRecorder {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.0.lock().unwrap() = key.to_openssh().ok();
        }
        Ok(true)
    }
}

fn key_body(openssh: &str) -> String {
    openssh
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn console_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_vm_phones_home_and_presents_its_host_key() {
    if !image_or_skip() {
        return;
    }
    std::fs::create_dir_all("/var/lib/keel").unwrap();
    let state = tempfile::Builder::new()
        .prefix("libvirt-test-")
        .tempdir_in("/var/lib/keel")
        .unwrap();
    let driver = LibvirtDriver::new(LibvirtConfig::new(
        "qemu:///system",
        ImageStore::new(IMAGES),
        state.path(),
    ));
    eprintln!("domain type: {:?}", driver.domain_type());

    let name = format!("keel-vmtest-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let (http_port, mut requests) = phone_home_listener().await;
    let gateway = Ipv4Addr::new(10, 77, 0, 1);
    let net = NetIdentity {
        hostname: format!("{name}.test"),
        ipv4: Some(Ipv4Addr::new(10, 77, 0, 10)),
        prefix4: 24,
        gateway4: Some(gateway),
        ipv6: None,
        prefix6: keel_panel::hypervisor::DEFAULT_PREFIX6,
        gateway6: None,
        attach: keel_panel::hypervisor::Attachment::Private,
    };
    let host_keys = HostKeys::generate(&name).unwrap();
    let admin = HostKeys::generate("admin@test").unwrap();
    let mut params = SeedParams::new(&name, net.clone(), host_keys.clone());
    params.authorized_keys = vec![admin.ed25519_public.clone()];
    // The guest reaches the host's loopback at the user-mode gateway.
    params.phone_home_url = Some(format!(
        "http://{gateway}:{http_port}/phone-home?vm={name}&sig=deadbeef"
    ));
    let spec = VmSpec {
        name: name.clone(),
        cpus: 1,
        ram_mb: 1024,
        disk_gb: 4,
        image: IMAGE.into(),
        seed: seed::render(&params).unwrap(),
        net,
    };

    let t0 = Instant::now();
    let info = driver.create(&spec).await.unwrap();
    let defined = t0.elapsed();
    driver.start(&name).await.unwrap();
    let started = Instant::now();
    let endpoint = info
        .ssh_endpoint
        .expect("user-mode networking forwards sshd");
    assert_eq!(
        driver.status(&name).await.unwrap().power,
        PowerState::Running
    );
    let console = driver.vm_dir(&name).join("console.log");

    let req = match tokio::time::timeout(Duration::from_secs(300), requests.recv()).await {
        Ok(Some(req)) => req,
        _ => panic!(
            "no phone-home within 300 s; console tail:\n{}",
            console_tail(&console)
        ),
    };
    let callback = started.elapsed();
    assert!(
        req.line.starts_with("POST /phone-home?vm=") && req.line.contains("&sig=deadbeef"),
        "{req:?}"
    );
    assert!(req.body.contains(&format!("instance_id={name}")), "{req:?}");
    assert!(req.body.contains(&format!("hostname={name}")), "{req:?}");

    let deadline = Instant::now() + Duration::from_secs(180);
    let banner = loop {
        if let Some(b) = ssh_banner(endpoint).await {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "sshd never answered on {endpoint}; console tail:\n{}",
            console_tail(&console)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let banner_at = started.elapsed();

    let seen = Arc::new(Mutex::new(None));
    let handle = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        endpoint,
        KeyRecorder(seen.clone()),
    )
    .await
    .expect("SSH handshake");
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    let presented = seen
        .lock()
        .unwrap()
        .clone()
        .expect("server presented a key");
    assert_eq!(
        key_body(&presented),
        key_body(&host_keys.ed25519_public),
        "the VM must present the host key the panel generated"
    );

    // The serial console, the console page's backend for libvirt VMs: the
    // guest's login prompt answers a keystroke; a second console is refused
    // while the first is open, and one can open again once it is closed;
    // console.log still has what the serial line printed since boot.
    let t = Instant::now();
    let mut serial = driver
        .serial_console(&name)
        .await
        .unwrap()
        .expect("a libvirt VM has a serial console");
    assert!(
        driver.serial_console(&name).await.is_err(),
        "a second console while one is open"
    );
    let mut shown = Vec::new();
    while !String::from_utf8_lossy(&shown).contains("login:") {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no login prompt on the serial console: {:?}",
            String::from_utf8_lossy(&shown)
        );
        serial
            .input
            .send(ConsoleInput::Data(b"\r".to_vec()))
            .await
            .unwrap();
        if let Ok(Some(chunk)) =
            tokio::time::timeout(Duration::from_secs(3), serial.output.recv()).await
        {
            shown.extend(chunk);
        }
    }
    drop(serial);
    let reopened = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match driver.serial_console(&name).await {
            Ok(c) => break c,
            Err(e) => assert!(
                t.elapsed() < Duration::from_secs(130),
                "the console did not open again after it was closed: {e}"
            ),
        }
    };
    drop(reopened);
    let serial_took = t.elapsed();
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(log.contains("Linux version"), "console.log: {log}");

    // Internal snapshots of a running VM (memory included), and a clone
    // of its running disk.
    let t = Instant::now();
    driver.snapshot_create(&name, "booted").await.unwrap();
    let snap_took = t.elapsed();
    let snaps = driver.snapshot_list(&name).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].name, "booted");
    let t = Instant::now();
    driver.snapshot_revert(&name, "booted").await.unwrap();
    let revert_took = t.elapsed();
    assert_eq!(
        driver.status(&name).await.unwrap().power,
        PowerState::Running
    );
    driver.snapshot_delete(&name, "booted").await.unwrap();
    assert!(driver.snapshot_list(&name).await.unwrap().is_empty());

    let clone_name = format!("{name}-c");
    let _cleanup_clone = Cleanup(clone_name.clone());
    let mut clone_params = params.clone();
    clone_params.instance_id = clone_name.clone();
    clone_params.net.hostname = format!("{clone_name}.test");
    clone_params.net.ipv4 = Some(Ipv4Addr::new(10, 77, 0, 11));
    clone_params.host_keys = HostKeys::generate(&clone_name).unwrap();
    let t = Instant::now();
    let clone_spec = VmSpec {
        name: clone_name.clone(),
        seed: seed::render(&clone_params).unwrap(),
        net: clone_params.net.clone(),
        ..spec.clone()
    };
    let clone = driver.clone_vm(&name, &clone_spec).await.unwrap();
    let clone_took = t.elapsed();
    assert_eq!(clone.power, PowerState::Stopped);
    assert_ne!(clone.ssh_endpoint, Some(endpoint));
    driver.delete(&clone_name).await.unwrap();
    assert!(!driver.vm_dir(&clone_name).exists());

    eprintln!(
        "running VM: serial console to a login prompt {:.1} s, snapshot {:.1} s, revert {:.1} s, clone {:.1} s",
        serial_took.as_secs_f64(),
        snap_took.as_secs_f64(),
        revert_took.as_secs_f64(),
        clone_took.as_secs_f64()
    );
    eprintln!(
        "timings: define {:.1} s, start to phone-home {:.1} s, start to SSH banner {:.1} s ({banner})",
        defined.as_secs_f64(),
        callback.as_secs_f64(),
        banner_at.as_secs_f64()
    );

    driver.delete(&name).await.unwrap();
    assert!(matches!(
        driver.status(&name).await,
        Err(DriverError::NotFound(_))
    ));
    assert!(!driver.vm_dir(&name).exists(), "VM files must be gone");
    let listed = driver.list().await.unwrap();
    assert!(listed.iter().all(|v| v.name != name));
    driver.delete(&name).await.unwrap();
}

/// The bridged test's own bridge, removed when dropped.
struct TestBridge(&'static str);

impl TestBridge {
    fn up(name: &'static str, v4: &str, v6: &str) -> TestBridge {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", name])
            .output();
        let bridge = TestBridge(name);
        for args in [
            vec!["link", "add", name, "type", "bridge"],
            vec!["addr", "add", v4, "dev", name],
            vec!["-6", "addr", "add", v6, "dev", name, "nodad"],
            vec!["link", "set", name, "up"],
        ] {
            let out = std::process::Command::new("ip")
                .args(&args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
        bridge
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", self.0])
            .output();
    }
}

/// The host key sshd at `addr` presents (`type base64`).
async fn presented_key(addr: std::net::SocketAddr) -> String {
    let seen = Arc::new(Mutex::new(None));
    let handle = russh::client::connect(
        Arc::new(russh::client::Config::default()),
        addr,
        KeyRecorder(seen.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("SSH handshake with {addr}: {e}"));
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    let key = seen.lock().unwrap().clone().expect("a host key");
    key_body(&key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_vm_is_reached_at_its_own_addresses() {
    if !image_or_skip() {
        return;
    }
    // Dropped last: the domain goes before its bridge.
    let _bridge = TestBridge::up("kbr82", "10.233.82.1/24", "fd00:233:82::1/112");
    std::fs::create_dir_all("/var/lib/keel").unwrap();
    let state = tempfile::Builder::new()
        .prefix("libvirt-test-")
        .tempdir_in("/var/lib/keel")
        .unwrap();
    let driver = LibvirtDriver::new(LibvirtConfig::new(
        "qemu:///system",
        ImageStore::new(IMAGES),
        state.path(),
    ));
    let name = format!("keel-vmbridge-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let gateway = Ipv4Addr::new(10, 233, 82, 1);
    let (http_port, mut requests) = phone_home_listener_on(gateway).await;
    let v4 = Ipv4Addr::new(10, 233, 82, 10);
    let v6: std::net::Ipv6Addr = "fd00:233:82::10".parse().unwrap();
    let net = NetIdentity {
        hostname: format!("{name}.test"),
        ipv4: Some(v4),
        prefix4: 24,
        gateway4: Some(gateway),
        ipv6: Some(v6),
        prefix6: 112,
        gateway6: Some("fd00:233:82::1".parse().unwrap()),
        attach: keel_panel::hypervisor::Attachment::Bridge {
            bridge: "kbr82".into(),
        },
    };
    let host_keys = HostKeys::generate(&name).unwrap();
    let mut params = SeedParams::new(&name, net.clone(), host_keys.clone());
    params.authorized_keys = vec![HostKeys::generate("admin@test").unwrap().ed25519_public];
    params.phone_home_url = Some(format!(
        "http://{gateway}:{http_port}/phone-home?vm={name}&sig=deadbeef"
    ));
    let spec = VmSpec {
        name: name.clone(),
        cpus: 1,
        ram_mb: 1024,
        disk_gb: 4,
        image: IMAGE.into(),
        seed: seed::render(&params).unwrap(),
        net,
    };
    let info = driver.create(&spec).await.unwrap();
    assert_eq!(info.ssh_endpoint, None, "nothing is forwarded on a bridge");
    driver.start(&name).await.unwrap();
    let console = driver.vm_dir(&name).join("console.log");
    let req = match tokio::time::timeout(Duration::from_secs(300), requests.recv()).await {
        Ok(Some(req)) => req,
        _ => panic!(
            "no phone-home within 300 s; console tail:\n{}",
            console_tail(&console)
        ),
    };
    assert_eq!(
        req.peer.ip(),
        std::net::IpAddr::V4(v4),
        "the callback comes from the VM's own address: {req:?}"
    );
    for addr in [
        std::net::SocketAddr::from((v4, 22)),
        std::net::SocketAddr::from((v6, 22)),
    ] {
        let deadline = Instant::now() + Duration::from_secs(180);
        while ssh_banner(addr).await.is_none() {
            assert!(
                Instant::now() < deadline,
                "sshd never answered on {addr}; console tail:\n{}",
                console_tail(&console)
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        assert_eq!(
            presented_key(addr).await,
            key_body(&host_keys.ed25519_public),
            "{addr}"
        );
    }
    assert_eq!(driver.status(&name).await.unwrap().ssh_endpoint, None);
    driver.delete(&name).await.unwrap();
    assert!(!driver.vm_dir(&name).exists(), "VM files must be gone");
}

/// A second libvirt host on this machine: another `libvirtd` (with its own
/// `virtlogd`) in a mount namespace of its own, where libvirt's
/// configuration, state, cache, log and run directories are empty
/// directories of the test's, so it knows none of the first daemon's
/// domains and has a host UUID of its own. It listens on a socket under
/// the test's directory; the VMs' files are on the one filesystem both see,
/// as with hosts whose state directories are mounted on the panel's
/// machine. Both daemons are killed (with the domains of the second) when
/// dropped.
struct SecondLibvirtd {
    dir: tempfile::TempDir,
}

impl SecondLibvirtd {
    fn start() -> SecondLibvirtd {
        let dir = tempfile::Builder::new()
            .prefix("keel-lv2-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        for sub in ["etc", "run", "lib", "cache", "log", "sock"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg("/etc/libvirt/.")
            .arg(d.join("etc"))
            .output()
            .unwrap();
        assert!(out.status.success(), "copy /etc/libvirt: {out:?}");
        // Persistent domains of the first daemon are not the second's.
        for entry in std::fs::read_dir(d.join("etc/qemu")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "xml") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        let mut conf = std::fs::read_to_string(d.join("etc/libvirtd.conf")).unwrap();
        conf.push_str(&format!(
            "\nunix_sock_dir = \"{}\"\nhost_uuid = \"{}\"\n",
            d.join("sock").display(),
            uuid.trim()
        ));
        std::fs::write(d.join("etc/libvirtd.conf"), conf).unwrap();
        let mut script = String::from("set -e\n");
        for (ours, theirs) in [
            ("etc", "/etc/libvirt"),
            ("run", "/run/libvirt"),
            ("lib", "/var/lib/libvirt"),
            ("cache", "/var/cache/libvirt"),
            ("log", "/var/log/libvirt"),
        ] {
            script.push_str(&format!(
                "mkdir -p {theirs}\nmount --bind {} {theirs}\n",
                d.join(ours).display()
            ));
        }
        script.push_str(&format!(
            "virtlogd -d -p {}\nexec libvirtd -d -p {}\n",
            d.join("virtlogd.pid").display(),
            d.join("libvirtd.pid").display()
        ));
        std::fs::write(d.join("start.sh"), script).unwrap();
        // The daemons detach; their output goes to a file, not to a pipe
        // that would stay open.
        let log = std::fs::File::create(d.join("start.log")).unwrap();
        let status = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh"])
            .arg(d.join("start.sh"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "second libvirtd: {status}: {}",
            std::fs::read_to_string(d.join("start.log")).unwrap_or_default()
        );
        let lv = SecondLibvirtd { dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = std::process::Command::new("virsh")
                .args(["-q", "-c", &lv.uri(), "version"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the second libvirtd never answered"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        lv
    }

    fn uri(&self) -> String {
        format!(
            "qemu:///system?socket={}",
            self.dir.path().join("sock/libvirt-sock").display()
        )
    }

    fn virsh(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("virsh")
            .args(["-q", "-c", &self.uri()])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for SecondLibvirtd {
    fn drop(&mut self) {
        if let Ok(out) = std::process::Command::new("virsh")
            .args(["-q", "-c", &self.uri(), "list", "--all", "--name"])
            .output()
        {
            for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.virsh(&["destroy", name]);
                let _ = self.virsh(&["undefine", "--snapshots-metadata", name]);
            }
        }
        for pid in ["libvirtd.pid", "virtlogd.pid"] {
            if let Ok(p) = std::fs::read_to_string(self.dir.path().join(pid)) {
                let _ = std::process::Command::new("kill").arg(p.trim()).output();
            }
        }
    }
}

/// `qemu-io` on a disk image; whether the command succeeded (a `read -P`
/// fails when the data differs from the pattern).
fn qemu_io(disk: &Path, cmd: &str) -> bool {
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(disk)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && !text.contains("Pattern verification failed")
}

fn image_or_skip() -> bool {
    if Path::new(IMAGES).join(IMAGE).join("BUILT").is_file() {
        return true;
    }
    assert!(
        std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
        "KEEL_REQUIRE_REAL is set, so this test may not skip: {IMAGES}/{IMAGE}/BUILT is missing; build it with images/build-debian"
    );
    eprintln!("SKIP: {IMAGES}/{IMAGE}/BUILT is missing; build it with images/build-debian");
    false
}

/// Two libvirt hosts, each with a state directory of its own (no shared
/// storage), as `[[hypervisor.hosts]]` describes them.
fn two_hosts(lv2: &SecondLibvirtd) -> (tempfile::TempDir, LibvirtDriver, LibvirtDriver) {
    use keel_panel::hypervisor::libvirt::Networking;
    std::fs::create_dir_all("/var/lib/keel").unwrap();
    let state = tempfile::Builder::new()
        .prefix("libvirt-move-")
        .tempdir_in("/var/lib/keel")
        .unwrap();
    let mut a = LibvirtConfig::new(
        "qemu:///system",
        ImageStore::new(IMAGES),
        state.path().join("hv-a"),
    );
    a.networking = Networking::UserMode {
        ssh_ports: 23400..=23449,
    };
    let mut b = LibvirtConfig::new(
        lv2.uri(),
        ImageStore::new(IMAGES),
        state.path().join("hv-b"),
    );
    b.networking = Networking::UserMode {
        ssh_ports: 23450..=23499,
    };
    (state, LibvirtDriver::new(a), LibvirtDriver::new(b))
}

fn plain_spec(name: &str, params: &SeedParams) -> VmSpec {
    VmSpec {
        name: name.to_string(),
        cpus: 1,
        ram_mb: 1024,
        disk_gb: 4,
        image: IMAGE.into(),
        seed: seed::render(params).unwrap(),
        net: params.net.clone(),
    }
}

fn user_mode_net(name: &str, last: u8) -> NetIdentity {
    NetIdentity {
        hostname: format!("{name}.test"),
        ipv4: Some(Ipv4Addr::new(10, 77, 0, last)),
        prefix4: 24,
        gateway4: Some(Ipv4Addr::new(10, 77, 0, 1)),
        ipv6: None,
        prefix6: keel_panel::hypervisor::DEFAULT_PREFIX6,
        gateway6: None,
        attach: keel_panel::hypervisor::Attachment::Private,
    }
}

/// A cold move between two libvirt daemons without shared storage, without
/// booting: the disk (with its internal snapshot) and seed are copied into
/// the target's own directory, the domain is defined there with the same
/// UUID and a port of the target's range, the snapshot is redefined around
/// the copy (reverting it gives the data of that moment, read on the
/// copied disk), and the source's deletion leaves the copy whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vm_moves_to_a_host_without_shared_storage() {
    if !image_or_skip() {
        return;
    }
    let lv2 = SecondLibvirtd::start();
    let (_state, a, b) = two_hosts(&lv2);
    let name = format!("keel-move-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let params = SeedParams::new(
        &name,
        user_mode_net(&name, 20),
        HostKeys::generate(&name).unwrap(),
    );
    let on_a = a.create(&plain_spec(&name, &params)).await.unwrap();
    let disk_a = a.vm_dir(&name).join("disk.qcow2");
    assert!(qemu_io(&disk_a, "write -P 0x5a 1M 64k"));
    a.snapshot_create(&name, "before").await.unwrap();
    assert!(qemu_io(&disk_a, "write -P 0xa5 1M 64k"));

    let export = a.export_vm(&name).await.unwrap();
    // A host on hv-a's storage would share its files: a copy there would
    // be deleted with the source's, so it is refused (libvirt's migration
    // moves such VMs).
    let shared = LibvirtDriver::new(LibvirtConfig::new(
        lv2.uri(),
        ImageStore::new(IMAGES),
        a.config().state_dir.clone(),
    ));
    assert!(
        matches!(shared.import_vm(&name, &export).await, Err(DriverError::Permanent(m)) if m.contains("share")),
    );
    assert!(
        lv2.virsh(&["dominfo", &name]).stdout.is_empty(),
        "nothing defined"
    );
    let on_b = b.import_vm(&name, &export).await.unwrap();
    assert_eq!(on_b.power, PowerState::Stopped);
    assert_eq!(on_b.vm_ref, on_a.vm_ref, "the domain keeps its UUID");
    let port_b = on_b.ssh_endpoint.expect("a forwarded port").port();
    assert!(
        (23450..=23499).contains(&port_b),
        "port {port_b} is not hv-b's"
    );
    assert_eq!(
        b.import_vm(&name, &export).await.unwrap().vm_ref,
        on_b.vm_ref,
        "a second import finds the first"
    );

    let disk_b = b.vm_dir(&name).join("disk.qcow2");
    assert!(b.vm_dir(&name).join("seed.iso").is_file());
    assert!(
        qemu_io(&disk_b, "read -P 0xa5 1M 64k"),
        "the copy has the latest data"
    );
    let xml = String::from_utf8(lv2.virsh(&["dumpxml", &name]).stdout).unwrap();
    let dir_a = a.vm_dir(&name).display().to_string();
    assert!(
        !xml.contains(&dir_a),
        "hv-b's domain points at hv-a's files:\n{xml}"
    );
    assert!(
        xml.contains(&format!("hostfwd=tcp:127.0.0.1:{port_b}-")),
        "{xml}"
    );

    // The source's copy goes; the target's stays whole.
    a.delete(&name).await.unwrap();
    assert!(!a.vm_dir(&name).exists());
    assert!(a.list().await.unwrap().iter().all(|v| v.name != name));
    let snaps: Vec<_> = b
        .snapshot_list(&name)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(snaps, ["before"]);
    b.snapshot_revert(&name, "before").await.unwrap();
    assert!(
        qemu_io(&disk_b, "read -P 0x5a 1M 64k"),
        "reverting on hv-b gives the data of the snapshot"
    );
    let xml = String::from_utf8(lv2.virsh(&["dumpxml", &name]).stdout).unwrap();
    assert!(!xml.contains(&dir_a), "after the revert:\n{xml}");

    b.delete(&name).await.unwrap();
    assert!(!b.vm_dir(&name).exists());
    assert!(b.list().await.unwrap().iter().all(|v| v.name != name));
}

/// Runs `cmd` on the guest as `keeladmin` with OpenSSH, trusting only the
/// host key the panel generated.
fn guest_ssh(dir: &Path, endpoint: std::net::SocketAddr, host_key: &str, cmd: &str) -> String {
    let known = dir.join("known_hosts");
    keel_panel::provision::hostkey::write_known_hosts(
        &known,
        &endpoint.ip().to_string(),
        endpoint.port(),
        host_key,
    )
    .unwrap();
    let out = std::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-i")
        .arg(dir.join("admin_key"))
        .arg("-p")
        .arg(endpoint.port().to_string())
        .arg(format!("keeladmin@{}", endpoint.ip()))
        .arg(cmd)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh {cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits for sshd at `endpoint` and returns the key it presents.
async fn wait_for_sshd(endpoint: std::net::SocketAddr, console: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    while ssh_banner(endpoint).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "sshd never answered on {endpoint}; console tail:\n{}",
            console_tail(console)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    presented_key(endpoint).await
}

/// The whole cold move on real guests: a VM booted on the first daemon
/// gets a file written over SSH, is refused an export while it runs, is
/// powered off, copied to the second daemon and deleted from the first,
/// and boots there: its sshd presents the host key the panel generated at
/// the new forwarded port, and the file is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booted_vm_moves_cold_and_keeps_its_data_and_host_key() {
    use std::os::unix::fs::PermissionsExt;
    if !image_or_skip() {
        return;
    }
    let lv2 = SecondLibvirtd::start();
    let (state, a, b) = two_hosts(&lv2);
    let name = format!("keel-movevm-{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let (http_port, mut requests) = phone_home_listener().await;
    let host_keys = HostKeys::generate(&name).unwrap();
    let admin = HostKeys::generate("admin@test").unwrap();
    let key_file = state.path().join("admin_key");
    std::fs::write(&key_file, &admin.ed25519_private).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut params = SeedParams::new(&name, user_mode_net(&name, 21), host_keys.clone());
    params.authorized_keys = vec![admin.ed25519_public.clone()];
    params.phone_home_url = Some(format!(
        "http://10.77.0.1:{http_port}/phone-home?vm={name}&sig=cafe"
    ));

    let t0 = Instant::now();
    let info = a.create(&plain_spec(&name, &params)).await.unwrap();
    a.start(&name).await.unwrap();
    let endpoint_a = info.ssh_endpoint.expect("a forwarded port");
    let console_a = a.vm_dir(&name).join("console.log");
    match tokio::time::timeout(Duration::from_secs(300), requests.recv()).await {
        Ok(Some(_)) => {}
        _ => panic!("no phone-home within 300 s:\n{}", console_tail(&console_a)),
    }
    assert_eq!(
        wait_for_sshd(endpoint_a, &console_a).await,
        key_body(&host_keys.ed25519_public)
    );
    let marker = format!("moved-{}", std::process::id());
    guest_ssh(
        state.path(),
        endpoint_a,
        &host_keys.ed25519_public,
        &format!("echo {marker} > marker && sync"),
    );
    let booted = t0.elapsed();

    assert!(
        matches!(a.export_vm(&name).await, Err(DriverError::Permanent(m)) if m.contains("stop")),
        "a running VM is not exported"
    );
    a.power_off(&name).await.unwrap();
    let t1 = Instant::now();
    let export = a.export_vm(&name).await.unwrap();
    let on_b = b.import_vm(&name, &export).await.unwrap();
    a.delete(&name).await.unwrap();
    let copied = t1.elapsed();
    assert!(!a.vm_dir(&name).exists());

    b.start(&name).await.unwrap();
    let endpoint_b = on_b.ssh_endpoint.expect("a forwarded port on hv-b");
    assert_ne!(endpoint_a, endpoint_b);
    let console_b = b.vm_dir(&name).join("console.log");
    assert_eq!(
        wait_for_sshd(endpoint_b, &console_b).await,
        key_body(&host_keys.ed25519_public),
        "on hv-b the VM presents the same host key"
    );
    assert_eq!(
        guest_ssh(
            state.path(),
            endpoint_b,
            &host_keys.ed25519_public,
            "cat marker"
        ),
        marker
    );
    eprintln!(
        "cold move: boot on hv-a {:.1} s, export+copy+define+delete {:.1} s, start on hv-b to login {:.1} s",
        booted.as_secs_f64(),
        copied.as_secs_f64(),
        t1.elapsed().as_secs_f64() - copied.as_secs_f64()
    );
    b.delete(&name).await.unwrap();
    assert!(!b.vm_dir(&name).exists());
}
