//! What the `aigronova` binary does: `up` runs the gateway and every implemented service in one
//! process with embedded storage; `serve <service>` runs one of them, as each Kubernetes pod
//! does. Calls between them are real gRPC in both modes.

#![forbid(unsafe_code)]

pub mod audit;

/// Every process of the platform allocates through mimalloc: the gateway's and the services'
/// request paths make many small, short-lived allocations (headers, JSON, protobuf messages),
/// which it serves faster than the system allocator, with less contention between threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use aigronova_ai_governance::AiGovernanceService;
use aigronova_finquantum::FinQuantumService;
use aigronova_gateway::{AdminKey, Gateway};
use aigronova_healthquantum::HealthQuantumService;
use aigronova_platform::{
    Shutdown,
    audit::RelayConfig,
    auth::{InternalAuthConfig, TokenSigner, TokenVerifier},
    config::{ConfigError, InferenceConfig, TelemetryConfig, Validate},
};
use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

/// Exit code for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// The environment variable holding the administrator key to install.
pub const ADMIN_KEY_ENV: &str = "AIGRONOVA_ADMIN_KEY";

/// The shortest administrator key `AIGRONOVA_ADMIN_KEY` may set.
const MIN_ADMIN_KEY_CHARS: usize = 32;

/// How long the services of the process have to serve once started.
const SERVING_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(
    name = "aigronova",
    version,
    about = "AigroNova AI platform: the HTTP gateway and the domain services in one binary",
    long_about = "AigroNova AI platform: the HTTP gateway and the domain services in one binary.\n\n\
        `aigronova up` runs everything in one process with embedded storage (SQLite files under the data \
        directory): the way to run it on a laptop.\n\
        `aigronova serve <service>` runs one service, configured by a TOML file and AIGRONOVA__SECTION__KEY \
        environment variables: the way each Kubernetes pod runs it."
)]
pub struct Cli {
    /// TOML configuration file of `up` and `serve` (defaults < file < AIGRONOVA__SECTION__KEY
    /// variables); `keygen` and `audit` read none, and take their settings as options.
    #[arg(long, global = true, env = "AIGRONOVA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway and every implemented service in one process, with embedded storage.
    ///
    /// Prints the URL and, on the first start, the administrator key (unless AIGRONOVA_ADMIN_KEY
    /// gives one). Stop with Ctrl-C; in-flight calls are drained.
    Up {
        /// Address of the HTTP API [default: gateway.http_addr of the configuration, 127.0.0.1:8080]
        #[arg(long)]
        http_addr: Option<SocketAddr>,
        /// Folder of the embedded databases; created when missing.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Run one service (the gateway or a domain service), as a Kubernetes pod does.
    ///
    /// The gateway needs internal_auth.signing_key and its gateway.upstreams; a domain service
    /// needs internal_auth.verifying_key. `aigronova keygen` makes a key pair.
    Serve {
        /// The service to run.
        service: Service,
    },
    /// Print new keys as configuration variables: the gateway's internal token key pair, the
    /// services' key, ai-governance's checkpoint signing key, and the master keys of
    /// healthquantum, finquantum and ai-governance.
    Keygen,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the audit log of the API key's tenant, or one entry, against the signed checkpoint.
    ///
    /// Reads the checkpoint and every entry through the gateway, checks the checkpoint's Ed25519
    /// signature, hashes each entry again into the RFC 6962 Merkle tree and compares the root.
    /// Exits 0 when the log verifies, 1 with the first bad index when it does not, 2 when it
    /// cannot be verified (gateway unreachable, key refused, checkpoint signature invalid).
    Verify(audit::VerifyArgs),
    /// Print each tenant's tree size and Merkle root, recomputed from ai-governance's database.
    ///
    /// One line per tenant: tenant id, tree size and hex RFC 6962 root, tab-separated, computed
    /// from the stored leaf texts alone. Backups record them and restores compare them. Exits 0,
    /// or 2 when the database cannot be read.
    Roots(audit::RootsArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Service {
    Gateway,
    Healthquantum,
    Finquantum,
    AiGovernance,
}

/// The whole configuration of a process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub telemetry: TelemetryConfig,
    pub inference: InferenceConfig,
    pub internal_auth: InternalAuthConfig,
    pub audit: RelayConfig,
    pub gateway: aigronova_gateway::Config,
    pub healthquantum: aigronova_healthquantum::Config,
    pub finquantum: aigronova_finquantum::Config,
    pub ai_governance: aigronova_ai_governance::Config,
}

impl Validate for AppConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.telemetry.validate()?;
        self.inference.validate()?;
        self.internal_auth.validate()?;
        self.audit.validate()?;
        self.gateway.validate()?;
        self.healthquantum.validate()?;
        self.finquantum.validate()?;
        self.ai_governance.validate()
    }
}

impl AppConfig {
    /// Embedded storage under `data_dir` and loopback ports chosen by the system, as `up` runs,
    /// the HTTP API on `http_addr` when given (`gateway.http_addr` otherwise). A database, object
    /// store or key file the configuration names (a file, `AIGRONOVA__…`) is kept: `up` can run
    /// against PostgreSQL too.
    pub fn embedded(mut self, http_addr: Option<SocketAddr>, data_dir: &Path) -> Self {
        let defaults = AppConfig::default();
        let sqlite = |name: &str| format!("sqlite://{}", data_dir.join(name).display());
        fn unless_set<T: PartialEq>(value: &mut T, default: &T, embedded: T) {
            if value == default {
                *value = embedded;
            }
        }
        if let Some(http_addr) = http_addr {
            self.gateway.http_addr = http_addr;
        }
        unless_set(&mut self.gateway.database_url, &defaults.gateway.database_url, sqlite("gateway.db"));
        let health = &defaults.healthquantum;
        unless_set(&mut self.healthquantum.database_url, &health.database_url, sqlite("healthquantum.db"));
        self.healthquantum.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        unless_set(
            &mut self.healthquantum.master_key_file,
            &health.master_key_file,
            data_dir.join("healthquantum-master.key"),
        );
        unless_set(
            &mut self.healthquantum.objects_url,
            &health.objects_url,
            format!("file://{}", data_dir.join("healthquantum-objects").display()),
        );
        let fin = &defaults.finquantum;
        unless_set(&mut self.finquantum.database_url, &fin.database_url, sqlite("finquantum.db"));
        self.finquantum.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        unless_set(&mut self.finquantum.master_key_file, &fin.master_key_file, data_dir.join("finquantum-master.key"));
        self.finquantum.sandbox = true;
        let governance = &defaults.ai_governance;
        unless_set(&mut self.ai_governance.database_url, &governance.database_url, sqlite("ai-governance.db"));
        unless_set(
            &mut self.ai_governance.signing_key_file,
            &governance.signing_key_file,
            data_dir.join("ai-governance-checkpoint.key"),
        );
        unless_set(
            &mut self.ai_governance.master_key_file,
            &governance.master_key_file,
            data_dir.join("ai-governance-master.key"),
        );
        self.ai_governance.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        self
    }
}

/// The platform running in this process.
pub struct Platform {
    pub http_addr: SocketAddr,
    /// The gRPC address of each service, by name.
    pub services: std::collections::BTreeMap<&'static str, SocketAddr>,
    /// The gateway's configuration as started, the services' actual addresses included.
    pub gateway_config: aigronova_gateway::Config,
    tasks: JoinSet<anyhow::Result<()>>,
    /// The stage of each task, by the order the servers stop in: the gateway first (on the
    /// process's shutdown), draining its calls while the services still answer; then the
    /// services, whose relays and monitors send ai-governance their last events and summaries;
    /// then ai-governance.
    stages: std::collections::HashMap<tokio::task::Id, usize>,
    /// Each stage's shutdown, the first being the process's.
    stops: [Shutdown; 3],
}

impl Platform {
    /// Starts every implemented service, then the gateway wired to their actual ports.
    ///
    /// ai-governance runs in this process unless `audit.governance_url` names one elsewhere; the
    /// services' relays and the gateway's `ai-governance` upstream point at it.
    pub async fn start(config: &AppConfig, admin_key: AdminKey<'_>, shutdown: Shutdown) -> anyhow::Result<Self> {
        let signer = match &config.internal_auth.signing_key {
            Some(key) => TokenSigner::from_base64(key)?,
            None => TokenSigner::generate(),
        };
        let service_signer = match &config.internal_auth.service_signing_key {
            Some(key) => TokenSigner::from_base64(key)?,
            None => TokenSigner::generate(),
        };
        let mut services = std::collections::BTreeMap::new();
        let mut tasks = JoinSet::new();
        let mut audit = config.audit.clone();
        let mut governance = None;
        if audit.governance_url.is_none() {
            let built =
                AiGovernanceService::build(&config.ai_governance, signer.verifier(), Some(service_signer.clone()))
                    .await?;
            services.insert(aigronova_ai_governance::SERVICE_NAME, built.local_addr());
            audit.governance_url = Some(format!("http://{}", built.local_addr()));
            governance = Some(built);
        }
        let link = aigronova_healthquantum::Governance { relay: audit.clone(), signer: Some(service_signer.clone()) };
        let health =
            HealthQuantumService::build(&config.healthquantum, &config.inference, signer.verifier(), link).await?;
        services.insert(aigronova_healthquantum::SERVICE_NAME, health.local_addr());
        let link = aigronova_finquantum::Governance { relay: audit.clone(), signer: Some(service_signer) };
        let fin = FinQuantumService::build(&config.finquantum, &config.inference, signer.verifier(), link).await?;
        services.insert(aigronova_finquantum::SERVICE_NAME, fin.local_addr());
        let mut gateway_config = config.gateway.clone();
        // The gateway calls the services of this process through their routes; their gRPC ports
        // serve every other client.
        let mut in_process = std::collections::BTreeMap::new();
        for (name, address, endpoint) in [
            (aigronova_healthquantum::SERVICE_NAME, health.local_addr(), health.local_endpoint()),
            (aigronova_finquantum::SERVICE_NAME, fin.local_addr(), fin.local_endpoint()),
        ] {
            let url = format!("http://{address}");
            if let Some(governance) = governance.as_mut() {
                governance.add_data_subject_service(name, &url);
            }
            gateway_config.upstreams.insert(name.to_owned(), url);
            in_process.insert(name.to_owned(), endpoint);
        }
        let stops = [shutdown, Shutdown::new(), Shutdown::new()];
        let mut stages = std::collections::HashMap::new();
        if let Some(governance) = governance {
            if !config.gateway.upstreams.contains_key(aigronova_ai_governance::SERVICE_NAME) {
                in_process.insert(aigronova_ai_governance::SERVICE_NAME.to_owned(), governance.local_endpoint());
            }
            stages.insert(tasks.spawn(governance.run_until_stopped(stops[2].clone())).id(), 2);
        }
        if let Some(url) = &audit.governance_url {
            gateway_config
                .upstreams
                .entry(aigronova_ai_governance::SERVICE_NAME.to_owned())
                .or_insert_with(|| url.clone());
        }
        let gateway = Gateway::build_in_process(&gateway_config, signer, admin_key, &in_process).await?;
        let http_addr = gateway.local_addr();
        stages.insert(tasks.spawn(health.run_until_stopped(stops[1].clone())).id(), 1);
        stages.insert(tasks.spawn(fin.run_until_stopped(stops[1].clone())).id(), 1);
        stages.insert(tasks.spawn(gateway.run_until_stopped(stops[0].clone())).id(), 0);
        // Started once the services the gateway calls in this process serve there: a call right
        // after the start finds them (over gRPC their bound ports hold the first calls until then).
        // A stop asked for meanwhile is the stages' to carry out, once started.
        let serving = async {
            for endpoint in in_process.values() {
                endpoint.serving().await;
            }
        };
        tokio::time::timeout(SERVING_WITHIN, serving)
            .await
            .map_err(|_| anyhow::anyhow!("the services did not serve within {} s", SERVING_WITHIN.as_secs()))?;
        Ok(Self { http_addr, services, gateway_config, tasks, stages, stops })
    }

    /// Waits until every server has stopped, stage after stage once the process's shutdown is
    /// triggered; the first failure stops the wait.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut left = [0; 3];
        for stage in self.stages.values() {
            left[*stage] += 1;
        }
        let mut stopping = 0;
        loop {
            // A stage is told to stop once every server of the stages before it has stopped.
            while stopping < left.len() && left[stopping] == 0 {
                stopping += 1;
                if let Some(stop) = self.stops.get(stopping) {
                    stop.trigger();
                }
            }
            let Some(joined) = self.tasks.join_next_with_id().await else { return Ok(()) };
            let (id, result) = match joined {
                Ok((id, result)) => (id, result),
                Err(error) => (error.id(), Err(error.into())),
            };
            result?;
            if let Some(stage) = self.stages.get(&id) {
                left[*stage] -= 1;
            }
        }
    }
}

/// Runs the command; the binary's whole `main`.
pub fn main(cli: Cli) -> ExitCode {
    if matches!(cli.command, Command::Keygen) {
        let signer = TokenSigner::generate();
        let checkpoints = aigronova_ai_governance::checkpoint::CheckpointSigner::generate();
        let keys = format!(
            "AIGRONOVA__INTERNAL_AUTH__SIGNING_KEY={}\nAIGRONOVA__INTERNAL_AUTH__VERIFYING_KEY={}\n\
             AIGRONOVA__INTERNAL_AUTH__SERVICE_SIGNING_KEY={}\nAIGRONOVA__AI_GOVERNANCE__SIGNING_KEY={}\n\
             AIGRONOVA__HEALTHQUANTUM__MASTER_KEY={}\nAIGRONOVA__FINQUANTUM__MASTER_KEY={}\n\
             AIGRONOVA__AI_GOVERNANCE__MASTER_KEY={}\n",
            signer.to_base64(),
            signer.verifier().to_base64(),
            TokenSigner::generate().to_base64(),
            checkpoints.to_base64(),
            TokenSigner::generate().to_base64(),
            TokenSigner::generate().to_base64(),
            TokenSigner::generate().to_base64(),
        );
        // A reader that stops early (`| head -1`) is no failure of the keys; any other is.
        return match std::io::Write::write_all(&mut std::io::stdout().lock(), keys.as_bytes()) {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("aigronova: cannot write the keys: {error}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        };
    }
    if let Command::Audit { command } = &cli.command {
        return match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => ExitCode::from(runtime.block_on(async {
                match command {
                    AuditCommand::Verify(args) => audit::run(args).await,
                    AuditCommand::Roots(args) => audit::roots(args).await,
                }
            })),
            Err(error) => {
                eprintln!("aigronova: cannot start the async runtime: {error}");
                ExitCode::from(2)
            }
        };
    }
    // The databases, the object store and the keys hold personal data and secrets: every file and
    // folder the platform makes is its owner's only, whatever the folder it is made in allows.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = match aigronova_platform::config::load::<AppConfig>(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("aigronova: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("aigronova: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = message_of(&error);
            tracing::error!(error = message, "aigronova stopped on an error");
            eprintln!("aigronova: {message}");
            let inference = error.downcast_ref::<aigronova_platform::inference::InferenceError>();
            if error.downcast_ref::<ConfigError>().is_some() || inference.is_some_and(|error| error.is_configuration())
            {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `error` and its causes, each once: a cause whose text its wrapper already ends with (as
/// sqlx's errors repeat the database's) is left out.
fn message_of(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Starts `GET /metrics` on `telemetry.metrics_addr`, when set, for a domain service run alone.
async fn serve_metrics(config: &AppConfig, shutdown: &Shutdown) -> anyhow::Result<()> {
    if let Some(addr) = config.telemetry.metrics_addr {
        let listener = aigronova_platform::metrics_http::MetricsListener::bind(addr)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen for metrics on {addr}: {error}"))?;
        tokio::spawn(listener.serve(shutdown.clone()));
    }
    Ok(())
}

/// The key a domain service verifies internal tokens with.
fn service_verifier(config: &AppConfig) -> Result<TokenVerifier, ConfigError> {
    let key = config.internal_auth.verifying_key.as_deref().ok_or_else(|| {
        ConfigError("internal_auth.verifying_key is required to serve a service (see `aigronova keygen`)".into())
    })?;
    TokenVerifier::from_base64(key)
}

/// Makes `dir` when missing, readable by its owner only: it holds the databases, the master keys
/// and the object store. A folder that exists keeps its permissions.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|error| anyhow::Error::new(error).context(format!("cannot create {}", dir.display())))
}

/// Deletes the `admin-key` file a first start wrote, if there is one.
fn remove_admin_key_file(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join("admin-key");
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "the administrator key file of a first start was deleted: AIGRONOVA_ADMIN_KEY replaces that key");
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(anyhow::Error::new(error).context(format!("cannot delete {}", path.display()))),
    }
}

/// How `up` hands over the administrator key it generated, before the key is stored: shown to a
/// person at a terminal; otherwise, since standard error may be going to a log file, written to
/// `admin-key` in the data directory (readable by its owner only), whose path is shown instead.
/// The key is made only once: when that file cannot be written, it is shown after all.
fn admin_key_notice(key: &str, data_dir: &Path) -> String {
    let shown = format!("Administrator key (shown once; keep it, or set {ADMIN_KEY_ENV} on the next start): {key}\n");
    if std::io::stderr().is_terminal() {
        return shown;
    }
    let path = data_dir.join("admin-key");
    let written = match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => aigronova_platform::crypto::create_secret_file(&path, &format!("{key}\n")),
    };
    match written {
        Ok(()) => format!(
            "Administrator key written to {} (readable by you only; keep the key and delete the file, or set \
             {ADMIN_KEY_ENV} on the next start)\n",
            path.display()
        ),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "cannot write the administrator key to its file");
            shown
        }
    }
}

async fn run(command: Command, config: AppConfig) -> anyhow::Result<()> {
    let service_name = match &command {
        Command::Up { .. } => "aigronova",
        Command::Serve { service: Service::Gateway } => "gateway",
        Command::Serve { service: Service::Healthquantum } => aigronova_healthquantum::SERVICE_NAME,
        Command::Serve { service: Service::Finquantum } => aigronova_finquantum::SERVICE_NAME,
        Command::Serve { service: Service::AiGovernance } => aigronova_ai_governance::SERVICE_NAME,
        Command::Keygen | Command::Audit { .. } => unreachable!("handled before the runtime starts"),
    };
    let _telemetry = aigronova_platform::telemetry::init(&config.telemetry, service_name)?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let admin_key = std::env::var(ADMIN_KEY_ENV).ok().filter(|key| !key.is_empty());
    if let Some(key) = &admin_key
        // A dot or a leading brace would make the gateway read the key as a JWT.
        && (key.len() < MIN_ADMIN_KEY_CHARS
            || !key.bytes().all(|byte| byte.is_ascii_graphic())
            || key.contains('.')
            || key.starts_with('{'))
    {
        return Err(ConfigError(format!(
            "{ADMIN_KEY_ENV} must be at least {MIN_ADMIN_KEY_CHARS} visible ASCII characters, without spaces or dots \
             and not starting with a brace, which mark a JWT (e.g. agk_$(openssl rand -hex 32))"
        ))
        .into());
    }
    match command {
        Command::Up { http_addr, data_dir } => {
            // `up` runs these services itself and points the gateway at them: a setting naming
            // others would be ignored, so it is refused (ai-governance's is taken, as elsewhere).
            let elsewhere: Vec<&String> = config
                .gateway
                .upstreams
                .keys()
                .filter(|name| {
                    [aigronova_healthquantum::SERVICE_NAME, aigronova_finquantum::SERVICE_NAME].contains(&name.as_str())
                })
                .collect();
            if let Some(name) = elsewhere.first() {
                return Err(ConfigError(format!(
                    "gateway.upstreams.{name} is set, but `aigronova up` runs {name} itself and points the gateway at \
                     it: leave it unset, or run `aigronova serve gateway` to use services elsewhere"
                ))
                .into());
            }
            create_private_dir(&data_dir)?;
            let config = config.embedded(http_addr, &data_dir);
            // On standard error, whose lines are for a person: standard output carries the JSON
            // logs. One write each, so that log lines cannot fall in between.
            let admin_key = match &admin_key {
                Some(key) => AdminKey::Given(key),
                None => {
                    let data_dir = data_dir.clone();
                    AdminKey::FirstStart(Box::new(move |key| {
                        eprint!("{}", admin_key_notice(key, &data_dir));
                        true
                    }))
                }
            };
            let given = matches!(admin_key, AdminKey::Given(_));
            let platform = Platform::start(&config, admin_key, shutdown).await?;
            if given {
                // A first start's key file holds a key this one has replaced, and revoked.
                remove_admin_key_file(&data_dir)?;
            }
            eprint!("AigroNova is up at http://{}\nData directory: {}\n", platform.http_addr, data_dir.display());
            platform.wait().await
        }
        Command::Serve { service: Service::Gateway } => {
            let key = config.internal_auth.signing_key.as_deref().ok_or_else(|| {
                ConfigError(
                    "internal_auth.signing_key is required to serve the gateway (see `aigronova keygen`)".into(),
                )
            })?;
            let admin_key = match &admin_key {
                Some(key) => AdminKey::Given(key),
                // A deployment's standard error goes to its log collector: a key is made for a
                // person at a terminal only.
                None => AdminKey::FirstStart(Box::new(|key| {
                    let terminal = std::io::stderr().is_terminal();
                    if terminal {
                        eprintln!(
                            "Administrator key (shown once; keep it, or set {ADMIN_KEY_ENV} on the next start): {key}"
                        );
                    }
                    terminal
                })),
            };
            let gateway = Gateway::build(&config.gateway, TokenSigner::from_base64(key)?, admin_key).await?;
            gateway.run_until_stopped(shutdown).await
        }
        Command::Serve { service: Service::Healthquantum } => {
            serve_metrics(&config, &shutdown).await?;
            let verifier = service_verifier(&config)?;
            let signer =
                config.internal_auth.service_signing_key.as_deref().map(TokenSigner::from_base64).transpose()?;
            let governance = aigronova_healthquantum::Governance { relay: config.audit.clone(), signer };
            let service =
                HealthQuantumService::build(&config.healthquantum, &config.inference, verifier, governance).await?;
            service.run_until_stopped(shutdown).await
        }
        Command::Serve { service: Service::Finquantum } => {
            serve_metrics(&config, &shutdown).await?;
            let verifier = service_verifier(&config)?;
            let signer =
                config.internal_auth.service_signing_key.as_deref().map(TokenSigner::from_base64).transpose()?;
            let governance = aigronova_finquantum::Governance { relay: config.audit.clone(), signer };
            let service = FinQuantumService::build(&config.finquantum, &config.inference, verifier, governance).await?;
            service.run_until_stopped(shutdown).await
        }
        Command::Serve { service: Service::AiGovernance } => {
            serve_metrics(&config, &shutdown).await?;
            let services_key =
                config.internal_auth.service_signing_key.as_deref().map(TokenSigner::from_base64).transpose()?;
            let service =
                AiGovernanceService::build(&config.ai_governance, service_verifier(&config)?, services_key).await?;
            service.run_until_stopped(shutdown).await
        }
        Command::Keygen | Command::Audit { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_told_with_each_cause_once() {
        /// As sqlx's database errors: the cause in the text, and as the source too.
        #[derive(Debug)]
        struct Repeating(std::io::Error);
        impl std::fmt::Display for Repeating {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "error returned from database: {}", self.0)
            }
        }
        impl std::error::Error for Repeating {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let cause = std::io::Error::other("database \"x\" does not exist");
        let error = anyhow::Error::new(Repeating(cause)).context("cannot open the database");
        assert_eq!(
            message_of(&error),
            "cannot open the database: error returned from database: database \"x\" does not exist"
        );
        let plain = anyhow::anyhow!("refused").context("cannot listen");
        assert_eq!(message_of(&plain), "cannot listen: refused");
    }

    #[test]
    fn up_keeps_its_storage_under_the_data_dir_unless_the_configuration_names_another() {
        let data_dir = Path::new("/srv/aigronova");
        let addr = Some(SocketAddr::from(([127, 0, 0, 1], 8081)));
        let embedded = AppConfig::default().embedded(addr, data_dir);
        assert_eq!(embedded.gateway.http_addr, SocketAddr::from(([127, 0, 0, 1], 8081)));
        assert_eq!(embedded.gateway.database_url, "sqlite:///srv/aigronova/gateway.db");
        assert_eq!(embedded.healthquantum.master_key_file, data_dir.join("healthquantum-master.key"));
        assert_eq!(embedded.ai_governance.master_key_file, data_dir.join("ai-governance-master.key"));

        let mut configured = AppConfig::default();
        configured.gateway.database_url = "postgres://gw@db/gateway".into();
        configured.finquantum.database_url = "postgres://fin@db/fin".into();
        configured.gateway.http_addr = SocketAddr::from(([0, 0, 0, 0], 9000));
        let embedded = configured.clone().embedded(None, data_dir);
        assert_eq!(embedded.gateway.http_addr, SocketAddr::from(([0, 0, 0, 0], 9000)), "the configuration's");
        let embedded = configured.embedded(addr, data_dir);
        assert_eq!(embedded.gateway.database_url, "postgres://gw@db/gateway");
        assert_eq!(embedded.finquantum.database_url, "postgres://fin@db/fin");
        assert_eq!(embedded.healthquantum.database_url, "sqlite:///srv/aigronova/healthquantum.db");
    }
}
