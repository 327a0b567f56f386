//! Model inference with ONNX Runtime (`ort`, loaded dynamically from `libonnxruntime.so`).
//!
//! A model lives in `<models_dir>/<name>/<version>/` as `model.onnx` and `manifest.json`. Loading
//! checks the file's sha256 against the manifest, opens one session per model and core (a call
//! takes a free one instead of waiting for another call's), and warms each up with the training
//! means. Every call is timed into a Prometheus histogram.
//!
//! Contributions are occlusions: the output minus the output with one feature at its training
//! mean. For a tree ensemble that agrees with ONNX Runtime on probe rows at load time (see
//! [`trees`]) they come from walking its trees; for any other model, from scoring a copy of the
//! row per feature in one batch. [`Model::predict_substituted`] generalises them: each feature at
//! each of a list of values (what a service finds a feature's most favourable value with).

mod trees;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock, PoisonError, TryLockError},
    time::Instant,
};

use ort::{
    environment::Environment,
    session::{Session, builder::GraphOptimizationLevel},
    value::Tensor,
};
use prometheus::{HistogramOpts, HistogramVec};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::Status;

use aigronova_proto::aigronova::common::v1::{self as proto, ModelCard, ModelFeature};

use crate::config::InferenceConfig;

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "ONNX Runtime library not found: set inference.ort_dylib_path or ORT_DYLIB_PATH (`make onnxruntime` fetches it)"
    )]
    RuntimeMissing,
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    RuntimeLoad { path: PathBuf, reason: String },
    #[error(
        "model {name}: no version found under {dir}; set inference.models_dir (AIGRONOVA__INFERENCE__MODELS_DIR) to \
         the repository's models folder"
    )]
    NoVersion { name: String, dir: PathBuf },
    #[error("model {path}: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("model {path}: sha256 is {actual} but the manifest says {expected}; refusing to load it")]
    ChecksumMismatch { path: PathBuf, expected: String, actual: String },
    #[error("unknown model {name:?}; this service serves {}", known.join(", "))]
    UnknownModel { name: String, known: Vec<String> },
    #[error("{field}: {reason}")]
    InvalidFeature { field: String, reason: String },
    #[error("inference failed: {0}")]
    Runtime(String),
}

impl InferenceError {
    /// Whether the error is the configuration's: no ONNX Runtime where it says, or no model where
    /// it says (rather than a model file that is damaged).
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::RuntimeMissing | Self::RuntimeLoad { .. } | Self::NoVersion { .. })
    }
}

impl From<InferenceError> for Status {
    fn from(error: InferenceError) -> Self {
        match &error {
            InferenceError::UnknownModel { name, known } => crate::error::invalid_argument(
                "model",
                &format!("unknown model {name:?}; this service serves {}", known.join(", ")),
            ),
            InferenceError::InvalidFeature { field, reason } => crate::error::invalid_argument(field, reason),
            InferenceError::RuntimeMissing
            | InferenceError::RuntimeLoad { .. }
            | InferenceError::NoVersion { .. }
            | InferenceError::BadManifest { .. }
            | InferenceError::ChecksumMismatch { .. }
            | InferenceError::Runtime(_) => crate::error::internal(&error),
        }
    }
}

/// `manifest.json`: the model card and everything the platform needs to feed the model.
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub task: String,
    pub description: String,
    pub file: String,
    pub sha256: String,
    pub input: TensorSpec,
    pub outputs: BTreeMap<String, String>,
    pub positive_class: String,
    pub features: Vec<Feature>,
    pub risk_bands: Vec<RiskBand>,
    pub metrics: BTreeMap<String, f64>,
    pub training_data: TrainingData,
    pub intended_use: String,
    pub limitations: String,
}

impl Manifest {
    /// The band `output` falls in: the first whose upper bound it is below, else the last.
    pub fn risk_band(&self, output: f64) -> &str {
        self.risk_bands
            .iter()
            .find(|band| output < band.upper)
            .or(self.risk_bands.last())
            .map_or("unknown", |band| band.name.as_str())
    }
}

/// Where the training data came from, and under which licence.
#[derive(Clone, Debug, Deserialize)]
pub struct TrainingData {
    pub source: String,
    pub licence: String,
    pub rows: i64,
    pub split: String,
    pub synthetic: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
}

/// One input feature, in model order, with its accepted range and drift baseline.
#[derive(Clone, Debug, Deserialize)]
pub struct Feature {
    pub name: String,
    pub min: f64,
    pub max: f64,
    pub training_mean: f64,
    /// Strictly increasing; the first and last bound the training range (see
    /// [`crate::monitoring::bin_of`]).
    pub bin_edges: Vec<f64>,
    /// Each bin's share of the training rows; a manifest without them is taken to have bins of
    /// equal shares, as quantile bins have when no quantile repeats.
    #[serde(default)]
    pub bin_shares: Vec<f64>,
}

impl Feature {
    /// How many bins drift is counted in.
    pub fn bins(&self) -> usize {
        self.bin_edges.len().saturating_sub(1).max(1)
    }

    /// The share of the training rows each bin held: the baseline of the drift index.
    pub fn expected_shares(&self) -> Vec<f64> {
        if self.bin_shares.is_empty() {
            let bins = self.bins();
            vec![1.0 / bins as f64; bins]
        } else {
            self.bin_shares.clone()
        }
    }

    /// Why the drift baseline cannot be used, if it cannot.
    fn baseline_error(&self) -> Option<String> {
        let name = &self.name;
        if self.bin_edges.iter().any(|edge| !edge.is_finite()) || self.bin_edges.windows(2).any(|w| w[0] >= w[1]) {
            return Some(format!("feature {name:?}: bin_edges must be finite and strictly increasing"));
        }
        if self.bin_shares.is_empty() {
            return None;
        }
        if self.bin_shares.len() != self.bins() {
            return Some(format!(
                "feature {name:?}: bin_shares has {} shares for {} bins",
                self.bin_shares.len(),
                self.bins()
            ));
        }
        let total: f64 = self.bin_shares.iter().sum();
        if self.bin_shares.iter().any(|share| !(0.0..=1.0).contains(share)) || (total - 1.0).abs() > 1e-6 {
            return Some(format!(
                "feature {name:?}: bin_shares must lie in [0, 1] and add up to 1 (they add up to {total:.6})"
            ));
        }
        None
    }
}

/// A probability below `upper` (and at or above the previous band's) falls in this band.
#[derive(Clone, Debug, Deserialize)]
pub struct RiskBand {
    pub name: String,
    pub upper: f64,
}

/// What a model answers, by its manifest's `outputs`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Output {
    /// A binary classifier's `[P(negative), P(positive)]` per row, from this output.
    Probabilities(String),
    /// A regressor's value per row, from this output.
    Value(String),
}

/// How much one feature moved a prediction (see [`Model::contributions`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    pub feature: String,
    /// The prediction minus the prediction with this feature at its training mean.
    pub contribution: f64,
}

/// What [`Model::predict_substituted`] gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Substituted {
    /// The model's output for the row, as ONNX Runtime gives it.
    pub prediction: f64,
    /// The row's output computed as `outputs` are (the trees walked, or the same batch), which
    /// they compare with.
    pub output: f64,
    /// For each feature in turn, the output with it at each of its alternatives.
    pub outputs: Vec<f64>,
}

/// A loaded model with its sessions, one per core.
pub struct Model {
    manifest: Manifest,
    sessions: Vec<Mutex<Session>>,
    output: Output,
    /// The model's trees, when they reproduce its output (contributions walk them).
    ensemble: Option<trees::Ensemble>,
    /// Each feature's training mean, in model order: what occlusion puts in its place.
    means: Vec<f32>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.manifest.name).field("version", &self.manifest.version).finish()
    }
}

impl Model {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model card, as every service publishes it.
    pub fn card(&self) -> ModelCard {
        let manifest = &self.manifest;
        ModelCard {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            task: manifest.task.clone(),
            description: manifest.description.clone(),
            positive_class: manifest.positive_class.clone(),
            features: manifest
                .features
                .iter()
                .map(|feature| ModelFeature { name: feature.name.clone(), min: feature.min, max: feature.max })
                .collect(),
            metrics: manifest.metrics.iter().map(|(name, value)| (name.clone(), *value)).collect(),
            training_data: Some(proto::TrainingData {
                source: manifest.training_data.source.clone(),
                licence: manifest.training_data.licence.clone(),
                rows: manifest.training_data.rows,
                split: manifest.training_data.split.clone(),
                synthetic: manifest.training_data.synthetic,
            }),
            intended_use: manifest.intended_use.clone(),
            limitations: manifest.limitations.clone(),
            sha256: manifest.sha256.clone(),
            risk_bands: manifest
                .risk_bands
                .iter()
                .map(|band| proto::RiskBand { name: band.name.clone(), upper: band.upper })
                .collect(),
        }
    }

    /// Orders named features as the model expects them, refusing missing, extra, non-finite and
    /// out-of-range values; errors name the field as `<prefix>.<feature>`.
    pub fn feature_vector(&self, features: &HashMap<String, f64>, prefix: &str) -> Result<Vec<f32>, InferenceError> {
        let invalid =
            |name: &str, reason: String| InferenceError::InvalidFeature { field: format!("{prefix}.{name}"), reason };
        let mut unknown: Vec<&String> =
            features.keys().filter(|name| !self.manifest.features.iter().any(|f| &f.name == *name)).collect();
        unknown.sort();
        if let Some(name) = unknown.first() {
            return Err(invalid(name, format!("is not a feature of model {}", self.manifest.name)));
        }
        // Every missing feature named at once, so that a caller mends them in one go.
        let missing: Vec<&str> = self
            .manifest
            .features
            .iter()
            .map(|feature| feature.name.as_str())
            .filter(|name| !features.contains_key(*name))
            .collect();
        if let Some((first, others)) = missing.split_first() {
            let reason = match others {
                [] => "is required".to_owned(),
                [other] => format!("is required, and so is {other}"),
                _ => format!("is required, and so are the {} others missing: {}", others.len(), others.join(", ")),
            };
            return Err(invalid(first, reason));
        }
        self.manifest
            .features
            .iter()
            .map(|feature| {
                self.check_value(feature, features[&feature.name]).map_err(|reason| invalid(&feature.name, reason))
            })
            .collect()
    }

    /// `value` as the model takes it for `feature`, or why it does not: not a finite number, or
    /// outside the range the model takes.
    pub fn check_value(&self, feature: &Feature, value: f64) -> Result<f32, String> {
        if !value.is_finite() {
            return Err("must be a finite number".into());
        }
        let model = &self.manifest.name;
        if value < feature.min {
            return Err(format!("{} is below {}, the least model {model} takes", shown(value), feature.min));
        }
        if value > feature.max {
            return Err(format!("{} is above {}, the most model {model} takes", shown(value), feature.max));
        }
        Ok(value as f32)
    }

    /// [`Self::predict`] for each of `rows`, in one run of the model.
    pub fn predict_rows(&self, rows: &[Vec<f32>]) -> Result<Vec<f64>, InferenceError> {
        self.timed(|| self.run(rows))
    }

    /// True for a regressor (the output is a value, not a probability).
    pub fn is_regression(&self) -> bool {
        matches!(self.output, Output::Value(_))
    }

    /// The model's output for one row: the probability of the positive class for a classifier,
    /// the predicted value for a regressor.
    pub fn predict(&self, row: &[f32]) -> Result<f64, InferenceError> {
        self.timed(|| self.first_output(row))
    }

    /// `call`, timed into the latency histogram under its outcome.
    fn timed<T>(&self, call: impl FnOnce() -> Result<T, InferenceError>) -> Result<T, InferenceError> {
        let started = Instant::now();
        let result = call();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        latency_histogram()
            .with_label_values(&[&self.manifest.name, &self.manifest.version, outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// ONNX Runtime's output for `row` alone.
    fn first_output(&self, row: &[f32]) -> Result<f64, InferenceError> {
        self.run(&[row.to_vec()])
            .and_then(|outputs| outputs.first().copied().ok_or_else(|| InferenceError::Runtime("empty output".into())))
    }

    /// The probability of the positive class for one row (a classifier's [`Self::predict`]).
    pub fn predict_probability(&self, row: &[f32]) -> Result<f64, InferenceError> {
        self.predict(row)
    }

    /// How much each feature moved the prediction for `row`, largest first: the prediction minus
    /// the prediction with that feature replaced by its training mean. An occlusion
    /// approximation of feature attribution (not SHAP): features that act together share their
    /// effect unevenly, and a value at the mean contributes nothing.
    pub fn contributions(&self, row: &[f32], prediction: f64) -> Result<Vec<Contribution>, InferenceError> {
        match &self.ensemble {
            Some(ensemble) => {
                let (output, occluded) = ensemble.substitutions(row, &self.mean_slices());
                Ok(self.contributions_from(output, &occluded))
            }
            None => self.scored_contributions(row, prediction),
        }
    }

    /// [`Self::contributions`] as ONNX Runtime scores them: every occluded copy of `row` in one
    /// batch. What a model without a readable tree ensemble uses, and what the trees must agree with.
    pub fn scored_contributions(&self, row: &[f32], prediction: f64) -> Result<Vec<Contribution>, InferenceError> {
        let outputs = self.run(&self.occluded_rows(row))?;
        Ok(self.contributions_from(prediction, &outputs))
    }

    /// Whether contributions come from walking the model's trees rather than from a batch of
    /// occluded rows.
    pub fn walks_trees(&self) -> bool {
        self.ensemble.is_some()
    }

    /// [`Self::predict`] and [`Self::contributions`] together. Without readable trees, the row
    /// and its occluded copies are scored in one batch (each row's output does not depend on the
    /// others in the batch).
    pub fn predict_explained(&self, row: &[f32]) -> Result<(f64, Vec<Contribution>), InferenceError> {
        self.timed(|| {
            let occluded = self.substituted(row, &self.mean_slices())?;
            Ok((occluded.prediction, self.contributions_from(occluded.output, &occluded.outputs)))
        })
    }

    /// The output for `row` as ONNX Runtime gives it and, for each feature in turn (in model
    /// order), the outputs with that feature alone at each of its `alternatives`, flattened in that
    /// order, beside the row's own output computed the same way: what a model's most favourable
    /// value of a feature is found with. Walks the trees when they reproduce the model, else scores
    /// the row and its copies in one ONNX Runtime batch.
    pub fn predict_substituted(&self, row: &[f32], alternatives: &[&[f32]]) -> Result<Substituted, InferenceError> {
        self.check_alternatives(row, alternatives)?;
        self.timed(|| self.substituted(row, alternatives))
    }

    /// The outputs of [`Self::predict_substituted`] alone, untimed and without the row's own
    /// prediction: a search among altered rows (the least favourable of a feature's values, say),
    /// which is no call of the model's of its own.
    pub fn substitution_outputs(&self, row: &[f32], alternatives: &[&[f32]]) -> Result<Vec<f64>, InferenceError> {
        self.check_alternatives(row, alternatives)?;
        match &self.ensemble {
            Some(ensemble) => Ok(ensemble.substitutions(row, alternatives).1),
            None => Ok(self.scored_substitutions(row, alternatives)?.outputs),
        }
    }

    /// Refuses `alternatives` that are not one list a feature, or a `row` of another length.
    fn check_alternatives(&self, row: &[f32], alternatives: &[&[f32]]) -> Result<(), InferenceError> {
        if alternatives.len() != self.manifest.features.len() || row.len() != alternatives.len() {
            return Err(InferenceError::Runtime(format!(
                "{} alternatives and {} values for a model of {} features",
                alternatives.len(),
                row.len(),
                self.manifest.features.len()
            )));
        }
        Ok(())
    }

    /// [`Self::predict_substituted`], untimed.
    fn substituted(&self, row: &[f32], alternatives: &[&[f32]]) -> Result<Substituted, InferenceError> {
        match &self.ensemble {
            // The prediction is ONNX Runtime's, as for any call; the alternatives are compared with
            // the walk's own output for the row, so that no difference of rounding between the two
            // reads as a feature's effect.
            Some(ensemble) => {
                let prediction = self.first_output(row)?;
                let (output, outputs) = ensemble.substitutions(row, alternatives);
                Ok(Substituted { prediction, output, outputs })
            }
            None => self.scored_substitutions(row, alternatives),
        }
    }

    /// [`Self::predict_substituted`] as ONNX Runtime scores it: the row and every copy in one batch.
    /// What a model without a readable tree ensemble uses, and what the trees must agree with.
    pub fn scored_substitutions(&self, row: &[f32], alternatives: &[&[f32]]) -> Result<Substituted, InferenceError> {
        let mut rows = vec![row.to_vec()];
        rows.extend(substituted_rows(row, alternatives));
        let outputs = self.run(&rows)?;
        match outputs.split_first() {
            Some((prediction, substituted)) => {
                Ok(Substituted { prediction: *prediction, output: *prediction, outputs: substituted.to_vec() })
            }
            None => Err(InferenceError::Runtime("empty output".into())),
        }
    }

    /// Each feature's training mean as its one alternative (occlusion).
    fn mean_slices(&self) -> Vec<&[f32]> {
        self.means.iter().map(std::slice::from_ref).collect()
    }

    /// `row` with each feature in turn at its training mean.
    fn occluded_rows(&self, row: &[f32]) -> Vec<Vec<f32>> {
        substituted_rows(row, &self.mean_slices())
    }

    /// The contributions, largest first, from the outputs of [`Self::occluded_rows`].
    fn contributions_from(&self, prediction: f64, occluded: &[f64]) -> Vec<Contribution> {
        let mut contributions: Vec<Contribution> = self
            .manifest
            .features
            .iter()
            .zip(occluded)
            .map(|(feature, occluded)| Contribution {
                feature: feature.name.clone(),
                contribution: prediction - occluded,
            })
            .collect();
        contributions.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        contributions
    }

    /// One output per row, in order, on a free session (or the first, when every one is busy).
    fn run(&self, rows: &[Vec<f32>]) -> Result<Vec<f64>, InferenceError> {
        let free = self.sessions.iter().find_map(|session| match session.try_lock() {
            Ok(session) => Some(session),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        });
        let mut session = free.unwrap_or_else(|| self.sessions[0].lock().unwrap_or_else(PoisonError::into_inner));
        self.run_on(&mut session, rows)
    }

    fn run_on(&self, session: &mut Session, rows: &[Vec<f32>]) -> Result<Vec<f64>, InferenceError> {
        let runtime = |error: ort::Error| InferenceError::Runtime(error.to_string());
        let width = self.manifest.features.len();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let input = Tensor::from_array(([rows.len(), width], flat)).map_err(runtime)?;
        let outputs = session.run(ort::inputs![self.manifest.input.name.as_str() => input]).map_err(runtime)?;
        let (name, per_row) = match &self.output {
            // Binary classifiers output [P(negative), P(positive)] per row.
            Output::Probabilities(name) => (name, 2),
            Output::Value(name) => (name, 1),
        };
        let tensor = outputs.get(name).ok_or_else(|| InferenceError::Runtime(format!("output {name} missing")))?;
        let (_, values) = tensor.try_extract_tensor::<f32>().map_err(runtime)?;
        if values.len() != rows.len() * per_row {
            return Err(InferenceError::Runtime(format!(
                "output {name} has {} values for {} rows",
                values.len(),
                rows.len()
            )));
        }
        Ok(values.chunks(per_row).map(|chunk| f64::from(chunk[per_row - 1])).collect())
    }

    /// The manifest's band for `probability`.
    pub fn risk_band(&self, probability: f64) -> &str {
        self.manifest.risk_band(probability)
    }
}

/// The models one service serves, by name.
#[derive(Clone, Debug, Default)]
pub struct ModelRegistry {
    models: HashMap<String, Arc<Model>>,
}

impl ModelRegistry {
    /// Loads the newest version of each named model.
    pub fn load(config: &InferenceConfig, names: &[&str]) -> Result<Self, InferenceError> {
        let environment = environment(config)?;
        let mut models = HashMap::new();
        for name in names {
            let dir = newest_version(&config.models_dir.join(name))?;
            let model = load_model(environment, &dir, config.intra_threads)?;
            tracing::info!(model = %model.name(), version = %model.version(), "model loaded");
            models.insert((*name).to_owned(), Arc::new(model));
        }
        Ok(Self { models })
    }

    pub fn get(&self, name: &str) -> Result<Arc<Model>, InferenceError> {
        self.models.get(name).cloned().ok_or_else(|| {
            let mut known: Vec<String> = self.models.keys().cloned().collect();
            known.sort();
            InferenceError::UnknownModel { name: name.to_owned(), known }
        })
    }

    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    /// The model cards, by name and version.
    pub fn cards(&self) -> Vec<ModelCard> {
        let mut cards: Vec<ModelCard> = self.models().map(|model| model.card()).collect();
        cards.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        cards
    }
}

/// Reads and checks a model folder without opening a session: the manifest must parse and the
/// file's sha256 must match it.
pub fn read_manifest(dir: &Path) -> Result<Manifest, InferenceError> {
    read_model(dir).map(|(manifest, _)| manifest)
}

/// [`read_manifest`], with the checked model file's bytes.
fn read_model(dir: &Path) -> Result<(Manifest, Vec<u8>), InferenceError> {
    let manifest_path = dir.join("manifest.json");
    let bad = |reason: String| InferenceError::BadManifest { path: manifest_path.clone(), reason };
    let text = std::fs::read_to_string(&manifest_path).map_err(|error| bad(error.to_string()))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|error| bad(error.to_string()))?;
    if manifest.features.is_empty() || manifest.risk_bands.is_empty() {
        return Err(bad("features and risk_bands must not be empty".into()));
    }
    if let Some(reason) = manifest.features.iter().find_map(Feature::baseline_error) {
        return Err(bad(reason));
    }
    let model_path = dir.join(&manifest.file);
    let bytes = std::fs::read(&model_path)
        .map_err(|error| InferenceError::BadManifest { path: model_path.clone(), reason: error.to_string() })?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if !actual.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(InferenceError::ChecksumMismatch { path: model_path, expected: manifest.sha256, actual });
    }
    Ok((manifest, bytes))
}

fn load_model(environment: &Environment, dir: &Path, intra_threads: usize) -> Result<Model, InferenceError> {
    // Read once: the bytes that were checked are the ones every session and the trees come from.
    let (manifest, bytes) = read_model(dir)?;
    let bad = |reason: String| InferenceError::BadManifest { path: dir.to_path_buf(), reason };
    let output = match (manifest.outputs.get("probabilities"), manifest.outputs.get("value")) {
        (Some(name), _) => Output::Probabilities(name.clone()),
        (None, Some(name)) => Output::Value(name.clone()),
        (None, None) => {
            return Err(bad("outputs must name `probabilities` (a classifier) or `value` (a regressor)".into()));
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let sessions = (0..cores)
        .map(|_| open_session(environment, &bytes, intra_threads).map(Mutex::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad(format!("ONNX Runtime cannot open the model: {error}")))?;
    let means = manifest.features.iter().map(|feature| feature.training_mean as f32).collect();
    let mut model = Model { manifest, sessions, output, ensemble: None, means };
    for session in &model.sessions {
        let mut session = session.lock().unwrap_or_else(PoisonError::into_inner);
        model.run_on(&mut session, std::slice::from_ref(&model.means))?;
    }
    match trees::Ensemble::read(&bytes, model.manifest.features.len()) {
        Ok(ensemble) => match model.disagreement(&ensemble)? {
            None => model.ensemble = Some(ensemble),
            Some(reason) => {
                tracing::warn!(model = %model.name(), %reason, "the trees do not reproduce the model; contributions score a batch");
            }
        },
        Err(reason) => {
            tracing::info!(model = %model.name(), %reason, "not a readable tree ensemble; contributions score a batch");
        }
    }
    Ok(model)
}

impl Model {
    /// Where `ensemble` and ONNX Runtime disagree by more than 1e-5 (relative, for outputs
    /// above one) on the probe rows: the training means, and each feature in turn at its minimum
    /// and at its maximum.
    fn disagreement(&self, ensemble: &trees::Ensemble) -> Result<Option<String>, InferenceError> {
        let mut probes = vec![self.means.clone()];
        for (index, feature) in self.manifest.features.iter().enumerate() {
            for value in [feature.min, feature.max] {
                let mut probe = self.means.clone();
                probe[index] = value as f32;
                probes.push(probe);
            }
        }
        let scored = self.run(&probes)?;
        Ok(probes.iter().zip(scored).find_map(|(probe, scored)| {
            let walked = ensemble.predict(probe);
            ((walked - scored).abs() > 1e-5 * scored.abs().max(1.0))
                .then(|| format!("{walked} against {scored} for {probe:?}"))
        }))
    }
}

/// Copies of `row`, one per feature and alternative value, in feature order.
fn substituted_rows(row: &[f32], alternatives: &[&[f32]]) -> Vec<Vec<f32>> {
    let mut rows = Vec::with_capacity(alternatives.iter().map(|values| values.len()).sum());
    for (index, values) in alternatives.iter().enumerate() {
        for value in *values {
            let mut copy = row.to_vec();
            copy[index] = *value;
            rows.push(copy);
        }
    }
    rows
}

fn open_session(environment: &Environment, model: &[u8], intra_threads: usize) -> Result<Session, ort::Error> {
    let mut builder = Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(intra_threads)?;
    builder.commit_from_memory(model)
}

/// The highest version folder under `model_dir` (numeric versions compare as numbers).
fn newest_version(model_dir: &Path) -> Result<PathBuf, InferenceError> {
    let no_version = || InferenceError::NoVersion {
        name: model_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        // Absolute, as a relative `models_dir` is read from the working directory.
        dir: std::path::absolute(model_dir).unwrap_or_else(|_| model_dir.to_path_buf()),
    };
    let entries = std::fs::read_dir(model_dir).map_err(|_| no_version())?;
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("manifest.json").is_file())
        .map(|entry| entry.path())
        .max_by_key(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name.parse::<u64>().unwrap_or(0), name)
        })
        .ok_or_else(no_version)
}

/// ONNX Runtime allows one environment per process; every service of `aigronova up` shares it.
fn environment(config: &InferenceConfig) -> Result<&'static Environment, InferenceError> {
    static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    if let Some(environment) = ENVIRONMENT.get() {
        return Ok(environment);
    }
    let _guard = INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(environment) = ENVIRONMENT.get() {
        return Ok(environment);
    }
    let path = config
        .ort_dylib_path
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .ok_or(InferenceError::RuntimeMissing)?;
    if !path.is_file() {
        return Err(InferenceError::RuntimeLoad { path, reason: "no such file".into() });
    }
    let load_error = |reason: String| InferenceError::RuntimeLoad { path: path.clone(), reason };
    let environment = ort::init_from(&path)
        .map_err(|error| load_error(error.to_string()))?
        .with_name("aigronova")
        // Microsoft's builds of ONNX Runtime, the one the Makefile fetches among them, queue usage
        // telemetry for Microsoft by default. `ORT_DISABLE_TELEMETRY=1`, which the `aigronova`
        // binary sets for itself, turns all of it off before the runtime loads; this switch stops
        // the events of sessions and runs where the variable was left out.
        .with_telemetry(false)
        .build()
        .map_err(|error| load_error(error.to_string()))?;
    Ok(ENVIRONMENT.get_or_init(|| environment))
}

/// Inference latency per model, version and outcome.
pub fn latency_histogram() -> &'static HistogramVec {
    static HISTOGRAM: OnceLock<HistogramVec> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        let histogram = HistogramVec::new(
            HistogramOpts::new("aigronova_inference_duration_seconds", "Model inference latency")
                .buckets(vec![0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5]),
            &["model", "version", "outcome"],
        )
        .expect("valid histogram options");
        if let Err(error) = prometheus::register(Box::new(histogram.clone())) {
            tracing::warn!(%error, "inference histogram not registered");
        }
        histogram
    })
}

/// A number as a refusal quotes it: in scientific notation when very large or very small, so that
/// `1e308` is not written out in 309 digits.
fn shown(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e15).contains(&magnitude) { format!("{value:e}") } else { format!("{value}") }
}
