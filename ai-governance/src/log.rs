//! The per-tenant verifiable log: entries in the database, the Merkle tree of each tenant in
//! memory (rebuilt from the stored leaf hashes on first use, and extended with what other replicas
//! appended since), and a signed checkpoint written in the same transaction as every appended
//! batch.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex as StdMutex},
};

use aigronova_platform::{
    Error,
    storage::{Backend, Database, StoreError},
};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use tokio::sync::Mutex;

use crate::{
    checkpoint::{CheckpointBody, CheckpointSigner, CheckpointVerifier},
    merkle::{self, Hash, Tree},
};

/// Rows per multi-row INSERT (5 parameters each).
const INSERT_CHUNK: usize = 100;

/// What an entry records: the text of this struct, serialised once by [`Leaf::to_text`], is the
/// leaf that is hashed and stored, and what a verifier hashes again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Leaf {
    pub event_id: String,
    pub tenant_id: String,
    pub service: String,
    pub kind: String,
    pub action: String,
    pub actor: String,
    pub subject: String,
    pub details: serde_json::Value,
    pub occurred_at: String,
}

impl Leaf {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a leaf serialises")
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// A stored entry as the database holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub event_id: String,
    pub leaf: String,
    pub leaf_hash: String,
}

/// A checkpoint with its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub body: CheckpointBody,
    pub signature: String,
    pub key_id: String,
}

/// The result of one `append`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub appended: u32,
    pub duplicates: u32,
    /// The events of tenants whose stored log no longer matches what was signed over it, which
    /// [`LogStore::append_each`] holds back (see `check_signed_root`), and why the first was.
    pub held: Vec<String>,
    pub held_because: Option<String>,
}

#[derive(Debug, Default)]
struct TenantLog {
    /// `None` until first use, and again after a failed append (the next use reloads it).
    tree: Option<Tree>,
    latest: Option<SignedCheckpoint>,
    /// Whether `tree`, as read from the database, was found to match the last checkpoint this
    /// key signed: an append goes on only from a tree that does (see `check_signed_root`).
    checked: bool,
    /// Why the stored entries cannot be read into a tree (one missing, fewer than the latest
    /// checkpoint covers), when they cannot: the checkpoint is still served, and a verification
    /// says where the log fails, but no proof is made from it.
    damaged: Option<String>,
    /// Why the last [`LogStore::recheck`] found the log no longer matching, said once until it changes.
    recheck_failed: Option<String>,
}

/// Every tenant's log over one database.
#[derive(Debug)]
pub struct LogStore {
    database: Database,
    signer: CheckpointSigner,
    /// Earlier signing keys, from configuration, trusted for the checkpoints they signed.
    earlier: Vec<CheckpointVerifier>,
    tenants: StdMutex<HashMap<String, Arc<Mutex<TenantLog>>>>,
}

impl LogStore {
    pub fn new(database: Database, signer: CheckpointSigner) -> Self {
        Self { database, signer, earlier: Vec::new(), tenants: StdMutex::new(HashMap::new()) }
    }

    /// Trusts `earlier` signing keys, from configuration, for the checkpoints they signed.
    pub fn trusting(self, earlier: Vec<CheckpointVerifier>) -> Self {
        Self { earlier, ..self }
    }

    pub fn signer(&self) -> &CheckpointSigner {
        &self.signer
    }

    /// Records the public key this store signs with, so that a verifier can find the key of a
    /// checkpoint signed before the key was changed (`public-key?keyId=`), as the database holds
    /// it: a verifier compares it with the keys it trusts.
    pub async fn record_signing_key(&self) -> Result<(), StoreError> {
        let key = self.signer.public_key();
        sqlx::query(
            "INSERT INTO audit_signing_keys (key_id, public_key, first_used_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key.key_id())
        .bind(key.to_base64())
        .bind(Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true))
        .execute(self.database.pool())
        .await?;
        Ok(())
    }

    /// The public key whose id is `key_id`: this store's, or one recorded before it, if any.
    pub async fn verifier(&self, key_id: &str) -> Result<Option<CheckpointVerifier>, StoreError> {
        if key_id == self.signer.key_id() {
            return Ok(Some(self.signer.public_key()));
        }
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT public_key FROM audit_signing_keys WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(self.database.pool())
                .await?;
        let verifier = recorded.as_deref().map(CheckpointVerifier::from_base64).transpose();
        verifier.map_err(|error| StoreError::Corrupt(format!("audit_signing_keys {key_id}: {error}")))
    }

    fn tenant(&self, tenant_id: &str) -> Arc<Mutex<TenantLog>> {
        let mut tenants = self.tenants.lock().expect("the tenant map is not poisoned");
        tenants.entry(tenant_id.to_owned()).or_default().clone()
    }

    /// Appends `leaves` (any tenants), each once by event id; returns once they are committed
    /// with a signed checkpoint covering them, or fails with the first tenant whose log refuses
    /// them (see [`Self::append_each`]).
    pub async fn append(&self, leaves: Vec<Leaf>) -> Result<AppendOutcome, StoreError> {
        let outcome = self.append_each(leaves).await?;
        match outcome.held_because {
            Some(reason) => Err(StoreError::Corrupt(reason)),
            None => Ok(outcome),
        }
    }

    /// [`Self::append`], each tenant's events on their own: the events of a tenant whose stored
    /// log no longer matches what was signed over it are held back (their ids in the outcome, the
    /// reason logged), and the other tenants' appended all the same, so that one damaged log does
    /// not stop the others. Any other failure fails the call, the tenants before it appended.
    pub async fn append_each(&self, leaves: Vec<Leaf>) -> Result<AppendOutcome, StoreError> {
        let mut by_tenant: BTreeMap<String, Vec<Leaf>> = BTreeMap::new();
        for leaf in leaves {
            by_tenant.entry(leaf.tenant_id.clone()).or_default().push(leaf);
        }
        let mut outcome = AppendOutcome::default();
        for (tenant_id, leaves) in by_tenant {
            let log = self.tenant(&tenant_id);
            let mut log = log.lock().await;
            let ids: Vec<String> = leaves.iter().map(|leaf| leaf.event_id.clone()).collect();
            let result = self.append_to(&mut log, &tenant_id, leaves).await;
            match result {
                Ok(tenant_outcome) => {
                    outcome.appended += tenant_outcome.appended;
                    outcome.duplicates += tenant_outcome.duplicates;
                }
                Err(error) => {
                    log.tree = None;
                    log.latest = None;
                    let StoreError::Corrupt(reason) = error else { return Err(error) };
                    tracing::error!(
                        tenant = %tenant_id,
                        events = ids.len(),
                        %reason,
                        "audit events held back: this tenant's stored log no longer matches what was signed over it"
                    );
                    outcome.held.extend(ids);
                    outcome.held_because.get_or_insert(reason);
                }
            }
        }
        Ok(outcome)
    }

    async fn append_to(
        &self,
        log: &mut TenantLog,
        tenant_id: &str,
        leaves: Vec<Leaf>,
    ) -> Result<AppendOutcome, StoreError> {
        let mut transaction = self.database.begin_tenant(tenant_id).await?;
        // One append at a time per tenant across replicas (SQLite writes one transaction at a
        // time already): two would give their entries the same indexes.
        if self.database.backend() == Backend::Postgres {
            let digest = Sha256::digest(format!("audit_entries\0{tenant_id}").as_bytes());
            let key = i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
            sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
                .bind(key)
                .fetch_one(&mut *transaction)
                .await?;
        }
        let stored_size: i64 =
            sqlx::query("SELECT COALESCE(MAX(idx) + 1, 0) AS size FROM audit_entries WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&mut *transaction)
                .await?
                .try_get("size")?;
        // Another replica may have appended since: the entries it stored are added.
        match log.tree.as_mut() {
            Some(tree) if tree.len() as i64 == stored_size => {}
            Some(tree) if (tree.len() as i64) < stored_size => {
                extend_tree(&mut transaction, tenant_id, tree).await?;
                log.checked = false;
            }
            _ => {
                let mut tree = Tree::new();
                extend_tree(&mut transaction, tenant_id, &mut tree).await?;
                log.tree = Some(tree);
                log.checked = false;
            }
        }
        if !log.checked {
            check_texts(&mut transaction, tenant_id).await?;
            self.check_signed_root(&mut transaction, tenant_id, log.tree.as_ref().expect("loaded above")).await?;
            log.checked = true;
        }
        let tree = log.tree.as_mut().expect("loaded above");

        let mut seen = existing_event_ids(&mut transaction, tenant_id, &leaves).await?;
        let mut outcome = AppendOutcome::default();
        let mut rows = Vec::with_capacity(leaves.len());
        for leaf in &leaves {
            if !seen.insert(leaf.event_id.clone()) {
                outcome.duplicates += 1;
                continue;
            }
            let text = leaf.to_text();
            let hash = merkle::leaf_hash(text.as_bytes());
            rows.push(StoredEntry {
                index: tree.len(),
                event_id: leaf.event_id.clone(),
                leaf: text,
                leaf_hash: hex::encode(hash),
            });
            tree.push(hash);
            outcome.appended += 1;
        }
        if rows.is_empty() {
            transaction.commit().await?;
            return Ok(outcome);
        }
        for chunk in rows.chunks(INSERT_CHUNK) {
            insert_entries(&mut transaction, tenant_id, chunk).await?;
        }
        let body = CheckpointBody {
            tenant_id: tenant_id.to_owned(),
            tree_size: tree.len(),
            root_hash: tree.root(),
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        let checkpoint = SignedCheckpoint { signature: self.signer.sign(&body), key_id: self.signer.key_id(), body };
        sqlx::query(
            "INSERT INTO audit_checkpoints (tenant_id, tree_size, root_hash, signed_at, signature, key_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant_id)
        .bind(checkpoint.body.tree_size as i64)
        .bind(hex::encode(checkpoint.body.root_hash))
        .bind(&checkpoint.body.timestamp)
        .bind(&checkpoint.signature)
        .bind(&checkpoint.key_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        log.latest = Some(checkpoint);
        // The tree just signed over was read whole and matched its signed root.
        log.damaged = None;
        Ok(outcome)
    }

    /// Refuses to go on from a `tree` read from the database whose root at the size of the latest
    /// checkpoint of any key, this one or an earlier one, is not the root that checkpoint signed:
    /// entries changed with their hashes (or a checkpoint changed) would otherwise be signed over
    /// by the next checkpoint, and look verified from then on, a change of key included. A
    /// checkpoint of a key this deployment trusts (its own, or one of its earlier verifying keys)
    /// must also verify; one of a key it does not hold (a key file deleted and made anew) vouches
    /// for nothing, but the entries must still make the root it names.
    async fn check_signed_root(
        &self,
        connection: &mut AnyConnection,
        tenant_id: &str,
        tree: &Tree,
    ) -> Result<(), StoreError> {
        // Fewer entries than any checkpoint covers, whichever key signed it (an earlier one, before
        // this key signed anything for the tenant): the last ones were deleted.
        let signed_size: i64 =
            sqlx::query("SELECT COALESCE(MAX(tree_size), 0) AS size FROM audit_checkpoints WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&mut *connection)
                .await?
                .try_get("size")?;
        if signed_size as u64 > tree.len() {
            tracing::error!(
                tenant = %tenant_id,
                size = signed_size,
                "the stored audit log holds fewer entries than its latest checkpoint covers; nothing more is appended to it"
            );
            return Err(StoreError::Corrupt(format!(
                "tenant {tenant_id}: the latest checkpoint covers {signed_size} entries but {} are stored",
                tree.len()
            )));
        }
        let current = self.signer.public_key();
        for signed in latest_of_each_key(connection, tenant_id).await? {
            let trusted = std::iter::once(&current).chain(&self.earlier).find(|key| key.key_id() == signed.key_id);
            // `None` for a key this deployment does not hold.
            let verified = trusted.map(|key| key.verify(&signed.body.signed_text(), &signed.signature).is_ok());
            let matches = tree.root_at(signed.body.tree_size).is_ok_and(|root| root == signed.body.root_hash);
            if verified != Some(false) && matches {
                continue;
            }
            let (size, key_id) = (signed.body.tree_size, signed.key_id.as_str());
            // A signature that fails is the checkpoint's damage, which the entries may share or not.
            let (logged, told) = match (verified, matches) {
                (Some(false), true) => (
                    "a checkpoint's signature does not verify with its key; nothing more is appended to the log",
                    format!(
                        "tenant {tenant_id}: the signature of the checkpoint at size {size} does not verify with its \
                         key {key_id}"
                    ),
                ),
                (Some(false), false) => (
                    "a checkpoint's signature does not verify, nor does the stored log match the root it names \
                     (the checkpoint or the entries were altered); nothing more is appended to the log",
                    format!(
                        "tenant {tenant_id}: the signature of the checkpoint at size {size} does not verify with its \
                         key {key_id}, and the stored audit log does not match the root it names: the checkpoint or \
                         the entries were altered"
                    ),
                ),
                (Some(true), _) => (
                    "the stored audit log no longer matches a checkpoint signed over it; nothing more is appended to it",
                    format!(
                        "tenant {tenant_id}: the stored audit log does not match the checkpoint key {key_id} signed at \
                         size {size}"
                    ),
                ),
                (None, _) => (
                    "the stored audit log no longer matches a checkpoint signed over it by a key this deployment \
                     does not hold; nothing more is appended to it",
                    format!(
                        "tenant {tenant_id}: the stored audit log does not match the checkpoint key {key_id} signed at \
                         size {size} (a key this deployment does not hold: the entries or the checkpoint were altered)"
                    ),
                ),
            };
            tracing::error!(tenant = %tenant_id, size, key = %key_id, "{logged}");
            return Err(StoreError::Corrupt(told));
        }
        Ok(())
    }

    /// Reads the log of every tenant this process has loaded afresh from the database, as a start
    /// does, so that rows changed or deleted under a running process are found without a restart:
    /// a log missing entries is damaged (no proof is made from it), one whose entries no longer hash
    /// to their stored hashes or to the root signed last holds back its events; each is logged at
    /// error level. Returns how many logs were found so.
    pub async fn recheck(&self) -> usize {
        let tenants: Vec<(String, Arc<Mutex<TenantLog>>)> = {
            let tenants = self.tenants.lock().expect("the tenant map is not poisoned");
            tenants.iter().map(|(tenant_id, log)| (tenant_id.clone(), log.clone())).collect()
        };
        let mut found = 0;
        for (tenant_id, log) in tenants {
            if self.recheck_one(&tenant_id, &mut *log.lock().await).await {
                found += 1;
            }
        }
        found
    }

    /// Checks, as [`Self::recheck`] does, the stored log of every tenant this process has not
    /// loaded, each read whole in a read transaction (writes go on meanwhile), checked, then let
    /// go (it is loaded on its next use), so that a log changed while no process ran is told at
    /// start, not at its tenant's next event. Returns how many logs were found changed; each is
    /// logged at error level.
    pub async fn check_stored(&self) -> Result<usize, StoreError> {
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT tenant_id FROM audit_checkpoints ORDER BY tenant_id")
                .fetch_all(self.database.pool())
                .await?;
        let mut found = 0;
        for tenant_id in stored {
            // One loaded since is checked by its own use and by the rechecks.
            if self.tenants.lock().expect("the tenant map is not poisoned").contains_key(&tenant_id) {
                continue;
            }
            match self.check_read_only(&tenant_id).await {
                Ok(()) => {}
                Err(StoreError::Corrupt(reason)) => {
                    found += 1;
                    tell_changed(&tenant_id, &reason);
                }
                Err(error) => tracing::warn!(tenant = %tenant_id, %error, "the audit log was not checked at start"),
            }
        }
        Ok(found)
    }

    /// The checks an append makes of the stored log of `tenant_id` before going on from it, in a
    /// read transaction: every entry's text against its stored hash, and the tree against the
    /// checkpoints signed over it.
    async fn check_read_only(&self, tenant_id: &str) -> Result<(), StoreError> {
        let mut transaction = self.database.begin_tenant_read(tenant_id).await?;
        let mut tree = Tree::new();
        extend_tree(&mut transaction, tenant_id, &mut tree).await?;
        check_texts(&mut transaction, tenant_id).await?;
        self.check_signed_root(&mut transaction, tenant_id, &tree).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Reads `log` of `tenant_id` whole again and checks it as before an append; true when it no
    /// longer matches what was signed over it (logged at error level, once for the same reason).
    async fn recheck_one(&self, tenant_id: &str, log: &mut TenantLog) -> bool {
        // Read whole again and checked as before an append, under the same lock as appends
        // (other replicas' included), with nothing to append.
        log.tree = None;
        log.checked = false;
        match self.append_to(log, tenant_id, Vec::new()).await {
            Ok(_) => {
                log.recheck_failed = None;
                false
            }
            Err(StoreError::Corrupt(reason)) => {
                log.tree = None;
                log.latest = None;
                if log.recheck_failed.as_deref() != Some(reason.as_str()) {
                    tell_changed(tenant_id, &reason);
                }
                log.recheck_failed = Some(reason);
                true
            }
            // Another tenant's log is checked all the same; this one at the next round.
            Err(error) => {
                log.tree = None;
                log.latest = None;
                tracing::warn!(tenant = %tenant_id, %error, "the audit log was not rechecked; tried again later");
                false
            }
        }
    }

    /// Brings the tenant's tree and latest checkpoint up to the database's: loaded on first use,
    /// extended when another replica has appended since.
    async fn ensure_loaded(&self, log: &mut TenantLog, tenant_id: &str) -> Result<(), StoreError> {
        // One snapshot for the checkpoint and the entries under it.
        let mut connection = self.database.begin_tenant_read(tenant_id).await?;
        let row = sqlx::query(
            "SELECT tree_size, root_hash, signed_at, signature, key_id FROM audit_checkpoints \
             WHERE tenant_id = $1 ORDER BY tree_size DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&mut *connection)
        .await?;
        let stored = row.map(|row| checkpoint_from(tenant_id, &row)).transpose()?;
        let held = log.latest.as_ref().map(|latest| latest.body.tree_size);
        let stored_size = stored.as_ref().map_or(0, |stored| stored.body.tree_size);
        if log.tree.is_some() && held == Some(stored_size) {
            return Ok(());
        }
        let mut tree = log.tree.take().unwrap_or_default();
        let extended = extend_tree(&mut connection, tenant_id, &mut tree).await;
        let latest = match stored {
            Some(stored) => stored,
            None => {
                let body = CheckpointBody {
                    tenant_id: tenant_id.to_owned(),
                    tree_size: 0,
                    root_hash: merkle::EMPTY_ROOT,
                    timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
                };
                SignedCheckpoint { signature: self.signer.sign(&body), key_id: self.signer.key_id(), body }
            }
        };
        let damage = match extended {
            Err(StoreError::Corrupt(reason)) => Some(reason),
            Err(error) => return Err(error),
            Ok(()) if latest.body.tree_size > tree.len() => Some(format!(
                "the latest checkpoint covers {} entries but {} are stored",
                latest.body.tree_size,
                tree.len()
            )),
            Ok(()) => None,
        };
        if damage.is_some() && damage != log.damaged {
            tracing::error!(
                tenant = %tenant_id,
                reason = damage.as_deref().unwrap_or_default(),
                "the stored audit log cannot be read into its tree; its proofs are refused until it is restored"
            );
        }
        log.tree = damage.is_none().then_some(tree);
        log.latest = Some(latest);
        log.damaged = damage;
        log.checked = false;
        Ok(())
    }

    /// The tree of a loaded `log`, or the refusal of a proof from a damaged one.
    fn tree_of(log: &TenantLog) -> Result<&Tree, Error> {
        match (&log.tree, &log.damaged) {
            (Some(tree), None) => Ok(tree),
            (_, damage) => Err(Error::Refused(Box::new(tonic::Status::data_loss(format!(
                "this tenant's stored audit log is damaged ({}): no proof is made from it until it is restored \
                 from a backup; the evidence report and `aigronova audit verify` say where it fails",
                damage.as_deref().unwrap_or("not loaded")
            ))))),
        }
    }

    /// The latest signed checkpoint of `tenant_id` (size 0, signed now, for an empty log).
    pub async fn latest_checkpoint(&self, tenant_id: &str) -> Result<SignedCheckpoint, Error> {
        let log = self.tenant(tenant_id);
        let mut log = log.lock().await;
        self.ensure_loaded(&mut log, tenant_id).await?;
        Ok(log.latest.clone().expect("loaded above"))
    }

    /// The checkpoint signed when the log of `tenant_id` reached `tree_size`; for size 0, while the
    /// log is empty, the one [`Self::latest_checkpoint`] gives (an empty log's, signed on demand).
    pub async fn checkpoint_at(&self, tenant_id: &str, tree_size: u64) -> Result<SignedCheckpoint, Error> {
        if tree_size == 0 {
            let latest = self.latest_checkpoint(tenant_id).await?;
            if latest.body.tree_size == 0 {
                return Ok(latest);
            }
        }
        // No log grows past i64's range: a larger size has no checkpoint, as any size not signed.
        let row = match i64::try_from(tree_size) {
            Ok(stored_size) => sqlx::query(
                "SELECT tree_size, root_hash, signed_at, signature, key_id FROM audit_checkpoints \
                 WHERE tenant_id = $1 AND tree_size = $2",
            )
            .bind(tenant_id)
            .bind(stored_size)
            .fetch_optional(&mut *self.database.begin_tenant_read(tenant_id).await?)
            .await
            .map_err(StoreError::from)?,
            Err(_) => None,
        };
        let Some(row) = row else {
            let size = self.latest_checkpoint(tenant_id).await?.body.tree_size;
            let why = if tree_size > size {
                format!("the log holds {size} entries")
            } else {
                "checkpoints are signed at the end of each batch, not at every size".to_owned()
            };
            return Err(Error::NotFound(format!("a checkpoint of tree size {tree_size} ({why})")));
        };
        Ok(checkpoint_from(tenant_id, &row)?)
    }

    /// The checkpoints signed for `tenant_id` at sizes above `after`, in size order, at most
    /// `limit` of them.
    pub async fn checkpoints(&self, tenant_id: &str, after: u64, limit: u32) -> Result<Vec<SignedCheckpoint>, Error> {
        let rows = self.checkpoint_rows(tenant_id, after, limit).await?;
        Ok(rows.iter().map(|row| checkpoint_from(tenant_id, row)).collect::<Result<_, _>>()?)
    }

    /// The rows of [`LogStore::checkpoints`], as stored.
    async fn checkpoint_rows(
        &self,
        tenant_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        sqlx::query(
            "SELECT tree_size, root_hash, signed_at, signature, key_id FROM audit_checkpoints \
             WHERE tenant_id = $1 AND tree_size > $2 ORDER BY tree_size LIMIT $3",
        )
        .bind(tenant_id)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.database.begin_tenant_read(tenant_id).await?)
        .await
        .map_err(StoreError::from)
    }

    /// The entry at `index` with its inclusion proof against the latest checkpoint.
    pub async fn entry_with_proof(
        &self,
        tenant_id: &str,
        index: u64,
    ) -> Result<(StoredEntry, SignedCheckpoint, Vec<Hash>), Error> {
        let log = self.tenant(tenant_id);
        let mut log = log.lock().await;
        self.ensure_loaded(&mut log, tenant_id).await?;
        let latest = log.latest.clone().expect("loaded above");
        if index >= latest.body.tree_size {
            return Err(Error::NotFound(format!("entry {index} (the log holds {})", latest.body.tree_size)));
        }
        let proof = match Self::tree_of(&log) {
            Ok(tree) => tree
                .inclusion_proof(index, latest.body.tree_size)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?,
            // An entry of a damaged log that is not stored is not found, as a verifier is to hear.
            Err(refused) => {
                let stored = self.entries(tenant_id, index, 1).await?;
                if stored.first().is_none_or(|entry| entry.index != index) {
                    return Err(Error::Refused(Box::new(tonic::Status::not_found(format!(
                        "entry {index} not found, though the latest checkpoint covers it (size {}): the stored log \
                         is damaged",
                        latest.body.tree_size
                    )))));
                }
                return Err(refused);
            }
        };
        drop(log);
        let entry = self
            .entries(tenant_id, index, 1)
            .await?
            .into_iter()
            .next()
            .filter(|entry| entry.index == index)
            .ok_or_else(|| Error::NotFound(format!("entry {index}")))?;
        Ok((entry, latest, proof))
    }

    /// The index of the entry of the event `event_id`, if the log holds it.
    pub async fn index_of_event(&self, tenant_id: &str, event_id: &str) -> Result<Option<u64>, StoreError> {
        let index: Option<i64> =
            sqlx::query_scalar("SELECT idx FROM audit_entries WHERE tenant_id = $1 AND event_id = $2")
                .bind(tenant_id)
                .bind(event_id)
                .fetch_optional(&mut *self.database.begin_tenant_read(tenant_id).await?)
                .await?;
        Ok(index.map(|index| u64::try_from(index).unwrap_or_default()))
    }

    /// Up to `limit` entries from `start`, in index order.
    pub async fn entries(&self, tenant_id: &str, start: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT idx, event_id, leaf, leaf_hash FROM audit_entries \
             WHERE tenant_id = $1 AND idx >= $2 ORDER BY idx LIMIT $3",
        )
        .bind(tenant_id)
        .bind(i64::try_from(start).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.database.begin_tenant_read(tenant_id).await?)
        .await?;
        rows.iter().map(entry_from).collect()
    }

    /// The roots of the trees of sizes `from` and `to` and the consistency proof between them.
    pub async fn consistency(&self, tenant_id: &str, from: u64, to: u64) -> Result<(Hash, Hash, Vec<Hash>), Error> {
        let log = self.tenant(tenant_id);
        let mut log = log.lock().await;
        self.ensure_loaded(&mut log, tenant_id).await?;
        let size = log.latest.as_ref().expect("loaded above").body.tree_size;
        if size == 0 {
            return Err(Error::invalid(
                "to",
                "the log is empty: no tree to prove the consistency of until the tenant's first event is logged",
            ));
        }
        if from == 0 || from > to || to > size {
            // The field at fault: `from` when it is 0 (or not given, which reads the same), `to`
            // when it is 0 or past the log, `from` otherwise (after `to`).
            let field = if from != 0 && (to == 0 || to > size) { "to" } else { "from" };
            let zero = if field == "to" { to == 0 } else { from == 0 };
            let need = format!("need 0 < from <= to <= {size} (the log's size)");
            let reason =
                if zero { format!("must be given, and at least 1 (0 reads as not given): {need}") } else { need };
            return Err(Error::invalid(field, reason));
        }
        let tree = Self::tree_of(&log)?;
        let corrupt = |error: merkle::ProofError| Error::from(StoreError::Corrupt(error.to_string()));
        Ok((
            tree.root_at(from).map_err(corrupt)?,
            tree.root_at(to).map_err(corrupt)?,
            tree.consistency_proof(from, to).map_err(corrupt)?,
        ))
    }
}

/// The stored entries of a log read in order and hashed again.
struct Walk {
    leaves: Vec<Hash>,
    /// The first entry whose stored hash is not its text's.
    first_bad: Option<u64>,
    /// The first entry whose stored event id is not the one its text holds.
    id_changed: Option<u64>,
    /// The first index with no entry, when entries after it are stored.
    missing: Option<u64>,
}

/// The result of checking a whole log against its latest checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub tree_size: u64,
    /// The first entry whose stored text does not match the signed tree, if any.
    pub first_bad_index: Option<u64>,
    pub reason: String,
    /// Whether the checkpoint's signature verifies against the key that signed it.
    pub signed: bool,
    /// Whether the signature fails against the trusted key the checkpoint names: the checkpoint
    /// was altered, or forged, rather than signed by a key this deployment does not know.
    pub signature_failed: bool,
}

impl Verification {
    pub fn verified(&self) -> bool {
        self.signed && self.first_bad_index.is_none()
    }
}

impl LogStore {
    /// Checks the log of `tenant_id` as a verifier would, up to `checkpoint` (one of its signed
    /// checkpoints, the latest one a report shows, say): the checkpoint's signature, then every
    /// stored entry it covers hashed again into the tree, against its signed root.
    pub async fn verify(&self, tenant_id: &str, checkpoint: &SignedCheckpoint) -> Result<Verification, Error> {
        let size = checkpoint.body.tree_size;
        // Checked against a key from configuration, this store's or an earlier one it trusts: a key
        // read from the database would be whatever someone able to rewrite the log stored there. A
        // checkpoint no such key signed, or whose signature fails, vouches for no entry: what the
        // entries show of themselves is said all the same.
        let current = self.signer.public_key();
        let key = std::iter::once(&current).chain(&self.earlier).find(|key| key.key_id() == checkpoint.key_id);
        let signature_failed =
            key.is_some_and(|key| key.verify(&checkpoint.body.signed_text(), &checkpoint.signature).is_err());
        let unsigned = match key {
            None => Some(format!(
                "the latest checkpoint is signed by key {}, neither this deployment's key {} nor one of its \
                 ai_governance.earlier_verifying_keys: verify it with that key (aigronova audit verify \
                 --public-key), or once the tenant logs again",
                checkpoint.key_id,
                self.signer.key_id()
            )),
            Some(_) if signature_failed => Some(format!(
                "the latest checkpoint's signature does not verify against its key {}, which this deployment trusts: \
                 the checkpoint was altered or forged",
                checkpoint.key_id
            )),
            Some(_) => None,
        };
        let walk = self.walk(tenant_id, size).await?;
        if let Some(reason) = unsigned {
            let verification = self.unsigned(checkpoint, walk, reason).await?;
            return Ok(Verification { signature_failed, ..verification });
        }
        let Walk { leaves, first_bad, id_changed, missing } = walk;
        if let Some(expected) = missing {
            let reason = format!("entry {expected} is missing");
            return Ok(Verification {
                tree_size: size,
                first_bad_index: Some(expected),
                reason,
                signed: true,
                signature_failed: false,
            });
        }
        // Fewer entries than were signed, with none missing between them: the last ones deleted,
        // or one before them with those after it renumbered; which is searched for as for a change.
        let held = leaves.len() as u64;
        let short = held < size;
        // Hashing the whole tree takes a while for a large log: on a thread that may block.
        let (leaves, root) = tokio::task::spawn_blocking(move || {
            let root = merkle::root_of(&leaves);
            (leaves, root)
        })
        .await
        .map_err(|error| Error::Refused(Box::new(aigronova_platform::error::internal(&error))))?;
        // The latest checkpoint each other key this deployment trusts signed must match too: a log
        // changed and then signed over by another key matches only the latest checkpoint.
        let mut others = Vec::new();
        for other in self.latest_of_each_key(tenant_id).await? {
            let trusted = std::iter::once(self.signer.public_key()).chain(self.earlier.iter().cloned()).find(|key| {
                key.key_id() == other.key_id && key.verify(&other.body.signed_text(), &other.signature).is_ok()
            });
            if trusted.is_some() && other.body.tree_size < size {
                others.push(other);
            }
        }
        let (leaves, others_match) = tokio::task::spawn_blocking(move || {
            let matches = others.iter().all(|other| {
                let covered = usize::try_from(other.body.tree_size).ok().and_then(|size| leaves.get(..size));
                covered.is_some_and(|covered| merkle::root_of(covered) == other.body.root_hash)
            });
            (leaves, matches)
        })
        .await
        .map_err(|error| Error::Refused(Box::new(aigronova_platform::error::internal(&error))))?;
        if !short && root == checkpoint.body.root_hash && others_match {
            let (first_bad_index, reason) = match id_changed {
                Some(index) => (Some(index), format!("entry {index}'s event id is not the one its signed text holds")),
                None => (None, "the log matches the signed root".to_owned()),
            };
            return Ok(Verification {
                tree_size: size,
                first_bad_index,
                reason,
                signed: true,
                signature_failed: false,
            });
        }
        if let Some(index) = first_bad {
            return Ok(Verification {
                tree_size: size,
                first_bad_index: Some(index),
                reason: format!("entry {index} does not match the signed tree"),
                signed: true,
                signature_failed: false,
            });
        }
        // Entries and their hashes changed together: the checkpoints signed along the way, by this
        // deployment's key or an earlier one it trusts, tell which batch the first change is in.
        // Rows that do not parse or whose signature fails are no evidence either way.
        let rows = self.checkpoint_rows(tenant_id, 0, u32::MAX).await?;
        let trusted: Vec<CheckpointVerifier> =
            std::iter::once(self.signer.public_key()).chain(self.earlier.iter().cloned()).collect();
        let signed: Vec<SignedCheckpoint> =
            rows.iter().filter_map(|row| checkpoint_from(tenant_id, row).ok()).collect();
        // Signatures checked and roots computed on a thread that may block, as above.
        let (bracket, reached, leaves) = tokio::task::spawn_blocking(move || {
            let signed: Vec<(u64, merkle::Hash)> = signed
                .iter()
                .filter(|checkpoint| {
                    trusted.iter().any(|key| {
                        key.key_id() == checkpoint.key_id
                            && key.verify(&checkpoint.body.signed_text(), &checkpoint.signature).is_ok()
                    })
                })
                .map(|checkpoint| (checkpoint.body.tree_size, checkpoint.body.root_hash))
                .collect();
            // The largest signed tree the entries held reach, which they match when none is unmatched.
            let reached = signed.iter().map(|(size, _)| *size).filter(|size| *size <= leaves.len() as u64).max();
            (merkle::first_unmatched(&leaves, signed), reached.unwrap_or(0), leaves)
        })
        .await
        .map_err(|error| Error::Refused(Box::new(aigronova_platform::error::internal(&error))))?;
        let (from, to) = match (bracket, short) {
            (Some(bracket), _) => bracket,
            (None, true) => {
                let (index, reason) = fewer_than_signed(reached, held, size);
                return Ok(Verification {
                    tree_size: size,
                    first_bad_index: Some(index),
                    reason,
                    signed: true,
                    signature_failed: false,
                });
            }
            (None, false) => (0, size),
        };
        if let Some(index) = self.first_changed_since_appended(tenant_id, &leaves, from..to, checkpoint).await {
            return Ok(Verification {
                tree_size: size,
                first_bad_index: Some(index),
                reason: format!(
                    "entry {index} is not the entry appended there (the checkpoints place the first change between \
                     index {from} and {})",
                    to - 1
                ),
                signed: true,
                signature_failed: false,
            });
        }
        Ok(Verification {
            tree_size: size,
            first_bad_index: Some(from),
            reason: changed_between(from, to),
            signed: true,
            signature_failed: false,
        })
    }

    /// The latest checkpoint of each key that signed any for `tenant_id`, the latest first.
    async fn latest_of_each_key(&self, tenant_id: &str) -> Result<Vec<SignedCheckpoint>, StoreError> {
        let mut connection = self.database.pool().acquire().await?;
        latest_of_each_key(&mut connection, tenant_id).await
    }

    /// The stored entries of `tenant_id` below `size`, hashed again, with the first whose stored
    /// hash or event id is not its text's, or the first missing (when the walk stops there).
    async fn walk(&self, tenant_id: &str, size: u64) -> Result<Walk, Error> {
        let mut walk = Walk {
            leaves: Vec::with_capacity(usize::try_from(size).unwrap_or(0)),
            first_bad: None,
            id_changed: None,
            missing: None,
        };
        'pages: while (walk.leaves.len() as u64) < size {
            let page = self.entries(tenant_id, walk.leaves.len() as u64, 10_000).await?;
            if page.is_empty() {
                break;
            }
            for entry in page {
                let expected = walk.leaves.len() as u64;
                if expected >= size {
                    break 'pages;
                }
                // Every page either adds the entry expected next or ends here: an entry stored
                // past the signed size while one below it is gone is a missing entry too.
                if entry.index != expected {
                    walk.missing = Some(expected);
                    break 'pages;
                }
                let hash = merkle::leaf_hash(entry.leaf.as_bytes());
                if walk.first_bad.is_none() && hex::encode(hash) != entry.leaf_hash {
                    walk.first_bad = Some(expected);
                }
                if walk.id_changed.is_none() && leaf_event_id(&entry.leaf).as_deref() != Some(entry.event_id.as_str()) {
                    walk.id_changed = Some(expected);
                }
                walk.leaves.push(hash);
            }
        }
        Ok(walk)
    }

    /// The verification under a checkpoint whose signature cannot be checked (`reason`): the
    /// checkpoint vouches for nothing, but what the entries show of themselves is said (an entry
    /// missing, one whose text is not its stored hash or event id) and whether they make the root
    /// the checkpoint holds.
    async fn unsigned(&self, checkpoint: &SignedCheckpoint, walk: Walk, reason: String) -> Result<Verification, Error> {
        let size = checkpoint.body.tree_size;
        let unverified = |first_bad_index: Option<u64>, entries: String| Verification {
            tree_size: size,
            first_bad_index,
            reason: format!("{reason}; {entries}"),
            signed: false,
            signature_failed: false,
        };
        if let Some(index) = walk.missing {
            return Ok(unverified(Some(index), format!("entry {index}, which it covers, is missing")));
        }
        if let Some(index) = walk.first_bad {
            return Ok(unverified(
                Some(index),
                format!("entry {index}'s text is not what its stored hash was made of"),
            ));
        }
        let held = walk.leaves.len() as u64;
        if held < size {
            return Ok(unverified(Some(held), format!("the log holds {held} of the {size} entries it covers")));
        }
        if let Some(index) = walk.id_changed {
            return Ok(unverified(Some(index), format!("entry {index}'s event id is not the one its text holds")));
        }
        let leaves = walk.leaves;
        let root = tokio::task::spawn_blocking(move || merkle::root_of(&leaves))
            .await
            .map_err(|error| Error::Refused(Box::new(aigronova_platform::error::internal(&error))))?;
        let made = if root == checkpoint.body.root_hash { "make" } else { "do not make" };
        Ok(unverified(None, format!("the entries stored {made} the root it holds")))
    }

    /// The first entry in `range` whose stored hash (`leaves`) is not the one the tree held in
    /// memory since it was appended, when that tree is the signed one (its root at the
    /// checkpoint's size is the signed root): the exact entry where the checkpoints only place a
    /// change between two of them. `None` when the tree in memory was loaded from the rows as they
    /// are now (after a restart), or is not the signed one.
    async fn first_changed_since_appended(
        &self,
        tenant_id: &str,
        leaves: &[Hash],
        range: std::ops::Range<u64>,
        checkpoint: &SignedCheckpoint,
    ) -> Option<u64> {
        // Looked up, not added: a log only verified is not one this process holds.
        let log = self.tenants.lock().expect("the tenant map is not poisoned").get(tenant_id).cloned()?;
        let log = log.lock().await;
        let tree = log.tree.as_ref()?;
        if tree.root_at(checkpoint.body.tree_size).ok()? != checkpoint.body.root_hash {
            return None;
        }
        range.into_iter().find(|&index| {
            let stored = usize::try_from(index).ok().and_then(|index| leaves.get(index));
            tree.leaf(index).as_ref() != stored
        })
    }
}

/// The latest checkpoint of each key that signed any for `tenant_id`, the latest first.
async fn latest_of_each_key(
    connection: &mut AnyConnection,
    tenant_id: &str,
) -> Result<Vec<SignedCheckpoint>, StoreError> {
    let sizes: Vec<i64> = sqlx::query_scalar(
        "SELECT MAX(tree_size) AS size FROM audit_checkpoints WHERE tenant_id = $1 GROUP BY key_id ORDER BY size DESC",
    )
    .bind(tenant_id)
    .fetch_all(&mut *connection)
    .await?;
    let mut latest = Vec::with_capacity(sizes.len());
    for size in sizes {
        let row = sqlx::query(
            "SELECT tree_size, root_hash, signed_at, signature, key_id FROM audit_checkpoints \
             WHERE tenant_id = $1 AND tree_size = $2",
        )
        .bind(tenant_id)
        .bind(size)
        .fetch_one(&mut *connection)
        .await?;
        latest.push(checkpoint_from(tenant_id, &row)?);
    }
    Ok(latest)
}

/// Logs, at error level, that the stored log of `tenant_id` no longer matches what was signed
/// over it, and why.
fn tell_changed(tenant_id: &str, reason: &str) {
    tracing::error!(
        tenant = %tenant_id,
        %reason,
        "the stored audit log no longer matches what was signed over it; its events are held back until it is \
         restored"
    );
}

/// Where the first bad entry of a log holding `held` entries of the `size` signed is, when every
/// signed tree it reaches matches, the largest of them of size `reached`: at `held`, missing, when
/// the log reaches that far; otherwise from `reached` to `held`, where an entry was deleted (those
/// after it renumbered to close the gap) or changed. The index and the reason.
pub fn fewer_than_signed(reached: u64, held: u64, size: u64) -> (u64, String) {
    if reached >= held {
        return (held, format!("entry {held} is missing"));
    }
    let reason = format!(
        "the log holds {held} of the {size} entries signed: an entry from index {reached} to {held} is missing or \
         does not match the checkpoint signed at size {size}"
    );
    (reached, reason)
}

/// Where the first changed entry of a log is, when only the checkpoints can tell: after the
/// last size whose signed root still matches (`from`) and before the first that does not (`to`).
pub fn changed_between(from: u64, to: u64) -> String {
    match to.saturating_sub(from) {
        0 => format!("an entry before index {to} does not match the checkpoint signed at size {to}"),
        1 => format!("entry {from} does not match the checkpoint signed at size {to}"),
        _ => format!(
            "an entry from index {from} to {} does not match the checkpoint signed at size {to} \
             (the entries and their hashes were changed together)",
            to - 1
        ),
    }
}

/// Refuses to go on from a log one of whose stored entries' text does not hash to its stored leaf
/// hash, or whose event id is not the one its text holds: an entry whose text or id was changed
/// alone (one changed with its hash is found by `check_signed_root`).
async fn check_texts(connection: &mut AnyConnection, tenant_id: &str) -> Result<(), StoreError> {
    // A page at a time, so that a long log is not held in memory whole.
    const PAGE: i64 = 10_000;
    let mut from = 0;
    loop {
        let rows = sqlx::query(
            "SELECT idx, event_id, leaf, leaf_hash FROM audit_entries WHERE tenant_id = $1 AND idx >= $2 \
             ORDER BY idx LIMIT $3",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(PAGE)
        .fetch_all(&mut *connection)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in rows {
            let (index, leaf, hash): (i64, String, String) =
                (row.try_get("idx")?, row.try_get("leaf")?, row.try_get("leaf_hash")?);
            if decode_hash(&hash) != Some(merkle::leaf_hash(leaf.as_bytes())) {
                tracing::error!(tenant = %tenant_id, index, "an audit entry's text no longer hashes to its stored leaf hash");
                return Err(StoreError::Corrupt(format!(
                    "tenant {tenant_id}: audit entry {index}'s text does not hash to its stored leaf hash"
                )));
            }
            // The event id a review finds the entry by, and a retried event is known by, is the
            // one its signed text holds.
            let event_id: String = row.try_get("event_id")?;
            if leaf_event_id(&leaf).as_deref() != Some(event_id.as_str()) {
                tracing::error!(tenant = %tenant_id, index, "an audit entry's event id is not the one its text holds");
                return Err(StoreError::Corrupt(format!(
                    "tenant {tenant_id}: audit entry {index}'s event id is not the one its text holds"
                )));
            }
            from = index + 1;
        }
    }
}

/// The event id an entry's text (`leaf`) holds, if it reads as one.
fn leaf_event_id(leaf: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Identified<'a> {
        #[serde(borrow)]
        event_id: std::borrow::Cow<'a, str>,
    }
    serde_json::from_str::<Identified<'_>>(leaf).ok().map(|identified| identified.event_id.into_owned())
}

/// Adds to `tree` the leaf hashes stored after it (appended by another replica, or all of them
/// for a new tree).
async fn extend_tree(connection: &mut AnyConnection, tenant_id: &str, tree: &mut Tree) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT idx, leaf_hash FROM audit_entries WHERE tenant_id = $1 AND idx >= $2 ORDER BY idx")
        .bind(tenant_id)
        .bind(tree.len() as i64)
        .fetch_all(&mut *connection)
        .await?;
    for row in rows {
        let index: i64 = row.try_get("idx")?;
        if index as u64 != tree.len() {
            return Err(StoreError::Corrupt(format!("tenant {tenant_id}: audit entry {} is missing", tree.len())));
        }
        let hash: String = row.try_get("leaf_hash")?;
        tree.push(decode_hash(&hash).ok_or_else(|| {
            StoreError::Corrupt(format!("tenant {tenant_id}: audit entry {index} has a malformed leaf hash"))
        })?);
    }
    Ok(())
}

async fn existing_event_ids(
    connection: &mut AnyConnection,
    tenant_id: &str,
    leaves: &[Leaf],
) -> Result<HashSet<String>, StoreError> {
    let mut existing = HashSet::new();
    for chunk in leaves.chunks(INSERT_CHUNK * 4) {
        let placeholders: Vec<String> = (2..chunk.len() + 2).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT event_id FROM audit_entries WHERE tenant_id = $1 AND event_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant_id);
        for leaf in chunk {
            query = query.bind(&leaf.event_id);
        }
        for row in query.fetch_all(&mut *connection).await? {
            existing.insert(row.try_get::<String, _>("event_id")?);
        }
    }
    Ok(existing)
}

async fn insert_entries(
    connection: &mut AnyConnection,
    tenant_id: &str,
    rows: &[StoredEntry],
) -> Result<(), StoreError> {
    let values: Vec<String> = (0..rows.len())
        .map(|row| {
            let base = row * 5;
            format!("(${}, ${}, ${}, ${}, ${})", base + 1, base + 2, base + 3, base + 4, base + 5)
        })
        .collect();
    let sql =
        format!("INSERT INTO audit_entries (tenant_id, idx, event_id, leaf, leaf_hash) VALUES {}", values.join(", "));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        query = query.bind(tenant_id).bind(row.index as i64).bind(&row.event_id).bind(&row.leaf).bind(&row.leaf_hash);
    }
    query.execute(connection).await?;
    Ok(())
}

fn entry_from(row: &sqlx::any::AnyRow) -> Result<StoredEntry, StoreError> {
    Ok(StoredEntry {
        index: row.try_get::<i64, _>("idx")? as u64,
        event_id: row.try_get("event_id")?,
        leaf: row.try_get("leaf")?,
        leaf_hash: row.try_get("leaf_hash")?,
    })
}

fn checkpoint_from(tenant_id: &str, row: &sqlx::any::AnyRow) -> Result<SignedCheckpoint, StoreError> {
    let root: String = row.try_get("root_hash")?;
    Ok(SignedCheckpoint {
        body: CheckpointBody {
            tenant_id: tenant_id.to_owned(),
            tree_size: row.try_get::<i64, _>("tree_size")? as u64,
            root_hash: decode_hash(&root)
                .ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant_id}: malformed checkpoint root")))?,
            timestamp: row.try_get("signed_at")?,
        },
        signature: row.try_get("signature")?,
        key_id: row.try_get("key_id")?,
    })
}

/// A 32-byte hash from its hex form.
pub fn decode_hash(text: &str) -> Option<Hash> {
    hex::decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `n`th decision of `tenant`, as healthquantum records one.
    pub(crate) fn leaf(tenant: &str, n: u32) -> Leaf {
        Leaf {
            event_id: format!("00000000-0000-7000-8000-{n:012}"),
            tenant_id: tenant.into(),
            service: "healthquantum".into(),
            kind: "decision".into(),
            action: "health.AssessRisk".into(),
            actor: "key-1".into(),
            subject: format!("patient:{n}"),
            details: serde_json::json!({"model": "breast-cancer", "n": n}),
            occurred_at: "2026-11-29T10:00:00.000000Z".into(),
        }
    }

    async fn store(dir: &tempfile::TempDir) -> LogStore {
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        LogStore::new(database, CheckpointSigner::generate())
    }

    #[tokio::test]
    async fn a_checkpoint_an_earlier_key_signed_is_unverified_and_its_key_found_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        let before = LogStore::new(database.clone(), CheckpointSigner::generate());
        before.record_signing_key().await.unwrap();
        before.append(vec![leaf("a", 1), leaf("a", 2)]).await.unwrap();
        // The key is changed; tenant `a` has made nothing since.
        let after = LogStore::new(database.clone(), CheckpointSigner::generate());
        after.record_signing_key().await.unwrap();
        let latest = after.latest_checkpoint("a").await.unwrap();
        let earlier = latest.clone();
        assert_eq!(latest.key_id, before.signer().key_id());
        // Not verified with a key the database holds, which whoever rewrites the log could store,
        // and no entry blamed.
        let verification = after.verify("a", &latest).await.unwrap();
        assert!(!verification.verified() && verification.first_bad_index.is_none(), "{verification:?}");
        assert!(verification.reason.contains("neither this deployment's key"), "{verification:?}");
        assert!(verification.reason.ends_with("; the entries stored make the root it holds"), "{verification:?}");
        // With the earlier key trusted from configuration, it verifies.
        let trusting =
            LogStore::new(database.clone(), after.signer().clone()).trusting(vec![before.signer().public_key()]);
        assert!(trusting.verify("a", &latest).await.unwrap().verified());
        assert_eq!(
            after.verifier(&latest.key_id).await.unwrap().unwrap().to_base64(),
            before.signer().public_key().to_base64()
        );
        // Appends go on under the new key, whose checkpoints verify.
        after.append(vec![leaf("a", 3)]).await.unwrap();
        let latest = after.latest_checkpoint("a").await.unwrap();
        assert_eq!((latest.body.tree_size, latest.key_id.clone()), (3, after.signer().key_id()));
        assert!(after.verify("a", &latest).await.unwrap().verified());

        // What the entries show of themselves is said all the same: they make the root it holds,
        // or one was changed, its text or with its hash, or one is gone.
        let pool = database.pool();
        let change = |sql: &'static str| async move { sqlx::query(sql).execute(pool).await.unwrap() };
        change(
            "UPDATE audit_entries SET leaf = REPLACE(leaf, 'AssessRisk', 'Nothing') WHERE tenant_id = 'a' AND idx = 1",
        )
        .await;
        let verification = after.verify("a", &earlier).await.unwrap();
        assert_eq!(verification.first_bad_index, Some(1), "{verification:?}");
        assert!(
            verification.reason.ends_with("; entry 1's text is not what its stored hash was made of"),
            "{verification:?}"
        );
        let rehashed = merkle::leaf_hash(
            sqlx::query_scalar::<_, String>("SELECT leaf FROM audit_entries WHERE tenant_id = 'a' AND idx = 1")
                .fetch_one(pool)
                .await
                .unwrap()
                .as_bytes(),
        );
        sqlx::query("UPDATE audit_entries SET leaf_hash = $1 WHERE tenant_id = 'a' AND idx = 1")
            .bind(hex::encode(rehashed))
            .execute(pool)
            .await
            .unwrap();
        let verification = after.verify("a", &earlier).await.unwrap();
        assert!(!verification.verified() && verification.first_bad_index.is_none(), "{verification:?}");
        assert!(
            verification.reason.ends_with("; the entries stored do not make the root it holds"),
            "{verification:?}"
        );
        change(
            "UPDATE audit_entries SET leaf = REPLACE(leaf, 'Nothing', 'AssessRisk') WHERE tenant_id = 'a' AND idx = 1",
        )
        .await;
        change("DELETE FROM audit_entries WHERE tenant_id = 'a' AND idx = 1").await;
        let verification = after.verify("a", &earlier).await.unwrap();
        assert_eq!(verification.first_bad_index, Some(1), "{verification:?}");
        assert!(verification.reason.ends_with("; entry 1, which it covers, is missing"), "{verification:?}");
    }

    /// A log cut back below a checkpoint an earlier key signed, before the current key signed
    /// anything for the tenant: nothing is appended over the cut, and the log stays damaged.
    #[tokio::test]
    async fn a_log_cut_below_an_earlier_keys_checkpoint_takes_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        let before = LogStore::new(database.clone(), CheckpointSigner::generate());
        before.append(vec![leaf("a", 1), leaf("a", 2), leaf("a", 3)]).await.unwrap();
        sqlx::query("DELETE FROM audit_entries WHERE idx = 2").execute(database.pool()).await.unwrap();
        let after = LogStore::new(database.clone(), CheckpointSigner::generate());
        let outcome = after.append_each(vec![leaf("a", 4)]).await.unwrap();
        assert_eq!(outcome.appended, 0, "{outcome:?}");
        assert!(outcome.held_because.is_some_and(|reason| reason.contains("covers 3 entries but 2 are stored")));
        assert_eq!(after.latest_checkpoint("a").await.unwrap().body.tree_size, 3);
        assert!(after.entry_with_proof("a", 0).await.is_err(), "still damaged: no proof");
    }

    /// Entry `index` of `tenant_id` rewritten, its stored hash with it, as someone able to write
    /// the database would.
    async fn rewrite_entry(database: &Database, tenant_id: &str, index: i64) {
        let pool = database.pool();
        let leaf: String = sqlx::query_scalar("SELECT leaf FROM audit_entries WHERE tenant_id = $1 AND idx = $2")
            .bind(tenant_id)
            .bind(index)
            .fetch_one(pool)
            .await
            .unwrap();
        let leaf = leaf.replace("AssessRisk", "Nothing");
        sqlx::query("UPDATE audit_entries SET leaf = $3, leaf_hash = $4 WHERE tenant_id = $1 AND idx = $2")
            .bind(tenant_id)
            .bind(index)
            .bind(&leaf)
            .bind(hex::encode(merkle::leaf_hash(leaf.as_bytes())))
            .execute(pool)
            .await
            .unwrap();
    }

    /// A log changed with its hashes and then run under another signing key (one made anew, the
    /// key file deleted, or a new one with the old trusted): nothing is signed over the change,
    /// and a checkpoint the new key signed over it anyway does not make the log verify.
    #[tokio::test]
    async fn a_changed_log_is_not_signed_over_by_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        let before = LogStore::new(database.clone(), CheckpointSigner::generate());
        before.append(vec![leaf("a", 1), leaf("a", 2)]).await.unwrap();
        before.append(vec![leaf("a", 3)]).await.unwrap();
        rewrite_entry(&database, "a", 1).await;

        let anew = LogStore::new(database.clone(), CheckpointSigner::generate());
        let outcome = anew.append_each(vec![leaf("a", 4)]).await.unwrap();
        assert_eq!(outcome.appended, 0, "{outcome:?}");
        let reason = outcome.held_because.unwrap();
        assert!(reason.contains("a key this deployment does not hold"), "{reason}");
        let trusting =
            LogStore::new(database.clone(), anew.signer().clone()).trusting(vec![before.signer().public_key()]);
        let outcome = trusting.append_each(vec![leaf("a", 4)]).await.unwrap();
        assert_eq!(outcome.appended, 0, "{outcome:?}");
        let reason = outcome.held_because.unwrap();
        assert!(
            reason
                .contains(&format!("does not match the checkpoint key {} signed at size 3", before.signer().key_id())),
            "{reason}"
        );
        assert_eq!(trusting.latest_checkpoint("a").await.unwrap().body.tree_size, 3, "nothing signed");

        // A checkpoint of the new key over the changed log and one more entry, as a process that
        // did not look back would have signed: it matches the log, the earlier key's do not.
        let added = leaf("a", 4).to_text();
        sqlx::query(
            "INSERT INTO audit_entries (tenant_id, idx, event_id, leaf, leaf_hash) VALUES ('a', 3, $1, $2, $3)",
        )
        .bind(leaf("a", 4).event_id)
        .bind(&added)
        .bind(hex::encode(merkle::leaf_hash(added.as_bytes())))
        .execute(database.pool())
        .await
        .unwrap();
        let mut tree = Tree::new();
        let mut connection = database.pool().acquire().await.unwrap();
        extend_tree(&mut connection, "a", &mut tree).await.unwrap();
        let body = CheckpointBody {
            tenant_id: "a".into(),
            tree_size: 4,
            root_hash: tree.root(),
            timestamp: "2026-11-29T11:00:00.000000Z".into(),
        };
        sqlx::query(
            "INSERT INTO audit_checkpoints (tenant_id, tree_size, root_hash, signed_at, signature, key_id) \
             VALUES ('a', 4, $1, $2, $3, $4)",
        )
        .bind(hex::encode(body.root_hash))
        .bind(&body.timestamp)
        .bind(anew.signer().sign(&body))
        .bind(anew.signer().key_id())
        .execute(database.pool())
        .await
        .unwrap();
        let fresh = LogStore::new(database.clone(), anew.signer().clone()).trusting(vec![before.signer().public_key()]);
        let latest = fresh.latest_checkpoint("a").await.unwrap();
        assert_eq!(latest.key_id, anew.signer().key_id());
        let verification = fresh.verify("a", &latest).await.unwrap();
        assert!(!verification.verified(), "{verification:?}");
        assert_eq!(verification.first_bad_index, Some(0), "{verification:?}");
        assert!(verification.reason.contains("does not match the checkpoint signed at size 2"), "{verification:?}");
        assert_eq!(fresh.append_each(vec![leaf("a", 5)]).await.unwrap().appended, 0, "nor appended to");
        // Put back, it verifies and goes on.
        let put_back =
            LogStore::new(database.clone(), anew.signer().clone()).trusting(vec![before.signer().public_key()]);
        let text = sqlx::query_scalar::<_, String>("SELECT leaf FROM audit_entries WHERE tenant_id = 'a' AND idx = 1")
            .fetch_one(database.pool())
            .await
            .unwrap()
            .replace("Nothing", "AssessRisk");
        sqlx::query("UPDATE audit_entries SET leaf = $1, leaf_hash = $2 WHERE tenant_id = 'a' AND idx = 1")
            .bind(&text)
            .bind(hex::encode(merkle::leaf_hash(text.as_bytes())))
            .execute(database.pool())
            .await
            .unwrap();
        let mut tree = Tree::new();
        extend_tree(&mut connection, "a", &mut tree).await.unwrap();
        let body = CheckpointBody { root_hash: tree.root(), ..body };
        sqlx::query(
            "UPDATE audit_checkpoints SET root_hash = $1, signature = $2 WHERE tenant_id = 'a' AND tree_size = 4",
        )
        .bind(hex::encode(body.root_hash))
        .bind(anew.signer().sign(&body))
        .execute(database.pool())
        .await
        .unwrap();
        assert!(put_back.verify("a", &put_back.latest_checkpoint("a").await.unwrap()).await.unwrap().verified());
        assert_eq!(put_back.append_each(vec![leaf("a", 5)]).await.unwrap().appended, 1);
    }

    /// Swaps the entries of `tenant_id` at `first` and `second` in the database, hashes and all.
    async fn swap_entries(log: &LogStore, tenant_id: &str, first: i64, second: i64) {
        for (from, to) in [(first, first + 1000), (second, first), (first + 1000, second)] {
            sqlx::query("UPDATE audit_entries SET idx = $3 WHERE tenant_id = $1 AND idx = $2")
                .bind(tenant_id)
                .bind(from)
                .bind(to)
                .execute(log.database.pool())
                .await
                .unwrap();
        }
    }

    /// Two entries of one batch swapped, their hashes with them: the tree held since they were
    /// appended names the first of them; after a restart, which loads the tree from the rows as they
    /// are, the checkpoints place the change in its batch.
    #[tokio::test]
    async fn entries_swapped_with_their_hashes_are_named_while_the_appended_tree_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let log = store(&dir).await;
        log.append(vec![leaf("a", 1), leaf("a", 2)]).await.unwrap();
        log.append((3..=6).map(|n| leaf("a", n)).collect()).await.unwrap();
        log.append(vec![leaf("a", 7)]).await.unwrap();
        swap_entries(&log, "a", 3, 5).await;
        let verification = log.verify("a", &log.latest_checkpoint("a").await.unwrap()).await.unwrap();
        assert_eq!(verification.first_bad_index, Some(3), "{verification:?}");
        assert!(verification.reason.contains("between index 2 and 5"), "{verification:?}");
        let restarted = LogStore::new(log.database.clone(), log.signer().clone());
        let verification = restarted.verify("a", &restarted.latest_checkpoint("a").await.unwrap()).await.unwrap();
        assert_eq!(verification.first_bad_index, Some(2), "{verification:?}");
    }

    /// A start checks every stored log, not only those of tenants that log again: the changed one
    /// is found, and none is kept loaded.
    #[tokio::test]
    async fn a_start_finds_a_log_changed_while_no_process_ran() {
        let dir = tempfile::tempdir().unwrap();
        let log = store(&dir).await;
        log.append((1..=4).map(|n| leaf("a", n)).chain((1..=4).map(|n| leaf("b", n))).collect()).await.unwrap();
        let restarted = LogStore::new(log.database.clone(), log.signer().clone());
        assert_eq!(restarted.check_stored().await.unwrap(), 0);
        swap_entries(&log, "b", 1, 2).await;
        let restarted = LogStore::new(log.database.clone(), log.signer().clone());
        assert_eq!(restarted.check_stored().await.unwrap(), 1);
        assert!(restarted.tenants.lock().unwrap().is_empty(), "nothing kept loaded");
        let outcome = restarted.append_each(vec![leaf("b", 5)]).await.unwrap();
        assert_eq!(outcome.appended, 0, "{outcome:?}");
        assert_eq!(restarted.append_each(vec![leaf("a", 5)]).await.unwrap().appended, 1);
    }

    /// An entry deleted and those after it renumbered to close the gap: with a checkpoint signed
    /// along the way the change is placed after it; with only one, over the whole log, no entry
    /// is said to be the missing one when any of them may be.
    #[tokio::test]
    async fn a_deleted_entry_with_the_rest_renumbered_is_placed_by_the_checkpoints_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let log = store(&dir).await;
        log.append(vec![leaf("a", 1), leaf("a", 2)]).await.unwrap();
        log.append((3..=6).map(|n| leaf("a", n)).collect()).await.unwrap();
        log.append((1..=6).map(|n| leaf("b", n)).collect()).await.unwrap();
        for tenant in ["a", "b"] {
            let pool = log.database.pool();
            sqlx::query("DELETE FROM audit_entries WHERE tenant_id = $1 AND idx = 3")
                .bind(tenant)
                .execute(pool)
                .await
                .unwrap();
            sqlx::query("UPDATE audit_entries SET idx = idx + 1000 WHERE tenant_id = $1 AND idx > 3")
                .bind(tenant)
                .execute(pool)
                .await
                .unwrap();
            sqlx::query("UPDATE audit_entries SET idx = idx - 1001 WHERE tenant_id = $1 AND idx > 1000")
                .bind(tenant)
                .execute(pool)
                .await
                .unwrap();
        }
        let fresh = LogStore::new(log.database.clone(), log.signer().clone());
        let verification = fresh.verify("a", &fresh.latest_checkpoint("a").await.unwrap()).await.unwrap();
        assert_eq!(verification.first_bad_index, Some(2), "{verification:?}");
        assert!(verification.reason.contains("from index 2 to 5 is missing or does not match"), "{verification:?}");
        let verification = fresh.verify("b", &fresh.latest_checkpoint("b").await.unwrap()).await.unwrap();
        assert_eq!(verification.first_bad_index, Some(0), "{verification:?}");
        assert!(verification.reason.contains("holds 5 of the 6 entries signed"), "{verification:?}");
        // The last entry deleted is the one missing.
        log.append(vec![leaf("c", 1)]).await.unwrap();
        log.append(vec![leaf("c", 2)]).await.unwrap();
        let pool = log.database.pool();
        sqlx::query("DELETE FROM audit_entries WHERE tenant_id = 'c' AND idx = 1").execute(pool).await.unwrap();
        let fresh = LogStore::new(log.database.clone(), log.signer().clone());
        let verification = fresh.verify("c", &fresh.latest_checkpoint("c").await.unwrap()).await.unwrap();
        assert_eq!((verification.first_bad_index, verification.reason.as_str()), (Some(1), "entry 1 is missing"));
    }

    /// Rows changed or deleted under a running process: found by the next recheck, without a
    /// restart; until then the process appends from the tree it holds.
    #[tokio::test]
    async fn a_recheck_finds_rows_changed_or_deleted_under_a_running_process() {
        let dir = tempfile::tempdir().unwrap();
        let log = store(&dir).await;
        log.append(vec![leaf("a", 1), leaf("a", 2), leaf("b", 1), leaf("b", 2)]).await.unwrap();
        assert_eq!(log.recheck().await, 0);
        assert!(log.append(vec![leaf("a", 3), leaf("b", 3)]).await.is_ok(), "sound logs go on");
        let pool = log.database.pool();
        sqlx::query(
            "UPDATE audit_entries SET leaf = REPLACE(leaf, 'AssessRisk', 'Nothing') WHERE tenant_id = 'a' AND idx = 1",
        )
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("DELETE FROM audit_entries WHERE tenant_id = 'b' AND idx = 1").execute(pool).await.unwrap();
        assert!(log.entry_with_proof("b", 2).await.is_ok(), "the tree held in memory, before the recheck");
        assert_eq!(log.recheck().await, 2);
        let outcome = log.append_each(vec![leaf("a", 4), leaf("b", 4)]).await.unwrap();
        assert_eq!((outcome.appended, outcome.held.len()), (0, 2), "{outcome:?}");
        assert!(log.entry_with_proof("b", 2).await.is_err(), "no proof from a log missing an entry");
        // Put back, the logs go on.
        sqlx::query(
            "UPDATE audit_entries SET leaf = REPLACE(leaf, 'Nothing', 'AssessRisk') WHERE tenant_id = 'a' AND idx = 1",
        )
        .execute(pool)
        .await
        .unwrap();
        assert_eq!(log.recheck().await, 1, "b still misses its entry");
        assert_eq!(log.append_each(vec![leaf("a", 4)]).await.unwrap().appended, 1);
    }

    /// An entry's event id changed beside its text (the id a review finds it by, and a retried
    /// event is known by) is found as a change of its text is.
    #[tokio::test]
    async fn an_event_id_changed_beside_its_entrys_text_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let log = store(&dir).await;
        log.append(vec![leaf("a", 1), leaf("a", 2)]).await.unwrap();
        assert_eq!(log.recheck().await, 0);
        let checkpoint = log.latest_checkpoint("a").await.unwrap();
        let forged = "UPDATE audit_entries SET event_id = '00000000-0000-7000-8000-000000000009' \
                      WHERE tenant_id = 'a' AND idx = 1";
        sqlx::query(forged).execute(log.database.pool()).await.unwrap();
        assert_eq!(log.recheck().await, 1);
        let outcome = log.append_each(vec![leaf("a", 3)]).await.unwrap();
        assert_eq!((outcome.appended, outcome.held.len()), (0, 1), "{outcome:?}");
        let fresh = LogStore::new(log.database.clone(), log.signer().clone());
        assert!(fresh.append(vec![leaf("a", 3)]).await.is_err(), "nor after a restart");
        // Verifying the log names the entry, though its text still makes the signed root.
        let verification = log.verify("a", &checkpoint).await.unwrap();
        assert_eq!(
            (verification.first_bad_index, verification.reason.as_str()),
            (Some(1), "entry 1's event id is not the one its signed text holds"),
            "{verification:?}"
        );
        assert!(!verification.verified());
    }

    /// A checkpoint whose signature no longer verifies stops the log, and is named as the damage,
    /// not the entries, which still make its root.
    #[tokio::test]
    async fn a_checkpoint_whose_signature_fails_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let log = store(&dir).await;
        log.append(vec![leaf("a", 1), leaf("a", 2)]).await.unwrap();
        // The checkpoint's `column` set to `value`, then what a process started afresh answers an append.
        let refusal_with = async |column: &str, value: String| {
            let altered = format!("UPDATE audit_checkpoints SET {column} = $1 WHERE tenant_id = 'a'");
            sqlx::query(sqlx::AssertSqlSafe(altered)).bind(value).execute(log.database.pool()).await.unwrap();
            let fresh = LogStore::new(log.database.clone(), log.signer().clone());
            format!("{:?}", fresh.append(vec![leaf("a", 3)]).await.unwrap_err())
        };
        let signature = log.latest_checkpoint("a").await.unwrap().signature;
        let forged =
            if signature.starts_with('A') { signature.replacen('A', "B", 1) } else { format!("A{}", &signature[1..]) };
        let refused = refusal_with("signature", forged).await;
        assert!(refused.contains("the signature of the checkpoint at size 2 does not verify"), "{refused}");
        assert!(!refused.contains("root"), "the entries still make its root: {refused}");
        // A root changed in the checkpoint breaks both: either may have been altered.
        let refused = refusal_with("root_hash", "00".repeat(32)).await;
        assert!(refused.contains("does not match the root it names: the checkpoint or the entries"), "{refused}");
    }

    #[tokio::test]
    async fn an_event_seen_twice_is_stored_once_and_tenants_have_their_own_trees() {
        let dir = tempfile::tempdir().unwrap();
        let log = store(&dir).await;
        let first = log.append(vec![leaf("a", 1), leaf("a", 2), leaf("b", 1)]).await.unwrap();
        assert_eq!(first, AppendOutcome { appended: 3, duplicates: 0, ..AppendOutcome::default() });
        let again = log.append(vec![leaf("a", 2), leaf("a", 3), leaf("a", 3)]).await.unwrap();
        assert_eq!(again, AppendOutcome { appended: 1, duplicates: 2, ..AppendOutcome::default() });
        assert_eq!(log.latest_checkpoint("a").await.unwrap().body.tree_size, 3);
        assert_eq!(log.latest_checkpoint("b").await.unwrap().body.tree_size, 1);
        assert_eq!(log.latest_checkpoint("c").await.unwrap().body.tree_size, 0);
    }

    /// A verification is of the checkpoint it is given, whatever was appended since: a report's
    /// verdict is about the root it shows.
    #[tokio::test]
    async fn a_verification_checks_the_checkpoint_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let log = store(&dir).await;
        log.append(vec![leaf("a", 1), leaf("a", 2)]).await.unwrap();
        let shown = log.latest_checkpoint("a").await.unwrap();
        log.append(vec![leaf("a", 3), leaf("a", 4), leaf("a", 5)]).await.unwrap();
        let verification = log.verify("a", &shown).await.unwrap();
        assert_eq!((verification.tree_size, verification.verified()), (2, true), "{}", verification.reason);
        let latest = log.latest_checkpoint("a").await.unwrap();
        let verification = log.verify("a", &latest).await.unwrap();
        assert_eq!((verification.tree_size, verification.verified()), (5, true), "{}", verification.reason);
    }

    #[tokio::test]
    async fn replicas_over_one_database_see_each_others_entries_and_append_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = store(&dir).await;
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        let second = LogStore::new(database, first.signer().clone());
        first.append(vec![leaf("a", 1), leaf("a", 2)]).await.unwrap();
        assert_eq!(second.latest_checkpoint("a").await.unwrap().body.tree_size, 2);
        first.append(vec![leaf("a", 3)]).await.unwrap();
        // The second replica serves what the first appended since it last looked.
        let latest = second.latest_checkpoint("a").await.unwrap();
        assert_eq!(latest.body.tree_size, 3);
        let (entry, checkpoint, proof) = second.entry_with_proof("a", 2).await.unwrap();
        let hash = merkle::leaf_hash(entry.leaf.as_bytes());
        merkle::verify_inclusion(&hash, 2, checkpoint.body.tree_size, &proof, &checkpoint.body.root_hash).unwrap();
        // And appends after it; the first then serves that.
        second.append(vec![leaf("a", 4)]).await.unwrap();
        assert_eq!(first.latest_checkpoint("a").await.unwrap().body.tree_size, 4);
        let (from_root, to_root, proof) = first.consistency("a", 2, 4).await.unwrap();
        merkle::verify_consistency(2, 4, &from_root, &to_root, &proof).unwrap();
    }

    #[tokio::test]
    async fn proofs_verify_against_the_signed_root_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let signer = {
            let log = store(&dir).await;
            for n in 0..10 {
                log.append(vec![leaf("a", n)]).await.unwrap();
            }
            log.signer().clone()
        };
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let log = LogStore::new(Database::connect(&url, &crate::MIGRATOR).await.unwrap(), signer.clone());
        let (entry, checkpoint, proof) = log.entry_with_proof("a", 4).await.unwrap();
        let verified = signer.public_key().verify(&checkpoint.body.signed_text(), &checkpoint.signature).unwrap();
        assert_eq!(verified.tree_size, 10);
        let hash = merkle::leaf_hash(entry.leaf.as_bytes());
        merkle::verify_inclusion(&hash, 4, 10, &proof, &verified.root_hash).unwrap();
        let at_five = log.checkpoint_at("a", 5).await.unwrap();
        let (from_root, to_root, proof) = log.consistency("a", 5, 10).await.unwrap();
        assert_eq!(from_root, at_five.body.root_hash);
        merkle::verify_consistency(5, 10, &at_five.body.root_hash, &to_root, &proof).unwrap();
    }
}
