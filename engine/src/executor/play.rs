//! Plays: host selection, `serial` batches, fact gathering, the linear and
//! free strategies, blocks with rescue/always, dynamic includes, handlers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use minijinja::Value;

use crate::output::{Event, Status};
use crate::playbook::plan::{Node, Play, Serial, Strategy, Task};
use crate::template::{Scope, TemplateOrigin, VarMap};

use super::host::{ser, HostState, HostVars, Persistent, Shared};
use super::task::{run_task_on_host, Outcome, PlayCtx};
use super::RunSummary;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlayEnd {
    Continue,
    AbortRun,
}

type Host = Arc<Mutex<HostState>>;

/// Mutable state of a play while it runs.
struct PlayRun {
    ctx: Arc<PlayCtx>,
    /// `--start-at-task` not reached yet.
    waiting_for_start: Mutex<Option<String>>,
    /// `meta: end_play`, `any_errors_fatal` or `max_fail_percentage` hit.
    ended: Mutex<bool>,
    batch_size: usize,
    /// Handlers brought in by `include_role`, notifiable for the rest of the
    /// play; indexed after the play's own.
    extra_handlers: Mutex<Vec<Arc<crate::playbook::plan::Handler>>>,
}

impl PlayRun {
    /// The play's handlers followed by those included roles added.
    fn handlers(&self) -> Vec<Arc<crate::playbook::plan::Handler>> {
        let mut v = self.ctx.play.handlers.clone();
        v.extend(self.extra_handlers.lock().unwrap().iter().cloned());
        v
    }
}

impl PlayRun {
    fn ended(&self) -> bool {
        *self.ended.lock().unwrap()
    }
    fn end(&self) {
        *self.ended.lock().unwrap() = true;
    }
}

pub(crate) async fn run_play(
    shared: &Arc<Shared>,
    play: &Play,
    persistent: &mut HashMap<String, Persistent>,
    summary: &mut RunSummary,
) -> PlayEnd {
    let play = Arc::new(play.clone());
    // `hosts:` may use extra vars and play vars.
    let mut pscope = Scope::new();
    pscope.push(play.vars.clone());
    pscope.push(shared.extra_vars.clone());
    let origin = TemplateOrigin {
        span: Some(play.span.clone()),
        label: Some("play hosts".into()),
        ..Default::default()
    };
    let pattern = match shared.templar.render_str(&play.hosts, &pscope, &origin) {
        Ok(v) => v.to_string(),
        Err(e) => {
            summary.errors.push(e.to_string());
            shared.sink.emit(&Event::Warning {
                message: e.to_string(),
            });
            return PlayEnd::AbortRun;
        }
    };
    let selected = {
        let inv = shared.inventory.read().unwrap();
        let mut hosts = match inv.select(&pattern) {
            Ok(h) => h,
            Err(e) => {
                summary.errors.push(e.to_string());
                shared.sink.emit(&Event::Warning {
                    message: e.to_string(),
                });
                return PlayEnd::AbortRun;
            }
        };
        if let Some(limit) = &shared.opts.limit {
            match inv.select(limit) {
                Ok(l) => hosts.retain(|h| l.contains(h)),
                Err(e) => {
                    summary.errors.push(e.to_string());
                    return PlayEnd::AbortRun;
                }
            }
        }
        hosts
    };
    let name = if play.name.is_empty() {
        pattern.clone()
    } else {
        play.name.clone()
    };
    shared.sink.emit(&Event::PlayStart {
        name: name.clone(),
        hosts: selected.clone(),
    });
    if selected.is_empty() {
        shared.sink.emit(&Event::NoHostsMatched { pattern });
        return PlayEnd::Continue;
    }

    // Per-host state, with facts and set_facts carried over from earlier plays.
    let (groups_map, states): (Value, Vec<Host>) = {
        let inv = shared.inventory.read().unwrap();
        let groups = ser(inv.groups_map());
        let states = selected
            .iter()
            .map(|h| {
                let p = persistent.get(h).cloned().unwrap_or_default();
                let mut magic = VarMap::new();
                magic.insert("inventory_hostname".into(), Value::from(h.as_str()));
                magic.insert(
                    "inventory_hostname_short".into(),
                    Value::from(h.split('.').next().unwrap_or(h)),
                );
                magic.insert("group_names".into(), ser(inv.group_names(h)));
                magic.insert("groups".into(), groups.clone());
                magic.insert("playbook_dir".into(), Value::from(play.playbook_dir.display().to_string()));
                magic.insert("ansible_play_hosts_all".into(), ser(&selected));
                magic.insert("ansible_play_hosts".into(), ser(&selected));
                magic.insert("play_hosts".into(), ser(&selected));
                magic.insert("ansible_play_batch".into(), ser(&selected));
                magic.insert("ansible_check_mode".into(), Value::from(shared.opts.check));
                magic.insert("ansible_diff_mode".into(), Value::from(shared.opts.diff));
                magic.insert("ansible_verbosity".into(), Value::from(shared.opts.verbosity));
                magic.insert("ansible_play_name".into(), Value::from(play.name.as_str()));
                magic.insert("omit".into(), Value::from(crate::template::omit_token()));
                magic.insert(
                    "ansible_version".into(),
                    ser(serde_json::json!({"full": "2.17.0", "major": 2, "minor": 17, "revision": 0, "string": "2.17.0 (keel)"})),
                );
                Arc::new(Mutex::new(HostState {
                    name: h.clone(),
                    inventory_layers: inv.host_layers(h),
                    facts: p.facts,
                    set_facts: p.set_facts,
                    include_vars: Arc::new(VarMap::new()),
                    include_params: Vec::new(),
                    magic: Arc::new(magic),
                    failed: false,
                    unreachable: false,
                    ended: false,
                    notified: Vec::new(),
                    stats: Default::default(),
                    conn: None,
                }))
            })
            .collect();
        (groups, states)
    };
    let _ = groups_map;
    let hostvars = Arc::new(HostVars {
        hosts: selected
            .iter()
            .cloned()
            .zip(states.iter().cloned())
            .collect(),
        extra: shared.extra_vars.clone(),
    });
    let hv_value = Value::from_dyn_object(hostvars.clone());
    for h in &states {
        let mut st = h.lock().unwrap();
        Arc::make_mut(&mut st.magic).insert("hostvars".into(), hv_value.clone());
    }

    let ctx = Arc::new(PlayCtx {
        shared: shared.clone(),
        play: play.clone(),
        hosts: selected
            .iter()
            .cloned()
            .zip(states.iter().cloned())
            .collect(),
    });
    let mut end = PlayEnd::Continue;
    for (batch_no, batch) in batches(&play.serial, &states).into_iter().enumerate() {
        let names: Vec<String> = batch
            .iter()
            .map(|h| h.lock().unwrap().name.clone())
            .collect();
        if batch_no > 0 {
            // ansible-playbook starts each `serial` batch with its own banner.
            shared.sink.emit(&Event::PlayStart {
                name: name.clone(),
                hosts: selected.clone(),
            });
        }
        for h in &batch {
            let mut st = h.lock().unwrap();
            Arc::make_mut(&mut st.magic).insert("ansible_play_batch".into(), ser(&names));
        }
        let run = Arc::new(PlayRun {
            ctx: ctx.clone(),
            waiting_for_start: Mutex::new(shared.opts.start_at_task.clone()),
            ended: Mutex::new(false),
            batch_size: batch.len(),
            extra_handlers: Mutex::new(Vec::new()),
        });
        if play.gather_facts {
            let t = Arc::new(synthetic_task(&play, "setup", "Gathering Facts"));
            run_tasks(&run, &t, &batch, false, false).await;
        }
        for section in &play.sections {
            if run.ended() {
                break;
            }
            run_nodes(run.clone(), section.nodes.clone(), batch.clone(), false).await;
            flush_handlers(&run, &batch).await;
        }
        let failed_all = batch.iter().all(|h| !h.lock().unwrap().active());
        if run.ended() && batch.iter().any(|h| h.lock().unwrap().failed) && play.any_errors_fatal {
            end = PlayEnd::Continue;
        }
        if failed_all && !play.serial.is_empty() {
            break;
        }
    }
    for h in &states {
        let st = h.lock().unwrap();
        persistent.insert(st.name.clone(), st.persistent());
        let s = summary.stats_mut(&st.name);
        let add = st.stats;
        s.ok += add.ok;
        s.changed += add.changed;
        s.unreachable += add.unreachable;
        s.failed += add.failed;
        s.skipped += add.skipped;
        s.rescued += add.rescued;
        s.ignored += add.ignored;
    }
    end
}

/// Splits hosts into `serial` batches (the last size repeats).
fn batches(serial: &[Serial], hosts: &[Host]) -> Vec<Vec<Host>> {
    if serial.is_empty() {
        return vec![hosts.to_vec()];
    }
    let total = hosts.len();
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < total {
        let spec = &serial[k.min(serial.len() - 1)];
        let n = match spec {
            Serial::Count(n) => (*n).max(1),
            Serial::Percent(p) => ((total as f64) * p / 100.0).floor().max(1.0) as usize,
        };
        let end = (i + n).min(total);
        out.push(hosts[i..end].to_vec());
        i = end;
        k += 1;
    }
    out
}

/// A task the executor makes up (fact gathering).
pub(crate) fn synthetic_task(play: &Play, action: &str, name: &str) -> Task {
    Task {
        id: usize::MAX,
        name: Some(name.to_string()),
        action: action.to_string(),
        action_as_written: action.to_string(),
        args: VarMap::new(),
        span: play.span.clone(),
        when: vec![],
        loop_: None,
        loop_control: Default::default(),
        register: None,
        notify: vec![],
        tags: vec!["always".into()],
        changed_when: None,
        failed_when: None,
        ignore_errors: None,
        ignore_unreachable: None,
        until: None,
        retries: None,
        delay: None,
        become_: Default::default(),
        environment: vec![],
        no_log: None,
        check_mode: Some(false),
        diff: None,
        delegate_to: None,
        delegate_facts: false,
        run_once: false,
        throttle: None,
        timeout: None,
        any_errors_fatal: None,
        vars: Arc::new(VarMap::new()),
        async_: None,
        poll: None,
        role: None,
        include: None,
        file_dir: play.playbook_dir.clone(),
    }
}

fn active(hosts: &[Host]) -> Vec<Host> {
    hosts
        .iter()
        .filter(|h| h.lock().unwrap().active())
        .cloned()
        .collect()
}

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a node list on a set of hosts. `rescuing` is true inside the `block`
/// part of a block that has a `rescue` section.
fn run_nodes(run: Arc<PlayRun>, nodes: Vec<Node>, hosts: Vec<Host>, rescuing: bool) -> BoxFut {
    Box::pin(async move {
        if run.ctx.play.strategy == Strategy::Free && hosts.len() > 1 {
            // Each host runs ahead on its own.
            let futs: Vec<_> = hosts
                .iter()
                .map(|h| {
                    tokio::spawn(run_nodes_linear(
                        run.clone(),
                        nodes.clone(),
                        vec![h.clone()],
                        rescuing,
                    ))
                })
                .collect();
            for f in futs {
                let _ = f.await;
            }
        } else {
            run_nodes_linear(run, nodes, hosts, rescuing).await;
        }
    })
}

fn run_nodes_linear(
    run: Arc<PlayRun>,
    nodes: Vec<Node>,
    hosts: Vec<Host>,
    rescuing: bool,
) -> BoxFut {
    Box::pin(async move {
        for node in nodes {
            if run.ended() {
                return;
            }
            let act = active(&hosts);
            if act.is_empty() {
                return;
            }
            match node {
                Node::Task(t) => {
                    run_tasks(&run, &t, &act, rescuing, false).await;
                    if active(&hosts).is_empty() && !rescuing && !run.ended() {
                        run.ctx.shared.sink.emit(&Event::NoMoreHosts);
                        return;
                    }
                }
                Node::Block(b) => {
                    let has_rescue = !b.rescue.is_empty();
                    let before_failed: Vec<bool> =
                        act.iter().map(|h| h.lock().unwrap().failed).collect();
                    run_nodes_linear(
                        run.clone(),
                        b.block.clone(),
                        act.clone(),
                        rescuing || has_rescue,
                    )
                    .await;
                    let failed_in_block: Vec<Host> = act
                        .iter()
                        .zip(&before_failed)
                        .filter(|(h, was)| {
                            !**was && {
                                let s = h.lock().unwrap();
                                s.failed && !s.unreachable
                            }
                        })
                        .map(|(h, _)| h.clone())
                        .collect();
                    if has_rescue && !failed_in_block.is_empty() {
                        for h in &failed_in_block {
                            h.lock().unwrap().failed = false;
                        }
                        run_nodes_linear(
                            run.clone(),
                            b.rescue.clone(),
                            failed_in_block.clone(),
                            rescuing,
                        )
                        .await;
                    }
                    if !b.always.is_empty() {
                        // `always` runs for hosts that failed too; they stay failed.
                        let still_failed: Vec<Host> = act
                            .iter()
                            .filter(|h| {
                                let s = h.lock().unwrap();
                                s.failed && !s.unreachable
                            })
                            .cloned()
                            .collect();
                        for h in &still_failed {
                            h.lock().unwrap().failed = false;
                        }
                        let targets: Vec<Host> = act
                            .iter()
                            .filter(|h| {
                                let s = h.lock().unwrap();
                                !s.unreachable && !s.ended
                            })
                            .cloned()
                            .collect();
                        run_nodes_linear(run.clone(), b.always.clone(), targets, rescuing).await;
                        for h in &still_failed {
                            h.lock().unwrap().failed = true;
                        }
                    }
                }
                Node::Include(t) => {
                    run_include(&run, &t, &act, rescuing).await;
                }
            }
        }
    })
}

/// Runs one task on hosts concurrently and applies the outcomes.
fn run_tasks<'a>(
    run: &'a Arc<PlayRun>,
    task: &'a Arc<Task>,
    hosts: &'a [Host],
    rescuing: bool,
    handler: bool,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let shared = &run.ctx.shared;
        if !handler && !shared.opts.tags.selects(&task.tags) {
            return;
        }
        {
            let mut w = run.waiting_for_start.lock().unwrap();
            if let Some(start) = w.as_ref() {
                if task.id == usize::MAX {
                    // Fact gathering still runs.
                } else if task.display_name() == *start
                    || task.name.as_deref() == Some(start.as_str())
                {
                    *w = None;
                } else {
                    return;
                }
            }
        }
        if task.action == "meta" {
            let fut: Pin<Box<dyn Future<Output = ()> + Send + '_>> =
                Box::pin(run_meta(run, task, hosts));
            return fut.await;
        }
        shared.sink.emit(&Event::TaskStart {
            id: task.id,
            name: task.display_name(),
            path: format!("{}", task.span),
            handler,
        });
        let targets: Vec<Host> = if task.run_once || run.ctx.play.run_once {
            hosts[..1.min(hosts.len())].to_vec()
        } else {
            hosts.to_vec()
        };
        let throttle = match &task.throttle {
            Some(t) => t
                .as_usize()
                .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n > 0),
            None => None,
        };
        let limiter = throttle.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        let mut handles = Vec::with_capacity(targets.len());
        for h in &targets {
            let ctx = run.ctx.clone();
            let t = task.clone();
            let h2 = h.clone();
            let lim = limiter.clone();
            handles.push(tokio::spawn(async move {
                let _p = match &lim {
                    Some(l) => l.clone().acquire_owned().await.ok(),
                    None => None,
                };
                run_task_on_host(ctx, t, h2, rescuing).await
            }));
        }
        let mut outcomes: Vec<(Host, Outcome)> = Vec::with_capacity(targets.len());
        for (h, jh) in targets.iter().zip(handles) {
            match jh.await {
                Ok(o) => outcomes.push((h.clone(), o)),
                Err(e) => {
                    let mut r = VarMap::new();
                    r.insert("failed".into(), Value::from(true));
                    r.insert("msg".into(), Value::from(format!("internal error: {e}")));
                    outcomes.push((
                        h.clone(),
                        Outcome {
                            status: Status::Failed,
                            ignored: false,
                            result: ser(&r),
                            notify: false,
                        },
                    ));
                }
            }
        }
        // run_once: every host sees the result.
        if (task.run_once || run.ctx.play.run_once) && hosts.len() > 1 {
            if let (Some(reg), Some((_, o))) = (&task.register, outcomes.first()) {
                for h in &hosts[1..] {
                    h.lock().unwrap().set_fact(reg.clone(), o.result.clone());
                }
            }
        }
        let mut any_fatal = false;
        for (h, o) in &outcomes {
            let mut st = h.lock().unwrap();
            apply_outcome(run, task, &mut st, o, rescuing);
            if o.status == Status::Failed && !o.ignored {
                any_fatal = true;
            }
        }
        if any_fatal
            && (task.any_errors_fatal.unwrap_or(false) || run.ctx.play.any_errors_fatal)
            && !rescuing
        {
            for h in hosts {
                h.lock().unwrap().ended = true;
            }
            run.end();
        }
        if let Some(pct) = run.ctx.play.max_fail_percentage {
            let failed = hosts
                .iter()
                .filter(|h| {
                    let s = h.lock().unwrap();
                    s.failed || s.unreachable
                })
                .count();
            if run.batch_size > 0 && (failed as f64) * 100.0 / (run.batch_size as f64) > pct {
                run.end();
            }
        }
    })
}

fn apply_outcome(run: &PlayRun, task: &Task, st: &mut HostState, o: &Outcome, rescuing: bool) {
    match o.status {
        Status::Ok => st.stats.ok += 1,
        Status::Changed => {
            st.stats.ok += 1;
            st.stats.changed += 1;
        }
        Status::Skipped => st.stats.skipped += 1,
        Status::Failed if o.ignored => {
            st.stats.ok += 1;
            st.stats.ignored += 1;
            if o.result
                .get_attr("changed")
                .map(|v| v.is_true())
                .unwrap_or(false)
            {
                st.stats.changed += 1;
            }
        }
        Status::Failed => {
            st.failed = true;
            if rescuing {
                st.stats.rescued += 1;
                st.set_fact("ansible_failed_result".into(), o.result.clone());
                let mut t = VarMap::new();
                t.insert("name".into(), Value::from(task.display_name()));
                t.insert("action".into(), Value::from(task.action.as_str()));
                st.set_fact("ansible_failed_task".into(), ser(&t));
            } else {
                st.stats.failed += 1;
            }
        }
        Status::Unreachable => {
            if o.ignored {
                st.stats.skipped += 1;
            } else {
                st.unreachable = true;
                st.stats.unreachable += 1;
            }
        }
    }
    if o.notify && !task.notify.is_empty() {
        for n in &task.notify {
            let mut found = false;
            for (i, h) in run.handlers().iter().enumerate() {
                let role_name =
                    h.task.role.as_ref().map(|r| {
                        format!("{} : {}", r.name, h.task.name.clone().unwrap_or_default())
                    });
                if h.listen.iter().any(|l| l == n) || role_name.as_deref() == Some(n.as_str()) {
                    found = true;
                    if !st.notified.contains(&i) {
                        st.notified.push(i);
                    }
                }
            }
            if !found {
                run.ctx.shared.sink.emit(&Event::Warning {
                    message: format!(
                        "The requested handler '{n}' was not found in either the main handlers list nor in the listening handlers list"
                    ),
                });
            }
        }
    }
}

/// Runs notified handlers, in definition order.
async fn flush_handlers(run: &Arc<PlayRun>, hosts: &[Host]) {
    let force = run.ctx.shared.opts.force_handlers || run.ctx.play.force_handlers;
    let handlers = run.handlers();
    for (i, h) in handlers.iter().enumerate() {
        let targets: Vec<Host> = hosts
            .iter()
            .filter(|x| {
                let s = x.lock().unwrap();
                s.notified.contains(&i) && !s.unreachable && (s.active() || (force && !s.ended))
            })
            .cloned()
            .collect();
        for x in hosts {
            x.lock().unwrap().notified.retain(|n| *n != i);
        }
        if targets.is_empty() {
            continue;
        }
        // A forced handler runs on failed hosts too.
        let was_failed: Vec<bool> = targets.iter().map(|x| x.lock().unwrap().failed).collect();
        if force {
            for x in &targets {
                x.lock().unwrap().failed = false;
            }
        }
        run_tasks(run, &h.task, &targets, false, true).await;
        for (x, was) in targets.iter().zip(was_failed) {
            if was {
                x.lock().unwrap().failed = true;
            }
        }
    }
}

async fn run_meta(run: &Arc<PlayRun>, task: &Arc<Task>, hosts: &[Host]) {
    let action = super::actions::meta_name(task);
    // A meta task's `when` applies per host (for the host-level actions).
    match action.as_str() {
        "flush_handlers" => flush_handlers(run, hosts).await,
        "end_play" => {
            if when_any(run, task, hosts) {
                for h in hosts {
                    h.lock().unwrap().ended = true;
                }
                run.end();
            }
        }
        "end_batch" => {
            if when_any(run, task, hosts) {
                run.end();
            }
        }
        "refresh_inventory" => {
            // Re-read the sources; hosts added there join from the next play.
            let shared = &run.ctx.shared;
            if !shared.opts.inventory_sources.is_empty() {
                match crate::inventory::Inventory::load(&shared.opts.inventory_sources) {
                    Ok(mut inv) => {
                        let _ = inv.add_vars_dir(&run.ctx.play.playbook_dir);
                        *shared.inventory.write().unwrap() = inv
                    }
                    Err(e) => shared.sink.emit(&Event::Warning {
                        message: format!("refresh_inventory: {e}"),
                    }),
                }
            }
        }
        "noop" | "reset_connection" => {}
        "end_host" | "clear_facts" | "clear_host_errors" => {
            for h in hosts {
                let scope = {
                    let s = h.lock().unwrap();
                    super::host::scope_for(&run.ctx.shared, &run.ctx.play, Some(task), &s, None)
                };
                let origin = TemplateOrigin {
                    span: Some(task.span.clone()),
                    ..Default::default()
                };
                if !run
                    .ctx
                    .shared
                    .templar
                    .eval_conditions(&task.when, &scope, &origin)
                    .unwrap_or(false)
                {
                    continue;
                }
                let mut s = h.lock().unwrap();
                match action.as_str() {
                    "end_host" => s.ended = true,
                    "clear_facts" => s.clear_facts(),
                    _ => s.failed = false,
                }
            }
        }
        other => run.ctx.shared.sink.emit(&Event::Warning {
            message: format!("invalid meta action requested: {other}"),
        }),
    }
}

fn when_any(run: &Arc<PlayRun>, task: &Task, hosts: &[Host]) -> bool {
    if task.when.is_empty() {
        return true;
    }
    hosts.iter().any(|h| {
        let scope = {
            let s = h.lock().unwrap();
            super::host::scope_for(&run.ctx.shared, &run.ctx.play, Some(task), &s, None)
        };
        let origin = TemplateOrigin {
            span: Some(task.span.clone()),
            ..Default::default()
        };
        run.ctx
            .shared
            .templar
            .eval_conditions(&task.when, &scope, &origin)
            .unwrap_or(false)
    })
}

/// A dynamic `include_tasks`/`include_role`: evaluated per host (its `when`
/// and loop), loaded, and run for the hosts that included the same thing.
async fn run_include(run: &Arc<PlayRun>, task: &Arc<Task>, hosts: &[Host], rescuing: bool) {
    let shared = &run.ctx.shared;
    if !shared.opts.tags.selects(&task.tags) {
        return;
    }
    // Per host: the list of (target, params) it includes.
    let mut plan: Vec<(Host, Vec<(String, VarMap)>)> = Vec::new();
    for h in hosts {
        let (scope, name) = {
            let s = h.lock().unwrap();
            (
                super::host::scope_for(shared, &run.ctx.play, Some(task), &s, None),
                s.name.clone(),
            )
        };
        let origin = TemplateOrigin {
            span: Some(task.span.clone()),
            label: Some(format!("task '{}'", task.display_name())),
            host: Some(name),
            search_paths: vec![],
        };
        match super::include::expand(&run.ctx, task, &scope, &origin) {
            Ok(list) => plan.push((h.clone(), list)),
            Err(msg) => {
                let mut r = VarMap::new();
                r.insert("failed".into(), Value::from(true));
                r.insert("msg".into(), Value::from(msg));
                let o = Outcome {
                    status: Status::Failed,
                    ignored: false,
                    result: ser(&r),
                    notify: false,
                };
                shared.sink.emit(&Event::TaskStart {
                    id: task.id,
                    name: task.display_name(),
                    path: task.span.to_string(),
                    handler: false,
                });
                shared
                    .sink
                    .emit(&Event::HostResult(crate::output::HostResult {
                        host: h.lock().unwrap().name.clone(),
                        delegated_to: None,
                        status: Status::Failed,
                        ignored: false,
                        item_label: None,
                        result: super::task::to_json(&o.result),
                        diff: vec![],
                        is_item: false,
                    }));
                let mut st = h.lock().unwrap();
                apply_outcome(run, task, &mut st, &o, rescuing);
            }
        }
    }
    let rounds = plan.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    for i in 0..rounds {
        // Group the hosts that include the same target in this round.
        let mut groups: Vec<(String, Vec<(Host, VarMap)>)> = Vec::new();
        for (h, list) in &plan {
            if let Some((target, params)) = list.get(i) {
                if !h.lock().unwrap().active() {
                    continue;
                }
                match groups.iter_mut().find(|(t, _)| t == target) {
                    Some((_, v)) => v.push((h.clone(), params.clone())),
                    None => groups.push((target.clone(), vec![(h.clone(), params.clone())])),
                }
            }
        }
        for (target, members) in groups {
            let nodes = match super::include::load(&run.ctx, task, &target) {
                Ok((n, handlers)) => {
                    let mut extra = run.extra_handlers.lock().unwrap();
                    for h in handlers {
                        if !extra.iter().any(|x| {
                            Arc::ptr_eq(x, &h) || x.task.span.to_string() == h.task.span.to_string()
                        }) {
                            extra.push(h);
                        }
                    }
                    n
                }
                Err(msg) => {
                    shared.sink.emit(&Event::Warning {
                        message: msg.clone(),
                    });
                    for (h, _) in &members {
                        let mut r = VarMap::new();
                        r.insert("failed".into(), Value::from(true));
                        r.insert("msg".into(), Value::from(msg.clone()));
                        let o = Outcome {
                            status: Status::Failed,
                            ignored: false,
                            result: ser(&r),
                            notify: false,
                        };
                        let mut st = h.lock().unwrap();
                        apply_outcome(run, task, &mut st, &o, rescuing);
                    }
                    continue;
                }
            };
            let names: Vec<String> = members
                .iter()
                .map(|(h, _)| h.lock().unwrap().name.clone())
                .collect();
            shared.sink.emit(&Event::Included {
                file: target.clone(),
                hosts: names,
            });
            let group_hosts: Vec<Host> = members.iter().map(|(h, _)| h.clone()).collect();
            for (h, params) in &members {
                let mut st = h.lock().unwrap();
                st.include_params.push(Arc::new(params.clone()));
                st.stats.ok += 1;
            }
            run_nodes(run.clone(), nodes, group_hosts.clone(), rescuing).await;
            for h in &group_hosts {
                h.lock().unwrap().include_params.pop();
            }
        }
    }
}
