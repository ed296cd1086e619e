//! How the engine reaches a host: one long-lived connection per host.
//!
//! [`Connection`] is either local (a child `sh` per command) or SSH (one russh
//! session per host, many channels multiplexed on it). Every remote action is a
//! [`Command`]: a POSIX `sh` script, optional stdin bytes, optional privilege
//! escalation. Modules never build their own transport; they ask the
//! connection to run a command. File contents travel on stdin, which costs no
//! extra round trip.
//!
//! Layout: `command.rs` (what to run, what came back, how it failed), `ssh.rs`
//! (russh client, channel cap, jump hosts), `known_hosts.rs` (host key
//! checking, hashed entries, `accept-new` learning), `local.rs`, `become.rs` (wrapping a script in
//! sudo/su), `spec.rs` (connection vars → [`ConnectSpec`]),
//! `pool.rs` (one connection per host, opened concurrently).

mod r#become;
mod command;
pub(crate) mod known_hosts;
mod local;
mod pool;
mod spec;
mod ssh;

pub use command::{Command, Output, TransportError};
pub use known_hosts::default_known_hosts;
pub use local::LocalConnection;
pub use pool::ConnectionPool;
pub use r#become::{Become, BecomeMethod};
pub use spec::{ConnectDefaults, ConnectSpec, ConnectionKind, HostKeyPolicy, JumpHop};
pub use ssh::SshConnection;

/// An open connection to one host.
pub enum Connection {
    Local(local::LocalConnection),
    Ssh(Box<ssh::SshConnection>),
}

impl Connection {
    /// A connection to the controller itself (`connection: local`).
    pub fn local() -> Connection {
        Connection::Local(local::LocalConnection::default())
    }

    /// Runs one command; waits for exit status and all output.
    pub async fn exec(&self, cmd: &Command) -> Result<Output, TransportError> {
        match self {
            Connection::Local(c) => c.exec(cmd).await,
            Connection::Ssh(c) => c.exec(cmd).await,
        }
    }

    /// Closes the connection (and every channel on it).
    pub async fn close(&self) {
        match self {
            Connection::Local(_) => {}
            Connection::Ssh(c) => c.close().await,
        }
    }

    /// Warnings from opening the connection (host keys learned under
    /// `accept-new`), each given out once.
    pub fn take_notices(&self) -> Vec<String> {
        match self {
            Connection::Local(_) => Vec::new(),
            Connection::Ssh(c) => c.take_notices(),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Connection::Local(_))
    }
}
