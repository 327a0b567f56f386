//! Proto3 JSON written straight from a message's wire bytes, for the answers the gateway relays:
//! the same document `prost-reflect`'s serializer makes of a decoded `DynamicMessage` (every
//! field, defaults included; 64-bit integers as strings; enums by name), without building the
//! dynamic message first. A [`Writer`] is compiled once per route from the descriptors (field
//! numbers, JSON keys already quoted, kinds, enum names), so that writing an answer consults no
//! descriptor. Anything it does not handle (well-known types but `Timestamp`, groups, a message
//! field sent twice, a repeated map key, malformed bytes) makes it decline, and the caller takes
//! the general path.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::{
    Message,
    encoding::{WireType, decode_key, decode_varint},
};
use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};

/// Nesting beyond this is left to the general path.
const MAX_DEPTH: usize = 32;

/// Writes one message type, and every type it holds, as JSON from wire bytes.
#[derive(Debug)]
pub(crate) struct Writer {
    messages: Vec<Plan>,
    enums: Vec<EnumNames>,
}

/// How a message type is written.
#[derive(Debug)]
enum Plan {
    Fields(Vec<FieldPlan>),
    Timestamp,
    /// Left to the general path (other well-known types).
    Decline,
}

#[derive(Debug)]
struct FieldPlan {
    number: u32,
    /// `"jsonName":`
    key: Box<[u8]>,
    /// Written only when present on the wire (message fields, oneof members, `optional`).
    presence: bool,
    shape: Shape,
}

#[derive(Debug)]
enum Shape {
    Single(Scalar),
    List(Scalar),
    Map { key: Scalar, value: Scalar },
}

#[derive(Clone, Copy, Debug)]
enum Scalar {
    Double,
    Float,
    Int32,
    Sint32,
    Sfixed32,
    Int64,
    Sint64,
    Sfixed64,
    Uint32,
    Fixed32,
    Uint64,
    Fixed64,
    Bool,
    String,
    Bytes,
    /// Index into [`Writer::enums`].
    Enum(usize),
    /// Index into [`Writer::messages`].
    Message(usize),
    /// `google.protobuf.NullValue`, left to the general path.
    Decline,
}

/// An enum's value names by number, each already a JSON string.
#[derive(Debug)]
struct EnumNames(Vec<(i32, Box<[u8]>)>);

impl Writer {
    /// Compiles the writer of `descriptor`'s messages.
    pub(crate) fn new(descriptor: &MessageDescriptor) -> Self {
        let mut compiler = Compiler::default();
        compiler.message(descriptor);
        Self { messages: compiler.messages, enums: compiler.enums }
    }

    /// The JSON of the message encoded in `bytes`, or `None` to take the general path.
    pub(crate) fn write(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
        self.message(0, bytes, &mut out, 0)?;
        Some(out)
    }
}

#[derive(Default)]
struct Compiler {
    messages: Vec<Plan>,
    message_index: HashMap<String, usize>,
    enums: Vec<EnumNames>,
    enum_index: HashMap<String, usize>,
}

impl Compiler {
    fn message(&mut self, descriptor: &MessageDescriptor) -> usize {
        if let Some(&index) = self.message_index.get(descriptor.full_name()) {
            return index;
        }
        let index = self.messages.len();
        self.messages.push(Plan::Decline);
        self.message_index.insert(descriptor.full_name().to_owned(), index);
        let plan = match descriptor.full_name() {
            "google.protobuf.Timestamp" => Plan::Timestamp,
            name if name.starts_with("google.protobuf.") => Plan::Decline,
            _ => Plan::Fields(descriptor.fields().map(|field| self.field(&field)).collect()),
        };
        self.messages[index] = plan;
        index
    }

    fn field(&mut self, field: &FieldDescriptor) -> FieldPlan {
        let shape = match field.kind() {
            Kind::Message(entry) if field.is_map() => Shape::Map {
                key: self.scalar(&entry.map_entry_key_field().kind()),
                value: self.scalar(&entry.map_entry_value_field().kind()),
            },
            kind if field.is_list() => Shape::List(self.scalar(&kind)),
            kind => Shape::Single(self.scalar(&kind)),
        };
        let mut key = Vec::new();
        string(&mut key, field.json_name());
        key.push(b':');
        FieldPlan { number: field.number(), key: key.into(), presence: field.supports_presence(), shape }
    }

    fn scalar(&mut self, kind: &Kind) -> Scalar {
        match kind {
            Kind::Double => Scalar::Double,
            Kind::Float => Scalar::Float,
            Kind::Int32 => Scalar::Int32,
            Kind::Sint32 => Scalar::Sint32,
            Kind::Sfixed32 => Scalar::Sfixed32,
            Kind::Int64 => Scalar::Int64,
            Kind::Sint64 => Scalar::Sint64,
            Kind::Sfixed64 => Scalar::Sfixed64,
            Kind::Uint32 => Scalar::Uint32,
            Kind::Fixed32 => Scalar::Fixed32,
            Kind::Uint64 => Scalar::Uint64,
            Kind::Fixed64 => Scalar::Fixed64,
            Kind::Bool => Scalar::Bool,
            Kind::String => Scalar::String,
            Kind::Bytes => Scalar::Bytes,
            Kind::Enum(enumeration) if enumeration.full_name() == "google.protobuf.NullValue" => Scalar::Decline,
            Kind::Enum(enumeration) => Scalar::Enum(self.enumeration(enumeration)),
            Kind::Message(descriptor) => Scalar::Message(self.message(descriptor)),
        }
    }

    fn enumeration(&mut self, enumeration: &EnumDescriptor) -> usize {
        if let Some(&index) = self.enum_index.get(enumeration.full_name()) {
            return index;
        }
        // The first name of a number wins, as in `EnumDescriptor::get_value`.
        let mut names: Vec<(i32, Box<[u8]>)> = Vec::new();
        for value in enumeration.values() {
            if names.iter().all(|(number, _)| *number != value.number()) {
                let mut name = Vec::new();
                string(&mut name, value.name());
                names.push((value.number(), name.into()));
            }
        }
        names.sort_by_key(|(number, _)| *number);
        let index = self.enums.len();
        self.enums.push(EnumNames(names));
        self.enum_index.insert(enumeration.full_name().to_owned(), index);
        index
    }
}

/// One field occurrence on the wire.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// The field occurrences of a message, by field number (occurrences of one number in wire order).
fn wire_fields(mut buf: &[u8]) -> Option<Vec<(u32, Raw<'_>)>> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let (number, wire_type) = decode_key(&mut buf).ok()?;
        let raw = match wire_type {
            WireType::Varint => read_number(&mut buf, Width::Varint)?,
            WireType::SixtyFourBit => read_number(&mut buf, Width::Fixed64)?,
            WireType::ThirtyTwoBit => read_number(&mut buf, Width::Fixed32)?,
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
    // Stable, and linear for the usual case of fields written in order.
    fields.sort_by_key(|(number, _)| *number);
    Some(fields)
}

/// The occurrences of field `number` in `wire`, sorted by number.
fn occurrences<'w, 'a>(wire: &'w [(u32, Raw<'a>)], number: u32) -> &'w [(u32, Raw<'a>)] {
    let start = wire.partition_point(|(n, _)| *n < number);
    let count = wire[start..].iter().take_while(|(n, _)| *n == number).count();
    &wire[start..start + count]
}

impl Writer {
    fn message(&self, index: usize, bytes: &[u8], out: &mut Vec<u8>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let fields = match &self.messages[index] {
            Plan::Fields(fields) => fields,
            Plan::Timestamp => return timestamp(bytes, out),
            Plan::Decline => return None,
        };
        let wire = wire_fields(bytes)?;
        out.push(b'{');
        let mut first = true;
        for field in fields {
            let values = occurrences(&wire, field.number);
            if field.presence && values.is_empty() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&field.key);
            match field.shape {
                Shape::Map { key, value } => self.map(key, value, values, out, depth)?,
                Shape::List(kind) => self.list(kind, values, out, depth)?,
                Shape::Single(kind) => {
                    if values.len() > 1 && matches!(kind, Scalar::Message(_)) {
                        // Two occurrences of a message field merge; the general path knows how.
                        return None;
                    }
                    self.single(kind, values.last().map(|(_, raw)| *raw), out, depth)?;
                }
            }
        }
        out.push(b'}');
        Some(())
    }

    fn list(&self, kind: Scalar, values: &[(u32, Raw<'_>)], out: &mut Vec<u8>, depth: usize) -> Option<()> {
        out.push(b'[');
        let mut first = true;
        let mut element = |raw: Raw<'_>, out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
            self.single(kind, Some(raw), out, depth)
        };
        for (_, raw) in values.iter().copied() {
            match (raw, packed_width(kind)) {
                // A packed run of numbers, enums or booleans.
                (Raw::Bytes(mut bytes), Some(width)) => {
                    while !bytes.is_empty() {
                        element(read_number(&mut bytes, width)?, out)?;
                    }
                }
                (raw, _) => element(raw, out)?,
            }
        }
        out.push(b']');
        Some(())
    }

    fn map(
        &self,
        key_kind: Scalar,
        value_kind: Scalar,
        entries: &[(u32, Raw<'_>)],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Option<()> {
        // Written in the order of their keys: a service's map has none of its own, and the same
        // answer should read the same every time.
        let mut pairs = Vec::with_capacity(entries.len());
        for (_, raw) in entries {
            let Raw::Bytes(bytes) = raw else { return None };
            let wire = wire_fields(bytes)?;
            let last = |number: u32| occurrences(&wire, number).last().map(|(_, raw)| *raw);
            pairs.push((map_key(key_kind, last(1))?, last(2)));
        }
        pairs.sort_unstable_by(|(left, _), (right, _)| left.cmp(right));
        if pairs.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return None;
        }
        out.push(b'{');
        for (index, (key, value)) in pairs.into_iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            string(out, &key);
            out.push(b':');
            self.single(value_kind, value, out, depth)?;
        }
        out.push(b'}');
        Some(())
    }

    /// One value of `kind` (its default when `raw` is `None`).
    fn single(&self, kind: Scalar, raw: Option<Raw<'_>>, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        match kind {
            Scalar::Double => match raw {
                None => float(out, 0.0_f64)?,
                Some(Raw::Fixed64(bits)) => float(out, f64::from_bits(bits))?,
                Some(_) => return None,
            },
            Scalar::Float => match raw {
                None => float(out, 0.0_f32)?,
                Some(Raw::Fixed32(bits)) => float(out, f32::from_bits(bits))?,
                Some(_) => return None,
            },
            Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => {
                serde_json::to_writer(&mut *out, &int32(kind, raw)?).ok()?
            }
            Scalar::Uint32 | Scalar::Fixed32 => serde_json::to_writer(&mut *out, &uint32(kind, raw)?).ok()?,
            Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => quoted_number(out, &int64(kind, raw)?)?,
            Scalar::Uint64 | Scalar::Fixed64 => quoted_number(out, &uint64(kind, raw)?)?,
            Scalar::Bool => out.extend_from_slice(if varint(raw)? != 0 { b"true" } else { b"false" }),
            Scalar::String => match raw {
                None => string(out, ""),
                Some(Raw::Bytes(bytes)) => string(out, std::str::from_utf8(bytes).ok()?),
                Some(_) => return None,
            },
            Scalar::Bytes => match raw {
                None => string(out, ""),
                Some(Raw::Bytes(bytes)) => {
                    out.push(b'"');
                    out.extend_from_slice(STANDARD.encode(bytes).as_bytes());
                    out.push(b'"');
                }
                Some(_) => return None,
            },
            Scalar::Enum(index) => {
                let number = varint(raw)? as i32;
                let names = &self.enums[index].0;
                match names.binary_search_by_key(&number, |(n, _)| *n) {
                    Ok(found) => out.extend_from_slice(&names[found].1),
                    Err(_) => serde_json::to_writer(&mut *out, &number).ok()?,
                }
            }
            Scalar::Message(index) => match raw {
                Some(Raw::Bytes(bytes)) => self.message(index, bytes, out, depth + 1)?,
                None => self.message(index, &[], out, depth + 1)?,
                Some(_) => return None,
            },
            Scalar::Decline => return None,
        }
        Some(())
    }
}

fn timestamp(bytes: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let timestamp = prost_types::Timestamp::decode(bytes).ok()?;
    // The range proto3 JSON allows, 0001-01-01 to 9999-12-31, and whole nanoseconds.
    if !(-62_135_596_800..=253_402_300_799).contains(&timestamp.seconds)
        || !(0..1_000_000_000).contains(&timestamp.nanos)
    {
        return None;
    }
    string(out, &timestamp.to_string());
    Some(())
}

#[derive(Clone, Copy)]
enum Width {
    Varint,
    Fixed64,
    Fixed32,
}

/// One number of `width` off the front of `buf`.
fn read_number<'a>(buf: &mut &'a [u8], width: Width) -> Option<Raw<'a>> {
    Some(match width {
        Width::Varint => Raw::Varint(decode_varint(buf).ok()?),
        Width::Fixed64 => {
            let (value, rest) = buf.split_first_chunk::<8>()?;
            *buf = rest;
            Raw::Fixed64(u64::from_le_bytes(*value))
        }
        Width::Fixed32 => {
            let (value, rest) = buf.split_first_chunk::<4>()?;
            *buf = rest;
            Raw::Fixed32(u32::from_le_bytes(*value))
        }
    })
}

/// How a packable kind is packed; `None` for strings, bytes and messages.
fn packed_width(kind: Scalar) -> Option<Width> {
    match kind {
        Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64 => Some(Width::Fixed64),
        Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32 => Some(Width::Fixed32),
        Scalar::Int32
        | Scalar::Int64
        | Scalar::Uint32
        | Scalar::Uint64
        | Scalar::Sint32
        | Scalar::Sint64
        | Scalar::Bool
        | Scalar::Enum(_) => Some(Width::Varint),
        Scalar::String | Scalar::Bytes | Scalar::Message(_) | Scalar::Decline => None,
    }
}

/// A map key as proto3 JSON writes it: always a string.
fn map_key(kind: Scalar, raw: Option<Raw<'_>>) -> Option<String> {
    Some(match (kind, raw) {
        (Scalar::String, None) => String::new(),
        (Scalar::String, Some(Raw::Bytes(bytes))) => std::str::from_utf8(bytes).ok()?.to_owned(),
        (Scalar::Bool, raw) => (varint(raw)? != 0).to_string(),
        (Scalar::Int32 | Scalar::Sfixed32 | Scalar::Sint32, raw) => int32(kind, raw)?.to_string(),
        (Scalar::Int64 | Scalar::Sfixed64 | Scalar::Sint64, raw) => int64(kind, raw)?.to_string(),
        (Scalar::Uint32 | Scalar::Fixed32, raw) => uint32(kind, raw)?.to_string(),
        (Scalar::Uint64 | Scalar::Fixed64, raw) => uint64(kind, raw)?.to_string(),
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

fn int32(kind: Scalar, raw: Option<Raw<'_>>) -> Option<i32> {
    match (kind, raw) {
        (_, None) => Some(0),
        (Scalar::Int32, Some(Raw::Varint(value))) => Some(value as i32),
        (Scalar::Sint32, Some(Raw::Varint(value))) => {
            let value = value as u32;
            Some(((value >> 1) as i32) ^ -((value & 1) as i32))
        }
        (Scalar::Sfixed32, Some(Raw::Fixed32(value))) => Some(value as i32),
        _ => None,
    }
}

fn int64(kind: Scalar, raw: Option<Raw<'_>>) -> Option<i64> {
    match (kind, raw) {
        (_, None) => Some(0),
        (Scalar::Int64, Some(Raw::Varint(value))) => Some(value as i64),
        (Scalar::Sint64, Some(Raw::Varint(value))) => Some(((value >> 1) as i64) ^ -((value & 1) as i64)),
        (Scalar::Sfixed64, Some(Raw::Fixed64(value))) => Some(value as i64),
        _ => None,
    }
}

fn uint32(kind: Scalar, raw: Option<Raw<'_>>) -> Option<u32> {
    match (kind, raw) {
        (_, None) => Some(0),
        (Scalar::Uint32, Some(Raw::Varint(value))) => Some(value as u32),
        (Scalar::Fixed32, Some(Raw::Fixed32(value))) => Some(value),
        _ => None,
    }
}

fn uint64(kind: Scalar, raw: Option<Raw<'_>>) -> Option<u64> {
    match (kind, raw) {
        (_, None) => Some(0),
        (Scalar::Uint64, Some(Raw::Varint(value))) | (Scalar::Fixed64, Some(Raw::Fixed64(value))) => Some(value),
        _ => None,
    }
}

/// A 64-bit integer as proto3 JSON writes it: in a string.
fn quoted_number(out: &mut Vec<u8>, number: &impl serde::Serialize) -> Option<()> {
    out.push(b'"');
    serde_json::to_writer(&mut *out, number).ok()?;
    out.push(b'"');
    Some(())
}

/// A `double` or a `float` as proto3 JSON writes it: a number, or `"NaN"`, `"Infinity"` or
/// `"-Infinity"` in a string.
fn float<T: serde::Serialize + Into<f64> + Copy>(out: &mut Vec<u8>, value: T) -> Option<()> {
    let wide: f64 = value.into();
    match (wide.is_finite(), wide.is_nan(), wide.is_sign_negative()) {
        (true, _, _) => serde_json::to_writer(&mut *out, &value).ok()?,
        (false, true, _) => string(out, "NaN"),
        (false, false, true) => string(out, "-Infinity"),
        (false, false, false) => string(out, "Infinity"),
    }
    Some(())
}

/// `text` as a JSON string; most text needs no escapes and is copied as it is.
fn string(out: &mut Vec<u8>, text: &str) {
    if !needs_escape(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, text).expect("writing to a Vec cannot fail");
    }
}

/// Whether `bytes` holds a byte JSON escapes: a quote, a backslash or a control character.
/// Eight bytes at a time: a word has a byte below `n` (`n` ≤ 128) exactly when
/// `(word - n×0x01…01) & !word & 0x80…80` is not zero, and a byte equal to `b` when `word ^ b×0x01…01`
/// has a byte below 1.
fn needs_escape(bytes: &[u8]) -> bool {
    const fn repeat(byte: u8) -> u64 {
        u64::from_ne_bytes([byte; 8])
    }
    let below = |word: u64, n: u8| word.wrapping_sub(repeat(n)) & !word & repeat(0x80) != 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunks of eight"));
        if below(word, 0x20) || below(word ^ repeat(b'"'), 1) || below(word ^ repeat(b'\\'), 1) {
            return true;
        }
    }
    words.remainder().iter().any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

#[cfg(test)]
mod tests;
