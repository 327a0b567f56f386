//! Evidence reports through the gateway: the figures match what happened, the PDF renders and
//! carries the checkpoint's root hash, and a tampered log shows in the report's verification.

use std::time::Duration;

use aigronova_e2e::{Backend, TestApp, assert_problem, models_dir, pdf_text, spawn_app};
use serde_json::{Value, json};

const SCOPES: &[&str] = &["health:read", "health:write", "governance:read", "governance:write"];

/// A report as JSON, checked against the schema the OpenAPI document gives it.
async fn report(app: &TestApp, key: &str, query: &str) -> Value {
    let response = app.get(&format!("/v1/governance/reports/{query}"), key).await;
    assert_eq!(response.status(), 200, "report {query}");
    assert_eq!(response.headers()["content-type"], "application/json");
    let report = response.json().await.unwrap();
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    crate::openapi::assert_conforms(&document, "aigronova.governance.v1.EvidenceReport", &report);
    report
}

/// After the signing key changes, a tenant that has logged nothing since still has a checkpoint of
/// the earlier key as its latest: the report says its signature is not verified here, and what the
/// entries show of themselves, without calling the checkpoint forged.
#[tokio::test]
async fn a_checkpoint_of_a_key_no_longer_trusted_is_not_verified_but_not_called_forged() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Clínica Chave Antiga", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    app.create_patient(&key).await;
    // The patient's event in the log, and so its checkpoint signed, before the key changes.
    app.audited(&key, 1, |entry| entry["action"] == "health.CreatePatient").await;
    let before = report(&app, &key, "iso27001").await;
    assert_eq!(
        (&before["verification"]["verified"], &before["verification"]["signatureVerified"]),
        (&json!(true), &json!(true))
    );

    let signer = aigronova_ai_governance::checkpoint::CheckpointSigner::generate();
    app.restart_with(|config| config.ai_governance.signing_key = Some(signer.to_base64())).await;
    let after = report(&app, &key, "iso27001").await;
    let verification = &after["verification"];
    assert_eq!((&verification["verified"], &verification["signatureVerified"]), (&json!(false), &json!(false)));
    assert_eq!(verification["signatureFailed"], false, "a key not known here is no forgery: {verification}");
    assert!(verification.get("firstBadIndex").is_none(), "{verification}");
    let detail = verification["detail"].as_str().unwrap();
    assert!(detail.contains("neither this deployment's key"), "{detail}");
    assert!(detail.ends_with("the entries stored make the root it holds"), "{detail}");
    let text = pdf_text(&app.get("/v1/governance/reports/iso27001?format=pdf", &key).await.bytes().await.unwrap());
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("NOT VERIFIED: the checkpoint's signature is not verified here (see the detail)"), "{text}");
    assert!(!text.contains("does not verify"), "{text}");
    // The CLI, checking with the key the gateway serves now, names the key the checkpoint names.
    let args = aigronova_cli::audit::VerifyArgs {
        url: app.address.clone(),
        key: key.clone(),
        public_key: None,
        entry: None,
        checkpoint: None,
        tenant: None,
    };
    let refused = format!("{:#}", aigronova_cli::audit::verify(&args).await.unwrap_err());
    let named = after["checkpoint"]["keyId"].as_str().unwrap();
    assert!(
        refused.contains(&format!("it names signing key {named}")) && refused.contains("--public-key"),
        "{refused}"
    );
    app.stop().await;
}

/// A checkpoint whose signature fails against the trusted key it names was altered or forged: the
/// report says FAILED, not merely not verified, whatever the entries show of themselves.
#[tokio::test]
async fn a_checkpoint_whose_signature_fails_under_its_trusted_key_fails_the_report() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Clínica Forjada", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    app.create_patient(&key).await;
    // The patient's event in the log, and so its checkpoint signed, before the checkpoint is forged.
    app.audited(&key, 1, |entry| entry["action"] == "health.CreatePatient").await;
    assert_eq!(report(&app, &key, "iso27001").await["verification"]["verified"], true);

    let forged = format!("{}==", "A".repeat(86));
    app.execute_on_governance(&format!("UPDATE audit_checkpoints SET signature = '{forged}'")).await;
    app.restart_with(|_| {}).await;
    let after = report(&app, &key, "iso27001").await;
    let verification = &after["verification"];
    assert_eq!(
        (&verification["verified"], &verification["signatureVerified"], &verification["signatureFailed"]),
        (&json!(false), &json!(false), &json!(true)),
        "{verification}"
    );
    let detail = verification["detail"].as_str().unwrap();
    assert!(detail.contains("which this deployment trusts: the checkpoint was altered or forged"), "{detail}");
    let text = pdf_text(&app.get("/v1/governance/reports/iso27001?format=pdf", &key).await.bytes().await.unwrap());
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("FAILED: the checkpoint's signature does not verify against the trusted key"), "{text}");
    assert!(!text.contains("NOT VERIFIED"), "{text}");
    app.stop().await;
}

async fn reports_carry_the_evidence(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant_on("Clínica Auditada", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient = app.create_patient(&key).await;
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join("breast-cancer/1/reference.json")).expect("reference.json"),
    )
    .unwrap();
    let mut assessments = Vec::new();
    for row in reference["rows"].as_array().unwrap().iter().take(2) {
        let body = json!({"model": "breast-cancer", "features": row["features"]});
        let response = app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await;
        assert_eq!(response.status(), 200);
        assessments.push(response.json::<Value>().await.unwrap()["id"].clone());
    }
    assert_eq!(app.get(&format!("/v1/health/patients/{patient}"), &key).await.status(), 200);
    let request =
        app.post("/v1/governance/subject-requests", &key, &json!({"cpf": "52998224725", "kind": "access"})).await;
    assert_eq!(request.status(), 200);

    // Two decisions, the patient read and the two services' export reads (finquantum's finds
    // nobody, and says so), once the relays have shipped them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let lgpd = loop {
        let lgpd = report(&app, &key, "lgpd?from=2026-01-01").await;
        if lgpd["audit"]["decisions"] == 2 && lgpd["audit"]["sensitiveReads"] == 3 {
            break lgpd;
        }
        assert!(tokio::time::Instant::now() < deadline, "the audit events did not all arrive: {}", lgpd["audit"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lgpd["framework"], "lgpd");
    assert_eq!(lgpd["period"]["from"], "2026-01-01T00:00:00Z", "{}", lgpd["period"]);
    assert_eq!(lgpd["audit"]["decisionsByModel"]["breast-cancer"], 2);
    assert_eq!(lgpd["audit"]["byKind"]["subject_request"], 1);
    assert_eq!(lgpd["subjectRequests"]["total"], 1);
    assert_eq!(lgpd["subjectRequests"]["completedOnTime"], 1);
    assert_eq!(lgpd["subjectRequests"]["overdue"], 0);
    assert_eq!(lgpd["verification"]["verified"], true, "{}", lgpd["verification"]);
    assert!(lgpd["verification"].get("firstBadIndex").is_none(), "{}", lgpd["verification"]);
    assert!(lgpd["controls"].as_array().unwrap().iter().any(|control| control["id"] == "Art. 20"));
    assert!(lgpd["models"].as_array().unwrap().iter().any(|model| model["name"] == "breast-cancer"));
    let checkpoint: Value = app.get("/v1/governance/audit/checkpoint", &key).await.json().await.unwrap();
    assert_eq!(lgpd["checkpoint"]["rootHash"], checkpoint["rootHash"]);
    // A size as the audit API writes it: a string. The checkpoint whole, the text its signature is
    // over included.
    assert_eq!(lgpd["checkpoint"]["treeSize"], checkpoint["treeSize"]);
    for field in ["tenantId", "signedText", "signature", "keyId"] {
        assert_eq!(lgpd["checkpoint"][field], checkpoint[field], "{field}");
    }
    assert!(lgpd["verification"]["treeSize"].is_string(), "{lgpd}");

    let iso = report(&app, &key, "iso27001").await;
    assert!(iso["controls"].as_array().unwrap().iter().any(|control| control["id"] == "A.8.15"));
    let soc2 = report(&app, &key, "soc2?from=2026-01-01T00:00:00Z&to=2099-12-31").await;
    assert!(soc2["controls"].as_array().unwrap().iter().any(|control| control["id"] == "CC7.2"));
    let empty = report(&app, &key, "lgpd?from=2020-01-01&to=2020-12-31").await;
    assert_eq!(empty["audit"]["entries"], 0, "nothing happened in 2020");

    // A request counts as things stood at the period's end: completed after it, it was open then.
    let moved =
        app.execute_on_governance("UPDATE subject_requests SET completed_at = '2099-06-01T00:00:00.000000Z'").await;
    assert_eq!(moved, 1);
    let before = report(&app, &key, "lgpd?from=2026-01-01").await;
    assert_eq!(before["subjectRequests"]["total"], 1, "{}", before["subjectRequests"]);
    for counted in ["completedOnTime", "completedLate", "overdue", "failed"] {
        assert_eq!(before["subjectRequests"][counted], 0, "{counted}: {}", before["subjectRequests"]);
    }
    assert_eq!(before["subjectRequests"]["open"], 1, "open then, within its deadline: {}", before["subjectRequests"]);
    let after = report(&app, &key, "lgpd?from=2026-01-01&to=2099-12-31").await;
    assert_eq!(after["subjectRequests"]["completedLate"], 1, "{}", after["subjectRequests"]);
    // A request made before the period and still open when it began is of the period (overdue
    // all through it here); one completed before the period began is not.
    let backdated = app
        .execute_on_governance(
            "UPDATE subject_requests SET created_at = '2026-03-01T00:00:00.000000Z', \
             deadline = '2026-03-16T00:00:00.000000Z'",
        )
        .await;
    assert_eq!(backdated, 1);
    let carried = report(&app, &key, "lgpd?from=2026-04-01&to=2026-05-01").await;
    let requests = &carried["subjectRequests"];
    assert_eq!(
        (&requests["total"], &requests["openedBefore"], &requests["overdue"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert_eq!(requests["byKind"]["access"], 1, "{requests}");
    assert_eq!(report(&app, &key, "lgpd?from=2026-02-01&to=2026-05-01").await["subjectRequests"]["openedBefore"], 0);
    app.execute_on_governance("UPDATE subject_requests SET completed_at = '2026-03-10T00:00:00.000000Z'").await;
    let done = report(&app, &key, "lgpd?from=2026-04-01&to=2026-05-01").await;
    assert_eq!(done["subjectRequests"]["total"], 0, "{}", done["subjectRequests"]);
    // A failed request is over (made again if it is still wanted): it counts in its own period only.
    app.execute_on_governance("UPDATE subject_requests SET status = 'failed', completed_at = NULL").await;
    let later = report(&app, &key, "lgpd?from=2026-04-01&to=2026-05-01").await;
    assert_eq!(later["subjectRequests"]["total"], 0, "{}", later["subjectRequests"]);
    let made = report(&app, &key, "lgpd?from=2026-03-01&to=2026-04-01").await;
    assert_eq!((&made["subjectRequests"]["total"], &made["subjectRequests"]["failed"]), (&json!(1), &json!(1)));
    // Its subject had no answer in time: overdue in its period, as the list shows it.
    assert_eq!((&made["subjectRequests"]["overdue"], &made["subjectRequests"]["open"]), (&json!(1), &json!(0)));
    // Failed after the period ended, it was not failed then; failed within it, it was.
    app.execute_on_governance("UPDATE subject_requests SET failed_at = '2026-04-02T00:00:00.000000Z'").await;
    let not_yet = report(&app, &key, "lgpd?from=2026-03-01&to=2026-04-01").await;
    assert_eq!((&not_yet["subjectRequests"]["total"], &not_yet["subjectRequests"]["failed"]), (&json!(1), &json!(0)));
    app.execute_on_governance("UPDATE subject_requests SET failed_at = '2026-03-20T00:00:00.000000Z'").await;
    let within = report(&app, &key, "lgpd?from=2026-03-01&to=2026-04-01").await;
    assert_eq!(within["subjectRequests"]["failed"], 1, "{}", within["subjectRequests"]);

    // The PDF renders and carries the root hash the checkpoint signs.
    let response = app.get("/v1/governance/reports/lgpd?format=pdf", &key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert_eq!(response.headers()["content-disposition"], "inline; filename=\"reports-lgpd.pdf\"");
    let pdf = response.bytes().await.unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdf_text(&pdf);
    assert!(text.contains("LGPD evidence report"), "{text}");
    assert!(text.contains(" (excluded)"), "the period's end is named as excluded:\n{text}");
    assert!(text.contains(checkpoint["rootHash"].as_str().unwrap()), "the root hash is in the PDF:\n{text}");
    assert!(text.contains("verified"), "{text}");
    assert!(text.contains("Art. 20"), "{text}");
    assert!(text.contains("Automated decisions by model"), "{text}");
    let counted = |line: &str| line.split_whitespace().collect::<Vec<_>>() == ["breast-cancer:", "2"];
    assert!(text.lines().any(counted), "the two breast-cancer decisions, as the JSON counts them:\n{text}");

    // A review pending when the period began is of the period; one decided before it began is not.
    assert_eq!(app.review_decision(&key, &assessments[0], "o paciente contesta").await.status(), 200);
    app.execute_on_governance("UPDATE reviews SET created_at = '2026-03-01T00:00:00.000000Z'").await;
    let pending = report(&app, &key, "lgpd?from=2026-04-01&to=2026-05-01").await;
    assert_eq!(pending["reviews"], json!({"total": 1, "openedBefore": 1, "byOutcome": {"pending": 1}}));
    app.execute_on_governance(
        "UPDATE reviews SET status = 'decided', outcome = 'upheld', decided_at = '2026-03-10T00:00:00.000000Z'",
    )
    .await;
    let decided = report(&app, &key, "lgpd?from=2026-04-01&to=2026-05-01").await;
    assert_eq!(decided["reviews"]["total"], 0, "{}", decided["reviews"]);

    // A row edited in the database shows in the next report.
    app.execute_on_governance("UPDATE audit_entries SET leaf = REPLACE(leaf, 'decision', 'edited') WHERE idx = 1")
        .await;
    let tampered = report(&app, &key, "iso27001").await;
    assert_eq!(tampered["verification"]["verified"], false);
    assert_eq!(tampered["verification"]["signatureVerified"], true, "the checkpoint is sound, the log is not");
    assert_eq!(tampered["verification"]["firstBadIndex"], "1", "{}", tampered["verification"]);
    let text = pdf_text(&app.get("/v1/governance/reports/iso27001?format=pdf", &key).await.bytes().await.unwrap());
    assert!(text.contains("FAILED at entry 1"), "{text}");

    // Bad input.
    for (query, field) in [
        ("hipaa", "framework"),
        ("lgpd?format=xml", "format"),
        ("lgpd?from=yesterday", "from"),
        ("lgpd?from=2026-12-01&to=2026-11-01", "from"),
        // A period that has not begun, with its end or without.
        ("lgpd?from=2999-01-01&to=2999-02-01", "from"),
        ("lgpd?from=2999-01-01", "from"),
        // Finer than the log's microseconds: refused, not cut.
        ("lgpd?from=2026-11-01T00:00:00.123456789Z", "from"),
        ("lgpd?from=2026-01-01&to=2026-11-01T00:00:00.0000001Z", "to"),
        // A `to` at the earliest bound leaves no period before it for the default `from`.
        ("lgpd?to=0000-01-01T00:00:00%2B01:00", "to"),
    ] {
        let problem = assert_problem(app.get(&format!("/v1/governance/reports/{query}"), &key).await, 400).await;
        assert_eq!(problem["field"], field, "{query}: {problem}");
    }
    // A `to` more than 30 days ahead, alone: the period begins no later than now.
    let ahead = report(&app, &key, "lgpd?to=2999-01-01").await;
    assert_eq!(ahead["period"]["to"], "2999-01-02T00:00:00Z", "{}", ahead["period"]);
    let from = ahead["period"]["from"].as_str().unwrap();
    assert!(from <= chrono::Utc::now().to_rfc3339().as_str(), "{}", ahead["period"]);
    // An offset's `+` typed into a URL arrives as a space: the refusal says how to send it.
    let typed = "/v1/governance/reports/lgpd?from=2026-11-01T00:00:00+00:00";
    let problem = assert_problem(app.get(typed, &key).await, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("%2B"), "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn reports_carry_the_evidence_on_sqlite() {
    reports_carry_the_evidence(Backend::Sqlite).await;
}

#[tokio::test]
async fn reports_carry_the_evidence_on_postgres() {
    reports_carry_the_evidence(Backend::Postgres).await;
}
