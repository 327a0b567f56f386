//! Cross-origin requests from browsers, allowed per deployment.

use std::time::Duration;

use aigronova_platform::config::ConfigError;
use axum::http::{HeaderName, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The methods the API's routes take: `HEAD` wherever `GET` is taken; no route takes `PUT`.
const ALLOWED_METHODS: [Method; 5] = [Method::GET, Method::HEAD, Method::POST, Method::PATCH, Method::DELETE];

/// The answer's fields a page's script may read: the request id to quote, the challenge of a 401
/// or 403, how long to wait after a 429 or 503, and the rate limits' state.
const EXPOSED_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-request-id"),
    header::WWW_AUTHENTICATE,
    header::RETRY_AFTER,
    HeaderName::from_static("ratelimit"),
    HeaderName::from_static("ratelimit-policy"),
];

/// `[gateway.cors]`. With no origins, the gateway sends no CORS headers and browsers keep other
/// origins out.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser, e.g. `https://app.example.com.br`; `*` for any
    /// origin (credentials are never allowed, keys travel in `Authorization`).
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self { allowed_origins: Vec::new(), max_age_secs: 600 }
    }
}

impl CorsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            let valid = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && HeaderValue::from_str(origin).is_ok());
            if !valid {
                return Err(ConfigError(format!(
                    "gateway.cors.allowed_origins: {origin:?} must be \"*\" or a scheme://host[:port] origin"
                )));
            }
        }
        Ok(())
    }

    /// The layer, or `None` when CORS is off.
    pub(crate) fn layer(&self) -> Option<CorsLayer> {
        if self.allowed_origins.is_empty() {
            return None;
        }
        let origins = if self.allowed_origins.iter().any(|origin| origin == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(self.allowed_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()))
        };
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(ALLOWED_METHODS)
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::CONTENT_ENCODING,
                    HeaderName::from_static("x-request-id"),
                    HeaderName::from_static("traceparent"),
                    HeaderName::from_static("tracestate"),
                    HeaderName::from_static("grpc-timeout"),
                ])
                .expose_headers(EXPOSED_HEADERS)
                .max_age(Duration::from_secs(self.max_age_secs)),
        )
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::routes::RouteTable;

    #[test]
    fn the_allowed_methods_are_those_of_the_routes_and_head() {
        let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = RouteTable::from_descriptors(&pool).unwrap();
        let routed: Vec<Method> = routes.routes().iter().map(|route| route.http_method.clone()).collect();
        // The admin API's methods, beside the routes from the descriptor set.
        let admin = [Method::GET, Method::POST, Method::PATCH, Method::DELETE];
        for method in routed.iter().chain(&admin) {
            assert!(ALLOWED_METHODS.contains(method), "{method} is used but not allowed");
        }
        // Every method allowed is one a route of the descriptor set takes (HEAD: a GET route's).
        for method in &ALLOWED_METHODS {
            let taken = routed.contains(method) || (*method == Method::HEAD && routed.contains(&Method::GET));
            assert!(taken, "{method} is allowed but no route takes it");
        }
    }
}
