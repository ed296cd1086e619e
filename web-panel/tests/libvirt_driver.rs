//! The libvirt driver against libvirt's in-process test hypervisor
//! (`test:///default`): the driver's bookkeeping (idempotent create and
//! delete, power, snapshots, clone, ports, error classes) without booting
//! anything. Disks and seed ISOs are still made for real with qemu-img and
//! genisoimage, from a tiny fake image. `libvirt_vm.rs` boots a real VM.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_panel::hypervisor::faulty::FaultyDriver;
use keel_panel::hypervisor::libvirt::{DomainType, LibvirtConfig, LibvirtDriver, Networking};
use keel_panel::hypervisor::seed::{self, HostKeys, SeedParams};
use keel_panel::hypervisor::{
    Driver, DriverError, ImageStore, NetIdentity, PowerState, SeedData, VmSpec,
};

const IMAGE: &str = "debian-bookworm";
const PORTS: std::ops::RangeInclusive<u16> = 23100..=23199;

struct Env {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    driver: LibvirtDriver,
}

fn tools_present() -> bool {
    ["qemu-img", "genisoimage"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .map(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty())
            .unwrap_or(false)
    })
}

/// A driver on `test:///default` with a fake image (a 64 MiB qcow2 and
/// empty kernel files).
fn env() -> Env {
    assert!(
        tools_present(),
        "qemu-img and genisoimage are required (run scripts/libvirt-up)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("images").join(IMAGE);
    std::fs::create_dir_all(&img).unwrap();
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(img.join("disk.qcow2"))
        .arg("64M")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(img.join("vmlinuz"), b"").unwrap();
    std::fs::write(img.join("initrd.img"), b"").unwrap();
    std::fs::write(img.join("BUILT"), b"test\n").unwrap();
    let state = tmp.path().join("state");
    let mut cfg = LibvirtConfig::new(
        "test:///default",
        ImageStore::new(tmp.path().join("images")),
        &state,
    );
    cfg.domain_type = Some(DomainType::Qemu);
    cfg.networking = Networking::UserMode { ssh_ports: PORTS };
    Env {
        _tmp: tmp,
        state,
        driver: LibvirtDriver::new(cfg),
    }
}

fn net(host: &str, last: u8) -> NetIdentity {
    NetIdentity {
        hostname: host.to_string(),
        ipv4: Some(Ipv4Addr::new(10, 66, 0, last)),
        prefix4: 24,
        gateway4: Some(Ipv4Addr::new(10, 66, 0, 1)),
        ipv6: None,
        prefix6: keel_panel::hypervisor::DEFAULT_PREFIX6,
        gateway6: None,
        attach: keel_panel::hypervisor::Attachment::Private,
    }
}

fn seed_for(name: &str, n: &NetIdentity) -> SeedData {
    let mut p = SeedParams::new(name, n.clone(), HostKeys::generate(name).unwrap());
    p.phone_home_url = Some(format!("http://10.66.0.1:8080/phone-home?vm={name}&sig=00"));
    seed::render(&p).unwrap()
}

fn spec(name: &str, last: u8) -> VmSpec {
    let n = net(name, last);
    VmSpec {
        name: name.to_string(),
        cpus: 1,
        ram_mb: 256,
        disk_gb: 1,
        image: IMAGE.to_string(),
        seed: seed_for(name, &n),
        net: n,
    }
}

fn backing_of(disk: &Path) -> Option<String> {
    let out = Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(disk)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["backing-filename"].as_str().map(str::to_string)
}

#[tokio::test]
async fn create_twice_gives_one_vm_with_its_files() {
    let e = env();
    let a = e.driver.create(&spec("keel-t-create", 10)).await.unwrap();
    let b = e.driver.create(&spec("keel-t-create", 10)).await.unwrap();
    assert_eq!(a, b, "a repeated create must return the same VM");
    assert_eq!(a.power, PowerState::Stopped);
    let ep = a.ssh_endpoint.expect("user-mode networking forwards sshd");
    assert_eq!(ep.ip(), Ipv4Addr::LOCALHOST);
    assert!(PORTS.contains(&ep.port()));

    let listed: Vec<_> = e
        .driver
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.name == "keel-t-create")
        .collect();
    assert_eq!(listed, vec![a.clone()]);
    assert!(
        e.driver
            .list()
            .await
            .unwrap()
            .iter()
            .all(|v| v.name.starts_with("keel-")),
        "list must only show the prefix (test:///default has a domain `test`)"
    );

    let dir = e.driver.vm_dir("keel-t-create");
    let base = e._tmp.path().join("images").join(IMAGE).join("disk.qcow2");
    assert_eq!(
        backing_of(&dir.join("disk.qcow2")),
        Some(base.display().to_string())
    );
    let iso = std::fs::read(dir.join("seed.iso")).unwrap();
    assert_eq!(&iso[16 * 2048 + 40..16 * 2048 + 46], b"cidata");
    e.driver.delete("keel-t-create").await.unwrap();
}

#[tokio::test]
async fn power_operations_and_their_idempotency() {
    let e = env();
    let name = "keel-t-power";
    e.driver.create(&spec(name, 11)).await.unwrap();
    e.driver.start(name).await.unwrap();
    e.driver.start(name).await.unwrap();
    assert_eq!(
        e.driver.status(name).await.unwrap().power,
        PowerState::Running
    );
    e.driver.reset(name).await.unwrap();
    assert_eq!(
        e.driver.status(name).await.unwrap().power,
        PowerState::Running
    );
    e.driver.shutdown(name).await.unwrap();
    // The test hypervisor's guests obey ACPI at once.
    assert_eq!(
        e.driver.status(name).await.unwrap().power,
        PowerState::Stopped
    );
    e.driver.shutdown(name).await.unwrap();
    e.driver.start(name).await.unwrap();
    e.driver.power_off(name).await.unwrap();
    e.driver.power_off(name).await.unwrap();
    assert_eq!(
        e.driver.status(name).await.unwrap().power,
        PowerState::Stopped
    );
    e.driver.delete(name).await.unwrap();
}

#[tokio::test]
async fn snapshots_create_list_revert_delete() {
    let e = env();
    let name = "keel-t-snap";
    e.driver.create(&spec(name, 12)).await.unwrap();
    e.driver.snapshot_create(name, "before").await.unwrap();
    e.driver.snapshot_create(name, "before").await.unwrap();
    e.driver.start(name).await.unwrap();
    e.driver.snapshot_create(name, "running").await.unwrap();
    let names: Vec<_> = e
        .driver
        .snapshot_list(name)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["before", "running"]);
    assert!(e.driver.snapshot_list(name).await.unwrap()[0].created_at > 1_600_000_000);

    // Back to the snapshot taken while stopped: the VM is stopped again.
    e.driver.snapshot_revert(name, "before").await.unwrap();
    assert_eq!(
        e.driver.status(name).await.unwrap().power,
        PowerState::Stopped
    );
    e.driver.snapshot_revert(name, "running").await.unwrap();
    assert_eq!(
        e.driver.status(name).await.unwrap().power,
        PowerState::Running
    );

    assert!(matches!(
        e.driver.snapshot_revert(name, "nope").await,
        Err(DriverError::NotFound(_))
    ));
    e.driver.snapshot_delete(name, "before").await.unwrap();
    e.driver.snapshot_delete(name, "before").await.unwrap();
    let left: Vec<_> = e.driver.snapshot_list(name).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "running");
    assert!(matches!(
        e.driver.snapshot_create(name, "../x").await,
        Err(DriverError::Permanent(_))
    ));
    // Delete takes the snapshots with it.
    e.driver.delete(name).await.unwrap();
    assert!(matches!(
        e.driver.snapshot_list(name).await,
        Err(DriverError::NotFound(_))
    ));
}

#[tokio::test]
async fn clone_makes_an_independent_vm_once() {
    let e = env();
    let src = e.driver.create(&spec("keel-t-src", 13)).await.unwrap();
    let dst = spec("keel-t-dst", 14);
    let a = e.driver.clone_vm("keel-t-src", &dst).await.unwrap();
    let b = e.driver.clone_vm("keel-t-src", &dst).await.unwrap();
    assert_eq!(a, b, "clone is idempotent by target");
    assert_ne!(a.vm_ref, src.vm_ref);
    assert_ne!(
        a.ssh_endpoint, src.ssh_endpoint,
        "each VM has its own forward"
    );
    let dst_dir = e.driver.vm_dir("keel-t-dst");
    let base = e._tmp.path().join("images").join(IMAGE).join("disk.qcow2");
    assert_eq!(
        backing_of(&dst_dir.join("disk.qcow2")),
        Some(base.display().to_string()),
        "the clone's disk is again an overlay of the base image"
    );
    let iso = std::fs::read(dst_dir.join("seed.iso")).unwrap();
    let iso = String::from_utf8_lossy(&iso);
    assert!(iso.contains("keel-t-dst") && iso.contains("10.66.0.14/24"));

    assert!(matches!(
        e.driver
            .clone_vm("keel-t-missing", &spec("keel-t-x", 15))
            .await,
        Err(DriverError::NotFound(_))
    ));
    // A clone keeps its source's image, and its disk is at least as large.
    let mut other = spec("keel-t-y", 16);
    other.image = "another-image".into();
    assert!(matches!(
        e.driver.clone_vm("keel-t-src", &other).await,
        Err(DriverError::Permanent(_))
    ));
    // Deleting the source leaves the clone intact.
    e.driver.delete("keel-t-src").await.unwrap();
    assert_eq!(e.driver.status("keel-t-dst").await.unwrap(), a);
    e.driver.delete("keel-t-dst").await.unwrap();
}

#[tokio::test]
async fn delete_removes_everything_and_is_idempotent() {
    let e = env();
    let name = "keel-t-delete";
    e.driver.create(&spec(name, 15)).await.unwrap();
    e.driver.start(name).await.unwrap();
    e.driver.snapshot_create(name, "s").await.unwrap();
    e.driver.delete(name).await.unwrap();
    assert!(!e.driver.vm_dir(name).exists());
    assert!(e.state.exists());
    assert!(matches!(
        e.driver.status(name).await,
        Err(DriverError::NotFound(_))
    ));
    e.driver.delete(name).await.unwrap();
    for r in [
        e.driver.start(name).await,
        e.driver.shutdown(name).await,
        e.driver.power_off(name).await,
        e.driver.reset(name).await,
        e.driver.snapshot_create(name, "s").await,
    ] {
        assert!(matches!(r, Err(DriverError::NotFound(_))), "{r:?}");
    }
    // A name can be used again after delete.
    e.driver.create(&spec(name, 15)).await.unwrap();
    e.driver.delete(name).await.unwrap();
}

#[tokio::test]
async fn bad_specs_are_permanent() {
    let e = env();
    let mut s = spec("keel-t-bad", 16);
    s.image = "no-such-image".into();
    let err = e.driver.create(&s).await.unwrap_err();
    assert!(
        matches!(err, DriverError::Permanent(_)) && !err.is_retryable(),
        "{err:?}"
    );
    let mut s = spec("keel-t-bad", 16);
    s.name = "keel-t-bad/../x".into();
    assert!(matches!(
        e.driver.create(&s).await,
        Err(DriverError::Permanent(_))
    ));
    let mut s = spec("keel-t-small", 16);
    s.disk_gb = 0;
    assert!(matches!(
        e.driver.create(&s).await,
        Err(DriverError::Permanent(_))
    ));
    assert!(!e.driver.vm_dir("keel-t-small").exists());
}

#[tokio::test]
async fn unreachable_libvirt_is_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = LibvirtConfig::new(
        "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
        ImageStore::new(tmp.path()),
        tmp.path().join("state"),
    );
    let driver = LibvirtDriver::new(cfg);
    let err = driver.status("keel-x").await.unwrap_err();
    assert!(matches!(err, DriverError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(matches!(
        driver.list().await,
        Err(DriverError::Unavailable(_))
    ));
}

#[tokio::test]
async fn faulty_driver_exposes_retries_that_still_converge() {
    let e = env();
    let driver = FaultyDriver::new(e.driver, 0.5, 7);
    let name = "keel-t-faulty";
    let s = spec(name, 17);
    let mut created = None;
    for _ in 0..50 {
        match driver.create(&s).await {
            Ok(info) => {
                created = Some(info);
                break;
            }
            Err(err) => assert!(err.is_retryable(), "{err:?}"),
        }
    }
    let created = created.expect("create succeeded within 50 tries");
    for _ in 0..50 {
        if driver.start(name).await.is_ok() {
            break;
        }
    }
    // Faults struck both before and after real calls, and still one VM.
    for _ in 0..40 {
        let _ = driver.status(name).await;
    }
    let (before, after) = driver.injected();
    assert!(before > 0 && after > 0, "before={before} after={after}");
    let inner = driver.inner();
    let vms: Vec<_> = inner
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.name == name)
        .collect();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].vm_ref, created.vm_ref);
    assert_eq!(vms[0].power, PowerState::Running);
    let mut deleted = false;
    for _ in 0..50 {
        if driver.delete(name).await.is_ok() {
            deleted = true;
            break;
        }
    }
    assert!(deleted);
    assert!(matches!(
        inner.status(name).await,
        Err(DriverError::NotFound(_))
    ));
    assert!(!inner.vm_dir(name).exists());
}

#[tokio::test]
async fn ports_are_distinct_per_vm() {
    let e = env();
    let mut ports = Vec::new();
    for (i, name) in ["keel-t-p1", "keel-t-p2", "keel-t-p3"].iter().enumerate() {
        let info = e.driver.create(&spec(name, 20 + i as u8)).await.unwrap();
        ports.push(info.ssh_endpoint.unwrap().port());
    }
    let mut dedup = ports.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 3, "{ports:?}");
    // The port survives in the domain: status reports the same one.
    assert_eq!(
        e.driver
            .status("keel-t-p2")
            .await
            .unwrap()
            .ssh_endpoint
            .unwrap()
            .port(),
        ports[1]
    );
    for name in ["keel-t-p1", "keel-t-p2", "keel-t-p3"] {
        e.driver.delete(name).await.unwrap();
    }
}

/// The domain XML libvirt holds for `name` (a second connection to the
/// test hypervisor shares the process's `test:///default` state).
fn domain_xml_of(name: &str) -> String {
    let conn = virt::connect::Connect::open(Some("test:///default")).unwrap();
    let dom = virt::domain::Domain::lookup_by_name(&conn, name).unwrap();
    dom.get_xml_desc(0).unwrap()
}

/// A VM whose pool is on a bridge gets a virtio NIC on that bridge, takes
/// no forwarding port and reports no SSH endpoint (the panel then connects
/// to its address, port 22); so does its clone. A VM of a pool without a
/// network keeps user-mode networking, whatever ran before.
#[tokio::test]
async fn a_bridged_pools_vm_has_its_nic_on_the_bridge_and_no_forwarded_port() {
    let e = env();
    let bridged = |name: &str, last: u8| {
        let mut s = spec(name, last);
        s.net.attach = keel_panel::hypervisor::Attachment::Bridge {
            bridge: "br0".into(),
        };
        s
    };
    let name = "keel-t-bridge";
    let info = e.driver.create(&bridged(name, 30)).await.unwrap();
    assert_eq!(info.ssh_endpoint, None);
    let xml = domain_xml_of(name);
    assert!(xml.contains("<interface type='bridge'>"), "{xml}");
    assert!(xml.contains("<source bridge='br0'/>"), "{xml}");
    assert!(xml.contains("<model type='virtio'/>"), "{xml}");
    assert!(!xml.contains("hostfwd"), "{xml}");
    assert_eq!(e.driver.status(name).await.unwrap().ssh_endpoint, None);

    let copy = "keel-t-bridge-clone";
    let info = e.driver.clone_vm(name, &bridged(copy, 31)).await.unwrap();
    assert_eq!(info.ssh_endpoint, None);
    assert!(domain_xml_of(copy).contains("<source bridge='br0'/>"));

    let private = "keel-t-bridge-private";
    let info = e.driver.create(&spec(private, 32)).await.unwrap();
    assert!(info.ssh_endpoint.is_some());
    let xml = domain_xml_of(private);
    // (The test hypervisor drops QEMU's own command-line arguments, where
    // the user-mode NIC lives; the forwarded port above is its trace.)
    assert!(!xml.contains("<interface"), "{xml}");

    let mut bad = bridged("keel-t-bridge-bad", 33);
    bad.net.attach = keel_panel::hypervisor::Attachment::Bridge {
        bridge: "br0'/><x".into(),
    };
    assert!(matches!(
        e.driver.create(&bad).await,
        Err(DriverError::Permanent(_))
    ));
    for n in [name, copy, private] {
        e.driver.delete(n).await.unwrap();
    }
}
