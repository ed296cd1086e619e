//! Command modules: `command`, `shell`, `raw`, `script` (and `django_manage`,
//! a project's `./manage.py`). Each runs in exactly
//! one round trip: a small `sh` prelude handles `chdir`, `creates` and
//! `removes` on the host before the command itself.
//! The shared run-and-report path lives in [`kit::command`](super::kit::command).
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod command;
pub mod django_manage;
pub mod raw;
pub mod script;
pub mod shell;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("command", Arc::new(command::CommandModule));
    m.insert("shell", Arc::new(shell::Shell));
    m.insert("raw", Arc::new(raw::Raw));
    m.insert("script", Arc::new(script::Script));
    m.insert("django_manage", Arc::new(django_manage::DjangoManage));
}
