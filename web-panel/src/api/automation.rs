//! The JSON API of `automation/` under `/api/v1`: projects, credentials
//! (the secret goes in, never out), inventories, notification targets, job
//! templates (launch with survey answers), schedules (with their next fire
//! times) and runs (filters, per-host table, relaunch, cancel, the run's
//! output as pages and as server-sent events). Handlers parse and shape;
//! the domain functions authorise. [`ROUTES`] and [`BODIES`] join the API
//! table in `mod.rs`, so the OpenAPI document and the authorisation
//! matrix cover these routes too.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::kit::{created, no_content, ok, Access, ApiResult, Route};
use crate::automation::catalog::{self, NewCredential, NewInventory, NewProject, NewTarget};
use crate::automation::model::RunStatus;
use crate::automation::runs::{self, RunFilter};
use crate::automation::schedules::{self, NewSchedule};
use crate::automation::secrets::Sealer;
use crate::automation::templates::{self, Launch, NewTemplate};
use crate::domain::{Page, PanelError};
use crate::http::{ApiError, AppState, Auth};
use crate::queue::log;

pub const ROUTES: &[Route] = &[
    (
        "GET",
        "/credentials",
        Access::PlatformAdmin,
        "List credentials (never their secrets)",
    ),
    (
        "POST",
        "/credentials",
        Access::PlatformAdmin,
        "Create a credential; the secret is sealed and never shown again",
    ),
    (
        "GET",
        "/credentials/{id}",
        Access::PlatformAdmin,
        "A credential (without its secret)",
    ),
    (
        "PUT",
        "/credentials/{id}",
        Access::PlatformAdmin,
        "Rename a credential and replace its secret",
    ),
    (
        "DELETE",
        "/credentials/{id}",
        Access::PlatformAdmin,
        "Delete a credential no template uses",
    ),
    ("GET", "/projects", Access::PlatformAdmin, "List projects"),
    (
        "POST",
        "/projects",
        Access::PlatformAdmin,
        "Create a project (a directory, or a git repository)",
    ),
    (
        "GET",
        "/projects/{id}",
        Access::PlatformAdmin,
        "A project with the commit it last resolved",
    ),
    (
        "PUT",
        "/projects/{id}",
        Access::PlatformAdmin,
        "Change a project",
    ),
    (
        "DELETE",
        "/projects/{id}",
        Access::PlatformAdmin,
        "Delete a project no template uses",
    ),
    (
        "POST",
        "/projects/{id}/sync",
        Access::PlatformAdmin,
        "Fetch a git project now and record the commit its ref names",
    ),
    (
        "GET",
        "/inventories",
        Access::PlatformAdmin,
        "List inventories",
    ),
    (
        "POST",
        "/inventories",
        Access::PlatformAdmin,
        "Create an inventory (panel servers, project file, HTTP URL)",
    ),
    (
        "GET",
        "/inventories/{id}",
        Access::PlatformAdmin,
        "An inventory",
    ),
    (
        "DELETE",
        "/inventories/{id}",
        Access::PlatformAdmin,
        "Delete an inventory no template uses",
    ),
    (
        "GET",
        "/notification-targets",
        Access::PlatformAdmin,
        "List notification targets",
    ),
    (
        "POST",
        "/notification-targets",
        Access::PlatformAdmin,
        "Create an e-mail or webhook target",
    ),
    (
        "DELETE",
        "/notification-targets/{id}",
        Access::PlatformAdmin,
        "Delete a notification target",
    ),
    (
        "GET",
        "/templates",
        Access::User,
        "The job templates I may launch (all, for platform admins)",
    ),
    (
        "POST",
        "/templates",
        Access::PlatformAdmin,
        "Create a job template",
    ),
    (
        "GET",
        "/templates/{id}",
        Access::TemplateMember,
        "A job template with its survey",
    ),
    (
        "PUT",
        "/templates/{id}",
        Access::PlatformAdmin,
        "Change a job template",
    ),
    (
        "POST",
        "/templates/{id}/disable",
        Access::PlatformAdmin,
        "Disable a job template",
    ),
    (
        "POST",
        "/templates/{id}/enable",
        Access::PlatformAdmin,
        "Enable a job template",
    ),
    (
        "POST",
        "/templates/{id}/launch",
        Access::TemplateMember,
        "Launch a run; survey answers are checked (field errors `survey.<variable>`)",
    ),
    (
        "GET",
        "/schedules",
        Access::PlatformAdmin,
        "List schedules with their next fire times",
    ),
    (
        "POST",
        "/schedules",
        Access::PlatformAdmin,
        "Create a schedule (cron or interval, time zone, missed-fire policy)",
    ),
    (
        "GET",
        "/schedules/{id}",
        Access::PlatformAdmin,
        "A schedule with its next fire times",
    ),
    (
        "PUT",
        "/schedules/{id}",
        Access::PlatformAdmin,
        "Change a schedule",
    ),
    (
        "DELETE",
        "/schedules/{id}",
        Access::PlatformAdmin,
        "Delete a schedule",
    ),
    (
        "GET",
        "/runs",
        Access::User,
        "Runs of the templates I may launch, newest first (`?template_id=&status=&launched_by=`)",
    ),
    (
        "GET",
        "/runs/{id}",
        Access::TemplateMember,
        "A run with its per-host results and PLAY RECAP",
    ),
    (
        "POST",
        "/runs/{id}/relaunch",
        Access::TemplateMember,
        "Run it again (`?failed_only=true`: on its failed and unreachable hosts)",
    ),
    (
        "POST",
        "/runs/{id}/cancel",
        Access::TemplateMember,
        "Cancel a queued or running run",
    ),
    (
        "GET",
        "/runs/{id}/log",
        Access::TemplateMember,
        "A page of the run's output (`?after=SEQ&limit=N`)",
    ),
    (
        "GET",
        "/runs/{id}/events",
        Access::TemplateMember,
        "The run's live output as server-sent events (`log` with the line and its `text`, `status`, `end`; `?after=SEQ`)",
    ),
    (
        "DELETE",
        "/templates/{id}",
        Access::PlatformAdmin,
        "Delete a job template with no active run",
    ),
];

/// Request and response bodies of [`ROUTES`], by component schema name.
pub const BODIES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    ("GET", "/credentials", None, Some("Credential")),
    (
        "POST",
        "/credentials",
        Some("NewCredential"),
        Some("Credential"),
    ),
    ("GET", "/credentials/{id}", None, Some("Credential")),
    (
        "PUT",
        "/credentials/{id}",
        Some("NewCredential"),
        Some("Credential"),
    ),
    ("GET", "/projects", None, Some("Project")),
    ("POST", "/projects", Some("NewProject"), Some("Project")),
    ("GET", "/projects/{id}", None, Some("Project")),
    ("PUT", "/projects/{id}", Some("NewProject"), Some("Project")),
    ("POST", "/projects/{id}/sync", None, Some("Project")),
    ("GET", "/inventories", None, Some("InventorySource")),
    (
        "POST",
        "/inventories",
        Some("NewInventory"),
        Some("InventorySource"),
    ),
    ("GET", "/inventories/{id}", None, Some("InventorySource")),
    (
        "GET",
        "/notification-targets",
        None,
        Some("NotificationTarget"),
    ),
    (
        "POST",
        "/notification-targets",
        Some("NewTarget"),
        Some("NotificationTarget"),
    ),
    ("GET", "/templates", None, Some("JobTemplate")),
    (
        "POST",
        "/templates",
        Some("NewTemplate"),
        Some("JobTemplate"),
    ),
    ("GET", "/templates/{id}", None, Some("JobTemplate")),
    (
        "PUT",
        "/templates/{id}",
        Some("NewTemplate"),
        Some("JobTemplate"),
    ),
    ("POST", "/templates/{id}/enable", None, Some("JobTemplate")),
    ("POST", "/templates/{id}/disable", None, Some("JobTemplate")),
    (
        "POST",
        "/templates/{id}/launch",
        Some("Launch"),
        Some("Run"),
    ),
    ("GET", "/schedules", None, Some("ScheduleView")),
    (
        "POST",
        "/schedules",
        Some("NewSchedule"),
        Some("ScheduleView"),
    ),
    ("GET", "/schedules/{id}", None, Some("ScheduleView")),
    (
        "PUT",
        "/schedules/{id}",
        Some("NewSchedule"),
        Some("ScheduleView"),
    ),
    ("GET", "/runs", None, Some("Run")),
    ("GET", "/runs/{id}", None, Some("RunDetail")),
    ("POST", "/runs/{id}/relaunch", None, Some("Run")),
    ("POST", "/runs/{id}/cancel", None, Some("Run")),
];

/// The component schemas of these routes.
pub fn schemas(b: utoipa::openapi::ComponentsBuilder) -> utoipa::openapi::ComponentsBuilder {
    use crate::automation::model::*;
    b.schema_from::<Credential>()
        .schema_from::<CredentialKind>()
        .schema_from::<NewCredential>()
        .schema_from::<Project>()
        .schema_from::<ProjectKind>()
        .schema_from::<NewProject>()
        .schema_from::<InventorySource>()
        .schema_from::<InventoryKind>()
        .schema_from::<NewInventory>()
        .schema_from::<NotificationTarget>()
        .schema_from::<TargetKind>()
        .schema_from::<SmtpTls>()
        .schema_from::<NewTarget>()
        .schema_from::<TemplateNotification>()
        .schema_from::<JobTemplate>()
        .schema_from::<NewTemplate>()
        .schema_from::<Launch>()
        .schema_from::<ScheduleRow>()
        .schema_from::<ScheduleView>()
        .schema_from::<MissedPolicy>()
        .schema_from::<NewSchedule>()
        .schema_from::<Run>()
        .schema_from::<RunStatus>()
        .schema_from::<LaunchedBy>()
        .schema_from::<RunHost>()
        .schema_from::<RunDetail>()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/credentials",
            get(list_credentials).post(create_credential),
        )
        .route(
            "/credentials/{id}",
            get(get_credential)
                .put(replace_credential)
                .delete(delete_credential),
        )
        .route("/projects", get(list_projects).post(create_project))
        .route(
            "/projects/{id}",
            get(get_project).put(update_project).delete(delete_project),
        )
        .route("/projects/{id}/sync", post(sync_project))
        .route("/inventories", get(list_inventories).post(create_inventory))
        .route(
            "/inventories/{id}",
            get(get_inventory).delete(delete_inventory),
        )
        .route(
            "/notification-targets",
            get(list_targets).post(create_target),
        )
        .route(
            "/notification-targets/{id}",
            axum::routing::delete(delete_target),
        )
        .route("/templates", get(list_templates).post(create_template))
        .route(
            "/templates/{id}",
            get(get_template)
                .put(update_template)
                .delete(delete_template),
        )
        .route("/templates/{id}/enable", post(enable_template))
        .route("/templates/{id}/disable", post(disable_template))
        .route("/templates/{id}/launch", post(launch_template))
        .route("/schedules", get(list_schedules).post(create_schedule))
        .route(
            "/schedules/{id}",
            get(get_schedule)
                .put(update_schedule)
                .delete(delete_schedule),
        )
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/relaunch", post(relaunch_run))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/log", get(run_log))
        .route("/runs/{id}/events", get(run_events))
}

fn sealer(st: &AppState) -> Result<Sealer, ApiError> {
    Sealer::for_data_dir(&st.config.data_dir)
        .map_err(|e| PanelError::Internal(format!("the panel's secret key: {e}")).into())
}

async fn list_credentials(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(catalog::list_credentials(&st.db, &a.principal).await?)
}

async fn create_credential(
    State(st): State<AppState>,
    a: Auth,
    Json(b): Json<NewCredential>,
) -> ApiResult {
    created(catalog::create_credential(&st.db, &sealer(&st)?, &a.principal, &b).await?)
}

async fn get_credential(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(catalog::get_credential(&st.db, &a.principal, id).await?)
}

async fn replace_credential(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<NewCredential>,
) -> ApiResult {
    ok(catalog::replace_secret(&st.db, &sealer(&st)?, &a.principal, id, &b).await?)
}

async fn delete_credential(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    catalog::delete_credential(&st.db, &a.principal, id).await?;
    no_content()
}

async fn list_projects(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(catalog::list_projects(&st.db, &a.principal).await?)
}

async fn create_project(
    State(st): State<AppState>,
    a: Auth,
    Json(b): Json<NewProject>,
) -> ApiResult {
    created(catalog::create_project(&st.db, &a.principal, &b).await?)
}

async fn get_project(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(catalog::get_project(&st.db, &a.principal, id).await?)
}

async fn update_project(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<NewProject>,
) -> ApiResult {
    ok(catalog::update_project(&st.db, &a.principal, id, &b).await?)
}

async fn sync_project(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(catalog::sync_project(
        &st.db,
        &sealer(&st)?,
        &st.config.data_dir,
        &st.outbound,
        &a.principal,
        id,
    )
    .await?)
}

async fn delete_project(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    catalog::delete_project(&st.db, &a.principal, id).await?;
    no_content()
}

async fn list_inventories(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(catalog::list_inventories(&st.db, &a.principal).await?)
}

async fn create_inventory(
    State(st): State<AppState>,
    a: Auth,
    Json(b): Json<NewInventory>,
) -> ApiResult {
    created(catalog::create_inventory(&st.db, &a.principal, &b).await?)
}

async fn get_inventory(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(catalog::get_inventory(&st.db, &a.principal, id).await?)
}

async fn delete_inventory(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    catalog::delete_inventory(&st.db, &a.principal, id).await?;
    no_content()
}

async fn list_targets(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(catalog::list_targets(&st.db, &a.principal).await?)
}

async fn create_target(State(st): State<AppState>, a: Auth, Json(b): Json<NewTarget>) -> ApiResult {
    created(catalog::create_target(&st.db, &sealer(&st)?, &a.principal, &b).await?)
}

async fn delete_target(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    catalog::delete_target(&st.db, &a.principal, id).await?;
    no_content()
}

async fn list_templates(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(templates::list(&st.db, &a.principal).await?)
}

async fn create_template(
    State(st): State<AppState>,
    a: Auth,
    Json(b): Json<NewTemplate>,
) -> ApiResult {
    created(templates::create(&st.db, &a.principal, &b).await?)
}

async fn get_template(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(templates::get(&st.db, &a.principal, id).await?)
}

async fn update_template(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<NewTemplate>,
) -> ApiResult {
    ok(templates::update(&st.db, &a.principal, id, &b).await?)
}

async fn delete_template(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    templates::delete(&st.db, &a.principal, id).await?;
    no_content()
}

async fn enable_template(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(templates::set_enabled(&st.db, &a.principal, id, true).await?)
}

async fn disable_template(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(templates::set_enabled(&st.db, &a.principal, id, false).await?)
}

async fn launch_template(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    body: Option<Json<Launch>>,
) -> ApiResult {
    let l = body.map(|b| b.0).unwrap_or_default();
    created(templates::launch(&st.db, &a.principal, id, &l).await?)
}

async fn list_schedules(State(st): State<AppState>, a: Auth) -> ApiResult {
    ok(schedules::list(&st.db, &a.principal).await?)
}

async fn create_schedule(
    State(st): State<AppState>,
    a: Auth,
    Json(b): Json<NewSchedule>,
) -> ApiResult {
    created(schedules::create(&st.db, &a.principal, &b).await?)
}

async fn get_schedule(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(schedules::get(&st.db, &a.principal, id).await?)
}

async fn update_schedule(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<NewSchedule>,
) -> ApiResult {
    ok(schedules::update(&st.db, &a.principal, id, &b).await?)
}

async fn delete_schedule(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    schedules::delete(&st.db, &a.principal, id).await?;
    no_content()
}

#[derive(Deserialize)]
struct RunsQuery {
    template_id: Option<String>,
    status: Option<String>,
    launched_by: Option<String>,
    #[serde(default = "fifty")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

fn fifty() -> i64 {
    50
}

async fn list_runs(State(st): State<AppState>, a: Auth, Query(q): Query<RunsQuery>) -> ApiResult {
    let f = RunFilter::parse(
        q.template_id.as_deref(),
        q.status.as_deref(),
        q.launched_by.as_deref(),
    )?;
    let page = Page {
        limit: q.limit,
        offset: q.offset,
    };
    ok(runs::list(&st.db, &a.principal, &f, page).await?)
}

async fn get_run(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(runs::detail(&st.db, &a.principal, id).await?)
}

#[derive(Deserialize)]
struct RelaunchQuery {
    #[serde(default)]
    failed_only: bool,
}

async fn relaunch_run(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Query(q): Query<RelaunchQuery>,
) -> ApiResult {
    created(runs::relaunch(&st.db, &a.principal, id, q.failed_only).await?)
}

async fn cancel_run(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(runs::cancel(&st.db, &a.principal, id).await?)
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "page_lines")]
    limit: u32,
}

fn page_lines() -> u32 {
    500
}

async fn run_log(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> ApiResult {
    let run = runs::get(&st.db, &a.principal, id).await?;
    let Some(job) = run.job_id else {
        return ok(json!({ "run_id": id, "status": run.status, "items": [], "next_after": 0 }));
    };
    let mut rc = st.db.read().await?;
    let lines = log::read_on(&mut rc.conn(), job, q.after.max(0), q.limit.clamp(1, 1000)).await?;
    let next_after = lines.last().map(|l| l.seq).unwrap_or(q.after.max(0));
    ok(json!({ "run_id": id, "status": run.status, "items": lines, "next_after": next_after }))
}

/// Where a run's event stream is.
struct RunFollower {
    st: AppState,
    who: crate::domain::Principal,
    run_id: i64,
    after: i64,
    status: Option<RunStatus>,
    queue: std::collections::VecDeque<Event>,
    wake: tokio::sync::broadcast::Receiver<log::Flushed>,
    first: bool,
    done: bool,
}

impl RunFollower {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            if !self.first {
                tokio::select! {
                    _ = self.wake.recv() => {}
                    _ = tokio::time::sleep(super::events::POLL_EVERY) => {}
                }
            }
            self.first = false;
            if let Err(e) = self.poll().await {
                if !matches!(e, PanelError::NotFound(_) | PanelError::Forbidden(_)) {
                    tracing::warn!(run_id = self.run_id, error = %e, "run output poll failed");
                    continue;
                }
                self.queue
                    .push_back(Event::default().event("end").data("{}"));
                self.done = true;
            }
        }
    }

    /// Reads new lines and the run's status; ends once the run has
    /// finished and its output is drained. Access is checked on every poll.
    async fn poll(&mut self) -> Result<(), PanelError> {
        let run = runs::get(&self.st.db, &self.who, self.run_id).await?;
        let mut drained = true;
        if let Some(job) = run.job_id {
            let mut rc = self.st.db.read().await?;
            let lines = log::read_on(&mut rc.conn(), job, self.after, 500).await?;
            drained = lines.len() < 500;
            for l in lines {
                self.after = l.seq;
                // The stored line, plus the one-line text the run page shows.
                let mut data = serde_json::to_value(&l).unwrap_or_default();
                data["text"] = log::summary(&l.line).into();
                let data = data.to_string();
                self.queue.push_back(
                    Event::default()
                        .event("log")
                        .id(l.seq.to_string())
                        .data(data),
                );
            }
        }
        if self.status != Some(run.status) {
            self.status = Some(run.status);
            self.queue.push_back(
                Event::default()
                    .event("status")
                    .data(json!({ "status": run.status, "revision": run.revision }).to_string()),
            );
        }
        if run.status.is_finished() && drained {
            self.queue
                .push_back(Event::default().event("end").data("{}"));
            self.done = true;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Start after this line (a page that rendered the first lines itself).
    #[serde(default)]
    after: i64,
}

async fn run_events(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    runs::get(&st.db, &a.principal, id).await?;
    // A reconnecting EventSource says where it was; that wins over the
    // page's starting point.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(q.after.max(0));
    let follower = RunFollower {
        st: st.clone(),
        who: a.principal.clone(),
        run_id: id,
        after,
        status: None,
        queue: Default::default(),
        wake: log::follow_all(),
        first: true,
        done: false,
    };
    let stream = futures::stream::unfold(follower, |mut f| async move {
        let ev = f.next().await?;
        Some((Ok::<_, Infallible>(ev), f))
    });
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("ping"),
        )
        .into_response())
}
