//! One task on one host: conditions, loops, the module call, retries,
//! `changed_when`/`failed_when`, `register`, and the result events.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use minijinja::Value;
use serde_json::Value as Json;

use crate::modules::{self, Args, ModuleError, ModuleResult, TaskContext};
use crate::output::{Event, HostResult, Status, CENSORED};
use crate::playbook::plan::{LoopControl, LoopKind, Task};
use crate::template::{is_template, Condition, Scope, TemplateOrigin};
use crate::transport::{Become, BecomeMethod, ConnectSpec, Connection};
use crate::vars::VarMap;

use super::actions;
use super::host::{scope_for, ser, HostState, PlayCtx, Shared};
use super::result::{ExecError, SingleResult};

type Single = SingleResult;

/// How a task ended on a host, for the play loop.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub status: Status,
    pub ignored: bool,
    /// The registered result.
    pub result: Value,
    /// Notify handlers (the task changed something).
    pub notify: bool,
}

impl Outcome {
    fn skipped(result: Value) -> Outcome {
        Outcome {
            status: Status::Skipped,
            ignored: false,
            result,
            notify: false,
        }
    }
}

fn result_value(m: &VarMap) -> Value {
    if m.contains_key(BARE_ERROR) {
        let mut m = m.clone();
        m.shift_remove(BARE_ERROR);
        return ser(&m);
    }
    ser(m)
}

/// What `register` stores: results are data, never templated again
/// ([`crate::vars::untrusted`]), except those of `set_fact` and
/// `include_vars`, whose values are the variables as given (ansible-core
/// keeps their trust, so they stay templatable). A failed one holds an error
/// message instead, which may quote a template: that is data too.
pub(super) fn registered_value(task: &Task, result: &Value) -> Value {
    let failed = result
        .get_attr("failed")
        .map(|f| f.is_true())
        .unwrap_or(false);
    match task.action.as_str() {
        "set_fact" | "include_vars" if !failed => result.clone(),
        _ => crate::vars::untrusted(result),
    }
}

pub(crate) fn to_json(v: &Value) -> Json {
    crate::template::value_to_json(v)
}

fn origin_for(ctx: &PlayCtx, task: &Task, host: &str) -> TemplateOrigin {
    TemplateOrigin {
        span: Some(task.span.clone()),
        label: Some(format!("task '{}'", task.display_name())),
        host: Some(host.to_string()),
        search_paths: search_paths(ctx, task),
    }
}

/// The task's search stack (`ansible_search_path`): its role and the roles
/// that brought that role in, its file's directory, the playbook directory.
pub(super) fn search_paths(ctx: &PlayCtx, task: &Task) -> Vec<PathBuf> {
    crate::search::task_stack(
        task.role.iter().flat_map(|r| r.search_roles()),
        &task.file_dir,
        &ctx.play.playbook_dir,
    )
}

/// Per-task magic variables: the directories relative file names are
/// searched in (`ansible_search_path`), and the role's name and path.
fn task_magic(ctx: &PlayCtx, task: &Task) -> Option<Arc<VarMap>> {
    let mut m = VarMap::new();
    let search: Vec<Value> = search_paths(ctx, task)
        .iter()
        .map(|p| Value::from(p.display().to_string()))
        .collect();
    m.insert("ansible_search_path".into(), Value::from(search));
    if let Some(role) = task.role.as_ref() {
        m.insert("role_name".into(), Value::from(role.name.as_str()));
        m.insert("ansible_role_name".into(), Value::from(role.name.as_str()));
        m.insert(
            "role_path".into(),
            Value::from(role.path.display().to_string()),
        );
        if !role.include_parents.is_empty() {
            let (names, paths): (Vec<Value>, Vec<Value>) = role
                .include_parents
                .iter()
                .map(|(n, p)| {
                    (
                        Value::from(n.as_str()),
                        Value::from(p.display().to_string()),
                    )
                })
                .unzip();
            m.insert("ansible_parent_role_names".into(), Value::from(names));
            m.insert("ansible_parent_role_paths".into(), Value::from(paths));
        }
    }
    Some(Arc::new(m))
}

fn layer(scope: &Scope, m: VarMap) -> Scope {
    let mut s = scope.clone();
    s.push(Arc::new(m));
    s
}

/// Runs `task` on one host and emits its result events. The caller holds
/// the host's forks slot.
pub(crate) async fn run_task_on_host(
    ctx: Arc<PlayCtx>,
    task: Arc<Task>,
    host: Arc<Mutex<HostState>>,
    _rescuing: bool,
) -> Outcome {
    let (name, scope) = {
        let h = host.lock();
        (
            h.name.clone(),
            scope_for(
                &ctx.shared,
                &ctx.play,
                Some(&task),
                &h,
                task_magic(&ctx, &task),
            ),
        )
    };
    let origin = origin_for(&ctx, &task, &name);
    let task = if task.late.is_empty() {
        task
    } else {
        match resolve_late_keywords(&ctx, &task, &scope, &origin) {
            Ok(t) => Arc::new(t),
            Err(msg) => {
                let mut s = failed_single(msg);
                s.ignored = ignore_errors_of(&ctx, &task);
                emit(&ctx, &task, &name, &s, None, false, false);
                return Outcome {
                    status: Status::Failed,
                    ignored: s.ignored,
                    result: result_value(&s.result),
                    notify: false,
                };
            }
        }
    };
    let no_log = task.no_log.or(ctx.play.no_log).unwrap_or(false);

    let outcome = match &task.loop_ {
        None => {
            let single = run_single(&ctx, &task, &host, &name, &scope, &origin, None).await;
            let notify = single.status == Status::Changed;
            let value = result_value(&single.result);
            emit(&ctx, &task, &name, &single, None, false, no_log);
            Outcome {
                status: single.status,
                ignored: single.ignored,
                result: value,
                notify,
            }
        }
        Some(_) => run_loop(&ctx, &task, &host, &name, &scope, &origin, no_log).await,
    };

    if let Some(reg) = &task.register {
        host.lock()
            .set_fact(reg.clone(), registered_value(&task, &outcome.result));
    }
    outcome
}

/// The task with its templated boolean keywords resolved for this host. An
/// `omit` leaves the inherited value.
pub(crate) fn resolve_late_keywords(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Task, String> {
    let mut t = task.clone();
    t.late.clear();
    for (key, raw) in &task.late {
        let v = ctx
            .shared
            .templar
            .render_value(raw, scope, origin)
            .map_err(|e| e.to_string())?;
        if v.as_str() == Some(crate::template::omit_token()) {
            continue;
        }
        let b = crate::template::to_bool(&v);
        match key.as_str() {
            "become" => t.become_.become_ = Some(b),
            "ignore_errors" => t.ignore_errors = Some(b),
            "ignore_unreachable" => t.ignore_unreachable = Some(b),
            "no_log" => t.no_log = Some(b),
            "check_mode" => t.check_mode = Some(b),
            "diff" => t.diff = Some(b),
            "delegate_facts" => t.delegate_facts = b,
            "run_once" => t.run_once = b,
            "any_errors_fatal" => t.any_errors_fatal = Some(b),
            _ => {}
        }
    }
    Ok(t)
}

async fn run_loop(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    name: &str,
    scope: &Scope,
    origin: &TemplateOrigin,
    no_log: bool,
) -> Outcome {
    let items = match loop_items(ctx, task, scope, origin) {
        Ok(items) => items,
        Err(msg) => {
            // Ansible checks `when` before reporting a loop that can't be
            // templated: a skipped task doesn't need its loop.
            if let Ok(Some(c)) = ctx
                .shared
                .templar
                .first_false_condition(&task.when, scope, origin)
            {
                let s = skipped_single(c);
                emit(ctx, task, name, &s, None, false, no_log);
                return Outcome::skipped(result_value(&s.result));
            }
            let mut s = failed_single(msg);
            s.ignored = ignore_errors_of(ctx, task);
            emit(ctx, task, name, &s, None, false, no_log);
            return Outcome {
                status: Status::Failed,
                ignored: s.ignored,
                result: result_value(&s.result),
                notify: false,
            };
        }
    };
    if items.is_empty() {
        // Ansible's shape for a loop over nothing: skipped, no items.
        let mut r = VarMap::new();
        r.insert("changed".into(), Value::from(false));
        r.insert("skipped".into(), Value::from(true));
        r.insert("skipped_reason".into(), Value::from("No items in the list"));
        r.insert("results".into(), Value::from(Vec::<Value>::new()));
        let s = SingleResult::new(Status::Skipped, r);
        emit(ctx, task, name, &s, None, false, no_log);
        return Outcome::skipped(result_value(&s.result));
    }
    let lc = match resolved_loop_control(ctx, &task.loop_control, scope, origin) {
        Ok(lc) => lc,
        Err(msg) => {
            let mut s = failed_single(msg);
            s.ignored = ignore_errors_of(ctx, task);
            emit(ctx, task, name, &s, None, false, no_log);
            return Outcome {
                status: Status::Failed,
                ignored: s.ignored,
                result: result_value(&s.result),
                notify: false,
            };
        }
    };
    let lc = &*lc;
    let loop_var = lc.loop_var.clone().unwrap_or_else(|| "item".to_string());
    let mut results = Vec::with_capacity(items.len());
    let mut any_changed = false;
    let mut any_failed = false;
    let mut all_skipped = true;
    let mut ignored = false;
    let all_items = Value::from(items.clone());
    // Each item's result is visible to the next items under the register
    // name, as Ansible updates its task vars per iteration.
    let mut last_registered: Option<Value> = None;
    let mut loop_facts = VarMap::new();
    let sets_facts = matches!(task.action.as_str(), "set_fact" | "include_vars");
    for (i, item) in items.iter().enumerate() {
        let mut m = VarMap::new();
        if let (Some(reg), Some(prev)) = (&task.register, &last_registered) {
            m.insert(reg.clone(), prev.clone());
        }
        // Facts an earlier item set (set_fact, include_vars) win over the
        // task's own vars for the next items, as Ansible updates its task
        // vars in place.
        m.extend(loop_facts.iter().map(|(k, v)| (k.clone(), v.clone())));
        let per_item = loop_vars(lc, &loop_var, &items, &all_items, i);
        let extended = per_item.get("ansible_loop").cloned();
        m.extend(per_item);
        let item_scope = layer(scope, m);
        // Ansible pauses between items, not after the last one.
        if i > 0 {
            if let Some(p) = lc.pause {
                tokio::time::sleep(Duration::from_secs_f64(p)).await;
            }
        }
        let mut single = run_single(ctx, task, host, name, &item_scope, origin, Some(item)).await;
        single.result.insert(loop_var.clone(), item.clone());
        single
            .result
            .insert("ansible_loop_var".into(), Value::from(loop_var.as_str()));
        if let Some(iv) = &lc.index_var {
            single.result.insert(iv.clone(), Value::from(i));
            single
                .result
                .insert("ansible_index_var".into(), Value::from(iv.as_str()));
        }
        if let Some(l) = &extended {
            single.result.insert("ansible_loop".into(), l.clone());
        }
        // The label sees this item's registered result too.
        let label_scope = match &task.register {
            Some(reg) => {
                let mut m = VarMap::new();
                m.insert(reg.clone(), result_value(&single.result));
                layer(&item_scope, m)
            }
            None => item_scope.clone(),
        };
        // A label that cannot be templated fails the item (Ansible keeps the
        // rest of the item's result and shows the item itself). Its message
        // names no task or host: the result already belongs to both.
        let bare_origin = TemplateOrigin {
            label: None,
            host: None,
            ..origin.clone()
        };
        let label = match &lc.label {
            Some(l) => match ctx.shared.templar.render_str(l, &label_scope, &bare_origin) {
                Ok(v) => display_item(&v),
                Err(e) => {
                    single.status = Status::Failed;
                    single.ignored = ignore_errors_of(ctx, task);
                    single.result.insert("failed".into(), Value::from(true));
                    single.result.insert(
                        "msg".into(),
                        Value::from(format!(
                            "Failed to template loop_control.label: {}",
                            e.diag.message
                        )),
                    );
                    display_item(item)
                }
            },
            None => display_item(item),
        };
        emit(ctx, task, name, &single, Some(label), true, no_log);
        any_changed |= single.result.get("changed").is_some_and(|v| v.is_true());
        if single.status == Status::Failed {
            // One failed item that is not ignored makes the task fatal.
            ignored = if any_failed {
                ignored && single.ignored
            } else {
                single.ignored
            };
            any_failed = true;
        }
        if single.status == Status::Unreachable {
            let s = single;
            let value = result_value(&s.result);
            return Outcome {
                status: Status::Unreachable,
                ignored: s.ignored,
                result: value,
                notify: false,
            };
        }
        all_skipped &= single.status == Status::Skipped;
        if sets_facts {
            if let Some(f) = single
                .result
                .get("ansible_facts")
                .and_then(super::host::value_to_map)
            {
                loop_facts.extend(f);
            }
        }
        let value = result_value(&single.result);
        last_registered = Some(value.clone());
        results.push(value);
        if let Some(bw) = &lc.break_when {
            let mut m = VarMap::new();
            if let Some(reg) = &task.register {
                m.insert(reg.clone(), results.last().cloned().unwrap_or_default());
            }
            let s2 = layer(&item_scope, m);
            match ctx.shared.templar.eval_conditions(bw, &s2, origin) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    let mut s = failed_single(e.to_string());
                    s.ignored = ignore_errors_of(ctx, task);
                    emit(ctx, task, name, &s, None, false, no_log);
                    return Outcome {
                        status: Status::Failed,
                        ignored: s.ignored,
                        result: result_value(&s.result),
                        notify: false,
                    };
                }
            }
        }
    }
    // The summary's shape follows Ansible's: `changed`, `msg`, `results`,
    // `skipped` always; `failed` only when an item failed.
    let mut summary = VarMap::new();
    summary.insert("changed".into(), Value::from(any_changed));
    if any_failed {
        summary.insert("failed".into(), Value::from(true));
    }
    summary.insert(
        "msg".into(),
        Value::from(if any_failed {
            "One or more items failed"
        } else if all_skipped {
            "All items skipped"
        } else {
            "All items completed"
        }),
    );
    summary.insert("results".into(), Value::from(results));
    summary.insert("skipped".into(), Value::from(all_skipped));
    let status = if any_failed {
        Status::Failed
    } else if all_skipped {
        Status::Skipped
    } else if any_changed {
        Status::Changed
    } else {
        Status::Ok
    };
    let s = SingleResult {
        status,
        ignored: any_failed && ignored,
        result: summary,
        diff: vec![],
    };
    if status == Status::Failed || status == Status::Skipped {
        emit(ctx, task, name, &s, None, false, no_log);
    }
    Outcome {
        status,
        ignored: s.ignored,
        result: result_value(&s.result),
        notify: any_changed,
    }
}

/// `loop_control` with the names it gives (`loop_var`, `index_var`)
/// templated once, before the first item, as Ansible post-validates them.
pub(crate) fn resolved_loop_control<'a>(
    ctx: &PlayCtx,
    lc: &'a LoopControl,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<std::borrow::Cow<'a, LoopControl>, String> {
    let templated = |n: &Option<String>| n.as_deref().is_some_and(is_template);
    if !templated(&lc.loop_var) && !templated(&lc.index_var) {
        return Ok(std::borrow::Cow::Borrowed(lc));
    }
    let mut out = lc.clone();
    for name in [&mut out.loop_var, &mut out.index_var] {
        if let Some(n) = name.as_mut().filter(|n| is_template(n)) {
            *n = ctx
                .shared
                .templar
                .render_str(n, scope, origin)
                .map_err(|e| e.to_string())?
                .to_string();
        }
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The variables one loop item brings: the loop variable, `ansible_loop_var`,
/// the `index_var` and `ansible_index_var`, and `ansible_loop` when
/// `extended` (with `allitems`, `nextitem`, `previtem` as Ansible gives them).
pub(crate) fn loop_vars(
    lc: &LoopControl,
    loop_var: &str,
    items: &[Value],
    all_items: &Value,
    i: usize,
) -> VarMap {
    let n = items.len();
    let mut m = VarMap::new();
    m.insert(loop_var.to_string(), items[i].clone());
    m.insert("ansible_loop_var".into(), Value::from(loop_var));
    if let Some(iv) = &lc.index_var {
        m.insert(iv.clone(), Value::from(i));
        m.insert("ansible_index_var".into(), Value::from(iv.as_str()));
    }
    if lc.extended {
        let mut l = VarMap::new();
        l.insert("index".into(), Value::from(i + 1));
        l.insert("index0".into(), Value::from(i));
        l.insert("first".into(), Value::from(i == 0));
        l.insert("last".into(), Value::from(i + 1 == n));
        l.insert("length".into(), Value::from(n));
        l.insert("revindex".into(), Value::from(n - i));
        l.insert("revindex0".into(), Value::from(n - i - 1));
        if lc.extended_allitems {
            l.insert("allitems".into(), all_items.clone());
        }
        if let Some(next) = items.get(i + 1) {
            l.insert("nextitem".into(), next.clone());
        }
        if i > 0 {
            l.insert("previtem".into(), items[i - 1].clone());
        }
        m.insert("ansible_loop".into(), ser(&l));
    }
    m
}

/// How ansible-playbook shows a loop item: strings bare, the rest as Python
/// literals would print.
fn display_item(v: &Value) -> String {
    if let Some(s) = v.as_str() {
        return s.to_string();
    }
    crate::template::python_repr(v)
}

pub(crate) fn loop_items(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Vec<Value>, String> {
    let spec = task.loop_.as_ref().expect("loop");
    let templar = &ctx.shared.templar;
    let rendered = templar
        .render_value(&spec.value, scope, origin)
        .map_err(|e| e.to_string())?;
    match &spec.kind {
        LoopKind::Loop => {
            if rendered.as_str().is_some() {
                return Err(format!(
                    "Invalid data passed to 'loop', it requires a list, got this instead: {rendered}. Hint: If you passed a list/dict of just one element, try adding wantlist=True to your lookup invocation or use q/query instead of lookup."
                ));
            }
            match rendered.try_iter() {
                // `a + b` on lists gives a lazy iterable, not a sequence.
                Ok(it)
                    if matches!(
                        rendered.kind(),
                        minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Iterable
                    ) =>
                {
                    Ok(it.collect())
                }
                _ => Err(format!("Invalid data passed to 'loop', it requires a list, got this instead: {rendered}")),
            }
        }
        LoopKind::With(name) => actions::with_lookup(ctx, name, rendered, scope, origin),
    }
}

fn skipped_single(false_condition: &Condition) -> SingleResult {
    let mut r = VarMap::new();
    r.insert("changed".into(), Value::from(false));
    r.insert("skipped".into(), Value::from(true));
    r.insert(
        "skip_reason".into(),
        Value::from("Conditional result was False"),
    );
    r.insert("false_condition".into(), false_condition.as_value());
    SingleResult {
        status: Status::Skipped,
        ignored: false,
        result: r,
        diff: vec![],
    }
}

fn failed_single(msg: String) -> SingleResult {
    let mut r = VarMap::new();
    r.insert("changed".into(), Value::from(false));
    r.insert("failed".into(), Value::from(true));
    r.insert("msg".into(), Value::from(msg));
    r.insert("exception".into(), Value::from(NO_TRACEBACK));
    SingleResult {
        status: Status::Failed,
        ignored: false,
        result: r,
        diff: vec![],
    }
}

fn unreachable_single(msg: String) -> SingleResult {
    let mut r = VarMap::new();
    r.insert("changed".into(), Value::from(false));
    r.insert("unreachable".into(), Value::from(true));
    r.insert("msg".into(), Value::from(msg));
    SingleResult {
        status: Status::Unreachable,
        ignored: false,
        result: r,
        diff: vec![],
    }
}

/// Whether a failure of `task` is ignored (`ignore_errors`, task or play).
pub(super) fn ignore_errors_of(ctx: &PlayCtx, task: &Task) -> bool {
    task.ignore_errors.unwrap_or(ctx.play.ignore_errors)
}

/// Marks a failure the task reached before its action ran (shown without
/// "Module failed:"/"Action failed:"); removed before any sink sees it.
const BARE_ERROR: &str = "_keel_bare_error";

/// What Ansible puts under `exception` when no traceback is known.
const NO_TRACEBACK: &str = "(traceback unavailable)";

/// Runs the task once (one loop item, or the whole task without a loop).
async fn run_single(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    name: &str,
    scope: &Scope,
    origin: &TemplateOrigin,
    _item: Option<&Value>,
) -> SingleResult {
    let templar = &ctx.shared.templar;
    let delegated;
    let scope = match delegated_vars(ctx, task, scope, origin) {
        Some(v) => {
            delegated = scope.with_var("ansible_delegated_vars", v);
            &delegated
        }
        None => scope,
    };
    let mut single = match templar.first_false_condition(&task.when, scope, origin) {
        Ok(None) => match execute(ctx, task, host, name, scope, origin).await {
            Ok(s) => s,
            Err(ExecError::Unreachable(msg)) => {
                let mut s = unreachable_single(msg);
                if task
                    .ignore_unreachable
                    .unwrap_or(ctx.play.ignore_unreachable)
                {
                    s.ignored = true;
                }
                return s;
            }
            // Templating the arguments (or anything before the module ran)
            // failed: still a result, registered like any other.
            Err(ExecError::Failed(msg)) => failed_single(msg),
        },
        Ok(Some(c)) => return skipped_single(c),
        Err(e) => failed_single(e.to_string()),
    };
    if single.status == Status::Failed {
        if !single.result.contains_key("exception") {
            single
                .result
                .insert("exception".into(), Value::from(NO_TRACEBACK));
        }
        single.ignored = ignore_errors_of(ctx, task);
    }
    single
}

/// `ansible_delegated_vars` of a delegated task, as ansible-core sets it:
/// the delegated host's name mapped to its variables (its `hostvars`
/// entry; an empty mapping for a host the inventory does not know). `None`
/// when the task is not delegated or its `delegate_to` does not template
/// (the task then fails on that later, with the error).
fn delegated_vars(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Option<Value> {
    let raw = task.delegate_to.as_ref()?;
    let name = ctx
        .shared
        .templar
        .render_str(raw, scope, origin)
        .ok()?
        .to_string();
    let vars = scope
        .get_raw("hostvars")
        .and_then(|h| h.get_item(&Value::from(name.as_str())).ok())
        .filter(|v| !v.is_undefined() && !v.is_none())
        .unwrap_or_else(|| ser(VarMap::new()));
    let mut m = VarMap::new();
    m.insert(name, vars);
    Some(ser(&m))
}

/// `changed_when` and `failed_when`, evaluated after each attempt with the
/// result under the register name, and the result fields Ansible records
/// for them (`failed_when_result`, `changed_when_result` on error,
/// `failed_when_suppressed_exception`).
fn apply_result_conditions(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
    single: &mut SingleResult,
) {
    if single.result.contains_key("skipped") {
        return;
    }
    let cw = task.changed_when.as_ref().filter(|c| !c.is_empty());
    let fw = task.failed_when.as_ref().filter(|c| !c.is_empty());
    if cw.is_none() && fw.is_none() {
        return;
    }
    let templar = &ctx.shared.templar;
    let registered = |single: &SingleResult| {
        let mut m = VarMap::new();
        if let Some(reg) = &task.register {
            m.insert(reg.clone(), result_value(&single.result));
        }
        layer(scope, m)
    };
    let mut error: Option<(&str, String)> = None;
    if let Some(cw) = cw {
        match templar.eval_conditions(cw, &registered(single), origin) {
            Ok(c) => {
                single.result.insert("changed".into(), Value::from(c));
            }
            Err(e) => error = Some(("changed_when_result", e.to_string())),
        }
    }
    if let (None, Some(fw)) = (&error, fw) {
        match templar.eval_conditions(fw, &registered(single), origin) {
            Ok(f) => {
                single
                    .result
                    .insert("failed_when_result".into(), Value::from(f));
                single.result.insert("failed".into(), Value::from(f));
                if !f {
                    if let Some(ex) = single.result.shift_remove("exception") {
                        single
                            .result
                            .insert("failed_when_suppressed_exception".into(), ex);
                    }
                }
            }
            Err(e) => error = Some(("failed_when_result", e.to_string())),
        }
    }
    if let Some((key, msg)) = error {
        single.result.insert("failed".into(), Value::from(true));
        single.result.insert(key.into(), Value::from(msg));
    }
    single.status = status_of(&single.result);
}

/// The status a result map stands for.
fn status_of(r: &VarMap) -> Status {
    let flag = |k: &str| r.get(k).is_some_and(|v| v.is_true());
    if flag("failed") {
        Status::Failed
    } else if flag("skipped") {
        Status::Skipped
    } else if flag("changed") {
        Status::Changed
    } else {
        Status::Ok
    }
}

/// Templating the args, finding the connection, running the module with
/// `until` retries.
async fn execute(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    name: &str,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Single, ExecError> {
    let templar = &ctx.shared.templar;
    // Ansible's attempt count: `retries` given → 1 + retries runs (with or
    // without `until`; without it, until "not failed"); `until` alone → 4.
    let total = match &task.retries {
        Some(r) => 1 + render_u64(ctx, r, scope, origin)?.unwrap_or(3),
        None if task.until.is_some() => 4,
        None => 1,
    };
    let delay = match &task.delay {
        Some(d) => render_secs(ctx, d, scope, origin)?.unwrap_or(5.0),
        None => 5.0,
    };
    let async_spec = super::async_task::spec(ctx, task, scope, origin)?;
    if async_spec.is_some() {
        if let Some(msg) = super::async_task::refusal(&task.action) {
            // ansible-core raises this before the action runs: its message
            // is shown bare, not as a module's or an action's failure.
            let mut s = failed_single(msg);
            s.result.insert(BARE_ERROR.into(), Value::from(true));
            return Ok(s);
        }
    }
    let mut prepared: Option<Prepared> = None;
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        // Actions the executor owns, else the module.
        let mut single = match actions::run_action(ctx, task, host, scope, origin)? {
            Some(s) => s,
            None => {
                if prepared.is_none() {
                    prepared = Some(prepare(ctx, task, host, name, scope, origin).await?);
                }
                let p = prepared.as_ref().expect("prepared above");
                run_module(ctx, task, host, name, scope, origin, p, async_spec).await?
            }
        };
        if total > 1 {
            single
                .result
                .insert("attempts".into(), Value::from(attempt));
        }
        apply_result_conditions(ctx, task, scope, origin, &mut single);
        if total <= 1 {
            return Ok(single);
        }
        let done = match &task.until {
            Some(until) => {
                let mut m = VarMap::new();
                if let Some(reg) = &task.register {
                    m.insert(reg.clone(), result_value(&single.result));
                }
                templar
                    .eval_conditions(until, &layer(scope, m), origin)
                    .map_err(|e| ExecError::Failed(e.to_string()))?
            }
            None => single.status != Status::Failed,
        };
        if done {
            return Ok(single);
        }
        if attempt >= total {
            // Ansible reports one attempt fewer than it ran here.
            single
                .result
                .insert("attempts".into(), Value::from(total - 1));
            single.result.insert("failed".into(), Value::from(true));
            // ansible-core's trap, kept: a `failed_when` that judged the
            // last attempt fine wins over the exhausted retries for the
            // task's status, though the registered result says `failed`.
            let failed_when_passed = task.failed_when.as_ref().is_some_and(|c| !c.is_empty())
                && single
                    .result
                    .get("failed_when_result")
                    .is_some_and(|v| !v.is_true());
            if failed_when_passed {
                ctx.shared.sink.emit(&Event::Warning {
                    message: format!(
                        "{}: the retries ran out, but failed_when judged the last attempt fine; \
                         the task is not failed, its registered result says failed: true",
                        task.display_name()
                    ),
                });
            } else {
                single.status = Status::Failed;
            }
            return Ok(single);
        }
        ctx.shared.sink.emit(&Event::Verbose {
            level: 0,
            message: format!(
                "FAILED - RETRYING: [{name}]: {} ({} retries left).",
                task.display_name(),
                total - attempt
            ),
        });
        tokio::time::sleep(Duration::from_secs_f64(delay)).await;
    }
}

/// A module call made ready once per task run: templated args, connection,
/// become and environment. Retries reuse it, as Ansible templates the task
/// once before its attempts.
struct Prepared {
    module: modules::ModuleRef,
    args: Args,
    delegate: Option<String>,
    conn: Arc<Connection>,
    become_: Option<Become>,
    env: Vec<(String, String)>,
    check_mode: bool,
    diff: bool,
    no_log: bool,
    timeout: Option<Duration>,
    search_paths: Vec<PathBuf>,
}

async fn prepare(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    name: &str,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Prepared, ExecError> {
    let templar = &ctx.shared.templar;
    // A templated action (`action: "{{ module_to_run }}"`) names its module
    // for this host now.
    let action: std::borrow::Cow<'_, str> = if is_template(&task.action) {
        let v = templar
            .render_str(&task.action, scope, origin)
            .map_err(|e| ExecError::Failed(e.to_string()))?;
        let name = crate::template::display_text(&v);
        if modules::registry::EXECUTOR_ACTIONS.contains(&modules::canonical_name(&name)) {
            return Err(ExecError::Failed(format!(
                "the action '{name}' cannot be named by a template: only modules can"
            )));
        }
        std::borrow::Cow::Owned(modules::canonical_name(&name).to_string())
    } else {
        std::borrow::Cow::Borrowed(task.action.as_str())
    };
    // A Python module the resolver found (in `library/`, a collection or
    // ansible-core) runs through the fallback; everything else is native.
    let module = match &task.python {
        Some(p) => p.clone() as modules::ModuleRef,
        None => modules::lookup(&action).ok_or_else(|| {
            ExecError::Failed(format!("couldn't resolve module/action '{action}'"))
        })?,
    };

    let mut raw_args = VarMap::new();
    for (m, defaults) in &ctx.play.module_defaults {
        if modules::canonical_name(m) == action {
            for (k, v) in defaults {
                raw_args.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, v) in &task.args {
        raw_args.insert(k.clone(), v.clone());
    }
    // Free-form text for an action that takes none: the resolver warned,
    // and the task fails now that it runs, as in ansible-core.
    let bare = modules::canonical_name(&action);
    if raw_args.contains_key("_raw_params")
        && !crate::playbook::keywords::RAW_PARAM_ACTIONS.contains(&bare)
    {
        return Err(ExecError::Failed(format!(
            "Task failed: Action '{}' does not support raw params.",
            modules::registry::qualified_name(&task.action_as_written)
        )));
    }
    // `assert` evaluates `that` itself, as conditions, so ansible-core does
    // not template it first (the module may resolve a whole template to a
    // list of conditions).
    let raw_that = if task.python.is_none() && modules::canonical_name(&action) == "assert" {
        raw_args.shift_remove("that")
    } else {
        None
    };
    let args_value = templar
        .render_value(&ser(&raw_args), scope, origin)
        .map_err(|e| ExecError::Failed(e.to_string()))?;
    let mut args: Args = super::host::value_to_map(&args_value).unwrap_or_default();
    // Arguments given as one whole template: its mapping, under the others.
    if let Some(whole) = args.shift_remove(crate::playbook::VARIABLE_PARAMS) {
        let Some(mut from_template) = super::host::value_to_map(&whole) else {
            return Err(ExecError::Failed(format!(
                "the arguments of '{action}' are a template that must give a mapping, got {}",
                crate::template::display_text(&whole)
            )));
        };
        from_template.extend(std::mem::take(&mut args));
        args = from_template;
    }
    if let Some(that) = raw_that {
        args.insert("that".into(), that);
    }

    let delegate = match &task.delegate_to {
        Some(d) => Some(
            templar
                .render_str(d, scope, origin)
                .map_err(|e| ExecError::Failed(e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let conn: Arc<Connection> = if module.controller_only() {
        Arc::new(Connection::local())
    } else {
        connection_for(ctx, host, name, delegate.as_deref(), scope, origin).await?
    };
    let become_ = become_for(ctx, task, scope, origin)?;
    let env = environment_for(ctx, task, scope, origin)?;
    let check_mode = task
        .check_mode
        .or(ctx.play.check_mode)
        .unwrap_or(ctx.shared.opts.check);
    let diff = task.diff.or(ctx.play.diff).unwrap_or(ctx.shared.opts.diff);
    let no_log = task.no_log.or(ctx.play.no_log).unwrap_or(false);
    let timeout = match &task.timeout {
        Some(t) => render_u64(ctx, t, scope, origin)?.map(Duration::from_secs),
        None => None,
    };
    Ok(Prepared {
        module,
        args,
        delegate,
        conn,
        become_,
        env,
        check_mode,
        diff,
        no_log,
        timeout,
        search_paths: search_paths(ctx, task),
    })
}

/// One attempt of the module (as a background job when `async` is set).
#[allow(clippy::too_many_arguments)]
async fn run_module(
    ctx: &PlayCtx,
    task: &Task,
    host: &Arc<Mutex<HostState>>,
    name: &str,
    scope: &Scope,
    origin: &TemplateOrigin,
    p: &Prepared,
    async_spec: Option<super::async_task::AsyncSpec>,
) -> Result<Single, ExecError> {
    let mctx = TaskContext {
        host: name,
        conn: &p.conn,
        templar: &ctx.shared.templar,
        scope,
        origin,
        check_mode: p.check_mode,
        diff: p.diff,
        no_log: p.no_log,
        become_: p.become_.clone(),
        env: p.env.clone(),
        search_paths: &p.search_paths,
        timeout: p.timeout,
    };
    let module = &p.module;
    let delegate = &p.delegate;
    let args = &p.args;
    let res = match async_spec {
        Some(spec) => {
            let call = super::async_task::OwnedCall {
                module: module.clone(),
                args: args.clone(),
                conn: p.conn.clone(),
                become_: p.become_.clone(),
                env: p.env.clone(),
                check_mode: p.check_mode,
                diff: p.diff,
                no_log: p.no_log,
                search_paths: p.search_paths.clone(),
            };
            super::async_task::run(ctx, task, name, &mctx, call, spec, scope, origin).await
        }
        None => {
            let handle = reconnect_handle(ctx, &**module, host, name, delegate, scope, origin)?;
            let run = async {
                match handle {
                    Some(h) => modules::RECONNECT.scope(h, module.run(args, &mctx)).await,
                    None => module.run(args, &mctx).await,
                }
            };
            // From -vvv, each command line the module runs is shown as
            // ansible-core shows its connection's `EXEC` lines (never for
            // `no_log`: the line holds the module's arguments).
            if ctx.shared.opts.verbosity >= 3 && !p.no_log {
                let sink = ctx.shared.sink.clone();
                // ansible-core names the address; the host's inventory name
                // (or the delegate's) is what Keel has at hand here.
                let address = delegate.as_deref().unwrap_or(name).to_string();
                let log: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |line: &str| {
                    sink.emit(&Event::Verbose {
                        level: 3,
                        message: format!("<{address}> EXEC {line}"),
                    })
                });
                crate::transport::EXEC_LOG.scope(log, run).await
            } else {
                run.await
            }
        }
    };
    let mr = match res {
        Ok(mr) => mr,
        // A refused become (wrong sudo password) fails the task, as in
        // Ansible: the host itself is reachable.
        Err(ModuleError::Transport(t @ crate::transport::TransportError::Become { .. })) => {
            ModuleResult::failed(t.to_string())
        }
        // A task `timeout` fails the task; the host is still there. The
        // result is ansible-core 2.19's, `timedout.period` included, which
        // the `timedout` test reads (`frame` is deprecated there, but still
        // in every result).
        Err(ModuleError::Transport(crate::transport::TransportError::Timeout { secs, .. })) => {
            let mut timedout = VarMap::new();
            timedout.insert(
                "frame".into(),
                Value::from("Configure `DISPLAY_TRACEBACK` to see a traceback on timeout errors."),
            );
            timedout.insert("period".into(), Value::from(secs));
            // The executor, not the module, gave up: the message is shown
            // as it is, not as the module's failure.
            ModuleResult::failed(format!("Task failed: Timed out after {secs} second(s)."))
                .with("timedout", ser(&timedout))
                .with(BARE_ERROR, true)
        }
        Err(ModuleError::Transport(t)) => {
            ctx.shared.pool.invalidate(name).await;
            return Err(ExecError::Unreachable(t.to_string()));
        }
        Err(e) => ModuleResult::failed(e.to_string()),
    };
    let mut single = single_from(mr, delegate);
    if let Some(facts) = single.result.shift_remove("_keel_facts") {
        if let Some(f) = super::host::value_to_map(&facts) {
            // `delegate_facts` gives the facts to the delegated host.
            let target = match (delegate, task.delegate_facts) {
                (Some(d), true) => ctx.hosts.get(d).cloned(),
                _ => None,
            };
            match target {
                Some(t) => t.lock().add_facts(&f),
                None if task.delegate_facts && delegate.is_some() => {}
                None => host.lock().add_facts(&f),
            }
        }
    }
    Ok(single)
}

/// A number of seconds (`delay`), possibly fractional or templated.
fn render_secs(
    ctx: &PlayCtx,
    v: &Value,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Option<f64>, ExecError> {
    let r = ctx
        .shared
        .templar
        .render_value(v, scope, origin)
        .map_err(|e| ExecError::Failed(e.to_string()))?;
    if r.is_none() || r.is_undefined() {
        return Ok(None);
    }
    if let Ok(n) = f64::try_from(r.clone()) {
        return Ok(Some(n.max(0.0)));
    }
    r.as_str()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(|n| Some(n.max(0.0)))
        .ok_or_else(|| ExecError::Failed(format!("expected a number of seconds, got '{r}'")))
}

fn render_u64(
    ctx: &PlayCtx,
    v: &Value,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Option<u64>, ExecError> {
    let r = ctx
        .shared
        .templar
        .render_value(v, scope, origin)
        .map_err(|e| ExecError::Failed(e.to_string()))?;
    if r.is_none() || r.is_undefined() {
        return Ok(None);
    }
    if let Ok(n) = u64::try_from(r.clone()) {
        return Ok(Some(n));
    }
    r.as_str()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| ExecError::Failed(format!("expected a number, got '{r}'")))
}

fn single_from(mr: ModuleResult, delegate: &Option<String>) -> SingleResult {
    let mut result = VarMap::new();
    result.insert("changed".into(), Value::from(mr.changed));
    if let Some(msg) = &mr.msg {
        result.insert("msg".into(), Value::from(msg.as_str()));
    }
    for (k, v) in mr.data {
        result.insert(k, v);
    }
    if let Some(facts) = &mr.facts {
        // A module that shapes its own `ansible_facts` (setup prefixes each
        // name with `ansible_`, as the registered result shows) keeps it.
        if !result.contains_key("ansible_facts") {
            result.insert("ansible_facts".into(), ser(facts));
        }
        result.insert("_keel_facts".into(), ser(facts));
    }
    if mr.skipped {
        result.insert("skipped".into(), Value::from(true));
    }
    result.insert("failed".into(), Value::from(mr.failed));
    if mr.failed && !result.contains_key("exception") {
        result.insert("exception".into(), Value::from(NO_TRACEBACK));
    }
    let _ = delegate;
    let status = if mr.failed {
        Status::Failed
    } else if mr.skipped {
        Status::Skipped
    } else if mr.changed {
        Status::Changed
    } else {
        Status::Ok
    };
    let diff = mr.diff.iter().map(render_diff).collect();
    SingleResult {
        status,
        ignored: false,
        result,
        diff,
    }
}

fn render_diff(d: &crate::modules::FileDiff) -> String {
    let header = |side: &str, h: &str| {
        if h.is_empty() {
            side.to_string()
        } else {
            format!("{side}: {h}")
        }
    };
    let text = similar::TextDiff::from_lines(&d.before, &d.after);
    text.unified_diff()
        .context_radius(3)
        // A diff without headers (a module's `{before, after}`) shows
        // bare `before`/`after`, as ansible-core does.
        .header(
            &header("before", &d.before_header),
            &header("after", &d.after_header),
        )
        .to_string()
}

/// Dials the host anew for a module that reconnects (`reboot`), and makes
/// the new connection the one later tasks use.
struct HostReconnect {
    shared: Arc<Shared>,
    host: Arc<Mutex<HostState>>,
    name: String,
    spec: ConnectSpec,
}

#[async_trait::async_trait]
impl modules::Reconnect for HostReconnect {
    async fn reconnect(
        &self,
        connect_timeout: Option<Duration>,
    ) -> Result<Arc<Connection>, crate::transport::TransportError> {
        self.host.lock().conn = None;
        self.shared.pool.invalidate(&self.name).await;
        let mut spec = self.spec.clone();
        if let Some(t) = connect_timeout {
            spec.connect_timeout = t;
        }
        match self.shared.pool.get(&self.name, &spec).await {
            Ok(c) => {
                self.host.lock().conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                // The pool keeps failures; the next attempt must dial again.
                self.shared.pool.invalidate(&self.name).await;
                Err(e)
            }
        }
    }

    fn spec(&self) -> Option<ConnectSpec> {
        Some(self.spec.clone())
    }
}

/// A [`HostReconnect`] for modules that ask for one (not when delegated).
fn reconnect_handle(
    ctx: &PlayCtx,
    module: &dyn modules::Module,
    host: &Arc<Mutex<HostState>>,
    name: &str,
    delegate: &Option<String>,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Option<Arc<dyn modules::Reconnect>>, ExecError> {
    if !module.reconnects() || delegate.as_deref().is_some_and(|d| d != name) {
        return Ok(None);
    }
    let vars = connection_vars(ctx, scope, origin)?;
    let spec = ConnectSpec::from_vars_with(name, &vars, &ctx.shared.opts.connect)
        .map_err(|d| ExecError::Failed(d.to_string()))?;
    Ok(Some(Arc::new(HostReconnect {
        shared: ctx.shared.clone(),
        host: host.clone(),
        name: name.to_string(),
        spec,
    })))
}

/// The connection of the host (or of the delegated host), opened on first use.
async fn connection_for(
    ctx: &PlayCtx,
    host: &Arc<Mutex<HostState>>,
    name: &str,
    delegate: Option<&str>,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Arc<Connection>, ExecError> {
    if let Some(d) = delegate {
        if d != name {
            return delegate_connection(ctx, d, origin).await;
        }
    }
    let cached = host.lock().conn.clone();
    match cached {
        Some(c) if !c.is_closed() => return Ok(c),
        // The session ended between tasks (sshd restarted with its
        // sessions, a NAT or firewall timeout): open it again, as
        // ansible-core's ssh connection opens a new master. A connection
        // lost in the middle of a task still makes the host unreachable.
        Some(_) => {
            host.lock().conn = None;
            ctx.shared.pool.invalidate(name).await;
        }
        None => {}
    }
    let vars = connection_vars(ctx, scope, origin)?;
    let spec = ConnectSpec::from_vars_with(name, &vars, &ctx.shared.opts.connect)
        .map_err(|d| ExecError::Failed(d.to_string()))?;
    report_spec_warnings(ctx, &spec);
    match ctx.shared.pool.get(name, &spec).await {
        Ok(c) => {
            report_notices(ctx, &c);
            host.lock().conn = Some(c.clone());
            Ok(c)
        }
        Err(e) => Err(ExecError::Unreachable(e.to_string())),
    }
}

/// Warns, once per run, about connection settings Keel reads differently
/// or does not apply (an ssh option, a `Match` block, `StrictHostKeyChecking=no`).
fn report_spec_warnings(ctx: &PlayCtx, spec: &ConnectSpec) {
    for message in ctx.shared.pool.new_warnings(spec) {
        ctx.shared.sink.emit(&Event::Warning { message });
    }
}

/// Warns about what opening a connection did on the user's behalf (a host
/// key learned because host key checking is off).
fn report_notices(ctx: &PlayCtx, conn: &Connection) {
    for message in conn.take_notices() {
        ctx.shared.sink.emit(&Event::Warning { message });
    }
}

async fn delegate_connection(
    ctx: &PlayCtx,
    target: &str,
    origin: &TemplateOrigin,
) -> Result<Arc<Connection>, ExecError> {
    // The delegated host's own connection variables apply.
    let (layers, known) = {
        let inv = ctx.shared.inventory.read();
        (inv.host_layers(target), inv.hosts.contains_key(target))
    };
    let mut scope = Scope::new();
    for l in layers {
        scope.push(l);
    }
    if !known && (target == "localhost" || target == "127.0.0.1") {
        let mut m = VarMap::new();
        m.insert("ansible_connection".into(), Value::from("local"));
        scope.push(Arc::new(m));
    }
    let vars = connection_vars(ctx, &scope, origin)?;
    let spec = ConnectSpec::from_vars_with(target, &vars, &ctx.shared.opts.connect)
        .map_err(|d| ExecError::Failed(d.to_string()))?;
    report_spec_warnings(ctx, &spec);
    let conn = ctx
        .shared
        .pool
        .get(target, &spec)
        .await
        .map_err(|e| ExecError::Unreachable(e.to_string()))?;
    report_notices(ctx, &conn);
    Ok(conn)
}

/// The `ansible_*`/`keel_*` variables of a scope, templated.
fn connection_vars(
    ctx: &PlayCtx,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<VarMap, ExecError> {
    let mut out = VarMap::new();
    for l in scope.layers() {
        for (k, _) in l.iter() {
            if (k.starts_with("ansible_") || k.starts_with("keel_"))
                && !k.starts_with("ansible_facts")
                && !out.contains_key(k)
            {
                let raw = scope.get_raw(k).cloned().unwrap_or_default();
                let v = if raw.as_str().is_some_and(is_template)
                    || raw.kind() != minijinja::value::ValueKind::String
                {
                    ctx.shared
                        .templar
                        .render_value(&raw, scope, origin)
                        .map_err(|e| ExecError::Failed(e.to_string()))?
                } else {
                    raw
                };
                out.insert(k.clone(), v);
            }
        }
    }
    Ok(out)
}

fn var_string(
    ctx: &PlayCtx,
    scope: &Scope,
    origin: &TemplateOrigin,
    names: &[&str],
) -> Result<Option<String>, ExecError> {
    for n in names {
        if let Some(raw) = scope.get_raw(n) {
            let v = ctx
                .shared
                .templar
                .render_value(raw, scope, origin)
                .map_err(|e| ExecError::Failed(e.to_string()))?;
            if !v.is_none() && !v.is_undefined() {
                return Ok(Some(v.to_string()));
            }
        }
    }
    Ok(None)
}

fn become_for(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Option<Become>, ExecError> {
    let settings = ctx.play.become_.merged(&task.become_);
    // ansible-core's order (a known trap, matched): the connection variables
    // (`ansible_become`, `ansible_become_user`... from inventory, vars or
    // task vars) override the `become*` keywords; `-b`, `--become-user`,
    // `--become-method` and `[privilege_escalation]` apply where neither says.
    let defaults = &ctx.shared.opts.become_defaults;
    let enabled = match var_string(ctx, scope, origin, &["ansible_become"])? {
        Some(s) => crate::template::to_bool(&Value::from(s)),
        None => settings
            .become_
            .unwrap_or(defaults.become_.unwrap_or(false)),
    };
    if !enabled {
        return Ok(None);
    }
    let method = var_string(ctx, scope, origin, &["ansible_become_method"])?
        .or_else(|| settings.become_method.clone())
        .or_else(|| defaults.become_method.clone())
        .unwrap_or_else(|| "sudo".into());
    let method = match method.as_str() {
        "sudo" => BecomeMethod::Sudo,
        "su" => BecomeMethod::Su,
        other => {
            return Err(ExecError::Failed(format!(
                "become method '{other}' is not supported (use sudo or su)"
            )))
        }
    };
    let user = match var_string(ctx, scope, origin, &["ansible_become_user"])? {
        Some(u) => u,
        None => match settings.become_user.clone() {
            Some(u) => ctx
                .shared
                .templar
                .render_str(&u, scope, origin)
                .map_err(|e| ExecError::Failed(e.to_string()))?
                .to_string(),
            None => defaults
                .become_user
                .clone()
                .unwrap_or_else(|| "root".into()),
        },
    };
    let password = match &ctx.shared.opts.become_password {
        Some(p) => Some(p.clone()),
        None => var_string(
            ctx,
            scope,
            origin,
            &[
                "ansible_become_password",
                "ansible_become_pass",
                "ansible_sudo_pass",
                "ansible_su_pass",
            ],
        )?,
    };
    let flags = var_string(ctx, scope, origin, &["ansible_become_flags"])?
        .or_else(|| settings.become_flags.clone())
        .or_else(|| defaults.become_flags.clone());
    let exe = var_string(ctx, scope, origin, &["ansible_become_exe"])?;
    Ok(Some(Become {
        method,
        user,
        password,
        flags,
        exe,
    }))
}

fn environment_for(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Vec<(String, String)>, ExecError> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in ctx.play.environment.iter().chain(task.environment.iter()) {
        let v = ctx
            .shared
            .templar
            .render_value(e, scope, origin)
            .map_err(|e| ExecError::Failed(e.to_string()))?;
        let Some(m) = super::host::value_to_map(&v) else {
            return Err(ExecError::Failed(format!(
                "environment must be a mapping, got {v}"
            )));
        };
        for (k, val) in m {
            let s = if val.is_none() {
                String::new()
            } else {
                val.to_string()
            };
            env.retain(|(ek, _)| ek != &k);
            env.push((k, s));
        }
    }
    Ok(env)
}

/// Emits a host result event, censoring `no_log` results.
fn emit(
    ctx: &PlayCtx,
    task: &Task,
    host: &str,
    s: &Single,
    item_label: Option<String>,
    is_item: bool,
    no_log: bool,
) {
    let bare = s.result.contains_key(BARE_ERROR);
    let mut json = to_json(&result_value(&s.result));
    if let Json::Object(m) = &mut json {
        m.remove("_keel_meta");
        m.remove("_keel_facts");
        // The default callback shows a result's warnings as `[WARNING]`
        // lines, not inside the result.
        if !no_log {
            if let Some(Json::Array(ws)) = m.remove("warnings") {
                for w in ws.iter().filter_map(Json::as_str) {
                    ctx.shared.sink.emit(&Event::Warning {
                        message: w.to_string(),
                    });
                }
            }
        }
        // ansible-playbook shows what `debug` and `assert` return at any
        // verbosity (and leaves `changed` out of debug's).
        if matches!(task.action.as_str(), "debug" | "assert")
            && s.status != Status::Skipped
            && !bare
        {
            m.insert("_ansible_verbose_always".into(), Json::Bool(true));
            if task.action == "debug" {
                // The default callback shows `msg` alone, or else the
                // variable without the status and loop keys.
                if m.contains_key("msg") {
                    m.retain(|k, _| {
                        matches!(
                            k.as_str(),
                            "msg" | "exception" | "warnings" | "deprecations"
                        ) || k.starts_with('_')
                    });
                } else {
                    for k in [
                        "changed",
                        "failed",
                        "skipped",
                        "invocation",
                        "skip_reason",
                        "ansible_loop_var",
                        "ansible_index_var",
                        "ansible_loop",
                    ] {
                        m.remove(k);
                    }
                }
            }
        }
    }
    let (json, diff, label) = if no_log {
        let changed = json.get("changed").cloned().unwrap_or(Json::Bool(false));
        let mut m = serde_json::Map::new();
        m.insert("censored".into(), Json::String(CENSORED.into()));
        m.insert("changed".into(), changed);
        if s.status == Status::Failed {
            m.insert("failed".into(), Json::Bool(true));
        }
        (
            Json::Object(m),
            vec![],
            item_label.map(|_| "None".to_string()),
        )
    } else {
        (
            json,
            if ctx.shared.opts.diff || task.diff == Some(true) {
                s.diff.clone()
            } else {
                vec![]
            },
            item_label,
        )
    };
    let error = (s.status == Status::Failed && !no_log).then(|| error_block(task, &json, bare));
    let delegated_to = task.delegate_to.clone();
    ctx.shared.sink.emit(&Event::HostResult(HostResult {
        host: host.to_string(),
        delegated_to,
        status: s.status,
        ignored: s.ignored,
        item_label: label,
        result: json,
        diff,
        is_item,
        error,
    }));
}

/// Actions ansible-core runs on the controller: their failures read
/// "Action failed", a module's "Module failed".
const CONTROLLER_ACTIONS: &[&str] = &[
    "add_host",
    "assert",
    "debug",
    "fail",
    "fetch",
    "group_by",
    "include_vars",
    "pause",
    "reboot",
    "set_fact",
    "set_stats",
    "wait_for_connection",
];

/// ansible-core 2.19's `[ERROR]` block for a failed task: the message, then
/// the task's origin with the two source lines above it and a caret.
fn error_block(task: &Task, result: &Json, bare: bool) -> String {
    let msg = result
        .get("msg")
        .and_then(Json::as_str)
        .unwrap_or("Task failed.")
        .to_string();
    let first = msg.lines().next().unwrap_or_default();
    let summary = if bare
        || task.span.path().as_os_str().is_empty()
        || first.starts_with(&task.span.path().display().to_string())
    {
        // A message that already carries its own origin (a templating
        // error) is shown as it is.
        first.to_string()
    } else if CONTROLLER_ACTIONS.contains(&task.action.as_str()) {
        format!("Action failed: {first}")
    } else {
        format!("Module failed: {first}")
    };
    let pos = task.span.pos;
    let mut out = format!(
        "[ERROR]: Task failed: {summary}\nOrigin: {}:{}:{}",
        task.span.path().display(),
        pos.line,
        pos.col
    );
    let lines: Vec<&str> = task.span.source.text.lines().collect();
    let line = pos.line as usize;
    if line >= 1 && line <= lines.len() {
        let from = line.saturating_sub(2).max(1);
        let width = line.to_string().len();
        out.push_str("\n\n");
        for n in from..=line {
            out.push_str(&format!("{n:>width$} {}\n", lines[n - 1]));
        }
        let pad = width + pos.col as usize;
        out.push_str(&format!("{:pad$}^ column {}", "", pos.col));
    }
    out
}
