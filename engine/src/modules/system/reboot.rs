//! `reboot`: restarts the host and waits until it is back.
//!
//! Flow: read the boot id (`boot_time_command`), start the reboot with
//! `shutdown -r` (which returns once the reboot is queued; a connection that
//! dies under it counts as started), then poll through the executor's
//! [`Reconnect`](crate::modules::Reconnect) handle: dial a fresh connection,
//! read the boot id again, and once it differs run `test_command` until it
//! succeeds. The fresh connection replaces the host's pooled one, so the
//! play carries on on the rebooted host. Check mode reports the change and
//! reboots nothing, as Ansible does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, Reconnect, TaskContext};
use crate::shell::quote;
use crate::transport::{Command, Connection, TransportError};

pub struct Reboot;

/// Ansible's message for `shutdown`.
const DEFAULT_MSG: &str = "Reboot initiated by Ansible";
const DEFAULT_BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id";
/// Waits between polls grow by this factor up to [`MAX_POLL_WAIT`].
const FIRST_POLL_WAIT: Duration = Duration::from_millis(500);
const MAX_POLL_WAIT: Duration = Duration::from_secs(5);

/// The task's arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct RebootArgs {
    pub reboot_timeout: Duration,
    pub connect_timeout: Option<Duration>,
    pub pre_reboot_delay: u64,
    pub post_reboot_delay: Duration,
    pub test_command: String,
    pub msg: String,
    pub reboot_command: Option<String>,
    pub boot_time_command: String,
}

impl RebootArgs {
    pub fn parse(args: &Args) -> Result<RebootArgs, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let secs = |v: Option<f64>, name: &str| -> Result<Option<Duration>, ModuleError> {
            match v {
                Some(f) if f < 0.0 || !f.is_finite() => Err(ModuleError::Args(format!(
                    "argument '{name}' of module reboot must be a number of seconds >= 0"
                ))),
                Some(f) => Ok(Some(Duration::from_secs_f64(f))),
                None => Ok(None),
            }
        };
        let reboot_timeout = secs(
            a.float(&["reboot_timeout", "reboot_timeout_sec"])?,
            "reboot_timeout",
        )?
        .unwrap_or(Duration::from_secs(600));
        let connect_timeout = secs(
            a.float(&["connect_timeout", "connect_timeout_sec"])?,
            "connect_timeout",
        )?;
        let pre = secs(
            a.float(&["pre_reboot_delay", "pre_reboot_delay_sec"])?,
            "pre_reboot_delay",
        )?;
        let post = secs(
            a.float(&["post_reboot_delay", "post_reboot_delay_sec"])?,
            "post_reboot_delay",
        )?;
        let r = RebootArgs {
            reboot_timeout,
            connect_timeout,
            pre_reboot_delay: pre.map(|d| d.as_secs()).unwrap_or(0),
            post_reboot_delay: post.unwrap_or_default(),
            test_command: a
                .string(&["test_command"])?
                .unwrap_or_else(|| "whoami".into()),
            msg: a.string(&["msg"])?.unwrap_or_else(|| DEFAULT_MSG.into()),
            reboot_command: a.string(&["reboot_command"])?,
            boot_time_command: a
                .string(&["boot_time_command"])?
                .unwrap_or_else(|| DEFAULT_BOOT_ID.into()),
        };
        // Only meaningful for Ansible's lookup of the shutdown binary.
        a.ignore(&["search_paths"]);
        a.finish()?;
        Ok(r)
    }

    /// The command that starts the reboot. Like Ansible on Linux, the delay
    /// goes to `shutdown` in whole minutes (rounded down).
    pub fn command(&self) -> String {
        match &self.reboot_command {
            Some(c) => c.clone(),
            None => format!(
                "PATH=\"$PATH:/sbin:/usr/sbin:/usr/local/sbin\" shutdown -r +{} {}",
                self.pre_reboot_delay / 60,
                quote(&self.msg)
            ),
        }
    }
}

/// Runs `script` on `conn` with the task's become and environment.
async fn run_on(
    ctx: &TaskContext<'_>,
    conn: &Connection,
    script: &str,
    timeout: Duration,
) -> Result<crate::transport::Output, TransportError> {
    let cmd = Command {
        timeout: Some(timeout),
        ..ctx.command(script)
    };
    conn.exec(&cmd).await
}

/// Why a poll did not see the host back yet.
enum NotYet {
    Unreachable(String),
    SameBoot,
    TestFailed(String),
}

/// The arguments `reboot` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "reboot",
    sets: &[&[
        &["reboot_timeout", "reboot_timeout_sec"],
        &["connect_timeout", "connect_timeout_sec"],
        &["pre_reboot_delay", "pre_reboot_delay_sec"],
        &["post_reboot_delay", "post_reboot_delay_sec"],
        &["test_command"],
        &["msg"],
        &["reboot_command"],
        &["boot_time_command"],
        &["search_paths"],
    ]],
};

#[async_trait::async_trait]
impl Module for Reboot {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let a = RebootArgs::parse(args)?;
        if ctx.conn.is_local() {
            return Ok(Plan::done(
                ModuleResult::failed(
                    "Running reboot with local connection would reboot the control node.",
                )
                .with("rebooted", false)
                .with("elapsed", 0),
            ));
        }
        let planned = ModuleResult::changed(true)
            .with("rebooted", true)
            .with("elapsed", 0);
        Ok(Plan::change(planned, async move {
            let Some(reconnect) = ctx.reconnect_handle() else {
                return Ok(ModuleResult::failed(
                    "reboot needs to reconnect to the host, which this runner cannot do",
                ));
            };
            let cmd_timeout =
                a.connect_timeout.unwrap_or(Duration::from_secs(10)) + Duration::from_secs(20);
            let before = run_on(ctx, ctx.conn, &a.boot_time_command, cmd_timeout).await?;
            let boot_before = before.stdout_str().trim().to_string();
            if before.rc != 0 || boot_before.is_empty() {
                return Ok(ModuleResult::failed(format!(
                    "failed to read the boot time with '{}': rc={} {}",
                    a.boot_time_command,
                    before.rc,
                    before.stderr_str().trim()
                )));
            }

            let start = Instant::now();
            let reboot_cmd = a.command();
            match run_on(ctx, ctx.conn, &reboot_cmd, Duration::from_secs(30)).await {
                Ok(o) if o.rc != 0 => {
                    return Ok(ModuleResult::failed(format!(
                        "Reboot command failed. Error was: '{}, {}'",
                        o.stdout_str().trim(),
                        o.stderr_str().trim()
                    ))
                    .with("rebooted", false));
                }
                // The host may well drop the connection under the command.
                Ok(_) | Err(_) => {}
            }
            if a.pre_reboot_delay >= 60 {
                tokio::time::sleep(Duration::from_secs(a.pre_reboot_delay / 60 * 60)).await;
            }
            if !a.post_reboot_delay.is_zero() {
                tokio::time::sleep(a.post_reboot_delay).await;
            }

            // `reboot_timeout` counts from the moment the reboot is due.
            let deadline = Instant::now() + a.reboot_timeout;
            let mut wait = FIRST_POLL_WAIT;
            loop {
                let Err(last) = poll(ctx, &reconnect, &a, &boot_before, cmd_timeout).await else {
                    break;
                };
                if Instant::now() + wait > deadline {
                    let what = match &last {
                        NotYet::Unreachable(e) => format!("the host to come back ({e})"),
                        NotYet::SameBoot => "the boot id to change".into(),
                        NotYet::TestFailed(e) => format!("the test command: {e}"),
                    };
                    return Ok(ModuleResult::failed(format!(
                        "Timed out after {}s waiting for {what}",
                        a.reboot_timeout.as_secs()
                    ))
                    .with("rebooted", true)
                    .with("elapsed", start.elapsed().as_secs()));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_POLL_WAIT);
            }
            Ok(ModuleResult::changed(true)
                .with("rebooted", true)
                .with("elapsed", start.elapsed().as_secs()))
        }))
    }

    fn reconnects(&self) -> bool {
        true
    }
}

/// One attempt: a fresh connection, a new boot id, a passing test command.
async fn poll(
    ctx: &TaskContext<'_>,
    reconnect: &Arc<dyn Reconnect>,
    a: &RebootArgs,
    boot_before: &str,
    cmd_timeout: Duration,
) -> Result<(), NotYet> {
    // A host that is half-way through shutting down may accept TCP and then
    // never finish the handshake: bound the whole dial.
    let dial = a.connect_timeout.unwrap_or(Duration::from_secs(10));
    let conn = match tokio::time::timeout(
        dial + Duration::from_secs(5),
        reconnect.reconnect(a.connect_timeout),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(NotYet::Unreachable(e.to_string())),
        Err(_) => {
            return Err(NotYet::Unreachable(format!(
                "no answer within {}s",
                dial.as_secs() + 5
            )))
        }
    };
    match run_on(ctx, &conn, &a.boot_time_command, cmd_timeout).await {
        Ok(o) if o.rc == 0 => {
            let now = o.stdout_str().trim().to_string();
            if now.is_empty() || now == boot_before {
                return Err(NotYet::SameBoot);
            }
        }
        Ok(o) => return Err(NotYet::TestFailed(format!("boot time command rc={}", o.rc))),
        Err(e) => return Err(NotYet::Unreachable(e.to_string())),
    }
    match run_on(ctx, &conn, &a.test_command, cmd_timeout).await {
        Ok(o) if o.rc == 0 => Ok(()),
        Ok(o) => Err(NotYet::TestFailed(format!(
            "'{}' rc={} {}",
            a.test_command,
            o.rc,
            o.stderr_str().trim()
        ))),
        Err(e) => Err(NotYet::Unreachable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::Value;

    fn args(pairs: &[(&str, Value)]) -> Args {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn defaults_follow_ansible() {
        let a = RebootArgs::parse(&Args::new()).unwrap();
        assert_eq!(a.reboot_timeout, Duration::from_secs(600));
        assert_eq!(a.test_command, "whoami");
        assert_eq!(a.boot_time_command, DEFAULT_BOOT_ID);
        assert_eq!(
            a.command(),
            "PATH=\"$PATH:/sbin:/usr/sbin:/usr/local/sbin\" shutdown -r +0 'Reboot initiated by Ansible'"
        );
    }

    #[test]
    fn delay_goes_to_shutdown_in_whole_minutes() {
        let a = RebootArgs::parse(&args(&[
            ("pre_reboot_delay", Value::from(150)),
            ("msg", Value::from("bye")),
        ]))
        .unwrap();
        assert!(
            a.command().ends_with("shutdown -r +2 bye"),
            "{}",
            a.command()
        );
        let custom = RebootArgs::parse(&args(&[(
            "reboot_command",
            Value::from("systemctl reboot"),
        )]))
        .unwrap();
        assert_eq!(custom.command(), "systemctl reboot");
    }

    #[test]
    fn rejects_unknown_and_negative_arguments() {
        assert!(RebootArgs::parse(&args(&[("reboot_timeot", Value::from(5))])).is_err());
        assert!(RebootArgs::parse(&args(&[("reboot_timeout", Value::from(-1))])).is_err());
    }
}
