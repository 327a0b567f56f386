//! A fake OpenID Connect provider, the third party behind the gateway's JWT path: it serves its
//! JWKS at `/.well-known/jwks.json` over real HTTP on a free loopback port, counts the fetches, can
//! rotate its keys, answer slowly or fail, and signs tokens with the test-only keys of
//! `tests/fixtures/oidc/`.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aigronova_gateway::jwt::OidcConfig;
use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet, PublicKeyUse},
};
use serde_json::{Map, Value, json};

/// The audience the gateway is configured with and the tokens carry.
pub const AUDIENCE: &str = "aigronova-api";

/// The text of a fixture in `tests/fixtures/oidc/`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/oidc/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("fixture {path}: {error}"))
}

/// The DER inside a PEM document.
fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body is base64")
}

/// A signing key of the provider, under a key id.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub algorithm: Algorithm,
    key: EncodingKey,
}

impl TestKey {
    /// RSA 2048 (`rsa-1.pem`), for RS256.
    pub fn rsa(kid: &str) -> Self {
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(&pem_to_der(&fixture("rsa-1.pem"))))
    }

    /// Another RSA 2048 key (`rsa-2.pem`), the one rotated to.
    pub fn rsa_rotated(kid: &str) -> Self {
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(&pem_to_der(&fixture("rsa-2.pem"))))
    }

    /// ECDSA P-256 (`p256.pem`), for ES256.
    pub fn p256(kid: &str) -> Self {
        Self::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(&pem_to_der(&fixture("p256.pem"))))
    }

    /// Ed25519 (`ed25519.pem`), for EdDSA.
    pub fn ed25519(kid: &str) -> Self {
        Self::new(kid, Algorithm::EdDSA, EncodingKey::from_ed_der(&pem_to_der(&fixture("ed25519.pem"))))
    }

    fn new(kid: &str, algorithm: Algorithm, key: EncodingKey) -> Self {
        Self { kid: kid.to_owned(), algorithm, key }
    }

    /// The same key material under another key id.
    pub fn with_kid(&self, kid: &str) -> Self {
        Self { kid: kid.to_owned(), ..self.clone() }
    }

    /// The public JWK, as the provider publishes it.
    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).expect("a public JWK");
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk
    }

    /// A token with `claims`, signed with this key and naming it in `kid`.
    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// A token signed with this key but naming `kid`.
    pub fn sign_as(&self, kid: &str, claims: &Map<String, Value>) -> String {
        self.sign_with_header(claims, |header| header.kid = Some(kid.to_owned()))
    }

    /// A token with `claims` signed with this key, its header (naming this key) changed by `change`.
    pub fn sign_with_header(&self, claims: &Map<String, Value>, change: impl FnOnce(&mut Header)) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        change(&mut header);
        jsonwebtoken::encode(&header, claims, &self.key).expect("token signed")
    }

    /// A token whose payload is `payload` as written, byte for byte (a repeated claim, say, which
    /// no map holds), signed with this key and naming it.
    pub fn sign_payload(&self, payload: &str) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header as JSON"));
        let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, self.algorithm).expect("signed");
        format!("{message}.{signature}")
    }
}

#[derive(Default)]
struct ProviderState {
    keys: Mutex<Vec<Jwk>>,
    failing: AtomicBool,
    delay_ms: AtomicUsize,
    fetches: AtomicUsize,
}

/// The provider, serving until dropped.
pub struct FakeOidcProvider {
    pub issuer: String,
    pub jwks_url: String,
    state: Arc<ProviderState>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeOidcProvider {
    /// Starts serving a JWKS of `keys` on a free loopback port.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let state = Arc::new(ProviderState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let issuer = format!("http://{}", listener.local_addr().expect("bound address"));
        let router = Router::new().route("/.well-known/jwks.json", get(jwks)).with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the fake provider serves");
        });
        let provider = Self { jwks_url: format!("{issuer}/.well-known/jwks.json"), issuer, state, server };
        provider.publish(keys);
        provider
    }

    /// Replaces the published keys.
    pub fn publish(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|key| key.jwk()).collect();
    }

    /// Makes the JWKS endpoint answer 500 (`true`) or serve again (`false`).
    pub fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Holds every JWKS answer for `delay`, so that concurrent requests overlap a fetch.
    pub fn delay_answers(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    /// How many times the JWKS was requested.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Gateway settings that trust this provider; the minimum interval between fetches is 0 so that
    /// the tests can rotate keys at once.
    pub fn config(&self) -> OidcConfig {
        OidcConfig {
            issuer: self.issuer.clone(),
            audience: AUDIENCE.into(),
            jwks_url: self.jwks_url.clone(),
            jwks_min_refresh_interval_secs: 0,
            ..OidcConfig::default()
        }
    }

    /// The claims of a valid access token for `tenant_id` with `scope`, valid for ten minutes.
    pub fn claims(&self, tenant_id: &str, scope: &str) -> Map<String, Value> {
        let now = unix_now();
        let claims = json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "user-42",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "tenant_id": tenant_id,
            "scope": scope,
        });
        match claims {
            Value::Object(claims) => claims,
            _ => unreachable!("a JSON object"),
        }
    }
}

impl Drop for FakeOidcProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn jwks(State(state): State<Arc<ProviderState>>) -> axum::response::Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst) as u64;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if state.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "provider down").into_response();
    }
    let keys = state.keys.lock().unwrap().clone();
    Json(JwkSet { keys }).into_response()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}
