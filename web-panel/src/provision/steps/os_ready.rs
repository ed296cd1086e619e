//! The `vm_os_ready` job: fires when the OS-ready wait of one seed
//! generation times out. A VM that has not called back is power-cycled
//! (the cycle claimed first, under the callback's own conditions) and
//! waited for again, `os_ready_resets` times at most.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::failure::{fail, step_error};
use super::kit::{check_cancel, hypervisor_policy, read_state, ProvRow};
use crate::audit::{self, Change};
use crate::db::tx_conn;
use crate::domain::Principal;
use crate::execute;
use crate::hypervisor::DriverError;
use crate::lifecycle::jobs::{FlowJob, OsReadyJob};
use crate::lifecycle::{Status, Step};
use crate::provision::{FailureReason, ProvisionError, Provisioner};
use crate::queue::worker::record_failure;
use crate::queue::{self, Failure, Job, JobContext, JobError, JobHandler, RetryPolicy};
use crate::store::{Store, StoreError};

/// `vm_os_ready`: fires when the OS-ready wait times out. If the callback
/// has not come, power-cycle the VM and wait again; give up after
/// `os_ready_resets` cycles.
pub struct OsReadyStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for OsReadyStep {
    fn policy(&self) -> RetryPolicy {
        hypervisor_policy(&self.0)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let job = OsReadyJob::decode(ctx.payload())?;
        os_ready(&self.0, job, &ctx.cancel)
            .await
            .map_err(|e| step_error(&self.0, Step::OsReady, e))
    }

    async fn on_failure(
        &self,
        store: &Store,
        job: &Job,
        failure: Failure<'_>,
    ) -> Result<(), StoreError> {
        if let Ok(OsReadyJob { service_id: id, .. }) = OsReadyJob::decode(&job.payload) {
            let reason = FailureReason::from_detail(Step::OsReady, failure.detail);
            fail(&self.0, id, &reason).await;
        }
        record_failure(store, job, failure.error).await
    }
}

async fn os_ready(
    p: &Provisioner,
    job: OsReadyJob,
    cancel: &CancellationToken,
) -> Result<(), ProvisionError> {
    let OsReadyJob {
        service_id: id,
        generation,
        resets,
    } = job;
    let (Some(svc), Some(row)) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    let waiting = svc.status.owner() == Some(Step::OsReady)
        && row.callback_at.is_none()
        && row.generation == generation;
    if !waiting {
        return Ok(());
    }
    if row.resets == resets {
        if row.resets >= i64::from(p.config.os_ready_resets) {
            return Err(ProvisionError::NoCallback {
                timeout_secs: p.config.os_ready_timeout_secs,
                resets: row.resets,
            });
        }
        check_cancel(cancel)?;
        // Claim the power cycle before doing it, under the same conditions
        // the callback's UPDATE tests: a VM that has called back by now is
        // never reset, and the next wait is armed in the same transaction.
        if !claim_reset(p, id, &row).await? {
            return Ok(());
        }
    } else if row.resets != resets + 1 {
        // Neither this job's wait nor its claimed reset: stale.
        return Ok(());
    }
    // Claimed (now, or by an earlier attempt of this job whose driver call
    // failed): the VM still has not called back, so power-cycle it.
    check_cancel(cancel)?;
    let driver = p.require_driver_for(id).await?;
    match driver.reset(&row.vm_name).await {
        Ok(()) => {}
        // A stopped VM cannot be reset; start it instead.
        Err(DriverError::Permanent(_)) => driver.start(&row.vm_name).await?,
        Err(e) => return Err(e.into()),
    }
    tracing::warn!(service_id = id, vm = %row.vm_name, resets = resets + 1, "no callback in time: VM power-cycled");
    Ok(())
}

/// Counts one power cycle of a VM that is still waiting for its callback
/// and arms the next wait; false when the callback (or another attempt)
/// got there first.
async fn claim_reset(p: &Provisioner, id: i64, row: &ProvRow) -> Result<bool, ProvisionError> {
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let bumped = execute!(
        &mut conn,
        "UPDATE vm_provisioning SET resets = resets + 1, updated_at = $4 \
         WHERE service_id = $1 AND resets = $2 AND generation = $3 AND callback_at IS NULL \
           AND EXISTS (SELECT 1 FROM services s WHERE s.id = $1 AND s.status = $5)",
        id,
        row.resets,
        row.generation,
        now,
        Status::InstallingOs
    )?;
    if bumped != 1 {
        return Ok(false);
    }
    audit::record(
        &mut conn,
        now,
        &Principal::system(),
        Change {
            action: "service.vm_reset",
            object_type: "service",
            object_id: Some(id),
            before: None,
            after: Some(json!({ "vm": row.vm_name, "resets": row.resets + 1 })),
        },
    )
    .await?;
    let next = OsReadyJob {
        service_id: id,
        generation: row.generation,
        resets: row.resets + 1,
    };
    queue::enqueue(
        &mut tx,
        next.spec(Duration::from_secs(p.config.os_ready_timeout_secs)),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
