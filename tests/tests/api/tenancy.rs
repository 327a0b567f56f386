//! Keys, scopes and tenants at the gateway.

use aigronova_e2e::{Backend, assert_problem, spawn_app};
use serde_json::json;

#[tokio::test]
async fn a_tenant_cannot_read_another_tenants_patient() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key_a) = app.tenant_with_key().await;
    let (_, key_b) = app.tenant_with_key().await;
    let patient = app.create_patient(&key_a).await;
    let response = app.get(&format!("/v1/health/patients/{patient}"), &key_b).await;
    assert_problem(response, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_key() {
    let app = spawn_app(Backend::Sqlite).await;
    let (tenant, key) = app.tenant_with_key().await;
    let response = app.post("/v1/admin/tenants", &key, &json!({"name": "X", "plan": "starter"})).await;
    assert_problem(response, 403).await;
    let response = app
        .post(&format!("/v1/admin/tenants/{tenant}/api-keys"), &key, &json!({"name": "x", "scopes": ["health:read"]}))
        .await;
    assert_problem(response, 403).await;
    app.stop().await;
}

#[tokio::test]
async fn the_admin_key_cannot_call_tenant_apis() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.get("/v1/health/patients/anything", &app.admin_key).await;
    let challenge = response.headers().get("www-authenticate").and_then(|value| value.to_str().ok()).map(str::to_owned);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer error="insufficient_scope", scope="health:read""#));
    let problem = assert_problem(response, 403).await;
    assert!(problem["detail"].as_str().unwrap().contains("administrator keys cannot call tenant APIs"), "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn tenant_and_key_creation_refuse_bad_input() {
    let app = spawn_app(Backend::Sqlite).await;
    let admin = app.admin_key.clone();
    let cases = [
        (json!({"name": "Acme", "plan": "gold"}), Some("plan")),
        (json!({"name": "", "plan": "starter"}), Some("name")),
        (json!({"plan": "starter"}), Some("name")),
        (json!({"name": "Acme", "plan": "starter", "extra": 1}), Some("extra")),
        (json!({"name": 5, "plan": "starter"}), Some("name")),
        (json!(["Acme", "starter"]), None),
    ];
    for (body, field) in cases {
        let problem = assert_problem(app.post("/v1/admin/tenants", &admin, &body).await, 400).await;
        assert_eq!(problem["field"].as_str(), field, "{body}: {problem}");
        assert!(!problem["detail"].as_str().unwrap().contains("struct"), "no Rust types in {problem}");
    }
    let problem = assert_problem(app.get("/v1/admin/tenants?pageSize=abc", &admin).await, 400).await;
    assert_eq!(problem["field"], "pageSize", "{problem}");
    let problem = assert_problem(app.get("/v1/admin/tenants?shoeSize=42", &admin).await, 400).await;
    assert_eq!(problem["field"], "shoeSize", "{problem}");
    let tenant = app.create_tenant("Acme").await;
    let path = format!("/v1/admin/tenants/{tenant}/api-keys");
    let cases = [
        (json!({"name": "ci", "scopes": []}), 400),
        (json!({"name": "ci", "scopes": ["health:everything"]}), 400),
        (json!({"name": "ci"}), 400),
    ];
    for (body, status) in cases {
        assert_problem(app.post(&path, &admin, &body).await, status).await;
    }
    let key = json!({"name": "ci", "scopes": ["health:read"]});
    let response = app.post("/v1/admin/tenants/no-such-tenant/api-keys", &admin, &key).await;
    assert_eq!(assert_problem(response, 400).await["field"], "tenantId");
    let response = app.post("/v1/admin/tenants/00000000-0000-7000-8000-000000000000/api-keys", &admin, &key).await;
    assert_problem(response, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn a_created_tenant_and_key_follow_the_contract() {
    let app = spawn_app(Backend::Sqlite).await;
    let response =
        app.post("/v1/admin/tenants", &app.admin_key, &json!({"name": "Acme", "plan": "professional"})).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let tenant: serde_json::Value = response.json().await.unwrap();
    assert_eq!(tenant["name"], "Acme");
    assert_eq!(tenant["plan"], "professional");
    let id = tenant["id"].as_str().unwrap();
    // Where the new tenant is read (RFC 9110 §10.2.2).
    assert_eq!(location, format!("/v1/admin/tenants/{id}"));
    assert_eq!(app.get(&location, &app.admin_key).await.status(), 200);
    let response = app
        .post(
            &format!("/v1/admin/tenants/{id}/api-keys"),
            &app.admin_key,
            &json!({"name": "ci", "scopes": ["health:read", "health:write"]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let key: serde_json::Value = response.json().await.unwrap();
    assert!(key["id"].is_string());
    assert_eq!(location, format!("/v1/admin/tenants/{id}/api-keys/{}", key["id"].as_str().unwrap()));
    // Read there as the list shows it, without the secret.
    let read: serde_json::Value = app.get(&location, &app.admin_key).await.json().await.unwrap();
    assert_eq!((&read["id"], &read["scopes"], read.get("key")), (&key["id"], &key["scopes"], None), "{read}");
    let missing = format!("/v1/admin/tenants/{id}/api-keys/00000000-0000-7000-8000-000000000000");
    assert_problem(app.get(&missing, &app.admin_key).await, 404).await;
    assert_eq!(
        assert_problem(app.get(&format!("/v1/admin/tenants/{id}/api-keys/nope"), &app.admin_key).await, 400).await["field"],
        "keyId"
    );
    assert!(key["key"].as_str().is_some_and(|k| k.starts_with("agk_")));
    assert_eq!(key["scopes"], json!(["health:read", "health:write"]));
    app.stop().await;
}
