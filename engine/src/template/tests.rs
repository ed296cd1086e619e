//! Ansible's Jinja tests (`x is succeeded`, `v is version('2.0', '>=')`...),
//! registered on top of minijinja's builtin ones (`defined`, `none`, `string`,
//! `mapping`, `in`...), whose semantics already match.
use std::cmp::Ordering;
use std::path::Path;

use minijinja::value::Kwargs;
use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Value};

use super::filters::build_regex;
use super::native::to_bool;

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_test("succeeded", succeeded);
    env.add_test("success", succeeded);
    env.add_test("successful", succeeded);
    env.add_test("failed", failed);
    env.add_test("failure", failed);
    env.add_test("changed", changed);
    env.add_test("change", changed);
    env.add_test("skipped", skipped);
    env.add_test("skip", skipped);
    env.add_test("match", |v: &Value, pat: &str, kw: Kwargs| {
        regex_test(v, pat, kw, Mode::Match)
    });
    env.add_test("search", |v: &Value, pat: &str, kw: Kwargs| {
        regex_test(v, pat, kw, Mode::Search)
    });
    env.add_test("regex", |v: &Value, pat: &str, kw: Kwargs| {
        let mode = match kw.get::<Option<&str>>("match_type")? {
            Some("match") => Mode::Match,
            Some("fullmatch") => Mode::Full,
            _ => Mode::Search,
        };
        regex_test(v, pat, kw, mode)
    });
    env.add_test("version", version_test);
    env.add_test("version_compare", version_test);
    env.add_test("truthy", |v: &Value, kw: Kwargs| -> Result<bool, Error> {
        truthy(v, kw)
    });
    env.add_test("falsy", |v: &Value, kw: Kwargs| -> Result<bool, Error> {
        truthy(v, kw).map(|b| !b)
    });
    env.add_test("contains", |seq: &Value, item: &Value| contains(seq, item));
    env.add_test("subset", |a: &Value, b: &Value| -> Result<bool, Error> {
        let a = items(a)?;
        let b = items(b)?;
        Ok(a.iter().all(|x| b.contains(x)))
    });
    env.add_test("superset", |a: &Value, b: &Value| -> Result<bool, Error> {
        let a = items(a)?;
        let b = items(b)?;
        Ok(b.iter().all(|x| a.contains(x)))
    });
    env.add_test("file", |p: &str| Path::new(p).is_file());
    env.add_test("directory", |p: &str| Path::new(p).is_dir());
    env.add_test("link", |p: &str| Path::new(p).is_symlink());
    env.add_test("exists", |p: &str| {
        Path::new(p).exists() || Path::new(p).is_symlink()
    });
    env.add_test("abs", |p: &str| Path::new(p).is_absolute());
    env.add_test("same_file", |a: &str, b: &str| {
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    });
    env.add_test("any", |v: &Value| -> Result<bool, Error> {
        Ok(items(v)?.iter().any(Value::is_true))
    });
    env.add_test("all", |v: &Value| -> Result<bool, Error> {
        Ok(items(v)?.iter().all(Value::is_true))
    });
    // Jinja2 (and so Ansible) counts strings and dicts as sequences.
    env.add_test("sequence", |v: &Value| {
        matches!(
            v.kind(),
            ValueKind::String | ValueKind::Seq | ValueKind::Map
        )
    });
    env.add_test("iterable", |v: &Value| {
        matches!(
            v.kind(),
            ValueKind::String | ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
        )
    });
    env.add_test("nan", |v: &Value| {
        f64::try_from(v.clone()).is_ok_and(f64::is_nan)
    });
}

fn items(v: &Value) -> Result<Vec<Value>, Error> {
    Ok(v.try_iter()?.collect())
}

/// A task result flag (`failed`, `changed`...); results must be mappings.
fn result_flag(v: &Value, key: &str, test: &str) -> Result<Option<bool>, Error> {
    if v.kind() != ValueKind::Map {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "the '{test}' test expects a dictionary (a registered task result), got {}",
                v.kind()
            ),
        ));
    }
    let f = v.get_attr(key).unwrap_or(Value::UNDEFINED);
    Ok(if f.is_undefined() {
        None
    } else {
        Some(to_bool(&f))
    })
}

fn failed(v: &Value) -> Result<bool, Error> {
    Ok(result_flag(v, "failed", "failed")?.unwrap_or(false))
}
fn succeeded(v: &Value) -> Result<bool, Error> {
    failed(v).map(|f| !f)
}
fn changed(v: &Value) -> Result<bool, Error> {
    Ok(result_flag(v, "changed", "changed")?.unwrap_or(false))
}
fn skipped(v: &Value) -> Result<bool, Error> {
    Ok(result_flag(v, "skipped", "skipped")?.unwrap_or(false))
}

fn truthy(v: &Value, kw: Kwargs) -> Result<bool, Error> {
    let convert = kw.get::<Option<bool>>("convert_bool")?.unwrap_or(false);
    kw.assert_all_used()?;
    if convert
        && matches!(
            v.kind(),
            ValueKind::String | ValueKind::Number | ValueKind::Bool
        )
    {
        let s = v.to_string().to_ascii_lowercase();
        if matches!(s.as_str(), "yes" | "on" | "1" | "true" | "y" | "t") {
            return Ok(true);
        }
        if matches!(s.as_str(), "no" | "off" | "0" | "false" | "n" | "f") {
            return Ok(false);
        }
    }
    Ok(v.is_true())
}

fn contains(seq: &Value, item: &Value) -> Result<bool, Error> {
    match seq.kind() {
        ValueKind::String => Ok(seq
            .as_str()
            .unwrap_or_default()
            .contains(&*item.to_string())),
        ValueKind::Map => Ok(seq.get_item(item).is_ok_and(|v| !v.is_undefined())),
        _ => Ok(seq.try_iter()?.any(|x| &x == item)),
    }
}

enum Mode {
    Match,
    Search,
    Full,
}

fn regex_test(v: &Value, pat: &str, kw: Kwargs, mode: Mode) -> Result<bool, Error> {
    let ignorecase = kw.get::<Option<bool>>("ignorecase")?.unwrap_or(false);
    let multiline = kw.get::<Option<bool>>("multiline")?.unwrap_or(false);
    let _ = kw.get::<Option<&str>>("match_type");
    kw.assert_all_used()?;
    let s = v.to_string();
    let pat = match mode {
        Mode::Match => format!(r"\A(?:{pat})"),
        Mode::Full => format!(r"\A(?:{pat})\z"),
        Mode::Search => pat.to_string(),
    };
    let re = build_regex(&pat, ignorecase, multiline)?;
    Ok(re.is_match(&s))
}

fn version_test(v: &Value, other: &Value, op: Option<&str>, kw: Kwargs) -> Result<bool, Error> {
    let op = match op {
        Some(op) => Some(op.to_string()),
        None => kw.get::<Option<String>>("operator")?,
    }
    .unwrap_or_else(|| "eq".to_string());
    let strict = kw.get::<Option<bool>>("strict")?.unwrap_or(false);
    let vtype = kw.get::<Option<String>>("version_type")?;
    kw.assert_all_used()?;
    let (a, b) = (v.to_string(), other.to_string());
    let strict = strict || vtype.as_deref() == Some("strict");
    let ord = if vtype.as_deref() == Some("semver") || vtype.as_deref() == Some("semantic") {
        compare_semver(&a, &b)?
    } else {
        if strict {
            check_strict(&a)?;
            check_strict(&b)?;
        }
        compare_loose(&a, &b)
    };
    Ok(match op.as_str() {
        "<" | "lt" => ord == Ordering::Less,
        "<=" | "le" => ord != Ordering::Greater,
        ">" | "gt" => ord == Ordering::Greater,
        ">=" | "ge" => ord != Ordering::Less,
        "==" | "=" | "eq" => ord == Ordering::Equal,
        "!=" | "<>" | "ne" => ord != Ordering::Equal,
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("invalid version comparison operator '{other}'"),
            ))
        }
    })
}

fn check_strict(s: &str) -> Result<(), Error> {
    let re = regex::Regex::new(r"^\d+\.\d+(\.\d+)?([ab](\d+))?$").expect("valid regex");
    if re.is_match(s) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("invalid version number '{s}'"),
        ))
    }
}

#[derive(PartialEq, Eq, Debug)]
enum Part {
    Num(u64),
    Word(String),
}

/// Python's `LooseVersion` split: runs of digits and of letters, `.` dropped.
fn loose_parts(s: &str) -> Vec<Part> {
    let re = regex::Regex::new(r"\d+|[a-zA-Z]+").expect("valid regex");
    re.find_iter(s)
        .map(|m| match m.as_str().parse::<u64>() {
            Ok(n) => Part::Num(n),
            Err(_) => Part::Word(m.as_str().to_string()),
        })
        .collect()
}

pub(super) fn compare_loose(a: &str, b: &str) -> Ordering {
    let (pa, pb) = (loose_parts(a), loose_parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x, y) {
            (Part::Num(x), Part::Num(y)) => x.cmp(y),
            (Part::Word(x), Part::Word(y)) => x.cmp(y),
            // Python 3 cannot order int and str; a number sorting after a
            // word (1.0 > 1.0rc1's "rc") is the useful reading.
            (Part::Num(_), Part::Word(_)) => Ordering::Greater,
            (Part::Word(_), Part::Num(_)) => Ordering::Less,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

fn compare_semver(a: &str, b: &str) -> Result<Ordering, Error> {
    let parse = |s: &str| -> Result<(Vec<u64>, Option<String>), Error> {
        let s = s.trim_start_matches('v');
        let s = s.split('+').next().unwrap_or_default();
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p.to_string())),
            None => (s, None),
        };
        let nums: Result<Vec<u64>, _> = core.split('.').map(str::parse).collect();
        match nums {
            Ok(n) if n.len() == 3 => Ok((n, pre)),
            _ => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("invalid semantic version '{s}'"),
            )),
        }
    };
    let (na, pa) = parse(a)?;
    let (nb, pb) = parse(b)?;
    Ok(na.cmp(&nb).then_with(|| match (pa, pb) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => compare_loose(&x, &y),
    }))
}
