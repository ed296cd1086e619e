//! Actions the executor carries out itself, because they change the run's
//! own state rather than a host: `set_fact`, `include_vars`, `meta`, and the
//! `with_<lookup>` loop sources.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use minijinja::Value;

use crate::output::Status;
use crate::playbook::plan::Task;
use crate::template::{Scope, TemplateOrigin, VarMap};

use super::host::{ser, value_to_map, HostState};
use super::task::PlayCtx;

type Single = super::task::SingleResult;

/// Runs `task` if it is an executor action; `None` means "not mine".
pub(super) fn run_action(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Option<Single>, super::task::ExecFailure> {
    let templar = &ctx.shared.templar;
    let fail = |e: String| super::task::ExecFailure::failed(e);
    match task.action.as_str() {
        "set_fact" => {
            let mut facts = VarMap::new();
            let mut cacheable = false;
            for (k, v) in &task.args {
                if k == "cacheable" {
                    cacheable = crate::template::to_bool(v);
                    continue;
                }
                let r = templar
                    .render_value(v, scope, origin)
                    .map_err(|e| fail(e.to_string()))?;
                facts.insert(k.clone(), r);
            }
            {
                let mut h = host.lock().unwrap();
                for (k, v) in &facts {
                    h.set_fact(k.clone(), v.clone());
                }
            }
            let mut r = VarMap::new();
            r.insert("changed".into(), Value::from(false));
            r.insert("ansible_facts".into(), ser(&facts));
            if cacheable {
                r.insert("cacheable".into(), Value::from(true));
            }
            r.insert("failed".into(), Value::from(false));
            Ok(Some(Single::new(Status::Ok, r)))
        }
        "include_vars" => {
            let args = templar
                .render_value(&ser(&task.args), scope, origin)
                .map_err(|e| fail(e.to_string()))?;
            let args = value_to_map(&args).unwrap_or_default();
            let file = args
                .get("file")
                .or_else(|| args.get("_raw_params"))
                .map(|v| v.to_string());
            let dir = args.get("dir").map(|v| v.to_string());
            let mut files: Vec<PathBuf> = Vec::new();
            let find = |name: &str, sub: &str| -> PathBuf {
                let p = PathBuf::from(name);
                if p.is_absolute() {
                    return p;
                }
                for base in &origin.search_paths {
                    for c in [base.join(sub).join(name), base.join(name)] {
                        if c.exists() {
                            return c;
                        }
                    }
                }
                task.file_dir.join(name)
            };
            if let Some(f) = file {
                files.push(find(&f, "vars"));
            } else if let Some(d) = dir {
                let d = find(&d, "vars");
                let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
                    .map_err(|e| {
                        fail(format!(
                            "include_vars: cannot read directory {}: {e}",
                            d.display()
                        ))
                    })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yml" | "yaml" | "json")
                        )
                    })
                    .collect();
                entries.sort();
                files = entries;
            } else {
                return Err(fail("include_vars needs 'file' or 'dir'".into()));
            }
            let mut loaded = VarMap::new();
            for f in &files {
                let node = crate::yaml::load_one(f).map_err(|e| fail(e.to_string()))?;
                let v = node.to_value();
                let Some(m) = value_to_map(&v) else {
                    if node.is_null() {
                        continue;
                    }
                    return Err(fail(format!(
                        "{}: vars file must hold a mapping",
                        f.display()
                    )));
                };
                loaded.extend(m);
            }
            let loaded = match args.get("name") {
                Some(n) => {
                    let mut m = VarMap::new();
                    m.insert(n.to_string(), ser(&loaded));
                    m
                }
                None => loaded,
            };
            {
                let mut h = host.lock().unwrap();
                let iv = Arc::make_mut(&mut h.include_vars);
                for (k, v) in &loaded {
                    iv.insert(k.clone(), v.clone());
                }
            }
            let mut r = VarMap::new();
            r.insert("changed".into(), Value::from(false));
            r.insert("ansible_facts".into(), ser(&loaded));
            r.insert(
                "ansible_included_var_files".into(),
                ser(files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()),
            );
            r.insert("failed".into(), Value::from(false));
            Ok(Some(Single::new(Status::Ok, r)))
        }
        "meta" => {
            let action = meta_name(task);
            let mut r = VarMap::new();
            r.insert("changed".into(), Value::from(false));
            r.insert("failed".into(), Value::from(false));
            match action.as_str() {
                "clear_facts" => host.lock().unwrap().clear_facts(),
                "clear_host_errors" => host.lock().unwrap().failed = false,
                "noop" | "flush_handlers" | "end_play" | "end_host" | "end_batch"
                | "refresh_inventory" | "reset_connection" => {}
                other => return Err(fail(format!("invalid meta action requested: {other}"))),
            }
            r.insert("_keel_meta".into(), Value::from(action));
            Ok(Some(Single::new(Status::Ok, r)))
        }
        "add_host" | "group_by" => Err(fail(format!("'{}' is not supported yet", task.action))),
        _ => Ok(None),
    }
}

/// The meta action a task names (`meta: flush_handlers`).
pub(crate) fn meta_name(task: &Task) -> String {
    task.args
        .get("_raw_params")
        .or_else(|| task.args.values().next())
        .map(|v| v.to_string())
        .or_else(|| task.args.keys().next().cloned())
        .unwrap_or_default()
}

/// The items of a `with_<name>` loop, from its (templated) terms.
pub(super) fn with_lookup(
    ctx: &PlayCtx,
    name: &str,
    terms: Value,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Vec<Value>, String> {
    // `{{ a + b }}` on two lists is a lazy iterable: make it a list first.
    let terms = if terms.kind() == minijinja::value::ValueKind::Iterable {
        Value::from(
            terms
                .try_iter()
                .map(|i| i.collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    } else {
        terms
    };
    ctx.shared
        .templar
        .run_lookup(name, terms, &VarMap::new(), scope, origin)
        .map_err(|e| e.to_string())
}
