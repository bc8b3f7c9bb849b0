//! Telling the user what happens (docs/design.md §12): hooks and webhooks
//! fed from the event stream, the `stalled` alert, and the dead-man's
//! switch. Nothing here can block, slow or fail the loop: the loop only
//! publishes events (which never waits) and stamps [`Liveness`].
//!
//! One task reads the live events: it feeds the [`stall::StallWatch`]
//! (publishing `stalled` into the stream like any event) and puts each
//! event in the bounded queue of every hook and webhook that wants it. Each
//! destination has its own queue and sender task, so a receiver that hangs
//! fills only its own queue; a full queue drops its oldest entry, counted
//! and logged. At exit, [`Notifier::finish`] gives the queues a few seconds
//! to drain (the final `daemon_stopped` included), logs what is left, and
//! sends the heartbeat's exit ping.
//!
//! Submodules: `queue` (the drop-oldest queue), `format` (each service's
//! body), `hooks` (one hook run), `webhooks` (one webhook POST with
//! retries), `heartbeat` (the dead-man's switch and `Liveness`), `stall`
//! (when `stalled` is due).

mod format;
mod heartbeat;
mod hooks;
mod queue;
mod stall;
mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HookSettings};
use crate::events::{EventKind, Events, Published};
use crate::metrics::NotificationCounters;
use crate::state::Outcome;

pub(crate) use heartbeat::Liveness;

use self::format::Context;
use self::heartbeat::{Heartbeat, Ping};
use self::queue::DropOldest;
use self::webhooks::Webhook;

/// How long the queues get to drain when the daemon stops.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Notifications sent, failed and dropped since start, for the exit's
/// totals line and the `ralphd_notifications_*_total` metrics.
#[derive(Default)]
pub(crate) struct NotifyStats {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    metrics: NotificationCounters,
}

impl NotifyStats {
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// `target`: `hook`, `webhook` or `heartbeat`.
    fn count_sent(&self, target: &str) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.sent(target);
    }
    fn count_failed(&self, target: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.metrics.failed(target);
    }
    fn count_dropped(&self, count: u64) {
        self.dropped.fetch_add(count, Ordering::Relaxed);
        for _ in 0..count {
            self.metrics.dropped();
        }
    }
}

/// Where notifications go.
enum Destination {
    Hook(HookSettings),
    Webhook(Webhook),
}

impl Destination {
    fn on(&self) -> &[String] {
        match self {
            Destination::Hook(hook) => &hook.on,
            Destination::Webhook(webhook) => &webhook.settings.on,
        }
    }

    fn wants(&self, event_type: &str) -> bool {
        self.on().iter().any(|on| on == "*" || on == event_type)
    }

    /// For logs: the hook's program or the webhook's host.
    fn label(&self) -> String {
        match self {
            Destination::Hook(hook) => format!(
                "hook {}",
                hook.command.first().map(String::as_str).unwrap_or("?")
            ),
            Destination::Webhook(webhook) => format!("webhook {}", webhook.label()),
        }
    }
}

/// The queue of one destination.
type Queue = Arc<DropOldest<Arc<Published>>>;

/// One destination with its queue.
struct Lane {
    destination: Arc<Destination>,
    queue: Queue,
}

/// A destination's sender task, with its label and queue for the drain.
struct Sender {
    label: String,
    queue: Queue,
    task: JoinHandle<()>,
}

/// What the senders need to know of the daemon.
struct Where {
    home: PathBuf,
    repo: PathBuf,
    status_file: PathBuf,
    repo_name: String,
}

impl Where {
    /// The message context; the dashboard's URL is read from status.json
    /// (`dashboard`, written when the HTTP server is on).
    fn context(&self) -> Context {
        let dashboard = std::fs::read(&self.status_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|status| Some(status.get("dashboard")?.as_str()?.to_owned()))
            .filter(|url| !url.is_empty());
        Context {
            repo_name: self.repo_name.clone(),
            dashboard,
        }
    }
}

/// The running notifications of one daemon; see the module docs.
pub(crate) struct Notifier {
    stats: Arc<NotifyStats>,
    liveness: Liveness,
    /// Tells the reader task to take what is published and close the queues,
    /// and the heartbeat to stop.
    stop: CancellationToken,
    /// Cancels hooks still running when the drain time is up.
    cancel_hooks: CancellationToken,
    reader: Option<JoinHandle<()>>,
    senders: Vec<Sender>,
    heartbeat: Option<(Heartbeat, JoinHandle<()>)>,
}

impl Notifier {
    /// Subscribes to `events` and starts the senders and the heartbeat on
    /// the current runtime. Call it before the first event to be told.
    pub(crate) fn start(
        config: &Config,
        events: &Events,
        status_file: PathBuf,
        metrics: NotificationCounters,
    ) -> Notifier {
        let settings = &config.notify;
        let stats = Arc::new(NotifyStats {
            metrics,
            ..NotifyStats::default()
        });
        let liveness = Liveness::new(settings.heartbeat_every);
        let stop = CancellationToken::new();
        let cancel_hooks = CancellationToken::new();
        let client = reqwest::Client::builder()
            .user_agent(concat!("ralphd/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let place = Arc::new(Where {
            home: config.home.clone(),
            repo: config.repo.clone(),
            status_file,
            repo_name: config
                .repo
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
        let destinations = settings.hooks.iter().cloned().map(Destination::Hook).chain(
            settings
                .webhooks
                .iter()
                .cloned()
                .map(|webhook| Destination::Webhook(Webhook::new(webhook, client.clone()))),
        );
        let capacity = usize::try_from(settings.queue_size).unwrap_or(usize::MAX);
        let lanes: Vec<Lane> = destinations
            .map(|destination| Lane {
                destination: Arc::new(destination),
                queue: Arc::new(DropOldest::new(capacity)),
            })
            .collect();
        let senders = lanes
            .iter()
            .map(|lane| {
                let task = tokio::spawn(send_all(
                    lane.destination.clone(),
                    lane.queue.clone(),
                    place.clone(),
                    stats.clone(),
                    cancel_hooks.clone(),
                ));
                Sender {
                    label: lane.destination.label(),
                    queue: lane.queue.clone(),
                    task,
                }
            })
            .collect();
        let reader = match events.subscribe() {
            Some(receiver) => Some(tokio::spawn(read_events(
                receiver,
                events.clone(),
                lanes,
                settings.stall_after,
                stats.clone(),
                stop.clone(),
            ))),
            // No events to read: the senders have nothing to wait for.
            None => {
                lanes.iter().for_each(|lane| lane.queue.close());
                None
            }
        };
        let heartbeat = settings.heartbeat_url.as_deref().and_then(|url| {
            let url = reqwest::Url::parse(url).ok()?;
            let heartbeat = Heartbeat {
                url,
                every: settings.heartbeat_every,
                client: client.clone(),
                stats: stats.clone(),
            };
            let task = tokio::spawn(heartbeat.clone().run(liveness.clone(), stop.clone()));
            Some((heartbeat, task))
        });
        Notifier {
            stats,
            liveness,
            stop,
            cancel_hooks,
            reader,
            senders,
            heartbeat,
        }
    }

    /// The loop's proof of life for the heartbeat.
    pub(crate) fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }

    /// At exit, after the last event (`daemon_stopped`) is published: the
    /// queues get until `drain` to empty, the heartbeat pings the exit code;
    /// what could not be sent by then is logged and counted as dropped.
    pub(crate) async fn finish(mut self, exit_code: u8, drain: Duration) {
        let deadline = tokio::time::Instant::now() + drain;
        self.stop.cancel();
        if let Some(reader) = self.reader.take() {
            // It only moves events into queues: quick.
            let _ = tokio::time::timeout_at(deadline, reader).await;
        }
        let heartbeat = self.heartbeat.take();
        let exit_ping = async {
            if let Some((heartbeat, task)) = heartbeat {
                // The start ping, if still on its way, goes first.
                let _ = tokio::time::timeout_at(deadline, task).await;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                heartbeat
                    .ping(Ping::Exit(exit_code), left.max(Duration::from_millis(500)))
                    .await;
            }
        };
        let senders = std::mem::take(&mut self.senders);
        let drained = async {
            for Sender {
                label,
                queue,
                mut task,
            } in senders
            {
                if tokio::time::timeout_at(deadline, &mut task).await.is_ok() {
                    continue;
                }
                self.cancel_hooks.cancel();
                task.abort();
                // The queue is closed: a sender still at work holds one more.
                let left = queue.take_all();
                let types: Vec<&str> = left.iter().map(|event| event.event.kind.name()).collect();
                let count = left.len() + 1;
                self.stats.count_dropped(count as u64);
                tracing::warn!(destination = %label, count, waiting = %types.join(", "),
                    "notifications not sent before the daemon stopped (one was being sent, the rest waiting)");
            }
        };
        tokio::join!(exit_ping, drained);
        let stats = &self.stats;
        if stats.sent() + stats.failed() + stats.dropped() > 0 {
            tracing::info!(
                sent = stats.sent(),
                failed = stats.failed(),
                dropped = stats.dropped(),
                "notifications at exit"
            );
        }
    }
}

/// Reads the live events: feeds the stall watch and fills the queues.
async fn read_events(
    mut receiver: tokio::sync::broadcast::Receiver<Arc<Published>>,
    events: Events,
    lanes: Vec<Lane>,
    stall_after: Duration,
    stats: Arc<NotifyStats>,
    stop: CancellationToken,
) {
    let mut stall = stall::StallWatch::new(stall_after, tokio::time::Instant::now());
    let mut stopping = false;
    loop {
        let received = if stopping {
            // Everything published before the stop is in the channel already.
            match receiver.try_recv() {
                Ok(event) => Ok(event),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(count)) => {
                    Err(RecvError::Lagged(count))
                }
                Err(_) => break,
            }
        } else {
            tokio::select! {
                received = receiver.recv() => received,
                () = stop.cancelled() => {
                    stopping = true;
                    continue;
                }
            }
        };
        let published = match received {
            Ok(published) => published,
            Err(RecvError::Lagged(count)) => {
                stats.count_dropped(count);
                tracing::warn!(
                    count,
                    "notifications fell behind the event stream; the oldest events were dropped"
                );
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        if let EventKind::CycleFinished {
            outcome, cost_usd, ..
        } = &published.event.kind
        {
            let committed = matches!(outcome, Outcome::Committed | Outcome::Complete);
            if let Some(stalled) =
                stall.cycle_finished(committed, *cost_usd, tokio::time::Instant::now())
            {
                let since = std::time::SystemTime::now() - stalled.since.elapsed();
                tracing::warn!(
                    cycles = stalled.cycles_without_commit,
                    "stalled: no verified commit for stall_after"
                );
                events.publish(EventKind::Stalled {
                    since: rfc3339(since),
                    cycles_without_commit: stalled.cycles_without_commit,
                    cost_usd: stalled.cost_usd,
                });
            }
        }
        let event_type = published.event.kind.name();
        for lane in lanes
            .iter()
            .filter(|lane| lane.destination.wants(event_type))
        {
            if let Some(dropped) = lane.queue.push(published.clone()) {
                stats.count_dropped(1);
                tracing::warn!(destination = %lane.destination.label(), event = dropped.event.kind.name(), id = dropped.event.id,
                    "notification queue full: the oldest notification was dropped");
            }
        }
    }
    for lane in &lanes {
        lane.queue.close();
    }
}

/// Sends what arrives in one destination's queue, in order, until it is
/// closed and empty.
async fn send_all(
    destination: Arc<Destination>,
    queue: Queue,
    place: Arc<Where>,
    stats: Arc<NotifyStats>,
    cancel: CancellationToken,
) {
    let mut rng = fastrand::Rng::new();
    while let Some(event) = queue.pop().await {
        let result = match destination.as_ref() {
            Destination::Hook(hook) => {
                let hook_place = hooks::HookPlace {
                    home: &place.home,
                    repo: &place.repo,
                };
                hooks::run(hook, &event, &hook_place, &cancel).await
            }
            Destination::Webhook(webhook) => webhook.send(&event, &place.context(), &mut rng).await,
        };
        let target = match destination.as_ref() {
            Destination::Hook(_) => "hook",
            Destination::Webhook(_) => "webhook",
        };
        match result {
            Ok(()) => stats.count_sent(target),
            Err(error) => {
                stats.count_failed(target);
                tracing::warn!(destination = %destination.label(), event = event.event.kind.name(), id = event.event.id,
                    %error, "notification failed");
            }
        }
    }
}

/// RFC 3339 to the second.
fn rfc3339(time: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|ts| ts.round(jiff::Unit::Second).unwrap_or(ts).to_string())
        .unwrap_or_default()
}
