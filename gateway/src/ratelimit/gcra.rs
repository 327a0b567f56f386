//! The generic cell rate algorithm: one theoretical arrival time (TAT) per limited subject, in
//! microseconds. A request fits when the TAT it would push forward stays within the burst
//! tolerance of now. The Redis script in `redis_store` runs the same steps; this is the
//! reference, and the in-process backend calls it directly.

/// One GCRA limit: a sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Microseconds between two requests at the sustained rate.
    interval: u64,
    /// Requests that may arrive at once.
    burst: u64,
}

/// The longest emission interval: one request an hour. Plans are validated within it, and it
/// keeps `now + tolerance` below 2^53, where Lua's numbers are still exact.
pub(crate) const MAX_INTERVAL_MICROS: u64 = 3_600_000_000;
/// The largest burst, for the same reason.
pub(crate) const MAX_BURST: u64 = 1_000_000;

const MICROS: u64 = 1_000_000;

impl Gcra {
    pub(crate) fn new(requests_per_second: f64, burst: u32) -> Self {
        let interval = (MICROS as f64 / requests_per_second).round();
        let interval = if interval.is_finite() { interval as u64 } else { MAX_INTERVAL_MICROS };
        Self { interval: interval.clamp(1, MAX_INTERVAL_MICROS), burst: u64::from(burst).clamp(1, MAX_BURST) }
    }

    pub(crate) fn interval(self) -> u64 {
        self.interval
    }

    pub(crate) fn burst(self) -> u64 {
        self.burst
    }

    /// How far ahead of now the TAT may be after a request: the burst, in time.
    fn tolerance(self) -> u64 {
        self.interval * self.burst
    }

    /// Whether one more request fits, given the backlog (TAT − now, zero when the TAT is past).
    pub(crate) fn fits(self, backlog: u64) -> bool {
        backlog + self.interval <= self.tolerance()
    }

    /// Requests that would fit right now.
    pub(crate) fn remaining(self, backlog: u64) -> u64 {
        self.tolerance().saturating_sub(backlog) / self.interval
    }

    /// Microseconds until one more request fits (zero when one fits now).
    pub(crate) fn wait(self, backlog: u64) -> u64 {
        (backlog + self.interval).saturating_sub(self.tolerance())
    }

    /// Microseconds until `remaining` grows by one (zero when the burst is whole): the window in
    /// which the client can use no more than what remains.
    pub(crate) fn until_next_cell(self, backlog: u64) -> u64 {
        match backlog % self.interval {
            _ if backlog == 0 => 0,
            0 => self.interval,
            partial => partial,
        }
    }

    /// The time the whole burst takes to come back, in whole seconds (at least one): the window
    /// of the advertised policy, so that `q / w` is the sustained rate.
    pub(crate) fn window_secs(self) -> u64 {
        self.tolerance().div_ceil(MICROS).max(1)
    }
}

/// What a set of limits says about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) allowed: bool,
    /// For each limit, the backlog (TAT − now) after the decision.
    pub(crate) backlogs: Vec<u64>,
}

/// Applies one request to every limit at once: it is allowed only if it fits all of them, and
/// only then are their TATs moved. Returns the outcome and, when allowed, the new TATs.
/// A TAT further ahead than a whole burst, which only a clock that stepped back leaves, counts
/// as a whole burst spent, and is brought back to it (in the TATs returned, refused or not), so
/// that the step does not lock the subject out for its length.
pub(crate) fn admit(limits: &[Gcra], tats: &[Option<u64>], now: u64) -> (Outcome, Option<Vec<u64>>) {
    let mut backlogs: Vec<u64> = tats
        .iter()
        .zip(limits)
        .map(|(tat, limit)| tat.map_or(0, |tat| tat.saturating_sub(now)).min(limit.tolerance()))
        .collect();
    let allowed = limits.iter().zip(&backlogs).all(|(limit, backlog)| limit.fits(*backlog));
    if !allowed {
        let stepped_back = tats.iter().zip(&backlogs).any(|(tat, backlog)| tat.is_some_and(|tat| tat > now + backlog));
        let tats = stepped_back.then(|| backlogs.iter().map(|backlog| now + backlog).collect());
        return (Outcome { allowed, backlogs }, tats);
    }
    for (backlog, limit) in backlogs.iter_mut().zip(limits) {
        *backlog += limit.interval;
    }
    let tats = backlogs.iter().map(|backlog| now + backlog).collect();
    (Outcome { allowed, backlogs }, Some(tats))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000_000_000;

    #[test]
    fn the_interval_is_the_inverse_of_the_rate() {
        let cases = [(10.0, 100_000), (0.5, 2_000_000), (3.0, 333_333), (1e9, 1), (1e-9, MAX_INTERVAL_MICROS)];
        for (rate, interval) in cases {
            assert_eq!(Gcra::new(rate, 5).interval(), interval, "{rate}/s");
        }
    }

    #[test]
    fn a_fresh_subject_may_send_its_burst_at_once_and_no_more() {
        let gcra = Gcra::new(10.0, 20);
        let mut tat = None;
        for sent in 1..=20 {
            let (outcome, tats) = admit(&[gcra], &[tat], NOW);
            assert!(outcome.allowed, "request {sent} of the burst");
            assert_eq!(gcra.remaining(outcome.backlogs[0]), 20 - sent);
            tat = tats.unwrap()[0].into();
        }
        let (outcome, tats) = admit(&[gcra], &[tat], NOW);
        assert!(!outcome.allowed);
        assert_eq!(tats, None, "a refused request moves nothing");
        assert_eq!(gcra.wait(outcome.backlogs[0]), 100_000, "one emission interval until the next fits");
    }

    #[test]
    fn one_request_fits_again_after_one_emission_interval() {
        let gcra = Gcra::new(10.0, 2);
        let (_, tats) = admit(&[gcra], &[None], NOW);
        let (_, tats) = admit(&[gcra], &[tats.unwrap()[0].into()], NOW);
        let tat = Some(tats.unwrap()[0]);
        assert!(!admit(&[gcra], &[tat], NOW).0.allowed);
        assert!(!admit(&[gcra], &[tat], NOW + 99_999).0.allowed, "one microsecond early");
        let (outcome, _) = admit(&[gcra], &[tat], NOW + 100_000);
        assert!(outcome.allowed);
        assert_eq!(gcra.remaining(outcome.backlogs[0]), 0);
    }

    #[test]
    fn a_past_tat_counts_as_an_idle_subject() {
        let gcra = Gcra::new(1.0, 3);
        let (outcome, tats) = admit(&[gcra], &[Some(NOW - 60_000_000)], NOW);
        assert!(outcome.allowed);
        assert_eq!(tats, Some(vec![NOW + 1_000_000]));
        assert_eq!(gcra.remaining(outcome.backlogs[0]), 2);
    }

    #[test]
    fn a_clock_that_steps_back_leaves_a_whole_burst_spent_and_no_longer_wait() {
        let gcra = Gcra::new(10.0, 5);
        let mut tat = None;
        for _ in 0..5 {
            tat = admit(&[gcra], &[tat], NOW).1.unwrap()[0].into();
        }
        // The clock steps back a minute: refused, the wait one interval, the TAT brought back.
        let earlier = NOW - 60_000_000;
        let (outcome, tats) = admit(&[gcra], &[tat], earlier);
        assert!(!outcome.allowed);
        assert_eq!(gcra.wait(outcome.backlogs[0]), 100_000, "{outcome:?}");
        assert_eq!(tats, Some(vec![earlier + 500_000]));
        let (outcome, _) = admit(&[gcra], &[tats.unwrap()[0].into()], earlier + 100_000);
        assert!(outcome.allowed, "one interval later, as after any spent burst");
    }

    #[test]
    fn a_request_refused_by_one_limit_spends_none() {
        let wide = Gcra::new(10.0, 10);
        let narrow = Gcra::new(10.0, 1);
        let (outcome, tats) = admit(&[wide, narrow], &[None, Some(NOW + 100_000)], NOW);
        assert!(!outcome.allowed);
        assert_eq!(tats, None);
        assert_eq!(outcome.backlogs, vec![0, 100_000]);
    }

    #[test]
    fn the_effective_window_is_the_time_until_the_next_cell() {
        let gcra = Gcra::new(2.0, 4);
        let cases = [(0, 0), (500_000, 500_000), (750_000, 250_000), (1_000_000, 500_000), (1_200_000, 200_000)];
        for (backlog, until) in cases {
            assert_eq!(gcra.until_next_cell(backlog), until, "backlog {backlog}");
        }
    }

    #[test]
    fn the_policy_window_makes_quota_over_window_the_rate() {
        let cases = [(10.0, 20, 2), (50.0, 100, 2), (1.0, 1, 1), (0.5, 3, 6), (100.0, 1, 1)];
        for (rate, burst, window) in cases {
            assert_eq!(Gcra::new(rate, burst).window_secs(), window, "{rate}/s burst {burst}");
        }
    }
}
