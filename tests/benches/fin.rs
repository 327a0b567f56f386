//! FinQuantum credit scores side by side in one run, the same credit-risk row each time:
//! - the raw ONNX Runtime call in process (the floor),
//! - in process, the output with each feature at each of its alternative values, as the service
//!   finds the most favourable ones for its reasons (the trees walked), beside the same scored as
//!   one batch of altered rows,
//! - the platform through the gateway (HTTP/JSON, API key, rate limit, transcoding, internal
//!   token, validation of the declared fields, the consent check, the customer's ingested
//!   accounts and transactions read back and summarised, inference with each feature at its
//!   alternatives for the reason codes, the score and its audit event committed to SQLite),
//! - a Python FastAPI + onnxruntime service scoring the same model.onnx (what a team would
//!   otherwise deploy; one uvicorn process per core, called in turn), which only scores.
//!
//! The platform's customer has a consent and data ingested from a local Open Finance
//! institution: a checking account and a savings account whose balances give the row's
//! `checking_status` and `savings_status`, and 90 days of checking transactions that cancel out
//! (a credit and a debit of the same amount at the same instant), so that scoring walks a
//! realistic history without moving the row's features.
//!
//! The platform and the Python service are driven in turns (each for a fifth of its time, five
//! times over), so that a drift of the machine's speed during the run falls on both alike.
//!
//! `make bench` runs it in release mode after installing the Python service's pinned packages
//! into `.cache/bench-venv` (`BENCH_PYTHON` names its interpreter). Settings: `BENCH_SECONDS`
//! (default 5) per side, `BENCH_CONCURRENCY` (default 8) requests in flight,
//! `BENCH_TRANSACTIONS` (default 180) checking transactions of the customer, `BENCH_TURNS`
//! (default 5) turns each side's time is split into.

mod common;
mod reference;

use std::time::Duration;

use aigronova_e2e::{
    Backend,
    credit::{applicant_for, cpf, days_from_now, profile_for},
    institution::Institution,
    spawn_app_with,
};
use serde_json::{Value, json};

use crate::{
    common::{Run, Side, drive_in_turns, env_number, print, repeat, unlimited_enterprise},
    reference::{
        Explanation, PYTHON, PythonService, drive_explanations, drive_raw, first_reference_row, python_call, report,
    },
};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5));
    let concurrency = env_number("BENCH_CONCURRENCY", 8) as usize;
    let transactions = env_number("BENCH_TRANSACTIONS", 180) as usize;
    let turns = env_number("BENCH_TURNS", 5) as u32;
    let row = first_reference_row("credit-risk");
    let features = row["features"].clone();
    let expected = row["onnx_probability"].as_f64().unwrap();
    let raw = drive_raw("credit-risk", &features, concurrency, seconds).await;
    let (walked, scored) = drive_explanations(
        "credit-risk",
        &features,
        Explanation::Alternatives(|manifest, row| aigronova_finquantum::scoring::alternatives(manifest, row, &[])),
        concurrency,
        seconds,
    )
    .await;

    // The platform, through the gateway, for a customer whose data is ingested under a consent.
    let bank = Institution::start().await;
    let institution = bank.serve("banco-a", profile_for(&features, transactions));
    let app = spawn_app_with(Backend::Sqlite, move |config| {
        config.finquantum.institutions = [("banco-a".to_owned(), institution)].into_iter().collect();
        unlimited_enterprise(config);
    })
    .await;
    let tenant = app.create_tenant_on("Bench", "enterprise").await;
    let key = app.create_key(&tenant, &["fin:read", "fin:write"]).await;
    let customer = cpf(123_456_789);
    let expires_at = days_from_now(30);
    let response = app
        .post(
            "/v1/fin/consents",
            &key,
            &json!({"cpf": customer, "institution": "banco-a", "expiresAt": expires_at,
                "permissions": ["ACCOUNTS_READ", "ACCOUNTS_BALANCES_READ", "ACCOUNTS_TRANSACTIONS_READ"]}),
        )
        .await;
    assert_eq!(response.status(), 200, "consent");
    let consent: Value = response.json().await.unwrap();
    let response =
        app.post(&format!("/v1/fin/consents/{}/ingestions", consent["id"].as_str().unwrap()), &key, &json!({})).await;
    assert_eq!(response.status(), 200, "ingestion");
    let body = json!({"cpf": customer, "applicant": applicant_for(&features)});
    let score: Value = app.post("/v1/fin/credit-scores", &key, &body).await.json().await.unwrap();
    let probability = score["probabilityOfDefault"].as_f64().unwrap_or(f64::NAN);
    let names = features.as_object().expect("features by name").keys();
    let same_row = names.into_iter().all(|name| score["features"][name] == features[name]);
    assert!(
        same_row && (probability - expected).abs() < 1e-5,
        "the platform scores another row than the reference's: {score}"
    );
    let url = app.url("/v1/fin/credit-scores");
    let score = repeat(app.client.clone(), &url, Some(&key), Some(body.to_string()));

    // The Python service, started beside the platform and driven in turns with it.
    let body = json!({"model": "credit-risk", "features": features}).to_string();
    let (service, answer) = PythonService::start("credit-risk", &body).await;
    let probability = answer["probability"].as_f64().unwrap_or(f64::NAN);
    assert!((probability - expected).abs() < 1e-5, "the Python service scores another model or row: {answer}");
    let sides = [Side::new("platform through the gateway", score), Side::new(PYTHON, python_call(&service, body))];
    let [platform, fastapi] =
        <[Run; 2]>::try_from(drive_in_turns(&sides, concurrency, seconds, turns).await).ok().expect("two sides");
    drop(service);
    app.stop().await;

    report("scores", &raw, &platform, &fastapi, concurrency);
    println!();
    print("explanations", &[&walked, &scored]);
}
