//! `GET /api/events`: the event stream as Server-Sent Events (`id:` = the
//! event id, `event:` = its type, `data:` = its JSON). A client that sends
//! `Last-Event-ID` (or `?last_event_id=`, for clients that cannot set
//! headers) first gets what it missed from `state/events.jsonl`, then the
//! live events, without a gap or a repeat: the stream subscribes before it
//! replays and skips live ids it has already sent.
//!
//! A client never holds the daemon: each subscriber has the bus's bounded
//! buffer; one that falls behind gets a final `: lagged` comment and is
//! dropped (it reconnects with `Last-Event-ID`), and every stream ends when
//! the server stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::events::{Published, lines_after};

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How many logged events one replay read returns.
const REPLAY_PAGE: usize = 1000;

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    last_event_id: Option<u64>,
}

pub(super) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let last_id = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .or(query.last_event_id);
    // Subscribe first: whatever is published from now on comes live, the
    // rest is in the log.
    let live = state.events.subscribe();
    let last_id = last_id.map(|id| replay_from(id, state.events.last_id()));
    let feed = Feed {
        live,
        log: state.paths.events(),
        sent: last_id.unwrap_or(0),
        replaying: last_id.is_some(),
        pending: VecDeque::new(),
        shutdown: state.shutdown.clone(),
        finished: false,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Where a replay after `Last-Event-ID: requested` starts. An id beyond the
/// last one published means the log was removed and its ids started over:
/// the client gets the whole new log rather than nothing until the ids
/// catch up.
fn replay_from(requested: u64, last_published: u64) -> u64 {
    if requested > last_published {
        0
    } else {
        requested
    }
}

/// One client's place in the stream.
struct Feed {
    live: Option<broadcast::Receiver<Arc<Published>>>,
    log: std::path::PathBuf,
    /// The id of the last event sent (or the client's `Last-Event-ID`).
    sent: u64,
    /// Still reading the log after a `Last-Event-ID`.
    replaying: bool,
    /// Events read but not sent yet: (id, type, JSON).
    pending: VecDeque<(u64, String, String)>,
    shutdown: CancellationToken,
    /// Set when the stream ends after what is pending.
    finished: bool,
}

impl Feed {
    /// The next SSE event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some((id, kind, json)) = self.pending.pop_front() {
                self.sent = id;
                return Some(
                    SseEvent::default()
                        .id(id.to_string())
                        .event(kind)
                        .data(json),
                );
            }
            if self.finished {
                return None;
            }
            if self.replaying {
                self.replay_page().await;
                continue;
            }
            let live = self.live.as_mut()?;
            tokio::select! {
                biased;
                received = live.recv() => match received {
                    Ok(published) => self.push_live(&published),
                    Err(RecvError::Lagged(_)) => {
                        self.finished = true;
                        return Some(SseEvent::default().comment("lagged"));
                    }
                    Err(RecvError::Closed) => return None,
                },
                () = self.shutdown.cancelled() => {
                    // What was published before the stop still goes out
                    // (the `daemon_stopped` event, say).
                    let mut left = Vec::new();
                    while let Ok(published) = live.try_recv() {
                        left.push(published);
                    }
                    for published in left {
                        self.push_live(&published);
                    }
                    self.finished = true;
                }
            }
        }
    }

    fn push_live(&mut self, published: &Published) {
        let id = published.event.id;
        if id > self.sent {
            let kind = published.event.kind.name().to_owned();
            self.pending.push_back((id, kind, published.json.clone()));
        }
    }

    /// Reads the next page of the log after the last id sent (off the async
    /// threads); the replay ends at a page that is not full.
    async fn replay_page(&mut self) {
        let log = self.log.clone();
        let after = self.sent;
        let page = tokio::task::spawn_blocking(move || lines_after(&log, after, REPLAY_PAGE)).await;
        let lines = match page {
            Ok(Ok(lines)) => lines,
            Ok(Err(error)) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot replay the event log to a client");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        if lines.len() < REPLAY_PAGE {
            self.replaying = false;
        }
        #[derive(Deserialize)]
        struct Type {
            #[serde(rename = "type")]
            kind: String,
        }
        if lines.is_empty() {
            self.replaying = false;
        }
        for (id, json) in lines {
            let kind = serde_json::from_str::<Type>(&json)
                .map_or_else(|_| "event".to_owned(), |typed| typed.kind);
            self.pending.push_back((id, kind, json));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventKind, Events, LIVE_BUFFER};

    fn feed(events: &Events, log: &std::path::Path, last_id: Option<u64>) -> Feed {
        Feed {
            live: events.subscribe(),
            log: log.to_owned(),
            sent: last_id.unwrap_or(0),
            replaying: last_id.is_some(),
            pending: VecDeque::new(),
            shutdown: CancellationToken::new(),
            finished: false,
        }
    }

    #[test]
    fn an_id_from_before_a_removed_log_replays_the_new_log_whole() {
        assert_eq!(replay_from(7, 10), 7);
        assert_eq!(replay_from(10, 10), 10);
        assert_eq!(replay_from(500, 10), 0);
    }

    fn shown(event: &SseEvent) -> String {
        format!("{event:?}")
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_gets_a_lagged_comment_and_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        let events = Events::open(&log).unwrap();
        let mut slow = feed(&events, &log, None);
        for cycle in 0..LIVE_BUFFER as u64 + 10 {
            events.publish(EventKind::CycleStarted { cycle });
        }
        let last = slow.next().await.expect("a final comment");
        assert!(shown(&last).contains("lagged"), "{}", shown(&last));
        assert!(slow.next().await.is_none(), "then the stream ends");
    }

    #[tokio::test]
    async fn a_replay_joins_the_live_events_without_a_gap_or_a_repeat_and_ends_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        let events = Events::open(&log).unwrap();
        for cycle in 1..=(REPLAY_PAGE as u64 + 5) {
            events.publish(EventKind::CycleStarted { cycle });
        }
        let mut client = feed(&events, &log, Some(2));
        // Published after the subscription: in the log and live.
        events.publish(EventKind::Paused {});
        events.publish(EventKind::Resumed {});
        let mut ids = Vec::new();
        while ids.len() < REPLAY_PAGE + 5 {
            let event = client.next().await.unwrap();
            let text = shown(&event);
            ids.push(client.sent);
            assert!(text.contains("id:"), "{text}");
        }
        let expected: Vec<u64> = (3..=(REPLAY_PAGE as u64 + 7)).collect();
        assert_eq!(ids, expected);
        client.shutdown.cancel();
        events.publish(EventKind::StopRequested {});
        let last = client
            .next()
            .await
            .expect("what was published before the stop");
        assert!(shown(&last).contains("stop_requested"), "{}", shown(&last));
        assert!(client.next().await.is_none());
    }
}
