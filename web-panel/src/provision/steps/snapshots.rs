//! The `snapshot` and `restore` jobs (hypervisor queue, the service's
//! serialisation key, the default retry policy): driver calls a site
//! admin or the site's schedule asked for (`services::snapshots`).
//!
//! `snapshot` takes the snapshot `keel-j<job id>` (a retry asks the driver
//! for the same name, which it treats as done), records it, and deletes the
//! oldest beyond the site's `keep` (driver first, then the row, so a row
//! never names a snapshot the driver lost track of).
//!
//! `restore` reverts the server to the snapshot through the driver, which
//! stops and starts it; then it proves the server is still the one the
//! panel knows (`role_run::check_reachable`: the host key byte for byte,
//! the panel's key logging in) and queues the `access`, `vhosts` and
//! `packages` runs in one transaction with its audit row, since the disk
//! now holds whatever people, sites and packages it had at the snapshot.

use std::sync::Arc;

use super::kit::{check_cancel, read_state};
use super::role_run::check_reachable;
use crate::audit::{self, Change};
use crate::db::tx_conn;
use crate::domain::{PanelError, Principal};
use crate::hypervisor::DriverError;
use crate::lifecycle::jobs::{AccessJob, FlowJob, RestoreJob, SnapshotJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::snapshots;
use crate::{execute, fetch_opt, scalar};

/// `snapshot`: one snapshot through the driver, then retention.
pub struct SnapshotStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for SnapshotStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let job = SnapshotJob::decode(ctx.payload())?;
        take(&self.0, job, &ctx)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

async fn driver(
    p: &Provisioner,
    id: i64,
) -> Result<Arc<dyn crate::hypervisor::Driver>, ProvisionError> {
    p.require_driver_for(id).await
}

async fn take(p: &Provisioner, job: SnapshotJob, ctx: &JobContext) -> Result<(), ProvisionError> {
    let id = job.service_id;
    let (Some(svc), Some(_)) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    if svc.status != Status::Ready {
        return Ok(());
    }
    let driver = driver(p, id).await?;
    let vm = p.vm_name(id);
    let name = format!("keel-j{}", ctx.job.id);
    driver.snapshot_create(&vm, &name).await?;

    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let known = scalar!(
        &mut conn,
        i64,
        "SELECT COUNT(*) FROM snapshots WHERE service_id = $1 AND name = $2",
        id,
        &name
    )?
    .unwrap_or(0);
    if known == 0 {
        execute!(
            &mut conn,
            "INSERT INTO snapshots (service_id, name, origin, created_at) VALUES ($1, $2, $3, $4)",
            id,
            &name,
            job.origin.as_str(),
            now
        )?;
        audit::record(
            &mut conn,
            now,
            &Principal::system(),
            Change::new("service.snapshot", "service", id).after(&serde_json::json!({
                "job_id": ctx.job.id,
                "snapshot": name,
                "origin": job.origin.as_str(),
            })),
        )
        .await?;
    }
    let site = scalar!(
        &mut conn,
        i64,
        "SELECT site_id FROM services WHERE id = $1",
        id
    )?
    .ok_or(PanelError::NotFound("server"))?;
    let keep = snapshots::schedule_of(&mut conn, site).await?.keep.max(1) as usize;
    let all = snapshots::of_server(&mut conn, id).await?;
    tx.commit().await?;

    // Retention: the oldest beyond `keep` go, the driver's copy first.
    for old in all.iter().skip(keep) {
        check_cancel(&ctx.cancel)?;
        match driver.snapshot_delete(&vm, &old.name).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let now = p.db.now();
        let mut tx = p.db.begin().await?;
        let mut conn = tx_conn(&mut tx);
        execute!(&mut conn, "DELETE FROM snapshots WHERE id = $1", old.id)?;
        audit::record(
            &mut conn,
            now,
            &Principal::system(),
            Change::new("service.snapshot_expired", "service", id)
                .before(&serde_json::json!({ "snapshot": old.name, "keep": keep })),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// `restore`: the server reverted to a snapshot and checked.
pub struct RestoreStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for RestoreStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let job = RestoreJob::decode(ctx.payload())?;
        restore(&self.0, job, &ctx)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

async fn restore(p: &Provisioner, job: RestoreJob, ctx: &JobContext) -> Result<(), ProvisionError> {
    let id = job.service_id;
    let (Some(svc), Some(row)) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    if svc.status != Status::Ready {
        return Ok(());
    }
    let name = {
        let mut rc = p.db.read().await?;
        fetch_opt!(
            &mut rc.conn(),
            (String,),
            "SELECT name FROM snapshots WHERE id = $1 AND service_id = $2",
            job.snapshot_id,
            id
        )?
    };
    let Some((name,)) = name else {
        return Err(ProvisionError::Missing(format!(
            "snapshot {} of this server is gone",
            job.snapshot_id
        )));
    };
    let log = queue::log::JobLog::open(ctx)
        .await
        .map_err(PanelError::from)?;
    let vm = p.vm_name(id);
    log.message(format!("restoring {vm} to snapshot {name}"));
    let out = async {
        driver(p, id).await?.snapshot_revert(&vm, &name).await?;
        log.message(format!(
            "{vm} reverted; checking that it is still the server the panel knows"
        ));
        check_reachable(p, id, &row, &log).await
    }
    .await;
    if let Err(e) = &out {
        log.message(e.to_string());
    }
    let _ = log.close().await;
    out?;

    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    audit::record(
        &mut conn,
        now,
        &Principal::system(),
        Change::new("service.restored", "service", id).after(&serde_json::json!({
            "job_id": ctx.job.id,
            "snapshot": name,
        })),
    )
    .await?;
    // The disk is the snapshot's: bring people, sites and packages back
    // to what the panel holds now.
    queue::enqueue(&mut tx, AccessJob { service_id: id }.spec(None)).await?;
    crate::services::vhosts::queue_if_any(&mut tx, id).await?;
    crate::services::packages::queue_if_any(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}
