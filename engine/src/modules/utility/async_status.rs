//! `async_status`: where a background job of an `async` task stands
//! (`mode: status`), or its files removed (`mode: cleanup`). The job files
//! are the kit's (`kit/job.rs`); the result has ansible-core's shape: the
//! action's defaults (`started`, `finished`, empty `stdout`/`stderr` and
//! their lines, `ansible_job_id`, `results_file`) with the job's own result
//! merged over them once it is done. The executor polls through
//! [`job_status`] too.

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::job::{self, JobState};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct AsyncStatus;

/// The arguments `async_status` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "async_status",
    sets: &[&[&["jid"], &["mode"]]],
};

#[async_trait::async_trait]
impl Module for AsyncStatus {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let jid = a.string(&["jid"])?;
        let mode = a.string(&["mode"])?.unwrap_or_else(|| "status".into());
        a.finish()?;
        let Some(jid) = jid else {
            return Ok(Plan::done(ModuleResult::failed(
                "missing required arguments: jid",
            )));
        };
        // Reading a job's state changes nothing: it runs in check mode too,
        // as ansible-core's module supports check mode.
        Ok(Plan::done(match mode.as_str() {
            "status" => job_status(ctx, &jid).await?,
            "cleanup" => {
                let erased = job::cleanup(ctx, &jid).await?;
                with_defaults(ModuleResult::ok(), &jid)
                    .with("started", false)
                    .with("erased", erased)
            }
            other => ModuleResult::failed(format!(
                "value of mode must be one of: cleanup, status, got: {other}"
            )),
        }))
    }
}

/// The action's defaults under a result.
fn with_defaults(mut r: ModuleResult, jid: &str) -> ModuleResult {
    let empty = || Value::from(Vec::<String>::new());
    for (k, v) in [
        ("started", Value::from(false)),
        ("finished", Value::from(false)),
        ("stdout", Value::from("")),
        ("stderr", Value::from("")),
        ("stdout_lines", empty()),
        ("stderr_lines", empty()),
    ] {
        r.data.entry(k.to_string()).or_insert(v);
    }
    r.data
        .insert("ansible_job_id".into(), Value::from(jid.to_string()));
    r
}

/// Job `jid`'s state as `async_status` reports it: running, done (its
/// result, `finished: true`), or failed with "could not find job".
pub async fn job_status(ctx: &TaskContext<'_>, jid: &str) -> Result<ModuleResult, ModuleError> {
    let state = job::status(ctx, jid, crate::modules::kit::command::finish_job).await?;
    Ok(match state {
        JobState::Missing { results_file } => {
            with_defaults(ModuleResult::failed("could not find job"), jid)
                .with("started", true)
                .with("finished", true)
                .with("results_file", results_file)
        }
        JobState::Running { results_file } => with_defaults(ModuleResult::ok(), jid)
            .with("started", true)
            .with("finished", false)
            .with("results_file", results_file),
        JobState::Done { results_file, data } => {
            let mut r = job::result_from_json(&data);
            r.data.insert("started".into(), Value::from(true));
            r.data.insert("finished".into(), Value::from(true));
            r.data
                .insert("results_file".into(), Value::from(results_file));
            with_defaults(r, jid)
        }
    })
}
