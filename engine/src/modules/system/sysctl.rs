//! `sysctl`: a kernel parameter in a sysctl file and, optionally, in the
//! running kernel. Query: one round trip reads the file and `sysctl -n`.
//! The file edit runs on the controller (the key's line replaced in place,
//! else appended as `key=value`); apply writes it atomically, then
//! `sysctl -p <file>` (`reload`) and/or `sysctl -w` (`sysctl_set`).

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{apply, text_diff, write_file, FileOwner, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Sysctl;

/// Whitespace-insensitive comparison of values (`"4096 16384"`).
fn norm(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The file after setting (`Some`) or removing (`None`) `key`.
pub fn edit_sysctl(text: &str, key: &str, value: Option<&str>) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for line in text.lines() {
        let t = line.trim();
        let k = (!t.starts_with('#') && !t.starts_with(';'))
            .then(|| t.split_once('=').map(|(k, _)| k.trim()))
            .flatten();
        if k == Some(key) {
            if let Some(v) = value {
                if !done {
                    out.push(format!("{key}={v}"));
                    done = true;
                }
            }
            continue;
        }
        out.push(line.to_string());
    }
    if let (Some(v), false) = (value, done) {
        out.push(format!("{key}={v}"));
    }
    if out.is_empty() {
        return String::new();
    }
    out.join("\n") + "\n"
}

/// The value `key` has in the file.
pub fn file_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let t = l.trim();
        if t.starts_with('#') || t.starts_with(';') {
            return None;
        }
        let (k, v) = t.split_once('=')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// The arguments `sysctl` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "sysctl",
    sets: &[&[
        &["name", "key"],
        &["value", "val"],
        &["state"],
        &["reload"],
        &["sysctl_file"],
        &["sysctl_set"],
        &["ignoreerrors"],
    ]],
};

#[async_trait::async_trait]
impl Module for Sysctl {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.req_string(&["name", "key"])?;
        let value = a.string(&["value", "val"])?;
        let state = a
            .choice(&["state"], &["present", "absent"], Some("present"))?
            .unwrap();
        let reload = a.bool(&["reload"], true)?;
        let file = a
            .string(&["sysctl_file"])?
            .unwrap_or_else(|| "/etc/sysctl.conf".into());
        let sysctl_set = a.bool(&["sysctl_set"], false)?;
        let ignoreerrors = a.bool(&["ignoreerrors"], false)?;
        a.finish()?;
        let present = state == "present";
        if present && value.is_none() {
            return Ok(Plan::done(ModuleResult::failed(
                "value cannot be None when state is present",
            )));
        }
        let mut q = Query::new();
        q.file("file", &file)
            .section("kernel", &format!("sysctl -n {}", quote(&name)));
        let ans = q.run(ctx).await?;
        let existing = ans.file("file");
        let text = existing.unwrap_or("");
        let kernel = norm(ans.text("kernel"));
        let want = value.as_deref().map(norm);
        let in_file = file_value(text, &name).map(|v| norm(&v));
        let file_changes = if present {
            in_file != want
        } else {
            in_file.is_some()
        };
        let kernel_changes = present && sysctl_set && Some(&kernel) != want.as_ref();
        let mut res = ModuleResult::changed(file_changes || kernel_changes);
        if !res.changed {
            return Ok(Plan::done(res));
        }
        let after = edit_sysctl(text, &name, if present { want.as_deref() } else { None });
        if ctx.diff && file_changes {
            res.diff.push(text_diff(&file, existing, Some(&after)));
        }
        let existed = existing.is_some();
        Ok(Plan::change(res.clone(), async move {
            let mut res = res;
            if file_changes {
                if let Err(e) = write_file(
                    ctx,
                    &file,
                    after.as_bytes(),
                    FileOwner::default(),
                    existed,
                    true,
                )
                .await?
                {
                    return Ok(ModuleResult::failed(e));
                }
            }
            let e = if ignoreerrors { " -e" } else { "" };
            let mut cmd = String::new();
            if kernel_changes {
                cmd.push_str(&format!(
                    "sysctl{e} -w {}={} >/dev/null\n",
                    quote(&name),
                    quote(want.as_deref().unwrap_or(""))
                ));
            }
            if reload && file_changes {
                cmd.push_str(&format!("sysctl{e} -p {} >/dev/null\n", quote(&file)));
            }
            if !cmd.is_empty() {
                if let Err(err) = apply(ctx, &cmd, None).await? {
                    res = ModuleResult::failed(format!("Failed to reload sysctl: {err}"));
                }
            }
            Ok(res)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_other_lines() {
        let t = "# comment\nvm.swappiness = 60\nnet.ipv4.ip_forward=0\n";
        assert_eq!(
            edit_sysctl(t, "vm.swappiness", Some("10")),
            "# comment\nvm.swappiness=10\nnet.ipv4.ip_forward=0\n"
        );
        assert_eq!(
            edit_sysctl(t, "kernel.x", Some("1")),
            format!("{t}kernel.x=1\n")
        );
        assert_eq!(
            edit_sysctl(t, "vm.swappiness", None),
            "# comment\nnet.ipv4.ip_forward=0\n"
        );
        assert_eq!(file_value(t, "vm.swappiness").as_deref(), Some("60"));
    }
}
