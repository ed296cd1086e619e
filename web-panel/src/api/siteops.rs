//! The JSON API of what site admins do with their servers (`services::
//! vhosts`): a server's vhosts and aliases, and one more run of them.
//! Handlers parse and shape; the domain functions authorise. [`ROUTES`]
//! and [`BODIES`] join the API table in `mod.rs`, so the OpenAPI document
//! and the authorisation matrix cover these routes too.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::json;

use super::kit::{created, no_content, ok, Access, ApiResult, Route};
use crate::http::{AppState, Auth};
use crate::services::vhosts::{self, VhostBody};

pub const ROUTES: &[Route] = &[
    (
        "GET",
        "/services/{id}/vhosts",
        Access::SiteAdmin,
        "The server's vhosts with their aliases",
    ),
    (
        "POST",
        "/services/{id}/vhosts",
        Access::SiteAdmin,
        "Add a vhost (name, aliases, kind, document root, target); queues a `vhosts` job. A name another site uses is refused (409)",
    ),
    (
        "PUT",
        "/services/{id}/vhosts/{vhost_id}",
        Access::SiteAdmin,
        "Replace a vhost's name, aliases, kind, document root and target; queues a `vhosts` job",
    ),
    (
        "DELETE",
        "/services/{id}/vhosts/{vhost_id}",
        Access::SiteAdmin,
        "Delete a vhost; the `vhosts` job it queues removes it from Apache",
    ),
    (
        "POST",
        "/services/{id}/vhosts/apply",
        Access::SiteAdmin,
        "Apply the server's vhosts once more (a `vhosts` job)",
    ),
];

/// Request and answer schemas of [`ROUTES`], as in `mod.rs`.
pub const BODIES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    ("GET", "/services/{id}/vhosts", None, Some("Vhost")),
    (
        "POST",
        "/services/{id}/vhosts",
        Some("VhostBody"),
        Some("Vhost"),
    ),
    (
        "PUT",
        "/services/{id}/vhosts/{vhost_id}",
        Some("VhostBody"),
        Some("Vhost"),
    ),
];

/// Routes of this table whose GET answers a JSON array.
pub const ARRAYS: &[&str] = &["/services/{id}/vhosts"];

pub fn schemas(b: utoipa::openapi::ComponentsBuilder) -> utoipa::openapi::ComponentsBuilder {
    use crate::services::model::{Vhost, VhostKind};
    b.schema_from::<Vhost>()
        .schema_from::<VhostKind>()
        .schema_from::<VhostBody>()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/services/{id}/vhosts",
            axum::routing::get(list_vhosts).post(create_vhost),
        )
        .route(
            "/services/{id}/vhosts/{vhost_id}",
            put(update_vhost).delete(delete_vhost),
        )
        .route("/services/{id}/vhosts/apply", post(apply_vhosts))
}

async fn list_vhosts(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(vhosts::list(&st.db, &a.principal, id).await?)
}

async fn create_vhost(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<VhostBody>,
) -> ApiResult {
    created(vhosts::create(&st.db, &st.config.dns, &a.principal, id, &b).await?)
}

async fn update_vhost(
    State(st): State<AppState>,
    a: Auth,
    Path((id, vhost_id)): Path<(i64, i64)>,
    Json(b): Json<VhostBody>,
) -> ApiResult {
    ok(vhosts::update(&st.db, &st.config.dns, &a.principal, id, vhost_id, &b).await?)
}

async fn delete_vhost(
    State(st): State<AppState>,
    a: Auth,
    Path((id, vhost_id)): Path<(i64, i64)>,
) -> ApiResult {
    vhosts::delete(&st.db, &st.config.dns, &a.principal, id, vhost_id).await?;
    no_content()
}

async fn apply_vhosts(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let job = vhosts::apply(&st.db, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}
