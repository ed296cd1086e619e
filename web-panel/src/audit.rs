//! The audit log: one row per change, with who did it and the object before
//! and after as JSON. Writers call [`record`] inside the transaction that
//! makes the change, so a change and its audit row commit together.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Db};
use crate::domain::{Page, Paged, PanelError, Principal};
use crate::{execute, fetch_all, scalar};

/// One row of the audit log, as admins page through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor_id: Option<i64>,
    pub actor_name: String,
    pub action: String,
    pub object_type: String,
    pub object_id: Option<i64>,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
}

/// What changed, for [`record`].
pub struct Change<'a> {
    pub action: &'a str,
    pub object_type: &'a str,
    pub object_id: Option<i64>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl<'a> Change<'a> {
    pub fn new(action: &'a str, object_type: &'a str, object_id: i64) -> Self {
        Change {
            action,
            object_type,
            object_id: Some(object_id),
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, v: &impl Serialize) -> Self {
        self.before = serde_json::to_value(v).ok();
        self
    }

    pub fn after(mut self, v: &impl Serialize) -> Self {
        self.after = serde_json::to_value(v).ok();
        self
    }
}

/// Writes one audit row in the caller's transaction.
pub async fn record(
    conn: &mut Conn<'_>,
    now: i64,
    actor: &Principal,
    change: Change<'_>,
) -> Result<(), PanelError> {
    execute!(
        conn,
        "INSERT INTO audit_log (at, actor_id, actor_name, action, object_type, object_id, before_json, after_json) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        now,
        actor.actor_id(),
        actor.name.as_str(),
        change.action,
        change.object_type,
        change.object_id,
        change.before.map(|v| v.to_string()),
        change.after.map(|v| v.to_string()),
    )?;
    Ok(())
}

/// Filters for the admin audit view. Empty fields match everything.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditFilter {
    pub object_type: Option<String>,
    pub object_id: Option<i64>,
    pub actor_id: Option<i64>,
}

const WHERE: &str = "WHERE ($1 IS NULL OR object_type = $1) AND ($2 IS NULL OR object_id = $2) \
                     AND ($3 IS NULL OR actor_id = $3)";

/// The newest entries first. Platform admins only.
pub async fn list(
    db: &Db,
    who: &Principal,
    filter: &AuditFilter,
    page: Page,
) -> Result<Paged<AuditEntry>, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "the audit log is for platform admins".into(),
        ));
    }
    let page = page.checked()?;
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let total = scalar!(
        &mut conn,
        i64,
        sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_log {WHERE}")),
        filter.object_type.clone(),
        filter.object_id,
        filter.actor_id
    )?
    .unwrap_or(0);
    let items = fetch_all!(
        &mut conn,
        AuditEntry,
        sqlx::AssertSqlSafe(format!(
            "SELECT id, at, actor_id, actor_name, action, object_type, object_id, before_json, after_json \
             FROM audit_log {WHERE} ORDER BY id DESC LIMIT $4 OFFSET $5"
        )),
        filter.object_type.clone(),
        filter.object_id,
        filter.actor_id,
        page.limit,
        page.offset
    )?;
    Ok(Paged {
        items,
        total,
        limit: page.limit,
        offset: page.offset,
    })
}
