//! `async` and `poll`: a task that runs as a background job on its host.
//!
//! `command` and `shell` run as real detached processes on the host
//! (`modules/kit/job.rs` launches them, kills them at the time limit, and
//! leaves the job file in `~/.ansible_async`). Other modules that
//! ansible-core runs asynchronously run on the controller instead, in a
//! tokio task of their own, and keep the same job file on the host up to
//! date, so `async_status` reads every job the same way; the run waits for
//! such jobs before it ends, since nothing on the host would finish them.
//! Actions ansible-core refuses to run asynchronously fail as it does.
//!
//! With `poll: 0` the task registers the started job; otherwise the task
//! checks the job every `poll` seconds until it is done or `async` seconds
//! have passed, printing ansible-playbook's `ASYNC POLL`/`ASYNC OK`/`ASYNC
//! FAILED` lines, and removes the job file when it is done.
//!
//! It sits beside `task.rs`, which calls it for one attempt of one task on
//! one host.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use minijinja::Value;

use crate::modules::kit::job::{self, AsyncJob};
use crate::modules::utility::async_status::job_status;
use crate::modules::{self, ModuleError, ModuleResult, TaskContext};
use crate::output::Event;
use crate::playbook::plan::Task;
use crate::template::{Scope, TemplateOrigin};
use crate::transport::{Become, Connection};

use super::host::PlayCtx;
use super::result::ExecError;

/// Actions ansible-core's action plugins refuse to run with `async` (their
/// plugins do not declare async support); every other module may.
const NO_ASYNC: &[&str] = &[
    "add_host",
    "assemble",
    "assert",
    "async_status",
    "copy",
    "debug",
    "fail",
    "fetch",
    "gather_facts",
    "group_by",
    "include_vars",
    "pause",
    "raw",
    "reboot",
    "script",
    "set_fact",
    "set_stats",
    "template",
    "unarchive",
    "validate_argument_spec",
    "wait_for_connection",
    "meta",
];

/// Modules whose work is one host command, run as a detached process.
const ON_HOST: &[&str] = &["command", "shell"];

/// A task's `async` and `poll`, resolved for one host.
#[derive(Debug, Clone, Copy)]
pub(super) struct AsyncSpec {
    /// Seconds the job may run.
    pub time_limit: u64,
    /// Seconds between checks; 0 leaves the job running.
    pub poll: u64,
}

/// The task's `async` settings, if it runs asynchronously (`async` > 0).
pub(super) fn spec(
    ctx: &PlayCtx,
    task: &Task,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<Option<AsyncSpec>, ExecError> {
    let Some(a) = &task.async_ else {
        return Ok(None);
    };
    let number = |v: &Value, what: &str| -> Result<u64, ExecError> {
        let r = ctx
            .shared
            .templar
            .render_value(v, scope, origin)
            .map_err(|e| ExecError::Failed(e.to_string()))?;
        if let Ok(n) = i64::try_from(r.clone()) {
            return Ok(n.max(0) as u64);
        }
        r.as_str()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(|n| n.max(0) as u64)
            .ok_or_else(|| {
                ExecError::Failed(format!("{what} must be a number of seconds, got '{r}'"))
            })
    };
    let time_limit = number(a, "async")?;
    if time_limit == 0 {
        return Ok(None);
    }
    let poll = match &task.poll {
        Some(p) => number(p, "poll")?,
        None => ctx.shared.opts.poll_interval,
    };
    Ok(Some(AsyncSpec { time_limit, poll }))
}

/// ansible-core's failure for an action that cannot run in the background,
/// if `action` is one.
pub(super) fn refusal(action: &str) -> Option<String> {
    let short = modules::canonical_name(action);
    NO_ASYNC
        .contains(&short)
        .then(|| format!("This action ({short}) does not support async."))
}

/// Everything a module call needs, owned, so a controller-side job can
/// outlive the task that started it.
pub(super) struct OwnedCall {
    pub module: modules::ModuleRef,
    pub args: modules::Args,
    pub conn: Arc<Connection>,
    pub become_: Option<Become>,
    pub env: Vec<(String, String)>,
    pub check_mode: bool,
    pub diff: bool,
    pub no_log: bool,
    pub search_paths: Vec<PathBuf>,
}

/// Runs one attempt of an `async` task: starts the job, then (unless
/// `poll: 0`) waits for it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    ctx: &PlayCtx,
    task: &Task,
    name: &str,
    mctx: &TaskContext<'_>,
    call: OwnedCall,
    spec: AsyncSpec,
    scope: &Scope,
    origin: &TemplateOrigin,
) -> Result<ModuleResult, ModuleError> {
    let jid = job::new_jid();
    let short = modules::canonical_name(&task.action);
    let started = if ON_HOST.contains(&short) {
        let job = AsyncJob {
            jid: jid.clone(),
            time_limit: spec.time_limit,
        };
        job::ASYNC_JOB
            .scope(job, call.module.run(&call.args, mctx))
            .await?
    } else {
        start_on_controller(ctx, name, &jid, call, spec, scope, origin, mctx).await?
    };
    // Not started (check mode's preview, `creates` said no, a bad argument):
    // the result is the task's.
    if started.failed || !started.data.contains_key("ansible_job_id") || spec.poll == 0 {
        return Ok(started);
    }
    let mut left = spec.time_limit as i64;
    let mut last = None;
    while left > 0 {
        tokio::time::sleep(Duration::from_secs(spec.poll)).await;
        left -= spec.poll as i64;
        let status = job_status(mctx, &jid).await?;
        let finished = status.data.get("finished").is_some_and(|v| v.is_true());
        if finished || status.failed {
            last = Some(status);
            break;
        }
        ctx.shared.sink.emit(&Event::Verbose {
            level: 0,
            message: format!("ASYNC POLL on {name}: jid={jid} started=True finished=False"),
        });
        last = Some(status);
    }
    let done = last
        .as_ref()
        .is_some_and(|s| s.data.get("finished").is_some_and(|v| v.is_true()));
    let (true, Some(status)) = (done, last.clone()) else {
        let mut r = ModuleResult::failed(format!(
            "async task did not complete within the requested time - {}s",
            spec.time_limit
        ));
        if let Some(s) = &last {
            r.data.insert(
                "async_result".into(),
                crate::template::value_from_json(&job::to_json(s)),
            );
        }
        return Ok(r);
    };
    job::cleanup(mctx, &jid).await?;
    let word = if status.failed { "FAILED" } else { "OK" };
    ctx.shared.sink.emit(&Event::Verbose {
        level: 0,
        message: format!("ASYNC {word} on {name}: jid={jid}"),
    });
    Ok(status)
}

/// Runs the module on the controller as job `jid`: the job file on the host
/// says it started; a tokio task runs the module under the time limit and
/// writes its result (or the timeout's) into the job file.
#[allow(clippy::too_many_arguments)]
async fn start_on_controller(
    ctx: &PlayCtx,
    name: &str,
    jid: &str,
    call: OwnedCall,
    spec: AsyncSpec,
    scope: &Scope,
    origin: &TemplateOrigin,
    mctx: &TaskContext<'_>,
) -> Result<ModuleResult, ModuleError> {
    let results_file = job::begin(mctx, jid).await?;
    let templar = ctx.shared.templar.clone();
    let (scope, origin) = (scope.clone(), origin.clone());
    let (host, jid_owned) = (name.to_string(), jid.to_string());
    let handle = tokio::spawn(async move {
        let tctx = TaskContext {
            host: &host,
            conn: &call.conn,
            templar: &templar,
            scope: &scope,
            origin: &origin,
            check_mode: call.check_mode,
            diff: call.diff,
            no_log: call.no_log,
            become_: call.become_.clone(),
            env: call.env.clone(),
            search_paths: &call.search_paths,
            timeout: None,
        };
        let limit = Duration::from_secs(spec.time_limit);
        let result = match tokio::time::timeout(limit, call.module.run(&call.args, &tctx)).await {
            Ok(Ok(r)) => job::to_json(&r),
            Ok(Err(e)) => job::to_json(&ModuleResult::failed(e.to_string())),
            Err(_) => serde_json::json!({"msg": "Timeout exceeded", "failed": true}),
        };
        // A job whose file cannot be written has nowhere to report; the
        // next status check says it is missing.
        let _ = job::write_result(&tctx, &jid_owned, &result).await;
    });
    ctx.shared.async_jobs.lock().push(handle);
    Ok(job::started_result(jid, &results_file))
}
