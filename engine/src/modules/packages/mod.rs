//! Package modules: Debian packages, their selections and debconf answers,
//! and Python packages (`pip`).
//!
//! Each one queries `dpkg`'s database (one round trip), decides on the
//! controller, then runs `apt-get`/`dpkg` once, reporting `changed` from the
//! package state read back after the run.
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod apt;
pub mod apt_key;
pub mod apt_repository;
pub mod debconf;
pub mod dpkg_selections;
pub mod package;
pub mod package_facts;
pub mod pip;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    let apt: ModuleRef = Arc::new(apt::Apt);
    m.insert("apt", apt.clone());
    m.insert("package", Arc::new(package::Package { apt }));
    m.insert("dpkg_selections", Arc::new(dpkg_selections::DpkgSelections));
    m.insert("debconf", Arc::new(debconf::Debconf));
    m.insert("apt_repository", Arc::new(apt_repository::AptRepository));
    m.insert(
        "deb822_repository",
        Arc::new(apt_repository::Deb822Repository),
    );
    m.insert("apt_key", Arc::new(apt_key::AptKey));
    m.insert("package_facts", Arc::new(package_facts::PackageFacts));
    m.insert("pip", Arc::new(pip::Pip));
}
