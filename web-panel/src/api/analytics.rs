//! The JSON API of system analytics: a server's figures over the last
//! hour, day, week or year (`services::analytics`), the same series the
//! graphs page draws. Handlers parse and shape; the domain function
//! authorises. [`ROUTES`] and [`BODIES`] join the API table in `mod.rs`.

use axum::extract::{Path, Query, State};
use axum::Router;
use serde::Deserialize;

use super::kit::{ok, Access, ApiResult, Route};
use crate::http::{AppState, Auth};
use crate::services::analytics::{self, Range};

pub const ROUTES: &[Route] = &[(
    "GET",
    "/services/{id}/metrics",
    Access::SiteAdmin,
    "The server's figures over `range` (`hour`: every collection; `day`: 5-minute, `week`: 1-hour, `year`: 1-day averages): CPU use of its vCPUs in %, memory and root filesystem used/total in bytes, disk and network bytes/s, Apache requests/s; a figure that could not be read is null",
)];

/// Request and answer schemas, as in `mod.rs`'s `BODIES`.
pub const BODIES: &[(&str, &str, Option<&str>, Option<&str>)] =
    &[("GET", "/services/{id}/metrics", None, Some("Series"))];

pub fn schemas(b: utoipa::openapi::ComponentsBuilder) -> utoipa::openapi::ComponentsBuilder {
    b.schema_from::<analytics::Series>()
        .schema_from::<analytics::Point>()
        .schema_from::<Range>()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/services/{id}/metrics", axum::routing::get(metrics))
}

#[derive(Debug, Deserialize)]
struct RangeQuery {
    range: Option<String>,
}

async fn metrics(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Query(q): Query<RangeQuery>,
) -> ApiResult {
    let range = match q.range.as_deref() {
        Some(r) => Range::parse(r)?,
        None => Range::default(),
    };
    ok(analytics::series(&st.db, &a.principal, id, range, st.db.now()).await?)
}
