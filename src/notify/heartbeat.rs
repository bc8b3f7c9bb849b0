//! The dead-man's switch (docs/design.md §12, healthchecks.io convention):
//! `GET <url>/start` at start-up, `<url>` every `heartbeat_every` while the
//! loop is alive, `<url>/<exit code>` at the end.
//!
//! "Alive" is proved by the loop itself, not by a timer beside it: the loop
//! stamps [`Liveness`] at every step and while it waits on something with a
//! deadline (a phase run, a check, a usage-limit or limiter wait). A loop
//! stuck on something without one stops stamping, and the pings stop, so
//! the outside service raises the alarm — as it does when the process dies.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::NotifyStats;

/// The loop's proof of life: the time of its last step.
#[derive(Clone)]
pub(crate) struct Liveness {
    last: Arc<Mutex<Instant>>,
    /// How often the loop stamps while it waits on a bounded future.
    tick: Duration,
}

impl Liveness {
    /// A stamp fresh now, ticking often enough for pings every `every`.
    pub(crate) fn new(every: Duration) -> Liveness {
        Liveness {
            last: Arc::new(Mutex::new(Instant::now())),
            tick: (every / 3).clamp(Duration::from_millis(10), Duration::from_secs(30)),
        }
    }

    /// The loop made a step.
    pub(crate) fn beat(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Instant::now();
    }

    /// An interval for a wait's own select loop: stamp on each tick.
    pub(crate) fn ticker(&self) -> tokio::time::Interval {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    }

    fn last(&self) -> Instant {
        *self
            .last
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Awaits `future`, stamping while it runs. Only for futures that end by
    /// a deadline of their own (a supervised child, a wait): one that could
    /// hang for ever must not be wrapped, or a wedged loop would look alive.
    pub(crate) async fn during<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        loop {
            self.beat();
            tokio::select! {
                output = &mut future => {
                    self.beat();
                    return output;
                }
                () = tokio::time::sleep(self.tick) => {}
            }
        }
    }
}

/// Whether the loop stamped recently enough to be called alive.
pub(crate) fn loop_is_alive(last_beat: Instant, now: Instant, every: Duration) -> bool {
    now.saturating_duration_since(last_beat) <= every
}

/// Which ping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ping {
    Start,
    Alive,
    Exit(u8),
}

/// `<url>/start`, `<url>`, `<url>/<code>` (a query string stays at the end).
pub(crate) fn ping_url(base: &reqwest::Url, ping: Ping) -> reqwest::Url {
    let mut url = base.clone();
    let last = match ping {
        Ping::Start => "start".to_owned(),
        Ping::Alive => return url,
        Ping::Exit(code) => code.to_string(),
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(&last);
    }
    url
}

/// The heartbeat: its URL, its client and how often it pings.
#[derive(Clone)]
pub(crate) struct Heartbeat {
    pub(crate) url: reqwest::Url,
    pub(crate) every: Duration,
    pub(crate) client: reqwest::Client,
    pub(crate) stats: Arc<NotifyStats>,
}

impl Heartbeat {
    /// Pings `/start`, then `<url>` each `every` while `liveness` is fresh,
    /// until `stop`.
    pub(crate) async fn run(self, liveness: Liveness, stop: CancellationToken) {
        self.ping(Ping::Start, self.every.min(Duration::from_secs(10)))
            .await;
        let mut ticker = tokio::time::interval_at(Instant::now() + self.every, self.every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told_stale = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => return,
            }
            let last = liveness.last();
            if loop_is_alive(last, Instant::now(), self.every) {
                told_stale = false;
                self.ping(Ping::Alive, self.every.min(Duration::from_secs(10)))
                    .await;
            } else if !told_stale {
                told_stale = true;
                tracing::error!(
                    silent_for = %humantime::format_duration(round_to_seconds(last.elapsed())),
                    "the loop has shown no sign of life for longer than heartbeat_every; \
                     the heartbeat stops pinging until it does"
                );
            }
        }
    }

    /// One GET; a failure is logged, never fatal. The URL is not logged (it
    /// is the check's secret), only its host.
    pub(crate) async fn ping(&self, ping: Ping, timeout: Duration) {
        let url = ping_url(&self.url, ping);
        let result = self.client.get(url).timeout(timeout).send().await;
        let host = self.url.host_str().unwrap_or("?");
        match result.map(|response| response.status()) {
            Ok(status) if status.is_success() => {
                self.stats.count_sent("heartbeat");
                tracing::debug!(?ping, host, "heartbeat sent");
            }
            Ok(status) => {
                self.stats.count_failed("heartbeat");
                tracing::warn!(?ping, host, %status, "the heartbeat ping was refused");
            }
            Err(error) => {
                self.stats.count_failed("heartbeat");
                tracing::warn!(?ping, host, error = %super::webhooks::describe_error(&error), "cannot send the heartbeat ping");
            }
        }
    }
}

fn round_to_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pings_follow_the_healthchecks_convention() {
        let base = reqwest::Url::parse("https://hc-ping.com/abc-123").unwrap();
        let url = |ping| ping_url(&base, ping).to_string();
        assert_eq!(url(Ping::Start), "https://hc-ping.com/abc-123/start");
        assert_eq!(url(Ping::Alive), "https://hc-ping.com/abc-123");
        assert_eq!(url(Ping::Exit(0)), "https://hc-ping.com/abc-123/0");
        assert_eq!(url(Ping::Exit(130)), "https://hc-ping.com/abc-123/130");
        let slash = reqwest::Url::parse("http://127.0.0.1:9/ping/x/?rid=1").unwrap();
        assert_eq!(
            ping_url(&slash, Ping::Start).to_string(),
            "http://127.0.0.1:9/ping/x/start?rid=1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_stops_stamping_is_not_alive_one_that_waits_on_a_bounded_future_is() {
        let every = Duration::from_secs(300);
        let liveness = Liveness::new(every);
        // Waiting an hour on a usage limit: the wait stamps as it goes.
        let waited = liveness.during(tokio::time::sleep(Duration::from_secs(3600)));
        waited.await;
        assert!(loop_is_alive(liveness.last(), Instant::now(), every));
        let probe = {
            let liveness = liveness.clone();
            tokio::spawn(async move {
                let mut alive = Vec::new();
                for _ in 0..4 {
                    tokio::time::sleep(Duration::from_secs(100)).await;
                    alive.push(loop_is_alive(liveness.last(), Instant::now(), every));
                }
                alive
            })
        };
        // Meanwhile the loop is wedged (it awaits something unwrapped).
        tokio::time::sleep(Duration::from_secs(400)).await;
        assert_eq!(probe.await.unwrap(), [true, true, true, false]);
        liveness.beat();
        assert!(loop_is_alive(liveness.last(), Instant::now(), every));
    }
}
