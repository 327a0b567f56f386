//! The admin API: tenants (list, get, plan and status changes) and API keys (list, expiry,
//! last use, revocation).

use std::time::Duration;

use aigronova_e2e::{Backend, assert_problem, spawn_app};
use serde_json::{Value, json};

#[tokio::test]
async fn tenants_are_listed_in_pages_and_read_one_by_one() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut created = Vec::new();
    for name in ["A", "B", "C"] {
        created.push(app.create_tenant(name).await);
    }
    let first: Value = app.get("/v1/admin/tenants?pageSize=2", &app.admin_key).await.json().await.unwrap();
    assert_eq!(first["tenants"].as_array().unwrap().len(), 2);
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let second: Value =
        app.get(&format!("/v1/admin/tenants?pageSize=2&pageToken={token}"), &app.admin_key).await.json().await.unwrap();
    let ids: Vec<&str> = first["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["tenants"].as_array().unwrap())
        .map(|tenant| tenant["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, created.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(second["nextPageToken"], "");
    // A full last page ends the list: no token to a page with nothing on it.
    let whole: Value = app.get("/v1/admin/tenants?pageSize=3", &app.admin_key).await.json().await.unwrap();
    assert_eq!((whole["tenants"].as_array().unwrap().len(), &whole["nextPageToken"]), (3, &json!("")));

    let tenant: Value =
        app.get(&format!("/v1/admin/tenants/{}", created[1]), &app.admin_key).await.json().await.unwrap();
    assert_eq!(tenant["name"], "B");
    // A UUID reads the same in capitals, as the services' ids do.
    let shouted = app.get(&format!("/v1/admin/tenants/{}", created[1].to_uppercase()), &app.admin_key).await;
    assert_eq!(shouted.json::<Value>().await.unwrap()["id"].as_str(), Some(created[1].as_str()));
    // An id no tenant could have is a bad request, naming the field; one no tenant has, not found.
    let problem = assert_problem(app.get("/v1/admin/tenants/nope", &app.admin_key).await, 400).await;
    assert_eq!(problem["field"], "tenantId");
    assert_problem(app.get("/v1/admin/tenants/00000000-0000-7000-8000-000000000000", &app.admin_key).await, 404).await;
    assert_problem(app.get("/v1/admin/tenants?pageSize=-1", &app.admin_key).await, 400).await;
    assert_problem(app.get("/v1/admin/tenants?pageSize=501", &app.admin_key).await, 400).await;
    assert_problem(app.get("/v1/admin/tenants?pageSize=abc", &app.admin_key).await, 400).await;
    let shouted = token.to_uppercase();
    for token in ["garbage", "%00%ff", shouted.as_str()] {
        let problem =
            assert_problem(app.get(&format!("/v1/admin/tenants?pageToken={token}"), &app.admin_key).await, 400).await;
        assert_eq!(problem["field"], "pageToken", "{problem}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_suspended_tenant_gets_403_at_once_and_works_again_when_reactivated() {
    let app = spawn_app(Backend::Postgres).await;
    let (tenant, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    let path = format!("/v1/health/patients/{patient}");
    assert_eq!(app.get(&path, &key).await.status(), 200);

    let response =
        app.patch(&format!("/v1/admin/tenants/{tenant}"), &app.admin_key, &json!({"status": "suspended"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "suspended");
    let problem = assert_problem(app.get(&path, &key).await, 403).await;
    assert!(problem["detail"].as_str().unwrap().contains("suspended"));

    app.patch(&format!("/v1/admin/tenants/{tenant}"), &app.admin_key, &json!({"status": "active"})).await;
    assert_eq!(app.get(&path, &key).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_suspended_tenants_key_is_not_counted_used_when_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let (tenant, key) = app.tenant_with_key().await;
    app.suspend_tenant(&tenant).await;
    assert_problem(app.get("/v1/health/patients", &key).await, 403).await;
    let keys_path = format!("/v1/admin/tenants/{tenant}/api-keys");
    let last_used = || async {
        let keys: Value = app.get(&keys_path, &app.admin_key).await.json().await.unwrap();
        keys["apiKeys"][0]["lastUsedTime"].clone()
    };
    // The use is recorded off the request's path: given time, it would show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(last_used().await, Value::Null, "refused, so not used");

    app.patch(&format!("/v1/admin/tenants/{tenant}"), &app.admin_key, &json!({"status": "active"})).await;
    assert_eq!(app.get("/v1/health/patients", &key).await.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !last_used().await.is_string() {
        assert!(tokio::time::Instant::now() < deadline, "a use let in is recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn tenant_updates_refuse_bad_input() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Acme").await;
    let path = format!("/v1/admin/tenants/{tenant}");
    for (body, field) in [
        (json!({"status": "gone"}), Some("status")),
        (json!({"plan": "gold"}), Some("plan")),
        (json!({}), None),
        (json!({"name": "x"}), None),
    ] {
        let problem = assert_problem(app.patch(&path, &app.admin_key, &body).await, 400).await;
        if let Some(field) = field {
            assert_eq!(problem["field"], field);
        }
    }
    let response = app.patch(&path, &app.admin_key, &json!({"plan": "enterprise"})).await;
    assert_eq!(response.json::<Value>().await.unwrap()["plan"], "enterprise");
    assert_problem(app.patch("/v1/admin/tenants/nope", &app.admin_key, &json!({"plan": "starter"})).await, 400).await;
    let missing = "/v1/admin/tenants/00000000-0000-7000-8000-000000000000";
    assert_problem(app.patch(missing, &app.admin_key, &json!({"plan": "starter"})).await, 404).await;
    // A name that shows nothing names nothing, for a tenant or a key.
    for name in ["\u{200b}", " \u{200d}\u{feff} "] {
        let problem = assert_problem(
            app.post("/v1/admin/tenants", &app.admin_key, &json!({"name": name, "plan": "starter"})).await,
            400,
        )
        .await;
        assert_eq!(problem["field"], "name");
        let key = json!({"name": name, "scopes": ["health:read"]});
        let problem = assert_problem(app.post(&format!("{path}/api-keys"), &app.admin_key, &key).await, 400).await;
        assert_eq!(problem["field"], "name");
    }
    // Each refusal says what is wrong with the name.
    let long = "x".repeat(201);
    for (name, says) in [("GW-a\nb", "control characters"), (long.as_str(), "at most 200 characters")] {
        for (path, body) in [
            ("/v1/admin/tenants".to_owned(), json!({"name": name, "plan": "starter"})),
            (format!("{path}/api-keys"), json!({"name": name, "scopes": ["health:read"]})),
        ] {
            let problem = assert_problem(app.post(&path, &app.admin_key, &body).await, 400).await;
            assert!(problem["detail"].as_str().unwrap().contains(says), "{name:?}: {problem}");
        }
    }
    // Bodies are read as the services' routes read theirs: a wrong type in the API's words, null as
    // absent, the path's tenant named again with its value, no byte-order mark, an object.
    let keys = format!("{path}/api-keys");
    let said = |body: &'static str, url: &str| {
        let url = url.to_owned();
        let app = &app;
        async move {
            let problem = assert_problem(app.post_raw(&url, &app.admin_key, body).await, 400).await;
            (problem["field"].as_str().map(str::to_owned), problem["detail"].as_str().unwrap().to_owned())
        }
    };
    let tenants = "/v1/admin/tenants";
    let cases = [
        (r#"{"name": 5, "plan": "starter"}"#, tenants, Some("name"), "name must be a string, not a number"),
        (r#"{"name": "x", "plan": null}"#, tenants, Some("plan"), "plan is required"),
        ("\u{feff}{}", tenants, None, "the request body starts with a byte-order mark: send the JSON without it"),
        ("[1]", tenants, None, "the request body must be a JSON object, not a list"),
        (r#"{"name": "x", "plan": "starter", "tenantId": "t"}"#, tenants, Some("tenantId"), "unknown field"),
        // A name it does not take is refused even as null, which reads as absent for those it takes.
        (r#"{"name": "x", "plan": "starter", "bogus": null}"#, tenants, Some("bogus"), "unknown field"),
        (r#"{"name": "k", "scopes": ["health:read"], "bogus": null}"#, keys.as_str(), Some("bogus"), "unknown field"),
    ];
    for (body, url, field, detail) in cases {
        let (got_field, got_detail) = said(body, url).await;
        assert_eq!(got_field.as_deref(), field, "{body}");
        assert!(got_detail.contains(detail), "{body}: {got_detail}");
    }
    let other = "00000000-0000-7000-8000-000000000000";
    let named = json!({"tenantId": other, "name": "k", "scopes": ["health:read"]});
    let problem = assert_problem(app.post(&keys, &app.admin_key, &named).await, 400).await;
    assert_eq!(problem["detail"], "tenantId is given by the path; the body names another");
    let named = json!({"tenantId": tenant.to_uppercase(), "name": "k", "scopes": ["health:read"], "expireTime": null});
    assert_eq!(app.post(&keys, &app.admin_key, &named).await.status(), 201, "the path's tenant, in capitals");
    let named = json!({"tenant_id": tenant, "name": "k2", "scopes": ["health:read"]});
    assert_eq!(app.post(&keys, &app.admin_key, &named).await.status(), 201, "under its proto name");
    let named = json!({"tenantId": 5, "name": "k3", "scopes": ["health:read"]});
    let problem = assert_problem(app.post(&keys, &app.admin_key, &named).await, 400).await;
    assert_eq!(problem["detail"], "tenantId must be a string, not a number");
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_listed_as_revoked() {
    let app = spawn_app(Backend::Sqlite).await;
    let (tenant, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    let path = format!("/v1/health/patients/{patient}");
    assert_eq!(app.get(&path, &key).await.status(), 200);

    let keys: Value =
        app.get(&format!("/v1/admin/tenants/{tenant}/api-keys"), &app.admin_key).await.json().await.unwrap();
    let listed = &keys["apiKeys"][0];
    assert!(listed.get("key").is_none(), "a listed key never shows its secret: {listed}");
    assert!(!keys.to_string().contains(&key));
    let key_id = listed["id"].as_str().unwrap().to_owned();

    let revoke = app.delete(&format!("/v1/admin/tenants/{tenant}/api-keys/{key_id}"), &app.admin_key).await;
    assert_eq!(revoke.status(), 204);
    assert_problem(app.get(&path, &key).await, 401).await;
    let missing = "00000000-0000-7000-8000-000000000000";
    let again = app.delete(&format!("/v1/admin/tenants/{tenant}/api-keys/{missing}"), &app.admin_key).await;
    let problem = assert_problem(again, 404).await;
    assert_eq!(problem["detail"], format!("API key \"{missing}\" of tenant \"{tenant}\" not found"));
    // An id no key could have is told as malformed, as a tenant id is.
    let malformed = app.delete(&format!("/v1/admin/tenants/{tenant}/api-keys/no-such-key"), &app.admin_key).await;
    assert_eq!(assert_problem(malformed, 400).await["field"], "keyId");
    let nowhere = app.delete(&format!("/v1/admin/tenants/{missing}/api-keys/no-such-key"), &app.admin_key).await;
    assert_eq!(assert_problem(nowhere, 404).await["detail"], format!("tenant \"{missing}\" not found"));

    let keys: Value =
        app.get(&format!("/v1/admin/tenants/{tenant}/api-keys"), &app.admin_key).await.json().await.unwrap();
    assert!(keys["apiKeys"][0]["revokeTime"].is_string());
    assert!(keys["apiKeys"][0]["lastUsedTime"].is_string(), "{keys}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_stops_working_when_it_expires() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Acme").await;
    let expiry = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let response = app
        .post(
            &format!("/v1/admin/tenants/{tenant}/api-keys"),
            &app.admin_key,
            &json!({"name": "short", "scopes": ["health:write"], "expireTime": expiry}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let key = response.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let body = json!({"name": "Maria", "cpf": "52998224725", "birthDate": "1980-02-29"});
    assert_eq!(app.post("/v1/health/patients", &key, &body).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // Told it has expired, not that it is unknown: the caller holds the key, and needs a new one.
    let expired = assert_problem(app.post("/v1/health/patients", &key, &body).await, 401).await;
    assert!(expired["detail"].as_str().unwrap().starts_with("the API key expired at "), "{expired}");
    let unknown = assert_problem(app.post("/v1/health/patients", &format!("{key}x"), &body).await, 401).await;
    assert_eq!(unknown["detail"], "the API key is not valid");

    // In the past, past 9999 in UTC, and a leap second: none has a future RFC 3339 form in UTC; and
    // finer than the nanosecond, which would be cut.
    for expiry in
        ["2020-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00", "2030-06-15T12:34:60Z", "2030-01-01T00:00:00.1234567891Z"]
    {
        let refused = json!({"name": "odd", "scopes": ["health:read"], "expireTime": expiry});
        let problem = assert_problem(
            app.post(&format!("/v1/admin/tenants/{tenant}/api-keys"), &app.admin_key, &refused).await,
            400,
        )
        .await;
        assert_eq!(problem["field"], "expireTime", "{expiry}");
    }
    // Both of its names in one body: the field is named as the JSON names it.
    let twice = r#"{"name": "odd", "scopes": ["health:read"], "expire_time": null, "expireTime": null}"#;
    let problem =
        assert_problem(app.post_raw(&format!("/v1/admin/tenants/{tenant}/api-keys"), &app.admin_key, twice).await, 400)
            .await;
    assert_eq!(problem["field"], "expireTime", "{problem}");
    let keys: Value =
        app.get(&format!("/v1/admin/tenants/{tenant}/api-keys"), &app.admin_key).await.json().await.unwrap();
    assert_eq!(keys["apiKeys"].as_array().map(Vec::len), Some(1), "only the first key was made: {keys}");
    app.stop().await;
}

#[tokio::test]
async fn a_tenants_keys_are_listed_a_page_at_a_time_oldest_first() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Paginada").await;
    let path = format!("/v1/admin/tenants/{tenant}/api-keys");
    let mut made = Vec::new();
    for n in 0..5 {
        let issued =
            app.post(&path, &app.admin_key, &json!({"name": format!("k{n}"), "scopes": ["health:read"]})).await;
        assert_eq!(issued.status(), 201);
        made.push(issued.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page: Value =
            app.get(&format!("{path}?pageSize=2&pageToken={token}"), &app.admin_key).await.json().await.unwrap();
        let keys = page["apiKeys"].as_array().unwrap();
        assert!(keys.len() <= 2, "{page}");
        listed.extend(keys.iter().map(|key| key["id"].as_str().unwrap().to_owned()));
        token = page["nextPageToken"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, made, "each key once, in the order made");
    // A token goes on only in the list that gave it: not another tenant's keys, not the tenants,
    // not one made up from an id.
    let first: Value = app.get(&format!("{path}?pageSize=2"), &app.admin_key).await.json().await.unwrap();
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    let other = app.create_tenant("Outra").await;
    for url in [
        format!("/v1/admin/tenants/{other}/api-keys?pageToken={token}"),
        format!("/v1/admin/tenants?pageToken={token}"),
        format!("{path}?pageToken={}", made[1]),
        format!("{path}?pageToken={}.0123456789abcdef", made[1]),
    ] {
        assert_eq!(assert_problem(app.get(&url, &app.admin_key).await, 400).await["field"], "pageToken", "{url}");
    }
    let all: Value = app.get(&path, &app.admin_key).await.json().await.unwrap();
    assert_eq!((all["apiKeys"].as_array().map(Vec::len), &all["nextPageToken"]), (Some(5), &json!("")));
    app.stop().await;
}

/// Polls `check` every 20 ms for at most one second; true as soon as it holds.
async fn within_one_second<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_revoked_key_and_a_suspended_tenant_are_refused_by_every_replica_within_one_second() {
    let mut app = aigronova_e2e::spawn_app_with(Backend::Postgres, |config| {
        config.gateway.redis_url = Some(aigronova_e2e::redis_url());
        config.gateway.rate_limit.redis_key_prefix = aigronova_e2e::unique_redis_prefix();
        // Long enough that only the invalidation message can explain a refusal.
        config.gateway.key_cache_secs = 3600;
    })
    .await;
    let replica = app.start_gateway_replica().await;
    let (tenant, key) = app.tenant_with_key().await;
    let second_key = app.create_key(&tenant, &["health:read"]).await;
    let patient = app.create_patient(&key).await;
    let path = format!("/v1/health/patients/{patient}");
    for key in [&key, &second_key] {
        assert_eq!(app.get(&path, key).await.status(), 200);
        assert_eq!(app.get_from(&replica, &path, key).await.status(), 200, "the replica has the key cached");
    }

    let keys: Value =
        app.get(&format!("/v1/admin/tenants/{tenant}/api-keys"), &app.admin_key).await.json().await.unwrap();
    let key_id = keys["apiKeys"][0]["id"].as_str().unwrap().to_owned();
    let key_path = format!("/v1/admin/tenants/{tenant}/api-keys/{key_id}");
    let revoked = app.delete(&key_path, &app.admin_key).await;
    assert_eq!(revoked.status(), 204);
    assert_eq!(app.get(&path, &key).await.status(), 401);
    // Revoking again answers as the first time did and keeps the first revocation's time.
    let first: Value = app.get(&key_path, &app.admin_key).await.json().await.unwrap();
    assert!(first["revokeTime"].is_string(), "{first}");
    assert_eq!(app.delete(&key_path, &app.admin_key).await.status(), 204);
    let second: Value = app.get(&key_path, &app.admin_key).await.json().await.unwrap();
    assert_eq!(second["revokeTime"], first["revokeTime"]);
    assert!(
        within_one_second(|| async { app.get_from(&replica, &path, &key).await.status() == 401 }).await,
        "the replica still accepts the revoked key after one second"
    );
    assert_eq!(app.get_from(&replica, &path, &second_key).await.status(), 200, "other keys keep working");

    app.patch(&format!("/v1/admin/tenants/{tenant}"), &app.admin_key, &json!({"status": "suspended"})).await;
    assert!(
        within_one_second(|| async { app.get_from(&replica, &path, &second_key).await.status() == 403 }).await,
        "the replica still serves the suspended tenant after one second"
    );
    app.stop().await;
}
