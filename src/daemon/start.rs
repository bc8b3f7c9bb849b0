//! Start-up, in the documented order (docs/design.md §8.3): the home's and
//! the repository's locks, the state files, the guards, the agent check, the
//! repository's recovery and checks, then READY.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::agent::{self};
use crate::breaker::{Breaker, BreakerSnapshot};
use crate::config::{AgentKind, Config};
use crate::git::GitRepo;
use crate::git_rules;
use crate::limiter::{Limiter, LimiterSnapshot};
use crate::prd;
use crate::state::{
    self, HomePaths, InFlight, InstanceLock, Progress, RepoLock, StatusFile, VERSION,
};
use crate::watch::HeadWatcher;

use super::main_loop::fresh_progress;
use super::phase_runs::sweep_descendants;
use super::recovery::{Recovered, recover_repo, stop_leftover_agents};
use super::{Daemon, Signals, UsageError, breaker_settings, now_rfc3339};

impl Daemon {
    pub(super) async fn start(config: Config, signals: Signals) -> Result<Daemon> {
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

        let on_corrupt = match config.state.on_corrupt {
            crate::config::OnCorrupt::Refuse => state::OnCorrupt::Refuse,
            crate::config::OnCorrupt::MoveAside => state::OnCorrupt::MoveAside,
        };
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
            Some(snapshot) => Breaker::from_snapshot(breaker_settings(&config), snapshot, now)
                .map_err(|error| UsageError(format!("{}: {error}", paths.breaker().display())))?,
            None => Breaker::new(breaker_settings(&config)),
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
