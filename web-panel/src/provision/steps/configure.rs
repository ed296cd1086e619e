//! The `configure` job: the sshd banner wait and the exact host-key check,
//! then the role run (`keel::executor::run_playbook`) against this one
//! host with the panel's key and the VM's own known_hosts, its events
//! streamed to the job log; `ready` when it succeeds. Also the request
//! for one more run of a ready server ([`reconverge`]).

use std::sync::Arc;
use std::time::Duration;

use super::failure::{fail, step_error};
use super::kit::read_state;
use super::role_run::run_roles_then;
use crate::audit::{self, Change};
use crate::db::{tx_conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{ConfigureJob, FlowJob};
use crate::lifecycle::{transition, Status, Step};
use crate::provision::{FailureReason, ProvisionError, Provisioner};
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

/// The retry policy of a role run that configures servers (`configure`,
/// and a stack's `stack_configure`).
pub(super) fn policy(p: &Provisioner) -> RetryPolicy {
    RetryPolicy::fixed(Duration::from_secs(p.config.configure_retry_secs))
        .max_attempts(p.config.configure_attempts)
}

/// `configure`: host-key check, then `playbook` against this one host.
pub struct ConfigureStep(pub Arc<Provisioner>);

#[async_trait::async_trait]
impl JobHandler for ConfigureStep {
    fn policy(&self) -> RetryPolicy {
        policy(&self.0)
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
    let log = crate::queue::log::JobLog::open(ctx)
        .await
        .map_err(PanelError::from)?;
    // A stack server type's playbook runs after the panel's own; a
    // multi-server stack's runs later, against all its servers at once.
    let (then, stack_id) = match super::stack::stack_id_of(p, id).await {
        Err(e) => (Err(e), None),
        Ok(Some(stack_id)) => (Ok(None), Some(stack_id)),
        Ok(None) => match super::stack::stack_of(p, id).await {
            Ok(Some(stack)) => (super::stack::then_run(p, id, &stack).await.map(Some), None),
            Ok(None) => (Ok(None), None),
            Err(e) => (Err(e), None),
        },
    };
    let then = match then {
        Ok(t) => t,
        Err(e) => {
            log.message(e.to_string());
            let _ = log.close().await;
            return Err(e);
        }
    };
    run_roles_then(p, id, &row, &p.config.playbook, then, ctx, log).await?;

    if let Some(stack_id) = stack_id {
        // The stack's run makes it ready, once every member got here.
        super::stack::base_done(p, id, stack_id).await?;
        tracing::info!(
            service_id = id,
            stack_id,
            "roles applied; waiting for the stack's run"
        );
        return Ok(());
    }
    let now = p.db.now();
    let mut tx = p.db.begin().await?;
    make_ready(p, &mut tx, now, id).await?;
    tx.commit().await?;
    tracing::info!(service_id = id, vm = %row.vm_name, "roles applied; service ready");
    Ok(())
}

/// A configured server becomes `ready` in `tx`, and what waited for that
/// is queued: a test server's clone is done, its DNS records, the vhosts
/// and system packages stored before it was ready.
pub(super) async fn make_ready(
    p: &Provisioner,
    tx: &mut crate::store::Tx,
    now: i64,
    id: i64,
) -> Result<(), ProvisionError> {
    let mut conn = tx_conn(tx);
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
    // A test server rebuilt from production's disk is now its copy.
    crate::services::testservers::finish_booting(&mut conn, now, id, None).await?;
    super::dns::queue_publish(p, tx, id).await?;
    // The server's vhosts, stored before it was ready, are applied now.
    crate::services::vhosts::queue_if_any(tx, id).await?;
    // So are the system packages picked for it.
    crate::services::packages::queue_if_any(tx, id).await?;
    Ok(())
}
