//! The module kit: everything modules share, so that a module file needs
//! nothing from a sibling module, only from here.
//!
//! | file | what it gives a module |
//! | --- | --- |
//! | [`query`] | [`Query`]: the one query builder (sections, files, tests, stats, a file body) and its [`Answers`] |
//! | [`stat`] | [`RemoteStat`] of a path, the `ks` shell function, checksums |
//! | [`write`] | [`apply`] a `set -e` script, [`FileWrite`]/[`write_file`] an atomic file replace |
//! | [`attrs`] | [`FileAttrs`] (`mode`/`owner`/`group` arguments) and the shell that sets them |
//! | [`put`] | [`put_content`]: make a path hold given bytes (`copy`, `template`) |
//! | [`edit`] | read-modify-write of a text file (`lineinfile`, `blockinfile`, `replace`) |
//! | [`diff`] | the one `--diff` shape: file texts, or `key: value` lines of an object |
//! | [`accounts`] | `getent` records (`Passwd`, `GroupEntry`) |
//! | [`time`] | Ansible's `start`/`end` timestamps |

pub mod accounts;
pub mod attrs;
pub mod command;
pub mod diff;
pub mod edit;
pub mod mysql;
pub mod put;
pub mod query;
pub mod stat;
pub mod time;
pub mod write;

pub use attrs::{attr_commands, file_result_values, fill_attrs, resolve_mode, FileAttrs};
pub use diff::{file_diff, path_state_diff, state_diff, text_diff};
pub use put::{put_content, Put};
pub use query::{Answers, Query};
pub use stat::{checksum_tool, sha1_hex, FileKind, RemoteStat, StatReport, STAT_FN};
pub use write::{
    apply, env_prefix, failure_text, split_path, write_file, FileOwner, FileWrite, Source,
};
