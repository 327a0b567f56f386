//! Inference monitoring through the gateway: healthquantum's summaries reach ai-governance, which
//! reports volumes, errors, latency and drift; inputs drawn like the training data keep PSI low,
//! shifted inputs raise it above 0.25 and set the alert, in the API and as a metric. Drift is
//! measured against each bin's training share from the manifest, so that features whose quantiles
//! repeat (a two-valued `sex`, `s4`) neither alert on training-like inputs nor miss a shift.

use std::time::Duration;

use aigronova_cli::AppConfig;
use aigronova_e2e::{Backend, TestApp, models_dir, spawn_app_with};
use serde_json::{Map, Value, json};

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
