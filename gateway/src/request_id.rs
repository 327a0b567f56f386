//! `X-Request-Id`: taken from the client when it is sane, generated otherwise, returned on
//! every response, written in problem documents and passed to the services. The request being
//! served is also where authentication notes the credential's id for the access log.

use std::sync::{Arc, OnceLock};

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
};

use crate::store::Principal;

pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request being served: its id and path for the code that builds problem documents, and
/// the credential it authenticated with for the access log.
#[derive(Clone, Debug)]
pub(crate) struct RequestInfo {
    pub id: String,
    pub path: String,
    /// Who authenticated the request, once someone did.
    pub principal: Arc<OnceLock<Arc<Principal>>>,
}

tokio::task_local! {
    pub(crate) static CURRENT: RequestInfo;
}

/// The request's id, the client's when it sent one acceptable id (two are none: which one is meant
/// is not for the gateway to guess), set on `request` for the services; returns it and its header
/// value, which the response carries back.
pub(crate) fn adopt(request: &mut Request) -> (String, HeaderValue) {
    let mut given = request.headers().get_all(&HEADER).iter();
    let id = match (given.next(), given.next()) {
        (Some(only), None) => {
            only.to_str().ok().filter(|id| aigronova_platform::text::is_reusable_id(id)).map(str::to_owned)
        }
        _ => None,
    }
    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let value = HeaderValue::from_str(&id).expect("request ids are printable ASCII");
    request.headers_mut().insert(HEADER, value.clone());
    (id, value)
}

/// The id of the request being served.
pub(crate) fn current() -> Option<String> {
    CURRENT.try_with(|info| info.id.clone()).ok()
}

/// Notes that the request being served authenticated as `principal`.
pub(crate) fn authenticated_as(principal: &Arc<Principal>) {
    let _ = CURRENT.try_with(|info| info.principal.set(Arc::clone(principal)));
}

/// Who the request being served authenticated as, if it did.
pub(crate) fn principal() -> Option<Arc<Principal>> {
    CURRENT.try_with(|info| info.principal.get().cloned()).ok().flatten()
}
