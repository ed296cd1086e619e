//! Test servers, and "clone production to test".
//!
//! A site's production server may have one test server (`services.test_of`
//! names its production server; a unique index keeps it to one that is not
//! deleted). It is a server like any other: its own hostname and addresses
//! claimed from the pool, its own server type (by default production's),
//! counted by the quotas, made by the same flow (`servers::insert`).
//!
//! A clone replaces the test server's disk with a copy of production's: the
//! site admin asks here (typing the test server's hostname to confirm, as a
//! restore asks), and the coalesced `clone` job (`provision/steps/clone.rs`,
//! hypervisor queue, the test server's serialisation key) makes the copy
//! through the driver with the test server's own identity (hostname,
//! addresses, new host keys) and hands it to the flow, which waits for its
//! callback and reruns the roles. The `clones` row keeps how far the last
//! clone got and why it failed, for both servers' pages.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::alloc::POOL_TYPES;
use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::lifecycle::jobs::CloneJob;
use crate::lifecycle::Status;
use crate::queue;
use crate::services::catalog;
use crate::services::model::Service;
use crate::services::servers::{self, Created, NewServer};
use crate::{execute, fetch_opt, scalar};

/// The body of `POST /services/{id}/test-server`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTestServer {
    /// Name of a server type with production's OS image and at least its
    /// disk; production's own type when left out.
    #[serde(default)]
    pub server_type: Option<String>,
    /// `public` (default), `private` or `v6only`.
    #[serde(default)]
    pub pool_type: Option<String>,
}

/// The body of `POST /services/{id}/clone`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneBody {
    /// The test server's hostname, typed to confirm that its disk is
    /// replaced.
    #[serde(default)]
    pub confirm: String,
}

/// How far a test server's last clone got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloneState {
    /// Asked for; the `clone` job waits.
    Queued,
    /// The job has taken the test server over and copies production's disk.
    Copying,
    /// The copy runs with the test server's identity; the flow waits for
    /// its callback and reruns the roles (the test server's status says
    /// how far).
    Booting,
    /// The roles ran again: the test server is ready as production's copy.
    Done,
    /// The job failed for good; `error` says why.
    Failed,
}

impl CloneState {
    pub fn as_str(self) -> &'static str {
        match self {
            CloneState::Queued => "queued",
            CloneState::Copying => "copying",
            CloneState::Booting => "booting",
            CloneState::Done => "done",
            CloneState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<CloneState, PanelError> {
        [
            CloneState::Queued,
            CloneState::Copying,
            CloneState::Booting,
            CloneState::Done,
            CloneState::Failed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| PanelError::Internal(format!("unknown clone state {s:?}")))
    }
}

/// A test server's last clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CloneRun {
    /// The production server copied.
    pub source_id: i64,
    pub state: CloneState,
    /// Why it failed, in the words tenants are given.
    pub error: Option<String>,
    pub job_id: i64,
    /// Unix milliseconds.
    pub requested_at: i64,
    pub updated_at: i64,
}

/// A production server and its test server, as both their pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TestPair {
    pub production_id: i64,
    /// The test server, if the production server has one.
    pub test: Option<Service>,
    /// The test server's last clone, if it had one.
    pub clone: Option<CloneRun>,
}

/// Ends test server `id`'s clone that was booting, in the caller's
/// transaction: `done` when the flow made it ready, `failed` with the
/// tenant's reason when a later step failed it. Nothing for a server
/// without such a clone.
pub async fn finish_booting(
    conn: &mut Conn<'_>,
    now: i64,
    id: i64,
    failure: Option<&str>,
) -> Result<(), PanelError> {
    let state = match failure {
        None => CloneState::Done,
        Some(_) => CloneState::Failed,
    };
    execute!(
        conn,
        "UPDATE clones SET state = $2, error = $3, updated_at = $4 \
         WHERE service_id = $1 AND state = $5",
        id,
        state.as_str(),
        failure,
        now,
        CloneState::Booting.as_str()
    )?;
    Ok(())
}

/// The live test server of production server `production_id`.
pub async fn test_server_of(
    conn: &mut Conn<'_>,
    production_id: i64,
) -> Result<Option<i64>, PanelError> {
    Ok(scalar!(
        conn,
        i64,
        "SELECT id FROM services WHERE test_of = $1 AND status <> $2",
        production_id,
        Status::Deleted
    )?)
}

/// A test server's last clone.
pub async fn clone_of(conn: &mut Conn<'_>, test_id: i64) -> Result<Option<CloneRun>, PanelError> {
    let row = fetch_opt!(
        conn,
        (i64, String, Option<String>, i64, i64, i64),
        "SELECT source_id, state, error, job_id, requested_at, updated_at FROM clones \
         WHERE service_id = $1",
        test_id
    )?;
    row.map(
        |(source_id, state, error, job_id, requested_at, updated_at)| {
            Ok(CloneRun {
                source_id,
                state: CloneState::parse(&state)?,
                error,
                job_id,
                requested_at,
                updated_at,
            })
        },
    )
    .transpose()
}

/// The pair server `id` belongs to (as production or as test), if `who`
/// manages it.
pub async fn pair(db: &Db, who: &Principal, id: i64) -> Result<TestPair, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let service = servers::load_managed(&mut conn, who, id).await?;
    let (production_id, test_id) = match service.test_of {
        Some(p) => (p, Some(id)),
        None => (id, test_server_of(&mut conn, id).await?),
    };
    let Some(test_id) = test_id else {
        return Ok(TestPair {
            production_id,
            test: None,
            clone: None,
        });
    };
    let test = servers::load_managed(&mut conn, who, test_id).await?;
    let clone = clone_of(&mut conn, test_id).await?;
    Ok(TestPair {
        production_id,
        test: Some(test),
        clone,
    })
}

/// Makes the test server of production server `production_id`: a server
/// of the same site (quota, address claim, audit rows and `provision` job
/// as any other) that names production as its `test_of`.
pub async fn create(
    db: &Db,
    who: &Principal,
    production_id: i64,
    body: &NewTestServer,
) -> Result<Created, PanelError> {
    let pool_type = body.pool_type.as_deref().unwrap_or("public");
    if !POOL_TYPES.contains(&pool_type) {
        return Err(PanelError::invalid(
            "pool_type",
            format!("pool_type is one of {POOL_TYPES:?}"),
        ));
    }
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let production = servers::load_managed(&mut conn, who, production_id).await?;
    if production.test_of.is_some() || production.kind != "production" {
        return Err(PanelError::Conflict(
            "test servers are made for production servers; this one is a test server".into(),
        ));
    }
    if production.status.rules().leaving {
        return Err(PanelError::Conflict(format!(
            "the production server is {}",
            production.status
        )));
    }
    let site_state = scalar!(
        &mut conn,
        String,
        "SELECT state FROM sites WHERE id = $1",
        production.site_id
    )?;
    if site_state.as_deref() != Some("active") {
        return Err(PanelError::Conflict(format!(
            "the site is {}; it cannot get new servers",
            site_state.unwrap_or_default()
        )));
    }
    if let Some(test) = test_server_of(&mut conn, production_id).await? {
        return Err(PanelError::Conflict(format!(
            "the production server already has test server {test}"
        )));
    }
    let wanted = body
        .server_type
        .as_deref()
        .unwrap_or(&production.server_type);
    let stype = catalog::by_name(&mut conn, wanted).await?.ok_or_else(|| {
        PanelError::invalid("server_type", format!("no server type named {wanted:?}"))
    })?;
    let production_image = scalar!(
        &mut conn,
        String,
        "SELECT t.os_image FROM services s JOIN server_types t ON t.id = s.server_type_id \
         WHERE s.id = $1",
        production_id
    )?
    .unwrap_or_default();
    // A clone copies production's disk: the test server must boot the same
    // image from a disk at least as large.
    if stype.os_image != production_image {
        return Err(PanelError::invalid(
            "server_type",
            format!(
                "server type {} runs {}, but the production server runs {production_image}: a clone needs the same image",
                stype.name, stype.os_image
            ),
        ));
    }
    if stype.disk_gb < production.disk_gb {
        return Err(PanelError::invalid(
            "server_type",
            format!(
                "server type {} has {} GB of disk, less than the production server's {} GB",
                stype.name, stype.disk_gb, production.disk_gb
            ),
        ));
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.test_server", "service", production_id)
            .after(&json!({ "server_type": stype.name, "pool_type": pool_type })),
    )
    .await?;
    let created = servers::insert(
        &mut tx,
        who,
        now,
        NewServer {
            site_id: production.site_id,
            kind: "test",
            server_type: &stype,
            pool_type,
            test_of: Some(production_id),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// Asks for test server `test_id`'s disk to be replaced by a copy of its
/// production server's, once `body.confirm` names the test server's
/// hostname; returns the `clone` job's id. The test server must be ready
/// (or failed: a clone is one way back), production ready.
pub async fn clone(
    db: &Db,
    who: &Principal,
    test_id: i64,
    body: &CloneBody,
) -> Result<i64, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let test = servers::load_managed(&mut conn, who, test_id).await?;
    let Some(production_id) = test.test_of else {
        return Err(PanelError::Conflict(
            "only a test server is cloned from its production server; this one is not a test server"
                .into(),
        ));
    };
    if !matches!(test.status, Status::Ready | Status::Failed) {
        return Err(PanelError::Conflict(format!(
            "the test server is {}; a clone starts from a ready or failed test server",
            test.status
        )));
    }
    let production = servers::load_managed(&mut conn, who, production_id).await?;
    if production.status != Status::Ready {
        return Err(PanelError::Conflict(format!(
            "the production server is {}; only a ready server is cloned",
            production.status
        )));
    }
    let hostname = test.hostname.clone().unwrap_or_default();
    if body.confirm.trim() != hostname || hostname.is_empty() {
        return Err(PanelError::invalid(
            "confirm",
            format!(
                "a clone replaces the test server's disk with a copy of {}: type the test server's hostname ({hostname}) to confirm",
                production.hostname.as_deref().unwrap_or("the production server")
            ),
        ));
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("service.clone_request", "service", test_id)
            .after(&json!({ "source_id": production_id })),
    )
    .await?;
    let out = queue::enqueue(
        &mut tx,
        CloneJob {
            service_id: test_id,
        }
        .spec(who.actor_id()),
    )
    .await?;
    let mut conn = tx_conn(&mut tx);
    execute!(
        &mut conn,
        "DELETE FROM clones WHERE service_id = $1",
        test_id
    )?;
    execute!(
        &mut conn,
        "INSERT INTO clones (service_id, source_id, state, error, job_id, generation, requested_by, \
           requested_at, updated_at) VALUES ($1, $2, $3, NULL, $4, NULL, $5, $6, $6)",
        test_id,
        production_id,
        CloneState::Queued.as_str(),
        out.job_id,
        who.actor_id(),
        now
    )?;
    tx.commit().await?;
    Ok(out.job_id)
}
