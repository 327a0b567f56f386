//! Application-level encryption of personal data (DESIGN.md section 4): each tenant has its own
//! AES-256-GCM data key, stored wrapped by a master key; values are sealed with the row and field
//! they belong to as associated data, so a ciphertext moved to another row does not open. Lookups
//! use a keyed hash (a blind index) derived from the tenant's key.
//!
//! The master key sits behind [`KeyWrapper`], shaped like a KMS (`Encrypt`/`Decrypt` of a data
//! key): [`LocalMasterKey`] keeps it in a file for the embedded mode; a cloud KMS implements the
//! same two calls in production.

use std::{
    collections::HashMap,
    fmt,
    path::Path,
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hmac,
};
use sqlx::Row;

use crate::storage::{Database, StoreError};

const SEALED_PREFIX: &str = "v1:";
const WRAP_CONTEXT: &[u8] = b"aigronova.data-key.v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the master key file does not hold a base64 32-byte key")]
    BadMasterKey,
    #[error("a wrapped data key does not open with this master key")]
    Unwrap,
    #[error("a sealed value does not open (wrong key, or moved from another row)")]
    Open,
}

/// A KMS-shaped master key: it wraps and unwraps data keys and never hands itself out.
pub trait KeyWrapper: Send + Sync + fmt::Debug {
    /// Names the master key, stored beside each wrapped data key.
    fn key_id(&self) -> &str;
    fn wrap(&self, data_key: &[u8; 32]) -> Vec<u8>;
    fn unwrap(&self, wrapped: &[u8]) -> Result<[u8; 32], CryptoError>;
}

/// A master key kept in a local file (embedded mode).
pub struct LocalMasterKey {
    key: LessSafeKey,
    id: String,
}

impl fmt::Debug for LocalMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalMasterKey({})", self.id)
    }
}

impl LocalMasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key"));
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        Self { key, id: format!("local:{}", hex::encode(&digest.as_ref()[..8])) }
    }

    /// Reads the base64 key from `path`, or makes one and writes it there (mode 0600).
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            let bytes: [u8; 32] = STANDARD
                .decode(std::fs::read_to_string(path)?.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or(CryptoError::BadMasterKey)?;
            return Ok(Self::from_bytes(&bytes));
        }
        let bytes = random::<32>();
        create_secret_file(path, &STANDARD.encode(bytes))?;
        let key = Self::from_bytes(&bytes);
        tracing::info!(path = %path.display(), key_id = %key.id, "master key created");
        Ok(key)
    }
}

/// The 32 bytes of a base64 master key given in configuration at `setting`.
pub fn decode_master_key(key: &str, setting: &str) -> Result<[u8; 32], crate::config::ConfigError> {
    STANDARD
        .decode(key.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| crate::config::ConfigError(format!("{setting} must be 32 bytes of base64")))
}

/// The master key a service is configured with: `key` (base64, from `setting`) when set, else the
/// key file at `file`, made on first start.
pub fn master_key(key: Option<&str>, file: &Path, setting: &str) -> anyhow::Result<Arc<dyn KeyWrapper>> {
    Ok(match key {
        Some(key) => Arc::new(LocalMasterKey::from_bytes(&decode_master_key(key, setting)?)),
        None => Arc::new(LocalMasterKey::load_or_create(file).map_err(|error| {
            anyhow::anyhow!("cannot read or create the master key file {}: {error}", file.display())
        })?),
    })
}

/// The tenants' data keys of `database`, under the master key of [`master_key`], which must be the
/// one the stored data keys were wrapped with (see [`TenantKeys::check_master_key`]); a key file
/// made just now for a database that holds data keys is deleted again, as it cannot be theirs.
pub async fn tenant_keys(
    database: &Database,
    key: Option<&str>,
    file: &Path,
    setting: &str,
) -> anyhow::Result<Arc<TenantKeys>> {
    let made_now = key.is_none() && !file.exists();
    let keys = Arc::new(TenantKeys::new(database.clone(), master_key(key, file, setting)?));
    let named = match key {
        Some(_) => setting.to_owned(),
        None if made_now => format!("the master key file {}, missing and made now,", file.display()),
        None => format!("the master key file {}", file.display()),
    };
    if let Err(error) = keys.check_master_key(&named).await {
        // Only a key refused by the data keys stored (not a failed query) is not theirs.
        if made_now && error.downcast_ref::<crate::config::ConfigError>().is_some() {
            let _ = std::fs::remove_file(file);
            return Err(error.context(format!(
                "{} is deleted again: put back the key file this data was sealed with",
                file.display()
            )));
        }
        return Err(error);
    }
    Ok(keys)
}

impl KeyWrapper for LocalMasterKey {
    fn key_id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, data_key: &[u8; 32]) -> Vec<u8> {
        seal(&self.key, WRAP_CONTEXT, data_key)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<[u8; 32], CryptoError> {
        open(&self.key, WRAP_CONTEXT, wrapped).ok().and_then(|bytes| bytes.try_into().ok()).ok_or(CryptoError::Unwrap)
    }
}

/// What a sealed object starts with, so that objects stored in clear before can still be read.
pub const SEALED_OBJECT: &[u8] = b"aigronova-sealed-v1\0";

/// Whether `stored` has the form [`TenantCipher::seal`] gives (`v1:` and the base64 of at least a
/// nonce and a tag), as opposed to a value stored in clear.
pub fn is_sealed(stored: &str) -> bool {
    stored
        .strip_prefix(SEALED_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .is_some_and(|bytes| bytes.len() >= NONCE_LEN + AES_256_GCM.tag_len())
}

/// One tenant's data key: seals and opens values, and computes blind indexes.
pub struct TenantCipher {
    key: LessSafeKey,
    index: hmac::Key,
    digest: hmac::Key,
}

impl fmt::Debug for TenantCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantCipher([redacted])")
    }
}

/// Whether `a` and `b` are equal, compared in time that does not depend on where they differ (a
/// digest a caller sent against the one it should be).
pub fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |differ, (a, b)| differ | (a ^ b)) == 0
}

impl TenantCipher {
    pub(crate) fn new(data_key: &[u8; 32]) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, data_key);
        let index_key = hmac::sign(&derive, b"aigronova.blind-index.v1");
        let digest_key = hmac::sign(&derive, b"aigronova.input-digest.v1");
        Self {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, data_key).expect("32 bytes is an AES-256 key")),
            index: hmac::Key::new(hmac::HMAC_SHA256, index_key.as_ref()),
            digest: hmac::Key::new(hmac::HMAC_SHA256, digest_key.as_ref()),
        }
    }

    /// `plaintext` sealed for `context` (e.g. `patients/<id>`), as `v1:<base64>`.
    pub fn seal(&self, context: &str, plaintext: &str) -> String {
        format!("{SEALED_PREFIX}{}", STANDARD.encode(seal(&self.key, context.as_bytes(), plaintext.as_bytes())))
    }

    /// Opens what [`Self::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, CryptoError> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .ok_or(CryptoError::Open)?;
        let plain = open(&self.key, context.as_bytes(), &bytes).map_err(|()| CryptoError::Open)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }

    /// `bytes` sealed for `context` (an object's key, say): [`SEALED_OBJECT`], then the nonce, the
    /// ciphertext and the tag.
    pub fn seal_bytes(&self, context: &str, bytes: &[u8]) -> Vec<u8> {
        let mut sealed = SEALED_OBJECT.to_vec();
        sealed.extend_from_slice(&seal(&self.key, context.as_bytes(), bytes));
        sealed
    }

    /// Opens what [`Self::seal_bytes`] made for the same `context`. Bytes without the
    /// [`SEALED_OBJECT`] prefix were stored before objects were sealed, and come back as they are.
    pub fn open_bytes(&self, context: &str, stored: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        match stored.strip_prefix(SEALED_OBJECT) {
            Some(sealed) => open(&self.key, context.as_bytes(), sealed).map_err(|()| CryptoError::Open),
            None => Ok(stored),
        }
    }

    /// Whether `stored` was sealed by [`Self::seal_bytes`] with this key for `context`: bytes in
    /// clear, or sealed with another key, were not.
    pub fn sealed_here(&self, context: &str, stored: &[u8]) -> bool {
        stored.strip_prefix(SEALED_OBJECT).is_some_and(|sealed| open(&self.key, context.as_bytes(), sealed).is_ok())
    }

    /// A keyed hash of `value` for equality lookups (hex HMAC-SHA256 under a key derived from
    /// the tenant's data key: the same value gives different indexes in different tenants).
    pub fn blind_index(&self, value: &str) -> String {
        hex::encode(hmac::sign(&self.index, value.as_bytes()).as_ref())
    }

    /// What identifies `bytes` (a decision's inputs) in the audit log: `hmac-sha256:` and the hex
    /// HMAC under another key derived from the tenant's data key. A reader of the log cannot try
    /// likely inputs against it, as against a plain hash; the service can, to find a decision.
    pub fn keyed_digest(&self, bytes: &[u8]) -> String {
        format!("hmac-sha256:{}", hex::encode(hmac::sign(&self.digest, bytes).as_ref()))
    }
}

/// Writes `contents` to a new file at `path` (its folder made when missing) that only its owner
/// may read (mode 0600); an existing file is an error, never overwritten.
pub fn create_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(folder) = path.parent().filter(|folder| !folder.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    // On disk before anything is sealed under it: a key lost to a power cut after data keys
    // wrapped by it were committed would leave them unreadable for good.
    file.sync_all()?;
    #[cfg(unix)]
    if let Some(folder) = path.parent() {
        let folder = if folder.as_os_str().is_empty() { Path::new(".") } else { folder };
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes
}

/// nonce ‖ ciphertext ‖ tag.
fn seal(key: &LessSafeKey, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = random::<NONCE_LEN>();
    let mut buffer = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut buffer)
        .expect("AES-GCM seals any length a value can have");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&buffer);
    sealed
}

fn open(key: &LessSafeKey, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, ()> {
    if sealed.len() < NONCE_LEN {
        return Err(());
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ())?;
    let mut buffer = ciphertext.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(context), &mut buffer).map_err(|_| ())?;
    Ok(plain.to_vec())
}

/// Every tenant's data key of one service, in its `tenant_keys` table:
///
/// ```sql
/// CREATE TABLE tenant_keys (tenant_id TEXT PRIMARY KEY, key_id TEXT NOT NULL,
///                           wrapped_key TEXT NOT NULL, created_at TEXT NOT NULL);
/// ```
#[derive(Debug)]
pub struct TenantKeys {
    database: Database,
    wrapper: Arc<dyn KeyWrapper>,
    ciphers: Mutex<HashMap<String, Arc<TenantCipher>>>,
}

impl TenantKeys {
    pub fn new(database: Database, wrapper: Arc<dyn KeyWrapper>) -> Self {
        Self { database, wrapper, ciphers: Mutex::new(HashMap::new()) }
    }

    /// The cipher of `tenant_id`, its data key made and stored (wrapped) on first use.
    pub async fn cipher(&self, tenant_id: &str) -> Result<Arc<TenantCipher>, StoreError> {
        if let Some(cipher) = self.ciphers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(tenant_id) {
            return Ok(cipher.clone());
        }
        let wrapped = match self.stored(tenant_id).await? {
            Some(wrapped) => wrapped,
            None => {
                let wrapped = STANDARD.encode(self.wrapper.wrap(&random::<32>()));
                let inserted = sqlx::query(
                    "INSERT INTO tenant_keys (tenant_id, key_id, wrapped_key, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id) DO NOTHING",
                )
                .bind(tenant_id)
                .bind(self.wrapper.key_id())
                .bind(&wrapped)
                .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .execute(self.database.pool())
                .await?;
                if inserted.rows_affected() == 1 {
                    wrapped
                } else {
                    self.stored(tenant_id)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant_id}: data key vanished")))?
                }
            }
        };
        let data_key = STANDARD
            .decode(&wrapped)
            .ok()
            .and_then(|bytes| self.wrapper.unwrap(&bytes).ok())
            .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant_id}: the data key does not unwrap")))?;
        let cipher = Arc::new(TenantCipher::new(&data_key));
        self.ciphers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant_id.to_owned(), cipher.clone());
        Ok(cipher)
    }

    /// Refuses a master key that does not unwrap the data keys already stored, which is another's
    /// (another deployment's, or another service's): every read of sealed data would fail. One
    /// stored key is tried; none stored, any master key fits. `setting` names the key's setting.
    pub async fn check_master_key(&self, setting: &str) -> anyhow::Result<()> {
        let row = sqlx::query("SELECT wrapped_key FROM tenant_keys ORDER BY created_at, tenant_id LIMIT 1")
            .fetch_optional(self.database.pool())
            .await?;
        let Some(row) = row else { return Ok(()) };
        let wrapped: String = row.try_get("wrapped_key")?;
        if STANDARD.decode(&wrapped).ok().is_some_and(|bytes| self.wrapper.unwrap(&bytes).is_ok()) {
            return Ok(());
        }
        Err(crate::config::ConfigError(format!(
            "{setting} does not unwrap the tenants' data keys stored in the database: it is not the master key \
             this data was sealed with (another deployment's or another service's?); start with the key it was \
             sealed with"
        ))
        .into())
    }

    /// Whether `tenant_id` has a data key here, without making one.
    pub async fn holds(&self, tenant_id: &str) -> Result<bool, StoreError> {
        Ok(self.stored(tenant_id).await?.is_some())
    }

    async fn stored(&self, tenant_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(self.database.pool())
            .await?;
        Ok(row.map(|row| row.try_get("wrapped_key")).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_master_key_that_does_not_unwrap_the_stored_data_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let database = keys_database(dir.path()).await;
        let keys = |master: u8| TenantKeys::new(database.clone(), Arc::new(LocalMasterKey::from_bytes(&[master; 32])));
        // Nothing stored yet: any key fits.
        keys(2).check_master_key("x.master_key").await.unwrap();
        keys(1).cipher("tenant-a").await.unwrap();
        keys(1).check_master_key("x.master_key").await.unwrap();
        let error = keys(2).check_master_key("x.master_key").await.unwrap_err();
        assert!(error.downcast_ref::<crate::config::ConfigError>().is_some(), "{error}");
        assert!(error.to_string().contains(": x.master_key does not unwrap"), "{error}");
    }

    /// An embedded database in `dir` with the `tenant_keys` table the services' migrations make.
    async fn keys_database(dir: &Path) -> Database {
        let url = format!("sqlite://{}", dir.join("keys.db").display());
        let database = Database::connect(&url, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE tenant_keys (tenant_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, wrapped_key TEXT NOT NULL, \
             created_at TEXT NOT NULL)",
        )
        .execute(database.pool())
        .await
        .unwrap();
        database
    }

    #[tokio::test]
    async fn a_key_file_made_for_a_database_that_holds_data_keys_is_refused_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let database = keys_database(dir.path()).await;
        let (first, lost) = (dir.path().join("first.key"), dir.path().join("lost.key"));
        let keys = tenant_keys(&database, None, &first, "x.master_key").await.unwrap();
        keys.cipher("tenant-a").await.unwrap();
        let error = tenant_keys(&database, None, &lost, "x.master_key").await.unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("missing and made now") && message.contains("is deleted again"), "{message}");
        assert!(error.downcast_ref::<crate::config::ConfigError>().is_some(), "{message}");
        assert!(!lost.exists(), "the key file made for nothing is gone");
        tenant_keys(&database, None, &first, "x.master_key").await.unwrap();
    }

    #[test]
    fn a_sealed_object_opens_only_at_its_own_key_and_one_stored_in_clear_still_reads() {
        let cipher = TenantCipher::new(&[1; 32]);
        let sealed = cipher.seal_bytes("reports/t/a.pdf", b"%PDF-1.7 Maria");
        assert!(sealed.starts_with(SEALED_OBJECT) && !sealed.windows(5).any(|w| w == b"Maria"));
        assert_eq!(cipher.open_bytes("reports/t/a.pdf", sealed.clone()).unwrap(), b"%PDF-1.7 Maria");
        assert_eq!(cipher.open_bytes("reports/t/b.pdf", sealed.clone()), Err(CryptoError::Open));
        assert_eq!(TenantCipher::new(&[2; 32]).open_bytes("reports/t/a.pdf", sealed), Err(CryptoError::Open));
        assert_eq!(cipher.open_bytes("x", b"%PDF clear".to_vec()).unwrap(), b"%PDF clear");
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_context_and_tenant() {
        let cipher = TenantCipher::new(&[1; 32]);
        let sealed = cipher.seal("patients/a", "Maria Silva");
        assert!(!sealed.contains("Maria"));
        assert_eq!(cipher.open("patients/a", &sealed).unwrap(), "Maria Silva");
        assert_eq!(cipher.open("patients/b", &sealed), Err(CryptoError::Open), "moved to another row");
        assert_eq!(TenantCipher::new(&[2; 32]).open("patients/a", &sealed), Err(CryptoError::Open));
        assert_ne!(cipher.seal("patients/a", "Maria Silva"), sealed, "a fresh nonce each time");
    }

    #[test]
    fn blind_indexes_are_stable_per_tenant_and_differ_between_tenants() {
        let (one, two) = (TenantCipher::new(&[1; 32]), TenantCipher::new(&[2; 32]));
        assert_eq!(one.blind_index("52998224725"), one.blind_index("52998224725"));
        assert_ne!(one.blind_index("52998224725"), two.blind_index("52998224725"));
        assert_eq!(one.blind_index("52998224725").len(), 64);
    }

    #[test]
    fn a_keyed_digest_is_stable_per_tenant_and_is_not_the_plain_hash_nor_the_blind_index() {
        use sha2::{Digest, Sha256};
        let (one, two) = (TenantCipher::new(&[1; 32]), TenantCipher::new(&[2; 32]));
        let inputs = br#"{"age":0.038,"bmi":0.061}"#;
        let digest = one.keyed_digest(inputs);
        assert_eq!(digest, one.keyed_digest(inputs));
        assert_ne!(digest, two.keyed_digest(inputs), "another tenant's key");
        assert_ne!(digest, one.keyed_digest(br#"{"age":0.038,"bmi":0.062}"#));
        let hex = digest.strip_prefix("hmac-sha256:").unwrap();
        assert_eq!(hex.len(), 64);
        assert_ne!(hex, hex::encode(Sha256::digest(inputs)), "not what anyone can compute");
        assert_ne!(hex, one.blind_index(std::str::from_utf8(inputs).unwrap()), "a key of its own");
    }

    #[test]
    fn the_master_key_wraps_and_is_kept_in_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let first = LocalMasterKey::load_or_create(&path).unwrap();
        let wrapped = first.wrap(&[7; 32]);
        let second = LocalMasterKey::load_or_create(&path).unwrap();
        assert_eq!(second.unwrap(&wrapped).unwrap(), [7; 32]);
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(LocalMasterKey::from_bytes(&[9; 32]).unwrap(&wrapped), Err(CryptoError::Unwrap));
    }
}
