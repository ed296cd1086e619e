//! `include_vars`: an executor action (it changes the host's variables, not
//! the host), called from `actions.rs`. It follows ansible-core's action
//! plugin: a `file` (or free-form name) is looked up the task's search stack
//! under `vars/` ([`crate::search`]); a `dir` is walked in sorted order down
//! to `depth`, filtered by `files_matching`, `ignore_files` and `extensions`;
//! the result can be nested under `name` and merged with `hash_behaviour`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use minijinja::value::ValueKind;
use minijinja::Value;

use crate::output::Status;
use crate::playbook::plan::Task;
use crate::template::{Scope, TemplateOrigin};
use crate::vars::VarMap;

use super::host::PlayCtx;
use super::host::{ser, value_to_map, HostState};
use super::result::{ExecError, SingleResult};

const DEFAULT_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];
const DIR_ARGS: [&str; 6] = [
    "dir",
    "depth",
    "files_matching",
    "ignore_files",
    "extensions",
    "ignore_unknown_extensions",
];
const FILE_ARGS: [&str; 2] = ["file", "_raw_params"];
const ALL_ARGS: [&str; 2] = ["name", "hash_behaviour"];

/// What a directory walk keeps: the filters of the `dir` form.
struct DirFilter {
    depth: usize,
    matching: Option<regex::Regex>,
    ignore: Vec<regex::Regex>,
    extensions: Vec<String>,
    ignore_unknown: bool,
}

/// Files read so far, the variables they hold, or the first failure's message.
#[derive(Default)]
struct Loaded {
    files: Vec<PathBuf>,
    vars: VarMap,
}

/// Runs `include_vars` for one host.
pub(super) fn run(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<SingleResult, ExecError> {
    let templar = &ctx.shared.templar;
    let fail = ExecError::failed;
    let args = templar
        .render_value(&ser(&task.args), scope, origin)
        .map_err(|e| fail(e.to_string()))?;
    let args = value_to_map(&args).unwrap_or_default();

    let (mut dirs, mut files) = (0, 0);
    for k in args.keys() {
        if DIR_ARGS.contains(&k.as_str()) {
            dirs += 1;
        } else if FILE_ARGS.contains(&k.as_str()) {
            files += 1;
        } else if !ALL_ARGS.contains(&k.as_str()) {
            return Err(fail(format!("{k} is not a valid option in include_vars")));
        }
    }
    if dirs > 0 && files > 0 {
        return Err(fail(
            "You are mixing file only and dir only arguments, these are incompatible".into(),
        ));
    }
    let text = |k: &str| {
        args.get(k)
            .filter(|v| !v.is_none() && !v.is_undefined())
            .map(|v| v.to_string())
    };

    let mut loaded = Loaded::default();
    let outcome: Result<(), String> = if let Some(dir) = text("dir") {
        dir_filter(&args).and_then(|filter| {
            let root = root_dir(task, &dir);
            if !root.exists() {
                Err(format!("{} directory does not exist", root.display()))
            } else if !root.is_dir() {
                Err(format!("{} is not a directory", root.display()))
            } else {
                load_dir(task, &root, &filter, &mut loaded)
            }
        })
    } else {
        let name = text("file").or_else(|| {
            text("_raw_params").map(|s| s.trim_end_matches('\n').trim_start().to_string())
        });
        match name {
            None => Err("Could not find file on the Ansible Controller.\nIf you are using a \
                         module and expect the file to exist on the remote, see the remote_src option"
                .to_string()),
            Some(name) => crate::search::find(&origin.search_paths, Some("vars"), &name)
                .map_err(|e| e.to_string())
                .and_then(|path| load_file(&path, None, &mut loaded)),
        }
    };

    let mut vars = loaded.vars;
    let mut r = VarMap::new();
    r.insert("changed".into(), Value::from(false));
    if let Err(message) = outcome {
        r.insert("failed".into(), Value::from(true));
        r.insert("message".into(), Value::from(message));
        r.insert("ansible_facts".into(), ser(VarMap::new()));
        r.insert(
            "ansible_included_var_files".into(),
            ser(Vec::<String>::new()),
        );
        return Ok(SingleResult::new(Status::Failed, r));
    }
    if let Some(name) = text("name") {
        let mut nested = VarMap::new();
        nested.insert(name, ser(&vars));
        vars = nested;
    }
    if text("hash_behaviour").as_deref() == Some("merge") {
        // Merge into what the host already has under the same names.
        for (k, v) in vars.iter_mut() {
            if let Some(raw) = scope.get_raw(k) {
                let old = templar
                    .render_value(raw, scope, origin)
                    .map_err(|e| fail(e.to_string()))?;
                *v = merge_hash(&old, v);
            }
        }
    }
    {
        let mut h = host.lock();
        let iv = Arc::make_mut(&mut h.include_vars);
        for (k, v) in &vars {
            iv.insert(k.clone(), v.clone());
        }
    }
    r.insert("ansible_facts".into(), ser(&vars));
    r.insert(
        "ansible_included_var_files".into(),
        ser(loaded
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()),
    );
    r.insert("failed".into(), Value::from(false));
    Ok(SingleResult::new(Status::Ok, r))
}

/// Where a relative `dir` is: under the role's `vars/` (or the role itself
/// when it starts with `vars/`), else next to the task's file.
fn root_dir(task: &Task, dir: &str) -> PathBuf {
    match &task.role {
        Some(role) if dir.split('/').next() == Some("vars") => {
            let p = role.path.join(dir);
            if p.exists() {
                p
            } else {
                PathBuf::from(dir)
            }
        }
        Some(role) => role.path.join("vars").join(dir),
        None => task.file_dir.join(dir),
    }
}

fn regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|_| format!("Invalid regular expression: {pattern}"))
}

fn dir_filter(args: &VarMap) -> Result<DirFilter, String> {
    let depth = match args.get("depth") {
        None => 0,
        Some(v) if v.is_none() => 0,
        Some(v) => v
            .to_string()
            .parse::<usize>()
            .map_err(|_| format!("depth must be an integer, got {v}"))?,
    };
    let matching = match args.get("files_matching").filter(|v| v.is_true()) {
        Some(v) => Some(regex(&v.to_string())?),
        None => None,
    };
    let ignore_patterns: Vec<String> = match args.get("ignore_files") {
        None => Vec::new(),
        Some(v) if v.is_none() => Vec::new(),
        Some(v) if v.kind() == ValueKind::String => v
            .to_string()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        Some(v) if v.kind() == ValueKind::Map => return Err(format!("{v} must be a list")),
        Some(v) => v
            .try_iter()
            .map_err(|e| e.to_string())?
            .map(|x| x.to_string())
            .collect(),
    };
    let ignore = ignore_patterns
        .iter()
        .map(|p| regex(&format!("(?:{p})$")))
        .collect::<Result<_, _>>()?;
    let extensions = match args.get("extensions") {
        None => DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        // ansible-core turns a string into the list of its characters.
        Some(v) if v.kind() == ValueKind::String => {
            v.to_string().chars().map(String::from).collect()
        }
        Some(v) if v.kind() == ValueKind::Seq => v
            .try_iter()
            .map_err(|e| e.to_string())?
            .map(|x| x.to_string())
            .collect(),
        Some(_) => return Err("Invalid type for \"extensions\" option, it must be a list".into()),
    };
    Ok(DirFilter {
        depth,
        matching,
        ignore,
        extensions,
        ignore_unknown: args
            .get("ignore_unknown_extensions")
            .is_some_and(Value::is_true),
    })
}

/// Every directory under `root` (following links), sorted by path, with its
/// sorted file names; the root is depth 1.
fn walk(root: &Path, depth: usize) -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![(root.to_path_buf(), 1usize)];
    while let Some((dir, d)) = todo.pop() {
        // Links are followed; a link back up the tree is walked once.
        if !seen.insert(std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone())) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            // `metadata` follows links, as os.walk(followlinks=True) does.
            if p.is_dir() {
                todo.push((p, d + 1));
            } else {
                files.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        files.sort();
        if depth == 0 || d <= depth {
            out.push((dir, files));
        }
    }
    out.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    out
}

fn valid_extension(name: &str, extensions: &[String]) -> bool {
    let ext = match name.rfind('.') {
        // A leading dot is a hidden file, not an extension (os.path.splitext).
        Some(i) if name[..i].chars().any(|c| c != '.') => &name[i + 1..],
        _ => "",
    };
    extensions.iter().any(|e| e == ext)
}

fn load_dir(task: &Task, root: &Path, f: &DirFilter, loaded: &mut Loaded) -> Result<(), String> {
    for (dir, names) in walk(root, f.depth) {
        for name in names {
            // ansible-core's guard against re-reading a role's vars/main.yml
            // (it compares the role path with `<dir>/vars`).
            if let Some(role) = &task.role {
                if role.path.join(&name) == dir.join("vars").join("main.yml") {
                    continue;
                }
            }
            if f.matching.as_ref().is_some_and(|m| !m.is_match(&name)) {
                continue;
            }
            let path = dir.join(&name);
            if !path.exists() || f.ignore.iter().any(|r| r.is_match(&name)) {
                continue;
            }
            if f.ignore_unknown && !valid_extension(&name, &f.extensions) {
                continue;
            }
            load_file(&path, Some(&f.extensions), loaded)?;
        }
    }
    Ok(())
}

/// Reads one vars file into `loaded`; `extensions` checks its name first.
fn load_file(
    path: &Path,
    extensions: Option<&[String]>,
    loaded: &mut Loaded,
) -> Result<(), String> {
    if let Some(exts) = extensions {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !valid_extension(&name, exts) {
            return Err(format!(
                "{} does not have a valid extension: {}",
                path.display(),
                exts.join(", ")
            ));
        }
    }
    let node = crate::yaml::load_one(path).map_err(|e| e.to_string())?;
    if node.is_null() {
        loaded.files.push(path.to_path_buf());
        return Ok(());
    }
    let Some(m) = value_to_map(&node.to_value()) else {
        return Err(format!(
            "{} must be stored as a dictionary/hash",
            path.display()
        ));
    };
    loaded.files.push(path.to_path_buf());
    loaded.vars.extend(m);
    Ok(())
}

/// ansible-core's `merge_hash`: maps merge key by key, recursively; anything
/// else from `new` replaces the old value.
fn merge_hash(old: &Value, new: &Value) -> Value {
    if old.kind() != ValueKind::Map || new.kind() != ValueKind::Map {
        return new.clone();
    }
    let mut out = value_to_map(old).unwrap_or_default();
    for (k, v) in value_to_map(new).unwrap_or_default() {
        let merged = match out.get(&k) {
            Some(o) => merge_hash(o, &v),
            None => v,
        };
        out.insert(k, merged);
    }
    ser(&out)
}
