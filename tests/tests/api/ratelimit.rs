//! Rate limits and the monthly inference quota at the gateway, in-process and in Redis, and what
//! a tenant call meets when Redis is down.

use std::time::Duration;

use aigronova_cli::AppConfig;
use aigronova_e2e::{
    Backend, TestApp, assert_problem, models_dir, redis_url, spawn_app, spawn_app_with, unique_redis_prefix,
};
use aigronova_gateway::{plans::PlanLimits, ratelimit::RedisFailure};
use serde_json::{Value, json};

/// A patient that does not exist: the service answers 404.
const NOBODY: &str = "/v1/health/patients/0190a5d1-0000-7000-8000-000000000000";

/// Where the limits live in a test.
#[derive(Clone, Copy, Debug)]
enum Limiter {
    InProcess,
    Redis,
}

/// Starter limits for tests: `burst` requests at once, then one every 100 s (far longer than
/// a test), and `quota` inference calls a month.
fn small_starter_plan(config: &mut AppConfig, limiter: Limiter, burst: u32, quota: u64) {
    config.gateway.plans.starter =
        PlanLimits { requests_per_second: 0.01, burst, monthly_inference_quota: quota, ..PlanLimits::default() };
    if let Limiter::Redis = limiter {
        config.gateway.redis_url = Some(redis_url());
        config.gateway.rate_limit.redis_key_prefix = unique_redis_prefix();
        config.gateway.rate_limit.redis_failure = RedisFailure::Closed;
    }
}

/// Every value of a header, joined as one structured-field list.
fn header(response: &reqwest::Response, name: &str) -> String {
    let values: Vec<&str> = response.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
    values.join(", ")
}

fn assessment_body() -> Value {
    let path = models_dir().join("breast-cancer/1/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json")).unwrap();
    json!({"model": "breast-cancer", "features": reference["rows"][0]["features"]})
}

/// A counter of the gateway's `/metrics`, by its name and labels as written there; zero when absent.
async fn counter(app: &TestApp, series: &str) -> u64 {
    let metrics = app.get("/metrics", &app.admin_key).await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn every_refusal_reason_is_a_series_from_the_start() {
    let app = spawn_app(Backend::Sqlite).await;
    let metrics = app.get("/metrics", &app.admin_key).await.text().await.unwrap();
    for reason in ["tenant", "key", "quota", "concurrency"] {
        let series = format!(r#"aigronova_gateway_rate_limited_total{{reason="{reason}"}} "#);
        assert!(metrics.lines().any(|line| line.starts_with(&series)), "{reason}: {metrics}");
    }
    app.stop().await;
}

const RATE_REFUSALS: &str = r#"aigronova_gateway_rate_limited_total{reason="tenant"}"#;
const KEY_REFUSALS: &str = r#"aigronova_gateway_rate_limited_total{reason="key"}"#;
const QUOTA_REFUSALS: &str = r#"aigronova_gateway_rate_limited_total{reason="quota"}"#;

async fn rate_limited_gateway_refuses_past_the_burst(limiter: Limiter) {
    let app = spawn_app_with(Backend::Sqlite, |config| small_starter_plan(config, limiter, 5, 100)).await;
    let (tenant, key) = app.tenant_with_key().await;
    let refusals = counter(&app, RATE_REFUSALS).await;
    for remaining in (0..5).rev() {
        let response = app.get(NOBODY, &key).await;
        assert_eq!(response.status(), 404, "{limiter:?}: within the burst the call reaches the service");
        assert_eq!(header(&response, "ratelimit-policy"), r#""tenant";q=5;w=500"#);
        assert!(header(&response, "ratelimit").starts_with(&format!(r#""tenant";r={remaining};t="#)));
    }
    let response = app.get(NOBODY, &key).await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry_after), "{limiter:?}: at most one emission interval, got {retry_after}");
    assert_eq!(header(&response, "ratelimit-policy"), r#""tenant";q=5;w=500"#);
    assert!(header(&response, "ratelimit").starts_with(r#""tenant";r=0;t="#));
    let problem = assert_problem(response, 429).await;
    assert!(problem["detail"].as_str().unwrap().contains("requests per second"), "{problem}");
    assert_eq!(counter(&app, RATE_REFUSALS).await, refusals + 1, "{limiter:?}: the refusal is counted");
    // A plan change, even one back to this plan, starts the tenant afresh.
    for plan in ["professional", "starter"] {
        let path = format!("/v1/admin/tenants/{tenant}");
        let changed = app.patch(&path, &app.admin_key, &serde_json::json!({"plan": plan})).await;
        assert_eq!(changed.status(), 200, "{plan}");
    }
    let response = app.get(NOBODY, &key).await;
    assert_eq!(response.status(), 404, "{limiter:?}: the burst whole again");
    assert!(header(&response, "ratelimit").starts_with(r#""tenant";r=4;t="#), "{limiter:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_starter_tenant_past_its_burst_gets_429_with_retry_after_and_ratelimit_headers_in_process() {
    rate_limited_gateway_refuses_past_the_burst(Limiter::InProcess).await;
}

#[tokio::test]
async fn a_starter_tenant_past_its_burst_gets_429_with_retry_after_and_ratelimit_headers_in_redis() {
    rate_limited_gateway_refuses_past_the_burst(Limiter::Redis).await;
}

#[tokio::test]
async fn two_gateways_sharing_one_redis_limit_a_tenant_together() {
    let mut app = spawn_app_with(Backend::Postgres, |config| small_starter_plan(config, Limiter::Redis, 5, 100)).await;
    let replica = app.start_gateway_replica().await;
    let (_, key) = app.tenant_with_key().await;
    let mut statuses = Vec::new();
    for round in 0..10 {
        let gateway = if round % 2 == 0 { app.address.clone() } else { replica.clone() };
        statuses.push(app.get_from(&gateway, NOBODY, &key).await.status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 404, 404, 404, 429, 429, 429, 429, 429], "one burst for both gateways");
    app.stop().await;
}

/// Without the invalidation channel (Redis down), a replica cannot hear of another's revocation:
/// it looks keys up in the shared database instead of its cache, so the revocation still holds at once.
#[tokio::test]
async fn with_redis_down_a_key_revoked_on_one_gateway_is_refused_by_the_other_at_once() {
    let mut app = spawn_app_with(Backend::Postgres, |config| {
        config.gateway.redis_url = Some("redis://127.0.0.1:1".into());
        config.gateway.rate_limit.redis_failure = RedisFailure::Open;
        config.gateway.key_cache_secs = 300;
    })
    .await;
    let replica = app.start_gateway_replica().await;
    let (tenant, key) = app.tenant_with_key().await;
    assert_eq!(app.get_from(&replica, NOBODY, &key).await.status(), 404, "the replica knows the key");
    let listed: serde_json::Value =
        app.get(&format!("/v1/admin/tenants/{tenant}/api-keys"), &app.admin_key).await.json().await.unwrap();
    let key_id = listed["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    let revoked = app.delete(&format!("/v1/admin/tenants/{tenant}/api-keys/{key_id}"), &app.admin_key).await;
    assert_eq!(revoked.status(), 204);
    assert_problem(app.get_from(&replica, NOBODY, &key).await, 401).await;
    // Each change is published once, within `redis_timeout_ms` (250 ms): the administrator's calls
    // are not held by the Redis that cannot be reached (they waited 9 s each on reconnections).
    for status in ["suspended", "active", "suspended", "active"] {
        let changed = tokio::time::timeout(
            Duration::from_secs(3),
            app.patch(&format!("/v1/admin/tenants/{tenant}"), &app.admin_key, &serde_json::json!({"status": status})),
        )
        .await
        .expect("the change is answered without waiting on Redis");
        assert_eq!(changed.status(), 200, "{status}");
    }
    app.stop().await;
}

/// A Professional plan whose keys are limited on their own: 4 requests at once for the tenant,
/// 2 for each key.
async fn key_limits_hold_one_key_back_and_not_the_others(limiter: Limiter) {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        small_starter_plan(config, limiter, 1, 100);
        config.gateway.plans.professional =
            PlanLimits { requests_per_second: 0.01, burst: 4, key_share: 0.5, ..PlanLimits::default() };
    })
    .await;
    let tenant = app.create_tenant_on("Clínica Teste", "professional").await;
    let (busy, quiet) =
        (app.create_key(&tenant, &["health:read"]).await, app.create_key(&tenant, &["health:read"]).await);
    let (refusals, key_refusals) = (counter(&app, RATE_REFUSALS).await, counter(&app, KEY_REFUSALS).await);
    for remaining in [1, 0] {
        let response = app.get(NOBODY, &busy).await;
        assert_eq!(response.status(), 404, "{limiter:?}");
        assert_eq!(header(&response, "ratelimit-policy"), r#""tenant";q=4;w=400, "key";q=2;w=400"#);
        assert!(header(&response, "ratelimit").contains(&format!(r#""key";r={remaining};t="#)));
    }
    let response = app.get(NOBODY, &busy).await;
    assert!(header(&response, "ratelimit").starts_with(r#""tenant";r=2;t="#), "the tenant has room left");
    let problem = assert_problem(response, 429).await;
    assert!(problem["detail"].as_str().unwrap().starts_with("this API key sent more than"), "{problem}");
    for _ in 0..2 {
        assert_eq!(app.get(NOBODY, &quiet).await.status(), 404, "{limiter:?}: another key of the tenant still passes");
    }
    let problem = assert_problem(app.get(NOBODY, &quiet).await, 429).await;
    assert!(problem["detail"].as_str().unwrap().starts_with("the tenant sent more than"), "{problem}");
    assert_eq!(counter(&app, KEY_REFUSALS).await, key_refusals + 1, "the key's limit refused the first");
    assert_eq!(counter(&app, RATE_REFUSALS).await, refusals + 1, "the tenant's the second");
    app.stop().await;
}

#[tokio::test]
async fn a_key_past_its_own_limit_gets_429_while_the_tenants_other_keys_pass_in_process() {
    key_limits_hold_one_key_back_and_not_the_others(Limiter::InProcess).await;
}

#[tokio::test]
async fn a_key_past_its_own_limit_gets_429_while_the_tenants_other_keys_pass_in_redis() {
    key_limits_hold_one_key_back_and_not_the_others(Limiter::Redis).await;
}

async fn inference_quota_runs_out(limiter: Limiter) {
    let app = spawn_app_with(Backend::Sqlite, |config| small_starter_plan(config, limiter, 100, 3)).await;
    let (_, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    let path = format!("/v1/health/patients/{patient}/assessments");
    let bad = app.post(&path, &key, &json!({"model": "breast-cancer", "features": {}})).await;
    assert!(header(&bad, "ratelimit").contains(r#""inference";r=3;t="#), "{limiter:?}: the unit given back shows");
    assert_problem(bad, 400).await;
    for left in (0..3).rev() {
        let response = app.post(&path, &key, &assessment_body()).await;
        assert_eq!(response.status(), 200, "{limiter:?}: a refused call spent no quota");
        let policy = header(&response, "ratelimit-policy");
        let window: u64 = policy.split(r#""inference";q=3;w="#).nth(1).expect(&policy).parse().unwrap();
        assert!(window.is_multiple_of(86_400) && (28..=31).contains(&(window / 86_400)), "a calendar month: {policy}");
        assert!(header(&response, "ratelimit").contains(&format!(r#""inference";r={left};t="#)), "{limiter:?}");
    }
    let refusals = counter(&app, QUOTA_REFUSALS).await;
    let response = app.post(&path, &key, &assessment_body()).await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=31 * 24 * 3600).contains(&retry_after), "until the month ends: {retry_after}");
    let problem = assert_problem(response, 429).await;
    assert!(problem["detail"].as_str().unwrap().contains("monthly inference quota"), "{problem}");
    assert_eq!(counter(&app, QUOTA_REFUSALS).await, refusals + 1, "{limiter:?}: the refusal is counted");
    let response = app.get(&format!("/v1/health/patients/{patient}"), &key).await;
    assert_eq!(response.status(), 200, "{limiter:?}: calls that are not inference still pass");
    assert!(!header(&response, "ratelimit").contains("inference"));
    assert_eq!(app.count_health_rows("assessments").await, 3);
    app.stop().await;
}

/// Calls the quota refuses spend nothing of the tenant's rate (a batch retrying past its quota
/// leaves the rate to the tenant's other calls), and a call the rate refuses spends nothing of the
/// quota.
async fn quota_and_rate_spend_nothing_of_each_other(limiter: Limiter) {
    let app = spawn_app_with(Backend::Sqlite, |config| small_starter_plan(config, limiter, 5, 2)).await;
    let (_, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    let path = format!("/v1/health/patients/{patient}/assessments");
    assert_eq!(app.post(&path, &key, &assessment_body()).await.status(), 200, "{limiter:?}");
    assert_eq!(app.post(&path, &key, &assessment_body()).await.status(), 200, "{limiter:?}");
    for _ in 0..6 {
        let refused = app.post(&path, &key, &assessment_body()).await;
        // The rate was not asked: only the quota's fields.
        assert!(header(&refused, "ratelimit").starts_with(r#""inference";r=0;t="#), "{limiter:?}");
        let problem = assert_problem(refused, 429).await;
        assert_eq!(problem["violatedPolicies"], json!(["inference"]), "{limiter:?}: {problem}");
    }
    // Three of the burst of five spent: two more pass, then the rate refuses.
    for _ in 0..2 {
        assert_eq!(app.get(&format!("/v1/health/patients/{patient}"), &key).await.status(), 200, "{limiter:?}");
    }
    let problem = assert_problem(app.get(&format!("/v1/health/patients/{patient}"), &key).await, 429).await;
    assert_eq!(problem["violatedPolicies"], json!(["tenant"]), "{limiter:?}: {problem}");
    app.stop().await;

    // Keys limited to a burst of 2 each, a quota of 3: the key's refusal spends no unit, which
    // the tenant's other key finds.
    let app = spawn_app_with(Backend::Sqlite, |config| {
        small_starter_plan(config, limiter, 4, 3);
        config.gateway.plans.starter.key_share = 0.5;
    })
    .await;
    let (tenant, key) = app.tenant_with_key().await;
    let other = app.create_key(&tenant, &["health:read", "health:write"]).await;
    let patient = app.create_patient(&key).await;
    let path = format!("/v1/health/patients/{patient}/assessments");
    assert_eq!(app.post(&path, &key, &assessment_body()).await.status(), 200, "{limiter:?}");
    let refused = app.post(&path, &key, &assessment_body()).await;
    assert!(!header(&refused, "ratelimit").contains("inference"), "{limiter:?}: the quota was not asked");
    let problem = assert_problem(refused, 429).await;
    assert_eq!(problem["violatedPolicies"], json!(["key"]), "{limiter:?}: {problem}");
    let passed = app.post(&path, &other, &assessment_body()).await;
    assert_eq!(passed.status(), 200, "{limiter:?}");
    assert!(header(&passed, "ratelimit").contains(r#""inference";r=1;t="#), "{limiter:?}: two units spent, not three");
    app.stop().await;
}

#[tokio::test]
async fn quota_and_rate_spend_nothing_of_each_other_in_process() {
    quota_and_rate_spend_nothing_of_each_other(Limiter::InProcess).await;
}

#[tokio::test]
async fn quota_and_rate_spend_nothing_of_each_other_in_redis() {
    quota_and_rate_spend_nothing_of_each_other(Limiter::Redis).await;
}

#[tokio::test]
async fn a_tenant_with_a_quota_of_3_gets_429_on_the_4th_assessment_in_process() {
    inference_quota_runs_out(Limiter::InProcess).await;
}

#[tokio::test]
async fn a_tenant_with_a_quota_of_3_gets_429_on_the_4th_assessment_in_redis() {
    inference_quota_runs_out(Limiter::Redis).await;
}

/// A model call whose deadline passes keeps its unit when it had left for the service, which may
/// run the model and store the result after the gateway stopped waiting, and gets it back when
/// it had not.
async fn a_call_cut_short_keeps_its_unit_only_once_sent(limiter: Limiter) {
    let app = spawn_app_with(Backend::Sqlite, |config| small_starter_plan(config, limiter, 100, 5)).await;
    let (_, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    let url = app.url(&format!("/v1/health/patients/{patient}/assessments"));
    let call = |timeout: &'static str| {
        app.client.post(&url).bearer_auth(&key).header("grpc-timeout", timeout).json(&assessment_body()).send()
    };

    // Its deadline gone before it left: given back.
    let response = call("1u").await.unwrap();
    assert_eq!(response.status(), 504, "{limiter:?}");
    assert!(header(&response, "ratelimit").contains(r#""inference";r=5;t="#), "{limiter:?}: never sent");

    // Out at the service, which waits for its database, when the deadline passes: kept.
    let mut lock = app.hold_health_writes().await;
    let response = call("300m").await.unwrap();
    assert_eq!(response.status(), 504, "{limiter:?}");
    assert!(header(&response, "ratelimit").contains(r#""inference";r=4;t="#), "{limiter:?}: it may have run");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);
    // And it did: the service stored it once the database was free.
    let mut stored = 0;
    for _ in 0..100 {
        stored = app.count_health_rows("assessments").await;
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 1, "{limiter:?}: the assessment the gateway stopped waiting for");
    let response = call("10S").await.unwrap();
    assert_eq!(response.status(), 200, "{limiter:?}");
    assert!(header(&response, "ratelimit").contains(r#""inference";r=3;t="#), "{limiter:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_call_cut_short_keeps_its_unit_only_once_sent_in_process() {
    a_call_cut_short_keeps_its_unit_only_once_sent(Limiter::InProcess).await;
}

#[tokio::test]
async fn a_call_cut_short_keeps_its_unit_only_once_sent_in_redis() {
    a_call_cut_short_keeps_its_unit_only_once_sent(Limiter::Redis).await;
}

/// A platform whose Redis is a port where nothing listens.
async fn spawn_with_redis_down(on_failure: RedisFailure) -> TestApp {
    spawn_app_with(Backend::Sqlite, |config| {
        small_starter_plan(config, Limiter::InProcess, 1, 1);
        config.gateway.redis_url = Some("redis://127.0.0.1:1".into());
        config.gateway.rate_limit.redis_failure = on_failure;
    })
    .await
}

async fn backend_errors(app: &TestApp) -> u64 {
    counter(app, "aigronova_gateway_rate_limit_backend_errors_total").await
}

#[tokio::test]
async fn with_redis_down_and_failing_open_calls_pass_unlimited_and_the_errors_are_counted() {
    let app = spawn_with_redis_down(RedisFailure::Open).await;
    let (_, key) = app.tenant_with_key().await;
    let before = backend_errors(&app).await;
    for _ in 0..3 {
        let response = app.get(NOBODY, &key).await;
        assert_eq!(response.status(), 404, "past the burst of 1, yet not limited");
        assert!(response.headers().get("ratelimit").is_none(), "no limit was checked, none is advertised");
    }
    assert!(backend_errors(&app).await >= before + 3);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "failing open, the replica serves");
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["rateLimits"], false, "and says Redis is down");
    app.stop().await;
}

#[tokio::test]
async fn with_redis_down_and_failing_closed_calls_get_503_with_retry_after() {
    let app = spawn_with_redis_down(RedisFailure::Closed).await;
    let (_, key) = app.tenant_with_key().await;
    let response = app.get(NOBODY, &key).await;
    assert_eq!(response.headers()["retry-after"], "1");
    assert_problem(response, 503).await;
    let response = app.get("/healthz", &key).await;
    assert_eq!(response.status(), 200, "only tenant calls depend on Redis");
    // Refusing every tenant call, the replica is not ready: a load balancer sends them elsewhere.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["rateLimits"], false);
    app.stop().await;
}
