//! The `certificate` job: a server's vhost certificates that wait for work
//! (`services::certificates`), coalesced per server.
//!
//! 1. Each certificate `requested` from the ACME server (`acme.rs`): an
//!    order for the vhost's name and aliases; a role run of
//!    `acme.challenge_playbook` (`roles/mwsvhosts`, `tasks_from:
//!    challenge`) writes the HTTP-01 answers where every vhost serves
//!    `/.well-known/acme-challenge/`; the ACME server validates through the
//!    VM's Apache; the order is finalised with a new key. The chain is
//!    checked like an upload (the key matches, the names cover the vhost)
//!    and stored `pending`, its key with it, in one transaction (audited
//!    `certificate.issued`), so a failed installation is retried without a
//!    second order.
//! 2. Every `pending` certificate (issued, or uploaded) is installed by one
//!    role run of `sites.vhosts_playbook` given the extra variable
//!    `keel_tls_install` (name, chain, key, in memory for this run only;
//!    its tasks are `no_log`): the files under `/etc/keel/tls/`
//!    (the key 0600, root's), the vhost's `:443` site, Apache reloaded.
//!    Then each row becomes `installed` and its key is cleared, in one
//!    transaction with its audit row (`certificate.installed`).
//!
//! A server that is configuring waits (retryable); one that is not ready
//! otherwise needs nothing. Failures are written on the row (the page shows
//! them) and retried with the default policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::Value;
use serde_json::json;

use super::kit::{read_state, ProvRow};
use super::role_run::run_roles_with;
use crate::acme::{AcmeClient, Http01};
use crate::audit::{self, Change};
use crate::certs;
use crate::db::tx_conn;
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{CertificateJob, FlowJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::model::{CertState, Vhost};
use crate::services::vhosts;
use crate::{execute, fetch_all};

/// `certificate`: order and install a server's vhost certificates.
pub struct CertificateStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for CertificateStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = CertificateJob::decode(ctx.payload())?.service_id;
        apply(&self.0, id, &ctx)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

/// A `pending` certificate, as the installation needs it.
#[derive(sqlx::FromRow)]
struct Pending {
    vhost_id: i64,
    cert_pem: String,
    pending_key: String,
}

async fn apply(p: &Provisioner, id: i64, ctx: &JobContext) -> Result<(), ProvisionError> {
    let (Some(svc), Some(row)) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    match svc.status {
        Status::Ready => {}
        Status::Configuring => {
            return Err(ProvisionError::NotReady(
                "the server is still configuring".into(),
            ))
        }
        _ => return Ok(()),
    }
    let vhosts = {
        let mut rc = p.db.read().await?;
        vhosts::of_service(&mut rc.conn(), id).await?
    };
    let requested: Vec<&Vhost> = vhosts
        .iter()
        .filter(|v| {
            v.certificate
                .as_ref()
                .is_some_and(|c| c.state == CertState::Requested)
        })
        .collect();
    for vhost in requested {
        if let Err(e) = order(p, id, &row, vhost, ctx).await {
            record_error(p, vhost.id, &e.to_string()).await;
            return Err(e);
        }
    }
    if let Err(e) = install(p, id, &row, &vhosts, ctx).await {
        record_error_pending(p, id, &e.to_string()).await;
        return Err(e);
    }
    Ok(())
}

/// Orders the vhost's certificate and stores it `pending`.
async fn order(
    p: &Provisioner,
    id: i64,
    row: &ProvRow,
    vhost: &Vhost,
    ctx: &JobContext,
) -> Result<(), ProvisionError> {
    let names = vhost.names();
    // The SSRF guard: the directory's host must be somewhere the panel may
    // connect (checked after resolution; the ACME client resolves again).
    p.outbound
        .check_url(p.acme.directory_url.trim())
        .await
        .map_err(|e| ProvisionError::Certificate(format!("acme.directory_url: {e}")))?;
    let client = AcmeClient::connect(&p.acme, &p.data_dir).await?;
    let pending = client.order(&names).await?;
    if !pending.challenges.is_empty() {
        let log = queue::log::JobLog::open(ctx)
            .await
            .map_err(PanelError::from)?;
        log.message(format!(
            "HTTP-01 challenges for {} from {}",
            names.join(", "),
            p.acme.directory_url
        ));
        let mut vars = keel::vars::VarMap::new();
        vars.insert(
            "keel_acme_challenges".into(),
            challenges_var(&pending.challenges),
        );
        run_roles_with(p, id, row, &p.acme.challenge_playbook, ctx, log, vars).await?;
    }
    let issued = pending.complete().await?;
    let info = certs::parse(&issued.chain_pem)
        .map_err(|e| ProvisionError::Certificate(format!("the ACME server's {e}")))?;
    certs::check_key(&issued.chain_pem, &issued.key_pem)
        .map_err(|e| ProvisionError::Certificate(e.to_string()))?;
    let missing = certs::uncovered(&info, &names);
    if !missing.is_empty() {
        return Err(ProvisionError::Certificate(format!(
            "the ACME server's certificate does not cover {}",
            missing.join(", ")
        )));
    }

    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let stored = serde_json::to_string(&info.names).unwrap_or_else(|_| "[]".into());
    // Only while it is still the ACME request the job read: a site admin
    // who uploaded a certificate meanwhile keeps theirs.
    let n = execute!(
        &mut conn,
        "UPDATE certificates SET state = 'pending', names = $1, issuer = $2, serial = $3, \
           not_before = $4, not_after = $5, cert_pem = $6, pending_key = $7, error = NULL, \
           updated_at = $8 \
         WHERE vhost_id = $9 AND source = 'acme' AND state = 'requested'",
        stored.as_str(),
        info.issuer.as_str(),
        info.serial.as_str(),
        info.not_before,
        info.not_after,
        issued.chain_pem.as_str(),
        issued.key_pem.as_str(),
        now,
        vhost.id
    )?;
    if n > 0 {
        audit::record(
            &mut conn,
            now,
            &Principal::system(),
            Change::new("certificate.issued", "vhost", vhost.id).after(&json!({
                "job_id": ctx.job.id,
                "names": info.names,
                "issuer": info.issuer,
                "serial": info.serial,
                "not_after": info.not_after,
            })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A list of objects of strings as an extra variable; every string is
/// `!unsafe`, so nothing the ACME server or an upload sent is templated.
fn plain_list(items: Vec<Vec<(&str, &str)>>) -> Value {
    Value::from(
        items
            .into_iter()
            .map(|fields| {
                Value::from(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), keel::vars::unsafe_string(v)))
                        .collect::<BTreeMap<String, Value>>(),
                )
            })
            .collect::<Vec<Value>>(),
    )
}

/// `keel_acme_challenges` for the challenge role: the token (a file name)
/// and what Apache must answer.
fn challenges_var(challenges: &[Http01]) -> Value {
    plain_list(
        challenges
            .iter()
            .map(|c| {
                vec![
                    ("name", c.name.as_str()),
                    ("token", c.token.as_str()),
                    ("content", c.key_authorization.as_str()),
                ]
            })
            .collect(),
    )
}

/// Installs every `pending` certificate of the server in one role run.
async fn install(
    p: &Provisioner,
    id: i64,
    row: &ProvRow,
    vhosts: &[Vhost],
    ctx: &JobContext,
) -> Result<(), ProvisionError> {
    let pending = {
        let mut rc = p.db.read().await?;
        let mut conn = rc.conn();
        fetch_all!(
            &mut conn,
            Pending,
            "SELECT vhost_id, cert_pem, pending_key FROM certificates \
             WHERE service_id = $1 AND state = 'pending' \
               AND cert_pem IS NOT NULL AND pending_key IS NOT NULL ORDER BY vhost_id",
            id
        )?
    };
    let install: Vec<(&Vhost, &Pending)> = pending
        .iter()
        .filter_map(|c| vhosts.iter().find(|v| v.id == c.vhost_id).map(|v| (v, c)))
        .collect();
    if install.is_empty() {
        return Ok(());
    }
    let log = queue::log::JobLog::open(ctx)
        .await
        .map_err(PanelError::from)?;
    let names: Vec<&str> = install.iter().map(|(v, _)| v.name.as_str()).collect();
    log.message(format!(
        "installing the certificates of {}",
        names.join(", ")
    ));
    let mut vars = keel::vars::VarMap::new();
    vars.insert(
        "keel_tls_install".into(),
        plain_list(
            install
                .iter()
                .map(|(v, c)| {
                    vec![
                        ("name", v.name.as_str()),
                        ("cert", c.cert_pem.as_str()),
                        ("key", c.pending_key.as_str()),
                    ]
                })
                .collect(),
        ),
    );
    run_roles_with(p, id, row, &p.sites.vhosts_playbook, ctx, log, vars).await?;

    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    for (v, c) in &install {
        // The row as installed: a newer upload or request since the run
        // read it stays for the next run.
        let n = execute!(
            &mut conn,
            "UPDATE certificates SET state = 'installed', pending_key = NULL, installed_at = $1, \
               error = NULL, updated_at = $1 \
             WHERE vhost_id = $2 AND state = 'pending' AND cert_pem = $3",
            now,
            v.id,
            c.cert_pem.as_str()
        )?;
        if n > 0 {
            audit::record(
                &mut conn,
                now,
                &Principal::system(),
                Change::new("certificate.installed", "vhost", v.id).after(&json!({
                    "job_id": ctx.job.id,
                    "service_id": id,
                })),
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Writes a failed attempt's error on a certificate row, keeping its state.
async fn record_error(p: &Provisioner, vhost_id: i64, message: &str) {
    let result: Result<(), PanelError> = async {
        let now = p.db.now();
        let mut tx = p.db.begin().await?;
        let mut conn = tx_conn(&mut tx);
        execute!(
            &mut conn,
            "UPDATE certificates SET error = $1, updated_at = $2 WHERE vhost_id = $3",
            message,
            now,
            vhost_id
        )?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(vhost_id, error = %e, "recording a certificate error failed");
    }
}

/// [`record_error`] for every certificate of the server waiting to be
/// installed.
async fn record_error_pending(p: &Provisioner, service_id: i64, message: &str) {
    let result: Result<(), PanelError> = async {
        let now = p.db.now();
        let mut tx = p.db.begin().await?;
        let mut conn = tx_conn(&mut tx);
        execute!(
            &mut conn,
            "UPDATE certificates SET error = $1, updated_at = $2 \
             WHERE service_id = $3 AND state = 'pending'",
            message,
            now,
            service_id
        )?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(service_id, error = %e, "recording a certificate error failed");
    }
}
