//! The limiter through its crate API: in-process with a clock the tests move, and against the
//! real Redis at 127.0.0.1:6379 (each test under its own key prefix).

use std::sync::{Arc, atomic::AtomicU64};

use axum::response::IntoResponse;

use super::*;

impl Clock for Arc<AtomicU64> {
    fn now_micros(&self) -> u64 {
        self.load(Ordering::SeqCst)
    }
}

/// 2025-01-31T23:59:00Z, a minute before a month ends.
const JAN_31_23_59: u64 = 1_738_367_940 * MICROS;

/// A plan of `requests_per_second` and `burst` a tenant, each API key on its own getting
/// `key_share` of them (0: keys limited only together).
fn plan(requests_per_second: f64, burst: u32, key_share: f64, quota: u64) -> PlanLimits {
    PlanLimits { requests_per_second, burst, key_share, monthly_inference_quota: quota, ..PlanLimits::default() }
}

fn in_process(start: u64) -> (RateLimiter, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(start));
    (RateLimiter::new(Backend::Local(LocalBackend::new()), &RateLimitConfig::default(), clock.clone()), clock)
}

fn header(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers.get_all(name).iter().map(|value| value.to_str().unwrap().to_owned()).collect()
}

/// Status, `Retry-After` and the problem document of a refusal.
async fn refusal(problem: Problem) -> (u16, Option<String>, serde_json::Value) {
    let response = problem.into_response();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|value| value.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, retry_after, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn the_burst_passes_the_next_request_is_refused_and_one_passes_after_the_emission_interval() {
    let (limiter, clock) = in_process(JAN_31_23_59);
    let limits = plan(2.0, 3, 0.0, 10);
    for remaining in [2, 1, 0] {
        let mut headers = HeaderMap::new();
        limiter.admit("t1", "k1", &limits, &mut headers).await.expect("within the burst");
        assert_eq!(header(&headers, &POLICY), [r#""tenant";q=3;w=2"#]);
        // `r` grows again in half a second: `t` rounds it up.
        assert_eq!(header(&headers, &RATELIMIT), [format!(r#""tenant";r={remaining};t=1"#)]);
    }
    let mut headers = HeaderMap::new();
    let problem = limiter.admit("t1", "k1", &limits, &mut headers).await.expect_err("past the burst");
    assert_eq!(header(&headers, &RATELIMIT), [r#""tenant";r=0;t=1"#], "headers go with the refusal too");
    let (status, retry_after, document) = refusal(problem).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("1"), "half a second, rounded up");
    assert!(document["detail"].as_str().unwrap().contains("the tenant"), "{document}");
    assert_eq!(document["violatedPolicies"], serde_json::json!(["tenant"]), "{document}");

    clock.fetch_add(499_999, Ordering::SeqCst);
    assert!(limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.is_err(), "a microsecond early");
    clock.fetch_add(1, Ordering::SeqCst);
    assert!(limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.is_ok(), "one emission interval later");
    assert!(limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.is_err(), "and only one");
}

#[tokio::test]
async fn a_clock_that_steps_back_locks_no_one_out_for_the_step() {
    let (limiter, clock) = in_process(JAN_31_23_59);
    let limits = plan(2.0, 3, 0.0, 10);
    for _ in 0..3 {
        limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.expect("within the burst");
    }
    clock.fetch_sub(60 * MICROS, Ordering::SeqCst);
    let problem = limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.expect_err("the burst is spent");
    let (status, retry_after, _) = refusal(problem).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")), "half a second, not the minute the clock went back");
    clock.fetch_add(500_000, Ordering::SeqCst);
    assert!(limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.is_ok(), "one emission interval later");
}

#[tokio::test]
async fn on_redis_a_tat_a_clock_step_left_ahead_is_brought_back_to_a_whole_burst() {
    let prefix = unique_prefix();
    let limiter = on_redis(&prefix, RedisFailure::Closed).await;
    let limits = plan(2.0, 3, 0.0, 10);
    for _ in 0..3 {
        limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.expect("within the burst");
    }
    // As if the clock that wrote the TATs ran a minute ahead of Redis's now.
    let mut redis = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut redis).await.expect("the rate keys");
    assert!(!keys.is_empty());
    for key in &keys {
        let tat: u64 = redis::cmd("GET").arg(key).query_async(&mut redis).await.unwrap();
        let ahead = (tat + 60 * MICROS).to_string();
        let () = redis::cmd("SET").arg(key).arg(ahead).arg("PX").arg(120_000).query_async(&mut redis).await.unwrap();
    }
    let problem = limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.expect_err("the burst is spent");
    let (status, retry_after, _) = refusal(problem).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")), "not the minute ahead");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(&mut redis).await.unwrap();
    assert!((0..=1_500).contains(&ttl), "kept for a whole burst at most: {ttl} ms");
}

/// A tenant that spent its burst and moves to a larger plan.
async fn an_upgrade_lifts_the_limit_at_once(limiter: &RateLimiter, tenant: &str) {
    let (starter, enterprise) = (plan(1.0, 3, 0.0, 10), plan(400.0, 400, 0.0, 10));
    for _ in 0..3 {
        limiter.admit(tenant, "k1", &starter, &mut HeaderMap::new()).await.unwrap();
    }
    assert!(limiter.admit(tenant, "k1", &starter, &mut HeaderMap::new()).await.is_err(), "the burst is spent");
    let mut headers = HeaderMap::new();
    limiter.admit(tenant, "k1", &enterprise, &mut headers).await.expect("the new plan's burst, at once");
    assert_eq!(header(&headers, &RATELIMIT), [r#""tenant";r=399;t=1"#], "t rounded up");
    // Back to the first plan, started afresh: its burst whole again, another tenant's state kept.
    limiter.admit("other", "k9", &starter, &mut HeaderMap::new()).await.unwrap();
    limiter.forget_tenant(tenant).await;
    let mut headers = HeaderMap::new();
    limiter.admit(tenant, "k1", &starter, &mut headers).await.expect("the first plan's burst again");
    assert_eq!(header(&headers, &RATELIMIT), [r#""tenant";r=2;t=1"#]);
    let mut headers = HeaderMap::new();
    limiter.admit("other", "k9", &starter, &mut headers).await.unwrap();
    assert_eq!(header(&headers, &RATELIMIT), [r#""tenant";r=1;t=1"#], "another tenant's state is its own");
}

#[tokio::test]
async fn a_plan_change_starts_the_tenant_afresh_under_the_new_limits() {
    an_upgrade_lifts_the_limit_at_once(&in_process(JAN_31_23_59).0, "t1").await;
    an_upgrade_lifts_the_limit_at_once(&on_redis(&unique_prefix(), RedisFailure::Closed).await, "t1").await;
}

#[tokio::test]
async fn tenants_are_limited_apart_and_keys_of_one_tenant_together() {
    let (limiter, _) = in_process(JAN_31_23_59);
    let limits = plan(1.0, 2, 0.0, 10);
    for key in ["a", "b"] {
        limiter.admit("t1", key, &limits, &mut HeaderMap::new()).await.unwrap();
    }
    assert!(limiter.admit("t1", "c", &limits, &mut HeaderMap::new()).await.is_err(), "the tenant's burst is spent");
    assert!(limiter.admit("t2", "a", &limits, &mut HeaderMap::new()).await.is_ok(), "another tenant has its own");
}

#[tokio::test]
async fn a_plan_with_key_limits_refuses_one_key_at_its_own_rate_and_the_tenant_at_its_own() {
    let (limiter, clock) = in_process(JAN_31_23_59);
    let limits = plan(1.0, 4, 0.5, 10);
    let mut headers = HeaderMap::new();
    limiter.admit("t1", "k1", &limits, &mut headers).await.unwrap();
    assert_eq!(header(&headers, &POLICY), [r#""tenant";q=4;w=4, "key";q=2;w=4"#]);
    assert_eq!(header(&headers, &RATELIMIT), [r#""tenant";r=3;t=1, "key";r=1;t=2"#]);
    limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.unwrap();

    let mut headers = HeaderMap::new();
    let (status, retry_after, document) =
        refusal(limiter.admit("t1", "k1", &limits, &mut headers).await.unwrap_err()).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("2")), "one key interval of 2 s");
    let detail = document["detail"].as_str().unwrap();
    assert!(detail.starts_with("this API key sent more than the plan's 0.5 requests per second for one key (burst 2)"));
    assert_eq!(document["violatedPolicies"], serde_json::json!(["key"]), "{document}");
    assert_eq!(header(&headers, &RATELIMIT), [r#""tenant";r=2;t=1, "key";r=0;t=2"#], "the tenant has room left");

    for _ in 0..2 {
        limiter.admit("t1", "k2", &limits, &mut HeaderMap::new()).await.expect("another key spends the tenant's rest");
    }
    let refused = limiter.admit("t1", "k3", &limits, &mut HeaderMap::new()).await.unwrap_err();
    let detail = refusal(refused).await.2["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("the tenant sent more than the plan's 1 requests per second (burst 4)"), "{detail}");
    assert!(!detail.contains("API key"), "k3 has spent nothing: {detail}");
    let refused = limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.unwrap_err();
    let document = refusal(refused).await.2;
    let detail = document["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("the tenant sent") && detail.contains(", and this API key sent"), "{detail}");
    assert_eq!(document["violatedPolicies"], serde_json::json!(["tenant", "key"]), "{document}");

    clock.fetch_add(MICROS, Ordering::SeqCst);
    assert!(limiter.admit("t1", "k3", &limits, &mut HeaderMap::new()).await.is_ok(), "a tenant interval later");
}

#[tokio::test]
async fn the_inference_quota_runs_out_until_the_month_ends() {
    let (limiter, clock) = in_process(JAN_31_23_59);
    let limits = plan(100.0, 100, 0.0, 2);
    for left in [1, 0] {
        let mut headers = HeaderMap::new();
        let reservation = limiter.reserve_inference(1, "t1", &limits, &mut headers).await.unwrap();
        reservation.settle(true, &mut HeaderMap::new()).await;
        assert_eq!(header(&headers, &POLICY), [format!(r#""inference";q=2;w={}"#, 31 * 24 * 3600)]);
        assert_eq!(header(&headers, &RATELIMIT), [format!(r#""inference";r={left};t=60"#)]);
    }
    let problem = limiter.reserve_inference(1, "t1", &limits, &mut HeaderMap::new()).await.err().unwrap();
    let (status, retry_after, document) = refusal(problem).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("60")), "until 2025-02-01T00:00:00Z");
    let detail = document["detail"].as_str().unwrap();
    assert!(detail.contains("monthly inference quota") && detail.contains("2025-02-01T00:00:00Z"), "{detail}");
    assert_eq!(document["violatedPolicies"], serde_json::json!(["inference"]), "{document}");
    let other = limiter.reserve_inference(1, "t2", &limits, &mut HeaderMap::new()).await;
    assert!(other.is_ok(), "another tenant has its own quota");
    other.unwrap().settle(true, &mut HeaderMap::new()).await;

    clock.fetch_add(60 * MICROS, Ordering::SeqCst);
    let reservation = limiter.reserve_inference(1, "t1", &limits, &mut HeaderMap::new()).await;
    assert!(reservation.is_ok(), "February has a fresh quota");
    reservation.unwrap().settle(true, &mut HeaderMap::new()).await;
}

#[tokio::test]
async fn a_failed_inference_call_gives_its_unit_back_and_other_calls_spend_none() {
    let (limiter, _) = in_process(JAN_31_23_59);
    let limits = plan(100.0, 100, 0.0, 1);
    let headers = call(&limiter, false, &limits, true).await;
    assert!(headers.is_empty(), "a call that is not inference says nothing of the quota");
    let failed = call(&limiter, true, &limits, false).await;
    let fields: Vec<_> = failed.get_all(RATELIMIT).iter().collect();
    assert_eq!(fields.len(), 1);
    assert!(fields[0].to_str().unwrap().starts_with(r#""inference";r=1;"#), "the unit given back shows: {fields:?}");
    call(&limiter, true, &limits, true).await;
    assert!(limiter.reserve_inference(1, "t1", &limits, &mut HeaderMap::new()).await.is_err());
}

#[tokio::test]
async fn a_batch_takes_a_unit_a_row_all_or_none_in_process() {
    a_batch_takes_a_unit_a_row_all_or_none(&in_process(JAN_31_23_59).0).await;
}

#[tokio::test]
async fn a_batch_takes_a_unit_a_row_all_or_none_on_redis() {
    a_batch_takes_a_unit_a_row_all_or_none(&on_redis(&unique_prefix(), RedisFailure::Closed).await).await;
}

async fn a_batch_takes_a_unit_a_row_all_or_none(limiter: &RateLimiter) {
    let limits = plan(100.0, 100, 0.0, 10);
    let mut headers = HeaderMap::new();
    let batch = limiter.reserve_inference(7, "t1", &limits, &mut headers).await.unwrap();
    assert!(header(&headers, &RATELIMIT)[0].starts_with(r#""inference";r=3;"#), "{headers:?}");
    batch.settle(true, &mut headers).await;

    let mut headers = HeaderMap::new();
    let problem = limiter.reserve_inference(4, "t1", &limits, &mut headers).await.err().unwrap();
    assert!(header(&headers, &RATELIMIT)[0].starts_with(r#""inference";r=3;"#), "nothing taken: {headers:?}");
    let (status, retry_after, document) = refusal(problem).await;
    assert_eq!((status, retry_after), (429, None), "three rows fit now");
    let detail = document["detail"].as_str().unwrap();
    assert!(detail.contains("scores 4 rows") && detail.contains("send at most 3 rows"), "{detail}");

    // A failed batch gives back all its units, and says so.
    let mut headers = HeaderMap::new();
    let failed = limiter.reserve_inference(3, "t1", &limits, &mut headers).await.unwrap();
    failed.settle(false, &mut headers).await;
    assert!(header(&headers, &RATELIMIT)[0].starts_with(r#""inference";r=3;"#), "{headers:?}");
    let last = limiter.reserve_inference(3, "t1", &limits, &mut HeaderMap::new()).await;
    assert!(last.is_ok(), "the three units given back are there to take");
    last.unwrap().settle(true, &mut HeaderMap::new()).await;
    let problem = limiter.reserve_inference(1, "t1", &limits, &mut HeaderMap::new()).await.err().unwrap();
    let detail = refusal(problem).await.2["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("is used up"), "{detail}");
}

/// One call through the quota: reserves its unit (`inference` or not) for tenant `t1` and settles
/// it with `succeeded`; returns the fields written.
async fn call(limiter: &RateLimiter, inference: bool, limits: &PlanLimits, succeeded: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let reservation = limiter.reserve_inference(u64::from(inference), "t1", limits, &mut headers).await.unwrap();
    reservation.settle(succeeded, &mut headers).await;
    headers
}

#[test]
fn months_end_at_the_first_second_of_the_next_one() {
    let cases = [
        (JAN_31_23_59, "2025-01", 31, "2025-02-01T00:00:00Z"),
        (1_709_164_800 * MICROS, "2024-02", 29, "2024-03-01T00:00:00Z"),
        (1_735_603_200 * MICROS, "2024-12", 31, "2025-01-01T00:00:00Z"),
    ];
    for (now, label, days, end) in cases {
        let month = Month::at(now);
        assert_eq!(month.label, label);
        assert_eq!(month.length_secs(), days * 24 * 3600, "{label}");
        assert_eq!(month.end_rfc3339(), end);
    }
}

#[test]
fn bad_settings_are_refused() {
    let cases = [
        RateLimitConfig { redis_timeout_ms: 0, ..RateLimitConfig::default() },
        RateLimitConfig { redis_timeout_ms: 60_000, ..RateLimitConfig::default() },
        RateLimitConfig { redis_key_prefix: String::new(), ..RateLimitConfig::default() },
        RateLimitConfig { redis_key_prefix: "a b".into(), ..RateLimitConfig::default() },
        RateLimitConfig { redis_key_prefix: "{tag}".into(), ..RateLimitConfig::default() },
    ];
    for config in cases {
        assert!(config.validate().is_err(), "{config:?}");
    }
    assert!(RateLimitConfig::default().validate().is_ok());
}

/// Where the tests find Redis.
fn redis_url() -> String {
    std::env::var("AIGRONOVA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A limiter on the test Redis, under a key prefix of its own.
async fn on_redis(prefix: &str, on_failure: RedisFailure) -> RateLimiter {
    let url = redis_url();
    let config =
        RateLimitConfig { redis_failure: on_failure, redis_key_prefix: prefix.to_owned(), ..Default::default() };
    let backend = RedisBackend::new(&url, prefix, Duration::from_millis(config.redis_timeout_ms)).unwrap();
    if let Err(error) = backend.ping().await {
        panic!("Redis is not reachable at {url} ({error}); start it with `redis-server --daemonize yes`");
    }
    RateLimiter::new(Backend::Redis(backend), &config, SystemClock)
}

fn unique_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// A prefix with glob characters in it is taken as written when a tenant's limits are swept: not
/// as a pattern that reaches another prefix's keys.
#[tokio::test]
async fn a_sweep_under_a_prefix_with_glob_characters_leaves_other_prefixes_alone() {
    let base = unique_prefix();
    // Unescaped, `a*[?]` would match `abc?` too.
    let (globbed, other) = (format!("{base}a*[?]"), format!("{base}abc?"));
    let (first, second) =
        (on_redis(&globbed, RedisFailure::Closed).await, on_redis(&other, RedisFailure::Closed).await);
    let limits = plan(0.01, 2, 0.0, 10);
    for limiter in [&first, &second] {
        for _ in 0..2 {
            limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.unwrap();
        }
    }
    first.forget_tenant("t1").await;
    assert!(first.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.is_ok(), "started afresh");
    assert!(second.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.is_err(), "the other prefix's state kept");
}

#[tokio::test]
async fn two_limiters_on_one_redis_share_the_tenants_burst() {
    let prefix = unique_prefix();
    let (first, second) =
        (on_redis(&prefix, RedisFailure::Closed).await, on_redis(&prefix, RedisFailure::Closed).await);
    let limits = plan(0.01, 4, 0.0, 10);
    let mut passed = 0;
    for round in 0..8 {
        let replica = if round % 2 == 0 { &first } else { &second };
        let mut headers = HeaderMap::new();
        match replica.admit("t1", "k1", &limits, &mut headers).await {
            Ok(()) => passed += 1,
            Err(problem) => {
                let (status, retry_after, _) = refusal(problem).await;
                assert_eq!(status, 429);
                let retry_after: u64 = retry_after.unwrap().parse().unwrap();
                assert!((1..=100).contains(&retry_after), "one emission interval at most: {retry_after}");
            }
        }
        let expected = format!(r#""tenant";r={};t="#, 3u32.saturating_sub(round).min(3));
        assert!(header(&headers, &RATELIMIT)[0].starts_with(&expected), "round {round}: {headers:?}");
    }
    assert_eq!(passed, 4, "the burst once, not once per replica");
}

#[tokio::test]
async fn a_connection_redis_dropped_is_replaced_without_failing_the_call_after_it() {
    let prefix = unique_prefix();
    let limiter = on_redis(&prefix, RedisFailure::Closed).await;
    let Backend::Redis(backend) = &limiter.inner.backend else { unreachable!("a Redis limiter") };
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut backend.connection()).await.unwrap();
    // Redis drops the limiter's connection, as a restart would.
    let mut other = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut other).await.unwrap();
    assert_eq!(killed, 1);
    let limits = plan(0.01, 4, 0.0, 10);
    limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.expect("admitted on a new connection");
}

#[tokio::test]
async fn the_redis_limiter_applies_key_limits_too() {
    let limiter = on_redis(&unique_prefix(), RedisFailure::Closed).await;
    let limits = plan(0.01, 3, 0.5, 10);
    for _ in 0..2 {
        limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.unwrap();
    }
    let problem = limiter.admit("t1", "k1", &limits, &mut HeaderMap::new()).await.unwrap_err();
    let (status, _, document) = refusal(problem).await;
    assert_eq!(status, 429);
    assert!(document["detail"].as_str().unwrap().starts_with("this API key"), "{document}");
    limiter.admit("t1", "k2", &limits, &mut HeaderMap::new()).await.expect("the tenant's third request");
    let mut headers = HeaderMap::new();
    let problem = limiter.admit("t1", "k2", &limits, &mut headers).await.unwrap_err();
    assert_eq!(refusal(problem).await.0, 429);
    assert_eq!(header(&headers, &POLICY), [r#""tenant";q=3;w=300, "key";q=2;w=400"#]);
    assert!(header(&headers, &RATELIMIT)[0].starts_with(r#""tenant";r=0;t="#), "{headers:?}");
    assert!(header(&headers, &RATELIMIT)[0].contains(r#""key";r=1;t="#), "k2 has spent one of two: {headers:?}");
}

#[tokio::test]
async fn the_rate_script_is_loaded_again_after_redis_forgets_it() {
    let prefix = unique_prefix();
    let limiter = on_redis(&prefix, RedisFailure::Closed).await;
    let Backend::Redis(redis) = &limiter.inner.backend else { unreachable!() };
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut redis.connection()).await.unwrap();
    let errors_before = crate::metrics::metrics().rate_limit_backend_errors.get();
    limiter.admit("t1", "k1", &plan(1.0, 5, 0.0, 10), &mut HeaderMap::new()).await.expect("NOSCRIPT is handled");
    call(&limiter, true, &plan(1.0, 5, 0.0, 10), false).await;
    assert_eq!(crate::metrics::metrics().rate_limit_backend_errors.get(), errors_before);
}

#[tokio::test]
async fn the_redis_quota_counts_refunds_and_expires_with_the_month() {
    let prefix = unique_prefix();
    let limiter = on_redis(&prefix, RedisFailure::Closed).await;
    let limits = plan(100.0, 100, 0.0, 2);
    call(&limiter, true, &limits, false).await;
    for _ in 0..2 {
        call(&limiter, true, &limits, true).await;
    }
    let mut headers = HeaderMap::new();
    let problem = limiter.reserve_inference(1, "t1", &limits, &mut headers).await.err().unwrap();
    assert!(header(&headers, &RATELIMIT)[0].starts_with(r#""inference";r=0;t="#));
    let (status, retry_after, _) = refusal(problem).await;
    let month = Month::at(SystemClock.now_micros());
    let until_end: u64 = retry_after.unwrap().parse().unwrap();
    assert_eq!(status, 429);
    assert!(until_end <= month.length_secs());

    let Backend::Redis(redis) = &limiter.inner.backend else { unreachable!() };
    let key = format!("{prefix}inference:{{t1}}:{}", month.label);
    let mut connection = redis.connection();
    let used: u64 = redis::cmd("GET").arg(&key).query_async(&mut connection).await.unwrap();
    let expires_at: u64 = redis::cmd("EXPIRETIME").arg(&key).query_async(&mut connection).await.unwrap();
    assert_eq!(used, 2, "the refused and the refunded calls are not counted");
    assert!(expires_at > month.end, "the counter outlives its month");

    // A refund of more units than are counted (the counter lost meanwhile) stops at zero.
    redis.refund_inference("t1", &month.label, 5).await.unwrap();
    let used: u64 = redis::cmd("GET").arg(&key).query_async(&mut connection).await.unwrap();
    assert_eq!(used, 0, "never below zero");
}

#[tokio::test]
async fn an_unreachable_redis_lets_calls_through_when_failing_open() {
    let config = RateLimitConfig { redis_failure: RedisFailure::Open, ..Default::default() };
    let limiter = RateLimiter::connect(Some("redis://127.0.0.1:1"), &config).await.expect("starts without Redis");
    let errors_before = crate::metrics::metrics().rate_limit_backend_errors.get();
    let mut headers = HeaderMap::new();
    limiter.admit("t1", "k1", &plan(1.0, 1, 0.0, 1), &mut headers).await.expect("open");
    limiter.admit("t1", "k1", &plan(1.0, 1, 0.0, 1), &mut headers).await.expect("open, past the burst too");
    limiter
        .reserve_inference(1, "t1", &plan(1.0, 1, 0.0, 0), &mut headers)
        .await
        .expect("open")
        .settle(true, &mut HeaderMap::new())
        .await;
    assert!(headers.is_empty(), "no limits are advertised when none were checked");
    assert!(crate::metrics::metrics().rate_limit_backend_errors.get() >= errors_before + 3);
}

#[tokio::test]
async fn an_unreachable_redis_refuses_calls_with_503_when_failing_closed() {
    let config = RateLimitConfig { redis_failure: RedisFailure::Closed, ..Default::default() };
    let limiter = RateLimiter::connect(Some("redis://127.0.0.1:1"), &config).await.expect("starts without Redis");
    let problem = limiter.admit("t1", "k1", &plan(1.0, 1, 0.0, 1), &mut HeaderMap::new()).await.unwrap_err();
    let (status, retry_after, _) = refusal(problem).await;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    let quota = limiter.reserve_inference(1, "t1", &plan(1.0, 1, 0.0, 1), &mut HeaderMap::new()).await;
    assert_eq!(refusal(quota.err().unwrap()).await.0, 503);
}

#[test]
fn plans_the_limiter_cannot_represent_are_refused() {
    let cases = [plan(1.0 / 7200.0, 5, 0.0, 1), plan(2e6, 5, 0.0, 1), plan(1.0, 2_000_000, 0.0, 1)];
    for starter in cases {
        let plans = crate::plans::Plans { starter: starter.clone(), ..Default::default() };
        assert!(plans.validate().is_err(), "{starter:?}");
    }
    assert!(crate::plans::Plans::default().validate().is_ok());
}

#[tokio::test]
async fn every_limit_is_one_item_of_one_field_line_and_a_refund_rewrites_its_own() {
    let (limiter, _) = in_process(JAN_31_23_59);
    let limits = plan(10.0, 20, 0.5, 5);
    let mut headers = HeaderMap::new();
    limiter.admit("t1", "k1", &limits, &mut headers).await.unwrap();
    let reservation = limiter.reserve_inference(1, "t1", &limits, &mut headers).await.unwrap();
    let policy = header(&headers, &POLICY);
    assert_eq!(policy.len(), 1, "{policy:?}");
    let items: Vec<&str> = policy[0].split(", ").map(|item| item.split(';').next().unwrap()).collect();
    assert_eq!(items, [r#""tenant""#, r#""key""#, r#""inference""#]);
    assert!(header(&headers, &RATELIMIT)[0].ends_with(r#""inference";r=4;t=60"#), "{headers:?}");
    reservation.settle(false, &mut headers).await;
    let states = header(&headers, &RATELIMIT);
    assert_eq!(states.len(), 1, "{states:?}");
    let items: Vec<&str> = states[0].split(", ").collect();
    assert_eq!(items.len(), 3, "{states:?}");
    assert!(items[0].starts_with(r#""tenant";r=19;"#) && items[1].starts_with(r#""key";r="#), "{states:?}");
    assert_eq!(items[2], r#""inference";r=5;t=60"#, "the unit given back");
}
