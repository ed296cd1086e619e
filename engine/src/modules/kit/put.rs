//! "Make this path hold these bytes": the content path of `copy` and
//! `template`. One query learns the destination's checksum and attributes
//! (and, for `--diff`, its old content); the write, when anything differs, is
//! one more round trip with the bytes on stdin.

use minijinja::Value;

use super::attrs::{attr_commands, fill_attrs, resolve_mode, FileAttrs};
use super::diff::{file_diff, path_state_diff};
use super::plan::Plan;
use super::query::Query;
use super::stat::{sha1_hex, StatReport, STAT_FN};
use super::write::{FileWrite, Source};
use crate::modules::{ModuleError, ModuleResult, TaskContext};
use crate::shell::quote;

/// Everything [`put_content`] needs to place bytes at a path. It owns its
/// data, because the apply step outlives the module's own locals.
pub struct Put {
    pub dest: String,
    /// When `dest` is a directory (or ends in `/`), the file goes to
    /// `dest/<basename>`.
    pub basename: Option<String>,
    pub content: Vec<u8>,
    pub attrs: FileAttrs,
    /// The mode `preserve` stands for.
    pub preserve_mode: Option<u32>,
    pub backup: bool,
    pub force: bool,
    pub validate: Option<String>,
    pub follow: bool,
    /// Extra return values (`src`...).
    pub extra: Vec<(String, Value)>,
}

/// Plans making `dest` hold `content` with the wanted attributes: one query
/// round trip now, one apply round trip if something differs.
pub async fn put_content<'a>(ctx: &'a TaskContext<'a>, p: Put) -> Result<Plan<'a>, ModuleError> {
    let mut probe = Query::new();
    let mut pre = format!("d={}\n", quote(&p.dest));
    if let Some(b) = &p.basename {
        pre.push_str(&format!(
            "case \"$d\" in */) d=\"$d\"{} ;; *) if [ -d \"$d\" ]; then d=\"$d/\"{}; fi ;; esac\n",
            quote(b),
            quote(b)
        ));
    }
    pre.push_str("echo \"D $d\"\n");
    probe
        .raw(&pre)
        .stat_expr("dest", "\"$d\"", p.follow, Some("sha1sum"));
    if ctx.diff {
        probe.content_expr("\"$d\"");
    }
    let q = probe.run_checked(ctx).await?;
    let dest = q.line("D").unwrap_or(&p.dest).to_string();
    let st = q.stat("dest");
    let new_sum = sha1_hex(&p.content);

    if st.exists && st.is_dir() {
        return Ok(Plan::done(ModuleResult::failed(format!(
            "destination {dest} is a directory"
        ))));
    }
    let mode = resolve_mode(&p.attrs, p.preserve_mode, &st)?;
    let same_content = st.exists && st.checksum.as_deref() == Some(new_sum.as_str());
    let mut res = ModuleResult::ok();
    res.data.insert("dest".into(), dest.clone().into());
    for (k, v) in &p.extra {
        res.data.insert(k.clone(), v.clone());
    }
    res.data.insert("checksum".into(), new_sum.clone().into());

    if st.exists && !same_content && !p.force {
        // `force: no` never replaces an existing file.
        fill_attrs(&mut res, &st);
        return Ok(Plan::done(res));
    }

    if same_content {
        let (cmds, changed) = attr_commands(
            &st,
            mode,
            p.attrs.owner.as_deref(),
            p.attrs.group.as_deref(),
        );
        // What the attributes are (or will be) as far as the query knows.
        let mut shown = st.clone();
        if let Some(m) = mode {
            shown.mode = m;
        }
        if !changed {
            fill_attrs(&mut res, &shown);
            return Ok(Plan::done(res));
        }
        res.changed = true;
        if ctx.diff {
            res.diff.push(path_state_diff(
                &dest,
                &[
                    ("mode", st.mode_str()),
                    ("owner", st.owner.clone()),
                    ("group", st.group.clone()),
                ],
                &[
                    (
                        "mode",
                        mode.map(|m| format!("{m:04o}"))
                            .unwrap_or_else(|| st.mode_str()),
                    ),
                    (
                        "owner",
                        p.attrs.owner.clone().unwrap_or_else(|| st.owner.clone()),
                    ),
                    (
                        "group",
                        p.attrs.group.clone().unwrap_or_else(|| st.group.clone()),
                    ),
                ],
            ));
        }
        let mut planned = res.clone();
        fill_attrs(&mut planned, &shown);
        return Ok(Plan::change(planned, async move {
            let script = format!(
                "p={}\nset -e\n{cmds}{}ks final \"$p\" 0 ''\n",
                quote(&dest),
                STAT_FN
            );
            let out = ctx.run(script, None).await?;
            if out.rc != 0 {
                return Ok(ModuleResult::failed(format!(
                    "failed to set attributes on {dest}: {}",
                    out.stderr_str().trim()
                )));
            }
            let after = StatReport::parse(&out.stdout).stat("final");
            fill_attrs(&mut res, &after);
            Ok(res)
        }));
    }

    // The content differs (or the file is new).
    res.changed = true;
    if ctx.diff {
        let before = if st.exists {
            q.content().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut d = file_diff(&dest, &before, &p.content);
        if !st.exists {
            d.before_header = "/dev/null".into();
        }
        res.diff.push(d);
    }
    let mut planned = res.clone();
    planned
        .data
        .insert("size".into(), (p.content.len() as u64).into());
    if let Some(m) = mode {
        planned
            .data
            .insert("mode".into(), format!("{m:04o}").into());
    }
    planned.data.insert("state".into(), "file".into());
    Ok(Plan::change(planned, async move {
        let write = FileWrite {
            dest: &dest,
            source: Source::Bytes(&p.content),
            mode,
            owner: p.attrs.owner.as_deref(),
            group: p.attrs.group.as_deref(),
            backup: p.backup,
            validate: p.validate.as_deref(),
            dest_exists: st.exists,
            make_parents: p.dest.ends_with('/'),
        };
        match write.run(ctx).await? {
            Ok(outcome) => {
                if let Some(b) = outcome.backup_file {
                    res.data.insert("backup_file".into(), b.into());
                }
                fill_attrs(&mut res, &outcome.final_stat);
                Ok(res)
            }
            Err(msg) => {
                res.changed = false;
                res.failed = true;
                res.msg = Some(msg);
                Ok(res)
            }
        }
    }))
}
