//! Users' SSH public keys. A key is parsed with the `ssh-key` crate before
//! it is stored, and shown with its SHA-256 fingerprint as `ssh-keygen -l`
//! prints it. Adding or removing a key queues an `access` job for every
//! server the user may log in to (`services::access`).

use ssh_key::{HashAlg, PublicKey};

use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::services::access;
use crate::services::model::SshKey;
use crate::{execute, fetch_all, fetch_opt};

const COLS: &str = "id, user_id, name, public_key, fingerprint, created_at";

/// Parses an OpenSSH public key line and returns it normalised (algorithm
/// and key, with the comment) and its fingerprint.
pub fn parse_public_key(line: &str) -> Result<(String, String), PanelError> {
    let key = PublicKey::from_openssh(line.trim()).map_err(|e| {
        PanelError::invalid("public_key", format!("not an OpenSSH public key: {e}"))
    })?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let text = key
        .to_openssh()
        .map_err(|e| PanelError::invalid("public_key", format!("cannot encode the key: {e}")))?;
    Ok((text, fingerprint))
}

pub async fn list(db: &Db, who: &Principal) -> Result<Vec<SshKey>, PanelError> {
    let mut rc = db.read().await?;
    Ok(fetch_all!(
        &mut rc.conn(),
        SshKey,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM ssh_keys WHERE user_id = $1 ORDER BY id"
        )),
        who.user_id
    )?)
}

pub async fn add(db: &Db, who: &Principal, name: &str, line: &str) -> Result<SshKey, PanelError> {
    let (text, fingerprint) = parse_public_key(line)?;
    let name = if name.trim().is_empty() {
        PublicKey::from_openssh(&text)
            .map(|k| k.comment().to_string())
            .unwrap_or_default()
    } else {
        name.trim().to_string()
    };
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let key = fetch_opt!(
        &mut conn,
        SshKey,
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO ssh_keys (user_id, name, public_key, fingerprint, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, fingerprint) DO NOTHING RETURNING {COLS}"
        )),
        who.user_id,
        name.as_str(),
        text.as_str(),
        fingerprint.as_str(),
        db.now()
    )?
    .ok_or_else(|| PanelError::Conflict(format!("you already have the key {fingerprint}")))?;
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("ssh_key.add", "ssh_key", key.id).after(&key),
    )
    .await?;
    access::sync_user(&mut tx, who, who.user_id).await?;
    tx.commit().await?;
    Ok(key)
}

pub async fn remove(db: &Db, who: &Principal, key_id: i64) -> Result<(), PanelError> {
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let before = fetch_opt!(
        &mut conn,
        SshKey,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM ssh_keys WHERE id = $1 AND user_id = $2"
        )),
        key_id,
        who.user_id
    )?
    .ok_or(PanelError::NotFound("ssh key"))?;
    execute!(&mut conn, "DELETE FROM ssh_keys WHERE id = $1", key_id)?;
    audit::record(
        &mut conn,
        db.now(),
        who,
        Change::new("ssh_key.remove", "ssh_key", key_id).before(&before),
    )
    .await?;
    access::sync_user(&mut tx, who, who.user_id).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // `ssh-keygen -l -E sha256` on this key prints this fingerprint.
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH user@example";
        let (text, fp) = parse_public_key(line).unwrap();
        assert_eq!(fp, "SHA256:4dAX5WVUziy1Syy1iPHTuqm9GHR3uu2VvxZ9Al0IfxM");
        assert_eq!(text, line);
        assert!(parse_public_key("ssh-ed25519 not-base64").is_err());
        assert!(parse_public_key("").is_err());
    }
}
