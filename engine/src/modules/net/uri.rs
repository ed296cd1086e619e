//! `uri`: makes an HTTP request from the host and reports the response.
//!
//! As in Ansible, the request is made on the target, here with `curl`: one
//! round trip checks `creates`/`removes`, sends the body on stdin
//! (`--data-binary @-`), dumps the response headers with `-D` and reads the
//! status with `-w`. The controller then parses headers (lowercased, dashes
//! turned into underscores, as Ansible exposes them), decodes JSON bodies and
//! checks the status against `status_code`. A request changes nothing on the
//! host unless `dest` is written, so `changed` only reports a new `dest`.

use minijinja::value::ValueKind;
use minijinja::Value;

use crate::modules::args::{scalar_string, ModuleArgs, Params};
use crate::modules::kit::Answers;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Uri;

/// Exit status of the request script when `curl` is missing.
const NO_CURL: i32 = 93;

/// Percent-encodes one `application/x-www-form-urlencoded` component.
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The pairs of a map value (string keys, scalar or JSON values).
fn pairs(v: &Value) -> Option<Vec<(String, Value)>> {
    if v.kind() != ValueKind::Map {
        return None;
    }
    let keys: Vec<Value> = v.try_iter().ok()?.collect();
    Some(
        keys.into_iter()
            .filter_map(|k| Some((k.to_string(), v.get_item(&k).ok()?)))
            .collect(),
    )
}

/// Parses a `curl -D` dump: the last response's header block (earlier
/// blocks belong to redirects or `100 Continue`), as (name, value) pairs.
pub fn parse_headers(dump: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    for line in dump.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            blocks.push(Vec::new());
        } else if let Some((k, v)) = line.split_once(':') {
            if let Some(b) = blocks.last_mut() {
                b.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    blocks.pop().unwrap_or_default()
}

/// The header name as Ansible exposes it in results (`Content-Type` →
/// `content_type`).
pub fn result_key(name: &str) -> String {
    name.to_lowercase().replace('-', "_")
}

/// The arguments `uri` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "uri",
    sets: &[&[
        &["url"],
        &["method"],
        &["body"],
        &["body_format"],
        &["status_code"],
        &["return_content"],
        &["headers"],
        &["validate_certs"],
        &["creates"],
        &["removes"],
        &["timeout"],
        &["dest"],
        &["follow_redirects"],
        &["url_username", "user"],
        &["url_password", "password"],
        &["force_basic_auth"],
        &["use_proxy"],
        &["http_agent"],
        &["unix_socket"],
        &["ca_path"],
        &["ciphers"],
        &["client_cert"],
        &["client_key"],
        &["decompress"],
        &["use_gssapi"],
        &["use_netrc"],
        &["unredirected_headers"],
        &["unsafe_writes"],
        &["attributes"],
        &["mode"],
        &["owner"],
        &["group"],
        &["seuser"],
        &["serole"],
        &["setype"],
        &["selevel"],
    ]],
};

#[async_trait::async_trait]
impl Module for Uri {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let url = a.req_string(&["url"])?;
        let method = a
            .string(&["method"])?
            .unwrap_or_else(|| "GET".into())
            .to_uppercase();
        let body = a.value(&["body"]);
        let body_format = a
            .choice(
                &["body_format"],
                &["raw", "json", "form-urlencoded"],
                Some("raw"),
            )?
            .unwrap();
        let status_code = a
            .list(&["status_code"])?
            .unwrap_or_else(|| vec!["200".into()]);
        let return_content = a.bool(&["return_content"], false)?;
        let headers = a.value(&["headers"]);
        let validate_certs = a.bool(&["validate_certs"], true)?;
        let creates = a.string(&["creates"])?;
        let removes = a.string(&["removes"])?;
        let timeout = a.int(&["timeout"])?.unwrap_or(30);
        let dest = a.string(&["dest"])?;
        let follow = a
            .string(&["follow_redirects"])?
            .unwrap_or_else(|| "safe".into());
        let user = a.string(&["url_username", "user"])?;
        let password = a.string(&["url_password", "password"])?;
        let force_basic_auth = a.bool(&["force_basic_auth"], false)?;
        a.ignore(&[
            "use_proxy",
            "http_agent",
            "unix_socket",
            "ca_path",
            "ciphers",
            "client_cert",
            "client_key",
            "decompress",
            "use_gssapi",
            "use_netrc",
            "unredirected_headers",
            "unsafe_writes",
            "attributes",
            "mode",
            "owner",
            "group",
            "seuser",
            "serole",
            "setype",
            "selevel",
        ]);
        a.finish()?;

        let mut wanted = Vec::new();
        for s in &status_code {
            match s.trim().parse::<i64>() {
                Ok(n) => wanted.push(n),
                Err(_) => {
                    return Err(ModuleError::Args(format!(
                        "status_code must be an integer or a list of integers, got {s:?}"
                    )))
                }
            }
        }
        // Like Ansible's uri, which does not support check mode: a request
        // may have side effects the module cannot predict.
        let mut planned =
            ModuleResult::ok().with_msg("remote module (uri) does not support check mode");
        planned.skipped = true;
        Ok(Plan::change(planned, async move {
            let mut hdrs: Vec<(String, String)> = headers
                .as_ref()
                .and_then(pairs)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, scalar_string(&v).unwrap_or_else(|| v.to_string())))
                .collect();
            let has_ct = hdrs
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
            let payload: Option<Vec<u8>> = match &body {
                None => None,
                Some(b) => Some(match body_format.as_str() {
                    "json" => {
                        if !has_ct {
                            hdrs.push(("Content-Type".into(), "application/json".into()));
                        }
                        match b.as_str() {
                            Some(s) if b.kind() == ValueKind::String => s.as_bytes().to_vec(),
                            _ => serde_json::to_vec(b).map_err(|e| {
                                ModuleError::Args(format!("failed to encode body as JSON: {e}"))
                            })?,
                        }
                    }
                    "form-urlencoded" => {
                        if !has_ct {
                            hdrs.push((
                                "Content-Type".into(),
                                "application/x-www-form-urlencoded".into(),
                            ));
                        }
                        match pairs(b) {
                            Some(ps) => ps
                                .iter()
                                .map(|(k, v)| {
                                    format!(
                                        "{}={}",
                                        form_encode(k),
                                        form_encode(
                                            &scalar_string(v).unwrap_or_else(|| v.to_string())
                                        )
                                    )
                                })
                                .collect::<Vec<_>>()
                                .join("&")
                                .into_bytes(),
                            None => scalar_string(b).unwrap_or_default().into_bytes(),
                        }
                    }
                    _ => scalar_string(b)
                        .unwrap_or_else(|| b.to_string())
                        .into_bytes(),
                }),
            };

            let mut curl = format!(
                "curl -sS {} --max-time {timeout} -D \"$h\" -o \"$b\" -w '%{{http_code}} %{{num_redirects}} %{{time_total}} %{{url_effective}}'",
                if method == "HEAD" {
                    "-I".to_string()
                } else {
                    format!("-X {}", quote(&method))
                }
            );
            if !validate_certs {
                curl.push_str(" -k");
            }
            let follows = match follow.as_str() {
                "all" | "yes" | "true" | "urllib2" => true,
                "safe" => method == "GET" || method == "HEAD",
                _ => false,
            };
            if follows {
                curl.push_str(" -L");
            }
            for (k, v) in &hdrs {
                curl.push_str(&format!(" -H {}", quote(&format!("{k}: {v}"))));
            }
            if let Some(u) = &user {
                curl.push_str(&format!(
                    " -u {}",
                    quote(&format!("{u}:{}", password.as_deref().unwrap_or("")))
                ));
                if force_basic_auth {
                    curl.push_str(" --basic");
                }
            }
            if payload.is_some() {
                curl.push_str(" --data-binary @-");
            }
            curl.push_str(&format!(" {}", quote(&url)));

            let token = format!("@@KEEL-URI-{:016x}@@", rand::random::<u64>());
            let sec = |name: &str| format!("printf '\\n%s %s\\n' '{token}' '{name}'\n");
            let mut script = String::new();
            if let Some(c) = &creates {
                script.push_str(&format!(
                    "if [ -e {} ]; then {}echo creates; exit 0; fi\n",
                    quote(c),
                    sec("skip")
                ));
            }
            if let Some(r) = &removes {
                script.push_str(&format!(
                    "if [ ! -e {} ]; then {}echo removes; exit 0; fi\n",
                    quote(r),
                    sec("skip")
                ));
            }
            script.push_str(&format!(
                "command -v curl >/dev/null 2>&1 || exit {NO_CURL}\n\
                 h=$(mktemp) && b=$(mktemp) || exit 1\ntrap 'rm -f \"$h\" \"$b\"' EXIT\n\
                 w=$({curl} 2>\"$h.err\"); rc=$?\n\
                 {}echo $rc\n{}printf '%s' \"$w\"\n{}cat \"$h.err\"; rm -f \"$h.err\"\n{}cat \"$h\"\n",
                sec("rc"),
                sec("w"),
                sec("err"),
                sec("headers"),
            ));
            if let Some(d) = &dest {
                let name = url
                    .split(['?', '#'])
                    .next()
                    .unwrap_or("")
                    .rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("index.html");
                script.push_str(&format!(
                    "d={}; [ -d \"$d\" ] && d=\"${{d%/}}/\"{}\n\
                     if [ $rc -eq 0 ]; then {}printf '%s' \"$d\"\n\
                     if ! [ -f \"$d\" ] || ! cmp -s \"$b\" \"$d\"; then cp \"$b\" \"$d\" && {}echo 1; fi; fi\n",
                    quote(d),
                    quote(name),
                    sec("dest"),
                    sec("dest_changed"),
                ));
            }
            if return_content || dest.is_none() {
                script.push_str(&format!("{}cat \"$b\"\n", sec("body")));
            }
            let out = ctx.run(script, payload).await?;
            if out.rc == NO_CURL {
                return Ok(ModuleResult::failed(
                    "curl is not installed on the host; the uri module needs it to make requests",
                ));
            }
            let ans = Answers::parse(&token, &out.stdout);
            if out.rc != 0 {
                return Ok(ModuleResult::failed(crate::modules::kit::failure_text(
                    &out,
                )));
            }
            match ans.trimmed("skip") {
                "creates" => {
                    let c = creates.unwrap_or_default();
                    return Ok(ModuleResult::ok()
                        .with("stdout", format!("skipped, since '{c}' exists"))
                        .with_msg(format!("skipped, since '{c}' exists")));
                }
                "removes" => {
                    let r = removes.unwrap_or_default();
                    return Ok(ModuleResult::ok()
                        .with("stdout", format!("skipped, since '{r}' does not exist"))
                        .with_msg(format!("skipped, since '{r}' does not exist")));
                }
                _ => {}
            }

            let rc: i32 = ans.trimmed("rc").parse().unwrap_or(-1);
            let mut res = ModuleResult::ok();
            let w = ans.text("w");
            let mut parts = w.splitn(4, ' ');
            let code: i64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let redirects: i64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let elapsed: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
            let effective = parts.next().unwrap_or(&url).to_string();
            // curl failing without a response (refused, DNS, timeout) is
            // Ansible's status -1.
            let status = if rc != 0 && code == 0 { -1 } else { code };
            let headers = parse_headers(ans.text("headers"));
            let header = |name: &str| {
                headers
                    .iter()
                    .rev()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            for (k, v) in &headers {
                res.data.insert(result_key(k), v.clone().into());
            }
            res.data.insert("url".into(), effective.into());
            res.data.insert("status".into(), status.into());
            res.data.insert("redirected".into(), (redirects > 0).into());
            res.data
                .insert("elapsed".into(), (elapsed.round() as i64).into());
            res.data
                .insert("cookies".into(), crate::modules::args::dict::<String>([]));
            let content = ans.text("body").to_string();
            let ctype = header("Content-Type").unwrap_or_default().to_lowercase();
            if ctype.contains("json") {
                if let Ok(j) = serde_json::from_str::<serde_json::Value>(&content) {
                    res.data
                        .insert("json".into(), crate::template::value_from_json(&j));
                }
            }
            if return_content {
                res.data.insert("content".into(), content.into());
            }
            if let Some(d) = ans.text("dest").lines().next().filter(|_| dest.is_some()) {
                res.data.insert("path".into(), d.to_string().into());
                res.changed = ans.yes("dest_changed");
            }
            let msg = if status == -1 {
                format!("Request failed: {}", ans.trimmed("err"))
            } else if status >= 400 {
                format!("HTTP Error {status}")
            } else {
                format!(
                    "OK ({} bytes)",
                    header("Content-Length").unwrap_or_else(|| "unknown".into())
                )
            };
            if !wanted.contains(&status) {
                res.failed = true;
                res.msg = Some(format!(
                    "Status code was {status} and not [{}]: {msg}",
                    wanted
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            } else {
                res.msg = Some(msg);
            }
            Ok(res)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_header_block_wins_after_redirects() {
        let dump = "HTTP/1.1 302 Found\r\nLocation: /b\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Thing: a:b\r\n\r\n";
        let h = parse_headers(dump);
        assert_eq!(
            h,
            vec![
                ("Content-Type".to_string(), "text/plain".to_string()),
                ("X-Thing".to_string(), "a:b".to_string())
            ]
        );
        assert_eq!(result_key("Content-Type"), "content_type");
    }

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
