//! Start-up, in the documented order (docs/design.md §8.3): the home's and
//! the repository's locks, the state files, the guards, the agent check, the
//! repository's recovery and checks, then READY.

use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::agent::{self};
use crate::breaker::{Breaker, BreakerSnapshot};
use crate::config::{AgentKind, Config};
use crate::control::Control;
use crate::events::{EventKind, Events};
use crate::git::GitRepo;
use crate::git_rules;
use crate::limiter::{Limiter, LimiterSnapshot};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::prd;
use crate::state::{
    self, DaemonState, HomePaths, InFlight, InstanceLock, Progress, RepoLock, StatusFile, VERSION,
};
use crate::watch::HeadWatcher;

use super::phase_runs::sweep_descendants;
use super::records::fresh_progress;
use super::recovery::{Recovered, newest_attempt_of, recover_repo, stop_leftover_agents};
use super::status_board::{StatusBoard, breaker_state_name};
use super::{Checkout, Daemon, Guards, HeldLocks, HomeRecords, Signals, UsageError, now_rfc3339};

impl Daemon {
    /// Start-up, one step a line, in the order of docs/design.md §8.3: the
    /// locks before anything is touched, every state file loaded before any
    /// is written, the leftovers of a dead daemon stopped before its tree is
    /// rolled back, and READY only once the daemon can run a cycle.
    pub(super) async fn start(config: Config, signals: Signals) -> Result<Daemon> {
        let (paths, home_lock) = take_the_home(&config)?;
        let (repo, repo_lock) = take_the_repository(&config)?;
        remove_stale_temp_files(&paths);
        become_subreaper();
        let saved = SavedState::load(&config, &paths)?;
        stop_leftover_agents(&config.home);
        let guards = Guards::rebuild(&config, &paths, &saved)?;
        check_agent(&config).await?;
        let (repo, branch, recovered) =
            prepare_the_tree(repo, &config, saved.interrupted.as_ref()).await?;
        check_commit_rules(&repo, &config, &signals).await?;
        let board = StatusBoard::new(starting_status(&config, &branch));
        let checkout = Checkout::watch_head(&repo, branch);
        let (records, interrupted) = HomeRecords::from_saved(saved, &checkout.branch);
        let events = Events::open(&paths.events())?;
        let control = Control::new();
        let metrics = Metrics::new(VERSION_TEXT, SystemTime::now());
        let http = crate::http::serve(
            &config.http,
            &paths,
            events.clone(),
            control.0.clone(),
            metrics.clone(),
        )
        .await?;
        // Before the first event, so hooks and webhooks hear daemon_started;
        // after the last start-up step that can refuse to start (the server),
        // so the heartbeat's `/start` is followed by an exit ping.
        let notifier = Notifier::start(&config, &events, paths.status(), metrics.notifications());
        let liveness = notifier.liveness();
        // The saved breaker's state: only a change from it is told.
        let breaker_published = breaker_state_name(&guards.breaker);
        let mut daemon = Daemon {
            config,
            paths,
            signals,
            _locks: HeldLocks {
                _home: home_lock,
                _repo: repo_lock,
            },
            guards,
            records,
            board,
            repo,
            checkout,
            events,
            notifier: Some(notifier),
            liveness,
            metrics,
            control,
            http,
            breaker_published,
            breaker_resets_handled: 0,
            rng: fastrand::Rng::new(),
            fatal: None,
            disk_full: None,
            warned_this_cycle: std::collections::HashSet::new(),
        };
        daemon.record_interrupted_cycle(interrupted, recovered)?;
        daemon.check_branch().await?;
        daemon.give_a_fresh_progress_the_branch();
        daemon.start_metrics();
        daemon.save_guards()?;
        daemon.spawn_heartbeat();
        daemon.announce_ready();
        // After READY: a first pass over a big home must not run into
        // systemd's start timeout.
        daemon.prune_cycles().await;
        Ok(daemon)
    }

    /// A progress without cycles belongs to whatever branch we start on.
    fn give_a_fresh_progress_the_branch(&mut self) {
        if self.records.progress.cycles.is_empty() {
            self.records.progress.branch = self.checkout.branch.clone();
        }
    }

    /// Starts the metrics from progress.json and the breaker as they stand
    /// now, then feeds them from the event stream (docs/design.md §11): the
    /// counters go on from where the last run left them on this branch.
    fn start_metrics(&mut self) {
        self.metrics.seed(
            &self.records.progress,
            breaker_state_name(&self.guards.breaker),
        );
        if let Some(events) = self.events.subscribe() {
            tokio::spawn(crate::metrics::follow(self.metrics.clone(), events));
        }
    }

    /// Shows the money spent so far and `running` on the board, writes it,
    /// and tells systemd the daemon is ready.
    fn announce_ready(&mut self) {
        let spent = self.records.progress.total_cost_usd;
        let dashboard = self.http.as_ref().map(|server| server.url().to_owned());
        self.set_status(|status| {
            status.spent_usd = spent;
            status.state = DaemonState::Running;
            status.dashboard = dashboard.clone();
        });
        self.publish_status();
        // Outside systemd this does nothing; a failed notification harms no run.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let shown = dashboard.as_deref().unwrap_or("off ([http] listen = \"\")");
        tracing::info!(repo = %self.config.repo.display(), home = %self.config.home.display(),
            branch = %self.checkout.branch, agent = %self.config.agent.kind.name(),
            "ralphd started; dashboard: {shown}");
        self.events.publish(EventKind::DaemonStarted {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            repo: self.config.repo.display().to_string(),
            branch: self.checkout.branch.clone(),
            dashboard,
        });
    }
}

/// The version `ralphd_build_info` names.
const VERSION_TEXT: &str = env!("CARGO_PKG_VERSION");

/// Creates the home's directories and takes its lock: one daemon per home.
fn take_the_home(config: &Config) -> Result<(HomePaths, InstanceLock)> {
    let paths = HomePaths::new(&config.home);
    paths.create_dirs()?;
    let lock = InstanceLock::acquire(&paths)?;
    Ok((paths, lock))
}

/// Opens the repository and takes its lock (another home's daemon may work
/// on it), then refuses a merge, rebase or other git operation left
/// unfinished, before anything touches the repository.
fn take_the_repository(config: &Config) -> Result<(GitRepo, RepoLock)> {
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
    Ok((repo, repo_lock))
}

/// Becomes a child subreaper (Linux), so tools that detach from the agent
/// are re-parented to the daemon and can be swept after each phase.
fn become_subreaper() {
    if let Err(error) = crate::reaper::become_subreaper() {
        tracing::warn!(%error, "cannot become a child subreaper; tool processes that detach may outlive their phase");
    }
}

/// Every state file of the home, loaded before any is written (a corrupt
/// one is refused or moved aside, as `[state] on_corrupt` says).
struct SavedState {
    progress: Option<Progress>,
    prd: Option<Value>,
    breaker: Option<BreakerSnapshot>,
    limiter: Option<LimiterSnapshot>,
    /// A cycle the previous daemon was running when it died.
    interrupted: Option<InFlight>,
}

impl SavedState {
    fn load(config: &Config, paths: &HomePaths) -> Result<SavedState> {
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
        Ok(SavedState {
            progress,
            prd,
            breaker: breaker_snapshot,
            limiter: limiter_snapshot,
            interrupted,
        })
    }
}

impl Guards {
    /// The limiter and the breaker as their files left them, with the
    /// settings of this run; a snapshot they refuse is a usage error naming
    /// the file.
    fn rebuild(config: &Config, paths: &HomePaths, saved: &SavedState) -> Result<Guards> {
        let now = SystemTime::now();
        let (per_minute, per_hour) = (
            config.rate_limit.requests_per_minute,
            config.rate_limit.requests_per_hour,
        );
        let limiter = match &saved.limiter {
            Some(snapshot) => Limiter::from_snapshot(per_minute, per_hour, snapshot, now)
                .map_err(|error| UsageError(format!("{}: {error}", paths.limiter().display())))?,
            None => Limiter::new(per_minute, per_hour, &[], now),
        };
        let breaker = match &saved.breaker {
            Some(snapshot) => Breaker::from_snapshot(config.breaker.settings, snapshot, now)
                .map_err(|error| UsageError(format!("{}: {error}", paths.breaker().display())))?,
            None => Breaker::new(config.breaker.settings),
        };
        Ok(Guards { limiter, breaker })
    }
}

impl HomeRecords {
    /// The records the loop starts from, and the in-flight cycle a dead
    /// daemon left, to be recorded.
    fn from_saved(saved: SavedState, branch: &str) -> (HomeRecords, Option<InFlight>) {
        let records = HomeRecords {
            progress: saved.progress.unwrap_or_else(|| fresh_progress(branch)),
            prd: saved.prd,
            in_flight: None,
            unrecorded_cost_usd: 0.0,
        };
        (records, saved.interrupted)
    }
}

impl Checkout {
    /// The branch found at start-up, with a watcher on `.git/HEAD` (without
    /// one, branch changes are noticed at phase boundaries only).
    fn watch_head(repo: &GitRepo, branch: String) -> Checkout {
        let head_watch = match HeadWatcher::start(repo.git_dir()) {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(%error, "cannot watch .git/HEAD; branch changes are noticed at phase boundaries only");
                None
            }
        };
        Checkout {
            branch,
            head_watch,
            archived_this_cycle: None,
        }
    }
}

/// Checks that the agent's CLI answers `--version` (the built-in offline
/// agent needs no check); whatever the check started is killed and reaped.
async fn check_agent(config: &Config) -> Result<()> {
    if config.agent.kind == AgentKind::Claude {
        let checked =
            agent::claude::check_installed(&config.agent.command, config.agent.version_timeout)
                .await;
        // Whatever the check started and left behind is killed and reaped.
        sweep_descendants().await;
        let version = checked.map_err(|error| UsageError(format!("{error:#}")))?;
        tracing::info!(command = %config.agent.command, %version, "agent CLI found");
    }
    Ok(())
}

/// On a blocking thread: keeps the home's directories out of git, saves and
/// rolls back what a dead daemon's cycle left in the tree (before the dirty
/// check: that is its work, not the user's), refuses a dirty tree unless
/// `--allow-dirty`, and reads the branch.
async fn prepare_the_tree(
    repo: GitRepo,
    config: &Config,
    interrupted: Option<&InFlight>,
) -> Result<(GitRepo, String, Recovered)> {
    let repo_path = config.repo.clone();
    let home = config.home.clone();
    let allow_dirty = config.allow_dirty;
    let secret_scan = config.gates.secret_scan;
    let author = (
        config.git.author_name.clone(),
        config.git.author_email.clone(),
    );
    let interrupted = interrupted.cloned();
    tokio::task::spawn_blocking(move || -> Result<(GitRepo, String, Recovered)> {
        let mut repo = repo;
        let home_dirs = repo.home_dirs_in_repo(&home);
        if !home_dirs.is_empty() {
            repo.ensure_excluded(&home_dirs)?;
        }
        // Before the dirty check: what the dead daemon's cycle left in the
        // tree is its work, not the user's.
        let mut recovered = Recovered::default();
        if let Some(in_flight) = &interrupted {
            // Before recovery saves anything: an attempt the cycle saved but
            // could not note in in-flight.json.
            let unnoted = match in_flight.attempt_ref {
                Some(_) => None,
                None => newest_attempt_of(
                    &repo.list_attempts()?,
                    in_flight.cycle,
                    &in_flight.started_at,
                ),
            };
            if let Some(start) = &in_flight.start {
                let committing = in_flight.committing.as_ref();
                recovered = recover_repo(
                    &repo,
                    in_flight.cycle,
                    start,
                    committing,
                    &author,
                    secret_scan,
                )?;
            }
            recovered.unnoted_attempt = unnoted;
        }
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
    .context("git start-up check panicked")?
}

/// status.json as it stands before READY.
fn starting_status(config: &Config, branch: &str) -> StatusFile {
    StatusFile {
        version: VERSION,
        pid: std::process::id(),
        started_at: now_rfc3339(),
        heartbeat_at: now_rfc3339(),
        repo: config.repo.display().to_string(),
        branch: branch.to_owned(),
        state: DaemonState::Starting,
        max_cost_usd: config.budget.max_cost_usd,
        ..StatusFile::default()
    }
}

/// Start-up check of git's rules for ralphd's commits: names the hooks that
/// will run, and, when the repository signs its commits, signs once to be
/// sure it works — a setup that cannot sign is a usage error (exit 2), not a
/// night of failed cycles.
pub(super) async fn check_commit_rules(
    repo: &GitRepo,
    config: &Config,
    signals: &Signals,
) -> Result<()> {
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

/// Deletes the temp files a crash left in `state/`, while no `ralphd task`
/// edit runs: such an edit has a temp file of its own there until it
/// renames it over prd.json. When the edit lock cannot be had, the leftovers
/// stay (they are harmless) rather than risk that file.
fn remove_stale_temp_files(paths: &state::HomePaths) {
    match crate::tasks::Store::open(&paths.home).and_then(|store| store.hold_edits()) {
        Ok(_no_edits) => state::remove_stale_temp_files(paths),
        Err(error) => {
            tracing::warn!(%error, "temp files left by a crash are kept: prd.json is being edited")
        }
    }
}
