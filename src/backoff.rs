//! The delay before retrying a phase run after an API error (429, 529, 5xx,
//! connection errors): exponential from `retry_base_delay`, capped at
//! `retry_max_delay`, with "equal jitter".
//!
//! Attempt `n` (1-based: the delay after the first failed try is attempt 1) has a
//! ceiling of `base × 2^(n-1)`, capped at `max`. The delay is half that ceiling
//! (rounded up) plus a uniformly random part of up to the other half. So it never
//! exceeds `max`, it is never shorter than half the ceiling, and it is 0 only when
//! the ceiling is (`base` or `max` is 0). Half fixed keeps a sensible minimum wait
//! for a struggling server; half random spreads retries out.
//!
//! Pure: the random source is passed in, so tests use a seeded one.

use std::time::Duration;

/// How long to wait before retry number `attempt` (1-based; 0 counts as 1).
pub(crate) fn retry_delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    rng: &mut fastrand::Rng,
) -> Duration {
    let ceiling = ceiling(attempt, base, max);
    let ceiling_nanos = ceiling.as_nanos();
    let random_nanos = rng.u128(0..=ceiling_nanos / 2);
    let fixed_nanos = ceiling_nanos - ceiling_nanos / 2;
    from_nanos(fixed_nanos + random_nanos)
}

/// `base × 2^(attempt-1)`, capped at `max`, without overflow.
fn ceiling(attempt: u32, base: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1);
    1_u32
        .checked_shl(doublings)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |delay| delay.min(max))
}

/// The inverse of `Duration::as_nanos`, for values that came from a `Duration`.
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn bounds_for_attempts_1_to_20() {
        let mut rng = fastrand::Rng::with_seed(42);
        let (base, max) = (secs(5), secs(300));
        let mut previous_ceiling = Duration::ZERO;
        for attempt in 1..=20 {
            let ceiling = (base * 2_u32.pow(attempt - 1)).min(max);
            assert!(ceiling >= previous_ceiling, "the cap never shrinks");
            previous_ceiling = ceiling;
            for _ in 0..200 {
                let delay = retry_delay(attempt, base, max, &mut rng);
                assert!(
                    delay <= ceiling,
                    "attempt {attempt}: {delay:?} > {ceiling:?}"
                );
                assert!(delay >= ceiling / 2, "attempt {attempt}: {delay:?} < half");
            }
        }
        assert_eq!(previous_ceiling, max);
    }

    #[test]
    fn the_ceilings_double_then_stay_at_the_cap() {
        let ceilings: Vec<u64> = (1..=9)
            .map(|attempt| ceiling(attempt, secs(5), secs(300)).as_secs())
            .collect();
        assert_eq!(ceilings, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(ceiling(0, secs(5), secs(300)), secs(5), "0 counts as 1");
    }

    #[test]
    fn the_jitter_spreads_over_the_upper_half() {
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| retry_delay(3, secs(10), secs(300), &mut rng))
            .collect();
        let lowest = delays.iter().min().unwrap();
        let highest = delays.iter().max().unwrap();
        assert!(*lowest < secs(21), "{lowest:?}");
        assert!(*highest > secs(39), "{highest:?}");
    }

    #[test]
    fn huge_attempt_numbers_stay_capped() {
        let mut rng = fastrand::Rng::with_seed(1);
        for attempt in [32, 33, 64, 1_000, u32::MAX] {
            let delay = retry_delay(attempt, secs(5), secs(300), &mut rng);
            assert!((secs(150)..=secs(300)).contains(&delay), "{delay:?}");
        }
        // Even when neither base nor cap fits in 64 bits of nanoseconds.
        let delay = retry_delay(u32::MAX, Duration::MAX, Duration::MAX, &mut rng);
        assert!(delay >= Duration::MAX / 2);
    }

    #[test]
    fn zero_only_from_a_zero_base_or_cap() {
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(
            retry_delay(1, Duration::ZERO, secs(300), &mut rng),
            Duration::ZERO
        );
        assert_eq!(
            retry_delay(9, Duration::ZERO, secs(300), &mut rng),
            Duration::ZERO
        );
        assert_eq!(
            retry_delay(1, secs(5), Duration::ZERO, &mut rng),
            Duration::ZERO
        );
        let tiny = Duration::from_nanos(1);
        for attempt in 1..=3 {
            assert!(retry_delay(attempt, tiny, secs(1), &mut rng) >= tiny);
        }
    }

    #[test]
    fn a_cap_below_the_base_wins() {
        let mut rng = fastrand::Rng::with_seed(4);
        for attempt in 1..=5 {
            assert!(retry_delay(attempt, secs(60), secs(10), &mut rng) <= secs(10));
        }
    }
}
