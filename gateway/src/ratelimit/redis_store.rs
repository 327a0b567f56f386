//! The Redis backend, shared by every gateway replica. Each decision is one Lua script, so it is
//! atomic; scripts are sent by SHA (`EVALSHA`) and loaded again when Redis answers `NOSCRIPT`.
//!
//! Time comes from Redis (`TIME`) inside the rate script, not from the replicas: their clocks
//! drift apart, and a replica running ahead would otherwise spend the others' burst. Keys of one
//! tenant share a hash tag (`{tenant}`), so the script is valid on Redis Cluster too.

use std::time::Duration;

use redis::{
    Client, RedisError, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{
    gcra::{Gcra, Outcome},
    local::QuotaOutcome,
};

/// GCRA over every key at once. KEYS: the TAT of each limit. ARGV: for each key, its emission
/// interval (µs) and burst. Returns `allowed` (1 or 0), then each key's backlog (TAT − now, µs)
/// after the decision. Mirrors `gcra::admit`.
const RATE_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local backlogs = {}
local allowed = 1
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  local backlog = math.max(tat - now, 0)
  if backlog > tolerance then
    -- Only a clock that stepped back leaves a TAT past a whole burst: brought back to one.
    backlog = tolerance
    redis.call('SET', key, string.format('%.0f', now + backlog), 'PX', math.ceil(backlog / 1000))
  end
  backlogs[i] = backlog
  if backlog + interval > tolerance then allowed = 0 end
end
if allowed == 1 then
  for i, key in ipairs(KEYS) do
    backlogs[i] = backlogs[i] + tonumber(ARGV[2 * i - 1])
    redis.call('SET', key, string.format('%.0f', now + backlogs[i]), 'PX', math.ceil(backlogs[i] / 1000))
  end
end
table.insert(backlogs, 1, allowed)
return backlogs
";

/// Units of the month's inference quota for one call (one a row scored), all or none: none when
/// they do not all fit. KEYS[1]: the month's counter. ARGV: the quota, when the counter expires
/// (UNIX seconds), and the units. Returns `{granted, used}`.
const QUOTA_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[3]) > tonumber(ARGV[1]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], ARGV[3])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return {1, used}
";

/// Gives a call's units back (ARGV[1]), never going below zero. KEYS[1]: the month's counter.
const REFUND_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local units = math.min(used, tonumber(ARGV[1]))
if units > 0 then return redis.call('DECRBY', KEYS[1], units) end
return used
";

/// How long a month's counter outlives the month, so that a refund that crosses midnight finds it.
const COUNTER_GRACE_SECS: u64 = 7 * 24 * 3600;

pub(super) struct RedisBackend {
    connection: ConnectionManager,
    prefix: String,
    rate: Script,
    quota: Script,
    refund: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// `attempt`, and once more when it failed on a connection Redis had dropped (a restart, a
/// killed client): the connection manager replaces a connection only once a command has failed on
/// it, which would otherwise be the first call after every outage. A refused connection or a
/// timeout is not tried again: Redis is down, and the failure policy decides.
pub(crate) async fn on_a_live_connection<T, Attempt: Future<Output = Result<T, RedisError>>>(
    mut attempt: impl FnMut() -> Attempt,
) -> Result<T, RedisError> {
    match attempt().await {
        Err(error) if error.is_connection_dropped() && !error.is_connection_refusal() && !error.is_timeout() => {
            attempt().await
        }
        result => result,
    }
}

/// How long a sweep of one tenant's rate limits may take in all.
const FORGET_WITHIN: Duration = Duration::from_secs(10);

impl RedisBackend {
    /// A connection manager that connects on first use and reconnects after failures, each
    /// attempt and each command bounded by `timeout`, without retrying within one request: a
    /// request waits for one attempt at most, then the failure policy decides.
    pub(super) fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            rate: Script::new(RATE_SCRIPT),
            quota: Script::new(QUOTA_SCRIPT),
            refund: Script::new(REFUND_SCRIPT),
        })
    }

    pub(super) async fn ping(&self) -> Result<(), RedisError> {
        on_a_live_connection(|| async { redis::cmd("PING").query_async::<String>(&mut self.connection.clone()).await })
            .await
            .map(drop)
    }

    /// The Redis key of a subject: the tenant as hash tag, then the subject within it.
    pub(super) fn rate_key(&self, tenant_id: &str, subject: &str) -> String {
        format!("{}rate:{{{tenant_id}}}:{subject}", self.prefix)
    }

    fn quota_key(&self, tenant_id: &str, month: &str) -> String {
        format!("{}inference:{{{tenant_id}}}:{month}", self.prefix)
    }

    pub(super) async fn acquire(&self, keys: &[String], limits: &[Gcra]) -> Result<Outcome, RedisError> {
        let mut invocation = self.rate.prepare_invoke();
        for (key, limit) in keys.iter().zip(limits) {
            invocation.key(key).arg(limit.interval()).arg(limit.burst());
        }
        let reply: Vec<u64> =
            on_a_live_connection(|| async { invocation.invoke_async(&mut self.connection.clone()).await }).await?;
        match reply.split_first() {
            Some((allowed, backlogs)) if backlogs.len() == keys.len() => {
                Ok(Outcome { allowed: *allowed == 1, backlogs: backlogs.to_vec() })
            }
            _ => Err(RedisError::from((redis::ErrorKind::UnexpectedReturnType, "rate script reply"))),
        }
    }

    /// Deletes every rate state of `tenant_id` (its keys found by `SCAN`, a page at a time).
    pub(super) async fn forget_tenant(&self, tenant_id: &str) -> Result<(), RedisError> {
        let escaped: String = self
            .rate_key(tenant_id, "")
            .chars()
            .flat_map(|c| {
                let special = matches!(c, '*' | '?' | '[' | ']' | '\\');
                special.then_some('\\').into_iter().chain([c])
            })
            .collect();
        let pattern = format!("{escaped}*");
        // From the first page again on a connection that had dropped (Redis restarted, say).
        let sweep = || async {
            let mut connection = self.connection.clone();
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut connection)
                    .await?;
                if !keys.is_empty() {
                    redis::cmd("UNLINK").arg(&keys).query_async::<i64>(&mut connection).await?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        };
        // A Redis shared with much else is walked whole: within a bound, not for as long as it takes.
        match tokio::time::timeout(FORGET_WITHIN, on_a_live_connection(sweep)).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from((
                redis::ErrorKind::Io,
                "the sweep of the tenant's rate limits took too long",
                format!("more than {} s", FORGET_WITHIN.as_secs()),
            ))),
        }
    }

    pub(super) async fn reserve_inference(
        &self,
        tenant_id: &str,
        month: &str,
        month_end: u64,
        quota: u64,
        units: u64,
    ) -> Result<QuotaOutcome, RedisError> {
        let mut invocation = self.quota.key(self.quota_key(tenant_id, month));
        invocation.arg(quota).arg(month_end + COUNTER_GRACE_SECS).arg(units);
        let (granted, used): (u8, u64) =
            on_a_live_connection(|| async { invocation.invoke_async(&mut self.connection.clone()).await }).await?;
        Ok(QuotaOutcome { granted: granted == 1, used })
    }

    /// The tenant's inference units counted in `month`.
    pub(super) async fn inference_used(&self, tenant_id: &str, month: &str) -> Result<u64, RedisError> {
        let key = self.quota_key(tenant_id, month);
        let used: Option<u64> = on_a_live_connection(|| async {
            redis::cmd("GET").arg(&key).query_async(&mut self.connection.clone()).await
        })
        .await?;
        Ok(used.unwrap_or(0))
    }

    pub(super) async fn refund_inference(&self, tenant_id: &str, month: &str, units: u64) -> Result<(), RedisError> {
        let _: i64 = self
            .refund
            .key(self.quota_key(tenant_id, month))
            .arg(units)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}
