//! `keel play --step`: before each task the question ansible-playbook asks,
//! answered on standard input — `n` skips the task, `y` runs it, `c` runs
//! it and every later one without asking. The whole output is compared with
//! ansible-playbook 2.19.14's for the same answers, and checked by itself
//! where the reference cannot be built.

#[path = "common/reference.rs"]
mod reference;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const PLAY: &str = "- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: one
      debug: msg=1
    - name: two
      debug: msg=2
    - name: three
      debug: msg=3
    - name: four
      debug: msg=4
";

fn answered(mut cmd: Command, answers: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn step_asks_before_each_task_as_ansible_playbook_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: &Path = tmp.path();
    std::fs::write(dir.join("site.yml"), PLAY).unwrap();
    let mut k = Command::new(env!("CARGO_BIN_EXE_keel"));
    k.current_dir(dir);
    reference::scrub(&mut k, dir);
    k.args(["play", "-i", "localhost,", "--step", "site.yml"]);
    let got = answered(k, "n\ny\nc\n");
    assert!(
        got.contains("Perform task: TASK: one (N)o/(y)es/(c)ontinue: \n"),
        "{got}"
    );
    assert!(!got.contains("TASK [one]"), "answered no: {got}");
    assert!(got.contains("TASK [two]"), "{got}");
    assert!(got.contains("TASK [four]"), "{got}");
    assert!(
        !got.contains("Perform task: TASK: four"),
        "continue asks no more: {got}"
    );
    assert!(got.contains("ok=3    changed=0"), "{got}");
    if let Some(bin) = reference::reference_bin() {
        let mut a = reference::tool(&bin, "ansible-playbook", dir);
        a.args(["-i", "localhost,", "--step", "site.yml"]);
        assert_eq!(got, answered(a, "n\ny\nc\n"));
    }
}
