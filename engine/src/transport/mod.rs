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
//! `ssh_config.rs` (the OpenSSH client configuration for one host),
//! `pool.rs` (one connection per host, opened concurrently).

mod r#become;
mod command;
pub(crate) mod known_hosts;
mod local;
mod pool;
mod spec;
mod ssh;
pub mod ssh_config;

pub use command::{Command, Output, TransportError};
pub use known_hosts::default_known_hosts;
pub use local::LocalConnection;
pub use pool::ConnectionPool;
pub use r#become::{Become, BecomeMethod};
pub use spec::{ConnectDefaults, ConnectSpec, ConnectionKind, HostKeyPolicy, JumpHop, Keepalive};
pub use ssh::SshConnection;

tokio::task_local! {
    /// Told the command line of every command [`Connection::exec`] runs, as
    /// ansible-core's connection plugins print `EXEC` lines from `-vvv`
    /// (what `sudo` line a become setting produced is the usual question).
    /// The executor sets it around a module's run only at that verbosity
    /// and never for a `no_log` task; the line never holds a become
    /// password, which travels on stdin.
    pub static EXEC_LOG: std::sync::Arc<dyn Fn(&str) + Send + Sync>;
}

/// The command line a command runs as: `/bin/sh -c` and the script with its
/// environment and become wrapping.
fn shown(cmd: &Command) -> String {
    let script = r#become::with_env(&cmd.script, &cmd.env);
    let script = match &cmd.become_ {
        Some(b) => r#become::wrap(&script, b).script,
        None => script,
    };
    format!("/bin/sh -c {}", crate::shell::quote(&script))
}

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
        let _ = EXEC_LOG.try_with(|log| log(&shown(cmd)));
        match self {
            Connection::Local(c) => c.exec(cmd).await,
            Connection::Ssh(c) => c.exec(cmd).await,
        }
    }

    /// Whether the server or the network has ended the connection (a local
    /// one never ends).
    pub fn is_closed(&self) -> bool {
        match self {
            Connection::Local(_) => false,
            Connection::Ssh(c) => c.is_closed(),
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
