//! Inference monitoring: each service sums up its model calls per tenant, model and version
//! (count, errors, latency buckets, and how many inputs fell in each training bin of each
//! feature) and reports the sums to ai-governance, which computes error rates, latency
//! percentiles and drift. Raw inputs never leave the service.
//!
//! The manifests' `bin_edges` are the training data's deciles where its values allow (fewer where
//! quantiles repeat, two for a two-valued feature), and `bin_shares` each bin's share of the
//! training rows: the expected share a bin's count is compared with.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use aigronova_proto::aigronova::governance::v1::{self as proto, monitoring_client::MonitoringClient};
use chrono::{DateTime, Utc};
use tonic::transport::Endpoint;

use crate::{
    audit::RelayConfig,
    auth::{self, Caller, TokenSigner},
    inference::Model,
    shutdown::Shutdown,
};

/// The scope of the token a service presents to `RecordInferenceStats`.
pub const RECORD_STATS_SCOPE: &str = "monitoring:record";

/// Upper bounds of the latency buckets, in milliseconds; one more bucket holds the rest.
pub const LATENCY_BOUNDS_MS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0];

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    tenant_id: String,
    model: String,
    version: String,
}

#[derive(Clone, Debug)]
struct Window {
    start: DateTime<Utc>,
    count: u64,
    errors: u64,
    latency: Vec<u64>,
    /// Per feature in model order: its name, its counts per bin, and each bin's training share.
    features: Vec<(String, Vec<u64>, Vec<f64>)>,
}

impl Window {
    fn new(model: &Model) -> Self {
        let features = model
            .manifest()
            .features
            .iter()
            .map(|feature| (feature.name.clone(), vec![0; feature.bins()], feature.expected_shares()))
            .collect();
        Self { start: Utc::now(), count: 0, errors: 0, latency: vec![0; LATENCY_BOUNDS_MS.len() + 1], features }
    }
}

/// The bin of `value` among `edges` (the first and last edges bound the training range; values
/// outside it count in the outer bins).
pub fn bin_of(edges: &[f64], value: f64) -> usize {
    if edges.len() < 3 {
        return 0;
    }
    edges[1..edges.len() - 1].partition_point(|edge| *edge <= value)
}

/// The running sums of one service, shared by its request handlers.
#[derive(Clone, Debug, Default)]
pub struct InferenceMonitor {
    windows: Arc<Mutex<HashMap<Key, Window>>>,
}

impl InferenceMonitor {
    /// Counts one call of `model` for `tenant_id`: its inputs in model order (when they were
    /// valid), how long it took, and whether it succeeded.
    pub fn record(&self, tenant_id: &str, model: &Model, row: Option<&[f32]>, latency: Duration, ok: bool) {
        let key = Key {
            tenant_id: tenant_id.to_owned(),
            model: model.name().to_owned(),
            version: model.version().to_owned(),
        };
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = windows.entry(key).or_insert_with(|| Window::new(model));
        window.count += 1;
        if !ok {
            window.errors += 1;
        }
        let millis = latency.as_secs_f64() * 1000.0;
        window.latency[LATENCY_BOUNDS_MS.partition_point(|bound| *bound < millis)] += 1;
        if let Some(row) = row {
            for ((feature, value), (_, counts, _)) in
                model.manifest().features.iter().zip(row).zip(window.features.iter_mut())
            {
                let bin = bin_of(&feature.bin_edges, f64::from(*value)).min(counts.len() - 1);
                counts[bin] += 1;
            }
        }
    }

    fn take(&self) -> HashMap<Key, Window> {
        std::mem::take(&mut *self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Reports the sums to ai-governance every `config.monitoring_interval_ms` until
    /// `shutdown`, then once more. A report whose answer does not come is sent again as it was,
    /// its windows' ids included, before the sums taken since (which wait meanwhile): ai-governance
    /// records a window once by its id, so a report recorded although its answer was lost counts
    /// once. A report ai-governance refuses for good is dropped, with an error logged.
    pub async fn run(self, config: RelayConfig, signer: TokenSigner, service: &'static str, shutdown: Shutdown) {
        let Some(url) = config.governance_url.clone() else { return };
        let client = match Endpoint::from_shared(url) {
            Ok(endpoint) => MonitoringClient::new(
                endpoint.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30)).connect_lazy(),
            ),
            Err(error) => {
                tracing::error!(%error, "audit.governance_url is not a valid URL; inference summaries not sent");
                return;
            }
        };
        let caller = Caller::service(service, RECORD_STATS_SCOPE);
        let interval = Duration::from_millis(config.monitoring_interval_ms);
        let mut unsent: Option<Vec<proto::InferenceWindow>> = None;
        loop {
            let stopping = tokio::select! {
                () = shutdown.clone().wait() => true,
                () = tokio::time::sleep(interval) => false,
            };
            let stopping_by = tokio::time::Instant::now() + crate::audit::STOPPING_GRACE;
            for again in [true, false] {
                let windows = if again {
                    match unsent.take() {
                        Some(windows) => windows,
                        None => continue,
                    }
                } else {
                    let taken = self.take();
                    if taken.is_empty() {
                        break;
                    }
                    let end = Utc::now();
                    taken.iter().map(|(key, window)| window_message(service, key, window, end)).collect()
                };
                let mut request = tonic::Request::new(proto::RecordInferenceStatsRequest { windows: windows.clone() });
                auth::attach_token(request.metadata_mut(), &signer.mint(&caller));
                if stopping {
                    let left = stopping_by.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    request.set_timeout(left);
                }
                // A report in flight runs its course, so that its answer tells whether to send it again.
                match client.clone().record_inference_stats(request).await {
                    Ok(_) => {}
                    Err(status) if refused_for_good(status.code()) => tracing::error!(
                        service,
                        error = %status,
                        windows = windows.len(),
                        "ai-governance refused inference summaries; they are dropped"
                    ),
                    Err(status) => {
                        tracing::warn!(service, error = %status, "cannot send inference summaries; sent again next time");
                        unsent = Some(windows);
                        // Stopping, the sums taken since are tried all the same: there is no next time.
                        if !stopping {
                            break;
                        }
                    }
                }
            }
            if stopping {
                return;
            }
        }
    }
}

/// Whether ai-governance's answer `code` says a report would be refused however often it came.
fn refused_for_good(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(code, Code::InvalidArgument | Code::PermissionDenied)
}

fn window_message(service: &str, key: &Key, window: &Window, end: DateTime<Utc>) -> proto::InferenceWindow {
    proto::InferenceWindow {
        tenant_id: key.tenant_id.clone(),
        service: service.to_owned(),
        model: key.model.clone(),
        version: key.version.clone(),
        start_time: Some(crate::time::to_proto(window.start)),
        end_time: Some(crate::time::to_proto(end)),
        count: window.count,
        errors: window.errors,
        latency_buckets: window.latency.clone(),
        latency_bounds_ms: LATENCY_BOUNDS_MS.to_vec(),
        features: window
            .features
            .iter()
            .map(|(name, counts, shares)| proto::FeatureBins {
                name: name.clone(),
                counts: counts.clone(),
                expected_shares: shares.clone(),
            })
            .collect(),
        window_id: uuid::Uuid::now_v7().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_bins_their_edges_make() {
        let edges = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(bin_of(&edges, -5.0), 0);
        assert_eq!(bin_of(&edges, 0.5), 0);
        assert_eq!(bin_of(&edges, 1.0), 1);
        assert_eq!(bin_of(&edges, 2.5), 2);
        assert_eq!(bin_of(&edges, 99.0), 2);
        assert_eq!(bin_of(&[0.0, 1.0], 7.0), 0);
    }
}
