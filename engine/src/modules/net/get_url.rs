//! `get_url`: downloads a URL to a path on the host.
//!
//! Like Ansible, the download happens on the target: with `curl` (else
//! `wget`) into a temp file next to `dest`, then the checksum is verified
//! and the file moved into place only when its content differs. Query: one
//! round trip stats `dest` (checksum) and finds the downloader. Hosts with
//! neither tool get a clear error rather than a silent controller-side fetch,
//! since the controller may not reach the same network.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::checksum_tool;
use crate::modules::kit::Query;
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct GetUrl;

/// The arguments `get_url` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "get_url",
    sets: &[&[
        &["url"],
        &["dest"],
        &["checksum"],
        &["force"],
        &["mode"],
        &["owner"],
        &["group"],
        &["timeout"],
        &["validate_certs"],
        &["headers"],
        &["url_username", "username"],
        &["url_password", "password"],
        &["backup"],
        &["tmp_dest"],
        &["use_proxy"],
        &["force_basic_auth"],
        &["http_agent"],
        &["attributes"],
        &["unsafe_writes"],
        &["seuser"],
        &["serole"],
        &["setype"],
        &["selevel"],
        &["decompress"],
        &["use_gssapi"],
        &["use_netrc"],
        &["ciphers"],
        &["unredirected_headers"],
        &["client_cert"],
        &["client_key"],
    ]],
};

#[async_trait::async_trait]
impl Module for GetUrl {
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
        let dest = a.req_string(&["dest"])?;
        let checksum = a.string(&["checksum"])?;
        let force = a.bool(&["force"], false)?;
        let mode = a.mode(&["mode"])?;
        let owner = a.string(&["owner"])?;
        let group = a.string(&["group"])?;
        let timeout = a.int(&["timeout"])?.unwrap_or(10);
        let validate_certs = a.bool(&["validate_certs"], true)?;
        let headers = a.value(&["headers"]);
        let url_username = a.string(&["url_username", "username"])?;
        let url_password = a.string(&["url_password", "password"])?;
        a.ignore(&[
            "backup",
            "tmp_dest",
            "use_proxy",
            "force_basic_auth",
            "http_agent",
            "attributes",
            "unsafe_writes",
            "seuser",
            "serole",
            "setype",
            "selevel",
            "decompress",
            "use_gssapi",
            "use_netrc",
            "ciphers",
            "unredirected_headers",
            "client_cert",
            "client_key",
        ]);
        a.finish()?;

        let (algo, want_sum) = match &checksum {
            Some(c) => match c.split_once(':') {
                Some((al, s)) if checksum_tool(al).is_some() => {
                    (Some(al.to_string()), Some(s.trim().to_lowercase()))
                }
                _ => {
                    return Ok(Plan::done(ModuleResult::failed(format!(
                    "The checksum parameter has to be in format <algorithm>:<checksum>, got {c}"
                ))))
                }
            },
            None => (None, None),
        };
        let tool = checksum_tool(algo.as_deref().unwrap_or("sha1")).unwrap_or("sha1sum");
        let qd = quote(&dest);
        let mut q = Query::new();
        q.raw(&format!("d={qd}; case \"$d\" in */) ;; *) [ -d \"$d\" ] && d=\"$d/\" ;; esac"))
            .section("dest", "printf '%s' \"$d\"")
            .section("sum", &format!("[ -f \"$d\" ] && {tool} < \"$d\" | cut -d' ' -f1"))
            .section("tool", "if command -v curl >/dev/null; then echo curl; elif command -v wget >/dev/null; then echo wget; fi");
        let ans = q.run(ctx).await?;
        let mut dest_path = ans.text("dest").to_string();
        let is_dir = dest_path.ends_with('/');
        let have_sum = ans.trimmed("sum").to_string();
        let mut res = ModuleResult::ok()
            .with("url", url.clone())
            .with("dest", dest_path.clone());
        // An existing file is kept unless forced or its checksum is wrong.
        if !is_dir
            && !have_sum.is_empty()
            && !force
            && want_sum.as_ref().is_none_or(|w| *w == have_sum)
        {
            res.msg = Some("file already exists".into());
            res.data.insert("checksum_dest".into(), have_sum.into());
            return Ok(Plan::done(res));
        }
        let downloader = ans.trimmed("tool").to_string();
        if downloader.is_empty() {
            return Ok(Plan::done(ModuleResult::failed(
                "neither curl nor wget is installed on the host; install one to use get_url",
            )));
        }
        let mut planned = res.clone();
        planned.changed = true;
        Ok(Plan::change(planned, async move {
            let mut fetch = String::new();
            let hdrs: Vec<(String, String)> = headers
                .and_then(|h| {
                    let keys: Vec<minijinja::Value> = h.try_iter().ok()?.collect();
                    Some(
                        keys.into_iter()
                            .filter_map(|k| {
                                let v = h.get_item(&k).ok()?;
                                Some((k.to_string(), crate::modules::args::scalar_string(&v)?))
                            })
                            .collect(),
                    )
                })
                .unwrap_or_default();
            if downloader == "curl" {
                fetch.push_str(&format!("curl -sSfL --max-time {timeout}"));
                if !validate_certs {
                    fetch.push_str(" -k");
                }
                for (k, v) in &hdrs {
                    fetch.push_str(&format!(" -H {}", quote(&format!("{k}: {v}"))));
                }
                if let Some(u) = &url_username {
                    fetch.push_str(&format!(
                        " -u {}",
                        quote(&format!("{u}:{}", url_password.as_deref().unwrap_or("")))
                    ));
                }
                fetch.push_str(&format!(" -o \"$t\" {}", quote(&url)));
            } else {
                fetch.push_str(&format!("wget -q -T {timeout}"));
                if !validate_certs {
                    fetch.push_str(" --no-check-certificate");
                }
                for (k, v) in &hdrs {
                    fetch.push_str(&format!(" --header={}", quote(&format!("{k}: {v}"))));
                }
                fetch.push_str(&format!(" -O \"$t\" {}", quote(&url)));
            }
            let name_from_url = url
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("index.html");
            if is_dir {
                dest_path.push_str(name_from_url);
            }
            let mode_cmd = match &mode {
                Some(crate::modules::args::ModeSpec::Octal(m)) => format!("chmod {m:04o} \"$d\"\n"),
                Some(crate::modules::args::ModeSpec::Symbolic(s)) => {
                    format!("chmod {} \"$d\"\n", quote(s))
                }
                _ => String::new(),
            };
            let mut attrs = mode_cmd;
            if let Some(o) = &owner {
                attrs.push_str(&format!("chown {} \"$d\"\n", quote(o)));
            }
            if let Some(g) = &group {
                attrs.push_str(&format!("chgrp {} \"$d\"\n", quote(g)));
            }
            let script = format!(
                "d={}\nt=\"$(dirname \"$d\")/.keel-get_url.$$\"\ntrap 'rm -f \"$t\"' EXIT\n\
                 if ! {fetch} 2>/tmp/.keel-get_url-err.$$; then cat /tmp/.keel-get_url-err.$$ >&2; rm -f /tmp/.keel-get_url-err.$$; exit 90; fi\n\
                 rm -f /tmp/.keel-get_url-err.$$\n\
                 new=$({tool} < \"$t\" | cut -d' ' -f1); echo \"SUM $new\"\n\
                 old=; [ -f \"$d\" ] && old=$({tool} < \"$d\" | cut -d' ' -f1)\n\
                 {verify}\
                 if [ \"$new\" != \"$old\" ]; then chmod 0644 \"$t\"; mv -f \"$t\" \"$d\"; echo CHANGED; fi\n\
                 {attrs}echo \"SIZE $(stat -c %s \"$d\")\"\n",
                quote(&dest_path),
                verify = match &want_sum {
                    Some(w) => format!("if [ \"$new\" != {} ]; then echo \"checksum mismatch: got $new\" >&2; exit 91; fi\n", quote(w)),
                    None => String::new(),
                },
            );
            let out = ctx.run(script, None).await?;
            let text = out.stdout_str();
            let line = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(str::to_string)
            };
            res.data.insert("dest".into(), dest_path.clone().into());
            match out.rc {
                0 => {}
                90 => {
                    return Ok(ModuleResult::failed(format!(
                        "Request failed: {}",
                        out.stderr_str().trim()
                    ))
                    .with("url", url)
                    .with("dest", dest_path))
                }
                91 => {
                    return Ok(ModuleResult::failed(format!(
                        "The checksum for {dest_path} did not match {}; {}",
                        want_sum.unwrap_or_default(),
                        out.stderr_str().trim()
                    )))
                }
                _ => {
                    return Ok(ModuleResult::failed(crate::modules::kit::failure_text(
                        &out,
                    )))
                }
            }
            res.changed = text.lines().any(|l| l == "CHANGED");
            res.msg = Some(if res.changed {
                "OK".into()
            } else {
                "file already exists".into()
            });
            if let Some(s) = line("SUM ") {
                res.data.insert("checksum_src".into(), s.clone().into());
                res.data.insert("checksum_dest".into(), s.into());
            }
            if let Some(s) = line("SIZE ").and_then(|s| s.parse::<u64>().ok()) {
                res.data.insert("size".into(), s.into());
            }
            res.data.insert("status_code".into(), 200.into());
            Ok(res)
        }))
    }
}
