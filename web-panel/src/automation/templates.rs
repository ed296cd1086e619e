//! Job templates: what to run (project, playbook, inventory, credentials,
//! options, survey) and who may run it. Platform admins manage templates;
//! members of a template's groups may see and launch it. [`launch`] checks
//! the survey answers and creates the run with its `template_run` job in
//! one transaction ([`create_run`], which schedules and relaunches use
//! too).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::catalog::{check_name, check_relative, project_on, require_admin, unique};
use super::jobs::TemplateRunJob;
use super::model::*;
use super::survey::{self, Question};
use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::queue;
use crate::store::Tx;
use crate::{execute, fetch_all, fetch_opt, scalar};

/// A template as written by an admin (create and full update).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewTemplate {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub project_id: i64,
    pub playbook: String,
    pub inventory_id: i64,
    #[serde(default)]
    pub limit: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub skip_tags: Option<String>,
    /// YAML: a mapping of variables.
    #[serde(default)]
    pub extra_vars: String,
    #[serde(default)]
    pub check: bool,
    #[serde(default)]
    pub diff: bool,
    #[serde(default = "default_forks")]
    pub forks: i64,
    #[serde(default)]
    pub verbosity: i64,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub survey: Vec<Question>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub credentials: Vec<i64>,
    #[serde(default)]
    pub groups: Vec<i64>,
    #[serde(default)]
    pub notifications: Vec<TemplateNotification>,
    /// Seconds a host must stay unreachable, run after run, before it is
    /// reported as a dead node (0: at the first unreachable run).
    #[serde(default)]
    pub dead_after_secs: i64,
}

/// The longest wait before an unreachable host counts as dead: 30 days.
const MAX_DEAD_AFTER_SECS: i64 = 30 * 24 * 3600;

fn default_forks() -> i64 {
    5
}

fn yes() -> bool {
    true
}

/// A launch: survey answers, and for admins a one-off limit.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct Launch {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub answers: Map<String, Value>,
    #[serde(default)]
    pub limit: Option<String>,
}

/// Extra-vars YAML read into a JSON mapping; an error names the line.
pub fn parse_extra_vars(field: &str, text: &str) -> Result<Map<String, Value>, PanelError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let v: Value = yaml_serde::from_str(text)
        .map_err(|e| PanelError::invalid(field, format!("extra vars are not YAML: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        _ => Err(PanelError::invalid(field, "extra vars must be a mapping")),
    }
}

fn opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

async fn check_template(conn: &mut Conn<'_>, t: &NewTemplate) -> Result<String, PanelError> {
    check_relative("playbook", &t.playbook)?;
    parse_extra_vars("extra_vars", &t.extra_vars)?;
    survey::validate_questions(&t.survey)?;
    if !(1..=500).contains(&t.forks) {
        return Err(PanelError::invalid("forks", "forks is 1 to 500"));
    }
    if !(0..=5).contains(&t.verbosity) {
        return Err(PanelError::invalid("verbosity", "verbosity is 0 to 5"));
    }
    if !(0..=MAX_DEAD_AFTER_SECS).contains(&t.dead_after_secs) {
        return Err(PanelError::invalid(
            "dead_after_secs",
            "0 to 2592000 seconds (30 days)",
        ));
    }
    project_on(conn, t.project_id)
        .await
        .map_err(|_| PanelError::invalid("project_id", "no such project"))?;
    super::catalog::inventory_on(conn, t.inventory_id)
        .await
        .map_err(|_| PanelError::invalid("inventory_id", "no such inventory"))?;
    let mut kinds = Vec::new();
    for c in &t.credentials {
        let kind = scalar!(
            conn,
            CredentialKind,
            "SELECT kind FROM credentials WHERE id = $1",
            *c
        )?
        .ok_or_else(|| PanelError::invalid("credentials", format!("no credential {c}")))?;
        if kind != CredentialKind::VaultPassword && kinds.contains(&kind) {
            return Err(PanelError::invalid(
                "credentials",
                format!("at most one {kind} credential"),
            ));
        }
        kinds.push(kind);
    }
    for g in &t.groups {
        scalar!(conn, i64, "SELECT id FROM user_groups WHERE id = $1", *g)?
            .ok_or_else(|| PanelError::invalid("groups", format!("no group {g}")))?;
    }
    for n in &t.notifications {
        scalar!(
            conn,
            i64,
            "SELECT id FROM notification_targets WHERE id = $1",
            n.target_id
        )?
        .ok_or_else(|| {
            PanelError::invalid(
                "notifications",
                format!("no notification target {}", n.target_id),
            )
        })?;
    }
    serde_json::to_string(&t.survey).map_err(|e| PanelError::Internal(e.to_string()))
}

async fn write_lists(conn: &mut Conn<'_>, id: i64, t: &NewTemplate) -> Result<(), PanelError> {
    execute!(
        conn,
        "DELETE FROM template_credentials WHERE template_id = $1",
        id
    )?;
    execute!(
        conn,
        "DELETE FROM template_groups WHERE template_id = $1",
        id
    )?;
    execute!(
        conn,
        "DELETE FROM template_notifications WHERE template_id = $1",
        id
    )?;
    for c in &t.credentials {
        execute!(
            conn,
            "INSERT INTO template_credentials (template_id, credential_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            id,
            *c
        )?;
    }
    for g in &t.groups {
        execute!(
            conn,
            "INSERT INTO template_groups (template_id, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            id,
            *g
        )?;
    }
    for n in &t.notifications {
        execute!(
            conn,
            "INSERT INTO template_notifications (template_id, target_id, on_success, on_failure, on_drift) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            id,
            n.target_id,
            n.on_success,
            n.on_failure,
            n.on_drift
        )?;
    }
    Ok(())
}

pub(crate) const TEMPLATE_COLS: &str = "id, name, description, project_id, playbook, inventory_id, limit_hosts, \
     tags, skip_tags, extra_vars, check_mode, diff_mode, forks, verbosity, survey, enabled, builtin, \
     dead_after_secs, created_at, updated_at";

pub(crate) async fn template_row(conn: &mut Conn<'_>, id: i64) -> Result<TemplateRow, PanelError> {
    fetch_opt!(
        conn,
        TemplateRow,
        sqlx::AssertSqlSafe(format!(
            "SELECT {TEMPLATE_COLS} FROM job_templates WHERE id = $1"
        )),
        id
    )?
    .ok_or(PanelError::NotFound("job template"))
}

async fn full(conn: &mut Conn<'_>, row: TemplateRow) -> Result<JobTemplate, PanelError> {
    let credentials = fetch_all!(
        conn,
        (i64,),
        "SELECT credential_id FROM template_credentials WHERE template_id = $1 ORDER BY credential_id",
        row.id
    )?
    .into_iter()
    .map(|r| r.0)
    .collect();
    let groups = fetch_all!(
        conn,
        (i64,),
        "SELECT group_id FROM template_groups WHERE template_id = $1 ORDER BY group_id",
        row.id
    )?
    .into_iter()
    .map(|r| r.0)
    .collect();
    let survey = serde_json::from_str(&row.survey)
        .map_err(|e| PanelError::Internal(format!("template {}: survey: {e}", row.id)))?;
    Ok(JobTemplate {
        id: row.id,
        name: row.name,
        description: row.description,
        project_id: row.project_id,
        playbook: row.playbook,
        inventory_id: row.inventory_id,
        limit: row.limit_hosts,
        tags: row.tags,
        skip_tags: row.skip_tags,
        extra_vars: row.extra_vars,
        check: row.check_mode,
        diff: row.diff_mode,
        forks: row.forks,
        verbosity: row.verbosity,
        survey,
        enabled: row.enabled,
        builtin: row.builtin,
        dead_after_secs: row.dead_after_secs,
        credentials,
        groups,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Whether `who` may see and launch template `id`: platform admins, and
/// members of one of its groups.
pub(crate) async fn may_launch(
    conn: &mut Conn<'_>,
    who: &Principal,
    id: i64,
) -> Result<bool, PanelError> {
    if who.is_admin {
        return Ok(true);
    }
    let n = scalar!(
        conn,
        i64,
        "SELECT COUNT(*) FROM template_groups tg JOIN group_members gm ON gm.group_id = tg.group_id \
         WHERE tg.template_id = $1 AND gm.user_id = $2",
        id,
        who.user_id
    )?
    .unwrap_or(0);
    Ok(n > 0)
}

/// The template for someone who may launch it; others learn nothing
/// (404), as for sites.
pub(crate) async fn visible(
    conn: &mut Conn<'_>,
    who: &Principal,
    id: i64,
) -> Result<TemplateRow, PanelError> {
    let row = template_row(conn, id).await?;
    if !may_launch(conn, who, id).await? {
        return Err(PanelError::NotFound("job template"));
    }
    Ok(row)
}

pub async fn create(db: &Db, who: &Principal, t: &NewTemplate) -> Result<JobTemplate, PanelError> {
    require_admin(who)?;
    let name = check_name(&t.name)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let survey = check_template(&mut conn, t).await?;
    let id = scalar!(
        &mut conn,
        i64,
        "INSERT INTO job_templates (name, description, project_id, playbook, inventory_id, limit_hosts, tags, \
         skip_tags, extra_vars, check_mode, diff_mode, forks, verbosity, survey, enabled, dead_after_secs, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $17, $16, $16) RETURNING id",
        name.as_str(),
        t.description.as_str(),
        t.project_id,
        t.playbook.trim(),
        t.inventory_id,
        opt_text(&t.limit),
        opt_text(&t.tags),
        opt_text(&t.skip_tags),
        t.extra_vars.as_str(),
        t.check,
        t.diff,
        t.forks,
        t.verbosity,
        survey,
        t.enabled,
        now,
        t.dead_after_secs
    )
    .map_err(PanelError::from)
    .map_err(unique("job template", &name))?
    .ok_or_else(|| PanelError::Internal("no id returned".into()))?;
    write_lists(&mut conn, id, t).await?;
    let row = template_row(&mut conn, id).await?;
    let tpl = full(&mut conn, row).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("template.create", "job_template", id).after(&tpl),
    )
    .await?;
    tx.commit().await?;
    Ok(tpl)
}

pub async fn update(
    db: &Db,
    who: &Principal,
    id: i64,
    t: &NewTemplate,
) -> Result<JobTemplate, PanelError> {
    require_admin(who)?;
    let name = check_name(&t.name)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let before = template_row(&mut conn, id).await?;
    let before = full(&mut conn, before).await?;
    let survey = check_template(&mut conn, t).await?;
    execute!(
        &mut conn,
        "UPDATE job_templates SET name = $1, description = $2, project_id = $3, playbook = $4, inventory_id = $5, \
         limit_hosts = $6, tags = $7, skip_tags = $8, extra_vars = $9, check_mode = $10, diff_mode = $11, \
         forks = $12, verbosity = $13, survey = $14, enabled = $15, updated_at = $16, dead_after_secs = $18 \
         WHERE id = $17",
        name.as_str(),
        t.description.as_str(),
        t.project_id,
        t.playbook.trim(),
        t.inventory_id,
        opt_text(&t.limit),
        opt_text(&t.tags),
        opt_text(&t.skip_tags),
        t.extra_vars.as_str(),
        t.check,
        t.diff,
        t.forks,
        t.verbosity,
        survey,
        t.enabled,
        now,
        id,
        t.dead_after_secs
    )
    .map_err(PanelError::from)
    .map_err(unique("job template", &name))?;
    write_lists(&mut conn, id, t).await?;
    let row = template_row(&mut conn, id).await?;
    let tpl = full(&mut conn, row).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("template.update", "job_template", id)
            .before(&before)
            .after(&tpl),
    )
    .await?;
    tx.commit().await?;
    Ok(tpl)
}

/// Turns a template on or off (built-in templates are seeded off).
pub async fn set_enabled(
    db: &Db,
    who: &Principal,
    id: i64,
    enabled: bool,
) -> Result<JobTemplate, PanelError> {
    require_admin(who)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    template_row(&mut conn, id).await?;
    execute!(
        &mut conn,
        "UPDATE job_templates SET enabled = $1, updated_at = $2 WHERE id = $3",
        enabled,
        now,
        id
    )?;
    let row = template_row(&mut conn, id).await?;
    let tpl = full(&mut conn, row).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new(
            if enabled {
                "template.enable"
            } else {
                "template.disable"
            },
            "job_template",
            id,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(tpl)
}

pub async fn get(db: &Db, who: &Principal, id: i64) -> Result<JobTemplate, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let row = visible(&mut conn, who, id).await?;
    full(&mut conn, row).await
}

/// The notifications a template asks for (platform admins: the edit form).
pub async fn notifications(
    db: &Db,
    who: &Principal,
    id: i64,
) -> Result<Vec<TemplateNotification>, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    template_row(&mut conn, id).await?;
    Ok(fetch_all!(
        &mut conn,
        TemplateNotification,
        "SELECT target_id, on_success, on_failure, on_drift FROM template_notifications \
         WHERE template_id = $1 ORDER BY target_id",
        id
    )?)
}

pub async fn by_name(db: &Db, who: &Principal, name: &str) -> Result<JobTemplate, PanelError> {
    let id = {
        let mut rc = db.read().await?;
        scalar!(
            &mut rc.conn(),
            i64,
            "SELECT id FROM job_templates WHERE name = $1",
            name
        )?
        .ok_or(PanelError::NotFound("job template"))?
    };
    get(db, who, id).await
}

/// The templates `who` may launch (all, for platform admins).
pub async fn list(db: &Db, who: &Principal) -> Result<Vec<JobTemplate>, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let rows = if who.is_admin {
        fetch_all!(
            &mut conn,
            TemplateRow,
            sqlx::AssertSqlSafe(format!(
                "SELECT {TEMPLATE_COLS} FROM job_templates ORDER BY name"
            ))
        )?
    } else {
        fetch_all!(
            &mut conn,
            TemplateRow,
            sqlx::AssertSqlSafe(format!(
                "SELECT {TEMPLATE_COLS} FROM job_templates WHERE id IN (SELECT tg.template_id FROM template_groups tg \
                 JOIN group_members gm ON gm.group_id = tg.group_id WHERE gm.user_id = $1) ORDER BY name"
            )),
            who.user_id
        )?
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(full(&mut conn, r).await?);
    }
    Ok(out)
}

pub async fn delete(db: &Db, who: &Principal, id: i64) -> Result<(), PanelError> {
    require_admin(who)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let row = template_row(&mut conn, id).await?;
    let active = scalar!(
        &mut conn,
        i64,
        "SELECT COUNT(*) FROM template_runs WHERE template_id = $1 AND status IN ('queued', 'running')",
        id
    )?
    .unwrap_or(0);
    if active > 0 {
        return Err(PanelError::Conflict(format!(
            "template {:?} has {active} run(s) queued or running",
            row.name
        )));
    }
    execute!(&mut conn, "DELETE FROM job_templates WHERE id = $1", id)?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("template.delete", "job_template", id)
            .before(&serde_json::json!({ "name": row.name })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Who starts a run, for [`create_run`].
#[derive(Debug, Clone)]
pub(crate) struct NewRun {
    pub template_id: i64,
    pub launched_by: LaunchedBy,
    pub user: Option<i64>,
    pub schedule_id: Option<i64>,
    pub relaunch_of: Option<i64>,
    pub trigger_job_id: Option<i64>,
    pub limit: Option<String>,
    pub extra_vars: Map<String, Value>,
}

/// Creates a queued run and its `template_run` job in the caller's
/// transaction. Returns the run's id and its job's id.
pub(crate) async fn create_run(tx: &mut Tx, now: i64, r: NewRun) -> Result<(i64, i64), PanelError> {
    let run_id = {
        let mut conn = tx_conn(tx);
        scalar!(
            &mut conn,
            i64,
            "INSERT INTO template_runs (template_id, status, launched_by, launched_user, schedule_id, relaunch_of, \
             trigger_job_id, limit_hosts, extra_vars, created_at) \
             VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            r.template_id,
            r.launched_by,
            r.user,
            r.schedule_id,
            r.relaunch_of,
            r.trigger_job_id,
            r.limit.clone(),
            Value::Object(r.extra_vars.clone()).to_string(),
            now
        )?
        .ok_or_else(|| PanelError::Internal("no id returned".into()))?
    };
    let job = queue::enqueue(tx, TemplateRunJob { run_id }.spec(r.user)).await?;
    let job_id = job.job_id;
    let mut conn = tx_conn(tx);
    execute!(
        &mut conn,
        "UPDATE template_runs SET job_id = $1 WHERE id = $2",
        job_id,
        run_id
    )?;
    Ok((run_id, job_id))
}

/// Launches a template for `who`: checks RBAC, that it is enabled, and the
/// survey answers (a bad one is a field error `survey.<variable>`).
pub async fn launch(db: &Db, who: &Principal, id: i64, l: &Launch) -> Result<Run, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let row = {
        let mut conn = tx_conn(&mut tx);
        visible(&mut conn, who, id).await?
    };
    if !row.enabled {
        return Err(PanelError::Conflict(format!(
            "template {:?} is disabled",
            row.name
        )));
    }
    let questions: Vec<Question> = serde_json::from_str(&row.survey)
        .map_err(|e| PanelError::Internal(format!("template {id}: survey: {e}")))?;
    let vars = survey::answer(&questions, &l.answers)?;
    let limit = match opt_text(&l.limit) {
        Some(_) if !who.is_admin => {
            return Err(PanelError::Forbidden(
                "only platform admins may change a template's limit at launch".into(),
            ))
        }
        other => other,
    };
    let (run_id, _) = create_run(
        &mut tx,
        now,
        NewRun {
            template_id: id,
            launched_by: LaunchedBy::User,
            user: who.actor_id(),
            schedule_id: None,
            relaunch_of: None,
            trigger_job_id: None,
            limit,
            extra_vars: vars,
        },
    )
    .await?;
    {
        let mut conn = tx_conn(&mut tx);
        audit::record(
            &mut conn,
            now,
            who,
            Change::new("template.launch", "job_template", id)
                .after(&serde_json::json!({ "run_id": run_id })),
        )
        .await?;
    }
    tx.commit().await?;
    super::runs::get(db, who, run_id).await
}
