//! A client for the institutions' Open Finance Brasil accounts API (`/open-banking/accounts/v2`):
//! accounts and their transactions, in the API's paged shapes (`data`, `links.next`, `meta`),
//! with a timeout per request, retries with backoff on server errors and timeouts, and a response
//! cache keyed by consent and resource (Redis when configured, in-process otherwise) so that a
//! repeated ingestion within the TTL does not call the institution again. The cache keeps each
//! page sealed with the consent's tenant's data key: accounts and transactions are personal data.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aigronova_platform::crypto::TenantCipher;
use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

/// The consent pages are fetched for, and its tenant's cipher, which seals what the response
/// cache keeps of them.
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    pub consent_id: &'a str,
    pub cipher: &'a TenantCipher,
}

/// How the client talks to institutions.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Deadline of one HTTP request.
    pub timeout: Duration,
    /// Attempts of one request, the first included.
    pub attempts: u32,
    /// The first wait between attempts; doubled each time.
    pub backoff: Duration,
    /// How long a fetched page is reused.
    pub cache_ttl: Duration,
    /// Pages followed at most for one resource (a guard against a `next` loop).
    pub max_pages: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_millis(100),
            cache_ttl: Duration::from_secs(300),
            max_pages: 1000,
        }
    }
}

/// The transactions asked for a page: the most the Open Finance Brasil APIs allow.
const TRANSACTIONS_PAGE_SIZE: u32 = 1000;

/// The largest page body read: a page of the most transactions the APIs allow is well under it,
/// and a body past it is refused as it arrives rather than held whole.
pub const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OpenFinanceError {
    #[error("the institution did not answer in time after {attempts} attempts")]
    Timeout { attempts: u32 },
    #[error("the institution had not answered everything asked of it by the call's deadline")]
    OutOfTime,
    #[error("the institution answered {status} after {attempts} attempts")]
    Server { status: u16, attempts: u32 },
    #[error("the institution refused the request ({status}): the consent may be missing, expired or revoked")]
    Refused { status: u16 },
    #[error("the institution cannot be reached: {0}")]
    Unreachable(String),
    #[error("the institution's answer is not in the Open Finance shape: {0}")]
    Malformed(String),
    #[error("more than {0} pages: the institution's `next` links do not end")]
    TooManyPages(usize),
}

/// An account, as the accounts API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub account_id: String,
    pub brand_name: String,
    pub company_cnpj: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub compe_code: String,
    pub branch_code: Option<String>,
    pub number: String,
    pub check_digit: String,
}

/// An amount as the API writes it: a decimal string and its currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub amount: String,
    pub currency: String,
}

impl Amount {
    /// The amount in integer cents; `None` unless it is a decimal of at most 15 whole digits and
    /// four places, as Open Finance Brasil writes amounts (`1000.04`, `1000.0400`); a third and
    /// fourth place are rounded to the nearest cent, half a cent away from zero.
    pub fn cents(&self) -> Option<i64> {
        let text = self.amount.trim();
        let (units, fraction) = text.split_once('.').unwrap_or((text, ""));
        if units.is_empty() || units.len() > 15 || fraction.len() > 4 || !units.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        if !fraction.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let ten_thousandths: i64 = format!("{fraction:0<4}").parse().ok()?;
        let cents = (ten_thousandths + 50) / 100;
        units.parse::<i64>().ok()?.checked_mul(100)?.checked_add(cents)
    }
}

impl Amount {
    /// A balance in integer cents, which may be negative (`-12.50`).
    pub fn signed_cents(&self) -> Option<i64> {
        let text = self.amount.trim();
        match text.strip_prefix('-') {
            Some(rest) => {
                Amount { amount: rest.to_owned(), currency: self.currency.clone() }.cents().map(|cents| -cents)
            }
            None => self.cents(),
        }
    }
}

/// An account's balances, as the balances API returns them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub available_amount: Amount,
    pub blocked_amount: Option<Amount>,
    pub automatically_invested_amount: Option<Amount>,
    pub update_date_time: Option<String>,
}

impl Balance {
    /// The available amount in cents.
    pub fn cents(&self) -> Option<i64> {
        self.available_amount.signed_cents()
    }

    /// When the institution last updated the balance.
    pub fn at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let text = self.update_date_time.as_deref()?;
        chrono::DateTime::parse_from_rfc3339(text).ok().map(|at| at.with_timezone(&chrono::Utc))
    }
}

/// The days of transactions an ingestion asks an institution for, today's included: the longest
/// period the Accounts API answers for.
pub const BOOKING_WINDOW_DAYS: u64 = 365;

/// The booking days an ingestion at `now` asks for, first and last (today in Brasília).
pub fn booking_window(now: chrono::DateTime<chrono::Utc>) -> (chrono::NaiveDate, chrono::NaiveDate) {
    let today = brasilia_date(now);
    (today - chrono::Days::new(BOOKING_WINDOW_DAYS - 1), today)
}

/// Brasília time, in which institutions date bookings, is 3 hours behind UTC (no daylight saving
/// time since 2019).
const BRASILIA_BEHIND_UTC: chrono::Duration = chrono::Duration::hours(3);

/// The date in Brasília at `at`, the calendar institutions date bookings by.
pub(crate) fn brasilia_date(at: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDate {
    (at - BRASILIA_BEHIND_UTC).date_naive()
}

/// The key of the set that lists the cache keys of the pages fetched under `consent_id`.
fn page_index_key(consent_id: &str) -> String {
    format!("openfinance-pages:{consent_id}")
}

/// What the cache keys of the pages fetched under `consent_id` start with.
fn page_key_prefix(consent_id: &str) -> String {
    format!("openfinance:{consent_id}:")
}

#[derive(Deserialize)]
struct Single<T> {
    data: T,
}

/// Where a transaction stands at its institution (`completedAuthorisedPaymentType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Completion {
    /// Done: it has moved the balance.
    TransacaoEfetivada,
    /// Scheduled for a later day.
    LancamentoFuturo,
    /// Still being processed, and may yet not happen.
    TransacaoProcessando,
    /// A state a later version of the API names: not taken for done.
    #[serde(other)]
    Other,
}

/// A transaction of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    pub transaction_id: String,
    pub completed_authorised_payment_type: Completion,
    /// `CREDITO` (money in) or `DEBITO` (money out).
    pub credit_debit_type: String,
    pub transaction_name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub transaction_amount: Amount,
    pub transaction_date_time: String,
}

impl Transaction {
    /// Whether `other` is this transaction sent again, however written: the same amount in cents
    /// (`10.00`, `10.000`), the same instant (`Z`, `+00:00`), the same words.
    fn same_as(&self, other: &Self) -> bool {
        let instant = |t: &Self| chrono::DateTime::parse_from_rfc3339(&t.transaction_date_time).ok();
        let when = match (instant(self), instant(other)) {
            (Some(this), Some(that)) => this == that,
            _ => self.transaction_date_time == other.transaction_date_time,
        };
        let amount = match (self.transaction_amount.cents(), other.transaction_amount.cents()) {
            (Some(this), Some(that)) => this == that,
            _ => self.transaction_amount.amount == other.transaction_amount.amount,
        };
        when && amount
            && self.transaction_amount.currency == other.transaction_amount.currency
            && self.credit_debit_type == other.credit_debit_type
            && self.completed_authorised_payment_type == other.completed_authorised_payment_type
            && self.transaction_name == other.transaction_name
            && self.kind == other.kind
    }
}

#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
    links: Links,
}

#[derive(Deserialize)]
struct Links {
    next: Option<String>,
}

/// Where fetched pages are kept for their TTL.
#[derive(Clone)]
pub enum ResponseCache {
    InProcess(Arc<Mutex<HashMap<String, (Instant, String)>>>),
    Redis { connection: ConnectionManager, prefix: String },
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess(_) => f.write_str("ResponseCache::InProcess"),
            Self::Redis { prefix, .. } => write!(f, "ResponseCache::Redis({prefix})"),
        }
    }
}

impl ResponseCache {
    pub fn in_process() -> Self {
        Self::InProcess(Arc::default())
    }

    /// A cache in the Redis at `url`, its keys under `prefix`.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let connection = ConnectionManager::new(redis::Client::open(url)?).await?;
        Ok(Self::Redis { connection, prefix: prefix.to_owned() })
    }

    /// Forgets every page cached under `consent_id`, so that nothing fetched under a consent
    /// stays in the cache once its customer is erased or the consent revoked or purged. A cache
    /// that cannot be reached is logged: its entries go when their time to live runs out.
    pub async fn forget_consent(&self, consent_id: &str) {
        let key_prefix = page_key_prefix(consent_id);
        match self {
            Self::InProcess(entries) => {
                let mut entries = entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                entries.retain(|key, _| !key.starts_with(&key_prefix));
            }
            Self::Redis { connection, prefix } => {
                // The consent's pages are listed in a set of their own: no scan of the keyspace.
                let index = format!("{prefix}{}", page_index_key(consent_id));
                let mut connection = connection.clone();
                let forgotten: redis::RedisResult<()> = async {
                    let keys: Vec<String> = connection.smembers(&index).await?;
                    let mut pipe = redis::pipe();
                    pipe.atomic().del(&index).ignore();
                    if !keys.is_empty() {
                        pipe.del(keys).ignore();
                    }
                    pipe.query_async::<()>(&mut connection).await
                }
                .await;
                if let Err(error) = forgotten {
                    tracing::warn!(%error, "Open Finance pages of a consent not taken out of the cache; they expire with their TTL");
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Option<String> {
        match self {
            Self::InProcess(entries) => {
                let entries = entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                entries.get(key).filter(|(expires, _)| *expires > Instant::now()).map(|(_, body)| body.clone())
            }
            Self::Redis { connection, prefix } => {
                let result: redis::RedisResult<Option<String>> = connection.clone().get(format!("{prefix}{key}")).await;
                result.unwrap_or_else(|error| {
                    tracing::warn!(%error, "Open Finance cache unavailable; calling the institution");
                    None
                })
            }
        }
    }

    /// Keeps `body` under `key` for `ttl`, listed among the pages of `consent_id`.
    async fn put(&self, consent_id: &str, key: &str, body: &str, ttl: Duration) {
        match self {
            Self::InProcess(entries) => {
                let mut entries = entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                entries.retain(|_, (expires, _)| *expires > now);
                entries.insert(key.to_owned(), (now + ttl, body.to_owned()));
            }
            Self::Redis { connection, prefix } => {
                let seconds = ttl.as_secs().max(1);
                let (key, index) = (format!("{prefix}{key}"), format!("{prefix}{}", page_index_key(consent_id)));
                // The index lives as long as its newest page.
                let result: redis::RedisResult<()> = redis::pipe()
                    .atomic()
                    .set_ex(&key, body, seconds)
                    .ignore()
                    .sadd(&index, &key)
                    .ignore()
                    .expire(&index, i64::try_from(seconds).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async(&mut connection.clone())
                    .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "Open Finance page not cached");
                }
            }
        }
    }
}

/// Calls institutions on behalf of consents.
#[derive(Clone, Debug)]
pub struct OpenFinanceClient {
    http: reqwest::Client,
    settings: ClientSettings,
    cache: ResponseCache,
}

impl OpenFinanceClient {
    /// Where fetched pages are kept.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    pub fn new(settings: ClientSettings, cache: ResponseCache) -> Result<Self, OpenFinanceError> {
        // Institutions are reached over HTTPS through rustls, with the process's crypto provider.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // No redirect is followed: the consent is the bearer of every request, which goes to its
        // institution only (as a page's `next` link is followed within its origin only).
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| OpenFinanceError::Unreachable(error.to_string()))?;
        Ok(Self { http, settings, cache })
    }

    /// Every account the consent gives access to at the institution at `base_url`.
    pub async fn accounts(&self, base_url: &str, grant: Grant<'_>) -> Result<Vec<Account>, OpenFinanceError> {
        let url = format!("{}/open-banking/accounts/v2/accounts", base_url.trim_end_matches('/'));
        let accounts: Vec<Account> = self.all_pages(&url, grant).await?;
        let mut seen = HashSet::new();
        Ok(accounts.into_iter().filter(|account| seen.insert(account.account_id.clone())).collect())
    }

    /// Every transaction of `account_id` booked on the days of `window` (see [`booking_window`])
    /// that has taken place, each once even when a page repeats one. Future entries and those still processing are left for an ingestion after they take
    /// place: they have not moved the balance that statements walk back from, and may not happen.
    pub async fn transactions(
        &self,
        base_url: &str,
        grant: Grant<'_>,
        account_id: &str,
        (from, today): (chrono::NaiveDate, chrono::NaiveDate),
    ) -> Result<Vec<Transaction>, OpenFinanceError> {
        // Without dates an institution answers today's transactions only; without a page size, 25
        // a page.
        let url = format!(
            "{}/open-banking/accounts/v2/accounts/{}/transactions?fromBookingDate={from}&toBookingDate={today}\
             &page-size={TRANSACTIONS_PAGE_SIZE}",
            base_url.trim_end_matches('/'),
            urlencode(account_id)
        );
        let transactions: Vec<Transaction> = self.all_pages(&url, grant).await?;
        let now = chrono::Utc::now();
        let mut seen: HashMap<String, Transaction> = HashMap::new();
        let mut kept = Vec::new();
        for transaction in transactions
            .into_iter()
            .filter(|t| t.completed_authorised_payment_type == Completion::TransacaoEfetivada)
            // One booked after now, whatever it says of itself, has not taken place yet (one whose
            // time does not read is refused as the ingestion stores it).
            .filter(|t| chrono::DateTime::parse_from_rfc3339(&t.transaction_date_time).map_or(true, |at| at <= now))
        {
            // Sent again (pages that overlap): kept once; sent again as another transaction, the
            // answer says two things of one id, and neither is taken.
            match seen.get(&transaction.transaction_id) {
                Some(before) if before.same_as(&transaction) => {}
                Some(_) => {
                    return Err(OpenFinanceError::Malformed(format!(
                        "transaction {} is sent twice, as two different transactions",
                        transaction.transaction_id
                    )));
                }
                None => {
                    seen.insert(transaction.transaction_id.clone(), transaction.clone());
                    kept.push(transaction);
                }
            }
        }
        Ok(kept)
    }

    /// The balances of `account_id`.
    pub async fn balance(
        &self,
        base_url: &str,
        grant: Grant<'_>,
        account_id: &str,
    ) -> Result<Balance, OpenFinanceError> {
        let url = format!(
            "{}/open-banking/accounts/v2/accounts/{}/balances",
            base_url.trim_end_matches('/'),
            urlencode(account_id)
        );
        let single: Single<Balance> = self.page(&url, grant).await?;
        Ok(single.data)
    }

    /// Follows `links.next` from `url`, page by page.
    async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        grant: Grant<'_>,
    ) -> Result<Vec<T>, OpenFinanceError> {
        let mut items = Vec::new();
        let first = reqwest::Url::parse(url).map_err(|error| OpenFinanceError::Unreachable(error.to_string()))?;
        let mut next = Some(first.clone());
        let mut pages = 0;
        while let Some(url) = next {
            pages += 1;
            if pages > self.settings.max_pages {
                return Err(OpenFinanceError::TooManyPages(self.settings.max_pages));
            }
            let page: Page<T> = self.page(url.as_str(), grant).await?;
            items.extend(page.data);
            next = match page.links.next.filter(|next| !next.is_empty()) {
                Some(link) => Some(next_page(&first, &url, &link)?),
                None => None,
            };
        }
        Ok(items)
    }

    /// One page, from the cache or the institution, read as a `T`. The cache holds the body sealed
    /// for its key, and only a body that reads: an answer outside the Open Finance shapes is not
    /// kept, so that the next ingestion asks the institution again. An entry that does not open
    /// (in clear, or another tenant's) or no longer reads is not used.
    async fn page<T: serde::de::DeserializeOwned>(&self, url: &str, grant: Grant<'_>) -> Result<T, OpenFinanceError> {
        let read =
            |body: &str| serde_json::from_str(body).map_err(|error| OpenFinanceError::Malformed(shape_error(&error)));
        let key = format!("{}{url}", page_key_prefix(grant.consent_id));
        let cached = self.cache.get(&key).await.and_then(|sealed| grant.cipher.open(&key, &sealed).ok());
        if let Some(page) = cached.as_deref().and_then(|body| read(body).ok()) {
            return Ok(page);
        }
        let body = self.fetch(url, grant.consent_id).await?;
        let page = read(&body)?;
        self.cache.put(grant.consent_id, &key, &grant.cipher.seal(&key, &body), self.settings.cache_ttl).await;
        Ok(page)
    }

    async fn fetch(&self, url: &str, consent_id: &str) -> Result<String, OpenFinanceError> {
        let mut wait = self.settings.backoff;
        let attempts = self.settings.attempts.max(1);
        let mut last = OpenFinanceError::Unreachable("no attempt made".into());
        for attempt in 1..=attempts {
            let sent = self
                .http
                .get(url)
                .bearer_auth(consent_id)
                .header("x-fapi-interaction-id", uuid::Uuid::new_v4().to_string())
                .send()
                .await;
            last = match sent {
                // A GET of the Accounts API answers 200 with a body; 204 or another 2xx is no
                // answer the API gives, and is told as such rather than as an empty body to parse.
                // A body cut short by the deadline or the connection is retried as the request
                // would have been.
                Ok(response) if response.status() == reqwest::StatusCode::OK => match read_body(response).await {
                    Ok(body) => return Ok(body),
                    Err(BodyError::Failed(error)) if error.is_timeout() => OpenFinanceError::Timeout { attempts },
                    Err(BodyError::Failed(error)) => OpenFinanceError::Unreachable(error.without_url().to_string()),
                    Err(BodyError::TooLarge) => {
                        return Err(OpenFinanceError::Malformed(format!(
                            "a page of more than {} MiB, larger than the Accounts API's pages are",
                            MAX_PAGE_BYTES / (1024 * 1024)
                        )));
                    }
                    Err(BodyError::NotUtf8) => {
                        return Err(OpenFinanceError::Malformed("a page that is not UTF-8 text".into()));
                    }
                },
                Ok(response) if response.status().is_server_error() || response.status().as_u16() == 429 => {
                    OpenFinanceError::Server { status: response.status().as_u16(), attempts }
                }
                // A refusal of the consent (401, 403); any other status (a redirect, a 404 for an
                // account it listed) is an answer outside the API's.
                Ok(response) if matches!(response.status().as_u16(), 401 | 403) => {
                    return Err(OpenFinanceError::Refused { status: response.status().as_u16() });
                }
                Ok(response) => {
                    return Err(OpenFinanceError::Malformed(format!(
                        "it answered HTTP {}, which the Accounts API does not",
                        response.status().as_u16()
                    )));
                }
                Err(error) if error.is_timeout() => OpenFinanceError::Timeout { attempts },
                // Without the URL, which names the customer's account.
                Err(error) => OpenFinanceError::Unreachable(error.without_url().to_string()),
            };
            if attempt < attempts {
                tracing::debug!(error = %last, attempt, "Open Finance request retried");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err(last)
    }
}

/// Why a page's body was not read.
enum BodyError {
    Failed(reqwest::Error),
    TooLarge,
    NotUtf8,
}

/// The body of `response`, read as it arrives up to [`MAX_PAGE_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<String, BodyError> {
    if response.content_length().is_some_and(|length| length > MAX_PAGE_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Failed)? {
        if body.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| BodyError::NotUtf8)
}

/// Percent-encodes a path segment.
fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(byte).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Where and how an institution's answer fails its shape, without serde's quotation of the value
/// (an account number, an amount), which the error goes on to the log with.
fn shape_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let message = error.to_string();
    // A field missing or unknown is named by the shape, not by the data: it is kept.
    let named = ["missing field `", "unknown field `"].iter().find_map(|opening| {
        let name = message.strip_prefix(opening)?.split('`').next()?;
        Some(format!("{opening}{name}`"))
    });
    let what = match (error.classify(), named) {
        (Category::Data, Some(named)) => named,
        (Category::Syntax, _) => "not JSON".to_owned(),
        (Category::Eof, _) => "cut short".to_owned(),
        (Category::Data, None) => "a field of another type".to_owned(),
        (Category::Io, _) => "unreadable".to_owned(),
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

/// The page a `next` link of the page at `current` names, relative links resolved; a link that
/// leaves the institution's origin (scheme, host and port of the `first` page) is refused, so that
/// the consent, sent as the bearer of every page, never goes elsewhere.
fn next_page(first: &reqwest::Url, current: &reqwest::Url, link: &str) -> Result<reqwest::Url, OpenFinanceError> {
    let next = current
        .join(link)
        .map_err(|error| OpenFinanceError::Malformed(format!("the next page's link is not a URL: {error}")))?;
    if next.origin() != first.origin() {
        return Err(OpenFinanceError::Malformed(format!(
            "the next page's link leaves the institution ({} is not {})",
            next.origin().ascii_serialization(),
            first.origin().ascii_serialization()
        )));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brasilia_date_turns_three_hours_after_utcs() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&chrono::Utc);
        let day = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap();
        assert_eq!(brasilia_date(at("2026-12-01T00:00:03Z")), day("2026-11-30"));
        assert_eq!(brasilia_date(at("2026-12-01T02:59:59Z")), day("2026-11-30"));
        assert_eq!(brasilia_date(at("2026-12-01T03:00:00Z")), day("2026-12-01"));
    }

    #[test]
    fn an_answer_outside_the_shapes_is_described_without_its_values() {
        let answers = [
            (r#"{"data": [{"accountId": "a", "number": 987654321}], "links": {}}"#, "a field of another type"),
            (r#"{"data": [{"accountId": "987654321"#, "cut short"),
            (r#"{"data": 987654321 x"#, "a field of another type"),
            (r#"987654321 } "#, "a field of another type"),
            (r#"{"links": {"next": "987654321"}}"#, "missing field `data`"),
            (r#"{"data": [], "links": {}} 987654321"#, "not JSON"),
        ];
        for (answer, expected) in answers {
            let Err(error) = serde_json::from_str::<Page<Account>>(answer) else { panic!("{answer} is read") };
            let described = OpenFinanceError::Malformed(shape_error(&error)).to_string();
            assert!(!described.contains("987654321"), "{described}");
            assert!(described.contains(&format!("{expected} at line 1 column")), "{answer}: {described}");
        }
    }

    #[test]
    fn next_links_stay_with_the_institution() {
        let first = reqwest::Url::parse("https://bank.example/open-banking/accounts/v2/accounts?page=1").unwrap();
        let same = next_page(&first, &first, "https://bank.example/open-banking/accounts/v2/accounts?page=2");
        assert_eq!(same.unwrap().as_str(), "https://bank.example/open-banking/accounts/v2/accounts?page=2");
        let relative = next_page(&first, &first, "accounts?page=3").unwrap();
        assert_eq!(relative.as_str(), "https://bank.example/open-banking/accounts/v2/accounts?page=3");
        for elsewhere in
            ["https://evil.example/steal", "http://bank.example/x", "https://bank.example:8443/x", "//169.254.169.254/"]
        {
            assert!(matches!(next_page(&first, &first, elsewhere), Err(OpenFinanceError::Malformed(_))), "{elsewhere}");
        }
    }

    #[test]
    fn a_transaction_sent_again_in_another_writing_is_the_same() {
        let transaction = |amount: &str, at: &str| Transaction {
            transaction_id: "tx-1".into(),
            completed_authorised_payment_type: Completion::TransacaoEfetivada,
            credit_debit_type: "DEBITO".into(),
            transaction_name: "MERCADO".into(),
            kind: "PIX".into(),
            transaction_amount: Amount { amount: amount.into(), currency: "BRL".into() },
            transaction_date_time: at.into(),
        };
        let first = transaction("10.00", "2026-11-29T12:00:00Z");
        assert!(first.same_as(&transaction("10.000", "2026-11-29T12:00:00+00:00")));
        assert!(first.same_as(&transaction("10.0000", "2026-11-29T09:00:00-03:00")));
        assert!(!first.same_as(&transaction("10.01", "2026-11-29T12:00:00Z")));
        assert!(!first.same_as(&transaction("10.00", "2026-11-29T12:00:01Z")));
    }

    #[test]
    fn amounts_become_integer_cents() {
        let amount = |text: &str| Amount { amount: text.into(), currency: "BRL".into() };
        assert_eq!(amount("100.00").cents(), Some(10_000));
        assert_eq!(amount("0.5").cents(), Some(50));
        assert_eq!(amount("1234").cents(), Some(123_400));
        // Up to four places, as Open Finance Brasil writes amounts, rounded to the cent.
        assert_eq!(amount("1000.0400").cents(), Some(100_004));
        assert_eq!(amount("1.234").cents(), Some(123));
        assert_eq!(amount("1.005").cents(), Some(101));
        assert_eq!(amount("1.0049").cents(), Some(100));
        assert_eq!(amount("0.9999").cents(), Some(100));
        assert_eq!(amount("-1.005").signed_cents(), Some(-101));
        assert_eq!(amount("999999999999999.9999").cents(), Some(100_000_000_000_000_000));
        for bad in ["", "-1.00", "1.23456", "1,00", "abc", ".5", "1.2a", "1000000000000000.00"] {
            assert_eq!(amount(bad).cents(), None, "{bad:?}");
        }
        assert_eq!(amount("-12.50").signed_cents(), Some(-1250));
        assert_eq!(amount("12.50").signed_cents(), Some(1250));
        assert_eq!(amount("--1.00").signed_cents(), None);
    }

    #[test]
    fn redis_over_tls_is_accepted() {
        assert!(redis::Client::open("rediss://cache.example.internal:6379/").is_ok());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(urlencode("acc-1/../x"), "acc-1%2F..%2Fx");
    }
}
