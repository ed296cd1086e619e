//! The bottom of the API's files: what every route table and handler
//! shares (who may call a route, a route's row, and the answer helpers).
//! `mod.rs`, `automation.rs` and `siteops.rs` all build on it, so the
//! route tables can live in their own files without importing `mod.rs`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::http::ApiError;

/// Who may call a route, for the docs and the authorisation matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Any signed-in user (the handler may narrow it to the user's own data).
    User,
    /// Site admins of the object, and platform admins.
    SiteAdmin,
    PlatformAdmin,
    /// The job's owner, and platform admins.
    JobOwner,
    /// Members of the job template's groups, and platform admins (others
    /// learn nothing: 404).
    TemplateMember,
}

/// One API route: method, path (axum syntax, relative to `/api/v1`),
/// access, summary.
pub type Route = (&'static str, &'static str, Access, &'static str);

pub(super) type ApiResult = Result<Response, ApiError>;

pub(super) fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

pub(super) fn created(v: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub(super) fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}
