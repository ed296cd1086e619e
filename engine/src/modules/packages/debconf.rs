//! `debconf`: pre-seeds answers in the debconf database. The query reads
//! `debconf-show <package>`; a differing answer is written with
//! `debconf-set-selections` (and `-u` to mark it unseen).

use std::collections::BTreeMap;

use minijinja::Value;

use crate::modules::args::{scalar_string, to_bool, ModuleArgs, Params};
use crate::modules::kit::{apply, state_diff, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Debconf;

/// `debconf-show` output: question → value (`*` marks seen questions).
pub fn parse_show(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let l = l.strip_prefix('*').unwrap_or(l).trim_start();
            let (q, v) = l.split_once(':')?;
            Some((q.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The arguments `debconf` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "debconf",
    sets: &[&[
        &["name", "pkg"],
        &["question", "selection", "setting"],
        &["vtype"],
        &["value", "answer"],
        &["unseen"],
    ]],
};

#[async_trait::async_trait]
impl Module for Debconf {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.req_string(&["name", "pkg"])?;
        let question = a.string(&["question", "selection", "setting"])?;
        let vtype = a.choice(
            &["vtype"],
            &[
                "boolean",
                "error",
                "multiselect",
                "note",
                "password",
                "seen",
                "select",
                "string",
                "text",
                "title",
            ],
            None,
        )?;
        let raw_value = a.value(&["value", "answer"]);
        let unseen = a.bool(&["unseen"], false)?;
        a.finish()?;

        let mut q = Query::new();
        q.section("show", &format!("debconf-show {}", quote(&name)));
        let ans = q.run(ctx).await?;
        let current = parse_show(ans.text("show"));
        let current_value = crate::modules::args::dict(
            current
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone()))),
        );
        let mut res = ModuleResult::ok().with("current", current_value);
        let Some(question) = question else {
            return Ok(Plan::done(res));
        };
        let Some(vtype) = vtype else {
            return Ok(Plan::done(ModuleResult::failed(
                "parameters are required together: question, vtype",
            )));
        };
        let Some(raw_value) = raw_value else {
            return Ok(Plan::done(ModuleResult::failed(
                "parameters are required together: question, vtype, value",
            )));
        };
        let value = if vtype == "boolean" {
            match to_bool(&raw_value) {
                Some(b) => b.to_string(),
                None => {
                    return Ok(Plan::done(ModuleResult::failed(format!(
                        "invalid boolean value for {question}"
                    ))))
                }
            }
        } else if let Ok(items) = raw_value.try_iter() {
            if raw_value.as_str().is_none() {
                items
                    .filter_map(|v| scalar_string(&v))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                scalar_string(&raw_value).unwrap_or_default()
            }
        } else {
            scalar_string(&raw_value).unwrap_or_default()
        };
        let have = current.get(&question);
        // debconf-show hides passwords, so a password is always set.
        let differs = vtype == "password" || have.map(String::as_str) != Some(value.as_str());
        if !differs && !unseen {
            return Ok(Plan::done(res));
        }
        res.changed = differs || unseen;
        if ctx.diff {
            res.diff.push(state_diff(
                &name,
                &[(question.as_str(), have.cloned().unwrap_or_default())],
                &[(
                    question.as_str(),
                    if vtype == "password" {
                        "********".into()
                    } else {
                        value.clone()
                    },
                )],
            ));
        }
        res.msg = Some(String::new());
        Ok(Plan::change(res.clone(), async move {
            let stdin = format!("{name} {question} {vtype} {value}\n").into_bytes();
            let cmd = format!(
                "debconf-set-selections{}\n",
                if unseen { " -u" } else { "" }
            );
            if let Err(e) = apply(ctx, &cmd, Some(stdin)).await? {
                return Ok(ModuleResult::failed(e));
            }
            Ok(res)
        }))
    }
}
