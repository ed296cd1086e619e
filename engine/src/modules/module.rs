//! The [`Module`] trait every module implements, and the handle
//! ([`ModuleRef`]) the registry and the executor pass around.
//!
//! It sits above the kit's [`Plan`] (what `plan` returns) and the argument
//! declarations ([`Params`]), and below every module file: a module imports
//! this trait, never the registry or a sibling module.

use std::sync::Arc;

use super::args::Params;
use super::context::TaskContext;
use super::kit::{drive, Plan};
use super::result::{Args, ModuleError, ModuleResult};

/// A module implementation.
///
/// A module implements [`Module::plan`]: it queries the host and decides,
/// returning a [`Plan`] whose change step runs only when the driver
/// ([`drive`], behind [`Module::run`]) says so. See [`kit`](super::kit) for how to
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
    /// hands the plan to the driver, the only reader of `check_mode`.
    async fn run(&self, args: &Args, ctx: &TaskContext<'_>) -> Result<ModuleResult, ModuleError> {
        drive(self.plan(args, ctx).await?, ctx).await
    }

    /// The arguments the module accepts, declared once in its file; the
    /// resolver rejects any other name before a connection opens. `None`
    /// means any names (`set_fact`), or that the module hands its arguments
    /// to another that checks them (`package`).
    fn params(&self) -> Option<&'static Params> {
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
    /// (`reboot`), or reaches the host by other means with the same
    /// settings (`synchronize`): the executor then gives it a [`Reconnect`]
    /// handle, reachable through [`TaskContext::reconnect`].
    fn reconnects(&self) -> bool {
        false
    }
}

/// A shared handle to a module implementation.
pub type ModuleRef = Arc<dyn Module>;

/// Hands a task to another module (`package` to `apt`, `service` to
/// `systemd`): its plan, whichever way the driver settles it. The module to
/// hand to is given, never looked up, so a module needs no registry.
pub fn delegate<'a>(module: ModuleRef, args: Args, ctx: &'a TaskContext<'a>) -> Plan<'a> {
    let (m2, args2) = (module.clone(), args.clone());
    Plan::fused(
        async move { module.plan(&args, ctx).await?.planned().await },
        async move { m2.plan(&args2, ctx).await?.applied().await },
    )
}
