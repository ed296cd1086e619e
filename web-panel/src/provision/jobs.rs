//! The provisioning steps as queue jobs. Every job's payload is a struct
//! of `lifecycle::jobs` carrying `service_id`; each runs under the
//! serialisation key `service:ID` (one step of a service at a time) and is
//! idempotent: it reads the service's status and its `vm_provisioning`
//! row, does what is still missing, and moves the status on (through
//! `lifecycle::transition`, only from the statuses the lifecycle table
//! gives the step) in the same transaction that enqueues the next step.
//!
//! | job | status it acts on | policy | on permanent failure |
//! | --- | --- | --- | --- |
//! | `provision` | requested, allocating, creating_vm | hypervisor API (every 5 min, 24 h) | failed; VM deleted, then address released |
//! | `vm_os_ready` | installing_os, callback missing | hypervisor API; a reset per timeout, N times | failed (unless the callback won); VM deleted, then address released |
//! | `configure` | configuring, ready (re-converge) | 3 attempts | failed; VM kept for inspection |
//! | `deprovision` | deleting | hypervisor API | recorded for admins (status stays deleting) |
//! | `power` (`power.rs`) | ready | hypervisor API | recorded for admins (status stays ready) |
//!
//! `retry` (in `services::servers`) puts a failed service back to
//! `requested` with a new `provision` job; `provision` resumes from the
//! failed step: the role run when the VM is still there, otherwise a new VM
//! (any leftover VM deleted first, a new seed generation, new host keys, the
//! address kept, or re-claimed if it was released).
//!
//! A callback can arrive before `provision` commits `installing_os` (the VM
//! boots fast, or the step is cut off after `start`); it is recorded, and
//! `provision` then queues `configure` itself instead of arming the
//! OS-ready wait. The address is released only after the driver confirmed
//! the VM's deletion. Steps check `ctx.cancel` between hypervisor calls and
//! race the role run against it, so an attempt whose lease was lost stops
//! instead of running beside its successor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{callback, hostkey, inventory, FailureReason, ProvisionError, Provisioner};
use crate::alloc;
use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::hypervisor::seed::{self, HostKeys, SeedParams};
use crate::hypervisor::{DriverError, NetIdentity, PowerState, VmSpec};
use crate::lifecycle::jobs::{
    ConfigureJob, DeprovisionJob, FlowJob, OsReadyJob, PowerJob, ProvisionJob,
};
use crate::lifecycle::{transition, Status, Step};
use crate::queue::worker::record_failure;
use crate::queue::{self, Failure, Job, JobContext, JobError, JobHandler, Registry, RetryPolicy};
use crate::store::{Store, StoreError};
use crate::{execute, fetch_opt, scalar};

/// Registers the flow's handlers, one per job kind of `lifecycle::jobs`:
/// `provision`, `vm_os_ready`, `configure`, `deprovision` and `power`.
/// Without a hypervisor driver they still run, and fail the service with
/// a reason an admin can act on (or delete it, when asked to).
pub fn register(registry: &mut Registry, p: Arc<Provisioner>) {
    registry.register(ProvisionJob::KIND, ProvisionStep(p.clone()));
    registry.register(OsReadyJob::KIND, OsReadyStep(p.clone()));
    registry.register(ConfigureJob::KIND, ConfigureStep(p.clone()));
    registry.register(PowerJob::KIND, super::power::PowerStep(p.clone()));
    registry.register(DeprovisionJob::KIND, DeprovisionStep(p));
}

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

fn hypervisor_policy(p: &Provisioner) -> RetryPolicy {
    RetryPolicy::fixed(Duration::from_secs(p.config.api_retry_secs))
        .max_attempts(p.config.api_retry_attempts)
}

#[derive(sqlx::FromRow)]
struct ServiceFacts {
    status: Status,
    cpus: i64,
    ram_mb: i64,
    disk_gb: i64,
    os_image: String,
}

#[derive(sqlx::FromRow, Clone)]
struct ProvRow {
    vm_name: String,
    pool_type: String,
    callback_secret: String,
    host_key_public: String,
    host_key_private: Option<String>,
    generation: i64,
    resets: i64,
    callback_at: Option<i64>,
    failed_step: Option<Step>,
    /// Where the driver said sshd is reached (user-mode forwards); `None`
    /// means the allocated address.
    ssh_endpoint: Option<String>,
}

const PROV_SELECT: &str =
    "SELECT vm_name, pool_type, callback_secret, host_key_public, host_key_private, \
     generation, resets, callback_at, failed_step, ssh_endpoint FROM vm_provisioning WHERE service_id = $1";

async fn facts(conn: &mut Conn<'_>, id: i64) -> Result<Option<ServiceFacts>, sqlx::Error> {
    fetch_opt!(
        conn,
        ServiceFacts,
        "SELECT s.status, s.cpus, s.ram_mb, s.disk_gb, t.os_image FROM services s \
         JOIN server_types t ON t.id = s.server_type_id WHERE s.id = $1",
        id
    )
}

async fn prov(conn: &mut Conn<'_>, id: i64) -> Result<Option<ProvRow>, sqlx::Error> {
    fetch_opt!(conn, ProvRow, PROV_SELECT, id)
}

async fn read_state(
    db: &Db,
    id: i64,
) -> Result<(Option<ServiceFacts>, Option<ProvRow>), ProvisionError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    Ok((facts(&mut conn, id).await?, prov(&mut conn, id).await?))
}

/// Whether the VM exists on the hypervisor.
async fn vm_exists(p: &Provisioner, name: &str) -> Result<bool, ProvisionError> {
    let Some(driver) = &p.driver else {
        return Ok(false);
    };
    match driver.status(name).await {
        Ok(_) => Ok(true),
        Err(DriverError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn net_identity(a: &crate::alloc::Allocation) -> Result<NetIdentity, ProvisionError> {
    let bad =
        |what: &str, v: &str| ProvisionError::Missing(format!("address {what} {v:?} is invalid"));
    let ipv4 = a
        .ipv4
        .as_deref()
        .map(|v| v.parse().map_err(|_| bad("ipv4", v)))
        .transpose()?;
    let prefix4 = match a.netmask4.as_deref() {
        Some(m) => {
            let mask: std::net::Ipv4Addr = m.parse().map_err(|_| bad("netmask4", m))?;
            u32::from(mask).count_ones() as u8
        }
        None => 24,
    };
    Ok(NetIdentity {
        hostname: a.hostname.clone(),
        ipv4,
        prefix4,
        gateway4: a
            .gateway4
            .as_deref()
            .map(|v| v.parse().map_err(|_| bad("gateway4", v)))
            .transpose()?,
        ipv6: a
            .ipv6
            .as_deref()
            .map(|v| v.parse().map_err(|_| bad("ipv6", v)))
            .transpose()?,
        gateway6: a
            .gateway6
            .as_deref()
            .map(|v| v.parse().map_err(|_| bad("gateway6", v)))
            .transpose()?,
    })
}

// ---------------------------------------------------------------- provision

/// `provision`: allocation, seed, VM create and start.
pub struct ProvisionStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for ProvisionStep {
    fn policy(&self) -> RetryPolicy {
        hypervisor_policy(&self.0)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = ProvisionJob::decode(ctx.payload())?.service_id;
        provision(&self.0, id, &ctx.cancel)
            .await
            .map_err(|e| step_error(&self.0, Step::CreateVm, e))
    }

    async fn on_failure(
        &self,
        store: &Store,
        job: &Job,
        failure: Failure<'_>,
    ) -> Result<(), StoreError> {
        if let Ok(ProvisionJob { service_id: id }) = ProvisionJob::decode(&job.payload) {
            let reason = FailureReason::from_detail(Step::CreateVm, failure.detail);
            fail(&self.0, id, &reason).await;
        }
        record_failure(store, job, failure.error).await
    }
}

/// Stops a step between two actions once its job is no longer its own.
fn check_cancel(cancel: &CancellationToken) -> Result<(), ProvisionError> {
    if cancel.is_cancelled() {
        Err(ProvisionError::Cancelled)
    } else {
        Ok(())
    }
}

async fn provision(
    p: &Provisioner,
    id: i64,
    cancel: &CancellationToken,
) -> Result<(), ProvisionError> {
    let system = Principal::system();
    let (Some(svc), existing) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    let owned = Status::owned_by(Step::CreateVm);
    if !owned.contains(&svc.status) {
        return Ok(());
    }
    let Some(driver) = p.driver.clone() else {
        let now = p.db.now();
        let mut tx = p.db.begin().await?;
        let mut conn = tx_conn(&mut tx);
        transition(
            &mut conn,
            now,
            &system,
            id,
            &owned,
            Status::Failed,
            Some("no hypervisor driver is configured"),
        )
        .await?;
        tx.commit().await?;
        return Ok(());
    };
    let name = p.vm_name(id);
    let exists = vm_exists(p, &name).await?;
    // `requested` with a provisioning row: a retry of a failed service (a
    // first run has no row yet, and a resumed one is past `requested`).
    let retrying = svc.status == Status::Requested && existing.is_some();

    // A retry after a failed role run: the VM is still there, run the roles again.
    if retrying && exists {
        let resume_configure = existing.as_ref().is_some_and(|r| {
            r.callback_at.is_some()
                && matches!(r.failed_step, Some(Step::Configure | Step::HostKey))
        });
        if resume_configure {
            let now = p.db.now();
            let mut tx = p.db.begin().await?;
            let mut conn = tx_conn(&mut tx);
            execute!(
                &mut conn,
                "UPDATE vm_provisioning SET failed_step = NULL, updated_at = $2 WHERE service_id = $1",
                id,
                now
            )?;
            if !transition(
                &mut conn,
                now,
                &system,
                id,
                &[Status::Requested],
                Status::Configuring,
                None,
            )
            .await?
            {
                // Deleted meanwhile.
                return Ok(());
            }
            queue::enqueue(&mut tx, ConfigureJob { service_id: id }.spec(None)).await?;
            tx.commit().await?;
            return Ok(());
        }
    }

    // Any other retry starts afresh: a VM left over from the failed attempt
    // (its compensation could not delete it) was built for that attempt's
    // seed and maybe another address, and one whose seed is spent cannot be
    // trusted to call back with the current generation. It goes first; the
    // address is kept or re-claimed below, and the seed is new.
    let fresh_seed = retrying
        || existing
            .as_ref()
            .is_some_and(|r| r.host_key_private.is_none());
    if fresh_seed && exists {
        driver.delete(&name).await?;
    }

    // allocating -> creating_vm: address, provisioning row, (new) seed identity.
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let status = scalar!(
        &mut conn,
        Status,
        "SELECT status FROM services WHERE id = $1",
        id
    )?;
    if !status.is_some_and(|s| owned.contains(&s)) {
        return Ok(());
    }
    transition(
        &mut conn,
        now,
        &system,
        id,
        &[Status::Requested],
        Status::Allocating,
        None,
    )
    .await?;
    let current = prov(&mut conn, id).await?;
    let allocation = match alloc::allocation_of(&mut conn, id).await? {
        Some(a) => a,
        None => {
            let pool_type = current
                .as_ref()
                .map(|r| r.pool_type.clone())
                .unwrap_or_else(|| "public".to_string());
            alloc::claim(&mut conn, &pool_type, id, now)
                .await?
                .ok_or(ProvisionError::PoolExhausted { pool_type })?
        }
    };
    match &current {
        None => {
            let keys = HostKeys::generate(&name)?;
            execute!(
                &mut conn,
                "INSERT INTO vm_provisioning (service_id, vm_name, pool_type, callback_secret, \
                   host_key_public, host_key_private, generation, resets, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 1, 0, $7, $7)",
                id,
                name.as_str(),
                allocation.pool_type.as_str(),
                callback::new_secret()?,
                keys.ed25519_public.as_str(),
                keys.ed25519_private.as_str(),
                now
            )?;
        }
        Some(r) if fresh_seed || r.host_key_private.is_none() => {
            let keys = HostKeys::generate(&name)?;
            execute!(
                &mut conn,
                "UPDATE vm_provisioning SET callback_secret = $2, host_key_public = $3, \
                   host_key_private = $4, generation = generation + 1, resets = 0, \
                   callback_at = NULL, callback_generation = NULL, failed_step = NULL, \
                   ssh_endpoint = NULL, updated_at = $5 WHERE service_id = $1",
                id,
                callback::new_secret()?,
                keys.ed25519_public.as_str(),
                keys.ed25519_private.as_str(),
                now
            )?;
        }
        Some(_) => {}
    }
    transition(
        &mut conn,
        now,
        &system,
        id,
        &[Status::Allocating],
        Status::CreatingVm,
        None,
    )
    .await?;
    let row = prov(&mut conn, id)
        .await?
        .ok_or_else(|| ProvisionError::Missing("provisioning row vanished".into()))?;
    tx.commit().await?;

    // creating_vm: the driver builds the VM from the seed (idempotent by name).
    let private = row
        .host_key_private
        .clone()
        .ok_or_else(|| ProvisionError::Missing("host keys are gone before the seed".into()))?;
    let host_keys = HostKeys {
        ed25519_private: private,
        ed25519_public: row.host_key_public.clone(),
        fingerprint: String::new(),
    };
    let net = net_identity(&allocation)?;
    let spec_net = net.clone();
    let base = p.callback_base(allocation.gateway4.as_deref())?;
    let mut params = SeedParams::new(format!("{name}-g{}", row.generation), net, host_keys);
    params.admin_user = p.config.admin_user.clone();
    params.authorized_keys = vec![p.panel_key()?.public_line.clone()];
    params.nameservers = p.nameservers(&spec_net);
    params.phone_home_url = Some(callback::callback_url(
        &base,
        &row.callback_secret,
        &name,
        row.generation,
    ));
    let spec = VmSpec {
        name: name.clone(),
        cpus: svc.cpus.max(1) as u32,
        ram_mb: svc.ram_mb.max(1) as u64,
        disk_gb: svc.disk_gb.max(1) as u64,
        image: svc.os_image.clone(),
        seed: seed::render(&params)?,
        net: spec_net,
    };
    check_cancel(cancel)?;
    let info = driver.create(&spec).await?;
    check_cancel(cancel)?;
    driver.start(&name).await?;

    // installing_os: record the VM, forget the private host key, arm the timeout.
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let status = scalar!(
        &mut conn,
        Status,
        "SELECT status FROM services WHERE id = $1",
        id
    )?;
    if status != Some(Status::CreatingVm) {
        // Deleted meanwhile: `deprovision` removes the VM.
        return Ok(());
    }
    execute!(
        &mut conn,
        "INSERT INTO vms (service_id, hypervisor, vm_ref, cpus, ram_mb, disk_gb, power_state, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (service_id) DO UPDATE SET hypervisor = excluded.hypervisor, vm_ref = excluded.vm_ref, \
           cpus = excluded.cpus, ram_mb = excluded.ram_mb, disk_gb = excluded.disk_gb, \
           power_state = excluded.power_state, updated_at = excluded.updated_at",
        id,
        driver.kind(),
        info.vm_ref.as_str(),
        svc.cpus,
        svc.ram_mb,
        svc.disk_gb,
        PowerState::Running.as_db(),
        now
    )?;
    execute!(
        &mut conn,
        "UPDATE vm_provisioning SET host_key_private = NULL, ssh_endpoint = $2, failed_step = NULL, \
         updated_at = $3 WHERE service_id = $1",
        id,
        info.ssh_endpoint.map(|a| a.to_string()),
        now
    )?;
    // The VM may have called back already (it boots while this step is
    // still between `start` and this commit, or this step was cut off and
    // re-run). cloud-init phones home once per instance, so waiting for a
    // callback now would time out a healthy VM: go on to `configure`.
    let called_back = scalar!(
        &mut conn,
        i64,
        "SELECT callback_at FROM vm_provisioning \
         WHERE service_id = $1 AND generation = $2 AND callback_at IS NOT NULL",
        id,
        row.generation
    )?
    .is_some();
    transition(
        &mut conn,
        now,
        &system,
        id,
        &[Status::CreatingVm],
        Status::InstallingOs,
        None,
    )
    .await?;
    if called_back {
        // Both statuses in one transaction: the history still shows that
        // the OS installed, and nothing ever waits in `installing_os`.
        transition(
            &mut conn,
            now,
            &system,
            id,
            &[Status::InstallingOs],
            Status::Configuring,
            None,
        )
        .await?;
        queue::enqueue(&mut tx, ConfigureJob { service_id: id }.spec(None)).await?;
        tx.commit().await?;
        tracing::info!(service_id = id, vm = %name, "VM created and already called back; configure queued");
        return Ok(());
    }
    let wait = OsReadyJob {
        service_id: id,
        generation: row.generation,
        resets: 0,
    };
    queue::enqueue(
        &mut tx,
        wait.spec(Duration::from_secs(p.config.os_ready_timeout_secs)),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(service_id = id, vm = %name, "VM created and started; waiting for its callback");
    Ok(())
}

// ---------------------------------------------------------------- OS ready

/// `vm_os_ready`: fires when the OS-ready wait times out. If the callback
/// has not come, power-cycle the VM and wait again; give up after
/// `os_ready_resets` cycles.
pub struct OsReadyStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for OsReadyStep {
    fn policy(&self) -> RetryPolicy {
        hypervisor_policy(&self.0)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let job = OsReadyJob::decode(ctx.payload())?;
        os_ready(&self.0, job, &ctx.cancel)
            .await
            .map_err(|e| step_error(&self.0, Step::OsReady, e))
    }

    async fn on_failure(
        &self,
        store: &Store,
        job: &Job,
        failure: Failure<'_>,
    ) -> Result<(), StoreError> {
        if let Ok(OsReadyJob { service_id: id, .. }) = OsReadyJob::decode(&job.payload) {
            let reason = FailureReason::from_detail(Step::OsReady, failure.detail);
            fail(&self.0, id, &reason).await;
        }
        record_failure(store, job, failure.error).await
    }
}

async fn os_ready(
    p: &Provisioner,
    job: OsReadyJob,
    cancel: &CancellationToken,
) -> Result<(), ProvisionError> {
    let OsReadyJob {
        service_id: id,
        generation,
        resets,
    } = job;
    let (Some(svc), Some(row)) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    let waiting = svc.status.owner() == Some(Step::OsReady)
        && row.callback_at.is_none()
        && row.generation == generation;
    if !waiting {
        return Ok(());
    }
    if row.resets == resets {
        if row.resets >= i64::from(p.config.os_ready_resets) {
            return Err(ProvisionError::NoCallback {
                timeout_secs: p.config.os_ready_timeout_secs,
                resets: row.resets,
            });
        }
        check_cancel(cancel)?;
        // Claim the power cycle before doing it, under the same conditions
        // the callback's UPDATE tests: a VM that has called back by now is
        // never reset, and the next wait is armed in the same transaction.
        if !claim_reset(p, id, &row).await? {
            return Ok(());
        }
    } else if row.resets != resets + 1 {
        // Neither this job's wait nor its claimed reset: stale.
        return Ok(());
    }
    // Claimed (now, or by an earlier attempt of this job whose driver call
    // failed): the VM still has not called back, so power-cycle it.
    check_cancel(cancel)?;
    let driver = p
        .driver
        .as_ref()
        .ok_or_else(|| ProvisionError::Missing("no hypervisor driver is configured".into()))?;
    match driver.reset(&row.vm_name).await {
        Ok(()) => {}
        // A stopped VM cannot be reset; start it instead.
        Err(DriverError::Permanent(_)) => driver.start(&row.vm_name).await?,
        Err(e) => return Err(e.into()),
    }
    tracing::warn!(service_id = id, vm = %row.vm_name, resets = resets + 1, "no callback in time: VM power-cycled");
    Ok(())
}

/// Counts one power cycle of a VM that is still waiting for its callback
/// and arms the next wait; false when the callback (or another attempt)
/// got there first.
async fn claim_reset(p: &Provisioner, id: i64, row: &ProvRow) -> Result<bool, ProvisionError> {
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let bumped = execute!(
        &mut conn,
        "UPDATE vm_provisioning SET resets = resets + 1, updated_at = $4 \
         WHERE service_id = $1 AND resets = $2 AND generation = $3 AND callback_at IS NULL \
           AND EXISTS (SELECT 1 FROM services s WHERE s.id = $1 AND s.status = $5)",
        id,
        row.resets,
        row.generation,
        now,
        Status::InstallingOs
    )?;
    if bumped != 1 {
        return Ok(false);
    }
    audit::record(
        &mut conn,
        now,
        &Principal::system(),
        Change {
            action: "service.vm_reset",
            object_type: "service",
            object_id: Some(id),
            before: None,
            after: Some(json!({ "vm": row.vm_name, "resets": row.resets + 1 })),
        },
    )
    .await?;
    let next = OsReadyJob {
        service_id: id,
        generation: row.generation,
        resets: row.resets + 1,
    };
    queue::enqueue(
        &mut tx,
        next.spec(Duration::from_secs(p.config.os_ready_timeout_secs)),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

// ---------------------------------------------------------------- configure

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

    // The role run: the panel's inventory for this one host, its key, its known_hosts.
    let inv_path = p.inventory_path(&row.vm_name);
    if let Some(dir) = inv_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProvisionError::io(format!("creating {}", dir.display()), e))?;
    }
    let inv = inventory::for_role_run(
        &host,
        &p.panel_key()?.private_path.display().to_string(),
        &known.display().to_string(),
    );
    std::fs::write(
        &inv_path,
        serde_json::to_vec_pretty(&inv).unwrap_or_default(),
    )
    .map_err(|e| ProvisionError::io(format!("writing {}", inv_path.display()), e))?;
    let playbook_path = p.config.playbook.clone();
    let playbook = tokio::task::spawn_blocking(move || {
        keel::playbook::load_playbook(&playbook_path, &Default::default())
    })
    .await
    .map_err(|e| ProvisionError::Playbook(e.to_string()))?
    .map_err(|d| ProvisionError::Playbook(d.to_string()))?;
    let inventory = keel::inventory::Inventory::load_async(
        vec![inv_path.display().to_string()],
        keel::inventory::LoadOptions {
            http_token: None,
            ..Default::default()
        },
    )
    .await
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

// ---------------------------------------------------------------- failure

/// A step's error for the queue, with the tenant's reason attached for
/// its `on_failure` (see `reason.rs`).
fn step_error(p: &Provisioner, step: Step, e: ProvisionError) -> JobError {
    e.into_step_error(step, p.config.os_ready_resets)
}

/// A step failed for good: `failed` with the reason and the step; for
/// steps before the OS is up, the VM is deleted and the address released
/// (into quarantine).
///
/// The status changes first, and only if the step still owns the service:
/// `vm_os_ready` fails only a service still in `installing_os` with no
/// callback (a callback that won the race keeps its `configuring`), and
/// `provision` only one it has not handed on. The VM is deleted after that
/// commit, and the address is released only once the driver confirmed the
/// delete: a VM that could not be deleted keeps its `vms` row and its
/// address, and a retry deletes it before building a new one.
async fn fail(p: &Provisioner, id: i64, reason: &FailureReason) {
    let step = reason.step();
    let marked = mark_failed(p, id, step, &reason.to_string()).await;
    match marked {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(service_id = id, error = %e, "could not mark the service failed");
            return;
        }
    }
    if !step.deletes_vm_on_failure() {
        return;
    }
    if let Some(driver) = &p.driver {
        if let Err(e) = driver.delete(&p.vm_name(id)).await {
            tracing::error!(
                service_id = id,
                error = %e,
                "compensation: could not delete the VM; its address stays allocated until a retry or delete removes it"
            );
            return;
        }
    }
    if let Err(e) = release_after_delete(&p.db, id).await {
        tracing::error!(service_id = id, error = %e, "compensation: could not release the address");
    }
}

/// `failed` for `step`, if the step still owns the service; false when it
/// does not (the service moved on, or is already failed or going away).
async fn mark_failed(
    p: &Provisioner,
    id: i64,
    step: Step,
    reason: &str,
) -> Result<bool, PanelError> {
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let Some(callback_at) = scalar!(
        &mut conn,
        Option<i64>,
        "SELECT p.callback_at FROM services s \
         LEFT JOIN vm_provisioning p ON p.service_id = s.id WHERE s.id = $1",
        id
    )?
    else {
        return Ok(false);
    };
    let from = step.failable(callback_at.is_some());
    if !transition(
        &mut conn,
        now,
        &Principal::system(),
        id,
        &from,
        Status::Failed,
        Some(reason),
    )
    .await?
    {
        return Ok(false);
    }
    execute!(
        &mut conn,
        "UPDATE vm_provisioning SET failed_step = $2, updated_at = $3 WHERE service_id = $1",
        id,
        step,
        now
    )?;
    tx.commit().await?;
    Ok(true)
}

/// After a confirmed VM delete: forget the VM and release the address,
/// unless the service left `failed` meanwhile (a retry now owns both).
/// The second half of compensation, once the VM is confirmed gone: drop
/// the VM row and release the address (into quarantine), if the service is
/// still `failed`. Also used by reconciliation to finish a compensation
/// whose delete failed earlier.
pub(crate) async fn release_after_delete(db: &Db, id: i64) -> Result<(), PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let status = scalar!(
        &mut conn,
        Status,
        "SELECT status FROM services WHERE id = $1",
        id
    )?;
    if status != Some(Status::Failed) {
        return Ok(());
    }
    execute!(&mut conn, "DELETE FROM vms WHERE service_id = $1", id)?;
    alloc::release(&mut conn, id, now).await?;
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------- deprovision

/// `deprovision`: power off and delete the VM, forget its host key,
/// release the address, `deleted`.
pub struct DeprovisionStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for DeprovisionStep {
    fn policy(&self) -> RetryPolicy {
        hypervisor_policy(&self.0)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = DeprovisionJob::decode(ctx.payload())?.service_id;
        deprovision(&self.0, id)
            .await
            .map_err(ProvisionError::into_job_error)
    }
}

async fn deprovision(p: &Provisioner, id: i64) -> Result<(), ProvisionError> {
    let (Some(svc), _) = read_state(&p.db, id).await? else {
        return Ok(());
    };
    if svc.status.owner() != Some(Step::Deprovision) {
        return Ok(());
    }
    let name = p.vm_name(id);
    if let Some(driver) = &p.driver {
        match driver.power_off(&name).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        driver.delete(&name).await?;
    }
    hostkey::remove_known_hosts(&p.known_hosts_path(&name))?;
    let _ = std::fs::remove_file(p.inventory_path(&name));
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let status = scalar!(
        &mut conn,
        Status,
        "SELECT status FROM services WHERE id = $1",
        id
    )?;
    if status.and_then(Status::owner) != Some(Step::Deprovision) {
        return Ok(());
    }
    execute!(&mut conn, "DELETE FROM vms WHERE service_id = $1", id)?;
    alloc::release(&mut conn, id, now).await?;
    transition(
        &mut conn,
        now,
        &Principal::system(),
        id,
        &Status::owned_by(Step::Deprovision),
        Status::Deleted,
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
