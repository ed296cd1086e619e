//! The durable job queue. Everything the panel does after a click is a job:
//! the panel enqueues it in the same transaction as the state change that
//! caused it ([`enqueue`]), a [`worker::Worker`] claims it with a lease, runs
//! its handler, and records the outcome. See `docs/queue.md` for the
//! semantics (at-least-once, coalescing keys, serialisation keys, retries,
//! cron, cancellation) and why the queue is written here rather than taken
//! from a crate.
//!
//! Layout: the job model (spec, row, states, outcomes) is `crate::job`,
//! one level down so the store can persist it without importing the
//! queue; `mod.rs` re-exports it and holds the enqueue/cancel API,
//! `policy.rs` retry policies, `worker.rs` the worker loop and handler trait,
//! `cron.rs` schedules.
//!
//! Handlers must be idempotent: a job may run again after a worker dies
//! mid-run, or when its lease expires while it is still running somewhere
//! cut off from the database.

pub mod cron;
pub mod log;
pub mod policy;
pub mod worker;

use crate::store::{Store, StoreError, Tx};

pub use crate::job::{
    Actor, Attempt, AttemptOutcome, CancelOutcome, Completion, EnqueueOutcome, FailureRecord, Job,
    JobFilter, JobSpec, JobState, RunAt, DEFAULT_QUEUE,
};
pub use policy::{Backoff, RetryPolicy};
pub use worker::{Failure, JobContext, JobError, JobHandler, Registry, Worker, WorkerConfig};

/// Enqueues a job inside the caller's transaction. The job becomes visible
/// to workers only when the caller commits, so a state change and the job it
/// causes are stored together or not at all.
pub async fn enqueue(tx: &mut Tx, spec: JobSpec) -> Result<EnqueueOutcome, StoreError> {
    let store = tx.store.clone();
    let outcome = store.enqueue(tx, &spec, store.now()).await?;
    tx.enqueued = true;
    Ok(outcome)
}

/// Enqueues several jobs inside the caller's transaction, in one statement
/// (`unnest` on PostgreSQL, `json_each` on SQLite) instead of one round trip
/// per job. The outcomes are those of calling [`enqueue`] on each spec in
/// order, coalescing keys included: a spec whose key matches a queued job,
/// or an earlier spec of the batch, gets that job back as `coalesced`.
pub async fn enqueue_many(
    tx: &mut Tx,
    specs: &[JobSpec],
) -> Result<Vec<EnqueueOutcome>, StoreError> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let store = tx.store.clone();
    let outcomes = store.enqueue_many(tx, specs, store.now()).await?;
    tx.enqueued = true;
    Ok(outcomes)
}

/// Enqueues one job in a transaction of its own.
pub async fn enqueue_now(store: &Store, spec: JobSpec) -> Result<EnqueueOutcome, StoreError> {
    let mut tx = store.begin().await?;
    let out = enqueue(&mut tx, spec).await?;
    tx.commit().await?;
    Ok(out)
}

/// Cancels a job: a queued one is marked cancelled, a running one is asked
/// to stop (its worker sees the flag at the next heartbeat). Admins may
/// cancel any job; other users only their own.
pub async fn cancel(store: &Store, job_id: i64, actor: Actor) -> Result<CancelOutcome, StoreError> {
    let out = store.cancel(job_id, actor, store.now()).await?;
    if out == CancelOutcome::Cancelled {
        // A cancelled job may have been blocking nothing, but a cheap poke
        // keeps waiting workers honest.
        store.poke();
    }
    Ok(out)
}
