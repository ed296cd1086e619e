//! Per-host state during a run, and the variable scope of a host at a task.
//!
//! The scope is built from shared layers (`Arc<VarMap>`), lowest precedence
//! first, following Ansible's documented order: role defaults, inventory
//! (group then host, as the inventory orders them), facts, play vars,
//! vars_files, role vars, block and task vars, include_vars, set_fact and
//! register, role params, include params, extra vars, then the magic
//! variables. Building one is a handful of `Arc` clones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minijinja::value::{Object, Value};

use crate::inventory::Inventory;
use crate::output::{HostStats, Sink};
use crate::playbook::plan::{Play, Task};
use crate::template::{Scope, Templar, VarMap};
use crate::transport::{Connection, ConnectionPool};

use super::RunOptions;

/// What the whole run shares.
pub(crate) struct Shared {
    pub inventory: std::sync::RwLock<Inventory>,
    pub opts: RunOptions,
    pub templar: Arc<Templar>,
    pub pool: Arc<ConnectionPool>,
    pub sink: Arc<dyn Sink>,
    pub extra_vars: Arc<VarMap>,
    pub forks: Arc<tokio::sync::Semaphore>,
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
            inventory: std::sync::RwLock::new(inventory),
            extra_vars: Arc::new(opts.extra_vars.clone()),
            opts,
            templar,
            pool,
            sink,
            forks,
        }
    }
}

/// Facts and set_fact values: they outlive a play.
#[derive(Clone, Default)]
pub(crate) struct Persistent {
    pub facts: Arc<VarMap>,
    pub set_facts: Arc<VarMap>,
}

/// One host's state within a play.
pub(crate) struct HostState {
    pub name: String,
    pub inventory_layers: Vec<Arc<VarMap>>,
    pub facts: Arc<VarMap>,
    pub set_facts: Arc<VarMap>,
    pub include_vars: Arc<VarMap>,
    /// Loop and include parameters of dynamic includes being run.
    pub include_params: Vec<Arc<VarMap>>,
    /// Magic variables fixed for the play (inventory_hostname, groups...).
    pub magic: Arc<VarMap>,
    pub failed: bool,
    pub unreachable: bool,
    /// `meta: end_host`, or removed by `any_errors_fatal`.
    pub ended: bool,
    /// Handler indexes notified and not yet run.
    pub notified: Vec<usize>,
    pub stats: HostStats,
    pub conn: Option<Arc<Connection>>,
}

impl HostState {
    pub fn active(&self) -> bool {
        !self.failed && !self.unreachable && !self.ended
    }

    pub fn persistent(&self) -> Persistent {
        Persistent {
            facts: self.facts.clone(),
            set_facts: self.set_facts.clone(),
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
            let long = if k.starts_with("ansible_") {
                k.clone()
            } else {
                format!("ansible_{k}")
            };
            facts_map.insert(long, v.clone());
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
    if let Some(role) = task.and_then(|t| t.role.as_ref()) {
        s.push(role.defaults.clone());
    }
    for l in &host.inventory_layers {
        s.push(l.clone());
    }
    s.push(host.facts.clone());
    s.push(play.vars.clone());
    s.push(play.vars_files.clone());
    if let Some(role) = task.and_then(|t| t.role.as_ref()) {
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

/// `hostvars`: every host's variables, looked up on demand.
#[derive(Debug)]
pub(crate) struct HostVars {
    pub hosts: HashMap<String, Arc<Mutex<HostState>>>,
    pub extra: Arc<VarMap>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("name", &self.name)
            .finish()
    }
}

impl Object for HostVars {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let host = self.hosts.get(name)?;
        let h = host.lock().ok()?;
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
        Some(ser(&merged))
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let mut keys: Vec<Value> = self.hosts.keys().map(|k| Value::from(k.as_str())).collect();
        keys.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        minijinja::value::Enumerator::Values(keys)
    }
}

/// Any serialisable value as a template value.
pub(crate) fn ser<T: serde::Serialize>(t: T) -> Value {
    Value::from(minijinja::value::Serde(t))
}
