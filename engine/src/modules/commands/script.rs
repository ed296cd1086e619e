//! `script`: runs a controller-side script on the host. The body travels on
//! stdin into a private temp file that is executed (honouring its `#!` line,
//! or `executable`) and removed, all in one round trip.

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::command::{plan_run, RunOpts, RunStyle};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Script;

/// The arguments `script` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "script",
    sets: &[&[
        &["_raw_params"],
        &["cmd"],
        &["executable"],
        &["chdir"],
        &["creates"],
        &["removes"],
        &["decrypt"],
    ]],
};

#[async_trait::async_trait]
impl Module for Script {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let raw = a.string(&["_raw_params"])?;
        let cmd = a.string(&["cmd"])?;
        let executable = a.string(&["executable"])?;
        let chdir = a.string(&["chdir"])?;
        let creates = a.string(&["creates"])?;
        let removes = a.string(&["removes"])?;
        a.ignore(&["decrypt"]);
        a.finish()?;
        let line = match (raw, cmd) {
            (Some(_), Some(_)) => {
                return Ok(Plan::done(ModuleResult::failed(
                    "parameters are mutually exclusive: _raw_params|cmd",
                )))
            }
            (Some(l), None) | (None, Some(l)) => l,
            (None, None) => {
                return Ok(Plan::done(ModuleResult::failed(
                    "one of the following is required: _raw_params, cmd",
                )))
            }
        };
        let words = shell_words::split(&line)
            .map_err(|e| ModuleError::Args(format!("cannot split script line {line:?}: {e}")))?;
        let Some((name, rest)) = words.split_first() else {
            return Ok(Plan::done(
                ModuleResult::failed("no script given").with("rc", 256),
            ));
        };
        let Some(path) = ctx.find_file("files", name) else {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Could not find or access '{name}' on the controller"
            ))));
        };
        let body = std::fs::read(&path)
            .map_err(|e| ModuleError::Failed(format!("cannot read {}: {e}", path.display())))?;
        let opts = RunOpts {
            chdir,
            creates,
            removes,
            strip_empty_ends: true,
            style: RunStyle::ScriptAction,
            ..Default::default()
        };
        let mut script = opts.prelude();
        script.push_str("kt=$(mktemp) || exit 1\ncat > \"$kt\"\nchmod 700 \"$kt\"\n");
        let mut run = String::new();
        match &executable {
            Some(exe) => {
                run.push_str(&quote(exe));
                run.push_str(" \"$kt\"");
            }
            None if body.starts_with(b"#!") => run.push_str("\"$kt\""),
            None => run.push_str("/bin/sh \"$kt\""),
        }
        for w in rest {
            run.push(' ');
            run.push_str(&quote(w));
        }
        script.push_str(&format!(
            "{run} </dev/null\nkrc=$?\nrm -f -- \"$kt\"\nexit $krc\n"
        ));
        let plan = plan_run(ctx, script, Some(body), Value::from(line.clone()), opts);
        Ok(plan.map(|r| {
            r.data.shift_remove("cmd");
        }))
    }

    fn takes_free_form(&self) -> bool {
        true
    }
}
