//! The gateway's own cost: the same trivial RPC (`ListModels`, answered from memory) called
//! through the gateway (HTTP, API key, scope check, rate limit, JSON transcoding) and directly
//! over gRPC with an internal token, side by side in one run. Prints a Markdown table.
//!
//! `make bench` runs it in release mode. Settings: `BENCH_SECONDS` (default 5) per side,
//! `BENCH_CONCURRENCY` (default 8) requests in flight.

mod common;

use std::{sync::Arc, time::Duration};

use aigronova_e2e::{Backend, spawn_app_with};
use aigronova_platform::auth::{Caller, TokenSigner, attach_token};
use aigronova_proto::aigronova::health::v1::{ListModelsRequest, health_quantum_client::HealthQuantumClient};

use crate::common::{drive, env_number, print, unlimited_enterprise};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = env_number("BENCH_SECONDS", 5);
    let concurrency = env_number("BENCH_CONCURRENCY", 8) as usize;
    let signing_key = TokenSigner::generate().to_base64();
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.internal_auth.signing_key = Some(signing_key.clone());
        config.internal_auth.verifying_key = None;
        unlimited_enterprise(config);
    })
    .await;
    let tenant = app.create_tenant_on("Bench", "enterprise").await;
    let key = app.create_key(&tenant, &["health:read"]).await;

    let client = app.client.clone();
    let url = app.url("/v1/health/models");
    let key = Arc::new(key);
    let through_gateway = drive("gateway (HTTP/JSON)", concurrency, Duration::from_secs(seconds), move || {
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        async move {
            match client.get(&url).bearer_auth(key.as_str()).send().await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;

    let signer = TokenSigner::from_base64(&signing_key).unwrap();
    let caller = Caller { tenant_id: tenant.clone(), subject: "bench".into(), scopes: vec!["health:read".into()] };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.health_grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let grpc = HealthQuantumClient::new(channel);
    let direct = drive("direct gRPC", concurrency, Duration::from_secs(seconds), move || {
        let mut grpc = grpc.clone();
        let token = signer.mint_reusable(&caller);
        async move {
            let mut request = tonic::Request::new(ListModelsRequest {});
            attach_token(request.metadata_mut(), &token);
            grpc.list_models(request).await.is_ok()
        }
    })
    .await;

    print("requests", &[&direct, &through_gateway]);
    let added = through_gateway.percentile(0.50).as_secs_f64() - direct.percentile(0.50).as_secs_f64();
    println!();
    println!(
        "gateway adds {:.3} ms at p50 and keeps {:.0}% of the direct throughput ({} in flight, {} s a side)",
        added * 1000.0,
        100.0 * through_gateway.rps() / direct.rps(),
        concurrency,
        seconds
    );
    app.stop().await;
}
