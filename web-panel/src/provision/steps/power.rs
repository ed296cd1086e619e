//! The `power` job: one power action (`services::power::request` queued
//! it) carried out through the driver, then the state the hypervisor
//! reports stored in `vms.power_state`. A service that has stopped taking
//! power actions meanwhile (deleted, failed) is left alone. A `start`
//! queues an `access` job, since a server that was off missed the access
//! changes made meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::kit::hypervisor_policy;
use crate::db::{tx_conn, Db};
use crate::hypervisor::{DriverError, PowerState};
use crate::lifecycle::jobs::{AccessJob, FlowJob, PowerAction, PowerJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, RetryPolicy};
use crate::{execute, scalar};

/// How long a `shutdown` job waits for the guest to stop before it
/// records the state it sees.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// `power`: one power action through the driver, then the observed state.
pub struct PowerStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for PowerStep {
    fn policy(&self) -> RetryPolicy {
        hypervisor_policy(&self.0)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let job = PowerJob::decode(ctx.payload())?;
        power(&self.0, job.service_id, job.action, &ctx.cancel)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

async fn power(
    p: &Provisioner,
    id: i64,
    action: PowerAction,
    cancel: &CancellationToken,
) -> Result<(), ProvisionError> {
    if !is_ready(&p.db, id).await? {
        return Ok(());
    }
    let driver = p.require_driver_for(id).await?;
    let name = p.vm_name(id);
    match action {
        PowerAction::Start => driver.start(&name).await?,
        PowerAction::Shutdown => driver.shutdown(&name).await?,
        PowerAction::PowerOff => driver.power_off(&name).await?,
        PowerAction::Reset => driver.reset(&name).await?,
    }
    // A graceful shutdown only asks the guest; give it a while to finish
    // so the stored state is what the action led to, not the moment before.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
    let state = loop {
        let state = match driver.status(&name).await {
            Ok(info) => info.power,
            Err(DriverError::NotFound(_)) => break "absent",
            Err(e) => return Err(e.into()),
        };
        if action != PowerAction::Shutdown
            || state != PowerState::Running
            || tokio::time::Instant::now() >= deadline
            || cancel.is_cancelled()
        {
            break state.as_db();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    execute!(
        &mut conn,
        "UPDATE vms SET power_state = $1, updated_at = $2 WHERE service_id = $3",
        state,
        now,
        id
    )?;
    if action == PowerAction::Start {
        // A server that was off missed every access change meanwhile (and
        // after an unsuspend, logins are still blocked on it).
        queue::enqueue(&mut tx, AccessJob { service_id: id }.spec(None)).await?;
    }
    tx.commit().await?;
    tracing::info!(service_id = id, vm = %name, action = action.as_str(), state, "power action done");
    Ok(())
}

/// Whether the service still takes power actions (it may have been
/// deleted or failed since the request).
async fn is_ready(db: &Db, id: i64) -> Result<bool, ProvisionError> {
    let mut rc = db.read().await?;
    let status = scalar!(
        &mut rc.conn(),
        Status,
        "SELECT status FROM services WHERE id = $1",
        id
    )?;
    Ok(status.is_some_and(|s| s.rules().powerable))
}
