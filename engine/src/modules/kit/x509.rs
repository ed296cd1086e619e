//! What `openssl_csr` and `x509_certificate` share: the requests and
//! certificates themselves, built and read on the controller.
//!
//! Where it sits: a module asks the host for public data only (the private
//! key's public half, the existing request or certificate), decides here
//! whether what exists matches what was asked for, and when it does not,
//! builds the to-be-signed DER here, has the host sign those bytes with its
//! key ([`sign_script`]: `openssl dgst`/`pkeyutl`, the passphrase on stdin
//! through [`PASS_PRELUDE`](super::pki::PASS_PRELUDE)) and assembles the
//! result. The private key never leaves the host, and the bytes are the
//! ones the Python `cryptography` library writes (same string types, same
//! extension order), so `extensions_by_oid` and fingerprints match
//! community.crypto's.
//!
//! DER is built with the few tag-length-value helpers below and read back
//! with `x509-parser` (names, extensions, signatures); the extension values
//! community.crypto reports are decoded by [`decode_general_name`] and
//! friends from the raw value `x509-parser` hands over.

use base64::Engine as _;
use minijinja::Value;
use x509_parser::prelude::*;

use super::pki::{fingerprints, KeyType, PublicKeyInfo};
use crate::modules::args::dict;

/// Why a name, usage or value given to a module cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct X509Error(pub String);

fn err(s: impl Into<String>) -> X509Error {
    X509Error(s.into())
}

// ---------------------------------------------------------------- DER out

/// One DER element: tag, definite length, content.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        v.push(0x80 | bytes.len() as u8);
        v.extend(bytes);
    }
    v.extend_from_slice(content);
    v
}

/// A SEQUENCE of already encoded elements.
pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// An OBJECT IDENTIFIER from its dotted form (checked by [`is_dotted`]).
pub fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut body = Vec::new();
    let mut push = |mut n: u64| {
        let mut tmp = vec![(n & 0x7f) as u8];
        n >>= 7;
        while n > 0 {
            tmp.push(0x80 | (n & 0x7f) as u8);
            n >>= 7;
        }
        tmp.reverse();
        body.extend(tmp);
    };
    if arcs.len() >= 2 {
        push(arcs[0] * 40 + arcs[1]);
        for a in &arcs[2..] {
            push(*a);
        }
    }
    tlv(0x06, &body)
}

pub fn is_dotted(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// An INTEGER from big-endian unsigned bytes.
pub fn uint(bytes: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = bytes.iter().copied().skip_while(|x| *x == 0).collect();
    if b.is_empty() || b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    tlv(0x02, &b)
}

/// PEM text, 64 columns, as `cryptography` writes it.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// The DER inside the first PEM block with `label`.
pub fn pem_der(text: &str, label: &str) -> Option<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(text.as_bytes()).ok()?;
    (p.label == label).then_some(p.contents)
}

// ----------------------------------------------------------------- DER in

/// One DER element: its tag, its content, and the whole element.
pub type Element<'a> = (u8, &'a [u8], &'a [u8]);

/// Splits `data` into its elements.
pub fn elements(mut data: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let tag = data[0];
        let first = *data.get(1)?;
        let (len, hdr) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let k = (first & 0x7f) as usize;
            let mut n = 0usize;
            for b in data.get(2..2 + k)? {
                n = (n << 8) | *b as usize;
            }
            (n, 2 + k)
        };
        let whole = data.get(..hdr + len)?;
        out.push((tag, &whole[hdr..], whole));
        data = &data[hdr + len..];
    }
    Some(out)
}

/// The content of a single element `data` is, when its tag is `tag`.
fn inner(data: &[u8], tag: u8) -> Option<&[u8]> {
    match elements(data)?.as_slice() {
        [(t, c, _)] if *t == tag => Some(c),
        _ => None,
    }
}

fn dotted_of(content: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut n: u64 = 0;
    for b in content {
        n = (n << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (n / 40).min(2);
                arcs.push(first);
                arcs.push(n - first * 40);
            } else {
                arcs.push(n);
            }
            n = 0;
        }
    }
    arcs.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

fn colon_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ------------------------------------------------------------------ names

/// community.crypto's names for the OIDs modules meet (its `OID_MAP`): the
/// first name is the one it reports, the last the short one; every name
/// is accepted as input.
const OIDS: &[(&str, &[&str])] = &[
    ("2.5.4.3", &["commonName", "CN"]),
    ("2.5.4.4", &["surname", "SN"]),
    ("2.5.4.5", &["serialNumber"]),
    ("2.5.4.6", &["countryName", "C"]),
    ("2.5.4.7", &["localityName", "L"]),
    ("2.5.4.8", &["stateOrProvinceName", "ST"]),
    ("2.5.4.9", &["streetAddress", "street"]),
    ("2.5.4.10", &["organizationName", "O"]),
    ("2.5.4.11", &["organizationalUnitName", "OU"]),
    ("2.5.4.12", &["title"]),
    ("2.5.4.15", &["businessCategory"]),
    ("2.5.4.17", &["postalCode"]),
    ("2.5.4.42", &["givenName", "GN"]),
    ("2.5.4.43", &["initials"]),
    ("2.5.4.46", &["dnQualifier"]),
    ("2.5.4.65", &["pseudonym"]),
    ("0.9.2342.19200300.100.1.1", &["userId", "UID"]),
    ("0.9.2342.19200300.100.1.25", &["domainComponent", "DC"]),
    ("1.2.840.113549.1.9.1", &["emailAddress"]),
    (
        "1.3.6.1.5.5.7.3.1",
        &["TLS Web Server Authentication", "serverAuth"],
    ),
    (
        "1.3.6.1.5.5.7.3.2",
        &["TLS Web Client Authentication", "clientAuth"],
    ),
    ("1.3.6.1.5.5.7.3.3", &["Code Signing", "codeSigning"]),
    (
        "1.3.6.1.5.5.7.3.4",
        &["E-mail Protection", "emailProtection"],
    ),
    ("1.3.6.1.5.5.7.3.5", &["IPSec End System", "ipsecEndSystem"]),
    ("1.3.6.1.5.5.7.3.6", &["IPSec Tunnel", "ipsecTunnel"]),
    ("1.3.6.1.5.5.7.3.7", &["IPSec User", "ipsecUser"]),
    ("1.3.6.1.5.5.7.3.8", &["Time Stamping", "timeStamping"]),
    ("1.3.6.1.5.5.7.3.9", &["OCSP Signing", "OCSPSigning"]),
    (
        "1.3.6.1.5.5.7.3.17",
        &["ipsec Internet Key Exchange", "ipsecIKE"],
    ),
    (
        "2.5.29.37.0",
        &["Any Extended Key Usage", "anyExtendedKeyUsage"],
    ),
];

/// The OID for a name community.crypto knows, or a dotted OID as given.
pub fn name_to_oid(name: &str) -> Result<String, X509Error> {
    if name == "userID" {
        return Ok("0.9.2342.19200300.100.1.1".into());
    }
    if let Some((o, _)) = OIDS.iter().find(|(_, names)| names.contains(&name)) {
        return Ok(o.to_string());
    }
    if is_dotted(name) {
        return Ok(name.to_string());
    }
    Err(err(format!("Cannot find OID for \"{name}\"")))
}

/// The name community.crypto reports for an OID (the dotted form when it
/// has none); `short` gives the abbreviation.
pub fn oid_to_name(dotted: &str, short: bool) -> String {
    OIDS.iter()
        .find(|(o, _)| *o == dotted)
        .map(|(_, n)| if short { n[n.len() - 1] } else { n[0] }.to_string())
        .unwrap_or_else(|| dotted.to_string())
}

/// One attribute of a subject, as `cryptography` encodes it: printable
/// strings for the country and serial number, IA5 for e-mail and domain
/// components, UTF-8 for the rest.
fn name_attribute(oid_s: &str, value: &str) -> Vec<u8> {
    let tag = match oid_s {
        "2.5.4.6" | "2.5.4.5" | "2.5.4.46" | "1.3.6.1.4.1.311.60.2.1.3" => 0x13,
        "1.2.840.113549.1.9.1" | "0.9.2342.19200300.100.1.25" => 0x16,
        _ => 0x0c,
    };
    tlv(0x31, &seq(&[&oid(oid_s), &tlv(tag, value.as_bytes())]))
}

/// A `Name` with one attribute per RDN, in the given order.
pub fn name_der(subject: &[(String, String)]) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = subject.iter().map(|(o, v)| name_attribute(o, v)).collect();
    tlv(0x30, &parts.concat())
}

/// The (OID, value) pairs of a parsed name, in order.
pub fn name_pairs(n: &X509Name<'_>) -> Vec<(String, String)> {
    n.iter_attributes()
        .map(|a| {
            (
                a.attr_type().to_id_string(),
                a.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|_| String::from_utf8_lossy(a.attr_value().data).into_owned()),
            )
        })
        .collect()
}

// ---------------------------------------------------------- general names

/// A `GeneralName` from community.crypto's `TYPE:value` text.
pub fn general_name(text: &str, what: &str) -> Result<Vec<u8>, X509Error> {
    let cannot = |why: &str| err(format!("Cannot parse {what} \"{text}\"{why}"));
    if let Some(v) = text.strip_prefix("DNS:") {
        return Ok(tlv(0x82, v.as_bytes()));
    }
    if let Some(v) = text.strip_prefix("email:") {
        return Ok(tlv(0x81, v.as_bytes()));
    }
    if let Some(v) = text.strip_prefix("URI:") {
        return Ok(tlv(0x86, v.as_bytes()));
    }
    if let Some(v) = text.strip_prefix("RID:") {
        if !is_dotted(v) {
            return Err(cannot(""));
        }
        let o = oid(v);
        return Ok(tlv(0x88, &o[2..]));
    }
    if let Some(v) = text.strip_prefix("IP:") {
        let bad = |e: String| err(format!("Cannot parse {what} \"{text}\": {e}"));
        if let Some((addr, prefix)) = v.split_once('/') {
            let ip: std::net::IpAddr = addr.parse().map_err(|_| {
                bad(format!(
                    "'{v}' does not appear to be an IPv4 or IPv6 network"
                ))
            })?;
            let mut b = ip_bytes(ip);
            let width = b.len() * 8;
            let prefix: usize = prefix.parse().ok().filter(|p| *p <= width).ok_or_else(|| {
                bad(format!(
                    "'{v}' does not appear to be an IPv4 or IPv6 network"
                ))
            })?;
            let mask: Vec<u8> = (0..b.len())
                .map(|i| {
                    let on = prefix.saturating_sub(i * 8).min(8);
                    (0xff00u16 >> on) as u8
                })
                .collect();
            if b.iter().zip(&mask).any(|(a, m)| a & !m != 0) {
                return Err(bad(format!("{v} has host bits set")));
            }
            b.extend(mask);
            return Ok(tlv(0x87, &b));
        }
        let ip: std::net::IpAddr = v.parse().map_err(|_| {
            bad(format!(
                "'{v}' does not appear to be an IPv4 or IPv6 address"
            ))
        })?;
        return Ok(tlv(0x87, &ip_bytes(ip)));
    }
    if !text.contains(':') {
        return Err(cannot(" (forgot \"DNS:\" prefix?)"));
    }
    Err(cannot(" (Keel supports DNS, IP, email, URI and RID names)"))
}

fn ip_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// community.crypto's text for one encoded `GeneralName`.
pub fn decode_general_name(tag: u8, c: &[u8]) -> String {
    let text = |p: &str| format!("{p}{}", String::from_utf8_lossy(c));
    match tag {
        0x82 => text("DNS:"),
        0x81 => text("email:"),
        0x86 => text("URI:"),
        0x88 => format!("RID:{}", dotted_of(c)),
        0x87 => {
            let ip = |b: &[u8]| -> Option<std::net::IpAddr> {
                match b.len() {
                    4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
                    16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
                    _ => None,
                }
            };
            match c.len() {
                4 | 16 => ip(c).map(|a| format!("IP:{a}")).unwrap_or_default(),
                8 | 32 => {
                    let (a, m) = c.split_at(c.len() / 2);
                    let prefix: u32 = m.iter().map(|b| b.count_ones()).sum();
                    ip(a)
                        .map(|a| format!("IP:{a}/{prefix}"))
                        .unwrap_or_default()
                }
                _ => format!("IP:{}", colon_hex(c)),
            }
        }
        0xa4 => {
            let pairs = X509Name::from_der(c)
                .map(|(_, n)| name_pairs(&n))
                .unwrap_or_default();
            let parts: Vec<String> = pairs
                .iter()
                .rev()
                .map(|(o, v)| format!("{}={v}", oid_to_name(o, true)))
                .collect();
            format!("dirName:{}", parts.join(","))
        }
        0xa0 => {
            let els = elements(c).unwrap_or_default();
            match els.as_slice() {
                [(0x06, o, _), (0xa0, v, _)] => {
                    format!("otherName:{};{}", dotted_of(o), colon_hex(v))
                }
                _ => format!("otherName:{}", colon_hex(c)),
            }
        }
        _ => colon_hex(c),
    }
}

/// The names in an encoded `GeneralNames` (a SEQUENCE of them).
pub fn general_names(value: &[u8]) -> Vec<String> {
    inner(value, 0x30)
        .and_then(elements)
        .unwrap_or_default()
        .into_iter()
        .map(|(t, c, _)| decode_general_name(t, c))
        .collect()
}

// ------------------------------------------------------------- extensions

pub const OID_SAN: &str = "2.5.29.17";
pub const OID_KU: &str = "2.5.29.15";
pub const OID_EKU: &str = "2.5.29.37";
pub const OID_BC: &str = "2.5.29.19";
pub const OID_NC: &str = "2.5.29.30";
pub const OID_SKI: &str = "2.5.29.14";
pub const OID_AKI: &str = "2.5.29.35";
pub const OID_TLSF: &str = "1.3.6.1.5.5.7.1.24";
pub const OID_CRLDP: &str = "2.5.29.31";

/// One extension: its OID, criticality and DER value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext {
    pub oid: String,
    pub critical: bool,
    pub value: Vec<u8>,
}

impl Ext {
    pub fn der(&self) -> Vec<u8> {
        let mut parts = oid(&self.oid);
        if self.critical {
            parts.extend([0x01, 0x01, 0xff]);
        }
        parts.extend(tlv(0x04, &self.value));
        tlv(0x30, &parts)
    }
}

/// The key usage bits, in bit order, with every name community.crypto
/// takes for each and the one it reports.
const KEY_USAGES: &[(&[&str], &str)] = &[
    (
        &["Digital Signature", "digitalSignature"],
        "Digital Signature",
    ),
    (&["Non Repudiation", "nonRepudiation"], "Non Repudiation"),
    (&["Key Encipherment", "keyEncipherment"], "Key Encipherment"),
    (
        &["Data Encipherment", "dataEncipherment"],
        "Data Encipherment",
    ),
    (&["Key Agreement", "keyAgreement"], "Key Agreement"),
    (&["Certificate Sign", "keyCertSign"], "Certificate Sign"),
    (&["CRL Sign", "cRLSign"], "CRL Sign"),
    (&["Encipher Only", "encipherOnly"], "Encipher Only"),
    (&["Decipher Only", "decipherOnly"], "Decipher Only"),
];

/// The key usage bit set for the names given.
pub fn key_usage_bits(names: &[String]) -> Result<u16, X509Error> {
    let mut bits = 0u16;
    for n in names {
        let i = KEY_USAGES
            .iter()
            .position(|(names, _)| names.contains(&n.as_str()))
            .ok_or_else(|| err(format!("Unknown key usage \"{n}\"")))?;
        bits |= 1 << i;
    }
    Ok(bits)
}

/// A `KeyUsage` value: a BIT STRING without trailing zero bits.
pub fn key_usage_value(bits: u16) -> Vec<u8> {
    let used = 16 - bits.leading_zeros() as usize; // bits 0..used
    let mut bytes = vec![0u8; used.div_ceil(8)];
    for i in 0..used {
        if bits & (1 << i) != 0 {
            bytes[i / 8] |= 0x80 >> (i % 8);
        }
    }
    let unused = (bytes.len() * 8 - used) as u8;
    let mut c = vec![unused];
    c.extend(bytes);
    tlv(0x03, &c)
}

/// The bit set a `KeyUsage` value holds; encipher/decipher only count with
/// key agreement, as `cryptography` reads them.
pub fn key_usage_of(value: &[u8]) -> Option<u16> {
    let c = inner(value, 0x03)?;
    let mut bits = 0u16;
    for (i, b) in c.get(1..)?.iter().enumerate().take(2) {
        for k in 0..8 {
            if b & (0x80 >> k) != 0 && i * 8 + k < 9 {
                bits |= 1 << (i * 8 + k);
            }
        }
    }
    if bits & (1 << 4) == 0 {
        bits &= 0x7f;
    }
    Some(bits)
}

fn key_usage_names(bits: u16) -> Vec<String> {
    let mut v: Vec<String> = KEY_USAGES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, (_, n))| n.to_string())
        .collect();
    v.sort();
    v
}

/// `CA:TRUE`/`CA:FALSE` and `pathlen:N` as community.crypto parses them.
pub fn basic_constraints(list: &[String]) -> Result<(bool, Option<u64>), X509Error> {
    let mut ca = false;
    let mut path = None;
    for c in list {
        if let Some(v) = c.strip_prefix("CA:") {
            ca = match v {
                "TRUE" => true,
                "FALSE" => false,
                _ => {
                    return Err(err(format!(
                        "Unknown basic constraint value \"{v}\" for CA"
                    )))
                }
            };
        } else if let Some(v) = c.strip_prefix("pathlen:") {
            path =
                Some(v.parse::<u64>().map_err(|e| {
                    err(format!("Cannot parse path length constraint \"{v}\" ({e})"))
                })?);
        } else {
            return Err(err(format!("Unknown basic constraint \"{c}\"")));
        }
    }
    Ok((ca, path))
}

pub fn basic_constraints_value(ca: bool, path: Option<u64>) -> Vec<u8> {
    let mut c = Vec::new();
    if ca {
        c.extend([0x01, 0x01, 0xff]);
    }
    if let Some(p) = path {
        c.extend(uint(&p.to_be_bytes()));
    }
    tlv(0x30, &c)
}

pub fn basic_constraints_of(value: &[u8]) -> Option<(bool, Option<u64>)> {
    let els = elements(inner(value, 0x30)?)?;
    let mut ca = false;
    let mut path = None;
    for (t, c, _) in els {
        match t {
            0x01 => ca = c.first().is_some_and(|b| *b != 0),
            0x02 => path = Some(c.iter().fold(0u64, |n, b| (n << 8) | *b as u64)),
            _ => {}
        }
    }
    Some((ca, path))
}

/// The OIDs in an `ExtendedKeyUsage` value.
pub fn eku_oids(value: &[u8]) -> Vec<String> {
    inner(value, 0x30)
        .and_then(elements)
        .unwrap_or_default()
        .into_iter()
        .filter(|(t, _, _)| *t == 0x06)
        .map(|(_, c, _)| dotted_of(c))
        .collect()
}

/// Name constraints: the permitted and excluded subtrees as texts.
pub fn name_constraints_of(value: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut perm = Vec::new();
    let mut excl = Vec::new();
    for (t, c, _) in inner(value, 0x30).and_then(elements).unwrap_or_default() {
        let names: Vec<String> = elements(c)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, st, _)| {
                elements(st).and_then(|e| e.first().map(|(t, c, _)| decode_general_name(*t, c)))
            })
            .collect();
        match t {
            0xa0 => perm = names,
            0xa1 => excl = names,
            _ => {}
        }
    }
    (perm, excl)
}

pub fn name_constraints_value(perm: &[Vec<u8>], excl: &[Vec<u8>]) -> Vec<u8> {
    let subtrees = |tag: u8, names: &[Vec<u8>]| -> Vec<u8> {
        if names.is_empty() {
            return vec![];
        }
        let items: Vec<Vec<u8>> = names.iter().map(|n| seq(&[n])).collect();
        tlv(tag, &items.concat())
    };
    tlv(0x30, &[subtrees(0xa0, perm), subtrees(0xa1, excl)].concat())
}

/// `SubjectKeyIdentifier.from_public_key`: SHA-1 of the key's bits.
pub fn key_identifier(spki_der: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    let bits = SubjectPublicKeyInfo::from_der(spki_der)
        .map(|(_, s)| s.subject_public_key.data.to_vec())
        .unwrap_or_default();
    sha1::Sha1::digest(&bits).to_vec()
}

/// What the extensions of a request or certificate say, in
/// community.crypto's info keys (`*_info` modules, and the diffs).
pub fn extension_info(exts: &[Ext], out: &mut Vec<(&'static str, Value)>) {
    let find = |o: &str| exts.iter().find(|e| e.oid == o);
    let none = || Value::from(());
    let list = |v: Vec<String>| Value::from(v);
    let (ku, kuc) = match find(OID_KU) {
        Some(e) => (
            list(key_usage_names(key_usage_of(&e.value).unwrap_or(0))),
            e.critical,
        ),
        None => (none(), false),
    };
    out.push(("key_usage", ku));
    out.push(("key_usage_critical", Value::from(kuc)));
    let (eku, ekuc) = match find(OID_EKU) {
        Some(e) => {
            let mut v: Vec<String> = eku_oids(&e.value)
                .iter()
                .map(|o| oid_to_name(o, false))
                .collect();
            v.sort();
            (list(v), e.critical)
        }
        None => (none(), false),
    };
    out.push(("extended_key_usage", eku));
    out.push(("extended_key_usage_critical", Value::from(ekuc)));
    let (bc, bcc) = match find(OID_BC).and_then(|e| Some((basic_constraints_of(&e.value)?, e))) {
        Some(((ca, path), e)) => {
            let mut v = vec![format!("CA:{}", if ca { "TRUE" } else { "FALSE" })];
            if let Some(p) = path {
                v.push(format!("pathlen:{p}"));
            }
            v.sort();
            (list(v), e.critical)
        }
        None => (none(), false),
    };
    out.push(("basic_constraints", bc));
    out.push(("basic_constraints_critical", Value::from(bcc)));
    let (ocsp, ocspc) = match find(OID_TLSF) {
        Some(e) => {
            let has = inner(&e.value, 0x30)
                .and_then(elements)
                .unwrap_or_default()
                .iter()
                .any(|(t, c, _)| *t == 0x02 && *c == [5]);
            (Value::from(has), e.critical)
        }
        None => (none(), false),
    };
    out.push(("ocsp_must_staple", ocsp));
    out.push(("ocsp_must_staple_critical", Value::from(ocspc)));
    let (san, sanc) = match find(OID_SAN) {
        Some(e) => (list(general_names(&e.value)), e.critical),
        None => (none(), false),
    };
    out.push(("subject_alt_name", san));
    out.push(("subject_alt_name_critical", Value::from(sanc)));
    let (ncp, nce, ncc) = match find(OID_NC) {
        Some(e) => {
            let (p, x) = name_constraints_of(&e.value);
            (list(p), list(x), e.critical)
        }
        None => (none(), none(), false),
    };
    out.push(("name_constraints_permitted", ncp));
    out.push(("name_constraints_excluded", nce));
    out.push(("name_constraints_critical", Value::from(ncc)));
    out.push((
        "subject_key_identifier",
        find(OID_SKI)
            .and_then(|e| inner(&e.value, 0x04))
            .map(|k| Value::from(colon_hex(k)))
            .unwrap_or(none()),
    ));
    let (aki, aci, acsn) = match find(OID_AKI).and_then(|e| inner(&e.value, 0x30)) {
        Some(c) => {
            let els = elements(c).unwrap_or_default();
            let mut aki = none();
            let mut aci = none();
            let mut acsn = none();
            for (t, c, _) in els {
                match t {
                    0x80 => aki = Value::from(colon_hex(c)),
                    0xa1 => {
                        aci = list(
                            elements(c)
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(t, c, _)| decode_general_name(t, c))
                                .collect(),
                        )
                    }
                    0x82 => {
                        acsn = Value::from(num_bigint::BigUint::from_bytes_be(c).to_str_radix(10))
                    }
                    _ => {}
                }
            }
            (aki, aci, acsn)
        }
        None => (none(), none(), none()),
    };
    out.push(("authority_key_identifier", aki));
    out.push(("authority_cert_issuer", aci));
    out.push(("authority_cert_serial_number", acsn));
    out.push((
        "extensions_by_oid",
        dict(exts.iter().map(|e| {
            (
                e.oid.clone(),
                dict([
                    ("critical", Value::from(e.critical)),
                    (
                        "value",
                        Value::from(base64::engine::general_purpose::STANDARD.encode(&e.value)),
                    ),
                ]),
            )
        })),
    ));
}

/// The subject keys of the info dicts: `subject` (a dict, the last value
/// of a name winning) and `subject_ordered`.
pub fn subject_info(
    key: &'static str,
    pairs: &[(String, String)],
    out: &mut Vec<(&'static str, Value)>,
) {
    let named: Vec<(String, String)> = pairs
        .iter()
        .map(|(o, v)| (oid_to_name(o, false), v.clone()))
        .collect();
    out.push((
        key,
        dict(
            named
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str()))),
        ),
    ));
    let ordered: Vec<Value> = named
        .iter()
        .map(|(k, v)| Value::from(vec![Value::from(k.as_str()), Value::from(v.as_str())]))
        .collect();
    let okey = if key == "subject" {
        "subject_ordered"
    } else {
        "issuer_ordered"
    };
    out.push((okey, Value::from(ordered)));
}

/// The public key keys of the info dicts.
pub fn public_key_info(spki_der: &[u8], out: &mut Vec<(&'static str, Value)>) {
    match PublicKeyInfo::parse_der(spki_der) {
        Ok(k) => {
            out.push(("public_key", Value::from(k.pem())));
            out.push(("public_key_type", Value::from(k.key_type.name())));
            out.push(("public_key_data", dict(k.public_data.clone())));
            out.push(("public_key_fingerprints", fingerprints(&k.der, true)));
        }
        Err(_) => {
            out.push((
                "public_key",
                Value::from(super::x509::pem("PUBLIC KEY", spki_der)),
            ));
            out.push(("public_key_type", Value::from("unknown")));
            out.push(("public_key_data", dict(Vec::<(String, Value)>::new())));
            out.push(("public_key_fingerprints", fingerprints(spki_der, true)));
        }
    }
}

// --------------------------------------------------------------- requests

/// A parsed certificate signing request, owning its pieces.
#[derive(Debug, Clone)]
pub struct Csr {
    pub der: Vec<u8>,
    pub subject: Vec<(String, String)>,
    pub subject_der: Vec<u8>,
    pub spki_der: Vec<u8>,
    pub extensions: Vec<Ext>,
    pub signature_valid: bool,
}

impl Csr {
    pub fn parse_der(der: &[u8]) -> Option<Csr> {
        let (_, req) = X509CertificationRequest::from_der(der).ok()?;
        let info = &req.certification_request_info;
        let mut extensions = Vec::new();
        for attr in info.iter_attributes() {
            if let ParsedCriAttribute::ExtensionRequest(r) = attr.parsed_attribute() {
                for e in &r.extensions {
                    extensions.push(Ext {
                        oid: e.oid.to_id_string(),
                        critical: e.critical,
                        value: e.value.to_vec(),
                    });
                }
            }
        }
        Some(Csr {
            der: der.to_vec(),
            subject: name_pairs(&info.subject),
            subject_der: info.subject.as_raw().to_vec(),
            spki_der: info.subject_pki.raw.to_vec(),
            extensions,
            signature_valid: req.verify_signature().is_ok(),
        })
    }

    pub fn parse_pem(text: &str) -> Option<Csr> {
        Csr::parse_der(&pem_der(text, "CERTIFICATE REQUEST")?)
    }

    pub fn pem(&self) -> String {
        pem("CERTIFICATE REQUEST", &self.der)
    }

    pub fn ext(&self, o: &str) -> Option<&Ext> {
        self.extensions.iter().find(|e| e.oid == o)
    }

    /// community.crypto's `get_csr_info` (with one fingerprint), plus
    /// `can_parse_csr`.
    pub fn info(&self) -> Value {
        let mut out: Vec<(&'static str, Value)> = vec![("can_parse_csr", Value::from(true))];
        subject_info("subject", &self.subject, &mut out);
        extension_info(&self.extensions, &mut out);
        public_key_info(&self.spki_der, &mut out);
        out.push(("signature_valid", Value::from(self.signature_valid)));
        dict(out)
    }
}

/// The `CertificationRequestInfo` to be signed.
pub fn csr_tbs(subject: &[u8], spki: &[u8], exts: &[Ext]) -> Vec<u8> {
    let ext_ders: Vec<Vec<u8>> = exts.iter().map(Ext::der).collect();
    let attrs = if exts.is_empty() {
        tlv(0xa0, &[])
    } else {
        let req = seq(&[
            &oid("1.2.840.113549.1.9.14"),
            &tlv(0x31, &tlv(0x30, &ext_ders.concat())),
        ]);
        tlv(0xa0, &req)
    };
    seq(&[&uint(&[0]), subject, spki, &attrs])
}

/// A signed object (request or certificate): the signed part, the
/// algorithm and the signature.
pub fn signed(tbs: &[u8], alg: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(signature);
    seq(&[tbs, alg, &tlv(0x03, &bits)])
}

// ----------------------------------------------------------- certificates

/// A parsed certificate, owning its pieces.
#[derive(Debug, Clone)]
pub struct Cert {
    pub der: Vec<u8>,
    pub subject: Vec<(String, String)>,
    pub subject_der: Vec<u8>,
    pub issuer: Vec<(String, String)>,
    pub issuer_der: Vec<u8>,
    pub spki_der: Vec<u8>,
    pub extensions: Vec<Ext>,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub serial: Vec<u8>,
    pub version: u32,
    pub signature_oid: String,
}

impl Cert {
    pub fn parse_der(der: &[u8]) -> Option<Cert> {
        let (_, c) = X509Certificate::from_der(der).ok()?;
        let t = &c.tbs_certificate;
        Some(Cert {
            der: der.to_vec(),
            subject: name_pairs(&t.subject),
            subject_der: t.subject.as_raw().to_vec(),
            issuer: name_pairs(&t.issuer),
            issuer_der: t.issuer.as_raw().to_vec(),
            spki_der: t.subject_pki.raw.to_vec(),
            extensions: t
                .extensions()
                .iter()
                .map(|e| Ext {
                    oid: e.oid.to_id_string(),
                    critical: e.critical,
                    value: e.value.to_vec(),
                })
                .collect(),
            not_before: t.validity.not_before.timestamp(),
            not_after: t.validity.not_after.timestamp(),
            serial: t.raw_serial().to_vec(),
            version: t.version.0 + 1,
            signature_oid: c.signature_algorithm.algorithm.to_id_string(),
        })
    }

    pub fn parse_pem(text: &str) -> Option<Cert> {
        Cert::parse_der(&pem_der(text, "CERTIFICATE")?)
    }

    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }

    pub fn ext(&self, o: &str) -> Option<&Ext> {
        self.extensions.iter().find(|e| e.oid == o)
    }

    /// Whether the signature verifies with the public key `spki_der`.
    pub fn signed_by(&self, spki_der: &[u8]) -> bool {
        let Ok((_, c)) = X509Certificate::from_der(&self.der) else {
            return false;
        };
        let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(spki_der) else {
            return false;
        };
        c.verify_signature(Some(&spki)).is_ok()
    }

    pub fn serial_value(&self) -> Value {
        serial_value(&self.serial)
    }

    /// community.crypto's `get_certificate_info` (one fingerprint), plus
    /// `can_parse_certificate`.
    pub fn info(&self) -> Value {
        let mut out: Vec<(&'static str, Value)> =
            vec![("can_parse_certificate", Value::from(true))];
        out.push((
            "signature_algorithm",
            Value::from(signature_name(&self.signature_oid)),
        ));
        subject_info("subject", &self.subject, &mut out);
        subject_info("issuer", &self.issuer, &mut out);
        out.push(("version", Value::from(self.version)));
        extension_info(&self.extensions, &mut out);
        out.retain(|(k, _)| !k.starts_with("name_constraints"));
        out.push(("not_before", Value::from(asn1_text(self.not_before))));
        out.push(("not_after", Value::from(asn1_text(self.not_after))));
        out.push((
            "expired",
            Value::from(self.not_after < chrono::Utc::now().timestamp()),
        ));
        public_key_info(&self.spki_der, &mut out);
        out.push(("fingerprints", fingerprints(&self.der, true)));
        out.push(("serial_number", self.serial_value()));
        let (ocsp, issuer) = self
            .ext("1.3.6.1.5.5.7.1.1")
            .map(|e| access_uris(&e.value))
            .unwrap_or_default();
        let opt = |s: Option<String>| s.map(Value::from).unwrap_or(Value::from(()));
        out.push(("ocsp_uri", opt(ocsp)));
        out.push(("issuer_uri", opt(issuer)));
        dict(out)
    }
}

/// A serial number as a number when it fits, else its decimal text.
pub fn serial_value(bytes: &[u8]) -> Value {
    let n = num_bigint::BigUint::from_bytes_be(bytes);
    match u64::try_from(&n) {
        Ok(v) if v <= i64::MAX as u64 => Value::from(v),
        _ => Value::from(n.to_str_radix(10)),
    }
}

/// The OCSP and CA issuers URIs of an `AuthorityInformationAccess` value.
fn access_uris(value: &[u8]) -> (Option<String>, Option<String>) {
    let mut ocsp = None;
    let mut issuer = None;
    for (_, ad, _) in inner(value, 0x30).and_then(elements).unwrap_or_default() {
        if let Some([(0x06, o, _), (0x86, uri, _)]) = elements(ad).as_deref() {
            let uri = String::from_utf8_lossy(uri).into_owned();
            match dotted_of(o).as_str() {
                "1.3.6.1.5.5.7.48.1" if ocsp.is_none() => ocsp = Some(uri),
                "1.3.6.1.5.5.7.48.2" if issuer.is_none() => issuer = Some(uri),
                _ => {}
            }
        }
    }
    (ocsp, issuer)
}

fn signature_name(o: &str) -> String {
    match o {
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "2.16.840.1.101.3.4.3.2" => "dsa_with_SHA256",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        other => other,
    }
    .to_string()
}

/// community.crypto's timestamp text, `%Y%m%d%H%M%SZ`.
pub fn asn1_text(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.format("%Y%m%d%H%M%SZ").to_string())
        .unwrap_or_default()
}

/// An X.509 `Time`: UTCTime through 2049, GeneralizedTime after.
fn time_der(ts: i64) -> Vec<u8> {
    let Some(d) = chrono::DateTime::from_timestamp(ts, 0) else {
        return tlv(0x18, b"99991231235959Z");
    };
    use chrono::Datelike as _;
    if (1950..2050).contains(&d.year()) {
        tlv(0x17, d.format("%y%m%d%H%M%SZ").to_string().as_bytes())
    } else {
        tlv(0x18, d.format("%Y%m%d%H%M%SZ").to_string().as_bytes())
    }
}

/// A time option: `+`/`-` and weeks/days/hours/minutes/seconds relative to
/// `now`, or an absolute `YYYYMMDDHHMMSSZ`/`YYYYMMDDHHMMZ` (with `+hhmm`
/// offsets too), as community.crypto's `get_relative_time_option` reads it.
pub fn time_option(text: &str, name: &str, now: i64) -> Result<i64, X509Error> {
    if let Some(sign) = text.chars().next().filter(|c| *c == '+' || *c == '-') {
        let invalid = || err(format!("The timespec \"{text}\" for {name} is invalid"));
        let rest = &text[1..];
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total: i64 = 0;
        let mut num = String::new();
        let mut last_rank = 0;
        for c in rest.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let (rank, secs) = match c.to_ascii_lowercase() {
                'w' => (1, 604_800),
                'd' => (2, 86_400),
                'h' => (3, 3_600),
                'm' => (4, 60),
                's' => (5, 1),
                _ => return Err(invalid()),
            };
            if num.is_empty() || rank <= last_rank {
                return Err(invalid());
            }
            last_rank = rank;
            total += num.parse::<i64>().map_err(|_| invalid())? * secs;
            num.clear();
        }
        if !num.is_empty() {
            total += num.parse::<i64>().map_err(|_| invalid())?;
        }
        return Ok(if sign == '+' {
            now + total
        } else {
            now - total
        });
    }
    let formats: [(&str, usize); 4] = [
        ("%Y%m%d%H%M%SZ", 15),
        ("%Y%m%d%H%MZ", 13),
        ("%Y%m%d%H%M%S%z", 19),
        ("%Y%m%d%H%M%z", 17),
    ];
    for (f, len) in formats {
        if text.len() != len {
            continue;
        }
        if f.ends_with('Z') {
            if let Ok(d) = chrono::NaiveDateTime::parse_from_str(text, f) {
                return Ok(d.and_utc().timestamp());
            }
        } else if let Ok(d) = chrono::DateTime::parse_from_str(text, f) {
            return Ok(d.timestamp());
        }
    }
    Err(err(format!(
        "The time spec \"{text}\" for {name} is invalid"
    )))
}

/// A fresh serial number as `cryptography`'s `random_serial_number` makes
/// one: 159 random bits.
pub fn random_serial() -> Vec<u8> {
    use rand::RngCore as _;
    let mut b = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut b);
    b[0] &= 0x7f;
    b.to_vec()
}

/// The fields of a certificate to be signed.
pub struct CertFields<'a> {
    pub serial: &'a [u8],
    pub alg: &'a [u8],
    pub issuer_der: &'a [u8],
    pub not_before: i64,
    pub not_after: i64,
    pub subject_der: &'a [u8],
    pub spki_der: &'a [u8],
    pub extensions: &'a [Ext],
}

/// The `TBSCertificate` (version 3).
pub fn cert_tbs(f: &CertFields<'_>) -> Vec<u8> {
    let version = tlv(0xa0, &uint(&[2]));
    let validity = seq(&[&time_der(f.not_before), &time_der(f.not_after)]);
    let mut parts: Vec<Vec<u8>> = vec![
        version,
        uint(f.serial),
        f.alg.to_vec(),
        f.issuer_der.to_vec(),
        validity,
        f.subject_der.to_vec(),
        f.spki_der.to_vec(),
    ];
    if !f.extensions.is_empty() {
        let exts: Vec<Vec<u8>> = f.extensions.iter().map(Ext::der).collect();
        parts.push(tlv(0xa3, &tlv(0x30, &exts.concat())));
    }
    tlv(0x30, &parts.concat())
}

/// An `AuthorityKeyIdentifier` value holding only the key identifier.
pub fn authority_key_id_value(key_id: &[u8]) -> Vec<u8> {
    tlv(0x30, &tlv(0x80, key_id))
}

/// The key identifier a `SubjectKeyIdentifier` value holds.
pub fn subject_key_id_of(value: &[u8]) -> Option<Vec<u8>> {
    inner(value, 0x04).map(<[u8]>::to_vec)
}

// ---------------------------------------------------------------- signing

/// How the host signs for a key: the `AlgorithmIdentifier` and the
/// `openssl` command (reading `"$t"`, writing `"$t.s"`, key in `"$k"`).
pub struct Signer {
    pub alg: Vec<u8>,
    pub command: String,
}

/// The signer for a key of `key`'s type with `digest`.
pub fn signer(key: &PublicKeyInfo, digest: &str) -> Result<Signer, X509Error> {
    let bits = match digest {
        "sha256" => 256,
        "sha384" => 384,
        "sha512" => 512,
        _ => return Err(err(format!("Unsupported digest \"{digest}\""))),
    };
    let dgst =
        format!("openssl dgst -{digest} -sign \"$k\" -passin env:KEEL_PASS -out \"$t.s\" \"$t\"");
    let raw =
        "openssl pkeyutl -sign -rawin -inkey \"$k\" -passin env:KEEL_PASS -in \"$t\" -out \"$t.s\""
            .to_string();
    let null = [0x05u8, 0x00];
    Ok(match key.key_type {
        KeyType::Rsa => {
            let o = match bits {
                256 => "1.2.840.113549.1.1.11",
                384 => "1.2.840.113549.1.1.12",
                _ => "1.2.840.113549.1.1.13",
            };
            Signer {
                alg: seq(&[&oid(o), &null]),
                command: dgst,
            }
        }
        KeyType::Ecc => {
            let o = match bits {
                256 => "1.2.840.10045.4.3.2",
                384 => "1.2.840.10045.4.3.3",
                _ => "1.2.840.10045.4.3.4",
            };
            Signer {
                alg: seq(&[&oid(o)]),
                command: dgst,
            }
        }
        KeyType::Dsa => {
            let o = match bits {
                256 => "2.16.840.1.101.3.4.3.2",
                384 => "2.16.840.1.101.3.4.3.3",
                _ => "2.16.840.1.101.3.4.3.4",
            };
            Signer {
                alg: seq(&[&oid(o)]),
                command: dgst,
            }
        }
        KeyType::Ed25519 => Signer {
            alg: seq(&[&oid("1.3.101.112")]),
            command: raw,
        },
        KeyType::Ed448 => Signer {
            alg: seq(&[&oid("1.3.101.113")]),
            command: raw,
        },
        KeyType::X25519 | KeyType::X448 => {
            return Err(err(format!("a {} key cannot sign", key.key_type.name())))
        }
    })
}

/// The host script that signs the bytes after the passphrase line on
/// stdin (base64) with the key at `key_path`, printing the signature in
/// base64.
pub fn sign_script(key_path: &str, s: &Signer) -> String {
    format!(
        "{}k={}\numask 077\nt=$(mktemp)\ntrap 'rm -f -- \"$t\" \"$t.s\"' EXIT\n\
         base64 -d > \"$t\"\n{} </dev/null\nbase64 \"$t.s\" | tr -d '\\n'\n",
        super::pki::PASS_PRELUDE,
        crate::shell::quote(key_path),
        s.command
    )
}

/// The stdin [`sign_script`] reads.
pub fn sign_stdin(pass: Option<&str>, tbs: &[u8]) -> Vec<u8> {
    let mut v = super::pki::pass_stdin(pass);
    v.extend(
        base64::engine::general_purpose::STANDARD
            .encode(tbs)
            .into_bytes(),
    );
    v.push(b'\n');
    v
}

/// The signature [`sign_script`] printed.
pub fn signature_of(stdout: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(stdout.trim())
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_values_are_encoded_as_cryptography_does() {
        // The values community.crypto 3 wrote for these arguments.
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        let ku = key_usage_bits(&["digitalSignature".into(), "keyEncipherment".into()]).unwrap();
        assert_eq!(b64(&key_usage_value(ku)), "AwIFoA==");
        let ku = key_usage_bits(&["keyCertSign".into(), "cRLSign".into()]).unwrap();
        assert_eq!(b64(&key_usage_value(ku)), "AwIBBg==");
        assert_eq!(key_usage_of(&key_usage_value(ku)), Some(ku));
        assert_eq!(b64(&basic_constraints_value(true, Some(0))), "MAYBAf8CAQA=");
        let san: Vec<Vec<u8>> = ["DNS:www.example.test", "DNS:example.test", "IP:192.0.2.10"]
            .iter()
            .map(|n| general_name(n, "x").unwrap())
            .collect();
        let v = tlv(0x30, &san.concat());
        assert_eq!(
            b64(&v),
            "MCaCEHd3dy5leGFtcGxlLnRlc3SCDGV4YW1wbGUudGVzdIcEwAACCg=="
        );
        assert_eq!(
            general_names(&v),
            vec!["DNS:www.example.test", "DNS:example.test", "IP:192.0.2.10"]
        );
        let eku = tlv(
            0x30,
            &[
                oid(&name_to_oid("serverAuth").unwrap()),
                oid(&name_to_oid("clientAuth").unwrap()),
            ]
            .concat(),
        );
        assert_eq!(b64(&eku), "MBQGCCsGAQUFBwMBBggrBgEFBQcDAg==");
        assert_eq!(
            eku_oids(&eku),
            vec!["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]
        );
        assert_eq!(
            general_name("www.example.test", "Subject Alternative Name")
                .unwrap_err()
                .to_string(),
            "Cannot parse Subject Alternative Name \"www.example.test\" (forgot \"DNS:\" prefix?)"
        );
        let now = 1_700_000_000;
        assert_eq!(time_option("+365d", "n", now).unwrap(), now + 365 * 86_400);
        assert_eq!(time_option("-1h", "n", now).unwrap(), now - 3_600);
        assert_eq!(time_option("+1w2d3h4m5s", "n", now).unwrap(), now + 788_645);
        assert_eq!(time_option("+0s", "n", now).unwrap(), now);
        assert_eq!(
            time_option("20300101000000Z", "n", now).unwrap(),
            1_893_456_000
        );
        assert!(time_option("+5x", "n", now).is_err());
        assert!(time_option("+", "n", now).is_err());
        assert_eq!(
            asn1_text(1_893_456_000),
            "20300101000000Z",
            "the format community.crypto reports"
        );
        let net = general_name("IP:10.0.0.0/8", "x").unwrap();
        assert_eq!(decode_general_name(net[0], &net[2..]), "IP:10.0.0.0/8");
    }
}
