//! A generic gRPC client: the gateway sends already-encoded request messages to the service that
//! owns the route and gets the encoded response back, without generated stubs. It speaks gRPC
//! over HTTP/2 with `h2` directly: a unary call queues its HEADERS and DATA frames together, so
//! that they usually leave in one write, and the calling task drives its own stream instead of
//! handing the request to a buffer task and a dispatch task in turn. A service running in the
//! gateway's process (`aigronova up`) is called through its routes instead, with the same
//! request and the same reading of the answer, but no HTTP/2 and no socket in between.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{
    HeaderMap, HeaderValue, Method, Request, Uri,
    header::{CONTENT_TYPE, TE, USER_AGENT},
    response,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body_util::{BodyExt, Full, Limited};
use tokio::net::TcpStream;
use tonic::{
    Code, Status,
    metadata::{MetadataMap, MetadataValue},
};

use aigronova_platform::{
    config::redacted,
    grpc::{LocalEndpoint, MAX_MESSAGE_BYTES},
};

/// The metadata key marking an `Unavailable` whose connection broke after the request was handed
/// to it: the service may have run the call, so it is not one to send again blindly.
pub(crate) const BROKEN_AFTER_SENDING: &str = "aigronova-broken-after-sending";

/// HTTP/2 flow-control windows, as hyper's clients default to.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The open connection's sender and its generation, so that a closing connection clears only
/// itself.
type Slot = Arc<Mutex<Option<(u64, SendRequest<Bytes>)>>>;

/// One HTTP/2 connection to an upstream, opened on first use and again after it closes.
#[derive(Debug)]
struct Connection {
    owner: String,
    authority: Authority,
    /// `host:port` to connect to (port 80 when the URL names none).
    address: String,
    sender: Slot,
    /// Held while connecting, so that callers waiting for the same connection open it once.
    connecting: tokio::sync::Mutex<u64>,
}

impl Connection {
    fn new(owner: &str, authority: Authority) -> Self {
        let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        Self {
            owner: owner.to_owned(),
            authority,
            address,
            sender: Arc::default(),
            connecting: tokio::sync::Mutex::new(0),
        }
    }

    fn current(&self) -> Option<(u64, SendRequest<Bytes>)> {
        self.sender.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A sender ready for a new stream, connecting first if there is no open connection, and
    /// once more if the one there turns out to be closing.
    async fn ready(&self) -> Result<SendRequest<Bytes>, Status> {
        if let Some((generation, sender)) = self.current() {
            match sender.ready().await {
                Ok(sender) => return Ok(sender),
                Err(_) => {
                    let mut slot = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
                    if slot.as_ref().is_some_and(|(current, _)| *current == generation) {
                        *slot = None;
                    }
                }
            }
        }
        let sender = self.connect().await.map_err(|error| self.unavailable(&error))?;
        sender.ready().await.map_err(|error| self.unavailable(&error))
    }

    async fn connect(&self) -> Result<SendRequest<Bytes>, anyhow::Error> {
        let mut generation = self.connecting.lock().await;
        if let Some((_, sender)) = self.current() {
            return Ok(sender);
        }
        let address = self.address.as_str();
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {address} timed out"))??;
        stream.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await?;
        *generation += 1;
        let current = *generation;
        *self.sender.lock().unwrap_or_else(PoisonError::into_inner) = Some((current, sender.clone()));
        let slot = Arc::clone(&self.sender);
        let owner = self.owner.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(upstream = %owner, %error, "upstream connection closed");
            }
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.as_ref().is_some_and(|(generation, _)| *generation == current) {
                *slot = None;
            }
        });
        Ok(sender)
    }

    /// `Unavailable`, naming the upstream only: the cause (a refused connection, a host that does
    /// not resolve, an address) is for the operators, so it is logged here, where it is dropped.
    fn unavailable(&self, cause: &dyn std::fmt::Display) -> Status {
        tracing::warn!(request_id = crate::request_id::current().unwrap_or_default(), upstream = %self.owner, error = %cause, "upstream unavailable");
        Status::unavailable(format!("{} is unavailable", self.owner))
    }

    /// An HTTP/2 error on a call, logged with its cause: a closed or refused connection is
    /// `Unavailable` (retried where the method allows it), a reset stream keeps the code its reason
    /// maps to; either way the client learns which upstream failed, not how. A connection that
    /// broke once the request was handed to it (`sent`), or that the gateway's side closed with
    /// GOAWAY (the service broke the protocol: every stream on it is reset), is marked with
    /// [`BROKEN_AFTER_SENDING`]: the service may have run the call. A stream the service refused,
    /// or that its GOAWAY left out (past the last stream it says it processed), it did not run.
    fn stream_error(&self, error: h2::Error, sent: bool) -> Status {
        if sent && (error.is_io() || error.is_go_away() && !error.is_remote()) {
            let mut status = self.unavailable(&error);
            status.metadata_mut().insert(BROKEN_AFTER_SENDING, MetadataValue::from_static("1"));
            return status;
        }
        if error.is_io() || error.is_go_away() || error.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return self.unavailable(&error);
        }
        tracing::warn!(request_id = crate::request_id::current().unwrap_or_default(), upstream = %self.owner, %error, "upstream call broken off");
        let code = Status::from_error(Box::new(error)).code();
        Status::new(code, format!("{} broke off the call", self.owner))
    }

    /// One unary call: the request's HEADERS and DATA frames are queued together; `sent` is set
    /// once the request is handed to the connection.
    async fn unary(
        &self,
        path: PathAndQuery,
        message: Bytes,
        metadata: MetadataMap,
        timeout: Duration,
        sent: &AtomicBool,
    ) -> Result<Bytes, Status> {
        let mut sender = self.ready().await?;
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|error| Status::internal(format!("bad upstream path: {error}")))?;
        let request = grpc_request(uri, metadata, timeout, ());
        let framed = frame(&message)?;
        let (response, mut stream) =
            sender.send_request(request, false).map_err(|error| self.stream_error(error, false))?;
        sent.store(true, Ordering::Relaxed);
        stream.send_data(framed, true).map_err(|error| self.stream_error(error, true))?;
        let response = response.await.map_err(|error| self.stream_error(error, true))?;
        let (parts, mut body) = response.into_parts();
        head(&self.owner, &parts)?;
        let mut received = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|error| self.stream_error(error, true))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if received.len() + chunk.len() > MAX_MESSAGE_BYTES + 5 {
                return Err(too_large(&self.owner));
            }
            received.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(|error| self.stream_error(error, true))?.unwrap_or_default();
        answer(&self.owner, &parts.headers, received.freeze(), &trailers)
    }
}

/// A service in the gateway's process, called through its routes.
#[derive(Debug)]
struct Local {
    owner: String,
    endpoint: LocalEndpoint,
}

impl Local {
    /// One unary call, the request and the answer as over HTTP/2; `sent` is set once the service
    /// has the request.
    async fn unary(
        &self,
        path: PathAndQuery,
        message: Bytes,
        metadata: MetadataMap,
        timeout: Duration,
        sent: &AtomicBool,
    ) -> Result<Bytes, Status> {
        let request = grpc_request(Uri::from(path), metadata, timeout, Full::new(frame(&message)?));
        let Some(call) = self.endpoint.call(request) else {
            tracing::warn!(
                request_id = crate::request_id::current().unwrap_or_default(),
                upstream = %self.owner,
                "upstream unavailable: the service in this process is not serving"
            );
            return Err(Status::unavailable(format!("{} is unavailable", self.owner)));
        };
        sent.store(true, Ordering::Relaxed);
        let (parts, body) = call.await.into_parts();
        head(&self.owner, &parts)?;
        let collected = Limited::new(body, MAX_MESSAGE_BYTES + 5).collect().await.map_err(|error| {
            match error.downcast::<Status>() {
                Ok(status) => *status,
                Err(error) if error.is::<http_body_util::LengthLimitError>() => too_large(&self.owner),
                Err(error) => Status::internal(format!("{} answered a broken body: {error}", self.owner)),
            }
        })?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        answer(&self.owner, &parts.headers, collected.to_bytes(), &trailers)
    }
}

/// A gRPC request for `uri` carrying `metadata` and `body`, telling the service it has `timeout`.
fn grpc_request<B>(uri: Uri, metadata: MetadataMap, timeout: Duration, body: B) -> Request<B> {
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    *headers = metadata.into_headers();
    for name in PER_CALL_FIELDS {
        if let Some(value) = headers.get_mut(name) {
            value.set_sensitive(true);
        }
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(USER_AGENT, HeaderValue::from_static(concat!("aigronova-gateway/", env!("CARGO_PKG_VERSION"))));
    let mut timeout = grpc_timeout(timeout);
    timeout.set_sensitive(true);
    headers.insert("grpc-timeout", timeout);
    request
}

/// `message` as a gRPC body: one uncompressed, length-prefixed message.
fn frame(message: &[u8]) -> Result<Bytes, Status> {
    let length = u32::try_from(message.len()).map_err(|_| Status::internal("request message too large"))?;
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(length);
    framed.put_slice(message);
    Ok(framed.freeze())
}

/// The failure an answer's head already tells: an HTTP status other than 200, or a
/// trailers-only answer whose status is not OK.
fn head(owner: &str, parts: &response::Parts) -> Result<(), Status> {
    if parts.status != http::StatusCode::OK {
        return Err(Status::new(http_code(parts.status), format!("{owner} answered HTTP {}", parts.status)));
    }
    failed(&parts.headers).map_or(Ok(()), Err)
}

/// The message of an answer whose body and trailers have been read.
fn answer(owner: &str, headers: &HeaderMap, body: Bytes, trailers: &HeaderMap) -> Result<Bytes, Status> {
    if let Some(status) = failed(trailers) {
        return Err(status);
    }
    if trailers.get("grpc-status").is_none() && headers.get("grpc-status").is_none() {
        return Err(Status::internal(format!("{owner} answered without a grpc-status")));
    }
    message_of(body)
}

fn too_large(owner: &str) -> Status {
    Status::resource_exhausted(format!("{owner} answered more than {MAX_MESSAGE_BYTES} bytes"))
}

/// Header fields whose values are new on every call (with `grpc-timeout`, the time left). They
/// are sent as never-indexed HPACK literals: indexed, each call's values would take room in both
/// ends' HPACK tables and evict the fields that are the same on every call (content type, `te`,
/// user agent, authority), which then travel as one-byte references.
const PER_CALL_FIELDS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// The status in `headers` when it is not OK.
fn failed(headers: &HeaderMap) -> Option<Status> {
    Status::from_header_map(headers).filter(|status| status.code() != Code::Ok)
}

/// The one message of a unary answer's length-prefixed body.
fn message_of(mut body: Bytes) -> Result<Bytes, Status> {
    if body.len() < 5 {
        return Err(Status::internal("the answer holds no message"));
    }
    if body[0] != 0 {
        return Err(Status::internal("the answer is compressed, which the gateway did not ask for"));
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + length {
        return Err(Status::internal(format!("the answer's frame says {length} bytes but holds {}", body.len() - 5)));
    }
    Ok(body.split_off(5))
}

/// The gRPC code for a non-200 HTTP answer (gRPC over HTTP/2, "HTTP to gRPC status code mapping").
fn http_code(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// `grpc-timeout` in the most precise unit that fits its eight digits.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    let limit = 99_999_999_u128;
    let value = [
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (u128::from(timeout.as_secs()), 'S'),
        (u128::from(timeout.as_secs() / 60), 'M'),
    ]
    .into_iter()
    .find(|(value, _)| *value <= limit)
    .map_or_else(|| format!("{limit}H"), |(value, unit)| format!("{value}{unit}"));
    HeaderValue::try_from(value).expect("digits and a unit")
}

/// How the gateway reaches one upstream service.
#[derive(Debug)]
enum Upstream {
    /// Lazily connected HTTP/2 connections, one per core, taken in turn, so that requests in
    /// flight on different cores do not all wait on one connection's state.
    Remote(Vec<Connection>),
    /// The service runs in this process.
    Local(Local),
}

/// Each upstream service, by owner name.
#[derive(Clone, Debug)]
pub(crate) struct Upstreams {
    /// Shared: the state every request clones holds this map.
    connections: Arc<BTreeMap<String, Upstream>>,
    next: Arc<AtomicUsize>,
    /// Deadline of a health check.
    timeout: Duration,
}

impl Upstreams {
    /// `addresses` maps an owner name (`healthquantum`) to its URL (`http://127.0.0.1:50061`);
    /// an owner in `in_process` is called through its routes instead.
    pub(crate) fn new(
        addresses: &BTreeMap<String, String>,
        in_process: &BTreeMap<String, LocalEndpoint>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        let mut connections = BTreeMap::new();
        for (owner, url) in addresses {
            let uri: Uri = url.parse().map_err(|error| anyhow::anyhow!("gateway.upstreams.{owner}: {error}"))?;
            if uri.scheme() != Some(&Scheme::HTTP) {
                anyhow::bail!("gateway.upstreams.{owner}: the gateway speaks gRPC over plaintext HTTP/2, use http://");
            }
            let authority = uri
                .authority()
                .ok_or_else(|| anyhow::anyhow!("gateway.upstreams.{owner}: {:?} names no host", redacted(url)))?;
            let remote = (0..count).map(|_| Connection::new(owner, authority.clone())).collect();
            connections.insert(owner.clone(), Upstream::Remote(remote));
        }
        for (owner, endpoint) in in_process {
            let local = Local { owner: owner.clone(), endpoint: endpoint.clone() };
            connections.insert(owner.clone(), Upstream::Local(local));
        }
        Ok(Self { connections: Arc::new(connections), next: Arc::default(), timeout })
    }

    pub(crate) fn owners(&self) -> impl Iterator<Item = &String> {
        self.connections.keys()
    }

    /// Calls `path` on `owner` with `message`, telling the upstream it has `timeout` to answer;
    /// sets `sent` once the request has left for the upstream (a connection ready, a stream open).
    pub(crate) async fn unary(
        &self,
        owner: &str,
        path: PathAndQuery,
        message: Bytes,
        metadata: MetadataMap,
        timeout: Duration,
        sent: &AtomicBool,
    ) -> Result<Bytes, Status> {
        match self.connections.get(owner) {
            Some(Upstream::Remote(connections)) => {
                let connection = &connections[self.next.fetch_add(1, Ordering::Relaxed) % connections.len()];
                connection.unary(path, message, metadata, timeout, sent).await
            }
            Some(Upstream::Local(local)) => local.unary(path, message, metadata, timeout, sent).await,
            None => Err(Status::unavailable(format!("no upstream configured for {owner}"))),
        }
    }

    /// What `owner` answers on `grpc.health.v1` to a check that carries `token`, the gateway's
    /// internal token: a service that does not take the gateway's key refuses it; one that does
    /// not answer within [`HEALTH_CHECK_TIMEOUT`] (or the upstream timeout, if shorter) is down.
    pub(crate) async fn health(&self, owner: &str, token: &str) -> Health {
        // An empty HealthCheckRequest asks about the whole server; SERVING encodes as field 1 = 1.
        let check = PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let mut metadata = MetadataMap::new();
        aigronova_platform::auth::attach_token(&mut metadata, token);
        let deadline = HEALTH_CHECK_TIMEOUT.min(self.timeout);
        let sent = AtomicBool::new(false);
        let call = self.unary(owner, check, Bytes::new(), metadata, deadline, &sent);
        let Ok(answer) = tokio::time::timeout(deadline, call).await else {
            tracing::warn!(
                upstream = owner,
                deadline_ms = deadline.as_millis(),
                "the upstream's health check went unanswered"
            );
            return Health::Unavailable;
        };
        match answer {
            Ok(response) if response.as_ref() == [0x08, 0x01] => Health::Serving,
            Err(status) if status.code() == Code::Unauthenticated => {
                tracing::warn!(
                    upstream = owner,
                    reason = status.message(),
                    "the upstream refuses the gateway's internal token: its internal_auth.verifying_key is not the \
                     pair of the gateway's internal_auth.signing_key"
                );
                Health::RefusesToken
            }
            Ok(_) | Err(_) => Health::Unavailable,
        }
    }
}

/// How long `/readyz` waits for each upstream's health check (and the database's ping): well
/// within a readiness probe's timeout (3 s in the Helm chart), all of them at once.
pub(crate) const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What an upstream answers to the gateway's health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Serving,
    /// Down, unreachable, or NOT_SERVING.
    Unavailable,
    /// It answers, but refuses the gateway's internal token.
    RefusesToken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_takes_the_most_precise_unit_of_eight_digits() {
        for (timeout, expected) in [
            (Duration::from_millis(500), "500000u"),
            (Duration::from_secs(10), "10000000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(200_000), "200000S"),
            (Duration::from_secs(200_000_000), "3333333M"),
        ] {
            assert_eq!(grpc_timeout(timeout), expected, "{timeout:?}");
        }
    }

    #[test]
    fn an_answer_is_one_length_prefixed_uncompressed_message() {
        let framed = |flag: u8, declared: u32, message: &[u8]| {
            let mut body = vec![flag];
            body.extend_from_slice(&declared.to_be_bytes());
            body.extend_from_slice(message);
            Bytes::from(body)
        };
        assert_eq!(message_of(framed(0, 2, b"\x08\x01")).unwrap(), Bytes::from_static(b"\x08\x01"));
        assert_eq!(message_of(framed(0, 0, b"")).unwrap(), Bytes::new());
        for (body, reason) in [
            (Bytes::from_static(b"\0\0"), "no message"),
            (framed(1, 2, b"\x08\x01"), "compressed"),
            (framed(0, 3, b"\x08\x01"), "says 3 bytes but holds 2"),
            (framed(0, 1, b"\x08\x01"), "says 1 bytes but holds 2"),
        ] {
            let status = message_of(body).unwrap_err();
            assert_eq!(status.code(), Code::Internal);
            assert!(status.message().contains(reason), "{status:?}");
        }
    }

    #[test]
    fn http_answers_map_to_grpc_codes_as_the_protocol_says() {
        for (status, code) in [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
        ] {
            assert_eq!(http_code(http::StatusCode::from_u16(status).unwrap()), code, "{status}");
        }
    }

    #[test]
    fn an_upstream_must_be_plaintext_http_with_a_host() {
        let upstreams = |url: &str| {
            Upstreams::new(
                &[("healthquantum".to_owned(), url.to_owned())].into(),
                &BTreeMap::new(),
                Duration::from_secs(1),
            )
        };
        assert!(upstreams("http://127.0.0.1:50061").is_ok());
        let https = upstreams("https://127.0.0.1:50061").unwrap_err().to_string();
        assert!(https.contains("use http://"), "{https}");
        let hostless = upstreams("/healthquantum").unwrap_err().to_string();
        assert!(hostless.contains("use http://"), "{hostless}");
        let portless = upstreams("http://healthquantum").unwrap();
        let Upstream::Remote(connections) = &portless.connections["healthquantum"] else { panic!("a remote upstream") };
        assert_eq!(connections[0].address, "healthquantum:80");
    }

    #[tokio::test]
    async fn an_upstream_that_refuses_connections_is_unavailable() {
        // A port that was just free: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let upstreams = Upstreams::new(
            &[("healthquantum".to_owned(), format!("http://127.0.0.1:{port}"))].into(),
            &BTreeMap::new(),
            Duration::from_secs(1),
        )
        .unwrap();
        let path = PathAndQuery::from_static("/aigronova.health.v1.HealthQuantum/ListModels");
        let status = upstreams
            .unary(
                "healthquantum",
                path,
                Bytes::new(),
                MetadataMap::new(),
                Duration::from_secs(1),
                &AtomicBool::new(false),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "healthquantum is unavailable", "the cause is logged, not told");
    }

    #[tokio::test]
    async fn a_service_in_the_process_is_called_through_its_routes_while_it_serves() {
        use aigronova_platform::{
            auth::{Caller, TokenSigner},
            grpc::GrpcListener,
            shutdown::Shutdown,
        };

        let listener = GrpcListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        // The URL leads nowhere: only a call through the routes can be answered.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let upstreams = Upstreams::new(
            &[("healthquantum".to_owned(), format!("http://127.0.0.1:{port}"))].into(),
            &[("healthquantum".to_owned(), listener.local_endpoint())].into(),
            Duration::from_secs(1),
        )
        .unwrap();
        let signer = TokenSigner::generate();
        let token = signer.mint(&Caller { tenant_id: "t".into(), subject: "gateway".into(), scopes: Vec::new() });
        assert_eq!(upstreams.health("healthquantum", &token).await, Health::Unavailable, "not serving yet");

        let shutdown = Shutdown::new();
        let server =
            tokio::spawn(listener.serve(tonic::service::Routes::default(), &[], signer.verifier(), shutdown.clone()));
        let mut health = Health::Unavailable;
        for _ in 0..100 {
            health = upstreams.health("healthquantum", &token).await;
            if health == Health::Serving {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(health, Health::Serving);
        let foreign =
            TokenSigner::generate().mint(&Caller { tenant_id: "t".into(), subject: "x".into(), scopes: Vec::new() });
        assert_eq!(
            upstreams.health("healthquantum", &foreign).await,
            Health::RefusesToken,
            "the service's interceptors run"
        );

        shutdown.trigger();
        server.await.unwrap().unwrap();
        assert_eq!(upstreams.health("healthquantum", &token).await, Health::Unavailable, "stopped");
    }
}
