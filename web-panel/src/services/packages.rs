//! System packages: platform admins curate the Debian packages site admins
//! may install (`allowed_packages`, each with a description); a site admin
//! picks some of them for a server (`service_packages`), and the server's
//! `packages` job (`provision/steps/packages.rs`, `roles/mwspackages`)
//! installs them and removes the ones it installed that are no longer
//! picked. A name outside the allowed list is refused (422 on `packages`),
//! whether it comes from the API or the page. Every change is audited and
//! queues its job in the same transaction; a server that is not ready yet
//! gets its packages when `configure` makes it ready ([`queue_if_any`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::PackagesJob;
use crate::lifecycle::Status;
use crate::queue;
use crate::services::sites::require_admin;
use crate::store::Tx;
use crate::{execute, fetch_all, fetch_opt, scalar};

/// A package site admins may pick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AllowedPackage {
    pub id: i64,
    /// The Debian package name.
    pub name: String,
    /// What it is for, as the pages show it.
    pub description: String,
}

/// The body of `POST /packages`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAllowedPackage {
    pub name: String,
    pub description: String,
}

/// The body of `PUT /services/{id}/packages`, and its answer: every
/// package the server should have (the ones left out are removed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPackages {
    #[serde(default)]
    pub packages: Vec<String>,
}

/// Why `name` is no Debian package name, if it is not one: lower-case
/// letters, digits, `+`, `-` and `.`, at least two characters, starting
/// with a letter or digit (Debian policy 5.6.1).
pub fn package_name_problem(name: &str) -> Option<&'static str> {
    let ok = name.len() >= 2
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        });
    (!ok).then_some(
        "is no Debian package name (lower-case letters, digits, '+', '-', '.'; two characters or more)",
    )
}

/// The allowed list, for anyone signed in (site admins pick from it).
pub async fn allowed(db: &Db) -> Result<Vec<AllowedPackage>, PanelError> {
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        AllowedPackage,
        "SELECT id, name, description FROM allowed_packages ORDER BY name"
    )?)
}

/// Adds a package to the allowed list (platform admins).
pub async fn allow(
    db: &Db,
    who: &Principal,
    new: &NewAllowedPackage,
) -> Result<AllowedPackage, PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins curate the allowed packages".into(),
        ));
    }
    let name = new.name.trim();
    if let Some(p) = package_name_problem(name) {
        return Err(PanelError::invalid("name", format!("{name:?} {p}")));
    }
    let description = new.description.trim();
    if description.is_empty() {
        return Err(PanelError::invalid(
            "description",
            "say what the package is for",
        ));
    }
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let row = fetch_opt!(
        &mut conn,
        AllowedPackage,
        "INSERT INTO allowed_packages (name, description, created_at) VALUES ($1, $2, $3) \
         RETURNING id, name, description",
        name,
        description,
        now
    )
    .map_err(PanelError::from)
    .map_err(|e| {
        if e.is_unique_violation() {
            PanelError::Conflict(format!("{name} is already in the list"))
        } else {
            e
        }
    })?
    .ok_or_else(|| PanelError::Internal("INSERT … RETURNING gave no row".into()))?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("package.allow", "package", row.id).after(&row),
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// Takes a package off the allowed list (platform admins); refused while
/// a server has it, since taking it off would leave it there unmanaged.
pub async fn disallow(db: &Db, who: &Principal, id: i64) -> Result<(), PanelError> {
    if !who.is_admin {
        return Err(PanelError::Forbidden(
            "only platform admins curate the allowed packages".into(),
        ));
    }
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let row = fetch_opt!(
        &mut conn,
        AllowedPackage,
        "SELECT id, name, description FROM allowed_packages WHERE id = $1",
        id
    )?
    .ok_or(PanelError::NotFound("package"))?;
    let users = scalar!(
        &mut conn,
        i64,
        "SELECT COUNT(*) FROM service_packages p JOIN services s ON s.id = p.service_id \
         WHERE p.package_id = $1 AND s.status <> 'deleted'",
        id
    )?
    .unwrap_or(0);
    if users > 0 {
        return Err(PanelError::Conflict(format!(
            "{} is picked on {users} server(s); their site admins remove it first",
            row.name
        )));
    }
    execute!(
        &mut conn,
        "DELETE FROM service_packages WHERE package_id = $1",
        id
    )?;
    execute!(&mut conn, "DELETE FROM allowed_packages WHERE id = $1", id)?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("package.disallow", "package", id).before(&row),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The packages picked for one server (`Some`) or for every server, by
/// server, each list in name order (the dynamic inventory's
/// `keel_packages`).
pub async fn by_service(
    conn: &mut Conn<'_>,
    service_id: Option<i64>,
) -> Result<BTreeMap<i64, Vec<String>>, PanelError> {
    let rows = fetch_all!(
        conn,
        (i64, String),
        "SELECT p.service_id, a.name FROM service_packages p \
         JOIN allowed_packages a ON a.id = p.package_id \
         WHERE ($1 IS NULL OR p.service_id = $1) ORDER BY p.service_id, a.name",
        service_id
    )?;
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (sid, name) in rows {
        out.entry(sid).or_default().push(name);
    }
    Ok(out)
}

/// The packages picked for one server, by name.
pub async fn of_server(conn: &mut Conn<'_>, service_id: i64) -> Result<Vec<String>, PanelError> {
    Ok(by_service(conn, Some(service_id))
        .await?
        .remove(&service_id)
        .unwrap_or_default())
}

/// The site and status of a server `who` manages (site admins, platform
/// admins); SSH-only users are refused, anyone else learns nothing.
async fn managed(
    conn: &mut Conn<'_>,
    who: &Principal,
    id: i64,
) -> Result<(i64, Status), PanelError> {
    let (site, status) = fetch_opt!(
        conn,
        (i64, Status),
        "SELECT site_id, status FROM services WHERE id = $1",
        id
    )?
    .ok_or(PanelError::NotFound("server"))?;
    match require_admin(conn, who, site).await {
        Ok(()) => Ok((site, status)),
        Err(PanelError::NotFound(_)) => Err(PanelError::NotFound("server")),
        Err(PanelError::Forbidden(_)) => Err(PanelError::Forbidden(
            "SSH-only users cannot manage this server in the panel".into(),
        )),
        Err(e) => Err(e),
    }
}

/// The packages picked for a server its site admins manage.
pub async fn list(db: &Db, who: &Principal, service_id: i64) -> Result<Vec<String>, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    managed(&mut conn, who, service_id).await?;
    of_server(&mut conn, service_id).await
}

/// Sets the packages of a server to exactly `want` (names from the
/// allowed list) and queues the run that applies them.
pub async fn set(
    db: &Db,
    who: &Principal,
    service_id: i64,
    want: &ServerPackages,
) -> Result<Vec<String>, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let (_, status) = managed(&mut conn, who, service_id).await?;
    if status.rules().leaving {
        return Err(PanelError::Conflict(format!(
            "the server is {status}; its packages can no longer change"
        )));
    }
    let allowed = fetch_all!(
        &mut conn,
        (i64, String),
        "SELECT id, name FROM allowed_packages"
    )?;
    let mut ids = Vec::new();
    for name in &want.packages {
        let name = name.trim();
        match allowed.iter().find(|(_, n)| n == name) {
            Some((id, _)) if !ids.contains(id) => ids.push(*id),
            Some(_) => {}
            None => {
                return Err(PanelError::invalid(
                    "packages",
                    format!("{name:?} is not in the list of allowed packages"),
                ))
            }
        }
    }
    let before = of_server(&mut conn, service_id).await?;
    execute!(
        &mut conn,
        "DELETE FROM service_packages WHERE service_id = $1",
        service_id
    )?;
    for id in ids {
        execute!(
            &mut conn,
            "INSERT INTO service_packages (service_id, package_id) VALUES ($1, $2)",
            service_id,
            id
        )?;
    }
    let after = of_server(&mut conn, service_id).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.packages", "service", service_id)
            .before(&json!({ "packages": before }))
            .after(&json!({ "packages": after })),
    )
    .await?;
    if matches!(status, Status::Ready | Status::Configuring) {
        queue::enqueue(&mut tx, PackagesJob { service_id }.spec(who.actor_id())).await?;
    }
    tx.commit().await?;
    Ok(after)
}

/// Queues a `packages` job for a server that has packages picked:
/// `configure` calls it in the transaction that makes the server ready.
pub async fn queue_if_any(tx: &mut Tx, service_id: i64) -> Result<(), PanelError> {
    let mut conn = tx_conn(tx);
    if !of_server(&mut conn, service_id).await?.is_empty() {
        queue::enqueue(tx, PackagesJob { service_id }.spec(None)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_debian_names() {
        for ok in ["tree", "libapache2-mod-php", "g++", "python3.11", "0ad"] {
            assert_eq!(package_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a",
            "Tree",
            "-x",
            "tree;rm",
            "a b",
            "+x",
            "tree/bookworm",
        ] {
            assert!(package_name_problem(bad).is_some(), "{bad:?} passed");
        }
    }
}
