//! Vault secrets: where passwords come from (`--vault-id label@source`,
//! `--vault-password-file`, `--ask-vault-pass`, `ANSIBLE_VAULT_PASSWORD_FILE`)
//! and the [`Keyring`] that tries them on a vault text in ansible-core's order.
//!
//! The CLI builds the keyring once; the YAML loader, lookups and modules only
//! ever see it through [`super::installed`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::cipher::{self, Envelope};
use super::{VaultError, DEFAULT_ID};

/// One labelled password. Its `Debug` never shows the password.
#[derive(Clone)]
pub struct VaultSecret {
    pub id: String,
    password: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSecret")
            .field("id", &self.id)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl VaultSecret {
    pub fn new(id: impl Into<String>, password: impl Into<Vec<u8>>) -> VaultSecret {
        VaultSecret {
            id: id.into(),
            password: Zeroizing::new(password.into()),
        }
    }

    /// The same password under another label.
    pub fn relabelled(&self, id: impl Into<String>) -> VaultSecret {
        VaultSecret {
            id: id.into(),
            password: self.password.clone(),
        }
    }
}

/// What one `--vault-id` names: an optional label and a source (a file, an
/// executable script, or `prompt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultIdSpec {
    pub label: Option<String>,
    pub source: String,
}

impl VaultIdSpec {
    /// `label@source`, or just `source` (labelled `default`), as ansible-core
    /// splits it: at the first `@`.
    pub fn parse(slug: &str) -> VaultIdSpec {
        match slug.split_once('@') {
            Some((label, source)) => VaultIdSpec {
                label: Some(label.to_string()).filter(|l| !l.is_empty()),
                source: source.to_string(),
            },
            None => VaultIdSpec {
                label: None,
                source: slug.to_string(),
            },
        }
    }

    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(DEFAULT_ID)
    }

    pub fn is_prompt(&self) -> bool {
        self.source == "prompt" || self.source == PROMPT_ASK_VAULT_PASS
    }
}

/// The source `--ask-vault-pass` becomes; it prompts "Vault password: ".
pub const PROMPT_ASK_VAULT_PASS: &str = "prompt_ask_vault_pass";

/// What the command line said about vault secrets, in its own terms.
#[derive(Debug, Clone, Default)]
pub struct SecretOptions {
    /// `--vault-id`, in order.
    pub vault_ids: Vec<String>,
    /// `--vault-password-file`, in order; `ANSIBLE_VAULT_PASSWORD_FILE` is
    /// added after them by [`SecretOptions::slugs`].
    pub password_files: Vec<PathBuf>,
    /// `--ask-vault-pass`.
    pub ask_vault_pass: bool,
}

impl SecretOptions {
    /// The `label@source` list ansible-core builds: `--vault-id`s first, then
    /// the password files (the environment's last), then the prompt.
    /// `auto_prompt` adds a prompt when nothing else was given (what
    /// `ansible-vault` does; `ansible-playbook` does not).
    pub fn slugs(&self, auto_prompt: bool) -> Vec<VaultIdSpec> {
        let mut out: Vec<VaultIdSpec> = self
            .vault_ids
            .iter()
            .map(|s| VaultIdSpec::parse(s))
            .collect();
        let mut files = self.password_files.clone();
        if let Some(env) = std::env::var_os("ANSIBLE_VAULT_PASSWORD_FILE").filter(|v| !v.is_empty())
        {
            files.push(PathBuf::from(env));
        }
        for f in files {
            out.push(VaultIdSpec {
                label: None,
                source: f.to_string_lossy().into_owned(),
            });
        }
        if self.ask_vault_pass || (out.is_empty() && auto_prompt) {
            out.push(VaultIdSpec {
                label: None,
                source: PROMPT_ASK_VAULT_PASS.to_string(),
            });
        }
        out
    }
}

/// Asks for a password on the terminal (given by the CLI, so the library never
/// touches a TTY itself).
pub type Prompter<'a> = &'a mut dyn FnMut(&str) -> std::io::Result<String>;

/// Reads every secret `opts` names. `new_password` asks twice (create,
/// encrypt, rekey's new password) with ansible-vault's "New" prompts.
pub fn load_secrets(
    opts: &SecretOptions,
    auto_prompt: bool,
    new_password: bool,
    prompt: Prompter<'_>,
) -> Result<Keyring, VaultError> {
    let mut ring = Keyring::default();
    for spec in opts.slugs(auto_prompt) {
        let secret = if spec.is_prompt() {
            ask(&spec, new_password, prompt)?
        } else {
            read_source(Path::new(&spec.source), spec.label.as_deref(), &ring)?
        };
        ring.secrets.push(VaultSecret::new(spec.label(), secret));
    }
    Ok(ring)
}

fn ask(
    spec: &VaultIdSpec,
    new_password: bool,
    prompt: Prompter<'_>,
) -> Result<Vec<u8>, VaultError> {
    let label = spec.label();
    let prompts: Vec<String> = match (spec.source == PROMPT_ASK_VAULT_PASS, new_password) {
        (true, false) => vec!["Vault password: ".into()],
        (true, true) => vec![
            "New Vault password: ".into(),
            "Confirm New Vault password: ".into(),
        ],
        (false, false) => vec![format!("Vault password ({label}): ")],
        (false, true) => vec![
            format!("New vault password ({label}): "),
            format!("Confirm new vault password ({label}): "),
        ],
    };
    let mut answers = Vec::new();
    for p in &prompts {
        let answer = prompt(p).map_err(|e| VaultError::Prompt(label.to_string(), e))?;
        if answer.is_empty() {
            return Err(VaultError::EmptyPassword("the prompt".into()));
        }
        answers.push(answer);
    }
    if answers.windows(2).any(|w| w[0] != w[1]) {
        return Err(VaultError::PasswordsDiffer);
    }
    Ok(answers.swap_remove(0).into_bytes())
}

/// A password file, or the output of an executable one. A script named
/// `*-client` (with or without an extension) is given `--vault-id <label>`.
/// A password file that is itself vaulted is opened with the secrets read so
/// far, as ansible-core does.
fn read_source(path: &Path, label: Option<&str>, earlier: &Keyring) -> Result<Vec<u8>, VaultError> {
    let shown = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|_| VaultError::PasswordFileMissing(path.to_path_buf()))?;
    if meta.is_dir() {
        return Err(VaultError::PasswordFileIsDir(path.to_path_buf()));
    }
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 != 0 {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let client = stem.ends_with("-client");
        let mut cmd = Command::new(path);
        if client {
            if let Some(label) = label {
                cmd.args(["--vault-id", label]);
            }
            cmd.stderr(Stdio::piped());
        }
        let out = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::inherit())
            .output()
            .map_err(|e| VaultError::Script {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?;
        if client && out.status.code() == Some(2) {
            return Err(VaultError::Script {
                path: path.to_path_buf(),
                detail: format!(
                    "did not find a secret for vault-id={}: {}",
                    label.unwrap_or(DEFAULT_ID),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        if !out.status.success() {
            return Err(VaultError::Script {
                path: path.to_path_buf(),
                detail: format!("exited with {}", out.status),
            });
        }
        let pw = trim_newlines(&out.stdout).to_vec();
        if pw.is_empty() {
            return Err(VaultError::EmptyPassword(format!("script ({shown})")));
        }
        return Ok(pw);
    }
    let mut raw = Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| VaultError::ReadPasswordFile(path.to_path_buf(), e))?;
    let mut pw = raw.trim_ascii().to_vec();
    if cipher::is_encrypted(&pw) {
        let text = String::from_utf8_lossy(&pw).into_owned();
        pw = earlier.decrypt(&text).map_err(|e| e.in_file(path))?.0;
    }
    let pw = trim_newlines(&pw).to_vec();
    if pw.is_empty() {
        return Err(VaultError::EmptyPassword(format!("file ({shown})")));
    }
    Ok(pw)
}

fn trim_newlines(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b'\r' | b'\n'))
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b'\r' | b'\n'))
        .map_or(start, |i| i + 1);
    &b[start..end]
}

/// The secrets of one run, best first.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pub secrets: Vec<VaultSecret>,
}

impl Keyring {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Decrypts a vault text: the secrets labelled like the envelope first,
    /// then every other one (ansible-core's default, `vault_id_match` off).
    /// Returns the plaintext and the label of the secret that opened it.
    pub fn decrypt(&self, text: &str) -> Result<(Vec<u8>, String), VaultError> {
        let env = Envelope::parse(text)?;
        if env.cipher != cipher::CIPHER {
            return Err(VaultError::UnknownCipher(env.cipher));
        }
        if self.secrets.is_empty() {
            return Err(VaultError::NoSecrets);
        }
        let wanted = env.vault_id.as_deref();
        let first = self
            .secrets
            .iter()
            .filter(|s| Some(s.id.as_str()) == wanted);
        let rest = self
            .secrets
            .iter()
            .filter(|s| Some(s.id.as_str()) != wanted);
        for secret in first.chain(rest) {
            match env.open(&secret.password) {
                Ok(plain) => return Ok((plain, secret.id.clone())),
                Err(VaultError::BadSecret) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(VaultError::NoMatch)
    }

    /// The secret to encrypt with: the one labelled `encrypt_id` when given
    /// (an error when none is), otherwise the first.
    pub fn encrypting_secret(&self, encrypt_id: Option<&str>) -> Result<&VaultSecret, VaultError> {
        match encrypt_id {
            Some(id) => {
                self.secrets
                    .iter()
                    .find(|s| s.id == id)
                    .ok_or_else(|| VaultError::NoEncryptId {
                        id: id.to_string(),
                        known: self.secrets.iter().map(|s| s.id.clone()).collect(),
                    })
            }
            None => self.secrets.first().ok_or(VaultError::NoEncryptSecret),
        }
    }

    /// Encrypts with [`Keyring::encrypting_secret`]; a labelled secret gives a
    /// 1.2 envelope carrying its label.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        encrypt_id: Option<&str>,
    ) -> Result<String, VaultError> {
        if cipher::is_encrypted(plaintext) {
            return Err(VaultError::AlreadyEncrypted);
        }
        let secret = self.encrypting_secret(encrypt_id)?;
        Ok(cipher::seal(plaintext, &secret.password, Some(&secret.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labelled_secret_is_tried_first_then_the_others() {
        let text = cipher::seal(b"x", b"right", Some("prod"));
        let ring = Keyring {
            secrets: vec![
                VaultSecret::new("dev", b"wrong".to_vec()),
                VaultSecret::new("other", b"right".to_vec()),
            ],
        };
        // No secret is labelled `prod`: the others are still tried, in order.
        assert_eq!(
            ring.decrypt(&text).unwrap(),
            (b"x".to_vec(), "other".to_string())
        );
        let ring = Keyring {
            secrets: vec![VaultSecret::new("dev", b"wrong".to_vec())],
        };
        assert!(matches!(ring.decrypt(&text), Err(VaultError::NoMatch)));
        assert!(matches!(
            Keyring::default().decrypt(&text),
            Err(VaultError::NoSecrets)
        ));
    }

    #[test]
    fn slugs_follow_ansible_core_order() {
        let opts = SecretOptions {
            vault_ids: vec!["dev@a".into(), "b".into()],
            password_files: vec!["c".into()],
            ask_vault_pass: true,
        };
        let got: Vec<(String, String)> = opts
            .slugs(false)
            .into_iter()
            .map(|s| (s.label().to_string(), s.source))
            .collect();
        // ANSIBLE_VAULT_PASSWORD_FILE, when the environment sets it, sits
        // between the files and the prompt.
        assert_eq!(
            got[..3],
            [
                ("dev".to_string(), "a".to_string()),
                ("default".into(), "b".into()),
                ("default".into(), "c".into()),
            ][..]
        );
        assert_eq!(got.last().unwrap().1, PROMPT_ASK_VAULT_PASS);
    }

    #[test]
    fn a_debug_print_hides_the_password() {
        let s = format!("{:?}", VaultSecret::new("dev", b"topsecret".to_vec()));
        assert!(!s.contains("topsecret"), "{s}");
    }
}
