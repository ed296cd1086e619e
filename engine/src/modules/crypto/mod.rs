//! community.crypto's modules: private keys (and, in time, CSRs and
//! certificates) made by `openssl` on the host and judged on the controller
//! from their public parts ([`kit::pki`](super::kit::pki)).
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod openssl_privatekey;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert(
        "openssl_privatekey",
        Arc::new(openssl_privatekey::OpensslPrivatekey),
    );
}
