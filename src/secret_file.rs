//! Secret keys kept in files of their own, apart from the store (or in the operator's secret
//! store, mounted as a file): 32 random bytes as 64 hexadecimal digits, readable by their
//! owner only. A store copied, backed up or dumped never carries them.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("the {what} {path} cannot be read: {detail}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the {what} {path} is not 64 hexadecimal digits")]
    Malformed { what: &'static str, path: PathBuf },
    #[error("the {what} {path} cannot be created: {detail}")]
    Uncreatable {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
}

/// 32 random bytes from the operating system's generator.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system gives random bytes");
    key
}

/// The key in `path`, the `what` of the errors ("pseudonym key").
pub fn load(path: &Path, what: &'static str) -> Result<[u8; 32], SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| SecretFileError::Unreadable {
        what,
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    parse(path, what, &text)
}

/// The key in `path`, made from random bytes and written there first if there is no such
/// file: readable by its owner only, synced before it is used. Two processes making it at
/// once both end with the one written first.
pub fn load_or_create(path: &Path, what: &'static str) -> Result<[u8; 32], SecretFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, what, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_key();
            match write_new(path, &key) {
                Ok(()) => Ok(key),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path, what),
                Err(e) => Err(SecretFileError::Uncreatable {
                    what,
                    path: path.to_owned(),
                    detail: e.to_string(),
                }),
            }
        }
        Err(e) => Err(SecretFileError::Unreadable {
            what,
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

fn parse(path: &Path, what: &'static str, text: &str) -> Result<[u8; 32], SecretFileError> {
    let malformed = || SecretFileError::Malformed {
        what,
        path: path.to_owned(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| malformed())?;
    bytes.try_into().map_err(|_| malformed())
}

/// Writes a new key file, failing if one is there.
pub fn write_new(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{}", hex::encode(key))?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_made_once_owner_only_and_read_back() {
        let dir = std::env::temp_dir().join(format!("civicflow-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("some.key");
        let made = load_or_create(&path, "test key").unwrap();
        assert_eq!(load_or_create(&path, "test key").unwrap(), made);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_new(&path, &made).is_err(), "never written over");
        std::fs::write(&path, "not hex\n").unwrap();
        let e = load(&path, "test key").unwrap_err();
        assert!(matches!(e, SecretFileError::Malformed { .. }));
        assert!(e.to_string().starts_with("the test key "), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
