//! A vhost's TLS certificate: a site admin asks the panel to order one
//! from the configured ACME server ([`request_acme`]), or uploads their own
//! with its key ([`upload`]); either way the server's `certificate` job
//! (`provision/steps/certificate.rs`) does the work on the queue, queued in
//! the request's transaction and coalesced per server. ACME certificates
//! are renewed `acme.renew_before_days` before they expire by the periodic
//! `certificate_renewal` job ([`request_renewals`], [`renewal_schedule`]).
//!
//! An upload is checked before anything is stored (`certs.rs`): the
//! certificate parses, the key is the certificate's, its names cover the
//! vhost's name and every alias, and it is valid now; each refusal is a 422
//! naming the field (`certificate` or `key`). The key is kept in the row
//! only until the job has installed it on the server (see the migration
//! `0015_certificates.sql`); no answer, page, audit row or job payload
//! carries it.
//!
//! Who may: the site's admins and platform admins, as for the vhosts
//! themselves (`vhosts::managed_vhost`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::audit::{self, Change};
use crate::certs;
use crate::config::AcmeConfig;
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{CertificateJob, CertificateRenewalJob};
use crate::lifecycle::Status;
use crate::queue;
use crate::queue::cron::{MissedFires, Schedule};
use crate::services::model::{CertState, CertificateView, Vhost};
use crate::services::vhosts::{certificates_by_vhost, managed_vhost, ManagedServer};
use crate::store::Tx;
use crate::{execute, fetch_all};

/// The body of `PUT /services/{id}/vhosts/{vhost_id}/certificate`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateUpload {
    /// The certificate, PEM, followed by its chain (intermediates).
    pub certificate: String,
    /// Its private key, PEM (PKCS#8, or a PKCS#1 RSA or SEC1 EC key).
    pub key: String,
}

impl std::fmt::Debug for CertificateUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateUpload")
            .field("certificate", &self.certificate.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What a request answers: the certificate as it now stands, and the job
/// that acts on it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CertificateRequested {
    pub certificate: CertificateView,
    pub job_id: i64,
}

/// What `GET …/vhosts/{vhost_id}/certificate` answers.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CertificateStatus {
    pub vhost_id: i64,
    /// The names a certificate must cover: the vhost's name, then its
    /// aliases.
    pub names: Vec<String>,
    /// Its certificate, if it has or wants one.
    pub certificate: Option<CertificateView>,
}

/// A vhost's certificate, and the names one must cover.
pub async fn get(
    db: &Db,
    who: &Principal,
    service_id: i64,
    vhost_id: i64,
) -> Result<CertificateStatus, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let (_, vhost) = managed_vhost(&mut conn, who, service_id, vhost_id).await?;
    Ok(CertificateStatus {
        vhost_id,
        names: vhost.names(),
        certificate: vhost.certificate,
    })
}

/// Certificates act on ready servers only: a server on its way there gets
/// its vhosts first, and one on its way out none.
fn check_ready(server: &ManagedServer) -> Result<(), PanelError> {
    if server.status != Status::Ready {
        return Err(PanelError::Conflict(format!(
            "certificates are installed on ready servers; this one is {}",
            server.status
        )));
    }
    Ok(())
}

async fn reread(
    conn: &mut Conn<'_>,
    service_id: i64,
    vhost_id: i64,
) -> Result<CertificateView, PanelError> {
    certificates_by_vhost(conn, Some(service_id))
        .await?
        .into_iter()
        .find(|(v, _)| *v == vhost_id)
        .map(|(_, c)| c)
        .ok_or_else(|| PanelError::Internal("the certificate row went away".into()))
}

/// Asks for a certificate from the ACME server for the vhost's name and
/// aliases (a first one, or a renewal now): the row becomes `requested`
/// and the server's `certificate` job is queued. What is installed stays
/// served until the new one replaces it.
pub async fn request_acme(
    db: &Db,
    acme: &AcmeConfig,
    who: &Principal,
    service_id: i64,
    vhost_id: i64,
) -> Result<CertificateRequested, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let (server, vhost) = managed_vhost(&mut conn, who, service_id, vhost_id).await?;
    check_ready(&server)?;
    if !acme.enabled() {
        return Err(PanelError::Conflict(
            "no ACME server is configured (acme.directory_url); upload a certificate instead"
                .into(),
        ));
    }
    execute!(
        &mut conn,
        "INSERT INTO certificates (vhost_id, service_id, source, state, updated_at) \
         VALUES ($1, $2, 'acme', 'requested', $3) \
         ON CONFLICT (vhost_id) DO UPDATE SET source = 'acme', state = 'requested', \
           pending_key = NULL, error = NULL, updated_at = $3",
        vhost_id,
        service_id,
        now
    )?;
    let view = reread(&mut conn, service_id, vhost_id).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("certificate.request", "vhost", vhost_id)
            .before(&vhost.certificate)
            .after(&json!({ "source": "acme", "names": vhost.names() })),
    )
    .await?;
    let job = queue::enqueue(&mut tx, CertificateJob { service_id }.spec(who.actor_id())).await?;
    tx.commit().await?;
    Ok(CertificateRequested {
        certificate: view,
        job_id: job.job_id,
    })
}

/// A Unix-ms time as RFC 3339 (UTC), for messages.
fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Checks an uploaded certificate and key for `vhost` at time `now`: the
/// reasons name the field.
pub fn check_upload(
    vhost: &Vhost,
    body: &CertificateUpload,
    now: i64,
) -> Result<certs::CertInfo, PanelError> {
    let refuse = |e: certs::CertError| PanelError::invalid(e.field(), e.to_string());
    let info = certs::parse(&body.certificate).map_err(refuse)?;
    certs::check_key(&body.certificate, &body.key).map_err(refuse)?;
    let names = vhost.names();
    let missing = certs::uncovered(&info, &names);
    if !missing.is_empty() {
        return Err(PanelError::invalid(
            "certificate",
            format!(
                "certificate: does not cover {} (it names {})",
                missing.join(", "),
                if info.names.is_empty() {
                    "no DNS name".to_string()
                } else {
                    info.names.join(", ")
                }
            ),
        ));
    }
    if info.not_after <= now {
        return Err(PanelError::invalid(
            "certificate",
            format!("certificate: expired on {}", date(info.not_after)),
        ));
    }
    if info.not_before > now {
        return Err(PanelError::invalid(
            "certificate",
            format!("certificate: not valid before {}", date(info.not_before)),
        ));
    }
    Ok(info)
}

/// Stores a site admin's own certificate and key for the vhost, once
/// checked ([`check_upload`]), and queues the job that installs them.
pub async fn upload(
    db: &Db,
    who: &Principal,
    service_id: i64,
    vhost_id: i64,
    body: &CertificateUpload,
) -> Result<CertificateRequested, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let (server, vhost) = managed_vhost(&mut conn, who, service_id, vhost_id).await?;
    check_ready(&server)?;
    let info = check_upload(&vhost, body, now)?;
    let names = serde_json::to_string(&info.names).unwrap_or_else(|_| "[]".into());
    execute!(
        &mut conn,
        "INSERT INTO certificates (vhost_id, service_id, source, state, names, issuer, serial, \
           not_before, not_after, cert_pem, pending_key, error, updated_at) \
         VALUES ($1, $2, 'upload', 'pending', $3, $4, $5, $6, $7, $8, $9, NULL, $10) \
         ON CONFLICT (vhost_id) DO UPDATE SET source = 'upload', state = 'pending', names = $3, \
           issuer = $4, serial = $5, not_before = $6, not_after = $7, cert_pem = $8, \
           pending_key = $9, error = NULL, updated_at = $10",
        vhost_id,
        service_id,
        names.as_str(),
        info.issuer.as_str(),
        info.serial.as_str(),
        info.not_before,
        info.not_after,
        body.certificate.as_str(),
        body.key.as_str(),
        now
    )?;
    let view = reread(&mut conn, service_id, vhost_id).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("certificate.upload", "vhost", vhost_id)
            .before(&vhost.certificate)
            .after(&view),
    )
    .await?;
    let job = queue::enqueue(&mut tx, CertificateJob { service_id }.spec(who.actor_id())).await?;
    tx.commit().await?;
    Ok(CertificateRequested {
        certificate: view,
        job_id: job.job_id,
    })
}

/// The periodic renewal (`certificate_renewal` job): every ACME
/// certificate of a ready server that expires within `before`, or whose
/// order failed and was left `requested`, is requested again, and each of
/// their servers gets its `certificate` job, in the caller's transaction.
/// Returns the servers.
pub async fn request_renewals(
    tx: &mut Tx,
    now: i64,
    before: Duration,
) -> Result<Vec<i64>, PanelError> {
    let due = now.saturating_add(crate::clock::millis(before));
    let mut conn = tx_conn(tx);
    let rows = fetch_all!(
        &mut conn,
        (i64, i64, String),
        "SELECT c.vhost_id, c.service_id, c.state FROM certificates c \
         JOIN services s ON s.id = c.service_id \
         WHERE c.source = 'acme' AND s.status = 'ready' \
           AND ((c.state = 'installed' AND c.not_after IS NOT NULL AND c.not_after <= $1) \
             OR c.state = 'requested') \
         ORDER BY c.service_id, c.vhost_id",
        due
    )?;
    let mut servers: Vec<i64> = Vec::new();
    for (vhost_id, service_id, state) in rows {
        if state == CertState::Installed.as_str() {
            execute!(
                &mut conn,
                "UPDATE certificates SET state = 'requested', updated_at = $1 WHERE vhost_id = $2",
                now,
                vhost_id
            )?;
            audit::record(
                &mut conn,
                now,
                &Principal::system(),
                Change::new("certificate.renewal_due", "vhost", vhost_id)
                    .after(&json!({ "due_before": due })),
            )
            .await?;
        }
        if !servers.contains(&service_id) {
            servers.push(service_id);
        }
    }
    let specs: Vec<_> = servers
        .iter()
        .map(|&service_id| CertificateJob { service_id }.spec(None))
        .collect();
    queue::enqueue_many(tx, &specs).await?;
    Ok(servers)
}

/// The periodic `certificate_renewal` job on the queue's cron (each fire
/// claimed once across all nodes): `None` with ACME off or
/// `renew_check_secs = 0`. Checks missed while no node ran are made up
/// once, so a panel that was down a while looks at its certificates as
/// soon as it is back.
pub fn renewal_schedule(cfg: &AcmeConfig) -> Option<Schedule> {
    (cfg.enabled() && cfg.renew_check_secs > 0).then(|| {
        Schedule::interval(
            "certificate_renewal",
            Duration::from_secs(cfg.renew_check_secs),
            CertificateRenewalJob {}.spec(),
        )
        .missed(MissedFires::RunOnce)
    })
}
