//! The INI inventory format, read as Ansible's `ini` plugin reads it.
//!
//! Hosts before any section are `ungrouped`. `[g]` lists hosts (with inline
//! `k=v` vars, split like a POSIX shell with `#` comments), `[g:vars]` holds one
//! `k = v` per line, `[g:children]` lists child groups, which may be declared
//! later in the file. Both kinds of values go through Python's `literal_eval`
//! (`2222` is an int, `True` a bool) and stay strings when they are not literals.

use std::path::Path;
use std::sync::Arc;

use minijinja::Value;

use super::{address, literal, Inventory};
use crate::diag::{Diagnostic, Pos, Source, Span};

#[derive(Clone, Copy, PartialEq)]
enum State {
    Hosts,
    Vars,
    Children,
}

/// A group named in `[x:vars]` or `[p:children]` before it was declared.
struct Pending {
    line: u32,
    col: u32,
    state: State,
    parents: Vec<String>,
}

/// Parses one INI file into `inv`.
pub(super) fn load(inv: &mut Inventory, path: &Path, text: String) -> Result<(), Diagnostic> {
    load_source(inv, path, Source::new(path, text))
}

/// [`load`] for the text of a vaulted file: its errors show no source line.
pub(super) fn load_decrypted(
    inv: &mut Inventory,
    path: &Path,
    text: String,
) -> Result<(), Diagnostic> {
    load_source(inv, path, Source::decrypted(path, text))
}

fn load_source(
    inv: &mut Inventory,
    path: &Path,
    source: std::sync::Arc<Source>,
) -> Result<(), Diagnostic> {
    let mut parser = IniParser {
        inv,
        source: source.clone(),
        path,
    };
    parser.parse()
}

struct IniParser<'a> {
    inv: &'a mut Inventory,
    source: Arc<Source>,
    path: &'a Path,
}

impl IniParser<'_> {
    fn err(&self, line: u32, col: u32, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::new(msg).at(Span::new(self.source.clone(), Pos { line, col }))
    }

    fn parse(&mut self) -> Result<(), Diagnostic> {
        let mut pending: indexmap::IndexMap<String, Pending> = indexmap::IndexMap::new();
        let mut group = "ungrouped".to_string();
        let mut state = State::Hosts;
        let source = self.source.clone();
        for (idx, raw) in source.text.lines().enumerate() {
            let lineno = idx as u32 + 1;
            let indent = raw.chars().take_while(|c| c.is_whitespace()).count() as u32;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let col0 = indent + 1; // column of the first non-blank character

            if line.starts_with('[') {
                if let Some((name, kind)) = parse_section(line) {
                    state = match kind {
                        None | Some("hosts") => State::Hosts,
                        Some("vars") => State::Vars,
                        Some("children") => State::Children,
                        Some(other) => {
                            let col = col0 + 1 + name.chars().count() as u32 + 1;
                            return Err(self
                                .err(
                                    lineno,
                                    col,
                                    format!("section [{name}:{other}] has unknown type '{other}'"),
                                )
                                .hint("a section is [group], [group:vars] or [group:children]"));
                        }
                    };
                    group = name.to_string();
                    if !self.inv.groups.contains_key(&group) {
                        if state == State::Vars && !pending.contains_key(&group) {
                            pending.insert(
                                group.clone(),
                                Pending {
                                    line: lineno,
                                    col: col0 + 1,
                                    state,
                                    parents: Vec::new(),
                                },
                            );
                        }
                        self.inv.ensure_group(&group);
                    }
                    if state != State::Vars {
                        if let Some(p) = pending.get(&group) {
                            if p.state == State::Children {
                                self.resolve_children(&group, &mut pending, lineno, col0)?;
                            } else {
                                pending.shift_remove(&group);
                            }
                        }
                    }
                    continue;
                }
                if line.ends_with(']') {
                    return Err(self
                        .err(lineno, col0, format!("invalid section entry '{line}'"))
                        .hint("section names cannot contain spaces or other invalid characters"));
                }
            }

            match state {
                State::Hosts => self.host_line(line, lineno, col0, &group)?,
                State::Vars => {
                    let Some((k, v)) = line.split_once('=') else {
                        return Err(self
                            .err(lineno, col0, format!("expected key=value, got '{line}'"))
                            .hint(format!(
                                "lines in a [{group}:vars] section set one variable each"
                            )));
                    };
                    let (k, v) = (k.trim(), v.trim());
                    self.inv.set_group_var(&group, k, parse_value(v));
                }
                State::Children => {
                    let child = parse_group_name(line).ok_or_else(|| {
                        self.err(lineno, col0, format!("expected a group name, got '{line}'"))
                    })?;
                    if self.inv.groups.contains_key(child) {
                        self.inv
                            .add_child(&group, child)
                            .map_err(|m| self.err(lineno, col0, m))?;
                    } else {
                        pending
                            .entry(child.to_string())
                            .or_insert(Pending {
                                line: lineno,
                                col: col0,
                                state,
                                parents: Vec::new(),
                            })
                            .parents
                            .push(group.clone());
                    }
                }
            }
        }
        if let Some((name, p)) = pending.iter().next() {
            let msg = match p.state {
                State::Vars => {
                    format!("section [{name}:vars] is not valid for undefined group '{name}'")
                }
                _ => format!(
                    "section [{}:children] includes undefined group '{name}'",
                    p.parents.last().map(String::as_str).unwrap_or("?")
                ),
            };
            let hint = format!("declare it with a [{name}] or [{name}:children] section");
            return Err(self.err(p.line, p.col, msg).hint(hint));
        }
        Ok(())
    }

    fn resolve_children(
        &mut self,
        group: &str,
        pending: &mut indexmap::IndexMap<String, Pending>,
        line: u32,
        col: u32,
    ) -> Result<(), Diagnostic> {
        let Some(p) = pending.shift_remove(group) else {
            return Ok(());
        };
        for parent in p.parents {
            self.inv
                .add_child(&parent, group)
                .map_err(|m| self.err(line, col, m))?;
            if pending
                .get(&parent)
                .is_some_and(|pp| pp.state == State::Children)
            {
                self.resolve_children(&parent, pending, line, col)?;
            }
        }
        Ok(())
    }

    fn host_line(
        &mut self,
        line: &str,
        lineno: u32,
        col0: u32,
        group: &str,
    ) -> Result<(), Diagnostic> {
        let tokens = shell_split(line).map_err(|(msg, at)| {
            self.err(
                lineno,
                col0 + at as u32,
                format!("cannot parse host definition: {msg}"),
            )
        })?;
        let Some(first) = tokens.first() else {
            return Ok(());
        };
        let host_col = col0 + first.col as u32;
        let (pattern, port) = address::parse_address(&first.text, true).map_err(|m| {
            self.err(
                lineno,
                host_col,
                format!("invalid host '{}': {m}", first.text),
            )
        })?;
        if pattern == "---" {
            return Err(self
                .err(lineno, host_col, "invalid host '---'")
                .hint("'---' starts a YAML document; give the file a .yml extension"));
        }
        let hosts = address::expand_host_pattern(&pattern)
            .map_err(|m| self.err(lineno, host_col + pattern.find('[').unwrap_or(0) as u32, m))?;
        let mut vars = Vec::new();
        for t in &tokens[1..] {
            let Some((k, v)) = t.text.split_once('=') else {
                return Err(self
                    .err(
                        lineno,
                        col0 + t.col as u32,
                        format!("expected key=value host variable, got '{}'", t.text),
                    )
                    .hint("quote values that contain spaces: key=\"a b\""));
            };
            vars.push((k.to_string(), parse_value(v)));
        }
        for h in hosts {
            self.inv.add_host(&h, group, Some(self.path));
            if let Some(port) = port {
                self.inv.set_host_var(&h, "ansible_port", Value::from(port));
            }
            for (k, v) in &vars {
                self.inv.set_host_var(&h, k, v.clone());
            }
        }
        Ok(())
    }
}

/// `[name]` or `[name:kind]`, optionally followed by a `#` comment.
fn parse_section(line: &str) -> Option<(&str, Option<&str>)> {
    let close = line.find(']')?;
    let after = line[close + 1..].trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return None;
    }
    let inner = &line[1..close];
    let (name, kind) = match inner.split_once(':') {
        Some((n, k)) => (n, Some(k)),
        None => (inner, None),
    };
    let name_ok = !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == ':' || c == ']');
    let kind_ok =
        kind.is_none_or(|k| !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_'));
    (name_ok && kind_ok).then_some((name, kind))
}

fn parse_group_name(line: &str) -> Option<&str> {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '#')
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let ok = !name.is_empty()
        && !name.contains([':', ']'])
        && (rest.is_empty() || rest.starts_with('#'));
    ok.then_some(name)
}

/// An INI value: a Python literal if it is one, else the raw text.
fn parse_value(v: &str) -> Value {
    literal::literal_eval(v).unwrap_or_else(|| Value::from(v))
}

struct Token {
    text: String,
    /// 0-based char offset of the token's start within the trimmed line.
    col: usize,
}

/// POSIX shell-like splitting as Python's `shlex.split(line, comments=True)`:
/// quotes group, backslash escapes, `#` ends the line (even mid-word).
/// Errors carry the char offset of the problem.
fn shell_split(line: &str) -> Result<Vec<Token>, (String, usize)> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut cur: Option<Token> = None;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => {
                out.extend(cur.take());
                i += 1;
            }
            '#' => break,
            '\'' | '"' => {
                let start = i;
                let tok = cur.get_or_insert(Token {
                    text: String::new(),
                    col: i,
                });
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(("no closing quotation".into(), start));
                    };
                    i += 1;
                    if d == c {
                        break;
                    }
                    if c == '"' && d == '\\' && matches!(chars.get(i), Some('"' | '\\')) {
                        tok.text.push(chars[i]);
                        i += 1;
                    } else {
                        tok.text.push(d);
                    }
                }
            }
            '\\' => {
                let tok = cur.get_or_insert(Token {
                    text: String::new(),
                    col: i,
                });
                match chars.get(i + 1) {
                    Some(&n) => tok.text.push(n),
                    None => return Err(("no escaped character".into(), i)),
                }
                i += 2;
            }
            c => {
                cur.get_or_insert(Token {
                    text: String::new(),
                    col: i,
                })
                .text
                .push(c);
                i += 1;
            }
        }
    }
    out.extend(cur);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        shell_split(s)
            .unwrap()
            .into_iter()
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn shlex_compatible() {
        assert_eq!(split("a#b c"), ["a"]);
        assert_eq!(split("x=\"a b\"#c d"), ["x=a b"]);
        assert_eq!(split("x=a\\ b y='c\\d'"), ["x=a b", "y=c\\d"]);
        assert_eq!(split("x=\"a\\\"b\\n\""), ["x=a\"b\\n"]);
        assert!(shell_split("x='open").is_err());
    }

    #[test]
    fn sections() {
        assert_eq!(parse_section("[web]"), Some(("web", None)));
        assert_eq!(parse_section("[web:vars] # c"), Some(("web", Some("vars"))));
        assert_eq!(parse_section("[web x]"), None);
    }
}
