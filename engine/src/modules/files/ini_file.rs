//! `ini_file` (community.general): sets, adds or removes options and
//! sections of an INI file. The query reads the file; the edit — the same
//! line-by-line rules as community.general's module, so the file comes out
//! byte for byte as it would under Ansible — runs on the controller; the
//! apply step writes it back through the kit's text-edit path.

use minijinja::Value;
use regex::Regex;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::diff::diff_value;
use crate::modules::kit::edit::{self, lines_of, WriteBack};
use crate::modules::kit::{file_result_values, FileAttrs, Query, RemoteStat};
use crate::modules::{Args, FileDiff, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct IniFile;

/// The arguments `ini_file` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "ini_file",
    sets: &[
        &[
            &["path", "dest"],
            &["section"],
            &["section_has_values"],
            &["option"],
            &["value"],
            &["values"],
            &["backup"],
            &["state"],
            &["exclusive"],
            &["no_extra_spaces"],
            &["ignore_spaces"],
            &["allow_no_value"],
            &["modify_inactive_option"],
            &["create"],
            &["follow"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

/// `section_has_values`: each option with the values it may have (any
/// value when the list is empty).
pub type Conditions = Vec<(String, Vec<String>)>;

/// What to do to the file, read from the arguments.
#[derive(Debug, Clone, Default)]
pub struct IniEdit {
    pub section: Option<String>,
    pub section_has_values: Option<Conditions>,
    pub option: Option<String>,
    pub values: Vec<String>,
    pub present: bool,
    pub exclusive: bool,
    pub no_extra_spaces: bool,
    pub ignore_spaces: bool,
    pub allow_no_value: bool,
    pub modify_inactive_option: bool,
}

/// A stand-in header for the lines before the first section, so they are
/// a section like any other (community.general's own trick and name).
const FAKE_SECTION: &str = "ad01e11446efb704fcdbdb21f2c43757423d91c5";

/// `option` on a line, perhaps commented out (`# option = x`), with its
/// value as group 8; the line is matched without its newline, as Python's
/// `$` matches before it.
fn option_re(option: &str, inactive_too: bool) -> Regex {
    let comment = if inactive_too { "([#;]?)" } else { "()" };
    let lead = if inactive_too { "( |\\t)*" } else { "()" };
    Regex::new(&format!(
        "^{lead}{comment}( |\\t)*({})( |\\t)*(=|$)( |\\t)*(.*)",
        regex::escape(option)
    ))
    .expect("an escaped option makes a valid pattern")
}

fn strip_nl(line: &str) -> &str {
    line.strip_suffix('\n').unwrap_or(line)
}

/// Group 8 (the value) of `re` on `line`, when it matches.
fn value_of<'l>(re: &Regex, line: &'l str) -> Option<&'l str> {
    re.captures(strip_nl(line))
        .map(|c| c.get(8).map_or("", |m| m.as_str()))
}

impl IniEdit {
    fn assignment(&self, option: &str, value: &str) -> String {
        if self.no_extra_spaces {
            format!("{option}={value}\n")
        } else {
            format!("{option} = {value}\n")
        }
    }

    /// Applies the edit to `text`: the new text, whether it changed, and
    /// the module's message.
    pub fn apply(&self, text: &str) -> (String, bool, &'static str) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut values: Vec<String> = Vec::new();
        for v in &self.values {
            if !values.contains(v) {
                values.push(v.clone());
            }
        }
        let mut ini = lines_of(text);
        let mut changed = false;
        if ini.is_empty() {
            ini.push("\n".into());
        }
        if let Some(last) = ini.last_mut() {
            if !last.ends_with('\n') {
                last.push('\n');
                changed = true;
            }
        }
        ini.insert(0, format!("[{FAKE_SECTION}]"));
        ini.push("[".into());
        let section = self
            .section
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| FAKE_SECTION.to_string());
        let header = Regex::new(&format!(r"^\[\s*{}\s*\]", regex::escape(section.trim())))
            .expect("an escaped section makes a valid pattern");
        let plain = Regex::new(r"^[ \t]*([#;].*)?$").expect("valid pattern");
        let (mut within, mut start, mut end) = (false, 0, 0);
        for (i, line) in ini.iter().enumerate() {
            if within && line.starts_with('[') {
                if self.section_has(&ini[start..i]) {
                    end = i;
                    break;
                }
                within = false;
                start = 0;
                end = 0;
            }
            if header.is_match(line) {
                within = true;
                start = i;
            }
        }
        let before = ini[..start].to_vec();
        let mut lines = ini[start..end].to_vec();
        let after = ini[end..].to_vec();
        let mut touched = vec![false; lines.len()];
        let mut msg = "OK";
        let mut no_value_present = false;
        let opt_re = self
            .option
            .as_deref()
            .map(|o| option_re(o, self.modify_inactive_option));
        let any_re = self.option.as_deref().map(|o| option_re(o, true));
        let active_re = self.option.as_deref().map(|o| option_re(o, false));

        let update = |lines: &mut Vec<String>,
                      touched: &mut Vec<bool>,
                      i: usize,
                      new: String,
                      changed: &mut bool,
                      msg: &mut &'static str| {
            let mut option_changed = None;
            if self.ignore_spaces {
                let re = any_re.as_ref().expect("an option is set");
                if let Some(c) = re.captures(strip_nl(&lines[i])) {
                    if c.get(2).is_none_or(|m| m.as_str().is_empty()) {
                        option_changed = Some(value_of(re, &lines[i]) != value_of(re, &new));
                    }
                }
            }
            let option_changed = option_changed.unwrap_or(lines[i] != new);
            if option_changed {
                lines[i] = new;
                *changed = true;
                *msg = "option changed";
            }
            touched[i] = true;
        };

        if let (true, Some(option), Some(re)) = (self.present, &self.option, &opt_re) {
            for i in 0..lines.len() {
                let Some(found) = value_of(re, &lines[i]).map(str::to_string) else {
                    continue;
                };
                if !values.is_empty() && values.contains(&found) {
                    let new = if found.is_empty() && self.allow_no_value {
                        no_value_present = true;
                        format!("{option}\n")
                    } else {
                        self.assignment(option, &found)
                    };
                    update(&mut lines, &mut touched, i, new, &mut changed, &mut msg);
                    if let Some(p) = values.iter().position(|v| *v == found) {
                        values.remove(p);
                    }
                } else if values.is_empty() && self.allow_no_value {
                    update(
                        &mut lines,
                        &mut touched,
                        i,
                        format!("{option}\n"),
                        &mut changed,
                        &mut msg,
                    );
                    no_value_present = true;
                    break;
                }
            }
        }

        if let (true, true, false, Some(option), Some(re)) = (
            self.present,
            self.exclusive,
            self.allow_no_value,
            &self.option,
            &opt_re,
        ) {
            if !values.is_empty() {
                for i in 0..lines.len() {
                    if !touched[i] && value_of(re, &lines[i]).is_some() {
                        let new = self.assignment(option, &values.remove(0));
                        update(&mut lines, &mut touched, i, new, &mut changed, &mut msg);
                        if values.is_empty() {
                            break;
                        }
                    }
                }
            }
            for i in (1..lines.len()).rev() {
                if !touched[i] && value_of(re, &lines[i]).is_some() {
                    lines.remove(i);
                    touched.remove(i);
                    changed = true;
                    msg = "option changed";
                }
            }
        }

        if self.present {
            for i in (1..=lines.len()).rev() {
                if plain.is_match(strip_nl(&lines[i - 1])) {
                    continue;
                }
                if let Some(option) = &self.option {
                    if !values.is_empty() {
                        for v in values.iter().rev() {
                            lines.insert(i, self.assignment(option, v));
                            msg = "option added";
                            changed = true;
                        }
                    } else if self.allow_no_value && !no_value_present {
                        lines.insert(i, format!("{option}\n"));
                        msg = "option added";
                        changed = true;
                    }
                }
                break;
            }
        } else if let Some(re) = &active_re {
            let keep: Vec<String> = if self.exclusive {
                lines
                    .iter()
                    .filter(|l| value_of(re, l).is_none())
                    .cloned()
                    .collect()
            } else if !values.is_empty() {
                lines
                    .iter()
                    .filter(|l| !value_of(re, l).is_some_and(|v| values.iter().any(|w| w == v)))
                    .cloned()
                    .collect()
            } else {
                lines.clone()
            };
            if keep != lines {
                changed = true;
                msg = "option changed";
                lines = keep;
            }
        } else if !lines.is_empty() {
            lines.clear();
            msg = "section removed";
            changed = true;
        }

        let mut ini: Vec<String> = before.into_iter().chain(lines).chain(after).collect();
        ini.remove(0);
        ini.pop();

        if !within && self.present {
            ini.push(format!("[{section}]\n"));
            msg = "section and option added";
            for (opt, vals) in self.section_has_values.iter().flatten() {
                if Some(opt) != self.option.as_ref() {
                    if !vals.is_empty() {
                        for v in vals {
                            ini.push(self.assignment(opt, v));
                        }
                    } else if self.allow_no_value {
                        ini.push(format!("{opt}\n"));
                    }
                } else if !self.exclusive {
                    for v in vals {
                        if !values.contains(v) {
                            values.push(v.clone());
                        }
                    }
                }
            }
            match &self.option {
                Some(option) if !values.is_empty() => {
                    for v in &values {
                        ini.push(self.assignment(option, v));
                    }
                }
                Some(option) if self.allow_no_value => ini.push(format!("{option}\n")),
                _ => msg = "only section added",
            }
            changed = true;
        }
        (ini.concat(), changed, msg)
    }

    /// Whether a section's lines hold every `section_has_values` condition.
    fn section_has(&self, lines: &[String]) -> bool {
        let Some(conds) = &self.section_has_values else {
            return true;
        };
        conds.iter().all(|(opt, vals)| {
            let re = option_re(opt, true);
            lines.iter().any(|l| {
                value_of(&re, l).is_some_and(|v| vals.is_empty() || vals.iter().any(|w| w == v))
            })
        })
    }
}

/// `section_has_values`: a list of `{option, value | values}`.
fn conditions(v: Option<Value>) -> Result<Option<Conditions>, ModuleError> {
    let Some(v) = v.filter(|v| !v.is_none() && !v.is_undefined()) else {
        return Ok(None);
    };
    let bad = || {
        ModuleError::Args("section_has_values must be a list of {option, value | values}".into())
    };
    let mut out = Vec::new();
    for item in v.try_iter().map_err(|_| bad())? {
        let field = |k: &str| {
            item.get_attr(k)
                .ok()
                .filter(|v| !v.is_none() && !v.is_undefined())
        };
        let option = field("option")
            .and_then(|o| o.as_str().map(str::to_string))
            .ok_or_else(bad)?;
        let values =
            match (field("value"), field("values")) {
                (Some(_), Some(_)) => return Err(ModuleError::Args(
                    "parameters are mutually exclusive: value|values found in section_has_values"
                        .into(),
                )),
                (Some(v), None) => vec![v.to_string()],
                (None, Some(vs)) => vs
                    .try_iter()
                    .map_err(|_| bad())?
                    .map(|v| v.to_string())
                    .collect(),
                (None, None) => Vec::new(),
            };
        out.push((option, values));
    }
    Ok(Some(out))
}

#[async_trait::async_trait]
impl Module for IniFile {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let path = a.req_string(&["path", "dest"])?;
        let section = a.string(&["section"])?;
        let section_has_values = conditions(a.value(&["section_has_values"]))?;
        let option = a.string(&["option"])?;
        let value = a.string(&["value"])?;
        let values = a.list(&["values"])?;
        let backup = a.bool(&["backup"], false)?;
        let present = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .as_deref()
            != Some("absent");
        let exclusive = a.bool(&["exclusive"], true)?;
        let no_extra_spaces = a.bool(&["no_extra_spaces"], false)?;
        let ignore_spaces = a.bool(&["ignore_spaces"], false)?;
        let allow_no_value = a.bool(&["allow_no_value"], false)?;
        let modify_inactive_option = a.bool(&["modify_inactive_option"], true)?;
        let create = a.bool(&["create"], true)?;
        let attrs = FileAttrs::parse(&mut a)?;
        a.ignore(&["follow"]);
        a.finish()?;
        if value.is_some() && values.is_some() {
            return Ok(Plan::done(ModuleResult::failed(
                "parameters are mutually exclusive: value|values",
            )));
        }
        if present
            && !allow_no_value
            && value.is_none()
            && values.as_ref().is_none_or(|v| v.is_empty())
        {
            return Ok(Plan::done(ModuleResult::failed(
                "Parameter 'value(s)' must be defined if state=present and allow_no_value=False.",
            )));
        }
        let edit = IniEdit {
            section,
            section_has_values,
            option,
            values: value.map(|v| vec![v]).or(values).unwrap_or_default(),
            present,
            exclusive,
            no_extra_spaces,
            ignore_spaces,
            allow_no_value,
            modify_inactive_option,
        };

        let cur = edit::read(ctx, &path).await?;
        if !cur.stat.exists && !create {
            return Ok(Plan::done(
                ModuleResult::failed(format!("Destination {path} does not exist!")).with("rc", 257),
            ));
        }
        let before = String::from_utf8_lossy(&cur.content).into_owned();
        let (after, changed, msg) = edit.apply(if cur.stat.exists { &before } else { "" });
        let (shown_before, shown_after) = if ctx.diff {
            (
                if cur.stat.exists {
                    before.clone()
                } else {
                    String::new()
                },
                after.clone(),
            )
        } else {
            (String::new(), String::new())
        };
        let diff = FileDiff {
            before_header: format!("{path} (content)"),
            after_header: format!("{path} (content)"),
            before: shown_before,
            after: shown_after,
        };
        let write_path = path.clone();
        // ansible-core reports the diff object whether or not --diff asked
        // for its texts.
        let with_values = move |r: &mut ModuleResult| {
            r.msg = Some(msg.to_string());
            r.data.insert("path".into(), Value::from(path.clone()));
            r.data.insert("diff".into(), diff_value(&diff));
            r.diff = if ctx.diff && changed {
                vec![diff.clone()]
            } else {
                Vec::new()
            };
        };
        // Nothing to write: only the attributes may need fixing (a missing
        // file the edit leaves empty is not created, as in Ansible).
        let content = if changed {
            after.into_bytes()
        } else {
            cur.content.clone()
        };
        if !changed && !cur.stat.exists {
            let mut r = ModuleResult::ok();
            with_values(&mut r);
            add_path_info(&mut r, &cur.stat);
            return Ok(Plan::done(r));
        }
        let wb = WriteBack {
            path: write_path.clone(),
            attrs,
            backup,
            validate: None,
        };
        let plan = edit::write_back(ctx, wb, &cur, content, msg)
            .await?
            .map(with_values);
        // The file's attributes as it is at the end: as read when nothing
        // changes (and in check mode), stat again after a write.
        Ok(match plan {
            Plan::Done(mut r) => {
                add_path_info(&mut r, &cur.stat);
                Plan::Done(r)
            }
            Plan::Change { mut planned, apply } => {
                add_path_info(&mut planned, &cur.stat);
                Plan::change(planned, async move {
                    let mut r = apply.await?;
                    if !r.failed {
                        let mut q = Query::new();
                        q.stat("p", &write_path, true, None);
                        let st = q.run_checked(ctx).await?.stat("p");
                        add_path_info(&mut r, &st);
                    }
                    Ok(r)
                })
            }
            fused => fused,
        })
    }
}

/// The path's attributes, as ansible-core adds them to a file module's result.
fn add_path_info(r: &mut ModuleResult, st: &RemoteStat) {
    if !st.exists {
        return;
    }
    let path = r.data.get("path").cloned().unwrap_or_default().to_string();
    for (k, v) in file_result_values("path", &path, st) {
        r.data.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::IniEdit;

    fn set(section: Option<&str>, option: &str, value: &str) -> IniEdit {
        IniEdit {
            section: section.map(str::to_string),
            option: Some(option.into()),
            values: vec![value.into()],
            present: true,
            exclusive: true,
            modify_inactive_option: true,
            ..Default::default()
        }
    }

    #[test]
    fn options_are_added_changed_and_kept() {
        let e = set(Some("drinks"), "fav", "lemonade");
        assert_eq!(
            e.apply(""),
            (
                "\n[drinks]\nfav = lemonade\n".into(),
                true,
                "section and option added"
            )
        );
        let text = "[drinks]\nfav = cola\n\n[food]\nx=1\n";
        assert_eq!(
            e.apply(text),
            (
                "[drinks]\nfav = lemonade\n\n[food]\nx=1\n".into(),
                true,
                "option changed"
            )
        );
        let done = "[drinks]\nfav = lemonade\n";
        assert_eq!(e.apply(done), (done.into(), false, "OK"));
        // A commented example is taken over, as community.general does.
        assert_eq!(
            e.apply("[drinks]\n# fav = water\n").0,
            "[drinks]\nfav = lemonade\n"
        );
        // No section: the option goes before the first one.
        let g = set(None, "top", "1");
        assert_eq!(g.apply("[a]\nb = 2\n").0, "top = 1\n[a]\nb = 2\n");
    }

    #[test]
    fn absent_removes_options_and_sections() {
        let mut e = set(Some("a"), "b", "");
        e.present = false;
        e.values.clear();
        assert_eq!(
            e.apply("[a]\nb = 1\nc = 2\n"),
            ("[a]\nc = 2\n".into(), true, "option changed")
        );
        e.option = None;
        assert_eq!(
            e.apply("[a]\nc = 2\n[d]\n"),
            ("[d]\n".into(), true, "section removed")
        );
    }
}
