//! `debug`: prints a message or a variable (controller only).

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Debug;

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
        // `var` is an expression; an `!unsafe` one is never evaluated
        // (ansible-core 2.19 refuses it in these words).
        if a.value(&["var"])
            .is_some_and(|v| crate::vars::is_unsafe(&v))
        {
            return Err(ModuleError::Failed(
                "Task failed: Error while resolving `var` expression: \
                 Encountered untrusted template or expression."
                    .into(),
            ));
        }
        // `var` must be text: ansible-core's debug does not convert.
        if let Some(v) = a.value(&["var"]).filter(|v| v.as_str().is_none()) {
            let ty = match v.kind() {
                minijinja::value::ValueKind::Map => Some("dict"),
                minijinja::value::ValueKind::Seq => Some("list"),
                _ => None,
            };
            if let Some(ty) = ty {
                let repr = crate::template::python_repr(&v);
                return Err(ModuleError::Failed(format!(
                    "argument 'var' is of type {ty} and we were unable to convert to \
                     _check_type_str_no_conversion: '{repr}' is not a string and conversion is not allowed"
                )));
            }
        }
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
            // Ansible 2.19 shows template errors in place, and warns.
            let (value, errors) = ctx
                .templar
                .eval_marking_errors(&var, ctx.scope, ctx.origin)?;
            if !errors.is_empty() {
                let n = errors.len();
                let mut w = format!(
                    "Encountered {n} template error{}.",
                    if n == 1 { "" } else { "s" }
                );
                for (i, e) in errors.iter().enumerate() {
                    w.push_str(&format!("\nerror {} - {e}", i + 1));
                }
                res.data.insert("warnings".into(), Value::from(vec![w]));
            }
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
