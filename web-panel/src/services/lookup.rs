//! Lookup groups from the LDAP directory: the domain layer between the
//! directory client (`ldap.rs`) and the people on the servers
//! (`services::access`).
//!
//! A site's lookup group names a group. While LDAP is configured, every
//! name that is not one of the panel's own groups (`user_groups.source =
//! 'panel'`) is the directory's: [`refresh`] (the `lookup_refresh` job, on
//! the queue's cron every `ldap.refresh_every_secs` and on a site admin's
//! "Refresh now") reads each such group and its members from the directory
//! first, changing nothing, and only then mirrors them into the store in
//! one transaction: a panel user per member (`users.source = 'ldap'`,
//! no password), their display name, their `uidNumber` as their UID (when
//! they have none yet; UIDs never change), their `sshPublicKey`s
//! (`ssh_keys.source = 'ldap'`; keys a person added in the panel are
//! theirs and stay), and the group's membership. Only groups whose
//! membership changed, and people whose keys changed, queue access jobs, so
//! only the sites concerned get a role run.
//!
//! If the directory cannot be read, nothing is removed: the refresh fails
//! (the job retries), and the error is kept on each group for the site page.
//! A member who left the group in the directory leaves it here on the next
//! successful refresh.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::audit::{self, Change};
use crate::config::LdapConfig;
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::ldap::{Directory, DirectoryError, DirectoryGroup};
use crate::lifecycle::jobs::LookupRefreshJob;
use crate::queue::{self, cron::Schedule};
use crate::services::access;
use crate::services::keys::parse_public_key;
use crate::services::sites::require_admin;
use crate::{execute, fetch_all, scalar};

/// What one refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefreshReport {
    /// Directory groups read.
    pub groups: Vec<String>,
    /// Groups whose membership changed.
    pub changed_groups: Vec<String>,
    /// People whose keys or UID changed.
    pub changed_people: Vec<String>,
    /// Access jobs queued (coalesced per server by the queue).
    pub access_jobs: usize,
}

/// Why a refresh failed: the directory (retry), or the store.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Panel(#[from] PanelError),
}

impl From<sqlx::Error> for RefreshError {
    fn from(e: sqlx::Error) -> Self {
        RefreshError::Panel(e.into())
    }
}

impl From<crate::store::StoreError> for RefreshError {
    fn from(e: crate::store::StoreError) -> Self {
        RefreshError::Panel(e.into())
    }
}

/// The lookup-group names of `site_id` (every site: `None`) that are the
/// directory's: not one of the panel's own groups.
async fn directory_group_names(
    conn: &mut Conn<'_>,
    site_id: Option<i64>,
) -> Result<Vec<String>, PanelError> {
    Ok(fetch_all!(
        conn,
        (String,),
        "SELECT DISTINCT group_name FROM site_lookup_groups WHERE ($1 IS NULL OR site_id = $1) \
         AND group_name NOT IN (SELECT name FROM user_groups WHERE source = 'panel') ORDER BY group_name",
        site_id
    )?
    .into_iter()
    .map(|(n,)| n)
    .collect())
}

/// Reads the lookup groups of `site_id` (every site: `None`) from the
/// directory and mirrors them into the store; see the module doc. With
/// LDAP off it does nothing.
pub async fn refresh(
    db: &Db,
    cfg: &LdapConfig,
    site_id: Option<i64>,
) -> Result<RefreshReport, RefreshError> {
    if !cfg.enabled() {
        return Ok(RefreshReport::default());
    }
    let names = {
        let mut rc = db.read().await?;
        directory_group_names(&mut rc.conn(), site_id).await?
    };
    if names.is_empty() {
        return Ok(RefreshReport::default());
    }
    // Everything is read before anything is written: a directory that
    // fails half way removes no one.
    let read = async {
        let mut dir = Directory::connect(cfg).await?;
        let mut groups = Vec::new();
        for name in &names {
            groups.push((name.clone(), dir.group(name).await?));
        }
        dir.close().await;
        Ok::<_, DirectoryError>(groups)
    }
    .await;
    let groups = match read {
        Ok(g) => g,
        Err(e) => {
            record_error(db, &names, &e.to_string()).await?;
            return Err(e.into());
        }
    };
    apply(db, groups).await
}

/// Keeps the error on every group concerned that the store already has,
/// for the site page. Nothing else changes.
async fn record_error(db: &Db, names: &[String], error: &str) -> Result<(), PanelError> {
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    for name in names {
        execute!(
            &mut conn,
            "UPDATE user_groups SET refresh_error = $2 WHERE name = $1 AND source = 'ldap'",
            name.as_str(),
            error
        )?;
    }
    tx.commit().await?;
    Ok(())
}

async fn apply(
    db: &Db,
    groups: Vec<(String, Option<DirectoryGroup>)>,
) -> Result<RefreshReport, RefreshError> {
    let now = db.now();
    let system = Principal::system();
    let mut report = RefreshReport::default();
    let mut changed_users: BTreeMap<i64, String> = BTreeMap::new();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    for (name, group) in groups {
        let group_id = scalar!(
            &mut conn,
            i64,
            "INSERT INTO user_groups (name, created_at, source) VALUES ($1, $2, 'ldap') \
             ON CONFLICT (name) DO UPDATE SET refreshed_at = user_groups.refreshed_at RETURNING id",
            name.as_str(),
            now
        )?
        .ok_or_else(|| PanelError::Internal(format!("no group row for {name}")))?;
        // A panel group made meanwhile under that name is the panel's.
        let source = scalar!(
            &mut conn,
            String,
            "SELECT source FROM user_groups WHERE id = $1",
            group_id
        )?;
        if source.as_deref() != Some("ldap") {
            continue;
        }
        report.groups.push(name.clone());
        let members = group.map(|g| g.members).unwrap_or_default();
        let mut want: BTreeMap<i64, String> = BTreeMap::new();
        for person in &members {
            let user_id = match scalar!(
                &mut conn,
                i64,
                "SELECT id FROM users WHERE name = $1",
                person.name.as_str()
            )? {
                Some(id) => {
                    execute!(
                        &mut conn,
                        "UPDATE users SET display_name = $2 WHERE id = $1 AND source = 'ldap'",
                        id,
                        person.display_name.as_deref()
                    )?;
                    id
                }
                None => {
                    let id = scalar!(
                        &mut conn,
                        i64,
                        "INSERT INTO users (name, display_name, source, created_at) VALUES ($1, $2, 'ldap', $3) RETURNING id",
                        person.name.as_str(),
                        person.display_name.as_deref(),
                        now
                    )?
                    .ok_or_else(|| PanelError::Internal("user insert returned no id".into()))?;
                    audit::record(
                        &mut conn,
                        now,
                        &system,
                        Change::new("user.create", "user", id).after(&serde_json::json!({
                            "name": person.name, "source": "ldap"
                        })),
                    )
                    .await?;
                    id
                }
            };
            want.insert(user_id, person.name.clone());
            if let Some(uid) = person.uid_number {
                let has = scalar!(
                    &mut conn,
                    i64,
                    "SELECT uid FROM unix_ids WHERE user_id = $1",
                    user_id
                )?;
                if has.is_none() {
                    let got = scalar!(
                        &mut conn,
                        i64,
                        "INSERT INTO unix_ids (user_id, uid, source, created_at) VALUES ($1, $2, 'ldap', $3) \
                         ON CONFLICT DO NOTHING RETURNING uid",
                        user_id,
                        uid,
                        now
                    )?;
                    if got.is_some() {
                        changed_users.insert(user_id, person.name.clone());
                    } else {
                        // Someone already has that UID: the panel allocates
                        // one instead, and says so.
                        tracing::warn!(user = %person.name, uid, "the directory's uidNumber is another person's UID");
                    }
                }
            }
            if sync_keys(&mut conn, user_id, &person.ssh_keys, now).await? {
                changed_users.insert(user_id, person.name.clone());
            }
        }
        let have: BTreeSet<i64> = fetch_all!(
            &mut conn,
            (i64,),
            "SELECT user_id FROM group_members WHERE group_id = $1",
            group_id
        )?
        .into_iter()
        .map(|(u,)| u)
        .collect();
        let want_ids: BTreeSet<i64> = want.keys().copied().collect();
        for gone in have.difference(&want_ids) {
            execute!(
                &mut conn,
                "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2",
                group_id,
                *gone
            )?;
        }
        for new in want_ids.difference(&have) {
            execute!(
                &mut conn,
                "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                group_id,
                *new
            )?;
        }
        execute!(
            &mut conn,
            "UPDATE user_groups SET refreshed_at = $2, refresh_error = NULL WHERE id = $1",
            group_id,
            now
        )?;
        if have != want_ids {
            let mut change = Change::new("group.refresh", "group", group_id);
            change.after = Some(serde_json::json!({
                "name": name,
                "members": want.values().collect::<Vec<_>>(),
                "added": want_ids.difference(&have).count(),
                "removed": have.difference(&want_ids).count(),
            }));
            audit::record(&mut conn, now, &system, change).await?;
            report.changed_groups.push(name.clone());
        }
    }
    for name in report.changed_groups.clone() {
        report.access_jobs += access::sync_lookup_group(&mut tx, &system, &name).await?;
    }
    for (user_id, name) in &changed_users {
        report.changed_people.push(name.clone());
        report.access_jobs += access::sync_user(&mut tx, &system, *user_id).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// Makes the person's directory keys exactly `lines`; keys they added in
/// the panel are left alone. Returns whether anything changed. A key the
/// directory holds that does not parse is skipped with a warning.
async fn sync_keys(
    conn: &mut Conn<'_>,
    user_id: i64,
    lines: &[String],
    now: i64,
) -> Result<bool, PanelError> {
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for line in lines {
        match parse_public_key(line) {
            Ok((text, fp)) => {
                want.insert(fp, text);
            }
            Err(e) => tracing::warn!(user_id, "skipping a directory sshPublicKey: {e}"),
        }
    }
    let have: BTreeSet<String> = fetch_all!(
        conn,
        (String,),
        "SELECT fingerprint FROM ssh_keys WHERE user_id = $1 AND source = 'ldap'",
        user_id
    )?
    .into_iter()
    .map(|(f,)| f)
    .collect();
    let mut changed = false;
    for fp in have.iter().filter(|f| !want.contains_key(*f)) {
        execute!(
            conn,
            "DELETE FROM ssh_keys WHERE user_id = $1 AND fingerprint = $2 AND source = 'ldap'",
            user_id,
            fp.as_str()
        )?;
        changed = true;
    }
    for (fp, text) in want.iter().filter(|(f, _)| !have.contains(*f)) {
        let n = execute!(
            conn,
            "INSERT INTO ssh_keys (user_id, name, public_key, fingerprint, created_at, source) \
             VALUES ($1, 'directory', $2, $3, $4, 'ldap') ON CONFLICT (user_id, fingerprint) DO NOTHING",
            user_id,
            text.as_str(),
            fp.as_str(),
            now
        )?;
        changed |= n > 0;
    }
    Ok(changed)
}

/// The daily refresh of every site's lookup groups, on the queue's cron
/// (each fire is claimed once across all nodes): `None` with LDAP off or
/// `refresh_every_secs = 0`.
pub fn refresh_schedule(cfg: &LdapConfig) -> Option<Schedule> {
    (cfg.enabled() && cfg.refresh_every_secs > 0).then(|| {
        Schedule::interval(
            "lookup_refresh",
            Duration::from_secs(cfg.refresh_every_secs),
            LookupRefreshJob { site_id: None }.spec(None),
        )
    })
}

/// Queues a refresh of one site's lookup groups ("Refresh now"): site
/// admins and platform admins. Returns the job's id.
pub async fn request_refresh(
    db: &Db,
    cfg: &LdapConfig,
    who: &Principal,
    site_id: i64,
) -> Result<i64, PanelError> {
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    require_admin(&mut conn, who, site_id).await?;
    if !cfg.enabled() {
        return Err(PanelError::Conflict(
            "no LDAP directory is configured: lookup groups are the panel's own groups".into(),
        ));
    }
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("site.lookup_refresh", "site", site_id),
    )
    .await?;
    let job = queue::enqueue(
        &mut tx,
        LookupRefreshJob {
            site_id: Some(site_id),
        }
        .spec(who.actor_id()),
    )
    .await?;
    tx.commit().await?;
    Ok(job.job_id)
}

/// Group names from the directory starting with `prefix`, for the site
/// page's autocomplete: site admins and platform admins. Empty with LDAP
/// off.
pub async fn directory_groups(
    db: &Db,
    cfg: &LdapConfig,
    who: &Principal,
    site_id: i64,
    prefix: &str,
) -> Result<Vec<String>, PanelError> {
    {
        let mut rc = db.read().await?;
        require_admin(&mut rc.conn(), who, site_id).await?;
    }
    if !cfg.enabled() {
        return Ok(Vec::new());
    }
    let mut dir = Directory::connect(cfg)
        .await
        .map_err(|e| PanelError::Unavailable(e.to_string()))?;
    let names = dir
        .group_names(prefix.trim(), 50)
        .await
        .map_err(|e| PanelError::Unavailable(e.to_string()))?;
    dir.close().await;
    Ok(names)
}

/// How each lookup group of a site last refreshed, for the site page.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LookupGroupState {
    pub group_name: String,
    /// `admin` or `ssh`: what the group's members get on the site.
    pub role: String,
    /// `panel` (one of the panel's groups), `ldap`, or null before the
    /// first refresh.
    pub source: Option<String>,
    pub members: i64,
    pub refreshed_at: Option<i64>,
    pub refresh_error: Option<String>,
}

pub async fn states(
    db: &Db,
    who: &Principal,
    site_id: i64,
) -> Result<Vec<LookupGroupState>, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    require_admin(&mut conn, who, site_id).await?;
    Ok(fetch_all!(
        &mut conn,
        LookupGroupState,
        "SELECT l.group_name, l.role, g.source, \
           (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id) AS members, \
           g.refreshed_at, g.refresh_error \
         FROM site_lookup_groups l LEFT JOIN user_groups g ON g.name = l.group_name \
         WHERE l.site_id = $1 ORDER BY l.group_name",
        site_id
    )?)
}
