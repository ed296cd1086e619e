//! The HTML pages, rendered on the server with minijinja (templates in
//! `web-panel/templates/`, auto-escaping on because every template name
//! ends in `.html`). No JavaScript, except small scripts on the server
//! page and the run page that follow the live job output (the pages work
//! without them). Every form posts a `csrf` field that
//! must match the session's token. Pages call the same domain functions
//! as the API, so authorisation is the same.
//!
//! Layout: `kit.rs` (templates, rendering, CSRF, the error page) is below
//! the page files; this file holds the end users' pages (servers, sites,
//! keys, the admin views), `automation.rs` the playbook-run pages,
//! `siteops.rs` the server page's forms for web sites and `analytics.rs`
//! a server's graphs (SVG drawn on the server, no script).

mod analytics;
mod automation;
mod kit;
mod siteops;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
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
use crate::queue::{JobFilter, JobState};
use crate::services::servers::{self, CreateServer, ServiceFilter};
use crate::services::sites::{self, NewSite};
use crate::services::{catalog, jobs, keys, lookup, unix_groups};
use kit::{admin_only, check_csrf, page, render, signed_in, CsrfForm, UiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(siteops::router())
        .merge(analytics::router())
        .route("/", get(|| async { Redirect::to("/servers") }))
        .route("/static/panel.css", get(style_sheet))
        .route("/static/panel.js", get(script))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/servers", get(my_servers).post(create_server))
        .route("/servers/new", get(new_server))
        .route("/servers/{id}", get(server))
        .route("/servers/{id}/retry", post(retry))
        .route("/servers/{id}/delete", post(delete))
        .route("/servers/{id}/power", post(power))
        .route("/sites", get(my_sites).post(create_site))
        .route("/sites/{id}", get(site))
        .route("/sites/{id}/members", post(site_member))
        .route(
            "/sites/{id}/members/{user_id}/delete",
            post(site_member_remove),
        )
        .route("/sites/{id}/lookup-groups", post(site_lookup_group))
        .route(
            "/sites/{id}/lookup-groups/delete",
            post(site_lookup_group_remove),
        )
        .route("/sites/{id}/unix-groups", post(unix_group_create))
        .route(
            "/sites/{id}/unix-groups/{group_id}/delete",
            post(unix_group_delete),
        )
        .route(
            "/sites/{id}/unix-groups/{group_id}/members",
            post(unix_group_member),
        )
        .route("/sites/{id}/lookup-refresh", post(site_lookup_refresh))
        .route("/sites/{id}/suspend", post(site_suspend))
        .route("/sites/{id}/unsuspend", post(site_unsuspend))
        .route("/servers/{id}/access", post(server_access_sync))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/keys", get(my_keys).post(add_key))
        .route("/keys/{id}/delete", post(remove_key))
        .route("/admin/services", get(admin_services))
        .route("/admin/jobs", get(admin_jobs))
        .route("/admin/pools", get(admin_pools))
        .route("/admin/audit", get(admin_audit))
        .merge(automation::router())
}

/// The one style sheet and the one script: files, because the
/// Content-Security-Policy (`http::guard`) allows no inline style or script.
async fn style_sheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../static/panel.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../static/panel.js"),
    )
}

async fn login_form() -> UiResult {
    Ok(render("login.html", context! { name => "" })?.into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
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
            Ok((
                [(header::SET_COOKIE, st.session_cookie(&s.secret))],
                Redirect::to("/servers"),
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
                context! { name => f.name, error => e.to_string() },
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
}

async fn list_page(st: &AppState, a: &Auth, f: ListForm, heading: &str) -> UiResult {
    let filter = ServiceFilter {
        status: Some(f.status.clone()).filter(|s| !s.is_empty()),
        site_id: None,
        q: Some(f.q.clone()).filter(|s| !s.is_empty()),
    };
    let page_data = servers::list(
        &st.db,
        &a.principal,
        &filter,
        Page {
            limit: 50,
            offset: f.offset.max(0),
        },
    )
    .await?;
    page(
        a,
        "servers.html",
        context! { heading, page => Value::from(Serde(&page_data)), statuses => Status::names(), status => f.status, q => f.q },
    )
}

async fn my_servers(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(f): Query<ListForm>,
) -> UiResult {
    let a = signed_in(a)?;
    list_page(&st, &a, f, "My servers").await
}

async fn admin_services(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(f): Query<ListForm>,
) -> UiResult {
    let a = signed_in(a)?;
    admin_only(&a)?;
    list_page(&st, &a, f, "All services").await
}

async fn new_server(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
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
    page(
        &a,
        "new_server.html",
        context! {
            sites => Value::from(Serde(&active)),
            types => Value::from(Serde(&types)),
            idempotency_key => auth::random_secret(),
        },
    )
}

#[derive(Deserialize)]
struct CreateForm {
    csrf: String,
    site_id: i64,
    server_type: String,
    kind: String,
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
    let req = CreateServer {
        site_id: f.site_id,
        kind: f.kind,
        server_type: f.server_type,
        pool_type: f.pool_type,
    };
    // The form carries a key made when it was shown, so a double submit
    // creates one server.
    let key = Some(f.idempotency_key.as_str()).filter(|k| !k.is_empty());
    let out = servers::create(&st.db, &a.principal, &req, key).await?;
    Ok(Redirect::to(&format!("/servers/{}", out.created.service.id)).into_response())
}

#[derive(Deserialize)]
struct SiteForm {
    csrf: String,
    name: String,
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
    sites::create(
        &st.db,
        &a.principal,
        &NewSite {
            name: f.name,
            description: f.description,
            owner_email: f.owner_email,
        },
    )
    .await?;
    Ok(Redirect::to("/servers/new").into_response())
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
        },
    )
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

async fn delete(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
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
}

async fn power(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<PowerForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
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

#[derive(Deserialize)]
struct KeyForm {
    csrf: String,
    #[serde(default)]
    name: String,
    public_key: String,
}

async fn add_key(State(st): State<AppState>, a: Option<Auth>, Form(f): Form<KeyForm>) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    match keys::add(&st.db, &a.principal, &f.name, &f.public_key).await {
        Ok(_) => Ok(Redirect::to("/keys").into_response()),
        Err(e @ (PanelError::Invalid { .. } | PanelError::Conflict(_))) => {
            let list = keys::list(&st.db, &a.principal).await?;
            let mut resp = page(
                &a,
                "keys.html",
                context! { keys => Value::from(Serde(&list)), error => e.to_string() },
            )?;
            *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}

async fn remove_key(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    keys::remove(&st.db, &a.principal, id).await?;
    Ok(Redirect::to("/keys").into_response())
}

#[derive(Deserialize, Default)]
struct JobsForm {
    #[serde(default)]
    state: String,
}

async fn admin_jobs(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(f): Query<JobsForm>,
) -> UiResult {
    let a = signed_in(a)?;
    admin_only(&a)?;
    let jobs = st
        .db
        .store()
        .jobs(&JobFilter {
            state: JobState::parse(&f.state),
            limit: Some(200),
            ..JobFilter::default()
        })
        .await?;
    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            context! { id => j.id, kind => j.kind, queue => j.queue, state => j.state.as_str(), attempts => j.attempts, run_at => j.run_at, last_error => j.last_error }
        })
        .collect();
    let failures: Vec<_> = st
        .db
        .store()
        .failures()
        .await?
        .into_iter()
        .map(|f| context! { job_id => f.job_id, kind => f.kind, attempts => f.attempts, failed_at => f.failed_at, error => f.error })
        .collect();
    let states = [
        "queued",
        "running",
        "succeeded",
        "dead",
        "cancelled",
        "superseded",
    ];
    page(
        &a,
        "admin_jobs.html",
        context! { jobs, failures, states, state => f.state },
    )
}

async fn admin_pools(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    admin_only(&a)?;
    let pools = alloc::pool_use(&st.db).await?;
    page(
        &a,
        "admin_pools.html",
        context! { pools => Value::from(Serde(&pools)) },
    )
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

async fn my_sites(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let data = sites::list(
        &st.db,
        &a.principal,
        Page {
            limit: 500,
            offset: 0,
        },
    )
    .await?;
    page(
        &a,
        "sites.html",
        context! { page => Value::from(Serde(&data)) },
    )
}

async fn site(State(st): State<AppState>, a: Option<Auth>, Path(id): Path<i64>) -> UiResult {
    let a = signed_in(a)?;
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
    page(
        &a,
        "site.html",
        context! {
            s => Value::from(Serde(&detail)),
            unix_groups => Value::from(Serde(&groups)),
            lookup_groups => Value::from(Serde(&lookup_groups)),
            ldap => st.config.ldap.enabled(),
            directory => directory,
            directory_error => directory_error,
        },
    )
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
