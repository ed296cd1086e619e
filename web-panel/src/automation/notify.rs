//! The `notify` job: tells one target about one run. E-mail goes over SMTP
//! (`lettre`) to the target's server, plain or over TLS (STARTTLS or
//! SMTPS, rustls, the system's roots plus the target's own CA); a webhook is a JSON POST whose body
//! is signed with HMAC-SHA256 under the target's key (header
//! `X-Keel-Signature: sha256=<hex>`, the event in `X-Keel-Event`), so the
//! receiver can check it came from this panel. A failed delivery is a
//! retryable error: the queue tries again with its backoff. The message
//! carries the run's status, revision, error, per-host counts and PLAY
//! RECAP, the hosts it could not reach (`dead_hosts`) and those it reported
//! as dead nodes with the start of their outage (`dead_nodes`), never a
//! credential.

use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{json, Value};

use super::catalog::{target_on, webhook_aad};
use super::jobs::{AutomationJob, NotifyEvent, NotifyJob};
use super::model::*;
use super::runs::{hosts_on, run_on};
use super::{Automation, AutomationError};
use crate::domain::PanelError;
use crate::queue::{JobContext, JobError, JobHandler, RetryPolicy};
use crate::scalar;

type HmacSha256 = hmac::Hmac<sha2_11::Sha256>;

/// `notify`.
pub struct NotifyStep(pub Arc<Automation>);

#[async_trait::async_trait]
impl JobHandler for NotifyStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::exponential(Duration::from_secs(2), Duration::from_secs(600)).max_attempts(8)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let job = NotifyJob::decode(ctx.payload())?;
        deliver(&self.0, job)
            .await
            .map_err(AutomationError::into_job_error)
    }
}

/// `host:port` split (IPv6 in brackets); the port defaults to 25.
pub fn split_server(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => 25,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        Some(_) => None,
        None => Some((s.to_string(), 25)),
    }
}

/// The signature header value of a webhook body.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// What a notification says about a run.
pub async fn message(
    a: &Automation,
    run_id: i64,
    event: NotifyEvent,
) -> Result<Value, AutomationError> {
    let mut rc = a.db.read().await?;
    let mut conn = rc.conn();
    let run = run_on(&mut conn, run_id).await?;
    let hosts = hosts_on(&mut conn, run_id).await?;
    let dead: Vec<&str> = hosts
        .iter()
        .filter(|h| h.unreachable > 0)
        .map(|h| h.host.as_str())
        .collect();
    // The hosts this run reported as dead nodes, with when their outage
    // began (a host that answers again before delivery has no row left).
    let dead_nodes: Vec<Value> = crate::fetch_all!(
        &mut conn,
        (String, i64),
        "SELECT host, since FROM unreachable_hosts WHERE notified_run_id = $1 ORDER BY host",
        run_id
    )
    .map_err(PanelError::from)?
    .into_iter()
    .map(|(host, since)| json!({ "host": host, "unreachable_since": since }))
    .collect();
    let drifted: Vec<&str> = hosts
        .iter()
        .filter(|h| h.changed > 0)
        .map(|h| h.host.as_str())
        .collect();
    Ok(json!({
        "event": event.as_str(),
        "template": run.template_name,
        "run": {
            "id": run.id,
            "status": run.status,
            "revision": run.revision,
            "launched_by": run.launched_by,
            "exit_code": run.exit_code,
            "error": run.error,
            "recap": run.recap,
            "hosts": hosts,
        },
        "dead_hosts": dead,
        "dead_nodes": dead_nodes,
        "drifted_hosts": drifted,
    }))
}

fn text_body(msg: &Value) -> String {
    let run = &msg["run"];
    let s = |v: &Value| {
        v.as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string())
    };
    let mut t = format!(
        "Template: {}\nEvent: {}\nRun: {} ({})\nRevision: {}\n",
        s(&msg["template"]),
        s(&msg["event"]),
        run["id"],
        s(&run["status"]),
        s(&run["revision"]),
    );
    if !run["error"].is_null() {
        t.push_str(&format!("Error: {}\n", s(&run["error"])));
    }
    for (k, label) in [
        ("dead_hosts", "Hosts not answering"),
        ("drifted_hosts", "Hosts changed"),
    ] {
        if let Some(list) = msg[k].as_array().filter(|l| !l.is_empty()) {
            let names: Vec<String> = list.iter().map(s).collect();
            t.push_str(&format!("{label}: {}\n", names.join(", ")));
        }
    }
    if let Some(list) = msg["dead_nodes"].as_array().filter(|l| !l.is_empty()) {
        let names: Vec<String> = list
            .iter()
            .map(|d| {
                let since = d["unreachable_since"]
                    .as_i64()
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                format!("{} (unreachable since {since})", s(&d["host"]))
            })
            .collect();
        t.push_str(&format!("Dead nodes: {}\n", names.join(", ")));
    }
    if let Some(r) = run["recap"].as_str() {
        t.push('\n');
        t.push_str(r);
        t.push('\n');
    }
    t
}

async fn deliver(a: &Automation, job: NotifyJob) -> Result<(), AutomationError> {
    let (target, sealed) = {
        let mut rc = a.db.read().await?;
        let mut conn = rc.conn();
        let Ok(target) = target_on(&mut conn, job.target_id).await else {
            return Ok(()); // the target was deleted meanwhile
        };
        let sealed = scalar!(
            &mut conn,
            Option<String>,
            "SELECT sealed FROM notification_targets WHERE id = $1",
            job.target_id
        )
        .map_err(PanelError::from)?
        .flatten();
        (target, sealed)
    };
    let msg = message(a, job.run_id, job.event).await?;
    match target.kind {
        TargetKind::Email => {
            use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
            use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
            let (host, port) =
                split_server(target.smtp_server.as_deref().unwrap_or("localhost:25"))
                    .ok_or_else(|| AutomationError::Delivery("bad SMTP server".into()))?;
            let bad = |e: String| AutomationError::Panel(PanelError::invalid("address", e));
            let email = Message::builder()
                .from(
                    target
                        .sender
                        .as_deref()
                        .unwrap_or("keel@localhost")
                        .parse()
                        .map_err(|e: lettre::address::AddressError| bad(e.to_string()))?,
                )
                .to(target
                    .address
                    .parse()
                    .map_err(|e: lettre::address::AddressError| bad(e.to_string()))?)
                .subject(format!(
                    "[keel] {}: {}",
                    msg["template"].as_str().unwrap_or("?"),
                    job.event.as_str()
                ))
                .body(text_body(&msg))
                .map_err(|e| bad(e.to_string()))?;
            // Plain SMTP to a local relay, or TLS (STARTTLS required, or
            // from the first byte) checked against the system's roots and
            // the target's own CA.
            let tls = |host: &str| -> Result<TlsParameters, AutomationError> {
                let tls_err = |e: lettre::transport::smtp::Error| {
                    AutomationError::Delivery(format!("SMTP TLS: {e}"))
                };
                let mut b = TlsParameters::builder(host.to_string());
                if let Some(pem) = &target.smtp_ca {
                    b = b.add_root_certificate(
                        Certificate::from_pem(pem.as_bytes()).map_err(tls_err)?,
                    );
                }
                b.build_rustls().map_err(tls_err)
            };
            let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                .port(port)
                .timeout(Some(Duration::from_secs(30)));
            let builder = match target.smtp_tls {
                SmtpTls::None => builder,
                SmtpTls::Starttls => builder.tls(Tls::Required(tls(&host)?)),
                SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(&host)?)),
            };
            let mailer = builder.build();
            mailer
                .send(email)
                .await
                .map_err(|e| AutomationError::Delivery(format!("SMTP: {e}")))?;
        }
        TargetKind::Webhook => {
            let key = a
                .sealer
                .open(&webhook_aad(&target.name), sealed.as_deref().unwrap_or(""))?;
            let body =
                serde_json::to_vec(&msg).map_err(|e| AutomationError::Delivery(e.to_string()))?;
            let sig = signature(key.expose().as_bytes(), &body);
            // Only where `outbound` allows (the SSRF guard): a literal
            // address here, a name at each connection; no redirects.
            let outbound = &a.provisioner.outbound;
            outbound.check_literal(&target.address)?;
            let client = outbound
                .client(Duration::from_secs(30), 0)
                .map_err(|e| AutomationError::Delivery(e.to_string()))?;
            let resp = client
                .post(&target.address)
                .header("content-type", "application/json")
                .header("x-keel-event", job.event.as_str())
                .header("x-keel-signature", sig)
                .body(body)
                .send()
                .await
                .map_err(|e| match crate::outbound::refusal(&e) {
                    Some(r) => AutomationError::Refused(r),
                    None => AutomationError::Delivery(format!("webhook: {e}")),
                })?;
            if !resp.status().is_success() {
                return Err(AutomationError::Delivery(format!(
                    "webhook answered {}",
                    resp.status()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_split_with_default_port() {
        assert_eq!(split_server("mx:2525"), Some(("mx".into(), 2525)));
        assert_eq!(split_server("mx"), Some(("mx".into(), 25)));
        assert_eq!(split_server("[::1]:26"), Some(("::1".into(), 26)));
        assert_eq!(split_server("mx:x"), None);
    }

    /// RFC 4231 test case 2.
    #[test]
    fn signature_is_hmac_sha256() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
