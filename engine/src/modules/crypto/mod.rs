//! community.crypto's modules: private keys made by `openssl` on the host,
//! and requests signed by them, judged on the controller from their public
//! parts ([`kit::pki`](super::kit::pki), [`kit::x509`](super::kit::x509)).
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod openssl_csr;
pub mod openssl_privatekey;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("openssl_csr", Arc::new(openssl_csr::OpensslCsr));
    m.insert(
        "openssl_privatekey",
        Arc::new(openssl_privatekey::OpensslPrivatekey),
    );
}
