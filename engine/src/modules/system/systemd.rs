//! `systemd` / `systemd_service`: a unit's run state, enablement and mask
//! through `systemctl`.
//!
//! Query: one `systemctl show` + `is-enabled` round trip. [`plan`] turns the
//! observed properties and the wanted state into the `systemctl` commands to
//! run (pure, so its rules are unit-tested); apply runs them in one round
//! trip. `daemon_reload` runs first and never counts as a change.

use std::collections::BTreeMap;

use minijinja::Value;

use crate::modules::args::{dict, ModuleArgs, Params};
use crate::modules::kit::{apply, state_diff, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Systemd;

/// What the task asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitWant {
    pub state: Option<String>,
    pub enabled: Option<bool>,
    pub masked: Option<bool>,
}

/// What `systemctl` reported.
#[derive(Debug, Clone, Default)]
pub struct UnitSeen {
    pub props: BTreeMap<String, String>,
    /// `systemctl is-enabled` succeeded.
    pub enabled: bool,
}

impl UnitSeen {
    fn prop(&self, k: &str) -> &str {
        self.props.get(k).map(String::as_str).unwrap_or("")
    }
    pub fn found(&self) -> bool {
        !matches!(self.prop("LoadState"), "not-found" | "")
            || self.prop("UnitFileState") == "masked"
    }
    pub fn active(&self) -> bool {
        matches!(
            self.prop("ActiveState"),
            "active" | "activating" | "reloading"
        )
    }
    pub fn masked(&self) -> bool {
        self.prop("LoadState") == "masked" || self.prop("UnitFileState") == "masked"
    }
}

/// The `systemctl` verbs (in order) that bring the unit to `want`, each with
/// whether it counts as a change.
pub fn plan(want: &UnitWant, seen: &UnitSeen) -> Vec<&'static str> {
    let mut v = Vec::new();
    if let Some(m) = want.masked {
        if m != seen.masked() {
            v.push(if m { "mask" } else { "unmask" });
        }
    }
    if let Some(e) = want.enabled {
        if e != seen.enabled {
            v.push(if e { "enable" } else { "disable" });
        }
    }
    match want.state.as_deref() {
        Some("started") if !seen.active() => v.push("start"),
        Some("stopped") if seen.active() => v.push("stop"),
        Some("restarted") => v.push("restart"),
        Some("reloaded") => v.push(if seen.active() { "reload" } else { "start" }),
        _ => {}
    }
    v
}

/// `systemctl` with the scope flag.
pub fn systemctl(scope: &str, no_block: bool) -> String {
    let mut s = String::from("systemctl");
    match scope {
        "user" => s.push_str(" --user"),
        "global" => s.push_str(" --global"),
        _ => {}
    }
    if no_block {
        s.push_str(" --no-block");
    }
    s
}

/// The arguments `systemd` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "systemd",
    sets: &[&[
        &["name", "service", "unit"],
        &["state"],
        &["enabled"],
        &["masked"],
        &["daemon_reload", "daemon-reload"],
        &["daemon_reexec", "daemon-reexec"],
        &["scope"],
        &["no_block"],
        &["force"],
    ]],
};

#[async_trait::async_trait]
impl Module for Systemd {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.string(&["name", "service", "unit"])?;
        let want = UnitWant {
            state: a.choice(
                &["state"],
                &["reloaded", "restarted", "started", "stopped"],
                None,
            )?,
            enabled: a.opt_bool(&["enabled"])?,
            masked: a.opt_bool(&["masked"])?,
        };
        let daemon_reload = a.bool(&["daemon_reload", "daemon-reload"], false)?;
        let daemon_reexec = a.bool(&["daemon_reexec", "daemon-reexec"], false)?;
        let scope = a
            .choice(&["scope"], &["system", "user", "global"], Some("system"))?
            .unwrap();
        let no_block = a.bool(&["no_block"], false)?;
        a.ignore(&["force"]);
        a.finish()?;
        let sc = systemctl(&scope, no_block);
        let mut pre = String::new();
        if daemon_reload {
            pre.push_str(&format!("{sc} daemon-reload\n"));
        }
        if daemon_reexec {
            pre.push_str(&format!("{sc} daemon-reexec\n"));
        }
        if pre.is_empty() {
            return plan_unit(ctx, name, want, sc, String::new()).await;
        }
        // A reload belongs in the same round trip as the query, so the query
        // sees the reloaded units; check mode plans without it.
        let (name2, want2, sc2) = (name.clone(), want.clone(), sc.clone());
        Ok(Plan::fused(
            async move {
                plan_unit(ctx, name2, want2, sc2, String::new())
                    .await?
                    .planned()
                    .await
            },
            async move { plan_unit(ctx, name, want, sc, pre).await?.applied().await },
        ))
    }
}

/// Queries the unit (after running `pre`, the daemon reload, in the same
/// round trip) and plans the `systemctl` verbs that bring it to `want`.
async fn plan_unit<'a>(
    ctx: &'a TaskContext<'a>,
    name: Option<String>,
    want: UnitWant,
    sc: String,
    pre: String,
) -> Result<Plan<'a>, ModuleError> {
    let Some(name) = name else {
        if want != UnitWant::default() {
            return Ok(Plan::done(ModuleResult::failed(
                "missing required arguments: name (module systemd)",
            )));
        }
        if pre.is_empty() {
            return Ok(Plan::done(ModuleResult::ok()));
        }
        // A reload alone never counts as a change.
        return Ok(Plan::change(ModuleResult::ok(), async move {
            if let Err(e) = apply(ctx, &pre, None).await? {
                return Ok(ModuleResult::failed(e));
            }
            Ok(ModuleResult::ok())
        }));
    };
    let unit = quote(&name);
    let mut q = Query::new();
    if !pre.is_empty() {
        q.section("reload", &pre);
    }
    q.test(
        "systemd",
        "[ -d /run/systemd/system ] || [ \"$(cat /proc/1/comm)\" = systemd ]",
    )
    .section("show", &format!("{sc} show {unit} --no-pager"))
    .test("enabled", &format!("{sc} is-enabled {unit} >/dev/null"));
    let ans = q.run(ctx).await?;
    let mut seen = UnitSeen {
        enabled: ans.yes("enabled"),
        ..Default::default()
    };
    for l in ans.text("show").lines() {
        if let Some((k, v)) = l.split_once('=') {
            seen.props.insert(k.to_string(), v.to_string());
        }
    }
    if !seen.found() && want != UnitWant::default() {
        if !ans.yes("systemd") {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Service is in unknown state: systemd is not running on {} (try the service module)",
                ctx.host
            ))));
        }
        return Ok(Plan::done(ModuleResult::failed(format!(
            "Could not find the requested service {name}: host"
        ))));
    }
    let verbs = plan(&want, &seen);
    let status = dict(
        seen.props
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone()))),
    );
    let mut res = ModuleResult::changed(!verbs.is_empty())
        .with("name", name.clone())
        .with("status", status);
    if let Some(s) = &want.state {
        res.data.insert("state".into(), s.clone().into());
    }
    if let Some(e) = want.enabled {
        res.data.insert("enabled".into(), e.into());
    }
    if verbs.is_empty() {
        return Ok(Plan::done(res));
    }
    if ctx.diff {
        let before = vec![
            ("active", seen.prop("ActiveState").to_string()),
            ("enabled", seen.enabled.to_string()),
        ];
        res.diff
            .push(state_diff(&name, &before, &[("actions", verbs.join(", "))]));
    }
    Ok(Plan::change(res.clone(), async move {
        let script: String = verbs.iter().map(|v| format!("{sc} {v} {unit}\n")).collect();
        if let Err(e) = apply(ctx, &script, None).await? {
            let mut r =
                ModuleResult::failed(format!("Unable to {} service {name}: {e}", verbs.join("/")));
            r.data = res.data;
            return Ok(r);
        }
        Ok(res)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(active: &str, enabled: bool, file_state: &str) -> UnitSeen {
        let mut s = UnitSeen {
            enabled,
            ..Default::default()
        };
        s.props.insert("LoadState".into(), "loaded".into());
        s.props.insert("ActiveState".into(), active.into());
        s.props.insert("UnitFileState".into(), file_state.into());
        s
    }

    fn want(state: Option<&str>, enabled: Option<bool>, masked: Option<bool>) -> UnitWant {
        UnitWant {
            state: state.map(str::to_string),
            enabled,
            masked,
        }
    }

    #[test]
    fn plans_only_what_differs() {
        let running = seen("active", true, "enabled");
        assert!(plan(&want(Some("started"), Some(true), None), &running).is_empty());
        assert_eq!(
            plan(&want(Some("stopped"), Some(false), None), &running),
            vec!["disable", "stop"]
        );
        assert_eq!(
            plan(&want(Some("restarted"), None, None), &running),
            vec!["restart"]
        );
        let dead = seen("inactive", false, "disabled");
        assert_eq!(
            plan(&want(Some("reloaded"), None, None), &dead),
            vec!["start"]
        );
        assert_eq!(
            plan(&want(Some("started"), Some(true), None), &dead),
            vec!["enable", "start"]
        );
        assert!(plan(&want(Some("stopped"), None, None), &dead).is_empty());
        assert_eq!(plan(&want(None, None, Some(true)), &dead), vec!["mask"]);
        let masked = seen("inactive", false, "masked");
        assert!(plan(&want(None, None, Some(true)), &masked).is_empty());
        assert_eq!(
            plan(&want(None, None, Some(false)), &masked),
            vec!["unmask"]
        );
    }

    #[test]
    fn scope_flags() {
        assert_eq!(systemctl("system", false), "systemctl");
        assert_eq!(systemctl("user", true), "systemctl --user --no-block");
        assert_eq!(systemctl("global", false), "systemctl --global");
    }
}
