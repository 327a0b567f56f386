//! LGPD through the gateway: an access request gathers the patient's data from every service, an
//! erasure leaves nothing personal, requests are tracked against their deadline, what they keep of
//! the subject is sealed in ai-governance's database, and automated decisions go to a review queue.

use std::time::Duration;

use aigronova_e2e::{Backend, TestApp, assert_problem, models_dir, spawn_app, spawn_app_with};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Connection, Row};

use crate::patients::{png, upload};

const CPF: &str = "529.982.247-25";
const SCOPES: &[&str] = &["health:read", "health:write", "governance:read", "governance:write", "governance:review"];

pub(crate) async fn open(app: &TestApp, key: &str, body: Value) -> Value {
    let response = app.post("/v1/governance/subject-requests", key, &body).await;
    assert_eq!(response.status(), 200, "subject request {body}");
    response.json().await.unwrap()
}

pub(crate) async fn export(app: &TestApp, key: &str, id: &str) -> Value {
    let response = app.get(&format!("/v1/governance/subject-requests/{id}/export"), key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bundle = response.json().await.unwrap();
    // As the OpenAPI document describes it.
    let document: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    crate::openapi::assert_conforms(&document, "aigronova.governance.v1.SubjectExport", &bundle);
    bundle
}

pub(crate) fn records(outcome: &Value) -> i64 {
    match &outcome["records"] {
        Value::String(text) => text.parse().unwrap(),
        other => other.as_i64().unwrap_or(0),
    }
}

/// The outcome of `service` in a subject request.
pub(crate) fn outcome_of<'a>(request: &'a Value, service: &str) -> &'a Value {
    request["outcomes"]
        .as_array()
        .and_then(|outcomes| outcomes.iter().find(|outcome| outcome["service"] == service))
        .unwrap_or_else(|| panic!("no outcome of {service}: {request}"))
}

/// A `breast-cancer` assessment of the first reference row.
fn breast_cancer_assessment() -> Value {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(models_dir().join("breast-cancer/1/reference.json")).expect("reference.json"),
    )
    .unwrap();
    json!({"model": "breast-cancer", "features": reference["rows"][0]["features"]})
}

/// The index of the first `decision` entry in the tenant's log, once the relay has shipped it.
async fn decision_index(app: &TestApp, key: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = app.get("/v1/governance/audit/entries?pageSize=100", key).await.json().await.unwrap();
        let found = page["entries"].as_array().into_iter().flatten().find(|entry| entry["kind"] == "decision");
        if let Some(entry) = found {
            return entry["index"]
                .as_str()
                .map_or_else(|| entry["index"].as_u64().unwrap_or(0), |i| i.parse().unwrap());
        }
        assert!(tokio::time::Instant::now() < deadline, "no decision reached the log: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A decision's review is asked for by the decision's own id, as its service answered it, once the
/// decision has reached the audit log; the id must be a decision's.
#[tokio::test]
async fn a_review_is_asked_for_by_the_decisions_own_id() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Hospital Contestado", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient = app.create_patient(&key).await;
    let response =
        app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &breast_cancer_assessment()).await;
    assert_eq!(response.status(), 200);
    let decision: Value = response.json().await.unwrap();
    let by_id = json!({"decisionId": decision["id"], "reason": "the patient contests the score"});
    let review = app.review_decision(&key, &decision["id"], "the patient contests the score").await;
    assert_eq!(review.status(), 200);
    let review: Value = review.json().await.unwrap();
    assert_eq!((&review["eventId"], &review["action"]), (&decision["id"], &json!("health.AssessRisk")), "{review}");
    let index = review["auditIndex"].clone();
    for (body, status) in [
        // Asked for again, by either name: it already awaits review.
        (by_id.clone(), 409),
        (json!({"auditIndex": index, "reason": "x"}), 409),
        (json!({"decisionId": decision["id"], "auditIndex": index, "reason": "x"}), 400),
        (json!({"decisionId": "score-1", "reason": "x"}), 400),
        (json!({"decisionId": "00000000-0000-7000-8000-000000000000", "reason": "x"}), 404),
        // The patient's registration is in the log, but not under the patient's id.
        (json!({"decisionId": patient, "reason": "x"}), 404),
    ] {
        let problem = assert_problem(app.post("/v1/governance/reviews", &key, &body).await, status).await;
        if status == 400 {
            assert_eq!(problem["field"], "decisionId", "{body}");
        }
    }
    let pending: Value = app.get("/v1/governance/reviews?status=pending", &key).await.json().await.unwrap();
    assert_eq!(pending["reviews"].as_array().unwrap().len(), 1, "the refused reviews stored nothing: {pending}");
    app.stop().await;
}

async fn access_erasure_and_reviews(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant_on("Hospital LGPD", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient = app.create_patient(&key).await;
    let body = breast_cancer_assessment();
    let response = app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await;
    assert_eq!(response.status(), 200);
    let assessment: Value = response.json().await.unwrap();
    let image = upload(&app, &key, &patient, "image/png", png(40, 30)).await;
    assert_eq!(image.status(), 200);
    let image: Value = image.json().await.unwrap();
    let images = app.data_dir().join("healthquantum-objects/images");
    let stored = |dir: &std::path::Path| std::fs::read_dir(dir).map_or(0, |entries| entries.count());
    assert_eq!(stored(&images.join(&tenant)), 2, "the image and its thumbnail");

    // Access: every service's data about the CPF, in one bundle.
    let access = open(&app, &key, json!({"cpf": CPF, "kind": "access"})).await;
    assert_eq!(access["status"], "completed", "{access}");
    let created = Utc::now();
    let deadline: DateTime<Utc> = access["deadline"].as_str().unwrap().parse().unwrap();
    assert!((deadline - created - chrono::Duration::days(15)).num_seconds().abs() < 60, "15 days: {deadline}");
    let bundle = export(&app, &key, access["id"].as_str().unwrap()).await;
    let patients = bundle["services"]["healthquantum"]["patients"].as_array().unwrap();
    assert_eq!(patients.len(), 1, "{bundle}");
    // The bundle is personal data: a reader without governance:write gets none, and each download is audited.
    let reader = app.create_key(&tenant, &["governance:read"]).await;
    let path = format!("/v1/governance/subject-requests/{}/export", access["id"].as_str().unwrap());
    assert_problem(app.get(&path, &reader).await, 403).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = app.get("/v1/governance/audit/entries?pageSize=1000", &key).await.json().await.unwrap();
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        if entries.iter().any(|entry| entry["action"] == "governance.GetSubjectExport") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the download was not audited: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(patients[0]["name"], "Maria Silva");
    assert_eq!(patients[0]["cpf"], "52998224725");
    assert_eq!(patients[0]["assessments"][0]["id"], assessment["id"]);
    // Contributions as the API shows them.
    assert_eq!(patients[0]["assessments"][0]["topFeatures"], assessment["topFeatures"]);
    // Named and written as the API names and writes them.
    for field in ["value", "probability", "riskBand", "modelVersion"] {
        assert_eq!(patients[0]["assessments"][0][field], assessment[field], "{field}");
    }
    // The inputs, by number (`1123` and `1123.0` are one number in JSON).
    let numbers = |features: &Value| -> Vec<(String, f64)> {
        features.as_object().unwrap().iter().map(|(name, value)| (name.clone(), value.as_f64().unwrap())).collect()
    };
    assert_eq!(numbers(&patients[0]["assessments"][0]["features"]), numbers(&assessment["features"]));
    assert_eq!(numbers(&assessment["features"]).len(), 30, "{assessment}");
    let fetched: Value = app
        .get(&format!("/v1/governance/subject-requests/{}", access["id"].as_str().unwrap()), &key)
        .await
        .json()
        .await
        .unwrap();
    let health = outcome_of(&fetched, "healthquantum");
    assert_eq!(health["status"], "exported");
    assert_eq!(records(health), 1);

    // Erasure: the personal fields are gone, the clinical record is kept with its reason.
    let erasure = open(&app, &key, json!({"cpf": "52998224725", "kind": "erasure"})).await;
    assert_eq!(erasure["status"], "completed", "{erasure}");
    let outcome = outcome_of(&erasure, "healthquantum");
    assert_eq!((outcome["status"].as_str(), records(outcome)), (Some("erased"), 1));
    assert_eq!(outcome["retained"][0]["kind"], "assessments");
    assert!(outcome["retained"][0]["reason"].as_str().unwrap().contains("13.787"));
    assert_eq!(app.get(&format!("/v1/health/patients/{patient}"), &key).await.status(), 404);
    assert_eq!(app.count_health_rows("patients WHERE name <> '' OR cpf <> '' OR birth_date <> ''").await, 0);
    // Images are health data the law does not require to keep: their records and objects go.
    assert_eq!(app.count_health_rows("images").await, 0);
    assert_eq!(stored(&images.join(&tenant)), 0, "the image's objects are deleted");
    let path = format!("/v1/health/patients/{patient}/images/{}", image["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &key).await.status(), 404);
    // The earlier access request's bundle went with the data it copied.
    let governance = outcome_of(&erasure, "ai-governance");
    assert_eq!((governance["status"].as_str(), records(governance)), (Some("erased"), 1), "{erasure}");
    assert_eq!(governance["retained"], json!([]), "no reviews yet, nothing kept: {erasure}");
    let response =
        app.get(&format!("/v1/governance/subject-requests/{}/export", access["id"].as_str().unwrap()), &key).await;
    let problem = assert_problem(response, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains(erasure["id"].as_str().unwrap()), "{problem}");
    assert_eq!(app.count_governance_rows("subject_requests WHERE export LIKE '%Maria%'").await, 0);
    // Nor is it left on disk, in the embedded database's free pages or its write-ahead log.
    aigronova_e2e::until_gone_from_disk(&app.governance_database_url, &[b"52998224725", b"Maria Silva"]).await;
    let again = open(&app, &key, json!({"cpf": CPF, "kind": "portability"})).await;
    let bundle = export(&app, &key, again["id"].as_str().unwrap()).await;
    assert_eq!(bundle["services"]["healthquantum"]["patients"], json!([]), "nothing personal is left: {bundle}");
    assert!(!bundle.to_string().contains("Maria"), "{bundle}");
    let response =
        app.get(&format!("/v1/governance/subject-requests/{}/export", erasure["id"].as_str().unwrap()), &key).await;
    assert_problem(response, 404).await;

    // Bad input changes nothing.
    let before = app.count_governance_rows("subject_requests").await;
    let problem = assert_problem(
        app.post("/v1/governance/subject-requests", &key, &json!({"cpf": "123.456.789-00", "kind": "access"})).await,
        400,
    )
    .await;
    assert_eq!(problem["field"], "cpf");
    let problem = assert_problem(
        app.post("/v1/governance/subject-requests", &key, &json!({"cpf": CPF, "kind": "delete"})).await,
        400,
    )
    .await;
    assert_eq!(problem["field"], "kind");
    let problem =
        assert_problem(app.post("/v1/governance/subject-requests", &key, &json!({"cpf": CPF})).await, 400).await;
    assert_eq!(problem["field"], "kind");
    assert!(problem["detail"].as_str().unwrap().contains("is required"), "{problem}");
    assert_problem(
        app.post("/v1/governance/subject-requests", &key, &json!({"cpf": CPF, "kind": "correction"})).await,
        400,
    )
    .await;
    assert_eq!(app.count_governance_rows("subject_requests").await, before);

    // A correction waits for a person; past its deadline it is listed as overdue.
    let correction =
        open(&app, &key, json!({"cpf": CPF, "kind": "correction", "details": "birth date is 1980-03-01"})).await;
    assert_eq!(correction["status"], "open");
    let seen =
        app.get(&format!("/v1/governance/subject-requests/{}", correction["id"].as_str().unwrap()), &reader).await;
    let seen: Value = seen.json().await.unwrap();
    assert_eq!(
        (seen["status"].as_str(), seen["details"].as_str()),
        (Some("open"), Some("")),
        "shown to a reader: {seen}"
    );
    let listed: Value = app.get("/v1/governance/subject-requests?overdue=true", &key).await.json().await.unwrap();
    assert_eq!(listed["requests"].as_array().map_or(0, Vec::len), 0, "{listed}");
    let id = correction["id"].as_str().unwrap();
    let moved = app
        .execute_on_governance(&format!(
            "UPDATE subject_requests SET deadline = '2026-01-01T00:00:00.000000Z' WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(moved, 1);
    let listed: Value = app.get("/v1/governance/subject-requests?overdue=true", &key).await.json().await.unwrap();
    let overdue = listed["requests"].as_array().unwrap();
    assert_eq!(overdue.len(), 1, "{listed}");
    assert_eq!((overdue[0]["id"].as_str(), &overdue[0]["overdue"]), (Some(id), &json!(true)));
    let all: Value = app.get("/v1/governance/subject-requests", &key).await.json().await.unwrap();
    assert_eq!(all["requests"].as_array().unwrap().len(), 4);
    // `overdue=false` lists the others.
    let others: Value = app.get("/v1/governance/subject-requests?overdue=false", &key).await.json().await.unwrap();
    let others = others["requests"].as_array().unwrap();
    assert_eq!(others.len(), 3, "{others:?}");
    assert!(others.iter().all(|request| request["overdue"] == json!(false) && request["id"] != json!(id)));
    assert_eq!(all["nextPageToken"].as_str().unwrap_or_default(), "", "{all}");
    // In pages, newest first, as the whole list.
    assert_eq!(pages(&app, &key, "/v1/governance/subject-requests", "requests", 3).await, all["requests"]);
    let shouted = format!("pageToken={}", all["requests"][0]["id"].as_str().unwrap().to_uppercase());
    for (query, field) in [
        ("pageSize=101", "pageSize"),
        ("pageSize=-1", "pageSize"),
        ("pageToken=abc", "pageToken"),
        (&shouted, "pageToken"),
    ] {
        let refused = app.get(&format!("/v1/governance/subject-requests?{query}"), &key).await;
        assert_eq!(assert_problem(refused, 400).await["field"], field, "{query}");
    }
    // A token goes on only with the filter it was returned for.
    let first: Value = app.get("/v1/governance/subject-requests?pageSize=1", &key).await.json().await.unwrap();
    let token = first["nextPageToken"].as_str().unwrap();
    let refused = app.get(&format!("/v1/governance/subject-requests?overdue=true&pageToken={token}"), &key).await;
    assert_eq!(assert_problem(refused, 400).await["field"], "pageToken");
    let refused = app.get(&format!("/v1/governance/subject-requests?pageToken={token}.overdue"), &key).await;
    assert_eq!(assert_problem(refused, 400).await["field"], "pageToken");
    // Nor one made up from an id.
    let made_up = format!("{}.0123456789abcdef", all["requests"][1]["id"].as_str().unwrap());
    let refused = app.get(&format!("/v1/governance/subject-requests?pageToken={made_up}"), &key).await;
    assert_eq!(assert_problem(refused, 400).await["field"], "pageToken");
    // An id is found in any spelling of its UUID.
    let shouted = app.get(&format!("/v1/governance/subject-requests/{}", id.to_uppercase()), &key).await;
    assert_eq!(shouted.status(), 200);
    assert_eq!(shouted.json::<Value>().await.unwrap()["id"], id);

    // A person handles it and says how; then it is neither open nor overdue, and stays completed.
    let completion = format!("/v1/governance/subject-requests/{id}/completion");
    let refused = app.post(&completion, &key, &json!({"resolution": "  "})).await;
    assert_eq!(assert_problem(refused, 400).await["field"], "resolution");
    let done = app.post(&completion, &key, &json!({"resolution": "birth date corrected in healthquantum"})).await;
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!((done["status"].as_str(), &done["overdue"]), (Some("completed"), &json!(false)), "{done}");
    assert_eq!(done["resolution"], "birth date corrected in healthquantum");
    assert!(done["completeTime"].is_string(), "{done}");
    let listed: Value = app.get("/v1/governance/subject-requests?overdue=true", &key).await.json().await.unwrap();
    assert_eq!(listed["requests"].as_array().map_or(0, Vec::len), 0, "{listed}");
    let again = app.post(&completion, &key, &json!({"resolution": "again"})).await;
    assert!(assert_problem(again, 409).await["detail"].as_str().unwrap().contains("only an open correction"));
    let access_id = all["requests"].as_array().unwrap().iter().find(|r| r["kind"] == "access").unwrap()["id"].clone();
    let path = format!("/v1/governance/subject-requests/{}/completion", access_id.as_str().unwrap());
    assert_problem(app.post(&path, &key, &json!({"resolution": "x"})).await, 409).await;

    // A later erasure of the same CPF clears the corrections' details and resolutions, which hold
    // the subject's data, and closes the one still open: nothing is left to correct.
    let pending = open(&app, &key, json!({"cpf": CPF, "kind": "correction", "details": "the address"})).await;
    let pending = pending["id"].as_str().unwrap();
    let erasure = open(&app, &key, json!({"cpf": CPF, "kind": "erasure"})).await;
    let governance = outcome_of(&erasure, "ai-governance");
    assert_eq!((governance["status"].as_str(), records(governance)), (Some("erased"), 2), "{erasure}");
    let cleared = format!(
        "subject_requests WHERE id IN ('{id}', '{pending}') AND details = '' AND resolution IS NULL \
         AND erased_by IS NOT NULL AND status = 'completed'"
    );
    assert_eq!(app.count_governance_rows(&cleared).await, 2);
    // Each says which erasure cleared and closed it.
    for cleared in [id, pending] {
        let read: Value =
            app.get(&format!("/v1/governance/subject-requests/{cleared}"), &key).await.json().await.unwrap();
        assert_eq!((&read["status"], &read["erasedBy"]), (&json!("completed"), &erasure["id"]), "{read}");
    }
    let untouched: Value = app
        .get(&format!("/v1/governance/subject-requests/{}", erasure["id"].as_str().unwrap()), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(untouched["erasedBy"], "", "{untouched}");
    let completion = format!("/v1/governance/subject-requests/{pending}/completion");
    assert_problem(app.post(&completion, &key, &json!({"resolution": "address of Maria is …"})).await, 409).await;
    // Closed by the erasure, it is audited as completed, naming the erasure.
    let closing = |entry: &Value| {
        let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap_or("{}")).unwrap_or_default();
        (leaf["action"] == "governance.CompleteSubjectRequest"
            && leaf["subject"] == format!("subject-request:{pending}"))
        .then_some(leaf)
    };
    let entries = app.audit_entries_once(&key, |entries| entries.iter().any(|entry| closing(entry).is_some())).await;
    let closed = entries.iter().find_map(closing).unwrap();
    assert_eq!(closed["details"]["erasureRequestId"], erasure["id"], "{closed}");

    // Art. 20: a review of the automated decision, by its audit entry.
    let index = decision_index(&app, &key).await;
    let review = app
        .post("/v1/governance/reviews", &key, &json!({"auditIndex": index, "reason": "the patient contests the score"}))
        .await;
    assert_eq!(review.status(), 200);
    let review: Value = review.json().await.unwrap();
    assert_eq!((review["status"].as_str(), review["action"].as_str()), (Some("pending"), Some("health.AssessRisk")));
    assert_problem(app.post("/v1/governance/reviews", &key, &json!({"auditIndex": 9999, "reason": "x"})).await, 404)
        .await;
    let subject_entry = (0..20).find(|candidate| *candidate != index).expect("the log holds the requests' own entries");
    assert_problem(
        app.post("/v1/governance/reviews", &key, &json!({"auditIndex": subject_entry, "reason": "x"})).await,
        400,
    )
    .await;
    let missing = app.post("/v1/governance/reviews", &key, &json!({"reason": "which one?"})).await;
    assert_eq!(assert_problem(missing, 400).await["field"], "auditIndex");
    let again = app.post("/v1/governance/reviews", &key, &json!({"auditIndex": index, "reason": "once more"})).await;
    assert_problem(again, 409).await;
    // Or by the decision's own id, as its service answered it, once the decision is in the log.
    let by_id = json!({"decisionId": assessment["id"], "reason": "once more"});
    assert_problem(app.post("/v1/governance/reviews", &key, &by_id).await, 409).await;
    for reason in ["x".repeat(4001), "hidden\u{0}text".to_owned(), "abc\u{202e}fed".to_owned()] {
        let refused = app.post("/v1/governance/reviews", &key, &json!({"auditIndex": index, "reason": reason})).await;
        assert_eq!(assert_problem(refused, 400).await["field"], "reason");
    }
    let refused = app
        .post(
            "/v1/governance/subject-requests",
            &key,
            &json!({"cpf": CPF, "kind": "correction", "details": "y".repeat(4001)}),
        )
        .await;
    assert_eq!(assert_problem(refused, 400).await["field"], "details");
    for kind in ["access", "portability", "erasure"] {
        let body = json!({"cpf": CPF, "kind": kind, "details": "Sou Maria Silva"});
        let refused = app.post("/v1/governance/subject-requests", &key, &body).await;
        assert_eq!(assert_problem(refused, 400).await["field"], "details", "{kind}");
    }
    let pending: Value = app.get("/v1/governance/reviews?status=pending", &key).await.json().await.unwrap();
    assert_eq!(pending["reviews"].as_array().unwrap().len(), 1, "the refused reviews stored nothing");
    assert_eq!(pending["reviews"][0]["reason"], "the patient contests the score", "{pending}");
    // A reader of the queue without governance:review or governance:write sees no reasons.
    let queue: Value = app.get("/v1/governance/reviews?status=pending", &reader).await.json().await.unwrap();
    assert_eq!(queue["reviews"].as_array().unwrap().len(), 1, "{queue}");
    assert!(queue["reviews"][0]["reason"].as_str().is_none_or(str::is_empty), "{queue}");
    let path = format!("/v1/governance/reviews/{}/decision", review["id"].as_str().unwrap());
    for (body, field) in [(json!({"outcome": "amended"}), "note"), (json!({"outcome": ""}), "outcome")] {
        let refused = app.post(&path, &key, &body).await;
        assert_eq!(assert_problem(refused, 400).await["field"], field, "{body}");
    }
    let decided = app.post(&path, &key, &json!({"outcome": "overturned", "note": "reassessed by Dr. Lima"})).await;
    assert_eq!(decided.status(), 200);
    let decided: Value = decided.json().await.unwrap();
    assert_eq!((decided["status"].as_str(), decided["outcome"].as_str()), (Some("decided"), Some("overturned")));
    assert_problem(app.post(&path, &key, &json!({"outcome": "upheld"})).await, 409).await;
    assert_problem(app.post(&path, &key, &json!({"outcome": "maybe"})).await, 400).await;
    // One review read by its id, as the decision answered it; its texts only to whom the queue shows them,
    // and their read audited.
    let one = format!("/v1/governance/reviews/{}", review["id"].as_str().unwrap());
    let fetched: Value = app.get(&one, &key).await.json().await.unwrap();
    assert_eq!(fetched, decided);
    let fetched: Value = app.get(&one, &reader).await.json().await.unwrap();
    assert_eq!((&fetched["status"], &fetched["outcome"]), (&json!("decided"), &json!("overturned")), "{fetched}");
    assert!(fetched["note"].as_str().is_none_or(str::is_empty) && fetched["reason"].as_str().is_none_or(str::is_empty));
    let read = app.audited(&key, 1, |entry| entry["action"] == "governance.GetReview").await;
    assert_eq!(read.len(), 1, "only the read that showed the texts: {read:?}");
    assert_problem(app.get("/v1/governance/reviews/0190a5d1-0000-7000-8000-000000000000", &key).await, 404).await;
    assert_eq!(assert_problem(app.get("/v1/governance/reviews/nope", &key).await, 400).await["field"], "id");
    let pending: Value = app.get("/v1/governance/reviews?status=pending", &key).await.json().await.unwrap();
    assert_eq!(pending["reviews"].as_array().map_or(0, Vec::len), 0);
    // An evidence report counts a review as it stood at the period's end: decided after it, pending.
    let report: Value = app.get("/v1/governance/reports/lgpd?from=2026-01-01", &key).await.json().await.unwrap();
    assert_eq!(report["reviews"]["byOutcome"], json!({"overturned": 1}), "{report}");
    let later = app
        .execute_on_governance("UPDATE reviews SET decided_at = '2099-06-01T00:00:00.000000Z' WHERE status = 'decided'")
        .await;
    assert_eq!(later, 1);
    let report: Value = app.get("/v1/governance/reports/lgpd?from=2026-01-01", &key).await.json().await.unwrap();
    assert_eq!(report["reviews"]["byOutcome"], json!({"pending": 1}), "{report}");
    let report: Value =
        app.get("/v1/governance/reports/lgpd?from=2026-01-01&to=2099-12-31", &key).await.json().await.unwrap();
    assert_eq!(report["reviews"]["byOutcome"], json!({"overturned": 1}), "{report}");
    // Decided, the decision may be contested again, once, however many ask at the same moment.
    let body = json!({"auditIndex": index, "reason": "contested again"});
    let asks = futures_util::future::join_all((0..4).map(|_| app.post("/v1/governance/reviews", &key, &body))).await;
    let mut statuses: Vec<u16> = asks.iter().map(|response| response.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409, 409]);
    // The queue in pages of one, oldest first.
    let queue = pages(&app, &key, "/v1/governance/reviews", "reviews", 1).await;
    let reasons: Vec<&str> =
        queue.as_array().unwrap().iter().map(|review| review["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["the patient contests the score", "contested again"]);
    // With reviews held, an erasure says it keeps them, and why.
    let erasure = open(&app, &key, json!({"cpf": CPF, "kind": "erasure"})).await;
    let governance = outcome_of(&erasure, "ai-governance");
    assert_eq!(governance["retained"][0]["kind"], "reviews", "what it keeps, and why: {erasure}");

    let malformed = app.get("/v1/governance/subject-requests/not-a-uuid", &key).await;
    assert_eq!(assert_problem(malformed, 400).await["field"], "id");
    let malformed = app.post("/v1/governance/reviews/not-a-uuid/decision", &key, &json!({"outcome": "upheld"})).await;
    assert_eq!(assert_problem(malformed, 400).await["field"], "id");

    // Another tenant sees none of it, and a key without the scope cannot open requests.
    let other = app.create_tenant("Outra").await;
    let other_key = app.create_key(&other, &["governance:read"]).await;
    let theirs = app.get(&format!("/v1/governance/subject-requests/{id}"), &other_key).await;
    assert_problem(theirs, 404).await;
    let refused = app.post("/v1/governance/subject-requests", &other_key, &json!({"cpf": CPF, "kind": "access"})).await;
    assert_problem(refused, 403).await;
    app.stop().await;
}

/// Every item of the list at `path` (under `items`), read in pages of `size` by following
/// `nextPageToken`.
async fn pages(app: &TestApp, key: &str, path: &str, items: &str, size: usize) -> Value {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page: Value =
            app.get(&format!("{path}?pageSize={size}&pageToken={token}"), key).await.json().await.unwrap();
        let listed = page[items].as_array().cloned().unwrap_or_default();
        assert!(listed.len() <= size, "{page}");
        all.extend(listed);
        match page["nextPageToken"].as_str().filter(|token| !token.is_empty()) {
            Some(next) => token = next.to_owned(),
            None => return Value::Array(all),
        }
        assert!(all.len() < 1000, "the pages do not end");
    }
}

#[tokio::test]
async fn access_erasure_and_reviews_on_sqlite() {
    access_erasure_and_reviews(Backend::Sqlite).await;
}

#[tokio::test]
async fn access_erasure_and_reviews_on_postgres() {
    access_erasure_and_reviews(Backend::Postgres).await;
}

/// Bundles, corrections' details and resolutions are the subject's personal data: ai-governance
/// keeps them sealed with the tenant's data key, each bound to its request and column. Values an
/// earlier version stored in clear still read, and a sealed bundle copied onto another request does
/// not open there: a 500, never an empty bundle.
async fn sealed_at_rest(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let tenant = app.create_tenant_on("Hospital Sigilo", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    app.create_patient(&key).await;
    let access = open(&app, &key, json!({"cpf": CPF, "kind": "access"})).await;
    let portability = open(&app, &key, json!({"cpf": CPF, "kind": "portability"})).await;
    let details = "Maria Silva: the birth date is 1980-03-01";
    let correction = open(&app, &key, json!({"cpf": CPF, "kind": "correction", "details": details})).await;
    let (access, portability, correction) =
        (access["id"].as_str().unwrap(), portability["id"].as_str().unwrap(), correction["id"].as_str().unwrap());
    let resolution = "Maria Silva's birth date corrected in healthquantum";
    let completion = format!("/v1/governance/subject-requests/{correction}/completion");
    assert_eq!(app.post(&completion, &key, &json!({"resolution": resolution})).await.status(), 200);
    // A review's reason and note may name the person too.
    let patient = app.create_patient(&key).await;
    let body = breast_cancer_assessment();
    assert_eq!(app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await.status(), 200);
    let index = decision_index(&app, &key).await;
    let reason = "Maria Silva contests the score";
    let review = app.post("/v1/governance/reviews", &key, &json!({"auditIndex": index, "reason": reason})).await;
    let review: Value = review.json().await.unwrap();
    let decision = format!("/v1/governance/reviews/{}/decision", review["id"].as_str().unwrap());
    let note = "Maria Silva's score reassessed by Dr. Lima";
    let decided: Value =
        app.post(&decision, &key, &json!({"outcome": "amended", "note": note})).await.json().await.unwrap();
    assert_eq!((decided["reason"].as_str(), decided["note"].as_str()), (Some(reason), Some(note)), "{decided}");

    // The database holds none of it in clear.
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&app.governance_database_url).await.unwrap();
    let rows =
        sqlx::query("SELECT export, details, resolution FROM subject_requests").fetch_all(&mut raw).await.unwrap();
    assert_eq!(rows.len(), 3);
    let mut sealed = 0;
    for row in &rows {
        let columns: Vec<String> = ["export", "details", "resolution"]
            .iter()
            .map(|column| row.try_get::<Option<String>, _>(*column).unwrap().unwrap_or_default())
            .collect();
        let all = columns.join("|");
        for secret in ["Maria", "52998224725", "529.982.247-25", "1980-02-29", "1980-03-01", "healthquantum"] {
            assert!(!all.contains(secret), "{secret:?} is stored in clear: {all}");
        }
        for column in columns.iter().filter(|column| !column.is_empty()) {
            assert!(column.starts_with("v1:"), "sealed: {column}");
            sealed += 1;
        }
    }
    assert_eq!(sealed, 4, "two bundles, a correction's details and its resolution");
    // The digests that tie requests to their subject cannot be tested against CPFs with what the
    // database holds: not a hash of the request id and the CPF, with or without its secret.
    let secret: String =
        sqlx::query_scalar("SELECT secret FROM subject_lock_key").fetch_one(&mut raw).await.unwrap_or_default();
    let digests = sqlx::query("SELECT id, subject_digest FROM subject_requests WHERE subject_digest IS NOT NULL")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    assert!(!digests.is_empty(), "the bundles and the correction carry digests");
    for row in &digests {
        let (id, digest): (String, String) = (row.try_get("id").unwrap(), row.try_get("subject_digest").unwrap());
        for guess in [format!("{secret}:{id}:52998224725"), format!("{id}:52998224725")] {
            assert_ne!(digest, hex::encode(Sha256::digest(guess.as_bytes())), "request {id}");
        }
    }
    let reviews = sqlx::query("SELECT reason, note FROM reviews").fetch_all(&mut raw).await.unwrap();
    assert_eq!(reviews.len(), 1);
    for column in ["reason", "note"] {
        let value: String = reviews[0].try_get(column).unwrap();
        assert!(value.starts_with("v1:") && !value.contains("Maria"), "{column} stored in clear: {value}");
    }
    raw.close().await.unwrap();

    // Through the API, they read as they were written.
    let bundle = export(&app, &key, access).await;
    assert_eq!(bundle["services"]["healthquantum"]["patients"][0]["name"], "Maria Silva", "{bundle}");
    let path = format!("/v1/governance/subject-requests/{correction}");
    let fetched: Value = app.get(&path, &key).await.json().await.unwrap();
    assert_eq!((fetched["details"].as_str(), fetched["resolution"].as_str()), (Some(details), Some(resolution)));
    let listed: Value = app.get("/v1/governance/subject-requests", &key).await.json().await.unwrap();
    let shown = listed["requests"].as_array().unwrap().iter().find(|request| request["id"] == correction).unwrap();
    assert_eq!(shown["details"], details, "listed: {shown}");
    let listed: Value = app.get("/v1/governance/reviews", &key).await.json().await.unwrap();
    assert_eq!(
        (listed["reviews"][0]["reason"].as_str(), listed["reviews"][0]["note"].as_str()),
        (Some(reason), Some(note))
    );

    // A sealed bundle copied onto another request is refused there, not served or emptied.
    let copied = app
        .execute_on_governance(&format!(
            "UPDATE subject_requests SET export = (SELECT export FROM subject_requests WHERE id = '{access}') \
             WHERE id = '{portability}'"
        ))
        .await;
    assert_eq!(copied, 1);
    let response = app.get(&format!("/v1/governance/subject-requests/{portability}/export"), &key).await;
    assert_problem(response, 500).await;

    // Values an earlier version stored in clear read as they are, even text that starts like a
    // sealed value; an erasure still finds a bundle kept before digests by the CPF it holds.
    let legacy = r#"{"requestId":"earlier","services":{"healthquantum":{"patients":[{"cpf":"52998224725"}]}}}"#;
    let rewritten = app
        .execute_on_governance(&format!(
            "UPDATE subject_requests SET export = '{legacy}', subject_digest = NULL WHERE id = '{portability}'"
        ))
        .await;
    assert_eq!(rewritten, 1);
    assert_eq!(export(&app, &key, portability).await, serde_json::from_str::<Value>(legacy).unwrap());
    let clear_details = "v1: the street is Rua A";
    let rewritten = app
        .execute_on_governance(&format!(
            "UPDATE subject_requests SET details = '{clear_details}', resolution = 'fixed' WHERE id = '{correction}'"
        ))
        .await;
    assert_eq!(rewritten, 1);
    let fetched: Value = app.get(&path, &key).await.json().await.unwrap();
    assert_eq!((fetched["details"].as_str(), fetched["resolution"].as_str()), (Some(clear_details), Some("fixed")));
    let rewritten = app.execute_on_governance("UPDATE reviews SET reason = 'asked in clear', note = 'noted'").await;
    assert_eq!(rewritten, 1);
    let listed: Value = app.get("/v1/governance/reviews", &key).await.json().await.unwrap();
    let shown = (listed["reviews"][0]["reason"].as_str(), listed["reviews"][0]["note"].as_str());
    assert_eq!(shown, (Some("asked in clear"), Some("noted")));

    // After its next start, ai-governance seals what it finds in clear, and it reads the same.
    app.restart().await;
    let in_clear = "subject_requests WHERE export LIKE '{%' OR details LIKE 'v1: %' OR resolution = 'fixed'";
    let reviews_in_clear = "reviews WHERE reason = 'asked in clear' OR note = 'noted'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.count_governance_rows(in_clear).await + app.count_governance_rows(reviews_in_clear).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "values in clear not sealed after a start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(export(&app, &key, portability).await, serde_json::from_str::<Value>(legacy).unwrap());
    let fetched: Value = app.get(&path, &key).await.json().await.unwrap();
    assert_eq!((fetched["details"].as_str(), fetched["resolution"].as_str()), (Some(clear_details), Some("fixed")));
    let listed: Value = app.get("/v1/governance/reviews", &key).await.json().await.unwrap();
    let shown = (listed["reviews"][0]["reason"].as_str(), listed["reviews"][0]["note"].as_str());
    assert_eq!(shown, (Some("asked in clear"), Some("noted")));

    // A review's reason that does not open fails its reading, not the reports that count reviews.
    let moved = app
        .execute_on_governance(&format!(
            "UPDATE reviews SET reason = (SELECT export FROM subject_requests WHERE id = '{access}')"
        ))
        .await;
    assert_eq!(moved, 1);
    assert_problem(app.get("/v1/governance/reviews", &key).await, 500).await;
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let report = app.get(&format!("/v1/governance/reports/lgpd?from=2026-01-01&to={today}"), &key).await;
    assert_eq!(report.status(), 200);
    let report: Value = report.json().await.unwrap();
    assert_eq!(report["reviews"]["total"], 1, "{report}");

    // A bundle kept without a digest that does not open may be the subject's: the erasure clears
    // the others, keeps it, and says it is not done.
    let broken = app
        .execute_on_governance(&format!(
            "UPDATE subject_requests SET subject_digest = NULL, \
             export = (SELECT export FROM subject_requests WHERE id = '{portability}') WHERE id = '{access}'"
        ))
        .await;
    assert_eq!(broken, 1);
    let erasure = open(&app, &key, json!({"cpf": CPF, "kind": "erasure"})).await;
    let governance = outcome_of(&erasure, "ai-governance");
    assert_eq!((governance["status"].as_str(), records(governance)), (Some("failed"), 2), "{erasure}");
    assert!(governance["error"].as_str().unwrap().contains("1 earlier requests' bundles do not open"), "{erasure}");
    let left = "subject_requests WHERE export IS NOT NULL OR details <> '' OR resolution IS NOT NULL";
    assert_eq!(app.count_governance_rows(left).await, 1, "the bundle that does not open");
    app.stop().await;
}

#[tokio::test]
async fn bundles_corrections_and_reviews_are_sealed_at_rest_and_those_stored_in_clear_before_still_read_on_sqlite() {
    sealed_at_rest(Backend::Sqlite).await;
}

#[tokio::test]
async fn bundles_corrections_and_reviews_are_sealed_at_rest_and_those_stored_in_clear_before_still_read_on_postgres() {
    sealed_at_rest(Backend::Postgres).await;
}

/// Row-level security is the second lock behind the query filters in each service's PostgreSQL
/// database: every table with a `tenant_id` column is under a policy, and a transaction acting for
/// one tenant, with a query that forgets its filter, reads and changes that tenant's rows only.
#[tokio::test]
async fn row_level_security_holds_every_tenant_table_of_every_service() {
    let app = spawn_app(Backend::Postgres).await;
    let mut tenants = Vec::new();
    for name in ["Hospital Norte", "Hospital Sul"] {
        let tenant = app.create_tenant_on(name, "enterprise").await;
        let key = app.create_key(&tenant, SCOPES).await;
        let patient = app.create_patient(&key).await;
        let body = breast_cancer_assessment();
        let response = app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await;
        assert_eq!(response.status(), 200);
        open(&app, &key, json!({"cpf": CPF, "kind": "access"})).await;
        let index = decision_index(&app, &key).await;
        let review =
            app.post("/v1/governance/reviews", &key, &json!({"auditIndex": index, "reason": "contested"})).await;
        assert_eq!(review.status(), 200);
        tenants.push(tenant);
    }

    for (service, url) in [
        ("ai-governance", &app.governance_database_url),
        ("healthquantum", &app.health_database_url),
        ("finquantum", &app.fin_database_url),
    ] {
        let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
        let tables: Vec<(String, bool)> = sqlx::query_as(
            "SELECT c.relname::text, c.relrowsecurity AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped \
             WHERE c.relkind = 'r' AND n.nspname = current_schema() ORDER BY 1",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        assert!(!tables.is_empty(), "{service} has tenant tables");
        let unguarded: Vec<&str> =
            tables.iter().filter(|(_, guarded)| !guarded).map(|(name, _)| name.as_str()).collect();
        assert!(unguarded.is_empty(), "{service}'s tables without row-level security: {unguarded:?}");
        let mut others_seen = 0;
        for (table, _) in &tables {
            let all: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut connection)
                .await
                .unwrap();
            for tenant in &tenants {
                let own = rows_where(&mut connection, table, "tenant_id = $1", tenant).await;
                others_seen += all - own;
                let mut transaction = aigronova_e2e::acting_for(&mut connection, tenant).await;
                // No tenant filter: the policy is all that stands between this query and the other tenant.
                let seen = rows_where(&mut transaction, table, "$1 <> ''", tenant).await;
                // The services may still be writing the tenant's rows (its audit events arriving):
                // what it sees lies between its own rows before and after, never beyond; and none of
                // another tenant's.
                let own_after = rows_where(&mut transaction, table, "tenant_id = $1", tenant).await;
                assert!(own <= seen && seen <= own_after, "{service}.{table} as tenant {tenant}: {seen} of {own}");
                let others = rows_where(&mut transaction, table, "tenant_id IS DISTINCT FROM $1", tenant).await;
                assert_eq!(others, 0, "{service}.{table} as tenant {tenant}: another tenant's rows");
                let changed = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id <> $1"
                )))
                .bind(tenant)
                .execute(&mut *transaction)
                .await
                .unwrap();
                assert_eq!(changed.rows_affected(), 0, "{service}.{table}: no write reaches another tenant's rows");
                transaction.rollback().await.unwrap();
            }
        }
        if service != "finquantum" {
            assert!(others_seen > 0, "{service} holds rows of both tenants, so that hiding them is shown");
        }
        connection.close().await.unwrap();
    }
    app.stop().await;
}

/// How many rows of `table` meet `condition`, which reads `tenant` as `$1`.
async fn rows_where(connection: &mut sqlx::PgConnection, table: &str, condition: &str, tenant: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table} WHERE {condition}")))
        .bind(tenant)
        .fetch_one(connection)
        .await
        .unwrap()
}

/// The actions of the tenant's audit log entries, as the API lists them.
async fn logged_actions(app: &TestApp, key: &str) -> Vec<Value> {
    let page: Value = app.get("/v1/governance/audit/entries?pageSize=1000", key).await.json().await.unwrap();
    page["entries"].as_array().cloned().unwrap_or_default()
}

/// What people wrote about a subject (a correction's details, a review's reason) is audited each
/// time a reader is shown it; a correction, erased, still has no export, and a checkpoint past the
/// log says how long the log is.
#[tokio::test]
async fn reads_of_what_people_wrote_are_audited_and_refusals_say_why() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Hospital Leituras", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let correction = open(&app, &key, json!({"cpf": CPF, "kind": "correction", "details": "Telefone errado"})).await;
    let id = correction["id"].as_str().unwrap();
    let read: Value = app.get(&format!("/v1/governance/subject-requests/{id}"), &key).await.json().await.unwrap();
    assert_eq!(read["details"], "Telefone errado");
    let listed: Value = app.get("/v1/governance/subject-requests", &key).await.json().await.unwrap();
    assert_eq!(listed["requests"][0]["details"], "Telefone errado", "{listed}");
    // A reader without governance:write sees no details, and nothing is audited of its read.
    let reader = app.create_key(&tenant, &["governance:read"]).await;
    let before = logged_actions(&app, &key).await.len();
    let hidden: Value = app.get(&format!("/v1/governance/subject-requests/{id}"), &reader).await.json().await.unwrap();
    assert!(hidden["details"].as_str().is_none_or(str::is_empty), "{hidden}");
    let entries = logged_actions(&app, &key).await;
    assert_eq!(entries.len(), before, "a read that showed nothing written is not audited");
    for (action, field) in
        [("governance.GetSubjectRequest", "subjectRequestIds"), ("governance.ListSubjectRequests", "subjectRequestIds")]
    {
        let entry = entries.iter().find(|entry| entry["action"] == action).unwrap_or_else(|| panic!("{action}"));
        let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap();
        assert_eq!((leaf["kind"].as_str(), &leaf["details"][field]), (Some("sensitive_read"), &json!([id])), "{leaf}");
    }

    let patient = app.create_patient(&key).await;
    let body = breast_cancer_assessment();
    assert_eq!(app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await.status(), 200);
    let index = decision_index(&app, &key).await;
    let review = app.post("/v1/governance/reviews", &key, &json!({"auditIndex": index, "reason": "contested"})).await;
    let review: Value = review.json().await.unwrap();
    let reviewer = app.create_key(&tenant, &["governance:read", "governance:review"]).await;
    let queue: Value = app.get("/v1/governance/reviews", &reviewer).await.json().await.unwrap();
    assert_eq!(queue["reviews"][0]["reason"], "contested", "{queue}");
    let entries = logged_actions(&app, &key).await;
    let entry = entries.iter().find(|entry| entry["action"] == "governance.ListReviews").expect("the queue's read");
    let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap();
    assert_eq!(leaf["details"]["reviewIds"], json!([review["id"]]), "{leaf}");

    // Erased, the correction's details go; it never had an export, and is told so.
    let erasure = open(&app, &key, json!({"cpf": CPF, "kind": "erasure"})).await;
    assert_eq!(erasure["status"], "completed", "{erasure}");
    let governance = outcome_of(&erasure, "ai-governance");
    assert!(governance["retained"][0]["reason"].as_str().unwrap().contains("if any"), "{erasure}");
    let problem =
        assert_problem(app.get(&format!("/v1/governance/subject-requests/{id}/export"), &key).await, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains("only access and portability requests have one"), "{problem}");

    let size = logged_actions(&app, &key).await.len();
    let path = format!("/v1/governance/audit/checkpoint?treeSize={}", size + 1_000);
    let problem = assert_problem(app.get(&path, &key).await, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains("the log holds"), "{problem}");
    app.stop().await;
}

/// A bundle that some service could not answer for says which, rather than look whole.
#[tokio::test]
async fn a_bundle_some_service_could_not_answer_for_names_it() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.ai_governance.data_subject_services.insert("ghost".into(), "http://127.0.0.1:9".into());
    })
    .await;
    let tenant = app.create_tenant("Clínica Parcial").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let access = open(&app, &key, json!({"cpf": CPF, "kind": "access"})).await;
    assert_eq!(access["status"], "failed", "{access}");
    // When it failed is kept, for reports of periods that ended before then.
    assert_eq!(
        app.count_governance_rows("subject_requests WHERE status = 'failed' AND failed_at IS NOT NULL").await,
        1
    );
    let bundle = export(&app, &key, access["id"].as_str().unwrap()).await;
    assert_eq!(bundle["missingServices"], json!(["ghost"]), "{bundle}");
    assert!(bundle["services"].get("ghost").is_none() && bundle["services"].get("healthquantum").is_some(), "{bundle}");
    app.stop().await;
}

/// A service that takes a connection and never answers does not hold a request past the time its
/// caller gives: the others are asked at the same time, and the request is answered, `failed`
/// for that service, before the gateway's deadline for ai-governance passes.
#[tokio::test]
async fn a_service_that_never_answers_fails_its_part_of_a_request_within_the_callers_time() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.ai_governance.data_subject_services.insert("silent".into(), format!("http://{address}"));
        config.gateway.upstream_timeouts.insert("ai-governance".into(), 4.0);
    })
    .await;
    let tenant = app.create_tenant("Clínica Paciente").await;
    let key = app.create_key(&tenant, SCOPES).await;
    for kind in ["access", "erasure"] {
        // A 200, not the gateway's 504.
        let request = open(&app, &key, json!({"cpf": CPF, "kind": kind})).await;
        assert_eq!(request["status"], "failed", "{request}");
        let silent = outcome_of(&request, "silent");
        assert_eq!(silent["status"], "failed", "{request}");
        assert!(silent["error"].as_str().unwrap().contains("did not answer within the time"), "{request}");
        let health = outcome_of(&request, "healthquantum");
        assert_ne!(health["status"], "failed", "the others answered meanwhile: {request}");
    }
    // Two requests about one subject at once: the second waits for the first's locks, which hold
    // for the first's whole wait for the silent service, and is left no time to ask the services:
    // refused before anything is recorded, rather than stored failed for services it never asked.
    let before = app.count_governance_rows("subject_requests").await;
    let body = json!({"cpf": CPF, "kind": "access"});
    let (first, second) = tokio::join!(
        app.post("/v1/governance/subject-requests", &key, &body),
        app.post("/v1/governance/subject-requests", &key, &body)
    );
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    let refused = if first.status() == 409 { first } else { second };
    let problem = assert_problem(refused, 409).await;
    assert!(problem["detail"].as_str().unwrap().contains("nothing was recorded"), "{problem}");
    assert_eq!(app.count_governance_rows("subject_requests").await, before + 1);
    held.abort();
    app.stop().await;
}

/// A request a stop of ai-governance cut short while it asked the services (recorded `running`,
/// as it is from before the first service is asked) is marked failed at the next start, keeps its
/// deadline, and is audited; one asked for now runs to its end as before.
async fn a_request_cut_short_by_a_stop_is_marked_failed_at_the_next_start(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let tenant = app.create_tenant("Clínica Interrompida").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let access = open(&app, &key, json!({"cpf": "111.444.777-35", "kind": "access"})).await;
    let erasure = open(&app, &key, json!({"cpf": CPF, "kind": "erasure"})).await;
    assert_eq!(erasure["status"], "completed", "{erasure}");
    let id = erasure["id"].as_str().unwrap();
    // As a stop while the services were asked leaves them: recorded, not yet stored.
    let long_ago = aigronova_platform::time::stored(chrono::Utc::now() - chrono::Duration::minutes(20));
    for cut in [id, access["id"].as_str().unwrap()] {
        let sql = format!(
            "UPDATE subject_requests SET status = 'running', outcomes = '[]', completed_at = NULL, export = NULL, \
             subject_digest = NULL, created_at = '{long_ago}' WHERE id = '{cut}'"
        );
        assert_eq!(app.execute_on_governance(&sql).await, 1);
    }
    app.restart().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let request = loop {
        let request: Value =
            app.get(&format!("/v1/governance/subject-requests/{id}"), &key).await.json().await.unwrap();
        if request["status"] != "running" {
            break request;
        }
        assert!(tokio::time::Instant::now() < deadline, "still running: {request}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(request["status"], "failed", "{request}");
    assert_eq!(request["deadline"], erasure["deadline"], "{request}");
    let outcome = &request["outcomes"][0];
    assert_eq!(outcome["service"], "ai-governance", "{request}");
    assert!(outcome["error"].as_str().unwrap().contains("cut short"), "{request}");
    let subject = format!("subject-request:{id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entries = logged_actions(&app, &key).await;
        let interrupted = entries.iter().any(|entry| {
            entry["action"] == "governance.CreateSubjectRequest"
                && entry["leaf"].as_str().is_some_and(|leaf| leaf.contains(&subject) && leaf.contains("interrupted"))
        });
        if interrupted {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no audit entry for the interrupted request");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = open(&app, &key, json!({"cpf": CPF, "kind": "erasure"})).await;
    assert_eq!(again["status"], "completed", "{again}");
    // An access request cut short has no bundle, and its export says why.
    let path = format!("/v1/governance/subject-requests/{}/export", access["id"].as_str().unwrap());
    let problem = assert_problem(app.get(&path, &key).await, 404).await;
    let shown: Value = app
        .get(&format!("/v1/governance/subject-requests/{}", access["id"].as_str().unwrap()), &key)
        .await
        .json()
        .await
        .unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("none was made"), "{problem} {shown}");
    app.stop().await;
}

#[tokio::test]
async fn a_request_cut_short_by_a_stop_is_marked_failed_at_the_next_start_on_sqlite() {
    a_request_cut_short_by_a_stop_is_marked_failed_at_the_next_start(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_request_cut_short_by_a_stop_is_marked_failed_at_the_next_start_on_postgres() {
    a_request_cut_short_by_a_stop_is_marked_failed_at_the_next_start(Backend::Postgres).await;
}
