//! The playbook vocabulary: which keys are play, block, task and role-entry
//! keywords and which module names Keel knows. `raw.rs` consults this table
//! when it reads a task mapping. (The `key=value` argument syntax is
//! [`crate::kv`].)

use crate::modules::registry;

/// Every module and action name Keel ships or will ship (short form). Tasks
/// naming one of these resolve even before its implementation lands in the
/// module registry; [`registry::is_action`] is accepted as well.
pub const KNOWN_MODULES: &[&str] = &[
    "command",
    "shell",
    "raw",
    "script",
    "copy",
    "template",
    "file",
    "lineinfile",
    "blockinfile",
    "replace",
    "stat",
    "slurp",
    "fetch",
    "find",
    "debug",
    "set_fact",
    "assert",
    "fail",
    "pause",
    "wait_for",
    "wait_for_connection",
    "ping",
    "setup",
    "apt",
    "apt_repository",
    "apt_key",
    "package",
    "dpkg_selections",
    "debconf",
    "service",
    "systemd",
    "systemd_service",
    "user",
    "group",
    "authorized_key",
    "cron",
    "get_url",
    "uri",
    "unarchive",
    "git",
    "hostname",
    "sysctl",
    "mount",
    "timezone",
    "reboot",
    "modprobe",
    "mysql_db",
    "mysql_user",
    "pip",
    "meta",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
    "import_playbook",
    "include_vars",
    "add_host",
    "group_by",
    "service_facts",
    "package_facts",
    "getent",
    "tempfile",
    "known_hosts",
];

/// Keywords a play accepts.
pub const PLAY_KEYWORDS: &[&str] = &[
    "hosts",
    "name",
    "gather_facts",
    "gather_subset",
    "gather_timeout",
    "fact_path",
    "become",
    "become_user",
    "become_method",
    "become_flags",
    "become_exe",
    "vars",
    "vars_files",
    "vars_prompt",
    "roles",
    "pre_tasks",
    "tasks",
    "post_tasks",
    "handlers",
    "serial",
    "strategy",
    "any_errors_fatal",
    "max_fail_percentage",
    "ignore_unreachable",
    "ignore_errors",
    "force_handlers",
    "check_mode",
    "diff",
    "no_log",
    "run_once",
    "environment",
    "module_defaults",
    "tags",
    "collections",
    "order",
    "connection",
    "remote_user",
    "port",
    "throttle",
    "timeout",
    "debugger",
];

/// Keywords a task accepts (besides `with_<lookup>` and its one module).
pub const TASK_KEYWORDS: &[&str] = &[
    "name",
    "when",
    "loop",
    "loop_control",
    "register",
    "notify",
    "listen",
    "tags",
    "changed_when",
    "failed_when",
    "ignore_errors",
    "ignore_unreachable",
    "until",
    "retries",
    "delay",
    "become",
    "become_user",
    "become_method",
    "become_flags",
    "become_exe",
    "environment",
    "no_log",
    "check_mode",
    "diff",
    "delegate_to",
    "delegate_facts",
    "run_once",
    "throttle",
    "timeout",
    "vars",
    "args",
    "async",
    "poll",
    "any_errors_fatal",
    "collections",
    "debugger",
    "connection",
    "remote_user",
    "port",
    "action",
    "local_action",
    "module_defaults",
];

/// Keywords a block accepts (besides `block`/`rescue`/`always`).
pub const BLOCK_KEYWORDS: &[&str] = &[
    "block",
    "rescue",
    "always",
    "name",
    "when",
    "tags",
    "vars",
    "environment",
    "become",
    "become_user",
    "become_method",
    "become_flags",
    "become_exe",
    "ignore_errors",
    "ignore_unreachable",
    "no_log",
    "delegate_to",
    "delegate_facts",
    "run_once",
    "check_mode",
    "diff",
    "any_errors_fatal",
    "throttle",
    "timeout",
    "collections",
    "debugger",
    "connection",
    "remote_user",
    "port",
    "module_defaults",
    "notify",
];

/// Keys of a `roles:` entry (or a `dependencies:` entry) that are keywords
/// rather than role parameters.
pub const ROLE_ENTRY_KEYWORDS: &[&str] = &[
    "role",
    "name",
    "vars",
    "tags",
    "when",
    "become",
    "become_user",
    "become_method",
    "become_flags",
    "environment",
    "ignore_errors",
    "no_log",
    "delegate_to",
    "run_once",
    "check_mode",
    "diff",
    "any_errors_fatal",
    "collections",
    "debugger",
    "connection",
    "remote_user",
    "port",
];

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

/// Whether `name` (short or fully qualified) names a module or action.
pub fn is_module(name: &str) -> bool {
    let short = registry::canonical_name(name);
    // Only bare names and known collections count: `foo.bar.copy` is not `copy`.
    if short.contains('.') {
        return false;
    }
    KNOWN_MODULES.contains(&short) || registry::is_action(name)
}

/// Every known module name (short form), for suggestions.
pub fn all_module_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = KNOWN_MODULES.to_vec();
    v.extend(registry::module_names());
    v.sort_unstable();
    v.dedup();
    v
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
