//! `assert`: checks conditions against the host's variables (controller only).

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::template::Condition;

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
        // `that` arrives untemplated. Booleans stay booleans: a failed result
        // quotes the condition as written (`assertion: false`). A string is
        // a condition, `{{ }}` and all (the condition rules decide what a
        // template in it may do), unless it is one whole template that names
        // a list: then the list's items are the conditions, as in
        // ansible-core.
        let condition = |v: &Value| match v.kind() {
            minijinja::value::ValueKind::Bool => Condition::literal(v.is_true()),
            _ if crate::vars::is_unsafe(v) => Condition::untrusted(v.as_str().unwrap_or_default()),
            _ => Condition::expr(
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            ),
        };
        let listed = |v: &Value| -> Result<Vec<Condition>, ModuleError> {
            Ok(v.try_iter()
                .map_err(|_| {
                    ModuleError::Args("'that' must be a string or a list of conditions".into())
                })?
                .map(|c| condition(&c))
                .collect())
        };
        let that: Vec<Condition> = match a.value(&["that"]) {
            None => return Err(a.missing("that")),
            Some(v) if v.kind() == minijinja::value::ValueKind::Bool => vec![condition(&v)],
            Some(v) => match v.as_str() {
                Some(text) => {
                    let whole = text.trim();
                    let list = (whole.starts_with("{{") && whole.ends_with("}}"))
                        .then(|| ctx.templar.render_str(text, ctx.scope, ctx.origin).ok())
                        .flatten()
                        .filter(|l| l.kind() == minijinja::value::ValueKind::Seq);
                    match list {
                        Some(l) => listed(&l)?,
                        None => vec![condition(&v)],
                    }
                }
                None => listed(&v)?,
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
                r.data.insert("assertion".into(), cond.as_value());
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
