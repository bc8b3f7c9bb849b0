//! The Prometheus metrics of docs/design.md §11.6: one registry
//! (prometheus-client, no global state) whose counters start from
//! progress.json and move with the event stream, rendered for a scrape.
//!
//! [`Metrics::observe`] is the whole mapping from events to metrics; it
//! takes the time from the event itself, so feeding events and rendering is
//! all a test needs. [`follow`] is the task that feeds it from the bus.
//! Nothing here blocks the loop: the task reads its own broadcast receiver.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::broadcast;

use crate::agent::stream::TokenUsage;
use crate::events::{Event, EventKind, Published, WaitReason};
use crate::state::{Outcome, Progress};

/// The content type of the OpenMetrics text format, what Prometheus asks for.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic Prometheus text format (0.0.4).
pub(crate) const TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the phase duration buckets, in seconds: a phase takes
/// from seconds (scan of a small repo) to an hour or more (a long edit).
const PHASE_DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Every reason the loop waits, so each `ralphd_waiting{reason}` series
/// exists (at 0) from the first scrape.
const WAIT_REASONS: [WaitReason; 6] = [
    WaitReason::Limiter,
    WaitReason::UsageLimit,
    WaitReason::Breaker,
    WaitReason::Backoff,
    WaitReason::Sleep,
    WaitReason::Paused,
];

const OUTCOMES: [Outcome; 6] = [
    Outcome::Committed,
    Outcome::RolledBack,
    Outcome::NoChanges,
    Outcome::Failed,
    Outcome::Complete,
    Outcome::Interrupted,
];

type Labels = Vec<(&'static str, String)>;
type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The wire format of a scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics text (`# EOF` at the end): what Prometheus asks for.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4: for `curl`, `promtool
    /// check metrics` and any client that does not ask for OpenMetrics.
    Text,
}

impl Format {
    /// The format a client's `Accept` header asks for: OpenMetrics when it
    /// names it (Prometheus does), else the classic text every tool reads.
    pub(crate) fn for_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// The daemon's metrics. Cloning gives another handle on the same registry.
#[derive(Clone)]
pub(crate) struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    cycles: Family<Labels, Counter>,
    phase_runs: Family<Labels, Counter>,
    phase_duration: Family<Labels, Histogram, fn() -> Histogram>,
    cost: FloatCounter,
    tokens: Family<Labels, Counter>,
    commits: Counter,
    attempts_saved: Counter,
    breaker_state: Gauge,
    waiting: Family<Labels, Gauge>,
    wait_seconds: Family<Labels, FloatCounter>,
    last_commit: FloatGauge,
    heartbeat: FloatGauge,
    notifications: NotificationCounters,
    /// The wait under way: its reason and since when its time is counted.
    wait: Mutex<Option<(WaitReason, SystemTime)>>,
}

/// The notification counters (docs/design.md §12), for the code that sends
/// hooks and webhooks. Cloning gives another handle on the same counters.
#[derive(Clone, Default)]
pub(crate) struct NotificationCounters {
    sent: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    dropped: Counter,
}

impl NotificationCounters {
    /// A notification reached `target` (`hook`, `webhook`, `heartbeat`).
    pub(crate) fn sent(&self, target: &str) {
        self.sent.get_or_create(&target_label(target)).inc();
    }

    /// A notification to `target` failed after its retries.
    pub(crate) fn failed(&self, target: &str) {
        self.failed.get_or_create(&target_label(target)).inc();
    }

    /// The queue was full and an event was dropped.
    pub(crate) fn dropped(&self) {
        self.dropped.inc();
    }
}

fn target_label(target: &str) -> Labels {
    vec![("target", target.to_owned())]
}

fn phase_histogram() -> Histogram {
    Histogram::new(PHASE_DURATION_BUCKETS)
}

impl Metrics {
    /// A registry with every metric of §11 at zero (and the time it started).
    pub(crate) fn new(version: &str, started: SystemTime) -> Metrics {
        let mut registry = Registry::default();
        let cycles = Family::<Labels, Counter>::default();
        let phase_runs = Family::<Labels, Counter>::default();
        let phase_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(phase_histogram);
        let cost = FloatCounter::default();
        let tokens = Family::<Labels, Counter>::default();
        let commits = Counter::default();
        let attempts_saved = Counter::default();
        let breaker_state = Gauge::default();
        let waiting = Family::<Labels, Gauge>::default();
        let wait_seconds = Family::<Labels, FloatCounter>::default();
        let last_commit = FloatGauge::default();
        let heartbeat = FloatGauge::default();
        let start = FloatGauge::default();
        start.set(unix_seconds(started));
        let notifications = NotificationCounters::default();
        registry.register(
            "ralphd_cycles",
            "Cycles finished, by outcome",
            cycles.clone(),
        );
        registry.register(
            "ralphd_phase_runs",
            "Phase runs finished, by phase and status (succeeded, failed, interrupted)",
            phase_runs.clone(),
        );
        registry.register_with_unit(
            "ralphd_phase_duration",
            "How long phase runs took, retries included, by phase",
            Unit::Seconds,
            phase_duration.clone(),
        );
        registry.register_with_unit(
            "ralphd_cost",
            "Money the agent reported spending, in US dollars",
            Unit::Other("usd".to_owned()),
            cost.clone(),
        );
        registry.register(
            "ralphd_tokens",
            "Tokens the agent used, by kind (input, output, cache_read, cache_creation)",
            tokens.clone(),
        );
        registry.register(
            "ralphd_commits",
            "Verified changes committed",
            commits.clone(),
        );
        registry.register(
            "ralphd_attempts_saved",
            "Rejected changes saved under refs/ralph/attempts before the rollback",
            attempts_saved.clone(),
        );
        registry.register(
            "ralphd_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        registry.register(
            "ralphd_waiting",
            "1 while the loop waits for this reason, else 0",
            waiting.clone(),
        );
        registry.register_with_unit(
            "ralphd_wait",
            "Time the loop spent waiting, by reason",
            Unit::Seconds,
            wait_seconds.clone(),
        );
        registry.register_with_unit(
            "ralphd_last_commit_timestamp",
            "Unix time of the last verified commit (0 before the first)",
            Unit::Seconds,
            last_commit.clone(),
        );
        registry.register_with_unit(
            "ralphd_heartbeat_timestamp",
            "Unix time of the daemon's last heartbeat",
            Unit::Seconds,
            heartbeat.clone(),
        );
        registry.register_with_unit(
            "ralphd_start_timestamp",
            "Unix time the daemon started",
            Unit::Seconds,
            start,
        );
        registry.register(
            "ralphd_build",
            "The ralphd version",
            Info::new(vec![("version", version.to_owned())]),
        );
        registry.register(
            "ralphd_notifications_sent",
            "Notifications delivered, by target (hook, webhook, heartbeat)",
            notifications.sent.clone(),
        );
        registry.register(
            "ralphd_notifications_failed",
            "Notifications that failed after their retries, by target",
            notifications.failed.clone(),
        );
        registry.register(
            "ralphd_notifications_dropped",
            "Events dropped from the full notification queue",
            notifications.dropped.clone(),
        );
        for outcome in OUTCOMES {
            cycles.get_or_create_owned(&outcome_label(outcome));
        }
        for reason in WAIT_REASONS {
            waiting.get_or_create_owned(&reason_label(reason));
            wait_seconds.get_or_create_owned(&reason_label(reason));
        }
        for kind in ["input", "output", "cache_read", "cache_creation"] {
            tokens.get_or_create_owned(&vec![("kind", kind.to_owned())]);
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                cycles,
                phase_runs,
                phase_duration,
                cost,
                tokens,
                commits,
                attempts_saved,
                breaker_state,
                waiting,
                wait_seconds,
                last_commit,
                heartbeat,
                notifications,
                wait: Mutex::new(None),
            }),
        }
    }

    /// Starts the counters from progress.json (the cycles of the current
    /// branch) and the breaker from its state at start-up, so a restart
    /// does not reset them to zero.
    pub(crate) fn seed(&self, progress: &Progress, breaker_state: &str) {
        let inner = &self.inner;
        for record in &progress.cycles {
            inner
                .cycles
                .get_or_create(&outcome_label(record.outcome))
                .inc();
            if record.commit.is_some() {
                inner.commits.inc();
                if let Ok(ended) = record.ended_at.parse::<jiff::Timestamp>() {
                    let ended = ended.as_millisecond() as f64 / 1000.0;
                    if ended > inner.last_commit.get() {
                        inner.last_commit.set(ended);
                    }
                }
            }
            if record.attempt_ref.is_some() {
                inner.attempts_saved.inc();
            }
            for phase in &record.phases {
                // progress.json says `ok` where the event says `succeeded`.
                let status = match phase.status.as_str() {
                    "ok" => "succeeded",
                    other => other,
                };
                self.phase_finished(&phase.phase, status, phase.duration_ms, &phase.tokens);
            }
        }
        inner.cost.inc_by(progress.total_cost_usd.max(0.0));
        self.set_breaker(breaker_state);
    }

    /// Takes one event into account, at the time the event says.
    pub(crate) fn observe(&self, event: &Event) {
        let at = || {
            event
                .at
                .parse::<jiff::Timestamp>()
                .map(SystemTime::from)
                .unwrap_or_else(|_| SystemTime::now())
        };
        let inner = &self.inner;
        match &event.kind {
            EventKind::Waiting { reason, .. } => self.start_wait(*reason, at()),
            EventKind::Paused {} => self.start_wait(WaitReason::Paused, at()),
            // A change of the breaker or a stop request does not end a wait.
            EventKind::BreakerChanged { state, .. } => self.set_breaker(state),
            // The agent's text and tool calls (most events) count nowhere.
            EventKind::StopRequested {}
            | EventKind::AgentText { .. }
            | EventKind::ToolUse { .. } => {}
            other => {
                if self.wait().is_some() {
                    self.end_wait(at());
                }
                match other {
                    EventKind::PhaseFinished {
                        phase,
                        status,
                        duration_ms,
                        cost_usd,
                        tokens,
                        ..
                    } => {
                        self.phase_finished(phase, status, *duration_ms, tokens);
                        if cost_usd.is_finite() && *cost_usd > 0.0 {
                            inner.cost.inc_by(*cost_usd);
                        }
                    }
                    EventKind::CycleFinished {
                        outcome,
                        commit,
                        attempt_ref,
                        ..
                    } => {
                        inner.cycles.get_or_create(&outcome_label(*outcome)).inc();
                        if commit.is_some() {
                            inner.commits.inc();
                            inner.last_commit.set(unix_seconds(at()));
                        }
                        if attempt_ref.is_some() {
                            inner.attempts_saved.inc();
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Stamps the heartbeat (the heartbeat task calls this each time it
    /// writes status.json).
    pub(crate) fn heartbeat(&self, now: SystemTime) {
        self.inner.heartbeat.set(unix_seconds(now));
    }

    /// The notification counters, for the code that sends notifications.
    #[allow(dead_code)] // the notifications of docs/design.md §12 land next
    pub(crate) fn notifications(&self) -> NotificationCounters {
        self.inner.notifications.clone()
    }

    /// The scrape: every metric in `format`, the wait under way counted up
    /// to `now`.
    pub(crate) fn render(&self, format: Format, now: SystemTime) -> String {
        self.count_wait_until(now);
        let mut text = String::new();
        let encoded = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            }
            Format::Text => prometheus_client::encoding::prometheus_text::encode(
                &mut text,
                &self.inner.registry,
            ),
        };
        if let Err(error) = encoded {
            // Writing into a String does not fail; say so if it ever does.
            tracing::warn!(%error, "cannot encode the metrics");
        }
        text
    }

    fn phase_finished(&self, phase: &str, status: &str, duration_ms: u64, tokens: &TokenUsage) {
        let inner = &self.inner;
        inner
            .phase_runs
            .get_or_create(&vec![
                ("phase", phase.to_owned()),
                ("status", status.to_owned()),
            ])
            .inc();
        inner
            .phase_duration
            .get_or_create(&vec![("phase", phase.to_owned())])
            .observe(Duration::from_millis(duration_ms).as_secs_f64());
        for (kind, count) in [
            ("input", tokens.input),
            ("output", tokens.output),
            ("cache_read", tokens.cache_read),
            ("cache_creation", tokens.cache_creation),
        ] {
            if count > 0 {
                inner
                    .tokens
                    .get_or_create(&vec![("kind", kind.to_owned())])
                    .inc_by(count);
            }
        }
    }

    fn set_breaker(&self, state: &str) {
        let value = match state {
            "open" => 2,
            "half_open" => 1,
            _ => 0,
        };
        self.inner.breaker_state.set(value);
    }

    fn start_wait(&self, reason: WaitReason, at: SystemTime) {
        self.end_wait(at);
        self.inner
            .waiting
            .get_or_create(&reason_label(reason))
            .set(1);
        *self.wait() = Some((reason, at));
    }

    fn end_wait(&self, at: SystemTime) {
        self.count_wait_until(at);
        if let Some((reason, _)) = self.wait().take() {
            self.inner
                .waiting
                .get_or_create(&reason_label(reason))
                .set(0);
        }
    }

    /// Adds the time waited since the last count to the wait's counter.
    fn count_wait_until(&self, now: SystemTime) {
        let mut wait = self.wait();
        if let Some((reason, since)) = wait.as_mut() {
            let waited = now.duration_since(*since).unwrap_or_default();
            if !waited.is_zero() {
                self.inner
                    .wait_seconds
                    .get_or_create(&reason_label(*reason))
                    .inc_by(waited.as_secs_f64());
                *since = now;
            }
        }
    }

    fn wait(&self) -> std::sync::MutexGuard<'_, Option<(WaitReason, SystemTime)>> {
        self.inner
            .wait
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn outcome_label(outcome: Outcome) -> Labels {
    vec![("outcome", outcome.name().to_owned())]
}

fn reason_label(reason: WaitReason) -> Labels {
    vec![("reason", reason.name().to_owned())]
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Feeds the metrics from the event bus until the daemon stops (its
/// `daemon_stopped` event, or the bus closing). A receiver that fell behind
/// loses the events it missed and goes on.
pub(crate) async fn follow(metrics: Metrics, mut events: broadcast::Receiver<Arc<Published>>) {
    loop {
        match events.recv().await {
            Ok(published) => {
                metrics.observe(&published.event);
                if matches!(published.event.kind, EventKind::DaemonStopped { .. }) {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "the metrics fell behind the event stream; some counts are low until the next start"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CycleRecord, PhaseRecord};

    /// 2026-01-01T00:00:00Z
    const T0: u64 = 1_767_225_600;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + seconds)
    }

    fn event(seconds: u64, kind: EventKind) -> Event {
        Event {
            id: seconds + 1,
            at: jiff::Timestamp::try_from(at(seconds)).unwrap().to_string(),
            kind,
        }
    }

    /// The value of one series in a scrape (`name{labels}` exactly as
    /// rendered), `None` when the scrape has no such line.
    fn value(scrape: &str, series: &str) -> Option<f64> {
        scrape.lines().find_map(|line| {
            let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
            rest.parse().ok()
        })
    }

    fn phase_finished(phase: &str, status: &str, duration_ms: u64, cost_usd: f64) -> EventKind {
        EventKind::PhaseFinished {
            cycle: 1,
            phase: phase.to_owned(),
            status: status.to_owned(),
            duration_ms,
            cost_usd,
            tokens: TokenUsage {
                input: 100,
                output: 20,
                cache_read: 3000,
                cache_creation: 0,
            },
            error: None,
        }
    }

    fn cycle_finished(outcome: Outcome, commit: Option<&str>, attempt: Option<&str>) -> EventKind {
        EventKind::CycleFinished {
            cycle: 1,
            outcome,
            title: None,
            reason: None,
            commit: commit.map(str::to_owned),
            attempt_ref: attempt.map(str::to_owned),
            cost_usd: 0.0,
            duration_ms: 0,
        }
    }

    #[test]
    fn cycles_phases_cost_tokens_and_commits_of_the_event_stream_show_in_the_scrape() {
        let metrics = Metrics::new("9.9.9", at(0));
        for (seconds, kind) in [
            (1, EventKind::CycleStarted { cycle: 1 }),
            (2, phase_finished("scan", "succeeded", 1500, 0.25)),
            (40, phase_finished("code-edit", "succeeded", 700_000, 1.5)),
            (
                41,
                cycle_finished(Outcome::Committed, Some("abc1234"), None),
            ),
            (50, phase_finished("backtest", "failed", 3000, 0.0)),
            (
                60,
                cycle_finished(Outcome::RolledBack, None, Some("refs/ralph/attempts/2")),
            ),
        ] {
            metrics.observe(&event(seconds, kind));
        }
        let scrape = metrics.render(Format::Text, at(61));
        let get = |series: &str| {
            value(&scrape, series).unwrap_or_else(|| panic!("{series} in\n{scrape}"))
        };
        assert_eq!(get(r#"ralphd_cycles_total{outcome="committed"}"#), 1.0);
        assert_eq!(get(r#"ralphd_cycles_total{outcome="rolled_back"}"#), 1.0);
        assert_eq!(get(r#"ralphd_cycles_total{outcome="failed"}"#), 0.0);
        assert_eq!(get("ralphd_commits_total"), 1.0);
        assert_eq!(get("ralphd_attempts_saved_total"), 1.0);
        assert_eq!(
            get("ralphd_last_commit_timestamp_seconds"),
            (T0 + 41) as f64
        );
        assert_eq!(get("ralphd_start_timestamp_seconds"), T0 as f64);
        assert_eq!(get("ralphd_cost_usd_total"), 1.75);
        assert_eq!(get(r#"ralphd_tokens_total{kind="input"}"#), 300.0);
        assert_eq!(get(r#"ralphd_tokens_total{kind="cache_read"}"#), 9000.0);
        assert_eq!(get(r#"ralphd_tokens_total{kind="cache_creation"}"#), 0.0);
        assert_eq!(
            get(r#"ralphd_phase_runs_total{phase="backtest",status="failed"}"#),
            1.0
        );
        // 700 s lands in the 1200 s bucket, not the 600 s one.
        assert_eq!(
            get(r#"ralphd_phase_duration_seconds_bucket{phase="code-edit",le="600"}"#),
            0.0
        );
        assert_eq!(
            get(r#"ralphd_phase_duration_seconds_bucket{phase="code-edit",le="1200"}"#),
            1.0
        );
        assert_eq!(
            get(r#"ralphd_phase_duration_seconds_sum{phase="code-edit"}"#),
            700.0
        );
        assert_eq!(get(r#"ralphd_build_info{version="9.9.9"}"#), 1.0);
    }

    #[test]
    fn a_wait_shows_while_it_lasts_and_its_seconds_count_up_to_each_scrape() {
        let metrics = Metrics::new("0", at(0));
        metrics.observe(&event(
            10,
            EventKind::Waiting {
                reason: WaitReason::UsageLimit,
                detail: "usage limit".to_owned(),
                until: String::new(),
            },
        ));
        let during = metrics.render(Format::Text, at(70));
        assert_eq!(
            value(&during, r#"ralphd_waiting{reason="usage_limit"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&during, r#"ralphd_waiting{reason="limiter"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(
                &during,
                r#"ralphd_wait_seconds_total{reason="usage_limit"}"#
            ),
            Some(60.0)
        );
        metrics.observe(&event(
            100,
            EventKind::PhaseStarted {
                cycle: 1,
                phase: "scan".to_owned(),
                attempt: 2,
            },
        ));
        let after = metrics.render(Format::Text, at(500));
        assert_eq!(
            value(&after, r#"ralphd_waiting{reason="usage_limit"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(&after, r#"ralphd_wait_seconds_total{reason="usage_limit"}"#),
            Some(90.0)
        );
        // Paused until resumed; a stop request does not end the pause.
        metrics.observe(&event(600, EventKind::Paused {}));
        metrics.observe(&event(610, EventKind::StopRequested {}));
        metrics.observe(&event(630, EventKind::Resumed {}));
        let resumed = metrics.render(Format::Text, at(700));
        assert_eq!(
            value(&resumed, r#"ralphd_waiting{reason="paused"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(&resumed, r#"ralphd_wait_seconds_total{reason="paused"}"#),
            Some(30.0)
        );
    }

    #[test]
    fn the_breaker_gauge_follows_its_state() {
        let metrics = Metrics::new("0", at(0));
        let breaker = |state: &str| {
            metrics.observe(&event(
                1,
                EventKind::BreakerChanged {
                    state: state.to_owned(),
                    detail: String::new(),
                },
            ));
            value(&metrics.render(Format::Text, at(2)), "ralphd_breaker_state").unwrap()
        };
        assert_eq!(breaker("open"), 2.0);
        assert_eq!(breaker("half_open"), 1.0);
        assert_eq!(breaker("closed"), 0.0);
    }

    fn phase_record(phase: &str, status: &str) -> PhaseRecord {
        PhaseRecord {
            phase: phase.to_owned(),
            status: status.to_owned(),
            duration_ms: 2000,
            cost_usd: 0.5,
            tokens: TokenUsage {
                output: 7,
                ..TokenUsage::default()
            },
            session_id: None,
            turns: 1,
            attempts: 1,
            permission_denials: Vec::new(),
            error: None,
        }
    }

    fn cycle_record(cycle: u64, outcome: Outcome, commit: Option<&str>) -> CycleRecord {
        CycleRecord {
            started_at: "2026-01-01T00:00:00Z".to_owned(),
            ended_at: format!("2026-01-01T0{cycle}:00:00Z"),
            duration_seconds: 1.0,
            phases: vec![phase_record("scan", "ok"), phase_record("idea", "failed")],
            commit: commit.map(str::to_owned),
            success: commit.is_some(),
            cost_usd: 1.0,
            ..CycleRecord::for_test(cycle, outcome)
        }
    }

    #[test]
    fn a_restart_starts_the_counters_from_progress_json_and_goes_on_from_there() {
        let progress = Progress {
            cycles: vec![
                cycle_record(1, Outcome::Committed, Some("aaa")),
                cycle_record(2, Outcome::Committed, Some("bbb")),
                cycle_record(3, Outcome::Failed, None),
            ],
            total_cost_usd: 3.0,
            ..Progress::default()
        };
        let metrics = Metrics::new("0", at(0));
        metrics.seed(&progress, "open");
        metrics.observe(&event(
            10,
            cycle_finished(Outcome::Committed, Some("ccc"), None),
        ));
        let scrape = metrics.render(Format::Text, at(11));
        let get = |series: &str| {
            value(&scrape, series).unwrap_or_else(|| panic!("{series} in\n{scrape}"))
        };
        assert_eq!(get(r#"ralphd_cycles_total{outcome="committed"}"#), 3.0);
        assert_eq!(get(r#"ralphd_cycles_total{outcome="failed"}"#), 1.0);
        assert_eq!(get("ralphd_commits_total"), 3.0);
        assert_eq!(get("ralphd_cost_usd_total"), 3.0);
        assert_eq!(
            get(r#"ralphd_phase_runs_total{phase="scan",status="succeeded"}"#),
            3.0
        );
        assert_eq!(
            get(r#"ralphd_phase_runs_total{phase="idea",status="failed"}"#),
            3.0
        );
        assert_eq!(get(r#"ralphd_tokens_total{kind="output"}"#), 42.0);
        assert_eq!(get("ralphd_breaker_state"), 2.0);
        assert_eq!(
            get("ralphd_last_commit_timestamp_seconds"),
            (T0 + 10) as f64
        );

        // Before any new commit, the last one is the newest in progress.json.
        let restarted = Metrics::new("0", at(0));
        restarted.seed(&progress, "closed");
        let scrape = restarted.render(Format::Text, at(11));
        assert_eq!(
            value(&scrape, "ralphd_last_commit_timestamp_seconds"),
            Some((T0 + 2 * 3600) as f64)
        );
    }

    #[test]
    fn prometheus_gets_openmetrics_and_everyone_else_the_classic_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::for_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::for_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::for_accept(None), Format::Text);

        let metrics = Metrics::new("0", at(0));
        let open = metrics.render(Format::OpenMetrics, at(1));
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# TYPE ralphd_cycles counter\n"), "{open}");
        let text = metrics.render(Format::Text, at(1));
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# HELP ralphd_cycles_total Cycles finished, by outcome.\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE ralphd_build_info gauge\n"), "{text}");
    }

    #[test]
    fn notification_counters_count_by_target() {
        let metrics = Metrics::new("0", at(0));
        let counters = metrics.notifications();
        counters.sent("webhook");
        counters.sent("webhook");
        counters.failed("hook");
        counters.dropped();
        let scrape = metrics.render(Format::Text, at(1));
        assert_eq!(
            value(
                &scrape,
                r#"ralphd_notifications_sent_total{target="webhook"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &scrape,
                r#"ralphd_notifications_failed_total{target="hook"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&scrape, "ralphd_notifications_dropped_total"),
            Some(1.0)
        );
    }

    /// Every `ralphd_…` name in `text`.
    fn metric_names(text: &str) -> std::collections::BTreeSet<&str> {
        let mut names = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(start) = rest.find("ralphd_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(&tail[..end]);
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_dashboard_and_the_alert_rules_only_query_metrics_a_scrape_has() {
        let dashboard = include_str!("../contrib/grafana/ralphd.json");
        let alerts = include_str!("../contrib/prometheus/alerts.yml");
        let metrics = Metrics::new("0", at(0));
        metrics.observe(&event(1, phase_finished("scan", "succeeded", 1000, 0.1)));
        let scrape = metrics.render(Format::Text, at(2));
        let served: std::collections::BTreeSet<&str> = scrape
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();
        for (file, text) in [("ralphd.json", dashboard), ("alerts.yml", alerts)] {
            let queried = metric_names(text);
            assert!(queried.len() >= 4, "{file}: {queried:?}");
            for name in queried {
                assert!(
                    served.contains(name),
                    "{file} queries {name}, which no scrape has"
                );
            }
        }
        // The dashboard asks for its data source: no uid of someone's Grafana.
        let json: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        let mut uids = Vec::new();
        fn datasource_uids(value: &serde_json::Value, uids: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(uid) = map.get("datasource").and_then(|ds| ds.get("uid")) {
                        uids.push(uid.to_string());
                    }
                    map.values().for_each(|v| datasource_uids(v, uids));
                }
                serde_json::Value::Array(items) => {
                    items.iter().for_each(|v| datasource_uids(v, uids))
                }
                _ => {}
            }
        }
        datasource_uids(&json, &mut uids);
        assert!(uids.len() > 10, "{uids:?}");
        assert!(
            uids.iter().all(|uid| uid == "\"${datasource}\""),
            "{uids:?}"
        );
    }
}
