//! Evidence reports for a tenant and period (ISO/IEC 27001:2022, SOC 2, LGPD), as JSON and PDF:
//! what the audit log recorded, the model inventory and drift, data-subject requests and their
//! timeliness, review outcomes, the latest signed checkpoint and a full verification of the log.
//! Each framework lists the controls or articles the evidence supports.

use std::{collections::BTreeMap, sync::Arc};

use aigronova_platform::{Error, pdf::PdfDocument};
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Timelike, Utc};
use serde_json::{Value, json};

use crate::{
    inventory::Inventory,
    log::{Leaf, LogStore},
    monitoring::{MIN_DRIFT_SAMPLE, MonitoringStore, PSI_ALERT},
    subjects::SubjectStore,
};

/// The frameworks a report can be written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framework {
    Iso27001,
    Soc2,
    Lgpd,
}

impl Framework {
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "iso27001" => Ok(Self::Iso27001),
            "soc2" => Ok(Self::Soc2),
            "lgpd" => Ok(Self::Lgpd),
            other => Err(Error::invalid("framework", format!("{other:?} is not one of iso27001, soc2, lgpd"))),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Iso27001 => "ISO/IEC 27001:2022 evidence report",
            Self::Soc2 => "SOC 2 evidence report",
            Self::Lgpd => "LGPD evidence report (Lei 13.709/2018)",
        }
    }

    /// The controls or articles, and the sections of the report that evidence them.
    fn controls(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Self::Iso27001 => &[
                ("A.5.9", "Inventory of information and other associated assets", "models"),
                ("A.5.33", "Protection of records", "checkpoint, verification"),
                ("A.5.34", "Privacy and protection of PII", "subjectRequests, audit"),
                ("A.8.15", "Logging", "audit, checkpoint"),
                ("A.8.16", "Monitoring activities", "monitoring"),
                ("A.8.24", "Use of cryptography", "checkpoint"),
            ],
            Self::Soc2 => &[
                ("CC4.1", "Monitoring of controls", "verification"),
                ("CC7.2", "System components are monitored for anomalies", "monitoring, audit"),
                ("CC8.1", "Changes are authorised and tracked", "models"),
                ("PI1.4", "Processing outputs are complete and accurate", "audit, reviews"),
                ("P4.3", "Personal information is disposed of", "subjectRequests"),
                ("P5.1", "Data subjects can access their personal information", "subjectRequests"),
            ],
            Self::Lgpd => &[
                ("Art. 18", "Rights of the data subject", "subjectRequests"),
                ("Art. 19", "Answers within 15 days", "subjectRequests"),
                ("Art. 20", "Review of automated decisions", "reviews"),
                ("Art. 37", "Records of processing operations", "audit, checkpoint, verification"),
                ("Art. 46", "Security measures", "verification, monitoring"),
                ("Art. 50", "Good practices and governance", "models, monitoring"),
            ],
        }
    }
}

/// The output format of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Pdf,
}

impl Format {
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "" | "json" => Ok(Self::Json),
            "pdf" => Ok(Self::Pdf),
            other => Err(Error::invalid("format", format!("{other:?} is not json or pdf"))),
        }
    }
}

/// A period bound: an RFC 3339 time, or a date (midnight UTC; `end_of_day` takes the next
/// midnight so that a date `to` includes that day).
pub fn parse_bound(field: &str, text: &str, end_of_day: bool) -> Result<DateTime<Utc>, Error> {
    let at = if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        // As everywhere else: finer than the nanosecond is refused, never cut, and a leap second
        // names no instant the log holds.
        let fraction = text.split_once('.').map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count());
        if fraction.is_some_and(|digits| digits > 9) {
            return Err(Error::invalid(field, "has more than 9 digits after the second's point"));
        }
        // The log's times are to the microsecond: a bound finer than that names no time between
        // two of them, and is refused rather than cut.
        if at.nanosecond() % 1_000 != 0 {
            return Err(Error::invalid(field, "is finer than the microsecond, which the log's times are kept to"));
        }
        if at.nanosecond() >= 1_000_000_000 {
            return Err(Error::invalid(field, "is a leap second (second 60), which no time of the log is"));
        }
        at.with_timezone(&Utc)
    } else {
        // Exactly `YYYY-MM-DD`: chrono's `%Y` would also take a sign or fewer digits.
        let shaped = text.len() == 10
            && text
                .bytes()
                .enumerate()
                .all(|(at, byte)| if at == 4 || at == 7 { byte == b'-' } else { byte.is_ascii_digit() });
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().filter(|_| shaped).ok_or_else(|| {
            // A `+` in a query is a space to whoever reads it: an offset must be sent as `%2B`.
            let hint = if text.contains(' ') { " (in a URL, write the offset's + as %2B)" } else { "" };
            Error::invalid(field, format!("must be a date (2026-11-01) or an RFC 3339 time{hint}"))
        })?;
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        if end_of_day { midnight + Duration::days(1) } else { midnight }
    };
    // Past 9999 a time has a five-digit year, which no stored time reaches and which sorts before
    // every one of them as text: bounds stop at the last microsecond of 9999.
    let last = NaiveDate::from_ymd_opt(9999, 12, 31).and_then(|day| day.and_hms_micro_opt(23, 59, 59, 999_999));
    Ok(at.clamp(earliest_bound(), last.expect("a valid time").and_utc()))
}

/// The earliest bound of a period, the start of year 0: before it a time has a signed year
/// (`-0001-12-31T21:00:00Z`), which RFC 3339 does not write.
pub fn earliest_bound() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(0, 1, 1).expect("year 0 is a date").and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

#[derive(Debug)]
pub struct Reporter {
    log: Arc<LogStore>,
    inventory: Inventory,
    monitoring: MonitoringStore,
    subjects: Arc<SubjectStore>,
}

impl Reporter {
    pub fn new(
        log: Arc<LogStore>,
        inventory: Inventory,
        monitoring: MonitoringStore,
        subjects: Arc<SubjectStore>,
    ) -> Self {
        Self { log, inventory, monitoring, subjects }
    }

    /// The report as JSON.
    pub async fn report(
        &self,
        tenant_id: &str,
        framework: Framework,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Value, Error> {
        // A period that has not begun holds nothing yet, and its requests no state to report.
        if from > Utc::now() {
            return Err(Error::invalid("from", "is in the future: a report covers a period that has begun"));
        }
        if from >= to {
            return Err(Error::invalid("from", "must be before to (now, when to is left out)"));
        }
        let (start, end) = (rfc3339(from), rfc3339(to));
        let in_period = |at: &str| at >= start.as_str() && at < end.as_str();

        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut decisions_by_model: BTreeMap<String, u64> = BTreeMap::new();
        let mut next = 0;
        loop {
            let page = self.log.entries(tenant_id, next, 10_000).await?;
            let Some(last) = page.last() else { break };
            next = last.index + 1;
            for leaf in page.iter().filter_map(|entry| Leaf::parse(&entry.leaf)) {
                if !in_period(&leaf.occurred_at) {
                    continue;
                }
                *by_kind.entry(leaf.kind.clone()).or_default() += 1;
                if leaf.kind == "decision" {
                    let model = leaf.details["model"].as_str().unwrap_or("unknown").to_owned();
                    *decisions_by_model.entry(model).or_default() += 1;
                }
            }
        }

        let models: Vec<Value> = self
            .inventory
            .list()
            .await?
            .into_iter()
            .map(|entry| {
                let mut model = json!({
                    "name": entry.card.name,
                    "version": entry.card.version,
                    "service": entry.service,
                    "sha256": entry.card.sha256,
                    "sha256Mismatch": entry.sha256_mismatch(),
                });
                // Left out when there is none, as the proto3 JSON mapping leaves out an empty field.
                if let (Some(differing), Some(at)) = (&entry.differing_sha256, &entry.mismatch_at) {
                    model["observedSha256"] = json!(differing);
                    model["mismatchTime"] = json!(at);
                }
                model
            })
            .collect();
        let monitoring: Vec<Value> = self
            .monitoring
            .statuses_between(tenant_id, &start, &end)
            .await?
            .into_iter()
            .map(|status| {
                json!({
                    "model": status.model,
                    "version": status.version,
                    "inferences": status.calls,
                    "errorRate": status.error_rate(),
                    "latencyP95Ms": status.latency_p95_ms,
                    "maxPsi": status.max_psi(),
                    "driftSample": status.drift_sample,
                    "driftAlert": status.drift_alert(),
                })
            })
            .collect();

        let requests = self.subjects.request_tallies(tenant_id, &start, &end).await?;
        let mut requests_by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for request in &requests {
            *requests_by_kind.entry(request.kind.clone()).or_default() += 1;
        }
        // As things stood at the period's end (or now, for a period not over): a request completed
        // or a review decided after it counts as still open, so that a closed period's report
        // does not change afterwards.
        let as_of = end.clone().min(rfc3339(Utc::now()));
        let done_by_end = |done: Option<&str>| done.filter(|done| *done < end.as_str()).map(str::to_owned);
        // Each request counted once among these four; those some service failed to answer for are
        // counted among them too (a failed request past its deadline is overdue: its subject had no
        // answer in time), and apart.
        let (mut on_time, mut late, mut overdue, mut open, mut failed) = (0, 0, 0, 0, 0);
        for request in &requests {
            let counted = match done_by_end(request.completed_at.as_deref()) {
                Some(done) if done <= request.deadline => &mut on_time,
                Some(_) => &mut late,
                None if request.deadline < as_of => &mut overdue,
                None => &mut open,
            };
            *counted += 1;
            // Failed by the period's end (one failed before the time was kept, whenever).
            let failed_by_end = request.failed_at.as_deref().is_none_or(|at| at < end.as_str());
            failed += usize::from(request.status == "failed" && failed_by_end);
        }
        let requests_before = requests.iter().filter(|r| r.created_at < start).count();

        let reviews = self.subjects.review_tallies(tenant_id, &start, &end).await?;
        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        for tally in &reviews {
            let key = match done_by_end(tally.decided_at.as_deref()) {
                Some(_) if tally.status != "pending" => tally.outcome.clone(),
                _ => "pending".to_owned(),
            };
            *outcomes.entry(key).or_default() += 1;
        }

        // The verification is of the checkpoint the report shows, however the log grows meanwhile.
        let checkpoint = self.log.latest_checkpoint(tenant_id).await?;
        let verification = self.log.verify(tenant_id, &checkpoint).await?;
        // Left out when every entry verifies, as the proto3 JSON mapping leaves out an unset field.
        let mut verified = json!({
            "verified": verification.verified(),
            "signatureVerified": verification.signed,
            "signatureFailed": verification.signature_failed,
            "treeSize": verification.tree_size.to_string(),
            "detail": verification.reason,
        });
        if let Some(index) = verification.first_bad_index {
            verified["firstBadIndex"] = Value::String(index.to_string());
        }
        let controls: Vec<Value> = framework
            .controls()
            .iter()
            .map(|(id, title, evidence)| json!({"id": id, "title": title, "evidence": evidence}))
            .collect();
        Ok(json!({
            "framework": match framework { Framework::Iso27001 => "iso27001", Framework::Soc2 => "soc2", Framework::Lgpd => "lgpd" },
            "title": framework.title(),
            "tenantId": tenant_id,
            // As the proto3 JSON mapping writes times: the fraction only as far as it goes.
            "period": {
                "from": period_bound(from),
                "to": period_bound(to),
            },
            "generatedAt": rfc3339(Utc::now()),
            "controls": controls,
            "audit": {
                "entries": by_kind.values().sum::<u64>(),
                "byKind": by_kind,
                "decisions": by_kind.get("decision").copied().unwrap_or(0),
                "sensitiveReads": by_kind.get("sensitive_read").copied().unwrap_or(0),
                "decisionsByModel": decisions_by_model,
            },
            "models": models,
            "monitoring": monitoring,
            "psiAlertThreshold": PSI_ALERT,
            "psiAlertMinSample": MIN_DRIFT_SAMPLE,
            "subjectRequests": {
                "total": requests.len(),
                "byKind": requests_by_kind,
                "completedOnTime": on_time,
                "completedLate": late,
                "overdue": overdue,
                "open": open,
                "failed": failed,
                "openedBefore": requests_before,
            },
            "reviews": {
                "total": reviews.len(),
                "byOutcome": outcomes,
                "openedBefore": reviews.iter().filter(|tally| tally.created_at < start).count(),
            },
            // Sizes and indexes as the audit API writes them (64-bit integers as strings).
            "checkpoint": {
                "tenantId": checkpoint.body.tenant_id,
                "treeSize": checkpoint.body.tree_size.to_string(),
                "rootHash": hex::encode(checkpoint.body.root_hash),
                "timestamp": checkpoint.body.timestamp,
                "keyId": checkpoint.key_id,
                "signature": checkpoint.signature,
                "signedText": checkpoint.body.signed_text(),
            },
            "verification": verified,
        }))
    }
}

/// The report as a PDF.
pub fn render_pdf(report: &Value) -> Vec<u8> {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    };
    let mut pdf = PdfDocument::new(report["title"].as_str().unwrap_or("Evidence report"));
    pdf.field("Tenant", &text(&report["tenantId"]));
    // The end is the first instant after the period, which a reader could take for its last day.
    pdf.field(
        "Period",
        &format!("from {} up to {} (excluded)", text(&report["period"]["from"]), text(&report["period"]["to"])),
    );
    pdf.field("Generated", &text(&report["generatedAt"]));

    pdf.heading("Audit log integrity");
    let verification = &report["verification"];
    // A checkpoint whose signature is not verified here vouches for nothing: the entries' own
    // evidence is told apart from it. One that fails against the trusted key it names was altered
    // or forged; one signed by a key this deployment does not know may be sound elsewhere.
    let verdict = match (verification["verified"] == true, verification["signatureVerified"] == true) {
        (true, _) => "verified: every entry hashes into the signed root".to_owned(),
        (false, false) if verification["signatureFailed"] == true => {
            "FAILED: the checkpoint's signature does not verify against the trusted key it names (see the detail)"
                .to_owned()
        }
        (false, true) => format!("FAILED at entry {}", text(&verification["firstBadIndex"])),
        (false, false) if verification.get("firstBadIndex").is_some() => format!(
            "NOT VERIFIED: the checkpoint's signature is not verified here, and the entries show a change of their own at \
             index {} (see the detail)",
            text(&verification["firstBadIndex"])
        ),
        (false, false) => "NOT VERIFIED: the checkpoint's signature is not verified here (see the detail)".to_owned(),
    };
    pdf.field("Full verification", &verdict);
    pdf.field("Detail", &text(&verification["detail"]));
    let checkpoint = &report["checkpoint"];
    pdf.field("Tree size", &text(&checkpoint["treeSize"]));
    pdf.field("Signed at", &text(&checkpoint["timestamp"]));
    pdf.field("Signing key id", &text(&checkpoint["keyId"]));
    pdf.subheading("Root hash (SHA-256, RFC 6962)");
    pdf.monospace(&text(&checkpoint["rootHash"]));
    pdf.subheading("Ed25519 signature");
    pdf.monospace(&text(&checkpoint["signature"]));

    pdf.heading("Audited activity in the period");
    let audit = &report["audit"];
    pdf.field("Entries", &text(&audit["entries"]));
    pdf.field("Automated decisions", &text(&audit["decisions"]));
    pdf.field("Reads of personal data", &text(&audit["sensitiveReads"]));
    for (kind, count) in audit["byKind"].as_object().into_iter().flatten() {
        pdf.field(&format!("  {kind}"), &text(count));
    }
    if audit["decisionsByModel"].as_object().is_some_and(|models| !models.is_empty()) {
        pdf.subheading("Automated decisions by model");
        for (model, count) in audit["decisionsByModel"].as_object().into_iter().flatten() {
            pdf.field(&format!("  {model}"), &text(count));
        }
    }

    pdf.heading("Model inventory and drift");
    for model in report["models"].as_array().into_iter().flatten() {
        let flag = if model["sha256Mismatch"] == true { " — FILE CHANGED WITHOUT A NEW VERSION" } else { "" };
        pdf.field(
            &format!("{} v{}", text(&model["name"]), text(&model["version"])),
            &format!("served by {}{flag}", text(&model["service"])),
        );
        pdf.monospace(&format!("sha256 {}", text(&model["sha256"])));
        if model["sha256Mismatch"] == true {
            pdf.monospace(&format!("observed {}", text(&model["observedSha256"])));
            pdf.monospace(&format!("first seen {}", text(&model["mismatchTime"])));
        }
    }
    for status in report["monitoring"].as_array().into_iter().flatten() {
        let sample = status["driftSample"].as_u64().unwrap_or(0);
        let alert = if status["driftAlert"] == true {
            "DRIFT ALERT".to_owned()
        } else if sample < crate::monitoring::MIN_DRIFT_SAMPLE {
            format!("too few scored inputs to judge drift: {sample} of {}", crate::monitoring::MIN_DRIFT_SAMPLE)
        } else {
            "stable".to_owned()
        };
        pdf.field(
            &format!("{} v{}", text(&status["model"]), text(&status["version"])),
            &format!(
                "{} inferences, error rate {:.4}, p95 {} ms, max PSI {:.4} ({alert})",
                text(&status["inferences"]),
                status["errorRate"].as_f64().unwrap_or(0.0),
                text(&status["latencyP95Ms"]),
                status["maxPsi"].as_f64().unwrap_or(0.0),
            ),
        );
    }

    pdf.heading("Data-subject requests (LGPD Art. 18 and 19)");
    let requests = &report["subjectRequests"];
    pdf.field("Requests", &text(&requests["total"]));
    pdf.field("Completed within 15 days", &text(&requests["completedOnTime"]));
    pdf.field("Completed late", &text(&requests["completedLate"]));
    pdf.field("Overdue", &text(&requests["overdue"]));
    pdf.field("Open, within 15 days", &text(&requests["open"]));
    pdf.field("Failed (a service did not answer)", &text(&requests["failed"]));
    pdf.field("Open from before the period", &text(&requests["openedBefore"]));
    for (kind, count) in requests["byKind"].as_object().into_iter().flatten() {
        pdf.field(&format!("  {kind}"), &text(count));
    }

    pdf.heading("Reviews of automated decisions (LGPD Art. 20)");
    pdf.field("Reviews", &text(&report["reviews"]["total"]));
    pdf.field("Pending from before the period", &text(&report["reviews"]["openedBefore"]));
    for (outcome, count) in report["reviews"]["byOutcome"].as_object().into_iter().flatten() {
        pdf.field(&format!("  {outcome}"), &text(count));
    }

    pdf.heading("Controls evidenced");
    for control in report["controls"].as_array().into_iter().flatten() {
        pdf.field(&text(&control["id"]), &format!("{} — see {}", text(&control["title"]), text(&control["evidence"])));
    }
    pdf.spacer();
    pdf.paragraph(
        "Anyone holding the checkpoint public key can check this log independently with \
         `aigronova audit verify`; the root hash above is the one the signature covers.",
    );
    pdf.to_bytes()
}

/// A bound of a report's period: whole seconds as they are (`2026-11-01T00:00:00Z`), a time within a
/// second to the microsecond, as every other time the platform writes.
fn period_bound(at: DateTime<Utc>) -> String {
    use chrono::Timelike;
    if at.nanosecond() == 0 { at.to_rfc3339_opts(SecondsFormat::Secs, true) } else { rfc3339(at) }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_periods_bounds_are_written_to_the_microsecond_at_most() {
        let midnight = "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(period_bound(midnight), "2026-11-01T00:00:00Z");
        let now = "2026-12-02T03:10:19.028549935Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(period_bound(now), "2026-12-02T03:10:19.028549Z");
    }

    #[test]
    fn a_period_is_dates_or_times_and_ends_within_year_9999() {
        let at = |text: &str, end_of_day| parse_bound("to", text, end_of_day).unwrap().to_rfc3339();
        assert_eq!(at("2026-11-01", false), "2026-11-01T00:00:00+00:00");
        assert_eq!(at("2026-11-30", true), "2026-12-01T00:00:00+00:00", "a date ends with its day");
        assert_eq!(at("2026-11-30T12:00:00-03:00", true), "2026-11-30T15:00:00+00:00");
        assert_eq!(at("9999-12-31", true), "9999-12-31T23:59:59.999999+00:00");
        assert_eq!(at("9999-12-31T23:00:00-03:00", true), "9999-12-31T23:59:59.999999+00:00");
        assert_eq!(at("9999-12-31", false), "9999-12-31T00:00:00+00:00");
        // Nor before year 0, whose times have a signed year.
        assert_eq!(at("0000-01-01T00:00:00+03:00", false), "0000-01-01T00:00:00+00:00");
        assert_eq!(at("0000-01-01", false), "0000-01-01T00:00:00+00:00");
        assert_eq!(
            period_bound(parse_bound("from", "0000-01-01T01:00:00+05:00", false).unwrap()),
            "0000-01-01T00:00:00Z"
        );
        assert!(parse_bound("to", "2026-13-01", true).is_err());
        assert!(parse_bound("to", "yesterday", true).is_err());
        // Finer than the log's microseconds, and a leap second: refused rather than cut or echoed.
        assert!(parse_bound("from", "2026-12-01T04:00:00.1234567891Z", false).is_err());
        assert!(parse_bound("from", "2026-12-01T04:00:00.123456789Z", false).is_err());
        assert!(parse_bound("from", "2026-12-01T04:00:00.123456000Z", false).is_ok());
        assert!(parse_bound("from", "2026-12-01T04:00:00.123456Z", false).is_ok());
        assert!(parse_bound("to", "2026-12-31T23:59:60Z", false).is_err());
        for loose in ["26-11-01", "-2026-11-01", "+2026-11-01", "2026-1-1", "2026-11-1", " 2026-11-01"] {
            assert!(parse_bound("from", loose, false).is_err(), "{loose}");
        }
    }
}
