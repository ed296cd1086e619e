//! `openssl_privatekey` (community.crypto): makes sure a private key file
//! of the wanted type, size or curve, passphrase and format exists (or not).
//!
//! Where the key is made: community.crypto generates keys on the target
//! with the Python `cryptography` library. Keel runs `openssl` on the host
//! instead of generating on the controller, so the private key never
//! crosses the connection or appears in a command the controller sends,
//! and a 4096-bit RSA key costs the host's OpenSSL, not a debug build's
//! big-number code. Idempotence does not depend on it: the decision is
//! made on the controller from public data only.
//!
//! Query (one round trip, the passphrase on stdin): the file's stat, its
//! PEM header line (the format, and whether it is encrypted), whether the
//! parent directory exists, and the public key `openssl pkey -pubout` reads
//! with the given passphrase. Decide: community.crypto's
//! `needs_regeneration` (`regenerate` modes, `force`) from the public key's
//! type, size and curve (read by `x509-parser`, [`kit::pki`](crate::modules::kit::pki)), then the file
//! attributes (`mode` defaults to `0600`). Apply: `openssl genpkey` into a
//! temporary file beside the key (umask 077), re-encoded as community.crypto
//! writes it (PKCS#1/SEC1 "traditional" PEM for RSA, DSA and ECC, PKCS#8
//! for the others, AES-256 when there is a passphrase), then moved into
//! place; the new public key comes back for `fingerprint` and the diff.
//!
//! Check mode reports what community.crypto's does: the existing key's
//! data, `changed` for a key it would make.

use minijinja::Value;

use crate::modules::args::{dict, ModeSpec, ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::pki::{
    fingerprints, pass_stdin, KeyType, PublicKeyInfo, CURVES, PASS_PRELUDE,
};
use crate::modules::kit::write::BACKUP_SNIPPET;
use crate::modules::kit::{apply, attr_commands, FileAttrs, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct OpensslPrivatekey;

static PARAMS: Params = Params {
    module: "openssl_privatekey",
    sets: &[
        &[
            &["path"],
            &["state"],
            &["type"],
            &["size"],
            &["curve"],
            &["passphrase"],
            &["cipher"],
            &["format"],
            &["format_mismatch"],
            &["regenerate"],
            &["force"],
            &["backup"],
            &["return_content"],
            &["select_crypto_backend"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

/// The file format community.crypto tells a key's PEM header by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFormat {
    Pkcs1,
    Pkcs8,
    Raw,
}

/// `identify_private_key_format` from the first line (and the
/// `Proc-Type` line, when there is one).
fn identify(head: &str) -> (KeyFormat, bool) {
    let first = head.lines().next().unwrap_or("").trim();
    let encrypted_pkcs1 = head
        .lines()
        .any(|l| l.starts_with("Proc-Type: 4,ENCRYPTED"));
    match first {
        "-----BEGIN ENCRYPTED PRIVATE KEY-----" => (KeyFormat::Pkcs8, true),
        "-----BEGIN PRIVATE KEY-----" => (KeyFormat::Pkcs8, false),
        l if l.starts_with("-----BEGIN ") && l.ends_with(" PRIVATE KEY-----") => {
            (KeyFormat::Pkcs1, encrypted_pkcs1)
        }
        _ => (KeyFormat::Raw, false),
    }
}

/// What `openssl genpkey` is asked for, as a shell fragment.
fn genpkey(kind: KeyType, size: i64, curve: Option<&str>) -> String {
    match kind {
        KeyType::Rsa => format!(
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:{size} -out \"$t.g\"\n"
        ),
        KeyType::Dsa => format!(
            "openssl genpkey -genparam -algorithm DSA -pkeyopt dsa_paramgen_bits:{size} -out \"$t.p\"\n\
             openssl genpkey -paramfile \"$t.p\" -out \"$t.g\"\nrm -f -- \"$t.p\"\n"
        ),
        KeyType::Ecc => {
            let name = CURVES
                .iter()
                .find(|(n, ..)| Some(*n) == curve)
                .map(|(_, _, o, _)| *o)
                .unwrap_or("prime256v1");
            format!(
                "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:{name} \
                 -pkeyopt ec_param_enc:named_curve -out \"$t.g\"\n"
            )
        }
        KeyType::Ed25519 => "openssl genpkey -algorithm ED25519 -out \"$t.g\"\n".into(),
        KeyType::Ed448 => "openssl genpkey -algorithm ED448 -out \"$t.g\"\n".into(),
        KeyType::X25519 => "openssl genpkey -algorithm X25519 -out \"$t.g\"\n".into(),
        KeyType::X448 => "openssl genpkey -algorithm X448 -out \"$t.g\"\n".into(),
    }
}

/// The arguments every result repeats, as community.crypto's `dump` does.
#[derive(Clone)]
struct Shape {
    path: String,
    type_name: String,
    size: i64,
    /// Only for `type: ECC`.
    curve: Option<String>,
}

impl Shape {
    fn result(
        &self,
        changed: bool,
        key: &Option<PublicKeyInfo>,
        before: Value,
        after: Value,
        backup_file: Option<String>,
    ) -> ModuleResult {
        let mut r = ModuleResult::changed(changed)
            .with("filename", self.path.as_str())
            .with("type", self.type_name.as_str())
            .with("size", self.size)
            .with(
                "fingerprint",
                key.as_ref()
                    .map(|k| fingerprints(&k.der, false))
                    .unwrap_or(Value::from(())),
            );
        if let Some(c) = &self.curve {
            r = r.with("curve", c.as_str());
        }
        if let Some(b) = backup_file {
            r = r.with("backup_file", b);
        }
        r.data
            .insert("diff".into(), dict([("before", before), ("after", after)]));
        r
    }
}

#[async_trait::async_trait]
impl Module for OpensslPrivatekey {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let path = a.req_string(&["path"])?;
        let state = a
            .choice(&["state"], &["absent", "present"], Some("present"))?
            .unwrap_or_default();
        let type_name = a
            .choice(
                &["type"],
                &["DSA", "ECC", "Ed25519", "Ed448", "RSA", "X25519", "X448"],
                Some("RSA"),
            )?
            .unwrap_or_default();
        let size = a.int(&["size"])?.unwrap_or(4096);
        let curve = a.string(&["curve"])?;
        let passphrase = a.string(&["passphrase"])?;
        let cipher = a.string(&["cipher"])?.unwrap_or_else(|| "auto".into());
        let format = a
            .choice(
                &["format"],
                &["pkcs1", "pkcs8", "raw", "auto", "auto_ignore"],
                Some("auto_ignore"),
            )?
            .unwrap_or_default();
        let format_mismatch = a
            .choice(
                &["format_mismatch"],
                &["regenerate", "convert"],
                Some("regenerate"),
            )?
            .unwrap_or_default();
        let mut regenerate = a
            .choice(
                &["regenerate"],
                &[
                    "never",
                    "fail",
                    "partial_idempotence",
                    "full_idempotence",
                    "always",
                ],
                Some("full_idempotence"),
            )?
            .unwrap_or_default();
        if a.bool(&["force"], false)? {
            regenerate = "always".into();
        }
        let backup = a.bool(&["backup"], false)?;
        let return_content = a.bool(&["return_content"], false)?;
        a.choice(
            &["select_crypto_backend"],
            &["auto", "cryptography"],
            Some("auto"),
        )?;
        let mut attrs = FileAttrs::parse(&mut a)?;
        a.finish()?;

        let fail = |m: String| Ok(Plan::done(ModuleResult::failed(m)));
        let kind = KeyType::from_name(&type_name).unwrap_or(KeyType::Rsa);
        if let Some(c) = &curve {
            if !CURVES.iter().any(|(n, ..)| n == c) {
                let names: Vec<&str> = CURVES.iter().map(|(n, ..)| *n).collect();
                return fail(format!(
                    "value of curve must be one of: {}, got: {c}",
                    names.join(", ")
                ));
            }
        }
        if kind == KeyType::Ecc && curve.is_none() {
            return fail("type is ECC but all of the following are missing: curve".into());
        }
        if passphrase.is_some() && cipher != "auto" {
            return fail("Cryptography backend can only use \"auto\" for cipher option.".into());
        }
        if format == "raw" {
            return fail(
                "Keel's openssl_privatekey writes PEM keys only; format raw is not supported"
                    .into(),
            );
        }
        // community.crypto applies 0600 when no mode is given.
        if attrs.mode.is_none() {
            attrs.mode = Some(ModeSpec::Octal(0o600));
        }
        let wanted_format = match format.as_str() {
            "pkcs1" => KeyFormat::Pkcs1,
            "pkcs8" => KeyFormat::Pkcs8,
            _ if matches!(
                kind,
                KeyType::Ed25519 | KeyType::Ed448 | KeyType::X25519 | KeyType::X448
            ) =>
            {
                KeyFormat::Pkcs8
            }
            _ => KeyFormat::Pkcs1,
        };

        // 1. Query.
        let qpath = quote(&path);
        let mut q = Query::new();
        q.raw(&format!("{PASS_PRELUDE}p={qpath}\n"));
        q.test("dir", &format!("[ -d \"$(dirname -- {qpath})\" ]"));
        q.stat_expr("key", "\"$p\"", true, None);
        // Only the header lines: the body is the key itself.
        q.section("head", "sed -n '1p;2{/^Proc-Type:/p}' -- \"$p\"");
        q.section(
            "pub",
            "openssl pkey -in \"$p\" -passin env:KEEL_PASS -pubout </dev/null",
        );
        let ans = q
            .run_with_stdin(ctx, pass_stdin(passphrase.as_deref()))
            .await?;
        let st = ans.stat("key");
        let exists = st.exists;
        let base_dir = match path.rsplit_once('/') {
            Some(("", _)) => "/".to_string(),
            Some((d, _)) => d.to_string(),
            None => ".".to_string(),
        };
        if !ans.yes("dir") {
            return fail(format!(
                "The directory {base_dir} does not exist or the file is not a directory"
            ));
        }
        let (file_format, encrypted) = identify(ans.text("head"));
        let existing: Option<PublicKeyInfo> = if exists {
            PublicKeyInfo::parse_pem(ans.text("pub")).ok()
        } else {
            None
        };
        // Readable as community.crypto reads it: a passphrase for an
        // encrypted key and none for a plain one.
        let readable = existing
            .clone()
            .filter(|_| encrypted == passphrase.is_some());
        let info = |k: &Option<PublicKeyInfo>| -> Value {
            match k {
                Some(k) => k.info(),
                None if exists => dict([
                    ("can_parse_key", Value::from(false)),
                    ("key_is_consistent", Value::from(())),
                ]),
                None => dict(Vec::<(String, Value)>::new()),
            }
        };
        let shape = Shape {
            path: path.clone(),
            type_name: type_name.clone(),
            size,
            curve: if kind == KeyType::Ecc {
                curve.clone()
            } else {
                None
            },
        };
        let result_for = |changed, key: &Option<PublicKeyInfo>, before, after, backup| {
            shape.result(changed, key, before, after, backup)
        };

        if state == "absent" {
            let empty = || dict(Vec::<(String, Value)>::new());
            let planned = result_for(exists, &None, empty(), empty(), None);
            if !exists {
                return Ok(Plan::done(planned));
            }
            return Ok(Plan::change(planned.clone(), async move {
                let mut script = format!("p={qpath}\n");
                if backup {
                    script.push_str("d=\"$p\"\n");
                    script.push_str(BACKUP_SNIPPET);
                }
                script.push_str("rm -f -- \"$p\"\n");
                let out = match apply(ctx, &script, None).await? {
                    Ok(o) => o,
                    Err(e) => return Ok(ModuleResult::failed(e)),
                };
                let mut r = planned;
                if let Some(b) = out
                    .stdout_str()
                    .lines()
                    .find_map(|l| l.strip_prefix("BACKUP ").map(str::to_string))
                {
                    r.data.insert("backup_file".into(), Value::from(b));
                }
                Ok(r)
            }));
        }

        // 2. Decide: `needs_regeneration`, then `needs_conversion`.
        let regenerate_msg = |what: &str, modes: &str| {
            format!(
                "{what} Will not proceed. To force regeneration, call the module with `generate` \
                 set to {modes}, or with `force=true`."
            )
        };
        let type_ok = readable.as_ref().is_some_and(|k| {
            k.key_type == kind
                && match kind {
                    KeyType::Rsa | KeyType::Dsa => k.size == Some(size as u64),
                    KeyType::Ecc => k.curve == curve.as_deref(),
                    _ => true,
                }
        });
        let format_ok = format == "auto_ignore" || file_format == wanted_format;
        let regen = if regenerate == "always" || !exists {
            true
        } else if readable.is_none() {
            if regenerate != "full_idempotence" {
                return fail(
                    "Unable to read the key. The key is protected with a another passphrase / no \
                     passphrase or broken. Will not proceed. To force regeneration, call the \
                     module with `generate` set to `full_idempotence` or `always`, or with \
                     `force=true`."
                        .into(),
                );
            }
            true
        } else if regenerate != "never" && !type_ok {
            if regenerate == "fail" {
                return fail(regenerate_msg(
                    "Key has wrong type and/or size.",
                    "`partial_idempotence`, `full_idempotence` or `always`",
                ));
            }
            true
        } else if format_mismatch == "regenerate" && regenerate != "never" && !format_ok {
            if regenerate == "fail" {
                return fail(format!(
                    "{} To convert the key, set `format_mismatch` to `convert`.",
                    regenerate_msg(
                        "Key has wrong format.",
                        "`partial_idempotence`, `full_idempotence` or `always`"
                    )
                ));
            }
            true
        } else {
            false
        };
        let convert = !regen && exists && format_mismatch == "convert" && !format_ok;

        let mode = match &attrs.mode {
            Some(ModeSpec::Octal(m)) => Some(*m),
            Some(ModeSpec::Symbolic(s)) => Some(crate::modules::args::apply_symbolic(
                s,
                if exists { st.mode } else { 0o600 },
                false,
            )?),
            _ => None,
        };
        let (attr_sh, attrs_differ) =
            attr_commands(&st, mode, attrs.owner.as_deref(), attrs.group.as_deref());
        let before = info(&readable);
        // `return_content`: the key's text as it is now (read only when
        // asked for); a new key's replaces it after the apply step.
        let current_text: Value = if return_content && exists {
            Value::from(ctx.run(format!("cat -- {qpath}"), None).await?.stdout_str())
        } else {
            Value::from(())
        };
        let with_content = |mut r: ModuleResult| {
            if return_content {
                r.data.insert("privatekey".into(), current_text.clone());
            }
            r
        };

        if !regen && !convert {
            let planned = with_content(result_for(
                attrs_differ,
                &readable,
                before.clone(),
                before.clone(),
                None,
            ));
            if !attrs_differ {
                return Ok(Plan::done(planned));
            }
            return Ok(Plan::change(planned.clone(), async move {
                let script = format!("p={qpath}\n{attr_sh}");
                match apply(ctx, &script, None).await? {
                    Ok(_) => Ok(planned),
                    Err(e) => Ok(ModuleResult::failed(e)),
                }
            }));
        }

        // What check mode reports: the key as it is now.
        let planned = with_content(result_for(
            true,
            &readable,
            before.clone(),
            before.clone(),
            None,
        ));
        let owner = attrs.owner.clone();
        let group = attrs.group.clone();
        Ok(Plan::change(planned, async move {
            let mut script = format!("{PASS_PRELUDE}p={qpath}\numask 077\n");
            script.push_str("t=$(mktemp \"$p.XXXXXX\")\n");
            script.push_str("trap 'rm -f -- \"$t\" \"$t.g\" \"$t.p\"' EXIT\n");
            if regen {
                script.push_str(&genpkey(kind, size, curve.as_deref()));
            } else {
                script.push_str("openssl pkey -in \"$p\" -passin env:KEEL_PASS -out \"$t.g\"\n");
            }
            let mut encode = String::from("openssl pkey -in \"$t.g\" -out \"$t\"");
            if wanted_format == KeyFormat::Pkcs1 {
                encode.push_str(" -traditional");
            }
            if passphrase.is_some() {
                encode.push_str(" -aes256 -passout env:KEEL_PASS");
            }
            script.push_str(&encode);
            script.push('\n');
            if backup && exists {
                script.push_str("d=\"$p\"\n");
                script.push_str(BACKUP_SNIPPET);
            }
            script.push_str(&format!("chmod {:04o} -- \"$t\"\n", mode.unwrap_or(0o600)));
            if let Some(o) = &owner {
                script.push_str(&format!("chown -- {} \"$t\"\n", quote(o)));
            }
            if let Some(g) = &group {
                script.push_str(&format!("chgrp -- {} \"$t\"\n", quote(g)));
            }
            script.push_str("mv -f -- \"$t\" \"$p\"\n");
            script.push_str("echo @@PUB\nopenssl pkey -in \"$p\" -passin env:KEEL_PASS -pubout\n");
            let out = match apply(ctx, &script, Some(pass_stdin(passphrase.as_deref()))).await? {
                Ok(o) => o,
                Err(e) => return Ok(ModuleResult::failed(e)),
            };
            let text = out.stdout_str();
            let backup_file = text
                .lines()
                .find_map(|l| l.strip_prefix("BACKUP ").map(str::to_string));
            let pem = text.split_once("@@PUB\n").map(|(_, p)| p).unwrap_or("");
            let new = match PublicKeyInfo::parse_pem(pem) {
                Ok(k) => k,
                Err(e) => {
                    return Ok(ModuleResult::failed(format!(
                        "the new key at {path} cannot be read back: {e}"
                    )))
                }
            };
            let after = new.info();
            let mut r = shape.result(true, &Some(new), before, after, backup_file);
            if return_content {
                // The new key's text, read back only when asked for.
                let out = ctx.run(format!("cat -- {qpath}"), None).await?;
                r.data
                    .insert("privatekey".into(), Value::from(out.stdout_str()));
            }
            Ok(r)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats_are_told_by_their_header() {
        assert_eq!(
            identify("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"),
            (KeyFormat::Pkcs1, true)
        );
        assert_eq!(
            identify("-----BEGIN EC PRIVATE KEY-----\n"),
            (KeyFormat::Pkcs1, false)
        );
        assert_eq!(
            identify("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
            (KeyFormat::Pkcs8, true)
        );
        assert_eq!(
            identify("-----BEGIN PRIVATE KEY-----\n"),
            (KeyFormat::Pkcs8, false)
        );
        assert_eq!(identify("garbage"), (KeyFormat::Raw, false));
    }
}
