//! The Open Finance client against a local institution that speaks the accounts API's shapes:
//! pagination, a 500 then success, a timeout then success, a page that repeats a transaction,
//! and the response cache (in-process and in Redis) sparing the institution a second call.

use std::{
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aigronova_finquantum::openfinance::{ClientSettings, OpenFinanceClient, OpenFinanceError, ResponseCache};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

/// What the fake institution does, and what it saw.
#[derive(Default)]
struct Institution {
    base: std::sync::OnceLock<String>,
    calls: AtomicUsize,
    /// Answer 500 to this many calls first.
    failures: AtomicUsize,
    /// Hang past the client's timeout on this many calls first.
    hangs: AtomicUsize,
}

type Shared = Arc<Institution>;

async fn gate(institution: &Institution, headers: &HeaderMap) -> Option<Response> {
    institution.calls.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer consent-1") {
        return Some((StatusCode::FORBIDDEN, "no consent").into_response());
    }
    if institution.hangs.load(Ordering::SeqCst) > 0 {
        institution.hangs.fetch_sub(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if institution.failures.load(Ordering::SeqCst) > 0 {
        institution.failures.fetch_sub(1, Ordering::SeqCst);
        return Some((StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response());
    }
    None
}

fn page(institution: &Institution, path: &str, data: Vec<Value>, page: usize, pages: usize) -> Value {
    let base = institution.base.get().unwrap();
    let next = (page < pages).then(|| format!("{base}{path}?page={}&page-size=2", page + 1));
    json!({
        "data": data,
        "links": {"self": format!("{base}{path}?page={page}&page-size=2"), "next": next},
        "meta": {"totalRecords": pages * 2, "totalPages": pages, "requestDateTime": "2026-11-29T10:00:00Z"},
    })
}

async fn accounts(State(institution): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = gate(&institution, &headers).await {
        return refused;
    }
    let account = json!({"accountId": "acc-1", "brandName": "Banco Teste", "companyCnpj": "50685362000135",
        "type": "CONTA_DEPOSITO_A_VISTA", "compeCode": "001", "branchCode": "6272", "number": "94088392", "checkDigit": "4"});
    Json(page(&institution, "/open-banking/accounts/v2/accounts", vec![account], 1, 1)).into_response()
}

fn transaction(n: usize) -> Value {
    json!({"transactionId": format!("tx-{n}"), "creditDebitType": if n.is_multiple_of(2) { "CREDITO" } else { "DEBITO" },
        "transactionName": format!("PAGAMENTO {n}"), "type": "PIX",
        "transactionAmount": {"amount": format!("{n}.50"), "currency": "BRL"},
        "transactionDateTime": format!("2026-11-{:02}T12:00:00Z", n + 1)})
}

async fn transactions(
    State(institution): State<Shared>,
    Path(account): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = gate(&institution, &headers).await {
        return refused;
    }
    let number: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    // Three pages of two; the third repeats the second page's last transaction.
    let data = match number {
        1 => vec![transaction(1), transaction(2)],
        2 => vec![transaction(3), transaction(4)],
        _ => vec![transaction(4), transaction(5)],
    };
    let path = format!("/open-banking/accounts/v2/accounts/{account}/transactions");
    Json(page(&institution, &path, data, number, 3)).into_response()
}

async fn start() -> Shared {
    let institution: Shared = Arc::default();
    let app = Router::new()
        .route("/open-banking/accounts/v2/accounts", get(accounts))
        .route("/open-banking/accounts/v2/accounts/{account}/transactions", get(transactions))
        .with_state(institution.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    institution.base.set(format!("http://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    institution
}

fn settings() -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_millis(500),
        attempts: 3,
        backoff: Duration::from_millis(20),
        cache_ttl: Duration::from_secs(60),
        max_pages: 10,
    }
}

#[tokio::test]
async fn pages_are_followed_and_a_repeated_transaction_is_kept_once() {
    let institution = start().await;
    let client = OpenFinanceClient::new(settings(), ResponseCache::in_process()).unwrap();
    let base = institution.base.get().unwrap();
    let accounts = client.accounts(base, "consent-1").await.unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].account_id, "acc-1");
    let transactions = client.transactions(base, "consent-1", "acc-1").await.unwrap();
    let ids: Vec<&str> = transactions.iter().map(|t| t.transaction_id.as_str()).collect();
    assert_eq!(ids, ["tx-1", "tx-2", "tx-3", "tx-4", "tx-5"], "three pages, tx-4 once");
    assert_eq!(transactions[0].transaction_amount.cents(), Some(150));
    assert_eq!(institution.calls.load(Ordering::SeqCst), 4, "one call for the accounts, three for the pages");

    // Within the TTL the same ingestion is answered from the cache.
    client.transactions(base, "consent-1", "acc-1").await.unwrap();
    client.accounts(base, "consent-1").await.unwrap();
    assert_eq!(institution.calls.load(Ordering::SeqCst), 4, "no second call to the institution");
}

#[tokio::test]
async fn a_500_and_a_timeout_are_retried_and_a_refusal_is_not() {
    let institution = start().await;
    let base = institution.base.get().unwrap().clone();
    let client = OpenFinanceClient::new(settings(), ResponseCache::in_process()).unwrap();

    institution.failures.store(1, Ordering::SeqCst);
    assert_eq!(client.accounts(&base, "consent-1").await.unwrap().len(), 1);
    assert_eq!(institution.calls.load(Ordering::SeqCst), 2, "a 500, then success");

    let fresh = OpenFinanceClient::new(settings(), ResponseCache::in_process()).unwrap();
    institution.hangs.store(1, Ordering::SeqCst);
    assert_eq!(fresh.accounts(&base, "consent-1").await.unwrap().len(), 1, "a timeout, then success");

    institution.failures.store(5, Ordering::SeqCst);
    let failing = OpenFinanceClient::new(settings(), ResponseCache::in_process()).unwrap();
    match failing.accounts(&base, "consent-1").await {
        Err(OpenFinanceError::Server { status: 500, attempts: 3 }) => {}
        other => panic!("expected a server error after 3 attempts, got {other:?}"),
    }
    institution.failures.store(0, Ordering::SeqCst);

    let before = institution.calls.load(Ordering::SeqCst);
    match failing.accounts(&base, "another-consent").await {
        Err(OpenFinanceError::Refused { status: 403 }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(institution.calls.load(Ordering::SeqCst), before + 1, "a refusal is not retried");
}

#[tokio::test]
async fn the_redis_cache_spares_the_institution_across_clients() {
    let url = std::env::var("AIGRONOVA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let address = url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    assert!(
        address.parse().is_ok_and(|address| TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()),
        "Redis is not reachable at {url}; start it with `redis-server --daemonize yes`"
    );
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let institution = start().await;
    let base = institution.base.get().unwrap().clone();
    let first = OpenFinanceClient::new(settings(), ResponseCache::redis(&url, &prefix).await.unwrap()).unwrap();
    first.transactions(&base, "consent-1", "acc-1").await.unwrap();
    assert_eq!(institution.calls.load(Ordering::SeqCst), 3);
    // Another replica, the same Redis: no call.
    let second = OpenFinanceClient::new(settings(), ResponseCache::redis(&url, &prefix).await.unwrap()).unwrap();
    assert_eq!(second.transactions(&base, "consent-1", "acc-1").await.unwrap().len(), 5);
    assert_eq!(institution.calls.load(Ordering::SeqCst), 3);
}
