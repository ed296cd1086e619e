//! `debug`: prints a message or a variable (controller only).

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Debug;

/// What Ansible prints for a variable that does not exist.
pub const NOT_DEFINED: &str = "VARIABLE IS NOT DEFINED!";

/// The arguments `debug` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "debug",
    sets: &[&[&["msg"], &["var"], &["verbosity"]]],
};

#[async_trait::async_trait]
impl Module for Debug {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let msg = a.value(&["msg"]);
        let var = a.string(&["var"])?;
        let verbosity = a.int(&["verbosity"])?.unwrap_or(0);
        a.finish()?;
        if msg.is_some() && var.is_some() {
            return Err(ModuleError::Args(
                "parameters are mutually exclusive: msg|var (module debug)".into(),
            ));
        }
        if verbosity > 0 {
            // The context carries no run verbosity: treat any threshold above
            // the default as not reached, which is what a plain run shows.
            let mut r = ModuleResult::ok().with_msg("verbosity threshold not met");
            r.skipped = true;
            return Ok(Plan::done(r));
        }
        let mut res = ModuleResult::ok();
        if let Some(var) = var {
            let value = match ctx.templar.eval(&var, ctx.scope, ctx.origin) {
                Ok(v) if v.is_undefined() => Value::from(NOT_DEFINED),
                Ok(v) => v,
                Err(e) if e.undefined.is_some() => Value::from(NOT_DEFINED),
                Err(e) => return Err(e.into()),
            };
            res.data.insert(var, value);
            return Ok(Plan::done(res));
        }
        let msg = msg.unwrap_or_else(|| Value::from("Hello world!"));
        if let Some(s) = msg.as_str() {
            res.msg = Some(s.to_string());
        }
        res.data.insert("msg".into(), msg);
        Ok(Plan::done(res))
    }

    fn controller_only(&self) -> bool {
        true
    }
}
