//! `X-Request-Id`: taken from the client when it is sane, generated otherwise, returned on
//! every response, written in problem documents and passed to the services.

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};

pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request being served, for the code that builds problem documents.
#[derive(Clone, Debug)]
pub(crate) struct RequestInfo {
    pub id: String,
    pub path: String,
}

tokio::task_local! {
    pub(crate) static CURRENT: RequestInfo;
}

/// Whether a client's request id can be reused: short, printable ASCII.
fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

pub(crate) async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let value = HeaderValue::from_str(&id).expect("request ids are printable ASCII");
    request.headers_mut().insert(HEADER, value.clone());
    let info = RequestInfo { id, path: request.uri().path().to_owned() };
    let mut response = CURRENT.scope(info, next.run(request)).await;
    response.headers_mut().insert(HEADER, value);
    response
}

/// The id of the request being served.
pub(crate) fn current() -> Option<String> {
    CURRENT.try_with(|info| info.id.clone()).ok()
}
