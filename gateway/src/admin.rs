//! The admin API: tenants and their API keys. Needs a key with the `admin` scope.

use std::collections::BTreeSet;

use axum::{
    Json,
    body::HttpBody,
    extract::{Path, Request, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, de::DeserializeOwned};

use crate::{
    AppState, auth,
    problem::Problem,
    proxy::read_body,
    store::{ADMIN_SCOPE, Plan, TenantStatus},
};

const MAX_NAME_CHARS: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    plan: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateApiKey {
    name: String,
    scopes: Vec<String>,
    /// RFC 3339; the key stops working then.
    #[serde(default, alias = "expire_time")]
    expire_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// The query of `GET /v1/admin/tenants`.
#[derive(Default)]
struct ListQuery {
    page_size: Option<i64>,
    page_token: Option<String>,
}

/// A `pageSize` that is not a whole number of the range lists take.
fn page_size_refused() -> Problem {
    Problem::invalid_field(
        "pageSize",
        format!(
            "pageSize must be a whole number from 1 to {MAX_PAGE_SIZE}, or 0 for the default ({DEFAULT_PAGE_SIZE})"
        ),
    )
}

/// The digest a page token of the admin list `list` carries after the id `after`: 16 hex digits of
/// a keyed SHA-256 under the gateway's `key`, so that a token goes on only in the list that gave
/// it and is not made up.
fn token_digest(key: &str, list: &str, after: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update([0])
        .chain_update(list.as_bytes())
        .chain_update([0])
        .chain_update(after.as_bytes())
        .finalize();
    hex::encode(&digest[..8])
}

impl ListQuery {
    /// The page size (as on every list, AIP-158: 0 or none is the default) and the id the page
    /// goes on after, from a token of `list` made under `key` (see [`page_of`]). A token is an id as
    /// the list wrote it, `.` and its digest: another spelling would compare otherwise.
    fn page(self, key: &str, list: &str) -> Result<(i64, Option<String>), Problem> {
        let page_size = self.page_size.filter(|size| *size != 0).unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(page_size_refused());
        }
        let Some(token) = self.page_token.filter(|token| !token.is_empty()) else {
            return Ok((page_size, None));
        };
        let given = |id: &str| uuid::Uuid::parse_str(id).is_ok_and(|uuid| uuid.to_string() == id);
        match token.split_once('.') {
            Some((id, digest))
                if given(id)
                    && aigronova_platform::crypto::equal_in_constant_time(
                        digest.as_bytes(),
                        token_digest(key, list, id).as_bytes(),
                    ) =>
            {
                Ok((page_size, Some(id.to_owned())))
            }
            _ => Err(Problem::invalid_field(
                "pageToken",
                "pageToken is not a token this list gave; send it unchanged, or omit it for the first page",
            )),
        }
    }

    /// Reads `pageSize` and `pageToken` (or their proto names); any other parameter, or one
    /// given twice, is a 400.
    fn parse(query: &str) -> Result<Self, Problem> {
        let twice =
            |name: &str| Problem::invalid_field(name, format!("query parameter {name} is given more than once"));
        let mut parsed = Self::default();
        for (name, value) in crate::transcode::form_pairs(query)? {
            match name.as_str() {
                "pageSize" | "page_size" => {
                    let size = crate::transcode::integer(&value).ok_or_else(page_size_refused)?;
                    if parsed.page_size.replace(size).is_some() {
                        return Err(twice("pageSize"));
                    }
                }
                "pageToken" | "page_token" => {
                    if parsed.page_token.replace(value).is_some() {
                        return Err(twice("pageToken"));
                    }
                }
                _ => {
                    return Err(Problem::invalid_field(
                        &name,
                        format!(
                            "unknown query parameter {}: this list takes pageSize and pageToken",
                            crate::problem::quoted(&name)
                        ),
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

/// `POST /v1/admin/tenants` `{"name", "plan"}` → 201 with the tenant.
pub(crate) async fn create_tenant(State(state): State<AppState>, request: Request) -> Result<Response, Problem> {
    let input: CreateTenant = admin_body(&state, request, None).await?;
    let name = valid_name(&input.name)?;
    let plan = Plan::parse(&input.plan).ok_or_else(|| {
        Problem::invalid_field(
            "plan",
            format!("unknown plan {}; use starter, professional or enterprise", crate::problem::quoted(&input.plan)),
        )
    })?;
    let tenant = state.store.create_tenant(name, plan).await.map_err(store_failure)?;
    tracing::info!(tenant_id = %tenant.id, plan = plan.as_str(), "tenant created");
    let location = created_at(format!("/v1/admin/tenants/{}", tenant.id));
    Ok((StatusCode::CREATED, location, Json(tenant)).into_response())
}

/// `POST /v1/admin/tenants/{tenantId}/api-keys` `{"name", "scopes"}` → 201 with the key, shown once.
pub(crate) async fn create_api_key(
    State(state): State<AppState>,
    tenant_id: PathOf<Id>,
    request: Request,
) -> Result<Response, Problem> {
    let path_tenant = tenant_id.as_ref().ok().map(|Path(Id(id))| id.as_str());
    let input: CreateApiKey = admin_body(&state, request, path_tenant).await?;
    let tenant_id = path(tenant_id)?;
    let name = valid_name(&input.name)?;
    let scopes = valid_scopes(&state, &input.scopes)?;
    let expire_time = input.expire_time.as_deref().map(valid_expiry).transpose()?;
    existing_tenant(&state, &tenant_id).await?;
    let issued = state.store.issue_key(Some(&tenant_id), name, &scopes, expire_time).await.map_err(store_failure)?;
    tracing::info!(tenant_id = %tenant_id, key_id = %issued.id, "API key issued");
    let location = created_at(format!("/v1/admin/tenants/{tenant_id}/api-keys/{}", issued.id));
    Ok((StatusCode::CREATED, location, Json(issued)).into_response())
}

/// The `Location` of a resource just created (RFC 9110 §10.2.2): a 201 without one would name the
/// collection it was posted to.
fn created_at(path: String) -> Option<[(header::HeaderName, HeaderValue); 1]> {
    HeaderValue::try_from(path).ok().map(|path| [(header::LOCATION, path)])
}

/// `GET /v1/admin/tenants?pageSize=&pageToken=` → `{"tenants": [...], "nextPageToken"}`.
pub(crate) async fn list_tenants(State(state): State<AppState>, request: Request) -> Result<Response, Problem> {
    require_admin(&state, request.headers()).await?;
    no_body(&request, "GET /v1/admin/tenants")?;
    let query = ListQuery::parse(request.uri().query().unwrap_or_default())?;
    let (page_size, after) = query.page(&state.page_token_key, "tenants")?;
    // One more than the page holds tells whether another page follows: a full last page ends the list.
    let tenants = state.store.list_tenants(after.as_deref(), page_size + 1).await.map_err(store_failure)?;
    let (tenants, next_page_token) = page_of(tenants, page_size, |tenant| &tenant.id, &state.page_token_key, "tenants");
    Ok(Json(serde_json::json!({"tenants": tenants, "nextPageToken": next_page_token})).into_response())
}

/// The first `page_size` of `items` (read one past the page) and the token of the page after
/// them in the admin list `list`: the last one's id and its digest under `key`, or empty at the
/// end of the list.
fn page_of<T>(
    mut items: Vec<T>,
    page_size: i64,
    id: impl Fn(&T) -> &String,
    key: &str,
    list: &str,
) -> (Vec<T>, String) {
    let more = items.len() as i64 > page_size;
    items.truncate(page_size as usize);
    let next_page_token = match items.last() {
        Some(last) if more => format!("{}.{}", id(last), token_digest(key, list, id(last))),
        _ => String::new(),
    };
    (items, next_page_token)
}

/// `GET /v1/admin/tenants/{tenantId}`.
pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    tenant_id: PathOf<Id>,
    request: Request,
) -> Result<Response, Problem> {
    require_admin(&state, request.headers()).await?;
    neither_query_nor_body(&request, "GET /v1/admin/tenants/{tenantId}")?;
    let tenant_id = path(tenant_id)?;
    Ok(Json(existing_tenant(&state, &tenant_id).await?).into_response())
}

/// `PATCH /v1/admin/tenants/{tenantId}` `{"plan"?, "status"?: "active" | "suspended"}`.
/// Takes effect at once: the tenant's cached keys are evicted on every replica.
pub(crate) async fn update_tenant(
    State(state): State<AppState>,
    tenant_id: PathOf<Id>,
    request: Request,
) -> Result<Response, Problem> {
    let path_tenant = tenant_id.as_ref().ok().map(|Path(Id(id))| id.as_str());
    let input: UpdateTenant = admin_body(&state, request, path_tenant).await?;
    let tenant_id = path(tenant_id)?;
    tenant_id_shaped(&tenant_id)?;
    let plan = input
        .plan
        .as_deref()
        .map(|plan| {
            Plan::parse(plan).ok_or_else(|| {
                Problem::invalid_field(
                    "plan",
                    format!("unknown plan {}; use starter, professional or enterprise", crate::problem::quoted(plan)),
                )
            })
        })
        .transpose()?;
    let status = input
        .status
        .as_deref()
        .map(|status| {
            TenantStatus::parse(status).ok_or_else(|| {
                Problem::invalid_field(
                    "status",
                    format!("unknown status {}; use active or suspended", crate::problem::quoted(status)),
                )
            })
        })
        .transpose()?;
    if plan.is_none() && status.is_none() {
        return Err(Problem::bad_request("give plan, status or both"));
    }
    let before = existing_tenant(&state, &tenant_id).await?;
    let tenant = state
        .store
        .update_tenant(&tenant_id, plan, status)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| Problem::not_found(format!("tenant {:?} not found", &*tenant_id)))?;
    state.invalidation.tenant_changed(&tenant_id).await;
    if tenant.plan != before.plan {
        state.limiter.forget_tenant(&tenant_id).await;
    }
    tracing::info!(tenant_id = %tenant_id, plan = tenant.plan.as_str(), status = %tenant.status, "tenant updated");
    Ok(Json(tenant).into_response())
}

/// `GET /v1/admin/tenants/{tenantId}/api-keys?pageSize=&pageToken=` → `{"apiKeys": [...],
/// "nextPageToken"}`, without the secrets.
pub(crate) async fn list_api_keys(
    State(state): State<AppState>,
    tenant_id: PathOf<Id>,
    request: Request,
) -> Result<Response, Problem> {
    require_admin(&state, request.headers()).await?;
    no_body(&request, "GET /v1/admin/tenants/{tenantId}/api-keys")?;
    let query = ListQuery::parse(request.uri().query().unwrap_or_default())?;
    let tenant_id = path(tenant_id)?;
    let list = format!("api-keys\u{0}{}", &*tenant_id);
    let (page_size, after) = query.page(&state.page_token_key, &list)?;
    existing_tenant(&state, &tenant_id).await?;
    let keys = state.store.list_keys(&tenant_id, after.as_deref(), page_size + 1).await.map_err(store_failure)?;
    let (keys, next_page_token) = page_of(keys, page_size, |key| &key.id, &state.page_token_key, &list);
    Ok(Json(serde_json::json!({"apiKeys": keys, "nextPageToken": next_page_token})).into_response())
}

/// `GET /v1/admin/tenants/{tenantId}/api-keys/{keyId}` → the key as the list shows it, never its
/// secret.
pub(crate) async fn get_api_key(
    State(state): State<AppState>,
    ids: PathOf<(Id, Id)>,
    request: Request,
) -> Result<Response, Problem> {
    let (tenant_id, key_id) =
        key_of_path(&state, ids, request, "GET /v1/admin/tenants/{tenantId}/api-keys/{keyId}").await?;
    let key = state.store.key(&tenant_id, &key_id).await.map_err(store_failure)?;
    Ok(Json(key.ok_or_else(|| key_not_found(&tenant_id, &key_id))?).into_response())
}

/// The tenant and key a request on one key (`route`) names, once its caller is known to be an
/// administrator, it has neither query nor body, the tenant exists and the key id is shaped as one.
async fn key_of_path(
    state: &AppState,
    ids: PathOf<(Id, Id)>,
    request: Request,
    route: &str,
) -> Result<(Id, Id), Problem> {
    require_admin(state, request.headers()).await?;
    neither_query_nor_body(&request, route)?;
    let (tenant_id, key_id) = path(ids)?;
    existing_tenant(state, &tenant_id).await?;
    key_id_shaped(&key_id)?;
    Ok((tenant_id, key_id))
}

/// Refuses a key id no key could have, as a tenant id is refused.
fn key_id_shaped(key_id: &str) -> Result<(), Problem> {
    if uuid::Uuid::parse_str(key_id).is_err() {
        return Err(Problem::invalid_field("keyId", "keyId must be a UUID, as the key list gives it"));
    }
    Ok(())
}

fn key_not_found(tenant_id: &str, key_id: &str) -> Problem {
    Problem::not_found(format!("API key {key_id:?} of tenant {tenant_id:?} not found"))
}

/// `DELETE /v1/admin/tenants/{tenantId}/api-keys/{keyId}` → 204. The key stops working at
/// once on every replica.
pub(crate) async fn revoke_api_key(
    State(state): State<AppState>,
    ids: PathOf<(Id, Id)>,
    request: Request,
) -> Result<Response, Problem> {
    let (tenant_id, key_id) =
        key_of_path(&state, ids, request, "DELETE /v1/admin/tenants/{tenantId}/api-keys/{keyId}").await?;
    let (hash, now_revoked) = state
        .store
        .revoke_key(&tenant_id, &key_id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| key_not_found(&tenant_id, &key_id))?;
    // Spread again even when revoked before: a replica that missed the first message forgets it now.
    state.invalidation.key_revoked(&hash).await;
    if now_revoked {
        tracing::info!(tenant_id = %tenant_id, key_id = %key_id, "API key revoked");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let principal = auth::authenticate(state, headers).await?;
    auth::require_scope(&principal, ADMIN_SCOPE)
}

/// A tenant's or a key's id from a path, as the API writes it: a UUID in any case reads as its
/// lower-case form, as the services read theirs; anything else is kept as sent, and found by
/// nothing.
#[derive(Clone, Debug)]
pub(crate) struct Id(String);

/// A path's parameters, or why they do not decode, answered only once the caller is known to be
/// an administrator.
type PathOf<T> = Result<Path<T>, PathRejection>;

/// The path's parameters, or a 400 problem naming the one that does not decode.
fn path<T>(path: PathOf<T>) -> Result<T, Problem> {
    use axum::extract::path::ErrorKind;
    match path {
        Ok(Path(parameters)) => Ok(parameters),
        Err(PathRejection::FailedToDeserializePathParams(error)) => match error.into_kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => {
                Err(Problem::invalid_field(&key, format!("the path's {key} is not percent-encoded UTF-8 (RFC 3986)")))
            }
            _ => Err(Problem::bad_request("the path's parameters do not decode")),
        },
        Err(_) => Err(Problem::bad_request("the path's parameters do not decode")),
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        Ok(Self(uuid::Uuid::parse_str(&id).map_or(id, |uuid| uuid.to_string())))
    }
}

impl std::ops::Deref for Id {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

async fn existing_tenant(state: &AppState, tenant_id: &str) -> Result<crate::store::Tenant, Problem> {
    tenant_id_shaped(tenant_id)?;
    state
        .store
        .tenant(tenant_id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| Problem::not_found(format!("tenant {tenant_id:?} not found")))
}

/// Refuses a tenant id that no tenant could have (ids are UUIDs, as the tenant list gives them),
/// as the services refuse a malformed id: 400 naming the field, not 404.
fn tenant_id_shaped(tenant_id: &str) -> Result<(), Problem> {
    match uuid::Uuid::parse_str(tenant_id) {
        Ok(_) => Ok(()),
        Err(_) => Err(Problem::invalid_field("tenantId", "tenantId must be a UUID, as the tenant list gives it")),
    }
}

fn valid_expiry(text: &str) -> Result<DateTime<Utc>, Problem> {
    // As on the services' routes: a time finer than the nanosecond is refused, never cut.
    let fraction = text.split_once('.').map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count());
    if fraction.is_some_and(|digits| digits > 9) {
        return Err(Problem::invalid_field(
            "expireTime",
            "expireTime has more than 9 digits after the second's point: a time is written to the nanosecond at most",
        ));
    }
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|_| Problem::invalid_field("expireTime", "expireTime must be an RFC 3339 timestamp"))?
        .with_timezone(&Utc);
    // Neither has a form in UTC that RFC 3339 readers take back: a year needs four digits, and a
    // second 60 is a leap second only at the end of a day.
    if time.year() > 9999 {
        return Err(Problem::invalid_field("expireTime", "expireTime must be before the year 10000 in UTC"));
    }
    if time.nanosecond() >= 1_000_000_000 {
        return Err(Problem::invalid_field("expireTime", "expireTime must not be a leap second (second 60)"));
    }
    if time <= Utc::now() {
        return Err(Problem::invalid_field("expireTime", "expireTime must be in the future"));
    }
    Ok(time)
}

/// The admin API's fields that take another name too, their proto-style names, and their JSON
/// names: every `serde(alias)` of the bodies' types, and the path's tenant (read by `admin_body`
/// itself), so that a field given under both names is refused.
const ALIASES: [(&str, &str); 2] = [("expire_time", "expireTime"), ("tenant_id", "tenantId")];

/// Whether two ids are the same: equal, or the same UUID in two spellings (as the services read ids).
fn same_id(a: &str, b: &str) -> bool {
    a == b || matches!((uuid::Uuid::parse_str(a), uuid::Uuid::parse_str(b)), (Ok(a), Ok(b)) if a == b)
}

/// The body of an admin request of type `T`, once the caller is known to be an administrator,
/// read as the services' routes read theirs; `path_tenant` is the tenant the path names, which
/// the body may name too, with the same value.
async fn admin_body<T: DeserializeOwned>(
    state: &AppState,
    request: Request,
    path_tenant: Option<&str>,
) -> Result<T, Problem> {
    let (parts, body) = request.into_parts();
    require_admin(state, &parts.headers).await?;
    if let Some(name) = first_query_parameter(&parts.uri)? {
        return Err(Problem::invalid_field(
            &name,
            format!("{} {} takes its fields in the body, not the query", parts.method, parts.uri.path()),
        ));
    }
    let body = read_body(body, &parts.headers, state.max_body_bytes, state.body_timeout, &mut ()).await?;
    let content_type = crate::transcode::content_type(&parts.headers)?;
    crate::transcode::json_content_type(content_type, &body)?;
    crate::transcode::refuse_byte_order_mark(&body)?;
    if let Some(crate::transcode::Finding::Repeated(path)) = crate::transcode::repeated_name(&body, None) {
        return Err(Problem::invalid_field(&path, format!("{path} is given more than once in the request body")));
    }
    // No body is an empty object, as on the services' routes: its required fields are named.
    let mut json: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&body).map_err(|error| crate::transcode::not_json(content_type, &error))?
    };
    let kind = crate::transcode::kind_of(&json);
    let serde_json::Value::Object(fields) = &mut json else {
        return Err(crate::transcode::not_an_object(kind));
    };
    // A field under both its names is given twice, even as null.
    for (alias, name) in ALIASES {
        if fields.contains_key(alias) && fields.contains_key(name) {
            return Err(Problem::invalid_field(name, format!("{name} is given more than once in the request body")));
        }
    }
    // A field given as null is not given, as the services' routes read it (the JSON mapping of
    // proto3): a required one is missing. A name the body does not take is refused all the same.
    let nulls: Vec<String> = fields.iter().filter(|(_, value)| value.is_null()).map(|(name, _)| name.clone()).collect();
    fields.retain(|_, value| !value.is_null());
    let path_names = ["tenantId", "tenant_id"];
    for name in nulls.iter().filter(|name| path_tenant.is_none() || !path_names.contains(&name.as_str())) {
        let alone = serde_json::Value::Object(std::iter::once((name.clone(), serde_json::Value::Null)).collect());
        if let Err(error) = serde_path_to_error::deserialize::<_, T>(alone)
            && error.inner().to_string().starts_with("unknown field")
        {
            return Err(body_refused(&error));
        }
    }
    // The path's tenant may be named in the body too, with the path's value.
    if let Some(path_tenant) = path_tenant {
        match fields.remove("tenantId").or_else(|| fields.remove("tenant_id")) {
            Some(serde_json::Value::String(given)) if !same_id(&given, path_tenant) => {
                return Err(Problem::invalid_field(
                    "tenantId",
                    "tenantId is given by the path; the body names another",
                ));
            }
            Some(given) if !given.is_string() => {
                let kind = crate::transcode::kind_of(&given);
                return Err(Problem::invalid_field("tenantId", format!("tenantId must be a string, not {kind}")));
            }
            _ => {}
        }
    }
    serde_path_to_error::deserialize(json).map_err(|error| body_refused(&error))
}

/// The 400 for an admin body that does not read as its type: the field missing, of another type,
/// or unknown, named.
pub(crate) fn body_refused(error: &serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let message = crate::problem::with_short_quotes(&crate::problem::without_values(&error.inner().to_string()));
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`'));
    if let Some(name) = missing {
        return Problem::invalid_field(name, format!("{name} is required"));
    }
    let path = error.path().to_string();
    if let Some(said) = crate::transcode::type_mismatch(&path, &message) {
        return Problem::invalid_field(&path, said);
    }
    Problem::invalid_body_field(&path, &message, format!("invalid request body: {message}"))
}

/// The name of the first parameter in `uri`'s query, if it has one.
fn first_query_parameter(uri: &Uri) -> Result<Option<String>, Problem> {
    let Some(query) = uri.query() else { return Ok(None) };
    Ok(crate::transcode::form_pairs(query)?.into_iter().next().map(|(name, _)| name))
}

/// Refuses a request with a body: `route` takes none. A body announced by its headers, or one
/// whose stream is not over (HTTP/2 need not announce its length).
fn no_body(request: &Request, route: &str) -> Result<(), Problem> {
    let headers = request.headers();
    let length = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok());
    let announced =
        headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|length| length.trim() != "0");
    let body = request.body();
    if announced || !(body.is_end_stream() || body.size_hint().exact() == Some(0)) {
        return Err(Problem::bad_request(format!("{route} takes no request body")));
    }
    Ok(())
}

/// Refuses a request with query parameters or a body: `route` takes neither.
pub(crate) fn neither_query_nor_body(request: &Request, route: &str) -> Result<(), Problem> {
    no_query(request, route)?;
    no_body(request, route)
}

/// Refuses a query parameter: `route` takes none.
pub(crate) fn no_query(request: &Request, route: &str) -> Result<(), Problem> {
    match first_query_parameter(request.uri())? {
        Some(name) => Err(Problem::invalid_field(
            &name,
            format!("unknown query parameter {}: {route} takes none", crate::problem::quoted(&name)),
        )),
        None => Ok(()),
    }
}

fn valid_name(name: &str) -> Result<&str, Problem> {
    let name = name.trim();
    if aigronova_platform::text::is_blank(name) {
        return Err(Problem::invalid_field("name", "name must not be empty nor only invisible characters"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Problem::invalid_field("name", format!("name must be at most {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(Problem::invalid_field("name", "name must not contain control characters (line breaks, tabs)"));
    }
    if name.chars().any(aigronova_platform::text::is_bidi_control) {
        return Err(Problem::invalid_field("name", "name must not contain bidirectional overrides"));
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
                format!("unknown scope {}; known scopes: {}", crate::problem::quoted(scope), list.join(", ")),
            ));
        }
        unique.insert(scope.clone());
    }
    Ok(unique.into_iter().collect())
}

fn store_failure(error: aigronova_platform::storage::StoreError) -> Problem {
    tracing::error!(request_id = crate::request_id::current().unwrap_or_default(), %error, "gateway store failed");
    Problem::internal()
}
