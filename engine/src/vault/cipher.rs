//! The vault text format and its one cipher, `AES256`: what sits between a
//! password and the `$ANSIBLE_VAULT;…` text the rest of `vault/` passes around.
//!
//! An envelope is a header line (`$ANSIBLE_VAULT;1.1;AES256`, or
//! `$ANSIBLE_VAULT;1.2;AES256;<vault-id>`) followed by the payload in hex,
//! wrapped at 80 columns. The payload, once unhexlified, is three lines:
//! `hex(salt)`, `hex(hmac)`, `hex(ciphertext)`. Keys come from PBKDF2-HMAC-SHA256
//! (10 000 rounds, 32-byte salt) as 80 bytes: the AES-256-CTR key, the HMAC key
//! and the counter's initial block. The plaintext is PKCS#7-padded to 16 bytes
//! before CTR (a stream mode does not need it, but ansible-vault does it) and
//! the HMAC-SHA256 covers the ciphertext only.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit, Mac};
use sha2_11::Sha256;
use zeroize::Zeroizing;

use super::VaultError;

/// The first bytes of every vault text.
pub const HEADER: &str = "$ANSIBLE_VAULT";
/// The one cipher ansible-core writes and reads.
pub const CIPHER: &str = "AES256";
const ROUNDS: u32 = 10_000;
const SALT_LEN: usize = 32;
const KEY_LEN: usize = 32;
const IV_LEN: usize = 16;
const BLOCK: usize = 16;
const WRAP: usize = 80;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// True when `data` starts like a vault text. As in ansible-core, the check
/// is on the header only; anything not ASCII is not a vault.
pub fn is_encrypted(data: &[u8]) -> bool {
    data.is_ascii() && data.starts_with(HEADER.as_bytes())
}

/// A parsed envelope: header fields plus the still-encrypted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `1.1` or `1.2`.
    pub version: String,
    /// Always `AES256` for anything Keel can open.
    pub cipher: String,
    /// The label of a 1.2 envelope. It is not authenticated: it only says
    /// which secret to try first.
    pub vault_id: Option<String>,
    salt: Vec<u8>,
    hmac: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl Envelope {
    /// Parses a vault text (surrounding whitespace and indentation allowed, as
    /// in a `!vault |` block).
    pub fn parse(text: &str) -> Result<Envelope, VaultError> {
        let mut lines = text.trim().lines().map(str::trim);
        let header = lines.next().unwrap_or_default();
        if !is_encrypted(header.as_bytes()) {
            return Err(VaultError::NotEncrypted);
        }
        let fields: Vec<&str> = header.split(';').map(str::trim).collect();
        if fields.len() < 3 {
            return Err(VaultError::Format("the header has fewer than three fields"));
        }
        let vault_id = fields
            .get(3)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty());
        let hexed: String = lines.collect();
        let inner = unhexlify(hexed.as_bytes())?;
        let mut parts = inner.splitn(3, |b| *b == b'\n');
        let mut field = |what: &'static str| match parts.next() {
            Some(p) => unhexlify(p),
            None => Err(VaultError::Format(what)),
        };
        let salt = field("the salt is missing")?;
        let hmac = field("the HMAC is missing")?;
        let ciphertext = field("the ciphertext is missing")?;
        Ok(Envelope {
            version: fields[1].to_string(),
            cipher: fields[2].to_string(),
            vault_id,
            salt,
            hmac,
            ciphertext,
        })
    }

    /// Opens the envelope with one password. A wrong password is
    /// [`VaultError::BadSecret`]: the HMAC is checked (in constant time)
    /// before anything is decrypted.
    pub fn open(&self, password: &[u8]) -> Result<Vec<u8>, VaultError> {
        if self.cipher != CIPHER {
            return Err(VaultError::UnknownCipher(self.cipher.clone()));
        }
        let keys = derive(password, &self.salt);
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(keys.hmac_key())
            .expect("HMAC takes any key length");
        mac.update(&self.ciphertext);
        mac.verify_slice(&self.hmac)
            .map_err(|_| VaultError::BadSecret)?;
        let mut data = self.ciphertext.clone();
        Aes256Ctr::new_from_slices(keys.aes_key(), keys.iv())
            .expect("key and IV lengths are fixed")
            .apply_keystream(&mut data);
        unpad(data)
    }
}

/// Encrypts `plaintext` under `password` into a complete vault text. A
/// `vault_id` other than `default` gives a 1.2 envelope carrying it, as
/// ansible-vault does.
pub fn seal(plaintext: &[u8], password: &[u8], vault_id: Option<&str>) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::Rng::fill(&mut rand::thread_rng(), &mut salt[..]);
    seal_with_salt(plaintext, password, vault_id, &salt)
}

/// [`seal`] with a given salt (tests compare against ansible-vault's output).
pub fn seal_with_salt(
    plaintext: &[u8],
    password: &[u8],
    vault_id: Option<&str>,
    salt: &[u8],
) -> String {
    let keys = derive(password, salt);
    let pad = BLOCK - plaintext.len() % BLOCK;
    let mut data = Vec::with_capacity(plaintext.len() + pad);
    data.extend_from_slice(plaintext);
    data.resize(plaintext.len() + pad, pad as u8);
    Aes256Ctr::new_from_slices(keys.aes_key(), keys.iv())
        .expect("key and IV lengths are fixed")
        .apply_keystream(&mut data);
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(keys.hmac_key())
        .expect("HMAC takes any key length");
    mac.update(&data);
    let tag = mac.finalize().into_bytes();
    let inner = format!(
        "{}\n{}\n{}",
        hex::encode(salt),
        hex::encode(tag),
        hex::encode(&data)
    );
    let payload = hex::encode(inner.as_bytes());
    let header = match vault_id.filter(|id| !id.is_empty() && *id != super::DEFAULT_ID) {
        Some(id) => format!("{HEADER};1.2;{CIPHER};{id}"),
        None => format!("{HEADER};1.1;{CIPHER}"),
    };
    let mut out = header;
    out.push('\n');
    for chunk in payload.as_bytes().chunks(WRAP) {
        // The payload is hex, so every chunk is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Hex to bytes, failing with Python's binascii wording (what ansible-core
/// reports, and what scripts grep for).
fn unhexlify(hex_text: &[u8]) -> Result<Vec<u8>, VaultError> {
    hex::decode(hex_text).map_err(|e| {
        VaultError::Unhexlify(match e {
            hex::FromHexError::OddLength => "Odd-length string",
            _ => "Non-hexadecimal digit found",
        })
    })
}

/// The 80 derived bytes, wiped when dropped.
struct Keys(Zeroizing<[u8; 2 * KEY_LEN + IV_LEN]>);

impl Keys {
    fn aes_key(&self) -> &[u8] {
        &self.0[..KEY_LEN]
    }
    fn hmac_key(&self) -> &[u8] {
        &self.0[KEY_LEN..2 * KEY_LEN]
    }
    fn iv(&self) -> &[u8] {
        &self.0[2 * KEY_LEN..]
    }
}

fn derive(password: &[u8], salt: &[u8]) -> Keys {
    let mut out = Zeroizing::new([0u8; 2 * KEY_LEN + IV_LEN]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, ROUNDS, &mut out[..]);
    Keys(out)
}

/// Strips PKCS#7 padding. The HMAC already matched, so bad padding means a
/// vault written by something other than ansible-vault.
fn unpad(mut data: Vec<u8>) -> Result<Vec<u8>, VaultError> {
    let n = usize::from(
        *data
            .last()
            .ok_or(VaultError::Format("the ciphertext is empty"))?,
    );
    if n == 0
        || n > BLOCK
        || n > data.len()
        || !data[data.len() - n..].iter().all(|b| usize::from(*b) == n)
    {
        return Err(VaultError::Format("the padding is invalid"));
    }
    data.truncate(data.len() - n);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by ansible-vault 2.19.14: `ansible-vault encrypt_string` of
    /// `s3cr3t-value` with the password `hunter2`.
    const FROM_ANSIBLE: &str = "$ANSIBLE_VAULT;1.1;AES256
          34646661633235373531373031666237333265316162336537356639646361356532373338363730
          3536373762643332383031373362313265636130663761650a353637633330323332323065626561
          33633335396466613366323165313063386664316465306538343136303962643136653435323132
          6166336439653034340a366337303531616564663833333835616466633030633161336531313232
          3966";

    #[test]
    fn opens_what_ansible_vault_wrote() {
        let env = Envelope::parse(FROM_ANSIBLE).unwrap();
        assert_eq!(env.version, "1.1");
        assert_eq!(env.vault_id, None);
        assert_eq!(env.open(b"hunter2").unwrap(), b"s3cr3t-value");
        assert!(matches!(env.open(b"hunter3"), Err(VaultError::BadSecret)));
    }

    #[test]
    fn sealing_with_ansible_vaults_salt_gives_its_text() {
        let env = Envelope::parse(FROM_ANSIBLE).unwrap();
        let ours = seal_with_salt(b"s3cr3t-value", b"hunter2", None, &env.salt);
        let theirs: Vec<&str> = FROM_ANSIBLE.lines().map(str::trim).collect();
        let ours: Vec<&str> = ours.lines().collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_labelled_seal_is_version_1_2_and_round_trips() {
        let text = seal(b"line one\nline two\n", b"pw", Some("prod"));
        assert!(text.starts_with("$ANSIBLE_VAULT;1.2;AES256;prod\n"));
        assert!(text.lines().skip(1).all(|l| l.len() <= 80));
        let env = Envelope::parse(&text).unwrap();
        assert_eq!(env.vault_id.as_deref(), Some("prod"));
        assert_eq!(env.open(b"pw").unwrap(), b"line one\nline two\n");
        // Sixteen bytes of plaintext take a whole block of padding.
        let text = seal(&[b'x'; 16], b"pw", Some("default"));
        assert!(text.starts_with("$ANSIBLE_VAULT;1.1;AES256\n"));
        assert_eq!(
            Envelope::parse(&text).unwrap().open(b"pw").unwrap(),
            [b'x'; 16]
        );
    }

    #[test]
    fn a_damaged_payload_is_a_format_error() {
        let mut text = seal(b"abc", b"pw", None);
        text.push_str("zz\n");
        assert!(matches!(
            Envelope::parse(&text),
            Err(VaultError::Unhexlify(_))
        ));
        assert!(matches!(
            Envelope::parse("not a vault"),
            Err(VaultError::NotEncrypted)
        ));
    }
}
