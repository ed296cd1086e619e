//! The HTML pages, rendered on the server with minijinja (templates in
//! `web-panel/templates/`, auto-escaping on because every template name
//! ends in `.html`), styled by the one stylesheet the panel serves
//! (`/static/keel.css`). One small script (`/static/keel.js`) asks before
//! destructive posts and follows the server page live over its SSE stream;
//! every page works without it (a destructive post without the script's
//! `confirmed=yes` gets a confirmation page first). Every form posts a
//! `csrf` field that must match the session's token. Pages call the same
//! domain functions as the API, so authorisation is the same; a form the
//! domain layer refuses comes back with what was typed and the message
//! beside the field it names.
//!
//! Layout: `kit.rs` (templates, rendering, CSRF, refusals, the error pages
//! and the 404 page) is below the page files; this file holds the end
//! users' pages (dashboard, login, servers, sites, keys, tokens, job pages),
//! `admin.rs` the platform admins' pages (users, groups, quotas, server
//! types, pools, jobs, audit), `automation.rs` the playbook-run pages,
//! `siteops.rs` the server page's forms for web sites, `analytics.rs`
//! a server's graphs (SVG drawn on the server, no script) and `console.rs`
//! the console page (xterm.js, vendored, over the console's WebSocket).

mod admin;
mod analytics;
mod automation;
mod console;
mod kit;
mod siteops;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::value::Serde;
use minijinja::{context, Value};
use serde::Deserialize;

use crate::alloc;
use crate::audit::{self, AuditFilter};
use crate::auth;
use crate::domain::{Page, PanelError};
use crate::http::{AppState, Auth, Peer};
use crate::lifecycle::Status;
use crate::services::servers::{self, CreateServer, ServiceFilter};
use crate::services::sites::{self, NewSite};
use crate::services::{catalog, jobs, keys, lookup, unix_groups};
use kit::{
    admin_only, check_csrf, page, render, signed_in, CsrfForm, Question, Refused, UiError, UiResult,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(siteops::router())
        .merge(admin::router())
        .merge(analytics::router())
        .merge(console::router())
        .route("/", get(dashboard))
        .route("/static/keel.css", get(kit::stylesheet))
        .route("/static/keel.js", get(kit::script))
        .route("/jobs/{id}", get(job_page))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/tokens", get(my_tokens).post(create_token))
        .route("/tokens/{id}/revoke", post(revoke_token))
        .route("/sites/{id}/edit", post(site_edit))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/servers", get(my_servers).post(create_server))
        .route("/servers/new", get(new_server))
        .route("/servers/{id}", get(server))
        .route("/servers/{id}/retry", post(retry))
        .route("/servers/{id}/converge", post(converge))
        .route("/servers/{id}/delete", post(delete))
        .route("/servers/{id}/power", post(power))
        .route("/servers/{id}/migrate", post(migrate))
        .route("/sites", get(my_sites).post(create_site))
        .route("/sites/{id}", get(site))
        .route("/sites/{id}/members", post(site_member))
        .route(
            "/sites/{id}/members/{user_id}/delete",
            post(site_member_remove).layer(from_fn_with_state(
                Question {
                    title: "Remove this person from the site?",
                    message: "They lose their account on the site's servers at the next access run, unless a lookup group still names them.",
                    button: "Remove from the site",
                },
                kit::ask_first,
            )),
        )
        .route("/sites/{id}/lookup-groups", post(site_lookup_group))
        .route(
            "/sites/{id}/lookup-groups/delete",
            post(site_lookup_group_remove).layer(from_fn_with_state(
                Question {
                    title: "Remove this lookup group from the site?",
                    message: "Its members lose what the group gave them on the site's servers at the next access run.",
                    button: "Remove the group",
                },
                kit::ask_first,
            )),
        )
        .route("/sites/{id}/unix-groups", post(unix_group_create))
        .route(
            "/sites/{id}/unix-groups/{group_id}/delete",
            post(unix_group_delete).layer(from_fn_with_state(
                Question {
                    title: "Delete this Unix group?",
                    message: "It is removed from the site's servers at the next access run.",
                    button: "Delete the group",
                },
                kit::ask_first,
            )),
        )
        .route(
            "/sites/{id}/unix-groups/{group_id}/members",
            post(unix_group_member),
        )
        .route(
            "/sites/{id}/unix-groups/{group_id}/members/remove",
            post(unix_group_member_remove).layer(from_fn_with_state(
                Question {
                    title: "Take this person out of the Unix group?",
                    message: "They leave the group on the site's servers at the next access run.",
                    button: "Take them out",
                },
                kit::ask_first,
            )),
        )
        .route("/sites/{id}/lookup-refresh", post(site_lookup_refresh))
        .route(
            "/sites/{id}/suspend",
            post(site_suspend).layer(from_fn_with_state(
                Question {
                    title: "Suspend this site?",
                    message: "Nobody can log in to its servers any more, and they are shut down, until the site is unsuspended.",
                    button: "Suspend the site",
                },
                kit::ask_first,
            )),
        )
        .route("/sites/{id}/unsuspend", post(site_unsuspend))
        .route("/servers/{id}/access", post(server_access_sync))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/keys", get(my_keys).post(add_key))
        .route("/keys/{id}/delete", post(remove_key))
        .route("/admin/services", get(admin_services))
        .route("/admin/audit", get(admin_audit))
        .merge(automation::router())
        .fallback(kit::not_found)
        .method_not_allowed_fallback(kit::wrong_method)
        .layer(axum::middleware::from_fn(kit::error_pages))
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// The login page; `next` (a page of this panel, see [`kit::local_path`])
/// is where the login goes afterwards.
async fn login_form(Query(q): Query<NextQuery>) -> UiResult {
    let next = kit::local_path(&q.next).unwrap_or("");
    Ok(render("login.html", context! { name => "", next })?.into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(st): State<AppState>,
    Peer(ip): Peer,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> UiResult {
    match auth::login(
        &st.db,
        &st.config.auth,
        &st.passwords,
        &f.name,
        f.password,
        ip,
    )
    .await
    {
        Ok(p) => {
            // Against session fixation: the session the browser came with
            // ends; the login always gets a new secret.
            if let Some(old) = crate::http::cookie(&headers, crate::http::SESSION_COOKIE) {
                auth::end_session(&st.db, &old).await?;
            }
            let s = auth::create_session(&st.db, &st.config.auth, p.user_id).await?;
            // Back to the page the visitor asked for, if it is one of ours:
            // never another site (an open redirect).
            let to = kit::local_path(&f.next).unwrap_or("/");
            Ok((
                [(header::SET_COOKIE, st.session_cookie(&s.secret))],
                Redirect::to(to),
            )
                .into_response())
        }
        Err(e @ (PanelError::BadCredentials | PanelError::Throttled { .. })) => {
            let status = crate::http::ApiError::from(PanelError::BadCredentials).status;
            let status = if matches!(e, PanelError::Throttled { .. }) {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                status
            };
            let html = render(
                "login.html",
                context! {
                    name => f.name,
                    error => e.to_string(),
                    next => kit::local_path(&f.next).unwrap_or(""),
                },
            )?;
            Ok((status, html).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn logout(
    State(st): State<AppState>,
    a: Option<Auth>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if let Some(secret) = crate::http::cookie(&headers, crate::http::SESSION_COOKIE) {
        auth::end_session(&st.db, &secret).await?;
    }
    Ok((
        [(header::SET_COOKIE, st.session_cookie(""))],
        Redirect::to("/login"),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
struct ListForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: i64,
    /// The page after this cursor (the list's `next`): "Next" links use it.
    #[serde(default)]
    cursor: String,
}

async fn list_page(st: &AppState, a: &Auth, f: ListForm, heading: &str) -> UiResult {
    let filter = ServiceFilter {
        status: Some(f.status.clone()).filter(|s| !s.is_empty()),
        site_id: None,
        q: Some(f.q.clone()).filter(|s| !s.is_empty()),
    };
    let cursor = Some(f.cursor.as_str()).filter(|c| !c.is_empty());
    let page_data = servers::list_after(
        &st.db,
        &a.principal,
        &filter,
        Page {
            limit: 50,
            offset: if cursor.is_some() { 0 } else { f.offset.max(0) },
        },
        cursor,
    )
    .await?;
    page(
        a,
        "servers.html",
        context! { heading, page => Value::from(Serde(&page_data)), statuses => Status::names(), status => f.status, q => f.q, cursor => f.cursor },
    )
}

async fn my_servers(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(f): Query<ListForm>,
) -> UiResult {
    let a = signed_in(a)?;
    list_page(&st, &a, f, "Your servers").await
}

async fn admin_services(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(f): Query<ListForm>,
) -> UiResult {
    let a = signed_in(a)?;
    admin_only(&a)?;
    list_page(&st, &a, f, "All servers").await
}

/// What the create-server form shows: the sites one administers, the
/// server types, and the network kinds that have a pool.
async fn new_server_ctx(st: &AppState, a: &Auth) -> Result<Value, UiError> {
    let my_sites = sites::list(
        &st.db,
        &a.principal,
        Page {
            limit: 500,
            offset: 0,
        },
    )
    .await?;
    let active: Vec<_> = my_sites
        .items
        .into_iter()
        .filter(|s| s.state == "active")
        .collect();
    let types = catalog::list(&st.db).await?;
    let networks = alloc::pool_types_in_use(&st.db).await?;
    Ok(context! {
        sites => Value::from(Serde(&active)),
        types => Value::from(Serde(&types)),
        networks => networks,
        idempotency_key => auth::random_secret(),
    })
}

async fn new_server(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let ctx = new_server_ctx(&st, &a).await?;
    page(&a, "new_server.html", ctx)
}

#[derive(Deserialize, serde::Serialize)]
struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    site_id: String,
    #[serde(default)]
    server_type: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    pool_type: String,
    #[serde(default)]
    idempotency_key: String,
}

async fn create_server(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<CreateForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let site_id = f
        .site_id
        .trim()
        .parse::<i64>()
        .map_err(|_| PanelError::invalid("site_id", "pick one of your sites"));
    let result = match site_id {
        Ok(site_id) => {
            let req = CreateServer {
                site_id,
                kind: f.kind.clone(),
                server_type: f.server_type.clone(),
                pool_type: f.pool_type.clone(),
            };
            // The form carries a key made when it was shown, so a double
            // submit creates one server.
            let key = Some(f.idempotency_key.as_str()).filter(|k| !k.is_empty());
            servers::create(&st.db, &a.principal, &req, key).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(out) => {
            Ok(Redirect::to(&format!("/servers/{}", out.created.service.id)).into_response())
        }
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = new_server_ctx(&st, &a).await?;
            let form = serde_json::to_value(&f).unwrap_or_default();
            refused.again(&a, "new_server.html", ctx, form)
        }
    }
}

#[derive(Deserialize, serde::Serialize)]
struct SiteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner_email: String,
    #[serde(default)]
    description: String,
}

async fn create_site(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<SiteForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let new = NewSite {
        name: f.name.clone(),
        description: f.description.clone(),
        owner_email: f.owner_email.clone(),
    };
    match sites::create(&st.db, &a.principal, &new).await {
        Ok(site) => Ok(Redirect::to(&format!("/sites/{}?created=1", site.id)).into_response()),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = sites_ctx(&st, &a).await?;
            let form = serde_json::to_value(&f).unwrap_or_default();
            refused.again(&a, "sites.html", ctx, form)
        }
    }
}

/// Job output lines the server page renders before its script takes over.
const PAGE_LOG_LINES: u32 = 200;

async fn server(State(st): State<AppState>, a: Option<Auth>, Path(id): Path<i64>) -> UiResult {
    let a = signed_in(a)?;
    let detail = servers::get(&st.db, &a.principal, id, &st.config.hypervisor.admin_user).await?;
    // The newest job's last lines; the page's script follows the stream
    // from the last one (`after`), so nothing is shown twice.
    let (log, after) = match detail.jobs.first() {
        Some(job) => {
            let mut rc = st.db.read().await?;
            let lines = crate::queue::log::tail_on(&mut rc.conn(), job.id, PAGE_LOG_LINES).await?;
            let after = format!("{}:{}", job.id, lines.last().map_or(0, |l| l.seq));
            let log: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "job_id": l.job_id,
                        "seq": l.seq,
                        "text": crate::queue::log::summary(&l.line),
                    })
                })
                .collect();
            (log, Some(after))
        }
        None => (Vec::new(), None),
    };
    // The packages section is for those who manage the server (site
    // admins, platform admins); SSH-only members see none.
    let picked = match crate::services::packages::list(&st.db, &a.principal, id).await {
        Ok(names) => Some(names),
        Err(PanelError::Forbidden(_) | PanelError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let allowed = match picked {
        Some(_) => crate::services::packages::allowed(&st.db).await?,
        None => Vec::new(),
    };
    let (snapshots, schedule) = match picked {
        Some(_) => {
            let mut rc = st.db.read().await?;
            let mut conn = rc.conn();
            let list = crate::services::snapshots::of_server(&mut conn, id).await?;
            let schedule =
                crate::services::snapshots::schedule_of(&mut conn, detail.service.site_id).await?;
            (list, Some(schedule))
        }
        None => (Vec::new(), None),
    };
    let test_pair = match picked {
        Some(_) => Some(crate::services::testservers::pair(&st.db, &a.principal, id).await?),
        None => None,
    };
    // The hosts a server may be moved to: for those the domain layer lets
    // see them (platform admins).
    let hosts = match crate::services::hosts::list(&st.db, &a.principal).await {
        Ok(list) => list,
        Err(PanelError::Forbidden(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    page(
        &a,
        "server.html",
        context! {
            s => Value::from(Serde(&detail)),
            log => Value::from(Serde(&log)),
            log_after => after,
            manages => picked.is_some(),
            snapshots => Value::from(Serde(&snapshots)),
            snapshot_schedule => Value::from(Serde(&schedule)),
            test_pair => Value::from(Serde(&test_pair)),
            packages => Value::from(Serde(&picked)),
            allowed_packages => Value::from(Serde(&allowed)),
            hosts => Value::from(Serde(&hosts)),
        },
    )
}

#[derive(Deserialize)]
struct MigrateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    host: String,
}

/// Moves the server to another hypervisor host (platform admins).
async fn migrate(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<MigrateForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let cfg = st.config.clone();
    crate::services::hosts::request_migration(&st.db, &a.principal, id, &f.host, |x, y| {
        cfg.hosts_share_storage(x, y)
    })
    .await?;
    Ok(Redirect::to(&format!("/servers/{id}#jobs-section")).into_response())
}

async fn retry(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    servers::retry(&st.db, &a.principal, id).await?;
    Ok(Redirect::to(&format!("/servers/{id}")).into_response())
}

/// Runs the server's roles again (one more run at most while one runs).
async fn converge(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    crate::provision::reconverge(&st.db, &a.principal, id).await?;
    Ok(Redirect::to(&format!("/servers/{id}#jobs-section")).into_response())
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    /// The server's hostname, typed by the user.
    #[serde(default)]
    confirm: String,
}

/// Deleting a server asks for its hostname, typed: a mismatch (or none)
/// shows the confirmation page again.
async fn delete(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<DeleteForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let detail = servers::get(&st.db, &a.principal, id, &st.config.hypervisor.admin_user).await?;
    let name = detail
        .service
        .hostname
        .clone()
        .unwrap_or_else(|| format!("server-{id}"));
    if f.confirm.trim() != name {
        let mut resp = page(
            &a,
            "confirm.html",
            context! {
                title => format!("Delete {name}?"),
                message => "The server, its disk and its address go away for good; this cannot be undone.",
                action => format!("/servers/{id}/delete"),
                button => "Delete the server",
                type_name => name,
                typed => f.confirm.clone(),
                back => format!("/servers/{id}"),
                wrong => !f.confirm.is_empty(),
            },
        )?;
        if !f.confirm.is_empty() {
            *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        }
        return Ok(resp);
    }
    servers::delete(&st.db, &a.principal, id).await?;
    Ok(Redirect::to(&format!("/servers/{id}")).into_response())
}

#[derive(Deserialize)]
struct PowerForm {
    #[serde(default)]
    csrf: String,
    /// Which button was pressed; an unknown one is refused by the domain layer.
    #[serde(default)]
    action: String,
    /// `yes` once the user confirmed (the script's dialog, or the
    /// confirmation page).
    #[serde(default)]
    confirmed: String,
}

async fn power(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<PowerForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let question = match f.action.as_str() {
        "shutdown" => Some("Shut the server down? Its services stop until it is powered on."),
        "power_off" => Some("Power the server off at once? Unsaved data in its memory is lost."),
        "reset" => Some("Reset the server at once? Unsaved data in its memory is lost."),
        _ => None,
    };
    if let (Some(message), false) = (question, f.confirmed == "yes") {
        let detail =
            servers::get(&st.db, &a.principal, id, &st.config.hypervisor.admin_user).await?;
        return page(
            &a,
            "confirm.html",
            context! {
                title => format!("{}: {}", detail.service.hostname.unwrap_or_default(), f.action.replace('_', " ")),
                message,
                action => format!("/servers/{id}/power"),
                button => "Yes, do it",
                fields => vec![vec!["action".to_string(), f.action.clone()]],
                back => format!("/servers/{id}"),
            },
        );
    }
    crate::services::power::request(&st.db, &a.principal, id, &f.action).await?;
    Ok(Redirect::to(&format!("/servers/{id}")).into_response())
}

async fn my_keys(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let list = keys::list(&st.db, &a.principal).await?;
    page(
        &a,
        "keys.html",
        context! { keys => Value::from(Serde(&list)) },
    )
}

#[derive(Deserialize, serde::Serialize)]
struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    public_key: String,
}

async fn add_key(State(st): State<AppState>, a: Option<Auth>, Form(f): Form<KeyForm>) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    match keys::add(&st.db, &a.principal, &f.name, &f.public_key).await {
        Ok(_) => Ok(Redirect::to("/keys").into_response()),
        Err(e) => {
            let refused = Refused::of(e)?;
            let list = keys::list(&st.db, &a.principal).await?;
            let form = serde_json::to_value(&f).unwrap_or_default();
            refused.again(
                &a,
                "keys.html",
                context! { keys => Value::from(Serde(&list)) },
                form,
            )
        }
    }
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirmed: String,
}

async fn remove_key(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<ConfirmForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if f.confirmed != "yes" {
        let list = keys::list(&st.db, &a.principal).await?;
        let key = list
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(PanelError::NotFound("ssh key"))?;
        return page(
            &a,
            "confirm.html",
            context! {
                title => format!("Remove the key {}?", key.name),
                message => format!("{} will no longer let you log in to your servers once their access runs.", key.fingerprint),
                action => format!("/keys/{id}/delete"),
                button => "Remove the key",
                back => "/keys",
            },
        );
    }
    keys::remove(&st.db, &a.principal, id).await?;
    Ok(Redirect::to("/keys").into_response())
}

async fn tokens_ctx(st: &AppState, a: &Auth) -> Result<Value, UiError> {
    let list = auth::list_tokens(&st.db, &a.principal).await?;
    Ok(context! { tokens => Value::from(Serde(&list)) })
}

async fn my_tokens(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let ctx = tokens_ctx(&st, &a).await?;
    page(&a, "tokens.html", ctx)
}

#[derive(Deserialize, serde::Serialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_in_days: String,
}

/// A new token: its secret is on the page this post answers, once, and
/// on no other (`Cache-Control: no-store`).
async fn create_token(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<TokenForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let days = match f.expires_in_days.trim() {
        "" => Ok(90),
        d => d
            .parse::<i64>()
            .map_err(|_| PanelError::invalid("expires_in_days", "a whole number of days")),
    };
    let made = match days {
        Ok(days) => auth::create_token(&st.db, &st.config.auth, &a.principal, &f.name, days).await,
        Err(e) => Err(e),
    };
    match made {
        Ok((token, secret)) => {
            let ctx = tokens_ctx(&st, &a).await?;
            let mut resp = page(
                &a,
                "tokens.html",
                context! { ..ctx, ..context! { new_token => Value::from(Serde(&token)), secret } },
            )?;
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            Ok(resp)
        }
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = tokens_ctx(&st, &a).await?;
            let form = serde_json::to_value(&f).unwrap_or_default();
            refused.again(&a, "tokens.html", ctx, form)
        }
    }
}

async fn revoke_token(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<ConfirmForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if f.confirmed != "yes" {
        return page(
            &a,
            "confirm.html",
            context! {
                title => "Revoke this API token?",
                message => "Scripts that use it stop working at once.",
                action => format!("/tokens/{id}/revoke"),
                button => "Revoke",
                back => "/tokens",
            },
        );
    }
    auth::revoke_token(&st.db, &a.principal, id).await?;
    Ok(Redirect::to("/tokens").into_response())
}

/// The landing page: a platform admin's overview, or a user's servers and
/// quotas (with a prompt when they have none yet).
async fn dashboard(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let mine = servers::list(
        &st.db,
        &a.principal,
        &ServiceFilter::default(),
        Page {
            limit: 20,
            offset: 0,
        },
    )
    .await?;
    let quotas = alloc::quotas_of(&st.db, &a.principal, a.principal.user_id).await?;
    let site_count = sites::list(
        &st.db,
        &a.principal,
        Page {
            limit: 1,
            offset: 0,
        },
    )
    .await?
    .total;
    let admin = if a.principal.is_admin {
        Some(admin::overview(&st, &a).await?)
    } else {
        None
    };
    page(
        &a,
        "dashboard.html",
        context! {
            servers => Value::from(Serde(&mine)),
            quotas => Value::from(Serde(&quotas)),
            site_count,
            admin,
        },
    )
}

/// Runs a dead or cancelled job again, then shows the new one.
async fn retry_job(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let new = jobs::retry(&st.db, &a.principal, id).await?;
    Ok(Redirect::to(&format!("/jobs/{new}")).into_response())
}

/// One job: its attempts and its whole stored output; a server's job
/// follows live on the server's stream.
async fn job_page(State(st): State<AppState>, a: Option<Auth>, Path(id): Path<i64>) -> UiResult {
    let a = signed_in(a)?;
    let job = jobs::view(&st.db, &a.principal, id).await?;
    page(&a, "job.html", context! { job => Value::from(Serde(&job)) })
}

#[derive(Deserialize, Default)]
struct AuditForm {
    #[serde(default)]
    offset: i64,
}

async fn admin_audit(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(f): Query<AuditForm>,
) -> UiResult {
    let a = signed_in(a)?;
    let data = audit::list(
        &st.db,
        &a.principal,
        &AuditFilter::default(),
        Page {
            limit: 100,
            offset: f.offset.max(0),
        },
    )
    .await?;
    page(
        &a,
        "admin_audit.html",
        context! { page => Value::from(Serde(&data)) },
    )
}

async fn sites_ctx(st: &AppState, a: &Auth) -> Result<Value, UiError> {
    let data = sites::list(
        &st.db,
        &a.principal,
        Page {
            limit: 500,
            offset: 0,
        },
    )
    .await?;
    Ok(context! { page => Value::from(Serde(&data)) })
}

async fn my_sites(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let ctx = sites_ctx(&st, &a).await?;
    page(&a, "sites.html", ctx)
}

#[derive(Deserialize, Default)]
struct SiteQuery {
    #[serde(default)]
    created: Option<String>,
}

#[derive(Deserialize, serde::Serialize)]
struct SiteEditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner_email: String,
}

/// Site admins change the description and the owner's address.
async fn site_edit(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<SiteEditForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let patch = sites::SitePatch {
        description: Some(f.description.clone()),
        owner_email: Some(f.owner_email.trim().to_string()),
        state: None,
    };
    match sites::update(&st.db, &a.principal, id, &patch).await {
        Ok(_) => to_site(id),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = site_ctx(&st, &a, id).await?;
            let form = serde_json::to_value(&f).unwrap_or_default();
            refused.again(&a, "site.html", ctx, form)
        }
    }
}

async fn site_ctx(st: &AppState, a: &Auth, id: i64) -> Result<Value, UiError> {
    let detail = sites::get(&st.db, &a.principal, id).await?;
    let groups = unix_groups::list(&st.db, &a.principal, id).await?;
    let lookup_groups = lookup::states(&st.db, &a.principal, id).await?;
    // The directory's group names feed the form's autocomplete (a
    // datalist, so no script); a directory that cannot be read now only
    // costs the suggestions.
    let (directory, directory_error) =
        match lookup::directory_groups(&st.db, &st.config.ldap, &a.principal, id, "").await {
            Ok(names) => (names, None),
            Err(PanelError::Unavailable(message)) => (Vec::new(), Some(message)),
            Err(e) => return Err(e.into()),
        };
    let servers = servers::list(
        &st.db,
        &a.principal,
        &ServiceFilter {
            site_id: Some(id),
            ..ServiceFilter::default()
        },
        Page {
            limit: 200,
            offset: 0,
        },
    )
    .await?;
    Ok(context! {
        s => Value::from(Serde(&detail)),
        servers => Value::from(Serde(&servers)),
        unix_groups => Value::from(Serde(&groups)),
        lookup_groups => Value::from(Serde(&lookup_groups)),
        ldap => st.config.ldap.enabled(),
        directory => directory,
        directory_error => directory_error,
    })
}

async fn site(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Query(q): Query<SiteQuery>,
) -> UiResult {
    let a = signed_in(a)?;
    let ctx = site_ctx(&st, &a, id).await?;
    let notice = q
        .created
        .map(|_| "The site is created; you are its admin. Add people below, then create a server.");
    page(&a, "site.html", context! { ..ctx, ..context! { notice } })
}

async fn site_lookup_refresh(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    lookup::request_refresh(&st.db, &st.config.ldap, &a.principal, id).await?;
    to_site(id)
}

fn to_site(id: i64) -> UiResult {
    Ok(Redirect::to(&format!("/sites/{id}")).into_response())
}

#[derive(Deserialize)]
struct MemberForm {
    #[serde(default)]
    csrf: String,
    user: String,
    role: String,
}

async fn site_member(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<MemberForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    sites::set_member(&st.db, &a.principal, id, f.user.trim(), &f.role).await?;
    to_site(id)
}

async fn site_member_remove(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, user_id)): Path<(i64, i64)>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    sites::remove_member(&st.db, &a.principal, id, user_id).await?;
    to_site(id)
}

#[derive(Deserialize)]
struct LookupGroupForm {
    #[serde(default)]
    csrf: String,
    group: String,
    #[serde(default)]
    role: String,
}

async fn site_lookup_group(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<LookupGroupForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    sites::set_lookup_group(&st.db, &a.principal, id, f.group.trim(), &f.role).await?;
    to_site(id)
}

async fn site_lookup_group_remove(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<LookupGroupForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    sites::remove_lookup_group(&st.db, &a.principal, id, &f.group).await?;
    to_site(id)
}

#[derive(Deserialize)]
struct NameForm {
    #[serde(default)]
    csrf: String,
    name: String,
}

async fn unix_group_create(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<NameForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    unix_groups::create(
        &st.db,
        &st.config.access,
        &st.config.hypervisor.admin_user,
        &a.principal,
        id,
        &f.name,
    )
    .await?;
    to_site(id)
}

async fn unix_group_delete(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, group_id)): Path<(i64, i64)>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    unix_groups::delete(&st.db, &a.principal, id, group_id).await?;
    to_site(id)
}

#[derive(Deserialize)]
struct UserForm {
    #[serde(default)]
    csrf: String,
    user: String,
}

async fn unix_group_member(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, group_id)): Path<(i64, i64)>,
    Form(f): Form<UserForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    unix_groups::add_member(&st.db, &a.principal, id, group_id, f.user.trim()).await?;
    to_site(id)
}

async fn unix_group_member_remove(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, group_id)): Path<(i64, i64)>,
    Form(f): Form<UserForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    unix_groups::remove_member_named(&st.db, &a.principal, id, group_id, f.user.trim()).await?;
    to_site(id)
}

async fn site_suspend(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    sites::set_suspended(&st.db, &a.principal, id, true).await?;
    to_site(id)
}

async fn site_unsuspend(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    sites::set_suspended(&st.db, &a.principal, id, false).await?;
    to_site(id)
}

async fn server_access_sync(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    servers::sync_access(&st.db, &a.principal, id).await?;
    Ok(Redirect::to(&format!("/servers/{id}")).into_response())
}

#[derive(Deserialize)]
struct CancelForm {
    #[serde(default)]
    csrf: String,
    /// The page to go back to; only a path of this panel.
    #[serde(default)]
    back: String,
}

async fn cancel_job(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CancelForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    jobs::cancel(&st.db, &a.principal, id).await?;
    // Never an absolute or protocol-relative URL: no open redirect.
    let back = if f.back.starts_with('/') && !f.back.starts_with("//") && !f.back.contains('\\') {
        f.back
    } else {
        "/servers".to_string()
    };
    Ok(Redirect::to(&back).into_response())
}
