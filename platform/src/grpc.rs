//! gRPC server scaffolding shared by every service: `grpc.health.v1`, reflection from the
//! descriptor set, a span per call whose parent is the caller's W3C trace context, and a
//! graceful shutdown that reports NOT_SERVING and then drains in-flight calls.

use std::{io, net::SocketAddr};

use tokio::net::TcpListener;
use tonic::{
    codegen::InterceptedService,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

use crate::{
    auth::{RefuseForeignTokens, TokenVerifier},
    shutdown::Shutdown,
};

/// The largest message a service behind the gateway takes or the gateway takes back: above the
/// largest request body a plan allows by default (50 MiB for Enterprise), so that an image the
/// plan accepts is never refused by the gRPC layer.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The most items a page of a service's list holds, and how many when the caller asks for 0.
pub const MAX_PAGE_SIZE: i32 = 100;
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// A list's `pageSize`: [`DEFAULT_PAGE_SIZE`] for 0 (unset, AIP-158), at most [`MAX_PAGE_SIZE`].
pub fn page_size(requested: i32) -> Result<usize, crate::Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(requested as usize),
        _ => Err(crate::Error::invalid(
            "pageSize",
            format!("must be a whole number from 1 to {MAX_PAGE_SIZE}, or 0 for the default ({DEFAULT_PAGE_SIZE})"),
        )),
    }
}

/// A bound gRPC listener; binding first lets `127.0.0.1:0` callers learn the port.
#[derive(Debug)]
pub struct GrpcListener {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl GrpcListener {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self { listener, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `routes` plus health and reflection until `shutdown`. `services` are the full
    /// names of the gRPC services in `routes`, reported SERVING while the server runs. A health
    /// check that carries an internal token `verifier` refuses is refused (see
    /// [`RefuseForeignTokens`]).
    pub async fn serve(
        self,
        routes: Routes,
        services: &[&str],
        verifier: TokenVerifier,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        for service in services.iter().copied().chain([""]) {
            health.set_service_status(service, ServingStatus::Serving).await;
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(aigronova_proto::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let health_service = InterceptedService::new(health_service, RefuseForeignTokens::new(verifier));
        let routes = routes.add_service(health_service).add_service(reflection);

        let names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        let drain = async move {
            shutdown.wait().await;
            for service in names.iter().map(String::as_str).chain([""]) {
                health.set_service_status(service, ServingStatus::NotServing).await;
            }
        };
        tracing::info!(addr = %self.local_addr, services = %services.join(","), "gRPC server listening");
        Server::builder()
            .trace_fn(call_span)
            .add_routes(routes)
            // Small gRPC frames must not wait for the peer's delayed ACK (Nagle).
            .serve_with_incoming_shutdown(TcpIncoming::from(self.listener).with_nodelay(Some(true)), drain)
            .await?;
        tracing::info!(addr = %self.local_addr, "gRPC server stopped");
        Ok(())
    }
}

/// One span per call, child of the caller's span when the call carries `traceparent`.
fn call_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %request.uri().path(),
        otel.kind = "server",
        rpc.system = "grpc",
    );
    crate::trace_context::adopt_remote_parent(&span, request.headers());
    span
}
