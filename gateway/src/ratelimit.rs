//! Rate limits and quotas of tenant calls: GCRA per tenant, and per API key at the plan's
//! `key_share` of the tenant's rate and burst, and the monthly inference quota of each tenant. With `gateway.redis_url` the state lives
//! in Redis and every replica shares it; without, it lives in this process.
//!
//! Every rate-limited response carries the `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers (draft 11), for example
//! `RateLimit-Policy: "tenant";q=20;w=2` and `RateLimit: "tenant";r=19;t=1`: `q` is the burst,
//! `w` the seconds in which the whole burst comes back (so `q/w` is the sustained rate), `r` the
//! requests that would pass now and `t` the seconds, rounded up, until `r` grows (0 when the whole burst
//! is there): on a refusal, `r=0` and `t` agrees with `Retry-After`. Inference routes add
//! `"inference";q=<monthly quota>;w=<seconds in this month>` and
//! `"inference";r=<calls left>;t=<seconds until the month ends>`.

mod gcra;
mod local;
mod redis_store;

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aigronova_platform::config::ConfigError;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub(crate) use gcra::{MAX_BURST, MAX_INTERVAL_MICROS};
pub(crate) use redis_store::on_a_live_connection;

use self::{
    gcra::{Gcra, Outcome},
    local::LocalBackend,
    redis_store::RedisBackend,
};
use crate::{plans::PlanLimits, problem::Problem};

/// `gateway.rate_limit`: how the limits behave, beyond the numbers of each plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// What a tenant call meets when Redis does not answer: `open` lets it through, logs a
    /// warning and counts `aigronova_gateway_rate_limit_backend_errors_total`; `closed` refuses
    /// it with 503 and `Retry-After`.
    pub redis_failure: RedisFailure,
    /// How long one Redis connection attempt or command may take, in milliseconds, before it
    /// counts as a failure.
    pub redis_timeout_ms: u64,
    /// Prefix of every Redis key the limits use, so that deployments can share one Redis.
    pub redis_key_prefix: String,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { redis_failure: RedisFailure::Open, redis_timeout_ms: 250, redis_key_prefix: "aigronova:".into() }
    }
}

impl RateLimitConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.redis_timeout_ms) {
            return Err(ConfigError("gateway.rate_limit.redis_timeout_ms must be between 1 and 10000".into()));
        }
        let prefix = &self.redis_key_prefix;
        if prefix.is_empty() || prefix.len() > 64 || prefix.contains(|c: char| c.is_whitespace() || "{}".contains(c)) {
            return Err(ConfigError(format!(
                "gateway.rate_limit.redis_key_prefix must be 1 to 64 characters without spaces or braces, got {prefix:?}"
            )));
        }
        Ok(())
    }
}

/// What to do with a call whose limits cannot be checked because Redis is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisFailure {
    /// Let the call through, unlimited.
    #[default]
    Open,
    /// Refuse the call with 503.
    Closed,
}

/// Microseconds since the UNIX epoch; injectable so that tests of the in-process limiter do not
/// sleep.
pub(crate) trait Clock: Send + Sync {
    fn now_micros(&self) -> u64;
}

struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> u64 {
        u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0)
    }
}

/// How often, at most, a Redis failure is logged.
const WARNING_INTERVAL_MICROS: u64 = 10 * MICROS;
const MICROS: u64 = 1_000_000;
const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The longest `/readyz` waits for Redis.
const READINESS_PING: Duration = Duration::from_millis(500);

/// The limits of every tenant, shared by the handlers.
#[derive(Clone)]
pub(crate) struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    on_failure: RedisFailure,
    clock: Box<dyn Clock>,
    last_warning: AtomicU64,
}

enum Backend {
    Local(LocalBackend),
    Redis(RedisBackend),
}

impl RateLimiter {
    /// In Redis when `redis_url` is set, in-process otherwise. Redis is pinged once: when it
    /// does not answer, the gateway starts anyway, warns, and applies `redis_failure` until a
    /// later call reconnects.
    pub(crate) async fn connect(redis_url: Option<&str>, config: &RateLimitConfig) -> anyhow::Result<Self> {
        let Some(url) = redis_url else {
            return Ok(Self::new(Backend::Local(LocalBackend::new()), config, SystemClock));
        };
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let backend = RedisBackend::new(url, &config.redis_key_prefix, timeout)
            .map_err(|error| anyhow::anyhow!("gateway.redis_url is not usable: {error}"))?;
        if let Err(error) = backend.ping().await {
            tracing::warn!(%error, on_failure = ?config.redis_failure, "Redis does not answer; rate limits follow gateway.rate_limit.redis_failure until it does");
        }
        Ok(Self::new(Backend::Redis(backend), config, SystemClock))
    }

    /// For `/readyz`: `None` without Redis; with Redis, whether it answers (whether this replica
    /// can serve tenant calls without it is [`Self::fails_closed`]'s).
    pub(crate) async fn readiness(&self) -> Option<bool> {
        let Backend::Redis(backend) = &self.inner.backend else { return None };
        // Well within a readiness probe's timeout, whatever `redis_timeout_ms` says.
        Some(matches!(tokio::time::timeout(READINESS_PING, backend.ping()).await, Ok(Ok(()))))
    }

    /// Whether tenant calls are refused while Redis does not answer (`redis_failure = "closed"`).
    pub(crate) fn fails_closed(&self) -> bool {
        self.inner.on_failure == RedisFailure::Closed
    }

    fn new(backend: Backend, config: &RateLimitConfig, clock: impl Clock + 'static) -> Self {
        let inner = Inner {
            backend,
            on_failure: config.redis_failure,
            clock: Box::new(clock),
            last_warning: AtomicU64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Spends one request of the tenant's rate, and of the key's when the plan limits keys; a
    /// refused request spends nothing. Writes the `RateLimit-Policy` and `RateLimit` fields
    /// into `headers` whether the request passes or not.
    pub(crate) async fn admit(
        &self,
        tenant_id: &str,
        key_id: &str,
        limits: &PlanLimits,
        headers: &mut HeaderMap,
    ) -> Result<(), Problem> {
        let mut subjects = vec![Subject {
            policy: "tenant",
            id: "tenant".to_owned(),
            requests_per_second: limits.requests_per_second,
            burst: limits.burst,
        }];
        if let Some((requests_per_second, burst)) = limits.key_limits() {
            subjects.push(Subject { policy: "key", id: format!("key:{key_id}"), requests_per_second, burst });
        }
        let gcras: Vec<Gcra> =
            subjects.iter().map(|subject| Gcra::new(subject.requests_per_second, subject.burst)).collect();
        let outcome = match self.acquire(tenant_id, &subjects, &gcras).await {
            Ok(outcome) => outcome,
            Err(error) => return self.backend_failed(&error),
        };
        let limited = || subjects.iter().zip(&gcras).zip(&outcome.backlogs);
        let (mut policies, mut states) = (String::new(), String::new());
        for ((subject, gcra), backlog) in limited() {
            let (remaining, next) = (gcra.remaining(*backlog), gcra.until_next_cell(*backlog).div_ceil(MICROS));
            let separator = if policies.is_empty() { "" } else { ", " };
            let _ = write!(policies, "{separator}\"{}\";q={};w={}", subject.policy, gcra.burst(), gcra.window_secs());
            let _ = write!(states, "{separator}\"{}\";r={remaining};t={next}", subject.policy);
        }
        append(headers, POLICY, [policies]);
        append(headers, RATELIMIT, [states]);
        if outcome.allowed {
            return Ok(());
        }
        let refused: Vec<&Subject> =
            limited().filter(|((_, gcra), backlog)| !gcra.fits(**backlog)).map(|((subject, _), _)| subject).collect();
        let violated: Vec<&'static str> = refused.iter().map(|subject| subject.policy).collect();
        // Counted by the limit that refused: the tenant's when it did, the key's otherwise.
        let reason = if violated.contains(&"tenant") || !violated.contains(&"key") { "tenant" } else { "key" };
        crate::metrics::metrics().rate_limited.with_label_values(&[reason]).inc();
        let refusals: Vec<String> = refused
            .iter()
            .map(|subject| match subject.policy {
                "key" if key_id.starts_with("jwt:") => format!(
                    "this token's user sent more than the plan's {} requests per second for one key or user (burst {})",
                    subject.requests_per_second, subject.burst
                ),
                "key" => format!(
                    "this API key sent more than the plan's {} requests per second for one key (burst {})",
                    subject.requests_per_second, subject.burst
                ),
                _ => format!(
                    "the tenant sent more than the plan's {} requests per second (burst {})",
                    subject.requests_per_second, subject.burst
                ),
            })
            .collect();
        let detail = format!("{}; retry later", refusals.join(", and "));
        let wait = limited().map(|((_, gcra), backlog)| gcra.wait(*backlog)).max().unwrap_or(0);
        Err(Problem::new(StatusCode::TOO_MANY_REQUESTS, detail)
            .with_retry_after(wait.div_ceil(MICROS).max(1))
            .with_violated_policies(violated))
    }

    /// One GCRA step over every subject of the tenant, in the backend.
    async fn acquire(
        &self,
        tenant_id: &str,
        subjects: &[Subject],
        limits: &[Gcra],
    ) -> Result<Outcome, redis::RedisError> {
        // A subject's state is kept under its limits too: a tenant whose plan changes (an upgrade
        // after a 429, say) starts afresh under the new plan rather than with a backlog the old
        // one's slower rate ran up, which the new burst would count against it.
        let ids = subjects
            .iter()
            .zip(limits)
            .map(|(subject, limit)| format!("{}:{}x{}", subject.id, limit.interval(), limit.burst()));
        match &self.inner.backend {
            Backend::Local(local) => {
                let keys: Vec<String> = ids.map(|id| format!("{tenant_id}:{id}")).collect();
                Ok(local.acquire(&keys, limits, self.inner.clock.now_micros()))
            }
            Backend::Redis(redis) => {
                let keys: Vec<String> = ids.map(|id| redis.rate_key(tenant_id, &id)).collect();
                redis.acquire(&keys, limits).await
            }
        }
    }

    /// Starts every rate limit of `tenant_id` afresh, as after a plan change: the state kept
    /// under the limits of a plan the tenant had before would otherwise come back with it. A
    /// Redis that cannot be reached leaves them as they were, with a warning.
    pub(crate) async fn forget_tenant(&self, tenant_id: &str) {
        match &self.inner.backend {
            Backend::Local(local) => local.forget_tenant(tenant_id),
            Backend::Redis(redis) => {
                if let Err(error) = redis.forget_tenant(tenant_id).await {
                    crate::metrics::metrics().rate_limit_backend_errors.inc();
                    tracing::warn!(tenant_id = %tenant_id, %error, "the tenant's rate limits could not be started afresh");
                }
            }
        }
    }

    /// Refuses an inference call (`inference`) with 429 when the tenant's quota of the month is
    /// used up already, as [`Self::reserve_inference`] would, without reserving anything: asked
    /// before the rate is spent, so that a call the quota refuses spends nothing of it. (Calls that
    /// pass while the last units go are refused by the reservation, once past the rate.) A backend
    /// that cannot be asked leaves the answer to the reservation.
    pub(crate) async fn refuse_used_up_quota(
        &self,
        inference: bool,
        tenant_id: &str,
        limits: &PlanLimits,
        headers: &mut HeaderMap,
    ) -> Result<(), Problem> {
        if !inference {
            return Ok(());
        }
        let month = Month::at(self.inner.clock.now_micros());
        let quota = limits.monthly_inference_quota;
        let used = match &self.inner.backend {
            Backend::Local(local) => local.inference_used(tenant_id, &month.label),
            Backend::Redis(redis) => match redis.inference_used(tenant_id, &month.label).await {
                Ok(used) => used,
                Err(_) => return Ok(()),
            },
        };
        if used < quota {
            return Ok(());
        }
        Err(self.quota_refusal(&month, quota, used, 1, headers))
    }

    /// The 429 of a quota without `units` left, its `RateLimit` fields written into `headers`.
    fn quota_refusal(&self, month: &Month, quota: u64, used: u64, units: u64, headers: &mut HeaderMap) -> Problem {
        let until_end = month.end.saturating_sub(self.inner.clock.now_micros() / MICROS);
        let remaining = quota.saturating_sub(used);
        append(headers, POLICY, [format!("\"inference\";q={quota};w={}", month.length_secs())]);
        append(headers, RATELIMIT, [format!("\"inference\";r={remaining};t={until_end}")]);
        crate::metrics::metrics().rate_limited.with_label_values(&["quota"]).inc();
        let detail = if remaining == 0 {
            format!(
                "the monthly inference quota of this tenant ({quota} units, one a row scored) is used up; it renews on {}",
                month.end_rfc3339()
            )
        } else {
            format!(
                "this call scores {units} rows, one unit each of the monthly inference quota of this tenant ({quota} \
                 units), and {remaining} are left: send at most {remaining} rows, or wait until it renews on {}",
                month.end_rfc3339()
            )
        };
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, detail).with_violated_policies(vec!["inference"]);
        // A smaller batch fits now: only a quota used up is waited out until the month ends.
        if remaining == 0 { problem.with_retry_after(until_end.max(1)) } else { problem }
    }

    /// Counts an inference call's `units` (one a row it scores; 0 for a call that is not a model
    /// call) against the tenant's quota of this month, all or none: 429 when they do not all fit.
    /// Settle the reservation with the call's outcome: a call that fails gives its units back, and
    /// so does a request refused before reaching the service, because the reservation is taken
    /// right before the upstream call.
    pub(crate) async fn reserve_inference(
        &self,
        units: u64,
        tenant_id: &str,
        limits: &PlanLimits,
        headers: &mut HeaderMap,
    ) -> Result<Reservation, Problem> {
        if units == 0 {
            return Ok(Reservation { held: None });
        }
        let month = Month::at(self.inner.clock.now_micros());
        let quota = limits.monthly_inference_quota;
        let outcome = match &self.inner.backend {
            Backend::Local(local) => local.reserve_inference(tenant_id, &month.label, quota, units),
            Backend::Redis(redis) => {
                match redis.reserve_inference(tenant_id, &month.label, month.end, quota, units).await {
                    Ok(outcome) => outcome,
                    Err(error) => return self.backend_failed(&error).map(|()| Reservation { held: None }),
                }
            }
        };
        if !outcome.granted {
            return Err(self.quota_refusal(&month, quota, outcome.used, units, headers));
        }
        let until_end = month.end.saturating_sub(self.inner.clock.now_micros() / MICROS);
        let remaining = quota.saturating_sub(outcome.used);
        append(headers, POLICY, [format!("\"inference\";q={quota};w={}", month.length_secs())]);
        append(headers, RATELIMIT, [format!("\"inference\";r={remaining};t={until_end}")]);
        Ok(Reservation {
            held: Some(Held {
                limiter: self.clone(),
                tenant_id: tenant_id.to_owned(),
                month: month.label,
                units,
                remaining,
                until_end,
            }),
        })
    }

    async fn refund_inference(&self, tenant_id: &str, month: &str, units: u64) {
        match &self.inner.backend {
            Backend::Local(local) => local.refund_inference(tenant_id, month, units),
            Backend::Redis(redis) => {
                if let Err(error) = redis.refund_inference(tenant_id, month, units).await {
                    // The call failed anyway; the units stay spent, whatever the failure policy.
                    let _ = self.backend_failed(&error);
                }
            }
        }
    }

    /// Applies `redis_failure`: `Ok` lets the call through.
    fn backend_failed(&self, error: &redis::RedisError) -> Result<(), Problem> {
        crate::metrics::metrics().rate_limit_backend_errors.inc();
        let now = self.inner.clock.now_micros();
        let last = self.inner.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARNING_INTERVAL_MICROS
            && self.inner.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(%error, on_failure = ?self.inner.on_failure, "rate-limit backend failed; further failures in the next 10 s are counted, not logged");
        }
        match self.inner.on_failure {
            RedisFailure::Open => Ok(()),
            RedisFailure::Closed => Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate limits cannot be checked right now; retry shortly",
            )
            .with_retry_after(1)),
        }
    }
}

/// What one rate limit applies to, within a tenant.
struct Subject {
    /// The policy's name in the `RateLimit` fields.
    policy: &'static str,
    /// The subject's key within the tenant.
    id: String,
    /// Its sustained rate and burst.
    requests_per_second: f64,
    burst: u32,
}

/// Adds `items` to the list in the field `name`, after the items already there: one field line,
/// so that a client reading a single value reads every limit.
fn append(headers: &mut HeaderMap, name: HeaderName, items: impl IntoIterator<Item = String>) {
    let mut value = headers.get(&name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
    for item in items {
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(&item);
    }
    // Policy names and integers only: always a valid header value.
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}

/// An inference call's units counted against the tenant's monthly quota, until settled.
#[must_use = "settle the reservation with the outcome of the call"]
pub(crate) struct Reservation {
    held: Option<Held>,
}

/// Units of a tenant's monthly quota, held until the call they were reserved for ends.
struct Held {
    limiter: RateLimiter,
    tenant_id: String,
    month: String,
    units: u64,
    /// The units left once these were taken, and the seconds until the month ends.
    remaining: u64,
    until_end: u64,
}

impl Reservation {
    /// Keeps the units when the model may have run (`keep`), gives them back otherwise, and then
    /// says so in the answer's `RateLimit` field (`headers`). A reservation dropped without
    /// settling (the client went away during the call) keeps its units: the service may have run
    /// the model.
    pub(crate) async fn settle(self, keep: bool, headers: &mut HeaderMap) {
        let Some(held) = self.held.filter(|_| !keep) else { return };
        held.limiter.refund_inference(&held.tenant_id, &held.month, held.units).await;
        let refunded = format!("\"inference\";r={};t={}", held.remaining + held.units, held.until_end);
        let Some(items) = headers.get(RATELIMIT).and_then(|value| value.to_str().ok()) else { return };
        let items: Vec<&str> = items
            .split(", ")
            .map(|item| if item.starts_with("\"inference\";") { refunded.as_str() } else { item })
            .collect();
        if let Ok(value) = HeaderValue::try_from(items.join(", ")) {
            headers.insert(RATELIMIT, value);
        }
    }
}

/// A calendar month in UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Month {
    /// `YYYY-MM`.
    label: String,
    /// First second of the month, UNIX time.
    start: u64,
    /// First second of the next month, UNIX time.
    end: u64,
}

impl Month {
    fn at(now_micros: u64) -> Self {
        let now =
            DateTime::<Utc>::from_timestamp_micros(i64::try_from(now_micros).unwrap_or(i64::MAX)).unwrap_or_default();
        let (year, month) = (now.year(), now.month());
        let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        let first_second = |year, month| {
            NaiveDate::from_ymd_opt(year, month, 1)
                .and_then(|day| day.and_hms_opt(0, 0, 0))
                .map_or(0, |time| u64::try_from(time.and_utc().timestamp()).unwrap_or(0))
        };
        Self {
            label: format!("{year:04}-{month:02}"),
            start: first_second(year, month),
            end: first_second(next_year, next_month),
        }
    }

    fn length_secs(&self) -> u64 {
        self.end - self.start
    }

    fn end_rfc3339(&self) -> String {
        DateTime::<Utc>::from_timestamp(i64::try_from(self.end).unwrap_or(0), 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }
}

#[cfg(test)]
mod tests;
