//! The circuit breaker over cycles: after `failure_threshold` failed cycles in a
//! row it opens and stops the daemon from running more, then lets probe cycles
//! through to find out whether things work again.
//!
//! ```text
//!            failure_threshold consecutive failures
//!   Closed ──────────────────────────────────────────▶ Open { opened_at, until }
//!     ▲                                                  │ admit(now >= until)
//!     │ half_open_max_calls                              ▼
//!     └──── successful probes in a row ◀─────────── HalfOpen { probes_passed }
//!                                                        │ a failed probe: Open
//!                                                        ▼ again, timeout doubled
//! ```
//!
//! The recovery timeout starts at `recovery_timeout`, doubles on each re-open
//! (a failed probe) up to `max_recovery_timeout`, and starts over once the breaker
//! closes. A human can close it with [`Breaker::reset`].
//!
//! `half_open_max_calls` is the number of probe cycles in a row that must succeed
//! to close the breaker; any failed probe re-opens it (gobreaker's `MaxRequests`).
//! Cycles run one at a time, so there is never more than one probe in flight, and a
//! probe whose result never arrives (the daemon stopped during it) is simply run
//! again: a limit on *started* probes would leave the breaker stuck after a restart.
//!
//! Pure: no I/O, no logging, no clock reading. The caller passes `now` (wall-clock
//! time, because `until` is persisted in `state/breaker.json`) and logs the
//! decisions. What counts as a failed cycle is the daemon's business; usage-limit
//! waits are not failures.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The version written to, and accepted from, `state/breaker.json`.
pub(crate) const SNAPSHOT_VERSION: u32 = 1;

/// How many failure reasons the breaker keeps, newest last.
pub(crate) const FAILURE_HISTORY: usize = 10;

/// Longer reasons are cut to this many characters, to keep the state file small.
const MAX_REASON_CHARS: usize = 500;

/// The `[breaker]` section of `ralph.toml`, validated by the config module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BreakerSettings {
    /// Consecutive failed cycles that open a closed breaker.
    pub(crate) failure_threshold: NonZeroU32,
    /// How long the breaker stays open the first time.
    pub(crate) recovery_timeout: Duration,
    /// The cap on the doubled timeout (it wins over `recovery_timeout` if lower).
    pub(crate) max_recovery_timeout: Duration,
    /// Successful probe cycles in a row that close a half-open breaker.
    pub(crate) half_open_max_calls: NonZeroU32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BreakerState {
    /// Cycles run normally.
    Closed { consecutive_failures: u32 },
    /// No cycle runs before `until`.
    Open {
        opened_at: SystemTime,
        until: SystemTime,
    },
    /// Every cycle is a probe; `probes_passed` succeeded so far.
    HalfOpen { probes_passed: u32 },
}

/// The answer to "may a cycle start now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed: run a normal cycle.
    Go,
    /// Half-open: run a cycle as a probe; its result decides the state.
    Probe,
    /// Open: run nothing before this time, then ask again.
    WaitUntil(SystemTime),
}

/// Returned when a failure opens (or re-opens) the breaker, for the log line and
/// for `halt_on_open`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) until: SystemTime,
    /// How long it stays open this time (doubled on each re-open).
    pub(crate) timeout: Duration,
    /// The reason of the failure that opened it.
    pub(crate) reason: String,
}

/// One failed cycle, for `status` and the state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) at: SystemTime,
    pub(crate) reason: String,
}

#[derive(Clone, Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    /// Re-opens (failed probes) since the breaker last closed: the recovery timeout
    /// has doubled this many times.
    reopens: u32,
    /// The last [`FAILURE_HISTORY`] failures, oldest first.
    failures: VecDeque<Failure>,
}

impl Breaker {
    /// A closed breaker with no history.
    pub(crate) fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
            reopens: 0,
            failures: VecDeque::new(),
        }
    }

    /// May a cycle start at `now`? An open breaker whose timeout has passed turns
    /// half-open here and answers [`Admission::Probe`].
    pub(crate) fn admit(&mut self, now: SystemTime) -> Admission {
        match self.state {
            BreakerState::Closed { .. } => Admission::Go,
            BreakerState::Open { until, .. } if now < until => Admission::WaitUntil(until),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen { probes_passed: 0 };
                Admission::Probe
            }
            BreakerState::HalfOpen { .. } => Admission::Probe,
        }
    }

    /// A cycle succeeded (made progress). Closed: the failure count starts over.
    /// Half-open: one more probe passed, and enough of them close the breaker.
    /// Open: no cycle was admitted, so there is nothing to count; ignored.
    pub(crate) fn record_success(&mut self) {
        match self.state {
            BreakerState::Closed { .. } => {
                self.state = BreakerState::Closed {
                    consecutive_failures: 0,
                };
            }
            BreakerState::HalfOpen { probes_passed } => {
                let probes_passed = probes_passed.saturating_add(1);
                if probes_passed >= self.settings.half_open_max_calls.get() {
                    self.close();
                } else {
                    self.state = BreakerState::HalfOpen { probes_passed };
                }
            }
            BreakerState::Open { .. } => {}
        }
    }

    /// A cycle failed for `reason`. The failure is always remembered. Closed: the
    /// `failure_threshold`-th failure in a row opens the breaker for
    /// `recovery_timeout`. Half-open: the failed probe re-opens it for twice the
    /// last timeout (capped). Open: nothing else changes. Returns `Some` exactly
    /// when this failure opened the breaker.
    pub(crate) fn record_failure(&mut self, now: SystemTime, reason: &str) -> Option<Opened> {
        let reason = crate::text::head_chars_with_ellipsis(reason, MAX_REASON_CHARS);
        self.failures.push_back(Failure {
            at: now,
            reason: reason.clone(),
        });
        while self.failures.len() > FAILURE_HISTORY {
            self.failures.pop_front();
        }

        match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let consecutive_failures = consecutive_failures.saturating_add(1);
                if consecutive_failures < self.settings.failure_threshold.get() {
                    self.state = BreakerState::Closed {
                        consecutive_failures,
                    };
                    return None;
                }
                self.reopens = 0;
                Some(self.open(now, reason))
            }
            BreakerState::HalfOpen { .. } => {
                self.reopens = self.reopens.saturating_add(1);
                Some(self.open(now, reason))
            }
            BreakerState::Open { .. } => None,
        }
    }

    /// A human closes the breaker (`ralphd reset-breaker`): closed, no failures
    /// counted, the timeout back to `recovery_timeout`. The failure history stays.
    pub(crate) fn reset(&mut self) {
        self.close();
    }

    #[cfg(test)]
    /// Whether the breaker is open and its timeout has not passed at `now`.
    pub(crate) fn is_open(&self, now: SystemTime) -> bool {
        matches!(self.state, BreakerState::Open { until, .. } if now < until)
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    /// The last failures, oldest first.
    pub(crate) fn recent_failures(&self) -> impl ExactSizeIterator<Item = &Failure> {
        self.failures.iter()
    }

    /// The content of `state/breaker.json`.
    pub(crate) fn snapshot(&self) -> BreakerSnapshot {
        let state = match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } => BreakerStateSnapshot::Closed {
                consecutive_failures,
            },
            BreakerState::Open { opened_at, until } => BreakerStateSnapshot::Open {
                opened_at: to_timestamp(opened_at),
                until: to_timestamp(until),
            },
            BreakerState::HalfOpen { probes_passed } => {
                BreakerStateSnapshot::HalfOpen { probes_passed }
            }
        };
        BreakerSnapshot {
            version: SNAPSHOT_VERSION,
            state,
            reopens: self.reopens,
            recent_failures: self
                .failures
                .iter()
                .map(|failure| FailureSnapshot {
                    at: to_timestamp(failure.at),
                    reason: failure.reason.clone(),
                })
                .collect(),
        }
    }

    /// Restores the breaker from `state/breaker.json`. An open breaker keeps its
    /// timeout (`until - opened_at`, capped at `max_recovery_timeout`); if its
    /// `opened_at` lies after `now` (the clock stepped back), it counts as opened
    /// `now`, so it stays open one timeout from now and not for the skew as well.
    pub(crate) fn from_snapshot(
        settings: BreakerSettings,
        snapshot: &BreakerSnapshot,
        now: SystemTime,
    ) -> Result<Breaker, UnsupportedVersion> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(UnsupportedVersion {
                found: snapshot.version,
            });
        }
        let state = match snapshot.state {
            BreakerStateSnapshot::Closed {
                consecutive_failures,
            } => BreakerState::Closed {
                consecutive_failures,
            },
            BreakerStateSnapshot::Open { opened_at, until } => {
                let opened_at = SystemTime::from(opened_at);
                let timeout = SystemTime::from(until)
                    .duration_since(opened_at)
                    .unwrap_or(Duration::ZERO)
                    .min(settings.max_recovery_timeout);
                let opened_at = opened_at.min(now);
                BreakerState::Open {
                    opened_at,
                    until: saturating_add(opened_at, timeout),
                }
            }
            BreakerStateSnapshot::HalfOpen { probes_passed } => {
                BreakerState::HalfOpen { probes_passed }
            }
        };
        let skip = snapshot
            .recent_failures
            .len()
            .saturating_sub(FAILURE_HISTORY);
        let failures = snapshot
            .recent_failures
            .iter()
            .skip(skip)
            .map(|failure| Failure {
                at: failure.at.into(),
                reason: crate::text::head_chars_with_ellipsis(&failure.reason, MAX_REASON_CHARS),
            })
            .collect();
        Ok(Breaker {
            settings,
            state,
            reopens: snapshot.reopens,
            failures,
        })
    }

    fn open(&mut self, now: SystemTime, reason: String) -> Opened {
        let timeout = recovery_timeout(&self.settings, self.reopens);
        let until = saturating_add(now, timeout);
        self.state = BreakerState::Open {
            opened_at: now,
            until,
        };
        Opened {
            until,
            timeout,
            reason,
        }
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed {
            consecutive_failures: 0,
        };
        self.reopens = 0;
    }
}

/// The content of `state/breaker.json`, timestamps as RFC 3339 strings in UTC, e.g.
/// `{"version":1,"state":{"kind":"open","opened_at":"2026-11-22T10:00:00Z",
/// "until":"2026-11-22T10:01:00Z"},"reopens":0,"recent_failures":
/// [{"at":"2026-11-22T10:00:00Z","reason":"no_changes"}]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BreakerSnapshot {
    pub(crate) version: u32,
    pub(crate) state: BreakerStateSnapshot,
    /// Re-opens since the breaker last closed (the timeout doubled this many times).
    #[serde(default)]
    pub(crate) reopens: u32,
    /// Oldest first.
    #[serde(default)]
    pub(crate) recent_failures: Vec<FailureSnapshot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum BreakerStateSnapshot {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        opened_at: jiff::Timestamp,
        until: jiff::Timestamp,
    },
    HalfOpen {
        probes_passed: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailureSnapshot {
    pub(crate) at: jiff::Timestamp,
    pub(crate) reason: String,
}

/// A breaker snapshot written by a ralphd that this one does not understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported breaker state version {found} (this ralphd reads version {SNAPSHOT_VERSION})")]
pub(crate) struct UnsupportedVersion {
    pub(crate) found: u32,
}

/// `recovery_timeout` doubled `reopens` times, capped at `max_recovery_timeout`.
fn recovery_timeout(settings: &BreakerSettings, reopens: u32) -> Duration {
    let cap = settings.max_recovery_timeout;
    1_u32
        .checked_shl(reopens)
        .and_then(|factor| settings.recovery_timeout.checked_mul(factor))
        .map_or(cap, |timeout| timeout.min(cap))
}

/// `at + duration`, or as late as a `SystemTime` can comfortably be.
fn saturating_add(at: SystemTime, duration: Duration) -> SystemTime {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    at.checked_add(duration)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
}

/// The timestamp for the state file, clamped to jiff's range (years -9999..=9999).
fn to_timestamp(at: SystemTime) -> jiff::Timestamp {
    jiff::Timestamp::try_from(at).unwrap_or(if at > SystemTime::UNIX_EPOCH {
        jiff::Timestamp::MAX
    } else {
        jiff::Timestamp::MIN
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::UNIX_EPOCH;

    /// 2026-11-22T10:00:00Z, an arbitrary wall-clock origin for the tests.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_341_600)
    }

    fn at(secs: u64) -> SystemTime {
        t0() + Duration::from_secs(secs)
    }

    fn settings(threshold: u32, half_open_max_calls: u32) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: NonZeroU32::new(threshold).unwrap(),
            recovery_timeout: Duration::from_secs(60),
            max_recovery_timeout: Duration::from_secs(300),
            half_open_max_calls: NonZeroU32::new(half_open_max_calls).unwrap(),
        }
    }

    fn closed(consecutive_failures: u32) -> BreakerState {
        BreakerState::Closed {
            consecutive_failures,
        }
    }

    fn open(opened_at: SystemTime, until: SystemTime) -> BreakerState {
        BreakerState::Open { opened_at, until }
    }

    fn opened(until: SystemTime, timeout_secs: u64, reason: &str) -> Option<Opened> {
        Some(Opened {
            until,
            timeout: Duration::from_secs(timeout_secs),
            reason: reason.to_owned(),
        })
    }

    /// Fails `n` cycles at `now`, asserting that none of them opens the breaker.
    fn fail_without_opening(breaker: &mut Breaker, now: SystemTime, n: u32) {
        for _ in 0..n {
            assert_eq!(breaker.admit(now), Admission::Go);
            assert_eq!(breaker.record_failure(now, "no_changes"), None);
        }
    }

    #[test]
    fn opens_at_the_threshold() {
        let mut breaker = Breaker::new(settings(3, 1));
        assert_eq!(breaker.state(), closed(0));
        fail_without_opening(&mut breaker, at(0), 2);
        assert_eq!(breaker.state(), closed(2));
        assert!(!breaker.is_open(at(0)));

        assert_eq!(breaker.admit(at(1)), Admission::Go);
        assert_eq!(
            breaker.record_failure(at(1), "rolled_back"),
            opened(at(61), 60, "rolled_back")
        );
        assert_eq!(breaker.state(), open(at(1), at(61)));
        assert!(breaker.is_open(at(1)));
        assert!(breaker.is_open(at(61) - Duration::from_nanos(1)));
        assert!(!breaker.is_open(at(61)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut breaker = Breaker::new(settings(3, 1));
        fail_without_opening(&mut breaker, at(0), 2);
        breaker.record_success();
        assert_eq!(breaker.state(), closed(0));
        fail_without_opening(&mut breaker, at(1), 2);
        assert!(breaker.record_failure(at(2), "timeout").is_some());
    }

    #[test]
    fn open_waits_then_turns_half_open() {
        let mut breaker = Breaker::new(settings(1, 1));
        breaker.record_failure(at(0), "timeout");
        assert_eq!(breaker.admit(at(0)), Admission::WaitUntil(at(60)));
        assert_eq!(breaker.admit(at(59)), Admission::WaitUntil(at(60)));
        assert_eq!(breaker.state(), open(at(0), at(60)));
        assert_eq!(breaker.admit(at(60)), Admission::Probe);
        assert_eq!(breaker.state(), BreakerState::HalfOpen { probes_passed: 0 });
        assert!(!breaker.is_open(at(60)));
    }

    #[test]
    fn a_passed_probe_closes() {
        let mut breaker = Breaker::new(settings(1, 1));
        breaker.record_failure(at(0), "timeout");
        assert_eq!(breaker.admit(at(60)), Admission::Probe);
        breaker.record_success();
        assert_eq!(breaker.state(), closed(0));
        assert_eq!(breaker.admit(at(61)), Admission::Go);
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubled_timeout_up_to_the_cap() {
        let mut breaker = Breaker::new(settings(1, 1));
        let mut now = at(0);
        let mut timeouts = vec![];
        let first = breaker.record_failure(now, "no_changes").unwrap();
        timeouts.push(first.timeout.as_secs());
        let mut until = first.until;
        for _ in 0..5 {
            assert_eq!(
                breaker.admit(until - Duration::from_secs(1)),
                Admission::WaitUntil(until)
            );
            now = until;
            assert_eq!(breaker.admit(now), Admission::Probe);
            let reopened = breaker.record_failure(now, "no_changes").unwrap();
            assert_eq!(breaker.state(), open(now, reopened.until));
            timeouts.push(reopened.timeout.as_secs());
            until = reopened.until;
        }
        assert_eq!(timeouts, [60, 120, 240, 300, 300, 300]);

        // Closing starts the doubling over.
        assert_eq!(breaker.admit(until), Admission::Probe);
        breaker.record_success();
        let reopened = breaker.record_failure(until, "timeout").unwrap();
        assert_eq!(reopened.timeout, Duration::from_secs(60));
    }

    #[test]
    fn the_doubling_never_overflows() {
        let huge = BreakerSettings {
            recovery_timeout: Duration::from_secs(u64::MAX / 2),
            max_recovery_timeout: Duration::MAX,
            ..settings(1, 1)
        };
        assert_eq!(
            recovery_timeout(&huge, 0),
            Duration::from_secs(u64::MAX / 2)
        );
        assert_eq!(
            recovery_timeout(&huge, 1),
            Duration::from_secs(u64::MAX - 1)
        );
        assert_eq!(recovery_timeout(&huge, 2), Duration::MAX);
        assert_eq!(
            recovery_timeout(&settings(1, 1), u32::MAX),
            Duration::from_secs(300)
        );

        let mut breaker = Breaker::new(huge);
        let opened = breaker.record_failure(at(0), "timeout").unwrap();
        assert!(opened.until > at(0));
        assert!(breaker.is_open(at(10 * 365 * 24 * 60 * 60)));
    }

    #[test]
    fn half_open_max_calls_probes_in_a_row_close() {
        let mut breaker = Breaker::new(settings(1, 3));
        breaker.record_failure(at(0), "timeout");
        for probes_passed in 1..3 {
            assert_eq!(breaker.admit(at(60)), Admission::Probe);
            breaker.record_success();
            assert_eq!(breaker.state(), BreakerState::HalfOpen { probes_passed });
        }
        assert_eq!(breaker.admit(at(60)), Admission::Probe);
        breaker.record_success();
        assert_eq!(breaker.state(), closed(0));

        // A failure after passed probes re-opens, doubled.
        breaker.record_failure(at(100), "timeout");
        assert_eq!(breaker.admit(at(160)), Admission::Probe);
        breaker.record_success();
        assert_eq!(breaker.admit(at(170)), Admission::Probe);
        assert_eq!(
            breaker.record_failure(at(170), "rolled_back"),
            opened(at(290), 120, "rolled_back")
        );
    }

    #[test]
    fn a_probe_without_a_result_is_run_again() {
        let mut breaker = Breaker::new(settings(1, 1));
        breaker.record_failure(at(0), "timeout");
        assert_eq!(breaker.admit(at(60)), Admission::Probe);
        // The daemon stopped during the probe and asks again.
        assert_eq!(breaker.admit(at(70)), Admission::Probe);
        breaker.record_success();
        assert_eq!(breaker.state(), closed(0));
    }

    #[test]
    fn results_while_open_change_nothing() {
        let mut breaker = Breaker::new(settings(1, 1));
        breaker.record_failure(at(0), "timeout");
        breaker.record_success();
        assert_eq!(breaker.state(), open(at(0), at(60)));
        assert_eq!(breaker.record_failure(at(10), "no_changes"), None);
        assert_eq!(breaker.state(), open(at(0), at(60)));
        assert_eq!(breaker.recent_failures().len(), 2, "still remembered");
    }

    #[test]
    fn reset_closes_and_restarts_the_doubling() {
        let mut breaker = Breaker::new(settings(2, 1));
        fail_without_opening(&mut breaker, at(0), 1);
        breaker.record_failure(at(0), "timeout");
        assert_eq!(breaker.admit(at(60)), Admission::Probe);
        breaker.record_failure(at(60), "timeout");
        assert_eq!(breaker.state(), open(at(60), at(180)));

        breaker.reset();
        assert_eq!(breaker.state(), closed(0));
        assert!(!breaker.is_open(at(61)));
        assert_eq!(breaker.admit(at(61)), Admission::Go);
        assert_eq!(breaker.recent_failures().len(), 3, "history kept");
        fail_without_opening(&mut breaker, at(62), 1);
        assert_eq!(
            breaker.record_failure(at(62), "timeout"),
            opened(at(122), 60, "timeout")
        );

        // Resetting a closed breaker forgets its failure count.
        let mut breaker = Breaker::new(settings(2, 1));
        fail_without_opening(&mut breaker, at(0), 1);
        breaker.reset();
        fail_without_opening(&mut breaker, at(1), 1);
    }

    #[test]
    fn keeps_the_last_ten_failures() {
        let mut breaker = Breaker::new(settings(100, 1));
        for i in 0..12 {
            breaker.record_failure(at(i), &format!("failure {i}"));
        }
        let reasons: Vec<&str> = breaker
            .recent_failures()
            .map(|failure| failure.reason.as_str())
            .collect();
        assert_eq!(reasons.len(), FAILURE_HISTORY);
        assert_eq!(reasons[0], "failure 2");
        assert_eq!(reasons[9], "failure 11");
        assert_eq!(breaker.recent_failures().last().unwrap().at, at(11));

        let long = "é".repeat(MAX_REASON_CHARS + 5);
        breaker.record_failure(at(12), &long);
        let kept = &breaker.recent_failures().last().unwrap().reason;
        assert_eq!(kept.chars().count(), MAX_REASON_CHARS + 1);
        assert!(kept.ends_with("é…"));
    }

    fn round_trip(breaker: &Breaker, now: SystemTime) -> Breaker {
        let json = serde_json::to_string(&breaker.snapshot()).unwrap();
        let snapshot: BreakerSnapshot = serde_json::from_str(&json).unwrap();
        Breaker::from_snapshot(breaker.settings, &snapshot, now).unwrap()
    }

    #[test]
    fn snapshot_round_trip() {
        let mut breaker = Breaker::new(settings(2, 2));
        fail_without_opening(&mut breaker, at(0), 1);
        assert_eq!(round_trip(&breaker, at(1)).state(), closed(1));

        breaker.record_failure(at(1), "no_changes");
        let json = serde_json::to_string(&breaker.snapshot()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"version":1,"state":{"kind":"open","opened_at":"2026-11-22T10:00:01Z","#,
                r#""until":"2026-11-22T10:01:01Z"},"reopens":0,"recent_failures":["#,
                r#"{"at":"2026-11-22T10:00:00Z","reason":"no_changes"},"#,
                r#"{"at":"2026-11-22T10:00:01Z","reason":"no_changes"}]}"#
            )
        );
        let mut restored = round_trip(&breaker, at(2));
        assert_eq!(restored.state(), open(at(1), at(61)));
        assert_eq!(
            restored.recent_failures().cloned().collect::<Vec<_>>(),
            breaker.recent_failures().cloned().collect::<Vec<_>>()
        );
        assert_eq!(restored.admit(at(30)), Admission::WaitUntil(at(61)));

        // Half-open, with a passed probe, and the doubling carried over.
        assert_eq!(restored.admit(at(61)), Admission::Probe);
        restored.record_failure(at(61), "timeout");
        assert_eq!(restored.admit(at(181)), Admission::Probe);
        restored.record_success();
        let mut again = round_trip(&restored, at(190));
        assert_eq!(again.state(), BreakerState::HalfOpen { probes_passed: 1 });
        assert_eq!(again.admit(at(190)), Admission::Probe);
        assert_eq!(
            again.record_failure(at(190), "timeout"),
            opened(at(430), 240, "timeout")
        );
    }

    #[test]
    fn an_opened_at_in_the_future_counts_as_now() {
        // Saved by a clock one hour ahead: opened "at 1h" for 120 s.
        let snapshot = BreakerSnapshot {
            version: 1,
            state: BreakerStateSnapshot::Open {
                opened_at: jiff::Timestamp::try_from(at(3600)).unwrap(),
                until: jiff::Timestamp::try_from(at(3720)).unwrap(),
            },
            reopens: 1,
            recent_failures: vec![],
        };
        let breaker = Breaker::from_snapshot(settings(1, 1), &snapshot, at(10)).unwrap();
        assert_eq!(breaker.state(), open(at(10), at(130)));

        // An opened_at in the past is kept as is.
        let breaker = Breaker::from_snapshot(settings(1, 1), &snapshot, at(3700)).unwrap();
        assert_eq!(breaker.state(), open(at(3600), at(3720)));
    }

    #[test]
    fn a_restored_timeout_is_capped() {
        let snapshot = BreakerSnapshot {
            version: 1,
            state: BreakerStateSnapshot::Open {
                opened_at: jiff::Timestamp::try_from(at(0)).unwrap(),
                until: jiff::Timestamp::try_from(at(86_400)).unwrap(),
            },
            reopens: 0,
            recent_failures: vec![],
        };
        let breaker = Breaker::from_snapshot(settings(1, 1), &snapshot, at(10)).unwrap();
        assert_eq!(breaker.state(), open(at(0), at(300)));
    }

    #[test]
    fn a_snapshot_of_another_version_is_refused() {
        let snapshot = BreakerSnapshot {
            version: 7,
            ..Breaker::new(settings(1, 1)).snapshot()
        };
        let error = Breaker::from_snapshot(settings(1, 1), &snapshot, at(0)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unsupported breaker state version 7 (this ralphd reads version 1)"
        );
    }

    #[test]
    fn a_minimal_state_file_loads() {
        let json = r#"{"version":1,"state":{"kind":"closed","consecutive_failures":4}}"#;
        let snapshot: BreakerSnapshot = serde_json::from_str(json).unwrap();
        let mut breaker = Breaker::from_snapshot(settings(5, 1), &snapshot, at(0)).unwrap();
        assert_eq!(breaker.state(), closed(4));
        assert!(breaker.record_failure(at(0), "timeout").is_some());
    }
}
