//! What the steps share: the service and provisioning rows they read
//! ([`read_state`]), whether the VM exists, the hypervisor API retry
//! policy, and the stop between two actions once a job is no longer its
//! own. Below every step file; it knows no step.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{Conn, Db};
use crate::hypervisor::seed::HostKeys;
use crate::hypervisor::DriverError;
use crate::lifecycle::{Status, Step};
use crate::provision::{callback, ProvisionError, Provisioner};
use crate::queue::RetryPolicy;
use crate::{execute, fetch_opt};

/// The retry policy of steps that mostly wait on the hypervisor's API.
pub(super) fn hypervisor_policy(p: &Provisioner) -> RetryPolicy {
    RetryPolicy::fixed(Duration::from_secs(p.config.api_retry_secs))
        .max_attempts(p.config.api_retry_attempts)
}

/// The service columns every step decides on.
#[derive(sqlx::FromRow)]
pub(super) struct ServiceFacts {
    pub(super) status: Status,
    pub(super) cpus: i64,
    pub(super) ram_mb: i64,
    pub(super) disk_gb: i64,
    pub(super) os_image: String,
}

/// The service's `vm_provisioning` row.
#[derive(sqlx::FromRow, Clone)]
pub(super) struct ProvRow {
    pub(super) vm_name: String,
    pub(super) pool_type: String,
    pub(super) callback_secret: String,
    pub(super) host_key_public: String,
    pub(super) host_key_private: Option<String>,
    pub(super) generation: i64,
    pub(super) resets: i64,
    pub(super) callback_at: Option<i64>,
    pub(super) failed_step: Option<Step>,
    /// Where the driver said sshd is reached (user-mode forwards); `None`
    /// means the allocated address.
    pub(super) ssh_endpoint: Option<String>,
}

pub(super) const PROV_SELECT: &str =
    "SELECT vm_name, pool_type, callback_secret, host_key_public, host_key_private, \
     generation, resets, callback_at, failed_step, ssh_endpoint FROM vm_provisioning WHERE service_id = $1";

/// A server's first seed: its provisioning row, generation 1, with a new
/// callback secret and the host keys the VM will be given.
pub(super) async fn insert_seed(
    conn: &mut Conn<'_>,
    id: i64,
    vm_name: &str,
    pool_type: &str,
    keys: &HostKeys,
    now: i64,
) -> Result<(), ProvisionError> {
    execute!(
        conn,
        "INSERT INTO vm_provisioning (service_id, vm_name, pool_type, callback_secret, \
           host_key_public, host_key_private, generation, resets, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, 0, $7, $7)",
        id,
        vm_name,
        pool_type,
        callback::new_secret()?,
        keys.ed25519_public.as_str(),
        keys.ed25519_private.as_str(),
        now
    )?;
    Ok(())
}

/// A new seed generation for a server that has one: a new callback secret
/// and host keys; the last generation's callback, failure and SSH
/// endpoint are forgotten, so only the new VM's callback counts.
pub(super) async fn renew_seed(
    conn: &mut Conn<'_>,
    id: i64,
    keys: &HostKeys,
    now: i64,
) -> Result<(), ProvisionError> {
    execute!(
        conn,
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
    Ok(())
}

pub(super) async fn facts(
    conn: &mut Conn<'_>,
    id: i64,
) -> Result<Option<ServiceFacts>, sqlx::Error> {
    fetch_opt!(
        conn,
        ServiceFacts,
        "SELECT s.status, s.cpus, s.ram_mb, s.disk_gb, t.os_image FROM services s \
         JOIN server_types t ON t.id = s.server_type_id WHERE s.id = $1",
        id
    )
}

pub(super) async fn prov(conn: &mut Conn<'_>, id: i64) -> Result<Option<ProvRow>, sqlx::Error> {
    fetch_opt!(conn, ProvRow, PROV_SELECT, id)
}

pub(super) async fn read_state(
    db: &Db,
    id: i64,
) -> Result<(Option<ServiceFacts>, Option<ProvRow>), ProvisionError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    Ok((facts(&mut conn, id).await?, prov(&mut conn, id).await?))
}

/// Whether service `id`'s VM exists on the host that holds it.
pub(super) async fn vm_exists(
    p: &Provisioner,
    id: i64,
    name: &str,
) -> Result<bool, ProvisionError> {
    let Some(driver) = p.driver_for(id).await? else {
        return Ok(false);
    };
    match driver.status(name).await {
        Ok(_) => Ok(true),
        Err(DriverError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Stops a step between two actions once its job is no longer its own.
pub(super) fn check_cancel(cancel: &CancellationToken) -> Result<(), ProvisionError> {
    if cancel.is_cancelled() {
        Err(ProvisionError::Cancelled)
    } else {
        Ok(())
    }
}
