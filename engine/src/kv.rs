//! Ansible's `key=value` argument syntax (`copy: src=a dest="/b c"`): splitting
//! words the way Ansible does, unquoting, Python escapes, and which words of a
//! free-form module's text are options. The playbook reader uses it for task
//! arguments and the lookups for their terms; it imports only [`crate::vars`].

use minijinja::Value;

use crate::vars::VarMap;

/// Modules whose arguments are free-form text (`command: ls -l chdir=/tmp`):
/// only the keys in [`FREE_FORM_KEYS`] are split off as `key=value`.
pub const FREE_FORM_MODULES: &[&str] = &["command", "shell", "raw", "script"];

/// The `key=value` options the free-form modules understand.
pub const FREE_FORM_KEYS: &[&str] = &[
    "creates",
    "removes",
    "chdir",
    "executable",
    "warn",
    "stdin",
    "stdin_add_newline",
    "strip_empty_ends",
    "argv",
    "cmd",
];

/// Splits an argument string into words the way ansible-core's
/// `split_args` does: on spaces and newlines, except inside quotes and inside
/// `{{ }}`, `{% %}` and `{# #}`. Quotes are kept in the words; [`unquote`]
/// strips them from values. The text's layout survives for [`join_args`]: a
/// run of spaces adds spaces to the word before it, a line's last word keeps
/// its newline, and a lone `\` at a line's end joins it to the next line.
/// Unbalanced quotes or blocks end the last word (ansible-core refuses them;
/// the reader's callers still see the words).
pub fn split_args(args: &str) -> Vec<String> {
    let mut params: Vec<String> = Vec::new();
    if args.is_empty() {
        return params;
    }
    let items: Vec<&str> = args.split('\n').collect();
    let mut quote_char: Option<char> = None;
    let (mut print_depth, mut block_depth, mut comment_depth) = (0usize, 0usize, 0usize);
    for (item_idx, item) in items.iter().enumerate() {
        let mut line_continuation = false;
        for (idx, token) in item.split(' ').enumerate() {
            if token.is_empty() && idx != 0 {
                match params.last_mut() {
                    Some(p) => p.push(' '),
                    None => params.push(" ".into()),
                }
                continue;
            }
            let was_inside_quotes = quote_char.is_some();
            if token == "\\" && !was_inside_quotes {
                line_continuation = true;
                continue;
            }
            quote_char = quote_state(token, quote_char);
            let inside_quotes = quote_char.is_some();
            let in_block = print_depth + block_depth + comment_depth > 0;
            let mut appended = false;
            if inside_quotes && !was_inside_quotes && !in_block {
                params.push(token.to_string());
                appended = true;
            } else if in_block || inside_quotes || was_inside_quotes {
                let last = last_param(&mut params);
                // A word that continues on a new line joins without a space.
                if idx > 0 {
                    last.push(' ');
                }
                last.push_str(token);
                appended = true;
            }
            for (depth, open, close) in [
                (&mut print_depth, "{{", "}}"),
                (&mut block_depth, "{%", "%}"),
                (&mut comment_depth, "{#", "#}"),
            ] {
                let before = *depth;
                let (opens, closes) = (token.matches(open).count(), token.matches(close).count());
                if opens != closes {
                    *depth = (*depth + opens).saturating_sub(closes);
                }
                if *depth != before && !appended {
                    params.push(token.to_string());
                    appended = true;
                }
            }
            let in_block = print_depth + block_depth + comment_depth > 0;
            if !in_block && quote_char.is_none() && !appended && !token.is_empty() {
                params.push(token.to_string());
            }
        }
        if items.len() > 1 && item_idx != items.len() - 1 && !line_continuation {
            last_param(&mut params).push('\n');
        }
    }
    params
}

/// The word being built, created empty when there is none yet.
fn last_param(params: &mut Vec<String>) -> &mut String {
    if params.is_empty() {
        params.push(String::new());
    }
    let n = params.len() - 1;
    &mut params[n]
}

/// ansible-core's `_get_quote_state`: the quote still open after `token`.
fn quote_state(token: &str, mut quote_char: Option<char>) -> Option<char> {
    let mut prev: Option<char> = None;
    for c in token.chars() {
        if (c == '"' || c == '\'') && prev != Some('\\') {
            match quote_char {
                Some(q) if q == c => quote_char = None,
                Some(_) => {}
                None => quote_char = Some(c),
            }
        }
        prev = Some(c);
    }
    quote_char
}

/// Joins words from [`split_args`] back into text, keeping their newlines
/// and spaces (ansible-core's `join_args`).
pub fn join_args(words: &[String]) -> String {
    let mut out = String::new();
    for w in words {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Strips one level of matching surrounding quotes.
pub fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        let inner = &s[1..s.len() - 1];
        return inner.replace(&format!("\\{}", b[0] as char), &(b[0] as char).to_string());
    }
    s.to_string()
}

/// Decodes Python string escapes (`\\n`, `\\t`, `\\x41`, `\\u00e9`...) in a
/// `key=value` word, as Ansible's `parse_kv` does before unquoting, so that
/// `content="a\\n"` holds a newline. Unknown escapes stay as written, and so
/// do octal ones: ansible-core's pattern has none, which keeps a regex
/// back-reference such as `replace='"\\1"'` intact.
pub fn decode_escapes(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let hex = |from: usize, n: usize| -> Option<char> {
        let digits: String = chars.get(from..from + n)?.iter().collect();
        if digits.chars().all(|c| c.is_ascii_hexdigit()) {
            char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
        } else {
            None
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let n = chars[i + 1];
        let simple = match n {
            '\\' => Some('\\'),
            '\'' => Some('\''),
            '"' => Some('"'),
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            _ => None,
        };
        if let Some(d) = simple {
            out.push(d);
            i += 2;
            continue;
        }
        let (width, radix_hex) = match n {
            'x' => (2, true),
            'u' => (4, true),
            'U' => (8, true),
            _ => (0, false),
        };
        if radix_hex {
            if let Some(d) = hex(i + 2, width) {
                out.push(d);
                i += 2 + width;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Parses `key=value` argument text for `action`. Values stay strings, as in
/// Ansible. Words that are not `key=value` (and, for the free-form modules,
/// `key=value` words whose key is not one of [`FREE_FORM_KEYS`]) are joined
/// back into `_raw_params`. Returns the args and whether raw text was found.
pub fn parse_kv(action: &str, text: &str) -> (VarMap, bool) {
    let free_form = FREE_FORM_MODULES.contains(&action);
    let mut args = VarMap::new();
    let mut raw: Vec<String> = Vec::new();
    for word in split_args(text) {
        let kv = word.find('=').and_then(|eq| {
            let key = &word[..eq];
            // Keys may be templates (`set_fact: "{{ name }}=value"`).
            let valid = !key.is_empty()
                && (key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || (key.contains("{{") && key.trim_end().ends_with("}}")))
                && (!free_form || FREE_FORM_KEYS.contains(&key));
            valid.then(|| {
                let value = decode_escapes(&word[eq + 1..]);
                (key.trim().to_string(), unquote(value.trim()))
            })
        });
        match kv {
            Some((k, v)) => {
                args.insert(k, Value::from(v));
            }
            None => raw.push(word),
        }
    }
    let has_raw = !raw.is_empty();
    if has_raw {
        // Re-insert `_raw_params` first so it reads naturally in dumps.
        let mut with_raw = VarMap::new();
        with_raw.insert("_raw_params".into(), Value::from(join_args(&raw)));
        with_raw.extend(args);
        args = with_raw;
    }
    (args, has_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_jinja() {
        assert_eq!(
            split_args(r#"name={{ item | default('x y') }} msg="a b" c='d e'"#),
            vec![
                "name={{ item | default('x y') }}",
                r#"msg="a b""#,
                "c='d e'"
            ]
        );
    }

    #[test]
    fn free_form_keeps_unknown_pairs_in_raw_params() {
        let (args, raw) = parse_kv("command", "echo a=b chdir=/tmp");
        assert!(raw);
        assert_eq!(args["_raw_params"].as_str(), Some("echo a=b"));
        assert_eq!(args["chdir"].as_str(), Some("/tmp"));
    }

    #[test]
    fn kv_values_decode_python_escapes() {
        let (args, _) = parse_kv("copy", r#"content="a\nb\t\x41\\n" dest=/x"#);
        assert_eq!(args["content"].as_str(), Some("a\nb\tA\\n"));
        let (args, _) = parse_kv("command", r#"echo a\nb chdir=/tmp"#);
        assert_eq!(args["_raw_params"].as_str(), Some(r"echo a\nb"));
    }

    /// The command_shell target: newlines, space runs and `\` continuations
    /// survive into `_raw_params` as ansible-core keeps them.
    #[test]
    fn raw_params_keep_the_text_layout() {
        let text = "executable=/bin/bash\ncreates=/x\necho \"test\"\n";
        let (args, _) = parse_kv("shell", text);
        assert_eq!(args["_raw_params"].as_str(), Some("echo \"test\"\n"));
        assert_eq!(args["creates"].as_str(), Some("/x"));
        let (args, _) = parse_kv("shell", "cat <<EOF\nOne\n  Two\nEOF\n");
        assert_eq!(
            args["_raw_params"].as_str(),
            Some("cat <<EOF\nOne\n  Two\nEOF\n")
        );
        let text = "echo a \\\n\"b c\" \"d\ne\" \\\n| x\n";
        let (args, _) = parse_kv("shell", text);
        assert_eq!(
            args["_raw_params"].as_str(),
            Some("echo a \"b c\" \"d\ne\" | x\n")
        );
    }

    /// The replace target: `replace='"\1"'` is a back-reference, not `\x01`.
    #[test]
    fn kv_values_keep_octal_like_escapes() {
        let (args, _) = parse_kv("replace", r#"regexp='\\b(.+)\\b' replace='"\1"'"#);
        assert_eq!(args["regexp"].as_str(), Some(r"\b(.+)\b"));
        assert_eq!(args["replace"].as_str(), Some(r#""\1""#));
    }

    #[test]
    fn kv_values_stay_strings() {
        let (args, raw) = parse_kv("apt", "update_cache=yes name=\"a b\"");
        assert!(!raw);
        assert_eq!(args["update_cache"].as_str(), Some("yes"));
        assert_eq!(args["name"].as_str(), Some("a b"));
    }
}
