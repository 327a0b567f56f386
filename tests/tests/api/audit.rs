//! The verifiable audit log end to end: healthquantum's decisions and sensitive reads reach
//! ai-governance through the outbox, once, even across an outage; the CLI verifier checks them
//! against the signed checkpoint and finds a row edited in the database at its index. Events
//! ai-governance will never take are set aside and do not hold up the rest.

use std::time::Duration;

use aigronova_ai_governance::{
    AiGovernanceService,
    checkpoint::CheckpointVerifier,
    log::decode_hash,
    merkle::{self, Hash},
};
use aigronova_cli::{
    AppConfig,
    audit::{self, RootsArgs, Verdict, VerifyArgs},
};
use aigronova_e2e::{Backend, TestApp, assert_problem, models_dir, spawn_app, spawn_app_with};
use aigronova_platform::{Shutdown, auth::TokenSigner};
use serde_json::{Value, json};

const SCOPES: &[&str] = &["health:read", "health:write", "governance:read"];

fn features() -> Value {
    let path = models_dir().join("breast-cancer/1/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json")).unwrap();
    reference["rows"][0]["features"].clone()
}

async fn tenant_key(app: &TestApp) -> String {
    let tenant = app.create_tenant_on("Hospital Auditado", "enterprise").await;
    app.create_key(&tenant, SCOPES).await
}

async fn assess(app: &TestApp, key: &str, patient: &str) -> Value {
    let body = json!({"model": "breast-cancer", "features": features()});
    let response = app.post(&format!("/v1/health/patients/{patient}/assessments"), key, &body).await;
    assert_eq!(response.status(), 200, "assessment");
    response.json().await.unwrap()
}

async fn checkpoint(app: &TestApp, key: &str) -> Value {
    let response = app.get("/v1/governance/audit/checkpoint", key).await;
    assert_eq!(response.status(), 200, "checkpoint");
    response.json().await.unwrap()
}

fn tree_size(checkpoint: &Value) -> u64 {
    checkpoint["treeSize"].as_str().and_then(|size| size.parse().ok()).or(checkpoint["treeSize"].as_u64()).unwrap_or(0)
}

/// A platform whose tenant's log holds `size` entries (a patient, then its assessments), each
/// appended, and checkpointed, on its own; the tenant's key, and the patient.
async fn app_with_log_of(backend: Backend, size: u64) -> (TestApp, String, String) {
    let app = spawn_app(backend).await;
    let key = tenant_key(&app).await;
    let patient = app.create_patient(&key).await;
    wait_for_size(&app, &key, 1).await;
    for size in 2..=size {
        assess(&app, &key, &patient).await;
        wait_for_size(&app, &key, size).await;
    }
    (app, key, patient)
}

/// Polls healthquantum's outbox until the events ai-governance acknowledged have left it (the
/// relay deletes them once the acknowledgement reaches it, just after the log shows them); fails
/// after 10 s.
async fn wait_for_empty_outbox(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held = app.count_health_rows("audit_outbox").await;
        if held == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{held} acknowledged events are still in the outbox");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the checkpoint until the log holds `size` entries; fails after 30 s.
async fn wait_for_size(app: &TestApp, key: &str, size: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let latest = checkpoint(app, key).await;
        if tree_size(&latest) >= size {
            assert_eq!(tree_size(&latest), size, "the log holds exactly the events made: {latest}");
            return latest;
        }
        assert!(tokio::time::Instant::now() < deadline, "the log did not reach {size} entries: {latest}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn public_key(app: &TestApp, key: &str) -> String {
    let response = app.get("/v1/governance/audit/public-key", key).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["algorithm"], "Ed25519");
    body["publicKey"].as_str().unwrap().to_owned()
}

fn verify_args(app: &TestApp, key: &str, public_key: &str, entry: Option<u64>) -> VerifyArgs {
    VerifyArgs {
        url: app.address.clone(),
        key: key.to_owned(),
        public_key: Some(public_key.to_owned()),
        entry,
        checkpoint: None,
        tenant: None,
    }
}

fn root_of(checkpoint: &Value) -> Hash {
    decode_hash(checkpoint["rootHash"].as_str().unwrap()).unwrap()
}

async fn an_assessment_is_logged_once_with_a_proof_the_cli_verifies(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = tenant_key(&app).await;
    let patient = app.create_patient(&key).await;
    // Registering the patient is a change of personal data, logged first, without the data.
    wait_for_size(&app, &key, 1).await;
    let created: Value = app.get("/v1/governance/audit/entries/0", &key).await.json().await.unwrap();
    assert_eq!(
        (&created["entry"]["kind"], &created["entry"]["action"]),
        (&json!("personal_data_change"), &json!("health.CreatePatient"))
    );
    let text = created["entry"]["leaf"].as_str().unwrap();
    assert!(!text.contains("52998224725") && !text.contains("Maria"), "no personal data in the log: {text}");

    let body = json!({"model": "breast-cancer", "features": features()});
    let answered = app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await;
    let answered = answered.text().await.unwrap();
    let assessment: Value = serde_json::from_str(&answered).unwrap();
    wait_for_size(&app, &key, 2).await;
    let response = app.get("/v1/governance/audit/entries/1", &key).await;
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    let entry = &served["entry"];
    assert_eq!(entry["kind"], "decision");
    assert_eq!(entry["action"], "health.AssessRisk");
    assert_eq!(entry["service"], "healthquantum");
    let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap();
    assert_eq!(leaf["details"]["assessmentId"], assessment["id"]);
    assert_eq!(leaf["details"]["model"], "breast-cancer");
    // The output as it was answered, to the last bit.
    let number = |json: &str| {
        let at = json.find("\"value\":").expect("a value") + "\"value\":".len();
        json[at..].split([',', '}']).next().unwrap().to_owned()
    };
    assert_eq!(number(entry["leaf"].as_str().unwrap()), number(&answered), "{answered}");
    assert_eq!(leaf["subject"], format!("patient:{patient}"));
    let text = entry["leaf"].as_str().unwrap();
    assert!(!text.contains("52998224725") && !text.contains("Maria"), "no personal data in the log: {text}");

    let public_key = public_key(&app, &key).await;
    let verifier = CheckpointVerifier::from_base64(&public_key).unwrap();
    let signed = &served["checkpoint"];
    verifier.verify(signed["signedText"].as_str().unwrap(), signed["signature"].as_str().unwrap()).unwrap();
    assert_eq!(signed["keyId"], verifier.key_id());

    let verdict = audit::verify(&verify_args(&app, &key, &public_key, Some(1))).await.unwrap();
    assert!(matches!(verdict, Verdict::Verified { tree_size: 2, .. }), "{verdict:?}");
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 0);
    // The log verified is the tenant's the checkpoint names: pinned with --tenant, another's fails.
    let tenant = leaf["tenant_id"].as_str().unwrap().to_owned();
    for entry in [None, Some(1)] {
        let mine = VerifyArgs { tenant: Some(tenant.clone()), ..verify_args(&app, &key, &public_key, entry) };
        let verdict = audit::verify(&mine).await.unwrap();
        assert!(matches!(&verdict, Verdict::Verified { tenant_id, .. } if *tenant_id == tenant), "{verdict:?}");
        let another = "0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b".to_owned();
        let other = VerifyArgs { tenant: Some(another.clone()), ..mine };
        let refused = audit::verify(&other).await.unwrap_err().to_string();
        assert!(refused.contains(&format!("served the log of tenant {tenant}, not of tenant {another}")), "{refused}");
        assert_eq!(audit::run(&other).await, 2);
    }
    // The id in any spelling of its UUID; what is none is refused as an argument.
    assert_eq!(audit::parse_tenant(&tenant.to_uppercase()), Ok(tenant.clone()));
    assert!(audit::parse_tenant("another-tenant").is_err());

    // The roots a backup records are the signed ones.
    let roots = audit::tenant_roots(&RootsArgs { database_url: app.governance_database_url.clone(), snapshot: None })
        .await
        .unwrap();
    let signed_root = served["checkpoint"]["rootHash"].as_str().unwrap();
    assert!(roots.iter().any(|(_, size, root)| *size == 2 && root == signed_root), "{roots:?}");

    // Showing the patient's data is a sensitive read, audited too.
    assert_eq!(app.get(&format!("/v1/health/patients/{patient}"), &key).await.status(), 200);
    wait_for_size(&app, &key, 3).await;
    let third: Value = app.get("/v1/governance/audit/entries/2", &key).await.json().await.unwrap();
    assert_eq!(third["entry"]["kind"], "sensitive_read");
    assert_eq!(app.count_governance_rows("audit_entries").await, 3);
    wait_for_empty_outbox(&app).await;

    // Another tenant sees its own, empty, log; a key without the scope is refused.
    let other = app.create_tenant("Outra Clínica").await;
    let other_key = app.create_key(&other, SCOPES).await;
    assert_eq!(tree_size(&checkpoint(&app, &other_key).await), 0);
    assert_eq!(app.get("/v1/governance/audit/entries/0", &other_key).await.status(), 404);
    let health_only = app.create_key(&other, &["health:read"]).await;
    assert_eq!(app.get("/v1/governance/audit/checkpoint", &health_only).await.status(), 403);
    app.stop().await;
}

#[tokio::test]
async fn an_assessment_is_logged_once_with_a_proof_the_cli_verifies_on_sqlite() {
    an_assessment_is_logged_once_with_a_proof_the_cli_verifies(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_assessment_is_logged_once_with_a_proof_the_cli_verifies_on_postgres() {
    an_assessment_is_logged_once_with_a_proof_the_cli_verifies(Backend::Postgres).await;
}

/// A platform stopped right after answering a burst of assessments ships their audit events on its
/// way out: none is left in the outbox for the next start.
#[tokio::test]
async fn a_clean_stop_ships_the_audit_events_of_the_last_calls() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_app(backend).await;
        let key = tenant_key(&app).await;
        let patient = app.create_patient(&key).await;
        // Each answered 200 (`assess` checks it).
        futures_util::future::join_all((0..40).map(|_| assess(&app, &key, &patient))).await;
        let left = app.stop_then_count_health_rows("audit_outbox").await;
        assert_eq!(left, 0, "{backend:?}: events left in the outbox after a clean stop");
    }
}

/// A service that refuses the gateway's internal token is the platform's fault: a 502, not a 401
/// the client could do nothing about.
#[tokio::test]
async fn a_service_refusing_the_gateways_token_is_a_502() {
    let port = aigronova_e2e::port_to_start_later();
    let mut started_with = None;
    let app = spawn_app_with(Backend::Sqlite, |config: &mut AppConfig| {
        config.audit.governance_url = Some(format!("http://127.0.0.1:{port}"));
        config.ai_governance.grpc_addr = ([127, 0, 0, 1], port).into();
        started_with = Some(config.clone());
    })
    .await;
    let config = started_with.unwrap();
    let key = tenant_key(&app).await;
    // ai-governance trusts another gateway's key.
    let stranger = TokenSigner::generate();
    let services_key = TokenSigner::from_base64(config.internal_auth.service_signing_key.as_deref().unwrap()).unwrap();
    let governance =
        AiGovernanceService::build(&config.ai_governance, stranger.verifier(), Some(services_key)).await.unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(governance.run_until_stopped(shutdown.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let response = loop {
        let response = app.get("/v1/governance/audit/public-key", &key).await;
        if response.status() != 503 || tokio::time::Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(response.headers().get("www-authenticate").is_none());
    aigronova_e2e::assert_problem(response, 502).await;
    app.stop().await;
    shutdown.trigger();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn events_made_while_governance_is_down_and_across_a_restart_all_arrive_once() {
    let port = aigronova_e2e::port_to_start_later();
    let mut started_with = None;
    let mut app = spawn_app_with(Backend::Sqlite, |config: &mut AppConfig| {
        // ai-governance runs elsewhere, and is not running yet.
        config.audit.governance_url = Some(format!("http://127.0.0.1:{port}"));
        config.audit.max_backoff_secs = 1;
        config.audit.batch_size = 50;
        config.ai_governance.grpc_addr = ([127, 0, 0, 1], port).into();
        config.gateway.plans.starter.requests_per_second = 1000.0;
        config.gateway.plans.starter.burst = 1000;
        started_with = Some(config.clone());
    })
    .await;
    let config = started_with.unwrap();
    let key = tenant_key(&app).await;
    let patient = app.create_patient(&key).await;
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..100 {
        ids.insert(assess(&app, &key, &patient).await["id"].as_str().unwrap().to_owned());
    }
    // The patient's registration and the assessments.
    assert_eq!(app.count_health_rows("audit_outbox").await, 101, "the events wait in the outbox");
    // The services restart with events pending; the new relay takes them over.
    app.restart().await;
    for _ in 0..100 {
        ids.insert(assess(&app, &key, &patient).await["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.count_health_rows("audit_outbox").await, 201, "the events wait in the outbox");
    assert_eq!(app.get("/v1/governance/audit/checkpoint", &key).await.status(), 503);
    // The relay's lag is a metric.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.get("/metrics", &app.admin_key).await.text().await.unwrap();
        let pending =
            metrics.lines().any(|line| line == r#"aigronova_outbox_pending_events{service="healthquantum"} 201"#);
        let age = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(r#"aigronova_outbox_oldest_pending_age_seconds{service="healthquantum"} "#)
            })
            .and_then(|value| value.parse::<f64>().ok());
        if pending && age.is_some_and(|age| age > 0.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the outbox lag is not in /metrics");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let gateway_key = TokenSigner::from_base64(config.internal_auth.signing_key.as_deref().unwrap()).unwrap();
    let services_key = TokenSigner::from_base64(config.internal_auth.service_signing_key.as_deref().unwrap()).unwrap();
    let governance =
        AiGovernanceService::build(&config.ai_governance, gateway_key.verifier(), Some(services_key)).await.unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(governance.run_until_stopped(shutdown.clone()));

    wait_for_size(&app, &key, 201).await;
    let mut logged = std::collections::BTreeSet::new();
    let page: Value = app.get("/v1/governance/audit/entries?pageSize=1000", &key).await.json().await.unwrap();
    for entry in page["entries"].as_array().unwrap().iter().filter(|entry| entry["action"] == "health.AssessRisk") {
        let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap();
        logged.insert(leaf["details"]["assessmentId"].as_str().unwrap().to_owned());
    }
    assert_eq!(logged, ids, "every assessment arrived exactly once");
    assert_eq!(app.count_governance_rows("audit_entries").await, 201);
    wait_for_empty_outbox(&app).await;
    let public_key = public_key(&app, &key).await;
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 0);

    app.stop().await;
    shutdown.trigger();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_empty_logs_checkpoint_is_served_at_size_zero_too() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Clínica Nova", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let latest = checkpoint(&app, &key).await;
    assert_eq!(tree_size(&latest), 0, "{latest}");
    let at_zero = app.get("/v1/governance/audit/checkpoint?treeSize=0", &key).await;
    assert_eq!(at_zero.status(), 200);
    let at_zero: Value = at_zero.json().await.unwrap();
    assert_eq!(at_zero["rootHash"], latest["rootHash"], "{at_zero}");
    // No consistency to prove yet, and the answer says so rather than ask for what none can send.
    let problem = assert_problem(app.get("/v1/governance/audit/consistency?from=1&to=1", &key).await, 400).await;
    assert_eq!(problem["field"], "to", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("the log is empty"), "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn the_cli_waits_as_a_rate_limited_gateway_says() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Clínica Pequena", "starter").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let other = app.create_key(&tenant, SCOPES).await;
    app.create_patient(&key).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tree_size(&checkpoint(&app, &key).await) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "the registration never reached the log");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let public_key = public_key(&app, &key).await;
    // Another client of the tenant spends its whole rate for the next 1.5 s: the verification's
    // first call is refused, and it goes on once the 429s' Retry-After has passed.
    let (client, url) = (app.client.clone(), app.url("/v1/governance/audit/public-key"));
    let busy_until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while client.get(&url).bearer_auth(&other).send().await.unwrap().status() != 429 {}
    let hog = tokio::spawn(async move {
        while tokio::time::Instant::now() < busy_until {
            let _ = client.get(&url).bearer_auth(&other).send().await;
        }
    });
    let started = tokio::time::Instant::now();
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 0);
    assert!(started.elapsed() >= Duration::from_secs(1), "the verification waited for a Retry-After");
    hog.await.unwrap();
    app.stop().await;
}

async fn tampering_is_found_at_its_index(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let key = tenant_key(&app).await;
    let patient = app.create_patient(&key).await;
    // The registration, then five assessments: six entries.
    for _ in 0..5 {
        assess(&app, &key, &patient).await;
    }
    wait_for_size(&app, &key, 6).await;
    let public_key = public_key(&app, &key).await;
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 0);
    // A key by the id its checkpoints carry, in either case; an id that is none is a 400.
    let served: Value = app.get("/v1/governance/audit/public-key", &key).await.json().await.unwrap();
    let key_id = served["keyId"].as_str().unwrap().to_ascii_uppercase();
    let by_id: Value =
        app.get(&format!("/v1/governance/audit/public-key?keyId={key_id}"), &key).await.json().await.unwrap();
    assert_eq!(by_id, served);
    for bad in ["xyz", "%20d4348a3c3c71cc91"] {
        let problem = assert_problem(app.get(&format!("/v1/governance/audit/public-key?keyId={bad}"), &key).await, 400);
        assert_eq!(problem.await["field"], "keyId", "{bad}");
    }
    assert_problem(app.get("/v1/governance/audit/public-key?keyId=0000000000000000", &key).await, 404).await;

    // Someone with database access edits entry 3 and removes entry 5.
    let edited = app
        .execute_on_governance("UPDATE audit_entries SET leaf = REPLACE(leaf, 'AssessRisk', 'Nothing') WHERE idx = 3")
        .await;
    assert_eq!(edited, 1);
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, None)).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 3, .. }), "{verdict:?}");
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 1);
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, Some(3))).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 3, .. }), "{verdict:?}");
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, Some(2))).await.unwrap();
    assert!(matches!(verdict, Verdict::Verified { .. }), "an untouched entry still verifies: {verdict:?}");

    app.execute_on_governance("UPDATE audit_entries SET leaf = REPLACE(leaf, 'Nothing', 'AssessRisk') WHERE idx = 3")
        .await;
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 0);
    // Two rows swapped: the first of them is reported.
    app.execute_on_governance("UPDATE audit_entries SET idx = 100 WHERE idx = 2").await;
    app.execute_on_governance("UPDATE audit_entries SET idx = 2 WHERE idx = 4").await;
    app.execute_on_governance("UPDATE audit_entries SET idx = 4 WHERE idx = 100").await;
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, None)).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 2, .. }), "{verdict:?}");
    app.execute_on_governance("UPDATE audit_entries SET idx = 100 WHERE idx = 2").await;
    app.execute_on_governance("UPDATE audit_entries SET idx = 2 WHERE idx = 4").await;
    app.execute_on_governance("UPDATE audit_entries SET idx = 4 WHERE idx = 100").await;
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 0);

    app.execute_on_governance("DELETE FROM audit_entries WHERE idx = 1").await;
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, None)).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 1, .. }), "{verdict:?}");
    // And the entries after it renumbered to close the gap: still the first of them, not the end.
    app.execute_on_governance("UPDATE audit_entries SET idx = idx + 1000 WHERE idx > 1").await;
    app.execute_on_governance("UPDATE audit_entries SET idx = idx - 1001 WHERE idx > 1000").await;
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, None)).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 1, .. }), "{verdict:?}");
    // Read afresh after a restart, the damaged log still serves its checkpoint and the report, which
    // say where it fails; a proof from it is refused, saying why, and an entry it lacks is not found.
    app.restart().await;
    assert_eq!(app.get("/v1/governance/audit/checkpoint", &key).await.status(), 200);
    let report: Value = app.get("/v1/governance/reports/iso27001", &key).await.json().await.unwrap();
    // Without the tree it signed, the change is placed within its batch: at or before entry 1.
    let verification = &report["verification"];
    assert_eq!(verification["verified"], false, "{verification}");
    let first_bad: u64 = verification["firstBadIndex"].as_str().unwrap().parse().unwrap();
    assert!(first_bad <= 1 && verification["detail"].as_str().unwrap().contains("does not match"), "{verification}");
    for path in ["/v1/governance/audit/entries/0", "/v1/governance/audit/consistency?from=1&to=6"] {
        let problem = assert_problem(app.get(path, &key).await, 500).await;
        assert!(problem["detail"].as_str().unwrap().contains("audit log is damaged"), "{path}: {problem}");
    }
    assert_problem(app.get("/v1/governance/audit/entries/5", &key).await, 404).await;
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, None)).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 0 | 1, .. }), "{verdict:?}");
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 1);
    // The last entry is now missing from a tree its checkpoint signed: tampered, not unverifiable.
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, Some(5))).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 5, .. }), "{verdict:?}");
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, Some(5))).await, 1);
    // One past the signed tree is no verdict on the log.
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, Some(6))).await, 2);

    // A wrong public key is not a verdict on the log: the checkpoint cannot be trusted.
    let stranger = aigronova_ai_governance::checkpoint::CheckpointSigner::generate().public_key().to_base64();
    assert_eq!(audit::run(&verify_args(&app, &key, &stranger, None)).await, 2);
    // A key that is no key is a wrong argument.
    assert_eq!(audit::run(&verify_args(&app, &key, "not base64", None)).await, 64);
    // So is a gateway address that is no http(s) URL.
    for url in [app.address.trim_start_matches("http://"), "ftp://127.0.0.1:1"] {
        let args = VerifyArgs { url: url.to_owned(), ..verify_args(&app, &key, &public_key, None) };
        assert_eq!(audit::run(&args).await, 64, "{url}");
    }
    app.stop().await;
}

/// A log cut back together with the checkpoints signed over what was cut verifies on its own; a
/// verifier that kept a checkpoint it saw before finds it, as it finds a log rewritten below it.
#[tokio::test]
async fn a_log_cut_back_with_its_checkpoints_fails_against_a_kept_checkpoint() {
    let (mut app, key, _) = app_with_log_of(Backend::Sqlite, 4).await;
    let kept = checkpoint(&app, &key).await;
    let pinned = format!("{}:{}", tree_size(&kept), kept["rootHash"].as_str().unwrap());
    let public_key = public_key(&app, &key).await;
    let args = |app: &TestApp, checkpoint: &str| VerifyArgs {
        checkpoint: Some(audit::parse_pinned(checkpoint).unwrap()),
        ..verify_args(app, &key, &public_key, None)
    };
    assert_eq!(audit::run(&args(&app, &pinned)).await, 0, "the log still holds the kept checkpoint's tree");
    let earlier = format!("2:{}", hex::encode(merkle::root_of(&[])));
    assert_eq!(audit::run(&args(&app, &earlier)).await, 1, "a root the log's first 2 entries do not hash to");

    app.execute_on_governance("DELETE FROM audit_entries WHERE idx >= 2").await;
    app.execute_on_governance("DELETE FROM audit_checkpoints WHERE tree_size > 2").await;
    app.restart().await;
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 0, "on its own the cut log verifies");
    let verdict = audit::verify(&args(&app, &pinned)).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 2, .. }), "{verdict:?}");
    // An empty log is extended by every log: pinning it would check nothing.
    let empty = format!("0:{}", hex::encode(merkle::root_of(&[])));
    assert!(audit::parse_pinned(&empty).unwrap_err().contains("pin a size of 1 or more"));
    app.stop().await;
}

/// An entry deleted below the latest checkpoint while later entries are still stored past it
/// (their checkpoints deleted too): the report and the verifier name the missing entry.
#[tokio::test]
async fn an_entry_missing_below_entries_stored_past_the_checkpoint_is_named() {
    let (mut app, key, _) = app_with_log_of(Backend::Sqlite, 5).await;
    let public_key = public_key(&app, &key).await;
    app.execute_on_governance("DELETE FROM audit_checkpoints WHERE tree_size > 3").await;
    assert_eq!(app.execute_on_governance("DELETE FROM audit_entries WHERE idx = 2").await, 1);
    app.restart().await;

    let report = tokio::time::timeout(Duration::from_secs(30), app.get("/v1/governance/reports/iso27001", &key))
        .await
        .expect("the report answers");
    let report: Value = report.json().await.unwrap();
    assert_eq!(report["verification"]["firstBadIndex"], "2", "{}", report["verification"]);
    assert!(report["verification"]["detail"].as_str().unwrap().contains("entry 2 is missing"), "{report}");
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 1);
    app.stop().await;
}

/// An entry deleted with those after it renumbered to close the gap: asked for one entry, the
/// server makes no proof from its damaged log, and the verifier walks the whole log to the first
/// entry that differs; the last one signed, now missing, is not found.
#[tokio::test]
async fn an_entry_asked_for_in_a_log_renumbered_after_a_deletion_fails_where_the_log_does() {
    let (mut app, key, _) = app_with_log_of(Backend::Sqlite, 5).await;
    let public_key = public_key(&app, &key).await;
    assert_eq!(app.execute_on_governance("DELETE FROM audit_entries WHERE idx = 2").await, 1);
    for from in [3, 4] {
        let sql = format!("UPDATE audit_entries SET idx = {} WHERE idx = {from}", from - 1);
        assert_eq!(app.execute_on_governance(&sql).await, 1);
    }
    app.restart().await;
    for entry in [1, 2, 3] {
        let verdict = audit::verify(&verify_args(&app, &key, &public_key, Some(entry))).await.unwrap();
        assert!(matches!(verdict, Verdict::Tampered { index: 2, .. }), "entry {entry}: {verdict:?}");
        assert_eq!(audit::run(&verify_args(&app, &key, &public_key, Some(entry))).await, 1);
    }
    let problem = assert_problem(app.get("/v1/governance/audit/entries/4", &key).await, 404).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.starts_with("entry 4 not found, though the latest checkpoint covers it (size 5)"), "{problem}");
    app.stop().await;
}

/// Entries rewritten with their hashes, after which the service rebuilds its tree from them: the
/// checkpoints signed along the way still place the first change in its batch.
async fn entries_changed_with_their_hashes_are_found_in_their_batch(backend: Backend) {
    let (mut app, key, patient) = app_with_log_of(backend, 6).await;
    let public_key = public_key(&app, &key).await;
    let entry: Value = app.get("/v1/governance/audit/entries/3", &key).await.json().await.unwrap();
    let leaf = entry["entry"]["leaf"].as_str().unwrap().replace("AssessRisk", "Nothing");
    let hash: String = merkle::leaf_hash(leaf.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect();
    let sql =
        format!("UPDATE audit_entries SET leaf = '{}', leaf_hash = '{hash}' WHERE idx = 3", leaf.replace('\'', "''"));
    assert_eq!(app.execute_on_governance(&sql).await, 1);
    app.restart().await;

    let page: Value = app.get("/v1/governance/audit/checkpoints?pageSize=1000", &key).await.json().await.unwrap();
    let sizes: Vec<u64> = page["checkpoints"].as_array().unwrap().iter().map(tree_size).collect();
    assert_eq!(sizes, [1, 2, 3, 4, 5, 6], "{page}");
    let first: Value = app.get("/v1/governance/audit/checkpoints?pageSize=4", &key).await.json().await.unwrap();
    assert_eq!(first["checkpoints"].as_array().unwrap().len(), 4, "{first}");
    assert_eq!(first["nextAfter"], "4", "{first}");
    let rest: Value = app.get("/v1/governance/audit/checkpoints?after=4&pageSize=4", &key).await.json().await.unwrap();
    let rest_sizes: Vec<u64> = rest["checkpoints"].as_array().unwrap().iter().map(tree_size).collect();
    assert_eq!((rest_sizes, rest.get("nextAfter")), (vec![5, 6], None), "{rest}");
    let verdict = audit::verify(&verify_args(&app, &key, &public_key, None)).await.unwrap();
    assert!(matches!(verdict, Verdict::Tampered { index: 3, .. }), "{verdict:?}");
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 1);
    let report: Value = app.get("/v1/governance/reports/iso27001", &key).await.json().await.unwrap();
    assert_eq!(report["verification"]["firstBadIndex"], "3", "{}", report["verification"]);

    // No checkpoint is signed over the changed entries: a new decision is not appended, so the
    // log does not come to look verified.
    assess(&app, &key, &patient).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tree_size(&checkpoint(&app, &key).await), 6);
    assert_eq!(app.count_governance_rows("audit_entries").await, 6);
    assert_eq!(audit::run(&verify_args(&app, &key, &public_key, None)).await, 1);
    // Another tenant's events, shipped in the same batches as the held ones, are appended all the
    // same: one damaged log does not stop the others.
    let other = tenant_key(&app).await;
    let other_patient = app.create_patient(&other).await;
    assess(&app, &other, &other_patient).await;
    wait_for_size(&app, &other, 2).await;
    assert_eq!(tree_size(&checkpoint(&app, &key).await), 6, "the damaged log still takes nothing");
    app.stop().await;
}

/// An entry whose text alone was changed (its stored hash left as it was): found when the log is
/// read back, and nothing more is appended to it.
async fn an_entry_whose_text_alone_changed_stops_its_log(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let key = tenant_key(&app).await;
    let patient = app.create_patient(&key).await;
    assess(&app, &key, &patient).await;
    wait_for_size(&app, &key, 2).await;
    let edited = app
        .execute_on_governance("UPDATE audit_entries SET leaf = REPLACE(leaf, 'AssessRisk', 'Nothing') WHERE idx = 1")
        .await;
    assert_eq!(edited, 1);
    app.restart().await;
    assess(&app, &key, &patient).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tree_size(&checkpoint(&app, &key).await), 2);
    assert_eq!(app.count_governance_rows("audit_entries").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn an_entry_whose_text_alone_changed_stops_its_log_on_sqlite() {
    an_entry_whose_text_alone_changed_stops_its_log(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_entry_whose_text_alone_changed_stops_its_log_on_postgres() {
    an_entry_whose_text_alone_changed_stops_its_log(Backend::Postgres).await;
}

#[tokio::test]
async fn entries_changed_with_their_hashes_are_found_in_their_batch_on_sqlite() {
    entries_changed_with_their_hashes_are_found_in_their_batch(Backend::Sqlite).await;
}

#[tokio::test]
async fn entries_changed_with_their_hashes_are_found_in_their_batch_on_postgres() {
    entries_changed_with_their_hashes_are_found_in_their_batch(Backend::Postgres).await;
}

#[tokio::test]
async fn tampering_is_found_at_its_index_on_sqlite() {
    tampering_is_found_at_its_index(Backend::Sqlite).await;
}

#[tokio::test]
async fn tampering_is_found_at_its_index_on_postgres() {
    tampering_is_found_at_its_index(Backend::Postgres).await;
}

#[tokio::test]
async fn a_consistency_proof_between_two_checkpoints_verifies_and_a_forged_one_fails() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = tenant_key(&app).await;
    let patient = app.create_patient(&key).await;
    // The registration, then two assessments: three entries.
    for _ in 0..2 {
        assess(&app, &key, &patient).await;
    }
    let first = wait_for_size(&app, &key, 3).await;
    for _ in 0..4 {
        assess(&app, &key, &patient).await;
    }
    let second = wait_for_size(&app, &key, 7).await;
    let verifier = CheckpointVerifier::from_base64(&public_key(&app, &key).await).unwrap();
    for signed in [&first, &second] {
        verifier.verify(signed["signedText"].as_str().unwrap(), signed["signature"].as_str().unwrap()).unwrap();
    }
    let at_three: Value = app.get("/v1/governance/audit/checkpoint?treeSize=3", &key).await.json().await.unwrap();
    assert_eq!(at_three["rootHash"], first["rootHash"], "the checkpoint at size 3 is kept");
    // A size no checkpoint was signed at, within the log, within i64 or past it, is not found.
    let signed: Value = app.get("/v1/governance/audit/checkpoints?pageSize=1000", &key).await.json().await.unwrap();
    let signed: Vec<&str> =
        signed["checkpoints"].as_array().unwrap().iter().map(|c| c["treeSize"].as_str().unwrap()).collect();
    // Checkpoints are signed as entries arrive, often more than one at a time: a size within the
    // log that none was signed at, when there is one.
    let unsigned = (1..7).map(|size| size.to_string()).filter(|size| !signed.contains(&size.as_str()));
    for size in unsigned.take(1).chain(["9223372036854775808".to_owned(), "18446744073709551615".to_owned()]) {
        let response = app.get(&format!("/v1/governance/audit/checkpoint?treeSize={size}"), &key).await;
        aigronova_e2e::assert_problem(response, 404).await;
    }

    let response = app.get("/v1/governance/audit/consistency?from=3&to=7", &key).await;
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    let proof: Vec<Hash> =
        served["proof"].as_array().unwrap().iter().map(|hash| decode_hash(hash.as_str().unwrap()).unwrap()).collect();
    let (old_root, new_root) = (root_of(&first), root_of(&second));
    merkle::verify_consistency(3, 7, &old_root, &new_root, &proof).expect("the proof verifies");

    let mut forged = proof.clone();
    forged[0][0] ^= 1;
    assert!(merkle::verify_consistency(3, 7, &old_root, &new_root, &forged).is_err(), "a forged proof fails");
    assert!(merkle::verify_consistency(3, 7, &new_root, &old_root, &proof).is_err(), "swapped roots fail");
    assert!(merkle::verify_consistency(3, 7, &old_root, &new_root, &proof[1..]).is_err(), "a short proof fails");

    for (bad, field) in [
        ("from=0&to=3", "from"),
        ("from=5&to=3", "from"),
        ("from=1&to=99", "to"),
        ("from=3", "to"),
        ("from=0&to=0", "from"),
    ] {
        let response = app.get(&format!("/v1/governance/audit/consistency?{bad}"), &key).await;
        let problem = aigronova_e2e::assert_problem(response, 400).await;
        assert_eq!(problem["field"], field, "{bad}: {problem}");
        // A bound left out, or 0 (which reads the same), is said to be needed.
        let missing = bad == "from=3" || bad.starts_with("from=0");
        assert_eq!(problem["detail"].as_str().unwrap().contains("must be given"), missing, "{bad}: {problem}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_inventory_lists_the_models_the_services_registered() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = tenant_key(&app).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let models = loop {
        let response = app.get("/v1/governance/models", &key).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        if body["models"].as_array().is_some_and(|models| !models.is_empty()) {
            break body["models"].as_array().unwrap().clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no model registered: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let model = models.iter().find(|model| model["card"]["name"] == "breast-cancer").expect("breast-cancer listed");
    assert_eq!(model["service"], "healthquantum");
    assert_eq!(model["card"]["version"], "1");
    assert_eq!(model["card"]["sha256"].as_str().unwrap().len(), 64);
    assert!(!model.get("sha256Mismatch").and_then(Value::as_bool).unwrap_or(false), "not flagged: {model}");
    let one = app.get("/v1/governance/models/breast-cancer/versions/1", &key).await;
    assert_eq!(one.status(), 200);
    assert_eq!(app.get("/v1/governance/models/breast-cancer/versions/9", &key).await.status(), 404);
    // A name or version no model could have is a 400 naming it, on the inventory and monitoring alike.
    for (path, field) in [
        ("/v1/governance/models/%00/versions/1", "name"),
        ("/v1/governance/models/breast-cancer/versions/a%00", "version"),
        ("/v1/governance/monitoring/models/%00/versions/1", "name"),
        ("/v1/governance/monitoring/models/breast-cancer/versions/%01", "version"),
    ] {
        assert_eq!(assert_problem(app.get(path, &key).await, 400).await["field"], field, "{path}");
    }
    // A model file changed without a new version: the evidence report flags it with what was seen.
    let observed = "f".repeat(64);
    let changed = app
        .execute_on_governance(&format!(
            "UPDATE models SET observed_sha256 = '{observed}', differing_sha256 = '{observed}', \
             mismatch_at = '2026-11-30T12:00:00.000000Z' WHERE name = 'breast-cancer' AND version = '1'"
        ))
        .await;
    assert_eq!(changed, 1);
    let report: Value = app.get("/v1/governance/reports/iso27001", &key).await.json().await.unwrap();
    let flagged = report["models"].as_array().unwrap().iter().find(|model| model["name"] == "breast-cancer").unwrap();
    assert_eq!(
        (&flagged["sha256Mismatch"], flagged["observedSha256"].as_str(), flagged["mismatchTime"].as_str()),
        (&json!(true), Some(observed.as_str()), Some("2026-11-30T12:00:00.000000Z"))
    );
    let pdf = app.get("/v1/governance/reports/iso27001?format=pdf", &key).await.bytes().await.unwrap();
    let text = aigronova_e2e::pdf_text(&pdf);
    assert!(text.contains(&format!("observed {observed}")), "{text}");
    assert!(text.contains("first seen 2026-11-30T12:00:00.000000Z"), "{text}");
    app.stop().await;
}

/// An outbox event ai-governance finds invalid and a row that is not an event at all, ahead of a
/// good event: both are set aside with their reasons, the good one reaches the log, and the count
/// set aside is a metric.
async fn events_ai_governance_will_never_take_are_set_aside(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant_on("Hospital do Evento Recusado", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let event = |id: &str, details: Value| {
        json!({
            "event_id": id, "tenant_id": tenant, "service": "healthquantum", "kind": "decision",
            "action": "health.AssessRisk", "actor": "key-1", "subject": "patient:1", "details": details,
            "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        })
        .to_string()
    };
    let rows = [
        (&ids[0], event(&ids[0], json!(["not", "an", "object"]))),
        (&ids[1], "{\"event_id\": 7}".to_owned()),
        (&ids[2], event(&ids[2], json!({"model": "breast-cancer"}))),
    ];
    let values: Vec<String> = rows
        .iter()
        .map(|(id, event)| format!("('{id}', '{tenant}', '{event}', '2026-01-01T00:00:00.000000Z')"))
        .collect();
    let sql = format!("INSERT INTO audit_outbox (event_id, tenant_id, event, created_at) VALUES {}", values.join(", "));
    assert_eq!(app.execute_on_health(&sql).await, 3);

    let logged = app.audited(&key, 1, |_| true).await;
    let leaf: Value = serde_json::from_str(logged[0]["leaf"].as_str().unwrap()).unwrap();
    assert_eq!((&leaf["event_id"], &leaf["details"]["model"]), (&json!(ids[2]), &json!("breast-cancer")), "{leaf}");
    wait_for_empty_outbox(&app).await;
    assert_eq!(app.count_health_rows("audit_outbox_refused").await, 2);
    sqlx::any::install_default_drivers();
    let mut connection = <sqlx::AnyConnection as sqlx::Connection>::connect(&app.health_database_url).await.unwrap();
    let refused = sqlx::query("SELECT event_id, reason FROM audit_outbox_refused ORDER BY event_id")
        .fetch_all(&mut connection)
        .await
        .unwrap();
    let reasons: Vec<(String, String)> =
        refused.iter().map(|row| (sqlx::Row::get::<String, _>(row, 0), sqlx::Row::get::<String, _>(row, 1))).collect();
    assert_eq!((reasons[0].0.as_str(), reasons[1].0.as_str()), (ids[0].as_str(), ids[1].as_str()));
    assert!(reasons[0].1.contains("detailsJson"), "{reasons:?}");
    assert!(reasons[1].1.contains("not an audit event"), "{reasons:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.get("/metrics", &app.admin_key).await.text().await.unwrap();
        if metrics.lines().any(|line| line == r#"aigronova_outbox_refused_events{service="healthquantum"} 2"#) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no refused events in the metrics");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn events_ai_governance_will_never_take_are_set_aside_on_sqlite() {
    events_ai_governance_will_never_take_are_set_aside(Backend::Sqlite).await;
}

#[tokio::test]
async fn events_ai_governance_will_never_take_are_set_aside_on_postgres() {
    events_ai_governance_will_never_take_are_set_aside(Backend::Postgres).await;
}
