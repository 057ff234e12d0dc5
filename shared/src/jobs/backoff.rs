//! Retry delays: exponential with full jitter in the upper half.

use super::JobPolicy;
use rand::Rng;
use std::time::Duration;

/// The delay before attempt `attempt + 1`, after `attempt` (1-based) failed.
pub fn backoff_delay(policy: &JobPolicy, attempt: u32) -> Duration {
    let exp = policy.base_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(policy.max_backoff);
    // Between half and all of the capped delay: spreads a burst of failures apart while
    // keeping the order of growing delays.
    let half = capped / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobKind;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = JobKind::SendEmail.policy();
        let mut previous_max = Duration::ZERO;
        for attempt in 1..=12 {
            let d = backoff_delay(&policy, attempt);
            let nominal = policy.base_backoff.saturating_mul(1 << (attempt - 1)).min(policy.max_backoff);
            assert!(d >= nominal / 2 && d <= nominal, "attempt {attempt}: {d:?} vs {nominal:?}");
            assert!(nominal >= previous_max);
            previous_max = nominal;
        }
        assert!(backoff_delay(&policy, 30) <= policy.max_backoff);
    }
}
