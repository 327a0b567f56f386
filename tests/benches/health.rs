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
    common::{drive, env_number, unlimited_enterprise},
    reference::{PythonService, drive_python, report},
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
    let app = spawn_app_with(Backend::Sqlite, unlimited_enterprise).await;
    let tenant = app.create_tenant_on("Bench", "enterprise").await;
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
    let fastapi = drive_python(&service, body, concurrency, seconds).await;

    report("assessments", &raw, &platform, &fastapi, concurrency);
}
