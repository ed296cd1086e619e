//! `group`: a local group, through `getent`, `groupadd`, `groupmod` and
//! `groupdel`. One query round trip, at most one apply round trip.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::accounts::GroupEntry;
use crate::modules::kit::{apply, state_diff, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Group;

/// The arguments `group` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "group",
    sets: &[&[
        &["name"],
        &["gid"],
        &["system"],
        &["state"],
        &["force"],
        &["non_unique"],
        &["local"],
        &["gid_min"],
        &["gid_max"],
    ]],
};

#[async_trait::async_trait]
impl Module for Group {
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
        let gid = a.int(&["gid"])?;
        let system = a.bool(&["system"], false)?;
        let state = a
            .choice(&["state"], &["present", "absent"], Some("present"))?
            .unwrap();
        let force = a.bool(&["force"], false)?;
        let non_unique = a.bool(&["non_unique"], false)?;
        a.ignore(&["local", "gid_min", "gid_max"]);
        a.finish()?;

        let mut q = Query::new();
        q.section("g", &format!("getent group {}", quote(&name)));
        let ans = q.run(ctx).await?;
        let cur = GroupEntry::parse(ans.trimmed("g"));
        let mut res = ModuleResult::ok()
            .with("name", name.clone())
            .with("state", state.clone())
            .with("system", system);
        let before = describe(cur.as_ref());

        let script = match (&state[..], &cur) {
            ("absent", None) => return Ok(Plan::done(res)),
            ("absent", Some(_)) => {
                format!(
                    "groupdel {}{}\n",
                    if force { "-f " } else { "" },
                    quote(&name)
                )
            }
            (_, None) => {
                let mut c = String::from("groupadd");
                if let Some(g) = gid {
                    c.push_str(&format!(" -g {g}"));
                    if non_unique {
                        c.push_str(" -o");
                    }
                }
                if system {
                    c.push_str(" -r");
                }
                format!("{c} {}\n", quote(&name))
            }
            (_, Some(g)) => match gid {
                Some(want) if want != i64::from(g.gid) => format!(
                    "groupmod -g {want}{} {}\n",
                    if non_unique { " -o" } else { "" },
                    quote(&name)
                ),
                _ => {
                    res.data.insert("gid".into(), g.gid.into());
                    return Ok(Plan::done(res));
                }
            },
        };
        res.changed = true;
        if ctx.diff {
            let after = if state == "absent" {
                Vec::new()
            } else {
                vec![
                    ("name", name.clone()),
                    (
                        "gid",
                        gid.map(|g| g.to_string())
                            .unwrap_or_else(|| "(next free)".into()),
                    ),
                ]
            };
            res.diff
                .push(state_diff(&format!("group {name}"), &before, &after));
        }
        if let Some(g) = gid {
            res.data.insert("gid".into(), g.into());
        }
        Ok(Plan::change(res.clone(), async move {
            let mut res = res;
            let full = format!("{script}getent group {} | cut -d: -f3\n", quote(&name));
            match apply(ctx, &full, None).await? {
                Ok(out) => {
                    if let Ok(g) = out.stdout_str().trim().parse::<u32>() {
                        res.data.insert("gid".into(), g.into());
                    }
                    Ok(res)
                }
                Err(e) => Ok(ModuleResult::failed(e).with("name", name)),
            }
        }))
    }
}

fn describe(g: Option<&GroupEntry>) -> Vec<(&'static str, String)> {
    match g {
        None => Vec::new(),
        Some(g) => vec![("name", g.name.clone()), ("gid", g.gid.to_string())],
    }
}
