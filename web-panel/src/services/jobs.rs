//! Cancelling a job from the API or the pages. The job's owner may cancel
//! it, and platform admins any job. A queued job is cancelled at once; a
//! running one is asked to stop, which its worker passes on at its next
//! heartbeat: a role run then stops between two tasks and the job ends
//! `cancelled`. The request and its audit row commit together.

use serde::Serialize;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
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
