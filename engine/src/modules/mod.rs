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

pub mod args;
mod collections;
pub mod commands;
pub mod context;
pub mod crypto;
pub mod database;
pub mod files;
pub mod kit;
pub mod module;
pub mod net;
pub mod packages;
pub mod python;
pub mod registry;
pub mod result;
pub mod source;
pub mod system;
pub mod utility;

pub use context::{round_trips_on_this_thread, Reconnect, TaskContext, RECONNECT};
pub use kit::Plan;
pub use module::{delegate, Module, ModuleRef};
pub use registry::{canonical_name, lookup, module_names};
pub use result::{Args, FileDiff, ModuleError, ModuleResult};
