//! Tests of the full test hosts (`keel_testhosts::full`): each boots real
//! Debian containers with systemd as PID 1 and checks what modules and roles
//! rely on: isolation, SSH with pinned host keys, apt from the local
//! repository, systemd units, the cached package layer.

use std::process::Command;

use keel_testhosts::full::{FullHosts, REPO_MOUNT};

fn report(what: &str, fh: &FullHosts) {
    let t = &fh.timings;
    eprintln!(
        "[{what}] base image {:.1?}; repo {:.1?} ({}); layers {:.1?} ({}); boot all {:.1?}; per host: {}",
        t.base_image,
        t.repo,
        if t.repo_cold { "cold" } else { "cached" },
        t.layers,
        if t.layers_cold { "cold" } else { "cached" },
        t.boot_all,
        fh.hosts
            .iter()
            .map(|h| format!("{} (pid {}) {:.1?}", h.name, h.pid, h.boot_time))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Runs `cmd` on host `idx` through OpenSSH, with the harness's known_hosts
/// file and strict host key checking.
fn ssh(fh: &FullHosts, idx: usize, user: &str, cmd: &str) -> std::process::Output {
    let h = fh.host(idx);
    Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", fh.known_hosts().display()))
        .arg("-i")
        .arg(&fh.client_keys().ed25519)
        .args(["-p", &h.port.to_string()])
        .arg(format!("{user}@{}", h.addr))
        .arg(cmd)
        .output()
        .expect("running ssh")
}

#[test]
fn two_hosts_boot_systemd_and_are_isolated() {
    let fh = FullHosts::start(2).expect("starting full hosts");
    report("two hosts", &fh);
    assert_eq!(fh.hosts.len(), 2);

    for i in 0..2 {
        let exe = fh.sh(i, "readlink /proc/1/exe");
        assert!(
            exe.trim().ends_with("/systemd"),
            "PID 1 of {} is {exe:?}",
            fh.host(i).name
        );
        let state = fh.exec(i, "systemctl is-system-running");
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        assert!(
            state == "running" || state == "degraded",
            "system state {state:?}"
        );
        assert_eq!(fh.sh(i, "hostname").trim(), fh.host(i).name);
        assert_eq!(fh.sh(i, "systemctl is-active ssh").trim(), "active");
        // The harness's machine-id, not the image's empty one.
        assert_eq!(fh.sh(i, "cat /etc/machine-id").trim().len(), 32);
        // The container's eth0 carries the address we connect to.
        assert!(fh
            .sh(i, "ip -4 -o addr show dev eth0")
            .contains(&format!("{} ", fh.host(i).addr)));
    }
    let (a, b) = (fh.host(0), fh.host(1));
    assert_ne!(a.name, b.name);
    assert_ne!(a.addr, b.addr);
    assert_ne!(a.host_key, b.host_key);
    assert_ne!(
        fh.sh(0, "cat /etc/machine-id"),
        fh.sh(1, "cat /etc/machine-id")
    );

    // SSH from this machine, host keys pinned by the known_hosts file.
    for i in 0..2 {
        for user in ["root", "keeltest", "keelnopw"] {
            let out = ssh(&fh, i, user, "hostname; id -un");
            assert!(
                out.status.success(),
                "ssh {user}@{}: {}",
                fh.host(i).name,
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(text, format!("{}\n{user}\n", fh.host(i).name));
        }
    }
    let sudo = ssh(&fh, 0, "keelnopw", "sudo -n id -u");
    assert_eq!(String::from_utf8_lossy(&sudo.stdout).trim(), "0");

    // A file written on one host is absent on the other and on the image.
    fh.sh(0, "echo only-here > /root/marker");
    assert_eq!(fh.sh(0, "cat /root/marker"), "only-here\n");
    assert!(!fh.exec(1, "test -e /root/marker").status.success());
    assert!(
        !std::path::Path::new("/var/cache/keel/images/debian-bookworm/rootfs/root/marker").exists()
    );
    assert!(fh.host(0).root.join("root/marker").exists());
    assert!(!fh.host(1).root.join("root/marker").exists());
}

#[test]
fn apt_and_systemd_work_inside_a_host() {
    let fh = FullHosts::start(1).expect("starting a full host");
    report("one host", &fh);

    // apt knows only the local repository.
    let sources = fh.sh(0, "cat /etc/apt/sources.list; ls /etc/apt/sources.list.d");
    assert_eq!(
        sources.trim(),
        format!("deb [trusted=yes] file:{REPO_MOUNT} ./")
    );
    assert!(!fh.exec(0, "dpkg -s screen").status.success());
    fh.sh(
        0,
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q screen",
    );
    let st = fh.sh(0, "dpkg -s screen");
    assert!(st.contains("Status: install ok installed"), "{st}");
    assert!(fh.sh(0, "command -v screen").contains("/screen"));
    // The repository is read-only from inside.
    assert!(!fh
        .exec(0, &format!("touch {REPO_MOUNT}/x"))
        .status
        .success());

    // A real unit: stop and start cron through systemd.
    assert_eq!(fh.sh(0, "systemctl is-active cron").trim(), "active");
    fh.sh(0, "systemctl stop cron");
    let out = fh.exec(0, "systemctl is-active cron");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "inactive");
    assert!(fh.exec(0, "pgrep -x cron").stdout.is_empty());
    fh.sh(0, "systemctl start cron");
    assert_eq!(fh.sh(0, "systemctl is-active cron").trim(), "active");
}

#[test]
fn preinstalled_mariadb_runs_at_boot() {
    let fh = FullHosts::builder()
        .preinstall(&["mariadb-server"])
        .start(1)
        .expect("starting a full host with mariadb");
    report("preinstall mariadb-server", &fh);
    let st = fh.sh(0, "dpkg -s mariadb-server");
    assert!(st.contains("Status: install ok installed"), "{st}");
    assert_eq!(fh.sh(0, "systemctl is-active mariadb").trim(), "active");
    assert_eq!(fh.sh(0, "mysql -N -e 'select 1+1'").trim(), "2");
}

/// Not a test on its own: `leftovers_of_a_killed_run_are_cleaned` runs this
/// in a child process, which boots a host, reports it, and hangs until
/// SIGKILLed (so its `Drop` never runs).
#[test]
#[ignore]
fn helper_boot_and_hang() {
    let Some(report) = std::env::var_os("KEEL_FULLHOSTS_HELPER_REPORT") else {
        return;
    };
    let fh = FullHosts::start(1).expect("starting a full host");
    let h = fh.host(0);
    std::fs::write(&report, format!("{} {}", h.pid, h.netns)).unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

#[test]
fn leftovers_of_a_killed_run_are_cleaned() {
    let dir = tempfile_dir();
    let report = dir.join("report");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_boot_and_hang",
            "--ignored",
            "--nocapture",
        ])
        .env("KEEL_FULLHOSTS_HELPER_REPORT", &report)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !report.exists() {
        assert!(std::time::Instant::now() < deadline, "helper never booted");
        assert!(child.try_wait().unwrap().is_none(), "helper exited early");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let text = std::fs::read_to_string(&report).unwrap();
    let (pid, netns) = text.split_once(' ').unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // The killed run left its container and namespace behind...
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::path::Path::new(&format!("/run/netns/{netns}")).exists());

    // ...and the next start removes them.
    let fh = FullHosts::start(1).expect("starting a full host");
    assert!(
        !std::path::Path::new(&format!("/run/netns/{netns}")).exists() || fh.host(0).netns == netns,
        "stale namespace {netns} still there"
    );
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(
        comm.is_empty() || fh.host(0).pid.to_string() == pid,
        "stale container init {pid} ({comm:?}) still alive"
    );
    let own_ns = fh.host(0).netns.clone();
    let own_pid = fh.host(0).pid;
    drop(fh);
    // Dropping cleans up too.
    assert!(!std::path::Path::new(&format!("/run/netns/{own_ns}")).exists());
    assert!(!std::path::Path::new(&format!("/proc/{own_pid}/comm")).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keel-fullhosts-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
