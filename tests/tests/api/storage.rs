//! The storage layer's guarantees on PostgreSQL that the services rely on.

use std::time::Duration;

use aigronova_e2e::PostgresDatabases;
use aigronova_platform::storage::Database;
use sqlx::migrate::Migrator;

/// A fresh PostgreSQL database with a table `t` of numbers, opened twice, as two replicas do.
async fn two_handles(databases: &mut PostgresDatabases) -> (Database, Database) {
    let url = databases.create(&format!("e2e_{}_storage", uuid::Uuid::new_v4().simple())).await;
    let first = Database::connect(&url, &Migrator::DEFAULT).await.expect("PostgreSQL opens");
    let second = Database::connect(&url, &Migrator::DEFAULT).await.expect("PostgreSQL opens");
    sqlx::raw_sql("CREATE TABLE t (x BIGINT NOT NULL)").execute(first.pool()).await.unwrap();
    (first, second)
}

async fn insert(database: &Database, x: i64) {
    sqlx::query("INSERT INTO t VALUES ($1)").bind(x).execute(database.pool()).await.unwrap();
}

async fn count(transaction: &mut aigronova_platform::storage::DbTransaction) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&mut **transaction).await.unwrap()
}

#[tokio::test]
async fn a_read_transaction_sees_the_database_as_at_its_first_statement() {
    let mut databases = PostgresDatabases::default();
    let (database, other) = two_handles(&mut databases).await;
    insert(&database, 1).await;

    let mut reading = database.begin_tenant_read("tenant").await.unwrap();
    assert_eq!(count(&mut reading).await, 1);
    insert(&other, 2).await;
    assert_eq!(count(&mut reading).await, 1, "a read transaction saw a row committed after its first read");
    let refused = sqlx::query("INSERT INTO t VALUES (3)").execute(&mut *reading).await;
    assert!(refused.is_err(), "a read transaction wrote");
    reading.rollback().await.unwrap();

    // A snapshot transaction reads one state and may still add rows.
    let mut snapshot = database.begin_tenant_snapshot("tenant").await.unwrap();
    assert_eq!(count(&mut snapshot).await, 2);
    insert(&other, 4).await;
    assert_eq!(count(&mut snapshot).await, 2, "a snapshot transaction saw a row committed after its first read");
    sqlx::query("INSERT INTO t VALUES (5)").execute(&mut *snapshot).await.unwrap();
    snapshot.commit().await.unwrap();
    let mut after = database.begin_tenant_read("tenant").await.unwrap();
    assert_eq!(count(&mut after).await, 4);
}

#[tokio::test]
async fn a_process_lock_holds_off_every_other_handle_on_the_database_until_released() {
    let mut databases = PostgresDatabases::default();
    let (first, second) = two_handles(&mut databases).await;

    let held = first.lock_across_processes("subject-a").await.unwrap();
    let waiting =
        tokio::spawn(async move { second.lock_across_processes("subject-a").await.map(|lock| (lock, second)) });
    // Another key is free meanwhile.
    let other_key = tokio::time::timeout(Duration::from_secs(10), first.lock_across_processes("subject-b"))
        .await
        .expect("a lock on another key waited")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a second handle took a lock the first one holds");

    held.release().await;
    let (lock, _second) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the lock was not handed on once released")
        .unwrap()
        .unwrap();
    lock.release().await;
    other_key.release().await;

    // A holder that goes away without releasing (a replica that dies) frees the lock too.
    let dropped = first.lock_across_processes("subject-c").await.unwrap();
    drop(dropped);
    let again = tokio::time::timeout(Duration::from_secs(10), first.lock_across_processes("subject-c"))
        .await
        .expect("a dropped lock was never freed")
        .unwrap();
    again.release().await;
}

/// One database given to two components (the gateway's and ai-governance's URLs the same): the
/// second to start is refused with words that say so, on either backend, and changes nothing.
async fn a_database_of_another_component_is_refused_by_name(url: &str) {
    let governance = &aigronova_ai_governance::MIGRATOR;
    let gateway = &aigronova_gateway::store::MIGRATOR;
    Database::connect(url, governance).await.expect("ai-governance migrates an empty database");
    let refused = Database::connect(url, gateway).await.expect_err("the gateway refuses ai-governance's database");
    let message = refused.to_string();
    assert!(message.contains("the database holds another component's tables"), "{message}");
    assert!(message.contains("a database of its own"), "{message}");
    // Nothing of the gateway's was applied, and ai-governance still opens it.
    Database::connect(url, governance).await.expect("ai-governance opens its database again");
}

#[tokio::test]
async fn a_database_of_another_component_is_refused_by_name_on_postgres() {
    let mut databases = PostgresDatabases::default();
    let url = databases.create(&format!("e2e_{}_foreign", uuid::Uuid::new_v4().simple())).await;
    a_database_of_another_component_is_refused_by_name(&url).await;
}

#[tokio::test]
async fn a_database_of_another_component_is_refused_by_name_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    a_database_of_another_component_is_refused_by_name(&url).await;
}
