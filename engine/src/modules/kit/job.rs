//! Background jobs on the host: what `async` tasks start and `async_status`
//! reads. A job is a file `~/.ansible_async/<jid>` of the connecting (or
//! become) user, as ansible-core's `async_wrapper` keeps it: it holds
//! `{"started": true, "finished": false, "ansible_job_id": …}` while the job
//! runs, then the module's JSON result, or `{"msg": "Timeout exceeded",
//! "failed": true, "child_pid": …}` when the time limit killed it.
//!
//! A command-like module (`command`, `shell`) runs as a real detached
//! process: [`launch`] starts a `setsid` runner in its own session, which
//! runs the module's script with its output in `<jid>.o`/`<jid>.e`, records
//! the exit status and times, and kills the whole process group when the
//! time limit passes. The JSON result is made from those files by the first
//! [`status`] that finds them done (with [`Finisher`], the module's own
//! result shaping), so the job file ends up as ansible-core would leave it.
//! Other modules run on the controller and write their result through
//! [`write_result`]. The executor chooses; this file only knows files.
//!
//! It sits in the kit, below the modules: `kit/command.rs` launches through
//! it when the executor set [`ASYNC_JOB`], and `async_status` reads through
//! it.

use minijinja::Value;
use serde_json::Value as Json;

use crate::modules::{ModuleError, ModuleResult, TaskContext};
use crate::shell::quote;

/// The job an `async` task asked for, set by the executor around the module
/// call: a command-like module then launches instead of running.
#[derive(Debug, Clone)]
pub struct AsyncJob {
    pub jid: String,
    /// Seconds before the job is killed (0: never).
    pub time_limit: u64,
}

tokio::task_local! {
    pub static ASYNC_JOB: AsyncJob;
}

/// The job the current task launches, if it is an `async` one.
pub fn current() -> Option<AsyncJob> {
    ASYNC_JOB.try_with(Clone::clone).ok()
}

/// The job directory as a shell word (`ANSIBLE_ASYNC_DIR` in the task's
/// environment wins, as in ansible-core's `async_dir` shell option).
const DIR: &str = "\"${ANSIBLE_ASYNC_DIR:-$HOME/.ansible_async}\"";

/// Written alone on stdout by [`status`] when the job file is missing.
const MISSING: &str = "\u{1e}keel-no-job\u{1e}";
/// Separates the parts [`status`] prints.
const SEP: &str = "\u{1e}keel-part\u{1e}";

fn valid_jid(jid: &str) -> Result<(), ModuleError> {
    if jid.is_empty()
        || jid.starts_with('.')
        || !jid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ModuleError::Args(format!("invalid job id '{jid}'")));
    }
    Ok(())
}

/// The runner, run by `setsid sh -c` with the job file path, the time limit
/// and the module's script as `$1 $2 $3`. The job runs in the background
/// inside the runner's own process group; a watchdog kills that group when
/// the limit passes, after writing the timeout result.
const RUNNER: &str = r#"j=$1; t=$2
date '+%s.%N' > "$j.start"
if [ -e "$j.in" ]; then kin="$j.in"; else kin=/dev/null; fi
sh -c "$3" < "$kin" > "$j.o" 2> "$j.e" &
c=$!
if [ "$t" -gt 0 ]; then
  (
    s=0
    while [ "$s" -lt "$t" ]; do sleep 1; s=$((s + 1)); kill -0 "$c" 2>/dev/null || exit 0; done
    : > "$j.killed"
    printf '{"msg": "Timeout exceeded", "failed": true, "child_pid": %s}' "$c" > "$j.tmp" && mv -f "$j.tmp" "$j"
    rm -f "$j.keel" "$j.in"
    kill -s KILL -- -$$ 2>/dev/null
  ) &
fi
wait "$c"; rc=$?
date '+%s.%N' > "$j.end"
[ -e "$j.killed" ] || printf '%s' "$rc" > "$j.rc"
rm -f "$j.in"
"#;

/// Starts `script` (with `stdin`) as job `job` on the host and returns the
/// result an `async` task with `poll: 0` registers. `meta` is kept beside
/// the job for the [`Finisher`] that turns its output into a result.
pub async fn launch(
    ctx: &TaskContext<'_>,
    job: &AsyncJob,
    script: &str,
    stdin: Option<Vec<u8>>,
    meta: &Json,
) -> Result<ModuleResult, ModuleError> {
    valid_jid(&job.jid)?;
    let started = serde_json::json!({
        "started": true, "finished": false, "ansible_job_id": job.jid,
    });
    let keep_stdin = if stdin.is_some() {
        "cat > \"$j.in\"\n"
    } else {
        ""
    };
    let launcher = format!(
        "d={DIR}\nmkdir -p \"$d\" || exit 1\nj=\"$d\"/{jid}\n\
         printf '%s' {started} > \"$j\"\nprintf '%s' {meta} > \"$j.keel\"\n{keep_stdin}\
         setsid sh -c {runner} keel-async \"$j\" {limit} {script} </dev/null >/dev/null 2>&1 &\n\
         printf '%s' \"$j\"\n",
        jid = quote(&job.jid),
        started = quote(&started.to_string()),
        meta = quote(&meta.to_string()),
        runner = quote(RUNNER),
        limit = job.time_limit,
        script = quote(script),
    );
    let out = ctx.run(launcher, stdin).await?;
    if out.rc != 0 {
        return Ok(ModuleResult::failed(format!(
            "could not start the async job: {}",
            out.stderr_str().trim()
        )));
    }
    Ok(started_result(&job.jid, &out.stdout_str()))
}

/// What an `async` task registers when it leaves the job running.
pub fn started_result(jid: &str, results_file: &str) -> ModuleResult {
    ModuleResult::changed(true)
        .with("ansible_job_id", jid)
        .with("started", true)
        .with("finished", false)
        .with("results_file", results_file)
}

/// Writes the first job file of a job the controller runs, and returns its
/// path on the host.
pub async fn begin(ctx: &TaskContext<'_>, jid: &str) -> Result<String, ModuleError> {
    let started = serde_json::json!({
        "started": true, "finished": false, "ansible_job_id": jid,
    });
    write_json(ctx, jid, &started).await
}

/// Replaces the job file with `result` (the job finished or was killed).
pub async fn write_result(
    ctx: &TaskContext<'_>,
    jid: &str,
    result: &Json,
) -> Result<String, ModuleError> {
    write_json(ctx, jid, result).await
}

async fn write_json(ctx: &TaskContext<'_>, jid: &str, v: &Json) -> Result<String, ModuleError> {
    valid_jid(jid)?;
    let script = format!(
        "d={DIR}\nmkdir -p \"$d\" || exit 1\nj=\"$d\"/{jid}\n\
         cat > \"$j.tmp\" && mv -f \"$j.tmp\" \"$j\" && printf '%s' \"$j\"\n",
        jid = quote(jid)
    );
    let out = ctx.run(script, Some(v.to_string().into_bytes())).await?;
    if out.rc != 0 {
        return Err(ModuleError::Args(format!(
            "could not write the async job file: {}",
            out.stderr_str().trim()
        )));
    }
    Ok(out.stdout_str())
}

/// Turns a finished command job's raw output into its module result: the
/// `meta` saved at launch, the exit status, stdout, stderr, and the start
/// and end times.
pub type Finisher = fn(
    meta: &Json,
    rc: i32,
    stdout: String,
    stderr: String,
    start: std::time::SystemTime,
    end: std::time::SystemTime,
) -> ModuleResult;

/// What the host says about a job.
#[derive(Debug, Clone)]
pub enum JobState {
    /// No job file: never started here, or cleaned up.
    Missing { results_file: String },
    /// Still running.
    Running { results_file: String },
    /// The job file's final JSON (a module result, or the timeout's).
    Done { results_file: String, data: Json },
}

/// Reads job `jid`; a command job whose output is complete is finished
/// into its JSON result first (and the job file rewritten with it).
pub async fn status(
    ctx: &TaskContext<'_>,
    jid: &str,
    finish: Finisher,
) -> Result<JobState, ModuleError> {
    valid_jid(jid)?;
    let script = format!(
        "d={DIR}\nj=\"$d\"/{jid}\n\
         if [ ! -e \"$j\" ]; then printf '%s%s' '{MISSING}' \"$j\"; exit 0; fi\n\
         printf '%s{SEP}' \"$j\"; cat -- \"$j\"; printf '{SEP}'\n\
         if [ -e \"$j.rc\" ] && [ -e \"$j.keel\" ]; then\n\
         cat -- \"$j.rc\"; printf '{SEP}'; cat -- \"$j.start\"; printf '{SEP}'; cat -- \"$j.end\"; printf '{SEP}'\n\
         cat -- \"$j.keel\"; printf '{SEP}'; cat -- \"$j.o\"; printf '{SEP}'; cat -- \"$j.e\"\n\
         fi\n",
        jid = quote(jid)
    );
    let out = ctx.run(script, None).await?;
    let text = out.stdout_str();
    if let Some(path) = text.strip_prefix(MISSING) {
        return Ok(JobState::Missing {
            results_file: path.to_string(),
        });
    }
    let parts: Vec<&str> = text.split(SEP).collect();
    let results_file = parts.first().copied().unwrap_or_default().to_string();
    let job_text = parts.get(1).copied().unwrap_or_default();
    if parts.len() >= 8 {
        let meta: Json = serde_json::from_str(parts[5]).unwrap_or(Json::Null);
        let rc: i32 = parts[2].trim().parse().unwrap_or(-1);
        let r = finish(
            &meta,
            rc,
            parts[6].to_string(),
            parts[7].to_string(),
            epoch(parts[3]),
            epoch(parts[4]),
        );
        let data = to_json(&r);
        write_json(ctx, jid, &data).await?;
        // The raw files are done with.
        let clean = format!(
            "j={DIR}/{jid}\nrm -f -- \"$j.rc\" \"$j.start\" \"$j.end\" \"$j.keel\" \"$j.o\" \"$j.e\" \"$j.killed\"\n",
            jid = quote(jid)
        );
        ctx.run(clean, None).await?;
        return Ok(JobState::Done { results_file, data });
    }
    let data: Json = match serde_json::from_str(job_text) {
        Ok(d) => d,
        // Half written: still running as far as anyone can tell.
        Err(_) => return Ok(JobState::Running { results_file }),
    };
    let running = data.get("started").is_some() && data.get("finished") == Some(&Json::Bool(false));
    Ok(if running {
        JobState::Running { results_file }
    } else {
        JobState::Done { results_file, data }
    })
}

/// Removes job `jid`'s files (`async_status: mode=cleanup`); returns the job
/// file's path.
pub async fn cleanup(ctx: &TaskContext<'_>, jid: &str) -> Result<String, ModuleError> {
    valid_jid(jid)?;
    let script = format!(
        "j={DIR}/{jid}\nrm -f -- \"$j\" \"$j.rc\" \"$j.start\" \"$j.end\" \"$j.keel\" \"$j.o\" \"$j.e\" \"$j.in\" \"$j.killed\"\nprintf '%s' \"$j\"\n",
        jid = quote(jid)
    );
    Ok(ctx.run(script, None).await?.stdout_str())
}

/// `date +%s.%N` as a time (a `date` without `%N` leaves a literal `N`:
/// whole seconds then).
fn epoch(s: &str) -> std::time::SystemTime {
    let s = s.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().unwrap_or(0);
    let nanos: u32 = if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) {
        format!("{frac:0<9}")[..9].parse().unwrap_or(0)
    } else {
        0
    };
    std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
}

/// A job id as ansible-core makes them: `j` and twelve digits, then the
/// controller's process id.
pub fn new_jid() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen_range(100_000_000_000..1_000_000_000_000);
    format!("j{n}.{}", std::process::id())
}

/// The `ModuleResult` of a job file's JSON, as `async_status` reports it.
pub fn result_from_json(data: &Json) -> ModuleResult {
    let mut r = ModuleResult::ok();
    if let Json::Object(m) = data {
        for (k, v) in m {
            match k.as_str() {
                "changed" => r.changed = v.as_bool().unwrap_or(false),
                "failed" => r.failed = v.as_bool().unwrap_or(v.as_i64() == Some(1)),
                "msg" => r.msg = v.as_str().map(String::from),
                "skipped" => r.skipped = v.as_bool().unwrap_or(false),
                _ => {
                    r.data
                        .insert(k.clone(), crate::template::value_from_json(v));
                }
            }
        }
    }
    r
}

/// A module result as the JSON a job file holds.
pub fn to_json(r: &ModuleResult) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("changed".into(), Json::Bool(r.changed));
    for (k, v) in &r.data {
        m.insert(k.clone(), crate::template::value_to_json(v));
    }
    if let Some(msg) = &r.msg {
        m.insert("msg".into(), Json::String(msg.clone()));
    }
    if r.failed {
        m.insert("failed".into(), Json::Bool(true));
    }
    if r.skipped {
        m.insert("skipped".into(), Json::Bool(true));
    }
    Json::Object(m)
}

/// A `Value` as JSON (for the meta kept beside a job).
pub fn meta_value(v: &Value) -> Json {
    crate::template::value_to_json(v)
}
