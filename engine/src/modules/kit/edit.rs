//! The read-modify-write path of text-editing modules (`lineinfile`,
//! `blockinfile`, `replace`): the query round trip reads the file (stat +
//! body); the edit itself runs on the controller; the apply round trip
//! writes the result atomically. Also the text helpers those edits share:
//! line splitting, Python-style regex replacement strings.

use regex::Regex;

use super::attrs::{attr_commands, resolve_mode, FileAttrs};
use super::diff::file_diff;
use super::plan::Plan;
use super::query::Query;
use super::stat::RemoteStat;
use super::write::{FileWrite, Source};
use crate::modules::{ModuleError, ModuleResult, TaskContext};
use crate::shell::quote;

/// The file as read in the query round trip.
pub struct Current {
    pub stat: RemoteStat,
    pub content: Vec<u8>,
}

/// Reads `path` (following links) in one round trip.
pub async fn read(ctx: &TaskContext<'_>, path: &str) -> Result<Current, ModuleError> {
    let mut probe = Query::new();
    probe.stat("p", path, true, None).content_expr(&quote(path));
    let q = probe.run_checked(ctx).await?;
    let stat = q.stat("p");
    Ok(Current {
        content: q.content().unwrap_or_default(),
        stat,
    })
}

/// Settings for writing the edited content back.
pub struct WriteBack {
    pub path: String,
    pub attrs: FileAttrs,
    pub backup: bool,
    pub validate: Option<String>,
}

/// Plans writing `after` if it differs from the current content, then
/// fixing attributes; `msg` is the module's message for a content change.
pub async fn write_back<'a>(
    ctx: &'a TaskContext<'a>,
    w: WriteBack,
    cur: &Current,
    after: Vec<u8>,
    msg: &str,
) -> Result<Plan<'a>, ModuleError> {
    let st = cur.stat.clone();
    let mode = resolve_mode(&w.attrs, None, &st)?;
    let content_changed = !st.exists || cur.content != after;
    let mut res = ModuleResult::ok();
    if content_changed {
        res.changed = true;
        res.msg = Some(msg.to_string());
        if ctx.diff {
            let mut d = file_diff(&w.path, if st.exists { &cur.content } else { b"" }, &after);
            if !st.exists {
                d.before_header = "/dev/null".into();
            }
            res.diff.push(d);
        }
        return Ok(Plan::change(res.clone(), async move {
            let write = FileWrite {
                dest: &w.path,
                source: Source::Bytes(&after),
                mode,
                owner: w.attrs.owner.as_deref(),
                group: w.attrs.group.as_deref(),
                backup: w.backup,
                validate: w.validate.as_deref(),
                dest_exists: st.exists,
                // A file `create: yes` makes gets its missing directories
                // too, as ansible-core's `lineinfile`/`blockinfile` do.
                make_parents: !st.exists,
            };
            match write.run(ctx).await? {
                Ok(o) => {
                    if let Some(b) = o.backup_file {
                        res.data.insert("backup".into(), b.clone().into());
                        res.data.insert("backup_file".into(), b.into());
                    }
                    Ok(res)
                }
                Err(m) => Ok(ModuleResult::failed(m)),
            }
        }));
    }
    let (cmds, changed) = attr_commands(
        &st,
        mode,
        w.attrs.owner.as_deref(),
        w.attrs.group.as_deref(),
    );
    if !changed {
        return Ok(Plan::done(res));
    }
    res.changed = true;
    res.msg = Some(if msg.is_empty() {
        "ownership, perms or SE linux context changed".into()
    } else {
        format!("{msg} and ownership, perms or SE linux context changed")
    });
    Ok(Plan::change(res.clone(), async move {
        let out = ctx
            .run(format!("p={}\nset -e\n{cmds}", quote(&w.path)), None)
            .await?;
        if out.rc != 0 {
            return Ok(ModuleResult::failed(out.stderr_str().trim().to_string()));
        }
        Ok(res)
    }))
}

/// Splits content into lines, each keeping its line ending.
pub fn lines_of(content: &str) -> Vec<String> {
    content.split_inclusive('\n').map(str::to_string).collect()
}

/// The line break style of a file (Ansible keeps `\r\n` files as they are).
pub fn linesep(content: &str) -> &'static str {
    if content.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// Python's check of a replacement template (`re.sub` refuses it before
/// substituting anything, even when nothing matches): a backslash before an
/// ASCII letter that is no escape is an error, in Python's words.
pub fn check_python_repl(s: &str) -> Result<(), String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' {
            match chars.get(i + 1) {
                Some(c) if c.is_ascii_alphabetic() && !"gntrvfab".contains(*c) => {
                    return Err(format!("bad escape \\{c} at position {i}"));
                }
                Some(_) => i += 1,
                None => return Err(format!("bad escape (end of pattern) at position {i}")),
            }
        }
        i += 1;
    }
    Ok(())
}

/// Python's `\1` / `\g<name>` replacement syntax in Rust regex's `${1}` form.
pub fn python_repl(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match it.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = it.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        it.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    it.next();
                    if it.peek() == Some(&'<') {
                        it.next();
                        let name: String = it.by_ref().take_while(|c| *c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    it.next();
                    out.push('\n');
                }
                Some('t') => {
                    it.next();
                    out.push('\t');
                }
                Some('\\') => {
                    it.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// Compiles a module's regular expression argument `name`.
pub fn compile(name: &str, pat: &str) -> Result<Regex, ModuleError> {
    Regex::new(pat).map_err(|e| {
        ModuleError::Args(format!(
            "invalid regular expression in {name} ({pat:?}): {e}"
        ))
    })
}
