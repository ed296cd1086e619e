//! The Python fallback: modules Keel has no native port of, run the way
//! Ansible runs them.
//!
//! Where it sits: the resolver asks [`ModuleSearch`] about every task name
//! that is not a native module (and about bare names first, since a
//! playbook's or role's `library/` module shadows a native one, as in
//! Ansible). A module found there is read and packed once, at resolve time
//! ([`payload`]), and the plan's task carries it as a [`PyModule`]; an
//! unresolvable name stays a resolve-time error that lists where Keel looked.
//! At run time [`PyModule`] is an ordinary [`Module`](super::Module): it sends
//! the payload over the host's connection, runs it with the host's Python and
//! reads its JSON result back (`run.rs`).
//!
//! Where modules are looked for, in Ansible's order:
//! 1. the playbook's `library/`, then each loaded role's `library/`;
//! 2. `ANSIBLE_LIBRARY` (colon-separated), then `~/.ansible/plugins/modules`
//!    and `/usr/share/ansible/plugins/modules`;
//! 3. for `ns.coll.name`: `ansible_collections/ns/coll/plugins/modules/` under
//!    the playbook's `collections/`, `ANSIBLE_COLLECTIONS_PATH`,
//!    `~/.ansible/collections` and `/usr/share/ansible/collections`;
//! 4. ansible-core's own modules, when an ansible-core is importable on the
//!    controller ([`ansible_core`]: `KEEL_ANSIBLE_PYTHON`, else
//!    `python3`, else the Python behind `ansible-playbook` on `PATH`).
//!
//! New-style modules (those importing `ansible.module_utils`) are packed with
//! the `module_utils` they import, taken from the playbook's and roles'
//! `module_utils/` and from that ansible-core; `WANT_JSON` and old
//! `key=value` modules are sent as they are, with an arguments file.

pub mod find;
mod install;
pub mod payload;
mod run;

pub use find::{ModuleSearch, Resolution};
pub use install::{ansible_core, AnsibleCore};
pub use payload::{PayloadError, PyModule, Style};
