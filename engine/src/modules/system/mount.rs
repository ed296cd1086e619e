//! `mount` (ansible.posix.mount): an `/etc/fstab` entry and, for
//! `mounted`/`unmounted`/`remounted`, the live mount. Query: one round trip
//! reads fstab and whether the path is mounted (`findmnt`). The fstab edit
//! runs on the controller (the path's line replaced in place); apply writes
//! it atomically and runs `mount`/`umount`.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{apply, text_diff, write_file, FileOwner, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Mount;

/// fstab escapes whitespace as octal (`\040`).
fn escape(s: &str) -> String {
    s.replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012")
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The fstab text with `path`'s entry set to `line` (or removed).
pub fn edit_fstab(text: &str, path: &str, line: Option<&str>) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for l in text.lines() {
        let t = l.trim();
        let is_it = !t.starts_with('#')
            && t.split_whitespace().nth(1).map(unescape).as_deref() == Some(path);
        if is_it {
            if let (Some(n), false) = (line, done) {
                out.push(n.to_string());
                done = true;
            }
            continue;
        }
        out.push(l.to_string());
    }
    if let (Some(n), false) = (line, done) {
        out.push(n.to_string());
    }
    if out.is_empty() {
        String::new()
    } else {
        out.join("\n") + "\n"
    }
}

/// The current fstab entry of `path`, field by field.
fn current_entry(text: &str, path: &str) -> Option<Vec<String>> {
    text.lines().find_map(|l| {
        let t = l.trim();
        if t.starts_with('#') {
            return None;
        }
        let f: Vec<String> = t.split_whitespace().map(unescape).collect();
        (f.get(1).map(String::as_str) == Some(path)).then_some(f)
    })
}

/// The arguments `mount` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "mount",
    sets: &[&[
        &["path", "name"],
        &["src"],
        &["fstype"],
        &["opts"],
        &["dump"],
        &["passno"],
        &["state"],
        &["fstab"],
        &["backup"],
        &["boot"],
        &["opts_no_log"],
    ]],
};

#[async_trait::async_trait]
impl Module for Mount {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let path = a.req_string(&["path", "name"])?;
        let src = a.string(&["src"])?;
        let fstype = a.string(&["fstype"])?;
        let opts = a.string(&["opts"])?.unwrap_or_else(|| "defaults".into());
        let dump = a.string(&["dump"])?.unwrap_or_else(|| "0".into());
        let passno = a.string(&["passno"])?.unwrap_or_else(|| "0".into());
        let state = a
            .choice(
                &["state"],
                &[
                    "absent",
                    "absent_from_fstab",
                    "mounted",
                    "present",
                    "unmounted",
                    "remounted",
                    "ephemeral",
                ],
                None,
            )?
            .ok_or_else(|| a.missing("state"))?;
        let fstab = a.string(&["fstab"])?.unwrap_or_else(|| "/etc/fstab".into());
        let backup = a.bool(&["backup"], false)?;
        a.ignore(&["boot", "opts_no_log"]);
        a.finish()?;
        let path = if path.len() > 1 {
            path.trim_end_matches('/').to_string()
        } else {
            path
        };
        let wants_entry = matches!(state.as_str(), "present" | "mounted");
        if wants_entry && (src.is_none() || fstype.is_none()) {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "state is {state} but all of the following are missing: src, fstype"
            ))));
        }
        let qp = quote(&path);
        let mut q = Query::new();
        q.file("fstab", &fstab)
            .test(
                "mounted",
                &format!("findmnt -n --mountpoint {qp} >/dev/null"),
            )
            .test("dir", &format!("[ -d {qp} ]"));
        let ans = q.run(ctx).await?;
        let existing = ans.file("fstab");
        let text = existing.unwrap_or("");
        let mounted = ans.yes("mounted");
        let cur = current_entry(text, &path);

        let new_line = match (&src, &fstype) {
            (Some(s), Some(t)) => Some(format!(
                "{} {} {} {} {} {}",
                escape(s),
                escape(&path),
                escape(t),
                escape(&opts),
                dump,
                passno
            )),
            _ => None,
        };
        let after = match state.as_str() {
            "present" | "mounted" => {
                let want: Vec<String> = vec![
                    src.clone().unwrap_or_default(),
                    path.clone(),
                    fstype.clone().unwrap_or_default(),
                    opts.clone(),
                    dump.clone(),
                    passno.clone(),
                ];
                if cur.as_ref() == Some(&want) {
                    text.to_string()
                } else {
                    edit_fstab(text, &path, new_line.as_deref())
                }
            }
            "absent" | "absent_from_fstab" => edit_fstab(text, &path, None),
            _ => text.to_string(),
        };
        let fstab_changes = after != text;
        let mut cmds = String::new();
        match state.as_str() {
            "mounted" => {
                if !ans.yes("dir") {
                    cmds.push_str(&format!("mkdir -p -- {qp}\n"));
                }
                if !mounted {
                    cmds.push_str(&format!("mount -T {} {qp}\n", quote(&fstab)));
                } else if fstab_changes {
                    cmds.push_str(&format!("mount -T {} -o remount {qp}\n", quote(&fstab)));
                }
            }
            "unmounted" | "absent" if mounted => cmds.push_str(&format!("umount {qp}\n")),
            "remounted" if mounted => {
                cmds.push_str(&format!("mount -T {} -o remount {qp}\n", quote(&fstab)))
            }
            _ => {}
        }
        let mut res = ModuleResult::changed(fstab_changes || !cmds.is_empty())
            .with("name", path.clone())
            .with("fstab", fstab.clone())
            .with("opts", opts.clone())
            .with("dump", dump.clone())
            .with("passno", passno.clone());
        if let Some(s) = &src {
            res.data.insert("src".into(), s.clone().into());
        }
        if let Some(t) = &fstype {
            res.data.insert("fstype".into(), t.clone().into());
        }
        if !res.changed {
            return Ok(Plan::done(res));
        }
        if ctx.diff && fstab_changes {
            res.diff.push(text_diff(&fstab, existing, Some(&after)));
        }
        let existed = existing.is_some();
        Ok(Plan::change(res.clone(), async move {
            if fstab_changes {
                if backup && existed {
                    let b = format!(
                        "cp -p -- {f} {f}.$(date +%Y-%m-%d@%H:%M:%S)~\n",
                        f = quote(&fstab)
                    );
                    if let Err(e) = apply(ctx, &b, None).await? {
                        return Ok(ModuleResult::failed(e));
                    }
                }
                let owner = FileOwner {
                    mode: if existed { None } else { Some(0o644) },
                    ..Default::default()
                };
                if let Err(e) =
                    write_file(ctx, &fstab, after.as_bytes(), owner, existed, false).await?
                {
                    return Ok(ModuleResult::failed(e));
                }
            }
            if !cmds.is_empty() {
                if let Err(e) = apply(ctx, &cmds, None).await? {
                    let mut r = ModuleResult::failed(format!("Error mounting {path}: {e}"));
                    r.data = res.data;
                    return Ok(r);
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
    fn fstab_entries_are_replaced_in_place_and_escaped() {
        let t = "# static\nUUID=1 / ext4 defaults 0 1\n/dev/sdb1 /data ext4 defaults 0 2\n";
        let n = edit_fstab(t, "/data", Some("/dev/sdc1 /data xfs noatime 0 2"));
        assert_eq!(
            n,
            "# static\nUUID=1 / ext4 defaults 0 1\n/dev/sdc1 /data xfs noatime 0 2\n"
        );
        assert_eq!(
            edit_fstab(&n, "/data", None),
            "# static\nUUID=1 / ext4 defaults 0 1\n"
        );
        assert_eq!(escape("/mnt/my disk"), "/mnt/my\\040disk");
        assert_eq!(
            current_entry("a /mnt/my\\040disk b c 0 0\n", "/mnt/my disk").unwrap()[0],
            "a"
        );
    }
}
