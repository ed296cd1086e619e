//! A server's console over a WebSocket (issue #21): `GET
//! /api/v1/services/{id}/console` upgrades to a WebSocket whose binary
//! frames carry the terminal's bytes both ways and whose text frames carry
//! the browser's terminal size (`{"type":"resize","cols":N,"rows":N}`).
//! The console page (`ui/console.rs`, `static/console.js`) is its client.
//!
//! A WebSocket upgrade is a GET, so no CSRF token protects it, and a
//! browser sends the session cookie with it whatever page asked: the
//! `Origin` must be the panel's own (cross-site WebSocket hijacking), and
//! a session-authenticated upgrade must carry one. Then the domain layer
//! authorises (`services::console::authorise`), the backend opens before
//! the upgrade (so a refusal or a failure is an HTTP answer), and the
//! open is audited. While the console is open, the caller's session or
//! token and their right are checked again every [`RECHECK`]: a logout,
//! an expiry, a revoked token, a lost role or a server leaving `ready`
//! closes it, as does the panel's shutdown. The close is audited with the
//! console's duration and why it ended; what is typed or shown is never
//! logged.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Router;
use serde::Deserialize;

use super::kit::{Access, ApiResult, Route};
use crate::auth;
use crate::domain::{PanelError, Principal};
use crate::http::guard::cross_site;
use crate::http::{cookie, ApiError, AppState, Auth, Via, SESSION_COOKIE};
use crate::hypervisor::{Console, ConsoleInput};
use crate::provision::console::{self as backend, ConsoleError, PanelLogin, TermSize};
use crate::services::console::{self, CloseReason, ConsoleKind, ConsoleTarget};

pub const ROUTES: &[Route] = &[(
    "GET",
    "/services/{id}/console",
    Access::SiteAdmin,
    "Open the server's console as a WebSocket (a libvirt VM's serial line, else a shell over SSH as the caller's own account on it): binary frames carry the terminal's bytes, text frames `{\"type\":\"resize\",\"cols\":N,\"rows\":N}`; query `cols`, `rows` for the first size. The Origin must be the panel's own",
)];

/// How often an open console checks that its user may still have it.
pub const RECHECK: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/services/{id}/console", axum::routing::get(open))
}

#[derive(Debug, Deserialize)]
struct SizeQuery {
    cols: Option<u16>,
    rows: Option<u16>,
}

/// What the browser sends in text frames.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { cols: u16, rows: u16 },
}

/// The credential the console checks again while it is open.
#[derive(Clone)]
enum Credential {
    Session(String),
    Token(String),
}

impl Credential {
    fn of(headers: &HeaderMap, via: &Via) -> Option<Credential> {
        match via {
            Via::Session { .. } => cookie(headers, SESSION_COOKIE)
                .filter(|s| !s.is_empty())
                .map(Credential::Session),
            Via::Token => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| Credential::Token(t.trim().to_string())),
        }
    }

    /// Who it still names; `None` once the session or token has ended.
    async fn principal(&self, db: &crate::db::Db) -> Result<Option<Principal>, PanelError> {
        match self {
            Credential::Session(s) => Ok(auth::session(db, s).await?.map(|(p, _)| p)),
            Credential::Token(t) => auth::authenticate_token(db, t).await,
        }
    }
}

/// Why the upgrade's origin is refused, if it is: another site's page,
/// or a session-authenticated upgrade without an `Origin` at all (every
/// browser sends one with a WebSocket).
fn origin_refused(headers: &HeaderMap, via: &Via, public_url: &str) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some(why) = cross_site(headers, host, public_url) {
        return Some(why);
    }
    if matches!(via, Via::Session { .. }) && !headers.contains_key(header::ORIGIN) {
        return Some("no Origin header".into());
    }
    None
}

async fn open(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Query(q): Query<SizeQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult {
    if let Some(why) = origin_refused(&headers, &a.via, &st.config.public_url) {
        tracing::warn!(service_id = id, user = %a.principal.name, %why, "console upgrade from another origin refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a console opens only from the panel's own pages (the Origin header names another site)",
        ));
    }
    let admin_user = &st.config.hypervisor.admin_user;
    let target = console::authorise(&st.db, &a.principal, id, admin_user).await?;
    let Ok(ws) = ws else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "the console is a WebSocket: send the upgrade headers",
        ));
    };
    let Some(credential) = Credential::of(&headers, &a.via) else {
        return Err(PanelError::Unauthenticated.into());
    };
    let placement = {
        let mut rc = st.db.read().await?;
        crate::services::hosts::placement_of(&mut rc.conn(), id).await?
    };
    let size = TermSize {
        cols: q.cols.unwrap_or(80).clamp(10, 500),
        rows: q.rows.unwrap_or(24).clamp(5, 300),
    };
    let key = st.config.data_dir.join("ssh").join("id_ed25519");
    let login = PanelLogin {
        admin_user,
        private_key: &key,
    };
    let (kind, backend) = backend::open(&st.drivers, &placement, &target, login, size)
        .await
        .map_err(|e| match e {
            ConsoleError::Panel(p) => ApiError::from(p),
            other => {
                tracing::warn!(service_id = id, error = %other, "the console could not be opened");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "console_unavailable",
                    "the server's console could not be opened; try again in a moment",
                )
            }
        })?;
    let opened_at = console::opened(&st.db, &a.principal, &target, kind).await?;
    let principal = a.principal;
    Ok(ws.on_upgrade(move |socket| async move {
        let reason = carry(&st, &credential, &target, kind, backend, socket).await;
        if let Err(e) = console::closed(&st.db, &principal, id, kind, opened_at, reason).await {
            tracing::error!(service_id = id, error = %e, "recording the console's close");
        }
    }))
}

/// Carries the console until one side ends it or its user may no longer
/// have it; closes the WebSocket with a code and reason the page shows.
async fn carry(
    st: &AppState,
    credential: &Credential,
    target: &ConsoleTarget,
    kind: ConsoleKind,
    mut backend: Console,
    mut socket: WebSocket,
) -> CloseReason {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let reason = loop {
        tokio::select! {
            out = backend.output.recv() => match out {
                Some(bytes) => {
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        break CloseReason::Client;
                    }
                }
                None => break CloseReason::Server,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if backend.input.send(ConsoleInput::Data(b.to_vec())).await.is_err() {
                        break CloseReason::Server;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(Control::Resize { cols, rows }) = serde_json::from_str(t.as_str()) {
                        let _ = backend
                            .input
                            .send(ConsoleInput::Resize {
                                cols: cols.clamp(10, 500),
                                rows: rows.clamp(5, 300),
                            })
                            .await;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break CloseReason::Client,
                Some(Ok(_)) => {}
            },
            _ = tick.tick() => {
                if let Some(reason) = still_allowed(st, credential, target, kind).await {
                    break reason;
                }
            }
            _ = st.shutdown.cancelled() => break CloseReason::Shutdown,
        }
    };
    // Dropping the backend's input ends the SSH session or the serial pump.
    drop(backend);
    let (code, text) = match reason {
        CloseReason::Client => (1000, "closed"),
        CloseReason::Server => (1000, "the server closed the console"),
        CloseReason::SessionEnded => (4001, "your session ended: log in again"),
        CloseReason::NoLongerAllowed => (4003, "you may no longer open this console"),
        CloseReason::Shutdown => (1001, "the panel is shutting down"),
    };
    if reason != CloseReason::Client {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: text.into(),
            })))
            .await;
    }
    reason
}

/// `None` while the console may stay open; else why it must close. A
/// database that cannot be read now closes nothing.
async fn still_allowed(
    st: &AppState,
    credential: &Credential,
    target: &ConsoleTarget,
    kind: ConsoleKind,
) -> Option<CloseReason> {
    let who = match credential.principal(&st.db).await {
        Ok(Some(p)) => p,
        Ok(None) => return Some(CloseReason::SessionEnded),
        Err(e) => {
            tracing::warn!(error = %e, "checking an open console's session");
            return None;
        }
    };
    let admin_user = &st.config.hypervisor.admin_user;
    match console::authorise(&st.db, &who, target.service_id, admin_user).await {
        Ok(now) if kind == ConsoleKind::Ssh && now.account != target.account => {
            Some(CloseReason::NoLongerAllowed)
        }
        Ok(_) => None,
        Err(PanelError::Store(_) | PanelError::Database(_)) => None,
        Err(_) => Some(CloseReason::NoLongerAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_the_panels_own_origin_may_open_a_console() {
        let session = Via::Session { csrf: "c".into() };
        let public = "https://panel.example.org";
        let own = headers(&[
            ("host", "10.0.0.5:8080"),
            ("origin", "http://10.0.0.5:8080"),
        ]);
        assert_eq!(origin_refused(&own, &session, public), None);
        let public_name = headers(&[
            ("host", "internal:8080"),
            ("origin", "https://panel.example.org"),
        ]);
        assert_eq!(origin_refused(&public_name, &session, public), None);
        let evil = headers(&[
            ("host", "10.0.0.5:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(origin_refused(&evil, &session, public).is_some());
        assert!(origin_refused(&evil, &Via::Token, public).is_some());
        let fetch_says_cross = headers(&[
            ("host", "10.0.0.5:8080"),
            ("origin", "http://10.0.0.5:8080"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(origin_refused(&fetch_says_cross, &session, public).is_some());
        // A cookie needs an Origin; a token (a script, not a browser) not.
        let none = headers(&[("host", "10.0.0.5:8080")]);
        assert!(origin_refused(&none, &session, public).is_some());
        assert_eq!(origin_refused(&none, &Via::Token, public), None);
    }

    #[test]
    fn text_frames_are_resizes_and_nothing_else() {
        let r: Control = serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        let Control::Resize { cols, rows } = r;
        assert_eq!((cols, rows), (120, 40));
        assert!(serde_json::from_str::<Control>(r#"{"type":"exec","cmd":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<Control>(r#"{"type":"resize","cols":-1,"rows":4}"#).is_err()
        );
    }
}
