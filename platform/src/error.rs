//! The errors a service returns, and their one mapping to `tonic::Status`; plus the one table
//! pairing gRPC codes with HTTP statuses that the gateway uses.
//!
//! Internal details are logged once, here, where the error becomes a `Status`; the caller gets
//! an opaque message.

use tonic::{Code, Status};

use crate::{inference::InferenceError, storage::StoreError};

/// The metadata key naming the request field an `invalid_argument` is about.
pub const FIELD_METADATA_KEY: &str = "aigronova-field";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// A refusal already made as a `Status`, with its metadata (the consent permission missing).
    #[error("{}", .0.message())]
    Refused(Box<Status>),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument { field, reason } => invalid_argument(&field, &reason),
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::AlreadyExists(what) => Status::already_exists(what),
            Error::PermissionDenied(what) => Status::permission_denied(what),
            Error::Store(error) => error.into(),
            Error::Inference(error) => error.into(),
            Error::Refused(status) => *status,
        }
    }
}

/// The metadata key naming the consent permission a `permission_denied` lacks.
pub const PERMISSION_METADATA_KEY: &str = "aigronova-permission";

/// `permission_denied` for a use that needs `permission` (an Open Finance consent permission,
/// say), named in the message and in [`PERMISSION_METADATA_KEY`].
pub fn missing_permission(permission: &str, detail: &str) -> Status {
    let mut status = Status::permission_denied(detail.to_owned());
    if let Ok(value) = permission.parse() {
        status.metadata_mut().insert(PERMISSION_METADATA_KEY, value);
    }
    status
}

/// The metadata key of how many seconds a caller should wait before retrying a refused call; the
/// gateway answers it as `Retry-After`.
pub const RETRY_AFTER_METADATA_KEY: &str = "aigronova-retry-after";

/// `resource_exhausted` (HTTP 429) for a call to retry in `seconds`, said in
/// [`RETRY_AFTER_METADATA_KEY`].
pub fn retry_later(seconds: u64, detail: &str) -> Status {
    let mut status = Status::resource_exhausted(detail.to_owned());
    status.metadata_mut().insert(RETRY_AFTER_METADATA_KEY, seconds.into());
    status
}

/// The metadata key naming a third party (an Open Finance institution) whose failure a status
/// reports: the service itself answered, so the gateway neither counts the call against the
/// service's circuit nor retries it, and answers an `internal` status as 502 Bad Gateway.
pub const THIRD_PARTY_METADATA_KEY: &str = "aigronova-third-party";

/// `status`, marked as the failure of the third party `party` (see [`THIRD_PARTY_METADATA_KEY`]).
pub fn third_party_failure(mut status: Status, party: &str) -> Status {
    if let Ok(value) = party.parse() {
        status.metadata_mut().insert(THIRD_PARTY_METADATA_KEY, value);
    }
    status
}

/// Whether `status` reports a third party's failure rather than its service's.
pub fn is_third_party_failure(status: &Status) -> bool {
    status.metadata().contains_key(THIRD_PARTY_METADATA_KEY)
}

/// `invalid_argument` naming `field`, in the message and in [`FIELD_METADATA_KEY`].
pub fn invalid_argument(field: &str, reason: &str) -> Status {
    let mut status = Status::invalid_argument(format!("{field}: {reason}"));
    name_field(&mut status, field);
    status
}

/// `already_exists` (HTTP 409) because of the value of `field` (a CPF taken), named in the
/// message and in [`FIELD_METADATA_KEY`].
pub fn already_exists(field: &str, detail: &str) -> Status {
    let mut status = Status::already_exists(detail.to_owned());
    name_field(&mut status, field);
    status
}

/// Bytes escaped in a [`FIELD_METADATA_KEY`] value: those outside printable ASCII, and `%`.
const FIELD_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Names `field` in [`FIELD_METADATA_KEY`], its bytes outside printable ASCII and its `%` escaped
/// as in a URI (`features.press%C3%A3o`), since ASCII metadata holds nothing else; read back with
/// [`field_of_metadata`].
fn name_field(status: &mut Status, field: &str) {
    let escaped = percent_encoding::utf8_percent_encode(field, FIELD_ESCAPED).to_string();
    if let Ok(value) = escaped.parse() {
        status.metadata_mut().insert(FIELD_METADATA_KEY, value);
    }
}

/// The field a [`FIELD_METADATA_KEY`] value names, its escapes read.
pub fn field_of_metadata(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
}

/// An internal failure: logged with its cause, reported to the caller without it.
pub fn internal(cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %cause, "internal error");
    Status::internal("internal error")
}

/// The HTTP status of a gRPC code: the one table the gateway uses in both directions.
pub fn http_status_of(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown => 500,
        Code::InvalidArgument => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::FailedPrecondition => 400,
        Code::Aborted => 409,
        Code::OutOfRange => 400,
        Code::Unimplemented => 501,
        Code::Internal => 500,
        Code::Unavailable => 503,
        Code::DataLoss => 500,
        Code::Unauthenticated => 401,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_message_and_metadata() {
        let status: Status = Error::invalid("features.mean radius", "must be finite").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "features.mean radius: must be finite");
        assert_eq!(status.metadata().get(FIELD_METADATA_KEY).unwrap(), "features.mean radius");
    }

    #[test]
    fn a_field_named_with_any_characters_reaches_the_metadata_and_back() {
        for field in ["features.pressão", "features.100%", "nome.完整", "a\tb", "features.mean radius"] {
            let status = invalid_argument(field, "is not a feature");
            let value = status.metadata().get(FIELD_METADATA_KEY).expect("named").to_str().unwrap().to_owned();
            assert!(value.is_ascii(), "{value}");
            assert_eq!(field_of_metadata(&value), field);
        }
        assert_eq!(already_exists("cpf.ção", "taken").metadata().get(FIELD_METADATA_KEY).unwrap(), "cpf.%C3%A7%C3%A3o");
    }

    #[test]
    fn the_table_pairs_the_codes_clients_branch_on() {
        assert_eq!(http_status_of(Code::Unauthenticated), 401);
        assert_eq!(http_status_of(Code::PermissionDenied), 403);
        assert_eq!(http_status_of(Code::ResourceExhausted), 429);
        assert_eq!(http_status_of(Code::DeadlineExceeded), 504);
        assert_eq!(http_status_of(Code::Unavailable), 503);
    }
}
