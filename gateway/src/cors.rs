//! Cross-origin requests from browsers, allowed per deployment.

use std::time::Duration;

use aigronova_platform::config::ConfigError;
use axum::http::{HeaderName, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

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
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::CONTENT_ENCODING,
                    HeaderName::from_static("x-request-id"),
                    HeaderName::from_static("traceparent"),
                    HeaderName::from_static("tracestate"),
                    HeaderName::from_static("grpc-timeout"),
                ])
                .expose_headers([
                    HeaderName::from_static("x-request-id"),
                    header::RETRY_AFTER,
                    HeaderName::from_static("ratelimit"),
                    HeaderName::from_static("ratelimit-policy"),
                ])
                .max_age(Duration::from_secs(self.max_age_secs)),
        )
    }
}
