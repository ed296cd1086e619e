//! `git`: a checkout of a repository at a version, with `git` on the host.
//!
//! Query: one round trip reads the checkout's HEAD, its `origin` URL and
//! whether it has local modifications. Apply: clone (optionally shallow),
//! or fetch and check out the wanted version (branch, tag or commit);
//! `before`/`after` are the commits observed around the apply, and
//! `changed` is whether they differ.

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{state_diff, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Git;

/// The arguments `git` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "git",
    sets: &[&[
        &["repo", "name"],
        &["dest"],
        &["version"],
        &["force"],
        &["depth"],
        &["update"],
        &["clone"],
        &["remote"],
        &["accept_hostkey"],
        &["single_branch"],
        &["executable"],
        &["key_file"],
        &["ssh_opts"],
        &["reference"],
        &["refspec"],
        &["recursive"],
        &["track_submodules"],
        &["bare"],
        &["umask"],
        &["verify_commit"],
        &["archive"],
        &["archive_prefix"],
        &["separate_git_dir"],
        &["gpg_whitelist"],
        &["gpg_allowlist"],
        &["accept_newhostkey"],
    ]],
};

#[async_trait::async_trait]
impl Module for Git {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let repo = a.req_string(&["repo", "name"])?;
        let dest = a.req_string(&["dest"])?;
        let version = a.string(&["version"])?.unwrap_or_else(|| "HEAD".into());
        let force = a.bool(&["force"], false)?;
        let depth = a.int(&["depth"])?;
        let update = a.bool(&["update"], true)?;
        let clone = a.bool(&["clone"], true)?;
        let remote = a.string(&["remote"])?.unwrap_or_else(|| "origin".into());
        let accept_hostkey = a.bool(&["accept_hostkey"], false)?;
        let single_branch = a.bool(&["single_branch"], false)?;
        a.ignore(&[
            "executable",
            "key_file",
            "ssh_opts",
            "reference",
            "refspec",
            "recursive",
            "track_submodules",
            "bare",
            "umask",
            "verify_commit",
            "archive",
            "archive_prefix",
            "separate_git_dir",
            "gpg_whitelist",
            "gpg_allowlist",
            "accept_newhostkey",
        ]);
        a.finish()?;
        let qd = quote(&dest);
        let git = "git -c advice.detachedHead=false";
        let mut q = Query::new();
        q.test("have_git", "command -v git >/dev/null")
            .test("checkout", &format!("[ -e {qd}/.git ]"))
            .section("head", &format!("git -C {qd} rev-parse HEAD"))
            .section(
                "url",
                &format!("git -C {qd} remote get-url {}", quote(&remote)),
            )
            .section(
                "dirty",
                &format!("git -C {qd} status --porcelain --untracked-files=no"),
            )
            .section(
                "remote_rev",
                &format!("{git} ls-remote {} {}", quote(&repo), quote(&version)),
            );
        let ans = q.run(ctx).await?;
        if !ans.yes("have_git") {
            return Ok(Plan::done(ModuleResult::failed(
                "git is not installed on the host",
            )));
        }
        let exists = ans.yes("checkout");
        let before = exists.then(|| ans.trimmed("head").to_string());
        let remote_rev = ans
            .text("remote_rev")
            .lines()
            .find(|l| {
                let r = l.split('\t').nth(1).unwrap_or("");
                r == version
                    || r == format!("refs/heads/{version}")
                    || r == format!("refs/tags/{version}^{{}}")
                    || r == format!("refs/tags/{version}")
            })
            .and_then(|l| l.split('\t').next())
            .map(str::to_string);
        // A full or abbreviated commit id names itself.
        let is_sha = version.len() >= 7 && version.chars().all(|c| c.is_ascii_hexdigit());
        let target = remote_rev
            .clone()
            .or_else(|| is_sha.then(|| version.clone()));
        let mut res = ModuleResult::ok()
            .with(
                "before",
                before.clone().map(Value::from).unwrap_or(Value::from(())),
            )
            .with("remote_url_changed", exists && ans.trimmed("url") != repo);
        let dirty = exists && !ans.trimmed("dirty").is_empty();
        if dirty && !force && update {
            return Ok(Plan::done(
                ModuleResult::failed(
                    "Local modifications exist in the destination: ".to_string()
                        + &dest
                        + " (force=yes to discard them)",
                )
                .with("before", before.unwrap_or_default()),
            ));
        }
        let up_to_date = match (&before, &target) {
            (Some(b), Some(t)) => b.starts_with(t.as_str()) || t.starts_with(b.as_str()),
            _ => false,
        };
        let need = if !exists {
            clone
        } else {
            update && (!up_to_date || (dirty && force))
        };
        if !need {
            res.data.insert(
                "after".into(),
                before.clone().map(Value::from).unwrap_or(Value::from(())),
            );
            return Ok(Plan::done(res));
        }
        res.changed = true;
        if ctx.diff {
            res.diff.push(state_diff(
                &dest,
                &[("commit", before.clone().unwrap_or_default())],
                &[("commit", target.clone().unwrap_or_else(|| version.clone()))],
            ));
        }
        let mut planned = res.clone();
        planned.data.insert(
            "after".into(),
            target.clone().map(Value::from).unwrap_or(Value::from(())),
        );
        Ok(Plan::change(planned, async move {
            let env = if accept_hostkey {
                "export GIT_SSH_COMMAND='ssh -o StrictHostKeyChecking=no'\n"
            } else {
                ""
            };
            let depth_arg = depth.map(|d| format!(" --depth {d}")).unwrap_or_default();
            let qv = quote(&version);
            let mut s = format!("set -e\n{env}");
            if !exists {
                let branch = if version != "HEAD" && !is_sha {
                    format!(" --branch {qv}")
                } else {
                    String::new()
                };
                let sb = if single_branch {
                    " --single-branch"
                } else {
                    ""
                };
                s.push_str(&format!(
                    "{git} clone{depth_arg}{branch}{sb} --origin {} {} {qd}\n",
                    quote(&remote),
                    quote(&repo)
                ));
                if is_sha {
                    s.push_str(&format!("{git} -C {qd} checkout --force {qv}\n"));
                }
            } else {
                s.push_str(&format!(
                    "{git} -C {qd} remote set-url {} {}\n",
                    quote(&remote),
                    quote(&repo)
                ));
                s.push_str(&format!(
                    "{git} -C {qd} fetch{depth_arg} --tags {} \n",
                    quote(&remote)
                ));
                if version == "HEAD" {
                    s.push_str(&format!(
                        "{git} -C {qd} reset --hard {}/HEAD\n",
                        quote(&remote)
                    ));
                } else if remote_rev.is_some() && !is_sha {
                    s.push_str(&format!(
                        "if {git} -C {qd} show-ref --verify --quiet refs/remotes/{r}/{v}; then {git} -C {qd} checkout --force -B {qv} {r}/{qv}; else {git} -C {qd} checkout --force {qv}; fi\n",
                        r = quote(&remote),
                        v = version
                    ));
                } else {
                    s.push_str(&format!("{git} -C {qd} checkout --force {qv}\n"));
                }
            }
            s.push_str(&format!("echo \"AFTER $(git -C {qd} rev-parse HEAD)\"\n"));
            let out = ctx.run(s, None).await?;
            if out.rc != 0 {
                let mut r = ModuleResult::failed(format!(
                    "Failed to check out {repo} at {version}: {}",
                    out.stderr_str().trim()
                ));
                r.data = res.data;
                return Ok(r);
            }
            let after = out
                .stdout_str()
                .lines()
                .find_map(|l| l.strip_prefix("AFTER ").map(str::to_string));
            res.changed = after != before;
            res.data.insert(
                "after".into(),
                after.map(Value::from).unwrap_or(Value::from(())),
            );
            Ok(res)
        }))
    }
}
