//! Values in and out of templates: native types for single-expression
//! templates, Python-style printing, truthiness, and JSON/YAML conversion.
//!
//! Ansible keeps the type of `"{{ expr }}"` (a list stays a list) but prints
//! values inside larger strings the way Python does (`True`, `['a', 'b']`).
//! The executor also uses the JSON helpers here for events and `register`.
use std::fmt::Write as _;

use indexmap::IndexMap;
use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Output, State, Value};

use super::error::CONTAINED_UNDEFINED;

/// A map with arbitrary keys, the shape of a Jinja dict.
pub(crate) type ValueMap = IndexMap<Value, Value>;

/// The inner expression when `src` is exactly one `{{ expr }}` (whitespace
/// control dashes allowed), nothing before or after.
pub(crate) fn single_expression(src: &str) -> Option<&str> {
    let body = src.strip_prefix("{{")?;
    let end = expression_end(body)?;
    // Only the closing braces may follow the expression.
    if end + 2 != body.len() {
        return None;
    }
    let s = &body[..end];
    let s = s.strip_prefix('-').unwrap_or(s);
    let s = s.strip_suffix('-').unwrap_or(s);
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}

/// A template without `{% %}` blocks or comments cut into its pieces: text
/// and `{{ }}` expressions (given with their braces), in order. `None` when
/// it has blocks or comments, or an expression is not closed.
pub(crate) fn expression_pieces(src: &str) -> Option<Vec<(bool, &str)>> {
    if src.contains("{%") || src.contains("{#") {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push((false, &rest[..start]));
        }
        let body = &rest[start + 2..];
        let end = expression_end(body)?;
        out.push((true, &rest[start..start + 2 + end + 2]));
        rest = &body[end + 2..];
    }
    if !rest.is_empty() {
        out.push((false, rest));
    }
    Some(out)
}

/// The offset of the `}}` that closes an expression starting at `body`,
/// skipping string literals and nested brackets (`{{ {'a': {'b': 1}} }}`).
fn expression_end(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' | b'[' | b'{' => depth += 1,
                b'}' if depth == 0 && bytes.get(i + 1) == Some(&b'}') => return Some(i),
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// Ansible (2.19) takes backslashes in Jinja string literals literally:
/// `regex_replace('(\\d+)', '\\1')` passes `(\d+)` to the regex. minijinja
/// would read them as escapes (and reject `\d`), so inside the literals of
/// `{{ }}`/`{% %}` blocks each backslash is doubled, except before the
/// literal's own quote character.
pub(crate) fn literal_backslashes(src: &str) -> std::borrow::Cow<'_, str> {
    if !src.contains('\\') {
        return std::borrow::Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len() + 8);
    let mut chars = src.chars().peekable();
    // None: template text; Some(None): inside a block; Some(Some(q)): inside a
    // string literal quoted with q.
    let mut state: Option<Option<char>> = None;
    while let Some(c) = chars.next() {
        match state {
            None => {
                out.push(c);
                if c == '{' && matches!(chars.peek(), Some('{') | Some('%')) {
                    out.push(chars.next().unwrap_or_default());
                    state = Some(None);
                }
            }
            Some(None) => {
                out.push(c);
                match c {
                    '\'' | '"' => state = Some(Some(c)),
                    '}' | '%' if chars.peek() == Some(&'}') => {
                        out.push(chars.next().unwrap_or_default());
                        state = None;
                    }
                    _ => {}
                }
            }
            Some(Some(q)) => {
                if c == '\\' {
                    if chars.peek() == Some(&q) {
                        out.push(c);
                        out.push(chars.next().unwrap_or_default());
                    } else {
                        out.push_str("\\\\");
                    }
                } else {
                    out.push(c);
                    if c == q {
                        state = Some(None);
                    }
                }
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A bare expression (`when`, `that`, `failed_when`...) is not a template:
/// Ansible compiles it as Jinja code, whose string literals follow Python's
/// escape rules (`'\t'` is a tab, `'\d'` stays backslash-d, `'\x41'` is
/// `A`). minijinja knows fewer escapes and rejects unknown ones, so each
/// literal is decoded the Python way here and written back with only `\\`
/// and the quote escaped.
pub(crate) fn python_escapes(src: &str) -> std::borrow::Cow<'_, str> {
    if !src.contains('\\') {
        return std::borrow::Cow::Borrowed(src);
    }
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let q = chars[i];
        if q != '\'' && q != '"' {
            out.push(q);
            i += 1;
            continue;
        }
        match rewrite_literal(&chars, i, &mut out) {
            Some(next) => i = next,
            None => {
                // Unterminated: leave the rest for the parser to report.
                out.extend(&chars[i..]);
                break;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`python_escapes`] for the string literals inside the `{{ }}` and `{% %}`
/// blocks of a template text (template files).
pub(crate) fn python_escapes_in_blocks(src: &str) -> std::borrow::Cow<'_, str> {
    if !src.contains('\\') {
        return std::borrow::Cow::Borrowed(src);
    }
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 8);
    let mut in_block = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if !in_block {
            out.push(c);
            if c == '{' && matches!(next, Some('{') | Some('%')) {
                out.push(chars[i + 1]);
                in_block = true;
                i += 2;
                continue;
            }
            i += 1;
            continue;
        }
        match c {
            '\'' | '"' => match rewrite_literal(&chars, i, &mut out) {
                Some(n) => i = n,
                None => {
                    out.extend(&chars[i..]);
                    break;
                }
            },
            '}' | '%' if next == Some('}') => {
                out.push(c);
                out.push('}');
                in_block = false;
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Decodes the literal opening at `chars[start]` with Python's escapes and
/// writes it back with only `\\` and its quote escaped. Returns the index
/// after the closing quote, or None when the literal is not closed.
fn rewrite_literal(chars: &[char], start: usize, out: &mut String) -> Option<usize> {
    let q = chars[start];
    let mut decoded = String::new();
    let mut j = start + 1;
    loop {
        let c = *chars.get(j)?;
        if c == q {
            break;
        }
        if c != '\\' || j + 1 == chars.len() {
            decoded.push(c);
            j += 1;
            continue;
        }
        let n = chars[j + 1];
        j += 2;
        let hex = |from: usize, len: usize| -> Option<char> {
            let h: String = chars.get(from..from + len)?.iter().collect();
            u32::from_str_radix(&h, 16).ok().and_then(char::from_u32)
        };
        match n {
            '\n' => {} // a line continuation
            '\\' | '\'' | '"' => decoded.push(n),
            'n' => decoded.push('\n'),
            't' => decoded.push('\t'),
            'r' => decoded.push('\r'),
            'a' => decoded.push('\x07'),
            'b' => decoded.push('\x08'),
            'f' => decoded.push('\x0c'),
            'v' => decoded.push('\x0b'),
            'x' | 'u' | 'U' => {
                let len = match n {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                match hex(j, len) {
                    Some(ch) => {
                        decoded.push(ch);
                        j += len;
                    }
                    None => {
                        decoded.push('\\');
                        decoded.push(n);
                    }
                }
            }
            '0'..='7' => {
                let mut code = n.to_digit(8).unwrap_or(0);
                let mut k = 0;
                while k < 2 && chars.get(j).is_some_and(|c| ('0'..='7').contains(c)) {
                    code = code * 8 + chars[j].to_digit(8).unwrap_or(0);
                    j += 1;
                    k += 1;
                }
                decoded.push(char::from_u32(code).unwrap_or('\0'));
            }
            // Python keeps unknown escapes as they are.
            other => {
                decoded.push('\\');
                decoded.push(other);
            }
        }
    }
    out.push(q);
    for c in decoded.chars() {
        if c == '\\' || c == q {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(q);
    Some(j + 1)
}

/// The operand left of the last `|` in `text` (`foo.bar` in `{{ foo.bar | f`).
pub(crate) fn expression_before_pipe(text: &str) -> String {
    let t = text.trim_end();
    let t = t.strip_suffix('|').unwrap_or(t).trim_end();
    let start = t
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '\'' | '"')))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    t[start..].to_string()
}

/// The variable name an expression such as `foo.bar[0] | upper` starts with.
pub(crate) fn root_name(expr: &str) -> &str {
    let e = expr.trim();
    let end = e
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map(|(i, _)| i)
        .unwrap_or(e.len());
    &e[..end]
}

pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// How `{{ value }}` prints inside a larger template (Ansible 2.19 rules:
/// strings as-is, `None` as nothing, containers and bools as Python would).
pub(crate) fn format_output(out: &mut Output, _state: &mut State, v: &Value) -> Result<(), Error> {
    let r = match v.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "undefined value printed",
            ));
        }
        ValueKind::None => Ok(()),
        ValueKind::String => out.write_str(v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Map if contains_undefined(v) => {
            return Err(Error::new(ErrorKind::UndefinedError, CONTAINED_UNDEFINED));
        }
        ValueKind::Bool | ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            out.write_str(&python_repr(v))
        }
        _ => write!(out, "{v}"),
    };
    r.map_err(|_| Error::new(ErrorKind::WriteFailure, "failed to write output"))
}

/// A value as `{{ value }}` prints it inside a larger template (the rules of
/// [`format_output`]; an undefined value prints as nothing).
pub fn display_text(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => String::new(),
        ValueKind::String => v.as_str().unwrap_or_default().to_string(),
        ValueKind::Bool | ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => python_repr(v),
        _ => v.to_string(),
    }
}

/// Python's `repr()` of a value: `'text'`, `True`, `None`, `[1, 'a']`, `{'k': 1}`.
pub fn python_repr(v: &Value) -> String {
    let mut s = String::new();
    repr_into(&mut s, v);
    s
}

fn repr_into(out: &mut String, v: &Value) {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::String => py_str_repr(out, v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(it) = v.try_iter() {
                for (i, item) in it.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    repr_into(out, &item);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(it) = v.try_iter() {
                for (i, k) in it.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    repr_into(out, &k);
                    out.push_str(": ");
                    repr_into(out, &v.get_item(&k).unwrap_or(Value::UNDEFINED));
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{v}");
        }
    }
}

fn py_str_repr(out: &mut String, s: &str) {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(q);
}

/// Python truthiness: `None`, `False`, `0`, `""`, `[]`, `{}` are false.
pub fn is_truthy(v: &Value) -> bool {
    v.is_true()
}

/// Ansible's `bool` filter: `true`, `yes`, `on`, `1` (any case) and the
/// number 1 are true, everything else false.
pub fn to_bool(v: &Value) -> bool {
    match v.kind() {
        ValueKind::Bool => v.is_true(),
        ValueKind::Number => v.as_i64() == Some(1) || f64::try_from(v.clone()).ok() == Some(1.0),
        ValueKind::String => matches!(
            v.as_str()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
                .as_str(),
            "true" | "yes" | "on" | "1"
        ),
        _ => false,
    }
}

/// Converts a runtime value to JSON. Undefined becomes `null`; map keys are
/// printed as strings.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v.kind() {
        ValueKind::Undefined | ValueKind::None | ValueKind::Invalid => J::Null,
        ValueKind::Bool => J::Bool(v.is_true()),
        ValueKind::Number => {
            if let Some(i) = v.as_i64().filter(|_| v.is_integer()) {
                J::from(i)
            } else if let Some(u) = u64::try_from(v.clone()).ok().filter(|_| v.is_integer()) {
                J::from(u)
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(J::Number)
                    .unwrap_or(J::Null)
            }
        }
        ValueKind::String => J::String(v.as_str().unwrap_or_default().to_string()),
        ValueKind::Bytes => {
            J::String(String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned())
        }
        ValueKind::Seq | ValueKind::Iterable => J::Array(
            v.try_iter()
                .map(|it| it.map(|x| value_to_json(&x)).collect())
                .unwrap_or_default(),
        ),
        ValueKind::Map => {
            let mut m = serde_json::Map::new();
            if let Ok(it) = v.try_iter() {
                for k in it {
                    let key = match k.as_str() {
                        Some(s) => s.to_string(),
                        None => k.to_string(),
                    };
                    m.insert(
                        key,
                        value_to_json(&v.get_item(&k).unwrap_or(Value::UNDEFINED)),
                    );
                }
            }
            J::Object(m)
        }
        _ => match super::datetime::as_datetime(v) {
            Some(d) => J::String(d.isoformat()),
            None => J::String(v.to_string()),
        },
    }
}

/// Converts JSON to a runtime value, keeping key order.
pub fn value_from_json(j: &serde_json::Value) -> Value {
    match value_from_json_with::<std::convert::Infallible>(j, &|_| None) {
        Ok(v) => v,
    }
}

/// What [`value_from_json_with`] asks about each JSON object.
pub(crate) type ObjectHook<'a, E> =
    dyn Fn(&serde_json::Map<String, serde_json::Value>) -> Option<Result<Value, E>> + 'a;

/// [`value_from_json`], asking `object` first about every JSON object: what
/// it returns stands for the object (an error stops the conversion), `None`
/// converts the object as usual. The inventory reads `__ansible_unsafe`
/// this way.
pub(crate) fn value_from_json_with<E>(
    j: &serde_json::Value,
    object: &ObjectHook<'_, E>,
) -> Result<Value, E> {
    use serde_json::Value as J;
    Ok(match j {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => Value::from(s.as_str()),
        J::Array(a) => Value::from(
            a.iter()
                .map(|v| value_from_json_with(v, object))
                .collect::<Result<Vec<_>, E>>()?,
        ),
        J::Object(o) => {
            if let Some(r) = object(o) {
                return r;
            }
            let mut m = ValueMap::new();
            for (k, v) in o {
                m.insert(Value::from(k.as_str()), value_from_json_with(v, object)?);
            }
            Value::from_object(m)
        }
    })
}

fn sort_json(j: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match j {
        J::Object(o) => {
            let mut entries: Vec<_> = o.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            J::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_json(v)))
                    .collect(),
            )
        }
        J::Array(a) => J::Array(a.into_iter().map(sort_json).collect()),
        other => other,
    }
}

/// JSON with Python's `json.dumps` spacing (`", "` and `": "`), keys in order.
pub(crate) fn to_json_compact(v: &Value, sort_keys: bool) -> String {
    let mut j = value_to_json(v);
    if sort_keys {
        j = sort_json(j);
    }
    let mut out = String::new();
    write_py_json(&mut out, &j, None, 0);
    out
}

/// `to_nice_json`: keys sorted, indented (4 by default), as Ansible prints it.
pub fn to_nice_json(v: &Value, indent: usize) -> String {
    let j = sort_json(value_to_json(v));
    let mut out = String::new();
    write_py_json(&mut out, &j, Some(indent), 0);
    out
}

fn write_py_json(out: &mut String, j: &serde_json::Value, indent: Option<usize>, level: usize) {
    use serde_json::Value as J;
    let nl = |out: &mut String, lvl: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * lvl));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match j {
        J::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, level + 1);
                write_py_json(out, x, indent, level + 1);
            }
            nl(out, level);
            out.push(']');
        }
        J::Object(o) if !o.is_empty() => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, level + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                write_py_json(out, x, indent, level + 1);
            }
            nl(out, level);
            out.push('}');
        }
        J::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e16 {
                let _ = write!(out, "{f:.1}");
            } else {
                let _ = write!(out, "{f}");
            }
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

// ---- YAML output ----

/// The `yaml.dump` options `to_yaml` and `to_nice_yaml` pass on, as PyYAML
/// reads them.
#[derive(Clone, Debug)]
pub struct YamlOptions {
    /// Spaces per nesting level (`indent`).
    pub indent: usize,
    /// `default_flow_style`: `None` writes collections of scalars in flow
    /// style, `Some(false)` nothing, `Some(true)` everything.
    pub flow: Option<bool>,
    /// `default_style`: every scalar quoted (`'`, `"`) or a block (`|`, `>`),
    /// non-strings tagged `!`.
    pub scalar_style: Option<char>,
    /// `canonical`: explicit tags and flow collections throughout.
    pub canonical: bool,
    /// `explicit_start` (`---`) and `explicit_end` (`...`).
    pub explicit_start: bool,
    pub explicit_end: bool,
}

impl YamlOptions {
    /// `to_yaml`'s defaults.
    pub fn terse() -> Self {
        YamlOptions {
            indent: 2,
            flow: None,
            scalar_style: None,
            canonical: false,
            explicit_start: false,
            explicit_end: false,
        }
    }

    /// `to_nice_yaml`'s defaults.
    pub fn nice() -> Self {
        YamlOptions {
            indent: 4,
            flow: Some(false),
            ..Self::terse()
        }
    }
}

/// `to_yaml`: keys sorted; collections that hold no collections are written
/// in flow style (PyYAML's `default_flow_style=None`), as Ansible does.
pub fn to_yaml(v: &Value) -> String {
    to_yaml_with(v, &YamlOptions::terse())
}

/// `to_nice_yaml`: block style everywhere, keys sorted, indent 4.
pub fn to_nice_yaml(v: &Value) -> String {
    to_yaml_with(v, &YamlOptions::nice())
}

/// `yaml.dump(v, **options)` with keys sorted, as PyYAML writes it.
pub fn to_yaml_with(v: &Value, o: &YamlOptions) -> String {
    let j = sort_json(value_to_json(v));
    let mut out = String::new();
    if o.canonical {
        out.push_str("---\n");
        yaml_canonical(&mut out, &j, 0);
        out.push('\n');
        if o.explicit_end {
            out.push_str("...\n");
        }
        return out;
    }
    if o.explicit_start {
        out.push_str("--- ");
    }
    let mut w = YamlWriter {
        out: &mut out,
        o,
        open_ended: false,
    };
    if o.flow == Some(true) {
        let mut s = String::new();
        yaml_flow(&mut s, &j);
        w.out.push_str(&s);
        w.out.push('\n');
    } else {
        // After `--- ` a block collection starts on the next line; a scalar
        // or a flow collection stays on it.
        if o.explicit_start && is_coll_json(&j) && !w.flow_leaf(&j) {
            w.out.pop();
            w.out.push('\n');
        }
        w.node(&j, 0, Ctx::Top);
    }
    let open_ended = w.open_ended;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    if o.explicit_end || open_ended {
        out.push_str("...\n");
    }
    out
}

fn is_coll_json(j: &serde_json::Value) -> bool {
    matches!(j, serde_json::Value::Array(a) if !a.is_empty())
        || matches!(j, serde_json::Value::Object(m) if !m.is_empty())
}

/// PyYAML's canonical form: every node tagged, scalars double-quoted,
/// collections in flow style one entry a line.
fn yaml_canonical(out: &mut String, j: &serde_json::Value, level: usize) {
    use serde_json::Value as J;
    let pad = " ".repeat(level + 2);
    match j {
        J::Object(o) if o.is_empty() => out.push_str("!!map {}"),
        J::Array(a) if a.is_empty() => out.push_str("!!seq []"),
        J::Object(o) => {
            out.push_str("!!map {");
            for (k, x) in o {
                out.push('\n');
                out.push_str(&pad);
                out.push_str("? ");
                yaml_canonical(out, &J::String(k.clone()), level + 2);
                out.push('\n');
                out.push_str(&pad);
                out.push_str(": ");
                yaml_canonical(out, x, level + 2);
                out.push(',');
            }
            out.push('\n');
            out.push_str(&" ".repeat(level));
            out.push('}');
        }
        J::Array(a) => {
            out.push_str("!!seq [");
            for x in a {
                out.push('\n');
                out.push_str(&pad);
                yaml_canonical(out, x, level + 2);
                out.push(',');
            }
            out.push('\n');
            out.push_str(&" ".repeat(level));
            out.push(']');
        }
        scalar => {
            let (tag, text) = scalar_tag_text(scalar);
            out.push_str(if tag.is_empty() {
                "!!str"
            } else {
                tag.trim_end()
            });
            out.push(' ');
            out.push_str(&yaml_double_quoted(&text));
        }
    }
}

/// A scalar's explicit tag (`!!int ` with its space; none for strings) and
/// its text, for the forms that write non-strings tagged.
fn scalar_tag_text(j: &serde_json::Value) -> (&'static str, String) {
    use serde_json::Value as J;
    match j {
        J::Null => ("!!null ", "null".into()),
        J::Bool(b) => ("!!bool ", b.to_string()),
        J::Number(n) if n.is_f64() => {
            let mut s = String::new();
            write_py_json(&mut s, j, None, 0);
            ("!!float ", s)
        }
        J::Number(n) => ("!!int ", n.to_string()),
        J::String(s) => ("", s.clone()),
        _ => ("", String::new()),
    }
}

/// A double-quoted YAML scalar with PyYAML's escapes.
fn yaml_double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Top,
    MapValue,
    SeqItem,
}

fn is_leaf_collection(j: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match j {
        J::Array(a) => a.iter().all(|x| !matches!(x, J::Array(_) | J::Object(_))),
        J::Object(o) => o.values().all(|x| !matches!(x, J::Array(_) | J::Object(_))),
        _ => false,
    }
}

fn yaml_flow(out: &mut String, j: &serde_json::Value) {
    use serde_json::Value as J;
    match j {
        J::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                yaml_flow(out, x);
            }
            out.push(']');
        }
        J::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                yaml_scalar(out, &J::String(k.clone()), true);
                out.push_str(": ");
                yaml_flow(out, x);
            }
            out.push('}');
        }
        other => yaml_scalar(out, other, true),
    }
}

/// The block-style writer: the options, and whether the text written last
/// was a `|+` block, which PyYAML ends the document after with `...`.
struct YamlWriter<'a> {
    out: &'a mut String,
    o: &'a YamlOptions,
    open_ended: bool,
}

impl YamlWriter<'_> {
    /// Collections of scalars go in flow style under `default_flow_style:
    /// None`, unless `default_style` gives their scalars a style of their
    /// own (PyYAML then keeps them in block style).
    fn flow_leaf(&self, j: &serde_json::Value) -> bool {
        self.o.flow.is_none() && self.o.scalar_style.is_none() && is_leaf_collection(j)
    }

    /// A scalar, or a key (`key`), in the configured style; `col` is where
    /// a block scalar's lines start.
    fn scalar(&mut self, out: &mut String, j: &serde_json::Value, key: bool, col: usize) {
        self.open_ended = false;
        let Some(style) = self.o.scalar_style else {
            yaml_scalar(out, j, false);
            return;
        };
        // Ansible's dumper marks a styled non-string with the non-specific
        // tag `!` (plain PyYAML would write `!!int` and the like).
        let (tag, text) = scalar_tag_text(j);
        if !tag.is_empty() {
            out.push_str("! ");
        }
        let block = matches!(style, '|' | '>');
        // A key cannot be a block scalar; PyYAML double-quotes it, as it does
        // any text a block cannot hold.
        let fits_block = !text.is_empty()
            && !text.chars().any(|c| (c as u32) < 0x20 && c != '\n')
            && !text.split('\n').any(|l| l.ends_with(' '));
        if block && !key && fits_block {
            self.block_scalar(out, &text, style, col);
        } else if style == '\'' && !text.contains('\n') {
            out.push('\'');
            out.push_str(&text.replace('\'', "''"));
            out.push('\'');
        } else {
            out.push_str(&yaml_double_quoted(&text));
        }
    }

    /// `|` or `>` with its chomping indicator; the caller ends the last line.
    fn block_scalar(&mut self, out: &mut String, text: &str, style: char, col: usize) {
        let body = text.trim_end_matches('\n');
        let trailing = text.len() - body.len();
        out.push(style);
        if body.starts_with(' ') || body.starts_with('\n') {
            let _ = write!(out, "{}", self.o.indent);
        }
        out.push(match trailing {
            0 => '-',
            1 => ' ',
            _ => '+',
        });
        if out.ends_with(' ') {
            out.pop();
        }
        let pad = " ".repeat(col);
        for (i, line) in body.split('\n').enumerate() {
            // In a folded block a single line break is written as an empty
            // line (a lone break would read back as a space).
            if style == '>' && i > 0 {
                out.push('\n');
            }
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&pad);
                out.push_str(line);
            }
        }
        for _ in 1..trailing {
            out.push('\n');
        }
        self.open_ended = trailing > 1;
    }

    /// Writes `j` whose first line continues the current line (after `key:`
    /// or `- `); `level` is the indentation of the enclosing block.
    fn node(&mut self, j: &serde_json::Value, level: usize, ctx: Ctx) {
        use serde_json::Value as J;
        let indent = self.o.indent;
        let empty =
            matches!(j, J::Array(a) if a.is_empty()) || matches!(j, J::Object(o) if o.is_empty());
        let is_coll = matches!(j, J::Array(_) | J::Object(_));
        if !is_coll || empty || self.flow_leaf(j) {
            if ctx == Ctx::MapValue {
                self.out.push(' ');
            }
            let mut s = String::new();
            if is_coll {
                yaml_flow(&mut s, j);
                self.open_ended = false;
            } else {
                let col = match ctx {
                    Ctx::MapValue => level + indent,
                    Ctx::SeqItem => level,
                    Ctx::Top => indent,
                };
                self.scalar(&mut s, j, false, col);
            }
            self.out.push_str(&s);
            self.out.push('\n');
            return;
        }
        match j {
            J::Object(o) => {
                // In a sequence item the first key shares the `- ` line.
                let child_level = match ctx {
                    Ctx::Top => 0,
                    Ctx::MapValue => level + indent,
                    Ctx::SeqItem => level,
                };
                if ctx == Ctx::MapValue {
                    self.out.push('\n');
                }
                for (i, (k, x)) in o.iter().enumerate() {
                    if !(ctx == Ctx::SeqItem && i == 0) {
                        self.out.push_str(&" ".repeat(child_level));
                    }
                    let mut s = String::new();
                    self.scalar(&mut s, &J::String(k.clone()), true, 0);
                    self.out.push_str(&s);
                    self.out.push(':');
                    self.node(x, child_level, Ctx::MapValue);
                }
            }
            J::Array(a) => {
                // PyYAML does not indent a sequence under a mapping key.
                if ctx == Ctx::MapValue {
                    self.out.push('\n');
                }
                for (i, x) in a.iter().enumerate() {
                    if !(ctx == Ctx::SeqItem && i == 0) {
                        self.out.push_str(&" ".repeat(level));
                    }
                    self.out.push('-');
                    // PyYAML pads to the indent only before a nested block.
                    let nested_block = match x {
                        J::Object(o) => !(o.is_empty() || self.flow_leaf(x)),
                        J::Array(a) => !(a.is_empty() || self.flow_leaf(x)),
                        _ => false,
                    };
                    self.out
                        .push_str(&" ".repeat(if nested_block { indent - 1 } else { 1 }));
                    self.node(x, level + indent, Ctx::SeqItem);
                }
            }
            _ => unreachable!("scalars handled above"),
        }
    }
}

fn yaml_scalar(out: &mut String, j: &serde_json::Value, in_flow: bool) {
    use serde_json::Value as J;
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(_) => {
            let mut s = String::new();
            write_py_json(&mut s, j, None, 0);
            out.push_str(&s);
        }
        J::String(s) => {
            if s.contains('\n') || s.chars().any(|c| (c as u32) < 0x20 && c != '\t') {
                out.push_str(&serde_json::to_string(s).unwrap_or_default());
            } else if needs_quotes(s, in_flow) {
                out.push('\'');
                out.push_str(&s.replace('\'', "''"));
                out.push('\'');
            } else {
                out.push_str(s);
            }
        }
        other => yaml_flow(out, other),
    }
}

fn needs_quotes(s: &str, in_flow: bool) -> bool {
    if s.is_empty() || s != s.trim() {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off"
    ) {
        return true;
    }
    if s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o") {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return true;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return true;
    }
    in_flow && s.contains(|c| ",[]{}".contains(c))
}

/// For filters and tests that take any value: an undefined one fails as
/// using it would (ansible-core passes undefined values only to `default`,
/// `mandatory` and the `defined`/`undefined` tests).
pub(crate) fn reject_undefined(v: &Value) -> Result<(), minijinja::Error> {
    if v.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            super::error::USED_UNDEFINED,
        ));
    }
    Ok(())
}

/// Python's type name, as `type_debug` shows it.
pub(crate) fn python_type_name(v: &Value) -> &'static str {
    match v.kind() {
        ValueKind::Undefined => "AnsibleUndefined",
        ValueKind::None => "NoneType",
        ValueKind::Bool => "bool",
        ValueKind::Number => {
            if v.is_integer() {
                "int"
            } else {
                "float"
            }
        }
        ValueKind::String => "str",
        ValueKind::Bytes => "bytes",
        ValueKind::Seq | ValueKind::Iterable => "list",
        ValueKind::Map => "dict",
        _ => "object",
    }
}

/// True when an undefined value sits inside a plain list or dict made by the
/// template (lazy objects such as `hostvars` are not walked).
pub(crate) fn contains_undefined(v: &Value) -> bool {
    if let Some(items) = v.downcast_object_ref::<Vec<Value>>() {
        return items
            .iter()
            .any(|i| i.is_undefined() || contains_undefined(i));
    }
    if let Some(map) = v.downcast_object_ref::<ValueMap>() {
        return map
            .values()
            .any(|i| i.is_undefined() || contains_undefined(i));
    }
    false
}
