//! `file`: a path's state (file, directory, link, hard, touch, absent) and
//! its mode and ownership.
//!
//! One probe stats the path (and the link source); the controller decides;
//! one apply script makes the change. Symbolic modes are computed here from
//! the observed mode, so `changed` is exact.

use minijinja::Value;

use crate::modules::args::{ModeSpec, ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::FileAttrs;
use crate::modules::kit::{self, attr_commands, path_state_diff, Query, RemoteStat};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct File;

const STATES: &[&str] = &["file", "directory", "link", "hard", "touch", "absent"];

/// The arguments `file` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "file",
    sets: &[
        &[
            &["path", "dest", "name"],
            &["state"],
            &["src"],
            &["recurse"],
            &["force"],
            &["follow"],
            &["modification_time"],
            &["access_time"],
            &["modification_time_format"],
            &["access_time_format"],
            &["_original_basename"],
            &["_diff_peek"],
            &["content"],
            &["backup"],
            &["validate"],
            &["remote_src"],
            &["directory_mode"],
            &["delimiter"],
            &["regexp"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for File {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let path = a.req_string(&["path", "dest", "name"])?;
        let state = a.choice(&["state"], STATES, None)?;
        let src = a.string(&["src"])?;
        let attrs = FileAttrs::parse(&mut a)?;
        let recurse = a.bool(&["recurse"], false)?;
        let force = a.bool(&["force"], false)?;
        let follow = a.bool(&["follow"], true)?;
        let mtime = a.string(&["modification_time"])?;
        let atime = a.string(&["access_time"])?;
        a.ignore(&[
            "modification_time_format",
            "access_time_format",
            "_original_basename",
            "_diff_peek",
            "content",
            "backup",
            "validate",
            "remote_src",
            "directory_mode",
            "delimiter",
            "regexp",
        ]);
        a.finish()?;
        for t in [&mtime, &atime].into_iter().flatten() {
            if t != "now" && t != "preserve" {
                return Err(ModuleError::Args(format!(
                    "modification_time/access_time: only 'now' and 'preserve' are supported, got '{t}'"
                )));
            }
        }
        let path = path.trim_end_matches('/').to_string();
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };

        // Query.
        let mut probe = Query::new();
        probe.stat(
            "p",
            &path,
            follow
                && state.as_deref() != Some("link")
                && state.as_deref() != Some("hard")
                && state.as_deref() != Some("absent"),
            None,
        );
        if let Some(s) = &src {
            let (dir, _) = kit::split_path(&path);
            let dir = if dir.is_empty() { "." } else { dir };
            // Relative link sources are relative to the link's directory.
            let src_expr = if s.starts_with('/') {
                quote(s)
            } else {
                format!("{}/{}", quote(dir), quote(s))
            };
            probe.stat_expr("src", &src_expr, true, None);
        }
        if recurse {
            if let Some(ModeSpec::Octal(m)) = attrs.mode {
                probe.raw(&format!(
                    "if [ -d {p} ] && [ -n \"$(find {p} ! -perm {m:04o} -print -quit)\" ]; then echo DIRTY mode; fi",
                    p = quote(&path)
                ));
            } else if attrs.mode.is_some() {
                // Symbolic: list every entry's type and mode, decide here.
                probe.raw(&format!(
                    "if [ -d {p} ]; then find {p} -printf 'RM %y %m\\n'; fi",
                    p = quote(&path)
                ));
            }
            if let Some(o) = &attrs.owner {
                probe.raw(&format!(
                    "if [ -d {p} ] && [ -n \"$(find {p} ! -user {o} -print -quit 2>/dev/null)\" ]; then echo DIRTY owner; fi",
                    p = quote(&path),
                    o = quote(o)
                ));
            }
            if let Some(g) = &attrs.group {
                probe.raw(&format!(
                    "if [ -d {p} ] && [ -n \"$(find {p} ! -group {g} -print -quit 2>/dev/null)\" ]; then echo DIRTY group; fi",
                    p = quote(&path),
                    g = quote(g)
                ));
            }
        }
        let q = probe.run_checked(ctx).await?;
        let st = q.stat("p");
        let src_st = q.stat("src");
        let mut recurse_dirty = q.lines().any(|(k, _)| k == "DIRTY");
        if let Some(ModeSpec::Symbolic(spec)) = &attrs.mode {
            for (_, v) in q.lines().filter(|(k, _)| *k == "RM") {
                let (kind, m) = v.split_once(' ').unwrap_or(("f", "0"));
                let cur = u32::from_str_radix(m, 8).unwrap_or(0);
                if crate::modules::args::apply_symbolic(spec, cur, kind == "d")? != cur {
                    recurse_dirty = true;
                    break;
                }
            }
        }

        let state = match state {
            Some(s) => s,
            None if recurse => "directory".into(),
            None if src.is_some() => "link".into(),
            None if st.exists => st.kind.map(|k| k.state_name()).unwrap_or("file").into(),
            None => "file".into(),
        };
        let before_state = if st.exists {
            st.kind.map(|k| k.state_name()).unwrap_or("file")
        } else {
            "absent"
        };

        let mut script = format!("p={}\nset -e\n", quote(&path));
        let mut changed = false;
        let mut res = ModuleResult::ok();

        match state.as_str() {
            "absent" => {
                if st.exists {
                    changed = true;
                    script.push_str("rm -rf -- \"$p\"\n");
                }
            }
            "directory" => {
                if st.exists && !st.is_dir() {
                    return Ok(Plan::done(
                        ModuleResult::failed(format!(
                            "{path} already exists as a {}",
                            st.kind.map(|k| k.state_name()).unwrap_or("file")
                        ))
                        .with("path", path.clone()),
                    ));
                }
                if !st.exists {
                    changed = true;
                    script.push_str("mkdir -p -- \"$p\"\n");
                }
                let target = dir_stat(&st);
                let mode = resolve(&attrs, &target, true)?;
                let (cmds, c) = attr_commands(
                    &target,
                    mode,
                    attrs.owner.as_deref(),
                    attrs.group.as_deref(),
                );
                changed |= c;
                script.push_str(&cmds);
                if recurse {
                    changed |= recurse_dirty;
                    if let Some(m) = &attrs.mode {
                        let spec = match m {
                            ModeSpec::Octal(o) => format!("{o:04o}"),
                            ModeSpec::Symbolic(s) => s.clone(),
                            ModeSpec::Preserve => {
                                return Err(ModuleError::Args(
                                    "mode=preserve is only valid for copy".into(),
                                ))
                            }
                        };
                        script.push_str(&format!(
                            "chmod -R -c -- {} \"$p\" | sed 's/^/CHG /'\n",
                            quote(&spec)
                        ));
                    }
                    if let Some(o) = &attrs.owner {
                        script.push_str(&format!(
                            "chown -R -c -- {} \"$p\" | sed 's/^/CHG /'\n",
                            quote(o)
                        ));
                    }
                    if let Some(g) = &attrs.group {
                        script.push_str(&format!(
                            "chgrp -R -c -- {} \"$p\" | sed 's/^/CHG /'\n",
                            quote(g)
                        ));
                    }
                }
            }
            "file" => {
                if !st.exists {
                    return Ok(Plan::done(
                        ModuleResult::failed(format!("file ({path}) is absent, cannot continue"))
                            .with("path", path.clone())
                            .with("state", "absent"),
                    ));
                }
                if st.is_dir() && !recurse {
                    return Ok(Plan::done(
                        ModuleResult::failed(format!("{path} is a directory, not a file"))
                            .with("path", path.clone()),
                    ));
                }
                let mode = resolve(&attrs, &st, st.is_dir())?;
                let (cmds, c) =
                    attr_commands(&st, mode, attrs.owner.as_deref(), attrs.group.as_deref());
                changed |= c;
                script.push_str(&cmds);
            }
            "touch" => {
                changed = true;
                let mut flags = String::new();
                if st.exists {
                    if mtime.as_deref() == Some("preserve") && atime.as_deref() == Some("preserve")
                    {
                        changed = false;
                    } else if mtime.as_deref() == Some("preserve") {
                        flags.push_str(" -a");
                    } else if atime.as_deref() == Some("preserve") {
                        flags.push_str(" -m");
                    }
                }
                if changed {
                    script.push_str(&format!("touch{flags} -- \"$p\"\n"));
                }
                let base = if st.exists {
                    st.clone()
                } else {
                    RemoteStat::default()
                };
                let mode = resolve(
                    &attrs,
                    &if st.exists {
                        st.clone()
                    } else {
                        new_file_stat()
                    },
                    false,
                )?;
                let (cmds, c) =
                    attr_commands(&base, mode, attrs.owner.as_deref(), attrs.group.as_deref());
                changed |= c;
                script.push_str(&cmds);
            }
            "link" | "hard" => {
                let Some(src) = &src else {
                    return Err(ModuleError::Args(format!(
                        "src is required for state={state} (module file)"
                    )));
                };
                let hard = state == "hard";
                if !src_st.exists && (hard || !force) {
                    return Ok(Plan::done(ModuleResult::failed(format!(
                        "src file does not exist, use \"force=yes\" if you really want to create the link: {src}"
                    ))
                    .with("path", path.clone())
                    .with("src", src.clone())));
                }
                let same = if hard {
                    st.exists && src_st.exists && st.inode == src_st.inode && st.dev == src_st.dev
                } else {
                    st.is_link() && st.link_target.as_deref() == Some(src.as_str())
                };
                if !same {
                    if hard && st.exists && !st.is_link() && !force {
                        let what = if st.nlink > 1 {
                            "different hard link"
                        } else {
                            "file"
                        };
                        return Ok(Plan::done(
                            ModuleResult::failed(format!(
                                "Cannot link, {what} exists at destination"
                            ))
                            .with("dest", path.clone())
                            .with("src", src.clone()),
                        ));
                    }
                    if st.exists && !st.is_link() && !hard {
                        if st.is_dir() {
                            if !force {
                                return Ok(Plan::done(ModuleResult::failed(format!(
                                    "refusing to convert from directory to symlink for {path}"
                                ))));
                            }
                            script.push_str("rmdir -- \"$p\"\n");
                        } else if !force {
                            return Ok(Plan::done(ModuleResult::failed(format!(
                                "refusing to convert from {} to symlink for {path}",
                                st.kind.map(|k| k.state_name()).unwrap_or("file")
                            ))));
                        }
                    }
                    changed = true;
                    if hard {
                        script.push_str(&format!("ln -f -- {} \"$p\"\n", quote(src)));
                    } else {
                        script.push_str(&format!("ln -sfn -- {} \"$p\"\n", quote(src)));
                    }
                }
                // Ownership applies to the link itself (`chown -h`); a
                // symlink has no mode of its own.
                let base = if same {
                    st.clone()
                } else {
                    RemoteStat::default()
                };
                let mode = if hard {
                    resolve(&attrs, &src_st, false)?
                } else {
                    None
                };
                let (cmds, c) =
                    attr_commands(&base, mode, attrs.owner.as_deref(), attrs.group.as_deref());
                if same {
                    changed |= c;
                }
                script.push_str(&cmds);
                res.data.insert("src".into(), Value::from(src.clone()));
            }
            _ => unreachable!("state is validated by choice()"),
        }

        res.changed = changed;
        if changed && ctx.diff {
            res.diff.push(path_state_diff(
                &path,
                &[("state", before_state.to_string())],
                &[("state", state.clone())],
            ));
        }
        let wanted_path = path.clone();
        let wanted_state = state.clone();
        // When only a recursive pass ran, whether the top path itself changed.
        let top_changed = if recurse {
            let target = dir_stat(&st);
            let mode = resolve(&attrs, &target, true)?;
            attr_commands(
                &target,
                mode,
                attrs.owner.as_deref(),
                attrs.group.as_deref(),
            )
            .1
        } else {
            false
        };
        // Values shared by every outcome; the file's own come from the query,
        // or from the stat taken after the change.
        let fill = move |res: &mut ModuleResult, after: &RemoteStat| {
            for (k, v) in kit::file_result_values("path", &path, after) {
                res.data.insert(k, v);
            }
            if state == "absent" {
                res.data.insert("state".into(), "absent".into());
            }
        };
        if !changed {
            let mut res = res;
            fill(&mut res, &st);
            return Ok(Plan::done(res));
        }
        let mut planned = res.clone();
        fill(&mut planned, &st);
        planned
            .data
            .insert("state".into(), Value::from(wanted_state.clone()));
        Ok(Plan::change(planned, async move {
            let mut res = res;
            script.push_str("set +e\n");
            script.push_str(kit::STAT_FN);
            script.push_str("ks final \"$p\" 0 ''\n");
            let out = ctx.run(script, None).await?;
            if out.rc != 0 {
                return Ok(ModuleResult::failed(format!(
                    "{wanted_path}: {}",
                    out.stderr_str().trim()
                ))
                .with("path", wanted_path.clone()));
            }
            let parsed = kit::StatReport::parse(&out.stdout);
            if recurse && !parsed.lines.iter().any(|(k, _)| k == "CHG") && st.exists {
                // Only the recursive pass could change anything, and it
                // reported no change.
                res.changed = top_changed;
            }
            fill(&mut res, &parsed.stat("final"));
            Ok(res)
        }))
    }
}

fn resolve(attrs: &FileAttrs, st: &RemoteStat, is_dir: bool) -> Result<Option<u32>, ModuleError> {
    match &attrs.mode {
        None => Ok(None),
        Some(ModeSpec::Preserve) => Err(ModuleError::Args(
            "mode=preserve is only valid for copy".into(),
        )),
        Some(m) => m.resolve(st.mode, is_dir),
    }
}

/// The stat a directory about to be created will have (for symbolic modes).
fn dir_stat(st: &RemoteStat) -> RemoteStat {
    if st.exists {
        st.clone()
    } else {
        RemoteStat {
            mode: 0o755,
            ..Default::default()
        }
    }
}

fn new_file_stat() -> RemoteStat {
    RemoteStat {
        mode: 0o644,
        ..Default::default()
    }
}
