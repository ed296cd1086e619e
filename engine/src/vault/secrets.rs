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
    /// `vault_identity_list` (`ANSIBLE_VAULT_IDENTITY_LIST`): ids tried
    /// before the command line's.
    pub identity_list: Vec<String>,
    /// `vault_id_match` (`ANSIBLE_VAULT_ID_MATCH`): only a secret labelled
    /// like the envelope may open it.
    pub id_match: bool,
    /// `vault_encrypt_salt` (`ANSIBLE_VAULT_ENCRYPT_SALT`): a fixed salt, so
    /// encrypting the same text twice gives the same vault.
    pub salt: Option<Vec<u8>>,
    /// `vault_password_file` as the configuration resolved it (`ansible.cfg`
    /// or `ANSIBLE_VAULT_PASSWORD_FILE`); when unset the environment variable
    /// is read directly.
    pub configured_password_file: Option<PathBuf>,
}

impl SecretOptions {
    /// The configuration ansible-core reads from the environment for these
    /// (its `ansible.cfg` keys have the same meaning).
    pub fn with_env(mut self) -> SecretOptions {
        if let Ok(list) = std::env::var("ANSIBLE_VAULT_IDENTITY_LIST") {
            self.identity_list = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(salt) = std::env::var_os("ANSIBLE_VAULT_ENCRYPT_SALT").filter(|s| !s.is_empty())
        {
            self.salt = Some(std::os::unix::ffi::OsStrExt::as_bytes(salt.as_os_str()).to_vec());
        }
        if let Ok(v) = std::env::var("ANSIBLE_VAULT_ID_MATCH") {
            self.id_match = matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on" | "y" | "t"
            );
        }
        self
    }

    /// The `label@source` list ansible-core builds: the configured identity
    /// list, then `--vault-id`s, then
    /// the password files (the environment's last), then the prompt.
    /// `auto_prompt` adds a prompt when nothing else was given (what
    /// `ansible-vault` does; `ansible-playbook` does not).
    pub fn slugs(&self, auto_prompt: bool) -> Vec<VaultIdSpec> {
        let mut out: Vec<VaultIdSpec> = self
            .identity_list
            .iter()
            .chain(&self.vault_ids)
            .map(|s| VaultIdSpec::parse(s))
            .collect();
        let mut files = self.password_files.clone();
        if let Some(f) = &self.configured_password_file {
            files.push(f.clone());
        } else if let Some(env) =
            std::env::var_os("ANSIBLE_VAULT_PASSWORD_FILE").filter(|v| !v.is_empty())
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

/// Reads every secret `opts` names, in ansible-core's order.
/// `new_password` asks twice (create, encrypt, rekey's new password) with
/// ansible-vault's "New" prompts.
///
/// As in ansible-core, a password file that is missing or fails to load is a
/// warning (returned with the keyring) and the next source is tried; the last
/// such error is returned only when no source gave a secret. A prompt that
/// fails is an error at once.
pub fn load_secrets(
    opts: &SecretOptions,
    auto_prompt: bool,
    new_password: bool,
    prompt: Prompter<'_>,
) -> Result<(Keyring, Vec<String>), VaultError> {
    let mut ring = Keyring {
        id_match: opts.id_match,
        salt: opts.salt.clone(),
        ..Keyring::default()
    };
    let mut warnings = Vec::new();
    let mut last_error = None;
    for spec in opts.slugs(auto_prompt) {
        if spec.is_prompt() {
            let secret = ask(&spec, new_password, prompt)?;
            ring.secrets.push(VaultSecret::new(spec.label(), secret));
            continue;
        }
        let shown_label = spec.label.as_deref().unwrap_or("None");
        let path = Path::new(&spec.source);
        if let Err(e) = check_source(path) {
            warnings.push(format!(
                "Error getting vault password file ({shown_label}): {e}"
            ));
            last_error = Some(e);
            continue;
        }
        match read_source(path, spec.label.as_deref(), &ring) {
            Ok(secret) => ring.secrets.push(VaultSecret::new(spec.label(), secret)),
            Err(e) => {
                warnings.push(format!(
                    "Error in vault password file loading ({shown_label}): {e}"
                ));
                last_error = Some(e);
            }
        }
    }
    match last_error {
        Some(e) if ring.secrets.is_empty() => Err(e),
        _ => Ok((ring, warnings)),
    }
}

/// What ansible-core checks before reading a password source: it exists and
/// is not a directory.
fn check_source(path: &Path) -> Result<(), VaultError> {
    let meta =
        std::fs::metadata(path).map_err(|_| VaultError::PasswordFileMissing(path.to_path_buf()))?;
    if meta.is_dir() {
        return Err(VaultError::PasswordFileIsDir(path.to_path_buf()));
    }
    Ok(())
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
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 != 0 {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let client = stem.ends_with("-client");
        // Run by its full path: a bare name must not be looked up in PATH.
        let exe = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut cmd = Command::new(&exe);
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
    /// Only secrets labelled like the envelope are tried (`vault_id_match`).
    pub id_match: bool,
    /// A fixed salt for encrypting, instead of a random one.
    pub salt: Option<Vec<u8>>,
}

impl Keyring {
    /// A keyring of these secrets, tried in order.
    pub fn of(secrets: Vec<VaultSecret>) -> Keyring {
        Keyring {
            secrets,
            ..Keyring::default()
        }
    }

    /// This keyring's settings (salt, id matching) with one secret only.
    pub fn with_only(&self, secret: VaultSecret) -> Keyring {
        Keyring {
            secrets: vec![secret],
            ..self.clone()
        }
    }

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
            .filter(|s| !self.id_match && Some(s.id.as_str()) != wanted);
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
        Ok(match &self.salt {
            Some(salt) => {
                cipher::seal_with_salt(plaintext, &secret.password, Some(&secret.id), salt)
            }
            None => cipher::seal(plaintext, &secret.password, Some(&secret.id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labelled_secret_is_tried_first_then_the_others() {
        let text = cipher::seal(b"x", b"right", Some("prod"));
        let ring = Keyring::of(vec![
            VaultSecret::new("dev", b"wrong".to_vec()),
            VaultSecret::new("other", b"right".to_vec()),
        ]);
        // No secret is labelled `prod`: the others are still tried, in order.
        assert_eq!(
            ring.decrypt(&text).unwrap(),
            (b"x".to_vec(), "other".to_string())
        );
        let ring = Keyring::of(vec![VaultSecret::new("dev", b"wrong".to_vec())]);
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
            identity_list: vec!["cfg@d".into()],
            ..Default::default()
        };
        let got: Vec<(String, String)> = opts
            .slugs(false)
            .into_iter()
            .map(|s| (s.label().to_string(), s.source))
            .collect();
        // ANSIBLE_VAULT_PASSWORD_FILE, when the environment sets it, sits
        // between the files and the prompt.
        assert_eq!(
            got[..4],
            [
                ("cfg".to_string(), "d".to_string()),
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

    #[test]
    fn id_match_tries_only_the_envelopes_label() {
        let text = cipher::seal(b"x", b"pw", Some("prod"));
        let mut ring = Keyring::of(vec![VaultSecret::new("default", b"pw".to_vec())]);
        assert!(ring.decrypt(&text).is_ok());
        ring.id_match = true;
        assert!(matches!(ring.decrypt(&text), Err(VaultError::NoMatch)));
    }

    #[test]
    fn a_fixed_salt_gives_the_same_vault_twice() {
        let mut ring = Keyring::of(vec![VaultSecret::new("default", b"pw".to_vec())]);
        assert_ne!(
            ring.encrypt(b"x", None).unwrap(),
            ring.encrypt(b"x", None).unwrap()
        );
        ring.salt = Some(b"salty".to_vec());
        assert_eq!(
            ring.encrypt(b"x", None).unwrap(),
            ring.encrypt(b"x", None).unwrap()
        );
    }

    #[test]
    fn a_missing_file_warns_when_another_source_works_and_fails_when_none_does() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "pw\n").unwrap();
        // A client script is asked for its label.
        let client = dir.path().join("pass-client.sh");
        std::fs::write(
            &client,
            "#!/bin/sh\n[ \"$1 $2\" = \"--vault-id prod\" ] && echo prodpw\n",
        )
        .unwrap();
        std::fs::set_permissions(&client, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let opts = SecretOptions {
            vault_ids: vec![
                "a@/nonexistent/pw".into(),
                format!("b@{}", good.display()),
                format!("prod@{}", client.display()),
            ],
            ..Default::default()
        };
        let mut no_prompt = |_: &str| -> std::io::Result<String> { panic!("no prompt expected") };
        let (ring, warnings) = load_secrets(&opts, false, false, &mut no_prompt).unwrap();
        let ids: Vec<&str> = ring.secrets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "prod"]);
        assert_eq!(ring.secrets[1].password.as_slice(), b"prodpw");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("Error getting vault password file (a): "));
        let only_missing = SecretOptions {
            vault_ids: vec!["a@/nonexistent/pw".into()],
            ..Default::default()
        };
        assert!(matches!(
            load_secrets(&only_missing, false, false, &mut no_prompt),
            Err(VaultError::PasswordFileMissing(_))
        ));
    }
}
