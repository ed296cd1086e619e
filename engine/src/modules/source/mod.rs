//! Source modules: code checkouts on the host (`git`), run with the host's
//! own tools; query the checkout, then clone or update once.
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod git;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("git", Arc::new(git::Git));
}
