//! Power actions on a ready server (start, graceful shutdown, hard power
//! off, reset), each a durable `power` job on the `hypervisor` queue.
//!
//! [`request`] authorises (site admins and platform admins, as for delete
//! and retry), checks the service is `ready`, and writes the
//! `service.power` audit row and the job in one transaction. The job runs
//! under the service's serialisation key, so it never overlaps a
//! provisioning step or a delete. [`PowerStep`] calls the driver, then
//! stores what the hypervisor reports in `vms.power_state`; when the
//! service has left `ready` meanwhile (deleted, failed) it does nothing.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, Change};
use crate::hypervisor::{DriverError, PowerState};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, JobSpec, RetryPolicy};
use crate::services::db::tx_conn;
use crate::services::servers::{load_managed, service_key};
use crate::services::{Db, PanelError, Principal};
use crate::{execute, scalar};

/// The job kind of a power action.
pub const POWER: &str = "power";

/// How long a `shutdown` job waits for the guest to stop before it
/// records the state it sees.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// What a power request does to the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    Start,
    /// ACPI shutdown: the guest powers itself off.
    Shutdown,
    /// Pull the plug.
    PowerOff,
    /// Hard reset, without a shutdown.
    Reset,
}

impl PowerAction {
    pub const ALL: [&'static str; 4] = ["start", "shutdown", "power_off", "reset"];

    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Shutdown => "shutdown",
            PowerAction::PowerOff => "power_off",
            PowerAction::Reset => "reset",
        }
    }

    /// Parses a requested action; an unknown one is a 422 on `action`.
    pub fn parse(s: &str) -> Result<PowerAction, PanelError> {
        match s {
            "start" => Ok(PowerAction::Start),
            "shutdown" => Ok(PowerAction::Shutdown),
            "power_off" => Ok(PowerAction::PowerOff),
            "reset" => Ok(PowerAction::Reset),
            _ => Err(PanelError::invalid(
                "action",
                format!("action is one of {:?}", PowerAction::ALL),
            )),
        }
    }
}

/// The body of `POST /services/{id}/power`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    /// `start`, `shutdown`, `power_off` or `reset`.
    pub action: String,
}

/// Asks for a power action on a ready server; returns the job's id.
pub async fn request(
    db: &Db,
    who: &Principal,
    service_id: i64,
    action: &str,
) -> Result<i64, PanelError> {
    let action = PowerAction::parse(action)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = load_managed(&mut conn, who, service_id).await?;
    if !service.status.rules().powerable {
        return Err(PanelError::Conflict(format!(
            "power actions need a ready server; this one is {}",
            service.status
        )));
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.power", "service", service_id)
            .after(&json!({ "action": action.as_str() })),
    )
    .await?;
    let mut spec = JobSpec::new(
        POWER,
        json!({ "service_id": service_id, "action": action.as_str() }),
    )
    .queue("hypervisor")
    .serial_key(service_key(service_id));
    if let Some(uid) = who.actor_id() {
        spec = spec.owner(uid);
    }
    let job = queue::enqueue(&mut tx, spec).await?;
    tx.commit().await?;
    Ok(job.job_id)
}

/// `power`: one power action through the driver, then the observed state.
pub struct PowerStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for PowerStep {
    fn policy(&self) -> RetryPolicy {
        // The flow's hypervisor API policy.
        RetryPolicy::fixed(Duration::from_secs(self.0.config.api_retry_secs))
            .max_attempts(self.0.config.api_retry_attempts)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let payload = ctx.payload();
        let id = payload
            .get("service_id")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| JobError::permanent("payload has no service_id"))?;
        let action = payload
            .get("action")
            .and_then(|v| v.as_str())
            .ok_or_else(|| JobError::permanent("payload has no action"))
            .and_then(|a| PowerAction::parse(a).map_err(JobError::permanent))?;
        power(&self.0, id, action, &ctx.cancel)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

async fn power(
    p: &Provisioner,
    id: i64,
    action: PowerAction,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), ProvisionError> {
    if !is_ready(&p.db, id).await? {
        return Ok(());
    }
    let Some(driver) = &p.driver else {
        return Err(ProvisionError::Missing(
            "no hypervisor driver is configured".into(),
        ));
    };
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
