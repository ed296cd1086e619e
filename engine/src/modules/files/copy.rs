//! `copy`: puts content, a controller file or a controller directory on the
//! host (or copies a file already there with `remote_src`).
//!
//! One probe learns the destination's checksum and attributes; the write (if
//! any) is one more round trip with the bytes on stdin. [`put_content`] is the
//! shared "make this path hold these bytes" path that `template` also uses.

use std::path::{Path, PathBuf};

use minijinja::value::ValueKind;
use minijinja::Value;

use crate::modules::args::{ModeSpec, ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::{
    self, attr_commands, fill_attrs, put_content, resolve_mode, FileAttrs, FileWrite, Put, Query,
    Source,
};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Copy;

/// `content:` as bytes: strings as-is, structures as JSON (as Ansible does).
fn content_bytes(v: &Value) -> Result<Vec<u8>, ModuleError> {
    match v.kind() {
        ValueKind::String => Ok(v.as_str().unwrap_or_default().as_bytes().to_vec()),
        ValueKind::Map | ValueKind::Seq => serde_json::to_vec(v)
            .map_err(|e| ModuleError::Args(format!("cannot serialize content: {e}"))),
        _ => Ok(v.to_string().into_bytes()),
    }
}

/// The arguments `copy` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "copy",
    sets: &[
        &[
            &["dest"],
            &["src"],
            &["content"],
            &["remote_src"],
            &["backup"],
            &["force", "thirsty"],
            &["validate"],
            &["directory_mode"],
            &["follow"],
            &["local_follow"],
            &["decrypt"],
            &["checksum"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for Copy {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let dest = a.req_string(&["dest"])?;
        let src = a.string(&["src"])?;
        let content = a.value(&["content"]);
        let remote_src = a.bool(&["remote_src"], false)?;
        let attrs = FileAttrs::parse(&mut a)?;
        let backup = a.bool(&["backup"], false)?;
        let force = a.bool(&["force", "thirsty"], true)?;
        let validate = a.string(&["validate"])?;
        let directory_mode = a.mode(&["directory_mode"])?;
        let follow = a.bool(&["follow"], false)?;
        a.bool(&["local_follow"], true)?;
        // A vaulted `src` is decrypted on the controller unless `decrypt: false`.
        let decrypt = a.bool(&["decrypt"], true)?;
        a.ignore(&["checksum"]);
        a.finish()?;

        if src.is_some() && content.is_some() {
            return Err(ModuleError::Args(
                "parameters are mutually exclusive: src|content (module copy)".into(),
            ));
        }
        if let Some(c) = content {
            if dest.ends_with('/') {
                return Ok(Plan::done(ModuleResult::failed(
                    "can not use content with a dir as dest",
                )));
            }
            let bytes = content_bytes(&c)?;
            return put_content(
                ctx,
                Put {
                    dest,
                    basename: None,
                    content: bytes,
                    attrs,
                    preserve_mode: None,
                    backup,
                    force,
                    validate,
                    follow,
                    extra: Vec::new(),
                },
            )
            .await;
        }
        let Some(src) = src else {
            return Err(ModuleError::Args(
                "one of the following is required: src, content (module copy)".into(),
            ));
        };
        if remote_src {
            return copy_remote(ctx, src, dest, attrs, backup, force, validate).await;
        }
        let Some(path) = ctx.find_file("files", &src) else {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Could not find or access '{src}' on the controller"
            ))));
        };
        if path.is_dir() {
            return copy_dir(
                ctx,
                &src,
                &path,
                dest,
                &attrs,
                directory_mode.as_ref(),
                decrypt,
            )
            .await;
        }
        let bytes = read_src(&path, decrypt)?;
        let local_mode = local_mode(&path);
        let base = path
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        put_content(
            ctx,
            Put {
                dest,
                basename: Some(base),
                content: bytes,
                attrs,
                preserve_mode: local_mode,
                backup,
                force,
                validate,
                follow,
                extra: vec![("src".into(), path.display().to_string().into())],
            },
        )
        .await
    }
}

fn local_mode(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// `remote_src: yes`: both files are on the host.
async fn copy_remote<'a>(
    ctx: &'a TaskContext<'a>,
    src: String,
    dest: String,
    attrs: FileAttrs,
    backup: bool,
    force: bool,
    validate: Option<String>,
) -> Result<Plan<'a>, ModuleError> {
    let (_, base) = kit::split_path(&src);
    let mut probe = Query::new();
    probe
        .raw(&format!(
            "d={}\ncase \"$d\" in */) d=\"$d\"{b} ;; *) if [ -d \"$d\" ]; then d=\"$d/\"{b}; fi ;; esac\necho \"D $d\"\n",
            quote(&dest),
            b = quote(base)
        ))
        .stat("src", &src, true, Some("sha1sum"))
        .stat_expr("dest", "\"$d\"", true, Some("sha1sum"));
    let q = probe.run_checked(ctx).await?;
    let s = q.stat("src");
    if !s.exists {
        return Ok(Plan::done(ModuleResult::failed(format!(
            "Source {src} not found"
        ))));
    }
    if s.is_dir() {
        // A directory: `cp -a` into place, change detection by listing.
        let script = format!(
            "set -e\nd={}\nif [ -d \"$d\" ]; then n=$(cp -a -n -v -- {} \"$d\"/ | wc -l); else mkdir -p \"$d\"; n=$(cp -a -n -v -- {}/. \"$d\"/ | wc -l); fi\necho \"N $n\"\n",
            quote(&dest),
            quote(&src),
            quote(&src)
        );
        let planned = ModuleResult::changed(true)
            .with("dest", dest.clone())
            .with("src", src.clone());
        return Ok(Plan::change(planned, async move {
            let out = ctx.run(script, None).await?;
            if out.rc != 0 {
                return Ok(ModuleResult::failed(out.stderr_str().trim().to_string()));
            }
            let n: u64 = kit::StatReport::parse(&out.stdout)
                .line("N")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Ok(ModuleResult::changed(n > 0)
                .with("dest", dest)
                .with("src", src))
        }));
    }
    let resolved = q.line("D").unwrap_or(&dest).to_string();
    let d = q.stat("dest");
    let mode = resolve_mode(&attrs, Some(s.mode), &d)?;
    let same = d.exists && d.checksum == s.checksum;
    let mut res = ModuleResult::ok()
        .with("dest", resolved.clone())
        .with("src", src.clone());
    if let Some(c) = &s.checksum {
        res.data.insert("checksum".into(), c.clone().into());
    }
    if d.exists && !same && !force {
        fill_attrs(&mut res, &d);
        return Ok(Plan::done(res));
    }
    if same {
        let (cmds, changed) =
            attr_commands(&d, mode, attrs.owner.as_deref(), attrs.group.as_deref());
        res.changed = changed;
        fill_attrs(&mut res, &d);
        if !changed {
            return Ok(Plan::done(res));
        }
        return Ok(Plan::change(res.clone(), async move {
            let out = ctx
                .run(format!("p={}\nset -e\n{cmds}", quote(&resolved)), None)
                .await?;
            if out.rc != 0 {
                return Ok(ModuleResult::failed(out.stderr_str().trim().to_string()));
            }
            Ok(res)
        }));
    }
    res.changed = true;
    Ok(Plan::change(res.clone(), async move {
        let write = FileWrite {
            dest: &resolved,
            source: Source::RemotePath(&src),
            mode,
            owner: attrs.owner.as_deref(),
            group: attrs.group.as_deref(),
            backup,
            validate: validate.as_deref(),
            dest_exists: d.exists,
            make_parents: dest.ends_with('/'),
        };
        match write.run(ctx).await? {
            Ok(o) => {
                if let Some(b) = o.backup_file {
                    res.data.insert("backup_file".into(), b.into());
                }
                fill_attrs(&mut res, &o.final_stat);
                Ok(res)
            }
            Err(msg) => Ok(ModuleResult::failed(msg)),
        }
    }))
}

/// A controller directory, copied recursively. `src/` (trailing slash)
/// copies the directory's contents; `src` copies the directory itself.
/// A controller file's bytes; a vault is opened unless `decrypt` is off.
fn read_src(path: &Path, decrypt: bool) -> Result<Vec<u8>, ModuleError> {
    if decrypt {
        return crate::vault::read_file(path).map_err(|e| ModuleError::Failed(e.to_string()));
    }
    std::fs::read(path)
        .map_err(|e| ModuleError::Failed(format!("cannot read {}: {e}", path.display())))
}

async fn copy_dir<'a>(
    ctx: &'a TaskContext<'a>,
    src_arg: &str,
    src: &Path,
    dest: String,
    attrs: &FileAttrs,
    directory_mode: Option<&ModeSpec>,
    decrypt: bool,
) -> Result<Plan<'a>, ModuleError> {
    let root = if src_arg.ends_with('/') {
        dest.trim_end_matches('/').to_string()
    } else {
        let base = src
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{}/{}", dest.trim_end_matches('/'), base)
    };
    let mut dirs: Vec<String> = vec![String::new()];
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    walk(src, "", &mut dirs, &mut files)?;
    let join = |rel: &str| {
        if rel.is_empty() {
            root.clone()
        } else {
            format!("{root}/{rel}")
        }
    };

    let mut probe = Query::new();
    for (i, d) in dirs.iter().enumerate() {
        probe.stat(&format!("d{i}"), &join(d), true, None);
    }
    for (i, (rel, _)) in files.iter().enumerate() {
        probe.stat(&format!("f{i}"), &join(rel), true, Some("sha1sum"));
    }
    let q = probe.run_checked(ctx).await?;

    let mut script = String::from("set -e\n");
    let mut stdin = Vec::new();
    let mut changed = false;
    let dir_mode = match directory_mode {
        Some(m) => m.resolve(0o755, true)?,
        None => None,
    };
    for (i, d) in dirs.iter().enumerate() {
        let st = q.stat(&format!("d{i}"));
        let path = join(d);
        if !st.exists {
            changed = true;
            script.push_str(&format!("mkdir -p -- {}\n", quote(&path)));
            if let Some(m) = dir_mode {
                script.push_str(&format!("chmod {m:04o} -- {}\n", quote(&path)));
            }
        } else if !st.is_dir() {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "{path} exists and is not a directory"
            ))));
        }
    }
    for (i, (rel, local)) in files.iter().enumerate() {
        let st = q.stat(&format!("f{i}"));
        let bytes = read_src(local, decrypt)?;
        let path = join(rel);
        let mode = resolve_mode(attrs, local_mode(local), &st)?;
        if st.exists && st.checksum.as_deref() == Some(kit::sha1_hex(&bytes).as_str()) {
            let (cmds, c) =
                attr_commands(&st, mode, attrs.owner.as_deref(), attrs.group.as_deref());
            if c {
                changed = true;
                script.push_str(&format!("p={}\n{cmds}", quote(&path)));
            }
            continue;
        }
        changed = true;
        // GNU `head -c` reads no more than it writes, so files can follow
        // each other on one stdin.
        let tmp = format!("{path}.keel{:08x}.tmp", rand::random::<u32>());
        script.push_str(&format!(
            "p={}\nt={}\n(umask 077; head -c {} > \"$t\")\n",
            quote(&path),
            quote(&tmp),
            bytes.len()
        ));
        match mode {
            Some(m) => script.push_str(&format!("chmod {m:04o} \"$t\"\n")),
            None => script.push_str("chmod \"$(printf %o $((0666 & ~$(umask))))\" \"$t\"\n"),
        }
        if let Some(o) = &attrs.owner {
            script.push_str(&format!("chown -- {} \"$t\"\n", quote(o)));
        }
        if let Some(g) = &attrs.group {
            script.push_str(&format!("chgrp -- {} \"$t\"\n", quote(g)));
        }
        script.push_str("mv -f -- \"$t\" \"$p\"\n");
        stdin.extend_from_slice(&bytes);
    }
    let res = ModuleResult::changed(changed)
        .with("dest", root.clone())
        .with("src", src.display().to_string());
    if !changed {
        return Ok(Plan::done(res));
    }
    Ok(Plan::change(res.clone(), async move {
        let out = ctx.run(script, Some(stdin)).await?;
        if out.rc != 0 {
            return Ok(ModuleResult::failed(format!(
                "copying into {root} failed: {}",
                out.stderr_str().trim()
            )));
        }
        Ok(res)
    }))
}

fn walk(
    base: &Path,
    rel: &str,
    dirs: &mut Vec<String>,
    files: &mut Vec<(String, PathBuf)>,
) -> Result<(), ModuleError> {
    let dir = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| ModuleError::Failed(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let p = e.path();
        if p.is_dir() {
            dirs.push(r.clone());
            walk(base, &r, dirs, files)?;
        } else if p.is_file() {
            files.push((r, p));
        }
    }
    Ok(())
}
