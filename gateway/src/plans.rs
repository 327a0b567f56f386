//! Plan limits: what a tenant on Starter, Professional or Enterprise may do. The numbers live in
//! configuration (`[gateway.plans.<plan>]`), so an operator changes them without a release.

use aigronova_platform::config::ConfigError;
use serde::{Deserialize, Serialize};

use crate::store::Plan;

/// The limits of one plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanLimits {
    /// Sustained requests per second of a tenant.
    pub requests_per_second: f64,
    /// Requests a tenant may send at once above the sustained rate.
    pub burst: u32,
    /// Sustained requests per second of each API key on its own, within the tenant's rate, so
    /// that one key cannot spend the whole tenant's; unset: keys are limited only together.
    pub key_requests_per_second: Option<f64>,
    /// Requests one API key may send at once above its sustained rate; set with
    /// `key_requests_per_second`.
    pub key_burst: Option<u32>,
    /// Inference calls per calendar month (UTC) of a tenant.
    pub monthly_inference_quota: u64,
    /// Largest request body, in bytes, after decompression.
    pub max_body_bytes: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self::starter()
    }
}

impl PlanLimits {
    fn starter() -> Self {
        Self {
            requests_per_second: 10.0,
            burst: 20,
            key_requests_per_second: None,
            key_burst: None,
            monthly_inference_quota: 10_000,
            max_body_bytes: 1024 * 1024,
        }
    }

    fn professional() -> Self {
        Self {
            requests_per_second: 50.0,
            burst: 100,
            key_requests_per_second: Some(25.0),
            key_burst: Some(50),
            monthly_inference_quota: 250_000,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }

    fn enterprise() -> Self {
        Self {
            requests_per_second: 200.0,
            burst: 400,
            key_requests_per_second: Some(100.0),
            key_burst: Some(200),
            monthly_inference_quota: 5_000_000,
            max_body_bytes: 50 * 1024 * 1024,
        }
    }

    /// The rate and burst of one API key on its own, when the plan limits keys.
    pub(crate) fn key_limits(&self) -> Option<(f64, u32)> {
        self.key_requests_per_second.zip(self.key_burst)
    }

    fn validate(&self, plan: &str) -> Result<(), ConfigError> {
        validate_rate(plan, "", self.requests_per_second, self.burst)?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError(format!("gateway.plans.{plan}.max_body_bytes must be positive")));
        }
        match (self.key_requests_per_second, self.key_burst) {
            (None, None) => {}
            (Some(rate), Some(burst)) => {
                validate_rate(plan, "key_", rate, burst)?;
                if rate > self.requests_per_second || burst > self.burst {
                    return Err(ConfigError(format!(
                        "gateway.plans.{plan}.key_requests_per_second and key_burst must not exceed the tenant's \
                         requests_per_second and burst (a key is limited within its tenant)"
                    )));
                }
            }
            _ => {
                return Err(ConfigError(format!(
                    "gateway.plans.{plan}.key_requests_per_second and key_burst go together: set both or neither"
                )));
            }
        }
        // A body becomes one gRPC message, which also carries the request's other fields.
        let largest = aigronova_platform::grpc::MAX_MESSAGE_BYTES - 1024 * 1024;
        if self.max_body_bytes > largest {
            return Err(ConfigError(format!(
                "gateway.plans.{plan}.max_body_bytes must be at most {largest} (63 MiB: a body travels as one gRPC \
                 message of at most 64 MiB)"
            )));
        }
        Ok(())
    }
}

/// Checks `gateway.plans.<plan>.<prefix>requests_per_second` and `<prefix>burst`.
fn validate_rate(plan: &str, prefix: &str, requests_per_second: f64, burst: u32) -> Result<(), ConfigError> {
    let slowest = 1_000_000.0 / crate::ratelimit::MAX_INTERVAL_MICROS as f64;
    if !(requests_per_second.is_finite() && (slowest..=1_000_000.0).contains(&requests_per_second)) {
        return Err(ConfigError(format!(
            "gateway.plans.{plan}.{prefix}requests_per_second must be between one an hour ({slowest:.6}) and 1000000"
        )));
    }
    if burst == 0 || u64::from(burst) > crate::ratelimit::MAX_BURST {
        return Err(ConfigError(format!(
            "gateway.plans.{plan}.{prefix}burst must be between 1 and {}",
            crate::ratelimit::MAX_BURST
        )));
    }
    Ok(())
}

/// The limits of every plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plans {
    pub starter: PlanLimits,
    pub professional: PlanLimits,
    pub enterprise: PlanLimits,
}

impl Default for Plans {
    fn default() -> Self {
        Self {
            starter: PlanLimits::starter(),
            professional: PlanLimits::professional(),
            enterprise: PlanLimits::enterprise(),
        }
    }
}

impl Plans {
    pub fn limits(&self, plan: Plan) -> &PlanLimits {
        match plan {
            Plan::Starter => &self.starter,
            Plan::Professional => &self.professional,
            Plan::Enterprise => &self.enterprise,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.starter.validate("starter")?;
        self.professional.validate("professional")?;
        self.enterprise.validate("enterprise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_body_must_fit_one_grpc_message() {
        let largest = aigronova_platform::grpc::MAX_MESSAGE_BYTES - 1024 * 1024;
        let plans = |max_body_bytes| Plans {
            enterprise: PlanLimits { max_body_bytes, ..PlanLimits::enterprise() },
            ..Plans::default()
        };
        assert!(plans(largest).validate().is_ok());
        let error = plans(largest + 1).validate().unwrap_err().to_string();
        assert!(error.contains("gateway.plans.enterprise.max_body_bytes must be at most"), "{error}");
    }

    #[test]
    fn key_limits_come_in_pairs_within_the_tenants() {
        let plans = |key_requests_per_second, key_burst| Plans {
            professional: PlanLimits { key_requests_per_second, key_burst, ..PlanLimits::professional() },
            ..Plans::default()
        };
        assert!(Plans::default().validate().is_ok());
        assert_eq!(plans(None, None).professional.key_limits(), None);
        assert!(plans(None, None).validate().is_ok(), "keys limited only together");
        assert_eq!(plans(Some(5.0), Some(10)).professional.key_limits(), Some((5.0, 10)));
        for (rate, burst, expected) in [
            (Some(5.0), None, "set both or neither"),
            (None, Some(10), "set both or neither"),
            (Some(60.0), Some(10), "must not exceed the tenant's"),
            (Some(5.0), Some(101), "must not exceed the tenant's"),
            (Some(0.0), Some(10), "key_requests_per_second must be between"),
            (Some(f64::NAN), Some(10), "key_requests_per_second must be between"),
            (Some(5.0), Some(0), "key_burst must be between"),
        ] {
            let error = plans(rate, burst).validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{rate:?} {burst:?}: {error}");
            assert!(error.contains("gateway.plans.professional."), "{error}");
        }
    }
}
