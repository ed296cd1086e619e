//! The executor: runs a resolved [`Playbook`] against an [`Inventory`].
//!
//! Per play it selects hosts, splits them into `serial` batches, opens one
//! connection per host (concurrently, through the [`ConnectionPool`]), and
//! walks the plan. The linear strategy runs each task on every active host
//! before moving on; `free` lets every host run ahead on its own. Within a
//! task, hosts run concurrently under the forks semaphore, as tokio tasks.
//!
//! Layout: `host.rs` (per-host state and variable scopes), `task.rs` (one task
//! on one host: loops, conditions, retries, results), `actions.rs` (the
//! actions the executor handles itself: `set_fact`, `include_vars`, `meta`),
//! `play.rs` (plays, batches, blocks, includes, handlers).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::inventory::Inventory;
use crate::output::{HostStats, Sink};
use crate::playbook::plan::Playbook;
use crate::template::{Templar, VarMap};
use crate::transport::ConnectionPool;

mod actions;
mod host;
mod include;
mod include_vars;
mod play;
mod task;

/// `--tags`/`--skip-tags`, by Ansible's rules (shared with the listings).
pub use crate::playbook::TagFilter as TagSelection;

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

    fn stats_mut(&mut self, host: &str) -> &mut HostStats {
        if let Some(i) = self.stats.iter().position(|(h, _)| h == host) {
            &mut self.stats[i].1
        } else {
            self.stats.push((host.to_string(), HostStats::default()));
            &mut self.stats.last_mut().unwrap().1
        }
    }
}

/// Runs every play of a playbook, emitting events to `sink`, and returns the
/// recap. Connections are closed before it returns.
pub async fn run_playbook(
    playbook: &Playbook,
    inventory: Inventory,
    opts: RunOptions,
    sink: Arc<dyn Sink>,
) -> RunSummary {
    let templar = Templar::new();
    let pool = Arc::new(ConnectionPool::new());
    let shared = Arc::new(host::Shared::new(
        inventory,
        opts,
        templar,
        pool.clone(),
        sink.clone(),
    ));
    let mut summary = RunSummary::default();
    // Facts and set_fact values persist across plays of one run.
    let mut persistent: HashMap<String, host::Persistent> = HashMap::new();
    sink.emit(&crate::output::Event::PlaybookStart {
        path: playbook.path.display().to_string(),
    });
    sink.emit(&crate::output::Event::Verbose {
        level: 2,
        message: format!(
            "{} plays in {}",
            playbook.plays.len(),
            playbook.path.display()
        ),
    });
    for p in &playbook.plays {
        let end = play::run_play(&shared, p, &mut persistent, &mut summary).await;
        if end == play::PlayEnd::AbortRun {
            break;
        }
    }
    pool.close_all().await;
    sink.emit(&crate::output::Event::Recap {
        stats: summary.stats.clone(),
    });
    summary
}
