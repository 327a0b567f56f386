//! A sandbox Open Finance institution for trying the platform on a laptop: `aigronova up` starts
//! it as the institution `sandbox`. It speaks the accounts API's shapes (accounts, balances,
//! paged transactions) and makes up a customer's last four months from the consent's token, the
//! same each time for the same consent: a checking account with a monthly salary, rent, card and
//! PIX payments and fees, and a savings account. The accounts and transactions of one consent
//! have ids of their own, so that two consents of one customer are two sets of accounts, each with
//! one history. Synthetic data only; never configured in production.

use std::collections::HashMap;

use aigronova_platform::Shutdown;
use axum::{
    Json, Router,
    extract::{Path, Query},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{Datelike, Duration, NaiveDate, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The institution's name in `finquantum.institutions`.
pub const NAME: &str = "sandbox";
const PAGE_SIZE: usize = 25;
const BASE: &str = "/open-banking/accounts/v2/accounts";

/// Serves the sandbox on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, shutdown: Shutdown) {
    let app = Router::new()
        .route(BASE, get(accounts))
        .route(&format!("{BASE}/{{account}}/balances"), get(balances))
        .route(&format!("{BASE}/{{account}}/transactions"), get(transactions));
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await;
    if let Err(error) = served {
        tracing::error!(%error, "the sandbox institution stopped");
    }
}

/// A number from the consent token: the same consent sees the same customer.
struct Seed([u8; 32]);

impl Seed {
    fn of(headers: &HeaderMap) -> Option<Self> {
        let token = headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?;
        (!token.is_empty()).then(|| Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// What tells this consent's accounts and transactions from another's: eight hex digits.
    fn tag(&self) -> String {
        self.0[..4].iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// A value in `low..high` from byte `index`.
    fn pick(&self, index: usize, low: i64, high: i64) -> i64 {
        let byte = i64::from(self.0[index % 32]) * 256 + i64::from(self.0[(index + 7) % 32]);
        low + byte % (high - low).max(1)
    }
}

fn refused() -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"errors": [{"code": "UNAUTHORIZED", "title": "consent token required"}]})))
        .into_response()
}

fn money(cents: i64) -> Value {
    let sign = if cents < 0 { "-" } else { "" };
    json!({"amount": format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100), "currency": "BRL"})
}

fn meta(records: usize, pages: usize) -> Value {
    json!({"totalRecords": records, "totalPages": pages, "requestDateTime": Utc::now().to_rfc3339()})
}

async fn accounts(headers: HeaderMap) -> Response {
    let Some(seed) = Seed::of(&headers) else { return refused() };
    let tag = seed.tag();
    let account = |id: &str, kind: &str, number: &str| {
        json!({"accountId": id, "brandName": "Banco Sandbox", "companyCnpj": "00000000000191", "type": kind,
            "compeCode": "999", "branchCode": "0001", "number": number, "checkDigit": "0"})
    };
    let data = vec![
        account(&format!("sandbox-checking-{tag}"), "CONTA_DEPOSITO_A_VISTA", "10001"),
        account(&format!("sandbox-savings-{tag}"), "CONTA_POUPANCA", "20002"),
    ];
    Json(json!({"data": data, "links": {"self": BASE}, "meta": meta(2, 1)})).into_response()
}

/// The checking account's transactions, oldest first, and its balance now.
fn checking(seed: &Seed) -> (Vec<Value>, i64) {
    // Days as the institution, in Brasília, counts them; nothing booked after now.
    let now = Utc::now();
    let today = crate::openfinance::brasilia_date(now);
    let salary = seed.pick(0, 2_500_00, 9_000_00);
    let rent = salary * seed.pick(1, 20, 45) / 100;
    let mut balance = seed.pick(2, -500_00, 2_000_00);
    let mut items = Vec::new();
    let tag = seed.tag();
    let mut push = |day: NaiveDate, credit: bool, kind: &str, name: &str, cents: i64, balance: &mut i64| {
        if day > today || day.and_hms_opt(12, 0, 0).is_none_or(|at| at.and_utc() > now) {
            return;
        }
        *balance += if credit { cents } else { -cents };
        let id = format!("sbx-{tag}-{}-{}", day.format("%Y%m%d"), items.len());
        items.push(json!({"transactionId": id, "completedAuthorisedPaymentType": "TRANSACAO_EFETIVADA",
            "creditDebitType": if credit { "CREDITO" } else { "DEBITO" }, "transactionName": name, "type": kind,
            "transactionAmount": money(cents), "transactionDateTime": format!("{day}T12:00:00Z")}));
    };
    let start = today - Duration::days(120);
    let mut month = NaiveDate::from_ymd_opt(start.year(), start.month(), 1).unwrap_or(start);
    let mut n = 3;
    while month <= today {
        let day = |d: u32| month.with_day(d).unwrap_or(month);
        push(day(5), true, "FOLHA_PAGAMENTO", "SALARIO EMPRESA SANDBOX", salary, &mut balance);
        push(day(10), false, "BOLETO", "ALUGUEL", rent, &mut balance);
        for week in 0..4 {
            n += 1;
            let spent = seed.pick(n, 30_00, 600_00);
            push(day(7 + week * 5), false, "PIX", "PIX ENVIADO", spent, &mut balance);
            n += 1;
            let card = seed.pick(n, 20_00, 300_00);
            push(day(8 + week * 5), false, "CARTAO", "COMPRA CARTAO 4111 1111 1111 1111", card, &mut balance);
        }
        push(day(28), false, "TARIFA_SERVICOS_AVULSOS", "TARIFA PACOTE", 29_90, &mut balance);
        month = if month.month() == 12 {
            NaiveDate::from_ymd_opt(month.year() + 1, 1, 1).unwrap_or(today)
        } else {
            NaiveDate::from_ymd_opt(month.year(), month.month() + 1, 1).unwrap_or(today)
        };
    }
    (items, balance)
}

fn savings(seed: &Seed) -> (Vec<Value>, i64) {
    // The yield of the month begun in Brasília, booked at its first midnight there.
    let today = crate::openfinance::brasilia_date(Utc::now());
    let balance = seed.pick(9, 0, 5_000_00);
    let day = today - Duration::days(today.day0().into());
    let item = json!({"transactionId": format!("sbx-{}-yield-{}", seed.tag(), day.format("%Y%m")),
        "completedAuthorisedPaymentType": "TRANSACAO_EFETIVADA", "creditDebitType": "CREDITO",
        "transactionName": "RENDIMENTO POUPANCA", "type": "RENDIMENTO_APLIC_FINANCEIRA",
        "transactionAmount": money(balance / 200 + 1), "transactionDateTime": format!("{day}T03:00:00Z")});
    (vec![item], balance)
}

/// The transactions and balance of `account`, when it is one of this consent's.
fn account_data(seed: &Seed, account: &str) -> Option<(Vec<Value>, i64)> {
    let (kind, tag) = account.strip_prefix("sandbox-")?.rsplit_once('-')?;
    if tag != seed.tag() {
        return None;
    }
    match kind {
        "checking" => Some(checking(seed)),
        "savings" => Some(savings(seed)),
        _ => None,
    }
}

async fn balances(Path(account): Path<String>, headers: HeaderMap) -> Response {
    let Some(seed) = Seed::of(&headers) else { return refused() };
    let Some((_, balance)) = account_data(&seed, &account) else { return StatusCode::NOT_FOUND.into_response() };
    Json(json!({
        "data": {"availableAmount": money(balance), "blockedAmount": money(0), "automaticallyInvestedAmount": money(0),
            "updateDateTime": Utc::now().to_rfc3339()},
        "links": {"self": format!("{BASE}/{account}/balances")},
        "meta": meta(1, 1),
    }))
    .into_response()
}

async fn transactions(
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(seed) = Seed::of(&headers) else { return refused() };
    let Some((items, _)) = account_data(&seed, &account) else { return StatusCode::NOT_FOUND.into_response() };
    let pages = items.len().div_ceil(PAGE_SIZE).max(1);
    let page: usize = query.get("page").and_then(|page| page.parse().ok()).unwrap_or(1).clamp(1, pages);
    let data: Vec<Value> = items.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).cloned().collect();
    // `next` is absolute in the API; the host is the one the client called.
    let host = headers.get("host").and_then(|host| host.to_str().ok()).unwrap_or("127.0.0.1");
    let path = format!("http://{host}{BASE}/{account}/transactions");
    let next = (page < pages).then(|| format!("{path}?page={}&page-size={PAGE_SIZE}", page + 1));
    Json(json!({"data": data, "links": {"self": format!("{path}?page={page}"), "next": next}, "meta": meta(items.len(), pages)}))
        .into_response()
}
