//! Who is calling: the authentication middleware ([`authenticate`]: bearer
//! token, session cookie with its CSRF header, or the trusted SSO header),
//! the extractors handlers take ([`Auth`], [`Peer`]), and the helpers the
//! pages' own CSRF check uses ([`cookie`], [`constant_eq`]).

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::auth;
use crate::domain::{PanelError, Principal};

use super::error::ApiError;
use super::state::{AppState, SESSION_COOKIE};

/// Header that carries the CSRF token on cookie-authenticated API calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Token,
    /// A session cookie; carries the session's CSRF token.
    Session {
        csrf: String,
    },
}

/// The authenticated caller, put in request extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Auth {
    pub principal: Principal,
    pub via: Via,
}

impl Auth {
    /// The CSRF token to embed in forms (sessions only).
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf } => csrf,
            Via::Token => "",
        }
    }
}

/// The caller's source address: the TCP peer.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Auth>()
            .cloned()
            .ok_or_else(|| PanelError::Unauthenticated.into())
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for Auth {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Auth>().cloned())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer_of(parts)))
    }
}

fn peer_of(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Reads one cookie from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The logins: they act on the credentials in their body, not on the
/// session's authority, so the session's CSRF token is not asked of them
/// (a browser may come to the login page with a live session; the login
/// ends it). Cross-site posts to them are refused by `guard::same_origin`.
const LOGIN_PATHS: [&str; 2] = ["/login", "/api/v1/auth/login"];

/// What a page's form post without the session's token gets: a page in the
/// panel's layout (its style sheet, the header and the links every
/// signed-in user has), answered here, before any page code runs, so it
/// does not know the user's admin menus.
const CSRF_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Form expired · Keel panel</title>
<link rel="stylesheet" href="/static/keel.css">
</head>
<body>
<a class="skip" href="#main">Skip to the content</a>
<header class="top">
<div class="bar">
<a class="brand" href="/">Keel</a>
<nav class="main" aria-label="Main">
<a href="/">Dashboard</a>
<a href="/servers">Servers</a>
<a href="/sites">Sites</a>
<a href="/keys">SSH keys</a>
<a href="/tokens">API tokens</a>
<a href="/runs">Runs</a>
</nav>
</div>
</header>
<main id="main">
<h1>Form expired</h1>
<p class="error" id="error" role="alert">The form's CSRF token is missing or stale (the page was opened before a new login, or in another session). Nothing was changed: go back, reload the page and send the form again.</p>
</main>
</body>
</html>
"##;

/// The largest form body the CSRF check reads (axum's own form limit).
const FORM_LIMIT: usize = 2 * 1024 * 1024;

/// Resolves the caller. A bearer token wins; otherwise the session cookie;
/// otherwise the SSO header, trusted only from configured proxy addresses,
/// which starts a session. Every state-changing request a session
/// authenticates must carry the session's CSRF token, whatever its route:
/// the `X-CSRF-Token` header, or for an HTML form the `csrf` field (the
/// page handlers check the field again).
pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, mut body) = req.into_parts();
    let mut set_cookie = None;
    let auth = match resolve(&state, &parts, &mut set_cookie).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    if let Some(a) = &auth {
        if let Via::Session { csrf } = &a.via {
            if is_unsafe(&parts.method) && !LOGIN_PATHS.contains(&parts.uri.path()) {
                let (ok, kept) = csrf_sent(&parts, body, csrf).await;
                body = kept;
                if !ok {
                    tracing::warn!(path = %parts.uri.path(), user = %a.principal.name, "request without the session's CSRF token refused");
                    if parts.uri.path().starts_with("/api/") {
                        return ApiError::csrf().into_response();
                    }
                    return (StatusCode::FORBIDDEN, Html(CSRF_PAGE)).into_response();
                }
            }
        }
        parts.extensions.insert(a.clone());
    }
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// Whether the request carries the session's CSRF token: the header, or
/// the `csrf` field of a URL-encoded form (read whole, then handed on).
async fn csrf_sent(parts: &Parts, body: Body, csrf: &str) -> (bool, Body) {
    let header = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if header.is_some_and(|s| constant_eq(s, csrf)) {
        return (true, body);
    }
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if header.is_some() || !is_form {
        return (false, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return (false, Body::empty());
    };
    let ok = form_urlencoded_field(&bytes, "csrf").is_some_and(|s| constant_eq(&s, csrf));
    (ok, Body::from(bytes))
}

/// The first value of `name` in a URL-encoded form.
fn form_urlencoded_field(bytes: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Compares secrets without an early exit.
pub fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn resolve(
    state: &AppState,
    parts: &Parts,
    set_cookie: &mut Option<String>,
) -> Result<Option<Auth>, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "use Authorization: Bearer TOKEN",
                )
            })?;
        let principal = auth::authenticate_token(&state.db, token.trim())
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "unknown or expired token",
                )
            })?;
        return Ok(Some(Auth {
            principal,
            via: Via::Token,
        }));
    }
    // The SSO header counts only from a trusted proxy; there it names the
    // user, and a session cookie for someone else is ignored.
    let sso = &state.config.sso;
    let mut sso_name = None;
    if sso.enabled {
        let peer = peer_of(parts);
        if let Some(name) = parts
            .headers
            .get(sso.header.as_str())
            .and_then(|v| v.to_str().ok())
        {
            if sso.trusted_proxies.iter().any(|net| net.contains(&peer)) {
                sso_name = Some(name.trim().to_string());
            } else {
                tracing::warn!(%peer, "SSO header from an untrusted address ignored");
            }
        }
    }
    if let Some(secret) = cookie(&parts.headers, SESSION_COOKIE).filter(|s| !s.is_empty()) {
        if let Some((principal, csrf)) = auth::session(&state.db, &secret).await? {
            if sso_name.as_ref().is_none_or(|n| *n == principal.name) {
                return Ok(Some(Auth {
                    principal,
                    via: Via::Session { csrf },
                }));
            }
        }
    }
    if let Some(name) = sso_name {
        let principal = auth::sso_user(&state.db, &name).await?;
        let session =
            auth::create_session(&state.db, &state.config.auth, principal.user_id).await?;
        *set_cookie = Some(state.session_cookie(&session.secret));
        return Ok(Some(Auth {
            principal,
            via: Via::Session { csrf: session.csrf },
        }));
    }
    Ok(None)
}
