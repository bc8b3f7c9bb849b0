//! One cycle: the five phases in order, with the rules that chain them —
//! each phase's prompt sees the earlier outputs, code-edit is measured
//! against the cycle's start and must pass the diff gates, the daemon's checks
//! and the agent's verdict decide between commit and rollback, the commit
//! passes the repository's hooks (and is signed when it asks for that), and
//! the report's story update is applied only to committed work. Completion is
//! accepted here (or refused while prd.json has open stories). After every
//! phase run the repository must still be the cycle's (DESIGN §14): what the
//! agent did to the branch or a submodule is saved as an attempt and undone.
//!
//! It decides nothing about limits, retries, backoff, waiting or the
//! breaker: running a phase is delegated to a [`PhaseExecutor`], which the
//! daemon implements with its guards.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::PhaseRun;
use crate::blocks;
use crate::checks::CheckResult;
use crate::config::GateSettings;
use crate::gates::{self, Found, Gates, SecretScan, Violation};
use crate::git::{CommitRules, GitError, GitRepo, Signing, Snapshot, Staged, StagedCommit};
use crate::git_rules;
use crate::phase::Phase;
use crate::prompt::{CheckBrief, PromptContext, StoryBrief};
use crate::state::{Outcome, PhaseRecord};

/// How much of the diff the backtest prompt sees.
const DIFF_SUMMARY_BYTES: usize = 16 * 1024;

/// Why a cycle stopped before its end; the daemon turns these into exits.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stop {
    /// SIGINT/SIGTERM: record the cycle as interrupted and exit 130.
    Cancelled,
    /// A guard refuses to go on (budget spent, breaker open with halt): exit 3.
    Halt(String),
}

/// What the daemon provides to run phases and touch the outside world.
pub(crate) trait PhaseExecutor {
    /// Runs one phase to a final answer or failure, applying every guard
    /// (limiter, budget, usage-limit waits, retries). `Err` means stop now.
    async fn run_phase(
        &mut self,
        phase: Phase,
        cycle: u64,
        prompt: String,
    ) -> Result<PhaseRun, Stop>;
    /// Called before each phase: branch-change detection, config reload.
    async fn before_phase(&mut self, phase: Phase) -> Result<(), Stop>;
    /// Renders the prompt of a phase (templates, steering, state).
    fn render_prompt(&mut self, phase: Phase, context: PromptContext) -> String;
    /// Runs the configured backtest checks; `None` when cancelled.
    async fn run_checks(&mut self) -> Option<Vec<CheckResult>>;
    /// Runs a git operation off the async threads (git2 calls block).
    async fn git<T: Send + 'static>(
        &mut self,
        operation: impl FnOnce(&GitRepo) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError>;
    /// The configured commit author: (name, email).
    fn git_author(&self) -> (String, String);
    /// Keeps what a restart after a crash must know of this cycle: where to
    /// roll it back to (its start, or `None` once its work is committed:
    /// nothing left to undo) and the report so far (phase runs and their
    /// cost, commit, saved attempt, story).
    fn save_in_flight(&mut self, rollback_point: Option<&Snapshot>, report: &CycleReport);
    /// `[git] run_hooks`: whether the repository's commit hooks run.
    fn run_hooks(&self) -> bool;
    /// `[gates] secret_scan`: whether saved attempts are scanned and masked.
    fn secret_scan(&self) -> bool;
    /// Runs one of the repository's git hooks in the work tree, with
    /// `GIT_INDEX_FILE` = `index_file` (see `git_rules::run_hook`); `None`
    /// when cancelled.
    async fn run_git_hook(
        &mut self,
        hook: PathBuf,
        args: Vec<OsString>,
        index_file: PathBuf,
    ) -> Option<CheckResult>;
    /// Signs a commit payload as git would (`git_rules::sign`); `None` when
    /// cancelled.
    async fn sign_commit(
        &mut self,
        signing: Signing,
        payload: String,
    ) -> Option<Result<String, String>>;
}

/// What the cycle knows before it starts.
pub(crate) struct CycleInput {
    pub(crate) cycle: u64,
    pub(crate) repo: PathBuf,
    pub(crate) branch: String,
    pub(crate) learnings: Vec<String>,
    pub(crate) patterns: Vec<String>,
    pub(crate) open_stories: Vec<StoryBrief>,
    pub(crate) auto_commit: bool,
    pub(crate) checks_configured: bool,
    /// `--allow-dirty`: the user's uncommitted changes are expected in the tree.
    pub(crate) allow_dirty: bool,
    /// The home, whose steering files the user may edit during a run.
    pub(crate) home: PathBuf,
    /// The diff gates code-edit's work must pass.
    pub(crate) gates: GateSettings,
}

/// Everything the daemon records about a finished cycle.
#[derive(Debug, Default)]
pub(crate) struct CycleReport {
    pub(crate) outcome: Option<Outcome>,
    pub(crate) phases: Vec<PhaseRecord>,
    pub(crate) phases_completed: Vec<String>,
    pub(crate) outputs: Vec<(Phase, String)>,
    pub(crate) title: Option<String>,
    pub(crate) commit: Option<String>,
    pub(crate) attempt_ref: Option<String>,
    pub(crate) cost_usd: f64,
    pub(crate) summary: String,
    pub(crate) learnings: Vec<String>,
    pub(crate) patterns: Vec<String>,
    /// A story the report says this cycle made pass (applied only if committed).
    pub(crate) story_passed: Option<String>,
    /// The agent declared completion and it was accepted.
    pub(crate) complete: bool,
    pub(crate) error: Option<String>,
    /// Set when the cycle ended early because the daemon must stop.
    pub(crate) stop: Option<Stop>,
}

impl CycleReport {
    fn output(&self, phase: Phase) -> String {
        self.outputs
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, text)| text.clone())
            .unwrap_or_default()
    }
}

pub(crate) fn phase_record(phase: Phase, run: &PhaseRun) -> PhaseRecord {
    PhaseRecord {
        phase: phase.name().to_owned(),
        status: if run.succeeded() {
            "ok".to_owned()
        } else {
            "failed".to_owned()
        },
        duration_ms: u64::try_from(run.duration.as_millis()).unwrap_or(u64::MAX),
        cost_usd: run.cost_usd,
        session_id: run.session_id.clone(),
        turns: run.turns,
        attempts: run.attempts,
        permission_denials: run.permission_denials.clone(),
        error: run.failure.clone(),
    }
}

/// Runs one cycle. Never returns an error for agent or git trouble: those
/// become the cycle's outcome; only the daemon's stop requests end it early.
pub(crate) async fn run(input: &CycleInput, executor: &mut impl PhaseExecutor) -> CycleReport {
    let mut report = CycleReport::default();
    // With auto_commit = false, verified changes stay in the tree on purpose.
    if !input.allow_dirty && input.auto_commit {
        // Changes that appeared since start-up (a rollback that failed, someone
        // editing the repo) must never be snapshotted as the user's and carried on.
        let home = input.home.clone();
        match executor.git(move |repo| repo.stray_paths(&home, 10)).await {
            Ok(dirty) if dirty.is_empty() => {}
            Ok(dirty) => {
                report.outcome = Some(Outcome::Failed);
                report.error = Some(format!(
                    "the work tree has uncommitted changes that ralphd did not start with ({}); commit, stash or remove them",
                    dirty.join(", ")
                ));
                tracing::error!(
                    cycle = input.cycle,
                    error = report.error.as_deref().unwrap_or(""),
                    "cycle not started"
                );
                return report;
            }
            Err(error) => {
                report.outcome = Some(Outcome::Failed);
                report.error = Some(error.to_string());
                return report;
            }
        }
    }
    let gates = match Gates::new(&input.gates) {
        Ok(gates) => Arc::new(gates),
        Err(error) => {
            report.outcome = Some(Outcome::Failed);
            report.error = Some(format!("invalid gates.protected_paths: {error}"));
            return report;
        }
    };
    let start = match executor.git(|repo| repo.begin_cycle()).await {
        Ok(start) => {
            note_in_flight(executor, &start, &report);
            start
        }
        Err(error) => {
            report.outcome = Some(Outcome::Failed);
            report.error = Some(error.to_string());
            return report;
        }
    };
    let mut completion_requested = false;
    let mut no_changes = false;
    let mut diff_summary = String::new();
    let mut checks: Vec<CheckResult> = Vec::new();
    let mut verdict_text = String::new();
    let mut verified: Option<bool> = None;
    let mut code_edit_skipped = false;
    // A diff gate refused code-edit's work: nothing left to verify.
    let mut gated = false;
    // The work tree as code-edit left it: what the verdict is about.
    let mut edit_checkpoint: Option<Snapshot> = None;
    // What every phase run must leave the branch and submodules at: the start,
    // then, once the verdict passed, the verified state.
    let mut guard: Option<Snapshot> = Some(start.clone());

    for phase in Phase::ALL {
        // Completion in scan or idea skips the edit and so its verification;
        // completion declared later never skips verifying what was edited.
        let skip = match phase {
            Phase::CodeEdit => completion_requested,
            Phase::Backtest => no_changes || code_edit_skipped || gated,
            _ => false,
        };
        if phase == Phase::CodeEdit {
            code_edit_skipped = skip;
        }
        if skip {
            tracing::info!(cycle = input.cycle, %phase, "phase skipped");
            continue;
        }
        if let Err(stop) = executor.before_phase(phase).await {
            return finish_early(report, &start, input.cycle, executor, stop).await;
        }
        if phase == Phase::Backtest {
            match executor.run_checks().await {
                Some(results) => checks = results,
                None => {
                    return finish_early(report, &start, input.cycle, executor, Stop::Cancelled)
                        .await;
                }
            }
        }
        let context = PromptContext {
            repo: input.repo.display().to_string(),
            branch: input.branch.clone(),
            cycle: input.cycle,
            phase: phase.name().to_owned(),
            learnings: input.learnings.clone(),
            patterns: input.patterns.clone(),
            open_stories: input.open_stories.clone(),
            scan: report.output(Phase::Scan),
            idea: report.output(Phase::Idea),
            code_edit: report.output(Phase::CodeEdit),
            diff_summary: diff_summary.clone(),
            checks: checks.iter().map(check_brief).collect(),
            backtest: report.output(Phase::Backtest),
            verdict: verdict_text.clone(),
            ..PromptContext::default()
        };
        let prompt = executor.render_prompt(phase, context);
        let run = match executor.run_phase(phase, input.cycle, prompt).await {
            Ok(run) => run,
            Err(stop) => return finish_early(report, &start, input.cycle, executor, stop).await,
        };
        report.cost_usd += run.cost_usd;
        report.phases.push(phase_record(phase, &run));
        if let Some(guard) = &guard
            && let Some(reason) = trespass_after(executor, guard, phase).await
        {
            undo_trespass(&mut report, guard, input.cycle, executor, reason).await;
            return report;
        }
        let Some(text) = run.result_text.clone().filter(|_| run.succeeded()) else {
            let reason = run
                .failure
                .clone()
                .unwrap_or_else(|| "phase failed".to_owned());
            report.error = Some(format!("{phase} failed: {reason}"));
            // A failed report does not undo the verdict: a committed cycle
            // stays committed, a rolled-back one rolled back.
            if report.outcome.is_none() {
                report.outcome = Some(Outcome::Failed);
            }
            if phase >= Phase::CodeEdit && verified.is_none() {
                save_and_roll_back(
                    &mut report,
                    &start,
                    input.cycle,
                    executor,
                    &format!("{phase} failed: {reason}"),
                )
                .await;
            }
            return report;
        };
        report.phases_completed.push(phase.name().to_owned());
        report.outputs.push((phase, text.clone()));

        if blocks::is_completion(&text) {
            // A story the report marks as passing counts, if this cycle was committed.
            let newly_passed = (phase == Phase::Report
                && report.outcome == Some(Outcome::Committed))
            .then(|| blocks::parse_report_block(&text).ok())
            .flatten()
            .and_then(|block| block.story)
            .filter(|story| story.passes)
            .map(|story| story.id);
            let still_open: Vec<&str> = input
                .open_stories
                .iter()
                .map(|story| story.id.as_str())
                .filter(|id| Some(*id) != newly_passed.as_deref())
                .collect();
            if still_open.is_empty() {
                tracing::info!(cycle = input.cycle, %phase, "the agent declared completion; the run ends after this cycle");
                completion_requested = true;
            } else {
                tracing::warn!(cycle = input.cycle, %phase, open_stories = %still_open.join(", "),
                    "completion refused: prd.json still has stories with passes: false");
            }
        }

        match phase {
            Phase::Idea => report.title = Some(blocks::idea_title(&text)),
            Phase::CodeEdit => {
                let cycle_start = start.clone();
                let gates = Arc::clone(&gates);
                let measured = executor
                    .git(move |repo| {
                        let progress = repo.measure_progress(&cycle_start)?;
                        if progress.is_empty() {
                            return Ok((progress, String::new(), None, Vec::new()));
                        }
                        // Before anything pins or shows the diff: a secret
                        // must reach no ref and no prompt.
                        let violations = check_gates(repo, &cycle_start, &gates)?;
                        if !violations.is_empty() {
                            return Ok((progress, String::new(), None, violations));
                        }
                        let summary = repo.diff_summary(&cycle_start, DIFF_SUMMARY_BYTES)?;
                        Ok((progress, summary, Some(repo.checkpoint()?), Vec::new()))
                    })
                    .await;
                match measured {
                    Ok((progress, _, _, _)) if progress.is_empty() => {
                        tracing::info!(
                            cycle = input.cycle,
                            "code-edit changed nothing: outcome no_changes"
                        );
                        no_changes = true;
                    }
                    Ok((_, _, _, violations)) if !violations.is_empty() => {
                        let reason = gates::reason(&violations);
                        for violation in &violations {
                            tracing::warn!(
                                cycle = input.cycle,
                                gate = violation.gate(),
                                "diff gate failed: {violation}"
                            );
                        }
                        gated = true;
                        verified = Some(false);
                        verdict_text = format!("fail: {reason}");
                        report.outcome = Some(Outcome::RolledBack);
                        report.error = Some(reason.clone());
                        // With secret_scan on, the attempt is saved masked.
                        save_and_roll_back(&mut report, &start, input.cycle, executor, &reason)
                            .await;
                    }
                    Ok((progress, summary, checkpoint, _)) => {
                        edit_checkpoint = checkpoint;
                        tracing::info!(
                            cycle = input.cycle,
                            files = progress.files_changed,
                            insertions = progress.insertions,
                            deletions = progress.deletions,
                            agent_commits = progress.agent_commits,
                            "code-edit made progress"
                        );
                        diff_summary = summary;
                    }
                    Err(error) => {
                        let error = format!("cannot measure progress: {error}");
                        fail_and_roll_back(&mut report, &start, input.cycle, executor, error).await;
                        return report;
                    }
                }
            }
            Phase::Backtest => {
                if let Some(checkpoint) = edit_checkpoint.clone()
                    && let Err(error) = undo_after_edit(executor, checkpoint, input.cycle).await
                {
                    let error = format!("cannot restore the edit after backtest: {error}");
                    fail_and_roll_back(&mut report, &start, input.cycle, executor, error).await;
                    return report;
                }
                let (pass, reason) = decide(&text, &checks, input.checks_configured);
                verdict_text = format!("{}: {reason}", if pass { "pass" } else { "fail" });
                tracing::info!(cycle = input.cycle, pass, %reason, "verdict");
                verified = Some(pass);
                if pass {
                    let title = report
                        .title
                        .clone()
                        .unwrap_or_else(|| "improvement".to_owned());
                    let message = format!("ralphd: cycle {}: {title}", input.cycle);
                    if input.auto_commit {
                        match commit_verified(&mut report, &start, input.cycle, executor, message)
                            .await
                        {
                            Ok(None) => {}
                            Ok(Some(refusal)) => verdict_text = format!("fail: {refusal}"),
                            Err(stop) => {
                                return finish_early(report, &start, input.cycle, executor, stop)
                                    .await;
                            }
                        }
                    } else {
                        tracing::info!(
                            cycle = input.cycle,
                            "auto_commit = false: the verified change stays uncommitted in the work tree"
                        );
                        report.outcome = Some(Outcome::Committed);
                    }
                } else {
                    report.outcome = Some(Outcome::RolledBack);
                    save_and_roll_back(
                        &mut report,
                        &start,
                        input.cycle,
                        executor,
                        &format!("verdict fail: {reason}"),
                    )
                    .await;
                }
                if report.outcome == Some(Outcome::Committed) {
                    // The report may not undo what was verified: it is
                    // checked against the state after the commit.
                    guard = match executor.git(|repo| repo.checkpoint()).await {
                        Ok(verified) => Some(verified),
                        Err(error) => {
                            tracing::warn!(cycle = input.cycle, %error, "cannot snapshot the committed state; the report's git use is not checked");
                            None
                        }
                    };
                }
            }
            Phase::Report => apply_report_block(&mut report, &text),
            Phase::Scan => {}
        }
        note_in_flight(executor, &start, &report);
    }

    if no_changes {
        report.outcome = Some(Outcome::NoChanges);
    }
    if completion_requested {
        report.complete = true;
        if report.outcome.is_none()
            || report.outcome == Some(Outcome::NoChanges) && report.phases_completed.len() < 4
        {
            report.outcome = Some(Outcome::Complete);
        }
    }
    if report.outcome.is_none() {
        report.outcome = Some(Outcome::Failed);
    }
    report
}

/// The diff gates over the cycle's work (runs on the git thread): the
/// changed files and lines, the protected paths, and the secret scan over
/// every added line, the agent's own commits included.
fn check_gates(
    repo: &GitRepo,
    start: &Snapshot,
    gates: &Gates,
) -> Result<Vec<Violation>, GitError> {
    let files = repo.changed_files(start)?;
    let mut violations = gates.check_changes(
        files
            .iter()
            .map(|file| (file.path.as_path(), file.insertions + file.deletions)),
    );
    if gates.scans_secrets() {
        violations.extend(scan_secrets(repo, start)?);
    }
    Ok(violations)
}

/// The secret scan over every line the cycle added (the work tree's diff and
/// the agent's own commits); runs on the git thread.
fn scan_secrets(repo: &GitRepo, start: &Snapshot) -> Result<Option<Violation>, GitError> {
    let mut scan = SecretScan::default();
    repo.scan_added_lines(start, |commit, path, line, content| {
        let found = match commit {
            Some(commit) => Found::Commit(commit.to_owned()),
            None => Found::WorkTree,
        };
        scan.added_line(found, path, line, content);
    })?;
    Ok(scan.finish())
}

/// Commits the verified edit as `git commit` would: stages it, runs the
/// repository's `pre-commit` and `commit-msg` hooks (unless `[git] run_hooks
/// = false`), signs it when `commit.gpgsign` asks for it, then commits. A hook
/// that refuses fails the verification: the cycle is rolled back, the attempt
/// saved, and the refusal returned. `Err` only when the daemon must stop.
async fn commit_verified(
    report: &mut CycleReport,
    start: &Snapshot,
    cycle: u64,
    executor: &mut impl PhaseExecutor,
    message: String,
) -> Result<Option<String>, Stop> {
    let (name, email) = executor.git_author();
    let run_hooks = executor.run_hooks();
    let cycle_start = start.clone();
    let committer = (name.clone(), email.clone());
    let staged = executor
        .git(move |repo| {
            let rules = repo.commit_rules((&committer.0, &committer.1))?;
            let hooks = run_hooks && (rules.pre_commit.is_some() || rules.commit_msg.is_some());
            let staged = repo.stage_commit(&cycle_start, hooks)?;
            Ok((rules, staged))
        })
        .await;
    let (rules, staged) = match staged {
        Ok((rules, Staged::Ready(staged))) => (rules, staged),
        Ok((_, Staged::AgentCommitted(commit))) => {
            // Recorded with the phase, when the cycle notes its progress.
            report.commit = Some(commit.to_string());
            report.outcome = Some(Outcome::Committed);
            return Ok(None);
        }
        Ok((_, Staged::Nothing)) => {
            // Every change was in files the user had changed before
            // (--allow-dirty): those are never committed.
            tracing::warn!(
                cycle,
                "the verified change touches only files with the user's own uncommitted changes; nothing was committed"
            );
            report.outcome = Some(Outcome::NoChanges);
            return Ok(None);
        }
        Err(error) => {
            let error = format!("commit failed: {error}");
            fail_and_roll_back(report, start, cycle, executor, error).await;
            return Ok(None);
        }
    };
    let mut message = message;
    let hooks = run_commit_hooks(executor, &rules, staged, &mut message).await?;
    if !matches!(hooks, Hooks::Passed(_)) {
        discard_hook_index(executor).await;
    }
    let staged = match hooks {
        Hooks::Passed(staged) => staged,
        Hooks::Refused(refusal) => {
            tracing::warn!(cycle, %refusal, "a git hook refused the commit");
            report.outcome = Some(Outcome::RolledBack);
            report.error = Some(refusal.clone());
            save_and_roll_back(report, start, cycle, executor, &refusal).await;
            return Ok(Some(refusal));
        }
        Hooks::Broken(error) => {
            fail_and_roll_back(
                report,
                start,
                cycle,
                executor,
                format!("commit failed: {error}"),
            )
            .await;
            return Ok(None);
        }
    };
    let committed = match rules.signing {
        None => executor
            .git(move |repo| repo.commit_staged(&staged, &message, &name, &email))
            .await
            .map_err(|error| error.to_string()),
        Some(Err(why)) => Err(format!(
            "commit.gpgsign is true, but signing cannot work: {why}"
        )),
        Some(Ok(signing)) => {
            let payload_of = staged.clone();
            let payload = executor
                .git(move |repo| repo.commit_payload(&payload_of, &message, &name, &email))
                .await;
            match payload {
                Err(error) => Err(error.to_string()),
                Ok(payload) => {
                    match executor
                        .sign_commit(signing, payload.clone())
                        .await
                        .ok_or(Stop::Cancelled)?
                    {
                        Err(why) => Err(format!("signing failed: {why}")),
                        Ok(signature) => executor
                            .git(move |repo| repo.commit_signed(&staged, &payload, &signature))
                            .await
                            .map_err(|error| error.to_string()),
                    }
                }
            }
        }
    };
    match committed {
        Ok(commit) => {
            // Recorded with the phase, when the cycle notes its progress.
            report.commit = Some(commit.to_string());
            report.outcome = Some(Outcome::Committed);
        }
        Err(error) => {
            fail_and_roll_back(
                report,
                start,
                cycle,
                executor,
                format!("commit failed: {error}"),
            )
            .await;
        }
    }
    Ok(None)
}

/// What came of the commit hooks.
enum Hooks {
    /// The commit may go on, with what the hooks staged.
    Passed(StagedCommit),
    /// A hook refused the commit: the reason.
    Refused(String),
    /// ralphd could not run them (a git error).
    Broken(String),
}

/// Runs `pre-commit`, then `commit-msg` on a file holding `message`, which
/// it may rewrite (the rewritten, cleaned message replaces `message`).
async fn run_commit_hooks(
    executor: &mut impl PhaseExecutor,
    rules: &CommitRules,
    staged: StagedCommit,
    message: &mut String,
) -> Result<Hooks, Stop> {
    let Some(index) = staged.hook_index().map(Path::to_path_buf) else {
        return Ok(Hooks::Passed(staged));
    };
    if let Some(hook) = &rules.pre_commit {
        let run = executor
            .run_git_hook(hook.clone(), Vec::new(), index.clone())
            .await
            .ok_or(Stop::Cancelled)?;
        if !run.passed() {
            return Ok(Hooks::Refused(git_rules::hook_refusal(&run)));
        }
    }
    if let Some(hook) = &rules.commit_msg {
        let text = message.clone();
        let file = match executor
            .git(move |repo| repo.write_commit_message(&text))
            .await
        {
            Ok(file) => file,
            Err(error) => return Ok(Hooks::Broken(error.to_string())),
        };
        let run = executor
            .run_git_hook(hook.clone(), vec![file.into_os_string()], index)
            .await
            .ok_or(Stop::Cancelled)?;
        if !run.passed() {
            return Ok(Hooks::Refused(git_rules::hook_refusal(&run)));
        }
        let rewritten = match executor.git(|repo| repo.read_commit_message()).await {
            Ok(text) => git_rules::clean_message(&text),
            Err(error) => return Ok(Hooks::Broken(error.to_string())),
        };
        if rewritten.is_empty() {
            return Ok(Hooks::Refused(
                "the commit-msg hook left an empty commit message".to_owned(),
            ));
        }
        *message = rewritten;
    }
    match executor.git(move |repo| repo.after_hooks(staged)).await {
        Ok(staged) => Ok(Hooks::Passed(staged)),
        Err(error) => Ok(Hooks::Broken(error.to_string())),
    }
}

async fn discard_hook_index(executor: &mut impl PhaseExecutor) {
    if let Err(error) = executor.git(|repo| repo.discard_hook_index()).await {
        tracing::warn!(%error, "cannot remove ralphd's index file for the hooks");
    }
}

/// The verdict rule of DESIGN §6: all checks pass (when configured) and the
/// agent's verdict is not `fail`; with no checks, the agent's `pass` is required.
pub(crate) fn decide(
    backtest_text: &str,
    checks: &[CheckResult],
    checks_configured: bool,
) -> (bool, String) {
    let agent = blocks::parse_backtest_verdict(backtest_text);
    let failed_checks: Vec<&str> = checks
        .iter()
        .filter(|check| !check.passed())
        .map(|check| check.command.as_str())
        .collect();
    if !failed_checks.is_empty() {
        return (
            false,
            format!("checks failed: {}", failed_checks.join(", ")),
        );
    }
    match agent {
        Ok(verdict) if verdict.verdict == blocks::Verdict::Fail => (
            false,
            format!("the agent's verdict is fail: {}", verdict.reason),
        ),
        Ok(verdict) if checks_configured || verdict.verdict == blocks::Verdict::Pass => {
            (true, verdict.reason)
        }
        Ok(verdict) => (false, format!("no pass from the agent: {}", verdict.reason)),
        Err(error) if checks_configured => {
            tracing::warn!(%error, "backtest verdict block missing or invalid; the checks decide");
            (
                true,
                "all checks passed (no valid verdict block from the agent)".to_owned(),
            )
        }
        Err(error) => {
            tracing::warn!(%error, "backtest verdict block missing or invalid");
            (
                false,
                format!("no checks are configured and the agent gave no valid pass ({error})"),
            )
        }
    }
}

fn apply_report_block(report: &mut CycleReport, text: &str) {
    match blocks::parse_report_block(text) {
        Ok(block) => {
            report.summary = block.summary;
            report.learnings = block.learnings;
            report.patterns = block.patterns;
            report.story_passed = block
                .story
                .filter(|story| story.passes)
                .map(|story| story.id);
        }
        Err(error) => {
            tracing::warn!(%error, "report block missing or invalid; keeping the report text only");
            report.summary = crate::text::tail_bytes(text.trim(), 500).to_owned();
        }
    }
}

fn check_brief(check: &CheckResult) -> CheckBrief {
    CheckBrief {
        command: check.command.clone(),
        exit_code: check.exit_code,
        timed_out: check.timed_out,
        output_tail: check.output_tail.clone(),
    }
}

/// Undoes what changed after code-edit (files the checks or the backtest
/// agent's Bash wrote, commits it made), so that exactly the verified edit is
/// committed or saved.
async fn undo_after_edit(
    executor: &mut impl PhaseExecutor,
    checkpoint: Snapshot,
    cycle: u64,
) -> Result<(), GitError> {
    let changed = executor
        .git(move |repo| {
            let changed = repo.measure_progress(&checkpoint)?;
            if !changed.is_empty() {
                repo.rollback(&checkpoint)?;
            }
            Ok(changed)
        })
        .await?;
    if !changed.is_empty() {
        tracing::warn!(
            cycle,
            files = changed.files_changed,
            commits = changed.agent_commits,
            "the checks or the backtest agent changed the work tree; undone, only code-edit's work is kept"
        );
    }
    Ok(())
}

/// DESIGN §14: after a phase run HEAD must still be on the branch of `guard`,
/// that branch must still contain `guard`'s commit and no submodule may have
/// changed. Returns the cycle's reason when not (`code-edit: the agent …`),
/// also when the check itself fails: a repository that cannot be checked is
/// not trusted.
async fn trespass_after(
    executor: &mut impl PhaseExecutor,
    guard: &Snapshot,
    phase: Phase,
) -> Option<String> {
    let base = guard.clone();
    match executor.git(move |repo| repo.trespasses(&base)).await {
        Ok(found) if found.is_empty() => None,
        Ok(found) => {
            let what: Vec<String> = found.iter().map(ToString::to_string).collect();
            Some(format!("{phase}: {}", what.join("; ")))
        }
        Err(error) => Some(format!(
            "cannot check the repository after {phase}: {error}"
        )),
    }
}

/// Saves what the agent did (its commits, its branch, its submodule work) as
/// an attempt and puts the repository back to `guard`. A committed cycle stays
/// committed (its commit is kept); any other cycle fails with `reason`.
async fn undo_trespass(
    report: &mut CycleReport,
    guard: &Snapshot,
    cycle: u64,
    executor: &mut impl PhaseExecutor,
    reason: String,
) {
    tracing::error!(cycle, %reason, "the agent touched what belongs to the cycle; saving its work and restoring the repository");
    // An attempt the verdict already saved stays the cycle's attempt: it
    // holds the edit; this one only what the agent did to git afterwards.
    let verdict_attempt = report.attempt_ref.take();
    if report.outcome == Some(Outcome::Committed) {
        report.error = Some(reason.clone());
        save_and_roll_back(report, guard, cycle, executor, &reason).await;
    } else {
        fail_and_roll_back(report, guard, cycle, executor, reason).await;
    }
    if let Some(earlier) = verdict_attempt {
        if let (Some(later), Some(error)) = (report.attempt_ref.take(), report.error.as_mut()) {
            error.push_str(&format!(" (saved as {later})"));
        }
        report.attempt_ref = Some(earlier);
    }
}

/// Ends the cycle as failed with `error`, which is also why its work was not
/// kept: saved as an attempt, then rolled back.
async fn fail_and_roll_back(
    report: &mut CycleReport,
    start: &Snapshot,
    cycle: u64,
    executor: &mut impl PhaseExecutor,
    error: String,
) {
    report.outcome = Some(Outcome::Failed);
    report.error = Some(error.clone());
    save_and_roll_back(report, start, cycle, executor, &error).await;
}

/// Saves whatever the cycle changed under `refs/ralph/attempts/<n>` and puts
/// the repository back to the cycle's start (the user's own changes included).
async fn save_and_roll_back(
    report: &mut CycleReport,
    start: &Snapshot,
    cycle: u64,
    executor: &mut impl PhaseExecutor,
    why: &str,
) {
    let title = report.title.clone().unwrap_or_else(|| "attempt".to_owned());
    let message = format!(
        "ralphd: cycle {cycle} attempt (not kept): {title}\n\nWhy it was not kept: {why}\n"
    );
    let (name, email) = executor.git_author();
    let cycle_start = start.clone();
    // Never roll back what could not be saved: save first, record it, then reset.
    // With secret_scan on, no attempt keeps a credential the cycle added,
    // whatever ended the cycle: its lines are masked.
    let scan = executor.secret_scan();
    let saved = executor
        .git(move |repo| {
            let secrets = if scan {
                scan_secrets(repo, &cycle_start)?
            } else {
                None
            };
            let Some(secrets) = secrets else {
                let saved = repo.save_changes(&cycle_start, cycle, &message, &name, &email)?;
                return Ok(saved.map(|reference| (reference, None)));
            };
            let masks = secrets.lines_to_mask();
            let reference =
                repo.save_masked_attempt(&cycle_start, cycle, &message, (&name, &email), &masks)?;
            Ok(Some((reference, Some(secrets))))
        })
        .await;
    let reference = match saved {
        Ok(Some((reference, secrets))) => {
            if let Some(secrets) = secrets {
                tracing::warn!(cycle, attempt = %reference, "the attempt is saved with the credential's lines masked ({secrets})");
            }
            reference
        }
        Ok(None) => return,
        Err(error) => {
            let message = format!(
                "could not save the attempt ({error}); the work tree still holds the cycle's changes"
            );
            tracing::error!(cycle, %message);
            report.error.get_or_insert(message);
            return;
        }
    };
    report.attempt_ref = Some(reference.clone());
    note_in_flight(executor, start, report);
    let cycle_start = start.clone();
    match executor.git(move |repo| repo.rollback(&cycle_start)).await {
        Ok(()) => {
            tracing::info!(cycle, attempt = %reference, "attempt saved and the work tree rolled back to the cycle's start");
        }
        Err(error) => {
            let message = format!(
                "attempt saved as {reference}, but the rollback failed ({error}); the work tree still holds the cycle's changes"
            );
            tracing::error!(cycle, %message);
            report.error.get_or_insert(message);
        }
    }
}

async fn finish_early(
    mut report: CycleReport,
    start: &Snapshot,
    cycle: u64,
    executor: &mut impl PhaseExecutor,
    stop: Stop,
) -> CycleReport {
    let why = match &stop {
        Stop::Cancelled => "the daemon was stopped".to_owned(),
        Stop::Halt(reason) => reason.clone(),
    };
    if report.outcome != Some(Outcome::Committed) {
        save_and_roll_back(&mut report, start, cycle, executor, &why).await;
        report.outcome = Some(match stop {
            Stop::Cancelled => Outcome::Interrupted,
            Stop::Halt(_) => Outcome::Failed,
        });
    }
    report.error.get_or_insert(why);
    report.stop = Some(stop);
    report
}

/// Tells the executor what a restart after a crash must know of the cycle so
/// far: the report, and where to roll back to, its start until its work is
/// committed.
fn note_in_flight(executor: &mut impl PhaseExecutor, start: &Snapshot, report: &CycleReport) {
    let rollback_point = report.commit.is_none().then_some(start);
    executor.save_in_flight(rollback_point, report);
}

/// How long a cycle took, for progress.json.
pub(crate) fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10.0).round() / 10.0
}
