//! AI Governance: the tamper-evident audit log every service writes to (one RFC 6962 Merkle
//! tree per tenant, with signed checkpoints, inclusion and consistency proofs) and the model
//! inventory, served over gRPC (`aigronova.governance.v1.AuditLog`, `ModelInventory`).
//!
//! [`AiGovernanceService::build`] connects the database, runs the migrations, loads the
//! checkpoint signing key and the master key that wraps the tenants' data keys (which seal the
//! data-subject requests' personal data) and binds the listener;
//! [`AiGovernanceService::run_until_stopped`] serves until the shutdown signal.

#![forbid(unsafe_code)]

pub mod checkpoint;
mod grpc;
pub mod inventory;
pub mod log;
pub mod merkle;
pub mod monitoring;
pub mod own_events;
pub mod reports;
pub mod subjects;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use aigronova_platform::{
    Shutdown,
    auth::{Authenticate, TokenSigner, TokenVerifier},
    config::{ConfigError, Validate},
    crypto::TenantKeys,
    grpc::GrpcListener,
    storage::{Backend, Database},
};
use aigronova_proto::aigronova::governance::v1::{
    audit_log_server::{self, AuditLogServer},
    model_inventory_server::{self, ModelInventoryServer},
    monitoring_server::{self, MonitoringServer},
    reports_server::{self, ReportsServer},
    subject_requests_server::{self, SubjectRequestsServer},
};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tonic::service::Routes;

use crate::{
    checkpoint::{CheckpointSigner, CheckpointVerifier},
    grpc::{AuditLogApi, ModelInventoryApi, MonitoringApi, ReportsApi, SubjectRequestsApi},
    inventory::Inventory,
    log::LogStore,
    monitoring::MonitoringStore,
    reports::Reporter,
    subjects::{SubjectServices, SubjectStore},
};

/// The name of this service in configuration, logs, upstreams and `aigronova serve`.
pub const SERVICE_NAME: &str = "ai-governance";

/// The schema of this service's database, embedded from `ai-governance/migrations`.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The tables that hold a tenant's rows, under row-level security on PostgreSQL. The model
/// inventory is the platform's, not a tenant's.
const TENANT_TABLES: &[&str] = &[
    "audit_entries",
    "audit_checkpoints",
    "inference_windows",
    "subject_requests",
    "reviews",
    "tenant_keys",
    "own_audit_outbox",
];

/// The `ai_governance` configuration section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address, default 127.0.0.1:50070.
    pub grpc_addr: SocketAddr,
    /// `sqlite://<path>` (embedded) or `postgres://…`, default `sqlite://data/ai-governance.db`.
    pub database_url: String,
    /// The checkpoint signing key, base64 32-byte Ed25519 seed (a secret; from a Kubernetes
    /// Secret in production). When unset, `signing_key_file` is used.
    pub signing_key: Option<String>,
    /// File holding the signing key; created with a new key (mode 0600) when missing.
    pub signing_key_file: PathBuf,
    /// The public keys (base64 Ed25519) of earlier signing keys, trusted to verify the checkpoints
    /// they signed before the key was changed: a tenant that has logged nothing since still has one
    /// as its latest.
    pub earlier_verifying_keys: Vec<String>,
    /// The master key that wraps the tenants' data keys, which seal the data-subject requests'
    /// bundles and corrections, base64 32 bytes (a secret; in production from a Secret, or
    /// replaced by a KMS). When unset, `master_key_file` is used.
    pub master_key: Option<String>,
    /// File holding the master key; created with a new key (mode 0600) when missing.
    pub master_key_file: PathBuf,
    /// The services that hold personal data, by name, and their gRPC URLs: data-subject
    /// requests are fanned out to each one's `DataSubject` RPCs. `aigronova up` fills it.
    pub data_subject_services: BTreeMap<String, String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("grpc_addr", &self.grpc_addr)
            .field("database_url", &self.database_url)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "[redacted]"))
            .field("signing_key_file", &self.signing_key_file)
            .field("earlier_verifying_keys", &self.earlier_verifying_keys)
            .field("master_key", &self.master_key.as_ref().map(|_| "[redacted]"))
            .field("master_key_file", &self.master_key_file)
            .field("data_subject_services", &self.data_subject_services)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 50070)),
            database_url: "sqlite://data/ai-governance.db".into(),
            signing_key: None,
            signing_key_file: PathBuf::from("data/ai-governance-checkpoint.key"),
            earlier_verifying_keys: Vec::new(),
            master_key: None,
            master_key_file: PathBuf::from("data/ai-governance-master.key"),
            data_subject_services: BTreeMap::new(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.database_url.parse::<Backend>().map_err(|_| {
            ConfigError("ai_governance.database_url must start with sqlite:, postgres: or postgresql:".into())
        })?;
        if let Some(key) = &self.signing_key {
            CheckpointSigner::from_base64(key)
                .map_err(|_| ConfigError("ai_governance.signing_key is not a base64 32-byte Ed25519 seed".into()))?;
        }
        for (n, key) in self.earlier_verifying_keys.iter().enumerate() {
            CheckpointVerifier::from_base64(key).map_err(|_| {
                ConfigError(format!(
                    "ai_governance.earlier_verifying_keys[{n}] is not a base64 32-byte Ed25519 public key"
                ))
            })?;
        }
        if let Some(key) = &self.master_key {
            aigronova_platform::crypto::decode_master_key(key, "ai_governance.master_key")?;
        }
        for (name, url) in &self.data_subject_services {
            aigronova_platform::config::plaintext_grpc_url(
                &format!("ai_governance.data_subject_services.{name}"),
                url,
            )?;
        }
        Ok(())
    }
}

/// A built service: database connected, signing key loaded, listener bound.
#[derive(Debug)]
pub struct AiGovernanceService {
    listener: GrpcListener,
    database: Database,
    log: Arc<LogStore>,
    keys: Arc<TenantKeys>,
    verifier: TokenVerifier,
    service_signer: Option<TokenSigner>,
    data_subject_services: BTreeMap<String, String>,
}

impl AiGovernanceService {
    /// Connects the database (running the migrations), loads or creates the signing key and the
    /// master key and binds `config.grpc_addr`; port 0 picks a free port, see [`Self::local_addr`].
    /// `verifier` checks the gateway's tokens; `service_signer` is the domain services' key:
    /// its public half admits their audit events, model registrations and summaries, and it
    /// signs the data-subject calls to them. Without it those are refused.
    pub async fn build(
        config: &Config,
        verifier: TokenVerifier,
        service_signer: Option<TokenSigner>,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let signer = match &config.signing_key {
            Some(key) => CheckpointSigner::from_base64(key)?,
            None => CheckpointSigner::load_or_create(&config.signing_key_file).with_context(|| {
                format!("cannot read or create the signing key file {}", config.signing_key_file.display())
            })?,
        };
        // The relays delete what it acknowledges: an acknowledged batch must survive a power cut.
        let mut database = Database::connect_durable(&config.database_url, &MIGRATOR)
            .await
            .context("cannot open the ai-governance database")?;
        database
            .enable_row_level_security(TENANT_TABLES)
            .await
            .context(aigronova_platform::storage::ROW_LEVEL_SECURITY_REFUSED)?;
        let keys = aigronova_platform::crypto::tenant_keys(
            &database,
            config.master_key.as_deref(),
            &config.master_key_file,
            "ai_governance.master_key",
        )
        .await?;
        let listener = GrpcListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
        tracing::info!(key_id = %signer.key_id(), "audit checkpoints signed with this key");
        // Another key than the one of the latest checkpoint: verifiers that pinned that key (`audit
        // verify --public-key`) refuse what this one signs until they take the new one.
        let latest: Option<String> =
            sqlx::query_scalar("SELECT key_id FROM audit_checkpoints ORDER BY signed_at DESC LIMIT 1")
                .fetch_optional(database.pool())
                .await
                .context("cannot read the latest checkpoint")?;
        if let Some(latest) = latest.filter(|latest| *latest != signer.key_id()) {
            tracing::warn!(
                key_id = %signer.key_id(),
                latest_key_id = %latest,
                "the checkpoint key is not the one that signed the latest checkpoint: verifiers that pinned the \
                 earlier key must take this one (GET /v1/governance/audit/public-key)"
            );
        }
        if service_signer.is_none() {
            tracing::warn!("no internal_auth.service_signing_key: calls from and to the services are refused");
        }
        let earlier = config.earlier_verifying_keys.iter().filter_map(|key| CheckpointVerifier::from_base64(key).ok());
        let log = Arc::new(LogStore::new(database.clone(), signer).trusting(earlier.collect()));
        log.record_signing_key().await.context("cannot record the checkpoint key")?;
        let data_subject_services = config.data_subject_services.clone();
        Ok(Self { listener, database, log, keys, verifier, service_signer, data_subject_services })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The service's routes, for the gateway when it runs in this process.
    pub fn local_endpoint(&self) -> aigronova_platform::grpc::LocalEndpoint {
        self.listener.local_endpoint()
    }

    /// Adds a service that data-subject requests fan out to (`aigronova up` learns the ports
    /// after the services are bound).
    pub fn add_data_subject_service(&mut self, name: &str, url: &str) {
        self.data_subject_services.insert(name.to_owned(), url.to_owned());
    }

    /// The service's database, for tests that inspect what was stored.
    #[doc(hidden)]
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Serves the audit log and the inventory, health and reflection until `shutdown`, then
    /// drains in-flight calls and closes the database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let service_verifier = self.service_signer.as_ref().map(TokenSigner::verifier);
        let authenticate = Authenticate::with_service_key(self.verifier.clone(), service_verifier);
        if self.data_subject_services.is_empty() {
            tracing::warn!(
                "no ai_governance.data_subject_services: data-subject requests reach no other service, and \
                 access bundles and erasures cover only what ai-governance holds"
            );
        }
        let services = SubjectServices::new(&self.data_subject_services, self.service_signer)?;
        let inventory = Inventory::new(self.database.clone());
        let monitoring = MonitoringStore::new(self.database.clone());
        let subjects = Arc::new(SubjectStore::new(self.database.clone(), self.keys, services, self.log.clone()));
        // Values in clear read as they are meanwhile, so the service need not wait for this.
        tokio::spawn({
            let subjects = subjects.clone();
            async move {
                match subjects.seal_clear_values().await {
                    Ok(0) => {}
                    Ok(sealed) => {
                        tracing::info!(values = sealed, "subject requests' and reviews' values stored in clear sealed")
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot seal the subject requests' and reviews' values stored in clear")
                    }
                }
            }
        });
        tokio::spawn(refresh_drift_gauge(monitoring.clone(), shutdown.clone()));
        tokio::spawn(fail_interrupted_requests(subjects.clone(), shutdown.clone()));
        tokio::spawn(recheck_logs(self.log.clone(), shutdown.clone()));
        tokio::spawn(own_events::keep_draining(self.log.clone(), self.database.clone(), shutdown.clone()));
        let reporter = Reporter::new(self.log.clone(), inventory.clone(), monitoring.clone(), subjects.clone());
        let routes = Routes::new(AuditLogServer::with_interceptor(AuditLogApi::new(self.log), authenticate.clone()))
            .add_service(ModelInventoryServer::with_interceptor(
                ModelInventoryApi::new(inventory.clone()),
                authenticate.clone(),
            ))
            .add_service(MonitoringServer::with_interceptor(
                MonitoringApi::new(monitoring, inventory),
                authenticate.clone(),
            ))
            .add_service(SubjectRequestsServer::with_interceptor(
                SubjectRequestsApi::new(subjects),
                authenticate.clone(),
            ))
            .add_service(ReportsServer::with_interceptor(ReportsApi::new(Arc::new(reporter)), authenticate));
        let names = [
            audit_log_server::SERVICE_NAME,
            model_inventory_server::SERVICE_NAME,
            monitoring_server::SERVICE_NAME,
            subject_requests_server::SERVICE_NAME,
            reports_server::SERVICE_NAME,
        ];
        let served = self.listener.serve(routes, &names, self.verifier, shutdown).await;
        self.database.close().await;
        served
    }
}

/// How often the drift gauge is brought up to the last hour when no report comes.
const DRIFT_GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a subject request may stay `running` (its services asked) before it is taken for one
/// a stop of the process cut short: twice the longest its services are waited for
/// ([`subjects::FAN_OUT_WITHIN`]).
pub const RUNNING_FOR_AT_MOST: std::time::Duration = std::time::Duration::from_secs(600);

/// How often the logs a process has loaded are read afresh from the database (see
/// [`LogStore::recheck`]).
const LOG_RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Checks every stored log once at start ([`LogStore::check_stored`]), then rechecks the loaded
/// logs every [`LOG_RECHECK_EVERY`] until `shutdown`.
async fn recheck_logs(log: Arc<LogStore>, shutdown: Shutdown) {
    match log.check_stored().await {
        Ok(0) => {}
        Ok(found) => tracing::error!(logs = found, "stored audit logs were changed since they were signed"),
        Err(error) => tracing::warn!(%error, "the stored audit logs were not checked at start"),
    }
    loop {
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(LOG_RECHECK_EVERY) => {}
        }
        log.recheck().await;
    }
}

/// Marks failed, at start and every minute, the subject requests a stop left `running`.
async fn fail_interrupted_requests(subjects: Arc<SubjectStore>, shutdown: Shutdown) {
    loop {
        if let Err(error) = subjects.fail_interrupted(RUNNING_FOR_AT_MOST).await {
            tracing::warn!(%error, "subject requests cut short by a stop are not marked failed yet");
        }
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
    }
}

/// Keeps the drift gauge to the last hour (see [`MonitoringStore::refresh_drift_gauge`]): at the
/// start, then every [`DRIFT_GAUGE_REFRESH`], until `shutdown`.
async fn refresh_drift_gauge(monitoring: MonitoringStore, shutdown: Shutdown) {
    loop {
        if let Err(error) = monitoring.refresh_drift_gauge().await {
            tracing::warn!(%error, "the drift gauge is not refreshed");
        }
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(DRIFT_GAUGE_REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid_and_a_bad_key_is_refused() {
        assert!(Config::default().validate().is_ok());
        let bad = Config { signing_key: Some("not a key".into()), ..Config::default() };
        assert!(bad.validate().is_err());
        assert!(
            !format!("{:?}", Config { signing_key: Some("c2VjcmV0".into()), ..Config::default() }).contains("c2VjcmV0")
        );
        let bad = Config { master_key: Some("short".into()), ..Config::default() };
        assert!(bad.validate().is_err());
        let master_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let good = Config { master_key: Some(master_key.into()), ..Config::default() };
        assert!(good.validate().is_ok());
        assert!(!format!("{good:?}").contains(master_key));
    }
}
