//! Native ports of modules real roles use (`ini_file`, `service_facts`,
//! `package_facts`...), run by `keel play` on a real sshd test host and
//! compared with what ansible-playbook 2.19.14 returned for the same
//! playbook on the same kind of host.
//!
//! Each case is a directory under `fixtures/<module>/` holding `site.yml`
//! (which writes its registered results to `out` on the controller),
//! `setup.sh` (run on the host before each run) and `reference-<mode>.json`,
//! the results ansible-playbook wrote (`diff`: a `--diff` run, `check`: a
//! `--check --diff` run), recorded once with the reference and the
//! collection the module comes from; the interpreter-discovery fact and
//! warning, which a native module has no reason to produce, were taken out.

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_testhosts::TestHosts;
use serde_json::Value;

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

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

/// Runs the case's `site.yml` with `flags` after its `setup.sh`; returns the
/// results it wrote.
fn keel_run(th: &TestHosts, case: &str, flags: &[&str]) -> Value {
    let dir = case_dir(case);
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(th, tmp.path());
    let setup = std::fs::read_to_string(dir.join("setup.sh")).unwrap();
    th.sh(0, &setup);
    let out_file = tmp.path().join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(&dir)
        .arg("play")
        .arg("-i")
        .arg(&inv)
        .arg("-e")
        .arg(format!("out={}", out_file.display()))
        .args(flags)
        .arg("site.yml")
        .output()
        .expect("running keel");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "keel play {flags:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "keel play {case} {flags:?} failed");
    serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap()
}

fn reference(case: &str, mode: &str) -> Value {
    let p = case_dir(case).join(format!("reference-{mode}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Compares result by result, so a failure names the task.
fn assert_same(case: &str, mode: &str, keel: &Value, want: &Value) {
    let (k, w) = (keel.as_object().unwrap(), want.as_object().unwrap());
    for (name, expected) in w {
        assert_eq!(
            k.get(name),
            Some(expected),
            "{case} ({mode}): `{name}` differs from ansible-playbook's"
        );
    }
    assert_eq!(k.len(), w.len(), "{case} ({mode}): other results");
}

#[test]
fn ini_file_edits_as_community_general_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let got = keel_run(&th, "ini_file", flags);
        assert_same("ini_file", mode, &got, &reference("ini_file", mode));
    }
}

#[test]
fn service_facts_lists_services_as_ansible_core_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let got = keel_run(&th, "service_facts", flags);
        assert_same(
            "service_facts",
            mode,
            &got,
            &reference("service_facts", mode),
        );
    }
}
