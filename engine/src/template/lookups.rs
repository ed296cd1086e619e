//! Lookup plugins: `lookup('file', 'x')`, `query('fileglob', '*.conf')`, and
//! the `with_<name>` loops the executor builds from the same code via
//! [`super::Templar::run_lookup`].
//!
//! Every lookup returns a list. `query`/`q` hand that list back; `lookup`
//! joins string results with `,` unless `wantlist=True` (a single non-string
//! result comes back as itself), as in Ansible.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::ValueKind;
use minijinja::value::{Kwargs, Rest};
use minijinja::{Environment, Error, ErrorKind, State, Value};
use rand::Rng;

use super::error::{error_msg, TemplateError};
use super::filters::{product, seq, text};
use super::native::{self, ValueMap};
use super::render::{
    eval_bare_in, render_file_text_in, render_value_in, RenderCtx, SyntaxOverrides, CTX_KEY,
};
use crate::vars::VarMap;

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

fn from_template_error(e: TemplateError) -> Error {
    Error::new(ErrorKind::InvalidOperation, e.diag.message.clone()).with_source(e)
}

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function(
        "lookup",
        |state: &State, name: &str, terms: Rest<Value>, kw: Kwargs| {
            call(state, name, terms, kw, false)
        },
    );
    env.add_function(
        "query",
        |state: &State, name: &str, terms: Rest<Value>, kw: Kwargs| {
            call(state, name, terms, kw, true)
        },
    );
    env.add_function(
        "q",
        |state: &State, name: &str, terms: Rest<Value>, kw: Kwargs| {
            call(state, name, terms, kw, true)
        },
    );
}

fn call(
    state: &State,
    name: &str,
    terms: Rest<Value>,
    kw: Kwargs,
    want_list: bool,
) -> Result<Value, Error> {
    let ctx_v = state
        .lookup(CTX_KEY)
        .ok_or_else(|| err("lookups need the keel template context"))?;
    let ctx = ctx_v
        .downcast_object::<RenderCtx>()
        .ok_or_else(|| err("lookups need the keel template context"))?;
    let mut kwargs = VarMap::new();
    let mut want_list = want_list;
    let mut errors = String::from("strict");
    for key in kw.args() {
        let v: Value = kw.get(key)?;
        match key {
            "wantlist" => want_list = want_list || v.is_true(),
            "errors" => errors = text(&v),
            _ => {
                kwargs.insert(key.to_string(), v);
            }
        }
    }
    let name = name.strip_prefix("ansible.builtin.").unwrap_or(name);
    // For backwards compatibility Ansible still templates constant terms that
    // hold Jinja (`lookup('list', ['{{ 1 }}'])`); `!unsafe` ones stay as they are.
    let terms = terms
        .0
        .iter()
        .map(|t| render_value_in(&ctx, t).map_err(from_template_error))
        .collect::<Result<Vec<_>, _>>()?;
    let results = match run(&ctx, name, terms, &kwargs) {
        Ok(r) => r,
        Err(e) if errors == "warn" || errors == "ignore" => {
            if errors == "warn" {
                tracing::warn!("An error occurred while running the lookup plugin '{name}': {e}");
            }
            return Ok(if want_list {
                Value::from(Vec::<Value>::new())
            } else {
                Value::from(())
            });
        }
        Err(e) => return Err(e),
    };
    if want_list || results.is_empty() {
        return Ok(Value::from(results));
    }
    if results.len() == 1 {
        return Ok(results.into_iter().next().unwrap_or_default());
    }
    if results.iter().all(|v| v.kind() == ValueKind::String) {
        let parts: Vec<&str> = results
            .iter()
            .map(|v| v.as_str().unwrap_or_default())
            .collect();
        return Ok(Value::from(parts.join(",")));
    }
    Ok(Value::from(results))
}

/// Runs lookup `name` over already-templated `terms`.
pub(super) fn run(
    ctx: &Arc<RenderCtx>,
    name: &str,
    terms: Vec<Value>,
    kw: &VarMap,
) -> Result<Vec<Value>, Error> {
    let kw_bool = |k: &str, d: bool| kw.get(k).map_or(d, native::to_bool);
    match name {
        "env" => Ok(terms
            .iter()
            .map(|t| match std::env::var(text(t)) {
                Ok(v) => Value::from(v),
                Err(_) => kw.get("default").cloned().unwrap_or(Value::from("")),
            })
            .collect()),
        "file" => {
            let (lstrip, rstrip) = (kw_bool("lstrip", false), kw_bool("rstrip", true));
            let mut out = Vec::new();
            for t in &terms {
                let name = text(t);
                let path = find_file(ctx, &name, "files")
                    .ok_or_else(|| err(format!("could not locate file in lookup: {name}")))?;
                let mut content = std::fs::read_to_string(&path)
                    .map_err(|e| err(format!("could not read {}: {e}", path.display())))?;
                if rstrip {
                    content = content.trim_end().to_string();
                }
                if lstrip {
                    content = content.trim_start().to_string();
                }
                out.push(Value::from(content));
            }
            Ok(out)
        }
        "unvault" => {
            // Like `file`, but a vaulted file is decrypted (and nothing is stripped).
            let mut out = Vec::new();
            for t in &terms {
                let name = text(t);
                let path = find_file(ctx, &name, "files")
                    .ok_or_else(|| err(format!("Unable to find '{name}' in expected paths.")))?;
                let data = crate::vault::read_file(&path).map_err(|e| err(e.to_string()))?;
                out.push(Value::from(String::from_utf8_lossy(&data).into_owned()));
            }
            Ok(out)
        }
        "template" => {
            let mut out = Vec::new();
            let extra = kw
                .get("template_vars")
                .filter(|v| v.kind() == ValueKind::Map)
                .cloned();
            let mut syntax = SyntaxOverrides::default();
            let opt = |k: &str, d: &str| kw.get(k).map_or(d.to_string(), text);
            syntax.variable = (
                opt("variable_start_string", "{{"),
                opt("variable_end_string", "}}"),
            );
            syntax.comment = (
                opt("comment_start_string", "{#"),
                opt("comment_end_string", "#}"),
            );
            syntax.trim_blocks = kw_bool("trim_blocks", true);
            let custom = (syntax != SyntaxOverrides::default()).then_some(&syntax);
            let sub = match &extra {
                Some(vars) => {
                    let mut layer = VarMap::new();
                    for k in vars.try_iter()? {
                        layer.insert(text(&k), vars.get_item(&k)?);
                    }
                    let scope = ctx.scope.with_layer(Arc::new(layer));
                    RenderCtx::new(ctx.inner.clone(), &scope, &ctx.origin)
                }
                None => ctx.clone(),
            };
            for t in &terms {
                let path = PathBuf::from(text(t));
                let rendered = render_template_file_as(&sub, &path, custom, true);
                out.push(rendered.map_err(from_template_error)?);
            }
            Ok(out)
        }
        "config" => config_lookup(&terms, kw),
        "pipe" => {
            let mut out = Vec::new();
            for t in &terms {
                let cmd = text(t);
                let o = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .output()
                    .map_err(|e| err(format!("lookup_plugin.pipe({cmd}): {e}")))?;
                if !o.status.success() {
                    return Err(err(format!(
                        "lookup_plugin.pipe({cmd}) returned {}",
                        o.status.code().unwrap_or(-1)
                    )));
                }
                out.push(Value::from(
                    String::from_utf8_lossy(&o.stdout).trim_end().to_string(),
                ));
            }
            Ok(out)
        }
        "first_found" => first_found(ctx, &terms, kw),
        "fileglob" => {
            let mut out = Vec::new();
            for t in &terms {
                let pat = text(t);
                let dirs: Vec<PathBuf> = if Path::new(&pat).is_absolute() {
                    vec![PathBuf::new()]
                } else {
                    ctx.origin
                        .search_paths
                        .iter()
                        .flat_map(|b| [b.join("files"), b.clone()])
                        .chain(std::iter::once(PathBuf::from(".")))
                        .collect()
                };
                for d in dirs {
                    let full = d.join(&pat);
                    let Ok(paths) = glob::glob(&full.to_string_lossy()) else {
                        continue;
                    };
                    let found: Vec<Value> = paths
                        .flatten()
                        .filter(|p| p.is_file())
                        .map(|p| Value::from(absolute(&p).display().to_string()))
                        .collect();
                    if !found.is_empty() {
                        out.extend(found);
                        break;
                    }
                }
            }
            Ok(out)
        }
        "password" => terms
            .iter()
            .map(|t| password(ctx, &text(t), kw).map(Value::from))
            .collect(),
        "items" => {
            let mut out = Vec::new();
            for t in terms {
                if t.kind() == ValueKind::Seq {
                    out.extend(seq(&t)?);
                } else {
                    out.push(t);
                }
            }
            Ok(out)
        }
        "list" => Ok(terms),
        "dict" => {
            let mut out = Vec::new();
            for t in &terms {
                if t.kind() != ValueKind::Map {
                    let ty = match t.kind() {
                        ValueKind::Seq => "list",
                        ValueKind::String => "str",
                        ValueKind::Bool => "bool",
                        ValueKind::None | ValueKind::Undefined => "NoneType",
                        ValueKind::Number if t.is_integer() => "int",
                        ValueKind::Number => "float",
                        _ => "object",
                    };
                    let shown = match t.as_str() {
                        Some(s) => s.to_string(),
                        None => super::native::python_repr(t),
                    };
                    return Err(err(format!(
                        "the 'dict' lookup plugin expects a dictionary, got '{shown}' of type <class '{ty}'>)"
                    )));
                }
                for k in t.try_iter()? {
                    let mut m = ValueMap::new();
                    m.insert(Value::from("key"), k.clone());
                    m.insert(Value::from("value"), t.get_item(&k)?);
                    out.push(Value::from_object(m));
                }
            }
            Ok(out)
        }
        "indexed_items" => {
            let items = run(ctx, "items", terms, kw)?;
            Ok(items
                .into_iter()
                .enumerate()
                .map(|(i, v)| Value::from(vec![Value::from(i), v]))
                .collect())
        }
        "sequence" => {
            let mut out = Vec::new();
            // Keywords alone still make one sequence; nothing at all, none.
            if terms.is_empty() && !kw.is_empty() {
                out.extend(sequence("", kw)?);
            }
            for t in &terms {
                out.extend(sequence(&text(t), kw)?);
            }
            Ok(out)
        }
        "nested" | "cartesian" => {
            let lists: Vec<Vec<Value>> = terms.iter().map(seq).collect::<Result<_, _>>()?;
            if lists.is_empty() {
                return Err(err(
                    "with_nested requires at least one element in the nested list",
                ));
            }
            Ok(product(&lists))
        }
        "together" => {
            if terms.is_empty() {
                return Err(err(
                    "with_together requires at least one element in each list",
                ));
            }
            let lists: Vec<Vec<Value>> = terms.iter().map(seq).collect::<Result<_, _>>()?;
            let n = lists.iter().map(Vec::len).max().unwrap_or(0);
            Ok((0..n)
                .map(|i| {
                    Value::from(
                        lists
                            .iter()
                            .map(|l| l.get(i).cloned().unwrap_or(Value::from(())))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect())
        }
        "subelements" => subelements(&terms, kw_bool("skip_missing", false)),
        "vars" => {
            let mut out = Vec::new();
            for t in &terms {
                if t.as_str().is_none() {
                    let ty = if t.is_integer() { "int" } else { "object" };
                    return Err(err(format!("Variable name must be 'str' not '{ty}'")));
                }
                let name = text(t);
                match ctx.resolve(&name).map_err(from_template_error)? {
                    Some(v) => out.push(v),
                    None => match kw.get("default") {
                        Some(d) => out.push(d.clone()),
                        None => return Err(err(format!("No variable named '{name}' was found."))),
                    },
                }
            }
            Ok(out)
        }
        "varnames" => {
            let names = ctx.scope.names();
            let mut out = Vec::new();
            for t in &terms {
                if t.kind() != ValueKind::String {
                    return Err(err(format!(
                        "Invalid setting identifier, \"{t}\" is not a string, it is a <class '{}'>",
                        super::native::python_type_name(t)
                    )));
                }
                let term = text(t);
                let re = super::pyre::compile_python(&term).map_err(|e| {
                    err(format!(
                        "Unable to use \"{term}\" as a search parameter: {e}"
                    ))
                })?;
                for n in &names {
                    if super::pyre::is_match(&re, n)? {
                        out.push(Value::from(n.as_str()));
                    }
                }
            }
            Ok(out)
        }
        "lines" => {
            let mut out = Vec::new();
            for t in &terms {
                let v = run(ctx, "pipe", vec![t.clone()], kw)?;
                for line in v
                    .iter()
                    .flat_map(|s| text(s).lines().map(str::to_string).collect::<Vec<_>>())
                {
                    out.push(Value::from(line));
                }
            }
            Ok(out)
        }
        "random_choice" => {
            let items = run(ctx, "items", terms, kw)?;
            if items.is_empty() {
                return Ok(items);
            }
            let i = rand::thread_rng().gen_range(0..items.len());
            Ok(vec![items[i].clone()])
        }
        "csvfile" => csvfile(ctx, &terms, kw),
        "ini" => super::lookup_ini::ini(&terms, kw, |name| find_file(ctx, name, "files")),
        "inventory_hostnames" => inventory_hostnames(ctx, &terms),
        other => Err(err(format!("lookup plugin '{other}' not found"))),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Finds `name` up the origin's search stack (see [`crate::search`]), trying
/// `<dir>/<subdir>/name` before `<dir>/name`; absolute paths are taken as
/// they are. Without a stack (a bare render), relative to the working dir.
pub(super) fn find_file(ctx: &RenderCtx, name: &str, subdir: &str) -> Option<PathBuf> {
    if let Ok(found) = crate::search::find(&ctx.origin.search_paths, Some(subdir), name) {
        return Some(found);
    }
    let p = Path::new(name);
    (!p.is_absolute() && p.exists()).then(|| absolute(p))
}

thread_local! {
    /// The directories `{% include %}` searches, innermost template file last.
    /// Rendering is synchronous, so the template file being rendered on this
    /// thread is the one whose includes are being resolved.
    static INCLUDE_DIRS: std::cell::RefCell<Vec<Vec<PathBuf>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks a template name that is a resolved file path (see `build_env`).
const INCLUDED: &str = "\u{0}keel-include:";

/// Resolves an included template's name to a marked absolute path, searching
/// the including file's directory, then the role/playbook `templates/` dirs.
pub(super) fn join_include(name: &str) -> std::borrow::Cow<'_, str> {
    if name.starts_with(INCLUDED) {
        return name.into();
    }
    let found = INCLUDE_DIRS.with(|d| {
        let dirs = d.borrow();
        let p = Path::new(name);
        if p.is_absolute() {
            return p.is_file().then(|| p.to_path_buf());
        }
        dirs.last()?.iter().map(|d| d.join(p)).find(|c| c.is_file())
    });
    match found {
        Some(p) => format!("{INCLUDED}{}", absolute(&p).display()).into(),
        None => name.into(),
    }
}

/// The file path of a name made by [`join_include`].
pub(super) fn included_path(name: &str) -> Option<&str> {
    name.strip_prefix(INCLUDED)
}

/// Reads and renders a template file with `ctx`'s variables plus Ansible's
/// `template_*` variables.
pub(super) fn render_template_file(
    ctx: &Arc<RenderCtx>,
    path: &Path,
) -> Result<String, TemplateError> {
    render_template_file_as(ctx, path, None, false).map(|v| text(&v))
}

/// [`render_template_file`] with the `template` lookup's choices: other
/// syntax, and `native` (the lookup's result keeps the type of a file that is
/// one `{{ expression }}`, and a file with no content gives None).
pub(super) fn render_template_file_as(
    ctx: &Arc<RenderCtx>,
    path: &Path,
    syntax: Option<&SyntaxOverrides>,
    native: bool,
) -> Result<Value, TemplateError> {
    let name = path.to_string_lossy();
    let found = find_file(ctx, &name, "templates").ok_or_else(|| {
        error_msg(
            &ctx.origin,
            format!("could not find or access template '{name}'"),
            None,
        )
    })?;
    // A vaulted template file is decrypted with the run's secrets, as
    // ansible-core's template lookup does.
    let src = crate::vault::read_file(&found)
        .map_err(|e| e.to_string())
        .and_then(|b| String::from_utf8(b).map_err(|_| "it is not UTF-8 text".to_string()))
        .map_err(|e| {
            error_msg(
                &ctx.origin,
                format!("could not read template {}: {e}", found.display()),
                None,
            )
        })?;
    let full = absolute(&found);
    // ansible-core puts these over the task's variables; `ansible_managed`
    // only when the task has none.
    let mut layer = super::file_vars::template_file_vars(name.as_ref(), &full, None);
    if ctx.scope.get_raw("ansible_managed").is_none() {
        layer.insert("ansible_managed".into(), Value::from("Ansible managed"));
    }
    let mut scope = ctx.scope.clone();
    scope.push(Arc::new(layer));
    let mut origin = ctx.origin.clone();
    origin.label = Some(match &ctx.origin.label {
        Some(l) => format!("template {} for {l}", found.display()),
        None => format!("template {}", found.display()),
    });
    let inner = match syntax {
        Some(o) => Arc::new(ctx.inner.with_syntax(o).map_err(|e| {
            error_msg(
                &ctx.origin,
                format!("invalid template syntax options: {e}"),
                None,
            )
        })?),
        None => ctx.inner.clone(),
    };
    let sub = RenderCtx::new(inner, &scope, &origin);
    let dirs = include_dirs(&full, &ctx.origin.search_paths);
    with_include_dirs(dirs, || {
        render_file_source(&sub, &src, syntax.is_none(), native)
    })
}

/// Where a template file's `{% include %}`s are found: its own directory,
/// then each search-stack directory's `templates/` and the directory itself
/// (ansible-core's template lookup and module both build this).
pub(super) fn include_dirs(file: &Path, search_paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = file.parent().map(Path::to_path_buf).into_iter().collect();
    for base in search_paths {
        dirs.push(base.join("templates"));
        dirs.push(base.clone());
    }
    dirs
}

/// Runs `render` with `dirs` as the include search path of this thread's
/// renders (renders are synchronous; nested template lookups stack).
pub(super) fn with_include_dirs<R>(dirs: Vec<PathBuf>, render: impl FnOnce() -> R) -> R {
    INCLUDE_DIRS.with(|d| d.borrow_mut().push(dirs));
    let out = render();
    INCLUDE_DIRS.with(|d| d.borrow_mut().pop());
    out
}

fn render_file_source(
    sub: &Arc<RenderCtx>,
    src: &str,
    default_syntax: bool,
    native: bool,
) -> Result<Value, TemplateError> {
    if !native {
        return render_file_text_in(sub, src, default_syntax).map(Value::from);
    }
    // Jinja drops one trailing newline before rendering; Ansible puts it
    // back on text results.
    let (body, newline) = match src.strip_suffix('\n') {
        Some(b) => (b.strip_suffix('\r').unwrap_or(b), true),
        None => (src, false),
    };
    if default_syntax {
        if let Some(expr) = native::single_expression(body) {
            let v = eval_bare_in(sub, expr)?;
            return Ok(match v.as_str() {
                Some(s) if newline => Value::from(format!("{s}\n")),
                _ => v,
            });
        }
    }
    let out = render_file_text_in(sub, body, default_syntax)?;
    // A file with no output at all (only comments, say) gives None.
    let no_content = out.is_empty() && default_syntax && !body.contains("{{");
    if no_content {
        return Ok(Value::from(()));
    }
    Ok(Value::from(if newline { format!("{out}\n") } else { out }))
}

fn first_found(ctx: &Arc<RenderCtx>, terms: &[Value], kw: &VarMap) -> Result<Vec<Value>, Error> {
    let mut files: Vec<String> = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    let mut skip = kw.get("skip").is_some_and(|v| v.is_true());
    let split = |v: &Value| -> Result<Vec<String>, Error> {
        Ok(seq(v)?
            .iter()
            .flat_map(|x| {
                text(x)
                    .split([',', ';'])
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .collect())
    };
    if let Some(f) = kw.get("files") {
        files.extend(split(f)?);
    }
    if let Some(p) = kw.get("paths") {
        paths.extend(split(p)?);
    }
    let mut flat = Vec::new();
    for t in terms {
        if t.kind() == ValueKind::Seq {
            flat.extend(seq(t)?);
        } else {
            flat.push(t.clone());
        }
    }
    for t in flat {
        if t.kind() == ValueKind::Map {
            if let Ok(f) = t.get_attr("files") {
                if !f.is_undefined() {
                    files.extend(split(&f)?);
                }
            }
            if let Ok(p) = t.get_attr("paths") {
                if !p.is_undefined() {
                    paths.extend(split(&p)?);
                }
            }
            if t.get_attr("skip").is_ok_and(|s| s.is_true()) {
                skip = true;
            }
        } else {
            files.push(text(&t));
        }
    }
    let candidates: Vec<String> = if paths.is_empty() {
        files.clone()
    } else {
        paths
            .iter()
            .flat_map(|p| {
                files
                    .iter()
                    .map(move |f| format!("{}/{f}", p.trim_end_matches('/')))
            })
            .collect()
    };
    for c in &candidates {
        if let Some(p) = find_file(ctx, c, "files").or_else(|| find_file(ctx, c, "templates")) {
            return Ok(vec![Value::from(absolute(&p).display().to_string())]);
        }
    }
    if skip {
        Ok(Vec::new())
    } else {
        Err(err(format!(
            "No file was found when using first_found. Tried: {}",
            candidates.join(", ")
        )))
    }
}

/// The `csvfile` lookup: for each search key, the `col` column of the first
/// row whose `keycol` column equals it. Options come as keyword arguments or
/// (deprecated) as `key=value` words after the search key.
fn csvfile(ctx: &Arc<RenderCtx>, terms: &[Value], kw: &VarMap) -> Result<Vec<Value>, Error> {
    const OPTIONS: [&str; 6] = ["col", "keycol", "default", "delimiter", "file", "encoding"];
    for k in kw.keys() {
        if !OPTIONS.contains(&k.as_str()) {
            return Err(err(format!("'{k}' is not a valid option")));
        }
    }
    if terms.is_empty() {
        return Err(err("Search key is required but was not found"));
    }
    let mut opts = kw.clone();
    let mut out = Vec::new();
    for t in terms {
        let (mut kv, has_raw) = crate::kv::parse_kv("csvfile", &text(t));
        if !has_raw {
            return Err(err("Search key is required but was not found"));
        }
        let key = text(&kv.shift_remove("_raw_params").unwrap_or_default());
        for (k, v) in kv {
            if !OPTIONS.contains(&k.as_str()) {
                return Err(err(format!("'{k}' is not a valid option")));
            }
            opts.insert(k, v);
        }
        let int_opt = |name: &str, d: i64| -> Result<i64, Error> {
            match opts.get(name) {
                None => Ok(d),
                Some(v) => match v.as_i64() {
                    Some(i) => Ok(i),
                    None => text(v).trim().parse::<i64>().map_err(|_| {
                        err(format!(
                            "Invalid type for configuration option '{name}': the option '{name}' has an invalid value {:?}",
                            text(v)
                        ))
                    }),
                },
            }
        };
        let col = int_opt("col", 1)?;
        let keycol = int_opt("keycol", 0)?;
        let mut delim = opts.get("delimiter").map_or("TAB".to_string(), text);
        if delim == "TAB" {
            delim = "\t".to_string();
        }
        let delim = match delim.chars().collect::<Vec<_>>().as_slice() {
            [c] => *c,
            _ => {
                return Err(err(format!(
                    "\"delimiter\" must be a 1-character string, not {delim:?}"
                )))
            }
        };
        let file = opts.get("file").map_or("ansible.csv".to_string(), text);
        let path = find_file(ctx, &file, "files").unwrap_or_else(|| PathBuf::from(&file));
        let content =
            std::fs::read(&path).map_err(|e| err(format!("csvfile: {}: {e}", path.display())))?;
        let content = String::from_utf8_lossy(&content);
        let pick = |row: &[String], i: i64| -> Option<String> {
            let i = if i < 0 { row.len() as i64 + i } else { i };
            usize::try_from(i).ok().and_then(|i| row.get(i).cloned())
        };
        let mut found = None;
        for row in parse_csv(&content, delim) {
            if !row.is_empty() && pick(&row, keycol).as_deref() == Some(key.as_str()) {
                found = Some(pick(&row, col).ok_or_else(|| {
                    err(format!("csvfile: list index out of range (column {col})"))
                })?);
                break;
            }
        }
        match found {
            Some(v) => out.push(Value::from(v)),
            None => match opts.get("default") {
                Some(d) if d.kind() == ValueKind::Seq => out.extend(d.try_iter()?),
                Some(d) if !d.is_none() => out.push(d.clone()),
                _ => {}
            },
        }
    }
    Ok(out)
}

/// The `inventory_hostnames` lookup: the hosts matching a host pattern, in an
/// inventory rebuilt from the `groups` variable (as Ansible does). A pattern
/// that fails to parse gives no hosts.
fn inventory_hostnames(ctx: &Arc<RenderCtx>, terms: &[Value]) -> Result<Vec<Value>, Error> {
    let groups = ctx
        .resolve("groups")
        .map_err(from_template_error)?
        .unwrap_or_default();
    let mut inv = crate::inventory::Inventory::default();
    if groups.kind() == ValueKind::Map {
        for g in groups.try_iter()? {
            let group = text(&g);
            for h in seq(&groups.get_item(&g)?)? {
                inv.add_host(&text(&h), &group, None);
            }
        }
    }
    let pattern = terms.iter().map(text).collect::<Vec<_>>().join(",");
    Ok(inv
        .select_detailed(&pattern)
        .map(|sel| sel.hosts.into_iter().map(Value::from).collect())
        .unwrap_or_default())
}

/// Rows of a CSV text as Python's `csv.reader` (excel dialect) reads them:
/// `"` quotes fields, `""` is a quote inside them, CR LF and LF end rows.
fn parse_csv(text: &str, delim: char) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut at_field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_quotes = true;
                at_field_start = false;
            }
            c if c == delim => {
                row.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                if !row.is_empty() || !field.is_empty() {
                    row.push(std::mem::take(&mut field));
                }
                rows.push(std::mem::take(&mut row));
                at_field_start = true;
            }
            c => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if !row.is_empty() || !field.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
const PUNCT: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Parses `key=value` words after the first word of a term.
fn term_params(term: &str) -> (String, VarMap) {
    let mut words = term.split_whitespace();
    let first = words.next().unwrap_or_default().to_string();
    let mut m = VarMap::new();
    for w in words {
        if let Some((k, v)) = w.split_once('=') {
            m.insert(k.to_string(), Value::from(v));
        }
    }
    (first, m)
}

fn password(ctx: &RenderCtx, term: &str, kw: &VarMap) -> Result<String, Error> {
    let (path, mut params) = term_params(term);
    for (k, v) in kw {
        params.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let length = params
        .get("length")
        .map(text)
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20);
    let chars_spec = params.get("chars").map(|c| match c.kind() {
        ValueKind::Seq => seq(c)
            .unwrap_or_default()
            .iter()
            .map(text)
            .collect::<Vec<_>>(),
        _ => text(c).split(',').map(str::to_string).collect(),
    });
    let mut alphabet = String::new();
    for c in
        chars_spec.unwrap_or_else(|| vec!["ascii_letters".into(), "digits".into(), ".,:-_".into()])
    {
        match c.as_str() {
            "ascii_letters" => alphabet.push_str(LETTERS),
            "ascii_lowercase" => alphabet.push_str(&LETTERS[..26]),
            "ascii_uppercase" => alphabet.push_str(&LETTERS[26..]),
            "digits" => alphabet.push_str(DIGITS),
            "hexdigits" => alphabet.push_str("0123456789abcdefABCDEF"),
            "punctuation" => alphabet.push_str(PUNCT),
            other => alphabet.push_str(other),
        }
    }
    let alphabet: Vec<char> = alphabet.chars().collect();
    if alphabet.is_empty() {
        return Err(err("password lookup: empty character set"));
    }
    // `seed` makes the password repeatable (not Python's sequence, but the
    // same one for the same seed, which is what the option promises).
    let seed = params.get("seed").cloned();
    let generate = || -> String {
        let mut rng = super::filters::rng_for(seed.as_ref());
        (0..length)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect()
    };
    let encrypt = params.get("encrypt").map(text).filter(|e| !e.is_empty());
    let finish = |plain: String, salt: Option<String>| -> Result<String, Error> {
        match (&encrypt, salt) {
            (Some(e), Some(salt)) => super::filters::crypt(&plain, e, &salt, None),
            _ => Ok(plain),
        }
    };
    let new_salt = || -> String {
        let mut rng = rand::thread_rng();
        let chars = super::filters::CRYPT_CHARS;
        (0..16)
            .map(|_| chars[rng.gen_range(0..chars.len())] as char)
            .collect()
    };
    if path == "/dev/null" {
        let salt = encrypt.as_ref().map(|_| new_salt());
        return finish(generate(), salt);
    }
    let p = Path::new(&path);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        match ctx.origin.search_paths.last() {
            Some(base) => base.join(p),
            None => absolute(p),
        }
    };
    // The file holds `password`, or `password salt=SALT` once a hash was
    // asked for (the salt is kept so the hash stays the same).
    let stored = std::fs::read_to_string(&full)
        .ok()
        .map(|c| c.trim_end_matches(['\n', '\r']).to_string());
    let (pw, salt, changed) = match stored {
        Some(content) => {
            let (pw, salt) = match content.rsplit_once(" salt=") {
                Some((pw, rest)) => {
                    let salt = rest.rsplit_once(" ident=").map_or(rest, |(s, _)| s);
                    (pw.to_string(), Some(salt.to_string()))
                }
                None => (content, None),
            };
            match (&encrypt, salt) {
                (Some(_), None) => (pw, Some(new_salt()), true),
                (_, salt) => (pw, salt, false),
            }
        }
        None => (generate(), encrypt.as_ref().map(|_| new_salt()), true),
    };
    if !changed {
        return finish(pw, salt);
    }
    let content = match &salt {
        Some(s) => format!("{pw} salt={s}"),
        None => pw.clone(),
    };
    if let Some(dir) = full.parent() {
        make_private_dir(dir).map_err(|e| {
            err(format!(
                "password lookup: cannot create {}: {e}",
                dir.display()
            ))
        })?;
    }
    write_private(&full, &format!("{content}\n")).map_err(|e| {
        err(format!(
            "password lookup: cannot write {}: {e}",
            full.display()
        ))
    })?;
    finish(pw, salt)
}

/// Creates the password file's directory as ansible-core's `makedirs_safe(
/// dir, 0o700)` does: the directory itself private, its missing parents
/// with the default mode.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

/// The `subelements` lookup, as ansible-core walks it: for each dict of a
/// list (or of a dict's values), the list at the dotted `key`, paired with
/// the dict. Items marked `skipped` are left out; `skip_missing` (keyword or
/// third term) passes over missing keys instead of failing.
fn subelements(terms: &[Value], skip_kw: bool) -> Result<Vec<Value>, Error> {
    let terms_error = |msg: &str| {
        err(format!(
            "subelements lookup expects a list of two or three items, {msg}"
        ))
    };
    if !(2..=3).contains(&terms.len()) {
        return Err(terms_error(""));
    }
    let (list, key) = (&terms[0], &terms[1]);
    if !matches!(list.kind(), ValueKind::Seq | ValueKind::Map) || key.kind() != ValueKind::String {
        return Err(terms_error(
            "first a dict or a list, second a string pointing to the subkey",
        ));
    }
    let is_skipped = |v: &Value| {
        v.get_attr("skipped")
            .ok()
            .is_some_and(|s| !s.is_undefined() && (s.kind() != ValueKind::Bool || s.is_true()))
    };
    let elements: Vec<Value> = if list.kind() == ValueKind::Map {
        if is_skipped(list) {
            return Ok(Vec::new());
        }
        list.try_iter()?
            .map(|k| list.get_item(&k))
            .collect::<Result<_, _>>()?
    } else {
        seq(list)?
    };
    // ansible-core accepts a dict, or (by the letter of its check) anything
    // whose items are all flag names.
    if let Some(flags) = terms.get(2).filter(|f| f.kind() != ValueKind::Map) {
        let all_flags = flags
            .try_iter()
            .map(|mut it| it.all(|k| k.as_str() == Some("skip_missing")))
            .unwrap_or(false);
        if !all_flags {
            return Err(terms_error(
                "the optional third item must be a dict with flags skip_missing",
            ));
        }
    }
    let skip_missing = terms
        .get(2)
        .and_then(|f| f.get_attr("skip_missing").ok())
        .filter(|v| !v.is_undefined())
        .map_or(skip_kw, |v| super::native::to_bool(&v));
    let parts: Vec<String> = text(key).split('.').map(str::to_string).collect();
    let last = parts.len() - 1;
    let mut out = Vec::new();
    for item in elements {
        if item.kind() != ValueKind::Map {
            return Err(err(format!(
                "subelements lookup expects a dictionary, got '{}'",
                super::native::python_repr(&item)
            )));
        }
        if is_skipped(&item) {
            continue;
        }
        let mut sub = item.clone();
        let mut sublist = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let child = sub.get_attr(part).unwrap_or(Value::UNDEFINED);
            if child.is_undefined() {
                if skip_missing {
                    continue;
                }
                return Err(err(format!(
                    "could not find '{part}' key in iterated item '{}'",
                    super::native::python_repr(&sub)
                )));
            }
            if i < last {
                if child.kind() != ValueKind::Map {
                    if skip_missing {
                        continue;
                    }
                    return Err(err(format!(
                        "the key {part} should point to a dictionary, got '{}'",
                        super::native::python_repr(&child)
                    )));
                }
                sub = child;
            } else if child.kind() != ValueKind::Seq {
                return Err(err(format!(
                    "the key {part} should point to a list, got '{}'",
                    super::native::python_repr(&child)
                )));
            } else {
                sublist = seq(&child)?;
            }
        }
        for s in sublist {
            out.push(Value::from(vec![item.clone(), s]));
        }
    }
    Ok(out)
}

/// `with_sequence`: `start=1 end=5 stride=1 format=web%02d`, `count=`, or the
/// shortcut `[start-]end[/stride][:format]`. Yields strings, like Ansible.
fn sequence(term: &str, kw: &VarMap) -> Result<Vec<Value>, Error> {
    let mut start: i64 = 1;
    let mut end: Option<i64> = None;
    let mut count: Option<i64> = None;
    let mut stride: i64 = 1;
    let mut format = "%d".to_string();
    // ansible-core's `integer` option type: a whole number, as Python's
    // `Decimal` reads it (`3`, ` 3 `, `3.0`); no hex, no octal.
    let num = |key: &str, s: &str| -> Result<i64, Error> {
        let t = s.trim();
        t.parse::<i64>()
            .ok()
            .or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.is_finite())
                    .map(|f| f as i64)
            })
            .ok_or_else(|| {
                err(format!(
                    "Config '{key}' for 'sequence' lookup plugin from 'Direct' has an invalid value: Invalid value provided for 'integer': '{s}'"
                ))
            })
    };
    let term = term.trim();
    let mut params = VarMap::new();
    if term.contains('=') {
        params = term_params(&format!("_ {term}")).1;
    } else if !term.is_empty() {
        // ansible-core's SHORTCUT pattern (case-insensitive hex-ish digits,
        // which then fail as integers, as there).
        let re = regex::Regex::new(
            r"(?i)^(?:(0?x?[0-9a-f]+)-)?(0?x?[0-9a-f]+)(?:/(0?x?[0-9a-f]+))?(?::(.+))?$",
        )
        .expect("valid regex");
        let c = re
            .captures(term)
            .ok_or_else(|| err(format!("can't parse arg {term:?} of with_sequence")))?;
        if let Some(s) = c.get(1) {
            start = num("start", s.as_str())?;
        }
        end = Some(num("end", &c[2])?);
        if let Some(s) = c.get(3) {
            stride = num("stride", s.as_str())?;
        }
        if let Some(f) = c.get(4) {
            format = f.as_str().to_string();
        }
    }
    for (k, v) in kw {
        params.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let unknown: Vec<String> = params
        .keys()
        .filter(|k| !["start", "end", "count", "stride", "format"].contains(&k.as_str()))
        .map(|k| format!("'{k}'"))
        .collect();
    if !unknown.is_empty() {
        return Err(err(format!(
            "unrecognized arguments to with_sequence: [{}]",
            unknown.join(", ")
        )));
    }
    for (k, v) in &params {
        let s = text(v);
        match k.as_str() {
            "start" => start = num(k, &s)?,
            "end" => end = Some(num(k, &s)?),
            "count" => count = Some(num(k, &s)?),
            "stride" => stride = num(k, &s)?,
            _ => format = s,
        }
    }
    // ansible-core's sanity_check, in its order (and its formula for
    // `count`, which counts `count * stride` numbers past `start`).
    if count.is_some() && end.is_some() {
        return Err(err("can't specify both count and end in with_sequence"));
    }
    let end = match (count, end) {
        (Some(0), _) => return Ok(Vec::new()),
        (Some(c), _) => start + c * stride - 1,
        (None, Some(e)) => e,
        (None, None) => return Err(err("must specify count or end in with_sequence")),
    };
    if stride > 0 && end < start {
        return Err(err("to count backwards make stride negative"));
    }
    if stride < 0 && end > start {
        return Err(err("to count forward don't make stride negative"));
    }
    if stride == 0 {
        return Ok(Vec::new());
    }
    if format.matches('%').count() != 1 {
        return Err(err(format!("bad formatting string: {format}")));
    }
    let mut out = Vec::new();
    let mut i = start;
    while (stride > 0 && i <= end) || (stride < 0 && i >= end) {
        out.push(Value::from(printf_int(&format, i)?));
        i += stride;
    }
    Ok(out)
}

/// Python `%`-formatting of one integer (`%d`, `%02d`, `%x`, `%o`...).
fn printf_int(fmt: &str, n: i64) -> Result<String, Error> {
    let re = regex::Regex::new(r"%(-?)(0?)(\d*)([dixXo])").expect("valid regex");
    let mut out = String::new();
    let mut last = 0;
    let mut used = false;
    for c in re.captures_iter(fmt) {
        let m = c.get(0).expect("whole match");
        out.push_str(&fmt[last..m.start()].replace("%%", "%"));
        let width: usize = c[3].parse().unwrap_or(0);
        let body = match &c[4] {
            "x" => format!("{n:x}"),
            "X" => format!("{n:X}"),
            "o" => format!("{n:o}"),
            _ => n.to_string(),
        };
        let s = if &c[1] == "-" {
            format!("{body:<width$}")
        } else if &c[2] == "0" {
            let (sign, digits) = body
                .strip_prefix('-')
                .map_or(("", body.as_str()), |d| ("-", d));
            format!("{sign}{digits:0>w$}", w = width.saturating_sub(sign.len()))
        } else {
            format!("{body:>width$}")
        };
        out.push_str(&s);
        last = m.end();
        used = true;
    }
    out.push_str(&fmt[last..].replace("%%", "%"));
    if !used {
        return Err(err(format!("bad formatting string: {fmt}")));
    }
    Ok(out)
}

/// The `config` lookup: base settings by their ansible-core names, read
/// from `ansible.cfg` and the environment as the CLI reads them (once per
/// process). Settings Keel does not know are missing, with `on_missing`
/// saying what that does (`error`, `warn`, `skip`).
fn config_lookup(terms: &[Value], kw: &VarMap) -> Result<Vec<Value>, Error> {
    static CONFIG: std::sync::OnceLock<Result<crate::config::Config, String>> =
        std::sync::OnceLock::new();
    if kw.contains_key("plugin_type") || kw.contains_key("plugin_name") {
        if !(kw.contains_key("plugin_type") && kw.contains_key("plugin_name")) {
            return Err(err(
                "Both plugin_type and plugin_name are required, cannot use one without the other.",
            ));
        }
        return Err(err(
            "Keel's config lookup reads base settings only, not the options of a plugin",
        ));
    }
    let on_missing = kw.get("on_missing").map_or("error".to_string(), text);
    if !["error", "warn", "skip"].contains(&on_missing.as_str()) {
        return Err(err(format!(
            "Invalid value '{on_missing}' for config 'on_missing' for 'config' lookup plugin. Valid values are: error, warn, skip"
        )));
    }
    let show_origin = kw.get("show_origin").is_some_and(native::to_bool);
    let config = CONFIG
        .get_or_init(|| crate::config::Config::load().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| err(e.clone()))?;
    let mut out = Vec::new();
    for term in terms {
        let Some(name) = term.as_str().filter(|_| term.kind() == ValueKind::String) else {
            return Err(err(format!(
                "Invalid setting identifier, {} is not a <class 'str'>, its a <class '{}'>.",
                native::python_repr(term),
                native::python_type_name(term)
            )));
        };
        let Some((value, origin)) = config.setting(name) else {
            let missing = format!("No config definition exists for '{name}'.");
            match on_missing.as_str() {
                "error" => return Err(err(missing)),
                "warn" => tracing::warn!("Skipping {name}: {missing}"),
                _ => {}
            }
            continue;
        };
        let value = config_value(value);
        out.push(if show_origin {
            Value::from(vec![value, Value::from(origin)])
        } else {
            value
        });
    }
    Ok(out)
}

fn config_value(v: &crate::config::Value) -> Value {
    use crate::config::Value as C;
    let path = |p: &std::path::Path| Value::from(p.display().to_string());
    match v {
        C::Bool(b) => Value::from(*b),
        C::Int(i) => i.map_or(Value::from(()), Value::from),
        C::Str(s) => s.as_deref().map_or(Value::from(()), Value::from),
        C::Path(p) => p.as_deref().map_or(Value::from(()), path),
        C::Paths(ps) => Value::from(ps.iter().map(|p| path(p)).collect::<Vec<_>>()),
        C::List(l) => Value::from(
            l.iter()
                .map(|s| Value::from(s.as_str()))
                .collect::<Vec<_>>(),
        ),
    }
}
