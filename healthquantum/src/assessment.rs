//! Risk assessments: a patient's features scored by a clinical model, with the model's name and
//! version so that every decision can be traced to what made it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use aigronova_platform::{Error, inference::Model};
use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::patient::PatientId;

/// A request to assess a patient, with the model named but not yet looked up.
#[derive(Clone, Debug, PartialEq)]
pub struct AssessmentRequest {
    pub patient_id: PatientId,
    pub model: String,
    pub features: HashMap<String, f64>,
}

impl AssessmentRequest {
    pub fn parse(patient_id: &str, model: &str, features: HashMap<String, f64>) -> Result<Self, Error> {
        let patient_id = PatientId::parse("patientId", patient_id)?;
        if model.trim().is_empty() {
            return Err(Error::invalid("model", "is required"));
        }
        // Taken as written, as feature names are: a name with blanks around it names no model.
        Ok(Self { patient_id, model: model.to_owned(), features })
    }
}

/// Features that `model` accepts: every one present, none extra, each finite and in range.
#[derive(Clone, Debug)]
pub struct ModelInput {
    model: Arc<Model>,
    named: BTreeMap<String, f64>,
    row: Vec<f32>,
}

impl ModelInput {
    /// Checks `features` against `model`; errors name the field as `features.<feature name>`.
    pub fn validate(model: Arc<Model>, features: HashMap<String, f64>) -> Result<Self, Error> {
        let row = model.feature_vector(&features, "features")?;
        Ok(Self { model, named: features.into_iter().collect(), row })
    }

    /// The features in model order, as the model reads them.
    pub fn row(&self) -> &[f32] {
        &self.row
    }
}

/// One scored assessment.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub id: String,
    pub patient_id: PatientId,
    pub model: String,
    pub model_version: String,
    /// The input, by feature name, as it was scored.
    pub features: BTreeMap<String, f64>,
    /// The model's output: the probability of its positive class, in [0, 1], for a classifier;
    /// the predicted value for a regressor.
    pub output: f64,
    /// True when `output` is a regressor's value.
    pub regression: bool,
    pub risk_band: String,
    /// The features that moved the output most, largest first, at most [`TOP_FEATURES`] and none
    /// that moved it not at all (see `Model::contributions`: an occlusion approximation, not SHAP).
    pub top_features: Vec<(String, f64)>,
    /// When the assessment was made, to the microsecond (what storage keeps).
    pub created_at: DateTime<Utc>,
}

/// How many contributing features an assessment reports.
pub const TOP_FEATURES: usize = 5;

/// Scores `input` for `patient_id`. Inference runs on the calling task: one row of these tree
/// models and its contributions take microseconds, less than a hand-off to the blocking pool and
/// back costs on a few cores (measured in `tests/benches/health.rs`).
pub fn assess(patient_id: PatientId, input: ModelInput) -> Result<Assessment, Error> {
    let ModelInput { model, named, row } = input;
    let (output, contributions) = model.predict_explained(&row)?;
    Ok(Assessment {
        id: Uuid::now_v7().to_string(),
        patient_id,
        model: model.name().to_owned(),
        model_version: model.version().to_owned(),
        features: named,
        output,
        regression: model.is_regression(),
        risk_band: model.risk_band(output).to_owned(),
        // A feature whose occlusion changes nothing moved nothing, and is not named.
        top_features: contributions
            .into_iter()
            .filter(|contribution| contribution.contribution != 0.0)
            .take(TOP_FEATURES)
            .map(|contribution| (contribution.feature, contribution.contribution))
            .collect(),
        created_at: Utc::now().trunc_subsecs(6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assessment_request_needs_a_patient_and_a_model() {
        let id = "0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b";
        let cases = [
            ("", "breast-cancer", "patientId"),
            ("nope", "breast-cancer", "patientId"),
            (id, "", "model"),
            (id, "  ", "model"),
        ];
        for (patient_id, model, expected) in cases {
            match AssessmentRequest::parse(patient_id, model, HashMap::new()) {
                Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, expected, "{patient_id:?} {model:?}"),
                other => panic!("expected an invalid {expected}, got {other:?}"),
            }
        }
    }
}
