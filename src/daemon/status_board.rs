//! The status board: the in-memory status.json, the heartbeat task that
//! writes it and pings the systemd watchdog, and the guards' line in it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::breaker::BreakerState;
use crate::state::{self, Durability, StatusFile};

use super::{Daemon, now_rfc3339, rfc3339};

/// Shared with the heartbeat task, which rewrites it periodically.
pub(super) type StatusBoard = Arc<Mutex<StatusFile>>;

/// How long status changes are gathered before status.json is rewritten.
pub(super) const STATUS_COALESCE: Duration = Duration::from_millis(100);

/// Stamps the heartbeat and writes status.json (atomically, without fsync: it
/// is a live view).
pub(super) fn write_status(status: &StatusBoard, path: &std::path::Path) {
    let snapshot = {
        let mut status = status.lock().expect("status lock");
        status.heartbeat_at = now_rfc3339();
        status.clone()
    };
    if let Err(error) = state::save_json_with(path, &snapshot, Durability::ProcessDeath) {
        tracing::warn!(error = %format!("{error:#}"), "cannot write status.json");
    }
}

impl Daemon {
    pub(super) fn save_guards(&self) -> Result<()> {
        state::save_json(&self.paths.breaker(), &self.breaker.snapshot())?;
        state::save_json(&self.paths.limiter(), &self.limiter.snapshot())?;
        let breaker = self.describe_breaker();
        self.set_status(|status| status.breaker = breaker);
        Ok(())
    }

    /// The last failure reasons, newest last, for logs and status.
    pub(super) fn breaker_reasons(&self) -> String {
        let reasons: Vec<String> = self
            .breaker
            .recent_failures()
            .map(|failure| failure.reason.clone())
            .collect();
        reasons[reasons.len().saturating_sub(3)..].join("; ")
    }

    /// One line for status.json: closed, open until when and why, half-open.
    pub(super) fn describe_breaker(&self) -> String {
        match self.breaker.state() {
            BreakerState::Closed {
                consecutive_failures,
            } => format!("closed ({consecutive_failures} consecutive failed cycles)"),
            BreakerState::Open { until, .. } => {
                format!("open until {} — {}", rfc3339(until), self.breaker_reasons())
            }
            BreakerState::HalfOpen { probes_passed } => {
                format!("half-open (probe cycles passed: {probes_passed})")
            }
        }
    }

    /// Changes the status; the heartbeat task writes it to status.json within
    /// [`STATUS_COALESCE`], once for all the changes made meanwhile (a fast
    /// cycle changes it a dozen times in a few milliseconds).
    pub(super) fn set_status(&self, change: impl FnOnce(&mut StatusFile)) {
        change(&mut self.status.lock().expect("status lock"));
        self.status_changed.notify_one();
    }

    /// Writes status.json now (start-up and the final state at exit).
    pub(super) fn publish_status(&self) {
        write_status(&self.status, &self.paths.status());
    }

    /// Rewrites status.json's heartbeat and pings the systemd watchdog from
    /// the runtime, so a wedged runtime stops both.
    pub(super) fn spawn_heartbeat(&self) {
        let status = Arc::clone(&self.status);
        let path = self.paths.status();
        let shutdown = self.signals.shutdown.clone();
        let watchdog = sd_notify::watchdog_enabled();
        let period = watchdog.map_or(Duration::from_secs(10), |interval| {
            (interval / 2).min(Duration::from_secs(10))
        });
        let changed = Arc::clone(&self.status_changed);
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
                    () = changed.notified() => {
                        tokio::select! {
                            () = tokio::time::sleep(STATUS_COALESCE) => {}
                            () = shutdown.cancelled() => return,
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
                write_status(&status, &path);
            }
        });
    }
}
