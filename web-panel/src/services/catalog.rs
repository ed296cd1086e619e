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
    /// A multi-server stack: one server per member, made together by one
    /// request, and the playbook run once against all of them when each
    /// has had the panel's own playbook. Empty: one server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<StackMember>,
    /// Host variables every server of the stack gets for the stack's run,
    /// as group variables would be; strings may be templates of the
    /// panel's own variables (`"{{ keel_ipv4 }}"`), resolved for each host.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vars: std::collections::BTreeMap<String, serde_json::Value>,
}

/// One server of a multi-server stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StackMember {
    /// The member's name in the stack (`webapp`, `db`), unique in it.
    pub name: String,
    /// Inventory groups this member is in for the stack's run, besides
    /// the stack's own `groups`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Another member through which the stack's run reaches this one
    /// (an SSH jump host): the run connects to this member's allocated
    /// address from there, never directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
}

/// At most this many groups and secrets per stack.
const STACK_LIST_MAX: usize = 16;

/// At most this many servers in one stack.
pub const STACK_MEMBERS_MAX: usize = 8;

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
        if self.vars.len() > STACK_LIST_MAX {
            return Err(PanelError::invalid(
                "stack.vars",
                format!("at most {STACK_LIST_MAX} variables"),
            ));
        }
        if let Some(v) = self.vars.keys().find(|v| {
            !ident(v)
                || v.starts_with("ansible_")
                || v.starts_with("keel_")
                || self.secrets.contains(v)
        }) {
            return Err(PanelError::invalid(
                "stack.vars",
                format!("{v:?} is not a variable the stack may set (a name, not ansible_*, keel_* or a secret)"),
            ));
        }
        self.validate_members(ident)
    }

    fn validate_members(&self, ident: impl Fn(&str) -> bool) -> Result<(), PanelError> {
        let field = "stack.members";
        if self.members.len() == 1 || self.members.len() > STACK_MEMBERS_MAX {
            return Err(PanelError::invalid(
                field,
                format!("a multi-server stack has 2 to {STACK_MEMBERS_MAX} members"),
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if !ident(&m.name) || m.name.len() > 32 {
                return Err(PanelError::invalid(
                    field,
                    format!(
                        "{:?} is not a member name (a letter or '_', then letters, digits or '_', at most 32)",
                        m.name
                    ),
                ));
            }
            if self.members[..i].iter().any(|o| o.name == m.name) {
                return Err(PanelError::invalid(
                    field,
                    format!("two members are named {:?}", m.name),
                ));
            }
            if m.groups.len() > STACK_LIST_MAX {
                return Err(PanelError::invalid(
                    field,
                    format!("at most {STACK_LIST_MAX} groups per member"),
                ));
            }
            if let Some(g) = m
                .groups
                .iter()
                .find(|g| !ident(g) || *g == "all" || *g == "ungrouped")
            {
                return Err(PanelError::invalid(
                    field,
                    format!("member {:?}: {g:?} is not a group it can be put in", m.name),
                ));
            }
            if let Some(j) = &m.jump {
                let via = self.members.iter().find(|o| &o.name == j);
                match via {
                    None => {
                        return Err(PanelError::invalid(
                            field,
                            format!(
                                "member {:?} jumps through {j:?}, which is not a member",
                                m.name
                            ),
                        ))
                    }
                    Some(v) if v.name == m.name || v.jump.is_some() => {
                        return Err(PanelError::invalid(
                            field,
                            format!(
                                "member {:?} jumps through {j:?}, which must be reached directly",
                                m.name
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        if self.members.first().is_some_and(|m| m.jump.is_some()) {
            return Err(PanelError::invalid(
                field,
                "the first member (the server the request returns) must be reached directly",
            ));
        }
        Ok(())
    }

    /// Whether servers of this type come as a multi-server stack.
    pub fn is_multi(&self) -> bool {
        !self.members.is_empty()
    }

    /// The inventory groups of member `name` for the stack's run: the
    /// stack's own, then the member's.
    pub fn groups_of(&self, name: &str) -> Vec<String> {
        let mut out = self.groups.clone();
        if let Some(m) = self.members.iter().find(|m| m.name == name) {
            for g in &m.groups {
                if !out.contains(g) {
                    out.push(g.clone());
                }
            }
        }
        out
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
