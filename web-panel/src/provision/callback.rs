//! The VM-ready callback: a new VM's cloud-init `phone_home` posts to
//! `/api/v1/callback/vm-ready?vm=NAME&gen=N&sig=HEX` when its first boot
//! is done. There is no session: the HMAC is the authentication.
//!
//! - `sig` is HMAC-SHA256 under the VM's own random secret of `NAME|N`,
//!   checked in constant time (`Mac::verify_slice`). A wrong signature and
//!   an unknown VM get the same answer, so the route reveals nothing.
//! - `N` is the VM's seed generation. A callback for an earlier generation
//!   (the URL of a VM that was since deleted and re-created), a second one
//!   for the current generation, and one for a service that is no longer
//!   waiting, change nothing.
//! - The signature is checked on a read connection; only an authentic
//!   callback opens a write transaction, which decides again on what it
//!   sees (a conditional UPDATE on the generation and `callback_at`).
//! - The accepted callback marks itself received and enqueues `configure`
//!   in one transaction. One that arrives while the service is still
//!   `creating_vm` (the VM booted before the provision step committed) is
//!   recorded only; that step then queues `configure` itself, because
//!   cloud-init phones home once per instance and would not call again.
//!
//! The HTTP shell lives in `api/`; this file knows no HTTP.

use std::net::IpAddr;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::ConfigureJob;
use crate::lifecycle::{transition, Status, Step};
use crate::queue;
use crate::{execute, fetch_opt};

type HmacSha256 = hmac::Hmac<sha2_11::Sha256>;

/// The query string cloud-init sends back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallbackQuery {
    pub vm: Option<String>,
    pub gen: Option<i64>,
    pub sig: Option<String>,
}

/// What an authentic callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CallbackOutcome {
    /// First callback of the current generation: `configure` is queued.
    Accepted { service_id: i64, job_id: i64 },
    /// Already received for this generation: nothing changed.
    Duplicate { service_id: i64 },
    /// First callback, received while the VM is still being created: it is
    /// recorded, and the provision step queues `configure` when it commits.
    Early { service_id: i64 },
}

/// A fresh per-VM secret (32 random bytes, hex).
pub fn new_secret() -> Result<String, PanelError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| PanelError::Internal(format!("random: {e}")))?;
    Ok(hex::encode(b))
}

fn mac(secret_hex: &str, vm: &str, generation: i64) -> Option<HmacSha256> {
    let key = hex::decode(secret_hex).ok()?;
    let mut m = HmacSha256::new_from_slice(&key).ok()?;
    m.update(format!("{vm}|{generation}").as_bytes());
    Some(m)
}

/// The signature a VM's callback URL carries.
pub fn sign(secret_hex: &str, vm: &str, generation: i64) -> String {
    mac(secret_hex, vm, generation)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Checks a signature in constant time.
pub fn verify(secret_hex: &str, vm: &str, generation: i64, sig_hex: &str) -> bool {
    let (Some(m), Ok(sig)) = (mac(secret_hex, vm, generation), hex::decode(sig_hex.trim())) else {
        return false;
    };
    m.verify_slice(&sig).is_ok()
}

/// The full phone-home URL of a VM.
pub fn callback_url(base: &str, secret_hex: &str, vm: &str, generation: i64) -> String {
    format!(
        "{}/api/v1/callback/vm-ready?vm={vm}&gen={generation}&sig={}",
        base.trim_end_matches('/'),
        sign(secret_hex, vm, generation)
    )
}

#[derive(sqlx::FromRow)]
struct Target {
    service_id: i64,
    callback_secret: String,
    generation: i64,
    callback_at: Option<i64>,
    status: Status,
    ipv4: Option<String>,
    ipv6: Option<String>,
}

fn forbidden() -> PanelError {
    PanelError::Forbidden("the callback signature is not valid".into())
}

/// Handles one callback. `peer` is the TCP source; with `check_source` it
/// must be the VM's allocated IPv4 or IPv6 address.
pub async fn vm_ready(
    db: &Db,
    q: &CallbackQuery,
    peer: IpAddr,
    check_source: bool,
) -> Result<CallbackOutcome, PanelError> {
    let (Some(vm), Some(generation), Some(sig)) = (q.vm.as_deref(), q.gen, q.sig.as_deref()) else {
        return Err(PanelError::invalid(
            "vm",
            "the callback needs vm, gen and sig query parameters",
        ));
    };
    // Authenticate on a read connection: the write transaction (on SQLite
    // the single writer, BEGIN IMMEDIATE) is taken only for a callback whose
    // MAC checks out, so unauthenticated POSTs cannot hold the write lock.
    let target = {
        let mut rc = db.read().await?;
        let mut conn = rc.conn();
        fetch_opt!(
            &mut conn,
            Target,
            "SELECT p.service_id, p.callback_secret, p.generation, p.callback_at, s.status, a.ipv4, a.ipv6 \
             FROM vm_provisioning p JOIN services s ON s.id = p.service_id \
             LEFT JOIN pool_addresses a ON a.service_id = p.service_id WHERE p.vm_name = $1",
            vm
        )?
    };
    // Verify against a throw-away secret when the VM is unknown, so both
    // cases cost the same.
    let secret = target
        .as_ref()
        .map(|t| t.callback_secret.clone())
        .unwrap_or_else(|| "00".repeat(32));
    let authentic = verify(&secret, vm, generation, sig);
    let Some(t) = target.filter(|_| authentic) else {
        tracing::warn!(vm, %peer, "callback with a bad signature rejected");
        return Err(forbidden());
    };
    if check_source {
        let allowed = [t.ipv4.as_deref(), t.ipv6.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .any(|a| a == peer);
        if !allowed {
            tracing::warn!(vm, %peer, "callback from outside the VM's addresses rejected");
            return Err(PanelError::Forbidden(
                "callbacks are accepted only from the VM's own address".into(),
            ));
        }
    }
    check_waiting(t.generation, t.callback_at, t.status, generation)?;
    if t.callback_at.is_some() {
        return Ok(CallbackOutcome::Duplicate {
            service_id: t.service_id,
        });
    }

    // Authentic: now take the write transaction and decide again on what it
    // sees, since the read above may already be stale (a re-created VM, a
    // second callback, the provision step committing `installing_os`).
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let Some((cur_generation, cur_callback_at, cur_status)) = fetch_opt!(
        &mut conn,
        (i64, Option<i64>, Status),
        "SELECT p.generation, p.callback_at, s.status \
         FROM vm_provisioning p JOIN services s ON s.id = p.service_id WHERE p.service_id = $1",
        t.service_id
    )?
    else {
        return Err(forbidden());
    };
    check_waiting(cur_generation, cur_callback_at, cur_status, generation)?;
    let marked = execute!(
        &mut conn,
        "UPDATE vm_provisioning SET callback_at = $1, callback_generation = $2, updated_at = $1 \
         WHERE service_id = $3 AND callback_at IS NULL AND generation = $2",
        now,
        generation,
        t.service_id
    )?;
    if marked != 1 {
        return Ok(CallbackOutcome::Duplicate {
            service_id: t.service_id,
        });
    }
    if cur_status == Status::CreatingVm {
        // The VM booted before the provision step recorded it: remember the
        // callback (cloud-init phones home once per instance); that step's
        // final commit sees it and queues `configure` itself.
        tx.commit().await?;
        tracing::info!(
            vm,
            service_id = t.service_id,
            "VM called back before the provision step finished; recorded"
        );
        return Ok(CallbackOutcome::Early {
            service_id: t.service_id,
        });
    }
    // The OS-ready wait owned the service until now; from here the
    // configure step does.
    if !transition(
        &mut conn,
        now,
        &Principal::system(),
        t.service_id,
        &Status::owned_by(Step::OsReady),
        Status::Configuring,
        None,
    )
    .await?
    {
        return Err(PanelError::Conflict(format!(
            "the service is {cur_status}; it is not waiting for a callback"
        )));
    }
    let configure = ConfigureJob {
        service_id: t.service_id,
    };
    let job = queue::enqueue(&mut tx, configure.spec(None)).await?;
    tx.commit().await?;
    tracing::info!(
        vm,
        service_id = t.service_id,
        "VM called back; configure queued"
    );
    Ok(CallbackOutcome::Accepted {
        service_id: t.service_id,
        job_id: job.job_id,
    })
}

/// Whether an authentic callback for `generation` is one the service waits
/// for: the current generation, while the VM is being created or its OS
/// installs. A callback already recorded passes (it is a duplicate).
fn check_waiting(
    current: i64,
    callback_at: Option<i64>,
    status: Status,
    generation: i64,
) -> Result<(), PanelError> {
    if generation != current {
        return Err(PanelError::Conflict(format!(
            "callback for generation {generation}; the VM is at generation {current}"
        )));
    }
    if callback_at.is_none() && !status.rules().awaits_callback {
        return Err(PanelError::Conflict(format!(
            "the service is {status}; it is not waiting for a callback"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_binds_name_and_generation() {
        let secret = "11".repeat(32);
        let sig = sign(&secret, "keel-1", 1);
        assert_eq!(sig.len(), 64);
        assert!(verify(&secret, "keel-1", 1, &sig));
        assert!(!verify(&secret, "keel-1", 2, &sig));
        assert!(!verify(&secret, "keel-2", 1, &sig));
        assert!(!verify(&"22".repeat(32), "keel-1", 1, &sig));
        assert!(!verify(&secret, "keel-1", 1, "zz"));
        assert!(!verify(&secret, "keel-1", 1, &sig[..62]));
    }
}
