//! The Open Inference Protocol's REST form (version 2) over the services' `GRPCInferenceService`:
//! `POST /v2/models/{name}[/versions/{version}]/infer`, `GET /v2/models/{name}[/versions/{version}]`
//! and `…/ready`, in the protocol's JSON (a tensor's elements in `data`, flat or nested as its
//! shape, shapes as numbers) rather than the proto3 JSON mapping of its messages. Every service
//! with models serves the protocol; a call goes to the one that serves the model its path names,
//! found by asking each upstream's `ModelReady` once (through its circuit breaker, within the
//! caller's deadline) and remembered for [`KNOWN_FOR`]; a model no service serves is remembered as
//! such for [`UNKNOWN_FOR`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError, atomic::AtomicBool},
    time::{Duration, Instant},
};

use aigronova_proto::inference::{
    self as proto, InferParameter, InferTensorContents,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header, uri::PathAndQuery},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::{Code, Status, metadata::MetadataMap};

use crate::{
    problem::Problem,
    resilience::{CallPolicy, Resilience},
    routes::Matched,
    upstream::Upstreams,
};

/// How long the gateway remembers which service serves a model.
const KNOWN_FOR: Duration = Duration::from_secs(60);

/// How long the gateway remembers that no service serves a model (every one said so).
const UNKNOWN_FOR: Duration = Duration::from_secs(5);

/// The most models remembered as served by none, so that calls naming ever new models do not
/// grow the memory.
const MAX_UNKNOWN: usize = 1024;

/// How long each upstream has to say whether it serves a model, at most.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The service of each model asked about, and when that was learnt; the models no service serves.
#[derive(Debug, Default)]
pub(crate) struct ModelOwners {
    known: Mutex<HashMap<String, (String, Instant)>>,
    unknown: Mutex<HashMap<String, Instant>>,
}

impl ModelOwners {
    /// The upstream that serves `model`: remembered, or found by asking every upstream with the
    /// caller's `metadata`, each through its circuit breaker and before the caller's deadline
    /// (`client_deadline`, and [`ASK_TIMEOUT`] at most). 404 when none serves it (and then without
    /// asking again for [`UNKNOWN_FOR`]); 503 when none does but some did not answer.
    pub(crate) async fn owner(
        &self,
        upstreams: &Upstreams,
        resilience: &Resilience,
        model: &str,
        metadata: &MetadataMap,
        client_deadline: Option<tokio::time::Instant>,
    ) -> Result<String, Problem> {
        if let Some((owner, learnt)) = self.known.lock().unwrap_or_else(PoisonError::into_inner).get(model)
            && learnt.elapsed() < KNOWN_FOR
        {
            return Ok(owner.clone());
        }
        if self
            .unknown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .is_some_and(|learnt| learnt.elapsed() < UNKNOWN_FOR)
        {
            return Err(not_served(model));
        }
        let question =
            Bytes::from(proto::ModelReadyRequest { name: model.to_owned(), version: String::new() }.encode_to_vec());
        let path = PathAndQuery::from_static("/inference.GRPCInferenceService/ModelReady");
        // A service that does not answer within ASK_TIMEOUT counts against its breaker, as a call
        // past its timeout does; the caller's own deadline, when sooner, does not.
        let policy = CallPolicy { idempotent: true, client_deadline, own_timeout: Some(ASK_TIMEOUT) };
        let mut asking: futures_util::stream::FuturesUnordered<_> = upstreams
            .owners()
            .map(|owner| {
                let (path, question, metadata) = (path.clone(), question.clone(), metadata.clone());
                async move {
                    let sent = AtomicBool::new(false);
                    let answer = resilience
                        .call(owner, policy, |timeout| {
                            let call = upstreams.unary(
                                owner,
                                path.clone(),
                                question.clone(),
                                metadata.clone(),
                                timeout,
                                &sent,
                            );
                            async move {
                                match call.await {
                                    Ok(answer) => proto::ModelReadyResponse::decode(answer)
                                        .map(|ready| ready.ready)
                                        .map_err(|_| Status::internal("ModelReady answered what is not its response")),
                                    // A service without models does not serve the protocol.
                                    Err(status) if status.code() == Code::Unimplemented => Ok(false),
                                    Err(status) => Err(status),
                                }
                            }
                        })
                        .await
                        .ok();
                    (owner, answer)
                }
            })
            .collect();
        // The first service that serves the model is its service: the others are not waited for.
        let mut unanswered = false;
        while let Some((owner, answer)) = futures_util::StreamExt::next(&mut asking).await {
            match answer {
                Some(true) => {
                    let learnt = (owner.clone(), Instant::now());
                    self.known.lock().unwrap_or_else(PoisonError::into_inner).insert(model.to_owned(), learnt);
                    return Ok(owner.clone());
                }
                Some(false) => {}
                None => unanswered = true,
            }
        }
        // The caller's deadline passed while the services were asked: a 504, as for any call.
        if unanswered && client_deadline.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the deadline passed before the service of model {model:?} was found"),
            ));
        }
        if unanswered {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no service that answered serves model {model:?}, and some did not answer: try again later"),
            )
            .with_retry_after(1));
        }
        let mut unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
        if unknown.len() >= MAX_UNKNOWN {
            unknown.retain(|_, learnt| learnt.elapsed() < UNKNOWN_FOR);
            if unknown.len() >= MAX_UNKNOWN {
                unknown.clear();
            }
        }
        unknown.insert(model.to_owned(), Instant::now());
        Err(not_served(model))
    }
}

fn not_served(model: &str) -> Problem {
    Problem::not_found(format!("no service serves model {model:?}"))
}

/// The variable `name` bound in `matched`'s path, empty when it binds none.
fn variable<'a>(matched: &'a Matched<'_>, name: &str) -> &'a str {
    matched.variables.iter().find(|(field, _)| field == name).map_or("", |(_, value)| value.as_str())
}

/// The model the route's path names.
pub(crate) fn model_of<'a>(matched: &'a Matched<'_>) -> &'a str {
    matched.route.by_model.as_deref().map_or("", |field| variable(matched, field))
}

/// An Open Inference request ready to send.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) encoded: Bytes,
    /// The rows it scores: one unit each of the monthly inference quota.
    pub(crate) rows: u64,
    /// The outputs to answer as bytes after the JSON (the binary data extension).
    pub(crate) binary: BinaryOutputs,
}

/// Which outputs of an inference are answered in binary: those whose `binary_data` says so, and
/// the others as the request's `binary_data_output` says.
#[derive(Debug, Default)]
pub(crate) struct BinaryOutputs {
    all: bool,
    named: Vec<(String, bool)>,
}

impl BinaryOutputs {
    fn wants(&self, output: &str) -> bool {
        self.named.iter().find(|(name, _)| name == output).map_or(self.all, |(_, binary)| *binary)
    }

    fn any(&self) -> bool {
        self.all || self.named.iter().any(|(_, binary)| *binary)
    }
}

/// The encoded request of an Open Inference route, from the path (and, for an inference, the
/// body: JSON, and the tensors' bytes after it when `Inference-Header-Content-Length` says where
/// the JSON ends). A query parameter is refused, as these routes take none, and so is a body on a
/// GET.
pub(crate) fn request(
    matched: &Matched<'_>,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Prepared, Problem> {
    let route = matched.route;
    if let Some((name, _)) =
        query.map(crate::transcode::form_pairs).transpose()?.and_then(|pairs| pairs.into_iter().next())
    {
        return Err(Problem::invalid_field(name.clone(), format!("{name} is not a parameter of this route")));
    }
    if route.body.is_empty() && !body.is_empty() {
        return Err(Problem::bad_request(format!("{} {} takes no request body", route.http_method, route.template)));
    }
    let (encoded, rows, binary) = match route.method.name() {
        "ModelInfer" => {
            if body.len() > MAX_INFER_BODY_BYTES {
                return Err(crate::decompress::too_large(MAX_INFER_BODY_BYTES));
            }
            let (json, tensors) = split_binary(headers, body)?;
            let (request, binary) = infer_request(matched, json, tensors)?;
            let rows = rows(&request)?;
            (request.encode_to_vec(), rows, binary)
        }
        "ModelMetadata" => (
            proto::ModelMetadataRequest {
                name: variable(matched, "name").to_owned(),
                version: variable(matched, "version").to_owned(),
            }
            .encode_to_vec(),
            0,
            BinaryOutputs::default(),
        ),
        _ => (
            proto::ModelReadyRequest {
                name: variable(matched, "name").to_owned(),
                version: variable(matched, "version").to_owned(),
            }
            .encode_to_vec(),
            0,
            BinaryOutputs::default(),
        ),
    };
    Ok(Prepared { encoded: encoded.into(), rows, binary })
}

/// The JSON that begins an inference body and the tensors' bytes after it: all JSON unless
/// `Inference-Header-Content-Length` gives the JSON's length.
fn split_binary<'b>(headers: &HeaderMap, body: &'b [u8]) -> Result<(&'b [u8], &'b [u8]), Problem> {
    let mut given = headers.get_all(BINARY_HEADER).iter();
    let Some(value) = given.next() else { return Ok((body, &[])) };
    let field = "Inference-Header-Content-Length";
    if given.next().is_some() {
        return Err(Problem::invalid_field(field, format!("{field} is given more than once")));
    }
    let length = value
        .to_str()
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|length| *length <= body.len())
        .ok_or_else(|| {
            Problem::invalid_field(
                field,
                format!(
                    "{field} must be the length in bytes of the JSON that begins the body, at most the body's {}",
                    body.len()
                ),
            )
        })?;
    Ok(body.split_at(length))
}

/// The rows an inference scores: its first input's first dimension (`[rows, features]`), one for
/// a single row (`[features]`); more than a call takes is refused here, before the quota is asked.
fn rows(request: &proto::ModelInferRequest) -> Result<u64, Problem> {
    let shape = request.inputs.first().map_or(&[][..], |input| input.shape.as_slice());
    let rows = if shape.len() > 1 { shape[0] } else { 1 };
    let most = aigronova_platform::open_inference::MAX_ROWS as u64;
    match u64::try_from(rows) {
        Ok(rows) if rows > most => Err(Problem::invalid_field(
            "inputs[0].shape",
            format!(
                "inputs[0].shape {shape:?} has {rows} rows, and a call takes at most {most}: send them in several calls"
            ),
        )),
        // A shape the service refuses (no rows, a negative dimension) counts as one row.
        rows => Ok(rows.unwrap_or(1).max(1)),
    }
}

/// The largest inference body read, whatever the plan allows: 1024 rows of a few hundred
/// features.
const MAX_INFER_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The most elements (values, parameters) an inference body may hold, counted by its commas
/// before it is read: what it takes in memory once read stays a small multiple of its size.
const MAX_INFER_ELEMENTS: usize = 256 * 1024;

/// The header of the protocol's binary data extension: the length of the JSON that begins the
/// body, the tensors' bytes following it.
pub(crate) const BINARY_HEADER: &str = "inference-header-content-length";

/// The body of an inference request, as the protocol's REST form writes it; null is the same as
/// a member left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferBody {
    /// The path's model, which a client may repeat here.
    #[serde(default)]
    model_name: Option<String>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Parameter>>,
    inputs: Vec<InputBody>,
    #[serde(default)]
    outputs: Option<Vec<OutputBody>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputBody {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Parameter>>,
    /// Absent when the tensor's bytes follow the JSON (`binary_data_size`).
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputBody {
    name: String,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Parameter>>,
}

/// A parameter's value: a boolean, a whole number, another number or a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Parameter {
    Bool(bool),
    Int(i64),
    Unsigned(u64),
    Double(f64),
    Text(String),
}

fn parameters(parameters: Option<BTreeMap<String, Parameter>>) -> HashMap<String, InferParameter> {
    parameters
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            let choice = match value {
                Parameter::Bool(value) => ParameterChoice::BoolParam(value),
                Parameter::Int(value) => ParameterChoice::Int64Param(value),
                Parameter::Unsigned(value) => ParameterChoice::Uint64Param(value),
                Parameter::Double(value) => ParameterChoice::DoubleParam(value),
                Parameter::Text(value) => ParameterChoice::StringParam(value),
            };
            (name, InferParameter { parameter_choice: Some(choice) })
        })
        .collect()
}

/// `body`, a JSON object, with objects where the protocol has objects (not arrays in their
/// place) and no name given twice.
fn infer_body(body: &[u8]) -> Result<InferBody, Problem> {
    if body.iter().filter(|byte| **byte == b',').count() >= MAX_INFER_ELEMENTS {
        return Err(Problem::bad_request(format!(
            "the request body holds more than {MAX_INFER_ELEMENTS} values: send the rows in several calls"
        )));
    }
    if let Some(crate::transcode::Finding::Repeated(path)) = crate::transcode::repeated_name(body, None) {
        return Err(Problem::invalid_field(&path, format!("{path} is given more than once in the request body")));
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        let message = crate::problem::with_short_quotes(&crate::problem::without_values(&error.to_string()));
        Problem::bad_request(format!("the request body is not JSON: {message}"))
    })?;
    if !value.is_object() {
        return Err(Problem::bad_request("the request body must be a JSON object"));
    }
    for list in ["inputs", "outputs"] {
        for (n, item) in value[list].as_array().into_iter().flatten().enumerate() {
            if !item.is_object() {
                let path = format!("{list}[{n}]");
                return Err(Problem::invalid_field(&path, format!("{path} must be a JSON object")));
            }
        }
    }
    serde_path_to_error::deserialize(value).map_err(|error| crate::admin::body_refused(&error))
}

/// The path's value of `field`, or the body's when the path has none; a body that names another
/// than the path is refused.
fn same_as_path(matched: &Matched<'_>, field: &str, given: Option<String>) -> Result<String, Problem> {
    let path = variable(matched, field);
    match given {
        Some(given) if !path.is_empty() && !given.is_empty() && given != path => Err(Problem::invalid_field(
            field,
            format!("{field} is {given:?} in the body but {path:?} in the path: leave it out, or give the path's"),
        )),
        Some(given) if path.is_empty() => Ok(given),
        _ => Ok(path.to_owned()),
    }
}

fn infer_request(
    matched: &Matched<'_>,
    body: &[u8],
    mut tensors: &[u8],
) -> Result<(proto::ModelInferRequest, BinaryOutputs), Problem> {
    let body = infer_body(body)?;
    let id = body.id.unwrap_or_default();
    if !id.is_empty() && !aigronova_platform::text::is_reusable_id(&id) {
        return Err(Problem::invalid_field(
            "id",
            "id must be at most 128 letters, digits and - _ . : / + =, with no personal data or credentials in it: \
             it is kept in the audit log",
        ));
    }
    let mut inputs = Vec::with_capacity(body.inputs.len());
    let mut budget = MAX_INFER_ELEMENTS;
    for (n, mut input) in body.inputs.into_iter().enumerate() {
        let field = format!("inputs[{n}]");
        let size = input.parameters.as_mut().and_then(|parameters| parameters.remove("binary_data_size"));
        let contents = match (size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(Problem::invalid_field(
                    format!("{field}.data"),
                    format!("{field} gives both data and binary_data_size: send its elements in one of them"),
                ));
            }
            (Some(size), None) => {
                let size = match size {
                    Parameter::Int(size) => usize::try_from(size).ok(),
                    Parameter::Unsigned(size) => usize::try_from(size).ok(),
                    _ => None,
                }
                .filter(|size| *size <= tensors.len())
                .ok_or_else(|| {
                    let name = format!("{field}.parameters.binary_data_size");
                    Problem::invalid_field(
                        &name,
                        format!(
                            "{name} must be a whole number of bytes, at most the {} left after the JSON",
                            tensors.len()
                        ),
                    )
                })?;
                let (bytes, rest) = tensors.split_at(size);
                tensors = rest;
                binary_contents(&input.datatype, bytes, &field, &mut budget)?
            }
            (None, Some(data)) => contents(&input.datatype, &elements(data, &input.shape, &field)?, &field)?,
            (None, None) => {
                return Err(Problem::invalid_field(
                    format!("{field}.data"),
                    format!("{field}.data is missing: give the tensor's elements, or its bytes after the JSON"),
                ));
            }
        };
        inputs.push(InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            parameters: parameters(input.parameters),
            contents: Some(contents),
        });
    }
    if !tensors.is_empty() {
        return Err(Problem::bad_request(format!(
            "the body holds {} bytes after its JSON that no input's binary_data_size accounts for",
            tensors.len()
        )));
    }
    let mut request_parameters = body.parameters.unwrap_or_default();
    let all = flag(&mut request_parameters, "binary_data_output", "parameters")?.unwrap_or(false);
    let mut binary = BinaryOutputs { all, named: Vec::new() };
    let mut outputs = Vec::new();
    for (n, output) in body.outputs.unwrap_or_default().into_iter().enumerate() {
        let mut output_parameters = output.parameters.unwrap_or_default();
        if let Some(wanted) = flag(&mut output_parameters, "binary_data", &format!("outputs[{n}].parameters"))? {
            binary.named.push((output.name.clone(), wanted));
        }
        outputs.push(InferRequestedOutputTensor { name: output.name, parameters: parameters(Some(output_parameters)) });
    }
    let request = proto::ModelInferRequest {
        model_name: same_as_path(matched, "model_name", body.model_name)?,
        model_version: same_as_path(matched, "model_version", body.model_version)?,
        id,
        parameters: parameters(Some(request_parameters)),
        inputs,
        outputs,
        raw_input_contents: Vec::new(),
    };
    Ok((request, binary))
}

/// Takes the boolean parameter `name` out of `parameters` (at `at`), if given.
fn flag(parameters: &mut BTreeMap<String, Parameter>, name: &str, at: &str) -> Result<Option<bool>, Problem> {
    match parameters.remove(name) {
        None => Ok(None),
        Some(Parameter::Bool(value)) => Ok(Some(value)),
        Some(_) => {
            let field = format!("{at}.{name}");
            Err(Problem::invalid_field(&field, format!("{field} must be true or false")))
        }
    }
}

/// The bytes of a tensor sent after the JSON, in the contents field of `datatype`: little endian,
/// row major, each element in its type's size (a `BYTES` element its 4-byte length, then itself).
/// Its elements are taken from `budget`, the values the request may still hold.
fn binary_contents(
    datatype: &str,
    bytes: &[u8],
    field: &str,
    budget: &mut usize,
) -> Result<InferTensorContents, Problem> {
    let size = match datatype {
        "BYTES" => 0,
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        other => return Err(unknown_datatype(field, other)),
    };
    let not_whole = || {
        let what = if size == 0 {
            "each a 4-byte length, then that many bytes".to_owned()
        } else {
            format!("{size} bytes each")
        };
        Problem::invalid_field(
            format!("{field}.parameters.binary_data_size"),
            format!("{field}'s {} bytes are not whole {datatype} elements (little endian, {what})", bytes.len()),
        )
    };
    let mut take = |count: usize| {
        *budget = budget.checked_sub(count).ok_or_else(|| {
            Problem::bad_request(format!(
                "the request holds more than {MAX_INFER_ELEMENTS} values: send the rows in several calls"
            ))
        })?;
        Ok::<_, Problem>(())
    };
    let mut contents = InferTensorContents::default();
    if size == 0 {
        let mut rest = bytes;
        while let Some((length, after)) = rest.split_first_chunk::<4>() {
            let length = usize::try_from(u32::from_le_bytes(*length)).map_err(|_| not_whole())?;
            let (element, after) = after.split_at_checked(length).ok_or_else(not_whole)?;
            take(1)?;
            contents.bytes_contents.push(element.to_vec());
            rest = after;
        }
        return if rest.is_empty() { Ok(contents) } else { Err(not_whole()) };
    }
    if !bytes.len().is_multiple_of(size) {
        return Err(not_whole());
    }
    take(bytes.len() / size)?;
    fn each<const N: usize, T>(bytes: &[u8], read: impl Fn([u8; N]) -> T) -> Vec<T> {
        bytes.chunks_exact(N).map(|chunk| read(chunk.try_into().expect("N bytes"))).collect()
    }
    match datatype {
        "BOOL" => {
            if bytes.iter().any(|byte| *byte > 1) {
                return Err(Problem::invalid_field(
                    format!("{field}.parameters.binary_data_size"),
                    format!("{field}'s BOOL elements must each be one byte, 0 or 1"),
                ));
            }
            contents.bool_contents = bytes.iter().map(|byte| *byte == 1).collect();
        }
        "INT8" => contents.int_contents = bytes.iter().map(|byte| i32::from(*byte as i8)).collect(),
        "UINT8" => contents.uint_contents = bytes.iter().map(|byte| u32::from(*byte)).collect(),
        "INT16" => contents.int_contents = each(bytes, |b| i32::from(i16::from_le_bytes(b))),
        "UINT16" => contents.uint_contents = each(bytes, |b| u32::from(u16::from_le_bytes(b))),
        "INT32" => contents.int_contents = each(bytes, i32::from_le_bytes),
        "UINT32" => contents.uint_contents = each(bytes, u32::from_le_bytes),
        "INT64" => contents.int64_contents = each(bytes, i64::from_le_bytes),
        "UINT64" => contents.uint64_contents = each(bytes, u64::from_le_bytes),
        "FP32" => contents.fp32_contents = each(bytes, f32::from_le_bytes),
        _ => contents.fp64_contents = each(bytes, f64::from_le_bytes),
    }
    Ok(contents)
}

/// The elements of `data`: flat, or nested exactly as `shape` (each level an array of its
/// dimension's length, elements at the last), in row-major order.
fn elements<'a>(data: &'a Value, shape: &[i64], field: &str) -> Result<Vec<&'a Value>, Problem> {
    fn nested<'a>(data: &'a Value, shape: &[i64], into: &mut Vec<&'a Value>) -> bool {
        match (data, shape) {
            (Value::Array(items), [length, rest @ ..]) if usize::try_from(*length).is_ok_and(|n| n == items.len()) => {
                items.iter().all(|item| nested(item, rest, into))
            }
            (Value::Array(_), _) | (_, [_, ..]) => false,
            (element, []) => {
                into.push(element);
                true
            }
        }
    }
    let Value::Array(items) = data else {
        return Err(Problem::invalid_field(format!("{field}.data"), format!("{field}.data must be an array")));
    };
    if !items.iter().any(Value::is_array) {
        return Ok(items.iter().collect());
    }
    let mut elements = Vec::new();
    if nested(data, shape, &mut elements) {
        return Ok(elements);
    }
    Err(Problem::invalid_field(
        format!("{field}.data"),
        format!(
            "{field}.data must be flat, or nested exactly as its shape {shape:?}: at each level an array of that \
             dimension's length"
        ),
    ))
}

/// `elements` in the contents field of `datatype`; a 400 naming `field`'s element that its type
/// cannot hold.
fn contents(datatype: &str, elements: &[&Value], field: &str) -> Result<InferTensorContents, Problem> {
    let mut contents = InferTensorContents::default();
    let bad = |n: usize, what: &str| {
        Problem::invalid_field(
            format!("{field}.data[{n}]"),
            format!("{field}.data[{n}] must be {what}, as {datatype} says"),
        )
    };
    let integer = |n: usize, value: &Value, least: i128, most: i128| -> Result<i128, Problem> {
        let number = value.as_i64().map(i128::from).or_else(|| value.as_u64().map(i128::from));
        number
            .filter(|number| (least..=most).contains(number))
            .ok_or_else(|| bad(n, &format!("an integer from {least} to {most}")))
    };
    for (n, value) in elements.iter().enumerate() {
        match datatype {
            "FP32" | "FP64" => {
                let number = value.as_f64().ok_or_else(|| bad(n, "a number"))?;
                if datatype == "FP32" {
                    if number.abs() > f64::from(f32::MAX) {
                        return Err(bad(n, "a number within FP32's range"));
                    }
                    contents.fp32_contents.push(number as f32);
                } else {
                    contents.fp64_contents.push(number);
                }
            }
            "BOOL" => contents.bool_contents.push(value.as_bool().ok_or_else(|| bad(n, "true or false"))?),
            "INT8" => contents.int_contents.push(integer(n, value, -128, 127)? as i32),
            "INT16" => contents.int_contents.push(integer(n, value, -32_768, 32_767)? as i32),
            "INT32" => contents.int_contents.push(integer(n, value, i32::MIN.into(), i32::MAX.into())? as i32),
            "INT64" => contents.int64_contents.push(integer(n, value, i64::MIN.into(), i64::MAX.into())? as i64),
            "UINT8" => contents.uint_contents.push(integer(n, value, 0, 255)? as u32),
            "UINT16" => contents.uint_contents.push(integer(n, value, 0, 65_535)? as u32),
            "UINT32" => contents.uint_contents.push(integer(n, value, 0, u32::MAX.into())? as u32),
            "UINT64" => contents.uint64_contents.push(integer(n, value, 0, u64::MAX.into())? as u64),
            "BYTES" => {
                contents.bytes_contents.push(value.as_str().ok_or_else(|| bad(n, "a string"))?.as_bytes().to_vec())
            }
            other => return Err(unknown_datatype(field, other)),
        }
    }
    Ok(contents)
}

fn unknown_datatype(field: &str, datatype: &str) -> Problem {
    Problem::invalid_field(
        format!("{field}.datatype"),
        format!(
            "{field}.datatype {datatype:?} is not one the REST form carries: BOOL, INT8…INT64, UINT8…UINT64, FP32, \
             FP64 or BYTES"
        ),
    )
}

/// The answer of an Open Inference route, in the protocol's JSON; the outputs `binary` names as
/// bytes after it (the binary data extension), its length in `Inference-Header-Content-Length`.
pub(crate) fn response(matched: &Matched<'_>, encoded: Bytes, binary: &BinaryOutputs) -> Result<Response, Problem> {
    let undecodable = |error: prost::DecodeError| {
        tracing::error!(request_id = crate::request_id::current().unwrap_or_default(), %error, "upstream response does not decode");
        Problem::internal()
    };
    let mut tensors = Vec::new();
    let body = match matched.route.method.name() {
        "ModelInfer" => {
            let answer = proto::ModelInferResponse::decode(encoded).map_err(undecodable)?;
            let raw = answer.raw_output_contents;
            let outputs: Vec<Value> = answer
                .outputs
                .into_iter()
                .enumerate()
                .map(|(n, output)| {
                    let contents = output.contents.filter(|contents| *contents != InferTensorContents::default());
                    let mut tensor = json!({"name": output.name, "datatype": output.datatype, "shape": output.shape});
                    if binary.wants(&output.name) {
                        let bytes = match (&contents, raw.get(n)) {
                            (Some(contents), _) => binary_of(&output.datatype, contents),
                            (None, Some(bytes)) => bytes.clone(),
                            (None, None) => Vec::new(),
                        };
                        tensor["parameters"] = json!({"binary_data_size": bytes.len()});
                        tensors.extend_from_slice(&bytes);
                    } else {
                        tensor["data"] = Value::Array(match (&contents, raw.get(n)) {
                            (Some(contents), _) => data_of(contents),
                            (None, Some(bytes)) => raw_data(&output.datatype, bytes),
                            (None, None) => Vec::new(),
                        });
                    }
                    tensor
                })
                .collect();
            let mut body =
                json!({"model_name": answer.model_name, "model_version": answer.model_version, "outputs": outputs});
            if !answer.id.is_empty() {
                body["id"] = Value::String(answer.id);
            }
            body
        }
        "ModelMetadata" => {
            let answer = proto::ModelMetadataResponse::decode(encoded).map_err(undecodable)?;
            let tensors = |tensors: Vec<proto::model_metadata_response::TensorMetadata>| -> Vec<Value> {
                tensors
                    .into_iter()
                    .map(|tensor| json!({"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}))
                    .collect()
            };
            json!({
                "name": answer.name,
                "versions": answer.versions,
                "platform": answer.platform,
                "inputs": tensors(answer.inputs),
                "outputs": tensors(answer.outputs),
            })
        }
        _ => {
            // Not ready is a 4xx in the protocol's REST form, which its clients read as false.
            let answer = proto::ModelReadyResponse::decode(encoded).map_err(undecodable)?;
            let (name, version) = (variable(matched, "name"), variable(matched, "version"));
            if !answer.ready {
                return Err(Problem::not_found(format!("model {name:?} is not ready at version {version:?}")));
            }
            json!({"name": name, "ready": true})
        }
    };
    let json = body.to_string();
    if tensors.is_empty() && !binary.any() {
        let mut response = (StatusCode::OK, json).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(response);
    }
    let length = HeaderValue::from(json.len());
    let mut response = (StatusCode::OK, [json.into_bytes(), tensors].concat()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(BINARY_HEADER, length);
    Ok(response)
}

/// A tensor's contents as the binary data extension writes them: little endian, row major, each
/// element in its type's size (a `BYTES` element its 4-byte length, then itself).
fn binary_of(datatype: &str, contents: &InferTensorContents) -> Vec<u8> {
    let c = contents;
    match datatype {
        "BOOL" => c.bool_contents.iter().map(|value| u8::from(*value)).collect(),
        "INT8" => c.int_contents.iter().flat_map(|value| (*value as i8).to_le_bytes()).collect(),
        "INT16" => c.int_contents.iter().flat_map(|value| (*value as i16).to_le_bytes()).collect(),
        "INT32" => c.int_contents.iter().flat_map(|value| value.to_le_bytes()).collect(),
        "INT64" => c.int64_contents.iter().flat_map(|value| value.to_le_bytes()).collect(),
        "UINT8" => c.uint_contents.iter().map(|value| *value as u8).collect(),
        "UINT16" => c.uint_contents.iter().flat_map(|value| (*value as u16).to_le_bytes()).collect(),
        "UINT32" => c.uint_contents.iter().flat_map(|value| value.to_le_bytes()).collect(),
        "UINT64" => c.uint64_contents.iter().flat_map(|value| value.to_le_bytes()).collect(),
        "FP32" => c.fp32_contents.iter().flat_map(|value| value.to_le_bytes()).collect(),
        "FP64" => c.fp64_contents.iter().flat_map(|value| value.to_le_bytes()).collect(),
        "BYTES" => c
            .bytes_contents
            .iter()
            .flat_map(|value| [&(value.len() as u32).to_le_bytes()[..], value].concat())
            .collect(),
        _ => Vec::new(),
    }
}

/// The elements a tensor's contents hold, in the one field its type fills.
fn data_of(contents: &InferTensorContents) -> Vec<Value> {
    let InferTensorContents {
        bool_contents,
        int_contents,
        int64_contents,
        uint_contents,
        uint64_contents,
        fp32_contents,
        fp64_contents,
        bytes_contents,
    } = contents;
    bool_contents
        .iter()
        .map(|value| json!(value))
        .chain(int_contents.iter().map(|value| json!(value)))
        .chain(int64_contents.iter().map(|value| json!(value)))
        .chain(uint_contents.iter().map(|value| json!(value)))
        .chain(uint64_contents.iter().map(|value| json!(value)))
        .chain(fp32_contents.iter().map(|value| json!(f64::from(*value))))
        .chain(fp64_contents.iter().map(|value| json!(value)))
        .chain(bytes_contents.iter().map(|value| json!(String::from_utf8_lossy(value))))
        .collect()
}

/// The elements of a raw output of `datatype`: little-endian numbers, or strings each after its
/// 4-byte little-endian length.
fn raw_data(datatype: &str, bytes: &[u8]) -> Vec<Value> {
    fn each<const N: usize>(bytes: &[u8], read: impl Fn([u8; N]) -> Value) -> Vec<Value> {
        bytes.chunks_exact(N).map(|chunk| read(chunk.try_into().expect("N bytes"))).collect()
    }
    match datatype {
        "BOOL" => bytes.iter().map(|byte| json!(*byte != 0)).collect(),
        "INT8" => bytes.iter().map(|byte| json!(*byte as i8)).collect(),
        "UINT8" => bytes.iter().map(|byte| json!(byte)).collect(),
        "INT16" => each(bytes, |b| json!(i16::from_le_bytes(b))),
        "UINT16" => each(bytes, |b| json!(u16::from_le_bytes(b))),
        "INT32" => each(bytes, |b| json!(i32::from_le_bytes(b))),
        "UINT32" => each(bytes, |b| json!(u32::from_le_bytes(b))),
        "INT64" => each(bytes, |b| json!(i64::from_le_bytes(b))),
        "UINT64" => each(bytes, |b| json!(u64::from_le_bytes(b))),
        "FP32" => each(bytes, |b| json!(f64::from(f32::from_le_bytes(b)))),
        "FP64" => each(bytes, |b| json!(f64::from_le_bytes(b))),
        "BYTES" => {
            let (mut strings, mut at) = (Vec::new(), 0_usize);
            while let Some(length) = bytes.get(at..at.saturating_add(4)) {
                let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
                let Some(string) = bytes.get(at + 4..(at + 4).saturating_add(length)) else { break };
                strings.push(json!(String::from_utf8_lossy(string)));
                at += 4 + length;
            }
            strings
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(problem: Problem) -> String {
        format!("{problem:?}")
    }

    #[test]
    fn binary_tensors_are_read_in_their_types_size_and_written_back_the_same_way() {
        let mut budget = MAX_INFER_ELEMENTS;
        let bytes: Vec<u8> = [1.5_f32, -2.0].iter().flat_map(|value| value.to_le_bytes()).collect();
        let read = binary_contents("FP32", &bytes, "inputs[0]", &mut budget).unwrap();
        assert_eq!((read.fp32_contents.as_slice(), budget), (&[1.5, -2.0][..], MAX_INFER_ELEMENTS - 2));
        assert_eq!(binary_of("FP32", &read), bytes);
        for (datatype, bytes) in [
            ("INT8", vec![0xFF, 0x01]),
            ("UINT16", vec![0x01, 0x02, 0xFF, 0xFF]),
            ("INT64", (-5_i64).to_le_bytes().to_vec()),
            ("BOOL", vec![1, 0, 1]),
            (
                "BYTES",
                [&3_u32.to_le_bytes()[..], b"low", &0_u32.to_le_bytes(), &[0xFF, 0, 0, 0]].concat()[..11].to_vec(),
            ),
        ] {
            let read = binary_contents(datatype, &bytes, "inputs[0]", &mut budget).unwrap();
            assert_eq!(binary_of(datatype, &read), bytes, "{datatype}");
        }
        assert_eq!(binary_contents("INT8", &[0xFF], "x", &mut budget).unwrap().int_contents, [-1]);
        assert_eq!(
            binary_contents("BYTES", &[2, 0, 0, 0, 0xC3, 0x28], "x", &mut budget).unwrap().bytes_contents,
            [vec![0xC3, 0x28]],
            "bytes that are not UTF-8 stay as they are"
        );
    }

    #[test]
    fn binary_tensors_that_are_not_whole_elements_or_too_many_are_refused() {
        let mut budget = MAX_INFER_ELEMENTS;
        for (datatype, bytes) in [
            ("FP32", vec![0; 6]),
            ("FP64", vec![0; 4]),
            ("BYTES", vec![5, 0, 0, 0, b'a']),
            ("BYTES", vec![0xFF, 0xFF, 0xFF, 0xFF]),
            ("BYTES", vec![1, 0, 0, 0, b'a', 0]),
        ] {
            let refused = detail(binary_contents(datatype, &bytes, "inputs[0]", &mut budget).unwrap_err());
            assert!(refused.contains("are not whole") && refused.contains(datatype), "{datatype}: {refused}");
        }
        assert!(detail(binary_contents("BOOL", &[2], "inputs[0]", &mut budget).unwrap_err()).contains("0 or 1"));
        assert!(detail(binary_contents("FP16", &[0; 2], "inputs[0]", &mut budget).unwrap_err()).contains("FP16"));
        let mut budget = 3;
        let refused = detail(binary_contents("UINT8", &[0; 4], "inputs[0]", &mut budget).unwrap_err());
        assert!(refused.contains("more than 262144 values"), "{refused}");
    }

    #[test]
    fn the_json_ends_where_its_header_says() {
        let mut headers = HeaderMap::new();
        assert_eq!(split_binary(&headers, b"{}rest").unwrap(), (&b"{}rest"[..], &b""[..]), "all JSON without it");
        headers.insert(BINARY_HEADER, HeaderValue::from_static("2"));
        assert_eq!(split_binary(&headers, b"{}rest").unwrap(), (&b"{}"[..], &b"rest"[..]));
        for bad in ["7", "-1", "two", ""] {
            headers.insert(BINARY_HEADER, HeaderValue::from_static(bad));
            assert!(detail(split_binary(&headers, b"{}rest").unwrap_err()).contains("Inference-Header-Content-Length"));
        }
        headers.insert(BINARY_HEADER, HeaderValue::from_static("2"));
        headers.append(BINARY_HEADER, HeaderValue::from_static("2"));
        assert!(detail(split_binary(&headers, b"{}rest").unwrap_err()).contains("more than once"));
    }

    #[test]
    fn a_call_counts_its_rows_and_more_than_a_call_takes_is_refused() {
        let of = |shape: Vec<i64>| {
            let input = InferInputTensor { shape, ..InferInputTensor::default() };
            rows(&proto::ModelInferRequest { inputs: vec![input], ..proto::ModelInferRequest::default() })
        };
        assert_eq!(of(vec![3, 30]).unwrap(), 3);
        assert_eq!(of(vec![30]).unwrap(), 1, "one row without its dimension");
        assert_eq!(of(vec![-1, 30]).unwrap(), 1, "a shape the service refuses counts one");
        assert_eq!(of(vec![1024, 30]).unwrap(), 1024);
        assert!(detail(of(vec![1025, 30]).unwrap_err()).contains("at most 1024"));
    }

    #[test]
    fn an_outputs_own_binary_data_wins_over_the_requests() {
        let binary = BinaryOutputs { all: true, named: vec![("risk_band".into(), false)] };
        assert!(binary.wants("probability") && !binary.wants("risk_band") && binary.any());
        let binary = BinaryOutputs { all: false, named: vec![("risk_band".into(), true)] };
        assert!(!binary.wants("probability") && binary.wants("risk_band"));
        assert!(!BinaryOutputs { all: false, named: vec![("value".into(), false)] }.any());
    }

    #[test]
    fn nested_data_is_read_in_row_major_order_and_typed_as_its_datatype_says() {
        let data = json!([[1, 2.5], [3, 4]]);
        let read = elements(&data, &[2, 2], "inputs[0]").unwrap();
        let contents = contents("FP64", &read, "inputs[0]").unwrap();
        assert_eq!(contents.fp64_contents, [1.0, 2.5, 3.0, 4.0]);
        assert_eq!(elements(&json!([1, 2, 3, 4]), &[2, 2], "inputs[0]").unwrap().len(), 4, "flat");
        for misnested in [json!([[1, 2, 3], [4]]), json!([1, [2, 3], 4]), json!([[[1, 2], [3, 4]]]), json!([[1, 2]])] {
            let refused = elements(&misnested, &[2, 2], "inputs[0]").unwrap_err();
            assert_eq!(refused.field(), Some("inputs[0].data"), "{misnested}");
        }
        let refused = contents_of("INT8", &json!([1, 300]));
        assert_eq!(refused.field(), Some("inputs[0].data[1]"));
        assert!(refused.detail().contains("an integer from -128 to 127, as INT8 says"), "{}", refused.detail());
        let refused = contents_of("FP32", &json!([1, "2"]));
        assert!(refused.detail().contains("must be a number"), "{}", refused.detail());
        let refused = contents_of("FP16", &json!([1]));
        assert_eq!(refused.field(), Some("inputs[0].datatype"));
    }

    fn contents_of(datatype: &str, data: &Value) -> Problem {
        let read = elements(data, &[-1], "inputs[0]").unwrap();
        contents(datatype, &read, "inputs[0]").unwrap_err()
    }

    #[test]
    fn raw_outputs_read_as_their_datatype() {
        assert_eq!(raw_data("FP32", &1.5f32.to_le_bytes()), [json!(1.5)]);
        assert_eq!(raw_data("INT16", &[0xff, 0xff, 2, 0]), [json!(-1), json!(2)]);
        let mut strings = 3u32.to_le_bytes().to_vec();
        strings.extend_from_slice(b"low");
        assert_eq!(raw_data("BYTES", &strings), [json!("low")]);
    }
}
