//! `ansible_ssh_retries` (ansible-core's `reconnection_retries`): a host
//! whose sshd is not up yet (connections refused) is tried again after
//! 0, 1 and 3 s and reached once it answers; without retries the same host
//! is unreachable at once. The same inventory and play run under the
//! reference ansible-core 2.19.14 with the same outcome.

#[path = "common/reference.rs"]
mod reference;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use keel_testhosts::TestHosts;

const PLAY: &str = "\
- hosts: all
  gather_facts: false
  tasks:
    - command: hostname
      register: h
    - debug:
        msg: \"reached {{ h.stdout }}\"
";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// After `delay`, listens on `port` and forwards every connection to
/// `target` (until the test process ends): an sshd that comes up late.
fn late_forwarder(port: u16, target: String, delay: Duration) {
    thread::spawn(move || {
        thread::sleep(delay);
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        for c in l.incoming().flatten() {
            let Ok(up) = TcpStream::connect(&target) else {
                continue;
            };
            let (mut a, mut b) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            thread::spawn(move || pipe(&mut a, &mut b));
            let (mut a, mut b) = (up, c);
            thread::spawn(move || pipe(&mut a, &mut b));
        }
    });
}

fn pipe(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The inventory of one host behind `port` on loopback, with `retries`.
fn setup(th: &TestHosts, dir: &Path, port: u16, retries: u32) {
    let h = &th.hosts[0];
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, format!("[127.0.0.1]:{port} {}\n", h.host_key)).unwrap();
    std::fs::write(
        dir.join("hosts"),
        format!(
            "late ansible_host=127.0.0.1 ansible_port={port} ansible_user=root \
             ansible_ssh_private_key_file={} ansible_ssh_retries={retries} \
             ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            th.client_key.display(),
            kh.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("play.yml"), PLAY).unwrap();
}

enum Engine<'a> {
    Keel,
    Reference(&'a Path),
}

fn play(engine: &Engine, dir: &Path) -> Output {
    let mut c = match engine {
        Engine::Keel => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
            c.current_dir(dir).arg("play");
            reference::scrub(&mut c, dir);
            c
        }
        Engine::Reference(bin) => reference::tool(bin, "ansible-playbook", dir),
    };
    let o = c
        .args(["-i", "hosts", "play.yml"])
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .output()
        .unwrap();
    eprintln!("{}", text(&o));
    o
}

fn check(engine: Engine) {
    let th = TestHosts::start(1).unwrap();
    let target = format!("{}:{}", th.hosts[0].addr, th.hosts[0].port);

    // Three retries: refused at 0 s, 0 s and 1 s; the forwarder is up by
    // the fourth attempt (4 s).
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    setup(&th, d.path(), port, 3);
    late_forwarder(port, target.clone(), Duration::from_millis(1500));
    let o = play(&engine, d.path());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("reached h"), "{out}");
    assert!(out.contains("ok=2"), "{out}");

    // No retries: the same late host is unreachable.
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    setup(&th, d.path(), port, 0);
    late_forwarder(port, target, Duration::from_secs(30));
    let o = play(&engine, d.path());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert!(out.contains("UNREACHABLE"), "{out}");
    assert!(out.contains("unreachable=1"), "{out}");
}

#[test]
fn keel_retries_a_late_host() {
    check(Engine::Keel);
}

#[test]
fn ansible_core_retries_a_late_host_the_same_way() {
    let Some(bin) = reference::reference_bin() else {
        return;
    };
    check(Engine::Reference(&bin));
}
