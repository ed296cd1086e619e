//! POSIX shell quoting: the one way user values reach a remote shell as text.
//!
//! Transport wraps commands with it (the persistent shell's `eval` line, sudo
//! and su), modules build their query and apply scripts with it, and the
//! template filter `quote` exposes it. It depends on nothing else in the crate,
//! so every one of those layers can use it without importing another.

/// Quotes a string for POSIX `sh` so that it is passed as one literal word.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}
