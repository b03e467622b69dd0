//! Keyed pseudonyms: HMAC-SHA256 of a personal value under a key that lives outside the store
//! (a file of its own, or the operator's secret store). The same value gives the same pseudonym,
//! so a consent is found by whose it is and counts stay right after erasure; without the key a
//! pseudonym cannot be turned back into the value, nor a guessed ID be checked against it.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret_file::SecretFileError;

/// What every pseudonym starts with, so that a reader (and `store check`) tells one from a value.
pub const PREFIX: &str = "ps_";

/// The key of the pseudonyms: 32 random bytes.
#[derive(Clone)]
pub struct PseudonymKey {
    key: [u8; 32],
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(…)")
    }
}

impl PseudonymKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(key: [u8; 32]) -> PseudonymKey {
        PseudonymKey { key }
    }

    /// A new random key, from the operating system's generator.
    pub fn generate() -> PseudonymKey {
        PseudonymKey {
            key: crate::secret_file::random_key(),
        }
    }

    /// The key in `path` (64 hexadecimal digits), made and written there first if there is no
    /// such file ([`crate::secret_file`]).
    pub fn load_or_create(path: &Path) -> Result<PseudonymKey, SecretFileError> {
        crate::secret_file::load_or_create(path, "pseudonym key").map(PseudonymKey::from_bytes)
    }

    /// The pseudonym of `value`: `ps_` and 128 bits of its HMAC, in hexadecimal.
    pub fn pseudonym(&self, value: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("{PREFIX}{}", hex::encode(&digest[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pseudonym_is_stable_under_one_key_and_differs_under_another() {
        let key = PseudonymKey::from_bytes([7; 32]);
        let a = key.pseudonym("001089654321");
        assert_eq!(a, key.pseudonym("001089654321"));
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 32, "{a}");
        assert!(!a.contains("001089654321"));
        assert_ne!(a, key.pseudonym("001089654322"));
        assert_ne!(
            a,
            PseudonymKey::from_bytes([8; 32]).pseudonym("001089654321")
        );
    }
}
