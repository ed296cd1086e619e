//! `keel galaxy`: installing roles and collections as `ansible-galaxy
//! install` does, from sources that need no Galaxy server — local
//! directories, tarballs (a path or a URL) and git repositories (any URL
//! `git` clones, `git+file://` in tests).
//!
//! It sits beside the playbook loader, not in its flow: it only writes the
//! role and collection trees that the resolver later finds through
//! `roles_path` and `collections_path`. `requirements.rs` reads
//! `requirements.yml` and command-line names; `fetch.rs` brings a source
//! into a temporary directory (git clone, tar extraction, a copy); `role.rs`
//! installs roles and their `meta/main.yml` dependencies; `collection.rs`
//! installs collections (version constraints, `MANIFEST.json`/`FILES.json`,
//! dependencies among the requested and installed ones). Messages follow
//! ansible-galaxy's wording and go to the caller's [`Report`] as they happen.

mod collection;
mod fetch;
mod requirements;
mod role;

use std::path::PathBuf;

pub use collection::{install_collections, installed_collection_version, VersionReq};
pub use requirements::{
    load_requirements, parse_collection_arg, parse_role_arg, CollectionReq, CollectionSource,
    Requirements, RoleReq,
};
pub use role::install_roles;

/// One line of ansible-galaxy's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Standard output.
    Info(String),
    /// `[WARNING]: ...` on standard error.
    Warning(String),
}

/// Where an installer's lines go as they happen.
pub type Report<'a> = &'a mut dyn FnMut(Line);

/// Settings shared by role and collection installs.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Reinstall what is already there (`--force`).
    pub force: bool,
    /// Do not install dependencies (`--no-deps`).
    pub no_deps: bool,
    /// Go on after a role fails (`--ignore-errors`).
    pub ignore_errors: bool,
}

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum GalaxyError {
    #[error("{0}")]
    Requirements(crate::diag::Diagnostic),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git {args} failed for {url}: {stderr}")]
    Git {
        url: String,
        args: String,
        stderr: String,
    },
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Resolve(String),
    /// Some roles failed; each was reported already.
    #[error("{0} role(s) were not installed")]
    RolesFailed(usize),
}

impl GalaxyError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> GalaxyError {
        GalaxyError::Io {
            what: what.into(),
            source,
        }
    }
}

/// `~` at the start of a configured path.
pub(crate) fn expand_home(p: &std::path::Path) -> PathBuf {
    match p.strip_prefix("~") {
        Ok(rest) => dirs::home_dir()
            .map(|h| h.join(rest))
            .unwrap_or(p.to_path_buf()),
        Err(_) => p.to_path_buf(),
    }
}
