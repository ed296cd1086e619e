//! `x509_certificate` (community.crypto) with the `selfsigned` and `ownca`
//! providers: makes sure a certificate for a request (or, self-signed, for
//! a key alone) exists, signed by its own key or by a CA on the host.
//!
//! Query (one round trip, both passphrases on stdin): whether the parent
//! directory exists, the certificate's stat and text, the request's text,
//! the CA certificate's text, and the public keys of the private key and
//! the CA key (`openssl pkey -pubout`). Decide on the controller as
//! community.crypto's `needs_regeneration` does: the key matches the
//! certificate, the request's subject, key and extensions are the
//! certificate's (the subject and authority key identifiers it adds set
//! apart), the signature verifies with the signer's key, for `ownca` the
//! issuer is the CA's subject and the authority key identifier the CA's;
//! validity times only count with `ignore_timestamps: false`. So a second
//! run with the same inputs changes nothing. Apply: the `TBSCertificate` is
//! built here ([`kit::x509`]) with a fresh 159-bit serial, the host signs
//! it with the signing key, and the certificate is written beside the old
//! one and moved into place, then `mode`/`owner`/`group` are set.
//!
//! [`kit::x509`]: crate::modules::kit::x509

use minijinja::Value;

use crate::modules::args::{dict, ModeSpec, ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::pki::{pass_stdin, KeyType, PublicKeyInfo, PASS_PRELUDE};
use crate::modules::kit::write::BACKUP_SNIPPET;
use crate::modules::kit::x509::{self, Cert, CertFields, Csr, Ext};
use crate::modules::kit::{apply, attr_commands, FileAttrs, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct X509Certificate;

static PARAMS: Params = Params {
    module: "x509_certificate",
    sets: &[
        &[
            &["path"],
            &["state"],
            &["provider"],
            &["force"],
            &["csr_path"],
            &["csr_content"],
            &["privatekey_path"],
            &["privatekey_content"],
            &["privatekey_passphrase"],
            &["ignore_timestamps"],
            &["backup"],
            &["return_content"],
            &["select_crypto_backend"],
            &["selfsigned_version"],
            &["selfsigned_digest"],
            &["selfsigned_not_before", "selfsigned_notBefore"],
            &["selfsigned_not_after", "selfsigned_notAfter"],
            &["selfsigned_create_subject_key_identifier"],
            &["ownca_path"],
            &["ownca_content"],
            &["ownca_privatekey_path"],
            &["ownca_privatekey_content"],
            &["ownca_privatekey_passphrase"],
            &["ownca_digest"],
            &["ownca_version"],
            &["ownca_not_before"],
            &["ownca_not_after"],
            &["ownca_create_subject_key_identifier"],
            &["ownca_create_authority_key_identifier"],
            &["acme_accountkey_path"],
            &["acme_challenge_path"],
            &["acme_chain"],
            &["acme_directory"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

/// The CA passphrase as a second stdin line, in `KEEL_CAPASS`.
const CAPASS_PRELUDE: &str = "IFS= read -r keelpw2 || true\n\
    case \"$keelpw2\" in\n\
    P*) KEEL_CAPASS=$(printf '%s' \"${keelpw2#P}\" | base64 -d);;\n\
    *) KEEL_CAPASS=;;\n\
    esac\n\
    export KEEL_CAPASS\n";

/// Why a key could not be read, in community.crypto's words.
fn key_error(head: &str, pass: Option<&str>) -> String {
    let encrypted = head.contains("ENCRYPTED");
    let why = match (encrypted, pass.is_some()) {
        (true, true) => "Bad decrypt. Incorrect password?",
        (true, false) => "Password was not given but private key is encrypted",
        (false, true) => "Password was given but private key is not encrypted.",
        (false, false) => "Could not deserialize key data.",
    };
    format!("Wrong passphrase provided for private key, or private key cannot be parsed: {why}")
}

fn dir_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((d, _)) => d.to_string(),
        None => ".".to_string(),
    }
}

/// What the certificate is made from, once the inputs are read.
struct Inputs {
    /// The request, or (self-signed from a key alone) an empty one.
    subject_der: Vec<u8>,
    subject: Vec<(String, String)>,
    csr_spki: Vec<u8>,
    csr_exts: Vec<Ext>,
    csr_valid: bool,
    /// The certificate's key: the private key's (self-signed) or the
    /// request's (ownca).
    spki: Vec<u8>,
    /// The key of `privatekey_path`, when given.
    own_key: Option<PublicKeyInfo>,
    /// Who signs: the private key (self-signed) or the CA key.
    signer_key: PublicKeyInfo,
    issuer_der: Vec<u8>,
    ca: Option<Cert>,
    create_ski: String,
    create_aki: bool,
}

impl Inputs {
    /// The authority key identifier an ownca certificate gets.
    fn wanted_aki(&self) -> Option<Ext> {
        let ca = self.ca.as_ref()?;
        if !self.create_aki {
            return None;
        }
        let kid = ca
            .ext(x509::OID_SKI)
            .and_then(|e| x509::subject_key_id_of(&e.value))
            .unwrap_or_else(|| x509::key_identifier(&ca.spki_der));
        Some(Ext {
            oid: x509::OID_AKI.into(),
            critical: false,
            value: x509::authority_key_id_value(&kid),
        })
    }

    /// The extensions, in the order community.crypto's builder adds them.
    fn extensions(&self) -> Vec<Ext> {
        let mut out = Vec::new();
        let mut has_ski = false;
        for e in &self.csr_exts {
            if e.oid == x509::OID_SKI {
                if self.create_ski == "always_create" {
                    continue;
                }
                has_ski = true;
            }
            if self.create_aki && self.ca.is_some() && e.oid == x509::OID_AKI {
                continue;
            }
            out.push(e.clone());
        }
        if !has_ski && self.create_ski != "never_create" {
            out.push(Ext {
                oid: x509::OID_SKI.into(),
                critical: false,
                value: x509::tlv(0x04, &x509::key_identifier(&self.csr_spki)),
            });
        }
        if let Some(aki) = self.wanted_aki() {
            out.push(aki);
        }
        out
    }

    /// community.crypto's `needs_regeneration`, given an existing
    /// certificate that parses.
    fn needs_regeneration(&self, cert: &Cert, times: Option<(i64, i64)>) -> bool {
        if let Some(k) = &self.own_key {
            if k.der != cert.spki_der {
                return true;
            }
        }
        // The request against the certificate.
        if !self.csr_valid || self.csr_spki != cert.spki_der || self.subject != cert.subject {
            return true;
        }
        let skip = |e: &&Ext| {
            let added_ski = self.create_ski != "never_create" && e.oid == x509::OID_SKI;
            let added_aki = self.create_aki && self.ca.is_some() && e.oid == x509::OID_AKI;
            !(added_ski || added_aki)
        };
        let cert_exts: Vec<&Ext> = cert.extensions.iter().filter(skip).collect();
        let csr_exts: Vec<&Ext> = self.csr_exts.iter().filter(skip).collect();
        if cert_exts.len() != csr_exts.len()
            || cert_exts
                .iter()
                .any(|c| !self.csr_exts.iter().any(|r| r == *c))
        {
            return true;
        }
        if self.create_ski != "never_create" {
            let Some(have) = cert
                .ext(x509::OID_SKI)
                .and_then(|e| x509::subject_key_id_of(&e.value))
            else {
                return true;
            };
            let from_csr = (self.create_ski == "create_if_not_provided")
                .then(|| {
                    self.csr_exts
                        .iter()
                        .find(|e| e.oid == x509::OID_SKI)
                        .and_then(|e| x509::subject_key_id_of(&e.value))
                })
                .flatten();
            let want = from_csr.unwrap_or_else(|| x509::key_identifier(&cert.spki_der));
            if have != want {
                return true;
            }
        }
        if let Some((nb, na)) = times {
            if cert.not_before != nb || cert.not_after != na {
                return true;
            }
        }
        if !cert.signed_by(&self.signer_key.der) {
            return true;
        }
        if let Some(ca) = &self.ca {
            if ca.subject_der != cert.issuer_der && ca.subject != cert.issuer {
                return true;
            }
            if let Some(aki) = self.wanted_aki() {
                if cert.ext(x509::OID_AKI).map(|e| &e.value) != Some(&aki.value) {
                    return true;
                }
            }
        }
        false
    }
}

#[async_trait::async_trait]
impl Module for X509Certificate {
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
        let provider = a.choice(&["provider"], &["acme", "ownca", "selfsigned"], None)?;
        let force = a.bool(&["force"], false)?;
        let csr_path = a.string(&["csr_path"])?;
        let csr_content = a.string(&["csr_content"])?;
        let key_path = a.string(&["privatekey_path"])?;
        let key_content = a.string(&["privatekey_content"])?;
        let passphrase = a.string(&["privatekey_passphrase"])?;
        let ignore_timestamps = a.bool(&["ignore_timestamps"], true)?;
        let backup = a.bool(&["backup"], false)?;
        let return_content = a.bool(&["return_content"], false)?;
        a.choice(
            &["select_crypto_backend"],
            &["auto", "cryptography"],
            Some("auto"),
        )?;
        let ski_choices = &["create_if_not_provided", "always_create", "never_create"];
        a.int(&["selfsigned_version"])?;
        let ss_digest = a
            .string(&["selfsigned_digest"])?
            .unwrap_or_else(|| "sha256".into());
        let ss_not_before = a
            .string(&["selfsigned_not_before", "selfsigned_notBefore"])?
            .unwrap_or_else(|| "+0s".into());
        let ss_not_after = a
            .string(&["selfsigned_not_after", "selfsigned_notAfter"])?
            .unwrap_or_else(|| "+3650d".into());
        let ss_ski = a
            .choice(
                &["selfsigned_create_subject_key_identifier"],
                ski_choices,
                Some("create_if_not_provided"),
            )?
            .unwrap_or_default();
        let ca_path = a.string(&["ownca_path"])?;
        let ca_content = a.string(&["ownca_content"])?;
        let ca_key_path = a.string(&["ownca_privatekey_path"])?;
        let ca_key_content = a.string(&["ownca_privatekey_content"])?;
        let ca_pass = a.string(&["ownca_privatekey_passphrase"])?;
        let ca_digest = a
            .string(&["ownca_digest"])?
            .unwrap_or_else(|| "sha256".into());
        a.int(&["ownca_version"])?;
        let ca_not_before = a
            .string(&["ownca_not_before"])?
            .unwrap_or_else(|| "+0s".into());
        let ca_not_after = a
            .string(&["ownca_not_after"])?
            .unwrap_or_else(|| "+3650d".into());
        let ca_ski = a
            .choice(
                &["ownca_create_subject_key_identifier"],
                ski_choices,
                Some("create_if_not_provided"),
            )?
            .unwrap_or_default();
        let ca_aki = a.bool(&["ownca_create_authority_key_identifier"], true)?;
        for n in [
            "acme_accountkey_path",
            "acme_challenge_path",
            "acme_chain",
            "acme_directory",
        ] {
            a.ignore(&[n]);
        }
        let attrs = FileAttrs::parse(&mut a)?;
        a.finish()?;

        let fail = |m: String| Ok(Plan::done(ModuleResult::failed(m)));
        let opt = |s: &Option<String>| s.clone().map(Value::from).unwrap_or(Value::from(()));
        let qpath = quote(&path);

        if state == "absent" {
            let mut q = Query::new();
            q.stat_expr("crt", &qpath, true, None);
            let exists = q.run(ctx).await?.stat("crt").exists;
            let mut r = ModuleResult::changed(exists)
                .with("filename", path.as_str())
                .with("privatekey", opt(&key_path))
                .with("csr", opt(&csr_path));
            if return_content {
                r = r.with("certificate", Value::from(()));
            }
            if !exists {
                return Ok(Plan::done(r));
            }
            return Ok(Plan::change(r.clone(), async move {
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
                let mut r = r;
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

        let Some(provider) = provider else {
            return fail("state is present but all of the following are missing: provider".into());
        };
        if provider == "acme" {
            return fail(
                "Keel's x509_certificate supports the selfsigned and ownca providers; use \
                 community.crypto.acme_certificate for ACME"
                    .into(),
            );
        }
        let ownca = provider == "ownca";
        for (content, name) in [
            (&csr_content, "csr_content"),
            (&key_content, "privatekey_content"),
            (&ca_content, "ownca_content"),
            (&ca_key_content, "ownca_privatekey_content"),
        ] {
            if content.is_some() {
                return fail(format!(
                    "Keel's x509_certificate reads files on the host: give the *_path option \
                     rather than {name}"
                ));
            }
        }
        if !ownca && key_path.is_none() {
            return fail(
                "One of privatekey_path and privatekey_content must be specified for the \
                 selfsigned provider."
                    .into(),
            );
        }
        if ownca && ca_path.is_none() {
            return fail("ownca_path or ownca_content is required for ownca provider".into());
        }
        if ownca && ca_key_path.is_none() {
            return fail(
                "ownca_privatekey_path or ownca_privatekey_content is required for ownca provider"
                    .into(),
            );
        }
        let now = chrono::Utc::now().timestamp();
        let (nb_text, na_text, nb_name, na_name) = if ownca {
            (
                &ca_not_before,
                &ca_not_after,
                "ownca_not_before",
                "ownca_not_after",
            )
        } else {
            (
                &ss_not_before,
                &ss_not_after,
                "selfsigned_not_before",
                "selfsigned_not_after",
            )
        };
        let times = x509::time_option(nb_text, nb_name, now)
            .and_then(|nb| Ok((nb, x509::time_option(na_text, na_name, now)?)));
        let (not_before, not_after) = match times {
            Ok(t) => t,
            Err(e) => return fail(e.to_string()),
        };
        let digest = if ownca { ca_digest } else { ss_digest };

        // 1. Query.
        let mut q = Query::new();
        q.raw(&format!("{PASS_PRELUDE}{CAPASS_PRELUDE}p={qpath}\n"));
        q.test("dir", &format!("[ -d \"$(dirname -- {qpath})\" ]"));
        q.stat_expr("crt", "\"$p\"", true, None);
        q.section("cert", "cat -- \"$p\" 2>/dev/null");
        let file_checks = [
            ("csr", &csr_path),
            ("key", &key_path),
            ("ca", &ca_path),
            ("cakey", &ca_key_path),
        ];
        for (name, p) in file_checks {
            if let Some(p) = p {
                q.test(&format!("{name}_exists"), &format!("[ -f {} ]", quote(p)));
            }
        }
        if let Some(p) = &csr_path {
            q.section("csr", &format!("cat -- {} 2>/dev/null", quote(p)));
        }
        if let Some(p) = &ca_path {
            q.section("ca", &format!("cat -- {} 2>/dev/null", quote(p)));
        }
        for (name, p, var) in [
            ("key", &key_path, "KEEL_PASS"),
            ("cakey", &ca_key_path, "KEEL_CAPASS"),
        ] {
            if let Some(p) = p {
                q.section(
                    &format!("{name}_head"),
                    &format!("sed -n '1p;2{{/^Proc-Type:/p}}' -- {}", quote(p)),
                );
                q.section(
                    &format!("{name}_pub"),
                    &format!(
                        "openssl pkey -in {} -passin env:{var} -pubout </dev/null",
                        quote(p)
                    ),
                );
            }
        }
        let mut stdin = pass_stdin(passphrase.as_deref());
        stdin.extend(pass_stdin(ca_pass.as_deref()));
        let ans = q.run_with_stdin(ctx, stdin).await?;
        if !ans.yes("dir") {
            return fail(format!(
                "The directory {} does not exist or the file is not a directory",
                dir_of(&path)
            ));
        }

        // The constructors' checks, in community.crypto's order.
        let own_key = match &key_path {
            None => None,
            Some(p) => {
                if !ans.yes("key_exists") {
                    if !ownca {
                        if let Some(c) = &csr_path {
                            if !ans.yes("csr_exists") {
                                return fail(format!(
                                    "The certificate signing request file {c} does not exist"
                                ));
                            }
                        }
                    }
                    return fail(format!("The private key file {p} does not exist"));
                }
                match PublicKeyInfo::parse_pem(ans.text("key_pub")) {
                    Ok(k) => Some(k),
                    Err(_) => return fail(key_error(ans.text("key_head"), passphrase.as_deref())),
                }
            }
        };
        let csr = match &csr_path {
            None if ownca => {
                return fail("csr_path or csr_content is required for ownca provider".into())
            }
            None => None,
            Some(c) => {
                if !ans.yes("csr_exists") {
                    return fail(format!(
                        "The certificate signing request file {c} does not exist"
                    ));
                }
                match Csr::parse_pem(ans.text("csr")) {
                    Some(r) => Some(r),
                    None => {
                        return fail(format!(
                            "Error while loading the certificate signing request {c}: not a \
                             PEM certificate request"
                        ))
                    }
                }
            }
        };
        let mut ca = None;
        let mut ca_key = None;
        if ownca {
            let cp = ca_path.clone().unwrap_or_default();
            let kp = ca_key_path.clone().unwrap_or_default();
            if !ans.yes("ca_exists") {
                return fail(format!("The CA certificate file {cp} does not exist"));
            }
            if !ans.yes("cakey_exists") {
                return fail(format!("The CA private key file {kp} does not exist"));
            }
            let Some(c) = Cert::parse_pem(ans.text("ca")) else {
                return fail(format!(
                    "Error while loading the CA certificate {cp}: not a PEM certificate"
                ));
            };
            let Ok(k) = PublicKeyInfo::parse_pem(ans.text("cakey_pub")) else {
                return fail(key_error(ans.text("cakey_head"), ca_pass.as_deref()));
            };
            if k.der != c.spki_der {
                return fail("The CA private key does not belong to the CA certificate".into());
            }
            ca = Some(c);
            ca_key = Some(k);
        }
        let signer_key = if ownca { ca_key } else { own_key.clone() };
        let Some(signer_key) = signer_key else {
            return fail("Private key has not been provided".into());
        };
        let signer = match x509::signer(&signer_key, &digest) {
            Ok(s) => s,
            Err(_) if matches!(signer_key.key_type, KeyType::X25519 | KeyType::X448) => {
                return fail("Private key cannot be used to sign certificates".into())
            }
            Err(e) => return fail(e.to_string()),
        };
        let inputs = match &csr {
            Some(r) => Inputs {
                subject_der: r.subject_der.clone(),
                subject: r.subject.clone(),
                csr_spki: r.spki_der.clone(),
                csr_exts: r.extensions.clone(),
                csr_valid: r.signature_valid,
                spki: if ownca {
                    r.spki_der.clone()
                } else {
                    signer_key.der.clone()
                },
                own_key: own_key.clone(),
                signer_key: signer_key.clone(),
                issuer_der: match &ca {
                    Some(c) => c.subject_der.clone(),
                    None => r.subject_der.clone(),
                },
                ca: ca.clone(),
                create_ski: if ownca {
                    ca_ski.clone()
                } else {
                    ss_ski.clone()
                },
                create_aki: ownca && ca_aki,
            },
            // Self-signed from a key alone: an empty subject, no extensions.
            None => Inputs {
                subject_der: x509::name_der(&[]),
                subject: vec![],
                csr_spki: signer_key.der.clone(),
                csr_exts: vec![],
                csr_valid: true,
                spki: signer_key.der.clone(),
                own_key: own_key.clone(),
                signer_key: signer_key.clone(),
                issuer_der: x509::name_der(&[]),
                ca: None,
                create_ski: ss_ski.clone(),
                create_aki: false,
            },
        };

        // 2. Decide.
        let st = ans.stat("crt");
        let exists = st.exists;
        let existing = if exists {
            Cert::parse_pem(ans.text("cert"))
        } else {
            None
        };
        let before = match (&existing, exists) {
            (Some(c), _) => c.info(),
            (None, true) => dict([("can_parse_certificate", Value::from(false))]),
            (None, false) => dict(Vec::<(String, Value)>::new()),
        };
        let regen = force
            || match &existing {
                None => true,
                Some(c) => inputs
                    .needs_regeneration(c, (!ignore_timestamps).then_some((not_before, not_after))),
            };
        let mode = match &attrs.mode {
            Some(ModeSpec::Octal(m)) => Some(*m),
            Some(ModeSpec::Symbolic(s)) => Some(crate::modules::args::apply_symbolic(
                s,
                if exists { st.mode } else { 0o644 },
                false,
            )?),
            _ => None,
        };
        let (attr_sh, attrs_differ) =
            attr_commands(&st, mode, attrs.owner.as_deref(), attrs.group.as_deref());
        let serial = x509::random_serial();
        let base = {
            let mut r = ModuleResult::changed(false)
                .with("privatekey", opt(&key_path))
                .with("csr", opt(&csr_path));
            if ownca {
                r = r
                    .with("ca_cert", opt(&ca_path))
                    .with("ca_privatekey", opt(&ca_key_path));
            }
            r.with("filename", path.as_str())
        };
        // What a result says about a certificate: community.crypto's check
        // mode gives the times it would ask for and the serial it drew.
        let drawn = serial.clone();
        let described =
            move |mut r: ModuleResult, cert: Option<&Cert>, before: Value, after: Value| {
                match cert.filter(|_| !ctx.check_mode) {
                    Some(c) => {
                        r = r
                            .with("notBefore", x509::asn1_text(c.not_before))
                            .with("notAfter", x509::asn1_text(c.not_after))
                            .with("serial_number", c.serial_value());
                    }
                    None => {
                        r = r
                            .with("notBefore", x509::asn1_text(not_before))
                            .with("notAfter", x509::asn1_text(not_after))
                            .with("serial_number", x509::serial_value(&drawn));
                    }
                }
                if return_content {
                    r = r.with(
                        "certificate",
                        cert.map(|c| Value::from(c.pem()))
                            .unwrap_or(Value::from(())),
                    );
                }
                r.data
                    .insert("diff".into(), dict([("before", before), ("after", after)]));
                r
            };

        if !regen {
            let mut planned = described(
                base.clone(),
                existing.as_ref(),
                before.clone(),
                before.clone(),
            );
            planned.changed = attrs_differ;
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

        let mut planned = described(
            base.clone(),
            existing.as_ref(),
            before.clone(),
            before.clone(),
        );
        planned.changed = true;
        let owner = attrs.owner.clone();
        let group = attrs.group.clone();
        let sign_key_path = if ownca {
            ca_key_path.clone().unwrap_or_default()
        } else {
            key_path.clone().unwrap_or_default()
        };
        let sign_pass = if ownca {
            ca_pass.clone()
        } else {
            passphrase.clone()
        };
        Ok(Plan::change(planned, async move {
            // 3. Apply: build, have the host sign, write.
            let exts = inputs.extensions();
            let tbs = x509::cert_tbs(&CertFields {
                serial: &serial,
                alg: &signer.alg,
                issuer_der: &inputs.issuer_der,
                not_before,
                not_after,
                subject_der: &inputs.subject_der,
                spki_der: &inputs.spki,
                extensions: &exts,
            });
            let out = match apply(
                ctx,
                &x509::sign_script(&sign_key_path, &signer),
                Some(x509::sign_stdin(sign_pass.as_deref(), &tbs)),
            )
            .await?
            {
                Ok(o) => o,
                Err(e) => return Ok(ModuleResult::failed(e)),
            };
            let Some(sig) = x509::signature_of(&out.stdout_str()) else {
                return Ok(ModuleResult::failed(format!(
                    "signing the certificate with {sign_key_path} gave no signature"
                )));
            };
            let der = x509::signed(&tbs, &signer.alg, &sig);
            let Some(cert) = Cert::parse_der(&der) else {
                return Ok(ModuleResult::failed(
                    "the new certificate cannot be read back",
                ));
            };
            let text = cert.pem();
            let mut script = format!("p={qpath}\nt=\"$p.keel$$\"\ncat > \"$t\"\n");
            script.push_str(
                "if [ -e \"$p\" ]; then chmod --reference=\"$p\" -- \"$t\"; \
                 chown --reference=\"$p\" -- \"$t\" 2>/dev/null || true; fi\n",
            );
            if backup && exists {
                script.push_str("d=\"$p\"\n");
                script.push_str(BACKUP_SNIPPET);
            }
            script.push_str("mv -f -- \"$t\" \"$p\"\n");
            if let Some(m) = mode {
                script.push_str(&format!("chmod {m:04o} -- \"$p\"\n"));
            }
            if let Some(o) = &owner {
                script.push_str(&format!("chown -- {} \"$p\"\n", quote(o)));
            }
            if let Some(g) = &group {
                script.push_str(&format!("chgrp -- {} \"$p\"\n", quote(g)));
            }
            let out = match apply(ctx, &script, Some(text.into_bytes())).await? {
                Ok(o) => o,
                Err(e) => return Ok(ModuleResult::failed(e)),
            };
            let mut r = described(base, Some(&cert), before, cert.info());
            r.changed = true;
            if let Some(b) = out
                .stdout_str()
                .lines()
                .find_map(|l| l.strip_prefix("BACKUP ").map(str::to_string))
            {
                r.data.insert("backup_file".into(), Value::from(b));
            }
            Ok(r)
        }))
    }
}
