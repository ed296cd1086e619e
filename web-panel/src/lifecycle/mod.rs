//! A service's lifecycle, typed: where it is ([`Status`]), which step of
//! the provisioning flow owns it ([`Step`]), and the one way its status
//! changes ([`transition`]).
//!
//! It sits below both the domain requests (`services::servers` create,
//! retry, delete; `services::power`) and the flow's job handlers
//! (`provision/`, `reconcile.rs`), which all decide on a service's status
//! through the table in `status.rs` and change it only through
//! `transition.rs`. Adding a status is one variant in `status.rs`: every
//! `match` on it (the table first of all) stops compiling until it says
//! what the new status means.
//!
//! Layout: `status.rs` the two enums, their database and JSON spelling and
//! the table of what each status means; `transition.rs` the compare-and-set
//! status change with its audit row; `jobs.rs` the flow's job kinds, each a
//! typed payload with the one constructor of its spec.

pub mod jobs;
pub mod status;
pub mod transition;

pub use status::{Rules, Status, Step, UnknownValue};
pub use transition::transition;
