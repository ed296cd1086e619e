//! PostgreSQL backend, for several panel nodes sharing one database. Claims
//! use `FOR UPDATE SKIP LOCKED`; per-queue limits are exact thanks to a
//! transaction-scoped advisory lock per limited queue. Wake-ups travel by
//! LISTEN/NOTIFY, so a job enqueued on one node wakes workers on all.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::shared::{job_from_row, shared_impl};
use super::{
    is_unique_violation, BackendKind, ClaimRequest, LeaseStatus, StoreBackend, StoreError, Tx,
    TxInner,
};
use crate::clock::UnixMillis;
use crate::queue::{
    Actor, Attempt, CancelOutcome, Completion, EnqueueOutcome, FailureRecord, Job, JobFilter,
    JobSpec,
};

const CHANNEL: &str = "keel_jobs";

const SELECT_EXPIRED: &str = "SELECT id, serial_key FROM jobs \
     WHERE queue = $1 AND state = 'running' AND lease_until < $2 \
     ORDER BY priority DESC, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED";

const SELECT_DUE: &str = "SELECT id, serial_key FROM jobs j \
     WHERE queue = $1 AND state = 'queued' AND run_at <= $2 \
       AND (serial_key IS NULL OR NOT EXISTS \
         (SELECT 1 FROM jobs r WHERE r.serial_key = j.serial_key AND r.state = 'running')) \
     ORDER BY priority DESC, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED";

const COUNT_RUNNING: &str = "SELECT COUNT(*) FROM jobs \
     WHERE queue = $1 AND state = 'running' AND lease_until >= $2";

const TAKE: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
       lease_owner = $1, lease_token = $2, lease_until = $3, started_at = $4, \
       reclaimed = CASE WHEN state = 'running' THEN 1 ELSE 0 END \
     WHERE id = ANY($5) \
     RETURNING id, kind, queue, payload, priority, state, run_at, attempts, unique_key, serial_key, owner, lease_owner, lease_token, lease_until, cancel_requested, reclaimed, created_at, started_at, finished_at, last_error";

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    wake: watch::Sender<u64>,
    listener: JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects, migrates, and starts listening for wake-ups.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(24)
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let (wake, _) = watch::channel(0);
        let listener = tokio::spawn(listen(pool.clone(), wake.clone()));
        Ok(Self {
            pool,
            wake,
            listener,
        })
    }

    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn write_pool(&self) -> &PgPool {
        &self.pool
    }

    fn read_pool(&self) -> &PgPool {
        &self.pool
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    fn poke_local(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn try_claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Job>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut room = i64::from(req.max);
        if let Some(limit) = req.queue_limit {
            // Serialises claimers of this queue so the count below stays true
            // until we commit.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("keel-queue:{}", req.queue))
                .execute(&mut *tx)
                .await?;
            let running: i64 = sqlx::query_scalar(COUNT_RUNNING)
                .bind(req.queue)
                .bind(req.now)
                .fetch_one(&mut *tx)
                .await?;
            room = room.min(i64::from(limit) - running);
        }
        if room <= 0 {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let mut candidates: Vec<(i64, Option<String>)> = sqlx::query_as(SELECT_EXPIRED)
            .bind(req.queue)
            .bind(req.now)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
        if (candidates.len() as i64) < room {
            let due: Vec<(i64, Option<String>)> = sqlx::query_as(SELECT_DUE)
                .bind(req.queue)
                .bind(req.now)
                .bind(room * 4)
                .fetch_all(&mut *tx)
                .await?;
            candidates.extend(due);
        }
        // One job per serialisation key; the expired (already running) ones
        // come first, so a queued sibling never overtakes them.
        let mut keys = HashSet::new();
        let ids: Vec<i64> = candidates
            .into_iter()
            .filter(|(_, key)| key.as_ref().is_none_or(|k| keys.insert(k.clone())))
            .map(|(id, _)| id)
            .take(room as usize)
            .collect();
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(TAKE)
            .bind(req.worker)
            .bind(req.lease_token)
            .bind(req.lease_until)
            .bind(req.now)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for r in &rows {
            match job_from_row!(r) {
                Ok(j) => jobs.push(j),
                Err(StoreError::Database(e)) => return Err(e),
                Err(e) => return Err(sqlx::Error::Decode(Box::new(e))),
            }
        }
        jobs.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.run_at, j.id));
        Ok(jobs)
    }
}

/// Forwards NOTIFYs to local workers; reconnects after errors.
async fn listen(pool: PgPool, wake: watch::Sender<u64>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "job wake-up listener cannot connect; polling only");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; polling only");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        while listener.recv().await.is_ok() {
            wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

shared_impl!(PgStore, sqlx::Postgres);

#[async_trait]
impl StoreBackend for PgStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    fn as_postgres_pool(&self) -> Option<&sqlx::PgPool> {
        Some(&self.pool)
    }

    async fn begin_tx(&self) -> Result<TxInner, StoreError> {
        Ok(TxInner::Postgres(self.write_tx().await?))
    }

    async fn enqueue(
        &self,
        tx: &mut Tx,
        spec: &JobSpec,
        now: UnixMillis,
    ) -> Result<EnqueueOutcome, StoreError> {
        let first = !tx.enqueued;
        let conn = tx.as_postgres().ok_or(StoreError::WrongBackend)?;
        let out = Self::enqueue_shared(&mut *conn, spec, now).await?;
        if first {
            // Delivered at commit, to every node; once per transaction.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(CHANNEL)
                .execute(&mut *conn)
                .await?;
        }
        Ok(out)
    }

    async fn claim(&self, req: ClaimRequest<'_>) -> Result<Vec<Job>, StoreError> {
        match self.try_claim(&req).await {
            Ok(jobs) => Ok(jobs),
            // Two claimers raced for the same serialisation key; the other
            // won. Nothing is lost: try again on the next round.
            Err(e) if is_unique_violation(&e) => {
                self.poke_local();
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn heartbeat(
        &self,
        leases: &[(i64, i64)],
        lease_until: UnixMillis,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        self.heartbeat_shared(leases, lease_until).await
    }

    async fn complete(&self, done: &[Completion]) -> Result<Vec<bool>, StoreError> {
        let held = self.complete_shared(done).await?;
        // A finished job may unblock its serialisation key on other nodes.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(held)
    }

    async fn release(&self, job_id: i64, lease_token: i64) -> Result<bool, StoreError> {
        self.release_shared(job_id, lease_token).await
    }

    async fn cancel(
        &self,
        job_id: i64,
        actor: Actor,
        now: UnixMillis,
    ) -> Result<CancelOutcome, StoreError> {
        self.cancel_shared(job_id, actor, now).await
    }

    async fn job(&self, job_id: i64) -> Result<Option<Job>, StoreError> {
        self.job_shared(job_id).await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        self.jobs_shared(filter).await
    }

    async fn attempts(&self, job_id: i64) -> Result<Vec<Attempt>, StoreError> {
        self.attempts_shared(job_id).await
    }

    async fn record_lost_attempt(&self, job: &Job, now: UnixMillis) -> Result<(), StoreError> {
        self.record_attempt_lost(job, now).await
    }

    async fn record_failure(&self, failure: &FailureRecord) -> Result<(), StoreError> {
        self.record_failure_shared(failure).await
    }

    async fn failures(&self) -> Result<Vec<FailureRecord>, StoreError> {
        self.failures_shared().await
    }

    async fn prune(&self, before: UnixMillis) -> Result<u64, StoreError> {
        self.prune_shared(before).await
    }

    async fn next_run_at(&self, queue: &str) -> Result<Option<UnixMillis>, StoreError> {
        self.next_run_at_shared(queue).await
    }

    async fn schedule_anchor(&self, name: &str, now: UnixMillis) -> Result<UnixMillis, StoreError> {
        self.schedule_anchor_shared(name, now).await
    }

    async fn last_fire(&self, name: &str) -> Result<Option<UnixMillis>, StoreError> {
        self.last_fire_shared(name).await
    }

    async fn claim_fire(
        &self,
        name: &str,
        fire_at: UnixMillis,
        spec: Option<&JobSpec>,
        now: UnixMillis,
    ) -> Result<Option<Option<i64>>, StoreError> {
        self.claim_fire_shared(name, fire_at, spec, now).await
    }

    fn wake(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    fn poke(&self) {
        self.poke_local();
    }
}
