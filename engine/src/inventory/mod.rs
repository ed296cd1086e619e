//! Inventory: which hosts exist, how they group, and their variables.
//!
//! Sources (`-i`): an INI or YAML file, a directory of sources, an executable
//! (dynamic inventory, `--list`/`--host`), an `http(s)://` URL serving the same
//! JSON, or a comma-separated host list (`web1,web2,`). `group_vars/` and
//! `host_vars/` next to each source (and next to the playbook, added with
//! [`Inventory::add_vars_dir`]) are read too. Patterns (`hosts:`, `--limit`)
//! are evaluated by `pattern.rs`. A program embedding the engine can hand
//! it an inventory in memory instead, as dynamic-inventory JSON
//! ([`Inventory::from_json`]).
//!
//! Layout: this file is the model (hosts, groups, variable layers) and every
//! other file builds on it. `load.rs` recognises each source and hands it to
//! its parser: `ini.rs`, `yaml.rs`, `script.rs` (executables and the shared
//! JSON format), `http.rs` parse one source each into the graph kept here;
//! `address.rs` splits `host:port` and expands `web[01:09]` ranges;
//! `literal.rs` reads INI values the way Python's `ast.literal_eval` does;
//! `vars_dirs.rs` reads `group_vars/`/`host_vars/`; `pattern.rs` selects
//! hosts; `cli.rs` renders `keel inventory --list/--graph/--host` exactly
//! like `ansible-inventory`.
//!
//! Loading is synchronous (scripts are waited for, URLs are fetched on a private
//! runtime thread). From async code, call [`Inventory::load_async`] or wrap
//! [`Inventory::load`] in `tokio::task::spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use minijinja::Value;

use crate::diag::Diagnostic;
use crate::vars::VarMap;

mod address;
pub mod cli;
mod http;
mod ini;
mod literal;
mod load;
pub mod pattern;
mod script;
mod vars_dirs;
mod yaml;

pub use address::{expand_host_pattern, parse_address};
pub use literal::literal_eval;
pub use pattern::{HostListCheck, Selection, EMPTY_HOST_LIST, NO_HOSTS_TO_TARGET};

/// An inventory error (a file problem, a script that failed, a bad pattern).
pub type InventoryError = Diagnostic;

/// Names Ansible treats as the controller itself. Naming one in a pattern when
/// it is not in the inventory yields the implicit `localhost`.
pub const LOCALHOST_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Environment variable holding a bearer token for `http(s)://` sources.
pub const TOKEN_ENV: &str = "KEEL_INVENTORY_TOKEN";

#[derive(Debug, Clone, Default)]
pub struct Host {
    pub name: String,
    /// Vars set on the host in the inventory source itself.
    pub vars: VarMap,
    /// Direct groups, in the order first seen.
    pub groups: Vec<String>,
    /// The source that first declared the host (`inventory_file`), if a path.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct Group {
    pub name: String,
    pub vars: VarMap,
    pub children: Vec<String>,
    /// Hosts listed directly in this group.
    pub hosts: Vec<String>,
    /// Direct parent groups (`all` for top-level groups).
    pub parents: Vec<String>,
    /// `ansible_group_priority` (default 1): among groups of the same depth,
    /// higher priority vars win. Kept out of `vars`, as Ansible does.
    pub priority: Option<i64>,
}

/// Each group's depth below `all`, which orders the groups' variables
/// ([`Inventory::group_order`]).
#[derive(Debug, Clone)]
pub struct GroupOrder(HashMap<String, usize>);

/// Knobs for loading. [`Default`] reads the token from [`TOKEN_ENV`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// How long a dynamic inventory script may run per invocation.
    pub script_timeout: Duration,
    /// Timeout for each HTTP request of a URL source.
    pub http_timeout: Duration,
    /// Bearer token sent to URL sources.
    pub http_token: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            script_timeout: Duration::from_secs(60),
            http_timeout: Duration::from_secs(10),
            http_token: std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
        }
    }
}

/// A loaded inventory. `all` and `ungrouped` always exist.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub hosts: IndexMap<String, Host>,
    pub groups: IndexMap<String, Group>,
    /// Non-fatal problems found while loading (skipped keys, ignored files).
    pub warnings: Vec<Diagnostic>,
    /// `group_vars/`/`host_vars/` roots, inventory ones first, then playbook ones.
    vars_dirs: Vec<vars_dirs::VarsDir>,
}

impl Default for Inventory {
    fn default() -> Self {
        let mut inv = Inventory {
            hosts: IndexMap::new(),
            groups: IndexMap::new(),
            warnings: Vec::new(),
            vars_dirs: Vec::new(),
        };
        inv.ensure_group("all");
        inv.ensure_group("ungrouped");
        inv.add_child("all", "ungrouped").expect("fresh inventory");
        inv
    }
}

impl Inventory {
    /// Reads `group_vars/` and `host_vars/` under `dir` (the playbook's
    /// directory), at higher precedence than the inventory's own.
    pub fn add_vars_dir(&mut self, dir: &Path) -> Result<(), InventoryError> {
        let mut vd = vars_dirs::VarsDir::new(dir.to_path_buf(), true);
        vd.load(&self.group_names_all(), &self.vars_host_names())?;
        self.vars_dirs.push(vd);
        Ok(())
    }

    /// The variable layers of one host, lowest precedence first: group vars
    /// (`all`, then parents before children, then `group_vars/` files), then
    /// host vars (inline, then `host_vars/` files).
    ///
    /// Ansible's order: inventory group vars sorted by (depth, priority, name);
    /// `group_vars/all` from inventory dirs, then playbook dirs; the other
    /// groups' `group_vars/` from inventory dirs, then playbook dirs; the
    /// host's inline vars; `host_vars/` from inventory dirs, then playbook dirs.
    /// Empty layers are left out. Layers replace whole keys (no deep merge).
    pub fn host_layers(&self, host: &str) -> Vec<Arc<VarMap>> {
        self.host_layers_in(host, &self.group_order())
    }

    /// How the groups' variables are ordered (each group's depth), for
    /// [`host_layers_in`](Self::host_layers_in) and
    /// [`host_vars_in`](Self::host_vars_in): computed once for many hosts
    /// instead of once per host. Stale once the inventory's groups change.
    pub fn group_order(&self) -> GroupOrder {
        GroupOrder(self.depths())
    }

    /// [`host_layers`](Self::host_layers) with the group order computed
    /// beforehand, for callers that ask for many hosts.
    pub fn host_layers_in(&self, host: &str, order: &GroupOrder) -> Vec<Arc<VarMap>> {
        self.layer_parts(host, order)
            .into_iter()
            .filter_map(|parts| {
                let mut m = VarMap::new();
                for p in parts {
                    p.merge_into(&mut m);
                }
                (!m.is_empty()).then(|| Arc::new(m))
            })
            .collect()
    }

    /// What each of the host's variable layers merges, in order (see
    /// [`host_layers`](Self::host_layers)), borrowed: so that
    /// [`host_vars_in`](Self::host_vars_in) merges every map once instead
    /// of copying it into a layer first.
    fn layer_parts<'a>(&'a self, host: &'a str, order: &GroupOrder) -> Vec<Vec<LayerPart<'a>>> {
        // A host of the inventory, or the implicit localhost (in no group,
        // its variables made on demand).
        let (h, implicit) = match self.hosts.get(host) {
            Some(h) => (Some(h), None),
            None => match self.implicit_localhost(host) {
                Some(h) => (None, Some(h)),
                None => return Vec::new(),
            },
        };
        let groups = if implicit.is_some() {
            Vec::new()
        } else {
            self.sorted_groups_of(host, &order.0)
        };
        let mut layers: Vec<Vec<LayerPart<'a>>> = Vec::new();

        // Inventory-source group vars: `all` first (depth 0), then by depth.
        let mut inv_groups = vec![LayerPart::Map(&self.groups["all"].vars)];
        inv_groups.extend(groups.iter().map(|g| LayerPart::Map(&self.groups[g].vars)));
        layers.push(inv_groups);

        let (inv_dirs, pb_dirs): (Vec<_>, Vec<_>) =
            self.vars_dirs.iter().partition(|d| !d.playbook);
        let gather = |dirs: &[&'a vars_dirs::VarsDir], names: &[&str], hosts: bool| {
            let mut parts = Vec::new();
            for d in dirs {
                for n in names {
                    let found = if hosts {
                        d.hosts.get(*n)
                    } else {
                        d.groups.get(*n)
                    };
                    if let Some(vars) = found {
                        parts.push(LayerPart::Map(vars.as_ref()));
                    }
                }
            }
            parts
        };
        let group_names: Vec<&str> = groups.iter().map(String::as_str).collect();
        layers.push(gather(&inv_dirs, &["all"], false));
        layers.push(gather(&pb_dirs, &["all"], false));
        layers.push(gather(&inv_dirs, &group_names, false));
        layers.push(gather(&pb_dirs, &group_names, false));

        let mut inline = Vec::new();
        match (h, implicit) {
            (Some(h), _) => {
                if let Some(src) = &h.source {
                    inline.push(LayerPart::Source(src));
                }
                inline.push(LayerPart::Map(&h.vars));
            }
            // The implicit localhost comes from no source.
            (None, Some(h)) => inline.push(LayerPart::Owned(h.vars)),
            (None, None) => {}
        }
        layers.push(inline);
        layers.push(gather(&inv_dirs, &[host], true));
        layers.push(gather(&pb_dirs, &[host], true));
        layers
    }

    /// The host's variables merged the way `ansible-inventory --host` shows
    /// them (internal `inventory_file`/`inventory_dir` left out).
    pub fn host_vars(&self, host: &str) -> VarMap {
        self.host_vars_in(host, &self.group_order())
    }

    /// [`host_vars`](Self::host_vars) with the group order computed
    /// beforehand, for callers that ask for many hosts.
    pub fn host_vars_in(&self, host: &str, order: &GroupOrder) -> VarMap {
        let mut out = VarMap::new();
        for part in self.layer_parts(host, order).into_iter().flatten() {
            // Left out below anyway: not worth inserting.
            if !matches!(part, LayerPart::Source(_)) {
                part.merge_into(&mut out);
            }
        }
        out.shift_remove("inventory_file");
        out.shift_remove("inventory_dir");
        out
    }

    /// One group's own variables: inline, then its `group_vars/` files from
    /// inventory directories, then playbook ones (what `--graph --vars` shows).
    pub fn group_vars(&self, group: &str) -> VarMap {
        let mut out = self
            .groups
            .get(group)
            .map(|g| g.vars.clone())
            .unwrap_or_default();
        if let Some(p) = self
            .groups
            .get(group)
            .and_then(|g| g.priority)
            .filter(|p| *p != 1)
        {
            out.insert("ansible_group_priority".into(), Value::from(p));
        }
        let (inv_dirs, pb_dirs): (Vec<_>, Vec<_>) =
            self.vars_dirs.iter().partition(|d| !d.playbook);
        for d in inv_dirs.into_iter().chain(pb_dirs) {
            if let Some(vars) = d.groups.get(group) {
                extend(&mut out, vars);
            }
        }
        out
    }

    /// All groups the host is in (transitively), sorted, without `all`:
    /// the `group_names` magic variable.
    pub fn group_names(&self, host: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .ancestors_of_host(host)
            .into_iter()
            .filter(|g| g != "all")
            .collect();
        names.sort();
        names
    }

    /// The `groups` magic variable: group name → host names.
    pub fn groups_map(&self) -> IndexMap<String, Vec<String>> {
        self.groups
            .keys()
            .map(|g| (g.clone(), self.group_hosts(g)))
            .collect()
    }

    /// Hosts of a group and all its descendants, breadth-first as Ansible
    /// walks them (own hosts, then children's, then grandchildren's...).
    pub fn group_hosts(&self, group: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for g in self.descendants(group) {
            for h in &self.groups[&g].hosts {
                if seen.insert(h.as_str()) {
                    out.push(h.clone());
                }
            }
        }
        out
    }

    /// The implicit `localhost` Ansible creates when a pattern names it but the
    /// inventory does not: local connection, not a member of `all`.
    pub fn implicit_localhost(&self, name: &str) -> Option<Host> {
        if self.hosts.contains_key(name) || !LOCALHOST_NAMES.contains(&name) {
            return None;
        }
        let mut vars = VarMap::new();
        vars.insert("ansible_connection".into(), Value::from("local"));
        // ansible-core points it at the controller's own Python.
        vars.insert(
            "ansible_python_interpreter".into(),
            Value::from(controller_python()),
        );
        Some(Host {
            name: name.to_string(),
            vars,
            groups: Vec::new(),
            source: None,
        })
    }

    // ----- building the graph (used by the source parsers) -----

    pub(crate) fn ensure_group(&mut self, name: &str) {
        if !self.groups.contains_key(name) {
            self.groups.insert(
                name.to_string(),
                Group {
                    name: name.to_string(),
                    ..Group::default()
                },
            );
        }
    }

    pub(crate) fn ensure_host(&mut self, name: &str, source: Option<&Path>) {
        if !self.hosts.contains_key(name) {
            self.hosts.insert(
                name.to_string(),
                Host {
                    name: name.to_string(),
                    source: source.map(Path::to_path_buf),
                    ..Host::default()
                },
            );
        }
    }

    /// Adds `host` (creating it) to `group` (which must exist).
    pub(crate) fn add_host(&mut self, host: &str, group: &str, source: Option<&Path>) {
        self.ensure_host(host, source);
        self.ensure_group(group);
        // Membership is kept on both sides (the host's groups, the group's
        // hosts), so the host's own short list answers whether the group
        // has it. Scanning the group's hosts instead made a range line of
        // 69 097 hosts take minutes (found by the inventory_ini fuzz target).
        let h = self.hosts.get_mut(host).expect("host exists");
        if h.groups.iter().any(|x| x == group) {
            return;
        }
        h.groups.push(group.to_string());
        let g = self.groups.get_mut(group).expect("group exists");
        g.hosts.push(host.to_string());
    }

    pub(crate) fn set_host_var(&mut self, host: &str, key: &str, value: Value) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.vars.insert(key.to_string(), value);
        }
    }

    pub(crate) fn set_group_var(&mut self, group: &str, key: &str, value: Value) {
        self.ensure_group(group);
        if key == "ansible_group_priority" {
            let p = value
                .as_i64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()));
            if p.is_none() {
                self.warnings.push(Diagnostic::new(format!(
                    "ignoring ansible_group_priority of group '{group}': {value} is not an integer"
                )));
            }
            self.groups[group].priority = p;
            return;
        }
        self.groups[group].vars.insert(key.to_string(), value);
    }

    /// Makes `child` a child of `parent`; refuses cycles.
    pub(crate) fn add_child(&mut self, parent: &str, child: &str) -> Result<(), String> {
        if parent == child {
            return Err(format!("group '{child}' cannot be a child of itself"));
        }
        self.ensure_group(parent);
        self.ensure_group(child);
        if self.groups[parent].children.iter().any(|c| c == child) {
            return Ok(());
        }
        if self.group_ancestors(parent).contains(child) {
            return Err(format!(
                "Adding group '{child}' as child to '{parent}' creates a recursive dependency loop."
            ));
        }
        self.groups[parent].children.push(child.to_string());
        self.groups[child].parents.push(parent.to_string());
        Ok(())
    }

    /// After `add_host`/`group_by` changed the graph at run time: Ansible's
    /// reconcile step again, and the `group_vars/`/`host_vars/` files of the
    /// new groups and hosts.
    pub(crate) fn reconcile_runtime(&mut self) {
        if let Err(e) = self.reconcile() {
            self.warnings.push(e);
        }
        if let Err(e) = self.reload_vars_dirs() {
            self.warnings.push(e);
        }
    }

    /// Ansible's reconcile step, run once after all sources: parentless groups
    /// hang off `all`, and `ungrouped` holds exactly the hosts in no other group.
    /// A source that made `all` the child of a parentless group fails here,
    /// as in Ansible: hanging that group off `all` would close a loop.
    fn reconcile(&mut self) -> Result<(), InventoryError> {
        let orphans: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.name != "all" && g.parents.is_empty())
            .map(|g| g.name.clone())
            .collect();
        for g in orphans {
            self.add_child("all", &g).map_err(|e| {
                Diagnostic::new(e).hint("`all` holds every group already; remove it from the `children` that close the loop")
            })?;
        }
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        // Hosts that leave `ungrouped` go in one pass over its list at the
        // end: removing them one by one made an inventory that lists every
        // host at the top and again under a group quadratic (12 000 hosts
        // took seconds; found by the inventory_ini fuzz target).
        let mut leaving: HashSet<String> = HashSet::new();
        for name in names {
            let h = &self.hosts[&name];
            let in_other = h.groups.iter().any(|g| g != "all" && g != "ungrouped");
            let in_ungrouped = h.groups.iter().any(|g| g == "ungrouped");
            if in_other && in_ungrouped {
                self.hosts[&name].groups.retain(|g| g != "ungrouped");
                leaving.insert(name.clone());
            } else if !in_other && !in_ungrouped {
                self.add_host(&name, "ungrouped", None);
            }
            if self.groups.contains_key(&name) {
                self.warnings.push(Diagnostic::new(format!(
                    "found both group and host with same name: {name}"
                )));
            }
        }
        if !leaving.is_empty() {
            self.groups["ungrouped"]
                .hosts
                .retain(|x| !leaving.contains(x));
        }
        Ok(())
    }

    // ----- graph queries -----

    /// Every ancestor of a group (not including itself).
    fn group_ancestors(&self, group: &str) -> HashSet<String> {
        let mut out = HashSet::new();
        let mut todo = vec![group.to_string()];
        while let Some(g) = todo.pop() {
            if let Some(grp) = self.groups.get(&g) {
                for p in &grp.parents {
                    if out.insert(p.clone()) {
                        todo.push(p.clone());
                    }
                }
            }
        }
        out
    }

    /// The group itself and its descendants, level by level.
    fn descendants(&self, group: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !self.groups.contains_key(group) {
            return out;
        }
        let mut seen = HashSet::new();
        seen.insert(group.to_string());
        out.push(group.to_string());
        let mut i = 0;
        while i < out.len() {
            let children = self.groups[&out[i]].children.clone();
            for c in children {
                if seen.insert(c.clone()) {
                    out.push(c);
                }
            }
            i += 1;
        }
        out
    }

    /// Direct groups of a host plus all their ancestors (includes `all`).
    fn ancestors_of_host(&self, host: &str) -> HashSet<String> {
        let mut out = HashSet::new();
        if let Some(h) = self.hosts.get(host) {
            for g in &h.groups {
                out.insert(g.clone());
                out.extend(self.group_ancestors(g));
            }
            out.insert("all".to_string());
        }
        out
    }

    /// Longest distance from `all` (Ansible's group depth).
    fn depths(&self) -> HashMap<String, usize> {
        let mut memo = HashMap::new();
        fn depth(inv: &Inventory, g: &str, memo: &mut HashMap<String, usize>) -> usize {
            if let Some(d) = memo.get(g) {
                return *d;
            }
            let d = inv.groups[g]
                .parents
                .iter()
                .map(|p| depth(inv, p, memo) + 1)
                .max()
                .unwrap_or(0);
            memo.insert(g.to_string(), d);
            d
        }
        for g in self.groups.keys() {
            depth(self, g, &mut memo);
        }
        memo
    }

    /// The host's groups (transitively, without `all`) sorted as Ansible
    /// merges their vars: by depth, then `ansible_group_priority`, then name.
    fn sorted_groups_of(&self, host: &str, depths: &HashMap<String, usize>) -> Vec<String> {
        let mut groups: Vec<String> = self
            .ancestors_of_host(host)
            .into_iter()
            .filter(|g| g != "all")
            .collect();
        groups.sort_by(|a, b| {
            (depths[a], self.group_priority(a), a).cmp(&(depths[b], self.group_priority(b), b))
        });
        groups
    }

    fn group_priority(&self, group: &str) -> i64 {
        self.groups[group].priority.unwrap_or(1)
    }

    /// Reads the group/host vars files of every registered directory for the
    /// groups and hosts now known.
    fn reload_vars_dirs(&mut self) -> Result<(), InventoryError> {
        let (groups, hosts) = (self.group_names_all(), self.vars_host_names());
        self.vars_dirs
            .iter_mut()
            .try_for_each(|d| d.load(&groups, &hosts))
    }

    /// Every group name, for `group_vars/` lookups.
    fn group_names_all(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// Every host name plus the localhost names (for the implicit
    /// localhost), for `host_vars/` lookups.
    fn vars_host_names(&self) -> Vec<String> {
        let known = self.hosts.keys().map(String::as_str);
        known.chain(LOCALHOST_NAMES).map(str::to_string).collect()
    }
}

/// One piece of a host's variable layer ([`Inventory::layer_parts`]).
enum LayerPart<'a> {
    Map(&'a VarMap),
    /// The implicit localhost's variables, made on demand.
    Owned(VarMap),
    /// `inventory_file` and `inventory_dir` of the source that declared the host.
    Source(&'a Path),
}

impl LayerPart<'_> {
    fn merge_into(&self, dst: &mut VarMap) {
        match self {
            LayerPart::Map(m) => extend(dst, m),
            LayerPart::Owned(m) => extend(dst, m),
            LayerPart::Source(src) => {
                dst.insert(
                    "inventory_file".into(),
                    Value::from(src.display().to_string()),
                );
                let dir = src
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                dst.insert("inventory_dir".into(), Value::from(dir));
            }
        }
    }
}

/// Inserts every key of `src` into `dst`, replacing whole values.
fn extend(dst: &mut VarMap, src: &VarMap) {
    for (k, v) in src {
        dst.insert(k.clone(), v.clone());
    }
}

/// The controller's Python (`ansible_playbook_python`, and the implicit
/// localhost's interpreter): the first `python3` on `PATH`. Keel runs no
/// Python itself; inventories and playbooks still name it.
pub fn controller_python() -> String {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("python3"))
                .find(|c| c.is_file())
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/usr/bin/python3".into())
}
