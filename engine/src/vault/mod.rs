//! Ansible Vault: reading and writing `$ANSIBLE_VAULT;1.1;AES256` and
//! `$ANSIBLE_VAULT;1.2;AES256;<vault-id>` texts, compatible both ways with
//! ansible-vault.
//!
//! Where it sits in the flow: the CLI reads the secrets (`--vault-id`,
//! `--vault-password-file`, `--ask-vault-pass`) into a [`Keyring`] and
//! [`install`]s it before anything is loaded. From then on every reader that
//! can meet a vault asks this module: the YAML loader for whole vaulted files
//! and inline `!vault` scalars (so vars files, `include_vars`,
//! `group_vars`/`host_vars`, `vars_files` and playbooks all decrypt at one
//! point), the `unvault` lookup and the modules that read a controller file
//! (`copy`/`template` `src`) through [`read_file`]. `keel vault …` uses the
//! keyring directly.
//!
//! Layout: `cipher.rs` is the text format and the AES256 cipher (password in,
//! vault text out and back); `secrets.rs` is where passwords come from and the
//! order they are tried in; `files.rs` is what `keel vault` does to files.
//!
//! Decrypted inline values become `!unsafe` strings: ansible-core never
//! templates a vaulted value. They are also remembered here with their
//! ciphertext, so the `vault_encrypted` test can recognise them and
//! `keel inventory` can print them the way ansible-inventory does
//! (`{"__ansible_vault": …}`) instead of showing the plaintext. Every
//! decrypted string of some length is remembered for [`mask`], which
//! `output::VaultMask` applies to diffs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use zeroize::Zeroizing;

mod cipher;
pub mod files;
mod secrets;

pub use cipher::{is_encrypted, seal, seal_with_salt, Envelope, CIPHER, HEADER};
pub use secrets::{
    load_secrets, Keyring, Prompter, SecretOptions, VaultIdSpec, VaultSecret, PROMPT_ASK_VAULT_PASS,
};

/// The label of a secret given without one, and of a 1.1 envelope.
pub const DEFAULT_ID: &str = "default";

/// Why a vault could not be read or written. The messages follow
/// ansible-core's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Input is not vault encrypted data")]
    NotEncrypted,
    #[error("input is already encrypted")]
    AlreadyEncrypted,
    #[error("Vault format error: {0}")]
    Format(&'static str),
    #[error("Vault format unhexlify error: {0}")]
    Unhexlify(&'static str),
    #[error("Cipher '{0}' could not be found")]
    UnknownCipher(String),
    /// One secret did not open an envelope (its HMAC did not match).
    #[error("HMAC verification failed: the password does not match")]
    BadSecret,
    #[error("Attempting to decrypt but no vault secrets found")]
    NoSecrets,
    #[error("Decryption failed (no vault secrets were found that could decrypt)")]
    NoMatch,
    #[error("A vault password must be specified to encrypt data")]
    NoEncryptSecret,
    #[error(
        "Did not find a match for --encrypt-vault-id={id} in the known vault-ids [{}]",
        python_list(known)
    )]
    NoEncryptId { id: String, known: Vec<String> },
    #[error("The vault password file {} was not found", .0.display())]
    PasswordFileMissing(PathBuf),
    #[error("The vault password file provided '{}' can not be a directory", .0.display())]
    PasswordFileIsDir(PathBuf),
    #[error("Could not read vault password file {}: {}", .0.display(), .1)]
    ReadPasswordFile(PathBuf, std::io::Error),
    #[error("Problem running vault password script {}: {detail}", path.display())]
    Script { path: PathBuf, detail: String },
    #[error("Invalid vault password was provided from {0}")]
    EmptyPassword(String),
    #[error("Passwords do not match")]
    PasswordsDiffer,
    #[error("EOFError (ctrl-d) or no terminal on prompt for ({0}): {1}")]
    Prompt(String, std::io::Error),
    #[error("the decrypted content is not UTF-8 text")]
    NotText,
    /// Any of the above, for one file.
    #[error("{error} on {}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<VaultError>,
    },
}

/// A list of labels as Python prints one (`['a', 'b']` without brackets),
/// which is how ansible-core's messages show it.
fn python_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl VaultError {
    /// No secret, or none that fits: the user should give (another) password.
    pub fn wants_password(&self) -> bool {
        match self {
            VaultError::InFile { error, .. } => error.wants_password(),
            VaultError::NoSecrets | VaultError::NoMatch => true,
            _ => false,
        }
    }

    /// Names the file this error is about (once).
    pub fn in_file(self, path: &Path) -> VaultError {
        match self {
            e @ VaultError::InFile { .. } => e,
            e => VaultError::InFile {
                path: path.to_path_buf(),
                error: Box::new(e),
            },
        }
    }
}

fn slot() -> &'static RwLock<Arc<Keyring>> {
    static KEYRING: OnceLock<RwLock<Arc<Keyring>>> = OnceLock::new();
    KEYRING.get_or_init(Default::default)
}

/// Makes `ring` the secrets every later load decrypts with (process-wide:
/// the secrets of a run are a property of the invocation, like its flags).
pub fn install(ring: Keyring) {
    *slot().write() = Arc::new(ring);
    opened().lock().clear();
}

/// The installed secrets (empty until [`install`]).
pub fn installed() -> Arc<Keyring> {
    slot().read().clone()
}

/// Decrypts a vault text with the installed secrets. Each text is opened
/// once per keyring: key derivation is deliberately slow, and the same vars
/// file is read again for every host that loads it.
pub fn decrypt(text: &str) -> Result<Vec<u8>, VaultError> {
    let key = text.trim();
    if let Some(plain) = opened().lock().get(key) {
        return Ok(plain.to_vec());
    }
    let (plain, _) = installed().decrypt(text)?;
    opened()
        .lock()
        .insert(key.to_string(), Zeroizing::new(plain.clone()));
    Ok(plain)
}

fn opened() -> &'static Mutex<HashMap<String, Zeroizing<Vec<u8>>>> {
    static OPENED: OnceLock<Mutex<HashMap<String, Zeroizing<Vec<u8>>>>> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// The text of a file the YAML loader read: decrypted when it is a vault,
/// unchanged otherwise.
pub fn open_text(path: &Path, text: String) -> Result<String, VaultError> {
    if !is_encrypted(text.as_bytes()) {
        return Ok(text);
    }
    let plain = decrypt(&text).map_err(|e| e.in_file(path))?;
    String::from_utf8(plain).map_err(|_| VaultError::NotText.in_file(path))
}

/// A controller file's bytes, decrypted when it is a vault (the `unvault`
/// lookup, `copy`/`template` sources).
pub fn read_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let data = std::fs::read(path).map_err(|e| ReadError::Io(path.to_path_buf(), e))?;
    if !is_encrypted(&data[..data.len().min(HEADER.len())]) {
        return Ok(data);
    }
    let text = String::from_utf8_lossy(&data);
    let plain = decrypt(&text).map_err(|e| ReadError::Vault(e.in_file(path)))?;
    // Diffs of what is written from it mask its lines.
    if let Ok(text) = std::str::from_utf8(&plain) {
        text.lines().for_each(remember_secret);
    }
    Ok(plain)
}

/// [`read_file`]'s error: the file could not be read, or not decrypted.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("could not read {}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Vault(VaultError),
}

fn inline_values() -> &'static Mutex<HashMap<String, Arc<str>>> {
    static SEEN: OnceLock<Mutex<HashMap<String, Arc<str>>>> = OnceLock::new();
    SEEN.get_or_init(Default::default)
}

/// Records that `plaintext` came from the inline vault `ciphertext`.
pub fn remember_inline(plaintext: &str, ciphertext: &str) {
    remember_secret(plaintext);
    inline_values()
        .lock()
        .insert(plaintext.to_string(), Arc::from(ciphertext));
}

/// Shorter decrypted strings are not masked in diffs: `yes`, `80` or `root`
/// out of a vaulted file would blank half a diff and hide nothing.
const MASK_MIN_LEN: usize = 5;

/// What a masked value is shown as.
pub const MASK: &str = "********";

fn secret_texts() -> &'static RwLock<std::collections::BTreeSet<String>> {
    static SECRETS: OnceLock<RwLock<std::collections::BTreeSet<String>>> = OnceLock::new();
    SECRETS.get_or_init(Default::default)
}

/// Records a string that came out of a vault (an inline value, or a string
/// in a whole vaulted file), so [`mask`] can hide it.
pub fn remember_secret(plaintext: &str) {
    let plaintext = plaintext.trim();
    if plaintext.chars().count() < MASK_MIN_LEN {
        return;
    }
    let known = secret_texts().read().contains(plaintext);
    if !known {
        secret_texts().write().insert(plaintext.to_string());
    }
}

/// `text` with every decrypted value of this run replaced by [`MASK`]. Diffs
/// go through this: a task that writes a secret into a file should not print
/// it with `--diff` (ansible-core does; Keel does not, on purpose).
pub fn mask(text: &str) -> std::borrow::Cow<'_, str> {
    let secrets = secret_texts().read();
    let mut out = std::borrow::Cow::Borrowed(text);
    // Longest first, so a secret containing another is masked whole.
    let mut found: Vec<&String> = secrets
        .iter()
        .filter(|s| text.contains(s.as_str()))
        .collect();
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in found {
        if out.contains(s.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(s.as_str(), MASK));
        }
    }
    out
}

/// The value of an inline vault: a `!vault` YAML scalar, or
/// `{"__ansible_vault": …}` in inventory JSON. Opened with the installed
/// secrets, it is its plaintext as an `!unsafe` string (a vaulted value is
/// never templated), remembered with its ciphertext for listings and diffs.
/// Otherwise it is an invalid value that fails whatever template uses it,
/// naming `place`, as ansible-core fails only when the value is used.
pub fn inline_value(ciphertext: &str, place: &dyn std::fmt::Display) -> minijinja::Value {
    match decrypt(ciphertext).map(String::from_utf8) {
        Ok(Ok(plain)) => {
            remember_inline(&plain, ciphertext);
            crate::vars::unsafe_string(&plain)
        }
        outcome => {
            let why = match outcome {
                Err(e) => e.to_string(),
                _ => VaultError::NotText.to_string(),
            };
            minijinja::Value::from(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("Attempt to use undecryptable variable: {why} ({place})"),
            ))
        }
    }
}

/// The ciphertext an inline vault value was decrypted from, when `plaintext`
/// is one. Callers check the value is `!unsafe` first, as every decrypted
/// inline value is.
pub fn inline_ciphertext(plaintext: &str) -> Option<Arc<str>> {
    inline_values().lock().get(plaintext).cloned()
}

/// The `vault_encrypted` test: a value decrypted from an inline `!vault` (an
/// `!unsafe` string this run remembered). An undecryptable one never gets
/// here: using it in a template is already an error, as in ansible-core.
pub fn is_vaulted_value(v: &minijinja::Value) -> bool {
    crate::vars::is_unsafe(v)
        && v.as_str()
            .is_some_and(|s| inline_ciphertext(s).is_some() || is_encrypted(s.as_bytes()))
}

/// The `vaulted_file` test: whether the file at `path` starts like a vault.
pub fn is_vaulted_file(path: &Path) -> std::io::Result<bool> {
    let mut head = [0u8; HEADER.len()];
    let mut f = std::fs::File::open(path)?;
    let mut got = 0;
    while got < head.len() {
        match std::io::Read::read(&mut f, &mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(is_encrypted(&head[..got]))
}

/// A value as JSON, with every inline vault value shown as ansible-inventory
/// shows it: `{"__ansible_vault": "<ciphertext>"}` instead of its plaintext.
pub fn to_listing_json(v: &minijinja::Value) -> serde_json::Value {
    use minijinja::value::ValueKind;
    use serde_json::Value as Json;
    match v.kind() {
        ValueKind::String if crate::vars::is_unsafe(v) => {
            let text = v.as_str().unwrap_or_default();
            let ciphertext = inline_ciphertext(text)
                .map(|c| c.to_string())
                .or_else(|| is_encrypted(text.as_bytes()).then(|| text.to_string()));
            match ciphertext {
                Some(c) => {
                    let mut m = serde_json::Map::new();
                    let c = if c.ends_with('\n') {
                        c
                    } else {
                        format!("{c}\n")
                    };
                    m.insert("__ansible_vault".into(), Json::String(c));
                    Json::Object(m)
                }
                None => Json::String(text.to_string()),
            }
        }
        // The common case, without going through serde.
        ValueKind::String => Json::String(v.as_str().unwrap_or_default().to_string()),
        ValueKind::Map => {
            let mut m = serde_json::Map::new();
            if let Ok(keys) = v.try_iter() {
                for k in keys {
                    let item = v.get_item(&k).unwrap_or_default();
                    m.insert(k.to_string(), to_listing_json(&item));
                }
            }
            Json::Object(m)
        }
        ValueKind::Seq => Json::Array(
            v.try_iter()
                .map(|items| items.map(|i| to_listing_json(&i)).collect())
                .unwrap_or_default(),
        ),
        _ => serde_json::to_value(v).unwrap_or(Json::Null),
    }
}

/// The label the `vault` and `unvault` filters use when given none.
pub const FILTER_ID: &str = "filter_default";

/// The `vault` filter: `data` sealed under `secret` (a 1.2 envelope labelled
/// `vault_id`, as ansible-core's filter writes it), with a random salt unless
/// one is given.
pub fn filter_vault(data: &str, secret: &str, salt: Option<&str>, vault_id: &str) -> String {
    match salt.filter(|s| !s.is_empty()) {
        Some(salt) => seal_with_salt(
            data.as_bytes(),
            secret.as_bytes(),
            Some(vault_id),
            salt.as_bytes(),
        ),
        None => seal(data.as_bytes(), secret.as_bytes(), Some(vault_id)),
    }
}

/// The `unvault` filter: a vault text opened with `secret`; any other string
/// is returned as it is.
pub fn filter_unvault(value: &str, secret: &str, vault_id: &str) -> Result<String, VaultError> {
    if !is_encrypted(value.trim_start().as_bytes()) {
        return Ok(value.to_string());
    }
    let ring = Keyring::of(vec![VaultSecret::new(vault_id, secret.as_bytes().to_vec())]);
    let (plain, _) = ring.decrypt(value)?;
    Ok(String::from_utf8_lossy(&plain).into_owned())
}
