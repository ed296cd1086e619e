//! A compact, stable text rendering of a resolved plan, for snapshot tests
//! and `keel play --dump-plan`-style debugging. Paths are shown relative to
//! the playbook's directory so the output does not depend on where it lives.

use std::fmt::Write;
use std::path::Path;

use minijinja::Value;

use super::plan::{LoopKind, Node, Playbook, Section, SectionKind, Serial, Task};
use crate::vars::VarMap;

fn json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
}

fn map(m: &VarMap) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {}", json(v))).collect();
    format!("{{{}}}", parts.join(", "))
}

fn rel(p: &Path, base: &Path) -> String {
    p.strip_prefix(base).unwrap_or(p).display().to_string()
}

/// Renders a plan as indented text, one line per task, block and handler.
pub fn dump_plan(pb: &Playbook) -> String {
    let base = pb.path.parent().unwrap_or(Path::new(""));
    let mut o = String::new();
    for (i, play) in pb.plays.iter().enumerate() {
        let _ = write!(o, "play #{} {:?} hosts={:?}", i + 1, play.name, play.hosts);
        if play.gather_facts == Some(false) {
            o.push_str(" gather_facts=false");
        }
        if play.become_ != Default::default() {
            let _ = write!(o, " {}", become_text(&play.become_));
        }
        if !play.serial.is_empty() {
            let s: Vec<String> = play
                .serial
                .iter()
                .map(|s| match s {
                    Serial::Count(n) => n.to_string(),
                    Serial::Percent(p) => format!("{p}%"),
                })
                .collect();
            let _ = write!(o, " serial=[{}]", s.join(", "));
        }
        if play.strategy != Default::default() {
            let _ = write!(o, " strategy={:?}", play.strategy);
        }
        for (flag, name) in [
            (play.any_errors_fatal, "any_errors_fatal"),
            (play.ignore_unreachable, "ignore_unreachable"),
            (play.ignore_errors, "ignore_errors"),
            (play.force_handlers == Some(true), "force_handlers"),
            (play.run_once, "run_once"),
        ] {
            if flag {
                let _ = write!(o, " {name}");
            }
        }
        if let Some(m) = play.max_fail_percentage {
            let _ = write!(o, " max_fail_percentage={m}");
        }
        for (v, name) in [
            (play.check_mode, "check_mode"),
            (play.diff, "diff"),
            (play.no_log, "no_log"),
        ] {
            if let Some(v) = v {
                let _ = write!(o, " {name}={v}");
            }
        }
        if !play.tags.is_empty() {
            let _ = write!(o, " tags={:?}", play.tags);
        }
        o.push('\n');
        if !play.vars.is_empty() {
            let _ = writeln!(o, "  vars: {}", map(&play.vars));
        }
        if !play.vars_files.is_empty() {
            let _ = writeln!(o, "  vars_files: {}", map(&play.vars_files));
        }
        if !play.environment.is_empty() {
            let e: Vec<String> = play.environment.iter().map(json).collect();
            let _ = writeln!(o, "  environment: [{}]", e.join(", "));
        }
        for (m, args) in &play.module_defaults {
            let _ = writeln!(o, "  module_defaults {m}: {}", map(args));
        }
        for s in &play.sections {
            section(&mut o, s, base);
        }
        if !play.handlers.is_empty() {
            o.push_str("  handlers:\n");
            for h in &play.handlers {
                let _ = write!(
                    o,
                    "    handler names={:?} listen={:?} block={} ",
                    h.names, h.listen, h.block
                );
                task_line(&mut o, &h.task, base);
            }
        }
    }
    if !pb.warnings.is_empty() {
        o.push_str("warnings:\n");
        for w in &pb.warnings {
            let at = w
                .span
                .as_ref()
                .map(|s| format!("{}:{}:{}: ", rel(s.path(), base), s.pos.line, s.pos.col));
            let _ = write!(o, "  {}{}", at.unwrap_or_default(), w.message);
            if let Some(h) = &w.hint {
                let _ = write!(o, " (hint: {h})");
            }
            o.push('\n');
        }
    }
    o
}

fn section(o: &mut String, s: &Section, base: &Path) {
    let name = match s.kind {
        SectionKind::PreTasks => "pre_tasks",
        SectionKind::Tasks => "tasks",
        SectionKind::PostTasks => "post_tasks",
    };
    if s.nodes.is_empty() {
        return;
    }
    let _ = writeln!(o, "  {name}:");
    nodes(o, &s.nodes, 2, base);
}

fn nodes(o: &mut String, list: &[Node], depth: usize, base: &Path) {
    let pad = "  ".repeat(depth);
    for n in list {
        match n {
            Node::Task(t) => {
                o.push_str(&pad);
                task_line(o, t, base);
            }
            Node::Include(t) => {
                let _ = write!(o, "{pad}include ");
                task_line(o, t, base);
            }
            Node::Block(b) => {
                let _ = write!(o, "{pad}block");
                if let Some(n) = &b.name {
                    let _ = write!(o, " {n:?}");
                }
                if !b.when.is_empty() {
                    let _ = write!(o, " when={:?}", b.when);
                }
                if !b.tags.is_empty() {
                    let _ = write!(o, " tags={:?}", b.tags);
                }
                o.push('\n');
                for (label, part) in [
                    ("block", &b.block),
                    ("rescue", &b.rescue),
                    ("always", &b.always),
                ] {
                    if !part.is_empty() {
                        let _ = writeln!(o, "{pad}  {label}:");
                        nodes(o, part, depth + 2, base);
                    }
                }
            }
        }
    }
}

fn become_text(b: &super::plan::BecomeSettings) -> String {
    let mut parts = Vec::new();
    if let Some(x) = b.become_ {
        parts.push(format!("become={x}"));
    }
    for (v, n) in [
        (&b.become_user, "user"),
        (&b.become_method, "method"),
        (&b.become_flags, "flags"),
    ] {
        if let Some(v) = v {
            parts.push(format!("{n}={v}"));
        }
    }
    format!("become({})", parts.join(" "))
}

fn task_line(o: &mut String, t: &Task, base: &Path) {
    let _ = write!(o, "#{} {}", t.id, t.display_name());
    if t.action_as_written != t.action || t.name.is_some() {
        let _ = write!(o, " [{}]", t.action_as_written);
    }
    if !t.args.is_empty() {
        let _ = write!(o, " args={}", map(&t.args));
    }
    let _ = write!(o, " @{}:{}", rel(t.span.path(), base), t.span.pos.line);
    if !t.when.is_empty() {
        let _ = write!(o, " when={:?}", t.when);
    }
    if let Some(l) = &t.loop_ {
        let kind = match &l.kind {
            LoopKind::Loop => "loop".to_string(),
            LoopKind::With(w) => format!("with_{w}"),
        };
        let _ = write!(o, " {kind}={}", json(&l.value));
    }
    let lc = &t.loop_control;
    if lc.loop_var.is_some()
        || lc.index_var.is_some()
        || lc.label.is_some()
        || lc.pause.is_some()
        || lc.extended
    {
        let _ = write!(o, " loop_control={lc:?}");
    }
    if let Some(r) = &t.register {
        let _ = write!(o, " register={r}");
    }
    if !t.notify.is_empty() {
        let _ = write!(o, " notify={:?}", t.notify);
    }
    if !t.tags.is_empty() {
        let _ = write!(o, " tags={:?}", t.tags);
    }
    for (v, name) in [
        (&t.changed_when, "changed_when"),
        (&t.failed_when, "failed_when"),
        (&t.until, "until"),
    ] {
        if let Some(v) = v {
            let _ = write!(o, " {name}={v:?}");
        }
    }
    for (v, name) in [
        (&t.retries, "retries"),
        (&t.delay, "delay"),
        (&t.throttle, "throttle"),
        (&t.timeout, "timeout"),
        (&t.async_, "async"),
        (&t.poll, "poll"),
    ] {
        if let Some(v) = v {
            let _ = write!(o, " {name}={}", json(v));
        }
    }
    for (v, name) in [
        (t.ignore_errors, "ignore_errors"),
        (t.ignore_unreachable, "ignore_unreachable"),
        (t.no_log, "no_log"),
        (t.check_mode, "check_mode"),
        (t.diff, "diff"),
        (t.any_errors_fatal, "any_errors_fatal"),
    ] {
        if let Some(v) = v {
            let _ = write!(o, " {name}={v}");
        }
    }
    if t.become_ != Default::default() {
        let _ = write!(o, " {}", become_text(&t.become_));
    }
    if !t.environment.is_empty() {
        let e: Vec<String> = t.environment.iter().map(json).collect();
        let _ = write!(o, " environment=[{}]", e.join(", "));
    }
    if let Some(d) = &t.delegate_to {
        let _ = write!(o, " delegate_to={d}");
    }
    if t.delegate_facts {
        o.push_str(" delegate_facts");
    }
    if t.run_once {
        o.push_str(" run_once");
    }
    if !t.vars.is_empty() {
        let _ = write!(o, " vars={}", map(&t.vars));
    }
    if let Some(r) = &t.role {
        let _ = write!(o, " role={}", r.name);
        if !r.params.is_empty() {
            let _ = write!(o, "{}", map(&r.params));
        }
    }
    if let Some(inc) = &t.include {
        match inc {
            super::plan::IncludeTarget::Tasks { file, base_dir } => {
                let _ = write!(
                    o,
                    " include_tasks(file={file:?} dir={:?})",
                    rel(base_dir, base)
                );
            }
            super::plan::IncludeTarget::Role {
                name,
                tasks_from,
                vars_from,
                defaults_from,
            } => {
                let _ = write!(o, " include_role(name={name:?} tasks_from={tasks_from:?} vars_from={vars_from:?} defaults_from={defaults_from:?})");
            }
        }
    }
    o.push('\n');
}
