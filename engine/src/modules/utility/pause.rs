//! `pause`: waits a fixed time on the controller. Runs are non-interactive:
//! a `prompt` without a duration returns at once with a warning.

use std::time::{Duration, Instant};

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::time::timestamp;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Pause;

/// The arguments `pause` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "pause",
    sets: &[&[&["seconds"], &["minutes"], &["prompt"], &["echo"]]],
};

#[async_trait::async_trait]
impl Module for Pause {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        _ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let seconds = a.float(&["seconds"])?;
        let minutes = a.float(&["minutes"])?;
        let prompt = a.string(&["prompt"])?;
        let echo = a.bool(&["echo"], true)?;
        a.finish()?;
        if seconds.is_some() && minutes.is_some() {
            return Err(ModuleError::Args(
                "parameters are mutually exclusive: minutes|seconds (module pause)".into(),
            ));
        }
        let secs = seconds.or(minutes.map(|m| m * 60.0));
        let start_wall = std::time::SystemTime::now();
        let start = Instant::now();
        let mut res = ModuleResult::ok();
        match secs {
            Some(s) if s > 0.0 => tokio::time::sleep(Duration::from_secs_f64(s)).await,
            Some(_) => {}
            None => {
                res.data.insert(
                    "warnings".into(),
                    minijinja::Value::from(vec![format!(
                        "pause with a prompt needs an interactive terminal; not waiting ({})",
                        prompt
                            .clone()
                            .unwrap_or_else(|| "Press enter to continue".into())
                    )]),
                );
            }
        }
        let delta = start.elapsed();
        res.data
            .insert("start".into(), timestamp(start_wall).into());
        res.data.insert(
            "stop".into(),
            timestamp(std::time::SystemTime::now()).into(),
        );
        res.data.insert("delta".into(), (delta.as_secs()).into());
        res.data.insert("user_input".into(), "".into());
        res.data.insert("echo".into(), echo.into());
        res.msg = Some(format!(
            "Paused for {:.2} {}",
            if minutes.is_some() {
                delta.as_secs_f64() / 60.0
            } else {
                delta.as_secs_f64()
            },
            if minutes.is_some() {
                "minutes"
            } else {
                "seconds"
            }
        ));
        Ok(Plan::done(res))
    }

    fn controller_only(&self) -> bool {
        true
    }
}
