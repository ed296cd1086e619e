//! `tempfile`: makes a new temporary file or directory on the host and
//! returns its path. It always changes the host, so it has no query half: one
//! round trip runs `mktemp` and stats what it made.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{file_result_values, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct TempFile;

/// The arguments `tempfile` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "tempfile",
    sets: &[&[&["state"], &["path"], &["prefix"], &["suffix"]]],
};

/// ansible-core refuses a prefix or suffix that is not one file-name
/// component (`os.path.basename(x) != x`).
fn one_component(what: &str, v: &str) -> Result<(), String> {
    if !v.is_empty() && v.rsplit('/').next() != Some(v) {
        return Err(format!(
            "{what} must be a valid file name component, got '{v}'"
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Module for TempFile {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let state = a
            .choice(&["state"], &["file", "directory"], Some("file"))?
            .unwrap_or_default();
        let path = a.string(&["path"])?;
        let prefix = a.string(&["prefix"])?.unwrap_or_else(|| "ansible.".into());
        let suffix = a.string(&["suffix"])?.unwrap_or_default();
        a.finish()?;
        for (what, v) in [("prefix", &prefix), ("suffix", &suffix)] {
            if let Err(msg) = one_component(what, v) {
                return Ok(Plan::done(ModuleResult::failed(msg)));
            }
        }
        // ansible-core's tempfile does not support check mode: what check
        // mode reports is a skip.
        let mut planned = ModuleResult::ok().with_msg("skipped, running in check mode");
        planned.skipped = true;
        Ok(Plan::change(
            planned,
            make(ctx, state, path, prefix, suffix),
        ))
    }
}

/// Makes the file or directory (one round trip) and reports it.
async fn make(
    ctx: &TaskContext<'_>,
    state: String,
    path: Option<String>,
    prefix: String,
    suffix: String,
) -> Result<ModuleResult, ModuleError> {
    {
        // Python's mkstemp: prefix, eight random characters, suffix; in
        // `path`, else $TMPDIR or /tmp.
        let dir = match &path {
            Some(p) => format!("--tmpdir={}", quote(p)),
            None => "--tmpdir".to_string(),
        };
        let make = format!(
            "p=$(mktemp {} {dir} --suffix={} {}) || exit 1\nprintf 'PATH %s\\n' \"$p\"",
            if state == "directory" { "-d" } else { "" },
            quote(&suffix),
            quote(&format!("{prefix}XXXXXXXX")),
        );
        let mut q = Query::new();
        q.raw(&make).stat_expr("p", "\"$p\"", false, None);
        let out = q.run(ctx).await?;
        let Some(made) = out.line("PATH").filter(|p| !p.is_empty()) else {
            let dir = path.as_deref().unwrap_or("the temporary directory");
            return Ok(ModuleResult::failed(format!(
                "could not make a temporary {state} in {dir}"
            )));
        };
        let made = made.to_string();
        let mut r = ModuleResult::changed(true);
        for (k, v) in file_result_values("path", &made, &out.stat("p")) {
            r.data.insert(k, v);
        }
        Ok(r)
    }
}
