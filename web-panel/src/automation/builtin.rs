//! The templates Keel seeds on first start, disabled until an admin turns
//! them on: a project over the panel's own `playbooks/` directory, an
//! inventory of all ready servers, and three templates with a schedule
//! each:
//! - **Nightly re-converge** (`site.yml`, check mode off, 03:00 UTC): hosts
//!   it changes are drift (`drift` notifications);
//! - **Backup check** (`builtin/backup_check.yml`, every 6 h): the newest
//!   file under `backup_dir` is younger than `backup_max_age_hours`;
//! - **Node liveness** (`builtin/node_liveness.yml`, every 5 min): a server
//!   that has not answered over SSH for 10 minutes (three checks in a row) is a dead
//!   node (one `dead_nodes` notification per outage to the template's
//!   failure targets).
//!
//! Seeding is idempotent: each object is found by its `builtin` key or
//! name, so restarts and several nodes starting at once add nothing twice.

use std::path::Path;

use super::model::MissedPolicy;
use crate::db::{tx_conn, Db};
use crate::domain::PanelError;
use crate::{execute, scalar};

/// One seeded template and its schedule.
struct Builtin {
    /// `job_templates.builtin`.
    key: &'static str,
    name: &'static str,
    playbook: &'static str,
    extra_vars: &'static str,
    cron: Option<&'static str>,
    every_secs: Option<i64>,
    /// `job_templates.dead_after_secs`.
    dead_after_secs: i64,
}

const TEMPLATES: &[Builtin] = &[
    Builtin {
        key: "nightly_reconverge",
        name: "Nightly re-converge",
        playbook: "site.yml",
        extra_vars: "",
        cron: Some("0 3 * * *"),
        every_secs: None,
        dead_after_secs: 0,
    },
    Builtin {
        key: "backup_check",
        name: "Backup check",
        playbook: "builtin/backup_check.yml",
        extra_vars: "backup_dir: /var/backups/keel\nbackup_max_age_hours: 26\n",
        cron: None,
        every_secs: Some(6 * 3600),
        dead_after_secs: 0,
    },
    Builtin {
        key: "node_liveness",
        name: "Node liveness",
        playbook: "builtin/node_liveness.yml",
        extra_vars: "",
        cron: None,
        every_secs: Some(300),
        // Down for 10 minutes (three failed checks 5 min apart): a reboot
        // is not an alarm.
        dead_after_secs: 600,
    },
];

pub const PROJECT_NAME: &str = "Keel built-in";
pub const INVENTORY_NAME: &str = "All ready servers";

/// Seeds the built-in objects over `playbooks` (the directory holding
/// `site.yml`). Returns how many templates were added.
pub async fn seed(db: &Db, playbooks: &Path) -> Result<usize, PanelError> {
    let dir = match std::fs::canonicalize(playbooks) {
        Ok(d) if d.join("builtin").is_dir() => d,
        _ => {
            tracing::info!(dir = %playbooks.display(), "no built-in playbooks here; built-in templates not seeded");
            return Ok(0);
        }
    };
    let now = db.now();
    let mut tx = db.begin().await?;
    let mut conn = tx_conn(&mut tx);
    execute!(
        &mut conn,
        "INSERT INTO projects (name, kind, path, created_at, updated_at) VALUES ($1, 'directory', $2, $3, $3) \
         ON CONFLICT (name) DO NOTHING",
        PROJECT_NAME,
        dir.display().to_string(),
        now
    )?;
    let project = scalar!(
        &mut conn,
        i64,
        "SELECT id FROM projects WHERE name = $1",
        PROJECT_NAME
    )?
    .ok_or_else(|| PanelError::Internal("built-in project missing".into()))?;
    execute!(
        &mut conn,
        "INSERT INTO inventories (name, kind, created_at) VALUES ($1, 'panel', $2) ON CONFLICT (name) DO NOTHING",
        INVENTORY_NAME,
        now
    )?;
    let inventory = scalar!(
        &mut conn,
        i64,
        "SELECT id FROM inventories WHERE name = $1",
        INVENTORY_NAME
    )?
    .ok_or_else(|| PanelError::Internal("built-in inventory missing".into()))?;
    let mut added = 0;
    for b in TEMPLATES {
        let exists = scalar!(
            &mut conn,
            i64,
            "SELECT id FROM job_templates WHERE builtin = $1",
            b.key
        )?;
        if exists.is_some() {
            continue;
        }
        let id = scalar!(
            &mut conn,
            i64,
            "INSERT INTO job_templates (name, description, project_id, playbook, inventory_id, extra_vars, \
             enabled, builtin, dead_after_secs, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $9, $9) ON CONFLICT DO NOTHING RETURNING id",
            b.name,
            "Seeded by Keel, disabled until an admin enables it",
            project,
            b.playbook,
            inventory,
            b.extra_vars,
            false,
            b.key,
            now,
            b.dead_after_secs
        )?;
        let Some(id) = id else { continue };
        execute!(
            &mut conn,
            "INSERT INTO template_schedules (template_id, name, cron, every_secs, time_zone, missed, enabled, created_at) \
             VALUES ($1, $2, $3, $4, 'UTC', $5, $6, $7)",
            id,
            b.name,
            b.cron,
            b.every_secs,
            MissedPolicy::Skip,
            true,
            now
        )?;
        added += 1;
    }
    tx.commit().await?;
    Ok(added)
}
