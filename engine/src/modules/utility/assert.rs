//! `assert`: checks conditions against the host's variables (controller only).

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Assert;

/// The arguments `assert` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "assert",
    sets: &[&[
        &["that"],
        &["fail_msg", "msg"],
        &["success_msg"],
        &["quiet"],
    ]],
};

#[async_trait::async_trait]
impl Module for Assert {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let that = match a.value(&["that"]) {
            None => return Err(a.missing("that")),
            Some(v) => match v.as_str() {
                Some(s) => vec![s.to_string()],
                // A templated `that` ("{{ x is none }}") arrives as a bool.
                None if v.kind() == minijinja::value::ValueKind::Bool => {
                    vec![if v.is_true() { "True" } else { "False" }.to_string()]
                }
                None => v
                    .try_iter()
                    .map_err(|_| {
                        ModuleError::Args("'that' must be a string or a list of conditions".into())
                    })?
                    .map(|c| {
                        c.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| c.to_string())
                    })
                    .collect(),
            },
        };
        let fail_msg = a.value(&["fail_msg", "msg"]);
        let success_msg = a.value(&["success_msg"]);
        let quiet = a.bool(&["quiet"], false)?;
        a.finish()?;

        for cond in &that {
            if !ctx
                .templar
                .eval_conditions(std::slice::from_ref(cond), ctx.scope, ctx.origin)?
            {
                let mut r = ModuleResult::failed(
                    fail_msg
                        .as_ref()
                        .and_then(|m| m.as_str().map(str::to_string))
                        .unwrap_or_else(|| "Assertion failed".into()),
                );
                if let Some(m) = fail_msg.filter(|m| m.as_str().is_none()) {
                    r.data.insert("msg".into(), m);
                }
                r.data.insert("assertion".into(), Value::from(cond.clone()));
                r.data.insert("evaluated_to".into(), Value::from(false));
                return Ok(Plan::done(r));
            }
        }
        let mut r = ModuleResult::ok();
        if !quiet {
            r.msg = Some(
                success_msg
                    .as_ref()
                    .and_then(|m| m.as_str().map(str::to_string))
                    .unwrap_or_else(|| "All assertions passed".into()),
            );
        }
        Ok(Plan::done(r))
    }

    fn controller_only(&self) -> bool {
        true
    }
}
