//! The host-key check after the callback: wait until the VM's sshd speaks
//! (an `SSH-` banner, not just an accepted TCP connection, because
//! user-mode port forwards accept early), run an SSH key exchange that
//! records the key the server proves it holds, compare it with the key the
//! panel generated for the VM, and log in with the panel's key on that same
//! connection. Only a match is written to the VM's known_hosts file, which
//! is all the role run trusts.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::PublicKeyOrCertificate;
use tokio::io::AsyncReadExt as _;

use super::ProvisionError;

/// Waits until `addr` answers with an SSH banner, for at most `wait`.
pub async fn wait_for_banner(addr: SocketAddr, wait: Duration) -> Result<(), ProvisionError> {
    let deadline = Instant::now() + wait;
    loop {
        let last = match read_banner(addr).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(ProvisionError::Ssh(format!(
                "no SSH banner from {addr} within {} s ({last})",
                wait.as_secs()
            )));
        }
        // Often: the callback comes right before the guest starts sshd.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_banner(addr: SocketAddr) -> Result<(), String> {
    let step = Duration::from_secs(5);
    let mut tcp = tokio::time::timeout(step, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 255 {
        let n = tokio::time::timeout(step, tcp.read(&mut chunk))
            .await
            .map_err(|_| "no banner yet".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a banner".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // RFC 4253 allows other lines before the version line.
    if buf.split(|b| *b == b'\n').any(|l| l.starts_with(b"SSH-")) {
        Ok(())
    } else {
        Err("no SSH- line in the banner".into())
    }
}

/// Client settings for talking to a new VM: only the key type the panel
/// generated counts, so ask for that one.
pub(super) fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        preferred: russh::Preferred {
            key: std::borrow::Cow::Borrowed(&[russh::keys::Algorithm::Ed25519]),
            ..Default::default()
        },
        nodelay: true,
        ..Default::default()
    })
}

/// Accepts exactly one host key (the VM's, already verified).
pub(super) struct Pinned {
    pub(super) expected: String,
}

impl client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(shown(key).is_some_and(|line| same_key(&line, &self.expected)))
    }
}

/// Checks the VM's host key and waits until `user` can log in with the
/// panel's key, over one SSH connection per attempt: the key exchange
/// records the key `addr` proves it holds, and the handshake goes on only
/// when it is exactly `expected` (a mismatch ends at once with
/// [`ProvisionError::HostKeyMismatch`], an alarm, never retried). Right
/// after the callback a Debian guest still refuses logins for a moment
/// (`/run/nologin` until `systemd-user-sessions` has run), which is not a
/// reason to spend one of the role run's attempts, so refusals, resets and
/// timeouts are retried until `wait` has passed. One connection instead of
/// a key exchange for the check and another for the login: under TCG each
/// exchange costs the guest's sshd about a second.
pub async fn verify_and_log_in(
    addr: SocketAddr,
    expected: &str,
    user: &str,
    private_key: &Path,
    wait: Duration,
) -> Result<(), ProvisionError> {
    let key = russh::keys::load_secret_key(private_key, None)
        .map_err(|e| ProvisionError::Ssh(format!("loading {}: {e}", private_key.display())))?;
    let key = Arc::new(key);
    let deadline = Instant::now() + wait;
    loop {
        let last = match try_login(addr, expected, user, key.clone()).await {
            Ok(()) => return Ok(()),
            Err(Attempt::Mismatch(seen)) => {
                return Err(ProvisionError::HostKeyMismatch {
                    expected: key_material(expected),
                    seen: key_material(&seen),
                })
            }
            Err(Attempt::Retry(e)) => e,
        };
        if Instant::now() >= deadline {
            return Err(ProvisionError::Ssh(format!(
                "{user}@{addr} could not log in within {} s ({last})",
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Why one login attempt did not get in.
enum Attempt {
    /// The server proved a key other than the expected one.
    Mismatch(String),
    /// Anything that may pass: refused, reset, timed out.
    Retry(String),
}

/// Accepts exactly the expected host key, and remembers the key shown.
struct Checked {
    expected: String,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checked {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let line = shown(key);
        let ok = line.as_deref().is_some_and(|l| same_key(l, &self.expected));
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = line;
        Ok(ok)
    }
}

async fn try_login(
    addr: SocketAddr,
    expected: &str,
    user: &str,
    key: Arc<russh::keys::PrivateKey>,
) -> Result<(), Attempt> {
    let seen = Arc::new(Mutex::new(None));
    let handler = Checked {
        expected: expected.to_string(),
        seen: seen.clone(),
    };
    let attempt = async {
        let mut handle = client::connect(client_config(), addr, handler)
            .await
            .map_err(|e| e.to_string())?;
        let auth = handle
            .authenticate_publickey(user, russh::keys::PrivateKeyWithHashAlg::new(key, None))
            .await
            .map_err(|e| e.to_string())?;
        let ok = auth.success();
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        if ok {
            Ok(())
        } else {
            Err("the key was refused".to_string())
        }
    };
    let out = tokio::time::timeout(Duration::from_secs(30), attempt).await;
    // Whatever else happened, a key that is not the expected one decides.
    if let Some(line) = seen.lock().unwrap_or_else(|e| e.into_inner()).take() {
        if !same_key(&line, expected) {
            return Err(Attempt::Mismatch(line));
        }
    }
    match out {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Attempt::Retry(e)),
        Err(_) => Err(Attempt::Retry("login timed out".into())),
    }
}

/// The plain public key a server showed, as an OpenSSH line (a
/// certificate is never what the panel generated).
fn shown(key: &PublicKeyOrCertificate) -> Option<String> {
    match key {
        PublicKeyOrCertificate::PublicKey { key, .. } => key.to_openssh().ok(),
        _ => None,
    }
}

/// Whether two OpenSSH public key lines hold the same key.
fn same_key(a: &str, b: &str) -> bool {
    key_material(a) == key_material(b)
}

/// `algorithm base64` of an OpenSSH public key line (the comment dropped).
pub fn key_material(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The known_hosts host field: `host` for port 22, `[host]:port` otherwise.
pub fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Writes the one-line known_hosts file of a VM.
pub fn write_known_hosts(
    path: &Path,
    host: &str,
    port: u16,
    key: &str,
) -> Result<(), ProvisionError> {
    write_known_hosts_lines(path, &[(host, port, key)])
}

/// A known_hosts file of several entries, `(host, port, key line)` each,
/// replaced whole (written beside it, then renamed).
pub fn write_known_hosts_lines(
    path: &Path,
    entries: &[(&str, u16, &str)],
) -> Result<(), ProvisionError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProvisionError::io(format!("creating {}", dir.display()), e))?;
    }
    let text: String = entries
        .iter()
        .map(|(host, port, key)| {
            format!("{} {}\n", known_hosts_name(host, *port), key_material(key))
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ProvisionError::io(format!("writing {}", path.display()), e))
}

/// Removes a VM's known_hosts file; a missing file is fine.
pub fn remove_known_hosts(path: &Path) -> Result<(), ProvisionError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProvisionError::io(
            format!("removing {}", path.display()),
            e,
        )),
    }
}
