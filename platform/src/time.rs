//! Times as the services store and send them: RFC 3339 text in UTC with a `Z`, to the
//! microsecond (sorts as text on SQLite and PostgreSQL alike), and protobuf `Timestamp`s.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::storage::StoreError;

/// `at` as a stored column holds it.
pub fn stored(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A stored time; `column` names it in the error when the text is not RFC 3339.
pub fn parse_stored(column: &str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| StoreError::Corrupt(format!("{column}: {error}")))
}

pub fn to_proto(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// The time of a protobuf `Timestamp`; `None` when it is out of chrono's range.
pub fn from_proto(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(timestamp.seconds, u32::try_from(timestamp.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_survive_both_forms() {
        let at = DateTime::parse_from_rfc3339("2026-11-29T10:13:06.123456Z").unwrap().with_timezone(&Utc);
        assert_eq!(stored(at), "2026-11-29T10:13:06.123456Z");
        assert_eq!(parse_stored("t", &stored(at)).unwrap(), at);
        assert_eq!(from_proto(&to_proto(at)), Some(at));
        assert!(parse_stored("t", "yesterday").is_err());
        assert_eq!(from_proto(&prost_types::Timestamp { seconds: 0, nanos: -1 }), None);
    }
}
