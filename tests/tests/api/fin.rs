//! FinQuantum through the gateway, on SQLite and PostgreSQL, with the response cache in Redis
//! and a local Open Finance institution: consents and their enforcement, ingestion through
//! pagination, failures, timeouts and repeated pages, statements that add up, credit scores that
//! match the Python reference with stable reasons, and LGPD export and erasure.

use std::{collections::HashMap, time::Duration};

use aigronova_e2e::{
    Backend, TestApp, assert_problem,
    credit::{applicant_for, cpf, days_from_now, profile_for},
    institution::{FakeAccount, FakeTransaction, Institution, Profile},
    models_dir, pdf_text, redis_url, spawn_app_with,
};
use serde_json::{Value, json};

use crate::subjects::{export, open, outcome_of, records};

const SCOPES: &[&str] = &["fin:read", "fin:write", "governance:read", "governance:write"];
const ALL: &[&str] = &["ACCOUNTS_READ", "ACCOUNTS_BALANCES_READ", "ACCOUNTS_TRANSACTIONS_READ"];

/// The platform with `institutions` (name → profile) served by `bank`, the cache in Redis,
/// short institution timeouts and a purge every second.
async fn start(backend: Backend, bank: &Institution, institutions: Vec<(&str, Profile)>) -> TestApp {
    let urls: Vec<(String, String)> =
        institutions.into_iter().map(|(name, profile)| (name.to_owned(), bank.serve(name, profile))).collect();
    let redis = redis_url();
    spawn_app_with(backend, move |config| {
        config.finquantum.institutions = urls.into_iter().collect();
        config.finquantum.redis_url = Some(redis);
        config.finquantum.request_timeout_ms = 500;
        config.finquantum.purge_interval_secs = 1;
        config.audit.monitoring_interval_ms = 200;
    })
    .await
}

/// Monitoring counts each stored score's checking account as the shared data gave it: a missing
/// one at code 0 (none, as training saw applicants without one), not at the code it was scored at,
/// which would keep the feature's drift in alert. Every reference row was scored twice and the
/// first once more.
async fn drift_counts_accounts_as_shared(app: &TestApp, key: &str, rows: &[Value], withheld: &HashMap<usize, &Value>) {
    let mut counts = [0u64; 3];
    for (i, row) in rows.iter().enumerate() {
        let code = row["features"]["checking_status"].as_f64().unwrap();
        let bin = [1.0, 2.0].iter().filter(|edge| **edge <= code).count();
        counts[bin] += if i == 0 { 3 } else { 2 };
    }
    assert!(counts[0] > 0 && withheld.values().any(|row| row["features"]["checking_status"] != 0.0), "{counts:?}");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join("credit-risk/1/manifest.json")).expect("manifest.json"),
    )
    .unwrap();
    let checking = manifest["features"].as_array().unwrap().iter().find(|f| f["name"] == "checking_status").unwrap();
    assert_eq!(checking["bin_edges"], json!([0.0, 1.0, 2.0, 3.0]), "{checking}");
    let total = counts.iter().sum::<u64>() as f64;
    let expected: f64 = counts
        .iter()
        .zip(checking["bin_shares"].as_array().unwrap())
        .map(|(count, share)| {
            let (actual, share) = ((*count as f64 / total).max(1e-4), share.as_f64().unwrap().max(1e-4));
            (actual - share) * (actual / share).ln()
        })
        .sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status: Value =
            app.get("/v1/governance/monitoring/models/credit-risk/versions/1", key).await.json().await.unwrap();
        let count = |field: &str| match &status[field] {
            Value::String(number) => number.parse::<u64>().unwrap_or(0),
            other => other.as_u64().unwrap_or(0),
        };
        if count("inferenceCount").saturating_sub(count("errorCount")) >= total as u64 {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "monitoring did not see {total} scores: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drift = status["drift"].as_array().unwrap().iter().find(|entry| entry["feature"] == "checking_status");
    let psi = drift.unwrap_or_else(|| panic!("no drift for checking_status: {status}"))["psi"].as_f64().unwrap();
    assert!((psi - expected).abs() < 1e-9, "checking_status PSI {psi}, expected {expected}: {status}");
}

async fn consent(app: &TestApp, key: &str, cpf: &str, institution: &str, permissions: &[&str]) -> Value {
    let body =
        json!({"cpf": cpf, "institution": institution, "permissions": permissions, "expiresAt": days_from_now(30)});
    let response = app.post("/v1/fin/consents", key, &body).await;
    assert_eq!(response.status(), 200, "consent {body}");
    response.json().await.unwrap()
}

async fn ingest(app: &TestApp, key: &str, consent_id: &str) -> reqwest::Response {
    app.post(&format!("/v1/fin/consents/{consent_id}/ingestions"), key, &json!({})).await
}

fn checking_account() -> FakeAccount {
    let t = FakeTransaction::new;
    FakeAccount {
        id: "acc-checking".into(),
        kind: "CONTA_DEPOSITO_A_VISTA".into(),
        brand_name: "Banco Teste".into(),
        number: "94088392".into(),
        balance: "1000.00".into(),
        balance_at: None,
        transactions: vec![
            t("tx-1", true, "FOLHA_PAGAMENTO", "3000.00", "2026-10-05T10:00:00Z"),
            t("tx-2", false, "PIX", "120.50", "2026-10-05T18:00:00Z"),
            t("tx-3", false, "BOLETO", "800.00", "2026-10-10T09:00:00Z"),
            t("tx-4", false, "PIX", "79.50", "2026-10-31T23:59:59Z"),
            t("tx-5", false, "TARIFA_SERVICOS_AVULSOS", "15.00", "2026-10-15T08:00:00Z"),
            t("tx-6", false, "PIX", "200.00", "2026-11-02T12:00:00Z"),
        ],
    }
}

fn savings_account() -> FakeAccount {
    FakeAccount {
        id: "acc-savings".into(),
        kind: "CONTA_POUPANCA".into(),
        brand_name: "Banco Teste".into(),
        number: "94088392".into(),
        balance: "300.00".into(),
        balance_at: None,
        transactions: vec![
            FakeTransaction::new("sv-1", true, "RENDIMENTO_APLIC_FINANCEIRA", "1.25", "2026-10-01T03:00:00Z"),
            // None has moved the balance yet: none is stored or counted, not even one said to be
            // done but booked after now.
            FakeTransaction::new("sv-2", true, "TED", "500.00", "2026-10-20T10:00:00Z").completion("LANCAMENTO_FUTURO"),
            FakeTransaction::new("sv-3", false, "PIX", "40.00", "2026-10-21T10:00:00Z")
                .completion("TRANSACAO_PROCESSANDO"),
            FakeTransaction::new("sv-4", true, "TED", "900.00", "2099-01-01T03:00:00Z"),
        ],
    }
}

async fn consents_ingestion_and_statements(backend: Backend) {
    let bank = Institution::start().await;
    let profile = Profile { accounts: vec![checking_account(), savings_account()], page_size: 2, duplicate_page: true };
    let mut app = start(backend, &bank, vec![("banco-a", profile.clone()), ("banco-b", profile)]).await;
    let tenant = app.create_tenant_on("Financeira Teste", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let customer_cpf = cpf(123_456_789);

    // Bad input is refused, naming the field, and stores nothing.
    let cases = [
        (
            json!({"cpf": "123.456.789-00", "institution": "banco-a", "permissions": ALL, "expiresAt": days_from_now(1)}),
            "cpf",
        ),
        (
            json!({"cpf": customer_cpf, "institution": "banco-z", "permissions": ALL, "expiresAt": days_from_now(1)}),
            "institution",
        ),
        (
            json!({"cpf": customer_cpf, "institution": "banco-a", "permissions": ["PAYMENTS_INITIATE"], "expiresAt": days_from_now(1)}),
            "permissions",
        ),
        (
            json!({"cpf": customer_cpf, "institution": "banco-a", "permissions": [], "expiresAt": days_from_now(1)}),
            "permissions",
        ),
        (
            json!({"cpf": customer_cpf, "institution": "banco-a", "permissions": ALL, "expiresAt": days_from_now(-1)}),
            "expiresAt",
        ),
        (json!({"cpf": customer_cpf, "institution": "banco-a", "permissions": ALL}), "expiresAt"),
        (
            json!({"cpf": customer_cpf, "institution": "banco-a", "permissions": ALL, "expiresAt": days_from_now(400)}),
            "expiresAt",
        ),
        // Finer than the microsecond it is kept to: refused, not cut.
        (
            json!({"cpf": customer_cpf, "institution": "banco-a", "permissions": ALL,
                   "expiresAt": days_from_now(30).replace('Z', ".123456789Z")}),
            "expiresAt",
        ),
    ];
    for (body, field) in cases {
        let problem = assert_problem(app.post("/v1/fin/consents", &key, &body).await, 400).await;
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    assert_eq!(app.count_fin_rows("consents").await + app.count_fin_rows("customers").await, 0);

    let created = consent(&app, &key, &customer_cpf, "banco-a", ALL).await;
    assert_eq!(created["status"], "AUTHORISED");
    let (consent_id, customer) = (created["id"].as_str().unwrap(), created["customerId"].as_str().unwrap());
    let sealed = app
        .count_fin_rows(&format!("customers WHERE sealed_cpf LIKE '%{customer_cpf}%' OR cpf_hash = '{customer_cpf}'"))
        .await;
    assert_eq!(sealed, 0, "the CPF is not stored in clear");
    // Before any ingestion a statement is no empty month: the caller is told what to do first.
    let early = app.get(&format!("/v1/fin/customers/{customer}/statements/2026-10"), &key).await;
    let problem = assert_problem(early, 400).await;
    assert!(problem["detail"].as_str().unwrap().ends_with("ingestions first"), "{problem}");

    // Ingestion: a 500 first (retried), three pages of transactions, then the first page again.
    bank.fail_next(1);
    let response = ingest(&app, &key, consent_id).await;
    assert_eq!(response.status(), 200);
    let ingestion: Value = response.json().await.unwrap();
    assert_eq!(
        (&ingestion["accounts"], &ingestion["balances"], &ingestion["transactions"], &ingestion["newTransactions"]),
        (&json!(2), &json!(2), &json!(7), &json!(7)),
        "{ingestion}"
    );
    // Accounts 2 (one answered 500), balances 2, transactions 3 + 1 pages and 2 + 1 pages.
    assert_eq!(bank.calls(), 11);
    // Every page of transactions was asked for the year to today (in Brasília): without dates an
    // institution answers today's only.
    let windows = bank.booking_windows();
    assert_eq!(windows.len(), 7, "4 + 3 pages of transactions");
    let today = (chrono::Utc::now() - chrono::Duration::hours(3)).date_naive();
    for (from, to) in windows {
        let (from, to) = (from.expect("fromBookingDate"), to.expect("toBookingDate"));
        let from = chrono::NaiveDate::parse_from_str(&from, "%Y-%m-%d").unwrap();
        let to = chrono::NaiveDate::parse_from_str(&to, "%Y-%m-%d").unwrap();
        assert!((to - today).num_days().abs() <= 1, "to {to}");
        assert_eq!((to - from).num_days(), 364, "{from} to {to}");
    }
    assert_eq!(app.count_fin_rows("transactions").await, 7, "each transaction that took place, once");
    assert_eq!(app.count_fin_rows("accounts WHERE number NOT LIKE 'v1:%'").await, 0, "account numbers sealed");

    // The same ingestion again is answered from Redis: no call to the institution, nothing new.
    let again: Value = ingest(&app, &key, consent_id).await.json().await.unwrap();
    assert_eq!((&again["transactions"], &again["newTransactions"]), (&json!(7), &json!(0)), "{again}");
    assert_eq!(bank.calls(), 11, "cache hits spare the institution");
    // What the cache keeps of the institution's pages is sealed with the tenant's data key.
    let redis = redis::Client::open(redis_url()).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("aigronova:finquantum:openfinance:{consent_id}:*");
    let cached: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut redis).await.unwrap();
    assert!(!cached.is_empty(), "the pages are cached under {pattern}");
    for key in cached {
        let value: String = redis::cmd("GET").arg(&key).query_async(&mut redis).await.unwrap();
        assert!(value.starts_with("v1:"), "{key} is sealed");
        for clear in ["acc-checking", "FOLHA_PAGAMENTO", "1000.00", "transactionId"] {
            assert!(!value.contains(clear), "{key} holds {clear} in clear");
        }
    }
    // Also after a restart: the cache is in Redis, not in the process.
    app.restart().await;
    let after_restart: Value = ingest(&app, &key, consent_id).await.json().await.unwrap();
    assert_eq!(after_restart["newTransactions"], 0);
    assert_eq!(bank.calls(), 11, "the Redis cache outlives the process");

    // Statement of October: totals by category, balances walked back from today's balance.
    let response = app.get(&format!("/v1/fin/customers/{customer}/statements/2026-10"), &key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let statement: Value = response.json().await.unwrap();
    // As the OpenAPI document describes it.
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    crate::openapi::assert_conforms(&document, "aigronova.fin.v1.Statement", &statement);
    let checking = statement["accounts"].as_array().unwrap().iter().find(|a| a["accountId"] == "acc-checking").unwrap();
    assert_eq!(checking["transactions"].as_array().unwrap().len(), 5, "{checking}");
    assert_eq!((&checking["totalCredits"], &checking["totalDebits"]), (&json!("3000.00"), &json!("1015.00")));
    assert_eq!(checking["closingBalance"], "1200.00", "1000 today, 200 spent in November");
    assert_eq!(checking["openingBalance"], "-785.00");
    assert_eq!(checking["balances"].as_array().unwrap().last().unwrap()["balance"], "1200.00");
    let cents = |text: &Value| -> i64 { (text.as_str().unwrap().parse::<f64>().unwrap() * 100.0).round() as i64 };
    let signed: i64 = checking["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| if t["creditDebitType"] == "CREDITO" { cents(&t["amount"]) } else { -cents(&t["amount"]) })
        .sum();
    assert_eq!(signed, cents(&checking["net"]));
    assert_eq!(cents(&checking["closingBalance"]) - cents(&checking["openingBalance"]), signed);
    let by_category: i64 = checking["categories"].as_array().unwrap().iter().map(|c| cents(&c["debits"])).sum();
    assert_eq!(by_category, cents(&checking["totalDebits"]));
    let pix = checking["categories"].as_array().unwrap().iter().find(|c| c["category"] == "PIX").unwrap();
    assert_eq!((&pix["debits"], &pix["count"]), (&json!("200.00"), &json!(2)));
    assert_eq!(statement["totalCredits"], "3001.25", "both accounts");
    // Each account says which booking days were fetched: the year to the day of the ingestion.
    let today = (chrono::Utc::now() - chrono::Duration::hours(3)).date_naive();
    let from = today - chrono::Days::new(364);
    for account in statement["accounts"].as_array().unwrap() {
        let fetched = (account["fetchedFrom"].as_str(), account["fetchedThrough"].as_str());
        assert_eq!(fetched, (Some(from.to_string().as_str()), Some(today.to_string().as_str())), "{account}");
        assert_eq!(account["complete"], true, "{account}");
    }
    assert_eq!(statement["complete"], true);
    // A month before the first day fetched is no month of zeros: refused, saying what was fetched.
    let early = (from - chrono::Days::new(31)).format("%Y-%m").to_string();
    let problem =
        assert_problem(app.get(&format!("/v1/fin/customers/{customer}/statements/{early}"), &key).await, 400).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("fetched for {from} to {today}")), "{problem}");
    // The month the first day fetched falls in is whole only when that is its first day; otherwise
    // its opening balance is not known.
    let first_month: Value = app
        .get(&format!("/v1/fin/customers/{customer}/statements/{}", from.format("%Y-%m")), &key)
        .await
        .json()
        .await
        .unwrap();
    let whole = chrono::Datelike::day(&from) == 1;
    assert_eq!(first_month["complete"], whole, "{first_month}");
    for account in first_month["accounts"].as_array().unwrap() {
        assert_eq!(account.get("openingBalance").is_some(), whole && account.get("closingBalance").is_some());
    }
    // The month under way is fetched only to today: incomplete, and its PDF says so.
    let current = today.format("%Y-%m").to_string();
    let now: Value =
        app.get(&format!("/v1/fin/customers/{customer}/statements/{current}"), &key).await.json().await.unwrap();
    assert_eq!(now["complete"], false, "{now}");
    let response = app.get(&format!("/v1/fin/customers/{customer}/statements/{current}?format=pdf"), &key).await;
    let text = pdf_text(&response.bytes().await.unwrap());
    for expected in ["Incomplete month", &format!("{from} a/to {today}")] {
        assert!(text.contains(expected), "the PDF of the month under way lacks {expected:?}:\n{text}");
    }
    // Its last balance is the balance on the last day fetched, not one at a month's end yet to come.
    assert!(now["accounts"][0].get("closingBalance").is_some(), "{now}");
    assert!(text.contains(&format!("Balance on {today}")) && !text.contains("Closing balance"), "{text}");

    let response = app.get(&format!("/v1/fin/customers/{customer}/statements/2026-10?format=pdf"), &key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert_eq!(response.headers()["content-disposition"], "inline; filename=\"statements-2026-10.pdf\"");
    let text = pdf_text(&response.bytes().await.unwrap());
    for expected in ["Monthly statement 2026-10", "3000.00", "1015.00", "1200.00", "TARIFA_SERVICOS_AVULSOS"] {
        assert!(text.contains(expected), "the PDF lacks {expected:?}:\n{text}");
    }
    // The six reads of the customer's transactions are audited (the refused month's too: its accounts were read).
    let reads = app.audited(&key, 6, |entry| entry["action"] == "fin.GetStatement").await;
    let subject = format!("customer:{customer}");
    assert!(
        reads.iter().all(|read| read["kind"] == "sensitive_read"
            && read["leaf"].as_str().is_some_and(|leaf| leaf.contains(&subject))),
        "{reads:?}"
    );
    for (path, field) in [
        (format!("/v1/fin/customers/{customer}/statements/2026-13"), "month"),
        (format!("/v1/fin/customers/{customer}/statements/2999-01"), "month"),
        (format!("/v1/fin/customers/{customer}/statements/%202026-10"), "month"),
        (format!("/v1/fin/customers/{customer}/statements/2026-10%09"), "month"),
        (format!("/v1/fin/customers/{customer}/statements/2026-10?format=xml"), "format"),
        (format!("/v1/fin/customers/{customer}/statements/2026-10?format=pdf%20"), "format"),
        ("/v1/fin/customers/nope/statements/2026-10".to_owned(), "customerId"),
    ] {
        let problem = assert_problem(app.get(&path, &key).await, 400).await;
        assert_eq!(problem["field"], field, "{path}");
    }

    // A consent without ACCOUNTS_TRANSACTIONS_READ may not ingest; the problem names it.
    let narrow = consent(&app, &key, &customer_cpf, "banco-b", &["ACCOUNTS_READ"]).await;
    let problem = assert_problem(ingest(&app, &key, narrow["id"].as_str().unwrap()).await, 403).await;
    assert_eq!(problem["missingPermission"], "ACCOUNTS_TRANSACTIONS_READ", "{problem}");
    assert_eq!(narrow["customerId"], created["customerId"], "one customer per CPF");

    // Another tenant sees none of it.
    let other = app.create_tenant("Outra Financeira").await;
    let other_key = app.create_key(&other, SCOPES).await;
    assert_problem(app.get(&format!("/v1/fin/consents/{consent_id}"), &other_key).await, 404).await;
    assert_problem(app.get(&format!("/v1/fin/customers/{customer}/statements/2026-10"), &other_key).await, 404).await;
    assert_problem(ingest(&app, &other_key, consent_id).await, 404).await;

    // A timeout is retried; an institution that never answers in time is a 503 to retry later.
    let second = consent(&app, &key, &cpf(987_654_321), "banco-b", ALL).await;
    bank.hang_next(1);
    let response = ingest(&app, &key, second["id"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200, "a timeout, then success");
    // So is a body that stalls past the timeout once its answer has begun.
    let stalled = consent(&app, &key, &cpf(444_555_666), "banco-b", ALL).await;
    bank.stall_body_next(1);
    let response = ingest(&app, &key, stalled["id"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200, "a body cut short, then success");
    let third = consent(&app, &key, &cpf(111_222_333), "banco-b", ALL).await;
    bank.hang_next(3);
    let response = ingest(&app, &key, third["id"].as_str().unwrap()).await;
    assert!(response.headers().contains_key("retry-after"));
    let problem = assert_problem(response, 503).await;
    assert!(problem["detail"].as_str().unwrap().contains("banco-b"), "{problem}");

    // Revocation stops use at once and the purge deletes what was fetched under the consent.
    let before = app.count_fin_rows("transactions").await;
    let response = app.delete(&format!("/v1/fin/consents/{consent_id}"), &key).await;
    assert_eq!(response.status(), 200);
    let revoked: Value = response.json().await.unwrap();
    assert_eq!(revoked["status"], "REVOKED");
    assert!(revoked["revokeTime"].is_string());
    let problem =
        assert_problem(app.get(&format!("/v1/fin/customers/{customer}/statements/2026-10"), &key).await, 403).await;
    assert_eq!(problem["missingPermission"], "ACCOUNTS_TRANSACTIONS_READ", "{problem}");
    let problem = assert_problem(ingest(&app, &key, consent_id).await, 403).await;
    assert_eq!(problem["missingPermission"], "ACCOUNTS_READ", "{problem}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while app.count_fin_rows(&format!("accounts WHERE consent_id = '{consent_id}'")).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the revoked consent's data was not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.count_fin_rows("transactions").await, before - 7, "only the revoked consent's data");
    app.stop().await;
}

#[tokio::test]
async fn consents_ingestion_and_statements_on_sqlite() {
    consents_ingestion_and_statements(Backend::Sqlite).await;
}

#[tokio::test]
async fn consents_ingestion_and_statements_on_postgres() {
    consents_ingestion_and_statements(Backend::Postgres).await;
}

async fn scores_match_the_reference_with_stable_reasons(backend: Backend) {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join("credit-risk/1/reference.json")).expect("reference.json"),
    )
    .unwrap();
    let rows = reference["rows"].as_array().unwrap();
    // A row without a checking or a savings account: scored with that feature at its least
    // favourable code, as `models/credit_risk_withheld.py` scores it with onnxruntime.
    let withheld: Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join("credit-risk/1/reference-withheld.json"))
            .expect("reference-withheld.json"),
    )
    .unwrap();
    let withheld: HashMap<usize, &Value> =
        withheld["rows"].as_array().unwrap().iter().map(|row| (row["row"].as_u64().unwrap() as usize, row)).collect();
    let bank = Institution::start().await;
    let institutions: Vec<(String, Profile)> =
        rows.iter().enumerate().map(|(i, row)| (format!("banco-{i}"), profile_for(&row["features"], 0))).collect();
    let mut app =
        start(backend, &bank, institutions.iter().map(|(name, p)| (name.as_str(), p.clone())).collect()).await;
    let tenant = app.create_tenant_on("Crédito Teste", "enterprise").await;
    let key = app.create_key(&tenant, &["fin:read", "fin:write", "governance:read"]).await;

    // No consent at all: refused, naming what is missing, and nothing stored.
    let stranger = json!({"cpf": cpf(555_666_777), "applicant": applicant_for(&rows[0]["features"])});
    let problem = assert_problem(app.post("/v1/fin/credit-scores", &key, &stranger).await, 403).await;
    // The first permission a score needs, as for a customer whose consents are all revoked.
    assert_eq!(problem["missingPermission"], "ACCOUNTS_READ", "{problem}");

    for (i, row) in rows.iter().enumerate() {
        let customer_cpf = cpf(200_000_000 + i as u64);
        let granted = consent(&app, &key, &customer_cpf, &format!("banco-{i}"), ALL).await;
        let body = json!({"cpf": customer_cpf, "applicant": applicant_for(&row["features"])});
        let response = app.post("/v1/fin/credit-scores", &key, &body).await;
        let problem = assert_problem(response, 400).await;
        assert!(problem["detail"].as_str().unwrap().contains("ingestions"), "nothing ingested yet: {problem}");
        assert_eq!(ingest(&app, &key, granted["id"].as_str().unwrap()).await.status(), 200);

        let response = app.post("/v1/fin/credit-scores", &key, &body).await;
        assert_eq!(response.status(), 200, "row {i}");
        let score: Value = response.json().await.unwrap();
        let scored = withheld.get(&i).copied().unwrap_or(row);
        for name in row["features"].as_object().unwrap().keys() {
            assert_eq!(score["features"][name], scored["features"][name], "row {i} feature {name}: {score}");
        }
        let probability = score["probabilityOfDefault"].as_f64().unwrap();
        let expected = scored["onnx_probability"].as_f64().unwrap();
        assert!((probability - expected).abs() < 1e-5, "row {i}: {probability} vs the reference {expected}");
        // An account left out of the shared data is not scored as none at all, the data's best.
        assert!(probability >= row["onnx_probability"].as_f64().unwrap() - 1e-5, "row {i}: {score}");
        if let Some(scored) = withheld.get(&i) {
            for (feature, held) in [("checking_status", "hasCheckingAccount"), ("savings_status", "hasSavingsAccount")]
            {
                let missing = scored["withheld"].as_array().unwrap().iter().any(|name| name == feature);
                assert_eq!(score["bank"][held], !missing, "{score}");
            }
            let shared = "No checking account is among the data you shared.";
            assert!(
                score["reasons"].as_array().unwrap().iter().any(|reason| reason["description"] == shared),
                "a checking account left out is a reason to share it: {score}"
            );
        }
        assert_eq!(score["score"], ((1.0 - probability) * 1000.0).round() as i64);
        let band = if probability < 0.2 {
            "low"
        } else if probability < 0.5 {
            "moderate"
        } else {
            "high"
        };
        assert_eq!(score["riskBand"], band);
        assert_eq!((&score["model"], &score["modelVersion"]), (&json!("credit-risk"), &json!("1")));
        let reasons = score["reasons"].as_array().cloned().unwrap_or_default();
        assert!(
            reasons.iter().all(|r| r["code"].is_string() && r["description"].as_str().is_some_and(|d| d.len() > 10))
        );
        if probability > 0.5 {
            assert!(!reasons.is_empty(), "a high risk comes with reasons: {score}");
        }

        // The same input again: the same score and the same reasons, in the same order.
        let again: Value = app.post("/v1/fin/credit-scores", &key, &body).await.json().await.unwrap();
        assert_ne!(again["id"], score["id"]);
        assert_eq!((&again["score"], &again["reasons"]), (&score["score"], &score["reasons"]));
        let stored: Value = app
            .get(&format!("/v1/fin/credit-scores/{}", score["id"].as_str().unwrap()), &key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (&stored["score"], &stored["reasons"], &stored["features"]),
            (&score["score"], &score["reasons"], &score["features"])
        );
    }

    // Pinned for the first row: the model and the input are fixed, so are the reasons and their order.
    let first: Value = app
        .post(
            "/v1/fin/credit-scores",
            &key,
            &json!({"cpf": cpf(200_000_000), "applicant": applicant_for(&rows[0]["features"])}),
        )
        .await
        .json()
        .await
        .unwrap();
    let codes: Vec<&str> = first["reasons"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["CHECKING_BALANCE", "SAVINGS", "LOAN_DURATION", "APPLICANT_AGE"], "{first}");
    // The account is overdrawn (code 1, the training data's mean): a reason, in its adverse words.
    assert_eq!(first["features"]["checking_status"], 1.0, "{first}");
    assert_eq!(first["reasons"][0]["description"], "Your checking account balance has been low or negative.");
    assert_eq!(first["reasons"][1]["description"], "You hold little or nothing in savings.");
    // No credits or all paid back duly: a clean history, no reason, whatever the data says of
    // applicants with a critical one.
    assert_eq!(first["features"]["credit_history"], 0.0, "{first}");
    // The customer contests it (LGPD Art. 20) by the id it was answered with.
    let contester = app.create_key(&tenant, &["governance:write"]).await;
    let review = app.review_decision(&contester, &first["id"], "o cliente contesta a decisão").await;
    assert_eq!(review.status(), 200);
    let review: Value = review.json().await.unwrap();
    assert_eq!((&review["eventId"], &review["action"]), (&first["id"], &json!("fin.ScoreCredit")), "{review}");

    // A consent without balances may not feed a score.
    let narrow_cpf = cpf(300_000_000);
    consent(&app, &key, &narrow_cpf, "banco-0", &["ACCOUNTS_READ", "ACCOUNTS_TRANSACTIONS_READ"]).await;
    let body = json!({"cpf": narrow_cpf, "applicant": applicant_for(&rows[0]["features"])});
    let problem = assert_problem(app.post("/v1/fin/credit-scores", &key, &body).await, 403).await;
    assert_eq!(problem["missingPermission"], "ACCOUNTS_BALANCES_READ", "{problem}");

    // Bad applicant fields are named.
    let mut bad = applicant_for(&rows[0]["features"]);
    bad["housing"] = json!("castle");
    let problem = assert_problem(
        app.post("/v1/fin/credit-scores", &key, &json!({"cpf": cpf(200_000_000), "applicant": bad})).await,
        400,
    )
    .await;
    assert_eq!(problem["field"], "applicant.housing");
    let mut unknown = applicant_for(&rows[0]["features"]);
    unknown["shoeSize"] = json!(42);
    let problem = assert_problem(
        app.post("/v1/fin/credit-scores", &key, &json!({"cpf": cpf(200_000_000), "applicant": unknown})).await,
        400,
    )
    .await;
    assert_eq!(problem["field"], "applicant.shoeSize", "{problem}");
    // Unknown inside an object, though named as the object is.
    let mut nested = applicant_for(&rows[0]["features"]);
    nested["applicant"] = json!({});
    let problem = assert_problem(
        app.post("/v1/fin/credit-scores", &key, &json!({"cpf": cpf(200_000_000), "applicant": nested})).await,
        400,
    )
    .await;
    assert_eq!(problem["field"], "applicant.applicant", "{problem}");
    let scores = app.count_fin_rows("credit_scores").await;
    assert_eq!(scores, 2 * rows.len() as i64 + 1);
    drift_counts_accounts_as_shared(&app, &key, rows, &withheld).await;
    // The inputs a decision was made from are the customer's: stored sealed.
    let clear = app.count_fin_rows("credit_scores WHERE features NOT LIKE 'v1:%' OR bank NOT LIKE 'v1:%'").await;
    assert_eq!(clear, 0);

    // Every decision, and every read of a stored one, reaches the tenant's audit log in ai-governance.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = app.get("/v1/governance/audit/entries?pageSize=1000", &key).await.json().await.unwrap();
        let entries = page["entries"].as_array().into_iter().flatten();
        let decisions =
            entries.clone().filter(|entry| entry["kind"] == "decision" && entry["service"] == "finquantum").count();
        let reads = entries
            .filter(|entry| entry["kind"] == "sensitive_read" && entry["action"] == "fin.GetCreditScore")
            .count();
        if decisions as i64 == scores && reads == rows.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{decisions} of {scores} decisions and {reads} of {} reads in the log: {page}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Inputs an earlier version stored in clear are sealed at the next start, and read as they were.
    let id = first["id"].as_str().unwrap();
    let sql = format!("UPDATE credit_scores SET features = '{{\"age\": 30.0}}', bank = '{{}}' WHERE id = '{id}'");
    assert_eq!(app.execute_on_fin(&sql).await, 1);
    app.restart().await;
    until_none(&app, "credit_scores WHERE features NOT LIKE 'v1:%' OR (bank NOT LIKE 'v1:%' AND bank <> '{}')").await;
    // The empty bank figures, as an erasure leaves them, stay as they are.
    assert_eq!(app.count_fin_rows(&format!("credit_scores WHERE id = '{id}' AND bank = '{{}}'")).await, 1);
    let stored: Value = app.get(&format!("/v1/fin/credit-scores/{id}"), &key).await.json().await.unwrap();
    assert_eq!(stored["features"], json!({"age": 30.0}), "{stored}");
    app.stop().await;
}

#[tokio::test]
async fn scores_match_the_reference_with_stable_reasons_on_sqlite() {
    scores_match_the_reference_with_stable_reasons(Backend::Sqlite).await;
}

#[tokio::test]
async fn scores_match_the_reference_with_stable_reasons_on_postgres() {
    scores_match_the_reference_with_stable_reasons(Backend::Postgres).await;
}

/// A platform whose tenant `tenant` has a key, and a customer with CPF `cpf(seed)` who consented
/// to everything at `banco-a` and whose data was ingested; with the bank (kept running), the
/// consent and an applicant's declared data.
async fn ingested_customer(
    backend: Backend,
    tenant: &str,
    seed: u64,
) -> (Institution, TestApp, String, String, Value, Value) {
    let bank = Institution::start().await;
    let profile = Profile { accounts: vec![checking_account()], ..Profile::default() };
    let app = start(backend, &bank, vec![("banco-a", profile)]).await;
    let tenant = app.create_tenant_on(tenant, "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let customer_cpf = cpf(seed);
    let granted = consent(&app, &key, &customer_cpf, "banco-a", ALL).await;
    assert_eq!(ingest(&app, &key, granted["id"].as_str().unwrap()).await.status(), 200);
    let applicant = json!({"durationMonths": 12, "creditAmount": 2400.0, "age": 35, "existingCredits": 1, "dependents": 1,
        "employmentYears": 3.0, "creditHistory": "paid_duly", "housing": "rent", "purpose": "furniture",
        "monthlyIncome": 2500.0});
    (bank, app, key, customer_cpf, granted, applicant)
}

async fn export_and_erasure(backend: Backend) {
    let (_bank, app, key, customer_cpf, granted, applicant) =
        ingested_customer(backend, "Financeira LGPD", 444_555_666).await;
    let response = app.post("/v1/fin/credit-scores", &key, &json!({"cpf": customer_cpf, "applicant": applicant})).await;
    assert_eq!(response.status(), 200);

    let access = open(&app, &key, json!({"cpf": customer_cpf, "kind": "access"})).await;
    assert_eq!(access["status"], "completed", "{access}");
    assert_eq!(outcome_of(&access, "finquantum")["status"], "exported");
    let bundle = export(&app, &key, access["id"].as_str().unwrap()).await;
    let customer = &bundle["services"]["finquantum"]["customers"][0];
    assert_eq!(customer["cpf"], customer_cpf, "{bundle}");
    assert_eq!(customer["consents"][0]["id"], granted["id"]);
    assert_eq!(customer["accounts"][0]["transactions"].as_array().unwrap().len(), 6);
    let consent = &customer["consents"][0];
    assert!(consent["lastIngestionTime"].is_string() && consent["revokeTime"].is_null(), "{consent}");
    let scores = customer["creditScores"].as_array().unwrap();
    assert!(scores[0]["probabilityOfDefault"].is_f64(), "{bundle}");
    assert_eq!(scores.len(), 1);
    let scored: Value = response.json().await.unwrap();
    assert_eq!(scores[0]["score"], scored["score"], "the score as the API gives it");
    assert_eq!(scores[0]["reasons"], scored["reasons"], "the reasons as the API gives them");
    assert_eq!((&scores[0]["model"], &scores[0]["modelVersion"]), (&scored["model"], &scored["modelVersion"]));
    // The bank summary the decision read, its amounts in reais as the API gives them.
    for (name, value) in scored["bank"].as_object().expect("a bank summary") {
        assert_eq!(&scores[0]["bank"][name], value, "bank.{name}: {bundle}");
    }

    let pattern = format!("aigronova:finquantum:openfinance:{}:*", granted["id"].as_str().unwrap());
    let redis = redis::Client::open(redis_url()).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let cached: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut redis).await.unwrap();
    assert!(!cached.is_empty(), "the ingestion's pages are cached under {pattern}");
    let index = format!("aigronova:finquantum:openfinance-pages:{}", granted["id"].as_str().unwrap());
    let listed: Vec<String> = redis::cmd("SMEMBERS").arg(&index).query_async(&mut redis).await.unwrap();
    assert_eq!(listed.len(), cached.len(), "{index} lists the consent's pages");

    let erasure = open(&app, &key, json!({"cpf": customer_cpf, "kind": "erasure"})).await;
    let outcome = outcome_of(&erasure, "finquantum");
    assert_eq!(outcome["status"], "erased", "{erasure}");
    assert_eq!(records(outcome), 1 + 1 + 6 + 1, "customer, consent, transactions, account");
    assert_eq!(outcome["retained"][0]["kind"], "credit_scores");
    for table in ["customers", "consents", "accounts", "transactions"] {
        assert_eq!(app.count_fin_rows(table).await, 0, "{table} after erasure");
    }
    // Nor is anything fetched under the customer's consent left in the institutions' page cache.
    let cached: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut redis).await.unwrap();
    assert_eq!(cached, Vec::<String>::new(), "pages cached under {pattern} after erasure");
    let listed: i64 = redis::cmd("EXISTS").arg(&index).query_async(&mut redis).await.unwrap();
    assert_eq!(listed, 0, "{index}, the list of the consent's pages, goes too");
    assert_eq!(app.count_fin_rows("credit_scores WHERE features <> '{}' OR customer_id <> ''").await, 0);
    let again = open(&app, &key, json!({"cpf": customer_cpf, "kind": "access"})).await;
    let bundle = export(&app, &key, again["id"].as_str().unwrap()).await;
    assert_eq!(bundle["services"]["finquantum"]["customers"], json!([]), "{bundle}");
    assert!(!bundle["services"]["finquantum"].to_string().contains(&customer_cpf), "{bundle}");
    // The decision kept without its inputs: a read of it is audited as reading none of them.
    let kept = app.get(&format!("/v1/fin/credit-scores/{}", scored["id"].as_str().unwrap()), &key).await;
    assert_eq!(kept.status(), 200);
    // The lookup that found nobody is audited too, naming no one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = app.get("/v1/governance/audit/entries?pageSize=1000", &key).await.json().await.unwrap();
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        let found = entries.iter().any(|entry| {
            entry["action"] == "fin.ExportSubject"
                && entry["leaf"].as_str().is_some_and(|leaf| leaf.contains("customer:none"))
        });
        let read = entries.iter().find(|entry| entry["action"] == "fin.GetCreditScore");
        if found && let Some(read) = read {
            let leaf: Value = serde_json::from_str(read["leaf"].as_str().unwrap()).unwrap();
            assert_eq!(leaf["details"]["fields"], json!([]), "{leaf}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no audit entry for the empty lookup: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// Scores asked for while an erasure of their customer runs: each is refused or anonymised with
/// the rest, none keeps the inputs the erasure removed.
async fn scores_racing_an_erasure_keep_nothing_of_the_customer(backend: Backend) {
    let (_bank, app, key, customer_cpf, _, applicant) =
        ingested_customer(backend, "Financeira Corrida", 555_666_777).await;
    let body = json!({"cpf": customer_cpf, "applicant": applicant});
    // Eight clients asking for scores for 600 ms, and the erasure in the middle.
    let until = tokio::time::Instant::now() + Duration::from_millis(600);
    let client = || async {
        let mut answers = Vec::new();
        while tokio::time::Instant::now() < until {
            answers.push(app.post("/v1/fin/credit-scores", &key, &body).await.status());
        }
        answers
    };
    let erasure = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        open(&app, &key, json!({"cpf": customer_cpf, "kind": "erasure"})).await
    };
    let (answers, erasure) = tokio::join!(futures_util::future::join_all((0..8).map(|_| client())), erasure);
    assert_eq!(outcome_of(&erasure, "finquantum")["status"], "erased", "{erasure}");
    for status in answers.into_iter().flatten() {
        assert!(!status.is_server_error(), "a score beside an erasure: {status:?}");
    }
    assert_eq!(app.count_fin_rows("customers").await, 0);
    let kept = app.count_fin_rows("credit_scores WHERE features <> '{}' OR customer_id <> ''").await;
    assert_eq!(kept, 0, "{backend:?}: scores that kept the erased customer's inputs");
    app.stop().await;
}

/// An amount the applicant may ask for but the model does not accept is refused, naming the
/// field the caller sent and the bound, and nothing is stored; so are more dependents than it takes.
#[tokio::test]
async fn an_amount_outside_the_models_range_names_the_applicants_field() {
    let (_bank, app, key, customer_cpf, _, mut applicant) =
        ingested_customer(Backend::Sqlite, "Financeira Faixa", 888_999_111).await;
    applicant["creditAmount"] = json!(1_000_000.0);
    applicant["durationMonths"] = json!(120);
    let response = app.post("/v1/fin/credit-scores", &key, &json!({"cpf": customer_cpf, "applicant": applicant})).await;
    let problem = assert_problem(response, 400).await;
    assert_eq!(problem["field"], "applicant.creditAmount", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert_eq!(detail, "applicant.creditAmount: 1000000 is above 73696, the most model credit-risk takes", "{problem}");
    // A number the JSON mapping reads from a string, but no finite one: told so.
    for (field, value) in [("creditAmount", "NaN"), ("monthlyIncome", "Infinity")] {
        let mut sent = applicant.clone();
        sent[field] = json!(value);
        let response = app.post("/v1/fin/credit-scores", &key, &json!({"cpf": customer_cpf, "applicant": sent})).await;
        let problem = assert_problem(response, 400).await;
        assert_eq!(problem["field"], format!("applicant.{field}"), "{problem}");
        assert!(problem["detail"].as_str().unwrap().ends_with("must be a finite number, not NaN or infinity"));
    }
    applicant["creditAmount"] = json!(5_000.0);
    applicant["dependents"] = json!(9);
    let response = app.post("/v1/fin/credit-scores", &key, &json!({"cpf": customer_cpf, "applicant": applicant})).await;
    let problem = assert_problem(response, 400).await;
    assert_eq!(problem["field"], "applicant.dependents", "{problem}");
    assert_eq!(problem["detail"], "applicant.dependents: 9 is above 8, the most model credit-risk takes", "{problem}");
    // A count left out is not a count of zero.
    applicant["dependents"] = json!(1);
    for field in ["existingCredits", "dependents"] {
        let mut partial = applicant.clone();
        partial.as_object_mut().unwrap().remove(field);
        let body = json!({"cpf": customer_cpf, "applicant": partial});
        let problem = assert_problem(app.post("/v1/fin/credit-scores", &key, &body).await, 400).await;
        assert_eq!(problem["field"], format!("applicant.{field}"), "{problem}");
    }
    // A duration that is no whole number, or 0, is told with the months the service takes.
    for (duration, said) in [
        (json!(12.5), "applicant.durationMonths is not a whole number from 1 to 120"),
        (json!(0), "applicant.durationMonths: is required, a whole number from 1 to 120 (0 reads as not given)"),
    ] {
        let mut odd = applicant.clone();
        odd["durationMonths"] = duration;
        let body = json!({"cpf": customer_cpf, "applicant": odd});
        let problem = assert_problem(app.post("/v1/fin/credit-scores", &key, &body).await, 400).await;
        assert_eq!((&problem["field"], &problem["detail"]), (&json!("applicant.durationMonths"), &json!(said)));
    }
    assert_eq!(app.count_fin_rows("credit_scores").await, 0);
    app.stop().await;
}

/// A score whose consent is revoked after the consent was read and before the score is stored is
/// refused, and nothing is stored or audited: on PostgreSQL, the revocation commits while the
/// score's insert waits for the consent's row.
#[tokio::test]
async fn an_institution_that_cannot_be_reached_is_a_503_that_names_no_address() {
    let nowhere = format!("http://127.0.0.1:{}", aigronova_e2e::port_to_start_later());
    let app = spawn_app_with(Backend::Sqlite, move |config| {
        config.finquantum.institutions.insert("banco-z".into(), nowhere);
        config.finquantum.request_timeout_ms = 500;
    })
    .await;
    let tenant = app.create_tenant_on("Financeira Isolada", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let granted = consent(&app, &key, &cpf(616_161_616), "banco-z", ALL).await;
    let problem = assert_problem(ingest(&app, &key, granted["id"].as_str().unwrap()).await, 503).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("banco-z"), "{problem}");
    // The address of a request names the customer's account: neither the client nor the log sees it.
    assert!(!detail.contains("127.0.0.1") && !detail.contains("open-banking"), "{problem}");
    app.stop().await;
}

/// The days an account's transactions are held from reach back over the ingestions whose windows
/// meet with no day between them; a window after a gap starts them again, and an account stored
/// before the first day was kept counts from its last fetch's window.
#[tokio::test]
async fn the_days_fetched_reach_back_only_over_windows_that_meet() {
    let bank = Institution::start().await;
    let app = start(
        Backend::Sqlite,
        &bank,
        vec![("banco-a", Profile { accounts: vec![checking_account()], ..Profile::default() })],
    )
    .await;
    let tenant = app.create_tenant_on("Financeira Contínua", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let granted = consent(&app, &key, &cpf(747_474_747), "banco-a", ALL).await;
    let (consent_id, customer) = (granted["id"].as_str().unwrap(), granted["customerId"].as_str().unwrap());
    assert_eq!(ingest(&app, &key, consent_id).await.status(), 200);
    let now = chrono::Utc::now();
    let today = (now - chrono::Duration::hours(3)).date_naive();
    let window_from = today - chrono::Days::new(364);
    let fetched_from = || async {
        let month = today.format("%Y-%m");
        let statement: Value =
            app.get(&format!("/v1/fin/customers/{customer}/statements/{month}"), &key).await.json().await.unwrap();
        statement["accounts"][0]["fetchedFrom"].as_str().unwrap().to_owned()
    };
    assert_eq!(fetched_from().await, window_from.to_string());
    let stored = |days: i64| aigronova_platform::time::stored(now - chrono::Duration::days(days));
    // (first day held, last fetch, first day held after the next ingestion)
    let cases = [
        // Fetched 20 days ago over a window that began 30 days before today's: kept.
        (Some(window_from - chrono::Days::new(30)), stored(20), window_from - chrono::Days::new(30)),
        // Last fetched 365 days ago: its last day is the day before today's window begins.
        (Some(window_from - chrono::Days::new(400)), stored(365), window_from - chrono::Days::new(400)),
        // Last fetched 366 days ago: one day between was never fetched.
        (Some(window_from - chrono::Days::new(400)), stored(366), window_from),
        // Stored before the first day was kept: its last fetch's window, 20 days earlier than today's.
        (None, stored(20), window_from - chrono::Days::new(20)),
    ];
    for (held_from, fetched_at, expected) in cases {
        let held_from = held_from.map_or("NULL".to_owned(), |day| format!("'{day}'"));
        let sql = format!("UPDATE accounts SET booked_from = {held_from}, fetched_at = '{fetched_at}'");
        assert_eq!(app.execute_on_fin(&sql).await, 1);
        assert_eq!(ingest(&app, &key, consent_id).await.status(), 200);
        assert_eq!(fetched_from().await, expected.to_string(), "{sql}");
    }
    app.stop().await;
}

/// A balance taken before the month began moves on with what was booked between it and the month:
/// the month's balances are walked forward from it, and meet the month before's.
#[tokio::test]
async fn a_balance_taken_before_the_month_is_walked_forward_to_it() {
    use chrono::Datelike;

    let today = (chrono::Utc::now() - chrono::Duration::hours(3)).date_naive();
    let month_start = today.with_day(1).unwrap() - chrono::Months::new(1);
    let noon = |day: chrono::NaiveDate| format!("{day}T15:00:00Z");
    let account = FakeAccount {
        id: "acc-stale".into(),
        kind: "CONTA_DEPOSITO_A_VISTA".into(),
        brand_name: "Banco Teste".into(),
        number: "94088392".into(),
        balance: "1000.00".into(),
        balance_at: Some(noon(month_start - chrono::Days::new(10))),
        transactions: vec![
            FakeTransaction::new("before", false, "PIX", "100.00", &noon(month_start - chrono::Days::new(5))),
            FakeTransaction::new("within", true, "TED", "50.00", &noon(month_start + chrono::Days::new(4))),
        ],
    };
    let bank = Institution::start().await;
    let profile = Profile { accounts: vec![account], ..Profile::default() };
    let app = start(Backend::Sqlite, &bank, vec![("banco-a", profile)]).await;
    let tenant = app.create_tenant_on("Financeira Saldo Antigo", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let granted = consent(&app, &key, &cpf(727_272_727), "banco-a", ALL).await;
    let (consent_id, customer) = (granted["id"].as_str().unwrap(), granted["customerId"].as_str().unwrap());
    assert_eq!(ingest(&app, &key, consent_id).await.status(), 200);
    let statement = |month: chrono::NaiveDate| {
        let path = format!("/v1/fin/customers/{customer}/statements/{}", month.format("%Y-%m"));
        let (app, key) = (&app, &key);
        async move {
            let statement: Value = app.get(&path, key).await.json().await.unwrap();
            statement["accounts"][0].clone()
        }
    };
    let month = statement(month_start).await;
    assert_eq!((&month["openingBalance"], &month["closingBalance"]), (&json!("900.00"), &json!("950.00")), "{month}");
    let before = statement(month_start - chrono::Months::new(1)).await;
    assert_eq!(before["closingBalance"], "900.00", "{before}");
    app.stop().await;
}

/// A transaction the institution corrects, its amount, side or date under the same id, is stored as
/// the institution has it now, not as it was first fetched.
#[tokio::test]
async fn a_transaction_the_institution_corrects_is_stored_as_corrected() {
    use chrono::Datelike;

    let today = (chrono::Utc::now() - chrono::Duration::hours(3)).date_naive();
    let last_month = today.with_day(1).unwrap() - chrono::Months::new(1);
    let noon = |day: chrono::NaiveDate| format!("{day}T15:00:00Z");
    let profile = |credit: bool, amount: &str, day: u64| Profile {
        accounts: vec![FakeAccount {
            id: "acc-corrected".into(),
            kind: "CONTA_DEPOSITO_A_VISTA".into(),
            brand_name: "Banco Teste".into(),
            number: "94088392".into(),
            balance: "1000.00".into(),
            balance_at: Some(noon(today)),
            transactions: vec![FakeTransaction::new(
                "tx-corrected",
                credit,
                "PIX",
                amount,
                &noon(last_month + chrono::Days::new(day)),
            )],
        }],
        ..Profile::default()
    };
    let bank = Institution::start().await;
    let url = bank.serve("banco-a", profile(false, "100.00", 4));
    // Pages fetched are reused for a second: the next ingestion after it reads the correction.
    let app = spawn_app_with(Backend::Sqlite, move |config| {
        config.finquantum.institutions = [("banco-a".to_owned(), url)].into_iter().collect();
        config.finquantum.cache_ttl_secs = 1;
    })
    .await;
    let tenant = app.create_tenant_on("Financeira Estorno", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let granted = consent(&app, &key, &cpf(737_373_737), "banco-a", ALL).await;
    let (consent_id, customer) = (granted["id"].as_str().unwrap(), granted["customerId"].as_str().unwrap());
    let path = format!("/v1/fin/customers/{customer}/statements/{}", last_month.format("%Y-%m"));
    let transactions = || async {
        let statement: Value = app.get(&path, &key).await.json().await.unwrap();
        let account = &statement["accounts"][0];
        let transactions = account["transactions"].as_array().unwrap().clone();
        (transactions, account["totalCredits"].clone(), account["totalDebits"].clone())
    };

    assert_eq!(ingest(&app, &key, consent_id).await.status(), 200);
    let (first, _, debits) = transactions().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((&first[0]["amount"], &debits), (&json!("100.00"), &json!("100.00")), "{first:?}");
    assert_eq!(first[0]["date"], (last_month + chrono::Days::new(4)).to_string());

    // The same id, now a credit of another amount two days later.
    bank.serve("banco-a", profile(true, "80.00", 6));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ingest(&app, &key, consent_id).await.status(), 200);
    let (corrected, credits, debits) = transactions().await;
    assert_eq!(corrected.len(), 1, "{corrected:?}");
    assert_eq!(corrected[0]["amount"], "80.00", "{corrected:?}");
    assert_eq!(corrected[0]["creditDebitType"], "CREDITO", "{corrected:?}");
    assert_eq!(corrected[0]["date"], (last_month + chrono::Days::new(6)).to_string());
    assert_eq!((credits, debits), (json!("80.00"), json!("0.00")));
    app.stop().await;
}

/// An institution's failures are its own: an answer outside the Open Finance shapes is a 502 and is
/// not kept for the next ingestion, and however many ingestions fail, even past the gateway's
/// deadline for finquantum, finquantum's circuit at the gateway stays closed.
#[tokio::test]
async fn an_institution_that_fails_is_a_bad_gateway_and_leaves_finquantums_circuit_closed() {
    let bank = Institution::start().await;
    let url = bank.serve("banco-a", Profile { accounts: vec![checking_account()], ..Profile::default() });
    let app = spawn_app_with(Backend::Sqlite, move |config| {
        config.finquantum.institutions.insert("banco-a".into(), url);
        // Three tries of 1 s each take longer than the gateway waits for finquantum.
        config.finquantum.request_timeout_ms = 1_000;
        config.gateway.upstream_timeouts.insert("finquantum".into(), 1.5);
        config.gateway.circuit_breaker.failure_threshold = 2;
    })
    .await;
    let tenant = app.create_tenant_on("Financeira Exposta", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let granted = consent(&app, &key, &cpf(727_272_727), "banco-a", ALL).await;
    let consent_id = granted["id"].as_str().unwrap();

    // A page larger than any the Accounts API sends (here JSON whitespace before an empty page,
    // which would read) is refused as it arrives, not read whole.
    bank.oversize_next(1, aigronova_finquantum::openfinance::MAX_PAGE_BYTES + 1);
    let problem = assert_problem(ingest(&app, &key, consent_id).await, 502).await;
    assert!(problem["detail"].as_str().unwrap().contains("larger than the Accounts API's pages"), "{problem}");

    bank.malform_next(1);
    let problem = assert_problem(ingest(&app, &key, consent_id).await, 502).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("banco-a") && detail.contains("outside the Open Finance shapes"), "{problem}");

    // A status the Accounts API does not answer (no content, a redirect, a 404 for the consent's
    // accounts): each a 502 naming it, the redirect not followed; a 401 is the consent refused.
    for (status, told, wanted) in [
        (204, 502, "it answered HTTP 204"),
        (302, 502, "it answered HTTP 302"),
        (404, 502, "it answered HTTP 404"),
        (401, 400, "refused the consent"),
    ] {
        bank.answer_next(status, 1);
        let calls = bank.calls();
        let problem = assert_problem(ingest(&app, &key, consent_id).await, told).await;
        assert_eq!(bank.calls(), calls + 1, "asked once, no redirect followed: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(wanted), "{problem}");
    }

    // A page that reads but holds an amount that is none: a 502 too, and once the institution
    // sends it right, the next ingestion asks for it again rather than reading it from the cache.
    let mut account = checking_account();
    account.transactions[1].amount = "12,50".into();
    bank.serve("banco-a", Profile { accounts: vec![account], ..Profile::default() });
    let problem = assert_problem(ingest(&app, &key, consent_id).await, 502).await;
    assert!(problem["detail"].as_str().unwrap().contains("tx-2's amount is not an amount"), "{problem}");
    // A name with a control character (a NUL, which a database's text refuses), and one id for two
    // different transactions: each a 502 naming it, and nothing stored.
    let mut nul = checking_account();
    nul.transactions[0].name = "MERCADO\u{0}X".into();
    let mut twice = checking_account();
    twice.transactions[1].id = twice.transactions[0].id.clone();
    // An id that is a card number, quoted in the answer only masked.
    let mut carded = checking_account();
    carded.transactions[1].id = "4111111111111111".into();
    carded.transactions[2].id = "4111111111111111".into();
    // An id that holds a person's CPF, quoted with it masked as in a name.
    let mut named = checking_account();
    named.transactions[1].id = "MARIA-SILVA-52998224725".into();
    named.transactions[2].id = "MARIA-SILVA-52998224725".into();
    let cases = [
        (nul, "name holds a control character (U+0000)"),
        (twice, "is sent twice"),
        (carded, "transaction ****1111 is sent twice"),
        (named, "transaction MARIA-SILVA-***.982.247-** is sent twice"),
    ];
    for (account, wanted) in cases {
        bank.serve("banco-a", Profile { accounts: vec![account], ..Profile::default() });
        let problem = assert_problem(ingest(&app, &key, consent_id).await, 502).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(wanted) && !detail.contains("4111111111111111") && !detail.contains("52998224725"),
            "{problem}"
        );
    }
    assert_eq!(app.get(&format!("/v1/fin/consents/{consent_id}"), &key).await.status(), 200);
    // An id that is a card number, once: stored masked (with a keyed digest of it, the same at the
    // next ingestion, which stores nothing new), never in clear.
    let mut carded = checking_account();
    carded.transactions[1].id = "4111111111111111".into();
    bank.serve("banco-a", Profile { accounts: vec![carded], ..Profile::default() });
    for new in [6, 0] {
        let ingested: Value = ingest(&app, &key, consent_id).await.json().await.unwrap();
        assert_eq!(ingested["newTransactions"], new, "{ingested}");
    }
    assert_eq!(app.count_fin_rows("transactions WHERE transaction_id LIKE '****1111~%'").await, 1);
    assert_eq!(app.count_fin_rows("transactions WHERE transaction_id LIKE '%4111111111111111%'").await, 0);
    // One stored in clear by an earlier version takes its masked id at the next ingestion.
    app.execute_on_fin(
        "UPDATE transactions SET transaction_id = '4111111111111111' WHERE transaction_id LIKE '****1111~%'",
    )
    .await;
    let ingested: Value = ingest(&app, &key, consent_id).await.json().await.unwrap();
    assert_eq!(ingested["newTransactions"], 0, "{ingested}");
    assert_eq!(app.count_fin_rows("transactions WHERE transaction_id LIKE '****1111~%'").await, 1);
    assert_eq!(app.count_fin_rows("transactions").await, 6);
    // So does one stored in clear beside its masked copy (the copy kept), and one the institution
    // no longer sends.
    app.execute_on_fin(
        "INSERT INTO transactions (tenant_id, customer_id, institution, account_id, transaction_id, credit, kind, \
         name, amount_cents, currency, booked_at, fetched_at) SELECT tenant_id, customer_id, institution, account_id, \
         '4111111111111111', credit, kind, name, amount_cents, currency, booked_at, fetched_at FROM transactions \
         WHERE transaction_id LIKE '****1111~%'",
    )
    .await;
    app.execute_on_fin("UPDATE transactions SET transaction_id = '5555555555554444' WHERE transaction_id = 'tx-1'")
        .await;
    let ingested: Value = ingest(&app, &key, consent_id).await.json().await.unwrap();
    assert_eq!(ingested["newTransactions"], 1, "tx-1 fetched again: {ingested}");
    for (pattern, count) in [("****1111~%", 1), ("****4444~%", 1), ("%4111111111111111%", 0), ("%5555555555554444%", 0)]
    {
        let rows = app.count_fin_rows(&format!("transactions WHERE transaction_id LIKE '{pattern}'")).await;
        assert_eq!(rows, count, "{pattern}");
    }
    assert_eq!(app.count_fin_rows("transactions").await, 7);
    app.execute_on_fin("DELETE FROM transactions").await;
    bank.serve("banco-a", Profile { accounts: vec![checking_account()], ..Profile::default() });
    assert_eq!(ingest(&app, &key, consent_id).await.status(), 200);
    let second = consent(&app, &key, &cpf(737_373_737), "banco-a", ALL).await;
    let consent_id = second["id"].as_str().unwrap();

    // More failures in a row than the circuit's threshold, each cut short within the gateway's
    // deadline and told as the institution's.
    bank.hang_next(100);
    for _ in 0..3 {
        let problem = assert_problem(ingest(&app, &key, consent_id).await, 503).await;
        assert!(problem["detail"].as_str().unwrap().contains("banco-a"), "{problem}");
    }
    let state = r#"aigronova_gateway_circuit_state{upstream="finquantum"}"#;
    assert_eq!(crate::resilience::metric(&app, state).await, 0.0, "closed");
    let read = app.get(&format!("/v1/fin/consents/{consent_id}"), &key).await;
    assert_eq!(read.status(), 200, "finquantum answers its own calls while the institution fails");
    app.stop().await;
}

#[tokio::test]
async fn consents_made_at_once_for_a_new_cpf_register_one_customer_on_postgres() {
    let bank = Institution::start().await;
    let profile = Profile { accounts: vec![checking_account()], ..Profile::default() };
    let app = start(Backend::Postgres, &bank, vec![("banco-a", profile)]).await;
    let tenant = app.create_tenant_on("Financeira Simultânea", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let customer_cpf = cpf(515_151_515);
    let body =
        json!({"cpf": customer_cpf, "institution": "banco-a", "permissions": ALL, "expiresAt": days_from_now(30)});
    let made = futures_util::future::join_all((0..12).map(|_| app.post("/v1/fin/consents", &key, &body))).await;
    let mut customers = std::collections::BTreeSet::new();
    for response in made {
        assert_eq!(response.status(), 200);
        customers.insert(response.json::<Value>().await.unwrap()["customerId"].as_str().unwrap().to_owned());
    }
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert_eq!(app.count_fin_rows("customers").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_score_whose_consent_is_revoked_before_it_is_stored_is_refused_on_postgres() {
    use sqlx::Connection;
    let (_bank, app, key, customer_cpf, granted, applicant) =
        ingested_customer(Backend::Postgres, "Financeira Revogada", 777_888_999).await;
    let consent_id = granted["id"].as_str().unwrap().to_owned();
    sqlx::any::install_default_drivers();
    let mut revoker = sqlx::AnyConnection::connect(&app.fin_database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut revoker).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 1 FROM consents WHERE id = '{consent_id}' FOR UPDATE")))
        .fetch_one(&mut revoker)
        .await
        .unwrap();
    let scoring = {
        let body = json!({"cpf": customer_cpf, "applicant": applicant});
        let (client, url, key) = (app.client.clone(), app.url("/v1/fin/credit-scores"), key.clone());
        tokio::spawn(async move { client.post(url).bearer_auth(key).json(&body).send().await.unwrap() })
    };
    // The score's insert waits for the consent's row.
    aigronova_e2e::until_a_session_waits_for_a_lock(&mut revoker, "the score").await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE consents SET revoked_at = '2026-01-01T00:00:00.000000Z' WHERE id = '{consent_id}'"
    )))
    .execute(&mut revoker)
    .await
    .unwrap();
    sqlx::query("COMMIT").execute(&mut revoker).await.unwrap();
    let problem = assert_problem(scoring.await.unwrap(), 403).await;
    assert!(problem["detail"].as_str().unwrap().contains("revoked while the score was made"), "{problem}");
    assert_eq!(problem["missingPermission"], "ACCOUNTS_READ", "{problem}");
    assert_eq!(app.count_fin_rows("credit_scores").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn scores_racing_an_erasure_keep_nothing_of_the_customer_on_sqlite() {
    scores_racing_an_erasure_keep_nothing_of_the_customer(Backend::Sqlite).await;
}

#[tokio::test]
async fn scores_racing_an_erasure_keep_nothing_of_the_customer_on_postgres() {
    scores_racing_an_erasure_keep_nothing_of_the_customer(Backend::Postgres).await;
}

#[tokio::test]
async fn export_and_erasure_on_sqlite() {
    export_and_erasure(Backend::Sqlite).await;
}

#[tokio::test]
async fn export_and_erasure_on_postgres() {
    export_and_erasure(Backend::Postgres).await;
}

/// What `aigronova up` offers a first trial: the sandbox institution, consented, ingested,
/// scored and stated, with the card numbers in its transaction names masked before storage.
#[tokio::test]
async fn the_sandbox_institution_serves_a_first_trial() {
    let app = spawn_app_with(Backend::Sqlite, |config| config.finquantum.purge_interval_secs = 1).await;
    let tenant = app.create_tenant_on("Financeira Sandbox", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let customer_cpf = cpf(529_982_247);
    let granted = consent(&app, &key, &customer_cpf, "sandbox", ALL).await;
    let response = ingest(&app, &key, granted["id"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200);
    let ingestion: Value = response.json().await.unwrap();
    assert_eq!(ingestion["accounts"], 2, "{ingestion}");
    assert!(ingestion["transactions"].as_i64().unwrap() > 25, "more than one page: {ingestion}");

    let applicant = json!({"durationMonths": 24, "creditAmount": 5000.0, "age": 41, "existingCredits": 1,
        "dependents": 1, "employmentYears": 6.0, "creditHistory": "paid_duly", "housing": "own", "purpose": "car_new"});
    let response = app.post("/v1/fin/credit-scores", &key, &json!({"cpf": customer_cpf, "applicant": applicant})).await;
    assert_eq!(response.status(), 200);
    let score: Value = response.json().await.unwrap();
    assert_eq!(score["bank"]["incomeMonths"], 3, "a salary each month: {score}");
    assert!((0..=1000).contains(&score["score"].as_i64().unwrap()));

    let month = (chrono::Utc::now() - chrono::Duration::days(31)).format("%Y-%m").to_string();
    let path = format!("/v1/fin/customers/{}/statements/{month}", granted["customerId"].as_str().unwrap());
    let statement: Value = app.get(&path, &key).await.json().await.unwrap();
    let text = statement.to_string();
    assert!(text.contains("FOLHA_PAGAMENTO") && text.contains("****1111"), "{statement}");
    assert!(!text.contains("4111 1111 1111 1111"), "a card number in clear: {statement}");
    // The names are sealed with the tenant's key, as a bank's words may name people and hold CPFs.
    assert_eq!(app.count_fin_rows("transactions WHERE name NOT LIKE 'v1:%'").await, 0);
    assert_eq!(app.count_fin_rows("transactions WHERE name LIKE '%SALARIO%'").await, 0);
    // A name an earlier version stored in clear, with a card number its masking missed.
    let unmasked = app
        .execute_on_fin(&format!(
            "UPDATE transactions SET name = 'COMPRA UNICA 4111 1111 1111 1111' WHERE transaction_id = (SELECT \
             transaction_id FROM transactions WHERE booked_at LIKE '{month}%' ORDER BY transaction_id LIMIT 1)"
        ))
        .await;
    assert_eq!(unmasked, 1);
    // Read as it is meanwhile, as one a replica of the earlier version writes during a rolling
    // upgrade, its card masked; then sealed, masked, by the purge's next pass.
    let clear = app.get(&path, &key).await.text().await.unwrap();
    assert!(clear.contains("COMPRA UNICA ****1111") && !clear.contains("4111 1111"), "{clear}");
    until_none(&app, "transactions WHERE substr(name, 1, 3) <> 'v1:'").await;
    let sealed = app.get(&path, &key).await.text().await.unwrap();
    assert!(sealed.contains("COMPRA UNICA ****1111") && !sealed.contains("4111 1111"), "{sealed}");
    // Account numbers are sealed too, each bound to its account; one an earlier version stored in
    // clear is read as it is meanwhile, then sealed by the purge's next pass.
    assert_eq!(app.count_fin_rows("accounts WHERE number NOT LIKE 'v1:%'").await, 0);
    for account in statement["accounts"].as_array().unwrap() {
        let number = account["number"].as_str().unwrap();
        assert!(number.contains('-') && !number.starts_with("v1:"), "{account}");
        assert_eq!(app.count_fin_rows(&format!("accounts WHERE number LIKE '%{number}%'")).await, 0);
    }
    let cleared = app
        .execute_on_fin(
            "UPDATE accounts SET number = '98765-4' WHERE account_id = (SELECT account_id FROM accounts \
             ORDER BY account_id LIMIT 1)",
        )
        .await;
    assert_eq!(cleared, 1);
    assert!(app.get(&path, &key).await.text().await.unwrap().contains("\"98765-4\""));
    until_none(&app, "accounts WHERE substr(number, 1, 3) <> 'v1:'").await;
    assert!(app.get(&path, &key).await.text().await.unwrap().contains("\"98765-4\""));
    assert_eq!(app.count_fin_rows("accounts WHERE number LIKE '%98765%'").await, 0);
    // A prepaid payment account's number an earlier version stored in clear, its card's: shown
    // masked whether the purge's pass has sealed it yet or not, and sealed masked.
    let prepaid = app
        .execute_on_fin(
            "UPDATE accounts SET kind = 'CONTA_PAGAMENTO_PRE_PAGA', number = '4111111111111111-4' WHERE account_id = \
             (SELECT account_id FROM accounts ORDER BY account_id LIMIT 1)",
        )
        .await;
    assert_eq!(prepaid, 1);
    for moment in ["in clear", "sealed"] {
        if moment == "sealed" {
            until_none(&app, "accounts WHERE substr(number, 1, 3) <> 'v1:'").await;
        }
        let shown = app.get(&path, &key).await.text().await.unwrap();
        assert!(shown.contains("\"****1111-4\"") && !shown.contains("4111111111111111"), "{moment}: {shown}");
    }
    // Masked before it was sealed: shown so whatever the account's type says now.
    let retyped = app
        .execute_on_fin("UPDATE accounts SET kind = 'CONTA_DEPOSITO_A_VISTA' WHERE kind = 'CONTA_PAGAMENTO_PRE_PAGA'")
        .await;
    assert_eq!(retyped, 1);
    let shown = app.get(&path, &key).await.text().await.unwrap();
    assert!(shown.contains("\"****1111-4\"") && !shown.contains("4111111111111111"), "{shown}");
    // Fetched again, it takes the name the institution gives.
    let again: Value = ingest(&app, &key, granted["id"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(again["newTransactions"], 0, "{again}");
    let statement = app.get(&path, &key).await.text().await.unwrap();
    assert!(!statement.contains("COMPRA UNICA") && !statement.contains("4111 1111"), "{statement}");

    // A second consent of the customer is a second set of accounts, each with one history, rather
    // than another history of the same accounts.
    let again = consent(&app, &key, &customer_cpf, "sandbox", ALL).await;
    let second: Value = ingest(&app, &key, again["id"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(second["newTransactions"], second["transactions"], "{second}");
    assert_eq!(app.count_fin_rows("accounts").await, 4);
    let first: Value = ingest(&app, &key, granted["id"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!((first["accounts"].as_i64(), first["newTransactions"].as_i64()), (Some(2), Some(0)), "{first}");
    app.stop().await;
}

/// The items of every page of the list at `path` (which sets its page size), in turn, until a
/// page comes without a token.
async fn pages(app: &TestApp, key: &str, path: &str, items: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let response = app.get(&format!("{path}&pageToken={token}"), key).await;
        assert_eq!(response.status(), 200, "{path}");
        let page: Value = response.json().await.unwrap();
        pages.push(page[items].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => return pages,
        }
        assert!(pages.len() < 10, "the list never ends: {page}");
    }
}

/// A customer's consents and credit decisions are listed newest first, a page at a time, each as
/// its own GET answers it; a page of decisions is audited as one read that names them.
async fn a_customers_consents_and_scores_are_listed_a_page_at_a_time(backend: Backend) {
    let (_bank, app, key, customer_cpf, granted, applicant) =
        ingested_customer(backend, "Financeira Listas", 529_982_247).await;
    let customer = granted["customerId"].as_str().unwrap().to_owned();
    let second = consent(&app, &key, &customer_cpf, "banco-a", &["ACCOUNTS_READ"]).await;
    let mut scored = Vec::new();
    for _ in 0..3 {
        let body = json!({"cpf": customer_cpf, "applicant": applicant});
        let response = app.post("/v1/fin/credit-scores", &key, &body).await;
        assert_eq!(response.status(), 200);
        scored.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }

    let consents = pages(&app, &key, &format!("/v1/fin/customers/{customer}/consents?pageSize=1"), "consents").await;
    assert_eq!(consents.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    assert_eq!(consents[0][0], second, "newest first, as GetConsent answers it");
    assert_eq!(consents[1][0]["id"], granted["id"]);
    // Consents are read as the customer's data: one read per page naming its consents, and one per GET.
    let one = granted["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/fin/consents/{one}"), &key).await.status(), 200);
    let entries = app
        .audit_entries_once(&key, |entries| {
            entries.iter().filter(|e| e["action"] == "fin.ListConsents").count() == 2
                && entries.iter().any(|e| e["action"] == "fin.GetConsent")
        })
        .await;
    let leaves: Vec<Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "fin.ListConsents" || entry["action"] == "fin.GetConsent")
        .map(|entry| serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap())
        .collect();
    for leaf in &leaves {
        assert_eq!(
            (&leaf["kind"], &leaf["subject"]),
            (&json!("sensitive_read"), &json!(format!("customer:{customer}")))
        );
    }
    assert_eq!(leaves[0]["details"]["consents"], json!([second["id"]]), "{}", leaves[0]);
    assert_eq!(leaves[1]["details"]["consents"], json!([granted["id"]]), "{}", leaves[1]);
    assert_eq!(leaves[2]["details"]["consent"], granted["id"], "{}", leaves[2]);

    let path = format!("/v1/fin/customers/{customer}/credit-scores?pageSize=2");
    let scores = pages(&app, &key, &path, "creditScores").await;
    assert_eq!(scores.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    let listed: Vec<&str> = scores.iter().flatten().map(|score| score["id"].as_str().unwrap()).collect();
    assert_eq!(listed, scored.iter().rev().map(String::as_str).collect::<Vec<_>>(), "newest first");
    let one: Value = app.get(&format!("/v1/fin/credit-scores/{}", scored[2]), &key).await.json().await.unwrap();
    assert_eq!(scores[0][0], one);
    // One read per page, naming its decisions and what they showed.
    let entries = app
        .audit_entries_once(&key, |entries| {
            entries.iter().filter(|e| e["action"] == "fin.ListCreditScores").count() == 2
        })
        .await;
    let reads: Vec<Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "fin.ListCreditScores")
        .map(|entry| serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(reads[0]["kind"], "sensitive_read", "{}", reads[0]);
    assert_eq!(reads[0]["subject"], format!("customer:{customer}"), "{}", reads[0]);
    assert_eq!(reads[0]["details"]["creditScores"], json!([scored[2], scored[1]]), "{}", reads[0]);
    assert_eq!(reads[0]["details"]["fields"], json!(["bank", "features"]), "{}", reads[0]);
    assert_eq!(reads[1]["details"]["creditScores"], json!([scored[0]]), "{}", reads[1]);

    // A customer without decisions has an empty list, and nothing is audited.
    let other = consent(&app, &key, &cpf(111_444_777), "banco-a", ALL).await;
    let path = format!("/v1/fin/customers/{}/credit-scores", other["customerId"].as_str().unwrap());
    let empty: Value = app.get(&path, &key).await.json().await.unwrap();
    assert_eq!(empty, json!({"creditScores": [], "nextPageToken": ""}));
    // A token goes on only in the list that returned it: not in another customer's, not in the
    // consents', and not once altered.
    let first: Value =
        app.get(&format!("/v1/fin/customers/{customer}/credit-scores?pageSize=1"), &key).await.json().await.unwrap();
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    let made_up = format!("{}.0123456789abcdef", scored[2]);
    for url in [
        format!("{path}?pageToken={token}"),
        format!("/v1/fin/customers/{customer}/consents?pageToken={token}"),
        format!("/v1/fin/customers/{customer}/credit-scores?pageToken={made_up}"),
    ] {
        assert_eq!(assert_problem(app.get(&url, &key).await, 400).await["field"], "pageToken", "{url}");
    }

    // Refused: a customer the tenant does not have, or another tenant's; malformed ids, tokens and sizes.
    let stranger = app.create_tenant_on("Outra Financeira", "enterprise").await;
    let stranger = app.create_key(&stranger, SCOPES).await;
    for list in ["consents", "credit-scores"] {
        let path = format!("/v1/fin/customers/{customer}/{list}");
        assert_problem(app.get(&path, &stranger).await, 404).await;
        // Whatever the token: the customer is looked for first.
        for query in [format!("pageToken={token}"), "pageToken=nope".to_owned(), "pageSize=101".to_owned()] {
            assert_problem(app.get(&format!("{path}?{query}"), &stranger).await, 404).await;
        }
        let unknown = format!("/v1/fin/customers/{}/{list}", uuid::Uuid::now_v7());
        assert_problem(app.get(&unknown, &key).await, 404).await;
        for (query, field) in [("pageToken=nope", "pageToken"), ("pageSize=101", "pageSize")] {
            let problem = assert_problem(app.get(&format!("{path}?{query}"), &key).await, 400).await;
            assert_eq!(problem["field"], field, "{query}: {problem}");
        }
        let problem = assert_problem(app.get(&format!("/v1/fin/customers/nope/{list}"), &key).await, 400).await;
        assert_eq!(problem["field"], "customerId", "{problem}");
    }
    // The two pages, and the first page read again for its token; none of the refusals.
    let reads = |entries: &[Value]| entries.iter().filter(|entry| entry["action"] == "fin.ListCreditScores").count();
    let after = app.audit_entries_once(&key, |entries| reads(entries) >= 3).await;
    assert_eq!(reads(&after), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_customers_consents_and_scores_are_listed_a_page_at_a_time_on_sqlite() {
    a_customers_consents_and_scores_are_listed_a_page_at_a_time(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_customers_consents_and_scores_are_listed_a_page_at_a_time_on_postgres() {
    a_customers_consents_and_scores_are_listed_a_page_at_a_time(Backend::Postgres).await;
}

/// Revoking one of several consents that fetched the same accounts keeps each account under
/// another valid one that fetched it, without its balance when that one grants none, and deletes
/// an account no other valid consent fetched; an ingestion under a consent that grants no
/// balances leaves accounts under one that does; revoking the last one deletes everything.
async fn revoking_one_consent_keeps_what_another_still_covers(backend: Backend) {
    let bank = Institution::start().await;
    let profile = Profile { accounts: vec![checking_account()], ..Profile::default() };
    let app = start(backend, &bank, vec![("banco-a", profile)]).await;
    let tenant = app.create_tenant_on("Financeira Duas", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let holder = cpf(456_789_123);
    let first = consent(&app, &key, &holder, "banco-a", ALL).await;
    let customer = first["customerId"].as_str().unwrap().to_owned();
    let second = consent(&app, &key, &holder, "banco-a", ALL).await;
    let no_balances = consent(&app, &key, &holder, "banco-a", &["ACCOUNTS_READ", "ACCOUNTS_TRANSACTIONS_READ"]).await;
    let (first, second, no_balances) =
        (first["id"].as_str().unwrap(), second["id"].as_str().unwrap(), no_balances["id"].as_str().unwrap());
    // The first consent shares the checking account only; the second, later, the savings too.
    assert_eq!(ingest(&app, &key, first).await.status(), 200);
    bank.serve("banco-a", Profile { accounts: vec![checking_account(), savings_account()], ..Profile::default() });
    assert_eq!(ingest(&app, &key, second).await.status(), 200);
    let held_under = |id: &str, with: &str| format!("accounts WHERE consent_id = '{id}' AND {with}");
    assert_eq!(app.count_fin_rows(&held_under(second, "balance_cents IS NOT NULL")).await, 2);
    assert_eq!(app.count_fin_rows("transactions").await, 7);
    let statement = format!("/v1/fin/customers/{customer}/statements/2026-10");
    let checking = |statement: Value| {
        statement["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["accountId"] == "acc-checking")
            .cloned()
            .collect::<Vec<_>>()
    };
    let before: Value = app.get(&statement, &key).await.json().await.unwrap();
    assert_eq!(before["accounts"].as_array().unwrap().len(), 2, "{before}");

    let wait_purged = |id: String| {
        let app = &app;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while app.count_fin_rows(&format!("consents WHERE id = '{id}' AND purged_at IS NOT NULL")).await == 0 {
                assert!(tokio::time::Instant::now() < deadline, "consent {id} was not purged");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(app.delete(&format!("/v1/fin/consents/{second}"), &key).await.status(), 200);
    wait_purged(second.to_owned()).await;
    // The checking account passes to the first consent; the savings, which it never fetched, goes.
    assert_eq!(app.count_fin_rows("accounts WHERE account_id = 'acc-savings'").await, 0);
    assert_eq!(app.count_fin_rows("transactions").await, 6, "the checking account's transactions stay");
    assert_eq!(app.count_fin_rows(&held_under(first, "balance_cents IS NOT NULL AND summary IS NOT NULL")).await, 1);
    let after: Value = app.get(&statement, &key).await.json().await.unwrap();
    assert_eq!(after["accounts"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(checking(after), checking(before), "the statement under the valid consent changed");

    // A consent that grants no balances fetches, and the account stays under the first, balance and all.
    bank.serve("banco-a", Profile { accounts: vec![checking_account()], ..Profile::default() });
    assert_eq!(ingest(&app, &key, no_balances).await.status(), 200);
    assert_eq!(app.count_fin_rows(&held_under(first, "balance_cents IS NOT NULL AND summary IS NOT NULL")).await, 1);

    // Once the first goes, the account passes to it without its balance and what was drawn from it.
    assert_eq!(app.delete(&format!("/v1/fin/consents/{first}"), &key).await.status(), 200);
    wait_purged(first.to_owned()).await;
    assert_eq!(app.count_fin_rows("transactions").await, 6);
    assert_eq!(app.count_fin_rows(&held_under(no_balances, "balance_cents IS NULL AND summary IS NULL")).await, 1);
    assert_eq!(app.count_fin_rows("accounts WHERE balance_cents IS NOT NULL OR summary IS NOT NULL").await, 0);
    assert_eq!(app.get(&statement, &key).await.status(), 200);

    assert_eq!(app.delete(&format!("/v1/fin/consents/{no_balances}"), &key).await.status(), 200);
    wait_purged(no_balances.to_owned()).await;
    assert_eq!(app.count_fin_rows("transactions").await + app.count_fin_rows("accounts").await, 0);
    assert_eq!(app.count_fin_rows("consent_accounts").await, 0);
    let problem = assert_problem(app.get(&statement, &key).await, 403).await;
    assert_eq!(problem["missingPermission"], "ACCOUNTS_TRANSACTIONS_READ", "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn revoking_one_consent_keeps_what_another_still_covers_on_sqlite() {
    revoking_one_consent_keeps_what_another_still_covers(Backend::Sqlite).await;
}

#[tokio::test]
async fn revoking_one_consent_keeps_what_another_still_covers_on_postgres() {
    revoking_one_consent_keeps_what_another_still_covers(Backend::Postgres).await;
}

/// Until the purge comes, a revoked consent's accounts that another valid consent fetched stay in
/// use: a statement and a score read them as before.
#[tokio::test]
async fn a_revoked_consents_accounts_another_consent_fetched_stay_in_use() {
    let bank = Institution::start().await;
    let url = bank.serve("banco-a", Profile { accounts: vec![checking_account()], ..Profile::default() });
    let redis = redis_url();
    let app = spawn_app_with(Backend::Sqlite, move |config| {
        config.finquantum.institutions = [("banco-a".to_owned(), url)].into_iter().collect();
        config.finquantum.redis_url = Some(redis);
        config.finquantum.revoked_data_retention_secs = 3600;
    })
    .await;
    let tenant = app.create_tenant_on("Financeira Espera", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let holder = cpf(135_792_468);
    let first = consent(&app, &key, &holder, "banco-a", ALL).await;
    let second = consent(&app, &key, &holder, "banco-a", ALL).await;
    let customer = first["customerId"].as_str().unwrap().to_owned();
    for id in [&first["id"], &second["id"]] {
        assert_eq!(ingest(&app, &key, id.as_str().unwrap()).await.status(), 200);
    }
    let applicant = json!({"durationMonths": 12, "creditAmount": 2400.0, "age": 35, "existingCredits": 1, "dependents": 1,
        "employmentYears": 3.0, "creditHistory": "paid_duly", "housing": "rent", "purpose": "furniture"});
    let body = json!({"cpf": holder, "applicant": applicant});
    let statement = format!("/v1/fin/customers/{customer}/statements/2026-10");
    let statement_before: Value = app.get(&statement, &key).await.json().await.unwrap();
    let score_before: Value = app.post("/v1/fin/credit-scores", &key, &body).await.json().await.unwrap();
    assert_eq!(app.delete(&format!("/v1/fin/consents/{}", second["id"].as_str().unwrap()), &key).await.status(), 200);
    let statement_after: Value = app.get(&statement, &key).await.json().await.unwrap();
    assert_eq!(statement_after["accounts"], statement_before["accounts"]);
    let score_after: Value = app.post("/v1/fin/credit-scores", &key, &body).await.json().await.unwrap();
    assert_eq!((&score_after["score"], &score_after["bank"]), (&score_before["score"], &score_before["bank"]));
    app.stop().await;
}

/// A consent that reaches its expiry is used no more, and what was fetched under it is purged.
#[tokio::test]
async fn an_expired_consent_is_no_longer_used_and_its_data_is_deleted() {
    let bank = Institution::start().await;
    let profile = Profile { accounts: vec![checking_account()], ..Profile::default() };
    let app = start(Backend::Sqlite, &bank, vec![("banco-a", profile)]).await;
    let tenant = app.create_tenant_on("Financeira Expira", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let expires_at =
        (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = json!({"cpf": cpf(321_654_987), "institution": "banco-a", "permissions": ALL, "expiresAt": expires_at});
    let granted: Value = app.post("/v1/fin/consents", &key, &body).await.json().await.unwrap();
    let (id, customer) = (granted["id"].as_str().unwrap(), granted["customerId"].as_str().unwrap());
    assert_eq!(ingest(&app, &key, id).await.status(), 200);
    let statement = format!("/v1/fin/customers/{customer}/statements/2026-10");
    assert_eq!(app.get(&statement, &key).await.status(), 200);
    assert_eq!(app.count_fin_rows("transactions").await, 6);

    tokio::time::sleep(Duration::from_secs(4)).await;
    let consent: Value = app.get(&format!("/v1/fin/consents/{id}"), &key).await.json().await.unwrap();
    assert_eq!(consent["status"], "EXPIRED");
    // Revoking it now changes nothing: it stays expired.
    let revoked: Value = app.delete(&format!("/v1/fin/consents/{id}"), &key).await.json().await.unwrap();
    assert_eq!((revoked["status"].as_str(), revoked["revokeTime"].as_str()), (Some("EXPIRED"), None), "{revoked}");
    let problem = assert_problem(app.get(&statement, &key).await, 403).await;
    assert_eq!(problem["missingPermission"], "ACCOUNTS_TRANSACTIONS_READ");
    assert_problem(ingest(&app, &key, id).await, 403).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.count_fin_rows("transactions").await + app.count_fin_rows("accounts").await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the expired consent's data was not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// No card number in clear from an institution's words that should be codes, nor in an account's
/// number (a prepaid payment account's may be its card's): a brand, a transaction's type or an
/// account number holding one is masked.
#[tokio::test]
async fn card_numbers_in_brands_types_and_account_numbers_are_masked() {
    let bank = Institution::start().await;
    let mut account = checking_account();
    account.brand_name = "BANCO 5555 5555 5555 4444".into();
    account.kind = "CONTA_PAGAMENTO_PRE_PAGA".into();
    account.number = "4111111111111111".into();
    account.transactions[1].kind = "CARTAO 4012888888881881".into();
    // A payee's CPF, shown as Pix shows it.
    account.transactions[3].name = "PIX ENVIADO MARIA 529.982.247-25".into();
    // An id whose masked form a second masking would change, were masking not stable.
    account.transactions[2].id = "429088694222281091379938083803".into();
    let profile = Profile { accounts: vec![account], ..Profile::default() };
    let app = start(Backend::Sqlite, &bank, vec![("banco-a", profile)]).await;
    let tenant = app.create_tenant_on("Cartões", "enterprise").await;
    let key = app.create_key(&tenant, &["fin:read", "fin:write"]).await;
    let granted = consent(&app, &key, &cpf(515_151_515), "banco-a", ALL).await;
    let (consent_id, customer) = (granted["id"].as_str().unwrap(), granted["customerId"].as_str().unwrap());
    let ingested: Value = ingest(&app, &key, consent_id).await.json().await.unwrap();
    assert_eq!(ingested["newTransactions"], 6, "{ingested}");
    let statement = app.get(&format!("/v1/fin/customers/{customer}/statements/2026-10"), &key).await;
    assert_eq!(statement.status(), 200);
    let statement = statement.text().await.unwrap();
    for shown in ["BANCO ****4444", "CARTAO ****1881", "****1111-4", "PIX ENVIADO MARIA ***.982.247-**"] {
        assert!(statement.contains(shown), "{shown} in {statement}");
    }
    for card in ["5555 5555 5555 4444", "4012888888881881", "4111111111111111", "529.982.247-25"] {
        assert!(!statement.contains(card), "{card} in {statement}");
    }
    assert_eq!(app.count_fin_rows("accounts WHERE brand_name LIKE '%5555 5555%'").await, 0);
    assert_eq!(app.count_fin_rows("transactions WHERE kind LIKE '%4012888888881881%'").await, 0);
    // A type an earlier version stored with its card number is masked when the transaction is
    // fetched again.
    let unmasked =
        app.execute_on_fin("UPDATE transactions SET kind = 'CARTAO 4012888888881881' WHERE kind LIKE 'CARTAO%'").await;
    assert_eq!(unmasked, 1);
    let again: Value = ingest(&app, &key, consent_id).await.json().await.unwrap();
    assert_eq!(again["newTransactions"], 0, "{again}");
    assert_eq!(app.count_fin_rows("transactions").await, 6, "each stored once");
    assert_eq!(app.count_fin_rows("transactions WHERE transaction_id LIKE '****81091379938083803~%'").await, 1);
    assert_eq!(app.count_fin_rows("transactions WHERE kind LIKE '%4012888888881881%'").await, 0);
    assert_eq!(app.count_fin_rows("transactions WHERE kind = 'CARTAO ****1881'").await, 1);

    app.stop().await;
}

/// Waits until finquantum's database holds no rows of `rows` (`table WHERE …`): what the purge's
/// first pass, at start, seals.
async fn until_none(app: &TestApp, rows: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = app.count_fin_rows(rows).await;
        if left == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} rows of {rows} are left in clear");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
