//! The `packages` job: the system packages a server's site admins picked
//! from the allowed list, applied to it. Every change queues one
//! (`services::packages`), coalesced per server, and `configure` queues one
//! when it makes a server with packages ready. The run is
//! `sites.packages_playbook` (`playbooks/packages.yml`,
//! `roles/mwspackages`) through the shared role run, reading
//! `keel_packages` from the panel's inventory when it starts, its output in
//! the job log; what it applied goes to the audit log
//! (`service.packages_applied`, with how many tasks changed).
//!
//! A configuring server's job waits (retryable) until `configure` is done;
//! servers that are failed, deleting or gone need nothing.

use std::sync::Arc;

use super::kit::read_state;
use super::role_run::run_roles;
use crate::audit::{self, Change};
use crate::db::tx_conn;
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{FlowJob, PackagesJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::packages;

/// `packages`: the server's picked system packages.
pub struct PackagesStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for PackagesStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = PackagesJob::decode(ctx.payload())?.service_id;
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
    let summary = run_roles(p, id, &row, &p.sites.packages_playbook, ctx, log).await?;

    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let names = packages::of_server(&mut conn, id).await?;
    let changed: u64 = summary.stats.iter().map(|(_, s)| s.changed as u64).sum();
    audit::record(
        &mut conn,
        now,
        &Principal::system(),
        Change::new("service.packages_applied", "service", id).after(&serde_json::json!({
            "job_id": ctx.job.id,
            "packages": names,
            "changed": changed,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
