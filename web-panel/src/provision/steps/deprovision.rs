//! The `deprovision` job: power off and delete the VM, forget its host
//! key, drop the VM row and release the address, then `deleted` (and,
//! with DNS publishing on, the `dns` job that removes its records).

use std::sync::Arc;

use super::kit::{hypervisor_policy, read_state};
use crate::alloc;
use crate::db::tx_conn;
use crate::domain::Principal;
use crate::hypervisor::DriverError;
use crate::lifecycle::jobs::{DeprovisionJob, FlowJob};
use crate::lifecycle::{transition, Status, Step};
use crate::provision::{hostkey, ProvisionError, Provisioner};
use crate::queue::{JobContext, JobError, JobHandler, RetryPolicy};
use crate::{execute, scalar};

/// `deprovision`: power off and delete the VM, forget its host key,
/// release the address, `deleted`.
pub struct DeprovisionStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for DeprovisionStep {
    fn policy(&self) -> RetryPolicy {
        hypervisor_policy(&self.0)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = DeprovisionJob::decode(ctx.payload())?.service_id;
        deprovision(&self.0, id)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

async fn deprovision(p: &Provisioner, id: i64) -> Result<(), ProvisionError> {
    let (Some(svc), _) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    if svc.status.owner() != Some(Step::Deprovision) {
        return Ok(());
    }
    let name = p.vm_name(id);
    if let Some(driver) = p.driver_for(id).await? {
        match driver.power_off(&name).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        driver.delete(&name).await?;
    }
    hostkey::remove_known_hosts(&p.known_hosts_path(&name))?;
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let status = scalar!(
        &mut conn,
        Status,
        "SELECT status FROM services WHERE id = $1",
        id
    )?;
    if status.and_then(Status::owner) != Some(Step::Deprovision) {
        return Ok(());
    }
    execute!(&mut conn, "DELETE FROM vms WHERE service_id = $1", id)?;
    alloc::release(&mut conn, id, now).await?;
    crate::services::hosts::release(&mut conn, id).await?;
    transition(
        &mut conn,
        now,
        &Principal::system(),
        id,
        &Status::owned_by(Step::Deprovision),
        Status::Deleted,
        None,
    )
    .await?;
    super::dns::queue_publish(p, &mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}
