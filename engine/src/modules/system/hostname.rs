//! `hostname`: the host's name, in `/etc/hostname` and in the running
//! kernel. One query reads both (and whether systemd runs); apply writes
//! the file atomically and calls `hostnamectl` (systemd) or `hostname`.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{apply, state_diff, write_file, FileOwner, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Hostname;

/// The arguments `hostname` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "hostname",
    sets: &[&[&["name"], &["use"]]],
};

#[async_trait::async_trait]
impl Module for Hostname {
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
        let use_ = a.choice(
            &["use"],
            &[
                "alpine", "debian", "freebsd", "generic", "macos", "macosx", "darwin", "openbsd",
                "openrc", "redhat", "sles", "solaris", "systemd",
            ],
            None,
        )?;
        a.finish()?;
        let mut q = Query::new();
        q.section("kernel", "hostname")
            .file("file", "/etc/hostname")
            .test(
                "systemd",
                "[ -d /run/systemd/system ] && command -v hostnamectl >/dev/null",
            );
        let ans = q.run(ctx).await?;
        let kernel = ans.trimmed("kernel").to_string();
        let file = ans.file("file").map(|f| f.trim().to_string());
        let use_systemd = match use_.as_deref() {
            Some("systemd") => true,
            Some(_) => false,
            None => ans.yes("systemd"),
        };
        let short = name.split('.').next().unwrap_or(&name).to_string();
        let domain = name
            .split_once('.')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let mut res = ModuleResult::ok().with("name", name.clone());
        res.facts = Some(
            [
                ("ansible_hostname".to_string(), short.clone().into()),
                ("ansible_nodename".to_string(), name.clone().into()),
                ("ansible_fqdn".to_string(), name.clone().into()),
                ("ansible_domain".to_string(), domain.into()),
            ]
            .into_iter()
            .collect(),
        );
        let file_ok = file.as_deref() == Some(name.as_str());
        let kernel_ok = kernel == name;
        if file_ok && kernel_ok {
            return Ok(Plan::done(res));
        }
        res.changed = true;
        if ctx.diff {
            res.diff.push(state_diff(
                "hostname",
                &[
                    ("hostname", kernel.clone()),
                    ("/etc/hostname", file.clone().unwrap_or_default()),
                ],
                &[("hostname", name.clone()), ("/etc/hostname", name.clone())],
            ));
        }
        Ok(Plan::change(res.clone(), async move {
            if !file_ok {
                let body = format!("{name}\n");
                if let Err(e) = write_file(
                    ctx,
                    "/etc/hostname",
                    body.as_bytes(),
                    FileOwner::default(),
                    file.is_some(),
                    false,
                )
                .await?
                {
                    return Ok(ModuleResult::failed(e));
                }
            }
            if !kernel_ok {
                let cmd = if use_systemd {
                    format!("hostnamectl set-hostname {}\n", quote(&name))
                } else {
                    format!("hostname {}\n", quote(&name))
                };
                if let Err(e) = apply(ctx, &cmd, None).await? {
                    return Ok(ModuleResult::failed(format!("Command failed: {e}")));
                }
            }
            Ok(res)
        }))
    }
}
