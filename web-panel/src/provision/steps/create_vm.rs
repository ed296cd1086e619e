//! The `provision` job (step `create_vm`): the address claimed (or kept),
//! a new seed identity when the VM is built afresh, the VM created and
//! started through the driver, then the OS-ready wait armed — or
//! `configure` queued at once when the VM has already called back. A
//! retry after a failed role run goes straight back to `configure`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::failure::{fail, step_error};
use super::kit::{
    check_cancel, hypervisor_policy, insert_seed, prov, read_state, renew_seed, vm_exists, ProvRow,
    ServiceFacts,
};
use crate::alloc;
use crate::db::tx_conn;
use crate::domain::Principal;
use crate::hypervisor::seed::{self, HostKeys, SeedParams};
use crate::hypervisor::{NetIdentity, PowerState, VmInfo, VmSpec};
use crate::lifecycle::jobs::{ConfigureJob, FlowJob, OsReadyJob, ProvisionJob};
use crate::lifecycle::{transition, Status, Step};
use crate::provision::{callback, FailureReason, ProvisionError, Provisioner};
use crate::queue::worker::record_failure;
use crate::queue::{self, Failure, Job, JobContext, JobError, JobHandler, RetryPolicy};
use crate::store::{Store, StoreError};
use crate::{execute, scalar};

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
    if p.hosts.is_empty() {
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
    }
    let name = p.vm_name(id);
    let exists = vm_exists(p, id, &name).await?;
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
        p.require_driver_for(id).await?.delete(&name).await?;
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
    // A retry after a failure that gave the host's room back takes room
    // again, in the transaction that re-claims the address.
    crate::services::hosts::place_again(&mut conn, id, crate::services::hosts::Among::Any)
        .await
        .map_err(ProvisionError::from_panel)?;
    match &current {
        None => {
            let keys = HostKeys::generate(&name)?;
            insert_seed(
                &mut conn,
                id,
                &name,
                allocation.pool_type.as_str(),
                &keys,
                now,
            )
            .await?;
        }
        Some(r) if fresh_seed || r.host_key_private.is_none() => {
            let keys = HostKeys::generate(&name)?;
            renew_seed(&mut conn, id, &keys, now).await?;
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

    // creating_vm: the driver of the host the service was placed on builds
    // the VM from the seed (idempotent by name).
    let driver = p.require_driver_for(id).await?;
    let spec = vm_spec(p, &name, &svc, &allocation, &row)?;
    check_cancel(cancel)?;
    let info = driver.create(&spec).await?;
    check_cancel(cancel)?;
    driver.start(&name).await?;

    // installing_os: record the VM, forget the private host key, arm the timeout.
    let mut tx = p.db.begin().await?;
    if hand_over(p, &mut tx, id, driver.kind(), &svc, &info, row.generation).await? {
        tx.commit().await?;
        tracing::info!(service_id = id, vm = %name, "VM created and started");
    }
    Ok(())
}

/// What the driver builds the service's VM from: its sizes and image, and
/// the seed of its provisioning row's generation (its address, the host
/// keys the panel generated, the signed phone-home URL). `row` must still
/// hold the private host key.
pub(super) fn vm_spec(
    p: &Provisioner,
    name: &str,
    svc: &ServiceFacts,
    allocation: &crate::alloc::Allocation,
    row: &ProvRow,
) -> Result<VmSpec, ProvisionError> {
    let private = row
        .host_key_private
        .clone()
        .ok_or_else(|| ProvisionError::Missing("host keys are gone before the seed".into()))?;
    let host_keys = HostKeys {
        ed25519_private: private,
        ed25519_public: row.host_key_public.clone(),
        fingerprint: String::new(),
    };
    // The pool's network: where the NIC goes, the resolvers, the callback.
    let network = p.network_of(&allocation.pool);
    let mut net = net_identity(allocation)?;
    net.attach = network.map(|n| n.attachment()).unwrap_or_default();
    let spec_net = net.clone();
    let base = p.callback_base(network, allocation.gateway4.as_deref())?;
    let mut params = SeedParams::new(format!("{name}-g{}", row.generation), net, host_keys);
    params.admin_user = p.config.admin_user.clone();
    params.authorized_keys = vec![p.panel_key()?.public_line.clone()];
    params.nameservers = p.nameservers(network, &spec_net);
    params.phone_home_url = Some(callback::callback_url(
        &base,
        &row.callback_secret,
        name,
        row.generation,
    ));
    Ok(VmSpec {
        name: name.to_string(),
        cpus: svc.cpus.max(1) as u32,
        ram_mb: svc.ram_mb.max(1) as u64,
        disk_gb: svc.disk_gb.max(1) as u64,
        image: svc.os_image.clone(),
        seed: seed::render(&params)?,
        net: spec_net,
    })
}

/// A VM built from the seed of `generation` is running: in `tx`, record it
/// (`vms`), forget the private host key and move the service from
/// `creating_vm` on to `installing_os` with its OS-ready wait, or straight
/// to `configuring` with `configure` queued when the VM has called back
/// already (it boots while the step is between `start` and this commit,
/// or the step was cut off and run again; cloud-init phones home once per
/// instance, so waiting now would time out a healthy VM). False, changing
/// nothing, when the service left `creating_vm` meanwhile (deleted:
/// `deprovision` removes the VM). `provision` and `clone` end with it.
pub(super) async fn hand_over(
    p: &Provisioner,
    tx: &mut crate::store::Tx,
    id: i64,
    hypervisor: &str,
    svc: &ServiceFacts,
    info: &VmInfo,
    generation: i64,
) -> Result<bool, ProvisionError> {
    let system = Principal::system();
    let now = p.db.now();
    let mut conn = tx_conn(tx);
    let status = scalar!(
        &mut conn,
        Status,
        "SELECT status FROM services WHERE id = $1",
        id
    )?;
    if status != Some(Status::CreatingVm) {
        return Ok(false);
    }
    execute!(
        &mut conn,
        "INSERT INTO vms (service_id, hypervisor, vm_ref, cpus, ram_mb, disk_gb, power_state, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (service_id) DO UPDATE SET hypervisor = excluded.hypervisor, vm_ref = excluded.vm_ref, \
           cpus = excluded.cpus, ram_mb = excluded.ram_mb, disk_gb = excluded.disk_gb, \
           power_state = excluded.power_state, updated_at = excluded.updated_at",
        id,
        hypervisor,
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
    let called_back = scalar!(
        &mut conn,
        i64,
        "SELECT callback_at FROM vm_provisioning \
         WHERE service_id = $1 AND generation = $2 AND callback_at IS NOT NULL",
        id,
        generation
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
        queue::enqueue(tx, ConfigureJob { service_id: id }.spec(None)).await?;
        tracing::info!(
            service_id = id,
            "the VM has already called back; configure queued"
        );
        return Ok(true);
    }
    let wait = OsReadyJob {
        service_id: id,
        generation,
        resets: 0,
    };
    queue::enqueue(
        tx,
        wait.spec(Duration::from_secs(p.config.os_ready_timeout_secs)),
    )
    .await?;
    Ok(true)
}

pub(super) fn net_identity(a: &crate::alloc::Allocation) -> Result<NetIdentity, ProvisionError> {
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
        prefix6: match a.prefix6 {
            Some(p) => u8::try_from(p)
                .ok()
                .filter(|p| *p <= 128)
                .ok_or_else(|| bad("prefix6", &p.to_string()))?,
            None => crate::hypervisor::DEFAULT_PREFIX6,
        },
        gateway6: a
            .gateway6
            .as_deref()
            .map(|v| v.parse().map_err(|_| bad("gateway6", v)))
            .transpose()?,
        attach: crate::hypervisor::Attachment::Private,
    })
}
