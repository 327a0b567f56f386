//! JWTs from an OIDC provider as bearer credentials, beside API keys: signature checked against the
//! provider's JWKS (RS256, ES256 or EdDSA, the algorithm bound to the key's type), `exp`, `nbf`,
//! `iss` and `aud` checked with a small leeway, and the tenant and scopes read from configured claims.
//! A token that fails is a 401 with `WWW-Authenticate: Bearer error="invalid_token"`; one whose key is
//! not cached while the provider's JWKS cannot be fetched is a 503 with `Retry-After`, as the token
//! may well be good. Tokens are never logged.

use std::{net::IpAddr, sync::Arc, time::Duration};

use aigronova_platform::config::{ConfigError, Validate, redacted};
use axum::http::StatusCode;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{
    jwks::{Jwks, KeyKind, MissingKey},
    keys::KeyCache,
    problem::Problem,
    store::{ADMIN_SCOPE, Credential, METRICS_SCOPE, Principal},
};

/// Longest bearer token worth decoding.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `sub` kept in the principal (it becomes the subject of the internal token).
const MAX_SUBJECT_CHARS: usize = 255;
/// A leeway larger than this would let expired tokens in for minutes.
const MAX_LEEWAY_SECS: u64 = 300;

/// The signature algorithms the gateway can accept. HS* (a shared secret) and `none` are not
/// among them on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    RS256,
    ES256,
    EdDSA,
}

impl SigningAlgorithm {
    fn of(algorithm: Algorithm) -> Option<Self> {
        match algorithm {
            Algorithm::RS256 => Some(Self::RS256),
            Algorithm::ES256 => Some(Self::ES256),
            Algorithm::EdDSA => Some(Self::EdDSA),
            _ => None,
        }
    }
}

/// An OpenID Connect provider whose access tokens the gateway accepts (`[gateway.oidc]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` every token must carry, exactly as the provider writes it
    /// (e.g. `https://login.example.com/realms/aigronova`).
    pub issuer: String,
    /// The `aud` every token must contain: this API's identifier at the provider.
    pub audience: String,
    /// Where the provider publishes its signing keys: an `https://` URL (`http://` only on a
    /// loopback host).
    pub jwks_url: String,
    /// The claim naming the tenant (a tenant id of this gateway).
    pub tenant_claim: String,
    /// The claim holding the scopes: a space-separated string or an array of strings.
    pub scopes_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most 300).
    pub leeway_secs: u64,
    /// How long fetched keys are used before they are fetched again, in seconds.
    pub jwks_refresh_secs: u64,
    /// Least time between two fetches of the JWKS, in seconds, however many unknown `kid`s arrive.
    pub jwks_min_refresh_interval_secs: u64,
    /// Algorithms accepted, among `RS256`, `ES256` and `EdDSA`.
    pub allowed_algorithms: Vec<SigningAlgorithm>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            tenant_claim: "tenant_id".into(),
            scopes_claim: "scope".into(),
            leeway_secs: 30,
            jwks_refresh_secs: 300,
            jwks_min_refresh_interval_secs: 10,
            allowed_algorithms: vec![SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA],
        }
    }
}

impl Validate for OidcConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let required = [
            ("issuer", &self.issuer),
            ("audience", &self.audience),
            ("jwks_url", &self.jwks_url),
            ("tenant_claim", &self.tenant_claim),
            ("scopes_claim", &self.scopes_claim),
        ];
        for (name, value) in required {
            if value.trim().is_empty() {
                return Err(ConfigError(format!("gateway.oidc.{name} must be set")));
            }
        }
        check_jwks_url(&self.jwks_url)?;
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(ConfigError(format!("gateway.oidc.leeway_secs must be at most {MAX_LEEWAY_SECS}")));
        }
        if self.jwks_refresh_secs == 0 {
            return Err(ConfigError("gateway.oidc.jwks_refresh_secs must be positive".into()));
        }
        // Without a pause between fetches, every token naming an unknown key would fetch the JWKS.
        if self.jwks_min_refresh_interval_secs == 0 {
            return Err(ConfigError(
                "gateway.oidc.jwks_min_refresh_interval_secs must be at least 1, or any caller could make the \
                 gateway fetch the JWKS at will"
                    .into(),
            ));
        }
        if self.allowed_algorithms.is_empty() {
            return Err(ConfigError("gateway.oidc.allowed_algorithms must name at least one algorithm".into()));
        }
        Ok(())
    }
}

fn check_jwks_url(url: &str) -> Result<(), ConfigError> {
    let invalid = |why: &str| ConfigError(format!("gateway.oidc.jwks_url {why}, got {:?}", redacted(url)));
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid("must be a URL"))?;
    parsed.host_str().ok_or_else(|| invalid("must name a host"))?;
    if keys_may_come_from(&parsed) {
        Ok(())
    } else {
        Err(invalid("must be https:// (http:// only on a loopback host)"))
    }
}

/// Whether signing keys may be fetched from `url`, configured or redirected to: keys travel in
/// clear over `http://`, so only a provider on this machine may use it.
pub(crate) fn keys_may_come_from(url: &reqwest::Url) -> bool {
    let loopback = url.host_str().is_some_and(|host| {
        host == "localhost"
            || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => true,
        "http" => loopback,
        _ => false,
    }
}

/// Whether a bearer credential is meant as a JWT: it has the dots of a JWS or JWE compact
/// token or the brace of a JSON serialization. API keys (`agk_` and hex digits) never do, so a
/// malformed token is told it is one, not that it is no API key.
pub(crate) fn meant_as_jwt(credential: &str) -> bool {
    credential.contains('.') || credential.starts_with('{')
}

/// Why a token was not accepted; the message is the problem's detail, and says nothing of the token.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token names critical header parameters (`crit`), which this gateway does not take")]
    CriticalHeader,
    #[error("the token was issued in the future (`iat`)")]
    IssuedInFuture,
    #[error("the token's algorithm is not accepted; use one of {0}")]
    AlgorithmNotAccepted(String),
    #[error("the token has no `kid` header naming its signing key")]
    MissingKeyId,
    #[error("the token's signing key is not published by the identity provider")]
    UnknownKey,
    /// Not the token's fault: its key may be published, but the JWKS cannot be fetched to see.
    #[error("the identity provider's signing keys cannot be fetched now, so the token cannot be checked; retry later")]
    KeysUnreachable { retry_after: Duration },
    /// Not the token's fault either: its key may have been published since the JWKS was fetched,
    /// moments ago; it is fetched again after `retry_after`.
    #[error("the token's signing key is not among the identity provider's keys fetched moments ago; retry shortly")]
    KeyNotFetchedYet { retry_after: Duration },
    #[error("the token's algorithm does not match its signing key")]
    KeyMismatch,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token is not meant for this API (audience)")]
    Audience,
    #[error("the token lacks the {0:?} claim")]
    MissingClaim(String),
    #[error("the token's {0:?} claim is malformed")]
    MalformedClaim(String),
    /// RFC 7519 §4: claim names are unique; a parser that read only one of two would let the other
    /// say something else to whoever reads the token next.
    #[error("the token names the {0:?} claim more than once")]
    RepeatedClaim(String),
    #[error("the token's tenant is not known to this gateway")]
    UnknownTenant,
}

/// What a valid token says.
struct VerifiedClaims {
    subject: String,
    tenant_id: String,
    scopes: Vec<String>,
}

/// Verifies JWTs of one OIDC provider and turns them into principals.
pub(crate) struct JwtAuthenticator {
    jwks: Arc<Jwks>,
    issuer: String,
    audience: String,
    tenant_claim: String,
    scopes_claim: String,
    leeway_secs: u64,
    allowed: Vec<SigningAlgorithm>,
    /// The key of the subjects' pseudonyms (see [`JwtAuthenticator::pseudonym`]).
    pseudonym_key: String,
}

impl JwtAuthenticator {
    /// Prepares the verifier and fetches the JWKS once; a provider that is down only logs a
    /// warning, and the keys are fetched again when the first token arrives.
    pub(crate) async fn start(config: &OidcConfig, pseudonym_key: String) -> anyhow::Result<Self> {
        let jwks = Jwks::new(
            &config.jwks_url,
            Duration::from_secs(config.jwks_refresh_secs),
            Duration::from_secs(config.jwks_min_refresh_interval_secs),
        )?;
        jwks.refresh().await;
        Ok(Self {
            jwks,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            tenant_claim: config.tenant_claim.clone(),
            scopes_claim: config.scopes_claim.clone(),
            leeway_secs: config.leeway_secs,
            allowed: config.allowed_algorithms.clone(),
            pseudonym_key,
        })
    }

    /// How the platform names the person behind a token's `sub`: `jwt:` and 32 hex digits of a
    /// keyed digest, the same on every replica and after every start, so that the audit log tells
    /// one user's actions apart without holding what the provider calls them (which may be an
    /// e-mail or a CPF, and which a digest without a key would give away to a search).
    fn pseudonym(&self, subject: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.pseudonym_key.as_bytes())
            .chain_update([0])
            .chain_update(subject.as_bytes())
            .finalize();
        format!("jwt:{}", hex::encode(&digest[..16]))
    }

    /// The principal of a valid token whose tenant exists in the gateway's store; 401 otherwise.
    /// The `admin` and `metrics:read` scopes are never granted by a token: administration and the
    /// platform-wide metrics stay with API keys.
    pub(crate) async fn principal(&self, keys: &KeyCache, token: &str) -> Result<Principal, Problem> {
        let claims = self.verify(token).await.map_err(refused)?;
        // Read as API keys' tenants are: from the cache, which a suspension or a plan change
        // evicts on every replica at once.
        let tenant = keys.tenant(&claims.tenant_id).await.map_err(|error| {
            tracing::error!(request_id = crate::request_id::current().unwrap_or_default(), %error, "tenant lookup failed");
            Problem::internal()
        })?;
        let tenant = tenant.ok_or(TokenError::UnknownTenant).map_err(refused)?;
        Ok(Principal {
            key_id: self.pseudonym(&claims.subject),
            credential: Credential::Token,
            tenant_id: Some(tenant.id.clone()),
            tenant_status: Some(tenant.status.clone()),
            tenant_plan: Some(tenant.plan),
            scopes: claims.scopes,
            // `exp` was checked just now, and a JWT principal is never cached.
            expire_time: None,
        })
    }

    async fn verify(&self, token: &str) -> Result<VerifiedClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = token_header(token)?;
        // RFC 7515 §4.1.11: a token whose critical extensions the recipient does not take is refused.
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        let algorithm = header
            .alg
            .parse::<Algorithm>()
            .ok()
            .filter(|algorithm| SigningAlgorithm::of(*algorithm).is_some_and(|alg| self.allowed.contains(&alg)))
            .ok_or_else(|| TokenError::AlgorithmNotAccepted(self.allowed_names()))?;
        let kid = header.kid.filter(|kid| !kid.is_empty()).ok_or(TokenError::MissingKeyId)?;
        let kind = match algorithm {
            Algorithm::ES256 => KeyKind::P256,
            Algorithm::EdDSA => KeyKind::Ed25519,
            // RS256, the one other algorithm accepted above.
            _ => KeyKind::Rsa,
        };
        let key = self.jwks.key(&kid, kind).await.map_err(|missing| match missing {
            MissingKey::NotPublished => TokenError::UnknownKey,
            MissingKey::OtherKind => TokenError::KeyMismatch,
            MissingKey::Unreachable { retry_after } => TokenError::KeysUnreachable { retry_after },
            // Issued before the JWKS fetched last, which lacks its key: the provider had published
            // the key it signs with by then, or never will (the `iat` read unverified, as it can only
            // turn one refusal into another).
            MissingKey::NotFetchedYet { fetched_at: Some(fetched), .. }
                if unverified_iat(token)
                    .is_some_and(|issued| issued.saturating_add(self.leeway_secs as i64) < unix_seconds(fetched)) =>
            {
                TokenError::UnknownKey
            }
            MissingKey::NotFetchedYet { retry_after, .. } => TokenError::KeyNotFetchedYet { retry_after },
        })?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding_key, &self.validation(algorithm))
            .map_err(|error| match token_error(error.into_kind()) {
                // The verifier calls a claim of the wrong type (`"exp": "123"`) missing.
                TokenError::MissingClaim(claim) if payload_names(token, &claim) => TokenError::MalformedClaim(claim),
                error => error,
            })?
            .claims;
        if let Some(claim) = token.split('.').nth(1).and_then(repeated_claim) {
            return Err(TokenError::RepeatedClaim(claim));
        }
        self.claims(claims)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation
    }

    fn claims(&self, mut claims: Map<String, Value>) -> Result<VerifiedClaims, TokenError> {
        // The issuer checked above, as one string: RFC 7519 has no list of issuers, which the
        // verifier would accept when any of them matches.
        if !claims.get("iss").is_some_and(Value::is_string) {
            return Err(TokenError::MalformedClaim("iss".into()));
        }
        // An issue time, when given, is a number of seconds not past now (with the leeway).
        match claims.get("iat") {
            None => {}
            Some(Value::Number(issued)) => {
                let now = unix_seconds(std::time::SystemTime::now()) as f64;
                if issued.as_f64().is_none_or(|issued| issued > now + self.leeway_secs as f64) {
                    return Err(TokenError::IssuedInFuture);
                }
            }
            Some(_) => return Err(TokenError::MalformedClaim("iat".into())),
        }
        let subject = match claims.remove("sub") {
            Some(Value::String(sub)) if !sub.is_empty() && sub.chars().count() <= MAX_SUBJECT_CHARS => sub,
            _ => return Err(TokenError::MalformedClaim("sub".into())),
        };
        let tenant_id = match claims.remove(&self.tenant_claim) {
            // A tenant's id is a UUID, read in any of its spellings, as the admin API reads it.
            Some(Value::String(tenant)) if !tenant.is_empty() => {
                uuid::Uuid::parse_str(&tenant).map_or(tenant, |uuid| uuid.to_string())
            }
            Some(_) => return Err(TokenError::MalformedClaim(self.tenant_claim.clone())),
            None => return Err(TokenError::MissingClaim(self.tenant_claim.clone())),
        };
        let scopes: Vec<String> = match claims.remove(&self.scopes_claim) {
            None => Vec::new(),
            Some(Value::String(scopes)) => scopes.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(scopes)) => scopes
                .into_iter()
                .map(|scope| match scope {
                    Value::String(scope) => Ok(scope),
                    _ => Err(TokenError::MalformedClaim(self.scopes_claim.clone())),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(TokenError::MalformedClaim(self.scopes_claim.clone())),
        };
        // Administration and the platform-wide metrics stay with API keys.
        let scopes = scopes.into_iter().filter(|scope| scope != ADMIN_SCOPE && scope != METRICS_SCOPE).collect();
        Ok(VerifiedClaims { subject, tenant_id, scopes })
    }

    fn allowed_names(&self) -> String {
        let names: Vec<&str> = self
            .allowed
            .iter()
            .map(|alg| match alg {
                SigningAlgorithm::RS256 => "RS256",
                SigningAlgorithm::ES256 => "ES256",
                SigningAlgorithm::EdDSA => "EdDSA",
            })
            .collect();
        names.join(", ")
    }
}

#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

/// The JOSE header, read before the signature is checked only to pick the key.
fn token_header(token: &str) -> Result<TokenHeader, TokenError> {
    let header = token.split('.').next().ok_or(TokenError::Malformed)?;
    let json = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// The token's payload, read without verifying the token: only to word a refusal.
fn unverified_payload(token: &str) -> Option<Map<String, Value>> {
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&payload).ok()
}

/// The token's `iat` (seconds since the epoch), read without verifying the token.
fn unverified_iat(token: &str) -> Option<i64> {
    unverified_payload(token)?.get("iat")?.as_i64()
}

/// The first claim name the token's payload (`payload`, base64url) names twice, escapes read:
/// `"tenant_id"` and `"tenant\u005fid"` are one name.
fn repeated_claim(payload: &str) -> Option<String> {
    struct FirstRepeated(Option<String>);

    impl<'de> Deserialize<'de> for FirstRepeated {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(FirstRepeatedVisitor)
        }
    }

    struct FirstRepeatedVisitor;

    impl<'de> serde::de::Visitor<'de> for FirstRepeatedVisitor {
        type Value = FirstRepeated;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut members: A) -> Result<FirstRepeated, A::Error> {
            let mut names = std::collections::HashSet::new();
            let mut repeated = None;
            while let Some(name) = members.next_key::<String>()? {
                members.next_value::<serde::de::IgnoredAny>()?;
                if repeated.is_none() && !names.insert(name.clone()) {
                    repeated = Some(name);
                }
            }
            Ok(FirstRepeated(repeated))
        }
    }

    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<FirstRepeated>(&json).ok()?.0
}

fn unix_seconds(at: std::time::SystemTime) -> i64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs() as i64)
}

/// Whether the payload of `token` has a member named `claim`, whatever its value.
fn payload_names(token: &str, claim: &str) -> bool {
    unverified_payload(token).is_some_and(|payload| payload.contains_key(claim))
}

fn token_error(kind: ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim),
        ErrorKind::InvalidClaimFormat(claim) => TokenError::MalformedClaim(claim),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => TokenError::KeyMismatch,
        _ => TokenError::Malformed,
    }
}

fn refused(error: TokenError) -> Problem {
    if let TokenError::KeysUnreachable { retry_after } | TokenError::KeyNotFetchedYet { retry_after } = &error {
        // The fetch failure is logged where it happened (`jwks`).
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).with_retry_after(seconds.max(1));
    }
    tracing::debug!(reason = %error, "bearer token refused");
    Problem::invalid_token(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_over_https_or_from_this_machine_only() {
        for (url, allowed) in [
            ("https://idp.example.com/jwks.json", true),
            ("http://127.0.0.1:8080/jwks.json", true),
            ("http://[::1]:8080/jwks.json", true),
            ("http://localhost/jwks.json", true),
            ("http://192.0.2.2:18572/jwks.json", false),
            ("http://idp.example.com/jwks.json", false),
            ("ftp://127.0.0.1/jwks.json", false),
        ] {
            assert_eq!(keys_may_come_from(&reqwest::Url::parse(url).unwrap()), allowed, "{url}");
        }
    }

    #[test]
    fn a_claim_named_twice_is_found_however_it_is_spelled() {
        let encoded = |json: &str| URL_SAFE_NO_PAD.encode(json);
        for (payload, repeated) in [
            (r#"{"sub":"a","tenant_id":"t1","tenant_id":"t2"}"#, Some("tenant_id")),
            (r#"{"tenant_id":"t1","tenant\u005fid":"t2"}"#, Some("tenant_id")),
            (r#"{"scope":"a","aud":"x","scope":{"nested":1},"aud":"y"}"#, Some("scope")),
            (r#"{"sub":"a","tenant_id":"t1","extra":{"k":1,"k":2}}"#, None),
            (r#"{"sub":"a","tenant_id":"t1"}"#, None),
            ("not json", None),
        ] {
            assert_eq!(repeated_claim(&encoded(payload)).as_deref(), repeated, "{payload}");
        }
    }

    #[test]
    fn credentials_with_dots_or_a_brace_are_meant_as_jwts() {
        for credential in ["eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "a.b.c", "a.b.c.d.e", "a.b", r#"{"payload":"e30"}"#] {
            assert!(meant_as_jwt(credential), "{credential}");
        }
        for credential in ["agk_0123456789abcdef", "chave", "eyJhbGciOiJSUzI1NiJ9"] {
            assert!(!meant_as_jwt(credential), "{credential}");
        }
    }

    #[test]
    fn bad_oidc_settings_are_refused() {
        let valid = OidcConfig {
            issuer: "https://login.example.com".into(),
            audience: "aigronova".into(),
            jwks_url: "https://login.example.com/jwks".into(),
            ..OidcConfig::default()
        };
        assert!(valid.validate().is_ok());
        type Change = fn(&mut OidcConfig);
        let cases: [(&str, Change); 9] = [
            ("no issuer", |c| c.issuer.clear()),
            ("no audience", |c| c.audience.clear()),
            ("plain http to another host", |c| c.jwks_url = "http://login.example.com/jwks".into()),
            ("not a URL", |c| c.jwks_url = "login.example.com/jwks".into()),
            ("no tenant claim", |c| c.tenant_claim = " ".into()),
            ("a leeway of an hour", |c| c.leeway_secs = 3600),
            ("no pause between JWKS fetches", |c| c.jwks_min_refresh_interval_secs = 0),
            ("a cache that never lives", |c| c.jwks_refresh_secs = 0),
            ("no algorithm", |c| c.allowed_algorithms.clear()),
        ];
        for (case, change) in cases {
            let mut config = valid.clone();
            change(&mut config);
            assert!(config.validate().is_err(), "{case} was accepted");
        }
        for url in ["http://127.0.0.1:8081/jwks", "http://localhost/jwks", "http://[::1]:9000/jwks"] {
            let config = OidcConfig { jwks_url: url.into(), ..valid.clone() };
            assert!(config.validate().is_ok(), "{url} was refused");
        }
    }

    #[test]
    fn an_oidc_section_with_only_the_provider_takes_the_defaults() {
        let section = serde_json::json!({
            "issuer": "https://login.example.com",
            "audience": "aigronova",
            "jwks_url": "https://login.example.com/jwks",
        });
        let config: OidcConfig = serde_json::from_value(section).unwrap();
        assert_eq!((config.tenant_claim.as_str(), config.scopes_claim.as_str()), ("tenant_id", "scope"));
        assert_eq!(
            (config.leeway_secs, config.jwks_refresh_secs, config.jwks_min_refresh_interval_secs),
            (30, 300, 10)
        );
        assert_eq!(
            config.allowed_algorithms,
            [SigningAlgorithm::RS256, SigningAlgorithm::ES256, SigningAlgorithm::EdDSA]
        );
        assert!(config.validate().is_ok());
        let typo =
            serde_json::json!({"issuer": "https://login.example.com", "jwks_uri": "https://login.example.com/jwks"});
        assert!(serde_json::from_value::<OidcConfig>(typo).is_err(), "an unknown field is refused");
    }

    #[test]
    fn hs256_and_none_cannot_be_configured() {
        for name in ["HS256", "none", "PS256"] {
            let parsed = serde_json::from_value::<SigningAlgorithm>(Value::String(name.into()));
            assert!(parsed.is_err(), "{name} was accepted");
        }
    }
}
