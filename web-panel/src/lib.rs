//! Keel's web panel as a library; `main.rs` is a thin CLI over it.
//!
//! Layout:
//! - `clock`: where queue logic reads the time (system or manual).
//! - `store`: the database behind the panel, SQLite or PostgreSQL, chosen
//!   from the URL at startup.
//! - `queue`: durable jobs: enqueue in the caller's transaction, leased
//!   claims, retries, coalescing and serialisation keys, cron, cancellation.
//! - `testsupport` (feature `testsupport`): throw-away PostgreSQL servers
//!   for tests and benchmarks.

pub mod clock;
pub mod queue;
pub mod store;
#[cfg(feature = "testsupport")]
pub mod testsupport;
