//! A cache of API key lookups, and of the tenants that tokens name, so that most requests do not
//! touch the database. Revoking a key or suspending a tenant evicts its entries at once; with Redis configured, every replica hears of
//! it through a pub/sub channel. Entries also expire after a short time, as a backstop. While a
//! replica is not subscribed to that channel (Redis down), it would not hear of other replicas'
//! revocations, so it does not use its cache: every lookup goes to the shared database.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aigronova_platform::storage::StoreError;
use futures_util::StreamExt;

use crate::store::{Principal, Store, Tenant, hash_key};

/// Most keys kept, of those that exist; past it the expired ones go, and if none has, the cache
/// starts afresh rather than grow without bound.
const MAX_ENTRIES: usize = 10_000;
/// Most keys kept of those that do not exist, apart from the others: a flood of made-up keys
/// churns these alone and never pushes the tenants' real keys out of the cache.
const MAX_UNKNOWN_ENTRIES: usize = 1_000;
/// How long, at least, the invalidation channel may stay silent before it is subscribed afresh
/// (the cache's lifetime when longer: a fresh subscription drops the cache).
const RESUBSCRIBE_WHEN_QUIET: Duration = Duration::from_secs(30);
/// The longest a (re)subscription may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a key's last-used time is written, at most.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Entry {
    principal: Option<Arc<Principal>>,
    fetched: Instant,
}

/// The cached lookups, and how many evictions there have been: a lookup that an eviction overtook
/// (a key revoked while its row was being read) is answered but not kept, so that the answer read
/// before the revocation does not outlive it in the cache.
#[derive(Default)]
struct Entries {
    /// Keys that exist.
    by_hash: HashMap<String, Entry>,
    /// Keys that do not, each with when it was looked up.
    unknown: HashMap<String, Instant>,
    /// Tenants by id, as tokens name them, each with when it was read. A tenant that does not
    /// exist is not kept: it may be the next one created.
    tenants: HashMap<String, (Arc<Tenant>, Instant)>,
    evictions: u64,
}

impl Entries {
    /// Keeps a lookup begun when `evictions` was `seen`, unless an eviction came since; whether it
    /// was kept. Entries older than `ttl` make room first.
    fn remember(&mut self, hash: String, entry: Entry, seen: u64, ttl: Duration) -> bool {
        if self.evictions != seen {
            return false;
        }
        if entry.principal.is_none() {
            if self.unknown.len() >= MAX_UNKNOWN_ENTRIES {
                self.unknown.retain(|_, fetched| fetched.elapsed() < ttl);
            }
            if self.unknown.len() >= MAX_UNKNOWN_ENTRIES {
                self.unknown.clear();
            }
            // A key cached as known and gone since is unknown now.
            self.by_hash.remove(&hash);
            self.unknown.insert(hash, entry.fetched);
            return true;
        }
        if self.by_hash.len() >= MAX_ENTRIES {
            self.by_hash.retain(|_, entry| entry.fetched.elapsed() < ttl);
        }
        if self.by_hash.len() >= MAX_ENTRIES {
            self.by_hash.clear();
        }
        self.unknown.remove(&hash);
        self.by_hash.insert(hash, entry);
        true
    }

    /// The lookup of `hash` younger than `ttl`, if one is kept.
    fn get(&self, hash: &str, ttl: Duration) -> Option<Entry> {
        if let Some(entry) = self.by_hash.get(hash) {
            return (entry.fetched.elapsed() < ttl).then(|| entry.clone());
        }
        let fetched = *self.unknown.get(hash)?;
        (fetched.elapsed() < ttl).then_some(Entry { principal: None, fetched })
    }

    /// Forgets the entries `forget` picks, and every unknown key (one may have been created since).
    fn evict(&mut self, forget: impl Fn(&str, &Entry) -> bool) {
        self.evictions += 1;
        self.by_hash.retain(|hash, entry| !forget(hash, entry));
        self.unknown.clear();
    }

    /// Keeps the tenant `id` read when `evictions` was `seen`, unless an eviction came since.
    fn remember_tenant(&mut self, id: &str, tenant: Arc<Tenant>, seen: u64, ttl: Duration) {
        if self.evictions != seen {
            return;
        }
        if self.tenants.len() >= MAX_ENTRIES {
            self.tenants.retain(|_, (_, fetched)| fetched.elapsed() < ttl);
        }
        if self.tenants.len() >= MAX_ENTRIES {
            self.tenants.clear();
        }
        self.tenants.insert(id.to_owned(), (tenant, Instant::now()));
    }
}

/// Key lookups by key hash, with invalidation.
#[derive(Clone)]
pub(crate) struct KeyCache {
    store: Store,
    ttl: Duration,
    entries: Arc<RwLock<Entries>>,
    touched: Arc<Mutex<HashMap<String, Instant>>>,
    /// Set while evictions from other replicas may be missed: lookups skip the cache.
    bypass: Arc<AtomicBool>,
}

impl KeyCache {
    pub(crate) fn new(store: Store, ttl: Duration) -> Self {
        Self { store, ttl, entries: Arc::default(), touched: Arc::default(), bypass: Arc::default() }
    }

    /// The principal of a presented key, from the cache or the database; an expired key's too,
    /// which its caller refuses as expired.
    pub(crate) async fn principal(&self, key: &str) -> Result<Option<Arc<Principal>>, StoreError> {
        let hash = hash_key(key);
        let cached = if self.bypass.load(Ordering::Relaxed) { None } else { self.read().get(&hash, self.ttl) };
        let principal = match cached {
            Some(entry) => entry.principal,
            None => {
                let seen = self.read().evictions;
                let principal = self.store.principal_by_hash(&hash).await?.map(Arc::new);
                let entry = Entry { principal: principal.clone(), fetched: Instant::now() };
                self.write().remember(hash, entry, seen, self.ttl);
                principal
            }
        };
        // A key is used when it is let in: an expired one, or a suspended tenant's, is refused, and
        // not counted used.
        if let Some(principal) = &principal
            && !principal.is_expired()
            && principal.tenant_status.as_deref().is_none_or(|status| status == "active")
        {
            self.touch(&principal.key_id);
        }
        Ok(principal)
    }

    /// The tenant `id`, from the cache or the database, for a token that names it.
    pub(crate) async fn tenant(&self, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        if !self.bypass.load(Ordering::Relaxed)
            && let Some((tenant, fetched)) = self.read().tenants.get(id)
            && fetched.elapsed() < self.ttl
        {
            return Ok(Some(tenant.clone()));
        }
        let seen = self.read().evictions;
        let tenant = self.store.tenant(id).await?.map(Arc::new);
        if let Some(tenant) = &tenant {
            self.write().remember_tenant(id, tenant.clone(), seen, self.ttl);
        }
        Ok(tenant)
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        let mut entries = self.write();
        entries.evict(|_, _| true);
        entries.tenants.clear();
    }

    /// Forgets one key (revoked).
    pub(crate) fn evict_key_hash(&self, hash: &str) {
        self.write().evict(|cached, _| cached == hash);
    }

    /// Forgets every key of a tenant, and the tenant (suspended, plan changed).
    pub(crate) fn evict_tenant(&self, tenant_id: &str) {
        let mut entries = self.write();
        entries.evict(|_, entry| entry.principal.as_ref().and_then(|p| p.tenant_id.as_deref()) == Some(tenant_id));
        entries.tenants.remove(tenant_id);
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Spreads "this key was revoked" and "this tenant changed" to every replica's [`KeyCache`]:
/// locally at once, and through a Redis channel to the other replicas when Redis is configured.
#[derive(Clone)]
pub(crate) struct Invalidation {
    keys: KeyCache,
    redis: Option<RedisBus>,
}

#[derive(Clone)]
struct RedisBus {
    client: redis::Client,
    publisher: redis::aio::ConnectionManager,
    channel: String,
    /// The longest a publication may take (`gateway.rate_limit.redis_timeout_ms`).
    timeout: Duration,
}

impl Invalidation {
    /// `redis_url` set: evictions are published on `<prefix>key-invalidation` and heard by every
    /// replica once [`Invalidation::listen`] runs; a publication waits `timeout` at most, one
    /// attempt, so that an administrator's call is not held by a Redis that cannot be reached.
    pub(crate) fn new(
        keys: KeyCache,
        redis_url: Option<&str>,
        prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let redis = redis_url
            .map(|url| -> anyhow::Result<RedisBus> {
                let client = redis::Client::open(url)?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                let publisher = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                Ok(RedisBus { client, publisher, channel: format!("{prefix}key-invalidation"), timeout })
            })
            .transpose()?;
        // Until the channel is subscribed, other replicas' evictions would be missed.
        keys.bypass.store(redis.is_some(), Ordering::Relaxed);
        Ok(Self { keys, redis })
    }

    pub(crate) async fn key_revoked(&self, key_hash: &str) {
        self.keys.evict_key_hash(key_hash);
        self.publish(&format!("key:{key_hash}")).await;
    }

    pub(crate) async fn tenant_changed(&self, tenant_id: &str) {
        self.keys.evict_tenant(tenant_id);
        self.publish(&format!("tenant:{tenant_id}")).await;
    }

    /// Publishes an eviction; when that fails the other replicas keep the entry until it expires
    /// (`key_cache_secs`).
    async fn publish(&self, message: &str) {
        let Some(bus) = &self.redis else { return };
        let mut command = redis::cmd("PUBLISH");
        command.arg(&bus.channel).arg(message);
        let publishing = crate::ratelimit::on_a_live_connection(|| async {
            command.query_async::<i64>(&mut bus.publisher.clone()).await
        });
        let published = tokio::time::timeout(bus.timeout, publishing)
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "publishing timed out"))));
        if let Err(error) = published {
            tracing::warn!(%error, "key invalidation not published; other replicas catch up when their cache expires");
        }
    }

    /// Applies other replicas' evictions until `shutdown`. After each (re)subscription the whole
    /// cache is dropped, since messages sent while disconnected are lost.
    pub(crate) async fn listen(self, shutdown: aigronova_platform::Shutdown) {
        let Some(bus) = self.redis.clone() else { return };
        let listening = async {
            let mut failures: u64 = 0;
            loop {
                let mut subscribed = false;
                let listened = self.listen_once(&bus, &mut subscribed).await;
                // Until the next subscription, other replicas' evictions would be missed.
                self.keys.bypass.store(true, Ordering::Relaxed);
                if subscribed {
                    failures = 0; // a new outage, if this is one
                }
                // Quiet for a while: subscribe afresh at once.
                let Err(error) = listened else { continue };
                // Reconnect every second, warn on the first failure and every minute after.
                if failures.is_multiple_of(60) {
                    tracing::warn!(%error, failures, "key invalidation channel lost; reconnecting, keys looked up in the database meanwhile");
                }
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            () = listening => {}
            () = shutdown.wait() => {}
        }
    }

    /// Subscribes (within [`SUBSCRIBE_TIMEOUT`]) and applies evictions until the connection fails
    /// (an error) or stays silent for the cache's lifetime, 30 s at least (`Ok`: subscribe afresh).
    async fn listen_once(&self, bus: &RedisBus, subscribed: &mut bool) -> redis::RedisResult<()> {
        let subscribing = async {
            let mut pubsub = bus.client.get_async_pubsub().await?;
            pubsub.subscribe(&bus.channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let mut pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribing)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "subscribing timed out")))??;
        *subscribed = true;
        self.keys.clear();
        self.keys.bypass.store(false, Ordering::Relaxed);
        let mut messages = pubsub.on_message();
        // A connection that died without a reset (a failover, a partition) delivers nothing and
        // reports nothing: after a quiet spell the channel is subscribed afresh (which drops the
        // cache), so that such a loss lasts at most that long.
        loop {
            let quiet = self.keys.ttl.max(RESUBSCRIBE_WHEN_QUIET);
            let message = match tokio::time::timeout(quiet, messages.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_) => return Ok(()),
            };
            let payload: String = message.get_payload()?;
            match payload.split_once(':') {
                Some(("key", hash)) => self.keys.evict_key_hash(hash),
                Some(("tenant", tenant_id)) => self.keys.evict_tenant(tenant_id),
                _ => tracing::warn!("unknown key invalidation message ignored"),
            }
        }
        Err(redis::RedisError::from((redis::ErrorKind::Io, "subscription ended")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    fn entry() -> Entry {
        let principal = Principal {
            key_id: "k1".into(),
            credential: crate::store::Credential::ApiKey,
            tenant_id: Some("t1".into()),
            tenant_status: Some("active".into()),
            tenant_plan: None,
            scopes: Vec::new(),
            expire_time: None,
        };
        Entry { principal: Some(Arc::new(principal)), fetched: Instant::now() }
    }

    fn unknown() -> Entry {
        Entry { principal: None, fetched: Instant::now() }
    }

    #[test]
    fn a_lookup_overtaken_by_an_eviction_is_not_kept() {
        let mut entries = Entries::default();
        let seen = entries.evictions;
        // The key is revoked while its row, read before, is on its way.
        entries.evict(|hash, _| hash == "h1");
        assert!(!entries.remember("h1".into(), entry(), seen, TTL));
        assert!(entries.by_hash.is_empty());
        // A lookup begun after the eviction is kept, until the next eviction of it.
        let seen = entries.evictions;
        assert!(entries.remember("h1".into(), entry(), seen, TTL));
        assert!(entries.remember("h2".into(), entry(), seen, TTL));
        entries.evict(|hash, _| hash == "h1");
        assert_eq!(entries.by_hash.keys().collect::<Vec<_>>(), ["h2"]);
    }

    #[test]
    fn a_flood_of_unknown_keys_never_pushes_known_keys_out() {
        let mut entries = Entries::default();
        let seen = entries.evictions;
        assert!(entries.remember("known".into(), entry(), seen, TTL));
        for n in 0..(MAX_ENTRIES + 5 * MAX_UNKNOWN_ENTRIES) {
            assert!(entries.remember(format!("made-up-{n}"), unknown(), seen, TTL));
        }
        assert!(entries.get("known", TTL).is_some_and(|entry| entry.principal.is_some()));
        assert!(entries.unknown.len() <= MAX_UNKNOWN_ENTRIES);
        let last = format!("made-up-{}", MAX_ENTRIES + 5 * MAX_UNKNOWN_ENTRIES - 1);
        assert!(entries.get(&last, TTL).is_some_and(|entry| entry.principal.is_none()), "the latest unknown kept");
        // A known key found gone since is unknown from then on.
        assert!(entries.remember("known".into(), unknown(), seen, TTL));
        assert!(entries.get("known", TTL).is_some_and(|entry| entry.principal.is_none()));
        // Known keys past the most kept: the expired ones make room, the others stay.
        let mut entries = Entries::default();
        let old = Entry { fetched: Instant::now() - 2 * TTL, ..entry() };
        for n in 0..MAX_ENTRIES - 1 {
            entries.remember(format!("old-{n}"), old.clone(), seen, TTL);
        }
        entries.remember("fresh".into(), entry(), seen, TTL);
        entries.remember("new".into(), entry(), seen, TTL);
        assert_eq!(entries.by_hash.len(), 2);
        assert!(entries.get("fresh", TTL).is_some() && entries.get("new", TTL).is_some());
        assert!(entries.get("old-0", TTL).is_none());
    }
}
