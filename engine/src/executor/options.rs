//! The run's public value types: the options the caller passes to
//! [`run_playbook`](super::run_playbook) and the summary it returns.
//!
//! They sit below every other executor file: per-host state keeps the options,
//! the play loop fills in the summary.

use std::path::PathBuf;

use crate::output::HostStats;
use crate::playbook::plan::BecomeSettings;
use crate::transport::ConnectDefaults;
use crate::vars::VarMap;

use super::fact_cache::FactCache;
use super::TagSelection;

/// `gathering` (`ANSIBLE_GATHERING`): when plays gather facts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gathering {
    /// Unless the play says `gather_facts: false`.
    #[default]
    Implicit,
    /// Only when the play says `gather_facts: true`.
    Explicit,
    /// As `implicit`, but not for hosts whose facts are already known (from
    /// an earlier play or the fact cache).
    Smart,
}

impl Gathering {
    pub fn parse(s: &str) -> Option<Gathering> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "implicit" => Gathering::Implicit,
            "explicit" => Gathering::Explicit,
            "smart" => Gathering::Smart,
            _ => return None,
        })
    }
}

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
    /// `ALLOW_BROKEN_CONDITIONALS`: judge a condition that gives no boolean
    /// by its truthiness instead of failing the task.
    pub allow_broken_conditionals: bool,
    /// `ANSIBLE_DEBUG`: the `META:` line of each implicit handler flush that
    /// runs handlers, as ansible-core's debug output has it.
    pub debug: bool,
    pub verbosity: u8,
    /// `--ask-become-pass`, or the panel's stored secret.
    pub become_password: Option<String>,
    /// Extra role search paths (also passed to dynamic include_role).
    pub roles_path: Vec<PathBuf>,
    /// `collections_path` (also passed to dynamic include_role).
    pub collections_path: Vec<PathBuf>,
    /// Where the inventory came from, for `meta: refresh_inventory`.
    pub inventory_sources: Vec<String>,
    /// Connection variables the command line or `ansible.cfg` set
    /// (`ansible_user` from `-u`/`remote_user`, `ansible_timeout`,
    /// `ansible_connection`...): below every inventory and play variable, as
    /// ansible-core's play context fills them in.
    pub connection_vars: VarMap,
    /// `-b`, `--become-user`, `--become-method` and `[privilege_escalation]`:
    /// used where neither keywords nor variables say.
    pub become_defaults: BecomeSettings,
    /// Connection settings that are not variables (`--ssh-common-args`,
    /// `host_key_checking`, `-k`).
    pub connect: ConnectDefaults,
    pub gathering: Gathering,
    pub fact_cache: FactCache,
    /// `poll_interval`: seconds between checks of an `async` task with
    /// no `poll`.
    pub poll_interval: u64,
    /// Set from outside to stop the run between two tasks (the panel
    /// cancelling a job): the task in progress finishes on every host, no
    /// later task or handler starts, and the summary says where it stopped.
    pub stop: StopSignal,
    /// `--step`: asked before each task (its banner name); `false` skips
    /// the task on every host.
    pub step: Option<StepPrompt>,
}

/// How `--step` asks whether to run a task (the CLI asks on its terminal).
#[derive(Clone)]
pub struct StepPrompt(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for StepPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepPrompt")
    }
}

/// A flag the caller raises to stop a run before its next task. Cloning
/// shares the flag.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StopSignal {
    pub fn stop(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
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
            allow_broken_conditionals: false,
            debug: false,
            verbosity: 0,
            become_password: None,
            roles_path: Vec::new(),
            collections_path: Vec::new(),
            inventory_sources: Vec::new(),
            connection_vars: VarMap::new(),
            become_defaults: BecomeSettings::default(),
            connect: ConnectDefaults::default(),
            gathering: Gathering::Implicit,
            fact_cache: FactCache::Memory,
            poll_interval: 15,
            stop: StopSignal::default(),
            step: None,
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
    /// The run stopped on an included file that does not parse, which
    /// ansible-core raises as a parser error: exit code 4, no recap.
    pub parse_error: bool,
    /// Hosts still failed when the last play that ran ended: failed and not
    /// rescued or cleared by `meta: clear_host_errors`, in that play or an
    /// earlier one. What ansible-core's exit code is judged on, not the
    /// recap's counters (a host whose errors were cleared counts failures
    /// in the recap, yet the run exits 0).
    pub failed_hosts: std::collections::BTreeSet<String>,
    /// Hosts found unreachable in the last play that ran, or in an earlier
    /// one.
    pub unreachable_hosts: std::collections::BTreeSet<String>,
}

impl RunSummary {
    /// ansible-playbook's exit code, as its strategy returns it at the end
    /// of the last play: 4 for a parser error or unreachable hosts (before
    /// failed ones), 2 for
    /// hosts still failed, 1 for other errors, 0 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.parse_error || !self.unreachable_hosts.is_empty() {
            4
        } else if !self.failed_hosts.is_empty() {
            2
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
