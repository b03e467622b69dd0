//! Keyed pseudonyms: HMAC-SHA256 of a personal value under a key that lives outside the store
//! (a file of its own, or the operator's secret store). The same value gives the same pseudonym,
//! so a consent is found by whose it is and counts stay right after erasure; without the key a
//! pseudonym cannot be turned back into the value, nor a guessed ID be checked against it.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the pseudonym key {path} cannot be read: {detail}")]
    Unreadable { path: PathBuf, detail: String },
    #[error("the pseudonym key {path} is not 64 hexadecimal digits")]
    Malformed { path: PathBuf },
    #[error("the pseudonym key {path} cannot be created: {detail}")]
    Uncreatable { path: PathBuf, detail: String },
}

impl PseudonymKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(key: [u8; 32]) -> PseudonymKey {
        PseudonymKey { key }
    }

    /// A new random key, from the operating system's generator.
    pub fn generate() -> PseudonymKey {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system gives random bytes");
        PseudonymKey { key }
    }

    /// The key in `path` (64 hexadecimal digits), made and written there first if there is no
    /// such file: readable by its owner only, synced before it is used.
    pub fn load_or_create(path: &Path) -> Result<PseudonymKey, KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                match key.write_new(path) {
                    Ok(()) => Ok(key),
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text =
                            std::fs::read_to_string(path).map_err(|e| KeyError::Unreadable {
                                path: path.to_owned(),
                                detail: e.to_string(),
                            })?;
                        Self::parse(path, &text)
                    }
                    Err(e) => Err(KeyError::Uncreatable {
                        path: path.to_owned(),
                        detail: e.to_string(),
                    }),
                }
            }
            Err(e) => Err(KeyError::Unreadable {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<PseudonymKey, KeyError> {
        let malformed = || KeyError::Malformed {
            path: path.to_owned(),
        };
        let bytes = hex::decode(text.trim()).map_err(|_| malformed())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        Ok(PseudonymKey { key })
    }

    fn write_new(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        writeln!(file, "{}", hex::encode(self.key))?;
        file.sync_all()
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

    #[test]
    fn the_key_file_is_made_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("civicflow-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("pseudonym.key");
        let made = PseudonymKey::load_or_create(&path).unwrap();
        let read = PseudonymKey::load_or_create(&path).unwrap();
        assert_eq!(made.pseudonym("x"), read.pseudonym("x"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(
            PseudonymKey::load_or_create(&path),
            Err(KeyError::Malformed { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
