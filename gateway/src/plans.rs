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
    /// The share of the tenant's rate and burst each API key gets on its own (0 to 1), so that
    /// one key cannot spend the whole tenant's; 0: keys are limited only together.
    pub key_share: f64,
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
            key_share: 0.0,
            monthly_inference_quota: 10_000,
            max_body_bytes: 1024 * 1024,
        }
    }

    fn professional() -> Self {
        Self {
            requests_per_second: 50.0,
            burst: 100,
            key_share: 0.5,
            monthly_inference_quota: 250_000,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }

    fn enterprise() -> Self {
        Self {
            requests_per_second: 200.0,
            burst: 400,
            key_share: 0.5,
            monthly_inference_quota: 5_000_000,
            max_body_bytes: 50 * 1024 * 1024,
        }
    }

    /// The rate and burst of one API key on its own, when the plan limits keys: its share of the
    /// tenant's, and at least one request at once.
    pub(crate) fn key_limits(&self) -> Option<(f64, u32)> {
        (self.key_share > 0.0).then(|| {
            let burst = (f64::from(self.burst) * self.key_share).ceil().max(1.0) as u32;
            (self.requests_per_second * self.key_share, burst)
        })
    }

    fn validate(&self, plan: &str) -> Result<(), ConfigError> {
        validate_rate(plan, "", self.requests_per_second, self.burst)?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError(format!("gateway.plans.{plan}.max_body_bytes must be positive")));
        }
        if !(0.0..=1.0).contains(&self.key_share) {
            return Err(ConfigError(format!(
                "gateway.plans.{plan}.key_share must be between 0 (keys limited only together) and 1"
            )));
        }
        if let Some((rate, burst)) = self.key_limits() {
            validate_rate(plan, "key_share of the ", rate, burst)?;
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
            "gateway.plans.{plan}.{prefix}requests_per_second must be between once an hour ({slowest:.6}) and 1000000"
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
    fn a_key_gets_its_share_of_the_tenants_rate_and_burst() {
        let plan = |key_share| PlanLimits { key_share, ..PlanLimits::professional() };
        assert!(Plans::default().validate().is_ok());
        assert_eq!(plan(0.0).key_limits(), None, "keys limited only together");
        assert_eq!(plan(0.5).key_limits(), Some((25.0, 50)));
        assert_eq!(plan(1.0).key_limits(), Some((50.0, 100)));
        assert_eq!(plan(0.001).key_limits(), Some((0.05, 1)), "at least one request at once");
        let lowered = Plans {
            professional: PlanLimits { requests_per_second: 20.0, burst: 40, ..PlanLimits::professional() },
            ..Plans::default()
        };
        assert!(lowered.validate().is_ok(), "lowering a tenant's rate keeps its keys' share valid");
        for key_share in [-0.1, 1.5, f64::NAN] {
            let plans = Plans { professional: plan(key_share), ..Plans::default() };
            let error = plans.validate().unwrap_err().to_string();
            assert!(error.contains("gateway.plans.professional.key_share must be between"), "{error}");
        }
    }
}
