//! The INI reader under `config/`: an `ansible.cfg` read the way Python's
//! `configparser` reads it for ansible-core (`inline_comment_prefixes=(';',)`,
//! values taken raw, so no `%(name)s` interpolation).
//!
//! Rules kept: `[section]` headers; `key = value` or `key: value` (the first
//! `=` or `:` splits); keys lower-cased and stripped; `#` and `;` full-line
//! comments; a `;` after whitespace starts an inline comment; an indented line
//! continues the previous value (joined with a newline); a key outside any
//! section, a line without a delimiter, and a repeated section or key are
//! errors, as configparser's strict mode makes them.

use indexmap::IndexMap;

/// One parsed file: sections in file order, keys in file order, each with
/// the line it was written on.
#[derive(Debug, Default, Clone)]
pub(crate) struct IniFile {
    pub sections: IndexMap<String, IndexMap<String, (String, usize)>>,
}

/// Why a file could not be read as INI (line numbers from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

impl IniFile {
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .get(section)
            .and_then(|s| s.get(key))
            .map(|(v, _)| v.as_str())
    }

    pub fn parse(text: &str) -> Result<IniFile, IniError> {
        let mut file = IniFile::default();
        let mut section: Option<String> = None;
        // The key a continuation line would extend, and the indentation of
        // the line that started it.
        let mut open_key: Option<(String, usize)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let indent = raw.len() - raw.trim_start().len();
            let trimmed = raw.trim();
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            let content = strip_inline_comment(raw);
            if content.trim().is_empty() {
                // configparser keeps empty lines inside a value only when an
                // indented line follows; a trailing one is dropped anyway.
                continue;
            }
            if let (Some((key, key_indent)), Some(sect)) = (&open_key, &section) {
                if indent > *key_indent {
                    let entry = file
                        .sections
                        .get_mut(sect)
                        .and_then(|s| s.get_mut(key))
                        .expect("the open key was inserted");
                    if !entry.0.is_empty() {
                        entry.0.push('\n');
                    }
                    entry.0.push_str(content.trim());
                    continue;
                }
            }
            let t = content.trim();
            if let Some(rest) = t.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(IniError {
                        line: line_no,
                        message: format!("cannot read section header `{t}`"),
                    });
                };
                if file.sections.contains_key(name) {
                    return Err(IniError {
                        line: line_no,
                        message: format!("section [{name}] already exists"),
                    });
                }
                file.sections.insert(name.to_string(), IndexMap::new());
                section = Some(name.to_string());
                open_key = None;
                continue;
            }
            let Some(sect) = &section else {
                return Err(IniError {
                    line: line_no,
                    message: format!("`{t}` comes before any [section] header"),
                });
            };
            let Some(pos) = t.find(['=', ':']) else {
                return Err(IniError {
                    line: line_no,
                    message: format!("`{t}` is not `key = value`"),
                });
            };
            let key = t[..pos].trim().to_lowercase();
            let value = t[pos + 1..].trim().to_string();
            let keys = file.sections.get_mut(sect).expect("section exists");
            if keys.contains_key(&key) {
                return Err(IniError {
                    line: line_no,
                    message: format!("option `{key}` in section [{sect}] already exists"),
                });
            }
            keys.insert(key.clone(), (value, line_no));
            open_key = Some((key, indent));
        }
        Ok(file)
    }
}

/// The line up to a `;` that follows whitespace (configparser's inline
/// comment rule).
fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b';' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

/// ansible-core's `unquote`: drops one pair of matching outer quotes.
pub(crate) fn unquote(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2
        && (b[0] == b'"' || b[0] == b'\'')
        && b[b.len() - 1] == b[0]
        && (b.len() < 3 || b[b.len() - 2] != b'\\')
    {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_continuations() {
        let f = IniFile::parse(
            "# top\n[defaults]\nInventory = ./hosts ; where hosts live\nforks: 7\n\
             roles_path=a:b;c\n  :d\n; comment\n[ssh_connection]\nssh_args = -o A=1\n",
        )
        .unwrap();
        assert_eq!(f.get("defaults", "inventory"), Some("./hosts"));
        assert_eq!(f.get("defaults", "forks"), Some("7"));
        // `;` without whitespace before it is part of the value.
        assert_eq!(f.get("defaults", "roles_path"), Some("a:b;c\n:d"));
        assert_eq!(f.get("ssh_connection", "ssh_args"), Some("-o A=1"));
        assert_eq!(f.sections["defaults"]["forks"].1, 4);
    }

    #[test]
    fn strict_errors_name_the_line() {
        let e = IniFile::parse("forks = 3\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = IniFile::parse("[defaults]\nforks = 3\nforks = 4\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("already exists"), "{e}");
        let e = IniFile::parse("[defaults]\njust words\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn unquote_matches_ansible() {
        assert_eq!(unquote("'a b'"), "a b");
        assert_eq!(unquote("\"x\""), "x");
        assert_eq!(unquote("'x\""), "'x\"");
        assert_eq!(unquote("'"), "'");
    }
}
