//! The API against its own OpenAPI document (issue 18): `scripts/api-fuzz`
//! with a small example count, on SQLite and on a real PostgreSQL, so
//! `scripts/test` keeps schemathesis' checks in every run: no 5xx,
//! responses that match the document, as an admin and as an ordinary user,
//! and (the `role_matrix` check of `scripts/api_fuzz_hooks.py`) no 2xx to
//! the ordinary user from a platform-admin operation or from someone
//! else's site, server, job or key. The full run is the script with a
//! larger count (docs/reliability.md).
//!
//! Needs schemathesis in /opt/schemathesis (scripts/test installs it); the
//! test skips without it, or fails when `KEEL_REQUIRE_REAL` is set.

use std::path::Path;
use std::process::Command;

use keel_panel::testsupport::PgServer;

/// Examples per operation and role: enough to walk every operation with
/// positive and negative data, small enough for every test run.
const EXAMPLES: &str = "2";

fn run_api_fuzz(backend: &str) {
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
        .args([EXAMPLES, backend])
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
    assert!(out.status.success(), "scripts/api-fuzz failed on {backend}");
    // Both roles ran, and the user's run carried the role-matrix check.
    assert!(text.contains("== schemathesis as user"), "{text}");
    assert!(text.contains("== schemathesis as admin"), "{text}");
    assert!(text.contains("== someone else's objects: {"), "{text}");
}

#[test]
fn schemathesis_finds_nothing_on_sqlite() {
    run_api_fuzz("sqlite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_on_postgres() {
    let url = PgServer::shared().fresh_database().await;
    tokio::task::spawn_blocking(move || run_api_fuzz(&url))
        .await
        .unwrap();
}
