//! The browser-facing guards every answer and every state-changing request
//! pass through, below the handlers: the security headers ([`headers`]:
//! CSP, framing, referrer, MIME sniffing; [`hsts`] when the panel serves
//! TLS itself) and the cross-origin refusal ([`same_origin`]), a second
//! line behind the CSRF tokens that needs no handler's cooperation, so a
//! new route is covered the day it is added.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;

/// The pages' policy: scripts, styles and EventSource connections only from
/// the panel itself (`/static/…`; no inline script or style, no `eval`),
/// forms post only to the panel, and no one frames it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// `Strict-Transport-Security` sent when the panel serves TLS: a year.
pub const HSTS: &str = "max-age=31536000";

/// Adds the security headers to every answer (a handler's own value wins).
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ] {
        if !h.contains_key(&name) {
            h.insert(name, value);
        }
    }
    resp
}

/// Adds `Strict-Transport-Security`; only the TLS server mounts it, since
/// the header means nothing (and is ignored) over plain HTTP.
pub async fn hsts(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    resp
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Why a state-changing request is taken for a cross-site one, if it is:
/// the browser says so (`Sec-Fetch-Site: cross-site|same-site`), or its
/// `Origin` is neither the panel's `public_url` nor the `Host` it was sent
/// to. Requests without either header (scripts, `curl`, cloud-init's
/// callback) are not browsers' and pass; they carry no ambient cookie
/// unless told to, and the CSRF token still applies to those that do.
pub fn cross_site(headers: &HeaderMap, host: &str, public_url: &str) -> Option<String> {
    if let Some(site) = headers.get(&SEC_FETCH_SITE) {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("Sec-Fetch-Site is {site:?}"));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("");
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    let public = public_url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    if !authority.is_empty()
        && (authority.eq_ignore_ascii_case(host) || authority.eq_ignore_ascii_case(public))
    {
        return None;
    }
    Some(format!("Origin {origin:?} is not this panel"))
}

/// Refuses state-changing requests a browser sent from another site,
/// whatever route they are for (see [`cross_site`]).
pub async fn same_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_unsafe(req.method()) {
        // HTTP/2 carries the host in the URI, HTTP/1.1 in `Host`.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        if let Some(why) = cross_site(req.headers(), host, &state.config.public_url) {
            tracing::warn!(path = %req.uri().path(), %why, "cross-site request refused");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "cross-site requests are refused (the Origin or Sec-Fetch-Site header names another site)",
            )
            .into_response();
        }
    }
    next.run(req).await
}
