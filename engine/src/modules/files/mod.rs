//! File modules: content, state and inspection of paths on the host.
//!
//! Each module is query, decide, apply over the [`kit`](super::kit): one
//! query round trip, then at most one apply round trip. The kit's `put` and
//! `edit` hold the content and read-modify-write paths these modules share.
//! `synchronize` is the exception: rsync on the controller, over its own
//! `ssh` set up as the connection is.
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod assemble;
pub mod blockinfile;
pub mod copy;
pub mod fetch;
pub mod file;
pub mod find;
pub mod ini_file;
pub mod lineinfile;
pub mod replace;
pub mod slurp;
pub mod stat;
pub mod synchronize;
pub mod tempfile;
pub mod template;
pub mod unarchive;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("copy", Arc::new(copy::Copy));
    m.insert("file", Arc::new(file::File));
    m.insert("template", Arc::new(template::Template));
    m.insert("lineinfile", Arc::new(lineinfile::LineInFile));
    m.insert("blockinfile", Arc::new(blockinfile::BlockInFile));
    m.insert("replace", Arc::new(replace::Replace));
    m.insert("stat", Arc::new(stat::Stat));
    m.insert("synchronize", Arc::new(synchronize::Synchronize));
    m.insert("slurp", Arc::new(slurp::Slurp));
    m.insert("fetch", Arc::new(fetch::Fetch));
    m.insert("find", Arc::new(find::Find));
    m.insert("unarchive", Arc::new(unarchive::Unarchive));
    m.insert("tempfile", Arc::new(tempfile::TempFile));
    m.insert("assemble", Arc::new(assemble::Assemble));
    m.insert("ini_file", Arc::new(ini_file::IniFile));
}
