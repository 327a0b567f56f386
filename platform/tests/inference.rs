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
            // Each feature at each of its bin edges: the walked trees and the scored batch agree.
            let edges: Vec<Vec<f32>> = model
                .manifest()
                .features
                .iter()
                .map(|feature| feature.bin_edges.iter().map(|edge| *edge as f32).collect())
                .collect();
            let alternatives: Vec<&[f32]> = edges.iter().map(Vec::as_slice).collect();
            let walked = model.predict_substituted(&vector, &alternatives).unwrap();
            let scored = model.scored_substitutions(&vector, &alternatives).unwrap();
            // The outputs alone, without the row's prediction, are ONNX Runtime's too.
            let alone = model.substitution_outputs(&vector, &alternatives).unwrap();
            assert_eq!(alone.len(), scored.outputs.len(), "{name}");
            for (alone, scored) in alone.iter().zip(&scored.outputs) {
                assert!((alone - scored).abs() <= 1e-5 * scored.abs().max(1.0), "{name}: {alone} against {scored}");
            }
            // The prediction is ONNX Runtime's either way; the walk's own output agrees with it.
            assert_eq!((walked.prediction, scored.prediction, scored.output), (output, output, output), "{name}");
            assert!((walked.output - output).abs() <= 1e-5 * output.abs().max(1.0), "{name}");
            let (walked, scored) = (walked.outputs, scored.outputs);
            assert_eq!(walked.len(), edges.iter().map(Vec::len).sum::<usize>(), "{name}");
            assert_eq!(walked.len(), scored.len(), "{name}");
            for (walked, scored) in walked.iter().zip(&scored) {
                assert!((walked - scored).abs() <= 1e-5 * scored.abs().max(1.0), "{name}: {walked} against {scored}");
            }
            assert!(walked.iter().any(|value| (value - output).abs() > 1e-3), "{name}: some edge moves the output");
            assert_eq!(model.is_regression(), row.get("value").is_some(), "{name}");
        }
        let model = registry.get(name).unwrap();
        let error = model.predict_substituted(&[0.0], &[&[1.0]]).unwrap_err();
        assert!(error.to_string().contains("features"), "{name}: {error}");
        let error = model.substitution_outputs(&[0.0], &[&[1.0]]).unwrap_err();
        assert!(error.to_string().contains("features"), "{name}: {error}");
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

#[test]
fn every_committed_feature_has_its_training_shares_and_a_flag_has_two_bins() {
    for name in ["breast-cancer", "diabetes-progression", "credit-risk"] {
        let manifest = read_manifest(&models_dir().join(name).join("1")).unwrap();
        for feature in &manifest.features {
            assert_eq!(feature.bin_shares.len(), feature.bins(), "{name} {}", feature.name);
            let total: f64 = feature.expected_shares().iter().sum();
            assert!((total - 1.0).abs() < 1e-6, "{name} {}: {total}", feature.name);
        }
    }
    let credit = read_manifest(&models_dir().join("credit-risk/1")).unwrap();
    let housing = credit.features.iter().find(|feature| feature.name == "housing_own").unwrap();
    assert_eq!(housing.bins(), 2, "{:?}", housing.bin_edges);
    assert!(
        (housing.bin_shares[0] - 0.5).abs() > 0.05,
        "a flag's shares are its own, not halves: {:?}",
        housing.bin_shares
    );
}

#[test]
fn the_loader_refuses_a_drift_baseline_that_does_not_fit_its_bins() {
    let source = models_dir().join("breast-cancer/1");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("manifest.json")).unwrap()).unwrap();
    type Change = fn(&mut serde_json::Value);
    let cases: [(&str, Change, &str); 3] = [
        ("too few shares", |feature| feature["bin_shares"] = serde_json::json!([0.5, 0.5]), "2 shares for 10 bins"),
        (
            "shares adding up to 2",
            |feature| feature["bin_shares"] = serde_json::json!(vec![0.2; 10]),
            "add up to 1 (they add up to 2.0",
        ),
        ("edges out of order", |feature| feature["bin_edges"][1] = serde_json::json!(1e9), "strictly increasing"),
    ];
    for (case, change, reason) in cases {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("breast-cancer/1");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(source.join("model.onnx"), target.join("model.onnx")).unwrap();
        let mut changed = manifest.clone();
        change(&mut changed["features"][0]);
        std::fs::write(target.join("manifest.json"), changed.to_string()).unwrap();
        let error = read_manifest(&target).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, InferenceError::BadManifest { .. }), "{case}: {error:?}");
        assert!(message.contains("\"mean radius\"") && message.contains(reason), "{case}: {message}");
    }
}
