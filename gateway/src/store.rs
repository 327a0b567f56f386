//! The gateway's own datastore: tenants and API keys. Keys are stored as SHA-256 hashes; a key
//! is shown once, when it is created.

use aigronova_platform::storage::{Database, StoreError};
use chrono::{SecondsFormat, Utc};
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

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    pub status: String,
    pub create_time: String,
}

/// Who an API key speaks for.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key_id: String,
    /// `None` for administrator keys.
    pub tenant_id: Option<String>,
    pub tenant_status: Option<String>,
    pub tenant_plan: Option<Plan>,
    pub scopes: Vec<String>,
}

impl Principal {
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
        row.map(|row| {
            let plan: String = row.try_get("plan")?;
            Ok(Tenant {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                plan: Plan::parse(&plan).ok_or_else(|| StoreError::Corrupt(format!("unknown plan {plan:?}")))?,
                status: row.try_get("status")?,
                create_time: row.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// Issues a new key; the clear key is in the result and nowhere else.
    pub async fn issue_key(
        &self,
        tenant_id: Option<&str>,
        name: &str,
        scopes: &[String],
    ) -> Result<IssuedKey, StoreError> {
        let key = format!("agk_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        self.store_key(tenant_id, name, scopes, key).await
    }

    /// Records `key` (chosen by the operator) as an administrator key, unless it is known already.
    pub async fn ensure_admin_key(&self, key: &str) -> Result<(), StoreError> {
        if self.principal(key).await?.is_none() {
            self.store_key(None, "admin (from AIGRONOVA_ADMIN_KEY)", &[ADMIN_SCOPE.to_owned()], key.to_owned()).await?;
        }
        Ok(())
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
    ) -> Result<IssuedKey, StoreError> {
        let issued = IssuedKey {
            id: Uuid::now_v7().to_string(),
            key,
            name: name.to_owned(),
            tenant_id: tenant_id.map(str::to_owned),
            scopes: scopes.to_vec(),
            create_time: now(),
        };
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&issued.id)
        .bind(tenant_id)
        .bind(name)
        .bind(hash_key(&issued.key))
        .bind(issued.scopes.join(" "))
        .bind(&issued.create_time)
        .execute(self.db.pool())
        .await?;
        Ok(issued)
    }

    /// The principal of a presented key, if the key is known and not revoked.
    pub async fn principal(&self, key: &str) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query(
            "SELECT k.id, k.tenant_id, k.scopes, t.status, t.plan FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(hash_key(key))
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| {
            let scopes: String = row.try_get("scopes")?;
            let plan: Option<String> = row.try_get("plan")?;
            Ok(Principal {
                key_id: row.try_get("id")?,
                tenant_id: row.try_get("tenant_id")?,
                tenant_status: row.try_get("status")?,
                tenant_plan: plan.as_deref().and_then(Plan::parse),
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
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

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}
