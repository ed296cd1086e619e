//! `metrics_collect` (cron, every `analytics.every_secs`): one reading of
//! every ready server for the system analytics (`services::analytics`),
//! then the rollups.
//!
//! A server's reading joins two sources. The hypervisor driver's figures
//! (`Driver::stats`: CPU time, memory, disk I/O, network bytes, as the
//! hypervisor accounts them) come first; the guest's node exporter
//! (`roles/metrics_service`) fills in what the driver does not see —
//! always the root filesystem's use, and CPU, memory or traffic when the
//! driver has no figure for them. Apache's `/server-status?auto` gives the
//! request counter of web servers. Both pages are fetched through the
//! server's SSH connection from its loopback (`provision/scrape.rs`), with
//! the panel's key and the server's pinned host key.
//!
//! Servers are read `analytics.concurrency` at a time, each within
//! `analytics.timeout_secs`. A server that cannot be read is logged and
//! skipped — its graph has a gap — and never fails the job; the job fails
//! only when the database does, and has one attempt: the next fire is its
//! retry.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use crate::exposition::{self, NodeFigures};
use crate::fetch_all;
use crate::hypervisor::VmStats;
use crate::lifecycle::jobs::{FlowJob, MetricsCollectJob};
use crate::lifecycle::Status;
use crate::provision::scrape::{self, Target};
use crate::provision::{ProvisionError, Provisioner};
use crate::queue::{JobContext, JobError, JobHandler, RetryPolicy};
use crate::services::analytics::{self, Counters, Reading};

/// `metrics_collect`.
pub struct MetricsCollectStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for MetricsCollectStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::once()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        MetricsCollectJob::decode(ctx.payload())?;
        collect(&self.0)
            .await
            .map(|_| ())
            .map_err(ProvisionError::into_job_error)
    }
}

/// A ready server as the collector reaches it.
#[derive(sqlx::FromRow)]
struct Server {
    id: i64,
    vm_name: String,
    host_key_public: String,
    ssh_endpoint: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
}

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Servers with a point stored.
    pub read: usize,
    /// Servers nothing could be read from.
    pub failed: usize,
}

/// Reads every ready server once, stores the points, then rolls up.
pub async fn collect(p: &Provisioner) -> Result<Collected, ProvisionError> {
    let servers = {
        let mut rc = p.db.read().await?;
        fetch_all!(
            &mut rc.conn(),
            Server,
            "SELECT s.id, v.vm_name, v.host_key_public, v.ssh_endpoint, a.ipv4, a.ipv6 \
             FROM services s JOIN vm_provisioning v ON v.service_id = s.id \
             LEFT JOIN pool_addresses a ON a.service_id = s.id \
             WHERE s.status = $1 ORDER BY s.id",
            Status::Ready
        )?
    };
    let cfg = &p.analytics;
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
    let results: Vec<(i64, Option<Reading>)> = futures::stream::iter(servers)
        .map(|s| async move {
            let reading = tokio::time::timeout(timeout, read_server(p, &s))
                .await
                .unwrap_or(None);
            (s.id, reading)
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    let mut out = Collected::default();
    for (id, reading) in results {
        match reading {
            Some(r) => {
                // Each point is stamped when it is stored, so rates use
                // the time between two stores of the same server.
                analytics::record(&p.db, id, p.db.now(), &r).await?;
                out.read += 1;
            }
            None => out.failed += 1,
        }
    }
    analytics::rollup(&p.db, p.db.now()).await?;
    Ok(out)
}

/// One server's reading; `None` when neither the driver nor the exporter
/// answered.
async fn read_server(p: &Provisioner, s: &Server) -> Option<Reading> {
    let stats = match p.driver_for(s.id).await {
        Ok(Some(d)) => match d.stats(&s.vm_name).await {
            Ok(st) => Some(st),
            Err(e) => {
                tracing::warn!(service_id = s.id, error = %e, "no hypervisor figures");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(service_id = s.id, error = %e, "no hypervisor figures: its host cannot be reached");
            None
        }
    };
    let (node, http) = match scrape_pages(p, s).await {
        Ok(pages) => pages,
        Err(e) => {
            tracing::warn!(service_id = s.id, error = %e, "the server's exporters could not be read");
            (None, None)
        }
    };
    if stats.is_none() && node.is_none() {
        return None;
    }
    Some(merge(stats.as_ref(), node.as_ref(), http))
}

/// The node exporter's figures and Apache's request counter; either is
/// `None` when its page is not there (no Apache on a server is normal).
async fn scrape_pages(
    p: &Provisioner,
    s: &Server,
) -> Result<(Option<NodeFigures>, Option<u64>), ProvisionError> {
    let addr = ssh_addr(s)
        .ok_or_else(|| ProvisionError::Missing(format!("no address to reach {}", s.vm_name)))?;
    let key = p.panel_key()?;
    let target = Target {
        addr,
        host_key: &s.host_key_public,
        user: &p.config.admin_user,
        private_key: &key.private_path,
    };
    let cfg = &p.analytics;
    let pages = scrape::fetch_local(
        &target,
        &[
            (cfg.node_exporter_port, "/metrics"),
            (cfg.apache_port, "/server-status?auto"),
        ],
        Duration::from_secs(cfg.timeout_secs.max(1)),
    )
    .await
    .map_err(|e| ProvisionError::Ssh(e.to_string()))?;
    let mut pages = pages.into_iter();
    let node = match pages.next() {
        Some(Ok(text)) => match exposition::parse(&text) {
            Ok(samples) => Some(NodeFigures::from_samples(&samples)),
            Err(e) => {
                tracing::warn!(service_id = s.id, error = %e, "the node exporter's page does not parse");
                None
            }
        },
        Some(Err(e)) => {
            tracing::warn!(service_id = s.id, error = %e, "no node exporter");
            None
        }
        None => None,
    };
    let http = match pages.next() {
        Some(Ok(text)) => exposition::apache_total_accesses(&text),
        _ => None,
    };
    Ok((node, http))
}

/// Where the server's sshd is: the driver's forward, else port 22 of its
/// address.
fn ssh_addr(s: &Server) -> Option<SocketAddr> {
    if let Some(e) = s.ssh_endpoint.as_deref().and_then(|e| e.parse().ok()) {
        return Some(e);
    }
    let ip: IpAddr = s
        .ipv4
        .as_deref()
        .or(s.ipv6.as_deref())
        .and_then(|a| a.parse().ok())?;
    Some(SocketAddr::new(ip, 22))
}

/// One reading from the driver's figures and the exporter's: the driver
/// first, the exporter for what the driver lacks (and always for the
/// filesystem, which only the guest sees).
pub fn merge(stats: Option<&VmStats>, node: Option<&NodeFigures>, http: Option<u64>) -> Reading {
    let f = |v: Option<u64>| v.map(|n| n as f64);
    let d = stats.cloned().unwrap_or_default();
    let n = node.cloned().unwrap_or_default();
    let driver_cpu = d.cpu_ns.is_some();
    Reading {
        cpus: if d.cpus > 0 {
            d.cpus
        } else {
            u32::try_from(n.cpus).unwrap_or(1)
        },
        memory_used: f(d.memory_used).or(n.memory_used),
        memory_total: f(d.memory_total).or(n.memory_total),
        disk_used: n.disk_used,
        disk_total: n.disk_total,
        counters: Counters {
            cpu_ns: f(d.cpu_ns),
            cpu_busy_secs: if driver_cpu { None } else { n.cpu_busy_secs },
            cpu_total_secs: if driver_cpu { None } else { n.cpu_total_secs },
            disk_read_bytes: f(d.disk_read_bytes),
            disk_write_bytes: f(d.disk_write_bytes),
            net_rx_bytes: f(d.net_rx_bytes).or(n.net_rx_bytes),
            net_tx_bytes: f(d.net_tx_bytes).or(n.net_tx_bytes),
            http_requests: http.map(|h| h as f64),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_comes_first_and_the_exporter_fills_in() {
        let stats = VmStats {
            cpu_ns: Some(5),
            cpus: 2,
            memory_used: Some(10),
            memory_total: None,
            net_rx_bytes: None,
            ..VmStats::default()
        };
        let node = NodeFigures {
            cpu_busy_secs: Some(1.0),
            cpu_total_secs: Some(2.0),
            cpus: 8,
            memory_used: Some(99.0),
            memory_total: Some(400.0),
            disk_used: Some(3.0),
            disk_total: Some(9.0),
            net_rx_bytes: Some(7.0),
            net_tx_bytes: Some(8.0),
        };
        let r = merge(Some(&stats), Some(&node), Some(42));
        assert_eq!(r.cpus, 2);
        assert_eq!(r.memory_used, Some(10.0));
        assert_eq!(r.memory_total, Some(400.0));
        assert_eq!((r.disk_used, r.disk_total), (Some(3.0), Some(9.0)));
        assert_eq!(r.counters.cpu_ns, Some(5.0));
        // The exporter's CPU is not mixed with the driver's.
        assert_eq!(r.counters.cpu_busy_secs, None);
        assert_eq!(r.counters.net_rx_bytes, Some(7.0));
        assert_eq!(r.counters.http_requests, Some(42.0));

        let r = merge(None, Some(&node), None);
        assert_eq!(r.cpus, 8);
        assert_eq!(r.counters.cpu_busy_secs, Some(1.0));
        assert_eq!(r.counters.http_requests, None);
    }
}
