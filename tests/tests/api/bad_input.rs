//! Bad input through the gateway: each is a problem document with the right status, and
//! nothing is written.

use aigronova_e2e::{Backend, TestApp, assert_problem, models_dir, spawn_app};
use serde_json::{Value, json};

fn reference_features() -> serde_json::Map<String, Value> {
    let path = models_dir().join("breast-cancer/1/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    reference["rows"][0]["features"].as_object().unwrap().clone()
}

async fn app_with_patient(backend: Backend) -> (TestApp, String, String) {
    let app = spawn_app(backend).await;
    let (_, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    (app, key, patient)
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let problem = assert_problem(app.get("/v1/health/nothing-here", &key).await, 404).await;
    // The path is the problem's instance, and is not repeated in its detail.
    assert_eq!(problem["instance"], "/v1/health/nothing-here");
    assert!(!problem["detail"].as_str().unwrap().contains("nothing-here"), "{problem}");
    assert_problem(app.get("/v2/anything", &key).await, 404).await;
    assert_problem(app.get("//v1/health/patients", &key).await, 404).await;
    let response = app.client.delete(app.url("/v1/health/patients")).bearer_auth(&key).send().await.unwrap();
    let mut allowed: Vec<String> =
        response.headers()["allow"].to_str().unwrap().split(',').map(|method| method.trim().to_owned()).collect();
    allowed.sort();
    assert_eq!(allowed, ["GET", "HEAD", "POST"]);
    assert_problem(response, 405).await;
    // HEAD is answered as GET is, without the body.
    let response = app.client.head(app.url("/v1/health/models")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.bytes().await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_401() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = json!({"name": "Maria", "cpf": "52998224725", "birthDate": "1980-02-29"});
    // Every 401 carries its challenge: bare without credentials, `invalid_token` for a bad one.
    let response = app.client.post(app.url("/v1/health/patients")).json(&body).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_problem(response, 401).await;
    let response = app.post("/v1/health/patients", "agk_not_a_key", &body).await;
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
    assert_eq!(assert_problem(response, 401).await["detail"], "the API key is not valid");
    // Without an OIDC provider a JWT is told it is not taken, rather than that it is a bad key.
    let response = app.post("/v1/health/patients", "eyJhbGciOiJub25lIn0.e30.", &body).await;
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
    let problem = assert_problem(response, 401).await;
    assert!(problem["detail"].as_str().unwrap().contains("API keys only"), "{problem}");
    // A credential that is not visible ASCII is a bad one, not none.
    for credential in [&b"Bearer \xff"[..], b"Bearer agk_\tx", "Bearer chave-inválida".as_bytes()] {
        let response = app
            .client
            .post(app.url("/v1/health/patients"))
            .header("authorization", reqwest::header::HeaderValue::from_bytes(credential).unwrap())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_token""#, "{credential:?}");
        assert_problem(response, 401).await;
    }
    let response = app
        .client
        .post(app.url("/v1/health/patients"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(response, 401).await;
    assert_problem(app.post("/v1/admin/tenants", "agk_not_a_key", &json!({"name": "A", "plan": "starter"})).await, 401)
        .await;
    assert_eq!(app.count_health_rows("patients").await, 0);

    // The scheme's name is case-insensitive.
    let tenant = app.create_tenant("Clínica").await;
    let key = app.create_key(&tenant, &["health:read"]).await;
    for scheme in ["bearer", "BEARER"] {
        let response = app
            .client
            .get(app.url("/v1/health/models"))
            .header("authorization", format!("{scheme} {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_key_without_the_scope_is_403_with_the_insufficient_scope_challenge() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Read only").await;
    let read_only = app.create_key(&tenant, &["health:read"]).await;
    let body = json!({"name": "Maria", "cpf": "52998224725", "birthDate": "1980-02-29"});
    let response = app.post("/v1/health/patients", &read_only, &body).await;
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="insufficient_scope", scope="health:write""#);
    let problem = assert_problem(response, 403).await;
    assert_eq!(problem["detail"], r#"this API key lacks the scope "health:write""#, "{problem}");
    // The admin API and the metrics say the same of their scopes.
    let response = app.get("/v1/admin/tenants", &read_only).await;
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="insufficient_scope", scope="admin""#);
    assert_problem(response, 403).await;
    let response = app.get("/metrics", &read_only).await;
    assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="insufficient_scope", scope="metrics:read""#);
    assert_problem(response, 403).await;
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn malformed_or_mistyped_patients_are_refused_and_nothing_is_written() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let raw_cases: [(&str, &str); 4] = [
        ("{\"name\": \"Maria\",", "truncated JSON"),
        ("not json at all", "not JSON"),
        ("[1, 2, 3]", "an array"),
        ("{\"name\": 5, \"cpf\": \"52998224725\", \"birthDate\": \"1980-02-29\"}", "a number for a string"),
    ];
    for (body, case) in raw_cases {
        let response = app.post_raw("/v1/health/patients", &key, body).await;
        let problem = assert_problem(response, 400).await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{case}");
    }
    let field_cases = [
        (json!({"cpf": "52998224725", "birthDate": "1980-02-29"}), "name"),
        (json!({"name": "Maria", "birthDate": "1980-02-29"}), "cpf"),
        (json!({"name": "Maria", "cpf": "52998224725"}), "birthDate"),
        (json!({"name": "Maria", "cpf": "52998224726", "birthDate": "1980-02-29"}), "cpf"),
        (json!({"name": "Maria", "cpf": "52998224725", "birthDate": "1981-02-29"}), "birthDate"),
    ];
    for (body, field) in field_cases {
        let problem = assert_problem(app.post("/v1/health/patients", &key, &body).await, 400).await;
        assert_eq!(problem["field"], field, "{body} -> {problem}");
    }
    // A value sent with the wrong type is not repeated: it may be personal data.
    let response = app.post_raw("/v1/health/patients", &key, r#"{"name": "Maria", "cpf": 52998224725}"#).await;
    let problem = assert_problem(response, 400).await;
    assert_eq!(problem["field"], "cpf", "{problem}");
    assert!(!problem["detail"].as_str().unwrap().contains("52998224725"), "the CPF is echoed: {problem}");
    // A name given twice, at the top or deeper.
    for (body, field) in [
        (r#"{"name": "A", "name": "B", "cpf": "52998224725", "birthDate": "1980-02-29"}"#, "name"),
        (r#"{"model": "diabetes-progression", "features": {"age": 0.1, "age": 0.2}}"#, "features.age"),
        (r#"{"name": "A", "cpf": "52998224725", "birthDate": "1980-02-29", "birth_date": "1990-01-01"}"#, "birthDate"),
    ] {
        let path = if field != "features.age" {
            "/v1/health/patients".to_owned()
        } else {
            format!("/v1/health/patients/{}/assessments", "00000000-0000-7000-8000-000000000000")
        };
        let problem = assert_problem(app.post_raw(&path, &key, body).await, 400).await;
        assert_eq!(problem["field"], field, "{problem}");
    }
    let response =
        app.post_raw("/v1/admin/tenants", &app.admin_key, r#"{"name": "A", "name": "B", "plan": "starter"}"#).await;
    assert_eq!(assert_problem(response, 400).await["field"], "name");
    // A body declared as something other than JSON.
    for media_type in ["application/xml", "image/png", "multipart/form-data; boundary=x"] {
        let media_type = reqwest::header::HeaderValue::from_static(media_type);
        let response = patient_declared_as(&app, &key, media_type).await;
        // Refused before the rate limits are asked: none of the tenant's rate is spent.
        assert!(response.headers().get("ratelimit").is_none(), "{:?}", response.headers());
        assert_problem(response, 415).await;
    }
    let unknown = json!({"name": "Maria", "cpf": "52998224725", "birthDate": "1980-02-29", "shoeSize": 42});
    let problem = assert_problem(app.post("/v1/health/patients", &key, &unknown).await, 400).await;
    assert_eq!(problem["field"], "shoeSize", "an unknown field is named: {problem}");
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn bad_feature_vectors_are_refused_naming_the_field_and_nothing_is_written() {
    let (app, key, patient) = app_with_patient(Backend::Sqlite).await;
    let path = format!("/v1/health/patients/{patient}/assessments");
    let features = reference_features();

    let mut missing = features.clone();
    missing.remove("mean radius");
    let mut extra = features.clone();
    extra.insert("shoe size".into(), json!(42));
    let mut accented = features.clone();
    accented.insert("pressão 100%".into(), json!(1));
    let mut nan = features.clone();
    nan.insert("mean texture".into(), json!("NaN"));
    let mut infinite = features.clone();
    infinite.insert("worst area".into(), json!("Infinity"));
    let mut out_of_range = features.clone();
    out_of_range.insert("mean radius".into(), json!(-3.0));
    let mut wrong_type = features.clone();
    wrong_type.insert("mean radius".into(), json!("large"));

    let cases = [
        (json!({"model": "breast-cancer", "features": missing}), Some("features.mean radius")),
        (json!({"model": "breast-cancer", "features": extra}), Some("features.shoe size")),
        (json!({"model": "breast-cancer", "features": accented}), Some("features.pressão 100%")),
        (json!({"model": "breast-cancer", "features": nan}), Some("features.mean texture")),
        (json!({"model": "breast-cancer", "features": infinite}), Some("features.worst area")),
        (json!({"model": "breast-cancer", "features": out_of_range}), Some("features.mean radius")),
        (json!({"model": "no-such-model", "features": features}), Some("model")),
        (json!({"model": " breast-cancer\t", "features": features}), Some("model")),
        (json!({"features": features}), Some("model")),
        (json!({"model": "breast-cancer", "features": wrong_type}), None),
    ];
    for (body, field) in cases {
        let problem = assert_problem(app.post(&path, &key, &body).await, 400).await;
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{problem}");
        }
    }
    // Every missing feature is named at once, the first in `field`.
    let problem = assert_problem(
        app.post(&path, &key, &json!({"model": "diabetes-progression", "features": {"age": 0.01, "sex": 0.05}})).await,
        400,
    )
    .await;
    assert_eq!(problem["field"], "features.bmi", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .ends_with("is required, and so are the 7 others missing: bp, s1, s2, s3, s4, s5, s6"),
        "{problem}"
    );
    // A huge number is quoted as it was written, not in all its digits.
    let mut huge = features.clone();
    huge.insert("mean radius".into(), json!(1e308));
    let problem =
        assert_problem(app.post(&path, &key, &json!({"model": "breast-cancer", "features": huge})).await, 400).await;
    assert!(problem["detail"].as_str().unwrap().starts_with("features.mean radius: 1e308 is above "), "{problem}");
    // A bare NaN is not JSON at all.
    let mut bare_nan = features.clone();
    bare_nan.insert("mean radius".into(), json!("__bare_nan__"));
    let raw = serde_json::to_string(&json!({"model": "breast-cancer", "features": bare_nan}))
        .unwrap()
        .replace("\"__bare_nan__\"", "NaN");
    assert!(raw.contains(":NaN"));
    assert_problem(app.post_raw(&path, &key, raw).await, 400).await;
    assert_eq!(app.count_health_rows("assessments").await, 0);

    let unknown_patient = app
        .post(
            "/v1/health/patients/00000000-0000-0000-0000-000000000000/assessments",
            &key,
            &json!({"model": "breast-cancer", "features": features}),
        )
        .await;
    assert_problem(unknown_patient, 404).await;
    assert_eq!(app.count_health_rows("assessments").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_nothing_is_written() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let padding = "a".repeat(2 * 1024 * 1024);
    let body = format!("{{\"name\": \"{padding}\", \"cpf\": \"52998224725\", \"birthDate\": \"1980-02-29\"}}");
    assert_problem(app.post_raw("/v1/health/patients", &key, body.clone()).await, 413).await;
    // Without a Content-Length the limit still holds while the body streams in.
    let stream = futures_body(body);
    let response = app
        .client
        .post(app.url("/v1/health/patients"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_problem(response, 413).await;
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

fn futures_body(body: String) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.into_bytes().chunks(64 * 1024).map(|chunk| Ok(chunk.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn bad_input_is_refused_on_postgres_too() {
    let (app, key, patient) = app_with_patient(Backend::Postgres).await;
    let mut features = reference_features();
    features.insert("mean radius".into(), json!("NaN"));
    let path = format!("/v1/health/patients/{patient}/assessments");
    let problem =
        assert_problem(app.post(&path, &key, &json!({"model": "breast-cancer", "features": features})).await, 400)
            .await;
    assert_eq!(problem["field"], "features.mean radius");
    assert_problem(app.post_raw("/v1/health/patients", &key, "{").await, 400).await;
    assert_eq!(app.count_health_rows("assessments").await, 0);
    assert_eq!(app.count_health_rows("patients").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_query_cannot_rebind_a_path_field_or_repeat_a_single_one() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let (mine, other) = (app.create_patient(&key).await, app.create_patient(&key).await);
    for name in ["patientId", "patient_id"] {
        let response = app.get(&format!("/v1/health/patients/{mine}/images?{name}={other}"), &key).await;
        assert_eq!(assert_problem(response, 400).await["field"], "patientId", "{name}");
    }
    let response = app.get("/v1/health/patients?pageSize=1&pageSize=50", &key).await;
    let problem = assert_problem(response, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("more than once"), "{problem}");
    let listed = app.get("/v1/health/patients?pageSize=1", &key).await;
    assert_eq!(listed.status(), 200, "one value is fine");
    // A route that takes its fields in the body takes none from the query, rather than ignore it.
    let response =
        app.patch(&format!("/v1/health/patients/{mine}?updateMask=phone"), &key, &json!({"name": "Ana"})).await;
    assert_eq!(assert_problem(response, 400).await["field"], "updateMask");
    let unchanged: Value = app.get(&format!("/v1/health/patients/{mine}"), &key).await.json().await.unwrap();
    assert_ne!(unchanged["name"], "Ana", "nothing changed");
    // Nor may the body name another value of a field the path gives; the same value is fine.
    let response = app.patch(&format!("/v1/health/patients/{mine}"), &key, &json!({"id": other, "name": "Ana"})).await;
    assert_eq!(assert_problem(response, 400).await["field"], "id");
    let response = app.patch(&format!("/v1/health/patients/{mine}"), &key, &json!({"id": "x"})).await;
    assert_eq!(assert_problem(response, 400).await["field"], "id");
    let unchanged: Value = app.get(&format!("/v1/health/patients/{mine}"), &key).await.json().await.unwrap();
    assert_ne!(unchanged["name"], "Ana", "nothing changed");
    let response = app.patch(&format!("/v1/health/patients/{mine}"), &key, &json!({"id": mine, "name": "Ana"})).await;
    assert_eq!(response.status(), 200);
    // The same id in another spelling of its UUID is the same value.
    let upper = mine.to_ascii_uppercase();
    let response = app.patch(&format!("/v1/health/patients/{upper}"), &key, &json!({"id": mine, "name": "Bia"})).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_refuses_what_it_would_ignore() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_key.clone();
    let tenant = app.create_tenant("Acme").await;
    let tenants_before =
        app.get("/v1/admin/tenants", &admin).await.json::<Value>().await.unwrap()["tenants"].as_array().unwrap().len();
    let body = json!({"name": "Query", "plan": "starter"});
    let response = app.client.post(app.url("/v1/admin/tenants?plan=enterprise")).bearer_auth(&admin).json(&body).send();
    assert_eq!(assert_problem(response.await.unwrap(), 400).await["field"], "plan");
    let response = app
        .client
        .patch(app.url(&format!("/v1/admin/tenants/{tenant}?status=suspended")))
        .bearer_auth(&admin)
        .json(&json!({"plan": "enterprise"}))
        .send();
    assert_eq!(assert_problem(response.await.unwrap(), 400).await["field"], "status");
    for (path, field) in [
        (format!("/v1/admin/tenants/{tenant}?foo=1"), "foo"),
        (format!("/v1/admin/tenants/{tenant}/api-keys?foo=1"), "foo"),
        (format!("/v1/admin/tenants/{tenant}/api-keys?pageToken=nope"), "pageToken"),
    ] {
        let problem = assert_problem(app.get(&path, &admin).await, 400).await;
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }
    let response = app.delete(&format!("/v1/admin/tenants/{tenant}/api-keys/none?x=1"), &admin).await;
    assert_eq!(assert_problem(response, 400).await["field"], "x");
    let response = app.client.get(app.url("/v1/admin/tenants")).bearer_auth(&admin).json(&json!({"x": 1})).send();
    assert_problem(response.await.unwrap(), 400).await;
    let response = app.post("/v1/admin/tenants", &admin, &json!({"name": "\u{202e}live", "plan": "starter"})).await;
    assert_eq!(assert_problem(response, 400).await["field"], "name");
    let unchanged: Value = app.get(&format!("/v1/admin/tenants/{tenant}"), &admin).await.json().await.unwrap();
    assert_eq!((unchanged["plan"].as_str(), unchanged["status"].as_str()), (Some("starter"), Some("active")));
    // A path parameter that is not percent-encoded UTF-8: 401 to a stranger, a problem to the
    // administrator, whatever the route.
    let stranger = app.client.get(app.url("/v1/admin/tenants/%FF")).send().await.unwrap();
    assert_problem(stranger, 401).await;
    for response in [
        app.get("/v1/admin/tenants/%FF", &admin).await,
        app.get("/v1/admin/tenants/%FF/api-keys", &admin).await,
        app.delete(&format!("/v1/admin/tenants/{tenant}/api-keys/%C0%AF"), &admin).await,
        app.client
            .patch(app.url("/v1/admin/tenants/%FF"))
            .bearer_auth(&admin)
            .json(&json!({"plan": "enterprise"}))
            .send()
            .await
            .unwrap(),
    ] {
        let problem = assert_problem(response, 400).await;
        assert!(problem["detail"].as_str().unwrap().contains("not percent-encoded UTF-8"), "{problem}");
    }
    // pageSize 0 is the default size, as on every other list.
    let listed = app.get("/v1/admin/tenants?pageSize=0", &admin).await;
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["tenants"].as_array().unwrap().len(), tenants_before, "nothing created");
    app.stop().await;
}

#[tokio::test]
async fn json_bodies_declared_in_a_charset_other_than_utf_8_are_415_naming_it() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    for (media_type, charset) in [
        ("application/json; charset=iso-8859-1", "iso-8859-1"),
        ("application/json; Charset=\"Windows-1252\"", "Windows-1252"),
        ("application/json; charset=utf-16", "utf-16"),
        // No value at all names no charset, as an empty one does not.
        ("application/json; charset", "\"\""),
    ] {
        let response = patient_declared_as(&app, &key, reqwest::header::HeaderValue::from_static(media_type)).await;
        let problem = assert_problem(response, 415).await;
        assert!(problem["detail"].as_str().unwrap().contains(charset), "{media_type}: {problem}");
        assert_eq!(problem["field"], "Content-Type", "{problem}");
    }
    let problem = assert_problem(
        patient_declared_as(&app, &key, reqwest::header::HeaderValue::from_static("text/plain")).await,
        415,
    )
    .await;
    assert_eq!(problem["field"], "Content-Type", "{problem}");
    let tenant_declared_as = |media_type: &'static str| {
        app.client
            .post(app.url("/v1/admin/tenants"))
            .bearer_auth(&app.admin_key)
            .header("content-type", media_type)
            .body(r#"{"name": "Clínica", "plan": "starter"}"#)
            .send()
    };
    let problem = assert_problem(tenant_declared_as("application/json; charset=latin1").await.unwrap(), 415).await;
    assert_eq!(problem["field"], "Content-Type", "{problem}");
    assert_eq!(app.count_health_rows("patients").await, 0);
    // A merge patch's null would remove the email, which the message's reading would leave as it
    // is: refused, changing nothing, and saying how to clear a field.
    let patient = app.create_patient(&key).await;
    let path = format!("/v1/health/patients/{patient}");
    let before: Value = app.get(&path, &key).await.json().await.unwrap();
    let merge_patch = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&key)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"phone": "+55 11 91234-5678", "email": null}"#)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(merge_patch, 415).await;
    assert!(problem["detail"].as_str().unwrap().contains("an empty string clears one that takes it"), "{problem}");
    let after: Value = app.get(&path, &key).await.json().await.unwrap();
    assert_eq!(before, after, "nothing changed");
    assert_eq!(app.delete(&path, &key).await.status(), 200);
    // UTF-8, said in any case or quoted, is what JSON is anyway.
    let utf8 = reqwest::header::HeaderValue::from_static("application/json; charset=UTF-8");
    assert_eq!(patient_declared_as(&app, &key, utf8).await.status(), 200);
    assert_eq!(tenant_declared_as("application/json;charset=\"utf-8\"").await.unwrap().status(), 201);
    app.stop().await;
}

/// A valid patient's JSON sent with `media_type` as its `Content-Type`.
async fn patient_declared_as(app: &TestApp, key: &str, media_type: reqwest::header::HeaderValue) -> reqwest::Response {
    app.client
        .post(app.url("/v1/health/patients"))
        .bearer_auth(key)
        .header("content-type", media_type)
        .body(r#"{"name": "Maria", "cpf": "52998224725", "birthDate": "1980-02-29"}"#)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn queries_that_do_not_decode_and_media_types_that_are_not_text_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Consultas").await;
    let key = app.create_key(&tenant, &["health:read", "health:write", "governance:read"]).await;
    let not_text = reqwest::header::HeaderValue::from_bytes(b"application/json\xff\xfe").unwrap();
    assert_problem(patient_declared_as(&app, &key, not_text).await, 415).await;
    // Two Content-Type fields: neither is taken over the other.
    let twice = app
        .client
        .post(app.url("/v1/health/patients"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("content-type", "application/json; charset=latin1")
        .body(r#"{"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29"}"#)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(twice, 400).await;
    assert_eq!(problem["field"], "Content-Type");
    // Two Authorization fields: neither credential is taken, whichever they are.
    for second in [key.as_str(), app.admin_key.as_str()] {
        let twice = app
            .client
            .get(app.url("/v1/health/patients"))
            .header("authorization", format!("Bearer {key}"))
            .header("authorization", format!("Bearer {second}"))
            .send()
            .await
            .unwrap();
        assert_eq!(twice.headers()["www-authenticate"], r#"Bearer error="invalid_request""#);
        assert_eq!(assert_problem(twice, 400).await["field"], "Authorization");
    }
    // So on the admin API, where nothing is created.
    let tenants = app.count_gateway_rows("tenants").await;
    let twice = app
        .client
        .post(app.url("/v1/admin/tenants"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .header("content-type", "text/plain")
        .body(r#"{"name": "Duas Vezes", "plan": "starter"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(assert_problem(twice, 400).await["field"], "Content-Type");
    assert_eq!(app.count_gateway_rows("tenants").await, tenants);
    // Query strings that do not decode: a malformed escape, bytes that are not UTF-8.
    for query in ["namePrefix=%FF", "namePrefix=%ZZ", "namePrefix=ma%2"] {
        let problem = assert_problem(app.get(&format!("/v1/health/patients?{query}"), &key).await, 400).await;
        assert_eq!(problem["field"], "namePrefix", "{query}: {problem}");
    }
    assert_problem(app.get("/v1/health/patients?%FF=1", &key).await, 400).await;
    // A service's path that is not percent-encoded UTF-8 is refused as such, not as no route.
    let problem = assert_problem(app.get("/v1/health/patients/%FF", &key).await, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("not percent-encoded UTF-8"), "{problem}");
    // A value that is not of its field's type is named, with what the field takes (its bounds when it has them).
    let problem = assert_problem(app.get("/v1/health/patients?pageSize=abc", &key).await, 400).await;
    assert_eq!(
        (problem["field"].as_str(), problem["detail"].as_str()),
        (Some("pageSize"), Some(r#"pageSize: "abc" is not a whole number from 0 to 100"#))
    );
    // Whole numbers are digits, as the OpenAPI document's patterns say: no `+`.
    let problem = assert_problem(app.get("/v1/health/patients?pageSize=%2B3", &key).await, 400).await;
    assert_eq!(problem["field"], "pageSize", "{problem}");
    assert_problem(app.get("/v1/governance/audit/entries/+0", &key).await, 400).await;
    // A query parameter is named by its JSON name too, whichever name the query used.
    let problem = assert_problem(app.get("/v1/health/patients?page_size=abc", &key).await, 400).await;
    assert_eq!(problem["field"], "pageSize", "{problem}");
    let problem = assert_problem(app.get("/v1/health/patients?namePrefix=ma&name_prefix=ma", &key).await, 400).await;
    assert_eq!(
        (problem["field"].as_str(), problem["detail"].as_str()),
        (Some("namePrefix"), Some("query parameter namePrefix is given more than once"))
    );
    for size in ["abc", "99999999999999999999", "501", "-1"] {
        let path = format!("/v1/admin/tenants?pageSize={size}");
        let problem = assert_problem(app.get(&path, &app.admin_key).await, 400).await;
        assert_eq!(
            (problem["field"].as_str(), problem["detail"].as_str()),
            (Some("pageSize"), Some("pageSize must be a whole number from 1 to 500, or 0 for the default (50)")),
            "{size}"
        );
    }
    let problem = assert_problem(app.get("/v1/admin/tenants?pageSize=1&pageSize=2", &app.admin_key).await, 400).await;
    assert_eq!(problem["field"], "pageSize");
    // No body is an empty object on the admin routes as on the services': its first required field is named.
    let response = app.post_raw("/v1/admin/tenants", &app.admin_key, "").await;
    assert_eq!(assert_problem(response, 400).await["field"], "name");
    // Form data (what `curl -d` declares) is read as JSON, and a refusal says so.
    for path in ["/v1/admin/tenants", "/v1/health/patients"] {
        let credential = if path.starts_with("/v1/admin") { &app.admin_key } else { &key };
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(credential)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=x&plan=starter")
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 400).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("read as JSON also when sent as application/x-www-form-urlencoded"),
            "{path}: {detail}"
        );
    }
    let response = app.post_raw("/v1/admin/tenants", &app.admin_key, r#"{"name": "A"}"#).await;
    let problem = assert_problem(response, 400).await;
    assert_eq!((problem["field"].as_str(), problem["detail"].as_str()), (Some("plan"), Some("plan is required")));
    // A field is named by its JSON name, whichever name the body used.
    let response =
        app.post_raw("/v1/health/patients", &key, r#"{"name": "Maria", "cpf": "52998224725", "birth_date": 5}"#).await;
    assert_eq!(assert_problem(response, 400).await["field"], "birthDate");
    assert_eq!(app.count_health_rows("patients").await, 0);
    app.stop().await;
}

/// The mistakes a first call makes are answered with what to do instead.
#[tokio::test]
async fn a_first_callers_mistakes_are_told_what_to_do() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    // A method the route does not take names the ones it does.
    let response = app.post(&format!("/v1/health/patients/{patient}"), &key, &json!({"phone": "1"})).await;
    let problem = assert_problem(response, 405).await;
    assert_eq!(
        problem["detail"],
        "POST is not a method of /v1/health/patients/{id}; it takes HEAD, GET, PATCH, DELETE"
    );
    // A literal segment is the path's route over a variable one: /patients/search is no patient's id.
    let problem = assert_problem(app.get("/v1/health/patients/search", &key).await, 405).await;
    assert_eq!(problem["detail"], "GET is not a method of /v1/health/patients/search; it takes POST");
    // A trailing slash is named as what stands between the path and its route.
    let response = app.get("/v1/health/patients/", &key).await;
    let problem = assert_problem(response, 404).await;
    assert!(problem["detail"].as_str().unwrap().ends_with("without its trailing slash it is /v1/health/patients"));
    // The gateway's own routes alike.
    for (path, template) in [
        ("/v1/admin/tenants/", "/v1/admin/tenants"),
        ("/v1/admin/tenants/t-1/api-keys/", "/v1/admin/tenants/{tenantId}/api-keys"),
        ("/healthz/", "/healthz"),
    ] {
        let problem = assert_problem(app.get(path, &app.admin_key).await, 404).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.ends_with(&format!("without its trailing slash it is {template}")), "{path}: {detail}");
    }
    // Not for a method the route does not take, nor for more than one slash too many.
    let put = app.client.put(app.url("/v1/admin/tenants/")).bearer_auth(&app.admin_key).send().await.unwrap();
    let doubled = app.get("/v1/admin/tenants//", &app.admin_key).await;
    for response in [put, doubled, app.get("/v1/health/patients//", &key).await] {
        let problem = assert_problem(response, 404).await;
        assert_eq!(problem["detail"], "no route has this path; GET /openapi.json lists them");
    }
    // Nor after a `.` or `..` segment, which names no resource (sent as typed: clients remove them).
    for path in
        ["/v1/health/patients/./", "/v1/health/patients/../", "/v1/health/patients/%2e/", "/v1/health/patients/.%2E/"]
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = app.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(answer.contains("no route has this path; GET /openapi.json lists them"), "{path}: {answer}");
    }
    // A body that is JSON but no object, and a field spelled otherwise than the API spells it.
    for (body, found) in [("[]", "a list"), ("true", "a boolean"), ("null", "null")] {
        let problem = assert_problem(app.post_raw("/v1/health/patients", &key, body).await, 400).await;
        assert_eq!(problem["detail"], format!("the request body must be a JSON object, not {found}"));
        assert_eq!(problem.get("field"), None, "the body is no field: {problem}");
    }
    let body = json!({"name": "Ana", "cpf": "111.444.777-35", "birthdate": "1980-01-01"});
    let problem = assert_problem(app.post("/v1/health/patients", &key, &body).await, 400).await;
    assert!(problem["detail"].as_str().unwrap().ends_with("did you mean birthDate?"), "{problem}");
    let problem = assert_problem(app.post("/v1/health/patients", &key, &json!({"nome": "Ana"})).await, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("it takes name, cpf, birthDate"), "{problem}");
    app.stop().await;
}
