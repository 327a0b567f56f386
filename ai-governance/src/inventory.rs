//! The model inventory: the cards of every model the services registered at start-up. A name
//! and version keeps the sha256 it was first registered with; a later registration with another
//! sha256 (the file changed without a new version) flags the model, and the flag stays when the
//! first file comes back: the other one was served meanwhile.

use aigronova_platform::{
    Error,
    storage::{Database, StoreError},
};
use aigronova_proto::aigronova::common::v1::ModelCard;
use chrono::{SecondsFormat, Utc};
use prost::Message;
use sqlx::Row;

/// A model as the inventory holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct InventoryEntry {
    pub service: String,
    /// The card as first registered.
    pub card: ModelCard,
    /// The sha256 registered last.
    pub observed_sha256: String,
    /// The last sha256 registered that is not the card's, once there was one.
    pub differing_sha256: Option<String>,
    /// When a sha256 that is not the card's was first registered.
    pub mismatch_at: Option<String>,
    pub first_registered_at: String,
    pub last_registered_at: String,
}

impl InventoryEntry {
    /// True when the model's file changed without a new version, whether or not it changed back.
    pub fn sha256_mismatch(&self) -> bool {
        self.mismatch_at.is_some()
    }
}

#[derive(Clone, Debug)]
pub struct Inventory {
    database: Database,
}

impl Inventory {
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    /// Records `cards` for `service`; returns the `name/version` of the models flagged by this
    /// registration.
    pub async fn register(&self, service: &str, cards: &[ModelCard]) -> Result<Vec<String>, Error> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut flagged = Vec::new();
        let mut transaction = self.database.begin_write().await?;
        for card in cards {
            let known = sqlx::query("SELECT sha256 FROM models WHERE name = $1 AND version = $2")
                .bind(&card.name)
                .bind(&card.version)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(StoreError::from)?;
            match known {
                None => {
                    sqlx::query(
                        "INSERT INTO models (name, version, service, card, sha256, observed_sha256, \
                         first_registered_at, last_registered_at) VALUES ($1, $2, $3, $4, $5, $5, $6, $6)",
                    )
                    .bind(&card.name)
                    .bind(&card.version)
                    .bind(service)
                    .bind(hex::encode(card.encode_to_vec()))
                    .bind(&card.sha256)
                    .bind(&now)
                    .execute(&mut *transaction)
                    .await
                    .map_err(StoreError::from)?;
                }
                Some(row) => {
                    let first: String = row.try_get("sha256").map_err(StoreError::from)?;
                    if first != card.sha256 {
                        tracing::warn!(
                            model = %card.name,
                            version = %card.version,
                            registered = %first,
                            observed = %card.sha256,
                            "model file changed without a new version"
                        );
                        flagged.push(format!("{}/{}", card.name, card.version));
                    }
                    // A differing sha256 is kept with the time the first one came; the first
                    // sha256 again leaves both as they were.
                    sqlx::query(
                        "UPDATE models SET observed_sha256 = $1, last_registered_at = $2, service = $3, \
                         differing_sha256 = CASE WHEN $1 <> sha256 THEN $1 ELSE differing_sha256 END, \
                         mismatch_at = CASE WHEN $1 <> sha256 THEN COALESCE(mismatch_at, $2) ELSE mismatch_at END \
                         WHERE name = $4 AND version = $5",
                    )
                    .bind(&card.sha256)
                    .bind(&now)
                    .bind(service)
                    .bind(&card.name)
                    .bind(&card.version)
                    .execute(&mut *transaction)
                    .await
                    .map_err(StoreError::from)?;
                }
            }
        }
        transaction.commit().await.map_err(StoreError::from)?;
        Ok(flagged)
    }

    pub async fn list(&self) -> Result<Vec<InventoryEntry>, Error> {
        let rows = sqlx::query(
            "SELECT service, card, observed_sha256, differing_sha256, mismatch_at, first_registered_at, \
             last_registered_at FROM models \
             ORDER BY name, version",
        )
        .fetch_all(self.database.pool())
        .await
        .map_err(StoreError::from)?;
        Ok(rows.iter().map(entry_from).collect::<Result<_, _>>()?)
    }

    pub async fn get(&self, name: &str, version: &str) -> Result<InventoryEntry, Error> {
        let row = sqlx::query(
            "SELECT service, card, observed_sha256, differing_sha256, mismatch_at, first_registered_at, \
             last_registered_at FROM models \
             WHERE name = $1 AND version = $2",
        )
        .bind(name)
        .bind(version)
        .fetch_optional(self.database.pool())
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| Error::NotFound(format!("model {name} version {version}")))?;
        Ok(entry_from(&row)?)
    }
}

fn entry_from(row: &sqlx::any::AnyRow) -> Result<InventoryEntry, StoreError> {
    let card: String = row.try_get("card")?;
    let card = hex::decode(card)
        .ok()
        .and_then(|bytes| ModelCard::decode(bytes.as_slice()).ok())
        .ok_or_else(|| StoreError::Corrupt("models.card is not an encoded model card".into()))?;
    Ok(InventoryEntry {
        service: row.try_get("service")?,
        card,
        observed_sha256: row.try_get("observed_sha256")?,
        differing_sha256: row.try_get("differing_sha256")?,
        mismatch_at: row.try_get("mismatch_at")?,
        first_registered_at: row.try_get("first_registered_at")?,
        last_registered_at: row.try_get("last_registered_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(sha: char) -> ModelCard {
        ModelCard {
            name: "breast-cancer".into(),
            version: "1".into(),
            sha256: sha.to_string().repeat(64),
            ..ModelCard::default()
        }
    }

    #[tokio::test]
    async fn a_file_that_changes_without_a_new_version_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let inventory = Inventory::new(Database::connect(&url, &crate::MIGRATOR).await.unwrap());
        assert!(inventory.register("healthquantum", &[card('a')]).await.unwrap().is_empty());
        assert!(inventory.register("healthquantum", &[card('a')]).await.unwrap().is_empty(), "a restart is fine");
        assert!(!inventory.get("breast-cancer", "1").await.unwrap().sha256_mismatch());

        let flagged = inventory.register("healthquantum", &[card('b')]).await.unwrap();
        assert_eq!(flagged, ["breast-cancer/1"]);
        let entry = inventory.get("breast-cancer", "1").await.unwrap();
        assert!(entry.sha256_mismatch());
        assert_eq!(entry.card.sha256, "a".repeat(64), "the card keeps the sha256 first registered");
        assert_eq!(entry.observed_sha256, "b".repeat(64));
        assert_eq!(entry.differing_sha256.as_deref(), Some("b".repeat(64).as_str()));
        let first_seen = entry.mismatch_at.clone().expect("when the other file came");
        assert_eq!(inventory.list().await.unwrap().len(), 1);

        // The first file back: nothing newly flagged, and the flag stays, with when and what.
        assert!(inventory.register("healthquantum", &[card('a')]).await.unwrap().is_empty());
        let entry = inventory.get("breast-cancer", "1").await.unwrap();
        assert!(entry.sha256_mismatch(), "the other file was served: {entry:?}");
        assert_eq!(entry.observed_sha256, "a".repeat(64));
        assert_eq!(entry.differing_sha256.as_deref(), Some("b".repeat(64).as_str()));
        assert_eq!(entry.mismatch_at.as_deref(), Some(first_seen.as_str()));

        // A third file: the last differing one is shown, the first time kept.
        assert_eq!(inventory.register("healthquantum", &[card('c')]).await.unwrap(), ["breast-cancer/1"]);
        let entry = inventory.get("breast-cancer", "1").await.unwrap();
        assert_eq!(entry.differing_sha256.as_deref(), Some("c".repeat(64).as_str()));
        assert_eq!(entry.mismatch_at.as_deref(), Some(first_seen.as_str()));
    }
}
