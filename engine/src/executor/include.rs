//! Dynamic includes (`include_tasks`, `include_role`): what each host
//! includes, and loading it through the playbook resolver at run time.

use std::path::PathBuf;

use minijinja::Value;

use crate::diag::Diagnostic;
use crate::playbook::plan::{IncludeTarget, Node, Task};
use crate::playbook::IncludeError;
use crate::template::{Scope, TemplateOrigin};
use crate::vars::VarMap;

use super::host::PlayCtx;
use super::task::loop_items;

/// The includes one host makes for this task: one per loop item (or one),
/// none when its `when` is false. Each is (target key, parameters).
pub(super) fn expand(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Vec<(String, VarMap)>, String> {
    let templar = &ctx.shared.templar;
    let looped: Vec<Value> = match &task.loop_ {
        Some(_) => match loop_items(ctx, task, scope, origin) {
            Ok(items) => items,
            // A loop that does not template is no error when the `when`,
            // judged without an item, is false (ansible-core skips it).
            Err(e) => {
                if matches!(
                    templar.eval_conditions(&task.when, scope, origin),
                    Ok(false)
                ) {
                    return Ok(Vec::new());
                }
                return Err(e);
            }
        },
        None => Vec::new(),
    };
    let all_items = Value::from(looped.clone());
    let items: Vec<Option<Value>> = match &task.loop_ {
        Some(_) => looped.iter().cloned().map(Some).collect(),
        None => vec![None],
    };
    let lc = super::task::resolved_loop_control(ctx, &task.loop_control, scope, origin)?;
    let loop_var = lc.loop_var.clone().unwrap_or_else(|| "item".into());
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut params = VarMap::new();
        for (k, v) in task.vars.iter() {
            params.insert(k.clone(), v.clone());
        }
        let mut s = scope.clone();
        if item.is_some() {
            let m = super::task::loop_vars(&lc, &loop_var, &looped, &all_items, i);
            params.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            s.push(std::sync::Arc::new(m));
        }
        if !templar
            .eval_conditions(&task.when, &s, origin)
            .map_err(|e| e.to_string())?
        {
            continue;
        }
        let key = match task.include.as_ref() {
            Some(IncludeTarget::Tasks { file, base_dir }) => {
                let f = templar
                    .render_str(file, &s, origin)
                    .map_err(|e| e.to_string())?
                    .to_string();
                let p = PathBuf::from(&f);
                let resolved = if p.is_absolute() {
                    p
                } else {
                    let mut cands = vec![base_dir.join(&f)];
                    if let Some(r) = &task.role {
                        cands.push(r.path.join("tasks").join(&f));
                        cands.push(r.path.join(&f));
                    }
                    cands.push(ctx.play.playbook_dir.join(&f));
                    cands
                        .iter()
                        .find(|c| c.exists())
                        .cloned()
                        .unwrap_or_else(|| base_dir.join(&f))
                };
                format!("tasks:{}", resolved.display())
            }
            Some(IncludeTarget::Role {
                name,
                tasks_from,
                vars_from,
                defaults_from,
            }) => {
                // An option templated to `omit` is left out.
                let r = |o: &Option<String>| -> Result<String, String> {
                    match o {
                        Some(x) => {
                            let v = templar
                                .render_str(x, &s, origin)
                                .map_err(|e| e.to_string())?
                                .to_string();
                            Ok(if v == crate::template::omit_token() {
                                String::new()
                            } else {
                                v
                            })
                        }
                        None => Ok(String::new()),
                    }
                };
                let n = templar
                    .render_str(name, &s, origin)
                    .map_err(|e| e.to_string())?
                    .to_string();
                // `public: true` (possibly templated) exposes the role's
                // defaults and vars to the rest of the play.
                let public = match task.args.get("public") {
                    Some(p) => crate::template::to_bool(
                        &templar
                            .render_value(p, &s, origin)
                            .map_err(|e| e.to_string())?,
                    ),
                    None => false,
                };
                format!(
                    "role:{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
                    n,
                    r(tasks_from)?,
                    r(vars_from)?,
                    r(defaults_from)?,
                    if public { "public" } else { "" }
                )
            }
            None => return Err("include task without a target".into()),
        };
        out.push((key, params));
    }
    Ok(out)
}

/// Loads an include target into plan nodes.
/// Nodes to run, handlers an included role brings, and the role itself when
/// it was included with `public: true`.
pub(super) type Loaded = (
    Vec<Node>,
    Vec<std::sync::Arc<crate::playbook::plan::Handler>>,
    Option<std::sync::Arc<crate::playbook::plan::RoleInstance>>,
);

/// `Err(Missing)` fails the including hosts; `Err(Invalid)` stops the run.
pub(super) fn load(ctx: &PlayCtx, task: &Task, key: &str) -> Result<Loaded, IncludeError> {
    let loaded = load_target(ctx, task, key)?;
    // A handler that includes tasks: as in a handler list, the file's own
    // entries may be blocks but a block inside one is refused
    // (ansible-core's `load_list_of_tasks(use_handlers=True)`).
    if ctx
        .play
        .handlers
        .iter()
        .any(|h| std::ptr::eq(&*h.task, task))
    {
        for n in &loaded.0 {
            if let Node::Block(b) = n {
                let nested =
                    b.block
                        .iter()
                        .chain(&b.rescue)
                        .chain(&b.always)
                        .find_map(|c| match c {
                            Node::Block(inner) => Some(inner),
                            _ => None,
                        });
                if let Some(inner) = nested {
                    return Err(IncludeError::Missing(
                        Diagnostic::new("Using a block as a handler is not supported.")
                            .at(inner.span.clone()),
                    ));
                }
            }
        }
    }
    Ok(loaded)
}

fn load_target(ctx: &PlayCtx, task: &Task, key: &str) -> Result<Loaded, IncludeError> {
    let opts = crate::playbook::ResolveOptions {
        roles_path: ctx.shared.opts.roles_path.clone(),
        collections_path: ctx.shared.opts.collections_path.clone(),
        extra_vars: ctx.shared.opts.extra_vars.clone(),
        prompter: None,
    };
    if let Some(path) = key.strip_prefix("tasks:") {
        crate::playbook::load_include_tasks(std::path::Path::new(path), task, &ctx.play, &opts)
            .map(|nodes| (nodes, Vec::new(), None))
    } else if let Some(rest) = key.strip_prefix("role:") {
        let parts: Vec<&str> = rest.split('\u{1f}').collect();
        let opt = |i: usize| {
            parts
                .get(i)
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string())
        };
        let target = IncludeTarget::Role {
            name: parts[0].to_string(),
            tasks_from: opt(1),
            vars_from: opt(2),
            defaults_from: opt(3),
        };
        let public = parts.get(4) == Some(&"public");
        crate::playbook::load_include(&ctx.play, task, &target, &opts)
            .map(|inc| (inc.nodes, inc.handlers, inc.role.filter(|_| public)))
    } else {
        Err(IncludeError::Missing(Diagnostic::new(format!(
            "bad include target {key}"
        ))))
    }
}
