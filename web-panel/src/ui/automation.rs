//! The pages of playbook runs (`automation/`): projects (create, sync),
//! credentials (the secret goes in and is never shown again, not even on
//! a form sent back with an error), inventories, notification targets,
//! job templates (create and edit with their survey, launch with the
//! survey form and its field errors), runs (filters, the run page with its
//! live output, per-host table and recap, relaunch and cancel) and
//! schedules (next fire times, enable and disable).
//!
//! Handlers only parse forms and pick a page: every read and change is the
//! same `automation::` function the JSON API calls, so authorisation is
//! decided in one place. Every post carries the session's CSRF token. A
//! form refused for its content (a field error, a name taken, a git fetch
//! that failed) comes back filled in with the error; other refusals are
//! the error page.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::value::Serde;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::kit::{admin_only, check_csrf, page, signed_in, UiError, UiResult};
use crate::automation::catalog::{self, NewCredential, NewInventory, NewProject, NewTarget};
use crate::automation::model::*;
use crate::automation::runs::{self, RunFilter};
use crate::automation::schedules::{self, NewSchedule};
use crate::automation::secrets::Sealer;
use crate::automation::survey::{Question, QuestionType};
use crate::automation::templates::{self, Launch, NewTemplate};
use crate::domain::{Page, PanelError};
use crate::http::{AppState, Auth};
use crate::services::groups;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/projects", get(projects_page).post(create_project))
        .route("/projects/{id}", post(update_project))
        .route("/projects/{id}/sync", post(sync_project))
        .route("/projects/{id}/delete", post(delete_project))
        .route(
            "/credentials",
            get(credentials_page).post(create_credential),
        )
        .route("/credentials/{id}", post(replace_credential))
        .route("/credentials/{id}/delete", post(delete_credential))
        .route("/inventories", get(inventories_page).post(create_inventory))
        .route("/inventories/{id}/delete", post(delete_inventory))
        .route(
            "/notifications",
            get(notifications_page).post(create_target),
        )
        .route("/notifications/{id}/delete", post(delete_target))
        .route("/templates", get(templates_page).post(create_template))
        .route("/templates/new", get(new_template))
        .route("/templates/{id}", get(template_page).post(update_template))
        .route("/templates/{id}/edit", get(edit_template))
        .route("/templates/{id}/launch", post(launch))
        .route("/templates/{id}/enable", post(enable_template))
        .route("/templates/{id}/disable", post(disable_template))
        .route("/templates/{id}/delete", post(delete_template))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/relaunch", post(relaunch))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/schedules", get(schedules_page).post(create_schedule))
        .route("/schedules/{id}", post(update_schedule))
        .route("/schedules/{id}/enable", post(enable_schedule))
        .route("/schedules/{id}/disable", post(disable_schedule))
        .route("/schedules/{id}/delete", post(delete_schedule))
}

// ------------------------------------------------------------------ the kit

/// A posted form's fields in order, repeated names kept (the checkbox
/// lists of a template, a multiple-choice answer).
struct Fields(Vec<(String, String)>);

impl Fields {
    fn one(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map_or("", |(_, v)| v.as_str())
    }

    fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn opt(&self, k: &str) -> Option<String> {
        Some(self.one(k).trim())
            .filter(|s| !s.is_empty())
            .map(String::from)
    }

    fn checked(&self, k: &str) -> bool {
        !self.one(k).is_empty()
    }

    fn csrf(&self) -> &str {
        self.one("csrf")
    }

    /// A whole number, or a field error naming `k`.
    fn int(&self, k: &str) -> Result<Option<i64>, PanelError> {
        self.opt(k)
            .map(|s| {
                s.parse()
                    .map_err(|_| PanelError::invalid(k, format!("{s:?} is not a whole number")))
            })
            .transpose()
    }

    fn ids(&self, k: &str) -> Result<Vec<i64>, PanelError> {
        self.all(k)
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| PanelError::invalid(k, format!("{s:?} is not an id")))
            })
            .collect()
    }
}

/// A kind written by a form (`ssh_key`), read as its enum.
fn kind<T: serde::de::DeserializeOwned>(field: &str, s: &str) -> Result<T, PanelError> {
    serde_json::from_value(Json::from(s))
        .map_err(|_| PanelError::invalid(field, format!("{s:?} is not a valid choice")))
}

/// The refusals a form shows next to its fields, with their status; any
/// other error is the error page.
fn shown(e: PanelError) -> Result<(StatusCode, String, Json), UiError> {
    match e {
        PanelError::Invalid { field, message } => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: {message}"),
            serde_json::json!({ field: message }),
        )),
        PanelError::Conflict(m) => Ok((StatusCode::CONFLICT, m, Json::Null)),
        PanelError::Unavailable(m) => Ok((StatusCode::SERVICE_UNAVAILABLE, m, Json::Null)),
        other => Err(UiError(other)),
    }
}

/// The page again, with the error and the status that goes with it.
fn refused(resp: UiResult, status: StatusCode) -> UiResult {
    let mut r = resp?;
    *r.status_mut() = status;
    Ok(r)
}

fn to(path: String) -> UiResult {
    Ok(Redirect::to(&path).into_response())
}

fn sealer(st: &AppState) -> Result<Sealer, UiError> {
    Sealer::for_data_dir(&st.config.data_dir)
        .map_err(|e| UiError(PanelError::Internal(format!("the panel's secret key: {e}"))))
}

/// What a page shows about a refused form: the message, the field errors,
/// and what was typed (never a secret).
#[derive(Default)]
struct Refusal {
    error: Option<String>,
    errors: Json,
    form: Json,
    /// The object the page's form edits (`?edit=ID`), else a new one.
    editing: Option<i64>,
}

impl Refusal {
    fn ctx(&self) -> Value {
        // Never none: the pages look fields up in both.
        let map = |v: &Json| match v {
            Json::Null => Json::Object(Map::new()),
            v => v.clone(),
        };
        context! {
            error => self.error.clone(),
            errors => Value::from(Serde(map(&self.errors))),
            form => Value::from(Serde(map(&self.form))),
            editing => self.editing,
        }
    }
}

/// Runs a form's change; a refusal shown on the form re-renders `again`
/// with it, anything else is the error page.
async fn or_again<T, F, Fut>(
    result: Result<T, PanelError>,
    form: Json,
    again: F,
) -> Result<Result<T, Response>, UiError>
where
    F: FnOnce(Refusal) -> Fut,
    Fut: std::future::Future<Output = UiResult>,
{
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(e) => {
            let (status, error, errors) = shown(e)?;
            let page = again(Refusal {
                error: Some(error),
                errors,
                form,
                editing: None,
            })
            .await;
            Ok(Err(refused(page, status)?))
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
    /// `yes` once the person confirmed a delete (keel.js's dialog sets it;
    /// without the script, [`ask_first`]'s page does).
    #[serde(default)]
    confirmed: String,
}

/// A delete posted without `confirmed=yes` gets a confirmation page first
/// (the script's dialog adds the field; without the script this page asks).
/// `name` is the object's name, or `None` when the caller may not see it
/// (which is then the domain layer's 404).
fn ask_first(
    a: &Auth,
    f: &CsrfForm,
    what: &'static str,
    name: Option<&str>,
    action: String,
    back: &str,
) -> Option<UiResult> {
    if f.confirmed == "yes" {
        return None;
    }
    let Some(name) = name else {
        return Some(Err(UiError(PanelError::NotFound(what))));
    };
    Some(page(
        a,
        "confirm.html",
        context! {
            title => format!("Delete the {what} {name}?"),
            message => format!("The {what} {name} is deleted for good."),
            action,
            button => format!("Delete the {what}"),
            back,
        },
    ))
}

// ----------------------------------------------------------------- projects

async fn projects_view(st: &AppState, a: &Auth, r: Refusal) -> UiResult {
    let projects = catalog::list_projects(&st.db, &a.principal).await?;
    let keys: Vec<Credential> = catalog::list_credentials(&st.db, &a.principal)
        .await?
        .into_iter()
        .filter(|c| c.kind == CredentialKind::SshKey)
        .collect();
    page(
        a,
        "auto_projects.html",
        context! {
            projects => Value::from(Serde(&projects)),
            keys => Value::from(Serde(&keys)),
            ..r.ctx()
        },
    )
}

/// `?edit=ID`: the page's form edits that object instead of making one.
#[derive(Deserialize, Default)]
struct EditQuery {
    edit: Option<i64>,
}

async fn projects_page(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(q): Query<EditQuery>,
) -> UiResult {
    let a = signed_in(a)?;
    let mut r = Refusal::default();
    if let Some(id) = q.edit {
        let p = catalog::list_projects(&st.db, &a.principal)
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or(PanelError::NotFound("project"))?;
        r.form = serde_json::json!({
            "name": p.name, "kind": p.kind, "path": p.path, "git_url": p.git_url,
            "git_ref": p.git_ref, "deploy_key": p.deploy_key.map(|k| k.to_string()),
        });
        r.editing = Some(id);
    }
    projects_view(&st, &a, r).await
}

async fn create_project(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    save_project(&st, a, None, f).await
}

/// Saves the project form back (`catalog::update_project`; a git URL sent
/// back as the page showed it, its password masked, keeps the real one).
async fn update_project(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    save_project(&st, a, Some(id), f).await
}

async fn save_project(
    st: &AppState,
    a: Option<Auth>,
    id: Option<i64>,
    f: Vec<(String, String)>,
) -> UiResult {
    let a = signed_in(a)?;
    let f = Fields(f);
    check_csrf(&a, f.csrf())?;
    let typed = serde_json::json!({
        "name": f.one("name"), "kind": f.one("kind"), "path": f.one("path"),
        "git_url": f.one("git_url"), "git_ref": f.one("git_ref"), "deploy_key": f.one("deploy_key"),
    });
    let made = async {
        let p = NewProject {
            name: f.one("name").to_string(),
            kind: kind("kind", f.one("kind"))?,
            path: f.opt("path"),
            git_url: f.opt("git_url"),
            git_ref: f.opt("git_ref"),
            deploy_key: f.int("deploy_key")?,
        };
        match id {
            Some(id) => catalog::update_project(&st.db, &a.principal, id, &p).await,
            None => catalog::create_project(&st.db, &a.principal, &p).await,
        }
    }
    .await;
    let again = |r: Refusal| projects_view(st, &a, Refusal { editing: id, ..r });
    match or_again(made, typed, again).await? {
        Ok(_) => to("/projects".into()),
        Err(page) => Ok(page),
    }
}

async fn sync_project(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let done = catalog::sync_project(
        &st.db,
        &sealer(&st)?,
        &st.config.data_dir,
        &st.outbound,
        &a.principal,
        id,
    )
    .await;
    match or_again(done, Json::Null, |r| projects_view(&st, &a, r)).await? {
        Ok(_) => to("/projects".into()),
        Err(page) => Ok(page),
    }
}

async fn delete_project(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if f.confirmed != "yes" {
        let name = catalog::list_projects(&st.db, &a.principal)
            .await?
            .into_iter()
            .find(|x| x.id == id)
            .map(|x| x.name);
        if let Some(page) = ask_first(
            &a,
            &f,
            "project",
            name.as_deref(),
            format!("/projects/{id}/delete"),
            "/projects",
        ) {
            return page;
        }
    }
    let done = catalog::delete_project(&st.db, &a.principal, id).await;
    match or_again(done, Json::Null, |r| projects_view(&st, &a, r)).await? {
        Ok(_) => to("/projects".into()),
        Err(page) => Ok(page),
    }
}

// -------------------------------------------------------------- credentials

async fn credentials_view(st: &AppState, a: &Auth, r: Refusal) -> UiResult {
    let list = catalog::list_credentials(&st.db, &a.principal).await?;
    let kinds: Vec<&str> = CredentialKind::ALL.iter().map(|k| k.as_str()).collect();
    page(
        a,
        "auto_credentials.html",
        context! { credentials => Value::from(Serde(&list)), kinds, ..r.ctx() },
    )
}

async fn credentials_page(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(q): Query<EditQuery>,
) -> UiResult {
    let a = signed_in(a)?;
    let mut r = Refusal::default();
    if let Some(id) = q.edit {
        // Never the secret: only what the list shows.
        let c = catalog::list_credentials(&st.db, &a.principal)
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or(PanelError::NotFound("credential"))?;
        r.form = serde_json::json!({
            "name": c.name, "kind": c.kind, "username": c.username, "vault_id": c.vault_id,
        });
        r.editing = Some(id);
    }
    credentials_view(&st, &a, r).await
}

async fn create_credential(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    save_credential(&st, a, None, f).await
}

/// A new secret (and name, user, vault id) for a credential, which keeps
/// its kind (`catalog::replace_secret`, the API's `PUT`).
async fn replace_credential(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    save_credential(&st, a, Some(id), f).await
}

async fn save_credential(
    st: &AppState,
    a: Option<Auth>,
    id: Option<i64>,
    f: Vec<(String, String)>,
) -> UiResult {
    let a = signed_in(a)?;
    let f = Fields(f);
    check_csrf(&a, f.csrf())?;
    // What comes back on a refused form: never the secret or passphrase.
    let typed = serde_json::json!({
        "name": f.one("name"), "kind": f.one("kind"), "username": f.one("username"),
        "vault_id": f.one("vault_id"),
    });
    let made = async {
        let c = NewCredential {
            name: f.one("name").to_string(),
            kind: kind("kind", f.one("kind"))?,
            username: f.opt("username"),
            vault_id: f.opt("vault_id"),
            secret: f.one("secret").to_string(),
            passphrase: f.opt("passphrase"),
        };
        let sealer = sealer(st).map_err(|e| e.0)?;
        match id {
            Some(id) => catalog::replace_secret(&st.db, &sealer, &a.principal, id, &c).await,
            None => catalog::create_credential(&st.db, &sealer, &a.principal, &c).await,
        }
    }
    .await;
    let again = |r: Refusal| credentials_view(st, &a, Refusal { editing: id, ..r });
    match or_again(made, typed, again).await? {
        Ok(_) => to("/credentials".into()),
        Err(page) => Ok(page),
    }
}

async fn delete_credential(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if f.confirmed != "yes" {
        let name = catalog::list_credentials(&st.db, &a.principal)
            .await?
            .into_iter()
            .find(|x| x.id == id)
            .map(|x| x.name);
        if let Some(page) = ask_first(
            &a,
            &f,
            "credential",
            name.as_deref(),
            format!("/credentials/{id}/delete"),
            "/credentials",
        ) {
            return page;
        }
    }
    let done = catalog::delete_credential(&st.db, &a.principal, id).await;
    match or_again(done, Json::Null, |r| credentials_view(&st, &a, r)).await? {
        Ok(_) => to("/credentials".into()),
        Err(page) => Ok(page),
    }
}

// -------------------------------------------------------------- inventories

async fn inventories_view(st: &AppState, a: &Auth, r: Refusal) -> UiResult {
    let list = catalog::list_inventories(&st.db, &a.principal).await?;
    let projects = catalog::list_projects(&st.db, &a.principal).await?;
    let kinds: Vec<&str> = InventoryKind::ALL.iter().map(|k| k.as_str()).collect();
    page(
        a,
        "auto_inventories.html",
        context! {
            inventories => Value::from(Serde(&list)),
            projects => Value::from(Serde(&projects)),
            kinds,
            ..r.ctx()
        },
    )
}

async fn inventories_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    inventories_view(&st, &a, Refusal::default()).await
}

async fn create_inventory(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    let a = signed_in(a)?;
    let f = Fields(f);
    check_csrf(&a, f.csrf())?;
    let typed = serde_json::json!({
        "name": f.one("name"), "kind": f.one("kind"), "project_id": f.one("project_id"),
        "path": f.one("path"), "url": f.one("url"), "filter_site": f.one("filter_site"),
        "filter_server_type": f.one("filter_server_type"), "filter_tag": f.one("filter_tag"),
    });
    let made = async {
        let i = NewInventory {
            name: f.one("name").to_string(),
            kind: kind("kind", f.one("kind"))?,
            project_id: f.int("project_id")?,
            path: f.opt("path"),
            url: f.opt("url"),
            filter_site: f.opt("filter_site"),
            filter_server_type: f.opt("filter_server_type"),
            filter_tag: f.opt("filter_tag"),
        };
        catalog::create_inventory(&st.db, &a.principal, &i).await
    }
    .await;
    match or_again(made, typed, |r| inventories_view(&st, &a, r)).await? {
        Ok(_) => to("/inventories".into()),
        Err(page) => Ok(page),
    }
}

async fn delete_inventory(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if f.confirmed != "yes" {
        let name = catalog::list_inventories(&st.db, &a.principal)
            .await?
            .into_iter()
            .find(|x| x.id == id)
            .map(|x| x.name);
        if let Some(page) = ask_first(
            &a,
            &f,
            "inventory",
            name.as_deref(),
            format!("/inventories/{id}/delete"),
            "/inventories",
        ) {
            return page;
        }
    }
    let done = catalog::delete_inventory(&st.db, &a.principal, id).await;
    match or_again(done, Json::Null, |r| inventories_view(&st, &a, r)).await? {
        Ok(_) => to("/inventories".into()),
        Err(page) => Ok(page),
    }
}

// ------------------------------------------------------------ notifications

async fn notifications_view(st: &AppState, a: &Auth, r: Refusal) -> UiResult {
    let list = catalog::list_targets(&st.db, &a.principal).await?;
    page(
        a,
        "auto_notifications.html",
        context! { targets => Value::from(Serde(&list)), ..r.ctx() },
    )
}

async fn notifications_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    notifications_view(&st, &a, Refusal::default()).await
}

async fn create_target(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    let a = signed_in(a)?;
    let f = Fields(f);
    check_csrf(&a, f.csrf())?;
    let typed = serde_json::json!({
        "name": f.one("name"), "kind": f.one("kind"), "address": f.one("address"),
        "smtp_server": f.one("smtp_server"), "sender": f.one("sender"),
        "smtp_tls": f.one("smtp_tls"), "smtp_ca": f.one("smtp_ca"),
    });
    let made = async {
        let t = NewTarget {
            name: f.one("name").to_string(),
            kind: kind("kind", f.one("kind"))?,
            address: f.one("address").to_string(),
            smtp_server: f.opt("smtp_server"),
            sender: f.opt("sender"),
            secret: f.opt("secret"),
            smtp_tls: match f.opt("smtp_tls") {
                Some(t) => kind("smtp_tls", &t)?,
                None => SmtpTls::None,
            },
            smtp_ca: f.opt("smtp_ca"),
        };
        catalog::create_target(&st.db, &sealer(&st).map_err(|e| e.0)?, &a.principal, &t).await
    }
    .await;
    match or_again(made, typed, |r| notifications_view(&st, &a, r)).await? {
        Ok(_) => to("/notifications".into()),
        Err(page) => Ok(page),
    }
}

async fn delete_target(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if f.confirmed != "yes" {
        let name = catalog::list_targets(&st.db, &a.principal)
            .await?
            .into_iter()
            .find(|x| x.id == id)
            .map(|x| x.name);
        if let Some(page) = ask_first(
            &a,
            &f,
            "notification target",
            name.as_deref(),
            format!("/notifications/{id}/delete"),
            "/notifications",
        ) {
            return page;
        }
    }
    let done = catalog::delete_target(&st.db, &a.principal, id).await;
    match or_again(done, Json::Null, |r| notifications_view(&st, &a, r)).await? {
        Ok(_) => to("/notifications".into()),
        Err(page) => Ok(page),
    }
}

// ---------------------------------------------------------------- templates

async fn templates_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let list = templates::list(&st.db, &a.principal).await?;
    page(
        &a,
        "auto_templates.html",
        context! { templates => Value::from(Serde(&list)) },
    )
}

/// One survey question as the form shows it: every field text.
#[derive(Debug, Clone, Default, Serialize)]
struct QuestionRow {
    variable: String,
    label: String,
    kind: String,
    required: bool,
    default: String,
    min: String,
    max: String,
    choices: String,
}

/// Blank question rows under a template's survey (more after a save).
const BLANK_QUESTIONS: usize = 3;

/// The template form's fields as typed: what the form shows again.
#[derive(Debug, Clone, Default, Serialize)]
struct TemplateForm {
    name: String,
    description: String,
    project_id: String,
    playbook: String,
    inventory_id: String,
    limit: String,
    tags: String,
    skip_tags: String,
    extra_vars: String,
    check: bool,
    diff: bool,
    forks: String,
    verbosity: String,
    enabled: bool,
    dead_after_secs: String,
    credentials: Vec<i64>,
    groups: Vec<i64>,
    /// `"<target id>:<event>"` for each ticked box.
    notify: Vec<String>,
    survey: Vec<QuestionRow>,
}

fn number_text(v: &Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl TemplateForm {
    fn blank() -> TemplateForm {
        TemplateForm {
            forks: "5".into(),
            verbosity: "0".into(),
            dead_after_secs: "0".into(),
            enabled: true,
            survey: vec![QuestionRow::default(); BLANK_QUESTIONS],
            ..Default::default()
        }
    }

    fn of(t: &JobTemplate, notes: &[TemplateNotification]) -> TemplateForm {
        let mut survey: Vec<QuestionRow> = t
            .survey
            .iter()
            .map(|q| QuestionRow {
                variable: q.variable.clone(),
                label: q.label.clone(),
                kind: serde_json::to_value(q.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                required: q.required,
                default: match &q.default {
                    None => String::new(),
                    Some(Json::String(s)) => s.clone(),
                    Some(Json::Array(a)) => a
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
                        .collect::<Vec<_>>()
                        .join(", "),
                    Some(other) => other.to_string(),
                },
                min: number_text(&q.min),
                max: number_text(&q.max),
                choices: q.choices.join(", "),
            })
            .collect();
        survey.extend(std::iter::repeat_n(QuestionRow::default(), BLANK_QUESTIONS));
        let mut notify = Vec::new();
        for n in notes {
            for (on, ev) in [
                (n.on_success, "success"),
                (n.on_failure, "failure"),
                (n.on_drift, "drift"),
            ] {
                if on {
                    notify.push(format!("{}:{ev}", n.target_id));
                }
            }
        }
        TemplateForm {
            name: t.name.clone(),
            description: t.description.clone(),
            project_id: t.project_id.to_string(),
            playbook: t.playbook.clone(),
            inventory_id: t.inventory_id.to_string(),
            limit: t.limit.clone().unwrap_or_default(),
            tags: t.tags.clone().unwrap_or_default(),
            skip_tags: t.skip_tags.clone().unwrap_or_default(),
            extra_vars: t.extra_vars.clone(),
            check: t.check,
            diff: t.diff,
            forks: t.forks.to_string(),
            verbosity: t.verbosity.to_string(),
            enabled: t.enabled,
            dead_after_secs: t.dead_after_secs.to_string(),
            credentials: t.credentials.clone(),
            groups: t.groups.clone(),
            notify,
            survey,
        }
    }

    /// What was posted; rows are numbered `q0_variable`, `q0_type`, ...
    fn posted(f: &Fields) -> TemplateForm {
        let mut survey = Vec::new();
        for i in 0.. {
            let k = |s: &str| format!("q{i}_{s}");
            if !f.0.iter().any(|(n, _)| n.starts_with(&format!("q{i}_"))) {
                break;
            }
            survey.push(QuestionRow {
                variable: f.one(&k("variable")).trim().to_string(),
                label: f.one(&k("label")).to_string(),
                kind: f.one(&k("type")).to_string(),
                required: f.checked(&k("required")),
                default: f.one(&k("default")).to_string(),
                min: f.one(&k("min")).trim().to_string(),
                max: f.one(&k("max")).trim().to_string(),
                choices: f.one(&k("choices")).to_string(),
            });
        }
        TemplateForm {
            name: f.one("name").to_string(),
            description: f.one("description").to_string(),
            project_id: f.one("project_id").to_string(),
            playbook: f.one("playbook").to_string(),
            inventory_id: f.one("inventory_id").to_string(),
            limit: f.one("limit").to_string(),
            tags: f.one("tags").to_string(),
            skip_tags: f.one("skip_tags").to_string(),
            extra_vars: f.one("extra_vars").to_string(),
            check: f.checked("check"),
            diff: f.checked("diff"),
            forks: f.one("forks").to_string(),
            verbosity: f.one("verbosity").to_string(),
            enabled: f.checked("enabled"),
            dead_after_secs: f.one("dead_after_secs").to_string(),
            credentials: f.ids("credentials").unwrap_or_default(),
            groups: f.ids("groups").unwrap_or_default(),
            notify: f.all("notify").into_iter().map(String::from).collect(),
            survey,
        }
    }

    /// The template the form describes; a bad field is a field error.
    fn to_new(&self, f: &Fields) -> Result<NewTemplate, PanelError> {
        let id = |k: &str, v: &str| -> Result<i64, PanelError> {
            v.trim()
                .parse()
                .map_err(|_| PanelError::invalid(k, "choose one"))
        };
        let num = |k: &str, v: &str| -> Result<i64, PanelError> {
            v.trim()
                .parse()
                .map_err(|_| PanelError::invalid(k, format!("{v:?} is not a whole number")))
        };
        let mut survey = Vec::new();
        for (i, r) in self.survey.iter().enumerate() {
            if r.variable.is_empty() {
                continue;
            }
            let bound = |k: &str, v: &str| -> Result<Option<f64>, PanelError> {
                if v.is_empty() {
                    return Ok(None);
                }
                v.parse()
                    .map(Some)
                    .map_err(|_| PanelError::invalid(&format!("survey[{i}].{k}"), "a number"))
            };
            survey.push(Question {
                variable: r.variable.clone(),
                label: r.label.trim().to_string(),
                kind: kind::<QuestionType>(&format!("survey[{i}].type"), &r.kind)?,
                required: r.required,
                default: Some(r.default.trim())
                    .filter(|d| !d.is_empty())
                    .map(Json::from),
                min: bound("min", &r.min)?,
                max: bound("max", &r.max)?,
                choices: r
                    .choices
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
            });
        }
        let mut notifications: Vec<TemplateNotification> = Vec::new();
        for n in &self.notify {
            let (target, ev) = n
                .split_once(':')
                .ok_or_else(|| PanelError::invalid("notify", "a target and an event"))?;
            let target_id = num("notify", target)?;
            let at = match notifications.iter().position(|x| x.target_id == target_id) {
                Some(i) => i,
                None => {
                    notifications.push(TemplateNotification {
                        target_id,
                        on_success: false,
                        on_failure: false,
                        on_drift: false,
                    });
                    notifications.len() - 1
                }
            };
            let slot = &mut notifications[at];
            match ev {
                "success" => slot.on_success = true,
                "failure" => slot.on_failure = true,
                "drift" => slot.on_drift = true,
                _ => return Err(PanelError::invalid("notify", "success, failure or drift")),
            }
        }
        let opt = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(String::from);
        Ok(NewTemplate {
            name: self.name.clone(),
            description: self.description.trim().to_string(),
            project_id: id("project_id", &self.project_id)?,
            playbook: self.playbook.clone(),
            inventory_id: id("inventory_id", &self.inventory_id)?,
            limit: opt(&self.limit),
            tags: opt(&self.tags),
            skip_tags: opt(&self.skip_tags),
            extra_vars: self.extra_vars.clone(),
            check: self.check,
            diff: self.diff,
            forks: num("forks", &self.forks)?,
            verbosity: num("verbosity", &self.verbosity)?,
            survey,
            enabled: self.enabled,
            credentials: f.ids("credentials")?,
            groups: f.ids("groups")?,
            notifications,
            dead_after_secs: if self.dead_after_secs.trim().is_empty() {
                0
            } else {
                num("dead_after_secs", &self.dead_after_secs)?
            },
        })
    }
}

/// The create/edit form of a template (`id` None: a new one).
async fn template_form_view(
    st: &AppState,
    a: &Auth,
    id: Option<i64>,
    form: &TemplateForm,
    r: Refusal,
) -> UiResult {
    admin_only(a)?;
    let who = &a.principal;
    let projects = catalog::list_projects(&st.db, who).await?;
    let inventories = catalog::list_inventories(&st.db, who).await?;
    let credentials = catalog::list_credentials(&st.db, who).await?;
    let targets = catalog::list_targets(&st.db, who).await?;
    let groups = groups::list(&st.db, who).await?;
    let kinds = [
        "text",
        "integer",
        "float",
        "boolean",
        "choice",
        "multichoice",
    ];
    page(
        a,
        "auto_template_form.html",
        context! {
            id,
            t => Value::from(Serde(form)),
            projects => Value::from(Serde(&projects)),
            inventories => Value::from(Serde(&inventories)),
            credentials => Value::from(Serde(&credentials)),
            targets => Value::from(Serde(&targets)),
            groups => Value::from(Serde(&groups)),
            kinds,
            ..r.ctx()
        },
    )
}

async fn new_template(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    template_form_view(&st, &a, None, &TemplateForm::blank(), Refusal::default()).await
}

async fn edit_template(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
) -> UiResult {
    let a = signed_in(a)?;
    admin_only(&a)?;
    let t = templates::get(&st.db, &a.principal, id).await?;
    let notes = templates::notifications(&st.db, &a.principal, id).await?;
    template_form_view(
        &st,
        &a,
        Some(id),
        &TemplateForm::of(&t, &notes),
        Refusal::default(),
    )
    .await
}

async fn save_template(st: &AppState, a: &Auth, id: Option<i64>, f: Fields) -> UiResult {
    check_csrf(a, f.csrf())?;
    let form = TemplateForm::posted(&f);
    let saved = match form.to_new(&f) {
        Ok(t) => match id {
            None => templates::create(&st.db, &a.principal, &t).await,
            Some(id) => templates::update(&st.db, &a.principal, id, &t).await,
        },
        Err(e) => Err(e),
    };
    let mut again = form.clone();
    again
        .survey
        .extend(std::iter::repeat_n(QuestionRow::default(), 1));
    match or_again(saved, Json::Null, |r| {
        template_form_view(st, a, id, &again, r)
    })
    .await?
    {
        Ok(t) => to(format!("/templates/{}", t.id)),
        Err(page) => Ok(page),
    }
}

async fn create_template(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    let a = signed_in(a)?;
    save_template(&st, &a, None, Fields(f)).await
}

async fn update_template(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    let a = signed_in(a)?;
    save_template(&st, &a, Some(id), Fields(f)).await
}

/// A survey question as the launch form shows it.
#[derive(Serialize)]
struct Asked<'a> {
    #[serde(flatten)]
    q: &'a Question,
    /// The answer typed (or the default), as text; a list for multichoice.
    value: Json,
}

/// The template page: what it runs, its last runs, the launch form.
async fn template_view(
    st: &AppState,
    a: &Auth,
    id: i64,
    answers: &Map<String, Json>,
    r: Refusal,
) -> UiResult {
    let t = templates::get(&st.db, &a.principal, id).await?;
    let asked: Vec<Asked> = t
        .survey
        .iter()
        .map(|q| Asked {
            q,
            value: answers
                .get(&q.variable)
                .cloned()
                .or_else(|| q.default.clone())
                .unwrap_or(Json::Null),
        })
        .collect();
    let recent = runs::list(
        &st.db,
        &a.principal,
        &RunFilter {
            template_id: Some(id),
            ..Default::default()
        },
        Page {
            limit: 10,
            offset: 0,
        },
    )
    .await?;
    page(
        a,
        "auto_template.html",
        context! {
            t => Value::from(Serde(&t)),
            asked => Value::from(Serde(&asked)),
            runs => Value::from(Serde(&recent)),
            ..r.ctx()
        },
    )
}

async fn template_page(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
) -> UiResult {
    let a = signed_in(a)?;
    template_view(&st, &a, id, &Map::new(), Refusal::default()).await
}

async fn launch(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    let a = signed_in(a)?;
    let f = Fields(f);
    check_csrf(&a, f.csrf())?;
    let t = templates::get(&st.db, &a.principal, id).await?;
    // Each question's answer: the text typed, or a list of the boxes
    // ticked for a multiple choice; unanswered questions are left out.
    let mut answers = Map::new();
    for q in &t.survey {
        let name = format!("survey.{}", q.variable);
        let given = f.all(&name);
        if q.kind == QuestionType::Multichoice {
            if !given.is_empty() {
                answers.insert(q.variable.clone(), Json::from(given));
            }
        } else if let Some(v) = given.first().filter(|v| !v.is_empty()) {
            answers.insert(q.variable.clone(), Json::from(*v));
        }
    }
    let l = Launch {
        answers: answers.clone(),
        limit: f.opt("limit"),
    };
    let launched = templates::launch(&st.db, &a.principal, id, &l).await;
    match or_again(launched, Json::Null, |r| {
        template_view(&st, &a, id, &answers, r)
    })
    .await?
    {
        Ok(run) => to(format!("/runs/{}", run.id)),
        Err(page) => Ok(page),
    }
}

async fn set_template(
    st: &AppState,
    a: Option<Auth>,
    id: i64,
    csrf: &str,
    enabled: bool,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, csrf)?;
    templates::set_enabled(&st.db, &a.principal, id, enabled).await?;
    to(format!("/templates/{id}"))
}

async fn enable_template(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    set_template(&st, a, id, &f.csrf, true).await
}

async fn disable_template(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    set_template(&st, a, id, &f.csrf, false).await
}

async fn delete_template(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if f.confirmed != "yes" {
        let name = Some(templates::get(&st.db, &a.principal, id).await?.name);
        if let Some(page) = ask_first(
            &a,
            &f,
            "template",
            name.as_deref(),
            format!("/templates/{id}/delete"),
            "/templates",
        ) {
            return page;
        }
    }
    let done = templates::delete(&st.db, &a.principal, id).await;
    let none = Map::new();
    match or_again(done, Json::Null, |r| template_view(&st, &a, id, &none, r)).await? {
        Ok(()) => to("/templates".into()),
        Err(page) => Ok(page),
    }
}

// --------------------------------------------------------------------- runs

#[derive(Deserialize, Default)]
struct RunsQuery {
    #[serde(default)]
    template_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    launched_by: String,
    #[serde(default)]
    offset: i64,
}

async fn runs_page(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(q): Query<RunsQuery>,
) -> UiResult {
    let a = signed_in(a)?;
    let filter = RunFilter::parse(
        Some(q.template_id.as_str()),
        Some(q.status.as_str()),
        Some(q.launched_by.as_str()),
    )?;
    let list = runs::list(
        &st.db,
        &a.principal,
        &filter,
        Page {
            limit: 50,
            offset: q.offset.max(0),
        },
    )
    .await?;
    let tpls = templates::list(&st.db, &a.principal).await?;
    let tpls: Vec<Json> = tpls
        .iter()
        .map(|t| serde_json::json!({"id": t.id, "name": t.name}))
        .collect();
    let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    let launchers: Vec<&str> = LaunchedBy::ALL.iter().map(|s| s.as_str()).collect();
    page(
        &a,
        "auto_runs.html",
        context! {
            page => Value::from(Serde(&list)),
            templates => Value::from(Serde(&tpls)),
            statuses,
            launchers,
            q => context! { template_id => q.template_id, status => q.status, launched_by => q.launched_by },
        },
    )
}

/// Output lines the run page renders itself; its script follows the rest.
const PAGE_LOG_LINES: u32 = 2000;

async fn run_view(st: &AppState, a: &Auth, id: i64, r: Refusal) -> UiResult {
    let d = runs::detail(&st.db, &a.principal, id).await?;
    let (log, after) = match d.run.job_id {
        Some(job) => {
            let mut rc = st.db.read().await?;
            let lines = crate::queue::log::tail_on(&mut rc.conn(), job, PAGE_LOG_LINES).await?;
            let after = lines.last().map_or(0, |l| l.seq);
            let log: Vec<Json> = lines
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "seq": l.seq,
                        "text": crate::queue::log::summary(&l.line),
                    })
                })
                .collect();
            (log, after)
        }
        None => (Vec::new(), 0),
    };
    let failed_hosts = d.hosts.iter().any(|h| h.failed > 0 || h.unreachable > 0);
    page(
        a,
        "auto_run.html",
        context! {
            r => Value::from(Serde(&d)),
            finished => d.run.status.is_finished(),
            failed_hosts,
            log => Value::from(Serde(&log)),
            log_after => after,
            ..r.ctx()
        },
    )
}

async fn run_page(State(st): State<AppState>, a: Option<Auth>, Path(id): Path<i64>) -> UiResult {
    let a = signed_in(a)?;
    run_view(&st, &a, id, Refusal::default()).await
}

#[derive(Deserialize)]
struct RelaunchForm {
    #[serde(default)]
    csrf: String,
    /// Set by the "failed hosts only" button.
    #[serde(default)]
    failed_only: String,
}

async fn relaunch(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<RelaunchForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let failed_only = !f.failed_only.is_empty();
    let done = runs::relaunch(&st.db, &a.principal, id, failed_only).await;
    match or_again(done, Json::Null, |r| run_view(&st, &a, id, r)).await? {
        Ok(run) => to(format!("/runs/{}", run.id)),
        Err(page) => Ok(page),
    }
}

async fn cancel(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let done = runs::cancel(&st.db, &a.principal, id).await;
    match or_again(done, Json::Null, |r| run_view(&st, &a, id, r)).await? {
        Ok(_) => to(format!("/runs/{id}")),
        Err(page) => Ok(page),
    }
}

// ---------------------------------------------------------------- schedules

async fn schedules_view(st: &AppState, a: &Auth, r: Refusal) -> UiResult {
    let list = schedules::list(&st.db, &a.principal).await?;
    let tpls = templates::list(&st.db, &a.principal).await?;
    let names: Map<String, Json> = tpls
        .iter()
        .map(|t| (t.id.to_string(), Json::from(t.name.clone())))
        .collect();
    let tpls: Vec<Json> = tpls
        .iter()
        .map(|t| serde_json::json!({"id": t.id, "name": t.name}))
        .collect();
    let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
    let missed: Vec<&str> = MissedPolicy::ALL.iter().map(|m| m.as_str()).collect();
    page(
        a,
        "auto_schedules.html",
        context! {
            schedules => Value::from(Serde(&list)),
            templates => Value::from(Serde(&tpls)),
            names => Value::from(Serde(&names)),
            zones,
            missed,
            ..r.ctx()
        },
    )
}

async fn schedules_page(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(q): Query<EditQuery>,
) -> UiResult {
    let a = signed_in(a)?;
    let mut r = Refusal::default();
    if let Some(id) = q.edit {
        let s = schedules::get(&st.db, &a.principal, id).await?.schedule;
        r.form = serde_json::json!({
            "template_id": s.template_id.to_string(), "name": s.name, "cron": s.cron,
            "every_secs": s.every_secs.map(|n| n.to_string()), "time_zone": s.time_zone,
            "missed": s.missed, "enabled": s.enabled, "extra_vars": s.extra_vars,
        });
        r.editing = Some(id);
    }
    schedules_view(&st, &a, r).await
}

async fn create_schedule(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    save_schedule(&st, a, None, f).await
}

async fn update_schedule(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    save_schedule(&st, a, Some(id), f).await
}

async fn save_schedule(
    st: &AppState,
    a: Option<Auth>,
    id: Option<i64>,
    f: Vec<(String, String)>,
) -> UiResult {
    let a = signed_in(a)?;
    let f = Fields(f);
    check_csrf(&a, f.csrf())?;
    let typed = serde_json::json!({
        "template_id": f.one("template_id"), "name": f.one("name"), "cron": f.one("cron"),
        "every_secs": f.one("every_secs"), "time_zone": f.one("time_zone"),
        "missed": f.one("missed"), "enabled": f.checked("enabled"), "extra_vars": f.one("extra_vars"),
    });
    let made = async {
        let s = NewSchedule {
            template_id: f
                .int("template_id")?
                .ok_or_else(|| PanelError::invalid("template_id", "choose a template"))?,
            name: f.one("name").to_string(),
            cron: f.opt("cron"),
            every_secs: f.int("every_secs")?,
            time_zone: f.opt("time_zone").unwrap_or_else(|| "UTC".into()),
            missed: kind("missed", f.one("missed"))?,
            enabled: f.checked("enabled"),
            extra_vars: f.one("extra_vars").to_string(),
        };
        match id {
            Some(id) => schedules::update(&st.db, &a.principal, id, &s).await,
            None => schedules::create(&st.db, &a.principal, &s).await,
        }
    }
    .await;
    let again = |r: Refusal| schedules_view(st, &a, Refusal { editing: id, ..r });
    match or_again(made, typed, again).await? {
        Ok(_) => to("/schedules".into()),
        Err(page) => Ok(page),
    }
}

async fn set_schedule(st: &AppState, a: Option<Auth>, id: i64, csrf: &str, on: bool) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, csrf)?;
    let s = schedules::get(&st.db, &a.principal, id).await?.schedule;
    let changed = NewSchedule {
        template_id: s.template_id,
        name: s.name,
        cron: s.cron,
        every_secs: s.every_secs,
        time_zone: s.time_zone,
        missed: s.missed,
        enabled: on,
        extra_vars: s.extra_vars,
    };
    schedules::update(&st.db, &a.principal, id, &changed).await?;
    to("/schedules".into())
}

async fn enable_schedule(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    set_schedule(&st, a, id, &f.csrf, true).await
}

async fn disable_schedule(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    set_schedule(&st, a, id, &f.csrf, false).await
}

async fn delete_schedule(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    if f.confirmed != "yes" {
        let name = Some(
            schedules::get(&st.db, &a.principal, id)
                .await?
                .schedule
                .name,
        );
        if let Some(page) = ask_first(
            &a,
            &f,
            "schedule",
            name.as_deref(),
            format!("/schedules/{id}/delete"),
            "/schedules",
        ) {
            return page;
        }
    }
    schedules::delete(&st.db, &a.principal, id).await?;
    to("/schedules".into())
}
