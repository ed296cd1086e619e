//! The Python fallback end to end: a playbook whose modules Keel has no
//! native port of (a `library/` module, an old-style module, a collection's
//! module with its own `module_utils`, and ansible-core's `yum_repository`) runs under `keel play` and under
//! ansible-playbook 2.19.14 on the same real sshd test host, in check mode
//! and for real, and the registered results must agree; a module found
//! nowhere stops the run before any host is contacted.
//!
//! ansible-core comes from the conformance runner's venv
//! (`tests/conformance/runner.py --ensure-venv`): Keel takes its modules and
//! `module_utils` through `KEEL_ANSIBLE_PYTHON`, the reference is its
//! `ansible-playbook`. Where it cannot be built the tests skip, unless
//! `KEEL_REQUIRE_REAL` is set, when they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keel_testhosts::TestHosts;
use serde_json::Value;

#[path = "common/reference.rs"]
mod reference;
use reference::reference_bin;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python_fallback")
}

/// An inventory naming the one test host (reachable by Keel and OpenSSH).
fn inventory(th: &TestHosts, dir: &Path) -> PathBuf {
    let h = &th.hosts[0];
    let path = dir.join("hosts");
    std::fs::write(
        &path,
        format!(
            "[testhosts]\n{} ansible_host={} ansible_port={} ansible_user=root \
             ansible_ssh_private_key_file={} \
             ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            h.name,
            h.addr,
            h.port,
            th.client_key.display(),
            th.known_hosts.display()
        ),
    )
    .unwrap();
    path
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("starting a command");
    eprintln!(
        "$ {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One run of `site.yml` by `engine` ("keel" or "ansible"); returns the
/// registered results it wrote.
fn play(engine: &str, bin: &Path, inv: &Path, dir: &Path, extra: &[&str]) -> Value {
    let out_file = dir.join(format!("{engine}-results.json"));
    let _ = std::fs::remove_file(&out_file);
    let mut cmd = if engine == "keel" {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
        c.arg("play").env("KEEL_ANSIBLE_PYTHON", bin.join("python"));
        c
    } else {
        let mut c = Command::new(bin.join("ansible-playbook"));
        c.env("ANSIBLE_HOST_KEY_CHECKING", "True");
        c
    };
    cmd.current_dir(fixture())
        .arg("-i")
        .arg(inv)
        .arg("-e")
        .arg(format!("out={}", out_file.display()))
        .args(extra)
        .arg("site.yml");
    let out = run(&mut cmd);
    assert!(out.status.success(), "{engine} failed");
    serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap()
}

/// The parts of the results both engines must agree on.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    for r in v.as_object_mut().unwrap().values_mut() {
        // The module's warning about making the become user's remote_tmp
        // depends on which engine ran first.
        let r = r.as_object_mut().unwrap();
        if let Some(Value::Array(w)) = r.get_mut("warnings") {
            w.retain(|w| !w.as_str().unwrap_or("").starts_with("Module remote_tmp"));
            if w.is_empty() {
                r.remove("warnings");
            }
        }
    }
    v
}

#[test]
fn fallback_modules_behave_as_under_ansible_playbook() {
    let Some(bin) = reference_bin() else { return };
    let th = TestHosts::start(1).expect("starting a test host");
    let dir = tempfile::tempdir().unwrap();
    let inv = inventory(&th, dir.path());
    let reset = || {
        th.sh(
            0,
            "rm -rf /tmp/greeting /tmp/quiet /tmp/repos && mkdir /tmp/repos",
        );
    };
    let files = || th.exec(0, "cat /tmp/greeting /tmp/quiet /tmp/repos/epel.repo 2>&1");
    let text = |o: Output| String::from_utf8_lossy(&o.stdout).into_owned();

    // Check mode: both report the change, neither makes it.
    reset();
    let ansible = play("ansible", &bin, &inv, dir.path(), &["--check", "--diff"]);
    reset();
    let keel = play("keel", &bin, &inv, dir.path(), &["--check", "--diff"]);
    assert_eq!(comparable(&keel), comparable(&ansible));
    assert_eq!(keel["greet"]["changed"], true);
    assert_eq!(keel["greet"]["saw_check_mode"], true);
    assert!(
        text(files()).contains("No such file"),
        "check mode wrote a file"
    );

    // For real, from the same empty state.
    reset();
    let ansible = play("ansible", &bin, &inv, dir.path(), &["--diff"]);
    let after_ansible = text(files());
    reset();
    let keel = play("keel", &bin, &inv, dir.path(), &["--diff"]);
    assert_eq!(comparable(&keel), comparable(&ansible));
    assert_eq!(text(files()), after_ansible);
    assert_eq!(keel["greet"]["greeting"], "hello world");
    assert_eq!(keel["repo"]["changed"], true);
    assert_eq!(keel["old"]["said"], "hi");
    assert_eq!(keel["coll"]["said"], "HELLO!");
    // no_log reached the module; become ran it as the other user.
    assert_eq!(keel["quiet"]["saw_no_log"], true);
    let nopw_uid = text(th.exec(0, "id -u keelnopw"))
        .trim()
        .parse::<i64>()
        .unwrap();
    assert_eq!(keel["quiet"]["uid"], nopw_uid);

    // Again: nothing left to change, as under Ansible.
    let ansible = play("ansible", &bin, &inv, dir.path(), &[]);
    let keel = play("keel", &bin, &inv, dir.path(), &[]);
    assert_eq!(comparable(&keel), comparable(&ansible));
    for task in ["greet", "quiet", "old", "repo", "coll"] {
        assert_eq!(
            keel[task]["changed"], false,
            "{task} changed on the second run"
        );
    }
    // The payloads cleaned up after themselves.
    let left = text(th.exec(0, "ls -a /tmp"));
    assert!(
        !left.contains("_payload_") && !left.contains("ansible-tmp-keel"),
        "left behind in /tmp: {left}"
    );
}

#[test]
fn a_module_found_nowhere_fails_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here: reaching the host would fail differently.
    let inv = dir.path().join("hosts");
    std::fs::write(
        &inv,
        "[testhosts]\nh1 ansible_host=127.0.0.1 ansible_port=1\n",
    )
    .unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(fixture())
        .arg("play")
        .arg("-i")
        .arg(&inv)
        .arg("missing.yml"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("couldn't resolve module/action 'keel_no_such_module'"),
        "{err}"
    );
    // The error names where Keel looked, the playbook's library/ first.
    assert!(
        err.contains(&fixture().join("library").display().to_string()),
        "{err}"
    );
    assert!(!err.contains("UNREACHABLE"), "{err}");
}
