//! How the engine reaches a host: one long-lived connection per host.
//!
//! [`Connection`] is either local (a child `sh` per command) or SSH (one russh
//! session per host, many channels multiplexed on it). Every remote action is a
//! [`Command`]: a POSIX `sh` script, optional stdin bytes, optional privilege
//! escalation. Modules never build their own transport; they ask the
//! connection to run a command. File contents travel on stdin, which costs no
//! extra round trip.
//!
//! Layout: `ssh.rs` (russh client, channel cap, jump hosts), `known_hosts.rs`
//! (strict host key checking, hashed entries), `local.rs`, `become.rs`
//! (wrapping a script in sudo/su), `spec.rs` (connection vars → [`ConnectSpec`]),
//! `pool.rs` (one connection per host, opened concurrently).

use std::path::PathBuf;
use std::time::Duration;

mod r#become;
mod known_hosts;
mod local;
mod pool;
mod spec;
mod ssh;

pub use local::LocalConnection;
pub use pool::ConnectionPool;
pub use spec::{ConnectSpec, ConnectionKind, JumpHop};
pub use ssh::SshConnection;

/// Privilege escalation for one command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BecomeMethod {
    #[default]
    Sudo,
    Su,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Become {
    pub method: BecomeMethod,
    pub user: String,
    /// Never printed: `Debug` redacts it.
    pub password: Option<String>,
    pub flags: Option<String>,
    pub exe: Option<String>,
}

impl std::fmt::Debug for Become {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Become")
            .field("method", &self.method)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("flags", &self.flags)
            .finish()
    }
}

/// One thing to run on a host.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// A POSIX shell script, run by `/bin/sh -c` on the host. Anything from
    /// user input in here must already be quoted with [`quote`].
    pub script: String,
    /// Bytes fed to the script's stdin (file contents, for instance).
    pub stdin: Option<Vec<u8>>,
    pub become_: Option<Become>,
    /// Exported to the script (the task's `environment`).
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

/// What a command produced.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub rc: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Why a host could not be reached or a command could not be run. A host for
/// which this is returned is reported *unreachable*, not *failed*.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{host}: failed to connect to {addr}: {reason}")]
    Connect {
        host: String,
        addr: String,
        reason: String,
    },
    #[error("{host}: host key verification failed for {addr}: {reason}")]
    HostKey {
        host: String,
        addr: String,
        reason: String,
    },
    #[error("{host}: authentication failed as {user}: {reason}")]
    Auth {
        host: String,
        user: String,
        reason: String,
    },
    #[error("{host}: command timed out after {secs}s")]
    Timeout { host: String, secs: u64 },
    #[error("{host}: connection lost: {reason}")]
    Lost { host: String, reason: String },
    #[error("{host}: become ({method}) failed: {reason}")]
    Become {
        host: String,
        method: String,
        reason: String,
    },
    #[error("{host}: {reason}")]
    Other { host: String, reason: String },
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

    pub fn is_local(&self) -> bool {
        matches!(self, Connection::Local(_))
    }
}

/// Quotes a string for POSIX `sh` so that it is passed as one literal word.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Default locations consulted when no known_hosts file is configured.
pub fn default_known_hosts() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(home) = dirs::home_dir() {
        v.push(home.join(".ssh/known_hosts"));
    }
    v.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    v
}
