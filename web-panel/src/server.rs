//! The HTTP server on top of everything: the router that mounts the JSON
//! API (`api`) under `/api/v1` and the HTML pages (`ui`) behind the
//! authentication middleware and request metrics, `/metrics` behind its own
//! network and token check, the browser guards (`http::guard`) around all
//! of it, and serving it over plain TCP or TLS (with HSTS) until shutdown. `api` and `ui` build on `http` (state,
//! error type, extractors); this file alone imports them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::http::guard::{self, same_origin};
use crate::http::{authenticate, constant_eq, ApiError, AppState, Peer};

/// Counts requests and their latency per matched route.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let resp = next.run(req).await;
    state
        .metrics
        .observe(&method, &route, resp.status().as_u16(), start.elapsed());
    resp
}

/// `/metrics`, closed to the networks and token `[metrics]` names. It sits
/// outside the authentication middleware: its token is the scraper's own,
/// not an API token, and a session means nothing here.
async fn metrics(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cfg = &state.config.metrics;
    if !cfg.allow_from.is_empty() && !cfg.allow_from.iter().any(|n| n.contains(&peer)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "metrics are not served to this address",
        ));
    }
    if !cfg.token_file.is_empty() {
        let want = std::fs::read_to_string(&cfg.token_file).map_err(|e| {
            tracing::error!(file = %cfg.token_file, error = %e, "reading metrics.token_file");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the metrics token cannot be read",
            )
        })?;
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let want = want.trim();
        if want.is_empty() || !sent.is_some_and(|s| constant_eq(s, want)) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "metrics need Authorization: Bearer with the metrics token",
            ));
        }
    }
    let text = state.metrics.render(&state.db).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// The whole application. Outermost first: the security headers on every
/// answer, the cross-origin refusal of state-changing browser requests,
/// then (except for `/metrics`) the caller's authentication and the
/// request metrics.
pub fn router(state: AppState) -> Router {
    let app = Router::new()
        .nest("/api/v1", crate::api::router())
        .merge(crate::ui::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    app.route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), same_origin))
        .layer(middleware::from_fn(guard::headers))
        .with_state(state)
}

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Pem {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls server configuration (ring provider) from PEM files.
pub fn tls_config(cert_file: &str, key_file: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    fn pem(path: &str) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + '_ {
        move |source| TlsError::Pem {
            path: path.to_string(),
            source,
        }
    }
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(pem(cert_file))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert_file))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(pem(key_file))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// Serves `router(state)` over TLS on `listener` until `shutdown` fires.
pub async fn serve_tls(
    state: AppState,
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    let app = router(state)
        .layer(middleware::from_fn(guard::hsts))
        .into_make_service_with_connect_info::<SocketAddr>();
    axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .handle(handle)
    .serve(app)
    .await
}

/// Serves `router(state)` on `listener` until `shutdown` fires.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
