//! The daemon: start-up checks, then cycle after cycle until completion,
//! `--max-iterations`, a guard or a signal. It owns the guards (limiter,
//! breaker, budget, usage-limit waits, retries with backoff), the state of
//! the home (progress, prd, status, in-flight cycle) and every wait: the
//! guards and the cycle logic it drives take the time from here.
//!
//! This file holds the facade (`run`, `Daemon`, `RunExit`, `Signals`,
//! `UsageError`); the `impl Daemon` blocks are split by concern:
//! `start` (start-up, in order), `main_loop` (the loop and the recording of
//! each cycle), `phase_runs` (a phase run with its guards, and the
//! `PhaseExecutor` the cycle drives), `branch` (branch-change archiving),
//! `status_board` (status.json and the heartbeat), `recovery` (a cycle a dead
//! daemon left in flight) and `reload` (SIGHUP).

mod branch;
mod main_loop;
mod phase_runs;
mod records;
mod recovery;
mod reload;
mod start;
mod status_board;

use std::time::SystemTime;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::breaker::{Breaker, BreakerSnapshot};
use crate::config::Config;
use crate::control::{Control, Requests};
use crate::digest::{self, RunStop};
use crate::events::{EventKind, Events};
use crate::git::{GitError, GitRepo};
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::notify::{self, Liveness, Notifier};
use crate::state::{self, DaemonState, HomePaths, InFlight, InstanceLock, Progress, RepoLock};
use crate::watch::HeadWatcher;

use self::status_board::StatusBoard;

/// How a run ended, as the exit codes of docs/design.md §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunExit {
    /// 0: the agent declared completion and the daemon accepted it.
    Complete,
    /// 1: `--max-iterations` reached without completion.
    MaxIterations,
    /// 3: budget exhausted, or breaker open with `halt_on_open`.
    Halted,
    /// 130: stopped by SIGINT/SIGTERM after saving state.
    Interrupted,
    /// 1: a stop after the cycle was asked for (`ralphd stop`, the page).
    StopRequested,
}

impl RunExit {
    /// Why the run ended, in words, with its exit code (status.json's `exit`).
    pub(crate) fn describe(self) -> String {
        format!("{} (exit {})", self.why(), self.code())
    }

    /// Why the run ended, in words, without the code.
    pub(crate) fn why(self) -> &'static str {
        match self {
            RunExit::Complete => "the agent declared completion",
            RunExit::MaxIterations => "reached --max-iterations",
            RunExit::Halted => "halted by a guard (budget or circuit breaker)",
            RunExit::Interrupted => "stopped by a signal",
            RunExit::StopRequested => "stopped on request after the cycle",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            RunExit::Complete => 0,
            RunExit::MaxIterations | RunExit::StopRequested => 1,
            RunExit::Halted => 3,
            RunExit::Interrupted => 130,
        }
    }
}

/// A start-up problem the user must fix: exit 2 with a one-line message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// Signals from outside, delivered to the loop.
pub(crate) struct Signals {
    /// Cancelled on SIGINT/SIGTERM: every wait and the running child stop.
    pub(crate) shutdown: CancellationToken,
    /// Bumped on SIGHUP: reload ralph.toml at the next phase boundary.
    pub(crate) reload: watch::Receiver<u64>,
    /// The name of the stop signal received (`SIGTERM`, `SIGINT`), set
    /// before `shutdown` is cancelled.
    pub(crate) received: std::sync::Arc<std::sync::OnceLock<&'static str>>,
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|ts| ts.round(jiff::Unit::Second).unwrap_or(ts).to_string())
        .unwrap_or_default()
}

/// Everything the loop holds, in named parts.
pub(crate) struct Daemon {
    config: Config,
    paths: HomePaths,
    signals: Signals,
    /// Held until the process ends, never read.
    _locks: HeldLocks,
    guards: Guards,
    records: HomeRecords,
    board: StatusBoard,
    /// The repository (paths only; each operation opens it on a blocking thread).
    repo: GitRepo,
    checkout: Checkout,
    /// The event stream watchers see (docs/design.md §11).
    events: Events,
    /// Hooks, webhooks, `stalled` and the heartbeat (docs/design.md §12);
    /// taken at exit to drain.
    notifier: Option<Notifier>,
    /// The loop's proof of life for the heartbeat: stamped at every step
    /// and while waiting on something with a deadline.
    liveness: Liveness,
    /// The Prometheus metrics, fed from `events` by their own task.
    metrics: Metrics,
    /// Requests from outside (pause, resume, stop, breaker reset): the
    /// handle given to the HTTP server, and the loop's side.
    control: (Control, watch::Receiver<Requests>),
    /// The HTTP server (docs/design.md §11); `None` with `[http] listen = ""`.
    http: Option<crate::http::Server>,
    /// How many breaker reset requests the loop has acted on.
    breaker_resets_handled: u64,
    /// The breaker's state as last published (`closed`, `open`, `half_open`).
    breaker_published: &'static str,
    /// The random source of the retries' backoff jitter.
    rng: fastrand::Rng,
    /// Set when a phase failed in a way no retry or later cycle can fix
    /// (credentials, a refused command line): the run stops after this cycle.
    fatal: Option<String>,
    /// Set when a write under the home found its disk full: the run stops
    /// (exit 2) once the cycle is recorded, without feeding the breaker.
    disk_full: Option<String>,
    /// What was warned about in this cycle (a file that is not UTF-8, a
    /// prompt part cut by its cap): prompts are rendered for every phase, the
    /// warning is given once per cycle.
    warned_this_cycle: std::collections::HashSet<String>,
}

/// The single-instance locks, released when the process ends.
struct HeldLocks {
    /// The flock on `state/ralphd.lock`: one daemon per home.
    _home: InstanceLock,
    /// The flock on `ralphd.lock` in the repository's git dir: one daemon
    /// per work tree.
    _repo: RepoLock,
}

/// The guards that decide whether the next call may go: rebuilt from their
/// files at start-up, saved after each cycle, re-read on SIGHUP.
struct Guards {
    limiter: Limiter,
    breaker: Breaker,
}

/// What the daemon remembers of the home between writes: progress.json,
/// prd.json and the in-flight cycle.
struct HomeRecords {
    progress: Progress,
    /// prd.json as read last (re-read before each use).
    prd: Option<Value>,
    /// The running cycle's in-flight.json; `None` between cycles.
    in_flight: Option<InFlight>,
    /// Costs of phase runs in this cycle that are not yet in progress.json.
    unrecorded_cost_usd: f64,
}

/// The branch the daemon works on and what watches it.
struct Checkout {
    branch: String,
    /// Wakes waits when `.git/HEAD` moves (a hint; the branch is re-read at
    /// every phase anyway). The watcher lives as long as this field.
    head_watch: Option<(HeadWatcher, watch::Receiver<u64>)>,
    /// The archive made during the running cycle: (branch left, archive
    /// directory, that branch's progress). A rollback that puts HEAD back on
    /// that branch undoes it instead of archiving again.
    archived_this_cycle: Option<(String, std::path::PathBuf, Progress)>,
}

/// Runs the daemon until it has a reason to exit.
pub(crate) async fn run(config: Config, signals: Signals) -> Result<RunExit> {
    // Whatever write found the disk full (an archive, prd.json), the user
    // reads that it is full, and where: the path of the write when it is
    // known, else the home.
    let home = config.home.clone();
    let name_full_disk = |error: anyhow::Error| match state::DiskFull::find(&home, &error) {
        Some(full) => anyhow::Error::new(full),
        None => error,
    };
    let mut daemon = Daemon::start(config, signals)
        .await
        .map_err(name_full_disk)?;
    let exit = daemon.main_loop().await.map_err(name_full_disk);
    let stop = match &exit {
        Ok(exit) => RunStop {
            exit_code: exit.code(),
            reason: exit.why().to_owned(),
        },
        Err(error) => RunStop {
            exit_code: 2,
            reason: format!(
                "stopped by an error: {}",
                crate::redact::redact(&format!("{error:#}"))
            ),
        },
    };
    let mut run_started_at = String::new();
    daemon.set_status(|status| {
        status.state = DaemonState::Stopped;
        status.dashboard = None;
        status.phase = None;
        status.waiting = None;
        status.exit = Some(match &exit {
            Ok(exit) => exit.describe(),
            Err(error) => format!(
                "stopped by an error (exit 2): {}",
                crate::redact::redact(&format!("{error:#}"))
            ),
        });
        run_started_at = status.started_at.clone();
    });
    daemon.publish_status();
    // The digest is a courtesy: a failure to build or write it never
    // changes the exit.
    let digest = digest::for_run(&daemon.paths, &run_started_at, &stop)
        .and_then(|digest| Ok((digest::write(&daemon.paths, &digest)?, digest)));
    let digest = match digest {
        Ok((path, digest)) => {
            tracing::info!(digest = %path.display(), "the run's digest is written");
            serde_json::to_value(digest).ok()
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot write the run's digest");
            None
        }
    };
    let exit_code = stop.exit_code;
    daemon.events.publish(EventKind::DaemonStopped {
        exit_code,
        reason: stop.reason,
        digest,
    });
    // After daemon_stopped: the queues and the event streams still send it.
    if let Some(notifier) = daemon.notifier.take() {
        notifier.finish(exit_code, notify::DRAIN_TIME).await;
    }
    if let Some(server) = daemon.http.take() {
        server.stop().await;
    }
    // Outside systemd this does nothing; a failed notification harms no run.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    exit
}

impl Daemon {
    /// Runs a git operation off the async threads (git2 calls block).
    async fn git<T: Send + 'static>(
        &mut self,
        operation: impl FnOnce(&GitRepo) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        let repo = self.repo.clone();
        crate::cycle::off_thread(move || operation(&repo)).await
    }
}

/// `ralphd reset-breaker`: a human closes the circuit breaker.
pub(crate) fn reset_breaker(home: &std::path::Path) -> Result<String> {
    let paths = HomePaths::new(home);
    let _lock = InstanceLock::acquire(&paths).context(
        "stop the running daemon before resetting its breaker (it keeps the breaker in memory)",
    )?;
    let settings = crate::config::Config::for_home(home, home).breaker.settings;
    let mut breaker = match state::load_json::<BreakerSnapshot>(
        &paths.breaker(),
        state::OnCorrupt::Refuse,
        "",
    )? {
        Some(snapshot) => Breaker::from_snapshot(settings, &snapshot, SystemTime::now())
            .map_err(|error| anyhow::anyhow!("{error}"))?,
        None => return Ok("the circuit breaker is closed (no state/breaker.json)".to_owned()),
    };
    breaker.reset();
    state::save_json(&paths.breaker(), &breaker.snapshot())?;
    Ok(format!(
        "circuit breaker closed ({})",
        paths.breaker().display()
    ))
}
