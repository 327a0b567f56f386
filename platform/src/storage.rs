//! Relational storage: one `sqlx` pool behind one interface for SQLite (embedded) and
//! PostgreSQL (production), with the service's migrations run at start-up.
//!
//! Queries are written once, with `$1` placeholders and SQL both engines accept, and run
//! through `sqlx::Any`.

use std::{
    ops::{Deref, DerefMut},
    path::Path,
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use sha2::{Digest, Sha256};
use sqlx::{
    Any, AnyConnection, AnyPool, Connection, Row, Transaction,
    any::{AnyPoolOptions, install_default_drivers},
    migrate::{MigrateError, Migrator},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tonic::Status;

pub use self::grouped::{KeyedWrite, Param, bind_params};

mod grouped;

/// Which engine a [`Database`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl FromStr for Backend {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL must start with sqlite:, postgres: or postgresql:")]
    UnsupportedUrl,
    #[error("cannot create the database folder: {0}")]
    Folder(#[from] std::io::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database holds migrations that are not this component's (see [`foreign_migrations`]).
    #[error("{0}")]
    ForeignMigrations(String),
}

impl StoreError {
    /// True when the error is a unique-constraint violation (a duplicate insert).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(error)) if error.is_unique_violation())
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                tracing::error!(%error, "database unavailable");
                Status::unavailable("storage is unavailable, retry later")
            }
            StoreError::UnsupportedUrl
            | StoreError::Folder(_)
            | StoreError::Database(_)
            | StoreError::Migration(_)
            | StoreError::ForeignMigrations(_)
            | StoreError::Corrupt(_) => crate::error::internal(&error),
        }
    }
}

/// The role tenant transactions take on PostgreSQL, under which row-level security applies.
pub const TENANT_ROLE: &str = "aigronova_tenant";

/// What a service says when it cannot put its tables under row-level security at start.
pub const ROW_LEVEL_SECURITY_REFUSED: &str = "cannot set up row-level security: the database user must be a member of \
     the role aigronova_tenant (created here when the user may create roles; see deploy/README.md)";

/// How long a writer waits for SQLite's write lock, in this process or another.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// A connection pool to one service's database.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    /// SQLite: one connection for the write transactions. Every write goes through it in turn, so
    /// its page cache stays valid from one transaction to the next (SQLite empties a
    /// connection's cache when another connection has written).
    writer: Option<AnyPool>,
    backend: Backend,
    row_level_security: bool,
    /// SQLite has one writer at a time: the process's writers queue here for their turn rather
    /// than poll SQLite's lock (whose busy handler sleeps up to tens of milliseconds a try).
    writers: Arc<Semaphore>,
    /// SQLite: where [`Self::write_keyed`] sends its writes to be committed in groups.
    grouped: Option<grouped::Grouper>,
    /// PostgreSQL: the URL [`Self::lock_across_processes`] opens its own connections to.
    url: Option<DatabaseUrl>,
    /// How many such connections this process may hold at once.
    process_locks: Arc<Semaphore>,
}

/// Locks across processes held or awaited at once by one process, each on a connection of its own.
const MAX_PROCESS_LOCKS: usize = 8;
/// How long [`Database::lock_across_processes`] waits for the lock itself, on the server: longer
/// than a holder's work (a data-subject request's calls to every service, each with its timeout).
const PROCESS_LOCK_WAIT: Duration = Duration::from_secs(300);

/// A database URL, which may hold a password: never shown by `Debug`.
#[derive(Clone)]
struct DatabaseUrl(Arc<str>);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DatabaseUrl(..)")
    }
}

/// A lock that every process on the same database respects, held until dropped or released;
/// see [`Database::lock_across_processes`].
#[derive(Debug)]
pub struct ProcessLock {
    /// PostgreSQL: the session that holds the advisory lock. Its end releases the lock, whether
    /// closed by [`Self::release`] or dropped.
    session: Option<AnyConnection>,
    _turn: Option<OwnedSemaphorePermit>,
}

impl ProcessLock {
    pub async fn release(mut self) {
        if let Some(session) = self.session.take()
            && let Err(error) = session.close().await
        {
            tracing::warn!(%error, "closing an advisory lock's session failed; the server releases it when it notices");
        }
    }
}

/// A transaction of a [`Database`]; on SQLite a writing one holds the process's write turn until
/// it commits or is dropped. Dereferences to the connection, as `sqlx::Transaction` does.
#[derive(Debug)]
pub struct DbTransaction {
    transaction: Transaction<'static, Any>,
    _turn: Option<OwnedSemaphorePermit>,
}

impl DbTransaction {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.transaction.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.transaction.rollback().await
    }
}

impl Deref for DbTransaction {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.transaction
    }
}

impl DerefMut for DbTransaction {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.transaction
    }
}

/// What a commit on the embedded SQLite survives before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// A crash of the process (`synchronous = NORMAL` in WAL mode).
    Crash,
    /// A power cut too (`synchronous = FULL`): the WAL is synced at every commit.
    PowerLoss,
}

/// The settings of each embedded connection.
fn sqlite_settings(durability: Durability) -> &'static str {
    match durability {
        Durability::Crash => {
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
             PRAGMA wal_autocheckpoint = 8000; PRAGMA secure_delete = ON"
        }
        Durability::PowerLoss => {
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
             PRAGMA wal_autocheckpoint = 8000; PRAGMA secure_delete = ON"
        }
    }
}

fn pool_options(backend: Backend, max_connections: u32, durability: Durability) -> AnyPoolOptions {
    let options = AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(Duration::from_secs(5));
    if backend == Backend::Postgres {
        return options;
    }
    // An embedded file's connection does not go stale as a network one does, and a ping before
    // each acquire is one more exchange with the connection's worker thread.
    let options = options.test_before_acquire(false);
    // Settings of each connection (the journal mode is the file's, set once). In WAL mode,
    // NORMAL syncs at checkpoints rather than at every commit: a crash of the process loses
    // nothing; a power cut may roll back the last commits (the embedded mode's trade-off;
    // production runs PostgreSQL). A checkpoint copies the pages the WAL holds into the database
    // and syncs it, inside the commit that crosses the threshold: at 8,000 pages instead of
    // SQLite's 1,000, a page that many commits rewrite (a table's or an index's last leaf) is
    // copied once for many more commits, and commits pay for a checkpoint an eighth as often.
    // `secure_delete` overwrites what a delete or an update frees with zeros, so that erased data
    // does not linger in free pages; the WAL's older copies of pages go when a service that
    // erased calls [`Database::truncate_log`].
    // A store that acknowledges what others then forget (ai-governance's log, whose acknowledged
    // batches the relays delete from their outboxes) syncs every commit instead.
    let settings = sqlite_settings(durability);
    options.after_connect(move |connection, _| {
        Box::pin(async move {
            sqlx::raw_sql(settings).execute(connection).await?;
            Ok(())
        })
    })
}

/// Why a database's applied migrations are not `migrator`'s, in words an operator can act on: the
/// database of another component (its first migration is another), or one a newer version of
/// this component migrated (a migration this version does not have).
async fn foreign_migrations(pool: &AnyPool, migrator: &Migrator, error: &MigrateError) -> String {
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let ours = |version: i64| migrator.iter().find(|migration| migration.version == version);
    let first_applied = applied.first();
    let another = first_applied.is_some_and(|(version, description)| {
        ours(*version).is_none_or(|migration| migration.description.as_ref() != description.as_str())
    });
    if another {
        let (version, description) = first_applied.expect("checked above");
        return format!(
            "the database holds another component's tables (its migration {version} is {description:?}, not this \
             one's): give each service and the gateway a database of its own ({error})"
        );
    }
    match applied.iter().find(|(version, _)| ours(*version).is_none()) {
        Some((version, description)) => format!(
            "the database was migrated by a newer version of this component (its migration {version}, \
             {description:?}, is not one this version has): run that version, or restore a backup taken before \
             the upgrade ({error})"
        ),
        None => format!("the database's applied migrations differ from this version's ({error})"),
    }
}

impl Database {
    /// Connects (creating an SQLite file and its folder when missing) and runs `migrator`. An
    /// embedded commit survives a crash of the process, not always a power cut.
    pub async fn connect(url: &str, migrator: &Migrator) -> Result<Self, StoreError> {
        Self::open(url, migrator, Durability::Crash).await
    }

    /// As [`Database::connect`], but an embedded commit survives a power cut too, at the cost of
    /// a sync of the file per commit: for a store that acknowledges what others then forget.
    pub async fn connect_durable(url: &str, migrator: &Migrator) -> Result<Self, StoreError> {
        Self::open(url, migrator, Durability::PowerLoss).await
    }

    async fn open(url: &str, migrator: &Migrator, durability: Durability) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend: Backend = url.parse()?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let max_connections = match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 10,
        };
        // One connection first, made directly: a refused connection, an unknown database or a file
        // that cannot be written says so, where the pool would retry until its timeout and say only
        // that it timed out.
        let mut probe = AnyConnection::connect(&url).await?;
        if backend == Backend::Sqlite {
            sqlx::raw_sql(sqlite_settings(durability)).execute(&mut probe).await?;
            sqlx::query("PRAGMA journal_mode = WAL").execute(&mut probe).await?;
        }
        probe.close().await?;
        let pool = pool_options(backend, max_connections, durability).connect(&url).await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        match migrator.run(&pool).await {
            Err(error @ (MigrateError::VersionMissing(_) | MigrateError::VersionMismatch(_))) => {
                return Err(StoreError::ForeignMigrations(foreign_migrations(&pool, migrator, &error).await));
            }
            result => result?,
        }
        // An in-memory database exists once per pool: it has no writer of its own.
        let writer = match backend {
            Backend::Sqlite if !url.contains(":memory:") => {
                Some(pool_options(backend, 1, durability).connect(&url).await?)
            }
            Backend::Sqlite | Backend::Postgres => None,
        };
        let writers = Arc::new(Semaphore::new(1));
        let grouped = (backend == Backend::Sqlite)
            .then(|| grouped::start(writer.as_ref().unwrap_or(&pool).clone(), writers.clone()));
        let url = (backend == Backend::Postgres).then(|| DatabaseUrl(Arc::from(url.as_str())));
        let process_locks = Arc::new(Semaphore::new(MAX_PROCESS_LOCKS));
        Ok(Self { pool, writer, backend, row_level_security: false, writers, grouped, url, process_locks })
    }

    /// Where write transactions run: on SQLite, the writer connection.
    fn write_pool(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// On the embedded database, copies the write-ahead log into the database and empties it, so
    /// that the earlier versions of pages it holds (the data an erasure just overwrote) are gone
    /// from disk; best effort, as a reader still on an older snapshot keeps the log in use. A no-op
    /// on PostgreSQL.
    /// Runs in the process's write turn, on the writer connection, so that it does not hold
    /// SQLite's write lock against the grouped writer.
    pub async fn truncate_log(&self) {
        if self.backend() != Backend::Sqlite {
            return;
        }
        let Ok(Ok(_turn)) = tokio::time::timeout(WRITE_WAIT, self.writers.clone().acquire_owned()).await else {
            tracing::warn!("the write-ahead log was not emptied: no write turn came");
            return;
        };
        // One row: whether a reader or writer kept it from finishing, and the pages in the log.
        match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(self.write_pool()).await {
            Ok(row) if row.try_get::<i64, _>(0).is_ok_and(|busy| busy == 0) => {}
            Ok(_) => tracing::warn!("the write-ahead log was not emptied: a reader still uses it"),
            Err(error) => tracing::warn!(%error, "cannot empty the write-ahead log"),
        }
    }

    /// [`Database::truncate_log`] on a task of its own, so that the caller answers without
    /// waiting for a write turn and the checkpoint: what it erased is committed already.
    pub fn truncate_log_soon(&self) {
        if self.backend() == Backend::Sqlite {
            let database = self.clone();
            tokio::spawn(async move { database.truncate_log().await });
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so that a transaction that reads before it writes waits for another
    /// writer instead of failing with `SQLITE_BUSY` when it upgrades its lock.
    pub async fn begin_write(&self) -> Result<DbTransaction, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let turn = tokio::time::timeout(WRITE_WAIT, self.writers.clone().acquire_owned())
                    .await
                    .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
                    .expect("the writers' semaphore is never closed");
                let transaction = self.write_pool().begin_with("BEGIN IMMEDIATE").await?;
                Ok(DbTransaction { transaction, _turn: Some(turn) })
            }
            Backend::Postgres => Ok(DbTransaction { transaction: self.pool.begin().await?, _turn: None }),
        }
    }

    /// Runs one statement that writes, outside any other transaction (on SQLite in the
    /// process's write turn).
    pub async fn execute_write<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> Result<u64, StoreError> {
        execute_in(self.begin_write().await?, query).await
    }

    /// As [`Self::execute_write`], on behalf of `tenant_id` (see [`Self::begin_tenant`]).
    pub async fn execute_tenant_write<'q>(
        &self,
        tenant_id: &str,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> Result<u64, StoreError> {
        execute_in(self.begin_tenant(tenant_id).await?, query).await
    }

    /// SQLite only: commits `write` (see [`KeyedWrite`]) and returns whether it took effect. The
    /// writes that other tasks submit meanwhile go in the same transaction (group commit): one
    /// `BEGIN IMMEDIATE; …; COMMIT` in one exchange with the writer connection's thread. A write
    /// whose statement fails fails alone: the group is rolled back and each of its writes is
    /// retried in a transaction of its own. The write goes on if the caller stops waiting.
    pub async fn write_keyed(&self, write: KeyedWrite) -> Result<bool, StoreError> {
        let grouped = self.grouped.as_ref().expect("write_keyed runs on SQLite only");
        let (reply, answer) = oneshot::channel();
        grouped.sender.send((write, reply)).map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
    }

    /// Begins a write transaction on behalf of `tenant_id`. On PostgreSQL with row-level
    /// security enabled, the transaction takes [`TENANT_ROLE`] and sets `aigronova.tenant_id`, so
    /// that a query that forgets its tenant filter still sees only this tenant's rows.
    pub async fn begin_tenant(&self, tenant_id: &str) -> Result<DbTransaction, StoreError> {
        let transaction = self.begin_write().await?;
        self.enter_tenant(transaction, tenant_id).await
    }

    /// Begins a transaction that only reads, on behalf of `tenant_id`, whose statements all see
    /// the database as it was at its first: on PostgreSQL as [`Self::begin_tenant`], at
    /// `REPEATABLE READ` and read-only; on SQLite a deferred transaction, which does not wait for
    /// writers (and, as every SQLite transaction, reads one snapshot).
    pub async fn begin_tenant_read(&self, tenant_id: &str) -> Result<DbTransaction, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(DbTransaction { transaction: self.pool.begin().await?, _turn: None }),
            Backend::Postgres => {
                let transaction = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
                self.enter_tenant(DbTransaction { transaction, _turn: None }, tenant_id).await
            }
        }
    }

    /// As [`Self::begin_tenant`], for a transaction that reads several tables and then writes
    /// only new rows (the audit event of what it read): on PostgreSQL at `REPEATABLE READ`, so
    /// that its reads agree with one another while other transactions commit.
    pub async fn begin_tenant_snapshot(&self, tenant_id: &str) -> Result<DbTransaction, StoreError> {
        match self.backend {
            Backend::Sqlite => self.begin_tenant(tenant_id).await,
            Backend::Postgres => {
                let transaction = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
                self.enter_tenant(DbTransaction { transaction, _turn: None }, tenant_id).await
            }
        }
    }

    /// With row-level security enabled, makes `transaction` act for `tenant_id` only.
    async fn enter_tenant(&self, mut transaction: DbTransaction, tenant_id: &str) -> Result<DbTransaction, StoreError> {
        if self.row_level_security {
            sqlx::query("SELECT set_config('aigronova.tenant_id', $1, true)")
                .bind(tenant_id)
                .execute(&mut *transaction)
                .await?;
            sqlx::raw_sql("SET LOCAL ROLE aigronova_tenant").execute(&mut *transaction).await?;
        }
        Ok(transaction)
    }

    /// Waits for, takes and returns the lock named `key` that every process on this database
    /// respects: on PostgreSQL a session-level advisory lock on a connection of its own (outside
    /// the pool, which the lock's holder may still need), keyed by the first 8 bytes of `key`'s
    /// SHA-256; at most [`MAX_PROCESS_LOCKS`] such connections at once in a process, and
    /// an error after five minutes without the lock. `key` is visible to the server's users (in
    /// `pg_locks`): it must not be guessable from personal data. On SQLite, whose embedded
    /// database one process opens, a lock that holds nothing: the process's own locks suffice.
    pub async fn lock_across_processes(&self, key: &str) -> Result<ProcessLock, StoreError> {
        let Some(DatabaseUrl(url)) = &self.url else {
            return Ok(ProcessLock { session: None, _turn: None });
        };
        let digest = Sha256::digest(key.as_bytes());
        let id = i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
        let locking = async {
            let turn = self.process_locks.clone().acquire_owned().await.expect("the semaphore is never closed");
            let mut session = AnyConnection::connect(url).await?;
            // The server gives up waiting by itself, so that a wait this process abandons does
            // not keep a backend waiting for the lock.
            let wait = format!("SET lock_timeout = '{}s'", PROCESS_LOCK_WAIT.as_secs());
            sqlx::raw_sql(sqlx::AssertSqlSafe(wait)).execute(&mut session).await?;
            // Counted, so that the row holds an integer rather than the function's `void`.
            sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_lock($1)) AS locked")
                .bind(id)
                .fetch_one(&mut session)
                .await
                .map_err(|error| match &error {
                    // lock_not_available: the wait ran out, which is "try later", not a fault.
                    sqlx::Error::Database(database) if database.code().as_deref() == Some("55P03") => {
                        StoreError::Database(sqlx::Error::PoolTimedOut)
                    }
                    _ => StoreError::from(error),
                })?;
            Ok::<_, StoreError>(ProcessLock { session: Some(session), _turn: Some(turn) })
        };
        // A little longer than the server's own limit, which answers first with its error.
        tokio::time::timeout(PROCESS_LOCK_WAIT + Duration::from_secs(10), locking)
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
    }

    /// On PostgreSQL, puts `tables` (each with a `tenant_id` column) under row-level security: a
    /// policy admits only rows of the transaction's `aigronova.tenant_id`, for [`TENANT_ROLE`],
    /// which [`Self::begin_tenant`] takes. The service's own role (the tables' owner) is not
    /// restricted, for work across tenants (the outbox relay, migrations). Nothing on SQLite.
    pub async fn enable_row_level_security(&mut self, tables: &[&str]) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        // Created here when the connecting user may; otherwise a DBA creates the role and grants it
        // to the user beforehand (deploy/README.md), and these are no-ops.
        let mut statements = vec![
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aigronova_tenant') THEN \
             CREATE ROLE aigronova_tenant NOLOGIN; END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                .to_owned(),
            "DO $$ BEGIN IF NOT pg_has_role(current_user, 'aigronova_tenant', 'MEMBER') THEN \
             EXECUTE format('GRANT aigronova_tenant TO %I', current_user); END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
                .to_owned(),
        ];
        for table in tables {
            statements.push(format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO aigronova_tenant"));
            statements.push(format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"));
            statements.push(format!(
                "DO $$ BEGIN CREATE POLICY tenant_isolation ON {table} \
                 USING (tenant_id = current_setting('aigronova.tenant_id', true)) \
                 WITH CHECK (tenant_id = current_setting('aigronova.tenant_id', true)); \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ));
        }
        for statement in statements {
            // Roles are shared by the whole cluster: services starting together may race on them.
            let mut attempt = 0;
            loop {
                match sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone())).execute(&self.pool).await {
                    Ok(_) => break,
                    Err(error) if attempt < 5 => {
                        attempt += 1;
                        tracing::debug!(%error, attempt, "row-level security setup retried");
                        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        self.row_level_security = true;
        Ok(())
    }

    /// Checks that the database answers (readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pools and waits for the group writer to close its connection: on SQLite, the
    /// files are complete once this returns.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        if let Some(grouped) = &self.grouped {
            grouped.stopped().await;
        }
    }
}

/// Runs `query` in `transaction` and commits it: the rows it changed.
async fn execute_in(
    mut transaction: DbTransaction,
    query: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
) -> Result<u64, StoreError> {
    let done = query.execute(&mut *transaction).await?.rows_affected();
    transaction.commit().await?;
    Ok(done)
}

/// `sqlite:<path>` with the file created on first use.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:"
        && let Some(folder) = Path::new(path).parent().filter(|folder| !folder.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder)?;
    }
    let mut options: Vec<&str> = query.split('&').filter(|option| !option.is_empty()).collect();
    if !options.iter().any(|option| option.starts_with("mode=")) {
        options.push("mode=rwc");
    }
    Ok(format!("sqlite://{path}?{}", options.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/db.sqlite");
        let url = sqlite_url(&format!("sqlite://{}", path.display())).unwrap();
        assert_eq!(url, format!("sqlite://{}?mode=rwc", path.display()));
        assert!(path.parent().unwrap().is_dir());
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(matches!("mysql://x".parse::<Backend>(), Err(StoreError::UnsupportedUrl)));
    }

    async fn count(database: &Database) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(database.pool()).await.unwrap()
    }

    fn keyed(first: &str, second: &str) -> KeyedWrite {
        KeyedWrite {
            statements: "INSERT INTO t VALUES ($1); INSERT INTO t SELECT $2 WHERE changes() = 1 RETURNING x".into(),
            params: vec![first.into(), second.into()],
            key: second.to_owned(),
        }
    }

    /// An SQLite database `batch.db` in `dir` with a table `t` of unique texts, and its URL.
    async fn table_of_unique_texts(dir: &Path) -> (Database, String) {
        let url = format!("sqlite://{}", dir.join("batch.db").display());
        let database = Database::connect(&url, &Migrator::DEFAULT).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (x TEXT UNIQUE NOT NULL)").execute(database.pool()).await.unwrap();
        (database, url)
    }

    #[tokio::test]
    async fn a_durable_database_syncs_every_commit_on_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let synchronous = |database: Database| async move {
            // The pool's connections and the writer's.
            let mut levels = Vec::new();
            for _ in 0..3 {
                levels
                    .push(sqlx::query_scalar::<_, i32>("PRAGMA synchronous").fetch_one(database.pool()).await.unwrap());
            }
            let writer = database.writer.clone().expect("an embedded file has a writer");
            levels.push(sqlx::query_scalar::<_, i32>("PRAGMA synchronous").fetch_one(&writer).await.unwrap());
            levels
        };
        let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        let durable = Database::connect_durable(&url("durable.db"), &Migrator::DEFAULT).await.unwrap();
        let crash_safe = Database::connect(&url("crash-safe.db"), &Migrator::DEFAULT).await.unwrap();
        // SQLite's levels: 1 is NORMAL, 2 is FULL.
        assert_eq!(synchronous(durable).await, [2, 2, 2, 2]);
        assert_eq!(synchronous(crash_safe).await, [1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn keyed_writes_commit_whole_or_not_at_all_alone_and_in_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (database, url) = table_of_unique_texts(dir.path()).await;

        assert!(database.write_keyed(keyed("a", "b")).await.unwrap());
        assert_eq!(count(&database).await, 2);

        // The second statement fails on the unique key: the first one's row goes too.
        let failed = database.write_keyed(keyed("c", "a")).await;
        assert!(matches!(failed, Err(StoreError::Database(_))), "{failed:?}");
        assert_eq!(count(&database).await, 2);

        // Submitted together, the writes share transactions; the one at fault fails alone and the
        // writer connection is left outside any transaction.
        let writes: Vec<_> = (0..40)
            .map(|round| {
                let database = database.clone();
                let write =
                    if round == 17 { keyed("f", "b") } else { keyed(&format!("d{round}"), &format!("e{round}")) };
                tokio::spawn(async move { database.write_keyed(write).await })
            })
            .collect();
        let mut results = Vec::new();
        for write in writes {
            results.push(write.await.unwrap());
        }
        for (round, result) in results.iter().enumerate() {
            assert_eq!(result.is_ok(), round != 17, "write {round}: {result:?}");
        }
        assert_eq!(count(&database).await, 2 + 39 * 2);
        assert!(database.write_keyed(keyed("g", "h")).await.unwrap());
        assert_eq!(count(&database).await, 2 + 39 * 2 + 2);

        // Once closed, every connection is: the last one folded the WAL into the file.
        database.close().await;
        assert!(!dir.path().join("batch.db-wal").exists(), "a connection is still open");
        assert!(matches!(database.write_keyed(keyed("i", "j")).await, Err(StoreError::Database(_))));
        let reopened = Database::connect(&url, &Migrator::DEFAULT).await.unwrap();
        assert_eq!(count(&reopened).await, 2 + 39 * 2 + 2);
    }

    #[tokio::test]
    async fn a_keyed_write_that_changes_nothing_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (database, _) = table_of_unique_texts(dir.path()).await;
        let write = KeyedWrite {
            statements: "INSERT INTO t SELECT $1 WHERE 0; INSERT INTO t SELECT $2 WHERE changes() = 1 RETURNING x"
                .into(),
            params: vec!["a".into(), "b".into()],
            key: "b".into(),
        };
        assert!(!database.write_keyed(write).await.unwrap());
        assert_eq!(count(&database).await, 0);
    }
}
