//! A scripted [`PhaseExecutor`] for the cycle's unit tests (`cycle/tests.rs`):
//! it plays back what each phase answers (result text, failure or stop, and
//! its cost), what the checks and the `pre-commit` hook say, and what the
//! repository answers ([`ScriptedRepo`]: changes or none, gates, trespass,
//! staging and commit), and records what the cycle did — the phases it ran,
//! the prompts' contexts, the git operations, the in-flight notes — without
//! an agent, a process or a repository.
//!
//! Snapshots are labels: `start`, then `checkpoint 1`, `checkpoint 2`, … in
//! the order the cycle takes them. The work tree is the list of phases whose
//! changes it holds (code-edit's, and those of [`RepoScript::writes_in`]); a
//! snapshot remembers how long that list was, a rollback cuts it back, a
//! commit empties it.

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use git2::Oid;

use crate::agent::classify::PhaseFailure;
use crate::agent::{PhaseOutcome, PhaseRun};
use crate::checks::CheckResult;
use crate::config::GateSettings;
use crate::gates::Violation;
use crate::git::{ChangedFile, CommitRules, DiffStats, GitError, Signing, Trespass};
use crate::phase::Phase;
use crate::prompt::{PromptContext, StoryBrief};

use super::repo::{CycleRepo, ToCommit};
use super::{CycleEnd, CycleInput, CycleReport, PhaseExecutor, Stop};

/// The commit ralphd makes in a script.
pub(super) const COMMIT: &str = "c0ffee0000000000000000000000000000000000";
/// The commit the agent made itself in a script.
pub(super) const AGENT_COMMIT: &str = "a9e4700000000000000000000000000000000000";

/// A successful result text that declares completion.
pub(super) const COMPLETE: &str = "All done.\n<promise>COMPLETE</promise>";

/// What the agent answers in one phase.
#[derive(Clone)]
pub(super) enum Answer {
    /// A successful run with this result text.
    Text(String),
    /// A failed run, with this failure.
    Failure(String),
    /// The daemon must stop while the phase runs.
    Stop(Stop),
}

/// The backtest's answer with a verdict block.
pub(super) fn verdict(verdict: &str, reason: &str) -> Answer {
    Answer::Text(format!(
        "Looked at the diff.\n```json\n{{\"verdict\":\"{verdict}\",\"reason\":\"{reason}\"}}\n```"
    ))
}

/// The report's answer with a report block naming `story` as passing, and
/// completion when `complete`.
pub(super) fn report_passing(story: &str, complete: bool) -> Answer {
    let marker = if complete { COMPLETE } else { "" };
    Answer::Text(format!(
        "Done.\n```json\n{{\"summary\":\"closed {story}\",\"learnings\":[],\"patterns\":[],\"story\":{{\"id\":\"{story}\",\"passes\":true}}}}\n```\n{marker}"
    ))
}

/// A check (or hook) that ran to `exit`.
pub(super) fn check(command: &str, exit: i32, output: &str) -> CheckResult {
    CheckResult {
        command: command.to_owned(),
        exit_code: Some(exit),
        timed_out: false,
        output_tail: output.to_owned(),
        output: output.to_owned(),
        duration: std::time::Duration::from_millis(1200),
    }
}

/// What a cycle was given to play, and what it did.
pub(super) struct Script {
    input: CycleInput,
    answers: Vec<(Phase, Answer)>,
    costs: Vec<(Phase, f64)>,
    stop_before: Option<(Phase, Stop)>,
    /// `None`: the daemon is stopped while the checks run.
    checks: Option<Vec<CheckResult>>,
    /// What the `pre-commit` hook says, when the repository has one.
    pre_commit: Option<CheckResult>,
    /// `[gates] secret_scan`, as the daemon answers it.
    secret_scan: bool,
    repo: ScriptedRepo,
    ran: Vec<Phase>,
    contexts: Vec<(Phase, PromptContext)>,
    in_flight: Vec<InFlightNote>,
}

/// One [`PhaseExecutor::save_in_flight`] call.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct InFlightNote {
    pub(super) rollback_point: Option<String>,
    pub(super) commit: Option<String>,
    /// The tree of the commit about to be made.
    pub(super) committing: Option<String>,
    pub(super) attempt_ref: Option<String>,
}

/// What a played cycle did.
pub(super) struct Played {
    pub(super) end: CycleEnd,
    pub(super) report: CycleReport,
    /// The phases the agent was started for, in order.
    pub(super) ran: Vec<Phase>,
    /// The prompt context of each phase run.
    pub(super) contexts: Vec<(Phase, PromptContext)>,
    /// The repository operations that change or pin something, in order
    /// (`rollback to start`, `save since start`, `commit`, …).
    pub(super) git: Vec<String>,
    pub(super) in_flight: Vec<InFlightNote>,
}

impl Played {
    /// Where the last rollback went, if the cycle rolled back.
    pub(super) fn rolled_back_to(&self) -> Option<&str> {
        self.git
            .iter()
            .rev()
            .find_map(|operation| operation.strip_prefix("rollback to "))
    }

    /// The prompt context `phase` was rendered with.
    pub(super) fn context(&self, phase: Phase) -> &PromptContext {
        match self.contexts.iter().find(|(ran, _)| *ran == phase) {
            Some((_, context)) => context,
            None => panic!("{phase} did not run"),
        }
    }
}

impl Default for Script {
    /// A cycle that goes well: every phase succeeds, code-edit changes one
    /// file, no checks, the agent's verdict is pass, the commit is made.
    fn default() -> Script {
        Script {
            input: CycleInput {
                cycle: 7,
                repo: PathBuf::from("/work/repo"),
                branch: "main".to_owned(),
                learnings: Vec::new(),
                patterns: Vec::new(),
                recent_outcomes: Vec::new(),
                open_stories: Vec::new(),
                auto_commit: true,
                checks_configured: false,
                allow_dirty: false,
                home: PathBuf::from("/work/home"),
                gates: GateSettings::default(),
            },
            answers: vec![
                (Phase::Scan, Answer::Text("The parser is slow.".to_owned())),
                (
                    Phase::Idea,
                    Answer::Text("TITLE: Cache the parsed config".to_owned()),
                ),
                (Phase::CodeEdit, Answer::Text("Added a cache.".to_owned())),
                (Phase::Backtest, verdict("pass", "the cache works")),
                (
                    Phase::Report,
                    Answer::Text(
                        "```json\n{\"summary\":\"cached the config\",\"learnings\":[\"caches help\"],\"patterns\":[]}\n```"
                            .to_owned(),
                    ),
                ),
            ],
            costs: Vec::new(),
            stop_before: None,
            checks: Some(Vec::new()),
            pre_commit: None,
            secret_scan: false,
            repo: ScriptedRepo::default(),
            ran: Vec::new(),
            contexts: Vec::new(),
            in_flight: Vec::new(),
        }
    }
}

impl Script {
    /// `phase` answers `answer`.
    pub(super) fn answer(mut self, phase: Phase, answer: Answer) -> Script {
        self.answers.retain(|(scripted, _)| *scripted != phase);
        self.answers.push((phase, answer));
        self
    }

    /// `phase` succeeds with `text`.
    pub(super) fn text(self, phase: Phase, text: &str) -> Script {
        self.answer(phase, Answer::Text(text.to_owned()))
    }

    /// `phase` fails with `failure`.
    pub(super) fn fail(self, phase: Phase, failure: &str) -> Script {
        self.answer(phase, Answer::Failure(failure.to_owned()))
    }

    /// Each run of `phase` costs `usd` (0.25 unless scripted).
    pub(super) fn cost(mut self, phase: Phase, usd: f64) -> Script {
        self.costs.push((phase, usd));
        self
    }

    /// The daemon must stop just before `phase` (`before_phase` refuses).
    pub(super) fn stop_before(mut self, phase: Phase, stop: Stop) -> Script {
        self.stop_before = Some((phase, stop));
        self
    }

    /// `[backtest] checks` are configured and give `results`.
    pub(super) fn checks(mut self, results: Vec<CheckResult>) -> Script {
        self.input.checks_configured = true;
        self.checks = Some(results);
        self
    }

    /// The daemon is stopped while the checks run.
    pub(super) fn checks_cancelled(mut self) -> Script {
        self.input.checks_configured = true;
        self.checks = None;
        self
    }

    /// prd.json has these open stories.
    pub(super) fn open_stories(mut self, ids: &[&str]) -> Script {
        self.input.open_stories = ids
            .iter()
            .map(|id| StoryBrief {
                id: (*id).to_owned(),
                title: format!("story {id}"),
                description: String::new(),
                acceptance_criteria: Vec::new(),
                priority: None,
            })
            .collect();
        self
    }

    /// `[git] auto_commit`.
    pub(super) fn auto_commit(mut self, auto_commit: bool) -> Script {
        self.input.auto_commit = auto_commit;
        self
    }

    /// The `[gates]` settings.
    pub(super) fn gates(mut self, gates: GateSettings) -> Script {
        self.input.gates = gates;
        self
    }

    /// The repository has a `pre-commit` hook that gives `result`.
    pub(super) fn pre_commit(mut self, result: CheckResult) -> Script {
        self.repo.with(|repo| repo.pre_commit_hook = true);
        self.pre_commit = Some(result);
        self
    }

    /// The repository has a `pre-commit` hook, and the daemon is stopped
    /// while it runs.
    pub(super) fn pre_commit_cancelled(mut self) -> Script {
        self.repo.with(|repo| repo.pre_commit_hook = true);
        self.pre_commit = None;
        self
    }

    /// Scripts the repository's answers.
    pub(super) fn repo(self, script: impl FnOnce(&mut RepoScript)) -> Script {
        self.repo.with(script);
        self
    }

    /// Runs the cycle through the script.
    pub(super) fn play(mut self) -> Played {
        // The cycle borrows its input while the script is the executor.
        let input = std::mem::replace(&mut self.input, Script::default().input);
        self.secret_scan = input.gates.secret_scan;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
        let (end, report) = runtime.block_on(super::run(&input, &mut self));
        let git = self.repo.with(|repo| std::mem::take(&mut repo.log));
        Played {
            end,
            report,
            ran: self.ran,
            contexts: self.contexts,
            git,
            in_flight: self.in_flight,
        }
    }

    fn answer_of(&self, phase: Phase) -> Answer {
        self.answers
            .iter()
            .find(|(scripted, _)| *scripted == phase)
            .map(|(_, answer)| answer.clone())
            .unwrap_or_else(|| Answer::Text(format!("{phase} done")))
    }
}

impl PhaseExecutor for Script {
    type Repo = ScriptedRepo;

    async fn run_phase(
        &mut self,
        phase: Phase,
        _cycle: u64,
        _prompt: String,
    ) -> Result<PhaseRun, Stop> {
        self.ran.push(phase);
        let cost_usd = self
            .costs
            .iter()
            .find(|(scripted, _)| *scripted == phase)
            .map_or(0.25, |(_, usd)| *usd);
        let answer = self.answer_of(phase);
        self.repo.with(|repo| repo.phase_ran(phase));
        let outcome = match answer {
            Answer::Text(result_text) => PhaseOutcome::Succeeded { result_text },
            Answer::Failure(failure) => PhaseOutcome::Failed {
                failure: PhaseFailure::ErrorResult {
                    text: failure.clone(),
                },
                message: failure,
            },
            Answer::Stop(stop) => return Err(stop),
        };
        Ok(PhaseRun {
            outcome,
            session_id: Some(format!("session-{phase}")),
            cost_usd,
            tokens: Default::default(),
            turns: 3,
            permission_denials: Vec::new(),
            duration: std::time::Duration::from_millis(1500),
            attempts: 1,
            cancelled: false,
        })
    }

    async fn before_phase(&mut self, phase: Phase) -> Result<(), Stop> {
        match &self.stop_before {
            Some((before, stop)) if *before == phase => Err(stop.clone()),
            _ => Ok(()),
        }
    }

    fn render_prompt(&mut self, phase: Phase, context: PromptContext) -> String {
        self.contexts.push((phase, context));
        format!("the {phase} prompt")
    }

    async fn run_checks(&mut self) -> Option<Vec<CheckResult>> {
        self.checks.clone()
    }

    fn repo(&self) -> ScriptedRepo {
        self.repo.clone()
    }

    fn git_author(&self) -> (String, String) {
        ("ralphd".to_owned(), "ralphd@example.com".to_owned())
    }

    fn save_in_flight(&mut self, rollback_point: Option<&String>, report: &CycleReport) {
        self.in_flight.push(InFlightNote {
            rollback_point: rollback_point.cloned(),
            commit: report.commit.clone(),
            committing: report
                .committing
                .as_ref()
                .map(|pending| pending.tree.clone()),
            attempt_ref: report.attempt_ref.clone(),
        });
    }

    fn run_hooks(&self) -> bool {
        true
    }

    fn secret_scan(&self) -> bool {
        self.secret_scan
    }

    fn stop_signal(&self) -> Option<&'static str> {
        None
    }

    async fn run_git_hook(
        &mut self,
        _hook: PathBuf,
        _args: Vec<OsString>,
        _index_file: PathBuf,
    ) -> Option<CheckResult> {
        self.pre_commit.clone()
    }

    async fn sign_commit(
        &mut self,
        _signing: Signing,
        _payload: String,
    ) -> Option<Result<String, String>> {
        Some(Err("no signing in a script".to_owned()))
    }
}

/// The repository's side of a script, shared between the script and the
/// cycle's handle on it.
#[derive(Clone, Default)]
pub(super) struct ScriptedRepo(Rc<RefCell<RepoScript>>);

impl ScriptedRepo {
    fn with<T>(&self, change: impl FnOnce(&mut RepoScript) -> T) -> T {
        change(&mut self.0.borrow_mut())
    }
}

/// What the repository answers, and what it went through.
pub(super) struct RepoScript {
    /// Changes in the tree that ralphd did not start with.
    pub(super) stray: Vec<String>,
    pub(super) begin_cycle_fails: bool,
    /// The files code-edit changes (none: `no_changes`).
    pub(super) edit: Vec<ChangedFile>,
    /// Other phases whose agent leaves files changed (a backtest's Bash, a
    /// report that edits).
    pub(super) writes_in: Vec<Phase>,
    /// What the secret scan finds in the edit.
    pub(super) secret: Option<Violation>,
    /// After which phase's run the agent has trespassed (deleted the branch).
    pub(super) trespass_after: Option<Phase>,
    /// `trespasses` itself fails.
    pub(super) trespass_check_fails: bool,
    /// What staging finds.
    pub(super) staging: Staging,
    /// Git refuses ralphd's commit.
    pub(super) commit_fails: bool,
    pre_commit_hook: bool,
    /// The phases whose changes the work tree holds, not committed.
    tree: Vec<Phase>,
    /// Each snapshot taken, with the length of `tree` then.
    snapshots: Vec<(String, usize)>,
    /// The agent did something a cycle may not do since the last rollback.
    trespassed: bool,
    saves: usize,
    log: Vec<String>,
}

/// What [`RepoScript::staging`] finds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Staging {
    Ready,
    /// Every change is in the user's own files.
    Nothing,
    /// The agent committed everything itself.
    AgentCommitted,
    Fails,
}

impl Default for RepoScript {
    fn default() -> RepoScript {
        RepoScript {
            stray: Vec::new(),
            begin_cycle_fails: false,
            edit: vec![changed_file("src/config.rs", 12)],
            writes_in: Vec::new(),
            secret: None,
            trespass_after: None,
            trespass_check_fails: false,
            staging: Staging::Ready,
            commit_fails: false,
            pre_commit_hook: false,
            tree: Vec::new(),
            snapshots: Vec::new(),
            trespassed: false,
            saves: 0,
            log: Vec::new(),
        }
    }
}

/// A changed file with `lines` added lines.
pub(super) fn changed_file(path: &str, lines: usize) -> ChangedFile {
    ChangedFile {
        path: PathBuf::from(path),
        insertions: lines,
        deletions: 0,
        user_had_changed: false,
    }
}

/// A git error as `op` would give it.
fn git_error(op: &'static str) -> GitError {
    GitError::Git {
        repo: PathBuf::from("/work/repo"),
        op,
        error: git2::Error::from_str("scripted failure"),
    }
}

fn oid(hex: &str) -> Oid {
    Oid::from_str(hex).expect("a scripted commit id")
}

impl RepoScript {
    /// What a phase run did to the tree.
    fn phase_ran(&mut self, phase: Phase) {
        // The agent edits before it answers, fails or is stopped.
        let writes = match phase {
            Phase::CodeEdit => !self.edit.is_empty(),
            _ => self.writes_in.contains(&phase),
        };
        if writes {
            self.tree.push(phase);
        }
        if self.trespass_after == Some(phase) {
            self.trespassed = true;
        }
    }

    /// Takes a snapshot of the tree as it is now.
    fn snapshot(&mut self, label: String) -> String {
        self.snapshots.push((label.clone(), self.tree.len()));
        label
    }

    /// The phases whose changes came after `snapshot`.
    fn changed_since(&self, snapshot: &str) -> &[Phase] {
        let taken = self
            .snapshots
            .iter()
            .find(|(label, _)| label == snapshot)
            .map_or(0, |(_, length)| *length);
        self.tree.get(taken..).unwrap_or_default()
    }

    fn progress_since(&self, snapshot: &str) -> DiffStats {
        let files: Vec<ChangedFile> = self
            .changed_since(snapshot)
            .iter()
            .flat_map(|phase| match phase {
                Phase::CodeEdit => self.edit.clone(),
                other => vec![changed_file(&format!("{other}.out"), 1)],
            })
            .collect();
        DiffStats {
            files_changed: files.len(),
            insertions: files.iter().map(|file| file.insertions).sum(),
            deletions: files.iter().map(|file| file.deletions).sum(),
            agent_commits: 0,
        }
    }
}

impl CycleRepo for ScriptedRepo {
    type Snapshot = String;
    type Staged = &'static str;

    async fn stray_paths(&mut self, _home: &Path, limit: usize) -> Result<Vec<String>, GitError> {
        self.with(|repo| Ok(repo.stray.iter().take(limit).cloned().collect()))
    }

    async fn begin_cycle(&mut self) -> Result<String, GitError> {
        self.with(|repo| {
            if repo.begin_cycle_fails {
                return Err(git_error("begin the cycle"));
            }
            Ok(repo.snapshot("start".to_owned()))
        })
    }

    async fn checkpoint(&mut self) -> Result<String, GitError> {
        self.with(|repo| {
            let label = format!("checkpoint {}", repo.snapshots.len());
            repo.log.push(label.clone());
            Ok(repo.snapshot(label))
        })
    }

    async fn measure_progress(&mut self, start: &String) -> Result<DiffStats, GitError> {
        self.with(|repo| Ok(repo.progress_since(start)))
    }

    async fn changed_files(&mut self, _start: &String) -> Result<Vec<ChangedFile>, GitError> {
        self.with(|repo| Ok(repo.edit.clone()))
    }

    async fn scan_secrets(&mut self, _start: &String) -> Result<Option<Violation>, GitError> {
        self.with(|repo| Ok(repo.secret.clone().filter(|_| !repo.tree.is_empty())))
    }

    async fn diff_summary(
        &mut self,
        _start: &String,
        _max_bytes: usize,
    ) -> Result<String, GitError> {
        self.with(|repo| {
            repo.log.push("diff summary".to_owned());
            Ok(" src/config.rs | 12 ++++++++++++".to_owned())
        })
    }

    async fn trespasses(&mut self, _guard: &String) -> Result<Vec<Trespass>, GitError> {
        self.with(|repo| {
            if repo.trespass_check_fails {
                return Err(git_error("check the branch"));
            }
            if !repo.trespassed {
                return Ok(Vec::new());
            }
            Ok(vec![Trespass::DeletedBranch {
                branch: "main".to_owned(),
            }])
        })
    }

    async fn save_attempt(
        &mut self,
        start: &String,
        cycle: u64,
        _message: &str,
        _author: (&str, &str),
        secret_scan: bool,
    ) -> Result<Option<String>, GitError> {
        let secrets = if secret_scan {
            self.scan_secrets(start).await?
        } else {
            None
        };
        self.with(|repo| {
            if let Some(secrets) = secrets {
                let masked: Vec<String> = secrets
                    .lines_to_mask()
                    .iter()
                    .map(|(path, lines)| format!("{}:{lines:?}", path.display()))
                    .collect();
                repo.log
                    .push(format!("save since {start} masking {}", masked.join(" ")));
                repo.saves += 1;
                return Ok(Some(format!("refs/ralph/attempts/{cycle}")));
            }
            if repo.changed_since(start).is_empty() && !repo.trespassed {
                return Ok(None);
            }
            repo.log.push(format!("save since {start}"));
            repo.saves += 1;
            Ok(Some(match repo.saves {
                1 => format!("refs/ralph/attempts/{cycle}"),
                n => format!("refs/ralph/attempts/{cycle}-{n}"),
            }))
        })
    }

    async fn rollback(&mut self, to: &String) -> Result<(), GitError> {
        self.with(|repo| {
            repo.log.push(format!("rollback to {to}"));
            let kept = repo.tree.len() - repo.changed_since(to).len();
            repo.tree.truncate(kept);
            repo.trespassed = false;
            Ok(())
        })
    }

    async fn commit_rules(&mut self, _committer: (&str, &str)) -> Result<CommitRules, GitError> {
        self.with(|repo| {
            Ok(CommitRules {
                pre_commit: repo
                    .pre_commit_hook
                    .then(|| PathBuf::from("/work/repo/.git/hooks/pre-commit")),
                commit_msg: None,
                signing: None,
            })
        })
    }

    async fn stage_commit(
        &mut self,
        _start: &String,
        for_hooks: bool,
    ) -> Result<ToCommit<&'static str>, GitError> {
        self.with(|repo| match repo.staging {
            Staging::Ready => Ok(ToCommit::Ready {
                staged: "staged tree",
                hook_index: for_hooks.then(|| PathBuf::from("/work/repo/.git/ralphd-hook-index")),
            }),
            Staging::Nothing => Ok(ToCommit::Nothing),
            Staging::AgentCommitted => {
                repo.tree.clear();
                Ok(ToCommit::AgentCommitted(oid(AGENT_COMMIT)))
            }
            Staging::Fails => Err(git_error("stage the commit")),
        })
    }

    async fn write_commit_message(&mut self, _message: &str) -> Result<PathBuf, GitError> {
        Ok(PathBuf::from("/work/repo/.git/COMMIT_EDITMSG"))
    }

    async fn read_commit_message(&mut self) -> Result<String, GitError> {
        Ok("ralphd: cycle 7: Cache the parsed config".to_owned())
    }

    async fn after_hooks(&mut self, staged: &'static str) -> Result<&'static str, GitError> {
        Ok(staged)
    }

    async fn discard_hook_index(&mut self) -> Result<(), GitError> {
        self.with(|repo| {
            repo.log.push("discard the hooks' index".to_owned());
            Ok(())
        })
    }

    fn pending_commit(&self, staged: &&'static str) -> crate::git::PendingCommit {
        crate::git::PendingCommit {
            parent: None,
            tree: (*staged).to_owned(),
        }
    }

    async fn commit_staged(
        &mut self,
        _staged: &&'static str,
        message: &str,
        _author: (&str, &str),
    ) -> Result<Oid, GitError> {
        self.with(|repo| {
            if repo.commit_fails {
                return Err(git_error("commit"));
            }
            repo.log.push(format!("commit {message:?}"));
            repo.tree.clear();
            Ok(oid(COMMIT))
        })
    }

    async fn commit_payload(
        &mut self,
        _staged: &&'static str,
        _message: &str,
        _author: (&str, &str),
    ) -> Result<String, GitError> {
        Err(git_error("build the commit to sign"))
    }

    async fn commit_signed(
        &mut self,
        _staged: &&'static str,
        _payload: &str,
        _signature: &str,
    ) -> Result<Oid, GitError> {
        Err(git_error("commit signed"))
    }
}
