//! The walking skeleton's path: tenant, key, patient, risk assessment, checked against the
//! Python reference on held-out rows.

use aigronova_e2e::{Backend, models_dir, spawn_app, spawn_gateway};
use serde_json::{Value, json};

fn reference_rows() -> Vec<Value> {
    let path = models_dir().join("breast-cancer/1/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("reference.json")).unwrap();
    reference["rows"].as_array().expect("rows").clone()
}

async fn scores_match_the_python_reference(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;

    let response = app.get(&format!("/v1/health/patients/{patient}"), &key).await;
    assert_eq!(response.status(), 200);
    let fetched: Value = response.json().await.unwrap();
    assert_eq!(fetched["id"], patient);
    assert_eq!(fetched["name"], "Maria Silva");
    assert_eq!(fetched["birthDate"], "1980-02-29");

    let rows = reference_rows();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let body = json!({"model": "breast-cancer", "features": row["features"]});
        let response = app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await;
        assert_eq!(response.status(), 200);
        let assessment: Value = response.json().await.unwrap();
        let expected = row["probability"].as_f64().unwrap();
        let actual = assessment["probability"].as_f64().expect("probability");
        assert!((actual - expected).abs() < 1e-5, "probability {actual} differs from the reference {expected}");
        assert_eq!(assessment["model"], "breast-cancer");
        assert_eq!(assessment["modelVersion"], "1");
        assert_eq!(assessment["patientId"], patient);
        let band = if expected < 0.2 {
            "low"
        } else if expected < 0.5 {
            "moderate"
        } else {
            "high"
        };
        assert_eq!(assessment["riskBand"], band);
        assert!(assessment["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(assessment["value"], assessment["probability"]);
        assert_eq!(assessment["topFeatures"].as_array().map(Vec::len), Some(5), "{assessment}");
    }
    // Every feature at its training mean: none moved the output, and none is named; one moved off
    // it is the only one.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(models_dir().join("breast-cancer/1/manifest.json")).unwrap())
            .unwrap();
    let mut means: serde_json::Map<String, Value> = manifest["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|feature| (feature["name"].as_str().unwrap().to_owned(), feature["training_mean"].clone()))
        .collect();
    let path = format!("/v1/health/patients/{patient}/assessments");
    let average: Value =
        app.post(&path, &key, &json!({"model": "breast-cancer", "features": means})).await.json().await.unwrap();
    assert_eq!(average["topFeatures"], json!([]), "{average}");
    means.insert("worst area".into(), json!(2500.0));
    let moved: Value =
        app.post(&path, &key, &json!({"model": "breast-cancer", "features": means})).await.json().await.unwrap();
    let named: Vec<&str> =
        moved["topFeatures"].as_array().unwrap().iter().map(|f| f["feature"].as_str().unwrap()).collect();
    assert_eq!(named, ["worst area"], "{moved}");
    assert_eq!(app.count_health_rows("assessments").await, 5);
    app.stop().await;
}

#[tokio::test]
async fn scores_match_the_python_reference_on_sqlite() {
    scores_match_the_python_reference(Backend::Sqlite).await;
}

#[tokio::test]
async fn scores_match_the_python_reference_on_postgres() {
    scores_match_the_python_reference(Backend::Postgres).await;
}

#[tokio::test]
async fn snake_case_field_names_are_accepted_too() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let response = app
        .post("/v1/health/patients", &key, &json!({"name": "João", "cpf": "52998224725", "birth_date": "1975-12-01"}))
        .await;
    assert_eq!(response.status(), 200);
    let patient: Value = response.json().await.unwrap();
    assert_eq!(patient["birthDate"], "1975-12-01");
    assert_eq!(patient["cpf"], "52998224725");
    app.stop().await;
}

#[tokio::test]
async fn probes_answer_without_a_key() {
    let app = spawn_app(Backend::Sqlite).await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["upstreams"]["healthquantum"], true);

    // An upstream that is down is reported, and leaves the gateway ready: its routes answer 503,
    // the other services' do not depend on it.
    let alone = spawn_gateway("http://127.0.0.1:1", |_| {}).await;
    let ready = alone.client.get(alone.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["upstreams"]["healthquantum"], false, "{body}");
    alone.stop().await;

    // One that takes connections and answers nothing is down too, said within the check's
    // deadline (a second) rather than holding the probe for as long as it stays silent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let stalled = spawn_gateway(&silent_url, |_| {}).await;
    let probe = stalled.client.get(stalled.url("/readyz")).timeout(std::time::Duration::from_secs(5));
    let ready = probe.send().await.expect("/readyz answers while an upstream stays silent");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["upstreams"]["healthquantum"], false, "{body}");
    stalled.stop().await;
    held.abort();

    // A gateway whose internal key no service takes would have every call refused: it is not
    // ready, though the services are up.
    let foreign = spawn_gateway(app.upstream_url("healthquantum"), |_| {}).await;
    let ready = foreign.client.get(foreign.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["upstreams"]["healthquantum"], false, "{body}");
    foreign.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_request_id_is_returned_and_reused_when_sane() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    // Markup, an e-mail address, credentials and CPFs are not ids (the access log writes ids): one
    // is generated instead.
    let key = format!("agk_{}", "0".repeat(64));
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYXJpYSJ9.c2ln";
    let cpfs = [
        "529.982.247-25",
        "52998224725",
        "req-52998224725",
        "529-982-247/25",
        "529_982_247_25",
        "529982247.25",
        "00052998224725",
    ];
    // A key in any case, or its secret alone: more hexadecimal digits in a row than a trace id has.
    let secret = "ee765ba3".repeat(8);
    let (shouted, bare) = (format!("AGK_{secret}"), format!("req-{secret}"));
    let keys = [key.as_str(), &format!("req:{key}"), &shouted, &bare];
    // Phone numbers: a Brazilian mobile one, with or without its country code, or any after a `+`.
    let phones = ["tel+5511912345678", "11912345678", "req-55-11-91234-5678", "+551132345678", "+14155552671"];
    for given in ["<script>", "maria@example.com", jwt].into_iter().chain(keys).chain(cpfs).chain(phones) {
        let response = app.client.get(app.url("/healthz")).header("x-request-id", given).send().await.unwrap();
        let generated = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(generated).is_ok(), "{given}: {generated}");
    }
    // A trace id, 32 hexadecimal digits, a UUID and times in seconds or milliseconds are ids.
    for given in
        ["4bf92f3577b34da6a3ce929d0e0e4736", "0f8fad5b-d9cb-469f-a165-70867728950e", "req-1764576000", "1764576000123"]
    {
        let response = app.client.get(app.url("/healthz")).header("x-request-id", given).send().await.unwrap();
        assert_eq!(response.headers()["x-request-id"], given);
    }
    // Two ids are none: one is generated, and neither given one comes back.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "first-1")
        .header("x-request-id", "second-2")
        .send()
        .await
        .unwrap();
    let ids: Vec<&str> = response.headers().get_all("x-request-id").iter().map(|id| id.to_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(uuid::Uuid::parse_str(ids[0]).is_ok(), "{ids:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_model_cards_say_what_each_model_is_and_where_its_data_came_from() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let response = app.get("/v1/health/models", &key).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let card = &body["models"][0];
    assert_eq!(card["name"], "breast-cancer");
    assert_eq!(card["version"], "1");
    assert_eq!(card["positiveClass"], "malignant");
    assert_eq!(card["features"].as_array().unwrap().len(), 30);
    assert_eq!(card["trainingData"]["synthetic"], false);
    assert!(card["trainingData"]["licence"].as_str().unwrap().contains("CC BY 4.0"));
    assert!(card["metrics"]["heldout_auc"].as_f64().unwrap() > 0.9);
    app.stop().await;
}

async fn diabetes_progression_matches_the_python_reference(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    let path = models_dir().join("diabetes-progression/1/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("reference.json")).unwrap();
    let rows = reference["rows"].as_array().expect("rows");
    assert!(rows.len() >= 3);
    let names = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"];
    for row in rows {
        let body = json!({"model": "diabetes-progression", "features": row["features"]});
        let response = app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await;
        assert_eq!(response.status(), 200);
        let assessment: Value = response.json().await.unwrap();
        let expected = row["value"].as_f64().unwrap();
        let actual = assessment["value"].as_f64().expect("value");
        assert!((actual - expected).abs() < 1e-5, "value {actual} differs from the reference {expected}");
        assert!(assessment.get("probability").is_none(), "a regressor has no probability: {assessment}");
        let band = if expected < 100.0 {
            "low"
        } else if expected < 200.0 {
            "moderate"
        } else {
            "high"
        };
        assert_eq!(assessment["riskBand"], band);
        assert_eq!(assessment["modelVersion"], "1");
        let top = assessment["topFeatures"].as_array().expect("topFeatures");
        assert_eq!(top.len(), 5);
        let sizes: Vec<f64> = top.iter().map(|t| t["contribution"].as_f64().unwrap_or(0.0).abs()).collect();
        assert!(sizes.windows(2).all(|pair| pair[0] >= pair[1]), "largest first: {top:?}");
        assert!(top.iter().all(|t| names.contains(&t["feature"].as_str().unwrap())));
        // The same input gives the same reasons.
        let again: Value =
            app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await.json().await.unwrap();
        assert_eq!(again["topFeatures"], assessment["topFeatures"]);
        // The inputs scored are stored, and read back with the assessment.
        let id = assessment["id"].as_str().unwrap();
        let read: Value =
            app.get(&format!("/v1/health/patients/{patient}/assessments/{id}"), &key).await.json().await.unwrap();
        assert_eq!(read["features"], body["features"], "{read}");
        assert_eq!(assessment["features"], body["features"], "{assessment}");
    }
    app.stop().await;
}

#[tokio::test]
async fn diabetes_progression_matches_the_python_reference_on_sqlite() {
    diabetes_progression_matches_the_python_reference(Backend::Sqlite).await;
}

#[tokio::test]
async fn diabetes_progression_matches_the_python_reference_on_postgres() {
    diabetes_progression_matches_the_python_reference(Backend::Postgres).await;
}
