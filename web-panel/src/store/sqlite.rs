//! SQLite backend: the embedded default. One file in WAL mode, a busy
//! timeout, and a single writer connection (SQLite has one writer anyway;
//! queueing writers in the pool beats spinning on SQLITE_BUSY). Claims are one
//! atomic `UPDATE … RETURNING`. Wake-ups are in-process only.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::watch;

use super::shared::{job_from_row, shared_impl};
use super::{BackendKind, ClaimRequest, LeaseStatus, StoreBackend, StoreError, Tx, TxInner};
use crate::clock::UnixMillis;
use crate::job::{
    Actor, Attempt, AttemptOutcome, CancelOutcome, Completion, EnqueueOutcome, FailureRecord, Job,
    JobFilter, JobSpec,
};

/// Picks at most one job per serialisation key among the claimable ones
/// (queued and due, or running with an expired lease), respects the queue's
/// concurrency limit (counted only when there is one), and takes them, all
/// in one statement.
const CLAIM: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
       lease_owner = $1, lease_token = $2, lease_until = $3, started_at = $4, \
       reclaimed = CASE WHEN state = 'running' AND lease_owner IS NOT NULL THEN 1 ELSE 0 END \
     WHERE id IN ( \
       SELECT id FROM ( \
         SELECT id, priority, run_at, ROW_NUMBER() OVER ( \
             PARTITION BY COALESCE(serial_key, 'job:' || id) ORDER BY priority DESC, run_at, id) AS rn \
         FROM ( \
           SELECT id, serial_key, priority, run_at FROM jobs \
             WHERE queue = $5 AND state = 'running' AND lease_until < $4 \
           UNION ALL \
           SELECT * FROM ( \
             SELECT id, serial_key, priority, run_at FROM jobs j \
             WHERE queue = $5 AND state = 'queued' AND run_at <= $4 \
               AND (serial_key IS NULL OR NOT EXISTS \
                 (SELECT 1 FROM jobs r WHERE r.serial_key = j.serial_key AND r.state = 'running')) \
             ORDER BY priority DESC, run_at, id LIMIT $6) \
         )) \
       WHERE rn = 1 ORDER BY priority DESC, run_at, id \
       LIMIT (CASE WHEN $8 IS NULL THEN $7 ELSE MAX(0, MIN($7, $8 - (SELECT COUNT(*) FROM jobs \
                WHERE queue = $5 AND state = 'running' AND lease_until >= $4))) END) \
     ) RETURNING id, kind, queue, payload, priority, state, run_at, attempts, unique_key, serial_key, owner, lease_owner, lease_token, lease_until, cancel_requested, reclaimed, created_at, started_at, finished_at, last_error";

/// Records a batch of final outcomes (succeeded, dead, cancelled), given as
/// a JSON array of `[job_id, lease_token, state, finished_at, error]`, in one
/// statement. Rows whose lease token no longer matches are left alone and
/// not returned.
const FINISH_BATCH: &str = "UPDATE jobs SET state = i.next_state, finished_at = i.finished_at, \
       last_error = i.error, lease_owner = NULL, lease_token = NULL, lease_until = NULL \
     FROM (SELECT json_extract(value, '$[0]') AS job_id, json_extract(value, '$[1]') AS lease_token, \
             json_extract(value, '$[2]') AS next_state, json_extract(value, '$[3]') AS finished_at, \
             json_extract(value, '$[4]') AS error FROM json_each($1)) AS i \
     WHERE jobs.id = i.job_id AND jobs.lease_token = i.lease_token AND jobs.state = 'running' \
     RETURNING jobs.id";

/// History rows for a batch, given as a JSON array of
/// `[job_id, attempt, worker, started_at, finished_at, outcome, error, output_ref]`.
const INSERT_ATTEMPTS_BATCH: &str = "INSERT INTO job_attempts \
       (job_id, attempt, worker, started_at, finished_at, outcome, error, output_ref) \
     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), \
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), \
       json_extract(value, '$[6]'), json_extract(value, '$[7]') \
     FROM json_each($1) WHERE true ON CONFLICT (job_id, attempt) DO NOTHING";

/// Enqueues a batch given as a JSON array of
/// `[kind, queue, payload, priority, run_at, unique_key, serial_key, owner]`,
/// in array order, in one statement. Rows whose coalescing key is already
/// queued (or was inserted by an earlier row) are not inserted.
const ENQUEUE_MANY: &str = "INSERT INTO jobs (kind, queue, payload, priority, state, run_at, attempts, \
       unique_key, serial_key, owner, cancel_requested, reclaimed, created_at) \
     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), \
       json_extract(value, '$[3]'), 'queued', json_extract(value, '$[4]'), 0, json_extract(value, '$[5]'), \
       json_extract(value, '$[6]'), json_extract(value, '$[7]'), 0, 0, $2 \
     FROM json_each($1) WHERE true ORDER BY key \
     ON CONFLICT (unique_key) WHERE state = 'queued' DO NOTHING RETURNING id, unique_key";

/// The queued jobs holding any of the coalescing keys in the JSON array `$1`.
const QUEUED_BY_KEYS: &str = "SELECT unique_key, id FROM jobs \
     WHERE state = 'queued' AND unique_key IN (SELECT value FROM json_each($1))";

/// The SQLite store.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    wake: watch::Sender<u64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let (wake, _) = watch::channel(0);
        Ok(Self {
            writer,
            reader,
            wake,
        })
    }

    /// The writer pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }

    fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so a transaction
    /// never fails half-way when another process wrote meanwhile.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn poke_local(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records final outcomes with two statements in one transaction.
    /// Returns, per completion, whether the lease was still held.
    async fn finish_batch(&self, done: &[&Completion]) -> Result<Vec<bool>, StoreError> {
        use serde_json::json;
        let outcomes: Vec<serde_json::Value> = done
            .iter()
            .map(|c| {
                json!([
                    c.job_id,
                    c.lease_token,
                    c.outcome.label(),
                    c.finished_at,
                    c.error
                ])
            })
            .collect();
        let mut tx = self.write_tx().await?;
        let held: std::collections::HashSet<i64> = sqlx::query_scalar(FINISH_BATCH)
            .bind(serde_json::Value::Array(outcomes).to_string())
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let history: Vec<serde_json::Value> = done
            .iter()
            .filter(|c| held.contains(&c.job_id))
            .map(|c| {
                json!([
                    c.job_id,
                    c.attempt,
                    c.worker,
                    c.started_at,
                    c.finished_at,
                    c.outcome.label(),
                    c.error,
                    c.output_ref
                ])
            })
            .collect();
        if !history.is_empty() {
            sqlx::query(INSERT_ATTEMPTS_BATCH)
                .bind(serde_json::Value::Array(history).to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.iter().map(|c| held.contains(&c.job_id)).collect())
    }
}

shared_impl!(SqliteStore, sqlx::Sqlite);

#[async_trait]
impl StoreBackend for SqliteStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    fn as_sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        Some(&self.writer)
    }

    async fn begin_tx(&self) -> Result<TxInner, StoreError> {
        Ok(TxInner::Sqlite(self.write_tx().await?))
    }

    async fn enqueue(
        &self,
        tx: &mut Tx,
        spec: &JobSpec,
        now: UnixMillis,
    ) -> Result<EnqueueOutcome, StoreError> {
        let conn = tx.as_sqlite().ok_or(StoreError::WrongBackend)?;
        Self::enqueue_shared(conn, spec, now).await
    }

    async fn enqueue_many(
        &self,
        tx: &mut Tx,
        specs: &[JobSpec],
        now: UnixMillis,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        use serde_json::json;
        use sqlx::Row as _;
        let conn = tx.as_sqlite().ok_or(StoreError::WrongBackend)?;
        let rows: Vec<serde_json::Value> = specs
            .iter()
            .map(|s| {
                json!([
                    s.kind,
                    s.queue,
                    s.payload.to_string(),
                    s.priority,
                    s.first_run(now),
                    s.unique_key,
                    s.effective_serial_key(),
                    s.owner
                ])
            })
            .collect();
        let mut inserted: Vec<(i64, Option<String>)> = sqlx::query(ENQUEUE_MANY)
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(now)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("unique_key")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        // The transaction holds SQLite's write lock, so rowids grow in
        // insertion order, which is input order: sorted by id, the inserted
        // rows line up with the specs that were not coalesced.
        inserted.sort_unstable_by_key(|(id, _)| *id);
        let mut fresh = inserted.into_iter().peekable();
        let mut out: Vec<Option<EnqueueOutcome>> = Vec::with_capacity(specs.len());
        for spec in specs {
            let this_one = fresh
                .peek()
                .is_some_and(|(_, key)| key.as_deref() == spec.unique_key.as_deref());
            if spec.unique_key.is_none() || this_one {
                let (job_id, _) = fresh.next().ok_or_else(|| StoreError::Corrupt {
                    table: "jobs",
                    detail: "a batch insert returned fewer rows than it inserted".into(),
                })?;
                out.push(Some(EnqueueOutcome {
                    job_id,
                    coalesced: false,
                }));
            } else {
                out.push(None);
            }
        }
        if out.iter().any(Option::is_none) {
            let keys: Vec<&str> = specs
                .iter()
                .zip(&out)
                .filter(|(_, o)| o.is_none())
                .filter_map(|(s, _)| s.unique_key.as_deref())
                .collect();
            let queued: std::collections::HashMap<String, i64> = sqlx::query(QUEUED_BY_KEYS)
                .bind(json!(keys).to_string())
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("unique_key")?, r.try_get("id")?)))
                .collect::<Result<_, sqlx::Error>>()?;
            for (spec, o) in specs.iter().zip(out.iter_mut()) {
                if o.is_some() {
                    continue;
                }
                let key = spec.unique_key.as_deref().unwrap_or_default();
                *o = Some(match queued.get(key) {
                    Some(&job_id) => EnqueueOutcome {
                        job_id,
                        coalesced: true,
                    },
                    None => Self::enqueue_shared(&mut *conn, spec, now).await?,
                });
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    async fn claim(&self, req: ClaimRequest<'_>) -> Result<Vec<Job>, StoreError> {
        let max = i64::from(req.max);
        let rows = sqlx::query(CLAIM)
            .bind(req.worker)
            .bind(req.lease_token)
            .bind(req.lease_until)
            .bind(req.now)
            .bind(req.queue)
            .bind(max * 4)
            .bind(max)
            .bind(req.queue_limit.map(i64::from))
            .fetch_all(&self.writer)
            .await?;
        let mut jobs = rows
            .iter()
            .map(|r| job_from_row!(r))
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.run_at, j.id));
        Ok(jobs)
    }

    async fn heartbeat(
        &self,
        leases: &[(i64, i64)],
        lease_until: UnixMillis,
    ) -> Result<Vec<LeaseStatus>, StoreError> {
        self.heartbeat_shared(leases, lease_until).await
    }

    async fn complete(&self, done: &[Completion]) -> Result<Vec<bool>, StoreError> {
        // Final outcomes go in one batch; retries, rare and subject to
        // coalescing with queued siblings, one by one.
        let (retries, finals): (Vec<(usize, &Completion)>, Vec<(usize, &Completion)>) = done
            .iter()
            .enumerate()
            .partition(|(_, c)| matches!(c.outcome, AttemptOutcome::Retry { .. }));
        let mut held = vec![false; done.len()];
        if !finals.is_empty() {
            let batch: Vec<&Completion> = finals.iter().map(|(_, c)| *c).collect();
            for ((i, _), ok) in finals.iter().zip(self.finish_batch(&batch).await?) {
                held[*i] = ok;
            }
        }
        if !retries.is_empty() {
            let batch: Vec<Completion> = retries.iter().map(|(_, c)| (*c).clone()).collect();
            for ((i, _), ok) in retries.iter().zip(self.complete_shared(&batch).await?) {
                held[*i] = ok;
            }
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
