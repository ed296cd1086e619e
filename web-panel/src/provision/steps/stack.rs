//! The second half of a stack server type's `configure` run
//! (`services::catalog::Stack`): after the panel's own playbook, the
//! stack's playbook (a file beside the panel's) runs against the one
//! server, with the server in the stack's inventory groups and the stack's
//! secrets as extra variables.
//!
//! Secrets are generated once per server — 32 random letters and digits —
//! and kept in `service_secrets` sealed with the panel's key (the purpose
//! names the server and the variable, so a sealed value moved to another
//! row does not open). They reach the engine in memory only, as the
//! database root password does; a later run (a re-converge) gets the same
//! values, so the stack's services keep working.

use std::path::PathBuf;

use super::role_run::Then;
use crate::automation::secrets::Sealer;
use crate::db::tx_conn;
use crate::provision::{ProvisionError, Provisioner};
use crate::services::catalog::Stack;
use crate::{execute, scalar};

/// Letters and digits of a generated secret.
const SECRET_LEN: usize = 32;

/// The stack of service `id`'s server type, if it has one.
pub(super) async fn stack_of(p: &Provisioner, id: i64) -> Result<Option<Stack>, ProvisionError> {
    let mut rc = p.db.read().await?;
    let text = scalar!(
        &mut rc.conn(),
        String,
        "SELECT t.stack FROM services s JOIN server_types t ON t.id = s.server_type_id \
         WHERE s.id = $1",
        id
    )?;
    Ok(text.as_deref().and_then(Stack::of_column))
}

/// What the stack's run needs: its playbook beside the panel's, its
/// groups, and its secrets (made now for a server that has none yet).
pub(super) async fn then_run(
    p: &Provisioner,
    id: i64,
    stack: &Stack,
) -> Result<Then, ProvisionError> {
    let dir = p
        .config
        .playbook
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let playbook = dir.join(&stack.playbook);
    if !playbook.is_file() {
        return Err(ProvisionError::Playbook(format!(
            "the stack's playbook {} does not exist",
            playbook.display()
        )));
    }
    let mut extra = keel::vars::VarMap::new();
    for name in &stack.secrets {
        let value = secret(p, id, name).await?;
        extra.insert(name.clone(), keel::vars::unsafe_string(&value));
    }
    Ok(Then {
        playbook,
        extra_vars: extra,
        groups: stack.groups.clone(),
    })
}

/// The purpose a secret is sealed for.
fn purpose(id: i64, name: &str) -> String {
    format!("service-secret:{id}:{name}")
}

/// Secret `name` of service `id`: the stored one, or a new one stored
/// first. Two runs racing keep the first one stored.
async fn secret(p: &Provisioner, id: i64, name: &str) -> Result<String, ProvisionError> {
    let sealer = Sealer::for_data_dir(&p.data_dir)
        .map_err(|e| ProvisionError::Playbook(format!("the panel's key: {e}")))?;
    let aad = purpose(id, name);
    let stored = {
        let mut rc = p.db.read().await?;
        scalar!(
            &mut rc.conn(),
            String,
            "SELECT sealed FROM service_secrets WHERE service_id = $1 AND name = $2",
            id,
            name
        )?
    };
    let sealed = match stored {
        Some(s) => s,
        None => {
            let fresh = generate()?;
            let sealed = sealer
                .seal(&aad, &fresh)
                .map_err(|e| ProvisionError::Playbook(format!("sealing {name}: {e}")))?;
            let mut tx = p.db.begin().await?;
            let mut conn = tx_conn(&mut tx);
            execute!(
                &mut conn,
                "INSERT INTO service_secrets (service_id, name, sealed) VALUES ($1, $2, $3) \
                 ON CONFLICT (service_id, name) DO NOTHING",
                id,
                name,
                sealed.as_str()
            )?;
            let kept = scalar!(
                &mut conn,
                String,
                "SELECT sealed FROM service_secrets WHERE service_id = $1 AND name = $2",
                id,
                name
            )?
            .unwrap_or(sealed);
            tx.commit().await?;
            kept
        }
    };
    sealer
        .open(&aad, &sealed)
        .map(|s| s.expose().to_string())
        .map_err(|e| ProvisionError::Playbook(format!("opening {name}: {e}")))
}

/// 32 random letters and digits.
fn generate() -> Result<String, ProvisionError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(SECRET_LEN);
    let mut buf = [0u8; 64];
    while out.len() < SECRET_LEN {
        getrandom::getrandom(&mut buf)
            .map_err(|e| ProvisionError::Playbook(format!("random: {e}")))?;
        // 62 × 4 = 248: bytes from 248 up are dropped, so every character
        // is equally likely.
        for b in buf {
            if out.len() < SECRET_LEN && b < 248 {
                out.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_32_letters_and_digits_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), SECRET_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }
}
