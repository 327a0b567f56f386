//! One trace spans the client, the gateway and the service: exported over OTLP to an in-process
//! collector, the spans share the client's trace id and chain parent to child, and the gateway's
//! span names the route, not the path, with the status it answered (a 5xx an error).

use std::sync::{Arc, Mutex};

use aigronova_e2e::{Backend, spawn_app};
use aigronova_platform::config::TelemetryConfig;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tokio_stream::wrappers::TcpListenerStream;

/// An OTLP/gRPC trace collector that keeps what it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn start_collector() -> (Collector, String) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder().add_service(service).serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (collector, address)
}

fn find<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|span| span.name == name).unwrap_or_else(|| {
        let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
        panic!("no span named {name:?} among {names:?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_span_and_the_service_span_share_the_clients_trace() {
    let (collector, endpoint) = start_collector().await;
    let telemetry = aigronova_platform::telemetry::init(
        &TelemetryConfig { otlp_endpoint: Some(endpoint), ..TelemetryConfig::default() },
        "aigronova-test",
    )
    .unwrap();
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span_id = "00f067aa0ba902b7";
    let response = app
        .client
        .get(app.url(&format!("/v1/health/patients/{patient}")))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace_id}-{client_span_id}-01"))
        .header("tracestate", "vendor=value")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let traceresponse = response.headers()["traceresponse"].to_str().unwrap().to_owned();
    // The service's span ends once its answer is sent, which may be after the client has it.
    let rpc = "/aigronova.health.v1.HealthQuantum/GetPatient";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let spans_all = loop {
        telemetry.flush().unwrap();
        let spans = collector.spans.lock().unwrap().clone();
        let ended = |kind: SpanKind| spans.iter().any(|span| span.name == rpc && span.kind == kind as i32);
        if (ended(SpanKind::Server) && ended(SpanKind::Client)) || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let in_trace: Vec<Span> = spans_all.iter().filter(|span| hex(&span.trace_id) == trace_id).cloned().collect();
    // Named by the route's template, never by the path, which holds what was typed into the URL.
    let gateway = find(&in_trace, "GET /v1/health/patients/{id}");
    assert_eq!(attribute(gateway, "http.route"), Some("/v1/health/patients/{id}"));
    assert_eq!(number(gateway, "http.response.status_code"), Some(200));
    assert_eq!(gateway.status.as_ref().map_or(0, |status| status.code), 0, "a success leaves the status unset");
    assert_eq!(attribute(gateway, "url.path"), None);
    assert!(!format!("{:?}", gateway.attributes).contains(&patient), "the path is in {:?}", gateway.attributes);
    let of_kind = |kind: SpanKind| {
        in_trace
            .iter()
            .find(|span| span.name == rpc && span.kind == kind as i32)
            .unwrap_or_else(|| panic!("no {kind:?} span for {rpc}"))
    };
    let client = of_kind(SpanKind::Client);
    let service = of_kind(SpanKind::Server);

    assert_eq!(hex(&gateway.parent_span_id), client_span_id, "the gateway continues the client's span");
    assert_eq!(client.parent_span_id, gateway.span_id, "the gateway's gRPC call is a child of its request span");
    assert_eq!(service.parent_span_id, client.span_id, "the service span is a child of the gateway's call");
    assert_eq!(gateway.trace_state, "vendor=value");
    // The client is told the trace and the gateway's span (W3C Trace Context Level 2).
    assert_eq!(traceresponse, format!("00-{trace_id}-{}-01", hex(&gateway.span_id)));

    // A request without `traceparent` starts a trace, and the service joins it.
    let started = find(&spans_all, "POST /v1/health/patients");
    assert!(started.parent_span_id.is_empty(), "a new trace has a root span");
    let created = spans_all
        .iter()
        .find(|span| span.name.ends_with("/CreatePatient") && span.kind == SpanKind::Server as i32)
        .expect("the service span of CreatePatient");
    assert_eq!(created.trace_id, started.trace_id);
    app.stop().await;

    // A 5xx is an error of the gateway's span and of its call's; a 4xx is the caller's, its span
    // no error.
    let gone = app_with_an_upstream_that_is_gone().await;
    let (_, key) = gone.tenant_with_key().await;
    assert_eq!(gone.get("/v1/health/patients/p-1", &key).await.status(), 503);
    assert_eq!(gone.get("/v1/health/patients", "agk_nope").await.status(), 401);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let spans = loop {
        telemetry.flush().unwrap();
        let spans = collector.spans.lock().unwrap().clone();
        let unavailable = spans.iter().any(|span| number(span, "http.response.status_code") == Some(503));
        if unavailable || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let failed = spans.iter().find(|span| number(span, "http.response.status_code") == Some(503)).expect("a 503 span");
    assert_eq!(failed.name, "GET /v1/health/patients/{id}");
    assert_eq!(failed.status.as_ref().map(|status| status.code), Some(StatusCode::Error as i32), "a 5xx is an error");
    let call = spans
        .iter()
        .find(|span| span.parent_span_id == failed.span_id && span.kind == SpanKind::Client as i32)
        .expect("the failed call's span");
    assert_eq!(call.status.as_ref().map(|status| status.code), Some(StatusCode::Error as i32));
    let refused = spans.iter().find(|span| number(span, "http.response.status_code") == Some(401)).expect("a 401 span");
    assert_eq!(refused.status.as_ref().map_or(0, |status| status.code), 0, "a 4xx is no server error");
    gone.stop().await;
}

/// A gateway whose healthquantum upstream listens nowhere.
async fn app_with_an_upstream_that_is_gone() -> aigronova_e2e::TestApp {
    let nowhere = format!("http://127.0.0.1:{}", aigronova_e2e::port_to_start_later());
    aigronova_e2e::spawn_gateway(&nowhere, |_| {}).await
}

/// A span's integer attribute.
fn number(span: &Span, key: &str) -> Option<i64> {
    let value = span.attributes.iter().find(|attribute| attribute.key == key)?.value.as_ref()?.value.as_ref()?;
    match value {
        any_value::Value::IntValue(number) => Some(*number),
        _ => None,
    }
}

/// A span's string attribute.
fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    let value = span.attributes.iter().find(|attribute| attribute.key == key)?.value.as_ref()?.value.as_ref()?;
    match value {
        any_value::Value::StringValue(text) => Some(text.as_str()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
