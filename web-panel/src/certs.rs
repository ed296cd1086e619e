//! TLS certificates as the panel reads them, below everything that stores
//! or installs one (`services::certificates`, the `certificate` job): a PEM
//! chain parsed into what the server page shows ([`CertInfo`]: the names
//! it covers, its issuer, its validity), a private key checked against the
//! certificate, and whether the names cover a vhost. Uploaded certificates
//! and the ones an ACME server issues go through the same checks. It
//! imports nothing from the crate.
//!
//! The key is parsed by rustls's own key loader (PKCS#8, PKCS#1 RSA and
//! SEC1 EC keys), and the match is rustls's comparison of the key's public
//! half with the certificate's, so no key type is special-cased here.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a certificate or key cannot be used. Each names the field of the
/// upload it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The certificate text is no PEM certificate chain.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The key text is no PEM private key, or not the certificate's.
    #[error("key: {0}")]
    Key(String),
}

impl CertError {
    /// The upload field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            CertError::Certificate(_) => "certificate",
            CertError::Key(_) => "key",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CertError::Certificate(m) | CertError::Key(m) => m,
        }
    }
}

/// What the panel shows of a certificate: the first one of its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names of its subject alternative names, lower-cased, in the
    /// certificate's order (the subject's common name when it has none).
    pub names: Vec<String>,
    /// The issuer's distinguished name, as OpenSSL prints it (RFC 4514).
    pub issuer: String,
    /// Valid from and until, Unix milliseconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Serial number, hex.
    pub serial: String,
}

/// The certificates of a PEM chain, leaf first; at least one.
fn chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Certificate(format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CertError::Certificate(
            "has no \"-----BEGIN CERTIFICATE-----\" block".into(),
        ));
    }
    Ok(certs)
}

/// Reads the leaf of a PEM chain (the first certificate); every
/// certificate of the chain must parse.
pub fn parse(pem: &str) -> Result<CertInfo, CertError> {
    let certs = chain(pem)?;
    for (i, der) in certs.iter().enumerate().skip(1) {
        X509Certificate::from_der(der.as_ref()).map_err(|e| {
            CertError::Certificate(format!("certificate {} of the chain: {e}", i + 1))
        })?;
    }
    let (_, cert) = X509Certificate::from_der(certs[0].as_ref())
        .map_err(|e| CertError::Certificate(format!("is no X.509 certificate: {e}")))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    let validity = cert.validity();
    Ok(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.timestamp() * 1000,
        not_after: validity.not_after.timestamp() * 1000,
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

/// Checks that `key_pem` is a private key and the public key of the chain's
/// leaf is its public half.
pub fn check_key(cert_pem: &str, key_pem: &str) -> Result<(), CertError> {
    let certs = chain(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| CertError::Key(format!("is no PEM private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key(format!("cannot be read: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            CertError::Key("does not match the certificate's public key".into()),
        ),
        Err(e) => Err(CertError::Key(format!(
            "cannot be compared with the certificate: {e}"
        ))),
    }
}

/// Whether certificate name `pattern` (a DNS name, or `*.` and a domain)
/// covers host name `name`: a wildcard covers exactly one leftmost label.
pub fn covers(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    if let Some(domain) = pattern.strip_prefix("*.") {
        return name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == domain);
    }
    pattern == name
}

/// The names of `wanted` that none of the certificate's names covers.
pub fn uncovered<'a>(info: &CertInfo, wanted: &'a [String]) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|w| !info.names.iter().any(|n| covers(n, w)))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("www.example.org", "WWW.example.org"));
        assert!(covers("*.example.org", "www.example.org"));
        assert!(!covers("*.example.org", "example.org"));
        assert!(!covers("*.example.org", "a.b.example.org"));
        assert!(!covers("www.example.org", "example.org"));
        let info = CertInfo {
            names: vec!["example.org".into(), "*.example.org".into()],
            issuer: String::new(),
            not_before: 0,
            not_after: 0,
            serial: String::new(),
        };
        let wanted = vec![
            "example.org".to_string(),
            "www.example.org".to_string(),
            "a.b.example.org".to_string(),
        ];
        assert_eq!(uncovered(&info, &wanted), ["a.b.example.org"]);
    }

    #[test]
    fn text_that_is_no_certificate_names_the_field() {
        let e = parse("hello").unwrap_err();
        assert_eq!(e.field(), "certificate");
        let e =
            parse("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap_err();
        assert_eq!(e.field(), "certificate", "{e}");
    }
}
