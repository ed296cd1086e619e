//! `fail`: fails the task with a message (controller only).

use crate::modules::args::{scalar_string, ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Fail;

/// The arguments `fail` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "fail",
    sets: &[&[&["msg"]]],
};

#[async_trait::async_trait]
impl Module for Fail {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        _ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let msg = a.value(&["msg"]);
        a.finish()?;
        let text = match &msg {
            None => "Failed as requested from task".to_string(),
            Some(v) => scalar_string(v).unwrap_or_else(|| v.to_string()),
        };
        Ok(Plan::done(ModuleResult::failed(text)))
    }

    fn controller_only(&self) -> bool {
        true
    }
}
