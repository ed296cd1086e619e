//! `blockinfile`: keeps a marked block of lines in a file (inserted, updated
//! or removed), computed on the controller like `lineinfile`.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::edit::compile;
use crate::modules::kit::edit::{self, lines_of, linesep, WriteBack};
use crate::modules::kit::FileAttrs;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct BlockInFile;

/// The arguments `blockinfile` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "blockinfile",
    sets: &[
        &[
            &["path", "dest", "destfile", "name"],
            &["state"],
            &["block", "content"],
            &["marker"],
            &["marker_begin"],
            &["marker_end"],
            &["insertafter"],
            &["insertbefore"],
            &["create"],
            &["backup"],
            &["validate"],
            &["append_newline"],
            &["prepend_newline"],
            &["follow"],
            &["others"],
            &["encoding"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for BlockInFile {
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
        let block = a.string(&["block", "content"])?.unwrap_or_default();
        let marker = a
            .string(&["marker"])?
            .unwrap_or_else(|| "# {mark} ANSIBLE MANAGED BLOCK".into());
        let marker_begin = a
            .string(&["marker_begin"])?
            .unwrap_or_else(|| "BEGIN".into());
        let marker_end = a.string(&["marker_end"])?.unwrap_or_else(|| "END".into());
        let insertafter = a.string(&["insertafter"])?;
        let insertbefore = a.string(&["insertbefore"])?;
        let create = a.bool(&["create"], false)?;
        let backup = a.bool(&["backup"], false)?;
        let validate = a.string(&["validate"])?;
        let append_newline = a.bool(&["append_newline"], false)?;
        let prepend_newline = a.bool(&["prepend_newline"], false)?;
        let attrs = FileAttrs::parse(&mut a)?;
        a.ignore(&["follow", "others", "encoding"]);
        a.finish()?;
        if insertafter.is_some() && insertbefore.is_some() {
            return Err(ModuleError::Args(
                "parameters are mutually exclusive: insertbefore|insertafter (module blockinfile)"
                    .into(),
            ));
        }

        let cur = edit::read(ctx, &path).await?;
        if cur.stat.exists && cur.stat.is_dir() {
            return Ok(Plan::done(
                ModuleResult::failed(format!("Path {path} is a directory !")).with("rc", 256),
            ));
        }
        if !cur.stat.exists && !create {
            if state == "absent" {
                return Ok(Plan::done(ModuleResult::ok().with_msg("")));
            }
            return Ok(Plan::done(
                ModuleResult::failed(format!("Path {path} does not exist !")).with("rc", 257),
            ));
        }
        let text = String::from_utf8_lossy(&cur.content).into_owned();
        let sep = linesep(&text);
        let mut lines = lines_of(&text);
        let m0 = marker.replace("{mark}", &marker_begin);
        let m1 = marker.replace("{mark}", &marker_end);
        let block_lines: Vec<String> = if state == "present" && !block.is_empty() {
            let mut v = vec![m0.clone()];
            v.extend(block.lines().map(str::to_string));
            v.push(m1.clone());
            v
        } else {
            Vec::new()
        };
        let strip = |l: &str| l.trim_end_matches(['\r', '\n']).to_string();
        let mut n0 = None;
        let mut n1 = None;
        for (i, l) in lines.iter().enumerate() {
            let s = strip(l);
            if s == m0 {
                n0 = Some(i);
            }
            if s == m1 {
                n1 = Some(i);
            }
        }
        let at = match (n0, n1) {
            (Some(b), Some(e)) => {
                let (lo, hi) = if b < e { (b, e) } else { (e, b) };
                lines.drain(lo..=hi);
                lo
            }
            _ => {
                let anchor = match (&insertafter, &insertbefore) {
                    (Some(p), _) if p != "EOF" => Some((compile("insertafter", p)?, true)),
                    (_, Some(p)) if p != "BOF" => Some((compile("insertbefore", p)?, false)),
                    _ => None,
                };
                let multiline = insertafter
                    .as_deref()
                    .filter(|p| *p != "EOF")
                    .or(insertbefore.as_deref())
                    .is_some_and(has_multiline_flag);
                match anchor {
                    // With `(?m)` the pattern searches the whole text (it
                    // may span lines); the block goes after the line the
                    // match ends on, or before the one it starts on.
                    Some((re, after)) if multiline => {
                        let text = lines.concat();
                        match re.find(&text) {
                            Some(m) if after => text[..m.end()].matches('\n').count() + 1,
                            Some(m) => text[..m.start()].matches('\n').count(),
                            None => lines.len(),
                        }
                    }
                    Some((re, after)) => match lines.iter().rposition(|l| re.is_match(&strip(l))) {
                        Some(i) if after => i + 1,
                        Some(i) => i,
                        None => lines.len(),
                    },
                    None if insertbefore.is_some() => 0,
                    None => lines.len(),
                }
            }
        };
        if !block_lines.is_empty() {
            if at > 0 && !lines[at - 1].ends_with('\n') {
                lines[at - 1].push_str(sep);
            }
            let mut ins: Vec<String> = block_lines.iter().map(|l| format!("{l}{sep}")).collect();
            // A blank line around the block, unless one is already there
            // (so a second run changes nothing).
            if prepend_newline && at > 0 && lines[at - 1] != sep {
                ins.insert(0, sep.to_string());
            }
            if append_newline && at < lines.len() && lines[at] != sep {
                ins.push(sep.to_string());
            }
            lines.splice(at..at, ins);
        }
        let after: String = lines.concat();
        let msg = if after.as_bytes() == cur.content.as_slice() && cur.stat.exists {
            ""
        } else if !cur.stat.exists {
            "File created"
        } else if block_lines.is_empty() {
            "Block removed"
        } else {
            "Block inserted"
        };
        if state == "absent" && !cur.stat.exists {
            return Ok(Plan::done(ModuleResult::ok().with_msg("")));
        }
        let wb = WriteBack {
            path: path.clone(),
            attrs: attrs.clone(),
            backup,
            validate: validate.clone(),
        };
        let plan = edit::write_back(ctx, wb, &cur, after.into_bytes(), msg).await?;
        Ok(plan.map(|r| {
            if r.msg.is_none() {
                r.msg = Some(String::new());
            }
        }))
    }
}

/// Whether a Python pattern turns `re.MULTILINE` on with a leading inline
/// flag group (`(?m)`, `(?im)`...), which is what makes ansible-core's
/// `blockinfile` search the whole file instead of each line.
fn has_multiline_flag(pattern: &str) -> bool {
    pattern
        .strip_prefix("(?")
        .and_then(|rest| rest.split([')', ':']).next())
        .is_some_and(|flags| flags.chars().all(|c| c.is_ascii_alphabetic()) && flags.contains('m'))
}
