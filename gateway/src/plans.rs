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
    /// Also limit each API key on its own, at the same rate.
    pub per_key: bool,
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
            per_key: false,
            monthly_inference_quota: 10_000,
            max_body_bytes: 1024 * 1024,
        }
    }

    fn professional() -> Self {
        Self {
            requests_per_second: 50.0,
            burst: 100,
            per_key: true,
            monthly_inference_quota: 250_000,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }

    fn enterprise() -> Self {
        Self {
            requests_per_second: 200.0,
            burst: 400,
            per_key: true,
            monthly_inference_quota: 5_000_000,
            max_body_bytes: 50 * 1024 * 1024,
        }
    }

    fn validate(&self, plan: &str) -> Result<(), ConfigError> {
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err(ConfigError(format!("gateway.plans.{plan}.requests_per_second must be positive")));
        }
        if self.burst == 0 || self.max_body_bytes == 0 {
            return Err(ConfigError(format!("gateway.plans.{plan}.burst and max_body_bytes must be positive")));
        }
        // A body becomes one gRPC message, which also carries the request's other fields.
        let largest = aigronova_platform::grpc::MAX_MESSAGE_BYTES - 1024 * 1024;
        if self.max_body_bytes > largest {
            return Err(ConfigError(format!(
                "gateway.plans.{plan}.max_body_bytes must be at most {largest} (63 MiB: a body travels as one gRPC \
                 message of at most 64 MiB)"
            )));
        }
        let slowest = 1_000_000.0 / crate::ratelimit::MAX_INTERVAL_MICROS as f64;
        if self.requests_per_second < slowest || self.requests_per_second > 1_000_000.0 {
            return Err(ConfigError(format!(
                "gateway.plans.{plan}.requests_per_second must be between one an hour ({slowest:.6}) and 1000000"
            )));
        }
        if u64::from(self.burst) > crate::ratelimit::MAX_BURST {
            return Err(ConfigError(format!(
                "gateway.plans.{plan}.burst must be at most {}",
                crate::ratelimit::MAX_BURST
            )));
        }
        Ok(())
    }
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
}
