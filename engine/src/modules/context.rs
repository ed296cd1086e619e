//! Where a module runs: the [`TaskContext`] of one task on one host (its
//! connection, variables, become and environment) and the executor's
//! [`Reconnect`] handle for modules that drop the connection. It sits just
//! above `result.rs` and below the kit and the modules.

use std::path::PathBuf;
use std::sync::Arc;

use super::result::ModuleError;
use crate::template::{Scope, Templar, TemplateOrigin};
use crate::transport::{Become, Command, Connection, Output, TransportError};

/// Everything a module may use while it runs for one host.
pub struct TaskContext<'a> {
    /// `inventory_hostname`.
    pub host: &'a str,
    pub conn: &'a Connection,
    pub templar: &'a Templar,
    /// The host's variables at this task (for `template`'s rendering).
    pub scope: &'a Scope,
    pub origin: &'a TemplateOrigin,
    /// Read only by the driver ([`drive`](super::kit::drive)); modules plan instead.
    pub check_mode: bool,
    pub diff: bool,
    /// The task's `no_log`: the executor censors the result itself; this
    /// is for modules that pass it on (the Python fallback tells the module,
    /// which then keeps its arguments out of the host's log).
    pub no_log: bool,
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

    /// How the host is reached (address, user, keys, known_hosts, jump
    /// hosts), for a module that reaches it by other means than the
    /// connection (`synchronize`'s rsync over `ssh`).
    fn spec(&self) -> Option<crate::transport::ConnectSpec> {
        None
    }
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
