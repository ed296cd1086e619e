//! Server types (flavours): what a new server gets (vCPUs, RAM, disk, OS
//! image, roles). Admins define them; everyone signed in can list them.

use serde::Deserialize;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::fetch_all;
use crate::fetch_opt;
use crate::services::model::ServerType;

const COLS: &str = "id, name, cpus, ram_mb, disk_gb, os_image, roles";

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServerType {
    pub name: String,
    pub cpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
    pub os_image: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

pub async fn list(db: &Db) -> Result<Vec<ServerType>, PanelError> {
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        ServerType,
        sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM server_types ORDER BY name"))
    )?)
}

pub async fn by_name(conn: &mut Conn<'_>, name: &str) -> Result<Option<ServerType>, PanelError> {
    Ok(fetch_opt!(
        conn,
        ServerType,
        sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM server_types WHERE name = $1")),
        name
    )?)
}

pub async fn create(db: &Db, who: &Principal, t: &NewServerType) -> Result<ServerType, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins define server types".into(),
        ));
    }
    if t.name.trim().is_empty() {
        return Err(PanelError::invalid("name", "a server type needs a name"));
    }
    for (field, v) in [
        ("cpus", t.cpus),
        ("ram_mb", t.ram_mb),
        ("disk_gb", t.disk_gb),
    ] {
        if v <= 0 {
            return Err(PanelError::invalid(
                field,
                format!("{field} must be positive"),
            ));
        }
    }
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let row = fetch_opt!(
        &mut conn,
        ServerType,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO server_types (name, cpus, ram_mb, disk_gb, os_image, roles) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO NOTHING RETURNING {COLS}"
        )),
        t.name.as_str(),
        t.cpus,
        t.ram_mb,
        t.disk_gb,
        t.os_image.as_str(),
        t.roles.join(",")
    )?
    .ok_or_else(|| PanelError::Conflict(format!("server type {:?} already exists", t.name)))?;
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("server_type.create", "server_type", row.id).after(&row),
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}
