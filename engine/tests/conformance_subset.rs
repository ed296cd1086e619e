//! The CI slice of the conformance suite: ten of ansible-core 2.19.14's own
//! integration targets that Keel passes, run through `tests/conformance/runner.py
//! --subset` against the `keel` binary this build produced.
//!
//! The runner fetches the ansible-core sdist and builds its reference venv on
//! first use (cached under `/var/cache/keel/conformance`), runs each target
//! under ansible-core and under Keel, and fails when Keel fails one of them.
//! The full table is `scripts/conformance` and `docs/compatibility.md`.

use std::path::Path;
use std::process::Command;

#[test]
fn conformance_subset_passes() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let runner = repo.join("tests/conformance/runner.py");
    let have_python = Command::new("python3")
        .args(["-c", "import venv"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_python {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, so this test may not skip: needs python3 with venv (scripts/test installs it)"
        );
        eprintln!("skipping: python3 with the venv module is missing");
        return;
    }
    let out = Command::new("python3")
        .arg(&runner)
        .args(["--subset", "-j", "2", "--timeout", "300", "--keel"])
        .arg(env!("CARGO_BIN_EXE_keel"))
        .output()
        .expect("running the conformance runner");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "Keel fails part of the conformance subset (see the table above and the logs it names)"
    );
}
