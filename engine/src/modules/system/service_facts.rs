//! `service_facts`: the host's services as the fact `services`, read the
//! way ansible-core's module reads them on Linux — `service --status-all`
//! where there is no chkconfig or OpenRC, and, on a host booted with
//! systemd, `systemctl list-units` then `list-unit-files` (with the state of
//! units only the second lists). One query round trip (two when systemd
//! has unit files the first listing missed); never a change.

use indexmap::IndexMap;
use minijinja::Value;

use crate::modules::args::{dict, ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;
use crate::vars::VarMap;

pub struct ServiceFacts;

static PARAMS: Params = Params {
    module: "service_facts",
    sets: &[&[]],
};

/// Runs everything the decision needs, each part behind a marker line.
/// systemd counts as the init system as ansible-core's
/// `is_systemd_managed` decides: `systemctl` plus one of sd_booted's
/// canaries, or PID 1 named `systemd`.
const QUERY: &str = r#"export LANG=C LC_ALL=C
has() { command -v "$1" >/dev/null 2>&1 && echo yes || echo no; }
echo "@@tools service=$(has service) chkconfig=$(has chkconfig) rc-status=$(has rc-status) systemctl=$(has systemctl)"
sd=no
if command -v systemctl >/dev/null 2>&1; then
  for c in /run/systemd/system/ /dev/.run/systemd/ /dev/.systemd/; do [ -e "$c" ] && sd=yes; done
  [ "$sd" = no ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && sd=yes
fi
echo "@@systemd $sd"
if command -v service >/dev/null 2>&1 && ! command -v chkconfig >/dev/null 2>&1 && ! command -v rc-status >/dev/null 2>&1; then
  out=$(service --status-all 2>/dev/null); rc=$?
  err=; [ "$rc" = 0 ] || err=$(service --status-all 2>&1 >/dev/null)
  initd=no; [ -e /etc/init.d ] && initd=yes
  echo "@@sysv rc=$rc initd=$initd"
  printf '%s\n' "$out"
  echo "@@sysv-err"
  printf '%s\n' "$err"
fi
if [ "$sd" = yes ]; then
  out=$(systemctl list-units --no-pager --type service --all --plain 2>&1); rc=$?
  echo "@@units rc=$rc"
  printf '%s\n' "$out"
  out=$(systemctl list-unit-files --no-pager --type service --all 2>&1); rc=$?
  echo "@@unit-files rc=$rc"
  printf '%s\n' "$out"
fi
echo "@@end"
"#;

/// The output of [`QUERY`], cut at its markers.
struct Sections<'a> {
    parts: Vec<(&'a str, &'a str)>,
}

impl<'a> Sections<'a> {
    fn parse(out: &'a str) -> Sections<'a> {
        let mut parts = Vec::new();
        let mut rest = out;
        while let Some(i) = rest.find("@@") {
            let after = &rest[i + 2..];
            let (head, body) = after.split_once('\n').unwrap_or((after, ""));
            let end = body.find("\n@@").map(|j| j + 1).unwrap_or(body.len());
            let body_text = if body.starts_with("@@") {
                ""
            } else {
                &body[..end]
            };
            parts.push((head, body_text));
            rest = if body.starts_with("@@") {
                body
            } else {
                &body[end..]
            };
        }
        Sections { parts }
    }

    fn get(&self, name: &str) -> Option<(&'a str, &'a str)> {
        self.parts.iter().find_map(|(h, b)| {
            let (n, attrs) = h.split_once(' ').unwrap_or((h, ""));
            (n == name).then_some((attrs, *b))
        })
    }
}

fn attr<'a>(attrs: &'a str, key: &str) -> Option<&'a str> {
    attrs
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

type Services = IndexMap<String, IndexMap<&'static str, String>>;

fn service(
    name: &str,
    state: &str,
    status: Option<&str>,
    source: &str,
) -> IndexMap<&'static str, String> {
    let mut m = IndexMap::new();
    m.insert("name", name.to_string());
    m.insert("state", state.to_string());
    if let Some(s) = status {
        m.insert("status", s.to_string());
    }
    m.insert("source", source.to_string());
    m
}

/// `service --status-all` lines: ` [ + ]  name` running, ` [ - ]` stopped.
fn sysv(out: &str, services: &mut Services) {
    for line in out.lines() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix("[ ") else {
            continue;
        };
        let (state, name) = match rest.split_once(" ]") {
            Some(("+", n)) => ("running", n),
            Some(("-", n)) => ("stopped", n),
            _ => continue,
        };
        let name = name.trim_start();
        if name.is_empty() || !name.starts_with(|c: char| !c.is_whitespace()) {
            continue;
        }
        services.insert(name.to_string(), service(name, state, None, "sysv"));
    }
}

const BAD_STATES: [&str; 3] = ["not-found", "masked", "failed"];

/// `systemctl list-units --plain` lines, read field by field as
/// ansible-core reads them.
fn units(out: &str, services: &mut Services) {
    for line in out.lines().filter(|l| l.contains(".service")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            continue;
        }
        let head = &fields[..fields.len() - 1];
        let status = BAD_STATES
            .iter()
            .find(|b| head.contains(b))
            .copied()
            .unwrap_or(fields[2]);
        let state = if fields[3] == "running" {
            "running"
        } else {
            "stopped"
        };
        services.insert(
            fields[0].to_string(),
            service(fields[0], state, Some(status), "systemd"),
        );
    }
}

/// `systemctl list-unit-files` lines: the unit file state becomes the
/// status; units not listed before are returned to be asked about.
fn unit_files(out: &str, services: &mut Services) -> Vec<(String, String)> {
    let mut unknown = Vec::new();
    for line in out.lines().filter(|l| l.contains(".service")) {
        let mut f = line.split_whitespace();
        let (Some(name), Some(status)) = (f.next(), f.next()) else {
            continue;
        };
        match services.get_mut(name) {
            None => unknown.push((name.to_string(), status.to_string())),
            Some(s) => {
                if !BAD_STATES.contains(&s["status"].as_str()) {
                    s.insert("status", status.to_string());
                }
            }
        }
    }
    unknown
}

#[async_trait::async_trait]
impl Module for ServiceFacts {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        ModuleArgs::new(&PARAMS, args).finish()?;
        let out = ctx.run(QUERY, None).await?;
        let text = out.stdout_str();
        let s = Sections::parse(&text);
        let mut services = Services::new();
        let mut warnings: Vec<String> = Vec::new();
        if let Some((attrs, body)) = s.get("sysv") {
            let rc = attr(attrs, "rc").unwrap_or("0");
            let initd = attr(attrs, "initd") == Some("yes");
            // rc 4 without /etc/init.d: no SysV at all, as ansible-core reads it.
            if rc != "4" || initd {
                if rc != "0" {
                    let err = s.get("sysv-err").map(|(_, b)| b.trim_end()).unwrap_or("");
                    warnings.push(format!("Unable to query 'service' tool ({rc}): {err}"));
                }
                sysv(body, &mut services);
            }
        }
        if let Some((attrs, body)) = s.get("units") {
            if attr(attrs, "rc") == Some("0") {
                units(body, &mut services);
            } else {
                warnings.push(format!(
                    "Could not list units from systemd: {}",
                    body.trim_end()
                ));
            }
        }
        if let Some((attrs, body)) = s.get("unit-files") {
            if attr(attrs, "rc") == Some("0") {
                let unknown = unit_files(body, &mut services);
                if !unknown.is_empty() {
                    let names: Vec<String> = unknown.iter().map(|(n, _)| quote(n)).collect();
                    let script = format!(
                        "export LANG=C LC_ALL=C\nfor u in {}; do printf '%s\\n' \"$(systemctl show \"$u\" --property=ActiveState 2>/dev/null)\"; done\n",
                        names.join(" ")
                    );
                    let states = ctx.run(script, None).await?.stdout_str();
                    let mut lines = states.lines();
                    for (name, status) in unknown {
                        let state = lines
                            .next()
                            .and_then(|l| l.strip_prefix("ActiveState="))
                            .filter(|s| !s.is_empty())
                            .unwrap_or("unknown");
                        services.insert(
                            name.clone(),
                            service(&name, state, Some(&status), "systemd"),
                        );
                    }
                }
            } else {
                warnings.push(format!(
                    "Could not get unit files data from systemd: {}",
                    body.trim_end()
                ));
            }
        }
        let mut res = ModuleResult::ok();
        if !warnings.is_empty() {
            res.data.insert("warnings".into(), Value::from(warnings));
        }
        if services.is_empty() {
            res.skipped = true;
            res.msg = Some(
                "Failed to find any services. This can be due to privileges or some other configuration issue."
                    .into(),
            );
            return Ok(Plan::done(res));
        }
        let table: IndexMap<String, Value> = services
            .into_iter()
            .map(|(k, v)| {
                let fields: IndexMap<String, Value> = v
                    .into_iter()
                    .map(|(f, s)| (f.to_string(), Value::from(s)))
                    .collect();
                (k, dict(fields))
            })
            .collect();
        let mut facts = VarMap::new();
        facts.insert("services".into(), dict(table));
        res.facts = Some(facts);
        Ok(Plan::done(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysv_and_systemd_listings_read_as_ansible_reads_them() {
        let mut s = Services::new();
        sysv(" [ + ]  cron\n [ - ]  ssh\n [ ? ]  hwclock.sh\n", &mut s);
        assert_eq!(s["cron"]["state"], "running");
        assert_eq!(s["ssh"]["state"], "stopped");
        assert!(!s.contains_key("hwclock.sh"));

        let mut s = Services::new();
        units(
            "cron.service loaded active running Regular background program processing daemon\n\
             foo.service not-found inactive dead foo.service\n\
             x.service loaded failed failed X\n",
            &mut s,
        );
        assert_eq!(s["cron.service"]["state"], "running");
        assert_eq!(s["cron.service"]["status"], "active");
        assert_eq!(s["foo.service"]["status"], "not-found");
        assert_eq!(s["x.service"]["status"], "failed");
        let unknown = unit_files(
            "UNIT FILE STATE VENDOR PRESET\ncron.service enabled enabled\nx.service enabled enabled\nnew.service disabled enabled\n\n3 unit files listed.\n",
            &mut s,
        );
        assert_eq!(s["cron.service"]["status"], "enabled");
        assert_eq!(s["x.service"]["status"], "failed");
        assert_eq!(
            unknown,
            [("new.service".to_string(), "disabled".to_string())]
        );
    }

    #[test]
    fn sections_split_at_markers() {
        let out = "@@tools a=1\n@@sysv rc=0 initd=yes\n [ + ]  cron\n@@sysv-err\n\n@@end\n";
        let s = Sections::parse(out);
        assert_eq!(s.get("sysv"), Some(("rc=0 initd=yes", " [ + ]  cron\n")));
        assert_eq!(s.get("tools"), Some(("a=1", "")));
    }
}
