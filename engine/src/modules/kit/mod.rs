//! The module kit: everything modules share, so that a module file needs
//! nothing from a sibling module, only from here.
//!
//! # Writing a module
//!
//! A module is query → decide → apply. [`Module::plan`](crate::modules::Module::plan)
//! does the first two and returns a [`Plan`]; the driver ([`drive`], behind
//! `Module::run`) owns check mode: it awaits the apply step only outside it.
//! So a module never reads `check_mode`, and cannot forget to.
//!
//! ```ignore
//! use crate::modules::args::{ModuleArgs, Params};
//! use crate::modules::kit::{apply, state_diff, Plan, Query};
//! use crate::modules::{Args, Module, ModuleError, ModuleResult, TaskContext};
//! use crate::shell::quote;
//!
//! pub struct Timezone;
//!
//! /// Every accepted argument, once (name, then aliases): the resolver
//! /// rejects any other name before a connection opens.
//! static PARAMS: Params = Params { module: "timezone", sets: &[&[&["name"]]] };
//!
//! #[async_trait::async_trait]
//! impl Module for Timezone {
//!     async fn plan<'a>(&'a self, args: &'a Args, ctx: &'a TaskContext<'a>)
//!         -> Result<Plan<'a>, ModuleError> {
//!         // 1. Arguments: typed getters, then `finish` (unknown names fail).
//!         let mut a = ModuleArgs::new(&PARAMS, args);
//!         let name = a.req_string(&["name"])?;
//!         a.finish()?;
//!         // 2. Query: one round trip learns everything the decision needs.
//!         let mut q = Query::new();
//!         q.file("tz", "/etc/timezone");
//!         let ans = q.run(ctx).await?;
//!         let now = ans.file("tz").unwrap_or("").trim().to_string();
//!         // 3. Decide, changing nothing: already right → done.
//!         if now == name {
//!             return Ok(Plan::done(ModuleResult::ok()));
//!         }
//!         let mut res = ModuleResult::changed(true);
//!         if ctx.diff {
//!             res.diff.push(state_diff("timezone", &[("name", now)], &[("name", name.clone())]));
//!         }
//!         // 4. Apply: check mode reports `res` as planned; otherwise this runs.
//!         Ok(Plan::change(res.clone(), async move {
//!             let script = format!("printf '%s\\n' {} > /etc/timezone\n", quote(&name));
//!             if let Err(e) = apply(ctx, &script, None).await? {
//!                 return Ok(ModuleResult::failed(e));
//!             }
//!             Ok(res)
//!         }))
//!     }
//!
//!     fn params(&self) -> Option<&'static Params> {
//!         Some(&PARAMS)
//!     }
//! }
//! ```
//!
//! Register it in its concept folder's `register` (`system/mod.rs`...).
//! Modules that cannot know what they would change without doing it
//! (`command`) return [`Plan::Fused`]: check mode runs a read-only preview
//! instead of the step. A module that hands the task to another (`package`
//! to `apt`) returns [`delegate`](crate::modules::delegate).
//!
//! # What is here
//!
//! | file | what it gives a module |
//! | --- | --- |
//! | [`plan`] | [`Plan`] and the driver that owns check mode |
//! | [`query`] | [`Query`]: the one query builder (sections, files, tests, stats, a file body) and its [`Answers`] |
//! | [`stat`] | [`RemoteStat`] of a path, the `ks` shell function, checksums |
//! | [`write`] | [`apply`] a `set -e` script, [`FileWrite`]/[`write_file`] an atomic file replace |
//! | [`attrs`] | [`FileAttrs`] (`mode`/`owner`/`group` arguments) and the shell that sets them |
//! | [`put`] | [`put_content`]: make a path hold given bytes (`copy`, `template`) |
//! | [`edit`] | read-modify-write of a text file (`lineinfile`, `blockinfile`, `replace`) |
//! | [`diff`] | the one `--diff` shape: file texts, or `key: value` lines of an object |
//! | [`command`] | run something: `creates`/`removes`, Ansible's command result |
//! | [`accounts`] | `getent` records (`Passwd`, `GroupEntry`) |
//! | [`mysql`] | the MySQL client: login arguments, SQL quoting, batches |
//! | [`postgres`] | `psql` on the target: community.postgresql's login arguments, SQL quoting, sectioned batches |
//! | [`pki`] | community.crypto's shared pieces: public keys read on the controller (`x509-parser`), fingerprints, a passphrase on stdin for `openssl` |
//! | [`x509`] | requests and certificates: DER built and read on the controller, signed by the host's key |
//! | [`time`] | Ansible's `start`/`end` timestamps |

pub mod accounts;
pub mod attrs;
pub mod command;
pub mod diff;
pub mod edit;
pub mod job;
pub mod mysql;
pub mod pki;
pub mod plan;
pub mod postgres;
pub mod put;
pub mod query;
pub mod stat;
pub mod time;
pub mod write;
pub mod x509;

pub use attrs::{attr_commands, file_result_values, fill_attrs, resolve_mode, FileAttrs};
pub use diff::{file_diff, path_state_diff, state_diff, text_diff};
pub use plan::{drive, Apply, Plan};
pub use put::{put_content, Put};
pub use query::{Answers, Query};
pub use stat::{checksum_tool, sha1_hex, FileKind, RemoteStat, StatReport, STAT_FN};
pub use write::{
    apply, env_prefix, failure_text, split_path, write_file, FileOwner, FileWrite, Source,
};
