//! The reference ansible-core 2.19.14, for tests that compare Keel with it
//! at run time: the bin directory of the conformance runner's venv
//! (`tests/conformance/runner.py --ensure-venv`). Where it cannot be built
//! the tests that need it skip, unless `KEEL_REQUIRE_REAL` is set, when they
//! fail.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bin directory of a venv with ansible-core 2.19.14, or `None` (skip).
pub fn reference_bin() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("python3")
        .arg(repo.join("tests/conformance/runner.py"))
        .arg("--ensure-venv")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            // The last line: the runner's answer, after anything a tool it
            // ran while building the venv printed.
            let text = String::from_utf8_lossy(&o.stdout);
            let bin = PathBuf::from(text.trim().lines().last().unwrap_or_default());
            if bin.join("ansible-playbook").exists() {
                return Some(bin);
            }
            panic_or_skip(&format!("no ansible-playbook in {}", bin.display()))
        }
        Ok(o) => panic_or_skip(&format!(
            "the reference venv could not be built: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => panic_or_skip(&format!("python3 is missing: {e}")),
    }
}

fn panic_or_skip(why: &str) -> Option<PathBuf> {
    assert!(
        std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
        "KEEL_REQUIRE_REAL is set, so this test may not skip: {why}"
    );
    eprintln!("skipping: {why}");
    None
}

/// A command of the reference in `dir`, with its home and temporary files
/// kept under `dir` and no `ANSIBLE_*` setting inherited from the caller.
pub fn tool(bin: &Path, name: &str, dir: &Path) -> Command {
    let mut c = Command::new(bin.join(name));
    c.current_dir(dir);
    scrub(&mut c, dir);
    c.env("ANSIBLE_LOCAL_TEMP", dir.join(".ansible-tmp"))
        .env("ANSIBLE_HOME", dir.join(".ansible-home"));
    c
}

/// Removes every `ANSIBLE_*` variable and points `HOME` at `dir/home`, so
/// neither the caller's settings nor its `~/.ansible.cfg` leak in.
pub fn scrub(c: &mut Command, dir: &Path) {
    for (k, _) in std::env::vars() {
        if k.starts_with("ANSIBLE_") {
            c.env_remove(k);
        }
    }
    let home = dir.join("home");
    let _ = std::fs::create_dir_all(&home);
    c.env("HOME", home);
}
