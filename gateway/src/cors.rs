//! Cross-origin requests from browsers, allowed per deployment.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use aigronova_platform::config::ConfigError;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, header};
use futures_util::future::Either;
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

/// The methods the API's routes take: `HEAD` wherever `GET` is taken; no route takes `PUT`.
const ALLOWED_METHODS: [Method; 5] = [Method::GET, Method::HEAD, Method::POST, Method::PATCH, Method::DELETE];

/// The answer's fields a page's script may read: the request id and the trace to quote, the
/// challenge of a 401 or 403, how long to wait after a 429 or 503, the rate limits' state, where a
/// created resource is, and the name a PDF is saved under.
const EXPOSED_HEADERS: [HeaderName; 8] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceresponse"),
    header::WWW_AUTHENTICATE,
    header::RETRY_AFTER,
    HeaderName::from_static("ratelimit"),
    HeaderName::from_static("ratelimit-policy"),
    header::LOCATION,
    header::CONTENT_DISPOSITION,
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

/// Whether `origin` is an origin as browsers send it (RFC 6454): `http` or `https`, `://`, a host
/// in lower case and an optional port, nothing after; compared byte for byte, any other form would
/// never match.
fn is_serialized_origin(origin: &str) -> bool {
    let (authority, default_port) = match origin.strip_prefix("https://") {
        Some(authority) => (authority, "443"),
        None => match origin.strip_prefix("http://") {
            Some(authority) => (authority, "80"),
            None => return false,
        },
    };
    // An IPv6 address is in brackets, with colons of its own.
    let (host, port) = if authority.starts_with('[') {
        let Some(end) = authority.find(']') else { return false };
        let (host, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return false,
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    // Browsers write an IPv6 address in its shortest form (RFC 5952), and leave a scheme's default
    // port out.
    let host_ok = match host.strip_prefix('[').and_then(|host| host.strip_suffix(']')) {
        // (an IPv4 address inside one is written in hex digits too)
        Some(address) => {
            !address.contains('.')
                && address.parse::<std::net::Ipv6Addr>().is_ok_and(|parsed| parsed.to_string() == address)
        }
        None => {
            !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        }
    };
    let port_ok = port.is_none_or(|port| {
        port.parse::<u16>().is_ok_and(|number| number != 0 && number.to_string() == port) && port != default_port
    });
    host_ok && port_ok
}

impl CorsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        // `*` allows every origin: beside others, one of the two was not meant.
        if self.allowed_origins.len() > 1 && self.allowed_origins.iter().any(|origin| origin == "*") {
            return Err(ConfigError(
                "gateway.cors.allowed_origins: \"*\" allows every origin and stands alone; list origins or give [\"*\"]"
                    .into(),
            ));
        }
        for origin in &self.allowed_origins {
            if origin != "*" && !is_serialized_origin(origin) {
                return Err(ConfigError(format!(
                    "gateway.cors.allowed_origins: {origin:?} must be \"*\" or an origin as browsers send it: \
                     http:// or https://, the host in lower case and an optional port, no path"
                )));
            }
        }
        Ok(())
    }

    /// The CORS layer, or `None` when CORS is off. It is split in two (see [`CorsPart`]): the part
    /// that answers preflights goes inside the edge, so that they are logged and counted as any
    /// request; the part that adds the headers to other answers goes outside, so that answers the
    /// edge gives itself (a shed request's 503, a 414) carry them too, and a page's script can read
    /// them.
    pub(crate) fn layer(&self) -> Option<CorsLayer> {
        if self.allowed_origins.is_empty() {
            return None;
        }
        let origins = if self.allowed_origins.iter().any(|origin| origin == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(self.allowed_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()))
        };
        let cors = CorsLayer::new()
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
            .max_age(Duration::from_secs(self.max_age_secs));
        Some(cors)
    }
}

/// One part of the CORS layer: with `preflights`, the part that answers preflights and passes
/// every other request on untouched; without, the part that adds the CORS headers to the answer
/// of every request but an `OPTIONS` (a preflight is the other part's; an `OPTIONS` that is no
/// preflight, without `Origin` or `Access-Control-Request-Method`, goes on to the routes like any
/// other request and is answered as they answer it, 405 with `Allow`, where the CORS layer alone
/// would answer it as a preflight).
#[derive(Clone)]
pub(crate) struct CorsPart {
    cors: CorsLayer,
    preflights: bool,
}

impl CorsPart {
    pub(crate) fn preflights(cors: CorsLayer) -> Self {
        Self { cors, preflights: true }
    }

    pub(crate) fn other_requests(cors: CorsLayer) -> Self {
        Self { cors, preflights: false }
    }
}

impl<S: Clone> Layer<S> for CorsPart {
    type Service = CorsPartService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsPartService { cors: self.cors.layer(inner.clone()), inner, preflights: self.preflights }
    }
}

#[derive(Clone)]
pub(crate) struct CorsPartService<S> {
    cors: Cors<S>,
    inner: S,
    preflights: bool,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CorsPartService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<
        futures_util::future::Map<<Cors<S> as Service<Request<ReqBody>>>::Future, Trimmed<ResBody, S::Error>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.cors.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.inner.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let mine = if self.preflights { is_preflight(&request) } else { request.method() != Method::OPTIONS };
        if mine {
            Either::Left(futures_util::FutureExt::map(self.cors.call(request), without_exposed_headers_unless_allowed))
        } else {
            Either::Right(self.inner.call(request))
        }
    }
}

type Trimmed<B, E> = fn(Result<Response<B>, E>) -> Result<Response<B>, E>;

/// The answer without `Access-Control-Expose-Headers` when no origin was allowed (a request
/// without `Origin`, or from an origin not listed): the CORS layer adds it to every answer, but it
/// means something only beside `Access-Control-Allow-Origin`. `Vary` stays, for caches.
fn without_exposed_headers_unless_allowed<B, E>(answer: Result<Response<B>, E>) -> Result<Response<B>, E> {
    answer.map(|mut response| {
        if !response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            response.headers_mut().remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
        }
        response
    })
}

/// Whether `request` is a CORS preflight: an `OPTIONS` that names its origin and the method it
/// asks for (Fetch standard).
pub(crate) fn is_preflight<Body>(request: &Request<Body>) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::routes::RouteTable;

    #[test]
    fn origins_are_checked_as_browsers_serialize_them() {
        for origin in [
            "*",
            "https://app.example.com",
            "http://localhost:5173",
            "https://app.example.com.br:8443",
            "http://[::1]:3000",
            "http://[::1]",
            "http://127.0.0.1",
            "http://my_app.local:3000",
            "https://x:8443",
        ] {
            let config = CorsConfig { allowed_origins: vec![origin.into()], ..CorsConfig::default() };
            assert!(config.validate().is_ok(), "{origin}");
        }
        for origin in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://APP.example.com",
            "app.example.com",
            "null",
            "ftp://app.example.com",
            "https://",
            "https://app.example.com:",
            "https://app.example.com:99999x",
            "https://app.example.com?x",
            "https://user@app.example.com",
            "http://[::1]x",
            "http://[::1",
            "http://a:1:2",
            "http://a]b",
            "http://[xyz]",
            "http://[::ABCD]",
            "http://[0:0:0:0:0:0:0:1]",
            "https://app.example.com:443",
            "http://app.example.com:80",
            "http://a.b:080",
            "http://localhost:99999",
            "http://localhost:0",
            "http://[::ffff:1.2.3.4]",
        ] {
            let config = CorsConfig { allowed_origins: vec![origin.into()], ..CorsConfig::default() };
            assert!(config.validate().is_err(), "{origin}");
        }
        let mixed = CorsConfig { allowed_origins: vec!["*".into(), "https://a.com".into()], ..CorsConfig::default() };
        assert!(mixed.validate().unwrap_err().to_string().contains("stands alone"));
    }

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
