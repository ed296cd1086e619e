//! Packing a Python module for the host, as Ansible's AnsiballZ does: the
//! module's style is read from its text, and a new-style module is zipped
//! with every `module_utils` file it imports (found by reading the imports
//! of each file in turn) into one Python program that unpacks itself on the
//! host, runs the module with its arguments and cleans up after itself.
//!
//! Built once per module at resolve time; `run.rs` only fills in the
//! arguments. It sits below `run.rs` and `find.rs` and imports nothing else
//! from the crate.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

use super::install::AnsibleCore;

/// How a module takes its arguments.
#[derive(Debug, Clone)]
pub enum Style {
    /// Imports `ansible.module_utils`: runs from the zipped payload, with
    /// the arguments inside the program. Holds the zip, base64-encoded.
    New { zip_b64: String },
    /// Says `WANT_JSON`: gets the path of a JSON arguments file.
    WantJson,
    /// Anything else: gets the path of a `key=value` arguments file.
    Old,
}

/// Why a module found on disk cannot be run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PayloadError {
    #[error("cannot read module {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("module {path} is a binary; Keel runs only script modules")]
    Binary { path: PathBuf },
    #[error("module {path} is a PowerShell module; Keel runs only POSIX hosts")]
    PowerShell { path: PathBuf },
    #[error(
        "module {path} imports ansible.module_utils, and no ansible-core is importable on the \
         controller to take them from (set KEEL_ANSIBLE_PYTHON to a Python that imports ansible)"
    )]
    NoAnsibleCore { path: PathBuf },
    #[error("Could not find imported module support code for {module}. Looked for ({looked})")]
    MissingUtil { module: String, looked: String },
    #[error("cannot pack module {path}: {message}")]
    Zip { path: PathBuf, message: String },
}

/// A Python (or other script) module ready to run on any host.
#[derive(Clone)]
pub struct PyModule {
    /// The name Ansible gives it (`ansible_module`): the last part of the
    /// name written in the task.
    pub name: String,
    /// Its Python name inside the payload (`ansible.modules.yum_repository`,
    /// `ansible.legacy.mymod`, `ansible_collections.ns.coll.plugins.modules.x`).
    pub fqn: String,
    pub path: PathBuf,
    pub style: Style,
    /// The module file as sent for `WantJson`/`Old`.
    pub source: Vec<u8>,
    /// The interpreter its `#!` line names, and its arguments.
    pub shebang: Option<(String, Vec<String>)>,
    /// How many `module_utils` files the payload carries.
    pub utils: usize,
}

impl std::fmt::Debug for PyModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyModule")
            .field("fqn", &self.fqn)
            .field("path", &self.path)
            .field("utils", &self.utils)
            .finish_non_exhaustive()
    }
}

const REPLACER: &str = "#<<INCLUDE_ANSIBLE_MODULE_COMMON>>";

/// Whether Ansible would treat this text as a new-style Python module.
fn is_new_style(text: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"(?:from +\.{2,} *module_utils.* +import |from +ansible_collections\.[^.]+\.[^.]+\.plugins\.module_utils.* +import |import +ansible_collections\.[^.]+\.[^.]+\.plugins\.module_utils.*|from +ansible\.module_utils.* +import |import +ansible\.module_utils\.)",
        )
        .expect("valid regex")
    })
    .is_match(text)
}

/// ansible-core's test for a binary: control bytes in the first KiB.
fn is_binary(b: &[u8]) -> bool {
    b.iter()
        .take(1024)
        .any(|c| *c < 0x20 && ![7, 8, 9, 10, 12, 13, 27].contains(c) || *c == 0x7f)
}

fn shebang(text: &str) -> Option<(String, Vec<String>)> {
    let line = text.lines().next()?.strip_prefix("#!")?;
    let mut words = line.split_whitespace().map(str::to_string);
    Some((words.next()?, words.collect()))
}

impl PyModule {
    /// Reads and packs the module at `path`.
    pub fn load(
        name: &str,
        fqn: &str,
        path: &Path,
        module_utils: &[PathBuf],
        collections: &[PathBuf],
        core: Option<&AnsibleCore>,
    ) -> Result<PyModule, PayloadError> {
        let bytes = std::fs::read(path).map_err(|e| PayloadError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if is_binary(&bytes) {
            return Err(PayloadError::Binary {
                path: path.to_path_buf(),
            });
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let lower = text.to_ascii_lowercase();
        if text.contains("# POWERSHELL_COMMON")
            || lower.contains("#requires -module")
            || lower.contains("#ansiblerequires -")
        {
            return Err(PayloadError::PowerShell {
                path: path.to_path_buf(),
            });
        }
        let mut module = PyModule {
            name: name.to_string(),
            fqn: fqn.to_string(),
            path: path.to_path_buf(),
            style: Style::Old,
            source: bytes,
            shebang: shebang(&text),
            utils: 0,
        };
        let replaced = text.contains(REPLACER);
        if !replaced && !is_new_style(&text) {
            if text.contains("WANT_JSON") {
                module.style = Style::WantJson;
            }
            return Ok(module);
        }
        let text = text.replace(REPLACER, "from ansible.module_utils.basic import *");
        let core = core.ok_or_else(|| PayloadError::NoAnsibleCore {
            path: path.to_path_buf(),
        })?;
        let mut dirs = module_utils.to_vec();
        dirs.push(core.module_utils_dir());
        let files = Finder {
            module_utils: &dirs,
            collections,
        }
        .collect(fqn, &text, core)?;
        module.utils = files.len();
        let zip = zip_payload(fqn, &text, &files).map_err(|e| PayloadError::Zip {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        module.style = Style::New {
            zip_b64: base64::engine::general_purpose::STANDARD.encode(zip),
        };
        Ok(module)
    }

    /// The program sent to the host's Python for a new-style module: the
    /// payload, the arguments (`{"ANSIBLE_MODULE_ARGS": ...}` as JSON text)
    /// and the code that unpacks and runs it. `None` for other styles.
    pub fn program(&self, params_json: &str) -> Option<String> {
        let Style::New { zip_b64 } = &self.style else {
            return None;
        };
        let lit = |s: &str| serde_json::to_string(s).expect("a string serialises");
        Some(format!(
            "{WRAPPER}\nif __name__ == '__main__':\n    _keel_run({zip}, {name}, {fqn}, {params})\n",
            zip = lit(zip_b64),
            name = lit(&self.name),
            fqn = lit(&self.fqn),
            params = lit(params_json),
        ))
    }
}

/// The Python that runs on the host. Written for Keel; it does what
/// AnsiballZ's wrapper does: drop the working directory from `sys.path`,
/// write the zip to a private temporary directory, put it first on
/// `sys.path` (and in a `sitecustomize` for modules that respawn), hand the
/// arguments to `module_utils.basic` and run the module as `__main__`
/// (through ansible-core 2.19's loader when the payload has one), and
/// always remove the directory.
const WRAPPER: &str = r#"import os
import sys


def _keel_run(zip_b64, name, fqn, params):
    try:
        os.getcwd()
    except OSError:
        try:
            os.chdir(os.path.expanduser('~'))
        except OSError:
            os.chdir('/')
    sys.path = [p for p in sys.path if p not in ('', '.')]
    import base64
    import shutil
    import tempfile
    import zipfile
    tmp = os.path.realpath(tempfile.mkdtemp(prefix='ansible_' + name + '_payload_'))
    try:
        modlib = os.path.join(tmp, 'ansible_' + name + '_payload.zip')
        with open(modlib, 'wb') as f:
            f.write(base64.b64decode(zip_b64))
        z = zipfile.ZipFile(modlib, mode='a')
        z.writestr('sitecustomize.py', ('import sys\nsys.path.insert(0, %r)\n' % modlib).encode('utf-8'))
        z.close()
        sys.path.insert(0, modlib)
        json_params = params.encode('utf-8')
        try:
            from ansible.module_utils._internal._ansiballz import _loader
        except ImportError:
            _loader = None
        if _loader is not None:
            _loader.run_module(json_params=json_params, profile='legacy', module_fqn=fqn,
                               modlib_path=modlib, extensions={})
        else:
            import runpy
            from ansible.module_utils import basic
            basic._ANSIBLE_ARGS = json_params
            runpy.run_module(mod_name=fqn, init_globals=dict(_module_fqn=fqn, _modlib_path=modlib),
                             run_name='__main__', alter_sys=True)
            raise RuntimeError('New-style module did not handle its own exit.')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
"#;

/// Python names are dotted paths split into parts.
type Name = Vec<String>;

/// One import to follow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Wanted {
    parts: Name,
    /// `from a.b import c`: `c` may be a module or a name in `a.b`.
    ambiguous: bool,
    /// Written below the top level (in a `try:`, a function): a miss is fine.
    optional: bool,
}

/// A file found for an import.
struct Found {
    parts: Name,
    /// `None`: a package with no file on disk (an empty `__init__.py`).
    path: Option<PathBuf>,
    package: bool,
}

/// Finds the `module_utils` files a module needs.
struct Finder<'a> {
    module_utils: &'a [PathBuf],
    collections: &'a [PathBuf],
}

/// What goes in the zip besides the module: zip path → contents.
type Files = BTreeMap<String, Vec<u8>>;

impl Finder<'_> {
    fn collect(&self, fqn: &str, text: &str, core: &AnsibleCore) -> Result<Files, PayloadError> {
        let mut files = Files::new();
        let mut done: HashSet<Name> = HashSet::new();
        // ansible and ansible.module_utils are namespace packages in the
        // payload, as AnsiballZ writes them.
        files.insert(
            "ansible/__init__.py".into(),
            format!(
                "from pkgutil import extend_path\n__path__=extend_path(__path__,__name__)\n__version__=\"{}\"\n__author__=\"Ansible, Inc.\"\n",
                core.version
            )
            .into_bytes(),
        );
        files.insert(
            "ansible/module_utils/__init__.py".into(),
            b"from pkgutil import extend_path\n__path__=extend_path(__path__,__name__)\n".to_vec(),
        );
        done.insert(name("ansible"));
        done.insert(name("ansible.module_utils"));

        let mut todo: Vec<Wanted> = imports(fqn, text, false);
        // What every module needs whatever it imports: basic, and in
        // ansible-core 2.19 the loader and the serialisation profiles the
        // wrapper uses.
        for always in [
            "ansible.module_utils.basic",
            "ansible.module_utils._internal._ansiballz._loader",
            "ansible.module_utils._internal._json._profiles._module_legacy_c2m",
            "ansible.module_utils._internal._json._profiles._module_legacy_m2c",
        ] {
            todo.push(Wanted {
                parts: name(always),
                ambiguous: false,
                optional: always != "ansible.module_utils.basic",
            });
        }
        while let Some(w) = pop_first(&mut todo) {
            if done.contains(&w.parts) {
                continue;
            }
            let Some(found) = self.locate(&w)? else {
                if w.optional {
                    continue;
                }
                return Err(PayloadError::MissingUtil {
                    module: fqn.to_string(),
                    looked: self
                        .candidates(&w)
                        .iter()
                        .map(|c| c.join("."))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            if !done.insert(found.parts.clone()) {
                continue;
            }
            let body = match &found.path {
                Some(p) => std::fs::read(p).map_err(|e| PayloadError::Read {
                    path: p.clone(),
                    message: e.to_string(),
                })?,
                None => Vec::new(),
            };
            let dotted = found.parts.join(".");
            todo.extend(
                imports(&dotted, &String::from_utf8_lossy(&body), found.package)
                    .into_iter()
                    .filter(|w| !done.contains(&w.parts)),
            );
            let zip_path = if found.package {
                format!("{}/__init__.py", found.parts.join("/"))
            } else {
                format!("{}.py", found.parts.join("/"))
            };
            files.insert(zip_path, body);
            // Every enclosing package's `__init__` comes too.
            for n in 1..found.parts.len() {
                let pkg = found.parts[..n].to_vec();
                if !done.contains(&pkg) {
                    todo.push(Wanted {
                        parts: pkg,
                        ambiguous: false,
                        optional: w.optional,
                    });
                }
            }
        }
        Ok(files)
    }

    /// The names an import may mean, most specific first (Ansible's rule:
    /// `from a.b import c` is `a.b.c` or `a.b`, but only below the first
    /// level of `module_utils`; six's submodules are made at run time, so
    /// any of them is six itself).
    fn candidates(&self, w: &Wanted) -> Vec<Name> {
        let p = &w.parts;
        if p.len() > 2 && p[0] == "ansible" && p[1] == "module_utils" && p[2] == "six" {
            return vec![name("ansible.module_utils.six")];
        }
        let below = if p.first().is_some_and(|s| s == "ansible_collections") {
            p.len().saturating_sub(5)
        } else {
            p.len().saturating_sub(2)
        };
        if w.ambiguous && below > 1 {
            vec![p.clone(), p[..p.len() - 1].to_vec()]
        } else {
            vec![p.clone()]
        }
    }

    fn locate(&self, w: &Wanted) -> Result<Option<Found>, PayloadError> {
        let p = &w.parts;
        let collection = p.first().is_some_and(|s| s == "ansible_collections");
        if collection && p.len() < 6 {
            // The packages above a collection's module_utils have no files
            // worth sending.
            return Ok(Some(Found {
                parts: p.clone(),
                path: None,
                package: true,
            }));
        }
        let core_util = p.len() > 2 && p[0] == "ansible" && p[1] == "module_utils";
        if !collection && !core_util {
            return Ok(None);
        }
        for cand in self.candidates(w) {
            let bases: Vec<PathBuf> = if collection {
                let rel: PathBuf = cand[..cand.len() - 1].iter().collect();
                self.collections.iter().map(|r| r.join(&rel)).collect()
            } else {
                let rel: PathBuf = cand[2..cand.len() - 1].iter().collect();
                self.module_utils.iter().map(|r| r.join(&rel)).collect()
            };
            let last = &cand[cand.len() - 1];
            for base in bases {
                let file = base.join(format!("{last}.py"));
                if file.is_file() {
                    return Ok(Some(Found {
                        parts: cand,
                        path: Some(file),
                        package: false,
                    }));
                }
                let init = base.join(last).join("__init__.py");
                if init.is_file() {
                    return Ok(Some(Found {
                        parts: cand,
                        path: Some(init),
                        package: true,
                    }));
                }
            }
        }
        Ok(None)
    }
}

fn name(dotted: &str) -> Name {
    dotted.split('.').map(str::to_string).collect()
}

/// The first in sort order, as Ansible processes them (so the payload
/// does not depend on the order imports were met).
fn pop_first(todo: &mut Vec<Wanted>) -> Option<Wanted> {
    let i = (0..todo.len()).min_by(|a, b| todo[*a].cmp(&todo[*b]))?;
    Some(todo.swap_remove(i))
}

/// The `ansible.module_utils` and `ansible_collections` imports of a
/// Python file whose own dotted name is `fqn` (relative imports are made
/// absolute against it; `package` says it is an `__init__`).
fn imports(fqn: &str, text: &str, package: bool) -> Vec<Wanted> {
    let own: Vec<&str> = fqn.split('.').collect();
    let mut out = Vec::new();
    for (indent, line) in logical_lines(text) {
        for stmt in line.split(';') {
            let stmt = stmt.trim();
            let optional = indent > 0;
            if let Some(rest) = stmt.strip_prefix("import ") {
                for item in rest.split(',') {
                    let n = item.split_whitespace().next().unwrap_or("");
                    if n.starts_with("ansible.module_utils.")
                        || n.starts_with("ansible_collections.")
                    {
                        out.push(Wanted {
                            parts: name(n),
                            ambiguous: false,
                            optional,
                        });
                    }
                }
            } else if let Some(rest) = stmt.strip_prefix("from ") {
                let Some((module, names)) = rest.split_once(" import ") else {
                    continue;
                };
                let module = module.trim();
                let level = module.chars().take_while(|c| *c == '.').count();
                let module = module[level..].trim();
                let absolute = if level > 0 {
                    // In a package's `__init__`, `.` is the package itself.
                    let keep = if package {
                        own.len() + 1 - level
                    } else {
                        own.len().saturating_sub(level)
                    };
                    let mut base: Vec<&str> = own[..keep.min(own.len())].to_vec();
                    if !module.is_empty() {
                        base.push(module);
                    }
                    base.join(".")
                } else {
                    module.to_string()
                };
                let interesting = absolute.starts_with("ansible.module_utils")
                    || (absolute.starts_with("ansible_collections.")
                        && (absolute.ends_with("plugins.module_utils")
                            || absolute.contains(".plugins.module_utils.")));
                if !interesting {
                    continue;
                }
                let names = names.trim().trim_start_matches('(').trim_end_matches(')');
                for item in names.split(',') {
                    let Some(n) = item.split_whitespace().next() else {
                        continue;
                    };
                    let mut parts = name(&absolute);
                    parts.push(n.to_string());
                    out.push(Wanted {
                        parts,
                        ambiguous: true,
                        optional,
                    });
                }
            }
        }
    }
    out
}

/// Python source as logical lines with their indentation: comments
/// dropped, string literals emptied (so text in docstrings is never read
/// as code), bracketed and backslash-continued lines joined.
fn logical_lines(src: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut indent = 0;
    let mut depth = 0usize;
    let mut at_start = true;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if at_start {
            if c == ' ' || c == '\t' {
                indent += 1;
                i += 1;
                continue;
            }
            at_start = false;
        }
        match c {
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '\'' | '"' => {
                let triple = i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c;
                i += if triple { 3 } else { 1 };
                while i < chars.len() {
                    if chars[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if triple {
                        if chars[i] == c
                            && i + 2 < chars.len()
                            && chars[i + 1] == c
                            && chars[i + 2] == c
                        {
                            i += 3;
                            break;
                        }
                    } else if chars[i] == c || chars[i] == '\n' {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                cur.push_str("''");
                continue;
            }
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                cur.push(' ');
                i += 2;
                continue;
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '\n' => {
                if depth == 0 {
                    let line = cur.trim();
                    if !line.is_empty() {
                        out.push((indent, line.to_string()));
                    }
                    cur.clear();
                    indent = 0;
                    at_start = true;
                } else {
                    cur.push(' ');
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        cur.push(c);
        i += 1;
    }
    let line = cur.trim();
    if !line.is_empty() {
        out.push((indent, line.to_string()));
    }
    out
}

/// The zip: every file found, plus the module under its Python name and
/// empty `__init__.py`s for the packages leading to it.
fn zip_payload(fqn: &str, text: &str, files: &Files) -> zip::result::ZipResult<Vec<u8>> {
    let mut all = files.clone();
    let parts: Vec<&str> = fqn.split('.').collect();
    all.insert(format!("{}.py", parts.join("/")), text.as_bytes().to_vec());
    let start = if parts[0] == "ansible" { 2 } else { 1 };
    for n in start..parts.len() {
        all.entry(format!("{}/__init__.py", parts[..n].join("/")))
            .or_default();
    }
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, body) in &all {
        w.start_file(path.as_str(), opts)?;
        w.write_all(body)?;
    }
    Ok(w.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_skip_strings_and_follow_relative_forms() {
        let src = "DOC = '''\nfrom ansible.module_utils.fake import x\n'''\n\
            from ansible.module_utils.basic import AnsibleModule  # comment\n\
            from ansible.module_utils.common.text.converters import (\n    to_text,\n    to_bytes as b,\n)\n\
            import ansible.module_utils.urls\n\
            try:\n    from ansible.module_utils.compat import selinux\nexcept ImportError:\n    pass\n";
        let got = imports("ansible.modules.x", src, false);
        let names: Vec<(String, bool, bool)> = got
            .iter()
            .map(|w| (w.parts.join("."), w.ambiguous, w.optional))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "ansible.module_utils.basic.AnsibleModule".into(),
                    true,
                    false
                ),
                (
                    "ansible.module_utils.common.text.converters.to_text".into(),
                    true,
                    false
                ),
                (
                    "ansible.module_utils.common.text.converters.to_bytes".into(),
                    true,
                    false
                ),
                ("ansible.module_utils.urls".into(), false, false),
                ("ansible.module_utils.compat.selinux".into(), true, true),
            ]
        );
        // `from . import x` in a package's __init__ means the package itself.
        let rel = imports(
            "ansible.module_utils._internal",
            "from . import _traceback\n",
            true,
        );
        assert_eq!(
            rel[0].parts.join("."),
            "ansible.module_utils._internal._traceback"
        );
        let rel = imports(
            "ansible.module_utils.common.json",
            "from ..six import x\n",
            false,
        );
        assert_eq!(rel[0].parts.join("."), "ansible.module_utils.six.x");
    }

    #[test]
    fn styles_are_read_as_ansible_reads_them() {
        assert!(is_new_style(
            "from ansible.module_utils.basic import AnsibleModule\n"
        ));
        assert!(!is_new_style("#!/bin/sh\n# WANT_JSON\n"));
        assert!(is_binary(b"\x7fELF\x02\x01"));
        assert!(!is_binary(b"#!/bin/sh\necho {}\n"));
        assert_eq!(
            shebang("#!/usr/bin/env python3 -u\n"),
            Some(("/usr/bin/env".into(), vec!["python3".into(), "-u".into()]))
        );
    }
}
