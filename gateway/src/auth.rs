//! API keys and OIDC JWTs on the way in (`Authorization: Bearer <credential>`), the internal token
//! on the way out.

use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::{
    AppState, jwt,
    problem::Problem,
    request_id,
    store::{ADMIN_SCOPE, Credential, METRICS_SCOPE, Principal},
};

/// The principal of the request's API key, or of its JWT when OIDC is configured; 401 when the
/// credential is missing, malformed, unknown or (for a JWT) not valid. Who it is is noted for the
/// request's access log line.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<Principal>, Problem> {
    let principal = principal_of(state, headers).await?;
    // The access log names an API key by its public id (never its secret), a token by the
    // pseudonym of its subject.
    request_id::authenticated_as(&principal);
    Ok(principal)
}

async fn principal_of(state: &AppState, headers: &HeaderMap) -> Result<Arc<Principal>, Problem> {
    // Two credentials are no credential: which one would be meant is not for the gateway to guess.
    if headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return Err(Problem::invalid_request("Authorization", "Authorization is given more than once"));
    }
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer_credential(value.as_bytes()))
        .ok_or_else(|| match state.jwt {
            Some(_) => Problem::unauthorized("send an API key or a token as `Authorization: Bearer <key or token>`"),
            None => Problem::unauthorized("send an API key as `Authorization: Bearer <key>`"),
        })?;
    // A Bearer credential is visible ASCII (RFC 6750's b64token); any other is no key and no token,
    // told as what it was meant to be.
    let key = std::str::from_utf8(credential)
        .ok()
        .filter(|key| key.bytes().all(|byte| byte.is_ascii_graphic()))
        .ok_or_else(|| {
            let meant = String::from_utf8_lossy(credential);
            if state.jwt.is_some() && jwt::meant_as_jwt(&meant) {
                Problem::invalid_token("the token is not a well-formed JWT")
            } else {
                Problem::invalid_token("the API key is not valid")
            }
        })?;
    if jwt::meant_as_jwt(key) {
        return match &state.jwt {
            Some(authenticator) => authenticator.principal(&state.keys, key).await.map(Arc::new),
            None => Err(Problem::invalid_token("this deployment takes API keys only: no OIDC provider is configured")),
        };
    }
    let principal = state.keys.principal(key).await.map_err(|error| {
        tracing::error!(request_id = crate::request_id::current().unwrap_or_default(), %error, "API key lookup failed");
        Problem::internal()
    })?;
    match principal {
        Some(principal) if principal.is_expired() => Err(Problem::invalid_token(format!(
            "the API key expired at {}; ask an administrator for a new one",
            principal.expire_time.as_deref().unwrap_or_default()
        ))),
        Some(principal) => Ok(principal),
        None => Err(Problem::invalid_token("the API key is not valid")),
    }
}

/// The credential of a `Bearer` authorization, `None` when there is none; the scheme's name is
/// case-insensitive (RFC 9110).
fn bearer_credential(authorization: &[u8]) -> Option<&[u8]> {
    let authorization = authorization.trim_ascii_start();
    let space = authorization.iter().position(|&byte| byte == b' ')?;
    let (scheme, credential) = (&authorization[..space], authorization[space..].trim_ascii());
    (scheme.eq_ignore_ascii_case(b"bearer") && !credential.is_empty()).then_some(credential)
}

/// Refuses a principal that lacks `scope` with 403 and the RFC 6750 `insufficient_scope`
/// challenge, saying which kind of credential lacks it.
pub(crate) fn require_scope(principal: &Principal, scope: &str) -> Result<(), Problem> {
    if principal.has_scope(scope) {
        return Ok(());
    }
    let detail = match principal.credential {
        Credential::ApiKey => format!("this API key lacks the scope {scope:?}"),
        Credential::Token if scope == ADMIN_SCOPE => {
            format!("a token never grants the scope {scope:?}; call the admin API with an administrator API key")
        }
        Credential::Token if scope == METRICS_SCOPE => {
            format!("a token never grants the scope {scope:?}; scrape with an API key of the operators' tenant")
        }
        Credential::Token => format!("this token lacks the scope {scope:?}"),
    };
    Err(Problem::insufficient_scope(scope, detail))
}

/// The tenant a tenant API that needs `scope` is called for; suspended tenants are refused, and
/// administrator keys, which hold none of a tenant's scopes, as keys without `scope`.
pub(crate) fn require_tenant<'a>(principal: &'a Principal, scope: &str) -> Result<&'a str, Problem> {
    let tenant_id = principal.tenant_id.as_deref().ok_or_else(|| {
        Problem::insufficient_scope(scope, "administrator keys cannot call tenant APIs; use a key of the tenant")
    })?;
    match principal.tenant_status.as_deref() {
        Some("active") => Ok(tenant_id),
        _ => Err(Problem::forbidden("the tenant is suspended")),
    }
}
