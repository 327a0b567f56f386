//! The common `DataSubject` service (LGPD Art. 18): what every service that holds personal data
//! answers when ai-governance fans a data-subject request out, and the JSON ⇄
//! `google.protobuf.Struct` conversions its export travels in.

use prost_types::{ListValue, Struct, Value, value::Kind};

/// The scope of the token ai-governance presents to `ExportSubject` and `EraseSubject`.
pub const SUBJECT_SCOPE: &str = "subject:process";

/// A JSON object as a `Struct`; any other JSON value is wrapped as `{"value": …}`.
pub fn to_struct(json: serde_json::Value) -> Struct {
    match json {
        serde_json::Value::Object(map) => Struct { fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect() },
        other => Struct { fields: [("value".to_owned(), to_value(other))].into() },
    }
}

fn to_value(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(value) => Kind::BoolValue(value),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(text) => Kind::StringValue(text),
        serde_json::Value::Array(items) => {
            Kind::ListValue(ListValue { values: items.into_iter().map(to_value).collect() })
        }
        serde_json::Value::Object(_) => Kind::StructValue(to_struct(json)),
    };
    Value { kind: Some(kind) }
}

/// A `Struct` back as a JSON object.
pub fn from_struct(value: Struct) -> serde_json::Value {
    serde_json::Value::Object(value.fields.into_iter().map(|(k, v)| (k, from_value(v))).collect())
}

/// 2^53: doubles below it hold every integer exactly.
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

fn from_value(value: Value) -> serde_json::Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(value)) => value.into(),
        // `Struct` holds every number as a double; whole ones go back to JSON integers.
        Some(Kind::NumberValue(number)) if number.fract() == 0.0 && number.abs() < MAX_EXACT_INTEGER => {
            serde_json::Value::from(number as i64)
        }
        Some(Kind::NumberValue(number)) => {
            serde_json::Number::from_f64(number).map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
        Some(Kind::StringValue(text)) => text.into(),
        Some(Kind::ListValue(list)) => list.values.into_iter().map(from_value).collect(),
        Some(Kind::StructValue(inner)) => from_struct(inner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_survives_the_round_trip() {
        let json =
            serde_json::json!({"patients": [{"name": "Maria", "age": 44, "bmi": 0.25, "erased": false, "note": null}]});
        assert_eq!(from_struct(to_struct(json.clone())), json);
    }
}
