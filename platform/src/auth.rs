//! The internal token: minted by the gateway for the calls it forwards, verified by every
//! service on every call (health checks aside). Services never trust a bare tenant header.
//!
//! Signing and verifying Ed25519 cost tens of microseconds, a large share of a small call: the
//! gateway reuses a caller's token for half its lifetime ([`TokenSigner::mint_reusable`]), and a
//! verifier remembers the tokens it has verified until they expire (an exact match of the whole
//! token, signature included, so a forged token never hits the memory).
//!
//! Format: `v1.<claims>.<signature>`, base64url without padding; the claims are JSON and the
//! Ed25519 signature covers `v1.<claims>`.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status, metadata::MetadataMap};

use crate::config::{ConfigError, Validate};

/// How long a minted token is valid. A reused token is at most half this old when it is sent, so
/// it covers its call and the call's retries.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Entries a signer's or a verifier's memory holds before it starts afresh.
const MEMORY_LIMIT: usize = 10_000;
/// Clock skew tolerated between the gateway and a service.
const LEEWAY_SECS: u64 = 5;
const VERSION: &str = "v1";

/// Keys of the internal token, base64 (standard alphabet) 32-byte Ed25519 keys.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InternalAuthConfig {
    /// The gateway's private signing key (a secret). `aigronova up` makes one per run when unset.
    pub signing_key: Option<String>,
    /// The public key services verify with. `aigronova up` derives it from the signing key.
    pub verifying_key: Option<String>,
    /// The domain services' own key (a secret), held by the domain services and ai-governance
    /// for the calls between them (audit events, model registration, data-subject requests).
    /// `aigronova up` makes one per run when unset.
    pub service_signing_key: Option<String>,
}

impl std::fmt::Debug for InternalAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalAuthConfig")
            .field("signing_key", &self.signing_key.as_ref().map(|_| "[redacted]"))
            .field("verifying_key", &self.verifying_key)
            .field("service_signing_key", &self.service_signing_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl Validate for InternalAuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.signing_key {
            TokenSigner::from_base64(key)?;
        }
        if let Some(key) = &self.verifying_key {
            TokenVerifier::from_base64(key)?;
        }
        if let Some(key) = &self.service_signing_key {
            TokenSigner::from_base64(key)
                .map_err(|_| ConfigError("internal_auth.service_signing_key must be a base64 32-byte key".into()))?;
        }
        Ok(())
    }
}

/// Who is calling a service, as the verified internal token says.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Caller {
    #[serde(rename = "ten")]
    pub tenant_id: String,
    #[serde(rename = "sub")]
    pub subject: String,
    #[serde(rename = "scp")]
    pub scopes: Vec<String>,
}

impl Caller {
    /// A domain service calling another on its own behalf (no tenant), with one scope.
    pub fn service(name: &str, scope: &str) -> Self {
        Self { tenant_id: String::new(), subject: format!("service:{name}"), scopes: vec![scope.to_owned()] }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|held| held == scope)
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    #[serde(flatten)]
    caller: Caller,
    iat: u64,
    exp: u64,
}

/// Why a token was refused. Never echoes the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("missing internal token")]
    Missing,
    #[error("malformed internal token")]
    Malformed,
    #[error("internal token signature does not verify")]
    BadSignature,
    #[error("internal token has expired")]
    Expired,
}

impl From<TokenError> for Status {
    fn from(error: TokenError) -> Self {
        Status::unauthenticated(error.to_string())
    }
}

/// Mints internal tokens (the gateway).
#[derive(Clone)]
pub struct TokenSigner {
    key: Arc<SigningKey>,
    /// Each caller's last token and when it was minted.
    minted: Arc<RwLock<HashMap<Caller, (String, u64)>>>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner([redacted])")
    }
}

impl TokenSigner {
    /// A fresh random key, for a process that runs the gateway and the services together.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system's random source is available");
        Self::from_seed(&seed)
    }

    fn from_seed(seed: &[u8; 32]) -> Self {
        Self { key: Arc::new(SigningKey::from_bytes(seed)), minted: Arc::default() }
    }

    pub fn from_base64(encoded: &str) -> Result<Self, ConfigError> {
        let seed = decode_key(encoded, "internal_auth.signing_key")?;
        Ok(Self::from_seed(&seed))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.to_bytes())
    }

    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(self.key.verifying_key())
    }

    /// A new token for `caller`.
    pub fn mint(&self, caller: &Caller) -> String {
        self.mint_at(caller, unix_now())
    }

    /// `caller`'s token: the last one minted for the same caller while it is less than half
    /// [`TOKEN_TTL`] old, a new one otherwise.
    pub fn mint_reusable(&self, caller: &Caller) -> String {
        self.mint_reusable_at(caller, unix_now())
    }

    fn mint_reusable_at(&self, caller: &Caller, now: u64) -> String {
        let fresh_after = now.saturating_sub(TOKEN_TTL.as_secs() / 2);
        if let Some((token, at)) = self.minted.read().unwrap_or_else(PoisonError::into_inner).get(caller)
            && *at > fresh_after
            && *at <= now
        {
            return token.clone();
        }
        let token = self.mint_at(caller, now);
        let mut minted = self.minted.write().unwrap_or_else(PoisonError::into_inner);
        if minted.len() >= MEMORY_LIMIT {
            minted.clear();
        }
        minted.insert(caller.clone(), (token.clone(), now));
        token
    }

    fn mint_at(&self, caller: &Caller, now: u64) -> String {
        let claims = Claims { caller: caller.clone(), iat: now, exp: now + TOKEN_TTL.as_secs() };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signed = format!("{VERSION}.{payload}");
        let signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Verifies internal tokens (every service).
#[derive(Clone)]
pub struct TokenVerifier {
    key: VerifyingKey,
    /// Tokens verified, with their caller and expiry.
    verified: Arc<RwLock<HashMap<String, (Caller, u64)>>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenVerifier({})", self.to_base64())
    }
}

impl TokenVerifier {
    fn new(key: VerifyingKey) -> Self {
        Self { key, verified: Arc::default() }
    }

    pub fn from_base64(encoded: &str) -> Result<Self, ConfigError> {
        let bytes = decode_key(encoded, "internal_auth.verifying_key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| ConfigError("internal_auth.verifying_key is not an Ed25519 public key".into()))?;
        Ok(Self::new(key))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.to_bytes())
    }

    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Caller, TokenError> {
        {
            let verified = self.verified.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((caller, exp)) = verified.get(token) {
                return if exp + LEEWAY_SECS < now { Err(TokenError::Expired) } else { Ok(caller.clone()) };
            }
        }
        let (caller, exp) = self.verify_signature_at(token, now)?;
        let mut verified = self.verified.write().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= MEMORY_LIMIT {
            verified.retain(|_, (_, exp)| *exp + LEEWAY_SECS >= now);
            if verified.len() >= MEMORY_LIMIT {
                verified.clear();
            }
        }
        verified.insert(token.to_owned(), (caller.clone(), exp));
        Ok(caller)
    }

    /// The caller and expiry of `token`, checked from scratch.
    fn verify_signature_at(&self, token: &str, now: u64) -> Result<(Caller, u64), TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (version, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if version != VERSION {
            return Err(TokenError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Malformed)?;
        self.key.verify(signed.as_bytes(), &signature).map_err(|_| TokenError::BadSignature)?;
        let claims = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&claims).map_err(|_| TokenError::Malformed)?;
        if claims.exp + LEEWAY_SECS < now || claims.iat > now + LEEWAY_SECS {
            return Err(TokenError::Expired);
        }
        Ok((claims.caller, claims.exp))
    }
}

/// The metadata key that carries the internal token.
pub const TOKEN_METADATA_KEY: &str = "authorization";

/// Puts `token` on an outgoing gRPC call.
pub fn attach_token(metadata: &mut MetadataMap, token: &str) {
    let value = format!("Bearer {token}").parse().expect("a token is ASCII");
    metadata.insert(TOKEN_METADATA_KEY, value);
}

/// Marks a request whose token a domain service signed with the service key (a call between
/// services), rather than the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FromService;

/// A tonic interceptor that verifies the internal token and stores the [`Caller`] in the
/// request's extensions; calls without a valid token end with `unauthenticated`.
#[derive(Clone, Debug)]
pub struct Authenticate {
    verifier: TokenVerifier,
    service_verifier: Option<TokenVerifier>,
}

impl Authenticate {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self { verifier, service_verifier: None }
    }

    /// Also accepts tokens signed with the services' key, marking those calls [`FromService`].
    pub fn with_service_key(verifier: TokenVerifier, service_verifier: Option<TokenVerifier>) -> Self {
        Self { verifier, service_verifier }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get(TOKEN_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(TokenError::Missing)?;
        let caller = match (self.verifier.verify(token), &self.service_verifier) {
            (Ok(caller), _) => caller,
            (Err(TokenError::BadSignature), Some(service_verifier)) => {
                let caller = service_verifier.verify(token)?;
                request.extensions_mut().insert(FromService);
                caller
            }
            (Err(error), _) => return Err(error.into()),
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// A tonic interceptor for `grpc.health.v1`: a check without a token is answered, as probes send
/// none, and one whose internal token does not verify with the gateway's key is refused, so that
/// the gateway's readiness check, which sends its token, finds a gateway whose key the service
/// does not take. (A token of the services' key is refused here too: no service checks another's
/// health.)
#[derive(Clone, Debug)]
pub struct RefuseForeignTokens(TokenVerifier);

impl RefuseForeignTokens {
    pub fn new(verifier: TokenVerifier) -> Self {
        Self(verifier)
    }
}

impl tonic::service::Interceptor for RefuseForeignTokens {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let token = request.metadata().get(TOKEN_METADATA_KEY).and_then(|value| value.to_str().ok());
        if let Some(token) = token {
            self.0.verify(token.strip_prefix("Bearer ").ok_or(TokenError::Malformed)?)?;
        }
        Ok(request)
    }
}

/// The verified caller of a request signed by a domain service holding `scope`; any other
/// caller is refused with `permission_denied`.
pub fn service_caller<T>(request: &Request<T>, scope: &str) -> Result<Caller, Status> {
    let caller = caller(request)?;
    if request.extensions().get::<FromService>().is_none() || !caller.has_scope(scope) {
        return Err(Status::permission_denied(format!("only a domain service with the {scope:?} scope may call this")));
    }
    Ok(caller.clone())
}

/// The verified caller of a request that went through [`Authenticate`].
pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Caller>().ok_or_else(|| Status::unauthenticated(TokenError::Missing.to_string()))
}

fn decode_key(encoded: &str, field: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ConfigError(format!("{field} is not base64")))?;
    bytes.try_into().map_err(|_| ConfigError(format!("{field} must be 32 bytes")))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller { tenant_id: "t1".into(), subject: "key-1".into(), scopes: vec!["health:read".into()] }
    }

    #[test]
    fn a_minted_token_verifies_and_carries_the_caller() {
        let signer = TokenSigner::generate();
        let token = signer.mint(&caller());
        assert_eq!(signer.verifier().verify(&token), Ok(caller()));
    }

    #[test]
    fn a_token_from_another_key_is_refused() {
        let token = TokenSigner::generate().mint(&caller());
        assert_eq!(TokenSigner::generate().verifier().verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_edited_claim_breaks_the_signature() {
        let signer = TokenSigner::generate();
        let token = signer.mint(&caller());
        let (_, payload, signature) = {
            let mut parts = token.split('.');
            (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
        };
        let mut claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["ten"] = "t2".into();
        let forged = format!("v1.{}.{signature}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()));
        assert_eq!(signer.verifier().verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let signer = TokenSigner::generate();
        let token = signer.mint_at(&caller(), 1_000);
        assert_eq!(signer.verifier().verify_at(&token, 1_000 + 61 + LEEWAY_SECS), Err(TokenError::Expired));
    }

    #[test]
    fn a_reusable_token_is_reused_for_half_its_lifetime() {
        let signer = TokenSigner::generate();
        let first = signer.mint_reusable_at(&caller(), 1_000);
        assert_eq!(signer.mint_reusable_at(&caller(), 1_029), first);
        assert_ne!(signer.mint_reusable_at(&caller(), 1_030), first, "half the lifetime has passed");
        let other = Caller { tenant_id: "t2".into(), ..caller() };
        assert_ne!(signer.mint_reusable_at(&other, 1_030), signer.mint_reusable_at(&caller(), 1_030));
        assert_eq!(signer.verifier().verify_at(&signer.mint_reusable_at(&other, 1_030), 1_031), Ok(other));
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_forgery_is_never_remembered() {
        let signer = TokenSigner::generate();
        let verifier = signer.verifier();
        let token = signer.mint_at(&caller(), 1_000);
        assert_eq!(verifier.verify_at(&token, 1_001), Ok(caller()));
        assert_eq!(verifier.verify_at(&token, 1_002), Ok(caller()), "from memory");
        assert_eq!(verifier.verify_at(&token, 1_000 + 61 + LEEWAY_SECS), Err(TokenError::Expired));
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(verifier.verify_at(&forged, 1_002).is_err());
        assert!(verifier.verify_at(&forged, 1_003).is_err(), "still refused the second time");
    }

    fn request_with(token: &str) -> Request<()> {
        let mut request = Request::new(());
        attach_token(request.metadata_mut(), token);
        request
    }

    #[test]
    fn a_service_token_is_accepted_only_with_the_service_key_and_is_marked() {
        use tonic::service::Interceptor;
        let gateway = TokenSigner::generate();
        let services = TokenSigner::generate();
        let service = Caller { tenant_id: String::new(), subject: "service:x".into(), scopes: vec!["a:b".into()] };
        let token = services.mint(&service);

        assert!(Authenticate::new(gateway.verifier()).call(request_with(&token)).is_err());
        let mut both = Authenticate::with_service_key(gateway.verifier(), Some(services.verifier()));
        let accepted = both.call(request_with(&token)).unwrap();
        assert_eq!(service_caller(&accepted, "a:b").unwrap(), service);
        assert!(service_caller(&accepted, "c:d").is_err(), "the scope is still checked");

        // The gateway's tokens pass, but never as a service's, whatever scopes they carry.
        let from_gateway = both.call(request_with(&gateway.mint(&service))).unwrap();
        assert_eq!(super::caller(&from_gateway).unwrap(), &service);
        assert_eq!(service_caller(&from_gateway, "a:b").unwrap_err().code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn garbage_is_malformed() {
        let verifier = TokenSigner::generate().verifier();
        for token in ["", "v1", "v1.abc", "v2.a.b", "v1.!!.??"] {
            assert_eq!(verifier.verify(token), Err(TokenError::Malformed), "{token:?}");
        }
    }

    #[test]
    fn keys_round_trip_through_base64() {
        let signer = TokenSigner::generate();
        let restored = TokenSigner::from_base64(&signer.to_base64()).unwrap();
        let verifier = TokenVerifier::from_base64(&signer.verifier().to_base64()).unwrap();
        assert_eq!(verifier.verify(&restored.mint(&caller())), Ok(caller()));
    }
}
