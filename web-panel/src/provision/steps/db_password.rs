//! The `db_password` job: a server's new MariaDB root password set by a
//! role run. `services::dbpassword::change` queues it with the password
//! sealed in `db_password_changes`, coalesced per server. The run is
//! `sites.db_password_playbook` (`playbooks/dbpassword.yml`,
//! `roles/mwsmariadb`) through the shared role run, with the password as
//! the extra variable `keel_db_root_password`, held in memory only (an
//! unsafe string, never templated); the role's tasks that use it are
//! `no_log`, so the job log shows them censored. When the run is done the
//! sealed row goes, in the transaction that writes the audit row (which
//! names the job, never the password); so does a row whose run has failed
//! for good. A run that finds no row (a coalesced request already set it)
//! changes nothing.

use std::sync::Arc;

use super::kit::read_state;
use super::role_run::run_roles_with;
use crate::audit::{self, Change};
use crate::automation::secrets::Sealer;
use crate::db::tx_conn;
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{DbPasswordJob, FlowJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::dbpassword;

/// `db_password`: MariaDB's root password on the server.
pub struct DbPasswordStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for DbPasswordStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = DbPasswordJob::decode(ctx.payload())?.service_id;
        apply(&self.0, id, &ctx).await
    }
}

async fn apply(p: &Provisioner, id: i64, ctx: &JobContext) -> Result<(), JobError> {
    let sealer = Sealer::for_data_dir(&p.data_dir)
        .map_err(|e| JobError::permanent(PanelError::Internal(format!("the panel's key: {e}"))))?;
    let pending = dbpassword::pending(&p.db, &sealer, id)
        .await
        .map_err(|e| ProvisionError::from(e).into_job_error())?;
    let Some((password, sealed)) = pending else {
        return Ok(());
    };
    match set(p, id, ctx, password).await {
        Ok(done) => finish(p, id, &sealed, ctx, done)
            .await
            .map_err(ProvisionError::into_job_error),
        Err(e) => {
            let e = e.into_job_error();
            // The last attempt, or one no retry can mend: the admin was
            // told this password, but it was never set; keep no copy.
            let last = RetryPolicy::default()
                .max_attempts
                .is_some_and(|max| ctx.job.attempts >= max);
            if last || e.is_permanent() {
                finish(p, id, &sealed, ctx, false)
                    .await
                    .map_err(ProvisionError::into_job_error)?;
            }
            Err(e)
        }
    }
}

/// The role run with the password: `Ok(true)` when it is set, `Ok(false)`
/// when the server is on its way out and gets none.
async fn set(
    p: &Provisioner,
    id: i64,
    ctx: &JobContext,
    password: crate::automation::secrets::Secret,
) -> Result<bool, ProvisionError> {
    let (Some(svc), Some(row)) = read_state(&p.db, id).await? else {
        return Ok(false);
    };
    match svc.status {
        Status::Ready => {}
        Status::Configuring => {
            return Err(ProvisionError::NotReady(
                "the server is still configuring".into(),
            ))
        }
        // A server on its way out gets no password; the caller drops it.
        _ => return Ok(false),
    }
    let log = queue::log::JobLog::open(ctx)
        .await
        .map_err(PanelError::from)?;
    let mut extra = keel::vars::VarMap::new();
    extra.insert(
        "keel_db_root_password".into(),
        keel::vars::unsafe_string(password.expose()),
    );
    run_roles_with(p, id, &row, &p.sites.db_password_playbook, ctx, log, extra).await?;
    Ok(true)
}

/// Drops the sealed password this run read and records the outcome.
async fn finish(
    p: &Provisioner,
    id: i64,
    sealed: &str,
    ctx: &JobContext,
    set: bool,
) -> Result<(), ProvisionError> {
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    dbpassword::forget(&mut conn, id, sealed).await?;
    audit::record(
        &mut conn,
        now,
        &Principal::system(),
        Change::new("service.db_password_applied", "service", id)
            .after(&serde_json::json!({ "job_id": ctx.job.id, "set": set })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
