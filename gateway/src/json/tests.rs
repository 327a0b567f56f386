//! The writer against `prost-reflect`'s serializer, on every message of the platform's protos and
//! of `tests/fixtures/catalog.proto` (every kind of field), filled with awkward values.

use std::collections::HashMap;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, SerializeOptions, Value};

use super::*;

fn pools() -> Vec<DescriptorPool> {
    let platform = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes");
    let manifest = env!("CARGO_MANIFEST_DIR");
    let mut compiler =
        protox::Compiler::new([format!("{manifest}/tests/fixtures"), format!("{manifest}/../proto/proto")])
            .expect("include paths");
    compiler.include_imports(true).open_file("catalog.proto").expect("catalog.proto compiles");
    let catalog = DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).expect("decodes");
    vec![platform, catalog]
}

fn from_wire(descriptor: &MessageDescriptor, bytes: &[u8]) -> Option<Vec<u8>> {
    Writer::new(descriptor).write(bytes)
}

/// What the gateway wrote before: the decoded dynamic message, serialized.
fn general(message: &DynamicMessage) -> serde_json::Value {
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut json = Vec::new();
    message.serialize_with_options(&mut serde_json::Serializer::new(&mut json), &options).expect("serializes");
    serde_json::from_slice(&json).expect("JSON")
}

fn scalar(kind: &Kind, variant: usize) -> Option<Value> {
    Some(match kind {
        Kind::Double => Value::F64([1.5, -2.25e300, f64::NAN, f64::INFINITY, 0.1][variant % 5]),
        Kind::Float => Value::F32([0.25, -1e-20, f32::NEG_INFINITY, 3.4e38][variant % 4]),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32([-5, i32::MAX, i32::MIN][variant % 3]),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64([i64::MIN, 42, -1][variant % 3]),
        Kind::Uint32 | Kind::Fixed32 => Value::U32([7, u32::MAX][variant % 2]),
        Kind::Uint64 | Kind::Fixed64 => Value::U64([u64::MAX, 3][variant % 2]),
        Kind::Bool => Value::Bool(variant.is_multiple_of(2)),
        Kind::String => Value::String(["é \"quoted\"\n\t\u{1F600} </script>", "", "plain"][variant % 3].into()),
        Kind::Bytes => Value::Bytes(vec![0u8, 255, 1, 2][..=variant % 4].to_vec().into()),
        Kind::Enum(enumeration) => {
            let values: Vec<i32> = enumeration.values().map(|value| value.number()).collect();
            Value::EnumNumber(values[variant % values.len()])
        }
        Kind::Message(_) => return None,
    })
}

fn map_key(kind: &Kind, index: usize) -> MapKey {
    match kind {
        Kind::String => MapKey::String(format!("key {index} \"é\"")),
        Kind::Bool => MapKey::Bool(index == 0),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(-(index as i32) - 1),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(i64::MIN + index as i64),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(index as u32),
        _ => MapKey::U64(u64::MAX - index as u64),
    }
}

fn value(kind: &Kind, variant: usize, depth: usize) -> Option<Value> {
    match kind {
        Kind::Message(descriptor) if descriptor.full_name() == "google.protobuf.Timestamp" => {
            let timestamp = prost_types::Timestamp { seconds: 1_764_000_000 + variant as i64, nanos: 123_000_000 };
            Some(Value::Message(DynamicMessage::decode(descriptor.clone(), timestamp.encode_to_vec().as_slice()).ok()?))
        }
        Kind::Message(descriptor) if descriptor.full_name().starts_with("google.protobuf.") => None,
        Kind::Message(descriptor) => (depth < 3).then(|| Value::Message(sample(descriptor, variant, depth + 1))),
        other => scalar(other, variant),
    }
}

/// `descriptor` with its fields set (one member per oneof), nested messages three deep.
fn sample(descriptor: &MessageDescriptor, variant: usize, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    let mut oneofs_set = Vec::new();
    for field in descriptor.fields() {
        if let Some(oneof) = field.containing_oneof() {
            if oneofs_set.contains(&oneof.name().to_owned()) {
                continue;
            }
            oneofs_set.push(oneof.name().to_owned());
        }
        let set = if field.is_map() {
            let Kind::Message(entry) = field.kind() else { continue };
            let (key_kind, value_kind) = (entry.map_entry_key_field().kind(), entry.map_entry_value_field().kind());
            let entries: Option<HashMap<MapKey, Value>> = (0..2)
                .map(|index| Some((map_key(&key_kind, index), value(&value_kind, variant + index, depth)?)))
                .collect();
            entries.map(Value::Map)
        } else if field.is_list() {
            let items: Option<Vec<Value>> = (0..3).map(|index| value(&field.kind(), variant + index, depth)).collect();
            items.map(Value::List)
        } else {
            value(&field.kind(), variant, depth)
        };
        if let Some(set) = set {
            message.set_field(&field, set);
        }
    }
    message
}

#[test]
fn every_message_is_written_as_the_dynamic_serializer_writes_it() {
    let mut written = 0;
    for pool in pools() {
        for descriptor in pool.all_messages() {
            if descriptor.full_name().starts_with("google.") || descriptor.is_map_entry() {
                continue;
            }
            for variant in 0..5 {
                let message = if variant == 4 {
                    DynamicMessage::new(descriptor.clone())
                } else {
                    sample(&descriptor, variant, 0)
                };
                let bytes = message.encode_to_vec();
                let Some(json) = from_wire(&descriptor, &bytes) else { continue };
                let fast: serde_json::Value = serde_json::from_slice(&json).unwrap_or_else(|error| {
                    panic!("{} is not JSON ({error}): {}", descriptor.full_name(), String::from_utf8_lossy(&json))
                });
                assert_eq!(fast, general(&message), "{} variant {variant}", descriptor.full_name());
                written += 1;
            }
        }
    }
    assert!(written > 200, "only {written} messages went through the writer");
}

#[test]
fn the_platforms_answers_take_the_fast_path() {
    let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).unwrap();
    for name in [
        "aigronova.health.v1.ListModelsResponse",
        "aigronova.health.v1.Patient",
        "aigronova.health.v1.Assessment",
        "aigronova.fin.v1.CreditScore",
        "aigronova.fin.v1.Consent",
    ] {
        let descriptor = pool.get_message_by_name(name).unwrap();
        let message = sample(&descriptor, 0, 0);
        assert!(from_wire(&descriptor, &message.encode_to_vec()).is_some(), "{name}");
    }
}

#[test]
fn what_it_cannot_write_it_declines() {
    let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).unwrap();
    let patient = pool.get_message_by_name("aigronova.health.v1.Patient").unwrap();
    // Truncated bytes, a group, a string that is not UTF-8.
    assert!(from_wire(&patient, &[0x0a, 0x05, b'a']).is_none());
    assert!(from_wire(&patient, &[0x0b]).is_none());
    assert!(from_wire(&patient, &[0x12, 0x02, 0xff, 0xfe]).is_none());
    // A field of the wrong wire type.
    assert!(from_wire(&patient, &[0x0d, 0, 0, 0, 0]).is_none());
}

#[test]
fn escapes_are_found_wherever_they_are() {
    let plain = "mean radius, ünïcode and 0123456789";
    assert!(!needs_escape(plain.as_bytes()));
    for special in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
        for position in 0..plain.len() {
            if !plain.is_char_boundary(position) {
                continue;
            }
            let text = format!("{}{special}{}", &plain[..position], &plain[position..]);
            assert!(needs_escape(text.as_bytes()), "{text:?}");
        }
    }
    // Bytes just outside the escaped ones.
    assert!(!needs_escape(b" !#[]^~\x7f\x80\xff 12345678"));
}

#[test]
fn a_map_is_written_in_the_order_of_its_keys_whatever_the_order_on_the_wire() {
    let pool = DescriptorPool::decode(aigronova_proto::FILE_DESCRIPTOR_SET).unwrap();
    let descriptor = pool.get_message_by_name("aigronova.health.v1.AssessRiskRequest").unwrap();
    let entry = |name: &str, value: f64| {
        // Field 3 (`features`), a map entry of key 1 and value 2.
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, &name.to_owned(), &mut entry);
        prost::encoding::double::encode(2, &value, &mut entry);
        let mut field = Vec::new();
        prost::encoding::bytes::encode(3, &entry, &mut field);
        field
    };
    let forwards = [entry("age", 1.0), entry("bmi", 2.0), entry("sex", 3.0)].concat();
    let backwards = [entry("sex", 3.0), entry("bmi", 2.0), entry("age", 1.0)].concat();
    let (forwards, backwards) =
        (from_wire(&descriptor, &forwards).unwrap(), from_wire(&descriptor, &backwards).unwrap());
    assert_eq!(forwards, backwards);
    let text = String::from_utf8(forwards).unwrap();
    assert!(text.contains(r#""features":{"age":1.0,"bmi":2.0,"sex":3.0}"#), "{text}");
    // A key given twice is for the general writer to settle.
    assert!(from_wire(&descriptor, &[entry("age", 1.0), entry("age", 2.0)].concat()).is_none());
}
