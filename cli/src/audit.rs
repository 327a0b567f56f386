//! `aigronova audit verify`: checks a tenant's audit log, as a gateway serves it, against the
//! checkpoint signing key. Nothing the server says is trusted unless it is proven: the
//! checkpoint by its Ed25519 signature, every entry by hashing its leaf text into the Merkle
//! tree again (RFC 6962) and comparing the root with the signed one.

use std::time::Duration;

use aigronova_ai_governance::{
    checkpoint::{CheckpointBody, CheckpointVerifier},
    log::decode_hash,
    merkle::{self, Hash},
};
use anyhow::{Context, bail};
use serde_json::Value;

/// Entries fetched per request when reading the whole log.
const PAGE_SIZE: u32 = 1000;

/// What to verify, and with what.
#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// Base URL of the gateway, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// API key with the governance:read scope; the tenant of the key is the log verified.
    #[arg(long, env = "AIGRONOVA_API_KEY", hide_env_values = true)]
    pub key: String,
    /// The checkpoint public key (base64 Ed25519), obtained out of band. Without it the key the
    /// gateway serves is used, which proves consistency but not who signed.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Verify only this entry's inclusion proof instead of the whole log.
    #[arg(long, conflicts_with = "checkpoint")]
    pub entry: Option<u64>,
    /// A checkpoint seen before, as `SIZE:ROOT` (its `treeSize` and hex `rootHash`): the log
    /// verified must still begin with the tree it signed. A log cut back or rewritten together
    /// with the checkpoints signed over it, which verifies on its own, fails this.
    #[arg(long, value_name = "SIZE:ROOT", value_parser = parse_pinned)]
    pub checkpoint: Option<Pinned>,
    /// The tenant id whose log this must be (the key's tenant): the signed checkpoint names its
    /// tenant, and one naming another fails the verification (exit 2). Without it, the tenant the
    /// checkpoint names is printed, to compare with the key's.
    #[arg(long, value_parser = parse_tenant)]
    pub tenant: Option<String>,
}

/// Reads `--tenant`: a tenant id, a UUID in any spelling, as the API takes it.
pub fn parse_tenant(text: &str) -> Result<String, String> {
    uuid::Uuid::try_parse(text.trim())
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| format!("{text:?} is not a tenant id (a UUID)"))
}

/// A checkpoint a verifier kept: its tree size and root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pinned {
    pub tree_size: u64,
    pub root_hash: Hash,
}

/// Reads `--checkpoint`'s `SIZE:ROOT`.
pub fn parse_pinned(text: &str) -> Result<Pinned, String> {
    let wrong = || format!("{text:?} is not SIZE:ROOT, a tree size and a 64-digit hex root hash");
    let (size, root) = text.split_once(':').ok_or_else(wrong)?;
    let tree_size = size.parse().map_err(|_| wrong())?;
    if tree_size == 0 {
        return Err(format!("{text:?} pins an empty log, which every log extends: pin a size of 1 or more"));
    }
    let root_hash = decode_hash(root).ok_or_else(wrong)?;
    Ok(Pinned { tree_size, root_hash })
}

/// The outcome of a verification that could be carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The log (or the entry) matches the signed checkpoint, of the tenant it names.
    Verified { tenant_id: String, tree_size: u64, root_hash: String, key_id: String },
    /// The first index whose entry does not match what was signed.
    Tampered { index: u64, reason: String },
}

/// Runs the verification; `Err` when it cannot be carried out (unreachable gateway, refused
/// key, a checkpoint whose signature does not verify).
pub async fn verify(args: &VerifyArgs) -> anyhow::Result<Verdict> {
    aigronova_gateway::install_crypto_provider();
    let client = Client {
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
        base: args.url.trim_end_matches('/').to_owned(),
        key: args.key.clone(),
        waited: std::sync::Mutex::new(Duration::ZERO),
    };
    let public_key = match &args.public_key {
        Some(key) => key.clone(),
        None => {
            let served = client.get("/v1/governance/audit/public-key").await?;
            let key = text(&served, "publicKey")?;
            eprintln!(
                "note: using the public key the gateway serves (key id {}); pass --public-key to pin it",
                text(&served, "keyId").unwrap_or_default()
            );
            key
        }
    };
    let verifier = CheckpointVerifier::from_base64(&public_key).context("--public-key")?;

    if let Some(index) = args.entry {
        let path = format!("/v1/governance/audit/entries/{index}");
        let served = match client.get(&path).await {
            Ok(served) => served,
            // Not found: deleted if it is inside a tree the key signed. Asked again after the
            // checkpoint is read, so that an entry logged in between is not taken for a deleted one.
            Err(error) if is_not_found(&error) => {
                let served = client.get("/v1/governance/audit/checkpoint").await?;
                let checkpoint = signed_checkpoint(&verifier, &served, args.tenant.as_deref())?;
                match client.get(&path).await {
                    Ok(served) => served,
                    Err(error) if is_not_found(&error) && index < checkpoint.tree_size => {
                        return Ok(Verdict::Tampered {
                            index,
                            reason: format!(
                                "entry {index} is missing, in the signed tree of size {}",
                                checkpoint.tree_size
                            ),
                        });
                    }
                    Err(error) => return Err(error),
                }
            }
            // A server whose stored log is damaged makes no proof: the whole log, verified
            // entry by entry against what was signed, says where it fails.
            Err(error) if is_damaged(&error) => {
                return match verify_log(&client, &verifier, None, args.tenant.as_deref()).await? {
                    Verdict::Tampered { index: bad, reason } => Ok(Verdict::Tampered {
                        index: bad,
                        reason: format!(
                            "the server makes no proof of entry {index} from its damaged log, which fails at entry \
                             {bad}: {reason}"
                        ),
                    }),
                    Verdict::Verified { .. } => Err(error),
                };
            }
            Err(error) => return Err(error),
        };
        let checkpoint = signed_checkpoint(&verifier, &served["checkpoint"], args.tenant.as_deref())?;
        let leaf = text(&served["entry"], "leaf")?;
        let proof = hashes(&served["inclusionProof"])?;
        return Ok(
            match merkle::verify_inclusion(
                &merkle::leaf_hash(leaf.as_bytes()),
                index,
                checkpoint.tree_size,
                &proof,
                &checkpoint.root_hash,
            ) {
                Ok(()) => verified(&checkpoint, &verifier),
                // The proof is made from the stored log: a change anywhere it passes through fails it too.
                Err(error) => Verdict::Tampered {
                    index,
                    reason: format!(
                        "inclusion proof fails ({error}): this entry, or another entry the proof's hashes cover, \
                         is not as signed; verify the whole log to find the first one changed"
                    ),
                },
            },
        );
    }

    verify_log(&client, &verifier, args.checkpoint.as_ref(), args.tenant.as_deref()).await
}

/// Verifies the whole log against its latest checkpoint, and that it still begins with the tree
/// of `pinned` when given.
async fn verify_log(
    client: &Client,
    verifier: &CheckpointVerifier,
    pinned: Option<&Pinned>,
    tenant: Option<&str>,
) -> anyhow::Result<Verdict> {
    let checkpoint = signed_checkpoint(verifier, &client.get("/v1/governance/audit/checkpoint").await?, tenant)?;
    let mut leaves: Vec<Hash> = Vec::new();
    let mut served_hashes: Vec<String> = Vec::new();
    let mut start = Some(0u64);
    while let Some(from) = start.filter(|from| *from < checkpoint.tree_size) {
        let page = client.get(&format!("/v1/governance/audit/entries?start={from}&pageSize={PAGE_SIZE}")).await?;
        for entry in page["entries"].as_array().into_iter().flatten() {
            let index = number(entry, "index").unwrap_or(0);
            if index >= checkpoint.tree_size {
                break;
            }
            let expected = leaves.len() as u64;
            if index != expected {
                return Ok(Verdict::Tampered {
                    index: expected,
                    reason: format!("entry {expected} is missing (the next one served is {index})"),
                });
            }
            leaves.push(merkle::leaf_hash(text(entry, "leaf")?.as_bytes()));
            served_hashes.push(text(entry, "leafHash").unwrap_or_default());
        }
        // A next page that does not move on ends the list (what is missing is then reported).
        start = number(&page, "nextStart").filter(|next| *next > from);
    }
    // Fewer entries than were signed: one was deleted, and those after it perhaps renumbered, so
    // the first that differs is searched for as for a change; past all of them, the first missing.
    let held = leaves.len() as u64;
    let short = held < checkpoint.tree_size;
    if !short && merkle::root_of(&leaves) == checkpoint.root_hash {
        return Ok(match pinned {
            Some(pinned) => pinned_verdict(pinned, &leaves).unwrap_or_else(|| verified(&checkpoint, verifier)),
            None => verified(&checkpoint, verifier),
        });
    }
    // The root differs: find the first entry that does not match what was signed.
    for (index, leaf) in leaves.iter().enumerate() {
        if served_hashes[index] != hex::encode(leaf) {
            return Ok(Verdict::Tampered {
                index: index as u64,
                reason: "the entry's text does not hash to the leaf hash it was logged with".into(),
            });
        }
    }
    // Entries and their hashes changed together: the checkpoints signed along the way tell which
    // batch the first change is in, and the inclusion proofs, when the server still computes them
    // from the tree it signed, which entry of it.
    // Only what the key signed for this tenant, in rising sizes up to the latest, counts; a page
    // token that does not move on ends the list.
    let mut signed: Vec<(u64, Hash)> = Vec::new();
    let mut after = Some(0u64);
    while let Some(from) = after.filter(|from| *from < checkpoint.tree_size) {
        let page = client.get(&format!("/v1/governance/audit/checkpoints?after={from}&pageSize=1000")).await?;
        for served in page["checkpoints"].as_array().into_iter().flatten() {
            let Ok(body) = signed_checkpoint(verifier, served, None) else { continue };
            let rising = signed.last().is_none_or(|(size, _)| *size < body.tree_size);
            if body.tenant_id == checkpoint.tenant_id && rising && body.tree_size <= checkpoint.tree_size {
                signed.push((body.tree_size, body.root_hash));
            }
        }
        after = number(&page, "nextAfter").filter(|next| *next > from);
    }
    let last_signed_held = signed.iter().map(|(size, _)| *size).filter(|size| *size <= held).max();
    let unmatched = merkle::first_unmatched(&leaves, signed);
    let (from, to) = match unmatched {
        Some(bracket) => bracket,
        // Every signed tree the entries reach matches: the change is past the last of them.
        None if short => (last_signed_held.unwrap_or(0), held),
        None => (0, checkpoint.tree_size),
    };
    for index in from..to {
        // A server whose stored log is damaged (an entry missing) makes no proof: what the
        // checkpoints say is then what can be said, the bracket of a change, or that the entries
        // after the last signed tree they reach are fewer than signed.
        let Ok(served) = client.get(&format!("/v1/governance/audit/entries/{index}")).await else {
            return Ok(match (unmatched, short) {
                (None, true) => {
                    let reached = last_signed_held.unwrap_or(0);
                    let (index, reason) =
                        aigronova_ai_governance::log::fewer_than_signed(reached, held, checkpoint.tree_size);
                    Verdict::Tampered {
                        index,
                        reason: format!("{reason} (the server makes no proof from its damaged log)"),
                    }
                }
                _ => Verdict::Tampered { index: from, reason: aigronova_ai_governance::log::changed_between(from, to) },
            });
        };
        let proof = hashes(&served["inclusionProof"])?;
        let leaf = &leaves[index as usize];
        if merkle::verify_inclusion(leaf, index, checkpoint.tree_size, &proof, &checkpoint.root_hash).is_err() {
            let reason = match to - from {
                1 => "the entry is not included in the signed tree".to_owned(),
                _ => format!(
                    "the entry is not included in the signed tree (the checkpoints place the first change \
                     between index {from} and {})",
                    to - 1
                ),
            };
            return Ok(Verdict::Tampered { index, reason });
        }
    }
    if short {
        return Ok(Verdict::Tampered { index: held, reason: format!("entry {held} is missing") });
    }
    Ok(Verdict::Tampered { index: from, reason: aigronova_ai_governance::log::changed_between(from, to) })
}

/// Prints the verdict and returns the exit code: 0 verified, 1 tampered, 2 not verifiable.
pub async fn run(args: &VerifyArgs) -> u8 {
    // A key that is no key is a wrong argument (64), not a log that cannot be verified (2).
    if let Some(Err(error)) = args.public_key.as_deref().map(CheckpointVerifier::from_base64) {
        eprintln!("aigronova audit verify: --public-key: {error}");
        return 64;
    }
    let url = reqwest::Url::parse(&args.url);
    // The API's paths are added to the URL: a query or fragment would end up before them, and
    // credentials in it would be sent (and printed) where the key is the credential.
    let usable = url.is_ok_and(|url| {
        ["http", "https"].contains(&url.scheme())
            && url.host_str().is_some()
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none()
    });
    if !usable {
        eprintln!(
            "aigronova audit verify: --url: {:?} is not the gateway's base URL: http:// or https://, a host, and \
             no user, query or fragment",
            aigronova_platform::config::redacted(&args.url)
        );
        return 64;
    }
    match verify(args).await {
        Ok(Verdict::Verified { tenant_id, tree_size, root_hash, key_id }) => {
            match args.entry {
                Some(index) => {
                    println!("verified: entry {index} is in the signed tree of size {tree_size} of tenant {tenant_id}")
                }
                None => println!("verified: {tree_size} entries of tenant {tenant_id}, root {root_hash}"),
            }
            println!("checkpoint signed by key {key_id}");
            0
        }
        Ok(Verdict::Tampered { index, reason }) => {
            println!("FAILED at index {index}: {reason}");
            1
        }
        Err(error) => {
            eprintln!("aigronova audit verify: {}", crate::message_of(&error));
            2
        }
    }
}

/// Whether the verified `leaves` still begin with the tree of the checkpoint `pinned` (`None`), or
/// where they stop doing so.
fn pinned_verdict(pinned: &Pinned, leaves: &[Hash]) -> Option<Verdict> {
    let held = leaves.len() as u64;
    if pinned.tree_size > held {
        return Some(Verdict::Tampered {
            index: held,
            reason: format!(
                "the log holds {held} entries, fewer than the {} of the checkpoint given with --checkpoint: entries \
                 were deleted together with the checkpoints signed over them",
                pinned.tree_size
            ),
        });
    }
    let (from, to) = merkle::first_unmatched(leaves, [(pinned.tree_size, pinned.root_hash)])?;
    Some(Verdict::Tampered {
        index: from,
        reason: format!(
            "the first {to} entries no longer hash to the root of the checkpoint given with --checkpoint: the log \
             was rewritten together with the checkpoints signed over it"
        ),
    })
}

fn verified(checkpoint: &CheckpointBody, verifier: &CheckpointVerifier) -> Verdict {
    Verdict::Verified {
        tenant_id: checkpoint.tenant_id.clone(),
        tree_size: checkpoint.tree_size,
        root_hash: hex::encode(checkpoint.root_hash),
        key_id: verifier.key_id(),
    }
}

/// Checks a served checkpoint's signature, that its fields say what the signed text says, and
/// that it is `tenant`'s when one is given.
fn signed_checkpoint(
    verifier: &CheckpointVerifier,
    served: &Value,
    tenant: Option<&str>,
) -> anyhow::Result<CheckpointBody> {
    // A checkpoint that names another key than the one it is checked with is told so, as a
    // signing key changed since rather than a forgery: it still does not verify with this key.
    if let Some(named) = text(served, "keyId").ok().filter(|named| *named != verifier.key_id()) {
        bail!(
            "the checkpoint does not verify: it names signing key {named}, not key {} of the public key used; pass that \
             key's public key with --public-key (the signing key may have changed since the tenant last logged)",
            verifier.key_id()
        );
    }
    let body = verifier
        .verify(&text(served, "signedText")?, &text(served, "signature")?)
        .context("the checkpoint does not verify")?;
    if number(served, "treeSize").unwrap_or(0) != body.tree_size
        || text(served, "rootHash")? != hex::encode(body.root_hash)
    {
        bail!("the checkpoint's fields differ from its signed text");
    }
    if let Some(tenant) = tenant.filter(|tenant| parse_tenant(&body.tenant_id).ok() != parse_tenant(tenant).ok()) {
        bail!("the gateway served the log of tenant {}, not of tenant {tenant} (--tenant)", body.tenant_id);
    }
    Ok(body)
}

/// Whether `error` is the gateway's 500 for a proof the server refuses to make from its damaged
/// log.
fn is_damaged(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Refused>().is_some_and(|refused| {
        refused.status == reqwest::StatusCode::INTERNAL_SERVER_ERROR && refused.detail.contains("is damaged")
    })
}

/// Whether `error` is the gateway's 404.
fn is_not_found(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Refused>().is_some_and(|refused| refused.status == reqwest::StatusCode::NOT_FOUND)
}

/// A request the gateway refused, with its status.
#[derive(Debug, thiserror::Error)]
#[error("GET {path} answered {status}: {detail}")]
struct Refused {
    path: String,
    status: reqwest::StatusCode,
    detail: String,
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    /// What this verification has waited for `Retry-After` so far, in all its requests.
    waited: std::sync::Mutex<Duration>,
}

/// How long, in all, a verification waits for the gateway's `Retry-After` (a tenant's rate limit
/// shared with its other clients, an upstream briefly unavailable) before it gives up.
const MOST_WAITED: Duration = Duration::from_secs(300);

impl Client {
    /// `GET path` as JSON; a 429 (after its `Retry-After` in seconds, 1 s when absent) or a 503
    /// with a `Retry-After` is sent again once that has passed, while this verification's waits
    /// stay within [`MOST_WAITED`] in all.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        loop {
            let response = self
                .http
                .get(&url)
                .bearer_auth(&self.key)
                .send()
                .await
                .with_context(|| format!("cannot reach {}", self.base))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
                .map(|seconds| Duration::from_secs(seconds.max(1)));
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let wait = match (status, retry_after) {
                (reqwest::StatusCode::TOO_MANY_REQUESTS, wait) => Some(wait.unwrap_or(Duration::from_secs(1))),
                (reqwest::StatusCode::SERVICE_UNAVAILABLE, Some(wait)) => Some(wait),
                _ => None,
            };
            if let Some(wait) = wait.filter(|wait| self.may_wait(*wait)) {
                eprintln!("GET {path} answered {status}; trying again in {} s", wait.as_secs());
                tokio::time::sleep(wait).await;
                continue;
            }
            if !status.is_success() {
                let detail = body["detail"].as_str().or(body["title"].as_str()).unwrap_or("no detail").to_owned();
                return Err(Refused { path: path.to_owned(), status, detail }.into());
            }
            return Ok(body);
        }
    }

    /// Whether the verification may wait `wait` more within [`MOST_WAITED`]; counts it if so.
    fn may_wait(&self, wait: Duration) -> bool {
        let mut waited = self.waited.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fits = *waited + wait <= MOST_WAITED;
        if fits {
            *waited += wait;
        }
        fits
    }
}

fn text(value: &Value, field: &str) -> anyhow::Result<String> {
    value[field].as_str().map(str::to_owned).with_context(|| format!("the response lacks {field}"))
}

/// A 64-bit integer, which the proto3 JSON mapping writes as a string.
fn number(value: &Value, field: &str) -> Option<u64> {
    match &value[field] {
        Value::String(text) => text.parse().ok(),
        other => other.as_u64(),
    }
}

fn hashes(value: &Value) -> anyhow::Result<Vec<Hash>> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|hash| hash.as_str().and_then(decode_hash).context("a proof hash is not 32 bytes of hex"))
        .collect()
}

/// Which database to compute the roots of.
#[derive(Clone, Debug, clap::Args)]
pub struct RootsArgs {
    /// ai-governance's database, `postgres://…` or `sqlite://…`.
    #[arg(long, env = "AIGRONOVA__AI_GOVERNANCE__DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// A PostgreSQL snapshot exported by another session (`pg_export_snapshot()`): read the log
    /// as that session sees it, e.g. inside a backup's snapshot.
    #[arg(long)]
    pub snapshot: Option<String>,
}

/// What is wrong with the arguments of `audit roots`, if anything: a database URL that is neither
/// PostgreSQL's nor SQLite's, or a snapshot that is no snapshot id or not for PostgreSQL.
fn roots_usage(args: &RootsArgs) -> Option<String> {
    let url = args.database_url.to_ascii_lowercase();
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !postgres && !url.starts_with("sqlite:") {
        let shown = aigronova_platform::config::redacted(&args.database_url);
        return Some(format!("--database-url: {shown:?} is no postgres://, postgresql:// or sqlite: URL"));
    }
    match &args.snapshot {
        Some(_) if !postgres => {
            Some("--snapshot names a PostgreSQL snapshot: it is for a postgres:// database URL only".to_owned())
        }
        Some(snapshot) if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') => {
            Some("--snapshot must be a snapshot id as pg_export_snapshot() returns it".to_owned())
        }
        _ => None,
    }
}

/// Prints `tenant<TAB>size<TAB>root` per tenant, the RFC 6962 root recomputed from the stored
/// leaf texts (no stored hash is trusted); returns the exit code (0, 64 for a wrong argument, or
/// 2 on an error).
pub async fn roots(args: &RootsArgs) -> u8 {
    if let Some(problem) = roots_usage(args) {
        eprintln!("aigronova audit roots: {problem}");
        return 64;
    }
    match tenant_roots(args).await {
        Ok(lines) => {
            for (tenant, size, root) in lines {
                println!("{tenant}\t{size}\t{root}");
            }
            0
        }
        Err(error) => {
            eprintln!("aigronova audit roots: {}", crate::message_of(&error));
            2
        }
    }
}

/// Each tenant's tree size and hex root, recomputed from the stored leaf texts, sorted by tenant.
pub async fn tenant_roots(args: &RootsArgs) -> anyhow::Result<Vec<(String, u64, String)>> {
    use sqlx::{Connection, Row};

    if let Some(problem) = roots_usage(args) {
        bail!(problem);
    }
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(&args.database_url)
        .await
        .context("cannot connect to the ai-governance database")?;
    if let Some(snapshot) = &args.snapshot {
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut connection).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET TRANSACTION SNAPSHOT '{snapshot}'")))
            .execute(&mut connection)
            .await
            .context("cannot use the snapshot")?;
    }
    let tenants: Vec<String> = sqlx::query("SELECT DISTINCT tenant_id FROM audit_entries ORDER BY tenant_id")
        .fetch_all(&mut connection)
        .await
        .context("cannot read audit_entries")?
        .iter()
        .map(|row| row.try_get("tenant_id"))
        .collect::<Result<_, _>>()?;
    let mut lines = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let mut leaves: Vec<Hash> = Vec::new();
        // The first index missing, if any, and the last index read.
        let (mut missing, mut last) = (None, -1_i64);
        loop {
            let rows = sqlx::query(
                "SELECT idx, leaf FROM audit_entries WHERE tenant_id = $1 AND idx > $2 ORDER BY idx LIMIT 10000",
            )
            .bind(&tenant)
            .bind(last)
            .fetch_all(&mut connection)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let index: i64 = row.try_get("idx")?;
                if index != last + 1 && missing.is_none() {
                    missing = Some(last + 1);
                }
                last = index;
                leaves.push(merkle::leaf_hash(row.try_get::<String, _>("leaf")?.as_bytes()));
            }
        }
        // A log with an entry gone is no tree, but what is stored is still recorded (a backup of a
        // damaged log is still taken, and its restore checked against it): the root of the
        // entries held, in order, said on standard error.
        if let Some(index) = missing {
            eprintln!(
                "aigronova audit roots: tenant {tenant}: audit entry {index} is missing; its line is the root of \
                 the {} entries stored, in order",
                leaves.len()
            );
        }
        lines.push((tenant, leaves.len() as u64, hex::encode(merkle::root_of(&leaves))));
    }
    if args.snapshot.is_some() {
        sqlx::raw_sql("COMMIT").execute(&mut connection).await?;
    }
    Ok(lines)
}
