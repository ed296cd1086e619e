//! The people on a site's servers: who may log in and how, each person's
//! stable UID, and the `access` jobs that carry a change to the servers.
//!
//! Every change that alters who may log in to a site's servers (an SSH key
//! added or removed, a member or lookup group set or removed, a Unix group
//! changed, a site suspended) calls one of the `sync_*` functions inside its
//! own transaction: they enqueue an `access` job (`lifecycle::jobs::AccessJob`,
//! coalesced per server) for every live server concerned, so the change and
//! its jobs commit together. The job's handler (`provision/steps/access.rs`)
//! first gives everyone concerned a UID ([`ensure_unix_ids`]), then runs
//! `access.playbook` (`roles/mwsusers`) with the inventory's `keel_users`,
//! `keel_groups` and `keel_access_blocked`.
//!
//! UIDs: LDAP's `uidNumber` when the directory has one, or else allocated
//! once from `access.uid_min..uid_max` and never reused (`unix_ids`).
//! People whose panel name cannot be a Unix account name, or is one the
//! system owns (`root`, the panel's admin account...), get no account; the
//! server page says why.

use std::collections::BTreeMap;

use crate::audit::{self, Change};
use crate::config::AccessConfig;
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{AccessJob, PowerAction, PowerJob};
use crate::lifecycle::Status;
use crate::queue;
use crate::services::model::{AccessRole, JobView, Login, Person, ServerAccess, UnixGroup};
use crate::store::Tx;
use crate::{execute, fetch_all, scalar};

/// Account names the panel never manages on a server: the system's own and
/// the ones Debian's base system and the panel's roles use.
const RESERVED: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "sshd",
    "messagebus",
    "adm",
    "sudo",
    "staff",
    "users",
    "wheel",
    "shadow",
    "utmp",
    "tty",
    "disk",
    "keel-users",
    "keel-admins",
];

/// Why `name` cannot be a Unix account (or group) name on the servers;
/// `None` when it can. `admin_user` is the panel's own account.
pub fn unix_name_problem(name: &str, admin_user: &str) -> Option<&'static str> {
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        Some("not a valid Unix name (a lowercase letter or _, then up to 31 of a-z 0-9 _ -)")
    } else if RESERVED.contains(&name) || name == admin_user || name.starts_with("systemd-") {
        Some("a name the system or the panel itself uses")
    } else {
        None
    }
}

#[derive(sqlx::FromRow)]
struct PersonRow {
    site_id: i64,
    user_id: i64,
    name: String,
    role: String,
    via: Option<String>,
    disabled: bool,
    uid: Option<i64>,
}

/// The people of one site (`Some(id)`) or of every site, by site id.
pub async fn people(
    conn: &mut Conn<'_>,
    site_id: Option<i64>,
) -> Result<BTreeMap<i64, Vec<Person>>, PanelError> {
    let rows = fetch_all!(
        conn,
        PersonRow,
        "SELECT m.site_id, u.id AS user_id, u.name, m.role, CAST(NULL AS TEXT) AS via, u.disabled, x.uid \
           FROM site_members m JOIN users u ON u.id = m.user_id \
           LEFT JOIN unix_ids x ON x.user_id = u.id WHERE ($1 IS NULL OR m.site_id = $1) \
         UNION ALL SELECT l.site_id, u.id AS user_id, u.name, l.role, l.group_name AS via, u.disabled, x.uid \
           FROM site_lookup_groups l JOIN user_groups g ON g.name = l.group_name \
           JOIN group_members gm ON gm.group_id = g.id JOIN users u ON u.id = gm.user_id \
           LEFT JOIN unix_ids x ON x.user_id = u.id WHERE ($1 IS NULL OR l.site_id = $1)",
        site_id
    )?;
    let mut by_site: BTreeMap<i64, BTreeMap<i64, Person>> = BTreeMap::new();
    for r in rows {
        let role = AccessRole::parse(&r.role)?;
        let how = match &r.via {
            None => "member".to_string(),
            Some(g) => format!("lookup group {g} ({})", role.as_str()),
        };
        let p = by_site
            .entry(r.site_id)
            .or_default()
            .entry(r.user_id)
            .or_insert_with(|| Person {
                user_id: r.user_id,
                name: r.name.clone(),
                role,
                via: Vec::new(),
                uid: r.uid,
                disabled: r.disabled,
            });
        p.role = p.role.min(role);
        p.via.push(how);
        p.via.sort();
    }
    Ok(by_site
        .into_iter()
        .map(|(site, people)| (site, people.into_values().collect()))
        .collect())
}

/// The Unix groups of one site (`Some(id)`) or of every site, by site id.
pub async fn unix_groups(
    conn: &mut Conn<'_>,
    site_id: Option<i64>,
) -> Result<BTreeMap<i64, Vec<UnixGroup>>, PanelError> {
    let groups = fetch_all!(
        conn,
        (i64, i64, String, i64),
        "SELECT id, site_id, name, gid FROM unix_groups WHERE ($1 IS NULL OR site_id = $1) ORDER BY name",
        site_id
    )?;
    let members = fetch_all!(
        conn,
        (i64, String),
        "SELECT m.group_id, u.name FROM unix_group_members m JOIN users u ON u.id = m.user_id \
         JOIN unix_groups g ON g.id = m.group_id WHERE ($1 IS NULL OR g.site_id = $1) ORDER BY u.name",
        site_id
    )?;
    let mut out: BTreeMap<i64, Vec<UnixGroup>> = BTreeMap::new();
    for (id, site, name, gid) in groups {
        out.entry(site).or_default().push(UnixGroup {
            id,
            site_id: site,
            name,
            gid,
            members: members
                .iter()
                .filter(|(g, _)| *g == id)
                .map(|(_, n)| n.clone())
                .collect(),
        });
    }
    Ok(out)
}

/// Statuses of servers an access change is sent to: a configuring server's
/// job waits until it is ready (its role run may have read the people
/// before the change).
fn reachable_statuses() -> String {
    Status::sql_list(&Status::all_where(|r| r.convergeable))
}

/// Queues an `access` job for every live server of `site_ids` (suspended
/// sites included only when `include_suspended`), in the caller's
/// transaction. Returns how many servers got one.
async fn enqueue_for_sites(
    tx: &mut Tx,
    who: &Principal,
    site_ids: &[i64],
    include_suspended: bool,
) -> Result<usize, PanelError> {
    let mut services = Vec::new();
    {
        let mut conn = tx_conn(tx);
        for site in site_ids {
            services.extend(
                fetch_all!(
                    &mut conn,
                    (i64,),
                    sqlx::AssertSqlSafe(format!(
                        "SELECT s.id FROM services s JOIN sites si ON si.id = s.site_id \
                         WHERE s.site_id = $1 AND s.status IN ({}) AND (si.state = 'active' OR $2) ORDER BY s.id",
                        reachable_statuses()
                    )),
                    *site,
                    include_suspended
                )?
                .into_iter()
                .map(|(id,)| id),
            );
        }
    }
    let specs: Vec<_> = services
        .iter()
        .map(|&service_id| AccessJob { service_id }.spec(who.actor_id()))
        .collect();
    queue::enqueue_many(tx, &specs).await?;
    Ok(services.len())
}

/// After a change to one site's people or groups.
pub(crate) async fn sync_site(
    tx: &mut Tx,
    who: &Principal,
    site_id: i64,
) -> Result<usize, PanelError> {
    enqueue_for_sites(tx, who, &[site_id], false).await
}

/// After a suspend or an unsuspend: the site's servers, whatever its state.
pub(crate) async fn sync_site_any_state(
    tx: &mut Tx,
    who: &Principal,
    site_id: i64,
) -> Result<usize, PanelError> {
    enqueue_for_sites(tx, who, &[site_id], true).await
}

/// After an unsuspend: a `start` power job for every ready server of the
/// site (its handler queues an access job once the server runs).
pub(crate) async fn start_servers(
    tx: &mut Tx,
    who: &Principal,
    site_id: i64,
) -> Result<usize, PanelError> {
    let services: Vec<i64> = {
        let mut conn = tx_conn(tx);
        fetch_all!(
            &mut conn,
            (i64,),
            sqlx::AssertSqlSafe(format!(
                "SELECT id FROM services WHERE site_id = $1 AND status IN ({}) ORDER BY id",
                Status::sql_list(&Status::all_where(|r| r.powerable))
            )),
            site_id
        )?
        .into_iter()
        .map(|(id,)| id)
        .collect()
    };
    let specs: Vec<_> = services
        .iter()
        .map(|&service_id| {
            PowerJob {
                service_id,
                action: PowerAction::Start,
            }
            .spec(who.actor_id())
        })
        .collect();
    queue::enqueue_many(tx, &specs).await?;
    Ok(services.len())
}

/// After a change to one person (their keys): every site they are on.
pub(crate) async fn sync_user(
    tx: &mut Tx,
    who: &Principal,
    user_id: i64,
) -> Result<usize, PanelError> {
    let sites: Vec<i64> = {
        let mut conn = tx_conn(tx);
        fetch_all!(
            &mut conn,
            (i64,),
            "SELECT site_id FROM site_members WHERE user_id = $1 \
             UNION SELECT l.site_id FROM site_lookup_groups l JOIN user_groups g ON g.name = l.group_name \
               JOIN group_members m ON m.group_id = g.id WHERE m.user_id = $1",
            user_id
        )?
        .into_iter()
        .map(|(s,)| s)
        .collect()
    };
    enqueue_for_sites(tx, who, &sites, false).await
}

/// After a change to a group's members: every site using it as a lookup
/// group.
pub(crate) async fn sync_lookup_group(
    tx: &mut Tx,
    who: &Principal,
    group_name: &str,
) -> Result<usize, PanelError> {
    let sites: Vec<i64> = {
        let mut conn = tx_conn(tx);
        fetch_all!(
            &mut conn,
            (i64,),
            "SELECT DISTINCT site_id FROM site_lookup_groups WHERE group_name = $1",
            group_name
        )?
        .into_iter()
        .map(|(s,)| s)
        .collect()
    };
    enqueue_for_sites(tx, who, &sites, false).await
}

/// The next value of the counter `name` in `min..=max`, taken for good (a
/// value is never offered twice). The counter starts above the highest value
/// `first_free` (a query of column `v`) already holds in the range. The
/// caller stores it, and asks again when it is taken already (say by an
/// LDAP `uidNumber`).
async fn next_id(
    conn: &mut Conn<'_>,
    name: &str,
    min: i64,
    max: i64,
    first_free: &str,
) -> Result<i64, PanelError> {
    execute!(
        conn,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO id_counters (name, next) SELECT CAST($1 AS TEXT), COALESCE(MAX(v) + 1, $2) FROM ({first_free}) AS t \
             WHERE v BETWEEN $2 AND $3 ON CONFLICT (name) DO NOTHING"
        )),
        name,
        min,
        max
    )?;
    // The range may have moved up in the configuration since.
    execute!(
        conn,
        "UPDATE id_counters SET next = $2 WHERE name = $1 AND next < $2",
        name,
        min
    )?;
    let v = scalar!(
        conn,
        i64,
        "UPDATE id_counters SET next = next + 1 WHERE name = $1 RETURNING next - 1",
        name
    )?
    .ok_or_else(|| PanelError::Internal(format!("no {name} counter")))?;
    if v > max {
        return Err(PanelError::Conflict(format!(
            "every {name} of the configured range {min}..{max} is taken"
        )));
    }
    Ok(v)
}

/// Gives a UID to every person of `site_id` (every site: `None`) who has
/// none yet, each allocation audited. Returns how many were allocated.
pub async fn ensure_unix_ids(
    db: &Db,
    cfg: &AccessConfig,
    site_id: Option<i64>,
) -> Result<usize, PanelError> {
    let missing: Vec<(i64, String)> = {
        let mut rc = db.read().await?;
        let mut conn = rc.conn();
        people(&mut conn, site_id)
            .await?
            .into_values()
            .flatten()
            .filter(|p| p.uid.is_none())
            .map(|p| (p.user_id, p.name))
            .collect()
    };
    if missing.is_empty() {
        return Ok(0);
    }
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let mut n = 0;
    for (user_id, name) in missing {
        let has = scalar!(
            &mut conn,
            i64,
            "SELECT uid FROM unix_ids WHERE user_id = $1",
            user_id
        )?;
        if has.is_some() {
            continue;
        }
        let uid = loop {
            let v = next_id(
                &mut conn,
                "uid",
                cfg.uid_min,
                cfg.uid_max,
                "SELECT uid AS v FROM unix_ids",
            )
            .await?;
            let got = scalar!(
                &mut conn,
                i64,
                "INSERT INTO unix_ids (user_id, uid, source, created_at) VALUES ($1, $2, 'panel', $3) \
                 ON CONFLICT DO NOTHING RETURNING uid",
                user_id,
                v,
                now
            )?;
            if let Some(uid) = got {
                break uid;
            }
            // Taken: by someone else's UID (try the next), or this person
            // got one meanwhile.
            if let Some(uid) = scalar!(
                &mut conn,
                i64,
                "SELECT uid FROM unix_ids WHERE user_id = $1",
                user_id
            )? {
                break uid;
            }
        };
        audit::record(
            &mut conn,
            now,
            &Principal::system(),
            Change::new("user.uid_allocate", "user", user_id)
                .after(&serde_json::json!({ "name": name, "uid": uid })),
        )
        .await?;
        n += 1;
    }
    tx.commit().await?;
    Ok(n)
}

/// Allocates a GID for a new Unix group of `site_id` and inserts it.
pub(crate) async fn insert_unix_group(
    conn: &mut Conn<'_>,
    cfg: &AccessConfig,
    site_id: i64,
    name: &str,
    now: i64,
) -> Result<UnixGroup, PanelError> {
    let exists = scalar!(
        conn,
        i64,
        "SELECT id FROM unix_groups WHERE site_id = $1 AND name = $2",
        site_id,
        name
    )?;
    if exists.is_some() {
        return Err(PanelError::Conflict(format!(
            "the site has a Unix group named {name:?}"
        )));
    }
    let (id, gid) = loop {
        let v = next_id(
            conn,
            "gid",
            cfg.gid_min,
            cfg.gid_max,
            "SELECT gid AS v FROM unix_groups",
        )
        .await?;
        let got = scalar!(
            conn,
            i64,
            "INSERT INTO unix_groups (site_id, name, gid, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING RETURNING id",
            site_id,
            name,
            v,
            now
        )?;
        if let Some(id) = got {
            break (id, v);
        }
        let named = scalar!(
            conn,
            i64,
            "SELECT id FROM unix_groups WHERE site_id = $1 AND name = $2",
            site_id,
            name
        )?;
        if named.is_some() {
            return Err(PanelError::Conflict(format!(
                "the site has a Unix group named {name:?}"
            )));
        }
    };
    Ok(UnixGroup {
        id,
        site_id,
        name: name.to_string(),
        gid,
        members: Vec::new(),
    })
}

/// The access view of one server of `site_id`; `who` was authorised by the
/// caller (`servers::get`).
pub(crate) async fn server_access(
    conn: &mut Conn<'_>,
    site_id: i64,
    admin_user: &str,
    last_run: Option<JobView>,
) -> Result<ServerAccess, PanelError> {
    let state = scalar!(
        conn,
        String,
        "SELECT state FROM sites WHERE id = $1",
        site_id
    )?;
    let people = people(conn, Some(site_id))
        .await?
        .remove(&site_id)
        .unwrap_or_default();
    let groups = unix_groups(conn, Some(site_id))
        .await?
        .remove(&site_id)
        .unwrap_or_default();
    let keys = fetch_all!(
        conn,
        (i64, String),
        "SELECT k.user_id, k.fingerprint FROM ssh_keys k WHERE k.user_id IN \
           (SELECT user_id FROM site_members WHERE site_id = $1 \
            UNION SELECT gm.user_id FROM site_lookup_groups l JOIN user_groups g ON g.name = l.group_name \
              JOIN group_members gm ON gm.group_id = g.id WHERE l.site_id = $1) ORDER BY k.id",
        site_id
    )?;
    let logins = people
        .into_iter()
        .map(|p| Login {
            refused: if p.disabled {
                Some("the panel account is disabled".to_string())
            } else {
                unix_name_problem(&p.name, admin_user).map(str::to_string)
            },
            keys: keys
                .iter()
                .filter(|(u, _)| *u == p.user_id)
                .map(|(_, f)| f.clone())
                .collect(),
            groups: groups
                .iter()
                .filter(|g| g.members.contains(&p.name))
                .map(|g| g.name.clone())
                .collect(),
            name: p.name,
            uid: p.uid,
            role: p.role,
            via: p.via,
        })
        .collect();
    Ok(ServerAccess {
        blocked: state.as_deref() == Some("suspended"),
        logins,
        groups,
        last_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_names_refuse_system_accounts_and_bad_characters() {
        assert_eq!(unix_name_problem("ann", "keeladmin"), None);
        assert_eq!(unix_name_problem("_svc-2", "keeladmin"), None);
        for bad in ["Ann", "1ann", "", "a b", "ann@x", &"a".repeat(33)] {
            assert!(unix_name_problem(bad, "keeladmin").is_some(), "{bad:?}");
        }
        for taken in ["root", "sudo", "keeladmin", "systemd-network", "keel-users"] {
            assert!(unix_name_problem(taken, "keeladmin").is_some(), "{taken:?}");
        }
    }
}
