//! The one stream of typed events a watcher sees (docs/design.md §11): the
//! serde types, and the [`Events`] bus that numbers each event, appends it
//! (redacted) to `state/events.jsonl` and hands it to live subscribers (the
//! SSE stream, metrics, notifications). Replay after a disconnect or a
//! restart reads the log back with [`read_after`].
//!
//! Publishing never blocks and never fails the loop: a write error is logged
//! once and the event still goes to live subscribers; a subscriber that falls
//! behind loses its place (tokio's bounded broadcast), never the daemon's.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::agent::stream::TokenUsage;
use crate::state::Outcome;

/// How many events a live subscriber may fall behind before it is dropped.
pub(crate) const LIVE_BUFFER: usize = 1024;
/// When `events.jsonl` passes this size it becomes `events.1.jsonl` (the
/// one before is deleted) and a new log starts; replay reads both.
pub(crate) const MAX_LOG_BYTES: u64 = 32 * 1024 * 1024;

/// One event: a positive id, unique and increasing within the home across
/// restarts, the time, and what happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Event {
    pub(crate) id: u64,
    /// RFC 3339, to the millisecond.
    pub(crate) at: String,
    #[serde(flatten)]
    pub(crate) kind: EventKind,
}

/// What happened. The `type` field names the variant in snake_case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum EventKind {
    DaemonStarted {
        pid: u32,
        version: String,
        repo: String,
        branch: String,
        /// The web page's URL when the HTTP server is on.
        dashboard: Option<String>,
    },
    CycleStarted {
        cycle: u64,
    },
    PhaseStarted {
        cycle: u64,
        phase: String,
        /// 1 for the first try, more for a retry of the same phase.
        attempt: u32,
    },
    /// An assistant text block's head, cut to
    /// [`TEXT_HEAD_BYTES`](crate::agent::stream::TEXT_HEAD_BYTES).
    AgentText {
        cycle: u64,
        phase: String,
        text: String,
    },
    /// A tool call of the agent with a one-line summary of its input (the
    /// path, command or pattern), cut to 200 characters (`agent::stream::TOOL_SUMMARY_CHARS`).
    ToolUse {
        cycle: u64,
        phase: String,
        tool: String,
        summary: String,
    },
    PhaseFinished {
        cycle: u64,
        phase: String,
        /// `succeeded`, `failed` or `interrupted`.
        status: String,
        duration_ms: u64,
        cost_usd: f64,
        /// Tokens used, by kind (absent in events older than this field).
        #[serde(default)]
        tokens: TokenUsage,
        error: Option<String>,
    },
    CheckFinished {
        cycle: u64,
        command: String,
        exit: Option<i32>,
        passed: bool,
        duration_ms: u64,
    },
    CycleFinished {
        cycle: u64,
        outcome: Outcome,
        title: Option<String>,
        reason: Option<String>,
        commit: Option<String>,
        attempt_ref: Option<String>,
        cost_usd: f64,
        duration_ms: u64,
    },
    Waiting {
        reason: WaitReason,
        /// The wait in words (`throttled (5 per hour)`).
        detail: String,
        /// RFC 3339.
        until: String,
    },
    BreakerChanged {
        /// `closed`, `open` or `half_open`.
        state: String,
        /// The breaker's line in status (state, until when, why).
        detail: String,
    },
    Paused {},
    Resumed {},
    /// Stop after the running cycle was asked for (`ralphd stop`, the page).
    StopRequested {},
    DaemonStopped {
        exit_code: u8,
        reason: String,
        /// The run's digest (`ralphd report --format json`), when it could
        /// be built.
        digest: Option<serde_json::Value>,
    },
    /// No verified commit for `[notify] stall_after` while cycles kept
    /// running (docs/design.md §12): once per window.
    Stalled {
        /// RFC 3339: the last commit, or the daemon's start if none since.
        since: String,
        /// Cycles finished since then, none of them committed.
        cycles_without_commit: u64,
        /// What those cycles cost.
        cost_usd: f64,
    },
}

/// Every event `type`, for `on = [...]` in `[[hooks]]` and `[[webhooks]]`.
pub(crate) const EVENT_TYPES: [&str; 15] = [
    "daemon_started",
    "cycle_started",
    "phase_started",
    "agent_text",
    "tool_use",
    "phase_finished",
    "check_finished",
    "cycle_finished",
    "waiting",
    "breaker_changed",
    "paused",
    "resumed",
    "stop_requested",
    "daemon_stopped",
    "stalled",
];

/// Why the loop waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WaitReason {
    Limiter,
    UsageLimit,
    Breaker,
    /// The backoff before retrying a phase after an API error.
    Backoff,
    Sleep,
    Paused,
}

impl WaitReason {
    pub(crate) fn name(self) -> &'static str {
        match self {
            WaitReason::Limiter => "limiter",
            WaitReason::UsageLimit => "usage_limit",
            WaitReason::Breaker => "breaker",
            WaitReason::Backoff => "backoff",
            WaitReason::Sleep => "sleep",
            WaitReason::Paused => "paused",
        }
    }
}

impl EventKind {
    /// The event's `type`, as in the JSON and the SSE `event:` field.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            EventKind::DaemonStarted { .. } => "daemon_started",
            EventKind::CycleStarted { .. } => "cycle_started",
            EventKind::PhaseStarted { .. } => "phase_started",
            EventKind::AgentText { .. } => "agent_text",
            EventKind::ToolUse { .. } => "tool_use",
            EventKind::PhaseFinished { .. } => "phase_finished",
            EventKind::CheckFinished { .. } => "check_finished",
            EventKind::CycleFinished { .. } => "cycle_finished",
            EventKind::Waiting { .. } => "waiting",
            EventKind::BreakerChanged { .. } => "breaker_changed",
            EventKind::Paused {} => "paused",
            EventKind::Resumed {} => "resumed",
            EventKind::StopRequested {} => "stop_requested",
            EventKind::DaemonStopped { .. } => "daemon_stopped",
            EventKind::Stalled { .. } => "stalled",
        }
    }

    /// The cycle the event belongs to, if any.
    #[allow(dead_code)] // for the metrics and hooks of issues 14–15
    pub(crate) fn cycle(&self) -> Option<u64> {
        match self {
            EventKind::CycleStarted { cycle }
            | EventKind::PhaseStarted { cycle, .. }
            | EventKind::AgentText { cycle, .. }
            | EventKind::ToolUse { cycle, .. }
            | EventKind::PhaseFinished { cycle, .. }
            | EventKind::CheckFinished { cycle, .. }
            | EventKind::CycleFinished { cycle, .. } => Some(*cycle),
            _ => None,
        }
    }
}

/// An event as published: the typed event and its redacted JSON line
/// (without the newline), which is what the log, SSE and hooks carry.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) event: Event,
    pub(crate) json: String,
}

/// The event bus of one home. Cloning gives another handle on the same bus;
/// [`Events::off`] gives one that drops everything (tests, benchmarks).
#[derive(Clone)]
pub(crate) struct Events {
    inner: Option<Arc<Bus>>,
}

struct Bus {
    log: Mutex<Log>,
    live: broadcast::Sender<Arc<Published>>,
}

struct Log {
    path: PathBuf,
    last_id: u64,
    /// `None` after a write failed: the rest of the run's events are live
    /// only (logged once).
    file: Option<std::fs::File>,
    bytes: u64,
}

impl Events {
    /// Opens the home's event log, continuing its ids.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Events> {
        use anyhow::Context;
        let last_id = last_id_in(path)?.max(last_id_in(&rotated(path))?);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let bytes = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        // A line torn by a crash is ended, so the next event starts a line.
        if bytes > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1))
                .and_then(|_| file.read_exact(&mut last))
                .with_context(|| format!("cannot read {}", path.display()))?;
            if last[0] != b'\n' {
                file.write_all(b"\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Ok(Events {
            inner: Some(Arc::new(Bus {
                log: Mutex::new(Log {
                    path: path.to_owned(),
                    last_id,
                    file: Some(file),
                    bytes,
                }),
                live,
            })),
        })
    }

    /// A bus that drops every event.
    #[allow(dead_code)] // for tests and benchmarks of issues 14–15
    pub(crate) fn off() -> Events {
        Events { inner: None }
    }

    /// Numbers, logs and broadcasts one event; returns its id (0 when off).
    pub(crate) fn publish(&self, kind: EventKind) -> u64 {
        let Some(bus) = &self.inner else { return 0 };
        let mut log = bus.log.lock().unwrap_or_else(|poison| poison.into_inner());
        log.last_id += 1;
        let event = Event {
            id: log.last_id,
            at: now_millis(),
            kind,
        };
        let published = redacted(event);
        log.append(&published.json);
        // No subscriber is not an error.
        let _ = bus.live.send(Arc::new(published));
        log.last_id
    }

    /// Live events from now on. Subscribe before replaying from the log,
    /// then skip live events whose id the replay already gave.
    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Arc<Published>>> {
        self.inner.as_ref().map(|bus| bus.live.subscribe())
    }

    /// The id of the last event published (or found in the log at start).
    pub(crate) fn last_id(&self) -> u64 {
        self.inner.as_ref().map_or(0, |bus| {
            bus.log
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .last_id
        })
    }

    /// Whether anyone listens live (the stream parser skips building
    /// `agent_text` events nobody would see only when the bus is off).
    pub(crate) fn is_on(&self) -> bool {
        self.inner.is_some()
    }
}

impl Log {
    fn append(&mut self, json: &str) {
        if self.bytes >= MAX_LOG_BYTES {
            self.rotate();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        match file.write_all(&line) {
            Ok(()) => self.bytes += line.len() as u64,
            Err(error) => {
                tracing::warn!(file = %self.path.display(), %error,
                    "cannot write the event log; events go on to live watchers only");
                self.file = None;
            }
        }
    }

    fn rotate(&mut self) {
        let old = rotated(&self.path);
        let reopened = std::fs::rename(&self.path, &old).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        });
        match reopened {
            Ok(file) => {
                self.file = Some(file);
                self.bytes = 0;
            }
            Err(error) => {
                tracing::warn!(file = %self.path.display(), %error, "cannot rotate the event log");
                // Keep appending to the big file rather than losing events.
                self.bytes = 0;
            }
        }
    }
}

/// `events.1.jsonl` beside `events.jsonl`.
fn rotated(path: &Path) -> PathBuf {
    path.with_file_name("events.1.jsonl")
}

/// Serializes the event and masks secrets in the line; when a secret was
/// masked the typed event is re-read from the masked line, so no copy of it
/// keeps the secret.
fn redacted(event: Event) -> Published {
    let json = serde_json::to_string(&event).unwrap_or_default();
    match crate::redact::redact(&json) {
        std::borrow::Cow::Borrowed(_) => Published { event, json },
        std::borrow::Cow::Owned(masked) => {
            let event = serde_json::from_str(&masked).unwrap_or(event);
            Published {
                event,
                json: masked,
            }
        }
    }
}

fn now_millis() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Millisecond)
        .unwrap_or(now)
        .to_string()
}

/// The highest id in a log file (0 when there is none). Reads the file from
/// the start: ids only grow, so the last parsable line holds it, but a torn
/// or foreign line must not hide it.
fn last_id_in(path: &Path) -> anyhow::Result<u64> {
    let mut highest = 0;
    for_each_line(path, |id, _| {
        highest = highest.max(id);
        true
    })?;
    Ok(highest)
}

/// Calls `each(id, line)` for each event line of a log, oldest first, while
/// it returns true. Lines that are not events are skipped.
fn for_each_line(path: &Path, mut each: impl FnMut(u64, &str) -> bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    #[derive(Deserialize)]
    struct Id {
        id: u64,
    }
    let reader = std::io::BufReader::new(file);
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        let Ok(Id { id }) = serde_json::from_str::<Id>(line) else {
            continue;
        };
        if !each(id, line) {
            break;
        }
    }
    Ok(())
}

/// The logged events with an id above `after`, oldest first, at most
/// `limit` (the newest of them when there are more): the replay of SSE
/// `Last-Event-ID` and of `ralphd watch`.
pub(crate) fn read_after(log: &Path, after: u64, limit: usize) -> anyhow::Result<Vec<Event>> {
    let mut found = std::collections::VecDeque::new();
    for path in [rotated(log), log.to_owned()] {
        for_each_line(&path, |id, line| {
            if id > after
                && let Ok(event) = serde_json::from_str::<Event>(line)
            {
                if found.len() == limit {
                    found.pop_front();
                }
                found.push_back(event);
            }
            true
        })?;
    }
    Ok(found.into())
}

/// The logged event lines with an id above `after`, oldest first, at most
/// `limit` of them (the oldest): one page of an SSE replay. Each line is
/// returned as logged (redacted JSON) with its id.
pub(crate) fn lines_after(
    log: &Path,
    after: u64,
    limit: usize,
) -> anyhow::Result<Vec<(u64, String)>> {
    let mut found = Vec::new();
    for path in [rotated(log), log.to_owned()] {
        for_each_line(&path, |id, line| {
            if id > after {
                found.push((id, line.to_owned()));
            }
            found.len() < limit
        })?;
        if found.len() >= limit {
            break;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle_started(cycle: u64) -> EventKind {
        EventKind::CycleStarted { cycle }
    }

    #[test]
    fn events_are_numbered_on_from_the_log_after_a_restart_and_replay_from_any_id() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("events.jsonl");
        let events = Events::open(&path).unwrap();
        assert_eq!(events.publish(cycle_started(1)), 1);
        assert_eq!(events.publish(cycle_started(2)), 2);
        drop(events);
        // A crash tore the last line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"id":3,"at":"#)
            .unwrap();
        let events = Events::open(&path).unwrap();
        assert_eq!(events.publish(cycle_started(3)), 3);
        let replay = read_after(&path, 1, 100).unwrap();
        let ids: Vec<u64> = replay.iter().map(|event| event.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(replay[1].kind, cycle_started(3));
        assert_eq!(read_after(&path, 0, 1).unwrap()[0].id, 3);
    }

    #[test]
    fn the_json_has_a_type_field_and_secrets_are_masked_in_the_log_and_live() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("events.jsonl");
        let events = Events::open(&path).unwrap();
        let mut live = events.subscribe().unwrap();
        let secret = "sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        events.publish(EventKind::AgentText {
            cycle: 4,
            phase: "scan".to_owned(),
            text: format!("the key is {secret}"),
        });
        let logged = std::fs::read_to_string(&path).unwrap();
        assert!(logged.contains(r#""type":"agent_text""#), "{logged}");
        assert!(!logged.contains(secret), "{logged}");
        let published = live.try_recv().unwrap();
        assert!(!published.json.contains(secret));
        let EventKind::AgentText { text, .. } = &published.event.kind else {
            panic!("{:?}", published.event)
        };
        assert!(!text.contains(secret), "{text}");
    }

    #[test]
    fn a_full_log_is_rotated_and_replay_reads_across_the_rotation() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("events.jsonl");
        let events = Events::open(&path).unwrap();
        events.publish(cycle_started(1));
        events.inner.as_ref().unwrap().log.lock().unwrap().bytes = MAX_LOG_BYTES;
        events.publish(cycle_started(2));
        assert!(rotated(&path).exists());
        let ids: Vec<u64> = read_after(&path, 0, 10)
            .unwrap()
            .iter()
            .map(|event| event.id)
            .collect();
        assert_eq!(ids, [1, 2]);
        drop(events);
        assert_eq!(Events::open(&path).unwrap().publish(cycle_started(3)), 3);
    }
}
