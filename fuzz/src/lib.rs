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

/// True when the input's `[a:b]` host ranges, multiplied per line and added
/// over the lines, name more than `limit` hosts (an estimate on the safe
/// side: steps are ignored and a letter range counts as 52). The inventory
/// targets skip such inputs: a line naming a million hosts is legal (the
/// engine's limit) and takes seconds, and once the corpus held a few, the
/// INI target slowed from 3 300 to 115 executions per second. Big ranges
/// are the unit tests' job (`inventory::repeated_members_…`, 60 000 hosts).
pub fn names_too_many_hosts(text: &str, limit: u64) -> bool {
    let mut total: u64 = 0;
    for line in text.lines() {
        let mut product: u64 = 1;
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            let Some(close) = after.find(']') else {
                break;
            };
            let inside = &after[..close];
            rest = &after[close + 1..];
            if !inside.contains(':') {
                continue;
            }
            let mut parts = inside.split(':');
            let (a, b) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let size = match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                (Ok(a), Ok(b)) => b.saturating_sub(a).saturating_add(1),
                (Err(_), Ok(b)) => b.saturating_add(1),
                _ => 52,
            };
            product = product.saturating_mul(size.max(1));
        }
        total = total.saturating_add(product);
        if total > limit {
            return true;
        }
    }
    false
}

/// The most hosts an inventory target's input may name.
pub const HOST_BUDGET: u64 = 20_000;
