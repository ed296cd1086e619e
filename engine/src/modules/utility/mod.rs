//! Utility modules: controller-side helpers (`debug`, `assert`, `fail`,
//! `set_fact`, `pause`) and host checks (`ping`, `wait_for`,
//! `wait_for_connection`, `setup`), and `async_status` for background jobs.
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod assert;
pub mod async_status;
pub mod debug;
pub mod fail;
pub mod pause;
pub mod ping;
pub mod set_fact;
pub mod setup;
pub mod wait_for;
pub mod wait_for_connection;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("debug", Arc::new(debug::Debug));
    m.insert("async_status", Arc::new(async_status::AsyncStatus));
    m.insert("assert", Arc::new(assert::Assert));
    m.insert("fail", Arc::new(fail::Fail));
    m.insert("set_fact", Arc::new(set_fact::SetFact));
    m.insert("pause", Arc::new(pause::Pause));
    m.insert("ping", Arc::new(ping::Ping));
    m.insert("wait_for", Arc::new(wait_for::WaitFor));
    m.insert(
        "wait_for_connection",
        Arc::new(wait_for_connection::WaitForConnection),
    );
    m.insert("setup", Arc::new(setup::Setup));
    m.insert("gather_facts", Arc::new(setup::Setup));
}
