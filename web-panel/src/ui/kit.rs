//! What every page handler of `ui/` shares: the template environment (the
//! HTML files of `web-panel/templates/`, compiled in; empty values print as
//! "—", never "none"), the stylesheet and script the panel serves itself
//! (`web-panel/static/`), rendering a page for the signed-in user, the CSRF
//! check of form posts, form refusals shown beside their field, and the
//! error pages (which keep the navigation and the signed-in user: the
//! [`error_pages`] layer renders them, since it sees the request's caller).
//! The lowest file of `ui/`: the page modules import it, never each other.

use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::{context, Environment, Value};

use minijinja::value::Serde;

use crate::domain::PanelError;
use crate::http::{constant_eq, Auth, Via};

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            ("base.html", include_str!("../../templates/base.html")),
            ("_macros.html", include_str!("../../templates/_macros.html")),
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
                "admin_hosts.html",
                include_str!("../../templates/admin_hosts.html"),
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
            ("console.html", include_str!("../../templates/console.html")),
            ("confirm.html", include_str!("../../templates/confirm.html")),
            (
                "dashboard.html",
                include_str!("../../templates/dashboard.html"),
            ),
            ("job.html", include_str!("../../templates/job.html")),
            ("tokens.html", include_str!("../../templates/tokens.html")),
            (
                "admin_users.html",
                include_str!("../../templates/admin_users.html"),
            ),
            (
                "admin_groups.html",
                include_str!("../../templates/admin_groups.html"),
            ),
            (
                "admin_quotas.html",
                include_str!("../../templates/admin_quotas.html"),
            ),
            (
                "admin_types.html",
                include_str!("../../templates/admin_types.html"),
            ),
            (
                "admin_pool.html",
                include_str!("../../templates/admin_pool.html"),
            ),
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
                .unwrap_or_else(|| EMPTY.to_string())
        });
        // A form field's value: an empty value is an empty field, not "—".
        env.add_filter("v", |v: Value| -> Value {
            if v.is_none() || v.is_undefined() {
                Value::from("")
            } else {
                v
            }
        });
        // Audit rows' JSON, indented so it wraps inside its cell.
        env.add_filter("pretty", |v: Value| -> String {
            let text = v.to_string();
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|j| serde_json::to_string_pretty(&j).ok())
                .unwrap_or(text)
        });
        // Printed values: none (a missing IPv6, no error) is "—", never
        // the template language's "none".
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                out.write_str(EMPTY).map_err(minijinja::Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env
    })
}

/// How an empty value prints.
pub const EMPTY: &str = "—";

/// The stylesheet and the script, served from the binary.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/keel.css"),
    )
        .into_response()
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/keel.js"),
    )
        .into_response()
}

/// An error page (or a redirect to the login page).
pub struct UiError(pub PanelError);

/// What an error page says; put on the response by [`UiError`] and turned
/// into the page by [`error_pages`], which knows who is signed in.
#[derive(Clone)]
struct ErrorPage {
    message: String,
}

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

/// Put on the login redirect of an anonymous visit, so [`error_pages`],
/// which sees the request, can add where the visitor was going.
#[derive(Clone, Copy)]
struct LoginFirst;

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if matches!(self.0, PanelError::Unauthenticated) {
            let mut resp = Redirect::to("/login").into_response();
            resp.extensions_mut().insert(LoginFirst);
            return resp;
        }
        let api = crate::http::ApiError::from(self.0);
        let mut resp = api.status.into_response();
        resp.extensions_mut().insert(ErrorPage {
            message: api.message,
        });
        resp
    }
}

/// The error page for `status`, with the navigation of `who` (or of an
/// anonymous visitor).
fn error_page(who: Option<&Auth>, status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible now",
        StatusCode::UNPROCESSABLE_ENTITY => "Not accepted",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::METHOD_NOT_ALLOWED => "Not a page",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        s if s.is_server_error() => "Something went wrong",
        _ => "Error",
    };
    let ctx = context! { error => message, status => status.as_u16(), title };
    let html = match who {
        Some(a) => render("error.html", context! { ..ctx, ..base_ctx(a) }),
        None => render("error.html", ctx),
    }
    .unwrap_or_else(|_| Html(format!("{} {title}", status.as_u16())));
    (status, html).into_response()
}

/// The layer over every page route: a refused request's [`UiError`]
/// becomes the error page, with the caller's navigation.
/// An anonymous visit to a page goes to the login page with the page as
/// its `next`, so the login comes back to it.
pub async fn error_pages(req: Request, next: Next) -> Response {
    let who = req.extensions().get::<Auth>().cloned();
    let back = (req.method() == axum::http::Method::GET)
        .then(|| req.uri().path_and_query().map(|p| p.as_str().to_string()))
        .flatten()
        .filter(|p| local_path(p).is_some());
    let mut resp = next.run(req).await;
    if let Some(e) = resp.extensions_mut().remove::<ErrorPage>() {
        return error_page(who.as_ref(), resp.status(), &e.message);
    }
    if resp.extensions_mut().remove::<LoginFirst>().is_some() {
        if let Some(back) = back.filter(|b| b != "/") {
            let query = serde_urlencoded::to_string([("next", back.as_str())]).unwrap_or_default();
            return Redirect::to(&format!("/login?{query}")).into_response();
        }
    }
    resp
}

/// `next` if it is a path on this panel, to go to after the login; else
/// nothing (the caller goes to the dashboard). Only a path that starts
/// with exactly one `/` and holds nothing but visible ASCII, without a
/// backslash: `//host`, `/\host`, a scheme (`https:`, `javascript:`), and
/// tabs or line breaks (which browsers drop, turning `/\t/host` into
/// `//host`) would each send the browser to another site.
pub fn local_path(next: &str) -> Option<&str> {
    let mut chars = next.chars();
    let ok = next.len() <= 2048
        && chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && next.chars().all(|c| c.is_ascii_graphic() && c != '\\');
    ok.then_some(next)
}

/// What [`ask_first`] asks before a destructive form post.
#[derive(Clone, Copy)]
pub struct Question {
    pub title: &'static str,
    pub message: &'static str,
    pub button: &'static str,
}

/// The largest form body [`ask_first`] reads (axum's own form limit).
const FORM_LIMIT: usize = 2 * 1024 * 1024;

/// A layer for a destructive form route whose handler does not ask by
/// itself: a post without `confirmed=yes` (what keel.js's dialog adds to a
/// `data-confirm` form) gets a confirmation page instead, whose button
/// posts the same fields again, confirmed. So the pages ask without the
/// script too. Runs after the authentication middleware has checked the
/// CSRF token; an anonymous post goes on to the handler (and the login).
pub async fn ask_first(
    axum::extract::State(q): axum::extract::State<Question>,
    req: Request,
    next: Next,
) -> Response {
    let who = req.extensions().get::<Auth>().cloned();
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let confirmed = pairs.iter().any(|(k, v)| k == "confirmed" && v == "yes");
    let Some(a) = who.filter(|_| !confirmed) else {
        return next
            .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
            .await;
    };
    let fields: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| k != "csrf" && k != "confirmed")
        .collect();
    // Back to the page the form was on, when the browser says which.
    let back = parts
        .headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.parse::<axum::http::Uri>().ok())
        .and_then(|u| u.path_and_query().map(|p| p.as_str().to_string()))
        .filter(|p| local_path(p).is_some())
        .unwrap_or_else(|| "/".to_string());
    page(
        &a,
        "confirm.html",
        context! {
            title => q.title,
            message => q.message,
            button => q.button,
            action => parts.uri.path(),
            back,
            fields => Value::from(Serde(&fields)),
        },
    )
    .into_response()
}

/// Paths nothing answers: a 404 page (JSON under `/api/`).
pub async fn not_found(who: Option<Auth>, uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return crate::http::ApiError::from(PanelError::NotFound("route")).into_response();
    }
    error_page(
        who.as_ref(),
        StatusCode::NOT_FOUND,
        "There is no page at this address.",
    )
}

/// A path that exists, asked with a method it does not answer (a form's
/// target opened as a link).
pub async fn wrong_method(who: Option<Auth>, uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return crate::http::ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not answer that method",
        )
        .into_response();
    }
    error_page(
        who.as_ref(),
        StatusCode::METHOD_NOT_ALLOWED,
        "This address takes a form's button, not a visit; go back and use the button.",
    )
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

fn base_ctx(a: &Auth) -> Value {
    context! {
        user => context! { name => a.principal.name.clone(), is_admin => a.principal.is_admin },
        csrf => a.csrf(),
    }
}

/// Renders a page for a signed-in user. `errors` and `form` are always
/// there (empty), so a form's fields can look themselves up.
pub fn page(a: &Auth, name: &str, ctx: Value) -> UiResult {
    let defaults = context! {
        errors => Value::from(Serde(serde_json::json!({}))),
        form => Value::from(Serde(serde_json::json!({}))),
    };
    // In `context!`, the first source that has a key wins.
    Ok(render(name, context! { ..ctx, ..base_ctx(a), ..defaults })?.into_response())
}

/// A refusal a form shows beside its fields: the status, the message, and
/// `{field: message}` when the domain layer named the field.
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
    pub errors: serde_json::Value,
}

impl Refused {
    /// The refusals a form shows on itself; anything else (not found, not
    /// allowed, internal) stays an error for the error page.
    pub fn of(e: PanelError) -> Result<Refused, UiError> {
        let errors = match &e {
            PanelError::Invalid { field, message } => serde_json::json!({ field: message }),
            PanelError::Conflict(_)
            | PanelError::QuotaExceeded(_)
            | PanelError::PoolExhausted(_)
            | PanelError::NoCapacity(_)
            | PanelError::Unavailable(_) => serde_json::json!({}),
            _ => return Err(UiError(e)),
        };
        let api = crate::http::ApiError::from(e);
        Ok(Refused {
            status: api.status,
            message: api.message,
            errors,
        })
    }

    /// The form page again, with what was typed (`form`), the message and
    /// the field errors, answered with the refusal's status.
    pub fn again(self, a: &Auth, name: &str, ctx: Value, form: serde_json::Value) -> UiResult {
        let extra = context! {
            error => self.message,
            errors => Value::from(Serde(self.errors)),
            form => Value::from(Serde(form)),
        };
        let mut resp = page(a, name, context! { ..extra, ..ctx })?;
        *resp.status_mut() = self.status;
        Ok(resp)
    }
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

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths_are_next() {
        for ok in [
            "/",
            "/servers",
            "/servers/7?tab=jobs#jobs",
            "/runs?status=failed&offset=50",
        ] {
            assert_eq!(local_path(ok), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "servers",
            "//evil.example",
            "//evil.example/servers",
            "/\\evil.example",
            "/servers\\..\\",
            "https://evil.example/",
            "javascript:alert(1)",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/caf\u{e9}",
            "\\\\evil.example",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
        assert_eq!(local_path(&format!("/{}", "a".repeat(3000))), None);
    }
}
