//! The identity provider's signing keys (JWKS): fetched over HTTP, cached for a while, fetched again
//! when a token names an unknown `kid` (one fetch however many requests wait for it, and not more
//! often than a minimum interval), and kept when a fetch fails so that a provider outage does not
//! lock every user out. A `kid` that is not cached while the JWKS cannot be fetched is not known to
//! be absent: that is told apart from a `kid` the fetched JWKS does not hold.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use aigronova_platform::config::redacted;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse},
};

/// How long one fetch of the JWKS may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS document larger than this is refused; real ones are a few kilobytes.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// RSA keys shorter than this are not trusted (RFC 7518 requires 2048 bits for RS256).
const MIN_RSA_MODULUS_BITS: usize = 2048;

/// The kind of public key, which decides the one algorithm it verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    Ed25519,
}

impl KeyKind {
    /// The algorithm a key of this kind verifies: RS256, ES256 or EdDSA, nothing else.
    pub(crate) fn algorithm(self) -> Algorithm {
        match self {
            Self::Rsa => Algorithm::RS256,
            Self::P256 => Algorithm::ES256,
            Self::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// A public key from the JWKS, checked and ready to verify signatures.
pub(crate) struct VerificationKey {
    pub(crate) kind: KeyKind,
    pub(crate) decoding_key: DecodingKey,
}

/// Why a fetch of the JWKS failed; the cached keys stay in use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// Without its URL, which the log names redacted.
    #[error("request failed: {0}")]
    Request(reqwest::Error),
    #[error("the provider answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS document: {0}")]
    Json(#[from] serde_json::Error),
}

/// The JWKS URL as the log shows it: without a user and password, nor a query or fragment, where
/// a provider may take an access token.
fn shown(url: &str) -> String {
    let redacted = redacted(url);
    redacted.split(['?', '#']).next().unwrap_or_default().to_owned()
}

impl From<reqwest::Error> for FetchError {
    fn from(error: reqwest::Error) -> Self {
        Self::Request(error.without_url())
    }
}

/// Why [`Jwks::key`] has no key for a `kid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MissingKey {
    /// The JWKS was fetched and does not hold the key.
    NotPublished,
    /// The JWKS names keys of other kinds only by this `kid`.
    OtherKind,
    /// The JWKS fetched last, less than the minimum interval ago (at `fetched_at`), does not hold
    /// the key; the next fetch may be attempted after `retry_after`.
    NotFetchedYet { retry_after: Duration, fetched_at: Option<SystemTime> },
    /// The JWKS cannot be fetched now, so the key may well be published; the next fetch may be
    /// attempted after `retry_after`.
    Unreachable { retry_after: Duration },
}

#[derive(serde::Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

/// The keys of the last successful fetch, by `kid`: one of each kind at most, as RFC 7517 lets
/// keys of different types share a `kid`.
#[derive(Default)]
struct Snapshot {
    keys: HashMap<String, Vec<Arc<VerificationKey>>>,
    fetched_at: Option<Instant>,
    /// `fetched_at` on the wall clock, which tokens' `iat` is compared with.
    fetched_when: Option<SystemTime>,
}

impl Snapshot {
    /// The key named `kid` of `kind`: `Err(true)` when `kid` names keys of other kinds only.
    fn key(&self, kid: &str, kind: KeyKind) -> Result<Arc<VerificationKey>, bool> {
        let named = self.keys.get(kid).ok_or(false)?;
        named.iter().find(|key| key.kind == kind).map(Arc::clone).ok_or(true)
    }
}

/// The cached JWKS of one provider.
pub(crate) struct Jwks {
    url: String,
    client: reqwest::Client,
    lifetime: Duration,
    min_interval: Duration,
    current: RwLock<Arc<Snapshot>>,
    /// Fetches attempted so far; a caller that saw it change while it waited knows a fetch happened.
    attempts: AtomicU64,
    /// Held during a fetch (single flight); holds the time of the last attempt.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// When the last failed fetch began; `None` once one succeeds.
    failed_at: Mutex<Option<Instant>>,
    background_refresh: AtomicBool,
}

impl Jwks {
    /// A cache of the JWKS at `url`, empty until [`Jwks::refresh`] or the first token.
    pub(crate) fn new(url: &str, lifetime: Duration, min_interval: Duration) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // A redirect is followed only where the configured URL could have pointed.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() > 3 {
                    attempt.error("more than three redirects")
                } else if crate::jwt::keys_may_come_from(attempt.url()) {
                    attempt.follow()
                } else {
                    attempt.error("redirected to plain http:// off this machine")
                }
            }))
            .user_agent(concat!("aigronova-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(Self {
            url: url.to_owned(),
            client,
            lifetime,
            min_interval,
            current: RwLock::new(Arc::default()),
            attempts: AtomicU64::new(0),
            refresh: tokio::sync::Mutex::new(None),
            failed_at: Mutex::new(None),
            background_refresh: AtomicBool::new(false),
        }))
    }

    /// The key named `kid` of `kind`. A cached key is returned at once (and refreshed in the
    /// background once the cache is older than its lifetime); an unknown one costs one fetch,
    /// shared by every caller waiting for it. Without the key, says whether the JWKS was fetched
    /// without it, holds `kid` for keys of other kinds only, or could not be fetched.
    pub(crate) async fn key(self: &Arc<Self>, kid: &str, kind: KeyKind) -> Result<Arc<VerificationKey>, MissingKey> {
        let attempts_seen = self.attempts.load(Ordering::SeqCst);
        let snapshot = self.snapshot();
        match snapshot.key(kid, kind) {
            Ok(key) => {
                if snapshot.fetched_at.is_none_or(|at| at.elapsed() >= self.lifetime) {
                    self.refresh_in_background(attempts_seen);
                }
                return Ok(key);
            }
            Err(true) => return Err(MissingKey::OtherKind),
            Err(false) => {}
        }
        let skipped = self.refresh_once(attempts_seen).await;
        match self.snapshot().key(kid, kind) {
            Ok(key) => return Ok(key),
            Err(true) => return Err(MissingKey::OtherKind),
            Err(false) => {}
        }
        match (*self.failed_at.lock().unwrap_or_else(PoisonError::into_inner), skipped) {
            (Some(at), _) => {
                Err(MissingKey::Unreachable { retry_after: self.min_interval.saturating_sub(at.elapsed()) })
            }
            // Not fetched for this request: the key may have been published since the last fetch.
            (None, Some(retry_after)) => {
                Err(MissingKey::NotFetchedYet { retry_after, fetched_at: self.snapshot().fetched_when })
            }
            (None, None) => Err(MissingKey::NotPublished),
        }
    }

    /// Fetches the JWKS now, unless a fetch was attempted less than the minimum interval ago.
    pub(crate) async fn refresh(&self) {
        self.refresh_once(self.attempts.load(Ordering::SeqCst)).await;
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// One fetch for every caller that saw `attempts_seen`: whoever gets the lock first fetches, and
    /// the others find the attempt counter moved and use its result.
    /// Returns how long until a fetch may be attempted when this caller's was skipped for the
    /// minimum interval; `None` when the JWKS was fetched (or its fetch attempted) for it.
    async fn refresh_once(&self, attempts_seen: u64) -> Option<Duration> {
        let mut last_attempt = self.refresh.lock().await;
        if self.attempts.load(Ordering::SeqCst) != attempts_seen {
            return None;
        }
        if let Some(at) = last_attempt.filter(|at| at.elapsed() < self.min_interval) {
            tracing::debug!("JWKS fetched recently; not fetching it again yet");
            return Some(self.min_interval.saturating_sub(at.elapsed()));
        }
        let started = Instant::now();
        *last_attempt = Some(started);
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(url = %shown(&self.url), keys = keys.values().map(Vec::len).sum::<usize>(), "JWKS fetched");
                let snapshot = Arc::new(Snapshot {
                    keys,
                    fetched_at: Some(Instant::now()),
                    fetched_when: Some(SystemTime::now()),
                });
                *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
                *self.failed_at.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
            Err(error) => {
                let cached = self.snapshot().keys.values().map(Vec::len).sum::<usize>();
                tracing::warn!(url = %shown(&self.url), %error, cached, "JWKS fetch failed; keeping the cached keys");
                // When the failed attempt began, from which the minimum interval to the next counts.
                *self.failed_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(started);
            }
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        None
    }

    /// Refreshes an expired cache without making the request that noticed it wait.
    fn refresh_in_background(self: &Arc<Self>, attempts_seen: u64) {
        if self.background_refresh.swap(true, Ordering::SeqCst) {
            return;
        }
        let jwks = Arc::clone(self);
        tokio::spawn(async move {
            jwks.refresh_once(attempts_seen).await;
            jwks.background_refresh.store(false, Ordering::SeqCst);
        });
    }

    async fn fetch(&self) -> Result<HashMap<String, Vec<Arc<VerificationKey>>>, FetchError> {
        let mut response =
            self.client.get(&self.url).header(reqwest::header::ACCEPT, "application/json").send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|length| length > MAX_JWKS_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let document: JwksDocument = serde_json::from_slice(&body)?;
        let mut keys: HashMap<String, Vec<Arc<VerificationKey>>> = HashMap::new();
        for (kid, key) in document.keys.into_iter().filter_map(usable_key) {
            let named = keys.entry(kid).or_default();
            // The first key of a kind under a `kid` is the one used.
            if named.iter().all(|held| held.kind != key.kind) {
                named.push(Arc::new(key));
            }
        }
        // The provider's word on its keys, even when it withdraws them all: tokens are then refused
        // (401), not verified with keys it no longer publishes.
        if keys.is_empty() {
            tracing::warn!(
                url = %shown(&self.url),
                "the JWKS holds no usable signing key (RSA of 2048 bits or more, P-256 or Ed25519, each with a kid); \
                 tokens are refused until it does"
            );
        }
        Ok(keys)
    }
}

/// The key of one JWK if it is a signing key this gateway accepts; other keys (encryption keys,
/// symmetric keys, other curves, short RSA moduli, keys without a `kid`) are skipped.
fn usable_key(value: serde_json::Value) -> Option<(String, VerificationKey)> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    let kid = jwk.common.key_id.clone().filter(|kid| !kid.is_empty())?;
    if jwk.common.public_key_use.as_ref().is_some_and(|usage| *usage != PublicKeyUse::Signature) {
        return None;
    }
    // Operations listed (RFC 7517 §4.3) must include verifying signatures.
    if jwk.common.key_operations.as_ref().is_some_and(|operations| !operations.contains(&KeyOperations::Verify)) {
        tracing::debug!(kid, "JWKS key skipped: its `key_ops` do not include `verify`");
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) if modulus_bits(&rsa.n)? >= MIN_RSA_MODULUS_BITS => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec)
            if ec.curve == EllipticCurve::P256 && decoded_len(&ec.x)? == 32 && decoded_len(&ec.y)? == 32 =>
        {
            KeyKind::P256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 && decoded_len(&okp.x)? == 32 => {
            KeyKind::Ed25519
        }
        _ => {
            tracing::debug!(kid, "JWKS key skipped: not an RSA (2048 bits or more), P-256 or Ed25519 signing key");
            return None;
        }
    };
    // A key that declares another algorithm than the one its type verifies is not used at all.
    if jwk.common.key_algorithm.is_some_and(|declared| declared != KeyAlgorithm::from(kind.algorithm())) {
        tracing::debug!(kid, "JWKS key skipped: its `alg` does not fit its key type");
        return None;
    }
    let decoding_key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((kid, VerificationKey { kind, decoding_key }))
}

fn decoded_len(base64url: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(base64url).ok().map(|bytes| bytes.len())
}

fn modulus_bits(base64url: &str) -> Option<usize> {
    let modulus = URL_SAFE_NO_PAD.decode(base64url).ok()?;
    let significant = modulus.iter().position(|byte| *byte != 0).map_or(&[][..], |first| &modulus[first..]);
    let leading = significant.first()?;
    Some(significant.len() * 8 - leading.leading_zeros() as usize)
}

/// Installs rustls with *ring* as the process's TLS crypto provider, unless one is installed already.
///
/// reqwest is built without its default provider (aws-lc, a large C and assembly build), so every
/// reqwest client in a process that links the gateway needs this first; [`crate::Gateway::build`]
/// calls it, and so may tests that make clients before starting a gateway.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one in between; either provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_https_jwks_url_that_does_not_answer_is_a_fetch_error_and_no_keys() {
        install_crypto_provider();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/jwks", listener.local_addr().unwrap());
        drop(listener);
        let jwks = Jwks::new(&url, Duration::from_secs(300), Duration::ZERO).unwrap();
        assert!(matches!(jwks.fetch().await, Err(FetchError::Request(_))));
        assert!(matches!(jwks.key("any", KeyKind::Rsa).await, Err(MissingKey::Unreachable { .. })));
        assert_eq!(jwks.attempts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn modulus_bits_ignores_leading_zero_bytes_and_bits() {
        let cases: &[(&[u8], usize)] = &[(&[0x00, 0x80, 0x00], 16), (&[0x01, 0xff], 9), (&[0xff; 256], 2048)];
        for (modulus, bits) in cases {
            assert_eq!(modulus_bits(&URL_SAFE_NO_PAD.encode(modulus)), Some(*bits), "{modulus:?}");
        }
        assert_eq!(modulus_bits(&URL_SAFE_NO_PAD.encode([0u8, 0])), None);
    }

    #[test]
    fn keys_the_gateway_cannot_trust_are_skipped() {
        let short_rsa = URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        let point = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let cases = [
            ("symmetric key", serde_json::json!({"kty": "oct", "kid": "a", "k": "c2VjcmV0"})),
            ("RSA of 1024 bits", serde_json::json!({"kty": "RSA", "kid": "a", "n": short_rsa, "e": "AQAB"})),
            ("P-384 key", serde_json::json!({"kty": "EC", "kid": "a", "crv": "P-384", "x": point, "y": point})),
            (
                "encryption key",
                serde_json::json!({"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": point, "use": "enc"}),
            ),
            (
                "key for encryption operations",
                serde_json::json!({"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": point, "key_ops": ["encrypt"]}),
            ),
            (
                "key for signing only",
                serde_json::json!({"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": point, "key_ops": ["sign"]}),
            ),
            (
                "key for no operation",
                serde_json::json!({"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": point, "key_ops": []}),
            ),
            ("no kid", serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": point})),
            ("short Ed25519 key", serde_json::json!({"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": "AAAA"})),
            (
                "encryption algorithm",
                serde_json::json!({"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": point, "alg": "RSA-OAEP"}),
            ),
            (
                "another algorithm",
                serde_json::json!({"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": point, "alg": "ES256"}),
            ),
        ];
        for (case, jwk) in cases {
            assert!(usable_key(jwk).is_none(), "{case} was accepted");
        }
        let ed25519 = serde_json::json!({"kty": "OKP", "kid": "a", "crv": "Ed25519", "x": point, "alg": "EdDSA"});
        let (kid, key) = usable_key(ed25519).expect("an Ed25519 signing key is usable");
        assert_eq!((kid.as_str(), key.kind), ("a", KeyKind::Ed25519));
        let verifying =
            serde_json::json!({"kty": "OKP", "kid": "b", "crv": "Ed25519", "x": point, "key_ops": ["verify"]});
        assert!(usable_key(verifying).is_some(), "a key whose operations include verify is usable");
    }
}
