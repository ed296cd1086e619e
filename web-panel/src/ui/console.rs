//! The console page (`/servers/{id}/console`): a terminal drawn by
//! xterm.js, which the panel vendors and serves itself
//! (`static/vendor/xterm/`, MIT), joined by `static/console.js` to the
//! console's WebSocket (`api/console.rs`). The page asks the domain layer
//! first (`services::console::authorise`), so whoever may not open the
//! console gets the refusal page instead of a terminal that cannot
//! connect. Without script the page says to use SSH.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use minijinja::context;

use super::kit::{page, signed_in, UiResult};
use crate::http::{AppState, Auth};
use crate::services::console;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/servers/{id}/console", get(console_page))
        .route("/static/console.js", get(console_script))
        .route("/static/console.css", get(console_style))
        .route("/static/vendor/xterm/xterm.js", get(xterm_script))
        .route("/static/vendor/xterm/xterm.css", get(xterm_style))
        .route("/static/vendor/xterm/LICENSE", get(xterm_license))
}

async fn console_page(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
) -> UiResult {
    let a = signed_in(a)?;
    let target =
        console::authorise(&st.db, &a.principal, id, &st.config.hypervisor.admin_user).await?;
    page(
        &a,
        "console.html",
        context! {
            service_id => id,
            hostname => target.hostname,
            account => target.account,
        },
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

async fn console_script() -> Response {
    asset(JS, include_str!("../../static/console.js"))
}

async fn console_style() -> Response {
    asset(CSS, include_str!("../../static/console.css"))
}

async fn xterm_script() -> Response {
    asset(JS, include_str!("../../static/vendor/xterm/xterm.js"))
}

async fn xterm_style() -> Response {
    asset(CSS, include_str!("../../static/vendor/xterm/xterm.css"))
}

async fn xterm_license() -> Response {
    asset(
        "text/plain; charset=utf-8",
        include_str!("../../static/vendor/xterm/LICENSE"),
    )
}
