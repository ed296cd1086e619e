//! The container driver against real `systemd-nspawn` machines booted from
//! the base image (`images/build-debian`): cloud-init seed, phone-home,
//! pre-generated host keys, addresses, power, snapshots, clone, delete, and
//! rediscovery by a fresh driver (a restarted panel).
//!
//! Needs root and the built image; skips (with a message) otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use keel_panel::hypervisor::nspawn::{veth_name, NspawnConfig, NspawnDriver};
use keel_panel::hypervisor::seed::{self, HostKeys, SeedParams};
use keel_panel::hypervisor::{
    Driver, DriverError, ImageStore, NetIdentity, PowerState, SeedData, VmSpec,
};
use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

const IMAGES: &str = "/var/cache/keel/images";
const IMAGE: &str = "debian-bookworm";
/// Boot is seconds when idle; allow for a loaded 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let image = Path::new(IMAGES).join(IMAGE).join("BUILT").is_file();
    let nspawn = Path::new("/usr/bin/systemd-nspawn").exists();
    if !(root && image && nspawn) {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, so this test may not skip: needs root, systemd-nspawn and {IMAGES}/{IMAGE} (images/build-debian)"
        );
        eprintln!("SKIP: needs root, systemd-nspawn and {IMAGES}/{IMAGE} (images/build-debian)");
    }
    root && image && nspawn
}

/// One phone-home POST: the VM name from the URL and the form body.
#[derive(Debug, Clone)]
struct PhoneHome {
    vm: String,
    body: String,
    at: Instant,
}

/// An HTTP listener on all addresses, standing in for the panel's callback.
struct Callbacks {
    port: u16,
    rx: mpsc::UnboundedReceiver<PhoneHome>,
    seen: Vec<PhoneHome>,
}

impl Callbacks {
    async fn start() -> Callbacks {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new()
            .route(
                "/ph/{vm}",
                post(
                    |State(tx): State<mpsc::UnboundedSender<PhoneHome>>,
                     UrlPath(vm): UrlPath<String>,
                     body: String| async move {
                        let _ = tx.send(PhoneHome {
                            vm,
                            body,
                            at: Instant::now(),
                        });
                        "ok"
                    },
                ),
            )
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Callbacks {
            port,
            rx,
            seen: Vec::new(),
        }
    }

    /// The first phone-home of `vm` (waiting for it if needed).
    async fn wait_for(&mut self, vm: &str) -> PhoneHome {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(p) = self.seen.iter().find(|p| p.vm == vm) {
                return p.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(p)) => self.seen.push(p),
                _ => panic!("no phone-home from {vm} within {BOOT_TIMEOUT:?}"),
            }
        }
    }
}

/// One container's identity, as the panel would decide it.
struct Planned {
    spec: VmSpec,
    net: NetIdentity,
    host_keys: HostKeys,
}

fn plan(name: &str, host: &str, subnet: u8, octet: u8, port: u16, admin: &HostKeys) -> Planned {
    let gw = Ipv4Addr::new(10, 231, subnet, 1);
    let net = NetIdentity {
        hostname: format!("{host}.nspawn.test"),
        ipv4: Some(Ipv4Addr::new(10, 231, subnet, octet)),
        prefix4: 24,
        gateway4: Some(gw),
        ipv6: Some(Ipv6Addr::new(
            0xfd00,
            0x231,
            subnet.into(),
            0,
            0,
            0,
            0,
            octet.into(),
        )),
        prefix6: keel_panel::hypervisor::DEFAULT_PREFIX6,
        gateway6: Some(Ipv6Addr::new(0xfd00, 0x231, subnet.into(), 0, 0, 0, 0, 1)),
        attach: keel_panel::hypervisor::Attachment::Private,
    };
    let host_keys = HostKeys::generate(name).unwrap();
    let seed = seed_for(name, &net, &host_keys, port, admin, name);
    Planned {
        spec: VmSpec {
            name: name.to_string(),
            cpus: 1,
            ram_mb: 512,
            disk_gb: 4,
            image: IMAGE.to_string(),
            seed,
            net: net.clone(),
        },
        net,
        host_keys,
    }
}

fn seed_for(
    vm: &str,
    net: &NetIdentity,
    host_keys: &HostKeys,
    port: u16,
    admin: &HostKeys,
    instance_id: &str,
) -> SeedData {
    let mut p = SeedParams::new(instance_id, net.clone(), host_keys.clone());
    p.authorized_keys = vec![admin.ed25519_public.clone()];
    p.phone_home_url = Some(format!("http://{}:{port}/ph/{vm}", net.gateway4.unwrap()));
    seed::render(&p).unwrap()
}

/// A driver on a private state dir; deletes what it created when dropped,
/// so a failing test leaves no running containers behind.
struct Fixture {
    driver: Arc<NspawnDriver>,
    cfg: NspawnConfig,
    names: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("keel-nspawn-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mut cfg = NspawnConfig::new(ImageStore::new(IMAGES));
        cfg.state_dir = dir.path().join("state");
        Fixture {
            driver: Arc::new(NspawnDriver::new(cfg.clone())),
            cfg,
            names: Arc::default(),
            _dir: dir,
        }
    }

    fn track(&self, name: &str) {
        self.names.lock().unwrap().push(name.to_string());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let names = self.names.lock().unwrap().clone();
        let cfg = self.cfg.clone();
        // The test's runtime may be gone or busy: clean up on our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let driver = NspawnDriver::new(cfg);
            for n in names {
                if let Err(e) = rt.block_on(driver.delete(&n)) {
                    eprintln!("cleanup of {n}: {e}");
                }
            }
        })
        .join();
    }
}

/// Reads the `SSH-` banner; a listening socket alone is not enough.
async fn wait_ssh_banner(ip: Ipv4Addr) -> String {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect((ip, 22)).await.ok()?;
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            text.starts_with("SSH-").then_some(text)
        };
        if let Some(banner) = attempt.await {
            return banner.trim().to_string();
        }
        assert!(Instant::now() < deadline, "no SSH banner from {ip}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records the host key the server presents.
struct KeyRecorder(Arc<Mutex<Option<String>>>);

impl client::Handler for KeyRecorder {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.0.lock().unwrap() = Some(key.to_openssh().unwrap());
        }
        Ok(true)
    }
}

/// The key's type and base64 blob, without the comment.
fn key_blob(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Connects with russh, checks the host key is exactly `expected`, logs in
/// as the admin and runs `command`, returning its stdout. Until
/// systemd-user-sessions has run, PAM refuses logins (`/run/nologin`), and
/// that can be after the phone-home: retry a refused login for a while.
async fn ssh_run(ip: Ipv4Addr, expected: &HostKeys, admin: &HostKeys, command: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(out) = ssh_try(ip, expected, admin, command).await {
            return out;
        }
        assert!(Instant::now() < deadline, "admin key refused by {ip}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn ssh_try(
    ip: Ipv4Addr,
    expected: &HostKeys,
    admin: &HostKeys,
    command: &str,
) -> Option<String> {
    let seen = Arc::new(Mutex::new(None));
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    let mut handle = client::connect(
        config,
        SocketAddr::new(IpAddr::V4(ip), 22),
        KeyRecorder(seen.clone()),
    )
    .await
    .unwrap();
    let presented = seen.lock().unwrap().clone().expect("no host key recorded");
    assert_eq!(
        key_blob(&presented),
        key_blob(&expected.ed25519_public),
        "{ip} presents a host key that is not the pre-generated one"
    );
    let key = russh::keys::decode_secret_key(&admin.ed25519_private, None).unwrap();
    let auth = handle
        .authenticate_publickey(
            seed::DEFAULT_ADMIN_USER,
            PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .unwrap();
    if !auth.success() {
        return None;
    }
    let mut ch = handle.channel_open_session().await.unwrap();
    ch.exec(true, command).await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => {}
        }
    }
    let _ = ch.close().await;
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    Some(String::from_utf8_lossy(&out).to_string())
}

async fn wait_power(driver: &NspawnDriver, name: &str, want: PowerState, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = driver.status(name).await.unwrap().power;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn link_exists(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

fn mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn bad_names_images_and_missing_containers_are_classified() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NspawnConfig::new(ImageStore::new(dir.path().join("images")));
        cfg.state_dir = dir.path().join("state");
        let driver = NspawnDriver::new(cfg);
        let admin = HostKeys::generate("admin").unwrap();
        let mut p = plan("keel-x", "x", 9, 5, 1, &admin);
        // No image built in this store.
        let e = driver.create(&p.spec).await.unwrap_err();
        assert!(
            matches!(e, DriverError::Permanent(ref m) if m.contains("not built")),
            "{e}"
        );
        assert!(!e.is_retryable());
        p.spec.name = "keel-../etc".into();
        assert!(matches!(
            driver.create(&p.spec).await,
            Err(DriverError::Permanent(_))
        ));
        for op in ["start", "status", "power_off", "snapshots"] {
            let r = match op {
                "start" => driver.start("keel-missing").await.map(|_| ()),
                "status" => driver.status("keel-missing").await.map(|_| ()),
                "power_off" => driver.power_off("keel-missing").await,
                _ => driver.snapshot_list("keel-missing").await.map(|_| ()),
            };
            assert!(matches!(r, Err(DriverError::NotFound(_))), "{op}: {r:?}");
        }
        driver.delete("keel-missing").await.unwrap();
        assert!(driver.list().await.unwrap().is_empty());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_from_seed_phones_home_and_presents_the_pregenerated_host_key() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    let mut cb = Callbacks::start().await;
    let admin = HostKeys::generate("admin").unwrap();
    let name = "keel-nt-boot";
    let p = plan(name, "boot1", 11, 7, cb.port, &admin);
    fx.track(name);
    let d = &fx.driver;

    let t = Instant::now();
    let info = d.create(&p.spec).await.unwrap();
    let create_time = t.elapsed();
    assert_eq!(info.power, PowerState::Stopped);
    assert_eq!(info.ssh_endpoint, None);
    // Idempotent by name: same container, nothing new.
    let again = d.create(&p.spec).await.unwrap();
    assert_eq!(again.vm_ref, info.vm_ref);
    let dirs: Vec<_> = std::fs::read_dir(&fx.cfg.state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(dirs, vec![name.to_string()]);

    let t = Instant::now();
    d.start(name).await.unwrap();
    d.start(name).await.unwrap(); // idempotent
    assert_eq!(d.status(name).await.unwrap().power, PowerState::Running);
    let ph = cb.wait_for(name).await;
    let to_phone_home = ph.at - t;
    let form = parse_form(&ph.body);
    assert!(
        form.contains(&("instance_id".into(), name.into())),
        "{}",
        ph.body
    );
    assert!(
        form.contains(&("hostname".into(), "boot1".into())),
        "{}",
        ph.body
    );
    let ip = p.net.ipv4.unwrap();
    let banner = wait_ssh_banner(ip).await;
    let to_banner = t.elapsed();
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    eprintln!(
        "timings: create {create_time:?}, start -> phone_home {to_phone_home:?}, start -> ssh banner {to_banner:?}"
    );

    // Exactly the panel's host key, the allocated addresses, the hostname.
    let out = ssh_run(
        ip,
        &p.host_keys,
        &admin,
        "hostname; ip -o addr show dev eth0; ls /etc/ssh/ | grep ssh_host_; sudo -n true && echo sudo-ok",
    )
    .await;
    assert!(out.starts_with("boot1\n"), "{out}");
    assert!(out.contains("inet 10.231.11.7/24"), "{out}");
    assert!(out.contains("inet6 fd00:231:b::7/64"), "{out}");
    let host_key_files: Vec<&str> = out.lines().filter(|l| l.starts_with("ssh_host_")).collect();
    assert_eq!(
        host_key_files,
        ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"],
        "{out}"
    );
    assert!(out.contains("sudo-ok"), "{out}");

    // The image underneath is untouched by the container's writes.
    assert!(!Path::new(IMAGES)
        .join(IMAGE)
        .join("rootfs/etc/ssh/ssh_host_ed25519_key")
        .exists());

    // Orderly shutdown, then start again (cloud-init does not re-run: no
    // second phone-home for the same instance).
    let t = Instant::now();
    d.shutdown(name).await.unwrap();
    wait_power(d, name, PowerState::Stopped, Duration::from_secs(60)).await;
    eprintln!("timings: shutdown {:?}", t.elapsed());
    d.shutdown(name).await.unwrap(); // stopped: nothing to do
    d.start(name).await.unwrap();
    wait_ssh_banner(ip).await;
    let t = Instant::now();
    d.reset(name).await.unwrap();
    assert_eq!(d.status(name).await.unwrap().power, PowerState::Running);
    wait_ssh_banner(ip).await;
    eprintln!("timings: reset -> ssh banner {:?}", t.elapsed());
    let t = Instant::now();
    d.power_off(name).await.unwrap();
    eprintln!("timings: power_off {:?}", t.elapsed());
    assert_eq!(d.status(name).await.unwrap().power, PowerState::Stopped);
    d.power_off(name).await.unwrap();
    assert_eq!(cb.seen.iter().filter(|p| p.vm == name).count(), 1);

    // Delete leaves nothing behind.
    let root = d.root_dir(name);
    d.delete(name).await.unwrap();
    assert!(!netns_exists(name));
    assert!(!link_exists(&veth_name(name)));
    assert!(!mounted(&root));
    assert!(!fx.cfg.state_dir.join(name).exists());
    assert!(matches!(
        d.status(name).await,
        Err(DriverError::NotFound(_))
    ));
    d.delete(name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_containers_are_isolated_and_a_fresh_driver_finds_them_running() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    let mut cb = Callbacks::start().await;
    let admin = HostKeys::generate("admin").unwrap();
    let a = plan("keel-nt-iso-a", "isoa", 12, 5, cb.port, &admin);
    let b = plan("keel-nt-iso-b", "isob", 12, 6, cb.port, &admin);
    for p in [&a, &b] {
        fx.track(&p.spec.name);
        fx.driver.create(&p.spec).await.unwrap();
        fx.driver.start(&p.spec.name).await.unwrap();
    }
    for p in [&a, &b] {
        cb.wait_for(&p.spec.name).await;
        wait_ssh_banner(p.net.ipv4.unwrap()).await;
    }
    let marker = "/root/only-in-a";
    std::fs::write(fx.driver.root_dir(&a.spec.name).join(&marker[1..]), "a").unwrap();
    let cmd = format!(
        "hostname; sudo -n test -e {marker} && echo has-marker; ip -o -4 addr show dev eth0"
    );
    let out_a = ssh_run(a.net.ipv4.unwrap(), &a.host_keys, &admin, &cmd).await;
    let out_b = ssh_run(b.net.ipv4.unwrap(), &b.host_keys, &admin, &cmd).await;
    assert!(
        out_a.starts_with("isoa\n") && out_a.contains("has-marker"),
        "{out_a}"
    );
    assert!(out_a.contains("10.231.12.5/24"), "{out_a}");
    assert!(
        out_b.starts_with("isob\n") && !out_b.contains("has-marker"),
        "{out_b}"
    );
    assert!(out_b.contains("10.231.12.6/24"), "{out_b}");
    assert!(!fx.driver.root_dir(&b.spec.name).join(&marker[1..]).exists());

    // A restarted panel has only the disk and /proc to go on.
    let fresh = NspawnDriver::new(fx.cfg.clone());
    let listed = fresh.list().await.unwrap();
    let names: Vec<_> = listed.iter().map(|v| (v.name.as_str(), v.power)).collect();
    assert_eq!(
        names,
        [
            ("keel-nt-iso-a", PowerState::Running),
            ("keel-nt-iso-b", PowerState::Running)
        ]
    );
    // ... and can manage them.
    fresh.power_off(&a.spec.name).await.unwrap();
    assert_eq!(
        fx.driver.status(&a.spec.name).await.unwrap().power,
        PowerState::Stopped
    );
    assert_eq!(
        fresh.status(&b.spec.name).await.unwrap().power,
        PowerState::Running
    );
    for p in [&a, &b] {
        fresh.delete(&p.spec.name).await.unwrap();
        assert!(!netns_exists(&p.spec.name));
        assert!(!link_exists(&veth_name(&p.spec.name)));
    }
    assert!(fresh.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_revert_and_clone_with_its_own_identity() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    let mut cb = Callbacks::start().await;
    let admin = HostKeys::generate("admin").unwrap();
    let d = &fx.driver;
    let src = plan("keel-nt-snap", "snap1", 13, 5, cb.port, &admin);
    let name = src.spec.name.as_str();
    fx.track(name);
    d.create(&src.spec).await.unwrap();
    d.start(name).await.unwrap();
    cb.wait_for(name).await;
    let ip = src.net.ipv4.unwrap();
    wait_ssh_banner(ip).await;

    let t = Instant::now();
    d.snapshot_create(name, "before").await.unwrap();
    eprintln!("timings: snapshot (running) {:?}", t.elapsed());
    d.snapshot_create(name, "before").await.unwrap(); // idempotent
    let snaps = d.snapshot_list(name).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].name, "before");
    assert!(snaps[0].created_at > 1_700_000_000);

    ssh_run(
        ip,
        &src.host_keys,
        &admin,
        "sudo -n touch /root/after-snapshot",
    )
    .await;
    let after = d.root_dir(name).join("root/after-snapshot");
    assert!(after.exists());

    let t = Instant::now();
    d.snapshot_revert(name, "before").await.unwrap();
    eprintln!("timings: revert {:?}", t.elapsed());
    assert!(
        !after.exists(),
        "revert kept a file created after the snapshot"
    );
    // It was running, so it runs again, with the same identity.
    assert_eq!(d.status(name).await.unwrap().power, PowerState::Running);
    wait_ssh_banner(ip).await;
    let out = ssh_run(ip, &src.host_keys, &admin, "hostname; sudo -n ls /root").await;
    assert_eq!(out.lines().next(), Some("snap1"), "{out}");
    assert!(!out.contains("after-snapshot"), "{out}");
    assert!(matches!(
        d.snapshot_revert(name, "nope").await,
        Err(DriverError::NotFound(_))
    ));

    // Clone: the source's disk, a new identity.
    let clone = plan("keel-nt-clone", "clone1", 13, 9, cb.port, &admin);
    let cname = clone.spec.name.as_str();
    fx.track(cname);
    let t = Instant::now();
    let info = d.clone_vm(name, &clone.spec).await.unwrap();
    eprintln!("timings: clone (running source) {:?}", t.elapsed());
    assert_eq!(info.power, PowerState::Stopped);
    d.clone_vm(name, &clone.spec).await.unwrap(); // idempotent
    let t = Instant::now();
    d.start(cname).await.unwrap();
    let ph = cb.wait_for(cname).await;
    eprintln!("timings: clone start -> phone_home {:?}", ph.at - t);
    assert!(
        parse_form(&ph.body).contains(&("hostname".into(), "clone1".into())),
        "{}",
        ph.body
    );
    let cip = clone.net.ipv4.unwrap();
    wait_ssh_banner(cip).await;
    let out = ssh_run(
        cip,
        &clone.host_keys,
        &admin,
        "hostname; cat /etc/machine-id; ip -o -4 addr show dev eth0",
    )
    .await;
    assert!(out.starts_with("clone1\n"), "{out}");
    assert!(out.contains("10.231.13.9/24"), "{out}");
    let src_id = ssh_run(ip, &src.host_keys, &admin, "cat /etc/machine-id").await;
    assert_ne!(
        out.lines().nth(1),
        src_id.lines().next(),
        "clone shares the machine-id"
    );

    d.snapshot_delete(name, "before").await.unwrap();
    d.snapshot_delete(name, "before").await.unwrap();
    assert!(d.snapshot_list(name).await.unwrap().is_empty());
    for n in [name, cname] {
        d.delete(n).await.unwrap();
        assert!(!netns_exists(n));
    }
}

/// Run by [`containers_outlive_a_killed_panel_process`] in a child process
/// (the "panel"): creates and starts the container, says so, then waits to
/// be killed.
#[test]
#[ignore = "helper: run by containers_outlive_a_killed_panel_process"]
fn helper_start_and_wait_to_be_killed() {
    let Ok(spec) = std::env::var("KEEL_NSPAWN_HELPER_SPEC") else {
        return;
    };
    let spec: VmSpec = serde_json::from_str(&spec).unwrap();
    let mut cfg = NspawnConfig::new(ImageStore::new(IMAGES));
    cfg.state_dir = std::env::var("KEEL_NSPAWN_HELPER_STATE").unwrap().into();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let d = NspawnDriver::new(cfg);
        d.create(&spec).await.unwrap();
        d.start(&spec.name).await.unwrap();
        println!("STARTED");
        tokio::time::sleep(Duration::from_secs(600)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_a_killed_panel_process() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new();
    let mut cb = Callbacks::start().await;
    let admin = HostKeys::generate("admin").unwrap();
    let p = plan("keel-nt-orphan", "orphan1", 14, 5, cb.port, &admin);
    let name = p.spec.name.as_str();
    fx.track(name);

    let mut panel = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_start_and_wait_to_be_killed",
            "--nocapture",
        ])
        .env(
            "KEEL_NSPAWN_HELPER_SPEC",
            serde_json::to_string(&p.spec).unwrap(),
        )
        .env("KEEL_NSPAWN_HELPER_STATE", &fx.cfg.state_dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = panel.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("STARTED") {
        let n = tokio::time::timeout(BOOT_TIMEOUT, stdout.read(&mut buf))
            .await
            .expect("helper did not start the container")
            .unwrap();
        assert!(n > 0, "helper exited: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // SIGKILL mid-boot: no chance to clean up anything.
    panel.start_kill().unwrap();
    panel.wait().await.unwrap();

    // The container keeps booting and a fresh driver finds it running.
    cb.wait_for(name).await;
    wait_ssh_banner(p.net.ipv4.unwrap()).await;
    let fresh = NspawnDriver::new(fx.cfg.clone());
    let listed: Vec<_> = fresh
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.name, v.power))
        .collect();
    assert_eq!(listed, [(name.to_string(), PowerState::Running)]);
    // Creating it again (the resumed flow retries) changes nothing.
    fresh.create(&p.spec).await.unwrap();
    assert_eq!(fresh.status(name).await.unwrap().power, PowerState::Running);
    fresh.delete(name).await.unwrap();
    assert!(!netns_exists(name));
    assert!(!link_exists(&veth_name(name)));
}
