//! The one diff shape modules report (`--diff`): a before/after pair of
//! texts with a header for each side, rendered as a unified diff by the
//! executor.
//!
//! Files diff as their text ([`file_diff`], [`text_diff`]; a missing side is
//! `/dev/null`). Everything else (a user, a unit, a mount, a path's mode)
//! diffs as `key: value` lines ([`state_diff`]), one per attribute, in the
//! order the module gives them. ansible-core 2.19 shows such objects as
//! sorted JSON under bare `before`/`after` headers; Keel keeps the line form,
//! which the tests and the human output already pin, and names the object in
//! the header instead.

use minijinja::Value;

use crate::modules::args::dict;
use crate::modules::FileDiff;

/// A before/after diff of a file's text (`/dev/null` for a missing side).
pub fn text_diff(path: &str, before: Option<&str>, after: Option<&str>) -> FileDiff {
    FileDiff {
        before_header: if before.is_some() {
            path.into()
        } else {
            "/dev/null".into()
        },
        after_header: if after.is_some() {
            path.into()
        } else {
            "/dev/null".into()
        },
        before: before.unwrap_or("").to_string(),
        after: after.unwrap_or("").to_string(),
    }
}

/// A diff of a file's bytes (shown as text), both sides named `path`.
pub fn file_diff(path: &str, before: &[u8], after: &[u8]) -> FileDiff {
    FileDiff {
        before_header: path.to_string(),
        after_header: path.to_string(),
        before: String::from_utf8_lossy(before).into_owned(),
        after: String::from_utf8_lossy(after).into_owned(),
    }
}

/// A before/after diff of a named object's attributes, one `key: value`
/// line each. An empty side stands for "the object does not exist".
pub fn state_diff(name: &str, before: &[(&str, String)], after: &[(&str, String)]) -> FileDiff {
    let render = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect::<String>()
    };
    FileDiff {
        before_header: name.to_string(),
        after_header: name.to_string(),
        before: render(before),
        after: render(after),
    }
}

/// [`state_diff`] of a path, whose first line names it (`path: ...`), as
/// Ansible's file modules put the path in their before/after objects.
pub fn path_state_diff(
    path: &str,
    before: &[(&str, String)],
    after: &[(&str, String)],
) -> FileDiff {
    let mut b: Vec<(&str, String)> = vec![("path", path.to_string())];
    b.extend(before.iter().cloned());
    let mut a: Vec<(&str, String)> = vec![("path", path.to_string())];
    a.extend(after.iter().cloned());
    state_diff(path, &b, &a)
}

/// A diff as ansible-core returns it in a task's result (`result.diff`):
/// `before`, `after` and their headers. Decrypted vault values are masked,
/// as in the printed diff, so the result carries no secret the diff hides.
pub fn diff_value(d: &FileDiff) -> Value {
    dict([
        (
            "before",
            Value::from(crate::vault::mask(&d.before).as_ref()),
        ),
        ("after", Value::from(crate::vault::mask(&d.after).as_ref())),
        ("before_header", Value::from(d.before_header.as_str())),
        ("after_header", Value::from(d.after_header.as_str())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_state_diff_is_a_state_diff_led_by_the_path() {
        let d = path_state_diff("/x", &[("mode", "0644".into())], &[("mode", "0600".into())]);
        assert_eq!(d.before, "path: /x\nmode: 0644\n");
        assert_eq!(d.after, "path: /x\nmode: 0600\n");
        assert_eq!(
            (d.before_header.as_str(), d.after_header.as_str()),
            ("/x", "/x")
        );
    }
}
