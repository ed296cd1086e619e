//! What `keel vault …` does to files, as ansible-vault's `VaultEditor` does it:
//! encrypt and decrypt in place or to `--output` (`-` is stdin/stdout), view,
//! rekey, edit and create through `$EDITOR`, and the YAML block
//! `encrypt_string` prints. The binary only parses arguments and calls these.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::cipher::{is_encrypted, Envelope};
use super::{Keyring, VaultError, VaultSecret};

/// A file operation's error: I/O on a path, the editor, or the vault itself.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0} exists, please use 'edit' instead")]
    Exists(String),
    #[error("Unable to execute the command \"{command}\": {detail}")]
    Editor { command: String, detail: String },
    #[error("{error} for {file}")]
    Vault { file: String, error: VaultError },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |error| FileError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn vault_err(file: &str) -> impl FnOnce(VaultError) -> FileError + '_ {
    move |error| FileError::Vault {
        file: file.to_string(),
        error,
    }
}

/// Reads a file, or stdin for `-`.
pub fn read_data(file: &str) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let mut buf = Zeroizing::new(Vec::new());
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(io(Path::new("<stdin>")))?;
    } else {
        let path = Path::new(file);
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(io(path))?;
    }
    Ok(buf)
}

/// Writes a file (`-` is stdout) through a temporary file and a rename, so a
/// crash never leaves half a vault. An existing file keeps its mode; a new one
/// is 0600, as ansible-vault makes it.
pub fn write_data(file: &str, data: &[u8]) -> Result<(), FileError> {
    if file == "-" {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(data)
            .and_then(|_| out.flush())
            .map_err(io(Path::new("<stdout>")));
    }
    let path = Path::new(file);
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mode = std::fs::metadata(&real)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let dir = real
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.keel-vault-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.sync_all()
        })
        .and_then(|_| std::fs::rename(&tmp, &real));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io(&real))
}

/// `encrypt`: a file (or stdin) to a vault, in place or to `output`.
pub fn encrypt_file(
    file: &str,
    output: Option<&str>,
    ring: &Keyring,
    encrypt_id: Option<&str>,
) -> Result<(), FileError> {
    let plain = read_data(file)?;
    let text = ring.encrypt(&plain, encrypt_id).map_err(vault_err(file))?;
    write_data(output.unwrap_or(file), text.as_bytes())
}

/// `decrypt`: a vault (or stdin) to its plaintext, in place or to `output`.
pub fn decrypt_file(file: &str, output: Option<&str>, ring: &Keyring) -> Result<(), FileError> {
    let plain = plaintext(file, ring)?;
    write_data(output.unwrap_or(file), &plain)
}

/// `view`: the plaintext of a vault.
pub fn plaintext(file: &str, ring: &Keyring) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let data = read_data(file)?;
    let text = String::from_utf8_lossy(&data);
    let (plain, _) = ring.decrypt(&text).map_err(vault_err(file))?;
    Ok(Zeroizing::new(plain))
}

/// `rekey`: opens a vault with `ring` and seals it again with `new`, labelled
/// with `new`'s label.
pub fn rekey_file(file: &str, ring: &Keyring, new: &VaultSecret) -> Result<(), FileError> {
    let plain = plaintext(file, ring)?;
    let again = ring.with_only(new.clone());
    let text = again.encrypt(&plain, None).map_err(vault_err(file))?;
    write_data(file, text.as_bytes())
}

/// `create`: a new vault written in `$EDITOR`. Nothing is written when the
/// editor leaves the file empty.
pub fn create_file(
    file: &str,
    ring: &Keyring,
    encrypt_id: Option<&str>,
    editor: &str,
) -> Result<(), FileError> {
    if Path::new(file).is_file() {
        return Err(FileError::Exists(file.to_string()));
    }
    if let Some(dir) = Path::new(file)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let secret = ring
        .encrypting_secret(encrypt_id)
        .map_err(vault_err(file))?;
    let edited = edit_in_temp(file, &[], editor)?;
    if edited.is_empty() {
        return Ok(());
    }
    let one = ring.with_only(secret.clone());
    let text = one.encrypt(&edited, None).map_err(vault_err(file))?;
    write_data(file, text.as_bytes())
}

/// `edit`: decrypts into a private temporary file, runs `$EDITOR` on it and
/// seals the result again with the secret that opened it, under the
/// envelope's label. An unchanged plaintext leaves the file alone.
pub fn edit_file(file: &str, ring: &Keyring, editor: &str) -> Result<(), FileError> {
    let data = read_data(file)?;
    let text = String::from_utf8_lossy(&data).into_owned();
    let (plain, used) = ring.decrypt(&text).map_err(vault_err(file))?;
    let plain = Zeroizing::new(plain);
    let env = Envelope::parse(&text).map_err(vault_err(file))?;
    let edited = edit_in_temp(file, &plain, editor)?;
    if *edited == *plain {
        return Ok(());
    }
    let secret = ring
        .secrets
        .iter()
        .find(|s| s.id == used)
        .ok_or(VaultError::NoEncryptSecret)
        .map_err(vault_err(file))?;
    // The envelope keeps its own label (and so its version): a 1.1 file stays 1.1.
    let label = env
        .vault_id
        .unwrap_or_else(|| super::DEFAULT_ID.to_string());
    let one = ring.with_only(secret.relabelled(label));
    let sealed = one.encrypt(&edited, None).map_err(vault_err(file))?;
    write_data(file, sealed.as_bytes())
}

/// Runs the editor on a 0600 temporary file holding `initial` and returns
/// what it left there; the temporary file is overwritten and removed.
fn edit_in_temp(file: &str, initial: &[u8], editor: &str) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let ext = Path::new(file)
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let tmp = tempfile_in_tmp(&ext)?;
    let path = tmp.path().to_path_buf();
    std::fs::write(&path, initial).map_err(io(&path))?;
    let mut words = shell_words::split(editor).map_err(|e| FileError::Editor {
        command: editor.to_string(),
        detail: e.to_string(),
    })?;
    if words.is_empty() {
        words.push("vi".into());
    }
    let status = std::process::Command::new(&words[0])
        .args(&words[1..])
        .arg(&path)
        .status()
        .map_err(|e| FileError::Editor {
            command: format!("{editor} {}", path.display()),
            detail: e.to_string(),
        })?;
    // ansible-vault ignores the editor's exit status too: what counts is the file.
    let _ = status;
    let mut out = Zeroizing::new(Vec::new());
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut out))
        .map_err(io(&path))?;
    let _ = std::fs::write(&path, vec![0u8; out.len()]);
    drop(tmp);
    if is_encrypted(&out) {
        return Err(FileError::Vault {
            file: file.to_string(),
            error: VaultError::AlreadyEncrypted,
        });
    }
    Ok(out)
}

/// A private temporary file, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_in_tmp(ext: &str) -> Result<TempFile, FileError> {
    let dir = std::env::temp_dir();
    for _ in 0..16 {
        let n: u64 = rand::random();
        let path = dir.join(format!("keel-vault-{n:016x}{ext}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => return Ok(TempFile(path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Err(io(&dir)(std::io::Error::other(
        "no free temporary file name",
    )))
}

/// The YAML `encrypt_string` prints: `name: !vault |` (or a bare `!vault |`)
/// and the vault text indented by ten spaces.
pub fn format_yaml(vault_text: &str, name: Option<&str>) -> String {
    let mut out = match name {
        Some(n) => format!("{n}: !vault |"),
        None => "!vault |".to_string(),
    };
    for line in vault_text.lines() {
        out.push('\n');
        out.push_str("          ");
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_then_decrypt_in_place_keeps_the_bytes_and_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.yml");
        std::fs::write(&f, b"a: 1\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let ring = Keyring::of(vec![VaultSecret::new("default", b"pw".to_vec())]);
        let name = f.to_str().unwrap();
        encrypt_file(name, None, &ring, None).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("$ANSIBLE_VAULT;1.1;AES256\n"), "{text}");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let again = encrypt_file(name, None, &ring, None).unwrap_err();
        assert!(
            again.to_string().contains("input is already encrypted"),
            "{again}"
        );
        decrypt_file(name, None, &ring).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"a: 1\n");
    }

    #[test]
    fn edit_runs_the_editor_and_keeps_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.yml");
        let ring = Keyring::of(vec![VaultSecret::new("prod", b"pw".to_vec())]);
        std::fs::write(&f, ring.encrypt(b"old\n", None).unwrap()).unwrap();
        let editor = "sh -c 'echo new >> \"$0\"'";
        edit_file(f.to_str().unwrap(), &ring, editor).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("$ANSIBLE_VAULT;1.2;AES256;prod\n"),
            "{text}"
        );
        assert_eq!(ring.decrypt(&text).unwrap().0, b"old\nnew\n");
    }

    #[test]
    fn encrypt_string_yaml_is_indented_by_ten() {
        let y = format_yaml("$ANSIBLE_VAULT;1.1;AES256\nabcd\n", Some("pw"));
        assert_eq!(
            y,
            "pw: !vault |\n          $ANSIBLE_VAULT;1.1;AES256\n          abcd"
        );
    }
}
