//! Ansible's Jinja tests (`x is succeeded`, `v is version('2.0', '>=')`...),
//! registered on top of minijinja's builtin ones (`defined`, `none`, `string`,
//! `mapping`, `in`...), whose semantics already match.
use std::cmp::Ordering;
use std::path::Path;

use minijinja::value::Kwargs;
use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Value};

use super::native::{self, is_truthy, to_bool};
use super::pyre;

pub(super) fn register(env: &mut Environment<'static>) {
    // ansible-core's test plugin for the trust tag its own integration tests
    // check. Keel's one trust mark is `!unsafe`: any other string may be
    // templated, which is what `TrustedAsTemplate` says.
    env.add_test(
        "ansible._protomatter.tagged_with",
        |v: &Value, tag: &str| -> Result<bool, Error> {
            match tag {
                "TrustedAsTemplate" => {
                    Ok(v.kind() == ValueKind::String && !crate::vars::is_unsafe(v))
                }
                other => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("Keel does not track the '{other}' tag"),
                )),
            }
        },
    );
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
        native::reject_undefined(v)?;
        truthy(v, kw)
    });
    env.add_test("falsy", |v: &Value, kw: Kwargs| -> Result<bool, Error> {
        native::reject_undefined(v)?;
        truthy(v, kw).map(|b| !b)
    });
    // minijinja's `none` answers false for an undefined value; ansible-core
    // fails, as with any test but `defined`/`undefined`.
    env.add_test("none", |v: &Value| -> Result<bool, Error> {
        native::reject_undefined(v)?;
        Ok(v.is_none())
    });
    env.add_test("contains", |seq: &Value, item: &Value| contains(seq, item));
    for name in ["subset", "issubset"] {
        env.add_test(name, |a: &Value, b: &Value| -> Result<bool, Error> {
            let a = items(a)?;
            let b = items(b)?;
            Ok(a.iter().all(|x| b.contains(x)))
        });
    }
    for name in ["superset", "issuperset"] {
        env.add_test(name, |a: &Value, b: &Value| -> Result<bool, Error> {
            let a = items(a)?;
            let b = items(b)?;
            Ok(b.iter().all(|x| a.contains(x)))
        });
    }
    // Path tests run on the controller, relative paths from its working
    // directory, as Python's `os.path` functions do.
    for name in ["file", "is_file"] {
        env.add_test(name, |p: &str| Path::new(p).is_file());
    }
    for name in ["directory", "is_dir"] {
        env.add_test(name, |p: &str| Path::new(p).is_dir());
    }
    for name in ["link", "is_link"] {
        env.add_test(name, |p: &str| Path::new(p).is_symlink());
    }
    // `exists` follows links (a dangling link does not exist);
    // `link_exists` does not.
    env.add_test("exists", |p: &str| Path::new(p).exists());
    env.add_test("link_exists", |p: &str| {
        std::fs::symlink_metadata(p).is_ok()
    });
    // Vault tests; the vault module knows what a vaulted value is.
    env.add_test("vault_encrypted", |v: &Value| {
        crate::vault::is_vaulted_value(v)
    });
    env.add_test("vaulted_file", |p: &str| {
        crate::vault::is_vaulted_file(Path::new(p)).map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("Cannot test if the file '{p}' is a vault: {e}"),
            )
        })
    });
    for name in ["abs", "is_abs"] {
        env.add_test(name, |p: &str| Path::new(p).is_absolute());
    }
    for name in ["same_file", "is_same_file"] {
        env.add_test(name, same_file);
    }
    for name in ["mount", "is_mount"] {
        env.add_test(name, |p: &str| is_mount(p));
    }
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
    for name in ["nan", "isnan"] {
        env.add_test(name, |v: &Value| {
            v.kind() == ValueKind::Number && f64::try_from(v.clone()).is_ok_and(f64::is_nan)
        });
    }
    env.add_test("reachable", |v: &Value| -> Result<bool, Error> {
        Ok(!result_flag(v, "unreachable", "unreachable")?.unwrap_or(false))
    });
    env.add_test("unreachable", |v: &Value| -> Result<bool, Error> {
        Ok(result_flag(v, "unreachable", "unreachable")?.unwrap_or(false))
    });
    env.add_test("timedout", |v: &Value| -> Result<bool, Error> {
        result_flag(v, "timedout", "timedout")?;
        let t = v.get_attr("timedout").unwrap_or(Value::UNDEFINED);
        Ok(t.is_true()
            && t.get_attr("period")
                .is_ok_and(|p| !p.is_undefined() && p.is_true()))
    });
    env.add_test("started", |v: &Value| async_flag(v, "started"));
    env.add_test("finished", |v: &Value| async_flag(v, "finished"));
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
/// `changed`: the result's own flag or, for a loop's result without one,
/// whether any item changed.
fn changed(v: &Value) -> Result<bool, Error> {
    if let Some(c) = result_flag(v, "changed", "changed")? {
        return Ok(c);
    }
    let results = v.get_attr("results").unwrap_or(Value::UNDEFINED);
    if results.kind() != ValueKind::Seq {
        return Ok(false);
    }
    let items: Vec<Value> = results.try_iter()?.collect();
    if items.first().is_none_or(|f| f.kind() != ValueKind::Map) {
        return Ok(false);
    }
    Ok(items
        .iter()
        .any(|r| r.get_attr("changed").is_ok_and(|c| is_truthy(&c))))
}

/// `started`/`finished` of an async result; a non-async result counts as
/// both, with Ansible's warning.
fn async_flag(v: &Value, key: &str) -> Result<bool, Error> {
    match result_flag(v, key, key)? {
        Some(b) => Ok(b),
        None => {
            tracing::warn!(
                "The '{key}' test expects an async task, but a non-async task was tested"
            );
            Ok(true)
        }
    }
}

/// `same_file`: both paths name the same file (Python's `os.path.samefile`,
/// which fails when either is missing).
fn same_file(a: &str, b: &str) -> Result<bool, Error> {
    let meta = |p: &str| {
        std::fs::metadata(p).map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("same_file: cannot stat '{p}': {e}"),
            )
        })
    };
    use std::os::unix::fs::MetadataExt;
    let (x, y) = (meta(a)?, meta(b)?);
    Ok(x.dev() == y.dev() && x.ino() == y.ino())
}

/// Python's `os.path.ismount`: not a link, and on another device than its
/// parent or the same inode as it (the root).
fn is_mount(p: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return false;
    };
    if m.file_type().is_symlink() {
        return false;
    }
    let Ok(parent) = std::fs::metadata(Path::new(p).join("..")) else {
        return false;
    };
    m.dev() != parent.dev() || m.ino() == parent.ino()
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
        Mode::Full => format!(r"\A(?:{pat})\Z"),
        Mode::Search => pat.to_string(),
    };
    let re = pyre::compile(&pat, ignorecase, multiline)?;
    pyre::is_match(&re, &s)
}

fn version_err(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// `version`/`version_compare`, with Ansible's argument checks and messages.
fn version_test(
    v: &Value,
    other: &Value,
    op: Option<&str>,
    strict: Option<Value>,
    kw: Kwargs,
) -> Result<bool, Error> {
    let op = match op {
        Some(op) => Some(op.to_string()),
        None => kw.get::<Option<String>>("operator")?,
    }
    .unwrap_or_else(|| "eq".to_string());
    let strict = match strict {
        Some(s) => Some(s),
        None => kw.get::<Option<Value>>("strict")?,
    }
    .filter(|s| !s.is_none());
    let vtype = kw.get::<Option<String>>("version_type")?;
    kw.assert_all_used()?;
    if strict.is_some() && vtype.is_some() {
        return Err(version_err(
            "Cannot specify both 'strict' and 'version_type'".into(),
        ));
    }
    if !v.is_true() {
        return Err(version_err("Input version value cannot be empty".into()));
    }
    if !other.is_true() {
        return Err(version_err(
            "Version parameter to compare against cannot be empty".into(),
        ));
    }
    let kind = if strict.as_ref().is_some_and(Value::is_true) {
        "strict"
    } else {
        match vtype.as_deref() {
            None | Some("loose") => "loose",
            Some(t @ ("strict" | "semver" | "semantic" | "pep440")) => t,
            Some(t) => {
                return Err(version_err(format!(
                    "Invalid version type ({t}). Must be one of 'loose', 'strict', 'semver', 'semantic', 'pep440'"
                )))
            }
        }
    };
    let op = match op.as_str() {
        "==" | "=" | "eq" => "eq",
        "<" | "lt" => "lt",
        "<=" | "le" => "le",
        ">" | "gt" => "gt",
        ">=" | "ge" => "ge",
        "!=" | "<>" | "ne" => "ne",
        other => {
            return Err(version_err(format!(
                "Invalid operator type ({other}). Must be one of '==', '=', 'eq', '<', 'lt', '<=', 'le', '>', 'gt', '>=', 'ge', '!=', '<>', 'ne'"
            )))
        }
    };
    let (a, b) = (v.to_string(), other.to_string());
    let failed = |e: Error| {
        version_err(format!(
            "Version comparison failed: {}",
            e.detail().unwrap_or_default()
        ))
    };
    let ord = match kind {
        "semver" | "semantic" => compare_semver(&a, &b).map_err(failed)?,
        "pep440" => compare_pep440(&a, &b).map_err(failed)?,
        "strict" => {
            check_strict(&a).map_err(failed)?;
            check_strict(&b).map_err(failed)?;
            compare_loose(&a, &b)
        }
        _ => compare_loose(&a, &b),
    };
    Ok(match op {
        "lt" => ord == Ordering::Less,
        "le" => ord != Ordering::Greater,
        "gt" => ord == Ordering::Greater,
        "ge" => ord != Ordering::Less,
        "eq" => ord == Ordering::Equal,
        _ => ord != Ordering::Equal,
    })
}

/// A PEP 440 comparison of the common forms: release numbers, then a
/// pre-release (`a`, `b`, `rc`) before the final release, `.postN` after it
/// and `.devN` before everything else of the same release.
fn compare_pep440(a: &str, b: &str) -> Result<Ordering, Error> {
    let re = regex::Regex::new(
        r"(?i)^\s*v?(\d+(?:\.\d+)*)(?:[-_.]?(a|alpha|b|beta|c|rc|pre|preview)[-_.]?(\d*))?(?:[-_.]?(?:post|rev|r)[-_.]?(\d*))?(?:[-_.]?dev[-_.]?(\d*))?(?:\+[a-z0-9.]+)?\s*$",
    )
    .expect("valid regex");
    // Release numbers, (pre-release rank, number), post number, dev number.
    type Key = (Vec<u64>, (i64, u64), i64, i64);
    let key = |s: &str| -> Result<Key, Error> {
        let c = re
            .captures(s)
            .ok_or_else(|| version_err(format!("Invalid version: '{s}'")))?;
        let mut rel: Vec<u64> = c[1].split('.').filter_map(|x| x.parse().ok()).collect();
        while rel.len() > 1 && rel.last() == Some(&0) {
            rel.pop();
        }
        let num = |i: usize| c.get(i).map(|m| m.as_str().parse::<u64>().unwrap_or(0));
        let pre = match c.get(2).map(|m| m.as_str().to_ascii_lowercase()) {
            Some(p) => {
                let rank = match p.as_str() {
                    "a" | "alpha" => 0,
                    "b" | "beta" => 1,
                    _ => 2,
                };
                (rank, num(3).unwrap_or(0))
            }
            // A dev release without a pre-release sorts before all of them.
            None if c.get(5).is_some() && c.get(4).is_none() => (-1, 0),
            None => (3, 0),
        };
        let post = num(4).map_or(-1, |n| n as i64);
        let dev = num(5).map_or(i64::MAX, |n| n as i64);
        Ok((rel, pre, post, dev))
    };
    Ok(key(a)?.cmp(&key(b)?))
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
