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
/// Printed (alone) when `chdir` could not be entered.
const CHDIR_MARK: &str = "\u{1e}keel-chdir\u{1e}";
/// Printed (alone, then the errno) when the program could not be executed,
/// where Python's `subprocess` would have raised `OSError`.
const EXEC_MARK: &str = "\u{1e}keel-exec\u{1e}";

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

/// Who reports a command that `creates`/`removes` stopped, or that check
/// mode cannot run: the `command` module (an ok result with `Did not run`/
/// `Would not run` messages), or the `script` action, which skips the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RunStyle {
    #[default]
    Module,
    ScriptAction,
}

/// The options every command-like module shares.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunOpts {
    pub chdir: Option<String>,
    pub creates: Option<String>,
    pub removes: Option<String>,
    pub stdin: Option<String>,
    pub stdin_add_newline: bool,
    pub strip_empty_ends: bool,
    pub style: RunStyle,
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
            style: RunStyle::Module,
        })
    }

    /// The prelude: `cd`, then the `creates`/`removes` checks (globs allowed,
    /// expanded from a variable so nothing in them is executed).
    pub fn prelude(&self) -> String {
        let mut s = String::new();
        if let Some(d) = &self.chdir {
            s.push_str(&format!(
                "cd -P -- {} 2>/dev/null || {{ printf '%s' '{CHDIR_MARK}'; exit 1; }}\n",
                quote(d)
            ));
        }
        if let Some(c) = &self.creates {
            s.push_str(&format!(
                "kp={}\nIFS=\nfor kf in $kp; do if [ -e \"$kf\" ] || [ -L \"$kf\" ]; then printf '%s' '{SKIP_MARK}c'; exit 0; fi; done\nunset IFS\n",
                quote(c)
            ));
        }
        if let Some(r) = &self.removes {
            s.push_str(&format!(
                "kp={}\nkhit=\nIFS=\nfor kf in $kp; do if [ -e \"$kf\" ] || [ -L \"$kf\" ]; then khit=1; fi; done\nunset IFS\nif [ -z \"$khit\" ]; then printf '%s' '{SKIP_MARK}r'; exit 0; fi\n",
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

/// The lines that run `command` (a shell command line, already quoted) as
/// the script's last step and exit with its status. Its output goes to
/// files first, printed once it exits: a process it leaves in the
/// background (`sleep 10 &`) keeps those files open, not the connection's
/// pipes, so the task ends when the command does, as under ansible-core
/// (whose `run_command` stops reading once its child has exited). Without a
/// writable temp directory it runs directly.
pub fn run_last(command: &str) -> String {
    format!(
        "if ko=$(mktemp -d 2>/dev/null); then\n\
         {command} >\"$ko/o\" 2>\"$ko/e\"; krc=$?\n\
         cat -- \"$ko/o\"; cat -- \"$ko/e\" >&2; rm -rf -- \"$ko\"; exit $krc\n\
         fi\n\
         exec {command}\n"
    )
}

/// Shell lines that stop with [`EXEC_MARK`] and the errno Python's `exec`
/// would raise (2: not found, 13: not executable) when `program` (a shell
/// word, quoted or `"$var"`) cannot be run: looked up on `PATH` like
/// `execvp` when it has no `/`. `command` checks this before its `exec`, so
/// a missing program fails with ansible-core's message and empty output
/// instead of the shell's complaint.
pub fn exec_check(program: &str) -> String {
    format!(
        "kx={program}\nkerr=2\ncase \"$kx\" in\n\
         */*) if [ -e \"$kx\" ]; then kerr=13; [ -f \"$kx\" ] && [ -x \"$kx\" ] && kerr=; fi ;;\n\
         *) IFS=:; for kd in $PATH; do kc=\"${{kd:-.}}/$kx\"; if [ -f \"$kc\" ]; then if [ -x \"$kc\" ]; then kerr=; break; fi; kerr=13; fi; done; unset IFS ;;\n\
         esac\n\
         if [ -n \"$kerr\" ]; then printf '%s%s' '{EXEC_MARK}' \"$kerr\"; exit \"$kerr\"; fi\n"
    )
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
                let mut r = ModuleResult::ok().with_msg(match opts.style {
                    RunStyle::Module => "Command would have run if not in check mode",
                    RunStyle::ScriptAction => "Check mode is not supported for this task.",
                });
                r.skipped = true;
                return Ok(r);
            }
            let out = ctx.run(format!("{}exit 0\n", opts.prelude()), None).await?;
            if let Some(r) = not_run(&out, cmd_value, &opts, true) {
                return Ok(r);
            }
            Ok(match opts.style {
                RunStyle::Module => ModuleResult::changed(true)
                    .with_msg("Command would have run if not in check mode")
                    .with("rc", 0),
                RunStyle::ScriptAction => ModuleResult::changed(true),
            })
        }
    };
    let apply = async move {
        // An `async` task: the script runs as a detached job on the host,
        // and `finish_job` makes its result once it is done.
        if let Some(job) = super::job::current() {
            let meta = serde_json::json!({
                "cmd": super::job::meta_value(&cmd_value),
                "opts": serde_json::to_value(&opts).unwrap_or_default(),
            });
            return super::job::launch(ctx, &job, &script, stdin, &meta).await;
        }
        let start = SystemTime::now();
        let out = ctx.run(script, stdin).await?;
        let end = SystemTime::now();
        Ok(finish(&out, cmd_value, &opts, start, end))
    };
    Plan::fused(preview, apply)
}

/// The result of a command that ran (or was stopped by its prelude).
fn finish(
    out: &Output,
    cmd_value: Value,
    opts: &RunOpts,
    start: SystemTime,
    end: SystemTime,
) -> ModuleResult {
    if let Some(r) = not_run(out, cmd_value.clone(), opts, false) {
        return r;
    }
    if let Some(r) = not_started(out, cmd_value.clone()) {
        return r;
    }
    command_result(
        out.rc,
        out.stdout_str(),
        out.stderr_str(),
        cmd_value,
        start,
        end,
        opts.strip_empty_ends,
    )
}

/// The [`Finisher`](super::job::Finisher) of jobs launched by [`plan_run`]:
/// the same result as a command run in the foreground.
pub fn finish_job(
    meta: &serde_json::Value,
    rc: i32,
    stdout: String,
    stderr: String,
    start: SystemTime,
    end: SystemTime,
) -> ModuleResult {
    let cmd_value = meta
        .get("cmd")
        .map(crate::template::value_from_json)
        .unwrap_or_default();
    let opts: RunOpts = meta
        .get("opts")
        .and_then(|o| serde_json::from_value(o.clone()).ok())
        .unwrap_or_default();
    let out = Output {
        rc,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    };
    finish(&out, cmd_value, &opts, start, end)
}

/// ansible-core's failure when the command never started: `chdir` could
/// not be entered, or the program could not be executed ([`exec_check`]).
fn not_started(out: &Output, cmd_value: Value) -> Option<ModuleResult> {
    let stdout = out.stdout_str();
    let empty = || Value::from(Vec::<String>::new());
    if stdout == CHDIR_MARK {
        let mut r = ModuleResult::failed("Unable to change directory before execution.");
        for k in ["rc", "start", "end", "delta"] {
            r.data.insert(k.into(), Value::from(()));
        }
        r.data.insert("cmd".into(), cmd_value);
        for k in ["stdout", "stderr"] {
            r.data.insert(k.into(), "".into());
        }
        r.data.insert("stdout_lines".into(), empty());
        r.data.insert("stderr_lines".into(), empty());
        return Some(r);
    }
    let errno: i32 = stdout.strip_prefix(EXEC_MARK)?.trim().parse().ok()?;
    // run_command reports the command line as one string.
    let cmd = match cmd_value.as_str() {
        Some(s) => s.to_string(),
        None => {
            let words: Vec<String> = cmd_value
                .try_iter()
                .map(|it| it.map(|v| v.to_string()).collect())
                .unwrap_or_default();
            shell_words::join(words)
        }
    };
    Some(
        ModuleResult::failed("Error executing command.")
            .with("rc", errno)
            .with("cmd", cmd)
            .with("stdout", "")
            .with("stderr", "")
            .with("stdout_lines", empty())
            .with("stderr_lines", empty()),
    )
}

/// The result when the prelude's `creates`/`removes` test stopped the
/// command.
fn not_run(
    out: &Output,
    cmd_value: Value,
    opts: &RunOpts,
    check_mode: bool,
) -> Option<ModuleResult> {
    let stdout = out.stdout_str();
    let which = stdout.strip_prefix(SKIP_MARK)?;
    let (what, option, path) = match which {
        "c" => ("exists", "creates", opts.creates.clone()?),
        "r" => ("does not exist", "removes", opts.removes.clone()?),
        _ => return None,
    };
    if opts.style == RunStyle::ScriptAction {
        let mut r = ModuleResult::ok().with_msg(format!("{path} {what}, matching {option} option"));
        r.skipped = true;
        return Some(r);
    }
    let did = if check_mode { "Would" } else { "Did" };
    Some(
        ModuleResult::ok()
            .with_msg(format!("{did} not run command since '{path}' {what}"))
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
