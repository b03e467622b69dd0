//! Signed tree heads: the log's size and root at a moment, signed with Ed25519 (RFC 6962 §3.5,
//! the `TreeHeadSignature` structure). A head an auditor keeps pins every entry below its size:
//! a later head must extend it (a consistency proof), and no entry below it can change without
//! the root changing.
//!
//! The signing key lives in a file apart from the store ([`crate::secret_file`]); a key is
//! named by its id, the first 16 hex digits of the SHA-256 of its public half, so keys can be
//! rotated while heads signed by an older one stay verifiable against the keys an auditor
//! trusts.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::merkle::Hash;
use crate::secret_file::SecretFileError;

/// The log's size and root at a moment, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TreeHead {
    pub size: u64,
    /// The Merkle Tree Hash of the first `size` entries, hex.
    pub root: String,
    pub timestamp: Timestamp,
    /// The id of the key that signed it.
    pub key_id: String,
    /// Ed25519 over RFC 6962's `TreeHeadSignature` of the fields above, hex.
    pub signature: String,
}

/// Why a head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the head of size {size} is signed with key `{key_id}`, which is not trusted")]
    UnknownKey { size: u64, key_id: String },
    #[error("the signature of the head of size {size} does not verify with key `{key_id}`")]
    BadSignature { size: u64, key_id: String },
    #[error("the head of size {size} is not well formed: {detail}")]
    Malformed { size: u64, detail: String },
}

impl TreeHead {
    pub fn root_hash(&self) -> Result<Hash, HeadError> {
        hex::decode(&self.root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| HeadError::Malformed {
                size: self.size,
                detail: format!("its root `{}` is not 64 hex digits", self.root),
            })
    }
}

/// RFC 6962's `TreeHeadSignature`: version v1 (0), signature type `tree_hash` (1), the
/// timestamp in milliseconds, the size, the root.
fn signed_bytes(size: u64, root: &Hash, timestamp: Timestamp) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(50);
    bytes.extend_from_slice(&[0, 1]);
    let millis = u64::try_from(timestamp.as_millisecond()).unwrap_or(0);
    bytes.extend_from_slice(&millis.to_be_bytes());
    bytes.extend_from_slice(&size.to_be_bytes());
    bytes.extend_from_slice(root);
    bytes
}

/// A key's id: the first 16 hex digits of the SHA-256 of its public half.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// The key this node signs heads with.
#[derive(Clone)]
pub struct HeadSigner {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for HeadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeadSigner({})", self.id)
    }
}

impl HeadSigner {
    pub fn from_seed(seed: [u8; 32]) -> HeadSigner {
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(&key.verifying_key());
        HeadSigner { key, id }
    }

    /// The key in `path`, made there first if there is none.
    pub fn load_or_create(path: &Path) -> Result<HeadSigner, SecretFileError> {
        crate::secret_file::load_or_create(path, "audit signing key").map(HeadSigner::from_seed)
    }

    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The public half, as an auditor trusts it: `<key id> <public key hex>`.
    pub fn public_line(&self) -> String {
        format!(
            "{} {}",
            self.id,
            hex::encode(self.key.verifying_key().as_bytes())
        )
    }

    /// Signs the head of the first `size` entries, whose root is `root`.
    pub fn sign(&self, size: u64, root: &Hash, timestamp: Timestamp) -> TreeHead {
        let signature = self.key.sign(&signed_bytes(size, root, timestamp));
        TreeHead {
            size,
            root: hex::encode(root),
            timestamp,
            key_id: self.id.clone(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// The public keys an auditor trusts, by id: read from lines `<key id> <public key hex>` (as
/// `civicflow audit public-key` prints them; `#` starts a comment).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

impl TrustedKeys {
    pub fn parse(text: &str) -> Result<TrustedKeys, String> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let (named, public) = match words.as_slice() {
                [public] => (None, *public),
                [named, public] => (Some(*named), *public),
                _ => return Err(format!("line {}: expected `<key id> <public key>`", n + 1)),
            };
            let key = hex::decode(public)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                .ok_or_else(|| {
                    format!(
                        "line {}: `{public}` is not an Ed25519 public key in hex",
                        n + 1
                    )
                })?;
            let id = key_id(&key);
            if let Some(named) = named
                && named != id
            {
                return Err(format!(
                    "line {}: the key named `{named}` has the id `{id}`",
                    n + 1
                ));
            }
            keys.insert(id, key);
        }
        if keys.is_empty() {
            return Err("no public key is given".to_owned());
        }
        Ok(TrustedKeys { keys })
    }

    pub fn of(signer: &HeadSigner) -> TrustedKeys {
        let public = signer.key.verifying_key();
        TrustedKeys {
            keys: BTreeMap::from([(key_id(&public), public)]),
        }
    }

    /// Checks `head`'s signature with the trusted key it names; its root, if so.
    pub fn verify(&self, head: &TreeHead) -> Result<Hash, HeadError> {
        let size = head.size;
        let key = self
            .keys
            .get(&head.key_id)
            .ok_or_else(|| HeadError::UnknownKey {
                size,
                key_id: head.key_id.clone(),
            })?;
        let root = head.root_hash()?;
        let signature = hex::decode(&head.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or_else(|| HeadError::Malformed {
                size,
                detail: "its signature is not 128 hex digits".to_owned(),
            })?;
        key.verify_strict(&signed_bytes(size, &root, head.timestamp), &signature)
            .map_err(|_| HeadError::BadSignature {
                size,
                key_id: head.key_id.clone(),
            })?;
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_verifies_with_its_key_and_with_no_other() {
        let signer = HeadSigner::from_seed([3; 32]);
        let other = HeadSigner::from_seed([4; 32]);
        let root = [9u8; 32];
        let head = signer.sign(12, &root, Timestamp::from_second(1_800_000_000).unwrap());
        let trusted = TrustedKeys::parse(&signer.public_line()).unwrap();
        assert_eq!(trusted.verify(&head), Ok(root));
        let forged = other.sign(12, &root, head.timestamp);
        assert!(matches!(
            trusted.verify(&forged),
            Err(HeadError::UnknownKey { .. })
        ));
        let mut renamed = forged.clone();
        renamed.key_id = head.key_id.clone();
        assert!(matches!(
            trusted.verify(&renamed),
            Err(HeadError::BadSignature { .. })
        ));
        let mut grown = head.clone();
        grown.size = 13;
        assert!(matches!(
            trusted.verify(&grown),
            Err(HeadError::BadSignature { .. })
        ));
    }

    #[test]
    fn trusted_keys_are_read_from_public_lines_with_comments() {
        let (a, b) = (
            HeadSigner::from_seed([1; 32]),
            HeadSigner::from_seed([2; 32]),
        );
        let text = format!(
            "# keys of 2026\n{}\n\n{}  # rotated in December\n",
            a.public_line(),
            b.public_line()
        );
        let trusted = TrustedKeys::parse(&text).unwrap();
        assert_eq!(trusted.keys.len(), 2);
        let wrong_name = format!(
            "0011223344556677 {}",
            a.public_line().split(' ').nth(1).unwrap()
        );
        assert!(
            TrustedKeys::parse(&wrong_name)
                .unwrap_err()
                .contains("has the id")
        );
        assert!(TrustedKeys::parse("# nothing\n").is_err());
        assert!(
            TrustedKeys::parse("abc xyz")
                .unwrap_err()
                .contains("line 1")
        );
    }
}
