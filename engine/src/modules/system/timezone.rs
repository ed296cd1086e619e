//! `timezone`: the system time zone as `/etc/localtime` (a symlink into
//! `/usr/share/zoneinfo`) and `/etc/timezone`, the Debian way. One query
//! reads both and checks the zone exists; apply relinks and rewrites.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{apply, state_diff, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Timezone;

const ZONEINFO: &str = "/usr/share/zoneinfo/";

/// The arguments `timezone` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "timezone",
    sets: &[&[&["name"], &["hwclock"]]],
};

#[async_trait::async_trait]
impl Module for Timezone {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.string(&["name"])?;
        let hwclock = a.choice(&["hwclock"], &["local", "UTC"], None)?;
        a.finish()?;
        let Some(name) = name else {
            if hwclock.is_some() {
                return Ok(Plan::done(ModuleResult::failed(
                    "hwclock is not supported by keel's timezone module",
                )));
            }
            return Ok(Plan::done(ModuleResult::failed(
                "one of the following is required: name, hwclock",
            )));
        };
        let zone = format!("{ZONEINFO}{name}");
        let mut q = Query::new();
        q.section("link", "readlink /etc/localtime")
            .file("file", "/etc/timezone")
            .test("exists", &format!("[ -f {} ]", quote(&zone)));
        let ans = q.run(ctx).await?;
        let link = ans.trimmed("link");
        let current_link = link
            .rsplit_once("zoneinfo/")
            .map(|(_, z)| z.to_string())
            .unwrap_or_else(|| link.to_string());
        let file = ans
            .file("file")
            .map(|f| f.trim().to_string())
            .unwrap_or_default();
        if !ans.yes("exists") {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "given timezone \"{name}\" is not available"
            ))));
        }
        let mut res = ModuleResult::ok();
        let before = if file.is_empty() {
            current_link.clone()
        } else {
            file.clone()
        };
        if current_link == name && file == name {
            return Ok(Plan::done(res));
        }
        res.changed = true;
        if ctx.diff {
            res.diff.push(state_diff(
                "timezone",
                &[("name", before)],
                &[("name", name.clone())],
            ));
        }
        Ok(Plan::change(res.clone(), async move {
            let mut res = res;
            let script = format!(
                "ln -sfn {} /etc/localtime\nprintf '%s\\n' {} > /etc/timezone\n\
                 if [ -d /run/systemd/system ] && command -v timedatectl >/dev/null; then timedatectl set-timezone {} || true; fi\n",
                quote(&zone),
                quote(&name),
                quote(&name)
            );
            if let Err(e) = apply(ctx, &script, None).await? {
                res = ModuleResult::failed(e);
            }
            Ok(res)
        }))
    }
}
