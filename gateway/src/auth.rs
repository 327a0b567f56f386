//! API keys and OIDC JWTs on the way in (`Authorization: Bearer <credential>`), the internal token
//! on the way out.

use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::{AppState, jwt, problem::Problem, store::Principal};

/// The principal of the request's API key, or of its JWT when OIDC is configured; 401 when the
/// credential is missing, malformed, unknown or (for a JWT) not valid.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<Principal>, Problem> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_credential)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| Problem::unauthorized("send an API key as `Authorization: Bearer <key>`"))?;
    if let Some(authenticator) = &state.jwt
        && jwt::looks_like_jwt(key)
    {
        return authenticator.principal(&state.store, key).await.map(Arc::new);
    }
    let principal = state.keys.principal(key).await.map_err(|error| {
        tracing::error!(%error, "API key lookup failed");
        Problem::internal()
    })?;
    principal.ok_or_else(|| Problem::invalid_token("the API key is not valid"))
}

/// The credential of a `Bearer` authorization; the scheme's name is case-insensitive (RFC 9110).
fn bearer_credential(authorization: &str) -> Option<&str> {
    let (scheme, credential) = authorization.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credential.trim())
}

/// Refuses a principal that lacks `scope`.
pub(crate) fn require_scope(principal: &Principal, scope: &str) -> Result<(), Problem> {
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(Problem::forbidden(format!("this API key lacks the scope {scope:?}")))
    }
}

/// The tenant a tenant API needs; administrator keys and suspended tenants are refused.
pub(crate) fn require_tenant(principal: &Principal) -> Result<&str, Problem> {
    let tenant_id = principal
        .tenant_id
        .as_deref()
        .ok_or_else(|| Problem::forbidden("administrator keys cannot call tenant APIs; use a key of the tenant"))?;
    match principal.tenant_status.as_deref() {
        Some("active") => Ok(tenant_id),
        _ => Err(Problem::forbidden("the tenant is suspended")),
    }
}
