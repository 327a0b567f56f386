//! gRPC server scaffolding shared by every service: `grpc.health.v1`, reflection from the
//! descriptor set, a span per call whose parent is the caller's W3C trace context, and a
//! graceful shutdown that reports NOT_SERVING and then drains in-flight calls. A service run in
//! the same process as the gateway (`aigronova up`) can also be called without a socket, through
//! its [`LocalEndpoint`].

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
};

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tonic::{
    codegen::InterceptedService,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use tower::ServiceExt;
use tracing::Instrument;

use crate::{
    auth::{RefuseForeignTokens, TokenVerifier},
    crypto::TenantCipher,
    shutdown::Shutdown,
};

/// The largest message a service behind the gateway takes or the gateway takes back: above the
/// largest request body a plan allows by default (50 MiB for Enterprise), so that an image the
/// plan accepts is never refused by the gRPC layer.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The time the caller gives a call, from its `grpc-timeout` metadata (the gateway sends the time
/// its request has left): `None` without one, or with one [`parse_grpc_timeout`] does not read.
pub fn time_left(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)
}

/// Parses a gRPC timeout: a positive number of 1 to 8 digits and a unit, `H`, `M`, `S`, `m` (ms),
/// `u` (µs) or `n` (ns).
pub fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;

    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // A positive integer, as gRPC's TimeoutValue is.
    let amount: u64 = digits.parse().ok().filter(|amount| *amount > 0)?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 3600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

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

/// Where a page of a list starts and how long it is. Lists are ordered by their UUIDv7 ids (newest
/// or oldest first, as each list says); a page token is the id of the last item of the page before, then `.` and a
/// digest of that id and the list's filter under the tenant's data key, so that a token goes on
/// only in the list and with the filter that returned it, and is not made up or altered.
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    /// The id of the last item of the page before.
    pub after: Option<&'a str>,
    pub size: usize,
}

/// Why a page token is not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a token at all: not an id as the lists write them, a `.` and a digest.
    Malformed,
    /// A token of another list, filter or tenant, or one altered.
    Foreign,
}

/// The token of the page that goes on after the item `after` of the list `filter` (its kind and
/// what it is filtered by) of the tenant of `cipher`: `after`, `.` and a digest of both under the
/// tenant's data key.
pub fn page_token(cipher: &TenantCipher, filter: &str, after: &str) -> String {
    format!("{after}.{}", token_digest(cipher, filter, after))
}

/// The id a page token made by [`page_token`] for `filter` goes on after.
pub fn page_token_position<'t>(cipher: &TenantCipher, token: &'t str, filter: &str) -> Result<&'t str, TokenRefusal> {
    // An id as the list wrote it: another spelling of the UUID would compare otherwise.
    let given = |id: &str| uuid::Uuid::parse_str(id).is_ok_and(|uuid| uuid.to_string() == id);
    match token.split_once('.') {
        Some((id, digest)) if given(id) => {
            let expected = token_digest(cipher, filter, id);
            match crate::crypto::equal_in_constant_time(digest.as_bytes(), expected.as_bytes()) {
                true => Ok(id),
                false => Err(TokenRefusal::Foreign),
            }
        }
        _ => Err(TokenRefusal::Malformed),
    }
}

/// The digest a page token carries: of the list's `filter` and the id `after`, under `cipher`.
fn token_digest(cipher: &TenantCipher, filter: &str, after: &str) -> String {
    let mut digest = cipher.blind_index(&format!("page\u{0}{filter}\u{0}{after}"));
    digest.truncate(16);
    digest
}

impl<'a> Page<'a> {
    /// The whole list on one page.
    pub const ALL: Page<'static> = Page { after: None, size: usize::MAX };

    /// A list's page from its `pageSize` (see [`page_size`]) and `pageToken` (empty for the
    /// first page), for the list `filter` of the tenant of `cipher` (see [`page_token`]).
    pub fn of(page_size: i32, page_token: &'a str, filter: &str, cipher: &TenantCipher) -> Result<Self, crate::Error> {
        let size = self::page_size(page_size)?;
        if page_token.is_empty() {
            return Ok(Self { after: None, size });
        }
        match page_token_position(cipher, page_token, filter) {
            Ok(id) => Ok(Self { after: Some(id), size }),
            Err(TokenRefusal::Foreign) => Err(crate::Error::invalid(
                "pageToken",
                "is not a token this list returned with this filter: send it unchanged, with the filter of the \
                 request that returned it, or start again from the first page",
            )),
            Err(TokenRefusal::Malformed) => Err(crate::Error::invalid("pageToken", "is not a token this list gave")),
        }
    }

    /// The SQL `LIMIT` that reads the page and one more item, which tells whether more follow.
    pub fn limit_with_one_more(self) -> i64 {
        i64::try_from(self.size).unwrap_or(i64::MAX - 1) + 1
    }

    /// Cuts `items`, read with one more than the page holds, to the page; the id to go on from
    /// when more follow.
    pub fn split<T>(self, items: &mut Vec<T>, id: impl Fn(&T) -> String) -> Option<String> {
        if items.len() <= self.size {
            return None;
        }
        items.truncate(self.size);
        items.last().map(id)
    }

    /// The token of the page after the one that ended with `next`, for the list `filter` of the
    /// tenant of `cipher`; empty at the end.
    pub fn next_token(next: Option<String>, filter: &str, cipher: &TenantCipher) -> String {
        next.map(|id| page_token(cipher, filter, &id)).unwrap_or_default()
    }
}

/// A service's routes as its server answers them (health and reflection included), for a caller
/// in the same process: a call is handed to them directly, with no HTTP/2 framing and no socket
/// in between, in a `grpc.request` span as the server gives its calls. They are there while the
/// server serves; before it starts and once its shutdown begins there are none, and the server
/// does not stop before the calls made through them have ended, as it drains its own.
#[derive(Clone, Debug, Default)]
pub struct LocalEndpoint {
    routes: Arc<RwLock<Option<Routes>>>,
    calls: TaskTracker,
    /// Told each time the routes are published or withdrawn.
    changed: Arc<tokio::sync::Notify>,
}

impl LocalEndpoint {
    fn set(&self, routes: Option<Routes>) {
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = routes;
        self.changed.notify_waiters();
    }

    /// Waits until the server serves its routes here (at once when it does).
    pub async fn serving(&self) {
        loop {
            // Created before the routes are looked at: a publication in between is not missed.
            let changed = self.changed.notified();
            if self.routes.read().unwrap_or_else(PoisonError::into_inner).is_some() {
                return;
            }
            changed.await;
        }
    }

    /// Calls the service with `request`, a gRPC request as a client sends it; `None` when the
    /// service is not serving.
    pub fn call<B>(
        &self,
        request: http::Request<B>,
    ) -> Option<impl Future<Output = http::Response<tonic::body::Body>> + Send + use<B>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner).clone()?;
        let span = call_span(request.uri().path(), request.headers());
        let call = self.calls.token();
        Some(
            async move {
                let _call = call;
                match routes.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
            .instrument(span),
        )
    }
}

/// Withdraws a server's routes from its [`LocalEndpoint`] when the server stops, however it stops.
struct Withdraw(LocalEndpoint);

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// A bound gRPC listener; binding first lets `127.0.0.1:0` callers learn the port.
#[derive(Debug)]
pub struct GrpcListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    local: LocalEndpoint,
}

impl GrpcListener {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self { listener, local_addr, local: LocalEndpoint::default() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The routes this listener will serve, for callers in the same process.
    pub fn local_endpoint(&self) -> LocalEndpoint {
        self.local.clone()
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
        self.local.set(Some(routes.clone()));
        let withdraw = Withdraw(self.local.clone());

        let names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        let local = self.local.clone();
        let drain = async move {
            shutdown.wait().await;
            local.set(None);
            for service in names.iter().map(String::as_str).chain([""]) {
                health.set_service_status(service, ServingStatus::NotServing).await;
            }
        };
        tracing::info!(addr = %self.local_addr, services = %services.join(","), "gRPC server listening");
        let served = Server::builder()
            .trace_fn(|request| call_span(request.uri().path(), request.headers()))
            .add_routes(routes)
            // Small gRPC frames must not wait for the peer's delayed ACK (Nagle).
            .serve_with_incoming_shutdown(TcpIncoming::from(self.listener).with_nodelay(Some(true)), drain)
            .await;
        drop(withdraw);
        // The calls made in the process drain as the server's own did.
        self.local.calls.close();
        self.local.calls.wait().await;
        served?;
        tracing::info!(addr = %self.local_addr, "gRPC server stopped");
        Ok(())
    }
}

/// One span per call, child of the caller's span when the call carries `traceparent`.
fn call_span(path: &str, headers: &http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!("grpc.request", otel.name = %path, otel.kind = "server", rpc.system = "grpc");
    crate::trace_context::adopt_remote_parent(&span, headers);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_endpoint_answers_while_its_server_serves() {
        use http_body_util::BodyExt;

        let check = || {
            let mut request = http::Request::new(http_body_util::Full::new(bytes::Bytes::from_static(&[0; 5])));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = http::Uri::from_static("/grpc.health.v1.Health/Check");
            let headers = request.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
            headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
            request
        };
        let listener = GrpcListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let local = listener.local_endpoint();
        assert!(local.call(check()).is_none(), "no routes before the server starts");

        let serving = tokio::spawn({
            let local = local.clone();
            async move { local.serving().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!serving.is_finished(), "not serving before the server starts");

        let shutdown = Shutdown::new();
        let verifier = crate::auth::TokenSigner::generate().verifier();
        let server = tokio::spawn(listener.serve(Routes::default(), &[], verifier, shutdown.clone()));
        tokio::time::timeout(std::time::Duration::from_secs(5), serving).await.unwrap().unwrap();
        let call = local.call(check()).expect("the routes, once serving() has returned");
        let response = call.await;
        assert_eq!(response.status(), http::StatusCode::OK);
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(trailers.get("grpc-status").map(http::HeaderValue::as_bytes), Some(&b"0"[..]), "{trailers:?}");
        // SERVING: field 1 = 1, in one uncompressed, length-prefixed message.
        assert_eq!(collected.to_bytes().as_ref(), [0, 0, 0, 0, 2, 0x08, 0x01]);

        shutdown.trigger();
        server.await.unwrap().unwrap();
        assert!(local.call(check()).is_none(), "no routes once the server has stopped");
    }

    #[test]
    fn a_callers_time_is_read_from_grpc_timeout() {
        let with = |value: &str| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().unwrap());
            time_left(&metadata)
        };
        assert_eq!(with("250m"), Some(std::time::Duration::from_millis(250)));
        assert_eq!(with("5S"), Some(std::time::Duration::from_secs(5)));
        assert_eq!(with("2M"), Some(std::time::Duration::from_secs(120)));
        assert_eq!(with("99999999n"), Some(std::time::Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "250", "123456789S", "-5S", "5s", "5 S", "0m"] {
            assert_eq!(with(bad), None, "{bad:?}");
        }
        assert_eq!(time_left(&tonic::metadata::MetadataMap::new()), None);
    }

    #[test]
    fn a_page_token_goes_on_only_in_its_tenants_list_with_its_filter() {
        let (cipher, other_tenant) = (TenantCipher::new(&[1; 32]), TenantCipher::new(&[2; 32]));
        let last = "0194d2f0-0000-7000-8000-000000000001".to_owned();
        let token = Page::next_token(Some(last.clone()), "reviews\0pending", &cipher);
        let page = Page::of(5, &token, "reviews\0pending", &cipher).unwrap();
        assert_eq!((page.after, page.size), (Some(last.as_str()), 5));
        assert_eq!(Page::next_token(None, "reviews\0pending", &cipher), "", "the last page has none");
        let refused = |token: &str, filter: &str, cipher: &TenantCipher| match Page::of(0, token, filter, cipher) {
            Err(crate::Error::InvalidArgument { field, reason }) => format!("{field}: {reason}"),
            other => panic!("{token} accepted: {other:?}"),
        };
        // Another filter, another tenant, an id made up with the digest of another.
        let foreign = "pageToken: is not a token this list returned with this filter";
        assert!(refused(&token, "reviews\0decided", &cipher).starts_with(foreign));
        assert!(refused(&token, "reviews\0pending", &other_tenant).starts_with(foreign));
        let forged = token.replacen("0001", "0002", 1);
        assert!(refused(&forged, "reviews\0pending", &cipher).starts_with(foreign));
        // Not a token at all, or the id in another spelling.
        for malformed in ["x", "ffffffff-ffff-ffff-ffff-ffffffffffff", &token.to_uppercase()] {
            assert_eq!(refused(malformed, "reviews\0pending", &cipher), "pageToken: is not a token this list gave");
        }
        // Blanks around a token make it no token.
        let malformed = "pageToken: is not a token this list gave";
        assert_eq!(refused(&format!(" {token}"), "reviews\0pending", &cipher), malformed);
        assert_eq!(refused(" ", "reviews\0pending", &cipher), malformed);
        assert!(Page::of(0, "", "reviews\0pending", &cipher).unwrap().after.is_none());
    }
}
