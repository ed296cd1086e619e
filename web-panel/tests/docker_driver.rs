//! The docker driver against a real `dockerd` (Debian's docker.io) that
//! each test starts for itself: its own data root, exec root, pid file and
//! socket, no default bridge and no iptables rules, torn down at the end.
//! Docker picks its storage driver; on this kind of machine (ext4 under
//! `/tmp`) that is overlay2.
//!
//! No registry is reachable, so the test image is imported from a tar of
//! a tiny rootfs made here: dash, sleep, cat, head and tail from this
//! machine with their libraries.
//!
//! Needs root and `dockerd`; skips (with a message) otherwise, and fails
//! instead when `KEEL_REQUIRE_REAL` is set (scripts/test sets it and
//! installs docker.io).

mod api_support;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    ListVolumesOptions, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use keel_panel::hypervisor::docker::{
    DockerDriver, DockerEndpoint, DockerSettings, LABEL_CLONE_FOR, LABEL_SNAPSHOT_OF, LABEL_VM,
};
use keel_panel::hypervisor::faulty::FaultyDriver;
use keel_panel::hypervisor::{
    Attachment, Driver, DriverError, NetIdentity, PowerState, SeedData, VmSpec, DEFAULT_PREFIX6,
};

/// The test image: `keel-test/<IMAGE>`.
const IMAGE: &str = "tiny";
/// The same rootfs with a `VOLUME /data`, so containers get an anonymous volume.
const IMAGE_WITH_VOLUME: &str = "tiny-vol";
/// PID 1 of the test containers: ends at SIGTERM (a shutdown), so a
/// graceful stop exits 0 and a kill 137.
const INIT: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn dockerd_binary() -> Option<PathBuf> {
    ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn can_run() -> bool {
    let ok = is_root() && dockerd_binary().is_some();
    if !ok {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, so this test may not skip: needs root and dockerd (apt install docker.io)"
        );
        eprintln!("SKIP: needs root and dockerd (apt install docker.io)");
    }
    ok
}

/// TLS files for the daemon's TCP listener and for clients.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    /// A CA, the daemon's certificate for 127.0.0.1, a client certificate
    /// from that CA, and one from a CA the daemon does not trust.
    fn make(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, cn.to_string());
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            let issuer = rcgen::Issuer::new(p, key);
            (cert, issuer)
        };
        let leaf = |sans: Vec<String>,
                    purpose: rcgen::ExtendedKeyUsagePurpose,
                    issuer: &rcgen::Issuer<'_, KeyPair>| {
            let mut p = CertificateParams::new(sans).unwrap();
            p.extended_key_usages = vec![purpose];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (ca_cert, ca_issuer) = ca("keel test docker CA");
        let (_, other_issuer) = ca("some other CA");
        let (server, server_key) = leaf(
            vec!["127.0.0.1".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            &ca_issuer,
        );
        let (client, client_key) = leaf(
            vec!["keel-panel".into()],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            &ca_issuer,
        );
        let (stranger, stranger_key) = leaf(
            vec!["keel-panel".into()],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            &other_issuer,
        );
        std::fs::create_dir_all(dir).unwrap();
        for (name, pem) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server),
            ("server-key.pem", server_key),
            ("client.pem", client),
            ("client-key.pem", client_key),
            ("stranger.pem", stranger),
            ("stranger-key.pem", stranger_key),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Pki {
            dir: dir.to_path_buf(),
        }
    }
}

/// One dockerd of this test's own.
struct Daemon {
    tmp: tempfile::TempDir,
    child: Option<Child>,
    socket: PathBuf,
    /// `127.0.0.1:port` of the TLS listener, when asked for.
    tcp: Option<String>,
    pki: Option<Pki>,
    docker: Docker,
}

impl Daemon {
    async fn start() -> Daemon {
        Self::start_with(false).await
    }

    async fn start_with(tls: bool) -> Daemon {
        let bin = dockerd_binary().expect("dockerd");
        let tmp = tempfile::Builder::new()
            .prefix("keel-dockerd-")
            .tempdir()
            .unwrap();
        let socket = PathBuf::from(format!(
            "/run/keel-test-docker-{}-{}.sock",
            std::process::id(),
            fastrand::u32(..)
        ));
        let log = std::fs::File::create(tmp.path().join("dockerd.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--data-root")
            .arg(tmp.path().join("data"))
            .arg("--exec-root")
            .arg(tmp.path().join("exec"))
            .arg("--pidfile")
            .arg(tmp.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            // No docker0 and no rules in this machine's firewall; the
            // test that needs a network makes its own.
            // No forwarding: dockerd would turn on this machine's IPv4
            // forwarding, which other tests' namespaces inherit.
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            // Its own containerd, not a system one.
            .args([
                "--containerd-namespace",
                "keel-test",
                "--containerd-plugins-namespace",
                "keel-test-plugins",
            ]);
        let mut tcp = None;
        let mut pki = None;
        if tls {
            let p = Pki::make(&tmp.path().join("pki"));
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let addr = format!("127.0.0.1:{port}");
            cmd.arg("-H")
                .arg(format!("tcp://{addr}"))
                .arg("--tlsverify")
                .arg("--tlscacert")
                .arg(p.path("ca.pem"))
                .arg("--tlscert")
                .arg(p.path("server.pem"))
                .arg("--tlskey")
                .arg(p.path("server-key.pem"));
            tcp = Some(addr);
            pki = Some(p);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning dockerd");
        let mut d = Daemon {
            docker: placeholder_client(),
            tmp,
            child: Some(child),
            socket,
            tcp,
            pki,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited with {status}:\n{}", d.log_tail());
            }
            if d.socket.exists() {
                if let Ok(c) = Docker::connect_with_unix(
                    &d.socket.to_string_lossy(),
                    60,
                    bollard::API_DEFAULT_VERSION,
                ) {
                    if let Ok(c) = c.negotiate_version().await {
                        if c.ping().await.is_ok() {
                            d.docker = c;
                            break;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 90 s:\n{}",
                d.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let info = d.docker.info().await.unwrap();
        eprintln!(
            "dockerd {} up: storage driver {:?}, cgroup {:?} {:?}",
            info.server_version.unwrap_or_default(),
            info.driver.unwrap_or_default(),
            info.cgroup_driver,
            info.cgroup_version
        );
        d.import_images().await;
        d
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.tmp.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `keel-test/tiny` and `keel-test/tiny-vol` from a tar of a tiny rootfs.
    async fn import_images(&self) {
        let tar = tiny_rootfs_tar();
        for (name, changes) in [
            (IMAGE, vec![]),
            (IMAGE_WITH_VOLUME, vec!["VOLUME /data".to_string()]),
        ] {
            let options = CreateImageOptionsBuilder::new()
                .from_src("-")
                .repo(&format!("keel-test/{name}"))
                .tag("latest")
                .changes(changes)
                .build();
            let mut s = self
                .docker
                .create_image(
                    Some(options),
                    Some(bollard::body_full(tar.clone().into())),
                    None,
                )
                .boxed();
            while let Some(r) = s.next().await {
                r.unwrap();
            }
        }
    }

    fn settings(&self) -> DockerSettings {
        let mut s = DockerSettings::new(DockerEndpoint::Unix(self.socket.clone()));
        s.prefix = "keel-".into();
        s.image_prefix = "keel-test/".into();
        s.network = "none".into();
        s.command = vec!["/bin/sh".into(), "-c".into(), INIT.into()];
        s.stop_timeout = Duration::from_secs(10);
        s.request_timeout = Duration::from_secs(60);
        s
    }

    fn driver(&self) -> DockerDriver {
        DockerDriver::new(self.settings())
    }

    /// Stops dockerd (SIGTERM, then SIGKILL after 30 s).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every container, by name (without the leading `/`).
    async fn container_names(&self) -> Vec<String> {
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let mut names: Vec<String> = self
            .docker
            .list_containers(Some(options))
            .await
            .unwrap()
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_string())
            .collect();
        names.sort();
        names
    }

    /// Every image tag.
    async fn image_tags(&self) -> Vec<String> {
        let options = ListImagesOptionsBuilder::new().all(true).build();
        let mut tags: Vec<String> = self
            .docker
            .list_images(Some(options))
            .await
            .unwrap()
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect();
        tags.sort();
        tags
    }

    /// Images labelled `key=vm`.
    async fn images_labelled(&self, key: &str, vm: &str) -> usize {
        let filters = HashMap::from([("label", vec![format!("{key}={vm}")])]);
        let options = ListImagesOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker.list_images(Some(options)).await.unwrap().len()
    }

    async fn inspect(&self, name: &str) -> bollard::models::ContainerInspectResponse {
        self.docker.inspect_container(name, None).await.unwrap()
    }

    /// Runs `script` with `sh -c` in container `name`: (exit code, output).
    async fn exec(&self, name: &str, script: &str) -> (i64, String) {
        let created = self
            .docker
            .create_exec(
                name,
                CreateExecOptions {
                    cmd: Some(vec!["/bin/sh", "-c", script]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&created.id, None).await.unwrap()
        {
            while let Some(chunk) = output.next().await {
                out.push_str(&chunk.unwrap().to_string());
            }
        }
        let code = loop {
            let i = self.docker.inspect_exec(&created.id).await.unwrap();
            if i.running != Some(true) {
                break i.exit_code.unwrap_or(-1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        (code, out)
    }
}

/// A client that is replaced before use (the struct needs one while the
/// daemon starts).
fn placeholder_client() -> Docker {
    Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION).unwrap()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Containers first, so nothing of theirs stays mounted.
            let docker = self.docker.clone();
            let cleanup = async move {
                let options = ListContainersOptionsBuilder::new().all(true).build();
                if let Ok(list) = docker.list_containers(Some(options)).await {
                    for c in list {
                        if let Some(id) = c.id {
                            let o = RemoveContainerOptionsBuilder::new()
                                .force(true)
                                .v(true)
                                .build();
                            let _ = docker.remove_container(&id, Some(o)).await;
                        }
                    }
                }
            };
            // Drop may run inside or outside a runtime.
            std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(cleanup)
                });
            });
        }
        self.stop();
        // Whatever dockerd left mounted under its roots.
        let root = self.tmp.path().to_string_lossy().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A tar of a rootfs with dash (as `sh`), sleep, cat, head and tail, and
/// the libraries they load.
fn tiny_rootfs_tar() -> Vec<u8> {
    let mut files: Vec<PathBuf> = Vec::new();
    let bins = [
        "/bin/dash",
        "/bin/sleep",
        "/bin/cat",
        "/usr/bin/head",
        "/usr/bin/tail",
    ];
    for bin in bins {
        files.push(PathBuf::from(bin));
        let out = Command::new("ldd").arg(bin).output().expect("ldd");
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if word.starts_with('/') {
                files.push(PathBuf::from(word));
            }
        }
    }
    files.sort();
    files.dedup();
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for d in [
        "bin", "proc", "sys", "dev", "etc", "tmp", "data", "usr", "usr/bin",
    ] {
        dir(&mut b, d);
    }
    for f in &files {
        // Into /bin for programs, at their own path for libraries.
        let inside = if bins.contains(&f.to_str().unwrap()) {
            PathBuf::from("bin").join(f.file_name().unwrap())
        } else {
            f.strip_prefix("/").unwrap().to_path_buf()
        };
        let data = std::fs::read(std::fs::canonicalize(f).unwrap()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, &inside, data.as_slice()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "bin/sh", "dash").unwrap();
    b.into_inner().unwrap()
}

fn net(host: &str, ipv4: Option<Ipv4Addr>) -> NetIdentity {
    NetIdentity {
        hostname: host.to_string(),
        ipv4,
        prefix4: 24,
        gateway4: ipv4.map(|_| Ipv4Addr::new(10, 233, 27, 1)),
        ipv6: None,
        prefix6: DEFAULT_PREFIX6,
        gateway6: None,
        attach: Attachment::Private,
    }
}

fn spec(name: &str, cpus: u32, ram_mb: u64) -> VmSpec {
    VmSpec {
        name: name.to_string(),
        cpus,
        ram_mb,
        disk_gb: 2,
        image: IMAGE.to_string(),
        seed: SeedData {
            meta_data: format!("instance-id: {name}\n"),
            user_data: "#cloud-config\n".into(),
            network_config: "version: 2\n".into(),
        },
        net: net(&format!("{name}.example.org"), None),
    }
}

fn labels_of(c: &bollard::models::ContainerInspectResponse) -> HashMap<String, String> {
    c.config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

/// The CPU weight of the cgroup that holds a container's own group, raised
/// to the largest while this lives and put back when it is dropped.
struct ParentWeight {
    file: PathBuf,
    old: String,
}

impl ParentWeight {
    /// From the container's init process's `/proc/PID/cgroup`: cgroup v1's
    /// `cpu.shares` in the hierarchy that has the `cpu` controller, or v2's
    /// `cpu.weight`. `None` when neither can be written (the test then runs
    /// with the weights as they are).
    fn raise(pid: i64) -> Option<ParentWeight> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let Some(parent) = Path::new(path).parent() else {
                continue;
            };
            let rel = parent.strip_prefix("/").unwrap_or(parent);
            if rel.as_os_str().is_empty() {
                continue;
            }
            let (file, value) = if ctrls.split(',').any(|c| c == "cpu") {
                let base = Path::new("/sys/fs/cgroup").join(ctrls);
                (base.join(rel).join("cpu.shares"), "262144")
            } else if ctrls.is_empty() {
                let base = Path::new("/sys/fs/cgroup");
                (base.join(rel).join("cpu.weight"), "10000")
            } else {
                continue;
            };
            let Ok(old) = std::fs::read_to_string(&file) else {
                continue;
            };
            if std::fs::write(&file, value).is_ok() {
                eprintln!("{} raised from {} to {value}", file.display(), old.trim());
                return Some(ParentWeight {
                    file,
                    old: old.trim().to_string(),
                });
            }
        }
        None
    }
}

impl Drop for ParentWeight {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.file, &self.old);
    }
}

/// Reads a cgroup file of the container, v2 name first, then v1.
async fn cgroup_file(d: &Daemon, name: &str, v2: &str, v1: &str) -> String {
    let script = format!("cat /sys/fs/cgroup/{v2} 2>/dev/null || cat /sys/fs/cgroup/{v1}");
    let (code, out) = d.exec(name, &script).await;
    assert_eq!(code, 0, "{script}: {out}");
    out
}

fn stat_key(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().parse::<u64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_twice_gives_one_container_with_the_specs_limits() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let driver = d.driver();
    let s = spec("keel-t-create", 2, 96);
    let a = driver.create(&s).await.unwrap();
    let b = driver.create(&s).await.unwrap();
    assert_eq!(a, b, "a repeated create returns the same container");
    assert_eq!(a.power, PowerState::Stopped);
    assert_eq!(a.ssh_endpoint, None);
    assert_eq!(d.container_names().await, ["keel-t-create"]);
    assert_eq!(driver.list().await.unwrap(), vec![a.clone()]);

    let c = d.inspect("keel-t-create").await;
    assert_eq!(c.id.as_deref(), Some(a.vm_ref.as_str()));
    let host = c.host_config.clone().unwrap();
    assert_eq!(host.nano_cpus, Some(2_000_000_000));
    assert_eq!(host.memory, Some(96 << 20));
    assert_eq!(host.memory_swap, Some(96 << 20), "no swap beyond the limit");
    let config = c.config.clone().unwrap();
    assert_eq!(config.image.as_deref(), Some("keel-test/tiny"));
    assert_eq!(config.hostname.as_deref(), Some("keel-t-create"));
    let labels = labels_of(&c);
    assert_eq!(labels[LABEL_VM], "keel-t-create");
    assert_eq!(labels["org.keel.disk-gb"], "2");
    assert_eq!(labels["org.keel.image"], IMAGE);

    // The images table wins over the prefix.
    let mut settings = d.settings();
    settings
        .images
        .insert("debian-bookworm".into(), "keel-test/tiny:latest".into());
    let mapped = DockerDriver::new(settings);
    let mut s2 = spec("keel-t-mapped", 1, 64);
    s2.image = "debian-bookworm".into();
    mapped.create(&s2).await.unwrap();
    assert_eq!(
        d.inspect("keel-t-mapped")
            .await
            .config
            .unwrap()
            .image
            .as_deref(),
        Some("keel-test/tiny:latest")
    );

    // An image that is not on the node, and bad specs, are permanent.
    let mut missing = spec("keel-t-noimage", 1, 64);
    missing.image = "no-such-image".into();
    let err = driver.create(&missing).await.unwrap_err();
    assert!(
        matches!(err, DriverError::Permanent(ref m) if m.contains("keel-test/no-such-image")),
        "{err:?}"
    );
    for bad in [
        spec("keel-T-upper", 1, 64),
        spec("keel-t-zero-cpus", 0, 64),
        spec("keel-t-tiny-memory", 1, 2),
        spec("other-prefix", 1, 64),
    ] {
        let err = driver.create(&bad).await.unwrap_err();
        assert!(
            matches!(err, DriverError::Permanent(_)),
            "{}: {err:?}",
            bad.name
        );
    }
    assert_eq!(
        d.container_names().await,
        ["keel-t-create", "keel-t-mapped"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_limits_are_enforced_by_the_kernel() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let driver = d.driver();
    let name = "keel-t-limits";
    driver.create(&spec(name, 1, 64)).await.unwrap();
    driver.start(name).await.unwrap();

    // The limits as the container's cgroup has them.
    let mem = cgroup_file(&d, name, "memory.max", "memory/memory.limit_in_bytes").await;
    assert_eq!(mem.trim(), (64u64 << 20).to_string());
    let quota = cgroup_file(&d, name, "cpu.max", "cpu/cpu.cfs_quota_us").await;
    let period = if quota.contains(' ') {
        quota.split_whitespace().nth(1).unwrap().to_string()
    } else {
        cgroup_file(&d, name, "cpu.max", "cpu/cpu.cfs_period_us").await
    };
    let quota = quota
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let period = period.trim().parse::<u64>().unwrap();
    assert_eq!(quota, period, "one CPU's worth of time per period");

    // Memory: 16 MB fit, 200 MB do not; tail keeps input without a
    // newline in memory, and the kernel kills it (SIGKILL: 137) rather
    // than letting it grow.
    let (code, out) = d
        .exec(name, "head -c 16000000 /dev/zero | tail >/dev/null")
        .await;
    assert_eq!(code, 0, "16 MB must fit in 64 MB: {out}");
    let (code, out) = d
        .exec(name, "head -c 200000000 /dev/zero | tail >/dev/null")
        .await;
    assert_eq!(code, 137, "200 MB must not fit in 64 MB: {out}");
    // The kernel's own count of OOM kills in the container's group.
    let (_, events) = d
        .exec(
            name,
            "cat /sys/fs/cgroup/memory.events 2>/dev/null || cat /sys/fs/cgroup/memory/memory.oom_control",
        )
        .await;
    assert_eq!(stat_key(&events, "oom_kill "), 1, "{events}");
    assert_eq!(
        driver.status(name).await.unwrap().power,
        PowerState::Running,
        "only the process over the limit dies"
    );

    // CPU: four busy loops for four seconds get one CPU between them,
    // and the kernel throttles the group to keep it there. The largest
    // weight makes the container win against whatever else runs here, so
    // it reaches its limit even on a busy machine: its own weight counts
    // only against other containers, so the group holding the containers
    // (`/docker`) gets the largest weight too for the while. (Without it,
    // on a machine busy with other tests' VMs and containers, the loops got
    // 0.39 CPUs and were never throttled.)
    d.docker
        .update_container(
            name,
            bollard::models::ContainerUpdateBody {
                cpu_shares: Some(262_144),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let pid = d
        .docker
        .inspect_container(name, None)
        .await
        .unwrap()
        .state
        .and_then(|s| s.pid)
        .expect("the container's init pid");
    let _weight = ParentWeight::raise(pid);
    let stat = "cat /sys/fs/cgroup/cpu.stat 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.stat";
    let before = stat_key(&d.exec(name, stat).await.1, "nr_throttled ");
    let cpu_before = driver.stats(name).await.unwrap().cpu_ns.unwrap();
    let t0 = Instant::now();
    let (code, out) = d
        .exec(
            name,
            "p=; for n in 1 2 3 4; do (while :; do :; done) & p=\"$p $!\"; done; sleep 4; kill $p",
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let wall = t0.elapsed();
    let stats = driver.stats(name).await.unwrap();
    let after = stat_key(&d.exec(name, stat).await.1, "nr_throttled ");
    let used = (stats.cpu_ns.unwrap() - cpu_before) as f64 / wall.as_nanos() as f64;
    eprintln!(
        "busy loops used {used:.2} CPUs; throttled {} times",
        after - before
    );
    assert!(after > before, "the CPU limit throttled the loops");
    assert!(
        used < 1.3,
        "four loops used {used:.2} CPUs under a 1-CPU limit"
    );
    assert!(used > 0.3, "the loops ran at all ({used:.2} CPUs)");
    assert_eq!(stats.cpus, 1);
    assert_eq!(stats.memory_total, Some(64 << 20));
    assert!(stats.memory_used.unwrap() > 0);
    assert!(stats.memory_used.unwrap() <= 64 << 20);
    // A container without a network has no interface to count.
    assert_eq!(stats.net_rx_bytes, None);
    driver.delete(name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_operations_and_their_idempotency() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let driver = d.driver();
    let name = "keel-t-power";
    let created = driver.create(&spec(name, 1, 64)).await.unwrap();
    driver.start(name).await.unwrap();
    driver.start(name).await.unwrap();
    let running = driver.status(name).await.unwrap();
    assert_eq!(running.power, PowerState::Running);
    assert_eq!(running.vm_ref, created.vm_ref);
    let pid =
        |c: &bollard::models::ContainerInspectResponse| c.state.as_ref().unwrap().pid.unwrap();
    let first_pid = pid(&d.inspect(name).await);

    driver.reset(name).await.unwrap();
    let after_reset = d.inspect(name).await;
    assert_eq!(
        driver.status(name).await.unwrap().power,
        PowerState::Running
    );
    assert_ne!(pid(&after_reset), first_pid, "a reset starts new processes");

    // Shutdown: the container's init gets SIGTERM and exits by itself.
    let t0 = Instant::now();
    driver.shutdown(name).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "it stopped at SIGTERM, not at the kill"
    );
    assert_eq!(
        driver.status(name).await.unwrap().power,
        PowerState::Stopped
    );
    assert_eq!(d.inspect(name).await.state.unwrap().exit_code, Some(0));
    driver.shutdown(name).await.unwrap();

    // Power off: SIGKILL.
    driver.start(name).await.unwrap();
    driver.power_off(name).await.unwrap();
    assert_eq!(
        driver.status(name).await.unwrap().power,
        PowerState::Stopped
    );
    assert_eq!(d.inspect(name).await.state.unwrap().exit_code, Some(137));
    driver.power_off(name).await.unwrap();
    assert_eq!(
        driver.status(name).await.unwrap().vm_ref,
        created.vm_ref,
        "power never replaces the container"
    );

    for r in [
        driver.start("keel-t-missing").await,
        driver.shutdown("keel-t-missing").await,
        driver.power_off("keel-t-missing").await,
        driver.reset("keel-t-missing").await,
    ] {
        assert!(matches!(r, Err(DriverError::NotFound(_))), "{r:?}");
    }
    assert!(matches!(
        driver.status("keel-t-missing").await,
        Err(DriverError::NotFound(_))
    ));
    driver.delete(name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_create_list_revert_delete() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let driver = d.driver();
    let name = "keel-t-snap";
    driver.create(&spec(name, 1, 80)).await.unwrap();
    driver.start(name).await.unwrap();
    assert_eq!(d.exec(name, "echo one > /tmp/state").await.0, 0);
    driver.snapshot_create(name, "s1").await.unwrap();
    driver.snapshot_create(name, "s1").await.unwrap();
    assert_eq!(d.exec(name, "echo two > /tmp/state").await.0, 0);
    driver.power_off(name).await.unwrap();
    driver.snapshot_create(name, "s2").await.unwrap();
    let names: Vec<String> = driver
        .snapshot_list(name)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    assert!(driver.snapshot_list(name).await.unwrap()[0].created_at > 1_600_000_000);
    assert!(d
        .image_tags()
        .await
        .contains(&"keel-snapshot/keel-t-snap:s1".to_string()));

    // Back to s1, taken while running: running again, with s1's files,
    // the same name, labels and limits, in a new container.
    let before = d.inspect(name).await;
    driver.snapshot_revert(name, "s1").await.unwrap();
    let after = d.inspect(name).await;
    assert_ne!(after.id, before.id);
    assert_eq!(
        driver.status(name).await.unwrap().power,
        PowerState::Running
    );
    assert_eq!(d.exec(name, "cat /tmp/state").await.1.trim(), "one");
    let (hb, ha) = (
        before.host_config.clone().unwrap(),
        after.host_config.clone().unwrap(),
    );
    assert_eq!((ha.memory, ha.nano_cpus), (hb.memory, hb.nano_cpus));
    assert_eq!(ha.memory, Some(80 << 20));
    let mut lb = labels_of(&before);
    let mut la = labels_of(&after);
    // Snapshot images carry their own marks; the container's are the VM's.
    for l in [&mut lb, &mut la] {
        l.retain(|k, _| {
            k.starts_with("org.keel.")
                && k != LABEL_SNAPSHOT_OF
                && k != LABEL_CLONE_FOR
                && k != "org.keel.snapshot-running"
        });
    }
    assert_eq!(la, lb);
    assert_eq!(d.container_names().await, [name], "no container left over");

    // s2 was taken stopped: the VM is stopped after the revert.
    driver.snapshot_revert(name, "s2").await.unwrap();
    assert_eq!(
        driver.status(name).await.unwrap().power,
        PowerState::Stopped
    );
    driver.start(name).await.unwrap();
    assert_eq!(d.exec(name, "cat /tmp/state").await.1.trim(), "two");

    assert!(matches!(
        driver.snapshot_revert(name, "nope").await,
        Err(DriverError::NotFound(_))
    ));
    assert!(matches!(
        driver.snapshot_create(name, "../x").await,
        Err(DriverError::Permanent(_))
    ));
    // s2 is the image the container now runs from; deleting it still
    // takes it out of the list.
    driver.snapshot_delete(name, "s2").await.unwrap();
    driver.snapshot_delete(name, "s2").await.unwrap();
    driver.snapshot_delete(name, "s1").await.unwrap();
    assert!(driver.snapshot_list(name).await.unwrap().is_empty());
    assert_eq!(
        driver.status(name).await.unwrap().power,
        PowerState::Running
    );

    driver.snapshot_create(name, "s3").await.unwrap();
    driver.delete(name).await.unwrap();
    assert!(matches!(
        driver.snapshot_list(name).await,
        Err(DriverError::NotFound(_))
    ));
    assert_eq!(d.images_labelled(LABEL_SNAPSHOT_OF, name).await, 0);
    assert!(
        !d.image_tags()
            .await
            .iter()
            .any(|t| t.starts_with("keel-snapshot/")),
        "{:?}",
        d.image_tags().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_copies_the_disk_once_with_its_own_identity() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let driver = d.driver();
    let src = driver.create(&spec("keel-t-src", 1, 64)).await.unwrap();
    driver.start("keel-t-src").await.unwrap();
    assert_eq!(
        d.exec("keel-t-src", "echo from-src > /tmp/state").await.0,
        0
    );

    let dst = spec("keel-t-dst", 2, 128);
    let a = driver.clone_vm("keel-t-src", &dst).await.unwrap();
    let b = driver.clone_vm("keel-t-src", &dst).await.unwrap();
    assert_eq!(a, b, "clone is idempotent by target");
    assert_ne!(a.vm_ref, src.vm_ref);
    assert_eq!(a.power, PowerState::Stopped);
    driver.start("keel-t-dst").await.unwrap();
    assert_eq!(
        d.exec("keel-t-dst", "cat /tmp/state").await.1.trim(),
        "from-src"
    );
    let c = d.inspect("keel-t-dst").await;
    let host = c.host_config.clone().unwrap();
    assert_eq!(host.nano_cpus, Some(2_000_000_000));
    assert_eq!(host.memory, Some(128 << 20));
    assert_eq!(
        c.config.as_ref().unwrap().hostname.as_deref(),
        Some("keel-t-dst")
    );
    assert_eq!(labels_of(&c)[LABEL_VM], "keel-t-dst");
    // The clone writes its own disk.
    assert_eq!(
        d.exec("keel-t-dst", "echo from-dst > /tmp/state").await.0,
        0
    );
    assert_eq!(
        d.exec("keel-t-src", "cat /tmp/state").await.1.trim(),
        "from-src"
    );

    assert!(matches!(
        driver
            .clone_vm("keel-t-missing", &spec("keel-t-x", 1, 64))
            .await,
        Err(DriverError::NotFound(_))
    ));
    let mut other = spec("keel-t-y", 1, 64);
    other.image = IMAGE_WITH_VOLUME.into();
    assert!(matches!(
        driver.clone_vm("keel-t-src", &other).await,
        Err(DriverError::Permanent(_))
    ));
    let mut small = spec("keel-t-z", 1, 64);
    small.disk_gb = 1;
    assert!(matches!(
        driver.clone_vm("keel-t-src", &small).await,
        Err(DriverError::Permanent(_))
    ));
    // Deleting the source leaves the clone as it was.
    driver.delete("keel-t-src").await.unwrap();
    assert_eq!(
        driver.status("keel-t-dst").await.unwrap().power,
        PowerState::Running
    );
    assert_eq!(
        d.exec("keel-t-dst", "cat /tmp/state").await.1.trim(),
        "from-dst"
    );
    driver.delete("keel-t-dst").await.unwrap();
    assert_eq!(d.images_labelled(LABEL_CLONE_FOR, "keel-t-dst").await, 0);
    assert!(d.container_names().await.is_empty());
    assert_eq!(
        d.image_tags().await,
        ["keel-test/tiny-vol:latest", "keel-test/tiny:latest"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_idempotent_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let driver = d.driver();
    let name = "keel-t-delete";
    let mut s = spec(name, 1, 64);
    s.image = IMAGE_WITH_VOLUME.into();
    driver.create(&s).await.unwrap();
    driver.start(name).await.unwrap();
    assert_eq!(d.exec(name, "echo x > /data/file").await.0, 0);
    let volumes = |d: &Daemon| {
        let docker = d.docker.clone();
        async move {
            docker
                .list_volumes(None::<ListVolumesOptions>)
                .await
                .unwrap()
                .volumes
                .unwrap_or_default()
                .len()
        }
    };
    assert_eq!(volumes(&d).await, 1, "the image's VOLUME made one");
    driver.snapshot_create(name, "s").await.unwrap();
    driver.delete(name).await.unwrap();
    assert!(d.container_names().await.is_empty());
    assert_eq!(volumes(&d).await, 0, "its volume went with it");
    assert_eq!(d.images_labelled(LABEL_SNAPSHOT_OF, name).await, 0);
    assert_eq!(
        d.image_tags().await,
        ["keel-test/tiny-vol:latest", "keel-test/tiny:latest"]
    );
    assert!(matches!(
        driver.status(name).await,
        Err(DriverError::NotFound(_))
    ));
    driver.delete(name).await.unwrap();
    for r in [
        driver.start(name).await,
        driver.snapshot_create(name, "s").await,
        driver.snapshot_delete(name, "s").await,
    ] {
        assert!(matches!(r, Err(DriverError::NotFound(_))), "{r:?}");
    }
    // The name can be used again.
    driver.create(&s).await.unwrap();
    driver.delete(name).await.unwrap();
    assert!(d.container_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_only_keels_containers_with_the_prefix() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let driver = d.driver();
    driver.create(&spec("keel-t-b", 1, 64)).await.unwrap();
    driver.create(&spec("keel-t-a", 1, 64)).await.unwrap();
    driver.start("keel-t-a").await.unwrap();
    // Another panel's containers (another prefix) ...
    let mut other = d.settings();
    other.prefix = "other-".into();
    DockerDriver::new(other)
        .create(&spec("other-1", 1, 64))
        .await
        .unwrap();
    // ... and one Keel did not make, though its name has the prefix.
    d.docker
        .create_container(
            Some(
                bollard::query_parameters::CreateContainerOptionsBuilder::new()
                    .name("keel-foreign")
                    .build(),
            ),
            bollard::models::ContainerCreateBody {
                image: Some("keel-test/tiny".into()),
                cmd: Some(vec!["/bin/sleep".into(), "1000".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let listed = driver.list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["keel-t-a", "keel-t-b"]);
    assert_eq!(listed[0].power, PowerState::Running);
    assert_eq!(listed[1].power, PowerState::Stopped);

    // The driver never takes over or removes a container it did not make.
    let mut foreign = spec("keel-foreign", 1, 64);
    foreign.net.hostname = "foreign".into();
    assert!(matches!(
        driver.create(&foreign).await,
        Err(DriverError::Permanent(_))
    ));
    assert!(matches!(
        driver.delete("keel-foreign").await,
        Err(DriverError::Permanent(_))
    ));
    assert!(d
        .container_names()
        .await
        .contains(&"keel-foreign".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_daemon_is_unavailable() {
    if !can_run() {
        return;
    }
    // A socket that never existed.
    let mut settings =
        DockerSettings::new(DockerEndpoint::Unix("/run/keel-no-such-docker.sock".into()));
    settings.image_prefix = "keel-test/".into();
    let nowhere = DockerDriver::new(settings);
    for err in [
        nowhere.status("keel-t-x").await.unwrap_err(),
        nowhere.list().await.unwrap_err(),
        nowhere.create(&spec("keel-t-x", 1, 64)).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, DriverError::Unavailable(_)) && err.is_retryable(),
            "{err:?}"
        );
    }

    // A daemon that goes away under a working driver.
    let mut d = Daemon::start().await;
    let driver = d.driver();
    driver.create(&spec("keel-t-dead", 1, 64)).await.unwrap();
    d.stop();
    for err in [
        driver.status("keel-t-dead").await.unwrap_err(),
        driver.list().await.unwrap_err(),
        driver.start("keel-t-dead").await.unwrap_err(),
        driver.delete("keel-t-dead").await.unwrap_err(),
    ] {
        assert!(
            matches!(err, DriverError::Unavailable(_)) && err.is_retryable(),
            "{err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_with_tls_needs_the_client_certificate() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(true).await;
    let pki = d.pki.as_ref().unwrap();
    let tls = |cert: &str, key: &str| {
        let mut s = d.settings();
        s.endpoint = DockerEndpoint::Tls {
            address: d.tcp.clone().unwrap(),
            ca_file: pki.path("ca.pem"),
            cert_file: pki.path(cert),
            key_file: pki.path(key),
        };
        DockerDriver::new(s)
    };
    let driver = tls("client.pem", "client-key.pem");
    let info = driver.create(&spec("keel-t-tls", 1, 64)).await.unwrap();
    driver.start("keel-t-tls").await.unwrap();
    assert_eq!(driver.list().await.unwrap()[0].vm_ref, info.vm_ref);
    assert_eq!(d.inspect("keel-t-tls").await.id, Some(info.vm_ref.clone()));

    // A certificate from a CA the daemon does not trust gets nothing.
    let stranger = tls("stranger.pem", "stranger-key.pem");
    assert!(stranger.list().await.is_err());
    assert!(stranger.delete("keel-t-tls").await.is_err());
    assert_eq!(
        driver.status("keel-t-tls").await.unwrap().power,
        PowerState::Running
    );
    driver.delete("keel-t-tls").await.unwrap();
}

/// On a user-defined network the container gets its pool address
/// (10.233.27.0/24 is this test's), and keeps it through a revert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_network_gives_the_container_its_pool_address() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let network = "keel-t27";
    d.docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.into(),
            driver: Some("bridge".into()),
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some("10.233.27.0/24".into()),
                    gateway: Some("10.233.27.1".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            options: Some(HashMap::from([(
                "com.docker.network.bridge.name".to_string(),
                format!("kt27-{}", std::process::id() % 100_000),
            )])),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut settings = d.settings();
    settings.network = network.into();
    let driver = DockerDriver::new(settings);
    let name = "keel-t-net";
    let mut s = spec(name, 1, 64);
    s.net = net("www.example.org", Some(Ipv4Addr::new(10, 233, 27, 10)));
    driver.create(&s).await.unwrap();
    driver.start(name).await.unwrap();
    let addr_of = |c: bollard::models::ContainerInspectResponse| {
        c.network_settings.unwrap().networks.unwrap()[network]
            .ip_address
            .clone()
            .unwrap()
    };
    assert_eq!(addr_of(d.inspect(name).await), "10.233.27.10");
    let (_, trie) = d.exec(name, "cat /proc/net/fib_trie").await;
    assert!(trie.contains("10.233.27.10"), "{trie}");
    assert_eq!(
        d.inspect(name).await.config.unwrap().hostname.as_deref(),
        Some("www")
    );
    let stats = driver.stats(name).await.unwrap();
    assert!(stats.net_rx_bytes.is_some() && stats.net_tx_bytes.is_some());

    driver.snapshot_create(name, "s").await.unwrap();
    driver.snapshot_revert(name, "s").await.unwrap();
    assert_eq!(
        driver.status(name).await.unwrap().power,
        PowerState::Running
    );
    assert_eq!(addr_of(d.inspect(name).await), "10.233.27.10");
    driver.delete(name).await.unwrap();
    d.docker.remove_network(network).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_faults_converge_without_duplicates() {
    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let clean = d.driver();
    let seed = std::env::var("KEEL_DOCKER_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(1..));
    eprintln!("fault seed {seed} (KEEL_DOCKER_FAULT_SEED replays it)");
    let faulty = FaultyDriver::new(d.driver(), 0.3, seed);
    use keel_panel::hypervisor::faulty::retry_faults as retry;
    let specs: Vec<VmSpec> = (0..5).map(|i| spec(&format!("keel-f{i}"), 1, 64)).collect();
    let wanted: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    // Two passes, as a retried job and a resumed flow would.
    for _ in 0..2 {
        for s in &specs {
            retry("create", || faulty.create(s)).await;
            retry("start", || faulty.start(&s.name)).await;
            retry("snapshot", || faulty.snapshot_create(&s.name, "first")).await;
        }
    }
    let clone = spec("keel-fclone", 1, 64);
    for _ in 0..2 {
        retry("clone", || faulty.clone_vm("keel-f0", &clone)).await;
        retry("revert", || faulty.snapshot_revert("keel-f1", "first")).await;
    }
    let mut all = wanted.clone();
    all.push(clone.name.clone());
    all.sort();
    assert_eq!(
        d.container_names().await,
        all,
        "one container per VM, nothing else"
    );
    let listed: Vec<String> = retry("list", || faulty.list())
        .await
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(listed, all);
    for s in &specs {
        assert_eq!(
            clean.status(&s.name).await.unwrap().power,
            PowerState::Running
        );
        let snaps = clean.snapshot_list(&s.name).await.unwrap();
        assert_eq!(snaps.len(), 1, "{}: {snaps:?}", s.name);
    }
    for _ in 0..2 {
        for name in &all {
            retry("delete", || faulty.delete(name)).await;
        }
    }
    let (before, after) = faulty.injected();
    eprintln!("faults injected: {before} before the call, {after} after it");
    assert!(before > 0 && after > 0, "before={before} after={after}");
    assert!(clean.list().await.unwrap().is_empty());
    assert!(d.container_names().await.is_empty());
    assert_eq!(
        d.image_tags().await,
        ["keel-test/tiny-vol:latest", "keel-test/tiny:latest"]
    );
}

/// The panel with a `[[hypervisor.hosts]]` entry of driver `docker` (built
/// by `HostDrivers::from_config`, as `serve` builds it): a server created
/// through the API is placed on the Docker host, its container gets the
/// server type's limits, the host's capacity refuses a server too many,
/// and deleting a server removes its container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_panel_places_servers_on_a_docker_host() {
    use api_support::{Backend, Cred};
    use keel_panel::alloc::{self, AddressRecord, PoolFile};
    use keel_panel::config::HostConfig;
    use keel_panel::domain::Principal;
    use keel_panel::provision::{self, HostDrivers, Provisioner};
    use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
    use keel_panel::services::catalog;
    use serde_json::json;
    use std::sync::Arc;

    if !can_run() {
        return;
    }
    let d = Daemon::start().await;
    let socket = d.socket.clone();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let panel = api_support::start(Backend::Sqlite, move |c| {
        c.data_dir = data_dir;
        c.hypervisor.driver = "none".into();
        c.hypervisor.vm_prefix = "kd-".into();
        c.hypervisor.api_retry_secs = 1;
        // No guest calls back: the flow waits, it does not power-cycle.
        c.hypervisor.os_ready_timeout_secs = 3600;
        let mut host = HostConfig {
            name: "dock1".into(),
            driver: "docker".into(),
            vcpus: 2,
            ..HostConfig::default()
        };
        host.docker.endpoint = format!("unix://{}", socket.display());
        host.docker.network = "none".into();
        host.docker.command = vec!["/bin/sh".into(), "-c".into(), INIT.into()];
        host.docker
            .images
            .insert("debian-bookworm".into(), "keel-test/tiny:latest".into());
        c.hypervisor.hosts = vec![host];
    })
    .await;
    let config = &panel.state.config;
    let drivers = HostDrivers::from_config(config).unwrap();
    assert_eq!(drivers.common_kind(), Some("docker"));
    keel_panel::services::hosts::sync(panel.db(), &config.hypervisor)
        .await
        .unwrap();
    let prov = Arc::new(Provisioner::with_hosts(panel.db().clone(), drivers, config).unwrap());
    let mut registry = Registry::new();
    provision::register(&mut registry, prov.clone());
    let worker = Arc::new(Worker::new(
        panel.db().store().clone(),
        registry,
        WorkerConfig {
            concurrency: 4,
            queues: vec![QueueConfig::new("hypervisor"), QueueConfig::new("default")],
            poll_every: Duration::from_millis(200),
            heartbeat_every: Duration::from_millis(500),
            ..WorkerConfig::default()
        },
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));

    let system = Principal::system();
    catalog::create(
        panel.db(),
        &system,
        &catalog::NewServerType {
            name: "small".into(),
            cpus: 1,
            ram_mb: 256,
            disk_gb: 4,
            os_image: "debian-bookworm".into(),
            roles: vec![],
            stack: None,
        },
    )
    .await
    .unwrap();
    let pool = PoolFile {
        pool: "dock".into(),
        pool_type: "public".into(),
        quarantine_secs: Some(3600),
        addresses: (0..4)
            .map(|i| AddressRecord {
                hostname: format!("dock-{i}.example.org"),
                ipv4: Some(Ipv4Addr::new(10, 233, 27, 20 + i).to_string()),
                ipv6: None,
                gateway4: Some("10.233.27.1".into()),
                netmask4: Some("255.255.255.0".into()),
                gateway6: None,
                prefix6: None,
            })
            .collect(),
    };
    alloc::import(panel.db(), &system, &pool, 3600)
        .await
        .unwrap();
    let (_, owner) = panel.user("owner", false).await;
    let owner = Cred::Bearer(owner);
    let (_, admin) = panel.user("root", true).await;
    let admin = Cred::Bearer(admin);
    let site = panel
        .call(
            "POST",
            "/api/v1/sites",
            &owner,
            Some(json!({"name": "Dock Site", "owner_email": "o@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let create = || {
        panel.call(
            "POST",
            "/api/v1/services",
            &owner,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
    };
    async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !check().await {
            assert!(Instant::now() < deadline, "{what} within 120 s");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = create().await;
        assert_eq!(r.status, 201, "{}", r.json);
        assert_eq!(r.json["service"]["host"], "dock1", "{}", r.json);
        ids.push(r.json["service"]["id"].as_i64().unwrap());
    }
    for id in &ids {
        let vm = prov.vm_name(*id);
        wait_until(&format!("{vm} running on dockerd"), async || {
            d.docker
                .inspect_container(&vm, None)
                .await
                .ok()
                .and_then(|c| c.state)
                .and_then(|s| s.running)
                .unwrap_or(false)
        })
        .await;
        let c = d.inspect(&vm).await;
        let host = c.host_config.clone().unwrap();
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(labels_of(&c)[LABEL_VM], vm);
        let detail = panel
            .call("GET", &format!("/api/v1/services/{id}"), &owner, None)
            .await;
        assert_eq!(detail.json["host"], "dock1", "{}", detail.json);
    }
    let hosts = panel.call("GET", "/api/v1/admin/hosts", &admin, None).await;
    assert_eq!(hosts.json[0]["name"], "dock1", "{}", hosts.json);
    assert_eq!(hosts.json[0]["used_vcpus"], json!(2), "{}", hosts.json);
    // Two vCPUs, both taken: a third server is refused and holds nothing.
    let r = create().await;
    assert_eq!(r.status, 409, "{}", r.json);
    assert_eq!(r.json["error"], "no_capacity");

    // Deleting a server removes its container.
    let gone = prov.vm_name(ids[0]);
    let r = panel
        .call(
            "DELETE",
            &format!("/api/v1/services/{}", ids[0]),
            &owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    wait_until(&format!("{gone} removed"), async || {
        !d.container_names().await.contains(&gone)
    })
    .await;
    assert_eq!(d.container_names().await, [prov.vm_name(ids[1])]);
    stop.cancel();
}
