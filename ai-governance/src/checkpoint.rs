//! Signed checkpoints: a tenant's tree size and root hash at a moment, signed with Ed25519.
//!
//! The signature covers a small text (in the spirit of C2SP signed notes), so that a verifier
//! needs nothing but the text, the signature and the public key:
//!
//! ```text
//! aigronova.audit/v1
//! tenant <tenant id>
//! size <tree size>
//! root <hex root hash>
//! time <RFC 3339 UTC>
//! ```

use std::{fmt, path::Path};

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

const ORIGIN: &str = "aigronova.audit/v1";

/// A checkpoint's content, without its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    pub tenant_id: String,
    pub tree_size: u64,
    pub root_hash: Hash,
    /// RFC 3339 UTC.
    pub timestamp: String,
}

impl CheckpointBody {
    /// The exact text the signature covers.
    pub fn signed_text(&self) -> String {
        format!(
            "{ORIGIN}\ntenant {}\nsize {}\nroot {}\ntime {}\n",
            self.tenant_id,
            self.tree_size,
            hex::encode(self.root_hash),
            self.timestamp
        )
    }

    /// Reads a signed text back; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != ORIGIN {
            return None;
        }
        let tenant_id = lines.next()?.strip_prefix("tenant ")?.to_owned();
        let tree_size = lines.next()?.strip_prefix("size ")?.parse().ok()?;
        let root_hash = hex::decode(lines.next()?.strip_prefix("root ")?).ok()?.try_into().ok()?;
        let timestamp = lines.next()?.strip_prefix("time ")?.to_owned();
        if lines.next().is_some() {
            return None;
        }
        Some(Self { tenant_id, tree_size, root_hash, timestamp })
    }
}

/// Why a checkpoint or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("the key is not a base64 32-byte Ed25519 key")]
    BadKey,
    #[error("the signature is not a base64 Ed25519 signature")]
    MalformedSignature,
    #[error("the checkpoint signature does not verify against the public key")]
    BadSignature,
    #[error("the signed text is not a checkpoint")]
    MalformedText,
}

/// The key that signs checkpoints.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointSigner(key_id={})", self.key_id())
    }
}

impl CheckpointSigner {
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system's random source is available");
        Self { key: SigningKey::from_bytes(&seed) }
    }

    /// From a base64 32-byte Ed25519 seed.
    pub fn from_base64(encoded: &str) -> Result<Self, CheckpointError> {
        let seed: [u8; 32] = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(CheckpointError::BadKey)?;
        Ok(Self { key: SigningKey::from_bytes(&seed) })
    }

    /// Reads the key from `path`, or makes one and writes it there (mode 0600) when the file
    /// does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            let encoded = std::fs::read_to_string(path)?;
            return Self::from_base64(&encoded)
                .map_err(|_| anyhow::anyhow!("{} does not hold a base64 Ed25519 key", path.display()));
        }
        let signer = Self::generate();
        aigronova_platform::crypto::create_secret_file(path, &signer.to_base64())?;
        tracing::info!(path = %path.display(), key_id = %signer.key_id(), "checkpoint signing key created");
        Ok(signer)
    }

    /// The base64 seed, as `ai_governance.signing_key` takes it (a secret).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }

    pub fn public_key(&self) -> CheckpointVerifier {
        CheckpointVerifier { key: self.key.verifying_key() }
    }

    pub fn key_id(&self) -> String {
        self.public_key().key_id()
    }

    /// The base64 signature of `body`'s signed text.
    pub fn sign(&self, body: &CheckpointBody) -> String {
        STANDARD.encode(self.key.sign(body.signed_text().as_bytes()).to_bytes())
    }
}

/// The public half: what a verifier holds.
#[derive(Clone, Debug)]
pub struct CheckpointVerifier {
    key: VerifyingKey,
}

impl CheckpointVerifier {
    pub fn from_base64(encoded: &str) -> Result<Self, CheckpointError> {
        let bytes: [u8; 32] = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(CheckpointError::BadKey)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| CheckpointError::BadKey)?;
        Ok(Self { key })
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }

    /// The first 8 bytes of the key's SHA-256, in hex.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.key.to_bytes())[..8])
    }

    /// Checks `signature` over `signed_text` and returns the checkpoint it signs.
    pub fn verify(&self, signed_text: &str, signature: &str) -> Result<CheckpointBody, CheckpointError> {
        let bytes: [u8; 64] = STANDARD
            .decode(signature.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(CheckpointError::MalformedSignature)?;
        self.key
            .verify(signed_text.as_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| CheckpointError::BadSignature)?;
        CheckpointBody::parse(signed_text).ok_or(CheckpointError::MalformedText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> CheckpointBody {
        CheckpointBody {
            tenant_id: "acme".into(),
            tree_size: 42,
            root_hash: [7; 32],
            timestamp: "2026-11-29T10:00:00.000000Z".into(),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_parses_back() {
        let signer = CheckpointSigner::generate();
        let signature = signer.sign(&body());
        assert_eq!(signer.public_key().verify(&body().signed_text(), &signature), Ok(body()));
    }

    #[test]
    fn an_edited_text_or_another_key_is_refused() {
        let signer = CheckpointSigner::generate();
        let signature = signer.sign(&body());
        let edited = body().signed_text().replace("size 42", "size 41");
        assert_eq!(signer.public_key().verify(&edited, &signature), Err(CheckpointError::BadSignature));
        let other = CheckpointSigner::generate().public_key();
        assert_eq!(other.verify(&body().signed_text(), &signature), Err(CheckpointError::BadSignature));
    }

    #[test]
    fn the_key_is_kept_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/checkpoint.key");
        let first = CheckpointSigner::load_or_create(&path).unwrap();
        let second = CheckpointSigner::load_or_create(&path).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        let verifier = CheckpointVerifier::from_base64(&first.public_key().to_base64()).unwrap();
        assert_eq!(verifier.key_id(), first.key_id());
    }
}
