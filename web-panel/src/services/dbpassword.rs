//! The database root password of a server: a site admin asks for a new
//! one; the panel makes it up (24 random letters and digits), answers it
//! to that admin once, and queues the server's `db_password` job
//! (`provision/steps/db_password.rs`), whose role run (`roles/mwsmariadb`)
//! sets it as MariaDB's root@localhost password and writes it to a
//! root-only `/root/.my.cnf`.
//!
//! Between the request and the run the password waits in
//! `db_password_changes`, sealed with the panel's key
//! (`automation::secrets`), so a retried or resumed job sets the same
//! password the admin was shown; the run deletes the row when it is done
//! (or has failed for good), so afterwards the password is only on the
//! server. It never enters a job payload, an audit row, the job log or a
//! log line ([`NewDbPassword`] has no `Debug` that shows it).
//!
//! Two requests before a run make one run with the newer password (the row
//! is replaced, the job coalesced per server).

use serde::Serialize;
use serde_json::json;

use crate::audit::{self, Change};
use crate::automation::secrets::{Sealer, Secret};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::DbPasswordJob;
use crate::lifecycle::Status;
use crate::queue;
use crate::services::sites::require_admin;
use crate::{execute, fetch_opt};

/// Letters and digits: nothing a shell, an INI file or SQL would read
/// differently.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LENGTH: usize = 24;

/// What the admin who asked gets back, once: the new password and the job
/// that sets it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NewDbPassword {
    /// The `db_password` job that sets it (follow it on the server page).
    pub job_id: i64,
    /// MariaDB's new root password. Shown this once; the panel keeps no
    /// copy once the job has run.
    pub password: String,
}

impl std::fmt::Debug for NewDbPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDbPassword")
            .field("job_id", &self.job_id)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A new random password: [`LENGTH`] characters of [`ALPHABET`] (about
/// 143 bits), drawn without modulo bias.
pub fn generate() -> Result<Secret, PanelError> {
    let mut out = String::with_capacity(LENGTH);
    let mut buf = [0u8; 64];
    while out.len() < LENGTH {
        getrandom::getrandom(&mut buf)
            .map_err(|e| PanelError::Internal(format!("no randomness: {e}")))?;
        // 248 = 4 × 62: bytes at or above it would favour some characters.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() < LENGTH {
                out.push(ALPHABET[(*b as usize) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(Secret::new(out))
}

/// The associated data a server's sealed password is bound to, so a
/// sealed value copied to another server's row does not open.
fn purpose(service_id: i64) -> String {
    format!("db_root_password:{service_id}")
}

/// The site and status of a server `who` manages, as `services::vhosts`.
async fn managed(conn: &mut Conn<'_>, who: &Principal, id: i64) -> Result<Status, PanelError> {
    let (site, status) = fetch_opt!(
        conn,
        (i64, Status),
        "SELECT site_id, status FROM services WHERE id = $1",
        id
    )?
    .ok_or(PanelError::NotFound("server"))?;
    match require_admin(conn, who, site).await {
        Ok(()) => Ok(status),
        Err(PanelError::NotFound(_)) => Err(PanelError::NotFound("server")),
        Err(PanelError::Forbidden(_)) => Err(PanelError::Forbidden(
            "SSH-only users cannot manage this server in the panel".into(),
        )),
        Err(e) => Err(e),
    }
}

/// Makes up a new root password for a ready server, keeps it sealed until
/// the `db_password` job has set it, and answers it to the caller.
pub async fn change(
    db: &Db,
    sealer: &Sealer,
    who: &Principal,
    service_id: i64,
) -> Result<NewDbPassword, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let status = managed(&mut conn, who, service_id).await?;
    if status != Status::Ready {
        return Err(PanelError::Conflict(format!(
            "the database password is changed on ready servers; this one is {status}"
        )));
    }
    let password = generate()?;
    let sealed = sealer
        .seal(&purpose(service_id), password.expose())
        .map_err(|e| PanelError::Internal(format!("sealing the password: {e}")))?;
    execute!(
        &mut conn,
        "DELETE FROM db_password_changes WHERE service_id = $1",
        service_id
    )?;
    execute!(
        &mut conn,
        "INSERT INTO db_password_changes (service_id, sealed, requested_at) VALUES ($1, $2, $3)",
        service_id,
        &sealed,
        now
    )?;
    let job = queue::enqueue(&mut tx, DbPasswordJob { service_id }.spec(who.actor_id())).await?;
    let mut conn = tx_conn(&mut tx);
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.db_password_change", "service", service_id)
            .after(&json!({ "job_id": job.job_id })),
    )
    .await?;
    tx.commit().await?;
    Ok(NewDbPassword {
        job_id: job.job_id,
        password: password.expose().to_string(),
    })
}

/// The password waiting to be set on a server, with its sealed text (which
/// [`forget`] is given back, so it drops only what this run set).
pub async fn pending(
    db: &Db,
    sealer: &Sealer,
    service_id: i64,
) -> Result<Option<(Secret, String)>, PanelError> {
    let mut rc = db.read().await?;
    let Some((sealed,)) = fetch_opt!(
        &mut rc.conn(),
        (String,),
        "SELECT sealed FROM db_password_changes WHERE service_id = $1",
        service_id
    )?
    else {
        return Ok(None);
    };
    let secret = sealer
        .open(&purpose(service_id), &sealed)
        .map_err(|e| PanelError::Internal(format!("opening the waiting password: {e}")))?;
    Ok(Some((secret, sealed)))
}

/// Drops the waiting password `sealed` (set, or given up); a newer one a
/// request stored meanwhile stays for its own run.
pub async fn forget(conn: &mut Conn<'_>, service_id: i64, sealed: &str) -> Result<(), PanelError> {
    execute!(
        conn,
        "DELETE FROM db_password_changes WHERE service_id = $1 AND sealed = $2",
        service_id,
        sealed
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_plain_and_different() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.expose().len(), LENGTH);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose(), b.expose());
        let shown = format!(
            "{:?}",
            NewDbPassword {
                job_id: 1,
                password: a.expose().into()
            }
        );
        assert!(!shown.contains(a.expose()), "{shown}");
    }
}
