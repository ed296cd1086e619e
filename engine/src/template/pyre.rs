//! Python `re` semantics for every filter and test that takes a pattern
//! (`regex_search`, `regex_findall`, `regex_replace`, `match`, `search`,
//! `regex`), on top of `fancy-regex` (lookaround, backreferences,
//! `(?P<name>…)`, `(?P=name)`).
//!
//! fancy-regex reads most of Python's syntax as is; the few places where the
//! two dialects disagree are rewritten before compiling:
//! - Python's `\Z` is the very end of the text (fancy-regex's `\Z`, like
//!   Oniguruma's, also matches before a final newline): it becomes `\z`;
//! - Python's `$` without MULTILINE matches at the end and also before a final
//!   newline, where Rust's `$` only matches at the very end.
//!
//! Replacement strings use Python's template syntax (`\1`, `\g<1>`,
//! `\g<name>`, `\n`...), expanded here by [`expand`] rather than translated
//! into the `$1` syntax of the Rust crates.
use fancy_regex::{Captures, Regex, RegexBuilder};
use minijinja::{Error, ErrorKind};

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// Rewrites a Python pattern into fancy-regex syntax (see the module docs).
pub(crate) fn translate(pat: &str) -> String {
    let mut out = String::with_capacity(pat.len() + 8);
    let mut chars = pat.chars().peekable();
    // Inside `[...]`: `$` and `\Z` mean something else there.
    let mut in_class = false;
    // Just after `[` or `[^`, where a `]` is a literal.
    let mut class_start = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    out.push('\\');
                    break;
                };
                if n == 'Z' && !in_class {
                    out.push_str(r"\z");
                } else {
                    out.push('\\');
                    out.push(n);
                }
            }
            '[' if !in_class => {
                in_class = true;
                class_start = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                continue;
            }
            ']' if in_class && !class_start => {
                in_class = false;
                out.push(']');
            }
            '$' if !in_class => out.push_str(r"(?:$|(?=\n\z))"),
            _ => out.push(c),
        }
        class_start = false;
    }
    out
}

/// Python's `re` refuses `\g` in a pattern ("bad escape"); it belongs to
/// replacement templates only. fancy_regex reads `\g<name>` as a call of
/// that group, and a group that calls itself compiled without end (the
/// `template` fuzz target found a pattern that used 2 GB), so it is refused
/// here, before fancy_regex sees it, with Python's message.
///
/// The same holds for the group extensions Python does not have: fancy_regex
/// reads `(?P>name)` (and `(?P>0)`, the whole pattern) as a call too, and
/// a pattern that called itself used more than 4 GB (the same fuzz target,
/// 2026-12-07). Python refuses every `(?X` it does not know with "unknown
/// extension"; so does this, outside character classes, with Python's
/// message and position (that of the `?`).
fn refuse_python_bad_escapes(pat: &str) -> Result<(), String> {
    let chars: Vec<char> = pat.chars().collect();
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if chars.get(i + 1) == Some(&'g') {
                    return Err(format!("bad escape \\g at position {i}"));
                }
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                // A `]` first in the class (after an optional `^`) is literal.
                if chars.get(i + 1) == Some(&'^') {
                    i += 1;
                }
                if chars.get(i + 1) == Some(&']') {
                    i += 1;
                }
            }
            ']' if in_class => in_class = false,
            '(' if !in_class && chars.get(i + 1) == Some(&'?') => {
                let q = i + 1;
                let known = match chars.get(q + 1) {
                    None => true,
                    Some('P') => matches!(chars.get(q + 2), None | Some('<' | '=')),
                    Some('<') => matches!(chars.get(q + 2), None | Some('=' | '!')),
                    Some(c) => ":#=!(>-aiLmsux".contains(*c),
                };
                if !known {
                    // Python names `?P` and `?<` with the character after them.
                    let len = if matches!(chars[q + 1], 'P' | '<') {
                        3
                    } else {
                        2
                    };
                    let ext: String = chars[q..q + len].iter().collect();
                    return Err(format!("unknown extension {ext} at position {q}"));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Compiles a Python pattern with Ansible's `ignorecase`/`multiline` flags.
pub(crate) fn compile(pat: &str, ignorecase: bool, multiline: bool) -> Result<Regex, Error> {
    refuse_python_bad_escapes(pat)
        .map_err(|e| err(format!("invalid regular expression {pat:?}: {e}")))?;
    let mut flags = String::new();
    if ignorecase {
        flags.push('i');
    }
    if multiline {
        flags.push('m');
    }
    let translated = translate(pat);
    let full = if flags.is_empty() {
        translated
    } else {
        format!("(?{flags}){translated}")
    };
    RegexBuilder::new(&full)
        .build()
        .map_err(|e| err(format!("invalid regular expression {pat:?}: {e}")))
}

/// Compiles a Python pattern without flags; a bad pattern is described in
/// Python's `re.error` words where the mistake has a Python name (a lookup
/// that reports the error verbatim, such as `varnames`, then reads as
/// ansible-core's).
pub(crate) fn compile_python(pat: &str) -> Result<Regex, String> {
    use fancy_regex::{Error as E, ParseError as P};
    refuse_python_bad_escapes(pat)?;
    RegexBuilder::new(&translate(pat))
        .build()
        .map_err(|e| match e {
            E::ParseError(pos, P::TargetNotRepeatable | P::InvalidRepeat) => {
                format!("nothing to repeat at position {pos}")
            }
            E::ParseError(pos, P::UnclosedOpenParen) => {
                format!("missing ), unterminated subpattern at position {pos}")
            }
            other => other.to_string(),
        })
}

fn run_err(e: fancy_regex::Error) -> Error {
    err(format!("regular expression failed: {e}"))
}

/// `re.search`: true when the pattern matches anywhere.
pub(crate) fn is_match(re: &Regex, s: &str) -> Result<bool, Error> {
    re.is_match(s).map_err(run_err)
}

/// The captures of the first match, if any.
pub(crate) fn captures<'t>(re: &Regex, s: &'t str) -> Result<Option<Captures<'t, str>>, Error> {
    re.captures(s).map_err(run_err)
}

/// The captures of every non-overlapping match, like `re.finditer`.
pub(crate) fn all_captures<'t>(re: &Regex, s: &'t str) -> Result<Vec<Captures<'t, str>>, Error> {
    re.captures_iter(s)
        .collect::<Result<Vec<_>, _>>()
        .map_err(run_err)
}

/// Looks a group up by number or name, as `\g<…>` does.
fn group<'t>(re: &Regex, caps: &Captures<'t, str>, name: &str) -> Result<Option<&'t str>, Error> {
    if let Ok(n) = name.parse::<usize>() {
        if n >= re.captures_len() {
            return Err(err(format!("invalid group reference {n}")));
        }
        return Ok(caps.get(n).map(|m| m.as_str()));
    }
    if !re.capture_names().any(|x| x == Some(name)) {
        return Err(err(format!("unknown group name '{name}'")));
    }
    Ok(caps.name(name).map(|m| m.as_str()))
}

/// Expands a Python replacement template (`re.sub`'s `repl`) for one match.
/// An unmatched group expands to nothing, as in Python 3.5+.
pub(crate) fn expand(re: &Regex, caps: &Captures<'_, str>, rep: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(rep.len());
    let chars: Vec<char> = rep.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 == chars.len() {
            if c == '\\' {
                return Err(err("bad escape (end of pattern) in replacement"));
            }
            out.push(c);
            i += 1;
            continue;
        }
        let n = chars[i + 1];
        i += 2;
        match n {
            'g' => {
                if chars.get(i) != Some(&'<') {
                    return Err(err("missing < in \\g<...> group reference"));
                }
                let Some(end) = chars[i + 1..].iter().position(|&x| x == '>') else {
                    return Err(err("missing > in \\g<...> group reference"));
                };
                let name: String = chars[i + 1..i + 1 + end].iter().collect();
                out.push_str(group(re, caps, &name)?.unwrap_or(""));
                i += end + 2;
            }
            '0' => {
                // An octal escape, up to three digits.
                let mut code = 0u32;
                let mut len = 0;
                while len < 2 && chars.get(i).is_some_and(|c| ('0'..='7').contains(c)) {
                    code = code * 8 + chars[i].to_digit(8).unwrap_or(0);
                    i += 1;
                    len += 1;
                }
                out.push(char::from_u32(code).unwrap_or('\0'));
            }
            '1'..='9' => {
                let mut num = n.to_string();
                if chars.get(i).is_some_and(char::is_ascii_digit) {
                    num.push(chars[i]);
                    i += 1;
                }
                out.push_str(group(re, caps, &num)?.unwrap_or(""));
            }
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            '\\' => out.push('\\'),
            c if c.is_ascii_alphabetic() => {
                return Err(err(format!("bad escape \\{c} in replacement")));
            }
            // Python keeps unknown non-letter escapes as they are.
            c => {
                out.push('\\');
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// `re.sub(pattern, repl, s, count)`; `count == 0` replaces every match.
/// Returns the new text and the number of replacements made.
pub(crate) fn sub(re: &Regex, rep: &str, s: &str, count: usize) -> Result<(String, usize), Error> {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut n = 0;
    for caps in re.captures_iter(s) {
        let caps = caps.map_err(run_err)?;
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&s[last..m.start()]);
        out.push_str(&expand(re, &caps, rep)?);
        last = m.end();
        n += 1;
        if count > 0 && n == count {
            break;
        }
    }
    out.push_str(&s[last..]);
    Ok((out, n))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn translates_python_only_syntax() {
        assert_eq!(translate(r"a\Z"), r"a\z");
        assert_eq!(translate(r"[$\Z]"), r"[$\Z]");
        assert_eq!(translate(r"[]$]x$"), r"[]$]x(?:$|(?=\n\z))");
        assert_eq!(translate(r"\$"), r"\$");
    }

    /// Found by the `template` fuzz target: `\g<first>` inside the group
    /// `first` made fancy_regex compile a self-call until memory ran out.
    /// Python refuses `\g` in a pattern; so does Keel, at once.
    #[test]
    fn backslash_g_in_a_pattern_is_a_bad_escape() {
        let pat = r"(?P<first>a\w+, \g<first>Tv|b)c";
        let e = compile_python(pat).unwrap_err();
        assert_eq!(e, "bad escape \\g at position 16");
        assert!(compile(pat, false, false).is_err());
        // An escaped backslash before `g` is a literal backslash and a `g`.
        assert!(compile_python(r"a\\g").is_ok());
        // In the replacement, `\g<name>` is still the group.
        let re = compile(r"(?P<w>\w+)", false, false).unwrap();
        assert_eq!(sub(&re, r"<\g<w>>", "hi", 0).unwrap().0, "<hi>");
    }

    /// Found by the `template` fuzz target: `(?P>0)` made fancy_regex call
    /// the whole pattern from inside itself, past 4 GB. Each message here is
    /// Python 3.11's `re.compile` error for the same pattern.
    #[test]
    fn group_extensions_python_lacks_are_refused_with_its_words() {
        for (pat, want) in [
            ("a(?P>0)b", "unknown extension ?P> at position 2"),
            ("a(?R)", "unknown extension ?R at position 2"),
            ("a(?1)", "unknown extension ?1 at position 2"),
            ("(?&x)", "unknown extension ?& at position 1"),
            ("(?<x>a)", "unknown extension ?<x at position 1"),
            ("(?Px)", "unknown extension ?Px at position 1"),
            ("(?+1)", "unknown extension ?+ at position 1"),
        ] {
            assert_eq!(compile_python(pat).unwrap_err(), want, "{pat}");
            assert!(compile(pat, false, false).is_err(), "{pat}");
        }
        // What Python has still compiles, and inside a class `(?R)` is text.
        for pat in [
            "[(?R)]",
            "(?i)a",
            "(?>a)",
            "(?P<n>a)(?P=n)",
            "(?:a)(?#c)",
            "(?=a)(?!b)(?<=c)(?<!d)",
            "(a)?(?(1)b|c)",
            r"[]?(]x",
        ] {
            assert!(compile_python(pat).is_ok(), "{pat}");
        }
    }

    #[test]
    fn dollar_matches_before_a_final_newline_like_python() {
        let re = compile("b$", false, false).unwrap();
        assert!(is_match(&re, "ab\n").unwrap());
        assert!(!is_match(&re, "ab\n\n").unwrap());
        let z = compile(r"b\Z", false, false).unwrap();
        assert!(!is_match(&z, "ab\n").unwrap());
    }

    #[test]
    fn sub_expands_python_templates() {
        let re = compile(r"(?P<w>\w+)@(\w+)", false, false).unwrap();
        let (s, n) = sub(&re, r"\2 at \g<w>\n", "me@host", 0).unwrap();
        assert_eq!((s.as_str(), n), ("host at me\n", 1));
        assert!(sub(&re, r"\q", "me@host", 0).is_err());
        assert!(sub(&re, r"\g<nope>", "me@host", 0).is_err());
    }
}
