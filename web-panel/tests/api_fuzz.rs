//! The API against its own OpenAPI document (issue 18): `scripts/api-fuzz`
//! with a small example count, so `scripts/test` keeps schemathesis' checks
//! (no 5xx, responses that match the document, as an admin and as an
//! ordinary user) in every run. The full run is the script with a larger
//! count (docs/reliability.md).
//!
//! Needs schemathesis in /opt/schemathesis (scripts/test installs it); the
//! test skips without it, or fails when `KEEL_REQUIRE_REAL` is set.

use std::path::Path;
use std::process::Command;

#[test]
fn schemathesis_finds_no_server_error_or_schema_mismatch() {
    let st = Path::new("/opt/schemathesis/bin/st");
    if !st.exists() {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "schemathesis is not installed in /opt/schemathesis"
        );
        eprintln!("skipped: schemathesis is not installed in /opt/schemathesis");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/api-fuzz"))
        .arg("4")
        .env("KEEL_PANEL_BIN", env!("CARGO_BIN_EXE_keel-panel"))
        .env_remove("KEEL_DATABASE_URL")
        .output()
        .expect("run scripts/api-fuzz");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "scripts/api-fuzz failed");
}
