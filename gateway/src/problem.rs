//! RFC 9457 problem documents (`application/problem+json`): every error the gateway returns.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

const TYPE_BASE: &str = "https://docs.aigronova.com.br/problems/";

/// A problem document, boxed so that `Result<_, Problem>` stays small.
#[derive(Clone, Debug)]
pub struct Problem(Box<ProblemDocument>);

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProblemDocument {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) title: String,
    pub(crate) status: u16,
    pub(crate) detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    /// The request field the problem is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    /// The permission the caller's consent lacks (a `permission_denied` from a service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) missing_permission: Option<String>,
    /// For a 429 of a rate limit or the quota, the policies of `RateLimit-Policy` that refused the
    /// call, as the rate-limit fields' draft names them in its quota-exceeded problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) violated_policies: Option<Vec<&'static str>>,
    /// On the Open Inference Protocol's routes, `detail` again, where the protocol's clients read
    /// an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(skip)]
    pub(crate) retry_after: Option<u64>,
    /// Whether the call left for the service before it failed in a way that leaves unknown
    /// whether the service ran it.
    #[serde(skip)]
    pub(crate) may_have_taken_effect: bool,
    /// The `WWW-Authenticate` challenge of a 401, or of a 403 for a missing scope.
    #[serde(skip)]
    pub(crate) www_authenticate: Option<String>,
    /// The content codings a request body may be in (`Accept-Encoding` on a 415 for one in
    /// another, RFC 9110 §12.5.3).
    #[serde(skip)]
    pub(crate) accept_encoding: Option<&'static str>,
}

impl Problem {
    /// What went wrong, for the client.
    #[cfg(test)]
    pub(crate) fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The request field the problem is about, if one.
    #[cfg(test)]
    pub(crate) fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }

    /// Whether the service may have run the call this problem answers (see
    /// [`ProblemDocument::may_have_taken_effect`]).
    pub(crate) fn may_have_taken_effect(&self) -> bool {
        self.0.may_have_taken_effect
    }

    /// The HTTP status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        let slug = title.to_ascii_lowercase().replace(' ', "-");
        Self(Box::new(ProblemDocument {
            kind: format!("{TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            request_id: None,
            field: None,
            missing_permission: None,
            violated_policies: None,
            error: None,
            retry_after: None,
            may_have_taken_effect: false,
            www_authenticate: None,
            accept_encoding: None,
        }))
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// A 400 about the field at `path` (serde_path_to_error's, `.` for the top level) of a body
    /// that failed with `message`: a missing or unknown field is named by the message, below `path`
    /// unless `path` already ends with it.
    pub fn invalid_body_field(path: &str, message: &str, detail: impl Into<String>) -> Self {
        let named = ["missing field `", "unknown field `", "duplicate field `", "unrecognized field name '"]
            .iter()
            .find_map(|opening| {
                let rest = message.strip_prefix(opening)?;
                rest.find(['`', '\'']).map(|end| &rest[..end])
            });
        // prost-reflect's unknown name is never in the path, which is the object it is in and may
        // have a field of the same name (`applicant.applicant`); serde's is.
        let below = message.starts_with("unrecognized field name '");
        match (path, named) {
            (".", None) => Self::bad_request(detail),
            (".", Some(name)) => Self::invalid_field(name, detail),
            (path, Some(name)) if below || (path != name && !path.ends_with(&format!(".{name}"))) => {
                Self::invalid_field(format!("{path}.{name}"), detail)
            }
            (path, _) => Self::invalid_field(path, detail),
        }
    }

    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut problem = Self::bad_request(detail);
        problem.set_field(field);
        problem
    }

    /// Names the request field, header or parameter the problem is about.
    pub fn set_field(&mut self, field: impl Into<String>) {
        self.0.field = Some(field.into());
    }

    /// A 401 for a request without credentials, with the `Bearer` challenge (RFC 6750).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, detail);
        problem.0.www_authenticate = Some("Bearer".to_owned());
        problem
    }

    /// A 401 for a bearer token that is not valid (RFC 6750 `invalid_token`).
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        let mut problem = Self::unauthorized(detail);
        problem.0.www_authenticate = Some(r#"Bearer error="invalid_token""#.to_owned());
        problem
    }

    /// A 400 for a request whose credentials are malformed (RFC 6750 `invalid_request`), naming
    /// the field at fault.
    pub fn invalid_request(field: &str, detail: impl Into<String>) -> Self {
        let mut problem = Self::invalid_field(field, detail);
        problem.0.www_authenticate = Some(r#"Bearer error="invalid_request""#.to_owned());
        problem
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// A 403 for a credential without the scope a call needs, with the RFC 6750 challenge that
    /// names it: `Bearer error="insufficient_scope", scope="health:read"`.
    pub fn insufficient_scope(scope: &str, detail: impl Into<String>) -> Self {
        let mut problem = Self::forbidden(detail);
        problem.0.www_authenticate = Some(format!(r#"Bearer error="insufficient_scope", scope="{scope}""#));
        problem
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; quote the request id when reporting it")
    }

    /// Tells the client how many seconds to wait (`Retry-After`).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }

    /// Names the rate-limit policies that refused the call (`tenant`, `key`, `inference`).
    pub(crate) fn with_violated_policies(mut self, policies: Vec<&'static str>) -> Self {
        self.0.violated_policies = Some(policies);
        self
    }

    /// Tells the client which content codings a request body may be in (`Accept-Encoding`).
    pub(crate) fn with_accept_encoding(mut self, codings: &'static str) -> Self {
        self.0.accept_encoding = Some(codings);
        self
    }

    /// The problem for a gRPC status from an upstream service, through the one code table.
    pub fn from_status(status: &tonic::Status) -> Self {
        let http = StatusCode::from_u16(aigronova_platform::error::http_status_of(status.code()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let metadata = |key: &str| status.metadata().get(key).and_then(|value| value.to_str().ok()).map(str::to_owned);
        // The services authenticate the gateway's internal token, never the client: their refusal
        // is the platform's fault, not a 401 for a credential the client can fix.
        if status.code() == tonic::Code::Unauthenticated {
            tracing::error!(
                request_id = crate::request_id::current().unwrap_or_default(),
                reason = status.message(),
                "an upstream service refused the gateway's internal token"
            );
            return Self::new(
                StatusCode::BAD_GATEWAY,
                "the service refused the gateway's credentials; quote the request id when reporting it",
            );
        }
        // A third party's answer outside its protocol: the service stands as a gateway to it.
        let http = match status.code() {
            tonic::Code::Internal if aigronova_platform::error::is_third_party_failure(status) => {
                StatusCode::BAD_GATEWAY
            }
            _ => http,
        };
        // The connection broke once the call was on it: the service may have run it, so the
        // client is told to look rather than to retry.
        if status.code() == tonic::Code::Unavailable
            && status.metadata().get(crate::upstream::BROKEN_AFTER_SENDING).is_some()
        {
            let mut problem = Self::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{}: the connection broke after the call was sent, so it may have taken effect; look before \
                     sending a change again",
                    status.message()
                ),
            );
            problem.0.may_have_taken_effect = true;
            return problem;
        }
        let mut problem = Self::new(http, status.message());
        problem.0.field = metadata(aigronova_platform::error::FIELD_METADATA_KEY)
            .map(|field| aigronova_platform::error::field_of_metadata(&field));
        problem.0.missing_permission = metadata(aigronova_platform::error::PERMISSION_METADATA_KEY);
        if status.code() == tonic::Code::Unavailable {
            problem.0.retry_after = Some(1);
        }
        let retry_after = metadata(aigronova_platform::error::RETRY_AFTER_METADATA_KEY);
        if let Some(seconds) = retry_after.and_then(|seconds| seconds.parse().ok()) {
            problem.0.retry_after = Some(seconds);
        }
        problem
    }
}

/// The longest `detail` a problem document carries, in bytes: a detail may quote what the client
/// sent (a name, a value), which is not sent back in full.
const MAX_DETAIL_BYTES: usize = 1024;

/// The longest `field` a problem document carries, in bytes.
const MAX_FIELD_BYTES: usize = 256;

/// The longest value a client sent that a detail quotes, in bytes: past it the value is cut, so
/// that what the detail says after it (the values accepted) is not cut with it.
const MAX_QUOTED_BYTES: usize = 64;

/// `value` as a detail quotes it: in double quotes, escaped, cut past [`MAX_QUOTED_BYTES`].
pub(crate) fn quoted(value: &str) -> String {
    format!("{:?}", clipped(value.to_owned(), MAX_QUOTED_BYTES))
}

/// `message` (serde's) with each name it quotes in backquotes cut past [`MAX_QUOTED_BYTES`], so
/// that the names expected, after it, are not cut with a long one the client sent.
pub(crate) fn with_short_quotes(message: &str) -> String {
    let mut parts = message.split('`');
    let mut shown = parts.next().unwrap_or_default().to_owned();
    for (index, part) in parts.enumerate() {
        shown.push('`');
        // The first part after a backquote, and every other one after it, is within quotes.
        if index % 2 == 0 { shown.push_str(&clipped(part.to_owned(), MAX_QUOTED_BYTES)) } else { shown.push_str(part) }
    }
    shown
}

/// `text` cut to at most `max` bytes at a character boundary, with `…` where it was cut.
fn clipped(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut document = *self.0;
        document.detail = clipped(std::mem::take(&mut document.detail), MAX_DETAIL_BYTES);
        document.field = document.field.map(|field| clipped(field, MAX_FIELD_BYTES));
        if let Ok(request) = crate::request_id::CURRENT.try_with(Clone::clone) {
            // The Open Inference Protocol's clients read an error's `error` member.
            if request.path.starts_with("/v2/") {
                document.error = Some(document.detail.clone());
            }
            document.request_id.get_or_insert(request.id);
            document.instance.get_or_insert_with(|| clipped(request.path, MAX_DETAIL_BYTES));
        }
        let status = StatusCode::from_u16(document.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = document.retry_after;
        let www_authenticate = document.www_authenticate.take();
        let accept_encoding = document.accept_encoding;
        let mut response = (status, Json(document)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Scopes are scope-tokens (RFC 6749 §3.3), printable ASCII without quotes or backslashes.
        if let Some(challenge) = www_authenticate.and_then(|challenge| HeaderValue::try_from(challenge).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(codings) = accept_encoding {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(codings));
        }
        response
    }
}

/// `message` without the values serde's "invalid type" and "invalid value" errors quote: a value
/// sent with the wrong type may be personal data (a CPF as a number), which a problem document
/// does not repeat. The value's kind stays: `invalid type: integer, expected a string`.
pub(crate) fn without_values(message: &str) -> String {
    const MARKERS: [&str; 2] = ["invalid type: ", "invalid value: "];
    let mut kept = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, marker)) =
        MARKERS.iter().filter_map(|marker| rest.find(marker).map(|at| (at, *marker))).min_by_key(|(at, _)| *at)
    {
        let (head, tail) = rest.split_at(at + marker.len());
        kept.push_str(head);
        // The kind, then the value in backticks or in a debug-quoted string, whose own text may
        // hold anything, `, expected` included.
        let Some(quoted) = tail.find(['`', '"']).filter(|quoted| !tail[..*quoted].contains(',')) else {
            rest = tail;
            continue;
        };
        kept.push_str(tail[..quoted].trim_end());
        let value = &tail[quoted + 1..];
        let end = match tail.as_bytes()[quoted] {
            b'`' => value.find('`'),
            _ => {
                let mut escaped = false;
                value.char_indices().find_map(|(at, c)| match (escaped, c) {
                    (false, '\\') => {
                        escaped = true;
                        None
                    }
                    (false, '"') => Some(at),
                    _ => {
                        escaped = false;
                        None
                    }
                })
            }
        };
        // An unterminated value: nothing of it is kept.
        rest = end.map_or("", |end| &value[end + 1..]);
    }
    kept.push_str(rest);
    kept
}

#[cfg(test)]
mod tests {
    use axum::{
        http::{StatusCode, header},
        response::IntoResponse,
    };

    use super::{Problem, quoted, with_short_quotes, without_values};

    #[test]
    fn long_values_a_detail_quotes_are_cut_and_what_follows_them_kept() {
        let long = "p".repeat(3000);
        let said = format!("unknown plan {}; use starter, professional or enterprise", quoted(&long));
        assert!(said.len() < 200 && said.ends_with("; use starter, professional or enterprise"), "{said}");
        let message = format!("unknown field `{long}`, expected `name` or `plan`");
        let shown = with_short_quotes(&message);
        assert!(shown.len() < 200 && shown.ends_with("…`, expected `name` or `plan`"), "{shown}");
        assert_eq!(with_short_quotes("missing field `name`"), "missing field `name`");
    }

    #[test]
    fn a_missing_scope_is_a_403_whose_challenge_names_the_scope() {
        let response = Problem::insufficient_scope("health:read", "this token lacks the scope").into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let challenge = &response.headers()[header::WWW_AUTHENTICATE];
        assert_eq!(challenge, r#"Bearer error="insufficient_scope", scope="health:read""#);
    }

    #[test]
    fn a_service_that_says_when_to_retry_is_answered_with_retry_after() {
        let status = aigronova_platform::error::retry_later(2, "too many images are being examined");
        let response = Problem::from_status(&status).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let refused = Problem::from_status(&tonic::Status::resource_exhausted("no")).into_response();
        assert!(refused.headers().get(header::RETRY_AFTER).is_none(), "no advice is given when none was");
    }

    #[tokio::test]
    async fn long_details_and_fields_are_cut_at_a_character_boundary() {
        let name = "ç".repeat(50_000);
        let response = Problem::invalid_field(&name, format!("unknown feature {name:?}")).into_response();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let detail = document["detail"].as_str().unwrap();
        assert!(detail.len() <= super::MAX_DETAIL_BYTES && detail.starts_with("unknown feature \"ççç"), "{detail}");
        assert!(detail.ends_with('…'), "{detail}");
        let field = document["field"].as_str().unwrap();
        assert!(field.len() <= super::MAX_FIELD_BYTES && field.ends_with("ç…"), "{field}");
        let short = Problem::invalid_field("pageSize", "pageSize: not a number").into_response();
        let body = axum::body::to_bytes(short.into_body(), usize::MAX).await.unwrap();
        let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(document["detail"], "pageSize: not a number");
        assert_eq!(document["field"], "pageSize");
    }

    #[test]
    fn values_sent_with_the_wrong_type_are_not_repeated() {
        for (message, expected) in [
            (
                "invalid type: integer `52998224725`, expected a string at line 1 column 20",
                "invalid type: integer, expected a string at line 1 column 20",
            ),
            ("invalid type: string \"Maria Silva\", expected i32", "invalid type: string, expected i32"),
            ("invalid value: floating point `-1.5`, expected u32", "invalid value: floating point, expected u32"),
            ("invalid type: map, expected a string", "invalid type: map, expected a string"),
            ("invalid type: string \"x, expected 529.982.247-25\", expected i32", "invalid type: string, expected i32"),
            ("invalid type: string \"a \\\" b\", expected i32", "invalid type: string, expected i32"),
            (
                "unknown field `nome`, expected one of `name`, `cpf`",
                "unknown field `nome`, expected one of `name`, `cpf`",
            ),
        ] {
            assert_eq!(without_values(message), expected);
        }
    }
}
