//! The model loader against the committed models, with ONNX Runtime for real.

use std::{collections::HashMap, path::PathBuf};

use aigronova_platform::{
    config::InferenceConfig,
    inference::{InferenceError, ModelRegistry, read_manifest},
};

fn models_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
}

fn config(models_dir: PathBuf) -> InferenceConfig {
    assert!(std::env::var_os("ORT_DYLIB_PATH").is_some(), "ORT_DYLIB_PATH is not set: run the tests with `make test`");
    InferenceConfig { models_dir, ..InferenceConfig::default() }
}

/// A copy of the breast-cancer model folder whose `model.onnx` has one byte changed.
fn tampered_copy() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("breast-cancer/1");
    std::fs::create_dir_all(&target).unwrap();
    let source = models_dir().join("breast-cancer/1");
    std::fs::copy(source.join("manifest.json"), target.join("manifest.json")).unwrap();
    let mut model = std::fs::read(source.join("model.onnx")).unwrap();
    let last = model.len() - 1;
    model[last] ^= 0xff;
    std::fs::write(target.join("model.onnx"), model).unwrap();
    root
}

#[test]
fn the_loader_refuses_a_model_whose_sha256_does_not_match_its_manifest() {
    let root = tampered_copy();
    let error = ModelRegistry::load(&config(root.path().to_path_buf()), &["breast-cancer"]).unwrap_err();
    assert!(matches!(error, InferenceError::ChecksumMismatch { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("sha256") && message.contains("refusing to load"), "{message}");
    assert!(matches!(
        read_manifest(&root.path().join("breast-cancer/1")),
        Err(InferenceError::ChecksumMismatch { .. })
    ));
}

#[test]
fn every_committed_model_loads_and_reproduces_its_python_reference() {
    let names = ["breast-cancer", "diabetes-progression", "credit-risk"];
    let registry = ModelRegistry::load(&config(models_dir()), &names).unwrap();
    for name in names {
        let model = registry.get(name).unwrap();
        assert_eq!(model.version(), "1");
        let path = models_dir().join(format!("{name}/1/reference.json"));
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rows = reference["rows"].as_array().unwrap();
        assert!(rows.len() >= 3, "{name}");
        for row in rows {
            let features: HashMap<String, f64> = serde_json::from_value(row["features"].clone()).unwrap();
            let vector = model.feature_vector(&features, "features").unwrap();
            let output = model.predict(&vector).unwrap();
            let expected = row.get("probability").or(row.get("value")).and_then(serde_json::Value::as_f64).unwrap();
            assert!((output - expected).abs() < 1e-5, "{name}: {output} vs {expected}");
            let (explained, contributions) = model.predict_explained(&vector).unwrap();
            assert_eq!(explained, output, "{name}");
            assert_eq!(contributions, model.contributions(&vector, output).unwrap(), "{name}");
            // Walking the trees gives what ONNX Runtime gives for the occluded rows.
            assert!(model.walks_trees(), "{name}");
            let scored: HashMap<String, f64> = model
                .scored_contributions(&vector, output)
                .unwrap()
                .into_iter()
                .map(|contribution| (contribution.feature, contribution.contribution))
                .collect();
            assert_eq!(contributions.len(), scored.len(), "{name}");
            assert!(contributions.iter().any(|contribution| contribution.contribution.abs() > 1e-3), "{name}");
            for contribution in &contributions {
                let expected = scored[&contribution.feature];
                let tolerance = 1e-5 * expected.abs().max(output.abs()).max(1.0);
                assert!(
                    (contribution.contribution - expected).abs() <= tolerance,
                    "{name} {}: walked {} against scored {expected}",
                    contribution.feature,
                    contribution.contribution
                );
            }
            assert_eq!(model.is_regression(), row.get("value").is_some(), "{name}");
        }
    }
}

#[test]
fn an_unknown_model_name_is_reported() {
    let registry = ModelRegistry::load(&config(models_dir()), &["breast-cancer"]).unwrap();
    let Err(unknown) = registry.get("nope") else { panic!("no model is named nope") };
    assert!(matches!(&unknown, InferenceError::UnknownModel { name, .. } if name == "nope"));
    assert!(unknown.to_string().contains("breast-cancer"), "the error names the models served: {unknown}");
    let missing = ModelRegistry::load(&config(models_dir()), &["no-such-model"]).unwrap_err();
    assert!(matches!(missing, InferenceError::NoVersion { .. }), "{missing:?}");
}
