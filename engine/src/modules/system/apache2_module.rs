//! `apache2_module` (community.general): enables or disables an Apache
//! module with Debian's `a2enmod`/`a2dismod`.
//!
//! Query: one round trip finds `apache2ctl` (or `apachectl`) and reads
//! `apache2ctl -M`; for `cgi`, `-V` too (a threaded MPM refuses it).
//! Decide: the module is enabled when ` <identifier>` is in that list, the
//! identifier guessed from the name as community.general guesses it.
//! Apply: `a2enmod`/`a2dismod`, then `-M` again in the same round trip to
//! confirm, as that module does.

use regex::Regex;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Apache2Module;

static PARAMS: Params = Params {
    module: "apache2_module",
    sets: &[&[
        &["name"],
        &["identifier"],
        &["force"],
        &["state"],
        &["ignore_configcheck"],
        &["warn_mpm_absent"],
    ]],
};

/// `create_apache_identifier`: `name_module`, except for the modules that
/// load under another name.
fn identifier(name: &str) -> String {
    for (spelling, module) in [
        ("shib", "mod_shib"),
        ("shib2", "mod_shib"),
        ("evasive", "evasive20_module"),
    ] {
        if name.contains(spelling) {
            return module.to_string();
        }
    }
    for (search, pattern) in [("php8", r"^(php)[\d\.]+"), ("php", r"^(php\d)\.")] {
        if name.contains(search) {
            if let Some(m) = Regex::new(pattern).expect("valid pattern").captures(name) {
                return format!("{}_module", &m[1]);
            }
        }
    }
    format!("{name}_module")
}

/// Finds the control program and lists loaded modules: `@@ctl PATH`, then
/// `-M`'s stdout, `@@err`, its stderr, `@@rc N`.
const LIST: &str =
    "ctl=$(command -v apache2ctl || command -v apachectl) || { echo '@@noctl'; exit 0; }\n\
    echo \"@@ctl $ctl\"\n\
    \"$ctl\" -M 2>/tmp/.keel-a2m.$$; rc=$?\n\
    echo '@@err'; cat /tmp/.keel-a2m.$$; rm -f /tmp/.keel-a2m.$$; echo \"@@rc $rc\"\n";

/// What one `-M` listing said.
struct Listing {
    ctl: String,
    out: String,
    err: String,
    rc: i32,
}

fn parse_listing(text: &str) -> Option<Listing> {
    let start = text.find("@@ctl ")?;
    let rest = &text[start + 6..];
    let (ctl, rest) = rest.split_once('\n')?;
    let (out, rest) = rest.split_once("@@err\n")?;
    let (err, rc) = rest.rsplit_once("@@rc ")?;
    Some(Listing {
        ctl: ctl.to_string(),
        out: out.to_string(),
        err: err.to_string(),
        rc: rc.trim().lines().next().unwrap_or("").parse().unwrap_or(1),
    })
}

/// `_module_is_enabled`: `Ok(enabled)`, with any warning, or the failure.
fn enabled(
    l: &Listing,
    id: &str,
    name: &str,
    ignore_configcheck: bool,
    warn_mpm: bool,
    warnings: &mut Vec<String>,
) -> Result<bool, String> {
    if l.rc != 0 {
        let msg = format!("Error executing {}: {}", l.ctl, l.err);
        if !ignore_configcheck {
            return Err(msg);
        }
        if l.err.contains("AH00534") && name.contains("mpm_") {
            if warn_mpm {
                warnings.push("No MPM module loaded! apache2 reload AND other module actions will fail if no MPM module is loaded immediately.".into());
            }
        } else {
            warnings.push(msg);
        }
        return Ok(false);
    }
    Ok(l.out.contains(&format!(" {id}")))
}

/// A text's lines, as ansible-core adds them beside `stdout`/`stderr`.
fn lines(t: &str) -> minijinja::Value {
    minijinja::Value::from(t.lines().map(minijinja::Value::from).collect::<Vec<_>>())
}

fn with_warnings(mut r: ModuleResult, w: &[String]) -> ModuleResult {
    if !w.is_empty() {
        r.data.insert(
            "warnings".into(),
            minijinja::Value::from(
                w.iter()
                    .map(|s| minijinja::Value::from(s.as_str()))
                    .collect::<Vec<_>>(),
            ),
        );
    }
    r
}

#[async_trait::async_trait]
impl Module for Apache2Module {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.req_string(&["name"])?;
        let id = a
            .string(&["identifier"])?
            .unwrap_or_else(|| identifier(&name));
        let force = a.bool(&["force"], false)?;
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap_or_default();
        let ignore_configcheck = a.bool(&["ignore_configcheck"], false)?;
        let warn_mpm = a.bool(&["warn_mpm_absent"], true)?;
        a.finish()?;

        let mut q = String::from(LIST);
        if name == "cgi" && state == "present" {
            q.push_str("echo '@@V'; \"$ctl\" -V 2>/dev/null\n");
        }
        let out = ctx.run(q, None).await?.stdout_str();
        if out.contains("@@noctl") {
            return Ok(Plan::done(ModuleResult::failed(
                "Neither of apache2ctl nor apachectl found. At least one apache control binary is necessary.",
            )));
        }
        if let Some((_, v)) = out.split_once("@@V\n") {
            if Regex::new(r"threaded: *yes")
                .expect("valid pattern")
                .is_match(v)
            {
                return Ok(Plan::done(ModuleResult::failed(
                    "Your MPM seems to be threaded, therefore enabling cgi module is not allowed.",
                )));
            }
        }
        let listing = parse_listing(out.split("@@V\n").next().unwrap_or(""))
            .ok_or_else(|| ModuleError::Failed(format!("could not read apache2ctl -M: {out}")))?;
        let mut warnings = Vec::new();
        let want = state == "present";
        let now = match enabled(
            &listing,
            &id,
            &name,
            ignore_configcheck,
            warn_mpm,
            &mut warnings,
        ) {
            Ok(e) => e,
            Err(m) => return Ok(Plan::done(ModuleResult::failed(m))),
        };
        let (word, tool) = if want {
            ("enabled", "a2enmod")
        } else {
            ("disabled", "a2dismod")
        };
        let success = format!("Module {name} {word}");
        if now == want {
            return Ok(Plan::done(with_warnings(
                ModuleResult::ok().with("result", success.as_str()),
                &warnings,
            )));
        }
        let planned = with_warnings(
            ModuleResult::changed(true).with("result", success.as_str()),
            &warnings,
        );
        Ok(Plan::change(planned, async move {
            let flag = if !want && force { " -f" } else { "" };
            let script = format!(
                "t=$(command -v {tool}) || {{ echo '@@notool'; exit 0; }}\n\
                 \"$t\"{flag} {n} >/tmp/.keel-a2o.$$ 2>/tmp/.keel-a2e.$$; trc=$?\n\
                 echo '@@out'; cat /tmp/.keel-a2o.$$; echo '@@toolerr'; cat /tmp/.keel-a2e.$$\n\
                 echo \"@@trc $trc\"; rm -f /tmp/.keel-a2o.$$ /tmp/.keel-a2e.$$\n{LIST}",
                n = quote(&name)
            );
            let out = ctx.run(script, None).await?.stdout_str();
            if out.contains("@@notool") {
                return Ok(ModuleResult::failed(format!(
                    "{tool} not found. Perhaps this system does not use {tool} to manage apache"
                )));
            }
            let between = |a: &str, b: &str| -> String {
                let s = out.find(a).map_or(out.len(), |i| i + a.len());
                let e = out[s..].find(b).map_or(out.len(), |i| s + i);
                out[s..e].to_string()
            };
            let tool_out = between("@@out\n", "@@toolerr\n");
            let tool_err = between("@@toolerr\n", "@@trc ");
            let trc: i64 = between("@@trc ", "\n").trim().parse().unwrap_or(1);
            let mut warnings = warnings;
            let after = parse_listing(&out)
                .map(|l| enabled(&l, &id, &name, ignore_configcheck, warn_mpm, &mut warnings));
            match after {
                Some(Ok(e)) if e == want => Ok(with_warnings(
                    ModuleResult::changed(true).with("result", success.as_str()),
                    &warnings,
                )),
                Some(Err(m)) => Ok(ModuleResult::failed(m)),
                _ => Ok(ModuleResult::failed(format!(
                    "Failed to set module {name} to {word}:\n{tool_out}\nMaybe the module identifier ({id}) was guessed incorrectly.Consider setting the \"identifier\" option."
                ))
                .with("rc", trc)
                .with("stdout", tool_out.as_str())
                .with("stdout_lines", lines(&tool_out))
                .with("stderr", tool_err.as_str())
                .with("stderr_lines", lines(&tool_err))),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::identifier;

    #[test]
    fn identifiers_are_guessed_as_community_general_guesses_them() {
        assert_eq!(identifier("rewrite"), "rewrite_module");
        assert_eq!(identifier("php7.4"), "php7_module");
        assert_eq!(identifier("php8.2"), "php_module");
        assert_eq!(identifier("shib2"), "mod_shib");
        assert_eq!(identifier("evasive"), "evasive20_module");
    }
}
