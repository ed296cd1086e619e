//! `keel play`'s check of the inventory before anything runs, next to the
//! reference `ansible-playbook`: the warning for an inventory without hosts
//! (and `localhost_warning` turning it off), the error when `--limit`
//! leaves none of the inventory's hosts (`--limit localhost` included, when
//! localhost is only implicit), and an inventory that fails to load, all of
//! them under `--syntax-check` too. Exit status, stdout and the lines that
//! matter on stderr must be ansible-playbook's.

#[path = "common/reference.rs"]
mod reference;

use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("starting a command");
    eprintln!(
        "$ {cmd:?}\n--- status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| std::fs::write(d.path().join(name), text).unwrap();
    w("hosts", "[web]\nw1 ansible_connection=local\n");
    // A group whose children hold `all`: found by the inventory_yaml fuzzer.
    w(
        "loop.yml",
        "acharacterall:\n  hosts:\n    good1: {}\n  children:\n    all:\n",
    );
    w(
        "site.yml",
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: hi\n",
    );
    d
}

const EMPTY: &str = "provided hosts list is empty, only localhost is available. \
                     Note that the implicit localhost does not match 'all'";
const NO_HOSTS: &str =
    "Specified inventory, host pattern and/or --limit leaves us with no hosts to target.";
const NO_MATCH: &str = "Could not match supplied host pattern, ignoring: nomatch";
const LOOP: &str =
    "Adding group 'acharacterall' as child to 'all' creates a recursive dependency loop.";

/// Arguments, environment, lines both must print on stderr, lines neither may.
type Case<'a> = (
    &'a [&'a str],
    &'a [(&'a str, &'a str)],
    &'a [&'a str],
    &'a [&'a str],
);

#[test]
fn host_list_checks_match_ansible_playbook() {
    let Some(bin) = reference::reference_bin() else {
        return;
    };
    let d = workdir();
    let py = bin.join("python");
    let cases: &[Case] = &[
        (
            &["-i", "hosts", "--limit", "nomatch"],
            &[],
            &[NO_MATCH, NO_HOSTS],
            &[EMPTY],
        ),
        (
            &["-i", "hosts", "--limit", "nomatch", "--syntax-check"],
            &[],
            &[NO_HOSTS],
            &[],
        ),
        (
            &["-i", "hosts", "--limit", "localhost"],
            &[],
            &[NO_HOSTS],
            &[],
        ),
        (
            &["-i", "hosts", "--limit", "w1", "--syntax-check"],
            &[],
            &[],
            &[NO_HOSTS, EMPTY],
        ),
        (&["-i", "nonexist"], &[], &[EMPTY], &[NO_HOSTS]),
        (
            &["-i", "nonexist", "--limit", "nomatch"],
            &[],
            &[EMPTY],
            &[NO_HOSTS],
        ),
        (&["-i", "nonexist", "--syntax-check"], &[], &[EMPTY], &[]),
        (
            &["-i", "nonexist"],
            &[("ANSIBLE_LOCALHOST_WARNING", "false")],
            &[],
            &[EMPTY],
        ),
        (&["-i", "loop.yml", "--syntax-check"], &[], &[LOOP], &[]),
    ];
    for (args, env, must, must_not) in cases {
        let mut k = Command::new(env!("CARGO_BIN_EXE_keel"));
        k.current_dir(d.path());
        reference::scrub(&mut k, d.path());
        k.arg("play")
            .args(*args)
            .arg("site.yml")
            .envs(env.iter().copied());
        let mut a = reference::tool(&bin, "ansible-playbook", d.path());
        a.args(*args)
            .arg("site.yml")
            .arg("-e")
            .arg(format!("ansible_python_interpreter={}", py.display()))
            .envs(env.iter().copied());
        let (ko, ao) = (run(&mut k), run(&mut a));
        assert_eq!(ko.status.code(), ao.status.code(), "{args:?} {env:?}");
        let (kerr, aerr) = (
            String::from_utf8_lossy(&ko.stderr),
            String::from_utf8_lossy(&ao.stderr),
        );
        for line in *must {
            assert!(
                aerr.contains(line),
                "ansible-playbook {args:?}: no {line:?}"
            );
            assert!(kerr.contains(line), "keel play {args:?}: no {line:?}");
        }
        for line in *must_not {
            assert!(!aerr.contains(line), "ansible-playbook {args:?}: {line:?}");
            assert!(!kerr.contains(line), "keel play {args:?}: {line:?}");
        }
        if args.contains(&"--syntax-check") {
            assert_eq!(
                String::from_utf8_lossy(&ko.stdout),
                String::from_utf8_lossy(&ao.stdout),
                "{args:?}"
            );
        }
    }
}
