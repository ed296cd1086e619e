//! Keel's engine: runs Ansible-syntax playbooks over multiplexed SSH.
//!
//! Data flows one way:
//!
//! ```text
//!  yaml ──► playbook (raw model ──► resolved plan) ──► executor ──► output
//!                     inventory ──┘        │             │
//!                     template ────────────┘        modules ──► transport
//! ```
//!
//! - [`diag`]: source positions and user-facing diagnostics.
//! - [`yaml`]: YAML 1.1 loading with positions (saphyr-parser events).
//! - [`template`]: minijinja with Ansible's filters, tests, lookups, lazy vars.
//! - [`inventory`]: static, dynamic and HTTP inventories; host patterns.
//! - [`playbook`]: the language; resolves to a [`playbook::plan`].
//! - [`search`]: where relative file names are found (Ansible's search stack).
//! - [`transport`]: local and SSH (russh) connections, one per host.
//! - [`modules`]: one file per module; query, then apply.
//! - [`executor`]: strategies, forks, loops, handlers, results.
//! - [`output`]: the human recap and JSON events.
//! - [`vault`]: Ansible Vault texts and the secrets that open them.
//! - [`config`]: `ansible.cfg` and the `ANSIBLE_*` environment.
//! - [`galaxy`]: `keel galaxy install`: roles and collections from git, tarballs, directories.
//!
//! The engine never touches a database or serves HTTP: the panel calls it as a
//! library.

pub mod config;
pub mod diag;
pub mod executor;
pub(crate) mod fnmatch;
pub mod galaxy;
pub mod inventory;
pub mod kv;
pub mod modules;
pub mod output;
pub mod playbook;
pub mod search;
pub mod shell;
pub mod template;
pub mod transport;
pub mod vars;
pub mod vault;
pub mod yaml;
