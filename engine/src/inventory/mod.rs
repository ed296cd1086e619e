//! Inventory: which hosts exist, how they group, and their variables.
//!
//! Sources (`-i`): an INI or YAML file, a directory of sources, an executable
//! (dynamic inventory, `--list`/`--host`), an `http(s)://` URL serving the same
//! JSON, or a comma-separated host list (`web1,web2,`). `group_vars/` and
//! `host_vars/` next to each source (and next to the playbook, added with
//! [`Inventory::add_vars_dir`]) are read too. Patterns (`hosts:`, `--limit`)
//! are evaluated by `pattern.rs`.

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::diag::Diagnostic;
use crate::template::VarMap;

/// An inventory error (a file problem, a script that failed, a bad pattern).
pub type InventoryError = Diagnostic;

#[derive(Debug, Clone, Default)]
pub struct Host {
    pub name: String,
    /// Vars set on the host in the inventory source itself.
    pub vars: VarMap,
    /// Direct groups, in the order first seen.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Group {
    pub name: String,
    pub vars: VarMap,
    pub children: Vec<String>,
    /// Hosts listed directly in this group.
    pub hosts: Vec<String>,
}

/// A loaded inventory. `all` and `ungrouped` always exist.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub hosts: IndexMap<String, Host>,
    pub groups: IndexMap<String, Group>,
}

impl Inventory {
    /// Loads and merges every source, in order. With no sources, the
    /// inventory holds only the implicit `localhost`.
    pub fn load(_sources: &[String]) -> Result<Inventory, InventoryError> {
        todo!()
    }

    /// Reads `group_vars/` and `host_vars/` under `dir` (the playbook's
    /// directory), at higher precedence than the inventory's own.
    pub fn add_vars_dir(&mut self, _dir: &Path) -> Result<(), InventoryError> {
        todo!()
    }

    /// Hosts matching an Ansible host pattern, in inventory order.
    pub fn select(&self, _pattern: &str) -> Result<Vec<String>, InventoryError> {
        todo!()
    }

    /// The variable layers of one host, lowest precedence first: group vars
    /// (`all`, then parents before children, then `group_vars/` files), then
    /// host vars (inline, then `host_vars/` files).
    pub fn host_layers(&self, _host: &str) -> Vec<Arc<VarMap>> {
        todo!()
    }

    /// All groups the host is in (transitively), sorted, without `all`:
    /// the `group_names` magic variable.
    pub fn group_names(&self, _host: &str) -> Vec<String> {
        todo!()
    }

    /// The `groups` magic variable: group name → host names.
    pub fn groups_map(&self) -> IndexMap<String, Vec<String>> {
        todo!()
    }
}
