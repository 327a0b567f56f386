//! Resilience at the edge: a deadline on every upstream call (the upstream's timeout, shortened
//! by the client's `grpc-timeout`), retries of idempotent calls within a retry budget, a circuit
//! breaker per upstream, and load shedding when the gateway has too many requests in flight.
//!
//! The breaker and the budget read the time from a [`Clock`], so that unit tests move it by hand.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aigronova_platform::{config::ConfigError, grpc::parse_grpc_timeout};
use axum::{
    extract::Request,
    http::{HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tokio::{sync::Semaphore, time::Instant};
use tonic::{Code, Status};

use crate::{
    metrics::metrics,
    problem::Problem,
    proxy::RequestFacts,
    routes::{Route, RouteTable},
};

/// The header in which a gRPC client states how long it will wait.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The retry budget counts the requests and retries of this many past seconds.
const BUDGET_WINDOW_SECS: usize = 10;

/// `Retry-After` while a half-open circuit waits for its probe.
const PROBE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Paths served whatever the load: the probes, so that an orchestrator does not restart a gateway
/// for being busy, and `/metrics`, so that an overload can be watched.
const UNSHED_PATHS: [&str; 6] = ["/healthz", "/readyz", "/v2", "/v2/health/live", "/v2/health/ready", "/metrics"];

/// Circuit breaking per upstream (`[gateway.circuit_breaker]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failed calls that open an upstream's circuit. A failure is `Unavailable`, a
    /// connection error, or the upstream's own timeout passing; a deadline the client chose
    /// through `grpc-timeout` does not count.
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before it lets one probe call through, in milliseconds.
    pub cool_down_ms: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, cool_down_ms: 10_000 }
    }
}

/// Retries of idempotent calls (`[gateway.retry]`): calls of `GET` routes that fail with
/// `Unavailable` or a connection error. Other routes are never retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts of one call, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Retries allowed per upstream, as a share of its requests over the last 10 seconds.
    pub budget_ratio: f64,
    /// Retries per second allowed on top of `budget_ratio` (over the same 10 seconds), so that an
    /// upstream with little traffic can still be retried.
    pub min_retries_per_second: u32,
    /// Backoff before the first retry, in milliseconds; it doubles with each retry, and each
    /// sleep is a random time between half and all of it.
    pub backoff_base_ms: u64,
    /// Longest backoff, in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            budget_ratio: 0.2,
            min_retries_per_second: 10,
            backoff_base_ms: 25,
            backoff_max_ms: 250,
        }
    }
}

/// Checks the resilience settings of the gateway's configuration.
pub(crate) fn validate(config: &crate::Config) -> Result<(), ConfigError> {
    for (owner, seconds) in &config.upstream_timeouts {
        if !(seconds.is_finite() && *seconds > 0.0 && *seconds <= 3600.0) {
            return Err(ConfigError(format!(
                "gateway.upstream_timeouts.{owner} must be a number of seconds above 0 and at most 3600"
            )));
        }
    }
    if config.max_concurrent_requests == 0 {
        return Err(ConfigError("gateway.max_concurrent_requests must be positive".into()));
    }
    // A tenant may hold a quarter of the room, which must take the largest body a plan allows.
    let largest = [&config.plans.starter, &config.plans.professional, &config.plans.enterprise]
        .iter()
        .map(|plan| plan.max_body_bytes)
        .max()
        .unwrap_or_default();
    if config.max_buffered_body_bytes / 4 < largest {
        return Err(ConfigError(format!(
            "gateway.max_buffered_body_bytes must be at least four times the largest plan's max_body_bytes, {}",
            4 * largest
        )));
    }
    if config.max_concurrent_requests_per_tenant == 0 {
        return Err(ConfigError("gateway.max_concurrent_requests_per_tenant must be positive".into()));
    }
    let breaker = &config.circuit_breaker;
    if breaker.failure_threshold == 0 || breaker.cool_down_ms == 0 {
        return Err(ConfigError("gateway.circuit_breaker.failure_threshold and cool_down_ms must be positive".into()));
    }
    let retry = &config.retry;
    if !(1..=10).contains(&retry.max_attempts) {
        return Err(ConfigError("gateway.retry.max_attempts must be between 1 and 10".into()));
    }
    if !(retry.budget_ratio.is_finite() && (0.0..=1.0).contains(&retry.budget_ratio)) {
        return Err(ConfigError("gateway.retry.budget_ratio must be between 0 and 1".into()));
    }
    if retry.backoff_base_ms == 0 || retry.backoff_max_ms < retry.backoff_base_ms {
        return Err(ConfigError("gateway.retry.backoff_base_ms must be positive and at most backoff_max_ms".into()));
    }
    Ok(())
}

/// Where the breaker and the retry budget read the time.
pub(crate) trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// Tokio's clock: the wall clock, or a paused one in tests.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What a finished call says about the health of its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The upstream answered, whatever it answered.
    Healthy,
    /// `Unavailable`, a connection error, or the upstream's own timeout passed.
    Failed,
    /// Nothing learnt: a deadline the client chose passed, or the call was abandoned.
    Unknown,
}

impl Outcome {
    fn of(code: Code, client_chose_deadline: bool) -> Self {
        match code {
            Code::Unavailable => Self::Failed,
            Code::DeadlineExceeded if client_chose_deadline => Self::Unknown,
            Code::DeadlineExceeded => Self::Failed,
            _ => Self::Healthy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CircuitState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl CircuitState {
    /// The value of the `circuit_state` gauge.
    fn gauge(self) -> i64 {
        match self {
            Self::Closed { .. } => 0,
            Self::HalfOpen { .. } => 1,
            Self::Open { .. } => 2,
        }
    }
}

/// A consecutive-failures circuit breaker for one upstream. Closed, it lets every call through;
/// after `failure_threshold` failures in a row it opens and refuses calls for the cool-down; then,
/// half-open, it lets one probe through: success closes it, failure opens it again.
pub(crate) struct CircuitBreaker {
    upstream: String,
    failure_threshold: u32,
    cool_down: Duration,
    clock: Arc<dyn Clock>,
    state: Mutex<CircuitState>,
}

/// Leave to call the upstream. Report how the call went with [`Admission::record`]; an admission
/// dropped unreported (the client went away) counts as [`Outcome::Unknown`], so that an abandoned
/// probe does not hold the half-open circuit forever.
pub(crate) struct Admission<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl Admission<'_> {
    pub(crate) fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        self.breaker.record(self.probe, outcome);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(self.probe, Outcome::Unknown);
        }
    }
}

impl CircuitBreaker {
    pub(crate) fn new(upstream: &str, config: &CircuitBreakerConfig, clock: Arc<dyn Clock>) -> Self {
        // Creates the series at 0 without resetting one another gateway in this process set.
        metrics().circuit_state.with_label_values(&[upstream]);
        Self {
            upstream: upstream.to_owned(),
            failure_threshold: config.failure_threshold,
            cool_down: Duration::from_millis(config.cool_down_ms),
            clock,
            state: Mutex::new(CircuitState::Closed { failures: 0 }),
        }
    }

    /// Lets a call through, or says how long until the circuit may let one through.
    pub(crate) fn admit(&self) -> Result<Admission<'_>, Duration> {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let probe = match *state {
            CircuitState::Closed { .. } => false,
            CircuitState::Open { until } if now < until => return Err(until - now),
            CircuitState::HalfOpen { probing: true } => return Err(PROBE_RETRY_AFTER),
            CircuitState::Open { .. } | CircuitState::HalfOpen { probing: false } => {
                self.transition(&mut state, CircuitState::HalfOpen { probing: true });
                true
            }
        };
        Ok(Admission { breaker: self, probe, recorded: false })
    }

    fn record(&self, probe: bool, outcome: Outcome) {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let next = match (*state, outcome) {
            (CircuitState::HalfOpen { .. }, Outcome::Healthy) if probe => CircuitState::Closed { failures: 0 },
            (CircuitState::HalfOpen { .. }, Outcome::Failed) if probe => {
                CircuitState::Open { until: now + self.cool_down }
            }
            (CircuitState::HalfOpen { .. }, Outcome::Unknown) if probe => CircuitState::HalfOpen { probing: false },
            (CircuitState::Closed { .. }, Outcome::Healthy) => CircuitState::Closed { failures: 0 },
            (CircuitState::Closed { failures }, Outcome::Failed) if failures + 1 >= self.failure_threshold => {
                CircuitState::Open { until: now + self.cool_down }
            }
            (CircuitState::Closed { failures }, Outcome::Failed) => CircuitState::Closed { failures: failures + 1 },
            // A call let through before the circuit opened says nothing the probe will not.
            (current, _) => current,
        };
        self.transition(&mut state, next);
    }

    fn transition(&self, state: &mut CircuitState, next: CircuitState) {
        if state.gauge() != next.gauge() {
            metrics().circuit_state.with_label_values(&[self.upstream.as_str()]).set(next.gauge());
            match next {
                CircuitState::Open { .. } => tracing::warn!(upstream = %self.upstream, "circuit opened"),
                CircuitState::HalfOpen { .. } => tracing::info!(upstream = %self.upstream, "circuit half-open"),
                CircuitState::Closed { .. } => tracing::info!(upstream = %self.upstream, "circuit closed"),
            }
        }
        *state = next;
    }
}

/// Requests and retries counted in one second of the budget's window.
#[derive(Clone, Copy, Debug, Default)]
struct Second {
    index: u64,
    requests: u64,
    retries: u64,
}

/// A retry budget in the manner of Finagle's and linkerd's: over the last 10 seconds, retries may
/// add `budget_ratio` of the requests, plus `min_retries_per_second` for each second, so that
/// retries cannot multiply the load of an upstream that is already failing.
pub(crate) struct RetryBudget {
    ratio: f64,
    reserve: f64,
    clock: Arc<dyn Clock>,
    origin: Instant,
    seconds: Mutex<[Second; BUDGET_WINDOW_SECS]>,
}

impl RetryBudget {
    pub(crate) fn new(config: &RetryConfig, clock: Arc<dyn Clock>) -> Self {
        let origin = clock.now();
        Self {
            ratio: config.budget_ratio,
            reserve: f64::from(config.min_retries_per_second) * BUDGET_WINDOW_SECS as f64,
            clock,
            origin,
            seconds: Mutex::new([Second::default(); BUDGET_WINDOW_SECS]),
        }
    }

    /// Counts a request (not a retry).
    pub(crate) fn deposit(&self) {
        let now = self.second_index();
        let mut seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        Self::current(&mut seconds, now).requests += 1;
    }

    /// Takes one retry from the budget, if the budget allows one.
    pub(crate) fn try_withdraw(&self) -> bool {
        let now = self.second_index();
        let mut seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.has_room(&seconds, now) {
            return false;
        }
        Self::current(&mut seconds, now).retries += 1;
        true
    }

    /// Whether the budget would allow one retry now, taking nothing.
    pub(crate) fn allows_one(&self) -> bool {
        let now = self.second_index();
        self.has_room(&self.seconds.lock().unwrap_or_else(PoisonError::into_inner), now)
    }

    fn has_room(&self, seconds: &[Second; BUDGET_WINDOW_SECS], now: u64) -> bool {
        let recent = seconds.iter().filter(|second| now - second.index < BUDGET_WINDOW_SECS as u64);
        let (requests, retries) = recent.fold((0, 0), |(q, r), second| (q + second.requests, r + second.retries));
        (retries + 1) as f64 <= self.ratio * requests as f64 + self.reserve
    }

    fn second_index(&self) -> u64 {
        self.clock.now().saturating_duration_since(self.origin).as_secs()
    }

    fn current(seconds: &mut [Second; BUDGET_WINDOW_SECS], index: u64) -> &mut Second {
        let slot = &mut seconds[(index % BUDGET_WINDOW_SECS as u64) as usize];
        if slot.index != index {
            *slot = Second { index, ..Second::default() };
        }
        slot
    }
}

/// How a call to a route may be made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallPolicy {
    /// Whether the call may be repeated: only calls of `GET` routes, which read.
    pub(crate) idempotent: bool,
    /// When the client stops waiting, from its `grpc-timeout` header.
    pub(crate) client_deadline: Option<Instant>,
    /// The gateway's own limit for this call when shorter than the upstream's timeout: a call
    /// that outlasts it counts against the upstream, as one past the upstream's timeout does.
    pub(crate) own_timeout: Option<Duration>,
}

impl CallPolicy {
    /// The policy of a call to `route`; a malformed `grpc-timeout`, or one given twice (the first
    /// and the last would be different deadlines), is a 400.
    pub(crate) fn of(route: &Route, headers: &HeaderMap) -> Result<Self, Problem> {
        if headers.get_all(GRPC_TIMEOUT).iter().nth(1).is_some() {
            return Err(Problem::invalid_field(GRPC_TIMEOUT, "the grpc-timeout header is given more than once"));
        }
        let client_deadline = match headers.get(GRPC_TIMEOUT) {
            None => None,
            Some(value) => {
                let timeout = value.to_str().ok().and_then(parse_grpc_timeout).ok_or_else(|| {
                    Problem::invalid_field(
                        GRPC_TIMEOUT,
                        "the grpc-timeout header must be a positive number of 1 to 8 digits and a unit (H, M, S, m, u \
                         or n), e.g. 250m",
                    )
                })?;
                Some(Instant::now() + timeout)
            }
        };
        Ok(Self { idempotent: route.http_method == Method::GET, client_deadline, own_timeout: None })
    }
}

/// The guards of one upstream.
struct Guarded {
    timeout: Duration,
    breaker: CircuitBreaker,
    budget: RetryBudget,
}

/// The resilience policy of every upstream, and the gateway's concurrency limits.
pub(crate) struct Resilience {
    upstreams: BTreeMap<String, Guarded>,
    retry: RetryConfig,
    in_flight: Semaphore,
    per_tenant: usize,
    /// Requests in flight and the KiB of request bodies held, by tenant, for those with any.
    tenants_in_flight: Mutex<HashMap<String, TenantLoad>>,
    /// Request bodies held in memory, in KiB (see `max_buffered_body_bytes`).
    body_kib: Semaphore,
    /// The KiB of bodies one tenant may hold: a quarter of `body_kib`'s.
    body_kib_per_tenant: usize,
}

/// What one tenant has in flight.
#[derive(Default)]
struct TenantLoad {
    requests: usize,
    body_kib: usize,
}

/// One request of a tenant in flight, counted until it is dropped, with the room reserved for
/// its body.
pub(crate) struct TenantSlot<'a> {
    resilience: &'a Resilience,
    tenant_id: &'a str,
    body: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl<'a> TenantSlot<'a> {
    /// The room of this request's body in memory, of at most `limit` bytes (its plan's), reserved
    /// on this slot until the slot is dropped.
    pub(crate) fn body_room<'s>(&'s mut self, limit: usize) -> SlotRoom<'s, 'a> {
        SlotRoom { slot: self, most_kib: limit.div_ceil(1024) }
    }

    /// The KiB reserved for the body so far.
    fn held_kib(&self) -> usize {
        self.body.as_ref().map_or(0, |permit| permit.num_permits())
    }

    /// Takes `kib` more of the tenant's and of all tenants' room; false, taking nothing, when either
    /// has too little left.
    fn take_kib(&mut self, kib: usize) -> Result<(), Shortage> {
        let resilience = self.resilience;
        let mut tenants = resilience.tenants_in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(load) = tenants.get_mut(self.tenant_id) else { return Err(Shortage::Gateway) };
        if load.body_kib + kib > resilience.body_kib_per_tenant {
            return Err(Shortage::Tenant);
        }
        let Some(permit) = u32::try_from(kib).ok().and_then(|kib| resilience.body_kib.try_acquire_many(kib).ok())
        else {
            return Err(Shortage::Gateway);
        };
        load.body_kib += kib;
        match &mut self.body {
            Some(held) => held.merge(permit),
            None => self.body = Some(permit),
        }
        Ok(())
    }
}

/// Whose room for request bodies is used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shortage {
    /// The tenant's share (a quarter of the gateway's).
    Tenant,
    /// The gateway's, all tenants together.
    Gateway,
}

/// Memory a request body takes while it is read, asked for as it grows: a body whose length is
/// not known in advance (compressed, or chunked) holds room for what has arrived, not for its
/// plan's whole limit, so that slow senders do not hold room that others could use.
pub(crate) trait BodyRoom: Send {
    /// Room for `bytes` of body in all; a 503 problem when there is not enough left.
    fn hold(&mut self, bytes: usize) -> Result<(), Problem>;
}

/// Bodies not counted against any room (the admin API's, small and for operators).
impl BodyRoom for () {
    fn hold(&mut self, _bytes: usize) -> Result<(), Problem> {
        Ok(())
    }
}

/// The room of one request's body on its tenant's slot; see [`TenantSlot::body_room`].
pub(crate) struct SlotRoom<'s, 'a> {
    slot: &'s mut TenantSlot<'a>,
    most_kib: usize,
}

/// The least a growing body's room grows by: a decoder hands on up to 32 KiB at a time.
const BODY_ROOM_STEP_KIB: usize = 64;

impl SlotRoom<'_, '_> {
    /// Gives back what the room holds past `bytes`, once the body is read and is that long: its
    /// growth reserved ahead of it is not kept while its call is out.
    pub(crate) fn trim_to(&mut self, bytes: usize) {
        let needed = bytes.div_ceil(1024);
        let slot = &mut *self.slot;
        let Some(excess) = slot.body.as_mut().and_then(|held| held.split(held.num_permits().saturating_sub(needed)))
        else {
            return;
        };
        let mut tenants = slot.resilience.tenants_in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(load) = tenants.get_mut(slot.tenant_id) {
            load.body_kib -= excess.num_permits();
        }
        // `excess` goes back to all tenants' room as it is dropped.
    }

    /// Reserves room for a body of exactly `bytes` (its `Content-Length`), refused as [`BodyRoom::hold`]
    /// refuses.
    pub(crate) fn reserve(&mut self, bytes: usize) -> Result<(), Problem> {
        let needed = bytes.div_ceil(1024);
        let held = self.slot.held_kib();
        if needed <= held {
            return Ok(());
        }
        self.slot.take_kib(needed - held).map_err(bodies_full)
    }
}

/// The 503 for a body the room left cannot take, saying whose room is used up.
fn bodies_full(shortage: Shortage) -> Problem {
    metrics().load_shed.inc();
    let detail = match shortage {
        Shortage::Tenant => {
            "the tenant's requests in flight hold as much request body as one tenant may (a quarter of the \
             gateway's room); retry shortly"
        }
        Shortage::Gateway => "the gateway holds as many request bodies as it may; retry shortly",
    };
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail).with_retry_after(1)
}

impl BodyRoom for SlotRoom<'_, '_> {
    /// Grows the room to `bytes` and, while there is enough left, to twice what it held (at least
    /// [`BODY_ROOM_STEP_KIB`], at most the plan's limit), so that a body growing in small parts
    /// takes the locks a few times only; 503 with `Retry-After: 1` when the bodies held already
    /// leave too little, the tenant's or all tenants'.
    fn hold(&mut self, bytes: usize) -> Result<(), Problem> {
        let needed = bytes.div_ceil(1024);
        let held = self.slot.held_kib();
        if needed <= held {
            return Ok(());
        }
        let ample = (2 * held).max(BODY_ROOM_STEP_KIB).min(self.most_kib).max(needed);
        match self.slot.take_kib(ample - held) {
            Err(_) if ample > needed => self.slot.take_kib(needed - held),
            taken => taken,
        }
        .map_err(bodies_full)
    }
}

impl Drop for TenantSlot<'_> {
    fn drop(&mut self) {
        metrics().tenant_requests_in_flight.dec();
        let held = self.body.take().map_or(0, |permit| permit.num_permits());
        let mut tenants = self.resilience.tenants_in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(load) = tenants.get_mut(self.tenant_id) {
            load.requests -= 1;
            load.body_kib -= held;
            if load.requests == 0 {
                tenants.remove(self.tenant_id);
            }
        }
    }
}

impl Resilience {
    pub(crate) fn new(config: &crate::Config, clock: Arc<dyn Clock>) -> Self {
        let default_timeout = Duration::from_secs(config.upstream_timeout_secs);
        for owner in config.upstream_timeouts.keys().filter(|owner| !config.upstreams.contains_key(*owner)) {
            tracing::warn!(owner, "gateway.upstream_timeouts names an upstream that is not configured");
        }
        let upstreams = config
            .upstreams
            .keys()
            .map(|owner| {
                let timeout =
                    config.upstream_timeouts.get(owner).map_or(default_timeout, |secs| Duration::from_secs_f64(*secs));
                let guarded = Guarded {
                    timeout,
                    breaker: CircuitBreaker::new(owner, &config.circuit_breaker, clock.clone()),
                    budget: RetryBudget::new(&config.retry, clock.clone()),
                };
                (owner.clone(), guarded)
            })
            .collect();
        Self {
            upstreams,
            retry: config.retry.clone(),
            in_flight: Semaphore::new(config.max_concurrent_requests),
            per_tenant: config.max_concurrent_requests_per_tenant,
            tenants_in_flight: Mutex::new(HashMap::new()),
            body_kib: Semaphore::new(config.max_buffered_body_bytes.div_ceil(1024)),
            body_kib_per_tenant: config.max_buffered_body_bytes.div_ceil(1024) / 4,
        }
    }

    /// Counts a request of `tenant_id` in flight until the slot is dropped; 429 with
    /// `Retry-After: 1` when the tenant already has `max_concurrent_requests_per_tenant`.
    pub(crate) fn enter_tenant<'a>(&'a self, tenant_id: &'a str) -> Result<TenantSlot<'a>, Problem> {
        let mut tenants = self.tenants_in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if tenants.get(tenant_id).is_some_and(|load| load.requests >= self.per_tenant) {
            metrics().rate_limited.with_label_values(&["concurrency"]).inc();
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("this tenant has {} requests in flight, the most it may; retry shortly", self.per_tenant),
            )
            .with_retry_after(1));
        }
        match tenants.get_mut(tenant_id) {
            Some(load) => load.requests += 1,
            None => {
                tenants.insert(tenant_id.to_owned(), TenantLoad { requests: 1, body_kib: 0 });
            }
        }
        metrics().tenant_requests_in_flight.inc();
        Ok(TenantSlot { resilience: self, tenant_id, body: None })
    }

    /// Calls `owner` through its breaker, within the deadline, retrying as `policy` allows.
    /// `attempt` makes one call given the time left; its failures become problem documents.
    pub(crate) async fn call<T, F, Fut>(&self, owner: &str, policy: CallPolicy, mut attempt: F) -> Result<T, Problem>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let Some(guarded) = self.upstreams.get(owner) else {
            return Err(Problem::from_status(&Status::unavailable(format!("no upstream configured for {owner}"))));
        };
        let own_deadline = Instant::now() + policy.own_timeout.map_or(guarded.timeout, |own| own.min(guarded.timeout));
        let (deadline, client_chose_deadline) = match policy.client_deadline {
            Some(client) if client < own_deadline => (client, true),
            _ => (own_deadline, false),
        };
        guarded.budget.deposit();
        let metrics = metrics();
        let mut attempts = 0;
        // The failure a retry follows: the answer when the deadline passes during the pause before
        // it (the timer's granularity may carry a pause past it), as no attempt was then out.
        let mut retrying: Option<Status> = None;
        loop {
            attempts += 1;
            let started = Instant::now();
            if started >= deadline {
                // Passed before any call left (a deadline of a few microseconds): no upstream is to blame.
                let status = retrying.unwrap_or_else(|| {
                    Status::deadline_exceeded(format!("the deadline passed before {owner} was called"))
                });
                return Err(Problem::from_status(&status));
            }
            // A retry goes out only if the circuit, which other calls may have opened meanwhile,
            // admits it, and only then is it taken from the budget and counted as sent.
            let admission = guarded.breaker.admit().map_err(|wait| circuit_open(owner, wait))?;
            if let Some(status) = retrying.take() {
                if !guarded.budget.try_withdraw() {
                    metrics.upstream_retries.with_label_values(&[owner, "over_budget"]).inc();
                    return Err(Problem::from_status(&status));
                }
                metrics.upstream_retries.with_label_values(&[owner, "sent"]).inc();
            }
            let result = match tokio::time::timeout_at(deadline, attempt(deadline - started)).await {
                // tonic reports its own timeout, and a server's, as `Cancelled`; the gateway
                // cancels nothing else.
                Ok(Err(status)) if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) => {
                    Err(deadline_exceeded(owner))
                }
                Ok(result) => result,
                Err(_elapsed) => Err(deadline_exceeded(owner)),
            };
            let code = result.as_ref().err().map_or(Code::Ok, Status::code);
            metrics.upstream_calls.with_label_values(&[owner, code_name(code)]).inc();
            metrics.upstream_duration.with_label_values(&[owner]).observe(started.elapsed().as_secs_f64());
            // A service reporting a third party's failure (an institution down) answered: its
            // circuit stays closed, and the service has already retried the third party itself.
            let third_party = result.as_ref().err().is_some_and(aigronova_platform::error::is_third_party_failure);
            admission.record(if third_party { Outcome::Healthy } else { Outcome::of(code, client_chose_deadline) });
            let status = match result {
                Ok(response) => return Ok(response),
                Err(status) => status,
            };
            let retryable = policy.idempotent && code == Code::Unavailable && !third_party;
            if !(retryable && attempts < self.retry.max_attempts) {
                return Err(Problem::from_status(&status));
            }
            let pause = self.backoff(attempts);
            // A timer wakes up to a millisecond late: a pause that could end past the deadline is
            // not taken.
            if Instant::now() + pause + TIMER_GRANULARITY >= deadline {
                return Err(Problem::from_status(&status));
            }
            // Not worth the pause when the budget has no retry left now.
            if !guarded.budget.allows_one() {
                metrics.upstream_retries.with_label_values(&[owner, "over_budget"]).inc();
                return Err(Problem::from_status(&status));
            }
            tracing::debug!(upstream = owner, attempt = attempts + 1, "retrying an unavailable upstream");
            retrying = Some(status);
            tokio::time::sleep(pause).await;
        }
    }

    /// The pause before retry number `retry` (1 for the first): exponential, capped, jittered
    /// between half and all of it so that clients retrying together spread out.
    fn backoff(&self, retry: u32) -> Duration {
        let doubled = self.retry.backoff_base_ms.saturating_mul(1 << retry.saturating_sub(1).min(20));
        let cap = Duration::from_millis(doubled.min(self.retry.backoff_max_ms));
        cap / 2 + (cap / 2).mul_f64(random_fraction())
    }
}

/// How late tokio's timer may wake a sleep: it counts in whole milliseconds.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

/// A uniform random number in [0, 1).
fn random_fraction() -> f64 {
    // 53 random bits fill an f64's mantissa exactly.
    getrandom::u64().map_or(0.5, |bits| (bits >> 11) as f64 / (1_u64 << 53) as f64)
}

/// The status code's name, as `{code:?}` writes it, for the metrics' labels.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn deadline_exceeded(owner: &str) -> Status {
    Status::deadline_exceeded(format!("{owner} did not answer before the deadline"))
}

fn circuit_open(owner: &str, wait: Duration) -> Problem {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, format!("{owner} is failing; calls to it are paused"))
        .with_retry_after(seconds.max(1))
}

/// Refuses a request with 503 and `Retry-After: 1` when `max_concurrent_requests` are in flight,
/// rather than queueing it; the probes, `/metrics` and CORS preflights are exempt. A refused request is counted and
/// logged under the template of the route it was for (`routes` knows the transcoded ones, axum
/// the gateway's own).
pub(crate) async fn shed_load(resilience: &Resilience, routes: &RouteTable, request: Request, next: Next) -> Response {
    // A preflight calls no service: the CORS layer answers it, or the routes refuse it.
    if UNSHED_PATHS.contains(&request.uri().path()) || crate::cors::is_preflight(&request) {
        return next.run(request).await;
    }
    let Ok(_permit) = resilience.in_flight.try_acquire() else {
        metrics().load_shed.inc();
        let route = routes.template_of(request.method(), request.uri().path()).map(str::to_owned);
        let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the gateway is at capacity; retry shortly")
            .with_retry_after(1)
            .into_response();
        response.extensions_mut().insert(RequestFacts { route, ..RequestFacts::default() });
        return response;
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves only when told to.
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(Self(Mutex::new(Instant::now())))
        }

        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn breaker(clock: &Arc<ManualClock>) -> CircuitBreaker {
        let config = CircuitBreakerConfig { failure_threshold: 3, cool_down_ms: 1_000 };
        CircuitBreaker::new(&format!("test-{}", uuid::Uuid::new_v4()), &config, clock.clone())
    }

    fn fail(breaker: &CircuitBreaker, times: usize) {
        for _ in 0..times {
            breaker.admit().expect("admitted").record(Outcome::Failed);
        }
    }

    fn gauge(breaker: &CircuitBreaker) -> i64 {
        metrics().circuit_state.with_label_values(&[breaker.upstream.as_str()]).get()
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let cases = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("5S", Duration::from_secs(5)),
            ("250m", Duration::from_millis(250)),
            ("1500u", Duration::from_micros(1500)),
            ("99999999n", Duration::from_nanos(99_999_999)),
            ("00000001S", Duration::from_secs(1)),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_grpc_timeout(value), Some(expected), "{value}");
        }
        // gRPC's timeout is a positive integer of at most 8 digits and a unit.
        for value in ["0m", "00S", "123456789m", "5", "5s", "-1S", ""] {
            assert_eq!(parse_grpc_timeout(value), None, "{value}");
        }
    }

    #[test]
    fn the_room_for_request_bodies_must_take_four_of_the_largest_body_a_plan_allows() {
        use aigronova_platform::config::Validate;
        let mut config = crate::Config::default();
        config.upstreams.insert("healthquantum".into(), "http://127.0.0.1:1".into());
        assert!(config.validate().is_ok());
        config.max_buffered_body_bytes = 4 * config.plans.enterprise.max_body_bytes - 1;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("gateway.max_buffered_body_bytes must be at least four times"), "{error}");
        config.plans.enterprise.max_body_bytes = config.plans.professional.max_body_bytes;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn malformed_grpc_timeouts_are_refused() {
        let cases = ["", "m", "250", "250ms", "123456789S", "-5S", "+5S", "5s", "5 S", " 5S", "1.5S", "5é", "٣S"];
        for value in cases {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
    }

    #[test]
    fn the_circuit_opens_after_the_threshold_of_consecutive_failures() {
        let clock = ManualClock::new();
        let breaker = breaker(&clock);
        fail(&breaker, 2);
        breaker.admit().unwrap().record(Outcome::Healthy);
        fail(&breaker, 2);
        assert_eq!(gauge(&breaker), 0, "a success reset the count");
        fail(&breaker, 1);
        assert_eq!(gauge(&breaker), 2);
        assert_eq!(breaker.admit().err(), Some(Duration::from_millis(1_000)));
        clock.advance(Duration::from_millis(400));
        assert_eq!(breaker.admit().err(), Some(Duration::from_millis(600)));
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_through_and_its_success_closes_the_circuit() {
        let clock = ManualClock::new();
        let breaker = breaker(&clock);
        fail(&breaker, 3);
        clock.advance(Duration::from_millis(1_000));
        let probe = breaker.admit().expect("the probe");
        assert_eq!(gauge(&breaker), 1);
        assert_eq!(breaker.admit().err(), Some(PROBE_RETRY_AFTER), "one probe at a time");
        probe.record(Outcome::Healthy);
        assert_eq!(gauge(&breaker), 0);
        for _ in 0..5 {
            breaker.admit().expect("closed").record(Outcome::Healthy);
        }
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_another_cool_down() {
        let clock = ManualClock::new();
        let breaker = breaker(&clock);
        fail(&breaker, 3);
        clock.advance(Duration::from_millis(1_500));
        breaker.admit().expect("the probe").record(Outcome::Failed);
        assert_eq!(gauge(&breaker), 2);
        assert_eq!(breaker.admit().err(), Some(Duration::from_millis(1_000)));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let clock = ManualClock::new();
        let breaker = breaker(&clock);
        fail(&breaker, 3);
        clock.advance(Duration::from_millis(1_000));
        drop(breaker.admit().expect("the probe"));
        assert_eq!(gauge(&breaker), 1);
        breaker.admit().expect("a new probe").record(Outcome::Healthy);
        assert_eq!(gauge(&breaker), 0);
    }

    #[test]
    fn calls_admitted_before_the_circuit_opened_do_not_close_it() {
        let clock = ManualClock::new();
        let breaker = breaker(&clock);
        let late = breaker.admit().unwrap();
        fail(&breaker, 3);
        late.record(Outcome::Healthy);
        assert_eq!(gauge(&breaker), 2);
    }

    #[test]
    fn status_code_labels_are_the_codes_names() {
        for number in 0..=16 {
            let code = Code::from_i32(number);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }

    #[test]
    fn deadlines_the_client_chose_do_not_count_against_the_upstream() {
        assert_eq!(Outcome::of(Code::DeadlineExceeded, true), Outcome::Unknown);
        assert_eq!(Outcome::of(Code::DeadlineExceeded, false), Outcome::Failed);
        assert_eq!(Outcome::of(Code::Unavailable, true), Outcome::Failed);
        for code in [Code::Ok, Code::NotFound, Code::InvalidArgument, Code::Internal, Code::PermissionDenied] {
            assert_eq!(Outcome::of(code, false), Outcome::Healthy, "{code:?}");
        }
    }

    fn budget(clock: &Arc<ManualClock>, ratio: f64, min_per_second: u32) -> RetryBudget {
        let config =
            RetryConfig { budget_ratio: ratio, min_retries_per_second: min_per_second, ..RetryConfig::default() };
        RetryBudget::new(&config, clock.clone())
    }

    fn withdrawals(budget: &RetryBudget) -> usize {
        (0..10_000).take_while(|_| budget.try_withdraw()).count()
    }

    #[test]
    fn the_retry_budget_allows_a_share_of_recent_requests() {
        let clock = ManualClock::new();
        let budget = budget(&clock, 0.2, 0);
        assert_eq!(withdrawals(&budget), 0, "no requests, no reserve: no retries");
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget), 20);
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget), 2);
    }

    #[test]
    fn the_retry_budget_keeps_a_reserve_per_second_for_quiet_upstreams() {
        let clock = ManualClock::new();
        let budget = budget(&clock, 0.2, 3);
        assert_eq!(withdrawals(&budget), 30, "3 a second over the 10-second window");
        for _ in 0..50 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget), 10);
    }

    #[test]
    fn requests_and_retries_leave_the_budget_after_ten_seconds() {
        let clock = ManualClock::new();
        let budget = budget(&clock, 0.5, 0);
        for _ in 0..20 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget), 10);
        clock.advance(Duration::from_secs(5));
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget), 2, "the first retries still count");
        clock.advance(Duration::from_secs(5));
        assert_eq!(withdrawals(&budget), 0, "the first second left the window, its requests with it");
        clock.advance(Duration::from_secs(5));
        assert_eq!(withdrawals(&budget), 0, "everything left the window");
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget), 2);
    }

    fn resilience(configure: impl FnOnce(&mut crate::Config)) -> Resilience {
        let mut config = crate::Config::default();
        config.upstreams.insert("svc".into(), "http://127.0.0.1:1".into());
        config.retry.backoff_base_ms = 10;
        config.retry.backoff_max_ms = 40;
        configure(&mut config);
        Resilience::new(&config, Arc::new(TokioClock))
    }

    fn policy(idempotent: bool) -> CallPolicy {
        CallPolicy { idempotent, client_deadline: None, own_timeout: None }
    }

    /// Calls `svc` with an upstream that answers with `codes` in turn, and counts the calls.
    async fn call_with(resilience: &Resilience, policy: CallPolicy, codes: &[Code]) -> (Result<(), Problem>, usize) {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let result = resilience
            .call("svc", policy, |_| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let code = codes[n.min(codes.len() - 1)];
                async move { if code == Code::Ok { Ok(()) } else { Err(Status::new(code, "scripted")) } }
            })
            .await;
        (result, calls.into_inner())
    }

    fn status_of(result: &Result<(), Problem>) -> Option<StatusCode> {
        result.as_ref().err().map(|problem| problem.clone().into_response().status())
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_calls_are_retried_on_unavailable_and_others_are_not() {
        let resilience = resilience(|_| {});
        let (result, calls) = call_with(&resilience, policy(true), &[Code::Unavailable, Code::Ok]).await;
        assert!(result.is_ok());
        assert_eq!(calls, 2);
        let (result, calls) = call_with(&resilience, policy(false), &[Code::Unavailable, Code::Ok]).await;
        assert_eq!(status_of(&result), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(calls, 1, "a write is never retried");
        let (result, calls) = call_with(&resilience, policy(true), &[Code::Internal, Code::Ok]).await;
        assert_eq!(status_of(&result), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(calls, 1, "only Unavailable is retried");
        let (_, calls) = call_with(&resilience, policy(true), &[Code::Unavailable]).await;
        assert_eq!(calls, 3, "max_attempts counts the first call");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_budget_is_spent() {
        let resilience = resilience(|config| {
            config.retry.min_retries_per_second = 0;
            config.retry.budget_ratio = 0.5;
            config.retry.max_attempts = 2;
            config.circuit_breaker.failure_threshold = 1000;
        });
        let mut total = 0;
        for _ in 0..10 {
            total += call_with(&resilience, policy(true), &[Code::Unavailable]).await.1;
        }
        assert_eq!(total, 10 + 5, "ten calls, and retries worth half of them");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_the_circuit_refuses_spends_no_budget() {
        let resilience = resilience(|config| {
            config.retry.min_retries_per_second = 0;
            config.retry.budget_ratio = 1.0;
            config.circuit_breaker.failure_threshold = 1;
        });
        // The first attempt's failure opens the circuit: the retry after it does not go out.
        let (result, calls) = call_with(&resilience, policy(true), &[Code::Unavailable, Code::Ok]).await;
        assert_eq!(status_of(&result), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(calls, 1, "the circuit refused the retry");
        let budget = &resilience.upstreams["svc"].budget;
        assert_eq!(withdrawals(budget), 1, "the one retry the call's request allows is still there");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_never_sleep_past_the_deadline() {
        let resilience = resilience(|config| config.retry.max_attempts = 10);
        let deadline = Instant::now() + Duration::from_millis(30);
        let policy = CallPolicy { idempotent: true, client_deadline: Some(deadline), own_timeout: None };
        let (result, calls) = call_with(&resilience, policy, &[Code::Unavailable]).await;
        assert_eq!(status_of(&result), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert!(Instant::now() < deadline, "gave up before the deadline rather than sleep past it");
        assert!((2..10).contains(&calls), "{calls} calls");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_is_a_504_and_trips_the_breaker_only_on_the_upstreams_own_timeout() {
        let resilience = resilience(|config| {
            config.upstream_timeouts.insert("svc".into(), 0.05);
            config.circuit_breaker.failure_threshold = 1;
        });
        let hang = |_| std::future::pending::<Result<(), Status>>();
        let client_deadline = Some(Instant::now() + Duration::from_millis(10));
        let result =
            resilience.call("svc", CallPolicy { idempotent: true, client_deadline, own_timeout: None }, hang).await;
        assert_eq!(status_of(&result), Some(StatusCode::GATEWAY_TIMEOUT));
        let breaker = &resilience.upstreams["svc"].breaker;
        assert!(breaker.admit().is_ok(), "the client's short deadline did not open the circuit");
        let result = resilience.call("svc", policy(true), hang).await;
        assert_eq!(status_of(&result), Some(StatusCode::GATEWAY_TIMEOUT));
        assert!(breaker.admit().is_err(), "the upstream's own timeout did");
        let result = call_with(&resilience, policy(true), &[Code::Ok]).await.0;
        assert_eq!(status_of(&result), Some(StatusCode::SERVICE_UNAVAILABLE), "fails fast while open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_own_timeout_of_the_gateway_trips_the_breaker_as_the_upstreams_does() {
        let resilience = resilience(|config| config.circuit_breaker.failure_threshold = 1);
        let hang = |_| std::future::pending::<Result<(), Status>>();
        let started = Instant::now();
        let own = CallPolicy { idempotent: true, client_deadline: None, own_timeout: Some(Duration::from_millis(20)) };
        let result = resilience.call("svc", own, hang).await;
        assert_eq!(status_of(&result), Some(StatusCode::GATEWAY_TIMEOUT));
        assert!(started.elapsed() < Duration::from_secs(1), "its own 20 ms, not the upstream's 10 s");
        assert!(resilience.upstreams["svc"].breaker.admit().is_err(), "counted against the upstream");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stays_between_half_and_all_of_it() {
        let resilience = resilience(|_| {});
        for (retry, cap_ms) in [(1, 10), (2, 20), (3, 40), (4, 40), (30, 40)] {
            for _ in 0..50 {
                let pause = resilience.backoff(retry);
                let cap = Duration::from_millis(cap_ms);
                assert!(pause >= cap / 2 && pause <= cap, "retry {retry}: {pause:?}");
            }
        }
    }
}
