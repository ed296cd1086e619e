//! The JSON API of what site admins do with their servers: a server's
//! vhosts and aliases, and one more run of them (`services::vhosts`); each
//! vhost's TLS certificate, ordered by ACME or uploaded
//! (`services::certificates`); the allowed system packages platform admins
//! curate and each server's picks (`services::packages`); a new database
//! root password, answered once (`services::dbpassword`); the server's tags
//! (`services::tags`);
//! snapshots, restores and the site's snapshot schedule
//! (`services::snapshots`); a production server's test server and "clone
//! production to test" (`services::testservers`).
//! Handlers parse and shape; the domain functions authorise. [`ROUTES`]
//! and [`BODIES`] join the API table in `mod.rs`, so the OpenAPI document
//! and the authorisation matrix cover these routes too.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::json;

use super::kit::{created, no_content, ok, Access, ApiResult, Route};
use crate::automation::secrets::Sealer;
use crate::domain::PanelError;
use crate::http::ApiError;
use crate::http::{AppState, Auth};
use crate::services::certificates::{self, CertificateUpload};
use crate::services::dbpassword::{self, NewDbPassword};
use crate::services::packages::{self, AllowedPackage, NewAllowedPackage, ServerPackages};
use crate::services::snapshots::{self, RestoreBody, Schedule, Snapshot};
use crate::services::testservers::{self, CloneBody, NewTestServer};
use crate::services::vhosts::{self, VhostBody};

pub const ROUTES: &[Route] = &[
    (
        "GET",
        "/services/{id}/vhosts",
        Access::SiteAdmin,
        "The server's vhosts with their aliases",
    ),
    (
        "POST",
        "/services/{id}/vhosts",
        Access::SiteAdmin,
        "Add a vhost (name, aliases, kind, document root, target); queues a `vhosts` job. A name another site uses is refused (409)",
    ),
    (
        "PUT",
        "/services/{id}/vhosts/{vhost_id}",
        Access::SiteAdmin,
        "Replace a vhost's name, aliases, kind, document root and target; queues a `vhosts` job",
    ),
    (
        "DELETE",
        "/services/{id}/vhosts/{vhost_id}",
        Access::SiteAdmin,
        "Delete a vhost; the `vhosts` job it queues removes it from Apache",
    ),
    (
        "POST",
        "/services/{id}/vhosts/apply",
        Access::SiteAdmin,
        "Apply the server's vhosts once more (a `vhosts` job)",
    ),
    (
        "GET",
        "/packages",
        Access::User,
        "The Debian packages site admins may install, with what each is for",
    ),
    (
        "POST",
        "/admin/packages",
        Access::PlatformAdmin,
        "Allow a Debian package (name, description). A name already listed is refused (409)",
    ),
    (
        "DELETE",
        "/admin/packages/{package_id}",
        Access::PlatformAdmin,
        "Take a package off the allowed list; refused (409) while a server has it picked",
    ),
    (
        "GET",
        "/services/{id}/packages",
        Access::SiteAdmin,
        "The system packages picked for the server",
    ),
    (
        "PUT",
        "/services/{id}/packages",
        Access::SiteAdmin,
        "Set the server's system packages (names from the allowed list; others are refused with 422); queues a `packages` job that installs them and removes the ones left out",
    ),
    (
        "POST",
        "/services/{id}/db-password",
        Access::SiteAdmin,
        "Change MariaDB's root password: answers a new random password once (202, `Cache-Control: no-store`) and queues the `db_password` job that sets it and writes it to a root-only /root/.my.cnf; the panel keeps no copy once the job has run",
    ),
    (
        "GET",
        "/services/{id}/tags",
        Access::SiteAdmin,
        "The server's tags, sorted",
    ),
    (
        "PUT",
        "/services/{id}/tags",
        Access::SiteAdmin,
        "Replace the server's tags (each 1-40 characters of a-z, 0-9, '_', '-', '.'); panel inventories may select servers by tag",
    ),
    (
        "GET",
        "/services/{id}/vhosts/{vhost_id}/certificate",
        Access::SiteAdmin,
        "The vhost's TLS certificate (names, issuer, expiry, state, last error; never its key) and the names a certificate must cover",
    ),
    (
        "POST",
        "/services/{id}/vhosts/{vhost_id}/certificate/acme",
        Access::SiteAdmin,
        "Order a certificate for the vhost's name and aliases from the ACME server (a first one or a renewal now); queues a `certificate` job (202). 409 when no ACME server is configured or the server is not ready",
    ),
    (
        "PUT",
        "/services/{id}/vhosts/{vhost_id}/certificate",
        Access::SiteAdmin,
        "Upload a PEM certificate (with its chain) and key; refused with 422 naming the field when the key is not the certificate's, its names do not cover the vhost's name and aliases, or it is expired or not yet valid; queues the `certificate` job that installs it (202)",
    ),
    (
        "GET",
        "/services/{id}/snapshots",
        Access::SiteAdmin,
        "The server's snapshots, newest first",
    ),
    (
        "POST",
        "/services/{id}/snapshots",
        Access::SiteAdmin,
        "Take a snapshot of the ready server now (a `snapshot` job, 202); the oldest beyond the site's `keep` go",
    ),
    (
        "POST",
        "/services/{id}/snapshots/{snapshot_id}/restore",
        Access::SiteAdmin,
        "Put the server back to a snapshot (a `restore` job, 202); `confirm` must be the server's hostname (422 otherwise). Host key and addresses stay the panel's; people, vhosts and packages are applied again",
    ),
    (
        "GET",
        "/sites/{id}/snapshot-schedule",
        Access::SiteAdmin,
        "The site's snapshot schedule (default: daily, keep 7)",
    ),
    (
        "PUT",
        "/sites/{id}/snapshot-schedule",
        Access::SiteAdmin,
        "Replace the site's snapshot schedule (`every_secs` ≥ 3600, `keep` 1 to 100, `enabled`)",
    ),
    (
        "GET",
        "/services/{id}/test-server",
        Access::SiteAdmin,
        "The production server and test server this server belongs to (as either), with the test server's last clone",
    ),
    (
        "POST",
        "/services/{id}/test-server",
        Access::SiteAdmin,
        "Make the production server's test server (201): its own hostname and addresses from the pool, counted by the quotas; `server_type` defaults to production's and must have its OS image and at least its disk (422 otherwise); one test server per production server (409)",
    ),
    (
        "POST",
        "/services/{id}/clone",
        Access::SiteAdmin,
        "Replace the test server's disk with a copy of its production server's (a `clone` job, 202); `confirm` must be the test server's hostname (422 otherwise). The copy boots with the test server's hostname, addresses and new host keys, then the roles run again",
    ),
];

/// Request and answer schemas of [`ROUTES`], as in `mod.rs`.
pub const BODIES: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    ("GET", "/services/{id}/vhosts", None, Some("Vhost")),
    (
        "POST",
        "/services/{id}/vhosts",
        Some("VhostBody"),
        Some("Vhost"),
    ),
    (
        "PUT",
        "/services/{id}/vhosts/{vhost_id}",
        Some("VhostBody"),
        Some("Vhost"),
    ),
    ("GET", "/packages", None, Some("AllowedPackage")),
    (
        "POST",
        "/admin/packages",
        Some("NewAllowedPackage"),
        Some("AllowedPackage"),
    ),
    (
        "GET",
        "/services/{id}/packages",
        None,
        Some("ServerPackages"),
    ),
    (
        "PUT",
        "/services/{id}/packages",
        Some("ServerPackages"),
        Some("ServerPackages"),
    ),
    (
        "POST",
        "/services/{id}/db-password",
        None,
        Some("NewDbPassword"),
    ),
    ("PUT", "/services/{id}/tags", Some("TagsBody"), None),
    (
        "GET",
        "/services/{id}/vhosts/{vhost_id}/certificate",
        None,
        Some("CertificateStatus"),
    ),
    (
        "POST",
        "/services/{id}/vhosts/{vhost_id}/certificate/acme",
        None,
        Some("CertificateRequested"),
    ),
    (
        "PUT",
        "/services/{id}/vhosts/{vhost_id}/certificate",
        Some("CertificateUpload"),
        Some("CertificateRequested"),
    ),
    ("GET", "/services/{id}/snapshots", None, Some("Snapshot")),
    (
        "POST",
        "/services/{id}/snapshots/{snapshot_id}/restore",
        Some("RestoreBody"),
        None,
    ),
    (
        "GET",
        "/sites/{id}/snapshot-schedule",
        None,
        Some("Schedule"),
    ),
    (
        "PUT",
        "/sites/{id}/snapshot-schedule",
        Some("Schedule"),
        Some("Schedule"),
    ),
    ("GET", "/services/{id}/test-server", None, Some("TestPair")),
    (
        "POST",
        "/services/{id}/test-server",
        Some("NewTestServer"),
        Some("Created"),
    ),
    ("POST", "/services/{id}/clone", Some("CloneBody"), None),
];

/// Routes of this table whose GET answers a JSON array.
pub const ARRAYS: &[&str] = &[
    "/services/{id}/vhosts",
    "/services/{id}/tags",
    "/services/{id}/snapshots",
];

pub fn schemas(b: utoipa::openapi::ComponentsBuilder) -> utoipa::openapi::ComponentsBuilder {
    use crate::services::certificates::{CertificateRequested, CertificateStatus};
    use crate::services::model::{CertSource, CertState, CertificateView, Vhost, VhostKind};
    b.schema_from::<Vhost>()
        .schema_from::<VhostKind>()
        .schema_from::<VhostBody>()
        .schema_from::<AllowedPackage>()
        .schema_from::<NewAllowedPackage>()
        .schema_from::<ServerPackages>()
        .schema_from::<NewDbPassword>()
        .schema_from::<crate::services::tags::TagsBody>()
        .schema_from::<CertificateView>()
        .schema_from::<CertSource>()
        .schema_from::<CertState>()
        .schema_from::<CertificateStatus>()
        .schema_from::<CertificateRequested>()
        .schema_from::<CertificateUpload>()
        .schema_from::<Snapshot>()
        .schema_from::<RestoreBody>()
        .schema_from::<Schedule>()
        .schema_from::<NewTestServer>()
        .schema_from::<CloneBody>()
        .schema_from::<testservers::TestPair>()
        .schema_from::<testservers::CloneRun>()
        .schema_from::<testservers::CloneState>()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/services/{id}/vhosts",
            axum::routing::get(list_vhosts).post(create_vhost),
        )
        .route(
            "/services/{id}/vhosts/{vhost_id}",
            put(update_vhost).delete(delete_vhost),
        )
        .route("/services/{id}/vhosts/apply", post(apply_vhosts))
        .route("/packages", axum::routing::get(allowed_packages))
        .route("/admin/packages", post(allow_package))
        .route(
            "/admin/packages/{package_id}",
            axum::routing::delete(disallow_package),
        )
        .route("/services/{id}/db-password", post(change_db_password))
        .route(
            "/services/{id}/snapshots",
            axum::routing::get(list_snapshots).post(take_snapshot),
        )
        .route(
            "/services/{id}/snapshots/{snapshot_id}/restore",
            post(restore_snapshot),
        )
        .route(
            "/sites/{id}/snapshot-schedule",
            axum::routing::get(snapshot_schedule).put(set_snapshot_schedule),
        )
        .route(
            "/services/{id}/test-server",
            axum::routing::get(test_pair).post(create_test_server),
        )
        .route("/services/{id}/clone", post(clone_to_test))
        .route(
            "/services/{id}/packages",
            axum::routing::get(server_packages).put(set_server_packages),
        )
        .route(
            "/services/{id}/tags",
            axum::routing::get(list_tags).put(set_tags),
        )
        .route(
            "/services/{id}/vhosts/{vhost_id}/certificate",
            axum::routing::get(get_certificate).put(upload_certificate),
        )
        .route(
            "/services/{id}/vhosts/{vhost_id}/certificate/acme",
            post(request_certificate),
        )
}

async fn list_tags(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(crate::services::tags::list(&st.db, &a.principal, id).await?)
}

async fn set_tags(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<crate::services::tags::TagsBody>,
) -> ApiResult {
    ok(crate::services::tags::set(&st.db, &a.principal, id, &b).await?)
}

async fn list_vhosts(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(vhosts::list(&st.db, &a.principal, id).await?)
}

async fn create_vhost(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<VhostBody>,
) -> ApiResult {
    created(vhosts::create(&st.db, &st.config.dns, &a.principal, id, &b).await?)
}

async fn update_vhost(
    State(st): State<AppState>,
    a: Auth,
    Path((id, vhost_id)): Path<(i64, i64)>,
    Json(b): Json<VhostBody>,
) -> ApiResult {
    ok(vhosts::update(&st.db, &st.config.dns, &a.principal, id, vhost_id, &b).await?)
}

async fn delete_vhost(
    State(st): State<AppState>,
    a: Auth,
    Path((id, vhost_id)): Path<(i64, i64)>,
) -> ApiResult {
    vhosts::delete(&st.db, &st.config.dns, &a.principal, id, vhost_id).await?;
    no_content()
}

async fn apply_vhosts(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let job = vhosts::apply(&st.db, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn allowed_packages(State(st): State<AppState>, _a: Auth) -> ApiResult {
    ok(packages::allowed(&st.db).await?)
}

async fn allow_package(
    State(st): State<AppState>,
    a: Auth,
    Json(b): Json<NewAllowedPackage>,
) -> ApiResult {
    created(packages::allow(&st.db, &a.principal, &b).await?)
}

async fn disallow_package(
    State(st): State<AppState>,
    a: Auth,
    Path(package_id): Path<i64>,
) -> ApiResult {
    packages::disallow(&st.db, &a.principal, package_id).await?;
    no_content()
}

async fn server_packages(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let names = packages::list(&st.db, &a.principal, id).await?;
    ok(ServerPackages { packages: names })
}

async fn set_server_packages(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<ServerPackages>,
) -> ApiResult {
    let names = packages::set(&st.db, &a.principal, id, &b).await?;
    ok(ServerPackages { packages: names })
}

async fn change_db_password(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let sealer = Sealer::for_data_dir(&st.config.data_dir).map_err(|e| {
        ApiError::from(PanelError::Internal(format!("the panel's secret key: {e}")))
    })?;
    let answer = dbpassword::change(&st.db, &sealer, &a.principal, id).await?;
    // The one place the password is shown: no cache may keep it.
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(answer),
    )
        .into_response())
}

async fn get_certificate(
    State(st): State<AppState>,
    a: Auth,
    Path((id, vhost_id)): Path<(i64, i64)>,
) -> ApiResult {
    ok(certificates::get(&st.db, &a.principal, id, vhost_id).await?)
}

async fn request_certificate(
    State(st): State<AppState>,
    a: Auth,
    Path((id, vhost_id)): Path<(i64, i64)>,
) -> ApiResult {
    let r = certificates::request_acme(&st.db, &st.config.acme, &a.principal, id, vhost_id).await?;
    Ok((StatusCode::ACCEPTED, Json(r)).into_response())
}

async fn upload_certificate(
    State(st): State<AppState>,
    a: Auth,
    Path((id, vhost_id)): Path<(i64, i64)>,
    Json(b): Json<CertificateUpload>,
) -> ApiResult {
    let r = certificates::upload(&st.db, &a.principal, id, vhost_id, &b).await?;
    Ok((StatusCode::ACCEPTED, Json(r)).into_response())
}

async fn list_snapshots(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(snapshots::list(&st.db, &a.principal, id).await?)
}

async fn take_snapshot(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    let job = snapshots::take(&st.db, &a.principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn restore_snapshot(
    State(st): State<AppState>,
    a: Auth,
    Path((id, snapshot_id)): Path<(i64, i64)>,
    Json(b): Json<RestoreBody>,
) -> ApiResult {
    let job = snapshots::restore(&st.db, &a.principal, id, snapshot_id, &b).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn snapshot_schedule(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(snapshots::schedule(&st.db, &a.principal, id).await?)
}

async fn set_snapshot_schedule(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<Schedule>,
) -> ApiResult {
    ok(snapshots::set_schedule(&st.db, &a.principal, id, &b).await?)
}

async fn test_pair(State(st): State<AppState>, a: Auth, Path(id): Path<i64>) -> ApiResult {
    ok(testservers::pair(&st.db, &a.principal, id).await?)
}

async fn create_test_server(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<NewTestServer>,
) -> ApiResult {
    created(testservers::create(&st.db, &a.principal, id, &b).await?)
}

async fn clone_to_test(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Json(b): Json<CloneBody>,
) -> ApiResult {
    let job = testservers::clone(&st.db, &a.principal, id, &b).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}
