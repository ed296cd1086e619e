//! `known_hosts`: adds or removes one host's key in an SSH `known_hosts`
//! file on the host. Like ansible-core it lets the host's `ssh-keygen -F`
//! decide which lines name the host (hashed entries, patterns), so Keel and
//! OpenSSH agree on what a line means. One query round trip learns the file,
//! the search and the key's sanity check; the decision (and the diff, which
//! is always returned, as ansible-core does) is made on the controller; one
//! apply round trip writes the file atomically.

use base64::Engine as _;
use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::diff::diff_value;
use crate::modules::kit::write::{FileWrite, Source};
use crate::modules::kit::{apply, Query};
use crate::modules::{Args, FileDiff, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;
use crate::transport::known_hosts::hmac_sha1;

pub struct KnownHosts;

/// The arguments `known_hosts` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "known_hosts",
    sets: &[&[
        &["name", "host"],
        &["key"],
        &["path"],
        &["hash_host"],
        &["state"],
    ]],
};

#[async_trait::async_trait]
impl Module for KnownHosts {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let name = a.req_string(&["name", "host"])?;
        let key = a.string(&["key"])?.filter(|k| !k.is_empty());
        let path = a
            .string(&["path"])?
            .unwrap_or_else(|| "~/.ssh/known_hosts".into());
        let hash_host = a.bool(&["hash_host"], false)?;
        let present = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .as_deref()
            != Some("absent");
        a.finish()?;

        let host = name.to_lowercase();
        if key.is_none() && present {
            return Ok(Plan::done(ModuleResult::failed(
                "No key specified when adding a host",
            )));
        }
        let key = key.map(|k| {
            let k = if hash_host {
                hash_host_key(&host, &k)
            } else {
                k
            };
            if k.ends_with('\n') {
                k
            } else {
                k + "\n"
            }
        });
        if key.is_some() && comma_list(&host) {
            return Ok(Plan::done(ModuleResult::failed(
                "Comma separated list of names is not supported. Please pass a single name to lookup in the known_hosts file.",
            )));
        }

        // One round trip: the expanded path, the file, ssh-keygen's search
        // of it and, for a key, whether ssh-keygen thinks it names the host.
        let mut q = Query::new();
        let mut pre = format!(
            "p={}\ncase \"$p\" in \"~\"|\"~/\"*) p=\"$HOME${{p#\\~}}\" ;; esac\necho \"P $p\"\n",
            quote(&path)
        );
        pre.push_str("command -v ssh-keygen >/dev/null 2>&1 && echo 'KEYGEN 1'\n");
        pre.push_str(&format!(
            "kso=; kse=; ksrc=0\nif [ -e \"$p\" ]; then kt=$(mktemp) || exit 1\nkso=$(ssh-keygen -F {h} -f \"$p\" 2>\"$kt\"); ksrc=$?\nkse=$(cat -- \"$kt\"); rm -f -- \"$kt\"; echo 'EXISTS 1'\nfi\necho \"SRC $ksrc\"\n",
            h = quote(&host)
        ));
        if let Some(k) = &key {
            pre.push_str(&format!(
                "kt=$(mktemp) || exit 1\nprintf '%s' {k} > \"$kt\"\nif [ -n \"$(ssh-keygen -F {h} -f \"$kt\" 2>/dev/null)\" ]; then echo 'SANE 1'; fi\nrm -f -- \"$kt\"\n",
                k = quote(k),
                h = quote(&host)
            ));
        }
        q.raw(&pre);
        q.section("search", "printf '%s' \"$kso\"");
        q.section("search_err", "printf '%s' \"$kse\"");
        q.file_expr("file", "\"$p\"");
        let ans = q.run(ctx).await?;
        let path = ans.line("P").unwrap_or(&path).to_string();
        if ans.line("KEYGEN").is_none() {
            return Ok(Plan::done(ModuleResult::failed(
                "Failed to find required executable \"ssh-keygen\" in paths",
            )));
        }
        if key.is_some() && ans.line("SANE").is_none() {
            return Ok(Plan::done(ModuleResult::failed(
                "Host parameter does not match hashed host field in supplied key",
            )));
        }
        let exists = ans.line("EXISTS").is_some();
        let rc: i32 = ans.line("SRC").and_then(|r| r.parse().ok()).unwrap_or(0);
        let search = ans.text("search").to_string();
        let search_err = ans.text("search_err").to_string();
        let before = ans.file("file").map(str::to_string);

        let found = if !exists || (search.is_empty() && search_err.is_empty() && rc <= 1) {
            Found::default()
        } else if rc != 0 {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "ssh-keygen failed (rc={rc}, stdout='{search}',stderr='{search_err}')"
            ))));
        } else {
            match search_for_key(&search, key.as_deref()) {
                Ok(f) => f,
                Err(line) => {
                    return Ok(Plan::done(ModuleResult::failed(format!(
                        "failed to parse output of ssh-keygen for line number: '{line}'"
                    ))))
                }
            }
        };

        let diff = compute_diff(&path, before.as_deref(), &found, present, key.as_deref());
        let mut res = ModuleResult::ok()
            .with("name", name.clone())
            .with("key", key.clone().map(Value::from).unwrap_or_default())
            .with("path", path.clone())
            .with("hash_host", hash_host)
            .with("state", if present { "present" } else { "absent" })
            .with("diff", diff_value(&diff));
        if ctx.diff {
            res.diff.push(diff.clone());
        }
        // Removing a key the file does not hold changes nothing.
        if !present && found.line.is_none() && key.is_some() {
            return Ok(Plan::done(res));
        }
        let rewrite = found.replace_or_add || found.found != present;
        let remove_all = found.found && key.is_none() && !present;
        if !rewrite && !remove_all {
            return Ok(Plan::done(res));
        }
        res.changed = true;
        let planned = res.clone();
        Ok(Plan::change(planned, async move {
            if remove_all {
                // Without a key, every line naming the host goes, as
                // `ssh-keygen -R` removes them (keeping `<path>.old`).
                let script = format!(
                    "ssh-keygen -R {} -f {} >/dev/null",
                    quote(&host),
                    quote(&path)
                );
                if let Err(e) = apply(ctx, &script, None).await? {
                    return Ok(ModuleResult::failed(e));
                }
                return Ok(res);
            }
            let content = diff.after.into_bytes();
            let w = FileWrite {
                dest: &path,
                source: Source::Bytes(&content),
                mode: None,
                owner: None,
                group: None,
                backup: false,
                validate: None,
                dest_exists: before.is_some(),
                make_parents: false,
            };
            match w.run(ctx).await? {
                Ok(_) => Ok(res),
                Err(e) => Ok(ModuleResult::failed(format!(
                    "Failed to write to file '{path}': {e}"
                ))),
            }
        }))
    }
}

/// ansible-core's check for `name: a, b`.
fn comma_list(host: &str) -> bool {
    let Some(i) = host.rfind(',') else {
        return false;
    };
    host[..i].trim_end().chars().any(|c| !c.is_whitespace())
}

/// What the search of the file found for the host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Found {
    /// Some line names the host.
    found: bool,
    /// The key given differs from the one of its type in the file (or the
    /// file has none of its type): its line is replaced, or it is added.
    replace_or_add: bool,
    /// The (1-based) line of the key of the same type.
    line: Option<usize>,
}

/// ansible-core's `search_for_host_key` over `ssh-keygen -F` output: `#`
/// lines tell the line number of the key line that follows them.
fn search_for_key(out: &str, key: Option<&str>) -> Result<Found, String> {
    let Some(key) = key else {
        return Ok(Found {
            found: true,
            ..Found::default()
        });
    };
    let Some(mut new_key) = HostKey::parse(key) else {
        return Ok(Found {
            found: true,
            replace_or_add: true,
            line: None,
        });
    };
    let mut found_line = None;
    for l in out.split('\n') {
        if l.is_empty() {
            continue;
        }
        if l.starts_with('#') {
            let n = l
                .split("found: line ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| l.to_string())?;
            found_line = Some(n);
            continue;
        }
        let Some(found_key) = HostKey::parse(l) else {
            continue;
        };
        let marker = found_key.marker.as_deref().unwrap_or("");
        if marker.starts_with("@cert-authority") || marker.starts_with("@revoke") {
            if new_key == found_key {
                return Ok(Found {
                    found: true,
                    replace_or_add: false,
                    line: found_line,
                });
            }
            continue;
        }
        // A hashed entry stays hashed with its own salt.
        if new_key.host.starts_with("|1|") && found_key.host.starts_with("|1|") {
            new_key.host = found_key.host.clone();
        }
        if new_key == found_key {
            return Ok(Found {
                found: true,
                replace_or_add: false,
                line: found_line,
            });
        }
        if new_key.kind == found_key.kind {
            return Ok(Found {
                found: true,
                replace_or_add: true,
                line: found_line,
            });
        }
    }
    Ok(Found {
        found: true,
        replace_or_add: true,
        line: None,
    })
}

/// A `known_hosts` line's fields (ansible-core's `normalize_known_hosts_key`:
/// the trailing comment is not part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostKey {
    marker: Option<String>,
    host: String,
    kind: String,
    key: String,
}

impl HostKey {
    fn parse(line: &str) -> Option<HostKey> {
        let mut w = line.split_whitespace();
        let first = w.next()?;
        let (marker, host) = if first.starts_with('@') {
            (Some(first.to_string()), w.next()?)
        } else {
            (None, first)
        };
        Some(HostKey {
            marker,
            host: host.to_string(),
            kind: w.next()?.to_string(),
            key: w.next()?.to_string(),
        })
    }
}

/// Replaces the host field of `key` with `|1|salt|HMAC-SHA1(salt, host)`,
/// OpenSSH's hashed form, with a fresh random salt.
fn hash_host_key(host: &str, key: &str) -> String {
    let salt: [u8; 20] = rand::random();
    let mac = hmac_sha1(&salt, host.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parts: Vec<String> = key.split_whitespace().map(str::to_string).collect();
    let i = usize::from(parts.first().is_some_and(|p| p.starts_with('@')));
    if let Some(p) = parts.get_mut(i) {
        *p = format!("|1|{}|{}", b64.encode(salt), b64.encode(mac));
    }
    parts.join(" ")
}

/// The file before and after, as ansible-core computes its diff.
fn compute_diff(
    path: &str,
    before: Option<&str>,
    found: &Found,
    present: bool,
    key: Option<&str>,
) -> FileDiff {
    let text = before.unwrap_or("");
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    if found.replace_or_add || !present {
        if let Some(n) = found.line.filter(|n| (1..=lines.len()).contains(n)) {
            lines.remove(n - 1);
        }
    }
    let mut after: String = lines.concat();
    if present && (found.replace_or_add || found.line.is_none()) {
        after.push_str(key.unwrap_or(""));
    }
    FileDiff {
        before_header: if before.is_some() { path } else { "/dev/null" }.to_string(),
        after_header: path.to_string(),
        before: text.to_string(),
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = "example.org ssh-rsa AAAAB3Nza\n";

    #[test]
    fn search_decides_between_same_replace_and_add() {
        let out = "# Host example.org found: line 7\nexample.org ssh-rsa AAAAB3Nza\n";
        let f = search_for_key(out, Some(RSA)).unwrap();
        assert_eq!((f.found, f.replace_or_add, f.line), (true, false, Some(7)));
        let out = "# Host example.org found: line 3\nexample.org ssh-rsa OTHER\n";
        let f = search_for_key(out, Some(RSA)).unwrap();
        assert_eq!((f.found, f.replace_or_add, f.line), (true, true, Some(3)));
        let out = "# Host example.org found: line 3\nexample.org ssh-ed25519 X\n";
        let f = search_for_key(out, Some(RSA)).unwrap();
        assert_eq!((f.found, f.replace_or_add, f.line), (true, true, None));
    }

    #[test]
    fn hashed_keys_match_their_own_salt_and_keep_it() {
        let hashed = hash_host_key("example.org", RSA);
        assert!(hashed.starts_with("|1|") && hashed.ends_with(" ssh-rsa AAAAB3Nza"));
        let out = "# Host example.org found: line 2\n|1|c2FsdA==|aGFzaA== ssh-rsa AAAAB3Nza\n";
        let f = search_for_key(out, Some(&hashed)).unwrap();
        assert!(!f.replace_or_add);
    }

    #[test]
    fn diff_replaces_the_found_line_and_appends() {
        let before = "a ssh-rsa 1\nexample.org ssh-rsa OLD\nb ssh-rsa 2\n";
        let found = Found {
            found: true,
            replace_or_add: true,
            line: Some(2),
        };
        let d = compute_diff("/k", Some(before), &found, true, Some(RSA));
        assert_eq!(d.after, format!("a ssh-rsa 1\nb ssh-rsa 2\n{RSA}"));
        let d = compute_diff("/k", None, &Found::default(), true, Some(RSA));
        assert_eq!(
            (d.before_header.as_str(), d.after.as_str()),
            ("/dev/null", RSA)
        );
    }

    #[test]
    fn comma_lists_are_refused() {
        assert!(comma_list("a, b"));
        assert!(comma_list("a,b"));
        assert!(!comma_list("example.org"));
    }
}
