//! The admin API: tenants and their API keys. Needs a key with the `admin` scope.

use std::collections::BTreeSet;

use axum::{
    Json,
    extract::{Path, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, de::DeserializeOwned};

use crate::{
    AppState, auth,
    problem::Problem,
    proxy::read_body,
    store::{ADMIN_SCOPE, Plan},
};

const MAX_NAME_CHARS: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    plan: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApiKey {
    name: String,
    scopes: Vec<String>,
}

/// `POST /v1/admin/tenants` `{"name", "plan"}` → 201 with the tenant.
pub(crate) async fn create_tenant(State(state): State<AppState>, request: Request) -> Result<Response, Problem> {
    let input: CreateTenant = admin_body(&state, request).await?;
    let name = valid_name(&input.name)?;
    let plan = Plan::parse(&input.plan).ok_or_else(|| {
        Problem::invalid_field(
            "plan",
            format!("unknown plan {:?}; use starter, professional or enterprise", input.plan),
        )
    })?;
    let tenant = state.store.create_tenant(name, plan).await.map_err(store_failure)?;
    tracing::info!(tenant_id = %tenant.id, plan = plan.as_str(), "tenant created");
    Ok((StatusCode::CREATED, Json(tenant)).into_response())
}

/// `POST /v1/admin/tenants/{tenant_id}/api-keys` `{"name", "scopes"}` → 201 with the key, shown once.
pub(crate) async fn create_api_key(
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    request: Request,
) -> Result<Response, Problem> {
    let input: CreateApiKey = admin_body(&state, request).await?;
    let name = valid_name(&input.name)?;
    let scopes = valid_scopes(&state, &input.scopes)?;
    if state.store.tenant(&tenant_id).await.map_err(store_failure)?.is_none() {
        return Err(Problem::not_found(format!("tenant {tenant_id:?} not found")));
    }
    let issued = state.store.issue_key(Some(&tenant_id), name, &scopes).await.map_err(store_failure)?;
    tracing::info!(tenant_id = %tenant_id, key_id = %issued.id, "API key issued");
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// Authenticates an administrator and parses the JSON body.
async fn admin_body<T: DeserializeOwned>(state: &AppState, request: Request) -> Result<T, Problem> {
    let (parts, body) = request.into_parts();
    let principal = auth::authenticate(state, &parts.headers).await?;
    auth::require_scope(&principal, ADMIN_SCOPE)?;
    let body = read_body(body, &parts.headers, state.max_body_bytes).await?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|error| Problem::bad_request(format!("the request body is not valid JSON: {error}")))?;
    serde_json::from_value(json).map_err(|error| Problem::bad_request(format!("invalid request body: {error}")))
}

fn valid_name(name: &str) -> Result<&str, Problem> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Problem::invalid_field("name", "name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Problem::invalid_field(
            "name",
            format!("name must be at most {MAX_NAME_CHARS} printable characters"),
        ));
    }
    Ok(name)
}

/// Scopes must be ones some route requires, so that a typo is caught when the key is made.
fn valid_scopes(state: &AppState, scopes: &[String]) -> Result<Vec<String>, Problem> {
    if scopes.is_empty() {
        return Err(Problem::invalid_field("scopes", "at least one scope is required"));
    }
    let mut known = state.routes.scopes();
    known.extend(crate::store::GATEWAY_SCOPES.iter().map(|scope| (*scope).to_owned()));
    let mut unique = BTreeSet::new();
    for scope in scopes {
        if !known.contains(scope) {
            let list: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(Problem::invalid_field(
                "scopes",
                format!("unknown scope {scope:?}; known scopes: {}", list.join(", ")),
            ));
        }
        unique.insert(scope.clone());
    }
    Ok(unique.into_iter().collect())
}

fn store_failure(error: aigronova_platform::storage::StoreError) -> Problem {
    tracing::error!(%error, "gateway store failed");
    Problem::internal()
}
