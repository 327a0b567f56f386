//! What the model benchmarks share: the Python FastAPI + onnxruntime service they compare with,
//! and their report.

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    pin::Pin,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aigronova_e2e::models_dir;
use aigronova_platform::{
    config::InferenceConfig,
    inference::{Manifest, Model, ModelRegistry},
};
use serde_json::Value;

use crate::common::{Run, drive, print, repeat};

/// The Python service (`benches/python/service.py`) scoring `model`: one uvicorn process per core,
/// each on a port of its own, which [`python_call`] calls in turn, as a balancer in front of
/// replicas would. (The workers of one uvicorn process each keep the connections they accepted,
/// which the kernel shares out as they come: 8 and 1, 8 and 1, 7 and 2 in three runs of this
/// benchmark's 8 connections and its start check, so that one core did most of the work.) Stopped
/// when dropped: SIGTERM first, then SIGKILL.
pub(crate) struct PythonService {
    processes: Vec<std::process::Child>,
    pub(crate) urls: Vec<String>,
}

impl PythonService {
    /// Starts the service and waits until each process answers `body` (returning the first answer).
    pub(crate) async fn start(model: &str, body: &str) -> (Self, Value) {
        let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python"));
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let mut service = Self { processes: Vec::new(), urls: Vec::new() };
        for _ in 0..cores {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new(&python)
                .arg("service.py")
                .env("BENCH_MODELS_DIR", models_dir())
                .env("BENCH_MODEL", model)
                .arg(port.to_string())
                .arg("1")
                .current_dir(&script)
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("cannot start the Python service with {python} ({error}); run `make bench`")
                });
            service.processes.push(child);
            service.urls.push(format!("http://127.0.0.1:{port}/score"));
        }
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        for url in &service.urls {
            answers.push(answer_when_up(&client, url, body).await);
        }
        (service, answers.swap_remove(0))
    }
}

/// The answer of the Python service at `url` to `body`, once it answers (within 20 s).
async fn answer_when_up(client: &reqwest::Client, url: &str, body: &str) -> Value {
    for _ in 0..100 {
        let sent = client.post(url).header("content-type", "application/json").body(body.to_owned()).send().await;
        if let Ok(response) = sent
            && let Ok(answer) = response.json::<Value>().await
        {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the Python service did not answer on {url} (are fastapi, uvicorn and onnxruntime installed?)")
}

impl Drop for PythonService {
    fn drop(&mut self) {
        for child in &self.processes {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for child in &mut self.processes {
            while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The first held-out row of `model`'s `reference.json` (`features` by name, and the outputs).
pub(crate) fn first_reference_row(model: &str) -> Value {
    let path = models_dir().join(model).join("1/reference.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("reference.json")).unwrap();
    reference["rows"][0].clone()
}

/// The floor: `model` scoring `features` with ONNX Runtime alone, on the calling task as the
/// services call it.
pub(crate) async fn drive_raw(model: &str, features: &Value, concurrency: usize, seconds: Duration) -> Run {
    let models =
        ModelRegistry::load(&InferenceConfig { models_dir: models_dir(), ..InferenceConfig::default() }, &[model])
            .expect("the model loads (is ORT_DYLIB_PATH set?)");
    let model = models.get(model).unwrap();
    let named: HashMap<String, f64> = serde_json::from_value(features.clone()).unwrap();
    let row = Arc::new(model.feature_vector(&named, "features").unwrap());
    drive("raw ONNX Runtime call", concurrency, seconds, move || {
        let (model, row) = (model.clone(), row.clone());
        async move { model.predict(&row).is_ok() }
    })
    .await
}

/// How a service explains a model's output.
#[derive(Clone, Copy)]
#[allow(dead_code, reason = "each model benchmark constructs the one its service uses")]
pub(crate) enum Explanation {
    /// Occlusion contributions (HealthQuantum's assessments).
    Contributions,
    /// Each feature at each of the values this gives for the row (FinQuantum's reasons, which
    /// look for each feature's most favourable value).
    Alternatives(fn(&Manifest, &[f32]) -> Vec<Vec<f32>>),
}

/// The two ways of explaining `model`'s output for `features` as `explanation` says, in process:
/// by walking the trees (what the services do), and by scoring the row with its altered copies in
/// one ONNX Runtime batch (what a model without readable trees does).
pub(crate) async fn drive_explanations(
    model: &str,
    features: &Value,
    explanation: Explanation,
    concurrency: usize,
    seconds: Duration,
) -> (Run, Run) {
    let models =
        ModelRegistry::load(&InferenceConfig { models_dir: models_dir(), ..InferenceConfig::default() }, &[model])
            .expect("the model loads (is ORT_DYLIB_PATH set?)");
    let model = models.get(model).unwrap();
    assert!(model.walks_trees(), "{} is read as a tree ensemble", model.name());
    let named: HashMap<String, f64> = serde_json::from_value(features.clone()).unwrap();
    let row = Arc::new(model.feature_vector(&named, "features").unwrap());
    // Each call makes its alternatives, as a service's does.
    let explain = move |model: &Model, row: &[f32], walked: bool| match explanation {
        Explanation::Contributions if walked => model.predict_explained(row).is_ok(),
        Explanation::Contributions => {
            model.predict(row).and_then(|output| model.scored_contributions(row, output)).is_ok()
        }
        Explanation::Alternatives(of) => {
            let alternatives = of(model.manifest(), row);
            let slices: Vec<&[f32]> = alternatives.iter().map(Vec::as_slice).collect();
            if walked {
                model.predict_substituted(row, &slices).is_ok()
            } else {
                model.scored_substitutions(row, &slices).is_ok()
            }
        }
    };
    let (walked_label, scored_label) = match explanation {
        Explanation::Contributions => {
            ("output and contributions, trees walked", "output and contributions, one batch scored")
        }
        Explanation::Alternatives(_) => {
            ("output and alternatives, trees walked", "output and alternatives, one batch scored")
        }
    };
    let walked = drive(walked_label, concurrency, seconds, {
        let (model, row) = (model.clone(), row.clone());
        move || {
            let (model, row) = (model.clone(), row.clone());
            async move { explain(&model, &row, true) }
        }
    })
    .await;
    let scored = drive(scored_label, concurrency, seconds, move || {
        let (model, row) = (model.clone(), row.clone());
        async move { explain(&model, &row, false) }
    })
    .await;
    (walked, scored)
}

/// The Python service's side of the comparison: `service` answering `body` as fast as
/// `concurrency` callers ask, for `seconds`.
/// What the Python service's calls are counted as.
pub(crate) const PYTHON: &str = "Python FastAPI + onnxruntime";

/// A call of the Python service with `body`, to each of its processes in turn.
pub(crate) fn python_call(
    service: &PythonService,
    body: String,
) -> impl Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + Sync + 'static + use<> {
    let client = reqwest::Client::new();
    let calls: Arc<Vec<_>> =
        Arc::new(service.urls.iter().map(|url| repeat(client.clone(), url, None, Some(body.clone()))).collect());
    let next = Arc::new(AtomicUsize::new(0));
    move || calls[next.fetch_add(1, Ordering::Relaxed) % calls.len()]()
}

/// The three runs as a table, then the platform against the Python service and the raw call;
/// `unit` names what is counted (`assessments`, `scores`).
pub(crate) fn report(unit: &str, raw: &Run, platform: &Run, python: &Run, concurrency: usize) {
    print(unit, &[raw, platform, python]);
    println!();
    println!(
        "the platform makes {:.1}x the Python service's {unit} per second at {concurrency} in flight; its p50 is \
         {:.3} ms above the raw call",
        platform.rps() / python.rps(),
        (platform.percentile(0.5).as_secs_f64() - raw.percentile(0.5).as_secs_f64()) * 1000.0
    );
}
