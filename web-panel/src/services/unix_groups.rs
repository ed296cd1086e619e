//! Unix groups that site admins define for the servers of their site, with
//! members from the site's people. A group is the same on every server of
//! the site: its GID is allocated once from `access.gid_min..gid_max` and
//! never reused, so files on storage the servers share keep their group.
//! Each change is audited and queues an `access` job for the site's servers
//! in the same transaction (`services::access::sync_site`).

use crate::audit::{self, Change};
use crate::config::AccessConfig;
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::services::access::{self, unix_name_problem};
use crate::services::model::UnixGroup;
use crate::services::sites::require_admin;
use crate::{execute, fetch_opt, scalar};

/// The site's Unix groups with their members. Site admins and platform
/// admins.
pub async fn list(db: &Db, who: &Principal, site_id: i64) -> Result<Vec<UnixGroup>, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    require_admin(&mut conn, who, site_id).await?;
    Ok(access::unix_groups(&mut conn, Some(site_id))
        .await?
        .remove(&site_id)
        .unwrap_or_default())
}

/// Defines a Unix group on the site's servers. Its name must be a Unix
/// name no system group and no panel user has (a user's own group carries
/// their name).
pub async fn create(
    db: &Db,
    cfg: &AccessConfig,
    admin_user: &str,
    who: &Principal,
    site_id: i64,
    name: &str,
) -> Result<UnixGroup, PanelError> {
    let name = name.trim();
    if let Some(problem) = unix_name_problem(name, admin_user) {
        return Err(PanelError::invalid("name", format!("{name:?}: {problem}")));
    }
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let person = scalar!(&mut conn, i64, "SELECT id FROM users WHERE name = $1", name)?;
    if person.is_some() {
        return Err(PanelError::invalid(
            "name",
            format!("{name:?} is a person's name, and so the name of their own group"),
        ));
    }
    let group = access::insert_unix_group(&mut conn, cfg, site_id, name, now).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("unix_group.create", "unix_group", group.id).after(&group),
    )
    .await?;
    access::sync_site(&mut tx, who, site_id).await?;
    tx.commit().await?;
    Ok(group)
}

/// The group `group_id` of `site_id`, after the caller's authorisation.
async fn load(
    conn: &mut crate::db::Conn<'_>,
    site_id: i64,
    group_id: i64,
) -> Result<(String, i64), PanelError> {
    fetch_opt!(
        conn,
        (String, i64),
        "SELECT name, gid FROM unix_groups WHERE id = $1 AND site_id = $2",
        group_id,
        site_id
    )?
    .ok_or(PanelError::NotFound("unix group"))
}

/// Removes a group from the site's servers (its members keep their
/// accounts). Its GID is not handed out again.
pub async fn delete(
    db: &Db,
    who: &Principal,
    site_id: i64,
    group_id: i64,
) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let (name, gid) = load(&mut conn, site_id, group_id).await?;
    execute!(&mut conn, "DELETE FROM unix_groups WHERE id = $1", group_id)?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("unix_group.delete", "unix_group", group_id)
            .before(&serde_json::json!({ "site_id": site_id, "name": name, "gid": gid })),
    )
    .await?;
    access::sync_site(&mut tx, who, site_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Puts one of the site's people into the group.
pub async fn add_member(
    db: &Db,
    who: &Principal,
    site_id: i64,
    group_id: i64,
    user_name: &str,
) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let (name, _) = load(&mut conn, site_id, group_id).await?;
    let people = access::people(&mut conn, Some(site_id))
        .await?
        .remove(&site_id)
        .unwrap_or_default();
    let person = people.iter().find(|p| p.name == user_name).ok_or_else(|| {
        PanelError::invalid(
            "user",
            format!("{user_name:?} may not log in to this site's servers"),
        )
    })?;
    execute!(
        &mut conn,
        "INSERT INTO unix_group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        group_id,
        person.user_id
    )?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("unix_group.member_add", "unix_group", group_id)
            .after(&serde_json::json!({ "group": name, "user": user_name })),
    )
    .await?;
    access::sync_site(&mut tx, who, site_id).await?;
    tx.commit().await?;
    Ok(())
}

/// [`remove_member`] by the person's user name, as the site page lists
/// the group's members. The site's admin is checked first, so the answer
/// says nothing about other names to anyone else.
pub async fn remove_member_named(
    db: &Db,
    who: &Principal,
    site_id: i64,
    group_id: i64,
    user_name: &str,
) -> Result<(), PanelError> {
    let user_id = {
        let mut rc = db.read().await?;
        let mut conn = rc.conn();
        require_admin(&mut conn, who, site_id).await?;
        scalar!(
            &mut conn,
            i64,
            "SELECT id FROM users WHERE name = $1",
            user_name
        )?
    };
    let user_id = user_id.ok_or(PanelError::NotFound("group member"))?;
    remove_member(db, who, site_id, group_id, user_id).await
}

/// Takes a person out of the group.
pub async fn remove_member(
    db: &Db,
    who: &Principal,
    site_id: i64,
    group_id: i64,
    user_id: i64,
) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let (name, _) = load(&mut conn, site_id, group_id).await?;
    let n = execute!(
        &mut conn,
        "DELETE FROM unix_group_members WHERE group_id = $1 AND user_id = $2",
        group_id,
        user_id
    )?;
    if n == 0 {
        return Err(PanelError::NotFound("group member"));
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("unix_group.member_remove", "unix_group", group_id)
            .before(&serde_json::json!({ "group": name, "user_id": user_id })),
    )
    .await?;
    access::sync_site(&mut tx, who, site_id).await?;
    tx.commit().await?;
    Ok(())
}
