//! Running a packed [`PyModule`] on one host: the fallback's
//! [`Module`] implementation.
//!
//! Check mode is the module's own: the plan is [`Plan::fused`], whose
//! preview runs the module with `_ansible_check_mode` set, so the driver
//! still decides which of the two runs and the module reports what it
//! would change (or skips, when it does not support check mode). The
//! payload travels on stdin, so nothing is left on the host but what the
//! module itself does; an old-style module gets a private temporary
//! directory holding it and its arguments file, removed when it exits.

use indexmap::IndexMap;
use minijinja::Value;
use serde_json::{json, Map, Value as Json};

use super::payload::{PyModule, Style};
use crate::modules::{Args, FileDiff, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;
use crate::template::value_from_json;
use crate::vars::VarMap;

/// ansible-core's `INTERPRETER_PYTHON_FALLBACK`, tried in order when the
/// host has no `ansible_python_interpreter` (nor one discovered earlier).
const PYTHON_FALLBACK: &[&str] = &[
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
    "python3.8",
    "/usr/bin/python3",
    "python3",
];

/// The line the discovery step prints before the module's output.
const DISCOVERED: &str = "KEEL-DISCOVERED-PYTHON ";

#[async_trait::async_trait]
impl Module for PyModule {
    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        Ok(Plan::fused(
            self.execute(args, ctx, true),
            self.execute(args, ctx, false),
        ))
    }
}

/// Which interpreter runs the module: a variable's, or discovery on the host.
enum Interpreter {
    Given(String),
    Discover,
}

impl PyModule {
    async fn execute(
        &self,
        args: &Args,
        ctx: &TaskContext<'_>,
        check: bool,
    ) -> Result<ModuleResult, ModuleError> {
        let params = self.module_args(args, ctx, check)?;
        let (interp, extra) = self.interpreter(ctx)?;
        let pick = match &interp {
            Interpreter::Given(i) => format!("i={}\n", quote(i)),
            Interpreter::Discover => {
                let list: Vec<String> = PYTHON_FALLBACK.iter().map(|p| quote(p)).collect();
                format!(
                    "i=\nfor p in {}; do i=$(command -v \"$p\" 2>/dev/null) && break; done\n\
                     [ -n \"$i\" ] || i=/usr/bin/python3\nprintf '{DISCOVERED}%s\\n' \"$i\"\n",
                    list.join(" ")
                )
            }
        };
        let extra: String = extra.iter().map(|a| format!(" {}", quote(a))).collect();
        let (script, stdin) = match &self.style {
            Style::New { .. } => {
                let program = self
                    .program(
                        &serde_json::to_string(&json!({ "ANSIBLE_MODULE_ARGS": params }))
                            .unwrap_or_default(),
                    )
                    .unwrap_or_default();
                (format!("{pick}\"$i\"{extra} -\n"), program.into_bytes())
            }
            Style::WantJson | Style::Old => {
                let args_text = match self.style {
                    Style::WantJson => serde_json::to_string(&params).unwrap_or_default(),
                    _ => kv_text(&params),
                };
                let script = format!(
                    "{pick}d=$(mktemp -d \"${{TMPDIR:-/tmp}}/ansible-tmp-keel.XXXXXXXX\") || exit 1\n\
                     trap 'rm -rf \"$d\"' EXIT\n\
                     cat > \"$d/{name}\" && chmod 0700 \"$d/{name}\" || exit 1\n\
                     printf '%s' {args} > \"$d/args\"\n\
                     \"$i\"{extra} \"$d/{name}\" \"$d/args\"\n",
                    name = self.name,
                    args = quote(&args_text),
                );
                (script, self.source.clone())
            }
        };
        let out = ctx.run(script, Some(stdin)).await?;
        let mut stdout = out.stdout_str();
        let mut discovered = None;
        if let Some(rest) = stdout.strip_prefix(DISCOVERED) {
            let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
            discovered = Some(line.trim().to_string());
            stdout = after.to_string();
        }
        let used = match (&interp, &discovered) {
            (Interpreter::Given(i), _) => i.clone(),
            (_, Some(d)) => d.clone(),
            _ => String::new(),
        };
        let mut res = parse_result(&stdout, &out.stderr_str(), out.rc, &used);
        if let Some(d) = discovered {
            // Ansible warns with the task that discovered it, and keeps it
            // for the host's later tasks as a fact.
            let warning = format!(
                "Host '{}' is using the discovered Python interpreter at '{d}', but future installation \
                 of another Python interpreter could cause a different interpreter to be discovered.",
                ctx.host
            );
            let mut warnings: Vec<Value> = res
                .data
                .get("warnings")
                .and_then(|w| w.try_iter().ok())
                .map(|it| it.collect())
                .unwrap_or_default();
            warnings.insert(0, Value::from(warning));
            res.data.insert("warnings".into(), Value::from(warnings));
            let facts = res.facts.get_or_insert_with(VarMap::new);
            facts.insert("discovered_interpreter_python".into(), Value::from(d));
        }
        Ok(res)
    }

    /// The task's arguments plus the `_ansible_*` settings Ansible passes
    /// every module.
    fn module_args(
        &self,
        args: &Args,
        ctx: &TaskContext<'_>,
        check: bool,
    ) -> Result<Map<String, Json>, ModuleError> {
        let mut m = match serde_json::to_value(args) {
            Ok(Json::Object(m)) => m,
            Ok(_) => Map::new(),
            Err(e) => {
                return Err(ModuleError::Args(format!(
                    "cannot pass the arguments of {}: {e}",
                    self.name
                )))
            }
        };
        let version = super::install::ansible_core()
            .map(|c| c.version.clone())
            .unwrap_or_else(|| "2.19.14".into());
        let internal = json!({
            "_ansible_check_mode": check,
            "_ansible_no_log": ctx.no_log,
            "_ansible_debug": false,
            "_ansible_diff": ctx.diff,
            "_ansible_verbosity": 0,
            "_ansible_version": version,
            "_ansible_module_name": self.name,
            "_ansible_syslog_facility": "LOG_USER",
            "_ansible_selinux_special_fs": ["fuse", "nfs", "vboxsf", "ramfs", "9p", "vfat"],
            "_ansible_socket": null,
            "_ansible_shell_executable": "/bin/sh",
            "_ansible_keep_remote_files": false,
            "_ansible_tmpdir": null,
            "_ansible_remote_tmp": "~/.ansible/tmp",
            "_ansible_ignore_unknown_opts": false,
            "_ansible_target_log_info": null,
            "_ansible_tracebacks_for": [],
        });
        if let Json::Object(internal) = internal {
            m.extend(internal);
        }
        Ok(m)
    }

    /// The interpreter and its extra arguments: for a Python module,
    /// `ansible_python_interpreter`, else the one discovered on this host
    /// earlier, else discovery; for another script, its `#!` line unless
    /// `ansible_<name>_interpreter` overrides it.
    fn interpreter(
        &self,
        ctx: &TaskContext<'_>,
    ) -> Result<(Interpreter, Vec<String>), ModuleError> {
        let (named, args) = match &self.shebang {
            Some((i, a)) if i.ends_with("/env") && !a.is_empty() => (a[0].clone(), a[1..].to_vec()),
            Some((i, a)) => (i.clone(), a.clone()),
            None => ("python".to_string(), Vec::new()),
        };
        let base = named.rsplit('/').next().unwrap_or(&named).to_string();
        let python = matches!(self.style, Style::New { .. }) || base.starts_with("python");
        let var = if python {
            "ansible_python_interpreter".to_string()
        } else {
            format!("ansible_{base}_interpreter")
        };
        if let Some(v) = self.var(ctx, &var)? {
            return Ok((Interpreter::Given(v), args));
        }
        if !python {
            return Ok((Interpreter::Given(named), args));
        }
        if let Some(v) = self.var(ctx, "discovered_interpreter_python")? {
            return Ok((Interpreter::Given(v), args));
        }
        Ok((Interpreter::Discover, args))
    }

    fn var(&self, ctx: &TaskContext<'_>, name: &str) -> Result<Option<String>, ModuleError> {
        let Some(raw) = ctx.scope.get_raw(name) else {
            return Ok(None);
        };
        if raw.is_none() || raw.is_undefined() {
            return Ok(None);
        }
        let text = match raw.as_str() {
            Some(s) if s.contains("{{") || s.contains("{%") => ctx
                .templar
                .render_str(s, ctx.scope, ctx.origin)?
                .to_string(),
            Some(s) => s.to_string(),
            None => raw.to_string(),
        };
        let text = text.trim().to_string();
        // `auto` and its variants mean "discover", as in Ansible.
        Ok((!text.is_empty() && !text.starts_with("auto")).then_some(text))
    }
}

/// The old-style arguments file: `key=value` words, quoted as
/// Python's `shlex.quote` quotes them.
fn kv_text(params: &Map<String, Json>) -> String {
    params
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Json::String(s) => s.clone(),
                Json::Bool(true) => "True".into(),
                Json::Bool(false) => "False".into(),
                Json::Null => "None".into(),
                other => other.to_string(),
            };
            format!("{k}={}", quote(&text))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The JSON object in a module's output, as ansible-core finds it: from the
/// first line opening an object to the last line closing one; other lines
/// are noise the module (or the host) printed.
fn json_part(stdout: &str) -> Option<&str> {
    let start = stdout
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(0))
        .filter(|i| {
            stdout[*i..]
                .trim_start_matches([' ', '\t'])
                .starts_with('{')
        })
        .min()?;
    let body = &stdout[start..];
    let end = body.rfind('}')?;
    Some(&body[..=end])
}

/// A module's output read back as its result.
fn parse_result(stdout: &str, stderr: &str, rc: i32, interpreter: &str) -> ModuleResult {
    let parsed = json_part(stdout)
        .ok_or_else(|| "No start of json char found".to_string())
        .and_then(|j| serde_json::from_str::<Json>(j).map_err(|e| e.to_string()));
    let obj = match parsed {
        Ok(Json::Object(o)) => o,
        Ok(_) => {
            return failure(
                "Module result deserialization failed: the result is not an object",
                stdout,
                stderr,
                rc,
            )
        }
        Err(cause) => {
            let missing = !interpreter.is_empty()
                && [stdout, stderr].iter().any(|s| {
                    [
                        "No such file or directory",
                        "not found",
                        "command not found",
                    ]
                    .iter()
                    .any(|w| s.contains(&format!("{interpreter}: {w}")))
                });
            let msg = if missing {
                format!("The module interpreter '{interpreter}' was not found.")
            } else {
                format!("Module result deserialization failed: {cause}")
            };
            return failure(&msg, stdout, stderr, rc);
        }
    };
    from_object(obj)
}

fn failure(msg: &str, stdout: &str, stderr: &str, rc: i32) -> ModuleResult {
    ModuleResult::failed(msg)
        .with("module_stdout", stdout)
        .with("module_stderr", stderr)
        .with("rc", rc)
}

/// A module's JSON result as a [`ModuleResult`]: the status keys and facts
/// taken apart, the diff turned into file diffs, the rest kept as the
/// module's return values (Ansible's internal `_ansible_*` keys dropped).
fn from_object(obj: Map<String, Json>) -> ModuleResult {
    let mut r = ModuleResult::default();
    let truthy = |v: &Json| match v {
        Json::Bool(b) => *b,
        Json::String(s) => matches!(s.to_ascii_lowercase().as_str(), "yes" | "true" | "1" | "on"),
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    };
    let mut data: IndexMap<String, Value> = IndexMap::new();
    for (k, v) in obj {
        match k.as_str() {
            "changed" => r.changed = truthy(&v),
            "failed" => r.failed = truthy(&v),
            "skipped" => r.skipped = truthy(&v),
            "msg" => {
                r.msg = Some(match v {
                    Json::String(s) => s,
                    other => other.to_string(),
                })
            }
            "ansible_facts" => {
                if let Json::Object(f) = v {
                    r.facts = Some(
                        f.iter()
                            .map(|(k, v)| (k.clone(), value_from_json(v)))
                            .collect(),
                    );
                }
            }
            "diff" => {
                r.diff = match &v {
                    Json::Array(items) => items.iter().filter_map(file_diff).collect(),
                    one => file_diff(one).into_iter().collect(),
                };
                data.insert(k, value_from_json(&v));
            }
            // ansible-core keeps these out of the registered result.
            "invocation" => {}
            "warnings" | "deprecations" if v.as_array().is_none_or(|a| a.is_empty()) => {}
            _ if k.starts_with("_ansible_") => {}
            _ => {
                data.insert(k, value_from_json(&v));
            }
        }
    }
    // A non-zero `rc` fails the task unless the module said otherwise, as
    // ansible-core's task executor decides.
    if !r.failed {
        if let Some(rc) = data.get("rc").and_then(|v| i64::try_from(v.clone()).ok()) {
            r.failed = rc != 0;
        }
    }
    r.data = data;
    r
}

/// One `diff` entry: `before`/`after` texts (or structures, shown as
/// ansible-core shows them: sorted JSON, four-space indents) with headers.
fn file_diff(v: &Json) -> Option<FileDiff> {
    let o = v.as_object()?;
    let text = |k: &str| match o.get(k) {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => {
            let sorted: Json = serde_json::from_str(&other.to_string()).unwrap_or(Json::Null);
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            let _ = serde::Serialize::serialize(&sorted, &mut ser);
            String::from_utf8(buf).unwrap_or_default() + "\n"
        }
    };
    if !o.contains_key("before") && !o.contains_key("after") {
        return None;
    }
    let header = |k: &str, default: &str| {
        o.get(k)
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| default.to_string())
    };
    Some(FileDiff {
        before_header: header("before_header", ""),
        after_header: header("after_header", ""),
        before: text("before"),
        after: text("after"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_among_noise_and_rc_fails() {
        let out = "junk line\n{\"changed\": true, \"rc\": 0, \"_ansible_no_log\": false}\nafter\n";
        assert_eq!(
            json_part(out),
            Some("{\"changed\": true, \"rc\": 0, \"_ansible_no_log\": false}")
        );
        let r = parse_result(out, "", 0, "/usr/bin/python3");
        assert!(r.changed && !r.failed);
        assert!(!r.data.contains_key("_ansible_no_log"));
        let r = parse_result("{\"rc\": 2}", "", 0, "");
        assert!(r.failed);
        let r = parse_result("", "sh: 1: /nope/python: not found\n", 127, "/nope/python");
        assert_eq!(
            r.msg.as_deref(),
            Some("The module interpreter '/nope/python' was not found.")
        );
        let r = parse_result("Traceback...\n", "", 1, "/usr/bin/python3");
        assert!(
            r.failed
                && r.msg
                    .unwrap()
                    .starts_with("Module result deserialization failed")
        );
    }

    #[test]
    fn old_style_arguments_are_shell_words() {
        let mut m = Map::new();
        m.insert("name".into(), json!("a b"));
        m.insert("force".into(), json!(true));
        assert_eq!(kv_text(&m), "name='a b' force=True");
    }
}
