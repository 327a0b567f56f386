//! The PDF report of an assessment: the patient, the inputs, the result and what moved it, a
//! summary of the model card, and the reminder that the score supports clinical judgement and
//! does not replace it.

use aigronova_platform::{inference::Manifest, pdf::PdfDocument};

use crate::{assessment::Assessment, patient::Patient};

/// The report of `assessment` for `patient`, scored by the model `manifest` describes; without a
/// manifest (the version that scored it is no longer served here) the report says where its card is.
pub(crate) fn render(patient: &Patient, assessment: &Assessment, manifest: Option<&Manifest>) -> Vec<u8> {
    let mut pdf = PdfDocument::new("Relatório de avaliação de risco / Risk assessment report");
    pdf.heading("Paciente / Patient");
    pdf.field("Nome / Name", patient.name.as_str());
    pdf.field("CPF", &format!("***.***.***-{}", &patient.cpf.as_str()[9..]));
    pdf.field("Nascimento / Birth date", &patient.birth_date.to_string());
    pdf.field("Paciente / Patient id", patient.id.as_str());

    pdf.heading("Resultado / Result");
    pdf.field("Avaliação / Assessment", &assessment.id);
    pdf.field("Data / Date", &assessment.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    pdf.field("Modelo / Model", &format!("{} v{}", assessment.model, assessment.model_version));
    let figure = output_figure(assessment.output, manifest);
    let output = if assessment.regression {
        format!("predicted value {figure}")
    } else {
        let class = manifest.map_or("the positive class", |manifest| manifest.positive_class.as_str());
        format!("probability of {class} {figure}")
    };
    pdf.field("Saída / Output", &output);
    pdf.field("Faixa de risco / Risk band", &assessment.risk_band);
    pdf.subheading("Fatores que mais pesaram / Top contributing features");
    for (feature, contribution) in &assessment.top_features {
        pdf.field(feature, &format!("{contribution:+.4}"));
    }
    pdf.paragraph(
        "Contribution: the output minus the output with that feature at its training mean (an occlusion \
         approximation of feature attribution, not SHAP values).",
    );

    pdf.heading("Dados de entrada / Inputs");
    for (feature, value) in inputs_in_model_order(assessment, manifest) {
        pdf.field(feature, &input_value(value));
    }

    pdf.heading("Modelo / Model card");
    match manifest {
        Some(manifest) => model_card(&mut pdf, manifest),
        None => pdf.paragraph(&format!(
            "O cartão do modelo {model} v{version} não está nesta implantação / The model card of {model} \
             v{version}, which made this assessment, is not served by this deployment: see \
             models/{model}/{version}/manifest.json in the release that made it.",
            model = assessment.model,
            version = assessment.model_version
        )),
    }

    pdf.heading("Aviso / Disclaimer");
    pdf.paragraph(
        "Este resultado apoia o julgamento clínico e não o substitui: a decisão cabe ao profissional de saúde \
         responsável. This result supports clinical judgement and does not replace it: the decision rests with \
         the responsible health professional.",
    );
    pdf.to_bytes()
}

/// The inputs of `assessment` in the model's order, as its card and scikit-learn list the features;
/// by name without the card, and after the card's those it does not name.
fn inputs_in_model_order<'a>(assessment: &'a Assessment, manifest: Option<&Manifest>) -> Vec<(&'a str, f64)> {
    let mut inputs: Vec<(&str, f64)> =
        assessment.features.iter().map(|(name, value)| (name.as_str(), *value)).collect();
    if let Some(manifest) = manifest {
        let place =
            |name: &str| manifest.features.iter().position(|feature| feature.name == name).unwrap_or(usize::MAX);
        inputs.sort_by_key(|(name, _)| place(name));
    }
    inputs
}

/// The summary of a model card: what the model is, its data, metrics, use and limits, its file's digest.
fn model_card(pdf: &mut PdfDocument, manifest: &Manifest) {
    pdf.paragraph(&manifest.description);
    pdf.field("Dados de treino / Training data", &manifest.training_data.source);
    pdf.field("Licença / Licence", &manifest.training_data.licence);
    // Counts (rows) as whole numbers, scores (AUC, accuracy, R²) to four decimals.
    let metrics: Vec<String> = manifest
        .metrics
        .iter()
        .map(|(name, value)| {
            if value.fract() == 0.0 && value.abs() >= 1.0 {
                format!("{name} {value}")
            } else {
                format!("{name} {value:.4}")
            }
        })
        .collect();
    pdf.field("Métricas / Held-out metrics", &metrics.join(", "));
    pdf.field("Uso pretendido / Intended use", &manifest.intended_use);
    pdf.field("Limitações / Limitations", &manifest.limitations);
    pdf.monospace(&format!("sha256 {}", manifest.sha256));
}

/// The model's output to four decimals, or to as many more as keep the printed figure in the band
/// the output is in: 99.99998 in a band below 100 prints as 99.99998, not as 100.0000, the bound of
/// the next band. Without the card, whose bands are not known here, every digit the value holds.
fn output_figure(output: f64, manifest: Option<&Manifest>) -> String {
    let Some(manifest) = manifest else { return format!("{output}") };
    let band = manifest.risk_band(output);
    (4..=17)
        .map(|decimals| format!("{output:.decimals$}"))
        .find(|figure| figure.parse().is_ok_and(|printed| manifest.risk_band(printed) == band))
        .unwrap_or_else(|| format!("{output}"))
}

/// An input as sent, in a form a page holds: in scientific notation when very small or very large
/// (`1e-320` rather than 320 decimal places).
fn input_value(value: f64) -> String {
    if value != 0.0 && !(1e-4..1e15).contains(&value.abs()) { format!("{value:e}") } else { format!("{value}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(json: &str) -> Manifest {
        serde_json::from_str(json).expect("a model's manifest")
    }

    #[test]
    fn an_output_prints_in_the_band_it_is_in() {
        let diabetes = manifest(include_str!("../../models/diabetes-progression/1/manifest.json"));
        let breast = manifest(include_str!("../../models/breast-cancer/1/manifest.json"));
        let cases = [
            (&diabetes, 99.99998, "99.99998", "low"),
            (&diabetes, 100.0, "100.0000", "moderate"),
            (&diabetes, 151.123456, "151.1235", "moderate"),
            (&diabetes, 199.999999999, "199.999999999", "moderate"),
            (&breast, 0.49998897, "0.49999", "moderate"),
            (&breast, 0.5, "0.5000", "high"),
            (&breast, 0.19999, "0.19999", "low"),
            (&breast, 0.031, "0.0310", "low"),
        ];
        for (manifest, output, figure, band) in cases {
            assert_eq!(manifest.risk_band(output), band, "{output}");
            assert_eq!(output_figure(output, Some(manifest)), figure, "{output}");
        }
        assert_eq!(output_figure(0.49998897, None), "0.49998897");
    }

    #[test]
    fn inputs_print_in_a_form_a_page_holds() {
        assert_eq!(input_value(0.0380759064), "0.0380759064");
        assert_eq!(input_value(-0.5), "-0.5");
        assert_eq!(input_value(0.0), "0");
        assert_eq!(input_value(1e-320), "1e-320");
        assert_eq!(input_value(2.5e20), "2.5e20");
    }
}
