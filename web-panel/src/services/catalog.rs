//! Server types (flavours): what a new server gets (vCPUs, RAM, disk, OS
//! image, roles). Admins define them; everyone signed in can list them.
//!
//! A server type may be a **stack** ([`Stack`]): one of the shipped
//! deployments (`playbooks/weblab.yml`, `calipsoplus.yml`, `ccserver.yml`)
//! or an admin's own. Its servers are configured by the panel's playbook
//! and then by the stack's, with the server in the stack's inventory
//! groups and the stack's secrets generated once per server
//! (`provision::steps::stack`).

use serde::{Deserialize, Serialize};

use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::fetch_all;
use crate::fetch_opt;
use crate::services::model::ServerType;

const COLS: &str = "id, name, cpus, ram_mb, disk_gb, os_image, roles, stack";

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
    /// Makes the type a stack; absent or null for a plain server.
    #[serde(default)]
    pub stack: Option<Stack>,
}

/// What a stack server type deploys after the panel's own playbook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// A playbook file in the directory of the panel's own playbook
    /// (`weblab.yml`), run against the one server.
    pub playbook: String,
    /// Inventory groups the server is in for that run, so the plays'
    /// `hosts:` patterns select it (`weblab`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Variables the panel generates once per server (32 random letters
    /// and digits), keeps sealed with its key and passes to the run as
    /// extra variables (`weblab_db_password`).
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// At most this many groups and secrets per stack.
const STACK_LIST_MAX: usize = 16;

impl Stack {
    /// Checks the names: a plain `.yml`/`.yaml` file name (no directory),
    /// Ansible group names and variable names.
    pub fn validate(&self) -> Result<(), PanelError> {
        let file_ok = !self.playbook.starts_with('.')
            && (self.playbook.ends_with(".yml") || self.playbook.ends_with(".yaml"))
            && self
                .playbook
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !file_ok {
            return Err(PanelError::invalid(
                "stack.playbook",
                format!(
                    "{:?} is not a playbook file name (letters, digits, '_', '-', '.', ending in .yml or .yaml; no directory)",
                    self.playbook
                ),
            ));
        }
        let ident = |s: &str| {
            s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        for (field, list) in [
            ("stack.groups", &self.groups),
            ("stack.secrets", &self.secrets),
        ] {
            if list.len() > STACK_LIST_MAX {
                return Err(PanelError::invalid(
                    field,
                    format!("at most {STACK_LIST_MAX} names"),
                ));
            }
            if let Some(bad) = list.iter().find(|n| !ident(n)) {
                return Err(PanelError::invalid(
                    field,
                    format!("{bad:?} is not a name (a letter or '_', then letters, digits or '_')"),
                ));
            }
        }
        if let Some(g) = self
            .groups
            .iter()
            .find(|g| *g == "all" || *g == "ungrouped")
        {
            return Err(PanelError::invalid(
                "stack.groups",
                format!("{g:?} is an implicit group"),
            ));
        }
        if let Some(v) = self
            .secrets
            .iter()
            .find(|v| v.starts_with("ansible_") || v.starts_with("keel_"))
        {
            return Err(PanelError::invalid(
                "stack.secrets",
                format!("{v:?} would shadow a connection or panel variable"),
            ));
        }
        Ok(())
    }

    /// The stack a server type's `stack` column holds, if any.
    pub fn of_column(text: &str) -> Option<Stack> {
        if text.is_empty() {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

/// Serialises the `stack` column as the object it holds (or null).
pub fn stack_as_object<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    Stack::of_column(text).serialize(s)
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
    let stack = match &t.stack {
        Some(st) => {
            st.validate()?;
            serde_json::to_string(st).map_err(|e| PanelError::invalid("stack", e.to_string()))?
        }
        None => String::new(),
    };
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let row = fetch_opt!(
        &mut conn,
        ServerType,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO server_types (name, cpus, ram_mb, disk_gb, os_image, roles, stack) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING RETURNING {COLS}"
        )),
        t.name.as_str(),
        t.cpus,
        t.ram_mb,
        t.disk_gb,
        t.os_image.as_str(),
        t.roles.join(","),
        stack.as_str()
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
