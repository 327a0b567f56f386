//! `/openapi.json` and `/docs`: the document is valid OpenAPI 3.1, lists every route with its
//! method, matches the routing, and describes the answers the platform really gives.

use aigronova_e2e::{Backend, TestApp, assert_problem, spawn_app};
use aigronova_gateway::routes::RouteTable;
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};

/// The JSON Schema of OpenAPI 3.1 documents, vendored (see `gateway/tests/fixtures/README.md`).
const OPENAPI_SCHEMA: &str = include_str!("../../../gateway/tests/fixtures/openapi-3.1.schema.json");

/// The endpoints the gateway serves itself, beside the routes of the descriptor set.
const GATEWAY_ENDPOINTS: &[(&str, &str)] = &[
    ("post", "/v1/admin/tenants"),
    ("get", "/v1/admin/tenants"),
    ("get", "/v1/admin/tenants/{tenantId}"),
    ("patch", "/v1/admin/tenants/{tenantId}"),
    ("post", "/v1/admin/tenants/{tenantId}/api-keys"),
    ("get", "/v1/admin/tenants/{tenantId}/api-keys"),
    ("get", "/v1/admin/tenants/{tenantId}/api-keys/{keyId}"),
    ("delete", "/v1/admin/tenants/{tenantId}/api-keys/{keyId}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v2"),
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
];

const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

async fn fetch_document(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/openapi.json")).send().await.expect("request sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.expect("the document is JSON")
}

fn openapi_errors(document: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(OPENAPI_SCHEMA).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the OpenAPI 3.1 schema compiles");
    validator.iter_errors(document).map(|error| format!("{error} at {}", error.instance_path())).collect()
}

/// Every (method, path template, operation) of the document.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in HTTP_METHODS {
            if let Some(operation) = item.get(*method) {
                found.push(((*method).to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    found
}

pub(crate) fn assert_conforms(document: &Value, name: &str, instance: &Value) {
    let errors = conformance_errors(document, name, instance);
    assert!(errors.is_empty(), "{instance} does not match {name}: {errors:?}");
}

/// Checks `instance` against the component schema `name`, with every object closed to members the
/// document does not list, and formats (date-time, uri) checked.
fn conformance_errors(document: &Value, name: &str, instance: &Value) -> Vec<String> {
    let mut components = document["components"].clone();
    close_objects(&mut components);
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": components,
    });
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|error| panic!("schema {name} compiles: {error}"));
    validator.iter_errors(instance).map(|error| format!("{error} at {}", error.instance_path())).collect()
}

fn close_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_is_valid_openapi_3_1_and_lists_every_route_with_its_method() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = fetch_document(&app).await;
    assert_eq!(openapi_errors(&document), Vec::<String>::new());
    assert_eq!(document["openapi"], "3.1.0");

    let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let routes = RouteTable::from_descriptors(&pool).expect("routes");
    assert!(!routes.routes().is_empty());
    for route in routes.routes() {
        let method = route.http_method.as_str().to_lowercase();
        let operation = &document["paths"][&route.template][&method];
        assert!(operation.is_object(), "{method} {} is not in the document", route.template);
        assert_eq!(operation["security"], json!([{"apiKey": [route.scope]}]), "{method} {}", route.template);
        // Model calls say they count against the monthly inference quota; no other does.
        let counted = operation["x-aigronova-inference-quota"] == true;
        assert_eq!(counted, route.inference, "{method} {}", route.template);
        let said = operation["description"].as_str().is_some_and(|text| text.contains("monthly inference quota"));
        assert_eq!(said, route.inference, "{method} {}", route.template);
    }
    let scored = &document["paths"]["/v1/fin/credit-scores"]["post"];
    assert_eq!(scored["x-aigronova-inference-quota"], true, "{scored}");
    for (method, path) in GATEWAY_ENDPOINTS {
        assert!(document["paths"][path][method].is_object(), "{method} {path} is not in the document");
    }
    // Raw answers name their media types; body routes say a foreign media type is 415.
    let content = |path: &str| {
        let content = &document["paths"][path]["get"]["responses"]["200"]["content"];
        let mut types: Vec<String> = content.as_object().expect("content").keys().cloned().collect();
        types.sort();
        types
    };
    assert_eq!(content("/v1/health/patients/{patientId}/assessments/{id}/report"), ["application/pdf"]);
    assert_eq!(content("/v1/fin/customers/{customerId}/statements/{month}"), ["application/json", "application/pdf"]);
    // A PDF answer says how it is named; a JSON-only one does not.
    let disposition =
        |path: &str| document["paths"][path]["get"]["responses"]["200"]["headers"].get("Content-Disposition").is_some();
    assert!(disposition("/v1/health/patients/{patientId}/assessments/{id}/report"));
    assert!(disposition("/v1/governance/reports/{framework}"));
    assert!(!disposition("/v1/health/patients/{id}"));
    assert!(document["components"]["headers"]["Content-Disposition"]["description"].is_string());
    // A raw JSON answer is described by the message its method names.
    for (path, message) in [
        ("/v1/fin/customers/{customerId}/statements/{month}", "aigronova.fin.v1.Statement"),
        ("/v1/governance/reports/{framework}", "aigronova.governance.v1.EvidenceReport"),
        ("/v1/governance/subject-requests/{id}/export", "aigronova.governance.v1.SubjectExport"),
    ] {
        let answer = &document["paths"][path]["get"]["responses"]["200"];
        assert_eq!(answer["content"]["application/json"]["schema"]["$ref"], format!("#/components/schemas/{message}"));
    }
    assert_eq!(content("/v1/health/patients/{patientId}/images/{id}/thumbnail"), ["image/png"]);
    assert!(document["paths"]["/v1/health/patients"]["post"]["responses"]["415"].is_object());
    // A raw request body names the media types the service reads.
    // Path parameters are named as the JSON names their fields, as problems name them.
    let images = &document["paths"]["/v1/health/patients/{patientId}/images"]["post"];
    assert_eq!(images["parameters"][0]["name"], "patientId");
    assert_eq!(images["parameters"][0]["in"], "path");
    let upload = &images["requestBody"]["content"];
    let mut read: Vec<&String> = upload.as_object().expect("content").keys().collect();
    read.sort();
    assert_eq!(read, ["application/dicom", "application/octet-stream", "image/jpeg", "image/jpg", "image/png"]);
    assert_eq!(upload["image/png"]["schema"]["contentMediaType"], "image/png");
    assert!(document["paths"]["/v1/health/patients"]["post"]["responses"]["409"].is_object());
    // A body with a field the service requires is required, and a PATCH's, which names a field.
    assert_eq!(document["paths"]["/v1/health/patients"]["post"]["requestBody"]["required"], true);
    let patch = &document["paths"]["/v1/health/patients/{id}"]["patch"]["requestBody"];
    assert_eq!(patch["required"], true);
    assert_eq!(patch["content"]["application/json"]["schema"]["minProperties"], 1, "a PATCH names a field to change");
    // Required query parameters say so, with their bounds.
    let consistency = &document["paths"]["/v1/governance/audit/consistency"]["get"]["parameters"];
    let query: Vec<&Value> =
        consistency.as_array().unwrap().iter().filter(|parameter| parameter["in"] == "query").collect();
    assert_eq!(query.len(), 2, "{consistency}");
    for parameter in query {
        assert_eq!(parameter["required"], true, "{parameter}");
        assert_eq!(parameter["schema"]["minimum"], 1, "{parameter}");
    }
    // The header fields a call may carry: its id, its deadline, and its body's codings.
    let headers = |path: &str, method: &str| -> Vec<String> {
        document["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|parameter| parameter["$ref"].as_str())
            .map(|reference| document.pointer(&reference[1..]).unwrap()["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(headers("/v1/health/patients", "post"), ["X-Request-Id", "grpc-timeout", "Content-Encoding"]);
    assert_eq!(headers("/v1/health/patients", "get"), ["X-Request-Id", "grpc-timeout"]);
    assert_eq!(headers("/v1/admin/tenants", "post"), ["X-Request-Id", "Content-Encoding"]);
    // A deadline's pattern takes what the gateway takes: a positive number of 1 to 8 digits and a unit.
    let deadline = jsonschema::validator_for(&document["components"]["parameters"]["GrpcTimeout"]["schema"]).unwrap();
    for (value, taken) in [("250m", true), ("00000001S", true), ("00000010S", true), ("0m", false), ("000u", false)] {
        assert_eq!(deadline.is_valid(&json!(value)), taken, "{value}");
    }
    for (value, taken) in [("123456789S", false), ("5", false), ("1H", true)] {
        assert_eq!(deadline.is_valid(&json!(value)), taken, "{value}");
    }
    // A field the services do not know is refused, and the schemas say so.
    let create = &document["components"]["schemas"]["aigronova.health.v1.CreatePatientRequest"];
    assert_eq!(create["additionalProperties"], false);
    // A fixed set of values is an enum, for a field, a list's items and a query parameter alike.
    let decision = &document["paths"]["/v1/governance/reviews/{id}/decision"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["properties"]["outcome"];
    assert_eq!(decision["enum"], json!(["upheld", "overturned", "amended"]));
    let consent =
        &document["components"]["schemas"]["aigronova.fin.v1.CreateConsentRequest"]["properties"]["permissions"];
    assert_eq!(
        consent["items"]["enum"],
        json!(aigronova_finquantum::consent::KNOWN_PERMISSIONS),
        "as finquantum takes"
    );
    let applicant = &document["components"]["schemas"]["aigronova.fin.v1.Applicant"]["properties"];
    let histories: Vec<&str> = aigronova_finquantum::scoring::CreditHistory::names().collect();
    assert_eq!(applicant["creditHistory"]["enum"], json!(histories));
    assert_eq!(applicant["housing"]["enum"], json!(aigronova_finquantum::scoring::HOUSING));
    assert_eq!(applicant["purpose"]["enum"], json!(aigronova_finquantum::scoring::PURPOSES));
    let reviews = document["paths"]["/v1/governance/reviews"]["get"]["parameters"].as_array().unwrap().clone();
    let status = reviews.iter().find(|parameter| parameter["name"] == "status").unwrap();
    assert_eq!(status["schema"]["enum"], json!(["pending", "decided"]));
    // The longest name a patient has, and so the longest prefix of one, as healthquantum takes them.
    let longest = aigronova_healthquantum::patient::PatientName::MAX_CHARS;
    assert_eq!(create["properties"]["name"]["maxLength"], longest);
    let update =
        &document["paths"]["/v1/health/patients/{id}"]["patch"]["requestBody"]["content"]["application/json"]["schema"];
    let update = match update["$ref"].as_str() {
        Some(reference) => &document["components"]["schemas"][reference.trim_start_matches("#/components/schemas/")],
        None => update,
    };
    assert_eq!(update["properties"]["name"]["maxLength"], longest, "{update}");
    let listing = document["paths"]["/v1/health/patients"]["get"]["parameters"].as_array().unwrap().clone();
    let prefix = listing.iter().find(|parameter| parameter["name"] == "namePrefix").unwrap();
    assert_eq!(prefix["schema"]["maxLength"], longest);
    // Every answer, a problem too, names the request's id.
    let request_id = json!({"$ref": "#/components/headers/X-Request-Id"});
    assert_eq!(
        document["paths"]["/v1/health/patients"]["post"]["responses"]["200"]["headers"]["X-Request-Id"],
        request_id
    );
    assert_eq!(document["components"]["responses"]["NotFound"]["headers"]["X-Request-Id"], request_id);
    assert_eq!(document["paths"]["/healthz"]["get"]["responses"]["200"]["headers"]["X-Request-Id"], request_id);
    // What the services require in a body is required in its schema too.
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["aigronova.health.v1.CreatePatientRequest"]["required"], json!(["name", "cpf", "birthDate"]));
    assert_eq!(
        schemas["aigronova.fin.v1.Applicant"]["required"],
        json!([
            "durationMonths",
            "creditAmount",
            "age",
            "existingCredits",
            "dependents",
            "creditHistory",
            "housing",
            "purpose"
        ])
    );
    let review = &document["paths"]["/v1/governance/reviews"]["post"]["requestBody"]["content"]["application/json"];
    let review = match review["schema"]["$ref"].as_str() {
        Some(reference) => &schemas[reference.trim_start_matches("#/components/schemas/")],
        None => &review["schema"],
    };
    // The decision is named by one of two fields, neither required alone.
    assert_eq!(review["required"], json!(["reason"]), "{review}");
    let readiness = &document["components"]["schemas"]["gateway.Readiness"]["properties"];
    assert!(readiness["rateLimits"].is_object(), "{readiness}");
    let documented = operations(&document).len();
    assert_eq!(documented, routes.routes().len() + GATEWAY_ENDPOINTS.len(), "operations nobody routes");

    let mut broken = document.clone();
    broken.as_object_mut().expect("an object").remove("info");
    assert!(!openapi_errors(&broken).is_empty(), "a document without info passed validation");
    app.stop().await;
}

#[tokio::test]
async fn openapi_json_and_docs_answer_without_a_key_and_the_page_loads_nothing_from_other_hosts() {
    let app = spawn_app(Backend::Sqlite).await;
    fetch_document(&app).await;
    let response = app.client.get(app.url("/docs")).send().await.expect("request sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    let policy = response.headers()["content-security-policy"].to_str().expect("ASCII").to_owned();
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let page = response.text().await.expect("the page");
    for reference in ["http://", "https://", " src=", "<link", "@import", "url("] {
        assert!(!page.contains(reference), "the page contains {reference:?}");
    }
    assert!(page.contains("fetch(\"openapi.json\""), "the page renders the document");
    app.stop().await;
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_those_with_a_scope_refuse_a_call_without_a_key() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = fetch_document(&app).await;
    for (method, template, operation) in operations(&document) {
        let path = template
            .split('/')
            .map(|segment| if segment.starts_with('{') { "dummy-1" } else { segment })
            .collect::<Vec<_>>()
            .join("/");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        let response = app.client.request(method.clone(), app.url(&path)).send().await.expect("request sent");
        let secured = operation["security"].as_array().is_some_and(|alternatives| !alternatives.is_empty());
        if secured {
            assert_problem(response, 401).await;
        } else {
            let status = response.status().as_u16();
            assert!(![401, 404, 405].contains(&status), "{method} {path} answered {status}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_platforms_answers_match_the_documented_schemas() {
    let app = spawn_app(Backend::Sqlite).await;
    let document = fetch_document(&app).await;
    let admin = app.admin_key.clone();

    // Every 201 says where the resource it made is read, as its answers do.
    let mut creations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(created) = operation["responses"].get("201") {
                assert!(created["headers"].get("Location").is_some(), "{method} {path}: {created}");
                creations += 1;
            }
        }
    }
    assert_eq!(creations, 2, "a tenant and an API key");
    let response = app.post("/v1/admin/tenants", &admin, &json!({"name": "Acme", "plan": "starter"})).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("location"));
    let tenant: Value = response.json().await.expect("JSON");
    assert_conforms(&document, "gateway.Tenant", &tenant);
    let tenant_id = tenant["id"].as_str().expect("an id");

    let key_request = json!({"name": "ci", "scopes": ["health:read", "health:write"]});
    assert_conforms(&document, "gateway.CreateApiKeyRequest", &key_request);
    let response = app.post(&format!("/v1/admin/tenants/{tenant_id}/api-keys"), &admin, &key_request).await;
    assert_eq!(response.status(), 201);
    let issued: Value = response.json().await.expect("JSON");
    assert_conforms(&document, "gateway.IssuedKey", &issued);
    let key = issued["key"].as_str().expect("a key");

    let listed: Value = app.get("/v1/admin/tenants?pageSize=1", &admin).await.json().await.expect("JSON");
    assert_conforms(&document, "gateway.TenantList", &listed);
    let read: Value = app.get(&format!("/v1/admin/tenants/{tenant_id}"), &admin).await.json().await.expect("JSON");
    assert_conforms(&document, "gateway.Tenant", &read);
    let keys: Value =
        app.get(&format!("/v1/admin/tenants/{tenant_id}/api-keys"), &admin).await.json().await.expect("JSON");
    assert_conforms(&document, "gateway.ApiKeyList", &keys);
    let update = json!({"plan": "professional"});
    assert_conforms(&document, "gateway.UpdateTenantRequest", &update);
    let response = app
        .client
        .patch(app.url(&format!("/v1/admin/tenants/{tenant_id}")))
        .bearer_auth(&admin)
        .json(&update)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    assert_conforms(&document, "gateway.Tenant", &response.json().await.expect("JSON"));

    let patient_request = json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29"});
    assert_conforms(&document, "aigronova.health.v1.CreatePatientRequest", &patient_request);
    let response = app.post("/v1/health/patients", key, &patient_request).await;
    assert_eq!(response.status(), 200);
    let patient: Value = response.json().await.expect("JSON");
    assert_conforms(&document, "aigronova.health.v1.Patient", &patient);
    let mut mismatches = [patient.clone(), patient.clone(), patient.clone()];
    mismatches[0]["nickname"] = "Mari".into();
    mismatches[1]["createTime"] = "yesterday".into();
    mismatches[2]["name"] = 7.into();
    for mismatch in mismatches {
        let errors = conformance_errors(&document, "aigronova.health.v1.Patient", &mismatch);
        assert!(!errors.is_empty(), "{mismatch} passed as a Patient");
    }

    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/breast-cancer-assessment.json"))
            .expect("the example assessment");
    let assessment_request: Value = serde_json::from_str(&example).expect("JSON");
    let patient_id = patient["id"].as_str().expect("an id");
    let response = app.post(&format!("/v1/health/patients/{patient_id}/assessments"), key, &assessment_request).await;
    assert_eq!(response.status(), 200);
    let assessment: Value = response.json().await.expect("JSON");
    assert_conforms(&document, "aigronova.health.v1.Assessment", &assessment);

    let response = app.get("/v1/health/models", key).await;
    assert_eq!(response.status(), 200);
    let models: Value = response.json().await.expect("JSON");
    assert!(models["models"].as_array().is_some_and(|cards| !cards.is_empty()), "{models}");
    assert_conforms(&document, "aigronova.health.v1.ListModelsResponse", &models);

    let problem = assert_problem(app.get("/v1/health/patients/nobody", key).await, 400).await;
    assert_conforms(&document, "Problem", &problem);
    let unknown = format!("/v1/health/patients/{}", uuid::Uuid::now_v7());
    let problem = assert_problem(app.get(&unknown, key).await, 404).await;
    assert_conforms(&document, "Problem", &problem);

    let health: Value = app.client.get(app.url("/healthz")).send().await.expect("sent").json().await.expect("JSON");
    assert_conforms(&document, "gateway.Liveness", &health);
    let ready: Value = app.client.get(app.url("/readyz")).send().await.expect("sent").json().await.expect("JSON");
    assert_conforms(&document, "gateway.Readiness", &ready);
    app.stop().await;
}
