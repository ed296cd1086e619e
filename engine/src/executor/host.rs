//! Per-host state during a run, what a run and a play share, and the variable
//! scope of a host at a task.
//!
//! The scope is built from shared layers (`Arc<VarMap>`), lowest precedence
//! first, following Ansible's documented order: role defaults, inventory
//! (group then host, as the inventory orders them), facts, play vars,
//! vars_files, role vars, block and task vars, include_vars, set_fact and
//! register, role params, include params, extra vars, then the magic
//! variables. Building one is a handful of `Arc` clones.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use minijinja::value::Value;

use crate::inventory::Inventory;
use crate::output::{HostStats, Sink};
use crate::playbook::plan::{Play, Task};
use crate::template::{Scope, Templar};
use crate::transport::{Connection, ConnectionPool};
use crate::vars::VarMap;

use super::RunOptions;

/// What the whole run shares.
pub(crate) struct Shared {
    pub inventory: parking_lot::RwLock<Inventory>,
    pub opts: RunOptions,
    pub templar: Arc<Templar>,
    pub pool: Arc<ConnectionPool>,
    pub sink: Arc<dyn Sink>,
    pub extra_vars: Arc<VarMap>,
    pub forks: Arc<tokio::sync::Semaphore>,
    /// What `add_host` and `group_by` changed in the inventory:
    /// `meta: refresh_inventory` keeps it, as Ansible does.
    pub dynamic_hosts: Mutex<Vec<InventoryChange>>,
    /// `async` jobs the controller runs (modules that are not one host
    /// command): the run waits for them before closing connections.
    pub async_jobs: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    pub fn new(
        inventory: Inventory,
        opts: RunOptions,
        templar: Arc<Templar>,
        pool: Arc<ConnectionPool>,
        sink: Arc<dyn Sink>,
    ) -> Shared {
        let forks = Arc::new(tokio::sync::Semaphore::new(opts.forks.max(1)));
        Shared {
            inventory: parking_lot::RwLock::new(inventory),
            extra_vars: Arc::new(opts.extra_vars.clone()),
            opts,
            templar,
            pool,
            sink,
            forks,
            dynamic_hosts: Mutex::new(Vec::new()),
            async_jobs: Mutex::new(Vec::new()),
        }
    }
}

/// A run-time change to the inventory, replayed after a refresh.
#[derive(Clone)]
pub(crate) enum InventoryChange {
    /// `add_host`: the host, its groups and variables.
    Host(String, Vec<String>, VarMap),
    /// `group_by`: the host, its new group, and the group's parents.
    Group(String, String, Vec<String>),
}

/// Everything fixed for one play that tasks need.
pub(crate) struct PlayCtx {
    pub shared: Arc<Shared>,
    pub play: Arc<Play>,
    /// Every host of the play, by name (for `delegate_facts`).
    pub hosts: std::collections::HashMap<String, Arc<Mutex<HostState>>>,
}

/// Facts and set_fact values: they outlive a play.
#[derive(Clone, Default)]
pub(crate) struct Persistent {
    pub facts: Arc<VarMap>,
    pub set_facts: Arc<VarMap>,
    /// Failed or unreachable: later plays leave the host out.
    pub failed: bool,
}

/// One host's state within a play.
pub(crate) struct HostState {
    pub name: String,
    pub inventory_layers: Vec<Arc<VarMap>>,
    pub facts: Arc<VarMap>,
    pub set_facts: Arc<VarMap>,
    pub include_vars: Arc<VarMap>,
    /// This host's `vars_files`, when some of them depend on its variables
    /// (otherwise the play's).
    pub vars_files: Option<Arc<VarMap>>,
    /// Loop and include parameters of dynamic includes being run.
    pub include_params: Vec<Arc<VarMap>>,
    /// The `defaults` and `vars` of roles this host included with `public:
    /// true`: visible to the rest of the play from then on, at the
    /// precedence of the play's own roles' exports.
    pub public_role_defaults: Vec<Arc<VarMap>>,
    pub public_role_vars: Vec<Arc<VarMap>>,
    /// Magic variables fixed for the play (inventory_hostname, groups...).
    pub magic: Arc<VarMap>,
    /// The connection's settings under their variable names
    /// (`ansible_host`, `ansible_connection`...), below every other layer:
    /// Ansible fills them in only where no variable says otherwise.
    pub connection_defaults: Arc<VarMap>,
    pub failed: bool,
    pub unreachable: bool,
    /// Failed (not rescued) or unreachable in this play, and not cleared by
    /// `meta: clear_host_errors`: the run's list of failed hosts.
    pub run_failed: bool,
    /// An include could not be loaded here (ansible-core's strategy puts
    /// the host in the task queue's failed hosts): later plays leave it out
    /// even when a `rescue` caught the failure, until `meta:
    /// clear_host_errors`. The exit code does not see it.
    pub include_failed: bool,
    /// `meta: end_host`, or removed by `any_errors_fatal`.
    pub ended: bool,
    /// Ended by `any_errors_fatal` (`always` sections still run for it).
    pub fatal_ended: bool,
    /// `meta: clear_host_errors` ran while the host was in an `always`
    /// section after failing: it goes on with the play.
    pub errors_cleared: bool,
    /// `meta: end_role`: the role (by address) whose remaining tasks this
    /// host skips.
    pub ended_role: Option<usize>,
    /// Run-time role deduplication: the identities of role uses that have
    /// completed on this host, the role whose tasks it is in, and whether
    /// one of them ran (a role whose tasks were all skipped has not
    /// completed).
    pub completed_roles: std::collections::HashSet<String>,
    pub current_role: Option<Arc<crate::playbook::plan::RoleInstance>>,
    pub role_task_ran: bool,
    /// Handler indexes notified and not yet run.
    pub notified: Vec<usize>,
    pub stats: HostStats,
    pub conn: Option<Arc<Connection>>,
}

/// What ansible-core's `PlayContext.update_vars` adds to a task's
/// variables for a host whose inventory does not set them: the address is
/// the inventory name, the shell `/bin/sh`, the timeout 10 s; what the
/// command line or `ansible.cfg` set (`run_vars`: `-u`, `-T`, `-c`...)
/// replaces those defaults.
pub(crate) fn connection_defaults(name: &str, layers: &[Arc<VarMap>], run_vars: &VarMap) -> VarMap {
    let connection = layers
        .iter()
        .rev()
        .find_map(|l| l.get("ansible_connection"))
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "ssh".to_string());
    // The address: either spelling the inventory gives (the legacy
    // `ansible_ssh_host` too), else the inventory name.
    let address = ["ansible_host", "ansible_ssh_host"]
        .iter()
        .find_map(|k| layers.iter().rev().find_map(|l| l.get(*k)).cloned())
        .unwrap_or_else(|| Value::from(name));
    let mut m = VarMap::new();
    m.insert("ansible_host".into(), address.clone());
    m.insert("ansible_ssh_host".into(), address);
    m.insert("ansible_connection".into(), Value::from(connection));
    m.insert("ansible_timeout".into(), Value::from(10));
    m.insert("ansible_shell_executable".into(), Value::from("/bin/sh"));
    m.insert("ansible_pipelining".into(), Value::from(false));
    for (k, v) in run_vars.iter() {
        m.insert(k.clone(), v.clone());
    }
    m
}

impl HostState {
    pub fn active(&self) -> bool {
        !self.failed && !self.unreachable && !self.ended
    }

    pub fn persistent(&self) -> Persistent {
        Persistent {
            facts: self.facts.clone(),
            set_facts: self.set_facts.clone(),
            failed: self.run_failed || self.include_failed,
        }
    }

    pub fn set_fact(&mut self, key: String, value: Value) {
        Arc::make_mut(&mut self.set_facts).insert(key, value);
    }

    /// Stores gathered or set facts: under `ansible_facts` and, as Ansible
    /// injects them, as top-level `ansible_<name>` variables.
    pub fn add_facts(&mut self, facts: &VarMap) {
        let facts_map = Arc::make_mut(&mut self.facts);
        let mut nested: VarMap = facts_map
            .get("ansible_facts")
            .and_then(value_to_map)
            .unwrap_or_default();
        for (k, v) in facts {
            let short = k.strip_prefix("ansible_").unwrap_or(k);
            nested.insert(short.to_string(), v.clone());
            // Top-level under the module's own name (`ansible_kernel`,
            // `getent_passwd`), as ansible-core injects facts as variables.
            facts_map.insert(k.clone(), v.clone());
        }
        facts_map.insert("ansible_facts".into(), ser(&nested));
    }

    pub fn clear_facts(&mut self) {
        self.facts = Arc::new(VarMap::new());
    }
}

/// A map-valued Value as a VarMap.
pub(crate) fn value_to_map(v: &Value) -> Option<VarMap> {
    if v.kind() != minijinja::value::ValueKind::Map {
        return None;
    }
    let mut m = VarMap::new();
    for k in v.try_iter().ok()? {
        let val = v.get_item(&k).unwrap_or_default();
        m.insert(k.to_string(), val);
    }
    Some(m)
}

/// Builds the scope of `host` at `task` (and optional per-item layer).
pub(crate) fn scope_for(
    shared: &Shared,
    play: &Play,
    task: Option<&Task>,
    host: &HostState,
    task_magic: Option<Arc<VarMap>>,
) -> Scope {
    let mut s = Scope::new();
    s.push(host.connection_defaults.clone());
    if !play.exported_role_defaults.is_empty() {
        s.push(play.exported_role_defaults.clone());
    }
    for d in &host.public_role_defaults {
        s.push(d.clone());
    }
    if let Some(role) = task.and_then(|t| t.role.as_ref()) {
        for d in &role.chain_defaults {
            s.push(d.clone());
        }
        s.push(role.defaults.clone());
    }
    for l in &host.inventory_layers {
        s.push(l.clone());
    }
    s.push(host.facts.clone());
    s.push(play.vars.clone());
    s.push(
        host.vars_files
            .clone()
            .unwrap_or_else(|| play.vars_files.clone()),
    );
    if !play.exported_role_vars.is_empty() {
        s.push(play.exported_role_vars.clone());
    }
    for v in &host.public_role_vars {
        s.push(v.clone());
    }
    if let Some(role) = task.and_then(|t| t.role.as_ref()) {
        for v in &role.chain_vars {
            s.push(v.clone());
        }
        s.push(role.vars.clone());
    }
    if let Some(t) = task {
        s.push(t.vars.clone());
    }
    s.push(host.include_vars.clone());
    s.push(host.set_facts.clone());
    if let Some(role) = task.and_then(|t| t.role.as_ref()) {
        s.push(role.params.clone());
    }
    for p in &host.include_params {
        s.push(p.clone());
    }
    s.push(shared.extra_vars.clone());
    s.push(host.magic.clone());
    if let Some(m) = task_magic {
        s.push(m);
    }
    s
}

/// Records an `add_host`/`group_by` change, so later plays replay it, and
/// refreshes what the play's hosts see of the inventory.
pub(crate) fn record_inventory_change(ctx: &PlayCtx, change: InventoryChange) {
    ctx.shared.dynamic_hosts.lock().push(change);
    refresh_inventory_view(ctx);
}

/// After `add_host`/`group_by`: every host of the play sees the new
/// `groups`, its own `group_names`, and the variables of groups it joined.
pub(crate) fn refresh_inventory_view(ctx: &PlayCtx) {
    let inv = ctx.shared.inventory.read();
    let groups = ser(inv.groups_map());
    for (name, h) in &ctx.hosts {
        let layers = inv.host_layers(name);
        let names = ser(inv.group_names(name));
        let mut st = h.lock();
        st.inventory_layers = layers;
        let magic = Arc::make_mut(&mut st.magic);
        magic.insert("groups".into(), groups.clone());
        magic.insert("group_names".into(), names);
    }
}

/// `hostvars`: every host's variables, looked up on demand. Hosts of the
/// play come from their state; other inventory hosts (those `add_host`
/// created, or outside the play's pattern) and the implicit localhost from
/// the inventory and what earlier plays left them (facts and `set_fact`s),
/// as in ansible-core.
pub(crate) struct HostVars {
    pub hosts: HashMap<String, Arc<Mutex<HostState>>>,
    /// Facts and `set_fact`s of every host from the plays before this one.
    pub carried: HashMap<String, Persistent>,
    pub extra: Arc<VarMap>,
    pub shared: Arc<Shared>,
}

impl std::fmt::Debug for HostVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostVars")
            .field("hosts", &self.hosts.len())
            .finish()
    }
}

impl HostVars {
    /// The variables of an inventory host that has no state in this play.
    fn inventory_host(&self, name: &str) -> Option<Value> {
        let inv = self.shared.inventory.read();
        if !inv.hosts.contains_key(name) && inv.implicit_localhost(name).is_none() {
            return None;
        }
        let mut merged = VarMap::new();
        for l in inv.host_layers(name) {
            for (k, v) in l.iter() {
                merged.insert(k.clone(), v.clone());
            }
        }
        let carried = self.carried.get(name);
        let (facts, set_facts) = match carried {
            Some(p) => (Some(&p.facts), Some(&p.set_facts)),
            None => (None, None),
        };
        for layer in [facts, set_facts, Some(&self.extra)].into_iter().flatten() {
            for (k, v) in layer.iter() {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged.insert("inventory_hostname".into(), Value::from(name));
        merged.insert(
            "inventory_hostname_short".into(),
            Value::from(name.split('.').next().unwrap_or(name)),
        );
        merged.insert("group_names".into(), ser(inv.group_names(name)));
        Some(self.host_value(name, merged, None))
    }

    /// One host's variables, templated when read, in that host's own
    /// variables (and magic variables, when it is in the play).
    fn host_value(&self, name: &str, vars: VarMap, magic: Option<Arc<VarMap>>) -> Value {
        crate::template::LazyMap::value(Arc::new(HostVarsVars {
            host: name.to_string(),
            vars: Arc::new(vars),
            magic,
            shared: self.shared.clone(),
        }))
    }
}

/// `hostvars[host]`: see [`HostVars::host_value`].
struct HostVarsVars {
    host: String,
    vars: Arc<VarMap>,
    magic: Option<Arc<VarMap>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HostVarsVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hostvars[{}]", self.host)
    }
}

thread_local! {
    /// How deep `hostvars` reads nest on this thread: a variable that reads
    /// itself through `hostvars` would otherwise recurse without end.
    static HOSTVARS_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl crate::template::LazySource for HostVarsVars {
    fn get(&self, key: &str) -> Option<Value> {
        let raw = self.vars.get(key)?;
        let depth = HOSTVARS_DEPTH.with(|d| {
            d.set(d.get() + 1);
            d.get()
        });
        let out = if depth > 32 {
            Value::from(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "recursive loop detected in template for variable {key} (through hostvars)"
                ),
            ))
        } else {
            let mut scope = crate::template::Scope::new();
            scope.push(self.vars.clone());
            if let Some(m) = &self.magic {
                scope.push(m.clone());
            }
            let origin = crate::template::TemplateOrigin {
                host: Some(self.host.clone()),
                ..Default::default()
            };
            match self.shared.templar.render_value(raw, &scope, &origin) {
                Ok(v) => v,
                Err(e) => Value::from(
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        e.diag.message.clone(),
                    )
                    .with_source(e),
                ),
            }
        };
        HOSTVARS_DEPTH.with(|d| d.set(d.get() - 1));
        Some(out)
    }

    fn keys(&self) -> Vec<Value> {
        self.vars.keys().map(|k| Value::from(k.as_str())).collect()
    }
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("name", &self.name)
            .finish()
    }
}

impl crate::template::LazySource for HostVars {
    fn get(&self, name: &str) -> Option<Value> {
        let Some(host) = self.hosts.get(name) else {
            return self.inventory_host(name);
        };
        let h = host.lock();
        let mut merged = VarMap::new();
        for l in &h.inventory_layers {
            for (k, v) in l.iter() {
                merged.insert(k.clone(), v.clone());
            }
        }
        for layer in [&h.facts, &h.include_vars, &h.set_facts, &self.extra] {
            for (k, v) in layer.iter() {
                merged.insert(k.clone(), v.clone());
            }
        }
        for k in [
            "inventory_hostname",
            "inventory_hostname_short",
            "group_names",
        ] {
            if let Some(v) = h.magic.get(k) {
                merged.insert(k.to_string(), v.clone());
            }
        }
        let magic = h.magic.clone();
        drop(h);
        Some(self.host_value(name, merged, Some(magic)))
    }

    fn keys(&self) -> Vec<Value> {
        let mut names: Vec<String> = self.hosts.keys().cloned().collect();
        {
            let inv = self.shared.inventory.read();
            names.extend(
                inv.hosts
                    .keys()
                    .filter(|h| !self.hosts.contains_key(*h))
                    .cloned(),
            );
        }
        let mut keys: Vec<Value> = names.iter().map(|k| Value::from(k.as_str())).collect();
        keys.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        keys
    }
}

/// Any serialisable value as a template value.
pub(crate) fn ser<T: serde::Serialize>(t: T) -> Value {
    Value::from(minijinja::value::Serde(t))
}
