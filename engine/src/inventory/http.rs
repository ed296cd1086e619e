//! `http(s)://` inventory sources: a GET returning the same JSON a dynamic
//! inventory script prints for `--list`. Without `_meta.hostvars`, each host's
//! vars come from `?host=NAME`. A bearer token is sent when configured.
//!
//! Requests run on a private thread with its own small runtime, so loading
//! works the same whether or not the caller is already inside tokio.

use serde_json::Value as Json;

use super::{script, LoadOptions};
use crate::diag::Diagnostic;

/// Fetches the inventory at `url`, with `_meta.hostvars` always filled in.
pub(super) fn fetch_inventory(url: &str, opts: &LoadOptions) -> Result<Json, Diagnostic> {
    let url = url.to_string();
    let opts = opts.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Diagnostic::new(format!("cannot start HTTP client runtime: {e}")))?;
        rt.block_on(fetch_all(&url, &opts))
    })
    .join()
    .map_err(|_| Diagnostic::new("HTTP inventory thread panicked"))?
}

async fn fetch_all(url: &str, opts: &LoadOptions) -> Result<Json, Diagnostic> {
    let client = reqwest::Client::builder()
        .timeout(opts.http_timeout)
        .build()
        .map_err(|e| Diagnostic::new(format!("cannot build HTTP client: {e}")))?;
    let mut data = get_json(&client, url, opts).await?;
    let has_meta = data.get("_meta").and_then(|m| m.get("hostvars")).is_some();
    if !has_meta {
        let mut hostvars = serde_json::Map::new();
        for host in host_names(&data) {
            let sep = if url.contains('?') { '&' } else { '?' };
            let host_url = format!("{url}{sep}host={}", urlencode(&host));
            let vars = get_json(&client, &host_url, opts).await?;
            hostvars.insert(host, vars);
        }
        let meta = serde_json::json!({ "hostvars": hostvars });
        if let Json::Object(m) = &mut data {
            m.insert("_meta".into(), meta);
        }
    }
    Ok(data)
}

async fn get_json(
    client: &reqwest::Client,
    url: &str,
    opts: &LoadOptions,
) -> Result<Json, Diagnostic> {
    let mut req = client.get(url).header("Accept", "application/json");
    if let Some(token) = &opts.http_token {
        req = req.bearer_auth(token);
    }
    let what = format!("inventory URL '{url}'");
    let resp = req.send().await.map_err(|e| {
        let why = if e.is_timeout() {
            format!("timed out after {} s", opts.http_timeout.as_secs_f64())
        } else {
            error_chain(&e)
        };
        Diagnostic::new(format!("{what}: request failed: {why}"))
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Diagnostic::new(format!("{what}: reading the body failed: {e}")))?;
    if !status.is_success() {
        let snippet: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        let d = Diagnostic::new(format!("{what} answered {status}"));
        let d = if status.as_u16() == 401 || status.as_u16() == 403 {
            d.hint(format!("set {} to a valid bearer token", super::TOKEN_ENV))
        } else if snippet.trim().is_empty() {
            d
        } else {
            d.hint(format!("response body: {}", snippet.trim()))
        };
        return Err(d);
    }
    script::parse_json(&body)
        .map_err(|e| Diagnostic::new(format!("{what} did not return valid inventory JSON: {e}")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Host names in `--list` JSON, in order of appearance.
fn host_names(data: &Json) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |h: &Json| {
        let name = h
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| h.to_string());
        if !out.contains(&name) {
            out.push(name);
        }
    };
    if let Json::Object(groups) = data {
        for (group, gdata) in groups {
            if group == "_meta" {
                continue;
            }
            match gdata {
                Json::Array(hosts) => hosts.iter().for_each(&mut push),
                Json::Object(m)
                    if ["hosts", "vars", "children"]
                        .iter()
                        .any(|k| m.contains_key(*k)) =>
                {
                    if let Some(Json::Array(hosts)) = m.get("hosts") {
                        hosts.iter().for_each(&mut push);
                    }
                }
                Json::Object(_) => push(&Json::String(group.clone())),
                _ => {}
            }
        }
    }
    out
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
