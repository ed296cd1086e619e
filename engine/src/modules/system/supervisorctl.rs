//! `supervisorctl` (community.general): programs and groups of a running
//! supervisord — added, removed, started, stopped, restarted, signalled.
//!
//! Query: `supervisorctl status` (one round trip) names the matching
//! processes and their states. Decide: community.general's rules — which
//! processes the state acts on, or nothing to do. Apply: the
//! `supervisorctl` commands, each checked for the answer that module
//! expects (`NAME: started`...).
//!
//! One difference on purpose: for `state: restarted` community.general runs
//! `supervisorctl update` before deciding, even in check mode, so its check
//! mode changes supervisord's configuration. Keel runs `update` only in
//! the apply step; check mode reads `status` as it is.

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Supervisorctl;

static PARAMS: Params = Params {
    module: "supervisorctl",
    sets: &[&[
        &["name"],
        &["config"],
        &["server_url"],
        &["username"],
        &["password"],
        &["supervisorctl_path"],
        &["state"],
        &["stop_before_removing"],
        &["signal"],
    ]],
};

/// Runs `supervisorctl` with the task's connection options.
struct Ctl {
    /// Shell words: the program and its `-c`/`-s`/`-u`/`-p` options.
    prefix: String,
}

impl Ctl {
    fn line(&self, args: &[&str]) -> String {
        let mut s = format!("LANG=C LC_ALL=C LC_MESSAGES=C LC_CTYPE=C {}", self.prefix);
        for a in args {
            s.push(' ');
            s.push_str(&quote(a));
        }
        s
    }

    /// Runs one command: (rc, stdout).
    async fn run(
        &self,
        ctx: &TaskContext<'_>,
        args: &[&str],
    ) -> Result<(i32, String), ModuleError> {
        let out = ctx.run(self.line(args), None).await?;
        Ok((out.rc, out.stdout_str()))
    }

    async fn status(
        &self,
        ctx: &TaskContext<'_>,
        name: &str,
        group: bool,
    ) -> Result<Vec<(String, String)>, ModuleError> {
        let (_, out) = self.run(ctx, &["status"]).await?;
        Ok(matched(&out, name, group))
    }
}

/// `get_matched_processes`: the `status` lines naming the program, the
/// group's programs (`NAME:`), or everything (`all`).
fn matched(out: &str, name: &str, group: bool) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split(' ').filter(|f| !f.is_empty()).collect();
        let (Some(process), Some(status)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        let keep = if group {
            process.split_once(':').is_some_and(|(g, _)| g == name)
        } else {
            *process == name || name == "all"
        };
        if keep {
            v.push((process.to_string(), status.to_string()));
        }
    }
    v
}

fn plain(changed: bool, name: &str, state: &str) -> ModuleResult {
    ModuleResult::changed(changed)
        .with("name", name)
        .with("state", state)
}

#[async_trait::async_trait]
impl Module for Supervisorctl {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let raw_name = a.req_string(&["name"])?;
        let config = a.string(&["config"])?;
        let server_url = a.string(&["server_url"])?;
        let username = a.string(&["username"])?;
        let password = a.string(&["password"])?;
        let path = a.string(&["supervisorctl_path"])?;
        let state = a
            .choice(
                &["state"],
                &[
                    "present",
                    "started",
                    "restarted",
                    "stopped",
                    "absent",
                    "signalled",
                ],
                None,
            )?
            .ok_or_else(|| a.missing("state"))?;
        let stop_first = a.bool(&["stop_before_removing"], false)?;
        let signal = a.string(&["signal"])?;
        a.finish()?;
        if state == "signalled" && signal.is_none() {
            return Ok(Plan::done(ModuleResult::failed(
                "state is signalled but all of the following are missing: signal",
            )));
        }
        let group = raw_name.ends_with(':');
        let name = raw_name.trim_end_matches(':').to_string();

        // The program, found as community.general finds it.
        let find = match &path {
            Some(p) => format!(
                "[ -f {p} ] && [ -x {p} ] && echo {p} || echo '@@bad'",
                p = quote(p)
            ),
            None => "command -v supervisorctl || echo '@@missing'".to_string(),
        };
        let found = ctx.run(find, None).await?.stdout_str();
        let found = found.trim();
        if found == "@@missing" {
            return Ok(Plan::done(ModuleResult::failed(
                "Failed to find required executable \"supervisorctl\" in paths: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )));
        }
        if found == "@@bad" {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Provided path to supervisorctl does not exist or isn't executable: {}",
                path.unwrap_or_default()
            ))));
        }
        let mut prefix = quote(found);
        for (flag, v) in [
            ("-c", &config),
            ("-s", &server_url),
            ("-u", &username),
            ("-p", &password),
        ] {
            if let Some(v) = v {
                prefix.push_str(&format!(" {flag} {}", quote(v)));
            }
        }
        let ctl = Ctl { prefix };
        let processes = ctl.status(ctx, &name, group).await?;

        // Which processes an action applies to, and what it must answer.
        let action: Option<(Vec<String>, String, &str)> = match state.as_str() {
            "restarted" => None,
            "started" => Some((
                pick(&processes, |s| s != "RUNNING" && s != "STARTING"),
                "start".into(),
                "started",
            )),
            "stopped" => Some((
                pick(&processes, |s| s == "RUNNING" || s == "STARTING"),
                "stop".into(),
                "stopped",
            )),
            "signalled" => Some((
                pick(&processes, |s| s == "RUNNING"),
                format!("signal {}", signal.clone().unwrap_or_default()),
                "signalled",
            )),
            _ => None,
        };

        match state.as_str() {
            "absent" | "present" => {
                let there = !processes.is_empty();
                if there == (state == "present") {
                    return Ok(Plan::done(plain(false, &name, &state)));
                }
                let to_stop = if state == "absent" && stop_first {
                    pick(&processes, |s| s == "RUNNING" || s == "STARTING")
                } else {
                    Vec::new()
                };
                Ok(Plan::change(ModuleResult::changed(true), async move {
                    for p in &to_stop {
                        let (_, out) = ctl.run(ctx, &["stop", p]).await?;
                        if !out.contains(&format!("{p}: stopped")) {
                            return Ok(ModuleResult::failed(out));
                        }
                    }
                    let (rc, out) = ctl.run(ctx, &["reread"]).await?;
                    if rc != 0 {
                        return Ok(ModuleResult::failed(out).with("rc", rc));
                    }
                    let (verb, said) = if state == "present" {
                        ("add", "added process group")
                    } else {
                        ("remove", "removed process group")
                    };
                    let (_, out) = ctl.run(ctx, &[verb, &name]).await?;
                    if out.contains(&format!("{name}: {said}")) {
                        Ok(plain(true, &name, &state))
                    } else {
                        let mut r = ModuleResult::failed(out);
                        r = r.with("name", name.as_str()).with("state", state.as_str());
                        Ok(r)
                    }
                }))
            }
            "restarted" => {
                let preview = if processes.is_empty() {
                    no_such(&name)
                } else {
                    ModuleResult::changed(true)
                };
                Ok(Plan::fused(async move { Ok(preview) }, async move {
                    let (rc, out) = ctl.run(ctx, &["update"]).await?;
                    if rc != 0 {
                        return Ok(ModuleResult::failed(out).with("rc", rc));
                    }
                    let now = ctl.status(ctx, &name, group).await?;
                    if now.is_empty() {
                        return Ok(no_such(&name));
                    }
                    let all: Vec<String> = now.into_iter().map(|(p, _)| p).collect();
                    act(&ctl, ctx, &all, "restart", "started", &name, &state).await
                }))
            }
            _ => {
                if processes.is_empty() {
                    return Ok(Plan::done(no_such(&name)));
                }
                let (targets, verb, expect) = action.unwrap_or_default();
                if targets.is_empty() {
                    return Ok(Plan::done(plain(false, &name, &state)));
                }
                Ok(Plan::change(ModuleResult::changed(true), async move {
                    act(&ctl, ctx, &targets, &verb, expect, &name, &state).await
                }))
            }
        }
    }
}

fn pick(processes: &[(String, String)], f: impl Fn(&str) -> bool) -> Vec<String> {
    processes
        .iter()
        .filter(|(_, s)| f(s))
        .map(|(p, _)| p.clone())
        .collect()
}

fn no_such(name: &str) -> ModuleResult {
    ModuleResult::failed("ERROR (no such process)").with("name", name)
}

/// `take_action_on_processes`: one command per process, each checked.
async fn act(
    ctl: &Ctl,
    ctx: &TaskContext<'_>,
    targets: &[String],
    verb: &str,
    expect: &str,
    name: &str,
    state: &str,
) -> Result<ModuleResult, ModuleError> {
    let words: Vec<&str> = verb.split(' ').collect();
    for p in targets {
        let mut args = words.clone();
        args.push(p);
        let (rc, out) = ctl.run(ctx, &args).await?;
        if rc != 0 || !out.contains(&format!("{p}: {expect}")) {
            return Ok(ModuleResult::failed(out).with("rc", rc));
        }
    }
    Ok(plain(true, name, state).with(
        "affected",
        Value::from(
            targets
                .iter()
                .map(|t| Value::from(t.as_str()))
                .collect::<Vec<_>>(),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::matched;

    #[test]
    fn status_lines_are_matched_by_name_group_or_all() {
        let out = "web:web_0   RUNNING   pid 1, uptime 0:00:01\nweb:web_1   STOPPED   Not started\nworker   RUNNING   pid 2\n";
        assert_eq!(matched(out, "web", true).len(), 2);
        assert_eq!(
            matched(out, "worker", false),
            [("worker".to_string(), "RUNNING".to_string())]
        );
        assert_eq!(matched(out, "all", false).len(), 3);
        assert!(matched(out, "web", false).is_empty());
    }
}
