//! HealthQuantum assessments side by side in one run, the same breast-cancer row each time:
//! - the raw ONNX Runtime call in process (the floor),
//! - in process, the output with its contributions as the service computes them (the trees
//!   walked) beside the same scored as one batch of occluded rows,
//! - the platform through the gateway (HTTP/JSON, API key, rate limit, transcoding, internal
//!   token, validation, inference, top features, the assessment and its audit event committed
//!   to SQLite),
//! - the same row through the gateway's Open Inference Protocol route (the model run and its
//!   decision's audit event committed, no assessment stored),
//! - a Python FastAPI + onnxruntime service scoring the same model.onnx (what a team would
//!   otherwise deploy; uvicorn with one worker per core), which only scores,
//!
//! and, on the same platform, the gateway's own cost: the trivial `GetPublicKey` through the
//! gateway and directly over gRPC, whose p50 difference the goal adds to the raw call's p50.
//!
//! `make bench` runs it in release mode after installing the Python service's pinned packages
//! into `.cache/bench-venv` (`BENCH_PYTHON` names its interpreter). Settings: `BENCH_SECONDS`
//! (default 5) per side, `BENCH_CONCURRENCY` (default 8) requests in flight.

mod common;
mod internal;
mod reference;

use std::{sync::Arc, time::Duration};

use aigronova_e2e::{Backend, spawn_app_with};
use serde_json::json;

use crate::{
    common::{drive, env_number, print, unlimited_enterprise},
    internal::{GET_PUBLIC_KEY_PATH, Internal, drive_gateway, get_public_key},
    reference::{Explanation, PythonService, drive_explanations, drive_python, drive_raw, first_reference_row, report},
};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5));
    let concurrency = env_number("BENCH_CONCURRENCY", 8) as usize;
    let row = first_reference_row("breast-cancer");
    let features = row["features"].clone();
    let raw = drive_raw("breast-cancer", &features, concurrency, seconds).await;
    let (walked, scored) =
        drive_explanations("breast-cancer", &features, Explanation::Contributions, concurrency, seconds).await;

    // The platform, through the gateway.
    let internal = Internal::new();
    let app = spawn_app_with(Backend::Sqlite, |config| {
        internal.configure(config);
        unlimited_enterprise(config);
    })
    .await;
    let tenant = app.create_tenant_on("Bench", "enterprise").await;
    let scopes = ["health:read", "health:write", "governance:read"];
    let key = Arc::new(app.create_key(&tenant, &scopes).await);
    let patient = app.create_patient(&key).await;
    let client = app.client.clone();
    let url = app.url(&format!("/v1/health/patients/{patient}/assessments"));
    let body = json!({"model": "breast-cancer", "features": features}).to_string();
    let platform = drive("platform through the gateway", concurrency, seconds, {
        let (body, key) = (body.clone(), key.clone());
        move || {
            let request = client
                .post(&url)
                .bearer_auth(key.as_str())
                .header("content-type", "application/json")
                .body(body.clone());
            async move { request.send().await.is_ok_and(|response| response.status().is_success()) }
        }
    })
    .await;

    // The same row through the Open Inference Protocol: the model run and its decision audited,
    // nothing else stored, as the Python service stores nothing.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(aigronova_e2e::models_dir().join("breast-cancer/1/manifest.json")).unwrap(),
    )
    .unwrap();
    let data: Vec<&serde_json::Value> = manifest["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| &features[feature["name"].as_str().unwrap()])
        .collect();
    let infer = json!({"inputs": [{"name": "input", "shape": [1, data.len()], "datatype": "FP32", "data": data}]});
    let infer_key = Arc::new(app.create_key(&tenant, &["models:infer"]).await);
    let client = app.client.clone();
    let url = app.url("/v2/models/breast-cancer/infer");
    let body_v2 = infer.to_string();
    let open_inference = drive("Open Inference Protocol through the gateway", concurrency, seconds, move || {
        let request = client
            .post(&url)
            .bearer_auth(infer_key.as_str())
            .header("content-type", "application/json")
            .body(body_v2.clone());
        async move { request.send().await.is_ok_and(|response| response.status().is_success()) }
    })
    .await;

    // The gateway's own cost, on the same platform.
    let direct = get_public_key(&app, internal.tokens(&tenant, &scopes)).await;
    let direct = drive("GetPublicKey, direct gRPC", concurrency, seconds, direct).await;
    let url = app.url(GET_PUBLIC_KEY_PATH);
    let gateway = drive_gateway("GetPublicKey, gateway", app.client.clone(), &url, &key, concurrency, seconds).await;
    app.stop().await;

    // The Python service.
    let (service, _) = PythonService::start("breast-cancer", &body).await;
    let fastapi = drive_python(&service, body, concurrency, seconds).await;

    report("assessments", &raw, &platform, &fastapi, concurrency);
    println!();
    print("inferences", &[&open_inference, &fastapi]);
    println!(
        "one row through the Open Inference Protocol (audited, no assessment stored): {:.1}x the Python service",
        open_inference.rps() / fastapi.rps()
    );
    println!();
    print("explanations", &[&walked, &scored]);
    println!();
    print("requests", &[&direct, &gateway]);
    let cost = gateway.percentile(0.5).saturating_sub(direct.percentile(0.5));
    let bound = raw.percentile(0.5) + cost + Duration::from_millis(1);
    let p50 = platform.percentile(0.5);
    println!();
    println!(
        "the gateway's own cost at p50 is {:.3} ms: the goal for the platform's p50 is {:.3} ms (raw + cost + 1 ms); \
         it is {:.3} ms, {}",
        cost.as_secs_f64() * 1000.0,
        bound.as_secs_f64() * 1000.0,
        p50.as_secs_f64() * 1000.0,
        if p50 <= bound { "met" } else { "not met" }
    );
}
