//! Variable precedence, end to end: one variable per level, defined at that
//! level and at every level below it. Each must resolve to its own level's
//! value, which proves every level beats all the lower ones (Ansible's
//! documented order, role defaults up to extra vars). Runs on the local
//! transport: precedence is the executor's business, not the host's.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use keel::executor::{run_playbook, RunOptions};
use keel::inventory::Inventory;
use keel::output::{Event, MemorySink};
use keel::playbook::{load_playbook, ResolveOptions};

/// Levels from lowest to highest precedence.
const LEVELS: &[&str] = &[
    "role_defaults",
    "inv_group_all",
    "inv_group_parent",
    "inv_group_child",
    "inv_group_vars_all",
    "pb_group_vars_all",
    "inv_group_vars_child",
    "pb_group_vars_child",
    "inv_host_inline",
    "inv_host_vars",
    "pb_host_vars",
    "play_vars",
    "vars_files",
    "role_vars",
    "block_vars",
    "task_vars",
    "include_vars",
    "set_fact",
    "role_params",
    "extra_vars",
];

/// `name: value` lines for every variable level `level` must define.
fn vars_at(level: usize, indent: &str, sep: &str) -> String {
    (level..LEVELS.len())
        .map(|k| format!("{indent}v{k}{sep}{}\n", LEVELS[level]))
        .collect()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn idx(name: &str) -> usize {
    LEVELS.iter().position(|l| *l == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_beats_the_ones_below() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inv = d.join("inv");
    let pb = d.join("pb");

    let ini_line = |name: &str| -> String {
        (idx(name)..LEVELS.len())
            .map(|k| format!(" v{k}={name}"))
            .collect()
    };
    write(
        &inv.join("hosts.ini"),
        &format!(
            "[child]\nlocalhost ansible_connection=local{}\n\n[parent:children]\nchild\n\n[all:vars]\n{}\n[parent:vars]\n{}\n[child:vars]\n{}\n",
            ini_line("inv_host_inline"),
            vars_at(idx("inv_group_all"), "", "="),
            vars_at(idx("inv_group_parent"), "", "="),
            vars_at(idx("inv_group_child"), "", "="),
        ),
    );
    write(
        &inv.join("group_vars/all.yml"),
        &vars_at(idx("inv_group_vars_all"), "", ": "),
    );
    write(
        &pb.join("group_vars/all.yml"),
        &vars_at(idx("pb_group_vars_all"), "", ": "),
    );
    write(
        &inv.join("group_vars/child.yml"),
        &vars_at(idx("inv_group_vars_child"), "", ": "),
    );
    write(
        &pb.join("group_vars/child.yml"),
        &vars_at(idx("pb_group_vars_child"), "", ": "),
    );
    write(
        &inv.join("host_vars/localhost.yml"),
        &vars_at(idx("inv_host_vars"), "", ": "),
    );
    write(
        &pb.join("host_vars/localhost.yml"),
        &vars_at(idx("pb_host_vars"), "", ": "),
    );
    write(
        &pb.join("roles/r/defaults/main.yml"),
        &vars_at(idx("role_defaults"), "", ": "),
    );
    write(
        &pb.join("roles/r/vars/main.yml"),
        &vars_at(idx("role_vars"), "", ": "),
    );
    write(
        &pb.join("vars_file.yml"),
        &vars_at(idx("vars_files"), "", ": "),
    );
    write(
        &pb.join("included.yml"),
        &vars_at(idx("include_vars"), "", ": "),
    );

    let all: Vec<String> = (0..LEVELS.len())
        .map(|k| format!("{{{{ v{k} }}}}"))
        .collect();
    write(
        &pb.join("roles/r/tasks/main.yml"),
        &format!(
            "- include_vars: {inc}\n- set_fact:\n{sf}- block:\n    - name: check\n      debug:\n        msg: \"{msg}\"\n      vars:\n{tv}  vars:\n{bv}",
            inc = pb.join("included.yml").display(),
            sf = vars_at(idx("set_fact"), "    ", ": "),
            msg = all.join("|"),
            tv = vars_at(idx("task_vars"), "        ", ": "),
            bv = vars_at(idx("block_vars"), "    ", ": "),
        ),
    );
    write(
        &pb.join("site.yml"),
        &format!(
            "- hosts: all\n  gather_facts: false\n  vars:\n{pv}  vars_files:\n    - vars_file.yml\n  roles:\n    - role: r\n{rp}",
            pv = vars_at(idx("play_vars"), "    ", ": "),
            rp = vars_at(idx("role_params"), "      ", ": "),
        ),
    );

    let mut extra = keel::vars::VarMap::new();
    for k in idx("extra_vars")..LEVELS.len() {
        extra.insert(format!("v{k}"), minijinja::Value::from("extra_vars"));
    }
    let playbook = load_playbook(&pb.join("site.yml"), &ResolveOptions::default()).unwrap();
    let mut inventory = Inventory::load(&[inv.join("hosts.ini").display().to_string()]).unwrap();
    inventory.add_vars_dir(&pb).unwrap();
    let sink = Arc::new(MemorySink::default());
    let opts = RunOptions {
        extra_vars: extra,
        ..Default::default()
    };
    let summary = run_playbook(&playbook, inventory, opts, sink.clone()).await;
    assert_eq!(summary.exit_code(), 0, "{:?}", sink.events.lock());

    let events = sink.events.lock();
    let msg = events
        .iter()
        .filter_map(|e| match e {
            Event::HostResult(r) => r
                .result
                .get("msg")
                .and_then(|m| m.as_str())
                .map(str::to_string),
            _ => None,
        })
        .next_back()
        .expect("the check task reported a message");
    let got: Vec<&str> = msg.split('|').collect();
    for (k, level) in LEVELS.iter().enumerate() {
        assert_eq!(
            got.get(k).copied(),
            Some(*level),
            "v{k} should come from {level}; got {msg}"
        );
    }
}
