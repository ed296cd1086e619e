//! `ping`: proves the host runs commands (one `echo` round trip).

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Ping;

/// The arguments `ping` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "ping",
    sets: &[&[&["data"]]],
};

#[async_trait::async_trait]
impl Module for Ping {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let data = a.string(&["data"])?.unwrap_or_else(|| "pong".into());
        a.finish()?;
        // ansible-core's ping raises on purpose; 2.19 reports a module's
        // exception this way.
        if data == "crash" {
            return Ok(Plan::done(ModuleResult::failed(
                "Task failed: Module failed: boom",
            )));
        }
        let out = ctx.run("echo pong", None).await?;
        if out.rc != 0 || out.stdout_str().trim() != "pong" {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "the host did not answer as expected (rc={}): {}",
                out.rc,
                out.stderr_str().trim()
            ))));
        }
        Ok(Plan::done(ModuleResult::ok().with("ping", data)))
    }
}
