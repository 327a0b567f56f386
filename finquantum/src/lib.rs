//! FinQuantum: financial data from Open Finance Brasil under the customer's consent, credit-risk
//! scoring with reasons, and monthly statements, served over gRPC (`aigronova.fin.v1.FinQuantum`).
//!
//! [`FinQuantumService::build`] connects the database and runs the migrations, loads the model,
//! connects the response cache and binds the listener; [`FinQuantumService::run_until_stopped`]
//! serves until the shutdown signal, while a purge deletes the data of revoked and expired
//! consents. Every call must carry the gateway's internal token, and acts only on its tenant.

#![forbid(unsafe_code)]
// Money in cents is written with its reais apart: `2_500_00` is R$ 2,500.00.
#![allow(clippy::inconsistent_digit_grouping)]

pub mod consent;
mod grpc;
pub mod openfinance;
pub mod sandbox;
pub mod scoring;
pub mod statement;
pub mod store;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use aigronova_platform::{
    Shutdown,
    audit::{AuditEvent, EventKind, GovernanceLink, OutboxWaker, Relay},
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
    fin::v1::fin_quantum_server::{self, FinQuantumServer},
};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tonic::service::{Routes, interceptor::InterceptedService};

use crate::{
    grpc::FinQuantumApi,
    openfinance::{ClientSettings, OpenFinanceClient, ResponseCache},
    store::Store,
};

/// The name of this service in configuration, logs and `aigronova serve`.
pub const SERVICE_NAME: &str = "finquantum";

/// The third party whose failures finquantum reports as such (`platform::error::third_party_failure`).
const INSTITUTION_PARTY: &str = "open-finance-institution";

/// The models this service serves.
pub const MODELS: &[&str] = &[scoring::MODEL];

static MIGRATOR: Migrator = sqlx::migrate!();

/// The tables that hold a tenant's rows, under row-level security on PostgreSQL.
const TENANT_TABLES: &[&str] = &[
    "customers",
    "consents",
    "accounts",
    "consent_accounts",
    "transactions",
    "credit_scores",
    "audit_outbox",
    "audit_outbox_refused",
    "tenant_keys",
];

/// The `finquantum` configuration section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address, default 127.0.0.1:50063.
    pub grpc_addr: SocketAddr,
    /// `sqlite://<path>` (embedded) or `postgres://…`, default `sqlite://data/finquantum.db`.
    pub database_url: String,
    /// The master key that wraps the tenants' data keys (base64 32 bytes, a secret). When unset,
    /// `master_key_file` is used.
    pub master_key: Option<String>,
    /// File holding the master key; created with a new key (mode 0600) when missing.
    pub master_key_file: PathBuf,
    /// The Open Finance institutions consents may name: name → base URL of its APIs (the part
    /// before `/open-banking/...`).
    pub institutions: BTreeMap<String, String>,
    /// Redis for the institutions' response cache, shared by replicas; in-process when unset.
    pub redis_url: Option<String>,
    /// Prefix of the cache's Redis keys, so that deployments sharing one Redis keep theirs apart.
    pub redis_key_prefix: String,
    /// Seconds a fetched page is reused, default 300.
    pub cache_ttl_secs: u64,
    /// Deadline of one request to an institution, in milliseconds, default 4000: a second attempt
    /// fits within the gateway's default 10 s for the call.
    pub request_timeout_ms: u64,
    /// Attempts of one request to an institution, the first included, default 3.
    pub request_attempts: u32,
    /// Seconds between purges of the data of revoked and expired consents, default 60.
    pub purge_interval_secs: u64,
    /// Seconds the data of a revoked consent is kept before the purge deletes it, default 0.
    pub revoked_data_retention_secs: u64,
    /// Also start the sandbox institution (synthetic data, see [`sandbox`]) on a loopback port,
    /// as the institution `sandbox`. `aigronova up` turns it on; never in production.
    pub sandbox: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 50063)),
            database_url: "sqlite://data/finquantum.db".into(),
            master_key: None,
            master_key_file: PathBuf::from("data/finquantum-master.key"),
            institutions: BTreeMap::new(),
            redis_url: None,
            redis_key_prefix: "aigronova:finquantum:".into(),
            cache_ttl_secs: 300,
            request_timeout_ms: 4_000,
            request_attempts: 3,
            purge_interval_secs: 60,
            revoked_data_retention_secs: 0,
            sandbox: false,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.master_key {
            aigronova_platform::crypto::decode_master_key(key, "finquantum.master_key")?;
        }
        self.database_url.parse::<Backend>().map_err(|_| {
            ConfigError("finquantum.database_url must start with sqlite:, postgres: or postgresql:".into())
        })?;
        for (name, url) in &self.institutions {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError(format!("finquantum.institutions.{name} must be an http(s) URL")));
            }
        }
        let prefix = &self.redis_key_prefix;
        if prefix.is_empty() || prefix.chars().count() > 64 || prefix.contains(char::is_whitespace) {
            return Err(ConfigError(format!(
                "finquantum.redis_key_prefix must be 1 to 64 characters without spaces, got {prefix:?}"
            )));
        }
        if self.request_attempts == 0 || self.request_timeout_ms == 0 || self.purge_interval_secs == 0 {
            return Err(ConfigError(
                "finquantum.request_attempts, request_timeout_ms and purge_interval_secs must be above 0".into(),
            ));
        }
        Ok(())
    }
}

pub use aigronova_platform::audit::Governance;

/// A built service: database connected, model loaded, listener bound.
#[derive(Debug)]
pub struct FinQuantumService {
    listener: GrpcListener,
    database: Database,
    store: Store,
    api: FinQuantumApi,
    verifier: TokenVerifier,
    relay: Relay,
    governance: Governance,
    models: ModelRegistry,
    monitor: InferenceMonitor,
    open_inference: OpenInference,
    purge_interval: Duration,
    sandbox: Option<tokio::net::TcpListener>,
}

impl FinQuantumService {
    /// Connects the database (running the migrations), loads [`MODELS`], connects the response
    /// cache and binds `config.grpc_addr`; port 0 picks a free port, see [`Self::local_addr`].
    pub async fn build(
        config: &Config,
        inference: &InferenceConfig,
        verifier: TokenVerifier,
        governance: Governance,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let mut database =
            Database::connect(&config.database_url, &MIGRATOR).await.context("cannot open the finquantum database")?;
        database
            .enable_row_level_security(TENANT_TABLES)
            .await
            .context(aigronova_platform::storage::ROW_LEVEL_SECURITY_REFUSED)?;
        let keys = aigronova_platform::crypto::tenant_keys(
            &database,
            config.master_key.as_deref(),
            &config.master_key_file,
            "finquantum.master_key",
        )
        .await?;
        let models = ModelRegistry::load(inference, MODELS).context("cannot load the finquantum models")?;
        let words = scoring::ReasonWords::new(models.get(scoring::MODEL)?.manifest());
        let store = Store::new(database.clone(), keys.clone(), words);
        let cache = match &config.redis_url {
            Some(url) => ResponseCache::redis(url, &config.redis_key_prefix)
                .await
                .with_context(|| "cannot connect to finquantum.redis_url for the response cache".to_owned())?,
            None => ResponseCache::in_process(),
        };
        let settings = ClientSettings {
            timeout: Duration::from_millis(config.request_timeout_ms),
            attempts: config.request_attempts,
            cache_ttl: Duration::from_secs(config.cache_ttl_secs),
            ..ClientSettings::default()
        };
        let client = OpenFinanceClient::new(settings, cache).context("cannot build the Open Finance client")?;
        let mut institutions = config.institutions.clone();
        let sandbox = if config.sandbox {
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .context("cannot listen for the sandbox institution")?;
            institutions.entry(sandbox::NAME.to_owned()).or_insert(format!("http://{}", listener.local_addr()?));
            Some(listener)
        } else {
            None
        };
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
        let api = FinQuantumApi::new(
            store.clone(),
            models.clone(),
            relay.waker(),
            monitor.clone(),
            client,
            institutions,
            Duration::from_secs(config.revoked_data_retention_secs),
        );
        let open_inference = OpenInference::new(
            SERVICE_NAME,
            env!("CARGO_PKG_VERSION"),
            models.clone(),
            database.clone(),
            keys,
            monitor.clone(),
            relay.waker(),
        );
        Ok(Self {
            open_inference,
            listener,
            database,
            store,
            api,
            verifier,
            relay,
            governance,
            models,
            monitor,
            purge_interval: Duration::from_secs(config.purge_interval_secs),
            sandbox,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The service's routes, for the gateway when it runs in this process.
    pub fn local_endpoint(&self) -> aigronova_platform::grpc::LocalEndpoint {
        self.listener.local_endpoint()
    }

    /// Serves FinQuantum, DataSubject, health and reflection until `shutdown`, then drains
    /// in-flight calls and closes the database. Meanwhile the relay ships audit events, the
    /// model is registered in ai-governance's inventory, and the purge runs.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        if let Some(listener) = self.sandbox {
            tokio::spawn(sandbox::serve(listener, shutdown.clone()));
        }
        let purge = tokio::spawn(purge_loop(
            self.store,
            self.api.outbox(),
            self.api.cache(),
            self.purge_interval,
            shutdown.clone(),
        ));
        let link =
            GovernanceLink::start(SERVICE_NAME, &self.governance, self.relay, &self.models, self.monitor, &shutdown);
        let service_verifier = self.governance.signer.as_ref().map(TokenSigner::verifier);
        let data_subject = DataSubjectServer::with_interceptor(
            self.api.clone(),
            Authenticate::with_service_key(self.verifier.clone(), service_verifier),
        );
        let service = InterceptedService::new(
            FinQuantumServer::new(self.api).max_decoding_message_size(MAX_MESSAGE_BYTES),
            Authenticate::new(self.verifier.clone()),
        );
        let open_inference = self.open_inference.into_service(self.verifier.clone());
        let routes = Routes::new(service).add_service(data_subject).add_service(open_inference);
        let names = [
            fin_quantum_server::SERVICE_NAME,
            data_subject_server::SERVICE_NAME,
            aigronova_platform::open_inference::SERVICE_NAME,
        ];
        let stopping = shutdown.clone();
        let served = self.listener.serve(routes, &names, self.verifier, shutdown).await;
        // A server that failed rather than stopped leaves no stop for the purge to see.
        if !stopping.is_triggered() {
            purge.abort();
        }
        let _ = purge.await;
        if let Some(link) = link {
            link.join().await;
        }
        self.database.close().await;
        served
    }
}

/// Deletes the data of revoked and expired consents every `interval` until `shutdown`.
/// Each pass also seals what is still stored in clear ([`seal_clear`]).
async fn purge_loop(store: Store, outbox: OutboxWaker, cache: ResponseCache, interval: Duration, shutdown: Shutdown) {
    loop {
        purge_once(&store, &outbox, &cache).await;
        seal_clear(&store, &shutdown).await;
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Batches of sealing a purge pass runs at most: 10,000 rows of each table, whatever is left
/// waiting for the next pass.
const SEAL_BATCHES_A_PASS: usize = 20;

/// What the purge's pass seals when it finds it stored in clear.
#[derive(Clone, Copy)]
enum Clear {
    Names,
    Numbers,
    Inputs,
}

impl Clear {
    fn what(self) -> &'static str {
        match self {
            Clear::Names => "transaction names",
            Clear::Numbers => "account numbers",
            Clear::Inputs => "credit decisions' inputs",
        }
    }

    async fn seal(
        self,
        store: &Store,
        skip: &mut std::collections::BTreeSet<String>,
    ) -> Result<store::Sealing, aigronova_platform::Error> {
        match self {
            Clear::Names => store.seal_clear_names(skip).await,
            Clear::Numbers => store.seal_clear_numbers(skip).await,
            Clear::Inputs => store.seal_clear_inputs(skip).await,
        }
    }
}

/// Seals, a batch at a time, the transaction names, account numbers and credit decisions' inputs
/// stored in clear by an earlier version (or by one of its replicas still running during a rolling
/// upgrade); a failure is logged and tried again at the next pass.
async fn seal_clear(store: &Store, shutdown: &Shutdown) {
    for clear in [Clear::Names, Clear::Numbers, Clear::Inputs] {
        let what = clear.what();
        let (mut total, mut skip) = (0, std::collections::BTreeSet::new());
        for _ in 0..SEAL_BATCHES_A_PASS {
            if shutdown.is_triggered() {
                break;
            }
            match clear.seal(store, &mut skip).await {
                Ok(sealing) => {
                    total += sealing.sealed;
                    // A batch that was not full found all there was.
                    if sealing.selected < store::SEAL_BATCH as usize {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot seal the {what} stored in clear; tried again at the next purge");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(rows = total, "{what} stored in clear were sealed");
        }
    }
}

async fn purge_once(store: &Store, outbox: &OutboxWaker, cache: &ResponseCache) {
    let event = |purged: &store::Purged| AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: purged.tenant_id.clone(),
        service: SERVICE_NAME.to_owned(),
        kind: EventKind::PersonalDataChange,
        action: "fin.PurgeConsentData".to_owned(),
        actor: format!("service:{SERVICE_NAME}"),
        subject: format!("consent:{}", purged.consent_id),
        details: serde_json::json!({
            "accounts": purged.accounts,
            "transactions": purged.transactions,
            "keptUnder": purged.kept_under.iter().map(|heir| format!("consent:{heir}")).collect::<Vec<_>>(),
        }),
        occurred_at: aigronova_platform::time::stored(chrono::Utc::now()),
    };
    match store.purge_due(chrono::Utc::now(), event).await {
        Ok(purged) if !purged.is_empty() => {
            outbox.wake();
            for done in &purged {
                cache.forget_consent(&done.consent_id).await;
                match done.kept_under.as_slice() {
                    [_, ..] => tracing::info!(
                        tenant = %done.tenant_id,
                        consent = %done.consent_id,
                        kept_under = %done.kept_under.join(","),
                        accounts = done.accounts,
                        transactions = done.transactions,
                        "accounts of a revoked or expired consent handed to another valid consent that fetched them; \
                         the rest deleted"
                    ),
                    [] => tracing::info!(
                        tenant = %done.tenant_id,
                        consent = %done.consent_id,
                        accounts = done.accounts,
                        transactions = done.transactions,
                        "data of a revoked or expired consent deleted"
                    ),
                }
            }
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "purge of revoked and expired consents failed; retried next interval"),
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
    FinQuantumService::build(config, inference, verifier, governance).await?.run_until_stopped(shutdown).await
}

/// The id a transaction is stored and shown under: the institution's, unless it holds a payment
/// card number, which is then masked as in a name (see [`mask_card_numbers`]) and followed by `~`
/// and the first 16 hex digits of the tenant's keyed hash of the id, so that the same transaction
/// fetched again is still stored once and two such ids stay apart.
pub fn stored_transaction_id(cipher: &aigronova_platform::crypto::TenantCipher, id: &str) -> String {
    let masked = mask_card_numbers(id);
    if masked == id {
        return masked;
    }
    let digest = cipher.blind_index(&format!("transaction-id\u{0}{id}"));
    format!("{masked}~{}", &digest[..16])
}

/// For an id in the form [`stored_transaction_id`] gives an id that held a card number (masked,
/// `~`, 16 lowercase hex digits, which may read as a card number by chance), the id it is to be
/// stored under now: itself, or, when its masked part still shows a card number an earlier
/// masking missed, that part masked again with the digest kept (what the same id fetched now is
/// stored under). `None` for an id in any other form.
pub fn stored_card_id_now(id: &str) -> Option<String> {
    let (masked, digest) = id.rsplit_once('~')?;
    let stored_form = digest.len() == 16
        && digest.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        && masked.contains('*');
    stored_form.then(|| format!("{}~{digest}", mask_card_numbers_again(masked)))
}

/// A transaction's name as it is stored and shown: its payment card numbers masked
/// ([`mask_card_numbers`]) and the CPFs of the people it names (a Pix payee's) masked as Pix shows
/// them, `***.456.789-**` ([`aigronova_platform::cpf::mask_cpfs`]).
pub fn mask_name(text: &str) -> String {
    aigronova_platform::cpf::mask_cpfs(&mask_card_numbers(text))
}

/// [`mask_name`] for a name a masking gave (a sealed one): what it left kept as it is.
pub fn mask_name_again(text: &str) -> String {
    aigronova_platform::cpf::mask_cpfs(&mask_card_numbers_again(text))
}

/// `text` with every payment card number in it masked but for its last four digits: 13 to 19
/// digits (ASCII, full-width, or any script's decimal digits) passing the Luhn check, in one group or in groups split by spaces,
/// dashes, dots, commas, slashes, asterisks, underscores or invisible characters (up to five between two groups),
/// or by colons or vertical bars when the groups are laid out as cards print them (not a time's), also when other numbers stand next to them (`PARC 02 4111 1111 1111 1111`, `PARC 02/10 5555555555554444`,
/// `5555555555554444 1/3`, `5555 5555 5555 4444 12/27`).
pub fn mask_card_numbers(text: &str) -> String {
    mask(text, false)
}

/// [`mask_card_numbers`] for text a masking gave (a stored id, a sealed name): what it left
/// (`****1111`) kept as it is, so that masking it again changes nothing (an id stored masked is
/// found under the same id at the next ingestion). Text as an institution sent it is masked with
/// [`mask_card_numbers`]: asterisks before a card's digits there are no masking's.
pub fn mask_card_numbers_again(text: &str) -> String {
    mask(text, true)
}

fn mask(text: &str, again: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let masked_at = |at: usize| if again { masked_at(&chars, at) } else { None };
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    while index < chars.len() {
        if again && chars[index] == '*' {
            // A run of asterisks looked at once: what a masking left, kept, or the run as it is;
            // right after a digit, its first one parts that digit from what a masking left.
            let end = match masked_at(index) {
                Some(end) => end,
                None if index > 0 && is_digit(chars[index - 1]) => index + 1,
                None => index + chars[index..].iter().take_while(|c| **c == '*').count(),
            };
            out.extend(&chars[index..end]);
            index = end;
            continue;
        }
        if !is_digit(chars[index]) {
            out.push(chars[index]);
            index += 1;
            continue;
        }
        // The run: digits, with at most five separators between two of them, up to what a masking
        // left.
        let mut end = index;
        let mut digits = Vec::new();
        loop {
            while end < chars.len() && is_digit(chars[end]) {
                digits.push(end);
                end += 1;
            }
            let gap = chars[end..].iter().take_while(|c| is_card_separator(**c)).count();
            if gap == 0 || gap > 5 || !chars.get(end + gap).is_some_and(|c| is_digit(*c)) {
                break;
            }
            if (end + 1..end + gap).any(|at| masked_at(at).is_some()) {
                break;
            }
            end += gap;
        }
        out.push_str(&masked_run(&chars, index, end, &digits));
        index = end;
    }
    out
}

/// The end of what a masking left at `at` (four asterisks or more, not right after a digit, then
/// the digits kept), if it is there. Asterisks right after a digit part a card's groups instead.
fn masked_at(chars: &[char], at: usize) -> Option<usize> {
    if at > 0 && is_digit(chars[at - 1]) {
        return None;
    }
    let stars = chars[at..].iter().take_while(|c| **c == '*').count();
    let digits = chars[at + stars..].iter().take_while(|c| is_digit(**c)).count();
    (stars >= 4 && digits > 0).then_some(at + stars + digits)
}

fn is_digit(c: char) -> bool {
    aigronova_platform::text::decimal_digit(c).is_some()
}

/// What may stand between the groups of a card number's digits: spaces, punctuation that parts
/// numbers or wraps them, dashes of any length and invisible characters.
fn is_card_separator(c: char) -> bool {
    c.is_whitespace()
        || aigronova_platform::text::is_invisible(c)
        || matches!(c, '\u{2212}' | '\u{fe63}' | '\u{ff0c}'..='\u{ff0f}' | '\u{00ad}')
        || matches!(c, '-' | '.' | '/' | '_' | ',' | '*' | ':' | '|' | '\u{2010}'..='\u{2015}' | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}')
}

/// Card lengths in the order they are tried: the common 16 first, then Amex's 15, then the
/// rarer ones.
const CARD_LENGTHS: [usize; 7] = [16, 15, 19, 13, 14, 17, 18];

/// Whether groups of digits of these sizes are a card number as cards print it: one group, four
/// groups of four (and three more for 19 digits), Amex's 4-6-5 or Diners' 4-6-4.
fn printed_layout(sizes: &[usize]) -> bool {
    match sizes {
        [single] => (13..=19).contains(single),
        [4, 4, 4, 4] | [4, 4, 4, 4, 3] | [4, 6, 5] | [4, 6, 4] => true,
        _ => false,
    }
}

/// The run `chars[start..end]`, whose digits are at `digits`, with each card number in it masked.
/// Windows begin where a group of digits begins (a window anywhere inside a long number would
/// mask references and codes that are no card), and are taken in three passes, each length in the
/// order of [`CARD_LENGTHS`] across the run: whole groups laid out as cards print them (so that
/// `PARC 02/10 5555 5555 5555 4444` masks the card, not a window from `02` that passes the Luhn
/// check by chance), then whole groups in any layout, then from the start of a group of at most 19
/// digits into the middle of another. Not taken: a window of up to 15 digits right after a `+` (a
/// phone number), one with a digit of a CNPJ written as one (`NN.NNN.NNN/NNNN-NN`) or of a
/// boleto's bar code or digitable line, and one into a number glued to letters (a PIX id).
fn masked_run(chars: &[char], start: usize, end: usize, digits: &[usize]) -> String {
    let value: Vec<char> = digits.iter().map(|&at| chars[at]).collect();
    let group_starts: Vec<bool> = digits.iter().map(|&at| at == start || !is_digit(chars[at - 1])).collect();
    let group_ends: Vec<bool> =
        digits.iter().enumerate().map(|(n, &at)| digits.get(n + 1).is_none_or(|&next| next != at + 1)).collect();
    // Whether the separators before each digit hold a colon or a vertical bar, which part a
    // time's or a table's numbers (`2026-11-29 10:30:44`) and a card's groups only as printed.
    let after_colon: Vec<bool> = digits
        .iter()
        .enumerate()
        .map(|(n, &at)| n > 0 && chars[digits[n - 1] + 1..at].iter().any(|c| matches!(c, ':' | '|')))
        .collect();
    // Each digit's group, and each group's first digit and size.
    let mut group_of = Vec::with_capacity(digits.len());
    let (mut firsts, mut sizes): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for (digit, &starts) in group_starts.iter().enumerate() {
        if starts {
            firsts.push(digit);
            sizes.push(0);
        }
        *sizes.last_mut().expect("a run starts with a group") += 1;
        group_of.push(sizes.len() - 1);
    }
    // Whether the group of the digit at `first` touches a letter at either end.
    let glued = |first: usize| {
        let group = group_of[first];
        let (from, to) = (digits[firsts[group]], digits[firsts[group] + sizes[group] - 1]);
        (from > 0 && chars[from - 1].is_alphabetic()) || chars.get(to + 1).is_some_and(|c| c.is_alphabetic())
    };
    // For each digit, the end (one past the last digit) of the window that masks it.
    let mut window: Vec<Option<usize>> = vec![None; digits.len()];
    // The digits of a CNPJ written as one (`NN.NNN.NNN/NNNN-NN`), and of a boleto's bar code or
    // digitable line (44, 47 or 48 digits in one group, or laid out as banks print the line), are in
    // no window.
    let mut kept = vec![false; digits.len()];
    const KEPT_LAYOUTS: [&[usize]; 6] =
        [&[2, 3, 3, 4, 2], &[44], &[47], &[48], &[5, 5, 5, 6, 5, 6, 1, 14], &[11, 1, 11, 1, 11, 1, 11, 1]];
    for (group, &first) in firsts.iter().enumerate() {
        for layout in KEPT_LAYOUTS {
            if sizes.get(group..group + layout.len()) == Some(layout) {
                let length: usize = layout.iter().sum();
                kept[first..first + length].iter_mut().for_each(|taken| *taken = true);
            }
        }
    }
    for pass in 0..3 {
        // Every window of the pass that fits; windows that overlap are masked together, as which
        // of them is the card cannot be told (`3030 5105 1051 0510 5100` holds two).
        let mut found: Vec<(usize, usize)> = Vec::new();
        for length in CARD_LENGTHS {
            for first in (0..digits.len().saturating_sub(length - 1)).filter(|&first| group_starts[first]) {
                let last = first + length;
                let layout = &sizes[group_of[first]..=group_of[last - 1]];
                let shaped = match pass {
                    0 => group_ends[last - 1] && printed_layout(layout),
                    _ if after_colon[first + 1..last].contains(&true) => false,
                    // Whole groups, whatever touches them: a card glued to a word (`VISA4111…`)
                    // is masked, and so is a card-shaped run in an id (`e958f282-20261110-34`),
                    // as a card left in clear would be worse.
                    1 => group_ends[last - 1],
                    // Not in a number glued to letters (a PIX end-to-end id, `E0041…lx9`).
                    _ => !group_ends[last - 1] && !glued(first),
                };
                // A phone number after a `+` that no letter or digit touches: up to 13 digits (a
                // Brazilian mobile's, with the country code; an Amex's 15 are a card's).
                let after_plus = length <= 13
                    && digits[first] > 0
                    && chars[digits[first] - 1] == '+'
                    && (digits[first] == 1 || !chars[digits[first] - 2].is_alphanumeric());
                let free = !kept[first..last].contains(&true) && window[first..last].iter().all(Option::is_none);
                if shaped && !after_plus && free && luhn(&value[first..last]) {
                    found.push((first, last));
                }
            }
        }
        found.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (first, last) in found {
            match merged.last_mut() {
                Some((_, end)) if first < *end => *end = (*end).max(last),
                _ => merged.push((first, last)),
            }
        }
        for (first, last) in merged {
            window[first..last].iter_mut().for_each(|masked| *masked = Some(last));
        }
    }
    let mut out = String::new();
    let mut digit = 0;
    let mut at = start;
    while at < end {
        match (digits.get(digit), window.get(digit).copied().flatten()) {
            (Some(&position), Some(last)) if position == at => {
                // The window's digits, and the separators between them, as `****` and its last four.
                out.push_str("****");
                out.extend(&value[last - 4..last]);
                at = digits[last - 1] + 1;
                digit = last;
            }
            (Some(&position), None) if position == at => {
                out.push(chars[at]);
                at += 1;
                digit += 1;
            }
            _ => {
                out.push(chars[at]);
                at += 1;
            }
        }
    }
    out
}

fn luhn(digits: &[char]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, digit)| {
            let value = aigronova_platform::text::decimal_digit(*digit).unwrap_or(0);
            if position % 2 == 1 {
                let doubled = value * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                value
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_stored_masked_is_told_from_one_in_clear() {
        // The digest may read as digits only.
        for stored in ["****1111~3f9a0c1d2e4b5a6c", "PARC ****4444~1234567890123452"] {
            assert_eq!(stored_card_id_now(stored).as_deref(), Some(stored));
        }
        // Masked by an earlier masking that missed a card in other digits: masked again, the
        // digest kept.
        assert_eq!(
            stored_card_id_now("****1111 CARTAO ٤١١١١١١١١١١١١١١١~3f9a0c1d2e4b5a6c").as_deref(),
            Some("****1111 CARTAO ****١١١١~3f9a0c1d2e4b5a6c")
        );
        for clear in [
            "4111111111111111",
            "4111111111111111~3f9a0c1d2e4b5a6c",
            "PIX~3f9a0c1d2e4b5a6c",
            "****1111~3F9A0C1D2E4B5A6C",
            "****1111~3f9a0c1d2e4b5a6",
        ] {
            assert_eq!(stored_card_id_now(clear), None, "{clear}");
        }
    }

    #[test]
    fn card_numbers_never_stay_in_clear() {
        assert_eq!(mask_card_numbers("COMPRA CARTAO 4111 1111 1111 1111 LOJA"), "COMPRA CARTAO ****1111 LOJA");
        assert_eq!(mask_card_numbers("cartão 5500-0000-0000-0004"), "cartão ****0004");
        assert_eq!(mask_card_numbers("CARTAO 4111:1111:1111:1111"), "CARTAO ****1111");
        assert_eq!(mask_card_numbers("CARTAO 4111|1111|1111|1111 LOJA"), "CARTAO ****1111 LOJA");
        assert_eq!(mask_card_numbers("PIX 10:30:45 REF 4111"), "PIX 10:30:45 REF 4111");
        assert_eq!(mask_card_numbers("TED 2026-11-29 12:30 DOC 12345"), "TED 2026-11-29 12:30 DOC 12345");
        // Times to the second, whose 14 digits with the date's pass the Luhn check.
        assert!(luhn(&"20261129103044".chars().collect::<Vec<_>>()));
        assert_eq!(mask_card_numbers("TED 2026-11-29 10:30:44"), "TED 2026-11-29 10:30:44");
        assert_eq!(mask_card_numbers("PIX 29/11/2026 10:30:44|REF"), "PIX 29/11/2026 10:30:44|REF");
        assert_eq!(mask_card_numbers("10:30:44 4111111111111111"), "10:30:44 ****1111");
        assert_eq!(mask_card_numbers("4012888888881881"), "****1881");
        // In other scripts' digits, and mathematical ones.
        assert_eq!(mask_card_numbers("CARTAO ٤١١١١١١١١١١١١١١١"), "CARTAO ****١١١١");
        assert_eq!(mask_card_numbers("४१११ ११११ ११११ ११११ x"), "****११११ x");
        assert_eq!(mask_card_numbers("𝟒𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏𝟏"), "****𝟏𝟏𝟏𝟏");
        assert_eq!(mask_card_numbers("٤١١١١١١١١١١١١١١٢"), "٤١١١١١١١١١١١١١١٢", "not passing the Luhn check");
        // Not card numbers: short, or failing the Luhn check, or a date.
        assert_eq!(mask_card_numbers("PIX 12345 2026-11-29"), "PIX 12345 2026-11-29");
        assert_eq!(mask_card_numbers("BOLETO 4111111111111112"), "BOLETO 4111111111111112");
        // Beside other numbers: an instalment, an expiry date, a reference before it.
        assert_eq!(mask_card_numbers("CARTAO 5555555555554444 1/3"), "CARTAO ****4444 1/3");
        assert_eq!(mask_card_numbers("COMPRA 5555 5555 5555 4444 12/27"), "COMPRA ****4444 12/27");
        assert_eq!(mask_card_numbers("PARC 02 4111 1111 1111 1111"), "PARC 02 ****1111");
        assert_eq!(mask_card_numbers("4111 1111 1111 1111 2 3"), "****1111 2 3");
        // Other separators, and more than one.
        assert_eq!(mask_card_numbers("4111  1111 1111 1111"), "****1111");
        assert_eq!(mask_card_numbers("4111.1111.1111.1111 x"), "****1111 x");
        assert_eq!(mask_card_numbers("4111\t1111\u{a0}1111/1111"), "****1111");
        assert_eq!(mask_card_numbers("cartões 4012888888881881 e 5555555555554444"), "cartões ****1881 e ****4444");
        assert_eq!(mask_card_numbers("PIX 2026-11-29 12345 678"), "PIX 2026-11-29 12345 678");
        // Other numbers before the card, whose digits with the card's first ones pass the Luhn
        // check by chance: the card is masked whole, as its own groups.
        assert_eq!(mask_card_numbers("PARC 02/10 5555555555554444"), "PARC 02/10 ****4444");
        assert_eq!(mask_card_numbers("NSU 12 5555 5555 5555 4444"), "NSU 12 ****4444");
        assert_eq!(mask_card_numbers("PEDIDO 10 4111111111111111"), "PEDIDO 10 ****1111");
        assert_eq!(mask_card_numbers("PARC 1/3 4111111111111111"), "PARC 1/3 ****1111");
        // Full-width digits, and underscores between groups.
        assert_eq!(mask_card_numbers("CARTAO ４１１１１１１１１１１１１１１１"), "CARTAO ****１１１１");
        assert_eq!(mask_card_numbers("4111_1111_1111_1111"), "****1111");
        for spelled in [
            "4111–1111–1111–1111",
            "4111,1111,1111,1111",
            "4111*1111*1111*1111",
            "4111\u{200b}1111\u{200b}1111\u{200b}1111",
            "4111 - - 1111 - - 1111 - - 1111",
        ] {
            assert_eq!(mask_card_numbers(spelled), "****1111", "{spelled}");
        }
        // A phone number after `+` is no card, though its 13 digits pass the Luhn check; a `+`
        // glued to a word is no phone's.
        assert_eq!(mask_card_numbers("+55 11 98765 4325"), "+55 11 98765 4325");
        assert_eq!(mask_card_numbers("TEL (+55 11 98765 4325)"), "TEL (+55 11 98765 4325)");
        assert_eq!(mask_card_numbers("COMPRA+378282246310005"), "COMPRA+****0005");
        assert_eq!(mask_card_numbers("TEL:+5511987654325"), "TEL:+5511987654325");
        assert_eq!(mask_card_numbers("PAG +378282246310005"), "PAG +****0005");
        // Beside a CNPJ, a date, a reference of four digits, a phone number: the card is masked
        // whole; a CNPJ, a phone number after `+` and a boleto's digitable line are no cards.
        assert_eq!(
            mask_card_numbers("CNPJ 60.701.190/0001-04 4000 0566 5566 5556"),
            "CNPJ 60.701.190/0001-04 ****5556"
        );
        assert_eq!(mask_card_numbers("29/11/2026 4242 4242 4242 4242"), "29/11/2026 ****4242");
        assert_eq!(mask_card_numbers("NSU 57208787 6011-1283-1343-2927"), "NSU 57208787 ****2927");
        // Two windows laid out as cards print them, overlapping: both masked, as which is the card
        // cannot be told.
        assert_eq!(mask_card_numbers("TEL 11 3003-3030 5105 1051 0510 5100"), "TEL 11 3003-****5100");
        assert_eq!(mask_card_numbers("CEP 01310-100 5200 8282 8282 8210"), "CEP 01310-100 ****8210");
        assert_eq!(mask_card_numbers("CNPJ 60.746.948/0001-12 NF 12345"), "CNPJ 60.746.948/0001-12 NF 12345");
        assert_eq!(mask_card_numbers("PIX ENVIADO +55 11 96506-2467"), "PIX ENVIADO +55 11 96506-2467");
        let boleto = "BOLETO 23793.38128 60082.677139 66006.333308 1 89140000010000";
        assert_eq!(mask_card_numbers(boleto), boleto);
        // Cards that add up to a boleto's count of digits, after a `+`, glued to a date, or parted by
        // a soft hyphen or full-width dashes, are masked all the same.
        // (Three cards in a row: windows across two of them may pass the check too, and all are
        // masked together.)
        assert_eq!(mask_card_numbers("4111 1111 1111 1111 5555 5555 5555 4444 4012 8888 8888 1881"), "****1881");
        assert_eq!(mask_card_numbers("COMPRA+4111111111111111"), "COMPRA+****1111");
        assert_eq!(mask_card_numbers("41111111111111112027"), "****11112027");
        assert_eq!(mask_card_numbers("4111\u{ad}1111\u{ad}1111\u{ad}1111"), "****1111");
        assert_eq!(mask_card_numbers("４１１１－１１１１－１１１１－１１１１"), "****１１１１");
        // A PIX end-to-end id is no card, nor groups joined to one glued to letters; a whole card
        // glued to letters is masked.
        let pix = "PIX RECEBIDO E00416968202604241226lx9xf26gk7z";
        assert_eq!(mask_card_numbers(pix), pix);
        for (glued, masked) in [
            ("sbx-e958f282-20261110-34", "sbx-e958f****1034"),
            ("X1Y3782 8224 6310 005", "X1Y****0005"),
            ("COMPRA 4111 111111111111PARC01", "COMPRA ****1111PARC01"),
            ("4111\u{3164}111111111111", "****1111"),
            ("VISA4111111111111111", "VISA****1111"),
            ("AMEX3782 8224 6310 005", "AMEX****0005"),
            ("CARTAO 3782 8224 6310 005X", "CARTAO ****0005X"),
            ("VISA4222 2222 2222 2", "VISA****2222"),
            ("CC411111 1111111111", "CC****1111"),
            ("CARTAO41111111 11111111", "CARTAO****1111"),
        ] {
            assert_eq!(mask_card_numbers(glued), masked, "{glued}");
        }
    }

    #[test]
    fn the_default_config_is_valid_and_bad_institutions_are_refused() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50063");
        let mut bad = Config::default();
        bad.institutions.insert("bank".into(), "ftp://bank".into());
        assert!(bad.validate().is_err());
        let bad = Config { master_key: Some("short".into()), ..Config::default() };
        assert!(bad.validate().is_err());
        for prefix in ["", "two words:", &"x".repeat(65)] {
            let bad = Config { redis_key_prefix: prefix.to_owned(), ..Config::default() };
            assert!(bad.validate().unwrap_err().0.contains("finquantum.redis_key_prefix"), "{prefix:?}");
        }
    }

    /// A database made before `consent_accounts` (migrations 0001 and 0002) gets it filled with
    /// what is on record: each account's holder, and another consent only where its last ingestion
    /// stamped that account or one of its transactions; never a purged consent.
    #[tokio::test]
    async fn the_consent_accounts_backfill_links_only_what_is_on_record() {
        let dir = std::env::temp_dir().join(format!("fq-backfill-{}", uuid::Uuid::new_v4().simple()));
        let early = dir.join("migrations");
        std::fs::create_dir_all(&early).unwrap();
        for name in ["0001_finquantum.sql", "0002_account_summaries.sql"] {
            std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/").to_owned() + name, early.join(name))
                .unwrap();
        }
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", dir.join("fin.db").display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(early.as_path()).await.unwrap().run(&pool).await.unwrap();
        let (t1, t2) = ("2026-10-01T00:00:00.000000Z", "2026-11-01T00:00:00.000000Z");
        let statements = [
            "INSERT INTO customers VALUES ('t', 'cu', 'h', 's', '2026-01-01T00:00:00.000000Z')".to_owned(),
            // A fetched in October, B in November, C too but it is purged.
            format!(
                "INSERT INTO consents VALUES ('t', 'A', 'cu', 'b', 'ACCOUNTS_READ', '2027-01-01T00:00:00.000000Z', '{t1}', NULL, '{t1}', NULL, NULL)"
            ),
            format!(
                "INSERT INTO consents VALUES ('t', 'B', 'cu', 'b', 'ACCOUNTS_READ', '2027-01-01T00:00:00.000000Z', '{t1}', NULL, '{t2}', NULL, NULL)"
            ),
            format!(
                "INSERT INTO consents VALUES ('t', 'C', 'cu', 'b', 'ACCOUNTS_READ', '2027-01-01T00:00:00.000000Z', '{t1}', '{t2}', '{t2}', '{t2}', '{t2}')"
            ),
            // X and Y held under B; X has a transaction A's ingestion stored, Y opened later.
            format!(
                "INSERT INTO accounts (tenant_id, customer_id, institution, account_id, consent_id, kind, brand_name, number, fetched_at) VALUES ('t', 'cu', 'b', 'X', 'B', 'k', 'n', '1', '{t2}')"
            ),
            format!(
                "INSERT INTO accounts (tenant_id, customer_id, institution, account_id, consent_id, kind, brand_name, number, fetched_at) VALUES ('t', 'cu', 'b', 'Y', 'B', 'k', 'n', '2', '{t2}')"
            ),
            format!(
                "INSERT INTO transactions VALUES ('t', 'cu', 'b', 'X', 'tx', 1, 'PIX', 'n', 100, 'BRL', '{t1}', '{t1}')"
            ),
        ];
        for statement in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&pool).await.unwrap();
        }
        MIGRATOR.run(&pool).await.expect("the later migrations run on the earlier database");
        let links: Vec<(String, String)> =
            sqlx::query_as("SELECT consent_id, account_id FROM consent_accounts ORDER BY consent_id, account_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        let links: Vec<(&str, &str)> = links.iter().map(|(c, a)| (c.as_str(), a.as_str())).collect();
        assert_eq!(links, [("A", "X"), ("B", "X"), ("B", "Y")]);
        pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Masking again what a masking gave changes nothing: a transaction id stored masked is found
    /// again under the same id at the next ingestion. Checked on text made of the pieces bank words
    /// hold (ids, CPFs, phone numbers, dates, cards, references).
    #[test]
    fn masking_again_changes_nothing() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: u64| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % bound
        };
        let pieces = ["PIX ", "NSU ", "CPF ", "TEL ", "+55 ", "(11) ", "VISA", " ", "-", ".", "/", "*", "_", ", "];
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(2 + next(8)) {
                match next(3) {
                    0 => text.push_str(pieces[next(pieces.len() as u64) as usize]),
                    _ => {
                        for _ in 0..(1 + next(19)) {
                            text.push(char::from(b'0' + next(10) as u8));
                        }
                    }
                }
            }
            let once = mask_card_numbers(&text);
            assert_eq!(mask(&once, true), once, "{text}");
        }
        for text in ["429088694222281091379938083803", "PIX 713.059.835-21 5995 6950 3790 5976"] {
            let once = mask_card_numbers(text);
            assert_ne!(once, text);
            assert_eq!(mask(&once, true), once, "{text}");
            let id = format!("{once}~0123456789abcdef");
            assert_eq!(stored_card_id_now(&id).as_deref(), Some(id.as_str()), "{text}");
        }
        // Asterisks right after a digit part a card's groups: no masking left them.
        assert_eq!(mask("4111****1111****1111****1111", true), "****1111");
        // A long run of asterisks is looked at once.
        let stars = "*".repeat(200_000);
        assert_eq!(mask(&stars, true), stars);
        // Text as an institution sent it: asterisks before a card hide nothing.
        assert_eq!(mask_card_numbers("CARTAO ****4111111111111111"), "CARTAO ********1111");
    }
}
