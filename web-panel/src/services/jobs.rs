//! Cancelling, running again and viewing a job from the API or the pages. The job's owner may cancel
//! it, and platform admins any job. A queued job is cancelled at once; a
//! running one is asked to stop, which its worker passes on at its next
//! heartbeat: a role run then stops between two tasks and the job ends
//! `cancelled`. The request and its audit row commit together.

use serde::Serialize;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::JobKind;
use crate::queue::{CancelOutcome, JobState};
use crate::{execute, fetch_opt};

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cancelled {
    /// It was queued and will not run.
    Cancelled,
    /// It is running; it stops at its next checkpoint.
    Stopping,
}

/// Cancels job `job_id` for `who`: its owner, or a platform admin.
pub async fn cancel(db: &Db, who: &Principal, job_id: i64) -> Result<Cancelled, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let (owner, state, kind) = fetch_opt!(
        &mut conn,
        (Option<i64>, String, String),
        "SELECT owner, state, kind FROM jobs WHERE id = $1",
        job_id
    )?
    .ok_or(PanelError::NotFound("job"))?;
    if !who.is_admin && owner != who.actor_id() {
        return Err(PanelError::Forbidden(
            "only the job's owner or a platform admin may cancel it".into(),
        ));
    }
    let state = JobState::parse(&state)
        .ok_or_else(|| PanelError::Internal(format!("job {job_id} has state {state:?}")))?;
    let outcome = match state {
        JobState::Queued => {
            execute!(
                &mut conn,
                "UPDATE jobs SET state = 'cancelled', finished_at = $1, cancel_requested = 1 \
                 WHERE id = $2 AND state = 'queued'",
                now,
                job_id
            )?;
            CancelOutcome::Cancelled
        }
        JobState::Running => {
            execute!(
                &mut conn,
                "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'",
                job_id
            )?;
            CancelOutcome::Signalled
        }
        other => {
            return Err(PanelError::Conflict(format!(
                "the job is {} already",
                other.as_str()
            )))
        }
    };
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("job.cancel", "job", job_id)
            .after(&serde_json::json!({ "kind": kind, "was": state.as_str() })),
    )
    .await?;
    tx.commit().await?;
    Ok(match outcome {
        CancelOutcome::Cancelled => {
            db.store().poke();
            Cancelled::Cancelled
        }
        _ => Cancelled::Stopping,
    })
}

/// One job as its page shows it: the row, every attempt, and its stored
/// output (summarised lines, up to [`JOB_PAGE_LINES`]).
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    pub id: i64,
    pub kind: String,
    pub queue: String,
    pub state: String,
    pub attempts: u32,
    pub owner: Option<i64>,
    pub run_at: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub last_error: Option<String>,
    pub payload: serde_json::Value,
    /// The server whose job it is (its serialisation key), if any.
    pub service_id: Option<i64>,
    pub history: Vec<AttemptView>,
    pub lines: Vec<LineView>,
    /// More output is stored than the page shows.
    pub truncated: bool,
    /// The `<job_id>:<seq>` of the last line shown, for the live stream.
    pub after: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub worker: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: i64,
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LineView {
    pub seq: i64,
    pub attempt: u32,
    pub text: String,
}

/// Lines of output a job page shows at most.
pub const JOB_PAGE_LINES: u32 = 5000;

/// The server a job belongs to, from its serialisation key.
pub fn service_of(serial_key: Option<&str>) -> Option<i64> {
    serial_key?.strip_prefix("service:")?.parse().ok()
}

/// A job with its attempts and output, for `who`: a server's job for those
/// who manage the server, any other job for platform admins only. Jobs
/// `who` may not see are "not found", so ids reveal nothing.
pub async fn view(db: &Db, who: &Principal, job_id: i64) -> Result<JobDetail, PanelError> {
    let job = db
        .store()
        .job(job_id)
        .await?
        .ok_or(PanelError::NotFound("job"))?;
    let service_id = service_of(job.serial_key.as_deref());
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    match service_id {
        Some(sid) if !who.is_admin => {
            match crate::services::servers::load_managed(&mut conn, who, sid).await {
                Ok(_) => {}
                Err(PanelError::NotFound(_) | PanelError::Forbidden(_)) => {
                    return Err(PanelError::NotFound("job"))
                }
                Err(e) => return Err(e),
            }
        }
        None if !who.is_admin => return Err(PanelError::NotFound("job")),
        _ => {}
    }
    let lines = crate::queue::log::read_on(&mut conn, job_id, 0, JOB_PAGE_LINES + 1).await?;
    drop(rc);
    let truncated = lines.len() as u32 > JOB_PAGE_LINES;
    let lines: Vec<LineView> = lines
        .into_iter()
        .take(JOB_PAGE_LINES as usize)
        .map(|l| LineView {
            seq: l.seq,
            attempt: l.attempt,
            text: crate::queue::log::summary(&l.line),
        })
        .collect();
    let after = format!("{job_id}:{}", lines.last().map_or(0, |l| l.seq));
    let history = db
        .store()
        .attempts(job_id)
        .await?
        .into_iter()
        .map(|a| AttemptView {
            attempt: a.attempt,
            worker: a.worker,
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome,
            error: a.error,
        })
        .collect();
    Ok(JobDetail {
        id: job.id,
        kind: job.kind,
        queue: job.queue,
        state: job.state.as_str().to_string(),
        attempts: job.attempts,
        owner: job.owner,
        run_at: job.run_at,
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
        last_error: job.last_error,
        payload: job.payload,
        service_id,
        history,
        lines,
        truncated,
        after,
    })
}

/// Whether a finished job of `kind` may be run again as a copy. Runs that
/// read what to do when they start (people, web sites, packages, DNS,
/// certificates, a snapshot, a power action, a metrics collection) may; the provisioning flow's
/// own steps move a server's status, so a failed server is retried from
/// its page ([`crate::services::servers::retry`]); a password change or a
/// restore or a clone from production carries what the user confirmed once
/// (and a clone moves the test server's status), so they are asked again.
fn rerunnable(kind: JobKind) -> bool {
    match kind {
        JobKind::Access
        | JobKind::LookupRefresh
        | JobKind::Dns
        | JobKind::Vhosts
        | JobKind::Packages
        | JobKind::Certificate
        | JobKind::CertificateRenewal
        | JobKind::Snapshot
        | JobKind::MetricsCollect
        | JobKind::Power => true,
        JobKind::Provision
        | JobKind::OsReady
        | JobKind::Configure
        | JobKind::Deprovision
        | JobKind::DbPassword
        | JobKind::Restore
        | JobKind::CloneProduction
        | JobKind::StackConfigure
        // A move takes its target's room when asked for: ask again.
        | JobKind::Migrate => false,
    }
}

/// Runs a job that ended `dead` or `cancelled` again: a new job with the
/// same kind, payload, queue and keys, for its owner or a platform admin,
/// with its audit row in the same transaction. Returns the new job's id.
pub async fn retry(db: &Db, who: &Principal, job_id: i64) -> Result<i64, PanelError> {
    let job = db
        .store()
        .job(job_id)
        .await?
        .ok_or(PanelError::NotFound("job"))?;
    if !who.is_admin && job.owner != who.actor_id() {
        return Err(PanelError::Forbidden(
            "only the job's owner or a platform admin may run it again".into(),
        ));
    }
    if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
        return Err(PanelError::Conflict(format!(
            "the job is {}; only a dead or cancelled job runs again",
            job.state.as_str()
        )));
    }
    match JobKind::parse(&job.kind) {
        Some(kind) if rerunnable(kind) => {}
        Some(_) if service_of(job.serial_key.as_deref()).is_some() => {
            return Err(PanelError::Conflict(format!(
                "a {} job is not run again on its own: use Retry on the server's page",
                job.kind
            )))
        }
        _ => {
            return Err(PanelError::Conflict(format!(
                "a {} job is not run again on its own",
                job.kind
            )))
        }
    }
    let spec = crate::queue::JobSpec {
        kind: job.kind.clone(),
        payload: job.payload.clone(),
        queue: job.queue.clone(),
        priority: job.priority,
        run_at: crate::queue::RunAt::Now,
        unique_key: job.unique_key.clone(),
        serial_key: job.serial_key.clone(),
        owner: job.owner,
    };
    let mut tx = db.begin().await?;
    let out = crate::queue::enqueue(&mut tx, spec).await?;
    let mut conn = tx_conn(&mut tx);
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("job.retry", "job", job_id)
            .after(&serde_json::json!({ "kind": job.kind, "new_job_id": out.job_id })),
    )
    .await?;
    tx.commit().await?;
    Ok(out.job_id)
}
