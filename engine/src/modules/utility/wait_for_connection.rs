//! `wait_for_connection`: retries a trivial command until the host answers.

use std::time::{Duration, Instant};

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::transport::Command;

pub struct WaitForConnection;

/// The arguments `wait_for_connection` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "wait_for_connection",
    sets: &[&[&["timeout"], &["delay"], &["sleep"], &["connect_timeout"]]],
};

#[async_trait::async_trait]
impl Module for WaitForConnection {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let timeout = a.float(&["timeout"])?.unwrap_or(600.0);
        let delay = a.float(&["delay"])?.unwrap_or(0.0);
        let sleep = a.float(&["sleep"])?.unwrap_or(1.0);
        let connect_timeout = a.float(&["connect_timeout"])?.unwrap_or(5.0);
        a.finish()?;
        let start = Instant::now();
        if delay > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(delay)).await;
        }
        let deadline = start + Duration::from_secs_f64(timeout);
        loop {
            let cmd = Command {
                script: "true".into(),
                timeout: Some(Duration::from_secs_f64(connect_timeout)),
                ..ctx.command("true")
            };
            let last_err = match ctx.conn.exec(&cmd).await {
                Ok(o) if o.rc == 0 => {
                    return Ok(Plan::done(
                        ModuleResult::ok().with("elapsed", start.elapsed().as_secs()),
                    ));
                }
                Ok(o) => format!("rc={} {}", o.rc, o.stderr_str().trim()),
                Err(e) => e.to_string(),
            };
            if Instant::now() + Duration::from_secs_f64(sleep) > deadline {
                return Ok(Plan::done(
                    ModuleResult::failed(format!("timed out waiting for connection: {last_err}"))
                        .with("elapsed", start.elapsed().as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_secs_f64(sleep)).await;
        }
    }
}
