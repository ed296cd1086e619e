//! `pip` (ansible.builtin): Python packages in a virtualenv or an
//! interpreter's site-packages.
//!
//! Query: one round trip finds the virtualenv, the pip to use (the
//! virtualenv's `pip3`/`pip`, `executable`, or the host's Python with
//! `-m pip` as ansible-core's module does) and `pip list --format=freeze`.
//! Decide: on the controller, each requirement is matched against that list
//! with PEP 440 specifiers (`pep440_rs`), as ansible-core's check mode does.
//! Apply: one round trip creates the virtualenv if needed and runs pip.
//!
//! Unlike ansible-core, which runs `pip install` on every real run and reads
//! `changed` from pip's output, a plain `present`/`absent` that the freeze
//! list already satisfies runs nothing (its `stdout` is then empty). What
//! only pip can tell — a requirements file, `latest`, `extra_args`, names
//! that are URLs or paths — runs pip, and check mode reports `changed`
//! without asking, as ansible-core does.

use std::str::FromStr;

use minijinja::Value;
use pep440_rs::{Version, VersionSpecifiers};
use regex::Regex;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Pip;

static PARAMS: Params = Params {
    module: "pip",
    sets: &[&[
        &["state"],
        &["name"],
        &["version"],
        &["requirements"],
        &["virtualenv"],
        &["virtualenv_site_packages"],
        &["virtualenv_command"],
        &["virtualenv_python"],
        &["extra_args"],
        &["editable"],
        &["chdir"],
        &["executable"],
        &["umask"],
        &["break_system_packages"],
    ]],
};

/// ansible-core's interpreter discovery list, for pip without a virtualenv
/// or `executable` (the module then runs `<its python> -m pip`).
const PYTHONS: &[&str] = &[
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
    "python3.8",
    "/usr/bin/python3",
    "python3",
];

/// Marks the end of one step's output in the apply script (stdout and
/// stderr alike): `\x1ekeel-pip STEP RC\x1e`.
const MARK: &str = "\u{1e}keel-pip ";

/// One requirement as the task wrote it.
#[derive(Debug, Clone)]
struct Req {
    /// What goes on pip's command line: packaging's `str(Requirement)`
    /// (specifiers sorted) for a plain requirement, else the text as given.
    shown: String,
    /// PEP 503 name and specifiers, when the text is a plain requirement
    /// (not a URL, path or VCS link).
    plain: Option<(String, VersionSpecifiers)>,
}

/// PEP 503: runs of `-_.` become `-`, lower case.
fn canonical(name: &str) -> String {
    let re = Regex::new(r"[-_.]+").expect("valid pattern");
    re.replace_all(name, "-").to_lowercase()
}

impl Req {
    fn parse(text: &str) -> Req {
        let not_plain = || Req {
            shown: text.to_string(),
            plain: None,
        };
        let re = Regex::new(
            r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$",
        )
        .expect("valid pattern");
        let Some(m) = re.captures(text) else {
            return not_plain();
        };
        let name = &m[1];
        let extras = m.get(2).map(|e| {
            let mut v: Vec<&str> = e.as_str()[1..e.as_str().len() - 1]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            v.sort_unstable();
            format!("[{}]", v.join(","))
        });
        let spec_text = m.get(3).map_or("", |s| s.as_str());
        let mut specs: Vec<String> = Vec::new();
        for part in spec_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            // packaging prints each specifier as operator and version with
            // no space between them.
            let joined: String = part.split_whitespace().collect();
            specs.push(joined);
        }
        let Ok(parsed) = VersionSpecifiers::from_str(&specs.join(",")) else {
            return not_plain();
        };
        specs.sort();
        let mut shown = format!("{name}{}{}", extras.unwrap_or_default(), specs.join(","));
        if let Some(marker) = m.get(4) {
            shown.push_str(&format!("; {}", marker.as_str()[1..].trim()));
        }
        Req {
            shown,
            plain: Some((canonical(name), parsed)),
        }
    }

    /// Whether a `pip list --format=freeze` line list satisfies it.
    fn satisfied_by(&self, freeze: &[(String, String)]) -> bool {
        let Some((name, specs)) = &self.plain else {
            return false;
        };
        freeze.iter().any(|(n, v)| {
            n == name
                && Version::from_str(v)
                    .map(|v| specs.iter().all(|s| s.contains(&v)))
                    .unwrap_or(false)
        })
    }
}

/// ansible-core's `_recover_package_name`: names split on commas and put
/// back together, so `['django>1.1', '<2', 'six']` is two requirements.
fn recover_names(names: &[String]) -> Vec<String> {
    let ops = [">=", "<=", ">", "<", "==", "!=", "~="];
    let is_name = |s: &str| !ops.iter().any(|o| s.trim_start().starts_with(o));
    let mut out = Vec::new();
    let mut parts: Vec<&str> = Vec::new();
    let mut in_brackets = false;
    for name in names.iter().flat_map(|n| n.split(',')) {
        if is_name(name) && !in_brackets && !parts.is_empty() {
            out.push(parts.join(","));
            parts.clear();
        }
        if name.contains('[') {
            in_brackets = true;
        }
        if in_brackets && name.contains(']') {
            in_brackets = false;
        }
        parts.push(name);
    }
    out.push(parts.join(","));
    out
}

/// `name==version` lines of `pip list --format=freeze`, names canonical.
fn freeze_list(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| (canonical(n), v.trim().to_string()))
        .collect()
}

/// One step's output from the apply script.
#[derive(Debug, Default, Clone)]
struct Step {
    rc: i32,
    out: String,
    err: String,
}

/// Splits the apply script's output into its steps, by name.
fn steps(stdout: &str, stderr: &str) -> Vec<(String, Step)> {
    let split = |text: &str| -> Vec<(String, i32, String)> {
        let mut v = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find(&format!("\n{MARK}")) {
            let body = &rest[..i];
            let after = &rest[i + 1 + MARK.len()..];
            let end = after.find('\u{1e}').unwrap_or(after.len());
            let mut head = after[..end].split(' ');
            let name = head.next().unwrap_or("").to_string();
            let rc = head.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            v.push((name, rc, body.to_string()));
            rest = after.get(end + 2..).unwrap_or("");
        }
        v
    };
    let errs = split(stderr);
    split(stdout)
        .into_iter()
        .map(|(name, rc, out)| {
            let err = errs
                .iter()
                .find(|(n, ..)| *n == name)
                .map(|(_, _, e)| e.clone())
                .unwrap_or_default();
            (name, Step { rc, out, err })
        })
        .collect()
}

/// A shell function that runs a command as one named step.
const STEP_FN: &str = "step() { n=$1; shift; \"$@\"; rc=$?; \
    printf '\\n\\036keel-pip %s %s\\036\\n' \"$n\" \"$rc\"; \
    printf '\\n\\036keel-pip %s %s\\036\\n' \"$n\" \"$rc\" >&2; return $rc; }\n\
    info() { printf '\\036keel-pip %s\\036' \"$1\"; shift; printf '%s\\036' \"$@\"; printf '\\n'; \
    printf '\\n\\036keel-pip info 0\\036\\n'; printf '\\n\\036keel-pip info 0\\036\\n' >&2; }\n";

/// ansible-core's `_fail`: pip's stdout and stderr in the message.
fn fail(cmd: &[String], out: &str, err: &str) -> ModuleResult {
    let mut msg = String::new();
    if !out.is_empty() {
        msg.push_str(&format!("stdout: {out}"));
    }
    if !err.is_empty() {
        msg.push_str(&format!("\n:stderr: {err}"));
    }
    ModuleResult::failed(msg).with("cmd", strings(cmd))
}

/// `stdout`/`stderr` with the `_lines` lists ansible-core adds beside them.
fn with_output(r: ModuleResult, out: &str, err: &str) -> ModuleResult {
    let lines = |t: &str| Value::from(t.lines().map(Value::from).collect::<Vec<_>>());
    r.with("stdout", out)
        .with("stdout_lines", lines(out))
        .with("stderr", err)
        .with("stderr_lines", lines(err))
}

fn strings(v: &[String]) -> Value {
    Value::from(
        v.iter()
            .map(|s| Value::from(s.as_str()))
            .collect::<Vec<_>>(),
    )
}

fn opt(v: &Option<String>) -> Value {
    v.as_deref().map_or(Value::from(()), Value::from)
}

/// Everything the apply step needs, decided before it.
struct Job {
    state: String,
    names: Option<Vec<String>>,
    version: Option<String>,
    requirements: Option<String>,
    env: Option<String>,
    chdir: Option<String>,
    umask: Option<u32>,
    break_system: bool,
    /// The virtualenv command's words, when it must be created first.
    create: Option<Vec<String>>,
    site_packages: bool,
    venv_python: Option<String>,
    /// The pip to run, when already known (else the virtualenv's, found
    /// after creating it).
    pip: Option<Vec<String>>,
    /// pip's arguments after the pip itself.
    args: Vec<String>,
    /// Compare freeze lists before and after (requirements files, VCS).
    compare_freeze: bool,
}

impl Job {
    fn cd(&self) -> String {
        match &self.chdir {
            Some(d) => format!("cd {} || exit 1\n", quote(d)),
            None => "cd \"${TMPDIR:-/tmp}\" || exit 1\n".to_string(),
        }
    }

    fn script(&self) -> String {
        let mut s = String::from(STEP_FN);
        s.push_str(&self.cd());
        if let Some(u) = self.umask {
            s.push_str(&format!("umask {u:o}\n"));
        }
        if self.break_system {
            s.push_str("export PIP_BREAK_SYSTEM_PACKAGES=1\n");
        }
        if let Some(words) = &self.create {
            let env = self.env.as_deref().unwrap_or_default();
            let first = &words[0];
            s.push_str(&format!("c0={}\n", quote(first)));
            if !first.contains('/') {
                s.push_str(
                    "c0=$(command -v \"$c0\") || { printf '\\036keel-pip missing\\036'; exit 0; }\n",
                );
            }
            s.push_str(&format!(
                "set -- \"$c0\" {}\n",
                words[1..]
                    .iter()
                    .map(|w| quote(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            if self.site_packages {
                s.push_str("set -- \"$@\" --system-site-packages\n");
            } else {
                s.push_str(
                    "h=$(\"$c0\" --help 2>&1) || { printf '\\036keel-pip nohelp\\036%s' \"$h\"; exit 0; }\n\
                     printf '%s\\n' $h | grep -qx -- --no-site-packages && set -- \"$@\" --no-site-packages\n",
                );
            }
            if !is_venv_command(words) {
                let py = match &self.venv_python {
                    Some(p) => quote(p),
                    None => python_lookup(),
                };
                s.push_str(&format!("set -- \"$@\" -p{py}\n"));
            }
            s.push_str(&format!(
                "info cmd \"$@\" {env}\n\
                 step venv \"$@\" {env} || exit 0\n",
                env = quote(env)
            ));
        }
        match &self.pip {
            Some(p) => s.push_str(&format!(
                "set -- {}\n",
                p.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
            )),
            None => {
                let bin = format!("{}/bin", self.env.as_deref().unwrap_or_default());
                s.push_str(&format!(
                    "p=\nfor c in {b}/pip3 {b}/pip; do [ -f \"$c\" ] && [ -x \"$c\" ] && {{ p=$c; break; }}; done\n\
                     [ -n \"$p\" ] || {{ printf '\\036keel-pip nopip\\036\\n'; exit 0; }}\n\
                     set -- \"$p\"\n",
                    b = quote(&bin)
                ));
            }
        }
        s.push_str("info pip \"$@\"\n");
        let freeze = "LANG=C LC_ALL=C LC_MESSAGES=C \"$@\" list --format=freeze";
        if self.compare_freeze {
            s.push_str(&format!("step before sh -c '{freeze}' sh \"$@\"\n"));
        }
        if let Some(env) = &self.env {
            s.push_str(&format!("PATH={}/bin:$PATH; export PATH\n", quote(env)));
        }
        s.push_str(&format!(
            "step run \"$@\" {}\n",
            self.args
                .iter()
                .map(|w| quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        if self.compare_freeze {
            s.push_str(&format!("step after sh -c '{freeze}' sh \"$@\"\n"));
        }
        s
    }

    /// The result once pip (and perhaps the virtualenv command) ran.
    fn result(&self, stdout: &str, stderr: &str) -> ModuleResult {
        let env = self.env.as_deref().unwrap_or_default();
        if stdout.contains("\u{1e}keel-pip missing\u{1e}") {
            let first = self.create.as_ref().map_or("", |w| w[0].as_str());
            return ModuleResult::failed(format!(
                "Failed to find required executable \"{first}\" in paths: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ));
        }
        if let Some(i) = stdout.find("\u{1e}keel-pip nohelp\u{1e}") {
            let first = self.create.as_ref().map_or("", |w| w[0].as_str());
            return ModuleResult::failed(format!(
                "Could not get output from {first} --help: {}",
                &stdout[i + "\u{1e}keel-pip nohelp\u{1e}".len()..]
            ));
        }
        let list_after = |tag: &str| -> Option<Vec<String>> {
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("\u{1e}keel-pip {tag}\u{1e}")))?;
            Some(
                line.split('\u{1e}')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        };
        let steps = steps(stdout, stderr);
        let get = |n: &str| steps.iter().find(|(s, _)| s == n).map(|(_, st)| st.clone());
        let mut out = String::new();
        let mut err = String::new();
        if let Some(v) = get("venv") {
            out.push_str(&v.out);
            err.push_str(&v.err);
            if v.rc != 0 {
                return fail(&list_after("cmd").unwrap_or_default(), &out, &err);
            }
        }
        if stdout.contains("\u{1e}keel-pip nopip\u{1e}") {
            return ModuleResult::failed(format!(
                "Unable to find pip in the virtualenv, {env}, under any of these names: pip3, pip. Make sure pip is present in the virtualenv."
            ));
        }
        let mut cmd = list_after("pip").unwrap_or_default();
        cmd.extend(self.args.iter().cloned());
        if let Some(b) = get("before") {
            if b.rc != 0 {
                return fail(&cmd, &b.out, &b.err);
            }
        }
        let Some(run) = get("run") else {
            return ModuleResult::failed(format!("pip did not run: {}", stderr.trim()));
        };
        out.push_str(&run.out);
        err.push_str(&run.err);
        let not_installed = run.rc == 1
            && self.state == "absent"
            && (run.out.contains("not installed") || run.err.contains("not installed"));
        if run.rc != 0 && !not_installed {
            return fail(&cmd, &out, &err);
        }
        let changed = if self.state == "absent" {
            run.out.contains("Successfully uninstalled")
        } else if self.compare_freeze {
            get("before").map(|b| b.out) != get("after").map(|a| a.out)
        } else {
            run.out.contains("Successfully installed")
        } || self.create.is_some();
        self.shaped(ModuleResult::changed(changed), cmd, out, err)
    }

    /// ansible-core's return values of a real run.
    fn shaped(&self, r: ModuleResult, cmd: Vec<String>, out: String, err: String) -> ModuleResult {
        let r = r
            .with("cmd", strings(&cmd))
            .with(
                "name",
                self.names.as_ref().map_or(Value::from(()), |n| strings(n)),
            )
            .with("version", opt(&self.version))
            .with("state", self.state.as_str())
            .with("requirements", opt(&self.requirements))
            .with("virtualenv", opt(&self.env));
        with_output(r, &out, &err)
    }
}

/// ansible-core's `_is_venv_command`: `pyvenv`, or `-m venv`, which take no
/// `-p`.
fn is_venv_command(words: &[String]) -> bool {
    if words.first().is_some_and(|w| w == "pyvenv") {
        return true;
    }
    let mut it = words.iter().skip(1);
    while let Some(w) = it.next() {
        if w == "-m" {
            return it.next().is_some_and(|m| m == "venv");
        }
        if let Some(m) = w.strip_prefix("-m") {
            return m == "venv";
        }
    }
    false
}

/// Shell text that prints the first Python of the discovery list.
fn python_lookup() -> String {
    format!(
        "\"$(for c in {}; do command -v \"$c\" && break; done)\"",
        PYTHONS.join(" ")
    )
}

#[async_trait::async_trait]
impl Module for Pip {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let state = a
            .choice(
                &["state"],
                &["present", "absent", "latest", "forcereinstall"],
                Some("present"),
            )?
            .unwrap_or_default();
        let names = a.list(&["name"])?;
        let version = a.string(&["version"])?;
        let requirements = a.string(&["requirements"])?;
        let virtualenv = a.string(&["virtualenv"])?;
        let site_packages = a.bool(&["virtualenv_site_packages"], false)?;
        let venv_command = a
            .string(&["virtualenv_command"])?
            .unwrap_or_else(|| "virtualenv".into());
        let venv_python = a.string(&["virtualenv_python"])?;
        let mut extra_args = a.string(&["extra_args"])?;
        let editable = a.bool(&["editable"], false)?;
        let chdir = a.string(&["chdir"])?;
        let executable = a.string(&["executable"])?;
        let umask = a.string(&["umask"])?;
        let break_system = a.bool(&["break_system_packages"], false)?;
        a.finish()?;

        let done = |msg: String| Ok(Plan::done(ModuleResult::failed(msg)));
        if names.is_none() && requirements.is_none() {
            return done("one of the following is required: name, requirements".into());
        }
        if names.is_some() && requirements.is_some() {
            return done("parameters are mutually exclusive: name|requirements".into());
        }
        if executable.is_some() && virtualenv.is_some() {
            return done("parameters are mutually exclusive: executable|virtualenv".into());
        }
        let umask = match umask {
            None => None,
            Some(u) => match u32::from_str_radix(u.trim(), 8) {
                Ok(n) => Some(n),
                Err(_) => return done("umask must be an octal integer".into()),
            },
        };
        if state == "latest" && version.is_some() {
            return done("version is incompatible with state=latest".into());
        }
        let env = match (&virtualenv, &chdir) {
            (Some(v), Some(d)) if !v.starts_with('/') => Some(format!("{d}/{v}")),
            (v, _) => v.clone(),
        };

        let mut reqs: Vec<Req> = Vec::new();
        let mut has_vcs = false;
        if let Some(n) = &names {
            let vcs = Regex::new(r"^(svn|git|hg|bzr)\+").expect("valid pattern");
            has_vcs = n.iter().any(|p| vcs.is_match(p));
            reqs = recover_names(n).iter().map(|s| Req::parse(s)).collect();
            if let Some(v) = &version {
                if reqs.len() > 1 {
                    return done("'version' argument is ambiguous when installing multiple package distributions. Please specify version restrictions next to each package in 'name' argument.".into());
                }
                if reqs[0]
                    .plain
                    .as_ref()
                    .is_some_and(|(_, s)| !s.iter().collect::<Vec<_>>().is_empty())
                {
                    return done("The 'version' argument conflicts with any version specifier provided along with a package name. Please keep the version specifier, but remove the 'version' argument.".into());
                }
                let v = v.trim_start();
                let sep = if v.starts_with(|c: char| c.is_ascii_digit()) {
                    "=="
                } else {
                    " "
                };
                reqs[0] = Req::parse(&format!("{}{sep}{v}", reqs[0].shown));
            }
        }
        if editable {
            let mut words: Vec<String> = extra_args
                .as_deref()
                .map(|e| e.split(' ').map(str::to_string).collect())
                .unwrap_or_default();
            if !words.iter().any(|w| w == "-e") {
                words.push("-e".into());
                extra_args = Some(words.join(" "));
            }
        }
        let mut pip_args: Vec<String> = match state.as_str() {
            "absent" => vec!["uninstall".into(), "-y".into()],
            "latest" => vec!["install".into(), "-U".into()],
            "forcereinstall" => vec!["install".into(), "-U".into(), "--force-reinstall".into()],
            _ => vec!["install".into()],
        };
        if let Some(e) = &extra_args {
            pip_args.extend(
                shell_words::split(e).map_err(|e| ModuleError::Args(format!("extra_args: {e}")))?,
            );
        }
        match &requirements {
            Some(r) => pip_args.extend(["-r".to_string(), r.clone()]),
            None => pip_args.extend(reqs.iter().map(|r| r.shown.clone())),
        }

        // Query: the virtualenv, the pip to run, and what it has.
        let mut q = String::new();
        match &chdir {
            Some(d) => q.push_str(&format!("cd {} || exit 1\n", quote(d))),
            None => q.push_str("cd \"${TMPDIR:-/tmp}\" || exit 1\n"),
        }
        if let Some(e) = &env {
            q.push_str(&format!(
                "[ -e {}/bin/activate ] || {{ echo '@@novenv'; exit 0; }}\n",
                quote(e)
            ));
            let bin = format!("{e}/bin");
            q.push_str(&format!(
                "for c in {b}/pip3 {b}/pip; do [ -f \"$c\" ] && [ -x \"$c\" ] && {{ echo \"@@pip $c\"; set -- \"$c\"; break; }}; done\n",
                b = quote(&bin)
            ));
        } else if let Some(x) = &executable {
            if x.starts_with('/') {
                q.push_str(&format!("echo \"@@pip {x}\"; set -- {}\n", quote(x)));
            } else {
                q.push_str(&format!(
                    "c=$(command -v {}) && {{ echo \"@@pip $c\"; set -- \"$c\"; }}\n",
                    quote(x)
                ));
            }
        } else {
            let interp = ctx
                .scope
                .get_raw("ansible_python_interpreter")
                .and_then(|v| v.as_str().map(str::to_string))
                .filter(|s| !s.starts_with("auto") && !s.contains("{{"));
            let py = interp.map_or_else(python_lookup, |p| quote(&p));
            q.push_str(&format!(
                "py={py}\n\
                 if [ -n \"$py\" ] && \"$py\" -c 'import pip' >/dev/null 2>&1; then echo \"@@pymod $py\"; set -- \"$py\" -m pip\n\
                 else c=$(command -v pip3) && {{ echo \"@@pip $c\"; set -- \"$c\"; }}; fi\n"
            ));
        }
        q.push_str(
            "[ $# -gt 0 ] || exit 0\n\
             echo '@@freeze'\n\
             LANG=C LC_ALL=C LC_MESSAGES=C \"$@\" list --format=freeze; echo \"@@rc $?\"\n",
        );
        let answer = ctx.run(q, None).await?;
        let out = answer.stdout_str();
        let freeze_err = answer.stderr_str();
        let venv_missing = out.lines().any(|l| l == "@@novenv");
        let pip: Option<Vec<String>> = out.lines().find_map(|l| {
            l.strip_prefix("@@pip ")
                .map(|p| vec![p.to_string()])
                .or_else(|| {
                    l.strip_prefix("@@pymod ")
                        .map(|p| vec![p.to_string(), "-m".into(), "pip".into()])
                })
        });

        let mut job = Job {
            state: state.clone(),
            names: names.clone(),
            version: version.clone(),
            requirements: requirements.clone(),
            env: env.clone(),
            chdir: chdir.clone(),
            umask,
            break_system,
            create: None,
            site_packages,
            venv_python,
            pip: pip.clone(),
            args: pip_args,
            compare_freeze: requirements.is_some() || has_vcs,
        };

        if venv_missing {
            let words = shell_words::split(&venv_command)
                .map_err(|e| ModuleError::Args(format!("virtualenv_command: {e}")))?;
            if words.is_empty() {
                return done("virtualenv_command is empty".into());
            }
            if job.venv_python.is_some() && is_venv_command(&words) {
                return done("virtualenv_python should not be used when using the venv module or pyvenv as virtualenv_command".into());
            }
            job.create = Some(words);
            job.pip = None;
            // ansible-core's check mode stops here with a bare `changed`.
            let script = job.script();
            return Ok(Plan::change(ModuleResult::changed(true), async move {
                let o = ctx.run(script, None).await?;
                Ok(job.result(&o.stdout_str(), &o.stderr_str()))
            }));
        }
        let Some(pip) = pip else {
            return done(match &env {
                Some(e) => format!(
                    "Unable to find pip in the virtualenv, {e}, under any of these names: pip3, pip. Make sure pip is present in the virtualenv."
                ),
                None => "Unable to find any of pip3 to use.  pip needs to be installed.".into(),
            });
        };

        let run = move |job: Job| async move {
            let o = ctx.run(job.script(), None).await?;
            Ok(job.result(&o.stdout_str(), &o.stderr_str()))
        };
        // What only pip can tell: check mode says `changed`, as ansible-core.
        if extra_args.is_some() || requirements.is_some() || state == "latest" || names.is_none() {
            return Ok(Plan::fused(
                async { Ok(ModuleResult::changed(true)) },
                run(job),
            ));
        }

        // The freeze list decides.
        let section = |start: &str, end: &str| -> String {
            let s = out
                .find(start)
                .map(|i| i + start.len())
                .unwrap_or(out.len());
            let e = out[s..].find(end).map_or(out.len(), |i| s + i);
            out[s..e].to_string()
        };
        let freeze_out = section("@@freeze\n", "\n@@rc ");
        let freeze_out = if freeze_out.is_empty() {
            freeze_out
        } else {
            format!("{freeze_out}\n")
        };
        let freeze_rc: i32 = out
            .lines()
            .find_map(|l| l.strip_prefix("@@rc "))
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or(0);
        let mut pkg_cmd = pip.clone();
        pkg_cmd.extend(["list".to_string(), "--format=freeze".to_string()]);
        if freeze_rc != 0 {
            return Ok(Plan::done(fail(&pkg_cmd, &freeze_out, &freeze_err)));
        }
        let list = freeze_list(&freeze_out);
        let needed = reqs.iter().any(|r| {
            let present = r.satisfied_by(&list);
            (state == "present" && !present) || (state == "absent" && present)
        });
        let planned = with_output(
            ModuleResult::changed(needed).with("cmd", pkg_cmd.join(" ")),
            &freeze_out,
            &freeze_err,
        );
        if needed || state == "forcereinstall" {
            return Ok(Plan::Fused {
                preview: Box::pin(async move { Ok(planned) }),
                apply: Box::pin(run(job)),
            });
        }
        // Already as wanted: pip need not run at all.
        let mut cmd = pip;
        cmd.extend(job.args.iter().cloned());
        let settled = job.shaped(
            ModuleResult::changed(false),
            cmd,
            String::new(),
            String::new(),
        );
        Ok(Plan::fused(async move { Ok(planned) }, async move {
            Ok(settled)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_put_back_together_as_ansible_core_does() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            recover_names(&v(&[
                "django>1.11.1",
                "<1.11.3",
                "ipaddress",
                "simpleproject>1.1.0",
                "<2.0.0"
            ])),
            [
                "django>1.11.1,<1.11.3",
                "ipaddress",
                "simpleproject>1.1.0,<2.0.0"
            ]
        );
        assert_eq!(
            recover_names(&v(&["requests[security,socks]>=2", "six"])),
            ["requests[security,socks]>=2", "six"]
        );
    }

    #[test]
    fn requirements_print_and_match_as_packaging_does() {
        let r = Req::parse("Keel_Pkg >= 1.0, <3");
        assert_eq!(r.shown, "Keel_Pkg<3,>=1.0");
        let list = freeze_list("keel-pkg==2.5\nother==1\n");
        assert!(r.satisfied_by(&list));
        assert!(!Req::parse("keel-pkg>=3").satisfied_by(&list));
        assert!(Req::parse("keel.pkg").satisfied_by(&list));
        assert!(Req::parse("git+https://x/y.git").plain.is_none());
        assert!(!Req::parse("./local/dir").satisfied_by(&list));
    }

    #[test]
    fn the_apply_output_splits_into_steps() {
        let out = format!("hello\n{MARK}before 0\u{1e}\nrun out\n{MARK}run 1\u{1e}\n");
        let err = format!("\n{MARK}before 0\u{1e}\noops\n{MARK}run 1\u{1e}\n");
        let s = steps(&out, &err);
        assert_eq!(s[0].0, "before");
        assert_eq!(s[0].1.out, "hello");
        assert_eq!(s[1].1.out, "run out");
        assert_eq!(s[1].1.rc, 1);
        assert_eq!(s[1].1.err, "oops");
    }
}
