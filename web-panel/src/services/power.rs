//! Power actions on a ready server (start, graceful shutdown, hard power
//! off, reset), each a durable `power` job on the `hypervisor` queue.
//!
//! [`request`] authorises (site admins and platform admins, as for delete
//! and retry; only platform admins while the site is suspended), checks the service takes power actions (`ready`), and
//! writes the `service.power` audit row and the job in one transaction.
//! The job runs under the service's serialisation key, so it never
//! overlaps a provisioning step or a delete; its handler is
//! `provision::power`.

use serde::Deserialize;
use serde_json::json;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::PowerJob;
use crate::queue;
use crate::services::servers::load_managed;

pub use crate::lifecycle::jobs::PowerAction;

/// Parses a requested action; an unknown one is a 422 on `action`.
fn parse_action(s: &str) -> Result<PowerAction, PanelError> {
    PowerAction::parse(s).ok_or_else(|| {
        let names: Vec<&str> = PowerAction::ALL
            .into_iter()
            .map(PowerAction::as_str)
            .collect();
        PanelError::invalid("action", format!("action is one of {names:?}"))
    })
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
    let action = parse_action(action)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = load_managed(&mut conn, who, service_id).await?;
    let site_state = crate::scalar!(
        &mut conn,
        String,
        "SELECT state FROM sites WHERE id = $1",
        service.site_id
    )?;
    if site_state.as_deref() == Some("suspended") && !who.is_admin {
        return Err(PanelError::Conflict(
            "the site is suspended; its servers stay off until a platform admin unsuspends it"
                .into(),
        ));
    }
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
    let spec = PowerJob { service_id, action }.spec(who.actor_id());
    let job = queue::enqueue(&mut tx, spec).await?;
    tx.commit().await?;
    Ok(job.job_id)
}
