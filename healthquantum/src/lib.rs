//! HealthQuantum: patient records and clinical risk assessments, served over gRPC
//! (`aigronova.health.v1.HealthQuantum`).
//!
//! [`HealthQuantumService::build`] connects the database and runs the migrations, loads the
//! models and binds the listener; [`HealthQuantumService::run_until_stopped`] serves until the
//! shutdown signal. Every call must carry the gateway's internal token, and reads or writes only
//! the caller's tenant.

#![forbid(unsafe_code)]

pub mod assessment;
mod grpc;
pub mod imaging;
mod jpeg;
pub mod patient;
mod report;
mod store;
mod sweep;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
};

use aigronova_platform::{
    Shutdown,
    audit::{GovernanceLink, Relay},
    auth::{Authenticate, TokenSigner, TokenVerifier},
    config::{ConfigError, InferenceConfig, Validate},
    grpc::{GrpcListener, MAX_MESSAGE_BYTES},
    inference::ModelRegistry,
    monitoring::InferenceMonitor,
    open_inference::OpenInference,
    storage::{Backend, Database},
};
use aigronova_proto::aigronova::{
    common::v1::data_subject_server::{self, DataSubjectServer},
    health::v1::health_quantum_server::{self, HealthQuantumServer},
};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tonic::service::{Routes, interceptor::InterceptedService};

use crate::{grpc::HealthQuantumApi, store::Store};

/// The name of this service in configuration, logs and `aigronova serve`.
pub const SERVICE_NAME: &str = "healthquantum";

/// The models this service serves.
pub const MODELS: &[&str] = &["breast-cancer", "diabetes-progression"];

/// The schema of this service's database, embedded from `healthquantum/migrations`.
static MIGRATOR: Migrator = sqlx::migrate!();

/// The `healthquantum` configuration section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address, default 127.0.0.1:50061.
    pub grpc_addr: SocketAddr,
    /// `sqlite://<path>` (embedded) or `postgres://…`, default `sqlite://data/healthquantum.db`.
    pub database_url: String,
    /// The master key that wraps the tenants' data keys, base64 32 bytes (a secret; in
    /// production from a Secret, or replaced by a KMS). When unset, `master_key_file` is used.
    pub master_key: Option<String>,
    /// File holding the master key; created with a new key (mode 0600) when missing.
    pub master_key_file: PathBuf,
    /// Where reports (and images) are kept: `file://<directory>` or `s3://<bucket>[/<prefix>]`.
    pub objects_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 50061)),
            database_url: "sqlite://data/healthquantum.db".into(),
            master_key: None,
            master_key_file: PathBuf::from("data/healthquantum-master.key"),
            objects_url: "file://data/healthquantum-objects".into(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.master_key {
            aigronova_platform::crypto::decode_master_key(key, "healthquantum.master_key")?;
        }
        aigronova_platform::objects::Objects::check_url(&self.objects_url)
            .map_err(|error| ConfigError(format!("healthquantum.objects_url: {error}")))?;
        self.database_url.parse::<Backend>().map_err(|_| {
            ConfigError("healthquantum.database_url must start with sqlite:, postgres: or postgresql:".into())
        })?;
        Ok(())
    }
}

pub use aigronova_platform::audit::Governance;

/// A built service: database connected, models loaded, listener bound.
#[derive(Debug)]
pub struct HealthQuantumService {
    listener: GrpcListener,
    database: Database,
    api: HealthQuantumApi,
    verifier: TokenVerifier,
    relay: Relay,
    governance: Governance,
    models: ModelRegistry,
    monitor: InferenceMonitor,
    open_inference: OpenInference,
}

impl HealthQuantumService {
    /// Connects the database (running the migrations), loads [`MODELS`] and binds
    /// `config.grpc_addr`; port 0 picks a free port, see [`Self::local_addr`].
    pub async fn build(
        config: &Config,
        inference: &InferenceConfig,
        verifier: TokenVerifier,
        governance: Governance,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let mut database = Database::connect(&config.database_url, &MIGRATOR)
            .await
            .context("cannot open the healthquantum database")?;
        database
            .enable_row_level_security(&[
                "patients",
                "assessments",
                "images",
                "audit_outbox",
                "audit_outbox_refused",
                "tenant_keys",
                "object_deletions",
            ])
            .await
            .context(aigronova_platform::storage::ROW_LEVEL_SECURITY_REFUSED)?;
        let keys = aigronova_platform::crypto::tenant_keys(
            &database,
            config.master_key.as_deref(),
            &config.master_key_file,
            "healthquantum.master_key",
        )
        .await?;
        let store = Store::new(database.clone(), keys.clone());
        let sealed = store.seal_clear_rows().await.context("cannot seal the patients stored in clear")?;
        if sealed > 0 {
            tracing::info!(patients = sealed, "patients stored in clear were sealed");
        }
        let sealed = store.seal_clear_inputs().await.context("cannot seal the assessment inputs stored in clear")?;
        if sealed > 0 {
            tracing::info!(assessments = sealed, "assessment inputs stored in clear were sealed");
        }
        let models = ModelRegistry::load(inference, MODELS).context("cannot load the healthquantum models")?;
        let listener = GrpcListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
        let relay = Relay::new(
            database.clone(),
            SERVICE_NAME,
            governance.relay.clone(),
            governance.signer.clone().unwrap_or_else(TokenSigner::generate),
        );
        let monitor = InferenceMonitor::default();
        let objects = aigronova_platform::objects::Objects::open(&config.objects_url)
            .with_context(|| format!("cannot open the object store {}", config.objects_url))?;
        let api = HealthQuantumApi::new(store, models.clone(), relay.waker(), monitor.clone(), objects);
        let open_inference = OpenInference::new(
            SERVICE_NAME,
            env!("CARGO_PKG_VERSION"),
            models.clone(),
            database.clone(),
            keys,
            monitor.clone(),
            relay.waker(),
        );
        Ok(Self { listener, database, api, verifier, relay, governance, models, monitor, open_inference })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The service's routes, for the gateway when it runs in this process.
    pub fn local_endpoint(&self) -> aigronova_platform::grpc::LocalEndpoint {
        self.listener.local_endpoint()
    }

    /// The service's database, for tests that inspect what was stored.
    #[doc(hidden)]
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Serves HealthQuantum, health and reflection until `shutdown`, then drains in-flight calls
    /// and closes the database. Meanwhile the outbox relay ships audit events to ai-governance
    /// and the models are registered in its inventory.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let link =
            GovernanceLink::start(SERVICE_NAME, &self.governance, self.relay, &self.models, self.monitor, &shutdown);
        // The domain RPCs take the gateway's tokens only; DataSubject, ai-governance's (services').
        let service_verifier = self.governance.signer.as_ref().map(TokenSigner::verifier);
        let data_subject = DataSubjectServer::with_interceptor(
            self.api.clone(),
            Authenticate::with_service_key(self.verifier.clone(), service_verifier),
        );
        let (store, objects) = self.api.store_and_objects();
        let service = InterceptedService::new(
            HealthQuantumServer::new(self.api).max_decoding_message_size(MAX_MESSAGE_BYTES),
            Authenticate::new(self.verifier.clone()),
        );
        let open_inference = self.open_inference.into_service(self.verifier.clone());
        let routes = Routes::new(service).add_service(data_subject).add_service(open_inference);
        let names = [
            health_quantum_server::SERVICE_NAME,
            data_subject_server::SERVICE_NAME,
            aigronova_platform::open_inference::SERVICE_NAME,
        ];
        let sweeper = tokio::spawn(sweep::run(store, objects, shutdown.clone()));
        let served = self.listener.serve(routes, &names, self.verifier, shutdown).await;
        sweeper.abort();
        if let Some(link) = link {
            link.join().await;
        }
        self.database.close().await;
        served
    }
}

/// Builds the service and serves it until `shutdown`.
pub async fn run(
    config: &Config,
    inference: &InferenceConfig,
    verifier: TokenVerifier,
    governance: Governance,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    HealthQuantumService::build(config, inference, verifier, governance).await?.run_until_stopped(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid_and_listens_on_loopback() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50061");
    }

    #[test]
    fn database_urls_of_other_engines_are_refused() {
        for url in ["mysql://localhost/db", "", "data/healthquantum.db"] {
            let config = Config { database_url: url.into(), ..Config::default() };
            assert!(config.validate().is_err(), "{url:?}");
        }
        for url in ["sqlite::memory:", "postgres://localhost/hq", "postgresql://localhost/hq"] {
            let config = Config { database_url: url.into(), ..Config::default() };
            assert!(config.validate().is_ok(), "{url:?}");
        }
    }
}
