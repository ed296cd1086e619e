//! `authorized_key`: SSH public keys in a user's `authorized_keys`.
//!
//! Query: one round trip resolves the user (home, uid, gid) and reads the key
//! file. The edit runs on the controller, line by line, so comments and keys
//! nobody mentioned keep their place and text. Apply: create the directory
//! (0700) when `manage_dir` asks, then replace the file atomically (0600,
//! owned by the user). A key given as an `https://` URL is fetched by the
//! controller.

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::accounts::Passwd;
use crate::modules::kit::{apply, text_diff, write_file, FileOwner, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct AuthorizedKey;

/// Key types OpenSSH accepts in `authorized_keys`.
const KEY_TYPES: &[&str] = &[
    "ssh-rsa",
    "ssh-dss",
    "ssh-ed25519",
    "ssh-ed448",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
];

/// One parsed key line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    pub options: Option<String>,
    pub key_type: String,
    pub blob: String,
    pub comment: String,
}

impl KeyLine {
    /// Parses a key line; `None` for comments, blank and invalid lines.
    pub fn parse(line: &str) -> Option<KeyLine> {
        let line = line.trim().replace("\\#", "#");
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let parts = split_respecting_quotes(&line);
        let ti = parts.iter().position(|p| KEY_TYPES.contains(&p.as_str()))?;
        let blob = parts.get(ti + 1)?.clone();
        Some(KeyLine {
            options: (ti > 0).then(|| parts[..ti].join(" ")),
            key_type: parts[ti].clone(),
            blob,
            comment: parts[ti + 2..].join(" "),
        })
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(o) = self.options.as_deref().filter(|o| !o.is_empty()) {
            s.push_str(o);
            s.push(' ');
        }
        s.push_str(&self.key_type);
        s.push(' ');
        s.push_str(&self.blob);
        if !self.comment.is_empty() {
            s.push(' ');
            s.push_str(&self.comment);
        }
        s
    }
}

/// Whitespace split that keeps `command="a b"` in one piece.
fn split_respecting_quotes(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_q = !in_q;
                cur.push(c);
            }
            c if c.is_whitespace() && !in_q => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The new file text: `wanted` keys added or updated (present), or removed
/// (absent); with `exclusive`, every other key line goes.
pub fn edit_keys(existing: &str, wanted: &[KeyLine], present: bool, exclusive: bool) -> String {
    let mut lines: Vec<String> = existing.lines().map(str::to_string).collect();
    if present {
        for k in wanted {
            match lines
                .iter()
                .position(|l| KeyLine::parse(l).is_some_and(|p| p.blob == k.blob))
            {
                Some(i) => {
                    if KeyLine::parse(&lines[i]).as_ref() != Some(k) {
                        lines[i] = k.render();
                    }
                }
                None => lines.push(k.render()),
            }
        }
    }
    lines.retain(|l| match KeyLine::parse(l) {
        None => true,
        Some(p) => {
            let listed = wanted.iter().any(|k| k.blob == p.blob);
            if present {
                listed || !exclusive
            } else {
                !listed
            }
        }
    });
    // Drop a second copy of the same key: the first one stands.
    let mut seen = std::collections::HashSet::new();
    lines.retain(|l| match KeyLine::parse(l) {
        Some(p) => seen.insert(p.blob),
        None => true,
    });
    if lines.is_empty() {
        return String::new();
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The arguments `authorized_key` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "authorized_key",
    sets: &[&[
        &["user"],
        &["key"],
        &["path"],
        &["manage_dir"],
        &["state"],
        &["exclusive"],
        &["key_options"],
        &["comment"],
        &["validate_certs"],
        &["follow"],
    ]],
};

#[async_trait::async_trait]
impl Module for AuthorizedKey {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let user = a.req_string(&["user"])?;
        let key_arg = a.req_string(&["key"])?;
        let path_arg = a.string(&["path"])?;
        let manage_dir = a.bool(&["manage_dir"], true)?;
        let state = a
            .choice(&["state"], &["present", "absent"], Some("present"))?
            .unwrap();
        let exclusive = a.bool(&["exclusive"], false)?;
        let key_options = a.string(&["key_options"])?;
        let comment = a.string(&["comment"])?;
        let validate_certs = a.bool(&["validate_certs"], true)?;
        a.ignore(&["follow"]);
        a.finish()?;

        let key_text = if key_arg.starts_with("http://") || key_arg.starts_with("https://") {
            match fetch_keys(&key_arg, validate_certs).await {
                Ok(t) => t,
                Err(e) => {
                    return Ok(Plan::done(ModuleResult::failed(format!(
                        "Error getting key from: {key_arg}: {e}"
                    ))))
                }
            }
        } else {
            key_arg.clone()
        };
        let mut wanted = Vec::new();
        for l in key_text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        {
            let Some(mut k) = KeyLine::parse(l) else {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "invalid key specified: {l}"
                ))));
            };
            if let Some(o) = &key_options {
                k.options = Some(o.clone());
            }
            if let Some(c) = &comment {
                k.comment = c.clone();
            }
            wanted.push(k);
        }

        let mut q = Query::new();
        q.section("pw", &format!("getent passwd {}", quote(&user)));
        let path_expr = match &path_arg {
            Some(p) if p.starts_with("~/") => format!("\"$h\"/{}", quote(&p[2..])),
            Some(p) => quote(p),
            None => "\"$h/.ssh/authorized_keys\"".to_string(),
        };
        q.raw(&format!(
            "h=$(getent passwd {} | cut -d: -f6); p={path_expr}",
            quote(&user)
        ))
        .section("path", "printf '%s' \"$p\"")
        .test("dir", "[ -d \"$(dirname \"$p\")\" ]")
        .file_expr("keys", "\"$p\"");
        let ans = q.run(ctx).await?;
        let Some(pw) = Passwd::parse(ans.trimmed("pw")) else {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Failed to lookup user {user}: user does not exist"
            ))));
        };
        let path = ans.text("path").to_string();
        let existing = ans.file("keys");
        let after = edit_keys(
            existing.unwrap_or(""),
            &wanted,
            state == "present",
            exclusive,
        );

        let mut res = ModuleResult::ok()
            .with("user", user.clone())
            .with("key", key_arg.clone())
            .with(
                "key_options",
                key_options
                    .clone()
                    .map(minijinja::Value::from)
                    .unwrap_or_default(),
            )
            .with("keyfile", path.clone())
            .with(
                "path",
                path_arg
                    .clone()
                    .map(minijinja::Value::from)
                    .unwrap_or_default(),
            )
            .with("manage_dir", manage_dir)
            .with("exclusive", exclusive)
            .with("state", state.clone())
            .with("validate_certs", validate_certs);
        let need_write = match existing {
            Some(e) => e != after,
            None => state == "present" && !after.is_empty(),
        };
        if !need_write {
            return Ok(Plan::done(res));
        }
        res.changed = true;
        if ctx.diff {
            res.diff.push(text_diff(&path, existing, Some(&after)));
        }
        let existed = existing.is_some();
        let dir_exists = ans.yes("dir");
        Ok(Plan::change(res.clone(), async move {
            let dir = path
                .rsplit_once('/')
                .map(|(d, _)| d)
                .filter(|d| !d.is_empty())
                .unwrap_or("/");
            if !dir_exists {
                if !manage_dir {
                    return Ok(ModuleResult::failed(format!(
                        "directory {dir} does not exist and manage_dir is off"
                    )));
                }
                let mk = format!(
                    "mkdir -p -- {d}\nchmod 0700 -- {d}\nchown {}:{} -- {d}\n",
                    pw.uid,
                    pw.gid,
                    d = quote(dir)
                );
                if let Err(e) = apply(ctx, &mk, None).await? {
                    return Ok(ModuleResult::failed(e));
                }
            }
            let (uid, gid) = (pw.uid.to_string(), pw.gid.to_string());
            let owner = FileOwner {
                mode: Some(0o600),
                owner: manage_dir.then_some(uid.as_str()),
                group: manage_dir.then_some(gid.as_str()),
            };
            if let Err(e) = write_file(ctx, &path, after.as_bytes(), owner, existed, false).await? {
                return Ok(ModuleResult::failed(e));
            }
            Ok(res)
        }))
    }
}

async fn fetch_keys(url: &str, validate_certs: bool) -> Result<String, reqwest::Error> {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(!validate_certs)
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne one@example";
    const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo two@example";

    #[test]
    fn options_with_quoted_spaces_stay_together() {
        let k = KeyLine::parse(&format!("command=\"echo hi there\",no-pty {K1}")).unwrap();
        assert_eq!(
            k.options.as_deref(),
            Some("command=\"echo hi there\",no-pty")
        );
        assert_eq!(k.comment, "one@example");
    }

    #[test]
    fn edits_keep_comments_and_order() {
        let existing = format!("# managed\n{K2}\n");
        let k1 = KeyLine::parse(K1).unwrap();
        let after = edit_keys(&existing, std::slice::from_ref(&k1), true, false);
        assert_eq!(after, format!("# managed\n{K2}\n{K1}\n"));
        assert_eq!(
            edit_keys(&after, std::slice::from_ref(&k1), true, false),
            after
        );
        assert_eq!(
            edit_keys(&after, std::slice::from_ref(&k1), true, true),
            format!("# managed\n{K1}\n")
        );
        assert_eq!(edit_keys(&after, &[k1], false, false), existing);
    }
}
