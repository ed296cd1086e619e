//! The OpenSSH client configuration and ProxyCommand, end to end: `keel
//! play` and ansible-playbook 2.19.14 run the same playbook with the same
//! `ansible.cfg` (`ssh_args = -F ssh_config`, as Ansible users point at a
//! configuration of their own) against a test host that only a jump host
//! can reach (`TestHosts::start_jump_chain`). The host is reached three
//! ways: the configuration's `ProxyJump`, its `ProxyCommand` (`ssh -W`
//! through the jump host), and a `ProxyCommand` in the inventory's
//! `ansible_ssh_common_args`; a fourth line checks that the inventory's
//! `ansible_user` wins over the configuration's `User`.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/reference.rs"]
mod reference;

use std::path::Path;
use std::process::Command;

use cli::{run, text, write};
use keel_testhosts::TestHosts;

const PLAY: &str = "- hosts: behind
  gather_facts: false
  tasks:
    - name: who and where
      command: sh -c 'echo $(id -un)@$(hostname)'
      register: out
      changed_when: false
    - name: show
      debug:
        msg: \"{{ inventory_hostname }} is {{ out.stdout }}\"
";

/// Writes the configuration, `ansible.cfg`, the inventory and the playbook
/// into `dir`.
fn project(th: &TestHosts, dir: &Path) {
    let jump = &th.hosts[0];
    let inner = &th.hosts[1];
    let key = th.client_key.display();
    let kh = th.known_hosts.display();
    let cfg = dir.join("ssh_config");
    write(
        &cfg,
        &format!(
            "# The jump host, under a short name.
Host jump
    HostName {jaddr}
    Port {jport}

Host inner
    HostName {iaddr}
    ProxyJump jump

Host piped
    HostName {iaddr}
    ProxyCommand ssh -F {cfg} -W %h:%p jump
    ForwardAgent yes

Host *
    User root
    IdentityFile {key}
    UserKnownHostsFile {kh}
",
            jaddr = jump.addr,
            jport = jump.port,
            iaddr = inner.addr,
            cfg = cfg.display(),
        ),
    );
    write(
        &dir.join("ansible.cfg"),
        &format!(
            "[defaults]\ninventory = inventory.ini\n\n[ssh_connection]\nssh_args = -F {}\n",
            cfg.display()
        ),
    );
    write(
        &dir.join("inventory.ini"),
        &format!(
            "[behind]
inner
piped
byinventory ansible_host={iaddr} ansible_ssh_common_args='-o ProxyCommand=\"ssh -F {cfg} -W %h:%p jump\"'
asnopw ansible_host=inner ansible_user=keelnopw
",
            iaddr = inner.addr,
            cfg = cfg.display()
        ),
    );
    write(&dir.join("site.yml"), PLAY);
}

/// The `msg` lines of the debug task, sorted.
fn messages(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"msg\": \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .collect();
    v.sort();
    v
}

const EXPECTED: [&str; 4] = [
    "asnopw is keelnopw@t1",
    "byinventory is root@t1",
    "inner is root@t1",
    "piped is root@t1",
];

#[test]
fn ssh_config_and_proxy_command_reach_a_host_behind_a_jump_host() {
    let th = TestHosts::start_jump_chain(1).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(&th, dir);

    let mut k = Command::new(env!("CARGO_BIN_EXE_keel"));
    k.args(["play", "site.yml"]).current_dir(dir);
    reference::scrub(&mut k, dir);
    let ko = run(&mut k);
    let kout = text(&ko.stdout);
    assert!(ko.status.success(), "keel failed:\n{kout}");
    assert_eq!(messages(&kout), EXPECTED, "{kout}");
    // ForwardAgent is not applied, and Keel says so (once).
    let kerr = text(&ko.stderr) + &kout;
    assert_eq!(
        kerr.matches("`forwardagent yes`").count(),
        1,
        "no single warning about ForwardAgent:\n{kerr}"
    );

    let Some(bin) = reference::reference_bin() else {
        return;
    };
    let mut a = reference::tool(&bin, "ansible-playbook", dir);
    a.arg("site.yml");
    let ao = run(&mut a);
    let aout = text(&ao.stdout);
    assert!(ao.status.success(), "ansible-playbook failed:\n{aout}");
    assert_eq!(messages(&aout), EXPECTED, "{aout}");
}
