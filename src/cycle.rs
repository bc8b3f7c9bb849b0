//! One cycle: the five phases in order, with the rules that chain them —
//! each phase's prompt sees the earlier outputs, code-edit is measured
//! against the cycle's start and must pass the diff gates, the daemon's checks
//! and the agent's verdict decide between commit and rollback, the commit
//! passes the repository's hooks (and is signed when it asks for that), and
//! the report's story update is applied only to committed work. Completion is
//! accepted here (or refused while prd.json has open stories). After every
//! phase run the repository must still be the cycle's (docs/design.md §14): what the
//! agent did to the branch or a submodule is saved as an attempt and undone.
//!
//! It decides nothing about limits, retries, backoff, waiting or the
//! breaker: running a phase is delegated to a [`PhaseExecutor`], which the
//! daemon implements with its guards, and every git operation to its
//! [`CycleRepo`] (`cycle/repo.rs`). A cycle is a [`CycleRun`] with one method
//! per phase; its end ([`CycleEnd`]) is decided in one place,
//! [`CycleRun::end`]. The commit through git's rules is in `cycle/commit.rs`.
//! The rules are tested in `cycle/tests.rs` through the scripted executor and
//! repository of `cycle/script.rs`.

mod commit;
mod repo;
mod rollback;
#[cfg(test)]
mod script;
#[cfg(test)]
mod tests;
mod verdict;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::agent::{PhaseOutcome, PhaseRun};
use crate::blocks;
use crate::checks::CheckResult;
use crate::config::GateSettings;
use crate::gates::{self, Gates, Violation};
use crate::git::{DiffStats, GitError, Signing};
use crate::phase::Phase;
use crate::prompt::{CheckBrief, PromptContext, StoryBrief};
use crate::record::{AgentVerdict, DecidedBy, DiffStat, Verdict};
use crate::state::{Outcome, PhaseRecord};

pub(crate) use repo::{CycleRepo, LiveRepo, off_thread, save_attempt_masking_secrets};
pub(crate) use verdict::decide;

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
    /// The repository the cycle works on: every git operation of the cycle
    /// goes through it.
    type Repo: CycleRepo;
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
    /// A handle on the repository, taken once per cycle.
    fn repo(&self) -> Self::Repo;
    /// The configured commit author: (name, email).
    fn git_author(&self) -> (String, String);
    /// Keeps what a restart after a crash must know of this cycle: where to
    /// roll it back to (its start, or `None` once its work is committed:
    /// nothing left to undo) and the report so far (phase runs and their
    /// cost, commit, saved attempt, story).
    fn save_in_flight(&mut self, rollback_point: Option<&Snapshot<Self>>, report: &CycleReport);
    /// `[git] run_hooks`: whether the repository's commit hooks run.
    fn run_hooks(&self) -> bool;
    /// `[gates] secret_scan`: whether saved attempts are scanned and masked.
    fn secret_scan(&self) -> bool;
    /// The stop signal received (`SIGTERM`, `SIGINT`), if one was: it names
    /// what interrupted the cycle in its reason.
    fn stop_signal(&self) -> Option<&'static str>;
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

/// The repository at one moment, as the executor's repository takes it.
type Snapshot<E> = <<E as PhaseExecutor>::Repo as CycleRepo>::Snapshot;

/// What the cycle knows before it starts.
pub(crate) struct CycleInput {
    pub(crate) cycle: u64,
    pub(crate) repo: PathBuf,
    pub(crate) branch: String,
    pub(crate) learnings: Vec<String>,
    pub(crate) patterns: Vec<String>,
    /// The last cycles' titles, outcomes and reasons, for the idea prompt.
    pub(crate) recent_outcomes: Vec<String>,
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

/// How a cycle ended: the outcome progress.json records and whether the
/// run goes on. Decided in one place, [`CycleRun::end`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CycleEnd {
    /// The cycle ran to its end and the run goes on: `committed`,
    /// `rolled_back`, `no_changes` or `failed`.
    Ran(Outcome),
    /// The agent declared completion and it was accepted: the run stops once
    /// the cycle is recorded, as `complete` when no edit was verified, else as
    /// what came of the edit.
    Complete(Outcome),
    /// SIGINT/SIGTERM ended the cycle early: exit 130. Recorded `interrupted`,
    /// or `committed` when its work was already committed.
    Interrupted { committed: bool },
    /// A guard refuses to go on (budget spent, breaker open with halt): exit 3
    /// with `reason`. Recorded `failed`, or `committed` when its work was
    /// already committed.
    Halted { reason: String, committed: bool },
}

impl CycleEnd {
    /// The outcome progress.json records.
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            CycleEnd::Ran(outcome) | CycleEnd::Complete(outcome) => *outcome,
            CycleEnd::Interrupted { committed: true }
            | CycleEnd::Halted {
                committed: true, ..
            } => Outcome::Committed,
            CycleEnd::Interrupted { committed: false } => Outcome::Interrupted,
            CycleEnd::Halted {
                committed: false, ..
            } => Outcome::Failed,
        }
    }
}

/// Everything the daemon records about a cycle, so far or finished.
#[derive(Debug, Default)]
pub(crate) struct CycleReport {
    pub(crate) phases: Vec<PhaseRecord>,
    pub(crate) phases_completed: Vec<String>,
    pub(crate) outputs: Vec<(Phase, String)>,
    pub(crate) title: Option<String>,
    pub(crate) commit: Option<String>,
    /// The commit ralphd is about to make, noted before it makes it.
    pub(crate) committing: Option<crate::git::PendingCommit>,
    pub(crate) attempt_ref: Option<String>,
    pub(crate) cost_usd: f64,
    pub(crate) summary: String,
    pub(crate) learnings: Vec<String>,
    pub(crate) patterns: Vec<String>,
    /// A story the report says this cycle made pass (applied only if committed).
    pub(crate) story_passed: Option<String>,
    pub(crate) error: Option<String>,
    /// One line: why the cycle ended as it did (set when it ends).
    pub(crate) reason: Option<String>,
    /// The verdict on the edit, once one was reached.
    pub(crate) verdict: Option<Verdict>,
    /// The backtest checks, with their full output (for `checks.md`).
    pub(crate) checks: Vec<CheckResult>,
    /// The size of code-edit's change, when it made one.
    pub(crate) diff: Option<DiffStat>,
}

impl CycleReport {
    /// The final text of `phase`, empty when it did not finish.
    pub(crate) fn output(&self, phase: Phase) -> String {
        self.outputs
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, text)| text.clone())
            .unwrap_or_default()
    }
}

pub(crate) fn phase_record(phase: Phase, run: &PhaseRun) -> PhaseRecord {
    let (status, error) = match &run.outcome {
        PhaseOutcome::Succeeded { .. } => ("ok", None),
        PhaseOutcome::Failed { message, .. } => ("failed", Some(message.clone())),
    };
    PhaseRecord {
        phase: phase.name().to_owned(),
        status: if run.cancelled { "interrupted" } else { status }.to_owned(),
        duration_ms: u64::try_from(run.duration.as_millis()).unwrap_or(u64::MAX),
        cost_usd: run.cost_usd,
        tokens: run.tokens,
        session_id: run.session_id.clone(),
        turns: run.turns,
        attempts: run.attempts,
        permission_denials: run.permission_denials.clone(),
        error,
    }
}

/// Runs one cycle and says how it ended. Never returns an error for agent or
/// git trouble: those become the cycle's end; only the daemon's stop
/// requests end it early.
pub(crate) async fn run<E: PhaseExecutor>(
    input: &CycleInput,
    executor: &mut E,
) -> (CycleEnd, CycleReport) {
    let mut report = CycleReport::default();
    let mut repo = executor.repo();
    let (start, gates) = match prepare(input, &mut repo).await {
        Ok(ready) => ready,
        Err(error) => {
            report.error = Some(error);
            return (CycleEnd::Ran(Outcome::Failed), report);
        }
    };
    let mut cycle = CycleRun {
        input,
        executor,
        repo,
        report,
        guard: Some(start.clone()),
        start,
        gates,
        completion: false,
        edit: Edit::NotRun,
        kept: None,
        diff_summary: String::new(),
        checks: Vec::new(),
        verdict_text: String::new(),
        running: None,
        completed_in: None,
    };
    cycle.note_in_flight();
    let cut_short = match cycle.phases().await {
        Ok(()) => None,
        Err(CutShort::Stopped(stop)) => Some(cycle.stop(stop).await),
        Err(cut_short) => Some(cut_short),
    };
    let end = cycle.end(cut_short);
    cycle.report.reason = Some(cycle.reason(&end));
    cycle.report.checks = std::mem::take(&mut cycle.checks);
    (end, cycle.report)
}

/// What must hold before a cycle starts: no stray changes in the tree (with
/// `auto_commit`), valid gates, and the start snapshot. `Err` is the reason
/// the cycle fails without starting.
async fn prepare<R: CycleRepo>(
    input: &CycleInput,
    repo: &mut R,
) -> Result<(R::Snapshot, Gates), String> {
    // With auto_commit = false, verified changes stay in the tree on purpose.
    if !input.allow_dirty && input.auto_commit {
        // Changes that appeared since start-up (a rollback that failed, someone
        // editing the repo) must never be snapshotted as the user's and carried on.
        let dirty = repo
            .stray_paths(&input.home, 10)
            .await
            .map_err(|error| error.to_string())?;
        if !dirty.is_empty() {
            let error = format!(
                "the work tree has uncommitted changes that ralphd did not start with ({}); commit, stash or remove them",
                dirty.join(", ")
            );
            tracing::error!(
                cycle = input.cycle,
                error = error.as_str(),
                "cycle not started"
            );
            return Err(error);
        }
    }
    let gates = Gates::new(&input.gates)
        .map_err(|error| format!("invalid gates.protected_paths: {error}"))?;
    let start = repo
        .begin_cycle()
        .await
        .map_err(|error| error.to_string())?;
    Ok((start, gates))
}

/// One cycle while it runs: what it was given, what it has done so far, and
/// what the later phases and the end depend on.
struct CycleRun<'a, E: PhaseExecutor> {
    input: &'a CycleInput,
    executor: &'a mut E,
    repo: E::Repo,
    report: CycleReport,
    /// The repository before the agent ran: where a rollback goes.
    start: Snapshot<E>,
    gates: Gates,
    /// What every phase run must leave the branch and submodules at: the
    /// start, then, once the verdict committed, the verified state (`None` when
    /// that could not be snapshotted: the report's git use is not checked).
    guard: Option<Snapshot<E>>,
    /// The agent declared completion and it was accepted.
    completion: bool,
    /// What code-edit left for the backtest.
    edit: Edit<Snapshot<E>>,
    /// What the verdict (or a gate) made of the edit: `committed`,
    /// `rolled_back`, `no_changes` (nothing of it could be committed) or
    /// `failed` (the commit failed). `None` until decided.
    kept: Option<Outcome>,
    /// The diff as the backtest prompt sees it.
    diff_summary: String,
    checks: Vec<CheckResult>,
    /// `pass: …` / `fail: …`, as the report prompt sees it.
    verdict_text: String,
    /// The step that runs (or ran last): a phase, or the checks before the
    /// backtest; it names what a stop signal interrupted.
    running: Option<&'static str>,
    /// The phase whose completion was accepted.
    completed_in: Option<Phase>,
}

/// What code-edit left for the backtest.
enum Edit<S> {
    /// Code-edit has not run (or was skipped: completion in scan or idea).
    NotRun,
    /// Code-edit changed nothing: outcome `no_changes`.
    Unchanged,
    /// A diff gate refused the change: rolled back, nothing left to verify.
    Refused,
    /// A change to verify, and the work tree as code-edit left it.
    Changed { checkpoint: S },
}

/// Why a cycle ended before its last phase.
enum CutShort {
    /// A phase or a git step failed: a verdict already reached stands.
    Failed,
    /// The agent did to the repository what a cycle may not do: only a
    /// commit already made stands.
    Trespassed,
    /// The daemon must stop.
    Stopped(Stop),
}

impl From<Stop> for CutShort {
    fn from(stop: Stop) -> CutShort {
        CutShort::Stopped(stop)
    }
}

/// What the cycle's edit came to, from [`CycleRun::measure_edit`].
enum Measured<S> {
    Unchanged,
    Refused(Vec<Violation>),
    Changed {
        progress: DiffStats,
        summary: String,
        checkpoint: S,
    },
}

impl<E: PhaseExecutor> CycleRun<'_, E> {
    /// The five phases in order, with their skips.
    async fn phases(&mut self) -> Result<(), CutShort> {
        for phase in Phase::ALL {
            if self.skips(phase) {
                tracing::info!(cycle = self.input.cycle, %phase, "phase skipped");
                continue;
            }
            self.running = Some(phase.name());
            self.executor.before_phase(phase).await?;
            if phase == Phase::Backtest {
                self.running = Some("the backtest checks");
                self.checks = self.executor.run_checks().await.ok_or(Stop::Cancelled)?;
                self.running = Some(phase.name());
            }
            let text = self.run_agent(phase).await?;
            self.consider_completion(phase, &text);
            match phase {
                Phase::Scan => {}
                Phase::Idea => self.report.title = Some(blocks::idea_title(&text)),
                Phase::CodeEdit => self.code_edit().await?,
                Phase::Backtest => self.backtest(&text).await?,
                Phase::Report => apply_report_block(&mut self.report, &text),
            }
            self.note_in_flight();
        }
        Ok(())
    }

    /// Completion in scan or idea skips the edit and so its verification;
    /// completion declared later never skips verifying what was edited. Only
    /// a change that passed the gates is verified.
    fn skips(&self, phase: Phase) -> bool {
        match phase {
            Phase::CodeEdit => self.completion,
            Phase::Backtest => !matches!(self.edit, Edit::Changed { .. }),
            _ => false,
        }
    }

    /// Runs the agent for `phase` and returns its result text. What the
    /// agent did to the repository ends the cycle, and so does a failed run
    /// (an edit not yet judged is saved and rolled back; a verdict already
    /// reached stands: a committed cycle stays committed). A run the daemon
    /// stopped is checked too once the cycle committed (before, the stop
    /// rolls everything back to the start).
    async fn run_agent(&mut self, phase: Phase) -> Result<String, CutShort> {
        let context = self.prompt_context(phase);
        let prompt = self.executor.render_prompt(phase, context);
        let run = match self
            .executor
            .run_phase(phase, self.input.cycle, prompt)
            .await
        {
            Ok(run) => run,
            Err(stop) => {
                if self.kept == Some(Outcome::Committed)
                    && let Some(guard) = self.guard.clone()
                    && let Some(reason) = self.trespass_after(&guard, phase).await
                {
                    self.undo_trespass(&guard, reason).await;
                }
                return Err(stop.into());
            }
        };
        self.report.cost_usd += run.cost_usd;
        self.report.phases.push(phase_record(phase, &run));
        if run.cancelled {
            return Err(Stop::Cancelled.into());
        }
        if let Some(guard) = self.guard.clone()
            && let Some(reason) = self.trespass_after(&guard, phase).await
        {
            self.undo_trespass(&guard, reason).await;
            return Err(CutShort::Trespassed);
        }
        let text = match run.outcome {
            PhaseOutcome::Succeeded { result_text } => result_text,
            PhaseOutcome::Failed {
                message: reason, ..
            } => {
                self.report.error = Some(format!("{phase} failed: {reason}"));
                if phase >= Phase::CodeEdit && self.kept.is_none() {
                    let start = self.start.clone();
                    self.save_and_roll_back(&start, &format!("{phase} failed: {reason}"))
                        .await;
                }
                return Err(CutShort::Failed);
            }
        };
        self.report.phases_completed.push(phase.name().to_owned());
        self.report.outputs.push((phase, text.clone()));
        Ok(text)
    }

    /// What the prompt of `phase` is rendered with: the cycle's input and
    /// the earlier phases' outputs.
    fn prompt_context(&self, phase: Phase) -> PromptContext {
        PromptContext {
            repo: self.input.repo.display().to_string(),
            branch: self.input.branch.clone(),
            cycle: self.input.cycle,
            phase: phase.name().to_owned(),
            learnings: self.input.learnings.clone(),
            patterns: self.input.patterns.clone(),
            recent_outcomes: self.input.recent_outcomes.clone(),
            open_stories: self.input.open_stories.clone(),
            scan: self.report.output(Phase::Scan),
            idea: self.report.output(Phase::Idea),
            code_edit: self.report.output(Phase::CodeEdit),
            diff_summary: self.diff_summary.clone(),
            checks: self.checks.iter().map(check_brief).collect(),
            backtest: self.report.output(Phase::Backtest),
            verdict: self.verdict_text.clone(),
            ..PromptContext::default()
        }
    }

    /// Accepts the completion `phase` declared, or refuses it while prd.json
    /// has open stories (a story the report of a committed cycle marks as
    /// passing counts as closed).
    fn consider_completion(&mut self, phase: Phase, text: &str) {
        if !blocks::is_completion(text) {
            return;
        }
        let newly_passed = (phase == Phase::Report && self.kept == Some(Outcome::Committed))
            .then(|| blocks::parse_report_block(text).ok())
            .flatten()
            .and_then(|block| block.story)
            .filter(|story| story.passes)
            .map(|story| story.id);
        let still_open: Vec<&str> = self
            .input
            .open_stories
            .iter()
            .map(|story| story.id.as_str())
            .filter(|id| Some(*id) != newly_passed.as_deref())
            .collect();
        if still_open.is_empty() {
            tracing::info!(cycle = self.input.cycle, %phase, "the agent declared completion; the run ends after this cycle");
            self.completion = true;
            self.completed_in = Some(phase);
        } else {
            tracing::warn!(cycle = self.input.cycle, %phase, open_stories = %still_open.join(", "),
                "completion refused: prd.json still has stories with passes: false");
        }
    }

    /// After code-edit: no change at all is `no_changes`; a change that
    /// breaks a gate is saved and rolled back; any other is summarised and
    /// checkpointed for the backtest.
    async fn code_edit(&mut self) -> Result<(), CutShort> {
        match self.measure_edit().await {
            Ok(Measured::Unchanged) => {
                tracing::info!(
                    cycle = self.input.cycle,
                    "code-edit changed nothing: outcome no_changes"
                );
                self.edit = Edit::Unchanged;
            }
            Ok(Measured::Refused(violations)) => {
                let reason = gates::reason(&violations);
                for violation in &violations {
                    tracing::warn!(
                        cycle = self.input.cycle,
                        gate = violation.gate(),
                        "diff gate failed: {violation}"
                    );
                }
                self.edit = Edit::Refused;
                self.kept = Some(Outcome::RolledBack);
                self.verdict_text = format!("fail: {reason}");
                let gates: Vec<String> = violations
                    .iter()
                    .map(|violation| format!("gate {violation}"))
                    .collect();
                self.report.verdict = Some(Verdict {
                    pass: false,
                    decided_by: DecidedBy::Gate,
                    agent_verdict: None,
                    reason: gates.join("; "),
                });
                self.report.error = Some(reason.clone());
                // With secret_scan on, the attempt is saved masked.
                let start = self.start.clone();
                self.save_and_roll_back(&start, &reason).await;
            }
            Ok(Measured::Changed {
                progress,
                summary,
                checkpoint,
            }) => {
                tracing::info!(
                    cycle = self.input.cycle,
                    files = progress.files_changed,
                    insertions = progress.insertions,
                    deletions = progress.deletions,
                    agent_commits = progress.agent_commits,
                    "code-edit made progress"
                );
                self.report.diff = Some(DiffStat {
                    files_changed: progress.files_changed,
                    insertions: progress.insertions,
                    deletions: progress.deletions,
                    agent_commits: progress.agent_commits,
                });
                self.edit = Edit::Changed { checkpoint };
                self.diff_summary = summary;
            }
            Err(error) => {
                let start = self.start.clone();
                self.fail_and_roll_back(&start, format!("cannot measure progress: {error}"))
                    .await;
                return Err(CutShort::Failed);
            }
        }
        Ok(())
    }

    /// Measures code-edit's work against the start and, before anything
    /// pins or shows the diff (a secret must reach no ref and no prompt),
    /// checks it against the gates.
    async fn measure_edit(&mut self) -> Result<Measured<Snapshot<E>>, GitError> {
        let progress = self.repo.measure_progress(&self.start).await?;
        if progress.is_empty() {
            return Ok(Measured::Unchanged);
        }
        let violations = self.check_gates().await?;
        if !violations.is_empty() {
            return Ok(Measured::Refused(violations));
        }
        let summary = self
            .repo
            .diff_summary(&self.start, DIFF_SUMMARY_BYTES)
            .await?;
        Ok(Measured::Changed {
            progress,
            summary,
            checkpoint: self.repo.checkpoint().await?,
        })
    }

    /// The diff gates over the cycle's work: the changed files and lines,
    /// the protected paths, the secret scan over every added line, the
    /// agent's own commits included, and (with auto_commit) no change to a
    /// file holding the user's own uncommitted changes (`--allow-dirty`): the
    /// rollback of a refused edit puts those back.
    async fn check_gates(&mut self) -> Result<Vec<Violation>, GitError> {
        let files = self.repo.changed_files(&self.start).await?;
        let mut violations = self.gates.check_changes(
            files
                .iter()
                .map(|file| (file.path.as_path(), file.insertions + file.deletions)),
        );
        if self.gates.scans_secrets() {
            violations.extend(self.repo.scan_secrets(&self.start).await?);
        }
        // With auto_commit = false the tree also holds the earlier cycles'
        // verified work, which a cycle may build on.
        let user_files: Vec<PathBuf> = files
            .iter()
            .filter(|file| self.input.auto_commit && file.user_had_changed)
            .map(|file| file.path.clone())
            .collect();
        if !user_files.is_empty() {
            violations.push(Violation::UserFiles { paths: user_files });
        }
        Ok(violations)
    }

    /// The verdict: exactly code-edit's work is judged (what the checks or
    /// the backtest agent changed is undone first), then committed on a pass
    /// or saved and rolled back on a fail.
    async fn backtest(&mut self, text: &str) -> Result<(), CutShort> {
        if let Edit::Changed { checkpoint } = &self.edit {
            let checkpoint = checkpoint.clone();
            if let Err(error) = self.undo_after_edit(&checkpoint).await {
                let start = self.start.clone();
                self.fail_and_roll_back(
                    &start,
                    format!("cannot restore the edit after backtest: {error}"),
                )
                .await;
                return Err(CutShort::Failed);
            }
        }
        let verdict = decide(text, &self.checks, self.input.checks_configured);
        let (pass, reason) = (verdict.pass, verdict.reason.clone());
        self.verdict_text = format!("{}: {reason}", if pass { "pass" } else { "fail" });
        tracing::info!(cycle = self.input.cycle, pass, decided_by = verdict.decided_by.name(), %reason, "verdict");
        self.report.verdict = Some(verdict);
        if pass {
            let title = self
                .report
                .title
                .clone()
                .unwrap_or_else(|| "improvement".to_owned());
            let message = format!("ralphd: cycle {}: {title}", self.input.cycle);
            if self.input.auto_commit {
                if let Some(refusal) = self.commit_verified(message).await? {
                    self.verdict_text = format!("fail: {refusal}");
                    if let Some(verdict) = self.report.verdict.as_mut() {
                        verdict.pass = false;
                        verdict.decided_by = DecidedBy::Hook;
                        verdict.reason = refusal;
                    }
                }
            } else {
                tracing::info!(
                    cycle = self.input.cycle,
                    "auto_commit = false: the verified change stays uncommitted in the work tree"
                );
                self.kept = Some(Outcome::Committed);
            }
        } else {
            self.kept = Some(Outcome::RolledBack);
            let start = self.start.clone();
            self.save_and_roll_back(&start, &format!("verdict fail: {reason}"))
                .await;
        }
        if self.kept == Some(Outcome::Committed) {
            // The report may not undo what was verified: it is checked
            // against the state after the commit.
            self.guard = match self.repo.checkpoint().await {
                Ok(verified) => Some(verified),
                Err(error) => {
                    tracing::warn!(cycle = self.input.cycle, %error, "cannot snapshot the committed state; the report's git use is not checked");
                    None
                }
            };
        }
        Ok(())
    }

    /// Undoes what changed after code-edit (files the checks or the
    /// backtest agent's Bash wrote, commits it made), so that exactly the
    /// verified edit is committed or saved.
    async fn undo_after_edit(&mut self, checkpoint: &Snapshot<E>) -> Result<(), GitError> {
        let changed = self.repo.measure_progress(checkpoint).await?;
        if changed.is_empty() {
            return Ok(());
        }
        let files = self.repo.changed_files(checkpoint).await?;
        self.repo.rollback(checkpoint).await?;
        let names = changed_names(files.iter().map(|file| file.path.as_path()));
        tracing::warn!(
            cycle = self.input.cycle,
            files = %names,
            commits = changed.agent_commits,
            "the checks or the backtest agent changed {names}; undone, only code-edit's work is kept"
        );
        Ok(())
    }

    /// Tells the executor what a restart after a crash must know of the
    /// cycle so far: the report, and where to roll back to, its start until
    /// its work is committed.
    fn note_in_flight(&mut self) {
        let start = self.start.clone();
        self.note_in_flight_at(&start);
    }

    fn note_in_flight_at(&mut self, rollback_point: &Snapshot<E>) {
        let rollback_point = self.report.commit.is_none().then_some(rollback_point);
        self.executor.save_in_flight(rollback_point, &self.report);
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

/// Paths as a log line names them: `a.txt, b/c.txt` (the first ten, then how
/// many more).
fn changed_names<'p>(paths: impl Iterator<Item = &'p std::path::Path>) -> String {
    const SHOWN: usize = 10;
    let paths: Vec<String> = paths.map(|path| path.display().to_string()).collect();
    let mut names = paths
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOWN {
        names.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    names
}

fn check_brief(check: &CheckResult) -> CheckBrief {
    CheckBrief {
        command: check.command.clone(),
        exit_code: check.exit_code,
        timed_out: check.timed_out,
        output_tail: check.output_tail.clone(),
    }
}

/// How long a cycle took, for progress.json.
pub(crate) fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10.0).round() / 10.0
}
