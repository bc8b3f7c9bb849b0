//! The commit of a verified edit as `git commit` would make it: staged, past
//! the repository's `pre-commit` and `commit-msg` hooks, signed when
//! `commit.gpgsign` asks for it. A hook that refuses fails the verification.

use crate::git_rules;
use crate::state::Outcome;

use super::repo::{CycleRepo, ToCommit};
use super::{CycleRun, PhaseExecutor, Stop};

/// What came of the commit hooks.
enum Hooks<S> {
    /// The commit may go on, with what the hooks staged.
    Passed(S),
    /// A hook refused the commit: the reason.
    Refused(String),
    /// ralphd could not run them (a git error).
    Broken(String),
}

/// The staged commit of the executor's repository.
type StagedOf<E> = <<E as PhaseExecutor>::Repo as CycleRepo>::Staged;

impl<E: PhaseExecutor> CycleRun<'_, E> {
    /// Commits the verified edit as `git commit` would: stages it, runs the
    /// repository's `pre-commit` and `commit-msg` hooks (unless `[git]
    /// run_hooks = false`), signs it when `commit.gpgsign` asks for it, then
    /// commits. A hook that refuses fails the verification: the cycle is
    /// rolled back, the attempt saved, and the refusal returned. `Err` only
    /// when the daemon must stop.
    pub(super) async fn commit_verified(
        &mut self,
        message: String,
    ) -> Result<Option<String>, Stop> {
        let cycle = self.input.cycle;
        let (name, email) = self.executor.git_author();
        let run_hooks = self.executor.run_hooks();
        let staged = match self.repo.commit_rules((&name, &email)).await {
            Ok(rules) => {
                let hooks = run_hooks && (rules.pre_commit.is_some() || rules.commit_msg.is_some());
                self.repo
                    .stage_commit(&self.start, hooks)
                    .await
                    .map(|staged| (rules, staged))
            }
            Err(error) => Err(error),
        };
        let start = self.start.clone();
        let (rules, staged, hook_index) = match staged {
            Ok((rules, ToCommit::Ready { staged, hook_index })) => (rules, staged, hook_index),
            Ok((_, ToCommit::AgentCommitted(commit))) => {
                // Recorded with the phase, when the cycle notes its progress.
                self.report.commit = Some(commit.to_string());
                self.kept = Some(Outcome::Committed);
                return Ok(None);
            }
            Ok((_, ToCommit::Nothing)) => {
                // Every change was in files the user had changed before
                // (--allow-dirty): those are never committed. (The gates
                // refuse such a change after code-edit; kept for safety.)
                tracing::warn!(
                    cycle,
                    "the verified change touches only files with the user's own uncommitted changes; nothing was committed"
                );
                self.kept = Some(Outcome::NoChanges);
                return Ok(None);
            }
            Err(error) => {
                self.kept = Some(Outcome::Failed);
                self.fail_and_roll_back(&start, format!("commit failed: {error}"))
                    .await;
                return Ok(None);
            }
        };
        let mut message = message;
        let hooks = self
            .run_commit_hooks(&rules, staged, hook_index, &mut message)
            .await;
        // Also when the daemon stopped a hook: no index file of ralphd's stays.
        if !matches!(hooks, Ok(Hooks::Passed(_))) {
            self.discard_hook_index().await;
        }
        let hooks = hooks?;
        let staged = match hooks {
            Hooks::Passed(staged) => staged,
            Hooks::Refused(refusal) => {
                tracing::warn!(cycle, %refusal, "a git hook refused the commit");
                self.kept = Some(Outcome::RolledBack);
                self.report.error = Some(refusal.clone());
                self.save_and_roll_back(&start, &refusal).await;
                return Ok(Some(refusal));
            }
            Hooks::Broken(error) => {
                self.kept = Some(Outcome::Failed);
                self.fail_and_roll_back(&start, format!("commit failed: {error}"))
                    .await;
                return Ok(None);
            }
        };
        // A restart after a crash between the commit and the note of it
        // knows the commit for the cycle's own by this.
        self.report.committing = Some(self.repo.pending_commit(&staged));
        self.note_in_flight();
        let author = (name.as_str(), email.as_str());
        let committed = match rules.signing {
            None => self
                .repo
                .commit_staged(&staged, &message, author)
                .await
                .map_err(|error| error.to_string()),
            Some(Err(why)) => Err(format!(
                "commit.gpgsign is true, but signing cannot work: {why}"
            )),
            Some(Ok(signing)) => match self.repo.commit_payload(&staged, &message, author).await {
                Err(error) => Err(error.to_string()),
                Ok(payload) => {
                    match self
                        .executor
                        .sign_commit(signing, payload.clone())
                        .await
                        .ok_or(Stop::Cancelled)?
                    {
                        Err(why) => Err(format!("signing failed: {why}")),
                        Ok(signature) => self
                            .repo
                            .commit_signed(&staged, &payload, &signature)
                            .await
                            .map_err(|error| error.to_string()),
                    }
                }
            },
        };
        match committed {
            Ok(commit) => {
                // Recorded with the phase, when the cycle notes its progress.
                self.report.commit = Some(commit.to_string());
                self.kept = Some(Outcome::Committed);
            }
            Err(error) => {
                self.kept = Some(Outcome::Failed);
                self.fail_and_roll_back(&start, format!("commit failed: {error}"))
                    .await;
            }
        }
        Ok(None)
    }

    /// Runs `pre-commit`, then `commit-msg` on a file holding `message`,
    /// which it may rewrite (the rewritten, cleaned message replaces
    /// `message`). Without `hook_index` (no hooks to run) the commit goes on.
    async fn run_commit_hooks(
        &mut self,
        rules: &crate::git::CommitRules,
        staged: StagedOf<E>,
        hook_index: Option<std::path::PathBuf>,
        message: &mut String,
    ) -> Result<Hooks<StagedOf<E>>, Stop> {
        let Some(index) = hook_index else {
            return Ok(Hooks::Passed(staged));
        };
        if let Some(hook) = &rules.pre_commit {
            let run = self
                .executor
                .run_git_hook(hook.clone(), Vec::new(), index.clone())
                .await
                .ok_or(Stop::Cancelled)?;
            if !run.passed() {
                return Ok(Hooks::Refused(git_rules::hook_refusal(&run)));
            }
        }
        if let Some(hook) = &rules.commit_msg {
            let file = match self.repo.write_commit_message(message).await {
                Ok(file) => file,
                Err(error) => return Ok(Hooks::Broken(error.to_string())),
            };
            let run = self
                .executor
                .run_git_hook(hook.clone(), vec![file.into_os_string()], index)
                .await
                .ok_or(Stop::Cancelled)?;
            if !run.passed() {
                return Ok(Hooks::Refused(git_rules::hook_refusal(&run)));
            }
            let rewritten = match self.repo.read_commit_message().await {
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
        match self.repo.after_hooks(staged).await {
            Ok(staged) => Ok(Hooks::Passed(staged)),
            Err(error) => Ok(Hooks::Broken(error.to_string())),
        }
    }

    async fn discard_hook_index(&mut self) {
        if let Err(error) = self.repo.discard_hook_index().await {
            tracing::warn!(%error, "cannot remove ralphd's index file for the hooks");
        }
    }
}
