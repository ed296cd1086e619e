//! `apt_key`: trusted APT signing keys, kept as files rather than through
//! the deprecated `apt-key` tool.
//!
//! A key comes from `data` (sent on stdin), `file` (a path on the host, as
//! in Ansible) or `url` (fetched on the host with `curl`). Query: one round
//! trip loads the key into a scratch file, lists its fingerprints and those
//! of every key file already trusted (with `gpg --show-keys` when the host
//! has gpg), and returns the key bytes. The controller decides: a key whose
//! id is already trusted, or whose file already holds the same bytes, is
//! left alone; otherwise it is written to `keyring` or
//! `/etc/apt/trusted.gpg.d/<id>.asc|.gpg`. `absent` removes the files that
//! hold the id (or the `keyring` file).

use base64::Engine as _;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{apply, failure_text, text_diff, write_file, Answers, FileOwner};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct AptKey;

const TRUSTED_D: &str = "/etc/apt/trusted.gpg.d";
const NO_FILE: i32 = 84;
const FETCH_FAILED: i32 = 85;
const NO_CURL: i32 = 86;

/// Fingerprints in `gpg --with-colons` output, in order (the `fpr` record
/// after each `pub`).
pub fn fingerprints(colons: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut want = false;
    for l in colons.lines() {
        let f: Vec<&str> = l.split(':').collect();
        match f.first() {
            Some(&"pub") => want = true,
            Some(&"sub") | Some(&"ssb") => want = false,
            Some(&"fpr") if want => {
                if let Some(fp) = f.get(9) {
                    out.push(fp.to_uppercase());
                }
                want = false;
            }
            _ => {}
        }
    }
    out
}

/// Whether a fingerprint matches an id (short, long or full, `0x` allowed).
pub fn id_matches(fpr: &str, id: &str) -> bool {
    let id = id.trim().trim_start_matches("0x").trim_start_matches("0X");
    !id.is_empty() && fpr.to_uppercase().ends_with(&id.to_uppercase())
}

/// The arguments `apt_key` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "apt_key",
    sets: &[&[
        &["id"],
        &["url"],
        &["file"],
        &["data"],
        &["keyring"],
        &["keyserver"],
        &["state"],
        &["validate_certs"],
    ]],
};

#[async_trait::async_trait]
impl Module for AptKey {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let id = a.string(&["id"])?;
        let url = a.string(&["url"])?;
        let file = a.string(&["file"])?;
        let data = a.string(&["data"])?;
        let keyring = a.string(&["keyring"])?;
        let keyserver = a.string(&["keyserver"])?;
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap();
        let validate_certs = a.bool(&["validate_certs"], true)?;
        a.finish()?;
        if keyserver.is_some() {
            return Ok(Plan::done(ModuleResult::failed(
                "keyserver is not supported: give the key with data, file or url",
            )));
        }
        let sources = [&url, &file, &data].iter().filter(|s| s.is_some()).count();
        if sources > 1 {
            return Err(ModuleError::Args(
                "parameters are mutually exclusive: data|file|keyserver|url".into(),
            ));
        }
        if state == "present" && sources == 0 {
            return Err(ModuleError::Args(
                "state is present but none of data, file or url is given".into(),
            ));
        }
        if state == "absent" && id.is_none() && keyring.is_none() {
            return Err(ModuleError::Args(
                "state is absent: give the key's id (or its keyring file)".into(),
            ));
        }

        let token = format!("@@KEEL-APTKEY-{:016x}@@", rand::random::<u64>());
        let sec = |name: &str| format!("printf '\\n%s %s\\n' '{token}' '{name}'\n");
        let mut s = String::from("k=$(mktemp) || exit 1\ntrap 'rm -f \"$k\"' EXIT\n");
        let mut stdin = None;
        if state == "present" {
            if let Some(d) = &data {
                stdin = Some(d.clone().into_bytes());
                s.push_str("cat > \"$k\"\n");
            } else if let Some(f) = &file {
                s.push_str(&format!("cat -- {} > \"$k\" || exit {NO_FILE}\n", quote(f)));
            } else if let Some(u) = &url {
                s.push_str(&format!(
                    "command -v curl >/dev/null 2>&1 || exit {NO_CURL}\n\
                     curl -sSfL{} --max-time 30 -o \"$k\" {} || exit {FETCH_FAILED}\n",
                    if validate_certs { "" } else { " -k" },
                    quote(u)
                ));
            }
        }
        s.push_str(&format!(
            "{}command -v gpg >/dev/null 2>&1 && echo 1\n",
            sec("gpg")
        ));
        s.push_str(&format!(
            "g() {{ GNUPGHOME=$(mktemp -d); export GNUPGHOME; gpg --batch --show-keys --with-colons \"$1\" 2>/dev/null; rm -rf \"$GNUPGHOME\"; }}\n\
             {}[ -s \"$k\" ] && base64 < \"$k\"\n\
             {}command -v gpg >/dev/null 2>&1 && [ -s \"$k\" ] && g \"$k\"\n\
             {}for f in {TRUSTED_D}/*.asc {TRUSTED_D}/*.gpg{}; do [ -f \"$f\" ] || continue; printf '\\001%s\\n' \"$f\"; \
             if command -v gpg >/dev/null 2>&1; then g \"$f\"; fi; echo \"sum:$(sha1sum < \"$f\" | cut -d' ' -f1)\"; done\n",
            sec("key"),
            sec("keycolons"),
            sec("trusted"),
            keyring
                .as_deref()
                .map(|k| format!(" {}", quote(k)))
                .unwrap_or_default(),
        ));
        let out = ctx.run(s, stdin).await?;
        match out.rc {
            0 => {}
            NO_FILE => {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "Unable to read key file {}: {}",
                    file.unwrap_or_default(),
                    failure_text(&out)
                ))))
            }
            FETCH_FAILED => {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "Failed to download key at {}: {}",
                    url.unwrap_or_default(),
                    failure_text(&out)
                ))))
            }
            NO_CURL => {
                return Ok(Plan::done(ModuleResult::failed(
                    "curl is not installed on the host; it is needed to fetch a key from url",
                )))
            }
            _ => return Ok(Plan::done(ModuleResult::failed(failure_text(&out)))),
        }
        let ans = Answers::parse(&token, &out.stdout);
        let have_gpg = ans.yes("gpg");
        let key: Vec<u8> = base64::engine::general_purpose::STANDARD
            .decode(ans.text("key").split_whitespace().collect::<String>())
            .unwrap_or_default();
        let key_fprs = fingerprints(ans.text("keycolons"));
        // Trusted files: path → (fingerprints, sha1).
        let trusted: Vec<(String, Vec<String>, String)> = ans
            .text("trusted")
            .split('\u{1}')
            .skip(1)
            .filter_map(|chunk| {
                let (path, rest) = chunk.split_once('\n')?;
                let sum = rest
                    .lines()
                    .find_map(|l| l.strip_prefix("sum:"))
                    .unwrap_or("")
                    .to_string();
                Some((path.to_string(), fingerprints(rest), sum))
            })
            .collect();

        let mut res = ModuleResult::ok();
        if let Some(f) = key_fprs.first() {
            res.data.insert("fp".into(), f.clone().into());
            res.data.insert(
                "key_id".into(),
                f[f.len().saturating_sub(16)..].to_string().into(),
            );
            res.data.insert(
                "short_id".into(),
                f[f.len().saturating_sub(8)..].to_string().into(),
            );
        }
        if let Some(i) = &id {
            res.data.insert("id".into(), i.clone().into());
        }

        if state == "absent" {
            let victims: Vec<&String> = trusted
                .iter()
                .filter(|(p, fprs, _)| {
                    keyring.as_deref() == Some(p.as_str())
                        && id
                            .as_deref()
                            .is_none_or(|i| !have_gpg || fprs.iter().any(|f| id_matches(f, i)))
                        || keyring.is_none()
                            && id.as_deref().is_some_and(|i| {
                                fprs.iter().any(|f| id_matches(f, i))
                                    || p.rsplit('/').next().is_some_and(|n| {
                                        n.split('.').next().is_some_and(|stem| {
                                            id_matches(stem, i) && stem.len() >= 8
                                        })
                                    })
                            })
                })
                .map(|(p, _, _)| p)
                .collect();
            res.changed = !victims.is_empty();
            if ctx.diff {
                for v in &victims {
                    res.diff
                        .push(text_diff(v, Some(&format!("key file {v}\n")), None));
                }
            }
            res.data.insert(
                "before".into(),
                victims
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .into(),
            );
            if victims.is_empty() {
                return Ok(Plan::done(res));
            }
            let cmd = victims
                .iter()
                .map(|v| format!("rm -f -- {}", quote(v)))
                .collect::<Vec<_>>()
                .join("\n");
            return Ok(Plan::change(res.clone(), async move {
                if let Err(e) = apply(ctx, &cmd, None).await? {
                    return Ok(ModuleResult::failed(e));
                }
                Ok(res)
            }));
        }

        if key.is_empty() {
            return Ok(Plan::done(ModuleResult::failed("the key is empty")));
        }
        if have_gpg && key_fprs.is_empty() {
            return Ok(Plan::done(ModuleResult::failed(
                "the data is not a valid OpenPGP key (gpg found no key in it)",
            )));
        }
        if let Some(i) = &id {
            if have_gpg && !key_fprs.iter().any(|f| id_matches(f, i)) {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "key id {i} does not match the key given (fingerprints: {})",
                    key_fprs.join(", ")
                ))));
            }
        }
        let armored = key.starts_with(b"-----BEGIN PGP");
        let dest = keyring.clone().unwrap_or_else(|| {
            let stem = id
                .as_deref()
                .map(|i| i.trim_start_matches("0x").to_uppercase())
                .or_else(|| {
                    key_fprs
                        .first()
                        .map(|f| f[f.len().saturating_sub(16)..].to_string())
                })
                .unwrap_or_else(|| crate::modules::kit::sha1_hex(&key)[..16].to_string());
            format!("{TRUSTED_D}/{stem}.{}", if armored { "asc" } else { "gpg" })
        });
        let sum = crate::modules::kit::sha1_hex(&key);
        let already = if keyring.is_some() {
            trusted.iter().any(|(p, _, s)| *p == dest && *s == sum)
        } else if have_gpg {
            key_fprs
                .iter()
                .all(|k| trusted.iter().any(|(_, fprs, _)| fprs.contains(k)))
        } else {
            trusted.iter().any(|(_, _, s)| *s == sum)
        };
        res.data.insert(
            "before".into(),
            trusted
                .iter()
                .flat_map(|t| t.1.clone())
                .collect::<Vec<_>>()
                .into(),
        );
        if already {
            return Ok(Plan::done(res));
        }
        res.changed = true;
        if ctx.diff {
            res.diff.push(text_diff(
                &dest,
                None,
                Some(&if armored {
                    String::from_utf8_lossy(&key).into_owned()
                } else {
                    format!("binary key {}\n", key_fprs.join(", "))
                }),
            ));
        }
        res.data.insert("path".into(), dest.clone().into());
        Ok(Plan::change(res.clone(), async move {
            let exists = trusted.iter().any(|(p, _, _)| *p == dest);
            if let Err(e) = write_file(
                ctx,
                &dest,
                &key,
                FileOwner {
                    mode: Some(0o644),
                    owner: None,
                    group: None,
                },
                exists,
                true,
            )
            .await?
            {
                return Ok(ModuleResult::failed(e));
            }
            Ok(res)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_of_primary_keys_only() {
        let colons = "pub:-:255:22:AAAA1111BBBB2222:1:::::scESC:::::ed25519:::0:\n\
                      fpr:::::::::0123456789ABCDEF0123AAAA1111BBBB2222:\n\
                      uid:-::::1::X::Test <t@x>::::::::::0:\n\
                      sub:-:255:18:CCCC:1::::::e:::::cv25519::\n\
                      fpr:::::::::FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFCCCC:\n";
        assert_eq!(
            fingerprints(colons),
            vec!["0123456789ABCDEF0123AAAA1111BBBB2222"]
        );
        assert!(id_matches(
            "0123456789ABCDEF0123AAAA1111BBBB2222",
            "0xbbbb2222"
        ));
        assert!(!id_matches("0123456789ABCDEF0123AAAA1111BBBB2222", "CCCC"));
    }
}
