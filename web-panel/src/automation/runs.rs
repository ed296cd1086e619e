//! Runs: the history of every template's executions, as the API and pages
//! show them (filters, the per-host table, the PLAY RECAP), and the actions
//! on one run: relaunch (optionally on its failed and unreachable hosts
//! only) and cancel. A run is visible to whoever may launch its template.
//! The run itself is `run_job.rs`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::model::*;
use super::templates::{create_run, may_launch, template_row, NewRun};
use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{Page, Paged, PanelError, Principal};
use crate::{fetch_all, fetch_opt, scalar};

const RUN_SELECT: &str = "SELECT r.id, r.template_id, t.name AS template_name, r.job_id, r.status, r.revision, \
     r.launched_by, r.launched_user, u.name AS launched_user_name, r.schedule_id, r.relaunch_of, r.limit_hosts, \
     r.recap, r.error, r.exit_code, r.created_at, r.started_at, r.finished_at \
     FROM template_runs r JOIN job_templates t ON t.id = r.template_id LEFT JOIN users u ON u.id = r.launched_user";

/// Filters of the runs list; empty fields match everything.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct RunFilter {
    pub template_id: Option<i64>,
    pub status: Option<RunStatus>,
    pub launched_by: Option<LaunchedBy>,
}

impl RunFilter {
    /// Query-string (or form) filters: empty means "any"; a bad value is a field error.
    pub fn parse(
        template_id: Option<&str>,
        status: Option<&str>,
        launched_by: Option<&str>,
    ) -> Result<RunFilter, PanelError> {
        let some = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(String::from);
        Ok(RunFilter {
            template_id: some(template_id)
                .map(|s| {
                    s.parse()
                        .map_err(|_| PanelError::invalid("template_id", "a number"))
                })
                .transpose()?,
            status: some(status)
                .map(|s| {
                    s.parse::<RunStatus>()
                        .map_err(|e| PanelError::invalid("status", e.to_string()))
                })
                .transpose()?,
            launched_by: some(launched_by)
                .map(|s| {
                    s.parse::<LaunchedBy>()
                        .map_err(|e| PanelError::invalid("launched_by", e.to_string()))
                })
                .transpose()?,
        })
    }
}

pub(crate) async fn run_on(conn: &mut Conn<'_>, id: i64) -> Result<Run, PanelError> {
    fetch_opt!(
        conn,
        Run,
        sqlx::AssertSqlSafe(format!("{RUN_SELECT} WHERE r.id = $1")),
        id
    )?
    .ok_or(PanelError::NotFound("run"))
}

async fn visible_run(conn: &mut Conn<'_>, who: &Principal, id: i64) -> Result<Run, PanelError> {
    let run = run_on(conn, id).await?;
    if !may_launch(conn, who, run.template_id).await? {
        return Err(PanelError::NotFound("run"));
    }
    Ok(run)
}

pub(crate) async fn hosts_on(conn: &mut Conn<'_>, id: i64) -> Result<Vec<RunHost>, PanelError> {
    Ok(fetch_all!(
        conn,
        RunHost,
        "SELECT host, ok, changed, failed, unreachable, skipped, rescued, ignored FROM run_hosts \
         WHERE run_id = $1 ORDER BY host",
        id
    )?)
}

pub async fn get(db: &Db, who: &Principal, id: i64) -> Result<Run, PanelError> {
    let mut rc = db.read().await?;
    visible_run(&mut rc.conn(), who, id).await
}

/// A run with its per-host counts.
pub async fn detail(db: &Db, who: &Principal, id: i64) -> Result<RunDetail, PanelError> {
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let run = visible_run(&mut conn, who, id).await?;
    let hosts = hosts_on(&mut conn, id).await?;
    Ok(RunDetail { run, hosts })
}

/// Newest first, only runs of templates `who` may launch.
pub async fn list(
    db: &Db,
    who: &Principal,
    f: &RunFilter,
    page: Page,
) -> Result<Paged<Run>, PanelError> {
    let page = page.checked()?;
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    // Platform admins see every run; others the runs of their templates.
    let visible = "($4 = 1 OR r.template_id IN (SELECT tg.template_id FROM template_groups tg \
                   JOIN group_members gm ON gm.group_id = tg.group_id WHERE gm.user_id = $5))";
    let cond = format!(
        "WHERE ($1 IS NULL OR r.template_id = $1) AND ($2 IS NULL OR r.status = $2) \
         AND ($3 IS NULL OR r.launched_by = $3) AND {visible}"
    );
    let admin: i64 = who.is_admin.into();
    let status = f.status.map(|s| s.as_str());
    let by = f.launched_by.map(|s| s.as_str());
    let total = scalar!(
        &mut conn,
        i64,
        sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM template_runs r {cond}")),
        f.template_id,
        status,
        by,
        admin,
        who.user_id
    )?
    .unwrap_or(0);
    let items = fetch_all!(
        &mut conn,
        Run,
        sqlx::AssertSqlSafe(format!(
            "{RUN_SELECT} {cond} ORDER BY r.id DESC LIMIT $6 OFFSET $7"
        )),
        f.template_id,
        status,
        by,
        admin,
        who.user_id,
        page.limit,
        page.offset
    )?;
    Ok(Paged {
        items,
        total,
        limit: page.limit,
        offset: page.offset,
    })
}

/// Runs `run_id`'s template again with the same answers; with
/// `failed_only`, limited to the hosts that failed or were unreachable.
pub async fn relaunch(
    db: &Db,
    who: &Principal,
    run_id: i64,
    failed_only: bool,
) -> Result<Run, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let (old, limit, vars) = {
        let mut conn = tx_conn(&mut tx);
        let old = visible_run(&mut conn, who, run_id).await?;
        let row = template_row(&mut conn, old.template_id).await?;
        if !row.enabled {
            return Err(PanelError::Conflict(format!(
                "template {:?} is disabled",
                row.name
            )));
        }
        let limit = if failed_only {
            if !old.status.is_finished() {
                return Err(PanelError::Conflict("the run has not finished yet".into()));
            }
            let failed: Vec<String> = hosts_on(&mut conn, run_id)
                .await?
                .into_iter()
                .filter(|h| h.failed > 0 || h.unreachable > 0)
                .map(|h| h.host)
                .collect();
            if failed.is_empty() {
                return Err(PanelError::Conflict("no host failed in that run".into()));
            }
            Some(failed.join(","))
        } else {
            old.limit_hosts.clone()
        };
        let vars = scalar!(
            &mut conn,
            String,
            "SELECT extra_vars FROM template_runs WHERE id = $1",
            run_id
        )?
        .unwrap_or_default();
        let vars: Map<String, Value> = serde_json::from_str(&vars).unwrap_or_default();
        (old, limit, vars)
    };
    let (new_id, _) = create_run(
        &mut tx,
        now,
        NewRun {
            template_id: old.template_id,
            launched_by: LaunchedBy::Relaunch,
            user: who.actor_id(),
            schedule_id: None,
            relaunch_of: Some(run_id),
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
            Change::new("run.relaunch", "template_run", run_id).after(&serde_json::json!({
                "run_id": new_id,
                "failed_only": failed_only,
            })),
        )
        .await?;
    }
    tx.commit().await?;
    get(db, who, new_id).await
}

/// Cancels a run: a queued one never starts; a running one stops between
/// two tasks. Whoever may launch the template may cancel its runs.
pub async fn cancel(db: &Db, who: &Principal, run_id: i64) -> Result<Run, PanelError> {
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let run = visible_run(&mut conn, who, run_id).await?;
    if run.status.is_finished() {
        return Err(PanelError::Conflict(format!(
            "the run is {} already",
            run.status
        )));
    }
    let job_id = run
        .job_id
        .ok_or_else(|| PanelError::Conflict("the run has no job yet".into()))?;
    // A queued job is cancelled at once, and so is its run; a running one
    // is flagged, and its handler marks the run cancelled when it stops.
    let queued = crate::execute!(
        &mut conn,
        "UPDATE jobs SET state = 'cancelled', finished_at = $1, cancel_requested = 1 WHERE id = $2 AND state = 'queued'",
        now,
        job_id
    )?;
    if queued > 0 {
        crate::execute!(
            &mut conn,
            "UPDATE template_runs SET status = 'cancelled', finished_at = $1 WHERE id = $2 AND status = 'queued'",
            now,
            run_id
        )?;
    } else {
        crate::execute!(
            &mut conn,
            "UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'",
            job_id
        )?;
    }
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("run.cancel", "template_run", run_id),
    )
    .await?;
    tx.commit().await?;
    db.store().poke();
    get(db, who, run_id).await
}
