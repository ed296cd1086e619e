//! Module name resolution: short names, `ansible.builtin.*` and other
//! collections' fully qualified names map to one implementation.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::ModuleRef;

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
        super::crypto::register(&mut m);
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

/// Strips the collection of a fully qualified name that maps onto a native
/// module (`ansible.builtin.copy` → `copy`, `community.general.ini_file` →
/// `ini_file`); other names are returned as written (`community.general.copy`
/// is not `copy`).
pub fn canonical_name(name: &str) -> &str {
    super::collections::native_short(name).unwrap_or(name)
}

/// A name as ansible-core's messages give it: fully qualified names as
/// written, bare names of native modules with the collection that has them.
pub fn qualified_name(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        super::collections::qualified(name)
    }
}

/// Whether `collection` has a module `short` that maps onto a native one.
pub fn collection_has_native(collection: &str, short: &str) -> bool {
    super::collections::collection_has(collection, short) && table().contains_key(short)
}

/// The collections holding modules Keel implements, for messages.
pub fn native_collections() -> Vec<&'static str> {
    super::collections::native_collections()
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

/// Why a task's argument names do not fit its module: Ansible's message
/// and the accepted name closest to an unknown one, if any is close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedArgs {
    /// The unknown names, sorted.
    pub names: Vec<String>,
    pub message: String,
    pub suggestion: Option<&'static str>,
}

/// Checks argument names against the module's declared
/// [`Params`](super::args::Params): `None` when they all fit, or when the
/// module (or executor action) declares none.
pub fn check_arg_names<'k>(
    action: &str,
    keys: impl IntoIterator<Item = &'k str>,
) -> Option<UnsupportedArgs> {
    let params = lookup(action)?.params()?;
    let unknown = params.unsupported(keys);
    unknown.first()?;
    Some(UnsupportedArgs {
        suggestion: unknown.iter().find_map(|k| params.suggest(k)),
        message: params.unsupported_message(&unknown),
        names: unknown.iter().map(|s| s.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_get_ansibles_message_and_a_hint() {
        let u = check_arg_names("ansible.builtin.group", ["name", "gidd", "foo"]).unwrap();
        assert_eq!(u.names, ["foo", "gidd"]);
        assert!(
            u.message.starts_with(
                "Unsupported parameters for (group) module: foo, gidd. Supported parameters include: "
            ),
            "{}",
            u.message
        );
        assert!(u.message.contains("gid, gid_max, gid_min"), "{}", u.message);
        assert_eq!(
            check_arg_names("group", ["gidd"]).unwrap().suggestion,
            Some("gid")
        );
        assert_eq!(check_arg_names("group", ["name", "gid"]), None);
        // Aliases are accepted and listed apart, as Ansible lists them.
        assert_eq!(check_arg_names("file", ["dest", "name", "path"]), None);
        let m = check_arg_names("file", ["mdoe"]).unwrap();
        assert!(m.message.ends_with(" (attr, dest, name)."), "{}", m.message);
        // Modules that take any names, and executor actions, declare none.
        assert_eq!(check_arg_names("set_fact", ["anything"]), None);
        assert_eq!(check_arg_names("include_tasks", ["file", "x"]), None);
    }

    /// Every name a module's getters read must be in its declaration, or
    /// the resolver would reject a task the module accepts. The getters
    /// check this themselves in debug builds as they run; this reads the
    /// sources, so paths no test runs are covered too.
    #[test]
    fn params_declare_every_argument_a_module_reads() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/modules");
        // Only `ModuleArgs`' getters: other calls also take slices of
        // literals (a command's argv), which are not arguments.
        let getter = regex::Regex::new(
            r#"\.(value|string|req_string|bool|opt_bool|int|float|list|list_no_split|choice|mode|ignore)\(\s*&\[([^\]]*)\]"#,
        )
        .unwrap();
        let new = regex::Regex::new(r#"ModuleArgs::new\(&(\w+),"#).unwrap();
        let lit = regex::Regex::new(r#""([^"]+)""#).unwrap();
        let mut checked = 0;
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() || dir.ends_with("kit") {
                continue;
            }
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                let src = std::fs::read_to_string(&f).unwrap();
                let Some(first) = new.captures(&src) else {
                    continue;
                };
                // The module whose getters these are: the one named in the
                // file's (first) `ModuleArgs::new`, registered under a name
                // that shares the static's stem.
                let stat = first.get(1).unwrap().as_str();
                let name = f.file_stem().unwrap().to_str().unwrap();
                let module = if stat == "PARAMS" {
                    name.to_string()
                } else {
                    stat.trim_end_matches("_PARAMS").to_lowercase()
                };
                let Some(params) = lookup(&module).and_then(|m| m.params()) else {
                    panic!("{} declares no Params for {module}", f.display());
                };
                if new.captures_iter(&src).count() > 1 {
                    continue; // two modules in one file: the getters' own check covers it
                }
                for c in getter.captures_iter(&src) {
                    for n in lit.captures_iter(c.get(2).unwrap().as_str()) {
                        let n = n.get(1).unwrap().as_str();
                        assert!(
                            params.accepts(n),
                            "{module} reads `{n}` but does not declare it"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 300, "only {checked} names checked");
    }
}
