//! The `vhosts` job: a server's vhosts applied to it. Every change to them
//! queues one (`services::vhosts`), coalesced per server, and `configure`
//! queues one when it makes a server with vhosts ready. The run is
//! `sites.vhosts_playbook` (`playbooks/vhosts.yml`, `roles/mwsvhosts`)
//! through the shared role run, reading `keel_vhosts` from the panel's
//! inventory when it starts, its output in the job log; what it applied
//! goes to the audit log (`service.vhosts_applied`, with how many tasks
//! changed, so a run that found everything in place says 0).
//!
//! A configuring server's job waits (retryable) until `configure` is done;
//! servers that are failed, deleting or gone need nothing (a retried
//! server's `configure` queues the run again).

use std::sync::Arc;

use super::kit::read_state;
use super::role_run::run_roles;
use crate::audit::{self, Change};
use crate::db::tx_conn;
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{FlowJob, VhostsJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::vhosts;

/// `vhosts`: the server's Apache vhosts and aliases.
pub struct VhostsStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for VhostsStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = VhostsJob::decode(ctx.payload())?.service_id;
        apply(&self.0, id, &ctx)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

async fn apply(p: &Provisioner, id: i64, ctx: &JobContext) -> Result<(), ProvisionError> {
    let (Some(svc), Some(row)) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    match svc.status {
        Status::Ready => {}
        Status::Configuring => {
            return Err(ProvisionError::NotReady(
                "the server is still configuring".into(),
            ))
        }
        _ => return Ok(()),
    }
    let log = queue::log::JobLog::open(ctx)
        .await
        .map_err(PanelError::from)?;
    let summary = run_roles(p, id, &row, &p.sites.vhosts_playbook, ctx, log).await?;

    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    // The vhosts as they are now: a change during the run has queued
    // another run already, which will apply it.
    let names: Vec<String> = vhosts::of_service(&mut conn, id)
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let changed: u64 = summary.stats.iter().map(|(_, s)| s.changed as u64).sum();
    audit::record(
        &mut conn,
        now,
        &Principal::system(),
        Change::new("service.vhosts_applied", "service", id).after(&serde_json::json!({
            "job_id": ctx.job.id,
            "vhosts": names,
            "changed": changed,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
