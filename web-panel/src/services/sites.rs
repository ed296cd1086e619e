//! Sites: the unit of ownership. A site has admins (who manage its
//! services in the panel), SSH-only users (who may log in to its servers
//! but not use the panel for them) and lookup groups (whose members get a
//! role through the group). Platform admins see and manage every site.

use serde::{Deserialize, Serialize};

use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{Page, Paged, PanelError, Principal};
use crate::services::access;
use crate::services::model::{LookupGroup, Site, SiteDetail, SiteMember, SITE_STATES};
use crate::{execute, fetch_all, fetch_opt, scalar};

const COLS: &str = "id, name, description, owner_email, state, created_at, updated_at";

/// Sites on which `$2` (a user id) is an admin, directly or through a
/// lookup group. `$1` is true for platform admins, who match every site.
pub(crate) const ADMIN_SITES: &str =
    "(SELECT site_id FROM site_members WHERE user_id = $2 AND role = 'admin' \
     UNION SELECT l.site_id FROM site_lookup_groups l JOIN user_groups g ON g.name = l.group_name \
       JOIN group_members m ON m.group_id = g.id WHERE m.user_id = $2 AND l.role = 'admin')";

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub owner_email: String,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SitePatch {
    pub description: Option<String>,
    pub owner_email: Option<String>,
    pub state: Option<String>,
}

/// How a user stands towards a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteRole {
    PlatformAdmin,
    Admin,
    SshOnly,
    None,
}

/// The best role `who` has on `site_id`.
pub async fn site_role(
    conn: &mut Conn<'_>,
    who: &Principal,
    site_id: i64,
) -> Result<SiteRole, PanelError> {
    if who.is_admin {
        return Ok(SiteRole::PlatformAdmin);
    }
    let roles = fetch_all!(
        conn,
        (String,),
        "SELECT role FROM site_members WHERE site_id = $1 AND user_id = $2 \
         UNION ALL SELECT l.role FROM site_lookup_groups l JOIN user_groups g ON g.name = l.group_name \
           JOIN group_members m ON m.group_id = g.id WHERE l.site_id = $1 AND m.user_id = $2",
        site_id,
        who.user_id
    )?;
    Ok(if roles.iter().any(|(r,)| r == "admin") {
        SiteRole::Admin
    } else if roles.is_empty() {
        SiteRole::None
    } else {
        SiteRole::SshOnly
    })
}

/// Whether `user_id` has a role of their own on `site_id` (directly or
/// through a lookup group), so an account on its servers; a platform
/// admin's power does not count here.
pub async fn has_login(
    conn: &mut Conn<'_>,
    user_id: i64,
    site_id: i64,
) -> Result<bool, PanelError> {
    let n = scalar!(
        conn,
        i64,
        "SELECT COUNT(*) FROM (SELECT role FROM site_members WHERE site_id = $1 AND user_id = $2 \
         UNION ALL SELECT l.role FROM site_lookup_groups l JOIN user_groups g ON g.name = l.group_name \
           JOIN group_members m ON m.group_id = g.id WHERE l.site_id = $1 AND m.user_id = $2) r",
        site_id,
        user_id
    )?;
    Ok(n.unwrap_or(0) > 0)
}

/// Checks that `who` may manage `site_id` in the panel. Users with no role
/// get "not found", so the panel does not reveal which sites exist;
/// SSH-only users are told they cannot manage it.
pub async fn require_admin(
    conn: &mut Conn<'_>,
    who: &Principal,
    site_id: i64,
) -> Result<(), PanelError> {
    match site_role(conn, who, site_id).await? {
        SiteRole::PlatformAdmin | SiteRole::Admin => Ok(()),
        SiteRole::SshOnly => Err(PanelError::Forbidden(
            "SSH-only users cannot manage this site in the panel".into(),
        )),
        SiteRole::None => Err(PanelError::NotFound("site")),
    }
}

fn validate_email(field: &str, email: &str) -> Result<(), PanelError> {
    let ok = email
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        && !email.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(PanelError::invalid(
            field,
            format!("{email:?} is not an email address"),
        ))
    }
}

/// Longest site name.
pub const SITE_NAME_MAX: usize = 63;

/// Creates a site; its creator becomes its first admin. Its name is
/// checked by [`crate::domain::check_name`].
pub async fn create(db: &Db, who: &Principal, new: &NewSite) -> Result<Site, PanelError> {
    let name = crate::domain::check_name("name", &new.name, SITE_NAME_MAX)?;
    validate_email("owner_email", &new.owner_email)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let site = fetch_opt!(
        &mut conn,
        Site,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO sites (name, description, owner_email, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (name) DO NOTHING RETURNING {COLS}"
        )),
        name,
        new.description.as_str(),
        new.owner_email.as_str(),
        now
    )?
    .ok_or_else(|| PanelError::Conflict(format!("a site named {name:?} exists")))?;
    if who.actor_id().is_some() {
        execute!(
            &mut conn,
            "INSERT INTO site_members (site_id, user_id, role) VALUES ($1, $2, 'admin')",
            site.id,
            who.user_id
        )?;
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("site.create", "site", site.id).after(&site),
    )
    .await?;
    tx.commit().await?;
    Ok(site)
}

pub async fn list(db: &Db, who: &Principal, page: Page) -> Result<Paged<Site>, PanelError> {
    let page = page.checked()?;
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let filter = format!("WHERE ($1 OR id IN {ADMIN_SITES})");
    let total = scalar!(
        &mut conn,
        i64,
        sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM sites {filter}")),
        who.is_admin,
        who.user_id
    )?
    .unwrap_or(0);
    let items = fetch_all!(
        &mut conn,
        Site,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM sites {filter} ORDER BY id LIMIT $3 OFFSET $4"
        )),
        who.is_admin,
        who.user_id,
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

async fn load(conn: &mut Conn<'_>, site_id: i64) -> Result<Site, PanelError> {
    fetch_opt!(
        conn,
        Site,
        sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM sites WHERE id = $1")),
        site_id
    )?
    .ok_or(PanelError::NotFound("site"))
}

pub async fn get(db: &Db, who: &Principal, site_id: i64) -> Result<SiteDetail, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    require_admin(&mut conn, who, site_id).await?;
    let site = load(&mut conn, site_id).await?;
    let members = fetch_all!(
        &mut conn,
        SiteMember,
        "SELECT m.user_id, u.name, m.role FROM site_members m JOIN users u ON u.id = m.user_id \
         WHERE m.site_id = $1 ORDER BY u.name",
        site_id
    )?;
    let lookup_groups = fetch_all!(
        &mut conn,
        LookupGroup,
        "SELECT group_name, role FROM site_lookup_groups WHERE site_id = $1 ORDER BY group_name",
        site_id
    )?;
    Ok(SiteDetail {
        site,
        members,
        lookup_groups,
    })
}

/// Edits a site. Site admins may change the description and owner and
/// cancel it; suspending or reactivating is for platform admins.
pub async fn update(
    db: &Db,
    who: &Principal,
    site_id: i64,
    patch: &SitePatch,
) -> Result<Site, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let before = load(&mut conn, site_id).await?;
    let mut after = before.clone();
    if let Some(d) = &patch.description {
        after.description = d.clone();
    }
    if let Some(e) = &patch.owner_email {
        validate_email("owner_email", e)?;
        after.owner_email = e.clone();
    }
    if let Some(s) = &patch.state {
        if !SITE_STATES.contains(&s.as_str()) {
            return Err(PanelError::invalid(
                "state",
                format!("state is one of {SITE_STATES:?}"),
            ));
        }
        if s != "cancelled" && !who.is_admin && *s != before.state {
            return Err(PanelError::Forbidden(
                "only platform admins suspend or reactivate sites".into(),
            ));
        }
        after.state = s.clone();
    }
    after.updated_at = now;
    let suspension = match (before.state.as_str(), after.state.as_str()) {
        (was, now) if was == now => None,
        (_, "suspended") => Some(true),
        ("suspended", _) => Some(false),
        _ => None,
    };
    execute!(
        &mut conn,
        "UPDATE sites SET description = $1, owner_email = $2, state = $3, updated_at = $4 WHERE id = $5",
        after.description.as_str(),
        after.owner_email.as_str(),
        after.state.as_str(),
        now,
        site_id
    )?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("site.update", "site", site_id)
            .before(&before)
            .after(&after),
    )
    .await?;
    if let Some(suspended) = suspension {
        let action = if suspended {
            "site.suspend"
        } else {
            "site.unsuspend"
        };
        audit::record(&mut conn, now, who, Change::new(action, "site", site_id)).await?;
        if suspended {
            // Each server's access job blocks logins, then shuts it down.
            access::sync_site_any_state(&mut tx, who, site_id).await?;
        } else {
            // Each server starts, and its start queues an access job that
            // lets people in again.
            access::start_servers(&mut tx, who, site_id).await?;
        }
    }
    tx.commit().await?;
    Ok(after)
}

/// Suspends a site (`true`) or lets it run again (`false`): platform
/// admins only. Suspending shuts the site's servers down and blocks
/// logins on them; unsuspending starts them and lets people in again. Both
/// are audited (`site.suspend`, `site.unsuspend`).
pub async fn set_suspended(
    db: &Db,
    who: &Principal,
    site_id: i64,
    suspended: bool,
) -> Result<Site, PanelError> {
    let state = if suspended { "suspended" } else { "active" };
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins suspend or unsuspend sites".into(),
        ));
    }
    {
        let mut rc = db.read().await?;
        require_admin(&mut rc.conn(), who, site_id).await?;
        let current = load(&mut rc.conn(), site_id).await?;
        if current.state == "cancelled" {
            return Err(PanelError::Conflict("the site is cancelled".into()));
        }
        if current.state == state {
            return Err(PanelError::Conflict(format!("the site is {state} already")));
        }
    }
    update(
        db,
        who,
        site_id,
        &SitePatch {
            state: Some(state.to_string()),
            ..SitePatch::default()
        },
    )
    .await
}

/// Adds a member (or changes their role): `admin` or `ssh`.
pub async fn set_member(
    db: &Db,
    who: &Principal,
    site_id: i64,
    user_name: &str,
    role: &str,
) -> Result<SiteMember, PanelError> {
    if !["admin", "ssh"].contains(&role) {
        return Err(PanelError::invalid("role", "role is admin or ssh"));
    }
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let user_id = scalar!(
        &mut conn,
        i64,
        "SELECT id FROM users WHERE name = $1",
        user_name
    )?
    .ok_or_else(|| PanelError::invalid("user", format!("no user named {user_name:?}")))?;
    execute!(
        &mut conn,
        "INSERT INTO site_members (site_id, user_id, role) VALUES ($1, $2, $3) \
         ON CONFLICT (site_id, user_id) DO UPDATE SET role = $3",
        site_id,
        user_id,
        role
    )?;
    let member = SiteMember {
        user_id,
        name: user_name.to_string(),
        role: role.to_string(),
    };
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("site.member_set", "site", site_id).after(&member),
    )
    .await?;
    access::sync_site(&mut tx, who, site_id).await?;
    tx.commit().await?;
    Ok(member)
}

pub async fn remove_member(
    db: &Db,
    who: &Principal,
    site_id: i64,
    user_id: i64,
) -> Result<(), PanelError> {
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let n = execute!(
        &mut conn,
        "DELETE FROM site_members WHERE site_id = $1 AND user_id = $2",
        site_id,
        user_id
    )?;
    if n == 0 {
        return Err(PanelError::NotFound("member"));
    }
    let mut change = Change::new("site.member_remove", "site", site_id);
    change.before = Some(serde_json::json!({ "user_id": user_id }));
    audit::record(&mut conn, db.now(), who, change).await?;
    access::sync_site(&mut tx, who, site_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Grants `role` on the site to every member of the group `group_name`
/// (a lookup group). The group need not exist yet.
pub async fn set_lookup_group(
    db: &Db,
    who: &Principal,
    site_id: i64,
    group_name: &str,
    role: &str,
) -> Result<LookupGroup, PanelError> {
    if !["admin", "ssh"].contains(&role) {
        return Err(PanelError::invalid("role", "role is admin or ssh"));
    }
    if group_name.trim().is_empty() {
        return Err(PanelError::invalid("group", "name a group"));
    }
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    execute!(
        &mut conn,
        "INSERT INTO site_lookup_groups (site_id, group_name, role) VALUES ($1, $2, $3) \
         ON CONFLICT (site_id, group_name) DO UPDATE SET role = $3",
        site_id,
        group_name,
        role
    )?;
    let lg = LookupGroup {
        group_name: group_name.to_string(),
        role: role.to_string(),
    };
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("site.lookup_group_set", "site", site_id).after(&lg),
    )
    .await?;
    access::sync_site(&mut tx, who, site_id).await?;
    tx.commit().await?;
    Ok(lg)
}

/// Stops granting a role through the lookup group `group_name`.
pub async fn remove_lookup_group(
    db: &Db,
    who: &Principal,
    site_id: i64,
    group_name: &str,
) -> Result<(), PanelError> {
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    let n = execute!(
        &mut conn,
        "DELETE FROM site_lookup_groups WHERE site_id = $1 AND group_name = $2",
        site_id,
        group_name
    )?;
    if n == 0 {
        return Err(PanelError::NotFound("lookup group"));
    }
    let mut change = Change::new("site.lookup_group_remove", "site", site_id);
    change.before = Some(serde_json::json!({ "group": group_name }));
    audit::record(&mut conn, db.now(), who, change).await?;
    access::sync_site(&mut tx, who, site_id).await?;
    tx.commit().await?;
    Ok(())
}
