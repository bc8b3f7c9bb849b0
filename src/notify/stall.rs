//! When to send `stalled` (docs/design.md §12): no verified commit for
//! `stall_after` while cycles keep running — once, then again each further
//! `stall_after`. Fed the cycle ends and the time; pure.

use std::time::Duration;

use tokio::time::Instant;

/// What a stall alert says.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Stall {
    /// When the window started: the last commit, or the daemon's start.
    pub(crate) since: Instant,
    pub(crate) cycles_without_commit: u64,
    pub(crate) cost_usd: f64,
}

/// Counts cycles since the last verified commit and says when to alert.
pub(crate) struct StallWatch {
    stall_after: Duration,
    since: Instant,
    cycles_without_commit: u64,
    cost_usd: f64,
    /// How many windows of `stall_after` have been alerted since `since`.
    windows_told: u32,
}

impl StallWatch {
    /// `stall_after` zero never alerts.
    pub(crate) fn new(stall_after: Duration, now: Instant) -> StallWatch {
        StallWatch {
            stall_after,
            since: now,
            cycles_without_commit: 0,
            cost_usd: 0.0,
            windows_told: 0,
        }
    }

    /// A cycle ended at `now`; returns the alert to send, if it is due.
    /// Checked at cycle ends: a stall is cycles that keep running without a
    /// commit, so a daemon waiting on a usage limit is not stalled.
    pub(crate) fn cycle_finished(
        &mut self,
        committed: bool,
        cost_usd: f64,
        now: Instant,
    ) -> Option<Stall> {
        if committed {
            *self = StallWatch::new(self.stall_after, now);
            return None;
        }
        self.cycles_without_commit += 1;
        self.cost_usd += cost_usd;
        if self.stall_after.is_zero() {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.since);
        let windows =
            u32::try_from(elapsed.as_nanos() / self.stall_after.as_nanos()).unwrap_or(u32::MAX);
        if windows <= self.windows_told {
            return None;
        }
        self.windows_told = windows;
        Some(Stall {
            since: self.since,
            cycles_without_commit: self.cycles_without_commit,
            cost_usd: self.cost_usd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn stalled_fires_once_per_window_and_a_commit_starts_a_new_one() {
        let start = Instant::now();
        let mut watch = StallWatch::new(3 * HOUR, start);
        let mut alerts = Vec::new();
        // A failed cycle every 10 minutes for 7 hours.
        for minute in (10..=420).step_by(10) {
            tokio::time::advance(Duration::from_secs(600)).await;
            if let Some(stall) = watch.cycle_finished(false, 0.5, Instant::now()) {
                alerts.push((minute, stall.cycles_without_commit));
            }
        }
        assert_eq!(alerts, [(180, 18), (360, 36)]);
        // A commit resets the window.
        assert_eq!(watch.cycle_finished(true, 1.0, Instant::now()), None);
        tokio::time::advance(2 * HOUR).await;
        assert_eq!(watch.cycle_finished(false, 0.5, Instant::now()), None);
        tokio::time::advance(HOUR).await;
        let stall = watch.cycle_finished(false, 0.25, Instant::now()).unwrap();
        assert_eq!(stall.cycles_without_commit, 2);
        assert!((stall.cost_usd - 0.75).abs() < 1e-9);
        assert_eq!(Instant::now() - stall.since, 3 * HOUR);
    }

    #[tokio::test(start_paused = true)]
    async fn no_cycles_no_stall_and_a_long_gap_alerts_once_not_per_window_missed() {
        let mut watch = StallWatch::new(HOUR, Instant::now());
        // Waiting ten hours on a usage limit: no cycle ends, nothing fires;
        // the first cycle after it alerts once.
        tokio::time::advance(10 * HOUR).await;
        assert!(watch.cycle_finished(false, 0.0, Instant::now()).is_some());
        assert!(watch.cycle_finished(false, 0.0, Instant::now()).is_none());
        let mut never = StallWatch::new(Duration::ZERO, Instant::now());
        tokio::time::advance(10 * HOUR).await;
        assert!(never.cycle_finished(false, 0.0, Instant::now()).is_none());
    }
}
