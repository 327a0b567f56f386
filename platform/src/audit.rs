//! Audit events and the transactional outbox (DESIGN.md section 7).
//!
//! A service writes an [`AuditEvent`] with [`enqueue`] inside the transaction that makes the
//! decision or reads the data, so that the event exists if and only if the action committed.
//! A [`Relay`] ships pending rows to ai-governance's `RecordEvents` in batches and deletes them
//! only once the batch is acknowledged (durable there, idempotent by event id): an event is
//! never lost, and an event whose acknowledgement was lost is sent again and stored once.
//!
//! Every service that audits has the `audit_outbox` table in its migrations:
//!
//! ```sql
//! CREATE TABLE audit_outbox (
//!     event_id TEXT PRIMARY KEY,   -- UUIDv7: sorts in the order events were written
//!     tenant_id TEXT NOT NULL,
//!     event TEXT NOT NULL,         -- the AuditEvent as JSON
//!     created_at TEXT NOT NULL     -- RFC 3339 UTC
//! );
//! ```

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, OnceLock},
    time::Duration,
};

use aigronova_proto::aigronova::{
    common::v1::ModelCard,
    governance::v1::{self as proto, audit_log_client::AuditLogClient, model_inventory_client::ModelInventoryClient},
};
use chrono::{DateTime, SecondsFormat, Utc};
use prometheus::{GaugeVec, IntCounterVec, Opts};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;
use tonic::transport::{Channel, Endpoint};

use crate::{
    auth::{self, Caller, TokenSigner},
    config::{ConfigError, Validate},
    crypto::TenantCipher,
    shutdown::Shutdown,
    storage::{Backend, Database, KeyedWrite, Param, StoreError, bind_params},
};

/// The scope of the token a relay presents to `RecordEvents`.
pub const RECORD_SCOPE: &str = "audit:record";
/// The scope of the token a service presents to `RegisterModels`.
pub const REGISTER_MODELS_SCOPE: &str = "models:register";

/// What an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A model's output used for a decision.
    Decision,
    /// Personal or sensitive data shown to a caller.
    SensitiveRead,
    /// Personal data changed or erased.
    PersonalDataChange,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::SensitiveRead => "sensitive_read",
            Self::PersonalDataChange => "personal_data_change",
        }
    }
}

/// What names a decision's inputs in its event without putting them there: the tenant's keyed
/// digest ([`TenantCipher::keyed_digest`]) of the inputs as JSON, keys sorted.
pub fn input_digest(cipher: &TenantCipher, features: &BTreeMap<String, f64>) -> String {
    cipher.keyed_digest(&serde_json::to_vec(features).expect("numbers serialise"))
}

/// One audit event, as written to the outbox and shipped to ai-governance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub event_id: String,
    pub tenant_id: String,
    pub service: String,
    pub kind: EventKind,
    /// The action, e.g. `health.AssessRisk`.
    pub action: String,
    /// Who acted: the caller's subject (an API key id or a token subject).
    pub actor: String,
    /// On whom, as a pseudonym (a record id), never a CPF or a name.
    pub subject: String,
    /// Model, version, input digest, output summary, latency: never raw personal data.
    pub details: serde_json::Value,
    /// RFC 3339 UTC with microseconds.
    pub occurred_at: String,
}

impl AuditEvent {
    /// An event by `caller` of `service`, now.
    pub fn new(
        caller: &Caller,
        service: &str,
        kind: EventKind,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Self {
        Self {
            event_id: uuid::Uuid::now_v7().to_string(),
            tenant_id: caller.tenant_id.clone(),
            service: service.to_owned(),
            kind,
            action: action.to_owned(),
            actor: caller.subject.clone(),
            subject: subject.to_owned(),
            details,
            occurred_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        }
    }

    /// The event with the id `id` in place of a new one: a decision's event carries the
    /// decision's own id, by which a review of it is asked for.
    #[must_use]
    pub fn with_event_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.event_id);
        self
    }
}

/// An outbox row as the relay ships it: the kind is taken as written, so that a relay of an
/// earlier release ships the events of a later one (during a rolling upgrade) rather than
/// setting aside a kind it does not know.
#[derive(Debug, Deserialize)]
struct OutboxEvent {
    event_id: String,
    tenant_id: String,
    service: String,
    kind: String,
    action: String,
    actor: String,
    subject: String,
    details: serde_json::Value,
    occurred_at: String,
}

impl OutboxEvent {
    fn to_proto(&self) -> proto::AuditEvent {
        let occur_time = DateTime::parse_from_rfc3339(&self.occurred_at).ok().map(|at| prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        });
        proto::AuditEvent {
            event_id: self.event_id.clone(),
            tenant_id: self.tenant_id.clone(),
            service: self.service.clone(),
            kind: self.kind.clone(),
            action: self.action.clone(),
            actor: self.actor.clone(),
            subject: self.subject.clone(),
            details_json: self.details.to_string(),
            occur_time,
        }
    }
}

/// Writes `event` to the outbox on `connection`, which should be inside the transaction of the
/// action the event records.
pub async fn enqueue(connection: &mut AnyConnection, event: &AuditEvent) -> Result<(), StoreError> {
    bind_params(sqlx::query(OUTBOX_INSERT), outbox_row(event)?).execute(connection).await?;
    Ok(())
}

const OUTBOX_INSERT: &str = "INSERT INTO audit_outbox (event_id, tenant_id, event, created_at) VALUES ($1, $2, $3, $4)";

/// Commits `event` to the outbox alone, in a transaction of its tenant; on SQLite in a group with
/// the other writes submitted meanwhile ([`Database::write_keyed`]).
pub async fn record(database: &Database, event: &AuditEvent) -> Result<(), StoreError> {
    if database.backend() == Backend::Sqlite {
        let statements = format!("{OUTBOX_INSERT} RETURNING event_id");
        let write = KeyedWrite { statements, params: outbox_row(event)?.into(), key: event.event_id.clone() };
        return match database.write_keyed(write).await? {
            true => Ok(()),
            false => Err(StoreError::Corrupt(format!("the audit event {} was not written", event.event_id))),
        };
    }
    let mut transaction = database.begin_tenant(&event.tenant_id).await?;
    enqueue(&mut transaction, event).await?;
    transaction.commit().await?;
    Ok(())
}

/// Runs `action`, one statement that writes (its parameters `$1`… bound to `params`), and records
/// `event` in the outbox in the same transaction of `tenant_id`, if the statement changed a row.
/// Returns whether it did; when it did not, nothing is written.
///
/// On SQLite the statement and the outbox row go as one [`KeyedWrite`], committed in one
/// transaction with the other writes submitted meanwhile ([`Database::write_keyed`]).
pub async fn write_recorded(
    database: &Database,
    tenant_id: &str,
    action: &str,
    mut params: Vec<Param>,
    event: &AuditEvent,
) -> Result<bool, StoreError> {
    if database.backend() == Backend::Sqlite {
        let first = params.len() + 1;
        let statements = format!(
            "{action}; INSERT INTO audit_outbox (event_id, tenant_id, event, created_at) \
             SELECT ${first}, ${}, ${}, ${} WHERE changes() = 1 RETURNING event_id",
            first + 1,
            first + 2,
            first + 3
        );
        params.extend(outbox_row(event)?);
        return database.write_keyed(KeyedWrite { statements, params, key: event.event_id.clone() }).await;
    }
    let mut transaction = database.begin_tenant(tenant_id).await?;
    let done =
        bind_params(sqlx::query(sqlx::AssertSqlSafe(action.to_owned())), params).execute(&mut *transaction).await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    enqueue(&mut transaction, event).await?;
    transaction.commit().await?;
    Ok(true)
}

/// The outbox row of `event`: its id, its tenant, the event as JSON and its time.
fn outbox_row(event: &AuditEvent) -> Result<[Param; 4], StoreError> {
    let json = serde_json::to_string(event).map_err(|error| StoreError::Corrupt(error.to_string()))?;
    Ok([
        event.event_id.as_str().into(),
        event.tenant_id.as_str().into(),
        json.into(),
        event.occurred_at.as_str().into(),
    ])
}

/// The `audit` configuration section: where and how the outbox relays ship events.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// gRPC URL of ai-governance, e.g. `http://ai-governance:50070`. Unset: events wait in the
    /// outbox (`aigronova up` sets it to its own ai-governance).
    pub governance_url: Option<String>,
    /// Events per `RecordEvents` call.
    pub batch_size: u32,
    /// How often the relay looks for events when nothing wakes it, in milliseconds.
    pub poll_interval_ms: u64,
    /// How long a woken relay waits for more events before it ships, in milliseconds: under load
    /// one call carries many events instead of one each. The delay an event can take to reach
    /// the log.
    pub batch_linger_ms: u64,
    /// The longest wait between two attempts while ai-governance is unreachable, in seconds.
    pub max_backoff_secs: u64,
    /// How often a service sends its inference summaries (counts, latency, input bins), in
    /// milliseconds.
    pub monitoring_interval_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            governance_url: None,
            batch_size: 200,
            poll_interval_ms: 1000,
            batch_linger_ms: 20,
            max_backoff_secs: 30,
            monitoring_interval_ms: 10_000,
        }
    }
}

impl Validate for RelayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.governance_url {
            crate::config::plaintext_grpc_url("audit.governance_url", url)?;
        }
        if !(1..=1000).contains(&self.batch_size) {
            return Err(ConfigError("audit.batch_size must be between 1 and 1000".into()));
        }
        if self.batch_linger_ms > 10_000 {
            return Err(ConfigError("audit.batch_linger_ms must be at most 10000".into()));
        }
        if self.poll_interval_ms == 0 || self.max_backoff_secs == 0 || self.monitoring_interval_ms == 0 {
            return Err(ConfigError(
                "audit.poll_interval_ms, audit.max_backoff_secs and audit.monitoring_interval_ms must be positive"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Wakes a [`Relay`] as soon as a transaction with audit events has committed.
#[derive(Clone, Debug, Default)]
pub struct OutboxWaker(Arc<Notify>);

impl OutboxWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ai-governance refused the batch: {0}")]
    Rejected(tonic::Status),
}

/// Ships one service's outbox to ai-governance.
#[derive(Debug)]
pub struct Relay {
    database: Database,
    service: &'static str,
    config: RelayConfig,
    signer: TokenSigner,
    waker: OutboxWaker,
    /// Tenants whose events ai-governance held back (their log is damaged), and since when: their
    /// events are left out of the batches for [`HELD_FOR`], so that they do not hold up other
    /// tenants' events after them, however many there are.
    held: std::sync::Mutex<(HashSet<String>, Option<std::time::Instant>)>,
}

/// How long the events of a tenant whose events ai-governance held back are left out of the
/// batches before they are sent again.
const HELD_FOR: Duration = Duration::from_secs(60);

/// How long, once the process is stopping, a call to ai-governance in flight may still take: a
/// hung ai-governance does not hold the shutdown for the calls' whole timeout.
pub(crate) const STOPPING_GRACE: Duration = Duration::from_secs(5);

impl Relay {
    /// A relay for `service`'s outbox in `database`; `signer` mints the service's own token.
    pub fn new(database: Database, service: &'static str, config: RelayConfig, signer: TokenSigner) -> Self {
        Self { database, service, config, signer, waker: OutboxWaker::default(), held: Default::default() }
    }

    pub fn waker(&self) -> OutboxWaker {
        self.waker.clone()
    }

    /// Ships events until `shutdown`, then what the outbox still holds (see [`GovernanceLink::join`]).
    /// Without a governance URL it only reports the lag.
    pub async fn run(self, shutdown: Shutdown) {
        let client = match &self.config.governance_url {
            Some(url) => match Endpoint::from_shared(url.clone()) {
                Ok(endpoint) => Some(AuditLogClient::new(
                    endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30)).connect_lazy(),
                )),
                Err(error) => {
                    tracing::error!(%error, "audit.governance_url is not a valid URL; events stay in the outbox");
                    None
                }
            },
            None => {
                tracing::warn!(service = self.service, "no audit.governance_url: audit events stay in the outbox");
                None
            }
        };
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let max_backoff = Duration::from_secs(self.config.max_backoff_secs);
        let linger = Duration::from_millis(self.config.batch_linger_ms);
        let mut backoff = Duration::from_millis(100);
        // The lag is reported at most once a second: it is two queries.
        let mut lag_reported: Option<std::time::Instant> = None;
        // Once stopping, when the grace ends: set when the stop is first seen.
        let mut stopping_by: Option<tokio::time::Instant> = None;
        // Whether the last attempt failed: its backoff then runs out before the next, whatever
        // writes come meanwhile (their events wait in the outbox).
        let mut backing_off = false;
        loop {
            if lag_reported.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                self.report_lag().await;
                lag_reported = Some(std::time::Instant::now());
            }
            let wait = match &client {
                None => poll,
                Some(client) => match self.ship_or_stop(client, &shutdown, &mut stopping_by).await {
                    // ai-governance did not answer within the grace: nothing more is tried.
                    None => return,
                    // A full batch: more may wait, unless the process is stopping.
                    Some(Ok(shipped)) if shipped == self.config.batch_size as usize && !shutdown.is_triggered() => {
                        backoff = Duration::from_millis(100);
                        continue;
                    }
                    Some(Ok(_)) => {
                        backoff = Duration::from_millis(100);
                        poll
                    }
                    Some(Err(error)) => {
                        metrics().failures.with_label_values(&[self.service]).inc();
                        tracing::warn!(
                            service = self.service,
                            %error,
                            retry_in_ms = backoff.as_millis() as u64,
                            "cannot ship audit events; they stay in the outbox"
                        );
                        let wait = backoff;
                        backoff = (backoff * 2).min(max_backoff);
                        backing_off = true;
                        wait
                    }
                },
            };
            let woken_by_writes = !std::mem::take(&mut backing_off);
            tokio::select! {
                () = shutdown.clone().wait() => break,
                () = self.waker.0.notified(), if woken_by_writes => {
                    // Let the events of the writes in flight join this batch.
                    tokio::select! {
                        () = shutdown.clone().wait() => break,
                        () = tokio::time::sleep(linger) => {}
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Stopping, once the service has answered its last calls: their events go out too, for
        // [`STOPPING_GRACE`] at most; what is left then waits in the outbox for the next start.
        if let Some(client) = &client {
            let deadline = *stopping_by.get_or_insert_with(|| tokio::time::Instant::now() + STOPPING_GRACE);
            while let Ok(Ok(shipped)) = tokio::time::timeout_at(deadline, self.ship_batch(client.clone())).await {
                if shipped < self.config.batch_size as usize {
                    break;
                }
            }
        }
    }

    /// [`Self::ship_batch`], given until [`STOPPING_GRACE`] after the stop was first seen
    /// (`stopping_by`, set here when the stop comes during the call) once `shutdown` is triggered;
    /// `None` when that ran out: the events not acknowledged stay in the outbox for the next start
    /// (and a batch acknowledged meanwhile is recorded once, by its events' ids).
    async fn ship_or_stop(
        &self,
        client: &AuditLogClient<tonic::transport::Channel>,
        shutdown: &Shutdown,
        stopping_by: &mut Option<tokio::time::Instant>,
    ) -> Option<Result<usize, RelayError>> {
        let shipping = self.ship_batch(client.clone());
        tokio::pin!(shipping);
        tokio::select! {
            shipped = &mut shipping => Some(shipped),
            () = shutdown.clone().wait() => {
                let deadline = *stopping_by.get_or_insert_with(|| tokio::time::Instant::now() + STOPPING_GRACE);
                tokio::time::timeout_at(deadline, shipping).await.ok()
            }
        }
    }

    /// The tenants whose events ai-governance held back within the last [`HELD_FOR`].
    fn held(&self) -> HashSet<String> {
        let mut held = self.held.lock().expect("the held events are not poisoned");
        if held.1.is_some_and(|since| since.elapsed() >= HELD_FOR) {
            *held = Default::default();
        }
        held.0.clone()
    }

    /// The oldest pending events, `batch_size` at most, but for those of `held` tenants; rows that
    /// are not audit events are set aside ([`Self::set_aside`]).
    async fn pending(&self, held: &HashSet<String>) -> Result<Vec<(String, OutboxEvent)>, StoreError> {
        let not_held = if held.is_empty() {
            String::new()
        } else {
            let placeholders: Vec<String> = (2..held.len() + 2).map(|n| format!("${n}")).collect();
            format!("WHERE tenant_id NOT IN ({}) ", placeholders.join(", "))
        };
        let sql = format!("SELECT event_id, event FROM audit_outbox {not_held}ORDER BY event_id LIMIT $1");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::from(self.config.batch_size));
        for tenant in held {
            query = query.bind(tenant.as_str());
        }
        let rows = query.fetch_all(self.database.pool()).await?;
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("event_id")?;
            let json: String = row.try_get("event")?;
            match serde_json::from_str(&json) {
                Ok(event) => pending.push((id, event)),
                // Where, not what: serde's message would quote the row's values.
                Err(error) => {
                    let reason = format!(
                        "the outbox row is not an audit event ({:?} error at line {}, column {})",
                        error.classify(),
                        error.line(),
                        error.column()
                    );
                    self.set_aside(&id, &reason).await?;
                }
            }
        }
        Ok(pending)
    }

    /// Moves the outbox row `event_id`, which ai-governance will never take, to
    /// `audit_outbox_refused` with `reason`, so that it does not hold up the events after it. A row
    /// another relay took meanwhile (shipped or set aside) is left as it is.
    async fn set_aside(&self, event_id: &str, reason: &str) -> Result<(), StoreError> {
        let mut transaction = self.database.begin_write().await?;
        let taken = sqlx::query("DELETE FROM audit_outbox WHERE event_id = $1 RETURNING tenant_id, event, created_at")
            .bind(event_id)
            .fetch_optional(&mut *transaction)
            .await?;
        let Some(row) = taken else {
            transaction.rollback().await?;
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO audit_outbox_refused (event_id, tenant_id, event, created_at, refused_at, reason) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO UPDATE SET tenant_id = excluded.tenant_id, \
             event = excluded.event, created_at = excluded.created_at, refused_at = excluded.refused_at, \
             reason = excluded.reason",
        )
        .bind(event_id)
        .bind(row.try_get::<String, _>("tenant_id")?)
        .bind(row.try_get::<String, _>("event")?)
        .bind(row.try_get::<String, _>("created_at")?)
        .bind(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true))
        .bind(reason)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        tracing::error!(
            service = self.service,
            event_id,
            reason,
            "an audit event ai-governance will never take is set aside in audit_outbox_refused"
        );
        Ok(())
    }

    /// Sends the oldest pending events, but for those of tenants held back, and deletes the ones
    /// acknowledged; how many left the outbox. A part of the batch ai-governance finds invalid is
    /// sent again in halves, and an event it refuses alone is set aside ([`Self::set_aside`]).
    async fn ship_batch(&self, client: AuditLogClient<Channel>) -> Result<usize, RelayError> {
        let pending = self.pending(&self.held()).await?;
        let mut gone = 0;
        // The parts still to send, the next on top.
        let mut parts = vec![&pending[..]];
        while let Some(part) = parts.pop() {
            if part.is_empty() {
                continue;
            }
            match self.ship(client.clone(), part).await {
                Ok(shipped) => gone += shipped,
                // What ai-governance refuses as invalid it will refuse however often it comes.
                Err(RelayError::Rejected(status)) if status.code() == tonic::Code::InvalidArgument => {
                    if let [(event_id, _)] = part {
                        self.set_aside(event_id, status.message()).await?;
                        gone += 1;
                    } else {
                        tracing::warn!(service = self.service, %status, events = part.len(), "sending the events again in halves");
                        let (first, second) = part.split_at(part.len() / 2);
                        parts.extend([second, first]);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(gone)
    }

    /// Sends `pending` and deletes the events acknowledged; how many.
    async fn ship(
        &self,
        mut client: AuditLogClient<Channel>,
        pending: &[(String, OutboxEvent)],
    ) -> Result<usize, RelayError> {
        let tenants: HashMap<&str, &str> =
            pending.iter().map(|(id, event)| (id.as_str(), event.tenant_id.as_str())).collect();
        let events = pending.iter().map(|(_, event)| event.to_proto()).collect();
        let mut ids: Vec<&str> = pending.iter().map(|(id, _)| id.as_str()).collect();
        let service_caller = Caller::service(self.service, RECORD_SCOPE);
        let mut request = tonic::Request::new(proto::RecordEventsRequest { events });
        auth::attach_token(request.metadata_mut(), &self.signer.mint_reusable(&service_caller));
        let response = client.record_events(request).await.map_err(RelayError::Rejected)?.into_inner();
        if !response.held_event_ids.is_empty() {
            tracing::error!(
                service = self.service,
                events = response.held_event_ids.len(),
                retry_in_s = HELD_FOR.as_secs(),
                "ai-governance held back audit events: their tenant's log is damaged; they stay in the outbox"
            );
            let held: HashSet<String> = response.held_event_ids.into_iter().collect();
            ids.retain(|id| !held.contains(*id));
            let mut kept = self.held.lock().expect("the held events are not poisoned");
            kept.0.extend(held.iter().filter_map(|id| tenants.get(id.as_str()).map(|tenant| (*tenant).to_owned())));
            kept.1.get_or_insert_with(std::time::Instant::now);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        self.delete_shipped(&ids).await?;
        metrics().shipped.with_label_values(&[self.service]).inc_by(ids.len() as u64);
        tracing::debug!(
            service = self.service,
            appended = response.appended,
            duplicates = response.duplicates,
            "audit events shipped"
        );
        Ok(ids.len())
    }

    /// Deletes the shipped events `ids` from the outbox. On SQLite in the group commit, with the
    /// writes other tasks submit meanwhile, rather than in a write turn of its own that they would
    /// wait behind; elsewhere in a transaction of its own.
    async fn delete_shipped(&self, ids: &[&str]) -> Result<(), StoreError> {
        if self.database.backend() == Backend::Sqlite {
            // The ids as one JSON array (SQLite finds each of many parameters by a walk of the
            // list), answered once by a key no event or action of the group has.
            let key = format!("shipped:{}", ids[0]);
            let ids = serde_json::to_string(ids).map_err(|error| StoreError::Corrupt(error.to_string()))?;
            let statements = "DELETE FROM audit_outbox WHERE event_id IN (SELECT value FROM json_each($1)); SELECT $2";
            let write =
                KeyedWrite { statements: statements.to_owned(), params: vec![ids.into(), key.as_str().into()], key };
            return match self.database.write_keyed(write).await? {
                true => Ok(()),
                false => Err(StoreError::Corrupt("the shipped audit events were not deleted".into())),
            };
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let delete = format!("DELETE FROM audit_outbox WHERE event_id IN ({})", placeholders.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(delete));
        for id in ids {
            query = query.bind(*id);
        }
        self.database.execute_write(query).await?;
        Ok(())
    }

    /// Publishes the number of pending events and the age of the oldest.
    async fn report_lag(&self) {
        report_outbox_lag(&self.database, "audit_outbox", self.service).await;
        let refused = sqlx::query("SELECT COUNT(*) FROM audit_outbox_refused").fetch_one(self.database.pool()).await;
        if let Ok(row) = refused {
            metrics().refused.with_label_values(&[self.service]).set(row.try_get::<i64, _>(0).unwrap_or(0) as f64);
        }
    }
}

/// Publishes how many events wait in `service`'s outbox `table` (`audit_outbox`, or
/// ai-governance's `own_audit_outbox`, each with `created_at`) and the age of the oldest, as
/// `aigronova_outbox_pending_events` and `aigronova_outbox_oldest_pending_age_seconds`.
pub async fn report_outbox_lag(database: &Database, table: &'static str, service: &str) {
    let query = format!("SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM {table}");
    let row = sqlx::query(sqlx::AssertSqlSafe(query)).fetch_one(database.pool()).await;
    let Ok(row) = row else { return };
    let pending: i64 = row.try_get("pending").unwrap_or(0);
    let oldest: Option<String> = row.try_get("oldest").ok().flatten();
    let age = oldest
        .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
        .map(|at| (Utc::now() - at.with_timezone(&Utc)).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics().pending.with_label_values(&[service]).set(pending as f64);
    metrics().oldest_age.with_label_values(&[service]).set(age);
}

/// How a domain service reaches ai-governance: the relay's settings and the key that signs the
/// service's own tokens. Without a signer, audit events wait in the outbox.
#[derive(Clone, Debug, Default)]
pub struct Governance {
    pub relay: RelayConfig,
    pub signer: Option<TokenSigner>,
}

/// What links a running service to ai-governance: its outbox relay and its inference reports
/// (its model cards are registered once at start).
#[derive(Debug)]
pub struct GovernanceLink {
    relay: tokio::task::JoinHandle<()>,
    /// Stops the relay and the reports: triggered by `join`, once the service has answered its
    /// last calls, or when the link is dropped.
    stop: Shutdown,
    monitor: tokio::task::JoinHandle<()>,
}

impl Drop for GovernanceLink {
    fn drop(&mut self) {
        self.stop.trigger();
    }
}

impl GovernanceLink {
    /// Starts the relay of `service`'s outbox and the reports of `monitor`, which run until
    /// [`Self::join`], and the registration of `models`, which runs until `shutdown`, all signed by
    /// `governance`'s signer. Without a signer nothing starts and audit events wait in the outbox.
    pub fn start(
        service: &'static str,
        governance: &Governance,
        relay: Relay,
        models: &crate::inference::ModelRegistry,
        monitor: crate::monitoring::InferenceMonitor,
        shutdown: &Shutdown,
    ) -> Option<Self> {
        let Some(signer) = governance.signer.clone() else {
            tracing::warn!(service, "no internal_auth.service_signing_key: audit events stay in the outbox");
            return None;
        };
        let config = &governance.relay;
        tokio::spawn(register_models(config.clone(), signer.clone(), service, models.cards(), shutdown.clone()));
        // The relay and the reports stop only when told by `join`, once the service has answered
        // its last calls, so that what those calls wrote and counted goes out too.
        let stop = Shutdown::new();
        let monitor = tokio::spawn(monitor.run(config.clone(), signer, service, stop.clone()));
        Some(Self { relay: tokio::spawn(relay.run(stop.clone())), stop, monitor })
    }

    /// Once the service has stopped serving: stops the relay, which first ships the events the
    /// last calls wrote, and the reports, which send their last summary, and waits for both.
    pub async fn join(mut self) {
        self.stop.trigger();
        let _ = (&mut self.relay).await;
        let _ = (&mut self.monitor).await;
    }
}

/// Registers `cards`, the models `service` loaded, in ai-governance's inventory; retries with
/// backoff until it succeeds or `shutdown`. Does nothing without a governance URL.
pub async fn register_models(
    config: RelayConfig,
    signer: TokenSigner,
    service: &'static str,
    cards: Vec<ModelCard>,
    shutdown: Shutdown,
) {
    let Some(url) = config.governance_url else { return };
    let endpoint = match Endpoint::from_shared(url) {
        Ok(endpoint) => endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30)),
        Err(error) => {
            tracing::error!(%error, "audit.governance_url is not a valid URL; models not registered");
            return;
        }
    };
    let mut client = ModelInventoryClient::new(endpoint.connect_lazy());
    let caller = Caller::service(service, REGISTER_MODELS_SCOPE);
    let max_backoff = Duration::from_secs(config.max_backoff_secs);
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut request =
            tonic::Request::new(proto::RegisterModelsRequest { service: service.to_owned(), models: cards.clone() });
        auth::attach_token(request.metadata_mut(), &signer.mint(&caller));
        match client.register_models(request).await {
            Ok(response) => {
                let response = response.into_inner();
                for model in &response.flagged {
                    tracing::error!(service, model, "model file changed without a new version");
                }
                tracing::info!(service, models = response.registered, "models registered with ai-governance");
                return;
            }
            Err(status) => {
                tracing::warn!(service, error = %status, retry_in_ms = backoff.as_millis() as u64, "cannot register models");
            }
        }
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

struct RelayMetrics {
    pending: GaugeVec,
    oldest_age: GaugeVec,
    shipped: IntCounterVec,
    failures: IntCounterVec,
    refused: GaugeVec,
}

fn metrics() -> &'static RelayMetrics {
    static METRICS: OnceLock<RelayMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = RelayMetrics {
            pending: GaugeVec::new(
                Opts::new("aigronova_outbox_pending_events", "Audit events waiting in the outbox"),
                &["service"],
            )
            .expect("valid metric"),
            oldest_age: GaugeVec::new(
                Opts::new(
                    "aigronova_outbox_oldest_pending_age_seconds",
                    "Age of the oldest audit event waiting in the outbox (the relay's lag)",
                ),
                &["service"],
            )
            .expect("valid metric"),
            shipped: IntCounterVec::new(
                Opts::new("aigronova_outbox_shipped_events_total", "Audit events acknowledged by ai-governance"),
                &["service"],
            )
            .expect("valid metric"),
            failures: IntCounterVec::new(
                Opts::new("aigronova_outbox_ship_failures_total", "Failed attempts to ship a batch of audit events"),
                &["service"],
            )
            .expect("valid metric"),
            refused: GaugeVec::new(
                Opts::new(
                    "aigronova_outbox_refused_events",
                    "Audit events ai-governance refused as invalid, set aside in audit_outbox_refused",
                ),
                &["service"],
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.pending.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.oldest_age.clone()),
            Box::new(metrics.shipped.clone()),
            Box::new(metrics.failures.clone()),
            Box::new(metrics.refused.clone()),
        ] {
            if let Err(error) = prometheus::register(collector) {
                tracing::warn!(%error, "outbox metric not registered");
            }
        }
        metrics
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedded database in `dir` whose outbox holds one event of `service`.
    async fn outbox_with_one_event(dir: &std::path::Path, service: &'static str) -> Database {
        let url = format!("sqlite://{}", dir.join("outbox.db").display());
        let database = Database::connect(&url, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE audit_outbox (event_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, event TEXT NOT NULL, \
             created_at TEXT NOT NULL); CREATE TABLE audit_outbox_refused (event_id TEXT PRIMARY KEY, \
             tenant_id TEXT NOT NULL, event TEXT NOT NULL, created_at TEXT NOT NULL, refused_at TEXT NOT NULL, \
             reason TEXT NOT NULL)",
        )
        .execute(database.pool())
        .await
        .unwrap();
        let caller = Caller { tenant_id: "t1".into(), subject: "key-1".into(), scopes: vec![] };
        let event = AuditEvent::new(&caller, service, EventKind::Decision, "a", "patient:1", "{}".into());
        let mut connection = database.pool().acquire().await.unwrap();
        enqueue(&mut connection, &event).await.unwrap();
        database
    }

    /// An ai-governance that accepts connections and never answers holds a stopping relay for
    /// [`STOPPING_GRACE`], not for its calls' 30 s timeout, and the event it could not ship stays
    /// in the outbox.
    #[tokio::test]
    async fn a_relay_stops_within_its_grace_when_ai_governance_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let database = outbox_with_one_event(dir.path(), "healthquantum").await;
        // Accepts, reads and never answers.
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let governance_url = format!("http://{}", hung.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            loop {
                let (mut socket, _) = hung.accept().await.unwrap();
                let mut buffer = [0; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buffer).await;
                sockets.push(socket);
            }
        });
        let config = RelayConfig { governance_url: Some(governance_url), ..RelayConfig::default() };
        let relay = Relay::new(database.clone(), "healthquantum", config, TokenSigner::generate());
        let shutdown = Shutdown::new();
        let running = tokio::spawn(relay.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        shutdown.trigger();
        let stopped = tokio::time::timeout(STOPPING_GRACE + Duration::from_secs(10), running).await;
        assert!(stopped.is_ok(), "the relay waited for the call's whole timeout");
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_outbox").fetch_one(database.pool()).await.unwrap();
        assert_eq!(pending, 1, "the event stays for the next start");
        held.abort();
    }

    /// While ai-governance cannot be reached, the relay waits out its backoff whatever writes come
    /// meanwhile, rather than try again at each of them.
    #[tokio::test]
    async fn a_failing_relay_keeps_its_backoff_however_often_writes_wake_it() {
        let dir = tempfile::tempdir().unwrap();
        let database = outbox_with_one_event(dir.path(), "backoff-test").await;
        // A port nothing listens on: every attempt is refused at once.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let governance_url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let config = RelayConfig { governance_url: Some(governance_url), ..RelayConfig::default() };
        let relay = Relay::new(database.clone(), "backoff-test", config, TokenSigner::generate());
        let waker = relay.waker();
        let shutdown = Shutdown::new();
        let running = tokio::spawn(relay.run(shutdown.clone()));
        let attempts = || metrics().failures.with_label_values(&["backoff-test"]).get();
        // A write every 20 ms until the relay has tried again after its first backoff (however slow
        // the machine), then for at least 1.2 s and twice as long as that took.
        let started = std::time::Instant::now();
        let waker = &waker;
        let wake_for = |until: Duration| async move {
            while started.elapsed() < until {
                waker.wake();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        while attempts() < 2 {
            assert!(started.elapsed() < Duration::from_secs(10), "the relay did not try again within 10 s");
            wake_for(started.elapsed() + Duration::from_millis(20)).await;
        }
        wake_for((started.elapsed() * 2).max(Duration::from_millis(1200))).await;
        // Backoffs of 0.1, 0.2, 0.4, 0.8 s… leave room for 1 + log2(t / 0.1 s + 1) attempts in t,
        // where an attempt at each write would make one every 20 ms.
        let elapsed = started.elapsed().as_secs_f64();
        let most = 3 + (elapsed / 0.1 + 1.0).log2().floor() as u64;
        assert!(attempts() <= most, "{} attempts in {elapsed:.2} s, at most {most} with the backoff", attempts());
        shutdown.trigger();
        let _ = tokio::time::timeout(STOPPING_GRACE + Duration::from_secs(10), running).await;
    }

    /// A tenant whose events ai-governance holds back is left out of the batches whatever the
    /// number of its events: another tenant's event after them all goes in the next batch.
    #[tokio::test]
    async fn the_events_of_a_held_tenant_do_not_hold_up_another_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let database = outbox_with_one_event(dir.path(), "held-test").await;
        let mut connection = database.pool().acquire().await.unwrap();
        for _ in 0..500 {
            let caller = Caller { tenant_id: "t1".into(), subject: "key-1".into(), scopes: vec![] };
            let event = AuditEvent::new(&caller, "held-test", EventKind::Decision, "a", "patient:1", "{}".into());
            enqueue(&mut connection, &event).await.unwrap();
        }
        let caller = Caller { tenant_id: "t2".into(), subject: "key-2".into(), scopes: vec![] };
        let other = AuditEvent::new(&caller, "held-test", EventKind::Decision, "a", "patient:2", "{}".into());
        enqueue(&mut connection, &other).await.unwrap();
        drop(connection);
        let config = RelayConfig { batch_size: 200, ..RelayConfig::default() };
        let relay = Relay::new(database, "held-test", config, TokenSigner::generate());
        let first = relay.pending(&HashSet::new()).await.unwrap();
        assert_eq!(first.len(), 200);
        assert!(first.iter().all(|(_, event)| event.tenant_id == "t1"), "the oldest first");
        let held = HashSet::from(["t1".to_owned()]);
        let next = relay.pending(&held).await.unwrap();
        let ids: Vec<&str> = next.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, [other.event_id.as_str()], "t1's 501 events left out");
    }

    /// Two relays on one database setting the same event aside: the second finds it gone from the
    /// outbox and leaves the first's row as it is.
    #[tokio::test]
    async fn an_event_set_aside_twice_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let database = outbox_with_one_event(dir.path(), "aside-test").await;
        let relay = Relay::new(database.clone(), "aside-test", RelayConfig::default(), TokenSigner::generate());
        let (event_id, event) = relay.pending(&HashSet::new()).await.unwrap().pop().unwrap();
        relay.set_aside(&event_id, "first reason").await.unwrap();
        relay.set_aside(&event_id, "second reason").await.unwrap();
        let count = |table: &'static str| {
            let pool = database.pool().clone();
            async move {
                let sql = format!("SELECT COUNT(*) FROM {table}");
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.unwrap()
            }
        };
        assert_eq!((count("audit_outbox").await, count("audit_outbox_refused").await), (0, 1));
        let (reason, kept): (String, String) =
            sqlx::query_as("SELECT reason, event FROM audit_outbox_refused WHERE event_id = $1")
                .bind(&event_id)
                .fetch_one(database.pool())
                .await
                .unwrap();
        assert_eq!(reason, "first reason");
        let kept: serde_json::Value = serde_json::from_str(&kept).unwrap();
        assert_eq!(
            (kept["event_id"].as_str(), kept["kind"].as_str()),
            (Some(event_id.as_str()), Some(event.kind.as_str()))
        );
    }

    /// A row whose kind this release does not know is shipped as written, not set aside: it may
    /// come from a later release running beside this one.
    #[tokio::test]
    async fn a_row_of_an_unknown_kind_is_shipped_and_one_that_is_no_event_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let database = outbox_with_one_event(dir.path(), "kind-test").await;
        sqlx::query("UPDATE audit_outbox SET event = REPLACE(event, '\"decision\"', '\"a_later_kind\"')")
            .execute(database.pool())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO audit_outbox (event_id, tenant_id, event, created_at) VALUES ('zz', 't1', '[1, 2]', '')",
        )
        .execute(database.pool())
        .await
        .unwrap();
        let relay = Relay::new(database.clone(), "kind-test", RelayConfig::default(), TokenSigner::generate());
        let pending = relay.pending(&HashSet::new()).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.to_proto().kind, "a_later_kind");
        let reason: String = sqlx::query_scalar("SELECT reason FROM audit_outbox_refused WHERE event_id = 'zz'")
            .fetch_one(database.pool())
            .await
            .unwrap();
        assert!(reason.starts_with("the outbox row is not an audit event"), "{reason}");
        assert!(!reason.contains("[1"), "the row's content is not quoted: {reason}");
    }

    #[test]
    fn relay_config_refuses_bad_values() {
        assert!(RelayConfig::default().validate().is_ok());
        let bad_url = RelayConfig { governance_url: Some("ai-governance:50070".into()), ..RelayConfig::default() };
        assert!(bad_url.validate().is_err());
        assert!(RelayConfig { batch_size: 0, ..RelayConfig::default() }.validate().is_err());
    }

    #[test]
    fn an_event_carries_the_caller_and_a_time_ordered_id() {
        let caller = Caller { tenant_id: "t1".into(), subject: "key-1".into(), scopes: vec![] };
        let first = AuditEvent::new(&caller, "healthquantum", EventKind::Decision, "a", "patient:1", "{}".into());
        let second = AuditEvent::new(&caller, "healthquantum", EventKind::Decision, "a", "patient:1", "{}".into());
        assert_eq!(first.tenant_id, "t1");
        assert_eq!(first.actor, "key-1");
        assert!(first.event_id < second.event_id);
        assert_eq!(serde_json::to_value(&first).unwrap()["kind"], "decision");
    }
}
