//! `slurp`: reads a remote file into the result, base64-encoded.

use base64::Engine;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::Query;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Slurp;

/// The arguments `slurp` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "slurp",
    sets: &[&[&["src", "path"]]],
};

#[async_trait::async_trait]
impl Module for Slurp {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let src = a.req_string(&["src", "path"])?;
        a.finish()?;
        let mut probe = Query::new();
        probe.stat("p", &src, true, None).content_expr(&quote(&src));
        let q = probe.run_checked(ctx).await?;
        let st = q.stat("p");
        if !st.exists {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "file not found: {src}"
            ))));
        }
        if st.is_dir() {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "source is a directory and must be a file: {src}"
            ))));
        }
        let Some(content) = q.content() else {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "file is not readable: {src}"
            ))));
        };
        Ok(Plan::done(
            ModuleResult::ok()
                .with(
                    "content",
                    base64::engine::general_purpose::STANDARD.encode(&content),
                )
                .with("encoding", "base64")
                .with("source", src),
        ))
    }
}
