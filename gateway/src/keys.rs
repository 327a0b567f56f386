//! A cache of API key lookups, so that most requests do not touch the database. Revoking a key or
//! suspending a tenant evicts its entries at once; with Redis configured, every replica hears of
//! it through a pub/sub channel. Entries also expire after a short time, as a backstop.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aigronova_platform::storage::StoreError;

use crate::store::{Principal, Store, hash_key};

/// Most entries kept; past it the cache starts afresh rather than grow without bound.
const MAX_ENTRIES: usize = 10_000;
/// How often a key's last-used time is written, at most.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Entry {
    principal: Option<Principal>,
    fetched: Instant,
}

/// Key lookups by key hash, with invalidation.
#[derive(Clone)]
pub(crate) struct KeyCache {
    store: Store,
    ttl: Duration,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    touched: Arc<Mutex<HashMap<String, Instant>>>,
}

impl KeyCache {
    pub(crate) fn new(store: Store, ttl: Duration) -> Self {
        Self { store, ttl, entries: Arc::default(), touched: Arc::default() }
    }

    /// The principal of a presented key, from the cache or the database.
    pub(crate) async fn principal(&self, key: &str) -> Result<Option<Principal>, StoreError> {
        let hash = hash_key(key);
        let cached = self.lock().get(&hash).filter(|entry| entry.fetched.elapsed() < self.ttl).cloned();
        let principal = match cached {
            Some(entry) => entry.principal,
            None => {
                let principal = self.store.principal_by_hash(&hash).await?;
                let mut entries = self.lock();
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert(hash, Entry { principal: principal.clone(), fetched: Instant::now() });
                principal
            }
        };
        let principal = principal.filter(|principal| !principal.is_expired());
        if let Some(principal) = &principal {
            self.touch(&principal.key_id);
        }
        Ok(principal)
    }

    /// Forgets one key (revoked).
    pub(crate) fn evict_key_hash(&self, hash: &str) {
        self.lock().remove(hash);
    }

    /// Forgets every key of a tenant (suspended, plan changed).
    pub(crate) fn evict_tenant(&self, tenant_id: &str) {
        self.lock().retain(|_, entry| entry.principal.as_ref().and_then(|p| p.tenant_id.as_deref()) != Some(tenant_id));
    }

    /// Records the key's use, at most once per [`TOUCH_INTERVAL`], off the request path.
    fn touch(&self, key_id: &str) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if touched.get(key_id).is_some_and(|at| at.elapsed() < TOUCH_INTERVAL) {
                return;
            }
            if touched.len() >= MAX_ENTRIES {
                touched.clear();
            }
            touched.insert(key_id.to_owned(), Instant::now());
        }
        let store = self.store.clone();
        let key_id = key_id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = store.touch_key(&key_id).await {
                tracing::warn!(%error, key_id, "last-used time not recorded");
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Spreads "this key was revoked" and "this tenant changed" to every replica's [`KeyCache`].
#[derive(Clone)]
pub(crate) struct Invalidation {
    keys: KeyCache,
}

impl Invalidation {
    pub(crate) fn new(keys: KeyCache) -> Self {
        Self { keys }
    }

    pub(crate) async fn key_revoked(&self, key_hash: &str) {
        self.keys.evict_key_hash(key_hash);
    }

    pub(crate) async fn tenant_changed(&self, tenant_id: &str) {
        self.keys.evict_tenant(tenant_id);
    }
}
