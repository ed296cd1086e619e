//! Schedules of job templates: a cron expression (read in the schedule's
//! time zone) or an interval, enabled or not, with a missed-fire policy.
//! They fire through the queue's cron claim ([`DbSchedules`], a
//! `queue::cron::ScheduleSource` read at every tick, under the claim name
//! `template_schedule:<id>`), so however many workers tick, each fire time
//! queues one `schedule_fire` job, and that job makes exactly one run
//! (`template_runs.trigger_job_id` is unique). Platform admins manage
//! schedules; the next fire times are computed by the same code the
//! scheduler fires by.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Map;

use super::catalog::{check_name, require_admin};
use super::jobs::{AutomationJob, ScheduleFireJob};
use super::model::*;
use super::survey::{self, Question};
use super::templates::{create_run, parse_extra_vars, template_row, NewRun};
use super::{Automation, AutomationError};
use crate::audit::{self, Change};
use crate::db::{tx_conn, Conn, Db};
use crate::domain::{PanelError, Principal};
use crate::queue::cron::{self, MissedFires, Schedule, ScheduleSource};
use crate::queue::{JobContext, JobError, JobHandler, RetryPolicy};
use crate::store::StoreError;
use crate::{execute, fetch_all, fetch_opt, scalar};

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewSchedule {
    pub template_id: i64,
    pub name: String,
    /// A cron expression (5 fields, or 6-7 with seconds).
    #[serde(default)]
    pub cron: Option<String>,
    /// Or an interval in seconds.
    #[serde(default)]
    pub every_secs: Option<i64>,
    /// An IANA time zone the cron expression is read in (default UTC).
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default = "skip")]
    pub missed: MissedPolicy,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Survey answers for the runs it starts (YAML mapping).
    #[serde(default)]
    pub extra_vars: String,
}

fn utc() -> String {
    "UTC".into()
}
fn skip() -> MissedPolicy {
    MissedPolicy::Skip
}
fn yes() -> bool {
    true
}

/// The claim name of a schedule in the queue's cron tables.
pub fn claim_name(id: i64) -> String {
    format!("template_schedule:{id}")
}

/// A schedule row as the queue's scheduler runs it.
pub fn to_schedule(row: &ScheduleRow) -> Result<Schedule, cron::ScheduleError> {
    let name = claim_name(row.id);
    let job = ScheduleFireJob {
        schedule_id: row.id,
    }
    .spec();
    let tz = cron::time_zone(&name, &row.time_zone)?;
    let s = match (&row.cron, row.every_secs) {
        (Some(expr), None) => Schedule::cron_in(&name, expr, tz, job)?,
        (None, Some(secs)) if secs > 0 => {
            Schedule::interval(&name, Duration::from_secs(secs as u64), job)
        }
        _ => return Err(cron::ScheduleError::NoTiming(name)),
    };
    Ok(s.missed(match row.missed {
        MissedPolicy::Skip => MissedFires::Skip,
        MissedPolicy::RunOnce => MissedFires::RunOnce,
    }))
}

fn check(s: &NewSchedule) -> Result<(), PanelError> {
    let probe = ScheduleRow {
        id: 0,
        template_id: s.template_id,
        name: s.name.clone(),
        cron: s.cron.clone().filter(|c| !c.trim().is_empty()),
        every_secs: s.every_secs,
        time_zone: s.time_zone.clone(),
        missed: s.missed,
        enabled: s.enabled,
        extra_vars: s.extra_vars.clone(),
        created_at: 0,
    };
    to_schedule(&probe).map_err(|e| {
        let field = match e {
            cron::ScheduleError::BadCron { .. } => "cron",
            cron::ScheduleError::BadTimeZone { .. } => "time_zone",
            cron::ScheduleError::NoTiming(_) => "cron",
        };
        PanelError::invalid(field, e.to_string())
    })?;
    parse_extra_vars("extra_vars", &s.extra_vars)?;
    Ok(())
}

const COLS: &str =
    "id, template_id, name, cron, every_secs, time_zone, missed, enabled, extra_vars, created_at";

async fn row_on(conn: &mut Conn<'_>, id: i64) -> Result<ScheduleRow, PanelError> {
    fetch_opt!(
        conn,
        ScheduleRow,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM template_schedules WHERE id = $1"
        )),
        id
    )?
    .ok_or(PanelError::NotFound("schedule"))
}

/// The next `n` fire times after `now`, from the same code that fires.
async fn view(
    conn: &mut Conn<'_>,
    row: ScheduleRow,
    now: i64,
    n: usize,
) -> Result<ScheduleView, PanelError> {
    let mut next_fires = Vec::new();
    if row.enabled {
        if let Ok(s) = to_schedule(&row) {
            let anchor = scalar!(
                conn,
                i64,
                "SELECT anchor_at FROM schedules WHERE name = $1",
                claim_name(row.id)
            )?
            .unwrap_or(now);
            let mut t = now;
            while next_fires.len() < n {
                match s.next_fire(anchor, t) {
                    Some(f) => {
                        next_fires.push(f);
                        t = f;
                    }
                    None => break,
                }
            }
        }
    }
    Ok(ScheduleView {
        schedule: row,
        next_fires,
    })
}

pub async fn create(db: &Db, who: &Principal, s: &NewSchedule) -> Result<ScheduleView, PanelError> {
    require_admin(who)?;
    let name = check_name(&s.name)?;
    check(s)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    template_row(&mut conn, s.template_id)
        .await
        .map_err(|_| PanelError::invalid("template_id", "no such template"))?;
    let id = scalar!(
        &mut conn,
        i64,
        "INSERT INTO template_schedules (template_id, name, cron, every_secs, time_zone, missed, enabled, extra_vars, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        s.template_id,
        name.as_str(),
        s.cron.as_deref().map(str::trim).filter(|c| !c.is_empty()),
        s.every_secs,
        s.time_zone.as_str(),
        s.missed,
        s.enabled,
        s.extra_vars.as_str(),
        now
    )?
    .ok_or_else(|| PanelError::Internal("no id returned".into()))?;
    let row = row_on(&mut conn, id).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("schedule.create", "schedule", id).after(&row),
    )
    .await?;
    let v = view(&mut conn, row, now, 5).await?;
    tx.commit().await?;
    Ok(v)
}

pub async fn update(
    db: &Db,
    who: &Principal,
    id: i64,
    s: &NewSchedule,
) -> Result<ScheduleView, PanelError> {
    require_admin(who)?;
    let name = check_name(&s.name)?;
    check(s)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let before = row_on(&mut conn, id).await?;
    if before.template_id != s.template_id {
        return Err(PanelError::invalid(
            "template_id",
            "a schedule keeps its template",
        ));
    }
    execute!(
        &mut conn,
        "UPDATE template_schedules SET name = $1, cron = $2, every_secs = $3, time_zone = $4, missed = $5, \
         enabled = $6, extra_vars = $7 WHERE id = $8",
        name.as_str(),
        s.cron.as_deref().map(str::trim).filter(|c| !c.is_empty()),
        s.every_secs,
        s.time_zone.as_str(),
        s.missed,
        s.enabled,
        s.extra_vars.as_str(),
        id
    )?;
    let row = row_on(&mut conn, id).await?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("schedule.update", "schedule", id)
            .before(&before)
            .after(&row),
    )
    .await?;
    let v = view(&mut conn, row, now, 5).await?;
    tx.commit().await?;
    Ok(v)
}

pub async fn delete(db: &Db, who: &Principal, id: i64) -> Result<(), PanelError> {
    require_admin(who)?;
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    let before = row_on(&mut conn, id).await?;
    execute!(
        &mut conn,
        "DELETE FROM template_schedules WHERE id = $1",
        id
    )?;
    audit::record(
        &mut conn,
        now,
        who,
        Change::new("schedule.delete", "schedule", id).before(&before),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn get(db: &Db, who: &Principal, id: i64) -> Result<ScheduleView, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let row = row_on(&mut conn, id).await?;
    view(&mut conn, row, db.now(), 5).await
}

/// Every schedule with its next fire times (platform admins).
pub async fn list(db: &Db, who: &Principal) -> Result<Vec<ScheduleView>, PanelError> {
    require_admin(who)?;
    let mut rc = db.read().await?;
    let mut conn = rc.conn();
    let rows = fetch_all!(
        &mut conn,
        ScheduleRow,
        sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM template_schedules ORDER BY name, id"
        ))
    )?;
    let now = db.now();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(view(&mut conn, r, now, 5).await?);
    }
    Ok(out)
}

/// The enabled schedules of enabled templates, for the scheduler's ticks.
pub struct DbSchedules(pub Db);

#[async_trait::async_trait]
impl ScheduleSource for DbSchedules {
    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let mut rc = self.0.read().await.map_err(|e| match e {
            PanelError::Store(s) => s,
            PanelError::Database(d) => StoreError::Database(d),
            other => StoreError::Database(sqlx::Error::Protocol(other.to_string())),
        })?;
        let rows = fetch_all!(
            &mut rc.conn(),
            ScheduleRow,
            "SELECT s.id, s.template_id, s.name, s.cron, s.every_secs, s.time_zone, s.missed, s.enabled, \
             s.extra_vars, s.created_at FROM template_schedules s JOIN job_templates t ON t.id = s.template_id \
             WHERE s.enabled = $1 AND t.enabled = $1 ORDER BY s.id",
            true
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| match to_schedule(r) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(schedule_id = r.id, error = %e, "schedule skipped");
                    None
                }
            })
            .collect())
    }
}

/// `schedule_fire`: the run of one fire.
pub struct ScheduleFireStep(pub Arc<Automation>);

#[async_trait::async_trait]
impl JobHandler for ScheduleFireStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let id = ScheduleFireJob::decode(ctx.payload())?.schedule_id;
        fire(&self.0, id, ctx.job.id)
            .await
            .map_err(AutomationError::into_job_error)
    }
}

async fn fire(a: &Automation, schedule_id: i64, job_id: i64) -> Result<(), AutomationError> {
    let now = a.db.now();
    let mut tx = a.db.begin().await?;
    let (row, questions) = {
        let mut conn = tx_conn(&mut tx);
        // One run per fire job, however often the job runs.
        let done = scalar!(
            &mut conn,
            i64,
            "SELECT COUNT(*) FROM template_runs WHERE trigger_job_id = $1",
            job_id
        )
        .map_err(PanelError::from)?
        .unwrap_or(0);
        if done > 0 {
            return Ok(());
        }
        let Ok(row) = row_on(&mut conn, schedule_id).await else {
            return Ok(()); // deleted since it fired
        };
        let tpl = template_row(&mut conn, row.template_id).await?;
        if !row.enabled || !tpl.enabled {
            return Ok(());
        }
        let questions: Vec<Question> = serde_json::from_str(&tpl.survey).unwrap_or_default();
        (row, questions)
    };
    let answers: Map<String, serde_json::Value> = parse_extra_vars("extra_vars", &row.extra_vars)?;
    let vars = survey::answer(&questions, &answers)?;
    create_run(
        &mut tx,
        now,
        NewRun {
            template_id: row.template_id,
            launched_by: LaunchedBy::Schedule,
            user: None,
            schedule_id: Some(schedule_id),
            relaunch_of: None,
            trigger_job_id: Some(job_id),
            limit: None,
            extra_vars: vars,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
