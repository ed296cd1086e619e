//! Firewall modules (`iptables`, `ufw`) against real netfilter, inside a
//! full test host (`keel_testhosts::full`): each host is a systemd-nspawn
//! container in its own network namespace, so rules and policies never
//! touch this machine's firewall (an sshd test host shares the machine's
//! network namespace, so these modules must not run there).
//!
//! Each case is a directory under `fixtures/<module>/` with `site.yml`
//! (which writes its registered results to `out` on the controller) and
//! `setup.sh` (run inside the host before each run). `keel play` runs it in
//! `--diff` and `--check --diff` mode and the results are compared with
//! ansible-playbook 2.19.14's: live for an ansible-core module (the
//! conformance runner's venv), from `reference-<mode>.json` for a
//! collection's module. With `KEEL_WRITE_REFERENCE` set to a collections
//! directory, the collection's cases write those files instead (run by hand
//! when a case changes).

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_testhosts::full::FullHosts;
use serde_json::Value;

#[path = "common/reference.rs"]
mod reference;
use reference::reference_bin;

/// The packages the firewall cases need inside the host.
const PACKAGES: &[&str] = &["iptables", "ufw"];

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn start() -> FullHosts {
    let fh = FullHosts::builder()
        .packages(PACKAGES)
        .preinstall(PACKAGES)
        .start(1)
        .expect("starting a full test host");
    // ufw reports the routed policy as "disabled" unless the host forwards
    // IPv4, and a new network namespace takes that setting from this
    // machine's, which another test's daemon (dockerd) may have turned on.
    // The recorded reference results were made without forwarding.
    let out = Command::new("nsenter")
        .args(["-t", &fh.init_pid(0).to_string(), "-n"])
        .args(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip_forward in the test host: {out:?}");
    fh
}

enum Engine<'a> {
    Keel,
    Ansible {
        bin: &'a Path,
        collections: Option<&'a Path>,
    },
}

/// Runs the case's `site.yml` with `flags` after its `setup.sh`; returns the
/// results it wrote.
fn run(fh: &FullHosts, engine: Engine<'_>, case: &str, flags: &[&str]) -> Value {
    let dir = case_dir(case);
    let tmp = tempfile::tempdir().unwrap();
    let inv = tmp.path().join("hosts");
    std::fs::write(&inv, fh.inventory_ini("")).unwrap();
    fh.sh(0, &std::fs::read_to_string(dir.join("setup.sh")).unwrap());
    let out_file = tmp.path().join("results.json");
    let mut cmd = match &engine {
        Engine::Keel => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
            c.arg("play");
            c
        }
        Engine::Ansible { bin, collections } => {
            let mut c = reference::tool(bin, "ansible-playbook", tmp.path());
            if let Some(p) = collections {
                c.env("ANSIBLE_COLLECTIONS_PATH", p);
            }
            c
        }
    };
    let out = cmd
        .current_dir(&dir)
        .arg("-i")
        .arg(&inv)
        .arg("-e")
        .arg(format!("out={}", out_file.display()))
        .args(flags)
        .arg("site.yml")
        .output()
        .expect("running the playbook");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{case} {flags:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{case} {flags:?} failed");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    without_discovery(&mut v);
    v
}

/// Takes Python interpreter discovery's fact and warning out of results.
fn without_discovery(v: &mut Value) {
    for r in v.as_object_mut().unwrap().values_mut() {
        let Some(r) = r.as_object_mut() else { continue };
        if let Some(Value::Object(f)) = r.get_mut("ansible_facts") {
            f.remove("discovered_interpreter_python");
            if f.is_empty() {
                r.remove("ansible_facts");
            }
        }
        if let Some(Value::Array(w)) = r.get_mut("warnings") {
            w.retain(|w| {
                !w.as_str()
                    .unwrap_or("")
                    .contains("discovered Python interpreter")
            });
            if w.is_empty() {
                r.remove("warnings");
            }
        }
    }
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

const MODES: [(&str, &[&str]); 2] = [("diff", &["--diff"]), ("check", &["--check", "--diff"])];

/// `iptables` (ansible-core): rules appended and inserted (negated source,
/// several ports, conntrack states, a comment), a chain policy, the nat
/// table, removal, a chain of its own, a flush, an option error; the
/// tables the host ends with (`iptables-save`) are part of the results.
#[test]
fn iptables_manages_rules_as_ansible_core_does() {
    let Some(bin) = reference_bin() else { return };
    let fh = start();
    for (mode, flags) in MODES {
        let want = run(
            &fh,
            Engine::Ansible {
                bin: &bin,
                collections: None,
            },
            "iptables",
            flags,
        );
        let got = run(&fh, Engine::Keel, "iptables", flags);
        assert_same("iptables", mode, &got, &want);
    }
}

/// `ufw` (community.general): a default policy, rules allowed, limited,
/// rejected and deleted (ports, protocols, addresses, a comment), enabled
/// twice, logging, disabled, an argument error, reset; what ufw reports in
/// between (`ufw status verbose`, the rules files) is part of the results.
#[test]
fn ufw_manages_the_firewall_as_community_general_does() {
    let fh = start();
    let write = std::env::var_os("KEEL_WRITE_REFERENCE").map(PathBuf::from);
    for (mode, flags) in MODES {
        if let Some(collections) = &write {
            let bin = reference_bin().expect("the reference venv");
            let v = run(
                &fh,
                Engine::Ansible {
                    bin: &bin,
                    collections: Some(collections),
                },
                "ufw",
                flags,
            );
            std::fs::write(
                case_dir("ufw").join(format!("reference-{mode}.json")),
                serde_json::to_string_pretty(&v).unwrap() + "\n",
            )
            .unwrap();
        }
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(case_dir("ufw").join(format!("reference-{mode}.json")))
                .unwrap(),
        )
        .unwrap();
        let got = run(&fh, Engine::Keel, "ufw", flags);
        assert_same("ufw", mode, &got, &want);
    }
}
