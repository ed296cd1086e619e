//! What every part of the store shares: the [`StoreBackend`] trait both
//! backends implement, the [`Store`] handle callers hold (a backend plus the
//! clock), the transaction [`Tx`], and [`StoreError`]. The trait, the handle
//! and the transaction name each other, so they live together here; the
//! backends (`sqlite.rs`, `postgres.rs`, `shared.rs`) sit above this file,
//! and `mod.rs` above them picks one from the URL.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::clock::{SharedClock, UnixMillis};
use crate::job::{
    Actor, Attempt, CancelOutcome, Completion, EnqueueOutcome, FailureRecord, Job, JobFilter,
    JobSpec,
};

/// Errors from the store. Callers see the backend error as context.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: expected sqlite:… or postgres://…")]
    UnsupportedUrl(String),
    #[error("job {0} not found")]
    JobNotFound(i64),
    #[error("user {user_id} may not cancel job {job_id}, which belongs to someone else")]
    Forbidden { job_id: i64, user_id: i64 },
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("a transaction from one backend was used with the other")]
    WrongBackend,
}

/// Which database sits behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// An open transaction on either backend. The panel makes its state change
/// and enqueues the job it causes in the same `Tx`, then commits.
pub struct Tx {
    pub(crate) inner: TxInner,
    /// Set when a job was enqueued, so commit can wake local workers.
    pub(crate) enqueued: bool,
    pub(crate) store: Store,
}

#[doc(hidden)]
pub enum TxInner {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    /// The SQLite transaction, for the caller's own statements.
    pub fn as_sqlite(&mut self) -> Option<&mut sqlx::SqliteConnection> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => Some(&mut **tx),
            TxInner::Postgres(_) => None,
        }
    }

    /// The PostgreSQL transaction, for the caller's own statements.
    pub fn as_postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match &mut self.inner {
            TxInner::Postgres(tx) => Some(&mut **tx),
            TxInner::Sqlite(_) => None,
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.inner {
            TxInner::Sqlite(tx) => tx.commit().await?,
            TxInner::Postgres(tx) => tx.commit().await?,
        }
        if self.enqueued {
            self.store.poke();
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.inner {
            TxInner::Sqlite(tx) => tx.rollback().await?,
            TxInner::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// How a worker claims from one named queue.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub queue: &'a str,
    /// Most jobs to claim in this call.
    pub max: u32,
    /// At most this many jobs of the queue may run at once across all nodes.
    pub queue_limit: Option<u32>,
    pub worker: &'a str,
    pub lease_token: i64,
    pub now: UnixMillis,
    pub lease_until: UnixMillis,
}

/// What a heartbeat learnt about one running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    pub job_id: i64,
    /// The lease is no longer ours (expired and re-claimed, or job gone).
    pub lost: bool,
    pub cancel_requested: bool,
}

/// Storage operations the queue needs. Both backends implement every method
/// with the same meaning; `tests/queue_story.rs` holds them to it.
#[async_trait]
pub trait StoreBackend: Send + Sync + 'static {
    fn kind(&self) -> BackendKind;
    fn as_sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        None
    }
    fn as_postgres_pool(&self) -> Option<&sqlx::PgPool> {
        None
    }
    async fn begin_tx(&self) -> Result<TxInner, StoreError>;
    async fn enqueue(
        &self,
        tx: &mut Tx,
        spec: &JobSpec,
        now: UnixMillis,
    ) -> Result<EnqueueOutcome, StoreError>;
    /// Enqueues several jobs in one statement, with the meaning of calling
    /// [`StoreBackend::enqueue`] on each in order: a spec whose coalescing
    /// key matches a queued job (or an earlier spec of the same batch)
    /// returns that job, `coalesced`. One outcome per spec, in order.
    async fn enqueue_many(
        &self,
        tx: &mut Tx,
        specs: &[JobSpec],
        now: UnixMillis,
    ) -> Result<Vec<EnqueueOutcome>, StoreError>;
    async fn claim(&self, req: ClaimRequest<'_>) -> Result<Vec<Job>, StoreError>;
    async fn heartbeat(
        &self,
        leases: &[(i64, i64)],
        lease_until: UnixMillis,
    ) -> Result<Vec<LeaseStatus>, StoreError>;
    /// Records finished attempts. Returns, per completion, whether the lease
    /// was still held (a `false` means another worker owns the job now).
    async fn complete(&self, done: &[Completion]) -> Result<Vec<bool>, StoreError>;
    /// Gives a running job back (graceful shutdown): its lease expires now and
    /// the attempt is not counted.
    async fn release(&self, job_id: i64, lease_token: i64) -> Result<bool, StoreError>;
    async fn cancel(
        &self,
        job_id: i64,
        actor: Actor,
        now: UnixMillis,
    ) -> Result<CancelOutcome, StoreError>;
    async fn job(&self, job_id: i64) -> Result<Option<Job>, StoreError>;
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    async fn attempts(&self, job_id: i64) -> Result<Vec<Attempt>, StoreError>;
    /// Records, in the job's history, that the previous attempt was lost
    /// (its worker died and the lease expired).
    async fn record_lost_attempt(&self, job: &Job, now: UnixMillis) -> Result<(), StoreError>;
    async fn record_failure(&self, failure: &FailureRecord) -> Result<(), StoreError>;
    async fn failures(&self) -> Result<Vec<FailureRecord>, StoreError>;
    /// Deletes finished jobs (and their history) that finished before `before`.
    async fn prune(&self, before: UnixMillis) -> Result<u64, StoreError>;
    /// The earliest `run_at` of a queued job in `queue`, for sleeping until then.
    async fn next_run_at(&self, queue: &str) -> Result<Option<UnixMillis>, StoreError>;
    /// Registers a schedule (first caller wins) and returns its anchor time.
    async fn schedule_anchor(&self, name: &str, now: UnixMillis) -> Result<UnixMillis, StoreError>;
    async fn last_fire(&self, name: &str) -> Result<Option<UnixMillis>, StoreError>;
    /// Claims one fire time of a schedule. With a spec, the job is enqueued in
    /// the same transaction; without one the fire is recorded as skipped.
    /// Returns `None` when another node already claimed this (or a later) fire.
    async fn claim_fire(
        &self,
        name: &str,
        fire_at: UnixMillis,
        spec: Option<&JobSpec>,
        now: UnixMillis,
    ) -> Result<Option<Option<i64>>, StoreError>;
    /// A receiver that changes whenever new work may be claimable.
    fn wake(&self) -> watch::Receiver<u64>;
    /// Tells local workers that work may be claimable.
    fn poke(&self);
}

/// The store handle passed around the panel: a backend plus the clock the
/// queue reads time from. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(super) backend: Arc<dyn StoreBackend>,
    pub(super) clock: SharedClock,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: show only the backend.
        f.debug_struct("Store")
            .field("backend", &self.backend.kind())
            .field("clock", &self.clock)
            .finish()
    }
}

impl std::ops::Deref for Store {
    type Target = dyn StoreBackend;
    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

impl Store {
    /// The same store reading time from `clock` (tests pass a manual clock).
    pub fn with_clock(mut self, clock: SharedClock) -> Store {
        self.clock = clock;
        self
    }

    /// The SQLite pool when this store is SQLite (tests and tools).
    pub fn as_sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        self.backend.as_sqlite_pool()
    }

    /// The PostgreSQL pool when this store is PostgreSQL (tests and tools).
    pub fn as_postgres_pool(&self) -> Option<&sqlx::PgPool> {
        self.backend.as_postgres_pool()
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// Opens a transaction for a state change and the jobs it causes.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            inner: self.backend.begin_tx().await?,
            enqueued: false,
            store: self.clone(),
        })
    }
}

/// Whether `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
