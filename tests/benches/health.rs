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

use std::time::Duration;

use aigronova_e2e::{Backend, spawn_app_with};
use serde_json::json;

use crate::{
    common::{drive, env_number, unlimited_enterprise},
    reference::{PythonService, drive_python, drive_raw, first_reference_row, report},
};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5));
    let concurrency = env_number("BENCH_CONCURRENCY", 8) as usize;
    let row = first_reference_row("breast-cancer");
    let features = row["features"].clone();
    let raw = drive_raw("breast-cancer", &features, concurrency, seconds).await;

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
