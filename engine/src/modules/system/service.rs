//! `service`: a service's run state and boot enablement. On a host where
//! systemd is PID 1 it is the [`systemd`](super::systemd) module; otherwise
//! it drives the SysV script `/etc/init.d/<name>` (`status` exit code, or a
//! `pattern` matched with `pgrep -f`) and `update-rc.d` for enablement.
//! One query round trip decides which, and reads the SysV state too.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{apply, state_diff, Query};
use crate::modules::{
    delegate, Args, Module, ModuleError, ModuleRef, ModuleResult, Plan, TaskContext,
};
use crate::shell::quote;

/// `service`, holding the module it hands systemd hosts to: registration
/// passes `systemd` in, so this file needs neither the registry nor its
/// sibling.
pub struct Service {
    pub systemd: ModuleRef,
}

/// The arguments `service` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "service",
    sets: &[&[
        &["name"],
        &["state"],
        &["enabled"],
        &["pattern"],
        &["arguments", "args"],
        &["sleep"],
        &["use"],
        &["runlevel"],
    ]],
};

#[async_trait::async_trait]
impl Module for Service {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.req_string(&["name"])?;
        let state = a.choice(
            &["state"],
            &["reloaded", "restarted", "started", "stopped"],
            None,
        )?;
        let enabled = a.opt_bool(&["enabled"])?;
        let pattern = a.string(&["pattern"])?;
        let arguments = a.string(&["arguments", "args"])?.unwrap_or_default();
        let sleep = a.int(&["sleep"])?;
        let use_ = a.string(&["use"])?.unwrap_or_else(|| "auto".into());
        a.ignore(&["runlevel"]);
        a.finish()?;
        if state.is_none() && enabled.is_none() {
            return Ok(Plan::done(ModuleResult::failed(
                "one of the following is required: state, enabled",
            )));
        }

        let script = format!("/etc/init.d/{name}");
        let qs = quote(&script);
        let mut q = Query::new();
        q.test("systemd", "[ -d /run/systemd/system ]");
        q.test("script", &format!("[ -x {qs} ]"));
        match &pattern {
            Some(p) => q.test("running", &format!("pgrep -f {} >/dev/null", quote(p))),
            None => q.test(
                "running",
                &format!("[ -x {qs} ] && {qs} status >/dev/null 2>&1"),
            ),
        };
        q.test(
            "enabled",
            &format!(
                "ls /etc/rc2.d/S??{n} /etc/rc3.d/S??{n} /etc/rc5.d/S??{n} >/dev/null 2>&1",
                n = quote(&name)
            ),
        );
        q.test("update_rc", "command -v update-rc.d >/dev/null");
        let ans = q.run(ctx).await?;
        let systemd = match use_.as_str() {
            "systemd" => true,
            "sysvinit" | "service" => false,
            _ => ans.yes("systemd"),
        };
        if systemd {
            // On systemd the task is the `systemd` module's, with the same
            // name and wanted state.
            let mut unit = Args::new();
            unit.insert("name".into(), name.clone().into());
            if let Some(s) = state {
                unit.insert("state".into(), s.into());
            }
            if let Some(e) = enabled {
                unit.insert("enabled".into(), e.into());
            }
            return Ok(delegate(self.systemd.clone(), unit, ctx));
        }
        if !ans.yes("script") {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Could not find the requested service {name}: no systemd and no {script}"
            ))));
        }
        let running = ans.yes("running");
        let is_enabled = ans.yes("enabled");
        let mut cmds = Vec::new();
        if let Some(e) = enabled {
            if e != is_enabled {
                if !ans.yes("update_rc") {
                    return Ok(Plan::done(ModuleResult::failed(
                        "cannot change boot enablement: update-rc.d is not installed",
                    )));
                }
                let n = quote(&name);
                cmds.push(if e {
                    format!(
                        "update-rc.d {n} defaults >/dev/null\nupdate-rc.d {n} enable >/dev/null"
                    )
                } else {
                    format!("update-rc.d {n} disable >/dev/null")
                });
            }
        }
        let args_sfx = if arguments.is_empty() {
            String::new()
        } else {
            format!(" {arguments}")
        };
        let action = match state.as_deref() {
            Some("started") if !running => Some("start"),
            Some("stopped") if running => Some("stop"),
            Some("restarted") => Some("restart"),
            Some("reloaded") => Some(if running { "reload" } else { "start" }),
            _ => None,
        };
        if let Some(act) = action {
            if act == "restart" && sleep.is_some() {
                cmds.push(format!(
                    "{qs} stop{args_sfx}\nsleep {}\n{qs} start{args_sfx}",
                    sleep.unwrap_or(0)
                ));
            } else {
                cmds.push(format!("{qs} {act}{args_sfx}"));
            }
        }
        let mut res = ModuleResult::changed(!cmds.is_empty()).with("name", name.clone());
        if let Some(s) = &state {
            res.data.insert("state".into(), s.clone().into());
        }
        if let Some(e) = enabled {
            res.data.insert("enabled".into(), e.into());
        }
        if cmds.is_empty() {
            return Ok(Plan::done(res));
        }
        if ctx.diff {
            res.diff.push(state_diff(
                &name,
                &[
                    ("running", running.to_string()),
                    ("enabled", is_enabled.to_string()),
                ],
                &[
                    (
                        "running",
                        state
                            .as_deref()
                            .map(|s| (s != "stopped").to_string())
                            .unwrap_or(running.to_string()),
                    ),
                    ("enabled", enabled.unwrap_or(is_enabled).to_string()),
                ],
            ));
        }
        Ok(Plan::change(res.clone(), async move {
            let mut s = cmds.join("\n");
            s.push('\n');
            if let Err(e) = apply(ctx, &s, None).await? {
                let mut r = ModuleResult::failed(format!(
                    "Unable to {} service {name}: {e}",
                    action.unwrap_or("change")
                ));
                r.data = res.data;
                return Ok(r);
            }
            Ok(res)
        }))
    }
}
