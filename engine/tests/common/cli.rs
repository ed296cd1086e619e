//! Process helpers shared by the CLI-level engine tests (galaxy,
//! collections, the issue 14 repository): run a command and echo its output
//! for the failure log, write fixture files, drive git in a fixture repo.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` and prints its command line and output, so a failing
/// assertion has them in the test's log.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("starting a command");
    eprintln!(
        "$ {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

pub fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Runs git in `dir` with a fixed identity, failing the test on error.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}
