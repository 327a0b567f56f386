//! The AigroNova HTTP edge. It authenticates API keys and OIDC JWTs, owns tenants and keys, and
//! turns JSON calls into gRPC calls to the service that owns each route, with routes, scopes and
//! owners read from the descriptor set at start-up.

#![forbid(unsafe_code)]

mod admin;
mod auth;
mod connection;
pub mod cors;
mod decompress;
mod json;
mod jwks;
pub mod jwt;
mod keys;
mod metrics;
mod open_inference;
pub mod openapi;
pub mod plans;
mod problem;
mod proxy;
pub mod ratelimit;
mod request_id;
mod resilience;
pub mod routes;
pub mod store;
mod transcode;
mod upstream;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use aigronova_platform::{
    Shutdown,
    auth::TokenSigner,
    config::{ConfigError, Validate, redacted},
    storage::Database,
};
use anyhow::Context as _;
use axum::{
    Router,
    body::Body,
    middleware,
    routing::{get, post},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use prost_reflect::DescriptorPool;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

pub use jwks::install_crypto_provider;

/// Where the gateway's administrator key comes from.
pub enum AdminKey<'a> {
    /// `AIGRONOVA_ADMIN_KEY`: this key is the administrator key, recorded if new, and every other
    /// administrator key is revoked (the way to replace a lost or leaked one).
    Given(&'a str),
    /// None given: on a first start (no administrator key stored), a new key is made and handed
    /// to this function, which keeps it where a person will find it (a file, a terminal) before
    /// the key is stored, and says whether it could; a key it could not hand over is not stored.
    FirstStart(Box<dyn FnOnce(&str) -> bool + Send + 'a>),
}
pub use problem::Problem;
pub use resilience::{CircuitBreakerConfig, RetryConfig};

use crate::{resilience::Resilience, routes::RouteTable, store::Store, upstream::Upstreams};

/// Gateway settings (`[gateway]` in the config file, `AIGRONOVA__GATEWAY__…` variables).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The gateway's own database (tenants and API keys): `sqlite:` or `postgres:` URL.
    pub database_url: String,
    /// Largest request body of the admin API, in bytes; tenant calls are limited by their plan.
    pub max_body_bytes: usize,
    /// Deadline of one call to an upstream service, in seconds. A client's `grpc-timeout` header
    /// shortens it.
    pub upstream_timeout_secs: u64,
    /// Deadlines of particular upstreams, in seconds (fractions allowed), by owner name; they
    /// replace `upstream_timeout_secs` for those upstreams.
    pub upstream_timeouts: BTreeMap<String, f64>,
    /// Requests in flight at once; beyond, a request is refused at once with 503 and
    /// `Retry-After: 1` rather than queued. `/healthz`, `/readyz`, `/metrics` and CORS preflights
    /// are exempt.
    pub max_concurrent_requests: usize,
    /// Requests of one tenant in flight at once; beyond, its next request is refused with 429 and
    /// `Retry-After: 1`, so that no tenant holds the whole of `max_concurrent_requests`.
    pub max_concurrent_requests_per_tenant: usize,
    /// Bytes of request bodies the gateway holds in memory at once (each counted at its
    /// `Content-Length`, or, compressed or of unknown length, at what it has decoded to as it grows,
    /// then, once read, at the size of the message sent while its call is out); beyond, a request
    /// with a body is refused with 503 and `Retry-After: 1`.
    pub max_buffered_body_bytes: usize,
    /// Seconds a request body may go without any of it arriving; beyond, 408. A client that
    /// stops sending holds its slot no longer.
    pub request_body_timeout_secs: u64,
    /// Seconds a new connection may take to say which HTTP version it speaks, an HTTP/1.1
    /// request's header fields to arrive (counted from the end of the previous request on the
    /// connection), and an HTTP/2 client to answer a ping; beyond, the connection is closed.
    pub request_header_timeout_secs: u64,
    /// Seconds the gateway, once told to stop, waits for the requests in flight (a slow upload
    /// among them) before it closes their connections and stops.
    pub shutdown_grace_secs: u64,
    /// Circuit breaking per upstream.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Retries of idempotent calls (`GET` routes) within a retry budget.
    pub retry: RetryConfig,
    /// gRPC URL of each service, by the owner name its protos declare (e.g. `healthquantum`).
    pub upstreams: BTreeMap<String, String>,
    /// Redis (`redis://host:6379`) shared by every replica for rate limits and key revocation;
    /// unset: in-process state, right for a single instance.
    pub redis_url: Option<String>,
    /// Limits of each plan.
    pub plans: plans::Plans,
    /// How long an API key lookup is cached, in seconds. Revocations and suspensions evict at
    /// once; this only bounds staleness when a replica misses an eviction.
    pub key_cache_secs: u64,
    /// Browser cross-origin access.
    pub cors: cors::CorsConfig,
    /// How rate limits and quotas behave (Redis failures, key prefix).
    pub rate_limit: ratelimit::RateLimitConfig,
    /// An OIDC provider whose JWTs are accepted beside API keys; unset: API keys only.
    pub oidc: Option<jwt::OidcConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://data/gateway.db".into(),
            max_body_bytes: 1024 * 1024,
            upstream_timeout_secs: 10,
            upstream_timeouts: BTreeMap::new(),
            max_concurrent_requests: 512,
            max_concurrent_requests_per_tenant: 128,
            max_buffered_body_bytes: 512 * 1024 * 1024,
            request_body_timeout_secs: 10,
            request_header_timeout_secs: 30,
            shutdown_grace_secs: 25,
            circuit_breaker: CircuitBreakerConfig::default(),
            retry: RetryConfig::default(),
            upstreams: BTreeMap::new(),
            redis_url: None,
            plans: plans::Plans::default(),
            key_cache_secs: 30,
            cors: cors::CorsConfig::default(),
            rate_limit: ratelimit::RateLimitConfig::default(),
            oidc: None,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database_url
            .parse::<aigronova_platform::storage::Backend>()
            .map_err(|error| ConfigError(format!("gateway.database_url: {error}")))?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError("gateway.max_body_bytes must be positive".into()));
        }
        if self.upstream_timeout_secs == 0 {
            return Err(ConfigError("gateway.upstream_timeout_secs must be positive".into()));
        }
        for (name, secs) in [
            ("request_body_timeout_secs", self.request_body_timeout_secs),
            ("request_header_timeout_secs", self.request_header_timeout_secs),
            ("shutdown_grace_secs", self.shutdown_grace_secs),
        ] {
            if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
                return Err(ConfigError(format!("gateway.{name} must be between 1 and {MAX_TIMEOUT_SECS}")));
            }
        }
        self.plans.validate()?;
        self.cors.validate()?;
        self.rate_limit.validate()?;
        resilience::validate(self)?;
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError(format!("gateway.redis_url must be a redis:// URL, got {:?}", redacted(url))));
        }
        // An upstream named after no service would never be called, and the service it was meant
        // for would answer 503: a misspelt name (`ai_governance`) is refused.
        let owners = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET)
            .ok()
            .and_then(|pool| RouteTable::from_descriptors(&pool).ok())
            .map(|routes| routes.owners())
            .unwrap_or_default();
        if let Some(unknown) = self.upstreams.keys().find(|name| !owners.contains(*name)) {
            return Err(ConfigError(format!(
                "gateway.upstreams.{unknown} names no service; the services are {} (in the environment, \
                 AIGRONOVA__GATEWAY__UPSTREAMS__<NAME> with the name as written here, dashes kept)",
                owners.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        for (owner, url) in &self.upstreams {
            if !url.starts_with("http://") {
                return Err(ConfigError(format!(
                    "gateway.upstreams.{owner} must be an http:// URL (gRPC over plaintext HTTP/2), got {:?}",
                    redacted(url)
                )));
            }
        }
        Ok(())
    }
}

/// What every handler shares, behind one reference count: the router clones it for every
/// request.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub(crate) struct Shared {
    store: Store,
    routes: Arc<RouteTable>,
    upstreams: Upstreams,
    /// The service of each model the Open Inference Protocol's routes were asked about.
    model_owners: open_inference::ModelOwners,
    resilience: Arc<Resilience>,
    signer: TokenSigner,
    max_body_bytes: usize,
    body_timeout: Duration,
    plans: Arc<plans::Plans>,
    keys: keys::KeyCache,
    invalidation: Arc<keys::Invalidation>,
    limiter: ratelimit::RateLimiter,
    jwt: Option<Arc<jwt::JwtAuthenticator>>,
    api_docs: Arc<openapi::ApiDocs>,
    /// The requests being handled, in place or, once their client has gone away, on a task of
    /// their own (see `proxy::Detaching`): shutdown waits for all of them.
    requests: TaskTracker,
    /// The secret the admin API's page tokens are made under, the same on every replica.
    page_token_key: String,
    /// The last readiness found and when (see `proxy::readyz`).
    readiness: tokio::sync::Mutex<Option<proxy::Readiness>>,
}

/// The largest HTTP/2 header list the gateway's HTTP server reads (HTTP/1.1's is the far larger
/// buffer of its parser): above the gateway's own limits (`proxy::oversized`), so that a request
/// over those is answered with a problem document.
const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// The longest a request or connection timeout may be set to, in seconds.
const MAX_TIMEOUT_SECS: u64 = 3600;

/// A gateway bound to its port, ready to serve.
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    header_timeout: Duration,
    shutdown_grace: Duration,
    invalidation: keys::Invalidation,
    requests: TaskTracker,
}

impl Gateway {
    /// Binds the listener, opens the database, builds the routes from the descriptor set and sees
    /// to the administrator key (see [`AdminKey`]).
    pub async fn build(config: &Config, signer: TokenSigner, admin_key: AdminKey<'_>) -> anyhow::Result<Self> {
        Self::build_in_process(config, signer, admin_key, &BTreeMap::new()).await
    }

    /// As [`Gateway::build`], the upstreams in `services` being services of this process: they are
    /// called through their routes, not over a connection to their `upstreams` URL.
    pub async fn build_in_process(
        config: &Config,
        signer: TokenSigner,
        admin_key: AdminKey<'_>,
        services: &BTreeMap<String, aigronova_platform::grpc::LocalEndpoint>,
    ) -> anyhow::Result<Self> {
        install_crypto_provider();
        // First, so that a start that cannot listen changes nothing.
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
        let db = Database::connect(&config.database_url, &store::MIGRATOR)
            .await
            .context("cannot open the gateway database")?;
        let store = Store::new(db);
        let mut revoked_admin_keys = Vec::new();
        match admin_key {
            AdminKey::Given(key) => {
                revoked_admin_keys = store.set_admin_key(key).await?.ok_or_else(|| {
                    ConfigError(
                        "AIGRONOVA_ADMIN_KEY is a tenant's API key: choose another key for the administrator".into(),
                    )
                })?;
                if !revoked_admin_keys.is_empty() {
                    tracing::info!(
                        revoked = revoked_admin_keys.len(),
                        "AIGRONOVA_ADMIN_KEY is the administrator key: the administrator keys before it are revoked"
                    );
                }
            }
            AdminKey::FirstStart(deliver) if !store.has_admin_key().await? => {
                let key = store::new_key();
                // Handed over before it is stored: a start stopped in between leaves no
                // administrator key that nobody holds.
                if deliver(&key) {
                    store.store_admin_key(&key).await?;
                } else {
                    tracing::warn!(
                        "no administrator key is stored and none could be handed over; set AIGRONOVA_ADMIN_KEY and \
                         restart to choose one"
                    );
                }
            }
            AdminKey::FirstStart(_) => {}
        }
        let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET)?;
        let routes = RouteTable::from_descriptors(&pool)?;
        for missing in routes.owners().iter().filter(|owner| !config.upstreams.contains_key(*owner)) {
            tracing::warn!(service = %missing, "no upstream is configured for this service: its routes answer 503");
        }
        let keys = keys::KeyCache::new(store.clone(), Duration::from_secs(config.key_cache_secs));
        let limiter = ratelimit::RateLimiter::connect(config.redis_url.as_deref(), &config.rate_limit).await?;
        let invalidation = keys::Invalidation::new(
            keys.clone(),
            config.redis_url.as_deref(),
            &config.rate_limit.redis_key_prefix,
            Duration::from_millis(config.rate_limit.redis_timeout_ms),
        )?;
        let api_docs = openapi::ApiDocs::new(&routes, &pool)?;
        let upstreams = Upstreams::new(&config.upstreams, services, Duration::from_secs(config.upstream_timeout_secs))?;
        let jwt = match &config.oidc {
            Some(oidc) => {
                let pseudonym_key = store.secret("subject_pseudonym_key").await?;
                Some(Arc::new(jwt::JwtAuthenticator::start(oidc, pseudonym_key).await?))
            }
            None => None,
        };
        let requests = TaskTracker::new();
        let page_token_key = store.secret("admin_page_token_key").await?;
        let state = AppState(Arc::new(Shared {
            store,
            routes: Arc::new(routes),
            upstreams,
            model_owners: open_inference::ModelOwners::default(),
            resilience: Arc::new(Resilience::new(config, Arc::new(resilience::TokioClock))),
            signer,
            max_body_bytes: config.max_body_bytes,
            body_timeout: Duration::from_secs(config.request_body_timeout_secs),
            plans: Arc::new(config.plans.clone()),
            keys: keys.clone(),
            invalidation: Arc::new(invalidation.clone()),
            limiter,
            jwt,
            api_docs: Arc::new(api_docs),
            requests: requests.clone(),
            page_token_key,
            readiness: tokio::sync::Mutex::new(None),
        }));
        for hash in &revoked_admin_keys {
            invalidation.key_revoked(hash).await;
        }
        let local_addr = listener.local_addr()?;
        let router = app(state, config.cors.layer());
        let header_timeout = Duration::from_secs(config.request_header_timeout_secs);
        let shutdown_grace = Duration::from_secs(config.shutdown_grace_secs);
        Ok(Self { listener, local_addr, router, header_timeout, shutdown_grace, invalidation, requests })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown`, then finishes the requests in flight.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr, "gateway listening");
        tokio::spawn(self.invalidation.listen(shutdown.clone()));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // A client that stops sending its header fields loses its connection; the body has
        // `request_body_timeout_secs` of its own.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.header_timeout);
        // HTTP/2 header lists above the gateway's own limit on them (`proxy::oversized`), which
        // answers with a problem document; a peer that stops answering pings loses its connection.
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
            .keep_alive_interval(self.header_timeout)
            .keep_alive_timeout(self.header_timeout);
        let connections = GracefulShutdown::new();
        // Cancelled when the shutdown grace runs out: the connections still open are closed.
        let closing = tokio_util::sync::CancellationToken::new();
        let stopping = shutdown.clone().wait();
        tokio::pin!(stopping);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut stopping => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // The peer gave up before the connection was accepted: nothing to wait for.
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(error) => {
                    // Out of file descriptors, most often: wait for some to be closed.
                    tracing::warn!(%error, "cannot accept connections; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = &mut stopping => break,
                    }
                }
            };
            // Small HTTP/2 frames must not wait for the client's delayed ACK (Nagle).
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY on an accepted connection");
            }
            let service =
                TowerToHyperService::new(self.router.clone().map_request(|request: axum::http::Request<Incoming>| {
                    proxy::unescape_unreserved(request.map(Body::new))
                }));
            let (watcher, builder, shutdown) = (connections.watcher(), builder.clone(), shutdown.clone());
            let closing = closing.clone();
            let first_bytes = self.header_timeout;
            tokio::spawn(async move {
                // A connection that does not tell its HTTP version within the header timeout is
                // closed, as at shutdown; past that, the connection's own timers take over.
                let opened = tokio::select! {
                    opened = connection::open(stream) => match opened {
                        Ok(opened) => opened,
                        Err(_) => return,
                    },
                    () = tokio::time::sleep(first_bytes) => return,
                    () = shutdown.wait() => return,
                };
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(opened), service);
                // Its errors are the client's (a reset, a malformed request), answered already.
                // Past the shutdown grace, the connection is dropped, which closes it.
                tokio::select! {
                    _ = watcher.watch(connection) => {}
                    () = closing.cancelled() => {}
                }
            });
        }
        drop(self.listener);
        // The requests in flight are finished, and those whose client went away, which no
        // connection waits for any more; idle connections close at once. A request still out after
        // the grace (a slow upload) has its connection closed: the stop is not held hostage.
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        self.requests.close();
        let drained = tokio::time::timeout_at(deadline, async {
            connections.shutdown().await;
            self.requests.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_secs = self.shutdown_grace.as_secs(),
                "requests still in flight after the shutdown grace; their connections are closed"
            );
            closing.cancel();
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// A handler that panics (see [`app`]).
#[cfg(test)]
async fn panics() -> &'static str {
    panic!("a handler that panics")
}

/// The routes inside the edge (see [`proxy::edge`]), and, when CORS is configured, the part of it
/// that answers preflights between the two, so that a preflight is logged and counted as any other
/// request, and the part that adds its headers to other answers outside the edge, so that the
/// edge's own answers carry them too (see [`cors::CorsPart`]).
fn app(state: AppState, cors: Option<tower_http::cors::CorsLayer>) -> Router {
    let edge_state = state.clone();
    let routes = Router::new()
        .route("/healthz", get(proxy::healthz).layer(middleware::from_fn(proxy::takes_nothing)))
        .route("/readyz", get(proxy::readyz).layer(middleware::from_fn(proxy::takes_nothing)))
        .route("/v2", get(proxy::inference_server).layer(middleware::from_fn(proxy::takes_nothing)))
        .route("/v2/health/live", get(proxy::inference_live).layer(middleware::from_fn(proxy::takes_nothing)))
        .route("/v2/health/ready", get(proxy::inference_ready).layer(middleware::from_fn(proxy::takes_nothing)))
        .route("/metrics", get(proxy::metrics))
        // The API's description, the same for everyone, whatever a shared link's query says.
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs_page))
        .route("/v1/admin/tenants", post(admin::create_tenant).get(admin::list_tenants))
        .route("/v1/admin/tenants/{tenantId}", get(admin::get_tenant).patch(admin::update_tenant))
        .route("/v1/admin/tenants/{tenantId}/api-keys", post(admin::create_api_key).get(admin::list_api_keys))
        .route("/v1/admin/tenants/{tenantId}/api-keys/{keyId}", get(admin::get_api_key).delete(admin::revoke_api_key))
        .fallback(proxy::transcode)
        .method_not_allowed_fallback(proxy::method_not_allowed);
    // A handler that panics, for the test of what the edge makes of one; in no build but the tests'.
    #[cfg(test)]
    let routes = routes.route("/test/panics", get(panics));
    let routes = routes.with_state(state);
    let Some(cors) = cors else {
        return routes.layer(middleware::from_fn_with_state(edge_state, proxy::edge));
    };
    routes
        .layer(cors::CorsPart::preflights(cors.clone()))
        .layer(middleware::from_fn_with_state(edge_state, proxy::edge))
        .layer(cors::CorsPart::other_requests(cors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_must_name_a_service_of_the_protos() {
        let mut config = Config::default();
        for name in ["healthquantum", "finquantum", "ai-governance"] {
            config.upstreams.insert(name.into(), "http://127.0.0.1:50061".into());
        }
        assert!(config.validate().is_ok());
        config.upstreams.insert("ai_governance".into(), "http://127.0.0.1:50070".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("gateway.upstreams.ai_governance names no service"), "{error}");
        assert!(error.contains("ai-governance, finquantum, healthquantum"), "{error}");
    }

    #[tokio::test]
    async fn a_handling_that_panics_is_a_500_that_names_its_request_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: format!("sqlite://{}", dir.path().join("gateway.db").display()),
            ..Config::default()
        };
        let admin_key = "agk_test_admin_0123456789abcdef0123456789abcdef";
        let gateway = Gateway::build(&config, TokenSigner::generate(), AdminKey::Given(admin_key)).await.unwrap();
        let url = format!("http://{}/test/panics", gateway.local_addr());
        let shutdown = Shutdown::new();
        let running = tokio::spawn(gateway.run_until_stopped(shutdown.clone()));
        let counted = || metrics::metrics().requests.with_label_values(&["/test/panics", "GET", "500"]).get();
        let before = counted();
        let response = reqwest::Client::new().get(&url).header("x-request-id", "panic-1").send().await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert_eq!(response.headers()["x-request-id"], "panic-1");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            (problem["requestId"].as_str(), problem["instance"].as_str()),
            (Some("panic-1"), Some("/test/panics"))
        );
        assert_eq!(counted(), before + 1);
        shutdown.trigger();
        running.await.unwrap().unwrap();
    }

    #[test]
    fn a_url_refused_at_start_is_quoted_without_its_password() {
        let mut config = Config { redis_url: Some("http://:zyx-secret@127.0.0.1:6379".into()), ..Config::default() };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("got \"http://***@127.0.0.1:6379\"") && !error.contains("zyx-secret"), "{error}");
        config.redis_url = None;
        config.upstreams.insert("healthquantum".into(), "https://user:zyx-secret@127.0.0.1:50061".into());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("***@127.0.0.1:50061") && !error.contains("zyx-secret"), "{error}");
    }
}
