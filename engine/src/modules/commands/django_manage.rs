//! `django_manage` (community.general): runs a Django project's
//! `./manage.py` command (`migrate`, `collectstatic`, `check`...) in the
//! project directory, with a virtualenv's `bin` first on `PATH`.
//!
//! Like `command`, it cannot know what it would change without running:
//! the plan is one fused step. `changed` is read from the command's output
//! with community.general's filters (`Applying …` for `migrate`, a count of
//! static files other than 0 for `collectstatic`...). community.general
//! does not support check mode, so in check mode the task is skipped with
//! ansible-core's message, and nothing runs.

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct DjangoManage;

static PARAMS: Params = Params {
    module: "django_manage",
    sets: &[&[
        &["command"],
        &["project_path", "app_path", "chdir"],
        &["settings"],
        &["pythonpath", "python_path"],
        &["virtualenv", "virtual_env"],
        &["apps"],
        &["cache_table"],
        &["clear"],
        &["database"],
        &["failfast", "fail_fast"],
        &["fixtures"],
        &["testrunner", "test_runner"],
        &["skip"],
        &["merge"],
        &["link"],
    ]],
};

/// The command-specific options each command accepts.
fn allowed(command: &str) -> &'static [&'static str] {
    match command {
        "createcachetable" => &["cache_table", "database"],
        "flush" => &["database"],
        "loaddata" => &["database", "fixtures"],
        "test" => &["failfast", "testrunner", "apps"],
        "migrate" => &["apps", "skip", "merge", "database"],
        "collectstatic" => &["clear", "link"],
        _ => &[],
    }
}

/// community.general's `<command>_filter_output` / `_check_changed`.
fn changed_by(command: &str, out: &str) -> bool {
    let any = |f: &dyn Fn(&str) -> bool| out.split('\n').any(f);
    let installed = |l: &str| l.contains("Installed") && !l.contains("Installed 0 object");
    match command {
        "createcachetable" => !out.contains("already exists"),
        "flush" | "loaddata" => any(&installed),
        "migrate" => any(&|l: &str| {
            l.contains("Migrating forwards ") || installed(l) || l.contains("Applying")
        }),
        "collectstatic" => any(&|l: &str| !l.is_empty() && !l.contains("0 static files")),
        _ => false,
    }
}

fn opt(v: &Option<String>) -> Value {
    v.as_deref().map_or(Value::from(()), Value::from)
}

#[async_trait::async_trait]
impl Module for DjangoManage {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let command = a.req_string(&["command"])?;
        let project = a.req_string(&["project_path", "app_path", "chdir"])?;
        let settings = a.string(&["settings"])?;
        let pythonpath = a.string(&["pythonpath", "python_path"])?;
        let virtualenv = a.string(&["virtualenv", "virtual_env"])?;
        let apps = a.string(&["apps"])?;
        let cache_table = a.string(&["cache_table"])?;
        let clear = a.bool(&["clear"], false)?;
        let database = a.string(&["database"])?;
        let failfast = a.bool(&["failfast", "fail_fast"], false)?;
        let fixtures = a.string(&["fixtures"])?;
        let testrunner = a.string(&["testrunner", "test_runner"])?;
        let skip = a.bool(&["skip"], false)?;
        let merge = a.bool(&["merge"], false)?;
        let link = a.bool(&["link"], false)?;
        a.finish()?;

        let words =
            shell_words::split(&command).map_err(|e| ModuleError::Args(format!("command: {e}")))?;
        let Some(bin) = words.first().cloned() else {
            return Err(ModuleError::Args("command is empty".into()));
        };
        // Refusals surface only when the module runs: in check mode
        // ansible-core skips the task before the module sees its arguments.
        let mut refusal: Option<String> = None;
        for (param, set) in [
            ("apps", apps.is_some()),
            ("clear", clear),
            ("database", database.is_some()),
            ("failfast", failfast),
            ("fixtures", fixtures.is_some()),
            ("testrunner", testrunner.is_some()),
        ] {
            if set && !allowed(&bin).contains(&param) && refusal.is_none() {
                refusal = Some(format!("{param} param is incompatible with command={bin}"));
            }
        }
        if bin == "loaddata" && fixtures.is_none() && refusal.is_none() {
            refusal = Some("fixtures param is required for command=loaddata".into());
        }

        let mut cmd: Vec<String> = vec!["./manage.py".into()];
        cmd.extend(words.iter().cloned());
        if ["flush", "migrate", "test", "collectstatic"].contains(&bin.as_str())
            && !words.iter().any(|w| w == "--noinput")
        {
            cmd.push("--noinput".into());
        }
        for (name, v) in [
            ("settings", &settings),
            ("pythonpath", &pythonpath),
            ("database", &database),
        ] {
            if let Some(v) = v {
                cmd.push(format!("--{name}={v}"));
            }
        }
        for (name, on) in [
            ("clear", clear),
            ("failfast", failfast),
            ("skip", skip),
            ("merge", merge),
            ("link", link),
        ] {
            if on {
                cmd.push(format!("--{name}"));
            }
        }
        if let Some(ap) = &apps {
            cmd.extend(shell_words::split(ap).map_err(|e| ModuleError::Args(e.to_string()))?);
        }
        if let Some(t) = &cache_table {
            cmd.push(t.clone());
        }
        if let Some(f) = &fixtures {
            cmd.extend(shell_words::split(f).map_err(|e| ModuleError::Args(e.to_string()))?);
        }

        let mut script = String::new();
        if let Some(v) = &virtualenv {
            script.push_str(&format!(
                "[ -e {act} ] || {{ echo '@@novenv'; exit 0; }}\nPATH={bin}:$PATH; export PATH\n",
                act = quote(&format!("{v}/bin/activate")),
                bin = quote(&format!("{v}/bin"))
            ));
        }
        script.push_str(&format!("cd {} || exit 1\n", quote(&project)));
        script.push_str(&cmd.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "));
        script.push('\n');

        let skipped = {
            let mut r = ModuleResult::ok().with_msg(
                "remote module (community.general.django_manage) does not support check mode",
            );
            r.skipped = true;
            r
        };
        Ok(Plan::fused(async move { Ok(skipped) }, async move {
            if let Some(m) = refusal {
                return Ok(ModuleResult::failed(m));
            }
            let o = ctx.run(script, None).await?;
            let (out, err) = (o.stdout_str(), o.stderr_str());
            if out.contains("@@novenv") {
                return Ok(ModuleResult::failed(format!(
                    "{} does not point to a valid virtual environment",
                    virtualenv.unwrap_or_default()
                )));
            }
            let strings = Value::from(
                cmd.iter()
                    .map(|s| Value::from(s.as_str()))
                    .collect::<Vec<_>>(),
            );
            let mut out = out;
            if o.rc != 0 {
                if bin == "createcachetable"
                    && err.contains("table")
                    && err.contains("already exists")
                {
                    out = "already exists.".into();
                } else {
                    let msg = if err.contains("Unknown command:") {
                        format!("stdout: {err}\n:stderr: Unknown django command: {bin}")
                    } else {
                        let mut m = String::new();
                        if !out.is_empty() {
                            m.push_str(&format!("stdout: {out}"));
                        }
                        if !err.is_empty() {
                            m.push_str(&format!("\n:stderr: {err}"));
                        }
                        m
                    };
                    return Ok(ModuleResult::failed(msg).with("cmd", strings));
                }
            }
            Ok(ModuleResult::changed(changed_by(&bin, &out))
                .with("out", out.as_str())
                .with("cmd", strings)
                .with("app_path", project.as_str())
                .with("project_path", project.as_str())
                .with("virtualenv", opt(&virtualenv))
                .with("settings", opt(&settings))
                .with("pythonpath", opt(&pythonpath)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::changed_by;

    #[test]
    fn output_filters_are_community_generals() {
        assert!(changed_by(
            "migrate",
            "Operations to perform:\n  Applying app.0001_initial... OK\n"
        ));
        assert!(!changed_by(
            "migrate",
            "Operations to perform:\n  No migrations to apply.\n"
        ));
        assert!(changed_by(
            "collectstatic",
            "\n3 static files copied to '/s'.\n"
        ));
        assert!(!changed_by(
            "collectstatic",
            "\n0 static files copied to '/s', 3 unmodified.\n"
        ));
        assert!(!changed_by(
            "check",
            "System check identified no issues (0 silenced).\n"
        ));
    }
}
