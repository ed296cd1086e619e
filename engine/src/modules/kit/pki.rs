//! What the community.crypto modules share: reading public keys on the
//! controller, and handing a passphrase to `openssl` on the host.
//!
//! Keys are made by `openssl` on the host, so private key material never
//! leaves it (community.crypto makes them there too, with the Python
//! `cryptography` library). What the modules decide from comes back as
//! public data only: a key's `SubjectPublicKeyInfo` (from `openssl pkey
//! -pubout`), which [`PublicKeyInfo::parse_pem`] reads with `x509-parser`,
//! so no module scrapes `openssl … -text` output.
//!
//! A passphrase travels on stdin, never on a command line: [`PASS_PRELUDE`]
//! reads the first line (base64) into `KEEL_PASS`, which `openssl` reads
//! with `-passin env:KEEL_PASS`; [`pass_stdin`] makes that line.

use base64::Engine as _;
use minijinja::Value;
use num_bigint::BigUint;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::modules::args::dict;

/// The script lines that read a passphrase line from stdin into
/// `KEEL_PASS` (set, possibly empty, when the line said so) and `havepass`.
pub const PASS_PRELUDE: &str = "IFS= read -r keelpw || true\n\
    case \"$keelpw\" in\n\
    P*) KEEL_PASS=$(printf '%s' \"${keelpw#P}\" | base64 -d); havepass=1;;\n\
    *) KEEL_PASS=; havepass=0;;\n\
    esac\n\
    export KEEL_PASS\n";

/// The stdin line [`PASS_PRELUDE`] reads.
pub fn pass_stdin(pass: Option<&str>) -> Vec<u8> {
    let mut v = match pass {
        Some(p) => format!(
            "P{}",
            base64::engine::general_purpose::STANDARD.encode(p.as_bytes())
        )
        .into_bytes(),
        None => b"-".to_vec(),
    };
    v.push(b'\n');
    v
}

/// The key types community.crypto names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Dsa,
    Ecc,
    Ed25519,
    Ed448,
    X25519,
    X448,
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::Dsa => "DSA",
            KeyType::Ecc => "ECC",
            KeyType::Ed25519 => "Ed25519",
            KeyType::Ed448 => "Ed448",
            KeyType::X25519 => "X25519",
            KeyType::X448 => "X448",
        }
    }

    pub fn from_name(s: &str) -> Option<KeyType> {
        [
            KeyType::Rsa,
            KeyType::Dsa,
            KeyType::Ecc,
            KeyType::Ed25519,
            KeyType::Ed448,
            KeyType::X25519,
            KeyType::X448,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

/// The curves community.crypto accepts: its name, the OID, OpenSSL's name
/// for `genpkey`, and the key size in bits.
pub const CURVES: &[(&str, &str, &str, u32)] = &[
    ("secp224r1", "1.3.132.0.33", "secp224r1", 224),
    ("secp256k1", "1.3.132.0.10", "secp256k1", 256),
    ("secp256r1", "1.2.840.10045.3.1.7", "prime256v1", 256),
    ("secp384r1", "1.3.132.0.34", "secp384r1", 384),
    ("secp521r1", "1.3.132.0.35", "secp521r1", 521),
    ("secp192r1", "1.2.840.10045.3.1.1", "prime192v1", 192),
    (
        "brainpoolP256r1",
        "1.3.36.3.3.2.8.1.1.7",
        "brainpoolP256r1",
        256,
    ),
    (
        "brainpoolP384r1",
        "1.3.36.3.3.2.8.1.1.11",
        "brainpoolP384r1",
        384,
    ),
    (
        "brainpoolP512r1",
        "1.3.36.3.3.2.8.1.1.13",
        "brainpoolP512r1",
        512,
    ),
    ("sect163k1", "1.3.132.0.1", "sect163k1", 163),
    ("sect163r2", "1.3.132.0.15", "sect163r2", 163),
    ("sect233k1", "1.3.132.0.26", "sect233k1", 233),
    ("sect233r1", "1.3.132.0.27", "sect233r1", 233),
    ("sect283k1", "1.3.132.0.16", "sect283k1", 283),
    ("sect283r1", "1.3.132.0.17", "sect283r1", 283),
    ("sect409k1", "1.3.132.0.36", "sect409k1", 409),
    ("sect409r1", "1.3.132.0.37", "sect409r1", 409),
    ("sect571k1", "1.3.132.0.38", "sect571k1", 571),
    ("sect571r1", "1.3.132.0.39", "sect571r1", 571),
];

/// What a public key is, read from its `SubjectPublicKeyInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    pub key_type: KeyType,
    /// RSA/DSA: the key size in bits.
    pub size: Option<u64>,
    /// ECC: community.crypto's curve name.
    pub curve: Option<&'static str>,
    /// The DER `SubjectPublicKeyInfo`, which fingerprints hash.
    pub der: Vec<u8>,
    /// `public_data` as community.crypto's info modules return it, with
    /// big integers as decimal strings.
    pub public_data: Vec<(&'static str, Value)>,
}

/// Why public key text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("not a PEM public key")]
    NotPem,
    #[error("cannot parse the public key: {0}")]
    Parse(String),
    #[error("unsupported public key algorithm {0}")]
    Algorithm(String),
}

fn decimal(bytes: &[u8]) -> String {
    BigUint::from_bytes_be(bytes).to_str_radix(10)
}

impl PublicKeyInfo {
    /// Reads a `-----BEGIN PUBLIC KEY-----` block.
    pub fn parse_pem(pem: &str) -> Result<PublicKeyInfo, PkiError> {
        let (_, p) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| PkiError::NotPem)?;
        if p.label != "PUBLIC KEY" {
            return Err(PkiError::NotPem);
        }
        PublicKeyInfo::parse_der(&p.contents)
    }

    /// Reads a DER `SubjectPublicKeyInfo`.
    pub fn parse_der(der: &[u8]) -> Result<PublicKeyInfo, PkiError> {
        let (_, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|e| PkiError::Parse(e.to_string()))?;
        PublicKeyInfo::from_spki(&spki)
    }

    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKeyInfo, PkiError> {
        let der = spki.raw.to_vec();
        let oid = spki.algorithm.algorithm.to_id_string();
        let simple = |key_type| PublicKeyInfo {
            key_type,
            size: None,
            curve: None,
            der: der.clone(),
            public_data: vec![],
        };
        match oid.as_str() {
            "1.3.101.110" => return Ok(simple(KeyType::X25519)),
            "1.3.101.111" => return Ok(simple(KeyType::X448)),
            "1.3.101.112" => return Ok(simple(KeyType::Ed25519)),
            "1.3.101.113" => return Ok(simple(KeyType::Ed448)),
            _ => {}
        }
        let parsed = spki.parsed().map_err(|e| PkiError::Parse(e.to_string()))?;
        match parsed {
            PublicKey::RSA(rsa) => {
                let n = BigUint::from_bytes_be(rsa.modulus);
                let size = n.bits();
                Ok(PublicKeyInfo {
                    key_type: KeyType::Rsa,
                    size: Some(size),
                    curve: None,
                    der,
                    public_data: vec![
                        ("exponent", {
                            let e = BigUint::from_bytes_be(rsa.exponent);
                            match u64::try_from(&e) {
                                Ok(small) => Value::from(small),
                                Err(_) => Value::from(e.to_str_radix(10)),
                            }
                        }),
                        ("modulus", Value::from(n.to_str_radix(10))),
                        ("size", Value::from(size)),
                    ],
                })
            }
            PublicKey::EC(point) => {
                let curve_oid = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|a| a.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                let (name, bits) = CURVES
                    .iter()
                    .find(|(_, o, _, _)| *o == curve_oid)
                    .map(|(n, _, _, b)| (*n, *b))
                    .ok_or_else(|| PkiError::Algorithm(format!("EC curve {curve_oid}")))?;
                let data = point.data();
                let mut pd = vec![
                    ("curve", Value::from(name)),
                    ("exponent_size", Value::from(bits)),
                ];
                // An uncompressed point: 04 || X || Y.
                if data.first() == Some(&4) && data.len() % 2 == 1 {
                    let half = (data.len() - 1) / 2;
                    pd.push(("x", Value::from(decimal(&data[1..1 + half]))));
                    pd.push(("y", Value::from(decimal(&data[1 + half..]))));
                }
                Ok(PublicKeyInfo {
                    key_type: KeyType::Ecc,
                    size: None,
                    curve: Some(name),
                    der,
                    public_data: pd,
                })
            }
            PublicKey::DSA(y) => {
                let size = dsa_p_bits(spki).unwrap_or((y.len() * 8) as u64);
                Ok(PublicKeyInfo {
                    key_type: KeyType::Dsa,
                    size: Some(size),
                    curve: None,
                    der,
                    public_data: vec![("size", Value::from(size)), ("y", Value::from(decimal(y)))],
                })
            }
            _ => Err(PkiError::Algorithm(oid)),
        }
    }

    /// The key as PEM text, as `cryptography` writes it (64 columns).
    pub fn pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.der);
        let mut s = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            s.push('\n');
        }
        s.push_str("-----END PUBLIC KEY-----\n");
        s
    }

    /// `get_privatekey_info`'s answer for a key that could be read (the
    /// `before`/`after` of community.crypto's key diffs).
    pub fn info(&self) -> Value {
        dict([
            ("can_parse_key", Value::from(true)),
            ("key_is_consistent", Value::from(())),
            ("public_data", dict(self.public_data.clone())),
            ("public_key", Value::from(self.pem())),
            ("public_key_fingerprints", fingerprints(&self.der, true)),
            ("type", Value::from(self.key_type.name())),
        ])
    }
}

/// A DSA key's size: the bit length of `p`, the first INTEGER of the
/// `Dss-Parms` SEQUENCE in the algorithm's parameters.
fn dsa_p_bits(spki: &SubjectPublicKeyInfo<'_>) -> Option<u64> {
    let d: &[u8] = spki.algorithm.parameters.as_ref()?.data;
    if d.first() != Some(&0x02) {
        return None;
    }
    let (len, at) = match *d.get(1)? {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let k = (n & 0x7f) as usize;
            let mut len = 0usize;
            for b in d.get(2..2 + k)? {
                len = (len << 8) | *b as usize;
            }
            (len, 2 + k)
        }
    };
    Some(BigUint::from_bytes_be(d.get(at..at + len)?).bits())
}

fn colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// community.crypto's `get_fingerprint_of_bytes`: one digest per
/// `hashlib.algorithms_guaranteed` algorithm (SHAKE digests 32 bytes long),
/// or only SHA-256 when `one`.
pub fn fingerprints(data: &[u8], one: bool) -> Value {
    use sha2::Digest as _;
    let sha256 = colons(&sha2::Sha256::digest(data));
    if one {
        return dict([("sha256", Value::from(sha256))]);
    }
    let shake = |xof: &mut dyn FnMut(&mut [u8])| {
        let mut out = [0u8; 32];
        xof(&mut out);
        colons(&out)
    };
    let blake2b = {
        use blake2::Digest as _;
        colons(&blake2::Blake2b512::digest(data))
    };
    let blake2s = {
        use blake2::Digest as _;
        colons(&blake2::Blake2s256::digest(data))
    };
    let sha3 = |n: u32| {
        use sha3::Digest as _;
        match n {
            224 => colons(&sha3::Sha3_224::digest(data)),
            256 => colons(&sha3::Sha3_256::digest(data)),
            384 => colons(&sha3::Sha3_384::digest(data)),
            _ => colons(&sha3::Sha3_512::digest(data)),
        }
    };
    let shake128 = shake(&mut |out| {
        use shake::{ExtendableOutput, Update};
        let mut h = shake::Shake128::default();
        h.update(data);
        h.finalize_xof_into(out);
    });
    let shake256 = shake(&mut |out| {
        use shake::{ExtendableOutput, Update};
        let mut h = shake::Shake256::default();
        h.update(data);
        h.finalize_xof_into(out);
    });
    dict([
        ("blake2b", Value::from(blake2b)),
        ("blake2s", Value::from(blake2s)),
        ("md5", Value::from(colons(&md5::Md5::digest(data)))),
        ("sha1", Value::from(colons(&sha1::Sha1::digest(data)))),
        ("sha224", Value::from(colons(&sha2::Sha224::digest(data)))),
        ("sha256", Value::from(sha256)),
        ("sha384", Value::from(colons(&sha2::Sha384::digest(data)))),
        ("sha3_224", Value::from(sha3(224))),
        ("sha3_256", Value::from(sha3(256))),
        ("sha3_384", Value::from(sha3(384))),
        ("sha3_512", Value::from(sha3(512))),
        ("sha512", Value::from(colons(&sha2::Sha512::digest(data)))),
        ("shake_128", Value::from(shake128)),
        ("shake_256", Value::from(shake256)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_is_read_and_fingerprinted_as_community_crypto_does() {
        // An Ed25519 key and the fingerprints community.crypto 3 returned
        // for it.
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA+5eYSgBNQ+FBLujLvWKg37vfcP13wfa2RffmXxqtNR4=\n-----END PUBLIC KEY-----\n";
        let k = PublicKeyInfo::parse_pem(pem).unwrap();
        assert_eq!(k.key_type, KeyType::Ed25519);
        assert_eq!(k.pem(), pem);
        let f = fingerprints(&k.der, false);
        assert_eq!(
            f.get_attr("sha256").unwrap().as_str(),
            Some("b7:b2:c5:f2:a3:e2:cc:02:92:62:34:ec:f2:b8:7f:14:a0:78:9c:b1:38:d0:ec:56:33:5d:7c:90:8e:df:8e:9e")
        );
        assert_eq!(pass_stdin(Some("a b")), b"PYSBi\n".to_vec());
        assert_eq!(pass_stdin(None), b"-\n".to_vec());
    }
}
