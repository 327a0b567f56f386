//! A local Open Finance Brasil institution for tests: the accounts API's accounts, balances and
//! transactions in their paged shapes (`data`, `links`, `meta`), several customers' data side
//! by side under path prefixes (one per configured institution), and knobs for trouble: answer
//! 500 or hang on the next calls, stall within a body, send a body too large, serve a page
//! twice. It counts the calls it answers.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

/// A transaction as the fake serves it.
#[derive(Clone, Debug)]
pub struct FakeTransaction {
    pub id: String,
    pub credit: bool,
    /// The Open Finance type, e.g. `PIX`, `FOLHA_PAGAMENTO`.
    pub kind: String,
    pub name: String,
    /// Decimal reais, e.g. `"12.50"`.
    pub amount: String,
    /// RFC 3339.
    pub at: String,
    /// `completedAuthorisedPaymentType`: `TRANSACAO_EFETIVADA` unless set otherwise.
    pub completion: String,
}

impl FakeTransaction {
    pub fn new(id: &str, credit: bool, kind: &str, amount: &str, at: &str) -> Self {
        Self {
            id: id.into(),
            credit,
            kind: kind.into(),
            name: format!("{kind} {id}"),
            amount: amount.into(),
            at: at.into(),
            completion: "TRANSACAO_EFETIVADA".into(),
        }
    }

    /// The same transaction in another state at its institution (`LANCAMENTO_FUTURO`…).
    pub fn completion(self, completion: &str) -> Self {
        Self { completion: completion.into(), ..self }
    }
}

/// An account as the fake serves it.
#[derive(Clone, Debug)]
pub struct FakeAccount {
    pub id: String,
    /// `CONTA_DEPOSITO_A_VISTA`, `CONTA_POUPANCA`…
    pub kind: String,
    /// The institution's brand the account is under.
    pub brand_name: String,
    /// The account's number (its check digit is 4).
    pub number: String,
    /// The available balance, decimal reais (may be negative).
    pub balance: String,
    /// When the balance was taken (RFC 3339); now when `None`.
    pub balance_at: Option<String>,
    pub transactions: Vec<FakeTransaction>,
}

/// One customer's data at one institution.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub accounts: Vec<FakeAccount>,
    /// Transactions per page at most, whatever `page-size` is asked for (default 2).
    pub page_size: usize,
    /// After the last page of transactions, serve the first page again as one more page.
    pub duplicate_page: bool,
}

#[derive(Default)]
struct Shared {
    base: String,
    profiles: Mutex<HashMap<String, Profile>>,
    calls: AtomicUsize,
    failures: AtomicUsize,
    hangs: AtomicUsize,
    malformed: AtomicUsize,
    stalled_bodies: AtomicUsize,
    oversized: AtomicUsize,
    oversize_bytes: AtomicUsize,
    /// A status to answer, with no body, and how many calls get it.
    status: Mutex<(u16, usize)>,
    /// The `fromBookingDate` and `toBookingDate` of each call for transactions.
    windows: Mutex<Vec<(Option<String>, Option<String>)>>,
}

/// A running fake institution.
#[derive(Clone)]
pub struct Institution {
    shared: Arc<Shared>,
}

/// How long a hung call waits before it answers: longer than the tests' client timeout.
pub const HANG: Duration = Duration::from_secs(3);

impl Institution {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let base = format!("http://{}", listener.local_addr().expect("bound"));
        let shared = Arc::new(Shared { base, ..Shared::default() });
        let app = Router::new()
            .route("/{profile}/open-banking/accounts/v2/accounts", get(accounts))
            .route("/{profile}/open-banking/accounts/v2/accounts/{account}/balances", get(balances))
            .route("/{profile}/open-banking/accounts/v2/accounts/{account}/transactions", get(transactions))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the institution serves") });
        Self { shared }
    }

    /// Serves `profile` under `name`; returns the base URL to configure for an institution.
    pub fn serve(&self, name: &str, profile: Profile) -> String {
        let profile = Profile { page_size: if profile.page_size == 0 { 2 } else { profile.page_size }, ..profile };
        self.shared.profiles.lock().unwrap().insert(name.to_owned(), profile);
        format!("{}/{name}", self.shared.base)
    }

    /// Calls answered so far (refusals and failures included).
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// The booking dates (`fromBookingDate`, `toBookingDate`) each call for transactions asked for.
    pub fn booking_windows(&self) -> Vec<(Option<String>, Option<String>)> {
        self.shared.windows.lock().unwrap().clone()
    }

    /// Answers 500 to the next `n` calls.
    pub fn fail_next(&self, n: usize) {
        self.shared.failures.store(n, Ordering::SeqCst);
    }

    /// Answers 200 with a body outside the Open Finance shapes to the next `n` calls.
    pub fn malform_next(&self, n: usize) {
        self.shared.malformed.store(n, Ordering::SeqCst);
    }

    /// Answers `status` with an empty body (and, for a redirect, a `Location` back to itself) to
    /// the next `n` calls.
    pub fn answer_next(&self, status: u16, n: usize) {
        *self.shared.status.lock().unwrap() = (status, n);
    }

    /// Hangs for [`HANG`] on the next `n` calls.
    pub fn hang_next(&self, n: usize) {
        self.shared.hangs.store(n, Ordering::SeqCst);
    }

    /// Answers the next `n` calls 200 with the start of a body, then stalls for [`HANG`] before
    /// the rest.
    pub fn stall_body_next(&self, n: usize) {
        self.shared.stalled_bodies.store(n, Ordering::SeqCst);
    }

    /// Answers the next `n` calls 200 with `bytes` of JSON whitespace, then an empty page, sent
    /// in chunks without a length.
    pub fn oversize_next(&self, n: usize, bytes: usize) {
        self.shared.oversized.store(n, Ordering::SeqCst);
        self.shared.oversize_bytes.store(bytes, Ordering::SeqCst);
    }
}

/// Counts the call, checks the FAPI headers, and plays the trouble asked for.
async fn gate(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_none_or(str::is_empty) || headers.get("x-fapi-interaction-id").is_none() {
        return Some((StatusCode::UNAUTHORIZED, "consent token and x-fapi-interaction-id required").into_response());
    }
    if shared.hangs.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        tokio::time::sleep(HANG).await;
    }
    if shared.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Some(
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"errors": [{"code": "INTERNAL"}]}))).into_response(),
        );
    }
    let answered = {
        let mut status = shared.status.lock().unwrap();
        let (code, left) = *status;
        (left > 0).then(|| {
            status.1 = left - 1;
            StatusCode::from_u16(code).expect("a status code")
        })
    };
    if let Some(status) = answered {
        return Some((status, [("location", format!("{}/elsewhere", shared.base))]).into_response());
    }
    if shared.malformed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Some(Json(json!({"data": "maintenance", "links": {}})).into_response());
    }
    let ok = |body: axum::body::Body| {
        Some(Response::builder().header("content-type", "application/json").body(body).expect("a response"))
    };
    if shared.stalled_bodies.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        let start =
            futures_util::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"data\": ["))]);
        let rest = futures_util::stream::once(async {
            tokio::time::sleep(HANG).await;
            Ok(axum::body::Bytes::from_static(b"], \"links\": {}, \"meta\": {}}"))
        });
        return ok(axum::body::Body::from_stream(futures_util::StreamExt::chain(start, rest)));
    }
    if shared.oversized.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        const CHUNK: usize = 64 * 1024;
        let chunks = shared.oversize_bytes.load(Ordering::SeqCst).div_ceil(CHUNK);
        let spaces = futures_util::stream::iter(
            (0..chunks).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; CHUNK]))),
        );
        let page = json!({"data": [], "links": {}, "meta": {"totalRecords": 0, "totalPages": 1,
            "requestDateTime": "2026-11-29T10:00:00Z"}});
        let end = futures_util::stream::iter([Ok(axum::body::Bytes::from(page.to_string()))]);
        return ok(axum::body::Body::from_stream(futures_util::StreamExt::chain(spaces, end)));
    }
    None
}

fn profile(shared: &Shared, name: &str) -> Option<Profile> {
    shared.profiles.lock().unwrap().get(name).cloned()
}

fn envelope(data: Value, self_link: &str, next: Option<String>, total_records: usize, total_pages: usize) -> Value {
    json!({
        "data": data,
        "links": {"self": self_link, "next": next},
        "meta": {"totalRecords": total_records, "totalPages": total_pages, "requestDateTime": "2026-11-29T10:00:00Z"},
    })
}

async fn accounts(State(shared): State<Arc<Shared>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = gate(&shared, &headers).await {
        return refused;
    }
    let Some(profile) = profile(&shared, &name) else { return StatusCode::NOT_FOUND.into_response() };
    let data: Vec<Value> = profile
        .accounts
        .iter()
        .map(|account| {
            json!({"accountId": account.id, "brandName": account.brand_name, "companyCnpj": "50685362000135",
                "type": account.kind, "compeCode": "001", "branchCode": "6272", "number": account.number, "checkDigit": "4"})
        })
        .collect();
    let link = format!("{}/{name}/open-banking/accounts/v2/accounts", shared.base);
    let count = data.len();
    Json(envelope(Value::Array(data), &link, None, count, 1)).into_response()
}

async fn balances(
    State(shared): State<Arc<Shared>>,
    Path((name, account)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = gate(&shared, &headers).await {
        return refused;
    }
    let Some(account) = profile(&shared, &name).and_then(|p| p.accounts.into_iter().find(|a| a.id == account)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let link = format!("{}/{name}/open-banking/accounts/v2/accounts/{}/balances", shared.base, account.id);
    Json(json!({
        "data": {
            "availableAmount": {"amount": account.balance, "currency": "BRL"},
            "blockedAmount": {"amount": "0.00", "currency": "BRL"},
            "automaticallyInvestedAmount": {"amount": "0.00", "currency": "BRL"},
            "updateDateTime": account
                .balance_at
                .unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        },
        "links": {"self": link},
        "meta": {"requestDateTime": "2026-11-29T10:00:00Z"},
    }))
    .into_response()
}

async fn transactions(
    State(shared): State<Arc<Shared>>,
    Path((name, account)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = gate(&shared, &headers).await {
        return refused;
    }
    let window = (query.get("fromBookingDate").cloned(), query.get("toBookingDate").cloned());
    shared.windows.lock().unwrap().push(window.clone());
    let Some(profile) = profile(&shared, &name) else { return StatusCode::NOT_FOUND.into_response() };
    let Some(account) = profile.accounts.iter().find(|a| a.id == account) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The `page-size` asked for, up to the profile's, which stands for the institution's largest.
    let page_size = query.get("page-size").and_then(|size| size.parse().ok()).unwrap_or(25).clamp(1, profile.page_size);
    let mut pages: Vec<Vec<&FakeTransaction>> =
        account.transactions.chunks(page_size).map(|chunk| chunk.iter().collect()).collect();
    if pages.is_empty() {
        pages.push(Vec::new());
    }
    if profile.duplicate_page {
        pages.push(pages[0].clone());
    }
    let number: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).clamp(1, pages.len());
    let data: Vec<Value> = pages[number - 1]
        .iter()
        .map(|t| {
            json!({"transactionId": t.id, "completedAuthorisedPaymentType": t.completion,
                "creditDebitType": if t.credit { "CREDITO" } else { "DEBITO" }, "transactionName": t.name,
                "type": t.kind, "transactionAmount": {"amount": t.amount, "currency": "BRL"},
                "transactionDateTime": t.at})
        })
        .collect();
    let path = format!("{}/{name}/open-banking/accounts/v2/accounts/{}/transactions", shared.base, account.id);
    // The next page keeps the booking dates asked for, as the institutions' links do.
    let dates = match window {
        (Some(from), Some(to)) => format!("&fromBookingDate={from}&toBookingDate={to}"),
        _ => String::new(),
    };
    let next = (number < pages.len()).then(|| format!("{path}?page={}&page-size={page_size}{dates}", number + 1));
    let link = format!("{path}?page={number}&page-size={page_size}");
    Json(envelope(Value::Array(data), &link, next, account.transactions.len(), pages.len())).into_response()
}
