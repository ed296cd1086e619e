//! The host-key check after the callback: wait until the VM's sshd speaks
//! (an `SSH-` banner, not just an accepted TCP connection, because
//! user-mode port forwards accept early), run an SSH key exchange that
//! records the key the server proves it holds, and compare it with the key
//! the panel generated for the VM. Only a match is written to the VM's
//! known_hosts file, which is all the role run trusts.

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

struct Recorder {
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Recorder {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = key.to_openssh().ok();
        }
        // Never go further: this connection only learns the key.
        Ok(false)
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

/// The host key `addr` presents in a key exchange, as an OpenSSH line.
pub async fn presented_key(addr: SocketAddr) -> Result<String, ProvisionError> {
    let seen = Arc::new(Mutex::new(None));
    let config = client_config();
    let handler = Recorder { seen: seen.clone() };
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        client::connect(config, addr, handler),
    )
    .await;
    let key = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (key, result) {
        (Some(k), _) => Ok(k),
        (None, Err(_)) => Err(ProvisionError::Ssh(format!(
            "key exchange with {addr} timed out"
        ))),
        (None, Ok(Err(e))) => Err(ProvisionError::Ssh(format!(
            "key exchange with {addr}: {e}"
        ))),
        (None, Ok(Ok(_))) => Err(ProvisionError::Ssh(format!(
            "{addr} completed a handshake without showing a host key"
        ))),
    }
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
        Ok(match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key
                .to_openssh()
                .map(|line| key_material(&line) == key_material(&self.expected))
                .unwrap_or(false),
            _ => false,
        })
    }
}

/// Waits until `user` can log in to `addr` with the panel's key, talking
/// only to the host that holds `expected`. Right after the callback a
/// Debian guest still refuses logins for a moment (`/run/nologin` until
/// `systemd-user-sessions` has run), which is not a reason to spend one of
/// the role run's attempts.
pub async fn wait_for_login(
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
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(ProvisionError::Ssh(format!(
                "{user}@{addr} could not log in within {} s ({last})",
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn try_login(
    addr: SocketAddr,
    expected: &str,
    user: &str,
    key: Arc<russh::keys::PrivateKey>,
) -> Result<(), String> {
    let config = client_config();
    let handler = Pinned {
        expected: expected.to_string(),
    };
    let attempt = async {
        let mut handle = client::connect(config, addr, handler)
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
    tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .map_err(|_| "login timed out".to_string())?
}

/// `algorithm base64` of an OpenSSH public key line (the comment dropped).
pub fn key_material(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that the VM at `addr` presents exactly `expected` (an OpenSSH
/// public key line). A mismatch is an alarm, never a reason to trust.
pub async fn verify(addr: SocketAddr, expected: &str) -> Result<(), ProvisionError> {
    let seen = presented_key(addr).await?;
    if key_material(&seen) == key_material(expected) {
        Ok(())
    } else {
        Err(ProvisionError::HostKeyMismatch {
            expected: key_material(expected),
            seen: key_material(&seen),
        })
    }
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
