//! `keel ansible`, the ad-hoc command, through the `keel` binary next to the
//! reference `ansible`: `--list-hosts` with patterns and `--limit` (empty
//! items between commas ignored, as ansible-core's pattern splitting does),
//! and a one-module run whose exit status matches (0 when it worked, 2 when
//! the module failed), `include_role` of a role on the roles path included,
//! and of one in the working directory's `roles/`.

#[path = "common/reference.rs"]
mod reference;

use std::path::Path;
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("starting a command");
    eprintln!(
        "$ {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn keel(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(dir);
    reference::scrub(&mut c, dir);
    c.arg("ansible");
    c
}

fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("hosts.yml"),
        "all:\n  hosts:\n    host1:\n    host2:\n    host3:\n  children:\n    web:\n      hosts:\n        host2:\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.path().join("roles/role1/tasks")).unwrap();
    std::fs::write(
        d.path().join("roles/role1/tasks/main.yml"),
        "- debug:\n    msg: In role1\n",
    )
    .unwrap();
    d
}

#[test]
fn list_hosts_matches_ansible() {
    let Some(bin) = reference::reference_bin() else {
        return;
    };
    let d = workdir();
    let cases: &[&[&str]] = &[
        &["all"],
        &[",,"],
        &["all", "--limit", ",,host1"],
        &["all", "--limit", "host1, ,    ,host3"],
        &["host1,,host3"],
        &["web"],
        &["all:!web"],
        &["all", "--limit", ""],
    ];
    for case in cases {
        let mut k = keel(d.path());
        k.args(["-i", "hosts.yml", "--list-hosts"]).args(*case);
        let mut a = reference::tool(&bin, "ansible", d.path());
        a.args(["-i", "hosts.yml", "--list-hosts"]).args(*case);
        let (ko, ao) = (run(&mut k), run(&mut a));
        assert_eq!(ko.status.code(), ao.status.code(), "{case:?}");
        assert_eq!(
            String::from_utf8_lossy(&ko.stdout),
            String::from_utf8_lossy(&ao.stdout),
            "{case:?}"
        );
    }
}

#[test]
fn a_module_run_exits_as_ansible_does() {
    let Some(bin) = reference::reference_bin() else {
        return;
    };
    let d = workdir();
    let py = bin.join("python");
    let cases: &[&[&str]] = &[
        &["-m", "debug", "-a", "msg=hello"],
        &["-m", "include_role", "-a", "name=role1"],
        &["-m", "fail", "-a", "msg=boom"],
        &["-m", "command", "-a", "true"],
    ];
    for case in cases {
        let inv = "localhost,";
        let mut k = keel(d.path());
        k.args(["-i", inv, "localhost", "-c", "local"])
            .args(*case)
            .env("ANSIBLE_ROLES_PATH", "./roles");
        let mut a = reference::tool(&bin, "ansible", d.path());
        a.args(["-i", inv, "localhost", "-c", "local"])
            .args(*case)
            .arg("-e")
            .arg(format!("ansible_python_interpreter={}", py.display()))
            .env("ANSIBLE_ROLES_PATH", "./roles");
        let (ko, ao) = (run(&mut k), run(&mut a));
        assert_eq!(ko.status.code(), ao.status.code(), "{case:?}");
    }
    // With no roles path configured, the working directory's `roles/` is
    // searched, as ansible's ad-hoc play has the working directory as base.
    let mut k = keel(d.path());
    k.args(["-i", "localhost,", "localhost", "-c", "local"])
        .args(["-m", "include_role", "-a", "name=role1"]);
    let mut a = reference::tool(&bin, "ansible", d.path());
    a.args(["-i", "localhost,", "localhost", "-c", "local"])
        .args(["-m", "include_role", "-a", "name=role1"]);
    let (ko, ao) = (run(&mut k), run(&mut a));
    assert_eq!(ao.status.code(), Some(0));
    assert_eq!(ko.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ko.stdout).contains("In role1"));
    // What the module said is shown.
    let out = run(keel(d.path())
        .args(["-i", "localhost,", "localhost", "-c", "local"])
        .args(["-m", "debug", "-a", "msg=hello-from-adhoc"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-from-adhoc"));
}

/// What `ansible` 2.19.14 printed (its `minimal` callback) for each case,
/// run in the working directory with `-c local`.
const MINIMAL_OUTPUT: &[(&[&str], &str)] = &[
    (
        &["-m", "debug", "-a", "msg=hello"],
        "localhost | SUCCESS => {\n    \"msg\": \"hello\"\n}\n",
    ),
    (
        &["-m", "command", "-a", "echo hi"],
        "localhost | CHANGED | rc=0 >>\nhi\n",
    ),
    (
        &["-m", "shell", "-a", "echo out; echo err >&2; exit 3"],
        "[ERROR]: Task failed: Module failed: non-zero return code\nOrigin: <adhoc 'shell' task>\n\n\
         {'action': 'shell', 'args': {'_raw_params': 'echo out; echo err >&2; exit 3'}, 'timeout': 0, 'async_val': 0, 'poll': 15}\n\n\
         localhost | FAILED | rc=3 >>\nouterrnon-zero return code\n",
    ),
    (
        &["-m", "include_vars", "-a", "vars/inc.yml"],
        "localhost | SUCCESS => {\n    \"ansible_facts\": {\n        \"porter\": \"cable\"\n    },\n    \
         \"ansible_included_var_files\": [\n        \"WORKDIR/vars/inc.yml\"\n    ],\n    \"changed\": false\n}\n",
    ),
    (
        &["-m", "include_vars", "-a", "dir=vars"],
        "localhost | SUCCESS => {\n    \"ansible_facts\": {\n        \"porter\": \"cable\"\n    },\n    \
         \"ansible_included_var_files\": [\n        \"vars/inc.yml\"\n    ],\n    \"changed\": false\n}\n",
    ),
    (
        &["-m", "ping"],
        "localhost | SUCCESS => {\n    \"changed\": false,\n    \"ping\": \"pong\"\n}\n",
    ),
];

#[test]
fn output_is_the_minimal_callback_s() {
    let d = workdir();
    std::fs::create_dir_all(d.path().join("vars")).unwrap();
    std::fs::write(d.path().join("vars/inc.yml"), "porter: cable\n").unwrap();
    let workdir = std::fs::canonicalize(d.path()).unwrap();
    let base = |c: &mut Command| {
        c.args(["-i", "localhost,", "localhost", "-c", "local"]);
    };
    for (args, expected) in MINIMAL_OUTPUT {
        let expected = expected.replace("WORKDIR", &workdir.display().to_string());
        let mut k = keel(d.path());
        base(&mut k);
        let out = run(k.args(*args));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{args:?}");
        let Some(bin) = reference::reference_bin() else {
            continue;
        };
        let mut a = reference::tool(&bin, "ansible", d.path());
        base(&mut a);
        a.args(*args).arg("-e").arg(format!(
            "ansible_python_interpreter={}",
            bin.join("python").display()
        ));
        let theirs = run(&mut a);
        assert_eq!(out.stdout, theirs.stdout, "{args:?}");
        assert_eq!(out.status.code(), theirs.status.code(), "{args:?}");
    }
}

#[test]
fn no_matching_host_is_two_warnings_on_stderr() {
    let d = workdir();
    let out = run(keel(d.path()).args(["-i", "localhost,", "nomatch", "-m", "ping"]));
    // What ansible 2.19.14 prints, all on stderr, exiting 0.
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "[WARNING]: Could not match supplied host pattern, ignoring: nomatch\n\
         [WARNING]: No hosts matched, nothing to do\n"
    );
    let Some(bin) = reference::reference_bin() else {
        return;
    };
    let theirs = run(reference::tool(&bin, "ansible", d.path()).args([
        "-i",
        "localhost,",
        "nomatch",
        "-m",
        "ping",
    ]));
    assert_eq!(theirs.status.code(), out.status.code());
    assert_eq!(theirs.stdout, out.stdout);
    assert!(
        String::from_utf8_lossy(&theirs.stderr).ends_with(&*String::from_utf8_lossy(&out.stderr)),
        "{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
}
