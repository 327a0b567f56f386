//! The Open Inference Protocol (v2) that every service speaks for its models: metadata, readiness
//! and inference over gRPC with the gateway's internal token, and in its REST form through the
//! gateway; each inference audited as a decision, bad requests refused with their precise code
//! and nothing recorded.

use aigronova_e2e::{Backend, TestApp, assert_problem, models_dir, spawn_app};
use aigronova_platform::auth::{Caller, attach_token};
use aigronova_proto::inference::{
    self as proto, InferTensorContents,
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use serde_json::{Value, json};
use tonic::{Code, Request, transport::Channel};

/// A client of `service`'s protocol carrying an internal token for `tenant` with `scopes`.
struct Client {
    inner: GrpcInferenceServiceClient<Channel>,
    token: String,
}

impl Client {
    fn new(app: &TestApp, service: &str, tenant: &str, scopes: &[&str]) -> Self {
        let channel = Channel::from_shared(format!("http://{}", app.grpc_addr(service))).unwrap().connect_lazy();
        let caller = Caller {
            tenant_id: tenant.to_owned(),
            subject: "client-1".to_owned(),
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
        };
        Self { inner: GrpcInferenceServiceClient::new(channel), token: app.gateway_signer().mint(&caller) }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        attach_token(request.metadata_mut(), &self.token);
        request
    }

    async fn infer(&self, request: proto::ModelInferRequest) -> Result<proto::ModelInferResponse, tonic::Status> {
        self.inner.clone().model_infer(self.request(request)).await.map(tonic::Response::into_inner)
    }
}

/// The held-out rows of `model`'s Python reference: each row's features in the model card's
/// order, and the output the reference computed.
fn reference(model: &str) -> (Vec<Vec<f32>>, Vec<f64>) {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(models_dir().join(format!("{model}/1/manifest.json"))).unwrap())
            .unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(models_dir().join(format!("{model}/1/reference.json"))).unwrap())
            .unwrap();
    let names: Vec<&str> =
        manifest["features"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    let rows = reference["rows"].as_array().unwrap();
    let inputs = rows
        .iter()
        .map(|row| names.iter().map(|name| row["features"][*name].as_f64().unwrap() as f32).collect())
        .collect();
    let outputs =
        rows.iter().map(|row| row.get("probability").or(row.get("value")).unwrap().as_f64().unwrap()).collect();
    (inputs, outputs)
}

fn infer_request(model: &str, rows: &[Vec<f32>]) -> proto::ModelInferRequest {
    let width = rows[0].len() as i64;
    proto::ModelInferRequest {
        model_name: model.to_owned(),
        id: format!("{model}-batch"),
        inputs: vec![InferInputTensor {
            name: "input".to_owned(),
            datatype: "FP32".to_owned(),
            shape: vec![rows.len() as i64, width],
            contents: Some(InferTensorContents {
                fp32_contents: rows.iter().flatten().copied().collect(),
                ..InferTensorContents::default()
            }),
            ..InferInputTensor::default()
        }],
        ..proto::ModelInferRequest::default()
    }
}

async fn every_service_serves_its_models_over_the_protocol(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant("Clínica Interoperável").await;
    let key = app.create_key(&tenant, &["governance:read"]).await;
    for (service, scopes, models) in [
        ("healthquantum", ["models:read", "models:infer"], &["breast-cancer", "diabetes-progression"][..]),
        ("finquantum", ["models:read", "models:infer"], &["credit-risk"][..]),
    ] {
        let client = Client::new(&app, service, &tenant, &scopes);
        let live = client.inner.clone().server_live(client.request(proto::ServerLiveRequest {})).await.unwrap();
        assert!(live.into_inner().live, "{service}");
        let ready = client.inner.clone().server_ready(client.request(proto::ServerReadyRequest {})).await.unwrap();
        assert!(ready.into_inner().ready, "{service}");
        let server = client.inner.clone().server_metadata(client.request(proto::ServerMetadataRequest {})).await;
        assert_eq!(server.unwrap().into_inner().name, service);

        for model in models {
            let (rows, expected) = reference(model);
            let width = rows[0].len() as i64;
            let metadata = client
                .inner
                .clone()
                .model_metadata(
                    client.request(proto::ModelMetadataRequest { name: (*model).to_owned(), version: String::new() }),
                )
                .await
                .unwrap()
                .into_inner();
            assert_eq!((metadata.name.as_str(), metadata.versions.as_slice()), (*model, &["1".to_owned()][..]));
            assert_eq!(metadata.platform, "onnxruntime_onnx");
            assert_eq!(metadata.inputs.len(), 1);
            assert_eq!(
                (metadata.inputs[0].datatype.as_str(), metadata.inputs[0].shape.as_slice()),
                ("FP32", &[-1, width][..])
            );
            let output = if *model == "diabetes-progression" { "value" } else { "probability" };
            let outputs: Vec<&str> = metadata.outputs.iter().map(|tensor| tensor.name.as_str()).collect();
            assert_eq!(outputs, [output, "risk_band"]);
            let ready = client
                .inner
                .clone()
                .model_ready(
                    client.request(proto::ModelReadyRequest { name: (*model).to_owned(), version: "1".into() }),
                )
                .await
                .unwrap();
            assert!(ready.into_inner().ready);
            let ready = client
                .inner
                .clone()
                .model_ready(
                    client.request(proto::ModelReadyRequest { name: (*model).to_owned(), version: "7".into() }),
                )
                .await
                .unwrap();
            assert!(!ready.into_inner().ready, "no version 7");

            // Every held-out row in one call, as the Python reference scored them.
            let answer = client.infer(infer_request(model, &rows)).await.unwrap();
            assert_eq!((answer.model_name.as_str(), answer.model_version.as_str()), (*model, "1"));
            assert_eq!(answer.id, format!("{model}-batch"));
            assert_eq!(answer.outputs.len(), 2);
            let scores = &answer.outputs[0];
            assert_eq!((scores.name.as_str(), scores.datatype.as_str()), (output, "FP64"));
            assert_eq!(scores.shape, [rows.len() as i64]);
            let values = &scores.contents.as_ref().unwrap().fp64_contents;
            assert_eq!(values.len(), expected.len());
            for (value, expected) in values.iter().zip(&expected) {
                assert!((value - expected).abs() < 1e-5, "{model}: {value} against the reference {expected}");
            }
            let bands = &answer.outputs[1].contents.as_ref().unwrap().bytes_contents;
            assert_eq!(bands.len(), rows.len());
            assert!(bands.iter().all(|band| !band.is_empty()), "{model}: {bands:?}");

            // The same first row as raw little-endian bytes, asking for the scores only.
            let mut raw = infer_request(model, &rows[..1]);
            raw.inputs[0].contents = None;
            raw.inputs[0].shape = vec![width];
            raw.raw_input_contents = vec![rows[0].iter().flat_map(|value| value.to_le_bytes()).collect()];
            raw.outputs = vec![InferRequestedOutputTensor { name: output.to_owned(), ..Default::default() }];
            let answer = client.infer(raw).await.unwrap();
            assert_eq!(answer.outputs.len(), 1);
            assert_eq!(answer.outputs[0].contents.as_ref().unwrap().fp64_contents, [values[0]]);
        }
    }

    // Each inference is a decision in the tenant's audit log, its inputs only as a keyed digest.
    let entries = app.audited(&key, 6, |entry| entry["action"] == "inference.ModelInfer").await;
    for entry in &entries {
        assert_eq!(entry["kind"], "decision");
        let leaf: Value = serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap();
        let details = &leaf["details"];
        assert!(details["inputDigest"].as_str().is_some_and(|digest| digest.len() >= 32), "{details}");
        assert!(details["rows"].as_u64().is_some_and(|rows| rows >= 1), "{details}");
        assert_eq!(details["modelVersion"], "1");
        assert!(details["output"]["riskBand"].is_array(), "{details}");
        let mut keys: Vec<&str> = details.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["inferenceId", "inputDigest", "latencyMs", "model", "modelVersion", "output", "rows"]);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_its_models_over_the_protocol_on_sqlite() {
    every_service_serves_its_models_over_the_protocol(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_its_models_over_the_protocol_on_postgres() {
    every_service_serves_its_models_over_the_protocol(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inferences_are_refused_precisely_and_record_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Clínica Descuidada").await;
    let key = app.create_key(&tenant, &["governance:read"]).await;
    let client = Client::new(&app, "healthquantum", &tenant, &["models:read", "models:infer"]);
    let (rows, _) = reference("breast-cancer");
    let good = || infer_request("breast-cancer", &rows[..2]);

    let refusals: Vec<(&str, proto::ModelInferRequest, Code, &str)> = vec![
        (
            "unknown model",
            proto::ModelInferRequest { model_name: "heart".into(), ..good() },
            Code::NotFound,
            "unknown model \"heart\"",
        ),
        (
            "unknown version",
            proto::ModelInferRequest { model_version: "2".into(), ..good() },
            Code::NotFound,
            "no version \"2\"",
        ),
        (
            "no input",
            proto::ModelInferRequest { inputs: Vec::new(), ..good() },
            Code::InvalidArgument,
            "takes one input tensor",
        ),
        (
            "input misnamed",
            {
                let mut r = good();
                r.inputs[0].name = "x".into();
                r
            },
            Code::InvalidArgument,
            "inputs[0].name",
        ),
        (
            "wrong width",
            {
                let mut r = good();
                r.inputs[0].shape = vec![2, 29];
                r
            },
            Code::InvalidArgument,
            "inputs[0].shape",
        ),
        (
            "too many rows",
            {
                let mut r = good();
                r.inputs[0].shape = vec![1025, 30];
                r
            },
            Code::InvalidArgument,
            "1 to 1024 rows",
        ),
        (
            "values short",
            {
                let mut r = good();
                r.inputs[0].shape = vec![3, 30];
                r
            },
            Code::InvalidArgument,
            "holds 60 values",
        ),
        (
            "integers",
            {
                let mut r = good();
                r.inputs[0].datatype = "INT64".into();
                r
            },
            Code::InvalidArgument,
            "\"INT64\" is not taken",
        ),
        (
            "out of range",
            {
                let mut r = good();
                r.inputs[0].contents.as_mut().unwrap().fp32_contents[31] = -5.0;
                r
            },
            Code::InvalidArgument,
            "inputs[0][1]: mean texture: -5 is below",
        ),
        (
            "not a number",
            {
                let mut r = good();
                r.inputs[0].contents.as_mut().unwrap().fp32_contents[0] = f32::NAN;
                r
            },
            Code::InvalidArgument,
            "must be a finite number",
        ),
        (
            "a CPF as id",
            proto::ModelInferRequest { id: "529.982.247-25".into(), ..good() },
            Code::InvalidArgument,
            "id: must be at most 128",
        ),
        (
            "a phone number as id",
            proto::ModelInferRequest { id: "fone-11912345678".into(), ..good() },
            Code::InvalidArgument,
            "id: must be at most 128",
        ),
        (
            "raw and contents",
            {
                let mut r = good();
                r.raw_input_contents = vec![vec![0; 240]];
                r
            },
            Code::InvalidArgument,
            "sent together",
        ),
        (
            "unknown output",
            {
                let mut r = good();
                r.outputs = vec![InferRequestedOutputTensor { name: "label".into(), ..Default::default() }];
                r
            },
            Code::InvalidArgument,
            "no output \"label\"",
        ),
    ];
    for (case, request, code, message) in refusals {
        let status = client.infer(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(status.message().contains(message), "{case}: {:?} does not say {message:?}", status.message());
    }
    let reader = Client::new(&app, "healthquantum", &tenant, &["models:read", "health:write"]);
    let status = reader.infer(good()).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "this call needs the scope models:infer"));
    let stranger = Client::new(&app, "healthquantum", &tenant, &["fin:read"]);
    let metadata = proto::ModelMetadataRequest { name: "breast-cancer".into(), version: String::new() };
    let status = stranger.inner.clone().model_metadata(stranger.request(metadata)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut unsigned = Request::new(good());
    unsigned.metadata_mut().remove("authorization");
    let status = client.inner.clone().model_infer(unsigned).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // A bound of the model card sent as FP32, which rounds it, is the bound.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(models_dir().join("breast-cancer/1/manifest.json")).unwrap())
            .unwrap();
    let mut at_bounds = good();
    let values = &mut at_bounds.inputs[0].contents.as_mut().unwrap().fp32_contents;
    values[0] = manifest["features"][0]["max"].as_f64().unwrap() as f32;
    values[30] = manifest["features"][0]["min"].as_f64().unwrap() as f32;
    assert!(f64::from(values[0]) != manifest["features"][0]["max"].as_f64().unwrap(), "the bound rounds in f32");

    // Only the good call that follows is in the log: the refused ones recorded nothing.
    client.infer(at_bounds).await.unwrap();
    let entries = app.audited(&key, 1, |entry| entry["action"] == "inference.ModelInfer").await;
    let leaf: Value = serde_json::from_str(entries[0]["leaf"].as_str().unwrap()).unwrap();
    assert_eq!(leaf["details"]["rows"], 2);
    assert_eq!(app.count_health_rows("audit_outbox_refused").await, 0);
    app.stop().await;
}

async fn the_gateway_serves_the_protocols_rest_form(backend: Backend) {
    let app = spawn_app(backend).await;
    // On Enterprise, whose burst takes every call below at once.
    let tenant = app.create_tenant_on("Clínica REST", "enterprise").await;
    let key = app.create_key(&tenant, &["models:read", "models:infer", "governance:read"]).await;

    // The server's own endpoints, which take no key, as the gateway's probes.
    let anonymous = |path: &str| app.client.get(app.url(path)).send();
    let server: Value = anonymous("/v2").await.unwrap().json().await.unwrap();
    assert_eq!(
        (&server["name"], &server["extensions"]),
        (&json!("aigronova"), &json!(["binary_tensor_data"])),
        "{server}"
    );
    let live: Value = anonymous("/v2/health/live").await.unwrap().json().await.unwrap();
    assert_eq!(live, json!({"live": true}));
    let ready = anonymous("/v2/health/ready").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap(), json!({"ready": true}));

    let metadata: Value = app.get("/v2/models/breast-cancer", &key).await.json().await.unwrap();
    assert_eq!(
        metadata,
        json!({
            "name": "breast-cancer", "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}],
            "outputs": [
                {"name": "probability", "datatype": "FP64", "shape": [-1]},
                {"name": "risk_band", "datatype": "BYTES", "shape": [-1]},
            ],
        })
    );
    let metadata: Value = app.get("/v2/models/credit-risk/versions/1", &key).await.json().await.unwrap();
    assert_eq!(metadata["inputs"][0]["shape"], json!([-1, 12]), "finquantum's model, found by its name");
    let ready: Value = app.get("/v2/models/diabetes-progression/ready", &key).await.json().await.unwrap();
    assert_eq!(ready, json!({"name": "diabetes-progression", "ready": true}));
    // Not ready is a 4xx, which the protocol's clients read as false.
    let problem = assert_problem(app.get("/v2/models/diabetes-progression/versions/7/ready", &key).await, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains("not ready at version \"7\""), "{problem}");

    // The held-out rows nested as their shape, scored as the Python reference scored them.
    let (rows, expected) = reference("breast-cancer");
    let body = json!({"id": "lote-7", "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32", "data": rows}]});
    let response = app.post("/v2/models/breast-cancer/infer", &key, &body).await;
    assert_eq!(response.status(), 200);
    let policy = response.headers()["ratelimit-policy"].to_str().unwrap().to_owned();
    // A unit of the month's quota a row: the tenant's first inference, of three rows, leaves the
    // quota less three.
    let field = |name: &str, member: &str| -> u64 {
        let value = response.headers()[name].to_str().unwrap();
        let item = value.split(", ").find(|item| item.starts_with("\"inference\";")).expect("the quota's item");
        let member = item.split(';').find_map(|pair| pair.strip_prefix(member)).expect("its member");
        member.parse().unwrap()
    };
    assert_eq!(field("ratelimit-policy", "q=") - field("ratelimit", "r="), 3, "{policy}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (&answer["model_name"], &answer["model_version"], &answer["id"]),
        (&json!("breast-cancer"), &json!("1"), &json!("lote-7"))
    );
    let outputs = answer["outputs"].as_array().unwrap();
    assert_eq!(
        (&outputs[0]["name"], &outputs[0]["datatype"], &outputs[0]["shape"]),
        (&json!("probability"), &json!("FP64"), &json!([3]))
    );
    for (value, expected) in outputs[0]["data"].as_array().unwrap().iter().zip(&expected) {
        let value = value.as_f64().unwrap();
        assert!((value - expected).abs() < 1e-5, "{value} against the reference {expected}");
    }
    assert_eq!(outputs[1]["name"], "risk_band");
    assert!(outputs[1]["data"].as_array().unwrap().iter().all(Value::is_string), "{answer}");

    // The binary data extension, as Triton's clients send by default: the rows as FP32 bytes after
    // the JSON, and every output answered as bytes after the answer's JSON.
    let bands = outputs[1]["data"].clone();
    let tensor: Vec<u8> = rows.iter().flatten().flat_map(|value| value.to_le_bytes()).collect();
    let binary_body = |header: &Value, tensor: &[u8]| {
        let header = header.to_string();
        let request = app
            .client
            .post(app.url("/v2/models/breast-cancer/infer"))
            .bearer_auth(&key)
            .header("content-type", "application/octet-stream")
            .header("inference-header-content-length", header.len());
        request.body([header.as_bytes(), tensor].concat()).send()
    };
    let header = json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32",
                    "parameters": {"binary_data_size": tensor.len()}}],
        "parameters": {"binary_data_output": true},
    });
    let response = binary_body(&header, &tensor).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/octet-stream");
    let json_length: usize = response.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let body = response.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&body[..json_length]).unwrap();
    let outputs = answer["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["parameters"]["binary_data_size"], rows.len() * 8, "{answer}");
    assert!(outputs[0].get("data").is_none() && outputs[1].get("data").is_none(), "{answer}");
    let (probabilities, mut rest) = body[json_length..].split_at(rows.len() * 8);
    for (bytes, expected) in probabilities.chunks(8).zip(&expected) {
        let value = f64::from_le_bytes(bytes.try_into().unwrap());
        assert!((value - expected).abs() < 1e-5, "{value} against the reference {expected}");
    }
    assert_eq!(outputs[1]["parameters"]["binary_data_size"], rest.len(), "{answer}");
    let mut binary_bands = Vec::new();
    while let Some((length, after)) = rest.split_first_chunk::<4>() {
        let (band, after) = after.split_at(u32::from_le_bytes(*length) as usize);
        binary_bands.push(json!(std::str::from_utf8(band).unwrap()));
        rest = after;
    }
    assert_eq!(Value::Array(binary_bands), bands, "the bands as the JSON answer gave them");
    // Only the outputs asked for in binary are; the others stay JSON.
    let header = json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32",
                    "parameters": {"binary_data_size": tensor.len()}}],
        "outputs": [{"name": "probability", "parameters": {"binary_data": true}}, {"name": "risk_band"}],
    });
    let response = binary_body(&header, &tensor).await.unwrap();
    let json_length: usize = response.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let body = response.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&body[..json_length]).unwrap();
    assert_eq!((body.len() - json_length, &answer["outputs"][1]["data"]), (rows.len() * 8, &bands), "{answer}");
    // Bytes that do not match what the JSON says they are.
    let header = json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32",
                    "parameters": {"binary_data_size": tensor.len() + 4}}],
    });
    let problem = assert_problem(binary_body(&header, &tensor).await.unwrap(), 400).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("binary_data_size must be a whole number of bytes"),
        "{problem}"
    );
    let header = json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32",
                    "parameters": {"binary_data_size": tensor.len() - 2}}],
    });
    let problem = assert_problem(binary_body(&header, &tensor).await.unwrap(), 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("are not whole FP32 elements"), "{problem}");
    let header = json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32",
                    "parameters": {"binary_data_size": tensor.len() - 4}}],
    });
    let problem = assert_problem(binary_body(&header, &tensor).await.unwrap(), 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("4 bytes after its JSON"), "{problem}");

    // One row, flat, of the regressor, through its version's path, asking for its value only.
    let (rows, expected) = reference("diabetes-progression");
    let body = json!({
        "inputs": [{"name": "input", "shape": [10], "datatype": "FP64", "data": rows[0]}],
        "outputs": [{"name": "value"}],
    });
    let answer: Value =
        app.post("/v2/models/diabetes-progression/versions/1/infer", &key, &body).await.json().await.unwrap();
    assert_eq!(answer["outputs"].as_array().unwrap().len(), 1, "{answer}");
    let value = answer["outputs"][0]["data"][0].as_f64().unwrap();
    assert!((value - expected[0]).abs() < 1e-3, "{value} against the reference {}", expected[0]);
    assert!(answer.get("id").is_none(), "no id was given: {answer}");

    // Refusals, each a problem document naming what is wrong.
    let one_row =
        |data: Value| json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": data}]});
    let mut row: Vec<Value> = reference("breast-cancer").0[0].iter().map(|value| json!(value)).collect();
    let upstream_calls = || async {
        let metrics = app.get("/metrics", &app.admin_key).await.text().await.unwrap();
        metrics
            .lines()
            .filter(|line| line.starts_with("aigronova_gateway_upstream_calls_total{"))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let before = upstream_calls().await;
    let problem = assert_problem(app.post("/v2/models/heart/infer", &key, &one_row(json!(row))).await, 404).await;
    assert!(problem["detail"].as_str().unwrap().contains("no service serves model \"heart\""), "{problem}");
    assert_eq!(problem["error"], problem["detail"], "the protocol's clients read `error`");
    // Every service was asked, through its breaker; a model none serves is not asked about again
    // at once.
    let asked = upstream_calls().await;
    assert!(asked >= before + 2, "each service asked: {before} calls, then {asked}");
    assert_problem(app.post("/v2/models/heart/infer", &key, &one_row(json!(row))).await, 404).await;
    assert_eq!(upstream_calls().await, asked, "the services are not asked again");
    // A deadline that passes while the services are asked is a 504, as for any call.
    let hurried = app.client.post(app.url("/v2/models/lungs/infer")).bearer_auth(&key).header("grpc-timeout", "1n");
    let problem = assert_problem(hurried.json(&one_row(json!(row))).send().await.unwrap(), 504).await;
    assert!(problem["detail"].as_str().unwrap().contains("deadline passed"), "{problem}");
    row[1] = json!(-5);
    let problem =
        assert_problem(app.post("/v2/models/breast-cancer/infer", &key, &one_row(json!(row))).await, 400).await;
    assert_eq!(problem["field"], "inputs[0][0]", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("mean texture: -5 is below 0"), "{problem}");
    row[1] = json!("ten");
    let problem =
        assert_problem(app.post("/v2/models/breast-cancer/infer", &key, &one_row(json!(row))).await, 400).await;
    assert_eq!(problem["field"], "inputs[0].data[1]", "{problem}");
    let problem =
        assert_problem(app.post("/v2/models/breast-cancer/infer", &key, &json!({"inputz": []})).await, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("inputz"), "{problem}");
    let (two_rows, _) = reference("diabetes-progression");
    let shifted = json!([two_rows[0].iter().chain([&0.01]).collect::<Vec<_>>(), two_rows[1][..9].to_vec()]);
    let body = json!({"inputs": [{"name": "input", "shape": [2, 10], "datatype": "FP32", "data": shifted}]});
    let problem = assert_problem(app.post("/v2/models/diabetes-progression/infer", &key, &body).await, 400).await;
    assert_eq!(problem["field"], "inputs[0].data", "rows nested otherwise than the shape are not read: {problem}");
    let one = |extra: Value| {
        let mut body = json!({"inputs": [{"name": "input", "shape": [10], "datatype": "FP32", "data": two_rows[0]}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let path = "/v2/models/diabetes-progression/infer";
    let answered = app.post(path, &key, &one(json!({"model_name": "diabetes-progression"}))).await;
    assert_eq!(answered.status(), 200, "the path's model may be repeated in the body");
    let problem = assert_problem(app.post(path, &key, &one(json!({"model_name": "breast-cancer"}))).await, 400).await;
    assert_eq!(problem["field"], "model_name", "{problem}");
    let problem = assert_problem(app.post(path, &key, &one(json!({"id": "529.982.247-25"}))).await, 400).await;
    assert_eq!(problem["field"], "id", "no CPF in the audit log: {problem}");
    assert_problem(app.post(path, &key, &json!(["x", {}, [], []])).await, 400).await;
    // The JSON's length past the body's end.
    let binary = app.client.post(app.url(path)).bearer_auth(&key).header("Inference-Header-Content-Length", "100000");
    let problem = assert_problem(binary.json(&one(json!({}))).send().await.unwrap(), 400).await;
    assert_eq!(problem["field"], "Inference-Header-Content-Length", "{problem}");
    let with_body = app.client.get(app.url("/v2/models/breast-cancer/ready")).bearer_auth(&key).body("{}");
    assert_problem(with_body.send().await.unwrap(), 400).await;
    let zeros = vec![0; 300_000];
    let body = json!({"inputs": [{"name": "input", "shape": [10000, 30], "datatype": "FP32", "data": zeros}]});
    let problem = assert_problem(app.post("/v2/models/breast-cancer/infer", &key, &body).await, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("more than 262144 values"), "{problem}");
    let problem = assert_problem(app.get("/v2/models/breast-cancer/infer", &key).await, 405).await;
    assert_eq!(problem["error"], problem["detail"], "every problem of these routes has the member: {problem}");
    let reader = app.create_key(&tenant, &["models:read"]).await;
    let body = json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": reference("breast-cancer").0[0]}]});
    assert_problem(app.post("/v2/models/breast-cancer/infer", &reader, &body).await, 403).await;
    let stranger = app.create_key(&tenant, &["health:read", "health:write"]).await;
    assert_problem(app.get("/v2/models/breast-cancer", &stranger).await, 403).await;

    // The five inferences that ran (two of them in binary) are the tenant's decisions, and nothing
    // else was recorded.
    let entries = app.audited(&key, 5, |entry| entry["action"] == "inference.ModelInfer").await;
    assert!(entries.iter().all(|entry| entry["service"] == "healthquantum"), "{entries:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_the_protocols_rest_form_on_sqlite() {
    the_gateway_serves_the_protocols_rest_form(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_the_protocols_rest_form_on_postgres() {
    the_gateway_serves_the_protocols_rest_form(Backend::Postgres).await;
}
