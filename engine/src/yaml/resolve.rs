//! YAML 1.1 plain-scalar resolution: what an unquoted scalar means.
//!
//! Ansible reads YAML through PyYAML, whose implicit resolvers implement YAML
//! 1.1. This file mirrors those resolvers rule for rule, so `yes` is a boolean,
//! `0644` is octal 420, `1:30` is 90, `1e3` stays a string (PyYAML's float
//! pattern needs a dot). One deliberate extension: `0o17` is octal 15 (YAML
//! 1.2 syntax, which PyYAML leaves a string), because admins write modes that
//! way and our spec asks for it. Timestamps stay strings. The loader (`load.rs`) calls [`resolve_plain`]
//! for every untagged plain scalar, and the `construct_*` helpers for the
//! explicit `!!int`/`!!float`/`!!bool` tags.

use std::sync::LazyLock;

use regex::Regex;

use super::node::{NodeKind, ScalarStyle};

/// PyYAML's `tag:yaml.org,2002:int` pattern.
static INT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0o[0-7_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
    )
    .expect("int pattern")
});

/// PyYAML's `tag:yaml.org,2002:float` pattern.
static FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    )
    .expect("float pattern")
});

/// What an unquoted scalar means under YAML 1.1.
pub fn resolve_plain(s: &str) -> NodeKind {
    let plain = || NodeKind::Str {
        value: s.to_string(),
        style: ScalarStyle::Plain,
        unsafe_: false,
    };
    // Like PyYAML, only scalars whose first character can start a typed value
    // are matched against the patterns; everything else is a string at once.
    let Some(first) = s.chars().next() else {
        return NodeKind::Null;
    };
    match first {
        'y' | 'Y' | 'n' | 'N' | 't' | 'T' | 'f' | 'F' | 'o' | 'O' | '~' => {
            if let Some(b) = bool_word(s) {
                return NodeKind::Bool(b);
            }
            if matches!(s, "~" | "null" | "Null" | "NULL") {
                return NodeKind::Null;
            }
            plain()
        }
        '-' | '+' | '.' | '0'..='9' => {
            if FLOAT.is_match(s) {
                return construct_float(s)
                    .map(NodeKind::Float)
                    .unwrap_or_else(plain);
            }
            if first != '.' && INT.is_match(s) {
                // An integer too large for i64 keeps its digits as a string, which
                // renders exactly as Python's big integer would.
                return construct_int(s).map(NodeKind::Int).unwrap_or_else(plain);
            }
            plain()
        }
        _ => plain(),
    }
}

/// The YAML 1.1 boolean words, in the case forms PyYAML accepts implicitly.
fn bool_word(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// `!!bool`: any case of the YAML 1.1 words (PyYAML lowercases first).
pub(crate) fn construct_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Some(true),
        "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Builds an integer the way PyYAML's `construct_yaml_int` does: underscores
/// dropped, `0b` binary, `0x` hex, a leading `0` octal, `a:b:c` base 60.
/// `None` when the text is not a valid integer or does not fit in an i64.
pub(crate) fn construct_int(s: &str) -> Option<i64> {
    let cleaned: String = s.chars().filter(|&c| c != '_').collect();
    let (negative, digits) = match cleaned.as_bytes().first()? {
        b'-' => (true, &cleaned[1..]),
        b'+' => (false, &cleaned[1..]),
        _ => (false, cleaned.as_str()),
    };
    let magnitude: i128 = if digits == "0" {
        0
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i128::from_str_radix(bin, 2).ok()?
    } else if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()?
    } else if digits.starts_with('0') {
        i128::from_str_radix(digits, 8).ok()?
    } else if digits.contains(':') {
        let mut total: i128 = 0;
        for part in digits.split(':') {
            let part: i128 = part.parse().ok()?;
            total = total.checked_mul(60)?.checked_add(part)?;
        }
        total
    } else {
        digits.parse().ok()?
    };
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// Builds a float the way PyYAML's `construct_yaml_float` does.
pub(crate) fn construct_float(s: &str) -> Option<f64> {
    let cleaned: String = s
        .chars()
        .filter(|&c| c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let (sign, body) = match cleaned.as_bytes().first()? {
        b'-' => (-1.0, &cleaned[1..]),
        b'+' => (1.0, &cleaned[1..]),
        _ => (1.0, cleaned.as_str()),
    };
    let magnitude = match body {
        ".inf" => f64::INFINITY,
        ".nan" => return Some(f64::NAN),
        _ if body.contains(':') => {
            let mut total = 0.0;
            for part in body.split(':') {
                total = total * 60.0 + part.parse::<f64>().ok()?;
            }
            total
        }
        _ => body.parse::<f64>().ok()?,
    };
    Some(sign * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(s: &str) -> String {
        match resolve_plain(s) {
            NodeKind::Null => "null".into(),
            NodeKind::Bool(b) => format!("bool {b}"),
            NodeKind::Int(i) => format!("int {i}"),
            NodeKind::Float(f) => format!("float {f:?}"),
            NodeKind::Str { value, .. } => format!("str {value}"),
            _ => unreachable!(),
        }
    }

    #[test]
    fn numbers_follow_pyyaml() {
        // Expected values were produced by PyYAML 6 `yaml.safe_load`.
        let cases = [
            ("1e3", "str 1e3"),
            ("1.0e3", "str 1.0e3"),
            ("1.0e+3", "float 1000.0"),
            ("1_0", "int 10"),
            ("0b101", "int 5"),
            ("0o17", "int 15"),
            ("0x1F", "int 31"),
            ("1:30", "int 90"),
            ("-1:30:00", "int -5400"),
            ("0644", "int 420"),
            ("09", "str 09"),
            ("1.5:30", "str 1.5:30"),
            (".5", "float 0.5"),
            ("1.", "float 1.0"),
            ("+.inf", "float inf"),
            ("-.inf", "float -inf"),
            (".NaN", "float NaN"),
            (".nAn", "str .nAn"),
            ("1_0.5", "float 10.5"),
            ("190:20:30.15", "float 685230.15"),
            ("00", "int 0"),
            ("0_", "int 0"),
            ("-0", "int 0"),
            ("+12", "int 12"),
            ("0x_1", "int 1"),
            ("1:60", "str 1:60"),
            ("12345678901234567890", "str 12345678901234567890"),
            ("+", "str +"),
            ("._", "str ._"),
            ("2001-12-14", "str 2001-12-14"),
        ];
        for (input, want) in cases {
            assert_eq!(show(input), want, "input {input:?}");
        }
    }

    #[test]
    fn bools_and_nulls_follow_pyyaml() {
        for t in [
            "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
        ] {
            assert_eq!(show(t), "bool true", "{t}");
        }
        for f in [
            "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
        ] {
            assert_eq!(show(f), "bool false", "{f}");
        }
        for s in ["y", "Y", "n", "N", "yEs", "tRUE", "oN"] {
            assert_eq!(show(s), format!("str {s}"));
        }
        for n in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(show(n), "null", "{n:?}");
        }
        assert_eq!(show("nULL"), "str nULL");
    }
}
