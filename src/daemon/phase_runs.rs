//! One phase run with its guards (budget, rate limiter, usage-limit waits,
//! retries with backoff), and the `PhaseExecutor` the cycle drives: prompts,
//! checks, git hooks, signing and the in-flight note.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use tracing::Instrument;

use crate::agent::classify::PhaseFailure;
use crate::agent::{self, PhaseOutcome, PhaseRequest, PhaseRun};
use crate::backoff;
use crate::checks::{self, CheckResult};
use crate::cycle::{CycleReport, LiveRepo, PhaseExecutor, Stop};
use crate::events::{EventKind, WaitReason};
use crate::git_rules;
use crate::phase::Phase;
use crate::prompt::{self, PromptContext};
use crate::state::{self, Durability, InFlight};

use super::records::{redact_phases, redact_text};
use super::{Daemon, now_rfc3339, rfc3339};

impl Daemon {
    /// Why no more money may be spent, when `[budget] max_cost_usd` is
    /// reached (the phase runs of the running cycle count too).
    pub(super) fn budget_exhausted(&self) -> Option<String> {
        let spent = self.records.progress.total_cost_usd + self.records.unrecorded_cost_usd;
        over_budget(spent, self.config.budget.max_cost_usd)
    }

    pub(super) async fn wait_for_limiter(&mut self) -> Result<(), Stop> {
        loop {
            match self.guards.limiter.try_acquire(SystemTime::now()) {
                Ok(()) => {
                    if let Err(error) = state::save_json_with(
                        &self.paths.limiter(),
                        &self.guards.limiter.snapshot(),
                        Durability::ProcessDeath,
                    ) {
                        tracing::warn!(error = %format!("{error:#}"), "cannot write limiter.json");
                    }
                    return Ok(());
                }
                Err(throttled) => {
                    tracing::info!(quota = %throttled.quota, until = %rfc3339(throttled.until), "throttled by the rate limiter");
                    self.wait_until(
                        throttled.until,
                        WaitReason::Limiter,
                        &format!("throttled ({})", throttled.quota),
                    )
                    .await?;
                }
            }
        }
    }

    /// The user's `prompts/<phase>.md`, else the built-in template.
    pub(super) fn template(&mut self, phase: Phase) -> String {
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
    pub(super) fn read_users_text(
        &mut self,
        path: &std::path::Path,
        fallback: &str,
    ) -> Option<String> {
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

    /// Shows the phase on the board and to systemd, and logs its start.
    fn show_phase_started(&self, cycle: u64, phase: Phase, attempt: u32) {
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
        self.events.publish(EventKind::PhaseStarted {
            cycle,
            phase: phase.name().to_owned(),
            attempt,
        });
    }

    /// A phase found the disk under the home full: it fails with that as its
    /// reason, and the run stops after the cycle is recorded (if it can be).
    pub(super) fn stop_on_full_disk(
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
        let Some(in_flight) = self.records.in_flight.as_mut() else {
            return;
        };
        let mut updated = InFlight {
            start: rollback_point.cloned(),
            phases: report.phases.clone(),
            phases_completed: report.phases_completed.clone(),
            cost_usd: report.cost_usd,
            title: report.title.clone(),
            commit: report.commit.clone(),
            committing: report.committing.clone(),
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
        let path = self.paths.in_flight();
        if let Err(error) = state::save_json(&path, in_flight) {
            // A restart would not know what this write holds (a saved
            // attempt's ref): on a full disk the run stops after this cycle.
            if let Some(full) = state::DiskFull::find(&path, &error) {
                let message = full.to_string();
                tracing::error!(error = %message, "cannot write in-flight.json: the disk is full; stopping after this cycle");
                self.disk_full.get_or_insert(message);
            } else {
                tracing::warn!(error = %format!("{error:#}"), "cannot write in-flight.json");
            }
        }
    }

    async fn before_phase(&mut self, phase: Phase) -> Result<(), Stop> {
        if self.signals.shutdown.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        self.liveness.beat();
        self.take_requests();
        self.wait_while_paused().await?;
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
        let results = self
            .liveness
            .during(checks::run_all(
                &self.config.backtest.checks,
                &self.config.repo,
                self.config.backtest.check_timeout,
                self.config.agent.stop_grace,
                &self.signals.shutdown,
            ))
            .await?;
        let cycle = self
            .records
            .in_flight
            .as_ref()
            .map_or(0, |flight| flight.cycle);
        for result in &results {
            self.events.publish(EventKind::CheckFinished {
                cycle,
                command: result.command.clone(),
                exit: result.exit_code,
                passed: result.passed(),
                duration_ms: result.duration.as_millis().try_into().unwrap_or(u64::MAX),
            });
        }
        Some(results)
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
        self.liveness
            .during(git_rules::run_hook(
                &hook,
                &args,
                &context,
                &self.signals.shutdown,
            ))
            .await
    }

    async fn sign_commit(
        &mut self,
        signing: crate::git::Signing,
        payload: String,
    ) -> Option<Result<String, String>> {
        self.liveness
            .during(git_rules::sign(
                &signing,
                &payload,
                self.config.agent.stop_grace,
                &self.signals.shutdown,
            ))
            .await
    }

    async fn run_phase(
        &mut self,
        phase: Phase,
        cycle: u64,
        prompt: String,
    ) -> Result<PhaseRun, Stop> {
        let run = self.run_phase_guarded(phase, cycle, prompt).await?;
        let (status, error) = match &run.outcome {
            _ if run.cancelled => ("interrupted", None),
            PhaseOutcome::Succeeded { .. } => ("succeeded", None),
            PhaseOutcome::Failed { message, .. } => ("failed", Some(message.clone())),
        };
        self.events.publish(EventKind::PhaseFinished {
            cycle,
            phase: phase.name().to_owned(),
            status: status.to_owned(),
            duration_ms: run.duration.as_millis().try_into().unwrap_or(u64::MAX),
            cost_usd: run.cost_usd,
            tokens: run.tokens,
            error,
        });
        Ok(run)
    }
}

impl Daemon {
    /// One phase run with its guards: the budget, the limiter, waits on a
    /// usage limit and retries with backoff.
    async fn run_phase_guarded(
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
        let mut total_tokens = crate::agent::stream::TokenUsage::default();
        loop {
            if let Some(reason) = self.budget_exhausted() {
                return Err(Stop::Halt(format!(
                    "budget exhausted before {phase}: {reason}"
                )));
            }
            self.wait_for_limiter().await?;
            attempt += 1;
            self.show_phase_started(cycle, phase, attempt);
            let request = PhaseRequest {
                phase,
                cycle,
                prompt: prompt.clone(),
                transcript: transcript.clone(),
                cancel: &self.signals.shutdown,
                events: &self.events,
            };
            // If the daemon dies meanwhile, the agent dies with it (PDEATHSIG)
            // and the next start stops its tools by their environment marker.
            // A phase run ends by its own deadlines (phase and idle timeouts).
            let liveness = self.liveness.clone();
            let result = liveness
                .during(
                    agent::run_phase(&self.config, request)
                        .instrument(tracing::info_span!("phase", phase = %phase)),
                )
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
            self.records.unrecorded_cost_usd += run.cost_usd;
            let spent = self.records.progress.total_cost_usd + self.records.unrecorded_cost_usd;
            self.set_status(|status| status.spent_usd = spent);
            run.cost_usd = total_cost;
            total_tokens = total_tokens.plus(run.tokens);
            run.tokens = total_tokens;
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
                    self.wait_until(until, WaitReason::UsageLimit, "usage limit")
                        .await?;
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
                    self.wait_until(
                        SystemTime::now() + delay,
                        WaitReason::Backoff,
                        "retry backoff",
                    )
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

pub(super) fn failed_run(message: String, attempts: u32) -> PhaseRun {
    PhaseRun {
        outcome: PhaseOutcome::could_not_run(message),
        session_id: None,
        cost_usd: 0.0,
        tokens: Default::default(),
        turns: 0,
        permission_denials: Vec::new(),
        duration: Duration::ZERO,
        attempts,
        cancelled: false,
    }
}

/// Nothing started for a phase may outlive it: kills every remaining
/// descendant of the daemon (tool processes that detached with `setsid` were
/// re-parented to us, the subreaper) and reaps them.
pub(super) async fn sweep_descendants() {
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

/// Why `spent` is too much under the cap `max` (none: no cap), in words.
fn over_budget(spent: f64, max: Option<f64>) -> Option<String> {
    let max = max?;
    (spent >= max).then(|| format!("spent ${spent:.2} of max_cost_usd ${max:.2}"))
}

#[cfg(test)]
mod tests {
    use super::over_budget;

    #[test]
    fn the_budget_halts_once_the_spending_reaches_the_cap() {
        assert_eq!(over_budget(1_000.0, None), None);
        assert_eq!(over_budget(4.99, Some(5.0)), None);
        assert_eq!(
            over_budget(5.0, Some(5.0)).as_deref(),
            Some("spent $5.00 of max_cost_usd $5.00")
        );
        assert_eq!(
            over_budget(7.256, Some(5.0)).as_deref(),
            Some("spent $7.26 of max_cost_usd $5.00")
        );
    }
}
