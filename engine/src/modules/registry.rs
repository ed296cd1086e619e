//! Module name resolution: short names, `ansible.builtin.*` and other
//! collections' fully qualified names map to one implementation.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::ModuleRef;

/// Collections whose modules we implement under their short names.
const KNOWN_COLLECTIONS: &[&str] = &[
    "ansible.builtin.",
    "ansible.legacy.",
    "ansible.posix.",
    "community.general.",
    "community.mysql.",
    "community.crypto.",
];

fn table() -> &'static HashMap<&'static str, ModuleRef> {
    static TABLE: OnceLock<HashMap<&'static str, ModuleRef>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut m: HashMap<&'static str, ModuleRef> = HashMap::new();
        super::commands::register(&mut m);
        super::files::register(&mut m);
        super::utility::register(&mut m);
        super::system::register(&mut m);
        super::packages::register(&mut m);
        super::net::register(&mut m);
        super::source::register(&mut m);
        super::database::register(&mut m);
        m
    })
}

/// Names the executor handles itself rather than through a module.
pub const EXECUTOR_ACTIONS: &[&str] = &[
    "meta",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
    "import_playbook",
    "include_vars",
    "set_fact",
    "add_host",
    "group_by",
];

/// Strips a known collection prefix: `ansible.builtin.copy` → `copy`.
pub fn canonical_name(name: &str) -> &str {
    for prefix in KNOWN_COLLECTIONS {
        if let Some(rest) = name.strip_prefix(prefix) {
            return rest;
        }
    }
    name
}

/// The implementation of a module, by short or fully qualified name.
pub fn lookup(name: &str) -> Option<ModuleRef> {
    table().get(canonical_name(name)).map(Arc::clone)
}

/// Every module and executor action name (short form), for suggestions.
pub fn module_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = table().keys().copied().collect();
    v.extend(EXECUTOR_ACTIONS);
    v.sort_unstable();
    v.dedup();
    v
}

/// Whether a task key names a module or action we know.
pub fn is_action(name: &str) -> bool {
    let c = canonical_name(name);
    table().contains_key(c) || EXECUTOR_ACTIONS.contains(&c)
}
