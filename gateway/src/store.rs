//! The gateway's own datastore: tenants and API keys. Keys are stored as SHA-256 hashes; a key
//! is shown once, when it is created.

use aigronova_platform::storage::{Backend, Database, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The scope that allows the admin API.
pub const ADMIN_SCOPE: &str = "admin";
/// The scope that allows reading `/metrics`.
pub const METRICS_SCOPE: &str = "metrics:read";
/// Scopes the gateway itself checks, beside those the routes require.
pub const GATEWAY_SCOPES: &[&str] = &[METRICS_SCOPE];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Starter,
    Professional,
    Enterprise,
}

impl Plan {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "starter" => Some(Self::Starter),
            "professional" => Some(Self::Professional),
            "enterprise" => Some(Self::Enterprise),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starter => "starter",
            Self::Professional => "professional",
            Self::Enterprise => "enterprise",
        }
    }
}

/// Whether a tenant's keys work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    Suspended,
}

impl TenantStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    pub status: String,
    pub create_time: String,
}

/// What a principal authenticated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An API key of this gateway.
    ApiKey,
    /// A JWT of the configured OIDC provider.
    Token,
}

/// Who an API key or a token speaks for.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The key's id in the store (not its secret), or `jwt:` and the pseudonym of a token's subject.
    pub key_id: String,
    pub credential: Credential,
    /// `None` for administrator keys.
    pub tenant_id: Option<String>,
    pub tenant_status: Option<String>,
    pub tenant_plan: Option<Plan>,
    pub scopes: Vec<String>,
    /// When the key stops working (RFC 3339 UTC).
    pub expire_time: Option<String>,
}

impl Principal {
    /// Whether the key's expiry has passed (a cached principal can outlive it).
    pub fn is_expired(&self) -> bool {
        self.expire_time.as_deref().is_some_and(|expiry| expiry <= now().as_str())
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|held| held == scope)
    }
}

/// A key as returned once at creation.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKey {
    pub id: String,
    pub key: String,
    pub name: String,
    pub tenant_id: Option<String>,
    pub scopes: Vec<String>,
    pub create_time: String,
    /// `null` for a key that does not expire, as in the list.
    pub expire_time: Option<String>,
}

/// A key's row as the admin API shows it, without its secret.
fn key_info(row: &sqlx::any::AnyRow) -> Result<KeyInfo, StoreError> {
    let scopes: String = row.try_get("scopes")?;
    Ok(KeyInfo {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        create_time: row.try_get("created_at")?,
        expire_time: row.try_get("expires_at")?,
        last_used_time: row.try_get("last_used_at")?,
        revoke_time: row.try_get("revoked_at")?,
    })
}

/// A key as listed: everything but the secret.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    pub create_time: String,
    pub expire_time: Option<String>,
    pub last_used_time: Option<String>,
    pub revoke_time: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub async fn create_tenant(&self, name: &str, plan: Plan) -> Result<Tenant, StoreError> {
        let tenant = Tenant {
            id: Uuid::now_v7().to_string(),
            name: name.to_owned(),
            plan,
            status: "active".into(),
            create_time: now(),
        };
        sqlx::query("INSERT INTO tenants (id, name, plan, status, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .bind(plan.as_str())
            .bind(&tenant.status)
            .bind(&tenant.create_time)
            .execute(self.db.pool())
            .await?;
        Ok(tenant)
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query("SELECT id, name, plan, status, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    /// Tenants in id order (ids are time-ordered), `limit` at most, after `after` when given.
    pub async fn list_tenants(&self, after: Option<&str>, limit: i64) -> Result<Vec<Tenant>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, plan, status, created_at FROM tenants WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(self.db.pool())
                .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Changes a tenant's plan and/or status; `None` when the tenant does not exist.
    pub async fn update_tenant(
        &self,
        id: &str,
        plan: Option<Plan>,
        status: Option<TenantStatus>,
    ) -> Result<Option<Tenant>, StoreError> {
        sqlx::query("UPDATE tenants SET plan = COALESCE($1, plan), status = COALESCE($2, status) WHERE id = $3")
            .bind(plan.map(Plan::as_str))
            .bind(status.map(TenantStatus::as_str))
            .bind(id)
            .execute(self.db.pool())
            .await?;
        self.tenant(id).await
    }

    /// The keys of a tenant, without their secrets, in id order (ids are time-ordered), `limit`
    /// at most, after `after` when given.
    pub async fn list_keys(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, scopes, created_at, expires_at, last_used_at, revoked_at \
             FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(key_info).collect()
    }

    /// The key `key_id` of `tenant_id`, without its secret.
    pub async fn key(&self, tenant_id: &str, key_id: &str) -> Result<Option<KeyInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, scopes, created_at, expires_at, last_used_at, revoked_at \
             FROM api_keys WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(key_id)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(key_info).transpose()
    }

    /// Revokes a key of `tenant_id`; returns its hash (for cache invalidation) and whether this
    /// call revoked it (`false`: it was revoked before), or `None` when there is no such key.
    pub async fn revoke_key(&self, tenant_id: &str, key_id: &str) -> Result<Option<(String, bool)>, StoreError> {
        let row = sqlx::query("SELECT key_hash FROM api_keys WHERE id = $1 AND tenant_id = $2")
            .bind(key_id)
            .bind(tenant_id)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let revoked =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL")
                .bind(now())
                .bind(key_id)
                .bind(tenant_id)
                .execute(self.db.pool())
                .await?;
        Ok(Some((row.try_get("key_hash")?, revoked.rows_affected() == 1)))
    }

    /// Records that a key was used now.
    pub async fn touch_key(&self, key_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(key_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Issues a new key; the clear key is in the result and nowhere else.
    pub async fn issue_key(
        &self,
        tenant_id: Option<&str>,
        name: &str,
        scopes: &[String],
        expire_time: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey, StoreError> {
        self.store_key(tenant_id, name, scopes, new_key(), expire_time).await
    }

    /// Records `key`, made by [`new_key`] on a first start, as the administrator key.
    pub async fn store_admin_key(&self, key: &str) -> Result<(), StoreError> {
        self.store_key(None, "admin (first start)", &[ADMIN_SCOPE.to_owned()], key.to_owned(), None).await?;
        Ok(())
    }

    /// Makes `key` the administrator key: recorded if it is new (or in use again if it was one
    /// before and was revoked), and every other administrator key revoked, in one transaction.
    /// Returns the hashes of the keys revoked; `None` when `key` is a tenant's API key, which
    /// cannot be made an administrator's.
    pub async fn set_admin_key(&self, key: &str) -> Result<Option<Vec<String>>, StoreError> {
        let hash = hash_key(key);
        let mut transaction = self.db.begin_write().await?;
        // Replicas starting together with different keys take turns, so that one key is left. (A
        // write transaction on SQLite holds the database's write lock already.)
        if self.db.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('aigronova.gateway.admin_key'))::text")
                .execute(&mut *transaction)
                .await?;
        }
        let held = sqlx::query("SELECT tenant_id FROM api_keys WHERE key_hash = $1")
            .bind(&hash)
            .fetch_optional(&mut *transaction)
            .await?;
        match held {
            Some(row) if row.try_get::<Option<String>, _>("tenant_id")?.is_some() => return Ok(None),
            // Replicas starting together with a new key insert it once.
            None => {
                sqlx::query(
                    "INSERT INTO api_keys (id, tenant_id, name, key_hash, scopes, created_at, expires_at) \
                     VALUES ($1, NULL, $2, $3, $4, $5, NULL) ON CONFLICT (key_hash) DO NOTHING",
                )
                .bind(Uuid::now_v7().to_string())
                .bind("admin (from AIGRONOVA_ADMIN_KEY)")
                .bind(&hash)
                .bind(ADMIN_SCOPE)
                .bind(now())
                .execute(&mut *transaction)
                .await?;
            }
            Some(_) => {
                sqlx::query("UPDATE api_keys SET revoked_at = NULL, expires_at = NULL WHERE key_hash = $1")
                    .bind(&hash)
                    .execute(&mut *transaction)
                    .await?;
            }
        }
        let others = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id IS NULL AND revoked_at IS NULL AND key_hash <> $2 \
             RETURNING key_hash",
        )
        .bind(now())
        .bind(&hash)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some(others.iter().map(|row| row.try_get("key_hash")).collect::<Result<_, _>>()?))
    }

    /// The secret named `name`, made at random by the first replica that asks for it and the
    /// same for every replica and every start after.
    pub async fn secret(&self, name: &str) -> Result<String, StoreError> {
        let mut value = [0; 32];
        getrandom::fill(&mut value).expect("the system's random source works");
        sqlx::query("INSERT INTO gateway_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(hex::encode(value))
            .execute(self.db.pool())
            .await?;
        let row = sqlx::query("SELECT value FROM gateway_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get("value")?)
    }

    pub async fn has_admin_key(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE tenant_id IS NULL AND revoked_at IS NULL")
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    async fn store_key(
        &self,
        tenant_id: Option<&str>,
        name: &str,
        scopes: &[String],
        key: String,
        expire_time: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey, StoreError> {
        let issued = IssuedKey {
            id: Uuid::now_v7().to_string(),
            key,
            name: name.to_owned(),
            tenant_id: tenant_id.map(str::to_owned),
            scopes: scopes.to_vec(),
            create_time: now(),
            expire_time: expire_time.map(timestamp),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, scopes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&issued.id)
        .bind(tenant_id)
        .bind(name)
        .bind(hash_key(&issued.key))
        .bind(issued.scopes.join(" "))
        .bind(&issued.create_time)
        .bind(&issued.expire_time)
        .execute(self.db.pool())
        .await?;
        Ok(issued)
    }

    /// The principal of the key whose hash is `hash`, if the key is known and not revoked; an
    /// expired one too, for its caller to be told it has expired ([`Principal::is_expired`]).
    pub async fn principal_by_hash(&self, hash: &str) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.tenant_id, k.scopes, k.expires_at, t.status, t.plan FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| {
            let scopes: String = row.try_get("scopes")?;
            let plan: Option<String> = row.try_get("plan")?;
            Ok(Principal {
                key_id: row.try_get("id")?,
                credential: Credential::ApiKey,
                tenant_id: row.try_get("tenant_id")?,
                tenant_status: row.try_get("status")?,
                tenant_plan: plan.as_deref().and_then(Plan::parse),
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                expire_time: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// How many tenants exist (tests use it to prove a refused request wrote nothing).
    pub async fn count_tenants(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tenants").fetch_one(self.db.pool()).await?;
        Ok(row.try_get("n")?)
    }
}

fn tenant_from_row(row: &sqlx::any::AnyRow) -> Result<Tenant, StoreError> {
    let plan: String = row.try_get("plan")?;
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        plan: Plan::parse(&plan).ok_or_else(|| StoreError::Corrupt(format!("unknown plan {plan:?}")))?,
        status: row.try_get("status")?,
        create_time: row.try_get("created_at")?,
    })
}

/// The stored form of a presented key.
/// A new API key: `agk_` and 64 random hex digits.
pub fn new_key() -> String {
    format!("agk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn now() -> String {
    timestamp(Utc::now())
}

/// RFC 3339 UTC with milliseconds: the one timestamp format stored, so text order is time order.
fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}
