//! The gateway's own cost: the same RPC called through the gateway (HTTP, API key, scope check,
//! rate limit, JSON transcoding) and directly over gRPC with an internal token, side by side in
//! one run, for two RPCs answered from memory:
//!
//! - `AuditLog.GetPublicKey`, the trivial one: a three-field answer of about a hundred bytes, so
//!   that what the gateway adds is its per-request cost;
//! - healthquantum's `ListModels`: two model cards with their 40 features, metrics and bands,
//!   several kilobytes of JSON, so that the transcoding of a real answer shows too.
//!
//! The gateway side runs twice, with an HTTP/1.1 client (one connection per request in flight)
//! and with an HTTP/2 client (one connection, as the direct gRPC client has). Prints a Markdown
//! table per RPC. `make bench` runs it in release mode. Settings:
//! `BENCH_SECONDS` (default 5) per side, `BENCH_CONCURRENCY` (default 8) requests in flight.

mod common;

use std::{future::Future, sync::Arc, time::Duration};

use aigronova_e2e::{Backend, TestApp, spawn_app_with};
use aigronova_platform::auth::{Caller, TokenSigner, attach_token};
use aigronova_proto::aigronova::{
    governance::v1::{GetPublicKeyRequest, audit_log_client::AuditLogClient},
    health::v1::{ListModelsRequest, health_quantum_client::HealthQuantumClient},
};
use tonic::transport::Channel;

use crate::common::{Run, drive, env_number, print, unlimited_enterprise};

struct Settings {
    seconds: u64,
    concurrency: usize,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let settings =
        Settings { seconds: env_number("BENCH_SECONDS", 5), concurrency: env_number("BENCH_CONCURRENCY", 8) as usize };
    let signing_key = TokenSigner::generate().to_base64();
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.internal_auth.signing_key = Some(signing_key.clone());
        config.internal_auth.verifying_key = None;
        unlimited_enterprise(config);
    })
    .await;
    let tenant = app.create_tenant_on("Bench", "enterprise").await;
    let scopes = ["governance:read", "health:read"];
    let key = Arc::new(app.create_key(&tenant, &scopes).await);
    let signer = TokenSigner::from_base64(&signing_key).unwrap();
    let caller = Caller {
        tenant_id: tenant.clone(),
        subject: "bench".into(),
        scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
    };
    let token = Arc::new(signer.mint_reusable(&caller));

    let audit_log = AuditLogClient::new(connect(&app, aigronova_ai_governance::SERVICE_NAME).await);
    compare(&app, &settings, &key, "GetPublicKey", "/v1/governance/audit/public-key", {
        let token = token.clone();
        move || {
            let mut client = audit_log.clone();
            let request = signed(GetPublicKeyRequest {}, &token);
            async move { client.get_public_key(request).await.is_ok() }
        }
    })
    .await;
    println!();

    let health = HealthQuantumClient::new(connect(&app, aigronova_healthquantum::SERVICE_NAME).await);
    compare(&app, &settings, &key, "healthquantum ListModels", "/v1/health/models", move || {
        let mut client = health.clone();
        let request = signed(ListModelsRequest {}, &token);
        async move { client.list_models(request).await.is_ok() }
    })
    .await;
    app.stop().await;
}

async fn connect(app: &TestApp, service: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr(service)))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn signed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    attach_token(request.metadata_mut(), token);
    request
}

/// Drives `path` through the gateway, then the same RPC directly with `direct`, and prints both.
async fn compare<F, Fut>(app: &TestApp, settings: &Settings, key: &Arc<String>, rpc: &str, path: &str, direct: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let url = app.url(path);
    let answer = app.get(path, key).await;
    assert!(answer.status().is_success(), "{path} answered {}", answer.status());
    let answer_bytes = answer.bytes().await.expect("the answer").len();
    let duration = Duration::from_secs(settings.seconds);

    let http1 = through_gateway("gateway, HTTP/1.1 client", app.client.clone(), &url, key, settings).await;
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("an HTTP/2 client");
    let http2 = through_gateway("gateway, HTTP/2 client", http2, &url, key, settings).await;
    let direct = drive("direct gRPC", settings.concurrency, duration, direct).await;

    println!("{rpc} (`GET {path}`, {answer_bytes} bytes of JSON):");
    println!();
    print("requests", &[&direct, &http1, &http2]);
    println!();
    for gateway in [&http1, &http2] {
        let added = gateway.percentile(0.50).as_secs_f64() - direct.percentile(0.50).as_secs_f64();
        println!(
            "{}: adds {:.3} ms at p50 and keeps {:.0}% of the direct throughput ({} in flight, {} s a side)",
            gateway.label,
            added * 1000.0,
            100.0 * gateway.rps() / direct.rps(),
            settings.concurrency,
            settings.seconds
        );
    }
}

/// Drives `GET url` with `key` through the gateway with `client`.
async fn through_gateway(
    label: &'static str,
    client: reqwest::Client,
    url: &str,
    key: &Arc<String>,
    settings: &Settings,
) -> Run {
    let (url, key) = (Arc::new(url.to_owned()), key.clone());
    drive(label, settings.concurrency, Duration::from_secs(settings.seconds), move || {
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        async move {
            match client.get(url.as_str()).bearer_auth(key.as_str()).send().await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}
