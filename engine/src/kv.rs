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

/// Splits an argument string into words the way Ansible does: on whitespace,
/// except inside quotes and inside `{{ }}`, `{% %}` and `{# #}`. Quotes are
/// kept in the words; [`unquote`] strips them from values.
pub fn split_args(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut depth = 0usize; // Jinja nesting
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if quote.is_none()
            && matches!(
                (c, next),
                ('{', Some('{')) | ('{', Some('%')) | ('{', Some('#'))
            )
        {
            depth += 1;
            cur.push(c);
            cur.push(next.unwrap_or_default());
            i += 2;
            continue;
        }
        if depth > 0
            && matches!(
                (c, next),
                ('}', Some('}')) | ('%', Some('}')) | ('#', Some('}'))
            )
        {
            depth -= 1;
            cur.push(c);
            cur.push('}');
            i += 2;
            continue;
        }
        if c == '\\' && quote.is_some() {
            cur.push(c);
            if let Some(n) = next {
                cur.push(n);
            }
            i += 2;
            continue;
        }
        match quote {
            Some(q) if c == q => {
                quote = None;
                cur.push(c);
            }
            None if depth == 0 && (c == '"' || c == '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            None if depth == 0 && c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
        i += 1;
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
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

/// Decodes Python string escapes (`\\n`, `\\t`, `\\x41`, `\\u00e9`, octal...) in a
/// `key=value` word, as Ansible's `parse_kv` does before unquoting, so that
/// `content="a\\n"` holds a newline. Unknown escapes stay as written.
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
        } else if n.is_digit(8) {
            let mut j = i + 1;
            let mut v = 0u32;
            while j < chars.len() && j < i + 4 && chars[j].is_digit(8) {
                v = v * 8 + chars[j].to_digit(8).unwrap_or(0);
                j += 1;
            }
            if let Some(d) = char::from_u32(v) {
                out.push(d);
                i = j;
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
            valid.then(|| (key.to_string(), unquote(&decode_escapes(&word[eq + 1..]))))
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
        with_raw.insert("_raw_params".into(), Value::from(raw.join(" ")));
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

    #[test]
    fn kv_values_stay_strings() {
        let (args, raw) = parse_kv("apt", "update_cache=yes name=\"a b\"");
        assert!(!raw);
        assert_eq!(args["update_cache"].as_str(), Some("yes"));
        assert_eq!(args["name"].as_str(), Some("a b"));
    }
}
