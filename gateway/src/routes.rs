//! The public routes, built at start-up from the descriptor set: each RPC's `google.api.http`
//! annotation gives its method and path template, `aigronova.common.v1.required_scope` the
//! scope it needs, `aigronova.common.v1.inference` whether it counts against the monthly
//! inference quota, and the service's `aigronova.common.v1.owner` the upstream that serves it.

use std::{collections::BTreeSet, sync::Arc};

use axum::http::{Method, uri::PathAndQuery};
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MethodDescriptor, Value};

/// The owner of a gRPC service that every service with models serves (the Open Inference
/// Protocol): a call goes to the service of the model its path names.
pub const ANY_OWNER: &str = "*";

/// One segment of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{field}`: one path segment bound to a request field.
    Field(String),
}

#[derive(Clone, Debug)]
pub struct Route {
    pub http_method: Method,
    /// The path template as clients see it: its variables named as the JSON names the fields
    /// (`/v1/health/patients/{patientId}/images`), as problems, the OpenAPI document, metrics and
    /// spans name them.
    pub template: String,
    segments: Vec<Segment>,
    /// `*` (the whole request), a field name, or empty (no body).
    pub body: String,
    pub method: MethodDescriptor,
    pub scope: String,
    pub owner: String,
    /// For a route of every service with models ([`ANY_OWNER`]): the path variable naming the
    /// model, whose service is the upstream.
    pub by_model: Option<String>,
    /// Which of the method's bindings this route is: 0 for its `google.api.http` pattern, 1 and
    /// on for its `additional_bindings`.
    pub binding: usize,
    /// The method runs a model, so a call counts against the tenant's monthly inference quota.
    pub inference: bool,
    /// For a raw (`google.api.HttpBody`) request body: the media types the method reads
    /// (`aigronova.common.v1.request_media_types`), lower-case; any when empty.
    pub request_media_types: Vec<String>,
    /// The body maps to a `google.api.HttpBody` field: it is taken raw, with its `Content-Type`.
    pub raw_body: bool,
    /// `/package.Service/Method`.
    grpc_path: PathAndQuery,
    /// Writes the answer as JSON.
    pub(crate) json: Arc<crate::json::Writer>,
}

impl Route {
    /// The request fields the path's variables bind, in the path's order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Field(field) => Some(field.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The gRPC path, e.g. `/aigronova.health.v1.HealthQuantum/GetPatient`.
    pub fn grpc_path(&self) -> &str {
        self.grpc_path.as_str()
    }

    /// The gRPC path as a request target (parsed once, shared by every call).
    pub(crate) fn grpc_target(&self) -> &PathAndQuery {
        &self.grpc_path
    }
}

/// A matched route and the path variables it bound.
#[derive(Debug)]
pub struct Matched<'a> {
    pub route: &'a Route,
    pub variables: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum Lookup<'a> {
    Found(Matched<'a>),
    /// The path is a route's, for other methods: those, and the template of the first such route.
    MethodNotAllowed(Vec<Method>, &'a str),
    NotFound,
}

#[derive(Clone, Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Every annotated RPC of `pool`. An annotated RPC without a scope or whose service has no
    /// owner is a mistake in the protos, and refuses the start.
    pub fn from_descriptors(pool: &DescriptorPool) -> anyhow::Result<Self> {
        let http = pool
            .get_extension_by_name("google.api.http")
            .ok_or_else(|| anyhow::anyhow!("descriptor set lacks google.api.http"))?;
        let scope = pool
            .get_extension_by_name("aigronova.common.v1.required_scope")
            .ok_or_else(|| anyhow::anyhow!("descriptor set lacks aigronova.common.v1.required_scope"))?;
        let owner = pool
            .get_extension_by_name("aigronova.common.v1.owner")
            .ok_or_else(|| anyhow::anyhow!("descriptor set lacks aigronova.common.v1.owner"))?;
        let inference = pool
            .get_extension_by_name("aigronova.common.v1.inference")
            .ok_or_else(|| anyhow::anyhow!("descriptor set lacks aigronova.common.v1.inference"))?;
        let request_media_types = pool
            .get_extension_by_name("aigronova.common.v1.request_media_types")
            .ok_or_else(|| anyhow::anyhow!("descriptor set lacks aigronova.common.v1.request_media_types"))?;
        let mut routes = Vec::new();
        for service in pool.services() {
            let service_options = service.options();
            let owner_name = string_option(&service_options, &owner);
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&http) {
                    continue;
                }
                let Value::Message(rule) = options.get_extension(&http).into_owned() else { continue };
                let scope = string_option(&options, &scope)
                    .ok_or_else(|| anyhow::anyhow!("{}: required_scope is missing", method.full_name()))?;
                let owner = owner_name
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("{}: the service has no owner option", service.full_name()))?;
                let inference = options.get_extension(&inference).as_bool().unwrap_or(false);
                let request_media_types: Vec<String> = options
                    .get_extension(&request_media_types)
                    .as_list()
                    .map(|types| types.iter().filter_map(|media_type| media_type.as_str()))
                    .into_iter()
                    .flatten()
                    .map(str::to_ascii_lowercase)
                    .collect();
                let grpc_path = PathAndQuery::from_maybe_shared(format!("/{}/{}", service.full_name(), method.name()))
                    .map_err(|error| anyhow::anyhow!("{}: not a gRPC path: {error}", method.full_name()))?;
                let json = Arc::new(crate::json::Writer::new(&method.output()));
                let additional = rule.get_field_by_name("additional_bindings");
                let additional = additional.as_ref().and_then(|bindings| bindings.as_list()).unwrap_or_default();
                let bindings = std::iter::once(&rule).chain(additional.iter().filter_map(Value::as_message));
                for (binding, rule) in bindings.enumerate() {
                    let (http_method, template) = http_rule(rule)
                        .ok_or_else(|| anyhow::anyhow!("{}: google.api.http has no pattern", method.full_name()))?;
                    let body =
                        rule.get_field_by_name("body").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                    let segments = parse_template(&template)
                        .ok_or_else(|| anyhow::anyhow!("{}: cannot parse path {template:?}", method.full_name()))?;
                    let template = public_template(&segments, &method.input()).map_err(|field| {
                        anyhow::anyhow!("{}: {template:?} binds {field:?}, no field of its request", method.full_name())
                    })?;
                    let by_model = if owner == ANY_OWNER {
                        let variable = segments.iter().find_map(|segment| match segment {
                            Segment::Field(field) if field == "model_name" || field == "name" => Some(field.clone()),
                            _ => None,
                        });
                        Some(variable.ok_or_else(|| {
                            anyhow::anyhow!("{}: {template:?} names no model for its owner \"*\"", method.full_name())
                        })?)
                    } else {
                        None
                    };
                    let raw_body = method.input().get_field_by_name(&body).is_some_and(
                        |field| matches!(field.kind(), Kind::Message(kind) if kind.full_name() == "google.api.HttpBody"),
                    );
                    routes.push(Route {
                        http_method,
                        template,
                        segments,
                        body,
                        grpc_path: grpc_path.clone(),
                        json: json.clone(),
                        method: method.clone(),
                        scope: scope.clone(),
                        owner: owner.clone(),
                        by_model,
                        binding,
                        inference,
                        request_media_types: request_media_types.clone(),
                        raw_body,
                    });
                }
            }
        }
        Ok(Self { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Every service that serves some route, by the owner name its protos declare.
    pub fn owners(&self) -> BTreeSet<String> {
        self.routes.iter().filter(|route| route.owner != ANY_OWNER).map(|route| route.owner.clone()).collect()
    }

    /// Every scope some route requires.
    pub fn scopes(&self) -> BTreeSet<String> {
        self.routes.iter().map(|route| route.scope.clone()).collect()
    }

    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let parts: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        // Of the templates the path matches, those with the fewest variables: a literal segment
        // (`/patients/search`) names the path more closely than a variable (`/patients/{id}`).
        let (mut found, mut allowed, mut template, mut fewest) = (None, Vec::new(), "", usize::MAX);
        for route in &self.routes {
            let Some(variables) = match_segments(&route.segments, &parts) else { continue };
            if variables.len() > fewest {
                continue;
            }
            if variables.len() < fewest {
                (found, fewest, template) = (None, variables.len(), "");
                allowed.clear();
            }
            // HEAD is GET without the body (RFC 9110): the server leaves the body out.
            if route.http_method == *method || (*method == Method::HEAD && route.http_method == Method::GET) {
                if found.is_none() {
                    found = Some(Matched { route, variables });
                }
                continue;
            }
            if route.http_method == Method::GET {
                allowed.push(Method::HEAD);
            }
            allowed.push(route.http_method.clone());
            if template.is_empty() {
                template = &route.template;
            }
        }
        match found {
            Some(matched) => Lookup::Found(matched),
            None if allowed.is_empty() => Lookup::NotFound,
            None => Lookup::MethodNotAllowed(allowed, template),
        }
    }

    /// The template of the route for `method` and `path`, or, when the path is a route's for other
    /// methods, that route's: what metrics and logs name a request by.
    pub fn template_of(&self, method: &Method, path: &str) -> Option<&str> {
        match self.lookup(method, path) {
            Lookup::Found(matched) => Some(matched.route.template.as_str()),
            Lookup::MethodNotAllowed(_, template) => Some(template),
            Lookup::NotFound => None,
        }
    }
}

fn string_option(options: &DynamicMessage, extension: &prost_reflect::ExtensionDescriptor) -> Option<String> {
    if !options.has_extension(extension) {
        return None;
    }
    options.get_extension(extension).as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn http_rule(rule: &DynamicMessage) -> Option<(Method, String)> {
    for (field, method) in [
        ("get", Method::GET),
        ("post", Method::POST),
        ("put", Method::PUT),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(field) {
            let template = rule.get_field_by_name(field)?.as_str()?.to_owned();
            return Some((method, template));
        }
    }
    None
}

fn parse_template(template: &str) -> Option<Vec<Segment>> {
    template
        .strip_prefix('/')?
        .split('/')
        .map(|part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(field) if !field.is_empty() && !field.contains(['=', '*']) => Some(Segment::Field(field.to_owned())),
            Some(_) => None,
            None if part.is_empty() || part.contains(['{', '}', '*']) => None,
            None => Some(Segment::Literal(part.to_owned())),
        })
        .collect()
}

/// The template with each variable named by its field's JSON name, or the variable that names no
/// field of `input`.
fn public_template(segments: &[Segment], input: &prost_reflect::MessageDescriptor) -> Result<String, String> {
    let mut template = String::new();
    for segment in segments {
        template.push('/');
        match segment {
            Segment::Literal(literal) => template.push_str(literal),
            Segment::Field(name) => {
                let field = input.get_field_by_name(name).ok_or_else(|| name.clone())?;
                template.push('{');
                template.push_str(field.json_name());
                template.push('}');
            }
        }
    }
    Ok(template)
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<Vec<(String, String)>> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut variables = Vec::new();
    for (segment, part) in segments.iter().zip(parts) {
        match segment {
            Segment::Literal(literal) if literal == part => {}
            // `%6D` is `m` (RFC 3986 §6.2.2.2): a literal spelled with escapes is the same literal.
            Segment::Literal(literal)
                if part.contains('%')
                    && percent_encoding::percent_decode_str(part).decode_utf8().is_ok_and(|part| part == *literal) => {}
            Segment::Literal(_) => return None,
            Segment::Field(_) if part.is_empty() => return None,
            Segment::Field(field) => {
                let value = percent_encoding::percent_decode_str(part).decode_utf8().ok()?;
                variables.push((field.clone(), value.into_owned()));
            }
        }
    }
    Some(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).unwrap();
        RouteTable::from_descriptors(&pool).unwrap()
    }

    #[test]
    fn routes_come_from_the_http_annotations() {
        let table = table();
        let Lookup::Found(matched) = table.lookup(&Method::GET, "/v1/health/patients/p-1") else { panic!() };
        assert_eq!(matched.route.grpc_path(), "/aigronova.health.v1.HealthQuantum/GetPatient");
        assert_eq!(matched.route.scope, "health:read");
        assert_eq!(matched.route.owner, "healthquantum");
        assert_eq!(matched.variables, vec![("id".to_owned(), "p-1".to_owned())]);
    }

    #[test]
    fn only_methods_marked_inference_count_against_the_quota() {
        let table = table();
        let Lookup::Found(assess) = table.lookup(&Method::POST, "/v1/health/patients/p-1/assessments") else {
            panic!("the assessment route exists")
        };
        assert!(assess.route.inference);
        let Lookup::Found(get) = table.lookup(&Method::GET, "/v1/health/patients/p-1") else { panic!() };
        assert!(!get.route.inference);
    }

    #[test]
    fn a_known_path_with_another_method_is_not_allowed() {
        assert!(matches!(
            table().lookup(&Method::DELETE, "/v1/health/patients"),
            Lookup::MethodNotAllowed(_, "/v1/health/patients")
        ));
    }

    #[test]
    fn a_request_is_named_by_its_routes_template_whatever_its_path_holds() {
        let table = table();
        let cases = [
            (Method::GET, "/v1/health/patients/529.982.247-25", Some("/v1/health/patients/{id}")),
            (Method::HEAD, "/v1/health/patients/p-1", Some("/v1/health/patients/{id}")),
            (Method::PUT, "/v1/health/patients/p-1", Some("/v1/health/patients/{id}")),
            // Variables are named as the JSON names their fields.
            (Method::GET, "/v1/health/patients/p-1/images", Some("/v1/health/patients/{patientId}/images")),
            (Method::GET, "/agk_0123456789abcdef", None),
        ];
        for (method, path, template) in cases {
            assert_eq!(table.template_of(&method, path), template, "{method} {path}");
        }
    }

    #[test]
    fn unknown_paths_and_empty_variables_do_not_match() {
        let table = table();
        for path in ["/v1/health/nothing", "/v1/health/patients/", "/v1/health/patients//assessments", "/"] {
            assert!(matches!(table.lookup(&Method::GET, path), Lookup::NotFound), "{path}");
        }
    }

    #[test]
    fn literals_spelled_with_escapes_match() {
        let table = table();
        let Lookup::Found(matched) = table.lookup(&Method::GET, "/v1/health/%6Dodels") else { panic!() };
        assert_eq!(matched.route.template, "/v1/health/models");
        let Lookup::Found(matched) = table.lookup(&Method::GET, "/v1/health/pat%69ents/p%2D1") else { panic!() };
        assert_eq!(matched.variables, vec![("id".to_owned(), "p-1".to_owned())]);
        assert!(matches!(table.lookup(&Method::GET, "/v1/health/%2Fmodels"), Lookup::NotFound));
    }

    #[test]
    fn templates_with_wildcards_are_refused() {
        assert_eq!(parse_template("/v1/{name=*}"), None);
        assert_eq!(parse_template("v1/x"), None);
    }
}
