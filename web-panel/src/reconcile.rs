//! Reconciliation: compares what the hypervisor runs with what the store
//! says should exist, so nothing leaks when a flow dies half-way.
//!
//! Runs as the `reconcile` job (a cron schedule in `serve`/`worker`). Two
//! kinds of drift are found:
//! - **orphans**: a VM named `<prefix><service id>` whose service does not
//!   exist, is `deleted`, or is `failed` without a VM row. They are powered
//!   off and deleted.
//! - **unfinished compensation**: a service that failed before its OS came
//!   up (`failed_step` `create_vm` or `os_ready`) keeps its VM and address
//!   when the compensating delete failed; the pass deletes the VM again and,
//!   once that succeeded, releases the address into quarantine.
//! - **missing VMs**: a service that should have a VM (its `vms` row says
//!   so and it is not being deleted) but the hypervisor has none. These are
//!   only reported (`power_state = absent`, an audit row, an error log):
//!   re-creating a user's server silently would hide data loss.
//!
//! - **stalled flows**: a service in a transitional status (`requested`
//!   … `configuring`, `deleting`) with no queued or running job under its
//!   serialisation key `service:ID`. A step's compensation (`on_failure`)
//!   runs after its job is already `dead`, so a crash or a database error
//!   in between leaves the service with no job at all. The pass enqueues
//!   the step for the status again (steps are idempotent and resume), with
//!   a `reconcile.resumed` audit row. It waits [`RESUME_GRACE_MS`] after the
//!   service's last change and after the last job of the key finished, so
//!   a compensation still in flight wins. A cancelled step job counts as
//!   lost too: deleting the server is how a flow is stopped.
//!   Any queued job of the key counts as live, even an OS-ready wait that
//!   will find nothing to do: such a service is resumed on the first pass
//!   after that wait has fired.
//!
//! With several hypervisor hosts the pass lists each host with its own
//! driver. A VM counts for its service only on the service's host
//! (`services.host_id`); a live service's VM found on another host (a move
//! that stopped half-way) is reported, never deleted. **A host that cannot
//! be listed never causes deletions:** a host marked down is skipped, and
//! one whose `list` fails is left out of the pass, so none of its VMs is
//! deleted, none of its services is reported missing, and no compensation
//! on it is finished (which would release an address).
//!
//! VMs whose name does not follow the pattern (say, an admin's own test VM
//! under the same prefix) are reported as unknown and left alone.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::hypervisor::Driver;
use crate::lifecycle::jobs::{ConfigureJob, DeprovisionJob, OsReadyJob, ProvisionJob};
use crate::lifecycle::{Status, Step};
use crate::provision::HostDrivers;
use crate::queue::{self, JobContext, JobError, JobHandler, JobSpec, RetryPolicy};
use crate::services::hosts::HostState;
use crate::{execute, fetch_all};

/// What one reconciliation pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// VMs deleted because no live service owns them.
    pub orphans_deleted: Vec<String>,
    /// Orphans whose deletion failed (retried on the next pass).
    pub orphans_failed: Vec<String>,
    /// Services whose VM the hypervisor does not have.
    pub missing: Vec<i64>,
    /// Failed services whose compensation (VM delete, address release) this
    /// pass finished.
    pub compensated: Vec<i64>,
    /// VMs under the prefix whose name is not `<prefix><number>`.
    pub unknown: Vec<String>,
    /// Services in a transitional status that had no live job, whose step
    /// this pass enqueued again.
    pub resumed: Vec<i64>,
    /// Hosts marked down, left out of the pass.
    pub hosts_skipped: Vec<String>,
    /// Hosts whose VMs could not be listed, left out of the pass.
    pub hosts_unreachable: Vec<String>,
    /// Services with a VM on a host that was left out: nothing is known
    /// about them this pass.
    pub unreachable: Vec<i64>,
    /// VMs of live services found on another host than the service's
    /// (`<vm> on <host>`): a move that stopped half-way. Left alone.
    pub elsewhere: Vec<String>,
}

/// How long a stalled-looking service is left alone: twice the worker's
/// default lease (30 s). A step job's compensation runs right after the job
/// turns `dead`, and a lease-expired attempt is reclaimed within a lease;
/// both are done well within this.
pub const RESUME_GRACE_MS: i64 = 60_000;

#[derive(sqlx::FromRow)]
struct StalledRow {
    id: i64,
    status: Status,
    updated_at: i64,
    generation: Option<i64>,
    resets: Option<i64>,
}

/// Services in a status some step owns, with no live job under
/// `service:ID` and nothing about them changed or finished since `$1`. The
/// key is spelt as in `servers::service_key`.
fn stalled_sql() -> String {
    format!(
        "SELECT s.id, s.status, s.updated_at, p.generation, p.resets \
         FROM services s LEFT JOIN vm_provisioning p ON p.service_id = s.id \
         WHERE s.status IN ({}) \
           AND s.updated_at < $1 \
           AND NOT EXISTS (SELECT 1 FROM jobs j \
                           WHERE j.serial_key = 'service:' || CAST(s.id AS TEXT) \
                             AND (j.state IN ('queued', 'running') OR j.finished_at >= $1))",
        Status::sql_list(&Status::all_where(|r| r.owner.is_some()))
    )
}

#[derive(sqlx::FromRow)]
struct ServiceRow {
    id: i64,
    status: Status,
    has_vm: bool,
    power_state: Option<String>,
    failed_step: Option<Step>,
    /// The host that holds its VM.
    host: Option<String>,
}

const ROWS: &str =
    "SELECT s.id, s.status, (v.id IS NOT NULL) AS has_vm, v.power_state, p.failed_step, h.name AS host \
     FROM services s LEFT JOIN vms v ON v.service_id = s.id \
     LEFT JOIN vm_provisioning p ON p.service_id = s.id \
     LEFT JOIN hypervisor_hosts h ON h.id = s.host_id";

/// Failed before the OS came up: compensation deletes the VM.
fn compensates(s: &ServiceRow) -> bool {
    s.status == Status::Failed && s.has_vm && s.failed_step.is_some_and(Step::deletes_vm_on_failure)
}

/// The service id a VM name stands for, when it is `<prefix><digits>`.
pub fn service_id_of(name: &str, prefix: &str) -> Option<i64> {
    let rest = name.strip_prefix(prefix)?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// One pass over a single hypervisor (one host, named
/// [`DEFAULT_HOST`](crate::config::DEFAULT_HOST) unless the service rows
/// name another): see the module docs.
pub async fn reconcile(
    db: &Db,
    driver: Arc<dyn Driver>,
    prefix: &str,
) -> Result<Report, PanelError> {
    let hosts = HostDrivers::single(crate::config::DEFAULT_HOST, driver);
    reconcile_hosts(db, &hosts, prefix).await
}

/// One pass over every host; see the module docs. A host marked down, or
/// whose driver cannot list its VMs, is left out of the whole pass: none
/// of its VMs is deleted, and none of its services is reported missing or
/// has its compensation finished (which would release its address).
pub async fn reconcile_hosts(
    db: &Db,
    hosts: &HostDrivers,
    prefix: &str,
) -> Result<Report, PanelError> {
    let states = {
        let mut rc = db.read().await?;
        crate::services::hosts::states(&mut rc.conn()).await?
    };
    let mut report = Report::default();
    let mut listed: Vec<(&str, &Arc<dyn Driver>, Vec<crate::hypervisor::VmInfo>)> = Vec::new();
    for (name, driver) in hosts.iter() {
        if states.get(name) == Some(&HostState::Down) {
            report.hosts_skipped.push(name.to_string());
            continue;
        }
        match driver.list().await {
            Ok(vms) => listed.push((name, driver, vms)),
            Err(e) => {
                tracing::error!(host = name, error = %e, "reconcile: the host's VMs cannot be listed; nothing on it is touched this pass");
                report.hosts_unreachable.push(name.to_string());
            }
        }
    }
    let mut rc = db.read().await?;
    let rows = fetch_all!(&mut rc.conn(), ServiceRow, ROWS)?;
    drop(rc);
    let services: HashMap<i64, &ServiceRow> = rows.iter().map(|r| (r.id, r)).collect();
    // The host a service's VM should be on: its own, or the only host for
    // a service placed before hosts were recorded.
    let only = hosts.only().map(|(n, _)| n.to_string());
    let home = |s: &ServiceRow| s.host.clone().or_else(|| only.clone());

    // Services whose VM was seen on their own host.
    let mut seen = std::collections::HashSet::new();
    for (host, driver, vms) in &listed {
        for vm in vms {
            let Some(id) = service_id_of(&vm.name, prefix) else {
                report.unknown.push(vm.name.clone());
                continue;
            };
            let service = services.get(&id);
            let at_home = service.is_some_and(|s| home(s).as_deref() == Some(*host));
            if at_home {
                seen.insert(id);
            }
            if service.is_some_and(|s| !at_home && !is_orphan(s)) {
                // A live service's VM on another host than its own: a move
                // that stopped half-way (its job finishes or undoes it).
                // Never deleted here.
                report.elsewhere.push(format!("{} on {host}", vm.name));
                continue;
            }
            if service.is_some_and(|s| compensates(s)) {
                // Looked at again: a retry may have taken the service back.
                if !fresh(db, id).await?.as_ref().is_some_and(compensates) {
                    continue;
                }
                match driver.delete(&vm.name).await {
                    Ok(()) => {
                        crate::provision::steps::release_after_delete(db, id).await?;
                        tracing::warn!(vm = %vm.name, host, "reconcile: finished the compensation of a failed service");
                        note(db, id, "reconcile.compensated", &vm.name).await?;
                        report.compensated.push(id);
                    }
                    Err(e) => {
                        tracing::error!(vm = %vm.name, host, error = %e, "reconcile: could not delete a failed service's VM");
                        report.orphans_failed.push(vm.name.clone());
                    }
                }
                continue;
            }
            if !service.is_none_or(|s| is_orphan(s)) {
                continue;
            }
            // The snapshot above may be seconds old (deletes are slow): a retry
            // may have re-created this VM for its service since. Look again.
            if !still_orphan(db, id).await? {
                continue;
            }
            match driver.delete(&vm.name).await {
                Ok(()) => {
                    tracing::warn!(vm = %vm.name, host, "reconcile: deleted an orphaned VM");
                    note(db, id, "reconcile.orphan_deleted", &vm.name).await?;
                    report.orphans_deleted.push(vm.name.clone());
                }
                Err(e) => {
                    tracing::error!(vm = %vm.name, host, error = %e, "reconcile: could not delete an orphaned VM");
                    report.orphans_failed.push(vm.name.clone());
                }
            }
        }
    }

    for s in &rows {
        // Only a host whose list was read says anything about what is
        // missing from it.
        let home_listed = home(s).is_some_and(|h| listed.iter().any(|(n, _, _)| *n == h));
        if !home_listed {
            let should_exist = s.has_vm && !s.status.rules().leaving;
            if should_exist && s.host.is_some() {
                report.unreachable.push(s.id);
            }
            continue;
        }
        if compensates(s) && !seen.contains(&s.id) {
            // The VM is gone already; only the release is missing.
            if fresh(db, s.id).await?.as_ref().is_some_and(compensates) {
                crate::provision::steps::release_after_delete(db, s.id).await?;
                note(db, s.id, "reconcile.compensated", "(already deleted)").await?;
                report.compensated.push(s.id);
            }
            continue;
        }
        let should_exist = s.has_vm && !s.status.rules().leaving && !compensates(s);
        if should_exist && !seen.contains(&s.id) {
            report.missing.push(s.id);
            if s.power_state.as_deref() != Some("absent") {
                tracing::error!(
                    service = s.id,
                    "reconcile: the hypervisor has no VM for this service"
                );
                let now = db.now();
                let mut tx = db.begin().await?;
                let mut conn = tx_conn(&mut tx);
                execute!(
                    &mut conn,
                    "UPDATE vms SET power_state = 'absent', updated_at = $1 WHERE service_id = $2",
                    now,
                    s.id
                )?;
                let change = Change::new("reconcile.vm_missing", "service", s.id)
                    .before(&serde_json::json!({ "power_state": s.power_state }))
                    .after(&serde_json::json!({ "power_state": "absent" }));
                audit::record(&mut conn, now, &Principal::system(), change).await?;
                tx.commit().await?;
            }
        }
    }
    report.resumed = resume_stalled(db).await?;
    Ok(report)
}

/// The step job that takes a service on from `status`.
fn step_for(s: &StalledRow) -> Option<JobSpec> {
    let id = s.id;
    Some(match s.status.owner()? {
        // No status is a clone's own: a test server it took over is in
        // `creating_vm`, which `provision` resumes (from the image, or the
        // copy already made) when the clone's job was lost.
        Step::CreateVm | Step::Clone => ProvisionJob { service_id: id }.spec(None),
        // The wait that was lost expired long ago (the service sat past the
        // grace with no job), so the check runs at once: a power cycle, or
        // the give-up that was never recorded.
        Step::OsReady => OsReadyJob {
            service_id: id,
            generation: s.generation?,
            resets: s.resets?,
        }
        .spec(std::time::Duration::ZERO),
        Step::HostKey | Step::Configure => ConfigureJob { service_id: id }.spec(None),
        Step::Deprovision => DeprovisionJob { service_id: id }.spec(None),
    })
}

/// Enqueues the step of every stalled flow (see the module docs).
pub async fn resume_stalled(db: &Db) -> Result<Vec<i64>, PanelError> {
    let cutoff = db.now() - RESUME_GRACE_MS;
    let mut rc = db.read().await?;
    let stalled = stalled_sql();
    let rows = fetch_all!(
        &mut rc.conn(),
        StalledRow,
        sqlx::AssertSqlSafe(stalled.as_str()),
        cutoff
    )?;
    drop(rc);
    let mut resumed = Vec::new();
    for s in rows {
        let now = db.now();
        let mut tx = db.begin().await?;
        let mut conn = tx_conn(&mut tx);
        // Looked at again in the writing transaction, with the snapshot's
        // `updated_at`: a flow that moved on meanwhile is left alone. (On
        // PostgreSQL a step may still commit concurrently; the extra job
        // it meets finds nothing to do, because steps check the status.)
        let again = crate::fetch_opt!(
            &mut conn,
            StalledRow,
            sqlx::AssertSqlSafe(format!("{stalled} AND s.id = $2 AND s.updated_at = $3")),
            now - RESUME_GRACE_MS,
            s.id,
            s.updated_at
        )?;
        let Some(spec) = again.as_ref().and_then(step_for) else {
            if again.is_some() {
                tracing::error!(service = s.id, status = %s.status, "reconcile: a stalled service has no step to resume");
            }
            continue;
        };
        let job = queue::enqueue(&mut tx, spec).await?;
        let mut conn = tx_conn(&mut tx);
        let change = Change::new("reconcile.resumed", "service", s.id)
            .before(&serde_json::json!({ "status": s.status }))
            .after(&serde_json::json!({ "job_id": job.job_id }));
        audit::record(&mut conn, now, &Principal::system(), change).await?;
        tx.commit().await?;
        tracing::warn!(service = s.id, status = %s.status, job = job.job_id, "reconcile: resumed a flow that had no live job");
        resumed.push(s.id);
    }
    Ok(resumed)
}

/// Deleted, or failed with its VM already given up: nothing should run.
fn is_orphan(s: &ServiceRow) -> bool {
    s.status == Status::Deleted || (s.status == Status::Failed && !s.has_vm)
}

async fn fresh(db: &Db, id: i64) -> Result<Option<ServiceRow>, PanelError> {
    let mut rc = db.read().await?;
    Ok(crate::fetch_opt!(
        &mut rc.conn(),
        ServiceRow,
        sqlx::AssertSqlSafe(format!("{ROWS} WHERE s.id = $1")),
        id
    )?)
}

async fn still_orphan(db: &Db, id: i64) -> Result<bool, PanelError> {
    Ok(fresh(db, id).await?.as_ref().is_none_or(is_orphan))
}

async fn note(db: &Db, id: i64, action: &str, vm: &str) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let change = Change::new(action, "service", id).before(&serde_json::json!({ "vm": vm }));
    audit::record(&mut conn, now, &Principal::system(), change).await?;
    tx.commit().await?;
    Ok(())
}

/// The `reconcile` job.
#[derive(Clone)]
pub struct ReconcileHandler {
    pub db: Db,
    pub hosts: HostDrivers,
    pub prefix: String,
}

#[async_trait::async_trait]
impl JobHandler for ReconcileHandler {
    fn policy(&self) -> RetryPolicy {
        // The next scheduled pass is the real retry.
        RetryPolicy::default().max_attempts(1)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let report = reconcile_hosts(&self.db, &self.hosts, &self.prefix)
            .await
            .map_err(JobError::retryable)?;
        ctx.set_output_ref(serde_json::to_string(&report).unwrap_or_default());
        if !report.orphans_failed.is_empty() {
            return Err(JobError::retryable(format!(
                "could not delete orphaned VMs: {}",
                report.orphans_failed.join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::service_id_of;

    #[test]
    fn names_map_to_service_ids() {
        assert_eq!(service_id_of("keel-42", "keel-"), Some(42));
        assert_eq!(service_id_of("keel-", "keel-"), None);
        assert_eq!(service_id_of("keel-42-clone", "keel-"), None);
        assert_eq!(service_id_of("other-42", "keel-"), None);
        assert_eq!(service_id_of("keel-+4", "keel-"), None);
    }
}
