//! `dpkg_selections`: a package's dpkg selection (`install`, `hold`,
//! `deinstall`, `purge`), read with `dpkg --get-selections` and set with
//! `dpkg --set-selections`.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{apply, state_diff, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct DpkgSelections;

/// The arguments `dpkg_selections` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "dpkg_selections",
    sets: &[&[&["name"], &["selection"]]],
};

#[async_trait::async_trait]
impl Module for DpkgSelections {
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
        let selection = a
            .choice(
                &["selection"],
                &["install", "hold", "deinstall", "purge"],
                None,
            )?
            .ok_or_else(|| a.missing("selection"))?;
        a.finish()?;
        let mut q = Query::new();
        q.section("sel", &format!("dpkg --get-selections {}", quote(&name)));
        let ans = q.run(ctx).await?;
        let current = ans
            .text("sel")
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                let n = w.next()?;
                (n == name || n.split(':').next() == Some(name.as_str()))
                    .then(|| w.next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| "not present".into());
        let mut res = ModuleResult::changed(current != selection)
            .with("before", current.clone())
            .with("after", selection.clone());
        if !res.changed {
            return Ok(Plan::done(res));
        }
        if ctx.diff {
            res.diff.push(state_diff(
                &name,
                &[("selection", current)],
                &[("selection", selection.clone())],
            ));
        }
        Ok(Plan::change(res.clone(), async move {
            let stdin = format!("{name} {selection}\n").into_bytes();
            if let Err(e) = apply(ctx, "dpkg --set-selections\n", Some(stdin)).await? {
                return Ok(ModuleResult::failed(e));
            }
            Ok(res)
        }))
    }
}
