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
use std::sync::Arc;

use crate::inventory::Inventory;
use crate::output::Sink;
use crate::playbook::plan::Playbook;
use crate::template::Templar;
use crate::transport::ConnectionPool;

mod actions;
mod async_task;
mod fact_cache;
mod host;
mod include;
mod include_vars;
mod options;
mod play;
mod result;
mod task;

/// `--tags`/`--skip-tags`, by Ansible's rules (shared with the listings).
pub use crate::playbook::TagFilter as TagSelection;
pub use fact_cache::{FactCache, FactCacheError};
pub use options::{Gathering, RunOptions, RunSummary, StepPrompt, StopSignal};

/// Runs every play of a playbook, emitting events to `sink`, and returns the
/// recap. Connections are closed before it returns.
pub async fn run_playbook(
    playbook: &Playbook,
    inventory: Inventory,
    opts: RunOptions,
    sink: Arc<dyn Sink>,
) -> RunSummary {
    let templar = Templar::with_broken_conditionals(opts.allow_broken_conditionals);
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
    // Jobs the controller runs for `async` tasks finish before their
    // connections close (a job on the host runs on by itself).
    let jobs: Vec<_> = std::mem::take(&mut *shared.async_jobs.lock());
    if !jobs.is_empty() {
        sink.emit(&crate::output::Event::Verbose {
            level: 1,
            message: format!(
                "waiting for {} async job(s) Keel runs from the controller",
                jobs.len()
            ),
        });
    }
    for j in jobs {
        let _ = j.await;
    }
    pool.close_all().await;
    // The fact cache keeps what this run learned about each host.
    for (host, p) in &persistent {
        let facts: crate::vars::VarMap = p
            .facts
            .iter()
            .filter(|(k, _)| k.as_str() != "ansible_facts")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if facts.is_empty() {
            continue;
        }
        if let Err(e) = shared.opts.fact_cache.store(host, &facts) {
            sink.emit(&crate::output::Event::Warning {
                message: e.to_string(),
            });
        }
    }
    if !summary.parse_error {
        sink.emit(&crate::output::Event::Recap {
            stats: summary.stats.clone(),
        });
    }
    summary
}
