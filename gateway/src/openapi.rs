//! The OpenAPI 3.1 document of the HTTP API, built once at start-up from the same route table and
//! descriptor set the gateway routes with (paths, parameters, schemas from the messages and their
//! comments, scopes), plus the endpoints the gateway serves itself. Served on `/openapi.json`;
//! `/docs` renders it.

mod docs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use prost_reflect::{DescriptorPool, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::{
    AppState,
    routes::{Route, RouteTable},
    store::{ADMIN_SCOPE, GATEWAY_SCOPES, METRICS_SCOPE},
};

/// The name of the security scheme (`Authorization: Bearer <key>`) in `components`.
const SECURITY_SCHEME: &str = "apiKey";

/// The document and the page, ready to serve.
pub(crate) struct ApiDocs {
    json: Bytes,
    page: docs::Page,
}

impl ApiDocs {
    pub(crate) fn new(routes: &RouteTable, pool: &DescriptorPool) -> anyhow::Result<Self> {
        let json = serde_json::to_vec(&document(routes, pool))?;
        Ok(Self { json: json.into(), page: docs::Page::new() })
    }
}

/// `GET /openapi.json`, without a key.
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Response {
    let headers = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    (headers, state.api_docs.json.clone()).into_response()
}

/// `GET /docs`, without a key.
pub(crate) async fn docs_page(State(state): State<AppState>) -> Response {
    state.api_docs.page.response()
}

/// The OpenAPI 3.1.0 document of every route of `routes` (whose descriptors come from `pool`)
/// and of the gateway's own endpoints.
pub fn document(routes: &RouteTable, pool: &DescriptorPool) -> Value {
    let mut generator = Generator {
        comments: Comments::new(pool),
        schemas: BTreeMap::new(),
        field_behavior: pool.get_extension_by_name("google.api.field_behavior"),
        bounds: [("minimum", "minimum"), ("maximum", "maximum"), ("maxLength", "max_length")]
            .map(|(key, option)| (key, pool.get_extension_by_name(&format!("aigronova.common.v1.{option}")))),
        allowed: pool.get_extension_by_name("aigronova.common.v1.allowed"),
    };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags: BTreeMap<String, Option<String>> = BTreeMap::new();
    for route in routes.routes() {
        let service = route.method.parent_service();
        let description = generator
            .comments
            .get(&service.parent_file(), service.path())
            .or_else(|| generator.comments.get(&service.parent_file(), &[PACKAGE_PATH]));
        tags.entry(service.name().to_owned()).or_insert(description.map(str::to_owned));
        let operation = generator.operation(route);
        paths.entry(route.template.clone()).or_default().insert(route.http_method.as_str().to_lowercase(), operation);
    }
    let mut tags: Vec<Value> = tags
        .into_iter()
        .map(|(name, description)| match description {
            Some(description) => json!({"name": name, "description": description}),
            None => json!({"name": name}),
        })
        .collect();
    let mut known_scopes = routes.scopes();
    known_scopes.extend(GATEWAY_SCOPES.iter().map(|scope| (*scope).to_owned()));
    for (tag, description) in GATEWAY_TAGS {
        tags.push(json!({"name": tag, "description": description}));
    }
    for endpoint in GATEWAY_ENDPOINTS {
        paths.entry(endpoint.path.to_owned()).or_default().insert(endpoint.method.to_owned(), endpoint.operation());
    }
    let mut schemas: Map<String, Value> = generator.schemas.into_iter().collect();
    schemas.extend(gateway_schemas(&known_scopes));
    let mut responses = problem_responses();
    // Every answer carries its request's id, the `requestId` of a problem.
    let answers = paths.values_mut().flat_map(|item| item.values_mut()).flat_map(|operation| {
        operation["responses"].as_object_mut().into_iter().flat_map(|responses| responses.values_mut())
    });
    for response in answers.chain(responses.values_mut()).filter(|response| response.get("$ref").is_none()) {
        let headers = response.as_object_mut().expect("a response").entry("headers").or_insert_with(|| json!({}));
        headers.as_object_mut().expect("headers").insert(REQUEST_ID.to_owned(), header_ref(REQUEST_ID));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AigroNova API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": API_DESCRIPTION,
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "headers": component_headers(),
            "parameters": component_parameters(),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`agk_…`) as `Authorization: Bearer <key>`, or, when the \
                                    deployment trusts an OIDC provider, a JWT from it (RS256, ES256 or EdDSA; tenant \
                                    and scopes from its claims). Each operation names the scope the credential must \
                                    hold.",
                },
            },
        },
    })
}

const API_DESCRIPTION: &str = "JSON over HTTP in front of the AigroNova services. Field names follow the proto3 JSON \
                               mapping (lowerCamelCase; the proto names, snake_case, are accepted in request bodies \
                               and query parameters too; numbers may be sent as strings, and 64-bit integers are \
                               strings in answers). A JSON body may also be labelled \
                               any `…+json` type, or `application/x-www-form-urlencoded` (curl's default for `-d`); \
                               `HEAD` works wherever `GET` does. Every call but `/healthz`, `/readyz`, `/v2`, `/v2/health/…`, `/openapi.json` and `/docs` needs \
                               `Authorization: Bearer <key>` with the scope the operation names. Errors are RFC 9457 \
                               problem documents (`application/problem+json`).";

/// `FileDescriptorProto.package`: where a file's opening comment is kept.
const PACKAGE_PATH: i32 = 2;

/// Leading (else trailing) comments of every element of the descriptor set, by file and path.
struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut comments = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else { continue };
            for location in &info.location {
                let text = [&location.leading_comments, &location.trailing_comments]
                    .into_iter()
                    .filter_map(|comment| comment.as_deref().map(clean_comment))
                    .find(|comment| !comment.is_empty());
                if let Some(text) = text {
                    comments.insert((file.name().to_owned(), location.path.clone()), text);
                }
            }
        }
        Self(comments)
    }

    fn get(&self, file: &FileDescriptor, path: &[i32]) -> Option<&str> {
        self.0.get(&(file.name().to_owned(), path.to_vec())).map(String::as_str)
    }

    fn message(&self, message: &MessageDescriptor) -> Option<&str> {
        self.get(&message.parent_file(), message.path())
    }

    fn field(&self, field: &FieldDescriptor) -> Option<&str> {
        self.get(&field.parent_file(), field.path())
    }
}

/// A comment without the space after `//` and without surrounding blank lines.
fn clean_comment(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end()).collect();
    lines.join("\n").trim().to_owned()
}

/// The first sentence of a comment, on one line.
fn summary_of(comment: &str) -> String {
    let paragraph = comment.split("\n\n").next().unwrap_or_default().replace('\n', " ");
    match paragraph.find(". ") {
        Some(end) => paragraph[..=end].to_owned(),
        None => paragraph,
    }
}

struct Generator {
    comments: Comments,
    /// Component schemas by full proto name; `Null` while one is being built (recursion).
    schemas: BTreeMap<String, Value>,
    /// `google.api.field_behavior`, whose `REQUIRED` fields a request must give.
    field_behavior: Option<prost_reflect::ExtensionDescriptor>,
    /// `aigronova.common.v1.minimum` and `maximum`, the bounds of an integer field, and
    /// `max_length`, a string field's, by the schema keyword each becomes.
    bounds: [(&'static str, Option<prost_reflect::ExtensionDescriptor>); 3],
    /// `aigronova.common.v1.allowed`: the only values a string field takes.
    allowed: Option<prost_reflect::ExtensionDescriptor>,
}

impl Generator {
    fn operation(&mut self, route: &Route) -> Value {
        let method = &route.method;
        let service = method.parent_service();
        let input = method.input();
        let bound: BTreeSet<&str> = route.variables().collect();
        let mut parameters = Vec::new();
        // In the template's order: clients and generated SDKs read them positionally. Every
        // variable is a field of the request (the route table is built so).
        for field in route.variables().filter_map(|name| input.get_field_by_name(name)) {
            let mut parameter = json!({
                "name": field.json_name(), "in": "path", "required": true, "schema": self.field_schema(&field),
            });
            if let Some(comment) = self.comments.field(&field) {
                parameter["description"] = comment.into();
            }
            parameters.push(parameter);
        }
        // The Open Inference Protocol's routes take no query parameter.
        if route.body != "*" && route.by_model.is_none() {
            for field in input.fields() {
                if bound.contains(field.name()) || field.name() == route.body || !settable_from_query(&field) {
                    continue;
                }
                let mut parameter =
                    json!({"name": field.json_name(), "in": "query", "schema": self.field_schema(&field)});
                if self.is_required(&field) {
                    parameter["required"] = true.into();
                }
                if let Some(comment) = self.comments.field(&field) {
                    parameter["description"] = comment.into();
                }
                parameters.push(parameter);
            }
        }
        parameters.push(parameter_ref("RequestId"));
        parameters.push(parameter_ref("GrpcTimeout"));
        if !route.body.is_empty() {
            parameters.push(parameter_ref("ContentEncoding"));
        }
        let mut operation = json!({
            // An additional binding's operation is numbered after the first's.
            "operationId": match route.binding {
                0 => format!("{}_{}", service.name(), method.name()),
                binding => format!("{}_{}_{}", service.name(), method.name(), binding + 1),
            },
            "tags": [service.name()],
            "parameters": parameters,
            "responses": self.responses(route),
            "security": [{SECURITY_SCHEME: [route.scope]}],
            "x-grpc-method": route.grpc_path(),
        });
        if let Some(comment) = self.comments.get(&service.parent_file(), method.path()) {
            operation["summary"] = summary_of(comment).into();
            operation["description"] = comment.into();
        }
        if route.inference {
            // A model call counts against the tenant's monthly inference quota: said in words and
            // in a flag a client generator can read.
            let counted = "Counts one unit a row it scores against the tenant's monthly inference quota \
                           (`\"inference\"` in `RateLimit-Policy`), not taken when the gateway refuses the call and \
                           given back when the service refuses or fails it; a 429 whose `violatedPolicies` names \
                           `inference` lasts until the month ends (UTC), unless its detail says fewer rows fit.";
            let description = operation.get("description").and_then(Value::as_str).unwrap_or_default();
            operation["description"] =
                if description.is_empty() { counted.to_owned() } else { format!("{description}\n\n{counted}") }.into();
            operation["x-aigronova-inference-quota"] = true.into();
        }
        if route.by_model.is_some() {
            // The Open Inference Protocol's REST form: its own JSON, not the messages' mapping.
            let (request, answer) = match method.name() {
                "ModelInfer" => (Some("InferenceRequest"), "InferenceResponse"),
                "ModelMetadata" => (None, "ModelMetadata"),
                _ => (None, "ModelReadiness"),
            };
            // The binary data extension: the JSON, then the tensors' bytes, its length in
            // `Inference-Header-Content-Length`.
            let binary = json!({"schema": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "The binary data extension: the JSON (its length in bytes in the \
                                `Inference-Header-Content-Length` header), then the bytes of each tensor whose \
                                `binary_data_size` parameter gives their length, little endian and row major.",
            }});
            let mut answered = json!({"application/json": {"schema": schema_ref(answer)}});
            if let Some(request) = request {
                operation["requestBody"] = json!({"required": true, "content": {
                    "application/json": {"schema": schema_ref(request)},
                    "application/octet-stream": binary.clone(),
                }});
                answered["application/octet-stream"] = binary;
            }
            operation["responses"]["200"]["content"] = answered;
            operation["responses"]["200"]["description"] = answer.into();
            return operation;
        }
        if let Some(body) = self.request_body(route, &input, &bound) {
            operation["requestBody"] = body;
        }
        operation
    }

    fn request_body(&mut self, route: &Route, input: &MessageDescriptor, bound: &BTreeSet<&str>) -> Option<Value> {
        let mut schema = match route.body.as_str() {
            "" => return None,
            "*" if bound.is_empty() => self.message_ref(input),
            "*" => {
                // A field the path gives may be sent in the body too, with the path's value.
                let mut schema = self.message_schema(input, &BTreeSet::new());
                let path_names: Vec<String> = bound
                    .iter()
                    .filter_map(|name| input.get_field_by_name(name))
                    .map(|f| f.json_name().to_owned())
                    .collect();
                if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
                    required.retain(|name| !path_names.iter().any(|path_name| name == path_name.as_str()));
                    if required.is_empty() {
                        schema.as_object_mut().map(|schema| schema.remove("required"));
                    }
                }
                for name in &path_names {
                    schema["properties"][name]["description"] =
                        "Given by the path; when sent in the body too, it must be the path's value.".into();
                }
                schema["title"] = input.full_name().into();
                schema
            }
            field => {
                let field = input.get_field_by_name(field)?;
                if matches!(field.kind(), Kind::Message(kind) if kind.full_name() == "google.api.HttpBody") {
                    let types = media_types(&route.method, "aigronova.common.v1.request_media_types");
                    let types = if types.is_empty() { vec!["*/*".to_owned()] } else { types };
                    let content = types.into_iter().map(|media_type| {
                        let raw = if media_type == "*/*" {
                            "application/octet-stream".to_owned()
                        } else {
                            media_type.clone()
                        };
                        (media_type, json!({"schema": {"type": "string", "contentMediaType": raw}}))
                    });
                    return Some(json!({
                        "required": true,
                        "description": "The raw body, sent with its own Content-Type.",
                        "content": Value::Object(content.collect()),
                    }));
                }
                self.field_schema(&field)
            }
        };
        // A PATCH that names no field to change is refused: it changes nothing.
        let patch = route.http_method == axum::http::Method::PATCH && route.body == "*";
        if patch {
            schema["minProperties"] = 1.into();
            // The proto3 JSON mapping reads `null` as a field left out.
            if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                for property in properties.values_mut() {
                    match property.get("type").cloned() {
                        Some(Value::String(kind)) => {
                            property["type"] = json!([kind, "null"]);
                            if let Some(values) = property.get_mut("enum").and_then(Value::as_array_mut) {
                                values.push(Value::Null);
                            }
                        }
                        _ => {
                            let description = property.as_object_mut().and_then(|p| p.remove("description"));
                            let mut nullable = json!({"anyOf": [property.take(), {"type": "null"}]});
                            if let Some(description) = description {
                                nullable["description"] = description;
                            }
                            *property = nullable;
                        }
                    }
                }
            }
            let note = "The fields to change, each left as it is when left out or `null`; a body that names none \
                        (`{}`, only nulls, or only the fields the path gives) is refused.";
            schema["description"] = match schema.get("description").and_then(Value::as_str) {
                Some(comment) => format!("{comment}\n\n{note}").into(),
                None => note.into(),
            };
        }
        let mut body = json!({"content": {"application/json": {"schema": schema}}});
        // A body without a field the service requires, or a PATCH's, is refused: it is required.
        let required = patch
            || match route.body.as_str() {
                "*" => input.fields().any(|field| !bound.contains(field.name()) && self.is_required(&field)),
                field => input.get_field_by_name(field).is_some_and(|field| self.is_required(&field)),
            };
        if required {
            body["required"] = true.into();
        }
        Some(body)
    }

    fn responses(&mut self, route: &Route) -> Value {
        let output = route.method.output();
        let mut success = if route.by_model.is_some() {
            json!({"description": output.name()})
        } else if output.full_name() == "google.api.HttpBody" {
            json!({
                "description": "The raw body, with the media type the service chose.",
                "content": self.raw_content(&route.method),
            })
        } else {
            let description = self.comments.message(&output).map_or_else(|| output.name().to_owned(), summary_of);
            json!({
                "description": description,
                "content": {"application/json": {"schema": self.message_ref(&output)}},
            })
        };
        let mut headers = rate_limit_header_refs();
        if success["content"].get("application/pdf").is_some() {
            headers.insert("Content-Disposition".to_owned(), header_ref("Content-Disposition"));
        }
        success["headers"] = Value::Object(headers);
        let mut responses = Map::from_iter([("200".to_owned(), success)]);
        let problems: &[&str] = if route.body.is_empty() { ROUTE_PROBLEMS } else { ROUTE_PROBLEMS_WITH_BODY };
        responses.extend(problem_refs(problems));
        Value::Object(responses)
    }

    /// The media types a raw body answer may have, a JSON one described by the message its
    /// method names (`aigronova.common.v1.response_json_message`) when it names one.
    fn raw_content(&mut self, method: &prost_reflect::MethodDescriptor) -> Value {
        let types = media_types(method, "aigronova.common.v1.response_media_types");
        if types.is_empty() {
            return json!({"*/*": {"schema": {}}});
        }
        let options = method.options();
        let described = method
            .parent_pool()
            .get_extension_by_name("aigronova.common.v1.response_json_message")
            .filter(|extension| options.has_extension(extension))
            .and_then(|extension| options.get_extension(&extension).as_str().map(str::to_owned))
            .and_then(|name| method.parent_pool().get_message_by_name(&name));
        let mut content = Map::new();
        for media_type in types {
            let schema = match (media_type.as_str(), &described) {
                ("application/json", Some(message)) => self.message_ref(message),
                ("application/json", None) => json!({"type": "object"}),
                _ => json!({"type": "string", "contentMediaType": media_type}),
            };
            content.insert(media_type, json!({"schema": schema}));
        }
        Value::Object(content)
    }

    /// Whether `field` is annotated `(google.api.field_behavior) = REQUIRED`.
    fn is_required(&self, field: &prost_reflect::FieldDescriptor) -> bool {
        const REQUIRED: i32 = 2;
        let Some(extension) = &self.field_behavior else { return false };
        let options = field.options();
        options.has_extension(extension)
            && options
                .get_extension(extension)
                .as_list()
                .is_some_and(|behaviors| behaviors.iter().any(|behavior| behavior.as_enum_number() == Some(REQUIRED)))
    }

    /// An object schema with every field of `message` but those in `skip`.
    fn message_schema(&mut self, message: &MessageDescriptor, skip: &BTreeSet<&str>) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            if skip.contains(field.name()) {
                continue;
            }
            let mut schema = self.field_schema(&field);
            let mut notes: Vec<String> = self.comments.field(&field).map(str::to_owned).into_iter().collect();
            if let Some(oneof) = field.containing_oneof().filter(|oneof| !oneof.is_synthetic()) {
                let members: Vec<String> = oneof.fields().map(|member| format!("`{}`", member.json_name())).collect();
                notes.push(format!("At most one of {} is set.", members.join(", ")));
            }
            if !notes.is_empty() {
                schema["description"] = notes.join("\n\n").into();
            }
            if field.field_descriptor_proto().options.as_ref().and_then(|options| options.deprecated) == Some(true) {
                schema["deprecated"] = true.into();
            }
            if self.is_required(&field) {
                required.push(Value::from(field.json_name()));
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        // The services refuse a field their message does not have, and answer none.
        let mut schema = json!({"type": "object", "properties": properties, "additionalProperties": false});
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        if let Some(comment) = self.comments.message(message) {
            schema["description"] = comment.into();
        }
        schema
    }

    /// The schema of a field as the proto3 JSON mapping writes it.
    fn field_schema(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map()
            && let Kind::Message(entry) = field.kind()
        {
            let values = self.kind_schema(&entry.map_entry_value_field().kind());
            return json!({"type": "object", "additionalProperties": values});
        }
        let mut schema = self.kind_schema(&field.kind());
        let options = field.options();
        for (bound, extension) in &self.bounds {
            if let Some(extension) = extension.as_ref().filter(|extension| options.has_extension(extension))
                && let Some(value) = options.get_extension(extension).as_i64()
            {
                schema[*bound] = value.into();
            }
        }
        if let Some(extension) = self.allowed.as_ref().filter(|extension| options.has_extension(extension))
            && let Some(values) = options.get_extension(extension).as_list()
        {
            schema["enum"] = values.iter().filter_map(|value| value.as_str().map(Value::from)).collect();
        }
        if field.is_list() { json!({"type": "array", "items": schema}) } else { schema }
    }

    fn kind_schema(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "uint32", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": ["string", "integer"], "format": "uint64", "pattern": "^[0-9]+$", "minimum": 0})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte", "contentEncoding": "base64"}),
            Kind::Enum(descriptor) => self.enum_ref(descriptor),
            Kind::Message(descriptor) => {
                well_known_schema(descriptor.full_name()).unwrap_or_else(|| self.message_ref(descriptor))
            }
        }
    }

    /// A `$ref` to the component schema of `message`, built on first use.
    fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name();
        if !self.schemas.contains_key(name) {
            self.schemas.insert(name.to_owned(), Value::Null);
            let schema = self.message_schema(message, &BTreeSet::new());
            self.schemas.insert(name.to_owned(), schema);
        }
        schema_ref(name)
    }

    fn enum_ref(&mut self, descriptor: &EnumDescriptor) -> Value {
        let name = descriptor.full_name();
        if name == "google.protobuf.NullValue" {
            return json!({"type": "null"});
        }
        if !self.schemas.contains_key(name) {
            let values: Vec<String> = descriptor.values().map(|value| value.name().to_owned()).collect();
            let mut schema = json!({"type": "string", "enum": values});
            let file = descriptor.parent_file();
            let mut lines: Vec<String> =
                self.comments.get(&file, descriptor.path()).map(str::to_owned).into_iter().collect();
            for value in descriptor.values() {
                if let Some(comment) = self.comments.get(&file, value.path()) {
                    lines.push(format!("- `{}`: {}", value.name(), comment.replace('\n', " ")));
                }
            }
            if !lines.is_empty() {
                schema["description"] = lines.join("\n").into();
            }
            self.schemas.insert(name.to_owned(), schema);
        }
        schema_ref(name)
    }
}

/// Whether the transcoder can set a field from the query string (scalars, enums, and lists of them).
fn settable_from_query(field: &FieldDescriptor) -> bool {
    !field.is_map() && !matches!(field.kind(), Kind::Message(_))
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The JSON forms the proto3 mapping gives the well-known types.
fn well_known_schema(full_name: &str) -> Option<Value> {
    Some(match full_name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "examples": ["1.5s"]})
        }
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.FieldMask" => json!({"type": "string", "examples": ["name,birthDate"]}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": {"@type": {"type": "string"}},
            "required": ["@type"],
            "additionalProperties": true,
        }),
        "google.protobuf.DoubleValue" => json!({"type": "number", "format": "double"}),
        "google.protobuf.FloatValue" => json!({"type": "number", "format": "float"}),
        "google.protobuf.Int64Value" => {
            json!({"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$"})
        }
        "google.protobuf.UInt64Value" => {
            json!({"type": ["string", "integer"], "format": "uint64", "pattern": "^[0-9]+$", "minimum": 0})
        }
        "google.protobuf.Int32Value" => json!({"type": "integer", "format": "int32"}),
        "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "format": "uint32", "minimum": 0, "maximum": u32::MAX})
        }
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "format": "byte", "contentEncoding": "base64"}),
        _ => return None,
    })
}

/// The problem documents the gateway answers with: component response name, status, meaning,
/// and whether it carries `Retry-After`.
const PROBLEMS: &[(&str, &str, &str, bool)] = &[
    ("BadRequest", "400", "The request is malformed, or a field is invalid (`field` names it).", false),
    (
        "Unauthorized",
        "401",
        "No credential, or an API key that is unknown, expired or revoked, or a JWT that does not verify.",
        false,
    ),
    (
        "Forbidden",
        "403",
        "The API key or token lacks the scope (`WWW-Authenticate: Bearer error=\"insufficient_scope\"` names \
         it), its tenant is suspended, an administrator key called a tenant API, or the data subject's consent \
         does not grant what the call needs (`missingPermission` names it).",
        false,
    ),
    ("NotFound", "404", "No such resource.", false),
    ("Conflict", "409", "The resource's state allows no such change now (already decided, already exists).", false),
    ("PayloadTooLarge", "413", "The request body exceeds the plan's limit.", false),
    (
        "UnsupportedMediaType",
        "415",
        "The body is declared as a media type this route does not read (or, on a route that takes a raw body, \
         as none) or in a charset other than UTF-8, or sent with a Content-Encoding other than gzip, deflate or br.",
        false,
    ),
    ("TooManyRequests", "429", "A rate limit or quota is exhausted; retry after `Retry-After` seconds.", true),
    ("InternalError", "500", "An internal error; quote the `requestId` when reporting it.", false),
    (
        "Unavailable",
        "503",
        "The service is unavailable, the gateway is at capacity, or the identity provider's keys cannot be \
         fetched to check a token; retry after `Retry-After` seconds.",
        true,
    ),
    (
        "BadGateway",
        "502",
        "The connection to the service broke after the call was sent (it may have taken effect: look before \
         sending a change again), a third party the service relies on (an Open Finance institution) answered \
         outside its protocol, or the service refused the gateway's credentials.",
        false,
    ),
    ("GatewayTimeout", "504", "The service did not answer in time.", false),
    ("Problem", "default", "Any other error, as a problem document.", false),
];

/// The media types that `method`'s option `extension` lists; none when it is absent.
fn media_types(method: &prost_reflect::MethodDescriptor, extension: &str) -> Vec<String> {
    let options = method.options();
    method
        .parent_pool()
        .get_extension_by_name(extension)
        .filter(|extension| options.has_extension(extension))
        .and_then(|extension| {
            options
                .get_extension(&extension)
                .as_list()
                .map(|types| types.iter().filter_map(|media_type| media_type.as_str().map(str::to_owned)).collect())
        })
        .unwrap_or_default()
}

const ROUTE_PROBLEMS: &[&str] = &[
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "TooManyRequests",
    "InternalError",
    "Unavailable",
    "BadGateway",
    "GatewayTimeout",
    "Problem",
];
const ROUTE_PROBLEMS_WITH_BODY: &[&str] = &[
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "TooManyRequests",
    "InternalError",
    "Unavailable",
    "BadGateway",
    "GatewayTimeout",
    "Problem",
];

fn problem_responses() -> Map<String, Value> {
    PROBLEMS
        .iter()
        .map(|(name, _, description, retry_after)| {
            let mut response = json!({
                "description": description,
                "content": {"application/problem+json": {"schema": schema_ref("Problem")}},
            });
            if *retry_after {
                response["headers"] = json!({
                    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
                });
            }
            if matches!(*name, "Unauthorized" | "Forbidden") {
                response["headers"] = json!({
                    "WWW-Authenticate": {
                        "description": "The RFC 6750 challenge: `Bearer`, `Bearer error=\"invalid_token\"`, or \
                                        `Bearer error=\"insufficient_scope\", scope=\"…\"` for a missing scope; \
                                        absent from a 403 the credential is not at fault for (a suspended tenant, \
                                        a consent that does not grant the call).",
                        "schema": {"type": "string"},
                    },
                });
            }
            if *name == "TooManyRequests" {
                response["headers"].as_object_mut().expect("headers").extend(rate_limit_header_refs());
            }
            ((*name).to_owned(), response)
        })
        .collect()
}

/// The rate limit's fields, which every answer of a limited call carries, and the request id,
/// which every answer carries, in `components`.
fn component_headers() -> Value {
    json!({
        "RateLimit-Policy": {
            "description": "The limits that apply (IETF draft), e.g. `\"tenant\";q=20;w=2`.",
            "schema": {"type": "string"},
        },
        "RateLimit": {
            "description": "What is left of each limit, e.g. `\"tenant\";r=0;t=1`.",
            "schema": {"type": "string"},
        },
        "Location": {
            "description": "The path of the resource just created, where a `GET` reads it.",
            "schema": {"type": "string"},
        },
        "Content-Disposition": {
            "description": "For a PDF: `inline`, with a file name made of the path's last two segments, e.g. \
                            `inline; filename=\"statements-2026-10.pdf\"`.",
            "schema": {"type": "string"},
        },
        REQUEST_ID: {
            "description": "The request's id: the caller's `X-Request-Id` when sane (at most 128 letters, digits \
                            and `-_.:/+=`, not an API key, a JWT or a CPF, given once), generated otherwise.",
            "schema": {"type": "string"},
        },
    })
}

/// The request header fields every operation, or every call to a service, may carry, in
/// `components`.
fn component_parameters() -> Value {
    json!({
        "RequestId": {
            "name": REQUEST_ID,
            "in": "header",
            "description": "An id for the request, which the answer and the access log carry: reused when sane (at \
                            most 128 letters, digits and `-_.:/+=`, not an API key, a JWT or a CPF, given once), \
                            replaced by a generated one otherwise.",
            "schema": {"type": "string", "maxLength": 128},
        },
        "GrpcTimeout": {
            "name": "grpc-timeout",
            "in": "header",
            "description": "How long the caller waits, as gRPC writes it: a positive number of 1 to 8 digits and a \
                            unit (`H`, `M`, `S`, `m`, `u`, `n`), e.g. `250m`. The call is cut short with 504 when it \
                            runs out; a malformed one, zero, or two, is a 400.",
            "schema": {"type": "string", "minLength": 2, "maxLength": 9, "pattern": "^0*[1-9][0-9]*[HMSmun]$"},
        },
        "ContentEncoding": {
            "name": "Content-Encoding",
            "in": "header",
            "description": "The body's codings, in the order applied: `gzip` (or `x-gzip`), `deflate`, `br`, at most \
                            two. The body's limit holds after decoding; another coding is a 415.",
            "schema": {"type": "string"},
        },
    })
}

fn parameter_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

/// `name → $ref` for the rate limit's fields.
fn rate_limit_header_refs() -> Map<String, Value> {
    ["RateLimit-Policy", "RateLimit"].into_iter().map(|name| (name.to_owned(), header_ref(name))).collect()
}

const REQUEST_ID: &str = "X-Request-Id";

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

/// `status → $ref` for the named problem responses.
fn problem_refs(names: &[&str]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|name| PROBLEMS.iter().find(|(candidate, ..)| candidate == name))
        .map(|(name, status, ..)| ((*status).to_owned(), json!({"$ref": format!("#/components/responses/{name}")})))
        .collect()
}

const GATEWAY_TAGS: &[(&str, &str)] = &[
    ("Admin", "Tenants and their API keys. Needs an administrator key (scope `admin`)."),
    ("Gateway", "Probes, metrics and this documentation."),
];

/// One endpoint the gateway serves itself rather than from the descriptor set. Adding one to the
/// router means adding one here (and its body schemas to [`gateway_schemas`]).
struct Endpoint {
    /// Lowercase HTTP method.
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    tag: &'static str,
    summary: &'static str,
    /// Any one of these scopes allows the call; none: no key needed.
    scopes: &'static [&'static str],
    parameters: &'static [Parameter],
    /// The component schema of the JSON request body.
    request: Option<&'static str>,
    /// The answers that are not problems.
    replies: &'static [Reply],
    /// Problem responses, by name in [`PROBLEMS`].
    problems: &'static [&'static str],
}

struct Parameter {
    name: &'static str,
    /// `path` or `query`.
    location: &'static str,
    description: &'static str,
    /// `string` or `integer`.
    kind: &'static str,
    /// An integer's least and greatest values.
    bounds: Option<(i64, i64)>,
}

const fn path_parameter(name: &'static str, description: &'static str) -> Parameter {
    Parameter { name, location: "path", description, kind: "string", bounds: None }
}

struct Reply {
    status: &'static str,
    description: &'static str,
    /// Media type and schema of the body; `None`: no body.
    body: Option<(&'static str, Body)>,
}

enum Body {
    /// A component schema.
    Schema(&'static str),
    Text,
}

const fn json_reply(status: &'static str, description: &'static str, schema: &'static str) -> Reply {
    Reply { status, description, body: Some(("application/json", Body::Schema(schema))) }
}

const TENANT_ID: Parameter = path_parameter("tenantId", "The tenant's id.");
const KEY_ID: Parameter = path_parameter("keyId", "The key's id, a UUID as the key list gives it (400 otherwise).");
const PAGE_SIZE: Parameter = Parameter {
    name: "pageSize",
    location: "query",
    description: "At most this many items (1 to 500; 50 when absent or 0).",
    kind: "integer",
    bounds: Some((0, 500)),
};
const PAGE_TOKEN: Parameter = Parameter {
    name: "pageToken",
    location: "query",
    description: "The `nextPageToken` of the previous page; absent for the first page.",
    kind: "string",
    bounds: None,
};
const ADMIN_PROBLEMS: &[&str] = &["BadRequest", "Unauthorized", "Forbidden", "InternalError", "Problem"];
const ADMIN_BODY_PROBLEMS: &[&str] =
    &["BadRequest", "Unauthorized", "Forbidden", "PayloadTooLarge", "UnsupportedMediaType", "InternalError", "Problem"];
const ADMIN_TENANT_PROBLEMS: &[&str] =
    &["BadRequest", "Unauthorized", "Forbidden", "NotFound", "InternalError", "Problem"];
const ADMIN_TENANT_BODY_PROBLEMS: &[&str] = &[
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "InternalError",
    "Problem",
];

/// The methods the gateway's own route `path` (its template) takes, as its `Allow` header lists
/// them: `HEAD` beside `GET`.
pub(crate) fn own_route_methods(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = GATEWAY_ENDPOINTS
        .iter()
        .filter(|endpoint| endpoint.path == path)
        .flat_map(|endpoint| match endpoint.method {
            "get" => &["GET", "HEAD"][..],
            "post" => &["POST"][..],
            "patch" => &["PATCH"][..],
            "delete" => &["DELETE"][..],
            other => unreachable!("no gateway route takes {other}"),
        })
        .copied()
        .collect();
    methods.sort_unstable();
    methods
}

/// The template of the gateway's own route `path` is (`/v1/admin/tenants/{tenantId}` for
/// `/v1/admin/tenants/t-1`), if it is one: a `{…}` segment stands for any one non-empty segment.
pub(crate) fn own_route_template(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    GATEWAY_ENDPOINTS.iter().map(|endpoint| endpoint.path).find(|template| {
        let pattern: Vec<&str> = template.split('/').collect();
        pattern.len() == segments.len()
            && pattern
                .iter()
                .zip(&segments)
                .all(|(expected, given)| if expected.starts_with('{') { !given.is_empty() } else { expected == given })
    })
}

const GATEWAY_ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "post",
        path: "/v1/admin/tenants",
        operation_id: "Admin_CreateTenant",
        tag: "Admin",
        summary: "Creates a tenant on a plan.",
        scopes: &[ADMIN_SCOPE],
        parameters: &[],
        request: Some("gateway.CreateTenantRequest"),
        replies: &[json_reply("201", "The tenant.", "gateway.Tenant")],
        problems: ADMIN_BODY_PROBLEMS,
    },
    Endpoint {
        method: "get",
        path: "/v1/admin/tenants",
        operation_id: "Admin_ListTenants",
        tag: "Admin",
        summary: "Lists tenants, a page at a time.",
        scopes: &[ADMIN_SCOPE],
        parameters: &[PAGE_SIZE, PAGE_TOKEN],
        request: None,
        replies: &[json_reply("200", "A page of tenants.", "gateway.TenantList")],
        problems: ADMIN_PROBLEMS,
    },
    Endpoint {
        method: "get",
        path: "/v1/admin/tenants/{tenantId}",
        operation_id: "Admin_GetTenant",
        tag: "Admin",
        summary: "Reads a tenant.",
        scopes: &[ADMIN_SCOPE],
        parameters: &[TENANT_ID],
        request: None,
        replies: &[json_reply("200", "The tenant.", "gateway.Tenant")],
        problems: ADMIN_TENANT_PROBLEMS,
    },
    Endpoint {
        method: "patch",
        path: "/v1/admin/tenants/{tenantId}",
        operation_id: "Admin_UpdateTenant",
        tag: "Admin",
        summary: "Changes a tenant's plan or status; a suspended tenant's keys are refused at once.",
        scopes: &[ADMIN_SCOPE],
        parameters: &[TENANT_ID],
        request: Some("gateway.UpdateTenantRequest"),
        replies: &[json_reply("200", "The tenant as updated.", "gateway.Tenant")],
        problems: ADMIN_TENANT_BODY_PROBLEMS,
    },
    Endpoint {
        method: "post",
        path: "/v1/admin/tenants/{tenantId}/api-keys",
        operation_id: "Admin_CreateApiKey",
        tag: "Admin",
        summary: "Issues an API key of a tenant; the key is shown once, in this answer.",
        scopes: &[ADMIN_SCOPE],
        parameters: &[TENANT_ID],
        request: Some("gateway.CreateApiKeyRequest"),
        replies: &[json_reply("201", "The key, shown once.", "gateway.IssuedKey")],
        problems: ADMIN_TENANT_BODY_PROBLEMS,
    },
    Endpoint {
        method: "get",
        path: "/v1/admin/tenants/{tenantId}/api-keys",
        operation_id: "Admin_ListApiKeys",
        tag: "Admin",
        summary: "Lists a tenant's API keys, without the keys themselves, a page at a time.",
        scopes: &[ADMIN_SCOPE],
        parameters: &[TENANT_ID, PAGE_SIZE, PAGE_TOKEN],
        request: None,
        replies: &[json_reply("200", "The tenant's keys.", "gateway.ApiKeyList")],
        problems: ADMIN_TENANT_PROBLEMS,
    },
    Endpoint {
        method: "get",
        path: "/v1/admin/tenants/{tenantId}/api-keys/{keyId}",
        operation_id: "Admin_GetApiKey",
        tag: "Admin",
        summary: "Reads one API key of a tenant, without the key itself, as the list shows it.",
        scopes: &[ADMIN_SCOPE],
        parameters: &[TENANT_ID, KEY_ID],
        request: None,
        replies: &[json_reply("200", "The key.", "gateway.ApiKey")],
        problems: ADMIN_TENANT_PROBLEMS,
    },
    Endpoint {
        method: "delete",
        path: "/v1/admin/tenants/{tenantId}/api-keys/{keyId}",
        operation_id: "Admin_RevokeApiKey",
        tag: "Admin",
        summary: "Revokes an API key; it is refused at once on every replica.",
        scopes: &[ADMIN_SCOPE],
        parameters: &[TENANT_ID, KEY_ID],
        request: None,
        replies: &[Reply { status: "204", description: "Revoked.", body: None }],
        problems: ADMIN_TENANT_PROBLEMS,
    },
    Endpoint {
        method: "get",
        path: "/healthz",
        operation_id: "Gateway_Liveness",
        tag: "Gateway",
        summary: "Liveness: the process answers.",
        scopes: &[],
        parameters: &[],
        request: None,
        replies: &[json_reply("200", "Alive.", "gateway.Liveness")],
        problems: &["BadRequest", "Problem"],
    },
    Endpoint {
        method: "get",
        path: "/v2",
        operation_id: "OpenInference_ServerMetadata",
        tag: "GRPCInferenceService",
        summary: "The Open Inference Protocol's server metadata: the platform's name and version.",
        scopes: &[],
        parameters: &[],
        request: None,
        replies: &[json_reply("200", "The server.", "gateway.InferenceServer")],
        problems: &["BadRequest", "Problem"],
    },
    Endpoint {
        method: "get",
        path: "/v2/health/live",
        operation_id: "OpenInference_ServerLive",
        tag: "GRPCInferenceService",
        summary: "The Open Inference Protocol's liveness: the process answers.",
        scopes: &[],
        parameters: &[],
        request: None,
        replies: &[json_reply("200", "Alive.", "gateway.InferenceLiveness")],
        problems: &["BadRequest", "Problem"],
    },
    Endpoint {
        method: "get",
        path: "/v2/health/ready",
        operation_id: "OpenInference_ServerReady",
        tag: "GRPCInferenceService",
        summary: "The Open Inference Protocol's readiness: ready as `/readyz` says.",
        scopes: &[],
        parameters: &[],
        request: None,
        replies: &[
            json_reply("200", "Ready.", "gateway.InferenceReadiness"),
            json_reply("503", "Not ready, as `/readyz` says.", "gateway.InferenceReadiness"),
        ],
        problems: &["BadRequest", "Problem"],
    },
    Endpoint {
        method: "get",
        path: "/readyz",
        operation_id: "Gateway_Readiness",
        tag: "Gateway",
        summary: "Readiness: the gateway's database answers, and its key is taken by the upstream services.",
        scopes: &[],
        parameters: &[],
        request: None,
        replies: &[
            json_reply("200", "Ready.", "gateway.Readiness"),
            json_reply(
                "503",
                "Not ready: the gateway's database does not answer, Redis does not while `redis_failure` is \
                 `closed`, or every service refuses the gateway's token. A service that is not SERVING leaves the \
                 gateway ready.",
                "gateway.Readiness",
            ),
        ],
        problems: &["BadRequest", "Problem"],
    },
    Endpoint {
        method: "get",
        path: "/metrics",
        operation_id: "Gateway_Metrics",
        tag: "Gateway",
        summary: "Prometheus metrics of the process.",
        scopes: &[METRICS_SCOPE, ADMIN_SCOPE],
        parameters: &[],
        request: None,
        replies: &[Reply {
            status: "200",
            description: "The Prometheus text exposition format.",
            body: Some(("text/plain", Body::Text)),
        }],
        problems: &["BadRequest", "Unauthorized", "Forbidden", "Problem"],
    },
    Endpoint {
        method: "get",
        path: "/openapi.json",
        operation_id: "Gateway_OpenApi",
        tag: "Gateway",
        summary: "This OpenAPI 3.1 document.",
        scopes: &[],
        parameters: &[],
        request: None,
        replies: &[json_reply("200", "The document.", "gateway.OpenApiDocument")],
        problems: &["Problem"],
    },
    Endpoint {
        method: "get",
        path: "/docs",
        operation_id: "Gateway_Docs",
        tag: "Gateway",
        summary: "A page that renders this document.",
        scopes: &[],
        parameters: &[],
        request: None,
        replies: &[Reply { status: "200", description: "The page.", body: Some(("text/html", Body::Text)) }],
        problems: &["Problem"],
    },
];

impl Endpoint {
    fn operation(&self) -> Value {
        let parameters: Vec<Value> = self
            .parameters
            .iter()
            .map(|parameter| {
                let mut schema = json!({"type": parameter.kind});
                if let Some((minimum, maximum)) = parameter.bounds {
                    schema["minimum"] = minimum.into();
                    schema["maximum"] = maximum.into();
                }
                json!({
                    "name": parameter.name,
                    "in": parameter.location,
                    "required": parameter.location == "path",
                    "description": parameter.description,
                    "schema": schema,
                })
            })
            .chain(std::iter::once(parameter_ref("RequestId")))
            .chain(self.request.map(|_| parameter_ref("ContentEncoding")))
            .collect();
        let mut responses: Map<String, Value> = self
            .replies
            .iter()
            .map(|reply| {
                let mut response = json!({"description": reply.description});
                if let Some((media_type, body)) = &reply.body {
                    let schema = match body {
                        Body::Schema(name) => schema_ref(name),
                        Body::Text => json!({"type": "string"}),
                    };
                    response["content"] = json!({*media_type: {"schema": schema}});
                }
                if reply.status == "201" {
                    response["headers"] = json!({"Location": header_ref("Location")});
                }
                (reply.status.to_owned(), response)
            })
            .collect();
        responses.extend(problem_refs(self.problems));
        let security: Vec<Value> = self.scopes.iter().map(|scope| json!({SECURITY_SCHEME: [scope]})).collect();
        let mut operation = json!({
            "operationId": self.operation_id,
            "tags": [self.tag],
            "summary": self.summary,
            "parameters": parameters,
            "responses": responses,
            "security": security,
        });
        if let Some(schema) = self.request {
            operation["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema_ref(schema)}}});
        }
        operation
    }
}

/// The schemas of the gateway's own bodies (see `admin.rs` and `store.rs`), and `Problem`.
/// `scopes` are those a key can be given.
fn gateway_schemas(scopes: &BTreeSet<String>) -> Map<String, Value> {
    let plan = json!({"type": "string", "enum": ["starter", "professional", "enterprise"]});
    let time = json!({"type": "string", "format": "date-time"});
    let nullable_time = json!({"type": ["string", "null"], "format": "date-time"});
    let tensor = |description: &str| {
        json!({
            "type": "object",
            "description": description,
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": {
                    "type": "string",
                    "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64", "BYTES"],
                },
                "parameters": {"$ref": "#/components/schemas/InferenceParameters"},
                "data": {
                    "type": "array",
                    "description": "The elements in row-major order, flat or nested as the shape.",
                    "items": {},
                },
            },
        })
    };
    let tensor_metadata = json!({
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}, "description": "-1 for a dimension of any size."},
        },
    });
    let schemas = json!({
        "InferenceParameters": {
            "type": "object",
            "additionalProperties": {"type": ["boolean", "number", "string"]},
        },
        "InferenceRequest": {
            "type": "object",
            "description": "An inference request of the Open Inference Protocol (v2) in its JSON form.",
            "required": ["inputs"],
            "properties": {
                "model_name": {"type": "string", "description": "The path's model, if sent; another is refused."},
                "model_version": {
                    "type": "string",
                    "description": "The path's version, if sent; another is refused.",
                },
                "id": {
                    "type": "string",
                    "maxLength": 128,
                    "pattern": "^[A-Za-z0-9._:/+=-]*$",
                    "description": "Returned in the answer and kept in the audit log: no personal data or \
                                    credential in it.",
                },
                "parameters": {"$ref": "#/components/schemas/InferenceParameters"},
                "inputs": {"type": "array", "items": tensor("An input tensor.")},
                "outputs": {
                    "type": "array",
                    "description": "The outputs to answer; every one when left out.",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "parameters": {"$ref": "#/components/schemas/InferenceParameters"},
                        },
                    },
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "description": "An inference's answer in the Open Inference Protocol's JSON form.",
            "required": ["model_name", "model_version", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": tensor("An output tensor.")},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": tensor_metadata},
                "outputs": {"type": "array", "items": tensor_metadata},
            },
        },
        "ModelReadiness": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "Problem": {
            "type": "object",
            "description": "An RFC 9457 problem document.",
            "required": ["type", "title", "status", "detail", "instance", "requestId"],
            "properties": {
                "type": {"type": "string", "format": "uri", "description": "Identifies the kind of problem."},
                "title": {"type": "string", "description": "The HTTP status's reason phrase."},
                "status": {"type": "integer", "description": "The HTTP status."},
                "detail": {"type": "string", "description": "What went wrong, for a person."},
                "instance": {"type": "string", "description": "The request path."},
                "requestId": {"type": "string", "description": "The request's `X-Request-Id`; quote it in reports."},
                "field": {"type": "string", "description": "The request field the problem is about."},
                "error": {
                    "type": "string",
                    "description": "On the Open Inference Protocol's routes (`/v2/models/…`), `detail` again, where \
                                    the protocol's clients read an error.",
                },
                "missingPermission": {
                    "type": "string",
                    "description": "The consent permission the use needs and no valid consent grants, e.g. `ACCOUNTS_TRANSACTIONS_READ`.",
                },
                "violatedPolicies": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["tenant", "key", "inference"]},
                    "description": "For a 429 of a rate limit or the monthly inference quota, the policies of `RateLimit-Policy` that refused the call.",
                },
            },
        },
        "gateway.CreateTenantRequest": {
            "type": "object",
            "required": ["name", "plan"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "plan": plan,
            },
        },
        "gateway.UpdateTenantRequest": {
            "type": "object",
            "description": "Give `plan`, `status` or both.",
            "minProperties": 1,
            "additionalProperties": false,
            "properties": {
                "plan": plan,
                "status": {"type": "string", "enum": ["active", "suspended"]},
            },
        },
        "gateway.TenantList": {
            "type": "object",
            "required": ["tenants", "nextPageToken"],
            "properties": {
                "tenants": {"type": "array", "items": schema_ref("gateway.Tenant")},
                "nextPageToken": {"type": "string", "description": "Empty on the last page."},
            },
        },
        "gateway.Tenant": {
            "type": "object",
            "required": ["id", "name", "plan", "status", "createTime"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "plan": plan,
                "status": {
                    "type": "string",
                    "enum": ["active", "suspended"],
                    "description": "A suspended tenant's keys are refused.",
                },
                "createTime": time,
            },
        },
        "gateway.CreateApiKeyRequest": {
            "type": "object",
            "required": ["name", "scopes"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "scopes": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": scopes}},
                "expireTime": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the key stops working (RFC 3339, in the future); never when absent.",
                },
            },
        },
        "gateway.IssuedKey": {
            "type": "object",
            "required": ["id", "key", "name", "scopes", "createTime"],
            "properties": {
                "id": {"type": "string"},
                "key": {"type": "string", "description": "The key itself; it is not shown again."},
                "name": {"type": "string"},
                "tenantId": {"type": ["string", "null"]},
                "scopes": {"type": "array", "items": {"type": "string"}},
                "createTime": time,
                "expireTime": nullable_time,
            },
        },
        "gateway.ApiKey": {
            "type": "object",
            "description": "An API key as listed: its metadata, never the key itself.",
            "required": ["id", "name", "scopes", "createTime"],
            "properties": {
                "id": {"type": "string"},
                "tenantId": {"type": ["string", "null"]},
                "name": {"type": "string"},
                "scopes": {"type": "array", "items": {"type": "string"}},
                "createTime": time,
                "expireTime": nullable_time,
                "lastUsedTime": nullable_time,
                "revokeTime": nullable_time,
            },
        },
        "gateway.ApiKeyList": {
            "type": "object",
            "required": ["apiKeys", "nextPageToken"],
            "properties": {
                "apiKeys": {"type": "array", "items": schema_ref("gateway.ApiKey")},
                "nextPageToken": {
                    "type": "string",
                    "description": "The `pageToken` of the next page; empty on the last page.",
                },
            },
        },
        "gateway.Liveness": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "gateway.InferenceServer": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"const": "aigronova"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "gateway.InferenceLiveness": {
            "type": "object",
            "required": ["live"],
            "properties": {"live": {"type": "boolean"}},
        },
        "gateway.InferenceReadiness": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}},
        },
        "gateway.Readiness": {
            "type": "object",
            "required": ["ready", "database", "upstreams"],
            "properties": {
                "ready": {"type": "boolean"},
                "database": {"type": "boolean", "description": "The gateway's database answers."},
                "upstreams": {
                    "type": "object",
                    "description": "Whether each upstream service reports SERVING, by owner. One that does not leaves \
                                    the gateway ready (its routes answer 503); all of them refusing the gateway's \
                                    internal token does not.",
                    "additionalProperties": {"type": "boolean"},
                },
                "rateLimits": {
                    "type": "boolean",
                    "description": "With Redis configured: whether it answers. Without it a replica whose limits fail closed is not \
                                    ready; one whose limits fail open stays ready, its calls unlimited.",
                },
            },
        },
        "gateway.OpenApiDocument": {"type": "object", "description": "An OpenAPI 3.1 document."},
    });
    match schemas {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
