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

/// Longest key name (and key comment).
pub const KEY_NAME_MAX: usize = 100;

/// The key types OpenSSH writes in a `.pub` file.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

const NOT_A_KEY: &str =
    "not an OpenSSH public key: expected a type such as ssh-ed25519 followed by base64 data";

/// Why `line` is not a public key, in words a person can act on (the
/// parser's own errors, such as "length invalid", say nothing to them).
fn key_problem(line: &str) -> String {
    let text = line.trim();
    if text.is_empty() {
        return "paste your public key: one line such as ssh-ed25519 AAAA… you@laptop".into();
    }
    if text.contains("PRIVATE KEY") {
        return "this is a private key: never paste it anywhere; paste the public key (the .pub file) instead".into();
    }
    if text.starts_with("---- BEGIN SSH2") || text.starts_with("-----BEGIN") {
        return "this is not in OpenSSH's format: convert it with `ssh-keygen -i -f FILE` and paste the line it prints".into();
    }
    if text.lines().count() > 1 {
        return "paste one key, on one line".into();
    }
    let mut words = text.split_whitespace();
    let kind = words.next().unwrap_or("");
    if !KEY_TYPES.contains(&kind) {
        let shown: String = kind.chars().take(40).collect();
        return format!("{NOT_A_KEY}; {shown:?} is not a key type");
    }
    match words.next() {
        None => format!("{NOT_A_KEY}; the base64 data after {kind} is missing"),
        Some(_) => format!("{NOT_A_KEY}; the base64 data is damaged or cut short"),
    }
}

/// Parses an OpenSSH public key line and returns it normalised (algorithm
/// and key, with the comment) and its fingerprint. Refusals name
/// `public_key` and say what is wrong.
pub fn parse_public_key(line: &str) -> Result<(String, String), PanelError> {
    let key = PublicKey::from_openssh(line.trim())
        .map_err(|_| PanelError::invalid("public_key", key_problem(line)))?;
    if key.comment().to_string().chars().count() > KEY_NAME_MAX {
        return Err(PanelError::invalid(
            "public_key",
            format!("the key's comment (after the base64 data) has more than {KEY_NAME_MAX} characters; shorten it"),
        ));
    }
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
        let comment = PublicKey::from_openssh(&text)
            .map(|k| k.comment().to_string())
            .unwrap_or_default();
        // A comment that is no good name leaves the key unnamed rather
        // than refusing a key the user did not name.
        match crate::domain::check_name("name", &comment, KEY_NAME_MAX) {
            Ok(n) => n.to_string(),
            Err(_) => String::new(),
        }
    } else {
        crate::domain::check_name("name", name, KEY_NAME_MAX)?.to_string()
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

    fn message(line: &str) -> String {
        match parse_public_key(line) {
            Err(PanelError::Invalid { field, message }) => {
                assert_eq!(field, "public_key");
                message
            }
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(
            message("hello world").starts_with(NOT_A_KEY),
            "{}",
            message("hello")
        );
        assert!(message("hello").contains("\"hello\" is not a key type"));
        assert!(message("ssh-ed25519").contains("base64 data after ssh-ed25519 is missing"));
        assert!(
            message("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R").contains("damaged or cut short")
        );
        assert!(message("").starts_with("paste your public key"));
        assert!(message("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n").contains("private key"));
        let long = format!(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH {}",
            "x".repeat(101)
        );
        assert!(message(&long).contains("comment"));
        for m in [message("hello"), message("ssh-ed25519 AAAA")] {
            assert!(
                !m.contains("length invalid") && !m.contains("invalid label"),
                "{m}"
            );
        }
    }
}
