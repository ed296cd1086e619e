//! `raw`: sends the text to the host's shell as is (no prelude, no quoting);
//! the escape hatch Ansible uses for bootstrapping.

use std::time::SystemTime;

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::command::command_result;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Raw;

/// The arguments `raw` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "raw",
    sets: &[&[&["_raw_params", "cmd"], &["executable"]]],
};

#[async_trait::async_trait]
impl Module for Raw {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let text = a.string(&["_raw_params", "cmd"])?;
        let executable = a.string(&["executable"])?;
        a.finish()?;
        let Some(text) = text else {
            return Ok(Plan::done(
                ModuleResult::failed("no command given").with("rc", 256),
            ));
        };
        let script = match &executable {
            Some(exe) => format!("exec {} -c {}", quote(exe), quote(&text)),
            None => text.clone(),
        };
        // raw has no `creates`: check mode never runs it.
        let preview = async {
            let mut r = ModuleResult::ok().with_msg("skipped in check mode");
            r.skipped = true;
            Ok(r)
        };
        let apply = async move {
            let start = SystemTime::now();
            let out = ctx.run(script, None).await?;
            let end = SystemTime::now();
            // raw keeps output as is (no stripping), like Ansible.
            Ok(command_result(
                out.rc,
                out.stdout_str(),
                out.stderr_str(),
                Value::from(text),
                start,
                end,
                false,
            ))
        };
        Ok(Plan::fused(preview, apply))
    }

    fn takes_free_form(&self) -> bool {
        true
    }
}
