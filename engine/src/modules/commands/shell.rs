//! `shell`: runs the user's text through a shell (`/bin/sh` unless
//! `executable` says otherwise). The text is passed as one quoted argument
//! to that shell, so the prelude stays intact.

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::command::RUN_OPT_PARAMS;
use crate::modules::kit::command::{plan_run, run_last, RunOpts};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Shell;

/// The arguments `shell` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "shell",
    sets: &[
        &[
            &["_raw_params"],
            &["cmd"],
            &["executable"],
            &["_uses_shell"],
            &["warn"],
            &["expand_argument_vars"],
        ],
        RUN_OPT_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for Shell {
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
        let opts = RunOpts::parse(&mut a)?;
        // ansible-core's shell action refuses this `command` option at run
        // time (not at load), with this exact message.
        let expand_given = a.has("expand_argument_vars");
        a.ignore(&["_uses_shell", "warn", "expand_argument_vars"]);
        a.finish()?;
        if expand_given {
            return Ok(Plan::done(ModuleResult::failed(
                "Unsupported parameters for (shell) module: expand_argument_vars",
            )));
        }
        let Some(text) = raw.or(cmd) else {
            return Ok(Plan::done(
                ModuleResult::failed("no command given").with("rc", 256),
            ));
        };
        let mut script = opts.prelude();
        script.push_str(&run_last(&format!(
            "{} -c {}",
            quote(executable.as_deref().unwrap_or("/bin/sh")),
            quote(&text)
        )));
        let stdin = opts.stdin_bytes();
        Ok(plan_run(ctx, script, stdin, Value::from(text), opts))
    }

    fn takes_free_form(&self) -> bool {
        true
    }
}
