//! The server page's forms for what site admins do with their servers:
//! add, change and delete vhosts, apply them again. Each form posts the
//! session's `csrf` and calls the same domain functions as the API
//! (`services::vhosts`), so a refusal (a bad host name, a name another site
//! uses) is the same, shown as the error page with its message.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::post;
use axum::{Form, Router};
use serde::Deserialize;

use super::kit::{check_csrf, signed_in, CsrfForm, UiResult};
use crate::http::{AppState, Auth};
use crate::services::vhosts::{self, VhostBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/servers/{id}/vhosts", post(vhost_create))
        .route("/servers/{id}/vhosts/apply", post(vhosts_apply))
        .route("/servers/{id}/vhosts/{vhost_id}", post(vhost_update))
        .route("/servers/{id}/vhosts/{vhost_id}/delete", post(vhost_delete))
}

fn to_server(id: i64) -> UiResult {
    Ok(Redirect::to(&format!("/servers/{id}")).into_response())
}

/// The vhost form: aliases as one text field, separated by spaces, commas
/// or new lines.
#[derive(Deserialize)]
struct VhostForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    aliases: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    document_root: String,
    #[serde(default)]
    target: String,
}

impl VhostForm {
    fn body(&self) -> VhostBody {
        let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        VhostBody {
            name: self.name.clone(),
            aliases: self
                .aliases
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
            kind: some(&self.kind),
            document_root: some(&self.document_root),
            target: some(&self.target),
        }
    }
}

async fn vhost_create(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<VhostForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    vhosts::create(&st.db, &st.config.dns, &a.principal, id, &f.body()).await?;
    to_server(id)
}

async fn vhost_update(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, vhost_id)): Path<(i64, i64)>,
    Form(f): Form<VhostForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    vhosts::update(
        &st.db,
        &st.config.dns,
        &a.principal,
        id,
        vhost_id,
        &f.body(),
    )
    .await?;
    to_server(id)
}

async fn vhost_delete(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, vhost_id)): Path<(i64, i64)>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    vhosts::delete(&st.db, &st.config.dns, &a.principal, id, vhost_id).await?;
    to_server(id)
}

async fn vhosts_apply(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    vhosts::apply(&st.db, &a.principal, id).await?;
    to_server(id)
}
