//! `modprobe`: a kernel module loaded or unloaded now, and optionally at
//! every boot (`persistent`).
//!
//! Query: one round trip learns whether the module is loaded (`/proc/modules`,
//! `/sys/module`, the kernel's `modules.builtin`), whether this host has
//! modules for its running kernel, and the bodies of every
//! `/etc/modules-load.d/*.conf` and `/etc/modprobe.d/*.conf`. The wanted
//! files are computed on the controller ([`plan_files`], pure); apply runs
//! `modprobe` (or `modprobe -r`) and then writes the files that differ.
//! Check mode stops after a `modprobe -n` dry run.

use std::collections::BTreeMap;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{apply, state_diff, text_diff, write_file, FileOwner, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Modprobe;

pub const LOAD_DIR: &str = "/etc/modules-load.d";
pub const PARAMS_DIR: &str = "/etc/modprobe.d";

/// The kernel treats `-` and `_` in module names alike.
fn kernel_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Whether `line` (of a modules-load.d file) names the module.
fn loads(line: &str, name: &str) -> bool {
    let t = line.trim();
    !t.starts_with('#') && !t.starts_with(';') && kernel_name(t) == kernel_name(name)
}

/// The words of an `options <module> ...` line of modprobe.d, if it is one
/// for `name`.
fn options_of<'a>(line: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let mut w = line.split_whitespace();
    (w.next() == Some("options") && w.next().map(kernel_name) == Some(kernel_name(name)))
        .then(|| w.collect())
}

/// `text` without the lines `drop` picks; `None` when nothing was dropped.
fn without(text: &str, drop: impl Fn(&str) -> bool) -> Option<String> {
    let kept: Vec<&str> = text.lines().filter(|l| !drop(l)).collect();
    if kept.len() == text.lines().count() {
        return None;
    }
    Some(kept.iter().map(|l| format!("{l}\n")).collect())
}

/// The persistence files after the change: path → new body, only for files
/// that differ from `files` (path → current body).
pub fn plan_files(
    files: &BTreeMap<String, String>,
    name: &str,
    params: &str,
    persistent: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let in_dir = |p: &str, dir: &str| p.starts_with(&format!("{dir}/"));
    match persistent {
        "present" => {
            let listed = files
                .iter()
                .filter(|(p, _)| in_dir(p, LOAD_DIR))
                .any(|(_, t)| t.lines().any(|l| loads(l, name)));
            if !listed {
                out.insert(format!("{LOAD_DIR}/{name}.conf"), format!("{name}\n"));
            }
            let want: Vec<&str> = params.split_whitespace().collect();
            if !want.is_empty() {
                let set = files
                    .iter()
                    .filter(|(p, _)| in_dir(p, PARAMS_DIR))
                    .any(|(_, t)| t.lines().any(|l| options_of(l, name) == Some(want.clone())));
                if !set {
                    // Older options for the module elsewhere would fight ours.
                    for (p, t) in files.iter().filter(|(p, _)| in_dir(p, PARAMS_DIR)) {
                        if let Some(n) = without(t, |l| options_of(l, name).is_some()) {
                            out.insert(p.clone(), n);
                        }
                    }
                    out.insert(
                        format!("{PARAMS_DIR}/{name}.conf"),
                        format!("options {name} {}\n", want.join(" ")),
                    );
                }
            }
        }
        "absent" => {
            for (p, t) in files {
                let edited = if in_dir(p, LOAD_DIR) {
                    without(t, |l| loads(l, name))
                } else {
                    without(t, |l| options_of(l, name).is_some())
                };
                if let Some(n) = edited {
                    out.insert(p.clone(), n);
                }
            }
        }
        _ => {}
    }
    out
}

/// Splits the NUL-framed dump of the query (`path\0body\0...`).
fn parse_dump(dump: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut parts = dump.split('\0');
    while let (Some(p), Some(b)) = (parts.next(), parts.next()) {
        let p = p.trim_start_matches('\n');
        if !p.is_empty() {
            out.insert(p.to_string(), b.to_string());
        }
    }
    out
}

/// The arguments `modprobe` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "modprobe",
    sets: &[&[&["name"], &["state"], &["params"], &["persistent"]]],
};

#[async_trait::async_trait]
impl Module for Modprobe {
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
        let state = a
            .choice(&["state"], &["present", "absent"], Some("present"))?
            .unwrap();
        let params = a.string(&["params"])?.unwrap_or_default();
        let persistent = a
            .choice(
                &["persistent"],
                &["disabled", "present", "absent"],
                Some("disabled"),
            )?
            .unwrap();
        a.finish()?;
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "'{name}' is not a kernel module name"
            ))));
        }
        let kname = kernel_name(&name);
        let mut q = Query::new();
        q.test(
            "loaded",
            &format!(
                "grep -q '^{k} ' /proc/modules || [ -d /sys/module/{k} ] || \
                 grep -Eq '/({n}|{k})\\.ko' \"/lib/modules/$(uname -r)/modules.builtin\"",
                k = kname,
                n = name
            ),
        )
        .section("kernel", "uname -r")
        .test("has_modules", "[ -d \"/lib/modules/$(uname -r)\" ]");
        if persistent != "disabled" {
            q.section(
                "files",
                &format!(
                    "for f in {LOAD_DIR}/*.conf {PARAMS_DIR}/*.conf; do \
                     [ -f \"$f\" ] || continue; printf '%s\\0' \"$f\"; cat -- \"$f\"; printf '\\0'; done"
                ),
            );
        }
        let ans = q.run(ctx).await?;
        let loaded = ans.yes("loaded");
        let files = parse_dump(ans.text("files"));
        let writes = plan_files(&files, &name, &params, &persistent);

        let runtime = match (state.as_str(), loaded) {
            ("present", false) => {
                let mut words = vec!["modprobe".to_string(), quote(&name)];
                for p in shell_words::split(&params)
                    .map_err(|e| ModuleError::Args(format!("params: {e}")))?
                {
                    words.push(quote(&p));
                }
                Some(words.join(" "))
            }
            ("absent", true) => Some(format!("modprobe -r {}", quote(&name))),
            _ => None,
        };
        let mut res = ModuleResult::changed(runtime.is_some() || !writes.is_empty())
            .with("name", name.clone())
            .with("params", params.clone())
            .with("state", state.clone())
            .with("persistent", persistent.clone());
        if ctx.diff {
            if runtime.is_some() {
                res.diff.push(state_diff(
                    &name,
                    &[("loaded", loaded.to_string())],
                    &[("loaded", (!loaded).to_string())],
                ));
            }
            for (p, body) in &writes {
                res.diff
                    .push(text_diff(p, files.get(p).map(String::as_str), Some(body)));
            }
        }
        if runtime.is_none() && writes.is_empty() {
            return Ok(Plan::done(res));
        }
        let hint = if ans.yes("has_modules") {
            String::new()
        } else {
            format!(
                " (this host has no modules for its running kernel {}: \
                 in a container, the machine hosting it must load them)",
                ans.trimmed("kernel")
            )
        };
        let step = Step {
            runtime,
            writes,
            files,
            res,
            name,
            state,
            hint,
        };
        if step.runtime.is_some() {
            // A dry run (`modprobe -n`) in check mode still tells whether
            // the module exists.
            return Ok(Plan::fused(
                step.clone().run(ctx, true),
                step.run(ctx, false),
            ));
        }
        Ok(Plan::change(step.res.clone(), step.run(ctx, false)))
    }
}

/// The change: load or unload now, then the files that make it persist.
#[derive(Clone)]
struct Step {
    runtime: Option<String>,
    writes: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
    res: ModuleResult,
    name: String,
    state: String,
    /// What to add to a load failure on a host without kernel modules.
    hint: String,
}

impl Step {
    /// Runs the change; `dry` runs only `modprobe -n` (the check-mode
    /// preview) and writes nothing.
    async fn run(self, ctx: &TaskContext<'_>, dry: bool) -> Result<ModuleResult, ModuleError> {
        let Step {
            runtime,
            writes,
            files,
            res,
            name,
            state,
            hint,
        } = self;
        if let Some(cmd) = &runtime {
            let cmd = if dry {
                cmd.replacen("modprobe", "modprobe -n", 1)
            } else {
                cmd.clone()
            };
            if let Err(e) = apply(ctx, &cmd, None).await? {
                let what = if state == "present" { "load" } else { "unload" };
                let mut r = ModuleResult::failed(format!(
                    "Failed to {what} kernel module {name}: {e}{hint}"
                ));
                r.data = res.data;
                return Ok(r);
            }
        }
        if dry {
            return Ok(res);
        }
        for (p, body) in &writes {
            let attrs = FileOwner {
                mode: (!files.contains_key(p)).then_some(0o644),
                ..Default::default()
            };
            if let Err(e) =
                write_file(ctx, p, body.as_bytes(), attrs, files.contains_key(p), true).await?
            {
                let mut r = ModuleResult::failed(format!("Failed to write {p}: {e}"));
                r.data = res.data;
                return Ok(r);
            }
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn present_writes_only_what_is_missing() {
        let none = files(&[]);
        let w = plan_files(&none, "dummy", "numdummies=2", "present");
        assert_eq!(w["/etc/modules-load.d/dummy.conf"], "dummy\n");
        assert_eq!(
            w["/etc/modprobe.d/dummy.conf"],
            "options dummy numdummies=2\n"
        );
        let done = files(&[
            ("/etc/modules-load.d/net.conf", "# nets\ndummy\n"),
            ("/etc/modprobe.d/x.conf", "options dummy  numdummies=2\n"),
        ]);
        assert!(plan_files(&done, "dummy", "numdummies=2", "present").is_empty());
        // Other options for the module are removed where they are.
        let old = files(&[(
            "/etc/modprobe.d/x.conf",
            "options dummy numdummies=1\nblacklist foo\n",
        )]);
        let w = plan_files(&old, "dummy", "numdummies=2", "present");
        assert_eq!(w["/etc/modprobe.d/x.conf"], "blacklist foo\n");
        assert!(w.contains_key("/etc/modprobe.d/dummy.conf"));
    }

    #[test]
    fn absent_removes_lines_everywhere() {
        let f = files(&[
            ("/etc/modules-load.d/a.conf", "br_netfilter\ndummy\n"),
            ("/etc/modules-load.d/b.conf", "loop\n"),
            (
                "/etc/modprobe.d/c.conf",
                "options dummy x=1\noptions loop max_loop=8\n",
            ),
        ]);
        let w = plan_files(&f, "dummy", "", "absent");
        assert_eq!(w.len(), 2);
        assert_eq!(w["/etc/modules-load.d/a.conf"], "br_netfilter\n");
        assert_eq!(w["/etc/modprobe.d/c.conf"], "options loop max_loop=8\n");
        assert!(plan_files(&f, "dummy", "", "disabled").is_empty());
    }

    #[test]
    fn dump_frames_paths_and_bodies() {
        let d = parse_dump("\n/etc/modules-load.d/a.conf\0x\ny\n\0/etc/modprobe.d/b.conf\0\0");
        assert_eq!(d["/etc/modules-load.d/a.conf"], "x\ny\n");
        assert_eq!(d["/etc/modprobe.d/b.conf"], "");
    }
}
