//! `set_fact`: turns its arguments into host facts. The executor normally
//! handles `set_fact` itself; this module gives the same result when called
//! through the registry.

use crate::modules::args::to_bool;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::vars::VarMap;

pub struct SetFact;

#[async_trait::async_trait]
impl Module for SetFact {
    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        _ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut facts = VarMap::new();
        let mut cacheable = false;
        for (k, v) in args {
            if k == "cacheable" {
                cacheable = to_bool(v)
                    .ok_or_else(|| ModuleError::Args("cacheable must be a boolean".into()))?;
                continue;
            }
            if k == "_raw_params" {
                return Err(ModuleError::Args(
                    "set_fact takes key=value arguments, not a free-form string".into(),
                ));
            }
            if !is_identifier(k) {
                return Err(ModuleError::Args(format!(
                    "The variable name '{k}' is not valid. Variables must start with a letter or underscore character, and contain only letters, numbers and underscores."
                )));
            }
            facts.insert(k.clone(), v.clone());
        }
        if facts.is_empty() {
            return Ok(Plan::done(ModuleResult::failed(
                "No key/value pairs provided, at least one is required for this action to succeed",
            )));
        }
        let mut r = ModuleResult::ok();
        r.data.insert(
            "ansible_facts".into(),
            crate::modules::args::map_value(&facts),
        );
        r.facts = Some(facts);
        r.facts_cacheable = cacheable;
        Ok(Plan::done(r))
    }

    fn controller_only(&self) -> bool {
        true
    }
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}
