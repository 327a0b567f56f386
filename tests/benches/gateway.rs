//! The gateway's own cost: the same RPC called through the gateway (HTTP, API key, scope check,
//! rate limit, JSON transcoding) and directly over gRPC with an internal token, side by side in
//! one run, for two RPCs answered from memory:
//!
//! - `AuditLog.GetPublicKey`, the trivial one: a three-field answer of about a hundred bytes, so
//!   that what the gateway adds is its per-request cost;
//! - healthquantum's `ListModels`: two model cards with their 40 features, metrics and bands,
//!   several kilobytes of JSON, so that the transcoding of a real answer shows too.
//!
//! The gateway side runs three times: with an HTTP/1.1 client (one connection per request in
//! flight) and with an HTTP/2 client (one connection, as the direct gRPC client has), the gateway
//! calling the services of its process through their routes as `aigronova up` runs it; and with
//! the HTTP/1.1 client through a second gateway that calls the same services over gRPC, as each
//! runs in its own pod on Kubernetes. Prints a Markdown
//! table per RPC, then the trivial RPC again one request at a time, and whether issue 3's goal
//! (under 0.3 ms added at p50, above 70% of the direct throughput) holds at each concurrency.
//! The sides of an RPC are driven in turns (each for a fifth of its time, five times over), so
//! that a drift of the machine's speed during the run falls on all of them alike.
//! `make bench` runs it in release mode. Settings: `BENCH_SECONDS` (default 5) per side,
//! `BENCH_CONCURRENCY` (default 8) requests in flight, `BENCH_TURNS` (default 5) turns each side's
//! time is split into.

mod common;
mod internal;

use std::{future::Future, sync::Arc, time::Duration};

use aigronova_e2e::{Backend, TestApp, spawn_app_with};
use aigronova_proto::aigronova::health::v1::{ListModelsRequest, health_quantum_client::HealthQuantumClient};

use crate::{
    common::{Side, drive_in_turns, env_number, print, unlimited_enterprise},
    internal::{GET_PUBLIC_KEY_PATH, Internal, connect, gateway_get, get_public_key},
};

#[derive(Clone, Copy)]
struct Settings {
    seconds: u64,
    concurrency: usize,
    turns: u32,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let settings = Settings {
        seconds: env_number("BENCH_SECONDS", 5),
        concurrency: env_number("BENCH_CONCURRENCY", 8) as usize,
        turns: env_number("BENCH_TURNS", 5) as u32,
    };
    let internal = Internal::new();
    let mut app = spawn_app_with(Backend::Sqlite, |config| {
        internal.configure(config);
        unlimited_enterprise(config);
    })
    .await;
    let tenant = app.create_tenant_on("Bench", "enterprise").await;
    let scopes = ["governance:read", "health:read"];
    let key = Arc::new(app.create_key(&tenant, &scopes).await);
    let tokens = internal.tokens(&tenant, &scopes);
    let over_grpc = app.start_gateway_replica().await;

    let direct = get_public_key(&app, tokens.clone()).await;
    let trivial = compare(&app, &over_grpc, &settings, &key, "GetPublicKey", GET_PUBLIC_KEY_PATH, direct.clone()).await;
    println!();

    let health = HealthQuantumClient::new(connect(&app, aigronova_healthquantum::SERVICE_NAME).await);
    compare(&app, &over_grpc, &settings, &key, "healthquantum ListModels", "/v1/health/models", move || {
        let mut client = health.clone();
        let request = tokens.sign(ListModelsRequest {});
        async move { client.list_models(request).await.is_ok() }
    })
    .await;
    let mut runs = vec![(settings.concurrency, trivial)];
    if settings.concurrency > 1 {
        println!();
        let alone = Settings { concurrency: 1, ..settings };
        let rpc = "GetPublicKey, one request at a time";
        runs.push((1, compare(&app, &over_grpc, &alone, &key, rpc, GET_PUBLIC_KEY_PATH, direct).await));
    }
    app.stop().await;

    println!();
    for (concurrency, costs) in runs {
        for ((added, kept), services) in costs.into_iter().zip(["in its process", "over gRPC"]) {
            let met = added < 0.3 && kept > 70.0;
            println!(
                "goal on GetPublicKey with {concurrency} in flight (HTTP/1.1 client, services {services}): adds \
                 {added:.3} ms at p50 (under 0.3 ms) and keeps {kept:.0}% of the direct throughput (above 70%): {}",
                if met { "met" } else { "not met" }
            );
        }
    }
}

/// Drives `path` through the gateway (and through the one at `over_grpc`) and the same RPC
/// directly with `direct`, in turns, and prints them all; returns what the gateway with the HTTP/1.1 client
/// adds at p50 (ms) and keeps of the direct throughput (%), first in process, then over gRPC.
async fn compare<F, Fut>(
    app: &TestApp,
    over_grpc: &str,
    settings: &Settings,
    key: &Arc<String>,
    rpc: &str,
    path: &str,
    direct: F,
) -> [(f64, f64); 2]
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let url = app.url(path);
    let answer = app.get(path, key).await;
    assert!(answer.status().is_success(), "{path} answered {}", answer.status());
    let answer_bytes = answer.bytes().await.expect("the answer").len();
    let duration = Duration::from_secs(settings.seconds);

    let client = app.client.clone();
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("an HTTP/2 client");
    let remote_url = format!("{over_grpc}{path}");
    let sides = [
        Side::new("direct gRPC", direct),
        Side::new("gateway, HTTP/1.1 client", gateway_get(client.clone(), &url, key)),
        Side::new("gateway, HTTP/2 client", gateway_get(http2, &url, key)),
        Side::new("gateway to services over gRPC, HTTP/1.1 client", gateway_get(client, &remote_url, key)),
    ];
    let [direct, http1, http2, remote] =
        <[common::Run; 4]>::try_from(drive_in_turns(&sides, settings.concurrency, duration, settings.turns).await)
            .ok()
            .expect("four sides");

    println!("{rpc} (`GET {path}`, {answer_bytes} bytes of JSON):");
    println!();
    print("requests", &[&direct, &http1, &http2, &remote]);
    println!();
    let cost = |gateway: &common::Run| {
        let added = gateway.percentile(0.50).as_secs_f64() - direct.percentile(0.50).as_secs_f64();
        (added * 1000.0, 100.0 * gateway.rps() / direct.rps())
    };
    for gateway in [&http1, &http2, &remote] {
        let (added, kept) = cost(gateway);
        println!(
            "{}: adds {added:.3} ms at p50 and keeps {kept:.0}% of the direct throughput ({} in flight, {} s a side)",
            gateway.label, settings.concurrency, settings.seconds
        );
    }
    // Throughput with both cores busy moves with how the runtime shares the tasks out between
    // them; the CPU a call costs does not.
    let cpu = |run: &common::Run| format!("{} {:.1} µs", run.label, run.cpu_micros_per_call());
    println!(
        "CPU of the process per call: {}, {}, {}, {} (the direct path's share: {:.0}% of the HTTP/1.1 side's)",
        cpu(&direct),
        cpu(&http1),
        cpu(&http2),
        cpu(&remote),
        100.0 * direct.cpu_micros_per_call() / http1.cpu_micros_per_call()
    );
    [cost(&http1), cost(&remote)]
}
