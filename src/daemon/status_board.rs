//! The status board: the in-memory status.json, the heartbeat task that
//! writes it and pings the systemd watchdog, and the guards' line in it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::breaker::{Breaker, BreakerState};
use crate::state::{self, Durability, StatusFile};

use super::{Daemon, now_rfc3339, rfc3339};

/// The daemon's status.json in memory, shared with the heartbeat task that
/// writes it. Cloning gives another handle on the same board.
#[derive(Clone)]
pub(super) struct StatusBoard {
    /// What status.json says; behind a mutex because the heartbeat task
    /// writes it while the loop changes it.
    file: Arc<Mutex<StatusFile>>,
    /// Wakes the heartbeat task to write a changed status.
    changed: Arc<tokio::sync::Notify>,
}

impl StatusBoard {
    pub(super) fn new(file: StatusFile) -> StatusBoard {
        StatusBoard {
            file: Arc::new(Mutex::new(file)),
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Changes the status and wakes the heartbeat task.
    fn change(&self, change: impl FnOnce(&mut StatusFile)) {
        change(&mut self.file.lock().expect("status lock"));
        self.changed.notify_one();
    }

    /// Stamps the heartbeat and writes status.json (atomically, without
    /// fsync: it is a live view).
    fn write(&self, path: &std::path::Path) {
        let snapshot = {
            let mut status = self.file.lock().expect("status lock");
            status.heartbeat_at = now_rfc3339();
            status.clone()
        };
        if let Err(error) = state::save_json_with(path, &snapshot, Durability::ProcessDeath) {
            tracing::warn!(error = %format!("{error:#}"), "cannot write status.json");
        }
    }
}

/// How long status changes are gathered before status.json is rewritten.
pub(super) const STATUS_COALESCE: Duration = Duration::from_millis(100);

/// The last failure reasons, newest last, for logs and status.
pub(super) fn breaker_reasons(breaker: &Breaker) -> String {
    let reasons: Vec<String> = breaker
        .recent_failures()
        .map(|failure| failure.reason.clone())
        .collect();
    reasons[reasons.len().saturating_sub(3)..].join("; ")
}

/// One line for status.json: closed, open until when and why, half-open.
pub(super) fn describe_breaker(breaker: &Breaker) -> String {
    match breaker.state() {
        BreakerState::Closed {
            consecutive_failures,
        } => format!("closed ({consecutive_failures} consecutive failed cycles)"),
        BreakerState::Open { until, .. } => {
            format!(
                "open until {} — {}",
                rfc3339(until),
                breaker_reasons(breaker)
            )
        }
        BreakerState::HalfOpen { probes_passed } => {
            format!("half-open (probe cycles passed: {probes_passed})")
        }
    }
}

/// The breaker's state in one word, as `breaker_changed` events say it.
pub(super) fn breaker_state_name(breaker: &Breaker) -> &'static str {
    match breaker.state() {
        BreakerState::Closed { .. } => "closed",
        BreakerState::Open { .. } => "open",
        BreakerState::HalfOpen { .. } => "half_open",
    }
}

impl Daemon {
    /// Writes the guards' files, shows the breaker on the board and
    /// publishes `breaker_changed` when its state is not the one last told.
    pub(super) fn save_guards(&mut self) -> Result<()> {
        state::save_json(&self.paths.breaker(), &self.guards.breaker.snapshot())?;
        state::save_json(&self.paths.limiter(), &self.guards.limiter.snapshot())?;
        let breaker = describe_breaker(&self.guards.breaker);
        let state = breaker_state_name(&self.guards.breaker);
        if state != self.breaker_published {
            self.breaker_published = state;
            self.events
                .publish(crate::events::EventKind::BreakerChanged {
                    state: state.to_owned(),
                    detail: breaker.clone(),
                });
        }
        self.set_status(|status| status.breaker = breaker);
        Ok(())
    }

    /// Changes the status; the heartbeat task writes it to status.json within
    /// [`STATUS_COALESCE`], once for all the changes made meanwhile (a fast
    /// cycle changes it a dozen times in a few milliseconds).
    pub(super) fn set_status(&self, change: impl FnOnce(&mut StatusFile)) {
        self.board.change(change);
    }

    /// Writes status.json now (start-up and the final state at exit).
    pub(super) fn publish_status(&self) {
        self.board.write(&self.paths.status());
    }

    /// Rewrites status.json's heartbeat and pings the systemd watchdog from
    /// the runtime, so a wedged runtime stops both.
    pub(super) fn spawn_heartbeat(&self) {
        let board = self.board.clone();
        let path = self.paths.status();
        let shutdown = self.signals.shutdown.clone();
        let metrics = self.metrics.clone();
        let watchdog = sd_notify::watchdog_enabled();
        let period = watchdog.map_or(Duration::from_secs(10), |interval| {
            (interval / 2).min(Duration::from_secs(10))
        });
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        if watchdog.is_some() {
                            // Outside systemd this does nothing; a failed notification harms no run.
                            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                    }
                    () = board.changed.notified() => {
                        tokio::select! {
                            () = tokio::time::sleep(STATUS_COALESCE) => {}
                            () = shutdown.cancelled() => return,
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
                board.write(&path);
                metrics.heartbeat(std::time::SystemTime::now());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::{Duration, SystemTime};

    use super::describe_breaker;
    use crate::breaker::{Breaker, BreakerSettings};

    #[test]
    fn the_breaker_line_says_its_state_and_when_open_until_when_and_the_last_three_reasons() {
        let mut breaker = Breaker::new(BreakerSettings {
            failure_threshold: NonZeroU32::new(4).unwrap(),
            recovery_timeout: Duration::from_secs(60),
            max_recovery_timeout: Duration::from_secs(600),
            half_open_max_calls: NonZeroU32::new(1).unwrap(),
        });
        assert_eq!(
            describe_breaker(&breaker),
            "closed (0 consecutive failed cycles)"
        );
        // 2026-01-01T00:00:00Z
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        for n in 1..=3 {
            breaker.record_failure(start, &format!("cycle {n}: failed"));
        }
        assert_eq!(
            describe_breaker(&breaker),
            "closed (3 consecutive failed cycles)"
        );
        breaker.record_failure(start, "cycle 4: rolled_back");
        assert_eq!(
            describe_breaker(&breaker),
            "open until 2026-01-01T00:01:00Z — cycle 2: failed; cycle 3: failed; cycle 4: rolled_back"
        );
        breaker.admit(start + Duration::from_secs(61));
        assert_eq!(
            describe_breaker(&breaker),
            "half-open (probe cycles passed: 0)"
        );
    }
}
