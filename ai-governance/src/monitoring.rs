//! Inference monitoring: the summaries the services report, and what is computed from them per
//! tenant, model and version over a window: call and error counts, latency percentiles, and the
//! population stability index (PSI) of each input feature against its training bins.
//!
//! PSI = Σ (actualᵢ − expectedᵢ) · ln(actualᵢ / expectedᵢ) over the bins, shares floored at
//! 0.0001 so that an empty bin counts as very rare rather than impossible. Above
//! [`PSI_ALERT`] the inputs have shifted enough that the model's scores should not be trusted
//! without review (the usual reading: under 0.1 stable, 0.1 to 0.25 moderate, above 0.25 major).
//! A handful of inputs says nothing about a distribution: the alert needs at least
//! [`MIN_DRIFT_SAMPLE`] scored inputs in the window, ten per bin of a ten-bin feature.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use aigronova_platform::{
    Error,
    storage::{Database, StoreError},
};
use chrono::{Duration, SecondsFormat, Utc};
use prometheus::{GaugeVec, Opts};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// The PSI above which a feature, and its model, is in alert.
pub const PSI_ALERT: f64 = 0.25;
/// The scored inputs a window needs before its PSI can raise an alert.
pub const MIN_DRIFT_SAMPLE: u64 = 100;
const SHARE_FLOOR: f64 = 0.0001;

/// A reported summary, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The window's id, drawn by the service (see `InferenceWindow.window_id`) or here.
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub service: String,
    pub model: String,
    pub version: String,
    pub start: String,
    pub end: String,
    pub calls: u64,
    pub errors: u64,
    pub latency: Latency,
    pub features: Vec<FeatureBins>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub bounds_ms: Vec<f64>,
    pub buckets: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureBins {
    pub name: String,
    pub counts: Vec<u64>,
    pub expected: Vec<f64>,
}

/// What a window of summaries comes to.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelStatus {
    pub model: String,
    pub version: String,
    pub calls: u64,
    pub errors: u64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    /// Per feature, in the order reported: its name and PSI.
    pub drift: Vec<(String, f64)>,
    /// The scored inputs the PSI was computed from.
    pub drift_sample: u64,
}

impl ModelStatus {
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.errors as f64 / self.calls as f64 }
    }

    pub fn max_psi(&self) -> f64 {
        self.drift.iter().map(|(_, psi)| *psi).fold(0.0, f64::max)
    }

    pub fn drift_alert(&self) -> bool {
        self.feature_alert(self.max_psi())
    }

    /// Whether a feature with `psi` is in alert: above [`PSI_ALERT`] on a large enough sample.
    pub fn feature_alert(&self, psi: f64) -> bool {
        self.drift_sample >= MIN_DRIFT_SAMPLE && psi > PSI_ALERT
    }

    /// What the drift gauge shows: the largest PSI, or 0 while the sample is too small to tell.
    pub fn alerting_psi(&self) -> f64 {
        if self.drift_sample >= MIN_DRIFT_SAMPLE { self.max_psi() } else { 0.0 }
    }
}

/// The population stability index of `counts` against the `expected` shares.
pub fn psi(counts: &[u64], expected: &[f64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 || counts.len() != expected.len() {
        return 0.0;
    }
    counts
        .iter()
        .zip(expected)
        .map(|(count, expected)| {
            let actual = (*count as f64 / total as f64).max(SHARE_FLOOR);
            let expected = expected.max(SHARE_FLOOR);
            (actual - expected) * (actual / expected).ln()
        })
        .sum()
}

/// The upper bound of the bucket that holds the `quantile` of the calls.
fn percentile(latency: &Latency, quantile: f64) -> f64 {
    let total: u64 = latency.buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = (quantile * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, count) in latency.buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return latency.bounds_ms.get(index).or(latency.bounds_ms.last()).copied().unwrap_or(0.0);
        }
    }
    latency.bounds_ms.last().copied().unwrap_or(0.0)
}

/// A window length named in the API: `1h`, `24h` or `7d`.
pub fn parse_window(window: &str) -> Result<(String, Duration), Error> {
    match window {
        "" | "24h" => Ok(("24h".into(), Duration::hours(24))),
        "1h" => Ok(("1h".into(), Duration::hours(1))),
        "7d" => Ok(("7d".into(), Duration::days(7))),
        other => Err(Error::invalid("window", format!("{other:?} is not one of 1h, 24h, 7d"))),
    }
}

/// A series of the drift gauge: tenant, model, version.
type Series = (String, String, String);

#[derive(Clone, Debug)]
pub struct MonitoringStore {
    database: Database,
    /// The series the drift gauge shows, so that those of models no longer called are taken out.
    shown: Arc<Mutex<BTreeSet<Series>>>,
}

impl MonitoringStore {
    pub fn new(database: Database) -> Self {
        Self { database, shown: Arc::default() }
    }

    /// Sets the drift gauge of every model version called in the last hour, and takes out the
    /// series of those that were not: the gauge tells of the last hour, not of the last report
    /// (a model no longer called is no longer in alert), also after a restart.
    pub async fn refresh_drift_gauge(&self) -> Result<(), Error> {
        let since = (Utc::now() - Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Micros, true);
        let rows =
            sqlx::query("SELECT DISTINCT tenant_id, model, version FROM inference_windows WHERE window_end >= $1")
                .bind(since)
                .fetch_all(self.database.pool())
                .await
                .map_err(StoreError::from)?;
        let mut live = BTreeSet::new();
        for row in rows {
            let series: Series = (
                row.try_get(0).map_err(StoreError::from)?,
                row.try_get(1).map_err(StoreError::from)?,
                row.try_get(2).map_err(StoreError::from)?,
            );
            if let Some(status) = self.status(&series.0, &series.1, &series.2, Duration::hours(1)).await? {
                drift_gauge().with_label_values(&[&series.0, &series.1, &series.2]).set(status.alerting_psi());
                live.insert(series);
            }
        }
        // The series not called in the hour are taken out, from the gauge and from `shown` alike, so
        // that none is left behind (one a report set meanwhile is set again by the next refresh).
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        let stale: Vec<Series> = shown.difference(&live).cloned().collect();
        for series in stale {
            let _ = drift_gauge().remove_label_values(&[&series.0, &series.1, &series.2]);
            shown.remove(&series);
        }
        shown.extend(live);
        Ok(())
    }

    /// Stores `summaries` but those whose id the service already recorded (a report sent again
    /// because its answer was lost), then refreshes the drift gauge of each model they are about;
    /// how many were new.
    pub async fn record(&self, summaries: &[Summary]) -> Result<usize, Error> {
        let mut transaction = self.database.begin_write().await?;
        let mut recorded = 0;
        for summary in summaries {
            let inserted = sqlx::query(
                "INSERT INTO inference_windows (id, tenant_id, service, model, version, window_start, window_end, \
                 calls, errors, latency, features) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO NOTHING",
            )
            // Under its service's name: a window id one service sends never stands for another's.
            .bind(format!("{}/{}", summary.service, summary.id))
            .bind(&summary.tenant_id)
            .bind(&summary.service)
            .bind(&summary.model)
            .bind(&summary.version)
            .bind(&summary.start)
            .bind(&summary.end)
            .bind(i64::try_from(summary.calls).unwrap_or(i64::MAX))
            .bind(i64::try_from(summary.errors).unwrap_or(i64::MAX))
            .bind(serde_json::to_string(&summary.latency).expect("latency serialises"))
            .bind(serde_json::to_string(&summary.features).expect("bins serialise"))
            .execute(&mut *transaction)
            .await
            .map_err(StoreError::from)?;
            recorded += usize::try_from(inserted.rows_affected()).unwrap_or(usize::MAX);
        }
        transaction.commit().await.map_err(StoreError::from)?;
        for summary in summaries {
            let status = self.status(&summary.tenant_id, &summary.model, &summary.version, Duration::hours(1)).await?;
            if let Some(status) = status {
                drift_gauge()
                    .with_label_values(&[&summary.tenant_id, &status.model, &status.version])
                    .set(status.alerting_psi());
                let series = (summary.tenant_id.clone(), status.model, status.version);
                self.shown.lock().unwrap_or_else(PoisonError::into_inner).insert(series);
            }
        }
        Ok(recorded)
    }

    /// The figures of one model version for `tenant_id` over the last `window`; `None` when it
    /// was not called then.
    pub async fn status(
        &self,
        tenant_id: &str,
        model: &str,
        version: &str,
        window: Duration,
    ) -> Result<Option<ModelStatus>, Error> {
        let since = (Utc::now() - window).to_rfc3339_opts(SecondsFormat::Micros, true);
        let rows = sqlx::query(
            "SELECT model, version, calls, errors, latency, features FROM inference_windows \
             WHERE tenant_id = $1 AND model = $2 AND version = $3 AND window_end >= $4 ORDER BY window_end DESC",
        )
        .bind(tenant_id)
        .bind(model)
        .bind(version)
        .bind(since)
        .fetch_all(&mut *self.database.begin_tenant_read(tenant_id).await?)
        .await
        .map_err(StoreError::from)?;
        Ok(summarise(&rows)?.into_values().next())
    }

    /// Whether any service ever reported calls of `model` `version` by `tenant_id` (another
    /// tenant's calls say nothing to this one).
    pub async fn ever_called(&self, tenant_id: &str, model: &str, version: &str) -> Result<bool, Error> {
        let row =
            sqlx::query("SELECT 1 FROM inference_windows WHERE tenant_id = $1 AND model = $2 AND version = $3 LIMIT 1")
                .bind(tenant_id)
                .bind(model)
                .bind(version)
                .fetch_optional(&mut *self.database.begin_tenant_read(tenant_id).await?)
                .await
                .map_err(StoreError::from)?;
        Ok(row.is_some())
    }

    /// Every model version `tenant_id` used in the last `window`.
    pub async fn statuses(&self, tenant_id: &str, window: Duration) -> Result<Vec<ModelStatus>, Error> {
        let since = (Utc::now() - window).to_rfc3339_opts(SecondsFormat::Micros, true);
        self.statuses_between(tenant_id, &since, "9999").await
    }

    /// Every model version `tenant_id` used in reports that ended in [`start`, `end`) (RFC 3339).
    pub async fn statuses_between(&self, tenant_id: &str, start: &str, end: &str) -> Result<Vec<ModelStatus>, Error> {
        let rows = sqlx::query(
            "SELECT model, version, calls, errors, latency, features FROM inference_windows \
             WHERE tenant_id = $1 AND window_end >= $2 AND window_end < $3 ORDER BY window_end DESC",
        )
        .bind(tenant_id)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *self.database.begin_tenant_read(tenant_id).await?)
        .await
        .map_err(StoreError::from)?;
        Ok(summarise(&rows)?.into_values().collect())
    }
}

/// Merges rows per model and version and computes their figures. Rows come newest first: a
/// feature's drift is measured against the newest report's bins and shares, and counts an older
/// report made against other ones (a manifest changed under the same version) are left out of it.
fn summarise(rows: &[sqlx::any::AnyRow]) -> Result<BTreeMap<(String, String), ModelStatus>, StoreError> {
    struct Sums {
        calls: u64,
        errors: u64,
        latency: Latency,
        features: Vec<FeatureBins>,
    }
    let mut sums: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for row in rows {
        let key = (row.try_get::<String, _>("model")?, row.try_get::<String, _>("version")?);
        let latency: Latency = serde_json::from_str(&row.try_get::<String, _>("latency")?)
            .map_err(|error| StoreError::Corrupt(format!("inference_windows.latency: {error}")))?;
        let features: Vec<FeatureBins> = serde_json::from_str(&row.try_get::<String, _>("features")?)
            .map_err(|error| StoreError::Corrupt(format!("inference_windows.features: {error}")))?;
        let calls = row.try_get::<i64, _>("calls")? as u64;
        let errors = row.try_get::<i64, _>("errors")? as u64;
        match sums.get_mut(&key) {
            None => {
                sums.insert(key, Sums { calls, errors, latency, features });
            }
            Some(total) => {
                total.calls += calls;
                total.errors += errors;
                if total.latency.bounds_ms == latency.bounds_ms {
                    for (a, b) in total.latency.buckets.iter_mut().zip(latency.buckets) {
                        *a += b;
                    }
                }
                for feature in features {
                    match total.features.iter_mut().find(|known| known.name == feature.name) {
                        Some(known)
                            if known.counts.len() == feature.counts.len() && known.expected == feature.expected =>
                        {
                            for (a, b) in known.counts.iter_mut().zip(feature.counts) {
                                *a += b;
                            }
                        }
                        Some(_) => {}
                        None => total.features.push(feature),
                    }
                }
            }
        }
    }
    Ok(sums
        .into_iter()
        .map(|((model, version), sums)| {
            let status = ModelStatus {
                model: model.clone(),
                version: version.clone(),
                calls: sums.calls,
                errors: sums.errors,
                latency_p50_ms: percentile(&sums.latency, 0.50),
                latency_p95_ms: percentile(&sums.latency, 0.95),
                latency_p99_ms: percentile(&sums.latency, 0.99),
                drift: sums.features.iter().map(|f| (f.name.clone(), psi(&f.counts, &f.expected))).collect(),
                drift_sample: sums.features.iter().map(|f| f.counts.iter().sum::<u64>()).max().unwrap_or(0),
            };
            ((model, version), status)
        })
        .collect())
}

fn drift_gauge() -> &'static GaugeVec {
    static GAUGE: OnceLock<GaugeVec> = OnceLock::new();
    GAUGE.get_or_init(|| {
        let gauge = GaugeVec::new(
            Opts::new(
                "aigronova_model_drift_psi",
                "Largest population stability index of a model's input features over the last hour, per tenant \
                 (0 until the hour holds 100 scored inputs)",
            ),
            &["tenant", "model", "version"],
        )
        .expect("valid metric");
        if let Err(error) = prometheus::register(Box::new(gauge.clone())) {
            tracing::warn!(%error, "drift metric not registered");
        }
        gauge
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of `calls` inputs of one feature, all in its first bin, counted against `expected`.
    fn report(end: &str, calls: u64, expected: Vec<f64>) -> Summary {
        let mut counts = vec![0; expected.len()];
        counts[0] = calls;
        Summary {
            id: uuid::Uuid::now_v7(),
            tenant_id: "tenant".into(),
            service: "healthquantum".into(),
            model: "diabetes-progression".into(),
            version: "1".into(),
            start: end.into(),
            end: end.into(),
            calls,
            errors: 0,
            latency: Latency::default(),
            features: vec![FeatureBins { name: "sex".into(), counts, expected }],
        }
    }

    #[tokio::test]
    async fn drift_is_measured_against_the_newest_baseline_and_older_counts_of_another_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let store = MonitoringStore::new(Database::connect(&url, &crate::MIGRATOR).await.unwrap());
        let now = Utc::now();
        let at = |minutes_ago: i64| (now - Duration::minutes(minutes_ago)).to_rfc3339_opts(SecondsFormat::Micros, true);
        // Before the manifest changed: one bin; after: two, with their training shares.
        store.record(&[report(&at(30), 500, vec![1.0])]).await.unwrap();
        store.record(&[report(&at(10), 100, vec![0.53, 0.47])]).await.unwrap();
        store.record(&[report(&at(5), 100, vec![0.53, 0.47])]).await.unwrap();
        let status = store.status("tenant", "diabetes-progression", "1", Duration::hours(1)).await.unwrap().unwrap();
        assert_eq!(status.calls, 700, "every call counts");
        assert_eq!(status.drift_sample, 200, "only the inputs counted against the newest bins");
        let expected = psi(&[200, 0], &[0.53, 0.47]);
        assert_eq!(status.drift.len(), 1);
        assert!((status.drift[0].1 - expected).abs() < 1e-12, "{:?} against {expected}", status.drift);
    }

    #[tokio::test]
    async fn a_model_version_is_called_for_the_tenant_that_called_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let store = MonitoringStore::new(Database::connect(&url, &crate::MIGRATOR).await.unwrap());
        let long_ago = (Utc::now() - Duration::days(90)).to_rfc3339_opts(SecondsFormat::Micros, true);
        store.record(&[report(&long_ago, 3, vec![1.0])]).await.unwrap();
        assert!(store.ever_called("tenant", "diabetes-progression", "1").await.unwrap());
        assert!(!store.ever_called("another", "diabetes-progression", "1").await.unwrap());
        assert!(!store.ever_called("tenant", "diabetes-progression", "2").await.unwrap());
    }

    /// The drift gauge's value for `tenant`, if it has a series.
    fn gauge_of(tenant: &str) -> Option<f64> {
        use prometheus::core::Collector;
        let families = drift_gauge().collect();
        let metrics = families.iter().flat_map(|family| family.get_metric());
        metrics
            .filter(|metric| metric.get_label().iter().any(|label| label.value() == tenant))
            .map(|metric| metric.get_gauge().get_value())
            .next()
    }

    #[tokio::test]
    async fn the_drift_gauge_tells_of_the_last_hour_not_of_the_last_report() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("governance.db").display());
        let database = Database::connect(&url, &crate::MIGRATOR).await.unwrap();
        let store = MonitoringStore::new(database.clone());
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let (quiet, busy) = (format!("quiet-{}", uuid::Uuid::new_v4()), format!("busy-{}", uuid::Uuid::new_v4()));
        for tenant in [&quiet, &busy] {
            // 200 inputs all in one bin of two: drift, and an alert.
            store.record(&[Summary { tenant_id: tenant.clone(), ..report(&now, 200, vec![0.5, 0.5]) }]).await.unwrap();
            assert!(gauge_of(tenant).unwrap() > 0.25, "{tenant} drifts");
        }
        // The quiet tenant's calls are now more than an hour old, and no report came since.
        sqlx::query("UPDATE inference_windows SET window_end = $1 WHERE tenant_id = $2")
            .bind((Utc::now() - Duration::hours(2)).to_rfc3339_opts(SecondsFormat::Micros, true))
            .bind(&quiet)
            .execute(database.pool())
            .await
            .unwrap();
        store.refresh_drift_gauge().await.unwrap();
        assert_eq!(gauge_of(&quiet), None, "a model not called in the last hour is not in alert");
        assert!(gauge_of(&busy).unwrap() > 0.25);
        // After a restart, the gauge shows the last hour before any report comes.
        let _ = drift_gauge().remove_label_values(&[&busy, "diabetes-progression", "1"]);
        MonitoringStore::new(database).refresh_drift_gauge().await.unwrap();
        assert!(gauge_of(&busy).unwrap() > 0.25, "the busy tenant's series is back");
    }

    #[test]
    fn psi_is_zero_for_the_training_shares_and_large_for_a_shift() {
        let expected = vec![0.1; 10];
        assert!(psi(&[100; 10], &expected).abs() < 1e-12);
        let mut shifted = vec![0; 10];
        shifted[9] = 1000;
        assert!(psi(&shifted, &expected) > PSI_ALERT);
        // A mild shift stays below the alert.
        let mild = [80, 90, 100, 100, 100, 100, 100, 100, 110, 120];
        assert!(psi(&mild, &expected) < 0.1);
        assert_eq!(psi(&[0; 10], &expected), 0.0);
    }

    #[test]
    fn a_shift_on_a_handful_of_inputs_is_not_an_alert() {
        let mut shifted = vec![0; 10];
        shifted[9] = 5;
        let psi = psi(&shifted, &[0.1; 10]);
        let status = |drift_sample| ModelStatus {
            model: "m".into(),
            version: "1".into(),
            calls: drift_sample,
            errors: 0,
            latency_p50_ms: 1.0,
            latency_p95_ms: 1.0,
            latency_p99_ms: 1.0,
            drift: vec![("f".into(), psi)],
            drift_sample,
        };
        assert!(psi > PSI_ALERT);
        assert!(!status(5).drift_alert() && status(5).alerting_psi() == 0.0, "five inputs tell nothing");
        assert!(status(MIN_DRIFT_SAMPLE).drift_alert() && status(MIN_DRIFT_SAMPLE).alerting_psi() == psi);
    }

    #[test]
    fn percentiles_are_the_upper_bounds_of_their_buckets() {
        let latency = Latency { bounds_ms: vec![1.0, 5.0, 10.0], buckets: vec![50, 45, 4, 1] };
        assert_eq!(percentile(&latency, 0.50), 1.0);
        assert_eq!(percentile(&latency, 0.95), 5.0);
        assert_eq!(percentile(&latency, 0.99), 10.0);
        assert_eq!(percentile(&latency, 1.0), 10.0);
    }

    #[test]
    fn windows_are_named() {
        assert_eq!(parse_window("").unwrap().0, "24h");
        assert_eq!(parse_window("7d").unwrap().1, Duration::days(7));
        assert!(parse_window("2w").is_err());
    }
}
