//! The `template_run` job: one run of a job template, from checkout to
//! recap. In order: the run row goes to `running`; a git project is
//! fetched and the run pinned to one commit (recorded before anything
//! else, so every retry of the run uses that commit); the inventory is
//! built (the panel's servers in memory, a project file, or an HTTP URL);
//! the credentials are opened and handed over in memory (the vault
//! password as the engine's keyring, the become password in `RunOptions`,
//! the SSH key as a 0600 file in a 0700 directory that lives only while the
//! run does, since the transport reads keys from files); the playbook runs
//! with its events in the job log (the run's live output, through
//! `output::VaultMask`); then the per-host counts, the PLAY RECAP, the
//! status, each host's outage (`unreachable_hosts`: a host unreachable for
//! the template's `dead_after_secs` is a dead node, reported once) and the
//! notifications it calls for commit in one transaction.
//!
//! A playbook that fails is a finished run (`failed`), not a failed job:
//! the queue retries only what went wrong before the playbook started (a
//! fetch, an HTTP inventory). When those retries run out, `on_failure`
//! marks the run failed with the error and notifies.
//!
//! The engine's vault keyring is process-wide, so runs that carry a vault
//! credential take [`keyring_lock`] for writing (one at a time in a
//! process) and others take it for reading: no run ever sees another
//! run's vault password.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use super::catalog::{inventory_on, open_credential, project_git_url, project_on};
use super::git;
use super::jobs::{AutomationJob, NotifyEvent, NotifyJob, TemplateRunJob};
use super::model::*;
use super::secrets::Secret;
use super::templates::template_row;
use super::{Automation, AutomationError};
use crate::db::{tx_conn, Conn};
use crate::domain::PanelError;
use crate::queue::log::JobLog;
use crate::queue::{self, Failure, Job, JobContext, JobError, JobHandler, RetryPolicy};
use crate::store::{Store, StoreError};
use crate::{execute, fetch_all, fetch_opt, scalar};

/// `template_run`.
pub struct TemplateRunStep(pub Arc<Automation>);

#[async_trait::async_trait]
impl JobHandler for TemplateRunStep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::exponential(
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(120),
        )
        .max_attempts(3)
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let run_id = TemplateRunJob::decode(ctx.payload())?.run_id;
        execute_run(&self.0, run_id, &ctx)
            .await
            .map_err(AutomationError::into_job_error)
    }

    async fn on_failure(
        &self,
        store: &Store,
        job: &Job,
        failure: Failure<'_>,
    ) -> Result<(), StoreError> {
        if let Ok(j) = TemplateRunJob::decode(&job.payload) {
            if let Err(e) = finish_failed(&self.0, j.run_id, failure.error).await {
                tracing::error!(run_id = j.run_id, error = %e, "cannot mark the run failed");
            }
        }
        queue::worker::record_failure(store, job, failure.error).await
    }
}

#[derive(sqlx::FromRow)]
struct RunFacts {
    template_id: i64,
    status: RunStatus,
    revision: Option<String>,
    limit_hosts: Option<String>,
    extra_vars: String,
}

/// The engine's vault keyring is one per process: see the file's doc.
fn keyring_lock() -> &'static tokio::sync::RwLock<()> {
    static LOCK: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(Default::default)
}

/// A private directory for the run's SSH key, removed when dropped.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn private_file(dir: &Path, name: &str, text: &str) -> Result<PathBuf, AutomationError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| AutomationError::io("writing the run's SSH key", e))?;
    let mut t = text.trim_end().to_string();
    t.push('\n');
    f.write_all(t.as_bytes())
        .map_err(|e| AutomationError::io("writing the run's SSH key", e))?;
    Ok(path)
}

/// The credentials of a template, opened.
#[derive(Default)]
struct Opened {
    ssh_key: Option<(Option<String>, Secret, Option<Secret>)>,
    become_password: Option<Secret>,
    vault: Vec<(String, Secret)>,
}

async fn open_credentials(
    a: &Automation,
    conn: &mut Conn<'_>,
    template_id: i64,
) -> Result<Opened, AutomationError> {
    let ids = fetch_all!(
        conn,
        (i64,),
        "SELECT credential_id FROM template_credentials WHERE template_id = $1 ORDER BY credential_id",
        template_id
    )
    .map_err(PanelError::from)?;
    let mut out = Opened::default();
    for (id,) in ids {
        let (cred, sealed) = open_credential(conn, &a.sealer, id).await?;
        match cred.kind {
            CredentialKind::SshKey => {
                out.ssh_key = Some((
                    cred.username,
                    Secret::new(sealed.secret),
                    sealed.passphrase.map(Secret::new),
                ))
            }
            CredentialKind::BecomePassword => {
                out.become_password = Some(Secret::new(sealed.secret))
            }
            CredentialKind::VaultPassword => out.vault.push((
                cred.vault_id
                    .unwrap_or_else(|| keel::vault::DEFAULT_ID.to_string()),
                Secret::new(sealed.secret),
            )),
        }
    }
    Ok(out)
}

/// A run's survey answers as engine variables, every string in them marked
/// `!unsafe` (as AWX marks survey answers): whoever may launch a template
/// types them, and `{{ lookup('pipe', …) }}` in an answer must stay text
/// rather than run on the panel's machine when the playbook reads it. The
/// template's own extra vars, written by platform admins, are templated
/// as usual.
fn answers_as_data(m: &Map<String, Value>) -> keel::vars::VarMap {
    m.iter()
        .map(|(k, v)| {
            let value = keel::template::value_from_json(v);
            (k.clone(), keel::vars::untrusted(&value))
        })
        .collect()
}

/// The template's extra-vars YAML read as the engine reads `-e @file`
/// (YAML 1.1, `!vault` values).
fn yaml_vars(text: &str) -> Result<keel::vars::VarMap, AutomationError> {
    let mut out = keel::vars::VarMap::new();
    if text.trim().is_empty() {
        return Ok(out);
    }
    let docs = keel::yaml::load_str("<template extra vars>", text, &Default::default())
        .map_err(|e| AutomationError::Playbook(e.to_string()))?;
    for d in docs {
        let v = d.to_value();
        if v.kind() != minijinja::value::ValueKind::Map {
            return Err(AutomationError::Playbook(
                "extra vars must be a mapping".into(),
            ));
        }
        for k in v
            .try_iter()
            .map_err(|e| AutomationError::Playbook(e.to_string()))?
        {
            out.insert(k.to_string(), v.get_item(&k).unwrap_or_default());
        }
    }
    Ok(out)
}

/// ansible-playbook's PLAY RECAP, hosts sorted by name.
pub fn recap_text(stats: &[(String, keel::output::HostStats)]) -> String {
    let mut sorted: Vec<&(String, keel::output::HostStats)> = stats.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::from("PLAY RECAP");
    for (h, st) in sorted {
        s.push('\n');
        s.push_str(&format!(
            "{:<26} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={:<4} rescued={:<4} ignored={:<4}",
            h, st.ok, st.changed, st.unreachable, st.failed, st.skipped, st.rescued, st.ignored
        ));
    }
    s
}

async fn execute_run(a: &Automation, run_id: i64, ctx: &JobContext) -> Result<(), AutomationError> {
    let db = &a.db;
    let facts = {
        let mut rc = db.read().await?;
        fetch_opt!(
            &mut rc.conn(),
            RunFacts,
            "SELECT template_id, status, revision, limit_hosts, extra_vars FROM template_runs WHERE id = $1",
            run_id
        )
        .map_err(PanelError::from)?
    };
    let Some(facts) = facts else {
        return Ok(()); // the template and its runs were deleted
    };
    if facts.status.is_finished() {
        return Ok(());
    }
    let now = db.now();
    {
        let mut tx = db.begin().await?;
        let mut conn = tx_conn(&mut tx);
        execute!(
            &mut conn,
            "UPDATE template_runs SET status = 'running', started_at = COALESCE(started_at, $1) WHERE id = $2",
            now,
            run_id
        )
        .map_err(PanelError::from)?;
        tx.commit().await?;
    }
    let log = JobLog::open(ctx).await.map_err(PanelError::from)?;
    ctx.set_output_ref(format!("job_log:{}", ctx.job.id));
    let out = run_with_log(a, run_id, &facts, ctx, &log).await;
    if let Err(e) = &out {
        log.message(format!("run {run_id}: {e}"));
    }
    let _ = log.close().await;
    out
}

async fn run_with_log(
    a: &Automation,
    run_id: i64,
    facts: &RunFacts,
    ctx: &JobContext,
    log: &JobLog,
) -> Result<(), AutomationError> {
    let db = &a.db;
    let (tpl, project, git_url, inv_src, opened, deploy_key) = {
        let mut rc = db.read().await?;
        let mut conn = rc.conn();
        let tpl = template_row(&mut conn, facts.template_id).await?;
        let project = project_on(&mut conn, tpl.project_id).await?;
        let git_url = project_git_url(&mut conn, tpl.project_id).await?;
        let inv = inventory_on(&mut conn, tpl.inventory_id).await?;
        let opened = open_credentials(a, &mut conn, tpl.id).await?;
        let deploy_key = match project.deploy_key {
            Some(k) => Some(Secret::new(
                open_credential(&mut conn, &a.sealer, k).await?.1.secret,
            )),
            None => None,
        };
        (tpl, project, git_url, inv, opened, deploy_key)
    };
    log.message(format!(
        "run {run_id} of template {:?} (project {:?})",
        tpl.name, project.name
    ));

    // The project's files, pinned to one commit for the whole run.
    let dir_of = |p: &Project| -> Result<PathBuf, AutomationError> {
        Ok(PathBuf::from(p.path.clone().ok_or_else(|| {
            AutomationError::Playbook(format!("project {:?} has no directory", p.name))
        })?))
    };
    let (root, revision) = match project.kind {
        ProjectKind::Directory => (dir_of(&project)?, None),
        ProjectKind::Git => {
            let url = git_url.clone().unwrap_or_default();
            let repo = git::Repo {
                outbound: &a.provisioner.outbound,
                project_id: project.id,
                url: &url,
                git_ref: project.git_ref.as_deref(),
                deploy_key: deploy_key.as_ref(),
            };
            let (dir, sha) = git::checkout(&a.data_dir, &repo, facts.revision.as_deref()).await?;
            let mut tx = db.begin().await?;
            let mut conn = tx_conn(&mut tx);
            execute!(
                &mut conn,
                "UPDATE template_runs SET revision = $1 WHERE id = $2 AND revision IS NULL",
                sha.as_str(),
                run_id
            )
            .map_err(PanelError::from)?;
            execute!(
                &mut conn,
                "UPDATE projects SET revision = $1 WHERE id = $2",
                sha.as_str(),
                project.id
            )
            .map_err(PanelError::from)?;
            tx.commit().await?;
            log.message(format!("project {:?} at commit {sha}", project.name));
            (dir, Some(sha))
        }
    };
    let playbook_path = root.join(&tpl.playbook);

    // The project's requirements, installed once per commit (a directory
    // project: at every run), what the installer says in the run's log.
    let deps = {
        let log = log.clone();
        super::requirements::install(
            &a.data_dir,
            project.id,
            revision.as_deref(),
            &root,
            move |line| log.message(git::redact(&line)),
        )
        .await?
    };

    // Vault secrets are process-wide in the engine: hold the keyring for
    // the whole run (exclusively when this run brings secrets).
    let _keyring = if opened.vault.is_empty() {
        Keyring::Shared(keyring_lock().read().await)
    } else {
        let guard = keyring_lock().write().await;
        let secrets = opened
            .vault
            .iter()
            .map(|(id, pw)| {
                keel::vault::VaultSecret::new(id.clone(), pw.expose().as_bytes().to_vec())
            })
            .collect();
        keel::vault::install(keel::vault::Keyring::of(secrets));
        Keyring::Exclusive(guard)
    };

    // The inventory.
    let mut inventory = match inv_src.kind {
        InventoryKind::Panel => {
            let data = a.panel_inventory(&inv_src).await?;
            keel::inventory::Inventory::from_json(data)
                .map_err(|d| AutomationError::Inventory(d.to_string()))?
        }
        InventoryKind::ProjectFile => {
            let src_root = match inv_src.project_id {
                Some(pid) if pid != project.id => {
                    let other = {
                        let mut rc = db.read().await?;
                        project_on(&mut rc.conn(), pid).await?
                    };
                    if other.kind != ProjectKind::Directory {
                        return Err(AutomationError::Inventory(format!(
                            "the inventory's project {:?} is not the template's; only a directory project can lend a file",
                            other.name
                        )));
                    }
                    dir_of(&other)?
                }
                _ => root.clone(),
            };
            let path = src_root.join(inv_src.path.as_deref().unwrap_or(""));
            keel::inventory::Inventory::load_async(
                vec![path.display().to_string()],
                Default::default(),
            )
            .await
            .map_err(|d| AutomationError::Inventory(d.to_string()))?
        }
        InventoryKind::Http => {
            let url = inv_src.url.clone().unwrap_or_default();
            let data = fetch_http_inventory(&a.provisioner.outbound, &url).await?;
            keel::inventory::Inventory::from_json(data)
                .map_err(|d| AutomationError::Inventory(d.to_string()))?
        }
    };
    if let Some(dir) = playbook_path.parent() {
        inventory
            .add_vars_dir(dir)
            .map_err(|d| AutomationError::Inventory(d.to_string()))?;
    }
    // As ansible-playbook (and so AWX): a limit that leaves none of the
    // inventory's hosts fails the run before anything runs.
    let limit = facts.limit_hosts.clone().or(tpl.limit_hosts.clone());
    let check = inventory
        .check_host_list(limit.as_deref())
        .map_err(|d| AutomationError::Inventory(d.to_string()))?;
    if check.no_hosts {
        let mut msg = keel::inventory::NO_HOSTS_TO_TARGET.to_string();
        for w in &check.warnings {
            msg.push_str(&format!(" ({w})"));
        }
        return Err(AutomationError::Inventory(msg));
    }

    // Variables: the template's YAML, then the run's survey answers.
    let mut extra = yaml_vars(&tpl.extra_vars)?;
    let answers: Map<String, Value> = serde_json::from_str(&facts.extra_vars).unwrap_or_default();
    extra.extend(answers_as_data(&answers));

    // The SSH key, for the transport, which reads keys from files.
    let mut connection_vars = keel::vars::VarMap::new();
    let _run_dir = match &opened.ssh_key {
        Some((user, key, passphrase)) => {
            use std::os::unix::fs::DirBuilderExt;
            let dir = a
                .data_dir
                .join("runs")
                .join(format!("{run_id}-{}", fastrand::u64(..)));
            std::fs::create_dir_all(a.data_dir.join("runs"))
                .map_err(|e| AutomationError::io("creating the runs directory", e))?;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| AutomationError::io("creating the run's directory", e))?;
            let guard = RunDir(dir.clone());
            let path = private_file(&dir, "id", key.expose())?;
            connection_vars.insert(
                "ansible_ssh_private_key_file".into(),
                minijinja::Value::from(path.display().to_string()),
            );
            if let Some(u) = user {
                connection_vars.insert("ansible_user".into(), minijinja::Value::from(u.clone()));
            }
            if let Some(p) = passphrase {
                connection_vars.insert(
                    "ansible_ssh_private_key_passphrase".into(),
                    minijinja::Value::from(p.expose()),
                );
            }
            Some(guard)
        }
        None => None,
    };

    let roles_path: Vec<PathBuf> = deps.roles.iter().cloned().collect();
    let collections_path: Vec<PathBuf> = deps.collections.iter().cloned().collect();
    let resolve = keel::playbook::ResolveOptions {
        extra_vars: extra.clone(),
        roles_path: roles_path.clone(),
        collections_path: collections_path.clone(),
        ..Default::default()
    };
    let pb_path = playbook_path.clone();
    let playbook =
        tokio::task::spawn_blocking(move || keel::playbook::load_playbook(&pb_path, &resolve))
            .await
            .map_err(|e| AutomationError::Playbook(e.to_string()))?
            .map_err(|d| AutomationError::Playbook(d.to_string()))?;

    let split = |s: &Option<String>| -> Vec<String> {
        s.as_deref()
            .unwrap_or("")
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let stop = keel::executor::StopSignal::default();
    let opts = keel::executor::RunOptions {
        forks: tpl.forks.clamp(1, 500) as usize,
        check: tpl.check_mode,
        diff: tpl.diff_mode,
        tags: keel::executor::TagSelection {
            only: split(&tpl.tags),
            skip: split(&tpl.skip_tags),
        },
        limit,
        extra_vars: extra,
        verbosity: tpl.verbosity.clamp(0, 5) as u8,
        become_password: opened
            .become_password
            .as_ref()
            .map(|s| s.expose().to_string()),
        connection_vars,
        roles_path,
        collections_path,
        stop: stop.clone(),
        ..Default::default()
    };
    if ctx.cancel.is_cancelled() {
        return Err(AutomationError::Stopped);
    }
    let watcher = {
        let (stop, cancel) = (stop.clone(), ctx.cancel.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.stop();
        })
    };
    let sink: Arc<dyn keel::output::Sink> = Arc::new(keel::output::VaultMask(
        crate::queue::log::EngineSink(log.clone()),
    ));
    let summary = keel::executor::run_playbook(&playbook, inventory, opts, sink).await;
    watcher.abort();
    // The output is stored before the run is marked finished, so whoever
    // follows the run (the run page) has every line, the recap included,
    // by the time it sees the final status. A line the database refused
    // now stays pending and is written when the log closes.
    if let Err(e) = log.flush().await {
        tracing::warn!(run_id, error = %e, "run output not flushed before the run's end");
    }
    if !opened.vault.is_empty() {
        keel::vault::install(keel::vault::Keyring::default());
    }

    if stop.is_stopped() {
        // Cancelled by someone, or the lease was lost: only a cancel ends
        // the run; otherwise the job's next owner runs it again.
        let requested = {
            let mut rc = db.read().await?;
            scalar!(
                &mut rc.conn(),
                i64,
                "SELECT cancel_requested FROM jobs WHERE id = $1",
                ctx.job.id
            )
            .map_err(PanelError::from)?
            .unwrap_or(0)
        };
        if requested != 0 {
            log.message("run cancelled: stopped between two tasks");
            finish(a, run_id, RunStatus::Cancelled, &summary, Some("cancelled")).await?;
            return Err(AutomationError::Cancelled);
        }
        return Err(AutomationError::Stopped);
    }
    let status = if summary.exit_code() == 0 {
        RunStatus::Successful
    } else {
        RunStatus::Failed
    };
    let error = (!summary.errors.is_empty()).then(|| summary.errors.join("; "));
    finish(a, run_id, status, &summary, error.as_deref()).await?;
    Ok(())
}

enum Keyring<'a> {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// Records the end of a run, its hosts and recap, and queues the
/// notifications it calls for, in one transaction.
async fn finish(
    a: &Automation,
    run_id: i64,
    status: RunStatus,
    summary: &keel::executor::RunSummary,
    error: Option<&str>,
) -> Result<(), AutomationError> {
    let now = a.db.now();
    let mut tx = a.db.begin().await?;
    {
        let mut conn = tx_conn(&mut tx);
        execute!(&mut conn, "DELETE FROM run_hosts WHERE run_id = $1", run_id)
            .map_err(PanelError::from)?;
        for (h, s) in &summary.stats {
            execute!(
                &mut conn,
                "INSERT INTO run_hosts (run_id, host, ok, changed, failed, unreachable, skipped, rescued, ignored) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                run_id,
                h.as_str(),
                s.ok as i64,
                s.changed as i64,
                s.failed as i64,
                s.unreachable as i64,
                s.skipped as i64,
                s.rescued as i64,
                s.ignored as i64
            )
            .map_err(PanelError::from)?;
        }
        execute!(
            &mut conn,
            "UPDATE template_runs SET status = $1, recap = $2, exit_code = $3, error = $4, finished_at = $5 \
             WHERE id = $6",
            status,
            recap_text(&summary.stats),
            summary.exit_code() as i64,
            error,
            now,
            run_id
        )
        .map_err(PanelError::from)?;
    }
    let dead = {
        let mut conn = tx_conn(&mut tx);
        track_outages(&mut conn, run_id, now, &summary.stats).await?
    };
    let changed = summary.stats.iter().any(|(_, s)| s.changed > 0);
    let mut events = Vec::new();
    match status {
        RunStatus::Successful => events.push(NotifyEvent::Success),
        RunStatus::Failed => events.push(NotifyEvent::Failure),
        _ => {}
    }
    if changed && status != RunStatus::Cancelled {
        events.push(NotifyEvent::Drift);
    }
    if !dead.is_empty() {
        tracing::warn!(run_id, hosts = ?dead, "dead nodes: unreachable for the template's threshold");
        events.push(NotifyEvent::DeadNodes);
    }
    queue_notifications(&mut tx, run_id, &events).await?;
    tx.commit().await?;
    Ok(())
}

/// Keeps each host's outage for the run's template and returns the hosts
/// that became dead nodes with this run.
///
/// A dead node is a host the template's runs have found unreachable, run
/// after run, for at least the template's `dead_after_secs` (0: the first
/// unreachable run counts). An outage starts at the first run that cannot
/// reach the host and ends at the first run that reaches it again; a run
/// that does not include the host (a limit) changes nothing. Each outage is
/// reported once, by the run that crosses the threshold, so a template
/// scheduled every few minutes does not repeat the alarm.
async fn track_outages(
    conn: &mut Conn<'_>,
    run_id: i64,
    now: i64,
    stats: &[(String, keel::output::HostStats)],
) -> Result<Vec<String>, AutomationError> {
    let Some((template_id, dead_after_secs)) = fetch_opt!(
        conn,
        (i64, i64),
        "SELECT t.id, t.dead_after_secs FROM template_runs r JOIN job_templates t ON t.id = r.template_id \
         WHERE r.id = $1",
        run_id
    )
    .map_err(PanelError::from)?
    else {
        return Ok(Vec::new());
    };
    for (host, s) in stats {
        if s.unreachable > 0 {
            execute!(
                conn,
                "INSERT INTO unreachable_hosts (template_id, host, since, last_run_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (template_id, host) DO UPDATE SET last_run_id = excluded.last_run_id",
                template_id,
                host.as_str(),
                now,
                run_id
            )
            .map_err(PanelError::from)?;
        } else {
            execute!(
                conn,
                "DELETE FROM unreachable_hosts WHERE template_id = $1 AND host = $2",
                template_id,
                host.as_str()
            )
            .map_err(PanelError::from)?;
        }
    }
    let cutoff = now - dead_after_secs * 1000;
    let due: Vec<String> = fetch_all!(
        conn,
        (String,),
        "SELECT host FROM unreachable_hosts WHERE template_id = $1 AND last_run_id = $2 \
         AND notified_run_id IS NULL AND since <= $3 ORDER BY host",
        template_id,
        run_id,
        cutoff
    )
    .map_err(PanelError::from)?
    .into_iter()
    .map(|r| r.0)
    .collect();
    if !due.is_empty() {
        execute!(
            conn,
            "UPDATE unreachable_hosts SET notified_run_id = $1 WHERE template_id = $2 AND last_run_id = $1 \
             AND notified_run_id IS NULL AND since <= $3",
            run_id,
            template_id,
            cutoff
        )
        .map_err(PanelError::from)?;
    }
    Ok(due)
}

/// Queues a `notify` job per target of the run's template that asked for
/// one of `events` (dead nodes go to the failure targets).
pub(crate) async fn queue_notifications(
    tx: &mut crate::store::Tx,
    run_id: i64,
    events: &[NotifyEvent],
) -> Result<(), AutomationError> {
    let targets = {
        let mut conn = tx_conn(tx);
        fetch_all!(
            &mut conn,
            TemplateNotification,
            "SELECT n.target_id, n.on_success, n.on_failure, n.on_drift FROM template_notifications n \
             JOIN template_runs r ON r.template_id = n.template_id WHERE r.id = $1",
            run_id
        )
        .map_err(PanelError::from)?
    };
    for t in targets {
        for e in events {
            let wanted = match e {
                NotifyEvent::Success => t.on_success,
                NotifyEvent::Failure | NotifyEvent::DeadNodes => t.on_failure,
                NotifyEvent::Drift => t.on_drift,
            };
            if wanted {
                let job = NotifyJob {
                    target_id: t.target_id,
                    run_id,
                    event: *e,
                };
                queue::enqueue(tx, job.spec()).await?;
            }
        }
    }
    Ok(())
}

/// A run whose job died before the playbook finished: failed, with the
/// error, and its failure notifications.
async fn finish_failed(a: &Automation, run_id: i64, error: &str) -> Result<(), AutomationError> {
    let now = a.db.now();
    let mut tx = a.db.begin().await?;
    let n = {
        let mut conn = tx_conn(&mut tx);
        execute!(
            &mut conn,
            "UPDATE template_runs SET status = 'failed', error = $1, finished_at = $2 \
             WHERE id = $3 AND status IN ('queued', 'running')",
            error,
            now,
            run_id
        )
        .map_err(PanelError::from)?
    };
    if n > 0 {
        queue_notifications(&mut tx, run_id, &[NotifyEvent::Failure]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// An HTTP inventory's `--list` JSON, fetched by the panel itself through
/// the SSRF guard (`outbound`: every hop's address checked, at most 3
/// redirects) rather than by the engine's client, which knows no policy.
/// As with a dynamic inventory script, a document without
/// `_meta.hostvars` has each host's variables fetched from `?host=NAME`.
async fn fetch_http_inventory(
    outbound: &crate::outbound::Outbound,
    url: &str,
) -> Result<Value, AutomationError> {
    let fail = |e: String| AutomationError::InventoryFetch(format!("inventory URL: {e}"));
    outbound.check_literal(url)?;
    let client = outbound
        .client(std::time::Duration::from_secs(30), 3)
        .map_err(|e| fail(e.to_string()))?;
    async fn get(client: &reqwest::Client, url: &str) -> Result<Value, AutomationError> {
        let fail = |e: String| AutomationError::InventoryFetch(format!("inventory URL: {e}"));
        let resp = client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                if let Some(r) = crate::outbound::refusal(&e) {
                    return AutomationError::Refused(r);
                }
                let mut s = e.to_string();
                let mut cur = std::error::Error::source(&e);
                while let Some(inner) = cur {
                    s.push_str(": ");
                    s.push_str(&inner.to_string());
                    cur = inner.source();
                }
                fail(s)
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(format!("answered {status}")));
        }
        resp.json::<Value>()
            .await
            .map_err(|e| fail(format!("not inventory JSON: {e}")))
    }
    let mut data = get(&client, url).await?;
    let has_meta = data.pointer("/_meta/hostvars").is_some();
    if !has_meta {
        let names: Vec<String> = keel::inventory::Inventory::from_json(data.clone())
            .map_err(|d| AutomationError::Inventory(d.to_string()))?
            .hosts
            .into_keys()
            .collect();
        let mut hostvars = Map::new();
        for name in names {
            let mut u = reqwest::Url::parse(url).map_err(|e| fail(e.to_string()))?;
            u.query_pairs_mut().append_pair("host", &name);
            hostvars.insert(name, get(&client, u.as_str()).await?);
        }
        if let Value::Object(m) = &mut data {
            m.insert("_meta".into(), serde_json::json!({ "hostvars": hostvars }));
        }
    }
    Ok(data)
}
