//! PostgreSQL backend, for several panel nodes sharing one database. Claims
//! use `FOR UPDATE SKIP LOCKED`; per-queue limits are exact thanks to a
//! transaction-scoped advisory lock per limited queue. Wake-ups travel by
//! LISTEN/NOTIFY, so a job enqueued on one node wakes workers on all.

use std::collections::HashSet;
use std::sync::Mutex;
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
use crate::job::{
    Actor, Attempt, AttemptOutcome, CancelOutcome, Completion, EnqueueOutcome, FailureRecord, Job,
    JobFilter, JobSpec,
};

const CHANNEL: &str = "keel_jobs";

const COUNT_RUNNING: &str = "SELECT COUNT(*) FROM jobs \
     WHERE queue = $1 AND state = 'running' AND lease_until >= $2";

/// Claims up to `$3` jobs of queue `$1` in one statement: expired leases
/// first, then due queued jobs whose serialisation key is free, at most one
/// per key. `SKIP LOCKED` lets concurrent claimers pass each other's
/// candidates; `$4` over-fetches due jobs so that duplicates of a key do not
/// starve the batch.
const CLAIM: &str = "WITH expired AS ( \
       SELECT id, serial_key, priority, run_at, 0 AS grp FROM jobs \
       WHERE queue = $1 AND state = 'running' AND lease_until < $2 \
       ORDER BY priority DESC, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED), \
     due AS ( \
       SELECT id, serial_key, priority, run_at, 1 AS grp FROM jobs j \
       WHERE queue = $1 AND state = 'queued' AND run_at <= $2 \
         AND (serial_key IS NULL OR NOT EXISTS \
           (SELECT 1 FROM jobs r WHERE r.serial_key = j.serial_key AND r.state = 'running')) \
       ORDER BY priority DESC, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED), \
     pick AS ( \
       SELECT id FROM ( \
         SELECT id, grp, priority, run_at, ROW_NUMBER() OVER ( \
           PARTITION BY COALESCE(serial_key, 'job:' || id) ORDER BY grp, priority DESC, run_at, id) AS rn \
         FROM (SELECT * FROM expired UNION ALL SELECT * FROM due) c) ranked \
       WHERE rn = 1 ORDER BY grp, priority DESC, run_at, id LIMIT $3) \
     UPDATE jobs SET state = 'running', attempts = attempts + 1, \
       lease_owner = $5, lease_token = $6, lease_until = $7, started_at = $2, \
       reclaimed = CASE WHEN jobs.state = 'running' AND jobs.lease_owner IS NOT NULL THEN 1 ELSE 0 END \
     FROM pick WHERE jobs.id = pick.id \
     RETURNING jobs.id, kind, queue, payload, priority, state, run_at, attempts, unique_key, serial_key, owner, lease_owner, lease_token, lease_until, cancel_requested, reclaimed, created_at, started_at, finished_at, last_error";

/// Records a batch of final outcomes (succeeded, dead, cancelled) and their
/// history rows in one statement. Rows whose lease token no longer matches
/// are left alone and not returned.
const FINISH_BATCH: &str = "WITH input AS ( \
       SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], \
                            $6::bigint[], $7::text[], $8::bigint[], $9::text[]) \
         AS t(job_id, lease_token, next_state, finished_at, error, attempt, worker, started_at, output_ref)), \
     done AS ( \
       UPDATE jobs SET state = input.next_state, finished_at = input.finished_at, \
         last_error = input.error, lease_owner = NULL, lease_token = NULL, lease_until = NULL \
       FROM input \
       WHERE jobs.id = input.job_id AND jobs.lease_token = input.lease_token AND jobs.state = 'running' \
       RETURNING jobs.id, jobs.serial_key, jobs.queue), \
     history AS ( \
       INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, output_ref) \
       SELECT i.job_id, i.attempt, i.worker, i.started_at, i.finished_at, i.next_state, i.error, i.output_ref \
       FROM input i JOIN done d ON d.id = i.job_id \
       ON CONFLICT (job_id, attempt) DO NOTHING) \
     SELECT id, serial_key, queue FROM done";

/// Enqueues a batch in one statement. Each input row draws its id up front
/// (`nextval` in a materialised CTE), so an outcome is matched to its spec
/// by id, not by the order of `RETURNING`. Rows go in in input order, so
/// when two specs share a coalescing key the first is inserted and the
/// second conflicts and gets the first's id from `ins`; a conflict with a
/// job queued before this statement gets that job's id from `jobs`. A
/// NULL `job_id` means the conflicting job was not in this statement's
/// snapshot (claimed, or committed by another transaction meanwhile): the
/// caller enqueues that spec again on its own. `$10` asks for the wake-up
/// NOTIFY, sent at commit, once per transaction.
const ENQUEUE_MANY: &str = "WITH input AS MATERIALIZED ( \
       SELECT t.*, nextval('jobs_id_seq') AS id \
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], \
                   $7::text[], $8::bigint[]) WITH ORDINALITY \
         AS t(kind, queue, payload, priority, run_at, unique_key, serial_key, owner, ord)), \
     ins AS ( \
       INSERT INTO jobs (id, kind, queue, payload, priority, state, run_at, attempts, unique_key, \
                         serial_key, owner, cancel_requested, reclaimed, created_at) \
       SELECT id, kind, queue, payload, priority, 'queued', run_at, 0, unique_key, serial_key, owner, 0, 0, $9 \
       FROM input ORDER BY ord \
       ON CONFLICT (unique_key) WHERE state = 'queued' DO NOTHING \
       RETURNING id, unique_key), \
     wake AS MATERIALIZED (SELECT CASE WHEN $10::boolean THEN pg_notify($11, '') END AS sent) \
     SELECT i.ord, n.id IS NOT NULL AS inserted, \
       COALESCE(n.id, (SELECT d.id FROM ins d WHERE d.unique_key = i.unique_key), \
         (SELECT j.id FROM jobs j WHERE j.unique_key = i.unique_key AND j.state = 'queued')) AS job_id \
     FROM input i CROSS JOIN wake LEFT JOIN ins n ON n.id = i.id ORDER BY i.ord";

/// Extends a batch of leases; jobs not returned have lost theirs.
const HEARTBEAT_BATCH: &str = "UPDATE jobs SET lease_until = $1 \
     FROM unnest($2::bigint[], $3::bigint[]) AS l(id, token) \
     WHERE jobs.id = l.id AND jobs.lease_token = l.token AND jobs.state = 'running' \
     RETURNING jobs.id, jobs.cancel_requested";

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    /// Queues claimed with a cluster-wide limit by this node.
    limited_queues: Mutex<HashSet<String>>,
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
            limited_queues: Mutex::new(HashSet::new()),
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
        let room = i64::from(req.max);
        let rows = match req.queue_limit {
            None => self.claim_rows(&self.pool, req, room).await?,
            Some(limit) => {
                // Remember the limited queue: a completion in it frees a
                // slot that other nodes must hear about.
                self.lock_limited().insert(req.queue.to_string());
                let mut tx = self.pool.begin().await?;
                // Serialises claimers of this queue so the count below stays
                // true until we commit.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("keel-queue:{}", req.queue))
                    .execute(&mut *tx)
                    .await?;
                let running: i64 = sqlx::query_scalar(COUNT_RUNNING)
                    .bind(req.queue)
                    .bind(req.now)
                    .fetch_one(&mut *tx)
                    .await?;
                let room = room.min(i64::from(limit) - running);
                if room <= 0 {
                    tx.rollback().await?;
                    return Ok(Vec::new());
                }
                let rows = self.claim_rows(&mut *tx, req, room).await?;
                tx.commit().await?;
                rows
            }
        };
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

    async fn claim_rows<'e>(
        &self,
        conn: impl sqlx::PgExecutor<'e>,
        req: &ClaimRequest<'_>,
        room: i64,
    ) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
        sqlx::query(CLAIM)
            .bind(req.queue)
            .bind(req.now)
            .bind(room)
            .bind(room * 4)
            .bind(req.worker)
            .bind(req.lease_token)
            .bind(req.lease_until)
            .fetch_all(conn)
            .await
    }

    fn lock_limited(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.limited_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records final outcomes in one statement. Returns, per completion,
    /// whether the lease was still held, and whether other nodes should be
    /// told (a serialisation key or a limited queue was freed).
    async fn finish_batch(&self, done: &[&Completion]) -> Result<(Vec<bool>, bool), StoreError> {
        use sqlx::Row as _;
        let mut ids = Vec::with_capacity(done.len());
        let mut tokens = Vec::with_capacity(done.len());
        let mut states = Vec::with_capacity(done.len());
        let mut finished = Vec::with_capacity(done.len());
        let mut errors = Vec::with_capacity(done.len());
        let mut attempts = Vec::with_capacity(done.len());
        let mut workers = Vec::with_capacity(done.len());
        let mut started = Vec::with_capacity(done.len());
        let mut outputs = Vec::with_capacity(done.len());
        for c in done {
            ids.push(c.job_id);
            tokens.push(c.lease_token);
            states.push(c.outcome.label());
            finished.push(c.finished_at);
            errors.push(c.error.as_deref());
            attempts.push(i64::from(c.attempt));
            workers.push(c.worker.as_str());
            started.push(c.started_at);
            outputs.push(c.output_ref.as_deref());
        }
        let rows = sqlx::query(FINISH_BATCH)
            .bind(&ids)
            .bind(&tokens)
            .bind(&states)
            .bind(&finished)
            .bind(&errors)
            .bind(&attempts)
            .bind(&workers)
            .bind(&started)
            .bind(&outputs)
            .fetch_all(&self.pool)
            .await?;
        let mut held = HashSet::with_capacity(rows.len());
        let mut tell_others = false;
        {
            let limited = self.lock_limited();
            for r in &rows {
                held.insert(r.try_get::<i64, _>("id")?);
                let serial: Option<String> = r.try_get("serial_key")?;
                let queue: String = r.try_get("queue")?;
                tell_others |= serial.is_some() || limited.contains(&queue);
            }
        }
        Ok((
            done.iter().map(|c| held.contains(&c.job_id)).collect(),
            tell_others,
        ))
    }

    async fn notify_nodes(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&self.pool)
            .await?;
        Ok(())
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

    async fn enqueue_many(
        &self,
        tx: &mut Tx,
        specs: &[JobSpec],
        now: UnixMillis,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        use sqlx::Row as _;
        let first = !tx.enqueued;
        let conn = tx.as_postgres().ok_or(StoreError::WrongBackend)?;
        let n = specs.len();
        let (mut kinds, mut queues, mut payloads) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut priorities, mut run_ats) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut uniques, mut serials, mut owners) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for spec in specs {
            kinds.push(spec.kind.as_str());
            queues.push(spec.queue.as_str());
            payloads.push(spec.payload.to_string());
            priorities.push(i64::from(spec.priority));
            run_ats.push(spec.first_run(now));
            uniques.push(spec.unique_key.as_deref());
            serials.push(spec.effective_serial_key());
            owners.push(spec.owner);
        }
        let rows = sqlx::query(ENQUEUE_MANY)
            .bind(&kinds)
            .bind(&queues)
            .bind(&payloads)
            .bind(&priorities)
            .bind(&run_ats)
            .bind(&uniques)
            .bind(&serials)
            .bind(&owners)
            .bind(now)
            .bind(first)
            .bind(CHANNEL)
            .fetch_all(&mut *conn)
            .await?;
        if rows.len() != n {
            return Err(StoreError::Corrupt {
                table: "jobs",
                detail: format!("a batch of {n} jobs gave {} outcomes", rows.len()),
            });
        }
        let mut out = Vec::with_capacity(n);
        for (spec, row) in specs.iter().zip(&rows) {
            let inserted: bool = row.try_get("inserted")?;
            match row.try_get::<Option<i64>, _>("job_id")? {
                Some(job_id) => out.push(EnqueueOutcome {
                    job_id,
                    coalesced: !inserted,
                }),
                // The queued job we collided with is not in our snapshot:
                // the one-job path retries until it inserts or finds one.
                None => out.push(Self::enqueue_shared(&mut *conn, spec, now).await?),
            }
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
        let ids: Vec<i64> = leases.iter().map(|l| l.0).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.1).collect();
        let rows: Vec<(i64, i64)> = sqlx::query_as(HEARTBEAT_BATCH)
            .bind(lease_until)
            .bind(&ids)
            .bind(&tokens)
            .fetch_all(&self.pool)
            .await?;
        let held: std::collections::HashMap<i64, i64> = rows.into_iter().collect();
        Ok(ids
            .into_iter()
            .map(|job_id| LeaseStatus {
                job_id,
                lost: !held.contains_key(&job_id),
                cancel_requested: held.get(&job_id).is_some_and(|f| *f != 0),
            })
            .collect())
    }

    async fn complete(&self, done: &[Completion]) -> Result<Vec<bool>, StoreError> {
        // Final outcomes go in one statement; retries, rare and subject to
        // coalescing with queued siblings, one by one.
        let (retries, finals): (Vec<(usize, &Completion)>, Vec<(usize, &Completion)>) = done
            .iter()
            .enumerate()
            .partition(|(_, c)| matches!(c.outcome, AttemptOutcome::Retry { .. }));
        let mut held = vec![false; done.len()];
        let mut tell_others = false;
        if !finals.is_empty() {
            let batch: Vec<&Completion> = finals.iter().map(|(_, c)| *c).collect();
            let (ok, tell) = self.finish_batch(&batch).await?;
            for ((i, _), ok) in finals.iter().zip(ok) {
                held[*i] = ok;
            }
            tell_others |= tell;
        }
        if !retries.is_empty() {
            let batch: Vec<Completion> = retries.iter().map(|(_, c)| (*c).clone()).collect();
            let ok = self.complete_shared(&batch).await?;
            for ((i, _), ok) in retries.iter().zip(ok) {
                held[*i] = ok;
            }
            // A retry may be due at once, on any node.
            tell_others = true;
        }
        if tell_others {
            self.notify_nodes().await?;
        }
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
