//! Proto3 JSON written straight from a message's wire bytes, for the answers the gateway relays:
//! the same document `prost-reflect`'s serializer makes of a decoded `DynamicMessage` (every
//! field, defaults included; 64-bit integers as strings; enums by name), without building the
//! dynamic message first. Anything it does not handle (well-known types but `Timestamp`, groups,
//! a message field sent twice, a repeated map key, malformed bytes) makes it decline, and the
//! caller takes the general path.

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::{
    Message,
    encoding::{WireType, decode_key, decode_varint},
};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// The JSON of the message `descriptor` encoded in `bytes`, or `None` to take the general path.
pub(crate) fn from_wire(descriptor: &MessageDescriptor, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
    message(descriptor, bytes, &mut out, 0)?;
    Some(out)
}

/// Nesting beyond this is left to the general path.
const MAX_DEPTH: usize = 32;

/// One field occurrence on the wire.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn wire_fields(mut buf: &[u8]) -> Option<Vec<(u32, Raw<'_>)>> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let (number, wire_type) = decode_key(&mut buf).ok()?;
        let raw = match wire_type {
            WireType::Varint => Raw::Varint(decode_varint(&mut buf).ok()?),
            WireType::SixtyFourBit => {
                let (value, rest) = buf.split_first_chunk::<8>()?;
                buf = rest;
                Raw::Fixed64(u64::from_le_bytes(*value))
            }
            WireType::ThirtyTwoBit => {
                let (value, rest) = buf.split_first_chunk::<4>()?;
                buf = rest;
                Raw::Fixed32(u32::from_le_bytes(*value))
            }
            WireType::LengthDelimited => {
                let length = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                if buf.len() < length {
                    return None;
                }
                let (value, rest) = buf.split_at(length);
                buf = rest;
                Raw::Bytes(value)
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        fields.push((number, raw));
    }
    Some(fields)
}

fn message(descriptor: &MessageDescriptor, bytes: &[u8], out: &mut Vec<u8>, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    match descriptor.full_name() {
        "google.protobuf.Timestamp" => {
            let timestamp = prost_types::Timestamp::decode(bytes).ok()?;
            // The range proto3 JSON allows, 0001-01-01 to 9999-12-31, and whole nanoseconds.
            if !(-62_135_596_800..=253_402_300_799).contains(&timestamp.seconds)
                || !(0..1_000_000_000).contains(&timestamp.nanos)
            {
                return None;
            }
            return string(out, &timestamp.to_string());
        }
        name if name.starts_with("google.protobuf.") => return None,
        _ => {}
    }
    let wire = wire_fields(bytes)?;
    out.push(b'{');
    let mut first = true;
    for field in descriptor.fields() {
        let number = field.number();
        let values: Vec<Raw<'_>> = wire.iter().filter(|(n, _)| *n == number).map(|(_, raw)| *raw).collect();
        if field.supports_presence() && values.is_empty() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, field.json_name())?;
        out.push(b':');
        if field.is_map() {
            map(&field, &values, out, depth)?;
        } else if field.is_list() {
            list(&field.kind(), &values, out, depth)?;
        } else {
            if values.len() > 1 && matches!(field.kind(), Kind::Message(_)) {
                // Two occurrences of a message field merge; the general path knows how.
                return None;
            }
            single(&field.kind(), values.last().copied(), out, depth)?;
        }
    }
    out.push(b'}');
    Some(())
}

fn list(kind: &Kind, values: &[Raw<'_>], out: &mut Vec<u8>, depth: usize) -> Option<()> {
    out.push(b'[');
    let mut first = true;
    let mut element = |raw: Raw<'_>, out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
        single(kind, Some(raw), out, depth)
    };
    for raw in values.iter().copied() {
        match (raw, packed_width(kind)) {
            // A packed run of numbers, enums or booleans.
            (Raw::Bytes(mut bytes), Some(width)) => {
                while !bytes.is_empty() {
                    let value = match width {
                        Width::Varint => Raw::Varint(decode_varint(&mut bytes).ok()?),
                        Width::Fixed64 => {
                            let (value, rest) = bytes.split_first_chunk::<8>()?;
                            bytes = rest;
                            Raw::Fixed64(u64::from_le_bytes(*value))
                        }
                        Width::Fixed32 => {
                            let (value, rest) = bytes.split_first_chunk::<4>()?;
                            bytes = rest;
                            Raw::Fixed32(u32::from_le_bytes(*value))
                        }
                    };
                    element(value, out)?;
                }
            }
            (raw, _) => element(raw, out)?,
        }
    }
    out.push(b']');
    Some(())
}

enum Width {
    Varint,
    Fixed64,
    Fixed32,
}

/// How a packable kind is packed; `None` for strings, bytes and messages.
fn packed_width(kind: &Kind) -> Option<Width> {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => Some(Width::Fixed64),
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => Some(Width::Fixed32),
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Sint32 | Kind::Sint64 | Kind::Bool => {
            Some(Width::Varint)
        }
        Kind::Enum(_) => Some(Width::Varint),
        Kind::String | Kind::Bytes | Kind::Message(_) => None,
    }
}

fn map(field: &FieldDescriptor, entries: &[Raw<'_>], out: &mut Vec<u8>, depth: usize) -> Option<()> {
    let Kind::Message(entry) = field.kind() else { return None };
    let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
    let mut keys: Vec<String> = Vec::with_capacity(entries.len());
    out.push(b'{');
    for (index, raw) in entries.iter().enumerate() {
        let Raw::Bytes(bytes) = raw else { return None };
        let wire = wire_fields(bytes)?;
        let find = |number: u32| wire.iter().rev().find(|(n, _)| *n == number).map(|(_, raw)| *raw);
        let key = map_key(&key_field.kind(), find(1))?;
        if keys.contains(&key) {
            return None;
        }
        if index > 0 {
            out.push(b',');
        }
        string(out, &key)?;
        out.push(b':');
        single(&value_field.kind(), find(2), out, depth)?;
        keys.push(key);
    }
    out.push(b'}');
    Some(())
}

/// A map key as proto3 JSON writes it: always a string.
fn map_key(kind: &Kind, raw: Option<Raw<'_>>) -> Option<String> {
    Some(match (kind, raw) {
        (Kind::String, None) => String::new(),
        (Kind::String, Some(Raw::Bytes(bytes))) => std::str::from_utf8(bytes).ok()?.to_owned(),
        (Kind::Bool, raw) => (varint(raw)? != 0).to_string(),
        (Kind::Int32 | Kind::Sfixed32 | Kind::Sint32, raw) => int32(kind, raw)?.to_string(),
        (Kind::Int64 | Kind::Sfixed64 | Kind::Sint64, raw) => int64(kind, raw)?.to_string(),
        (Kind::Uint32 | Kind::Fixed32, raw) => uint32(kind, raw)?.to_string(),
        (Kind::Uint64 | Kind::Fixed64, raw) => uint64(kind, raw)?.to_string(),
        _ => return None,
    })
}

fn varint(raw: Option<Raw<'_>>) -> Option<u64> {
    match raw {
        None => Some(0),
        Some(Raw::Varint(value)) => Some(value),
        Some(_) => None,
    }
}

fn int32(kind: &Kind, raw: Option<Raw<'_>>) -> Option<i32> {
    match (kind, raw) {
        (_, None) => Some(0),
        (Kind::Int32, Some(Raw::Varint(value))) => Some(value as i32),
        (Kind::Sint32, Some(Raw::Varint(value))) => {
            let value = value as u32;
            Some(((value >> 1) as i32) ^ -((value & 1) as i32))
        }
        (Kind::Sfixed32, Some(Raw::Fixed32(value))) => Some(value as i32),
        _ => None,
    }
}

fn int64(kind: &Kind, raw: Option<Raw<'_>>) -> Option<i64> {
    match (kind, raw) {
        (_, None) => Some(0),
        (Kind::Int64, Some(Raw::Varint(value))) => Some(value as i64),
        (Kind::Sint64, Some(Raw::Varint(value))) => Some(((value >> 1) as i64) ^ -((value & 1) as i64)),
        (Kind::Sfixed64, Some(Raw::Fixed64(value))) => Some(value as i64),
        _ => None,
    }
}

fn uint32(kind: &Kind, raw: Option<Raw<'_>>) -> Option<u32> {
    match (kind, raw) {
        (_, None) => Some(0),
        (Kind::Uint32, Some(Raw::Varint(value))) => Some(value as u32),
        (Kind::Fixed32, Some(Raw::Fixed32(value))) => Some(value),
        _ => None,
    }
}

fn uint64(kind: &Kind, raw: Option<Raw<'_>>) -> Option<u64> {
    match (kind, raw) {
        (_, None) => Some(0),
        (Kind::Uint64, Some(Raw::Varint(value))) | (Kind::Fixed64, Some(Raw::Fixed64(value))) => Some(value),
        _ => None,
    }
}

/// One value of `kind` (its default when `raw` is `None`).
fn single(kind: &Kind, raw: Option<Raw<'_>>, out: &mut Vec<u8>, depth: usize) -> Option<()> {
    match kind {
        Kind::Double => {
            let value = match raw {
                None => 0.0,
                Some(Raw::Fixed64(bits)) => f64::from_bits(bits),
                Some(_) => return None,
            };
            if value.is_finite() {
                serde_json::to_writer(&mut *out, &value).ok()
            } else {
                string(out, non_finite(value.is_nan(), value.is_sign_negative()))
            }
        }
        Kind::Float => {
            let value = match raw {
                None => 0.0,
                Some(Raw::Fixed32(bits)) => f32::from_bits(bits),
                Some(_) => return None,
            };
            if value.is_finite() {
                serde_json::to_writer(&mut *out, &value).ok()
            } else {
                string(out, non_finite(value.is_nan(), value.is_sign_negative()))
            }
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => serde_json::to_writer(&mut *out, &int32(kind, raw)?).ok(),
        Kind::Uint32 | Kind::Fixed32 => serde_json::to_writer(&mut *out, &uint32(kind, raw)?).ok(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => string(out, &int64(kind, raw)?.to_string()),
        Kind::Uint64 | Kind::Fixed64 => string(out, &uint64(kind, raw)?.to_string()),
        Kind::Bool => {
            out.extend_from_slice(if varint(raw)? != 0 { b"true" } else { b"false" });
            Some(())
        }
        Kind::String => match raw {
            None => string(out, ""),
            Some(Raw::Bytes(bytes)) => string(out, std::str::from_utf8(bytes).ok()?),
            Some(_) => None,
        },
        Kind::Bytes => match raw {
            None => string(out, ""),
            Some(Raw::Bytes(bytes)) => string(out, &STANDARD.encode(bytes)),
            Some(_) => None,
        },
        Kind::Enum(enumeration) => {
            if enumeration.full_name() == "google.protobuf.NullValue" {
                return None;
            }
            let number = varint(raw)? as i32;
            match enumeration.get_value(number) {
                Some(value) => string(out, value.name()),
                None => serde_json::to_writer(&mut *out, &number).ok(),
            }
        }
        Kind::Message(descriptor) => match raw {
            Some(Raw::Bytes(bytes)) => message(descriptor, bytes, out, depth + 1),
            None => message(descriptor, &[], out, depth + 1),
            Some(_) => None,
        },
    }
}

/// A float that is not a number, as proto3 JSON writes it.
fn non_finite(nan: bool, negative: bool) -> &'static str {
    match (nan, negative) {
        (true, _) => "NaN",
        (false, true) => "-Infinity",
        (false, false) => "Infinity",
    }
}

fn string(out: &mut Vec<u8>, text: &str) -> Option<()> {
    serde_json::to_writer(out, text).ok()
}

#[cfg(test)]
mod tests;
