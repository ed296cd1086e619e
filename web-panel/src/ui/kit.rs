//! What every page handler of `ui/` shares: the template environment (the
//! HTML files of `web-panel/templates/`, compiled in), rendering a page for
//! the signed-in user, the CSRF check of form posts, and the error page.
//! The lowest file of `ui/`: the page modules import it, never each other.

use std::sync::OnceLock;

use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::{context, Environment, Value};

use crate::domain::PanelError;
use crate::http::{constant_eq, Auth, Via};

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            ("base.html", include_str!("../../templates/base.html")),
            ("login.html", include_str!("../../templates/login.html")),
            ("servers.html", include_str!("../../templates/servers.html")),
            ("server.html", include_str!("../../templates/server.html")),
            (
                "server_test.html",
                include_str!("../../templates/server_test.html"),
            ),
            (
                "new_server.html",
                include_str!("../../templates/new_server.html"),
            ),
            ("keys.html", include_str!("../../templates/keys.html")),
            ("sites.html", include_str!("../../templates/sites.html")),
            ("site.html", include_str!("../../templates/site.html")),
            (
                "admin_jobs.html",
                include_str!("../../templates/admin_jobs.html"),
            ),
            (
                "admin_pools.html",
                include_str!("../../templates/admin_pools.html"),
            ),
            (
                "admin_packages.html",
                include_str!("../../templates/admin_packages.html"),
            ),
            (
                "db_password.html",
                include_str!("../../templates/db_password.html"),
            ),
            (
                "admin_audit.html",
                include_str!("../../templates/admin_audit.html"),
            ),
            ("error.html", include_str!("../../templates/error.html")),
            ("graphs.html", include_str!("../../templates/graphs.html")),
            (
                "auto_projects.html",
                include_str!("../../templates/auto_projects.html"),
            ),
            (
                "auto_credentials.html",
                include_str!("../../templates/auto_credentials.html"),
            ),
            (
                "auto_inventories.html",
                include_str!("../../templates/auto_inventories.html"),
            ),
            (
                "auto_templates.html",
                include_str!("../../templates/auto_templates.html"),
            ),
            (
                "auto_template_form.html",
                include_str!("../../templates/auto_template_form.html"),
            ),
            (
                "auto_template.html",
                include_str!("../../templates/auto_template.html"),
            ),
            (
                "auto_runs.html",
                include_str!("../../templates/auto_runs.html"),
            ),
            (
                "auto_run.html",
                include_str!("../../templates/auto_run.html"),
            ),
            (
                "auto_schedules.html",
                include_str!("../../templates/auto_schedules.html"),
            ),
            (
                "auto_notifications.html",
                include_str!("../../templates/auto_notifications.html"),
            ),
        ] {
            env.add_template(name, src)
                .expect("built-in template parses");
        }
        env.add_filter("ts", |ms: Option<i64>| -> String {
            ms.and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default()
        });
        env
    })
}

/// An error page (or a redirect to the login page).
pub struct UiError(pub PanelError);

impl From<PanelError> for UiError {
    fn from(e: PanelError) -> Self {
        UiError(e)
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> Self {
        UiError(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if matches!(self.0, PanelError::Unauthenticated) {
            return Redirect::to("/login").into_response();
        }
        let api = crate::http::ApiError::from(self.0);
        let page = render(
            "error.html",
            context! { error => api.message, status => api.status.as_u16() },
        )
        .unwrap_or_else(|_| Html("error".to_string()));
        (api.status, page).into_response()
    }
}

pub type UiResult = Result<Response, UiError>;

/// A form that carries nothing but the session's CSRF token (a button).
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub fn render(name: &str, ctx: Value) -> Result<Html<String>, PanelError> {
    templates()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| PanelError::Internal(format!("rendering {name}: {e:#}")))
}

/// Renders a page for a signed-in user.
pub fn page(a: &Auth, name: &str, ctx: Value) -> UiResult {
    let base = context! {
        user => context! { name => a.principal.name.clone(), is_admin => a.principal.is_admin },
        csrf => a.csrf(),
    };
    Ok(render(name, context! { ..ctx, ..base })?.into_response())
}

/// Form posts must carry the session's CSRF token.
pub fn check_csrf(a: &Auth, sent: &str) -> Result<(), UiError> {
    match &a.via {
        Via::Session { csrf } if constant_eq(csrf, sent) => Ok(()),
        Via::Session { .. } => Err(UiError(PanelError::Forbidden(
            "the form's CSRF token is missing or stale; reload the page".into(),
        ))),
        Via::Token => Ok(()),
    }
}

/// Signed-in users only; anonymous visitors go to the login page.
pub fn signed_in(a: Option<Auth>) -> Result<Auth, UiError> {
    a.ok_or(UiError(PanelError::Unauthenticated))
}

pub fn admin_only(a: &Auth) -> Result<(), UiError> {
    if a.principal.is_admin {
        Ok(())
    } else {
        Err(UiError(PanelError::Forbidden(
            "platform admins only".into(),
        )))
    }
}
