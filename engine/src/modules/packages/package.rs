//! `package`: the generic package module. It picks the host's package
//! manager (the `ansible_pkg_mgr` fact when gathered, else a probe for
//! `apt-get`) and hands the task to that module; only `apt` is native here.

use minijinja::Value;

use crate::modules::kit::Query;
use crate::modules::{
    delegate, Args, Module, ModuleError, ModuleRef, ModuleResult, Plan, TaskContext,
};

/// `package`, holding the module it hands Debian hosts to: registration
/// passes `apt` in, so this file needs neither the registry nor its sibling.
pub struct Package {
    pub apt: ModuleRef,
}

/// The package manager named by the facts in scope, if any.
fn fact_pkg_mgr(ctx: &TaskContext<'_>) -> Option<String> {
    if let Some(v) = ctx.scope.get_raw("ansible_pkg_mgr") {
        return v.as_str().map(str::to_string);
    }
    let facts = ctx.scope.get_raw("ansible_facts")?;
    facts
        .get_attr("pkg_mgr")
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

#[async_trait::async_trait]
impl Module for Package {
    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let chosen = args
            .get("use")
            .and_then(Value::as_str)
            .filter(|u| *u != "auto")
            .map(str::to_string);
        let mgr = match chosen.or_else(|| fact_pkg_mgr(ctx)) {
            Some(m) => m,
            None => {
                let mut q = Query::new();
                q.section(
                    "mgr",
                    "for m in apt-get dnf yum zypper apk pacman; do \
                     if command -v $m >/dev/null; then echo $m; break; fi; done",
                );
                q.run(ctx).await?.trimmed("mgr").to_string()
            }
        };
        let mut rest = args.clone();
        rest.shift_remove("use");
        match mgr.as_str() {
            "apt" | "apt-get" => Ok(delegate(self.apt.clone(), rest, ctx)),
            "" => Ok(Plan::done(ModuleResult::failed(
                "Could not find a package manager on the host (looked for apt-get, dnf, yum, zypper, apk, pacman)",
            ))),
            other => Ok(Plan::done(ModuleResult::failed(format!(
                "package manager '{other}' is not supported by keel's package module (only apt)"
            )))),
        }
    }
}
