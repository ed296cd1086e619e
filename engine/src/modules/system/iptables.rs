//! `iptables` (ansible-core): one rule, a chain policy, a flush, or a
//! user chain, in one table, for IPv4, IPv6 or both.
//!
//! The rule is built as an argument list exactly as ansible-core's
//! `construct_rule` builds it (same flags, same order), and `rule` in the
//! result is that list joined with spaces. Query (one round trip): for each
//! `iptables`/`ip6tables` binary, its version line and whatever the branch
//! needs: `-C` for a rule, `-L` for a chain's policy or existence. Decide as
//! ansible-core does: a flush is always a change; a policy changes when the
//! `-L` header shows another; a rule when `-C`'s answer differs from
//! `state`; a chain (no rule given) when its existence differs. Apply: the
//! `-A`/`-I`/`-D`/`-F`/`-P`/`-N`/`-X` commands, each word shell-quoted.
//!
//! ansible-core reports no diff for this module, so neither does Keel.

use minijinja::value::ValueKind;
use minijinja::Value;

use crate::modules::args::{scalar_string, ModuleArgs, Params};
use crate::modules::kit::{apply, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Iptables;

static PARAMS: Params = Params {
    module: "iptables",
    sets: &[&[
        &["table"],
        &["state"],
        &["action"],
        &["ip_version"],
        &["chain"],
        &["rule_num"],
        &["protocol"],
        &["wait"],
        &["source"],
        &["to_source"],
        &["destination"],
        &["to_destination"],
        &["match"],
        &["tcp_flags"],
        &["jump"],
        &["gateway"],
        &["log_prefix"],
        &["log_level"],
        &["goto"],
        &["in_interface"],
        &["out_interface"],
        &["fragment"],
        &["set_counters"],
        &["source_port"],
        &["destination_port"],
        &["destination_ports"],
        &["to_ports"],
        &["set_dscp_mark"],
        &["set_dscp_mark_class"],
        &["comment"],
        &["ctstate"],
        &["src_range"],
        &["dst_range"],
        &["match_set"],
        &["match_set_flags"],
        &["limit"],
        &["limit_burst"],
        &["uid_owner"],
        &["gid_owner"],
        &["reject_with"],
        &["icmp_type"],
        &["syn"],
        &["flush"],
        &["policy"],
        &["chain_management"],
        &["numeric"],
    ]],
};

/// The arguments `construct_rule` reads.
#[derive(Default, Clone)]
struct RuleArgs {
    protocol: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    matches: Vec<String>,
    tcp_flags: Option<(Vec<String>, Vec<String>)>,
    jump: Option<String>,
    gateway: Option<String>,
    log_prefix: Option<String>,
    log_level: Option<String>,
    to_destination: Option<String>,
    destination_ports: Vec<String>,
    to_source: Option<String>,
    goto: Option<String>,
    in_interface: Option<String>,
    out_interface: Option<String>,
    fragment: Option<String>,
    set_counters: Option<String>,
    source_port: Option<String>,
    destination_port: Option<String>,
    to_ports: Option<String>,
    set_dscp_mark: Option<String>,
    set_dscp_mark_class: Option<String>,
    syn: String,
    ctstate: Vec<String>,
    src_range: Option<String>,
    dst_range: Option<String>,
    match_set: Option<String>,
    match_set_flags: Option<String>,
    limit: Option<String>,
    limit_burst: Option<String>,
    uid_owner: Option<String>,
    gid_owner: Option<String>,
    reject_with: Option<String>,
    icmp_type: Option<String>,
    ip_version: String,
    comment: Option<String>,
}

/// `append_param`: `FLAG VALUE`, or `! FLAG VALUE` for a value starting
/// with `!`.
fn param(rule: &mut Vec<String>, value: &Option<String>, flag: &str) {
    if let Some(v) = value {
        if let Some(rest) = v.strip_prefix('!') {
            rule.extend(["!".to_string(), flag.to_string(), rest.to_string()]);
        } else {
            rule.extend([flag.to_string(), v.clone()]);
        }
    }
}

fn push(rule: &mut Vec<String>, words: &[&str]) {
    rule.extend(words.iter().map(|w| w.to_string()));
}

/// `append_match_flag`: `FLAG` for `match`, `! FLAG` for `negate`.
fn match_flag(rule: &mut Vec<String>, value: Option<&str>, flag: &str, negatable: bool) {
    match value {
        Some("match") => push(rule, &[flag]),
        Some("negate") if negatable => push(rule, &["!", flag]),
        _ => {}
    }
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

/// ansible-core's `construct_rule`, word for word.
fn construct_rule(p: &RuleArgs) -> Vec<String> {
    let mut r = Vec::new();
    param(&mut r, &p.protocol, "-p");
    param(&mut r, &p.source, "-s");
    param(&mut r, &p.destination, "-d");
    for m in &p.matches {
        param(&mut r, &Some(m.clone()), "-m");
    }
    if let Some((flags, set)) = &p.tcp_flags {
        r.extend(["--tcp-flags".to_string(), flags.join(","), set.join(",")]);
    }
    param(&mut r, &p.jump, "-j");
    if p.jump
        .as_deref()
        .is_some_and(|j| j.eq_ignore_ascii_case("tee"))
    {
        param(&mut r, &p.gateway, "--gateway");
    }
    param(&mut r, &p.log_prefix, "--log-prefix");
    param(&mut r, &p.log_level, "--log-level");
    param(&mut r, &p.to_destination, "--to-destination");
    if !p.destination_ports.is_empty() {
        push(&mut r, &["-m", "multiport"]);
        r.extend(["--dports".to_string(), p.destination_ports.join(",")]);
    }
    param(&mut r, &p.to_source, "--to-source");
    param(&mut r, &p.goto, "-g");
    param(&mut r, &p.in_interface, "-i");
    param(&mut r, &p.out_interface, "-o");
    param(&mut r, &p.fragment, "-f");
    param(&mut r, &p.set_counters, "-c");
    param(&mut r, &p.source_port, "--source-port");
    param(&mut r, &p.destination_port, "--destination-port");
    param(&mut r, &p.to_ports, "--to-ports");
    param(&mut r, &p.set_dscp_mark, "--set-dscp");
    let jump_is_dscp = p
        .jump
        .as_deref()
        .is_some_and(|j| j.eq_ignore_ascii_case("dscp"));
    if truthy(&p.set_dscp_mark) && !jump_is_dscp {
        push(&mut r, &["-j", "DSCP"]);
    }
    param(&mut r, &p.set_dscp_mark_class, "--set-dscp-class");
    if truthy(&p.set_dscp_mark_class) && !jump_is_dscp {
        push(&mut r, &["-j", "DSCP"]);
    }
    match_flag(&mut r, Some(p.syn.as_str()), "--syn", true);
    let has = |m: &str| p.matches.iter().any(|x| x == m);
    if has("conntrack") {
        if !p.ctstate.is_empty() {
            r.extend(["--ctstate".to_string(), p.ctstate.join(",")]);
        }
    } else if has("state") {
        if !p.ctstate.is_empty() {
            r.extend(["--state".to_string(), p.ctstate.join(",")]);
        }
    } else if !p.ctstate.is_empty() {
        push(&mut r, &["-m", "conntrack"]);
        r.extend(["--ctstate".to_string(), p.ctstate.join(",")]);
    }
    if has("iprange") {
        param(&mut r, &p.src_range, "--src-range");
        param(&mut r, &p.dst_range, "--dst-range");
    } else if truthy(&p.src_range) || truthy(&p.dst_range) {
        push(&mut r, &["-m", "iprange"]);
        param(&mut r, &p.src_range, "--src-range");
        param(&mut r, &p.dst_range, "--dst-range");
    }
    if has("set") {
        param(&mut r, &p.match_set, "--match-set");
        if let Some(f) = &p.match_set_flags {
            r.push(f.clone());
        }
    } else if truthy(&p.match_set) {
        push(&mut r, &["-m", "set"]);
        param(&mut r, &p.match_set, "--match-set");
        if let Some(f) = &p.match_set_flags {
            r.push(f.clone());
        }
    }
    if truthy(&p.limit) || truthy(&p.limit_burst) {
        push(&mut r, &["-m", "limit"]);
    }
    param(&mut r, &p.limit, "--limit");
    param(&mut r, &p.limit_burst, "--limit-burst");
    if truthy(&p.uid_owner) {
        push(&mut r, &["-m", "owner"]);
    }
    match_flag(&mut r, p.uid_owner.as_deref(), "--uid-owner", true);
    param(&mut r, &p.uid_owner, "--uid-owner");
    if truthy(&p.gid_owner) {
        push(&mut r, &["-m", "owner"]);
    }
    match_flag(&mut r, p.gid_owner.as_deref(), "--gid-owner", true);
    param(&mut r, &p.gid_owner, "--gid-owner");
    if p.jump.is_none() {
        if truthy(&p.reject_with) {
            push(&mut r, &["-j", "REJECT"]);
        }
        if truthy(&p.set_dscp_mark_class) {
            push(&mut r, &["-j", "DSCP"]);
        }
        if truthy(&p.set_dscp_mark) {
            push(&mut r, &["-j", "DSCP"]);
        }
    }
    param(&mut r, &p.reject_with, "--reject-with");
    let icmp_flag = match p.ip_version.as_str() {
        "ipv6" => "--icmpv6-type",
        "both" => "--icmp-type --icmpv6-type",
        _ => "--icmp-type",
    };
    param(&mut r, &p.icmp_type, icmp_flag);
    if truthy(&p.comment) {
        push(&mut r, &["-m", "comment"]);
    }
    param(&mut r, &p.comment, "--comment");
    r
}

/// `push_arguments`: `BIN -t TABLE ACTION CHAIN [RULE_NUM] [-w WAIT] [RULE]`.
fn command(
    bin: &str,
    action: &str,
    table: &str,
    chain: &str,
    rule_num: &Option<String>,
    wait: &Option<String>,
    rule: Option<&[String]>,
) -> String {
    let mut words: Vec<String> = vec![
        bin.into(),
        "-t".into(),
        table.into(),
        action.into(),
        chain.into(),
    ];
    if action == "-I" {
        if let Some(n) = rule_num.as_ref().filter(|n| !n.is_empty()) {
            words.push(n.clone());
        }
    }
    if let Some(w) = wait.as_ref().filter(|w| !w.is_empty()) {
        words.push("-w".into());
        words.push(w.clone());
    }
    if let Some(r) = rule {
        words.extend(r.iter().cloned());
    }
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

fn str_list(a: &mut ModuleArgs<'_>, name: &'static str) -> Result<Vec<String>, ModuleError> {
    Ok(a.list_no_split(&[name])?.unwrap_or_default())
}

/// What one binary's branch decided.
enum Step {
    Flush,
    Policy,
    DeleteChain,
    CreateChain,
    Append,
    Insert,
    Delete,
}

#[async_trait::async_trait]
impl Module for Iptables {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let table = a
            .choice(
                &["table"],
                &["filter", "nat", "mangle", "raw", "security"],
                Some("filter"),
            )?
            .unwrap_or_default();
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap_or_default();
        let action = a
            .choice(&["action"], &["append", "insert"], Some("append"))?
            .unwrap_or_default();
        let ip_version = a
            .choice(&["ip_version"], &["ipv4", "ipv6", "both"], Some("ipv4"))?
            .unwrap_or_default();
        let chain = a.string(&["chain"])?;
        let rule_num = a.string(&["rule_num"])?;
        let wait = a.string(&["wait"])?;
        let tcp_flags = match a.value(&["tcp_flags"]) {
            Some(v) if v.kind() == ValueKind::Map => {
                let list = |k: &str| -> Option<Vec<String>> {
                    let x = v.get_attr(k).ok()?;
                    if x.is_undefined() || x.is_none() {
                        return None;
                    }
                    Some(
                        x.try_iter()
                            .ok()?
                            .filter_map(|i| scalar_string(&i))
                            .collect(),
                    )
                };
                match (list("flags"), list("flags_set")) {
                    (Some(f), Some(s)) => Some((f, s)),
                    _ => None,
                }
            }
            Some(v) if v.is_none() => None,
            Some(_) => return Err(a.missing("tcp_flags")),
            None => None,
        };
        let mut p = RuleArgs {
            protocol: a.string(&["protocol"])?,
            source: a.string(&["source"])?,
            destination: a.string(&["destination"])?,
            matches: str_list(&mut a, "match")?,
            tcp_flags,
            jump: a.string(&["jump"])?,
            gateway: a.string(&["gateway"])?,
            log_prefix: a.string(&["log_prefix"])?,
            log_level: a.choice(
                &["log_level"],
                &[
                    "0", "1", "2", "3", "4", "5", "6", "7", "emerg", "alert", "crit", "error",
                    "warning", "notice", "info", "debug",
                ],
                None,
            )?,
            to_destination: a.string(&["to_destination"])?,
            destination_ports: str_list(&mut a, "destination_ports")?,
            to_source: a.string(&["to_source"])?,
            goto: a.string(&["goto"])?,
            in_interface: a.string(&["in_interface"])?,
            out_interface: a.string(&["out_interface"])?,
            fragment: a.string(&["fragment"])?,
            set_counters: a.string(&["set_counters"])?,
            source_port: a.string(&["source_port"])?,
            destination_port: a.string(&["destination_port"])?,
            to_ports: a.string(&["to_ports"])?,
            set_dscp_mark: a.string(&["set_dscp_mark"])?,
            set_dscp_mark_class: a.string(&["set_dscp_mark_class"])?,
            syn: a
                .choice(&["syn"], &["ignore", "match", "negate"], Some("ignore"))?
                .unwrap_or_default(),
            ctstate: str_list(&mut a, "ctstate")?,
            src_range: a.string(&["src_range"])?,
            dst_range: a.string(&["dst_range"])?,
            match_set: a.string(&["match_set"])?,
            match_set_flags: a.choice(
                &["match_set_flags"],
                &["src", "dst", "src,dst", "dst,src", "src,src", "dst,dst"],
                None,
            )?,
            limit: a.string(&["limit"])?,
            limit_burst: a.string(&["limit_burst"])?,
            uid_owner: a.string(&["uid_owner"])?,
            gid_owner: a.string(&["gid_owner"])?,
            reject_with: a.string(&["reject_with"])?,
            icmp_type: a.string(&["icmp_type"])?,
            ip_version: ip_version.clone(),
            comment: a.string(&["comment"])?,
        };
        let flush = a.bool(&["flush"], false)?;
        let policy = a.choice(&["policy"], &["ACCEPT", "DROP", "QUEUE", "RETURN"], None)?;
        let chain_management = a.bool(&["chain_management"], false)?;
        let numeric = a.bool(&["numeric"], false)?;
        a.finish()?;

        let fail = |m: &str| Ok(Plan::done(ModuleResult::failed(m)));
        if p.set_dscp_mark.is_some() && p.set_dscp_mark_class.is_some() {
            return fail("parameters are mutually exclusive: set_dscp_mark|set_dscp_mark_class");
        }
        if flush && policy.is_some() {
            return fail("parameters are mutually exclusive: flush|policy");
        }
        for (name, v) in [
            ("set_dscp_mark", &p.set_dscp_mark),
            ("set_dscp_mark_class", &p.set_dscp_mark_class),
        ] {
            if v.is_some() && p.jump.is_none() {
                return fail(&format!("missing parameter(s) required by '{name}': jump"));
            }
        }
        if p.jump.as_deref().is_some_and(|j| j == "TEE" || j == "tee") && p.gateway.is_none() {
            return fail(&format!(
                "jump is {} but all of the following are missing: gateway",
                p.jump.as_deref().unwrap_or_default()
            ));
        }
        let Some(chain) = chain.or_else(|| (flush).then(String::new)) else {
            return fail("flush is False but all of the following are missing: chain");
        };
        // `rule` is reported as built before the LOG jump is filled in.
        let rule_text = construct_rule(&p).join(" ");
        if p.log_prefix.is_some() || p.log_level.is_some() {
            match p.jump.as_deref() {
                None => p.jump = Some("LOG".into()),
                Some("LOG") => {}
                Some(_) => {
                    return fail("Logging options can only be used with the LOG jump target.")
                }
            }
        }
        let rule = construct_rule(&p);
        let bins: Vec<&str> = match ip_version.as_str() {
            "both" => vec!["iptables", "ip6tables"],
            "ipv6" => vec!["ip6tables"],
            _ => vec!["iptables"],
        };

        // 1. Query: per binary, the version and what the branch needs.
        let chain_opt = (!chain.is_empty()).then_some(chain.as_str());
        let mut q = Query::new();
        for (i, bin) in bins.iter().enumerate() {
            q.section(
                &format!("path{i}"),
                &format!("command -v {bin} || echo MISSING"),
            );
            let list = |extra: &str| {
                let mut c = command(bin, "-L", &table, &chain, &None, &wait, None);
                if numeric {
                    c.push_str(" --numeric");
                }
                format!("{c}{extra}")
            };
            if flush {
                continue;
            }
            if policy.is_some() {
                q.section(&format!("list{i}"), &list(" 2>/dev/null | head -1"));
            } else if rule_text.is_empty() {
                q.test(&format!("chain{i}"), &list(" >/dev/null 2>&1"));
            } else {
                q.test(
                    &format!("rule{i}"),
                    &format!(
                        "{} >/dev/null 2>&1",
                        command(bin, "-C", &table, &chain, &None, &wait, Some(&rule))
                    ),
                );
            }
        }
        let ans = q.run(ctx).await?;

        // 2. Decide, binary by binary.
        let mut steps: Vec<(usize, Step)> = Vec::new();
        let mut changed = false;
        for (i, bin) in bins.iter().enumerate() {
            if ans.trimmed(&format!("path{i}")) == "MISSING" {
                return fail(&format!(
                    "Failed to find required executable \"{bin}\" in paths: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                ));
            }
            if flush {
                changed = true;
                steps.push((i, Step::Flush));
            } else if let Some(want) = &policy {
                let header = ans.text(&format!("list{i}"));
                let current = header
                    .split("(policy ")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_uppercase()).next())
                    .filter(|s| !s.is_empty());
                let Some(current) = current else {
                    return fail("Can't detect current policy");
                };
                if current != want {
                    changed = true;
                    steps.push((i, Step::Policy));
                }
            } else if rule_text.is_empty() {
                let present = ans.yes(&format!("chain{i}"));
                if state == "absent" {
                    changed |= present;
                    if present && chain_management {
                        steps.push((i, Step::DeleteChain));
                    }
                } else {
                    changed |= !present;
                    if !present && chain_management {
                        steps.push((i, Step::CreateChain));
                    }
                }
            } else {
                let present = ans.yes(&format!("rule{i}"));
                let should = state == "present";
                if present != should {
                    changed = true;
                    steps.push((
                        i,
                        match (should, action.as_str()) {
                            (true, "insert") => Step::Insert,
                            (true, _) => Step::Append,
                            (false, _) => Step::Delete,
                        },
                    ));
                }
            }
        }
        let result = ModuleResult::changed(changed)
            .with("failed", false)
            .with("ip_version", ip_version.as_str())
            .with("table", table.as_str())
            .with(
                "chain",
                chain_opt.map(Value::from).unwrap_or(Value::from(())),
            )
            .with("flush", flush)
            .with("rule", rule_text.as_str())
            .with("state", state.as_str())
            .with("chain_management", chain_management)
            .with(
                "wait",
                wait.clone().map(Value::from).unwrap_or(Value::from(())),
            );
        if steps.is_empty() {
            return Ok(Plan::done(result));
        }

        // 3. Apply.
        let mut script = String::new();
        for (i, step) in &steps {
            let bin = bins[*i];
            let c = |act: &str, r: Option<&[String]>| {
                command(bin, act, &table, &chain, &rule_num, &wait, r)
            };
            let line = match step {
                Step::Flush => {
                    // An empty chain flushes the whole table, as
                    // ansible-core's `-F ''`... which iptables refuses; it
                    // flushes every chain without one.
                    if chain.is_empty() {
                        command(bin, "-F", &table, "", &None, &wait, None)
                            .trim_end_matches(" ''")
                            .to_string()
                    } else {
                        c("-F", None)
                    }
                }
                Step::Policy => format!(
                    "{} {}",
                    c("-P", None),
                    quote(policy.as_deref().unwrap_or_default())
                ),
                Step::DeleteChain => c("-X", None),
                Step::CreateChain => c("-N", None),
                Step::Append => c("-A", Some(&rule)),
                Step::Insert => c("-I", Some(&rule)),
                Step::Delete => c("-D", Some(&rule)),
            };
            script.push_str(&line);
            script.push('\n');
        }
        Ok(Plan::change(result.clone(), async move {
            match apply(ctx, &script, None).await? {
                Ok(_) => Ok(result),
                Err(e) => Ok(ModuleResult::failed(e)),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_built_as_ansible_core_builds_them() {
        let p = RuleArgs {
            protocol: Some("tcp".into()),
            source: Some("!192.0.2.0/24".into()),
            destination_port: Some("22".into()),
            ctstate: vec!["NEW".into(), "ESTABLISHED".into()],
            jump: Some("ACCEPT".into()),
            comment: Some("keel ssh".into()),
            syn: "ignore".into(),
            ip_version: "ipv4".into(),
            ..Default::default()
        };
        assert_eq!(
            construct_rule(&p).join(" "),
            "-p tcp ! -s 192.0.2.0/24 -j ACCEPT --destination-port 22 -m conntrack \
             --ctstate NEW,ESTABLISHED -m comment --comment keel ssh"
        );
    }
}
