//! JSON ⇄ protobuf for one route, with the proto3 JSON mapping: the request message is built
//! from the path variables, the query string and the JSON body; the response message becomes
//! JSON (lowerCamelCase names, fields with default values included) or, for
//! `google.api.HttpBody`, the raw body with its content type. Answers are written as JSON straight
//! from their wire bytes (`json`), through a decoded dynamic message only when that declines.

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use bytes::Bytes;
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
    Value,
};
use serde_json::error::Category;

use crate::{
    problem::Problem,
    routes::{Matched, Route},
};

/// Builds the request message of `matched` from the HTTP request's parts.
/// The request message of `matched` from its path variables, query string and body. A body
/// mapped to a `google.api.HttpBody` field is taken raw, with `content_type`.
pub(crate) fn request_message(
    matched: &Matched<'_>,
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<DynamicMessage, Problem> {
    let route = matched.route;
    let input = route.method.input();
    let mut message = match route.body.as_str() {
        "*" => {
            // Every field not in the path comes from the body: a query parameter would be ignored.
            if let Some((name, _)) = query.map(form_pairs).transpose()?.and_then(|pairs| pairs.into_iter().next()) {
                return Err(Problem::invalid_field(
                    &name,
                    format!("{} {} takes its fields in the body, not the query", route.http_method, route.template),
                ));
            }
            json_content_type(content_type, body)?;
            parse_body(&input, body, content_type)?
        }
        "" => {
            if !body.is_empty() {
                return Err(Problem::bad_request(format!(
                    "{} {} takes no request body",
                    route.http_method, route.template
                )));
            }
            DynamicMessage::new(input.clone())
        }
        field_name => {
            let mut message = DynamicMessage::new(input.clone());
            let field = input.get_field_by_name(field_name).ok_or_else(Problem::internal)?;
            if let Kind::Message(kind) = field.kind() {
                let value = if kind.full_name() == "google.api.HttpBody" {
                    raw_body(&kind, body, content_type)?
                } else {
                    json_content_type(content_type, body)?;
                    parse_body(&kind, body, content_type)?
                };
                message.set_field(&field, Value::Message(value));
            }
            message
        }
    };
    for (name, value) in &matched.variables {
        let field = input.get_field_by_name(name).ok_or_else(Problem::internal)?;
        let value = scalar(&field, value)
            .map_err(|reason| Problem::invalid_field(field.json_name(), format!("{}: {reason}", field.json_name())))?;
        // A body that names the field too must agree with the path, rather than be overruled; an id
        // agrees in any spelling of its UUID, as the services read ids.
        if message.has_field(&field)
            && *message.get_field(&field) != value
            && !same_uuid(&message.get_field(&field), &value)
        {
            let json_name = field.json_name();
            // The same id with a blank or a line break beside it is told as such.
            let sent = message.get_field(&field);
            let blanks = sent.as_str().is_some_and(|text| text.trim() != text)
                && same_uuid(&Value::String(sent.as_str().unwrap_or_default().trim().to_owned()), &value);
            let detail = if blanks {
                format!("{json_name} has a blank or a line break beside it: send the id alone")
            } else {
                format!("{json_name} is given by the path; the body names another")
            };
            return Err(Problem::invalid_field(json_name, detail));
        }
        message.set_field(&field, value);
    }
    if route.body != "*"
        && let Some(query) = query
    {
        let bound: Vec<&str> = matched.variables.iter().map(|(name, _)| name.as_str()).collect();
        apply_query(&mut message, query, &bound)?;
    }
    Ok(message)
}

/// Refuses a JSON route's body declared as another media type, or in another charset than UTF-8
/// (415). No `Content-Type`, JSON (`application/json`, `…+json`) and
/// `application/x-www-form-urlencoded`, which `curl -d` sends by default, are read as JSON, which is
/// UTF-8 (RFC 8259 §8.1) whether or not they say `charset=utf-8`.
pub(crate) fn json_content_type(content_type: Option<&str>, body: &[u8]) -> Result<(), Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    json_media_type(content_type)
}

/// The refusal of a body that is not JSON. Bodies are read as JSON also when declared as form
/// data (`curl -d` sends that type), which is then said, since `name=value` pairs are not read.
pub(crate) fn not_json(content_type: Option<&str>, error: &serde_json::Error) -> Problem {
    let form = content_type.is_some_and(|content_type| {
        content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    let hint = if form { " (it is read as JSON also when sent as application/x-www-form-urlencoded)" } else { "" };
    // serde_json says a lone surrogate (`\ud800` not followed by its low half) ends its hex escape
    // too early.
    let message = error.to_string();
    let escape = if message.contains("surrogate") || message.contains("hex escape") {
        "; a \\u escape of a UTF-16 surrogate (\\ud800 to \\udfff) must be one of a high and low pair"
    } else if message.contains("invalid escape") {
        "; a backslash escapes only \\\" \\\\ / b f n r t, or u with four hex digits"
    } else {
        ""
    };
    Problem::bad_request(format!("the request body is not valid JSON{hint}: {message}{escape}"))
}

/// Refuses a JSON body declared as another media type or charset (see [`json_content_type`]);
/// asked of a route's body before the rate limits are, when the request says it has one.
pub(crate) fn json_media_type(content_type: Option<&str>) -> Result<(), Problem> {
    let Some(content_type) = content_type else { return Ok(()) };
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    // A type and a subtype of token characters (RFC 9110 §8.3.1), the `+json` suffix after a name.
    let token = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let json = essence == "application/json"
        || essence.split_once('/').is_some_and(|(kind, subtype)| {
            token(kind) && token(subtype) && subtype.strip_suffix("+json").is_some_and(|name| !name.is_empty())
        });
    // A patch format says how its body changes the resource (RFC 7396's `null` removes a member,
    // RFC 6902's body is a list of operations); the routes read their body as the message, with
    // proto3's JSON mapping, where `null` leaves a field as it is: told, rather than read otherwise.
    if ["application/merge-patch+json", "application/json-patch+json"].contains(&essence.as_str()) {
        return Err(unsupported_media_type(format!(
            "this route reads its body as the message, not as {essence}: send Content-Type: application/json, \
             with the message's fields (in a change, null leaves a field as it is, and an empty string clears \
             one that takes it)"
        )));
    }
    if !(json || essence.is_empty() || essence == "application/x-www-form-urlencoded") {
        return Err(unsupported_media_type(format!(
            "this route reads a JSON body; send it with Content-Type: application/json, not {essence}"
        )));
    }
    // Every charset given counts, so that a second one cannot hide behind a first. US-ASCII is
    // UTF-8 too, and `utf8` is a common spelling of it.
    let utf8 = |charset: &str| ["utf-8", "utf8", "us-ascii"].iter().any(|name| charset.eq_ignore_ascii_case(name));
    // A `charset` without a value (`; charset`) names none: it is refused as an empty one is.
    let other = parts
        .map(|parameter| parameter.split_once('=').unwrap_or((parameter, "")))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"'))
        .find(|charset| !utf8(charset));
    match other {
        Some(charset) => Err(unsupported_media_type(format!(
            "this route reads JSON in UTF-8, not in the charset {charset:?}; send charset=utf-8 or none"
        ))),
        None => Ok(()),
    }
}

/// A 415 about the request's `Content-Type`.
fn unsupported_media_type(detail: String) -> Problem {
    let mut problem = Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail);
    problem.set_field("Content-Type");
    problem
}

/// The 415 for a raw body sent without its media type: no media type is none the route reads.
fn no_media_type(accepted: &[String]) -> Problem {
    let detail = if accepted.is_empty() {
        "send the body's media type in Content-Type".to_owned()
    } else {
        format!("send the body's media type in Content-Type: {}", accepted.join(", "))
    };
    unsupported_media_type(detail)
}

/// Whether `route` takes its body raw (a `google.api.HttpBody`) with `content_type`: it must name
/// the body's media type, one of the route's `request_media_types` when it has any (415
/// otherwise). Asked before the body is read: a large upload of a type the route does not read
/// is refused without being read.
pub(crate) fn check_raw_media_type(route: &Route, content_type: Option<&str>) -> Result<(), Problem> {
    if !route.raw_body {
        return Ok(());
    }
    let accepted = &route.request_media_types;
    let content_type =
        content_type.map(str::trim).filter(|value| !value.is_empty()).ok_or_else(|| no_media_type(accepted))?;
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if !accepted.is_empty() && !accepted.contains(&essence) {
        return Err(unsupported_media_type(format!(
            "{essence} is not a media type this route reads; send {}",
            accepted.join(", ")
        )));
    }
    Ok(())
}

/// The raw body with its `Content-Type` (see [`check_raw_media_type`]).
fn raw_body(
    descriptor: &MessageDescriptor,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<DynamicMessage, Problem> {
    let content_type =
        content_type.map(str::trim).filter(|value| !value.is_empty()).ok_or_else(|| no_media_type(&[]))?;
    let mut message = DynamicMessage::new(descriptor.clone());
    message.set_field_by_name("content_type", Value::String(content_type.to_owned()));
    message.set_field_by_name("data", Value::Bytes(bytes::Bytes::copy_from_slice(body)));
    Ok(message)
}

fn parse_body(
    descriptor: &MessageDescriptor,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<DynamicMessage, Problem> {
    refuse_byte_order_mark(body)?;
    match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
        None => return Ok(DynamicMessage::new(descriptor.clone())),
        // A list, a string or a number: JSON, but not the object a request is.
        Some(first @ (b'[' | b'"' | b'-' | b'0'..=b'9')) => {
            let found = match first {
                b'[' => "a list",
                b'"' => "a string",
                _ => "a number",
            };
            return Err(not_an_object(found));
        }
        Some(_) => {}
    }
    // JSON leaves a repeated name's meaning open (RFC 8259): refused rather than one value kept.
    match repeated_name(body, Some(descriptor)) {
        Some(Finding::Repeated(path)) => {
            return Err(Problem::invalid_field(&path, format!("{path} is given more than once in the request body")));
        }
        Some(Finding::OutOfRange(path)) => {
            let range = field_at(descriptor, &path).and_then(|field| whole_numbers_of(&field));
            let range = range.unwrap_or_else(|| "its type's range".to_owned());
            return Err(Problem::invalid_field(&path, format!("{path} is not a whole number from {range}")));
        }
        Some(Finding::Inexact(path)) => {
            return Err(Problem::invalid_field(
                &path,
                format!(
                    "{path} is written with a point or an exponent, which at this size is not read exactly: write \
                     it as digits alone"
                ),
            ));
        }
        Some(Finding::FineTime(path)) => {
            return Err(Problem::invalid_field(
                &path,
                format!("{path} has more than 9 digits after the second's point: a time is kept to the nanosecond"),
            ));
        }
        Some(Finding::LeapSecond(path)) => {
            return Err(Problem::invalid_field(
                &path,
                format!(
                    "{path} has a 60th second (a leap second), which times here do not take: write :59 or the next minute"
                ),
            ));
        }
        None => {}
    }
    // Read straight from the bytes into the message, without a JSON tree in between.
    let mut json = serde_json::Deserializer::from_slice(body);
    DynamicMessage::deserialize_with_options(descriptor.clone(), &mut json, &DeserializeOptions::new())
        .and_then(|message| json.end().map(|()| message))
        .map_err(|error| match error.classify() {
            // A number JSON can write but no 64-bit float holds (1e400): told at its field.
            Category::Syntax if error.to_string().starts_with("number out of range") => {
                let path = path_of_error(descriptor, body);
                let detail = format!("{path} is not a number a field can hold: its magnitude is past about 1.8e308");
                match path.as_str() {
                    "." => Problem::bad_request(detail),
                    _ => Problem::invalid_field(&path, detail),
                }
            }
            Category::Syntax | Category::Eof | Category::Io => not_json(content_type, &error),
            Category::Data => {
                let error = crate::problem::without_values(&error.to_string());
                let path = path_of_error(descriptor, body);
                // An object within the body that does not fit its own message is named with it.
                let within =
                    (path != ".").then(|| field_at(descriptor, &path)).flatten().and_then(|field| match field.kind() {
                        Kind::Message(inner) if !field.is_map() && !field.is_list() => Some(inner),
                        _ => None,
                    });
                let what = match &within {
                    Some(inner) => format!("{path} does not match {}", inner.name()),
                    None => format!("the request body does not match {}", descriptor.name()),
                };
                let detail = format!("{what}: {error}{}", unknown_name_hint(descriptor, &path, &error));
                match field_at(descriptor, &path).and_then(|field| whole_numbers_of(&field)) {
                    // A number its field cannot hold: said as for a query parameter, not in the
                    // words of the conversion that failed.
                    Some(range)
                        if error.contains("out of range")
                            || error.contains("expected integer")
                            || error.contains("invalid digit")
                            || error.contains("cannot parse integer")
                            || error.contains("too large to fit")
                            || error.contains("too small to fit") =>
                    {
                        Problem::invalid_field(&path, format!("{path} is not a whole number from {range}"))
                    }
                    _ => match type_mismatch(&path, &error) {
                        // The body as a whole, which is no field of the JSON.
                        Some(said) if path == "." => Problem::bad_request(said),
                        Some(said) => Problem::invalid_field(&path, said),
                        None => Problem::invalid_body_field(&path, &error, detail),
                    },
                }
            }
        })
}

/// Refuses a body that starts with a byte-order mark, which RFC 8259 forbids before a JSON text:
/// the reader would only see a stray byte.
pub(crate) fn refuse_byte_order_mark(body: &[u8]) -> Result<(), Problem> {
    if body.starts_with(b"\xEF\xBB\xBF") {
        return Err(Problem::bad_request("the request body starts with a byte-order mark: send the JSON without it"));
    }
    Ok(())
}

/// The 400 for a JSON body that is `found` (`a list`, `null`) rather than the object a request is;
/// it names no field, as the body is none.
pub(crate) fn not_an_object(found: &str) -> Problem {
    Problem::bad_request(format!("the request body must be a JSON object, not {found}"))
}

/// What kind of JSON value `value` is, as the API's refusals name it (`a list`, `null`).
pub(crate) fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A value of the wrong JSON type at `path`, in the words of the API rather than of the reader
/// (`invalid type: null, expected a 64-bit floating point value at line 1 column 9`): `features.bmi
/// must be a number, not null`.
pub(crate) fn type_mismatch(path: &str, error: &str) -> Option<String> {
    let subject = if path == "." { "the request body" } else { path };
    // The JSON mapping takes a number written as a string too.
    if error.starts_with("invalid float literal") || error.starts_with("cannot parse float from empty string") {
        return Some(format!("{subject} must be a number or a string holding one, and this string holds none"));
    }
    let (found, expected) = error.strip_prefix("invalid type: ")?.split_once(", expected ")?;
    let expected = expected.split(" at line ").next()?;
    let expected = match expected {
        "a map" => "a JSON object",
        "a sequence" => "a list",
        "a 64-bit floating point value" | "a 32-bit floating point value" => "a number",
        "a 32-bit signed integer" => "a whole number",
        "a 32-bit unsigned integer or decimal string"
        | "a 64-bit signed integer or decimal string"
        | "a 64-bit unsigned integer or decimal string" => "a whole number, or one written as a string",
        "a boolean" => "true or false",
        "a rfc3339 timestamp string" => "an RFC 3339 time as a string (2026-11-01T12:00:00Z)",
        "a string or integer" => "one of its values, as a string",
        other => other,
    };
    let found = match found {
        "integer" | "floating point" => "a number",
        "string" => "a string",
        "boolean" => "a boolean",
        "sequence" => "a list",
        "map" => "an object",
        "null" => "null",
        _ => return None,
    };
    Some(format!("{subject} must be {expected}, not {found}"))
}

/// Whether `a` and `b` are strings that spell the same UUID (`A1…`, `a1…`, `{a1…}`, `urn:uuid:a1…`).
fn same_uuid(a: &Value, b: &Value) -> bool {
    // Nothing around an id: one with blanks beside it is another value, and refused.
    let uuid = |value: &Value| value.as_str().and_then(|text| uuid::Uuid::try_parse(text).ok());
    uuid(a).is_some_and(|a| uuid(b) == Some(a))
}

/// The request's one `Content-Type`, if it has one: given twice, even alike, it is refused, as
/// readers that take the first and readers that take the last would read the body differently;
/// one that is not text is no media type.
pub(crate) fn content_type(headers: &http::HeaderMap) -> Result<Option<&str>, Problem> {
    if headers.get_all(http::header::CONTENT_TYPE).iter().nth(1).is_some() {
        return Err(Problem::invalid_field("Content-Type", "Content-Type is given more than once"));
    }
    match headers.get(http::header::CONTENT_TYPE).map(http::HeaderValue::to_str) {
        Some(Err(_)) => {
            Err(Problem::new(http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "the Content-Type header is not a media type"))
        }
        Some(Ok(value)) => Ok(Some(value)),
        None => Ok(None),
    }
}

/// What a walk through a body finds before it is read into its message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finding {
    /// A name given twice in one object, by its path.
    Repeated(String),
    /// An integer field's value with a fraction, or past its type's range, by its path.
    OutOfRange(String),
    /// An integer field's whole value written with a point or an exponent, from 2^53, which the
    /// JSON reader would round, by its path.
    Inexact(String),
    /// A time (`google.protobuf.Timestamp`) written finer than the nanosecond, which the reader
    /// would cut rather than refuse, by its path.
    FineTime(String),
    /// A time with a 60th second (a leap second), which the reader would move to the second
    /// before rather than refuse, by its path.
    LeapSecond(String),
}

/// The path of the first name an object of `body` holds twice (`name`, `applicant.age`), if any:
/// within a message of `descriptor`, a field named twice, by its JSON name or its proto name alike;
/// elsewhere (a map's keys, a body without a descriptor), the same name twice. A body that is not
/// JSON has none here; the message's own reading says what is wrong with it.
/// Within a message, an integer field's number that is not whole or is past a 64-bit type's range
/// is found too, which the JSON reader would otherwise round to a whole number or the largest one.
pub(crate) fn repeated_name(body: &[u8], descriptor: Option<&MessageDescriptor>) -> Option<Finding> {
    use std::{borrow::Cow, collections::HashSet};

    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// Walks one JSON value, which sits at `name` under the path `parent` (both empty at the top);
    /// `found` is the first repeated name's path. Paths are only written out for objects and for
    /// the name found, so that a body without repeats costs no allocation a name.
    struct Walk<'a> {
        parent: &'a str,
        name: &'a str,
        found: &'a mut Option<Finding>,
        /// The message this value is, when known.
        message: Option<MessageDescriptor>,
        /// Whether the value is a time (`google.protobuf.Timestamp`).
        time: bool,
    }

    /// What two names of one object are compared by: a message's field, however named, or the
    /// name itself (a map's keys are data).
    #[derive(PartialEq, Eq, Hash)]
    enum Seen<'de> {
        Field(u32),
        Name(Cow<'de, str>),
    }

    fn join(parent: &str, name: &str) -> String {
        if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") }
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let path = join(self.parent, self.name);
            let mut seen: HashSet<Seen<'de>> = HashSet::with_capacity(map.size_hint().unwrap_or(8));
            while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                if self.found.is_some() {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                let field = self.message.as_ref().and_then(|message| {
                    message.get_field_by_name(&name).or_else(|| message.get_field_by_json_name(&name))
                });
                let inner = field.as_ref().and_then(|field| match field.kind() {
                    Kind::Message(inner) if !field.is_map() => Some(inner),
                    _ => None,
                });
                // A field is named by its JSON name, whichever name the body used.
                let shown = field.as_ref().map_or(&*name, |field| field.json_name());
                let key = match &field {
                    Some(field) => Seen::Field(field.number()),
                    None => Seen::Name(name.clone()),
                };
                if !seen.insert(key) {
                    *self.found = Some(Finding::Repeated(join(&path, shown)));
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                // An integer field's numbers are read from their digits: serde_json reads one with a
                // point or an exponent, or past 64 bits, as a float, which would round `1.0000000000000001`
                // to 1 and `18446744073709551616` to the largest integer, where the JSON mapping takes
                // only whole numbers in the type's range.
                let integer = field.as_ref().filter(|field| !field.is_map());
                if let Some((bound, list)) = integer.and_then(|field| Some((integer_bound(field)?, field.is_list()))) {
                    let value: &'de serde_json::value::RawValue = map.next_value()?;
                    if self.found.is_none() {
                        *self.found = match integer_reading(value.get(), bound, list) {
                            Reading::Exact => None,
                            Reading::NotWhole => Some(Finding::OutOfRange(join(&path, shown))),
                            Reading::Inexact => Some(Finding::Inexact(join(&path, shown))),
                        };
                    }
                    continue;
                }
                let time = inner.as_ref().is_some_and(|inner| inner.full_name() == "google.protobuf.Timestamp");
                let walk = Walk { parent: &path, name: shown, found: &mut *self.found, message: inner, time };
                map.next_value_seed(walk)?;
            }
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let Walk { parent, name, found, message, time } = self;
            while seq
                .next_element_seed(Walk { parent, name, found: &mut *found, message: message.clone(), time })?
                .is_some()
            {}
            Ok(())
        }

        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, value: &str) -> Result<(), E> {
            // The digits after the second's point, before the zone.
            let fraction = value.split_once('.').map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count());
            if self.time && fraction.is_some_and(|digits| digits > 9) && self.found.is_none() {
                *self.found = Some(Finding::FineTime(join(self.parent, self.name)));
            }
            // `YYYY-MM-DDTHH:MM:60`.
            if self.time && value.get(13..14) == Some(":") && value.get(16..19) == Some(":60") && self.found.is_none() {
                *self.found = Some(Finding::LeapSecond(join(self.parent, self.name)));
            }
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    let mut found = None;
    let mut json = serde_json::Deserializer::from_slice(body);
    Walk { parent: "", name: "", found: &mut found, message: descriptor.cloned(), time: false }
        .deserialize(&mut json)
        .ok()?;
    found
}

/// The JSON path a body that does not fit `descriptor` fails at (`expiresAt`, `applicant.age`,
/// `.` for the top level), found by reading it again while tracking the path: only refused
/// bodies pay for the tracking.
fn path_of_error(descriptor: &MessageDescriptor, body: &[u8]) -> String {
    let mut json = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    let _ = DynamicMessage::deserialize_with_options(descriptor.clone(), tracked, &DeserializeOptions::new());
    json_names(descriptor, &track.path().to_string())
}

/// The field at the JSON `path` (`applicant.age`, `items[0].unitPrice`) of a `descriptor` message.
/// For a name the object at `path` does not have (`error` is prost-reflect's "unrecognized field
/// name"), the field it most likely meant (`birthdate` → `birthDate`), or the names it has.
fn unknown_name_hint(descriptor: &MessageDescriptor, path: &str, error: &str) -> String {
    let Some(unknown) = error.strip_prefix("unrecognized field name '").and_then(|rest| rest.split('\'').next()) else {
        return String::new();
    };
    let message = match path {
        "." => Some(descriptor.clone()),
        path => field_at(descriptor, path).and_then(|field| match field.kind() {
            Kind::Message(message) => Some(message),
            _ => None,
        }),
    };
    let Some(message) = message else { return String::new() };
    let folded = |name: &str| name.replace('_', "").to_ascii_lowercase();
    match message.fields().find(|field| folded(field.json_name()) == folded(unknown)) {
        Some(meant) => format!("; did you mean {}?", meant.json_name()),
        None => {
            let names: Vec<String> = message.fields().map(|field| field.json_name().to_owned()).collect();
            format!("; it takes {}", names.join(", "))
        }
    }
}

fn field_at(descriptor: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut message = descriptor.clone();
    let mut field = None;
    for segment in path.split('.') {
        let name = segment.split('[').next().unwrap_or_default();
        let found = message.get_field_by_json_name(name).or_else(|| message.get_field_by_name(name))?;
        if let Kind::Message(inner) = found.kind() {
            message = inner;
        }
        field = Some(found);
    }
    field
}

/// `path` (`birth_date`, `applicant.employment_years`, `items[0].unit_price`) with each field of
/// `descriptor`'s message named by its JSON name, as the body may use either name; other
/// segments, and list indexes, stay as they are.
fn json_names(descriptor: &MessageDescriptor, path: &str) -> String {
    let mut message = Some(descriptor.clone());
    let segments = path.split('.').map(|segment| {
        let (name, index) = segment.find('[').map_or((segment, ""), |at| segment.split_at(at));
        let field = message
            .as_ref()
            .and_then(|inner| inner.get_field_by_name(name).or_else(|| inner.get_field_by_json_name(name)));
        message = field.as_ref().and_then(|field| match field.kind() {
            Kind::Message(inner) if !field.is_map() => Some(inner),
            _ => None,
        });
        field.map_or_else(|| segment.to_owned(), |field| format!("{}{index}", field.json_name()))
    });
    segments.collect::<Vec<_>>().join(".")
}

/// For an integer field, the magnitude its values stay below (2^31 or 2^32 for a 32-bit field, 2^63
/// or 2^64 for a 64-bit one) and whether it is signed (its negative values reach the magnitude).
fn integer_bound(field: &FieldDescriptor) -> Option<(u128, bool)> {
    match field.kind() {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Some((1 << 31, true)),
        Kind::Uint32 | Kind::Fixed32 => Some((1 << 32, false)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Some((1 << 63, true)),
        Kind::Uint64 | Kind::Fixed64 => Some((1 << 64, false)),
        _ => None,
    }
}

/// How an integer field's JSON value reads.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    /// As written: digits alone within 64 bits (whose range the message's reading checks), a
    /// whole number with a point or an exponent that a float holds exactly, or no number at all
    /// (a string, `null`, an object: the message's reading says what is wrong with it).
    Exact,
    /// A number with a fraction, or past the field's type.
    NotWhole,
    /// A whole number within the type written with a point or an exponent, from 2^53 and not held
    /// exactly by a float, which the JSON reader makes of it (`9007199254740993.0`; `1e18` is held).
    Inexact,
}

/// How `json`, an integer field's value (a number, or for a repeated field, `list`, a list of them),
/// reads against the field's `bound` ([`integer_bound`]); for a list, its first item that does not
/// read exactly.
fn integer_reading(json: &str, bound: (u128, bool), list: bool) -> Reading {
    let (limit, signed) = bound;
    let negative = json.starts_with('-');
    match json.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') if json.parse::<i64>().is_ok() || json.parse::<u64>().is_ok() => Reading::Exact,
        Some(b'-' | b'0'..=b'9') => match whole_magnitude(json) {
            None => Reading::NotWhole,
            // Past the type: beyond its magnitude (a signed type's reaches it below zero), or below
            // zero for an unsigned one.
            Some(magnitude)
                if magnitude > limit
                    || (magnitude == limit && !(signed && negative))
                    || (negative && !signed && magnitude > 0) =>
            {
                Reading::NotWhole
            }
            // A float holds every whole number below 2^53, and from it only some (1e18 is one).
            Some(magnitude) if magnitude >= 1 << 53 && magnitude as f64 as u128 != magnitude => Reading::Inexact,
            Some(_) => Reading::Exact,
        },
        Some(b'[') if list => serde_json::from_str::<Vec<&serde_json::value::RawValue>>(json)
            .ok()
            .and_then(|items| {
                let readings = items.iter().map(|item| integer_reading(item.get(), bound, false));
                readings.into_iter().find(|reading| *reading != Reading::Exact)
            })
            .unwrap_or(Reading::Exact),
        _ => Reading::Exact,
    }
}

/// The magnitude of the JSON number `number`, read from its digits, if it is whole (`u128::MAX`
/// past it): `1.0`, `1e3` and `0.7e1` are, `150e-2` (1.5) is not, and neither is
/// `1.0000000000000001`, though a float rounds it to 1.
fn whole_magnitude(number: &str) -> Option<u128> {
    let unsigned = number.strip_prefix('-').unwrap_or(number);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        // An exponent past i64 moves the point further than any digit reaches.
        Some((mantissa, exponent)) => {
            let far = if exponent.starts_with('-') { i64::MIN / 2 } else { i64::MAX / 2 };
            (mantissa, exponent.parse::<i64>().unwrap_or(far))
        }
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // The digits without the zeros that end them, and where the point falls among them.
    let fraction = fraction.trim_end_matches('0');
    let digits = if fraction.is_empty() { whole.trim_end_matches('0') } else { whole };
    let significant = digits.len() + fraction.len();
    let point = (whole.len() as i64).saturating_add(exponent);
    if significant == 0 {
        return Some(0);
    }
    if significant as i64 > point {
        return None;
    }
    let value = digits
        .bytes()
        .chain(fraction.bytes())
        .try_fold(0u128, |value, digit| value.checked_mul(10)?.checked_add(u128::from(digit - b'0')));
    // Zeros to the point.
    let zeros = u32::try_from(point - significant as i64).ok();
    Some(value.zip(zeros).and_then(|(value, zeros)| value.checked_mul(10u128.checked_pow(zeros)?)).unwrap_or(u128::MAX))
}

/// Sets the fields the query names. A field the path binds (`bound`, by proto name) cannot be
/// set again from the query, and a field that holds one value cannot be given twice.
fn apply_query(message: &mut DynamicMessage, query: &str, bound: &[&str]) -> Result<(), Problem> {
    let descriptor = message.descriptor();
    let mut given = Vec::new();
    for (name, value) in form_pairs(query)? {
        let field = descriptor
            .get_field_by_name(&name)
            .or_else(|| descriptor.get_field_by_json_name(&name))
            .ok_or_else(|| Problem::invalid_field(&name, format!("unknown query parameter {name:?}")))?;
        // Named as the JSON names it, whichever name the query used.
        let name = field.json_name();
        if bound.contains(&field.name()) {
            return Err(Problem::invalid_field(name, format!("{name} is given by the path, not the query")));
        }
        let parsed =
            scalar(&field, &value).map_err(|reason| Problem::invalid_field(name, format!("{name}: {reason}")))?;
        if field.is_list() {
            if let Value::List(items) = message.get_field_mut(&field) {
                items.push(parsed);
            }
        } else if given.contains(&field.number()) {
            return Err(Problem::invalid_field(name, format!("query parameter {name} is given more than once")));
        } else {
            given.push(field.number());
            message.set_field(&field, parsed);
        }
    }
    Ok(())
}

/// The query's `name=value` pairs, decoded; a malformed escape or bytes that are not UTF-8 are a
/// 400 rather than a value the client did not send.
pub(crate) fn form_pairs(query: &str) -> Result<Vec<(String, String)>, Problem> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode_component(name).ok_or_else(|| {
                Problem::bad_request("a query parameter's name is not percent-encoded UTF-8 (RFC 3986)")
            })?;
            let value = decode_component(value).ok_or_else(|| {
                Problem::invalid_field(&name, format!("query parameter {name} is not percent-encoded UTF-8 (RFC 3986)"))
            })?;
            Ok((name, value))
        })
        .collect()
}

/// `text` with `+` as a space and its `%XX` escapes decoded; `None` when an escape is malformed
/// or the bytes decoded are not UTF-8.
fn decode_component(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
    if bytes.iter().enumerate().any(|(at, byte)| *byte == b'%' && !(hex(at + 1) && hex(at + 2))) {
        return None;
    }
    let spaced = text.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8().ok()?;
    Some(decoded.into_owned())
}

/// A path or query value as the field's type.
fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let kind = field.kind();
    let whole = || format!("{text:?} is not a whole number from {}", whole_numbers_of(field).unwrap_or_default());
    Ok(match kind {
        Kind::String => Value::String(text.to_owned()),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(integer(text).ok_or_else(whole)?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(integer(text).ok_or_else(whole)?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(integer(text).ok_or_else(whole)?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(integer(text).ok_or_else(whole)?),
        Kind::Float => Value::F32(text.parse().map_err(|_| format!("{text:?} is not a number"))?),
        Kind::Double => Value::F64(text.parse().map_err(|_| format!("{text:?} is not a number"))?),
        Kind::Bool => Value::Bool(text.parse().map_err(|_| format!("{text:?} is not true or false"))?),
        Kind::Bytes => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| format!("{text:?} is not base64"))?
                .into(),
        ),
        Kind::Enum(kind) => {
            let value = kind
                .get_value_by_name(text)
                .or_else(|| integer(text).and_then(|number| kind.get_value(number)))
                .ok_or_else(|| format!("{text:?} is not one of {}", kind.name()))?;
            Value::EnumNumber(value.number())
        }
        Kind::Message(_) => return Err("cannot be set from the URL".into()),
    })
}

/// The whole numbers `field` takes: those its `aigronova.common.v1.minimum` and `maximum` allow,
/// within those its kind holds.
fn whole_numbers_of(field: &FieldDescriptor) -> Option<String> {
    let range = whole_numbers(&field.kind())?;
    let options = field.options();
    let bound = |name: &str| {
        let extension = field.parent_pool().get_extension_by_name(&format!("aigronova.common.v1.{name}"))?;
        options.has_extension(&extension).then(|| options.get_extension(&extension).as_i64()).flatten()
    };
    let (lowest, highest) = range.split_once(" to ")?;
    Some(match (bound("minimum"), bound("maximum")) {
        (None, None) => range,
        (minimum, maximum) => format!(
            "{} to {}",
            minimum.map_or(lowest.to_owned(), |minimum| minimum.to_string()),
            maximum.map_or(highest.to_owned(), |maximum| maximum.to_string())
        ),
    })
}

/// The whole numbers a field of `kind` holds (`0 to 4294967295`), if it holds whole numbers.
fn whole_numbers(kind: &Kind) -> Option<String> {
    Some(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => format!("{} to {}", i32::MIN, i32::MAX),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => format!("{} to {}", i64::MIN, i64::MAX),
        Kind::Uint32 | Kind::Fixed32 => format!("0 to {}", u32::MAX),
        Kind::Uint64 | Kind::Fixed64 => format!("0 to {}", u64::MAX),
        _ => return None,
    })
}

/// `text` as an integer in digits, with a `-` when negative, as the OpenAPI document's patterns
/// say (Rust's parsers take a `+` too).
pub(crate) fn integer<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.starts_with('+') { None } else { text.parse().ok() }
}

/// The HTTP response for the encoded response message of `route`'s RPC.
pub(crate) fn response(route: &Route, encoded: Bytes) -> Result<Response, Problem> {
    let output = route.method.output();
    if output.full_name() != "google.api.HttpBody"
        && let Some(json) = route.json.write(&encoded)
    {
        return Ok(json_response(json));
    }
    let message = DynamicMessage::decode(output.clone(), encoded).map_err(|error| {
        tracing::error!(request_id = crate::request_id::current().unwrap_or_default(), %error, response_type = %output.full_name(), "upstream response does not decode");
        Problem::internal()
    })?;
    if output.full_name() == "google.api.HttpBody" {
        return Ok(http_body(&message));
    }
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut json = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut json);
    message.serialize_with_options(&mut serializer, &options).map_err(|error| {
        tracing::error!(request_id = crate::request_id::current().unwrap_or_default(), %error, "response does not serialize");
        Problem::internal()
    })?;
    Ok(json_response(json))
}

fn json_response(json: Vec<u8>) -> Response {
    let mut response = (StatusCode::OK, json).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn http_body(message: &DynamicMessage) -> Response {
    let content_type = message
        .get_field_by_name("content_type")
        .and_then(|value| value.as_str().and_then(|s| HeaderValue::from_str(s).ok()))
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let data = message.get_field_by_name("data").and_then(|value| value.as_bytes().cloned()).unwrap_or_default();
    let mut response = Response::new(Body::from(data));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}

/// Encodes a request message for the wire.
pub(crate) fn encode(message: &DynamicMessage) -> Bytes {
    message.encode_to_vec().into()
}

#[cfg(test)]
mod tests {
    use prost_reflect::{DescriptorPool, MapKey};

    use super::*;

    #[test]
    fn a_number_its_field_cannot_hold_is_refused_naming_the_range() {
        let descriptor = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("aigronova.governance.v1.CreateReviewRequest")
            .unwrap();
        for body in [
            &br#"{"auditIndex": -1, "reason": "x"}"#[..],
            br#"{"auditIndex": 1.5}"#,
            br#"{"auditIndex": 1e30}"#,
            br#"{"auditIndex": "abc"}"#,
            br#"{"auditIndex": "12x"}"#,
            br#"{"auditIndex": ""}"#,
            br#"{"auditIndex": "18446744073709551616"}"#,
            br#"{"auditIndex": "-1"}"#,
        ] {
            let problem = parse_body(&descriptor, body, None).unwrap_err();
            assert_eq!(problem.field(), Some("auditIndex"), "{}", String::from_utf8_lossy(body));
            assert_eq!(problem.detail(), "auditIndex is not a whole number from 0 to 18446744073709551615");
        }
    }

    #[test]
    fn a_json_numbers_magnitude_is_read_from_its_digits_when_it_is_whole() {
        for (number, magnitude) in [
            ("0", Some(0)),
            ("-0.0", Some(0)),
            ("0e99999999999999999999", Some(0)),
            ("7.0", Some(7)),
            ("7e0", Some(7)),
            ("0.7e1", Some(7)),
            ("700e-2", Some(7)),
            ("1.50e2", Some(150)),
            ("1E+3", Some(1000)),
            ("-9223372036854775808.0", Some(1 << 63)),
            ("18446744073709551614e0", Some(18_446_744_073_709_551_614)),
            ("9007199254740993.0", Some(9_007_199_254_740_993)),
            ("1e99", Some(u128::MAX)),
            ("1e99999999999999999999", Some(u128::MAX)),
            ("150e-2", None),
            ("1.0000000000000001", None),
            ("1e-400", None),
            ("-0.5", None),
        ] {
            assert_eq!(whole_magnitude(number), magnitude, "{number}");
        }
    }

    #[test]
    fn a_64_bit_integer_past_its_range_is_refused_rather_than_rounded_to_the_largest() {
        let review = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name("aigronova.governance.v1.CreateReviewRequest")
            .unwrap();
        for index in [
            "18446744073709551616",
            "1.8446744073709552e19",
            "18446744073709552000",
            "1e30",
            "-1e19",
            "-9007199254740993.0",
            "-9223372036854775809",
        ] {
            let body = format!(r#"{{"auditIndex": {index}, "reason": "x"}}"#);
            let problem = parse_body(&review, body.as_bytes(), None).unwrap_err();
            assert_eq!(problem.field(), Some("auditIndex"), "{index}");
            assert!(detail(problem).contains("is not a whole number from 0"), "{index}");
        }
        // A number with a fraction, however small, is not whole, though a float would round it to one.
        for index in ["1.0000000000000001", "9007199254740993.5", "150e-2", "-0.5", "1e-400"] {
            let body = format!(r#"{{"auditIndex": {index}, "reason": "x"}}"#);
            let problem = parse_body(&review, body.as_bytes(), None).unwrap_err();
            assert_eq!(problem.field(), Some("auditIndex"), "{index}");
            assert!(detail(problem).contains("is not a whole number from 0"), "{index}");
        }
        // A whole number with a point or an exponent from 2^53, which a float would round.
        for index in ["9007199254740993.0", "9223372036854775807.0", "1.2345678901234567e17", "18446744073709551614e0"]
        {
            let body = format!(r#"{{"auditIndex": {index}, "reason": "x"}}"#);
            let problem = parse_body(&review, body.as_bytes(), None).unwrap_err();
            assert_eq!(problem.field(), Some("auditIndex"), "{index}");
            assert!(detail(problem).contains("is written with a point or an exponent"), "{index}");
        }
        // Whole numbers a float holds exactly, from 2^53 too, read as written however they are written.
        for (index, value) in [
            ("18446744073709551615", u64::MAX),
            ("7", 7),
            ("\"18446744073709551615\"", u64::MAX),
            ("7.0", 7),
            ("7e0", 7),
            ("0.7e1", 7),
            ("700e-2", 7),
            ("0.0", 0),
            ("9007199254740992.0", 1 << 53),
            ("1e18", 1_000_000_000_000_000_000),
            ("1.8446744073709549568e19", 18_446_744_073_709_549_568),
            ("9.223372036854775808e18", 1 << 63),
        ] {
            let body = format!(r#"{{"auditIndex": {index}, "reason": "x"}}"#);
            let message =
                parse_body(&review, body.as_bytes(), None).unwrap_or_else(|problem| panic!("{index}: {problem:?}"));
            assert_eq!(message.get_field_by_name("audit_index").unwrap().as_u64(), Some(value), "{index}");
        }
    }

    fn assess_risk_request() -> MessageDescriptor {
        DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes")
            .get_message_by_name("aigronova.health.v1.AssessRiskRequest")
            .expect("AssessRiskRequest")
    }

    fn detail(problem: Problem) -> String {
        problem.detail().to_owned()
    }

    #[test]
    fn an_error_path_names_fields_by_their_json_names_through_lists_and_messages() {
        let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).unwrap();
        let events = pool.get_message_by_name("aigronova.governance.v1.RecordEventsRequest").unwrap();
        assert_eq!(json_names(&events, "events[0].event_id"), "events[0].eventId");
        assert_eq!(json_names(&events, "events[12].eventId"), "events[12].eventId");
        assert_eq!(json_names(&events, "events[0].shoe_size"), "events[0].shoe_size", "unknown names stay");
        assert_eq!(json_names(&assess_risk_request(), "patient_id"), "patientId");
        assert_eq!(json_names(&assess_risk_request(), "features.mean radius"), "features.mean radius");
    }

    #[test]
    fn serde_s_names_of_types_are_told_in_the_api_s_words() {
        let said = |error: &str| type_mismatch("scopes", error);
        assert_eq!(
            said("invalid type: string, expected a sequence").as_deref(),
            Some("scopes must be a list, not a string")
        );
        assert_eq!(
            said("invalid type: integer, expected a map").as_deref(),
            Some("scopes must be a JSON object, not a number")
        );
        assert_eq!(said("missing field `x`"), None);
    }

    #[test]
    fn a_time_finer_than_the_nanosecond_is_refused_at_its_field() {
        let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).unwrap();
        let consent = pool.get_message_by_name("aigronova.fin.v1.CreateConsentRequest").unwrap();
        let body = |at: &str| format!(r#"{{"cpf": "529.982.247-25", "institution": "a", "expiresAt": "{at}"}}"#);
        for fine in ["2027-06-30T00:00:00.123456789Z", "2027-06-30T00:00:00Z", "2027-06-30T00:00:00.5-03:00"] {
            assert!(parse_body(&consent, body(fine).as_bytes(), None).is_ok(), "{fine}");
        }
        let refused = parse_body(&consent, body("2027-06-30T00:00:00.1234567891Z").as_bytes(), None).unwrap_err();
        assert_eq!(refused.field(), Some("expiresAt"));
        assert!(detail(refused).contains("more than 9 digits"));
        // A leap second, which the reader would move to the second before.
        for leap in ["2027-06-30T23:59:60Z", "2027-06-30T23:59:60.5-03:00"] {
            let refused = parse_body(&consent, body(leap).as_bytes(), None).unwrap_err();
            assert_eq!(refused.field(), Some("expiresAt"), "{leap}");
            assert!(detail(refused).contains("60th second"), "{leap}");
        }
        // A string that is no time is not taken for one: the cpf's dots are no second's point.
        assert!(
            parse_body(
                &consent,
                body("2027-06-30T00:00:00Z").replace("529.982.247-25", "529.9822472512345").as_bytes(),
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn json_bodies_are_read_in_utf_8_only_whatever_their_media_type_says() {
        let body = br#"{"name": "Maria"}"#;
        for accepted in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "application/problem+json; Charset=Utf-8",
            "application/json; charset=utf8",
            "application/json; charset=US-ASCII",
            "application/x-www-form-urlencoded",
        ] {
            assert!(json_content_type(Some(accepted), body).is_ok(), "{accepted}");
        }
        for (refused, named) in [
            ("application/json; charset=iso-8859-1", "iso-8859-1"),
            ("application/json; CHARSET=\"windows-1252\"", "windows-1252"),
            ("application/json; charset=utf-16", "utf-16"),
            ("application/x-www-form-urlencoded; charset=latin1", "latin1"),
            ("application/json; charset=utf-8; charset=latin1", "latin1"),
            // No media type: a suffix without a name, a type without a subtype.
            ("application/+json", "application/+json"),
            ("+json", "+json"),
            ("application/ x+json", "application/ x+json"),
            // Patch formats, whose `null` and operations the message's reading would not honour.
            ("application/merge-patch+json", "application/merge-patch+json"),
            ("Application/JSON-Patch+JSON; charset=utf-8", "application/json-patch+json"),
        ] {
            let problem = json_content_type(Some(refused), body).unwrap_err();
            assert_eq!(problem.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{refused}");
            assert!(problem.detail().contains(named), "{refused}: {}", problem.detail());
        }
        assert!(json_content_type(Some("application/json; charset=iso-8859-1"), b"  ").is_ok(), "no body, no charset");
    }

    #[test]
    fn a_body_is_read_into_its_message_with_the_json_mapping() {
        let body = br#" {"patientId": "p1", "model": "breast-cancer", "features": {"mean radius": 17.99}} "#;
        let message = parse_body(&assess_risk_request(), body, None).unwrap();
        assert_eq!(message.get_field_by_name("patient_id").unwrap().as_str(), Some("p1"));
        let features = message.get_field_by_name("features").unwrap().into_owned();
        let features = features.as_map().unwrap();
        assert_eq!(features.get(&MapKey::String("mean radius".into())), Some(&Value::F64(17.99)));
    }

    #[test]
    fn bad_json_and_a_body_that_does_not_fit_the_message_are_told_apart() {
        let descriptor = assess_risk_request();
        for body in [&br#"{"model": "#[..], br#"{"model": "x"} trailing"#, br"not json"] {
            let problem = detail(parse_body(&descriptor, body, None).unwrap_err());
            assert!(problem.starts_with("the request body is not valid JSON"), "{problem}");
        }
        let problem = parse_body(&descriptor, br#"{"unknown": 1}"#, None).unwrap_err();
        assert_eq!(problem.field(), Some("unknown"));
        assert!(detail(problem).starts_with("the request body does not match AssessRiskRequest"));
        // Within an object of its own message, that message is named, with the names it takes.
        let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).unwrap();
        let score = pool.get_message_by_name("aigronova.fin.v1.ScoreCreditRequest").unwrap();
        let problem =
            parse_body(&score, br#"{"cpf": "52998224725", "applicant": {"shoeSize": 42}}"#, None).unwrap_err();
        assert_eq!(problem.field(), Some("applicant.shoeSize"));
        let said = detail(problem);
        assert!(said.starts_with("applicant does not match Applicant: unrecognized field name 'shoeSize'"), "{said}");
        assert!(said.contains("it takes durationMonths") && !said.contains("ScoreCreditRequest"), "{said}");
        // A value of the wrong type is told in the API's words, naming its field.
        let cases = [
            (
                &br#"{"features": {"mean radius": "high"}}"#[..],
                "features.mean radius",
                "must be a number or a string holding one, and this string holds none",
            ),
            (
                br#"{"features": {"bmi": ""}}"#,
                "features.bmi",
                "must be a number or a string holding one, and this string holds none",
            ),
            (br#"{"features": {"bmi": null}}"#, "features.bmi", "must be a number, not null"),
            (br#"{"features": {"bmi": [0.1]}}"#, "features.bmi", "must be a number, not a list"),
            (br#"{"model": "x", "patientId": 7}"#, "patientId", "must be a string, not a number"),
            (br#"{"features": true}"#, "features", "must be a JSON object, not a boolean"),
        ];
        for (body, field, said) in cases {
            let problem = parse_body(&descriptor, body, None).unwrap_err();
            assert_eq!(problem.field(), Some(field), "{}", String::from_utf8_lossy(body));
            let problem = detail(problem);
            assert!(problem.ends_with(said) && !problem.contains("line 1"), "{problem}");
        }
        // A body that is no object is told so, naming no field: it is none.
        let found = [
            (&br"null"[..], "null"),
            (br"true", "a boolean"),
            (br"[]", "a list"),
            (br#""text""#, "a string"),
            (br"12", "a number"),
            (br"-1", "a number"),
        ];
        for (body, found) in found {
            let problem = parse_body(&descriptor, body, None).unwrap_err();
            assert_eq!(problem.field(), None, "{}", String::from_utf8_lossy(body));
            assert_eq!(detail(problem), format!("the request body must be a JSON object, not {found}"));
        }
        // A number past every float's range is told at its field.
        let huge = parse_body(&descriptor, br#"{"features": {"bmi": 1e400}}"#, None).unwrap_err();
        assert_eq!(huge.field(), Some("features.bmi"));
        assert!(detail(huge).starts_with("features.bmi is not a number a field can hold"));
        let lone = detail(parse_body(&descriptor, br#"{"model": "\ud800x"}"#, None).unwrap_err());
        assert!(lone.ends_with(r"must be one of a high and low pair"), "{lone}");
        let short = detail(parse_body(&descriptor, br#"{"model": "\u12x4"}"#, None).unwrap_err());
        assert!(short.ends_with(r"or u with four hex digits"), "{short}");
        let marked = detail(parse_body(&descriptor, b"\xEF\xBB\xBF{\"model\": \"x\"}", None).unwrap_err());
        assert_eq!(marked, "the request body starts with a byte-order mark: send the JSON without it");
    }
}
