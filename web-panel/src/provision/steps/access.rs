//! The `access` job: the people of a server's site applied to it. Every
//! change to who may log in queues one per server (`services::access`),
//! coalesced, so ten quick edits make one run. The shared role run first
//! gives every person a UID (`services::access::ensure_unix_ids`), then
//! runs `access.playbook` (`roles/mwsusers`) through the shared role run,
//! its output in the job log, and records what it applied in the audit log.
//!
//! A configuring server's job waits (retryable) until `configure` is done,
//! whose own run may have read the people before the change; servers that
//! are failed, deleting or gone need nothing. While the site is suspended
//! the run blocks logins (`keel_access_blocked`) and then queues the
//! server's shutdown; a server already stopped is left as it is, since
//! starting it queues another access run first thing.

use std::sync::Arc;

use super::kit::read_state;
use super::role_run::run_roles;
use crate::audit::{self, Change};
use crate::db::tx_conn;
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{AccessJob, FlowJob, PowerAction, PowerJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::access;
use crate::{fetch_opt, scalar};

/// `access`: accounts, keys, sudo and Unix groups of one server.
pub struct AccessStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for AccessStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = AccessJob::decode(ctx.payload())?.service_id;
        apply(&self.0, id, &ctx)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

#[derive(sqlx::FromRow)]
struct SiteFacts {
    site_id: i64,
    state: String,
    power_state: Option<String>,
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
    let site = {
        let mut rc = p.db.read().await?;
        fetch_opt!(
            &mut rc.conn(),
            SiteFacts,
            "SELECT s.site_id, si.state, v.power_state FROM services s JOIN sites si ON si.id = s.site_id \
             LEFT JOIN vms v ON v.service_id = s.id WHERE s.id = $1",
            id
        )?
        .ok_or_else(|| ProvisionError::Missing("the service has no site".into()))?
    };
    let suspended = site.state == "suspended";
    if suspended && site.power_state.as_deref() == Some("stopped") {
        return Ok(());
    }
    let log = queue::log::JobLog::open(ctx)
        .await
        .map_err(PanelError::from)?;
    if suspended {
        log.message("the site is suspended: blocking logins, then shutting the server down");
    }
    let summary = run_roles(p, id, &row, &p.access.playbook, ctx, log).await?;

    // What the run applied, for the audit log and the server page.
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let people = access::people(&mut conn, Some(site.site_id))
        .await?
        .remove(&site.site_id)
        .unwrap_or_default();
    let applied: Vec<serde_json::Value> = people
        .iter()
        .filter(|p| !p.disabled)
        .map(|p| serde_json::json!({ "name": p.name, "uid": p.uid, "role": p.role }))
        .collect();
    let changed: u64 = summary.stats.iter().map(|(_, s)| s.changed as u64).sum();
    audit::record(
        &mut conn,
        now,
        &Principal::system(),
        Change::new("service.access_applied", "service", id).after(&serde_json::json!({
            "job_id": ctx.job.id,
            "people": applied,
            "blocked": suspended,
            "changed": changed,
        })),
    )
    .await?;
    if suspended {
        let still = scalar!(
            &mut conn,
            String,
            "SELECT state FROM sites WHERE id = $1",
            site.site_id
        )?;
        if still.as_deref() == Some("suspended") {
            let shutdown = PowerJob {
                service_id: id,
                action: PowerAction::Shutdown,
            };
            queue::enqueue(&mut tx, shutdown.spec(None)).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
