//! Modules: the units of work a task names (`copy`, `file`, `command`...).
//!
//! Every module is native Rust and runs its remote side as plain `sh` over the
//! host's [`Connection`]: no Python on the target. A module is query →
//! decide → apply: [`Module::plan`] *queries* the host's state (batching every
//! check it needs into one round trip) and decides, changing nothing; the
//! driver behind [`Module::run`] *applies* the planned change only outside
//! check mode. `changed` is reported from what was observed.
//!
//! Layout: one file per module, grouped by concept (`files/`, `commands/`,
//! `system/`, `utility/`, ...); [`kit`] holds what modules share and shows
//! how to write one. [`registry`] maps names (short and fully qualified) to
//! implementations. `args.rs` has the typed argument parsing helpers every
//! module uses, with "did you mean" errors for unknown arguments.

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::Value;

use crate::template::{Scope, Templar, TemplateOrigin};
use crate::transport::{Become, Command, Connection, Output, TransportError};
use crate::vars::VarMap;

pub mod args;
pub mod commands;
pub mod database;
pub mod files;
pub mod kit;
pub mod net;
pub mod packages;
pub mod registry;
pub mod source;
pub mod system;
pub mod utility;

pub use kit::Plan;
pub use registry::{canonical_name, lookup, module_names};

/// Everything a module may use while it runs for one host.
pub struct TaskContext<'a> {
    /// `inventory_hostname`.
    pub host: &'a str,
    pub conn: &'a Connection,
    pub templar: &'a Templar,
    /// The host's variables at this task (for `template`'s rendering).
    pub scope: &'a Scope,
    pub origin: &'a TemplateOrigin,
    /// Read only by the driver ([`kit::drive`]); modules plan instead.
    pub check_mode: bool,
    pub diff: bool,
    pub become_: Option<Become>,
    /// The task's `environment`, already templated.
    pub env: Vec<(String, String)>,
    /// Where relative `src` paths are looked up: role `files/` or
    /// `templates/` first, then the role, then the playbook directory.
    pub search_paths: &'a [PathBuf],
    pub timeout: Option<std::time::Duration>,
}

impl TaskContext<'_> {
    /// Builds a [`Command`] carrying the task's become and environment.
    pub fn command(&self, script: impl Into<String>) -> Command {
        Command {
            script: script.into(),
            stdin: None,
            become_: self.become_.clone(),
            env: self.env.clone(),
            timeout: self.timeout,
        }
    }

    /// Runs a script on the host.
    pub async fn run(
        &self,
        script: impl Into<String>,
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, ModuleError> {
        let mut cmd = self.command(script);
        cmd.stdin = stdin;
        ROUND_TRIPS.with(|c| c.set(c.get() + 1));
        Ok(self.conn.exec(&cmd).await?)
    }

    /// Finds a controller-side file named by a relative `src` (e.g. `files/x` or
    /// `templates/x.j2`), trying `subdir` of each search path first.
    pub fn find_file(&self, subdir: &str, name: &str) -> Option<PathBuf> {
        crate::search::find(self.search_paths, Some(subdir), name).ok()
    }
}

thread_local! {
    static ROUND_TRIPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many commands [`TaskContext::run`] has sent from this thread: lets
/// tests (on a current-thread runtime) assert a module's round-trip count.
pub fn round_trips_on_this_thread() -> u64 {
    ROUND_TRIPS.with(|c| c.get())
}

/// A unified diff of one file (or a before/after pair of anything).
#[derive(Debug, Clone, Default)]
pub struct FileDiff {
    pub before_header: String,
    pub after_header: String,
    pub before: String,
    pub after: String,
}

/// What a module reports. `data` holds the module's return values (`rc`,
/// `stdout`, `stat`, `path`...), which `register` exposes next to `changed`,
/// `failed`, `msg`.
#[derive(Debug, Clone, Default)]
pub struct ModuleResult {
    pub changed: bool,
    pub failed: bool,
    pub skipped: bool,
    pub msg: Option<String>,
    pub data: IndexMap<String, Value>,
    pub diff: Vec<FileDiff>,
    /// Facts to set on the host (`set_fact`, `setup`, `include_vars`).
    pub facts: Option<VarMap>,
    /// `set_fact` with `cacheable`: no different here, kept for the result.
    pub facts_cacheable: bool,
}

impl ModuleResult {
    pub fn ok() -> Self {
        Self::default()
    }
    pub fn changed(changed: bool) -> Self {
        ModuleResult {
            changed,
            ..Default::default()
        }
    }
    pub fn failed(msg: impl Into<String>) -> Self {
        ModuleResult {
            failed: true,
            msg: Some(msg.into()),
            ..Default::default()
        }
    }
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_string(), value.into());
        self
    }
    pub fn with_msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = Some(msg.into());
        self
    }
}

/// Why a module could not run: bad arguments (a task-level failure), or the
/// host went away (the host becomes unreachable).
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{0}")]
    Args(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    #[error("{0}")]
    Failed(String),
}

/// The module arguments after templating: a map of name to value.
pub type Args = IndexMap<String, Value>;

/// A module implementation.
///
/// A module implements [`Module::plan`]: it queries the host and decides,
/// returning a [`Plan`] whose change step runs only when the driver
/// ([`kit::drive`], behind [`Module::run`]) says so. See [`kit`] for how to
/// write one.
#[async_trait::async_trait]
pub trait Module: Send + Sync {
    /// Queries the host and decides what to change, changing nothing.
    /// `args` are already templated (except for what the module renders
    /// itself, such as a template file's body).
    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError>;

    /// Runs the module for one host: [`Module::plan`], then the change
    /// unless the task is in check mode. Modules do not override this: it
    /// is the only place that reads `check_mode`.
    async fn run(&self, args: &Args, ctx: &TaskContext<'_>) -> Result<ModuleResult, ModuleError> {
        kit::drive(self, args, ctx).await
    }

    /// The arguments the module accepts, declared once in its file; the
    /// resolver rejects any other name before a connection opens. `None`
    /// means any names (`set_fact`), or that the module hands its arguments
    /// to another that checks them (`package`).
    fn params(&self) -> Option<&'static args::Params> {
        None
    }

    /// Whether the module runs on the controller only (no connection needed):
    /// `debug`, `set_fact`, `assert`, `fail`, `pause`...
    fn controller_only(&self) -> bool {
        false
    }

    /// Whether the old `key=value` string form puts leftover words into
    /// `_raw_params` (`command`, `shell`, `raw`, `script`).
    fn takes_free_form(&self) -> bool {
        false
    }

    /// Whether the module drops the host's connection and dials it again
    /// (`reboot`): the executor then gives it a [`Reconnect`] handle,
    /// reachable through [`TaskContext::reconnect`].
    fn reconnects(&self) -> bool {
        false
    }
}

/// Replaces the host's connection with a fresh one, which the rest of the
/// run then uses (the old one is dead after a reboot).
#[async_trait::async_trait]
pub trait Reconnect: Send + Sync {
    /// Forgets the host's current connection and dials again, with
    /// `connect_timeout` instead of the host's own when given.
    async fn reconnect(
        &self,
        connect_timeout: Option<std::time::Duration>,
    ) -> Result<Arc<Connection>, TransportError>;
}

tokio::task_local! {
    /// Set by the executor around [`Module::run`] for modules that
    /// [`reconnect`](Module::reconnects); a task-local so `TaskContext`'s
    /// shape (built by tests too) stays as it is.
    pub static RECONNECT: Arc<dyn Reconnect>;
}

impl TaskContext<'_> {
    /// The executor's handle to reconnect this host, when it gave one.
    pub fn reconnect_handle(&self) -> Option<Arc<dyn Reconnect>> {
        RECONNECT.try_with(Arc::clone).ok()
    }
}

/// A shared handle to a module implementation.
pub type ModuleRef = Arc<dyn Module>;
