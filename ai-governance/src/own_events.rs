//! ai-governance's own audit events: a data-subject request made or completed, a review asked for
//! or decided. Each is written to `own_audit_outbox` in the transaction of the change it records,
//! so that it exists if and only if the change committed, and appended to the tenant's log once
//! that transaction commits. One that a crash or a failed append leaves in the outbox is appended
//! by [`drain`], at the start and every [`DRAIN_INTERVAL`] after; the log keeps an event once by
//! its id, so one appended twice is stored once.

use std::time::Duration;

use aigronova_platform::{
    Shutdown,
    storage::{Database, StoreError},
};
use sqlx::{AnyConnection, Row};

use crate::log::{Leaf, LogStore};

/// How often the outbox is looked at for events left behind.
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(10);

/// Events appended per pass of [`drain`].
const DRAIN_BATCH: i64 = 100;

/// Writes `leaf` to the outbox on `connection`, inside the transaction of the change it records.
pub(crate) async fn enqueue(connection: &mut AnyConnection, leaf: &Leaf) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO own_audit_outbox (event_id, tenant_id, leaf, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&leaf.event_id)
        .bind(&leaf.tenant_id)
        .bind(leaf.to_text())
        .bind(&leaf.occurred_at)
        .execute(connection)
        .await?;
    Ok(())
}

/// Appends `leaves`, enqueued in a transaction that has committed, and takes them out of the
/// outbox. The change they record has been made: a failure here is logged, and [`drain`] appends
/// them later.
pub(crate) async fn append_committed(log: &LogStore, database: &Database, leaves: Vec<Leaf>) {
    let Some(tenant_id) = leaves.first().map(|leaf| leaf.tenant_id.clone()) else { return };
    debug_assert!(leaves.iter().all(|leaf| leaf.tenant_id == tenant_id), "one change is one tenant's");
    let event_ids: Vec<String> = leaves.iter().map(|leaf| leaf.event_id.clone()).collect();
    let appended = match log.append(leaves).await {
        Ok(_) => delete(database, &tenant_id, &event_ids).await,
        Err(error) => Err(error),
    };
    if let Err(error) = appended {
        tracing::warn!(%error, events = event_ids.len(), "audit events of ai-governance's stay in its outbox until the next pass");
    }
}

/// Appends what the outbox holds, tenant by tenant, oldest first, and takes it out; how many
/// events it took out (appended, or found in the log already). A tenant whose log refuses the
/// append keeps its events for the next pass, and a row that does not read stays, logged, without
/// holding up the rows after it or other tenants'.
pub async fn drain(log: &LogStore, database: &Database) -> Result<usize, StoreError> {
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM own_audit_outbox").fetch_all(database.pool()).await?;
    let mut drained = 0;
    for tenant_id in tenants {
        match drain_tenant(log, database, &tenant_id).await {
            Ok(taken) => drained += taken,
            Err(error) => {
                tracing::warn!(%error, tenant_id, "ai-governance's audit events of a tenant stay in its outbox")
            }
        }
    }
    Ok(drained)
}

/// [`drain`] for one tenant.
async fn drain_tenant(log: &LogStore, database: &Database, tenant_id: &str) -> Result<usize, StoreError> {
    let (mut drained, mut after) = (0, String::new());
    loop {
        let rows = sqlx::query(
            "SELECT event_id, leaf FROM own_audit_outbox WHERE tenant_id = $1 AND event_id > $2 \
             ORDER BY event_id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(&after)
        .bind(DRAIN_BATCH)
        .fetch_all(database.pool())
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut leaves = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("event_id")?;
            let text: String = row.try_get("leaf")?;
            // An event goes only to the log of the tenant its row is filed under.
            match Leaf::parse(&text).filter(|leaf| leaf.tenant_id == tenant_id && leaf.event_id == id) {
                Some(leaf) => {
                    leaves.push(leaf);
                    ids.push(id.clone());
                }
                None => tracing::error!(
                    event_id = %id,
                    tenant_id,
                    "an audit event in ai-governance's outbox does not read as its row's; it stays there"
                ),
            }
            after = id;
        }
        if rows.is_empty() {
            return Ok(drained);
        }
        if !leaves.is_empty() {
            log.append(leaves).await?;
            delete(database, tenant_id, &ids).await?;
            drained += ids.len();
        }
    }
}

/// Runs [`drain`] at the start and every [`DRAIN_INTERVAL`] until `shutdown`.
pub async fn keep_draining(log: std::sync::Arc<LogStore>, database: Database, shutdown: Shutdown) {
    loop {
        match drain(&log, &database).await {
            Ok(0) => {}
            Ok(appended) => tracing::info!(appended, "ai-governance's audit events left in its outbox appended"),
            Err(error) => tracing::warn!(%error, "ai-governance's audit events left in its outbox not appended yet"),
        }
        // What stays (a tenant whose log refuses, a row that does not read) shows, and can be alerted on.
        aigronova_platform::audit::report_outbox_lag(&database, "own_audit_outbox", crate::SERVICE_NAME).await;
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(DRAIN_INTERVAL) => {}
        }
    }
}

/// Takes the events `ids` of `tenant_id` out of the outbox, in a transaction of that tenant.
async fn delete(database: &Database, tenant_id: &str, ids: &[String]) -> Result<(), StoreError> {
    let placeholders: Vec<String> = (2..=ids.len() + 1).map(|n| format!("${n}")).collect();
    let delete =
        format!("DELETE FROM own_audit_outbox WHERE tenant_id = $1 AND event_id IN ({})", placeholders.join(", "));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(delete)).bind(tenant_id.to_owned());
    for id in ids {
        query = query.bind(id);
    }
    database.execute_tenant_write(tenant_id, query).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{checkpoint::CheckpointSigner, log::tests::leaf};

    async fn enqueued(database: &Database, leaf: &Leaf, commit: bool) {
        let mut transaction = database.begin_tenant(&leaf.tenant_id).await.unwrap();
        enqueue(&mut transaction, leaf).await.unwrap();
        if commit {
            transaction.commit().await.unwrap();
        }
    }

    async fn pending(database: &Database) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM own_audit_outbox").fetch_one(database.pool()).await.unwrap()
    }

    #[tokio::test]
    async fn events_left_in_the_outbox_are_appended_once_and_those_rolled_back_never() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        let log = LogStore::new(database.clone(), CheckpointSigner::generate());
        // Committed, then the process stopped before appending them; one was appended before it
        // could be taken out; another's change rolled back.
        for n in 1..=3 {
            enqueued(&database, &leaf("a", n), true).await;
        }
        enqueued(&database, &leaf("b", 4), true).await;
        log.append(vec![leaf("a", 2)]).await.unwrap();
        enqueued(&database, &leaf("a", 5), false).await;
        assert_eq!(pending(&database).await, 4);

        // Four taken out, one of them found in the log already.
        assert_eq!(drain(&log, &database).await.unwrap(), 4);
        assert_eq!(pending(&database).await, 0);
        let a = log.entries("a", 0, 10).await.unwrap();
        let ids: Vec<&str> = a.iter().map(|entry| entry.event_id.as_str()).collect();
        assert_eq!(ids, [2, 1, 3].map(|n| format!("00000000-0000-7000-8000-{n:012}")));
        assert_eq!(log.entries("b", 0, 10).await.unwrap().len(), 1);
        assert_eq!(drain(&log, &database).await.unwrap(), 0, "nothing is appended twice");

        // A row that does not read, or reads as another tenant's, stays, and holds up nothing.
        for (id, tenant, text) in [
            ("00000000-0000-7000-8000-000000000007", "a", "{not json".to_owned()),
            ("00000000-0000-7000-8000-000000000008", "a", leaf("b", 8).to_text()),
        ] {
            sqlx::query("INSERT INTO own_audit_outbox (event_id, tenant_id, leaf, created_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(tenant)
                .bind(text)
                .bind("2026-12-01T10:00:00.000000Z")
                .execute(database.pool())
                .await
                .unwrap();
        }
        enqueued(&database, &leaf("a", 9), true).await;
        enqueued(&database, &leaf("b", 10), true).await;
        assert_eq!(drain(&log, &database).await.unwrap(), 2);
        assert_eq!(pending(&database).await, 2, "the two that do not read stay");
        assert_eq!(log.entries("b", 0, 10).await.unwrap().len(), 2, "b's own only");
        assert_eq!(log.entries("a", 0, 10).await.unwrap().len(), 4);
        sqlx::query("DELETE FROM own_audit_outbox").execute(database.pool()).await.unwrap();

        // Appended at once after a commit, nothing is left behind.
        enqueued(&database, &leaf("a", 6), true).await;
        append_committed(&log, &database, vec![leaf("a", 6)]).await;
        assert_eq!(pending(&database).await, 0);
        assert_eq!(log.entries("a", 0, 10).await.unwrap().len(), 5);
    }
}
