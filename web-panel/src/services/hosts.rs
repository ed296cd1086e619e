//! Hypervisor hosts: the hosts servers are placed on, their capacity and
//! state, and the placement itself.
//!
//! The `hypervisor_hosts` table is seeded from `[[hypervisor.hosts]]` (or
//! the one legacy host) by [`sync`] when `serve` or `worker` starts: the
//! config owns a host's driver, URI, capacity, ratios and what it may
//! serve; the database owns its **state** after the row is made, so an
//! admin drains a host or marks it down ([`set_state`]) without a restart.
//! A host that left the config is marked `down`.
//!
//! **Placement** ([`place`]) runs in the caller's transaction, the one that
//! claims the server's address (`servers::insert`, the `provision` step's
//! re-claim after a failure): it locks the rows of every host that may
//! take the server (PostgreSQL `FOR UPDATE`, in id order so two placements
//! never wait on each other in a circle; SQLite's single writer
//! serialises them anyway), then counts what the servers on each take
//! (`services.host_id`, plus `services.migrate_to` for a move under way),
//! and picks the host with the most room left. Use is never stored, so it
//! cannot drift; a server gives its room back when its VM is confirmed
//! deleted ([`release`], next to the address release), never before.
//!
//! **Draining** hosts and **down** hosts get no new servers. A down host's
//! servers show as unreachable, its jobs wait (the driver registry answers
//! "unavailable" for it) and reconciliation leaves it alone.
//!
//! **Migration** ([`request_migration`]): a platform admin moves a stopped
//! server to another host (cold: its disk is copied, the VM defined and
//! started there and its host key checked), or a running one between two
//! libvirt hosts on shared storage (live, through libvirt's own
//! migration). The room on the
//! target is taken when the move is asked for, in the same transaction as
//! its `migrate` job.

use std::collections::HashMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Change};
use crate::config::HypervisorConfig;
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::Status;
use crate::{execute, fetch_all, fetch_opt, scalar};

/// What an admin says about a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Takes new servers.
    Active,
    /// Keeps its servers but takes no new ones (empty it by migrating).
    Draining,
    /// Cannot be reached: no new servers, its servers are unreachable, no
    /// driver call is made to it and reconciliation leaves it alone.
    Down,
}

impl HostState {
    pub const ALL: [HostState; 3] = [HostState::Active, HostState::Draining, HostState::Down];

    pub const fn as_str(self) -> &'static str {
        match self {
            HostState::Active => "active",
            HostState::Draining => "draining",
            HostState::Down => "down",
        }
    }
}

impl FromStr for HostState {
    type Err = PanelError;
    fn from_str(s: &str) -> Result<Self, PanelError> {
        HostState::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| {
                PanelError::invalid(
                    "state",
                    format!("a host's state is active, draining or down, not {s:?}"),
                )
            })
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(sqlx::FromRow)]
struct HostRow {
    id: i64,
    name: String,
    driver: String,
    uri: String,
    vcpus: i64,
    ram_mb: i64,
    disk_gb: i64,
    cpu_ratio: f64,
    ram_ratio: f64,
    disk_ratio: f64,
    sites: String,
    server_types: String,
    state: String,
}

const HOST_COLS: &str = "id, name, driver, uri, vcpus, ram_mb, disk_gb, cpu_ratio, ram_ratio, \
     disk_ratio, sites, server_types, state";

#[derive(sqlx::FromRow, Default, Clone, Copy)]
struct UseRow {
    host_id: i64,
    servers: i64,
    vcpus: i64,
    ram_mb: i64,
    disk_gb: i64,
}

/// What the servers on each host take: placed there, or being moved there.
const USE_SQL: &str = "SELECT h.id AS host_id, COUNT(s.id) AS servers, \
       CAST(COALESCE(SUM(s.cpus), 0) AS BIGINT) AS vcpus, \
       CAST(COALESCE(SUM(s.ram_mb), 0) AS BIGINT) AS ram_mb, \
       CAST(COALESCE(SUM(s.disk_gb), 0) AS BIGINT) AS disk_gb \
     FROM hypervisor_hosts h \
     LEFT JOIN services s ON s.host_id = h.id OR s.migrate_to = h.id \
     GROUP BY h.id";

/// A host with its capacity and what is used of it, for admins.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HostView {
    pub name: String,
    /// `libvirt` or `nspawn`.
    pub driver: String,
    /// libvirt's connection URI (empty for nspawn).
    pub uri: String,
    pub state: HostState,
    /// What the host has (0: no limit).
    pub vcpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
    pub cpu_overcommit: f64,
    pub ram_overcommit: f64,
    pub disk_overcommit: f64,
    /// What servers may take: what it has times its ratio; null: no limit.
    pub limit_vcpus: Option<i64>,
    pub limit_ram_mb: Option<i64>,
    pub limit_disk_gb: Option<i64>,
    /// What its servers take now (a server being moved here counts).
    pub used_vcpus: i64,
    pub used_ram_mb: i64,
    pub used_disk_gb: i64,
    /// Servers on it (or being moved to it).
    pub servers: i64,
    /// Sites and server types it may serve; empty: any.
    pub sites: Vec<String>,
    pub server_types: Vec<String>,
}

fn limit(total: i64, ratio: f64) -> Option<i64> {
    (total > 0).then(|| (total as f64 * ratio).floor() as i64)
}

fn names(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

impl HostRow {
    fn state(&self) -> Result<HostState, PanelError> {
        self.state.parse().map_err(|_| {
            PanelError::Internal(format!("host {}: state {:?}", self.name, self.state))
        })
    }

    fn view(&self, used: UseRow) -> Result<HostView, PanelError> {
        Ok(HostView {
            name: self.name.clone(),
            driver: self.driver.clone(),
            uri: self.uri.clone(),
            state: self.state()?,
            vcpus: self.vcpus,
            ram_mb: self.ram_mb,
            disk_gb: self.disk_gb,
            cpu_overcommit: self.cpu_ratio,
            ram_overcommit: self.ram_ratio,
            disk_overcommit: self.disk_ratio,
            limit_vcpus: limit(self.vcpus, self.cpu_ratio),
            limit_ram_mb: limit(self.ram_mb, self.ram_ratio),
            limit_disk_gb: limit(self.disk_gb, self.disk_ratio),
            used_vcpus: used.vcpus,
            used_ram_mb: used.ram_mb,
            used_disk_gb: used.disk_gb,
            servers: used.servers,
            sites: names(&self.sites),
            server_types: names(&self.server_types),
        })
    }
}

impl HostView {
    /// Why a server of `want` does not fit (the first figure that is
    /// short), or `None` when it fits.
    fn short_of(&self, want: Want) -> Option<String> {
        [
            ("vCPUs", self.limit_vcpus, self.used_vcpus, want.vcpus),
            (
                "MB of RAM",
                self.limit_ram_mb,
                self.used_ram_mb,
                want.ram_mb,
            ),
            (
                "GB of disk",
                self.limit_disk_gb,
                self.used_disk_gb,
                want.disk_gb,
            ),
        ]
        .into_iter()
        .find_map(|(what, limit, used, want)| {
            let limit = limit?;
            (used + want > limit).then(|| {
                format!(
                    "{} has {} {what} free, {want} asked",
                    self.name,
                    (limit - used).max(0)
                )
            })
        })
    }

    /// The share of the host left after `want`, over its tightest figure
    /// (1 for a host without limits): the placement's preference.
    fn room_after(&self, want: Want) -> f64 {
        [
            (self.limit_vcpus, self.used_vcpus, want.vcpus),
            (self.limit_ram_mb, self.used_ram_mb, want.ram_mb),
            (self.limit_disk_gb, self.used_disk_gb, want.disk_gb),
        ]
        .into_iter()
        .filter_map(|(limit, used, want)| {
            let limit = limit.filter(|l| *l > 0)?;
            Some((limit - used - want) as f64 / limit as f64)
        })
        .fold(1.0, f64::min)
    }
}

/// What a server takes from a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub vcpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
}

async fn rows(conn: &mut Conn<'_>) -> Result<Vec<(i64, HostRow, UseRow)>, PanelError> {
    let hosts = fetch_all!(
        conn,
        HostRow,
        sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_COLS} FROM hypervisor_hosts ORDER BY name"
        ))
    )?;
    let used: HashMap<i64, UseRow> = fetch_all!(conn, UseRow, USE_SQL)?
        .into_iter()
        .map(|u| (u.host_id, u))
        .collect();
    Ok(hosts
        .into_iter()
        .map(|h| {
            let u = used.get(&h.id).copied().unwrap_or_default();
            (h.id, h, u)
        })
        .collect())
}

/// Every host with its use. Platform admins only.
pub async fn list(db: &Db, who: &Principal) -> Result<Vec<HostView>, PanelError> {
    require_platform_admin(who)?;
    let mut rc = db.read().await?;
    rows(&mut rc.conn())
        .await?
        .iter()
        .map(|(_, h, u)| h.view(*u))
        .collect()
}

fn require_platform_admin(who: &Principal) -> Result<(), PanelError> {
    if who.is_admin {
        Ok(())
    } else {
        Err(PanelError::Forbidden(
            "only platform admins manage hypervisor hosts".into(),
        ))
    }
}

/// Changes a host's state (drain it, mark it down, take it back), with its
/// audit row. Platform admins only.
pub async fn set_state(
    db: &Db,
    who: &Principal,
    name: &str,
    state: &str,
) -> Result<HostView, PanelError> {
    require_platform_admin(who)?;
    let state: HostState = state.parse()?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let before = scalar!(
        &mut conn,
        String,
        "SELECT state FROM hypervisor_hosts WHERE name = $1",
        name
    )?
    .ok_or(PanelError::NotFound("host"))?;
    let id = scalar!(
        &mut conn,
        i64,
        "UPDATE hypervisor_hosts SET state = $2, updated_at = $3 WHERE name = $1 RETURNING id",
        name,
        state.as_str(),
        now
    )?
    .ok_or(PanelError::NotFound("host"))?;
    let change = Change::new("host.state", "host", id)
        .before(&serde_json::json!({ "host": name, "state": before }))
        .after(&serde_json::json!({ "host": name, "state": state }));
    audit::record(&mut conn, now, who, change).await?;
    let view = rows(&mut conn)
        .await?
        .into_iter()
        .find(|(i, _, _)| *i == id)
        .ok_or(PanelError::NotFound("host"))
        .and_then(|(_, h, u)| h.view(u))?;
    tx.commit().await?;
    Ok(view)
}

/// Brings the table in line with the configured hosts: new hosts are
/// added with their configured state, known ones get the config's driver,
/// URI, capacity, ratios, sites and types (their state stays the
/// database's), hosts no longer configured are marked `down`. Servers
/// with a VM that hold no host (made before hosts existed) are recorded on
/// the only host, or on the host named `default` among several. Returns
/// the names of the hosts it added.
pub async fn sync(db: &Db, config: &HypervisorConfig) -> Result<Vec<String>, PanelError> {
    let hosts = config.host_list();
    let now = db.now();
    let system = Principal::system();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let mut added = Vec::new();
    for h in &hosts {
        let sites = serde_json::to_string(&h.sites).unwrap_or_else(|_| "[]".into());
        let types = serde_json::to_string(&h.server_types).unwrap_or_else(|_| "[]".into());
        let uri = if h.driver == "libvirt" {
            h.uri.as_str()
        } else {
            ""
        };
        let new_id = scalar!(
            &mut conn,
            i64,
            "INSERT INTO hypervisor_hosts (name, driver, uri, vcpus, ram_mb, disk_gb, cpu_ratio, \
               ram_ratio, disk_ratio, sites, server_types, state, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (name) DO NOTHING RETURNING id",
            h.name.as_str(),
            h.driver.as_str(),
            uri,
            h.vcpus as i64,
            h.ram_mb as i64,
            h.disk_gb as i64,
            h.cpu_overcommit,
            h.ram_overcommit,
            h.disk_overcommit,
            sites.as_str(),
            types.as_str(),
            h.state.as_str(),
            now
        )?;
        if let Some(id) = new_id {
            let change = Change::new("host.added", "host", id).after(&serde_json::json!({
                "host": h.name, "driver": h.driver, "state": h.state,
            }));
            audit::record(&mut conn, now, &system, change).await?;
            added.push(h.name.clone());
            continue;
        }
        execute!(
            &mut conn,
            "UPDATE hypervisor_hosts SET driver = $2, uri = $3, vcpus = $4, ram_mb = $5, disk_gb = $6, \
               cpu_ratio = $7, ram_ratio = $8, disk_ratio = $9, sites = $10, server_types = $11, \
               updated_at = $12 WHERE name = $1",
            h.name.as_str(),
            h.driver.as_str(),
            uri,
            h.vcpus as i64,
            h.ram_mb as i64,
            h.disk_gb as i64,
            h.cpu_overcommit,
            h.ram_overcommit,
            h.disk_overcommit,
            sites.as_str(),
            types.as_str(),
            now
        )?;
    }
    let known = fetch_all!(
        &mut conn,
        (i64, String, String),
        "SELECT id, name, state FROM hypervisor_hosts ORDER BY id"
    )?;
    for (id, name, state) in known {
        if state == "down" || hosts.iter().any(|h| h.name == name) {
            continue;
        }
        execute!(
            &mut conn,
            "UPDATE hypervisor_hosts SET state = 'down', updated_at = $2 WHERE id = $1",
            id,
            now
        )?;
        let change = Change::new("host.unconfigured", "host", id)
            .before(&serde_json::json!({ "host": name, "state": state }))
            .after(&serde_json::json!({ "host": name, "state": "down" }));
        audit::record(&mut conn, now, &system, change).await?;
        tracing::warn!(host = %name, "a hypervisor host left the configuration: marked down");
    }
    let adopter = match hosts.as_slice() {
        [only] => Some(only),
        several => several
            .iter()
            .find(|h| h.name == crate::config::DEFAULT_HOST),
    };
    if let Some(only) = adopter {
        let n = execute!(
            &mut conn,
            "UPDATE services SET host_id = (SELECT id FROM hypervisor_hosts WHERE name = $1) \
             WHERE host_id IS NULL AND status <> $2 AND id IN (SELECT service_id FROM vms)",
            only.name.as_str(),
            Status::Deleted
        )?;
        if n > 0 {
            tracing::info!(host = %only.name, servers = n, "servers made before hosts existed recorded on the only host");
        }
    }
    tx.commit().await?;
    Ok(added)
}

/// Every host's state, by name (no authorisation: for the flow and the
/// reconciliation).
pub async fn states(conn: &mut Conn<'_>) -> Result<HashMap<String, HostState>, PanelError> {
    fetch_all!(
        conn,
        (String, String),
        "SELECT name, state FROM hypervisor_hosts"
    )?
    .into_iter()
    .map(|(name, state)| Ok((name, state.parse()?)))
    .collect()
}

/// Where a placement may go.
#[derive(Debug, Clone, Copy)]
pub enum Among<'a> {
    /// Any host that may serve the server.
    Any,
    /// This host only (a test server rebuilt from its production server's
    /// disk goes where that disk is).
    Only(&'a str),
}

/// Places service `service_id` (of `site_id`, server type
/// `server_type_id`, taking `want`) on the host with the most room left,
/// in the caller's transaction: see the module docs. Returns the host's
/// name; `None` when no host is configured at all (the flow then fails
/// the server for want of a hypervisor, as before hosts existed).
/// [`PanelError::NoCapacity`] says why each host refused.
pub async fn place(
    conn: &mut Conn<'_>,
    service_id: i64,
    site_id: i64,
    server_type_id: i64,
    want: Want,
    among: Among<'_>,
) -> Result<Option<String>, PanelError> {
    let Some(host) = choose(conn, site_id, server_type_id, want, among).await? else {
        return Ok(None);
    };
    execute!(
        conn,
        "UPDATE services SET host_id = (SELECT id FROM hypervisor_hosts WHERE name = $2) WHERE id = $1",
        service_id,
        host.as_str()
    )?;
    Ok(Some(host))
}

/// The host with the most room left that may take a server of `want`
/// (site `site_id`, type `server_type_id`), its row locked until the
/// caller's transaction ends; see [`place`].
async fn choose(
    conn: &mut Conn<'_>,
    site_id: i64,
    server_type_id: i64,
    want: Want,
    among: Among<'_>,
) -> Result<Option<String>, PanelError> {
    let all = fetch_all!(
        conn,
        HostRow,
        sqlx::AssertSqlSafe(format!(
            "SELECT {HOST_COLS} FROM hypervisor_hosts ORDER BY id"
        ))
    )?;
    if all.is_empty() {
        return Ok(None);
    }
    let site = scalar!(
        conn,
        String,
        "SELECT name FROM sites WHERE id = $1",
        site_id
    )?
    .unwrap_or_default();
    let stype = scalar!(
        conn,
        String,
        "SELECT name FROM server_types WHERE id = $1",
        server_type_id
    )?
    .unwrap_or_default();
    let mut why = Vec::new();
    let mut eligible = Vec::new();
    for h in &all {
        if let Among::Only(only) = among {
            if h.name != only {
                continue;
            }
        }
        let state = h.state()?;
        let sites = names(&h.sites);
        let types = names(&h.server_types);
        if state != HostState::Active {
            why.push(format!("{} is {state}", h.name));
        } else if !sites.is_empty() && !sites.contains(&site) {
            why.push(format!("{} does not serve site {site}", h.name));
        } else if !types.is_empty() && !types.contains(&stype) {
            why.push(format!("{} does not serve server type {stype}", h.name));
        } else {
            eligible.push(h.id);
        }
    }
    if conn.is_pg() && !eligible.is_empty() {
        // Lock every candidate, in id order, then count: whoever placed
        // on them before has committed, and nobody else can until we do.
        let list = eligible
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let locked = fetch_all!(
            conn,
            (i64,),
            sqlx::AssertSqlSafe(format!(
                "SELECT id FROM hypervisor_hosts WHERE id IN ({list}) AND state = 'active' \
                 ORDER BY id FOR UPDATE"
            ))
        )?;
        eligible.retain(|id| locked.iter().any(|(l,)| l == id));
    }
    let mut best: Option<(f64, HostView)> = None;
    if !eligible.is_empty() {
        for (id, h, u) in rows(conn).await? {
            if !eligible.contains(&id) {
                continue;
            }
            let view = h.view(u)?;
            if let Some(short) = view.short_of(want) {
                why.push(short);
                continue;
            }
            let room = view.room_after(want);
            if best.as_ref().is_none_or(|(r, _)| room > *r) {
                best = Some((room, view));
            }
        }
    }
    let Some((_, host)) = best else {
        if why.is_empty() {
            why.push(match among {
                Among::Only(name) => format!("there is no host {name}"),
                Among::Any => "no host is configured".to_string(),
            });
        }
        return Err(PanelError::NoCapacity(format!(
            "no hypervisor host can take a server of {} vCPUs, {} MB of RAM and {} GB of disk: {}",
            want.vcpus,
            want.ram_mb,
            want.disk_gb,
            why.join("; ")
        )));
    };
    Ok(Some(host.name))
}

/// Places a service that holds no host (a retry after its failure gave
/// the room back), in the caller's transaction; one that holds a host
/// keeps it. `None` when no host is configured.
pub async fn place_again(
    conn: &mut Conn<'_>,
    service_id: i64,
    among: Among<'_>,
) -> Result<Option<String>, PanelError> {
    #[derive(sqlx::FromRow)]
    struct Facts {
        site_id: i64,
        server_type_id: i64,
        cpus: i64,
        ram_mb: i64,
        disk_gb: i64,
        host: Option<String>,
    }
    let Some(f) = fetch_opt!(
        conn,
        Facts,
        "SELECT s.site_id, s.server_type_id, s.cpus, s.ram_mb, s.disk_gb, h.name AS host \
         FROM services s LEFT JOIN hypervisor_hosts h ON h.id = s.host_id WHERE s.id = $1",
        service_id
    )?
    else {
        return Err(PanelError::NotFound("server"));
    };
    if f.host.is_some() {
        return Ok(f.host);
    }
    let want = Want {
        vcpus: f.cpus,
        ram_mb: f.ram_mb,
        disk_gb: f.disk_gb,
    };
    place(conn, service_id, f.site_id, f.server_type_id, want, among).await
}

/// Gives a service's room back (its VM is confirmed gone), in the
/// caller's transaction, next to the address release.
pub async fn release(conn: &mut Conn<'_>, service_id: i64) -> Result<(), PanelError> {
    execute!(
        conn,
        "UPDATE services SET host_id = NULL, migrate_to = NULL WHERE id = $1",
        service_id
    )?;
    Ok(())
}

/// The host that holds a service's VM and the host it is being moved to,
/// with their states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Placement {
    pub host: Option<String>,
    pub host_state: Option<String>,
    pub migrate_to: Option<String>,
}

/// Where service `id` is.
pub async fn placement_of(conn: &mut Conn<'_>, id: i64) -> Result<Placement, PanelError> {
    Ok(fetch_opt!(
        conn,
        Placement,
        "SELECT h.name AS host, h.state AS host_state, m.name AS migrate_to FROM services s \
         LEFT JOIN hypervisor_hosts h ON h.id = s.host_id \
         LEFT JOIN hypervisor_hosts m ON m.id = s.migrate_to WHERE s.id = $1",
        id
    )?
    .unwrap_or(Placement {
        host: None,
        host_state: None,
        migrate_to: None,
    }))
}

/// What a migration request answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MigrationStarted {
    pub service_id: i64,
    pub from: String,
    pub to: String,
    /// `live` (libvirt to libvirt on shared storage: the VM keeps running,
    /// or is moved offline when stopped) or `cold` (the stopped VM's files
    /// copied, then started on the target and its host key checked).
    pub mode: String,
    pub job_id: i64,
}

#[derive(sqlx::FromRow)]
struct MoveFacts {
    status: Status,
    site_id: i64,
    server_type_id: i64,
    cpus: i64,
    ram_mb: i64,
    disk_gb: i64,
    host: Option<String>,
    host_driver: Option<String>,
    migrate_to: Option<String>,
    power_state: Option<String>,
}

/// Moves a ready server to host `to` (platform admins): the target's room
/// is taken (`services.migrate_to`, its row locked as in a placement), the
/// audit row written and the `migrate` job queued, in one transaction.
/// Between two libvirt hosts on shared storage (`shared_storage`: both
/// keep VM files in one directory) the move is libvirt's own (live while
/// the VM runs); otherwise it is cold and the VM must be stopped.
pub async fn request_migration(
    db: &Db,
    who: &Principal,
    service_id: i64,
    to: &str,
    shared_storage: impl Fn(&str, &str) -> bool,
) -> Result<MigrationStarted, PanelError> {
    require_platform_admin(who)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let f = fetch_opt!(
        &mut conn,
        MoveFacts,
        "SELECT s.status, s.site_id, s.server_type_id, s.cpus, s.ram_mb, s.disk_gb, \
           h.name AS host, h.driver AS host_driver, m.name AS migrate_to, v.power_state \
         FROM services s LEFT JOIN hypervisor_hosts h ON h.id = s.host_id \
         LEFT JOIN hypervisor_hosts m ON m.id = s.migrate_to \
         LEFT JOIN vms v ON v.service_id = s.id WHERE s.id = $1",
        service_id
    )?
    .ok_or(PanelError::NotFound("server"))?;
    if f.status != Status::Ready {
        return Err(PanelError::Conflict(format!(
            "only a ready server can be moved; this one is {}",
            f.status
        )));
    }
    if let Some(m) = &f.migrate_to {
        return Err(PanelError::Conflict(format!(
            "the server is already being moved to {m}"
        )));
    }
    let (Some(from), Some(from_driver)) = (f.host, f.host_driver) else {
        return Err(PanelError::Conflict(
            "the server is on no recorded hypervisor host".into(),
        ));
    };
    let target_driver = scalar!(
        &mut conn,
        String,
        "SELECT driver FROM hypervisor_hosts WHERE name = $1",
        to
    )?
    .ok_or_else(|| PanelError::invalid("host", format!("there is no host named {to:?}")))?;
    if to == from {
        return Err(PanelError::invalid(
            "host",
            format!("the server is on {from} already"),
        ));
    }
    if target_driver != from_driver {
        return Err(PanelError::invalid(
            "host",
            format!(
                "{from} is a {from_driver} host and {to} a {target_driver} host: a server moves \
                 only between hosts of one driver"
            ),
        ));
    }
    let live = from_driver == "libvirt" && shared_storage(&from, to);
    if !live && f.power_state.as_deref() != Some("stopped") {
        let why = if from_driver == "libvirt" {
            format!(
                "{from} and {to} share no storage, so the server's disk is copied \
                 (cold migration): power it off first"
            )
        } else {
            format!("a {from_driver} server moves only while stopped (cold migration): power it off first")
        };
        return Err(PanelError::Conflict(why));
    }
    let want = Want {
        vcpus: f.cpus,
        ram_mb: f.ram_mb,
        disk_gb: f.disk_gb,
    };
    choose(
        &mut conn,
        f.site_id,
        f.server_type_id,
        want,
        Among::Only(to),
    )
    .await?;
    execute!(
        &mut conn,
        "UPDATE services SET migrate_to = (SELECT id FROM hypervisor_hosts WHERE name = $2) WHERE id = $1",
        service_id,
        to
    )?;
    let mode = if live { "live" } else { "cold" };
    let change = Change::new("service.migrate", "service", service_id)
        .before(&serde_json::json!({ "host": from }))
        .after(&serde_json::json!({ "host": to, "mode": mode }));
    audit::record(&mut conn, now, who, change).await?;
    let job = crate::queue::enqueue(
        &mut tx,
        crate::lifecycle::jobs::MigrateJob { service_id }.spec(who.actor_id()),
    )
    .await?;
    tx.commit().await?;
    Ok(MigrationStarted {
        service_id,
        from,
        to: to.to_string(),
        mode: mode.to_string(),
        job_id: job.job_id,
    })
}

/// The end of a move, in the caller's transaction: the server is on its
/// target host now, whose room it already held.
pub async fn finish_migration(conn: &mut Conn<'_>, service_id: i64) -> Result<(), PanelError> {
    execute!(
        conn,
        "UPDATE services SET host_id = migrate_to, migrate_to = NULL \
         WHERE id = $1 AND migrate_to IS NOT NULL",
        service_id
    )?;
    Ok(())
}

/// A move given up: the target's room is given back.
pub async fn abandon_migration(conn: &mut Conn<'_>, service_id: i64) -> Result<(), PanelError> {
    execute!(
        conn,
        "UPDATE services SET migrate_to = NULL WHERE id = $1",
        service_id
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        limit_vcpus: Option<i64>,
        used_vcpus: i64,
        limit_ram: Option<i64>,
        used_ram: i64,
    ) -> HostView {
        HostView {
            name: "hv".into(),
            driver: "nspawn".into(),
            uri: String::new(),
            state: HostState::Active,
            vcpus: 0,
            ram_mb: 0,
            disk_gb: 0,
            cpu_overcommit: 1.0,
            ram_overcommit: 1.0,
            disk_overcommit: 1.0,
            limit_vcpus,
            limit_ram_mb: limit_ram,
            limit_disk_gb: None,
            used_vcpus,
            used_ram_mb: used_ram,
            used_disk_gb: 0,
            servers: 0,
            sites: vec![],
            server_types: vec![],
        }
    }

    #[test]
    fn limits_are_capacity_times_ratio_and_zero_is_none() {
        assert_eq!(limit(8, 4.0), Some(32));
        assert_eq!(limit(10, 1.5), Some(15));
        assert_eq!(limit(3, 0.5), Some(1));
        assert_eq!(limit(0, 4.0), None);
    }

    #[test]
    fn fit_and_room() {
        let want = Want {
            vcpus: 2,
            ram_mb: 1024,
            disk_gb: 10,
        };
        assert_eq!(view(Some(4), 2, None, 0).short_of(want), None);
        let short = view(Some(4), 3, None, 0).short_of(want).unwrap();
        assert_eq!(short, "hv has 1 vCPUs free, 2 asked");
        assert!(view(None, 0, Some(2048), 1500)
            .short_of(want)
            .unwrap()
            .contains("MB of RAM"));
        assert_eq!(view(None, 100, None, 100).room_after(want), 1.0);
        // The tightest figure counts: half the CPUs left, a quarter of RAM.
        let r = view(Some(8), 2, Some(4096), 2048).room_after(want);
        assert!((r - 0.25).abs() < 1e-9, "{r}");
        assert_eq!(
            "draining".parse::<HostState>().unwrap(),
            HostState::Draining
        );
        assert!("off".parse::<HostState>().is_err());
    }
}
