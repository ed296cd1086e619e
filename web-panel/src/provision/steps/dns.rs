//! The `dns` job: a server's records published to the configured DNS
//! server (`dns.rs`: A and AAAA from its allocation, SSHFP from the host
//! keys the panel generated, a CNAME per domain alias of its vhosts), or
//! removed once it is deleted.
//!
//! It is queued only when `[dns]` is configured, by [`queue_publish`],
//! inside the transaction of the change that calls for it: `configure`
//! moving a server to `ready` (which every new VM, new host key or
//! re-claimed address passes through) and `deprovision` moving it to
//! `deleted`, and by a change to a ready server's domain aliases
//! (`services::vhosts::queue_dns`, in the vhost write's transaction). The job
//! reads the server when it starts, so it is coalesced per server; it
//! replaces whole RRsets, so a retry or a second run leaves the zone as
//! one run does.
//!
//! What was published last is kept in `dns_publications`: the next update
//! empties those RRsets too (a hostname or alias that went away), and a
//! delete removes them after the address is released. A success writes
//! the row and its audit entry in one transaction; a failure writes the
//! error on the row (the server page shows it) and retries with the
//! default policy. Servers in other statuses (configuring, failed...)
//! keep what is published.

use std::sync::Arc;

use super::kit::read_state;
use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn};
use crate::dns::{self, DnsRecord, Publisher};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{DnsJob, FlowJob};
use crate::lifecycle::Status;
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{self, JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::model::DnsState;
use crate::store::Tx;
use crate::{alloc, execute, fetch_all, scalar};

/// Queues the server's `dns` job in the caller's transaction, when DNS
/// publishing is configured; nothing otherwise.
pub async fn queue_publish(
    p: &Provisioner,
    tx: &mut Tx,
    service_id: i64,
) -> Result<(), PanelError> {
    if p.dns.enabled() {
        queue::enqueue(tx, DnsJob { service_id }.spec(None)).await?;
    }
    Ok(())
}

/// `dns`: publish or remove one server's records.
pub struct DnsStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for DnsStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = DnsJob::decode(ctx.payload())?.service_id;
        match publish(&self.0, id).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // The server page shows why; the job's own record keeps
                // the attempts.
                if let Err(write) = record_error(&self.0, id, &e.to_string()).await {
                    tracing::warn!(service_id = id, error = %write, "recording a DNS error failed");
                }
                Err(e.into_job_error())
            }
        }
    }
}

/// What was published last for a server (empty when nothing was).
pub async fn published(conn: &mut Conn<'_>, id: i64) -> Result<Vec<DnsRecord>, PanelError> {
    let raw = scalar!(
        conn,
        String,
        "SELECT records FROM dns_publications WHERE service_id = $1",
        id
    )?;
    Ok(raw
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or_default())
}

/// The records a ready server should have now.
async fn wanted(
    conn: &mut Conn<'_>,
    id: i64,
    host_keys: &str,
) -> Result<Vec<DnsRecord>, ProvisionError> {
    let Some(net) = alloc::allocation_of(conn, id).await? else {
        return Err(ProvisionError::Missing(
            "the ready server has no address".into(),
        ));
    };
    let aliases: Vec<String> = fetch_all!(
        conn,
        (String,),
        "SELECT d.domain FROM domain_aliases d JOIN vhosts v ON v.id = d.vhost_id \
         WHERE v.service_id = $1 ORDER BY d.domain",
        id
    )?
    .into_iter()
    .map(|(a,)| a)
    .collect();
    Ok(dns::server_records(
        &net.hostname,
        net.ipv4.as_deref(),
        net.ipv6.as_deref(),
        host_keys,
        &aliases,
    )?)
}

async fn publish(p: &Provisioner, id: i64) -> Result<(), ProvisionError> {
    if !p.dns.enabled() {
        // Switched off since the job was queued: nothing to publish.
        return Ok(());
    }
    let (svc, row) = read_state(&p.db, id).await?;
    let status = svc.map(|s| s.status);
    let (before, after) = {
        let mut rc = p.db.read().await?;
        let mut conn = rc.conn();
        let before = published(&mut conn, id).await?;
        let after = match status {
            Some(Status::Ready) => {
                let keys = row.map(|r| r.host_key_public).unwrap_or_default();
                Some(wanted(&mut conn, id, &keys).await?)
            }
            Some(Status::Deleting | Status::Deleted) | None => None,
            // Not ready yet, or failed: its `ready` queues the next run.
            Some(_) => return Ok(()),
        };
        (before, after)
    };
    let removing = after.is_none();
    let after = after.unwrap_or_default();
    let updates = dns::plan(&p.dns, &before, &after)?;
    if !updates.is_empty() {
        let publisher = Publisher::new(&p.dns)?;
        for update in &updates {
            publisher.apply(update).await?;
        }
    }

    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let state = if removing {
        DnsState::Removed
    } else {
        DnsState::Published
    };
    let records = serde_json::to_string(&after).unwrap_or_else(|_| "[]".into());
    execute!(
        &mut conn,
        "INSERT INTO dns_publications (service_id, state, records, error, updated_at) \
         VALUES ($1, $2, $3, NULL, $4) \
         ON CONFLICT (service_id) DO UPDATE SET state = $2, records = $3, error = NULL, updated_at = $4",
        id,
        state.as_str(),
        records.as_str(),
        now
    )?;
    let shown = |rs: &[DnsRecord]| rs.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    let action = if removing {
        "service.dns_removed"
    } else {
        "service.dns_published"
    };
    audit::record(
        &mut conn,
        now,
        &Principal::system(),
        Change::new(action, "service", id)
            .before(&shown(&before))
            .after(&shown(&after)),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(service_id = id, records = after.len(), "{action}");
    Ok(())
}

/// Marks the row `error` with `message`, keeping what was published.
async fn record_error(p: &Provisioner, id: i64, message: &str) -> Result<(), PanelError> {
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    execute!(
        &mut conn,
        "INSERT INTO dns_publications (service_id, state, records, error, updated_at) \
         VALUES ($1, 'error', '[]', $2, $3) \
         ON CONFLICT (service_id) DO UPDATE SET state = 'error', error = $2, updated_at = $3",
        id,
        message,
        now
    )?;
    tx.commit().await?;
    Ok(())
}
