//! The `configure` job: the sshd banner wait and the exact host-key check,
//! then the role run (`keel::executor::run_playbook`) against this one
//! host with the panel's key and the VM's own known_hosts, its events
//! streamed to the job log; `ready` when it succeeds. Also the request
//! for one more run of a ready server ([`reconverge`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::failure::{fail, step_error};
use super::kit::{check_cancel, read_state};
use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{ConfigureJob, FlowJob};
use crate::lifecycle::{transition, Status, Step};
use crate::provision::{hostkey, inventory, FailureReason, ProvisionError, Provisioner};
use crate::queue::worker::record_failure;
use crate::queue::{self, Failure, Job, JobContext, JobError, JobHandler, RetryPolicy};
use crate::store::{Store, StoreError};

/// Asks for one more role run of a ready (or configuring) server. While a
/// run is in progress, any number of requests give exactly one more run.
pub async fn reconverge(db: &Db, who: &Principal, service_id: i64) -> Result<i64, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = crate::services::servers::load_managed(&mut conn, who, service_id).await?;
    if !service.status.rules().convergeable {
        return Err(PanelError::Conflict(format!(
            "only ready servers can be re-converged; this one is {}",
            service.status
        )));
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.converge", "service", service_id),
    )
    .await?;
    let job = queue::enqueue(&mut tx, ConfigureJob { service_id }.spec(who.actor_id())).await?;
    tx.commit().await?;
    Ok(job.job_id)
}

/// `configure`: host-key check, then `playbook` against this one host.
pub struct ConfigureStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for ConfigureStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::fixed(Duration::from_secs(self.0.config.configure_retry_secs))
            .max_attempts(self.0.config.configure_attempts)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = ConfigureJob::decode(ctx.payload())?.service_id;
        configure(&self.0, id, &ctx)
            .await
            .map_err(|e| step_error(&self.0, Step::Configure, e))
    }

    async fn on_failure(
        &self,
        store: &Store,
        job: &Job,
        failure: Failure<'_>,
    ) -> Result<(), StoreError> {
        if let Ok(ConfigureJob { service_id: id }) = ConfigureJob::decode(&job.payload) {
            let reason = FailureReason::from_detail(Step::Configure, failure.detail);
            if reason == FailureReason::HostKeyMismatch {
                tracing::error!(
                    service_id = id,
                    error = failure.error,
                    "ALARM: a VM presented an unexpected SSH host key; provisioning stopped"
                );
            }
            fail(&self.0, id, &reason).await;
        }
        record_failure(store, job, failure.error).await
    }
}

async fn configure(p: &Provisioner, id: i64, ctx: &JobContext) -> Result<(), ProvisionError> {
    let (Some(svc), Some(row)) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    if !svc.status.rules().convergeable || row.callback_at.is_none() {
        return Ok(());
    }
    // The endpoint recorded when the VM was created: asking the hypervisor
    // again here would let a transient API error use up a role-run attempt.
    let stored: Option<SocketAddr> = row.ssh_endpoint.as_deref().and_then(|e| e.parse().ok());
    let host = inventory::hosts(&p.db, &p.config.admin_user, Some(id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ProvisionError::Missing("the service has no address".into()))?;
    let addr: SocketAddr = match stored {
        Some(a) => a,
        None => {
            let h = host
                .vars
                .get("ansible_host")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let ip = h
                .parse()
                .map_err(|_| ProvisionError::Missing(format!("no IP address to reach {h:?}")))?;
            SocketAddr::new(ip, 22)
        }
    };
    let log = crate::queue::log::JobLog::open(ctx)
        .await
        .map_err(PanelError::from)?;
    log.message(format!("waiting for sshd of {} at {addr}", row.vm_name));
    hostkey::wait_for_banner(addr, Duration::from_secs(p.config.ssh_wait_secs)).await?;
    if let Err(e) = hostkey::verify(addr, &row.host_key_public).await {
        log.message(e.to_string());
        let _ = log.close().await;
        if let ProvisionError::HostKeyMismatch { expected, seen } = &e {
            audit_alarm(&p.db, id, expected, seen).await;
        }
        return Err(e);
    }
    let known = p.known_hosts_path(&row.vm_name);
    hostkey::write_known_hosts(
        &known,
        &addr.ip().to_string(),
        addr.port(),
        &row.host_key_public,
    )?;
    log.message(format!("host key of {} verified", row.vm_name));
    hostkey::wait_for_login(
        addr,
        &row.host_key_public,
        &p.config.admin_user,
        &p.panel_key()?.private_path,
        Duration::from_secs(p.config.ssh_wait_secs),
    )
    .await?;

    // The role run: the panel's inventory for this one host, with its key
    // and its known_hosts, handed to the engine in memory.
    let inventory = keel::inventory::Inventory::from_json(inventory::for_role_run(
        &host,
        &p.panel_key()?.private_path.display().to_string(),
        &known.display().to_string(),
    ))
    .map_err(|d| ProvisionError::Playbook(d.to_string()))?;
    let playbook_path = p.config.playbook.clone();
    let playbook = tokio::task::spawn_blocking(move || {
        keel::playbook::load_playbook(&playbook_path, &Default::default())
    })
    .await
    .map_err(|e| ProvisionError::Playbook(e.to_string()))?
    .map_err(|d| ProvisionError::Playbook(d.to_string()))?;
    let opts = keel::executor::RunOptions {
        forks: 1,
        limit: Some(host.name.clone()),
        ..Default::default()
    };
    if let Err(e) = check_cancel(&ctx.cancel) {
        let _ = log.close().await;
        return Err(e);
    }
    // Raced against the job's token: after a lost lease another worker
    // runs the roles, and two runs must not converge the host at once.
    let failed_task = Arc::new(FailedTask::new(log.engine_sink()));
    let run = keel::executor::run_playbook(&playbook, inventory, opts, failed_task.clone());
    let summary = tokio::select! {
        summary = run => summary,
        () = ctx.cancel.cancelled() => {
            log.message("role run stopped: the job was cancelled or its lease lost".to_string());
            let _ = log.close().await;
            return Err(ProvisionError::Cancelled);
        }
    };
    let _ = log.close().await;
    if summary.exit_code() != 0 {
        let stats = summary
            .stats
            .iter()
            .map(|(h, s)| format!("{h}: {s:?}"))
            .chain(summary.errors.iter().cloned())
            .collect::<Vec<_>>()
            .join("; ");
        let task = failed_task.name();
        let detail = match &task {
            Some(t) => format!(
                "task failed: {t:?} exit code {} ({stats})",
                summary.exit_code()
            ),
            None => format!("exit code {} ({stats})", summary.exit_code()),
        };
        return Err(ProvisionError::RoleRun { task, detail });
    }

    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    transition(
        &mut conn,
        now,
        &Principal::system(),
        id,
        &Status::owned_by(Step::Configure),
        Status::Ready,
        None,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(service_id = id, vm = %row.vm_name, "roles applied; service ready");
    Ok(())
}

/// Forwards the role run's events to the job log and remembers the last
/// task that failed a host, whose name is what the tenant is told.
struct FailedTask {
    inner: Arc<dyn keel::output::Sink>,
    current: std::sync::Mutex<(Option<String>, Option<String>)>,
}

impl FailedTask {
    fn new(inner: Arc<dyn keel::output::Sink>) -> Self {
        Self {
            inner,
            current: std::sync::Mutex::new((None, None)),
        }
    }

    fn name(&self) -> Option<String> {
        self.current.lock().ok().and_then(|c| c.1.clone())
    }
}

impl keel::output::Sink for FailedTask {
    fn emit(&self, event: &keel::output::Event) {
        use keel::output::{Event, Status};
        if let Ok(mut c) = self.current.lock() {
            match event {
                Event::TaskStart { name, .. } => c.0 = Some(name.clone()),
                Event::HostResult(r)
                    if !r.ignored && matches!(r.status, Status::Failed | Status::Unreachable) =>
                {
                    c.1 = c.0.clone();
                }
                _ => {}
            }
        }
        self.inner.emit(event);
    }
}

async fn audit_alarm(db: &Db, id: i64, expected: &str, seen: &str) {
    let result: Result<(), PanelError> = async {
        let now = db.now();
        let mut tx = db.begin().await?;
        let mut conn = tx_conn(&mut tx);
        audit::record(
            &mut conn,
            now,
            &Principal::system(),
            Change {
                action: "service.host_key_mismatch",
                object_type: "service",
                object_id: Some(id),
                before: Some(json!({ "expected": expected })),
                after: Some(json!({ "seen": seen })),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::error!(service_id = id, error = %e, "could not record the host-key alarm");
    }
}
