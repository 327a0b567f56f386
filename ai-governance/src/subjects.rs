//! LGPD data-subject requests (Art. 18) fanned out to every service's `DataSubject` RPCs and
//! tracked against the 15-day deadline (Art. 19), and the review queue of automated decisions
//! (Art. 20). The CPF of a request is used while the request is processed and never stored; the
//! personal data a request keeps (an access or portability bundle, a correction's details and
//! resolution), and a review's reason and note, which may name the person, are sealed with the
//! tenant's data key (`platform::crypto`), bound to its tenant, row and column.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use aigronova_platform::{
    Error,
    auth::{self, Caller, TokenSigner},
    cpf::Cpf,
    crypto::{TenantCipher, TenantKeys, is_sealed},
    grpc::Page,
    storage::{Database, StoreError},
    subject::{self, SUBJECT_SCOPE},
};
use aigronova_proto::aigronova::common::v1::{self as common, RetainedRecord, data_subject_client::DataSubjectClient};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use tonic::transport::{Channel, Endpoint};

use crate::{
    log::{Leaf, LogStore},
    own_events,
};

/// Art. 19 II: a complete answer within 15 days of the request.
pub const DEADLINE_DAYS: i64 = 15;

/// The longest the services are waited for on one request, whatever time its caller gives: past
/// it, a service that has not answered is failed in the request's outcomes, to be asked again.
pub const FAN_OUT_WITHIN: Duration = Duration::from_secs(300);

/// What is kept of the caller's time to store the request and answer: a tenth of it, and at
/// least this.
const TIME_TO_ANSWER: Duration = Duration::from_secs(2);

/// The least time the services are asked within; a request left less is refused unrecorded.
const TIME_TO_ASK: Duration = Duration::from_secs(1);

/// A service's outcome when it has not answered by the request's deadline.
const DID_NOT_ANSWER_IN_TIME: &str = "did not answer within the time the request had; ask again";

/// When the services must have answered a request whose caller stops waiting at `caller_deadline`
/// (from its `grpc-timeout`; the gateway sends what its own deadline leaves), asked once the
/// subject's locks are held: before the caller stops waiting, with a tenth of the time left (at
/// least [`TIME_TO_ANSWER`]) kept to store the outcomes, so that a slow service makes a `failed`
/// request the caller sees, not a timeout that leaves it guessing and asking again;
/// [`FAN_OUT_WITHIN`] at most. `Aborted` when that leaves less than [`TIME_TO_ASK`] to ask them,
/// before anything is recorded.
fn fan_out_deadline(caller_deadline: Option<tokio::time::Instant>) -> Result<tokio::time::Instant, Error> {
    let now = tokio::time::Instant::now();
    let Some(caller_deadline) = caller_deadline else { return Ok(now + FAN_OUT_WITHIN) };
    let left = caller_deadline.saturating_duration_since(now);
    let within = left.saturating_sub((left / 10).max(TIME_TO_ANSWER)).min(FAN_OUT_WITHIN);
    // Less than this is no time to ask a service in: refused as none.
    if within < TIME_TO_ASK {
        return Err(Error::Refused(Box::new(tonic::Status::aborted(format!(
            "the request's time ran out before the services could be asked: less than {} s was left to ask \
             them, with {} s kept to store and answer (spent waiting for another request about the same \
             subject, or a short grpc-timeout); nothing was recorded: ask again",
            TIME_TO_ASK.as_secs(),
            TIME_TO_ANSWER.as_secs()
        )))));
    }
    Ok(now + within)
}

/// What the data subject asks for (Art. 18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Access,
    Correction,
    Erasure,
    Portability,
}

impl Kind {
    pub fn parse(kind: &str) -> Result<Self, Error> {
        match kind {
            "" => Err(Error::invalid("kind", "is required: one of access, correction, erasure, portability")),
            "access" => Ok(Self::Access),
            "correction" => Ok(Self::Correction),
            "erasure" => Ok(Self::Erasure),
            "portability" => Ok(Self::Portability),
            other => {
                Err(Error::invalid("kind", format!("{other:?} is not one of access, correction, erasure, portability")))
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Correction => "correction",
            Self::Erasure => "erasure",
            Self::Portability => "portability",
        }
    }
}

/// One service's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub service: String,
    /// `exported`, `erased` or `failed`.
    pub status: String,
    pub records: i64,
    pub retained: Vec<(String, String)>,
    pub error: String,
}

/// A request as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRequest {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub details: String,
    pub deadline: String,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub outcomes: Vec<Outcome>,
    /// How a person handled a correction; empty until then, and after an erasure.
    pub resolution: String,
    /// The erasure request that deleted what this request held of its subject, when one did.
    pub erased_by: Option<String>,
    /// When it was read: the time [`Self::overdue`] is told at (a list's, the time its filter
    /// compared deadlines with).
    pub read_at: String,
}

/// A decision to review, as the caller names it.
#[derive(Clone, Debug)]
pub enum Decision {
    /// By its index in the tenant's audit log.
    AtIndex(u64),
    /// By its audit event's id, the decision's own id (a credit score's, an assessment's).
    Id(String),
}

/// What completing a request did.
#[derive(Debug)]
pub enum Completion {
    Completed(Box<StoredRequest>),
    /// The request is not an open correction: its status.
    NotOpen(String),
}

impl StoredRequest {
    pub fn overdue(&self) -> bool {
        self.status != "completed" && self.deadline < self.read_at
    }
}

/// What an evidence report counts of a data-subject request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTally {
    pub kind: String,
    pub status: String,
    pub deadline: String,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// When it was found failed; `None` for a failed request of before this was kept.
    pub failed_at: Option<String>,
}

/// What an evidence report counts of a review.
#[derive(Clone, Debug)]
pub struct ReviewTally {
    pub status: String,
    pub outcome: String,
    pub created_at: String,
    pub decided_at: Option<String>,
}

/// A review of an automated decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub id: String,
    pub audit_index: u64,
    pub event_id: String,
    pub action: String,
    pub reason: String,
    pub status: String,
    pub outcome: String,
    pub note: String,
    pub reviewer: String,
    pub created_at: String,
    pub decided_at: Option<String>,
}

/// The services that hold personal data, by name, and how to reach them.
#[derive(Clone, Debug)]
pub struct SubjectServices {
    clients: BTreeMap<String, DataSubjectClient<Channel>>,
    signer: Option<TokenSigner>,
}

impl SubjectServices {
    /// `urls` maps a service name to its gRPC URL; `signer` is the services' key, which their
    /// `DataSubject` RPCs accept.
    pub fn new(urls: &BTreeMap<String, String>, signer: Option<TokenSigner>) -> anyhow::Result<Self> {
        let mut clients = BTreeMap::new();
        for (name, url) in urls {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|error| anyhow::anyhow!("ai_governance.data_subject_services.{name}: {error}"))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(FAN_OUT_WITHIN);
            clients.insert(name.clone(), DataSubjectClient::new(endpoint.connect_lazy()));
        }
        Ok(Self { clients, signer })
    }

    fn request<T>(&self, tenant_id: &str, message: T) -> Result<tonic::Request<T>, String> {
        let signer = self.signer.as_ref().ok_or("no internal_auth.service_signing_key to call the service with")?;
        let caller = Caller { tenant_id: tenant_id.to_owned(), ..Caller::service(crate::SERVICE_NAME, SUBJECT_SCOPE) };
        let mut request = tonic::Request::new(message);
        auth::attach_token(request.metadata_mut(), &signer.mint(&caller));
        Ok(request)
    }

    /// `call` on every service at once with a fresh `message`, each answer by service name; a
    /// service that has not answered by `deadline` is failed, saying so.
    async fn ask<M, R, F, Fut>(
        &self,
        tenant_id: &str,
        message: impl Fn() -> M,
        call: F,
        deadline: tokio::time::Instant,
    ) -> Vec<(String, Result<R, String>)>
    where
        F: Fn(DataSubjectClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let calls = self.clients.iter().map(|(name, client)| {
            let request = self.request(tenant_id, message());
            // Not sent with no time left: a `grpc-timeout` of zero would read as none.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let call = request.and_then(|mut request| {
                if left.is_zero() {
                    return Err(DID_NOT_ANSWER_IN_TIME.to_owned());
                }
                request.set_timeout(left);
                Ok(call(client.clone(), request))
            });
            async move {
                let answer = match call {
                    // The call's own timeout (its `grpc-timeout`, the time left) or this one,
                    // whichever comes first, is told the same way.
                    Ok(call) => match tokio::time::timeout_at(deadline, call).await {
                        Ok(Ok(response)) => Ok(response.into_inner()),
                        Ok(Err(_)) | Err(_) if tokio::time::Instant::now() >= deadline => {
                            Err(DID_NOT_ANSWER_IN_TIME.to_owned())
                        }
                        Ok(Err(status)) => Err(status.message().to_owned()),
                        Err(_elapsed) => Err(DID_NOT_ANSWER_IN_TIME.to_owned()),
                    },
                    Err(error) => Err(error),
                };
                (name.clone(), answer)
            }
        });
        futures_util::future::join_all(calls).await
    }

    /// Every service's export for `cpf`, and each one's outcome.
    async fn export(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> (serde_json::Value, Vec<Outcome>) {
        let message = || common::ExportSubjectRequest { cpf: cpf.as_str().to_owned(), request_id: id.to_owned() };
        let call =
            |mut client: DataSubjectClient<Channel>, request| async move { client.export_subject(request).await };
        let answers = self.ask(tenant_id, message, call, deadline).await;
        let mut data = serde_json::Map::new();
        let mut outcomes = Vec::new();
        for (name, answer) in answers {
            match answer {
                Ok(response) => {
                    let exported = response.data.map_or_else(|| serde_json::json!({}), subject::from_struct);
                    outcomes.push(outcome(&name, "exported", count_records(&exported), Vec::new(), String::new()));
                    data.insert(name, exported);
                }
                Err(error) => outcomes.push(outcome(&name, "failed", 0, Vec::new(), error)),
            }
        }
        (serde_json::Value::Object(data), outcomes)
    }

    /// Every service's erasure of `cpf`, as outcomes.
    async fn erase(&self, tenant_id: &str, cpf: &Cpf, id: &str, deadline: tokio::time::Instant) -> Vec<Outcome> {
        let message = || common::EraseSubjectRequest { cpf: cpf.as_str().to_owned(), request_id: id.to_owned() };
        let call = |mut client: DataSubjectClient<Channel>, request| async move { client.erase_subject(request).await };
        let answers = self.ask(tenant_id, message, call, deadline).await;
        answers
            .into_iter()
            .map(|(name, answer)| match answer {
                Ok(response) => {
                    let retained = response.retained.into_iter().map(|record| (record.kind, record.reason)).collect();
                    outcome(&name, "erased", response.erased_records, retained, String::new())
                }
                Err(error) => outcome(&name, "failed", 0, Vec::new(), error),
            })
            .collect()
    }
}

fn outcome(service: &str, status: &str, records: i64, retained: Vec<(String, String)>, error: String) -> Outcome {
    Outcome { service: service.to_owned(), status: status.to_owned(), records, retained, error }
}

/// SHA-256 of `prefix` and the CPF: the name of the locks on a subject (under the deployment's
/// secret, see `SubjectStore::lock_secret`), and what tied an earlier version's requests to their
/// subject (see [`request_digest`]).
fn subject_digest(prefix: &str, cpf: &Cpf) -> String {
    hex::encode(Sha256::digest(format!("{prefix}:{}", cpf.as_str())))
}

/// What ties request `id` to its subject: a keyed digest of the id and the CPF under the tenant's
/// data key, which the master key wraps outside the database, so that nobody holding the
/// database alone can test CPFs against it, and a different one on every request. Kept only
/// beside what holds the subject's data anyway (a bundle with records, a correction's details),
/// and deleted with it.
fn request_digest(cipher: &TenantCipher, id: &str, cpf: &Cpf) -> String {
    cipher.blind_index(&format!("subject-request\u{0}{id}\u{0}{}", cpf.as_str()))
}

/// Deletes, as part of erasure request `erasure`, what the tenant's earlier requests about `cpf`
/// hold of the subject: bundles (found by digest, or, kept before digests were, by the CPF they
/// contain, opened with `cipher` when sealed) and corrections' details and resolutions; an open
/// correction is closed, as there is nothing left to correct. Returns what it cleared.
async fn erase_held(
    connection: &mut AnyConnection,
    cipher: &TenantCipher,
    tenant_id: &str,
    cpf: &Cpf,
    erasure: &str,
    secret: &str,
) -> Result<Cleared, Error> {
    let mut about_subject = Vec::new();
    let digests = sqlx::query(
        "SELECT id, subject_digest FROM subject_requests WHERE tenant_id = $1 AND subject_digest IS NOT NULL",
    )
    .bind(tenant_id)
    .fetch_all(&mut *connection)
    .await
    .map_err(StoreError::from)?;
    for row in digests {
        let id: String = row.try_get("id").map_err(StoreError::from)?;
        let digest: String = row.try_get("subject_digest").map_err(StoreError::from)?;
        // Keyed by the tenant's data key; made before it was, by the deployment's secret, or
        // before that by the request id alone.
        if digest == request_digest(cipher, &id, cpf)
            || digest == subject_digest(&format!("{secret}:{id}"), cpf)
            || digest == subject_digest(&id, cpf)
        {
            about_subject.push(id);
        }
    }
    // Bundles without a digest (made before digests were kept, or that found nothing): opened
    // one at a time, so that an erasure holds one bundle in memory however many there are.
    let undigested: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM subject_requests WHERE tenant_id = $1 AND subject_digest IS NULL AND export IS NOT NULL",
    )
    .bind(tenant_id)
    .fetch_all(&mut *connection)
    .await
    .map_err(StoreError::from)?;
    let quoted = format!("\"{}\"", cpf.as_str());
    let mut cleared = Cleared::default();
    for id in undigested {
        let export: Option<String> =
            sqlx::query_scalar("SELECT export FROM subject_requests WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(&id)
                .fetch_optional(&mut *connection)
                .await
                .map_err(StoreError::from)?
                .flatten();
        match export.map(|export| unseal(cipher, &Column::Export.context(tenant_id, &id), export)) {
            Some(Ok(export)) if export.contains(&quoted) => about_subject.push(id),
            Some(Ok(_)) | None => {}
            // One bundle that does not open stops no erasure: it is left, and counted.
            Some(Err(error)) => {
                tracing::error!(%error, request = %id, "a bundle without a digest does not open; not erased");
                cleared.unreadable += 1;
            }
        }
    }
    for id in about_subject {
        // An open one is closed here only if nobody completed it meanwhile: its row, locked by
        // this update, says so.
        let closed: Option<String> = sqlx::query_scalar(
            "UPDATE subject_requests SET status = 'completed', completed_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'open' RETURNING kind",
        )
        .bind(tenant_id)
        .bind(&id)
        .bind(now())
        .fetch_optional(&mut *connection)
        .await
        .map_err(StoreError::from)?;
        let changed = sqlx::query(
            "UPDATE subject_requests SET export = NULL, subject_digest = NULL, erased_by = $3, \
             details = '', resolution = NULL WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(&id)
        .bind(erasure)
        .execute(&mut *connection)
        .await
        .map_err(StoreError::from)?
        .rows_affected();
        cleared.erased += i64::try_from(changed).unwrap_or(i64::MAX);
        if let Some(kind) = closed {
            cleared.closed.push((id, kind));
        }
    }
    Ok(cleared)
}

/// What an erasure cleared of the tenant's earlier requests about its subject.
#[derive(Default)]
struct Cleared {
    /// Requests cleared.
    erased: i64,
    /// Bundles without a digest that did not open, and were kept.
    unreadable: i64,
    /// Open requests (corrections) closed, with their kinds.
    closed: Vec<(String, String)>,
}

/// The records of an export: the total length of its top-level lists.
fn count_records(data: &serde_json::Value) -> i64 {
    data.as_object()
        .map(|map| map.values().filter_map(serde_json::Value::as_array).map(Vec::len).sum::<usize>())
        .unwrap_or(0) as i64
}

/// An audit event of ai-governance's own, by `caller`, now.
fn own_leaf(caller: &Caller, kind: &str, action: &str, subject: &str, details: serde_json::Value) -> Leaf {
    Leaf {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: caller.tenant_id.clone(),
        service: crate::SERVICE_NAME.to_owned(),
        kind: kind.to_owned(),
        action: action.to_owned(),
        actor: caller.subject.clone(),
        subject: subject.to_owned(),
        details,
        occurred_at: now(),
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A column that holds the subject's personal data, sealed: of `subject_requests`, or of
/// `reviews` (a reason or a note may name the person the decision was about).
#[derive(Clone, Copy, Debug)]
enum Column {
    /// An access or portability bundle.
    Export,
    /// What a correction asks for.
    Details,
    /// How a person handled a correction.
    Resolution,
    /// Why a review of a decision was asked for.
    ReviewReason,
    /// What the reviewer noted with the outcome.
    ReviewNote,
}

impl Column {
    /// What a value of this column of row `id` of `tenant_id` is sealed for: moved to another
    /// column, row or tenant, it does not open.
    fn context(self, tenant_id: &str, id: &str) -> String {
        let (table, column) = match self {
            Self::Export => ("subject_requests", "export"),
            Self::Details => ("subject_requests", "details"),
            Self::Resolution => ("subject_requests", "resolution"),
            Self::ReviewReason => ("reviews", "reason"),
            Self::ReviewNote => ("reviews", "note"),
        };
        format!("{table}.{column}:{tenant_id}:{id}")
    }
}

/// `value` sealed for `context` with the tenant's data key. An empty value stays empty: there is
/// nothing in it to hide, and an erasure empties `details` likewise.
fn seal(cipher: &TenantCipher, context: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    cipher.seal(context, value)
}

/// `stored`, read from the place `context` names, opened with the tenant's data key; a value
/// stored in clear before values were sealed comes back as it is. A sealed value that does not open
/// (another key, or moved from elsewhere) is corrupt data, never an empty answer.
fn unseal(cipher: &TenantCipher, context: &str, stored: String) -> Result<String, StoreError> {
    if !is_sealed(&stored) {
        return Ok(stored);
    }
    cipher.open(context, &stored).map_err(|error| StoreError::Corrupt(format!("{context}: {error}")))
}

/// Opens `fields` of row `id` of `tenant_id` in place, each read from the column it names.
fn unseal_in_place(
    cipher: &TenantCipher,
    tenant_id: &str,
    id: &str,
    fields: [(Column, &mut String); 2],
) -> Result<(), StoreError> {
    for (column, value) in fields {
        let stored = std::mem::take(value);
        *value = unseal(cipher, &column.context(tenant_id, id), stored)?;
    }
    Ok(())
}

/// Requests and reviews over the governance database, with the log they are audited in.
#[derive(Debug)]
pub struct SubjectStore {
    database: Database,
    /// The tenants' data keys, which seal bundles, details, resolutions, and reviews' reasons
    /// and notes.
    keys: Arc<TenantKeys>,
    services: SubjectServices,
    log: Arc<LogStore>,
    /// A lock per subject being processed (see [`SubjectStore::open`]).
    locks: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The secret the locks across replicas are named under (`subject_lock_key`).
    lock_secret: tokio::sync::OnceCell<String>,
}

/// A request about to be stored.
#[derive(Clone, Copy)]
struct NewRequest<'a> {
    id: &'a str,
    kind: Kind,
    details: &'a str,
    /// When it was received: its deadline runs from then.
    created: chrono::DateTime<Utc>,
    export: Option<&'a str>,
    digest: Option<&'a str>,
}

impl SubjectStore {
    pub fn new(database: Database, keys: Arc<TenantKeys>, services: SubjectServices, log: Arc<LogStore>) -> Self {
        Self {
            database,
            keys,
            services,
            log,
            locks: std::sync::Mutex::default(),
            lock_secret: tokio::sync::OnceCell::new(),
        }
    }

    /// Seals the bundles, details, resolutions, and reviews' reasons and notes that earlier
    /// versions stored in clear; returns how many values it sealed. Each value is replaced only
    /// while it is still the one read, so that an erasure, a completion or a decision made
    /// meanwhile (by another replica) wins; a value that cannot be sealed now is logged and left
    /// for the next start.
    pub async fn seal_clear_values(&self) -> Result<usize, Error> {
        let requests = [(Column::Export, "export"), (Column::Details, "details"), (Column::Resolution, "resolution")];
        let sealed = self.seal_clear_in("subject_requests", "erased_by IS NULL", &requests).await?;
        let reviews = [(Column::ReviewReason, "reason"), (Column::ReviewNote, "note")];
        Ok(sealed + self.seal_clear_in("reviews", "1 = 1", &reviews).await?)
    }

    /// Seals the values of `columns` of `table` stored in clear, in the rows `condition` holds of;
    /// how many it sealed.
    async fn seal_clear_in(&self, table: &str, condition: &str, columns: &[(Column, &str)]) -> Result<usize, Error> {
        // Only values that may be in clear are read: a sealed one is `v1:` and at least 40
        // characters of base64, with no space.
        let in_clear = |column: &str| {
            format!("({column} <> '' AND ({column} NOT LIKE 'v1:%' OR {column} LIKE '% %' OR length({column}) < 43))")
        };
        let names: Vec<&str> = columns.iter().map(|(_, name)| *name).collect();
        let clear: Vec<String> = names.iter().map(|name| in_clear(name)).collect();
        let query = format!(
            "SELECT tenant_id, id, {} FROM {table} WHERE {condition} AND ({})",
            names.join(", "),
            clear.join(" OR ")
        );
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(query)).fetch_all(self.database.pool()).await.map_err(StoreError::from)?;
        let mut sealed = 0;
        for row in &rows {
            let text = |column: &str| row.try_get::<Option<String>, _>(column).map_err(StoreError::from);
            let (tenant_id, id) = (text("tenant_id")?.unwrap_or_default(), text("id")?.unwrap_or_default());
            let cipher = match self.keys.cipher(&tenant_id).await {
                Ok(cipher) => cipher,
                Err(error) => {
                    tracing::error!(%error, tenant = %tenant_id, "a tenant's data key is not available; values left in clear");
                    continue;
                }
            };
            for (column, name) in columns {
                let Some(value) = text(name)?.filter(|value| !value.is_empty() && !is_sealed(value)) else {
                    continue;
                };
                let statement = format!(
                    "UPDATE {table} SET {name} = $1 WHERE tenant_id = $2 AND id = $3 AND {condition} AND {name} = $4"
                );
                let written = self
                    .database
                    .execute_write(
                        sqlx::query(sqlx::AssertSqlSafe(statement))
                            .bind(seal(&cipher, &column.context(&tenant_id, &id), &value))
                            .bind(tenant_id.clone())
                            .bind(id.clone())
                            .bind(value),
                    )
                    .await;
                match written {
                    Ok(count) => sealed += usize::try_from(count).unwrap_or(0),
                    Err(error) => tracing::error!(%error, table, %id, "a value stored in clear is not sealed yet"),
                }
            }
        }
        Ok(sealed)
    }

    /// Opens a request, fans it out (corrections wait for a person), stores and audits it. An
    /// erasure also deletes, in the transaction that stores it, what earlier requests about the
    /// same CPF hold of the subject: access and portability bundles, corrections' details. The
    /// work runs on a task of its own, so that a caller who stops waiting does not cut it short
    /// between the services' answers and the request's record.
    pub async fn open(
        self: &Arc<Self>,
        caller: &Caller,
        cpf: &Cpf,
        kind: Kind,
        details: &str,
        caller_deadline: Option<tokio::time::Instant>,
    ) -> Result<StoredRequest, Error> {
        let (store, caller, cpf, details) = (Arc::clone(self), caller.clone(), cpf.clone(), details.to_owned());
        let task = async move {
            let processed = store.process(&caller, &cpf, kind, &details, caller_deadline).await;
            // Logged here too: the caller may have stopped waiting. A refusal of the request as
            // asked (too little time, a bad field) is the caller's to mend, not the service's fault.
            let callers_mistake = |error: &Error| match error {
                Error::InvalidArgument { .. } | Error::NotFound(_) => true,
                Error::Refused(status) => matches!(
                    status.code(),
                    tonic::Code::InvalidArgument
                        | tonic::Code::NotFound
                        | tonic::Code::Aborted
                        | tonic::Code::FailedPrecondition
                ),
                _ => false,
            };
            match &processed {
                Err(error) if callers_mistake(error) => {
                    tracing::info!(%error, tenant = %caller.tenant_id, kind = kind.as_str(), "data-subject request refused");
                }
                Err(error) => {
                    tracing::error!(%error, tenant = %caller.tenant_id, kind = kind.as_str(), "data-subject request failed");
                }
                Ok(_) => {}
            }
            processed
        };
        match tokio::spawn(task).await {
            Ok(processed) => processed,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => {
                tracing::error!(kind = kind.as_str(), "data-subject request cut short by the shutdown");
                Err(StoreError::Database(sqlx::Error::PoolClosed).into())
            }
        }
    }

    async fn process(
        &self,
        caller: &Caller,
        cpf: &Cpf,
        kind: Kind,
        details: &str,
        caller_deadline: Option<tokio::time::Instant>,
    ) -> Result<StoredRequest, Error> {
        // One request about a subject at a time, in this replica and then in every replica on
        // the database: an access request still collecting data while an erasure of the same
        // CPF runs would store its bundle after the erasure deleted the others.
        let lock = self.subject_lock(&caller.tenant_id, cpf);
        let turn = lock.lock().await;
        let locked = match self.lock_secret().await {
            Ok(secret) => self
                .database
                .lock_across_processes(&subject_digest(&format!("{secret}:{}", caller.tenant_id), cpf))
                .await
                .map_err(Error::from),
            Err(error) => Err(error),
        };
        let processed = match locked {
            Ok(across) => {
                // The time the caller gives counts from here: waiting for the locks spent some.
                // A correction asks no service: only stored, it needs no time of its own.
                let deadline = match kind {
                    Kind::Correction => Ok(tokio::time::Instant::now() + FAN_OUT_WITHIN),
                    _ => fan_out_deadline(caller_deadline),
                };
                let processed = match deadline {
                    Ok(deadline) => self.fan_out_and_store(caller, cpf, kind, details, deadline).await,
                    Err(error) => Err(error),
                };
                across.release().await;
                processed
            }
            Err(error) => Err(error),
        };
        drop(turn);
        self.release(&caller.tenant_id, cpf, lock);
        let request = processed?;
        tracing::info!(tenant = %caller.tenant_id, request = %request.id, kind = kind.as_str(), status = %request.status, "data-subject request");
        Ok(request)
    }

    async fn fan_out_and_store(
        &self,
        caller: &Caller,
        cpf: &Cpf,
        kind: Kind,
        details: &str,
        deadline: tokio::time::Instant,
    ) -> Result<StoredRequest, Error> {
        // Before any service is asked: a tenant's data key that does not unwrap stops the request
        // here. Made now if the tenant has none, outside the transaction that stores the request.
        let cipher = self.keys.cipher(&caller.tenant_id).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let created = Utc::now();
        // Recorded before any service is asked, so that a request cut short by a stop of this
        // process, after some services erased, is still on record (see `fail_interrupted`).
        // A correction holds the subject's data from now on: its digest goes with it, so that an
        // erasure finds it whatever becomes of it.
        let held_digest = (kind == Kind::Correction).then(|| request_digest(&cipher, &id, cpf));
        let running = NewRequest { id: &id, kind, details, created, export: None, digest: held_digest.as_deref() };
        self.record_running(&caller.tenant_id, &cipher, &running).await?;
        let (export, outcomes) = self.ask_services(&caller.tenant_id, cpf, kind, &id, deadline).await;
        // Only a request that holds the subject's data keeps the digest that finds it again.
        let holds_data = match kind {
            Kind::Access | Kind::Portability => outcomes.iter().any(|outcome| outcome.records > 0),
            Kind::Correction => true,
            Kind::Erasure => false,
        };
        let digest = holds_data.then(|| request_digest(&cipher, &id, cpf));
        let new = NewRequest { id: &id, kind, details, created, export: export.as_deref(), digest: digest.as_deref() };
        let first = self.store_request(caller, &cipher, cpf, &new, outcomes.clone(), kind == Kind::Erasure).await;
        let stored = match first {
            Err(error) if kind == Kind::Erasure => {
                // The services have erased: the request is recorded whatever happens here.
                let mut outcomes = outcomes;
                let note = "earlier requests not erased".to_owned();
                outcomes.push(outcome(crate::SERVICE_NAME, "failed", 0, Vec::new(), note));
                match self.store_request(caller, &cipher, cpf, &new, outcomes, false).await {
                    // The first attempt committed after all, though it reported a failure.
                    Ok(None) => {
                        tracing::warn!(%error, request = %id, "an erasure's record committed though its commit failed");
                        self.get(&caller.tenant_id, &id).await
                    }
                    Ok(Some(request)) => {
                        tracing::error!(%error, request = %id, "an erasure's clean-up of earlier requests failed; stored as failed");
                        Ok(request)
                    }
                    // Logged by `open`'s task.
                    Err(again) => Err(again),
                }
            }
            Ok(Some(request)) => Ok(request),
            // Finished already: `fail_interrupted` took it for one cut short.
            Ok(None) => self.get(&caller.tenant_id, &id).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &stored {
            // Not left `running` for the sweep to call cut short by a stop: failed now, saying so.
            let note = "its outcome could not be stored (ai-governance's database refused it); ask again";
            if let Err(again) = self.fail_running(&caller.tenant_id, &id, kind.as_str(), note).await {
                tracing::warn!(%error, %again, request = %id, "a subject request whose outcome was not stored stays running");
            }
        }
        if kind == Kind::Erasure {
            // The bundles and details just deleted must not stay on disk in the log's older pages.
            self.database.truncate_log_soon();
        }
        stored
    }

    /// Asks the services for the subject's data (access, portability) or its erasure: the bundle
    /// when there is one, and each service's outcome.
    async fn ask_services(
        &self,
        tenant_id: &str,
        cpf: &Cpf,
        kind: Kind,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> (Option<String>, Vec<Outcome>) {
        match kind {
            Kind::Access | Kind::Portability => {
                let (data, outcomes) = self.services.export(tenant_id, cpf, id, deadline).await;
                // A bundle some services could not answer for says so, rather than look whole.
                let missing: Vec<&str> = outcomes
                    .iter()
                    .filter(|outcome| outcome.status == "failed")
                    .map(|outcome| outcome.service.as_str())
                    .collect();
                let bundle = serde_json::json!({
                    "requestId": id,
                    "kind": kind.as_str(),
                    "generatedAt": now(),
                    "format": "application/json; one object per service, as each service holds the data",
                    "services": data,
                    "missingServices": missing,
                });
                (Some(bundle.to_string()), outcomes)
            }
            Kind::Erasure => (None, self.services.erase(tenant_id, cpf, id, deadline).await),
            Kind::Correction => (None, Vec::new()),
        }
    }

    /// Records request `new` as `running`, its details sealed with `cipher` (and, for one that holds
    /// the subject's data from the start, the digest that finds it), before the services are
    /// asked.
    async fn record_running(&self, tenant_id: &str, cipher: &TenantCipher, new: &NewRequest<'_>) -> Result<(), Error> {
        let NewRequest { id, kind, details, created, digest, .. } = *new;
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        sqlx::query(
            "INSERT INTO subject_requests (tenant_id, id, kind, status, details, deadline, created_at, outcomes, \
             subject_digest) VALUES ($1, $2, $3, 'running', $4, $5, $6, '[]', $7)",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(kind.as_str())
        .bind(seal(cipher, &Column::Details.context(tenant_id, id), details))
        .bind((created + chrono::Duration::days(DEADLINE_DAYS)).to_rfc3339_opts(SecondsFormat::Micros, true))
        .bind(created.to_rfc3339_opts(SecondsFormat::Micros, true))
        .bind(digest)
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Marks `failed` the requests left `running` for longer than `running_for`, which a stop of
    /// the process that asked the services cut short (some of them may have erased): each keeps
    /// its deadline, is shown overdue once past it, and is audited as the service's own decision.
    /// Returns how many it marked.
    pub async fn fail_interrupted(&self, running_for: std::time::Duration) -> Result<u64, Error> {
        let cutoff = Utc::now() - chrono::Duration::from_std(running_for).unwrap_or(chrono::Duration::MAX);
        // Across tenants: each is then marked in its own tenant's transaction.
        let rows = sqlx::query(
            "SELECT tenant_id, id, kind FROM subject_requests WHERE status = 'running' AND created_at < $1 \
             ORDER BY created_at",
        )
        .bind(cutoff.to_rfc3339_opts(SecondsFormat::Micros, true))
        .fetch_all(self.database.pool())
        .await
        .map_err(StoreError::from)?;
        let note = "cut short: ai-governance stopped while it asked the services, some of which may have answered; \
                    ask again";
        let mut marked = 0;
        for row in rows {
            let tenant_id: String = row.try_get("tenant_id").map_err(StoreError::from)?;
            let id: String = row.try_get("id").map_err(StoreError::from)?;
            let kind: String = row.try_get("kind").map_err(StoreError::from)?;
            // One that cannot be marked now waits for the next sweep; the others go on.
            match self.fail_running(&tenant_id, &id, &kind, note).await {
                Ok(true) => marked += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(tenant = %tenant_id, request = %id, %error, "a subject request cut short is not marked failed yet")
                }
            }
        }
        Ok(marked)
    }

    /// Marks request `id` of `tenant_id` `failed`, with one outcome of this service saying `note`,
    /// if it is still `running`, with its audit event; whether it did.
    async fn fail_running(&self, tenant_id: &str, id: &str, kind: &str, note: &str) -> Result<bool, Error> {
        let outcomes = serde_json::to_string(&[outcome(crate::SERVICE_NAME, "failed", 0, Vec::new(), note.to_owned())])
            .expect("outcomes serialise");
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        let updated = sqlx::query(
            "UPDATE subject_requests SET status = 'failed', outcomes = $3, failed_at = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(outcomes)
        .bind(now())
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        let system =
            Caller { tenant_id: tenant_id.to_owned(), subject: crate::SERVICE_NAME.to_owned(), scopes: Vec::new() };
        let details = serde_json::json!({
            "kind": kind, "status": "failed", "services": [[crate::SERVICE_NAME, "failed"]], "interrupted": true,
        });
        let subject = format!("subject-request:{id}");
        let leaf = own_leaf(&system, "subject_request", "governance.CreateSubjectRequest", &subject, details);
        own_events::enqueue(&mut transaction, &leaf).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        own_events::append_committed(&self.log, &self.database, vec![leaf]).await;
        tracing::warn!(tenant = %tenant_id, request = %id, %note, "a subject request is marked failed");
        Ok(true)
    }

    /// Stores request `new`, recorded `running`, with `outcomes`, its bundle sealed with `cipher`,
    /// and its audit event; with `erase`, in the same transaction, deletes what the tenant's
    /// earlier requests hold of the subject, as one more outcome. `None` when the request is no
    /// longer `running` (stored already).
    async fn store_request(
        &self,
        caller: &Caller,
        cipher: &TenantCipher,
        cpf: &Cpf,
        new: &NewRequest<'_>,
        mut outcomes: Vec<Outcome>,
        erase: bool,
    ) -> Result<Option<StoredRequest>, Error> {
        let mut transaction = self.database.begin_tenant(&caller.tenant_id).await?;
        let mut closed = Vec::new();
        if erase {
            let secret = self.lock_secret().await?;
            let Cleared { erased, unreadable, closed: cleared } =
                erase_held(&mut transaction, cipher, &caller.tenant_id, cpf, new.id, secret).await?;
            closed = cleared;
            let reviews: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reviews WHERE tenant_id = $1")
                .bind(&caller.tenant_id)
                .fetch_one(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
            // Reviews name a decision by its audit index, not its subject: whether this person's are
            // among them is not known here.
            let retained = (reviews > 0).then(|| {
                (
                    "reviews".to_owned(),
                    "Reviews of automated decisions, if any is of a decision about this person, keep the reason \
                     and note people wrote, as the record of each review (LGPD Art. 20); they name the decision by \
                     its audit index, and are shown only to reviewers and to keys with governance:write"
                        .to_owned(),
                )
            });
            // A bundle that does not open may be the subject's: the erasure is not done.
            let (status, note) = match unreadable {
                0 => ("erased", String::new()),
                _ => ("failed", format!("{unreadable} earlier requests' bundles do not open and were kept")),
            };
            outcomes.push(outcome(crate::SERVICE_NAME, status, erased, retained.into_iter().collect(), note));
        }
        let status = match new.kind {
            Kind::Correction => "open",
            _ if outcomes.iter().any(|outcome| outcome.status == "failed") => "failed",
            _ => "completed",
        };
        let created = new.created;
        let request = StoredRequest {
            id: new.id.to_owned(),
            kind: new.kind.as_str().to_owned(),
            status: status.to_owned(),
            details: new.details.to_owned(),
            deadline: (created + chrono::Duration::days(DEADLINE_DAYS)).to_rfc3339_opts(SecondsFormat::Micros, true),
            created_at: created.to_rfc3339_opts(SecondsFormat::Micros, true),
            completed_at: (status == "completed").then(now),
            outcomes,
            resolution: String::new(),
            erased_by: None,
            read_at: now(),
        };
        let tenant_id = caller.tenant_id.as_str();
        let export = new.export.map(|export| seal(cipher, &Column::Export.context(tenant_id, new.id), export));
        let updated = sqlx::query(
            "UPDATE subject_requests SET status = $3, completed_at = $4, outcomes = $5, export = $6, \
             subject_digest = $7, failed_at = $8 WHERE tenant_id = $1 AND id = $2 AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(&request.id)
        .bind(&request.status)
        .bind(&request.completed_at)
        .bind(serde_json::to_string(&request.outcomes).expect("outcomes serialise"))
        .bind(export)
        .bind(new.digest)
        .bind((status == "failed").then(now))
        .execute(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let services: Vec<_> = request.outcomes.iter().map(|o| serde_json::json!([o.service, o.status])).collect();
        let mut leaves = vec![own_leaf(
            caller,
            "subject_request",
            "governance.CreateSubjectRequest",
            &format!("subject-request:{}", request.id),
            serde_json::json!({"kind": request.kind, "status": request.status, "services": services}),
        )];
        // An open request the erasure closed is completed as by hand, and audited so, after the
        // erasure's own event.
        for (id, kind) in closed {
            let details = serde_json::json!({"kind": kind, "status": "completed", "erasureRequestId": new.id});
            let subject = format!("subject-request:{id}");
            leaves.push(own_leaf(caller, "subject_request", "governance.CompleteSubjectRequest", &subject, details));
        }
        for leaf in &leaves {
            own_events::enqueue(&mut transaction, leaf).await?;
        }
        transaction.commit().await.map_err(StoreError::from)?;
        own_events::append_committed(&self.log, &self.database, leaves).await;
        Ok(Some(request))
    }

    /// The deployment's secret that the cross-replica locks and the subject digests are made
    /// under, made by the first replica to need it.
    async fn lock_secret(&self) -> Result<&str, Error> {
        let secret = self
            .lock_secret
            .get_or_try_init(|| async {
                let made = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
                sqlx::query("INSERT INTO subject_lock_key (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
                    .bind(made)
                    .execute(self.database.pool())
                    .await
                    .map_err(StoreError::from)?;
                sqlx::query_scalar::<_, String>("SELECT secret FROM subject_lock_key WHERE id = 1")
                    .fetch_one(self.database.pool())
                    .await
                    .map_err(|error| Error::from(StoreError::from(error)))
            })
            .await?;
        Ok(secret)
    }

    /// The lock of requests about `cpf` of `tenant_id`, keyed by a digest of both.
    fn subject_lock(&self, tenant_id: &str, cpf: &Cpf) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(subject_digest(tenant_id, cpf)).or_default())
    }

    /// Forgets the lock of `cpf` once no request holds or waits for it.
    fn release(&self, tenant_id: &str, cpf: &Cpf, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Ours and the map's: nobody else holds or waits for it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&subject_digest(tenant_id, cpf));
        }
    }

    /// Appends a read's audit event to the log before what was read is shown. A change's event goes
    /// through the outbox instead (see [`own_events`]).
    async fn audit(
        &self,
        caller: &Caller,
        kind: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> Result<(), Error> {
        self.log.append(vec![own_leaf(caller, kind, action, subject, details)]).await?;
        Ok(())
    }

    /// Audits, as one read of `action`, what the caller was shown of what people wrote about
    /// subjects (a correction's details and resolution, a review's reason and note): `shown` the
    /// ids of the `Shown` items whose text it saw; nothing when none.
    pub async fn audit_shown(
        &self,
        caller: &Caller,
        action: &str,
        what: Shown,
        shown: Vec<String>,
    ) -> Result<(), Error> {
        let (noun, field) = match what {
            Shown::Requests => ("subject-request", "subjectRequestIds"),
            Shown::Reviews => ("review", "reviewIds"),
        };
        let subject = match shown.as_slice() {
            [] => return Ok(()),
            [one] => format!("{noun}:{one}"),
            _ => format!("{noun}s"),
        };
        self.audit(caller, "sensitive_read", action, &subject, serde_json::json!({ field: shown })).await
    }

    /// The tenant's data cipher (page tokens are made under it).
    pub async fn cipher(&self, tenant_id: &str) -> Result<Arc<TenantCipher>, Error> {
        Ok(self.keys.cipher(tenant_id).await?)
    }

    pub async fn get(&self, tenant_id: &str, id: &str) -> Result<StoredRequest, Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            request_columns!(),
            " FROM subject_requests WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *self.database.begin_tenant_read(tenant_id).await?)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| Error::NotFound("subject request".into()))?;
        let mut request = request_from(&row)?;
        self.unseal_requests(tenant_id, std::slice::from_mut(&mut request)).await?;
        Ok(request)
    }

    /// Opens the sealed details and resolutions of `requests` of `tenant_id` in place. The
    /// tenant's data key is asked for only when a value is sealed, so that reading requests
    /// stored in clear makes no key.
    async fn unseal_requests(&self, tenant_id: &str, requests: &mut [StoredRequest]) -> Result<(), Error> {
        if !requests.iter().any(|request| is_sealed(&request.details) || is_sealed(&request.resolution)) {
            return Ok(());
        }
        let cipher = self.keys.cipher(tenant_id).await?;
        for request in requests {
            let fields = [(Column::Details, &mut request.details), (Column::Resolution, &mut request.resolution)];
            unseal_in_place(&cipher, tenant_id, &request.id, fields)?;
        }
        Ok(())
    }

    /// Completes open correction `id` of the caller's tenant with how a person handled it, and
    /// audits that.
    pub async fn complete(&self, caller: &Caller, id: &str, resolution: &str) -> Result<Completion, Error> {
        let cipher = self.keys.cipher(&caller.tenant_id).await?;
        let mut transaction = self.database.begin_tenant(&caller.tenant_id).await?;
        let completed: Option<String> = sqlx::query_scalar(
            "UPDATE subject_requests SET status = 'completed', completed_at = $3, resolution = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'open' AND erased_by IS NULL RETURNING kind",
        )
        .bind(caller.tenant_id.clone())
        .bind(id.to_owned())
        .bind(now())
        .bind(seal(&cipher, &Column::Resolution.context(&caller.tenant_id, id), resolution))
        .fetch_optional(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let leaf = match completed {
            Some(kind) => {
                let subject = format!("subject-request:{id}");
                let details = serde_json::json!({"kind": kind, "status": "completed"});
                let leaf = own_leaf(caller, "subject_request", "governance.CompleteSubjectRequest", &subject, details);
                own_events::enqueue(&mut transaction, &leaf).await?;
                transaction.commit().await.map_err(StoreError::from)?;
                leaf
            }
            None => {
                drop(transaction);
                return Ok(Completion::NotOpen(self.get(&caller.tenant_id, id).await?.status));
            }
        };
        own_events::append_committed(&self.log, &self.database, vec![leaf]).await;
        Ok(Completion::Completed(Box::new(self.get(&caller.tenant_id, id).await?)))
    }

    /// A page of the tenant's requests, newest first, after the request `page.after` when set;
    /// only the overdue ones when `overdue` is `Some(true)`, only the others when `Some(false)`.
    /// With the id to go on from when more follow.
    pub async fn list(
        &self,
        tenant_id: &str,
        overdue: Option<bool>,
        page: Page<'_>,
    ) -> Result<(Vec<StoredRequest>, Option<String>), Error> {
        // Ids are UUIDv7: their order is the order the requests were received in.
        let sql = match overdue {
            Some(true) => concat!(
                "SELECT ",
                request_columns!(),
                " FROM subject_requests WHERE tenant_id = $1 AND ($2 = '' OR id < $2) \
                 AND status <> 'completed' AND deadline < $4 ORDER BY id DESC LIMIT $3"
            ),
            Some(false) => concat!(
                "SELECT ",
                request_columns!(),
                " FROM subject_requests WHERE tenant_id = $1 AND ($2 = '' OR id < $2) \
                 AND (status = 'completed' OR deadline >= $4) ORDER BY id DESC LIMIT $3"
            ),
            None => concat!(
                "SELECT ",
                request_columns!(),
                " FROM subject_requests WHERE tenant_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3"
            ),
        };
        let mut query =
            sqlx::query(sql).bind(tenant_id).bind(page.after.unwrap_or_default()).bind(page.limit_with_one_more());
        // One time for the filter and for each request's `overdue`, so that the two agree.
        let read_at = now();
        if overdue.is_some() {
            query = query.bind(read_at.clone());
        }
        let rows =
            query.fetch_all(&mut *self.database.begin_tenant_read(tenant_id).await?).await.map_err(StoreError::from)?;
        let mut requests = rows
            .iter()
            .map(|row| request_from(row).map(|request| StoredRequest { read_at: read_at.clone(), ..request }))
            .collect::<Result<Vec<_>, _>>()?;
        let next = page.split(&mut requests, |request| request.id.clone());
        self.unseal_requests(tenant_id, &mut requests).await?;
        Ok((requests, next))
    }

    /// The export bundle of an access or portability request, opened with the tenant's data key,
    /// unless an erasure of its subject has deleted it since.
    /// A download is a read of the subject's personal data, audited in the tenant's log.
    pub async fn export(&self, caller: &Caller, id: &str) -> Result<String, Error> {
        let row = sqlx::query(
            "SELECT kind, status, export, erased_by FROM subject_requests WHERE tenant_id = $1 AND id = $2",
        )
        .bind(&caller.tenant_id)
        .bind(id)
        .fetch_optional(&mut *self.database.begin_tenant_read(&caller.tenant_id).await?)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| Error::NotFound("subject request".into()))?;
        if let Some(export) = row.try_get::<Option<String>, _>("export").map_err(StoreError::from)? {
            // The tenant's data key is asked for only when the bundle is sealed: a read makes no key.
            let export = if is_sealed(&export) {
                let cipher = self.keys.cipher(&caller.tenant_id).await?;
                unseal(&cipher, &Column::Export.context(&caller.tenant_id, id), export)?
            } else {
                export
            };
            let subject = format!("subject-request:{id}");
            let details = serde_json::json!({"fields": ["export"]});
            self.audit(caller, "sensitive_read", "governance.GetSubjectExport", &subject, details).await?;
            return Ok(export);
        }
        let kind: String = row.try_get("kind").map_err(StoreError::from)?;
        let exported = [Kind::Access, Kind::Portability].iter().any(|exported| exported.as_str() == kind);
        let status: String = row.try_get("status").map_err(StoreError::from)?;
        Err(Error::NotFound(match row.try_get::<Option<String>, _>("erased_by").map_err(StoreError::from)? {
            Some(erasure) if exported => {
                format!("export of this request (deleted with the subject's data by erasure request {erasure})")
            }
            None if exported && status == "running" => {
                "export of this request (not made yet: its services are still being asked)".into()
            }
            None if exported && status == "failed" => {
                "export of this request (none was made: the request failed before its bundle was stored; make the \
                 request again)"
                    .into()
            }
            _ => "export of this request (only access and portability requests have one)".into(),
        }))
    }

    /// Queues `decision`, in the caller's log, for a human review.
    pub async fn request_review(&self, caller: &Caller, decision: Decision, reason: &str) -> Result<Review, Error> {
        let (audit_index, field) = match decision {
            Decision::AtIndex(index) => (index, "auditIndex"),
            Decision::Id(id) => match self.log.index_of_event(&caller.tenant_id, &id).await? {
                Some(index) => (index, "decisionId"),
                None => {
                    return Err(Error::Refused(Box::new(tonic::Status::not_found(format!(
                        "decision {id} is not in the audit log: a decision reaches it within seconds of being \
                         made, so retry shortly if it was just made"
                    )))));
                }
            },
        };
        let entry = self
            .log
            .entries(&caller.tenant_id, audit_index, 1)
            .await?
            .into_iter()
            .next()
            .filter(|entry| entry.index == audit_index)
            .ok_or_else(|| Error::NotFound(format!("audit entry {audit_index}")))?;
        let leaf = Leaf::parse(&entry.leaf).ok_or_else(|| StoreError::Corrupt(format!("audit entry {audit_index}")))?;
        if leaf.kind != "decision" {
            return Err(Error::invalid(field, format!("entry {audit_index} is a {}, not a decision", leaf.kind)));
        }
        let review = Review {
            id: uuid::Uuid::now_v7().to_string(),
            audit_index,
            event_id: leaf.event_id,
            action: leaf.action,
            reason: reason.to_owned(),
            status: "pending".into(),
            outcome: String::new(),
            note: String::new(),
            reviewer: String::new(),
            created_at: now(),
            decided_at: None,
        };
        let cipher = self.keys.cipher(&caller.tenant_id).await?;
        let insert = sqlx::query(
            "INSERT INTO reviews (tenant_id, id, audit_index, event_id, action, reason, status, outcome, note, \
             reviewer, created_at, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(caller.tenant_id.clone())
        .bind(review.id.clone())
        .bind(i64::try_from(audit_index).unwrap_or(i64::MAX))
        .bind(review.event_id.clone())
        .bind(review.action.clone())
        .bind(seal(&cipher, &Column::ReviewReason.context(&caller.tenant_id, &review.id), &review.reason))
        .bind(review.status.clone())
        .bind(review.outcome.clone())
        .bind(review.note.clone())
        .bind(review.reviewer.clone())
        .bind(review.created_at.clone())
        .bind(review.decided_at.clone());
        let mut transaction = self.database.begin_tenant(&caller.tenant_id).await?;
        insert.execute(&mut *transaction).await.map_err(|error| match StoreError::from(error) {
            // `reviews_one_pending`: the decision already has a review waiting.
            error if error.is_unique_violation() => {
                Error::AlreadyExists(format!("the decision at entry {audit_index} already awaits review"))
            }
            error => error.into(),
        })?;
        let leaf = own_leaf(
            caller,
            "review_requested",
            "governance.CreateReview",
            &format!("review:{}", review.id),
            serde_json::json!({"auditIndex": audit_index, "eventId": review.event_id}),
        );
        own_events::enqueue(&mut transaction, &leaf).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        own_events::append_committed(&self.log, &self.database, vec![leaf]).await;
        Ok(review)
    }

    /// Records the outcome of a pending review.
    pub async fn decide(&self, caller: &Caller, id: &str, outcome: &str, note: &str) -> Result<Review, Error> {
        if outcome.trim().is_empty() {
            return Err(Error::invalid("outcome", "is required: upheld, overturned or amended"));
        }
        if !["upheld", "overturned", "amended"].contains(&outcome) {
            return Err(Error::invalid("outcome", format!("{outcome:?} is not one of upheld, overturned, amended")));
        }
        if outcome == "amended" && note.is_empty() {
            return Err(Error::invalid("note", "say how the decision was amended"));
        }
        let cipher = self.keys.cipher(&caller.tenant_id).await?;
        let mut transaction = self.database.begin_tenant(&caller.tenant_id).await?;
        let decided: Option<i64> = sqlx::query_scalar(
            "UPDATE reviews SET status = 'decided', outcome = $1, note = $2, reviewer = $3, decided_at = $4 \
             WHERE tenant_id = $5 AND id = $6 AND status = 'pending' RETURNING audit_index",
        )
        .bind(outcome.to_owned())
        .bind(seal(&cipher, &Column::ReviewNote.context(&caller.tenant_id, id), note))
        .bind(caller.subject.clone())
        .bind(now())
        .bind(caller.tenant_id.clone())
        .bind(id.to_owned())
        .fetch_optional(&mut *transaction)
        .await
        .map_err(StoreError::from)?;
        let Some(audit_index) = decided else {
            drop(transaction);
            let review = self.review(&caller.tenant_id, id).await?;
            return Err(Error::AlreadyExists(format!("review {id} was already decided ({})", review.outcome)));
        };
        let leaf = own_leaf(
            caller,
            "review_decided",
            "governance.DecideReview",
            &format!("review:{id}"),
            serde_json::json!({"auditIndex": audit_index, "outcome": outcome}),
        );
        own_events::enqueue(&mut transaction, &leaf).await?;
        transaction.commit().await.map_err(StoreError::from)?;
        own_events::append_committed(&self.log, &self.database, vec![leaf]).await;
        self.review(&caller.tenant_id, id).await
    }

    /// The tenant's review `id`; `NotFound` when it has none.
    pub async fn review(&self, tenant_id: &str, id: &str) -> Result<Review, Error> {
        let row = sqlx::query(concat!("SELECT ", review_columns!(), " FROM reviews WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *self.database.begin_tenant_read(tenant_id).await?)
            .await
            .map_err(StoreError::from)?
            .ok_or_else(|| Error::NotFound(format!("review {id}")))?;
        let mut reviews = [review_from(&row)?];
        self.unseal_reviews(tenant_id, &mut reviews).await?;
        let [review] = reviews;
        Ok(review)
    }

    /// Opens the reasons and notes of `reviews` of `tenant_id`; those stored in clear before
    /// they were sealed come back as they are.
    async fn unseal_reviews(&self, tenant_id: &str, reviews: &mut [Review]) -> Result<(), Error> {
        if !reviews.iter().any(|review| is_sealed(&review.reason) || is_sealed(&review.note)) {
            return Ok(());
        }
        let cipher = self.keys.cipher(tenant_id).await?;
        for review in reviews {
            let fields = [(Column::ReviewReason, &mut review.reason), (Column::ReviewNote, &mut review.note)];
            unseal_in_place(&cipher, tenant_id, &review.id, fields)?;
        }
        Ok(())
    }

    /// The kind, status and times of each request of `tenant_id` of the period `[start, end)`
    /// (RFC 3339 as stored): made in it, or made before it and not completed when it began (nor
    /// failed: a failed request is over, made again if it is still wanted, and counts in the period
    /// it was made in). What a report counts, read without opening any details or bundle.
    pub async fn request_tallies(&self, tenant_id: &str, start: &str, end: &str) -> Result<Vec<RequestTally>, Error> {
        let select = "SELECT kind, status, deadline, created_at, completed_at, failed_at FROM subject_requests \
                      WHERE tenant_id = $1 AND created_at < $3 AND (created_at >= $2 OR (status <> 'failed' \
                      AND (completed_at IS NULL OR completed_at >= $2))) ORDER BY id";
        let rows = self.rows_of_period(select, tenant_id, start, end).await?;
        let tally = |row: &sqlx::any::AnyRow| -> Result<_, StoreError> {
            Ok(RequestTally {
                kind: row.try_get("kind")?,
                status: row.try_get("status")?,
                deadline: row.try_get("deadline")?,
                created_at: row.try_get("created_at")?,
                completed_at: row.try_get("completed_at")?,
                failed_at: row.try_get("failed_at")?,
            })
        };
        Ok(rows.iter().map(tally).collect::<Result<_, _>>()?)
    }

    /// The status, outcome and times of each review of `tenant_id` of the period `[start, end)`
    /// (RFC 3339 as stored): asked for in it, or before it and not decided when it began. What a
    /// report counts, read without opening any reason or note.
    pub async fn review_tallies(&self, tenant_id: &str, start: &str, end: &str) -> Result<Vec<ReviewTally>, Error> {
        let select = "SELECT status, outcome, created_at, decided_at FROM reviews \
                      WHERE tenant_id = $1 AND created_at < $3 AND (decided_at IS NULL OR decided_at >= $2) \
                      ORDER BY id";
        let rows = self.rows_of_period(select, tenant_id, start, end).await?;
        let tally = |row: &sqlx::any::AnyRow| -> Result<_, StoreError> {
            Ok(ReviewTally {
                status: row.try_get("status")?,
                outcome: row.try_get("outcome")?,
                created_at: row.try_get("created_at")?,
                decided_at: row.try_get("decided_at")?,
            })
        };
        Ok(rows.iter().map(tally).collect::<Result<_, _>>()?)
    }

    /// The rows `select` reads for `tenant_id` (`$1`) over the period `[start, end)` (`$2`, `$3`).
    async fn rows_of_period(
        &self,
        select: &'static str,
        tenant_id: &str,
        start: &str,
        end: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>, Error> {
        let rows = sqlx::query(select)
            .bind(tenant_id)
            .bind(start)
            .bind(end)
            .fetch_all(&mut *self.database.begin_tenant_read(tenant_id).await?)
            .await
            .map_err(StoreError::from)?;
        Ok(rows)
    }

    /// The tenant's reviews, oldest first; only those with `status` when it is not empty.
    pub async fn reviews(
        &self,
        tenant_id: &str,
        status: &str,
        page: Page<'_>,
    ) -> Result<(Vec<Review>, Option<String>), Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            review_columns!(),
            " FROM reviews WHERE tenant_id = $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR id > $3) \
             ORDER BY id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(status)
        .bind(page.after.unwrap_or_default())
        .bind(page.limit_with_one_more())
        .fetch_all(&mut *self.database.begin_tenant_read(tenant_id).await?)
        .await
        .map_err(StoreError::from)?;
        let mut reviews = rows.iter().map(review_from).collect::<Result<Vec<_>, _>>()?;
        let next = page.split(&mut reviews, |review| review.id.clone());
        self.unseal_reviews(tenant_id, &mut reviews).await?;
        Ok((reviews, next))
    }
}

/// What a read showed the free text of (see [`SubjectStore::audit_shown`]).
#[derive(Clone, Copy, Debug)]
pub enum Shown {
    Requests,
    Reviews,
}

/// The columns of `reviews` that [`review_from`] reads.
macro_rules! review_columns {
    () => {
        "id, audit_index, event_id, action, reason, status, outcome, note, reviewer, created_at, decided_at"
    };
}
use review_columns;

/// The columns of `subject_requests` that [`request_from`] reads.
macro_rules! request_columns {
    () => {
        "id, kind, status, details, deadline, created_at, completed_at, outcomes, resolution, erased_by"
    };
}
use request_columns;

fn request_from(row: &sqlx::any::AnyRow) -> Result<StoredRequest, StoreError> {
    let outcomes: String = row.try_get("outcomes")?;
    Ok(StoredRequest {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        details: row.try_get("details")?,
        deadline: row.try_get("deadline")?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
        outcomes: serde_json::from_str(&outcomes)
            .map_err(|error| StoreError::Corrupt(format!("subject_requests.outcomes: {error}")))?,
        resolution: row.try_get::<Option<String>, _>("resolution")?.unwrap_or_default(),
        erased_by: row.try_get("erased_by")?,
        read_at: now(),
    })
}

fn review_from(row: &sqlx::any::AnyRow) -> Result<Review, StoreError> {
    Ok(Review {
        id: row.try_get("id")?,
        audit_index: row.try_get::<i64, _>("audit_index")? as u64,
        event_id: row.try_get("event_id")?,
        action: row.try_get("action")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
        outcome: row.try_get("outcome")?,
        note: row.try_get("note")?,
        reviewer: row.try_get("reviewer")?,
        created_at: row.try_get("created_at")?,
        decided_at: row.try_get("decided_at")?,
    })
}

/// The retained records of an outcome as the protobuf message.
pub fn retained_messages(outcome: &Outcome) -> Vec<RetainedRecord> {
    outcome
        .retained
        .iter()
        .map(|(kind, reason)| RetainedRecord { kind: kind.clone(), reason: reason.clone() })
        .collect()
}

#[cfg(test)]
mod tests {
    use aigronova_platform::crypto::LocalMasterKey;

    use super::*;

    #[tokio::test]
    async fn a_sealed_value_opens_only_in_its_place_and_one_stored_in_clear_reads_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        let keys = TenantKeys::new(database, Arc::new(LocalMasterKey::from_bytes(&[7; 32])));
        let cipher = keys.cipher("tenant-a").await.unwrap();
        let bundle = r#"{"services":{"healthquantum":{"patients":[{"name":"Maria Silva"}]}}}"#;
        let here = Column::Export.context("tenant-a", "request-1");
        let sealed = seal(&cipher, &here, bundle);
        assert!(is_sealed(&sealed) && !sealed.contains("Maria"), "{sealed}");
        assert_eq!(unseal(&cipher, &here, sealed.clone()).unwrap(), bundle);
        for elsewhere in [
            Column::Export.context("tenant-a", "request-2"),
            Column::Details.context("tenant-a", "request-1"),
            Column::Export.context("tenant-b", "request-1"),
        ] {
            let opened = unseal(&cipher, &elsewhere, sealed.clone());
            assert!(matches!(opened, Err(StoreError::Corrupt(_))), "{elsewhere}: {opened:?}");
        }
        for clear in [bundle, "v1: the street is Rua A", "v1:abcd", "the birth date is 1980-03-01", ""] {
            assert!(!is_sealed(clear), "{clear}");
            assert_eq!(unseal(&cipher, &here, clear.to_owned()).unwrap(), clear);
        }
        assert_eq!(seal(&cipher, &here, ""), "");
    }
}
