//! The rate limiter: two quotas at once, `requests_per_minute` and
//! `requests_per_hour`. Every phase run (every `claude` spawn, retries included)
//! takes one cell from both, all or nothing, so that an overnight run can never
//! hammer the API.
//!
//! Pure: no I/O, no Tokio, no logging. The caller passes the wall-clock time into
//! every call, and the two governor limiters run on a clock that is simply set to
//! that time. Waiting, logging and saving `state/limiter.json` belong to the daemon.
//!
//! # What a quota means: GCRA, not a sliding window
//!
//! governor implements the generic cell rate algorithm. A quota of 60 per minute is
//! a burst of 60 calls, after which one cell comes back every 60 s / 60 = 1 s; an
//! idle bucket is full again after one minute. 1000 per hour is a burst of 1000, then
//! one cell every 3.6 s. Because the steady rate comes on top of the burst, up to
//! about twice the quota can pass in the first window after a long idle period.
//!
//! # All or nothing
//!
//! governor has no "peek", so checking one quota and then the other would take a
//! cell from the first even when the second refuses. Instead each limiter keeps its
//! GCRA state (the theoretical arrival time) in a [`TatCell`] of ours, a public
//! extension point of governor (`StateStore`). [`Limiter::try_acquire`] checks both
//! quotas and, when either refuses, puts both states back. A refused attempt costs
//! nothing from either quota, and [`Throttled`] names the quota that frees up last,
//! with the time at which both will allow.
//!
//! # Surviving restarts
//!
//! [`LimiterSnapshot`] (`state/limiter.json`) holds the granted calls of the last
//! hour, at most twice `requests_per_hour` of them (the most GCRA can grant in an
//! hour, so the cap never drops a call that is still in the window), plus, for each
//! bucket, the time at which it will be full again (GCRA's theoretical arrival
//! time). [`Limiter::from_snapshot`] replays the calls into fresh buckets in time
//! order, ignoring calls older than one hour and calls in the
//! future, then raises each bucket to its saved "full at" time (capped at one
//! window from now, against clock skew).
//!
//! Both are needed. Replaying the calls alone is exact only while the history that
//! still fills a bucket lies within the last hour: once the per-hour quota has been
//! saturated for more than an hour, the calls of the last hour, replayed at the
//! steady rate from an empty bucket, never use up the burst, and a restart would
//! hand out almost a whole fresh burst. Replay never overestimates a bucket, so the
//! later of the two times is the state the limiter had before the restart. The
//! calls alone still serve a snapshot without "full at" times and a change of
//! quotas, and they are what a human reads.
//!
//! # Clock
//!
//! The governor clock counts nanoseconds since the Unix epoch, and both limiters are
//! created at the epoch, so every call is measured on the same scale. (A limiter
//! created at "now" before the replay would collapse old calls onto "now": a
//! classic pitfall with governor's clocks.) A wall clock that steps backwards is held at the latest
//! time seen: the limiter never goes back in time, and the step delays the next
//! grant by at most its size.

use std::collections::VecDeque;
use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use serde::{Deserialize, Serialize};

/// The version written to, and accepted from, `state/limiter.json`.
pub(crate) const SNAPSHOT_VERSION: u32 = 1;

/// How long an idle per-minute bucket takes to fill up.
const MINUTE: Duration = Duration::from_secs(60);

/// How long an idle per-hour bucket takes to fill up. Calls older than this are
/// forgotten.
const WINDOW: Duration = Duration::from_secs(60 * 60);

/// Which of the two quotas refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quota {
    PerMinute,
    PerHour,
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quota::PerMinute => "per-minute",
            Quota::PerHour => "per-hour",
        })
    }
}

/// A refused call: no cell was taken, and both quotas allow again at `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Throttled {
    /// The earliest wall-clock time at which both quotas allow a call.
    pub(crate) until: SystemTime,
    /// The quota that frees up last (the per-hour one on a tie).
    pub(crate) quota: Quota,
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::try_from(self.until) {
            Ok(until) => write!(f, "{} quota exhausted until {until}", self.quota),
            Err(_) => write!(f, "{} quota exhausted until {:?}", self.quota, self.until),
        }
    }
}

impl std::error::Error for Throttled {}

/// The content of `state/limiter.json`. Timestamps are RFC 3339 strings in UTC with
/// up to nanosecond precision (so that a restart is exact), e.g.
/// `{"version":1,"calls":["2026-11-22T10:00:00.123456789Z"],
/// "per_minute_full_at":"2026-11-22T10:00:01.123456789Z",
/// "per_hour_full_at":"2026-11-22T10:00:03.723456789Z"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LimiterSnapshot {
    pub(crate) version: u32,
    /// The granted calls of the last hour, oldest first.
    #[serde(default)]
    pub(crate) calls: Vec<jiff::Timestamp>,
    /// When the per-minute bucket is full again; absent when it already is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) per_minute_full_at: Option<jiff::Timestamp>,
    /// When the per-hour bucket is full again; absent when it already is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) per_hour_full_at: Option<jiff::Timestamp>,
}

/// A limiter snapshot written by a ralphd that this one does not understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported limiter state version {found} (this ralphd reads version {SNAPSHOT_VERSION})")]
pub(crate) struct UnsupportedVersion {
    pub(crate) found: u32,
}

/// `requests_per_minute` and `requests_per_hour`, taken together.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// The governor clock shared by both buckets; set to the caller's `now` before
    /// every check and during the replay.
    clock: ManualClock,
    per_minute: Bucket,
    per_hour: Bucket,
    /// Granted calls within [`WINDOW`] of `latest`, oldest first, at most
    /// `max_calls`; the persisted history.
    calls: VecDeque<SystemTime>,
    max_calls: usize,
    /// The latest time seen, so that the limiter never goes back in time.
    latest: SystemTime,
}

impl Limiter {
    /// Builds the two buckets and replays `recent_calls` (any order) into them.
    /// Calls older than one hour or later than `now` are ignored. After a restart,
    /// prefer [`Limiter::from_snapshot`], which is exact even after a saturated hour
    /// (see the module docs).
    pub(crate) fn new(
        per_minute: NonZeroU32,
        per_hour: NonZeroU32,
        recent_calls: &[SystemTime],
        now: SystemTime,
    ) -> Limiter {
        // The clock reads the epoch here, so both limiters measure from 1970.
        let clock = ManualClock::default();
        let max_calls = 2 * usize::try_from(per_hour.get()).unwrap_or(usize::MAX / 2);
        let mut limiter = Limiter {
            per_minute: Bucket::new(governor::Quota::per_minute(per_minute), &clock),
            per_hour: Bucket::new(governor::Quota::per_hour(per_hour), &clock),
            clock,
            calls: VecDeque::new(),
            max_calls,
            latest: now,
        };

        let mut replayed: Vec<SystemTime> = recent_calls
            .iter()
            .copied()
            .filter(|&at| at <= now && is_within_window(at, now))
            .collect();
        replayed.sort_unstable();
        let skip = replayed.len().saturating_sub(max_calls);
        for at in replayed.into_iter().skip(skip) {
            // Each quota on its own: the call happened and took a cell from both. A
            // refusal here (the quotas were lowered since) leaves that bucket as is.
            limiter.clock.set(at);
            let _ = limiter.per_minute.limiter.check();
            let _ = limiter.per_hour.limiter.check();
            limiter.calls.push_back(at);
        }
        limiter.clock.set(now);
        limiter
    }

    /// Restores the limiter from the content of `state/limiter.json`: replays the
    /// calls as [`Limiter::new`] does, then raises each bucket to its saved "full
    /// at" time, capped at one window (a minute, an hour) after `now`.
    pub(crate) fn from_snapshot(
        per_minute: NonZeroU32,
        per_hour: NonZeroU32,
        snapshot: &LimiterSnapshot,
        now: SystemTime,
    ) -> Result<Limiter, UnsupportedVersion> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(UnsupportedVersion {
                found: snapshot.version,
            });
        }
        let calls: Vec<SystemTime> = snapshot.calls.iter().map(|&at| at.into()).collect();
        let limiter = Limiter::new(per_minute, per_hour, &calls, now);
        let saved = [
            (&limiter.per_minute, snapshot.per_minute_full_at, MINUTE),
            (&limiter.per_hour, snapshot.per_hour_full_at, WINDOW),
        ];
        for (bucket, full_at, window) in saved {
            let Some(full_at) = full_at else { continue };
            // No bucket is ever full later than one window after its last call, so
            // anything beyond one window from now comes from a clock that stepped back.
            let full_at = SystemTime::from(full_at).min(now + window);
            bucket.tat.set(bucket.tat.get().max(to_nanos(full_at)));
        }
        Ok(limiter)
    }

    /// Takes one cell from each quota if both allow; otherwise takes nothing and
    /// says until when, and because of which quota, the caller must wait.
    pub(crate) fn try_acquire(&mut self, now: SystemTime) -> Result<(), Throttled> {
        let now = self.advance_to(now);
        let saved_minute = self.per_minute.tat.get();
        let saved_hour = self.per_hour.tat.get();
        let minute = self.per_minute.limiter.check();
        let hour = self.per_hour.limiter.check();

        let minute_until = minute
            .err()
            .map(|refusal| from_nanos(refusal.earliest_possible()));
        let hour_until = hour
            .err()
            .map(|refusal| from_nanos(refusal.earliest_possible()));
        let throttled = match (minute_until, hour_until) {
            (None, None) => None,
            (Some(until), None) => Some((until, Quota::PerMinute)),
            (None, Some(until)) => Some((until, Quota::PerHour)),
            (Some(minute), Some(hour)) if minute > hour => Some((minute, Quota::PerMinute)),
            (Some(_), Some(hour)) => Some((hour, Quota::PerHour)),
        };
        if let Some((until, quota)) = throttled {
            // Give back the cell that the other quota may have granted.
            self.per_minute.tat.set(saved_minute);
            self.per_hour.tat.set(saved_hour);
            return Err(Throttled { until, quota });
        }

        self.calls.push_back(now);
        while self.calls.len() > self.max_calls {
            self.calls.pop_front();
        }
        Ok(())
    }

    /// The granted calls of the last hour, oldest first, for `state/limiter.json`.
    pub(crate) fn recent_calls(&self) -> Vec<SystemTime> {
        self.calls
            .iter()
            .copied()
            .filter(|&at| is_within_window(at, self.latest))
            .collect()
    }

    /// The content of `state/limiter.json`.
    pub(crate) fn snapshot(&self) -> LimiterSnapshot {
        LimiterSnapshot {
            version: SNAPSHOT_VERSION,
            calls: self
                .recent_calls()
                .into_iter()
                .filter_map(|at| jiff::Timestamp::try_from(at).ok())
                .collect(),
            per_minute_full_at: self.per_minute.full_at(self.latest),
            per_hour_full_at: self.per_hour.full_at(self.latest),
        }
    }

    /// Moves the limiter's time forward to `now` (never backwards), sets the
    /// governor clock and forgets calls that left the window. Returns the time used.
    fn advance_to(&mut self, now: SystemTime) -> SystemTime {
        self.latest = self.latest.max(now);
        self.clock.set(self.latest);
        while let Some(&oldest) = self.calls.front() {
            if is_within_window(oldest, self.latest) {
                break;
            }
            self.calls.pop_front();
        }
        self.latest
    }
}

/// One governor limiter and a handle on its state, so that a granted cell can be
/// given back.
#[derive(Debug)]
struct Bucket {
    limiter: RateLimiter<NotKeyed, TatCell, ManualClock, NoOpMiddleware<Nanos>>,
    /// The same cell as the limiter's state store.
    tat: TatCell,
}

impl Bucket {
    fn new(quota: governor::Quota, clock: &ManualClock) -> Bucket {
        let tat = TatCell::default();
        Bucket {
            limiter: RateLimiter::new(quota, tat.clone(), clock.clone()),
            tat,
        }
    }

    /// When the bucket is full again (GCRA's theoretical arrival time), if that is
    /// after `now`.
    fn full_at(&self, now: SystemTime) -> Option<jiff::Timestamp> {
        let full_at = from_nanos(Nanos::from(self.tat.get()));
        if full_at <= now {
            return None;
        }
        jiff::Timestamp::try_from(full_at).ok()
    }
}

/// governor's GCRA state for one direct limiter: the theoretical arrival time in
/// nanoseconds since the limiter's start, 0 meaning "no call yet" (as in governor's
/// own `InMemoryState`). Unlike that one it can be read and restored.
#[derive(Clone, Debug, Default)]
struct TatCell(Arc<AtomicU64>);

impl TatCell {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, tat: u64) {
        self.0.store(tat, Ordering::Release);
    }
}

impl StateStore for TatCell {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // One consumer (`&mut Limiter`), so a plain load and store is enough.
        let previous = NonZeroU64::new(self.get()).map(|tat| Nanos::from(tat.get()));
        let (outcome, next) = f(previous)?;
        self.set(u64::from(next));
        Ok(outcome)
    }
}

/// A governor clock that reads whatever time it was last set to, in nanoseconds
/// since the Unix epoch.
#[derive(Clone, Debug, Default)]
struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    fn set(&self, now: SystemTime) {
        self.0.store(to_nanos(now), Ordering::Release);
    }
}

impl Clock for ManualClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::Acquire))
    }
}

/// Whether `at` is at most one hour before `now` (a time after `now` is too).
fn is_within_window(at: SystemTime, now: SystemTime) -> bool {
    now.duration_since(at)
        .map_or(true, |elapsed| elapsed <= WINDOW)
}

/// Nanoseconds since the epoch, saturating (before 1970 is 0; after 2554 is the max).
fn to_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

fn from_nanos(nanos: Nanos) -> SystemTime {
    UNIX_EPOCH + Duration::from(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// 2026-11-22T10:00:00Z, an arbitrary wall-clock origin for the tests.
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_341_600)
    }

    fn at(offset: Duration) -> SystemTime {
        t0() + offset
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn millis(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn throttled(until: SystemTime, quota: Quota) -> Result<(), Throttled> {
        Err(Throttled { until, quota })
    }

    fn round_trip(limiter: &Limiter, per_minute: u32, per_hour: u32, now: SystemTime) -> Limiter {
        let json = serde_json::to_string(&limiter.snapshot()).unwrap();
        let snapshot: LimiterSnapshot = serde_json::from_str(&json).unwrap();
        Limiter::from_snapshot(nz(per_minute), nz(per_hour), &snapshot, now).unwrap()
    }

    #[test]
    fn per_minute_burst_then_one_per_second() {
        let mut limiter = Limiter::new(nz(60), nz(1000), &[], t0());
        for _ in 0..60 {
            assert_eq!(limiter.try_acquire(t0()), Ok(()));
        }
        assert_eq!(
            limiter.try_acquire(t0()),
            throttled(at(secs(1)), Quota::PerMinute)
        );
        assert_eq!(
            limiter.try_acquire(at(secs(1)) - Duration::from_nanos(1)),
            throttled(at(secs(1)), Quota::PerMinute)
        );
        assert_eq!(limiter.try_acquire(at(secs(1))), Ok(()));
        assert_eq!(
            limiter.try_acquire(at(secs(1))),
            throttled(at(secs(2)), Quota::PerMinute)
        );
        // After a minute of rest the whole burst is back.
        let later = at(secs(62));
        for _ in 0..60 {
            assert_eq!(limiter.try_acquire(later), Ok(()));
        }
        assert!(limiter.try_acquire(later).is_err());
    }

    #[test]
    fn per_hour_exhausted_while_the_minute_allows() {
        // 3 per hour: a burst of 3, then one every 20 minutes.
        let mut limiter = Limiter::new(nz(60), nz(3), &[], t0());
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(t0()), Ok(()));
        }
        assert_eq!(
            limiter.try_acquire(at(secs(5))),
            throttled(at(secs(20 * 60)), Quota::PerHour)
        );
        assert_eq!(limiter.try_acquire(at(secs(20 * 60))), Ok(()));
        assert_eq!(
            limiter.try_acquire(at(secs(20 * 60))),
            throttled(at(secs(40 * 60)), Quota::PerHour)
        );
    }

    #[test]
    fn a_refusal_by_the_hour_takes_no_minute_cell() {
        // 2 per minute (one every 30 s), 3 per hour (one every 20 min).
        let mut limiter = Limiter::new(nz(2), nz(3), &[], t0());
        assert_eq!(limiter.try_acquire(t0()), Ok(()));
        assert_eq!(limiter.try_acquire(t0()), Ok(()));
        // The minute bucket is full again; this call leaves it one cell, and the
        // hour bucket empty until 20 min.
        let last_call = at(secs(20 * 60 - 10));
        assert_eq!(limiter.try_acquire(last_call), Ok(()));
        // Refused by the hour while the minute would allow, over and over.
        for nanos in [1_000_000, 1_000, 1] {
            let almost = at(secs(20 * 60)) - Duration::from_nanos(nanos);
            assert_eq!(
                limiter.try_acquire(almost),
                throttled(at(secs(20 * 60)), Quota::PerHour)
            );
        }
        // Had a refusal taken the minute's last cell, this would wait until 20m20s.
        assert_eq!(limiter.try_acquire(at(secs(20 * 60))), Ok(()));
    }

    #[test]
    fn a_refusal_by_the_minute_takes_no_hour_cell() {
        // 1 per minute, 2 per hour (one every 30 min).
        let mut limiter = Limiter::new(nz(1), nz(2), &[], t0());
        assert_eq!(limiter.try_acquire(t0()), Ok(()));
        for offset in [secs(1), secs(30), secs(59)] {
            assert_eq!(
                limiter.try_acquire(at(offset)),
                throttled(at(secs(60)), Quota::PerMinute)
            );
        }
        // Had a refusal taken the hour's last cell, this would wait until 30 min.
        assert_eq!(limiter.try_acquire(at(secs(60))), Ok(()));
        assert_eq!(
            limiter.try_acquire(at(secs(120))),
            throttled(at(secs(30 * 60)), Quota::PerHour)
        );
    }

    #[test]
    fn when_both_refuse_the_later_quota_is_named() {
        // 1 per minute and 1 per hour: after one call the minute frees up first.
        let mut limiter = Limiter::new(nz(1), nz(1), &[], t0());
        assert_eq!(limiter.try_acquire(t0()), Ok(()));
        assert_eq!(
            limiter.try_acquire(at(secs(1))),
            throttled(at(secs(3600)), Quota::PerHour)
        );
        // 1 per minute and 120 per hour (one every 30 s): the minute frees up last.
        let replayed = vec![t0(); 120];
        let mut limiter = Limiter::new(nz(1), nz(120), &replayed, t0());
        assert_eq!(
            limiter.try_acquire(t0()),
            throttled(at(secs(60)), Quota::PerMinute)
        );
    }

    #[test]
    fn snapshot_round_trip() {
        let mut limiter = Limiter::new(nz(60), nz(1000), &[], t0());
        let offsets = [millis(0), millis(1), Duration::from_nanos(2_000_000_123)];
        for offset in offsets {
            assert_eq!(limiter.try_acquire(at(offset)), Ok(()));
        }
        let snapshot = limiter.snapshot();
        assert_eq!(snapshot.version, 1);
        let json = serde_json::to_string(&snapshot).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"version":1,"calls":["2026-11-22T10:00:00Z","2026-11-22T10:00:00.001Z","#,
                r#""2026-11-22T10:00:02.000000123Z"],"#,
                r#""per_minute_full_at":"2026-11-22T10:00:03.000000123Z","#,
                r#""per_hour_full_at":"2026-11-22T10:00:10.8Z"}"#
            )
        );
        let loaded: LimiterSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(loaded, snapshot);
        let restarted = Limiter::from_snapshot(nz(60), nz(1000), &loaded, at(secs(3))).unwrap();
        assert_eq!(restarted.recent_calls(), limiter.recent_calls());
        assert_eq!(
            restarted.recent_calls(),
            offsets.map(at).to_vec(),
            "nanosecond precision survives"
        );
    }

    #[test]
    fn a_snapshot_of_another_version_is_refused() {
        let snapshot = LimiterSnapshot {
            version: 2,
            ..LimiterSnapshot::default()
        };
        let error = Limiter::from_snapshot(nz(60), nz(1000), &snapshot, t0()).unwrap_err();
        assert_eq!(error, UnsupportedVersion { found: 2 });
        assert_eq!(
            error.to_string(),
            "unsupported limiter state version 2 (this ralphd reads version 1)"
        );
    }

    /// Drives a limiter that never restarts and one that restarts (through JSON)
    /// before every attempt with the same attempts; their answers must agree.
    fn assert_restart_changes_nothing(per_minute: u32, per_hour: u32, attempts: &[Duration]) {
        let mut live = Limiter::new(nz(per_minute), nz(per_hour), &[], t0());
        let mut restarted = Limiter::new(nz(per_minute), nz(per_hour), &[], t0());
        let mut n_throttled = 0;
        for &offset in attempts {
            let now = at(offset);
            restarted = round_trip(&restarted, per_minute, per_hour, now);
            let expected = live.try_acquire(now);
            assert_eq!(restarted.try_acquire(now), expected, "at +{offset:?}");
            n_throttled += usize::from(expected.is_err());
        }
        assert!(n_throttled > 0, "the scenario must reach a limit");
    }

    #[test]
    fn restart_gives_the_same_wait_as_no_restart() {
        // A burst through the minute quota, then steady attempts every 250 ms.
        let attempts: Vec<Duration> = (0..80)
            .map(|_| Duration::ZERO)
            .chain((1..200).map(|i| millis(250 * i)))
            .collect();
        assert_restart_changes_nothing(60, 1000, &attempts);

        // Both quotas in play over three hours, with irregular gaps.
        let attempts: Vec<Duration> = (0..400_u64)
            .map(|i| millis(i * 27_000 + (i * i * 7_919) % 13_000))
            .collect();
        assert_restart_changes_nothing(5, 12, &attempts);
    }

    #[test]
    fn after_a_saturated_hour_the_full_at_times_keep_a_restart_exact() {
        // 12 per hour (one every 5 min), asked every minute for three hours: the
        // last grant was at 2h55m, the next one is due at 3h.
        let mut live = Limiter::new(nz(60), nz(12), &[], t0());
        for minute in 0..178 {
            let _ = live.try_acquire(at(secs(minute * 60)));
        }
        let now = at(secs(178 * 60));
        let snapshot = live.snapshot();
        let mut restarted = Limiter::from_snapshot(nz(60), nz(12), &snapshot, now).unwrap();
        let expected = live.try_acquire(now);
        assert_eq!(expected, throttled(at(secs(180 * 60)), Quota::PerHour));
        assert_eq!(restarted.try_acquire(now), expected);

        // The calls of the last hour alone, replayed from empty buckets, would hand
        // out nearly a whole burst.
        let calls_only = LimiterSnapshot {
            per_minute_full_at: None,
            per_hour_full_at: None,
            ..snapshot
        };
        let mut replayed = Limiter::from_snapshot(nz(60), nz(12), &calls_only, now).unwrap();
        let granted = (0..12)
            .filter(|_| replayed.try_acquire(now).is_ok())
            .count();
        assert!(granted >= 10, "granted {granted}");
    }

    #[test]
    fn a_full_at_far_in_the_future_waits_one_window_at_most() {
        // Saved by a clock five hours ahead; this clock says `now`.
        let now = at(secs(3600));
        let snapshot = LimiterSnapshot {
            version: 1,
            calls: vec![],
            per_minute_full_at: Some(jiff::Timestamp::try_from(now + secs(5 * 3600)).unwrap()),
            per_hour_full_at: Some(jiff::Timestamp::try_from(now + secs(5 * 3600)).unwrap()),
        };
        // 2 per minute, 4 per hour: both buckets empty, the hour frees one in 15 min.
        let mut limiter = Limiter::from_snapshot(nz(2), nz(4), &snapshot, now).unwrap();
        assert_eq!(
            limiter.try_acquire(now),
            throttled(now + secs(15 * 60), Quota::PerHour)
        );
        assert_eq!(limiter.try_acquire(now + secs(15 * 60)), Ok(()));
    }

    #[test]
    fn a_restart_does_not_hand_out_a_fresh_burst() {
        let mut limiter = Limiter::new(nz(60), nz(1000), &[], t0());
        for _ in 0..60 {
            assert_eq!(limiter.try_acquire(t0()), Ok(()));
        }
        let mut restarted = round_trip(&limiter, 60, 1000, at(millis(500)));
        assert_eq!(
            restarted.try_acquire(at(millis(500))),
            throttled(at(secs(1)), Quota::PerMinute)
        );
        // Restarting with the wrong idea (no history replayed) would allow it.
        let mut forgetful = Limiter::new(nz(60), nz(1000), &[], at(millis(500)));
        assert_eq!(forgetful.try_acquire(at(millis(500))), Ok(()));
    }

    #[test]
    fn stale_and_future_calls_are_ignored() {
        let now = at(secs(2 * 3600));
        let stale = now - secs(3600) - Duration::from_nanos(1);
        let edge = now - secs(3600);
        let future = now + secs(1);
        let limiter = Limiter::new(nz(60), nz(1000), &[future, edge, stale], now);
        assert_eq!(limiter.recent_calls(), vec![edge]);

        // One call per hour: only a call within the last hour blocks.
        let mut limiter = Limiter::new(nz(60), nz(1), &[stale, future], now);
        assert_eq!(limiter.try_acquire(now), Ok(()));
        let recent = now - secs(30 * 60);
        let mut limiter = Limiter::new(nz(60), nz(1), &[recent], now);
        assert_eq!(
            limiter.try_acquire(now),
            throttled(recent + secs(3600), Quota::PerHour)
        );
    }

    #[test]
    fn recent_calls_forget_the_old_and_are_bounded() {
        let mut limiter = Limiter::new(nz(1000), nz(3), &[], t0());
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(t0()), Ok(()));
        }
        for i in 1..=10 {
            assert_eq!(limiter.try_acquire(at(secs(i * 20 * 60))), Ok(()));
        }
        let calls = limiter.recent_calls();
        assert_eq!(calls.len(), 4, "the calls at 2h20m .. 3h20m");
        assert_eq!(calls[0], at(secs(140 * 60)));

        // At most twice the hourly quota, the newest ones, whatever is replayed.
        let flood: Vec<SystemTime> = (0..100).map(|i| t0() + millis(i)).collect();
        let limiter = Limiter::new(nz(1000), nz(3), &flood, at(secs(1)));
        assert_eq!(limiter.recent_calls(), flood[94..].to_vec());
    }

    #[test]
    fn a_clock_stepping_back_is_held_at_the_latest_time() {
        let mut limiter = Limiter::new(nz(1), nz(1000), &[], t0());
        assert_eq!(limiter.try_acquire(t0()), Ok(()));
        let earlier = t0() - secs(600);
        assert_eq!(
            limiter.try_acquire(earlier),
            throttled(at(secs(60)), Quota::PerMinute)
        );
        assert_eq!(limiter.recent_calls(), vec![t0()]);
        assert_eq!(limiter.try_acquire(at(secs(60))), Ok(()));
    }

    #[test]
    fn throttled_displays_quota_and_time() {
        let refusal = Throttled {
            until: at(secs(90)),
            quota: Quota::PerHour,
        };
        assert_eq!(
            refusal.to_string(),
            "per-hour quota exhausted until 2026-11-22T10:01:30Z"
        );
    }
}
