//! Dynamic inventory: executables run with `--list` (and `--host NAME` when
//! the output has no `_meta.hostvars`), plus the JSON format they print, which
//! `http.rs` shares. Groups map to a host list or to `{hosts, vars, children}`;
//! a mapping without those keys is a host of the same name carrying those vars.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indexmap::IndexSet;
use minijinja::Value;
use serde_json::Value as Json;

use super::{Inventory, LoadOptions};
use crate::diag::Diagnostic;

/// Runs `path --list` and parses its JSON.
pub(super) fn run_list(path: &Path, opts: &LoadOptions) -> Result<Json, Diagnostic> {
    run_json(path, &["--list"], opts)
}

/// Runs `path --host NAME` and parses its JSON.
pub(super) fn run_host(path: &Path, host: &str, opts: &LoadOptions) -> Result<Json, Diagnostic> {
    run_json(path, &["--host", host], opts)
}

fn run_json(path: &Path, args: &[&str], opts: &LoadOptions) -> Result<Json, Diagnostic> {
    let what = format!("inventory script '{} {}'", path.display(), args.join(" "));
    let out = run_with_timeout(path, args, opts.script_timeout)
        .map_err(|e| Diagnostic::new(format!("{what}: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let with_stderr = |msg: String| {
        let d = Diagnostic::new(msg);
        if stderr.is_empty() {
            d
        } else {
            d.hint(format!("the script wrote to stderr:\n{stderr}"))
        }
    };
    if !out.status.success() {
        let code = out
            .status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "a signal".into());
        return Err(with_stderr(format!("{what} failed (exit status {code})")));
    }
    parse_json(&out.stdout)
        .map_err(|e| with_stderr(format!("{what} did not print valid JSON: {e}")))
}

/// Parses inventory JSON; an empty body counts as `{}` as Ansible allows.
pub(super) fn parse_json(body: &[u8]) -> Result<Json, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Json::Object(Default::default()));
    }
    let v: Json = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err(format!("expected a JSON object, got {}", json_type(&v)));
    }
    Ok(v)
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn run_with_timeout(path: &Path, args: &[&str], timeout: Duration) -> Result<Output, String> {
    // `-i inv.sh` names the file in the current directory, as it does for
    // ansible-playbook; a bare name given to `Command` would be looked up
    // in $PATH instead.
    let dotted;
    let path = if path.parent() == Some(Path::new("")) {
        dotted = Path::new(".").join(path);
        dotted.as_path()
    } else {
        path
    };
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    // Drain both pipes on threads so a chatty script cannot block on a full pipe.
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", timeout.as_secs_f64()));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// A variable's value from inventory JSON, read as ansible-core's
/// `inventory_legacy` JSON profile reads it: an object holding the key
/// `__ansible_unsafe` stands for that string marked `!unsafe`, so a value
/// an inventory took from its users is data and never a template; one
/// holding `__ansible_vault` stands for that inline vault, decrypted with the
/// run's secrets (or failing where it is used when they do not open it).
/// Other keys beside either are ignored, as there.
pub(crate) fn var_value(v: &Json, place: &dyn std::fmt::Display) -> Result<Value, String> {
    crate::template::value_from_json_with(v, &|m| {
        let string = |key: &str| {
            m.get(key).map(|u| match u {
                Json::String(s) => Ok(s.as_str()),
                other => Err(format!("{key} must be a string, got {}", json_type(other))),
            })
        };
        if let Some(s) = string("__ansible_unsafe") {
            return Some(s.map(crate::vars::unsafe_string));
        }
        string("__ansible_vault").map(|c| c.map(|c| crate::vault::inline_value(c, place)))
    })
}

/// Applies `--list` JSON to the inventory. When there is no `_meta.hostvars`,
/// `host_vars` is asked for each host's vars (the `--host` call).
pub(super) fn apply_json(
    inv: &mut Inventory,
    data: Json,
    origin: &str,
    source: Option<&Path>,
    host_vars: &mut dyn FnMut(&str) -> Result<Json, Diagnostic>,
) -> Result<(), Diagnostic> {
    let Json::Object(map) = data else {
        return Err(Diagnostic::new(format!("{origin}: expected a JSON object")));
    };
    let mut hosts: IndexSet<String> = IndexSet::new();
    let mut meta: Option<serde_json::Map<String, Json>> = None;
    for (group, gdata) in map {
        if group == "_meta" {
            match gdata.get("hostvars") {
                Some(Json::Object(hv)) => meta = Some(hv.clone()),
                Some(_) => {
                    return Err(Diagnostic::new(format!(
                        "{origin}: _meta.hostvars must be an object"
                    )))
                }
                None => {}
            }
            continue;
        }
        apply_group(inv, &group, gdata, origin, source, &mut hosts)?;
    }
    for host in hosts {
        let vars = match &meta {
            Some(hv) => hv.get(&host).cloned().unwrap_or(Json::Null),
            None => host_vars(&host)?,
        };
        match vars {
            Json::Null => {}
            Json::Object(vars) => {
                for (k, v) in vars {
                    let place = format_args!("{origin}: var '{k}' of host '{host}'");
                    let value = var_value(&v, &place)
                        .map_err(|e| Diagnostic::new(format!("{place}: {e}")))?;
                    inv.set_host_var(&host, &k, value);
                }
            }
            other => {
                return Err(Diagnostic::new(format!(
                    "{origin}: vars of host '{host}' must be an object, got {}",
                    json_type(&other)
                )))
            }
        }
    }
    Ok(())
}

fn apply_group(
    inv: &mut Inventory,
    group: &str,
    gdata: Json,
    origin: &str,
    source: Option<&Path>,
    hosts: &mut IndexSet<String>,
) -> Result<(), Diagnostic> {
    inv.ensure_group(group);
    let (host_list, vars, children) = match gdata {
        Json::Object(mut m) => {
            if !["hosts", "vars", "children"]
                .iter()
                .any(|k| m.contains_key(*k))
            {
                // Old shorthand: a group that is one host with these vars.
                (
                    Some(Json::Array(vec![Json::String(group.to_string())])),
                    Some(Json::Object(m)),
                    None,
                )
            } else {
                (m.remove("hosts"), m.remove("vars"), m.remove("children"))
            }
        }
        other => (Some(other), None, None),
    };
    let bad = |what: &str, v: &Json| {
        Diagnostic::new(format!(
            "{origin}: group '{group}' has bad data for {what}: expected {}, got {}",
            if what == "vars" {
                "an object"
            } else {
                "a list"
            },
            json_type(v)
        ))
    };
    match host_list {
        None | Some(Json::Null) => {}
        Some(Json::Array(items)) => {
            for h in items {
                let name = match h {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                inv.add_host(&name, group, source);
                hosts.insert(name);
            }
        }
        Some(other) => return Err(bad("the host list", &other)),
    }
    match vars {
        None | Some(Json::Null) => {}
        Some(Json::Object(vars)) => {
            for (k, v) in vars {
                let place = format_args!("{origin}: var '{k}' of group '{group}'");
                let value =
                    var_value(&v, &place).map_err(|e| Diagnostic::new(format!("{place}: {e}")))?;
                inv.set_group_var(group, &k, value);
            }
        }
        Some(other) => return Err(bad("vars", &other)),
    }
    match children {
        None | Some(Json::Null) => {}
        Some(Json::Array(items)) => {
            for c in items {
                let child = match c {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                inv.add_child(group, &child)
                    .map_err(|m| Diagnostic::new(format!("{origin}: {m}")))?;
            }
        }
        Some(other) => return Err(bad("children", &other)),
    }
    Ok(())
}
