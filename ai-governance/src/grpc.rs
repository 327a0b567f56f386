//! The `aigronova.governance.v1` gRPC services: the edge where protobuf messages become domain
//! values and back. Reads serve the caller's tenant only; the two internal RPCs need the scope
//! that only service tokens carry.

use std::sync::Arc;

use aigronova_platform::{
    Error,
    audit::{RECORD_SCOPE, REGISTER_MODELS_SCOPE},
    auth,
};
use aigronova_proto::aigronova::governance::v1 as proto;
use chrono::DateTime;
use tonic::{Request, Response, Status};

use crate::{
    inventory::{Inventory, InventoryEntry},
    log::{Leaf, LogStore, SignedCheckpoint, StoredEntry},
    merkle::Hash,
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
        auth::service_caller(&request, RECORD_SCOPE)?;
        let events = request.into_inner().events;
        if events.len() > MAX_BATCH {
            return Err(Error::invalid("events", format!("at most {MAX_BATCH} events a call")).into());
        }
        let leaves =
            events.into_iter().enumerate().map(|(n, event)| leaf_of(n, event)).collect::<Result<Vec<_>, _>>()?;
        let outcome = self.log.append(leaves).await?;
        Ok(Response::new(proto::RecordEventsResponse { appended: outcome.appended, duplicates: outcome.duplicates }))
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
        let key = self.log.signer().public_key();
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
        let page_size = match page_size {
            0 => DEFAULT_PAGE,
            size if size > MAX_PAGE => {
                return Err(Error::invalid("pageSize", format!("at most {MAX_PAGE}")).into());
            }
            size => size,
        };
        let entries = self.log.entries(&tenant, start, page_size + 1).await.map_err(Error::from)?;
        let next_start = (entries.len() > page_size as usize).then(|| start + u64::from(page_size));
        let entries = entries.into_iter().take(page_size as usize).map(entry_message).collect();
        Ok(Response::new(proto::ListEntriesResponse { entries, next_start }))
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

/// Checks one incoming event and turns it into the leaf that will be hashed.
fn leaf_of(n: usize, event: proto::AuditEvent) -> Result<Leaf, Error> {
    let field = |name: &str| format!("events[{n}].{name}");
    if uuid::Uuid::parse_str(&event.event_id).is_err() {
        return Err(Error::invalid(field("eventId"), "must be a UUID"));
    }
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
        auth::service_caller(&request, REGISTER_MODELS_SCOPE)?;
        let proto::RegisterModelsRequest { service, models } = request.into_inner();
        if service.trim().is_empty() {
            return Err(Error::invalid("service", "must not be empty").into());
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
        Ok(Response::new(inventory_message(self.inventory.get(&name, &version).await?)))
    }
}

fn inventory_message(entry: InventoryEntry) -> proto::InventoryModel {
    let mismatch = entry.sha256_mismatch();
    proto::InventoryModel {
        service: entry.service,
        first_registered_time: timestamp(&entry.first_registered_at),
        last_registered_time: timestamp(&entry.last_registered_at),
        sha256_mismatch: mismatch,
        observed_sha256: if mismatch { entry.observed_sha256 } else { String::new() },
        card: Some(entry.card),
    }
}
