//! Check mode by construction: the one place that decides whether a planned
//! change is made.
//!
//! A module's [`Module::plan`](crate::modules::Module::plan) queries the host and decides; it never
//! changes anything. What it returns is a [`Plan`]: either nothing to do
//! ([`Plan::Done`]), or a change ([`Plan::Change`]) made of the result check
//! mode reports (`changed`, the diff, the values the change will produce)
//! and the `apply` step, a future that makes the change when awaited.
//! [`drive`] awaits it only outside check mode, so no module tests
//! `check_mode` itself, and a module cannot forget to.

use std::future::Future;
use std::pin::Pin;

use super::diff::diff_value;
use crate::modules::context::TaskContext;
use crate::modules::result::{ModuleError, ModuleResult};

/// The change step of a [`Plan`]: nothing in it runs until it is awaited.
pub type Apply<'a> = Pin<Box<dyn Future<Output = Result<ModuleResult, ModuleError>> + Send + 'a>>;

/// What a module decided after its query.
pub enum Plan<'a> {
    /// Nothing to change (the host is as wanted, the module only reads, or
    /// the task failed while deciding): report this result.
    Done(ModuleResult),
    /// Something to change.
    Change {
        /// The result as check mode reports it.
        planned: ModuleResult,
        /// Makes the change and returns the final result.
        apply: Apply<'a>,
    },
    /// A module that learns and changes in the same round trip, or cannot
    /// know what it would change without doing it (`command`, `unarchive`):
    /// check mode runs `preview`, a read-only form of the same step (such as
    /// the `creates` test alone), instead of `apply`.
    Fused {
        preview: Apply<'a>,
        apply: Apply<'a>,
    },
}

impl<'a> Plan<'a> {
    /// Nothing to change: report `result`.
    pub fn done(result: ModuleResult) -> Plan<'a> {
        Plan::Done(result)
    }

    /// A change: check mode reports `planned`; otherwise `apply` runs.
    pub fn change(
        planned: ModuleResult,
        apply: impl Future<Output = Result<ModuleResult, ModuleError>> + Send + 'a,
    ) -> Plan<'a> {
        Plan::Change {
            planned,
            apply: Box::pin(apply),
        }
    }
}

impl<'a> Plan<'a> {
    /// One step, read-only in check mode: see [`Plan::Fused`].
    pub fn fused(
        preview: impl Future<Output = Result<ModuleResult, ModuleError>> + Send + 'a,
        apply: impl Future<Output = Result<ModuleResult, ModuleError>> + Send + 'a,
    ) -> Plan<'a> {
        Plan::Fused {
            preview: Box::pin(preview),
            apply: Box::pin(apply),
        }
    }
}

impl<'a> Plan<'a> {
    /// Adds to whichever result the plan ends with (planned, applied or
    /// done): for a module that wraps a kit plan with its own return values.
    pub fn map(self, f: impl Fn(&mut ModuleResult) + Send + Sync + 'a) -> Plan<'a> {
        let f = std::sync::Arc::new(f);
        let after = |fut: Apply<'a>,
                     f: std::sync::Arc<dyn Fn(&mut ModuleResult) + Send + Sync + 'a>|
         -> Apply<'a> {
            Box::pin(async move {
                let mut r = fut.await?;
                f(&mut r);
                Ok(r)
            })
        };
        match self {
            Plan::Done(mut r) => {
                f(&mut r);
                Plan::Done(r)
            }
            Plan::Change { mut planned, apply } => {
                f(&mut planned);
                Plan::Change {
                    planned,
                    apply: after(apply, f),
                }
            }
            Plan::Fused { preview, apply } => Plan::Fused {
                preview: after(preview, f.clone()),
                apply: after(apply, f),
            },
        }
    }
}

impl<'a> Plan<'a> {
    /// The result check mode reports: the planned one, running only a
    /// [`Plan::Fused`] preview.
    pub async fn planned(self) -> Result<ModuleResult, ModuleError> {
        match self {
            Plan::Done(r) | Plan::Change { planned: r, .. } => Ok(r),
            Plan::Fused { preview, .. } => preview.await,
        }
    }

    /// Makes the change (if any) and returns the final result.
    pub async fn applied(self) -> Result<ModuleResult, ModuleError> {
        match self {
            Plan::Done(r) => Ok(r),
            Plan::Change { apply, .. } | Plan::Fused { apply, .. } => apply.await,
        }
    }
}

impl From<ModuleResult> for Plan<'_> {
    fn from(r: ModuleResult) -> Self {
        Plan::Done(r)
    }
}

/// Settles a module's plan for one host: applies it unless the task is in
/// check mode. [`Module::run`](crate::modules::Module::run) hands every plan
/// here; nothing else reads `TaskContext::check_mode`.
pub async fn drive(plan: Plan<'_>, ctx: &TaskContext<'_>) -> Result<ModuleResult, ModuleError> {
    let mut r = if ctx.check_mode {
        plan.planned().await?
    } else {
        plan.applied().await?
    };
    // ansible-core's results carry their diff (`result.diff`, a list when
    // there are several), which playbooks read after `register`.
    if !r.diff.is_empty() && !r.data.contains_key("diff") {
        let value = match r.diff.as_slice() {
            [one] => diff_value(one),
            many => minijinja::Value::from(many.iter().map(diff_value).collect::<Vec<_>>()),
        };
        r.data.insert("diff".into(), value);
    }
    Ok(r)
}
