//! Actions the executor carries out itself, because they change the run's
//! own state rather than a host: `set_fact`, `include_vars` (in
//! `include_vars.rs`), `meta`, and the
//! `with_<lookup>` loop sources.

use std::sync::Arc;

use parking_lot::Mutex;

use minijinja::Value;

use crate::output::Status;
use crate::playbook::plan::Task;
use crate::template::{Scope, TemplateOrigin};
use crate::vars::VarMap;

use super::host::{ser, value_to_map, HostState, PlayCtx};
use super::result::{ExecError, SingleResult};

type Single = SingleResult;

/// Runs `task` if it is an executor action; `None` means "not mine".
pub(super) fn run_action(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Option<Single>, ExecError> {
    let templar = &ctx.shared.templar;
    let fail = |e: String| ExecError::failed(e);
    match task.action.as_str() {
        "set_fact" => {
            let mut facts = VarMap::new();
            let mut cacheable = false;
            if task.args.keys().all(|k| k == "cacheable") {
                return Err(fail(
                    "No key/value pairs provided, at least one is required for this action to succeed"
                        .into(),
                ));
            }
            for (k, v) in &task.args {
                if k == "cacheable" {
                    let c = templar
                        .render_value(v, scope, origin)
                        .map_err(|e| fail(e.to_string()))?;
                    cacheable = crate::template::to_bool(&c);
                    continue;
                }
                // set_fact is the one action whose keys are templated
                // (`set_fact: "{{ name }}=value"`), as in Ansible.
                let key = if crate::template::is_template(k) {
                    let v = templar
                        .render_value(&Value::from(k.as_str()), scope, origin)
                        .map_err(|e| fail(e.to_string()))?;
                    if v.as_str().is_none() {
                        return Err(fail(format!(
                            "Invalid variable name '{v}' of type '{}'.",
                            python_type(&v)
                        )));
                    }
                    v.to_string()
                } else {
                    k.clone()
                };
                if !is_identifier(&key) {
                    return Err(fail(format!("Invalid variable name '{key}'.")));
                }
                let r = templar
                    .render_value(v, scope, origin)
                    .map_err(|e| fail(e.to_string()))?;
                // A value that is `omit` leaves the argument out, as it
                // does for every action in ansible-core.
                if r.as_str() == Some(crate::template::omit_token()) {
                    continue;
                }
                facts.insert(key, r);
            }
            if facts.is_empty() {
                return Err(fail(
                    "No key/value pairs provided, at least one is required for this action to succeed"
                        .into(),
                ));
            }
            {
                let mut h = host.lock();
                for (k, v) in &facts {
                    h.set_fact(k.clone(), v.clone());
                }
                // `cacheable`: host facts too, so the fact cache keeps them
                // for later runs (ansible-core's set_host_facts).
                if cacheable {
                    h.add_facts(&facts);
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
        "include_vars" => super::include_vars::run(ctx, task, host, scope, origin).map(Some),
        "meta" => {
            let action = meta_name(task);
            let mut r = VarMap::new();
            r.insert("changed".into(), Value::from(false));
            r.insert("failed".into(), Value::from(false));
            match action.as_str() {
                "clear_facts" => host.lock().clear_facts(),
                "clear_host_errors" => host.lock().failed = false,
                "noop" | "flush_handlers" | "end_play" | "end_host" | "end_batch"
                | "refresh_inventory" | "reset_connection" => {}
                other => return Err(fail(format!("invalid meta action requested: {other}"))),
            }
            r.insert("_keel_meta".into(), Value::from(action));
            Ok(Some(Single::new(Status::Ok, r)))
        }
        "add_host" => add_host(ctx, task, scope, origin).map(Some),
        "group_by" => group_by(ctx, task, host, scope, origin).map(Some),
        _ => Ok(None),
    }
}

/// The Python type name of a value, for messages.
fn python_type(v: &Value) -> &'static str {
    use minijinja::value::ValueKind;
    match v.kind() {
        ValueKind::None => "NoneType",
        ValueKind::Bool => "bool",
        ValueKind::Number if v.is_integer() => "int",
        ValueKind::Number => "float",
        ValueKind::String => "str",
        ValueKind::Seq | ValueKind::Iterable => "list",
        ValueKind::Map => "dict",
        _ => "object",
    }
}

/// A valid variable name, as ansible-core checks it: a letter or `_`, then
/// letters, digits or `_`, and not a Python or Jinja keyword.
pub(crate) fn is_identifier(name: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
        "continue", "def", "del", "elif", "else", "except", "finally", "for", "from", "global",
        "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return",
        "try", "while", "with", "yield", "true", "false", "none",
    ];
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&name)
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

/// The task's arguments, templated.
fn rendered_args(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<VarMap, ExecError> {
    let v = ctx
        .shared
        .templar
        .render_value(&ser(&task.args), scope, origin)
        .map_err(|e| ExecError::failed(e.to_string()))?;
    let mut args = value_to_map(&v).unwrap_or_default();
    // `add_host: "{{ a_dict }}"`: the whole argument text is a template
    // giving the mapping.
    if args.len() == 1 {
        if let Some(m) = args.get("_raw_params").and_then(value_to_map) {
            args = m;
        }
    }
    Ok(args)
}

/// A list argument given as a list or as comma-separated text.
fn name_list(v: &Value) -> Vec<String> {
    if let Some(s) = v.as_str() {
        return s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect();
    }
    match v.try_iter() {
        Ok(it) => it.map(|x| x.to_string()).collect(),
        Err(_) => vec![v.to_string()],
    }
}

/// `add_host`: adds a host (and its groups and variables) to the run's
/// inventory. Like Ansible, `changed` says whether the inventory changed.
fn add_host(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Single, ExecError> {
    let fail = ExecError::failed;
    let mut args = rendered_args(ctx, task, scope, origin)?;
    if args.contains_key("_raw_params") {
        return Err(fail(
            "add_host takes key=value arguments or a mapping; free text is not one".into(),
        ));
    }
    let name = ["name", "host", "hostname"]
        .iter()
        .find_map(|k| args.shift_remove(*k))
        .map(|v| v.to_string())
        .ok_or_else(|| fail("name, host or hostname needs to be provided".into()))?;
    let mut groups = Vec::new();
    for k in ["groups", "group", "groupname"] {
        if let Some(v) = args.shift_remove(k) {
            for g in name_list(&v) {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
    }
    // `name:port` gives the port as a host variable.
    let (host_name, port) = split_host_port(&name);
    let mut host_vars = args;
    if let Some(p) = port {
        host_vars.insert("ansible_ssh_port".into(), Value::from(p));
    }
    let changed = {
        let mut inv = ctx.shared.inventory.write();
        let mut changed = false;
        if !inv.hosts.contains_key(&host_name) {
            inv.add_host(&host_name, "all", None);
            changed = true;
        }
        for (k, v) in &host_vars {
            let same = inv
                .hosts
                .get(&host_name)
                .and_then(|h| h.vars.get(k))
                .is_some_and(|old| old == v);
            if !same {
                inv.set_host_var(&host_name, k, v.clone());
                changed = true;
            }
        }
        for g in &groups {
            let in_group = inv
                .groups
                .get(g)
                .is_some_and(|grp| grp.hosts.iter().any(|h| h == &host_name));
            if !in_group {
                inv.add_host(&host_name, g, None);
                changed = true;
            }
        }
        if changed {
            inv.reconcile_runtime();
        }
        changed
    };
    if changed {
        super::host::record_inventory_change(
            ctx,
            super::host::InventoryChange::Host(
                host_name.clone(),
                groups.clone(),
                host_vars.clone(),
            ),
        );
    }
    let mut info = VarMap::new();
    info.insert("host_name".into(), Value::from(host_name));
    info.insert("groups".into(), ser(&groups));
    info.insert("host_vars".into(), ser(&host_vars));
    let mut r = VarMap::new();
    r.insert("add_host".into(), ser(&info));
    r.insert("changed".into(), Value::from(changed));
    r.insert("failed".into(), Value::from(false));
    let status = if changed { Status::Changed } else { Status::Ok };
    Ok(Single::new(status, r))
}

/// `host:port` (not an IPv6 address without brackets) split in two.
fn split_host_port(name: &str) -> (String, Option<u16>) {
    if let Some(rest) = name.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (h.to_string(), port);
        }
    }
    match name.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), Some(port)),
            Err(_) => (name.to_string(), None),
        },
        _ => (name.to_string(), None),
    }
}

/// `group_by`: puts the current host in a group named by `key` (spaces
/// become dashes), under `parents` (default `all`).
fn group_by(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Single, ExecError> {
    let fail = ExecError::failed;
    let args = rendered_args(ctx, task, scope, origin)?;
    let Some(key) = args.get("key") else {
        return Err(fail(
            "the 'key' param is required when using group_by".into(),
        ));
    };
    let group = key.to_string().replace(' ', "-");
    let parents: Vec<String> = match args.get("parents") {
        Some(p) => match p.as_str() {
            Some(s) => vec![s.to_string()],
            None => name_list(p),
        },
        None => vec!["all".into()],
    }
    .into_iter()
    .map(|p| p.replace(' ', "-"))
    .collect();
    let host_name = host.lock().name.clone();
    let changed = {
        let mut inv = ctx.shared.inventory.write();
        let mut changed = false;
        inv.ensure_group(&group);
        for p in &parents {
            if !inv.groups.contains_key(p) {
                inv.ensure_group(p);
                changed = true;
            }
        }
        for p in &parents {
            let linked = inv.groups[p.as_str()].children.iter().any(|c| c == &group);
            if !linked && p != &group {
                inv.add_child(p, &group).map_err(fail)?;
                changed = true;
            }
        }
        let in_group = inv.groups[group.as_str()]
            .hosts
            .iter()
            .any(|h| h == &host_name);
        if !in_group && inv.hosts.contains_key(&host_name) {
            inv.add_host(&host_name, &group, None);
            changed = true;
        }
        if changed {
            inv.reconcile_runtime();
        }
        changed
    };
    if changed {
        super::host::record_inventory_change(
            ctx,
            super::host::InventoryChange::Group(host_name.clone(), group.clone(), parents.clone()),
        );
    }
    let mut r = VarMap::new();
    r.insert("add_group".into(), Value::from(group));
    r.insert("parent_groups".into(), ser(&parents));
    r.insert("changed".into(), Value::from(changed));
    r.insert("failed".into(), Value::from(false));
    let status = if changed { Status::Changed } else { Status::Ok };
    Ok(Single::new(status, r))
}

/// Adds again the hosts `add_host` made, after the inventory was re-read.
pub(super) fn replay_dynamic_hosts(ctx: &PlayCtx) {
    let dynamic = ctx.shared.dynamic_hosts.lock().clone();
    if dynamic.is_empty() {
        return;
    }
    let mut inv = ctx.shared.inventory.write();
    for change in dynamic {
        match change {
            super::host::InventoryChange::Host(host, groups, vars) => {
                if !inv.hosts.contains_key(&host) {
                    inv.add_host(&host, "all", None);
                }
                for (k, v) in &vars {
                    inv.set_host_var(&host, k, v.clone());
                }
                for g in &groups {
                    inv.add_host(&host, g, None);
                }
            }
            super::host::InventoryChange::Group(host, group, parents) => {
                inv.ensure_group(&group);
                for p in &parents {
                    if p != &group {
                        let _ = inv.add_child(p, &group);
                    }
                }
                // A host the new sources dropped stays out.
                if inv.hosts.contains_key(&host) {
                    inv.add_host(&host, &group, None);
                }
            }
        }
    }
    inv.reconcile_runtime();
}
