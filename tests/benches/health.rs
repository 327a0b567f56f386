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
//!   otherwise deploy; one uvicorn process per core, called in turn), which only scores,
//!
//! and, on the same platform, the gateway's own cost: the trivial `GetPublicKey` through the
//! gateway and directly over gRPC, whose p50 difference the goal adds to the raw call's p50.
//!
//! The platform's sides, the Python service's and the gateway's cost are driven in turns (each
//! for a fifth of its time, five times over), so that a drift of the machine's speed during the
//! run falls on all of them alike.
//!
//! `make bench` runs it in release mode after installing the Python service's pinned packages
//! into `.cache/bench-venv` (`BENCH_PYTHON` names its interpreter). Settings: `BENCH_SECONDS`
//! (default 5) per side, `BENCH_CONCURRENCY` (default 8) requests in flight, `BENCH_TURNS`
//! (default 5) turns each side's time is split into.

mod common;
mod internal;
mod reference;

use std::{sync::Arc, time::Duration};

use aigronova_e2e::{Backend, TestApp, spawn_app_with};
use serde_json::json;

use crate::{
    common::{Run, Side, drive_in_turns, env_number, print, repeat, unlimited_enterprise},
    internal::{Call, GET_PUBLIC_KEY_PATH, Internal, gateway_get, get_public_key},
    reference::{
        Explanation, PYTHON, PythonService, drive_explanations, drive_raw, first_reference_row, python_call, report,
    },
};

/// A POST of `body` as JSON to `path` through the gateway with API key `key`.
fn post_json(
    app: &TestApp,
    path: &str,
    key: &Arc<String>,
    body: String,
) -> impl Fn() -> Call + Send + Sync + 'static + use<> {
    repeat(app.client.clone(), &app.url(path), Some(key.as_str()), Some(body))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5));
    let concurrency = env_number("BENCH_CONCURRENCY", 8) as usize;
    let turns = env_number("BENCH_TURNS", 5) as u32;
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
    let body = json!({"model": "breast-cancer", "features": features}).to_string();
    let assess = post_json(&app, &format!("/v1/health/patients/{patient}/assessments"), &key, body.clone());

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
    let open_inference = post_json(&app, "/v2/models/breast-cancer/infer", &infer_key, infer.to_string());

    // The gateway's own cost, on the same platform.
    let direct = get_public_key(&app, internal.tokens(&tenant, &scopes)).await;
    let gateway = gateway_get(app.client.clone(), &app.url(GET_PUBLIC_KEY_PATH), &key);

    // The Python service, started beside the platform and driven in turns with it.
    let (service, _) = PythonService::start("breast-cancer", &body).await;
    let sides = [
        Side::new("platform through the gateway", assess),
        Side::new("Open Inference Protocol through the gateway", open_inference),
        Side::new(PYTHON, python_call(&service, body)),
        Side::new("GetPublicKey, direct gRPC", direct),
        Side::new("GetPublicKey, gateway", gateway),
    ];
    let [platform, open_inference, fastapi, direct, gateway] =
        <[Run; 5]>::try_from(drive_in_turns(&sides, concurrency, seconds, turns).await).ok().expect("five sides");
    drop(service);
    app.stop().await;

    report("assessments", &raw, &platform, &fastapi, concurrency);
    println!(
        "CPU of the process (load generator, gateway, services, SQLite) per call: {:.1} µs an assessment, {:.1} µs an \
         inference through the Open Inference Protocol",
        platform.cpu_micros_per_call(),
        open_inference.cpu_micros_per_call()
    );
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
