//! The `migrate` job: a ready server moved to the host its
//! `services.migrate_to` names (`services::hosts::request_migration` took
//! the room there and queued this job).
//!
//! - **libvirt to libvirt on shared storage** (both hosts keep the VM's
//!   files in the same directory, `Driver::files_dir`): libvirt's own
//!   migration, peer to peer, live while the VM runs and offline (the
//!   definition only) while it is stopped (`LibvirtDriver::migrate_live`).
//! - **cold** (nspawn, libvirt hosts with storage of their own, or any
//!   other pair of one driver): the stopped VM's files are exported by the
//!   source's driver and imported by the target's (for libvirt: the disk
//!   with its snapshots, the seed, the definition with its UUID and MAC),
//!   the source's copy is deleted, the move is committed
//!   (`services.host_id` ← the target), then the VM is started on the
//!   target and its host key is checked byte for byte before the server
//!   counts as moved (`role_run::check_reachable`).
//!
//! Each action is idempotent, so a retry resumes: a VM the source no
//! longer has but the target has was already copied. A move that fails
//! for good while the source still holds the VM deletes the target's copy
//! and gives the target's room back; one that fails after the source's
//! copy was deleted stays on the target (the server is there now).

use std::sync::Arc;

use super::kit::{hypervisor_policy, read_state};
use super::role_run::check_reachable;
use crate::audit::{self, Change};
use crate::db::tx_conn;
use crate::domain::Principal;
use crate::execute;
use crate::hypervisor::{Driver, DriverError, PowerState};
use crate::lifecycle::jobs::{FlowJob, MigrateJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::log::JobLog;
use crate::queue::worker::record_failure;
use crate::queue::{Failure, Job, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::hosts;
use crate::store::{Store, StoreError};

/// `migrate`: see the module docs.
pub struct MigrateStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for MigrateStep {
    fn policy(&self) -> RetryPolicy {
        hypervisor_policy(&self.0)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = MigrateJob::decode(ctx.payload())?.service_id;
        let log = JobLog::open(&ctx)
            .await
            .map_err(|e| JobError::retryable(e.to_string()))?;
        let out = migrate(&self.0, id, &log).await;
        if let Err(e) = &out {
            log.message(e.to_string());
        }
        let _ = log.close().await;
        out.map_err(ProvisionError::into_job_error)
    }

    async fn on_failure(
        &self,
        store: &Store,
        job: &Job,
        failure: Failure<'_>,
    ) -> Result<(), StoreError> {
        if let Ok(MigrateJob { service_id }) = MigrateJob::decode(&job.payload) {
            if let Err(e) = give_up(&self.0, service_id).await {
                tracing::error!(service_id, error = %e, "migration: could not undo the move");
            }
        }
        record_failure(store, job, failure.error).await
    }
}

/// The two hosts of a move under way and their drivers.
struct Move {
    from: String,
    to: String,
    source: Arc<dyn Driver>,
    target: Arc<dyn Driver>,
}

async fn hosts_of(p: &Provisioner, id: i64) -> Result<Option<Move>, ProvisionError> {
    let (placement, states) = {
        let mut rc = p.db.read().await?;
        let mut conn = rc.conn();
        (
            hosts::placement_of(&mut conn, id).await?,
            hosts::states(&mut conn).await?,
        )
    };
    let (Some(from), Some(to)) = (placement.host, placement.migrate_to) else {
        return Ok(None);
    };
    let state = |h: &str| states.get(h).map(|s| s.as_str());
    let source = p
        .driver_at(Some(&from), state(&from))?
        .ok_or_else(|| ProvisionError::Missing(format!("host {from} has no driver")))?;
    let target = p
        .driver_at(Some(&to), state(&to))?
        .ok_or_else(|| ProvisionError::Missing(format!("host {to} has no driver")))?;
    Ok(Some(Move {
        from,
        to,
        source,
        target,
    }))
}

/// Whether both hosts keep VM `name`'s files in the same directory.
fn shares_storage(m: &Move, name: &str) -> bool {
    matches!(
        (m.source.files_dir(name), m.target.files_dir(name)),
        (Some(a), Some(b)) if a == b
    )
}

/// Whether `driver` has VM `name`.
async fn has(driver: &dyn Driver, name: &str) -> Result<Option<PowerState>, ProvisionError> {
    match driver.status(name).await {
        Ok(info) => Ok(Some(info.power)),
        Err(DriverError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn migrate(p: &Provisioner, id: i64, log: &JobLog) -> Result<(), ProvisionError> {
    let (Some(svc), Some(row)) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    let Some(m) = hosts_of(p, id).await? else {
        // Finished (or given up) already.
        return Ok(());
    };
    if svc.status != Status::Ready {
        // Deleted (or failed) meanwhile: `deprovision` removes the VM on
        // its own host; the target's copy and room go.
        give_up(p, id).await?;
        return Ok(());
    }
    let name = p.vm_name(id);
    let live =
        m.source.kind() == "libvirt" && m.target.kind() == "libvirt" && shares_storage(&m, &name);
    log.message(format!(
        "moving {name} from {} to {} ({})",
        m.from,
        m.to,
        if live {
            "libvirt migration"
        } else {
            "cold: copy, start, host-key check"
        }
    ));
    let on_source = has(m.source.as_ref(), &name).await?;
    let on_target = has(m.target.as_ref(), &name).await?;
    if live {
        match (on_source, on_target) {
            (Some(_), _) => {
                let uri = m.target.live_migration_uri().ok_or_else(|| {
                    ProvisionError::Missing(format!("host {} takes no live migration", m.to))
                })?;
                m.source.migrate_live(&name, &uri).await?;
            }
            (None, Some(_)) => {}
            (None, None) => {
                return Err(ProvisionError::Missing(format!(
                    "{name} is on neither {} nor {}",
                    m.from, m.to
                )))
            }
        }
        let info = m.target.status(&name).await?;
        commit(p, id, &m, &info.vm_ref, info.power).await?;
        log.message(format!("{name} is on {} now", m.to));
        return Ok(());
    }

    match (on_source, on_target) {
        (Some(PowerState::Stopped), _) => {
            if on_target.is_none() {
                let export = m.source.export_vm(&name).await?;
                log.message(format!("copying {name}'s files from {}", m.from));
                m.target.import_vm(&name, &export).await?;
            }
            // The target holds a complete copy now: the source's goes.
            m.source.delete(&name).await?;
        }
        (Some(state), _) => {
            return Err(ProvisionError::Missing(format!(
                "{name} is {state:?} on {}: a cold migration moves a stopped server only",
                m.from
            )))
        }
        // Copied and deleted from the source by an earlier attempt.
        (None, Some(_)) => {}
        (None, None) => {
            return Err(ProvisionError::Missing(format!(
                "{name} is on neither {} nor {}",
                m.from, m.to
            )))
        }
    }
    let info = m.target.status(&name).await?;
    commit(p, id, &m, &info.vm_ref, PowerState::Stopped).await?;
    log.message(format!("{name} is on {}; starting it there", m.to));
    m.target.start(&name).await?;
    check_reachable(p, id, &row, log).await?;
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    execute!(
        &mut conn,
        "UPDATE vms SET power_state = $2, updated_at = $3 WHERE service_id = $1",
        id,
        PowerState::Running.as_db(),
        now
    )?;
    tx.commit().await?;
    log.message(format!(
        "{name} runs on {} and presented the host key the panel generated",
        m.to
    ));
    Ok(())
}

/// The move, recorded: the server is on the target, with its audit row.
async fn commit(
    p: &Provisioner,
    id: i64,
    m: &Move,
    vm_ref: &str,
    power: PowerState,
) -> Result<(), ProvisionError> {
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    hosts::finish_migration(&mut conn, id).await?;
    execute!(
        &mut conn,
        "UPDATE vms SET vm_ref = $2, hypervisor = $3, power_state = $4, updated_at = $5 \
         WHERE service_id = $1",
        id,
        vm_ref,
        m.target.kind(),
        power.as_db(),
        now
    )?;
    let change = Change::new("service.migrated", "service", id)
        .before(&serde_json::json!({ "host": m.from }))
        .after(&serde_json::json!({ "host": m.to }));
    audit::record(&mut conn, now, &Principal::system(), change).await?;
    tx.commit().await?;
    Ok(())
}

/// A move that cannot go on: while the source still holds the VM, the
/// target's copy is deleted and its room given back. When the source's
/// copy is gone the target's is the server, so it is kept (the move is
/// committed instead).
async fn give_up(p: &Provisioner, id: i64) -> Result<(), ProvisionError> {
    let Some(m) = hosts_of(p, id).await? else {
        return Ok(());
    };
    let name = p.vm_name(id);
    let on_source = has(m.source.as_ref(), &name).await?;
    if on_source.is_none() && has(m.target.as_ref(), &name).await?.is_some() {
        let info = m.target.status(&name).await?;
        return commit(p, id, &m, &info.vm_ref, info.power).await;
    }
    // Hosts on shared storage hold one set of files (a failed libvirt
    // migration leaves the domain on the source): the target has no copy
    // of its own to delete.
    if on_source.is_some() && !shares_storage(&m, &name) {
        match m.target.delete(&name).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    hosts::abandon_migration(&mut conn, id).await?;
    let change = Change::new("service.migrate_abandoned", "service", id)
        .before(&serde_json::json!({ "host": m.from, "migrate_to": m.to }))
        .after(&serde_json::json!({ "host": m.from }));
    audit::record(&mut conn, now, &Principal::system(), change).await?;
    tx.commit().await?;
    Ok(())
}
