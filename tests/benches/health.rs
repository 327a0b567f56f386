//! HealthQuantum assessments side by side in one run, the same breast-cancer row each time:
//! - the raw ONNX Runtime call in process (the floor),
//! - the platform through the gateway (HTTP/JSON, API key, rate limit, transcoding, internal
//!   token, validation, inference, top features, the assessment and its audit event committed
//!   to SQLite),
//! - a Python FastAPI + onnxruntime service scoring the same model.onnx (what a team would
//!   otherwise deploy; uvicorn with one worker per core), which only scores.
//!
//! `make bench` runs it in release mode after installing the Python service's pinned packages
//! into `.cache/bench-venv` (`BENCH_PYTHON` names its interpreter). Settings: `BENCH_SECONDS`
//! (default 5) per side, `BENCH_CONCURRENCY` (default 8) requests in flight.

mod common;
mod reference;

use std::{sync::Arc, time::Duration};

use aigronova_e2e::{Backend, models_dir, spawn_app_with};
use aigronova_platform::{config::InferenceConfig, inference::ModelRegistry};
use serde_json::{Value, json};

use crate::{
    common::{drive, env_number},
    reference::{PythonService, print},
};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5));
    let concurrency = env_number("BENCH_CONCURRENCY", 8) as usize;
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join("breast-cancer/1/reference.json")).expect("reference.json"),
    )
    .unwrap();
    let features = reference["rows"][0]["features"].clone();

    // The floor: ONNX Runtime alone, on the calling task as the service calls it.
    let models = ModelRegistry::load(
        &InferenceConfig { models_dir: models_dir(), ..InferenceConfig::default() },
        &["breast-cancer"],
    )
    .expect("the model loads (is ORT_DYLIB_PATH set?)");
    let model = models.get("breast-cancer").unwrap();
    let named: std::collections::HashMap<String, f64> = serde_json::from_value(features.clone()).unwrap();
    let row = Arc::new(model.feature_vector(&named, "features").unwrap());
    let raw = drive("raw ONNX Runtime call", concurrency, seconds, move || {
        let (model, row) = (model.clone(), row.clone());
        async move { model.predict(&row).is_ok() }
    })
    .await;

    // The platform, through the gateway.
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.gateway.plans.enterprise.requests_per_second = 1_000_000.0;
        config.gateway.plans.enterprise.burst = 1_000_000;
        config.gateway.plans.enterprise.monthly_inference_quota = 1_000_000_000;
    })
    .await;
    let tenant = app.create_tenant("Bench").await;
    let response =
        app.patch(&format!("/v1/admin/tenants/{tenant}"), &app.admin_key, &json!({"plan": "enterprise"})).await;
    assert_eq!(response.status(), 200);
    let key = app.create_key(&tenant, &["health:read", "health:write"]).await;
    let patient = app.create_patient(&key).await;
    let client = app.client.clone();
    let url = app.url(&format!("/v1/health/patients/{patient}/assessments"));
    let body = json!({"model": "breast-cancer", "features": features}).to_string();
    let platform = drive("platform through the gateway", concurrency, seconds, {
        let body = body.clone();
        move || {
            let request =
                client.post(&url).bearer_auth(&key).header("content-type", "application/json").body(body.clone());
            async move { request.send().await.is_ok_and(|response| response.status().is_success()) }
        }
    })
    .await;
    app.stop().await;

    // The Python service.
    let (service, _) = PythonService::start("breast-cancer", &body).await;
    let client = reqwest::Client::new();
    let url = service.url.clone();
    let fastapi = drive("Python FastAPI + onnxruntime", concurrency, seconds, move || {
        let request = client.post(&url).header("content-type", "application/json").body(body.clone());
        async move { request.send().await.is_ok_and(|response| response.status().is_success()) }
    })
    .await;

    print("assessments", &[&raw, &platform, &fastapi]);
    println!();
    println!(
        "the platform makes {:.1}x the Python service's assessments per second at {concurrency} in flight; its p50 is \
         {:.3} ms above the raw call",
        platform.rps() / fastapi.rps(),
        (platform.percentile(0.5).as_secs_f64() - raw.percentile(0.5).as_secs_f64()) * 1000.0
    );
}
