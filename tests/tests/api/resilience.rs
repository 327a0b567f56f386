//! Resilience at the gateway: compressed bodies and bombs, deadlines, retries, the circuit
//! breaker and load shedding. Upstream failures come from a stand-in healthquantum that speaks
//! its real gRPC API and does what each test scripts.

use std::{
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aigronova_e2e::{Backend, TestApp, assert_problem, spawn_app_with, spawn_gateway};
use aigronova_proto::aigronova::health::v1::{
    self as proto,
    health_quantum_server::{HealthQuantum, HealthQuantumServer},
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response,
    health_server::{Health, HealthServer},
};

const MIB: usize = 1024 * 1024;

/// What the stand-in does with each call.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Answer,
    /// Fails this many calls with `Unavailable`, then answers.
    UnavailableFor(usize),
    /// Never answers.
    Hang,
    /// Says it has the call, then answers once the test releases it.
    AnswerWhenReleased,
}

struct Script {
    behaviour: Mutex<Behaviour>,
    calls: AtomicUsize,
    /// The `grpc-timeout` of each call, as the gateway sent it.
    timeouts: Mutex<Vec<Option<String>>>,
    arrived: Notify,
    release: Notify,
    /// Health checks answered.
    health_checks: AtomicUsize,
}

/// A stand-in for healthquantum whose answers the test scripts.
#[derive(Clone)]
struct StandIn(Arc<Script>);

impl StandIn {
    /// Serves on a free port; returns the stand-in and its URL.
    async fn start(behaviour: Behaviour) -> (Self, String) {
        let stand_in = Self(Arc::new(Script {
            behaviour: Mutex::new(behaviour),
            calls: AtomicUsize::new(0),
            timeouts: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            release: Notify::new(),
            health_checks: AtomicUsize::new(0),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(stand_in.serve(listener, std::future::pending()));
        (stand_in, url)
    }

    /// Serves on `listener` until `stop` completes, then closes its connections.
    fn serve(
        &self,
        listener: tokio::net::TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let server = tonic::transport::Server::builder()
            .add_service(HealthQuantumServer::new(self.clone()))
            .add_service(HealthServer::new(self.clone()))
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop);
        async move { server.await.expect("the stand-in serves") }
    }

    fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }

    fn behave(&self, behaviour: Behaviour) {
        *self.0.behaviour.lock().unwrap() = behaviour;
    }

    fn timeouts(&self) -> Vec<Option<String>> {
        self.0.timeouts.lock().unwrap().clone()
    }

    async fn respond<T>(&self, request: &Request<T>) -> Result<Response<proto::Patient>, Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = request.metadata().get("grpc-timeout").and_then(|value| value.to_str().ok()).map(str::to_owned);
        self.0.timeouts.lock().unwrap().push(timeout);
        let behaviour = {
            let mut behaviour = self.0.behaviour.lock().unwrap();
            let now = *behaviour;
            if let Behaviour::UnavailableFor(n) = now {
                *behaviour = if n > 1 { Behaviour::UnavailableFor(n - 1) } else { Behaviour::Answer };
            }
            now
        };
        match behaviour {
            Behaviour::Answer => {}
            Behaviour::UnavailableFor(_) => return Err(Status::unavailable("the stand-in is down")),
            Behaviour::Hang => std::future::pending::<()>().await,
            Behaviour::AnswerWhenReleased => {
                self.0.arrived.notify_one();
                self.0.release.notified().await;
            }
        }
        Ok(Response::new(proto::Patient {
            id: "p-1".into(),
            name: "Maria Silva".into(),
            cpf: "52998224725".into(),
            birth_date: "1980-02-29".into(),
            ..proto::Patient::default()
        }))
    }
}

/// Answers SERVING, counting the checks.
#[tonic::async_trait]
impl Health for StandIn {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        self.0.health_checks.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(HealthCheckResponse { status: health_check_response::ServingStatus::Serving.into() }))
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not watched"))
    }
}

#[tonic::async_trait]
impl HealthQuantum for StandIn {
    async fn create_patient(
        &self,
        request: Request<proto::CreatePatientRequest>,
    ) -> Result<Response<proto::Patient>, Status> {
        self.respond(&request).await
    }

    async fn get_patient(
        &self,
        request: Request<proto::GetPatientRequest>,
    ) -> Result<Response<proto::Patient>, Status> {
        self.respond(&request).await
    }

    async fn assess_risk(
        &self,
        _request: Request<proto::AssessRiskRequest>,
    ) -> Result<Response<proto::Assessment>, Status> {
        Err(Status::unimplemented("the stand-in does not score"))
    }

    async fn list_models(
        &self,
        _request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        Err(Status::unimplemented("the stand-in has no models"))
    }

    async fn list_assessments(
        &self,
        _request: Request<proto::ListAssessmentsRequest>,
    ) -> Result<Response<proto::ListAssessmentsResponse>, Status> {
        Err(Status::unimplemented("the stand-in has no assessments"))
    }

    async fn get_assessment(
        &self,
        _request: Request<proto::GetAssessmentRequest>,
    ) -> Result<Response<proto::Assessment>, Status> {
        Err(Status::unimplemented("the stand-in has no assessments"))
    }

    async fn get_assessment_report(
        &self,
        _request: Request<proto::GetAssessmentReportRequest>,
    ) -> Result<Response<aigronova_proto::google::api::HttpBody>, Status> {
        Err(Status::unimplemented("the stand-in has no reports"))
    }

    async fn upload_image(
        &self,
        _request: Request<proto::UploadImageRequest>,
    ) -> Result<Response<proto::Image>, Status> {
        Err(Status::unimplemented("the stand-in has no images"))
    }

    async fn list_images(
        &self,
        _request: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        Err(Status::unimplemented("the stand-in has no images"))
    }

    async fn get_image(
        &self,
        _request: Request<proto::GetImageRequest>,
    ) -> Result<Response<aigronova_proto::google::api::HttpBody>, Status> {
        Err(Status::unimplemented("the stand-in has no images"))
    }

    async fn get_image_thumbnail(
        &self,
        _request: Request<proto::GetImageRequest>,
    ) -> Result<Response<aigronova_proto::google::api::HttpBody>, Status> {
        Err(Status::unimplemented("the stand-in has no images"))
    }

    async fn delete_image(
        &self,
        _request: Request<proto::GetImageRequest>,
    ) -> Result<Response<proto::DeleteImageResponse>, Status> {
        Err(Status::unimplemented("the stand-in has no images"))
    }

    async fn list_patients(
        &self,
        _request: Request<proto::ListPatientsRequest>,
    ) -> Result<Response<proto::ListPatientsResponse>, Status> {
        Err(Status::unimplemented("the stand-in does not list"))
    }

    async fn search_patients(
        &self,
        _request: Request<proto::ListPatientsRequest>,
    ) -> Result<Response<proto::ListPatientsResponse>, Status> {
        Err(Status::unimplemented("the stand-in does not list"))
    }

    async fn update_patient(
        &self,
        request: Request<proto::UpdatePatientRequest>,
    ) -> Result<Response<proto::Patient>, Status> {
        self.respond(&request).await
    }

    async fn delete_patient(
        &self,
        _request: Request<proto::DeletePatientRequest>,
    ) -> Result<Response<proto::DeletePatientResponse>, Status> {
        Err(Status::unimplemented("the stand-in does not delete"))
    }
}

fn patient_json(name: &str) -> Vec<u8> {
    json!({"name": name, "cpf": "529.982.247-25", "birthDate": "1980-02-29"}).to_string().into_bytes()
}

fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        "deflate" => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams { quality: 5, ..Default::default() };
            brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
            out
        }
        other => panic!("no encoder for {other}"),
    }
}

async fn post_encoded(app: &TestApp, path: &str, key: &str, coding: &str, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("content-encoding", coding)
        .body(body)
        .send()
        .await
        .expect("request sent")
}

/// A counter or gauge from `/metrics`; 0 when the series is absent.
pub(crate) async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics", &app.admin_key).await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

const INFLATED_TOO_LARGE: &str = r#"aigronova_gateway_request_body_inflated_bytes_total{outcome="too_large"}"#;

#[tokio::test]
async fn a_10_mb_compressed_bomb_under_a_1_mb_limit_is_refused_with_413_after_inflating_at_most_the_limit() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.gateway.plans.starter.max_body_bytes = MIB;
        config.gateway.max_body_bytes = MIB;
    })
    .await;
    let (tenant, key) = app.tenant_with_key().await;
    // Valid JSON that inflates to 10 MiB: a patient whose name is ten million zeros.
    let inflated = patient_json(&"0".repeat(10 * MIB));
    for coding in ["gzip", "deflate", "br"] {
        let bomb = encode(coding, &inflated);
        assert!(bomb.len() < 64 * 1024, "{coding}: the bomb is {} bytes", bomb.len());
        for path in ["/v1/health/patients".to_owned(), format!("/v1/admin/tenants/{tenant}/api-keys")] {
            let key = if path.starts_with("/v1/admin") { app.admin_key.clone() } else { key.clone() };
            let before = metric(&app, INFLATED_TOO_LARGE).await;
            let response = post_encoded(&app, &path, &key, coding, bomb.clone()).await;
            assert_eq!(response.headers()["connection"], "close", "{coding} {path}: the body was given up on");
            let problem = assert_problem(response, 413).await;
            assert!(problem["detail"].as_str().unwrap().contains("1048576"), "{problem}");
            let decoded = metric(&app, INFLATED_TOO_LARGE).await - before;
            // The decoders hand on 32 KiB at a time: the limit plus one buffer, not 10 MiB.
            assert!(
                (MIB as f64..=(MIB + 64 * 1024) as f64).contains(&decoded),
                "{coding} {path}: inflated {decoded} bytes"
            );
        }
    }
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn gzip_deflate_and_brotli_bodies_under_the_limit_create_patients() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    for coding in ["gzip", "deflate", "br", "gzip, br", "identity"] {
        let (_, key) = app.tenant_with_key().await;
        let body = match coding {
            "gzip, br" => encode("br", &encode("gzip", &patient_json("Maria Stacked"))),
            "identity" => patient_json("Maria Stacked"),
            single => encode(single, &patient_json("Maria Stacked")),
        };
        let response = post_encoded(&app, "/v1/health/patients", &key, coding, body).await;
        assert_eq!(response.status(), 200, "{coding}");
        let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let patient: Value = app.get(&format!("/v1/health/patients/{id}"), &key).await.json().await.unwrap();
        assert_eq!(patient["name"], "Maria Stacked", "{coding}");
    }
    assert_eq!(app.count_health_rows("patients").await, 5);
    app.stop().await;
}

#[tokio::test]
async fn unknown_codings_are_415_and_bodies_that_do_not_decode_400() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    let mut truncated = encode("gzip", &patient_json("Maria"));
    truncated.truncate(truncated.len() / 2);
    let cases = [
        ("compress", patient_json("Maria"), 415),
        ("zstd", patient_json("Maria"), 415),
        ("gzip, gzip, gzip", patient_json("Maria"), 415),
        ("gzip", patient_json("Maria"), 400),
        ("gzip", truncated, 400),
        ("br", encode("gzip", &patient_json("Maria")), 400),
    ];
    for (coding, body, status) in cases {
        let response = post_encoded(&app, "/v1/health/patients", &key, coding, body.clone()).await;
        // A coding not decoded here is refused before the rate limits are asked.
        assert_eq!(response.headers().get("ratelimit").is_none(), status == 415, "{coding}: {:?}", response.headers());
        // A 415 names the codings that would do (RFC 9110 §12.5.3).
        let accepted = response.headers().get("accept-encoding").map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(accepted.as_deref(), (status == 415).then_some("gzip, deflate, br"), "{coding}");
        assert_problem(response, status).await;
        let response = post_encoded(&app, "/v1/admin/tenants", &app.admin_key, coding, body).await;
        assert_problem(response, status).await;
    }
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

/// A gRPC timeout as the gateway sent it, in milliseconds.
fn millis(timeout: &str) -> f64 {
    let (digits, unit) = timeout.split_at(timeout.len() - 1);
    let amount: f64 = digits.parse().unwrap();
    amount
        * match unit {
            "S" => 1e3,
            "m" => 1.0,
            "u" => 1e-3,
            "n" => 1e-6,
            other => panic!("unexpected unit {other}"),
        }
}

#[tokio::test]
async fn a_grpc_timeout_shorter_than_a_slow_upstreams_reply_is_a_504_and_reaches_the_upstream() {
    let (stand_in, url) = StandIn::start(Behaviour::Hang).await;
    let app = spawn_gateway(&url, |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    let response = app
        .client
        .get(app.url("/v1/health/patients/p-1"))
        .bearer_auth(&key)
        .header("grpc-timeout", "200m")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 504).await;
    assert!(problem["detail"].as_str().unwrap().contains("deadline"), "{problem}");
    assert_eq!(stand_in.calls(), 1, "a deadline is not retried");
    let sent = stand_in.timeouts()[0].clone().expect("the gateway passed the deadline on");
    assert!(millis(&sent) <= 200.0, "the upstream was given {sent}");
    app.stop().await;
}

#[tokio::test]
async fn an_upstreams_own_timeout_bounds_its_calls_whatever_the_client_asks() {
    let (stand_in, url) = StandIn::start(Behaviour::Hang).await;
    let app = spawn_gateway(&url, |config| {
        config.gateway.upstream_timeouts.insert("healthquantum".into(), 0.3);
    })
    .await;
    let (_, key) = app.tenant_with_key().await;
    assert_problem(app.get("/v1/health/patients/p-1", &key).await, 504).await;
    let response = app
        .client
        .get(app.url("/v1/health/patients/p-1"))
        .bearer_auth(&key)
        .header("grpc-timeout", "10S")
        .send()
        .await
        .unwrap();
    assert_problem(response, 504).await;
    for sent in stand_in.timeouts() {
        let sent = sent.expect("the gateway passed the deadline on");
        assert!(millis(&sent) <= 300.0, "the upstream was given {sent}");
    }
    app.stop().await;
}

#[tokio::test]
async fn malformed_grpc_timeouts_are_400_and_never_reach_the_upstream() {
    let (stand_in, url) = StandIn::start(Behaviour::Answer).await;
    let app = spawn_gateway(&url, |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    for value in ["soon", "250", "250ms", "123456789S", "-1S", "1.5S", "5s"] {
        let response = app
            .client
            .get(app.url("/v1/health/patients/p-1"))
            .bearer_auth(&key)
            .header("grpc-timeout", value)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 400).await;
        assert!(problem["detail"].as_str().unwrap().contains("grpc-timeout"), "{value}: {problem}");
        assert_eq!(problem["field"], "grpc-timeout", "{value}: {problem}");
    }
    // Two deadlines are none: which one would hold depends on who reads them.
    let twice = app.client.get(app.url("/v1/health/patients/p-1")).bearer_auth(&key);
    let response = twice.header("grpc-timeout", "1S").header("grpc-timeout", "1n").send().await.unwrap();
    let problem = assert_problem(response, 400).await;
    assert_eq!(problem["field"], "grpc-timeout", "{problem}");
    assert_eq!(stand_in.calls(), 0);
    app.stop().await;
}

#[tokio::test]
async fn reads_are_retried_when_the_upstream_is_unavailable_and_writes_are_not() {
    let (stand_in, url) = StandIn::start(Behaviour::UnavailableFor(1)).await;
    let app = spawn_gateway(&url, |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    let response = app.get("/v1/health/patients/p-1", &key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(stand_in.calls(), 2, "one failure, one retry");

    stand_in.behave(Behaviour::UnavailableFor(1));
    let response = app.client.post(app.url("/v1/health/patients")).bearer_auth(&key).body(patient_json("Maria"));
    let response = response.header("content-type", "application/json").send().await.unwrap();
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    assert_problem(response, 503).await;
    assert_eq!(stand_in.calls(), 3, "the write was sent once");
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_that_restarts_is_reached_again_on_new_connections() {
    let (stand_in, _) = StandIn::start(Behaviour::Answer).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(stand_in.serve(listener, async move { stopped.await.unwrap_or_default() }));
    let app = spawn_gateway(&format!("http://{address}"), |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    // Enough calls to open every connection the gateway keeps to the upstream.
    for _ in 0..4 {
        assert_eq!(app.get("/v1/health/patients/p-1", &key).await.status(), 200);
    }

    stop.send(()).unwrap();
    server.await.unwrap();
    let response = app.get("/v1/health/patients/p-1", &key).await;
    let problem = assert_problem(response, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("unavailable"), "{problem}");

    let listener = tokio::net::TcpListener::bind(address).await.expect("the same port again");
    tokio::spawn(stand_in.serve(listener, std::future::pending()));
    for _ in 0..4 {
        assert_eq!(app.get("/v1/health/patients/p-1", &key).await.status(), 200, "reconnected");
    }
    assert_eq!(stand_in.calls(), 8);
    app.stop().await;
}

#[tokio::test]
async fn the_circuit_opens_after_consecutive_failures_fails_fast_and_closes_after_a_good_probe() {
    let (stand_in, url) = StandIn::start(Behaviour::UnavailableFor(usize::MAX)).await;
    let app = spawn_gateway(&url, |config| {
        config.gateway.circuit_breaker.failure_threshold = 3;
        config.gateway.circuit_breaker.cool_down_ms = 1_000;
    })
    .await;
    let (_, key) = app.tenant_with_key().await;
    let state = r#"aigronova_gateway_circuit_state{upstream="healthquantum"}"#;
    // Writes, so that retries do not add calls.
    let create = || async {
        app.client
            .post(app.url("/v1/health/patients"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(patient_json("Maria"))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..3 {
        assert_problem(create().await, 503).await;
    }
    assert_eq!(stand_in.calls(), 3);
    assert_eq!(metric(&app, state).await, 2.0, "open");

    let response = create().await;
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    let problem = assert_problem(response, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("paused"), "{problem}");
    assert_eq!(stand_in.calls(), 3, "failed fast, without calling the upstream");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_problem(create().await, 503).await;
    assert_eq!(stand_in.calls(), 4, "the probe reached the upstream");
    assert_problem(create().await, 503).await;
    assert_eq!(stand_in.calls(), 4, "the failed probe opened the circuit again");

    stand_in.behave(Behaviour::Answer);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(create().await.status(), 200, "the probe");
    assert_eq!(metric(&app, state).await, 0.0, "closed");
    assert_eq!(create().await.status(), 200);
    assert_eq!(stand_in.calls(), 6);
    app.stop().await;
}

#[tokio::test]
async fn with_one_request_allowed_at_a_time_a_second_one_is_shed_with_503_and_counted_under_its_route() {
    let (stand_in, url) = StandIn::start(Behaviour::AnswerWhenReleased).await;
    let app = spawn_gateway(&url, |config| {
        config.gateway.max_concurrent_requests = 1;
        config.gateway.cors.allowed_origins = vec!["https://app.acme.com.br".into()];
    })
    .await;
    let (_, key) = app.tenant_with_key().await;
    let first = tokio::spawn({
        let request = app.client.get(app.url("/v1/health/patients/p-1")).bearer_auth(&key);
        async move { request.send().await.unwrap().status() }
    });
    stand_in.0.arrived.notified().await;

    let shed = r#"aigronova_gateway_requests_total{method="GET",route="/v1/health/patients/{id}",status="503"}"#;
    let shed_unmatched = r#"aigronova_gateway_requests_total{method="GET",route="unmatched",status="503"}"#;
    let (before, before_unmatched) = (metric(&app, shed).await, metric(&app, shed_unmatched).await);
    let response = app.get("/v1/health/patients/p-1", &key).await;
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    assert_problem(response, 503).await;
    // Counted under the route it was for, like any other answer of that route.
    assert_eq!(metric(&app, shed).await - before, 1.0);
    assert_eq!(metric(&app, shed_unmatched).await, before_unmatched);
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200, "the probes are never shed");
    // A page's script can read the refusal and when to retry.
    let origin = "https://app.acme.com.br";
    let response =
        app.client.get(app.url("/v1/health/patients/p-1")).bearer_auth(&key).header("origin", origin).send().await;
    let response = response.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], origin);
    assert!(response.headers()["access-control-expose-headers"].to_str().unwrap().contains("retry-after"));
    assert_problem(response, 503).await;
    // A preflight, which calls no service, is answered whatever the load.
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/health/patients/p-1"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], origin);
    assert_eq!(stand_in.calls(), 1);

    stand_in.behave(Behaviour::Answer);
    stand_in.0.release.notify_one();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(app.get("/v1/health/patients/p-1", &key).await.status(), 200, "capacity is back");
    app.stop().await;
}

#[tokio::test]
async fn a_call_whose_client_goes_away_is_finished_and_counted() {
    use tokio::io::AsyncWriteExt;
    let (stand_in, url) = StandIn::start(Behaviour::AnswerWhenReleased).await;
    let app = spawn_gateway(&url, |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    let answered = r#"aigronova_gateway_requests_total{method="GET",route="/v1/health/patients/{id}",status="200"}"#;
    let before = metric(&app, answered).await;
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head =
        format!("GET /v1/health/patients/p-1 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // The client goes away while the service has the call.
    stand_in.0.arrived.notified().await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stand_in.0.release.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(&app, answered).await < before + 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "the call the client left was never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stand_in.calls(), 1);
    app.stop().await;
}

/// How a client leaves a call the service has.
enum Leaving {
    /// An HTTP/1.1 client closes its connection.
    Closes,
    /// An HTTP/2 client cancels its stream (RST_STREAM) and goes away.
    Cancels,
}

/// A client leaves a call the service has; the gateway, stopped, waits for the call's answer.
async fn shutdown_waits_for_a_call_whose_client_left(leaving: Leaving) {
    use tokio::io::AsyncWriteExt;
    let (stand_in, url) = StandIn::start(Behaviour::AnswerWhenReleased).await;
    let app = spawn_gateway(&url, |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    match leaving {
        Leaving::Closes => {
            let address = app.address.trim_start_matches("http://").to_owned();
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let head = format!(
                "GET /v1/health/patients/p-1 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stand_in.0.arrived.notified().await;
            drop(stream);
        }
        Leaving::Cancels => {
            let http2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
            let call = tokio::spawn(http2.get(app.url("/v1/health/patients/p-1")).bearer_auth(&key).send());
            stand_in.0.arrived.notified().await;
            call.abort();
            drop(http2);
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No client is left, but the call is: the gateway stops once it is answered.
    let stopped = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopped.is_finished(), "the gateway stopped with a call in flight");
    stand_in.0.release.notify_one();
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the gateway stops once the call is answered")
        .unwrap();
    assert_eq!(stand_in.calls(), 1);
}

#[tokio::test]
async fn shutdown_waits_for_a_call_whose_http1_client_closed_its_connection() {
    shutdown_waits_for_a_call_whose_client_left(Leaving::Closes).await;
}

#[tokio::test]
async fn shutdown_waits_for_a_call_whose_http2_client_cancelled_it() {
    shutdown_waits_for_a_call_whose_client_left(Leaving::Cancels).await;
}

#[tokio::test]
async fn readiness_is_found_once_for_the_probes_that_come_together_and_kept_for_a_second() {
    let (stand_in, url) = StandIn::start(Behaviour::Answer).await;
    let app = spawn_gateway(&url, |_| {}).await;
    let probe = || async { app.client.get(app.url("/readyz")).send().await.unwrap().json::<Value>().await.unwrap() };
    let answers = futures_util::future::join_all((0..20).map(|_| probe())).await;
    for answer in &answers {
        assert_eq!(answer["upstreams"]["healthquantum"], true, "{answer}");
    }
    assert_eq!(stand_in.0.health_checks.load(Ordering::SeqCst), 1, "one check for twenty probes");
    // Once the readiness found is over a second old, the next probe checks again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(probe().await["ready"], true);
    assert_eq!(stand_in.0.health_checks.load(Ordering::SeqCst), 2);
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_503_that_names_it_and_not_the_transport_error() {
    let nowhere = format!("http://127.0.0.1:{}", aigronova_e2e::port_to_start_later());
    let app = spawn_gateway(&nowhere, |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    let read = app.get("/v1/health/patients/p-1", &key).await;
    let write = app.client.post(app.url("/v1/health/patients")).bearer_auth(&key).body(patient_json("Maria"));
    let write = write.header("content-type", "application/json").send().await.unwrap();
    for response in [read, write] {
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        let problem = assert_problem(response, 503).await;
        // The cause (a refused connection, the address) is in the gateway's log only.
        assert_eq!(problem["detail"], "healthquantum is unavailable", "{problem}");
    }
    app.stop().await;
}

/// An upstream that takes each connection and what is sent on it, then closes it unanswered, as
/// a service killed in the middle of a call does. Returns its URL.
async fn upstream_that_drops_its_calls() -> String {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Everything the gateway sends (the preface, its settings, the call), until it pauses.
                let mut buffer = vec![0; 64 * 1024];
                while let Ok(Ok(read)) =
                    tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buffer)).await
                {
                    if read == 0 {
                        break;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_call_whose_connection_breaks_once_sent_is_a_502_that_may_have_taken_effect_and_keeps_its_unit() {
    let url = upstream_that_drops_its_calls().await;
    let app = spawn_gateway(&url, |_| {}).await;
    let (_, key) = app.tenant_with_key().await;
    let features = json!({"model": "breast-cancer", "features": {"mean radius": 14.0}});
    let mut left = Vec::new();
    for _ in 0..2 {
        let response =
            app.client.post(app.url("/v1/health/patients/p-1/assessments")).bearer_auth(&key).json(&features);
        let response = response.send().await.unwrap();
        // Not an invitation to send it again: the service may have run it.
        assert!(response.headers().get("retry-after").is_none(), "{:?}", response.headers());
        let limits: Vec<String> =
            response.headers().get_all("ratelimit").iter().map(|value| value.to_str().unwrap().to_owned()).collect();
        let limits = limits.join(", ");
        let remaining = limits.split(r#""inference";r="#).nth(1).and_then(|rest| rest.split(';').next());
        left.push(remaining.expect(&limits).parse::<u64>().unwrap());
        let problem = assert_problem(response, 502).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("healthquantum is unavailable: ") && detail.contains("may have taken effect"),
            "{problem}"
        );
    }
    assert_eq!(left[0], left[1] + 1, "each call kept its unit of quota");
    app.stop().await;
}

/// Opens a connection and sends the head of a patient's creation by `key` with a body of
/// `length` bytes, but none of the body.
async fn post_head(app: &TestApp, key: &str, length: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/health/patients HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

const IN_FLIGHT: &str = "aigronova_gateway_tenant_requests_in_flight";

/// Waits until the gateway counts at least `at_least` requests in flight of all tenants (the gauge
/// is the process's), failing with `what` after a few seconds.
async fn wait_for_in_flight(app: &TestApp, at_least: f64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(app, IN_FLIGHT).await < at_least {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stop waits for a request in flight for the shutdown grace, then closes its connection, rather
/// than be held by a client that stopped sending its body.
#[tokio::test]
async fn a_stop_closes_the_connections_still_busy_after_its_grace() {
    use tokio::io::AsyncReadExt;

    let (stand_in, url) = StandIn::start(Behaviour::Answer).await;
    let app = spawn_gateway(&url, |config| {
        config.gateway.shutdown_grace_secs = 1;
        config.gateway.request_body_timeout_secs = 60;
    })
    .await;
    let (_, key) = app.tenant_with_key().await;
    let idle = metric(&app, IN_FLIGHT).await;
    let mut stream = stalled_request(&app, &key).await;
    wait_for_in_flight(&app, idle + 1.0, "the stalled request never started").await;
    let asked = std::time::Instant::now();
    app.stop().await;
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(5), "the stop took {waited:?}");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is still open after the stop");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(stand_in.calls(), 0);
}

/// Opens a connection and sends a request of `key` whose body stops after its first byte.
async fn stalled_request(app: &TestApp, key: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = post_head(app, key, 100).await;
    stream.write_all(b"{").await.unwrap();
    stream
}

/// Sends `body` as a patient of `key` in `pieces`, `gap` apart, and returns the answer.
async fn trickle(app: &TestApp, key: &str, body: &[u8], pieces: usize, gap: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = post_head(app, key, body.len()).await;
    let (mut reader, mut writer) = stream.into_split();
    let send = async {
        for (index, piece) in body.chunks(body.len().div_ceil(pieces)).enumerate() {
            if index > 0 {
                tokio::time::sleep(gap).await;
            }
            // A refused body's connection is closed: the rest is not read.
            if writer.write_all(piece).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    // The answer is read as the body goes, so that one sent before the body's end is not lost.
    let mut answer = Vec::new();
    tokio::select! {
        _ = reader.read_to_end(&mut answer) => {}
        () = send => {}
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_and_no_tenant_holds_more_than_its_share_of_slots() {
    let (stand_in, url) = StandIn::start(Behaviour::Answer).await;
    let app = spawn_gateway(&url, |config| {
        config.gateway.max_concurrent_requests_per_tenant = 2;
        config.gateway.request_body_timeout_secs = 3;
    })
    .await;
    let (_, key) = app.tenant_with_key().await;
    let (_, other) = app.tenant_with_key().await;
    // The gauge is the process's: other gateways of this process (under `cargo test`) count too.
    let idle = metric(&app, IN_FLIGHT).await;
    let stalled = [stalled_request(&app, &key).await, stalled_request(&app, &key).await];

    // Once both are in flight, the tenant's next request is refused; another tenant's is not.
    wait_for_in_flight(&app, idle + 2.0, "the stalled requests never held the tenant's slots").await;
    // Refused before the rate limits are asked: it spends none of the tenant's rate.
    for _ in 0..3 {
        let refused = app.get("/v1/health/patients/p-1", &key).await;
        assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
        assert!(refused.headers().get("ratelimit").is_none(), "{:?}", refused.headers());
        let problem = assert_problem(refused, 429).await;
        assert!(problem["detail"].as_str().unwrap().contains("2 requests in flight"), "{problem}");
    }
    let response = app.get("/v1/health/patients/p-1", &other).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    // The stalled bodies are given up on with 408, which frees the tenant's slots.
    for mut stream in stalled {
        use tokio::io::AsyncReadExt;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answered within the body timeout")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{answer}");
        assert!(answer.contains("no part of the request body arrived for 3 s"), "{answer}");
    }
    assert_eq!(app.get("/v1/health/patients/p-1", &key).await.status(), 200, "the tenant's slots are back");
    assert_eq!(stand_in.calls(), 2, "only the reads answered reached the service");

    // A body that keeps arriving at a fair rate is read in full, past the idle timeout: 256 KiB in
    // four pieces 1.5 s apart, allowed 3 s and 4 s at 64 KiB/s. One that trickles, a byte a
    // second, is given up on once its 3 s and 1 s for its few bytes are over, though it never
    // stops for 3 s.
    let mut padded = patient_json("Maria");
    padded.resize(256 * 1024, b' ');
    assert!(trickle(&app, &key, &padded, 4, Duration::from_millis(1500)).await.starts_with("HTTP/1.1 200"));
    let answer = trickle(&app, &key, &patient_json("Maria"), 80, Duration::from_secs(1)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 4 s, at 64 KiB/s at least after its first 3 s"), "{answer}");
    assert_eq!(stand_in.calls(), 3, "the trickle reached no service");
    app.stop().await;
}

/// A gateway in front of `url` whose plans all take bodies of `max_body` bytes, holding at most
/// `buffered` bytes of bodies at once (a quarter of that a tenant), and the keys of five tenants.
async fn holding_bodies(url: &str, max_body: usize, buffered: usize) -> (TestApp, Vec<String>) {
    let app = spawn_gateway(url, |config| {
        let plans = &mut config.gateway.plans;
        for plan in [&mut plans.starter, &mut plans.professional, &mut plans.enterprise] {
            plan.max_body_bytes = max_body;
        }
        config.gateway.max_buffered_body_bytes = buffered;
        config.gateway.request_body_timeout_secs = 5;
    })
    .await;
    let mut tenants = Vec::new();
    for _ in 0..5 {
        tenants.push(app.tenant_with_key().await.1);
    }
    (app, tenants)
}

/// Creates a patient as `key` with a body padded to `size` bytes.
fn post_padded(
    app: &TestApp,
    key: &str,
    size: usize,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    let mut body = patient_json("Maria");
    body.resize(size, b' ');
    app.client
        .post(app.url("/v1/health/patients"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
}

#[tokio::test]
async fn request_bodies_held_in_memory_are_bounded_for_each_tenant_and_in_all() {
    let (stand_in, url) = StandIn::start(Behaviour::Answer).await;
    // 128 KiB in all, 32 KiB a tenant.
    let (app, tenants) = holding_bodies(&url, 32 * 1024, 128 * 1024).await;
    let post = |key: &str, size: usize| post_padded(&app, key, size);
    // Four tenants each hold 30 KiB with a body that stops after its first byte.
    let idle = metric(&app, IN_FLIGHT).await;
    let mut stalled = Vec::new();
    for key in &tenants[..4] {
        let mut stream = post_head(&app, key, 30 * 1024).await;
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"{").await.unwrap();
        stalled.push(stream);
    }
    // A request's room is reserved as it takes its tenant's slot.
    wait_for_in_flight(&app, idle + 4.0, "the stalled bodies never held their room").await;
    let refused = post(&tenants[4], 20 * 1024).await.unwrap();
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    let problem = assert_problem(refused, 503).await;
    assert_eq!(problem["detail"], "the gateway holds as many request bodies as it may; retry shortly");
    // A tenant holding 30 KiB has no room for 20 more of its own, and is told it is its share; a
    // body over the plan's limit is a 413 whatever room is left; a request without a body needs none.
    let problem = assert_problem(post(&tenants[0], 20 * 1024).await.unwrap(), 503).await;
    assert!(problem["detail"].as_str().unwrap().starts_with("the tenant's requests in flight hold"), "{problem}");
    assert_problem(post(&tenants[4], 33 * 1024).await.unwrap(), 413).await;
    assert_eq!(app.get("/v1/health/patients/p-1", &tenants[4]).await.status(), 200);

    for mut stream in stalled {
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"));
    }
    assert_eq!(post(&tenants[4], 20 * 1024).await.unwrap().status(), 200, "the room is back");
    assert_eq!(post(&tenants[0], 20 * 1024).await.unwrap().status(), 200, "the tenant's room is back");
    assert_eq!(stand_in.calls(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_body_of_unknown_length_holds_room_for_what_has_arrived() {
    use tokio::io::AsyncWriteExt;

    let (stand_in, url) = StandIn::start(Behaviour::Answer).await;
    // 1 MiB in all, 256 KiB a tenant: four bodies held at their plan's limit would fill it.
    let (app, tenants) = holding_bodies(&url, 256 * 1024, 1024 * 1024).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    // Four tenants each start a chunked body, one gzip-compressed, and stop after its first part.
    let idle = metric(&app, IN_FLIGHT).await;
    let mut stalled = Vec::new();
    for (i, key) in tenants[..4].iter().enumerate() {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let (coding, part) = match i {
            0 => ("Content-Encoding: gzip\r\n", encode("gzip", b"{\"name\": ")[..20].to_vec()),
            _ => ("", b"{\"name\": ".to_vec()),
        };
        let head = format!(
            "POST /v1/health/patients HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\n{coding}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
            part.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&part).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        stalled.push(stream);
    }
    wait_for_in_flight(&app, idle + 4.0, "the stalled bodies never reached the gateway").await;
    let post = |key: &str, size: usize| post_padded(&app, key, size);
    // Held at their plan's limit, the four would leave no room; held at what has arrived, they
    // leave room for another tenant's 200 KiB.
    assert_eq!(post(&tenants[4], 200 * 1024).await.unwrap().status(), 200);
    // What a stalled body holds still counts against its own tenant's quarter.
    let refused = post(&tenants[1], 200 * 1024).await.unwrap();
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    assert_problem(refused, 503).await;
    assert_eq!(post(&tenants[1], 150 * 1024).await.unwrap().status(), 200);

    for mut stream in stalled {
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"));
    }
    assert_eq!(post(&tenants[1], 200 * 1024).await.unwrap().status(), 200, "the tenant's room is back");
    assert_eq!(stand_in.calls(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_grown_bodys_room_is_trimmed_to_its_size_while_its_call_is_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (stand_in, url) = StandIn::start(Behaviour::AnswerWhenReleased).await;
    // 256 KiB a tenant.
    let (app, tenants) = holding_bodies(&url, 256 * 1024, 1024 * 1024).await;
    // 130 KiB sent chunked: its room grows ahead of it as it arrives, to the plan's 256 KiB.
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut body = patient_json("Maria");
    body.resize(130 * 1024, b' ');
    let head = format!(
        "POST /v1/health/patients HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        tenants[0],
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    stream.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    stand_in.0.arrived.notified().await;
    // Read whole, it holds its 130 KiB only: 120 KiB more of the same tenant fit while its call is out.
    let second = tokio::spawn(post_padded(&app, &tenants[0], 120 * 1024));
    tokio::select! {
        () = stand_in.0.arrived.notified() => {}
        refused = second => panic!("the second body did not reach the service: {:?}", refused.unwrap().map(|r| r.status())),
    }
    stand_in.behave(Behaviour::Answer);
    stand_in.0.release.notify_one();
    stand_in.0.release.notify_one();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(stand_in.calls(), 2);
    app.stop().await;
}

/// Under `aigronova up`, a call still in flight when the process is told to stop is answered: the
/// gateway drains its calls before the services it calls stop.
#[tokio::test]
async fn a_call_in_flight_when_the_platform_stops_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = aigronova_e2e::spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let body = json!({"name": "Maria", "cpf": "52998224725", "birthDate": "1980-02-29"}).to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut connection = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /v1/health/patients HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    connection.write_all(first).await.unwrap();
    // The rest of the body comes after the stop was asked for.
    let call = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        connection.write_all(rest).await.unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0; 4096];
        while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = connection.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the connection closed before an answer: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..read]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    let stop = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.stop().await;
    };
    let (answer, ()) = tokio::join!(call, stop);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
