//! The daemon loop: start-up checks, then cycle after cycle until
//! completion, `--max-iterations`, a guard or a signal. It owns the guards
//! (limiter, breaker, budget, usage-limit waits, retries with backoff), the
//! state of the home (progress, prd, status, in-flight cycle) and every wait:
//! the guards and the cycle logic it drives take the time from here.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::classify::PhaseFailure;
use crate::agent::{self, PhaseOutcome, PhaseRequest, PhaseRun};
use crate::backoff;
use crate::breaker::{Admission, Breaker, BreakerSnapshot, BreakerState};
use crate::checks::{self, CheckResult};
use crate::config::{AgentKind, Config};
use crate::cycle::{self, CycleEnd, CycleInput, CycleReport, LiveRepo, PhaseExecutor, Stop};
use crate::git::{GitError, GitRepo};
use crate::git_rules;
use crate::limiter::{Limiter, LimiterSnapshot};
use crate::phase::Phase;
use crate::prd;
use crate::prompt::{self, PromptContext, StoryBrief};
use crate::retention::{self, Retention};
use crate::state::{
    self, CycleRecord, Durability, HomePaths, InFlight, InstanceLock, Outcome, Progress, RepoLock,
    StatusFile, VERSION, Waiting,
};
use crate::watch::HeadWatcher;

/// How a run ended, as the exit codes of DESIGN §2.
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
}

impl RunExit {
    /// Why the run ended, in words, with its exit code (status.json's `exit`).
    pub(crate) fn describe(self) -> String {
        let why = match self {
            RunExit::Complete => "the agent declared completion",
            RunExit::MaxIterations => "reached --max-iterations",
            RunExit::Halted => "halted by a guard (budget or circuit breaker)",
            RunExit::Interrupted => "stopped by a signal",
        };
        format!("{why} (exit {})", self.code())
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            RunExit::Complete => 0,
            RunExit::MaxIterations => 1,
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
    pub(crate) received: Arc<std::sync::OnceLock<&'static str>>,
}

/// Shared with the heartbeat task, which rewrites it periodically.
type StatusBoard = Arc<Mutex<StatusFile>>;

/// How long status changes are gathered before status.json is rewritten.
const STATUS_COALESCE: Duration = Duration::from_millis(100);

/// Stamps the heartbeat and writes status.json (atomically, without fsync: it
/// is a live view).
fn write_status(status: &StatusBoard, path: &std::path::Path) {
    let snapshot = {
        let mut status = status.lock().expect("status lock");
        status.heartbeat_at = now_rfc3339();
        status.clone()
    };
    if let Err(error) = state::save_json_with(path, &snapshot, Durability::ProcessDeath) {
        tracing::warn!(error = %format!("{error:#}"), "cannot write status.json");
    }
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

/// Everything the loop holds.
pub(crate) struct Daemon {
    config: Config,
    paths: HomePaths,
    signals: Signals,
    /// Holds the flock on `state/ralphd.lock` until the process ends.
    _lock: InstanceLock,
    /// Holds the flock on `ralphd.lock` in the repository's git dir.
    _repo_lock: RepoLock,
    limiter: Limiter,
    breaker: Breaker,
    progress: Progress,
    prd: Option<Value>,
    status: StatusBoard,
    branch: String,
    /// Costs of phase runs in this cycle that are not yet in progress.json.
    unrecorded_cost_usd: f64,
    rng: fastrand::Rng,
    /// The repository (paths only; each operation opens it on a blocking thread).
    repo: GitRepo,
    /// Wakes waits when `.git/HEAD` moves (a hint; the branch is re-read at
    /// every phase anyway). The watcher lives as long as this field.
    head_watch: Option<(HeadWatcher, watch::Receiver<u64>)>,
    in_flight: Option<InFlight>,
    /// Set when a phase failed in a way no retry or later cycle can fix
    /// (credentials, a refused command line): the run stops after this cycle.
    fatal: Option<String>,
    /// Set when a write under the home found its disk full: the run stops
    /// (exit 2) once the cycle is recorded, without feeding the breaker.
    disk_full: Option<String>,
    /// The archive made during the running cycle: (branch left, archive
    /// directory, that branch's progress). A rollback that puts HEAD back on
    /// that branch undoes it instead of archiving again.
    archived_this_cycle: Option<(String, std::path::PathBuf, Progress)>,
    /// Wakes the heartbeat task to write a changed status.
    status_changed: Arc<tokio::sync::Notify>,
    /// What was warned about in this cycle (a file that is not UTF-8, a
    /// prompt part cut by its cap): prompts are rendered for every phase, the
    /// warning is given once per cycle.
    warned_this_cycle: std::collections::HashSet<String>,
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
    daemon.set_status(|status| {
        status.state = "stopped".to_owned();
        status.phase = None;
        status.waiting = None;
        status.exit = Some(match &exit {
            Ok(exit) => exit.describe(),
            Err(error) => format!(
                "stopped by an error (exit 2): {}",
                crate::redact::redact(&format!("{error:#}"))
            ),
        });
    });
    daemon.publish_status();
    // Outside systemd this does nothing; a failed notification harms no run.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    exit
}

impl Daemon {
    async fn start(config: Config, signals: Signals) -> Result<Daemon> {
        let paths = HomePaths::new(&config.home);
        paths.create_dirs()?;
        let lock = InstanceLock::acquire(&paths)?;
        // Then the repository: another home's daemon may work on it.
        let repo = GitRepo::open(&config.repo).map_err(|error| UsageError(error.to_string()))?;
        let repo_lock = RepoLock::acquire(repo.git_dir(), &config.home, &config.repo)?;
        if let Some(operation) = repo.operation_in_progress()? {
            bail!(UsageError(format!(
                "a {} is in progress in {}; {}, then start ralphd again",
                operation.name(),
                config.repo.display(),
                operation.advice()
            )));
        }
        state::remove_stale_temp_files(&paths);
        if let Err(error) = crate::reaper::become_subreaper() {
            tracing::warn!(%error, "cannot become a child subreaper; tool processes that detach may outlive their phase");
        }

        let on_corrupt = config.state.on_corrupt;
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        let progress: Option<Progress> = state::load_json(&paths.progress(), on_corrupt, &stamp)?;
        let prd = prd::load(&paths.prd())?;
        let breaker_snapshot: Option<BreakerSnapshot> =
            state::load_json(&paths.breaker(), on_corrupt, &stamp)?;
        let limiter_snapshot: Option<LimiterSnapshot> =
            state::load_json(&paths.limiter(), on_corrupt, &stamp)?;
        // A cycle the previous daemon was running when it died.
        let interrupted: Option<InFlight> =
            state::load_json(&paths.in_flight(), state::OnCorrupt::MoveAside, &stamp)?;
        stop_leftover_agents(&config.home);
        let now = SystemTime::now();
        let (per_minute, per_hour) = (
            config.rate_limit.requests_per_minute,
            config.rate_limit.requests_per_hour,
        );
        let limiter = match &limiter_snapshot {
            Some(snapshot) => Limiter::from_snapshot(per_minute, per_hour, snapshot, now)
                .map_err(|error| UsageError(format!("{}: {error}", paths.limiter().display())))?,
            None => Limiter::new(per_minute, per_hour, &[], now),
        };
        let breaker = match &breaker_snapshot {
            Some(snapshot) => Breaker::from_snapshot(config.breaker.settings, snapshot, now)
                .map_err(|error| UsageError(format!("{}: {error}", paths.breaker().display())))?,
            None => Breaker::new(config.breaker.settings),
        };

        if config.agent.kind == AgentKind::Claude {
            let checked =
                agent::claude::check_installed(&config.agent.command, config.agent.version_timeout)
                    .await;
            // Whatever the check started and left behind is killed and reaped.
            sweep_descendants().await;
            let version = checked.map_err(|error| UsageError(format!("{error:#}")))?;
            tracing::info!(command = %config.agent.command, %version, "agent CLI found");
        }

        let repo_path = config.repo.clone();
        let home = config.home.clone();
        let allow_dirty = config.allow_dirty;
        let author = (
            config.git.author_name.clone(),
            config.git.author_email.clone(),
        );
        let rollback = interrupted
            .as_ref()
            .and_then(|in_flight| Some((in_flight.cycle, in_flight.start.clone()?)));
        let (repo, branch, recovered) = tokio::task::spawn_blocking(move || -> Result<(GitRepo, String, Recovered)> {
            let mut repo = repo;
            let home_dirs = repo.home_dirs_in_repo(&home);
            if !home_dirs.is_empty() {
                repo.ensure_excluded(&home_dirs)?;
            }
            // Before the dirty check: what the dead daemon's cycle left in the
            // tree is its work, not the user's.
            let recovered = match rollback {
                Some((cycle, start)) => recover_repo(&repo, cycle, &start, &author)?,
                None => Recovered::default(),
            };
            if !allow_dirty {
                // The home's steering files are the user's to edit at any time.
                let dirty = repo.stray_paths(&home, 11)?;
                if !dirty.is_empty() {
                    let more = if dirty.len() > 10 { ", …" } else { "" };
                    bail!(UsageError(format!(
                        "the repository {} has uncommitted changes ({}{more}); commit or stash them, or pass --allow-dirty to keep them untouched",
                        repo_path.display(),
                        dirty[..dirty.len().min(10)].join(", ")
                    )));
                }
            }
            let branch = repo.branch_label()?;
            Ok((repo, branch, recovered))
        })
        .await
        .context("git start-up check panicked")??;

        check_commit_rules(&repo, &config, &signals).await?;

        let head_watch = match HeadWatcher::start(repo.git_dir()) {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(%error, "cannot watch .git/HEAD; branch changes are noticed at phase boundaries only");
                None
            }
        };

        let status = StatusFile {
            version: VERSION,
            pid: std::process::id(),
            started_at: now_rfc3339(),
            heartbeat_at: now_rfc3339(),
            repo: config.repo.display().to_string(),
            branch: branch.clone(),
            state: "starting".to_owned(),
            max_cost_usd: config.budget.max_cost_usd,
            ..StatusFile::default()
        };
        let mut daemon = Daemon {
            progress: progress.unwrap_or_else(|| fresh_progress(&branch)),
            config,
            paths,
            signals,
            _lock: lock,
            _repo_lock: repo_lock,
            limiter,
            breaker,
            prd,
            status: Arc::new(Mutex::new(status)),
            status_changed: Arc::new(tokio::sync::Notify::new()),
            branch,
            unrecorded_cost_usd: 0.0,
            rng: fastrand::Rng::new(),
            repo,
            head_watch,
            in_flight: None,
            fatal: None,
            disk_full: None,
            archived_this_cycle: None,
            warned_this_cycle: std::collections::HashSet::new(),
        };
        if let Some(in_flight) = interrupted {
            daemon.record_interrupted_cycle(in_flight, recovered)?;
        }
        daemon.check_branch().await?;
        // A progress without cycles belongs to whatever branch we start on.
        if daemon.progress.cycles.is_empty() {
            daemon.progress.branch = daemon.branch.clone();
        }
        let spent = daemon.progress.total_cost_usd;
        daemon.set_status(|status| status.spent_usd = spent);
        daemon.save_guards()?;
        daemon.spawn_heartbeat();
        daemon.set_status(|status| status.state = "running".to_owned());
        daemon.publish_status();
        // Outside systemd this does nothing; a failed notification harms no run.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(repo = %daemon.config.repo.display(), home = %daemon.config.home.display(),
            branch = %daemon.branch, agent = %daemon.config.agent.kind.name(), "ralphd started");
        // After READY: a first pass over a big home must not run into
        // systemd's start timeout.
        daemon.prune_cycles().await;
        Ok(daemon)
    }

    /// Records the cycle that was running when the previous daemon died, as
    /// far as it got: committed (with its commit, cost and story, which is
    /// marked in prd.json) when its work was committed, else interrupted
    /// (with the attempt it saved or [`recover_repo`] saved, and its cost).
    fn record_interrupted_cycle(
        &mut self,
        in_flight: InFlight,
        recovered: Recovered,
    ) -> Result<()> {
        let cycle = in_flight.cycle;
        if self
            .progress
            .cycles
            .iter()
            .any(|record| record.cycle == cycle)
        {
            // It died after recording the cycle, before removing in-flight.json.
            return state::clear_in_flight(&self.paths);
        }
        let commit = in_flight.commit.or(recovered.kept_commit);
        if let (Some(own), Some(later)) = (&in_flight.attempt_ref, &recovered.attempt_ref) {
            tracing::warn!(cycle, attempt = %own, leftovers = %later, "the interrupted cycle had saved its attempt; what its tree still held is saved too");
        }
        let attempt_ref = in_flight.attempt_ref.or(recovered.attempt_ref);
        let committed = commit.is_some();
        if committed {
            tracing::warn!(
                cycle,
                commit = commit.as_deref().unwrap_or(""),
                "the previous run ended after this cycle's commit without recording it; recording it as committed"
            );
        } else {
            tracing::warn!(
                cycle,
                "the previous run ended during this cycle without recording it; recording it as interrupted"
            );
        }
        let output = if !in_flight.summary.is_empty() {
            in_flight.summary
        } else if committed {
            "the daemon stopped after this cycle's commit, before its record was written (crash, kill -9, power loss or a full disk)".to_owned()
        } else {
            "the daemon stopped during this cycle (crash, kill -9, power loss or a full disk)"
                .to_owned()
        };
        let error = (!committed).then(|| match &in_flight.error {
            Some(error) => {
                format!("interrupted by the death of the previous daemon, after: {error}")
            }
            None => "interrupted by the death of the previous daemon".to_owned(),
        });
        let phases_ms: u64 = in_flight.phases.iter().map(|phase| phase.duration_ms).sum();
        if committed && let Some(story) = &in_flight.story {
            self.mark_story_passed(cycle, story);
        }
        self.progress.total_cost_usd += in_flight.cost_usd;
        self.progress.cycles.push(CycleRecord {
            cycle,
            cycle_id: cycle_id(cycle),
            started_at: in_flight.started_at,
            ended_at: now_rfc3339(),
            duration_seconds: cycle::seconds(Duration::from_millis(phases_ms)),
            phases_completed: in_flight.phases_completed,
            phases: in_flight.phases,
            outcome: if committed {
                Outcome::Committed
            } else {
                Outcome::Interrupted
            },
            commit,
            attempt_ref,
            success: committed,
            cost_usd: in_flight.cost_usd,
            output,
            learnings: in_flight.learnings,
            title: in_flight.title,
            reason: error.clone().or_else(|| {
                Some("committed; the daemon stopped before recording the cycle".to_owned())
            }),
            error,
            verdict: None,
            checks: Vec::new(),
            diff: None,
        });
        state::save_json(&self.paths.progress(), &self.progress)?;
        state::clear_in_flight(&self.paths)
    }

    async fn main_loop(&mut self) -> Result<RunExit> {
        let mut cycles_run: u32 = 0;
        loop {
            if let Some(max) = self.config.max_iterations
                && cycles_run >= max
            {
                tracing::info!(
                    max_iterations = max,
                    "max iterations reached without completion"
                );
                return Ok(RunExit::MaxIterations);
            }
            if let Some(reason) = self.budget_exhausted() {
                tracing::warn!(%reason, "halting: budget exhausted");
                return Ok(RunExit::Halted);
            }
            match self.breaker.admit(SystemTime::now()) {
                Admission::Go => {}
                Admission::Probe => {
                    tracing::info!("circuit breaker half-open: running a probe cycle")
                }
                Admission::WaitUntil(until) => {
                    self.save_guards()?;
                    if self.config.breaker.halt_on_open {
                        tracing::warn!(until = %rfc3339(until), "circuit breaker is open and halt_on_open = true: halting");
                        return Ok(RunExit::Halted);
                    }
                    tracing::warn!(until = %rfc3339(until), reasons = %self.breaker_reasons(), "circuit breaker open: waiting");
                    if self
                        .wait_until(until, "circuit breaker open")
                        .await
                        .is_err()
                    {
                        return Ok(RunExit::Interrupted);
                    }
                    continue;
                }
            }
            let cycle = self.next_cycle_number();
            let (end, report) = self.run_cycle(cycle).await?;
            if let Some(message) = self.disk_full.take() {
                return Err(UsageError(message).into());
            }
            cycles_run += 1;
            let outcome = match &end {
                CycleEnd::Interrupted { .. } => return Ok(RunExit::Interrupted),
                CycleEnd::Halted { reason, .. } => {
                    tracing::warn!(%reason, "halting");
                    return Ok(RunExit::Halted);
                }
                CycleEnd::Ran(outcome) | CycleEnd::Complete(outcome) => *outcome,
            };
            let now = SystemTime::now();
            match outcome {
                Outcome::Committed | Outcome::Complete => self.breaker.record_success(),
                Outcome::Interrupted => {}
                Outcome::Failed | Outcome::NoChanges | Outcome::RolledBack => {
                    let reason = format!(
                        "cycle {cycle}: {}{}",
                        outcome.name(),
                        report
                            .error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    );
                    if let Some(opened) = self.breaker.record_failure(now, &reason) {
                        tracing::warn!(until = %rfc3339(opened.until), %reason, "circuit breaker opened");
                        if self.config.breaker.halt_on_open {
                            self.save_guards()?;
                            return Ok(RunExit::Halted);
                        }
                    }
                }
            }
            self.save_guards()?;
            if let Some(message) = self.fatal.take() {
                return Err(UsageError(message).into());
            }
            if let CycleEnd::Complete(_) = end {
                tracing::info!(cycle, "completion accepted: stopping");
                return Ok(RunExit::Complete);
            }
            if let Some(max) = self.config.max_iterations
                && cycles_run >= max
            {
                continue;
            }
            let sleep = self.config.sleep_between_iterations;
            if !sleep.is_zero()
                && self
                    .wait_until(SystemTime::now() + sleep, "sleep between iterations")
                    .await
                    .is_err()
            {
                return Ok(RunExit::Interrupted);
            }
        }
    }

    fn next_cycle_number(&self) -> u64 {
        let recorded = self
            .progress
            .cycles
            .iter()
            .map(|record| record.cycle)
            .max()
            .unwrap_or(0);
        recorded.max(self.paths.highest_cycle_dir()) + 1
    }

    async fn run_cycle(&mut self, cycle: u64) -> Result<(CycleEnd, CycleReport)> {
        let started_at = now_rfc3339();
        let started = std::time::Instant::now();
        let in_flight = InFlight {
            version: VERSION,
            cycle,
            started_at: started_at.clone(),
            branch: self.branch.clone(),
            ..InFlight::default()
        };
        state::save_json(&self.paths.in_flight(), &in_flight)?;
        self.in_flight = Some(in_flight);
        self.archived_this_cycle = None;
        self.warned_this_cycle.clear();
        self.set_status(|status| {
            status.cycle = Some(cycle);
            status.state = "running".to_owned();
        });
        // Outside systemd this does nothing; a failed notification harms no run.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!("cycle {cycle}"))]);

        self.reload_prd();
        let input = CycleInput {
            cycle,
            repo: self.config.repo.clone(),
            branch: self.branch.clone(),
            learnings: recent_learnings(&self.progress, 15),
            patterns: self.progress.patterns.clone(),
            recent_outcomes: crate::record::recent_outcomes(
                &self.progress.cycles,
                crate::record::RECENT_OUTCOMES,
            ),
            open_stories: self.open_stories(),
            auto_commit: self.config.git.auto_commit,
            checks_configured: !self.config.backtest.checks.is_empty(),
            allow_dirty: self.config.allow_dirty,
            home: self.config.home.clone(),
            gates: self.config.gates.clone(),
        };
        tracing::info!(cycle, branch = %self.branch, "cycle started");
        let (end, mut report) = cycle::run(&input, self)
            .instrument(tracing::info_span!("cycle", cycle))
            .await;
        redact_report(&mut report);
        // Settle the branch before the cycle is recorded: a rollback at its
        // end may have put HEAD back on the branch an archive was made for.
        if let Err(error) = self.check_branch().await {
            tracing::error!(cycle, error = %format!("{error:#}"), "branch check failed");
        }
        let outcome = end.outcome();

        if outcome == Outcome::Committed
            && let Some(story) = &report.story_passed
        {
            self.mark_story_passed(cycle, story);
        }
        let record = CycleRecord {
            cycle,
            cycle_id: cycle_id(cycle),
            started_at,
            ended_at: now_rfc3339(),
            duration_seconds: cycle::seconds(started.elapsed()),
            phases_completed: report.phases_completed.clone(),
            phases: report.phases.clone(),
            outcome,
            commit: report.commit.clone(),
            attempt_ref: report.attempt_ref.clone(),
            success: matches!(outcome, Outcome::Committed | Outcome::Complete),
            cost_usd: report.cost_usd,
            output: report.summary.clone(),
            learnings: report.learnings.clone(),
            title: report.title.clone(),
            error: report.error.clone(),
            reason: report.reason.clone(),
            verdict: report.verdict.clone(),
            checks: report
                .checks
                .iter()
                .map(crate::record::CheckRecord::from_result)
                .collect(),
            diff: report.diff,
        };
        self.progress.total_cost_usd += self.unrecorded_cost_usd;
        self.unrecorded_cost_usd = 0.0;
        for pattern in &report.patterns {
            if !self.progress.patterns.contains(pattern) {
                self.progress.patterns.push(pattern.clone());
            }
        }
        self.progress.cycles.push(record.clone());
        state::save_json(&self.paths.progress(), &self.progress)?;
        if !report.checks.is_empty() {
            state::write_text(
                &self.paths.cycle_dir(cycle).join("checks.md"),
                &crate::redact::redact(&crate::record::checks_page(cycle, &report.checks)),
            )?;
        }
        let extras = crate::cycle_page::PageExtras {
            branch: &self.branch,
            agent_text: &report.output(Phase::Report),
            patterns: &report.patterns,
        };
        state::write_text(
            &self.paths.cycle_dir(cycle).join("report.md"),
            &crate::cycle_page::render(&record, &extras),
        )?;
        state::clear_in_flight(&self.paths)?;
        self.in_flight = None;
        if !self.signals.shutdown.is_cancelled() {
            self.prune_cycles().await;
        }
        let spent = self.progress.total_cost_usd + self.unrecorded_cost_usd;
        self.set_status(|status| {
            status.phase = None;
            status.phase_started_at = None;
            status.spent_usd = spent;
            status.last_error = report.error.clone().or(status.last_error.take());
        });
        tracing::info!(
            cycle,
            outcome = outcome.name(),
            cost_usd = report.cost_usd,
            commit = report.commit.as_deref().unwrap_or("-"),
            "cycle finished"
        );
        Ok((end, report))
    }

    /// Marks `story` as passing in prd.json, for the committed `cycle` whose
    /// report named it. Failures are logged: the commit stands either way.
    fn mark_story_passed(&mut self, cycle: u64, story: &str) {
        // Re-read first: the user may have edited prd.json during the cycle.
        let readable = self.reload_prd();
        let marked = match self.prd.as_mut() {
            Some(prd) if readable => prd::mark_passed(&self.paths.prd(), prd, story),
            _ => Ok(false),
        };
        match marked {
            Ok(true) => {
                tracing::info!(cycle, story = %story, "story marked as passing in prd.json")
            }
            Ok(false) => {
                tracing::warn!(cycle, story = %story, "the report names a story that prd.json does not have")
            }
            Err(error) => {
                tracing::error!(cycle, error = %format!("{error:#}"), "cannot update prd.json")
            }
        }
    }

    /// Deletes and compresses the directories of old cycles (`[state]
    /// keep_cycles`, `compress_after`) on a blocking thread, while the
    /// heartbeat goes on (a first pass over a big home may take minutes); a
    /// stop signal interrupts it between files. Problems are logged, never
    /// fatal.
    async fn prune_cycles(&self) {
        let retention = Retention {
            keep_cycles: self.config.state.keep_cycles,
            compress_after: self.config.state.compress_after,
        };
        let dir = self.paths.cycles_dir();
        let in_flight = self.in_flight.as_ref().map(|in_flight| in_flight.cycle);
        let shutdown = self.signals.shutdown.clone();
        let pruned = match tokio::task::spawn_blocking(move || {
            retention::apply(&dir, retention, in_flight, || shutdown.is_cancelled())
        })
        .await
        {
            Ok(pruned) => pruned,
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        };
        if pruned.deleted > 0 || pruned.compressed_files > 0 {
            tracing::info!(
                deleted_cycles = pruned.deleted,
                compressed_files = pruned.compressed_files,
                keep_cycles = retention.keep_cycles,
                compress_after = retention.compress_after,
                "old cycles pruned"
            );
        }
        for problem in &pruned.problems {
            tracing::warn!(%problem, "cannot prune an old cycle");
        }
    }

    /// prd.json is the user's file too: it is re-read before each use, so that
    /// edits made during a run are seen and never overwritten by an older copy.
    /// A file that has become unreadable is left alone: the copy read before
    /// still decides which stories are open (completion stays refused), and
    /// no story is marked. Returns whether the file could be read.
    fn reload_prd(&mut self) -> bool {
        match prd::load(&self.paths.prd()) {
            Ok(prd) => {
                self.prd = prd;
                true
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "cannot read prd.json; it is left as it is and no story is marked until it is fixed");
                false
            }
        }
    }

    fn open_stories(&self) -> Vec<StoryBrief> {
        self.prd
            .as_ref()
            .map(prd::open_stories)
            .unwrap_or_default()
            .into_iter()
            .map(|story| StoryBrief {
                id: story.id,
                title: story.title,
                description: story.description,
                acceptance_criteria: story.acceptance_criteria,
                priority: story.priority,
            })
            .collect()
    }

    fn budget_exhausted(&self) -> Option<String> {
        let max = self.config.budget.max_cost_usd?;
        let spent = self.progress.total_cost_usd + self.unrecorded_cost_usd;
        (spent >= max).then(|| format!("spent ${spent:.2} of max_cost_usd ${max:.2}"))
    }

    /// Waits until `until` (wall clock), visible in status; `Err` on shutdown.
    async fn wait_until(&mut self, until: SystemTime, reason: &str) -> Result<(), Stop> {
        let duration = until.duration_since(SystemTime::now()).unwrap_or_default();
        self.set_status(|status| {
            status.state = "waiting".to_owned();
            status.waiting = Some(Waiting {
                reason: reason.to_owned(),
                until: rfc3339(until),
            });
        });
        let deadline = tokio::time::Instant::now() + duration;
        let result = loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break Ok(()),
                () = self.signals.shutdown.cancelled() => break Err(Stop::Cancelled),
                () = head_moved(&mut self.head_watch) => {
                    if let Err(error) = self.check_branch().await {
                        tracing::error!(error = %format!("{error:#}"), "branch check failed");
                    }
                }
            }
        };
        self.set_status(|status| {
            status.state = "running".to_owned();
            status.waiting = None;
        });
        result
    }

    /// Archives progress.json and prd.json when the branch changed since the
    /// last run or phase, and starts a fresh progress for the new branch.
    async fn check_branch(&mut self) -> Result<()> {
        let current = self.git(|repo| repo.branch_label()).await?;
        // Mid-cycle, HEAD off the branch the cycle started on is the agent's
        // doing (DESIGN §14): the cycle saves and undoes it after the phase
        // run; it is no branch change of the user's to archive.
        if let Some(start) = self
            .in_flight
            .as_ref()
            .and_then(|flight| flight.start.as_ref())
            && start.branch_label() != current
        {
            tracing::debug!(cycle_branch = %start.branch_label(), head = %current, "HEAD is off the cycle's branch; the cycle undoes it after the phase run");
            return Ok(());
        }
        let last = state::read_last_branch(&self.paths)?;
        let continues = match &last {
            Some(last) if last != &current => {
                let (last, label) = (last.clone(), current.clone());
                self.git(move |repo| repo.continues_detached(&last, &label))
                    .await?
            }
            _ => false,
        };
        match last {
            Some(_) if continues => state::write_last_branch(&self.paths, &current)?,
            Some(last)
                if last != current
                    && self
                        .archived_this_cycle
                        .as_ref()
                        .is_some_and(|(left, ..)| *left == current) =>
            {
                // The cycle's own switch was undone (its rollback put HEAD
                // back): the branch goes on with its history, not afresh.
                let (_, dir, progress) = self.archived_this_cycle.take().expect("checked above");
                tracing::info!(from = %last, to = %current, "back on the cycle's branch: its progress is restored from the archive just made");
                self.progress = progress;
                state::save_json(&self.paths.progress(), &self.progress)?;
                state::write_last_branch(&self.paths, &current)?;
                if let Err(error) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(%error, archive = %dir.display(), "cannot remove the archive that was undone");
                }
            }
            Some(last) if last != current => {
                let date = jiff::Zoned::now().date();
                // A file that cannot be read stops the archive (nothing is
                // reset); one that does not exist is simply not archived.
                let read_if_present = |path: std::path::PathBuf| match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(error) => Err(error).with_context(|| {
                        format!("cannot archive {}: cannot read it", path.display())
                    }),
                };
                let progress = read_if_present(self.paths.progress())?;
                let prd = read_if_present(self.paths.prd())?;
                let dir = crate::archive::archive_branch(
                    &self.paths.archive_dir(),
                    date,
                    &last,
                    &[
                        ("progress.json", progress.as_deref()),
                        ("prd.json", prd.as_deref()),
                    ],
                )?;
                tracing::info!(from = %last, to = %current, archive = %dir.display(), "branch changed: progress archived, starting fresh");
                let left = std::mem::replace(&mut self.progress, fresh_progress(&current));
                if self.in_flight.is_some() {
                    self.archived_this_cycle = Some((last, dir, left));
                }
                state::save_json(&self.paths.progress(), &self.progress)?;
                state::write_last_branch(&self.paths, &current)?;
            }
            Some(_) => {}
            None => state::write_last_branch(&self.paths, &current)?,
        }
        self.branch = current.clone();
        self.set_status(|status| status.branch = current);
        Ok(())
    }

    fn save_guards(&self) -> Result<()> {
        state::save_json(&self.paths.breaker(), &self.breaker.snapshot())?;
        state::save_json(&self.paths.limiter(), &self.limiter.snapshot())?;
        let breaker = self.describe_breaker();
        self.set_status(|status| status.breaker = breaker);
        Ok(())
    }

    /// The last failure reasons, newest last, for logs and status.
    fn breaker_reasons(&self) -> String {
        let reasons: Vec<String> = self
            .breaker
            .recent_failures()
            .map(|failure| failure.reason.clone())
            .collect();
        reasons[reasons.len().saturating_sub(3)..].join("; ")
    }

    /// One line for status.json: closed, open until when and why, half-open.
    fn describe_breaker(&self) -> String {
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
    fn set_status(&self, change: impl FnOnce(&mut StatusFile)) {
        change(&mut self.status.lock().expect("status lock"));
        self.status_changed.notify_one();
    }

    /// Writes status.json now (start-up and the final state at exit).
    fn publish_status(&self) {
        write_status(&self.status, &self.paths.status());
    }

    /// Rewrites status.json's heartbeat and pings the systemd watchdog from
    /// the runtime, so a wedged runtime stops both.
    fn spawn_heartbeat(&self) {
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

    async fn wait_for_limiter(&mut self) -> Result<(), Stop> {
        loop {
            match self.limiter.try_acquire(SystemTime::now()) {
                Ok(()) => {
                    if let Err(error) = state::save_json_with(
                        &self.paths.limiter(),
                        &self.limiter.snapshot(),
                        Durability::ProcessDeath,
                    ) {
                        tracing::warn!(error = %format!("{error:#}"), "cannot write limiter.json");
                    }
                    return Ok(());
                }
                Err(throttled) => {
                    tracing::info!(quota = %throttled.quota, until = %rfc3339(throttled.until), "throttled by the rate limiter");
                    self.wait_until(throttled.until, &format!("throttled ({})", throttled.quota))
                        .await?;
                }
            }
        }
    }

    fn reload_if_asked(&mut self) {
        if !self.signals.reload.has_changed().unwrap_or(false) {
            return;
        }
        self.signals.reload.borrow_and_update();
        match self.config.reload() {
            Ok(config) => {
                // The guards keep what they counted and take the new settings.
                let now = SystemTime::now();
                let limiter = Limiter::from_snapshot(
                    config.rate_limit.requests_per_minute,
                    config.rate_limit.requests_per_hour,
                    &self.limiter.snapshot(),
                    now,
                );
                let breaker =
                    Breaker::from_snapshot(config.breaker.settings, &self.breaker.snapshot(), now);
                match (limiter, breaker) {
                    (Ok(limiter), Ok(breaker)) => {
                        self.limiter = limiter;
                        self.breaker = breaker;
                    }
                    (limiter, breaker) => {
                        let error = limiter
                            .err()
                            .map(|e| e.to_string())
                            .or(breaker.err().map(|e| e.to_string()));
                        tracing::error!(
                            error = error.as_deref().unwrap_or(""),
                            "ralph.toml not reloaded: keeping the previous configuration"
                        );
                        return;
                    }
                }
                let max_cost_usd = config.budget.max_cost_usd;
                self.config = config;
                self.set_status(|status| status.max_cost_usd = max_cost_usd);
                tracing::info!(
                    "ralph.toml reloaded (SIGHUP): prompts, agent, phases, checks and guards take the new settings from the next phase"
                );
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "ralph.toml not reloaded: keeping the previous configuration")
            }
        }
    }

    /// The user's `prompts/<phase>.md`, else the built-in template.
    fn template(&mut self, phase: Phase) -> String {
        let path = self
            .paths
            .prompts_dir()
            .join(format!("{}.md", phase.name()));
        self.read_users_text(&path, "the built-in template is used instead")
            .unwrap_or_else(|| phase.builtin_template().to_owned())
    }

    /// Reads a text file the user may have put in the home (PROMPT.md, a
    /// prompt template): `None` when it does not exist. A file that is not
    /// UTF-8 is used with U+FFFD for the bad bytes; one that cannot be read
    /// is skipped (`fallback` says what happens instead). Either way a WARN
    /// names the file and the cause, once per cycle.
    fn read_users_text(&mut self, path: &std::path::Path, fallback: &str) -> Option<String> {
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Some(text),
                Err(error) => {
                    if self.warned_this_cycle.insert(path.display().to_string()) {
                        let at = error.utf8_error().valid_up_to();
                        tracing::warn!(file = %path.display(), "the file is not valid UTF-8 (first bad byte at offset {at}); it is used with the bad bytes replaced by U+FFFD");
                    }
                    Some(String::from_utf8_lossy(error.as_bytes()).into_owned())
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                if self.warned_this_cycle.insert(path.display().to_string()) {
                    tracing::warn!(file = %path.display(), %error, "cannot read the file; {fallback}");
                }
                None
            }
        }
    }

    /// Runs a git operation off the async threads (git2 calls block).
    async fn git<T: Send + 'static>(
        &mut self,
        operation: impl FnOnce(&GitRepo) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        let repo = self.repo.clone();
        match tokio::task::spawn_blocking(move || operation(&repo)).await {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        }
    }
}

impl Daemon {
    /// A phase found the disk under the home full: it fails with that as its
    /// reason, and the run stops after the cycle is recorded (if it can be).
    fn stop_on_full_disk(
        &mut self,
        cycle: u64,
        phase: Phase,
        full: state::DiskFull,
        mut run: PhaseRun,
    ) -> PhaseRun {
        let message = full.to_string();
        tracing::error!(cycle, %phase, error = %message, "the disk is full: stopping after this cycle");
        run.outcome = PhaseOutcome::could_not_run(message.clone());
        self.disk_full = Some(message);
        run
    }
}

impl PhaseExecutor for Daemon {
    fn save_in_flight(
        &mut self,
        rollback_point: Option<&crate::git::Snapshot>,
        report: &CycleReport,
    ) {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return;
        };
        let mut updated = InFlight {
            start: rollback_point.cloned(),
            phases: report.phases.clone(),
            phases_completed: report.phases_completed.clone(),
            cost_usd: report.cost_usd,
            title: report.title.clone(),
            commit: report.commit.clone(),
            attempt_ref: report.attempt_ref.clone(),
            story: report.story_passed.clone(),
            summary: report.summary.clone(),
            learnings: report.learnings.clone(),
            error: report.error.clone(),
            ..in_flight.clone()
        };
        // What a restart records from it is agent text, as in the report.
        redact_text(&mut updated.summary);
        updated.learnings.iter_mut().for_each(redact_text);
        updated.title.iter_mut().for_each(redact_text);
        updated.error.iter_mut().for_each(redact_text);
        redact_phases(&mut updated.phases);
        // Each write is fsynced: only what changed is written.
        if updated == *in_flight {
            return;
        }
        *in_flight = updated;
        if let Err(error) = state::save_json(&self.paths.in_flight(), in_flight) {
            tracing::warn!(error = %format!("{error:#}"), "cannot write in-flight.json");
        }
    }

    async fn before_phase(&mut self, phase: Phase) -> Result<(), Stop> {
        if self.signals.shutdown.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        self.reload_if_asked();
        if let Err(error) = self.check_branch().await {
            tracing::error!(%phase, error = %format!("{error:#}"), "branch check failed");
        }
        Ok(())
    }

    fn render_prompt(&mut self, phase: Phase, mut context: PromptContext) -> String {
        context.steering = self
            .read_users_text(
                &self.paths.steering_file(),
                "the phase runs without steering text",
            )
            .unwrap_or_default();
        context.marker = crate::blocks::COMPLETION_MARKER.to_owned();
        let template = self.template(phase);
        let rendered = prompt::render(&template, &context);
        if !rendered.unknown.is_empty() {
            tracing::warn!(%phase, unknown = %rendered.unknown.join(", "), "the prompt template has unknown placeholders (left as they are)");
        }
        for part in rendered.truncated {
            if !self.warned_this_cycle.insert(format!("truncated {part}")) {
                continue;
            }
            let source = match part {
                "steering" => self.paths.steering_file().display().to_string(),
                "learnings" | "patterns" | "recent_outcomes" => {
                    self.paths.progress().display().to_string()
                }
                "stories" => self.paths.prd().display().to_string(),
                "checks" => "the output of the backtest checks".to_owned(),
                "diff_summary" => "the diff of the cycle".to_owned(),
                "verdict" => "the verdict".to_owned(),
                phase_output => format!("the output of phase {}", phase_output.replace('_', "-")),
            };
            tracing::warn!(%phase, part, from = %source, max_bytes = prompt::MAX_TEXT_BYTES,
                "a prompt part is longer than its cap and was truncated in the prompt");
        }
        rendered.text
    }

    async fn run_checks(&mut self) -> Option<Vec<CheckResult>> {
        if self.config.backtest.checks.is_empty() {
            return Some(Vec::new());
        }
        self.set_status(|status| status.phase = Some("backtest checks".to_owned()));
        checks::run_all(
            &self.config.backtest.checks,
            &self.config.repo,
            self.config.backtest.check_timeout,
            self.config.agent.stop_grace,
            &self.signals.shutdown,
        )
        .await
    }

    type Repo = LiveRepo;

    fn repo(&self) -> LiveRepo {
        LiveRepo::new(self.repo.clone())
    }

    fn git_author(&self) -> (String, String) {
        (
            self.config.git.author_name.clone(),
            self.config.git.author_email.clone(),
        )
    }

    fn run_hooks(&self) -> bool {
        self.config.git.run_hooks
    }

    fn secret_scan(&self) -> bool {
        self.config.gates.secret_scan
    }

    fn stop_signal(&self) -> Option<&'static str> {
        self.signals.received.get().copied()
    }

    async fn run_git_hook(
        &mut self,
        hook: PathBuf,
        args: Vec<OsString>,
        index_file: PathBuf,
    ) -> Option<CheckResult> {
        let name = hook
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.set_status(|status| status.phase = Some(format!("git hook {name}")));
        let context = git_rules::HookContext {
            workdir: &self.config.repo,
            index_file: &index_file,
            author: (&self.config.git.author_name, &self.config.git.author_email),
            timeout: self.config.backtest.check_timeout,
            stop_grace: self.config.agent.stop_grace,
        };
        git_rules::run_hook(&hook, &args, &context, &self.signals.shutdown).await
    }

    async fn sign_commit(
        &mut self,
        signing: crate::git::Signing,
        payload: String,
    ) -> Option<Result<String, String>> {
        git_rules::sign(
            &signing,
            &payload,
            self.config.agent.stop_grace,
            &self.signals.shutdown,
        )
        .await
    }

    async fn run_phase(
        &mut self,
        phase: Phase,
        cycle: u64,
        prompt: String,
    ) -> Result<PhaseRun, Stop> {
        let transcript = self
            .paths
            .cycle_dir(cycle)
            .join(format!("{}.jsonl", phase.name()));
        let mut attempt: u32 = 0;
        let mut total_cost = 0.0;
        loop {
            if let Some(reason) = self.budget_exhausted() {
                return Err(Stop::Halt(format!(
                    "budget exhausted before {phase}: {reason}"
                )));
            }
            self.wait_for_limiter().await?;
            attempt += 1;
            let phase_started = now_rfc3339();
            self.set_status(|status| {
                status.phase = Some(phase.name().to_owned());
                status.phase_started_at = Some(phase_started);
            });
            // Outside systemd this does nothing; a failed notification harms no run.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
                "cycle {cycle}: {phase}"
            ))]);
            tracing::info!(cycle, %phase, attempt, "phase started");
            let request = PhaseRequest {
                phase,
                cycle,
                prompt: prompt.clone(),
                transcript: transcript.clone(),
                cancel: &self.signals.shutdown,
            };
            // If the daemon dies meanwhile, the agent dies with it (PDEATHSIG)
            // and the next start stops its tools by their environment marker.
            let result = agent::run_phase(&self.config, request)
                .instrument(tracing::info_span!("phase", phase = %phase))
                .await;
            sweep_descendants().await;
            let mut run = match result {
                Ok(run) => run,
                Err(error) => {
                    if let Some(full) = state::DiskFull::find(&transcript, &error) {
                        return Ok(self.stop_on_full_disk(
                            cycle,
                            phase,
                            full,
                            failed_run(String::new(), attempt),
                        ));
                    }
                    let message = format!("{error:#}");
                    tracing::error!(cycle, %phase, error = %message, "phase could not run");
                    return Ok(failed_run(message, attempt));
                }
            };
            total_cost += run.cost_usd;
            self.unrecorded_cost_usd += run.cost_usd;
            let spent = self.progress.total_cost_usd + self.unrecorded_cost_usd;
            self.set_status(|status| status.spent_usd = spent);
            run.cost_usd = total_cost;
            run.attempts = attempt;
            if run.cancelled || self.signals.shutdown.is_cancelled() {
                tracing::warn!(cycle, %phase, "phase interrupted by a stop signal");
                // Recorded by the cycle as an interrupted phase run.
                run.cancelled = true;
                return Ok(run);
            }
            match &run.outcome {
                PhaseOutcome::Succeeded { result_text } => {
                    let output = self.paths.cycle_dir(cycle).join(phase.output_file_name());
                    if let Err(error) =
                        state::write_text(&output, &crate::redact::redact(result_text))
                    {
                        if let Some(full) = state::DiskFull::find(&output, &error) {
                            return Ok(self.stop_on_full_disk(cycle, phase, full, run));
                        }
                        tracing::warn!(error = %format!("{error:#}"), "cannot write the phase output");
                    }
                    tracing::info!(cycle, %phase, cost_usd = run.cost_usd, turns = run.turns,
                        denials = run.permission_denials.len(), "phase finished");
                    return Ok(run);
                }
                PhaseOutcome::Failed {
                    failure: PhaseFailure::UsageLimit { resets_at, .. },
                    ..
                } => {
                    let until = match resets_at {
                        Some(reset) => {
                            SystemTime::from(*reset) + self.config.agent.usage_limit_margin
                        }
                        None => SystemTime::now() + self.config.agent.usage_limit_fallback_wait,
                    };
                    attempt -= 1;
                    tracing::warn!(cycle, %phase, until = %rfc3339(until), "usage limit reached: waiting for the reset, then re-running the phase");
                    self.wait_until(until, "usage limit").await?;
                }
                PhaseOutcome::Failed { failure, .. }
                    if failure.is_retryable() && attempt < self.config.agent.max_attempts =>
                {
                    let delay = backoff::retry_delay(
                        attempt,
                        self.config.agent.retry_base_delay,
                        self.config.agent.retry_max_delay,
                        &mut self.rng,
                    );
                    tracing::warn!(cycle, %phase, attempt, max_attempts = self.config.agent.max_attempts,
                        retry_in = %humantime::format_duration(delay), error = %failure, "API error: retrying the phase");
                    self.wait_until(SystemTime::now() + delay, "retry backoff")
                        .await?;
                }
                PhaseOutcome::Failed { failure, .. } if failure.is_fatal() => {
                    tracing::error!(cycle, %phase, error = %failure, "phase failed; stopping: no retry can help until this is fixed");
                    self.fatal = Some(failure.to_string());
                    return Ok(run);
                }
                PhaseOutcome::Failed { failure, .. } => {
                    tracing::error!(cycle, %phase, attempt, error = %failure, "phase failed");
                    return Ok(run);
                }
            }
        }
    }
}

fn failed_run(message: String, attempts: u32) -> PhaseRun {
    PhaseRun {
        outcome: PhaseOutcome::could_not_run(message),
        session_id: None,
        cost_usd: 0.0,
        turns: 0,
        permission_denials: Vec::new(),
        duration: Duration::ZERO,
        attempts,
        cancelled: false,
    }
}

fn fresh_progress(branch: &str) -> Progress {
    Progress {
        version: VERSION,
        branch: branch.to_owned(),
        start_time: now_rfc3339(),
        ..Progress::default()
    }
}

fn cycle_id(cycle: u64) -> String {
    format!("cycle_{cycle}_{}", jiff::Timestamp::now().as_second())
}

fn recent_learnings(progress: &Progress, limit: usize) -> Vec<String> {
    let all: Vec<String> = progress
        .cycles
        .iter()
        .flat_map(|record| record.learnings.iter().cloned())
        .collect();
    all[all.len().saturating_sub(limit)..].to_vec()
}

/// Agent text reaches progress.json, report.md, status.json and the
/// breaker's reasons through the report: it is redacted once, here, as the
/// logs are (and in `save_in_flight` for in-flight.json).
fn redact_report(report: &mut CycleReport) {
    redact_text(&mut report.summary);
    report.learnings.iter_mut().for_each(redact_text);
    report.patterns.iter_mut().for_each(redact_text);
    report
        .outputs
        .iter_mut()
        .for_each(|(_, text)| redact_text(text));
    report.title.iter_mut().for_each(redact_text);
    report.error.iter_mut().for_each(redact_text);
    report.reason.iter_mut().for_each(redact_text);
    if let Some(verdict) = report.verdict.as_mut() {
        redact_text(&mut verdict.reason);
    }
    for check in &mut report.checks {
        redact_text(&mut check.output_tail);
        redact_text(&mut check.output);
    }
    redact_phases(&mut report.phases);
}

/// The failure texts and permission denials of phase records.
fn redact_phases(phases: &mut [crate::state::PhaseRecord]) {
    for phase in phases {
        phase.error.iter_mut().for_each(redact_text);
        phase.permission_denials.iter_mut().for_each(redact_text);
    }
}

fn redact_text(text: &mut String) {
    if let std::borrow::Cow::Owned(clean) = crate::redact::redact(text) {
        *text = clean;
    }
}

/// Kills what is left of the agents of a daemon of this home that died:
/// every process carrying the home's agent marker in its environment (the
/// agent itself if it outlived the daemon, and its tools, also those that
/// left its process group with `setsid`). The home's lock is held, so no
/// live daemon owns them.
fn stop_leftover_agents(home: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let leftovers = || {
        crate::reaper::processes_with_env(
            crate::agent::claude::AGENT_MARKER,
            home.as_os_str().as_bytes(),
        )
    };
    let mut pids = leftovers();
    if pids.is_empty() {
        return;
    }
    tracing::warn!(
        processes = pids.len(),
        "stopping the agent processes left over from the previous run"
    );
    // They must be gone before the repository is rolled back under them.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !pids.is_empty() && std::time::Instant::now() < deadline {
        for pid in &pids {
            // SAFETY: kill takes plain integers; each pid was seen a moment ago
            // carrying this home's marker.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
        pids = leftovers();
    }
}

/// What the start-up found of an interrupted cycle in the repository.
#[derive(Debug, Default)]
struct Recovered {
    /// HEAD is the cycle's own commit: the daemon died right after making it.
    kept_commit: Option<String>,
    /// What the cycle left in the tree, saved before the rollback.
    attempt_ref: Option<String>,
}

/// Saves what an interrupted cycle left in the repository as an attempt and
/// rolls the tree back to the cycle's start, unless HEAD is the cycle's own
/// verified commit, which is kept.
fn recover_repo(
    repo: &GitRepo,
    cycle: u64,
    start: &crate::git::Snapshot,
    (name, email): &(String, String),
) -> Result<Recovered> {
    // Died between the cycle's commit and the note that it was committed:
    // the verified commit stays.
    let commit_prefix = format!("ralphd: cycle {cycle}: ");
    if let Some((commit, summary)) = repo.head_commit()?
        && summary.starts_with(&commit_prefix)
    {
        tracing::info!(
            cycle,
            %commit,
            "the interrupted cycle had already committed its verified work; kept"
        );
        return Ok(Recovered {
            kept_commit: Some(commit),
            attempt_ref: None,
        });
    }
    let message = format!(
        "ralphd: cycle {cycle} attempt (not kept): interrupted\n\nWhy it was not kept: the daemon died during this cycle (crash, kill -9 or power loss)\n"
    );
    let attempt_ref = repo
        .save_changes(start, cycle, &message, name, email)
        .and_then(|saved| {
            if saved.is_some() {
                repo.rollback(start)?;
            }
            Ok(saved)
        })
        .with_context(|| {
            format!(
                "cannot save and roll back cycle {cycle}, which the previous daemon left unfinished"
            )
        })?;
    if let Some(reference) = &attempt_ref {
        tracing::warn!(cycle, attempt = %reference, "the interrupted cycle's work was saved and the tree rolled back to its start");
    }
    Ok(Recovered {
        kept_commit: None,
        attempt_ref,
    })
}

/// Nothing started for a phase may outlive it: kills every remaining
/// descendant of the daemon (tool processes that detached with `setsid` were
/// re-parented to us, the subreaper) and reaps them.
/// Start-up check of git's rules for ralphd's commits: names the hooks that
/// will run, and, when the repository signs its commits, signs once to be
/// sure it works — a setup that cannot sign is a usage error (exit 2), not a
/// night of failed cycles.
async fn check_commit_rules(repo: &GitRepo, config: &Config, signals: &Signals) -> Result<()> {
    if !config.git.auto_commit {
        return Ok(());
    }
    let rules_of = repo.clone();
    let committer = (
        config.git.author_name.clone(),
        config.git.author_email.clone(),
    );
    let rules =
        tokio::task::spawn_blocking(move || rules_of.commit_rules((&committer.0, &committer.1)))
            .await
            .context("git start-up check panicked")??;
    if config.git.run_hooks {
        for hook in [&rules.pre_commit, &rules.commit_msg].into_iter().flatten() {
            tracing::info!(hook = %hook.display(), "ralphd's commits run this git hook");
        }
    }
    let Some(signing) = rules.signing else {
        return Ok(());
    };
    let refuse = |why: String| {
        UsageError(format!(
            "commit.gpgsign is true in {}, but ralphd cannot sign its commits: {why}; fix the \
             signing setup (gpg.format, gpg.program, user.signingkey) or run \
             `git config commit.gpgsign false` in that repository",
            config.repo.display()
        ))
    };
    let signing = signing.map_err(refuse)?;
    git_rules::check_signing(&signing, config.agent.stop_grace, &signals.shutdown)
        .await
        .map_err(refuse)?;
    tracing::info!(format = ?signing.format, program = %signing.program, "ralphd's commits will be signed");
    Ok(())
}

async fn sweep_descendants() {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let signalled = crate::reaper::kill_descendants(libc::SIGKILL);
        crate::reaper::reap_zombies(&[]);
        if signalled == 0 || tokio::time::Instant::now() >= deadline {
            if signalled > 0 {
                tracing::warn!(
                    count = signalled,
                    "descendant processes still present after the phase"
                );
            }
            return;
        }
        tracing::debug!(count = signalled, "killed processes left over by the phase");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Resolves when the HEAD watcher reports a change; never without a watcher.
async fn head_moved(watch: &mut Option<(HeadWatcher, watch::Receiver<u64>)>) {
    match watch {
        Some((_, receiver)) => {
            if receiver.changed().await.is_err() {
                // The watcher thread is gone: stop listening to it.
                *watch = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
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
