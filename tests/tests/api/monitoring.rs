//! Inference monitoring through the gateway: healthquantum's summaries reach ai-governance, which
//! reports volumes, errors, latency and drift; inputs drawn like the training data keep PSI low,
//! shifted inputs raise it above 0.25 and set the alert, in the API and as a metric. Drift is
//! measured against each bin's training share from the manifest, so that features whose quantiles
//! repeat (a two-valued `sex`, `s4`) neither alert on training-like inputs nor miss a shift. A
//! report whose answer is lost is sent again under the same window ids and counted once.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aigronova_cli::AppConfig;
use aigronova_e2e::{Backend, TestApp, models_dir, spawn_app, spawn_app_with};
use aigronova_platform::{
    Shutdown, audit::RelayConfig, config::InferenceConfig, inference::ModelRegistry, monitoring::InferenceMonitor,
};
use aigronova_proto::aigronova::governance::v1::{
    self as proto,
    monitoring_client::MonitoringClient,
    monitoring_server::{Monitoring, MonitoringServer},
};
use serde_json::{Map, Value, json};
use tonic::{Request, Response, Status, transport::Channel};

const MONITORING: &str = "/v1/governance/monitoring/models/breast-cancer/versions/1";

fn features() -> Vec<Value> {
    features_of("breast-cancer")
}

fn features_of(model: &str) -> Vec<Value> {
    let path = models_dir().join(model).join("1/manifest.json");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("manifest.json")).unwrap();
    manifest["features"].as_array().unwrap().clone()
}

/// A row whose every feature sits in the middle of training bin `bin(feature index)`.
fn row(features: &[Value], bin: impl Fn(usize) -> usize) -> Value {
    let mut row = Map::new();
    for (index, feature) in features.iter().enumerate() {
        let edges: Vec<f64> = feature["bin_edges"].as_array().unwrap().iter().map(|e| e.as_f64().unwrap()).collect();
        let bin = bin(index).min(edges.len() - 2);
        row.insert(feature["name"].as_str().unwrap().to_owned(), json!((edges[bin] + edges[bin + 1]) / 2.0));
    }
    Value::Object(row)
}

fn count(status: &Value, field: &str) -> u64 {
    match &status[field] {
        Value::String(text) => text.parse().unwrap(),
        other => other.as_u64().unwrap_or(0),
    }
}

fn numbers(feature: &Value, field: &str) -> Vec<f64> {
    feature[field].as_array().unwrap().iter().map(|value| value.as_f64().unwrap()).collect()
}

async fn wait_for_calls(app: &TestApp, key: &str, calls: u64) -> Value {
    wait_for_calls_of(app, key, MONITORING, calls).await
}

async fn wait_for_calls_of(app: &TestApp, key: &str, path: &str, calls: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = app.get(path, key).await;
        // A model its service has not registered yet (it does so at start, in the background) is
        // not found for a moment.
        if response.status() == 404 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(response.status(), 200);
        let status: Value = response.json().await.unwrap();
        if count(&status, "inferenceCount") >= calls {
            assert_eq!(count(&status, "inferenceCount"), calls, "{status}");
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "ai-governance did not see {calls} calls: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assess(app: &TestApp, key: &str, patient: &str, features: Value) -> u16 {
    assess_with(app, key, patient, "breast-cancer", features).await
}

async fn assess_with(app: &TestApp, key: &str, patient: &str, model: &str, features: Value) -> u16 {
    let body = json!({"model": model, "features": features});
    app.post(&format!("/v1/health/patients/{patient}/assessments"), key, &body).await.status().as_u16()
}

/// A platform that reports monitoring every 200 ms and lets a Starter tenant call quickly, with
/// a clinic of that name: its id, a key that assesses and reads governance, and a patient.
async fn monitored_clinic(name: &str) -> (TestApp, String, String, String) {
    let app = spawn_app_with(Backend::Sqlite, |config: &mut AppConfig| {
        config.audit.monitoring_interval_ms = 200;
        config.gateway.plans.starter.requests_per_second = 1000.0;
        config.gateway.plans.starter.burst = 1000;
    })
    .await;
    let tenant = app.create_tenant(name).await;
    let key = app.create_key(&tenant, &["health:read", "health:write", "governance:read"]).await;
    let patient = app.create_patient(&key).await;
    (app, tenant, key, patient)
}

#[tokio::test]
async fn shifted_inputs_raise_psi_above_the_alert_and_training_like_inputs_do_not() {
    let (app, tenant, key, patient) = monitored_clinic("Clínica Monitorada").await;
    let features = features();

    // Ten calls in every training decile of every feature: the training distribution.
    for call in 0..100 {
        assert_eq!(assess(&app, &key, &patient, row(&features, |index| (call + index) % 10)).await, 200);
    }
    let mut invalid = row(&features, |_| 0);
    invalid["mean radius"] = json!(-1.0);
    assert_eq!(assess(&app, &key, &patient, invalid).await, 400);
    // An assessment of a patient the tenant does not have is no use of the model.
    let unknown = "00000000-0000-7000-8000-000000000000";
    assert_eq!(assess(&app, &key, unknown, row(&features, |_| 9)).await, 404);
    let calm = wait_for_calls(&app, &key, 101).await;
    assert_eq!(count(&calm, "errorCount"), 1, "{calm}");
    assert!((calm["errorRate"].as_f64().unwrap() - 1.0 / 101.0).abs() < 1e-9);
    assert!(calm["maxPsi"].as_f64().unwrap_or(0.0) < 0.1, "training-like inputs do not drift: {calm}");
    assert_ne!(calm["driftAlert"], true);
    assert!(calm["latencyP50Ms"].as_f64().unwrap() > 0.0);
    assert_eq!(calm["drift"].as_array().unwrap().len(), features.len());

    // The same number of calls, every feature in its top decile.
    for _ in 0..100 {
        assert_eq!(assess(&app, &key, &patient, row(&features, |_| 9)).await, 200);
    }
    let shifted = wait_for_calls(&app, &key, 201).await;
    let max_psi = shifted["maxPsi"].as_f64().unwrap();
    assert!(max_psi > 0.25, "shifted inputs drift: {shifted}");
    assert_eq!(shifted["driftAlert"], true);
    assert!(shifted["drift"].as_array().unwrap().iter().all(|feature| feature["alert"] == true), "{shifted}");

    let listed: Value = app.get("/v1/governance/monitoring?window=1h", &key).await.json().await.unwrap();
    assert_eq!(listed["models"][0]["model"], "breast-cancer");
    aigronova_e2e::assert_problem(app.get("/v1/governance/monitoring?window=2w", &key).await, 400).await;
    for unknown in ["nope/versions/1", "breast-cancer/versions/9"] {
        let response = app.get(&format!("/v1/governance/monitoring/models/{unknown}"), &key).await;
        aigronova_e2e::assert_problem(response, 404).await;
    }

    let metrics = app.get("/metrics", &app.admin_key).await.text().await.unwrap();
    let line = metrics
        .lines()
        .find(|line| line.starts_with("aigronova_model_drift_psi{") && line.contains(&tenant))
        .unwrap_or_else(|| panic!("no drift gauge for the tenant in /metrics"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 0.25, "{line}");

    // Another tenant has no calls, and no drift.
    let other = app.create_tenant("Outra").await;
    let other_key = app.create_key(&other, &["governance:read"]).await;
    let empty = app.get(MONITORING, &other_key).await;
    assert_eq!(empty.status(), 200, "a model called by others has zero calls here");
    let empty: Value = empty.json().await.unwrap();
    assert_eq!((empty["model"].as_str(), count(&empty, "inferenceCount")), (Some("breast-cancer"), 0), "{empty}");
    // Its scraper sees the platform's series but none labelled with the first tenant.
    let scraper = app.create_key(&other, &["metrics:read"]).await;
    let scraped = app.get("/metrics", &scraper).await.text().await.unwrap();
    assert!(scraped.contains("aigronova_gateway_requests_total"), "{scraped}");
    assert!(!scraped.contains(&format!("tenant=\"{tenant}\"")), "another tenant's series: {scraped}");
    app.stop().await;
}

/// Call `call` of 100 puts each feature in the bin whose training shares cover the call's
/// percentile (shifted per feature), so that 100 calls fill the bins as the training rows did.
fn training_like(features: &[Value], call: usize) -> Value {
    let mut row = Map::new();
    for (index, feature) in features.iter().enumerate() {
        let (edges, shares) = (numbers(feature, "bin_edges"), numbers(feature, "bin_shares"));
        let percentile = ((call + 37 * index) % 100) as f64 / 100.0 + 0.005;
        let mut bin = 0;
        let mut covered = shares[0];
        while covered < percentile && bin + 1 < shares.len() {
            bin += 1;
            covered += shares[bin];
        }
        row.insert(feature["name"].as_str().unwrap().to_owned(), json!((edges[bin] + edges[bin + 1]) / 2.0));
    }
    Value::Object(row)
}

fn psi_of(status: &Value, feature: &str) -> f64 {
    let entry = status["drift"].as_array().unwrap().iter().find(|entry| entry["feature"] == feature);
    entry.unwrap_or_else(|| panic!("no drift for {feature}: {status}"))["psi"].as_f64().unwrap_or(0.0)
}

#[tokio::test]
async fn drift_is_measured_against_the_training_shares_of_bins_whose_quantiles_repeat() {
    const DIABETES: &str = "/v1/governance/monitoring/models/diabetes-progression/versions/1";
    let (app, _, key, patient) = monitored_clinic("Clínica Diabetes").await;
    let features = features_of("diabetes-progression");
    let sex = features.iter().find(|feature| feature["name"] == "sex").unwrap();
    assert_eq!(numbers(sex, "bin_edges").len(), 3, "sex's two values fall in two bins: {sex}");

    for call in 0..100 {
        let row = training_like(&features, call);
        assert_eq!(assess_with(&app, &key, &patient, "diabetes-progression", row).await, 200);
    }
    let calm = wait_for_calls_of(&app, &key, DIABETES, 100).await;
    assert!(calm["maxPsi"].as_f64().unwrap_or(0.0) < 0.1, "training-like inputs do not drift: {calm}");
    assert_ne!(calm["driftAlert"], true, "{calm}");

    // 150 more like them, every patient of one sex: only that feature drifts.
    let edges = numbers(sex, "bin_edges");
    for call in 0..150 {
        let mut row = training_like(&features, call);
        row["sex"] = json!((edges[1] + edges[2]) / 2.0);
        assert_eq!(assess_with(&app, &key, &patient, "diabetes-progression", row).await, 200);
    }
    let shifted = wait_for_calls_of(&app, &key, DIABETES, 250).await;
    assert!(psi_of(&shifted, "sex") > 0.25, "one sex only drifts: {shifted}");
    assert_eq!(shifted["driftAlert"], true, "{shifted}");
    for feature in &features {
        let name = feature["name"].as_str().unwrap();
        if name != "sex" {
            assert!(psi_of(&shifted, name) < 0.1, "{name} did not move: {shifted}");
        }
    }
    app.stop().await;
}

/// A graceful stop sends the summaries not yet reported: ai-governance, in the same process,
/// stops after the services have sent their last.
#[tokio::test]
async fn summaries_not_yet_reported_reach_ai_governance_when_the_platform_stops() {
    let mut app = spawn_app_with(Backend::Sqlite, |config: &mut AppConfig| {
        // Longer than the test: only the report made on stopping can carry the calls.
        config.audit.monitoring_interval_ms = 600_000;
    })
    .await;
    let tenant = app.create_tenant("Clínica Reiniciada").await;
    let key = app.create_key(&tenant, &["health:read", "health:write", "governance:read"]).await;
    let patient = app.create_patient(&key).await;
    let features = features();
    for _ in 0..3 {
        assert_eq!(assess(&app, &key, &patient, row(&features, |_| 4)).await, 200);
    }
    app.restart().await;
    let status = wait_for_calls(&app, &key, 3).await;
    assert_eq!(count(&status, "errorCount"), 0, "{status}");
    app.stop().await;
}

/// A link to ai-governance that passes reports on and loses the answer to the first: the report
/// is recorded, and the service cannot tell. It keeps the window ids of every report it passed.
#[derive(Clone)]
struct LossyLink {
    governance: MonitoringClient<Channel>,
    reports: Arc<Mutex<Vec<Vec<String>>>>,
}

#[tonic::async_trait]
impl Monitoring for LossyLink {
    async fn record_inference_stats(
        &self,
        request: Request<proto::RecordInferenceStatsRequest>,
    ) -> Result<Response<proto::RecordInferenceStatsResponse>, Status> {
        let ids = request.get_ref().windows.iter().map(|window| window.window_id.clone()).collect();
        let answer = self.governance.clone().record_inference_stats(request).await?;
        let mut reports = self.reports.lock().unwrap();
        reports.push(ids);
        if reports.len() == 1 {
            return Err(Status::unavailable("the connection dropped before the answer"));
        }
        Ok(answer)
    }

    async fn list_model_monitoring(
        &self,
        _: Request<proto::ListModelMonitoringRequest>,
    ) -> Result<Response<proto::ListModelMonitoringResponse>, Status> {
        Err(Status::unimplemented("reports only"))
    }

    async fn get_model_monitoring(
        &self,
        _: Request<proto::GetModelMonitoringRequest>,
    ) -> Result<Response<proto::ModelMonitoring>, Status> {
        Err(Status::unimplemented("reports only"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_whose_answer_was_lost_is_sent_again_under_its_ids_and_counted_once() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Clínica da Conexão Instável").await;
    let key = app.create_key(&tenant, &["governance:read"]).await;
    let governance = Channel::from_shared(format!("http://{}", app.grpc_addr("ai-governance"))).unwrap();
    let link = LossyLink { governance: MonitoringClient::new(governance.connect_lazy()), reports: Arc::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let link_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MonitoringServer::new(link.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let config = InferenceConfig { models_dir: models_dir(), ..InferenceConfig::default() };
    let model = ModelRegistry::load(&config, &["breast-cancer"]).unwrap().get("breast-cancer").unwrap();
    let monitor = InferenceMonitor::default();
    let call = || monitor.record(&tenant, &model, None, Duration::from_millis(3), true);
    for _ in 0..7 {
        call();
    }
    let relay = RelayConfig { governance_url: Some(link_url), monitoring_interval_ms: 100, ..RelayConfig::default() };
    let shutdown = Shutdown::new();
    let reporting = tokio::spawn(monitor.clone().run(relay, app.service_signer(), "healthquantum", shutdown.clone()));

    let reports = |count: usize| {
        let reports = link.reports.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let seen = reports.lock().unwrap().clone();
                if seen.len() >= count {
                    return seen;
                }
                assert!(tokio::time::Instant::now() < deadline, "{count} reports did not come: {seen:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let seen = reports(2).await;
    assert_eq!(seen[0].len(), 1, "one window: {seen:?}");
    assert!(uuid::Uuid::try_parse(&seen[0][0]).is_ok(), "{seen:?}");
    assert_eq!(seen[1], seen[0], "the report is sent again under the same window ids");
    wait_for_calls(&app, &key, 7).await;

    // Calls made since go out in a new window, and the first is not counted again.
    for _ in 0..3 {
        call();
    }
    let seen = reports(3).await;
    assert_ne!(seen[2], seen[0], "{seen:?}");
    wait_for_calls(&app, &key, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_calls(&app, &key, 10).await;
    shutdown.trigger();
    reporting.await.unwrap();
    app.stop().await;
}

/// A credit score refused for its declared data, none at all included, is a call of the model
/// that produced no score.
#[tokio::test]
async fn credit_applicants_refused_for_their_declared_data_count_as_errors() {
    let app = spawn_app_with(Backend::Sqlite, |config: &mut AppConfig| {
        config.audit.monitoring_interval_ms = 200;
    })
    .await;
    let tenant = app.create_tenant("Financeira Monitorada").await;
    let key = app.create_key(&tenant, &["fin:write", "governance:read"]).await;
    let path = models_dir().join("credit-risk/1/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json")).unwrap();
    let mut minor = aigronova_e2e::credit::applicant_for(&reference["rows"][0]["features"]);
    minor["age"] = json!(17);
    let cpf = aigronova_e2e::credit::cpf(111_444_777);
    for body in [json!({"cpf": cpf}), json!({"cpf": cpf, "applicant": minor})] {
        let response = app.post("/v1/fin/credit-scores", &key, &body).await;
        assert_eq!(response.status(), 400, "{body}");
    }
    let status = wait_for_calls_of(&app, &key, "/v1/governance/monitoring/models/credit-risk/versions/1", 2).await;
    assert_eq!(count(&status, "errorCount"), 2, "{status}");
    app.stop().await;
}
