//! `openssl_csr` (community.crypto): makes sure a certificate signing
//! request for a private key on the host, with the wanted subject and
//! extensions, exists (or not).
//!
//! Query (one round trip, the passphrase on stdin): whether the parent
//! directory exists, the request file's stat and text (a request is public),
//! the key's PEM header lines and its public key (`openssl pkey -pubout`).
//! Decide on the controller, as community.crypto's `_check_csr` does: the
//! subject as a set of (OID, value) pairs, the alternative names, extended
//! key usages and name constraints as sets, key usage bits, basic
//! constraints, OCSP must-staple and the subject key identifier, each with
//! its criticality, the signature and the public key. So a request is only
//! made again when what it says differs. Apply: the
//! `CertificationRequestInfo` is built here ([`kit::x509`]), the host signs
//! those bytes with its key, and the request is written beside the old one
//! and moved into place, then `mode`/`owner`/`group` are set.
//!
//! Like community.crypto, a request that does not exist yet is reported as
//! changed in check mode without reading the key or the alternative names;
//! their errors show when it is made.
//!
//! [`kit::x509`]: crate::modules::kit::x509

use minijinja::value::ValueKind;
use minijinja::Value;

use crate::modules::args::{dict, scalar_string, ModeSpec, ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::pki::{pass_stdin, PublicKeyInfo, PASS_PRELUDE};
use crate::modules::kit::write::BACKUP_SNIPPET;
use crate::modules::kit::x509::{
    self, basic_constraints, general_name, key_usage_bits, name_to_oid, Csr, Ext, X509Error,
};
use crate::modules::kit::{apply, attr_commands, FileAttrs, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct OpensslCsr;

static PARAMS: Params = Params {
    module: "openssl_csr",
    sets: &[
        &[
            &["path"],
            &["state"],
            &["force"],
            &["backup"],
            &["return_content"],
            &["digest"],
            &["privatekey_path"],
            &["privatekey_content"],
            &["privatekey_passphrase"],
            &["version"],
            &["subject"],
            &["subject_ordered"],
            &["country_name", "C", "countryName"],
            &["state_or_province_name", "ST", "stateOrProvinceName"],
            &["locality_name", "L", "localityName"],
            &["organization_name", "O", "organizationName"],
            &["organizational_unit_name", "OU", "organizationalUnitName"],
            &["common_name", "CN", "commonName"],
            &["email_address", "E", "emailAddress"],
            &["subject_alt_name", "subjectAltName"],
            &["subject_alt_name_critical", "subjectAltName_critical"],
            &["use_common_name_for_san", "useCommonNameForSAN"],
            &["key_usage", "keyUsage"],
            &["key_usage_critical", "keyUsage_critical"],
            &["extended_key_usage", "extKeyUsage", "extendedKeyUsage"],
            &[
                "extended_key_usage_critical",
                "extKeyUsage_critical",
                "extendedKeyUsage_critical",
            ],
            &["basic_constraints", "basicConstraints"],
            &["basic_constraints_critical", "basicConstraints_critical"],
            &["ocsp_must_staple", "ocspMustStaple"],
            &["ocsp_must_staple_critical", "ocspMustStaple_critical"],
            &["name_constraints_permitted"],
            &["name_constraints_excluded"],
            &["name_constraints_critical"],
            &["create_subject_key_identifier"],
            &["subject_key_identifier"],
            &["authority_key_identifier"],
            &["authority_cert_issuer"],
            &["authority_cert_serial_number"],
            &["crl_distribution_points"],
            &["select_crypto_backend"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

/// What the request should say, as given.
struct Wanted {
    /// The subject as given (the name as written, then the value).
    subject: Vec<(String, String)>,
    ordered: bool,
    san: Option<Vec<String>>,
    san_critical: bool,
    key_usage: Option<Vec<String>>,
    key_usage_critical: bool,
    eku: Option<Vec<String>>,
    eku_critical: bool,
    bc: Option<Vec<String>>,
    bc_critical: bool,
    ocsp: bool,
    ocsp_critical: bool,
    nc_permitted: Vec<String>,
    nc_excluded: Vec<String>,
    nc_critical: bool,
    create_ski: bool,
}

fn opt_list(v: &Option<Vec<String>>) -> Value {
    match v {
        Some(l) => Value::from(l.clone()),
        None => Value::from(()),
    }
}

impl Wanted {
    /// The subject as (OID, value).
    fn subject_oids(&self) -> Result<Vec<(String, String)>, X509Error> {
        self.subject
            .iter()
            .map(|(k, v)| Ok((name_to_oid(k)?, v.clone())))
            .collect()
    }

    /// The extensions, in the order `cryptography`'s builder adds them.
    fn extensions(&self, spki: &[u8]) -> Result<Vec<Ext>, X509Error> {
        let mut out = Vec::new();
        if let Some(san) = self.san.as_ref().filter(|s| !s.is_empty()) {
            let names = san
                .iter()
                .map(|n| general_name(n, "Subject Alternative Name"))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Ext {
                oid: x509::OID_SAN.into(),
                critical: self.san_critical,
                value: x509::tlv(0x30, &names.concat()),
            });
        }
        if let Some(ku) = self.key_usage.as_ref().filter(|s| !s.is_empty()) {
            out.push(Ext {
                oid: x509::OID_KU.into(),
                critical: self.key_usage_critical,
                value: x509::key_usage_value(key_usage_bits(ku)?),
            });
        }
        if let Some(eku) = self.eku.as_ref().filter(|s| !s.is_empty()) {
            let oids = eku
                .iter()
                .map(|u| name_to_oid(u).map(|o| x509::oid(&o)))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Ext {
                oid: x509::OID_EKU.into(),
                critical: self.eku_critical,
                value: x509::tlv(0x30, &oids.concat()),
            });
        }
        if let Some(bc) = self.bc.as_ref().filter(|s| !s.is_empty()) {
            let (ca, path) = basic_constraints(bc)?;
            out.push(Ext {
                oid: x509::OID_BC.into(),
                critical: self.bc_critical,
                value: x509::basic_constraints_value(ca, path),
            });
        }
        if self.ocsp {
            out.push(Ext {
                oid: x509::OID_TLSF.into(),
                critical: self.ocsp_critical,
                value: x509::tlv(0x30, &x509::uint(&[5])),
            });
        }
        if !self.nc_permitted.is_empty() || !self.nc_excluded.is_empty() {
            let enc = |l: &[String], what: &str| {
                l.iter()
                    .map(|n| general_name(n, what))
                    .collect::<Result<Vec<_>, _>>()
            };
            out.push(Ext {
                oid: x509::OID_NC.into(),
                critical: self.nc_critical,
                value: x509::name_constraints_value(
                    &enc(&self.nc_permitted, "name constraints permitted")?,
                    &enc(&self.nc_excluded, "name constraints excluded")?,
                ),
            });
        }
        if self.create_ski {
            out.push(Ext {
                oid: x509::OID_SKI.into(),
                critical: false,
                value: x509::tlv(0x04, &x509::key_identifier(spki)),
            });
        }
        Ok(out)
    }

    /// community.crypto's `_check_csr` (subject, extensions; the signature
    /// and key are checked by the caller).
    fn matches(&self, csr: &Csr, wanted_exts: &[Ext]) -> Result<bool, X509Error> {
        let subject = self.subject_oids()?;
        let same_subject = if self.ordered {
            subject == csr.subject
        } else {
            let a: std::collections::BTreeSet<_> = subject.iter().collect();
            let b: std::collections::BTreeSet<_> = csr.subject.iter().collect();
            a == b
        };
        if !same_subject {
            return Ok(false);
        }
        let want = |o: &str| wanted_exts.iter().find(|e| e.oid == o);
        let have = |o: &str| csr.ext(o);
        let set = |v: Vec<String>| v.into_iter().collect::<std::collections::BTreeSet<_>>();
        // Alternative names, extended key usages, name constraints: as sets,
        // criticality compared when both have some.
        type Reader = fn(&[u8]) -> Vec<String>;
        let sets: [(&str, Reader); 2] = [
            (x509::OID_SAN, x509::general_names),
            (x509::OID_EKU, x509::eku_oids),
        ];
        for (o, read) in sets {
            let (w, h) = (want(o), have(o));
            let wv = w.map(|e| set(read(&e.value))).unwrap_or_default();
            let hv = h.map(|e| set(read(&e.value))).unwrap_or_default();
            if wv != hv {
                return Ok(false);
            }
            if let (Some(w), Some(h)) = (w, h) {
                if !wv.is_empty() && w.critical != h.critical {
                    return Ok(false);
                }
            }
        }
        {
            let (w, h) = (want(x509::OID_NC), have(x509::OID_NC));
            let read = |e: Option<&Ext>| {
                e.map(|e| {
                    let (p, x) = x509::name_constraints_of(&e.value);
                    (set(p), set(x))
                })
                .unwrap_or_default()
            };
            if read(w) != read(h) {
                return Ok(false);
            }
            if let (Some(w), Some(h)) = (w, h) {
                if w.critical != h.critical {
                    return Ok(false);
                }
            }
        }
        // Key usage: the bits and criticality; none wanted means none there.
        match (want(x509::OID_KU), have(x509::OID_KU)) {
            (None, h) => {
                if h.is_some() {
                    return Ok(false);
                }
            }
            (Some(_), None) => return Ok(false),
            (Some(w), Some(h)) => {
                if x509::key_usage_of(&w.value) != x509::key_usage_of(&h.value)
                    || w.critical != h.critical
                {
                    return Ok(false);
                }
            }
        }
        // Basic constraints: CA and path length, then presence/criticality.
        let bc = |e: Option<&Ext>| {
            e.and_then(|e| x509::basic_constraints_of(&e.value))
                .unwrap_or((false, None))
        };
        let (wb, hb) = (want(x509::OID_BC), have(x509::OID_BC));
        if bc(wb) != bc(hb) {
            return Ok(false);
        }
        match (wb, hb) {
            (Some(w), Some(h)) if w.critical != h.critical => return Ok(false),
            (Some(_), None) | (None, Some(_)) => return Ok(false),
            _ => {}
        }
        // OCSP must-staple and the subject key identifier: exactly as built.
        for o in [x509::OID_TLSF, x509::OID_SKI] {
            match (want(o), have(o)) {
                (None, None) => {}
                (Some(w), Some(h)) if w == h => {}
                _ => return Ok(false),
            }
        }
        // Extensions Keel never asks for must not be there either.
        for o in [x509::OID_AKI, x509::OID_CRLDP] {
            if have(o).is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn result(&self, path: &str, key_path: &str, before: Value, after: Value) -> ModuleResult {
        let subject: Vec<Value> = self
            .subject
            .iter()
            .map(|(k, v)| Value::from(vec![Value::from(k.as_str()), Value::from(v.as_str())]))
            .collect();
        let mut r = ModuleResult::changed(false)
            .with("privatekey", key_path)
            .with("subject", Value::from(subject))
            .with("subjectAltName", opt_list(&self.san))
            .with("keyUsage", opt_list(&self.key_usage))
            .with("extendedKeyUsage", opt_list(&self.eku))
            .with("basicConstraints", opt_list(&self.bc))
            .with("ocspMustStaple", self.ocsp)
            .with(
                "name_constraints_permitted",
                Value::from(self.nc_permitted.clone()),
            )
            .with(
                "name_constraints_excluded",
                Value::from(self.nc_excluded.clone()),
            )
            .with("filename", path);
        r.data
            .insert("diff".into(), dict([("before", before), ("after", after)]));
        r
    }
}

/// `parse_name_field`: a dict of names to a value or a list of values.
fn name_field(v: &Value, field: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    if v.kind() != ValueKind::Map {
        return Err(format!("The value of {field} must be a dictionary"));
    }
    for k in v.try_iter().map_err(|e| e.to_string())? {
        let key = scalar_string(&k).unwrap_or_default();
        let item = v.get_item(&k).unwrap_or_default();
        let values: Vec<Value> = if item.kind() == ValueKind::Seq {
            item.try_iter().map_err(|e| e.to_string())?.collect()
        } else {
            vec![item]
        };
        for val in values {
            match scalar_string(&val) {
                Some(s) if !s.is_empty() => out.push((key.clone(), s)),
                Some(_) => {
                    return Err(format!(
                        "Values for {field} must not be empty (key {key:?})"
                    ))
                }
                None => {
                    return Err(format!(
                        "Values for {field} must be strings or lists of strings (key {key:?})"
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// Why a key could not be read, in community.crypto's words.
fn key_error(exists: bool, path: &str, head: &str, pass: Option<&str>) -> String {
    if !exists {
        return format!(
            "Error while reading private key file from disk: [Errno 2] No such file or directory: '{path}'"
        );
    }
    let encrypted = head.contains("ENCRYPTED");
    let why = match (encrypted, pass.is_some()) {
        (true, true) => "Bad decrypt. Incorrect password?",
        (true, false) => "Password was not given but private key is encrypted",
        (false, true) => "Password was given but private key is not encrypted.",
        (false, false) => "Could not deserialize key data.",
    };
    format!("Wrong passphrase provided for private key, or private key cannot be parsed: {why}")
}

#[async_trait::async_trait]
impl Module for OpensslCsr {
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
        let force = a.bool(&["force"], false)?;
        let backup = a.bool(&["backup"], false)?;
        let return_content = a.bool(&["return_content"], false)?;
        let digest = a.string(&["digest"])?.unwrap_or_else(|| "sha256".into());
        let key_path = a.string(&["privatekey_path"])?;
        let key_content = a.string(&["privatekey_content"])?;
        let passphrase = a.string(&["privatekey_passphrase"])?;
        if let Some(v) = a.int(&["version"])? {
            if v != 1 {
                return Err(a.missing("version"));
            }
        }
        let subject_dict = a.value(&["subject"]);
        let subject_ordered = a.value(&["subject_ordered"]);
        let mut fields = Vec::new();
        for (names, short) in [
            (&["country_name", "C", "countryName"][..], "C"),
            (
                &["state_or_province_name", "ST", "stateOrProvinceName"],
                "ST",
            ),
            (&["locality_name", "L", "localityName"], "L"),
            (&["organization_name", "O", "organizationName"], "O"),
            (
                &["organizational_unit_name", "OU", "organizationalUnitName"],
                "OU",
            ),
            (&["common_name", "CN", "commonName"], "CN"),
            (&["email_address", "E", "emailAddress"], "emailAddress"),
        ] {
            if let Some(v) = a.string(names)?.filter(|v| !v.is_empty()) {
                fields.push((short.to_string(), v));
            }
        }
        let san = a.list(&["subject_alt_name", "subjectAltName"])?;
        let san_critical = a.bool(
            &["subject_alt_name_critical", "subjectAltName_critical"],
            false,
        )?;
        let use_cn = a.bool(&["use_common_name_for_san", "useCommonNameForSAN"], true)?;
        let key_usage = a.list(&["key_usage", "keyUsage"])?;
        let key_usage_critical = a.bool(&["key_usage_critical", "keyUsage_critical"], false)?;
        let eku = a.list(&["extended_key_usage", "extKeyUsage", "extendedKeyUsage"])?;
        let eku_critical = a.bool(
            &[
                "extended_key_usage_critical",
                "extKeyUsage_critical",
                "extendedKeyUsage_critical",
            ],
            false,
        )?;
        let bc = a.list(&["basic_constraints", "basicConstraints"])?;
        let bc_critical = a.bool(
            &["basic_constraints_critical", "basicConstraints_critical"],
            false,
        )?;
        let ocsp = a.bool(&["ocsp_must_staple", "ocspMustStaple"], false)?;
        let ocsp_critical = a.bool(
            &["ocsp_must_staple_critical", "ocspMustStaple_critical"],
            false,
        )?;
        let nc_permitted = a.list(&["name_constraints_permitted"])?.unwrap_or_default();
        let nc_excluded = a.list(&["name_constraints_excluded"])?.unwrap_or_default();
        let nc_critical = a.bool(&["name_constraints_critical"], false)?;
        let create_ski = a.bool(&["create_subject_key_identifier"], false)?;
        let unsupported: Vec<&str> = [
            "subject_key_identifier",
            "authority_key_identifier",
            "authority_cert_issuer",
            "authority_cert_serial_number",
            "crl_distribution_points",
        ]
        .into_iter()
        .filter(|n| a.has(n))
        .collect();
        for n in [
            "subject_key_identifier",
            "authority_key_identifier",
            "authority_cert_issuer",
            "authority_cert_serial_number",
            "crl_distribution_points",
        ] {
            a.ignore(&[n]);
        }
        a.choice(
            &["select_crypto_backend"],
            &["auto", "cryptography"],
            Some("auto"),
        )?;
        let attrs = FileAttrs::parse(&mut a)?;
        a.finish()?;

        let fail = |m: String| Ok(Plan::done(ModuleResult::failed(m)));
        if let Some(n) = unsupported.first() {
            return fail(format!(
                "Keel's openssl_csr does not support {n} yet (supported: subject fields, \
                 subject_alt_name, key_usage, extended_key_usage, basic_constraints, \
                 ocsp_must_staple, name constraints, create_subject_key_identifier)"
            ));
        }
        if key_content.is_some() {
            if key_path.is_some() {
                return fail(
                    "parameters are mutually exclusive: privatekey_path|privatekey_content".into(),
                );
            }
            return fail(
                "Keel's openssl_csr reads the key on the host: give privatekey_path rather \
                 than privatekey_content"
                    .into(),
            );
        }
        if state == "present" && key_path.is_none() {
            return fail(
                "state is present but any of the following are missing: privatekey_path, \
                 privatekey_content"
                    .into(),
            );
        }
        if subject_dict.is_some() && subject_ordered.is_some() {
            return fail("parameters are mutually exclusive: subject|subject_ordered".into());
        }
        let mut subject = fields;
        let mut ordered = false;
        if let Some(d) = &subject_dict {
            match name_field(d, "subject") {
                Ok(v) => subject.extend(v),
                Err(e) => return fail(e),
            }
        }
        if let Some(l) = &subject_ordered {
            if !subject.is_empty() {
                return fail(
                    "subject_ordered cannot be combined with any other subject field".into(),
                );
            }
            for item in l.try_iter().into_iter().flatten() {
                match name_field(&item, "subject_ordered") {
                    Ok(v) => subject.extend(v),
                    Err(e) => return fail(e),
                }
            }
            ordered = true;
        }
        let mut san = san;
        if san.as_ref().is_none_or(|s| s.is_empty()) && use_cn {
            if let Some((_, cn)) = subject.iter().find(|(k, _)| k == "CN" || k == "commonName") {
                san = Some(vec![format!("DNS:{cn}")]);
            }
        }
        let wanted = Wanted {
            subject,
            ordered,
            san,
            san_critical,
            key_usage,
            key_usage_critical,
            eku,
            eku_critical,
            bc,
            bc_critical,
            ocsp,
            ocsp_critical,
            nc_permitted,
            nc_excluded,
            nc_critical,
            create_ski,
        };
        if let Err(e) = wanted.subject_oids() {
            return fail(e.to_string());
        }
        let key_path_s = key_path.clone().unwrap_or_default();

        // 1. Query.
        let qpath = quote(&path);
        let qkey = quote(&key_path_s);
        let mut q = Query::new();
        q.raw(&format!("{PASS_PRELUDE}p={qpath}\nk={qkey}\n"));
        q.test("dir", &format!("[ -d \"$(dirname -- {qpath})\" ]"));
        q.test("keyfile", "[ -f \"$k\" ]");
        q.stat_expr("csr", "\"$p\"", true, None);
        q.section("text", "cat -- \"$p\" 2>/dev/null");
        q.section("head", "sed -n '1p;2{/^Proc-Type:/p}' -- \"$k\"");
        q.section(
            "pub",
            "openssl pkey -in \"$k\" -passin env:KEEL_PASS -pubout </dev/null",
        );
        let ans = q
            .run_with_stdin(ctx, pass_stdin(passphrase.as_deref()))
            .await?;
        if !ans.yes("dir") {
            let base = match path.rsplit_once('/') {
                Some(("", _)) => "/".to_string(),
                Some((d, _)) => d.to_string(),
                None => ".".to_string(),
            };
            return fail(format!(
                "The directory {base} does not exist or the file is not a directory"
            ));
        }
        let st = ans.stat("csr");
        let exists = st.exists;
        let existing = if exists {
            Csr::parse_pem(ans.text("text"))
        } else {
            None
        };
        let before = match (&existing, exists) {
            (Some(c), _) => c.info(),
            (None, true) => dict([("can_parse_csr", Value::from(false))]),
            (None, false) => dict(Vec::<(String, Value)>::new()),
        };
        let key = PublicKeyInfo::parse_pem(ans.text("pub")).ok();
        let key_err = key_error(
            ans.yes("keyfile"),
            &key_path_s,
            ans.text("head"),
            passphrase.as_deref(),
        );

        if state == "absent" {
            let empty = || dict(Vec::<(String, Value)>::new());
            let mut planned = wanted.result(&path, &key_path_s, empty(), empty());
            planned.changed = exists;
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

        // 2. Decide: a request that exists and parses is compared, which
        // needs the key; one that does not is made.
        let regen = match (&existing, force) {
            (_, true) | (None, _) => true,
            (Some(csr), false) => {
                let Some(k) = &key else {
                    return fail(key_err);
                };
                let exts = match wanted.extensions(&k.der) {
                    Ok(e) => e,
                    Err(e) => return fail(e.to_string()),
                };
                let same = match wanted.matches(csr, &exts) {
                    Ok(s) => s,
                    Err(e) => return fail(e.to_string()),
                };
                !(same && csr.signature_valid && csr.spki_der == k.der)
            }
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
        let current_text: Value = match &existing {
            Some(_) if return_content => Value::from(ans.text("text")),
            _ => Value::from(()),
        };
        let with_content = move |mut r: ModuleResult, text: Value| {
            if return_content {
                r.data.insert("csr".into(), text);
            }
            r
        };

        if !regen {
            let mut planned = with_content(
                wanted.result(&path, &key_path_s, before.clone(), before.clone()),
                current_text,
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

        // What check mode reports: the request as it is now.
        let mut planned = with_content(
            wanted.result(&path, &key_path_s, before.clone(), before.clone()),
            current_text,
        );
        planned.changed = true;
        let owner = attrs.owner.clone();
        let group = attrs.group.clone();
        Ok(Plan::change(planned, async move {
            // 3. Apply: build, have the host sign, write.
            let Some(k) = key else {
                return Ok(ModuleResult::failed(key_err));
            };
            let built = wanted
                .subject_oids()
                .and_then(|s| Ok((s, wanted.extensions(&k.der)?)))
                .and_then(|(s, e)| Ok((s, e, x509::signer(&k, &digest)?)));
            let (subject, exts, signer) = match built {
                Ok(b) => b,
                Err(e) => return Ok(ModuleResult::failed(e.to_string())),
            };
            let tbs = x509::csr_tbs(&x509::name_der(&subject), &k.der, &exts);
            let out = match apply(
                ctx,
                &x509::sign_script(&key_path_s, &signer),
                Some(x509::sign_stdin(passphrase.as_deref(), &tbs)),
            )
            .await?
            {
                Ok(o) => o,
                Err(e) => return Ok(ModuleResult::failed(e)),
            };
            let Some(sig) = x509::signature_of(&out.stdout_str()) else {
                return Ok(ModuleResult::failed(format!(
                    "signing the request with {key_path_s} gave no signature"
                )));
            };
            let der = x509::signed(&tbs, &signer.alg, &sig);
            let Some(csr) = Csr::parse_der(&der) else {
                return Ok(ModuleResult::failed("the new request cannot be read back"));
            };
            let text = csr.pem();
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
            let out = match apply(ctx, &script, Some(text.clone().into_bytes())).await? {
                Ok(o) => o,
                Err(e) => return Ok(ModuleResult::failed(e)),
            };
            let mut r = with_content(
                wanted.result(&path, &key_path_s, before, csr.info()),
                Value::from(text),
            );
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
