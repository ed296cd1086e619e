//! Where a task's module name is found when Keel has no native port of it
//! (or when a `library/` module shadows one): [`ModuleSearch`], owned by the
//! resolver. It looks in the controller's ansible-core installation
//! ([`ansible_core`], `install.rs`) last.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::install::ansible_core;
use super::payload::{PayloadError, PyModule};
use crate::modules::registry;

/// What a task's module name resolved to.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// A native module or an executor action.
    Native,
    /// A Python module, packed and ready to run.
    Python(Arc<PyModule>),
    /// Found nowhere: the places looked in, for the error.
    NotFound(Vec<String>),
    /// Found, but it cannot be packed (a missing `module_utils`, a binary...).
    Unusable(PayloadError),
    /// An action plugin with no module behind it: controller-side Python
    /// Keel cannot run.
    ActionPluginOnly(PathBuf),
    /// A collection's `meta/runtime.yml` (or the `collections:` search
    /// list) led to a native module under another name: its short name.
    NativeAs(String),
}

/// One `plugin_routing` entry of a collection's `meta/runtime.yml`.
#[derive(Debug, Clone)]
enum Route {
    Redirect(String),
    Removed(String),
}

/// The module search path of one playbook run: the directories a
/// resolver has seen so far (the playbook's and each loaded role's
/// `library/`, `module_utils/` and `action_plugins/`, in load order, as
/// Ansible adds them) and packed modules by path, so each is read once.
#[derive(Debug, Default)]
pub struct ModuleSearch {
    library: Vec<PathBuf>,
    module_utils: Vec<PathBuf>,
    action_plugins: Vec<PathBuf>,
    collections: Vec<PathBuf>,
    /// `collections_path` from `ansible.cfg` or the environment (through
    /// the caller); when unset, `ANSIBLE_COLLECTIONS_PATH` and the defaults.
    configured_collections: Option<Vec<PathBuf>>,
    /// The `collections:` search list in force (a play's or a role's),
    /// searched for bare names before `ansible.legacy`.
    collection_list: Vec<String>,
    /// Each collection's `meta/runtime.yml` module routes, read once.
    routes: HashMap<PathBuf, HashMap<String, Route>>,
    packed: HashMap<PathBuf, Result<Arc<PyModule>, PayloadError>>,
}

fn push_dir(list: &mut Vec<PathBuf>, dir: PathBuf) {
    if dir.is_dir() && !list.contains(&dir) {
        list.push(dir);
    }
}

fn env_dirs(var: &str) -> Vec<PathBuf> {
    std::env::var_os(var)
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

impl ModuleSearch {
    pub fn new() -> ModuleSearch {
        ModuleSearch::default()
    }

    /// Adds a playbook's or role's directory: its `library/`,
    /// `module_utils/` and `action_plugins/` join the search (a playbook's
    /// `collections/` too).
    pub fn add_base(&mut self, dir: &Path) {
        push_dir(&mut self.library, dir.join("library"));
        push_dir(&mut self.module_utils, dir.join("module_utils"));
        push_dir(&mut self.action_plugins, dir.join("action_plugins"));
        push_dir(&mut self.collections, dir.join("collections"));
    }

    /// The module directories in search order: added ones, then
    /// `ANSIBLE_LIBRARY`, then Ansible's defaults.
    fn library_dirs(&self) -> Vec<PathBuf> {
        let mut v = self.library.clone();
        let configured = env_dirs("ANSIBLE_LIBRARY");
        if configured.is_empty() {
            if let Some(home) = dirs::home_dir() {
                v.push(home.join(".ansible/plugins/modules"));
            }
            v.push(PathBuf::from("/usr/share/ansible/plugins/modules"));
        } else {
            v.extend(configured);
        }
        v
    }

    /// The `module_utils` directories in search order (ansible-core's last).
    pub fn module_utils_dirs(&self) -> Vec<PathBuf> {
        let mut v = self.module_utils.clone();
        let configured = env_dirs("ANSIBLE_MODULE_UTILS");
        if configured.is_empty() {
            if let Some(home) = dirs::home_dir() {
                v.push(home.join(".ansible/plugins/module_utils"));
            }
            v.push(PathBuf::from("/usr/share/ansible/plugins/module_utils"));
        } else {
            v.extend(configured);
        }
        v.retain(|d| d.is_dir());
        v
    }

    /// Sets the configured collections paths (`collections_path`), which
    /// then stand for `ANSIBLE_COLLECTIONS_PATH` and the defaults.
    pub fn set_collections_path(&mut self, paths: Vec<PathBuf>) {
        self.configured_collections = Some(paths);
    }

    /// Replaces the `collections:` search list, returning the previous one
    /// (the resolver restores it when a play or role ends).
    pub fn set_collection_list(&mut self, list: Vec<String>) -> Vec<String> {
        std::mem::replace(&mut self.collection_list, list)
    }

    pub fn collection_list(&self) -> &[String] {
        &self.collection_list
    }

    /// Directories holding `ansible_collections/`: the playbook-adjacent
    /// `collections/` first, then the configured paths (a path may name
    /// its `ansible_collections` directory itself).
    pub fn collection_roots(&self) -> Vec<PathBuf> {
        let mut v = self.collections.clone();
        let configured = match &self.configured_collections {
            Some(c) => c.clone(),
            None => {
                let mut c = env_dirs("ANSIBLE_COLLECTIONS_PATH");
                c.extend(env_dirs("ANSIBLE_COLLECTIONS_PATHS"));
                if c.is_empty() {
                    if let Some(home) = dirs::home_dir() {
                        c.push(home.join(".ansible/collections"));
                    }
                    c.push(PathBuf::from("/usr/share/ansible/collections"));
                }
                c
            }
        };
        for p in configured {
            let p = if p.file_name().is_some_and(|n| n == "ansible_collections") {
                p.parent().map(Path::to_path_buf).unwrap_or(p)
            } else {
                p
            };
            if !v.contains(&p) {
                v.push(p);
            }
        }
        v.retain(|d| d.is_dir());
        v
    }

    /// The installed tree of collection `ns.coll` (the first root that has
    /// it, as Ansible takes it).
    pub fn collection_dir(&self, ns: &str, coll: &str) -> Option<PathBuf> {
        self.collection_roots()
            .into_iter()
            .map(|r| r.join("ansible_collections").join(ns).join(coll))
            .find(|d| d.is_dir())
    }

    /// Finds a role in a collection: `ns.coll.role` in that collection, or
    /// a bare name in each collection of the search list. Returns the role
    /// directory and its collection.
    pub fn collection_role(&self, name: &str) -> Option<(PathBuf, String)> {
        let parts: Vec<&str> = name.split('.').collect();
        let candidates: Vec<(String, &str)> = match parts.as_slice() {
            [ns, coll, role] => vec![(format!("{ns}.{coll}"), *role)],
            [role] => self
                .collection_list
                .iter()
                .filter(|c| *c != "ansible.builtin" && *c != "ansible.legacy")
                .map(|c| (c.clone(), *role))
                .collect(),
            _ => Vec::new(),
        };
        candidates.into_iter().find_map(|(c, role)| {
            let (ns, coll) = c.split_once('.')?;
            let dir = self.collection_dir(ns, coll)?.join("roles").join(role);
            dir.is_dir().then_some((dir, c))
        })
    }

    /// The route `meta/runtime.yml` gives module `name` of the collection
    /// at `dir` (`plugin_routing.modules`, then `plugin_routing.action`).
    fn route(&mut self, dir: &Path, name: &str) -> Option<Route> {
        let routes = self.routes.entry(dir.to_path_buf()).or_insert_with(|| {
            let mut out = HashMap::new();
            let Ok(node) = crate::yaml::load_one(&dir.join("meta/runtime.yml")) else {
                return out;
            };
            let Some(routing) = node.get("plugin_routing") else {
                return out;
            };
            for section in ["action", "modules"] {
                let Some(entries) = routing.get(section).and_then(|s| s.as_map()) else {
                    continue;
                };
                for (k, v) in entries {
                    let Some(key) = k.as_str() else { continue };
                    if let Some(to) = v.get("redirect").and_then(|r| r.as_str()) {
                        out.insert(key.to_string(), Route::Redirect(to.to_string()));
                    } else if let Some(t) = v.get("tombstone") {
                        let text = t
                            .get("warning_text")
                            .and_then(|w| w.as_str())
                            .unwrap_or("it was removed")
                            .to_string();
                        out.insert(key.to_string(), Route::Removed(text));
                    }
                }
            }
            out
        });
        routes.get(name).cloned()
    }

    /// Module `name` of the installed collection `ns.coll`: its route, or
    /// its file under `plugins/modules/`. `Err` holds where it was looked for.
    fn in_collection(
        &mut self,
        ns: &str,
        coll: &str,
        name: &str,
        depth: usize,
    ) -> Result<Resolution, String> {
        let Some(dir) = self.collection_dir(ns, coll) else {
            let roots: Vec<String> = self
                .collection_roots()
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            return Err(format!(
                "the collection {ns}.{coll}, which is not installed (collection paths: {})",
                if roots.is_empty() {
                    "none exists".to_string()
                } else {
                    roots.join(", ")
                }
            ));
        };
        match self.route(&dir, name) {
            Some(Route::Redirect(to)) if depth < 10 => {
                return Ok(match self.resolve_at(&to, depth + 1) {
                    Resolution::Native => Resolution::NativeAs(
                        registry::canonical_name(&to)
                            .rsplit('.')
                            .next()
                            .unwrap_or(&to)
                            .to_string(),
                    ),
                    other => other,
                });
            }
            Some(Route::Redirect(to)) => {
                return Ok(Resolution::NotFound(vec![format!(
                    "{ns}.{coll}.{name} (too many redirects, the last to {to})"
                )]))
            }
            Some(Route::Removed(text)) => {
                return Ok(Resolution::NotFound(vec![format!(
                    "{ns}.{coll}.{name}, removed from the collection: {text}"
                )]))
            }
            None => {}
        }
        let mdir = dir.join("plugins/modules");
        match module_file(&mdir, name) {
            Some(path) => {
                let fqn = format!("ansible_collections.{ns}.{coll}.plugins.modules.{name}");
                Ok(self.pack(name, &fqn, path))
            }
            None => Err(format!(
                "{} (the collection {ns}.{coll} has no module {name})",
                mdir.display()
            )),
        }
    }

    /// Resolves a module name as written in a task (`foo`,
    /// `ansible.legacy.foo`, `ansible.builtin.foo`, `ns.coll.foo`).
    ///
    /// A bare (or `ansible.legacy.`) name is looked for in the `library/`
    /// directories first, where it shadows a native module as it shadows
    /// ansible-core's own in Ansible; executor actions and controller-side
    /// modules (Ansible's action plugins) are never shadowed.
    pub fn resolve(&mut self, written: &str) -> Resolution {
        self.resolve_at(written, 0)
    }

    /// The action name a task runs: the native short name a redirect or
    /// the search list led to, else the written name without a collection
    /// that maps onto a native module.
    pub fn action_name(&mut self, written: &str) -> String {
        match self.resolve(written) {
            Resolution::NativeAs(short) => short,
            _ => registry::canonical_name(written).to_string(),
        }
    }

    fn resolve_at(&mut self, written: &str, depth: usize) -> Resolution {
        let parts: Vec<&str> = written.split('.').collect();
        let native = registry::is_action(written);
        let mut looked = Vec::new();
        let (name, collection) = match parts.as_slice() {
            [name] | ["ansible", "legacy", name] => (*name, None),
            ["ansible", "builtin", name] => (*name, Some(("ansible", "builtin"))),
            [ns, coll, name] => (*name, Some((*ns, *coll))),
            _ => return Resolution::NotFound(vec!["(not a module name)".into()]),
        };
        // A bare name is looked for in the `collections:` search list
        // before `ansible.legacy` (executor actions never are).
        if parts.len() == 1 && !registry::EXECUTOR_ACTIONS.contains(&name) {
            for c in self.collection_list.clone() {
                if c == "ansible.builtin" || c == "ansible.legacy" {
                    break;
                }
                if registry::collection_has_native(&c, name) {
                    return Resolution::Native;
                }
                let Some((ns, coll)) = c.split_once('.') else {
                    continue;
                };
                if let Ok(r) = self.in_collection(ns, coll, name, depth) {
                    return r;
                }
            }
        }
        if collection.is_none() {
            let shadowable = registry::lookup(written).is_none_or(|m| !m.controller_only())
                && !registry::EXECUTOR_ACTIONS.contains(&name);
            if shadowable {
                for dir in self.library_dirs().into_iter().filter(|d| d.is_dir()) {
                    if let Some(path) = module_file(&dir, name) {
                        return self.pack(name, &format!("ansible.legacy.{name}"), path);
                    }
                    looked.push(dir.display().to_string());
                }
                if looked.is_empty() {
                    looked.push(
                        "library/ (no playbook, role or ANSIBLE_LIBRARY directory exists)".into(),
                    );
                }
            }
        }
        if native {
            return Resolution::Native;
        }
        if let Some((ns, coll)) = collection.filter(|c| *c != ("ansible", "builtin")) {
            return match self.in_collection(ns, coll, name, depth) {
                Ok(r) => r,
                Err(place) => Resolution::NotFound(vec![place]),
            };
        }
        match ansible_core() {
            Some(core) => {
                let dir = core.modules_dir();
                if let Some(path) = module_file(&dir, name) {
                    // ansible-core keeps documentation stubs of its action
                    // plugins here (`gather_facts`, `set_stats`...): no
                    // module behind them.
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    if !text.contains("AnsibleModule") && !text.contains("def main") {
                        return Resolution::ActionPluginOnly(path);
                    }
                    return self.pack(name, &format!("ansible.modules.{name}"), path);
                }
                looked.push(format!("{} (ansible-core {})", dir.display(), core.version));
            }
            None => looked.push(
                "ansible-core's modules (no ansible-core is importable on the controller: \
                 set KEEL_ANSIBLE_PYTHON to a Python that imports it)"
                    .into(),
            ),
        }
        if collection.is_none() {
            for dir in &self.action_plugins {
                let p = dir.join(format!("{name}.py"));
                if p.is_file() {
                    return Resolution::ActionPluginOnly(p);
                }
            }
        }
        Resolution::NotFound(looked)
    }

    /// Whether `written` names a module found outside the native set (so a
    /// task key with that name is its module, even when it cannot run: the
    /// resolver then says why).
    pub fn claims(&mut self, written: &str) -> bool {
        matches!(
            self.resolve(written),
            Resolution::Python(_)
                | Resolution::Unusable(_)
                | Resolution::ActionPluginOnly(_)
                | Resolution::NativeAs(_)
        )
    }

    /// Where `written` was looked for, for a "couldn't resolve" error.
    pub fn looked_in(&mut self, written: &str) -> String {
        match self.resolve(written) {
            Resolution::NotFound(places) => {
                format!("looked for a Python module in: {}", places.join(", "))
            }
            _ => String::new(),
        }
    }

    fn pack(&mut self, name: &str, fqn: &str, path: PathBuf) -> Resolution {
        let utils = self.module_utils_dirs();
        let roots = self.collection_roots();
        let entry = self.packed.entry(path.clone()).or_insert_with(|| {
            PyModule::load(name, fqn, &path, &utils, &roots, ansible_core()).map(Arc::new)
        });
        match entry {
            Ok(m) => Resolution::Python(m.clone()),
            Err(e) => Resolution::Unusable(e.clone()),
        }
    }
}

/// `dir/name.py`, or `dir/name` (a module in any language).
fn module_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.py")), dir.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}
