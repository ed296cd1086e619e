//! Secrets at rest: credentials and webhook keys are sealed with
//! AES-256-GCM under one key kept in a file of the panel's data directory
//! (`automation.key`, 32 random bytes, mode 0600), so a copy of the database
//! alone reveals nothing. Sealed text is `hex(nonce || ciphertext)`, with a
//! fresh random 96-bit nonce per value and the row's purpose as associated
//! data, so a sealed value moved to another column does not open.
//!
//! [`Secret`] carries an opened value through a run in memory; it has no
//! `Debug` or `Display` that shows it. Below every other file of
//! `automation/`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the key file {0} is not 32 bytes long")]
    BadKeyFile(PathBuf),
    #[error(
        "a sealed secret does not open with this panel's key (wrong key file, or altered data)"
    )]
    Open,
    #[error("no randomness available: {0}")]
    Random(String),
}

/// An opened secret, in memory only. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for handing to the engine or a transport.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Seals and opens secrets with the panel's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Arc<Aes256Gcm>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

/// The key file under a data directory.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("automation.key")
}

impl Sealer {
    /// The sealer of `data_dir`: its key file is read, or created (0600)
    /// on first use. Cached per directory for the life of the process.
    pub fn for_data_dir(data_dir: &Path) -> Result<Sealer, SecretError> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Sealer>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(data_dir) {
            return Ok(s.clone());
        }
        let s = Sealer::from_key_file(&key_path(data_dir))?;
        cache.insert(data_dir.to_path_buf(), s.clone());
        Ok(s)
    }

    fn from_key_file(path: &Path) -> Result<Sealer, SecretError> {
        let io = |context: String| move |source| SecretError::Io { context, source };
        let key = match std::fs::read(path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(io(format!("creating {}", dir.display())))?;
                }
                let mut key = vec![0u8; 32];
                getrandom::getrandom(&mut key).map_err(|e| SecretError::Random(e.to_string()))?;
                // create_new: two processes starting at once must not both
                // write a key; the loser reads the winner's.
                use std::os::unix::fs::OpenOptionsExt;
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(mut f) => {
                        f.write_all(&key)
                            .and_then(|_| f.sync_all())
                            .map_err(io(format!("writing {}", path.display())))?;
                        key
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(path).map_err(io(format!("reading {}", path.display())))?
                    }
                    Err(e) => return Err(io(format!("creating {}", path.display()))(e)),
                }
            }
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| SecretError::BadKeyFile(path.to_path_buf()))?;
        Ok(Sealer {
            cipher: Arc::new(Aes256Gcm::new(&Key::<Aes256Gcm>::from(key))),
        })
    }

    /// Seals `plain` for the purpose `aad` (e.g. `credential:vault_password`).
    pub fn seal(&self, aad: &str, plain: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| SecretError::Random(e.to_string()))?;
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(hex::encode(out))
    }

    /// Opens what [`Sealer::seal`] made for the same purpose.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Secret, SecretError> {
        let raw = hex::decode(sealed).map_err(|_| SecretError::Open)?;
        if raw.len() < 12 + 16 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SecretError::Open)?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain)
            .map(Secret)
            .map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::from_key_file(&key_path(dir.path())).unwrap();
        let sealed = s.seal("credential:vault_password", "hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            s.open("credential:vault_password", &sealed)
                .unwrap()
                .expose(),
            "hunter2"
        );
        // Another purpose, an altered byte, or another key: refused.
        assert!(s.open("credential:ssh_key", &sealed).is_err());
        let mut bad = sealed.clone().into_bytes();
        bad[30] = if bad[30] == b'0' { b'1' } else { b'0' };
        assert!(s
            .open(
                "credential:vault_password",
                &String::from_utf8(bad).unwrap()
            )
            .is_err());
        let other = tempfile::tempdir().unwrap();
        let s2 = Sealer::from_key_file(&key_path(other.path())).unwrap();
        assert!(s2.open("credential:vault_password", &sealed).is_err());
        // The key file is kept, private, and reused.
        let meta = std::fs::metadata(key_path(dir.path())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let again = Sealer::from_key_file(&key_path(dir.path())).unwrap();
        assert_eq!(
            again
                .open("credential:vault_password", &sealed)
                .unwrap()
                .expose(),
            "hunter2"
        );
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
