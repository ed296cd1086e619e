//! Ansible's filters, registered on top of minijinja's builtins.
//!
//! minijinja already provides `default`/`d` (with the boolean second
//! argument), `length`/`count`, `first`, `last`, `min`, `max`, `sum` (with
//! `start=`), `map`, `select(attr)`, `reject(attr)`, `sort`, `unique`, `zip`,
//! `join`, `lower`, `upper`, `capitalize`, `trim`, `replace`, `split`, `list`,
//! `string`, `urlencode`... with Jinja2's semantics, which are Ansible's. The
//! ones here differ (`bool`, `int`, `float`) or are Ansible's own. Each is also
//! reachable as `ansible.builtin.<name>`.
use std::collections::BTreeMap;
use std::path::{Component, PathBuf};

use base64::Engine as _;
use minijinja::value::ValueKind;
use minijinja::value::{Kwargs, Rest, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, State, Value};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use regex::Regex;

use super::error::MANDATORY;
use super::native::{self, to_bool, value_from_json, value_to_json, ValueMap};
use super::pyre;
use super::render::{RenderCtx, CTX_KEY};

fn err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

macro_rules! add {
    ($env:expr, $name:literal, $f:expr) => {{
        $env.add_filter($name, $f);
        $env.add_filter(concat!("ansible.builtin.", $name), $f);
    }};
}

pub(super) fn register(env: &mut Environment<'static>) {
    // ansible-core's internal filter that its own integration tests use to
    // turn a template's result into plain data (tuples and other sequences
    // become lists) before comparing it.
    env.add_filter("ansible._protomatter.finalize", |v: &Value| finalize(v));
    env.add_filter("default", default);
    env.add_filter(
        "select",
        |state: &mut State, v: Value, test: Option<String>, args: Rest<ValueOrKwargs>| {
            undefined_or(v, |v| {
                minijinja::filters::select(state, v, test.map(Into::into), args)
            })
        },
    );
    env.add_filter(
        "reject",
        |state: &mut State, v: Value, test: Option<String>, args: Rest<ValueOrKwargs>| {
            undefined_or(v, |v| {
                minijinja::filters::reject(state, v, test.map(Into::into), args)
            })
        },
    );
    env.add_filter(
        "selectattr",
        |state: &mut State,
         v: Value,
         attr: String,
         test: Option<String>,
         args: Rest<ValueOrKwargs>| {
            undefined_or(v, |v| {
                minijinja::filters::selectattr(state, v, attr.into(), test.map(Into::into), args)
            })
        },
    );
    env.add_filter(
        "rejectattr",
        |state: &mut State,
         v: Value,
         attr: String,
         test: Option<String>,
         args: Rest<ValueOrKwargs>| {
            undefined_or(v, |v| {
                minijinja::filters::rejectattr(state, v, attr.into(), test.map(Into::into), args)
            })
        },
    );
    env.add_filter("d", default);
    env.add_filter("map", map);
    add!(env, "unique", unique);
    env.add_filter("map", map);
    add!(env, "unique", unique);
    add!(env, "bool", |v: &Value| -> Result<bool, Error> {
        native::reject_undefined(v)?;
        Ok(to_bool(v))
    });
    add!(env, "int", int);
    add!(env, "float", float);
    add!(env, "ternary", ternary);
    add!(env, "regex_replace", regex_replace);
    add!(env, "regex_search", regex_search);
    add!(env, "regex_findall", regex_findall);
    add!(env, "regex_escape", |v: &Value,
                               re_type: Option<String>,
                               kw: Kwargs|
     -> Result<String, Error> {
        let re_type = match re_type {
            Some(t) => t,
            None => kw
                .get::<Option<String>>("re_type")?
                .unwrap_or_else(|| "python".into()),
        };
        kw.assert_all_used()?;
        let s = text(v);
        match re_type.as_str() {
            "python" => Ok(py_re_escape(&s)),
            // The characters special in a POSIX basic regular expression.
            "posix_basic" => Ok(s
                .chars()
                .flat_map(|c| {
                    let esc = "].[^$*\\".contains(c);
                    esc.then_some('\\').into_iter().chain(std::iter::once(c))
                })
                .collect()),
            "posix_extended" => Err(err(format!("Regex type ({re_type}) not yet implemented"))),
            other => Err(err(format!("Invalid regex type ({other})"))),
        }
    });
    // Vault filters; the vault module does the work.
    add!(env, "vault", |data: &Value, secret: &Value, kw: Kwargs| {
        let (Some(data), Some(secret)) = (data.as_str(), secret.as_str()) else {
            return Err(err("vault: the data and the secret must be strings"));
        };
        let salt = kw.get::<Option<Value>>("salt")?.filter(|v| !v.is_none());
        let vault_id = kw.get::<Option<String>>("vault_id")?;
        let wrap_object = kw.get::<Option<bool>>("wrap_object")?.unwrap_or(false);
        kw.assert_all_used()?;
        let salt = salt.map(|s| text(&s));
        let vault_id = vault_id.unwrap_or_else(|| crate::vault::FILTER_ID.to_string());
        let sealed = crate::vault::filter_vault(data, secret, salt.as_deref(), &vault_id);
        if wrap_object {
            return Err(err("vault: wrap_object=True is not supported"));
        }
        Ok(Value::from(sealed))
    });
    add!(env, "unvault", |v: &Value, secret: &Value, kw: Kwargs| {
        let (Some(v), Some(secret)) = (v.as_str(), secret.as_str()) else {
            return Err(err("unvault: the vault and the secret must be strings"));
        };
        let vault_id = kw.get::<Option<String>>("vault_id")?;
        kw.assert_all_used()?;
        let vault_id = vault_id.unwrap_or_else(|| crate::vault::FILTER_ID.to_string());
        crate::vault::filter_unvault(v, secret, &vault_id)
            .map(Value::from)
            .map_err(|e| err(format!("Unable to decrypt: {e}")))
    });
    add!(env, "combine", combine);
    add!(env, "dict2items", dict2items);
    add!(env, "items2dict", items2dict);
    add!(env, "to_json", to_json);
    add!(env, "to_nice_json", |v: &Value,
                               kw: Kwargs|
     -> Result<String, Error> {
        let indent = kw.get::<Option<usize>>("indent")?.unwrap_or(4);
        let _ = kw.get::<Option<bool>>("sort_keys")?;
        kw.assert_all_used()?;
        Ok(native::to_nice_json(v, indent))
    });
    add!(env, "to_yaml", |v: &Value,
                          kw: Kwargs|
     -> Result<String, Error> {
        yaml_dump(v, native::YamlOptions::terse(), None, &kw)
    });
    add!(env, "to_nice_yaml", |v: &Value,
                               indent: Option<usize>,
                               kw: Kwargs|
     -> Result<String, Error> {
        yaml_dump(v, native::YamlOptions::nice(), indent, &kw)
    });
    add!(env, "from_json", |s: &str| -> Result<Value, Error> {
        serde_json::from_str::<serde_json::Value>(s)
            .map(|j| value_from_json(&j))
            .map_err(|e| err(format!("from_json: {e}")))
    });
    add!(env, "from_yaml", |v: &Value| -> Result<Value, Error> {
        match v.as_str() {
            Some(s) => Ok(from_yaml(s)?.into_iter().next().unwrap_or(Value::from(()))),
            None => Ok(v.clone()),
        }
    });
    // None gives [] and other non-strings come back unchanged, as in
    // ansible-core (which deprecates the latter).
    add!(env, "from_yaml_all", |v: &Value| -> Result<Value, Error> {
        match v.as_str() {
            Some(s) => Ok(Value::from(from_yaml(s)?)),
            None if v.is_none() => Ok(Value::from(Vec::<Value>::new())),
            None => Ok(v.clone()),
        }
    });
    add!(env, "b64encode", |s: &str,
                            kw: Kwargs|
     -> Result<String, Error> {
        let (encoding, urlsafe) = b64_options(&kw)?;
        let bytes = encode_text(s, &encoding)?;
        Ok(if urlsafe {
            base64::engine::general_purpose::URL_SAFE.encode(bytes)
        } else {
            base64::engine::general_purpose::STANDARD.encode(bytes)
        })
    });
    add!(env, "b64decode", |s: &str,
                            kw: Kwargs|
     -> Result<String, Error> {
        let (encoding, urlsafe) = b64_options(&kw)?;
        // Python's b64decode drops characters outside the alphabet.
        let keep = |c: &char| {
            c.is_ascii_alphanumeric()
                || *c == '='
                || if urlsafe {
                    *c == '-' || *c == '_'
                } else {
                    *c == '+' || *c == '/'
                }
        };
        let clean: String = s.chars().filter(keep).collect();
        let engine = if urlsafe {
            base64::engine::general_purpose::URL_SAFE
        } else {
            base64::engine::general_purpose::STANDARD
        };
        let bytes = engine
            .decode(clean)
            .map_err(|e| err(format!("b64decode: {e}")))?;
        decode_text(&bytes, &encoding)
    });
    add!(env, "basename", |s: &str| s
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string());
    add!(env, "dirname", |s: &str| match s.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => s[..i].trim_end_matches('/').to_string(),
        None => String::new(),
    });
    add!(env, "expanduser", |s: &str| expanduser(s));
    add!(env, "realpath", |s: &str| realpath(s));
    add!(env, "splitext", |s: &str| splitext(s));
    add!(env, "path_join", |v: &Value| -> Result<String, Error> {
        path_join(v)
    });
    add!(env, "fileglob", |s: &str| fileglob(s));
    add!(env, "commonpath", commonpath);
    add!(env, "quote", |v: &Value| crate::shell::quote(&text(v)));
    add!(env, "flatten", flatten);
    add!(env, "difference", |a: &Value,
                             b: &Value|
     -> Result<Value, Error> {
        let b = seq(b)?;
        Ok(Value::from(dedup(
            seq(a)?.into_iter().filter(|x| !b.contains(x)),
        )))
    });
    add!(env, "intersect", |a: &Value,
                            b: &Value|
     -> Result<Value, Error> {
        let b = seq(b)?;
        Ok(Value::from(dedup(
            seq(a)?.into_iter().filter(|x| b.contains(x)),
        )))
    });
    add!(env, "union", |a: &Value,
                        b: &Value|
     -> Result<Value, Error> {
        Ok(Value::from(dedup(seq(a)?.into_iter().chain(seq(b)?))))
    });
    add!(env, "symmetric_difference", |a: &Value,
                                       b: &Value|
     -> Result<Value, Error> {
        let (a, b) = (seq(a)?, seq(b)?);
        let left = a.iter().filter(|x| !b.contains(x)).cloned();
        let right = b.iter().filter(|x| !a.contains(x)).cloned();
        Ok(Value::from(dedup(left.chain(right))))
    });
    add!(env, "mandatory", |v: &Value,
                            msg: Option<&str>|
     -> Result<Value, Error> {
        if v.is_undefined() {
            let detail = format!("{MANDATORY}{}", msg.unwrap_or_default());
            return Err(Error::new(ErrorKind::UndefinedError, detail));
        }
        Ok(v.clone())
    });
    add!(env, "dict", |v: &Value| -> Result<Value, Error> {
        if v.kind() == ValueKind::Map {
            return Ok(v.clone());
        }
        let mut m = ValueMap::new();
        for pair in seq(v)? {
            let p = seq(&pair)?;
            if p.len() != 2 {
                return Err(err("dict: each item must be a [key, value] pair"));
            }
            m.insert(p[0].clone(), p[1].clone());
        }
        Ok(Value::from_object(m))
    });
    add!(env, "type_debug", |v: &Value| native::python_type_name(v));
    add!(env, "random", random);
    add!(env, "shuffle", |v: &Value,
                          seed: Option<Value>,
                          kw: Kwargs|
     -> Result<Value, Error> {
        let seed = match seed {
            Some(s) => Some(s),
            None => kw.get::<Option<Value>>("seed")?,
        };
        kw.assert_all_used()?;
        // ansible-core's randomize_list gives back anything it cannot turn
        // into a list unchanged.
        if !matches!(
            v.kind(),
            ValueKind::Seq | ValueKind::Map | ValueKind::String | ValueKind::Iterable
        ) {
            return Ok(v.clone());
        }
        let mut items = seq(v)?;
        items.shuffle(&mut rng_for(seed.as_ref()));
        Ok(Value::from(items))
    });
    add!(env, "human_readable", human_readable);
    add!(env, "human_to_bytes", |v: &Value,
                                 default_unit: Option<String>,
                                 isbits: Option<bool>,
                                 kw: Kwargs|
     -> Result<i64, Error> {
        let unit = match default_unit {
            Some(u) => Some(u),
            None => kw.get::<Option<String>>("default_unit")?,
        };
        let isbits = match isbits {
            Some(b) => b,
            None => kw.get::<Option<bool>>("isbits")?.unwrap_or(false),
        };
        kw.assert_all_used()?;
        human_to_bytes(&text(v), unit.as_deref(), isbits)
    });
    add!(env, "extract", |item: &Value,
                          container: &Value,
                          morekeys: Option<Value>|
     -> Result<Value, Error> {
        let mut v = container.get_item(item).unwrap_or(Value::UNDEFINED);
        if let Some(keys) = morekeys {
            let keys = if keys.kind() == ValueKind::Seq {
                seq(&keys)?
            } else {
                vec![keys]
            };
            for k in keys {
                v = v.get_item(&k).unwrap_or(Value::UNDEFINED);
            }
        }
        Ok(v)
    });
    add!(env, "subelements", |v: &Value,
                              key: &Value,
                              skip: Option<bool>,
                              kw: Kwargs|
     -> Result<Value, Error> {
        let skip = match skip {
            Some(s) => s,
            None => kw.get::<Option<bool>>("skip_missing")?.unwrap_or(false),
        };
        kw.assert_all_used()?;
        Ok(Value::from(subelements(v, key, skip)?))
    });
    add!(env, "product", |a: &Value,
                          rest: Rest<Value>|
     -> Result<Value, Error> {
        let mut lists = vec![seq(a)?];
        for r in rest.iter() {
            lists.push(seq(r)?);
        }
        Ok(Value::from(product(&lists)))
    });
    add!(env, "permutations", |v: &Value,
                               r: Option<usize>|
     -> Result<Value, Error> {
        let items = seq(v)?;
        let r = r.unwrap_or(items.len());
        let mut out = Vec::new();
        permute(
            &items,
            r,
            &mut Vec::new(),
            &mut vec![false; items.len()],
            &mut out,
        );
        Ok(Value::from(out))
    });
    add!(env, "combinations", |v: &Value,
                               r: usize|
     -> Result<Value, Error> {
        let items = seq(v)?;
        let mut out = Vec::new();
        combine_r(&items, r, 0, &mut Vec::new(), &mut out);
        Ok(Value::from(out))
    });
    add!(env, "zip_longest", |a: &Value,
                              rest: Rest<ValueOrKwargs>|
     -> Result<Value, Error> {
        let mut lists = vec![seq(a)?];
        let mut fill = Value::from(());
        for r in rest.iter() {
            if r.is_kwargs() {
                let kw = Kwargs::try_from((**r).clone())?;
                fill = kw.get::<Option<Value>>("fillvalue")?.unwrap_or(fill);
                kw.assert_all_used()?;
            } else {
                lists.push(seq(r)?);
            }
        }
        let n = lists.iter().map(Vec::len).max().unwrap_or(0);
        let rows = (0..n)
            .map(|i| {
                Value::from(
                    lists
                        .iter()
                        .map(|l| l.get(i).cloned().unwrap_or(fill.clone()))
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>();
        Ok(Value::from(rows))
    });
    add!(env, "hash", |v: &Value,
                       algo: Option<&str>|
     -> Result<String, Error> {
        hash(&text(v), algo.unwrap_or("sha1"))
    });
    add!(env, "checksum", |v: &Value| -> Result<String, Error> {
        hash(&text(v), "sha1")
    });
    add!(env, "sha1", |v: &Value| -> Result<String, Error> {
        hash(&text(v), "sha1")
    });
    add!(env, "md5", |v: &Value| -> Result<String, Error> {
        hash(&text(v), "md5")
    });
    add!(env, "password_hash", password_hash);
    add!(env, "comment", comment);
    add!(env, "to_uuid", |v: &Value,
                          ns: Option<Value>,
                          kw: Kwargs|
     -> Result<String, Error> {
        let ns = match ns {
            Some(n) => Some(n),
            None => kw.get::<Option<Value>>("namespace")?,
        };
        kw.assert_all_used()?;
        // Python fails on a namespace that is not text before parsing it.
        if let Some(n) = ns.as_ref().filter(|n| n.as_str().is_none()) {
            return Err(err(format!(
                "Invalid value '{}' for 'namespace': '{}' object has no attribute 'replace'",
                text(n),
                native::python_type_name(n)
            )));
        }
        let ns = ns.map(|n| text(&n));
        to_uuid(&text(v), ns.as_deref())
    });
    add!(env, "urldecode", |s: &str| urldecode(s));
    add!(env, "urlsplit", urlsplit);
    add!(env, "urlencode", urlencode);
    add!(env, "log", |v: &Value,
                      base: Option<Value>|
     -> Result<f64, Error> {
        let x = number(v, "log")?;
        Ok(match base {
            None => x.ln(),
            Some(b) => match number(&b, "log")? {
                10.0 => x.log10(),
                b => x.ln() / b.ln(),
            },
        })
    });
    add!(env, "pow", |v: &Value, e: &Value| -> Result<f64, Error> {
        Ok(number(v, "pow")?.powf(number(e, "pow")?))
    });
    add!(env, "root", |v: &Value,
                       n: Option<Value>|
     -> Result<f64, Error> {
        let x = number(v, "root")?;
        match n {
            None => Ok(x.sqrt()),
            Some(n) => Ok(x.powf(1.0 / number(&n, "root")?)),
        }
    });
    add!(env, "rekey_on_member", rekey_on_member);
}

/// A math filter's operand: Python's `math` functions take numbers (and
/// bools) only, not numeric strings.
fn number(v: &Value, filter: &str) -> Result<f64, Error> {
    match v.kind() {
        ValueKind::Number => f64::try_from(v.clone())
            .map_err(|_| err(format!("{filter}() can only be used on numbers"))),
        ValueKind::Bool => Ok(if v.is_true() { 1.0 } else { 0.0 }),
        _ => Err(err(format!("{filter}() can only be used on numbers"))),
    }
}

/// `rekey_on_member`: a dict of the given dicts (a list of them, or a dict's
/// values) keyed on one of their members.
fn rekey_on_member(data: &Value, key: &Value, kw: Kwargs) -> Result<Value, Error> {
    let duplicates = kw
        .get::<Option<String>>("duplicates")?
        .unwrap_or_else(|| "error".into());
    kw.assert_all_used()?;
    if duplicates != "error" && duplicates != "overwrite" {
        return Err(err(format!(
            "duplicates parameter to rekey_on_member has unknown value '{duplicates}'"
        )));
    }
    let items: Vec<Value> = match data.kind() {
        ValueKind::Map => data
            .try_iter()?
            .map(|k| data.get_item(&k).unwrap_or_default())
            .collect(),
        ValueKind::Seq | ValueKind::Iterable => data.try_iter()?.collect(),
        _ => return Err(err("Type is not a valid list, set, or dict")),
    };
    let mut out = ValueMap::new();
    for item in items {
        if item.kind() != ValueKind::Map {
            return Err(err("List item is not a valid dict"));
        }
        let k = item.get_item(key).unwrap_or(Value::UNDEFINED);
        if k.is_undefined() {
            return Err(err(format!(
                "Key {} was not found.",
                native::python_repr(key)
            )));
        }
        if out.get(&k).is_some_and(Value::is_true) && duplicates == "error" {
            return Err(err(format!(
                "Key {} is not unique, cannot convert to dict.",
                native::python_repr(&k)
            )));
        }
        out.insert(k, item);
    }
    Ok(Value::from_object(out))
}

/// A value as text: strings as-is, everything else as printed.
pub(crate) fn text(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None if v.is_none() || v.is_undefined() => String::new(),
        None => v.to_string(),
    }
}

pub(crate) fn seq(v: &Value) -> Result<Vec<Value>, Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => Ok(Vec::new()),
        ValueKind::String => Ok(vec![v.clone()]),
        _ => Ok(v.try_iter()?.collect()),
    }
}

fn dedup(it: impl Iterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for x in it {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn int(v: &Value, default: Option<Value>, kw: Kwargs) -> Result<Value, Error> {
    let default = match default {
        Some(d) => d,
        None => kw
            .get::<Option<Value>>("default")?
            .unwrap_or(Value::from(0)),
    };
    let base = kw.get::<Option<i64>>("base")?.unwrap_or(10);
    kw.assert_all_used()?;
    Ok(match v.kind() {
        ValueKind::Bool => Value::from(v.is_true() as i64),
        ValueKind::Number => match v.as_i64() {
            Some(i) => Value::from(i),
            None => f64::try_from(v.clone())
                .map(|f| Value::from(f.trunc() as i64))
                .unwrap_or(default),
        },
        ValueKind::String => {
            let text = v.as_str().unwrap_or_default();
            // Jinja's `int`: Python's `int(value, base)`, and when that
            // raises (a bad digit, or a base outside 0 and 2..=36),
            // `int(float(value))`, and when that raises too, the default.
            match python_int(text, base) {
                Some(i) => Value::from(i),
                None => match python_float(text) {
                    Some(f) if f.is_finite() => Value::from(f.trunc() as i64),
                    _ => default,
                },
            }
        }
        _ => default,
    })
}

/// Python's `int(text, base)` for what fits an `i64`: surrounding
/// whitespace, one sign, the `0x`/`0o`/`0b` prefix that matches the base
/// (any of them with base 0, which otherwise means decimal), and `_`
/// between digits. `None` where Python raises `ValueError`, including for a
/// base that is neither 0 nor in 2..=36.
fn python_int(text: &str, base: i64) -> Option<i64> {
    let text = text.trim();
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let prefixed = |p: char| {
        let b = body.as_bytes();
        (b.len() > 2 && b[0] == b'0' && b[1].eq_ignore_ascii_case(&(p as u8))).then(|| &body[2..])
    };
    let (radix, digits) = match base {
        0 => match [('x', 16), ('o', 8), ('b', 2)]
            .iter()
            .find_map(|&(p, r)| prefixed(p).map(|d| (r, d)))
        {
            Some((r, d)) => (r, d.strip_prefix('_').unwrap_or(d)),
            // Decimal, where a leading zero is only allowed for zero itself.
            None if body.len() > 1 && body.starts_with('0') => {
                return body.bytes().all(|c| c == b'0' || c == b'_').then_some(0)
            }
            None => (10, body),
        },
        16 | 8 | 2 => {
            let p = match base {
                16 => 'x',
                8 => 'o',
                _ => 'b',
            };
            match prefixed(p) {
                Some(d) => (base as u32, d.strip_prefix('_').unwrap_or(d)),
                None => (base as u32, body),
            }
        }
        2..=36 => (base as u32, body),
        _ => return None,
    };
    // Underscores only between digits.
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let digits = digits.replace('_', "");
    if !digits.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let n = i64::from_str_radix(&digits, radix).ok()?;
    Some(if neg { -n } else { n })
}

/// Python's `float(text)` as far as Rust's parser agrees with it, with
/// Python's rule that `_` may only stand between two digits.
fn python_float(text: &str) -> Option<f64> {
    let text = text.trim();
    let b = text.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let digit = |j: Option<usize>| j.and_then(|j| b.get(j)).is_some_and(u8::is_ascii_digit);
            if !digit(i.checked_sub(1)) || !digit(Some(i + 1)) {
                return None;
            }
        }
    }
    text.replace('_', "").parse::<f64>().ok()
}

fn float(v: &Value, default: Option<Value>) -> Value {
    let default = default.unwrap_or(Value::from(0.0));
    match v.kind() {
        ValueKind::Bool => Value::from(if v.is_true() { 1.0 } else { 0.0 }),
        ValueKind::Number => f64::try_from(v.clone()).map(Value::from).unwrap_or(default),
        ValueKind::String => v
            .as_str()
            .unwrap_or_default()
            .trim()
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or(default),
        _ => default,
    }
}

fn ternary(v: &Value, t: Value, f: Value, none_val: Option<Value>) -> Value {
    match none_val {
        Some(n) if v.is_none() => n,
        _ => {
            if v.is_true() {
                t
            } else {
                f
            }
        }
    }
}

fn regex_flags(kw: &Kwargs) -> Result<(bool, bool), Error> {
    let i = kw.get::<Option<bool>>("ignorecase")?.unwrap_or(false);
    let m = kw.get::<Option<bool>>("multiline")?.unwrap_or(false);
    Ok((i, m))
}

/// `regex_replace`: Python's `re.sub`, with `count` and `mandatory_count`.
fn regex_replace(v: &Value, pat: &str, rep: Option<&str>, kw: Kwargs) -> Result<String, Error> {
    let (i, m) = regex_flags(&kw)?;
    let count = kw.get::<Option<usize>>("count")?.unwrap_or(0);
    let mandatory = kw.get::<Option<usize>>("mandatory_count")?.unwrap_or(0);
    kw.assert_all_used()?;
    let re = pyre::compile(pat, i, m)?;
    let (out, n) = pyre::sub(&re, rep.unwrap_or(""), &text(v), count)?;
    if mandatory > 0 && n != mandatory {
        return Err(err(format!(
            "'{pat}' should match {mandatory} times, but matches {n} times in '{}'",
            text(v)
        )));
    }
    Ok(out)
}

/// `regex_search`: the first match, or the listed groups (`'\\1'`,
/// `'\\g<name>'`) of it; None when nothing matches.
fn regex_search(v: &Value, pat: &str, groups: Rest<String>, kw: Kwargs) -> Result<Value, Error> {
    let (i, m) = regex_flags(&kw)?;
    kw.assert_all_used()?;
    let re = pyre::compile(pat, i, m)?;
    let s = text(v);
    let Some(caps) = pyre::captures(&re, &s)? else {
        return Ok(Value::from(()));
    };
    if groups.is_empty() {
        return Ok(Value::from(caps.get(0).map_or("", |m| m.as_str())));
    }
    let mut out = Vec::new();
    for g in groups.iter() {
        let m = if let Some(n) = g.strip_prefix("\\g<").and_then(|r| r.strip_suffix('>')) {
            match n.parse::<usize>() {
                Ok(idx) => caps.get(idx),
                Err(_) => caps.name(n),
            }
        } else if let Some(n) = g.strip_prefix('\\') {
            n.parse::<usize>().ok().and_then(|idx| caps.get(idx))
        } else {
            return Err(err(format!("Unknown argument {g:?}")));
        };
        out.push(m.map_or(Value::from(()), |m| Value::from(m.as_str())));
    }
    Ok(Value::from(out))
}

/// `regex_findall`: Python's `re.findall` (whole matches, the one group, or a
/// list per match of every group).
fn regex_findall(v: &Value, pat: &str, kw: Kwargs) -> Result<Value, Error> {
    let (i, m) = regex_flags(&kw)?;
    kw.assert_all_used()?;
    let re = pyre::compile(pat, i, m)?;
    let s = text(v);
    let groups = re.captures_len() - 1;
    let out: Vec<Value> = pyre::all_captures(&re, &s)?
        .iter()
        .map(|c| match groups {
            0 => Value::from(c.get(0).map_or("", |m| m.as_str())),
            1 => Value::from(c.get(1).map_or("", |m| m.as_str())),
            n => Value::from(
                (1..=n)
                    .map(|g| Value::from(c.get(g).map_or("", |m| m.as_str())))
                    .collect::<Vec<_>>(),
            ),
        })
        .collect();
    Ok(Value::from(out))
}

/// Python 3.7+ `re.escape`.
fn py_re_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "()[]{}?*+-|^$\\.&~# \t\n\r\x0b\x0c".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn merge_maps(a: &Value, b: &Value, recursive: bool, list_merge: &str) -> Result<Value, Error> {
    let mut out = ValueMap::new();
    for k in a.try_iter()? {
        out.insert(k.clone(), a.get_item(&k)?);
    }
    for k in b.try_iter()? {
        let bv = b.get_item(&k)?;
        let merged = match out.get(&k) {
            Some(av) if recursive && av.kind() == ValueKind::Map && bv.kind() == ValueKind::Map => {
                merge_maps(av, &bv, recursive, list_merge)?
            }
            Some(av) if av.kind() == ValueKind::Seq && bv.kind() == ValueKind::Seq => {
                let (x, y) = (seq(av)?, seq(&bv)?);
                match list_merge {
                    "replace" => bv.clone(),
                    "keep" => av.clone(),
                    "append" => Value::from(x.into_iter().chain(y).collect::<Vec<_>>()),
                    "prepend" => Value::from(y.into_iter().chain(x).collect::<Vec<_>>()),
                    "append_rp" => {
                        let keep: Vec<Value> = x.into_iter().filter(|i| !y.contains(i)).collect();
                        Value::from(keep.into_iter().chain(y).collect::<Vec<_>>())
                    }
                    "prepend_rp" => {
                        let keep: Vec<Value> = x.into_iter().filter(|i| !y.contains(i)).collect();
                        Value::from(y.into_iter().chain(keep).collect::<Vec<_>>())
                    }
                    other => return Err(err(format!("combine: unknown list_merge {other:?}"))),
                }
            }
            _ => bv,
        };
        out.insert(k, merged);
    }
    Ok(Value::from_object(out))
}

fn combine(v: &Value, rest: Rest<Value>, kw: Kwargs) -> Result<Value, Error> {
    if kw.args().any(|k| k != "recursive" && k != "list_merge") {
        return Err(err(
            "'recursive' and 'list_merge' are the only valid keyword arguments",
        ));
    }
    let recursive = kw.get::<Option<bool>>("recursive")?.unwrap_or(false);
    let list_merge = kw
        .get::<Option<String>>("list_merge")?
        .unwrap_or_else(|| "replace".to_string());
    kw.assert_all_used()?;
    // ansible-core flattens its arguments one level (so `[a, b] | combine`
    // merges the items of a list), dropping nulls as its `flatten` does.
    let mut dicts: Vec<Value> = Vec::new();
    for t in std::iter::once(v).chain(rest.iter()) {
        let items = if t.kind() == ValueKind::Seq {
            seq(t)?
        } else {
            vec![t.clone()]
        };
        dicts.extend(
            items
                .into_iter()
                .filter(|x| !(x.is_none() || matches!(x.as_str(), Some("None" | "null")))),
        );
    }
    // One term is returned as it is, whatever its type, as in ansible-core.
    let Some(mut acc) = dicts.pop() else {
        return Ok(Value::from_object(ValueMap::new()));
    };
    while let Some(d) = dicts.pop() {
        if d.kind() != ValueKind::Map || acc.kind() != ValueKind::Map {
            return Err(err(format!(
                "failed to combine variables, expected dicts but got a '{}' and a '{}'.",
                native::python_type_name(&d),
                native::python_type_name(&acc)
            )));
        }
        acc = merge_maps(&d, &acc, recursive, &list_merge)?;
    }
    Ok(acc)
}

fn dict2items(v: &Value, kw: Kwargs) -> Result<Value, Error> {
    let kn = kw
        .get::<Option<String>>("key_name")?
        .unwrap_or_else(|| "key".into());
    let vn = kw
        .get::<Option<String>>("value_name")?
        .unwrap_or_else(|| "value".into());
    kw.assert_all_used()?;
    if v.kind() != ValueKind::Map {
        return Err(err(format!(
            "dict2items requires a dictionary, got {}",
            native::python_type_name(v)
        )));
    }
    let mut out = Vec::new();
    for k in v.try_iter()? {
        let mut m = ValueMap::new();
        m.insert(Value::from(kn.as_str()), k.clone());
        m.insert(Value::from(vn.as_str()), v.get_item(&k)?);
        out.push(Value::from_object(m));
    }
    Ok(Value::from(out))
}

fn items2dict(v: &Value, kw: Kwargs) -> Result<Value, Error> {
    let kn = kw
        .get::<Option<String>>("key_name")?
        .unwrap_or_else(|| "key".into());
    let vn = kw
        .get::<Option<String>>("value_name")?
        .unwrap_or_else(|| "value".into());
    kw.assert_all_used()?;
    if !matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return Err(err(format!(
            "items2dict requires a list, got <class '{}'> instead.",
            native::python_type_name(v)
        )));
    }
    let items = seq(v)?;
    let mut m = ValueMap::new();
    for item in &items {
        if item.kind() != ValueKind::Map {
            return Err(err(format!(
                "items2dict requires a list of dictionaries, got {} instead.",
                native::python_repr(v)
            )));
        }
        let k = item
            .get_item(&Value::from(kn.as_str()))
            .ok()
            .filter(|x| !x.is_undefined());
        let val = item
            .get_item(&Value::from(vn.as_str()))
            .ok()
            .filter(|x| !x.is_undefined());
        match (k, val) {
            (Some(k), Some(val)) => {
                m.insert(k, val);
            }
            _ => {
                return Err(err(format!(
                    "items2dict requires each dictionary in the list to contain the keys '{kn}' and '{vn}', got {} instead.",
                    native::python_repr(v)
                )))
            }
        }
    }
    Ok(Value::from_object(m))
}

fn to_json(v: &Value, kw: Kwargs) -> Result<String, Error> {
    let indent = kw.get::<Option<usize>>("indent")?;
    let sort = kw.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let _ = kw.get::<Option<bool>>("ensure_ascii")?;
    kw.assert_all_used()?;
    Ok(match indent {
        Some(n) => {
            let s = native::to_nice_json(v, n);
            if sort {
                s
            } else {
                // Unsorted indented output: serde's pretty printer with the
                // requested width.
                let j = value_to_json(v);
                let ind = " ".repeat(n);
                let mut buf = Vec::new();
                let fmt = serde_json::ser::PrettyFormatter::with_indent(ind.as_bytes());
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
                serde::Serialize::serialize(&j, &mut ser).map_err(|e| err(e.to_string()))?;
                String::from_utf8_lossy(&buf).into_owned()
            }
        }
        None => native::to_json_compact(v, sort),
    })
}

fn from_yaml(s: &str) -> Result<Vec<Value>, Error> {
    let docs = crate::yaml::load_str("<from_yaml>", s, &crate::yaml::LoadOptions::default())
        .map_err(|d| err(format!("from_yaml: {}", d.message)))?;
    Ok(docs.iter().map(|n| n.to_value()).collect())
}

fn expanduser(s: &str) -> String {
    if s == "~" || s.starts_with("~/") {
        if let Some(home) = dirs::home_dir() {
            return format!("{}{}", home.display(), &s[1..]);
        }
    }
    s.to_string()
}

fn realpath(s: &str) -> String {
    let p = PathBuf::from(expanduser(s));
    if let Ok(c) = std::fs::canonicalize(&p) {
        return c.display().to_string();
    }
    // Like os.path.realpath on a missing path: make absolute, normalise.
    let abs = if p.is_absolute() {
        p
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.display().to_string()
}

fn splitext(s: &str) -> Value {
    let base_start = s.rfind('/').map_or(0, |i| i + 1);
    let base = &s[base_start..];
    let stem_len = base.len() - base.trim_start_matches('.').len();
    match base[stem_len..].rfind('.') {
        Some(i) => {
            let at = base_start + stem_len + i;
            Value::from(vec![Value::from(&s[..at]), Value::from(&s[at..])])
        }
        None => Value::from(vec![Value::from(s), Value::from("")]),
    }
}

/// `fileglob` as a filter: Python's `glob.glob` on the pattern as given
/// (relative to the working directory, unlike the lookup, which searches the
/// role's and playbook's `files/`), keeping regular files only. A `*` does not
/// match a leading dot, as in Python.
fn fileglob(pattern: &str) -> Value {
    let opts = glob::MatchOptions {
        require_literal_leading_dot: true,
        ..Default::default()
    };
    let Ok(paths) = glob::glob_with(pattern, opts) else {
        return Value::from(Vec::<Value>::new());
    };
    Value::from(
        paths
            .flatten()
            .filter(|p| p.is_file())
            .map(|p| Value::from(p.display().to_string()))
            .collect::<Vec<_>>(),
    )
}

/// The `encoding=` and `urlsafe=` arguments of `b64encode`/`b64decode`.
fn b64_options(kw: &Kwargs) -> Result<(String, bool), Error> {
    let encoding = kw
        .get::<Option<String>>("encoding")?
        .unwrap_or_else(|| "utf-8".into());
    let urlsafe = kw.get::<Option<bool>>("urlsafe")?.unwrap_or(false);
    kw.assert_all_used()?;
    Ok((encoding, urlsafe))
}

/// Python's codec name, normalised the way its codec registry looks it up.
fn codec(encoding: &str) -> Result<&'static str, Error> {
    let n = encoding.to_ascii_lowercase().replace('_', "-");
    Ok(match n.as_str() {
        "utf-8" | "utf8" | "u8" => "utf-8",
        "utf-16" | "utf16" => "utf-16",
        "utf-16-le" | "utf-16le" => "utf-16-le",
        "utf-16-be" | "utf-16be" => "utf-16-be",
        "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" | "l1" => "latin-1",
        "ascii" | "us-ascii" => "ascii",
        _ => return Err(err(format!("unknown encoding: {encoding}"))),
    })
}

/// `str.encode(encoding)` for the codecs Keel knows.
fn encode_text(s: &str, encoding: &str) -> Result<Vec<u8>, Error> {
    let units = |be: bool| -> Vec<u8> {
        s.encode_utf16()
            .flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() })
            .collect()
    };
    Ok(match codec(encoding)? {
        "utf-8" => s.as_bytes().to_vec(),
        // Python writes a byte-order mark, little-endian on every platform
        // Keel runs on.
        "utf-16" => [0xff, 0xfe].into_iter().chain(units(false)).collect(),
        "utf-16-le" => units(false),
        "utf-16-be" => units(true),
        name => {
            let max = if name == "ascii" { 0x7f } else { 0xff };
            s.chars()
                .map(|c| {
                    u8::try_from(c as u32)
                        .ok()
                        .filter(|b| u32::from(*b) <= max)
                        .ok_or_else(|| err(format!("'{name}' codec can't encode character {c:?}")))
                })
                .collect::<Result<_, _>>()?
        }
    })
}

/// `bytes.decode(encoding)` for the codecs Keel knows.
fn decode_text(b: &[u8], encoding: &str) -> Result<String, Error> {
    let utf16 = |b: &[u8], be: bool| -> Result<String, Error> {
        let units: Vec<u16> = b
            .chunks(2)
            .map(|c| {
                let pair = [c[0], c.get(1).copied().unwrap_or(0)];
                if be {
                    u16::from_be_bytes(pair)
                } else {
                    u16::from_le_bytes(pair)
                }
            })
            .collect();
        if b.len() % 2 == 1 {
            return Err(err("'utf-16' codec can't decode: truncated data"));
        }
        String::from_utf16(&units).map_err(|e| err(format!("'utf-16' codec can't decode: {e}")))
    };
    match codec(encoding)? {
        "utf-8" => String::from_utf8(b.to_vec())
            .map_err(|e| err(format!("'utf-8' codec can't decode: {e}"))),
        "utf-16" => match b {
            [0xfe, 0xff, rest @ ..] => utf16(rest, true),
            [0xff, 0xfe, rest @ ..] => utf16(rest, false),
            _ => utf16(b, false),
        },
        "utf-16-le" => utf16(b, false),
        "utf-16-be" => utf16(b, true),
        "ascii" if !b.is_ascii() => Err(err("'ascii' codec can't decode byte")),
        _ => Ok(b.iter().map(|&c| char::from(c)).collect()),
    }
}

/// Python's `os.path.commonpath`: the longest common sub-path, by
/// components; absolute and relative paths do not mix.
fn commonpath(v: &Value) -> Result<String, Error> {
    if !matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return Err(err(format!(
            "|commonpath expects sequence, got <class '{}'> instead.",
            native::python_type_name(v)
        )));
    }
    let paths: Vec<String> = seq(v)?.iter().map(text).collect();
    if paths.is_empty() {
        return Err(err("commonpath() arg is an empty sequence"));
    }
    let absolute = paths[0].starts_with('/');
    if paths.iter().any(|p| p.starts_with('/') != absolute) {
        return Err(err("Can't mix absolute and relative paths"));
    }
    let split = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    };
    let mut common = split(&paths[0]);
    for p in &paths[1..] {
        let parts = split(p);
        let n = common
            .iter()
            .zip(&parts)
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(n);
    }
    let joined = common.join("/");
    Ok(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}

/// `to_yaml`/`to_nice_yaml`: the keyword arguments ansible-core passes on to
/// PyYAML's `yaml.dump`. Those that only change the encoding or the line
/// width Keel does not wrap at are accepted and have no effect; any other
/// name fails as `yaml.dump` does.
fn yaml_dump(
    v: &Value,
    mut o: native::YamlOptions,
    indent: Option<usize>,
    kw: &Kwargs,
) -> Result<String, Error> {
    const KNOWN: [&str; 13] = [
        "indent",
        "default_flow_style",
        "default_style",
        "canonical",
        "explicit_start",
        "explicit_end",
        "width",
        "allow_unicode",
        "sort_keys",
        "line_break",
        "encoding",
        "version",
        "tags",
    ];
    if let Some(bad) = kw.args().find(|k| !KNOWN.contains(k)) {
        return Err(err(format!(
            "dump_all() got an unexpected keyword argument '{bad}'"
        )));
    }
    if let Some(i) = indent.or(kw.get::<Option<usize>>("indent")?) {
        // PyYAML keeps its default outside 2..=9.
        if (2..10).contains(&i) {
            o.indent = i;
        }
    }
    if let Some(f) = kw.get::<Option<Value>>("default_flow_style")? {
        o.flow = if f.is_none() { None } else { Some(f.is_true()) };
    }
    if let Some(st) = kw.get::<Option<Value>>("default_style")? {
        o.scalar_style = match st.as_str() {
            None | Some("") => None,
            Some(s @ ("|" | ">" | "'" | "\"")) => s.chars().next(),
            Some(other) => return Err(err(format!("unknown default_style {other:?}"))),
        };
    }
    o.canonical = kw.get::<Option<bool>>("canonical")?.unwrap_or(false);
    o.explicit_start = kw.get::<Option<bool>>("explicit_start")?.unwrap_or(false);
    o.explicit_end = kw.get::<Option<bool>>("explicit_end")?.unwrap_or(false);
    for k in [
        "width",
        "allow_unicode",
        "sort_keys",
        "line_break",
        "encoding",
        "version",
        "tags",
    ] {
        let _ = kw.get::<Option<Value>>(k)?;
    }
    kw.assert_all_used()?;
    Ok(native::to_yaml_with(v, &o))
}

fn path_join(v: &Value) -> Result<String, Error> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_string());
    }
    if !matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return Err(err(format!(
            "|path_join expects string or sequence, got <class '{}'> instead.",
            native::python_type_name(v)
        )));
    }
    let mut p = PathBuf::new();
    for part in seq(v)? {
        p.push(text(&part));
    }
    Ok(p.display().to_string())
}

fn flatten(v: &Value, levels: Option<Value>, kw: Kwargs) -> Result<Value, Error> {
    let levels = match levels {
        Some(l) => l.as_i64(),
        None => kw.get::<Option<i64>>("levels")?,
    };
    let skip_nulls = kw.get::<Option<bool>>("skip_nulls")?.unwrap_or(true);
    kw.assert_all_used()?;
    fn walk(
        v: &Value,
        levels: Option<i64>,
        skip_nulls: bool,
        out: &mut Vec<Value>,
    ) -> Result<(), Error> {
        for item in seq(v)? {
            if skip_nulls && (item.is_none() || item.as_str() == Some("None")) {
                continue;
            }
            if item.kind() == ValueKind::Seq && levels != Some(0) {
                walk(&item, levels.map(|l| l - 1), skip_nulls, out)?;
            } else {
                out.push(item);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(v, levels, skip_nulls, &mut out)?;
    Ok(Value::from(out))
}

pub(super) fn rng_for(seed: Option<&Value>) -> rand::rngs::StdRng {
    match seed {
        Some(s) if !s.is_none() && !s.is_undefined() => {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(text(s).as_bytes());
            let mut b = [0u8; 32];
            b.copy_from_slice(&digest);
            rand::rngs::StdRng::from_seed(b)
        }
        _ => rand::rngs::StdRng::from_entropy(),
    }
}

fn random(v: &Value, start: Option<i64>, step: Option<i64>, kw: Kwargs) -> Result<Value, Error> {
    let seed = kw.get::<Option<Value>>("seed")?;
    let start = match start {
        Some(s) => Some(s),
        None => kw.get::<Option<i64>>("start")?,
    };
    let step = match step {
        Some(s) => Some(s),
        None => kw.get::<Option<i64>>("step")?,
    };
    kw.assert_all_used()?;
    let mut rng = rng_for(seed.as_ref());
    if let Some(end) = v.as_i64().filter(|_| v.kind() == ValueKind::Number) {
        let (start, step) = (start.unwrap_or(0), step.unwrap_or(1).max(1));
        if end <= start {
            return Err(err(
                "random: the end of the range must be greater than the start",
            ));
        }
        let n = (end - start + step - 1) / step;
        return Ok(Value::from(start + rng.gen_range(0..n) * step));
    }
    if !matches!(
        v.kind(),
        ValueKind::Seq | ValueKind::Map | ValueKind::String | ValueKind::Iterable
    ) {
        return Err(err("random can only be used on sequences and integers"));
    }
    if start.unwrap_or(0) != 0 || step.unwrap_or(0) != 0 {
        return Err(err("start and step can only be used with integer values"));
    }
    let items = seq(v)?;
    items
        .choose(&mut rng)
        .cloned()
        .ok_or_else(|| err("random: cannot choose from an empty sequence"))
}

fn human_readable(
    v: &Value,
    isbits: Option<bool>,
    unit: Option<String>,
    kw: Kwargs,
) -> Result<String, Error> {
    if !matches!(v.kind(), ValueKind::Number | ValueKind::Bool) {
        return Err(err("human_readable() failed on bad input"));
    }
    let n = f64::try_from(float(v, None)).unwrap_or(0.0);
    let isbits = match isbits {
        Some(b) => b,
        None => kw.get::<Option<bool>>("isbits")?.unwrap_or(false),
    };
    let unit = match unit {
        Some(u) => Some(u),
        None => kw.get::<Option<String>>("unit")?,
    };
    kw.assert_all_used()?;
    let unit = unit.as_deref();
    let units = ["", "K", "M", "G", "T", "P", "E", "Z", "Y"];
    let base = 1024f64;
    let idx = match unit {
        Some(u) => units
            .iter()
            .position(|x| x.eq_ignore_ascii_case(&u[..1.min(u.len())]) && !x.is_empty())
            .unwrap_or(0),
        None => {
            let mut i = 0;
            while i + 1 < units.len() && n.abs() >= base.powi(i as i32 + 1) {
                i += 1;
            }
            i
        }
    };
    let value = n / base.powi(idx as i32);
    let suffix = match (idx, isbits) {
        (0, false) => "Bytes".to_string(),
        (0, true) => "bits".to_string(),
        (i, false) => format!("{}B", units[i]),
        (i, true) => format!("{}b", units[i]),
    };
    Ok(format!("{value:.2} {suffix}"))
}

/// `human_to_bytes`: Ansible's `formatters.human_to_bytes`.
fn human_to_bytes(s: &str, default_unit: Option<&str>, isbits: bool) -> Result<i64, Error> {
    let re = Regex::new(r"^([0-9]*\.?[0-9]+)(?:\s*([A-Za-z]+))?\s*$").expect("valid regex");
    let c = re.captures(s).ok_or_else(|| {
        err(format!(
            "human_to_bytes() can't interpret following string: {s}"
        ))
    })?;
    let num: f64 = c[1].parse().map_err(|_| {
        err(format!(
            "human_to_bytes() can't interpret following number: {}",
            &c[1]
        ))
    })?;
    let Some(unit) = c.get(2).map(|m| m.as_str()).or(default_unit) else {
        return Ok(py_round(num) as i64);
    };
    let range_key = unit[..1].to_ascii_uppercase();
    let Some(power) = "BKMGTPEZY".find(&range_key) else {
        return Err(err(format!(
            "human_to_bytes() failed to convert {s} (unit = {unit}). The suffix must be one of Y, Z, E, P, T, G, M, K, B"
        )));
    };
    if unit.len() > 1 {
        let names = [
            ("byte", "bit"),
            ("kilobyte", "kilobit"),
            ("megabyte", "megabit"),
            ("gigabyte", "gigabit"),
            ("terabyte", "terabit"),
            ("petabyte", "petabit"),
            ("exabyte", "exabit"),
            ("zetabyte", "zetabit"),
            ("yottabyte", "yottabit"),
        ][power];
        let (name, class) = if isbits {
            (names.1, 'b')
        } else {
            (names.0, 'B')
        };
        let short = if power == 0 {
            class.to_string()
        } else {
            format!("{range_key}{class}")
        };
        if unit.to_lowercase() != name && unit != short {
            return Err(err(format!(
                "human_to_bytes() failed to convert {s}. Value is not a valid string (expect {short} or {})",
                if power == 0 { name.to_string() } else { range_key.clone() }
            )));
        }
    }
    Ok(py_round(num * 1024f64.powi(power as i32)) as i64)
}

/// Python's `round()`: halves go to the even neighbour.
fn py_round(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// ansible-core's `subelements` filter: each element of a list of dicts (or
/// of a dict's values) paired with each item of the list at `key` (a dotted
/// path or a list of keys), with its error messages.
fn subelements(v: &Value, key: &Value, skip_missing: bool) -> Result<Vec<Value>, Error> {
    let elements = match v.kind() {
        ValueKind::Map => v
            .try_iter()?
            .map(|k| v.get_item(&k))
            .collect::<Result<Vec<_>, _>>()?,
        ValueKind::Seq => seq(v)?,
        _ => return Err(err("obj must be a list of dicts or a nested dict")),
    };
    let keys: Vec<Value> = match key.kind() {
        ValueKind::Seq => seq(key)?,
        ValueKind::String => text(key).split('.').map(Value::from).collect(),
        _ => return Err(err("subelements must be a list or a string")),
    };
    let mut out = Vec::new();
    for item in elements {
        let mut sub = item.clone();
        let mut missing = false;
        for part in &keys {
            if sub.kind() != ValueKind::Map {
                // ansible-core appends Python's TypeError for a list.
                let why = if sub.kind() == ValueKind::Seq {
                    ": list indices must be integers or slices, not str"
                } else {
                    ""
                };
                return Err(err(format!(
                    "the key {} should point to a dictionary, got '{}'{why}",
                    text(part),
                    native::python_repr(&sub)
                )));
            }
            match sub.get_item(part).ok().filter(|x| !x.is_undefined()) {
                Some(x) => sub = x,
                None if skip_missing => {
                    missing = true;
                    break;
                }
                None => {
                    return Err(err(format!(
                        "could not find {} key in iterated item {}",
                        native::python_repr(part),
                        native::python_repr(&sub)
                    )))
                }
            }
        }
        if missing {
            continue;
        }
        if sub.kind() != ValueKind::Seq {
            return Err(err(format!(
                "the key {} should point to a list, got {}",
                native::python_repr(&keys.last().cloned().unwrap_or_default()),
                native::python_repr(&sub)
            )));
        }
        // Python tuples, which compare unequal to lists, as in ansible-core.
        for s in seq(&sub)? {
            out.push(Value::from(minijinja::value::Tuple::from([
                item.clone(),
                s,
            ])));
        }
    }
    Ok(out)
}

pub(crate) fn product(lists: &[Vec<Value>]) -> Vec<Value> {
    let mut acc: Vec<Vec<Value>> = vec![Vec::new()];
    for l in lists {
        let mut next = Vec::new();
        for prefix in &acc {
            for x in l {
                let mut p = prefix.clone();
                p.push(x.clone());
                next.push(p);
            }
        }
        acc = next;
    }
    acc.into_iter().map(Value::from).collect()
}

fn permute(
    items: &[Value],
    r: usize,
    cur: &mut Vec<Value>,
    used: &mut Vec<bool>,
    out: &mut Vec<Value>,
) {
    if cur.len() == r {
        out.push(Value::from(cur.clone()));
        return;
    }
    for i in 0..items.len() {
        if !used[i] {
            used[i] = true;
            cur.push(items[i].clone());
            permute(items, r, cur, used, out);
            cur.pop();
            used[i] = false;
        }
    }
}

fn combine_r(items: &[Value], r: usize, start: usize, cur: &mut Vec<Value>, out: &mut Vec<Value>) {
    if cur.len() == r {
        out.push(Value::from(cur.clone()));
        return;
    }
    for i in start..items.len() {
        cur.push(items[i].clone());
        combine_r(items, r, i + 1, cur, out);
        cur.pop();
    }
}

fn hash(s: &str, algo: &str) -> Result<String, Error> {
    use sha2::Digest;
    Ok(match algo {
        "sha1" => hex::encode(sha1::Sha1::digest(s.as_bytes())),
        "md5" => hex::encode(md5::Md5::digest(s.as_bytes())),
        "sha224" => hex::encode(sha2::Sha224::digest(s.as_bytes())),
        "sha256" => hex::encode(sha2::Sha256::digest(s.as_bytes())),
        "sha384" => hex::encode(sha2::Sha384::digest(s.as_bytes())),
        "sha512" => hex::encode(sha2::Sha512::digest(s.as_bytes())),
        other => return Err(err(format!("hash: unsupported algorithm {other:?}"))),
    })
}

pub(super) const CRYPT_CHARS: &[u8] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn password_hash(
    v: &Value,
    hashtype: Option<String>,
    salt: Option<String>,
    kw: Kwargs,
) -> Result<String, Error> {
    let hashtype = match hashtype {
        Some(h) => h,
        None => kw
            .get::<Option<String>>("hashtype")?
            .unwrap_or_else(|| "sha512".into()),
    };
    let salt = match salt {
        Some(s) => Some(s),
        None => kw.get::<Option<String>>("salt")?,
    };
    let salt_size = kw.get::<Option<Value>>("salt_size")?;
    let rounds = kw.get::<Option<usize>>("rounds")?;
    kw.assert_all_used()?;
    // ansible-core's names and checks, with passlib installed (as its
    // integration tests have it).
    const PASSLIB: [(&str, &str); 4] = [
        ("md5", "md5_crypt"),
        ("blowfish", "bcrypt"),
        ("sha256", "sha256_crypt"),
        ("sha512", "sha512_crypt"),
    ];
    if !PASSLIB
        .iter()
        .any(|(short, long)| hashtype == *short || hashtype == *long)
    {
        return Err(err(format!(
            "{hashtype} is not in the list of supported passlib algorithms: md5, blowfish, sha256, sha512"
        )));
    }
    let salt_size = match salt_size.filter(|s| !s.is_none()) {
        None => 16,
        Some(s) => match s.as_i64().filter(|_| s.is_integer()) {
            Some(n) => usize::try_from(n).map_err(|_| err("Could not hash the secret."))?,
            None => return Err(err("salt_size must be an integer")),
        },
    };
    let salt = salt.unwrap_or_else(|| {
        let mut rng = rand::thread_rng();
        (0..salt_size)
            .map(|_| CRYPT_CHARS[rng.gen_range(0..CRYPT_CHARS.len())] as char)
            .collect()
    });
    // passlib refuses rounds outside 1000..=999999999.
    if rounds.is_some_and(|r| !(1000..=999_999_999).contains(&r)) {
        return Err(err("Could not hash the secret."));
    }
    crypt(&text(v), &hashtype, &salt, rounds)
}

/// A crypt(3) hash of `pw` (`sha512_crypt`, `sha256_crypt`): what
/// `password_hash` and the password lookup's `encrypt` produce.
pub(super) fn crypt(
    pw: &str,
    hashtype: &str,
    salt: &str,
    rounds: Option<usize>,
) -> Result<String, Error> {
    let rounds_prefix = |r: Option<usize>| r.map(|r| format!("rounds={r}$")).unwrap_or_default();
    match hashtype {
        "sha512" | "sha512_crypt" => {
            let params = sha_crypt::Sha512Params::new(rounds.unwrap_or(5000))
                .map_err(|_| err("password_hash: invalid rounds"))?;
            let h = sha_crypt::sha512_crypt_b64(pw.as_bytes(), salt.as_bytes(), &params)
                .map_err(|_| err("password_hash: hashing failed"))?;
            let salt: String = salt.chars().take(16).collect();
            Ok(format!("$6${}{salt}${h}", rounds_prefix(rounds)))
        }
        "sha256" | "sha256_crypt" => {
            let params = sha_crypt::Sha256Params::new(rounds.unwrap_or(5000))
                .map_err(|_| err("password_hash: invalid rounds"))?;
            let h = sha_crypt::sha256_crypt_b64(pw.as_bytes(), salt.as_bytes(), &params)
                .map_err(|_| err("password_hash: hashing failed"))?;
            let salt: String = salt.chars().take(16).collect();
            Ok(format!("$5${}{salt}${h}", rounds_prefix(rounds)))
        }
        other => Err(err(format!(
            "password_hash: unsupported hash type {other:?} (use sha512 or sha256)"
        ))),
    }
}

/// A crypt(3) hash of `pw` with `salt` (random, of `salt_size` characters,
/// when `None`), for `vars_prompt`'s `encrypt`; the error names what is
/// unsupported.
pub fn crypt_hash(
    pw: &str,
    hashtype: &str,
    salt: Option<&str>,
    salt_size: Option<usize>,
) -> Result<String, Error> {
    let salt = match salt {
        Some(s) => s.to_string(),
        None => {
            let mut rng = rand::thread_rng();
            (0..salt_size.unwrap_or(16))
                .map(|_| CRYPT_CHARS[rng.gen_range(0..CRYPT_CHARS.len())] as char)
                .collect()
        }
    };
    crypt(pw, hashtype, &salt, None)
}

/// Ansible's `comment` filter, parameter for parameter.
fn comment(v: &Value, style: Option<String>, kw: Kwargs) -> Result<String, Error> {
    let text_in = text(v);
    let style = match style {
        Some(s) => s,
        None => kw
            .get::<Option<String>>("style")?
            .unwrap_or_else(|| "plain".into()),
    };
    let (beginning, decoration, end) = match style.as_str() {
        "plain" => ("", "# ", ""),
        "erlang" => ("", "% ", ""),
        "c" => ("", "// ", ""),
        "cblock" => ("/*", " * ", " */"),
        "xml" => ("<!--", " - ", "-->"),
        other => return Err(err(format!("Invalid style '{other}'."))),
    };
    let mut p: BTreeMap<&str, String> = BTreeMap::new();
    let prepost = kw
        .get::<Option<String>>("decoration")?
        .unwrap_or_else(|| decoration.to_string());
    p.insert("newline", "\n".into());
    p.insert("beginning", String::new());
    p.insert("prefix", prepost.trim_end().to_string());
    p.insert("prefix_count", "1".into());
    p.insert("decoration", String::new());
    p.insert("postfix", prepost.trim_end().to_string());
    p.insert("postfix_count", "1".into());
    p.insert("end", String::new());
    // The style's own parameters, then the caller's.
    if !beginning.is_empty() {
        p.insert("beginning", beginning.into());
    }
    p.insert("decoration", decoration.into());
    if !end.is_empty() {
        p.insert("end", end.into());
    }
    for key in [
        "newline",
        "beginning",
        "prefix",
        "prefix_count",
        "decoration",
        "postfix",
        "postfix_count",
        "end",
    ] {
        if let Some(val) = kw.get::<Option<Value>>(key)? {
            p.insert(key, text(&val));
        }
    }
    kw.assert_all_used()?;
    let nl = p["newline"].clone();
    let count = |k: &str| p[k].parse::<usize>().unwrap_or(1);
    let mut out = String::new();
    if !p["beginning"].is_empty() {
        out.push_str(&format!("{}{nl}", p["beginning"]));
    }
    if !p["prefix"].is_empty() {
        let unit = if p["prefix"] != nl {
            format!("{}{nl}", p["prefix"])
        } else {
            nl.clone()
        };
        out.push_str(&unit.repeat(count("prefix_count")));
    }
    let deco = &p["decoration"];
    let body = format!("{deco}{}", text_in.replace(&nl, &format!("{nl}{deco}")))
        .replace(&format!("{deco}{nl}"), &format!("{}{nl}", deco.trim_end()));
    out.push_str(&body);
    for _ in 0..count("postfix_count") {
        out.push_str(&nl);
        out.push_str(&p["postfix"]);
    }
    if !p["end"].is_empty() {
        out.push_str(&format!("{nl}{}", p["end"]));
    }
    Ok(out)
}

fn to_uuid(name: &str, ns: Option<&str>) -> Result<String, Error> {
    use sha1::Digest;
    let ns = ns.unwrap_or("361E6D51-FAEC-444A-9079-341386DA8E2E");
    // Python's uuid.UUID() accepts the hex digits with or without braces,
    // dashes and a `urn:uuid:` prefix.
    let digits = ns
        .trim_start_matches("urn:")
        .trim_start_matches("uuid:")
        .trim_matches(|c| c == '{' || c == '}')
        .replace('-', "");
    let ns_bytes = hex::decode(&digits)
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| {
            err(format!(
                "Invalid value '{ns}' for 'namespace': badly formed hexadecimal UUID string"
            ))
        })?;
    let mut h = sha1::Sha1::new();
    h.update(&ns_bytes);
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    ))
}

/// Python's `urllib.parse.urlsplit` as a dict of its attributes (in the
/// alphabetical order Ansible lists them), or one attribute of it.
fn urlsplit(v: &str, query: Option<&str>) -> Result<Value, Error> {
    let parts = split_url(v)?;
    match query.filter(|q| !q.is_empty()) {
        None => Ok(Value::from_object(parts)),
        Some(q) => parts
            .get(&Value::from(q))
            .cloned()
            .ok_or_else(|| err(format!("urlsplit: unknown URL component: {q}"))),
    }
}

fn split_url(url: &str) -> Result<ValueMap, Error> {
    // Python strips leading C0 controls and spaces, and drops tabs and newlines.
    let url: String = url
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let mut rest = url.as_str();
    let mut scheme = String::new();
    if let Some(i) = rest.find(':') {
        let cand = &rest[..i];
        if i > 0
            && cand.starts_with(|c: char| c.is_ascii_alphabetic())
            && cand
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            scheme = cand.to_ascii_lowercase();
            rest = &rest[i + 1..];
        }
    }
    let mut netloc = "";
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        netloc = &after[..end];
        rest = &after[end..];
        if netloc.contains('[') != netloc.contains(']') {
            return Err(err("Invalid IPv6 URL"));
        }
    }
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo, hostinfo) = match netloc.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, netloc),
    };
    let (username, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Value::from(n), Value::from(p)),
            None => (Value::from(u), Value::from(())),
        },
        None => (Value::from(()), Value::from(())),
    };
    let (host, port) = if hostinfo.contains('[') {
        let inner = hostinfo.split_once('[').map_or("", |x| x.1);
        let (h, after) = inner.split_once(']').unwrap_or((inner, ""));
        (h, after.split_once(':').map_or("", |x| x.1))
    } else {
        hostinfo.split_once(':').unwrap_or((hostinfo, ""))
    };
    let hostname = if host.is_empty() {
        Value::from(())
    } else {
        Value::from(host.to_lowercase())
    };
    let port = if port.is_empty() {
        Value::from(())
    } else if port.chars().all(|c| c.is_ascii_digit()) {
        match port.parse::<u32>() {
            Ok(p) if p <= 65535 => Value::from(p),
            _ => return Err(err("Port out of range 0-65535")),
        }
    } else {
        return Err(err(format!(
            "Port could not be cast to integer value as '{port}'"
        )));
    };
    let mut out = ValueMap::new();
    out.insert(Value::from("fragment"), Value::from(fragment));
    out.insert(Value::from("hostname"), hostname);
    out.insert(Value::from("netloc"), Value::from(netloc));
    out.insert(Value::from("password"), password);
    out.insert(Value::from("path"), Value::from(path));
    out.insert(Value::from("port"), port);
    out.insert(Value::from("query"), Value::from(query));
    out.insert(Value::from("scheme"), Value::from(scheme));
    out.insert(Value::from("username"), username);
    Ok(out)
}

/// Jinja's `urlencode`: a string (or scalar) percent-quoted with `/` kept;
/// a dict or a list of pairs as a query string.
fn urlencode(v: &Value) -> Result<String, Error> {
    fn quote(v: &Value, for_qs: bool) -> String {
        let s = match v.as_str() {
            Some(s) => s.to_string(),
            None => native::python_repr(v),
        };
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || (!for_qs && b == b'/') {
                out.push(b as char);
            } else if for_qs && b == b' ' {
                out.push('+');
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    let pairs: Vec<(Value, Value)> = match v.kind() {
        ValueKind::Map => v
            .try_iter()?
            .map(|k| {
                let val = v.get_item(&k).unwrap_or_default();
                (k, val)
            })
            .collect(),
        ValueKind::Seq | ValueKind::Iterable => {
            let mut out = Vec::new();
            for pair in v.try_iter()? {
                let mut it = pair.try_iter()?;
                let k = it.next().unwrap_or_default();
                let val = it.next().unwrap_or_default();
                out.push((k, val));
            }
            out
        }
        _ => return Ok(quote(v, false)),
    };
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k, true), quote(v, true)))
        .collect::<Vec<_>>()
        .join("&"))
}

fn urldecode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `map`, minijinja's, plus a record of why an item came out undefined:
/// `items | map(attribute='name')` over an item without `name` keeps an
/// undefined value (so `select('defined')` can drop it), and a result still
/// holding it fails with "object of type 'dict' has no attribute 'name'".
fn map(state: &mut State, value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    // Ansible's wrappers of Jinja's map/select/reject pass an undefined
    // value through (`not_defined | map('upper') is undefined`).
    if value.is_undefined() {
        return Ok(Value::UNDEFINED);
    }
    map_defined(state, value, args).map(Value::from)
}

fn map_defined(
    state: &mut State,
    value: Value,
    args: Rest<ValueOrKwargs>,
) -> Result<Vec<Value>, Error> {
    let attribute = args
        .iter()
        .filter(|a| a.is_kwargs())
        .filter_map(|a| Kwargs::try_from((**a).clone()).ok())
        .find(|kw| kw.has("attribute") && !kw.has("default"))
        .and_then(|kw| kw.peek::<Value>("attribute").ok());
    let out = minijinja::filters::map(state, value.clone(), args)?;
    if let Some(attr) = attribute {
        if let Some(i) = out.iter().position(Value::is_undefined) {
            let item = value
                .try_iter()
                .ok()
                .and_then(|mut it| it.nth(i))
                .unwrap_or_default();
            let printed = match attr.as_str() {
                Some(a) => format!("'{a}'"),
                None => attr.to_string(),
            };
            if let Some(ctx) = state
                .lookup(CTX_KEY)
                .and_then(|c| c.downcast_object::<RenderCtx>())
            {
                ctx.note_undefined(format!(
                    "object of type '{}' has no attribute {printed}",
                    native::python_type_name(&item)
                ));
            }
        }
    }
    Ok(out)
}

/// `unique`: minijinja's, with ansible-core's two failures. Input that is
/// not a collection fails as Python words it, and items that cannot be
/// hashed (dicts, lists) fail when `case_sensitive` or `attribute` is given,
/// because ansible-core then cannot fall back from Jinja's filter (which
/// hashes) to its own (which compares).
fn unique(state: &State, values: Value, kwargs: Kwargs) -> Result<Value, Error> {
    if !matches!(
        values.kind(),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable | ValueKind::String
    ) {
        return Err(err(format!(
            "'{}' object is not iterable",
            native::python_type_name(&values)
        )));
    }
    let attr = kwargs.peek::<Option<Value>>("attribute")?;
    if kwargs.has("case_sensitive") || attr.is_some() {
        let unhashable = values.try_iter()?.find_map(|item| {
            let compared = match attr.as_ref().and_then(|a| a.as_str()) {
                Some(path) => path
                    .split('.')
                    .fold(item, |v, part| match part.parse::<i64>() {
                        Ok(i) => v.get_item(&Value::from(i)).unwrap_or_default(),
                        Err(_) => v.get_attr(part).unwrap_or_default(),
                    }),
                None => item,
            };
            matches!(compared.kind(), ValueKind::Map | ValueKind::Seq).then_some(compared)
        });
        if let Some(v) = unhashable {
            return Err(err(format!(
                "Jinja2's unique filter failed and we cannot fall back to Ansible's version as it \
                 does not support the parameters supplied: unhashable type: '{}'",
                native::python_type_name(&v)
            )));
        }
    }
    minijinja::filters::unique(state, values, kwargs)
}

/// Plain data: every sequence-like value (a `groupby` group, a tuple) a list,
/// mappings with their values made plain, scalars as they are.
fn finalize(v: &Value) -> Value {
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => match v.try_iter() {
            Ok(items) => Value::from(items.map(|i| finalize(&i)).collect::<Vec<_>>()),
            Err(_) => v.clone(),
        },
        ValueKind::Map => match v.try_iter() {
            Ok(keys) => Value::from_object(
                keys.map(|k| {
                    let val = v.get_item(&k).unwrap_or_default();
                    (k, finalize(&val))
                })
                .collect::<super::native::ValueMap>(),
            ),
            Err(_) => v.clone(),
        },
        _ => v.clone(),
    }
}

/// Jinja2's `default(default_value='', boolean=False)`: minijinja's own takes
/// its arguments by position only, and Ansible content names them
/// (`default('x', boolean=true)`).
fn default(
    value: &Value,
    other: Option<Value>,
    boolean: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let other = match other {
        Some(o) => Some(o),
        None => kwargs.get::<Option<Value>>("default_value")?,
    };
    let boolean = match boolean {
        Some(b) => b,
        None => kwargs.get::<Option<bool>>("boolean")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    Ok(if value.is_undefined() || (boolean && !value.is_true()) {
        other.unwrap_or_else(|| Value::from(""))
    } else {
        value.clone()
    })
}

/// Undefined in, undefined out (Ansible's wrappers of Jinja's `select`,
/// `reject`, `selectattr` and `rejectattr`); else the builtin's list.
fn undefined_or(
    v: Value,
    f: impl FnOnce(Value) -> Result<Vec<Value>, Error>,
) -> Result<Value, Error> {
    if v.is_undefined() {
        return Ok(Value::UNDEFINED);
    }
    f(v).map(Value::from)
}
