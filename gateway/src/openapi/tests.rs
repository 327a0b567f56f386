//! The generator against the platform's protos and against `tests/fixtures/catalog.proto`, which
//! uses every kind of field.

use serde_json::{Value, json};

use super::*;

const OPENAPI_SCHEMA: &str = include_str!("../../tests/fixtures/openapi-3.1.schema.json");

fn platform_pool() -> DescriptorPool {
    DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

/// `catalog.proto` compiled with its comments, the platform's protos on the include path.
fn catalog_pool() -> DescriptorPool {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let mut compiler =
        protox::Compiler::new([format!("{manifest}/tests/fixtures"), format!("{manifest}/../proto/proto")])
            .expect("include paths");
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_file("catalog.proto")
        .expect("catalog.proto compiles");
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).expect("the descriptor set decodes")
}

fn document_of(pool: &DescriptorPool) -> (RouteTable, Value) {
    let routes = RouteTable::from_descriptors(pool).expect("routes");
    let document = document(&routes, pool);
    (routes, document)
}

fn operation<'a>(document: &'a Value, path: &str, method: &str) -> &'a Value {
    let operation = &document["paths"][path][method];
    assert!(operation.is_object(), "no {method} {path} in {:#}", document["paths"]);
    operation
}

fn schema<'a>(document: &'a Value, name: &str) -> &'a Value {
    let schema = &document["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

fn parameter_names(operation: &Value, location: &str) -> Vec<String> {
    operation["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|parameter| parameter["in"] == location)
        .map(|parameter| parameter["name"].as_str().expect("a name").to_owned())
        .collect()
}

fn validation_errors(document: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(OPENAPI_SCHEMA).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the OpenAPI 3.1 schema compiles");
    validator.iter_errors(document).map(|error| format!("{} at {}", error, error.instance_path())).collect()
}

/// Every `$ref` in `value`.
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(target.clone());
            }
            map.values().for_each(|child| refs(child, found));
        }
        Value::Array(items) => items.iter().for_each(|child| refs(child, found)),
        _ => {}
    }
}

fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    document.pointer(reference.strip_prefix('#')?).filter(|target| !target.is_null())
}

/// The variables of a path template, e.g. `patientId` in `/v1/health/patients/{patientId}`.
fn template_variables(template: &str) -> impl Iterator<Item = &str> {
    template.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

#[test]
fn every_annotated_rpc_is_an_operation_with_its_method_scope_and_path_parameters() {
    for pool in [platform_pool(), catalog_pool()] {
        let (routes, document) = document_of(&pool);
        assert!(!routes.routes().is_empty());
        for route in routes.routes() {
            let method = route.http_method.as_str().to_lowercase();
            let operation = operation(&document, &route.template, &method);
            let service = route.method.parent_service();
            let id = format!("{}_{}", service.name(), route.method.name());
            let id = if route.binding == 0 { id } else { format!("{id}_{}", route.binding + 1) };
            assert_eq!(operation["operationId"], id);
            assert_eq!(operation["security"], json!([{"apiKey": [route.scope]}]));
            assert_eq!(operation["tags"], json!([service.name()]));
            let variables: Vec<String> = template_variables(&route.template).map(str::to_owned).collect();
            assert_eq!(parameter_names(operation, "path"), variables, "{}", route.template);
        }
    }
}

#[test]
fn the_documents_are_valid_openapi_3_1() {
    for pool in [platform_pool(), catalog_pool()] {
        let (_, document) = document_of(&pool);
        assert_eq!(validation_errors(&document), Vec::<String>::new());
    }
}

#[test]
fn every_ref_points_to_a_defined_component() {
    for pool in [platform_pool(), catalog_pool()] {
        let (_, document) = document_of(&pool);
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for reference in found {
            assert!(resolve(&document, &reference).is_some(), "{reference} points nowhere");
        }
    }
}

#[test]
fn operation_ids_are_unique() {
    for pool in [platform_pool(), catalog_pool()] {
        let (_, document) = document_of(&pool);
        let mut seen = BTreeSet::new();
        for item in document["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().expect("an operationId").to_owned();
                assert!(seen.insert(id.clone()), "{id} twice");
            }
        }
    }
}

#[test]
fn comments_become_summaries_and_descriptions() {
    let (_, document) = document_of(&catalog_pool());
    let list = operation(&document, "/v1/shelves/{shelfId}/things", "get");
    assert_eq!(list["summary"], "Lists the things on a shelf.");
    assert_eq!(list["description"], "Lists the things on a shelf.\n\nFilters combine with AND.");
    assert!(operation(&document, "/v1/things/{thingId}", "delete").get("summary").is_none());
    let thing = schema(&document, "aigronova.testing.v1.Thing");
    assert_eq!(thing["description"], "Something on a shelf.");
    assert_eq!(thing["properties"]["createTime"]["description"], "When it was made.");
    let color = schema(&document, "aigronova.testing.v1.Color");
    assert_eq!(color["description"], "- `BLUE`: Like the sky.");
    let tags = document["tags"].as_array().unwrap();
    let catalog = tags.iter().find(|tag| tag["name"] == "Catalog").expect("a Catalog tag");
    assert_eq!(catalog["description"], "A catalog that uses every kind of field, for the OpenAPI generator's tests.");

    let (_, platform) = document_of(&platform_pool());
    let create = operation(&platform, "/v1/health/patients", "post");
    assert_eq!(create["summary"], "Registers a patient of the calling tenant.");
}

#[test]
fn query_parameters_are_the_scalar_fields_the_path_does_not_bind() {
    let (_, document) = document_of(&catalog_pool());
    let list = operation(&document, "/v1/shelves/{shelfId}/things", "get");
    assert_eq!(parameter_names(list, "path"), ["shelfId"]);
    assert_eq!(
        parameter_names(list, "query"),
        ["pageSize", "minWeight", "maxWeight", "color", "tags", "inStock", "minPrice", "token"]
    );
    let parameters = list["parameters"].as_array().unwrap();
    let find = |name: &str| parameters.iter().find(|parameter| parameter["name"] == name).unwrap();
    assert_eq!(find("pageSize")["description"], "At most this many things.");
    assert_eq!(find("tags")["schema"], json!({"type": "array", "items": {"type": "string"}}));
    assert_eq!(find("color")["schema"], json!({"$ref": "#/components/schemas/aigronova.testing.v1.Color"}));
    assert_eq!(find("shelfId")["required"], true);
    assert!(list.get("requestBody").is_none(), "a GET without body has no request body");
}

#[test]
fn a_body_field_is_the_request_body_and_leaves_no_query_parameters() {
    let (_, document) = document_of(&catalog_pool());
    let put = operation(&document, "/v1/shelves/{shelfId}/things/{thingId}", "put");
    assert_eq!(parameter_names(put, "path"), ["shelfId", "thingId"]);
    assert!(parameter_names(put, "query").is_empty());
    assert_eq!(
        put["requestBody"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/aigronova.testing.v1.Thing"})
    );
    assert_eq!(
        put["responses"]["413"],
        json!({"$ref": "#/components/responses/PayloadTooLarge"}),
        "a route with a body can be too large"
    );
    let delete = operation(&document, "/v1/things/{thingId}", "delete");
    assert!(delete["responses"].get("413").is_none());
}

#[test]
fn a_whole_body_may_repeat_the_fields_the_path_binds_and_does_not_require_them() {
    let (_, document) = document_of(&platform_pool());
    let assess = operation(&document, "/v1/health/patients/{patientId}/assessments", "post");
    let body = &assess["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["title"], "aigronova.health.v1.AssessRiskRequest");
    let properties: Vec<&String> = body["properties"].as_object().unwrap().keys().collect();
    assert_eq!(properties, ["features", "model", "patientId"]);
    assert!(
        body["properties"]["patientId"]["description"].as_str().unwrap().contains("must be the path's value"),
        "{body}"
    );
    let required = body["required"].as_array().map(|names| names.iter().any(|name| name == "patientId"));
    assert_ne!(required, Some(true), "the path gives it: {body}");
    assert_eq!(body["properties"]["features"]["additionalProperties"], json!({"type": "number", "format": "double"}));
    assert!(parameter_names(assess, "query").is_empty(), "a whole body takes no query parameters");
    assert_eq!(
        assess["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/aigronova.health.v1.Assessment"})
    );

    // A change's fields may each be null, read as left out.
    let update = operation(&document, "/v1/health/patients/{id}", "patch");
    let body = &update["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["properties"]["email"]["type"], json!(["string", "null"]), "{body}");
    assert_eq!(body["minProperties"], 1);
    assert!(body["description"].as_str().unwrap().contains("`null`"), "{body}");

    let create = operation(&document, "/v1/health/patients", "post");
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/aigronova.health.v1.CreatePatientRequest"})
    );
}

#[test]
fn field_types_follow_the_proto3_json_mapping() {
    let (_, document) = document_of(&catalog_pool());
    let properties = &schema(&document, "aigronova.testing.v1.Thing")["properties"];
    let color = json!({"$ref": "#/components/schemas/aigronova.testing.v1.Color"});
    let cases = [
        ("id", json!({"type": "string"})),
        ("shelfLife", json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "examples": ["1.5s"]})),
        ("attributes", json!({"type": "object", "additionalProperties": true})),
        ("extra", json!({})),
        ("stock", json!({"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$"})),
        ("nickname", json!({"type": "string"})),
        ("photo", json!({"type": "string", "format": "byte", "contentEncoding": "base64"})),
        (
            "parts",
            json!({"type": "object", "additionalProperties": {"$ref": "#/components/schemas/aigronova.testing.v1.Part"}}),
        ),
        ("colors", json!({"type": "array", "items": color})),
        ("weight", json!({"type": "number", "format": "float"})),
        ("count", json!({"type": "integer", "format": "uint32", "minimum": 0, "maximum": u32::MAX})),
        ("offset", json!({"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$"})),
        ("note", json!({"type": "string"})),
        ("nothing", json!({"type": "object"})),
        ("list", json!({"type": "array", "items": {}})),
        ("serial", json!({"type": ["string", "integer"], "format": "uint64", "pattern": "^[0-9]+$", "minimum": 0})),
        ("nullValue", json!({"type": "null"})),
    ];
    for (name, expected) in cases {
        assert_eq!(properties[name], expected, "{name}");
    }
    assert_eq!(properties["createTime"]["format"], "date-time");
    assert_eq!(properties["oldName"]["deprecated"], true);
    assert_eq!(properties["madeIn"]["description"], "At most one of `madeIn`, `foundAt` is set.");
    assert!(properties.get("made_in").is_none(), "names are the JSON names");
    assert_eq!(schema(&document, "aigronova.testing.v1.Color")["enum"], json!(["COLOR_UNSPECIFIED", "BLUE", "RED"]));
}

#[test]
fn recursive_messages_are_components_that_refer_to_each_other() {
    let (_, document) = document_of(&catalog_pool());
    let tree = schema(&document, "aigronova.testing.v1.Tree");
    assert_eq!(
        tree["properties"]["children"]["items"],
        json!({"$ref": "#/components/schemas/aigronova.testing.v1.Tree"})
    );
    let part = schema(&document, "aigronova.testing.v1.Part");
    assert_eq!(part["properties"]["spare"]["$ref"], "#/components/schemas/aigronova.testing.v1.Thing");
}

#[test]
fn an_http_body_answer_is_the_raw_body() {
    let (_, document) = document_of(&catalog_pool());
    let draw = operation(&document, "/v1/things/{thingId}/picture", "get");
    assert_eq!(draw["responses"]["200"]["content"], json!({"*/*": {"schema": {}}}));
    assert!(document["components"]["schemas"].get("google.api.HttpBody").is_none());
}

#[test]
fn errors_are_problem_documents() {
    let (_, document) = document_of(&platform_pool());
    let get = operation(&document, "/v1/health/patients/{id}", "get");
    for status in ["400", "401", "403", "404", "429", "500", "502", "503", "504", "default"] {
        let reference = get["responses"][status]["$ref"].as_str().unwrap_or_else(|| panic!("no {status}"));
        let response = resolve(&document, reference).unwrap();
        assert_eq!(response["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem");
    }
    let problem = schema(&document, "Problem");
    let members: Vec<&String> = problem["properties"].as_object().unwrap().keys().collect();
    assert_eq!(
        members,
        [
            "detail",
            "error",
            "field",
            "instance",
            "missingPermission",
            "requestId",
            "status",
            "title",
            "type",
            "violatedPolicies"
        ]
    );
    let retry = resolve(&document, "#/components/responses/TooManyRequests").unwrap();
    assert!(retry["headers"]["Retry-After"].is_object());
    // The rate limit's fields come with every answer of a limited call, refused or not.
    for headers in [&retry["headers"], &get["responses"]["200"]["headers"]] {
        for name in ["RateLimit-Policy", "RateLimit"] {
            let field = resolve(&document, headers[name]["$ref"].as_str().unwrap_or_else(|| panic!("no {name}")));
            assert_eq!(field.unwrap()["schema"]["type"], "string");
        }
    }
}

#[test]
fn integer_bounds_from_the_field_options_are_in_the_schemas() {
    let (_, document) = document_of(&platform_pool());
    let page_size = |path: &str| {
        let parameters = operation(&document, path, "get")["parameters"].as_array().unwrap();
        parameters.iter().find(|parameter| parameter["name"] == "pageSize").expect("pageSize")["schema"].clone()
    };
    for (path, minimum, maximum) in [
        ("/v1/health/patients", 0, 100),
        ("/v1/governance/reviews", 0, 100),
        ("/v1/governance/subject-requests", 0, 100),
        ("/v1/governance/audit/entries", 0, 1000),
        ("/v1/governance/audit/checkpoints", 0, 1000),
    ] {
        let schema = page_size(path);
        assert_eq!((&schema["minimum"], &schema["maximum"]), (&json!(minimum), &json!(maximum)), "{path}: {schema}");
    }
    // The admin API's, described by the gateway itself.
    let schema = page_size("/v1/admin/tenants");
    assert_eq!((&schema["minimum"], &schema["maximum"]), (&json!(0), &json!(500)), "{schema}");
}

#[test]
fn the_gateway_endpoints_are_described_with_their_scopes() {
    let (routes, document) = document_of(&platform_pool());
    let cases = [
        ("/v1/admin/tenants", "post", json!([{"apiKey": ["admin"]}])),
        ("/v1/admin/tenants", "get", json!([{"apiKey": ["admin"]}])),
        ("/v1/admin/tenants/{tenantId}", "get", json!([{"apiKey": ["admin"]}])),
        ("/v1/admin/tenants/{tenantId}", "patch", json!([{"apiKey": ["admin"]}])),
        ("/v1/admin/tenants/{tenantId}/api-keys", "post", json!([{"apiKey": ["admin"]}])),
        ("/v1/admin/tenants/{tenantId}/api-keys", "get", json!([{"apiKey": ["admin"]}])),
        ("/v1/admin/tenants/{tenantId}/api-keys/{keyId}", "get", json!([{"apiKey": ["admin"]}])),
        ("/v1/admin/tenants/{tenantId}/api-keys/{keyId}", "delete", json!([{"apiKey": ["admin"]}])),
        ("/metrics", "get", json!([{"apiKey": ["metrics:read"]}, {"apiKey": ["admin"]}])),
        ("/healthz", "get", json!([])),
        ("/readyz", "get", json!([])),
        ("/v2", "get", json!([])),
        ("/v2/health/live", "get", json!([])),
        ("/v2/health/ready", "get", json!([])),
        ("/v2/models/{name}", "get", json!([{"apiKey": ["models:read"]}])),
        ("/v2/models/{modelName}/infer", "post", json!([{"apiKey": ["models:infer"]}])),
        ("/openapi.json", "get", json!([])),
        ("/docs", "get", json!([])),
    ];
    for (path, method, security) in cases {
        assert_eq!(operation(&document, path, method)["security"], security, "{method} {path}");
    }
    let scopes = &schema(&document, "gateway.CreateApiKeyRequest")["properties"]["scopes"]["items"]["enum"];
    let mut expected = routes.scopes();
    expected.extend(crate::store::GATEWAY_SCOPES.iter().map(|scope| (*scope).to_owned()));
    assert!(expected.contains("health:write") && expected.contains("metrics:read"));
    assert_eq!(scopes, &json!(expected.into_iter().collect::<Vec<_>>()), "every scope a key may hold, sorted");
    let security = &document["components"]["securitySchemes"]["apiKey"];
    assert_eq!((&security["type"], &security["scheme"]), (&json!("http"), &json!("bearer")));
}

#[test]
fn gateway_endpoint_parameters_match_their_templates() {
    for endpoint in GATEWAY_ENDPOINTS {
        let names: Vec<&str> = endpoint
            .parameters
            .iter()
            .filter(|parameter| parameter.location == "path")
            .map(|parameter| parameter.name)
            .collect();
        assert_eq!(names, template_variables(endpoint.path).collect::<Vec<_>>(), "{}", endpoint.path);
        for name in endpoint.problems {
            assert!(PROBLEMS.iter().any(|(problem, ..)| problem == name), "{name} is not a problem response");
        }
    }
}

#[test]
fn a_broken_document_fails_validation() {
    let (_, document) = document_of(&platform_pool());
    type Breakage = fn(&mut Value);
    let breakages: [(&str, Breakage); 5] = [
        ("no info", |document| {
            document.as_object_mut().unwrap().remove("info");
        }),
        ("OpenAPI 3.0", |document| document["openapi"] = "3.0.3".into()),
        ("a parameter without `in`", |document| {
            let parameters = &mut document["paths"]["/v1/health/patients/{id}"]["get"]["parameters"];
            parameters[0].as_object_mut().unwrap().remove("in");
        }),
        ("a schema that is a number (checked through `$dynamicRef`)", |document| {
            document["components"]["schemas"]["Problem"] = 5.into();
        }),
        ("a path that does not start with /", |document| {
            let paths = document["paths"].as_object_mut().unwrap();
            let item = paths.remove("/healthz").unwrap();
            paths.insert("healthz".into(), item);
        }),
    ];
    for (what, breakage) in breakages {
        let mut broken = document.clone();
        breakage(&mut broken);
        assert!(!validation_errors(&broken).is_empty(), "{what} passed validation");
    }
}

#[test]
fn summaries_are_the_first_sentence_on_one_line() {
    let cases = [
        ("Reads a patient.", "Reads a patient."),
        ("Reads a patient. Then more.", "Reads a patient."),
        ("Reads a patient\nof the tenant.\n\nDetails.", "Reads a patient of the tenant."),
        ("Version 1.2 of it", "Version 1.2 of it"),
    ];
    for (comment, summary) in cases {
        assert_eq!(summary_of(comment), summary, "{comment:?}");
    }
}
