//! Network modules: fetching URLs onto the host. They run the transfer on
//! the target (with `curl`/`wget`), as Ansible does, so the host's own
//! network view, proxies and DNS apply.
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod get_url;
pub mod uri;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("get_url", Arc::new(get_url::GetUrl));
    m.insert("uri", Arc::new(uri::Uri));
}
