//! Strict host key checking against OpenSSH known_hosts files.
//!
//! Called by the SSH transport during every handshake (each jump hop too),
//! before any credential is sent. An unknown key is refused, unless host key
//! checking is off: then [`learn`] appends it to the first file (OpenSSH's
//! `accept-new`). A changed or revoked key is always refused. Supported: plain and hashed (`|1|salt|hash`) host
//! names, `[host]:port` names for ports other than 22, `*`/`?` wildcards and
//! `!` negation, `@revoked` lines, several keys (of several types) per host.
//! `@cert-authority` lines are ignored (host certificates are not supported).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use russh::keys::{HashAlg, PublicKey, PublicKeyBase64};
use sha1::{Digest, Sha1};

/// What the files say about one server key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A line for this host lists this key.
    Trusted,
    /// The key is marked `@revoked`.
    Revoked { file: PathBuf, line: usize },
    /// The host is known, but with other keys.
    Mismatch { file: PathBuf, line: usize },
    /// No line names this host.
    Unknown,
}

/// The `SHA256:...` fingerprint OpenSSH prints for `key`.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The name a host is recorded under: `host`, or `[host]:port` off port 22.
pub(crate) fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key` for `host:port` against every file in order (missing files
/// are skipped). A revoked key wins over everything; a trusting line wins
/// over a mismatching one (the host may have several keys).
pub(crate) fn check(files: &[PathBuf], host: &str, port: u16, key: &PublicKey) -> Verdict {
    let name = host_name(host, port);
    let blob = key.public_key_base64();
    let algo = key.algorithm().to_string();
    let mut trusted = false;
    let mut mismatch = None;
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let Some(entry) = parse_line(line) else {
                continue;
            };
            if !entry.matches(&name) {
                continue;
            }
            let same_key = entry.key_b64 == blob;
            match entry.marker {
                Marker::Revoked if same_key => {
                    return Verdict::Revoked {
                        file: file.clone(),
                        line: i + 1,
                    };
                }
                Marker::Revoked | Marker::CertAuthority => {}
                Marker::None if same_key => trusted = true,
                Marker::None => {
                    // OpenSSH only calls it a changed key when the types agree;
                    // a key of another type is still not trusted.
                    if mismatch.is_none() || entry.key_type == algo {
                        mismatch = Some(Verdict::Mismatch {
                            file: file.clone(),
                            line: i + 1,
                        });
                    }
                }
            }
        }
    }
    if trusted {
        Verdict::Trusted
    } else {
        mismatch.unwrap_or(Verdict::Unknown)
    }
}

#[derive(Debug, PartialEq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug)]
struct Entry<'a> {
    marker: Marker,
    hosts: &'a str,
    key_type: &'a str,
    key_b64: &'a str,
}

fn parse_line(line: &str) -> Option<Entry<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut parts = line.split_whitespace();
    let mut first = parts.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = parts.next()?;
    }
    let key_type = parts.next()?;
    let key_b64 = parts.next()?;
    Some(Entry {
        marker,
        hosts: first,
        key_type,
        key_b64,
    })
}

impl Entry<'_> {
    fn matches(&self, name: &str) -> bool {
        if let Some(hashed) = self.hosts.strip_prefix("|1|") {
            return hashed_matches(hashed, name);
        }
        let mut positive = false;
        for pat in self.hosts.split(',') {
            if let Some(neg) = pat.strip_prefix('!') {
                if wildcard(neg, name) {
                    return false;
                }
            } else if wildcard(pat, name) {
                positive = true;
            }
        }
        positive
    }
}

/// `salt|hash`, both base64: HMAC-SHA1 keyed with the salt over the name.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    hmac_sha1(&salt, name.as_bytes()).as_slice() == hash.as_slice()
}

/// HMAC (RFC 2104) over SHA-1; tiny enough to not need a crate.
pub(crate) fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha1::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// Glob with `*` and `?`, as OpenSSH's `match_pattern`.
fn wildcard(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

/// Appends `key` for `host:port` to `file` (creating it and its directory,
/// private to the user, as ssh does): what `accept-new` does with a key no
/// file knows.
pub(crate) fn learn(file: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    // Start on a new line even if the file does not end with one.
    let needs_newline = std::fs::read(file)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let line = format!(
        "{}{} {} {}\n",
        if needs_newline { "\n" } else { "" },
        host_name(host, port),
        key.algorithm(),
        key.public_key_base64()
    );
    f.write_all(line.as_bytes())
}

/// A display list of files, for error messages.
pub(crate) fn describe(files: &[PathBuf]) -> String {
    let shown: Vec<String> = files
        .iter()
        .map(|f: &PathBuf| {
            let p: &Path = f;
            if p.exists() {
                p.display().to_string()
            } else {
                format!("{} (missing)", p.display())
            }
        })
        .collect();
    shown.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn file(text: &str) -> (tempfile::TempDir, Vec<PathBuf>) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("known_hosts");
        std::fs::write(&p, text).unwrap();
        (d, vec![p])
    }

    #[test]
    fn hmac_sha1_rfc2202_case_2() {
        let mac = hmac_sha1(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn plain_port_and_wildcards() {
        let (_d, f) = file(&format!(
            "a.example,[b.example]:2222 ssh-ed25519 {ED}\n*.web,!bad.web ssh-ed25519 {ED}\n"
        ));
        assert_eq!(check(&f, "a.example", 22, &key(ED)), Verdict::Trusted);
        assert_eq!(check(&f, "b.example", 2222, &key(ED)), Verdict::Trusted);
        assert_eq!(check(&f, "b.example", 22, &key(ED)), Verdict::Unknown);
        assert_eq!(check(&f, "x.web", 22, &key(ED)), Verdict::Trusted);
        assert_eq!(check(&f, "bad.web", 22, &key(ED)), Verdict::Unknown);
        assert!(matches!(
            check(&f, "a.example", 22, &key(ED2)),
            Verdict::Mismatch { line: 1, .. }
        ));
    }

    #[test]
    fn hashed_entries() {
        // Made with `ssh-keygen -H` for host "hashed.example".
        let salt = [7u8; 20];
        let b64 = base64::engine::general_purpose::STANDARD;
        let h = hmac_sha1(&salt, b"hashed.example");
        let line = format!(
            "|1|{}|{} ssh-ed25519 {ED}\n",
            b64.encode(salt),
            b64.encode(h)
        );
        let (_d, f) = file(&line);
        assert_eq!(check(&f, "hashed.example", 22, &key(ED)), Verdict::Trusted);
        assert_eq!(check(&f, "other.example", 22, &key(ED)), Verdict::Unknown);
    }

    #[test]
    fn revoked_wins() {
        let (_d, f) = file(&format!(
            "h ssh-ed25519 {ED}\n@revoked * ssh-ed25519 {ED}\n"
        ));
        assert!(matches!(
            check(&f, "h", 22, &key(ED)),
            Verdict::Revoked { line: 2, .. }
        ));
    }

    #[test]
    fn learned_keys_are_trusted_after() {
        let d = tempfile::tempdir().unwrap();
        let f = vec![d.path().join("sub/known_hosts")];
        assert_eq!(check(&f, "h", 2222, &key(ED)), Verdict::Unknown);
        learn(&f[0], "h", 2222, &key(ED)).unwrap();
        assert_eq!(check(&f, "h", 2222, &key(ED)), Verdict::Trusted);
        assert!(matches!(
            check(&f, "h", 2222, &key(ED2)),
            Verdict::Mismatch { line: 1, .. }
        ));
        let text = std::fs::read_to_string(&f[0]).unwrap();
        assert!(text.starts_with("[h]:2222 ssh-ed25519 "), "{text}");
    }

    #[test]
    fn several_keys_per_host() {
        let (_d, f) = file(&format!("h ssh-ed25519 {ED2}\nh ssh-ed25519 {ED}\n"));
        assert_eq!(check(&f, "h", 22, &key(ED)), Verdict::Trusted);
    }
}
