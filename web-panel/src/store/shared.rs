//! SQL and row mapping shared by both backends. The statements use `$N`
//! placeholders, which SQLite and PostgreSQL both accept, and only portable
//! SQL; the claim statement, which differs, lives in each backend.

pub(crate) const INSERT_JOB: &str = "INSERT INTO jobs (kind, queue, payload, priority, state, run_at, attempts, unique_key, serial_key, owner, cancel_requested, reclaimed, created_at) \
     VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6, $7, $8, 0, 0, $9) \
     ON CONFLICT (unique_key) WHERE state = 'queued' DO NOTHING RETURNING id";

pub(crate) const FIND_QUEUED_BY_KEY: &str =
    "SELECT id FROM jobs WHERE unique_key = $1 AND state = 'queued'";

pub(crate) const HEARTBEAT: &str = "UPDATE jobs SET lease_until = $1 \
     WHERE id = $2 AND lease_token = $3 AND state = 'running' RETURNING cancel_requested";

/// Finishes an attempt. `$4` is the requested next state; a retry turns
/// into `cancelled` when cancellation was asked for meanwhile, and into
/// `superseded` when a job with the same coalescing key is already queued
/// (that job will do the work).
pub(crate) const FINISH_ATTEMPT: &str = "UPDATE jobs SET \
       state = CASE \
         WHEN $4 = 'queued' AND cancel_requested <> 0 THEN 'cancelled' \
         WHEN $4 = 'queued' AND unique_key IS NOT NULL AND EXISTS \
           (SELECT 1 FROM jobs s WHERE s.unique_key = jobs.unique_key AND s.state = 'queued') THEN 'superseded' \
         ELSE $4 END, \
       run_at = CASE WHEN $4 = 'queued' THEN $5 ELSE run_at END, \
       finished_at = CASE WHEN $4 = 'queued' THEN NULL ELSE $1 END, \
       last_error = $6, lease_owner = NULL, lease_token = NULL, lease_until = NULL \
     WHERE id = $2 AND lease_token = $3 AND state = 'running' RETURNING state, finished_at";

pub(crate) const INSERT_ATTEMPT: &str = "INSERT INTO job_attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, output_ref) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id, attempt) DO NOTHING";

/// Gives the lease back: expired now, attempt not counted. No lease owner
/// marks it as given back, so the next claim does not report a lost attempt.
pub(crate) const RELEASE: &str =
    "UPDATE jobs SET lease_until = 0, lease_token = NULL, lease_owner = NULL, attempts = attempts - 1 \
     WHERE id = $1 AND lease_token = $2 AND state = 'running'";

pub(crate) const CANCEL_QUEUED: &str =
    "UPDATE jobs SET state = 'cancelled', finished_at = $1, cancel_requested = 1 \
     WHERE id = $2 AND state = 'queued'";

pub(crate) const CANCEL_RUNNING: &str =
    "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'";

pub(crate) const SELECT_OWNER_STATE: &str = "SELECT owner, state FROM jobs WHERE id = $1";

pub(crate) const SELECT_ATTEMPTS: &str =
    "SELECT job_id, attempt, worker, started_at, finished_at, outcome, error, output_ref \
     FROM job_attempts WHERE job_id = $1 ORDER BY attempt";

pub(crate) const INSERT_FAILURE: &str =
    "INSERT INTO job_failures (job_id, kind, owner, attempts, error, failed_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const SELECT_FAILURES: &str =
    "SELECT job_id, kind, owner, attempts, error, failed_at FROM job_failures ORDER BY id";

pub(crate) const PRUNE_ATTEMPTS: &str = "DELETE FROM job_attempts WHERE job_id IN \
     (SELECT id FROM jobs WHERE state NOT IN ('queued', 'running') AND finished_at < $1)";

pub(crate) const PRUNE_JOBS: &str =
    "DELETE FROM jobs WHERE state NOT IN ('queued', 'running') AND finished_at < $1";

pub(crate) const NEXT_RUN_AT: &str =
    "SELECT MIN(run_at) FROM jobs WHERE queue = $1 AND state = 'queued'";

pub(crate) const INSERT_SCHEDULE: &str =
    "INSERT INTO schedules (name, anchor_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

pub(crate) const SELECT_ANCHOR: &str = "SELECT anchor_at FROM schedules WHERE name = $1";

pub(crate) const LAST_FIRE: &str = "SELECT MAX(fire_at) FROM schedule_fires WHERE name = $1";

/// Claims a fire time unless it, or a later one, is already claimed.
pub(crate) const CLAIM_FIRE: &str =
    "INSERT INTO schedule_fires (name, fire_at, claimed_at, skipped) \
     SELECT $1, $2, $3, $4 WHERE NOT EXISTS \
       (SELECT 1 FROM schedule_fires WHERE name = $1 AND fire_at >= $2) \
     ON CONFLICT (name, fire_at) DO NOTHING RETURNING fire_at";

pub(crate) const SET_FIRE_JOB: &str =
    "UPDATE schedule_fires SET job_id = $1 WHERE name = $2 AND fire_at = $3";

/// Builds the history query for a filter; every filter field is bound, a
/// NULL binding matching everything.
pub(crate) const SELECT_JOBS_FILTERED: &str = "SELECT id, kind, queue, payload, priority, state, run_at, attempts, unique_key, serial_key, owner, lease_owner, lease_token, lease_until, cancel_requested, reclaimed, created_at, started_at, finished_at, last_error \
     FROM jobs WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR unique_key = $2) \
       AND ($3 IS NULL OR serial_key = $3) AND ($4 IS NULL OR kind = $4) \
     ORDER BY id LIMIT $5";

pub(crate) const SELECT_JOB: &str = "SELECT id, kind, queue, payload, priority, state, run_at, attempts, unique_key, serial_key, owner, lease_owner, lease_token, lease_until, cancel_requested, reclaimed, created_at, started_at, finished_at, last_error \
     FROM jobs WHERE id = $1";

/// Maps a `jobs` row (all columns) to a [`crate::job::Job`].
macro_rules! job_from_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        (|| -> Result<crate::job::Job, crate::store::StoreError> {
            let state: String = row.try_get("state")?;
            let payload: String = row.try_get("payload")?;
            let corrupt = |detail: String| crate::store::StoreError::Corrupt {
                table: "jobs",
                detail,
            };
            let job = crate::job::Job {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                queue: row.try_get("queue")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| corrupt(format!("payload is not JSON: {e}")))?,
                priority: row.try_get::<i64, _>("priority")? as i32,
                state: crate::job::JobState::parse(&state)
                    .ok_or_else(|| corrupt(format!("unknown state {state:?}")))?,
                run_at: row.try_get("run_at")?,
                attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
                unique_key: row.try_get("unique_key")?,
                serial_key: row.try_get("serial_key")?,
                owner: row.try_get("owner")?,
                lease_owner: row.try_get("lease_owner")?,
                lease_token: row.try_get("lease_token")?,
                lease_until: row.try_get("lease_until")?,
                cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
                reclaimed: row.try_get::<i64, _>("reclaimed")? != 0,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                last_error: row.try_get("last_error")?,
            };
            Ok(job)
        })()
    }};
}
pub(crate) use job_from_row;

/// Implements the backend-independent part of [`super::StoreBackend`] as
/// inherent `*_shared` methods; each backend's trait impl delegates to them.
/// `$db` is the sqlx database type; the backend provides `write_pool()`,
/// `read_pool()` and `write_tx()`.
macro_rules! shared_impl {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn enqueue_shared(
                conn: &mut <$db as sqlx::Database>::Connection,
                spec: &crate::job::JobSpec,
                now: crate::clock::UnixMillis,
            ) -> Result<crate::job::EnqueueOutcome, crate::store::StoreError> {
                use crate::store::shared::*;
                let payload = spec.payload.to_string();
                let run_at = spec.first_run(now);
                let serial = spec.effective_serial_key();
                // A conflicting queued job can be claimed between our insert and
                // our look-up; then the insert succeeds on the next round.
                loop {
                    let inserted: Option<i64> = sqlx::query_scalar(INSERT_JOB)
                        .bind(&spec.kind)
                        .bind(&spec.queue)
                        .bind(&payload)
                        .bind(i64::from(spec.priority))
                        .bind(run_at)
                        .bind(spec.unique_key.as_deref())
                        .bind(serial)
                        .bind(spec.owner)
                        .bind(now)
                        .fetch_optional(&mut *conn)
                        .await?;
                    if let Some(job_id) = inserted {
                        return Ok(crate::job::EnqueueOutcome {
                            job_id,
                            coalesced: false,
                        });
                    }
                    let existing: Option<i64> = sqlx::query_scalar(FIND_QUEUED_BY_KEY)
                        .bind(spec.unique_key.as_deref())
                        .fetch_optional(&mut *conn)
                        .await?;
                    if let Some(job_id) = existing {
                        return Ok(crate::job::EnqueueOutcome {
                            job_id,
                            coalesced: true,
                        });
                    }
                }
            }

            // PostgreSQL extends a batch of leases in one statement instead.
            #[allow(dead_code)]
            async fn heartbeat_shared(
                &self,
                leases: &[(i64, i64)],
                lease_until: crate::clock::UnixMillis,
            ) -> Result<Vec<crate::store::LeaseStatus>, crate::store::StoreError> {
                use crate::store::shared::*;
                let mut tx = self.write_tx().await?;
                let mut out = Vec::with_capacity(leases.len());
                for &(job_id, token) in leases {
                    let flag: Option<i64> = sqlx::query_scalar(HEARTBEAT)
                        .bind(lease_until)
                        .bind(job_id)
                        .bind(token)
                        .fetch_optional(&mut *tx)
                        .await?;
                    out.push(crate::store::LeaseStatus {
                        job_id,
                        lost: flag.is_none(),
                        cancel_requested: flag.unwrap_or(0) != 0,
                    });
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn complete_shared(
                &self,
                done: &[crate::job::Completion],
            ) -> Result<Vec<bool>, crate::store::StoreError> {
                use crate::job::AttemptOutcome;
                use crate::store::shared::*;
                use sqlx::Row as _;
                let mut tx = self.write_tx().await?;
                let mut held = Vec::with_capacity(done.len());
                for c in done {
                    let (next, run_at) = match &c.outcome {
                        AttemptOutcome::Succeeded => ("succeeded", 0),
                        AttemptOutcome::Retry { run_at } => ("queued", *run_at),
                        AttemptOutcome::Dead => ("dead", 0),
                        AttemptOutcome::Cancelled => ("cancelled", 0),
                    };
                    let row = sqlx::query(FINISH_ATTEMPT)
                        .bind(c.finished_at)
                        .bind(c.job_id)
                        .bind(c.lease_token)
                        .bind(next)
                        .bind(run_at)
                        .bind(c.error.as_deref())
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(row) = row else {
                        held.push(false);
                        continue;
                    };
                    let state: String = row.try_get("state")?;
                    let label = match state.as_str() {
                        "queued" => "retry",
                        other => other,
                    };
                    sqlx::query(INSERT_ATTEMPT)
                        .bind(c.job_id)
                        .bind(i64::from(c.attempt))
                        .bind(&c.worker)
                        .bind(c.started_at)
                        .bind(c.finished_at)
                        .bind(label)
                        .bind(c.error.as_deref())
                        .bind(c.output_ref.as_deref())
                        .execute(&mut *tx)
                        .await?;
                    held.push(true);
                }
                tx.commit().await?;
                Ok(held)
            }

            async fn release_shared(
                &self,
                job_id: i64,
                token: i64,
            ) -> Result<bool, crate::store::StoreError> {
                let n = sqlx::query(crate::store::shared::RELEASE)
                    .bind(job_id)
                    .bind(token)
                    .execute(self.write_pool())
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn cancel_shared(
                &self,
                job_id: i64,
                actor: crate::job::Actor,
                now: crate::clock::UnixMillis,
            ) -> Result<crate::job::CancelOutcome, crate::store::StoreError> {
                use crate::job::CancelOutcome;
                use crate::store::shared::*;
                use sqlx::Row as _;
                let mut tx = self.write_tx().await?;
                let row = sqlx::query(SELECT_OWNER_STATE)
                    .bind(job_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(crate::store::StoreError::JobNotFound(job_id))?;
                let owner: Option<i64> = row.try_get("owner")?;
                let state: String = row.try_get("state")?;
                if !actor.is_admin && owner != Some(actor.user_id) {
                    return Err(crate::store::StoreError::Forbidden {
                        job_id,
                        user_id: actor.user_id,
                    });
                }
                let out = match state.as_str() {
                    "queued" => {
                        sqlx::query(CANCEL_QUEUED)
                            .bind(now)
                            .bind(job_id)
                            .execute(&mut *tx)
                            .await?;
                        CancelOutcome::Cancelled
                    }
                    "running" => {
                        sqlx::query(CANCEL_RUNNING)
                            .bind(job_id)
                            .execute(&mut *tx)
                            .await?;
                        CancelOutcome::Signalled
                    }
                    _ => CancelOutcome::AlreadyFinished,
                };
                tx.commit().await?;
                Ok(out)
            }

            async fn job_shared(
                &self,
                job_id: i64,
            ) -> Result<Option<crate::job::Job>, crate::store::StoreError> {
                let row = sqlx::query(crate::store::shared::SELECT_JOB)
                    .bind(job_id)
                    .fetch_optional(self.read_pool())
                    .await?;
                match row {
                    Some(row) => Ok(Some(crate::store::shared::job_from_row!(&row)?)),
                    None => Ok(None),
                }
            }

            async fn jobs_shared(
                &self,
                f: &crate::job::JobFilter,
            ) -> Result<Vec<crate::job::Job>, crate::store::StoreError> {
                let rows = sqlx::query(crate::store::shared::SELECT_JOBS_FILTERED)
                    .bind(f.state.map(|s| s.as_str()))
                    .bind(f.unique_key.as_deref())
                    .bind(f.serial_key.as_deref())
                    .bind(f.kind.as_deref())
                    .bind(f.limit.map(i64::from).unwrap_or(i64::MAX))
                    .fetch_all(self.read_pool())
                    .await?;
                rows.iter()
                    .map(|row| crate::store::shared::job_from_row!(row))
                    .collect()
            }

            async fn attempts_shared(
                &self,
                job_id: i64,
            ) -> Result<Vec<crate::job::Attempt>, crate::store::StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query(crate::store::shared::SELECT_ATTEMPTS)
                    .bind(job_id)
                    .fetch_all(self.read_pool())
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(crate::job::Attempt {
                        job_id: r.try_get("job_id")?,
                        attempt: r.try_get::<i64, _>("attempt")?.max(0) as u32,
                        worker: r.try_get("worker")?,
                        started_at: r.try_get("started_at")?,
                        finished_at: r.try_get("finished_at")?,
                        outcome: r.try_get("outcome")?,
                        error: r.try_get("error")?,
                        output_ref: r.try_get("output_ref")?,
                    });
                }
                Ok(out)
            }

            async fn record_attempt_lost(
                &self,
                job: &crate::job::Job,
                now: crate::clock::UnixMillis,
            ) -> Result<(), crate::store::StoreError> {
                sqlx::query(crate::store::shared::INSERT_ATTEMPT)
                    .bind(job.id)
                    .bind(i64::from(job.attempts.saturating_sub(1)))
                    .bind(None::<String>)
                    .bind(None::<i64>)
                    .bind(now)
                    .bind("lease_expired")
                    .bind("the worker stopped heartbeating; lease expired")
                    .bind(None::<String>)
                    .execute(self.write_pool())
                    .await?;
                Ok(())
            }

            async fn record_failure_shared(
                &self,
                f: &crate::job::FailureRecord,
            ) -> Result<(), crate::store::StoreError> {
                sqlx::query(crate::store::shared::INSERT_FAILURE)
                    .bind(f.job_id)
                    .bind(&f.kind)
                    .bind(f.owner)
                    .bind(i64::from(f.attempts))
                    .bind(&f.error)
                    .bind(f.failed_at)
                    .execute(self.write_pool())
                    .await?;
                Ok(())
            }

            async fn failures_shared(
                &self,
            ) -> Result<Vec<crate::job::FailureRecord>, crate::store::StoreError> {
                use sqlx::Row as _;
                let rows = sqlx::query(crate::store::shared::SELECT_FAILURES)
                    .fetch_all(self.read_pool())
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(crate::job::FailureRecord {
                        job_id: r.try_get("job_id")?,
                        kind: r.try_get("kind")?,
                        owner: r.try_get("owner")?,
                        attempts: r.try_get::<i64, _>("attempts")?.max(0) as u32,
                        error: r.try_get("error")?,
                        failed_at: r.try_get("failed_at")?,
                    });
                }
                Ok(out)
            }

            async fn prune_shared(
                &self,
                before: crate::clock::UnixMillis,
            ) -> Result<u64, crate::store::StoreError> {
                let mut tx = self.write_tx().await?;
                sqlx::query(crate::store::shared::PRUNE_ATTEMPTS)
                    .bind(before)
                    .execute(&mut *tx)
                    .await?;
                let n = sqlx::query(crate::store::shared::PRUNE_JOBS)
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n)
            }

            async fn next_run_at_shared(
                &self,
                queue: &str,
            ) -> Result<Option<crate::clock::UnixMillis>, crate::store::StoreError> {
                Ok(sqlx::query_scalar(crate::store::shared::NEXT_RUN_AT)
                    .bind(queue)
                    .fetch_one(self.read_pool())
                    .await?)
            }

            async fn schedule_anchor_shared(
                &self,
                name: &str,
                now: crate::clock::UnixMillis,
            ) -> Result<crate::clock::UnixMillis, crate::store::StoreError> {
                sqlx::query(crate::store::shared::INSERT_SCHEDULE)
                    .bind(name)
                    .bind(now)
                    .execute(self.write_pool())
                    .await?;
                Ok(sqlx::query_scalar(crate::store::shared::SELECT_ANCHOR)
                    .bind(name)
                    .fetch_one(self.write_pool())
                    .await?)
            }

            async fn last_fire_shared(
                &self,
                name: &str,
            ) -> Result<Option<crate::clock::UnixMillis>, crate::store::StoreError> {
                Ok(sqlx::query_scalar(crate::store::shared::LAST_FIRE)
                    .bind(name)
                    .fetch_one(self.write_pool())
                    .await?)
            }

            async fn claim_fire_shared(
                &self,
                name: &str,
                fire_at: crate::clock::UnixMillis,
                spec: Option<&crate::job::JobSpec>,
                now: crate::clock::UnixMillis,
            ) -> Result<Option<Option<i64>>, crate::store::StoreError> {
                use crate::store::shared::*;
                let mut tx = self.write_tx().await?;
                let claimed: Option<i64> = sqlx::query_scalar(CLAIM_FIRE)
                    .bind(name)
                    .bind(fire_at)
                    .bind(now)
                    .bind(i64::from(spec.is_none()))
                    .fetch_optional(&mut *tx)
                    .await?;
                if claimed.is_none() {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let job_id = match spec {
                    Some(spec) => {
                        let out = Self::enqueue_shared(&mut *tx, spec, now).await?;
                        sqlx::query(SET_FIRE_JOB)
                            .bind(out.job_id)
                            .bind(name)
                            .bind(fire_at)
                            .execute(&mut *tx)
                            .await?;
                        Some(out.job_id)
                    }
                    None => None,
                };
                tx.commit().await?;
                if job_id.is_some() {
                    self.poke_local();
                }
                Ok(Some(job_id))
            }
        }
    };
}
pub(crate) use shared_impl;
