//! Pages a server serves only to itself, fetched through its SSH
//! connection: the node exporter's `/metrics` and Apache's
//! `/server-status?auto`, for the analytics collector
//! (`steps/metrics.rs`). The panel logs in as its admin account with its
//! own key, trusting only the host key it generated for the server
//! (`hostkey::Pinned`), and opens one `direct-tcpip` channel per page to
//! `127.0.0.1:<port>` on the server, over which it speaks plain HTTP/1.0.
//! Nothing runs in a shell, and the exporters need not listen on any
//! address but the server's loopback, so they are never exposed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::hostkey::{client_config, Pinned};

/// The most a page may be; a node exporter's is ~100 KiB.
const MAX_PAGE: u64 = 4 << 20;

/// Why a page could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("ssh to {addr}: {reason}")]
    Ssh { addr: SocketAddr, reason: String },
    #[error("127.0.0.1:{port}{path} on the server: {reason}")]
    Page {
        port: u16,
        path: String,
        reason: String,
    },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Where a server is and how the panel logs in to it.
pub struct Target<'a> {
    pub addr: SocketAddr,
    /// The host key the panel generated for it (an OpenSSH line).
    pub host_key: &'a str,
    pub user: &'a str,
    pub private_key: &'a Path,
}

/// Fetches each `(port, path)` from the server's loopback over one SSH
/// connection; each page's body or why it failed. The whole call is
/// bounded by `timeout`; a failed login fails it all.
pub async fn fetch_local(
    target: &Target<'_>,
    pages: &[(u16, &str)],
    timeout: Duration,
) -> Result<Vec<Result<String, ScrapeError>>, ScrapeError> {
    tokio::time::timeout(timeout, fetch(target, pages))
        .await
        .map_err(|_| ScrapeError::Timeout(timeout))?
}

async fn fetch(
    target: &Target<'_>,
    pages: &[(u16, &str)],
) -> Result<Vec<Result<String, ScrapeError>>, ScrapeError> {
    let ssh = |reason: String| ScrapeError::Ssh {
        addr: target.addr,
        reason,
    };
    let key = russh::keys::load_secret_key(target.private_key, None)
        .map_err(|e| ssh(format!("loading {}: {e}", target.private_key.display())))?;
    let handler = Pinned {
        expected: target.host_key.to_string(),
    };
    let mut handle = client::connect(client_config(), target.addr, handler)
        .await
        .map_err(|e| ssh(e.to_string()))?;
    let auth = handle
        .authenticate_publickey(
            target.user,
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .map_err(|e| ssh(e.to_string()))?;
    if !auth.success() {
        return Err(ssh("the panel's key was refused".into()));
    }
    let mut out = Vec::new();
    for (port, path) in pages {
        out.push(get(&handle, *port, path).await);
    }
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    Ok(out)
}

async fn get(
    handle: &client::Handle<Pinned>,
    port: u16,
    path: &str,
) -> Result<String, ScrapeError> {
    let fail = |reason: String| ScrapeError::Page {
        port,
        path: path.to_string(),
        reason,
    };
    let channel = handle
        .channel_open_direct_tcpip("127.0.0.1", u32::from(port), "127.0.0.1", 0)
        .await
        .map_err(|e| fail(format!("no tunnel: {e}")))?;
    let mut stream = channel.into_stream();
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: keel-panel\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    stream.flush().await.map_err(|e| fail(e.to_string()))?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_PAGE)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| fail(e.to_string()))?;
    body_of(&raw).map_err(fail)
}

/// The body of an HTTP/1.x response, if its status is 200.
pub fn body_of(raw: &[u8]) -> Result<String, String> {
    if raw.is_empty() {
        return Err("nothing listens there, or it closed without an answer".into());
    }
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") || code != "200" {
        return Err(format!("answered {status:?}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_200_answer_has_a_body() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nnode_load1 0.5\n";
        assert_eq!(body_of(ok).unwrap(), "node_load1 0.5\n");
        let denied = b"HTTP/1.1 403 Forbidden\r\n\r\nno";
        assert!(body_of(denied).unwrap_err().contains("403"));
        assert!(body_of(b"").unwrap_err().contains("nothing listens"));
        assert!(body_of(b"SSH-2.0-OpenSSH\r\n").is_err());
    }
}
