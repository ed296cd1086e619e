//! One connection per host, shared by every task of a run.
//!
//! The executor asks [`ConnectionPool::get`] before running a task on a host.
//! Concurrent callers for the same host share one connection attempt (a
//! per-host `OnceCell`). A failed attempt is kept too: the host stays
//! unreachable for the rest of the run instead of being re-dialled (and timing
//! out again) by every task, which is what a play wants once a host is marked
//! unreachable. [`ConnectionPool::invalidate`] forgets a host, e.g. after its
//! connection was lost, so the next `get` dials again.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::OnceCell;

use super::command::TransportError;
use super::local::LocalConnection;
use super::spec::{ConnectSpec, ConnectionKind};
use super::ssh::SshConnection;
use super::Connection;

type Slot = Arc<OnceCell<Result<Arc<Connection>, Arc<TransportError>>>>;

#[derive(Default)]
pub struct ConnectionPool {
    hosts: Mutex<HashMap<String, Slot>>,
    /// Connection warnings already shown in this run.
    warned: Mutex<std::collections::HashSet<String>>,
}

impl ConnectionPool {
    pub fn new() -> ConnectionPool {
        ConnectionPool::default()
    }

    /// The connection to `host`, opened on first use.
    pub async fn get(
        &self,
        host: &str,
        spec: &ConnectSpec,
    ) -> Result<Arc<Connection>, TransportError> {
        let slot = self
            .hosts
            .lock()
            .entry(host.to_string())
            .or_default()
            .clone();
        let r = slot
            .get_or_init(|| async {
                match spec.kind {
                    ConnectionKind::Local => {
                        Ok(Arc::new(Connection::Local(LocalConnection::new(host))))
                    }
                    ConnectionKind::Ssh => connect_with_retries(host, spec)
                        .await
                        .map(|c| Arc::new(Connection::Ssh(Box::new(c))))
                        .map_err(Arc::new),
                }
            })
            .await;
        match r {
            Ok(c) => Ok(c.clone()),
            Err(e) => Err(clone_error(e)),
        }
    }

    /// The warnings of a host's [`ConnectSpec`] not yet shown in this run
    /// (an ssh option Keel does not apply is named once, not per host).
    pub fn new_warnings(&self, spec: &ConnectSpec) -> Vec<String> {
        let mut warned = self.warned.lock();
        spec.warnings
            .iter()
            .filter(|w| warned.insert((*w).clone()))
            .cloned()
            .collect()
    }

    /// Forgets `host`: the next [`get`](Self::get) connects again. The old
    /// connection is closed once its last user lets go of it.
    pub async fn invalidate(&self, host: &str) {
        let slot = self.hosts.lock().remove(host);
        if let Some(Ok(c)) = slot.as_ref().and_then(|s| s.get()) {
            if Arc::strong_count(c) == 1 {
                c.close().await;
            }
        }
    }

    /// Closes every open connection.
    pub async fn close_all(&self) {
        let slots: Vec<Slot> = self.hosts.lock().drain().map(|(_, s)| s).collect();
        for s in slots {
            if let Some(Ok(c)) = s.get() {
                c.close().await;
            }
        }
    }
}

/// Opens an SSH connection, trying again `spec.retries` times when the
/// host could not be reached (refused, reset, timed out), as ansible-core's
/// ssh connection retries on ssh's exit code 255: after 0, 1, 3, 7, 15 and
/// then 30 s. A host key or authentication refusal is final at once, since
/// asking again gets the same answer.
async fn connect_with_retries(
    host: &str,
    spec: &ConnectSpec,
) -> Result<SshConnection, TransportError> {
    let mut attempt: u32 = 0;
    loop {
        match SshConnection::connect(host, spec).await {
            Ok(c) => return Ok(c),
            Err(e @ (TransportError::Connect { .. } | TransportError::Timeout { .. }))
                if attempt < spec.retries =>
            {
                let pause = retry_pause(attempt);
                tracing::debug!(
                    host,
                    attempt = attempt + 1,
                    pause_secs = pause.as_secs(),
                    "ssh_retry: {e}"
                );
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pause before retry `attempt + 1`: 2^attempt - 1 seconds, at most 30.
fn retry_pause(attempt: u32) -> std::time::Duration {
    let secs = 2u64.saturating_pow(attempt).saturating_sub(1).min(30);
    std::time::Duration::from_secs(secs)
}

fn clone_error(e: &TransportError) -> TransportError {
    use TransportError::*;
    match e {
        Connect { host, addr, reason } => Connect {
            host: host.clone(),
            addr: addr.clone(),
            reason: reason.clone(),
        },
        HostKey { host, addr, reason } => HostKey {
            host: host.clone(),
            addr: addr.clone(),
            reason: reason.clone(),
        },
        Auth { host, user, reason } => Auth {
            host: host.clone(),
            user: user.clone(),
            reason: reason.clone(),
        },
        Timeout { host, secs } => Timeout {
            host: host.clone(),
            secs: *secs,
        },
        Lost { host, reason } => Lost {
            host: host.clone(),
            reason: reason.clone(),
        },
        Become {
            host,
            method,
            reason,
        } => Become {
            host: host.clone(),
            method: method.clone(),
            reason: reason.clone(),
        },
        Other { host, reason } => Other {
            host: host.clone(),
            reason: reason.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::retry_pause;

    #[test]
    fn retry_pauses_follow_ansible_core() {
        let secs: Vec<u64> = (0..8).map(|a| retry_pause(a).as_secs()).collect();
        assert_eq!(secs, [0, 1, 3, 7, 15, 30, 30, 30]);
        assert_eq!(retry_pause(200).as_secs(), 30);
    }
}
