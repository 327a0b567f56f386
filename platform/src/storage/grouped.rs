//! Group commit on SQLite: the writes that concurrent callers submit while a transaction runs are
//! committed together in the next one, in one exchange with the writer connection's thread,
//! instead of one transaction and one exchange each.

use std::{collections::HashSet, fmt::Write as _, sync::Arc};

use sqlx::{Any, AnyConnection, AnyPool, Connection, Row, any::AnyArguments, query::Query};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::{StoreError, WRITE_WAIT};

/// The most writes one transaction takes.
const MAX_GROUP: usize = 32;

/// A value bound to a `$n` parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Text(String),
    Real(f64),
    Integer(i64),
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl From<f64> for Param {
    fn from(value: f64) -> Self {
        Self::Real(value)
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Self::Integer(value)
    }
}

/// Binds `params`, in order, to the next parameters of `query`.
pub fn bind_params<'q>(
    mut query: Query<'q, Any, AnyArguments>,
    params: impl IntoIterator<Item = Param>,
) -> Query<'q, Any, AnyArguments> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text),
            Param::Real(real) => query.bind(real),
            Param::Integer(integer) => query.bind(integer),
        };
    }
    query
}

/// One write of a group: `statements` (separated by `;`, without `BEGIN` or `COMMIT`) with
/// parameters `$1`… bound to `params`. The write took effect when one of its statements returns
/// `key` in its first column (`… RETURNING <the key's column>`).
#[derive(Clone, Debug)]
pub struct KeyedWrite {
    pub statements: String,
    pub params: Vec<Param>,
    pub key: String,
}

pub(super) type Submission = (KeyedWrite, oneshot::Sender<Result<bool, StoreError>>);

/// Starts the task that commits the writes sent to the returned sender, in groups, in the
/// writers' turn, on a connection of its own taken out of `pool` (so that no check runs each time
/// it would go back to the pool). It stops, closing its connection, when `pool` closes or every
/// sender is gone.
pub(super) fn start(pool: AnyPool, writers: Arc<Semaphore>) -> Grouper {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Submission>();
    let (running, stopped) = watch::channel(());
    tokio::spawn(async move {
        let _running = running;
        let closed = pool.close_event();
        tokio::pin!(closed);
        let mut writer = Writer { pool, writers, connection: None };
        let mut group = Vec::with_capacity(MAX_GROUP);
        loop {
            tokio::select! {
                received = receiver.recv_many(&mut group, MAX_GROUP) => {
                    if received == 0 {
                        break;
                    }
                    writer.commit(std::mem::take(&mut group)).await;
                }
                () = &mut closed => break,
            }
        }
        if let Some(connection) = writer.connection.take() {
            let _ = connection.close().await;
        }
    });
    Grouper { sender, stopped }
}

/// The handle of a writer task: where writes go, and whether it has stopped.
#[derive(Clone, Debug)]
pub(super) struct Grouper {
    pub(super) sender: mpsc::UnboundedSender<Submission>,
    /// Closed when the task has stopped and closed its connection.
    stopped: watch::Receiver<()>,
}

impl Grouper {
    /// Waits until the task has stopped (after its pool closed) and closed its connection.
    pub(super) async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        while stopped.changed().await.is_ok() {}
    }
}

struct Writer {
    pool: AnyPool,
    writers: Arc<Semaphore>,
    /// Taken from `pool` on first use, and again after a failure left it unusable.
    connection: Option<AnyConnection>,
}

impl Writer {
    /// Commits `group` in one transaction. When that fails, each write is tried in a transaction
    /// of its own, so that only the write at fault fails.
    async fn commit(&mut self, group: Vec<Submission>) {
        if group.len() > 1 {
            let writes: Vec<&KeyedWrite> = group.iter().map(|(write, _)| write).collect();
            if let Ok(keys) = self.run(&writes).await {
                for (write, reply) in group {
                    let _ = reply.send(Ok(keys.contains(&write.key)));
                }
                return;
            }
        }
        for (write, reply) in group {
            let result = self.run(&[&write]).await.map(|keys| keys.contains(&write.key));
            let _ = reply.send(result);
        }
    }

    /// Runs `writes` as one transaction, in one exchange with the connection's worker thread, and
    /// returns the keys their statements returned. A statement that fails rolls them all back.
    async fn run(&mut self, writes: &[&KeyedWrite]) -> Result<HashSet<String>, StoreError> {
        let mut sql = String::from("BEGIN IMMEDIATE; ");
        let mut offset = 0;
        for write in writes {
            renumber(&write.statements, offset, &mut sql);
            sql.push_str("; ");
            offset += write.params.len();
        }
        sql.push_str("COMMIT");
        let query = bind_params(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            writes.iter().flat_map(|write| write.params.iter().cloned()),
        );

        let _turn = tokio::time::timeout(WRITE_WAIT, self.writers.acquire())
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
            .expect("the writers' semaphore is never closed");
        let connection = match &mut self.connection {
            Some(connection) => connection,
            empty => empty.insert(self.pool.acquire().await?.detach()),
        };
        match query.fetch_all(&mut *connection).await {
            Ok(rows) => Ok(rows.iter().filter_map(|row| row.try_get::<String, _>(0).ok()).collect()),
            Err(error) => {
                // Nothing after the failed statement ran: the transaction is open, unless `BEGIN`
                // itself failed. A connection that cannot roll back is not used again.
                if let Err(rollback) = sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await
                    && !rollback.to_string().contains("no transaction is active")
                {
                    self.connection = None;
                }
                Err(StoreError::Database(error))
            }
        }
    }
}

/// Appends `statements` to `out` with each `$n` parameter outside quotes made `$(n + offset)`.
fn renumber(statements: &str, offset: usize, out: &mut String) {
    let bytes = statements.as_bytes();
    let mut quote = None;
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        match (quote, bytes[at]) {
            (Some(open), byte) if byte == open => quote = None,
            (None, byte @ (b'\'' | b'"')) => quote = Some(byte),
            (None, b'$') => {
                let digits = bytes[at + 1..].iter().take_while(|byte| byte.is_ascii_digit()).count();
                if digits > 0 {
                    let number: usize = statements[at + 1..at + 1 + digits].parse().expect("ASCII digits");
                    out.push_str(&statements[copied..at]);
                    write!(out, "${}", number + offset).expect("writing to a String");
                    at += 1 + digits;
                    copied = at;
                    continue;
                }
            }
            _ => {}
        }
        at += 1;
    }
    out.push_str(&statements[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renumbered(statements: &str, offset: usize) -> String {
        let mut out = String::new();
        renumber(statements, offset, &mut out);
        out
    }

    #[test]
    fn parameters_shift_by_the_offset_and_quoted_text_stays() {
        assert_eq!(
            renumbered("INSERT INTO t VALUES ($1, $12, '$3', \"$4\", 'it''s $5') RETURNING $1", 10),
            "INSERT INTO t VALUES ($11, $22, '$3', \"$4\", 'it''s $5') RETURNING $11"
        );
        assert_eq!(renumbered("SELECT $ FROM é WHERE x = $2", 1), "SELECT $ FROM é WHERE x = $3");
    }
}
