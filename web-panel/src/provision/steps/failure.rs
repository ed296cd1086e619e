//! When a step fails for good: the tenant's reason attached to the job
//! error ([`step_error`]), the service marked `failed` if the step still
//! owns it, and the compensation (VM deleted, then the address released).
//! Reconciliation uses [`release_after_delete`] to finish a compensation
//! whose VM delete failed earlier.

use crate::alloc;
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::{transition, Status, Step};
use crate::provision::{FailureReason, ProvisionError, Provisioner};
use crate::queue::JobError;
use crate::{execute, scalar};

/// A step's error for the queue, with the tenant's reason attached for
/// its `on_failure` (see `reason.rs`).
pub(super) fn step_error(p: &Provisioner, step: Step, e: ProvisionError) -> JobError {
    e.into_step_error(step, p.config.os_ready_resets)
}

/// A step failed for good: `failed` with the reason and the step; for
/// steps before the OS is up, the VM is deleted and the address released
/// (into quarantine).
///
/// The status changes first, and only if the step still owns the service:
/// `vm_os_ready` fails only a service still in `installing_os` with no
/// callback (a callback that won the race keeps its `configuring`), and
/// `provision` only one it has not handed on. The VM is deleted after that
/// commit, and the address is released only once the driver confirmed the
/// delete: a VM that could not be deleted keeps its `vms` row and its
/// address, and a retry deletes it before building a new one.
pub(super) async fn fail(p: &Provisioner, id: i64, reason: &FailureReason) {
    let step = reason.step();
    let marked = mark_failed(p, id, step, &reason.to_string()).await;
    match marked {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(service_id = id, error = %e, "could not mark the service failed");
            return;
        }
    }
    if !step.deletes_vm_on_failure() {
        return;
    }
    let driver = match p.driver_for(id).await {
        Ok(d) => d,
        Err(e) => {
            // A host that is down or unknown: nothing is concluded about
            // the VM, so the address and the host's room stay taken.
            tracing::error!(
                service_id = id,
                error = %e,
                "compensation: the VM's host cannot be reached; its address stays allocated until a retry or delete removes it"
            );
            return;
        }
    };
    if let Some(driver) = driver {
        if let Err(e) = driver.delete(&p.vm_name(id)).await {
            tracing::error!(
                service_id = id,
                error = %e,
                "compensation: could not delete the VM; its address stays allocated until a retry or delete removes it"
            );
            return;
        }
    }
    if let Err(e) = release_after_delete(&p.db, id).await {
        tracing::error!(service_id = id, error = %e, "compensation: could not release the address");
    }
}

/// `failed` for `step`, if the step still owns the service; false when it
/// does not (the service moved on, or is already failed or going away).
async fn mark_failed(
    p: &Provisioner,
    id: i64,
    step: Step,
    reason: &str,
) -> Result<bool, PanelError> {
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let Some(callback_at) = scalar!(
        &mut conn,
        Option<i64>,
        "SELECT p.callback_at FROM services s \
         LEFT JOIN vm_provisioning p ON p.service_id = s.id WHERE s.id = $1",
        id
    )?
    else {
        return Ok(false);
    };
    let from = step.failable(callback_at.is_some());
    if !transition(
        &mut conn,
        now,
        &Principal::system(),
        id,
        &from,
        Status::Failed,
        Some(reason),
    )
    .await?
    {
        return Ok(false);
    }
    execute!(
        &mut conn,
        "UPDATE vm_provisioning SET failed_step = $2, updated_at = $3 WHERE service_id = $1",
        id,
        step,
        now
    )?;
    // A clone that was booting ends with the server.
    crate::services::testservers::finish_booting(&mut conn, now, id, Some(reason)).await?;
    tx.commit().await?;
    Ok(true)
}

/// After a confirmed VM delete: forget the VM and release the address,
/// unless the service left `failed` meanwhile (a retry now owns both).
/// The second half of compensation, once the VM is confirmed gone: drop
/// the VM row and release the address (into quarantine), if the service is
/// still `failed`. Also used by reconciliation to finish a compensation
/// whose delete failed earlier.
pub(crate) async fn release_after_delete(db: &Db, id: i64) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let status = scalar!(
        &mut conn,
        Status,
        "SELECT status FROM services WHERE id = $1",
        id
    )?;
    if status != Some(Status::Failed) {
        return Ok(());
    }
    execute!(&mut conn, "DELETE FROM vms WHERE service_id = $1", id)?;
    alloc::release(&mut conn, id, now).await?;
    crate::services::hosts::release(&mut conn, id).await?;
    tx.commit().await?;
    Ok(())
}
