//! The few events of `state/events.jsonl` (docs/design.md §11) the digest
//! needs — `daemon_started`, `daemon_stopped`, `waiting` — read leniently
//! (a line that does not parse is skipped, every other field ignored), and
//! the waits they describe added up by reason.
//!
//! Pure: it gets the lines, not the file.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;

/// One event line as the digest reads it; `kind` is the event's `type`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LoggedEvent {
    pub(crate) at: Timestamp,
    pub(crate) kind: String,
    /// `waiting`: why (`limiter`, `usage_limit`, …); `daemon_stopped`: the
    /// exit's reason in words.
    pub(crate) reason: Option<String>,
    /// `waiting`: until when.
    pub(crate) until: Option<Timestamp>,
    /// `daemon_stopped`: the exit code.
    pub(crate) exit_code: Option<u8>,
    /// `cycle_started` and the other events of a cycle: its number.
    pub(crate) cycle: Option<u64>,
}

#[derive(Deserialize)]
struct RawEvent {
    at: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    reason: Option<serde_json::Value>,
    #[serde(default)]
    until: Option<serde_json::Value>,
    #[serde(default)]
    exit_code: Option<serde_json::Value>,
    #[serde(default)]
    cycle: Option<serde_json::Value>,
}

impl LoggedEvent {
    /// One line of the log; `None` when it is not an event with a time,
    /// or is one of the agent's words or tool calls: most of a log's bytes,
    /// nothing a digest counts, so skipped unread (the log writes `type`
    /// before any text).
    pub(crate) fn parse(line: &str) -> Option<LoggedEvent> {
        let kind = line.split_once(r#""type":""#).map(|(_, rest)| rest);
        if kind.is_some_and(|kind| {
            kind.starts_with(r#"agent_text""#) || kind.starts_with(r#"tool_use""#)
        }) {
            return None;
        }
        let raw: RawEvent = serde_json::from_str(line).ok()?;
        let text = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(text)) => Some(text),
            _ => None,
        };
        Some(LoggedEvent {
            at: raw.at.parse().ok()?,
            kind: raw.kind,
            reason: text(raw.reason),
            until: text(raw.until).and_then(|until| until.parse().ok()),
            exit_code: raw
                .exit_code
                .and_then(|code| code.as_u64())
                .and_then(|code| u8::try_from(code).ok()),
            cycle: raw.cycle.and_then(|cycle| cycle.as_u64()),
        })
    }
}

/// The waits of a time span.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Waits {
    /// Each wait (reason, start, end), clipped to the span.
    intervals: Vec<(String, Timestamp, Timestamp)>,
    /// Whole seconds by reason.
    pub(crate) by_reason: BTreeMap<String, u64>,
}

impl Waits {
    /// Whole seconds of waiting between `start` and `end`.
    pub(crate) fn seconds_within(&self, start: Timestamp, end: Timestamp) -> u64 {
        self.intervals
            .iter()
            .map(|(_, from, to)| overlap_seconds(*from, *to, start, end))
            .fold(0u64, u64::saturating_add)
    }
}

/// The waits between `from` (`None`: the beginning) and `to`: each
/// `waiting` event lasts from its `at` to the next event's `at` or its
/// `until`, whichever comes first (the last one: to `until` or `to`).
pub(crate) fn waits(events: &[LoggedEvent], from: Option<Timestamp>, to: Timestamp) -> Waits {
    let from = from.unwrap_or(Timestamp::MIN);
    let mut found = Waits::default();
    for (index, event) in events.iter().enumerate() {
        if event.kind != "waiting" {
            continue;
        }
        let next = events[index + 1..]
            .iter()
            .map(|later| later.at)
            .find(|at| *at >= event.at);
        let end = [next, event.until, Some(to)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(to);
        let (start, end) = (event.at.max(from), end.min(to));
        if end <= start {
            continue;
        }
        let reason = event.reason.clone().unwrap_or_else(|| "other".to_owned());
        let seconds = found.by_reason.entry(reason.clone()).or_insert(0);
        *seconds = seconds.saturating_add(overlap_seconds(start, end, start, end));
        found.intervals.push((reason, start, end));
    }
    found
}

fn overlap_seconds(
    a_start: Timestamp,
    a_end: Timestamp,
    b_start: Timestamp,
    b_end: Timestamp,
) -> u64 {
    let start = a_start.max(b_start);
    let end = a_end.min(b_end);
    if end <= start {
        return 0;
    }
    u64::try_from(end.duration_since(start).as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn lines_that_cannot_be_read_are_skipped_and_the_fields_read_leniently() {
        assert_eq!(LoggedEvent::parse("not json"), None);
        assert_eq!(LoggedEvent::parse(r#"{"id":1,"type":"waiting"}"#), None);
        assert_eq!(
            LoggedEvent::parse(r#"{"id":1,"at":"yesterday","type":"waiting"}"#),
            None
        );
        let event = LoggedEvent::parse(
            r#"{"id":7,"at":"2026-03-10T23:00:00.250Z","type":"waiting","reason":"usage_limit","detail":"5-hour limit","until":"2026-03-11T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(event.kind, "waiting");
        assert_eq!(event.reason.as_deref(), Some("usage_limit"));
        assert_eq!(event.until, Some(at("2026-03-11T00:00:00Z")));
        let stopped = LoggedEvent::parse(
            r#"{"id":9,"at":"2026-03-11T06:00:00Z","type":"daemon_stopped","exit_code":3,"reason":"halted","digest":{}}"#,
        )
        .unwrap();
        assert_eq!(stopped.exit_code, Some(3));
        let odd = LoggedEvent::parse(
            r#"{"id":9,"at":"2026-03-11T06:00:00Z","type":"daemon_stopped","exit_code":"x","reason":5}"#,
        )
        .unwrap();
        assert_eq!((odd.exit_code, odd.reason), (None, None));
    }

    #[test]
    fn the_agents_words_and_tool_calls_are_skipped_and_a_text_naming_a_type_is_not_one() {
        let text = r#"{"id":3,"at":"2026-03-11T06:00:00Z","type":"agent_text","cycle":1,"phase":"scan","text":"x"}"#;
        let tool = r#"{"id":4,"at":"2026-03-11T06:00:00Z","type":"tool_use","cycle":1,"phase":"scan","tool":"Bash","summary":"ls"}"#;
        assert_eq!(
            (LoggedEvent::parse(text), LoggedEvent::parse(tool)),
            (None, None)
        );
        let waiting = LoggedEvent::parse(
            r#"{"id":5,"at":"2026-03-11T06:00:00Z","type":"waiting","reason":"sleep","detail":"\"type\":\"agent_text\""}"#,
        )
        .expect("a wait");
        assert_eq!(waiting.kind, "waiting");
    }

    fn event(at_text: &str, kind: &str, reason: &str, until: Option<&str>) -> LoggedEvent {
        LoggedEvent {
            at: at(at_text),
            kind: kind.to_owned(),
            reason: Some(reason.to_owned()),
            until: until.map(at),
            exit_code: None,
            cycle: None,
        }
    }

    #[test]
    fn a_wait_ends_at_the_next_event_or_its_until_whichever_comes_first() {
        let events = [
            // Ends at the next event (10 min), well before its until.
            event(
                "2026-03-10T22:00:00Z",
                "waiting",
                "limiter",
                Some("2026-03-10T23:00:00Z"),
            ),
            event("2026-03-10T22:10:00Z", "cycle_started", "", None),
            // Ends at its until (30 min), the next event comes later.
            event(
                "2026-03-10T23:00:00Z",
                "waiting",
                "usage_limit",
                Some("2026-03-10T23:30:00Z"),
            ),
            event("2026-03-11T01:00:00Z", "cycle_started", "", None),
            // The last one: cut at the span's end (5 min).
            event(
                "2026-03-11T02:00:00Z",
                "waiting",
                "usage_limit",
                Some("2026-03-11T05:00:00Z"),
            ),
        ];
        let found = waits(&events, None, at("2026-03-11T02:05:00Z"));
        assert_eq!(found.by_reason["limiter"], 600);
        assert_eq!(found.by_reason["usage_limit"], 1800 + 300);
        // A span that starts inside the first wait counts only its part.
        let found = waits(
            &events,
            Some(at("2026-03-10T22:05:00Z")),
            at("2026-03-10T22:20:00Z"),
        );
        assert_eq!(found.by_reason.get("limiter"), Some(&300));
        assert_eq!(found.by_reason.get("usage_limit"), None);
        assert_eq!(
            found.seconds_within(at("2026-03-10T22:00:00Z"), at("2026-03-10T22:07:00Z")),
            120
        );
    }
}
