//! What `keel inventory` prints, shaped exactly like `ansible-inventory`:
//! `--list` (groups with `hosts`/`children`, `_meta.hostvars`), `--graph`
//! (the `@all:` tree) and `--host` (one host's merged vars). The binary only
//! parses flags and prints these; [`to_ansible_json`] reproduces Python's
//! `json.dumps(sort_keys=True, indent=4)` byte for byte.

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use super::{Inventory, InventoryError};
use crate::diag::Diagnostic;
use crate::vars::VarMap;

/// The `--list` document for the whole inventory.
pub fn list_json(inv: &Inventory) -> Json {
    let hosts = inv.group_hosts("all");
    let available: HashSet<&str> = hosts.iter().map(String::as_str).collect();
    let mut out = Map::new();
    let mut seen = HashSet::new();
    format_group(inv, "all", &available, &mut seen, &mut out);
    let mut hostvars = Map::new();
    let order = inv.group_order();
    for h in &hosts {
        let vars = inv.host_vars_in(h, &order);
        if !vars.is_empty() {
            hostvars.insert(h.clone(), vars_json(&vars));
        }
    }
    let mut meta = Map::new();
    meta.insert("hostvars".into(), Json::Object(hostvars));
    // ansible-core 2.19 names the serialization profile in every `--list`.
    meta.insert("profile".into(), Json::String("inventory_legacy".into()));
    out.insert("_meta".into(), Json::Object(meta));
    let mut out = Json::Object(out);
    sort_keys(&mut out);
    out
}

fn format_group(
    inv: &Inventory,
    name: &str,
    available: &HashSet<&str>,
    seen: &mut HashSet<String>,
    out: &mut Map<String, Json>,
) {
    let group = &inv.groups[name];
    let mut entry = Map::new();
    if name != "all" {
        let hosts: Vec<Json> = group
            .hosts
            .iter()
            .filter(|h| available.contains(h.as_str()))
            .map(|h| Json::String(h.clone()))
            .collect();
        if !hosts.is_empty() {
            entry.insert("hosts".into(), Json::Array(hosts));
        }
    }
    let mut children = Vec::new();
    for child in &group.children {
        children.push(Json::String(child.clone()));
        if seen.insert(child.clone()) {
            format_group(inv, child, available, seen, out);
        }
    }
    if !children.is_empty() {
        entry.insert("children".into(), Json::Array(children));
    }
    if !entry.is_empty() {
        out.insert(name.to_string(), Json::Object(entry));
    }
}

/// The `--graph [GROUP]` tree (with `--vars` when `show_vars`), ending in a
/// newline. An unknown group gives an empty string; use [`try_graph`] to get
/// the error instead.
pub fn graph(inv: &Inventory, group: Option<&str>, show_vars: bool) -> String {
    try_graph(inv, group, show_vars).unwrap_or_default()
}

/// [`graph`], failing when the group does not exist (as `ansible-inventory` does).
pub fn try_graph(
    inv: &Inventory,
    group: Option<&str>,
    show_vars: bool,
) -> Result<String, InventoryError> {
    let start = group.unwrap_or("all");
    if !inv.groups.contains_key(start) {
        let d = Diagnostic::new(format!(
            "pattern must be a valid group name when using --graph: '{start}'"
        ));
        return Err(with_suggestion(d, start, inv.groups.keys()));
    }
    let mut lines = Vec::new();
    graph_group(inv, start, 0, show_vars, &mut lines);
    Ok(lines.join("\n") + "\n")
}

fn with_suggestion<'a>(
    d: Diagnostic,
    word: &str,
    names: impl Iterator<Item = &'a String>,
) -> Diagnostic {
    match crate::diag::suggest(word, names.map(String::as_str)) {
        Some(s) => d.hint(format!("did you mean '{s}'?")),
        None => d,
    }
}

fn graph_name(name: &str, depth: usize) -> String {
    if depth == 0 {
        name.to_string()
    } else {
        format!("{}--{name}", "  |".repeat(depth))
    }
}

fn graph_group(
    inv: &Inventory,
    name: &str,
    depth: usize,
    show_vars: bool,
    lines: &mut Vec<String>,
) {
    lines.push(graph_name(&format!("@{name}:"), depth));
    let group = &inv.groups[name];
    for child in &group.children {
        graph_group(inv, child, depth + 1, show_vars, lines);
    }
    if name != "all" {
        for h in &group.hosts {
            lines.push(graph_name(h, depth + 1));
            if show_vars {
                show_vars_lines(&inv.host_vars(h), depth + 2, lines);
            }
        }
    }
    if show_vars {
        show_vars_lines(&inv.group_vars(name), depth + 1, lines);
    }
}

fn show_vars_lines(vars: &VarMap, depth: usize, lines: &mut Vec<String>) {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for k in names {
        let v = serde_json::to_value(&vars[k]).unwrap_or(Json::Null);
        lines.push(graph_name(&format!("{{{k} = {}}}", python_str(&v)), depth));
    }
}

/// Python's `str()` of a value that came from JSON.
fn python_str(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => python_repr(other),
    }
}

fn python_repr(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(b) => if *b { "True" } else { "False" }.into(),
        Json::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => python_float(f)
                .replace("Infinity", "inf")
                .replace("NaN", "nan"),
            _ => n.to_string(),
        },
        Json::String(s) => {
            let q = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::from(q);
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
                    c => out.push(c),
                }
            }
            out.push(q);
            out
        }
        Json::Array(a) => format!(
            "[{}]",
            a.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Json::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Json::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The `--host HOST` document: every variable of the host, merged. An
/// unknown host gives `{}`; use [`try_host_json`] to get the error instead.
pub fn host_json(inv: &Inventory, host: &str) -> Json {
    try_host_json(inv, host).unwrap_or(Json::Object(Map::new()))
}

/// [`host_json`], failing when the host is not in the inventory.
pub fn try_host_json(inv: &Inventory, host: &str) -> Result<Json, InventoryError> {
    if !inv.hosts.contains_key(host) && inv.implicit_localhost(host).is_none() {
        let d = Diagnostic::new(format!("host '{host}' is not in the inventory"));
        return Err(with_suggestion(d, host, inv.hosts.keys()));
    }
    let mut vars = vars_json(&inv.host_vars(host));
    sort_keys(&mut vars);
    Ok(vars)
}

fn vars_json(vars: &VarMap) -> Json {
    let mut m = Map::new();
    for (k, v) in vars {
        // Inline vault values are listed as their ciphertext, as ansible-inventory does.
        m.insert(k.clone(), crate::vault::to_listing_json(v));
    }
    Json::Object(m)
}

/// Sorts object keys recursively, as `json.dumps(sort_keys=True)` does, in
/// place (rebuilding a 10,000-host `--list` document cost a tenth of its time).
fn sort_keys(v: &mut Json) {
    match v {
        Json::Object(m) => {
            m.sort_keys();
            m.values_mut().for_each(sort_keys);
        }
        Json::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// Python's `json.dumps(v, sort_keys=True, indent=4)`: four-space indent,
/// `": "` after keys, ASCII-only output with `\uXXXX` escapes.
pub fn to_ansible_json(v: &Json) -> String {
    let mut out = String::new();
    write_json(v, 0, &mut out);
    out
}

fn write_json(v: &Json, level: usize, out: &mut String) {
    use std::fmt::Write as _;
    let pad = |out: &mut String, n: usize| {
        for _ in 0..n {
            out.push_str("    ");
        }
    };
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                let _ = write!(out, "{i}");
            }
            (_, Some(u), _) => {
                let _ = write!(out, "{u}");
            }
            (_, _, Some(f)) => out.push_str(&python_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Json::String(s) => write_str(s, out),
        Json::Array(items) if items.is_empty() => out.push_str("[]"),
        Json::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, level + 1);
                write_json(item, level + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, level);
            out.push(']');
        }
        Json::Object(m) if m.is_empty() => out.push_str("{}"),
        Json::Object(m) => {
            let mut entries: Vec<(&String, &Json)> = m.iter().collect();
            if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push_str("{\n");
            for (i, (k, v)) in entries.iter().enumerate() {
                pad(out, level + 1);
                write_str(k, out);
                out.push_str(": ");
                write_json(v, level + 1, out);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            pad(out, level);
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    // Most strings are printable ASCII with nothing to escape.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form outside
/// 1e-4 <= |f| < 1e16.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let sci = format!("{f:e}"); // e.g. "1.5e16", "-1e-5"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("numeric exponent");
    if f == 0.0 || (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_python() {
        assert_eq!(python_float(1.5), "1.5");
        assert_eq!(python_float(1000.0), "1000.0");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(-2.5e20), "-2.5e+20");
    }

    #[test]
    fn json_like_python() {
        let v: Json = serde_json::json!({"b": [1, {}], "a": "é\n", "c": []});
        assert_eq!(to_ansible_json(&v), "{\n    \"a\": \"\\u00e9\\n\",\n    \"b\": [\n        1,\n        {}\n    ],\n    \"c\": []\n}");
    }
}
