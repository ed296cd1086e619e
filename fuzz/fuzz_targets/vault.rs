//! Fuzz target: the vault envelope parser (`$ANSIBLE_VAULT;1.1;AES256` header,
//! hex-in-hex payload, salt/HMAC/ciphertext split) and the encrypted-data
//! sniffing used on every file read.
#![no_main]

use keel::vault::{is_encrypted, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = is_encrypted(data);
    if let Ok(text) = std::str::from_utf8(data) {
        // Opening needs a PBKDF2 of 10 000 rounds per try and stops at the
        // HMAC check for any mutated payload; the parse is what gets fuzzed.
        let _ = Envelope::parse(text);
    }
});
