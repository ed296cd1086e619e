//! The JSON API under `/api/v1`. Handlers parse the request, call the
//! domain layer with the authenticated caller (which checks authorisation
//! itself), and shape the answer. [`ROUTES`] lists every route once; the
//! OpenAPI document and the authorisation-matrix test are both built from
//! it, so a new route cannot skip either. The routes of playbook runs
//! (`automation.rs`) keep their own table, joined by [`all_routes`], as do
//! the console's WebSocket (`console.rs`), site operations, analytics and
//! hosts.

mod analytics;
mod automation;
mod console;
mod events;
mod hosts;
mod kit;
mod siteops;

pub use events::stop_live_streams;
use kit::{created, no_content, ok, ApiResult};
pub use kit::{Access, Route};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::alloc::{self, Quota};
use crate::audit::{self, AuditFilter};
use crate::auth;
use crate::domain::{Page, PanelError, Principal};
use crate::http::{ApiError, AppState, Auth, Peer, Via};
use crate::queue::{JobFilter, JobState};
use crate::services::catalog::{self, NewServerType};
use crate::services::power::{self, PowerRequest};
use crate::services::servers::{self, CreateServer, ServiceFilter};
use crate::services::sites::{self, NewSite, SitePatch};
use crate::services::{groups, jobs, keys, lookup, unix_groups};

pub const ROUTES: &[Route] = &[
    (
        "POST",
        "/auth/login",
        Access::Public,
        "Log in with a user name and password; sets the session cookie",
    ),
    (
        "POST",
        "/auth/logout",
        Access::User,
        "End the current session",
    ),
    ("GET", "/me", Access::User, "The signed-in user"),
    ("GET", "/me/tokens", Access::User, "List my API tokens"),
    (
        "POST",
        "/me/tokens",
        Access::User,
        "Create an API token (the secret is shown once)",
    ),
    (
        "DELETE",
        "/me/tokens/{id}",
        Access::User,
        "Revoke one of my API tokens",
    ),
    (
        "GET",
        "/me/ssh-keys",
        Access::User,
        "List my SSH public keys",
    ),
    (
        "POST",
        "/me/ssh-keys",
        Access::User,
        "Add an SSH public key",
    ),
    (
        "DELETE",
        "/me/ssh-keys/{id}",
        Access::User,
        "Remove one of my SSH keys",
    ),
    ("GET", "/server-types", Access::User, "List server types"),
    (
        "POST",
        "/server-types",
        Access::PlatformAdmin,
        "Define a server type",
    ),
    (
        "GET",
        "/sites",
        Access::User,
        "List the sites I administer (all, for platform admins)",
    ),
    (
        "POST",
        "/sites",
        Access::User,
        "Create a site; the creator becomes its admin",
    ),
    (
        "GET",
        "/sites/{id}",
        Access::SiteAdmin,
        "A site with its members",
    ),
    ("PATCH", "/sites/{id}", Access::SiteAdmin, "Edit a site"),
    (
        "PUT",
        "/sites/{id}/members",
        Access::SiteAdmin,
        "Add a member or change their role",
    ),
    (
        "DELETE",
        "/sites/{id}/members/{user_id}",
        Access::SiteAdmin,
        "Remove a member",
    ),
    (
        "PUT",
        "/sites/{id}/lookup-groups",
        Access::SiteAdmin,
        "Grant a role (admin or ssh) to every member of a group; queues access jobs",
    ),
    (
        "DELETE",
        "/sites/{id}/lookup-groups/{name}",
        Access::SiteAdmin,
        "Stop granting a role through a lookup group; queues access jobs",
    ),
    (
        "GET",
        "/sites/{id}/lookup-groups",
        Access::SiteAdmin,
        "The site's lookup groups: where each comes from (panel or LDAP), its members, its last refresh and error",
    ),
    (
        "POST",
        "/sites/{id}/lookup-refresh",
        Access::SiteAdmin,
        "Refresh now: queue a lookup_refresh job that re-reads the site's lookup groups from LDAP (409 when LDAP is off)",
    ),
    (
        "GET",
        "/sites/{id}/directory-groups",
        Access::SiteAdmin,
        "Group names from the LDAP directory starting with ?q=, for autocomplete (empty when LDAP is off; 503 when it cannot be read)",
    ),
    (
        "GET",
        "/sites/{id}/unix-groups",
        Access::SiteAdmin,
        "The site's Unix groups with their GIDs and members",
    ),
    (
        "POST",
        "/sites/{id}/unix-groups",
        Access::SiteAdmin,
        "Define a Unix group on the site's servers (GID allocated once); queues access jobs",
    ),
    (
        "PUT",
        "/sites/{id}/unix-groups/{group_id}/members",
        Access::SiteAdmin,
        "Put one of the site's people into a Unix group; queues access jobs",
    ),
    (
        "DELETE",
        "/sites/{id}/unix-groups/{group_id}/members/{user_id}",
        Access::SiteAdmin,
        "Take a person out of a Unix group; queues access jobs",
    ),
    (
        "DELETE",
        "/sites/{id}/unix-groups/{group_id}",
        Access::SiteAdmin,
        "Remove a Unix group from the site's servers; queues access jobs",
    ),
    (
        "POST",
        "/sites/{id}/suspend",
        Access::PlatformAdmin,
        "Suspend a site: logins blocked, then its servers shut down (audited)",
    ),
    (
        "POST",
        "/sites/{id}/unsuspend",
        Access::PlatformAdmin,
        "Unsuspend a site: its servers start, then logins are let in again (audited)",
    ),
    (
        "GET",
        "/services",
        Access::User,
        "List services I administer; filters: status, site_id, q",
    ),
    (
        "POST",
        "/services",
        Access::SiteAdmin,
        "Create a server (honours Idempotency-Key)",
    ),
    (
        "GET",
        "/services/{id}",
        Access::SiteAdmin,
        "A service with its VM, network and job log",
    ),
    (
        "DELETE",
        "/services/{id}",
        Access::SiteAdmin,
        "Delete a service",
    ),
    (
        "POST",
        "/services/{id}/retry",
        Access::SiteAdmin,
        "Retry a failed service",
    ),
    (
        "POST",
        "/services/{id}/power",
        Access::SiteAdmin,
        "Power a ready server on or off, or reset it (a `power` job); body: {action}",
    ),
    (
        "GET",
        "/services/{id}/jobs",
        Access::SiteAdmin,
        "The job log of a service",
    ),
    (
        "GET",
        "/services/{id}/events",
        Access::SiteAdmin,
        "Live job output as server-sent events (log, status, job); resume with Last-Event-ID",
    ),
    (
        "GET",
        "/services/{id}/access",
        Access::SiteAdmin,
        "Who logs in to the server and how, its Unix groups, and the last access job",
    ),
    (
        "POST",
        "/services/{id}/access",
        Access::SiteAdmin,
        "Apply the site's people to the server again (an access job, coalesced)",
    ),
    (
        "POST",
        "/jobs/{id}/cancel",
        Access::JobOwner,
        "Cancel a job: a queued one at once, a running one at its next checkpoint (between role tasks)",
    ),
    (
        "POST",
        "/jobs/{id}/retry",
        Access::JobOwner,
        "Run a dead or cancelled job again (not the provisioning flow's steps, a password change or a restore); answers the new job's id",
    ),
    (
        "GET",
        "/jobs/{id}/log",
        Access::SiteAdmin,
        "One page of a job's stored output; query: after (seq), limit",
    ),
    ("GET", "/admin/users", Access::PlatformAdmin, "List users"),
    (
        "POST",
        "/admin/users",
        Access::PlatformAdmin,
        "Create a user",
    ),
    (
        "PUT",
        "/admin/users/{id}/password",
        Access::PlatformAdmin,
        "Reset a user's password",
    ),
    (
        "PUT",
        "/admin/users/{id}/disabled",
        Access::PlatformAdmin,
        "Disable or enable an account (a disabled one cannot log in; its sessions end and its server accounts go)",
    ),
    (
        "GET",
        "/admin/pools",
        Access::PlatformAdmin,
        "Address pools and their use",
    ),
    (
        "POST",
        "/admin/pools",
        Access::PlatformAdmin,
        "Generate a pool from CIDRs and a hostname pattern",
    ),
    (
        "PUT",
        "/admin/quotas",
        Access::PlatformAdmin,
        "Set a user or group quota",
    ),
    (
        "GET",
        "/admin/jobs",
        Access::PlatformAdmin,
        "Jobs, filtered by state and kind",
    ),
    (
        "GET",
        "/admin/job-failures",
        Access::PlatformAdmin,
        "Jobs that exhausted their retries",
    ),
    (
        "GET",
        "/admin/audit",
        Access::PlatformAdmin,
        "The audit log",
    ),
    (
        "POST",
        "/services/{id}/converge",
        Access::SiteAdmin,
        "Run the server's roles again (coalesced: one more run at most)",
    ),
    (
        "POST",
        "/callback/vm-ready",
        Access::Public,
        "A new VM reports its first boot (authenticated by its HMAC, not a session)",
    ),
    (
        "GET",
        "/inventory",
        Access::PlatformAdmin,
        "Ansible dynamic inventory of all servers (`?host=NAME`: one host's vars)",
    ),
    (
        "GET",
        "/openapi.json",
        Access::Public,
        "This API as OpenAPI 3.1",
    ),
];

/// Every API route: [`ROUTES`] and those of `automation.rs` and
/// `siteops.rs`.
pub fn all_routes() -> impl Iterator<Item = &'static Route> {
    ROUTES
        .iter()
        .chain(automation::ROUTES.iter())
        .chain(siteops::ROUTES.iter())
        .chain(analytics::ROUTES.iter())
        .chain(hosts::ROUTES.iter())
        .chain(console::ROUTES.iter())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(automation::router())
        .merge(siteops::router())
        .merge(analytics::router())
        .merge(hosts::router())
        .merge(console::router())
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
        .route("/me/tokens", get(list_tokens).post(create_token))
        .route("/me/tokens/{id}", delete(revoke_token))
        .route("/me/ssh-keys", get(list_keys).post(add_key))
        .route("/me/ssh-keys/{id}", delete(remove_key))
        .route("/server-types", get(list_types).post(create_type))
        .route("/sites", get(list_sites).post(create_site))
        .route("/sites/{id}", get(get_site).patch(update_site))
        .route("/sites/{id}/members", put(set_member))
        .route("/sites/{id}/members/{user_id}", delete(remove_member))
        .route(
            "/sites/{id}/lookup-groups",
            get(lookup_group_states).put(set_lookup_group),
        )
        .route("/sites/{id}/lookup-refresh", post(refresh_lookup_groups))
        .route("/sites/{id}/directory-groups", get(directory_groups))
        .route(
            "/sites/{id}/lookup-groups/{name}",
            delete(remove_lookup_group),
        )
        .route(
            "/sites/{id}/unix-groups",
            get(list_unix_groups).post(create_unix_group),
        )
        .route(
            "/sites/{id}/unix-groups/{group_id}",
            delete(delete_unix_group),
        )
        .route(
            "/sites/{id}/unix-groups/{group_id}/members",
            put(add_unix_group_member),
        )
        .route(
            "/sites/{id}/unix-groups/{group_id}/members/{user_id}",
            delete(remove_unix_group_member),
        )
        .route("/sites/{id}/suspend", post(suspend_site))
        .route("/sites/{id}/unsuspend", post(unsuspend_site))
        .route(
            "/services/{id}/access",
            get(service_access).post(sync_service_access),
        )
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/services", get(list_services).post(create_service))
        .route("/services/{id}", get(get_service).delete(delete_service))
        .route("/services/{id}/retry", post(retry_service))
        .route("/services/{id}/power", post(power_service))
        .route("/services/{id}/jobs", get(service_jobs))
        .route("/services/{id}/events", get(events::service_events))
        .route("/jobs/{id}/log", get(events::job_log))
        .route("/admin/users", get(list_users).post(create_user))
        .route("/admin/users/{id}/password", put(reset_password))
        .route("/admin/users/{id}/disabled", put(set_user_disabled))
        .route("/admin/pools", get(list_pools).post(generate_pool))
        .route("/admin/quotas", put(set_quota))
        .route("/admin/groups", get(list_groups).post(create_group))
        .route("/admin/groups/{id}/members", put(add_group_member))
        .route("/admin/jobs", get(list_jobs))
        .route("/admin/job-failures", get(list_failures))
        .route("/admin/audit", get(list_audit))
        .route("/services/{id}/converge", post(converge_service))
        .route("/callback/vm-ready", post(vm_ready_callback))
        .route("/inventory", get(inventory))
        .route("/openapi.json", get(openapi))
}

/// Only the VM-ready callback, for the extra listener VM networks reach
/// (`hypervisor.callback_listen`): no UI, no other API.
pub fn callback_router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/callback/vm-ready", post(vm_ready_callback))
        .with_state(state)
}

async fn converge_service(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let job = crate::provision::reconverge(&st.db, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

/// cloud-init's phone_home posts a form body; only the query string counts.
async fn vm_ready_callback(
    State(st): State<AppState>,
    Peer(ip): Peer,
    Query(q): Query<crate::provision::callback::CallbackQuery>,
) -> ApiResult {
    let drop = st.config.chaos.callback_drop_fraction;
    if drop > 0.0 && fastrand::f64() < drop {
        // Fault injection (the chaos soak): lost on the way, so nothing is
        // recorded; cloud-init's phone_home tries again.
        tracing::warn!(
            vm = q.vm.as_deref().unwrap_or(""),
            "fault injection: VM-ready callback dropped (chaos.callback_drop_fraction)"
        );
        return Err(PanelError::Unavailable("callback dropped by fault injection".into()).into());
    }
    let outcome = crate::provision::callback::vm_ready(
        &st.db,
        &q,
        ip,
        st.config.hypervisor.callback_check_source,
    )
    .await?;
    ok(outcome)
}

#[derive(Deserialize)]
struct InventoryQuery {
    host: Option<String>,
}

async fn inventory(
    State(st): State<AppState>,
    a: Auth,
    Query(q): Query<InventoryQuery>,
) -> ApiResult {
    let inv = crate::provision::inventory::for_consumer(
        &st.db,
        &a.principal,
        &st.config.access,
        &st.config.hypervisor.admin_user,
        q.host.as_deref(),
    )
    .await?;
    ok(inv)
}

fn require_admin(p: &Principal) -> Result<(), ApiError> {
    if p.is_admin {
        Ok(())
    } else {
        Err(PanelError::Forbidden("platform admins only".into()).into())
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginBody {
    name: String,
    password: String,
}

async fn login(
    State(st): State<AppState>,
    Peer(ip): Peer,
    headers: HeaderMap,
    Json(b): Json<LoginBody>,
) -> ApiResult {
    let p = auth::login(
        &st.db,
        &st.config.auth,
        &st.passwords,
        &b.name,
        b.password,
        ip,
    )
    .await?;
    // Against session fixation: whatever session the browser came with
    // ends here; the login always gets a new secret.
    if let Some(old) = crate::http::cookie(&headers, crate::http::SESSION_COOKIE) {
        auth::end_session(&st.db, &old).await?;
    }
    let session = auth::create_session(&st.db, &st.config.auth, p.user_id).await?;
    Ok((
        [(header::SET_COOKIE, st.session_cookie(&session.secret))],
        Json(json!({ "user": p.name, "is_admin": p.is_admin, "csrf_token": session.csrf })),
    )
        .into_response())
}

async fn logout(State(st): State<AppState>, a: Auth, headers: HeaderMap) -> ApiResult {
    if let (Via::Session { .. }, Some(secret)) = (
        &a.via,
        crate::http::cookie(&headers, crate::http::SESSION_COOKIE),
    ) {
        auth::end_session(&st.db, &secret).await?;
    }
    Ok((
        [(header::SET_COOKIE, st.session_cookie(""))],
        StatusCode::NO_CONTENT,
    )
        .into_response())
}

async fn me(a: Auth) -> ApiResult {
    ok(json!({
        "id": a.principal.user_id,
        "name": a.principal.name,
        "is_admin": a.principal.is_admin,
        "csrf_token": a.csrf(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct NewToken {
    name: String,
    #[serde(default = "default_days")]
    expires_in_days: i64,
}

fn default_days() -> i64 {
    90
}

async fn list_tokens(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(auth::list_tokens(&st.db, &a.principal).await?)
}

async fn create_token(State(st): State<AppState>, a: Auth, Json(b): Json<NewToken>) -> ApiResult {
    let (token, secret) = auth::create_token(
        &st.db,
        &st.config.auth,
        &a.principal,
        &b.name,
        b.expires_in_days,
    )
    .await?;
    created(json!({ "token": token, "secret": secret }))
}

async fn revoke_token(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    auth::revoke_token(&st.db, &a.principal, id).await?;
    no_content()
}

#[derive(Deserialize, utoipa::ToSchema)]
struct NewKey {
    #[serde(default)]
    name: String,
    public_key: String,
}

async fn list_keys(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(keys::list(&st.db, &a.principal).await?)
}

async fn add_key(State(st): State<AppState>, a: Auth, Json(b): Json<NewKey>) -> ApiResult {
    created(keys::add(&st.db, &a.principal, &b.name, &b.public_key).await?)
}

async fn remove_key(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    keys::remove(&st.db, &a.principal, id).await?;
    no_content()
}

async fn list_types(State(st): State<AppState>, _a: Auth) -> ApiResult {
    ok(catalog::list(&st.db).await?)
}

async fn create_type(
    State(st): State<AppState>,
    a: Auth,
    Json(b): Json<NewServerType>,
) -> ApiResult {
    created(catalog::create(&st.db, &a.principal, &b).await?)
}

async fn list_sites(State(st): State<AppState>, a: Auth, Query(page): Query<Page>) -> ApiResult {
    ok(sites::list(&st.db, &a.principal, page).await?)
}

async fn create_site(State(st): State<AppState>, a: Auth, Json(b): Json<NewSite>) -> ApiResult {
    created(sites::create(&st.db, &a.principal, &b).await?)
}

async fn get_site(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(sites::get(&st.db, &a.principal, id).await?)
}

async fn update_site(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<SitePatch>,
) -> ApiResult {
    ok(sites::update(&st.db, &a.principal, id, &b).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
struct MemberBody {
    user: String,
    role: String,
}

async fn set_member(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<MemberBody>,
) -> ApiResult {
    ok(sites::set_member(&st.db, &a.principal, id, &b.user, &b.role).await?)
}

async fn remove_member(
    State(st): State<AppState>,
    a: Auth,
    Path((id, user_id)): Path<(i64, i64)>,
) -> ApiResult {
    sites::remove_member(&st.db, &a.principal, id, user_id).await?;
    no_content()
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    site_id: Option<String>,
    q: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
    /// The `next` of the page before (keyset paging; `offset` is the
    /// compatibility path).
    cursor: Option<String>,
}

fn default_limit() -> i64 {
    50
}

async fn list_services(
    State(st): State<AppState>,
    a: Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let site_id = match q.site_id.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| PanelError::invalid("site_id", "site_id is a number"))?,
        ),
    };
    let filter = ServiceFilter {
        status: q.status.filter(|s| !s.is_empty()),
        site_id,
        q: q.q.filter(|s| !s.is_empty()),
    };
    let page = Page {
        limit: q.limit,
        offset: q.offset,
    };
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty());
    ok(servers::list_after(&st.db, &a.principal, &filter, page, cursor).await?)
}

async fn create_service(
    State(st): State<AppState>,
    a: Auth,
    headers: HeaderMap,
    Json(b): Json<CreateServer>,
) -> ApiResult {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let out = servers::create(&st.db, &a.principal, &b, key).await?;
    let status = if out.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(out.created)).into_response())
}

async fn get_service(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(servers::get(&st.db, &a.principal, id, &st.config.hypervisor.admin_user).await?)
}

async fn delete_service(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let job = servers::delete(&st.db, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn retry_service(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let job = servers::retry(&st.db, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn power_service(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<PowerRequest>,
) -> ApiResult {
    let job = power::request(&st.db, &a.principal, id, &b.action).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn service_jobs(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    // Authorise first: the job log is the service's.
    {
        let mut rc = st.db.read().await?;
        servers::load_managed(&mut rc.conn(), &a.principal, id).await?;
    }
    ok(servers::job_log(st.db.store(), id).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LookupGroupBody {
    group: String,
    role: String,
}

async fn set_lookup_group(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<LookupGroupBody>,
) -> ApiResult {
    ok(sites::set_lookup_group(&st.db, &a.principal, id, &b.group, &b.role).await?)
}

async fn remove_lookup_group(
    State(st): State<AppState>,
    a: Auth,
    Path((id, name)): Path<(i64, String)>,
) -> ApiResult {
    sites::remove_lookup_group(&st.db, &a.principal, id, &name).await?;
    no_content()
}

async fn lookup_group_states(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
) -> ApiResult {
    ok(lookup::states(&st.db, &a.principal, id).await?)
}

async fn refresh_lookup_groups(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
) -> ApiResult {
    let job = lookup::request_refresh(&st.db, &st.config.ldap, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

#[derive(Deserialize)]
struct DirectoryQuery {
    #[serde(default)]
    q: String,
}

async fn directory_groups(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Query(q): Query<DirectoryQuery>,
) -> ApiResult {
    ok(lookup::directory_groups(&st.db, &st.config.ldap, &a.principal, id, &q.q).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
struct UnixGroupBody {
    /// A Unix group name no system group and no panel user has.
    name: String,
}

async fn list_unix_groups(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(unix_groups::list(&st.db, &a.principal, id).await?)
}

async fn create_unix_group(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<UnixGroupBody>,
) -> ApiResult {
    created(
        unix_groups::create(
            &st.db,
            &st.config.access,
            &st.config.hypervisor.admin_user,
            &a.principal,
            id,
            &b.name,
        )
        .await?,
    )
}

async fn delete_unix_group(
    State(st): State<AppState>,
    a: Auth,
    Path((id, group_id)): Path<(i64, i64)>,
) -> ApiResult {
    unix_groups::delete(&st.db, &a.principal, id, group_id).await?;
    no_content()
}

async fn add_unix_group_member(
    State(st): State<AppState>,
    a: Auth,
    Path((id, group_id)): Path<(i64, i64)>,
    Json(b): Json<GroupMemberBody>,
) -> ApiResult {
    unix_groups::add_member(&st.db, &a.principal, id, group_id, &b.user).await?;
    no_content()
}

async fn remove_unix_group_member(
    State(st): State<AppState>,
    a: Auth,
    Path((id, group_id, user_id)): Path<(i64, i64, i64)>,
) -> ApiResult {
    unix_groups::remove_member(&st.db, &a.principal, id, group_id, user_id).await?;
    no_content()
}

async fn suspend_site(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(sites::set_suspended(&st.db, &a.principal, id, true).await?)
}

async fn unsuspend_site(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(sites::set_suspended(&st.db, &a.principal, id, false).await?)
}

async fn service_access(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let detail = servers::get(&st.db, &a.principal, id, &st.config.hypervisor.admin_user).await?;
    ok(detail.access)
}

async fn sync_service_access(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
) -> ApiResult {
    let job = servers::sync_access(&st.db, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn retry_job(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let job = jobs::retry(&st.db, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn cancel_job(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let outcome = jobs::cancel(&st.db, &a.principal, id).await?;
    ok(json!({ "job_id": id, "outcome": outcome }))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct GroupBody {
    name: String,
}

async fn list_groups(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(groups::list(&st.db, &a.principal).await?)
}

async fn create_group(State(st): State<AppState>, a: Auth, Json(b): Json<GroupBody>) -> ApiResult {
    created(groups::create(&st.db, &a.principal, &b.name).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
struct GroupMemberBody {
    user: String,
}

async fn add_group_member(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<GroupMemberBody>,
) -> ApiResult {
    groups::add_member(&st.db, &a.principal, id, &b.user).await?;
    no_content()
}

async fn list_users(State(st): State<AppState>, a: Auth, Query(page): Query<Page>) -> ApiResult {
    ok(auth::list_users(&st.db, &a.principal, page).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
struct NewUser {
    name: String,
    email: Option<String>,
    password: Option<String>,
    #[serde(default)]
    is_admin: bool,
}

async fn create_user(State(st): State<AppState>, a: Auth, Json(b): Json<NewUser>) -> ApiResult {
    created(
        auth::create_user(
            &st.db,
            &st.passwords,
            &a.principal,
            &b.name,
            b.email.as_deref(),
            b.password,
            b.is_admin,
        )
        .await?,
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
struct PasswordBody {
    password: String,
}

async fn reset_password(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<PasswordBody>,
) -> ApiResult {
    require_admin(&a.principal)?;
    auth::set_password(&st.db, &st.passwords, &a.principal, id, b.password).await?;
    no_content()
}

#[derive(Deserialize, utoipa::ToSchema)]
struct DisabledBody {
    disabled: bool,
}

async fn set_user_disabled(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<DisabledBody>,
) -> ApiResult {
    ok(auth::set_disabled(&st.db, &a.principal, id, b.disabled).await?)
}

async fn list_pools(State(st): State<AppState>, a: Auth) -> ApiResult {
    require_admin(&a.principal)?;
    ok(alloc::pool_use(&st.db).await?)
}

#[derive(Deserialize, utoipa::ToSchema)]
struct GeneratePool {
    name: String,
    #[serde(rename = "type")]
    pool_type: String,
    #[schema(value_type = Option<String>, example = "192.0.2.0/24")]
    cidr4: Option<ipnet::Ipv4Net>,
    #[schema(value_type = Option<String>, example = "2001:db8::/64")]
    cidr6: Option<ipnet::Ipv6Net>,
    hostname_pattern: String,
    count: u64,
    quarantine_secs: Option<i64>,
}

async fn generate_pool(
    State(st): State<AppState>,
    a: Auth,
    Json(b): Json<GeneratePool>,
) -> ApiResult {
    require_admin(&a.principal)?;
    if b.count > 100_000 {
        return Err(PanelError::invalid("count", "at most 100000 addresses at once").into());
    }
    let mut file = alloc::generate(
        &b.name,
        &b.pool_type,
        b.cidr4,
        b.cidr6,
        &b.hostname_pattern,
        b.count,
    )?;
    file.quarantine_secs = b.quarantine_secs;
    let added = alloc::import(
        &st.db,
        &a.principal,
        &file,
        st.config.alloc.default_quarantine_secs,
    )
    .await?;
    created(json!({ "pool": b.name, "added": added }))
}

async fn set_quota(State(st): State<AppState>, a: Auth, Json(q): Json<Quota>) -> ApiResult {
    alloc::set_quota(&st.db, &a.principal, &q).await?;
    ok(q)
}

#[derive(Deserialize)]
struct JobQuery {
    state: Option<String>,
    kind: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

async fn list_jobs(State(st): State<AppState>, a: Auth, Query(q): Query<JobQuery>) -> ApiResult {
    require_admin(&a.principal)?;
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            JobState::parse(s)
                .ok_or_else(|| PanelError::invalid("state", format!("unknown job state {s:?}")))?,
        ),
    };
    let jobs = st
        .db
        .store()
        .jobs(&JobFilter {
            state,
            kind: q.kind.filter(|k| !k.is_empty()),
            limit: Some(q.limit.clamp(1, 500) as u32),
            ..JobFilter::default()
        })
        .await?;
    let items: Vec<Value> = jobs
        .into_iter()
        .map(|j| {
            json!({
                "id": j.id, "kind": j.kind, "queue": j.queue, "state": j.state.as_str(),
                "attempts": j.attempts, "owner": j.owner, "payload": j.payload,
                "run_at": j.run_at, "created_at": j.created_at, "finished_at": j.finished_at,
                "last_error": j.last_error,
            })
        })
        .collect();
    ok(items)
}

async fn list_failures(State(st): State<AppState>, a: Auth) -> ApiResult {
    require_admin(&a.principal)?;
    let items: Vec<Value> = st
        .db
        .store()
        .failures()
        .await?
        .into_iter()
        .map(|f| json!({"job_id": f.job_id, "kind": f.kind, "owner": f.owner, "attempts": f.attempts, "error": f.error, "failed_at": f.failed_at}))
        .collect();
    ok(items)
}

// No `#[serde(flatten)]`: query strings hold only strings, and flattened
// fields lose the number parsing.
#[derive(Deserialize)]
struct AuditQuery {
    object_type: Option<String>,
    object_id: Option<i64>,
    actor_id: Option<i64>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

async fn list_audit(State(st): State<AppState>, a: Auth, Query(q): Query<AuditQuery>) -> ApiResult {
    let page = Page {
        limit: q.limit,
        offset: q.offset,
    };
    let filter = AuditFilter {
        object_type: q.object_type,
        object_id: q.object_id,
        actor_id: q.actor_id,
    };
    ok(audit::list(&st.db, &a.principal, &filter, page).await?)
}

/// Request and response body schemas per route: (method, path, request
/// schema, response schema), names of `utoipa::ToSchema` types registered
/// in [`schemas`]. Routes not listed take no body or answer a small ad-hoc
/// object described in their summary.
pub const BODIES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    ("POST", "/auth/login", Some("LoginBody"), None),
    ("GET", "/me/tokens", None, Some("ApiToken")),
    ("POST", "/me/tokens", Some("NewToken"), None),
    ("GET", "/me/ssh-keys", None, Some("SshKey")),
    ("POST", "/me/ssh-keys", Some("NewKey"), Some("SshKey")),
    ("GET", "/server-types", None, Some("ServerType")),
    (
        "POST",
        "/server-types",
        Some("NewServerType"),
        Some("ServerType"),
    ),
    ("GET", "/sites", None, Some("Site")),
    ("POST", "/sites", Some("NewSite"), Some("Site")),
    ("GET", "/sites/{id}", None, Some("SiteDetail")),
    ("PATCH", "/sites/{id}", Some("SitePatch"), Some("Site")),
    (
        "PUT",
        "/sites/{id}/members",
        Some("MemberBody"),
        Some("SiteMember"),
    ),
    (
        "PUT",
        "/sites/{id}/lookup-groups",
        Some("LookupGroupBody"),
        Some("LookupGroup"),
    ),
    (
        "GET",
        "/sites/{id}/lookup-groups",
        None,
        Some("LookupGroupState"),
    ),
    ("GET", "/sites/{id}/unix-groups", None, Some("UnixGroup")),
    (
        "POST",
        "/sites/{id}/unix-groups",
        Some("UnixGroupBody"),
        Some("UnixGroup"),
    ),
    (
        "PUT",
        "/sites/{id}/unix-groups/{group_id}/members",
        Some("GroupMemberBody"),
        None,
    ),
    ("POST", "/sites/{id}/suspend", None, Some("Site")),
    ("POST", "/sites/{id}/unsuspend", None, Some("Site")),
    ("GET", "/services/{id}/access", None, Some("ServerAccess")),
    ("GET", "/services", None, Some("Service")),
    ("POST", "/services", Some("CreateServer"), Some("Created")),
    ("GET", "/services/{id}", None, Some("ServiceDetail")),
    ("GET", "/services/{id}/jobs", None, Some("JobView")),
    ("POST", "/services/{id}/power", Some("PowerRequest"), None),
    ("GET", "/admin/users", None, Some("User")),
    ("POST", "/admin/users", Some("NewUser"), Some("User")),
    (
        "PUT",
        "/admin/users/{id}/password",
        Some("PasswordBody"),
        None,
    ),
    (
        "PUT",
        "/admin/users/{id}/disabled",
        Some("DisabledBody"),
        Some("User"),
    ),
    ("GET", "/admin/pools", None, Some("PoolUse")),
    ("POST", "/admin/pools", Some("GeneratePool"), None),
    ("PUT", "/admin/quotas", Some("Quota"), Some("Quota")),
    ("GET", "/admin/groups", None, Some("Group")),
    ("POST", "/admin/groups", Some("GroupBody"), Some("Group")),
    (
        "PUT",
        "/admin/groups/{id}/members",
        Some("GroupMemberBody"),
        None,
    ),
    ("GET", "/admin/audit", None, Some("AuditEntry")),
];

/// Routes with a path parameter whose GET answers a JSON array.
const ARRAYS: &[&str] = &[
    "/sites/{id}/unix-groups",
    "/sites/{id}/lookup-groups",
    "/services/{id}/jobs",
];

/// Routes whose GET answers one page (`{items, total, limit, offset}`).
const PAGED: &[&str] = &[
    "/sites",
    "/services",
    "/admin/users",
    "/admin/audit",
    "/runs",
];

/// One documented field or parameter: name, JSON type, description.
type Field = (&'static str, &'static str, &'static str);

/// Query parameters of list routes: `(path of a GET, fields)`.
const QUERIES: &[(&str, &[Field])] = &[(
    "/services",
    &[
        (
            "status",
            "string",
            "only services in this status (deleted ones only when asked for)",
        ),
        ("site_id", "integer", "only this site's services"),
        (
            "q",
            "string",
            "hostname contains this (an indexed substring search)",
        ),
        ("limit", "integer", "page size, 1-500 (default 50)"),
        (
            "cursor",
            "string",
            "the `next` of the page before: keyset paging, as fast on page 1,000 as on page 1",
        ),
        (
            "offset",
            "integer",
            "rows to skip (compatibility; slower the deeper it goes; not with `cursor`)",
        ),
    ],
)];

/// Extra fields of paged answers beyond `{items, total, limit, offset}`.
const PAGED_EXTRA: &[(&str, &[Field])] = &[(
    "/services",
    &[
        (
            "total_estimated",
            "boolean",
            "`total` is this node's cached count of a list longer than 1,000, taken up to a few seconds ago; false: counted for this request",
        ),
        (
            "next",
            "string?",
            "pass as `cursor` for the next page; null on the last page; opaque",
        ),
    ],
)];

/// The component schemas, derived with utoipa from the Rust types.
pub fn schemas() -> utoipa::openapi::Components {
    use crate::alloc::{Allocation, PoolUse};
    use crate::audit::AuditEntry;
    use crate::auth::ApiToken;
    use crate::services::groups::Group;
    use crate::services::model::*;
    use crate::services::servers::Created;
    let b = utoipa::openapi::ComponentsBuilder::new()
        .schema_from::<User>()
        .schema_from::<Site>()
        .schema_from::<SiteMember>()
        .schema_from::<LookupGroup>()
        .schema_from::<SiteDetail>()
        .schema_from::<Service>()
        .schema_from::<crate::lifecycle::Status>()
        .schema_from::<Vm>()
        .schema_from::<Allocation>()
        .schema_from::<JobView>()
        .schema_from::<Vhost>()
        .schema_from::<HostKeyView>()
        .schema_from::<crate::services::model::DnsStatus>()
        .schema_from::<crate::services::model::DnsState>()
        .schema_from::<ServiceDetail>()
        .schema_from::<ServerType>()
        .schema_from::<SshKey>()
        .schema_from::<AuditEntry>()
        .schema_from::<CreateServer>()
        .schema_from::<PowerRequest>()
        .schema_from::<Created>()
        .schema_from::<NewSite>()
        .schema_from::<SitePatch>()
        .schema_from::<NewServerType>()
        .schema_from::<catalog::Stack>()
        .schema_from::<catalog::StackMember>()
        .schema_from::<crate::services::servers::StackMemberRow>()
        .schema_from::<Group>()
        .schema_from::<Quota>()
        .schema_from::<PoolUse>()
        .schema_from::<ApiToken>()
        .schema_from::<LoginBody>()
        .schema_from::<NewToken>()
        .schema_from::<NewKey>()
        .schema_from::<MemberBody>()
        .schema_from::<NewUser>()
        .schema_from::<PasswordBody>()
        .schema_from::<DisabledBody>()
        .schema_from::<crate::services::model::ServerActions>()
        .schema_from::<crate::services::model::Connection>()
        .schema_from::<GeneratePool>()
        .schema_from::<LookupGroupBody>()
        .schema_from::<GroupBody>()
        .schema_from::<GroupMemberBody>()
        .schema_from::<UnixGroupBody>()
        .schema_from::<UnixGroup>()
        .schema_from::<ServerAccess>()
        .schema_from::<Login>()
        .schema_from::<AccessRole>()
        .schema_from::<crate::services::lookup::LookupGroupState>();
    hosts::schemas(analytics::schemas(siteops::schemas(automation::schemas(b)))).build()
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The OpenAPI document: paths from [`ROUTES`] and [`BODIES`], schemas
/// from [`schemas`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, access, summary) in all_routes() {
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item is an object");
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                // Ids are integers; a lookup group is named by its name.
                let ty = if name == "name" { "string" } else { "integer" };
                json!({"name": name, "in": "path", "required": true, "schema": {"type": ty}})
            })
            .collect();
        if *method == "GET" {
            for (_, query) in QUERIES.iter().filter(|(p, _)| p == path) {
                params.extend(query.iter().map(|(name, ty, doc)| {
                    json!({"name": name, "in": "query", "required": false,
                           "description": doc, "schema": {"type": ty}})
                }));
            }
        }
        let body = BODIES
            .iter()
            .chain(automation::BODIES.iter())
            .chain(siteops::BODIES.iter())
            .chain(analytics::BODIES.iter())
            .chain(hosts::BODIES.iter())
            .find(|(m, p, _, _)| m == method && p == path);
        let request = body.and_then(|b| b.2).map(|name| {
            json!({"required": true, "content": {"application/json": {"schema": schema_ref(name)}}})
        });
        let response = body.and_then(|b| b.3).map(|name| {
            let schema = if *method == "GET" && PAGED.contains(path) {
                let mut page = json!({"type": "object", "properties": {
                    "items": {"type": "array", "items": schema_ref(name)},
                    "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"}
                }});
                for (_, extra) in PAGED_EXTRA.iter().filter(|(p, _)| p == path) {
                    for (field, ty, doc) in extra.iter() {
                        // `T?`: a value of type T, or null (OpenAPI 3.1).
                        let ty = match ty.strip_suffix('?') {
                            Some(t) => json!([t, "null"]),
                            None => json!(ty),
                        };
                        page["properties"][*field] = json!({"type": ty, "description": doc});
                    }
                }
                page
            } else if *method == "GET"
                && (!path.contains('{') || ARRAYS.contains(path) || siteops::ARRAYS.contains(path))
            {
                json!({"type": "array", "items": schema_ref(name)})
            } else {
                schema_ref(name)
            };
            json!({"description": "success", "content": {"application/json": {"schema": schema}}})
        });
        let security = if *access == Access::Public {
            json!([])
        } else {
            json!([{"bearer": []}, {"session": []}])
        };
        let mut op = json!({
            "summary": summary,
            "x-access": format!("{access:?}"),
            "parameters": params,
            "security": security,
            "responses": {
                "default": {"description": "JSON; errors are {error, message, field?}"}
            }
        });
        if let Some(r) = request {
            op["requestBody"] = r;
        }
        if let Some(r) = response {
            op["responses"]["2XX"] = r;
        }
        entry.insert(method.to_ascii_lowercase(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Keel panel API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": serde_json::to_value(schemas().schemas).unwrap_or_default(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::http::SESSION_COOKIE}
            }
        },
        "paths": paths,
    })
}

async fn openapi() -> ApiResult {
    ok(openapi_document())
}
