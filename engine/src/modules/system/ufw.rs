//! `ufw` (community.general): the firewall's state, default policies,
//! logging and rules, through the `ufw` command on the host.
//!
//! community.general decides `changed` by running `ufw` and comparing: the
//! `ufw status verbose` text and the `### tuple` lines of the user rules
//! files before and after, and in check mode what `ufw --dry-run` prints
//! against the rules there now. Only ufw itself knows whether a rule is
//! already there in its own normalised form, so Keel does the same, with
//! the same commands in the same order (each shell-quoted word for word),
//! and returns the same `commands` list and `msg`. The module is a
//! [`Plan::fused`] one: check mode runs the dry-run path, which changes
//! nothing.
//!
//! community.general reports no diff for this module, so neither does Keel.

use minijinja::Value;
use regex::Regex;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Ufw;

static PARAMS: Params = Params {
    module: "ufw",
    sets: &[&[
        &["state"],
        &["default", "policy"],
        &["logging"],
        &["direction"],
        &["delete"],
        &["route"],
        &["insert"],
        &["insert_relative_to"],
        &["rule"],
        &["interface", "if"],
        &["interface_in", "if_in"],
        &["interface_out", "if_out"],
        &["log"],
        &["from_ip", "from", "src"],
        &["from_port"],
        &["to_ip", "dest", "to"],
        &["to_port", "port"],
        &["proto", "protocol"],
        &["name", "app"],
        &["comment"],
    ]],
};

const IPV4: &str =
    r"((25[0-5]|(2[0-4]|1{0,1}[0-9]){0,1}[0-9])\.){3,3}(25[0-5]|(2[0-4]|1{0,1}[0-9]){0,1}[0-9])";
const IPV6: &str = concat!(
    r"(([0-9a-fA-F]{1,4}:){7,7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:",
    r"|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}",
    r"(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4})",
    r"{1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]",
    r"{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:((:[0-9a-fA-F]",
    r"{1,4}){1,6})|:((:[0-9a-fA-F]{1,4}){1,7}|:)|fe80:(:[0-9a-fA-F]{0,4})",
    r"{0,4}%[0-9a-zA-Z]{1,}|::(ffff(:0{1,4}){0,1}:){0,1}((25[0-5]|(2[0-4]",
    r"|1{0,1}[0-9]){0,1}[0-9])\.){3,3}(25[0-5]|(2[0-4]|1{0,1}[0-9]){0,1}",
    r"[0-9])|([0-9a-fA-F]{1,4}:){1,4}:((25[0-5]|(2[0-4]|1{0,1}[0-9]){0,1}",
    r"[0-9])\.){3,3}(25[0-5]|(2[0-4]|1{0,1}[0-9]){0,1}[0-9]))"
);

const USER_RULES: &[&str] = &[
    "/lib/ufw/user.rules",
    "/lib/ufw/user6.rules",
    "/etc/ufw/user.rules",
    "/etc/ufw/user6.rules",
    "/var/lib/ufw/user.rules",
    "/var/lib/ufw/user6.rules",
];

/// The arguments, as read.
#[derive(Clone)]
struct UfwArgs {
    state: Option<String>,
    default: Option<String>,
    logging: Option<String>,
    direction: Option<String>,
    delete: bool,
    route: bool,
    insert: Option<i64>,
    insert_relative_to: String,
    rule: Option<String>,
    interface: Option<String>,
    interface_in: Option<String>,
    interface_out: Option<String>,
    log: bool,
    from_ip: String,
    from_port: Option<String>,
    to_ip: String,
    to_port: Option<String>,
    proto: Option<String>,
    name: Option<String>,
    comment: Option<String>,
}

/// Why a run stopped: community.general's `fail_json`, with the commands
/// run so far when a command failed (`true`), without for a bad argument.
struct Stop(String, bool);

/// One run of the module's logic, the commands it ran and their outputs.
struct Runner<'a> {
    ctx: &'a TaskContext<'a>,
    check: bool,
    ufw: String,
    grep: String,
    commands: Vec<String>,
}

impl Runner<'_> {
    /// `execute`: the words joined with spaces (as the command is
    /// recorded), split again as `run_command` splits a string, each word
    /// quoted for the shell, with `LANG=C`.
    async fn execute(
        &mut self,
        words: &[String],
        ignore_error: bool,
    ) -> Result<Result<String, Stop>, ModuleError> {
        let line = words.join(" ");
        self.commands.push(line.clone());
        let argv = shell_words::split(&line).unwrap_or_else(|_| vec![line.clone()]);
        let script = format!(
            "LANG=C; export LANG\n{}",
            argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
        );
        let out = self.ctx.run(script, None).await?;
        if out.rc != 0 && !ignore_error {
            let err = out.stderr_str();
            let msg = if err.is_empty() {
                out.stdout_str()
            } else {
                err
            };
            return Ok(Err(Stop(msg.to_string(), true)));
        }
        Ok(Ok(out.stdout_str().to_string()))
    }

    fn base(&self) -> Vec<String> {
        let mut v = vec![self.ufw.clone()];
        if self.check {
            v.push("--dry-run".into());
        }
        v
    }

    async fn current_rules(&mut self) -> Result<Result<String, Stop>, ModuleError> {
        let mut words = vec![self.grep.clone(), "-h".into(), "'^### tuple'".into()];
        words.extend(USER_RULES.iter().map(|s| s.to_string()));
        self.execute(&words, true).await
    }

    async fn version(&mut self) -> Result<Result<(u32, u32), Stop>, ModuleError> {
        let out = match self
            .execute(&[self.ufw.clone(), "--version".into()], false)
            .await?
        {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        let first = out.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let re = Regex::new(r"^ufw.+(\d+)\.(\d+)(?:\.(\d+))?.*$").expect("valid regex");
        match re.captures(first) {
            Some(c) => Ok(Ok((c[1].parse().unwrap_or(0), c[2].parse().unwrap_or(0)))),
            None => Ok(Err(Stop("Failed to get ufw version.".into(), false))),
        }
    }

    /// The module's `main` after argument checks.
    async fn run(&mut self, p: &UfwArgs) -> Result<Result<ModuleResult, Stop>, ModuleError> {
        macro_rules! tri {
            ($e:expr) => {
                match $e.await? {
                    Ok(v) => v,
                    Err(s) => return Ok(Err(s)),
                }
            };
        }
        let pre_state = tri!(self.execute(&[self.ufw.clone(), "status verbose".into()], false));
        let pre_rules = tri!(self.current_rules());
        let mut changed = false;
        let ipv4 = Regex::new(IPV4).expect("valid regex");
        let ipv6 = Regex::new(IPV6).expect("valid regex");

        if let Some(value) = &p.state {
            if value == "reloaded" || value == "reset" {
                changed = true;
            }
            if self.check {
                let enabled = pre_state.contains(" active");
                if (value == "disabled" && enabled) || (value == "enabled" && !enabled) {
                    changed = true;
                }
            } else {
                let verb = match value.as_str() {
                    "enabled" => "enable",
                    "disabled" => "disable",
                    "reloaded" => "reload",
                    _ => "reset",
                };
                let mut w = self.base();
                w.extend(["-f".to_string(), verb.to_string()]);
                tri!(self.execute(&w, false));
            }
        }
        if let Some(value) = &p.default {
            if !matches!(
                p.direction.as_deref(),
                None | Some("outgoing") | Some("incoming") | Some("routed")
            ) {
                return Ok(Err(Stop(
                    "For default, direction must be one of \"outgoing\", \"incoming\" and \
                     \"routed\", or direction must not be specified."
                        .into(),
                    false,
                )));
            }
            if self.check {
                let re = Regex::new(
                    r"Default: (deny|allow|reject) \(incoming\), (deny|allow|reject) \(outgoing\), (deny|allow|reject|disabled) \(routed\)",
                )
                .expect("valid regex");
                match re.captures(&pre_state) {
                    Some(c) => {
                        let idx = match p.direction.as_deref() {
                            Some("outgoing") => 2,
                            Some("routed") => 3,
                            _ => 1,
                        };
                        let v = &c[idx];
                        if v != value && v != "disabled" {
                            changed = true;
                        }
                    }
                    None => changed = true,
                }
            } else {
                let mut w = self.base();
                w.extend(["default".to_string(), value.clone()]);
                if let Some(d) = &p.direction {
                    w.push(d.clone());
                }
                tri!(self.execute(&w, false));
            }
        }
        if let Some(value) = &p.rule {
            if !matches!(p.direction.as_deref(), None | Some("in") | Some("out")) {
                return Ok(Err(Stop(
                    "For rules, direction must be one of \"in\" and \"out\", or direction must \
                     not be specified."
                        .into(),
                    false,
                )));
            }
            if !p.route && p.interface_in.is_some() && p.interface_out.is_some() {
                return Ok(Err(Stop(
                    "Only route rules can combine interface_in and interface_out".into(),
                    false,
                )));
            }
            let mut w = self.base();
            if p.route {
                w.push("route".into());
            }
            if p.delete {
                w.push("delete".into());
            }
            if let Some(n) = p.insert.filter(|_| !p.delete) {
                let insert_to = if p.insert_relative_to == "zero" {
                    Some(n)
                } else {
                    let out = self
                        .ctx
                        .run(format!("LANG=C {} status numbered", quote(&self.ufw)), None)
                        .await?;
                    let re = Regex::new(r"^\[ *([0-9]+)\] ").expect("valid regex");
                    let lines: Vec<(i64, bool)> = out
                        .stdout_str()
                        .lines()
                        .filter_map(|l| {
                            re.captures(l)
                                .map(|c| (c[1].parse().unwrap_or(0), l.contains("(v6)")))
                        })
                        .collect();
                    let last = lines.iter().map(|(n, _)| *n).max().unwrap_or(0);
                    let last4 = lines.iter().filter(|(_, v6)| !v6).map(|(n, _)| *n).max();
                    let has6 = lines.iter().any(|(_, v6)| *v6);
                    let relative = match p.insert_relative_to.as_str() {
                        "first-ipv4" => 1,
                        "last-ipv4" => last4.unwrap_or(1),
                        "first-ipv6" => last4.map(|n| n + 1).unwrap_or(1),
                        _ => {
                            if has6 {
                                last
                            } else {
                                last + 1
                            }
                        }
                    };
                    let to = n + relative;
                    (to <= last).then_some(to)
                };
                if let Some(to) = insert_to {
                    w.push(format!("insert {to}"));
                }
            }
            w.push(value.clone());
            if let Some(d) = &p.direction {
                w.push(d.clone());
            }
            if let Some(i) = &p.interface {
                w.push(format!("on {i}"));
            }
            if let Some(i) = &p.interface_in {
                w.push(format!("in on {i}"));
            }
            if let Some(i) = &p.interface_out {
                w.push(format!("out on {i}"));
            }
            if p.log {
                w.push("log".into());
            }
            let nonempty = |s: &str| !s.is_empty();
            if nonempty(&p.from_ip) {
                w.push(format!("from {}", p.from_ip));
            }
            if let Some(v) = p.from_port.as_deref().filter(|s| nonempty(s)) {
                w.push(format!("port {v}"));
            }
            if nonempty(&p.to_ip) {
                w.push(format!("to {}", p.to_ip));
            }
            if let Some(v) = p.to_port.as_deref().filter(|s| nonempty(s)) {
                w.push(format!("port {v}"));
            }
            if let Some(v) = p.proto.as_deref().filter(|s| nonempty(s)) {
                w.push(format!("proto {v}"));
            }
            if let Some(v) = p.name.as_deref().filter(|s| nonempty(s)) {
                w.push(format!("app '{v}'"));
            }
            let (major, minor) = tri!(self.version());
            if (major == 0 && minor >= 35) || major > 0 {
                if let Some(c) = p.comment.as_deref().filter(|s| nonempty(s)) {
                    w.push(format!("comment '{c}'"));
                }
            }
            let rules_dry = tri!(self.execute(&w, false));
            if self.check {
                let total = rules_dry.split_inclusive('\n').count();
                let skipping = rules_dry
                    .split_inclusive('\n')
                    .filter(|l| l.contains("Skipping"))
                    .count();
                if !(skipping > 0 && skipping == total) {
                    let dry: String = rules_dry
                        .split_inclusive('\n')
                        .filter(|l| l.starts_with("### tuple"))
                        .collect();
                    let keep = |re: &Regex, text: &str| -> String {
                        text.split_inclusive('\n')
                            .filter(|l| re.is_match(l))
                            .collect()
                    };
                    let starts = |re: &Regex, s: &str| re.find(s).is_some_and(|m| m.start() == 0);
                    if starts(&ipv4, &p.from_ip) || starts(&ipv4, &p.to_ip) {
                        if keep(&ipv4, &pre_rules) != keep(&ipv4, &dry) {
                            changed = true;
                        }
                    } else if starts(&ipv6, &p.from_ip) || starts(&ipv6, &p.to_ip) {
                        if keep(&ipv6, &pre_rules) != keep(&ipv6, &dry) {
                            changed = true;
                        }
                    } else if pre_rules != dry {
                        changed = true;
                    }
                }
            }
        }
        if let Some(value) = &p.logging {
            let re = Regex::new(r"Logging: (on|off)(?: \(([a-z]+)\))?").expect("valid regex");
            match re.captures(&pre_state) {
                Some(c) => {
                    let level = c.get(2).map(|m| m.as_str());
                    let on_off = &c[1];
                    if value != "off" {
                        if on_off == "off" || (value != "on" && Some(value.as_str()) != level) {
                            changed = true;
                        }
                    } else if on_off != "off" {
                        changed = true;
                    }
                }
                None => changed = true,
            }
            if !self.check {
                let mut w = self.base();
                w.extend(["logging".to_string(), value.clone()]);
                tri!(self.execute(&w, false));
            }
        }

        let commands = Value::from(self.commands.clone());
        if self.check {
            return Ok(Ok(ModuleResult::changed(changed).with("commands", commands)));
        }
        let post_state = tri!(self.execute(
            &[self.ufw.clone(), "status".into(), "verbose".into()],
            false
        ));
        if !changed {
            let post_rules = tri!(self.current_rules());
            changed = pre_state != post_state || pre_rules != post_rules;
        }
        Ok(Ok(ModuleResult::changed(changed)
            .with("commands", Value::from(self.commands.clone()))
            .with_msg(post_state.trim_end().to_string())))
    }
}

/// `get_bin_path`: the first executable in the usual directories.
const FIND_BINS: &str = "for b in ufw grep; do f=MISSING; \
    for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do \
    if [ -x \"$d/$b\" ]; then f=\"$d/$b\"; break; fi; done; echo \"$f\"; done";

async fn run_module<'a>(
    ctx: &'a TaskContext<'a>,
    p: UfwArgs,
    check: bool,
) -> Result<ModuleResult, ModuleError> {
    let out = ctx.run(FIND_BINS, None).await?;
    let text = out.stdout_str();
    let mut lines = text.lines();
    let (ufw, grep) = (
        lines.next().unwrap_or("MISSING").to_string(),
        lines.next().unwrap_or("MISSING").to_string(),
    );
    for (bin, path) in [("ufw", &ufw), ("grep", &grep)] {
        if path == "MISSING" {
            return Ok(ModuleResult::failed(format!(
                "Failed to find required executable \"{bin}\" in paths: \
                 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            )));
        }
    }
    let mut r = Runner {
        ctx,
        check,
        ufw,
        grep,
        commands: vec![],
    };
    match r.run(&p).await? {
        Ok(res) => Ok(res),
        Err(Stop(msg, true)) => {
            Ok(ModuleResult::failed(msg).with("commands", Value::from(r.commands.clone())))
        }
        Err(Stop(msg, false)) => Ok(ModuleResult::failed(msg)),
    }
}

#[async_trait::async_trait]
impl Module for Ufw {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let p = UfwArgs {
            state: a.choice(
                &["state"],
                &["enabled", "disabled", "reloaded", "reset"],
                None,
            )?,
            default: a.choice(&["default", "policy"], &["allow", "deny", "reject"], None)?,
            logging: a.choice(
                &["logging"],
                &["full", "high", "low", "medium", "off", "on"],
                None,
            )?,
            direction: a.choice(
                &["direction"],
                &["in", "incoming", "out", "outgoing", "routed"],
                None,
            )?,
            delete: a.bool(&["delete"], false)?,
            route: a.bool(&["route"], false)?,
            insert: a.int(&["insert"])?,
            insert_relative_to: a
                .choice(
                    &["insert_relative_to"],
                    &["zero", "first-ipv4", "last-ipv4", "first-ipv6", "last-ipv6"],
                    Some("zero"),
                )?
                .unwrap_or_default(),
            rule: a.choice(&["rule"], &["allow", "deny", "limit", "reject"], None)?,
            interface: a.string(&["interface", "if"])?,
            interface_in: a.string(&["interface_in", "if_in"])?,
            interface_out: a.string(&["interface_out", "if_out"])?,
            log: a.bool(&["log"], false)?,
            from_ip: a
                .string(&["from_ip", "from", "src"])?
                .unwrap_or_else(|| "any".into()),
            from_port: a.string(&["from_port"])?,
            to_ip: a
                .string(&["to_ip", "dest", "to"])?
                .unwrap_or_else(|| "any".into()),
            to_port: a.string(&["to_port", "port"])?,
            proto: a.choice(
                &["proto", "protocol"],
                &[
                    "ah", "any", "esp", "ipv6", "tcp", "udp", "gre", "igmp", "vrrp",
                ],
                None,
            )?,
            name: a.string(&["name", "app"])?,
            comment: a.string(&["comment"])?,
        };
        a.finish()?;

        let fail = |m: String| Ok(Plan::done(ModuleResult::failed(m)));
        let exclusive = [p.name.is_some(), p.proto.is_some(), p.logging.is_some()];
        if exclusive.iter().filter(|x| **x).count() > 1 {
            return fail("parameters are mutually exclusive: name|proto|logging".into());
        }
        if p.direction.is_some() && p.interface_in.is_some() {
            return fail("parameters are mutually exclusive: direction|interface_in".into());
        }
        if p.direction.is_some() && p.interface_out.is_some() {
            return fail("parameters are mutually exclusive: direction|interface_out".into());
        }
        if p.state.is_none() && p.default.is_none() && p.rule.is_none() && p.logging.is_none() {
            return fail("one of the following is required: state, default, rule, logging".into());
        }
        if p.interface.is_some() && p.direction.is_none() {
            return fail("missing parameter(s) required by 'interface': direction".into());
        }
        let preview_args = p.clone();
        Ok(Plan::fused(
            run_module(ctx, preview_args, true),
            run_module(ctx, p, false),
        ))
    }
}
