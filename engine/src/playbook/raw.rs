//! YAML nodes → the raw model: one task or block mapping read into typed
//! keyword values, with its module and arguments picked out. Checks keywords
//! here (unknown ones get "did you mean" hints, YAML 1.1 traps get "quote it"),
//! so `resolve.rs` only deals with inheritance, imports and roles.

use minijinja::Value;

use super::keywords::{self, BLOCK, RAW_PARAM_ACTIONS, TASK};
use super::plan::{BecomeSettings, LoopControl, LoopKind, LoopSpec};
use crate::diag::{suggest, Diagnostic, Span};
use crate::modules::python::ModuleSearch;
use crate::modules::registry;
use crate::template::Condition;
use crate::vars::VarMap;
use crate::yaml::{Node, NodeKind};

/// The text a scalar was written as, read back from the source line (for
/// hints about YAML 1.1 conversions).
pub fn written_text(node: &Node) -> String {
    let line = node.source.line(node.pos.line).unwrap_or("");
    let rest: String = line
        .chars()
        .skip(node.pos.col.saturating_sub(1) as usize)
        .collect();
    let end = rest.find(" #").unwrap_or(rest.len());
    rest[..end].trim().trim_end_matches(',').to_string()
}

/// A string-valued keyword. Numbers are accepted (as text); a boolean is an
/// error because YAML 1.1 turned `yes`/`no`/`on`/`off` into one.
pub fn string(node: &Node, what: &str) -> Result<String, Diagnostic> {
    match &node.kind {
        NodeKind::Str { value, .. } => Ok(value.clone()),
        NodeKind::Int(i) => Ok(i.to_string()),
        NodeKind::Float(_) => Ok(written_text(node)),
        NodeKind::Bool(_) => {
            let text = written_text(node);
            Err(node
                .error(format!(
                    "`{what}` must be a string, but YAML read `{text}` as a boolean"
                ))
                .hint(format!("quote it: {what}: \"{text}\"")))
        }
        _ => Err(node.error(format!(
            "`{what}` must be a string, found {}",
            node.type_name()
        ))),
    }
}

pub fn opt_string(node: Option<&Node>, what: &str) -> Result<Option<String>, Diagnostic> {
    match node {
        None => Ok(None),
        Some(n) if n.is_null() => Ok(None),
        Some(n) => string(n, what).map(Some),
    }
}

/// A boolean keyword; strings are read with Ansible's `boolean()` rules.
pub fn boolean(node: &Node, what: &str) -> Result<bool, Diagnostic> {
    match &node.kind {
        NodeKind::Bool(b) => Ok(*b),
        NodeKind::Int(i) if *i == 0 || *i == 1 => Ok(*i == 1),
        NodeKind::Str { value, .. } => match value.to_ascii_lowercase().as_str() {
            "yes" | "y" | "true" | "t" | "on" | "1" => Ok(true),
            "no" | "n" | "false" | "f" | "off" | "0" | "" => Ok(false),
            _ => Err(node
                .error(format!("`{what}` must be a boolean, found `{value}`"))
                .hint("use true or false (templated values are not allowed here)")),
        },
        _ => Err(node.error(format!(
            "`{what}` must be a boolean, found {}",
            node.type_name()
        ))),
    }
}

pub fn opt_bool(node: Option<&Node>, what: &str) -> Result<Option<bool>, Diagnostic> {
    match node {
        None => Ok(None),
        Some(n) if n.is_null() => Ok(None),
        Some(n) => boolean(n, what).map(Some),
    }
}

/// A string or a list of strings (`notify`, `listen`).
pub fn string_list(node: &Node, what: &str) -> Result<Vec<String>, Diagnostic> {
    match &node.kind {
        NodeKind::Null => Ok(vec![]),
        NodeKind::Seq(items) => items.iter().map(|n| string(n, what)).collect(),
        _ => Ok(vec![string(node, what)?]),
    }
}

/// `tags`: a string (comma-separated), a number, or a list of those.
pub fn tags(node: &Node) -> Result<Vec<String>, Diagnostic> {
    let mut out = Vec::new();
    let mut push = |n: &Node| -> Result<(), Diagnostic> {
        let s = match &n.kind {
            NodeKind::Bool(_) => written_text(n),
            _ => string(n, "tags")?,
        };
        for t in s.split(',') {
            let t = t.trim();
            if !t.is_empty() && !out.iter().any(|o: &String| o == t) {
                out.push(t.to_string());
            }
        }
        Ok(())
    };
    match &node.kind {
        NodeKind::Null => {}
        NodeKind::Seq(items) => {
            for n in items {
                push(n)?;
            }
        }
        _ => push(node)?,
    }
    Ok(out)
}

/// Conditions (`when`, `changed_when`, `failed_when`, `until`): a string, a
/// boolean, or a list of those. Booleans stay booleans (results quote them).
pub fn conditions(node: &Node, what: &str) -> Result<Vec<Condition>, Diagnostic> {
    let one = |n: &Node| -> Result<Condition, Diagnostic> {
        match &n.kind {
            NodeKind::Bool(b) => Ok(Condition::literal(*b)),
            NodeKind::Int(i) => Ok(Condition::number(i.to_string()).at(n.span())),
            NodeKind::Float(f) => Ok(Condition::number(f.to_string()).at(n.span())),
            NodeKind::Str {
                value,
                unsafe_: true,
                ..
            } => Ok(Condition::untrusted(value.clone()).at(n.span())),
            NodeKind::Str { value, .. } => Ok(Condition::expr(value.clone()).at(n.span())),
            _ => Err(n.error(format!(
                "`{what}` must be a condition (a string), found {}",
                n.type_name()
            ))),
        }
    };
    match &node.kind {
        NodeKind::Null => Ok(vec![]),
        NodeKind::Seq(items) => items.iter().map(one).collect(),
        _ => Ok(vec![one(node)?]),
    }
}

/// `vars`: a mapping (or the old list-of-mappings form).
pub fn var_map(node: &Node, what: &str) -> Result<VarMap, Diagnostic> {
    let mut out = VarMap::new();
    match &node.kind {
        NodeKind::Null => {}
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                out.insert(key_string(k)?, v.to_value());
            }
        }
        NodeKind::Seq(items) => {
            for item in items {
                out.extend(var_map(item, what)?);
            }
        }
        _ => {
            return Err(node.error(format!(
                "`{what}` must be a mapping, found {}",
                node.type_name()
            )))
        }
    }
    Ok(out)
}

/// A mapping key as a string (numbers and booleans are written back as text).
pub fn key_string(k: &Node) -> Result<String, Diagnostic> {
    match &k.kind {
        NodeKind::Str { value, .. } => Ok(value.clone()),
        NodeKind::Int(i) => Ok(i.to_string()),
        NodeKind::Bool(_) | NodeKind::Float(_) => {
            Ok(written_text(k).trim_end_matches(':').to_string())
        }
        NodeKind::Null => Ok(String::new()),
        _ => Err(k.error(format!(
            "a mapping key must be a string, found {}",
            k.type_name()
        ))),
    }
}

/// The node must be a mapping.
pub fn mapping<'a>(node: &'a Node, what: &str) -> Result<&'a [(Node, Node)], Diagnostic> {
    node.as_map().ok_or_else(|| {
        node.error(format!(
            "{what} must be a mapping, found {}",
            node.type_name()
        ))
    })
}

/// A task list: a list, or null (empty).
pub fn task_list<'a>(node: Option<&'a Node>, what: &str) -> Result<&'a [Node], Diagnostic> {
    match node {
        None => Ok(&[]),
        Some(n) if n.is_null() => Ok(&[]),
        Some(n) => n.as_seq().ok_or_else(|| {
            n.error(format!(
                "`{what}` must be a list of tasks, found {}",
                n.type_name()
            ))
            .hint("start each task with `- ` (a YAML list item)")
        }),
    }
}

/// Keyword values shared by tasks, blocks and role entries. `None` means "not
/// set here" (inherit).
#[derive(Debug, Clone, Default)]
pub struct Keywords {
    pub name: Option<String>,
    pub when: Vec<Condition>,
    pub tags: Vec<String>,
    pub vars: VarMap,
    pub become_: BecomeSettings,
    pub environment: Option<Value>,
    pub ignore_errors: Option<bool>,
    pub ignore_unreachable: Option<bool>,
    pub no_log: Option<bool>,
    pub check_mode: Option<bool>,
    pub diff: Option<bool>,
    pub delegate_to: Option<String>,
    pub delegate_facts: Option<bool>,
    pub run_once: Option<bool>,
    pub any_errors_fatal: Option<bool>,
    pub throttle: Option<Value>,
    pub timeout: Option<Value>,
    pub loop_: Option<LoopSpec>,
    pub loop_control: LoopControl,
    pub register: Option<String>,
    pub notify: Vec<String>,
    pub listen: Vec<String>,
    pub changed_when: Option<Vec<Condition>>,
    pub failed_when: Option<Vec<Condition>>,
    pub until: Option<Vec<Condition>>,
    pub retries: Option<Value>,
    pub delay: Option<Value>,
    pub async_: Option<Value>,
    pub poll: Option<Value>,
    /// Where the `when:` key was, for warnings.
    pub when_span: Option<Span>,
    /// Boolean keywords written as templates (`ignore_errors: "{{ x }}"`),
    /// raw: templated per host when the task runs.
    pub late: Vec<(String, Value)>,
}

impl Keywords {
    /// Whether keyword `key`, one that may be a template, was set here
    /// plainly: a plain value replaces a template inherited from above.
    pub fn sets_plainly(&self, key: &str) -> bool {
        match key {
            "become" => self.become_.become_.is_some(),
            "ignore_errors" => self.ignore_errors.is_some(),
            "ignore_unreachable" => self.ignore_unreachable.is_some(),
            "no_log" => self.no_log.is_some(),
            "check_mode" => self.check_mode.is_some(),
            "diff" => self.diff.is_some(),
            "delegate_facts" => self.delegate_facts.is_some(),
            "run_once" => self.run_once.is_some(),
            "any_errors_fatal" => self.any_errors_fatal.is_some(),
            _ => false,
        }
    }
}

/// Reads one keyword into `kw`. Returns false if `key` is not a keyword this
/// reader handles (the caller decides whether it is a module).
pub fn read_keyword(
    kw: &mut Keywords,
    key: &str,
    key_node: &Node,
    v: &Node,
    warnings: &mut Vec<Diagnostic>,
) -> Result<bool, Diagnostic> {
    if keywords::late(TASK, key) {
        if let NodeKind::Str { value, .. } = &v.kind {
            if crate::template::is_template(value) {
                kw.late.retain(|(k, _)| k != key);
                kw.late.push((key.to_string(), v.to_value()));
                return Ok(true);
            }
        }
    }
    match key {
        "name" => kw.name = opt_string(Some(v), "name")?,
        "when" => {
            kw.when = conditions(v, "when")?;
            kw.when_span = Some(v.span());
            if kw
                .when
                .iter()
                .any(|c| c.as_str().contains("{{") || c.as_str().contains("{%"))
            {
                warnings.push(
                    v.error("`when` is already a Jinja expression; it should not contain `{{ }}`")
                        .hint("write `when: foo == 1`, not `when: \"{{ foo }} == 1\"`"),
                );
            }
        }
        "tags" => kw.tags = tags(v)?,
        "vars" => kw.vars = var_map(v, "vars")?,
        "become" => kw.become_.become_ = opt_bool(Some(v), "become")?,
        "become_user" => kw.become_.become_user = opt_string(Some(v), "become_user")?,
        "become_method" => {
            let m = opt_string(Some(v), "become_method")?;
            if let Some(m) = &m {
                if !keywords::BECOME_METHODS.contains(&m.as_str())
                    && !crate::template::is_template(m)
                {
                    let mut w = v.error(format!(
                        "unknown become_method `{m}`; Keel supports sudo and su"
                    ));
                    if let Some(s) = suggest(m, keywords::BECOME_METHODS.iter().copied()) {
                        w = w.hint(format!("did you mean `{s}`?"));
                    }
                    warnings.push(w);
                }
            }
            kw.become_.become_method = m;
        }
        "become_flags" => kw.become_.become_flags = opt_string(Some(v), "become_flags")?,
        "become_exe" | "collections" | "debugger" | "module_defaults" => {}
        "environment" => kw.environment = (!v.is_null()).then(|| v.to_value()),
        "ignore_errors" => kw.ignore_errors = opt_bool(Some(v), "ignore_errors")?,
        "ignore_unreachable" => kw.ignore_unreachable = opt_bool(Some(v), "ignore_unreachable")?,
        "no_log" => kw.no_log = opt_bool(Some(v), "no_log")?,
        "check_mode" => kw.check_mode = opt_bool(Some(v), "check_mode")?,
        "diff" => kw.diff = opt_bool(Some(v), "diff")?,
        "delegate_to" => kw.delegate_to = opt_string(Some(v), "delegate_to")?,
        "delegate_facts" => kw.delegate_facts = opt_bool(Some(v), "delegate_facts")?,
        "run_once" => kw.run_once = opt_bool(Some(v), "run_once")?,
        "any_errors_fatal" => kw.any_errors_fatal = opt_bool(Some(v), "any_errors_fatal")?,
        "throttle" => kw.throttle = Some(v.to_value()),
        "timeout" => kw.timeout = Some(v.to_value()),
        // Connection settings become the matching connection variables.
        "connection" | "remote_user" | "port" => {
            let var = keywords::connection_variable(key).expect("a connection keyword");
            kw.vars.insert(var.into(), v.to_value());
        }
        "loop" => set_loop(kw, LoopKind::Loop, key_node, v, warnings)?,
        "loop_control" => kw.loop_control = loop_control(v)?,
        "register" => {
            kw.register = opt_string(Some(v), "register")?;
            if let Some(r) = &kw.register {
                let mut chars = r.chars();
                let valid = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(v
                        .error(format!("Invalid 'register' specified: Invalid variable name '{r}'"))
                        .hint("a variable name starts with a letter or `_` and holds only letters, digits and `_`"));
                }
            }
        }
        "notify" => kw.notify = string_list(v, "notify")?,
        "listen" => kw.listen = string_list(v, "listen")?,
        "changed_when" => kw.changed_when = Some(conditions(v, "changed_when")?),
        "failed_when" => kw.failed_when = Some(conditions(v, "failed_when")?),
        "until" => kw.until = Some(conditions(v, "until")?),
        "retries" => kw.retries = Some(v.to_value()),
        "delay" => kw.delay = Some(v.to_value()),
        "async" => kw.async_ = Some(v.to_value()),
        "poll" => kw.poll = Some(v.to_value()),
        _ => {
            if let Some(lookup) = key.strip_prefix("with_") {
                set_loop(
                    kw,
                    LoopKind::With(lookup.to_string()),
                    key_node,
                    v,
                    warnings,
                )?;
            } else {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn set_loop(
    kw: &mut Keywords,
    kind: LoopKind,
    key_node: &Node,
    v: &Node,
    warnings: &mut Vec<Diagnostic>,
) -> Result<(), Diagnostic> {
    let name = |k: &LoopKind| match k {
        LoopKind::Loop => "loop".to_string(),
        LoopKind::With(l) => format!("with_{l}"),
    };
    if let Some(prev) = &kw.loop_ {
        return Err(key_node
            .error(format!(
                "a task can loop only once, but it has both `{}` and `{}`",
                name(&prev.kind),
                name(&kind)
            ))
            .hint("keep one of them (`loop:` replaces `with_items:`)"));
    }
    if let (LoopKind::With(l), Some(s)) = (&kind, v.as_str()) {
        let bare = !crate::template::is_template(s)
            && !s.contains(char::is_whitespace)
            && s.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
        if bare
            && matches!(
                l.as_str(),
                "items" | "list" | "dict" | "nested" | "together" | "subelements" | "indexed_items"
            )
        {
            warnings.push(
                v.error(format!(
                    "`with_{l}: {s}` loops over the literal string `{s}`, not the variable"
                ))
                .hint(format!(
                    "bare variables were removed in Ansible 2: write `with_{l}: \"{{{{ {s} }}}}\"`"
                )),
            );
        }
    }
    kw.loop_ = Some(LoopSpec {
        kind,
        value: v.to_value(),
    });
    Ok(())
}

fn loop_control(node: &Node) -> Result<LoopControl, Diagnostic> {
    let mut lc = LoopControl::default();
    for (k, v) in mapping(node, "`loop_control`")? {
        let key = key_string(k)?;
        match key.as_str() {
            "loop_var" => lc.loop_var = opt_string(Some(v), "loop_var")?,
            "index_var" => lc.index_var = opt_string(Some(v), "index_var")?,
            "label" => lc.label = opt_string(Some(v), "label")?,
            "pause" => {
                lc.pause = match &v.kind {
                    NodeKind::Int(i) => Some(*i as f64),
                    NodeKind::Float(f) => Some(*f),
                    NodeKind::Str { value, .. } => value.trim().parse().ok(),
                    _ => None,
                };
                if lc.pause.is_none() {
                    return Err(v.error("`loop_control.pause` must be a number of seconds"));
                }
            }
            "extended" => lc.extended = boolean(v, "extended")?,
            "extended_allitems" => lc.extended_allitems = boolean(v, "extended_allitems")?,
            "break_when" => lc.break_when = Some(conditions(v, "break_when")?),
            other => {
                const KEYS: &[&str] = &[
                    "loop_var",
                    "index_var",
                    "label",
                    "pause",
                    "extended",
                    "extended_allitems",
                    "break_when",
                ];
                let mut e = k.error(format!("unknown `loop_control` option `{other}`"));
                if let Some(s) = suggest(other, KEYS.iter().copied()) {
                    e = e.hint(format!("did you mean `{s}`?"));
                }
                return Err(e);
            }
        }
    }
    Ok(lc)
}

/// What a task mapping is.
pub enum RawKind<'a> {
    Task {
        /// Canonical short name.
        action: String,
        action_as_written: String,
        args: VarMap,
        /// The node of the module key (for errors).
        action_node: &'a Node,
        /// `local_action:` was used.
        local: bool,
    },
    Block {
        block: &'a Node,
        rescue: Option<&'a Node>,
        always: Option<&'a Node>,
    },
}

pub struct RawTask<'a> {
    pub kind: RawKind<'a>,
    pub kw: Keywords,
}

/// Reads a task (or block) mapping: picks out the one module, splits its
/// arguments, and reads every keyword.
pub fn read_task<'a>(
    node: &'a Node,
    warnings: &mut Vec<Diagnostic>,
    handler: bool,
    modules: &mut ModuleSearch,
) -> Result<RawTask<'a>, Diagnostic> {
    let entries = node.as_map().ok_or_else(|| {
        node.error(format!(
            "a task must be a mapping, found {}",
            node.type_name()
        ))
        .hint("a task looks like `- name: ...` followed by a module such as `command: ...`")
    })?;
    let is_block = node.get("block").is_some();
    let mut kw = Keywords::default();
    let mut module: Option<(&Node, &Node, String)> = None; // key node, value node, name
    let mut action_kw: Option<(&Node, &Node, bool)> = None; // `action`/`local_action`
    let mut args_node: Option<&Node> = None;
    let mut unknown: Vec<(&Node, String)> = Vec::new();

    for (k, v) in entries {
        let key = key_string(k)?;
        if is_block {
            if matches!(key.as_str(), "block" | "rescue" | "always") {
                continue;
            }
            if !keywords::accepts(BLOCK, &key) {
                let mut e = k.error(format!("'{key}' is not a valid attribute for a Block"));
                if let Some(s) = suggest(&key, keywords::names(BLOCK)) {
                    e = e.hint(format!("did you mean `{s}`?"));
                } else if keywords::is_module(&key) {
                    e = e.hint(
                        "a block holds tasks under `block:`; move the module into a task there",
                    );
                }
                return Err(e);
            }
            read_keyword(&mut kw, &key, k, v, warnings)?;
            continue;
        }
        match key.as_str() {
            "action" | "local_action" => {
                if let Some((prev, _, _)) = action_kw {
                    return Err(k.error(format!(
                        "conflicting action statements: {} and {key}",
                        prev.as_str().unwrap_or("")
                    )));
                }
                action_kw = Some((k, v, key == "local_action"));
                continue;
            }
            "args" => {
                args_node = Some(v);
                continue;
            }
            "listen" if !handler => {
                return Err(k
                    .error("`listen` is only valid on handlers")
                    .hint("move this task under `handlers:`"));
            }
            _ => {}
        }
        if keywords::accepts(TASK, &key) || key.starts_with("with_") {
            read_keyword(&mut kw, &key, k, v, warnings)?;
            continue;
        }
        if keywords::is_module(&key) || modules.claims(&key) {
            if let Some((_, _, prev_name)) = &module {
                return Err(k
                    .error(format!(
                        "conflicting action statements: `{prev_name}` and `{key}`"
                    ))
                    .hint("a task runs exactly one module; split it into two tasks"));
            }
            module = Some((k, v, key));
            continue;
        }
        unknown.push((k, key));
    }

    if is_block {
        let block = node.get("block").expect("checked above");
        return Ok(RawTask {
            kind: RawKind::Block {
                block,
                rescue: node.get("rescue"),
                always: node.get("always"),
            },
            kw,
        });
    }

    // Unknown keys: a typo of a keyword, a typo of a module, or an unknown module.
    if let Some((k, key)) = unknown.first() {
        if let Some(s) = suggest(key, keywords::names(TASK)) {
            return Err(k
                .error(format!("`{key}` is not a valid task keyword"))
                .hint(format!("did you mean `{s}`?")));
        }
        let looked = modules.looked_in(key);
        let modules = keywords::all_module_names();
        let short = registry::canonical_name(key);
        if module.is_some() || action_kw.is_some() {
            let mut e = k.error(format!("`{key}` is not a valid task keyword"));
            if let Some(s) = suggest(short, modules.iter().copied()) {
                e = e.hint(format!("did you mean `{s}`? (a task runs only one module)"));
            }
            return Err(e);
        }
        let near = keywords::nearest(short, &modules, 3);
        let last = key.rsplit('.').next().unwrap_or(key);
        let hint = if short.contains('.') && modules.contains(&last) {
            let collection = key.rsplit_once('.').map(|(c, _)| c).unwrap_or("");
            format!("`{collection}` has no module `{last}` that Keel implements natively; did you mean `ansible.builtin.{last}`?")
        } else if short.contains('.') {
            format!(
                "Keel implements modules from {}; nearest known modules: {}",
                registry::native_collections().join(", "),
                keywords::nearest(last, &modules, 3).join(", ")
            )
        } else {
            match suggest(short, modules.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("nearest known modules: {}", near.join(", ")),
            }
        };
        return Err(k
            .error(format!("couldn't resolve module/action '{key}'"))
            .hint(format!("{hint}; {looked}")));
    }

    let (key_node, value_node, written, local) = match (module, action_kw) {
        (Some((k, _, name)), Some((ak, _, _))) => {
            return Err(ak
                .error(format!(
                    "conflicting action statements: `{}` and `{name}`",
                    ak.as_str().unwrap_or("action")
                ))
                .hint(format!(
                    "`{name}:` at line {} already names the module",
                    k.pos.line
                )));
        }
        (Some((k, v, name)), None) => (k, v, name, false),
        (None, Some((ak, av, local))) => {
            let (name, rest) = action_form(av)?;
            // `action: "{{ module_to_run }}"` names its module per host at
            // run time; the executor templates and checks it then.
            let templated = crate::template::is_template(&name);
            if !templated && !keywords::is_module(&name) && !modules.claims(&name) {
                let looked = modules.looked_in(&name);
                let modules = keywords::all_module_names();
                let mut e = av.error(format!("couldn't resolve module/action '{name}'"));
                e = match suggest(registry::canonical_name(&name), modules.iter().copied()) {
                    Some(s) => e.hint(format!("did you mean `{s}`? {looked}")),
                    None => e.hint(looked),
                };
                return Err(e);
            }
            let _ = ak;
            let action = if templated {
                name.clone()
            } else {
                modules.action_name(&name)
            };
            let mut args = match rest {
                // Free-form text is the module's business once it is known.
                ActionArgs::Text(t) if templated => crate::kv::parse_kv(&action, &t).0,
                ActionArgs::Text(t) => kv_args(&action, &t, av, warnings)?,
                ActionArgs::Map(m) => m,
            };
            merge_args(&mut args, args_node, &action, warnings)?;
            reserved_args(&name, &args, av)?;
            if !templated {
                check_arg_names(&action, &args, av, args_node, warnings);
            }
            return Ok(RawTask {
                kind: RawKind::Task {
                    action,
                    action_as_written: name,
                    args,
                    action_node: av,
                    local,
                },
                kw,
            });
        }
        (None, None) => {
            return Err(node.error("this task has no module or action").hint(
                "add a module such as `command: ...`, or check the indentation of its arguments",
            ));
        }
    };
    let action = modules.action_name(&written);
    let mut args = match &value_node.kind {
        NodeKind::Null => VarMap::new(),
        NodeKind::Map(_) => var_map(value_node, &written)?,
        NodeKind::Str { value, .. } => kv_args(&action, value, value_node, warnings)?,
        NodeKind::Int(_) | NodeKind::Float(_) | NodeKind::Bool(_)
            if RAW_PARAM_ACTIONS.contains(&action.as_str()) =>
        {
            let mut m = VarMap::new();
            m.insert("_raw_params".into(), Value::from(written_text(value_node)));
            m
        }
        _ => {
            return Err(value_node.error(format!(
                "the arguments of `{written}` must be a mapping or `key=value` text, found {}",
                value_node.type_name()
            )))
        }
    };
    merge_args(&mut args, args_node, &action, warnings)?;
    reserved_args(&written, &args, value_node)?;
    check_arg_names(&action, &args, value_node, args_node, warnings);
    Ok(RawTask {
        kind: RawKind::Task {
            action,
            action_as_written: written,
            args,
            action_node: key_node,
            local,
        },
        kw,
    })
}

enum ActionArgs {
    Text(String),
    Map(VarMap),
}

/// `action: copy src=a dest=b` or `action: {module: copy, src: a}`.
fn action_form(v: &Node) -> Result<(String, ActionArgs), Diagnostic> {
    match &v.kind {
        NodeKind::Str { value, .. } => {
            let value = value.trim();
            // A templated name (`"{{ m }} args"`) may hold spaces: split as
            // arguments are split, keeping `{{ }}` whole.
            let first = crate::kv::split_args(value).into_iter().next();
            let (name, rest) = match first
                .as_deref()
                .and_then(|f| Some((f, value.strip_prefix(f)?)))
            {
                Some((f, rest)) if f.contains("{{") => (f, rest),
                _ => value.split_once(char::is_whitespace).unwrap_or((value, "")),
            };
            Ok((name.to_string(), ActionArgs::Text(rest.trim().to_string())))
        }
        NodeKind::Map(_) => {
            let mut m = var_map(v, "action")?;
            let name = m
                .shift_remove("module")
                .and_then(|n| n.as_str().map(str::to_string))
                .ok_or_else(|| v.error("`action` given as a mapping needs a `module` key"))?;
            // An `args` key inside the mapping holds more arguments (a
            // mapping, or `key=value` text); ansible-core merges them over
            // the others.
            if let Some(more) = m.shift_remove("args") {
                match more.as_str() {
                    Some(text) => m.extend(crate::kv::parse_kv(&name, text).0),
                    None if more.kind() == minijinja::value::ValueKind::Map => {
                        for k in more.try_iter().into_iter().flatten() {
                            let item = more.get_item(&k).unwrap_or_default();
                            m.insert(k.to_string(), item);
                        }
                    }
                    None => return Err(v.error("`args` inside `action` must be a mapping")),
                }
            }
            Ok((name, ActionArgs::Map(m)))
        }
        _ => Err(v.error(format!(
            "`action` must be a string or mapping, found {}",
            v.type_name()
        ))),
    }
}

/// Where a task whose arguments are one whole template (`debug: "{{ my_args
/// }}"`) keeps it: the executor renders it to a mapping at run time and lays
/// the task's other arguments over it, as ansible-core does.
pub const VARIABLE_PARAMS: &str = "_variable_params";

/// Free-form text given to an action that takes none is kept (as
/// `_raw_params`) and warned about: ansible-core fails such a task only when
/// it runs (`ignore_errors` and `when` apply), and so does the executor.
fn kv_args(
    action: &str,
    text: &str,
    node: &Node,
    warnings: &mut Vec<Diagnostic>,
) -> Result<VarMap, Diagnostic> {
    let whole = text.trim();
    if !RAW_PARAM_ACTIONS.contains(&action)
        && whole.starts_with("{{")
        && whole.ends_with("}}")
        && crate::kv::split_args(whole).len() == 1
    {
        let mut args = VarMap::new();
        args.insert(VARIABLE_PARAMS.into(), Value::from(whole));
        return Ok(args);
    }
    let (args, has_raw) = crate::kv::parse_kv(action, text);
    if has_raw && !RAW_PARAM_ACTIONS.contains(&action) {
        let raw = args
            .get("_raw_params")
            .map(|v| v.to_string())
            .unwrap_or_default();
        warnings.push(
            node.error(format!(
                "`{action}` takes `key=value` arguments, but `{raw}` is not one; \
                 the task will fail if it runs"
            ))
            .hint(format!(
                "only {} accept free-form text",
                crate::kv::FREE_FORM_MODULES.join(", ")
            )),
        );
    }
    Ok(args)
}

/// Argument names the module does not declare fail here, before anything
/// connects, pointing at the key itself when the arguments are a mapping.
/// (A whole-argument template, known only at run time, is checked there.)
fn check_arg_names(
    action: &str,
    args: &VarMap,
    at: &Node,
    args_node: Option<&Node>,
    warnings: &mut Vec<Diagnostic>,
) {
    if args.contains_key(VARIABLE_PARAMS) {
        return;
    }
    let keys = args
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "_raw_params");
    let Some(bad) = registry::check_arg_names(action, keys) else {
        return;
    };
    let node = [Some(at), args_node]
        .into_iter()
        .flatten()
        .filter_map(Node::as_map)
        .flat_map(|m| m.iter())
        .find(|(k, _)| k.as_str().is_some_and(|k| bad.names.iter().any(|n| n == k)))
        .map(|(k, _)| k)
        .unwrap_or(at);
    let mut e = node.error(format!("{} The task will fail if it runs.", bad.message));
    if let Some(s) = bad.suggestion {
        e = e.hint(format!("did you mean `{s}`?"));
    }
    warnings.push(e);
}

/// `args:` merges under the module's own arguments (the module's win).
/// Arguments named `_ansible_*` are ansible-core's own (it passes them to
/// modules); a task may not set them.
fn reserved_args(action: &str, args: &VarMap, at: &Node) -> Result<(), Diagnostic> {
    match args.keys().find(|k| k.starts_with("_ansible_")) {
        Some(k) => Err(at.error(format!(
            "Invalid parameter specified beginning with keyword '_ansible_' for action '{action}': '{k}'. \
             The prefix '_ansible_' is reserved for internal use only."
        ))),
        None => Ok(()),
    }
}

fn merge_args(
    args: &mut VarMap,
    args_node: Option<&Node>,
    action: &str,
    warnings: &mut Vec<Diagnostic>,
) -> Result<(), Diagnostic> {
    let Some(n) = args_node else { return Ok(()) };
    let extra = match &n.kind {
        NodeKind::Str { value, .. } => kv_args(action, value, n, warnings)?,
        _ => var_map(n, "args")?,
    };
    for (k, v) in extra {
        if !args.contains_key(&k) {
            args.insert(k, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::keywords::{KEYWORDS, ROLE_ENTRY};

    fn node(text: &str) -> Node {
        crate::yaml::load_str("<test>", text, &Default::default())
            .unwrap()
            .remove(0)
    }

    /// The keyword table and this reader agree: every keyword of a task,
    /// block or role entry is read by [`read_keyword`] (except the few the
    /// task and block readers take themselves), and every one that may be a
    /// template can also be told apart when set plainly.
    #[test]
    fn read_keyword_reads_every_keyword_below_play() {
        let own = [
            "block",
            "rescue",
            "always",
            "role",
            "action",
            "local_action",
            "args",
        ];
        let mut read = 0;
        for k in KEYWORDS
            .iter()
            .filter(|k| k.on & (TASK | BLOCK | ROLE_ENTRY) != 0)
        {
            if own.contains(&k.name) {
                continue;
            }
            let v = node("~");
            let mut kw = Keywords::default();
            let r = read_keyword(&mut kw, k.name, &v, &v, &mut Vec::new());
            assert!(!matches!(r, Ok(false)), "read_keyword ignores `{}`", k.name);
            read += 1;
        }
        assert!(read > 30, "only {read} keywords read");
        for k in KEYWORDS.iter().filter(|k| k.late & TASK != 0) {
            let (plain, templ) = (node("true"), node("'{{ x }}'"));
            let mut kw = Keywords::default();
            assert!(!kw.sets_plainly(k.name));
            read_keyword(&mut kw, k.name, &templ, &templ, &mut Vec::new()).unwrap();
            assert!(!kw.sets_plainly(k.name), "`{}` as a template", k.name);
            assert_eq!(kw.late.len(), 1, "`{}` is not kept late", k.name);
            read_keyword(&mut kw, k.name, &plain, &plain, &mut Vec::new()).unwrap();
            assert!(kw.sets_plainly(k.name), "sets_plainly misses `{}`", k.name);
        }
    }
}
