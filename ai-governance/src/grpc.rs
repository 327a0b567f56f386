//! The `aigronova.governance.v1` gRPC services: the edge where protobuf messages become domain
//! values and back. Reads serve the caller's tenant only; the internal RPCs need a scope that
//! only service tokens carry.

use std::{collections::HashMap, sync::Arc};

use aigronova_platform::{
    Error,
    audit::{RECORD_SCOPE, REGISTER_MODELS_SCOPE},
    auth::{self, Caller},
    cpf::Cpf,
    grpc::Page,
    monitoring::RECORD_STATS_SCOPE,
};
use aigronova_proto::{aigronova::governance::v1 as proto, google::api::HttpBody};
use chrono::DateTime;
use tonic::{Request, Response, Status};

use crate::{
    inventory::{Inventory, InventoryEntry},
    log::{Leaf, LogStore, SignedCheckpoint, StoredEntry},
    merkle::Hash,
    monitoring::{self, FeatureBins, Latency, ModelStatus, MonitoringStore, Summary},
    reports::{self, Reporter},
    subjects::{self, SubjectStore},
};

/// Most events one `RecordEvents` call may carry.
const MAX_BATCH: usize = 1000;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Clone, Debug)]
pub(crate) struct AuditLogApi {
    log: Arc<LogStore>,
}

impl AuditLogApi {
    pub(crate) fn new(log: Arc<LogStore>) -> Self {
        Self { log }
    }
}

#[tonic::async_trait]
impl proto::audit_log_server::AuditLog for AuditLogApi {
    async fn record_events(
        &self,
        request: Request<proto::RecordEventsRequest>,
    ) -> Result<Response<proto::RecordEventsResponse>, Status> {
        let caller = auth::service_caller(&request, RECORD_SCOPE)?;
        let events = request.into_inner().events;
        if events.len() > MAX_BATCH {
            return Err(Error::invalid("events", format!("at most {MAX_BATCH} events a call")).into());
        }
        // A service records its own events, under the name its token carries.
        if let Some((n, event)) = events.iter().enumerate().find(|(_, event)| !is_caller(&caller, &event.service)) {
            return Err(Status::permission_denied(format!(
                "events[{n}].service: {:?} is not the calling service; a service records only its own events",
                event.service
            )));
        }
        let leaves =
            events.into_iter().enumerate().map(|(n, event)| leaf_of(n, event)).collect::<Result<Vec<_>, _>>()?;
        let outcome = self.log.append_each(leaves).await?;
        Ok(Response::new(proto::RecordEventsResponse {
            appended: outcome.appended,
            duplicates: outcome.duplicates,
            held_event_ids: outcome.held,
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<proto::GetCheckpointRequest>,
    ) -> Result<Response<proto::Checkpoint>, Status> {
        let tenant = auth::caller(&request)?.tenant_id.clone();
        let checkpoint = match request.get_ref().tree_size {
            Some(size) => self.log.checkpoint_at(&tenant, size).await?,
            None => self.log.latest_checkpoint(&tenant).await?,
        };
        Ok(Response::new(checkpoint_message(&checkpoint)))
    }

    async fn get_public_key(
        &self,
        request: Request<proto::GetPublicKeyRequest>,
    ) -> Result<Response<proto::PublicKey>, Status> {
        auth::caller(&request)?;
        let key = match request.get_ref().key_id.to_ascii_lowercase() {
            key_id if key_id.is_empty() => self.log.signer().public_key(),
            // A key id is 16 hexadecimal digits.
            key_id if key_id.len() != 16 || !key_id.bytes().all(|byte| byte.is_ascii_hexdigit()) => {
                return Err(Error::invalid("keyId", "is not a key id: 16 hexadecimal digits").into());
            }
            key_id => self.log.verifier(&key_id).await?.ok_or_else(|| {
                Status::not_found(format!("no checkpoint key {key_id} is recorded by this deployment"))
            })?,
        };
        Ok(Response::new(proto::PublicKey {
            key_id: key.key_id(),
            algorithm: "Ed25519".into(),
            public_key: key.to_base64(),
        }))
    }

    async fn get_entry(
        &self,
        request: Request<proto::GetEntryRequest>,
    ) -> Result<Response<proto::EntryWithProof>, Status> {
        let tenant = auth::caller(&request)?.tenant_id.clone();
        let (entry, checkpoint, proof) = self.log.entry_with_proof(&tenant, request.get_ref().index).await?;
        Ok(Response::new(proto::EntryWithProof {
            entry: Some(entry_message(entry)),
            checkpoint: Some(checkpoint_message(&checkpoint)),
            inclusion_proof: hex_all(&proof),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<proto::ListEntriesRequest>,
    ) -> Result<Response<proto::ListEntriesResponse>, Status> {
        let tenant = auth::caller(&request)?.tenant_id.clone();
        let proto::ListEntriesRequest { start, page_size } = request.into_inner();
        let page_size = page_size_of(page_size)?;
        let entries = self.log.entries(&tenant, start, page_size + 1).await.map_err(Error::from)?;
        let next_start = (entries.len() > page_size as usize).then(|| start + u64::from(page_size));
        let entries = entries.into_iter().take(page_size as usize).map(entry_message).collect();
        Ok(Response::new(proto::ListEntriesResponse { entries, next_start }))
    }

    async fn list_checkpoints(
        &self,
        request: Request<proto::ListCheckpointsRequest>,
    ) -> Result<Response<proto::ListCheckpointsResponse>, Status> {
        let tenant = auth::caller(&request)?.tenant_id.clone();
        let proto::ListCheckpointsRequest { after, page_size } = request.into_inner();
        let page_size = page_size_of(page_size)?;
        let mut checkpoints = self.log.checkpoints(&tenant, after, page_size + 1).await?;
        let full = checkpoints.len() > page_size as usize;
        checkpoints.truncate(page_size as usize);
        let next_after = full.then(|| checkpoints.last().map(|last| last.body.tree_size)).flatten();
        let checkpoints = checkpoints.iter().map(checkpoint_message).collect();
        Ok(Response::new(proto::ListCheckpointsResponse { checkpoints, next_after }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<proto::GetConsistencyProofRequest>,
    ) -> Result<Response<proto::ConsistencyProof>, Status> {
        let tenant = auth::caller(&request)?.tenant_id.clone();
        let proto::GetConsistencyProofRequest { from, to } = request.into_inner();
        let (from_root, to_root, proof) = self.log.consistency(&tenant, from, to).await?;
        Ok(Response::new(proto::ConsistencyProof {
            from,
            to,
            from_root: hex::encode(from_root),
            to_root: hex::encode(to_root),
            proof: hex_all(&proof),
        }))
    }
}

/// Whether `service` is the domain service whose token `caller` holds (`service:<name>`).
fn is_caller(caller: &Caller, service: &str) -> bool {
    caller.subject.strip_prefix("service:") == Some(service)
}

/// Checks one incoming event and turns it into the leaf that will be hashed.
fn leaf_of(n: usize, event: proto::AuditEvent) -> Result<Leaf, Error> {
    let field = |name: &str| format!("events[{n}].{name}");
    uuid_of(&field("eventId"), &event.event_id)?;
    for (name, value) in
        [("tenantId", &event.tenant_id), ("service", &event.service), ("kind", &event.kind), ("action", &event.action)]
    {
        if value.trim().is_empty() {
            return Err(Error::invalid(field(name), "must not be empty"));
        }
    }
    let details: serde_json::Value = serde_json::from_str(&event.details_json)
        .ok()
        .filter(serde_json::Value::is_object)
        .ok_or_else(|| Error::invalid(field("detailsJson"), "must be a JSON object"))?;
    let occurred_at = event
        .occur_time
        .and_then(|at| DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?))
        .ok_or_else(|| Error::invalid(field("occurTime"), "must be a valid timestamp"))?
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    Ok(Leaf {
        event_id: event.event_id,
        tenant_id: event.tenant_id,
        service: event.service,
        kind: event.kind,
        action: event.action,
        actor: event.actor,
        subject: event.subject,
        details,
        occurred_at,
    })
}

/// A list's `pageSize`: 0 for the default, at most [`MAX_PAGE`].
fn page_size_of(requested: u32) -> Result<u32, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE),
        size if size > MAX_PAGE => Err(Error::invalid("pageSize", format!("at most {MAX_PAGE}"))),
        size => Ok(size),
    }
}

fn checkpoint_message(checkpoint: &SignedCheckpoint) -> proto::Checkpoint {
    proto::Checkpoint {
        tenant_id: checkpoint.body.tenant_id.clone(),
        tree_size: checkpoint.body.tree_size,
        root_hash: hex::encode(checkpoint.body.root_hash),
        timestamp: timestamp(&checkpoint.body.timestamp),
        signature: checkpoint.signature.clone(),
        key_id: checkpoint.key_id.clone(),
        signed_text: checkpoint.body.signed_text(),
    }
}

fn entry_message(entry: StoredEntry) -> proto::Entry {
    let leaf = Leaf::parse(&entry.leaf);
    proto::Entry {
        index: entry.index,
        event_id: entry.event_id,
        service: leaf.as_ref().map(|leaf| leaf.service.clone()).unwrap_or_default(),
        kind: leaf.as_ref().map(|leaf| leaf.kind.clone()).unwrap_or_default(),
        action: leaf.as_ref().map(|leaf| leaf.action.clone()).unwrap_or_default(),
        occur_time: leaf.as_ref().and_then(|leaf| timestamp(&leaf.occurred_at)),
        leaf: entry.leaf,
        leaf_hash: entry.leaf_hash,
    }
}

fn hex_all(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn timestamp(text: &str) -> Option<prost_types::Timestamp> {
    let at = DateTime::parse_from_rfc3339(text).ok()?;
    Some(prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).ok()? })
}

#[derive(Clone, Debug)]
pub(crate) struct ModelInventoryApi {
    inventory: Inventory,
}

impl ModelInventoryApi {
    pub(crate) fn new(inventory: Inventory) -> Self {
        Self { inventory }
    }
}

#[tonic::async_trait]
impl proto::model_inventory_server::ModelInventory for ModelInventoryApi {
    async fn register_models(
        &self,
        request: Request<proto::RegisterModelsRequest>,
    ) -> Result<Response<proto::RegisterModelsResponse>, Status> {
        let caller = auth::service_caller(&request, REGISTER_MODELS_SCOPE)?;
        let proto::RegisterModelsRequest { service, models } = request.into_inner();
        if service.trim().is_empty() {
            return Err(Error::invalid("service", "must not be empty").into());
        }
        if !is_caller(&caller, &service) {
            return Err(Status::permission_denied(format!(
                "service: {service:?} is not the calling service; a service registers only its own models"
            )));
        }
        for (n, card) in models.iter().enumerate() {
            if card.name.is_empty() || card.version.is_empty() || card.sha256.len() != 64 {
                return Err(Error::invalid(format!("models[{n}]"), "needs a name, a version and a hex sha256").into());
            }
        }
        let flagged = self.inventory.register(&service, &models).await?;
        Ok(Response::new(proto::RegisterModelsResponse {
            registered: u32::try_from(models.len()).unwrap_or(u32::MAX),
            flagged,
        }))
    }

    async fn list_models(
        &self,
        request: Request<proto::ListModelsRequest>,
    ) -> Result<Response<proto::ListModelsResponse>, Status> {
        auth::caller(&request)?;
        let models = self.inventory.list().await?.into_iter().map(inventory_message).collect();
        Ok(Response::new(proto::ListModelsResponse { models }))
    }

    async fn get_model(
        &self,
        request: Request<proto::GetModelRequest>,
    ) -> Result<Response<proto::InventoryModel>, Status> {
        auth::caller(&request)?;
        let proto::GetModelRequest { name, version } = request.into_inner();
        let (name, version) = (model_part("name", &name)?, model_part("version", &version)?);
        Ok(Response::new(inventory_message(self.inventory.get(name, version).await?)))
    }
}

fn inventory_message(entry: InventoryEntry) -> proto::InventoryModel {
    let mismatch = entry.sha256_mismatch();
    proto::InventoryModel {
        service: entry.service,
        first_registered_time: timestamp(&entry.first_registered_at),
        last_registered_time: timestamp(&entry.last_registered_at),
        sha256_mismatch: mismatch,
        observed_sha256: entry.differing_sha256.unwrap_or_default(),
        mismatch_time: entry.mismatch_at.as_deref().and_then(timestamp),
        card: Some(entry.card),
    }
}

#[derive(Clone, Debug)]
pub(crate) struct MonitoringApi {
    store: MonitoringStore,
    /// Tells a model nobody called yet (zero calls) from one that does not exist (not found).
    inventory: Inventory,
}

impl MonitoringApi {
    pub(crate) fn new(store: MonitoringStore, inventory: Inventory) -> Self {
        Self { store, inventory }
    }
}

#[tonic::async_trait]
impl proto::monitoring_server::Monitoring for MonitoringApi {
    async fn record_inference_stats(
        &self,
        request: Request<proto::RecordInferenceStatsRequest>,
    ) -> Result<Response<proto::RecordInferenceStatsResponse>, Status> {
        let caller = auth::service_caller(&request, RECORD_STATS_SCOPE)?;
        let windows = request.into_inner().windows;
        // A service records the windows of its own models, under the name its token carries.
        if let Some((n, window)) = windows.iter().enumerate().find(|(_, window)| !is_caller(&caller, &window.service)) {
            return Err(Status::permission_denied(format!(
                "windows[{n}].service: {:?} is not the calling service; a service records only its own models' windows",
                window.service
            )));
        }
        let summaries =
            windows.into_iter().enumerate().map(|(n, window)| summary_of(n, window)).collect::<Result<Vec<_>, _>>()?;
        let mut ids = HashMap::with_capacity(summaries.len());
        for (n, summary) in summaries.iter().enumerate() {
            if let Some(first) = ids.insert(summary.id, n) {
                return Err(Error::invalid(
                    format!("windows[{n}].windowId"),
                    format!("{} is also the id of windows[{first}]; each window has its own", summary.id),
                )
                .into());
            }
        }
        let recorded = self.store.record(&summaries).await?;
        Ok(Response::new(proto::RecordInferenceStatsResponse {
            recorded: u32::try_from(recorded).unwrap_or(u32::MAX),
            duplicates: u32::try_from(summaries.len() - recorded).unwrap_or(u32::MAX),
        }))
    }

    async fn list_model_monitoring(
        &self,
        request: Request<proto::ListModelMonitoringRequest>,
    ) -> Result<Response<proto::ListModelMonitoringResponse>, Status> {
        let tenant = auth::caller(&request)?.tenant_id.clone();
        let (name, window) = monitoring::parse_window(&request.get_ref().window)?;
        let statuses = self.store.statuses(&tenant, window).await?;
        Ok(Response::new(proto::ListModelMonitoringResponse {
            models: statuses.into_iter().map(|status| status_message(status, &name)).collect(),
        }))
    }

    async fn get_model_monitoring(
        &self,
        request: Request<proto::GetModelMonitoringRequest>,
    ) -> Result<Response<proto::ModelMonitoring>, Status> {
        let tenant = auth::caller(&request)?.tenant_id.clone();
        let proto::GetModelMonitoringRequest { name: model, version, window } = request.into_inner();
        model_part("name", &model)?;
        model_part("version", &version)?;
        let (name, window) = monitoring::parse_window(&window)?;
        let status = match self.store.status(&tenant, &model, &version, window).await? {
            Some(status) => status,
            None => {
                // A model nobody registered nor the tenant ever called does not exist; one
                // registered late (its service still starting) or called only long ago has zero calls.
                if !self.store.ever_called(&tenant, &model, &version).await? {
                    self.inventory.get(&model, &version).await?;
                }
                ModelStatus {
                    model,
                    version,
                    calls: 0,
                    errors: 0,
                    latency_p50_ms: 0.0,
                    latency_p95_ms: 0.0,
                    latency_p99_ms: 0.0,
                    drift: Vec::new(),
                    drift_sample: 0,
                }
            }
        };
        Ok(Response::new(status_message(status, &name)))
    }
}

/// `text`, an id this service gave: a UUID in any of its spellings (upper case, braces, without
/// hyphens), as this service writes it (lower case, hyphenated); or an error naming `field`.
fn uuid_of(field: &str, text: &str) -> Result<String, Error> {
    match uuid::Uuid::parse_str(text) {
        Ok(uuid) => Ok(uuid.to_string()),
        Err(_) => Err(Error::invalid(field, "must be a UUID")),
    }
}

/// The longest text a person may write into a request or a review, in characters.
const MAX_FREE_TEXT: usize = 4000;

/// A model's name or version from a path, as the services register them: text without control
/// characters, which no registered model has (and PostgreSQL would refuse a NUL in).
fn model_part<'a>(field: &str, text: &'a str) -> Result<&'a str, Error> {
    if text.is_empty() || text.chars().count() > MAX_MODEL_PART || text.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!(
                "must be a model's {field} as the inventory lists it: 1 to {MAX_MODEL_PART} characters, none a control character"
            ),
        ));
    }
    Ok(text)
}

/// The longest model name or version taken.
const MAX_MODEL_PART: usize = 200;

/// Text a person wrote (a review's reason or note, what to correct), trimmed: at most
/// [`MAX_FREE_TEXT`] characters, line breaks and tabs but no other control characters, and no
/// bidirectional overrides that would show a reviewer something other than what is stored; text
/// that shows nothing (white space and invisible characters) is empty.
fn free_text<'a>(field: &str, text: &'a str) -> Result<&'a str, Error> {
    let text = text.trim();
    if aigronova_platform::text::is_blank(text) {
        return Ok("");
    }
    if text.chars().count() > MAX_FREE_TEXT {
        return Err(Error::invalid(field, format!("must be at most {MAX_FREE_TEXT} characters")));
    }
    let hidden = |c: char| {
        (c.is_control() && c != '\n' && c != '\t' && c != '\r') || aigronova_platform::text::is_bidi_control(c)
    };
    if text.chars().any(hidden) {
        return Err(Error::invalid(field, "must not hold control characters or bidirectional overrides"));
    }
    Ok(text)
}

fn summary_of(n: usize, window: proto::InferenceWindow) -> Result<Summary, Error> {
    let field = |name: &str| format!("windows[{n}].{name}");
    for (name, value) in [
        ("tenantId", &window.tenant_id),
        ("service", &window.service),
        ("model", &window.model),
        ("version", &window.version),
    ] {
        if value.trim().is_empty() {
            return Err(Error::invalid(field(name), "must not be empty"));
        }
    }
    if window.latency_buckets.len() != window.latency_bounds_ms.len() + 1 {
        return Err(Error::invalid(field("latencyBuckets"), "needs one bucket per bound and one above them"));
    }
    // Bounds and shares go into the percentiles and the PSI that reports publish: finite, in order.
    let ascending = window.latency_bounds_ms.windows(2).all(|pair| pair[0] < pair[1]);
    if !ascending || window.latency_bounds_ms.iter().any(|bound| !bound.is_finite() || *bound < 0.0) {
        return Err(Error::invalid(field("latencyBoundsMs"), "must be finite, not negative and ascending"));
    }
    if window.errors > window.count {
        return Err(Error::invalid(field("errors"), "cannot exceed count"));
    }
    let mut features = Vec::with_capacity(window.features.len());
    for feature in window.features {
        if feature.counts.len() != feature.expected_shares.len() || feature.counts.is_empty() {
            return Err(Error::invalid(field("features"), format!("{}: one expected share per bin", feature.name)));
        }
        if feature.expected_shares.iter().any(|share| !(0.0..=1.0).contains(share)) {
            return Err(Error::invalid(
                field("features"),
                format!("{}: each expected share is from 0 to 1", feature.name),
            ));
        }
        features.push(FeatureBins { name: feature.name, counts: feature.counts, expected: feature.expected_shares });
    }
    let time = |at: Option<prost_types::Timestamp>, name: &str| {
        at.and_then(|at| DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?))
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .ok_or_else(|| Error::invalid(field(name), "must be a valid timestamp"))
    };
    let id = match window.window_id.as_str() {
        "" => uuid::Uuid::now_v7(),
        id => {
            uuid::Uuid::try_parse(id).map_err(|_| Error::invalid(field("windowId"), format!("{id:?} is not a UUID")))?
        }
    };
    Ok(Summary {
        id,
        start: time(window.start_time, "startTime")?,
        end: time(window.end_time, "endTime")?,
        tenant_id: window.tenant_id,
        service: window.service,
        model: window.model,
        version: window.version,
        calls: window.count,
        errors: window.errors,
        latency: Latency { bounds_ms: window.latency_bounds_ms, buckets: window.latency_buckets },
        features,
    })
}

fn status_message(status: ModelStatus, window: &str) -> proto::ModelMonitoring {
    proto::ModelMonitoring {
        window: window.to_owned(),
        inference_count: status.calls,
        error_count: status.errors,
        error_rate: status.error_rate(),
        latency_p50_ms: status.latency_p50_ms,
        latency_p95_ms: status.latency_p95_ms,
        latency_p99_ms: status.latency_p99_ms,
        max_psi: status.max_psi(),
        drift_alert: status.drift_alert(),
        drift: status
            .drift
            .iter()
            .map(|(feature, psi)| proto::FeatureDrift {
                feature: feature.clone(),
                psi: *psi,
                alert: status.feature_alert(*psi),
            })
            .collect(),
        model: status.model,
        version: status.version,
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SubjectRequestsApi {
    store: Arc<SubjectStore>,
}

impl SubjectRequestsApi {
    pub(crate) fn new(store: Arc<SubjectStore>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl proto::subject_requests_server::SubjectRequests for SubjectRequestsApi {
    async fn create_subject_request(
        &self,
        request: Request<proto::CreateSubjectRequestRequest>,
    ) -> Result<Response<proto::SubjectRequest>, Status> {
        let caller = auth::caller(&request)?.clone();
        let caller_deadline =
            aigronova_platform::grpc::time_left(request.metadata()).map(|left| tokio::time::Instant::now() + left);
        let proto::CreateSubjectRequestRequest { cpf, kind, details } = request.into_inner();
        let kind = subjects::Kind::parse(kind.trim())?;
        let cpf = Cpf::parse(&cpf)?;
        let details = free_text("details", &details)?;
        if kind == subjects::Kind::Correction && details.is_empty() {
            return Err(Error::invalid("details", "say what to correct").into());
        }
        // Free text about the subject is kept only where a person needs it, and erased with it.
        if kind != subjects::Kind::Correction && !details.is_empty() {
            return Err(Error::invalid("details", "only a correction request takes details").into());
        }
        let stored = self.store.open(&caller, &cpf, kind, details, caller_deadline).await?;
        Ok(Response::new(request_message(stored)))
    }

    async fn get_subject_request(
        &self,
        request: Request<proto::GetSubjectRequestRequest>,
    ) -> Result<Response<proto::SubjectRequest>, Status> {
        let caller = auth::caller(&request)?.clone();
        let id = uuid_of("id", &request.get_ref().id)?;
        let shown = shown_to(&caller, request_message(self.store.get(&caller.tenant_id, &id).await?));
        let read =
            texts_shown(std::slice::from_ref(&shown), |request| (&request.id, [&request.details, &request.resolution]));
        self.store.audit_shown(&caller, "governance.GetSubjectRequest", subjects::Shown::Requests, read).await?;
        Ok(Response::new(shown))
    }

    async fn complete_subject_request(
        &self,
        request: Request<proto::CompleteSubjectRequestRequest>,
    ) -> Result<Response<proto::SubjectRequest>, Status> {
        let caller = auth::caller(&request)?.clone();
        let id = uuid_of("id", &request.get_ref().id)?;
        let resolution = free_text("resolution", &request.get_ref().resolution)?;
        if resolution.is_empty() {
            return Err(Error::invalid("resolution", "say how the request was handled").into());
        }
        match self.store.complete(&caller, &id, resolution).await? {
            subjects::Completion::Completed(request) => Ok(Response::new(request_message(*request))),
            // As a review already decided: the request's state allows no completion (409).
            subjects::Completion::NotOpen(status) => Err(Error::AlreadyExists(format!(
                "subject request {id} is {status}: only an open correction request can be completed"
            ))
            .into()),
        }
    }

    async fn list_subject_requests(
        &self,
        request: Request<proto::ListSubjectRequestsRequest>,
    ) -> Result<Response<proto::ListSubjectRequestsResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::ListSubjectRequestsRequest { overdue, page_size, page_token } = request.get_ref();
        let filter = match overdue {
            None => "subject-requests",
            Some(true) => "subject-requests\u{0}overdue",
            Some(false) => "subject-requests\u{0}not-overdue",
        };
        let cipher = self.store.cipher(&caller.tenant_id).await?;
        let page = Page::of(*page_size, page_token, filter, &cipher)?;
        let (requests, next) = self.store.list(&caller.tenant_id, *overdue, page).await?;
        let requests: Vec<_> =
            requests.into_iter().map(|request| shown_to(&caller, request_message(request))).collect();
        let read = texts_shown(&requests, |request| (&request.id, [&request.details, &request.resolution]));
        self.store.audit_shown(&caller, "governance.ListSubjectRequests", subjects::Shown::Requests, read).await?;
        Ok(Response::new(proto::ListSubjectRequestsResponse {
            requests,
            next_page_token: Page::next_token(next, filter, &cipher),
        }))
    }

    async fn get_subject_export(
        &self,
        request: Request<proto::GetSubjectRequestRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let caller = auth::caller(&request)?.clone();
        let id = uuid_of("id", &request.get_ref().id)?;
        let bundle = self.store.export(&caller, &id).await?;
        Ok(Response::new(HttpBody {
            content_type: "application/json".into(),
            data: bundle.into_bytes(),
            extensions: Vec::new(),
        }))
    }

    async fn create_review(
        &self,
        request: Request<proto::CreateReviewRequest>,
    ) -> Result<Response<proto::Review>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::CreateReviewRequest { audit_index, reason, decision_id } = request.into_inner();
        let decision = match (audit_index, decision_id.as_str()) {
            (Some(_), id) if !id.is_empty() => {
                return Err(
                    Error::invalid("decisionId", "name the decision by auditIndex or by decisionId, not both").into()
                );
            }
            (Some(index), _) => subjects::Decision::AtIndex(index),
            (None, "") => {
                return Err(Error::invalid(
                    "auditIndex",
                    "is required, or decisionId: the decision's audit entry, or its id as its service answered it",
                )
                .into());
            }
            (None, _) => subjects::Decision::Id(uuid_of("decisionId", &decision_id)?),
        };
        let reason = free_text("reason", &reason)?;
        if reason.is_empty() {
            return Err(Error::invalid("reason", "say why the decision should be reviewed").into());
        }
        let review = self.store.request_review(&caller, decision, reason).await?;
        Ok(Response::new(review_message(review)))
    }

    async fn list_reviews(
        &self,
        request: Request<proto::ListReviewsRequest>,
    ) -> Result<Response<proto::ListReviewsResponse>, Status> {
        let caller = auth::caller(&request)?.clone();
        let status = request.get_ref().status.trim().to_owned();
        if !["", "pending", "decided"].contains(&status.as_str()) {
            return Err(Error::invalid("status", "must be pending or decided").into());
        }
        let filter = format!("reviews\u{0}{status}");
        let cipher = self.store.cipher(&caller.tenant_id).await?;
        let page = Page::of(request.get_ref().page_size, &request.get_ref().page_token, &filter, &cipher)?;
        let (reviews, next) = self.store.reviews(&caller.tenant_id, &status, page).await?;
        let reviews: Vec<_> =
            reviews.into_iter().map(|review| review_shown_to(&caller, review_message(review))).collect();
        let read = texts_shown(&reviews, |review| (&review.id, [&review.reason, &review.note]));
        self.store.audit_shown(&caller, "governance.ListReviews", subjects::Shown::Reviews, read).await?;
        Ok(Response::new(proto::ListReviewsResponse {
            reviews,
            next_page_token: Page::next_token(next, &filter, &cipher),
        }))
    }

    async fn get_review(&self, request: Request<proto::GetReviewRequest>) -> Result<Response<proto::Review>, Status> {
        let caller = auth::caller(&request)?.clone();
        let id = uuid_of("id", &request.get_ref().id)?;
        let review = review_shown_to(&caller, review_message(self.store.review(&caller.tenant_id, &id).await?));
        let read = texts_shown(std::slice::from_ref(&review), |review| (&review.id, [&review.reason, &review.note]));
        self.store.audit_shown(&caller, "governance.GetReview", subjects::Shown::Reviews, read).await?;
        Ok(Response::new(review))
    }

    async fn decide_review(
        &self,
        request: Request<proto::DecideReviewRequest>,
    ) -> Result<Response<proto::Review>, Status> {
        let caller = auth::caller(&request)?.clone();
        let proto::DecideReviewRequest { id, outcome, note } = request.into_inner();
        let note = free_text("note", &note)?;
        let id = uuid_of("id", &id)?;
        let review = self.store.decide(&caller, &id, outcome.trim(), note).await?;
        Ok(Response::new(review_message(review)))
    }
}

/// The ids of `items` whose free text (`texts_of` gives an item's id and texts) the answer shows.
fn texts_shown<T>(items: &[T], texts_of: impl Fn(&T) -> (&String, [&String; 2])) -> Vec<String> {
    items
        .iter()
        .map(&texts_of)
        .filter(|(_, texts)| texts.iter().any(|text| !text.is_empty()))
        .map(|(id, _)| id.clone())
        .collect()
}

/// A correction's `details` and `resolution` may hold the subject's personal data: shown only to
/// a caller who may read bundles too (`governance:write`).
fn shown_to(caller: &Caller, mut request: proto::SubjectRequest) -> proto::SubjectRequest {
    if !caller.has_scope("governance:write") {
        request.details.clear();
        request.resolution.clear();
    }
    request
}

/// A review's `reason` and `note` are what people wrote about a decision on someone, and may name
/// them: shown only to reviewers (`governance:review`) and to callers who may ask for reviews and
/// read bundles (`governance:write`).
fn review_shown_to(caller: &Caller, mut review: proto::Review) -> proto::Review {
    if !caller.has_scope("governance:review") && !caller.has_scope("governance:write") {
        review.reason.clear();
        review.note.clear();
    }
    review
}

fn request_message(request: subjects::StoredRequest) -> proto::SubjectRequest {
    let overdue = request.overdue();
    proto::SubjectRequest {
        deadline: timestamp(&request.deadline),
        create_time: timestamp(&request.created_at),
        complete_time: request.completed_at.as_deref().and_then(timestamp),
        overdue,
        outcomes: request
            .outcomes
            .iter()
            .map(|outcome| proto::ServiceOutcome {
                service: outcome.service.clone(),
                status: outcome.status.clone(),
                records: outcome.records,
                retained: subjects::retained_messages(outcome),
                error: outcome.error.clone(),
            })
            .collect(),
        resolution: request.resolution,
        erased_by: request.erased_by.unwrap_or_default(),
        id: request.id,
        kind: request.kind,
        status: request.status,
        details: request.details,
    }
}

fn review_message(review: subjects::Review) -> proto::Review {
    proto::Review {
        create_time: timestamp(&review.created_at),
        decide_time: review.decided_at.as_deref().and_then(timestamp),
        id: review.id,
        audit_index: review.audit_index,
        event_id: review.event_id,
        action: review.action,
        reason: review.reason,
        status: review.status,
        outcome: review.outcome,
        note: review.note,
        reviewer: review.reviewer,
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ReportsApi {
    reporter: Arc<Reporter>,
}

impl ReportsApi {
    pub(crate) fn new(reporter: Arc<Reporter>) -> Self {
        Self { reporter }
    }
}

#[tonic::async_trait]
impl proto::reports_server::Reports for ReportsApi {
    async fn get_report(&self, request: Request<proto::GetReportRequest>) -> Result<Response<HttpBody>, Status> {
        let tenant = auth::caller(&request)?.tenant_id.clone();
        let proto::GetReportRequest { framework, from, to, format } = request.into_inner();
        let framework = reports::Framework::parse(&framework)?;
        let format = reports::Format::parse(&format)?;
        let to = if to.is_empty() { chrono::Utc::now() } else { reports::parse_bound("to", &to, true)? };
        // Left out, `from` is 30 days before `to`, not before year 0, and no later than now: a
        // period that has begun.
        let from = if from.is_empty() {
            // With no period before it to default to, the `to` given is what is wrong.
            if to <= reports::earliest_bound() {
                return Err(Error::invalid(
                    "to",
                    "must be after 0000-01-01T00:00:00Z, where a period begins at the earliest",
                )
                .into());
            }
            (to - chrono::Duration::days(30)).max(reports::earliest_bound()).min(chrono::Utc::now())
        } else {
            reports::parse_bound("from", &from, false)?
        };
        let report = self.reporter.report(&tenant, framework, from, to).await?;
        let (content_type, data) = match format {
            reports::Format::Json => ("application/json", report.to_string().into_bytes()),
            reports::Format::Pdf => ("application/pdf", reports::render_pdf(&report)),
        };
        Ok(Response::new(HttpBody { content_type: content_type.into(), data, extensions: Vec::new() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_whose_bounds_or_shares_a_report_could_not_publish_is_refused() {
        let window = |bounds: Vec<f64>, shares: Vec<f64>| proto::InferenceWindow {
            tenant_id: "t".into(),
            service: "healthquantum".into(),
            model: "breast-cancer".into(),
            version: "1".into(),
            start_time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            end_time: Some(prost_types::Timestamp { seconds: 1_700_000_060, nanos: 0 }),
            count: 2,
            errors: 0,
            latency_buckets: vec![0; bounds.len() + 1],
            latency_bounds_ms: bounds,
            features: vec![proto::FeatureBins {
                name: "bmi".into(),
                counts: vec![1; shares.len()],
                expected_shares: shares,
            }],
            window_id: String::new(),
        };
        let field_of = |window| match summary_of(0, window) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("accepted: {other:?}"),
        };
        assert!(summary_of(0, window(vec![1.0, 5.0], vec![0.5, 0.5])).is_ok());
        for bounds in [vec![f64::NAN], vec![f64::INFINITY], vec![5.0, 1.0], vec![-1.0], vec![2.0, 2.0]] {
            assert_eq!(field_of(window(bounds.clone(), vec![1.0])), "windows[0].latencyBoundsMs", "{bounds:?}");
        }
        for shares in [vec![f64::NAN, 0.5], vec![1e300, 0.0], vec![-0.1, 1.1]] {
            assert_eq!(field_of(window(vec![1.0], shares.clone())), "windows[0].features", "{shares:?}");
        }
    }

    /// A monitoring API on an embedded database in `dir`.
    async fn monitoring_api(dir: &std::path::Path) -> MonitoringApi {
        let url = format!("sqlite://{}", dir.join("governance.db").display());
        let database = aigronova_platform::storage::Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        MonitoringApi::new(MonitoringStore::new(database.clone()), Inventory::new(database))
    }

    /// A window of `count` calls to tenant `t`'s breast-cancer model in the last minute.
    fn window_of(service: &str, count: u64, window_id: &str) -> proto::InferenceWindow {
        let now = chrono::Utc::now().timestamp();
        proto::InferenceWindow {
            tenant_id: "t".into(),
            service: service.into(),
            model: "breast-cancer".into(),
            version: "1".into(),
            start_time: Some(prost_types::Timestamp { seconds: now - 60, nanos: 0 }),
            end_time: Some(prost_types::Timestamp { seconds: now, nanos: 0 }),
            count,
            errors: 0,
            latency_buckets: vec![count],
            latency_bounds_ms: Vec::new(),
            features: Vec::new(),
            window_id: window_id.into(),
        }
    }

    /// A report of `windows` by `service`, as its verified token makes it.
    fn report_by(service: &str, windows: Vec<proto::InferenceWindow>) -> Request<proto::RecordInferenceStatsRequest> {
        let mut request = Request::new(proto::RecordInferenceStatsRequest { windows });
        request.extensions_mut().insert(Caller::service(service, RECORD_STATS_SCOPE));
        request.extensions_mut().insert(aigronova_platform::auth::FromService);
        request
    }

    #[tokio::test]
    async fn a_service_records_the_windows_of_its_own_models_only() {
        use proto::monitoring_server::Monitoring;

        let dir = tempfile::tempdir().unwrap();
        let api = monitoring_api(dir.path()).await;
        let window = |service: &str| window_of(service, 3, "");
        let refused = api
            .record_inference_stats(report_by("finquantum", vec![window("finquantum"), window("healthquantum")]))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().starts_with("windows[1].service"), "{refused:?}");
        let held = api.store.statuses("t", chrono::Duration::hours(1)).await.unwrap();
        assert!(held.is_empty(), "a refused call records none of its windows: {held:?}");

        api.record_inference_stats(report_by("healthquantum", vec![window("healthquantum")])).await.unwrap();
        let held = api.store.statuses("t", chrono::Duration::hours(1)).await.unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].calls, 3);
    }

    /// A report sent again because its answer was lost records each of its windows once.
    #[tokio::test]
    async fn a_window_sent_again_under_its_id_is_recorded_once() {
        use proto::monitoring_server::Monitoring;

        let dir = tempfile::tempdir().unwrap();
        let api = monitoring_api(dir.path()).await;
        let window = |window_id: &str| window_of("healthquantum", 5, window_id);
        let send = |windows| api.record_inference_stats(report_by("healthquantum", windows));
        let calls = || async { api.store.statuses("t", chrono::Duration::hours(1)).await.unwrap()[0].calls };
        let (first, second) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());

        let answer = send(vec![window(&first)]).await.unwrap().into_inner();
        assert_eq!((answer.recorded, answer.duplicates), (1, 0));
        let answer = send(vec![window(&first), window(&second)]).await.unwrap().into_inner();
        assert_eq!((answer.recorded, answer.duplicates), (1, 1));
        assert_eq!(calls().await, 10, "the window sent twice counts once");

        for (windows, field) in [
            (vec![window("window-1")], "windows[0].windowId"),
            (vec![window(""), window(&first), window(&first)], "windows[2].windowId"),
        ] {
            let refused = send(windows).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
            assert!(refused.message().contains(field), "{refused:?}");
        }
        assert_eq!(calls().await, 10, "a refused report records nothing");
        // Without an id, each sending is a new window.
        send(vec![window("")]).await.unwrap();
        send(vec![window("")]).await.unwrap();
        assert_eq!(calls().await, 20);
    }

    #[test]
    fn a_service_is_the_one_its_token_names() {
        let caller = Caller::service("healthquantum", RECORD_SCOPE);
        assert!(is_caller(&caller, "healthquantum"));
        for other in ["finquantum", "", "service:healthquantum", "healthquantum "] {
            assert!(!is_caller(&caller, other), "{other:?}");
        }
        let person = Caller { tenant_id: "t".into(), subject: "healthquantum".into(), scopes: Vec::new() };
        assert!(!is_caller(&person, "healthquantum"));
    }

    #[test]
    fn a_leaf_holds_the_numbers_of_its_event_to_the_last_bit() {
        let event = proto::AuditEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            tenant_id: "t".into(),
            service: "healthquantum".into(),
            kind: "decision".into(),
            action: "health.AssessRisk".into(),
            actor: "key".into(),
            subject: "patient:p".into(),
            details_json: r#"{"output":{"value":0.9959296584129333},"contribution":0.009413250372520499}"#.into(),
            occur_time: Some(prost_types::Timestamp { seconds: 1_764_000_000, nanos: 0 }),
        };
        let text = leaf_of(0, event).unwrap().to_text();
        assert!(text.contains(r#""value":0.9959296584129333"#), "{text}");
        assert!(text.contains(r#""contribution":0.009413250372520499"#), "{text}");
        assert_eq!(Leaf::parse(&text).unwrap().to_text(), text, "a verifier reads the leaf as written");
    }
}
