//! `fail`: fails the task with a message (controller only).

use crate::modules::args::{scalar_string, ModuleArgs};
use crate::modules::{Args, Module, ModuleError, ModuleResult, TaskContext};

pub struct Fail;

#[async_trait::async_trait]
impl Module for Fail {
    async fn run(&self, args: &Args, _ctx: &TaskContext<'_>) -> Result<ModuleResult, ModuleError> {
        let mut a = ModuleArgs::new("fail", args);
        let msg = a.value(&["msg"]);
        a.finish()?;
        let text = match &msg {
            None => "Failed as requested from task".to_string(),
            Some(v) => scalar_string(v).unwrap_or_else(|| v.to_string()),
        };
        Ok(ModuleResult::failed(text))
    }

    fn controller_only(&self) -> bool {
        true
    }
}
