//! The in-process backend, for a single gateway: TATs and monthly counters in maps behind one
//! mutex. Critical sections are a few map operations; TATs in the past are pruned as the map
//! grows, since a missing TAT and a past one mean the same.

use std::{collections::HashMap, sync::Mutex};

use super::gcra::{self, Gcra, Outcome};

/// The smallest map size at which pruning starts.
const PRUNE_FLOOR: usize = 1024;

#[derive(Debug)]
pub(super) struct LocalBackend {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// TAT of each limited subject, in microseconds since the UNIX epoch.
    tats: HashMap<String, u64>,
    /// Prune when `tats` reaches this size.
    prune_at: usize,
    /// Inference calls of each tenant in the month named beside them.
    inference: HashMap<String, (String, u64)>,
}

/// The result of asking for an inference call's units of a month's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct QuotaOutcome {
    pub(super) granted: bool,
    /// Units counted this month, this call's included when granted.
    pub(super) used: u64,
}

impl LocalBackend {
    pub(super) fn new() -> Self {
        Self { state: Mutex::new(State { tats: HashMap::new(), prune_at: PRUNE_FLOOR, inference: HashMap::new() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a harmful way.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn acquire(&self, keys: &[String], limits: &[Gcra], now: u64) -> Outcome {
        let mut state = self.state();
        let tats: Vec<Option<u64>> = keys.iter().map(|key| state.tats.get(key).copied()).collect();
        let (outcome, new_tats) = gcra::admit(limits, &tats, now);
        if let Some(new_tats) = new_tats {
            for (key, tat) in keys.iter().zip(new_tats) {
                state.tats.insert(key.clone(), tat);
            }
            if state.tats.len() >= state.prune_at {
                state.tats.retain(|_, tat| *tat > now);
                state.prune_at = (state.tats.len() * 2).max(PRUNE_FLOOR);
            }
        }
        outcome
    }

    /// Drops every rate state of `tenant_id`.
    pub(super) fn forget_tenant(&self, tenant_id: &str) {
        let prefix = format!("{tenant_id}:");
        self.state().tats.retain(|key, _| !key.starts_with(&prefix));
    }

    /// `units` of the month's `quota` for one call, all or none.
    pub(super) fn reserve_inference(&self, tenant_id: &str, month: &str, quota: u64, units: u64) -> QuotaOutcome {
        let mut state = self.state();
        let entry = state.inference.entry(tenant_id.to_owned()).or_insert_with(|| (month.to_owned(), 0));
        if entry.0 != month {
            *entry = (month.to_owned(), 0);
        }
        let granted = entry.1.saturating_add(units) <= quota;
        if granted {
            entry.1 += units;
        }
        QuotaOutcome { granted, used: entry.1 }
    }

    /// The tenant's inference units counted in `month`.
    pub(super) fn inference_used(&self, tenant_id: &str, month: &str) -> u64 {
        self.state().inference.get(tenant_id).filter(|(counted, _)| counted == month).map_or(0, |(_, used)| *used)
    }

    pub(super) fn refund_inference(&self, tenant_id: &str, month: &str, units: u64) {
        let mut state = self.state();
        if let Some((counted_month, used)) = state.inference.get_mut(tenant_id)
            && counted_month == month
        {
            *used = used.saturating_sub(units);
        }
    }

    #[cfg(test)]
    pub(super) fn tracked_subjects(&self) -> usize {
        self.state().tats.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000_000_000;

    #[test]
    fn subjects_whose_tat_has_passed_are_pruned_as_the_map_grows() {
        let backend = LocalBackend::new();
        let gcra = Gcra::new(1000.0, 1);
        for subject in 0..PRUNE_FLOOR - 1 {
            assert!(backend.acquire(&[format!("old-{subject}")], &[gcra], NOW).allowed);
        }
        assert_eq!(backend.tracked_subjects(), PRUNE_FLOOR - 1);
        let later = NOW + 1_000_000;
        assert!(backend.acquire(&["new".to_owned()], &[gcra], later).allowed);
        assert_eq!(backend.tracked_subjects(), 1, "only the subject with a future TAT is kept");
    }

    #[test]
    fn the_monthly_counter_stops_at_the_quota_and_starts_again_next_month() {
        let backend = LocalBackend::new();
        let granted: Vec<bool> = (0..4).map(|_| backend.reserve_inference("tenant", "2025-01", 3, 1).granted).collect();
        assert_eq!(granted, [true, true, true, false]);
        assert_eq!(backend.reserve_inference("other", "2025-01", 3, 1), QuotaOutcome { granted: true, used: 1 });
        assert_eq!(backend.reserve_inference("tenant", "2025-02", 3, 1), QuotaOutcome { granted: true, used: 1 });
    }

    #[test]
    fn a_call_takes_all_its_units_or_none() {
        let backend = LocalBackend::new();
        assert_eq!(backend.reserve_inference("tenant", "2025-01", 10, 7), QuotaOutcome { granted: true, used: 7 });
        assert_eq!(backend.reserve_inference("tenant", "2025-01", 10, 4), QuotaOutcome { granted: false, used: 7 });
        assert_eq!(backend.reserve_inference("tenant", "2025-01", 10, 3), QuotaOutcome { granted: true, used: 10 });
        assert_eq!(backend.reserve_inference("other", "2025-01", 10, 11), QuotaOutcome { granted: false, used: 0 });
    }

    #[test]
    fn a_refund_gives_back_its_units_of_the_same_month_only() {
        let backend = LocalBackend::new();
        for _ in 0..2 {
            assert!(backend.reserve_inference("tenant", "2025-01", 4, 2).granted);
        }
        backend.refund_inference("tenant", "2024-12", 2);
        assert!(!backend.reserve_inference("tenant", "2025-01", 4, 1).granted);
        backend.refund_inference("tenant", "2025-01", 2);
        assert_eq!(backend.reserve_inference("tenant", "2025-01", 4, 2), QuotaOutcome { granted: true, used: 4 });
        backend.refund_inference("tenant", "2025-01", 9);
        assert_eq!(backend.inference_used("tenant", "2025-01"), 0, "never below zero");
    }
}
