//! The role run every job that converges a ready server shares
//! (`configure`, `access`, `vhosts`, `packages`, `db_password`,
//! `certificate`): the sshd banner wait and the exact host-key
//! check, then `keel::executor::run_playbook` of one playbook against this
//! one host, with the panel's key, the VM's own known_hosts and the panel's
//! inventory handed over in memory, its events streamed to the job log.
//! The job's cancellation token stops the run between two tasks.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::kit::{check_cancel, ProvRow};
use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::provision::{hostkey, inventory, ProvisionError, Provisioner};
use crate::queue::log::JobLog;
use crate::queue::JobContext;
use crate::services::access;

/// Checks the VM's host key, then runs `playbook` against service `id`
/// (whose provisioning row is `row`), logging to `log`, which it closes
/// with the error, if any, as its last line.
pub(super) async fn run_roles(
    p: &Provisioner,
    id: i64,
    row: &ProvRow,
    playbook: &Path,
    ctx: &JobContext,
    log: JobLog,
) -> Result<keel::executor::RunSummary, ProvisionError> {
    run_roles_with(p, id, row, playbook, ctx, log, keel::vars::VarMap::new()).await
}

/// A playbook a job runs — for a stack server type a second one after the
/// panel's, in the same log (`stack.rs`) —: its extra variables and the
/// inventory groups the server is in for it.
pub(super) struct Then {
    pub playbook: std::path::PathBuf,
    pub extra_vars: keel::vars::VarMap,
    pub groups: Vec<String>,
    /// Host variables added to the server's for this run.
    pub host_vars: serde_json::Map<String, serde_json::Value>,
}

/// [`run_roles`], then `then`'s playbook when the first succeeded.
pub(super) async fn run_roles_then(
    p: &Provisioner,
    id: i64,
    row: &ProvRow,
    playbook: &Path,
    then: Option<Then>,
    ctx: &JobContext,
    log: JobLog,
) -> Result<keel::executor::RunSummary, ProvisionError> {
    let first = Then {
        playbook: playbook.to_path_buf(),
        extra_vars: keel::vars::VarMap::new(),
        groups: Vec::new(),
        host_vars: Default::default(),
    };
    let mut out = run(p, id, row, first, ctx, &log).await;
    if let (Ok(_), Some(t)) = (&out, then) {
        log.message(format!(
            "running the stack's playbook {}",
            t.playbook.display()
        ));
        out = run(p, id, row, t, ctx, &log).await;
    }
    if let Err(e) = &out {
        log.message(e.to_string());
    }
    let _ = log.close().await;
    out
}

/// [`run_roles`] with extra variables (`-e`), held in memory for this run
/// only: how a secret such as a new database password reaches the role
/// without entering the inventory, a payload or a log.
pub(super) async fn run_roles_with(
    p: &Provisioner,
    id: i64,
    row: &ProvRow,
    playbook: &Path,
    ctx: &JobContext,
    log: JobLog,
    extra_vars: keel::vars::VarMap,
) -> Result<keel::executor::RunSummary, ProvisionError> {
    let spec = Then {
        playbook: playbook.to_path_buf(),
        extra_vars,
        groups: Vec::new(),
        host_vars: Default::default(),
    };
    let out = run(p, id, row, spec, ctx, &log).await;
    if let Err(e) = &out {
        log.message(e.to_string());
    }
    let _ = log.close().await;
    out
}

/// One playbook run: `spec`'s playbook with its extra variables, the
/// server in its groups too.
async fn run(
    p: &Provisioner,
    id: i64,
    row: &ProvRow,
    spec: Then,
    ctx: &JobContext,
    log: &JobLog,
) -> Result<keel::executor::RunSummary, ProvisionError> {
    let Then {
        playbook,
        extra_vars,
        groups,
        host_vars,
    } = spec;
    let mut host = check_reachable(p, id, row, log).await?;
    for (k, v) in host_vars {
        host.vars.entry(k).or_insert(v);
    }
    let known = p.known_hosts_path(&row.vm_name);

    // The role run: the panel's inventory for this one host, with its key
    // and its known_hosts, handed to the engine in memory.
    let inventory = inventory::for_role_run(
        &host,
        &p.panel_key()?.private_path.display().to_string(),
        &known.display().to_string(),
        &groups,
    );
    let opts = keel::executor::RunOptions {
        forks: 1,
        limit: Some(host.name.clone()),
        extra_vars,
        ..Default::default()
    };
    execute(inventory, playbook, opts, ctx, log).await
}

/// Runs `playbook` against `inventory` (the engine's dynamic-inventory
/// JSON, handed over in memory) with `opts`, whose stop signal the job's
/// cancellation sets; the events go to `log`. A failed run is
/// [`ProvisionError::RoleRun`] naming the task that failed.
pub(super) async fn execute(
    inventory: serde_json::Value,
    playbook: std::path::PathBuf,
    mut opts: keel::executor::RunOptions,
    ctx: &JobContext,
    log: &JobLog,
) -> Result<keel::executor::RunSummary, ProvisionError> {
    let inventory = keel::inventory::Inventory::from_json(inventory)
        .map_err(|d| ProvisionError::Playbook(d.to_string()))?;
    let playbook_path = playbook;
    let playbook = tokio::task::spawn_blocking(move || {
        keel::playbook::load_playbook(&playbook_path, &Default::default())
    })
    .await
    .map_err(|e| ProvisionError::Playbook(e.to_string()))?
    .map_err(|d| ProvisionError::Playbook(d.to_string()))?;
    let stop = keel::executor::StopSignal::default();
    opts.stop = stop.clone();
    check_cancel(&ctx.cancel)?;
    // The job's token stops the run between two tasks: when the job is
    // cancelled, and after a lost lease, when another worker runs the
    // roles and two runs must not converge the host at once. The task in
    // progress finishes, so no module is cut off halfway.
    let watcher = {
        let (stop, cancel) = (stop.clone(), ctx.cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.stop();
        })
    };
    let failed_task = Arc::new(FailedTask::new(log.engine_sink()));
    let summary =
        keel::executor::run_playbook(&playbook, inventory, opts, failed_task.clone()).await;
    watcher.abort();
    if stop.is_stopped() {
        log.message("role run stopped between two tasks: the job was cancelled or its lease lost");
        return Err(ProvisionError::Cancelled);
    }
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

    Ok(summary)
}

/// Waits for the server's sshd, checks its host key byte for byte against
/// the one the panel generated (an alarm in the audit log when it differs)
/// and waits until the panel's key logs in, on the same connection, then
/// writes the VM's known_hosts from the panel's record. Returns the server's inventory entry. The role run
/// starts with it; a `restore` uses it to prove the restored server is
/// still the one the panel knows.
pub(super) async fn check_reachable(
    p: &Provisioner,
    id: i64,
    row: &ProvRow,
    log: &JobLog,
) -> Result<inventory::InventoryHost, ProvisionError> {
    // The endpoint recorded when the VM was created: asking the hypervisor
    // again here would let a transient API error use up a role-run attempt.
    let stored: Option<SocketAddr> = row.ssh_endpoint.as_deref().and_then(|e| e.parse().ok());
    // Every person of the site needs their UID before `keel_users` lists them.
    access::ensure_unix_ids(&p.db, &p.access, None).await?;
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
    log.message(format!("waiting for sshd of {} at {addr}", row.vm_name));
    hostkey::wait_for_banner(addr, Duration::from_secs(p.config.ssh_wait_secs)).await?;
    log.message(format!("sshd of {} answered", row.vm_name));
    if let Err(e) = hostkey::verify_and_log_in(
        addr,
        &row.host_key_public,
        &p.config.admin_user,
        &p.panel_key()?.private_path,
        Duration::from_secs(p.config.ssh_wait_secs),
    )
    .await
    {
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
    Ok(host)
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
