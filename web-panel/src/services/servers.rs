//! Services (servers): create, list, show, retry, delete. Their jobs are
//! the flow's (`lifecycle::jobs`), run by the handlers in `provision/`.
//!
//! Creating a server is one transaction: idempotency key, site check,
//! quota check, service row, address claim, audit row and the `provision`
//! job all commit together or not at all. The job log of a service is the
//! queue's history for the serialisation key `service:ID`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alloc::{self, Resources, POOL_TYPES};
use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::{AccessJob, DeprovisionJob, JobKind, ProvisionJob};
use crate::lifecycle::{transition, Status};
use crate::queue::{self, JobFilter};
use crate::services::model::{
    Connection, DnsState, DnsStatus, HostKeyView, JobView, ServerActions, ServerType, Service,
    ServiceDetail, Vm, SERVICE_KINDS,
};
use crate::services::sites::require_admin;
use crate::services::{access, catalog, hosts};
use crate::store::{Store, Tx};
use crate::{execute, fetch_all, fetch_opt, scalar};

pub(crate) const SELECT: &str = "SELECT s.id, s.site_id, si.name AS site_name, s.kind, t.name AS server_type, s.status, \
     s.failure_reason, s.cpus, s.ram_mb, s.disk_gb, s.created_by, s.created_at, s.updated_at, \
     a.hostname, a.ipv4, a.ipv6, s.test_of, h.name AS host, \
     (h.state IS NOT NULL AND h.state = 'down') AS host_down \
     FROM services s JOIN sites si ON si.id = s.site_id JOIN server_types t ON t.id = s.server_type_id \
     LEFT JOIN pool_addresses a ON a.service_id = s.id \
     LEFT JOIN hypervisor_hosts h ON h.id = s.host_id";

/// A request for a new server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServer {
    pub site_id: i64,
    /// `production` or `test`.
    #[serde(default = "CreateServer::default_kind")]
    pub kind: String,
    /// Name of a server type.
    pub server_type: String,
    /// `public` (default), `private` or `v6only`.
    #[serde(default = "CreateServer::default_pool")]
    pub pool_type: String,
}

impl CreateServer {
    fn default_kind() -> String {
        "production".to_string()
    }
    fn default_pool() -> String {
        "public".to_string()
    }
}

/// What a create returns (and what an idempotent replay returns again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Created {
    pub service: Service,
    pub job_id: i64,
    /// For a multi-server stack type: every server the request made, this
    /// one first (`GET /services/{id}` shows each one's member name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack_members: Vec<i64>,
}

/// The outcome of [`create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOutcome {
    pub created: Created,
    /// An earlier request with the same idempotency key made this server.
    pub replayed: bool,
}

#[derive(sqlx::FromRow)]
struct IdemRow {
    request_hash: String,
    response_body: Option<String>,
}

pub use crate::lifecycle::jobs::service_key;
pub use crate::services::server_list::{list, list_after, ServiceFilter, ServiceList};

/// Creates a server for a site: see the module docs.
pub async fn create(
    db: &Db,
    who: &Principal,
    req: &CreateServer,
    idempotency_key: Option<&str>,
) -> Result<CreateOutcome, PanelError> {
    if !SERVICE_KINDS.contains(&req.kind.as_str()) {
        return Err(PanelError::invalid(
            "kind",
            format!("kind is one of {SERVICE_KINDS:?}"),
        ));
    }
    if !POOL_TYPES.contains(&req.pool_type.as_str()) {
        return Err(PanelError::invalid(
            "pool_type",
            format!("pool_type is one of {POOL_TYPES:?}"),
        ));
    }
    if let Some(k) = idempotency_key {
        if k.is_empty() || k.len() > 200 {
            return Err(PanelError::invalid(
                "Idempotency-Key",
                "idempotency keys have 1-200 characters",
            ));
        }
    }
    let request_hash = hex::encode(Sha256::digest(serde_json::to_vec(req).unwrap_or_default()));
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);

    if let Some(key) = idempotency_key {
        let fresh = scalar!(
            &mut conn,
            i64,
            "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, key) DO NOTHING RETURNING user_id",
            who.user_id,
            key,
            request_hash.as_str(),
            now
        )?;
        if fresh.is_none() {
            let row = fetch_opt!(
                &mut conn,
                IdemRow,
                "SELECT request_hash, response_body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
                who.user_id,
                key
            )?;
            tx.rollback().await?;
            return replay(row, &request_hash);
        }
    }

    let site_state = scalar!(
        &mut conn,
        String,
        "SELECT state FROM sites WHERE id = $1",
        req.site_id
    )?;
    require_admin(&mut conn, who, req.site_id).await?;
    match site_state.as_deref() {
        Some("active") => {}
        Some(other) => {
            return Err(PanelError::Conflict(format!(
                "the site is {other}; it cannot get new servers"
            )))
        }
        None => return Err(PanelError::NotFound("site")),
    }
    let stype = catalog::by_name(&mut conn, &req.server_type)
        .await?
        .ok_or_else(|| {
            PanelError::invalid(
                "server_type",
                format!("no server type named {:?}", req.server_type),
            )
        })?;
    let new = NewServer {
        site_id: req.site_id,
        kind: &req.kind,
        server_type: &stype,
        pool_type: &req.pool_type,
        test_of: None,
    };
    let mut created = insert(&mut tx, who, now, new).await?;
    if let Some(stack) = catalog::Stack::of_column(&stype.stack).filter(|s| s.is_multi()) {
        created.stack_members =
            insert_stack(&mut tx, who, now, req, &stype, &stack, &created).await?;
    }
    if let Some(key) = idempotency_key {
        let body =
            serde_json::to_string(&created).map_err(|e| PanelError::Internal(e.to_string()))?;
        execute!(
            &mut tx_conn(&mut tx),
            "UPDATE idempotency_keys SET response_status = 201, response_body = $3 WHERE user_id = $1 AND key = $2",
            who.user_id,
            key,
            body
        )?;
    }
    tx.commit().await?;
    Ok(CreateOutcome {
        created,
        replayed: false,
    })
}

/// What a new server is made of, once the caller has checked the site
/// and who asks.
pub(crate) struct NewServer<'a> {
    pub site_id: i64,
    /// `production` or `test`.
    pub kind: &'a str,
    pub server_type: &'a ServerType,
    pub pool_type: &'a str,
    /// For a test server: its production server.
    pub test_of: Option<i64>,
}

/// The part of making a server every kind shares, in the caller's
/// transaction: the quota check (every server counts, test servers too),
/// the service row, the address claim, the audit row and the `provision`
/// job.
pub(crate) async fn insert(
    tx: &mut Tx,
    who: &Principal,
    now: i64,
    new: NewServer<'_>,
) -> Result<Created, PanelError> {
    let mut conn = tx_conn(tx);
    let stype = new.server_type;
    alloc::check_quota(
        &mut conn,
        who.user_id,
        Resources {
            vms: 1,
            vcpus: stype.cpus,
            ram_mb: stype.ram_mb,
            disk_gb: stype.disk_gb,
        },
    )
    .await?;
    let service_id = scalar!(
        &mut conn,
        i64,
        "INSERT INTO services (site_id, kind, server_type_id, status, cpus, ram_mb, disk_gb, created_by, created_at, updated_at, test_of) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING id",
        new.site_id,
        new.kind,
        stype.id,
        Status::Requested,
        stype.cpus,
        stype.ram_mb,
        stype.disk_gb,
        who.user_id,
        now,
        new.test_of
    )?
    .ok_or_else(|| PanelError::Internal("service insert returned nothing".into()))?;
    if alloc::claim(&mut conn, new.pool_type, service_id, now)
        .await?
        .is_none()
    {
        return Err(PanelError::PoolExhausted(format!(
            "no free addresses left in the {} pools",
            new.pool_type
        )));
    }
    place_new(&mut conn, service_id, &new).await?;
    let service = load(&mut conn, service_id).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.create", "service", service_id).after(&service),
    )
    .await?;
    let job = queue::enqueue(tx, ProvisionJob { service_id }.spec(who.actor_id())).await?;
    Ok(Created {
        service,
        job_id: job.job_id,
        stack_members: Vec::new(),
    })
}

/// The other servers of a multi-server stack, in the request's
/// transaction: one per member after the first (which is `first`), each
/// counted against the quota and given an address like any server, all
/// tied to `first` (`services.stack_id`). A quota or pool that runs out
/// part-way rolls the whole request back.
async fn insert_stack(
    tx: &mut Tx,
    who: &Principal,
    now: i64,
    req: &CreateServer,
    stype: &ServerType,
    stack: &catalog::Stack,
    first: &Created,
) -> Result<Vec<i64>, PanelError> {
    let stack_id = first.service.id;
    let mut ids = vec![stack_id];
    for (i, member) in stack.members.iter().enumerate() {
        let id = if i == 0 {
            stack_id
        } else {
            let new = NewServer {
                site_id: req.site_id,
                kind: &req.kind,
                server_type: stype,
                pool_type: &req.pool_type,
                test_of: None,
            };
            let id = insert(tx, who, now, new).await?.service.id;
            ids.push(id);
            id
        };
        execute!(
            &mut tx_conn(tx),
            "UPDATE services SET stack_id = $2, stack_member = $3 WHERE id = $1",
            id,
            stack_id,
            member.name.as_str()
        )?;
    }
    Ok(ids)
}

/// The servers of the stack service `id` belongs to (itself included),
/// first member first; empty for a server of no stack.
pub async fn stack_members(
    conn: &mut Conn<'_>,
    id: i64,
) -> Result<Vec<StackMemberRow>, PanelError> {
    Ok(fetch_all!(
        conn,
        StackMemberRow,
        "SELECT m.id, m.stack_member AS member, m.status, m.stack_base_at AS base_at, a.hostname \
         FROM services s JOIN services m ON m.stack_id = s.stack_id \
         LEFT JOIN pool_addresses a ON a.service_id = m.id \
         WHERE s.id = $1 ORDER BY m.id",
        id
    )?)
}

/// One server of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StackMemberRow {
    pub id: i64,
    /// Its name in the stack (`webapp`, `db`).
    pub member: String,
    pub status: Status,
    /// When its own configure run last finished (the stack's run waits
    /// for every member's).
    #[serde(skip)]
    pub base_at: Option<i64>,
    pub hostname: Option<String>,
}

/// The host of a new server, in its transaction: a test server goes on its
/// production server's host when that has room (a clone copies the disk
/// there), anything else on the host with the most room.
async fn place_new(
    conn: &mut Conn<'_>,
    service_id: i64,
    new: &NewServer<'_>,
) -> Result<(), PanelError> {
    let want = hosts::Want {
        vcpus: new.server_type.cpus,
        ram_mb: new.server_type.ram_mb,
        disk_gb: new.server_type.disk_gb,
    };
    let (site, stype) = (new.site_id, new.server_type.id);
    if let Some(prod) = new.test_of {
        if let Some(host) = hosts::placement_of(conn, prod).await?.host {
            let only = hosts::Among::Only(&host);
            match hosts::place(conn, service_id, site, stype, want, only).await {
                Err(PanelError::NoCapacity(_)) => {}
                other => return other.map(|_| ()),
            }
        }
    }
    hosts::place(conn, service_id, site, stype, want, hosts::Among::Any)
        .await
        .map(|_| ())
}

fn replay(row: Option<IdemRow>, request_hash: &str) -> Result<CreateOutcome, PanelError> {
    let row = row.ok_or_else(|| PanelError::Internal("idempotency row vanished".into()))?;
    if row.request_hash != request_hash {
        return Err(PanelError::invalid(
            "Idempotency-Key",
            "this idempotency key was used with a different request",
        ));
    }
    let body = row.response_body.ok_or_else(|| {
        PanelError::Conflict("a request with this idempotency key is still in progress".into())
    })?;
    let created: Created =
        serde_json::from_str(&body).map_err(|e| PanelError::Internal(e.to_string()))?;
    Ok(CreateOutcome {
        created,
        replayed: true,
    })
}

async fn load(conn: &mut Conn<'_>, id: i64) -> Result<Service, PanelError> {
    fetch_opt!(
        conn,
        Service,
        sqlx::AssertSqlSafe(format!("{SELECT} WHERE s.id = $1")),
        id
    )?
    .ok_or(PanelError::NotFound("server"))
}

/// Loads a service `who` may manage. Platform admins and site admins may;
/// SSH-only users are refused; anyone else is told it does not exist.
pub async fn load_managed(
    conn: &mut Conn<'_>,
    who: &Principal,
    id: i64,
) -> Result<Service, PanelError> {
    let service = load(conn, id).await?;
    match require_admin(conn, who, service.site_id).await {
        Ok(()) => Ok(service),
        Err(PanelError::NotFound(_)) => Err(PanelError::NotFound("server")),
        Err(PanelError::Forbidden(_)) => Err(PanelError::Forbidden(
            "SSH-only users cannot manage this server in the panel".into(),
        )),
        Err(e) => Err(e),
    }
}

/// A service with its VM, network, vhosts, job log and who logs in to it
/// (`admin_user` is the panel's own account, which people cannot have).
pub async fn get(
    db: &Db,
    who: &Principal,
    id: i64,
    admin_user: &str,
) -> Result<ServiceDetail, PanelError> {
    let service = {
        let mut rc = db.read().await?;
        load_managed(&mut rc.conn(), who, id).await?
    };
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let vm = fetch_opt!(
        &mut conn,
        Vm,
        "SELECT hypervisor, vm_ref, cpus, ram_mb, disk_gb, power_state, updated_at FROM vms WHERE service_id = $1",
        id
    )?;
    let network = alloc::allocation_of(&mut conn, id).await?;
    let vhosts = crate::services::vhosts::of_service(&mut conn, id).await?;
    let tags = crate::services::tags::of_service(&mut conn, id).await?;
    let host_key = scalar!(
        &mut conn,
        String,
        "SELECT host_key_public FROM vm_provisioning WHERE service_id = $1",
        id
    )?;
    // A deleted server's keys are gone with it: nobody should trust them.
    let host_keys = host_key
        .iter()
        .filter(|_| service.status != Status::Deleted)
        .filter_map(|line| HostKeyView::from_line(line))
        .collect();
    let jobs = job_log(db.store(), id).await?;
    let last_access = jobs
        .iter()
        .find(|j| j.kind == JobKind::Access.as_str())
        .cloned();
    let access = access::server_access(&mut conn, service.site_id, admin_user, last_access).await?;
    let dns = dns_status(&mut conn, id).await?;
    let actions = ServerActions::of(service.status, vm.as_ref().map(|v| v.power_state.as_str()));
    let connection = connection(&mut conn, who, &service).await?;
    let stack_members = stack_members(&mut conn, id).await?;
    Ok(ServiceDetail {
        service,
        vm,
        network,
        jobs,
        vhosts,
        tags,
        host_keys,
        access,
        dns,
        actions,
        connection,
        stack_members,
    })
}

/// Where people reach a server's sshd: the endpoint the driver reported
/// (a forwarded port), else its address on port 22 (IPv4 first, then
/// IPv6, then the hostname).
fn connection_of(
    service: &Service,
    endpoint: Option<&str>,
    user: Option<String>,
) -> Option<Connection> {
    let (address, port) = match endpoint.and_then(|e| e.parse::<std::net::SocketAddr>().ok()) {
        Some(a) => (a.ip().to_string(), a.port()),
        None => (
            service
                .ipv4
                .clone()
                .or_else(|| service.ipv6.clone())
                .or_else(|| service.hostname.clone())?,
            22,
        ),
    };
    let who = user.clone().unwrap_or_else(|| "YOUR-NAME".to_string());
    let command = format!("ssh -p {port} {who}@{address}");
    Some(Connection {
        address,
        port,
        user,
        command,
    })
}

/// How `who` logs in to a ready server (`None` before it is ready and
/// after it is deleted). The user is `who` when they have a role of their
/// own on the site, so an account there.
pub async fn connection(
    conn: &mut Conn<'_>,
    who: &Principal,
    service: &Service,
) -> Result<Option<Connection>, PanelError> {
    if service.status != Status::Ready {
        return Ok(None);
    }
    let endpoint = scalar!(
        conn,
        Option<String>,
        "SELECT ssh_endpoint FROM vm_provisioning WHERE service_id = $1",
        service.id
    )?
    .flatten();
    let user = crate::services::sites::has_login(conn, who.user_id, service.site_id)
        .await?
        .then(|| who.name.clone());
    Ok(connection_of(service, endpoint.as_deref(), user))
}

/// What the live stream of a server page sends on every status poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveState {
    pub power_state: Option<String>,
    pub actions: ServerActions,
    pub connection: Option<Connection>,
}

/// The VM's power state, the requests the server takes now, and how
/// `who` logs in to it.
pub async fn live_state(
    conn: &mut Conn<'_>,
    who: &Principal,
    service: &Service,
) -> Result<LiveState, PanelError> {
    let power_state = scalar!(
        conn,
        String,
        "SELECT power_state FROM vms WHERE service_id = $1",
        service.id
    )?;
    let actions = ServerActions::of(service.status, power_state.as_deref());
    let connection = connection(conn, who, service).await?;
    Ok(LiveState {
        power_state,
        actions,
        connection,
    })
}

/// A server's `dns_publications` row, for its page.
async fn dns_status(conn: &mut Conn<'_>, id: i64) -> Result<Option<DnsStatus>, PanelError> {
    let row = fetch_opt!(
        conn,
        (String, String, Option<String>, i64),
        "SELECT state, records, error, updated_at FROM dns_publications WHERE service_id = $1",
        id
    )?;
    let Some((state, records, error, updated_at)) = row else {
        return Ok(None);
    };
    let state = DnsState::parse(&state)
        .ok_or_else(|| PanelError::Internal(format!("unknown DNS state {state:?}")))?;
    let records: Vec<crate::dns::DnsRecord> = serde_json::from_str(&records)
        .map_err(|e| PanelError::Internal(format!("DNS records of service {id}: {e}")))?;
    Ok(Some(DnsStatus {
        state,
        records: records.iter().map(|r| r.to_string()).collect(),
        error,
        updated_at,
    }))
}

/// The jobs run for a service, newest first.
pub async fn job_log(store: &Store, service_id: i64) -> Result<Vec<JobView>, PanelError> {
    let jobs = store
        .jobs(&JobFilter {
            serial_key: Some(service_key(service_id)),
            limit: Some(50),
            ..JobFilter::default()
        })
        .await?;
    let mut out: Vec<JobView> = jobs
        .into_iter()
        .map(|j| JobView {
            id: j.id,
            kind: j.kind,
            state: j.state.as_str().to_string(),
            attempts: j.attempts,
            created_at: j.created_at,
            finished_at: j.finished_at,
            last_error: j.last_error,
        })
        .collect();
    out.sort_by_key(|j| std::cmp::Reverse(j.id));
    Ok(out)
}

/// Retries a failed service: back to `requested`, with a new provision job.
pub async fn retry(db: &Db, who: &Principal, id: i64) -> Result<i64, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = load_managed(&mut conn, who, id).await?;
    let retryable = Status::all_where(|r| r.retryable);
    if !transition(&mut conn, now, who, id, &retryable, Status::Requested, None).await? {
        return Err(PanelError::Conflict(format!(
            "only failed services can be retried; this one is {}",
            service.status
        )));
    }
    // A stack member's own run starts over; the stack's run waits for it.
    execute!(
        &mut tx_conn(&mut tx),
        "UPDATE services SET stack_base_at = NULL WHERE id = $1",
        id
    )?;
    let job = queue::enqueue(
        &mut tx,
        ProvisionJob { service_id: id }.spec(who.actor_id()),
    )
    .await?;
    tx.commit().await?;
    Ok(job.job_id)
}

/// Starts deleting a service: `deleting`, and a `deprovision` job that
/// removes the VM and releases the address into quarantine.
pub async fn delete(db: &Db, who: &Principal, id: i64) -> Result<i64, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = load_managed(&mut conn, who, id).await?;
    let deletable = Status::all_where(|r| !r.leaving);
    if !transition(&mut conn, now, who, id, &deletable, Status::Deleting, None).await? {
        return Err(PanelError::Conflict(format!(
            "the service is already {}",
            service.status
        )));
    }
    // A stack's servers go together: one without the others is no
    // working deployment.
    let others: Vec<i64> = stack_members(&mut conn, id)
        .await?
        .into_iter()
        .map(|m| m.id)
        .filter(|m| *m != id)
        .collect();
    let mut leaving = vec![id];
    for other in others {
        if transition(
            &mut conn,
            now,
            who,
            other,
            &deletable,
            Status::Deleting,
            None,
        )
        .await?
        {
            leaving.push(other);
        }
    }
    let mut first = None;
    for service_id in leaving {
        let job =
            queue::enqueue(&mut tx, DeprovisionJob { service_id }.spec(who.actor_id())).await?;
        first.get_or_insert(job.job_id);
    }
    tx.commit().await?;
    Ok(first.unwrap_or_default())
}

/// Asks for one more `access` run of a server (coalesced with any already
/// waiting): site admins and platform admins.
pub async fn sync_access(db: &Db, who: &Principal, id: i64) -> Result<i64, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let service = load_managed(&mut conn, who, id).await?;
    if !service.status.rules().convergeable {
        return Err(PanelError::Conflict(format!(
            "only ready servers take access runs; this one is {}",
            service.status
        )));
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.access_sync", "service", id),
    )
    .await?;
    let job = queue::enqueue(&mut tx, AccessJob { service_id: id }.spec(who.actor_id())).await?;
    tx.commit().await?;
    Ok(job.job_id)
}
