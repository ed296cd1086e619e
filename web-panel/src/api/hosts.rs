//! The JSON API of hypervisor hosts (`services::hosts`): the hosts with
//! their capacity, use and state, an admin's change of a host's state, and
//! moving a server to another host.
//! Handlers parse and shape; the domain functions authorise (platform
//! admins only). [`ROUTES`] and [`BODIES`] join the API table in `mod.rs`.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::{Json, Router};
use serde::Deserialize;

use super::kit::{ok, Access, ApiResult, Route};
use crate::http::{AppState, Auth};
use crate::services::hosts;

pub const ROUTES: &[Route] = &[
    (
        "GET",
        "/admin/hosts",
        Access::PlatformAdmin,
        "Hypervisor hosts: driver, state, capacity (what the host has, times its overcommit ratio) and what the servers on it use",
    ),
    (
        "PUT",
        "/admin/hosts/{name}/state",
        Access::PlatformAdmin,
        "Set a host's state: `active` (takes new servers), `draining` (keeps its servers, takes no new ones) or `down` (unreachable: no new servers, its servers show as unreachable, nothing on it is deleted or released)",
    ),
    (
        "POST",
        "/services/{id}/migrate",
        Access::PlatformAdmin,
        "Move a ready server to another hypervisor host (`host`): between libvirt hosts by libvirt's migration (live while it runs; the VM's files on shared storage), otherwise cold (the server must be stopped: its files are copied, it is started on the target and its host key checked); the target's room is taken at once",
    ),
];

/// Request and answer schemas, as in `mod.rs`'s `BODIES`.
pub const BODIES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    ("GET", "/admin/hosts", None, Some("HostView")),
    (
        "PUT",
        "/admin/hosts/{name}/state",
        Some("HostStateBody"),
        Some("HostView"),
    ),
    (
        "POST",
        "/services/{id}/migrate",
        Some("MigrateBody"),
        Some("MigrationStarted"),
    ),
];

pub fn schemas(b: utoipa::openapi::ComponentsBuilder) -> utoipa::openapi::ComponentsBuilder {
    b.schema_from::<hosts::HostView>()
        .schema_from::<hosts::HostState>()
        .schema_from::<HostStateBody>()
        .schema_from::<MigrateBody>()
        .schema_from::<hosts::MigrationStarted>()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/hosts", axum::routing::get(list))
        .route("/admin/hosts/{name}/state", axum::routing::put(set_state))
        .route("/services/{id}/migrate", axum::routing::post(migrate))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct HostStateBody {
    /// `active`, `draining` or `down`.
    state: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    /// The name of the target host.
    host: String,
}

async fn migrate(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<MigrateBody>,
) -> ApiResult {
    let cfg = st.config.clone();
    let started = hosts::request_migration(&st.db, &a.principal, id, &b.host, |x, y| {
        cfg.hosts_share_storage(x, y)
    })
    .await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(started)).into_response())
}

async fn list(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(hosts::list(&st.db, &a.principal).await?)
}

async fn set_state(
    State(st): State<AppState>,
    a: Auth,
    Path(name): Path<String>,
    Json(b): Json<HostStateBody>,
) -> ApiResult {
    ok(hosts::set_state(&st.db, &a.principal, &name, &b.state).await?)
}
