//! The Open Inference Protocol, version 2 (`inference.GRPCInferenceService`), over one service's
//! models, as KServe, Triton and MLServer speak it: a client of theirs reads our models' metadata
//! and runs them on raw tensors. Each inference is a decision: its audit event (model, version,
//! rows, the tenant's keyed digest of the input, the outputs) is committed to the service's outbox
//! before the answer leaves, and it is counted for drift like the service's own calls.
//!
//! A model takes one input, `FP32` (or `FP64`) of shape `[rows, features]` (`[features]` for one
//! row), its features in the order of the model card's `features`, each within the card's range;
//! it answers `FP64` `[rows]` (`probability` of the positive class for a classifier, `value` for a
//! regressor) and `BYTES` `[rows]` (`risk_band`). At most [`MAX_ROWS`] rows a call.

use std::{sync::Arc, time::Instant};

pub use aigronova_proto::inference::grpc_inference_service_server::SERVICE_NAME;
use aigronova_proto::inference::{
    self as proto, InferTensorContents,
    grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer},
    model_infer_request::InferInputTensor,
    model_infer_response::InferOutputTensor,
    model_metadata_response::TensorMetadata,
};
use tonic::{Request, Response, Status, service::interceptor::InterceptedService};

use crate::{
    audit::{AuditEvent, EventKind, OutboxWaker},
    auth::{self, Authenticate, Caller, TokenVerifier},
    crypto::TenantKeys,
    error::invalid_argument,
    inference::{Model, ModelRegistry},
    monitoring::InferenceMonitor,
    storage::Database,
};

/// The most rows one inference takes.
pub const MAX_ROWS: usize = 1024;

/// The platform a model's metadata names: an ONNX model run by ONNX Runtime.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// The name of the output tensor of the risk bands.
pub const RISK_BAND: &str = "risk_band";

/// The scope of a model's metadata.
pub const READ_SCOPE: &str = "models:read";

/// The scope of running a model.
pub const INFER_SCOPE: &str = "models:infer";

/// `inference.GRPCInferenceService` over one service's models.
#[derive(Clone, Debug)]
pub struct OpenInference {
    service: &'static str,
    version: &'static str,
    models: ModelRegistry,
    database: Database,
    keys: Arc<TenantKeys>,
    monitor: InferenceMonitor,
    outbox: OutboxWaker,
}

impl OpenInference {
    /// The protocol for the models of `service` (at `version`), its audit events written to the
    /// outbox of `database` (digests under the tenants' `keys`) and `outbox` woken for them.
    pub fn new(
        service: &'static str,
        version: &'static str,
        models: ModelRegistry,
        database: Database,
        keys: Arc<TenantKeys>,
        monitor: InferenceMonitor,
        outbox: OutboxWaker,
    ) -> Self {
        Self { service, version, models, database, keys, monitor, outbox }
    }

    /// The gRPC service, its calls authenticated by `verifier` (the gateway's internal tokens).
    pub fn into_service(
        self,
        verifier: TokenVerifier,
    ) -> InterceptedService<GrpcInferenceServiceServer<Self>, Authenticate> {
        InterceptedService::new(
            GrpcInferenceServiceServer::new(self).max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES),
            Authenticate::new(verifier),
        )
    }

    /// The model `name` at `version` (any version when empty), or `NOT_FOUND` naming what is served.
    fn model(&self, name: &str, version: &str) -> Result<Arc<Model>, Status> {
        let model = self.models.get(name).map_err(|error| Status::not_found(error.to_string()))?;
        if !version.is_empty() && version != model.version() {
            return Err(Status::not_found(format!(
                "model {name:?} has no version {version:?}; version {} is served",
                model.version()
            )));
        }
        Ok(model)
    }

    /// Runs `request` for `caller`: checked, scored, audited, answered.
    async fn infer(
        &self,
        caller: Caller,
        request: proto::ModelInferRequest,
    ) -> Result<proto::ModelInferResponse, Status> {
        let model = self.model(&request.model_name, &request.model_version)?;
        let started = Instant::now();
        let rows = match Input::read(&model, &request) {
            Ok(rows) => rows,
            Err(status) => {
                self.monitor.record(&caller.tenant_id, &model, None, started.elapsed(), false);
                return Err(status);
            }
        };
        let scoring = Arc::clone(&model);
        let scored = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let outputs = scoring.predict_rows(&rows.rows);
            (rows, outputs, started.elapsed())
        })
        .await
        .map_err(|error| crate::error::internal(&error))?;
        let (rows, outputs, latency) = scored;
        let outputs = outputs.inspect_err(|_| {
            self.monitor.record(&caller.tenant_id, &model, None, latency, false);
        })?;
        let bands: Vec<String> = outputs.iter().map(|output| model.risk_band(*output).to_owned()).collect();
        let output_name = output_name(&model);
        let cipher = self.keys.cipher(&caller.tenant_id).await?;
        let event = AuditEvent::new(
            &caller,
            self.service,
            EventKind::Decision,
            "inference.ModelInfer",
            "",
            serde_json::json!({
                "model": model.name(),
                "modelVersion": model.version(),
                "inferenceId": request.id,
                "rows": rows.rows.len(),
                "inputDigest": cipher.keyed_digest(&rows.bytes()),
                "output": {output_name: &outputs, "riskBand": &bands},
                "latencyMs": latency.as_secs_f64() * 1000.0,
            }),
        );
        // Written on a task of its own: a caller that stops waiting leaves the decision recorded
        // and counted, or neither.
        let (database, monitor, tenant_id) = (self.database.clone(), self.monitor.clone(), caller.tenant_id.clone());
        let counted = Arc::clone(&model);
        let recorded = tokio::spawn(async move {
            crate::audit::record(&database, &event).await?;
            // Each row is one inference, with its share of the call's time.
            let share = latency / u32::try_from(rows.rows.len()).unwrap_or(u32::MAX).max(1);
            for row in &rows.rows {
                monitor.record(&tenant_id, &counted, Some(row), share, true);
            }
            Ok::<_, crate::storage::StoreError>(())
        })
        .await
        .map_err(|error| crate::error::internal(&error))?;
        recorded?;
        self.outbox.wake();
        let count = i64::try_from(outputs.len()).unwrap_or(i64::MAX);
        let mut answer = vec![
            InferOutputTensor {
                name: output_name.to_owned(),
                datatype: "FP64".to_owned(),
                shape: vec![count],
                contents: Some(InferTensorContents { fp64_contents: outputs, ..InferTensorContents::default() }),
                ..InferOutputTensor::default()
            },
            InferOutputTensor {
                name: RISK_BAND.to_owned(),
                datatype: "BYTES".to_owned(),
                shape: vec![count],
                contents: Some(InferTensorContents {
                    bytes_contents: bands.into_iter().map(String::into_bytes).collect(),
                    ..InferTensorContents::default()
                }),
                ..InferOutputTensor::default()
            },
        ];
        if !request.outputs.is_empty() {
            answer.retain(|tensor| request.outputs.iter().any(|wanted| wanted.name == tensor.name));
        }
        Ok(proto::ModelInferResponse {
            model_name: model.name().to_owned(),
            model_version: model.version().to_owned(),
            id: request.id,
            outputs: answer,
            ..proto::ModelInferResponse::default()
        })
    }
}

/// The name of a model's score tensor: a classifier's `probability` of its positive class, a
/// regressor's `value`.
fn output_name(model: &Model) -> &'static str {
    if model.is_regression() { "value" } else { "probability" }
}

/// The caller of `request`, refused unless it holds `scope`.
fn caller_with<T>(request: &Request<T>, scope: &str) -> Result<Caller, Status> {
    let caller = auth::caller(request)?;
    if !caller.has_scope(scope) {
        return Err(Status::permission_denied(format!("this call needs the scope {scope}")));
    }
    Ok(caller.clone())
}

/// The rows of an inference's one input, checked against the model.
#[derive(Debug)]
struct Input {
    rows: Vec<Vec<f32>>,
}

impl Input {
    fn read(model: &Model, request: &proto::ModelInferRequest) -> Result<Self, Status> {
        check_id(&request.id)?;
        let manifest = model.manifest();
        let expected = &manifest.input.name;
        let [input] = request.inputs.as_slice() else {
            return Err(invalid_argument(
                "inputs",
                &format!(
                    "model {} takes one input tensor, {expected:?}; {} were sent",
                    manifest.name,
                    request.inputs.len()
                ),
            ));
        };
        if &input.name != expected {
            return Err(invalid_argument(
                "inputs[0].name",
                &format!("model {} takes the input {expected:?}, not {:?}", manifest.name, input.name),
            ));
        }
        for wanted in &request.outputs {
            let known = output_name(model);
            if wanted.name != known && wanted.name != RISK_BAND {
                return Err(invalid_argument(
                    "outputs",
                    &format!(
                        "model {} has no output {:?}; its outputs are {known} and {RISK_BAND}",
                        manifest.name, wanted.name
                    ),
                ));
            }
        }
        let width = manifest.features.len();
        let rows = shape_rows(input, width)?;
        let values = values(input, &request.raw_input_contents)?;
        let single = input.datatype == "FP32";
        if values.len() != rows * width {
            return Err(invalid_argument(
                "inputs[0]",
                &format!("holds {} values where its shape [{rows}, {width}] needs {}", values.len(), rows * width),
            ));
        }
        let rows = values
            .chunks(width)
            .enumerate()
            .map(|(row, values)| {
                manifest
                    .features
                    .iter()
                    .zip(values)
                    .map(|(feature, value)| {
                        // An FP32 value is the f32 nearest the number meant: a bound it rounds to
                        // is the bound.
                        let value = match single {
                            true if *value as f32 == feature.min as f32 => feature.min,
                            true if *value as f32 == feature.max as f32 => feature.max,
                            _ => *value,
                        };
                        model.check_value(feature, value).map_err(|reason| {
                            invalid_argument(&format!("inputs[0][{row}]"), &format!("{}: {reason}", feature.name))
                        })
                    })
                    .collect::<Result<Vec<f32>, Status>>()
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Self { rows })
    }

    /// The rows as little-endian bytes, what the input digest is made of.
    fn bytes(&self) -> Vec<u8> {
        self.rows.iter().flatten().flat_map(|value| value.to_le_bytes()).collect()
    }
}

/// Refuses an inference's `id` that could not go into the audit log as it is: one a request id
/// could not be ([`crate::text::is_reusable_id`]).
fn check_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || crate::text::is_reusable_id(id) {
        return Ok(());
    }
    Err(invalid_argument(
        "id",
        "must be at most 128 letters, digits and - _ . : / + =, with no personal data or credentials in it: it is \
         kept in the audit log",
    ))
}

/// How many rows `input`'s shape holds: `[rows, width]`, or `[width]` for one.
fn shape_rows(input: &InferInputTensor, width: usize) -> Result<usize, Status> {
    let bad = || {
        invalid_argument(
            "inputs[0].shape",
            &format!("{:?} is not [rows, {width}] with 1 to {MAX_ROWS} rows, nor [{width}] for one row", input.shape),
        )
    };
    let (rows, columns) = match input.shape.as_slice() {
        [rows, columns] => (*rows, *columns),
        [columns] => (1, *columns),
        _ => return Err(bad()),
    };
    match (usize::try_from(rows), usize::try_from(columns)) {
        (Ok(rows), Ok(columns)) if (1..=MAX_ROWS).contains(&rows) && columns == width => Ok(rows),
        _ => Err(bad()),
    }
}

/// `input`'s values, from its contents or from `raw` (the request's one raw input), as its data
/// type says.
fn values(input: &InferInputTensor, raw: &[Vec<u8>]) -> Result<Vec<f64>, Status> {
    let contents = input.contents.as_ref();
    let width = match input.datatype.as_str() {
        "FP32" => 4,
        "FP64" => 8,
        other => {
            return Err(invalid_argument(
                "inputs[0].datatype",
                &format!("{other:?} is not taken: send FP32 (or FP64) values"),
            ));
        }
    };
    let filled = contents.is_some_and(|contents| *contents != InferTensorContents::default());
    match raw {
        [] => {}
        [bytes] if !filled => {
            if bytes.len() % width != 0 {
                return Err(invalid_argument(
                    "raw_input_contents[0]",
                    &format!("holds {} bytes, not a whole number of {} values", bytes.len(), input.datatype),
                ));
            }
            return Ok(if width == 4 {
                bytes.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect()
            } else {
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect()
            });
        }
        [_] => {
            return Err(invalid_argument(
                "raw_input_contents",
                "is sent together with inputs[0].contents: send the values in one of them",
            ));
        }
        _ => {
            return Err(invalid_argument(
                "raw_input_contents",
                &format!("holds {} tensors where the request has one input", raw.len()),
            ));
        }
    }
    let Some(contents) = contents else { return Ok(Vec::new()) };
    let (values, others_filled) = if width == 4 {
        let values = contents.fp32_contents.iter().map(|value| f64::from(*value)).collect();
        (
            values,
            InferTensorContents { fp32_contents: Vec::new(), ..contents.clone() } != InferTensorContents::default(),
        )
    } else {
        let values = contents.fp64_contents.clone();
        (
            values,
            InferTensorContents { fp64_contents: Vec::new(), ..contents.clone() } != InferTensorContents::default(),
        )
    };
    if others_filled {
        let field = if width == 4 { "fp32_contents" } else { "fp64_contents" };
        return Err(invalid_argument(
            "inputs[0].contents",
            &format!("holds values of another type than {}: send them in {field}", input.datatype),
        ));
    }
    Ok(values)
}

/// The metadata of one tensor.
fn tensor(name: &str, datatype: &str, shape: Vec<i64>) -> TensorMetadata {
    TensorMetadata { name: name.to_owned(), datatype: datatype.to_owned(), shape }
}

#[tonic::async_trait]
impl GrpcInferenceService for OpenInference {
    async fn server_live(
        &self,
        request: Request<proto::ServerLiveRequest>,
    ) -> Result<Response<proto::ServerLiveResponse>, Status> {
        auth::caller(&request)?;
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    /// Ready once built: the models are loaded and warmed up before the service serves.
    async fn server_ready(
        &self,
        request: Request<proto::ServerReadyRequest>,
    ) -> Result<Response<proto::ServerReadyResponse>, Status> {
        auth::caller(&request)?;
        Ok(Response::new(proto::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<proto::ModelReadyRequest>,
    ) -> Result<Response<proto::ModelReadyResponse>, Status> {
        // Any caller may ask: the gateway asks it to find the service of a model.
        auth::caller(&request)?;
        let request = request.into_inner();
        let ready = self.model(&request.name, &request.version).is_ok();
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<proto::ServerMetadataRequest>,
    ) -> Result<Response<proto::ServerMetadataResponse>, Status> {
        auth::caller(&request)?;
        Ok(Response::new(proto::ServerMetadataResponse {
            name: self.service.to_owned(),
            version: self.version.to_owned(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<proto::ModelMetadataRequest>,
    ) -> Result<Response<proto::ModelMetadataResponse>, Status> {
        caller_with(&request, READ_SCOPE)?;
        let request = request.into_inner();
        let model = self.model(&request.name, &request.version)?;
        let manifest = model.manifest();
        let width = i64::try_from(manifest.features.len()).unwrap_or(i64::MAX);
        let output = output_name(&model);
        Ok(Response::new(proto::ModelMetadataResponse {
            name: model.name().to_owned(),
            versions: vec![model.version().to_owned()],
            platform: PLATFORM.to_owned(),
            inputs: vec![tensor(&manifest.input.name, "FP32", vec![-1, width])],
            outputs: vec![tensor(output, "FP64", vec![-1]), tensor(RISK_BAND, "BYTES", vec![-1])],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<proto::ModelInferRequest>,
    ) -> Result<Response<proto::ModelInferResponse>, Status> {
        let caller = caller_with(&request, INFER_SCOPE)?;
        self.infer(caller, request.into_inner()).await.map(Response::new)
    }
}
