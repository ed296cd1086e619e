//! The attribute arguments every file-writing module takes (`mode`, `owner`,
//! `group`), and the shell that brings a path's attributes to them.

use minijinja::Value;

use super::stat::{FileKind, RemoteStat};
use crate::modules::args::{ModeSpec, ModuleArgs, Param};
use crate::modules::{ModuleError, ModuleResult};
use crate::shell::quote;

/// Attribute arguments common to the content-writing modules.
#[derive(Debug, Clone, Default)]
pub struct FileAttrs {
    pub mode: Option<ModeSpec>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// The arguments [`FileAttrs::parse`] reads, for a module's
/// [`Params`](crate::modules::args::Params).
pub const FILE_ATTR_PARAMS: &[Param] = &[
    &["mode"],
    &["owner"],
    &["group"],
    &["seuser"],
    &["serole"],
    &["setype"],
    &["selevel"],
    &["attributes", "attr"],
    &["unsafe_writes"],
];

impl FileAttrs {
    pub fn parse(a: &mut ModuleArgs<'_>) -> Result<FileAttrs, ModuleError> {
        a.ignore(&[
            "seuser",
            "serole",
            "setype",
            "selevel",
            "attributes",
            "attr",
            "unsafe_writes",
        ]);
        Ok(FileAttrs {
            mode: a.mode(&["mode"])?,
            owner: a.string(&["owner"])?,
            group: a.string(&["group"])?,
        })
    }
}

/// The concrete permission bits wanted, if any (`preserve` stands for
/// `preserve`'s source mode).
pub fn resolve_mode(
    attrs: &FileAttrs,
    preserve: Option<u32>,
    st: &RemoteStat,
) -> Result<Option<u32>, ModuleError> {
    match &attrs.mode {
        None => Ok(None),
        Some(ModeSpec::Preserve) => Ok(preserve),
        Some(m) => m.resolve(if st.exists { st.mode } else { 0o644 }, false),
    }
}

/// The shell commands that bring `$p`'s mode and ownership to the wanted
/// values, and whether anything differs from `st`.
pub fn attr_commands(
    st: &RemoteStat,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> (String, bool) {
    let mut s = String::new();
    let mut changed = false;
    if let Some(m) = mode {
        if !st.exists || st.mode != m {
            s.push_str(&format!("chmod {:04o} -- \"$p\"\n", m));
            changed = true;
        }
    }
    if let Some(o) = owner {
        if !st.exists || (st.owner != o && st.uid.to_string() != o) {
            s.push_str(&format!("chown -h -- {} \"$p\"\n", quote(o)));
            changed = true;
        }
    }
    if let Some(g) = group {
        if !st.exists || (st.group != g && st.gid.to_string() != g) {
            s.push_str(&format!("chgrp -h -- {} \"$p\"\n", quote(g)));
            changed = true;
        }
    }
    (s, changed)
}

/// The common return values of a file written or inspected on the host.
pub fn file_result_values(path_key: &str, path: &str, st: &RemoteStat) -> Vec<(String, Value)> {
    let mut v = vec![(path_key.to_string(), Value::from(path))];
    if st.exists {
        v.push(("mode".into(), st.mode_str().into()));
        v.push(("owner".into(), st.owner.clone().into()));
        v.push(("group".into(), st.group.clone().into()));
        v.push(("uid".into(), st.uid.into()));
        v.push(("gid".into(), st.gid.into()));
        v.push(("size".into(), st.size.into()));
        v.push((
            "state".into(),
            st.kind.map(FileKind::state_name).unwrap_or("file").into(),
        ));
    } else {
        v.push(("state".into(), "absent".into()));
    }
    v
}

/// Puts a written file's attributes into the result, as `copy` reports them.
pub fn fill_attrs(res: &mut ModuleResult, st: &RemoteStat) {
    if !st.exists {
        return;
    }
    for (k, v) in [
        ("mode", Value::from(st.mode_str())),
        ("owner", st.owner.clone().into()),
        ("group", st.group.clone().into()),
        ("uid", st.uid.into()),
        ("gid", st.gid.into()),
        ("size", st.size.into()),
        ("state", "file".into()),
    ] {
        res.data.insert(k.into(), v);
    }
}
