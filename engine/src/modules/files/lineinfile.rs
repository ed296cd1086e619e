//! `lineinfile`: makes sure one line is (or is not) in a file. The edit is
//! computed on the controller, following Ansible's matching rules exactly
//! (last match wins unless `firstmatch`, `backrefs`, insertion anchors).

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::edit::{self, compile, lines_of, linesep, python_repl, WriteBack};
use crate::modules::kit::FileAttrs;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct LineInFile;

/// The arguments `lineinfile` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "lineinfile",
    sets: &[
        &[
            &["path", "dest", "destfile", "name"],
            &["state"],
            &["regexp", "regex"],
            &["search_string"],
            &["line", "value"],
            &["insertafter"],
            &["insertbefore"],
            &["create"],
            &["backrefs"],
            &["firstmatch"],
            &["backup"],
            &["validate"],
            &["others"],
            &["follow"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for LineInFile {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let path = a.req_string(&["path", "dest", "destfile", "name"])?;
        let state = a
            .choice(&["state"], &["present", "absent"], Some("present"))?
            .unwrap_or_default();
        let regexp = a.string(&["regexp", "regex"])?;
        let search_string = a.string(&["search_string"])?;
        let line = a.string(&["line", "value"])?;
        let insertafter = a.string(&["insertafter"])?;
        let insertbefore = a.string(&["insertbefore"])?;
        let create = a.bool(&["create"], false)?;
        let backrefs = a.bool(&["backrefs"], false)?;
        let firstmatch = a.bool(&["firstmatch"], false)?;
        let backup = a.bool(&["backup"], false)?;
        let validate = a.string(&["validate"])?;
        let attrs = FileAttrs::parse(&mut a)?;
        a.ignore(&["others", "follow"]);
        a.finish()?;

        if regexp.is_some() && search_string.is_some() {
            return Err(ModuleError::Args(
                "parameters are mutually exclusive: regexp|search_string (module lineinfile)"
                    .into(),
            ));
        }
        if insertafter.is_some() && insertbefore.is_some() {
            return Err(ModuleError::Args(
                "parameters are mutually exclusive: insertbefore|insertafter (module lineinfile)"
                    .into(),
            ));
        }
        let re = regexp
            .as_deref()
            .map(|r| compile("regexp", r))
            .transpose()?;
        let cur = edit::read(ctx, &path).await?;
        if cur.stat.exists && cur.stat.is_dir() {
            return Ok(Plan::done(
                ModuleResult::failed(format!("Path {path} is a directory !")).with("rc", 256),
            ));
        }
        let text = String::from_utf8_lossy(&cur.content).into_owned();
        let mut lines = lines_of(&text);
        let sep = linesep(&text);
        let stripped = |l: &str| l.trim_end_matches(['\r', '\n']).to_string();
        let wb = WriteBack {
            path: path.clone(),
            attrs: attrs.clone(),
            backup,
            validate: validate.clone(),
        };

        if state == "absent" {
            if !cur.stat.exists {
                return Ok(Plan::done(
                    ModuleResult::ok()
                        .with("found", 0)
                        .with_msg("file not present"),
                ));
            }
            if re.is_none() && search_string.is_none() && line.is_none() {
                return Err(ModuleError::Args(
                    "one of line, search_string, or regexp is required with state=absent".into(),
                ));
            }
            let before = lines.len();
            lines.retain(|l| {
                let s = stripped(l);
                let hit = if let Some(re) = &re {
                    re.is_match(&s)
                } else if let Some(ss) = &search_string {
                    s.contains(ss.as_str())
                } else {
                    Some(s.as_str()) == line.as_deref()
                };
                !hit
            });
            let found = before - lines.len();
            let msg = if found > 0 {
                format!("{found} line(s) removed")
            } else {
                String::new()
            };
            let after: String = lines.concat();
            let plan = edit::write_back(ctx, wb, &cur, after.into_bytes(), &msg).await?;
            return Ok(plan.map(move |r| {
                r.data.insert("found".into(), found.into());
            }));
        }

        let Some(line) = line else {
            return Err(ModuleError::Args(
                "line is required with state=present (module lineinfile)".into(),
            ));
        };
        if !cur.stat.exists && !create {
            return Ok(Plan::done(
                ModuleResult::failed(format!("Destination {path} does not exist !"))
                    .with("rc", 257),
            ));
        }
        if backrefs && re.is_none() {
            return Err(ModuleError::Args(
                "regexp is required with backrefs=true".into(),
            ));
        }
        let ins_re = match (&insertafter, &insertbefore) {
            (Some(p), _) | (_, Some(p)) if p != "EOF" && p != "BOF" => {
                Some(compile("insertafter/insertbefore", p)?)
            }
            _ => None,
        };

        // The same three passes as Ansible's lineinfile: regexp, then
        // search_string, then (only without a match) exact line and anchors.
        let mut idx_match: Option<usize> = None;
        let mut idx_ins: Option<usize> = None;
        let mut captured: Option<String> = None;
        if let Some(re) = &re {
            for (n, l) in lines.iter().enumerate() {
                if let Some(c) = re.captures(&stripped(l)) {
                    idx_match = Some(n);
                    if backrefs {
                        let mut dst = String::new();
                        c.expand(&python_repl(&line), &mut dst);
                        captured = Some(dst);
                    }
                    if firstmatch {
                        break;
                    }
                }
            }
        }
        if let Some(ss) = &search_string {
            for (n, l) in lines.iter().enumerate() {
                if l.contains(ss.as_str()) {
                    idx_match = Some(n);
                    if firstmatch {
                        break;
                    }
                }
            }
        }
        let matched = idx_match.is_some();
        if !matched {
            for (n, l) in lines.iter().enumerate() {
                if stripped(l) == line {
                    idx_match = Some(n);
                } else if let Some(ir) = &ins_re {
                    if ir.is_match(&stripped(l)) {
                        idx_ins = Some(if insertafter.is_some() { n + 1 } else { n });
                        if firstmatch {
                            break;
                        }
                    }
                }
            }
        }

        let mut msg = String::new();
        if let Some(i) = idx_match {
            let new_line = if backrefs && matched {
                captured.unwrap_or_else(|| line.clone())
            } else {
                line.clone()
            };
            let new_full = format!("{new_line}{sep}");
            if lines[i] != new_full {
                lines[i] = new_full;
                msg = "line replaced".into();
            }
        } else if backrefs {
            // No match with backrefs: leave the file alone.
        } else if insertbefore.as_deref() == Some("BOF") || insertafter.as_deref() == Some("BOF") {
            lines.insert(0, format!("{line}{sep}"));
            msg = "line added".into();
        } else if insertafter.as_deref() == Some("EOF") || idx_ins.is_none() {
            if let Some(last) = lines.last_mut() {
                if !last.ends_with('\n') && !last.ends_with('\r') {
                    last.push_str(sep);
                }
            }
            lines.push(format!("{line}{sep}"));
            msg = "line added".into();
        } else if let Some(i) = idx_ins {
            if insertafter.is_some() {
                if i == lines.len() {
                    if stripped(&lines[i - 1]) != line {
                        if !lines[i - 1].ends_with('\n') {
                            lines[i - 1].push_str(sep);
                        }
                        lines.push(format!("{line}{sep}"));
                        msg = "line added".into();
                    }
                } else if stripped(&lines[i]) != line {
                    lines.insert(i, format!("{line}{sep}"));
                    msg = "line added".into();
                }
            } else {
                lines.insert(i, format!("{line}{sep}"));
                msg = "line added".into();
            }
        }
        let after: String = lines.concat();
        if !cur.stat.exists {
            msg = "line added".into();
        }
        let plan = edit::write_back(ctx, wb, &cur, after.into_bytes(), &msg).await?;
        Ok(plan.map(|r| {
            if r.msg.is_none() {
                r.msg = Some(String::new());
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_backrefs_become_rust_expansions() {
        assert_eq!(
            super::python_repl(r"x=\1 \g<name> $HOME"),
            "x=${1} ${name} $$HOME"
        );
    }
}
