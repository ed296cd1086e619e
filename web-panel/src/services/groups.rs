//! User groups: named sets of users. Quotas can apply to a group (shared
//! by its members) and sites can grant a role to a group ("lookup
//! groups"). Platform admins manage them.

use serde::Serialize;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::services::access;
use crate::{execute, fetch_all, fetch_opt, scalar};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Group {
    pub id: i64,
    pub name: String,
    /// Comma-separated member names.
    pub members: String,
}

fn admin_only(who: &Principal) -> Result<(), PanelError> {
    if who.is_admin {
        Ok(())
    } else {
        Err(PanelError::Forbidden(
            "only platform admins manage groups".into(),
        ))
    }
}

pub async fn create(db: &Db, who: &Principal, name: &str) -> Result<Group, PanelError> {
    admin_only(who)?;
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(PanelError::invalid(
            "name",
            "a group name has 1-100 characters",
        ));
    }
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let id = scalar!(
        &mut conn,
        i64,
        "INSERT INTO user_groups (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
        name,
        db.now()
    )?
    .ok_or_else(|| PanelError::Conflict(format!("a group named {name:?} exists")))?;
    let group = Group {
        id,
        name: name.to_string(),
        members: String::new(),
    };
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("group.create", "group", id).after(&group),
    )
    .await?;
    tx.commit().await?;
    Ok(group)
}

pub async fn add_member(
    db: &Db,
    who: &Principal,
    group_id: i64,
    user: &str,
) -> Result<(), PanelError> {
    admin_only(who)?;
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    fetch_opt!(
        &mut conn,
        (i64,),
        "SELECT id FROM user_groups WHERE id = $1",
        group_id
    )?
    .ok_or(PanelError::NotFound("group"))?;
    let user_id = scalar!(&mut conn, i64, "SELECT id FROM users WHERE name = $1", user)?
        .ok_or_else(|| PanelError::invalid("user", format!("no user named {user:?}")))?;
    execute!(
        &mut conn,
        "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        group_id,
        user_id
    )?;
    let mut change = Change::new("group.member_add", "group", group_id);
    change.after = Some(serde_json::json!({ "user": user }));
    audit::record(&mut conn, db.now(), who, change).await?;
    let group_name = scalar!(
        &mut conn,
        String,
        "SELECT name FROM user_groups WHERE id = $1",
        group_id
    )?
    .unwrap_or_default();
    access::sync_lookup_group(&mut tx, who, &group_name).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list(db: &Db, who: &Principal) -> Result<Vec<Group>, PanelError> {
    admin_only(who)?;
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let agg = if conn.is_pg() {
        "string_agg(u.name, ',' ORDER BY u.name)"
    } else {
        "group_concat(u.name, ',')"
    };
    Ok(fetch_all!(
        &mut conn,
        Group,
        sqlx::AssertSqlSafe(format!(
            "SELECT g.id, g.name, COALESCE((SELECT {agg} FROM group_members m JOIN users u ON u.id = m.user_id \
               WHERE m.group_id = g.id), '') AS members FROM user_groups g ORDER BY g.name"
        ))
    )?)
}
