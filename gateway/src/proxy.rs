//! The transcoding handler every annotated route goes through, the probes, and the access log.

use std::{
    borrow::Cow,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, atomic::AtomicBool},
    task::Poll,
    time::{Duration, Instant},
};

use aigronova_platform::{auth::Caller, trace_context};
use axum::{
    Json,
    body::{Body, Bytes},
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures_util::FutureExt;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing::Instrument;

use crate::{
    AppState, auth, decompress, open_inference,
    problem::Problem,
    request_id,
    resilience::{self, BodyRoom, CallPolicy},
    routes::Lookup,
    store::{ADMIN_SCOPE, METRICS_SCOPE, Plan},
    transcode,
    upstream::Health,
};

/// Liveness: the process answers.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The Open Inference Protocol's liveness, `GET /v2/health/live`: the process answers.
pub(crate) async fn inference_live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"live": true}))
}

/// The Open Inference Protocol's readiness, `GET /v2/health/ready`: `/readyz`'s, in its words.
pub(crate) async fn inference_ready(State(state): State<AppState>) -> Response {
    let response = readyz(State(state)).await;
    let ready = response.status() == StatusCode::OK;
    (response.status(), Json(serde_json::json!({"ready": ready}))).into_response()
}

/// The Open Inference Protocol's server metadata, `GET /v2`.
pub(crate) async fn inference_server() -> Json<serde_json::Value> {
    Json(
        serde_json::json!({"name": "aigronova", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
}

/// How long a readiness found answers `/readyz`: probes from every load balancer and a flood of
/// unauthenticated calls alike reach the database, Redis and the upstreams at most once a second.
const READINESS_KEPT: Duration = Duration::from_secs(1);

/// A readiness found, and when.
pub(crate) struct Readiness {
    found: Instant,
    status: StatusCode,
    body: serde_json::Value,
}

/// Readiness: the gateway's database and every upstream answer. Found once for every probe that
/// arrives while it is being found, and kept for [`READINESS_KEPT`].
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let mut kept = state.readiness.lock().await;
    let fresh = kept.as_ref().filter(|readiness| readiness.found.elapsed() < READINESS_KEPT);
    let readiness = match fresh {
        Some(readiness) => readiness,
        None => kept.insert(readiness(&state).await),
    };
    (readiness.status, Json(readiness.body.clone())).into_response()
}

async fn readiness(state: &AppState) -> Readiness {
    // Every check at once, each within its own deadline, well within a readiness probe's: one
    // part that hangs (a database, an upstream that accepts connections and answers nothing) is
    // reported as down rather than holding the answer.
    let token = state.signer.mint_reusable(&aigronova_platform::auth::Caller::service("gateway", "readiness"));
    let database = async {
        matches!(
            tokio::time::timeout(crate::upstream::HEALTH_CHECK_TIMEOUT, state.store.database().ping()).await,
            Ok(Ok(_))
        )
    };
    let checks = futures_util::future::join_all(
        state.upstreams.owners().map(|owner| async { (owner.clone(), state.upstreams.health(owner, &token).await) }),
    );
    let (database, checks, rate_limits) = tokio::join!(database, checks, state.limiter.readiness());
    let mut upstreams = serde_json::Map::new();
    let mut refused = 0;
    for (owner, health) in checks {
        refused += usize::from(health == Health::RefusesToken);
        upstreams.insert(owner, (health == Health::Serving).into());
    }
    // With Redis and `redis_failure = "closed"`, a replica that cannot reach Redis refuses every
    // tenant call: not ready, so that a load balancer sends them elsewhere. An upstream that is
    // down is every replica's problem, which the circuit breakers answer for its routes alone:
    // reported, it leaves the gateway ready, so that the other services stay reachable. Every
    // upstream refusing the gateway's token is this replica's key: not ready.
    let own_key_refused = !upstreams.is_empty() && refused == upstreams.len();
    let limits_refuse = rate_limits == Some(false) && state.limiter.fails_closed();
    let ready = database && !limits_refuse && !own_key_refused;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::json!({"ready": ready, "database": database, "upstreams": upstreams});
    if let Some(rate_limits) = rate_limits {
        body["rateLimits"] = rate_limits.into();
    }
    Readiness { found: Instant::now(), status, body }
}

/// Refuses a query parameter on a probe (`/healthz`, `/readyz`), which takes none, as the other
/// routes refuse what they do not take. A body is not looked at: a health checker that sends an
/// empty one (an HTTP/2 stream left open, an empty chunked body) is answered as any.
pub(crate) async fn takes_nothing(request: Request, next: Next) -> Response {
    let route = format!("{} {}", request.method(), request.uri().path());
    match crate::admin::no_query(&request, &route) {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
}

/// The 405 of one of the gateway's own routes (its `Allow` header, which axum sets, lists the
/// methods the route takes), in the words of the services' routes' 405.
pub(crate) async fn method_not_allowed(method: Method, route: Option<MatchedPath>) -> Problem {
    let methods = route.as_ref().map(|route| crate::openapi::own_route_methods(route.as_str())).unwrap_or_default();
    let detail = match route {
        Some(route) if !methods.is_empty() => {
            format!("{method} is not a method of {}; it takes {}", route.as_str(), methods.join(", "))
        }
        Some(route) => format!("{method} is not a method of {}; the Allow header lists those it takes", route.as_str()),
        None => format!("{method} is not a method of this path; the Allow header lists those it takes"),
    };
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, detail)
}

/// What the access log and the metrics learn about a request once it is routed.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestFacts {
    pub(crate) route: Option<String>,
    pub(crate) tenant_id: Option<String>,
    /// `RateLimit-Policy` and `RateLimit` fields, sent with the answer whatever it is.
    pub(crate) rate_limit: HeaderMap,
}

/// `GET /metrics`: for keys with the `metrics:read` or `admin` scope; no query parameter, asked
/// once the caller is known.
pub(crate) async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    let mut facts = RequestFacts::default();
    let refused = crate::admin::no_query(&request, "GET /metrics").err();
    let mut response = match scrape(&state, request.headers(), refused, &mut facts).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    response.extensions_mut().insert(facts);
    response
}

async fn scrape(
    state: &AppState,
    headers: &HeaderMap,
    refused: Option<Problem>,
    facts: &mut RequestFacts,
) -> Result<Response, Problem> {
    let principal = auth::authenticate(state, headers).await?;
    // A tenant's scraper is refused with its tenant suspended, as its other keys are, and logged
    // with its tenant; an administrator's has none.
    if principal.tenant_id.is_some() {
        facts.tenant_id.clone_from(&principal.tenant_id);
        auth::require_tenant(&principal, METRICS_SCOPE)?;
    }
    if !principal.has_scope(ADMIN_SCOPE) {
        auth::require_scope(&principal, METRICS_SCOPE)?;
    }
    if let Some(problem) = refused {
        return Err(problem);
    }
    Ok(crate::metrics::render(principal.tenant_id.as_deref()).await)
}

/// Every route from the descriptor set: authenticate, check the scope, transcode, call, answer.
pub(crate) async fn transcode(State(state): State<AppState>, request: Request) -> Response {
    let mut facts = RequestFacts::default();
    let mut response = match call_route(&state, request, &mut facts).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    response.headers_mut().extend(std::mem::take(&mut facts.rate_limit));
    response.extensions_mut().insert(facts);
    response
}

async fn call_route(state: &AppState, request: Request, facts: &mut RequestFacts) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let matched = match state.routes.lookup(&parts.method, parts.uri.path()) {
        Lookup::Found(matched) => matched,
        Lookup::MethodNotAllowed(allowed, template) => {
            // Counted under the route it is a wrong method of.
            facts.route = Some(template.to_owned());
            let allow = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(",");
            let detail =
                format!("{} is not a method of {template}; it takes {}", parts.method, allow.replace(',', ", "));
            let mut response = Problem::new(StatusCode::METHOD_NOT_ALLOWED, detail).into_response();
            if let Ok(allow) = HeaderValue::try_from(allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return Ok(response);
        }
        Lookup::NotFound if percent_encoding::percent_decode_str(parts.uri.path()).decode_utf8().is_err() => {
            return Err(Problem::bad_request("the path is not percent-encoded UTF-8 (RFC 3986)"));
        }
        // The path is the problem's `instance` already: not repeated (it may hold whatever was typed).
        Lookup::NotFound => {
            // One trailing slash from a route that takes the method, services' and the gateway's own
            // alike; not after a `.` or `..` segment, which names no resource.
            let dot = |segment: &str| {
                let segment = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
                segment == "." || segment == ".."
            };
            let trimmed = parts
                .uri
                .path()
                .strip_suffix('/')
                .filter(|trimmed| !trimmed.is_empty() && !trimmed.split('/').any(dot));
            let route = trimmed.and_then(|trimmed| match state.routes.lookup(&parts.method, trimmed) {
                Lookup::Found(matched) => Some(matched.route.template.to_string()),
                _ => crate::openapi::own_route_template(trimmed)
                    .filter(|template| {
                        let method = if parts.method == Method::HEAD { "GET" } else { parts.method.as_str() };
                        crate::openapi::own_route_methods(template).contains(&method)
                    })
                    .map(str::to_owned),
            });
            let detail = match route {
                Some(template) => format!("no route has this path; without its trailing slash it is {template}"),
                None => "no route has this path; GET /openapi.json lists them".to_owned(),
            };
            return Err(Problem::not_found(detail));
        }
    };
    let route = matched.route;
    facts.route = Some(route.template.clone());
    let principal = auth::authenticate(state, &parts.headers).await?;
    // Logged with its tenant, suspended or not.
    facts.tenant_id.clone_from(&principal.tenant_id);
    let tenant_id = auth::require_tenant(&principal, &route.scope)?;
    auth::require_scope(&principal, &route.scope)?;
    let policy = CallPolicy::of(route, &parts.headers)?;
    let content_type = transcode::content_type(&parts.headers)?;
    transcode::check_raw_media_type(route, content_type)?;
    // A JSON body of another media type, or a body in a coding not decoded here, is refused
    // before it spends any of the tenant's rate.
    if !route.body.is_empty() && declares_body(&body) {
        // An inference whose tensors' bytes follow its JSON (the binary data extension) may say so.
        let binary = route.by_model.is_some()
            && parts.headers.contains_key(open_inference::BINARY_HEADER)
            && content_type.is_some_and(is_octet_stream);
        if !route.raw_body && !binary {
            transcode::json_media_type(content_type)?;
        }
        crate::decompress::check_codings(&parts.headers)?;
    }
    let limits = state.plans.limits(principal.tenant_plan.unwrap_or(Plan::Starter));
    // The tenant's slot first: a request refused for its tenant's requests in flight spends
    // nothing of its rate.
    let mut slot = state.resilience.enter_tenant(tenant_id)?;
    // A model call whose tenant has used up its monthly quota is refused before it spends any of
    // the rate (a client retrying past its quota leaves the rate to the tenant's other calls).
    state.limiter.refuse_used_up_quota(route.inference, tenant_id, limits, &mut facts.rate_limit).await?;
    state.limiter.admit(tenant_id, &principal.key_id, limits, &mut facts.rate_limit).await?;
    let mut room = slot.body_room(limits.max_body_bytes);
    room.reserve(body_bound(&body, &parts.headers, limits.max_body_bytes)?)?;
    let body = read_body(body, &parts.headers, limits.max_body_bytes, state.body_timeout, &mut room).await?;
    let (request_message, rows, binary) = match route.by_model {
        Some(_) => {
            let prepared = open_inference::request(&matched, &parts.headers, parts.uri.query(), &body)?;
            (prepared.encoded, prepared.rows, prepared.binary)
        }
        None => (
            transcode::encode(&transcode::request_message(&matched, parts.uri.query(), &body, content_type)?),
            1,
            open_inference::BinaryOutputs::default(),
        ),
    };

    let caller =
        Caller { tenant_id: tenant_id.to_owned(), subject: principal.key_id.clone(), scopes: principal.scopes.clone() };
    let mut metadata = MetadataMap::new();
    aigronova_platform::auth::attach_token(&mut metadata, &state.signer.mint_reusable(&caller));
    if let Some(id) = request_id::current().and_then(|id| MetadataValue::try_from(id).ok()) {
        metadata.insert("x-request-id", id);
    }
    let path = route.grpc_path();
    let span = tracing::info_span!(
        "grpc.client",
        otel.name = %path,
        otel.kind = "client",
        rpc.system = "grpc",
        otel.status_code = tracing::field::Empty,
    );
    trace_context::inject_span(&span, &mut metadata);
    // A route every service with models serves goes to the service of the model its path names.
    let owner = match route.by_model {
        Some(_) => {
            let model = open_inference::model_of(&matched);
            let owners = &state.model_owners;
            Cow::Owned(
                owners.owner(&state.upstreams, &state.resilience, model, &metadata, policy.client_deadline).await?,
            )
        }
        None => Cow::Borrowed(route.owner.as_str()),
    };
    // The quota is reserved last, so that a request refused for its body spends none of it: a unit
    // a row the model call scores.
    let units = if route.inference { rows } else { 0 };
    let quota = state.limiter.reserve_inference(units, tenant_id, limits, &mut facts.rate_limit).await?;
    // While the call is out only the message sent is held, and its room is trimmed to it (its
    // growth reserved ahead of a body of unknown length is given back).
    drop(body);
    room.trim_to(request_message.len());
    let sent = AtomicBool::new(false);
    let result = state
        .resilience
        .call(&owner, policy, |timeout| {
            let target = route.grpc_target().clone();
            state.upstreams.unary(&owner, target, request_message.clone(), metadata.clone(), timeout, &sent)
        })
        .instrument(span.clone())
        .await;
    // A call that did not end OK is an error for its client, whatever the gateway answers.
    if result.is_err() {
        span.record("otel.status_code", "error");
    }
    quota.settle(may_have_run(sent.into_inner(), &result), &mut facts.rate_limit).await;
    let encoded = result?;
    let mut response = match route.by_model {
        Some(_) => open_inference::response(&matched, encoded, &binary)?,
        None => transcode::response(route, encoded)?,
    };
    if let Some(disposition) = document_disposition(parts.uri.path(), response.headers()) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}

/// A PDF or an image is shown in place, with a name to save it under made of its path's last two
/// segments and its type's extension (`…/assessments/{id}/report` → `{id}-report.pdf`,
/// `…/statements/2026-10` → `statements-2026-10.pdf`, `…/images/{id}` → `images-{id}.jpg`,
/// `…/images/{id}/thumbnail` → `{id}-thumbnail.png`), each kept to letters, digits, dots, dashes
/// and underscores.
fn document_disposition(path: &str, headers: &HeaderMap) -> Option<HeaderValue> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let extension = match essence.as_str() {
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "application/dicom" => "dcm",
        _ => return None,
    };
    // An id in any spelling the services take (`{…}`, `urn:uuid:…`, capitals, escaped) is named
    // as the services write it.
    let segments: Vec<String> = path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            uuid::Uuid::parse_str(&decoded).map_or_else(|_| segment.to_owned(), |id| id.hyphenated().to_string())
        })
        .collect();
    let name: String = segments[segments.len().saturating_sub(2)..]
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    HeaderValue::from_str(&format!("inline; filename=\"{name}.{extension}\"")).ok()
}

/// Whether `content_type` is `application/octet-stream`, whatever its parameters.
fn is_octet_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/octet-stream"))
}

/// Whether a model call keeps its units of quota: when the service answered OK, and when its
/// deadline passed or its connection broke while the call was out, as the service may have run
/// the model and stored the result without the gateway hearing back. A call the service refused
/// or failed, or that never left (its circuit open, its deadline gone first), gives its units back.
fn may_have_run<T>(sent: bool, result: &Result<T, Problem>) -> bool {
    match result {
        Ok(_) => true,
        Err(problem) => sent && (problem.status() == StatusCode::GATEWAY_TIMEOUT || problem.may_have_taken_effect()),
    }
}

/// Whether the request says it has a body: one not over at its head, with no `Content-Length: 0`.
fn declares_body(body: &Body) -> bool {
    use http_body::Body as _;
    !body.is_end_stream() && body.size_hint().exact() != Some(0)
}

/// The bytes `body` will take in memory once read, when known before it is: its length when it
/// declares one and is not compressed, none when it has ended already (a GET); none either for a
/// body whose size is known only as it is read, whose room grows as it arrives. 413 when its
/// length is known to be over `limit`.
fn body_bound(body: &Body, headers: &HeaderMap, limit: usize) -> Result<usize, Problem> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(0);
    }
    match declared_length(body, limit)? {
        Some(length) if !headers.contains_key(header::CONTENT_ENCODING) => Ok(length),
        _ => Ok(0),
    }
}

/// The length `body` declares (its `Content-Length`), if any; 413 when it is over `limit`.
fn declared_length(body: &Body, limit: usize) -> Result<Option<usize>, Problem> {
    use http_body::Body as _;
    match body.size_hint().exact().map(|length| usize::try_from(length).unwrap_or(usize::MAX)) {
        Some(length) if length > limit => Err(decompress::too_large(limit)),
        declared => Ok(declared),
    }
}

/// The slowest a request body may arrive on average, once its first idle timeout has passed.
const MIN_BODY_BYTES_PER_SEC: usize = 64 * 1024;

/// The request body, decoded as its `Content-Encoding` says, its memory held in `room` as it grows,
/// and refused with 413 past `limit` bytes before or after decoding, with 503 when `room` has no
/// more, and with 408 when no part of it arrives for `idle` or when the
/// whole of it (its `Content-Length`, or `limit`) takes longer than `idle` and the time it takes
/// at [`MIN_BODY_BYTES_PER_SEC`]: a client sending a byte now and then holds no slot for long.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    idle: std::time::Duration,
    room: &mut dyn BodyRoom,
) -> Result<Bytes, Problem> {
    let declared = declared_length(&body, limit)?;
    let stalled = Arc::new(AtomicBool::new(false));
    let body = decompress::with_idle_timeout(body, idle, stalled.clone());
    // Rounded up: a body of any length takes some time, so one that stalls from its start meets
    // `idle` a second before the whole allowance, and is told so.
    let at_rate = declared.unwrap_or(limit).div_ceil(MIN_BODY_BYTES_PER_SEC);
    let whole = idle + std::time::Duration::from_secs(at_rate as u64);
    let read = tokio::time::timeout(whole, decompress::read(body, headers, limit, room)).await;
    let detail = match read {
        Ok(_) if stalled.load(std::sync::atomic::Ordering::Relaxed) => {
            format!("no part of the request body arrived for {} s", idle.as_secs())
        }
        Ok(read) => return read,
        Err(_) => format!(
            "the request body did not arrive within {} s, at {} KiB/s at least after its first {} s",
            whole.as_secs(),
            MIN_BODY_BYTES_PER_SEC / 1024,
            idle.as_secs()
        ),
    };
    Err(Problem::new(StatusCode::REQUEST_TIMEOUT, detail))
}

/// `request` with the percent-escapes of unreserved characters in its path decoded before it is
/// routed (RFC 3986 §6.2.2.2: `/%6Fpenapi.json` is `/openapi.json`), so that every route, the
/// gateway's own as the services', is found under either spelling. Other escapes (`%2F`) stay.
pub(crate) fn unescape_unreserved(mut request: Request) -> Request {
    let uri = request.uri();
    // A target over the limit is left as sent, to be refused at its own length.
    if !uri.path().contains('%') || uri.path_and_query().is_some_and(|target| target.as_str().len() > MAX_URI_BYTES) {
        return request;
    }
    let Some(path) = decode_unreserved(uri.path()) else { return request };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = axum::http::uri::PathAndQuery::try_from(target).ok();
    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// `path` with `%XX` decoded where `XX` is an unreserved character (a letter, a digit, `-._~`);
/// `None` when it has none, or when a `%` is not followed by two hex digits (the path is then
/// left as sent, rather than decoded into escapes it did not hold).
fn decode_unreserved(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let hex = |byte: Option<&u8>| byte.and_then(|byte| char::from(*byte).to_digit(16));
    let mut decoded = Vec::with_capacity(bytes.len());
    let (mut at, mut changed) = (0, false);
    while at < bytes.len() {
        if bytes[at] != b'%' {
            decoded.push(bytes[at]);
            at += 1;
            continue;
        }
        let (high, low) = (hex(bytes.get(at + 1))?, hex(bytes.get(at + 2))?);
        let byte = u8::try_from(high * 16 + low).ok()?;
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            decoded.push(byte);
            changed = true;
        } else {
            decoded.extend_from_slice(&bytes[at..at + 3]);
        }
        at += 3;
    }
    // Bytes other than the escapes are copied as they came: the path stays the UTF-8 it was.
    changed.then(|| String::from_utf8(decoded).ok()).flatten()
}

/// Paths whose answers caches may keep: the API's description, the same for every caller. Every
/// other answer is one caller's at one moment (a patient, a key shown once, a problem).
const CACHEABLE_PATHS: [&str; 2] = ["/openapi.json", "/docs"];

/// Every request's way in and out, in one middleware: its id (see [`request_id`]), a span that
/// continues the caller's W3C trace, load shedding, metrics, one JSON access log line, and
/// `X-Content-Type-Options: nosniff` and `Cache-Control: no-store` on the answer.
pub(crate) async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // Measured as the client sent it, before the request id the gateway may add.
    let refused = refused_early(&request);
    // A body in a transfer coding not read is left unread.
    let unread_coding = refused.as_ref().is_some_and(|problem| problem.status() == StatusCode::NOT_IMPLEMENTED);
    let (id, id_value) = request_id::adopt(&mut request);
    let path = request.uri().path().to_owned();
    let preflight = crate::cors::is_preflight(&request);
    let http1 = request.version() < axum::http::Version::HTTP_2;
    let cacheable_path = CACHEABLE_PATHS.contains(&path.as_str());
    let info = request_id::RequestInfo { id, path, principal: Arc::default() };
    let panicked = info.clone();
    // Handled in place, and finished on a task of its own if the client goes away first: a call is
    // never cut short, so a write the service made is never left without its access log line and
    // metrics.
    let token = state.requests.token();
    let handled = Detaching::new(
        request_id::CURRENT.scope(info, async move { access_log(&state, request, next, refused).await }),
        token,
        id_value.clone(),
    );
    let mut response = handled
        .await
        .unwrap_or_else(|| request_id::CURRENT.sync_scope(panicked, || Problem::internal().into_response()));
    let status = response.status();
    let headers = response.headers_mut();
    headers.insert(request_id::HEADER, id_value);
    // Answers are the media type they say: a browser does not guess another (an uploaded
    // image, a report).
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // A body given up on (too slow, too large, in a coding not read) is not read to its end: the connection closes
    // after the answer, and the answer says so (RFC 9110 section 15.5.9).
    if http1 && (matches!(status, StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE) || unread_coding) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // Neither a browser nor a shared cache keeps personal data or a key shown once; an answer
    // that says how it may be cached (a service's raw body) keeps its own word. The CORS layer's
    // answer to a preflight holds nothing, and browsers keep it for its `Access-Control-Max-Age`;
    // a refusal of one (no CORS here, no such route) is kept by nobody.
    let answered_preflight = preflight && headers.contains_key(header::ACCESS_CONTROL_ALLOW_METHODS);
    if !cacheable_path && !answered_preflight && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A request's handling, polled in place by its connection, which, dropped before it is done (the
/// client went away), is finished on a task of the gateway's tracker; `None` when it
/// panicked. It holds a token of the tracker from the start, so that shutdown waits for it whether
/// it is handled in place or detached: an HTTP/2 request runs on a task of hyper's that may outlive
/// its connection.
struct Detaching<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    inner: Option<Pin<Box<F>>>,
    /// `None` once detached: a detached handling is not detached again.
    token: Option<TaskTrackerToken>,
    request_id: HeaderValue,
}

impl<F: Future + Send + 'static> Detaching<F>
where
    F::Output: Send + 'static,
{
    fn new(inner: F, token: TaskTrackerToken, request_id: HeaderValue) -> Self {
        Self { inner: Some(Box::pin(inner)), token: Some(token), request_id }
    }
}

impl<F: Future + Send + 'static> Future for Detaching<F>
where
    F::Output: Send + 'static,
{
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, context: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let output = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(context))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Some(output),
            Err(_) => {
                let request_id = self.request_id.to_str().unwrap_or_default();
                tracing::error!(request_id, "request handling panicked");
                None
            }
        };
        self.inner = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Detaching<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let (Some(inner), Some(token)) = (self.inner.take(), self.token.take()) else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let request_id = self.request_id.clone();
            let detached = Detaching { inner: Some(inner), token: None, request_id };
            token.task_tracker().spawn_on(detached, &runtime);
        }
        // Released only now that the detached task holds the tracker.
        drop(token);
    }
}

/// The method as metrics, spans and the log name it: one of HTTP's own, or `_OTHER`, as
/// OpenTelemetry's HTTP conventions say, so that a client inventing methods cannot add series.
fn method_name(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN.iter().find(|known| *known == method).map_or("_OTHER", |known| known.as_str())
}

/// The longest request target the gateway reads: no route takes more than a few hundred bytes.
const MAX_URI_BYTES: usize = 8 * 1024;

/// The largest header section the gateway reads, counted as HTTP/2 counts a header list (each
/// field's name and value and 32 bytes, RFC 9113 §6.5.2), so that both protocols have one limit.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The problem for a request whose target is no path (400), or whose target or header section is
/// over the gateway's limits: 414 or 431 as a problem document, where the HTTP server's own, far
/// larger limits answer without one.
fn refused_early(request: &Request) -> Option<Problem> {
    // Every route is a path: a request target in authority or asterisk form (`healthz`, `*`)
    // names none (RFC 9112 §3.2).
    if !request.uri().path().starts_with('/') {
        return Some(Problem::bad_request("the request target must be a path starting with / (RFC 9112 §3.2)"));
    }
    // An HTTP/1.1 request names its host in exactly one Host field (RFC 9112 §3.2).
    if request.version() == axum::http::Version::HTTP_11 && request.headers().get_all(header::HOST).iter().count() != 1
    {
        return Some(Problem::bad_request("an HTTP/1.1 request names its host in one Host field (RFC 9112 §3.2)"));
    }
    if request.headers().get(header::HOST).is_some_and(|host| !is_host_field(host)) {
        return Some(Problem::bad_request(
            "the Host field must be a host and an optional port, `api.example.com:443`, or empty (RFC 9112 §3.2)",
        ));
    }
    // Chunked is the one transfer coding read (RFC 9112 §6.1): a compressed body says so in
    // Content-Encoding, which the gateway inflates within the body limit.
    let unknown_coding = request
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("chunked"));
    if let Some(coding) = unknown_coding {
        let coding: String = coding.chars().take(40).collect();
        return Some(Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "the transfer coding {coding:?} is not implemented: send the body as it is or chunked, and a \
                 compressed one with Content-Encoding (gzip, deflate or br)"
            ),
        ));
    }
    let target = request.uri().path_and_query().map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(Problem::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target} bytes; the gateway reads at most {MAX_URI_BYTES}"),
        ));
    }
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 32).sum();
    (headers > MAX_HEADER_BYTES).then(|| {
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the header fields are {headers} bytes; the gateway reads at most {MAX_HEADER_BYTES}"),
        )
    })
}

/// Whether a Host field's value is a host with an optional port, without user information, or
/// empty (RFC 9112 §3.2: what a client sends when the target has no authority). A host in
/// brackets is an IPv6 address; a port is up to five digits, at most 65535.
fn is_host_field(value: &HeaderValue) -> bool {
    if value.is_empty() {
        return true;
    }
    let Some(authority) = value.to_str().ok().and_then(|value| value.parse::<axum::http::uri::Authority>().ok()) else {
        return false;
    };
    let host = authority.host();
    let Some(port) = authority.as_str().strip_prefix(host) else { return false };
    let host_valid = match host.strip_prefix('[') {
        Some(literal) => literal.strip_suffix(']').is_some_and(|address| address.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && !host.contains([']', ':']),
    };
    let port_valid = port.is_empty()
        || port.strip_prefix(':').is_some_and(|port| {
            port.is_empty() || (port.bytes().all(|byte| byte.is_ascii_digit()) && port.parse::<u16>().is_ok())
        });
    host_valid && port_valid
}

/// One JSON log line a request, and a span that continues the caller's W3C trace. Neither holds
/// the request's path, which may carry whatever was typed into the URL (a CPF, a key pasted by
/// mistake): both name the route's template, and the line names the trace, so that the two join.
async fn access_log(state: &AppState, request: Request, next: Next, refused: Option<Problem>) -> Response {
    let started = Instant::now();
    let method = method_name(request.method());
    let matched = request.extensions().get::<MatchedPath>().map(|matched| matched.as_str().to_owned());
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.request.method = %method,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    trace_context::adopt_remote_parent(&span, request.headers());
    // A request refused before routing, or a preflight the CORS layer answers, is still counted
    // under the route its path is one of.
    let unrouted = refused.is_some() || crate::cors::is_preflight(&request);
    let refused_route = unrouted.then(|| state.routes.template_of(request.method(), request.uri().path())).flatten();
    let mut response = match refused {
        Some(problem) => problem.into_response(),
        None => {
            // A handling that panics is answered 500 here, within the request's scope, so that it
            // too is logged, counted, and its problem names the request.
            let handling = resilience::shed_load(&state.resilience, &state.routes, request, next);
            AssertUnwindSafe(handling.instrument(span.clone())).catch_unwind().await.unwrap_or_else(|_| {
                tracing::error!(request_id = request_id::current().unwrap_or_default(), "request handling panicked");
                Problem::internal().into_response()
            })
        }
    };
    let latency = started.elapsed();
    let facts = response.extensions_mut().remove::<RequestFacts>().unwrap_or_default();
    // A transcoded route names its template; the gateway's own routes have theirs matched by axum.
    let route = facts.route.as_deref().or(matched.as_deref()).or(refused_route);
    // Named as OpenTelemetry's HTTP conventions say: the method and the route, or the method
    // alone; `HTTP` for a method of no standard.
    let named = if method == "_OTHER" { "HTTP" } else { method };
    match route {
        Some(route) => {
            span.record("http.route", route);
            trace_context::rename(&span, format!("{named} {route}"));
        }
        None => trace_context::rename(&span, named.to_owned()),
    }
    let route = route.unwrap_or("unmatched");
    let status = response.status().as_u16();
    // As OpenTelemetry's HTTP conventions say for a server: the status sent, and an error for a
    // 5xx only (a 4xx is the client's).
    span.record("http.response.status_code", i64::from(status));
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    let traceresponse = trace_context::traceresponse(&span);
    let metrics = crate::metrics::metrics();
    metrics.requests.with_label_values(&[route, method, response.status().as_str()]).inc();
    metrics.request_duration.with_label_values(&[route, method]).observe(latency.as_secs_f64());
    // The credential's tenant, its request refused or not (a tenant's key on the admin API, say).
    let principal = request_id::principal();
    tracing::info!(
        target: "access",
        request_id = request_id::current().unwrap_or_default(),
        trace_id = traceresponse.as_deref().and_then(|header| header.get(3..35)),
        tenant_id = facts.tenant_id.as_deref().or(principal.as_deref().and_then(|who| who.tenant_id.as_deref())),
        key_id = principal.as_deref().map(|who| who.key_id.as_str()),
        method = %method,
        route,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request"
    );
    if let Some(value) = traceresponse.and_then(|header| HeaderValue::try_from(header).ok()) {
        response.headers_mut().insert(TRACERESPONSE, value);
    }
    response
}

/// The header that tells a client which trace its request made (W3C Trace Context Level 2).
const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_and_no_others() {
        assert_eq!(decode_unreserved("/%6Fpenapi.json").as_deref(), Some("/openapi.json"));
        assert_eq!(decode_unreserved("/v1/%61dmin/%7e%2Dx").as_deref(), Some("/v1/admin/~-x"));
        // Reserved characters and the escape character itself stay escaped.
        assert_eq!(decode_unreserved("/a%2Fb%25%41").as_deref(), Some("/a%2Fb%25A"));
        // Nothing to decode, or a stray `%`: the path is left as sent, not decoded into new escapes.
        assert_eq!(decode_unreserved("/plain"), None);
        assert_eq!(decode_unreserved("/a%2F"), None);
        assert_eq!(decode_unreserved("/%%34%31"), None);
        assert_eq!(decode_unreserved("/%4"), None);
        // Other bytes are kept as they came: UTF-8 stays UTF-8.
        assert_eq!(decode_unreserved("/é%41").as_deref(), Some("/éA"));
    }

    #[test]
    fn a_document_is_named_by_its_path_with_ids_as_the_services_write_them() {
        let id = "0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b";
        let named = |path: &str, content_type: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            document_disposition(path, &headers).map(|value| value.to_str().unwrap().to_owned())
        };
        let report = format!("inline; filename=\"{id}-report.pdf\"");
        for spelling in [id.to_owned(), id.to_uppercase(), format!("%7B{id}%7D"), format!("urn:uuid:{id}")] {
            let path = format!("/v1/health/patients/{id}/assessments/{spelling}/report");
            assert_eq!(named(&path, "application/pdf").as_deref(), Some(report.as_str()), "{spelling}");
        }
        assert_eq!(
            named(&format!("/v1/health/patients/{id}/images/{id}"), "image/jpeg").as_deref(),
            Some(format!("inline; filename=\"images-{id}.jpg\"").as_str())
        );
        assert_eq!(
            named("/v1/fin/customers/c/statements/2026-10", "application/pdf; charset=binary").as_deref(),
            Some("inline; filename=\"statements-2026-10.pdf\"")
        );
        assert_eq!(named("/v1/health/models", "application/json"), None);
    }

    #[test]
    fn a_host_field_is_a_host_and_an_optional_port() {
        for host in ["api.example.com", "127.0.0.1:8080", "[::1]:8080", "[::1]", "localhost:", ""] {
            assert!(is_host_field(&HeaderValue::from_static(host)), "{host:?}");
        }
        for host in [
            "a b",
            "user@api.example.com",
            "api.example.com:http",
            "api.example.com:99999",
            ":8080",
            "a/b",
            "[zz]",
            "[]",
            "[::1",
            "a:+1",
            "a:-1",
        ] {
            assert!(!is_host_field(&HeaderValue::from_static(host)), "{host:?}");
        }
    }
}
