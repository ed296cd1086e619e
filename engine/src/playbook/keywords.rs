//! The playbook vocabulary: which keys are play, block, task and role-entry
//! keywords ([`KEYWORDS`], each keyword once, with where it may be written
//! and where it may be a template resolved at run time) and which module
//! names Keel knows. `raw.rs`, `roles.rs` and `resolve.rs` check keys
//! against it; the executor gets the late keywords it must template from
//! the plan. (The `key=value` argument syntax is
//! [`crate::kv`].)

use crate::modules::registry;

/// Where a keyword may be written (`on`), and where a template may stand
/// for its value until run time (`late`): bits of [`PLAY`], [`TASK`],
/// [`BLOCK`] and [`ROLE_ENTRY`].
#[derive(Debug, Clone, Copy)]
pub struct Keyword {
    pub name: &'static str,
    pub on: u8,
    /// [`PLAY`]: templated when the play starts (`strategy: "{{ s }}"`).
    /// [`TASK`]: templated per host when the task runs, wherever the task
    /// keyword reader reads it (tasks, blocks, role entries).
    pub late: u8,
}

pub const PLAY: u8 = 1;
pub const TASK: u8 = 2;
pub const BLOCK: u8 = 4;
/// A `roles:` (or `dependencies:`) entry: these keys are keywords, every
/// other key is a role parameter.
pub const ROLE_ENTRY: u8 = 8;

const ALL: u8 = PLAY | TASK | BLOCK | ROLE_ENTRY;
const BELOW_PLAY: u8 = TASK | BLOCK | ROLE_ENTRY;

const fn kw(name: &'static str, on: u8, late: u8) -> Keyword {
    Keyword { name, on, late }
}

/// Every play, block, task and role-entry keyword, each once. Keywords a
/// task takes besides these are `with_<lookup>` and its one module.
///
/// The play keywords that may be templates are templated at play start in
/// this table's order (the first failure is the one reported).
pub const KEYWORDS: &[Keyword] = &[
    // What the thing is.
    kw("name", ALL, 0),
    kw("hosts", PLAY, 0),
    kw("block", BLOCK, 0),
    kw("rescue", BLOCK, 0),
    kw("always", BLOCK, 0),
    kw("role", ROLE_ENTRY, 0),
    // Variables and the play's sections.
    kw("vars", ALL, 0),
    kw("tags", ALL, 0),
    kw("vars_files", PLAY, 0),
    kw("vars_prompt", PLAY, 0),
    kw("roles", PLAY, 0),
    kw("pre_tasks", PLAY, 0),
    kw("tasks", PLAY, 0),
    kw("post_tasks", PLAY, 0),
    kw("handlers", PLAY, 0),
    // How a play runs its hosts, and what stops them.
    kw("strategy", PLAY, PLAY),
    kw("serial", PLAY, PLAY),
    kw("order", PLAY, PLAY),
    kw("any_errors_fatal", ALL, PLAY | TASK),
    kw("gather_facts", PLAY, PLAY),
    kw("gather_subset", PLAY, 0),
    kw("gather_timeout", PLAY, 0),
    kw("fact_path", PLAY, 0),
    kw("ignore_errors", ALL, PLAY | TASK),
    kw("ignore_unreachable", PLAY | TASK | BLOCK, PLAY | TASK),
    kw("force_handlers", PLAY, PLAY),
    kw("run_once", ALL, PLAY | TASK),
    kw("check_mode", ALL, PLAY | TASK),
    kw("diff", ALL, PLAY | TASK),
    kw("no_log", ALL, PLAY | TASK),
    kw("max_fail_percentage", PLAY, PLAY),
    // A task's own flow.
    kw("action", TASK, 0),
    kw("local_action", TASK, 0),
    kw("args", TASK, 0),
    kw("when", BELOW_PLAY, 0),
    kw("loop", TASK, 0),
    kw("loop_control", TASK, 0),
    kw("register", TASK, 0),
    kw("notify", TASK | BLOCK, 0),
    kw("listen", TASK, 0),
    kw("changed_when", TASK, 0),
    kw("failed_when", TASK, 0),
    kw("until", TASK, 0),
    kw("retries", TASK, 0),
    kw("delay", TASK, 0),
    kw("async", TASK, 0),
    kw("poll", TASK, 0),
    kw("delegate_to", BELOW_PLAY, 0),
    kw("delegate_facts", TASK | BLOCK, TASK),
    // Privilege and connection.
    kw("become", ALL, TASK),
    kw("become_user", ALL, 0),
    kw("become_method", ALL, 0),
    kw("become_flags", ALL, 0),
    kw("become_exe", PLAY | TASK | BLOCK, 0),
    kw("connection", ALL, 0),
    kw("remote_user", ALL, 0),
    kw("port", ALL, 0),
    kw("environment", ALL, 0),
    // The rest.
    kw("module_defaults", PLAY | TASK | BLOCK, 0),
    kw("collections", ALL, 0),
    kw("throttle", PLAY | TASK | BLOCK, 0),
    kw("timeout", PLAY | TASK | BLOCK, 0),
    kw("debugger", ALL, 0),
];

/// Whether `name` is a keyword at `place` (one of [`PLAY`], [`TASK`],
/// [`BLOCK`], [`ROLE_ENTRY`]).
pub fn accepts(place: u8, name: &str) -> bool {
    KEYWORDS.iter().any(|k| k.name == name && k.on & place != 0)
}

/// Whether a template may stand for keyword `name`'s value at `place`
/// ([`PLAY`] or [`TASK`]) until run time.
pub fn late(place: u8, name: &str) -> bool {
    KEYWORDS
        .iter()
        .any(|k| k.name == name && k.late & place != 0)
}

/// The keywords of `place`, in table order: for "did you mean" and for
/// templating late play keywords in order.
pub fn names(place: u8) -> impl Iterator<Item = &'static str> {
    KEYWORDS
        .iter()
        .filter(move |k| k.on & place != 0)
        .map(|k| k.name)
}

/// The keywords of `place` that may be templates, in table order.
pub fn late_names(place: u8) -> impl Iterator<Item = &'static str> {
    KEYWORDS
        .iter()
        .filter(move |k| k.late & place != 0)
        .map(|k| k.name)
}

/// The connection variable a connection keyword sets (`remote_user:` is
/// `ansible_user`), at any level; `user` is the play's deprecated alias of
/// `remote_user`.
pub fn connection_variable(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "connection" => "ansible_connection",
        "remote_user" | "user" => "ansible_user",
        "port" => "ansible_port",
        _ => return None,
    })
}

/// `become_method` values we know of (Keel runs `sudo` and `su`).
pub const BECOME_METHODS: &[&str] = &[
    "sudo",
    "su",
    "doas",
    "pbrun",
    "pfexec",
    "dzdo",
    "ksu",
    "runas",
    "machinectl",
    "sesu",
];

/// Actions that accept text which is not `key=value` (stored in `_raw_params`).
pub const RAW_PARAM_ACTIONS: &[&str] = &[
    "command",
    "shell",
    "raw",
    "script",
    "include_vars",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
    "import_playbook",
    "add_host",
    "group_by",
    "set_fact",
    "meta",
];

/// Whether `name` (short or fully qualified) names a native module or an
/// executor action. The module registry is the only list: a name is known
/// only once it has an implementation. (Python modules found outside Keel
/// are the resolver's [`ModuleSearch`](crate::modules::python::ModuleSearch).)
pub fn is_module(name: &str) -> bool {
    let short = registry::canonical_name(name);
    // Only bare names and known collections count: `foo.bar.copy` is not `copy`.
    if short.contains('.') {
        return false;
    }
    registry::is_action(name)
}

/// Every known module name (short form), for suggestions.
pub fn all_module_names() -> Vec<&'static str> {
    registry::module_names()
}

/// The `n` candidates most similar to `word`, best first.
pub fn nearest<'a>(word: &str, candidates: &[&'a str], n: usize) -> Vec<&'a str> {
    let mut scored: Vec<(&str, f64)> = candidates
        .iter()
        .map(|c| (*c, strsim::jaro_winkler(word, c)))
        .collect();
    scored.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(b.0))
    });
    scored.into_iter().take(n).map(|(c, _)| c).collect()
}
