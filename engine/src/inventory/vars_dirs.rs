//! `group_vars/` and `host_vars/` directories, next to inventory sources and
//! next to the playbook. For an entity `name` the first of `name` (a file or a
//! directory), `name.yml`, `name.yaml`, `name.json` is used; a directory
//! contributes all its files, recursively, in sorted order (later files win).
//! Files are read once, when the directory is registered.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::Value;

use crate::diag::{Diagnostic, Pos, Source, Span};
use crate::vars::VarMap;
use crate::yaml::{self, NodeKind};

const EXTENSIONS: [&str; 4] = ["", ".yml", ".yaml", ".json"];

/// One directory holding `group_vars/` and/or `host_vars/`.
#[derive(Debug, Clone)]
pub(crate) struct VarsDir {
    pub base: PathBuf,
    /// Next to the playbook (higher precedence) rather than an inventory source.
    pub playbook: bool,
    pub groups: HashMap<String, Arc<VarMap>>,
    pub hosts: HashMap<String, Arc<VarMap>>,
}

impl VarsDir {
    pub fn new(base: PathBuf, playbook: bool) -> VarsDir {
        VarsDir {
            base,
            playbook,
            groups: HashMap::new(),
            hosts: HashMap::new(),
        }
    }

    /// Reads the files for the given groups and hosts (the inventory passes
    /// every name it knows, plus the localhost names for the implicit
    /// localhost).
    pub fn load(&mut self, groups: &[String], hosts: &[String]) -> Result<(), Diagnostic> {
        self.groups.clear();
        self.hosts.clear();
        let gdir = self.base.join("group_vars");
        if let Some(present) = entries(&gdir) {
            for g in groups {
                if let Some(vars) = read_entity(&gdir, &present, g)? {
                    self.groups.insert(g.clone(), Arc::new(vars));
                }
            }
        }
        let hdir = self.base.join("host_vars");
        if let Some(present) = entries(&hdir) {
            for h in hosts.iter().map(String::as_str) {
                if self.hosts.contains_key(h) {
                    continue;
                }
                if let Some(vars) = read_entity(&hdir, &present, h)? {
                    self.hosts.insert(h.to_string(), Arc::new(vars));
                }
            }
        }
        Ok(())
    }
}

/// The names in `dir`, or `None` when it is not a readable directory. Read
/// once per directory, so that the names of 10,000 hosts cost 10,000 set
/// lookups instead of 80,000 `stat` calls for files that mostly do not exist.
fn entries(dir: &Path) -> Option<HashSet<std::ffi::OsString>> {
    if !dir.is_dir() {
        return None;
    }
    let rd = std::fs::read_dir(dir).ok()?;
    Some(rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
}

/// The merged vars of `dir/name*`, or `None` when no file exists.
/// `present` holds the names in `dir`.
fn read_entity(
    dir: &Path,
    present: &HashSet<std::ffi::OsString>,
    name: &str,
) -> Result<Option<VarMap>, Diagnostic> {
    let files = find_vars_files(dir, present, name);
    if files.is_empty() {
        return Ok(None);
    }
    let mut out = VarMap::new();
    for f in files {
        for (k, v) in read_vars_file(&f)? {
            out.insert(k, v);
        }
    }
    Ok(Some(out))
}

fn find_vars_files(dir: &Path, present: &HashSet<std::ffi::OsString>, name: &str) -> Vec<PathBuf> {
    // A name with a path separator would escape the vars directory.
    if name.contains('/') || name.contains('\\') || name == ".." {
        return Vec::new();
    }
    for ext in EXTENSIONS {
        let file = format!("{name}{ext}");
        if !present.contains(std::ffi::OsStr::new(&file)) {
            continue;
        }
        let p = dir.join(file);
        if p.is_dir() {
            let mut found = Vec::new();
            dir_files(&p, &mut found);
            return found;
        }
        if p.is_file() {
            return vec![p];
        }
    }
    Vec::new()
}

fn dir_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        if p.is_dir() && ext.is_empty() {
            dir_files(&p, found);
        } else if p.is_file() && EXTENSIONS.contains(&ext.as_str()) {
            found.push(p);
        }
    }
}

/// Reads one vars file: a mapping (or nothing) in YAML or JSON.
pub(crate) fn read_vars_file(path: &Path) -> Result<Vec<(String, Value)>, Diagnostic> {
    if path.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            let pos = Pos {
                line: e.line() as u32,
                col: e.column().max(1) as u32,
            };
            Diagnostic::new(format!("invalid JSON in vars file: {e}"))
                .at(Span::new(Source::new(path, text.clone()), pos))
        })?;
        return match json {
            serde_json::Value::Object(m) => Ok(m
                .into_iter()
                .map(|(k, v)| (k, Value::from(minijinja::value::Serde(&v))))
                .collect()),
            serde_json::Value::Null => Ok(Vec::new()),
            _ => Err(Diagnostic::new(format!(
                "vars file '{}' must hold a mapping",
                path.display()
            ))),
        };
    }
    let doc = yaml::load_one(path)?;
    match &doc.kind {
        NodeKind::Null => Ok(Vec::new()),
        NodeKind::Map(entries) => {
            let mut out = Vec::new();
            for (k, v) in entries {
                let key = match &k.kind {
                    NodeKind::Str { value, .. } => value.clone(),
                    NodeKind::Int(i) => i.to_string(),
                    _ => {
                        return Err(k.error(format!(
                            "variable names must be strings, found {}",
                            k.type_name()
                        )))
                    }
                };
                out.push((key, v.to_value()));
            }
            Ok(out)
        }
        _ => Err(doc
            .error(format!(
                "a vars file must hold a mapping, found {}",
                doc.type_name()
            ))
            .hint("write `name: value` pairs at the top level")),
    }
}

/// A file or directory of an inventory (or of its vars) could not be read.
/// Also used by `load.rs`, which sits above this file.
pub(super) fn io_error(path: &Path, e: std::io::Error) -> Diagnostic {
    Diagnostic::new(format!("cannot read inventory '{}': {e}", path.display()))
}
