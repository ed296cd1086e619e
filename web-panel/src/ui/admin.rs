//! The platform admins' pages: users (create, reset a password, disable
//! and enable), groups and their members, quotas with what is in use under
//! each, server types, address pools (generate from a CIDR, import a YAML
//! or CSV file, see a pool's addresses with their quarantine), the
//! hypervisor hosts (capacity, use, state; drain or mark down), the job
//! queue (filter by state and kind; every job opens on its page) and the
//! overview the dashboard shows them.
//!
//! Handlers parse forms and pick a page; every read and change is the
//! domain function the JSON API calls (`auth`, `services::groups`,
//! `alloc`, `services::catalog`), which makes the authorisation decision.
//! A refused form comes back with what was typed and the message beside
//! its field.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use minijinja::value::Serde;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use super::kit::{admin_only, check_csrf, page, signed_in, Refused, UiError, UiResult};
use crate::alloc::{self, Quota};
use crate::audit::{self, AuditFilter};
use crate::auth;
use crate::domain::{Page, PanelError};
use crate::http::{AppState, Auth};
use crate::queue::{JobFilter, JobState};
use crate::services::catalog::{self, NewServerType};
use crate::services::{groups, hosts};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(users_page).post(user_create))
        .route("/admin/users/{id}/password", post(user_password))
        .route("/admin/users/{id}/disable", post(user_disable))
        .route("/admin/users/{id}/enable", post(user_enable))
        .route("/admin/groups", get(groups_page).post(group_create))
        .route("/admin/groups/{id}/members", post(group_member))
        .route("/admin/quotas", get(quotas_page).post(quota_set))
        .route("/admin/server-types", get(types_page).post(type_create))
        .route("/admin/pools", get(pools_page).post(pool_generate))
        .route("/admin/pools/import", post(pool_import))
        .route("/admin/pools/{id}", get(pool_page))
        .route("/admin/jobs", get(jobs_page))
        .route("/admin/hosts", get(hosts_page))
        .route("/admin/hosts/{name}/state", post(host_state))
}

fn to(path: &str) -> UiResult {
    Ok(Redirect::to(path).into_response())
}

fn form_json(f: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(f).unwrap_or_default()
}

/// A whole number typed in `field`, or a field error naming it.
fn int(field: &str, s: &str) -> Result<i64, PanelError> {
    s.trim()
        .parse()
        .map_err(|_| PanelError::invalid(field, format!("{:?} is not a whole number", s.trim())))
}

// ------------------------------------------------------------------ users

async fn users_ctx(st: &AppState, a: &Auth) -> Result<Value, UiError> {
    let users = auth::list_users(
        &st.db,
        &a.principal,
        Page {
            limit: 500,
            offset: 0,
        },
    )
    .await?;
    Ok(context! { users => Value::from(Serde(&users)) })
}

async fn users_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let ctx = users_ctx(&st, &a).await?;
    page(&a, "admin_users.html", ctx)
}

#[derive(Deserialize, Serialize)]
struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default, skip_serializing)]
    password: String,
    #[serde(default)]
    is_admin: Option<String>,
}

async fn user_create(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<UserForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let email = Some(f.email.trim()).filter(|e| !e.is_empty());
    let password = Some(f.password.clone()).filter(|p| !p.is_empty());
    match auth::create_user(
        &st.db,
        &st.passwords,
        &a.principal,
        f.name.trim(),
        email,
        password,
        f.is_admin.is_some(),
    )
    .await
    {
        Ok(u) => to(&format!("/admin/users?created={}", u.id)),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = users_ctx(&st, &a).await?;
            refused.again(&a, "admin_users.html", ctx, form_json(&f))
        }
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

async fn user_password(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<PasswordForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    match auth::set_password(&st.db, &st.passwords, &a.principal, id, f.password).await {
        Ok(()) => to("/admin/users"),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = users_ctx(&st, &a).await?;
            // The error is shown beside the row's own password field.
            let ctx = context! { ..ctx, ..context! { password_for => id } };
            refused.again(&a, "admin_users.html", ctx, serde_json::json!({}))
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

async fn user_disable(
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
                title => "Disable this account?",
                message => "They are logged out, their tokens stop working, and their accounts on servers are removed by the next access run.",
                action => format!("/admin/users/{id}/disable"),
                button => "Disable",
                back => "/admin/users",
            },
        );
    }
    auth::set_disabled(&st.db, &a.principal, id, true).await?;
    to("/admin/users")
}

async fn user_enable(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<ConfirmForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    auth::set_disabled(&st.db, &a.principal, id, false).await?;
    to("/admin/users")
}

// ------------------------------------------------------------------ groups

async fn groups_ctx(st: &AppState, a: &Auth) -> Result<Value, UiError> {
    let list = groups::list(&st.db, &a.principal).await?;
    Ok(context! { groups => Value::from(Serde(&list)) })
}

async fn groups_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let ctx = groups_ctx(&st, &a).await?;
    page(&a, "admin_groups.html", ctx)
}

#[derive(Deserialize, Serialize)]
struct NameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

async fn group_create(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<NameForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    match groups::create(&st.db, &a.principal, f.name.trim()).await {
        Ok(_) => to("/admin/groups"),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = groups_ctx(&st, &a).await?;
            refused.again(&a, "admin_groups.html", ctx, form_json(&f))
        }
    }
}

#[derive(Deserialize, Serialize)]
struct MemberForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
}

async fn group_member(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(id): Path<i64>,
    Form(f): Form<MemberForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    match groups::add_member(&st.db, &a.principal, id, f.user.trim()).await {
        Ok(()) => to("/admin/groups"),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = groups_ctx(&st, &a).await?;
            let ctx = context! { ..ctx, ..context! { member_for => id } };
            refused.again(&a, "admin_groups.html", ctx, form_json(&f))
        }
    }
}

// ------------------------------------------------------------------ quotas

async fn quotas_ctx(st: &AppState, a: &Auth) -> Result<Value, UiError> {
    let list = alloc::all_quotas(&st.db, &a.principal).await?;
    let users = auth::list_users(
        &st.db,
        &a.principal,
        Page {
            limit: 500,
            offset: 0,
        },
    )
    .await?;
    let groups = groups::list(&st.db, &a.principal).await?;
    Ok(context! {
        quotas => Value::from(Serde(&list)),
        users => Value::from(Serde(&users.items)),
        groups => Value::from(Serde(&groups)),
    })
}

async fn quotas_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let ctx = quotas_ctx(&st, &a).await?;
    page(&a, "admin_quotas.html", ctx)
}

#[derive(Deserialize, Serialize)]
struct QuotaForm {
    #[serde(default)]
    csrf: String,
    /// `user:ID` or `group:ID`.
    #[serde(default)]
    subject: String,
    #[serde(default)]
    max_vms: String,
    #[serde(default)]
    max_vcpus: String,
    #[serde(default)]
    max_ram_mb: String,
    #[serde(default)]
    max_disk_gb: String,
}

impl QuotaForm {
    fn quota(&self) -> Result<Quota, PanelError> {
        let (kind, id) = self
            .subject
            .split_once(':')
            .ok_or_else(|| PanelError::invalid("subject", "pick a user or a group"))?;
        Ok(Quota {
            subject_kind: kind.to_string(),
            subject_id: int("subject", id)?,
            max_vms: int("max_vms", &self.max_vms)?,
            max_vcpus: int("max_vcpus", &self.max_vcpus)?,
            max_ram_mb: int("max_ram_mb", &self.max_ram_mb)?,
            max_disk_gb: int("max_disk_gb", &self.max_disk_gb)?,
        })
    }
}

async fn quota_set(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<QuotaForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let result = match f.quota() {
        Ok(q) => alloc::set_quota(&st.db, &a.principal, &q).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => to("/admin/quotas"),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = quotas_ctx(&st, &a).await?;
            refused.again(&a, "admin_quotas.html", ctx, form_json(&f))
        }
    }
}

// ------------------------------------------------------------ server types

async fn types_ctx(st: &AppState) -> Result<Value, UiError> {
    let list = catalog::list(&st.db).await?;
    Ok(context! { types => Value::from(Serde(&list)) })
}

async fn types_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    admin_only(&a)?;
    let ctx = types_ctx(&st).await?;
    page(&a, "admin_types.html", ctx)
}

#[derive(Deserialize, Serialize)]
struct TypeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    cpus: String,
    #[serde(default)]
    ram_mb: String,
    #[serde(default)]
    disk_gb: String,
    #[serde(default)]
    os_image: String,
    #[serde(default)]
    roles: String,
    #[serde(default, rename = "stack.playbook")]
    stack_playbook: String,
    #[serde(default, rename = "stack.groups")]
    stack_groups: String,
    #[serde(default, rename = "stack.secrets")]
    stack_secrets: String,
    #[serde(default, rename = "stack.members")]
    stack_members: String,
    #[serde(default, rename = "stack.vars")]
    stack_vars: String,
}

/// The members field: one member per line, `name group group… [via=member]`.
fn member_lines(text: &str) -> Result<Vec<catalog::StackMember>, PanelError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let mut member = catalog::StackMember {
            name,
            ..Default::default()
        };
        for w in words {
            match w.strip_prefix("via=") {
                Some(j) if member.jump.is_none() => member.jump = Some(j.to_string()),
                Some(_) => {
                    return Err(PanelError::invalid(
                        "stack.members",
                        format!("{line:?}: one via= per member"),
                    ))
                }
                None => member.groups.push(w.to_string()),
            }
        }
        out.push(member);
    }
    Ok(out)
}

/// The variables field: one `name=value` per line.
fn var_lines(
    text: &str,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, PanelError> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| {
            PanelError::invalid("stack.vars", format!("{line:?} is not name=value"))
        })?;
        out.insert(k.trim().to_string(), serde_json::Value::from(v.trim()));
    }
    Ok(out)
}

/// Names separated by commas or white space.
fn name_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

impl TypeForm {
    fn server_type(&self) -> Result<NewServerType, PanelError> {
        Ok(NewServerType {
            name: self.name.trim().to_string(),
            cpus: int("cpus", &self.cpus)?,
            ram_mb: int("ram_mb", &self.ram_mb)?,
            disk_gb: int("disk_gb", &self.disk_gb)?,
            os_image: self.os_image.trim().to_string(),
            roles: name_list(&self.roles),
            stack: match self.stack_playbook.trim() {
                "" => None,
                playbook => Some(catalog::Stack {
                    playbook: playbook.to_string(),
                    groups: name_list(&self.stack_groups),
                    secrets: name_list(&self.stack_secrets),
                    members: member_lines(&self.stack_members)?,
                    vars: var_lines(&self.stack_vars)?,
                }),
            },
        })
    }
}

async fn type_create(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<TypeForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let new = f.server_type();
    let result = match new {
        Ok(t) => catalog::create(&st.db, &a.principal, &t).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => to("/admin/server-types"),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = types_ctx(&st).await?;
            refused.again(&a, "admin_types.html", ctx, form_json(&f))
        }
    }
}

// ------------------------------------------------------------------- hosts

async fn hosts_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let list = hosts::list(&st.db, &a.principal).await?;
    page(
        &a,
        "admin_hosts.html",
        context! {
            hosts => Value::from(Serde(&list)),
            states => hosts::HostState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        },
    )
}

#[derive(Deserialize)]
struct HostStateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    state: String,
}

async fn host_state(
    State(st): State<AppState>,
    a: Option<Auth>,
    Path(name): Path<String>,
    Form(f): Form<HostStateForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    hosts::set_state(&st.db, &a.principal, &name, &f.state).await?;
    to("/admin/hosts")
}

// ------------------------------------------------------------------- pools

async fn pools_ctx(st: &AppState, a: &Auth) -> Result<Value, UiError> {
    admin_only(a)?;
    let pools = alloc::pool_use(&st.db).await?;
    Ok(context! {
        pools => Value::from(Serde(&pools)),
        pool_types => alloc::POOL_TYPES.to_vec(),
        default_quarantine => st.config.alloc.default_quarantine_secs,
    })
}

async fn pools_page(State(st): State<AppState>, a: Option<Auth>) -> UiResult {
    let a = signed_in(a)?;
    let ctx = pools_ctx(&st, &a).await?;
    page(&a, "admin_pools.html", ctx)
}

#[derive(Deserialize, Serialize)]
struct GenerateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    pool_type: String,
    #[serde(default)]
    cidr4: String,
    #[serde(default)]
    cidr6: String,
    #[serde(default)]
    hostname_pattern: String,
    #[serde(default)]
    count: String,
    #[serde(default)]
    quarantine_secs: String,
}

/// Most addresses one generate makes (the API's limit too).
const MAX_GENERATE: i64 = 100_000;

async fn pool_generate(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<GenerateForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let result = async {
        let cidr4: Option<ipnet::Ipv4Net> = match f.cidr4.trim() {
            "" => None,
            c => Some(c.parse().map_err(|_| {
                PanelError::invalid(
                    "cidr4",
                    format!("{c:?} is not an IPv4 network such as 192.0.2.0/24"),
                )
            })?),
        };
        let cidr6: Option<ipnet::Ipv6Net> = match f.cidr6.trim() {
            "" => None,
            c => Some(c.parse().map_err(|_| {
                PanelError::invalid(
                    "cidr6",
                    format!("{c:?} is not an IPv6 network such as 2001:db8::/64"),
                )
            })?),
        };
        let count = int("count", &f.count)?;
        if !(1..=MAX_GENERATE).contains(&count) {
            return Err(PanelError::invalid(
                "count",
                format!("between 1 and {MAX_GENERATE} addresses at once"),
            ));
        }
        let mut file = alloc::generate(
            f.name.trim(),
            &f.pool_type,
            cidr4,
            cidr6,
            f.hostname_pattern.trim(),
            count as u64,
        )?;
        file.quarantine_secs = match f.quarantine_secs.trim() {
            "" => None,
            q => Some(int("quarantine_secs", q)?),
        };
        alloc::import(
            &st.db,
            &a.principal,
            &file,
            st.config.alloc.default_quarantine_secs,
        )
        .await
    }
    .await;
    match result {
        Ok(_) => to("/admin/pools"),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = pools_ctx(&st, &a).await?;
            refused.again(&a, "admin_pools.html", ctx, form_json(&f))
        }
    }
}

#[derive(Deserialize, Serialize)]
struct ImportForm {
    #[serde(default)]
    csrf: String,
    /// `yaml` or `csv`.
    #[serde(default)]
    format: String,
    #[serde(default)]
    text: String,
    /// For CSV: the pool's name and type.
    #[serde(default)]
    pool: String,
    #[serde(default)]
    pool_type: String,
}

async fn pool_import(
    State(st): State<AppState>,
    a: Option<Auth>,
    Form(f): Form<ImportForm>,
) -> UiResult {
    let a = signed_in(a)?;
    check_csrf(&a, &f.csrf)?;
    let result = async {
        let name = if f.format == "csv" {
            "pasted.csv"
        } else {
            "pasted.yaml"
        };
        let file =
            alloc::parse_pool_file(name, &f.text, Some((f.pool.trim(), f.pool_type.as_str())))
                .map_err(|e| match e {
                    // The file's own errors belong to the text box.
                    PanelError::Invalid { field, message } if field != "pool" => {
                        PanelError::invalid("text", message)
                    }
                    other => other,
                })?;
        alloc::import(
            &st.db,
            &a.principal,
            &file,
            st.config.alloc.default_quarantine_secs,
        )
        .await
    }
    .await;
    match result {
        Ok(_) => to("/admin/pools"),
        Err(e) => {
            let refused = Refused::of(e)?;
            let ctx = pools_ctx(&st, &a).await?;
            let ctx = context! { ..ctx, ..context! { import_open => true } };
            refused.again(&a, "admin_pools.html", ctx, form_json(&f))
        }
    }
}

async fn pool_page(State(st): State<AppState>, a: Option<Auth>, Path(id): Path<i64>) -> UiResult {
    let a = signed_in(a)?;
    let (pool, entries) = alloc::pool_entries(&st.db, &a.principal, id, 2000).await?;
    page(
        &a,
        "admin_pool.html",
        context! { pool => Value::from(Serde(&pool)), entries => Value::from(Serde(&entries)) },
    )
}

// -------------------------------------------------------------------- jobs

#[derive(Deserialize, Default)]
struct JobsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    kind: String,
}

const JOB_STATES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "dead",
    "cancelled",
    "superseded",
];

async fn jobs_page(
    State(st): State<AppState>,
    a: Option<Auth>,
    Query(q): Query<JobsQuery>,
) -> UiResult {
    let a = signed_in(a)?;
    admin_only(&a)?;
    let jobs = st
        .db
        .store()
        .jobs(&JobFilter {
            state: JobState::parse(&q.state),
            kind: Some(q.kind.trim().to_string()).filter(|k| !k.is_empty()),
            limit: Some(200),
            ..JobFilter::default()
        })
        .await?;
    let jobs: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            context! {
                id => j.id, kind => j.kind, queue => j.queue, state => j.state.as_str(),
                attempts => j.attempts, run_at => j.run_at, last_error => j.last_error,
                service_id => crate::services::jobs::service_of(j.serial_key.as_deref()),
            }
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
    let kinds: Vec<&str> = crate::lifecycle::jobs::JobKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    page(
        &a,
        "admin_jobs.html",
        context! { jobs, failures, states => JOB_STATES, state => q.state, kinds, kind => q.kind },
    )
}

// ---------------------------------------------------------------- overview

/// What a platform admin's dashboard adds: the queue's depth, the jobs
/// that failed for good, pool use, and the newest audit entries.
pub(super) async fn overview(st: &AppState, a: &Auth) -> Result<Value, UiError> {
    admin_only(a)?;
    let store = st.db.store();
    let queued = store
        .jobs(&JobFilter {
            state: Some(JobState::Queued),
            limit: Some(1000),
            ..JobFilter::default()
        })
        .await?
        .len();
    let running = store
        .jobs(&JobFilter {
            state: Some(JobState::Running),
            limit: Some(1000),
            ..JobFilter::default()
        })
        .await?
        .len();
    let failures: Vec<_> = store
        .failures()
        .await?
        .into_iter()
        .take(10)
        .map(|f| context! { job_id => f.job_id, kind => f.kind, failed_at => f.failed_at, error => f.error })
        .collect();
    let pools = alloc::pool_use(&st.db).await?;
    let recent = audit::list(
        &st.db,
        &a.principal,
        &AuditFilter::default(),
        Page {
            limit: 10,
            offset: 0,
        },
    )
    .await?;
    Ok(context! {
        queued,
        running,
        failures,
        pools => Value::from(Serde(&pools)),
        audit => Value::from(Serde(&recent.items)),
    })
}
