//! Helpers shared by the fuzz targets in `fuzz_targets/`: a scratch directory
//! for parsers that only read files, and the guard that keeps fuzz inputs away
//! from anything with side effects outside the process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One scratch directory per fuzzing process, removed when the process exits
/// normally (libFuzzer's own exit paths may leave it in /tmp).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("create scratch dir"))
        .path()
}

/// Writes `text` to `name` inside the scratch directory and returns its path.
pub fn write_scratch(name: &str, text: &str) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, text).expect("write scratch file");
    path
}

/// True when the input may do something outside the parser: a lookup (the
/// `pipe` lookup runs a shell command, `password` writes files), or a path
/// into /dev, /proc or /sys (a read of /dev/zero or /dev/stdin never ends).
/// Those inputs are skipped: the fuzzer is after parser panics, not after
/// running what a playbook asks for.
pub fn has_side_effects(text: &str) -> bool {
    let words = text.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    for w in words {
        if matches!(w, "lookup" | "query" | "q" | "pipe" | "env" | "password") {
            return true;
        }
    }
    text.contains("/dev") || text.contains("/proc") || text.contains("/sys")
}
