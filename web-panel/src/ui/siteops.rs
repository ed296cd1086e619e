//! The server page's forms for what site admins do with their servers:
//! add, change and delete vhosts, apply them again; order a vhost's
//! certificate from the ACME server (or renew it now), or upload one; pick
//! system packages from the allowed list; set the server's tags. Also the
//! platform admins' page of allowed packages (`/admin/packages`); make a
//! production server's test server, clone production to test. Each form
//! posts the session's `csrf` and calls the same domain functions as the
//! API (`services::vhosts`, `services::certificates`, `services::packages`,
//! `services::tags`), so a refusal (a bad host name, a name another site
//! uses, a certificate that does not cover the vhost, a package outside the
//! list, a bad tag) is the same, shown as the error page with its message
//! and status.

use axum::extract::{Path, State};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::value::Serde;
use minijinja::{context, Value};
use serde::Deserialize;

use super::kit::{admin_only, check_csrf, page, signed_in, CsrfForm, Question, UiResult};
use crate::automation::secrets::Sealer;
use crate::domain::PanelError;
use crate::http::{AppState, Auth};
use crate::services::certificates::{self, CertificateUpload};
use crate::services::dbpassword;
use crate::services::packages::{self, NewAllowedPackage, ServerPackages};
use crate::services::snapshots::{self, RestoreBody, Schedule};
use crate::services::tags::{self, TagsBody};
use crate::services::testservers::{self, CloneBody, NewTestServer};
use crate::services::vhosts::{self, VhostBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/servers/{id}/vhosts", post(vhost_create))
        .route("/servers/{id}/vhosts/apply", post(vhosts_apply))
        .route("/servers/{id}/vhosts/{vhost_id}", post(vhost_update))
        .route(
            "/servers/{id}/vhosts/{vhost_id}/delete",
            post(vhost_delete).layer(from_fn_with_state(
                Question {
                    title: "Delete this web site?",
                    message: "Its configuration and certificate leave the server at the next web-site run; the files under its document root stay.",
                    button: "Delete the web site",
                },
                super::kit::ask_first,
            )),
        )
        .route("/servers/{id}/packages", post(packages_set))
        .route("/servers/{id}/db-password", post(db_password_change))
        .route("/servers/{id}/snapshots", post(snapshot_take))
        .route(
            "/servers/{id}/snapshots/{snapshot_id}/restore",
            post(snapshot_restore),
        )
        .route("/sites/{id}/snapshot-schedule", post(snapshot_schedule_set))
        .route("/servers/{id}/test-server", post(test_server_create))
        .route("/servers/{id}/clone", post(clone_to_test))
        .route("/admin/packages", get(admin_packages).post(package_allow))
        .route(
            "/admin/packages/{package_id}/delete",
            post(package_disallow).layer(from_fn_with_state(
                Question {
                    title: "Take this package off the allowed list?",
                    message: "Nobody can pick it for a server any more.",
                    button: "Take it off the list",
                },
                super::kit::ask_first,
            )),
        )
        .route("/servers/{id}/tags", post(tags_set))
        .route(
            "/servers/{id}/vhosts/{vhost_id}/certificate/acme",
            post(certificate_acme),
        )
        .route(
            "/servers/{id}/vhosts/{vhost_id}/certificate",
            post(certificate_upload),
        )
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

/// The server page's packages form: one `package` checkbox per allowed
/// package, the checked ones posted (repeated names).
async fn packages_set(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<Vec<(String, String)>>,
) -> UiResult {
    let a = signed_in(a)?;
    let csrf = f.iter().find(|(k, _)| k == "csrf").map_or("", |(_, v)| v);
    check_csrf(&a, csrf)?;
    let want = ServerPackages {
        packages: f
            .iter()
            .filter(|(k, _)| k == "package")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    packages::set(&st.db, &a.principal, id, &want).await?;
    to_server(id)
}

/// Platform admins: the allowed packages, a form to add one, a button to
/// take each off.
async fn admin_packages(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    admin_only(&a)?;
    let list = packages::allowed(&st.db).await?;
    page(
        &a,
        "admin_packages.html",
        context! { packages => Value::from(Serde(&list)) },
    )
}

#[derive(Deserialize)]
struct PackageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

async fn package_allow(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<PackageForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let new = NewAllowedPackage {
        name: f.name,
        description: f.description,
    };
    packages::allow(&st.db, &a.principal, &new).await?;
    Ok(Redirect::to("/admin/packages").into_response())
}

async fn package_disallow(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(package_id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    packages::disallow(&st.db, &a.principal, package_id).await?;
    Ok(Redirect::to("/admin/packages").into_response())
}

/// "Change database root password": the new password is on the page this
/// post answers, once, and on no other (`Cache-Control: no-store`).
async fn db_password_change(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let sealer = Sealer::for_data_dir(&st.config.data_dir)
        .map_err(|e| PanelError::Internal(format!("the panel's secret key: {e}")))?;
    let answer = dbpassword::change(&st.db, &sealer, &a.principal, id).await?;
    let mut resp = page(
        &a,
        "db_password.html",
        context! { id => id, job_id => answer.job_id, password => answer.password },
    )?;
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// The tags form: one text field, tags separated by spaces or commas.
#[derive(Deserialize)]
struct TagsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tags: String,
}

async fn tags_set(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<TagsForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let body = TagsBody {
        tags: f
            .tags
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
    };
    tags::set(&st.db, &a.principal, id, &body).await?;
    to_server(id)
}

async fn certificate_acme(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, vhost_id)): Path<(i64, i64)>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    certificates::request_acme(&st.db, &st.config.acme, &a.principal, id, vhost_id).await?;
    to_server(id)
}

/// The upload form: the PEM texts pasted in two fields.
#[derive(Deserialize)]
struct UploadForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    certificate: String,
    #[serde(default)]
    key: String,
}

async fn certificate_upload(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, vhost_id)): Path<(i64, i64)>,
    Form(f): Form<UploadForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let body = CertificateUpload {
        certificate: f.certificate,
        key: f.key,
    };
    certificates::upload(&st.db, &a.principal, id, vhost_id, &body).await?;
    to_server(id)
}

async fn snapshot_take(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    snapshots::take(&st.db, &a.principal, id).await?;
    to_server(id)
}

#[derive(Deserialize)]
struct RestoreForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

/// The restore form: the server's hostname typed in `confirm`.
async fn snapshot_restore(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path((id, snapshot_id)): Path<(i64, i64)>,
    Form(f): Form<RestoreForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let body = RestoreBody { confirm: f.confirm };
    snapshots::restore(&st.db, &a.principal, id, snapshot_id, &body).await?;
    to_server(id)
}

#[derive(Deserialize)]
struct ScheduleForm {
    #[serde(default)]
    csrf: String,
    /// Hours between two snapshots.
    every_hours: i64,
    keep: i64,
    #[serde(default)]
    enabled: Option<String>,
    /// The server page the form was on, to go back to.
    back: i64,
}

async fn snapshot_schedule_set(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(site): Path<i64>,
    Form(f): Form<ScheduleForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let want = Schedule {
        every_secs: f.every_hours.saturating_mul(3600),
        keep: f.keep,
        enabled: f.enabled.is_some(),
    };
    snapshots::set_schedule(&st.db, &a.principal, site, &want).await?;
    to_server(f.back)
}

#[derive(Deserialize)]
struct TestServerForm {
    #[serde(default)]
    csrf: String,
    /// Empty for production's own type.
    #[serde(default)]
    server_type: String,
}

async fn test_server_create(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<TestServerForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let body = NewTestServer {
        server_type: Some(f.server_type.trim().to_string()).filter(|t| !t.is_empty()),
        pool_type: None,
    };
    let created = testservers::create(&st.db, &a.principal, id, &body).await?;
    to_server(created.service.id)
}

/// The clone form: the test server's hostname typed in `confirm`.
async fn clone_to_test(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<RestoreForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    testservers::clone(&st.db, &a.principal, id, &CloneBody { confirm: f.confirm }).await?;
    to_server(id)
}
