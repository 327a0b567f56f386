//! JWTs from an OIDC provider at the gateway: a fake provider serves a JWKS on a loopback port and
//! signs tokens with test-only RS256, ES256 and EdDSA keys.

use std::time::Duration;

use aigronova_e2e::{
    Backend, TestApp, assert_problem,
    oidc::{FakeOidcProvider, TestKey, unix_now},
    spawn_app, spawn_app_with,
};
use aigronova_gateway::jwt::OidcConfig;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

const READ_WRITE: &str = "health:read health:write";

async fn app_trusting(provider: &FakeOidcProvider, backend: Backend, change: impl FnOnce(&mut OidcConfig)) -> TestApp {
    let mut oidc = provider.config();
    change(&mut oidc);
    spawn_app_with(backend, |config| config.gateway.oidc = Some(oidc)).await
}

/// Checks a 401 problem with the RFC 6750 challenge, and returns the problem.
async fn assert_invalid_token(response: reqwest::Response) -> Value {
    let challenge = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let problem = assert_problem(response, 401).await;
    assert_eq!(challenge.as_deref(), Some(r#"Bearer error="invalid_token""#), "challenge of {problem}");
    problem
}

fn patient() -> Value {
    json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29"})
}

#[tokio::test]
async fn tokens_signed_with_rs256_es256_and_eddsa_keys_reach_the_health_api() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let keys = [TestKey::rsa("rsa-1"), TestKey::p256("p256-1"), TestKey::ed25519("ed25519-1")];
        let provider = FakeOidcProvider::start(&keys.iter().collect::<Vec<_>>()).await;
        let app = app_trusting(&provider, backend, |_| {}).await;
        let tenant = app.create_tenant("Clínica JWT").await;
        for key in &keys {
            let token = key.sign(&provider.claims(&tenant, READ_WRITE));
            let id = app.create_patient(&token).await;
            let response = app.get(&format!("/v1/health/patients/{id}"), &token).await;
            assert_eq!(response.status(), 200, "{:?} on {backend:?}", key.algorithm);
        }
        // Scopes as an array, a token that expired within the leeway, issued (by a clock a little
        // ahead) within it, and naming its tenant in another spelling of its UUID, are accepted too.
        let mut claims = provider.claims(&tenant, "");
        claims.insert("scope".into(), json!(["health:read", "health:write"]));
        claims.insert("exp".into(), json!(unix_now() - 10));
        claims.insert("iat".into(), json!(unix_now() + 10));
        claims.insert("tenant_id".into(), json!(tenant.to_uppercase()));
        // A CPF of its own: the tenant's first patient has the one `patient()` gives.
        let other = json!({"name": "Mário Souza", "cpf": "111.444.777-35", "birthDate": "1975-06-01"});
        let response = app.post("/v1/health/patients", &keys[0].sign(&claims), &other).await;
        assert_eq!(response.status(), 200, "array scopes, expired 10 s ago, issued in 10 s, on {backend:?}");
        // API keys keep working beside JWTs.
        let api_key = app.create_key(&tenant, &["health:read", "health:write"]).await;
        app.create_patient(&api_key).await;
        assert_eq!(app.count_health_rows("patients").await, 5, "{backend:?}");
        app.stop().await;
    }
}

/// Checks a 403 for a missing scope: the RFC 6750 challenge naming `scope`, and the problem.
async fn assert_insufficient_scope(response: reqwest::Response, scope: &str) -> Value {
    let challenge = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let problem = assert_problem(response, 403).await;
    let expected = format!(r#"Bearer error="insufficient_scope", scope="{scope}""#);
    assert_eq!(challenge, Some(expected), "challenge of {problem}");
    problem
}

#[tokio::test]
async fn a_token_without_the_scope_of_the_route_gets_403_naming_the_scope_the_token_lacks() {
    let key = TestKey::ed25519("ed25519-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |_| {}).await;
    let tenant = app.create_tenant("Clínica").await;
    let read_only = key.sign(&provider.claims(&tenant, "health:read"));
    let response = app.post("/v1/health/patients", &read_only, &patient()).await;
    let problem = assert_insufficient_scope(response, "health:write").await;
    assert_eq!(problem["detail"], r#"this token lacks the scope "health:write""#, "{problem}");
    // A token never carries the admin scope, whatever the provider says.
    let admin = key.sign(&provider.claims(&tenant, "admin health:write"));
    let response = app.post("/v1/admin/tenants", &admin, &json!({"name": "X", "plan": "starter"})).await;
    let problem = assert_insufficient_scope(response, "admin").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("a token never grants") && detail.contains("administrator API key"), "{problem}");
    // Nor the platform-wide metrics, which are for the operators' API keys.
    let scraper = key.sign(&provider.claims(&tenant, "metrics:read"));
    let problem = assert_insufficient_scope(app.get("/metrics", &scraper).await, "metrics:read").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("a token never grants") && detail.contains("operators' tenant"), "{problem}");
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

/// A token's tenant is read as an API key's is, from the gateway's cache: a suspension through the
/// admin API applies at once, while a change made in the database behind the gateway's back shows
/// only once the admin API says so (or the entry ages).
#[tokio::test]
async fn a_token_of_a_suspended_tenant_gets_403_its_tenant_read_from_the_key_cache() {
    use sqlx::Connection;

    let key = TestKey::rsa("rsa-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |_| {}).await;
    let tenant = app.create_tenant("Clínica").await;
    let token = key.sign(&provider.claims(&tenant, READ_WRITE));
    app.create_patient(&token).await;
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&app.gateway_database_url).await.unwrap();
    let sql = format!("UPDATE tenants SET status = 'suspended' WHERE id = '{tenant}'");
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut raw).await.unwrap();
    raw.close().await.unwrap();
    assert_eq!(app.get("/v1/health/patients", &token).await.status(), 200, "read from the cache");
    app.suspend_tenant(&tenant).await;
    assert_problem(app.post("/v1/health/patients", &token, &patient()).await, 403).await;
    app.stop().await;
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_get_401_invalid_token() {
    let rsa = TestKey::rsa("rsa-1");
    let p256 = TestKey::p256("p256-1");
    let provider = FakeOidcProvider::start(&[&rsa, &p256]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |_| {}).await;
    let tenant = app.create_tenant("Clínica").await;
    let now = unix_now();
    let claims = provider.claims(&tenant, READ_WRITE);
    let with = |changes: Value| {
        let mut claims = claims.clone();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.remove(name);
            } else {
                claims.insert(name.clone(), value.clone());
            }
        }
        claims
    };
    let b64 = |json: &Value| URL_SAFE_NO_PAD.encode(json.to_string());
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let secret = aigronova_e2e::oidc::fixture("rsa-1.pub.pem");
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    };
    let tampered = {
        let token = rsa.sign(&claims);
        let parts: Vec<&str> = token.split('.').collect();
        let escalated = with(json!({"scope": "health:read health:write governance:admin"}));
        format!("{}.{}.{}", parts[0], b64(&Value::Object(escalated)), parts[2])
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!("{}.{}.", b64(&json!({"alg": "none", "kid": "rsa-1"})), b64(&Value::Object(claims.clone()))),
        ),
        ("HS256 keyed with the RSA public key", hs256_with_public_key),
        ("signed by a key the provider does not publish", TestKey::rsa_rotated("x").sign_as("rsa-1", &claims)),
        ("ES256 naming the RSA key", p256.sign_as("rsa-1", &claims)),
        ("unknown kid", rsa.sign_as("no-such-kid", &claims)),
        ("tampered payload", tampered),
        ("wrong issuer", rsa.sign(&with(json!({"iss": "https://evil.example.com"})))),
        ("issuers as a list", rsa.sign(&with(json!({"iss": ["https://evil.example.com", provider.issuer]})))),
        ("wrong audience", rsa.sign(&with(json!({"aud": "another-api"})))),
        ("expired", rsa.sign(&with(json!({"exp": now - 120})))),
        ("not valid before the future", rsa.sign(&with(json!({"nbf": now + 120})))),
        ("no exp", rsa.sign(&with(json!({"exp": null})))),
        ("no sub", rsa.sign(&with(json!({"sub": null})))),
        ("no tenant claim", rsa.sign(&with(json!({"tenant_id": null})))),
        ("unknown tenant", rsa.sign(&with(json!({"tenant_id": "no-such-tenant"})))),
        ("scopes neither a string nor an array", rsa.sign(&with(json!({"scope": 7})))),
        ("issued in the future", rsa.sign(&with(json!({"iat": now + 3600})))),
        (
            "a critical header extension",
            rsa.sign_with_header(&claims, |header| header.crit = Some(vec!["urn:x".into()])),
        ),
    ];
    for (case, token) in cases {
        let response = app.post("/v1/health/patients", &token, &patient()).await;
        let problem = assert_invalid_token(response).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(!detail.contains(&token), "{case}: the detail repeats the token");
        eprintln!("{case}: {detail}");
    }
    // A claim of the wrong type is named malformed, not missing.
    for (claims, detail) in [
        (with(json!({"exp": "4102444800"})), r#"the token's "exp" claim is malformed"#),
        (with(json!({"exp": null})), r#"the token lacks the "exp" claim"#),
        (with(json!({"sub": 42})), r#"the token's "sub" claim is malformed"#),
        (with(json!({"iat": "1700000000"})), r#"the token's "iat" claim is malformed"#),
        (with(json!({"iat": now + 3600})), "the token was issued in the future (`iat`)"),
    ] {
        let problem = assert_invalid_token(app.post("/v1/health/patients", &rsa.sign(&claims), &patient()).await).await;
        assert_eq!(problem["detail"], detail);
    }
    // A claim named twice, however escaped, is refused: the gateway does not pick one of the two.
    let other = app.create_tenant("Outra clínica").await;
    let payload = Value::Object(claims.clone()).to_string();
    for repeated in [format!(r#""tenant_id":"{other}""#), format!(r#""tenant\u005fid":"{other}""#)] {
        let token = rsa.sign_payload(&format!("{},{repeated}}}", payload.strip_suffix('}').unwrap()));
        let problem = assert_invalid_token(app.post("/v1/health/patients", &token, &patient()).await).await;
        assert_eq!(problem["detail"], r#"the token names the "tenant_id" claim more than once"#, "{repeated}");
    }
    assert_eq!(
        app.post("/v1/health/patients", &rsa.sign_payload(&payload), &patient()).await.status(),
        200,
        "the same payload without the repeated claim is taken"
    );
    // A credential shaped as no JWT can be is told it is a malformed token, not an unknown API key.
    let header = b64(&json!({"typ": "JWT", "kid": "rsa-1"}));
    for malformed in [
        format!("{header}.e30.c2ln"),
        "a.b.c.d.e".to_owned(),
        "ey.+/=.x".to_owned(),
        r#"{"payload":"e30"}"#.to_owned(),
        // Not visible ASCII, as no credential is: still told as the token it was meant to be.
        format!("{header}.e30.c2ln\u{e9}"),
        format!("{header}.e30.c2ln, Bearer {header}.e30.c2ln"),
    ] {
        let problem = assert_invalid_token(app.post("/v1/health/patients", &malformed, &patient()).await).await;
        assert_eq!(problem["detail"], "the token is not a well-formed JWT", "{malformed}");
    }
    // Without a credential, both kinds it takes are named.
    let missing = assert_problem(app.client.get(app.url("/v1/health/models")).send().await.unwrap(), 401).await;
    assert_eq!(missing["detail"], "send an API key or a token as `Authorization: Bearer <key or token>`");
    assert_eq!(app.count_health_rows("patients").await, 1, "only the token without a repeated claim stored one");
    app.stop().await;
}

#[tokio::test]
async fn a_jwt_is_an_unknown_api_key_when_no_oidc_provider_is_configured() {
    let key = TestKey::rsa("rsa-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Clínica").await;
    let token = key.sign(&provider.claims(&tenant, READ_WRITE));
    assert_problem(app.post("/v1/health/patients", &token, &patient()).await, 401).await;
    assert_eq!(provider.fetches(), 0);
    // Without a credential, the one kind it takes is named.
    let missing = assert_problem(app.client.get(app.url("/v1/health/models")).send().await.unwrap(), 401).await;
    assert_eq!(missing["detail"], "send an API key as `Authorization: Bearer <key>`");
    app.stop().await;
}

#[tokio::test]
async fn the_gateway_follows_a_key_rotation_with_one_fetch_for_concurrent_requests() {
    let old = TestKey::rsa("2026-01");
    let provider = FakeOidcProvider::start(&[&old]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |_| {}).await;
    assert_eq!(provider.fetches(), 1, "the JWKS is fetched at start-up");
    let tenant = app.create_tenant("Clínica").await;
    let claims = provider.claims(&tenant, READ_WRITE);
    app.create_patient(&old.sign(&claims)).await;
    assert_eq!(provider.fetches(), 1, "a known kid needs no fetch");

    let new = TestKey::rsa_rotated("2026-02");
    provider.publish(&[&new]);
    app.create_patient(&new.sign(&claims)).await;
    assert_eq!(provider.fetches(), 2, "the unknown kid made the gateway fetch the JWKS once");
    let response = app.post("/v1/health/patients", &old.sign(&claims), &patient()).await;
    assert_invalid_token(response).await;
    assert_eq!(provider.fetches(), 3, "the retired kid is unknown again");

    // Eight requests with the next key arrive while the provider is slow to answer: one fetch.
    let next = TestKey::rsa("2026-03");
    provider.publish(&[&new, &next]);
    provider.delay_answers(Duration::from_millis(300));
    let token = next.sign(&claims);
    let path = format!("/v1/health/patients/{}", uuid::Uuid::new_v4());
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app.client.get(app.url(&path)).bearer_auth(&token);
        requests.spawn(async move { request.send().await.expect("request sent").status().as_u16() });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 404, "the token is accepted and the patient does not exist");
    }
    assert_eq!(provider.fetches(), 4, "concurrent requests with one unknown kid share one fetch");
    app.stop().await;
}

#[tokio::test]
async fn a_kid_the_last_fetch_lacked_is_a_401_for_tokens_issued_before_it_and_a_503_for_newer_ones() {
    let key = TestKey::rsa("rsa-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |oidc| oidc.jwks_min_refresh_interval_secs = 60).await;
    let tenant = app.create_tenant("Clínica").await;
    let mut old_claims = provider.claims(&tenant, READ_WRITE);
    old_claims["iat"] = json!(old_claims["iat"].as_i64().unwrap() - 120);
    let retired = TestKey::rsa("rsa-0");
    // Within the minimum interval no fetch is made; a token issued two minutes before the fetch
    // (past the leeway) names a key the provider would have published by then: refused for good.
    for _ in 0..3 {
        assert_invalid_token(app.post("/v1/health/patients", &retired.sign(&old_claims), &patient()).await).await;
    }
    // One issued now may name a key published since: it is told to come back.
    let fresh = retired.sign(&provider.claims(&tenant, READ_WRITE));
    let response = app.post("/v1/health/patients", &fresh, &patient()).await;
    assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
    let problem = assert_problem(response, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("retry shortly"), "{problem}");
    assert_eq!(provider.fetches(), 1, "no fetch within the minimum interval");
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

/// Checks a 503 for a token whose key cannot be fetched: `Retry-After`, no `invalid_token`
/// challenge (the token may be good), and a detail that says so.
async fn assert_keys_unreachable(response: reqwest::Response) {
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let challenge = response.headers().get("www-authenticate").cloned();
    let problem = assert_problem(response, 503).await;
    assert!(
        retry_after.and_then(|seconds| seconds.parse::<u64>().ok()).is_some_and(|seconds| seconds >= 1),
        "{problem}"
    );
    assert_eq!(challenge, None, "the token is not refused: {problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("signing keys cannot be fetched now"), "{problem}");
}

#[tokio::test]
async fn known_keys_keep_working_while_the_jwks_endpoint_fails_and_unknown_ones_get_503() {
    let key = TestKey::p256("p256-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |_| {}).await;
    let tenant = app.create_tenant("Clínica").await;
    let token = key.sign(&provider.claims(&tenant, READ_WRITE));
    let patient_path = format!("/v1/health/patients/{}", app.create_patient(&token).await);
    assert_eq!(provider.fetches(), 1);

    provider.fail(true);
    // The provider may have published this key since: the token is not known to be bad.
    let unknown = key.sign_as("p256-2", &provider.claims(&tenant, READ_WRITE));
    assert_keys_unreachable(app.post("/v1/health/patients", &unknown, &patient()).await).await;
    assert_eq!(provider.fetches(), 2, "the unknown kid made the gateway try a fetch");
    assert_eq!(app.get(&patient_path, &token).await.status(), 200, "the cached key still verifies");

    // Once the JWKS is fetched again, a kid it does not hold is the token's fault.
    provider.fail(false);
    assert_invalid_token(app.post("/v1/health/patients", &unknown, &patient()).await).await;
    assert_eq!(provider.fetches(), 3);
    app.stop().await;
}

#[tokio::test]
async fn keys_the_provider_withdraws_stop_verifying_once_the_jwks_is_fetched_again() {
    let key = TestKey::rsa("rsa-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |_| {}).await;
    let tenant = app.create_tenant("Clínica").await;
    let token = key.sign(&provider.claims(&tenant, READ_WRITE));
    let patient_path = format!("/v1/health/patients/{}", app.create_patient(&token).await);
    // Every key withdrawn (an emergency rotation): the next fetch empties the cache.
    provider.publish(&[]);
    let unknown = key.sign_as("rsa-2", &provider.claims(&tenant, READ_WRITE));
    assert_invalid_token(app.get(&patient_path, &unknown).await).await;
    assert_invalid_token(app.get(&patient_path, &token).await).await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_whose_jwks_cannot_be_fetched_at_all_gets_503_with_retry_after() {
    let key = TestKey::rsa("rsa-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let nowhere = format!("http://127.0.0.1:{}/.well-known/jwks.json", aigronova_e2e::port_to_start_later());
    let app = app_trusting(&provider, Backend::Sqlite, |oidc| oidc.jwks_url = nowhere).await;
    let tenant = app.create_tenant("Clínica").await;
    let token = key.sign(&provider.claims(&tenant, READ_WRITE));
    for _ in 0..2 {
        assert_keys_unreachable(app.post("/v1/health/patients", &token, &patient()).await).await;
    }
    assert_eq!(provider.fetches(), 0);
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_jwks_cache_is_refreshed_in_the_background_and_kept_when_that_fails() {
    let key = TestKey::rsa("rsa-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |oidc| oidc.jwks_refresh_secs = 1).await;
    assert_eq!(provider.fetches(), 1);
    let tenant = app.create_tenant("Clínica").await;
    let token = key.sign(&provider.claims(&tenant, READ_WRITE));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    provider.fail(true);
    app.create_patient(&token).await;
    for _ in 0..100 {
        if provider.fetches() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(provider.fetches(), 2, "the request that found the cache expired started one refresh");
    app.create_patient(&token).await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_kids_do_not_make_the_gateway_fetch_more_often_than_the_minimum_interval() {
    let key = TestKey::ed25519("ed25519-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |oidc| oidc.jwks_min_refresh_interval_secs = 600).await;
    assert_eq!(provider.fetches(), 1);
    let tenant = app.create_tenant("Clínica").await;
    let claims: Map<String, Value> = provider.claims(&tenant, READ_WRITE);
    // Within the interval a kid the last fetch lacks is not a refusal of the token, which the
    // provider may have signed with a key published since: 503, retry once a fetch may be made.
    for attempt in 0..5 {
        let token = key.sign_as(&format!("made-up-{attempt}"), &claims);
        let response = app.post("/v1/health/patients", &token, &patient()).await;
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert!(!response.headers().contains_key("www-authenticate"));
        let problem = assert_problem(response, 503).await;
        let seconds: u64 = retry_after.and_then(|seconds| seconds.parse().ok()).unwrap_or(0);
        assert!((590..=600).contains(&seconds), "{seconds}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("fetched moments ago"), "{problem}");
    }
    assert_eq!(provider.fetches(), 1, "made-up kids within the interval cause no fetch");
    app.create_patient(&key.sign(&claims)).await;
    app.stop().await;
}

/// A token's subject may be personal data (an e-mail): the audit log names the person behind it by
/// a keyed pseudonym, the same after a restart, and never by the subject itself.
#[tokio::test]
async fn the_audit_log_names_a_tokens_subject_by_a_pseudonym_kept_across_restarts() {
    let key = TestKey::ed25519("ed25519-1");
    let provider = FakeOidcProvider::start(&[&key]).await;
    let mut app = app_trusting(&provider, Backend::Sqlite, |_| {}).await;
    let tenant = app.create_tenant("Clínica Pseudônimo").await;
    let mut claims = provider.claims(&tenant, "health:read health:write governance:read");
    claims.insert("sub".into(), json!("maria.silva@example.com"));
    let token = key.sign(&claims);
    let actors = |entries: &[Value]| -> Vec<String> {
        entries
            .iter()
            .filter(|entry| entry["action"] == "health.CreatePatient")
            .map(|entry| {
                let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap()).expect("a JSON leaf");
                leaf["actor"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    };
    app.create_patient(&token).await;
    let entries = app.audit_entries_once(&token, |entries| actors(entries).len() == 1).await;
    let first = actors(&entries).remove(0);
    assert!(first.starts_with("jwt:") && first.len() == 36, "{first:?}: {entries:?}");
    assert!(!serde_json::to_string(&entries).unwrap().contains("maria"), "the subject in the log: {entries:?}");

    app.restart().await;
    let other = json!({"name": "Mário Souza", "cpf": "111.444.777-35", "birthDate": "1975-06-01"});
    assert_eq!(app.post("/v1/health/patients", &token, &other).await.status(), 200);
    let entries = app.audit_entries_once(&token, |entries| actors(entries).len() == 2).await;
    assert_eq!(actors(&entries), [first.clone(), first], "one pseudonym before and after the restart");
    app.stop().await;
}

/// Keys of different types may share a `kid` (RFC 7517 §4.5): each verifies the tokens of its own
/// algorithm.
#[tokio::test]
async fn keys_of_two_types_under_one_kid_each_verify_their_own_tokens() {
    let (p256, ed25519) = (TestKey::p256("shared"), TestKey::ed25519("shared"));
    let provider = FakeOidcProvider::start(&[&p256, &ed25519]).await;
    let app = app_trusting(&provider, Backend::Sqlite, |_| {}).await;
    let tenant = app.create_tenant("Clínica Chaves").await;
    for key in [&p256, &ed25519] {
        let response = app.get("/v1/health/patients", &key.sign(&provider.claims(&tenant, READ_WRITE))).await;
        assert_eq!(response.status(), 200, "{:?}", key.algorithm);
    }
    app.stop().await;
}
