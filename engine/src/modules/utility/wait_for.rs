//! `wait_for`: waits for a port, a file or a regex in a file, checked FROM
//! THE HOST like Ansible. The whole polling loop runs remotely in one
//! command (bash's `/dev/tcp`, else `nc`), so waiting costs one round trip.

use std::time::{Duration, Instant};

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct WaitFor;

/// Exit status of the remote loop when it timed out.
const TIMEOUT_RC: i32 = 75;

const PORT_FN: &str = r#"kport() {
if command -v bash >/dev/null 2>&1; then timeout "$kct" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$khost" "$kport" 2>/dev/null
elif command -v nc >/dev/null 2>&1; then nc -z -w "$kct" "$khost" "$kport" 2>/dev/null
else return 2; fi
}
kbanner() {
timeout "$kct" bash -c 'exec 3<>"/dev/tcp/$0/$1"; timeout 1 cat <&3' "$khost" "$kport" 2>/dev/null | grep -Eq -- "$kre"
}
"#;

/// The arguments `wait_for` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "wait_for",
    sets: &[&[
        &["host"],
        &["port"],
        &["path"],
        &["state"],
        &["search_regex"],
        &["timeout"],
        &["delay"],
        &["sleep"],
        &["connect_timeout"],
        &["msg"],
        &["exclude_hosts"],
        &["active_connection_states"],
    ]],
};

#[async_trait::async_trait]
impl Module for WaitFor {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let host = a.string(&["host"])?.unwrap_or_else(|| "127.0.0.1".into());
        let port = a.int(&["port"])?;
        let path = a.string(&["path"])?;
        let state = a
            .choice(
                &["state"],
                &["started", "stopped", "present", "absent", "drained"],
                Some("started"),
            )?
            .unwrap_or_default();
        let search_regex = a.string(&["search_regex"])?;
        let timeout = a.int(&["timeout"])?.unwrap_or(300);
        let delay = a.int(&["delay"])?.unwrap_or(0);
        let sleep = a.int(&["sleep"])?.unwrap_or(1).max(1);
        let connect_timeout = a.int(&["connect_timeout"])?.unwrap_or(5).max(1);
        let msg = a.string(&["msg"])?;
        a.ignore(&["exclude_hosts", "active_connection_states"]);
        a.finish()?;
        if port.is_some() && path.is_some() {
            return Err(ModuleError::Args(
                "port and path parameters are mutually exclusive (module wait_for)".into(),
            ));
        }

        let check = match (&port, &path, state.as_str()) {
            (Some(_), _, "started" | "present") if search_regex.is_some() => "kbanner".to_string(),
            (Some(_), _, "started" | "present") => "kport".to_string(),
            (Some(_), _, "stopped" | "absent") => "! kport".to_string(),
            (Some(p), _, _) => {
                format!("[ -z \"$(ss -Htn state established '( sport = :{p} )' 2>/dev/null)\" ]")
            }
            (None, Some(_), "present" | "started") if search_regex.is_some() => {
                "[ -r \"$kpath\" ] && grep -Eq -- \"$kre\" \"$kpath\"".to_string()
            }
            (None, Some(_), "present" | "started") => "[ -e \"$kpath\" ]".to_string(),
            (None, Some(_), "absent" | "stopped") => "! [ -e \"$kpath\" ]".to_string(),
            (None, Some(_), _) => {
                return Err(ModuleError::Args(
                    "state=drained is only valid with port".into(),
                ))
            }
            // Neither port nor path: just wait out the timeout.
            (None, None, _) => "false".to_string(),
        };
        let plain_sleep = port.is_none() && path.is_none();
        let script = format!(
            "khost={}\nkport={}\nkpath={}\nkre={}\nkct={connect_timeout}\n{PORT_FN}sleep {delay}\nkstart=$(date +%s)\nkend=$((kstart + {timeout}))\nwhile :; do\n  if {check}; then echo \"ELAPSED $(( $(date +%s) - kstart ))\"; exit 0; fi\n  if [ \"$(date +%s)\" -ge \"$kend\" ]; then exit {}; fi\n  sleep {sleep}\ndone\n",
            quote(&host),
            port.unwrap_or(0),
            quote(path.as_deref().unwrap_or("")),
            quote(search_regex.as_deref().unwrap_or("")),
            if plain_sleep { 0 } else { TIMEOUT_RC },
        );
        let planned = ModuleResult::ok().with_msg("wait_for is not run in check mode");
        Ok(Plan::change(planned, async move {
            let start = Instant::now();
            let mut cmd = ctx.command(script);
            cmd.timeout = Some(Duration::from_secs(
                (timeout + delay + connect_timeout + 30) as u64,
            ));
            let out = ctx.conn.exec(&cmd).await?;
            let elapsed = start.elapsed().as_secs();
            let mut res = ModuleResult::ok()
                .with("elapsed", elapsed)
                .with("state", state.clone());
            if let Some(p) = port {
                res.data.insert("port".into(), p.into());
            }
            if let Some(p) = &path {
                res.data.insert("path".into(), p.clone().into());
            }
            if let Some(r) = &search_regex {
                res.data.insert("search_regex".into(), r.clone().into());
            }
            if out.rc == 0 {
                return Ok(res);
            }
            res.failed = true;
            res.msg = Some(match (msg, port, &path) {
                (Some(m), _, _) => m,
                (None, Some(p), _) => format!("Timeout when waiting for {host}:{p}"),
                (None, None, Some(p)) if search_regex.is_some() => {
                    format!(
                        "Timeout when waiting for search string {} in {p}",
                        search_regex.unwrap_or_default()
                    )
                }
                (None, None, Some(p)) => format!("Timeout when waiting for file {p}"),
                _ => format!(
                    "wait_for failed (rc={}): {}",
                    out.rc,
                    out.stderr_str().trim()
                ),
            });
            Ok(res)
        }))
    }
}
