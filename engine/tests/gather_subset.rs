//! Fact gathering's play keywords on a real sshd test host: `gather_subset`
//! (with `!` exclusions, `min`, `all`), `gather_timeout` and `fact_path`,
//! and the hardware collector's `ansible_mounts`, `ansible_devices` and
//! `ansible_device_links`. `keel play` and ansible-playbook 2.19.14 run the
//! same playbook and each leaves its facts on the host as JSON; which
//! collectors each subset brings must agree, and the mounts and devices
//! must have the same keys, types and (for what does not move) values.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/reference.rs"]
mod reference;

use std::collections::BTreeMap;
use std::process::Command;

use cli::{run, text, write};
use keel_testhosts::TestHosts;
use serde_json::Value;

/// The subsets tried, one play each.
const SUBSETS: &[&str] = &[
    "all",
    "min",
    "!all",
    "!all,!min",
    "!min",
    "hardware,!min",
    "network,!all",
    "!hardware",
    "!local",
    "mounts",
];

fn playbook() -> String {
    let mut s = String::new();
    for (i, subset) in SUBSETS.iter().enumerate() {
        let list: Vec<String> = subset.split(',').map(|p| format!("'{p}'")).collect();
        s.push_str(&format!(
            "- hosts: testhosts
  gather_subset: [{}]
  gather_timeout: 5
  fact_path: /srv/facts
  tasks:
    - copy:
        content: \"{{{{ ansible_facts | to_json }}}}\"
        dest: /tmp/facts/{{{{ engine }}}}-{i}.json
    # Facts stay from play to play: each play starts from none.
    - meta: clear_facts
",
            list.join(", ")
        ));
    }
    s
}

/// The facts one engine left for subset `i`.
fn facts(th: &TestHosts, engine: &str, i: usize) -> serde_json::Map<String, Value> {
    let t = th.sh(0, &format!("cat /tmp/facts/{engine}-{i}.json"));
    serde_json::from_str::<Value>(&t)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// Which collectors' facts are present: a few facts stand for each.
fn collectors(f: &serde_json::Map<String, Value>) -> BTreeMap<&'static str, bool> {
    [
        ("platform", "hostname"),
        ("hardware", "mounts"),
        ("devices", "devices"),
        ("network", "interfaces"),
        ("virtual", "virtualization_role"),
        ("local", "local"),
        ("env", "env"),
        ("user", "user_id"),
        ("distribution", "distribution"),
    ]
    .into_iter()
    // ansible-core keeps the local facts as `ansible_local` inside
    // `ansible_facts`; Keel as `local`.
    .map(|(c, key)| {
        (
            c,
            f.contains_key(key) || f.contains_key(&format!("ansible_{key}")),
        )
    })
    .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Keys and value types, recursively; values too except for `moving` keys.
fn shape(v: &Value, moving: &[&str]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let s = if moving.contains(&k.as_str()) {
                        Value::from(kind(v))
                    } else {
                        shape(v, moving)
                    };
                    (k.clone(), s)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| shape(v, moving)).collect()),
        other => other.clone(),
    }
}

/// Sizes that change while the two engines run.
const MOVING: &[&str] = &[
    "block_available",
    "block_used",
    "size_available",
    "inode_available",
    "inode_used",
];

#[test]
fn gather_subset_mounts_and_devices_match_ansible_playbook() {
    let th = TestHosts::start(1).unwrap();
    // The light host's own mounts are all virtual (overlay, tmpfs...), which
    // ansible-core leaves out: a loop-mounted ext4 image gives it a real one.
    th.sh(
        0,
        "mkdir -p /srv/facts /tmp/facts /mnt/disk && printf '{\"here\": 1}' > /srv/facts/t.fact && \
         truncate -s 8M /tmp/disk.img && mkfs.ext4 -q /tmp/disk.img && \
         mount -o loop /tmp/disk.img /mnt/disk",
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(&dir.join("hosts"), &th.inventory_ini(""));
    write(&dir.join("site.yml"), &playbook());

    let mut k = Command::new(env!("CARGO_BIN_EXE_keel"));
    k.args(["play", "-i", "hosts", "-e", "engine=keel", "site.yml"])
        .current_dir(dir);
    reference::scrub(&mut k, dir);
    let ko = run(&mut k);
    assert!(ko.status.success(), "{}", text(&ko.stdout));

    // Checked by themselves, so the test means something without the
    // reference too.
    let all = facts(&th, "keel", 0);
    assert_eq!(all["gather_subset"], serde_json::json!(["all"]));
    assert_eq!(all["module_setup"], Value::Bool(true));
    assert_eq!(all["local"], serde_json::json!({"t": {"here": 1}}));
    let mounts = all["mounts"].as_array().unwrap();

    for m in mounts {
        assert!(m["size_total"].as_u64().unwrap() > 0, "{m}");
        assert!(m["device"].as_str().unwrap().starts_with('/'), "{m}");
    }
    assert!(!all["devices"].as_object().unwrap().is_empty());
    assert!(!facts(&th, "keel", 1).contains_key("mounts"));
    assert_eq!(
        facts(&th, "keel", 3).len(),
        2,
        "!all,!min: only setup's own"
    );

    let Some(bin) = reference::reference_bin() else {
        return;
    };
    let mut a = reference::tool(&bin, "ansible-playbook", dir);
    a.args(["-i", "hosts", "-e", "engine=ansible", "site.yml"]);
    let ao = run(&mut a);
    assert!(ao.status.success(), "{}", text(&ao.stdout));
    for (i, subset) in SUBSETS.iter().enumerate() {
        let (kf, af) = (facts(&th, "keel", i), facts(&th, "ansible", i));

        assert_eq!(collectors(&kf), collectors(&af), "gather_subset {subset}");
        assert_eq!(kf["gather_subset"], af["gather_subset"], "{subset}");
        if af.contains_key("mounts") {
            assert_eq!(
                shape(&kf["mounts"], MOVING),
                shape(&af["mounts"], MOVING),
                "ansible_mounts ({subset})"
            );
            assert_eq!(
                shape(&kf["devices"], &[]),
                shape(&af["devices"], &[]),
                "ansible_devices ({subset})"
            );
            assert_eq!(kf["device_links"], af["device_links"], "{subset}");
        }
    }
}
