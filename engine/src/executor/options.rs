//! The run's public value types: the options the caller passes to
//! [`run_playbook`](super::run_playbook) and the summary it returns.
//!
//! They sit below every other executor file: per-host state keeps the options,
//! the play loop fills in the summary.

use std::path::PathBuf;

use crate::output::HostStats;
use crate::vars::VarMap;

use super::TagSelection;

/// Options of one run (the `keel play` flags).
#[derive(Clone)]
pub struct RunOptions {
    pub forks: usize,
    pub check: bool,
    pub diff: bool,
    pub tags: TagSelection,
    pub limit: Option<String>,
    pub extra_vars: VarMap,
    pub start_at_task: Option<String>,
    pub force_handlers: bool,
    pub verbosity: u8,
    /// `--ask-become-pass`, or the panel's stored secret.
    pub become_password: Option<String>,
    /// Extra role search paths (also passed to dynamic include_role).
    pub roles_path: Vec<PathBuf>,
    /// Where the inventory came from, for `meta: refresh_inventory`.
    pub inventory_sources: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            forks: 50,
            check: false,
            diff: false,
            tags: TagSelection::default(),
            limit: None,
            extra_vars: VarMap::new(),
            start_at_task: None,
            force_handlers: false,
            verbosity: 0,
            become_password: None,
            roles_path: Vec::new(),
            inventory_sources: Vec::new(),
        }
    }
}

/// What a whole run ended with.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Per host, in first-seen order.
    pub stats: Vec<(String, HostStats)>,
    /// A play could not run at all (bad pattern, template error in `hosts`).
    pub errors: Vec<String>,
}

impl RunSummary {
    /// ansible-playbook's exit code: 2 for failed hosts, 4 for unreachable
    /// ones, 1 for other errors, 0 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.stats.iter().any(|(_, s)| s.failed > 0) {
            2
        } else if self.stats.iter().any(|(_, s)| s.unreachable > 0) {
            4
        } else if !self.errors.is_empty() {
            1
        } else {
            0
        }
    }

    pub(super) fn stats_mut(&mut self, host: &str) -> &mut HostStats {
        if let Some(i) = self.stats.iter().position(|(h, _)| h == host) {
            &mut self.stats[i].1
        } else {
            self.stats.push((host.to_string(), HostStats::default()));
            &mut self.stats.last_mut().unwrap().1
        }
    }
}
