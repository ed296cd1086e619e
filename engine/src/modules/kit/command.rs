//! The "run something" path of `command`, `shell`, `script` (and the result
//! shape `raw` shares): a small `sh` prelude handles `chdir`, `creates` and
//! `removes` on the host before the command itself, all in one round trip.

use std::time::SystemTime;

use minijinja::Value;

use super::plan::Plan;
use super::time::timestamp;
use crate::modules::args::{ModuleArgs, Param};
use crate::modules::{ModuleError, ModuleResult, TaskContext};
use crate::shell::quote;
use crate::transport::Output;

/// Printed (alone) when `creates`/`removes` says the command need not run.
const SKIP_MARK: &str = "\u{1e}keel-skip\u{1e}";

/// The arguments [`RunOpts::parse`] reads, for a module's
/// [`Params`](crate::modules::args::Params).
pub const RUN_OPT_PARAMS: &[Param] = &[
    &["chdir"],
    &["creates"],
    &["removes"],
    &["stdin"],
    &["stdin_add_newline"],
    &["strip_empty_ends"],
];

/// The options every command-like module shares.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    pub chdir: Option<String>,
    pub creates: Option<String>,
    pub removes: Option<String>,
    pub stdin: Option<String>,
    pub stdin_add_newline: bool,
    pub strip_empty_ends: bool,
}

impl RunOpts {
    pub fn parse(a: &mut ModuleArgs<'_>) -> Result<RunOpts, ModuleError> {
        Ok(RunOpts {
            chdir: a.string(&["chdir"])?,
            creates: a.string(&["creates"])?,
            removes: a.string(&["removes"])?,
            stdin: a.string(&["stdin"])?,
            stdin_add_newline: a.bool(&["stdin_add_newline"], true)?,
            strip_empty_ends: a.bool(&["strip_empty_ends"], true)?,
        })
    }

    /// The prelude: `cd`, then the `creates`/`removes` checks (globs allowed,
    /// expanded from a variable so nothing in them is executed).
    pub fn prelude(&self) -> String {
        let mut s = String::new();
        if let Some(d) = &self.chdir {
            s.push_str(&format!("cd -- {} || exit 1\n", quote(d)));
        }
        if let Some(c) = &self.creates {
            s.push_str(&format!(
                "kp={}\nIFS=\nfor kf in $kp; do if [ -e \"$kf\" ] || [ -L \"$kf\" ]; then printf '%s' '{SKIP_MARK}'; exit 0; fi; done\nunset IFS\n",
                quote(c)
            ));
        }
        if let Some(r) = &self.removes {
            s.push_str(&format!(
                "kp={}\nkhit=\nIFS=\nfor kf in $kp; do if [ -e \"$kf\" ] || [ -L \"$kf\" ]; then khit=1; fi; done\nunset IFS\nif [ -z \"$khit\" ]; then printf '%s' '{SKIP_MARK}'; exit 0; fi\n",
                quote(r)
            ));
        }
        s
    }

    pub fn stdin_bytes(&self) -> Option<Vec<u8>> {
        self.stdin.as_ref().map(|s| {
            let mut b = s.clone().into_bytes();
            if self.stdin_add_newline {
                b.push(b'\n');
            }
            b
        })
    }
}

/// Plans running `script` (prelude included). A command cannot know what
/// it would change without running, so check mode runs only a preview:
/// without `creates`/`removes` the task is skipped, as in Ansible; with them,
/// the prelude's test alone decides between "would have run" and "did not
/// run". Outside check mode the whole script runs, in one round trip.
pub fn plan_run<'a>(
    ctx: &'a TaskContext<'a>,
    script: String,
    stdin: Option<Vec<u8>>,
    cmd_value: Value,
    opts: RunOpts,
) -> Plan<'a> {
    let preview = {
        let (cmd_value, opts) = (cmd_value.clone(), opts.clone());
        async move {
            if opts.creates.is_none() && opts.removes.is_none() {
                let mut r =
                    ModuleResult::ok().with_msg("Command would have run if not in check mode");
                r.skipped = true;
                return Ok(r);
            }
            let out = ctx.run(format!("{}exit 0\n", opts.prelude()), None).await?;
            if let Some(r) = not_run(&out, cmd_value, &opts) {
                return Ok(r);
            }
            Ok(ModuleResult::changed(true).with_msg("Command would have run if not in check mode"))
        }
    };
    let apply = async move {
        let start = SystemTime::now();
        let out = ctx.run(script, stdin).await?;
        let end = SystemTime::now();
        if let Some(r) = not_run(&out, cmd_value.clone(), &opts) {
            return Ok(r);
        }
        Ok(command_result(
            out.rc,
            out.stdout_str(),
            out.stderr_str(),
            cmd_value,
            start,
            end,
            opts.strip_empty_ends,
        ))
    };
    Plan::fused(preview, apply)
}

/// The result when the prelude's `creates`/`removes` test stopped the
/// command.
fn not_run(out: &Output, cmd_value: Value, opts: &RunOpts) -> Option<ModuleResult> {
    if out.stdout_str() != SKIP_MARK {
        return None;
    }
    let (what, path) = match (&opts.creates, &opts.removes) {
        (Some(c), _) if out.rc == 0 => ("exists", c.clone()),
        (_, Some(r)) => ("does not exist", r.clone()),
        (Some(c), None) => ("exists", c.clone()),
        (None, None) => ("", String::new()),
    };
    Some(
        ModuleResult::ok()
            .with_msg(format!("Did not run command since '{path}' {what}"))
            .with("cmd", cmd_value)
            .with("rc", 0)
            .with("stdout", format!("skipped, since {path} {what}"))
            .with(
                "stdout_lines",
                Value::from(vec![format!("skipped, since {path} {what}")]),
            )
            .with("stderr", "")
            .with("stderr_lines", Value::from(Vec::<String>::new())),
    )
}

/// Ansible's return values for a finished command.
pub fn command_result(
    rc: i32,
    mut stdout: String,
    mut stderr: String,
    cmd_value: Value,
    start: SystemTime,
    end: SystemTime,
    strip: bool,
) -> ModuleResult {
    if strip {
        let t = stdout.trim_end_matches(['\r', '\n']).len();
        stdout.truncate(t);
        let t = stderr.trim_end_matches(['\r', '\n']).len();
        stderr.truncate(t);
    }
    let delta = end.duration_since(start).unwrap_or_default();
    let stdout_lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    let stderr_lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    let mut r = ModuleResult::changed(true)
        .with("cmd", cmd_value)
        .with("rc", rc)
        .with("stdout", stdout)
        .with("stderr", stderr)
        .with("stdout_lines", Value::from(stdout_lines))
        .with("stderr_lines", Value::from(stderr_lines))
        .with("start", timestamp(start))
        .with("end", timestamp(end))
        .with(
            "delta",
            format!(
                "{}:{:02}:{:02}.{:06}",
                delta.as_secs() / 3600,
                delta.as_secs() / 60 % 60,
                delta.as_secs() % 60,
                delta.subsec_micros()
            ),
        );
    if rc != 0 {
        r.failed = true;
        r.msg = Some("non-zero return code".into());
    } else {
        r.msg = Some(String::new());
    }
    r
}
