//! Snapshots and restore: a server's disk captured through the hypervisor
//! driver, on demand or on its site's schedule, and the server put back to
//! one of them. Site admins ask here; the `snapshot` and `restore` jobs
//! (`provision/steps/snapshots.rs`, hypervisor queue) make the driver
//! calls. A snapshot row exists for every snapshot the driver holds: the
//! job writes it after the driver has taken it, and drops the oldest
//! beyond the site's `keep`.
//!
//! A site's schedule (`snapshot_schedules`; a site without a row has
//! [`Schedule::default`]: daily, keep 7) reaches the queue's scheduler
//! through [`ScheduledSnapshots`], one interval schedule per ready server.
//!
//! A restore needs confirmation: the body names the server's hostname, as
//! a typed confirmation does on the page. The restored server keeps the
//! host key and addresses the panel holds: the snapshot is of the same
//! server, and the `restore` job checks the host key byte for byte before
//! it queues the runs that bring people, vhosts and packages back to the
//! panel's records.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{RestoreJob, SnapshotJob, SnapshotOrigin};
use crate::lifecycle::Status;
use crate::queue::{self, cron};
use crate::services::sites::require_admin;
use crate::store::StoreError;
use crate::{execute, fetch_all, fetch_opt};

/// One snapshot of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Snapshot {
    pub id: i64,
    pub service_id: i64,
    /// The driver's name for it.
    pub name: String,
    /// `manual` or `scheduled`.
    pub origin: String,
    /// When it was taken (Unix milliseconds).
    pub created_at: i64,
}

/// A site's snapshot schedule, and the body of
/// `PUT /sites/{id}/snapshot-schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Seconds between two scheduled snapshots of each server (at least
    /// an hour).
    pub every_secs: i64,
    /// How many snapshots each server keeps (1 to 100); the oldest go.
    pub keep: i64,
    pub enabled: bool,
}

impl Default for Schedule {
    /// Daily, keeping a week.
    fn default() -> Self {
        Schedule {
            every_secs: 86_400,
            keep: 7,
            enabled: true,
        }
    }
}

/// The body of `POST /services/{id}/snapshots/{snapshot_id}/restore`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The server's hostname, typed to confirm.
    #[serde(default)]
    pub confirm: String,
}

#[derive(sqlx::FromRow)]
struct Server {
    site_id: i64,
    status: Status,
    hostname: Option<String>,
}

/// The server `id`, if `who` manages it (as `services::vhosts`).
async fn managed(conn: &mut Conn<'_>, who: &Principal, id: i64) -> Result<Server, PanelError> {
    let server = fetch_opt!(
        conn,
        Server,
        "SELECT s.site_id, s.status, a.hostname FROM services s \
         LEFT JOIN pool_addresses a ON a.service_id = s.id WHERE s.id = $1",
        id
    )?
    .ok_or(PanelError::NotFound("server"))?;
    match require_admin(conn, who, server.site_id).await {
        Ok(()) => Ok(server),
        Err(PanelError::NotFound(_)) => Err(PanelError::NotFound("server")),
        Err(PanelError::Forbidden(_)) => Err(PanelError::Forbidden(
            "SSH-only users cannot manage this server in the panel".into(),
        )),
        Err(e) => Err(e),
    }
}

fn require_ready(server: &Server, what: &str) -> Result<(), PanelError> {
    if server.status != Status::Ready {
        return Err(PanelError::Conflict(format!(
            "{what} ready servers only; this one is {}",
            server.status
        )));
    }
    Ok(())
}

/// A server's snapshots, newest first.
pub async fn of_server(conn: &mut Conn<'_>, service_id: i64) -> Result<Vec<Snapshot>, PanelError> {
    Ok(fetch_all!(
        conn,
        Snapshot,
        "SELECT id, service_id, name, origin, created_at FROM snapshots \
         WHERE service_id = $1 ORDER BY created_at DESC, id DESC",
        service_id
    )?)
}

/// The snapshots of a server its site admins manage.
pub async fn list(db: &Db, who: &Principal, service_id: i64) -> Result<Vec<Snapshot>, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    managed(&mut conn, who, service_id).await?;
    of_server(&mut conn, service_id).await
}

/// Asks for a snapshot of a ready server now; returns the job's id.
pub async fn take(db: &Db, who: &Principal, service_id: i64) -> Result<i64, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let server = managed(&mut conn, who, service_id).await?;
    require_ready(&server, "snapshots are taken of")?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.snapshot_request", "service", service_id)
            .after(&json!({ "origin": "manual" })),
    )
    .await?;
    let job = SnapshotJob {
        service_id,
        origin: SnapshotOrigin::Manual,
    };
    let out = queue::enqueue(&mut tx, job.spec(who.actor_id())).await?;
    tx.commit().await?;
    Ok(out.job_id)
}

/// Asks for a ready server to be put back to one of its snapshots, once
/// `body.confirm` names the server's hostname; returns the job's id.
pub async fn restore(
    db: &Db,
    who: &Principal,
    service_id: i64,
    snapshot_id: i64,
    body: &RestoreBody,
) -> Result<i64, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let server = managed(&mut conn, who, service_id).await?;
    let snapshot = of_server(&mut conn, service_id)
        .await?
        .into_iter()
        .find(|s| s.id == snapshot_id)
        .ok_or(PanelError::NotFound("snapshot"))?;
    require_ready(&server, "restores put back")?;
    let hostname = server.hostname.unwrap_or_default();
    if body.confirm.trim() != hostname {
        return Err(PanelError::invalid(
            "confirm",
            format!(
                "a restore replaces the server's disk with snapshot {}: type the server's hostname ({hostname}) to confirm",
                snapshot.name
            ),
        ));
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.restore_request", "service", service_id)
            .after(&json!({ "snapshot": snapshot.name, "snapshot_id": snapshot.id })),
    )
    .await?;
    let job = RestoreJob {
        service_id,
        snapshot_id,
    };
    let out = queue::enqueue(&mut tx, job.spec(who.actor_id())).await?;
    tx.commit().await?;
    Ok(out.job_id)
}

/// A site's schedule (the default when it has set none).
pub async fn schedule_of(conn: &mut Conn<'_>, site_id: i64) -> Result<Schedule, PanelError> {
    let row = fetch_opt!(
        conn,
        (i64, i64, bool),
        "SELECT every_secs, keep, enabled FROM snapshot_schedules WHERE site_id = $1",
        site_id
    )?;
    Ok(
        row.map_or_else(Schedule::default, |(every_secs, keep, enabled)| Schedule {
            every_secs,
            keep,
            enabled,
        }),
    )
}

/// The schedule of a site its admins manage.
pub async fn schedule(db: &Db, who: &Principal, site_id: i64) -> Result<Schedule, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    require_admin(&mut conn, who, site_id).await?;
    schedule_of(&mut conn, site_id).await
}

/// Replaces a site's schedule.
pub async fn set_schedule(
    db: &Db,
    who: &Principal,
    site_id: i64,
    want: &Schedule,
) -> Result<Schedule, PanelError> {
    if want.every_secs < 3600 {
        return Err(PanelError::invalid(
            "every_secs",
            "snapshots are taken at most hourly (every_secs ≥ 3600)",
        ));
    }
    if !(1..=100).contains(&want.keep) {
        return Err(PanelError::invalid("keep", "keep is 1 to 100 snapshots"));
    }
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let before = schedule_of(&mut conn, site_id).await?;
    execute!(
        &mut conn,
        "DELETE FROM snapshot_schedules WHERE site_id = $1",
        site_id
    )?;
    execute!(
        &mut conn,
        "INSERT INTO snapshot_schedules (site_id, every_secs, keep, enabled) VALUES ($1, $2, $3, $4)",
        site_id,
        want.every_secs,
        want.keep,
        want.enabled
    )?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("site.snapshot_schedule", "site", site_id)
            .before(&before)
            .after(want),
    )
    .await?;
    tx.commit().await?;
    Ok(*want)
}

/// The snapshot schedules of every ready server, for the queue's
/// scheduler: `snapshots:ID` every `every_secs` of its site (enabled ones
/// only), each fire a scheduled `snapshot` job.
pub struct ScheduledSnapshots(pub Db);

#[async_trait::async_trait]
impl cron::ScheduleSource for ScheduledSnapshots {
    async fn schedules(&self) -> Result<Vec<cron::Schedule>, StoreError> {
        let store_err = |e: PanelError| match e {
            PanelError::Store(s) => s,
            PanelError::Database(d) => StoreError::Database(d),
            other => StoreError::Database(sqlx::Error::Protocol(other.to_string())),
        };
        let mut rc = self.0.read().await.map_err(store_err)?;
        let rows = fetch_all!(
            &mut rc.conn(),
            (i64, Option<i64>, Option<bool>),
            "SELECT s.id, c.every_secs, c.enabled FROM services s \
             LEFT JOIN snapshot_schedules c ON c.site_id = s.site_id \
             WHERE s.status = $1 ORDER BY s.id",
            Status::Ready
        )?;
        let default = Schedule::default();
        Ok(rows
            .into_iter()
            .filter(|(_, _, enabled)| enabled.unwrap_or(default.enabled))
            .map(|(id, every, _)| {
                let every = every.unwrap_or(default.every_secs).max(3600) as u64;
                let job = SnapshotJob {
                    service_id: id,
                    origin: SnapshotOrigin::Scheduled,
                };
                cron::Schedule::interval(
                    &format!("snapshots:{id}"),
                    Duration::from_secs(every),
                    job.spec(None),
                )
            })
            .collect())
    }
}
