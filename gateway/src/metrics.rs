//! The gateway's Prometheus metrics, served on `/metrics` with the process's other metrics
//! (inference latency among them).

use std::sync::OnceLock;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, TextEncoder,
};

/// Every metric the gateway records.
pub(crate) struct Metrics {
    /// Requests by matched route template (or `unmatched`), method and status.
    pub(crate) requests: IntCounterVec,
    /// Request latency by route and method.
    pub(crate) request_duration: HistogramVec,
    /// Upstream gRPC calls by owner and gRPC code.
    pub(crate) upstream_calls: IntCounterVec,
    /// Upstream call latency by owner.
    pub(crate) upstream_duration: HistogramVec,
    /// Requests refused by rate limits or quotas, by reason.
    pub(crate) rate_limited: IntCounterVec,
    /// Rate-limit and quota checks that Redis failed to answer.
    pub(crate) rate_limit_backend_errors: IntCounter,
    /// Circuit state by upstream: 0 closed, 1 half-open, 2 open.
    pub(crate) circuit_state: IntGaugeVec,
    /// Retries of idempotent calls by upstream and outcome (`sent`, or `over_budget` when the
    /// retry budget refused one).
    pub(crate) upstream_retries: IntCounterVec,
    /// Requests refused because `max_concurrent_requests` were in flight, or because the request
    /// bodies held left no room for theirs (`max_buffered_body_bytes`).
    pub(crate) load_shed: IntCounter,
    /// Tenants' requests in flight past authentication (the rate limits asked after), all tenants
    /// together.
    pub(crate) tenant_requests_in_flight: IntGauge,
    /// Bytes produced by decoding compressed request bodies, by outcome (`accepted`, `too_large`,
    /// `refused` when they do not decode, `no_room` when the bodies held left no room for theirs).
    pub(crate) inflated_body_bytes: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub(crate) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = Metrics {
            requests: IntCounterVec::new(
                Opts::new("aigronova_gateway_requests_total", "HTTP requests by route, method and status"),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
            request_duration: HistogramVec::new(
                HistogramOpts::new("aigronova_gateway_request_duration_seconds", "HTTP request latency")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "method"],
            )
            .expect("valid metric"),
            upstream_calls: IntCounterVec::new(
                Opts::new("aigronova_gateway_upstream_calls_total", "gRPC calls to services by upstream and code"),
                &["upstream", "code"],
            )
            .expect("valid metric"),
            upstream_duration: HistogramVec::new(
                HistogramOpts::new("aigronova_gateway_upstream_duration_seconds", "gRPC call latency by upstream")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["upstream"],
            )
            .expect("valid metric"),
            rate_limited: IntCounterVec::new(
                Opts::new("aigronova_gateway_rate_limited_total", "Requests refused by rate limits and quotas"),
                &["reason"],
            )
            .expect("valid metric"),
            rate_limit_backend_errors: IntCounter::new(
                "aigronova_gateway_rate_limit_backend_errors_total",
                "Rate-limit and quota checks that Redis failed to answer",
            )
            .expect("valid metric"),
            circuit_state: IntGaugeVec::new(
                Opts::new(
                    "aigronova_gateway_circuit_state",
                    "Circuit state by upstream: 0 closed, 1 half-open, 2 open",
                ),
                &["upstream"],
            )
            .expect("valid metric"),
            upstream_retries: IntCounterVec::new(
                Opts::new("aigronova_gateway_upstream_retries_total", "Retries of idempotent calls by upstream"),
                &["upstream", "outcome"],
            )
            .expect("valid metric"),
            load_shed: IntCounter::new(
                "aigronova_gateway_load_shed_total",
                "Requests refused because the gateway had too many in flight or held too many request bodies",
            )
            .expect("valid metric"),
            tenant_requests_in_flight: IntGauge::new(
                "aigronova_gateway_tenant_requests_in_flight",
                "Tenants' requests in flight past authentication",
            )
            .expect("valid metric"),
            inflated_body_bytes: IntCounterVec::new(
                Opts::new(
                    "aigronova_gateway_request_body_inflated_bytes_total",
                    "Bytes produced by decoding compressed request bodies, by outcome",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
        };
        let registry = prometheus::default_registry();
        for collector in [
            Box::new(metrics.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.upstream_calls.clone()),
            Box::new(metrics.upstream_duration.clone()),
            Box::new(metrics.rate_limited.clone()),
            Box::new(metrics.rate_limit_backend_errors.clone()),
            Box::new(metrics.circuit_state.clone()),
            Box::new(metrics.upstream_retries.clone()),
            Box::new(metrics.load_shed.clone()),
            Box::new(metrics.tenant_requests_in_flight.clone()),
            Box::new(metrics.inflated_body_bytes.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "gateway metric not registered");
            }
        }
        // Every reason's series from the start, at 0, so that an alert on its increase sees the
        // first refusal rather than a series appearing.
        for reason in RATE_LIMIT_REASONS {
            metrics.rate_limited.with_label_values(&[reason]);
        }
        metrics
    })
}

/// The reasons `aigronova_gateway_rate_limited_total` counts refusals by.
pub(crate) const RATE_LIMIT_REASONS: [&str; 4] = ["tenant", "key", "quota", "concurrency"];

/// `GET /metrics` in the Prometheus text format.
/// The Prometheus text of every metric; for a tenant's scraper (`tenant`), without the series
/// labelled with another tenant (the drift gauge names each tenant's models), which are the
/// operators' only.
pub(crate) async fn render(tenant: Option<&str>) -> Response {
    metrics();
    let mut families = prometheus::gather();
    if let Some(tenant) = tenant {
        let own = |metric: &prometheus::proto::Metric| {
            metric.get_label().iter().all(|label| label.name() != "tenant" || label.value() == tenant)
        };
        for family in &mut families {
            family.mut_metric().retain(own);
        }
        families.retain(|family| !family.get_metric().is_empty());
    }
    let mut body = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&families, &mut body) {
        tracing::error!(%error, "metrics do not encode");
    }
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
