//! Local facts on a real sshd test host: `/etc/ansible/facts.d/*.fact`
//! files (JSON, INI, executable, and unreadable as either) become
//! `ansible_local`, shaped as ansible-playbook 2.19.14 shapes them for the
//! same files (checked on the controller with a `fact_path`).

use std::process::Command;

use keel_testhosts::TestHosts;

#[test]
fn facts_d_becomes_ansible_local() {
    let th = TestHosts::start(1).unwrap();
    th.sh(
        0,
        "mkdir -p /etc/ansible/facts.d /srv/other && cd /etc/ansible/facts.d && \
         printf '{\"x\": 1, \"l\": [1, 2]}' > a.fact && \
         printf '[sec]\\nk = v\\nn=2\\n' > b.fact && \
         printf '#!/bin/sh\\necho \"{\\\\\"ran\\\\\": true}\"\\n' > c.fact && chmod +x c.fact && \
         printf 'garbage ][' > d.fact && printf '{\"elsewhere\": true}' > /srv/other/e.fact",
    );
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("hosts"), th.inventory_ini("")).unwrap();
    std::fs::write(
        d.path().join("play.yml"),
        "- hosts: all
  tasks:
    - assert:
        that:
          - \"ansible_local.a == {'x': 1, 'l': [1, 2]}\"
          - \"ansible_local.b == {'sec': {'k': 'v', 'n': '2'}}\"
          - \"ansible_local.c == {'ran': true}\"
          - \"ansible_local.d == 'error loading facts as JSON or ini - please check content: /etc/ansible/facts.d/d.fact'\"
          - ansible_facts.local.c.ran
    - setup: fact_path=/srv/other
    - assert:
        that: \"ansible_local == {'e': {'elsewhere': true}}\"
    - setup: fact_path=/nonexistent
    - assert:
        that: \"ansible_local == {}\"
",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(d.path())
        .env("ANSIBLE_CONFIG", d.path().join("none.cfg"))
        .args(["play", "-i", "hosts", "play.yml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "[WARNING]: error loading facts as JSON or ini - please check content: /etc/ansible/facts.d/d.fact"
        ) || String::from_utf8_lossy(&out.stderr).contains("error loading facts"),
        "{text}"
    );
}
