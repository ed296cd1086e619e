//! Plays: host selection, `serial` batches, fact gathering, the linear and
//! free strategies, blocks with rescue/always, dynamic includes, handlers.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

use minijinja::Value;

use crate::output::{Event, Status};
use crate::playbook::plan::{Node, Play, Serial, Strategy, Task};
use crate::template::{Scope, TemplateOrigin};
use crate::vars::VarMap;

use super::host::{ser, HostState, HostVars, Persistent, PlayCtx, Shared};
use super::task::{run_task_on_host, Outcome};
use super::{Gathering, RunSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlayEnd {
    Continue,
    AbortRun,
}

type Host = Arc<Mutex<HostState>>;

/// An error that stops the whole run.
#[derive(Clone)]
struct Fatal {
    message: String,
    /// One of ansible-core's parser errors (an included file that does not
    /// parse): exit code 4, and no recap.
    parse: bool,
}

impl Fatal {
    fn new(message: String) -> Option<Fatal> {
        Some(Fatal {
            message,
            parse: false,
        })
    }
}

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
    /// `meta: end_play`: no further batch runs either.
    play_ended: Arc<std::sync::atomic::AtomicBool>,
    /// Per task (by id), the `throttle` slots: shared by every host, also
    /// under the free strategy where hosts reach the task separately.
    throttles: Mutex<HashMap<usize, Arc<tokio::sync::Semaphore>>>,
    /// `any_errors_fatal` stopped the play (its `always` sections still run).
    fatal_stop: std::sync::atomic::AtomicBool,
    /// An error that stops the whole run (a bad `throttle`), as
    /// ansible-playbook's fatal errors do.
    fatal: Arc<Mutex<Option<Fatal>>>,
    /// Who is still in the play, for `ansible_play_hosts`/`ansible_play_batch`.
    play_hosts: PlayHosts,
}

/// ansible-core's `play._removed_hosts`: a host leaves the play's
/// `ansible_play_hosts` and `ansible_play_batch` once it fails outside a
/// block that rescues it, is unreachable, or ends (`meta: end_host`,
/// `any_errors_fatal`), for the rest of the play (every batch), even if
/// `meta: clear_host_errors` lets it go on. Hosts' `magic` is rewritten
/// only when the list grew, checked before each task.
struct PlayHosts {
    /// The play's hosts, in order (`ansible_play_hosts_all`).
    all: Vec<String>,
    /// This batch's hosts, whose variables see the lists.
    batch: Vec<Host>,
    batch_names: Vec<String>,
    /// Shared by the play's batches.
    removed: Arc<Mutex<Vec<String>>>,
    /// How many of `removed` the batch's variables show already.
    shown: std::sync::atomic::AtomicUsize,
}

impl PlayHosts {
    fn remove(&self, host: &str) {
        let mut r = self.removed.lock();
        if !r.iter().any(|h| h == host) {
            r.push(host.to_string());
        }
    }

    /// Brings the batch's `ansible_play_hosts`/`ansible_play_batch` up to
    /// date. Called with no host locked.
    fn refresh(&self) {
        use std::sync::atomic::Ordering;
        let removed = self.removed.lock().clone();
        if removed.len() == self.shown.load(Ordering::SeqCst) {
            return;
        }
        let keep = |names: &[String]| -> Value {
            ser(names
                .iter()
                .filter(|n| !removed.contains(n))
                .collect::<Vec<_>>())
        };
        let hosts = keep(&self.all);
        let batch = keep(&self.batch_names);
        for h in &self.batch {
            let mut st = h.lock();
            let magic = Arc::make_mut(&mut st.magic);
            magic.insert("ansible_play_hosts".into(), hosts.clone());
            magic.insert("ansible_play_batch".into(), batch.clone());
            magic.insert("play_hosts".into(), batch.clone());
        }
        self.shown.store(removed.len(), Ordering::SeqCst);
    }
}

impl PlayRun {
    /// The play's handlers followed by those included roles added.
    fn handlers(&self) -> Vec<Arc<crate::playbook::plan::Handler>> {
        let mut v = self.ctx.play.handlers.clone();
        v.extend(self.extra_handlers.lock().iter().cloned());
        v
    }
}

impl PlayRun {
    fn ended(&self) -> bool {
        *self.ended.lock()
    }
    fn end(&self) {
        *self.ended.lock() = true;
    }
    fn end_play(&self) {
        self.play_ended
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The magic variables that are the same for every host of a play, each
/// built once and given to every host by reference.
struct PlayMagic(Vec<(&'static str, Value)>);

impl PlayMagic {
    fn new(shared: &Shared, play: &Play, selected: &[String]) -> PlayMagic {
        let hosts = ser(selected);
        // `--tags` (`all` when none) and `--skip-tags`, each once.
        let tag_set = |tags: &[String], default: &[&str]| {
            let mut out: Vec<String> = Vec::new();
            for t in tags.iter().flat_map(|t| t.split(',')).map(str::trim) {
                if !t.is_empty() && !out.iter().any(|o| o == t) {
                    out.push(t.to_string());
                }
            }
            if out.is_empty() {
                out.extend(default.iter().map(|t| t.to_string()));
            }
            ser(&out)
        };
        let role_names = ser(&play.play_role_names);
        // A set in ansible-core: each name once.
        let mut all_roles: Vec<String> = Vec::new();
        for r in play
            .play_role_names
            .iter()
            .chain(&play.dependent_role_names)
        {
            if !all_roles.contains(r) {
                all_roles.push(r.clone());
            }
        }
        PlayMagic(vec![
            (
                "playbook_dir",
                Value::from(play.playbook_dir.display().to_string()),
            ),
            ("ansible_play_hosts_all", hosts.clone()),
            ("ansible_play_hosts", hosts.clone()),
            ("play_hosts", hosts.clone()),
            ("ansible_play_batch", hosts),
            ("ansible_check_mode", Value::from(shared.opts.check)),
            ("ansible_diff_mode", Value::from(shared.opts.diff)),
            ("ansible_verbosity", Value::from(shared.opts.verbosity)),
            (
                "ansible_run_tags",
                tag_set(&shared.opts.tags.only, &["all"]),
            ),
            ("ansible_skip_tags", tag_set(&shared.opts.tags.skip, &[])),
            ("ansible_play_name", Value::from(play.name.as_str())),
            ("ansible_play_role_names", role_names.clone()),
            ("role_names", role_names),
            (
                "ansible_dependent_role_names",
                ser(&play.dependent_role_names),
            ),
            ("ansible_role_names", ser(&all_roles)),
            ("omit", Value::from(crate::template::omit_token())),
            // Inventories point interpreters at it; Keel runs no Python,
            // so it names the controller's python3.
            (
                "ansible_playbook_python",
                Value::from(crate::inventory::controller_python()),
            ),
            (
                "ansible_version",
                ser(
                    serde_json::json!({"full": "2.17.0", "major": 2, "minor": 17, "revision": 0, "string": "2.17.0 (keel)"}),
                ),
            ),
        ])
    }

    /// Adds the shared values to one host's magic variables, in order.
    fn insert_into(&self, magic: &mut VarMap) {
        for (k, v) in &self.0 {
            magic.insert((*k).into(), v.clone());
        }
    }
}

pub(crate) async fn run_play(
    shared: &Arc<Shared>,
    play: &Play,
    persistent: &mut HashMap<String, Persistent>,
    summary: &mut RunSummary,
) -> PlayEnd {
    // `hosts:` and templated keywords may use extra vars and play vars.
    let mut pscope = Scope::new();
    pscope.push(play.vars.clone());
    pscope.push(play.vars_files.clone());
    pscope.push(shared.extra_vars.clone());
    let mut play = play.clone();
    if let Err(msg) = apply_late_keywords(shared, &mut play, &pscope) {
        summary.errors.push(msg.clone());
        shared.sink.emit(&Event::Warning { message: msg });
        return PlayEnd::AbortRun;
    }
    let play = Arc::new(play);
    let origin = TemplateOrigin {
        span: Some(play.span.clone()),
        label: Some("play hosts".into()),
        ..Default::default()
    };
    let pattern = match shared.templar.render_str(&play.hosts, &pscope, &origin) {
        // A template that gives a list (`hosts: "{{ targets }}"`) names
        // each of its entries, as a list written in the play does.
        Ok(v) if v.kind() == minijinja::value::ValueKind::Seq => v
            .try_iter()
            .into_iter()
            .flatten()
            .map(|h| crate::template::display_text(&h))
            .collect::<Vec<_>>()
            .join(","),
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
        let inv = shared.inventory.read();
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
        // Hosts that failed (or were unreachable) in earlier plays are out.
        hosts.retain(|h| !persistent.get(h).is_some_and(|p| p.failed));
        order_hosts(hosts, play.order)
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
        let inv = shared.inventory.read();
        let groups = ser(inv.groups_map());
        // Every value that is the same for all hosts is built once and
        // shared (a `Value` clone is a reference count): a host list per
        // host made the play's start quadratic in the number of hosts
        // (about 100 MB at 1,000 hosts).
        let common = PlayMagic::new(shared, &play, &selected);
        let order = inv.group_order();
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
                common.insert_into(&mut magic);
                let inventory_layers = inv.host_layers_in(h, &order);
                let connection_defaults = Arc::new(super::host::connection_defaults(
                    h,
                    &inventory_layers,
                    &shared.opts.connection_vars,
                ));
                Arc::new(Mutex::new(HostState {
                    name: h.clone(),
                    inventory_layers,
                    connection_defaults,
                    facts: p.facts,
                    set_facts: p.set_facts,
                    include_vars: Arc::new(VarMap::new()),
                    include_params: Vec::new(),
                    public_role_defaults: Vec::new(),
                    public_role_vars: Vec::new(),
                    magic: Arc::new(magic),
                    failed: false,
                    unreachable: false,
                    vars_files: None,
                    run_failed: false,
                    include_failed: false,
                    fatal_ended: false,
                    errors_cleared: false,
                    ended: false,
                    ended_role: None,
                    completed_roles: Default::default(),
                    current_role: None,
                    role_task_ran: false,
                    notified: Vec::new(),
                    stats: Default::default(),
                    conn: None,
                }))
            })
            .collect();
        (groups, states)
    };
    let _ = groups_map;
    // Hosts first met in this run take their facts from the fact cache.
    for h in &states {
        let mut st = h.lock();
        if persistent.contains_key(&st.name) {
            continue;
        }
        match shared.opts.fact_cache.load(&st.name) {
            Ok(Some(facts)) => st.add_facts(&facts),
            Ok(None) => {}
            Err(e) => shared.sink.emit(&Event::Warning {
                message: e.to_string(),
            }),
        }
    }
    if !play.vars_files_layers.is_empty() {
        for h in &states {
            let mut st = h.lock();
            match host_vars_files(shared, &play, &st) {
                Ok(m) => st.vars_files = Some(Arc::new(m)),
                Err(msg) => {
                    summary.errors.push(msg.clone());
                    shared.sink.emit(&Event::Warning { message: msg });
                    return PlayEnd::AbortRun;
                }
            }
        }
    }
    let hostvars = Arc::new(HostVars {
        hosts: selected
            .iter()
            .cloned()
            .zip(states.iter().cloned())
            .collect(),
        carried: persistent.clone(),
        extra: shared.extra_vars.clone(),
        shared: shared.clone(),
    });
    let hv_value = crate::template::LazyMap::value(hostvars.clone());
    for h in &states {
        let mut st = h.lock();
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
    let play_ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fatal: Arc<Mutex<Option<Fatal>>> = Arc::new(Mutex::new(None));
    let removed_hosts: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    for (batch_no, batch) in batches(&play.serial, &states).into_iter().enumerate() {
        if play_ended.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        let names: Vec<String> = batch.iter().map(|h| h.lock().name.clone()).collect();
        if batch_no > 0 {
            // ansible-playbook starts each `serial` batch with its own banner.
            shared.sink.emit(&Event::PlayStart {
                name: name.clone(),
                hosts: selected.clone(),
            });
        }
        let batch_value = ser(&names);
        for h in &batch {
            let mut st = h.lock();
            Arc::make_mut(&mut st.magic).insert("ansible_play_batch".into(), batch_value.clone());
        }
        let run = Arc::new(PlayRun {
            ctx: ctx.clone(),
            waiting_for_start: Mutex::new(shared.opts.start_at_task.clone()),
            ended: Mutex::new(false),
            batch_size: batch.len(),
            extra_handlers: Mutex::new(Vec::new()),
            play_ended: play_ended.clone(),
            throttles: Mutex::new(HashMap::new()),
            fatal_stop: std::sync::atomic::AtomicBool::new(false),
            fatal: fatal.clone(),
            play_hosts: PlayHosts {
                all: selected.clone(),
                batch: batch.clone(),
                batch_names: names.clone(),
                removed: removed_hosts.clone(),
                shown: std::sync::atomic::AtomicUsize::new(0),
            },
        });
        run.play_hosts.refresh();
        let gather: Vec<Host> = match (shared.opts.gathering, play.gather_facts) {
            (_, Some(false)) | (Gathering::Explicit, None) => Vec::new(),
            // `smart` gathers only where no facts are known, even when the
            // play asks for them.
            (Gathering::Smart, _) => batch
                .iter()
                .filter(|h| h.lock().facts.is_empty())
                .cloned()
                .collect(),
            _ => batch.clone(),
        };
        if !gather.is_empty() {
            let mut t = synthetic_task(&play, "setup", "Gathering Facts");
            t.args = play.gather_args.clone();
            let t = Arc::new(t);
            run_tasks(&run, &t, &gather, false, false).await;
        }
        for section in &play.sections {
            if run.ended() {
                break;
            }
            run_nodes(run.clone(), section.nodes.clone(), batch.clone(), false).await;
            if shared.opts.debug {
                // ansible-core's implicit `flush_handlers` after each
                // section, as its debug output shows it.
                for h in &batch {
                    let s = h.lock();
                    if !s.notified.is_empty() && !s.unreachable {
                        shared.sink.emit(&Event::Verbose {
                            level: 0,
                            message: format!("META: triggered running handlers for {}", s.name),
                        });
                    }
                }
            }
            flush_handlers(&run, &batch, false).await;
        }
        if let Some(f) = fatal.lock().clone() {
            summary.errors.push(f.message);
            summary.parse_error |= f.parse;
            end = PlayEnd::AbortRun;
            break;
        }
        // Every host of the batch failed: ansible-playbook stops here, this
        // play and the ones after it.
        let failed_all = batch.iter().all(|h| {
            let s = h.lock();
            s.run_failed || s.include_failed
        });
        if failed_all {
            end = PlayEnd::AbortRun;
            break;
        }
    }
    for h in &states {
        let st = h.lock();
        persistent.insert(st.name.clone(), st.persistent());
        // Hosts left out of this play keep what an earlier play left them.
        if st.unreachable {
            summary.unreachable_hosts.insert(st.name.clone());
        } else if st.run_failed {
            summary.failed_hosts.insert(st.name.clone());
        } else {
            summary.failed_hosts.remove(&st.name);
        }
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

/// The play's `vars_files` for one host, resolving the entries that need
/// its variables: the first candidate that templates and exists wins.
fn host_vars_files(shared: &Shared, play: &Play, st: &HostState) -> Result<VarMap, String> {
    use crate::playbook::plan::VarsFileLayer;
    let mut acc = VarMap::new();
    for layer in &play.vars_files_layers {
        match layer {
            VarsFileLayer::Loaded(m) => acc.extend(m.iter().map(|(k, v)| (k.clone(), v.clone()))),
            VarsFileLayer::Deferred { candidates, span } => {
                let mut scope = Scope::new();
                for l in &st.inventory_layers {
                    scope.push(l.clone());
                }
                scope.push(st.facts.clone());
                scope.push(play.vars.clone());
                scope.push(Arc::new(acc.clone()));
                scope.push(shared.extra_vars.clone());
                scope.push(st.magic.clone());
                let origin = TemplateOrigin {
                    span: Some(span.clone()),
                    label: Some("vars_files".into()),
                    host: Some(st.name.clone()),
                    search_paths: vec![play.playbook_dir.clone()],
                };
                let mut found = None;
                let mut tried = Vec::new();
                for c in candidates {
                    let Ok(name) = shared.templar.render_str(c, &scope, &origin) else {
                        tried.push(c.clone());
                        continue;
                    };
                    let name = name.to_string();
                    let path = play.playbook_dir.join(&name);
                    if path.is_file() {
                        found = Some(path);
                        break;
                    }
                    tried.push(name);
                }
                let path = found.ok_or_else(|| {
                    format!(
                        "{span}: no vars file found for host {} (tried: {})",
                        st.name,
                        tried.join(", ")
                    )
                })?;
                let loaded =
                    crate::playbook::roles::load_vars_file(&path).map_err(|e| e.to_string())?;
                acc.extend(loaded);
            }
        }
    }
    Ok(acc)
}

/// Templates the play keywords written as templates and sets them on the
/// play. An `omit` leaves the keyword at its default.
fn apply_late_keywords(shared: &Shared, play: &mut Play, scope: &Scope) -> Result<(), String> {
    use crate::playbook::plan::HostOrder;
    let late = std::mem::take(&mut play.late_keywords);
    for (key, raw) in &late {
        let origin = TemplateOrigin {
            span: Some(play.span.clone()),
            label: Some(format!("play keyword '{key}'")),
            ..Default::default()
        };
        let v = shared
            .templar
            .render_value(raw, scope, &origin)
            .map_err(|e| e.to_string())?;
        if v.as_str() == Some(crate::template::omit_token()) || v.is_none() {
            continue;
        }
        let text = v.to_string();
        let flag = crate::template::to_bool(&v);
        match key.as_str() {
            "strategy" => {
                play.strategy = match text.trim() {
                    "linear" | "ansible.builtin.linear" => Strategy::Linear,
                    // host_pinned is free with hosts kept on their forks:
                    // the same order of work for Keel.
                    "free" | "ansible.builtin.free" | "host_pinned"
                    | "ansible.builtin.host_pinned" => Strategy::Free,
                    other => {
                        return Err(format!(
                            "unknown strategy '{other}'; Keel runs linear and free"
                        ))
                    }
                }
            }
            "serial" => play.serial = serial_from_value(&v)?,
            "order" => {
                play.order = HostOrder::parse(&text).ok_or_else(|| {
                    format!("invalid 'order' value '{text}': use inventory, reverse_inventory, sorted, reverse_sorted or shuffle")
                })?
            }
            "max_fail_percentage" => {
                play.max_fail_percentage = Some(
                    text.trim()
                        .trim_end_matches('%')
                        .parse()
                        .map_err(|_| format!("max_fail_percentage must be a number, got '{text}'"))?,
                )
            }
            "any_errors_fatal" => play.any_errors_fatal = flag,
            "gather_facts" => play.gather_facts = Some(flag),
            "ignore_errors" => play.ignore_errors = flag,
            "ignore_unreachable" => play.ignore_unreachable = flag,
            "force_handlers" => play.force_handlers = Some(flag),
            "run_once" => play.run_once = flag,
            "check_mode" => play.check_mode = Some(flag),
            "diff" => play.diff = Some(flag),
            "no_log" => play.no_log = Some(flag),
            _ => {}
        }
    }
    Ok(())
}

/// `serial` from a templated value: a count, a percentage, or a list.
fn serial_from_value(v: &Value) -> Result<Vec<Serial>, String> {
    let one = |x: &Value| -> Result<Serial, String> {
        let t = x.to_string();
        let t = t.trim();
        match t.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse()
                .map(Serial::Percent)
                .map_err(|_| format!("bad serial value '{t}'")),
            None => t
                .parse()
                .map(Serial::Count)
                .map_err(|_| format!("bad serial value '{t}'")),
        }
    };
    if v.kind() == minijinja::value::ValueKind::Seq {
        v.try_iter()
            .map_err(|e| e.to_string())?
            .map(|x| one(&x))
            .collect()
    } else {
        Ok(vec![one(v)?])
    }
}

/// The play's hosts in the order its `order` keyword asks for.
fn order_hosts(mut hosts: Vec<String>, order: crate::playbook::plan::HostOrder) -> Vec<String> {
    use crate::playbook::plan::HostOrder;
    match order {
        HostOrder::Inventory => {}
        HostOrder::ReverseInventory => hosts.reverse(),
        HostOrder::Sorted => hosts.sort(),
        HostOrder::ReverseSorted => {
            hosts.sort();
            hosts.reverse();
        }
        HostOrder::Shuffle => {
            use rand::seq::SliceRandom;
            hosts.shuffle(&mut rand::thread_rng());
        }
    }
    hosts
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
        python: None,
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
        late: Vec::new(),
    }
}

fn active(hosts: &[Host]) -> Vec<Host> {
    hosts
        .iter()
        .filter(|h| h.lock().active())
        .cloned()
        .collect()
}

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Tasks that ran (not skipped) on a host so far.
fn ran_count(s: &HostState) -> u32 {
    s.stats.ok + s.stats.failed + s.stats.unreachable
}

/// Run-time role deduplication, as ansible-core's play iterator does it: a
/// host leaving a role's tasks (for tasks outside it, not for a role nested
/// in it) has completed that role use if one of its tasks ran; a task of a
/// role use that does not allow duplicates is skipped, silently, on hosts
/// where a use with the same identity has completed.
fn skip_completed_roles(t: &Task, hosts: Vec<Host>) -> Vec<Host> {
    hosts
        .into_iter()
        .filter(|h| {
            let mut s = h.lock();
            let same = match (&s.current_role, &t.role) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                let nested =
                    |inner: &crate::playbook::plan::RoleInstance,
                     outer: &crate::playbook::plan::RoleInstance| {
                        inner.parents.contains(&outer.path)
                            || inner.include_parents.iter().any(|(_, p)| *p == outer.path)
                    };
                if let Some(prev) = s.current_role.clone() {
                    let inside = t.role.as_ref().is_some_and(|r| nested(r, &prev));
                    if !inside && s.role_task_ran {
                        if let Some(k) = &prev.dedup_key {
                            s.completed_roles.insert(k.clone());
                        }
                    }
                }
                s.current_role = t.role.clone();
                s.role_task_ran = false;
            }
            match t.role.as_ref().and_then(|r| r.dedup_key.as_ref()) {
                Some(k) => !s.completed_roles.contains(k),
                None => true,
            }
        })
        .collect()
}

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
                    // `meta: end_role` skips the rest of that role for a host.
                    let role = t.role.as_ref().map(|r| Arc::as_ptr(r) as usize);
                    let act: Vec<Host> = act
                        .into_iter()
                        .filter(|h| {
                            let mut s = h.lock();
                            if s.ended_role.is_some() && s.ended_role == role {
                                return false;
                            }
                            s.ended_role = None;
                            true
                        })
                        .collect();
                    let act = skip_completed_roles(&t, act);
                    if act.is_empty() {
                        // Deduplicated everywhere: not even a banner.
                        continue;
                    }
                    let before: Vec<u32> = act.iter().map(|h| ran_count(&h.lock())).collect();
                    run_tasks(&run, &t, &act, rescuing, false).await;
                    for (h, b) in act.iter().zip(before) {
                        let mut s = h.lock();
                        if ran_count(&s) > b || s.failed {
                            s.role_task_ran = true;
                        }
                    }
                    if active(&hosts).is_empty() && !rescuing && !run.ended() {
                        run.ctx.shared.sink.emit(&Event::NoMoreHosts);
                        return;
                    }
                }
                Node::Block(b) => {
                    let has_rescue = !b.rescue.is_empty();
                    let before_failed: Vec<bool> = act.iter().map(|h| h.lock().failed).collect();
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
                                let s = h.lock();
                                s.failed && !s.unreachable
                            }
                        })
                        .map(|(h, _)| h.clone())
                        .collect();
                    if has_rescue && !failed_in_block.is_empty() {
                        for h in &failed_in_block {
                            h.lock().failed = false;
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
                        // `any_errors_fatal` still lets `always` run (Ansible).
                        let fatal = run.fatal_stop.load(std::sync::atomic::Ordering::SeqCst);
                        if fatal {
                            *run.ended.lock() = false;
                            for h in &act {
                                let mut s = h.lock();
                                if s.fatal_ended {
                                    s.ended = false;
                                }
                            }
                        }
                        // `always` runs for hosts that failed too; they stay failed.
                        let still_failed: Vec<Host> = act
                            .iter()
                            .filter(|h| {
                                let s = h.lock();
                                s.failed && !s.unreachable
                            })
                            .cloned()
                            .collect();
                        for h in &still_failed {
                            h.lock().failed = false;
                        }
                        let targets: Vec<Host> = act
                            .iter()
                            .filter(|h| {
                                let s = h.lock();
                                !s.unreachable && !s.ended
                            })
                            .cloned()
                            .collect();
                        run_nodes_linear(run.clone(), b.always.clone(), targets, rescuing).await;
                        // `meta: clear_host_errors` in the always section
                        // lets the hosts go on, as in Ansible.
                        let cleared = act.iter().all(|h| h.lock().errors_cleared);
                        for h in &still_failed {
                            let mut s = h.lock();
                            if !s.errors_cleared {
                                s.failed = true;
                            }
                        }
                        for h in &act {
                            h.lock().errors_cleared = false;
                        }
                        if fatal && cleared {
                            run.fatal_stop
                                .store(false, std::sync::atomic::Ordering::SeqCst);
                            for h in &act {
                                h.lock().fatal_ended = false;
                            }
                        } else if fatal {
                            for h in &act {
                                let mut s = h.lock();
                                if s.fatal_ended {
                                    s.ended = true;
                                }
                            }
                            run.end();
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
        // Tasks a handler included are handlers too (their banner says so).
        let handler = handler || IN_HANDLER.try_with(|h| *h).unwrap_or(false);
        {
            let mut w = run.waiting_for_start.lock();
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
        if shared.opts.stop.is_stopped() {
            // Stopped from outside: end the run here, between two tasks,
            // the way a fatal error does.
            let mut fatal = run.fatal.lock();
            if fatal.is_none() {
                *fatal = Fatal::new(format!(
                    "the run was stopped before task {:?}",
                    task.display_name()
                ));
            }
            drop(fatal);
            for h in hosts {
                h.lock().ended = true;
            }
            run.end();
            run.end_play();
            return;
        }
        run.play_hosts.refresh();
        if task.action == "meta" {
            let fut: Pin<Box<dyn Future<Output = ()> + Send + '_>> =
                Box::pin(run_meta(run, task, hosts, handler, rescuing));
            return fut.await;
        }
        // `--step`: ansible-core asks before each task, handlers included,
        // and a "no" skips it on every host with nothing shown.
        if let Some(step) = &shared.opts.step {
            if !(step.0)(&task.display_name()) {
                return;
            }
        }
        shared.sink.emit(&Event::TaskStart {
            id: task.id,
            name: task.display_name(),
            path: format!("{}", task.span),
            handler,
        });
        // `add_host` and `pause` bypass the host loop as in ansible-core
        // (their actions' BYPASS_HOST_LOOP): they run once, for the first
        // host, and only that host's result is shown, counted and
        // registered.
        // A templated `run_once` is judged on the first host, as Ansible does.
        let templated_once = task.late.iter().any(|(k, _)| k == "run_once")
            && hosts.first().is_some_and(|h| {
                let (scope, name) = {
                    let s = h.lock();
                    (
                        super::host::scope_for(shared, &run.ctx.play, Some(task), &s, None),
                        s.name.clone(),
                    )
                };
                let origin = TemplateOrigin {
                    span: Some(task.span.clone()),
                    host: Some(name),
                    ..Default::default()
                };
                super::task::resolve_late_keywords(&run.ctx, task, &scope, &origin)
                    .is_ok_and(|t| t.run_once)
            });
        let once =
            task.run_once || templated_once || run.ctx.play.run_once || bypasses_host_loop(task);
        let targets: Vec<Host> = if once {
            hosts[..1.min(hosts.len())].to_vec()
        } else {
            hosts.to_vec()
        };
        let throttle = match &task.throttle {
            Some(t) => match throttle_value(run, task, hosts, t) {
                Ok(n) => n,
                Err(msg) => {
                    // ansible-playbook stops the run on a bad throttle.
                    shared.sink.emit(&Event::Warning {
                        message: msg.clone(),
                    });
                    *run.fatal.lock() = Fatal::new(msg);
                    for h in hosts {
                        h.lock().ended = true;
                    }
                    run.end();
                    run.end_play();
                    return;
                }
            },
            None => None,
        };
        let limiter = throttle.map(|n| {
            run.throttles
                .lock()
                .entry(task.id)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(n)))
                .clone()
        });
        let mut handles = Vec::with_capacity(targets.len());
        for h in &targets {
            let ctx = run.ctx.clone();
            let t = task.clone();
            let h2 = h.clone();
            // Slots are taken here, in host order, so that with `--forks 1`
            // (or `throttle: 1`) hosts run in the play's order, as in Ansible.
            let throttle_slot = match &limiter {
                Some(l) => l.clone().acquire_owned().await.ok(),
                None => None,
            };
            let fork_slot = shared.forks.clone().acquire_owned().await.ok();
            // Boxed: a finished task keeps its cell until it is joined, in
            // host order after every host was started, and an unboxed cell
            // is as large as the whole task future (about 9 KB a host).
            handles.push(tokio::spawn(Box::pin(async move {
                let _slots = (throttle_slot, fork_slot);
                run_task_on_host(ctx, t, h2, rescuing).await
            })));
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
        // (`add_host`'s result stays with the host it ran for.)
        if (task.run_once || templated_once || run.ctx.play.run_once) && hosts.len() > 1 {
            if let (Some(reg), Some((_, o))) = (&task.register, outcomes.first()) {
                for h in &hosts[1..] {
                    h.lock()
                        .set_fact(reg.clone(), super::task::registered_value(task, &o.result));
                }
            }
        }
        // So do the variables a run-once `set_fact` sets (ansible-core gives
        // a run-once task's facts to every host of the play).
        if task.run_once || templated_once || run.ctx.play.run_once {
            if let (true, Some((_, o))) = (task.action == "set_fact", outcomes.first()) {
                if let Some(facts) = o
                    .result
                    .get_attr("ansible_facts")
                    .ok()
                    .and_then(|f| super::host::value_to_map(&f))
                {
                    // Every host of the play, not only those running this
                    // task (an included task runs on the hosts that
                    // included it).
                    let ran = outcomes.first().map(|(h, _)| h.lock().name.clone());
                    for (name, h) in &run.ctx.hosts {
                        if Some(name) == ran.as_ref() {
                            continue;
                        }
                        let mut st = h.lock();
                        for (k, v) in &facts {
                            st.set_fact(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        let mut any_fatal = false;
        for (h, o) in &outcomes {
            let mut st = h.lock();
            apply_outcome(run, task, &mut st, o, rescuing);
            if o.status == Status::Failed && !o.ignored {
                any_fatal = true;
            }
        }
        if any_fatal && fatal_task(run, task) {
            if rescuing {
                // Inside a block with `rescue`, every host of the block goes
                // to the rescue, as in Ansible.
                for h in hosts {
                    h.lock().failed = true;
                }
            } else {
                stop_fatally(run, hosts);
            }
        }
        if let Some(pct) = run.ctx.play.max_fail_percentage {
            let failed = hosts
                .iter()
                .filter(|h| {
                    let s = h.lock();
                    s.failed || s.unreachable
                })
                .count();
            if run.batch_size > 0 && (failed as f64) * 100.0 / (run.batch_size as f64) > pct {
                run.end();
            }
        }
    })
}

/// `any_errors_fatal` was hit: every host counts as failed and the playbook
/// stops after this, once the `always` sections around the task have run.
fn stop_fatally(run: &PlayRun, hosts: &[Host]) {
    for h in hosts {
        let mut s = h.lock();
        s.ended = true;
        s.fatal_ended = true;
        s.run_failed = true;
        run.play_hosts.remove(&s.name);
    }
    run.fatal_stop
        .store(true, std::sync::atomic::Ordering::SeqCst);
    run.end();
}

/// `throttle`, templated with the first host's variables.
fn throttle_value(
    run: &Arc<PlayRun>,
    task: &Task,
    hosts: &[Host],
    raw: &Value,
) -> Result<Option<usize>, String> {
    let prefix = "Failed to convert the throttle value to an integer";
    let v = if raw.as_str().is_some_and(crate::template::is_template) {
        let Some(h) = hosts.first() else {
            return Ok(None);
        };
        let scope = {
            let s = h.lock();
            super::host::scope_for(&run.ctx.shared, &run.ctx.play, Some(task), &s, None)
        };
        let origin = TemplateOrigin {
            span: Some(task.span.clone()),
            ..Default::default()
        };
        match run.ctx.shared.templar.render_value(raw, &scope, &origin) {
            Ok(v) => v,
            Err(e) => {
                let why = match &e.undefined {
                    Some(name) => format!("'{name}' is undefined"),
                    None => e.to_string(),
                };
                return Err(format!("{prefix}: {why}"));
            }
        }
    } else {
        raw.clone()
    };
    let n = match v.as_i64() {
        Some(n) => n,
        None => {
            let text = v.to_string();
            text.trim().parse::<i64>().map_err(|_| {
                format!("{prefix}: invalid literal for int() with base 10: '{text}'")
            })?
        }
    };
    Ok(usize::try_from(n).ok().filter(|n| *n > 0))
}

/// An include that could not be loaded, on one host, as ansible-core's
/// strategy fails it: the host fails whatever `ignore_errors` says, a
/// `rescue` still runs, yet the recap counts a failure (not a rescue), no
/// `ansible_failed_result` is set and later plays leave the host out.
fn fail_include(run: &PlayRun, st: &mut HostState, rescuing: bool) {
    st.failed = true;
    st.include_failed = true;
    st.stats.failed += 1;
    if !rescuing {
        st.run_failed = true;
        run.play_hosts.remove(&st.name);
    }
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
            st.run_failed |= !rescuing;
            if !rescuing {
                run.play_hosts.remove(&st.name);
            }
            if rescuing {
                st.stats.rescued += 1;
                st.set_fact("ansible_failed_result".into(), o.result.clone());
                let mut t = VarMap::new();
                // The task's own name (templated), without the role prefix
                // ansible-playbook's banner adds; empty when unnamed.
                t.insert(
                    "name".into(),
                    Value::from(task.name.clone().unwrap_or_default()),
                );
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
                st.run_failed = true;
                st.stats.unreachable += 1;
                run.play_hosts.remove(&st.name);
            }
        }
    }
    if o.notify && !task.notify.is_empty() {
        let handlers = run.handlers();
        let order = handler_search_order(&handlers, run.ctx.play.handlers.len());
        for n in notifications(run, task, st) {
            let hits = notified_by(&handlers, &order, &n, |h| handler_names(run, h, st));
            let found = !hits.is_empty();
            for i in hits {
                if !st.notified.contains(&i) {
                    st.notified.push(i);
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

/// A task's `notify` for one host: each entry templated with the host's
/// variables when it is a template, and a list result taken as several
/// notifications, as ansible-core does. An entry that fails to template is
/// kept as written (it then matches no handler and is warned about).
fn notifications(run: &PlayRun, task: &Task, st: &HostState) -> Vec<String> {
    if !task.notify.iter().any(|n| crate::template::is_template(n)) {
        return task.notify.clone();
    }
    let scope = super::host::scope_for(&run.ctx.shared, &run.ctx.play, Some(task), st, None);
    let origin = TemplateOrigin {
        span: Some(task.span.clone()),
        label: Some("notify".into()),
        ..Default::default()
    };
    let mut out = Vec::new();
    for n in &task.notify {
        if !crate::template::is_template(n) {
            out.push(n.clone());
            continue;
        }
        match run.ctx.shared.templar.render_str(n, &scope, &origin) {
            Ok(v) if v.kind() == minijinja::value::ValueKind::Seq => {
                out.extend(v.try_iter().into_iter().flatten().map(|i| i.to_string()))
            }
            Ok(v) => out.push(v.to_string()),
            Err(_) => out.push(n.clone()),
        }
    }
    out
}

/// A handler's names as a notification sees them: a templated name is
/// templated when the search reaches it (with this host's variables;
/// ansible-core uses the play's), and a handler whose name fails to template
/// answers to no name, only to its `listen` topics, which are never templated
/// (warned about when it has none, as ansible-core does).
fn handler_names(run: &PlayRun, h: &crate::playbook::plan::Handler, st: &HostState) -> Vec<String> {
    if !h.names.iter().any(|n| crate::template::is_template(n)) {
        return h.names.clone();
    }
    let scope = super::host::scope_for(&run.ctx.shared, &run.ctx.play, Some(&h.task), st, None);
    let origin = TemplateOrigin {
        span: Some(h.task.span.clone()),
        label: Some("handler name".into()),
        ..Default::default()
    };
    let rendered = h
        .names
        .iter()
        .map(|n| run.ctx.shared.templar.render_str(n, &scope, &origin))
        .map(|r| r.map(|v| v.to_string()))
        .collect::<Result<Vec<_>, _>>();
    match rendered {
        Ok(names) => names,
        Err(e) => {
            if h.listen.is_empty() {
                let why = match &e.undefined {
                    Some(name) => format!("'{name}' is undefined"),
                    None => e.to_string(),
                };
                run.ctx.shared.sink.emit(&Event::Warning {
                    message: format!(
                        "Handler '{}' is unusable because it has no listen topics and the name could not be templated (host-specific variables are not supported in handler names). The error: {why}",
                        h.task.name.as_deref().unwrap_or_default()
                    ),
                });
            }
            Vec::new()
        }
    }
}

/// The order ansible-core's `search_handlers_by_notification` looks at the
/// play's handlers in: handler blocks last first (handlers a role include
/// added, then the play's own, then its roles'), each block's handlers in
/// order. `resolved` is how many come from the play as resolved; the rest
/// were added by `include_role`, later blocks of their own.
fn handler_search_order(
    handlers: &[Arc<crate::playbook::plan::Handler>],
    resolved: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..handlers.len()).collect();
    order.sort_by_key(|&i| {
        (
            std::cmp::Reverse(i >= resolved),
            std::cmp::Reverse(handlers[i].block),
            i,
        )
    });
    order
}

/// The handlers one notification reaches: the first handler (in search
/// order) whose name it is, then every handler listening to it, one per
/// handler name (unnamed listeners all run).
fn notified_by(
    handlers: &[Arc<crate::playbook::plan::Handler>],
    order: &[usize],
    notification: &str,
    names_of: impl Fn(&crate::playbook::plan::Handler) -> Vec<String>,
) -> Vec<usize> {
    let mut hits = Vec::new();
    if let Some(&i) = order
        .iter()
        .find(|&&i| names_of(&handlers[i]).iter().any(|n| n == notification))
    {
        hits.push(i);
    }
    let mut seen = HashSet::new();
    for &i in order {
        let h = &handlers[i];
        if !h.listen.iter().any(|l| l == notification) {
            continue;
        }
        if let Some(name) = &h.task.name {
            if !seen.insert(name.as_str()) {
                continue;
            }
        }
        if !hits.contains(&i) {
            hits.push(i);
        }
    }
    hits
}

tokio::task_local! {
    /// Set while a handler's `include_tasks` runs: the included tasks are
    /// shown as handlers (`RUNNING HANDLER [...]`), as ansible-playbook does.
    static IN_HANDLER: bool;
}

/// Runs notified handlers, in definition order.
/// `rescuing`: a `meta: flush_handlers` inside a block with a `rescue`; a
/// handler failing there is rescued by it, as in ansible-core.
async fn flush_handlers(run: &Arc<PlayRun>, hosts: &[Host], rescuing: bool) {
    // The play keyword, when given, wins over `--force-handlers`.
    let force = run
        .ctx
        .play
        .force_handlers
        .unwrap_or(run.ctx.shared.opts.force_handlers);
    let handlers = run.handlers();
    for (i, h) in handlers.iter().enumerate() {
        let targets: Vec<Host> = hosts
            .iter()
            .filter(|x| {
                let s = x.lock();
                // Forced handlers run for failed hosts and for those
                // any_errors_fatal stopped, not for hosts that ended.
                s.notified.contains(&i)
                    && !s.unreachable
                    && (s.active() || (force && (!s.ended || s.fatal_ended)))
            })
            .cloned()
            .collect();
        for x in hosts {
            x.lock().notified.retain(|n| *n != i);
        }
        if targets.is_empty() {
            continue;
        }
        // A forced handler runs on failed hosts too.
        let was_failed: Vec<bool> = targets.iter().map(|x| x.lock().failed).collect();
        if force {
            for x in &targets {
                x.lock().failed = false;
            }
        }
        if h.task.action == "meta" && super::actions::meta_name(&h.task) == "flush_handlers" {
            // ansible-core's strategy refuses it when the handler comes to
            // run, and the run stops there.
            let msg = "flush_handlers cannot be used as a handler".to_string();
            run.ctx.shared.sink.emit(&Event::Warning {
                message: msg.clone(),
            });
            *run.fatal.lock() = Fatal::new(msg);
            for x in hosts {
                x.lock().ended = true;
            }
            run.end();
            run.end_play();
            return;
        }
        if h.task.include.is_some() {
            // A handler may be an `include_tasks` (setup_remote_tmp_dir's
            // cleanup): its tasks run now, for the notified hosts.
            IN_HANDLER
                .scope(true, run_include(run, &h.task, &targets, rescuing))
                .await;
        } else {
            run_tasks(run, &h.task, &targets, rescuing, true).await;
        }
        for (x, was) in targets.iter().zip(was_failed) {
            if was {
                x.lock().failed = true;
            }
        }
    }
}

/// `meta` tasks, with Ansible's semantics: under the linear strategy the
/// play-wide actions (`end_play`, `end_batch`, `clear_facts`,
/// `clear_host_errors`, `refresh_inventory`) run once, their `when` judged
/// on the first host; the others run per host. A false `when` shows the
/// task as skipped (not counted in the recap).
async fn run_meta(
    run: &Arc<PlayRun>,
    task: &Arc<Task>,
    hosts: &[Host],
    handler: bool,
    rescuing: bool,
) {
    let shared = &run.ctx.shared;
    let action = super::actions::meta_name(task);
    // A meta handler (`noop`) gets the handler banner, as any handler does.
    let banner = || {
        shared.sink.emit(&Event::TaskStart {
            id: task.id,
            name: task.display_name(),
            path: format!("{}", task.span),
            handler,
        })
    };
    let per_host = matches!(
        action.as_str(),
        "noop" | "reset_connection" | "end_host" | "role_complete" | "flush_handlers" | "end_role"
    );
    if matches!(
        action.as_str(),
        "noop" | "refresh_inventory" | "reset_connection"
    ) && !task.when.is_empty()
    {
        shared.sink.emit(&Event::Warning {
            message: format!("{action} task does not support when conditional"),
        });
    }
    // ansible-playbook announces a per-host meta task once per host.
    let targets: Vec<Host> = if per_host {
        hosts.to_vec()
    } else {
        banner();
        hosts.iter().take(1).cloned().collect()
    };
    let verbose = |message: String| {
        shared.sink.emit(&Event::Verbose {
            level: 2,
            message: format!("META: {message}"),
        })
    };
    let mut flush_for: Vec<Host> = Vec::new();
    for h in &targets {
        if per_host {
            banner();
        }
        let name = h.lock().name.clone();
        let holds = match action.as_str() {
            "noop" | "refresh_inventory" | "reset_connection" => true,
            _ => meta_when(run, task, h),
        };
        // (message when done, skip reason when the condition is false)
        let (msg, skip): (String, String) = match action.as_str() {
            "noop" => ("noop".into(), String::new()),
            "flush_handlers" => (
                format!("triggered running handlers for {name}"),
                format!("not running handlers for {name}"),
            ),
            "refresh_inventory" => ("inventory successfully refreshed".into(), String::new()),
            "clear_facts" => (
                "facts cleared".into(),
                format!("not clearing facts and fact cache for {name}"),
            ),
            "clear_host_errors" => (
                "cleared host errors".into(),
                format!("not clearing host error state for {name}"),
            ),
            "end_batch" => ("ending batch".into(), "continuing current batch".into()),
            "end_play" => ("ending play".into(), "continuing play".into()),
            "end_host" => (
                format!("ending play for {name}"),
                format!("continuing execution for {name}"),
            ),
            "end_role" => {
                let role = task
                    .role
                    .as_ref()
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                (
                    format!("ending role {role} for {name}"),
                    format!("continuing role {role} for {name}"),
                )
            }
            "reset_connection" => ("reset connection".into(), String::new()),
            other => {
                let mut r = VarMap::new();
                r.insert("failed".into(), Value::from(true));
                r.insert(
                    "msg".into(),
                    Value::from(format!("invalid meta action requested: {other}")),
                );
                shared
                    .sink
                    .emit(&Event::HostResult(crate::output::HostResult::plain(
                        name,
                        Status::Failed,
                        false,
                        super::task::to_json(&ser(&r)),
                    )));
                let o = Outcome {
                    status: Status::Failed,
                    ignored: false,
                    result: ser(&r),
                    notify: false,
                };
                let mut st = h.lock();
                apply_outcome(run, task, &mut st, &o, false);
                continue;
            }
        };
        if !holds {
            let reason = format!("{action} conditional evaluated to False, {skip}");
            verbose(reason.clone());
            let shown = if action == "end_host" {
                format!("end_host conditional evaluated to false, {skip}")
            } else {
                action.clone()
            };
            shared
                .sink
                .emit(&Event::HostResult(crate::output::HostResult::plain(
                    name,
                    Status::Skipped,
                    false,
                    serde_json::json!({"msg": shown, "skip_reason": reason}),
                )));
            continue;
        }
        verbose(msg);
        let all = || run.ctx.hosts.values().cloned().collect::<Vec<Host>>();
        match action.as_str() {
            "flush_handlers" => flush_for.push(h.clone()),
            "refresh_inventory" => refresh_inventory(run),
            "clear_facts" => {
                for x in all() {
                    x.lock().clear_facts();
                }
            }
            // The hosts stay out of this play, as in Ansible, but later
            // plays take them again.
            "clear_host_errors" => {
                for x in all() {
                    let mut s = x.lock();
                    s.run_failed = false;
                    s.include_failed = false;
                    s.errors_cleared = true;
                }
            }
            "end_batch" | "end_play" => {
                for x in hosts {
                    let mut s = x.lock();
                    if !s.unreachable {
                        s.ended = true;
                    }
                }
                if action == "end_play" {
                    run.end_play();
                }
                run.end();
            }
            "end_host" => {
                let mut s = h.lock();
                s.ended = true;
                run.play_hosts.remove(&s.name);
            }
            "end_role" => {
                if let Some(r) = &task.role {
                    h.lock().ended_role = Some(Arc::as_ptr(r) as usize);
                }
            }
            "reset_connection" => {
                h.lock().conn = None;
                shared.pool.invalidate(&name).await;
            }
            _ => {}
        }
    }
    if !flush_for.is_empty() {
        flush_handlers(run, &flush_for, rescuing).await;
    }
}

/// `meta: refresh_inventory`: re-reads the sources; the play's hosts see
/// the new groups and variables.
fn refresh_inventory(run: &Arc<PlayRun>) {
    let shared = &run.ctx.shared;
    if shared.opts.inventory_sources.is_empty() {
        return;
    }
    match crate::inventory::Inventory::load(&shared.opts.inventory_sources) {
        Ok(mut inv) => {
            let _ = inv.add_vars_dir(&run.ctx.play.playbook_dir);
            *shared.inventory.write() = inv;
            super::actions::replay_dynamic_hosts(&run.ctx);
            super::host::refresh_inventory_view(&run.ctx);
        }
        Err(e) => shared.sink.emit(&Event::Warning {
            message: format!("refresh_inventory: {e}"),
        }),
    }
}

/// A meta task's `when`, for one host.
fn meta_when(run: &Arc<PlayRun>, task: &Task, h: &Host) -> bool {
    if task.when.is_empty() {
        return true;
    }
    let scope = {
        let s = h.lock();
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
}

/// A dynamic `include_tasks`/`include_role`: evaluated per host (its `when`
/// and loop), loaded, and run for the hosts that included the same thing.
/// Whether a failure of `task` ends the play for every host.
fn fatal_task(run: &PlayRun, task: &Task) -> bool {
    task.any_errors_fatal.unwrap_or(false) || run.ctx.play.any_errors_fatal
}

async fn run_include(run: &Arc<PlayRun>, task: &Arc<Task>, hosts: &[Host], rescuing: bool) {
    let shared = &run.ctx.shared;
    if !shared.opts.tags.selects(&task.tags) {
        return;
    }
    // `run_once` on an include: only the first host processes it (and so
    // only it runs what it brings in), as in ansible-core.
    let hosts = if task.run_once || run.ctx.play.run_once {
        &hosts[..1.min(hosts.len())]
    } else {
        hosts
    };
    if hosts.is_empty() {
        return;
    }
    // ansible-playbook shows the include's own banner, then a line per
    // host that skipped it and the `included:` lines.
    shared.sink.emit(&Event::TaskStart {
        id: task.id,
        name: task.display_name(),
        path: task.span.to_string(),
        handler: false,
    });
    // Per host: the list of (target, params) it includes.
    let mut plan: Vec<(Host, Vec<(String, VarMap)>)> = Vec::new();
    let mut any_failed = false;
    for h in hosts {
        let (scope, name) = {
            let s = h.lock();
            (
                super::host::scope_for(shared, &run.ctx.play, Some(task), &s, None),
                s.name.clone(),
            )
        };
        let origin = TemplateOrigin {
            span: Some(task.span.clone()),
            label: Some(format!("task '{}'", task.display_name())),
            host: Some(name),
            search_paths: super::task::search_paths(&run.ctx, task),
        };
        match super::include::expand(&run.ctx, task, &scope, &origin) {
            Ok(list) if list.is_empty() => {
                // Its `when` was false (or its loop empty): skipped, and
                // registered so.
                let mut r = VarMap::new();
                r.insert("changed".into(), Value::from(false));
                if task.loop_.is_none() {
                    let false_cond = shared
                        .templar
                        .first_false_condition(&task.when, &scope, &origin)
                        .ok()
                        .flatten();
                    if let Some(c) = false_cond {
                        r.insert("false_condition".into(), c.as_value());
                    }
                }
                r.insert("skipped".into(), Value::from(true));
                r.insert(
                    "skip_reason".into(),
                    Value::from("Conditional result was False"),
                );
                let o = Outcome {
                    status: Status::Skipped,
                    ignored: false,
                    result: ser(&r),
                    notify: false,
                };
                if let Some(reg) = &task.register {
                    h.lock()
                        .set_fact(reg.clone(), super::task::registered_value(task, &o.result));
                }
                shared
                    .sink
                    .emit(&Event::HostResult(crate::output::HostResult::plain(
                        h.lock().name.clone(),
                        Status::Skipped,
                        false,
                        super::task::to_json(&o.result),
                    )));
                let mut st = h.lock();
                apply_outcome(run, task, &mut st, &o, rescuing);
            }
            Ok(list) => {
                // What ansible-core registers for an include that ran: the
                // file and the other arguments (include_role: all of them).
                if let Some(reg) = &task.register {
                    let mut args = task.args.clone();
                    let mut r = VarMap::new();
                    r.insert("changed".into(), Value::from(false));
                    if task.action.ends_with("include_tasks") {
                        let file = args
                            .shift_remove("file")
                            .or_else(|| args.shift_remove("_raw_params"));
                        r.insert("include".into(), file.unwrap_or_default());
                    }
                    r.insert("include_args".into(), ser(&args));
                    h.lock()
                        .set_fact(reg.clone(), super::task::registered_value(task, &ser(&r)));
                }
                plan.push((h.clone(), list))
            }
            Err(msg) => {
                any_failed = true;
                // An include that fails before loading (its `when` or its
                // arguments do not template) is a failed task like any other:
                // `ignore_errors` applies and `register` gets the result.
                let mut r = VarMap::new();
                r.insert("failed".into(), Value::from(true));
                r.insert("msg".into(), Value::from(msg));
                r.insert("changed".into(), Value::from(false));
                let o = Outcome {
                    status: Status::Failed,
                    ignored: super::task::ignore_errors_of(&run.ctx, task),
                    result: ser(&r),
                    notify: false,
                };
                if let Some(reg) = &task.register {
                    h.lock()
                        .set_fact(reg.clone(), super::task::registered_value(task, &o.result));
                }
                shared
                    .sink
                    .emit(&Event::HostResult(crate::output::HostResult::plain(
                        h.lock().name.clone(),
                        Status::Failed,
                        o.ignored,
                        super::task::to_json(&o.result),
                    )));
                let mut st = h.lock();
                apply_outcome(run, task, &mut st, &o, rescuing);
            }
        }
    }
    if any_failed && fatal_task(run, task) && !rescuing {
        stop_fatally(run, hosts);
        return;
    }
    let rounds = plan.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    for i in 0..rounds {
        // Group the hosts that include the same target in this round.
        let mut groups: Vec<(String, Vec<(Host, VarMap)>)> = Vec::new();
        for (h, list) in &plan {
            if let Some((target, params)) = list.get(i) {
                if !h.lock().active() {
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
                Ok((n, handlers, public_role)) => {
                    if let Some(role) = public_role {
                        for (h, _) in &members {
                            let mut st = h.lock();
                            st.public_role_defaults.push(role.defaults.clone());
                            st.public_role_vars.push(role.vars.clone());
                        }
                    }
                    let mut extra = run.extra_handlers.lock();
                    for h in handlers {
                        if !extra.iter().any(|x| {
                            Arc::ptr_eq(x, &h) || x.task.span.to_string() == h.task.span.to_string()
                        }) {
                            extra.push(h);
                        }
                    }
                    n
                }
                Err(crate::playbook::IncludeError::Invalid(d)) => {
                    let msg = d.to_string();
                    // ansible-core re-raises a parser error from an included
                    // file: no rescue runs, the run ends here with exit code
                    // 4 and without a recap.
                    shared.sink.emit(&Event::Error {
                        message: msg.clone(),
                    });
                    *run.fatal.lock() = Some(Fatal {
                        message: msg,
                        parse: true,
                    });
                    for h in hosts {
                        h.lock().ended = true;
                    }
                    run.end();
                    run.end_play();
                    return;
                }
                Err(crate::playbook::IncludeError::Missing(d)) => {
                    let msg = d.to_string();
                    shared.sink.emit(&Event::Error {
                        message: msg.clone(),
                    });
                    let mut r = VarMap::new();
                    r.insert("changed".into(), Value::from(false));
                    if let Some(file) = target.strip_prefix("tasks:") {
                        r.insert("include".into(), Value::from(file));
                    }
                    r.insert("reason".into(), Value::from(msg.clone()));
                    let result = ser(&r);
                    for (h, _) in &members {
                        shared
                            .sink
                            .emit(&Event::HostResult(crate::output::HostResult::plain(
                                h.lock().name.clone(),
                                Status::Failed,
                                false,
                                super::task::to_json(&result),
                            )));
                        fail_include(run, &mut h.lock(), rescuing);
                    }
                    if fatal_task(run, task) && !rescuing {
                        stop_fatally(run, hosts);
                        return;
                    }
                    continue;
                }
            };
            let names: Vec<String> = members.iter().map(|(h, _)| h.lock().name.clone()).collect();
            // ansible-playbook names the tasks file, or the role by its name;
            // `target` is the include's key (`tasks:<path>`, `role:<name>…`).
            let shown = match (target.strip_prefix("tasks:"), target.strip_prefix("role:")) {
                (Some(path), _) => path.to_string(),
                (None, Some(role)) => role.split('\u{1f}').next().unwrap_or(role).to_string(),
                (None, None) => target.clone(),
            };
            shared.sink.emit(&Event::Included {
                file: shown,
                hosts: names,
            });
            let group_hosts: Vec<Host> = members.iter().map(|(h, _)| h.clone()).collect();
            for (h, params) in &members {
                let mut st = h.lock();
                st.include_params.push(Arc::new(params.clone()));
                st.stats.ok += 1;
            }
            run_nodes(run.clone(), nodes, group_hosts.clone(), rescuing).await;
            for h in &group_hosts {
                h.lock().include_params.pop();
            }
        }
    }
}

/// Actions whose ansible-core action plugin sets BYPASS_HOST_LOOP.
fn bypasses_host_loop(task: &Task) -> bool {
    matches!(task.action.as_str(), "add_host" | "pause")
}
