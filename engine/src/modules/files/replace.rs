//! `replace`: substitutes every match of a regular expression in a file
//! (optionally only between `after` and `before`), computed on the controller.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::edit::{self, WriteBack};
use crate::modules::kit::edit::{check_python_repl, compile, python_repl};
use crate::modules::kit::FileAttrs;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Replace;

/// The arguments `replace` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "replace",
    sets: &[
        &[
            &["path", "dest", "destfile", "name"],
            &["regexp"],
            &["replace"],
            &["after"],
            &["before"],
            &["backup"],
            &["validate"],
            &["others"],
            &["encoding"],
            &["follow"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for Replace {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let path = a.req_string(&["path", "dest", "destfile", "name"])?;
        let regexp = a.req_string(&["regexp"])?;
        let replace = a.string(&["replace"])?.unwrap_or_default();
        let after = a.string(&["after"])?;
        let before = a.string(&["before"])?;
        let backup = a.bool(&["backup"], false)?;
        let validate = a.string(&["validate"])?;
        let attrs = FileAttrs::parse(&mut a)?;
        a.ignore(&["others", "encoding", "follow"]);
        a.finish()?;

        // Python's re.MULTILINE is what Ansible compiles with.
        let re = compile("regexp", &format!("(?m){regexp}"))?;
        let cur = edit::read(ctx, &path).await?;
        if !cur.stat.exists {
            return Ok(Plan::done(
                ModuleResult::failed(format!("Path {path} does not exist !")).with("rc", 257),
            ));
        }
        if cur.stat.is_dir() {
            return Ok(Plan::done(
                ModuleResult::failed(format!("Path {path} is a directory !")).with("rc", 256),
            ));
        }
        let text = String::from_utf8_lossy(&cur.content).into_owned();
        // The section to work on: after the first `after` match, before the
        // first `before` match (each pattern in DOTALL mode, like Ansible).
        let mut start = 0;
        let mut end = text.len();
        if let Some(p) = &after {
            let r = compile("after", &format!("(?s){p}"))?;
            match r.find(&text) {
                Some(m) => start = m.end(),
                None => {
                    return Ok(Plan::done(ModuleResult::ok().with_msg(
                        "Pattern for before/after params did not match the given file",
                    )))
                }
            }
        }
        if let Some(p) = &before {
            let r = compile("before", &format!("(?s){p}"))?;
            match r.find(&text[start..]) {
                Some(m) => end = start + m.start(),
                None => {
                    return Ok(Plan::done(ModuleResult::ok().with_msg(
                        "Pattern for before/after params did not match the given file",
                    )))
                }
            }
        }
        let section = &text[start..end];
        if let Err(e) = check_python_repl(&replace) {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Unable to process replace due to error: {e}"
            ))));
        }
        let count = re.find_iter(section).count();
        let new_section = re.replace_all(section, python_repl(&replace).as_str());
        let result = format!("{}{}{}", &text[..start], new_section, &text[end..]);
        let msg = if count > 0 && result != text {
            format!("{count} replacements made")
        } else {
            String::new()
        };
        let wb = WriteBack {
            path: path.clone(),
            attrs: attrs.clone(),
            backup,
            validate: validate.clone(),
        };
        let plan = edit::write_back(ctx, wb, &cur, result.into_bytes(), &msg).await?;
        Ok(plan.map(|r| {
            if r.msg.is_none() {
                r.msg = Some(String::new());
            }
            r.data.insert("rc".into(), 0.into());
        }))
    }
}
