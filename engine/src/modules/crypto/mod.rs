//! community.crypto's modules: private keys made by `openssl` on the host,
//! and requests and certificates signed by them, judged on the controller from their public
//! parts ([`kit::pki`](super::kit::pki), [`kit::x509`](super::kit::x509)).
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod openssl_csr;
pub mod openssl_privatekey;
pub mod x509_certificate;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("openssl_csr", Arc::new(openssl_csr::OpensslCsr));
    m.insert(
        "x509_certificate",
        Arc::new(x509_certificate::X509Certificate),
    );
    m.insert(
        "openssl_privatekey",
        Arc::new(openssl_privatekey::OpensslPrivatekey),
    );
}
