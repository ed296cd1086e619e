//! What the transports carry: a [`Command`] to run on a host, the [`Output`]
//! it produced, and the [`TransportError`] that makes a host unreachable.
//! Below both connections (`local.rs`, `ssh.rs`) and the pool.

use std::time::Duration;

use super::r#become::Become;

/// One thing to run on a host.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// A POSIX shell script, run by `/bin/sh -c` on the host. Anything from
    /// user input in here must already be quoted with [`quote`](crate::shell::quote).
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
