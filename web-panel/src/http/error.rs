//! The web layer's one error type. Every handler returns
//! `Result<_, ApiError>`; the body is `{"error", "message", "field"?}` with a
//! 4xx status for the client's mistakes. Internal errors are logged with
//! their cause and answered with a bare 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::domain::PanelError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<i64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn csrf() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong CSRF token (send the X-CSRF-Token header or the csrf form field)",
        )
    }
}

impl From<PanelError> for ApiError {
    fn from(e: PanelError) -> Self {
        let (status, code) = match &e {
            PanelError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            PanelError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            PanelError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            PanelError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            PanelError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            PanelError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            PanelError::PoolExhausted(_) => (StatusCode::CONFLICT, "pool_exhausted"),
            PanelError::QuotaExceeded(_) => (StatusCode::CONFLICT, "quota_exceeded"),
            PanelError::NoCapacity(_) => (StatusCode::CONFLICT, "no_capacity"),
            PanelError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            PanelError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ if e.is_unique_violation() => (StatusCode::CONFLICT, "conflict"),
            _ => {
                tracing::error!(error = %e, "internal error");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error",
                );
            }
        };
        let message = if e.is_unique_violation() {
            "that already exists".to_string()
        } else {
            e.to_string()
        };
        ApiError {
            status,
            code,
            message,
            field: match &e {
                PanelError::Invalid { field, .. } => Some(field.clone()),
                _ => None,
            },
            retry_after: match &e {
                PanelError::Throttled { retry_after_secs } => Some(*retry_after_secs),
                _ => None,
            },
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        PanelError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
            field: self.field.as_deref(),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
