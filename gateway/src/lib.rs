//! The AigroNova HTTP edge. It authenticates API keys, owns tenants and keys, and turns JSON
//! calls into gRPC calls to the service that owns each route, with routes, scopes and owners
//! read from the descriptor set at start-up.

#![forbid(unsafe_code)]

mod admin;
mod auth;
pub mod cors;
mod keys;
mod metrics;
pub mod openapi;
pub mod plans;
mod problem;
mod proxy;
mod request_id;
pub mod routes;
pub mod store;
mod transcode;
mod upstream;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use aigronova_platform::{
    Shutdown,
    auth::TokenSigner,
    config::{ConfigError, Validate},
    storage::Database,
};
use axum::{
    Router, middleware,
    routing::{delete, get, post},
};
use prost_reflect::DescriptorPool;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use problem::Problem;

use crate::{routes::RouteTable, store::Store, upstream::Upstreams};

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
    /// Deadline of one call to an upstream service, in seconds.
    pub upstream_timeout_secs: u64,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://data/gateway.db".into(),
            max_body_bytes: 1024 * 1024,
            upstream_timeout_secs: 10,
            upstreams: BTreeMap::new(),
            redis_url: None,
            plans: plans::Plans::default(),
            key_cache_secs: 30,
            cors: cors::CorsConfig::default(),
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
        self.plans.validate()?;
        self.cors.validate()?;
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError(format!("gateway.redis_url must be a redis:// URL, got {url:?}")));
        }
        for (owner, url) in &self.upstreams {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError(format!("gateway.upstreams.{owner} must be an http(s):// URL, got {url:?}")));
            }
        }
        Ok(())
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    store: Store,
    routes: Arc<RouteTable>,
    upstreams: Upstreams,
    signer: TokenSigner,
    max_body_bytes: usize,
    plans: Arc<plans::Plans>,
    keys: keys::KeyCache,
    invalidation: keys::Invalidation,
    api_docs: Arc<openapi::ApiDocs>,
}

/// A gateway bound to its port, ready to serve.
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    generated_admin_key: Option<String>,
}

impl Gateway {
    /// Opens the database, builds the routes from the descriptor set and binds the listener.
    /// `admin_key` (from `AIGRONOVA_ADMIN_KEY`) is recorded as an administrator key; without it,
    /// a first start generates one, available once through [`Gateway::generated_admin_key`].
    pub async fn build(config: &Config, signer: TokenSigner, admin_key: Option<&str>) -> anyhow::Result<Self> {
        let db = Database::connect(&config.database_url, &store::MIGRATOR).await?;
        let store = Store::new(db);
        let generated_admin_key = match admin_key {
            Some(key) => {
                store.ensure_admin_key(key).await?;
                None
            }
            None if !store.has_admin_key().await? => {
                let issued =
                    store.issue_key(None, "admin (first start)", &[store::ADMIN_SCOPE.to_owned()], None).await?;
                Some(issued.key)
            }
            None => None,
        };
        let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET)?;
        let routes = RouteTable::from_descriptors(&pool)?;
        let keys = keys::KeyCache::new(store.clone(), Duration::from_secs(config.key_cache_secs));
        let api_docs = openapi::ApiDocs::new(&routes, &pool)?;
        let upstreams = Upstreams::new(&config.upstreams, Duration::from_secs(config.upstream_timeout_secs))?;
        let state = AppState {
            store,
            routes: Arc::new(routes),
            upstreams,
            signer,
            max_body_bytes: config.max_body_bytes,
            plans: Arc::new(config.plans.clone()),
            keys: keys.clone(),
            invalidation: keys::Invalidation::new(keys),
            api_docs: Arc::new(api_docs),
        };
        let listener = TcpListener::bind(config.http_addr).await?;
        let local_addr = listener.local_addr()?;
        let mut router = app(state);
        if let Some(cors) = config.cors.layer() {
            router = router.layer(cors);
        }
        Ok(Self { listener, local_addr, router, generated_admin_key })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The administrator key made on this first start, if one was.
    pub fn generated_admin_key(&self) -> Option<&str> {
        self.generated_admin_key.as_deref()
    }

    /// Serves until `shutdown`, then finishes the requests in flight.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr, "gateway listening");
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown.wait()).await?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(proxy::healthz))
        .route("/readyz", get(proxy::readyz))
        .route("/metrics", get(proxy::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs_page))
        .route("/v1/admin/tenants", post(admin::create_tenant).get(admin::list_tenants))
        .route("/v1/admin/tenants/{tenant_id}", get(admin::get_tenant).patch(admin::update_tenant))
        .route("/v1/admin/tenants/{tenant_id}/api-keys", post(admin::create_api_key).get(admin::list_api_keys))
        .route("/v1/admin/tenants/{tenant_id}/api-keys/{key_id}", delete(admin::revoke_api_key))
        .fallback(proxy::transcode)
        .method_not_allowed_fallback(proxy::method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn(proxy::access_log))
        .layer(middleware::from_fn(request_id::middleware))
}
