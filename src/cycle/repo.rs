//! The git operations a cycle runs, as a trait with one method each, so that
//! the cycle's rules can be tested against a script (`cycle/script.rs`), and
//! [`LiveRepo`], which runs each of them on the real repository through
//! [`GitRepo`] on a blocking thread (git2 calls block).
//!
//! The cycle never looks inside a snapshot or a staged commit: they are the
//! trait's associated types.

use std::path::{Path, PathBuf};

use git2::Oid;

use crate::gates::{Found, SecretScan, Violation};
use crate::git::{
    self, ChangedFile, CommitRules, DiffStats, GitError, GitRepo, PendingCommit, Staged,
    StagedCommit, Trespass,
};

/// What staging found to commit ([`Staged`], with the staged tree opaque).
pub(crate) enum ToCommit<S> {
    /// Nothing of the change can be committed (every changed file held the
    /// user's own changes).
    Nothing,
    /// The agent committed everything itself: this is HEAD.
    AgentCommitted(Oid),
    /// A tree staged for ralphd's commit, and the index file the hooks get.
    Ready {
        staged: S,
        hook_index: Option<PathBuf>,
    },
}

/// The repository as a cycle uses it. Each method is the [`GitRepo`] method
/// of the same name (the secret scan feeds [`GitRepo::scan_added_lines`] to
/// a [`SecretScan`]).
pub(crate) trait CycleRepo {
    /// The repository at one moment ([`git::Snapshot`]): where a rollback goes.
    type Snapshot: Clone;
    /// A tree staged for ralphd's commit ([`StagedCommit`]).
    type Staged;

    /// Dirty paths other than the home's steering files, at most `limit`.
    async fn stray_paths(&mut self, home: &Path, limit: usize) -> Result<Vec<String>, GitError>;
    async fn begin_cycle(&mut self) -> Result<Self::Snapshot, GitError>;
    /// Snapshots the work tree as it is now, like a cycle start.
    async fn checkpoint(&mut self) -> Result<Self::Snapshot, GitError>;
    async fn measure_progress(&mut self, start: &Self::Snapshot) -> Result<DiffStats, GitError>;
    async fn changed_files(&mut self, start: &Self::Snapshot)
    -> Result<Vec<ChangedFile>, GitError>;
    /// The secret scan over every line added since `start` (the work tree's
    /// diff and the agent's own commits).
    async fn scan_secrets(&mut self, start: &Self::Snapshot)
    -> Result<Option<Violation>, GitError>;
    async fn diff_summary(
        &mut self,
        start: &Self::Snapshot,
        max_bytes: usize,
    ) -> Result<String, GitError>;
    /// What the agent did to the repository that a cycle may not do.
    async fn trespasses(&mut self, guard: &Self::Snapshot) -> Result<Vec<Trespass>, GitError>;
    /// Saves what changed since `start` as an attempt, with the lines that
    /// hold a credential masked when `secret_scan` is on
    /// ([`save_attempt_masking_secrets`]); `None` when nothing changed.
    async fn save_attempt(
        &mut self,
        start: &Self::Snapshot,
        cycle: u64,
        message: &str,
        author: (&str, &str),
        secret_scan: bool,
    ) -> Result<Option<String>, GitError>;
    async fn rollback(&mut self, to: &Self::Snapshot) -> Result<(), GitError>;
    async fn commit_rules(&mut self, committer: (&str, &str)) -> Result<CommitRules, GitError>;
    async fn stage_commit(
        &mut self,
        start: &Self::Snapshot,
        for_hooks: bool,
    ) -> Result<ToCommit<Self::Staged>, GitError>;
    /// Writes the message file the `commit-msg` hook gets.
    async fn write_commit_message(&mut self, message: &str) -> Result<PathBuf, GitError>;
    async fn read_commit_message(&mut self) -> Result<String, GitError>;
    /// Takes in what the hooks staged.
    async fn after_hooks(&mut self, staged: Self::Staged) -> Result<Self::Staged, GitError>;
    async fn discard_hook_index(&mut self) -> Result<(), GitError>;
    /// What committing `staged` will make ([`StagedCommit::pending`]).
    fn pending_commit(&self, staged: &Self::Staged) -> PendingCommit;
    async fn commit_staged(
        &mut self,
        staged: &Self::Staged,
        message: &str,
        author: (&str, &str),
    ) -> Result<Oid, GitError>;
    /// The commit object to sign.
    async fn commit_payload(
        &mut self,
        staged: &Self::Staged,
        message: &str,
        author: (&str, &str),
    ) -> Result<String, GitError>;
    async fn commit_signed(
        &mut self,
        staged: &Self::Staged,
        payload: &str,
        signature: &str,
    ) -> Result<Oid, GitError>;
}

/// The secret scan ([`SecretScan`]) over every line added since `start`:
/// the work tree's diff and the agent's own commits.
pub(crate) fn scan_secrets(
    repo: &GitRepo,
    start: &git::Snapshot,
) -> Result<Option<Violation>, GitError> {
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

/// Saves what changed since `start` as an attempt, every attempt the same
/// way, whether a cycle or crash recovery saves it: with `secret_scan` on
/// (`[gates] secret_scan`), the lines that hold a credential are masked
/// ([`GitRepo::save_masked_attempt`]), so no attempt keeps one; otherwise
/// [`GitRepo::save_changes`]. Returns the attempt's ref, `None` when nothing
/// changed.
pub(crate) fn save_attempt_masking_secrets(
    repo: &GitRepo,
    start: &git::Snapshot,
    cycle: u64,
    message: &str,
    (name, email): (&str, &str),
    secret_scan: bool,
) -> Result<Option<String>, GitError> {
    let secrets = if secret_scan {
        scan_secrets(repo, start)?
    } else {
        None
    };
    let Some(secrets) = secrets else {
        return repo.save_changes(start, cycle, message, name, email);
    };
    let reference = repo.save_masked_attempt(
        start,
        cycle,
        message,
        (name, email),
        &secrets.lines_to_mask(),
    )?;
    tracing::warn!(cycle, attempt = %reference, "the attempt is saved with the credential's lines masked ({secrets})");
    Ok(Some(reference))
}

/// The real repository: each operation runs on a blocking thread.
pub(crate) struct LiveRepo {
    repo: GitRepo,
}

impl LiveRepo {
    pub(crate) fn new(repo: GitRepo) -> LiveRepo {
        LiveRepo { repo }
    }

    /// Runs `operation` off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&GitRepo) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        let repo = self.repo.clone();
        off_thread(move || operation(&repo)).await
    }
}

/// Runs blocking work (git2, file walks) on tokio's blocking pool and waits
/// for it; a panic in it goes on in the caller, as if it had run here.
pub(crate) async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic.into_panic()),
    }
}

impl CycleRepo for LiveRepo {
    type Snapshot = git::Snapshot;
    type Staged = StagedCommit;

    async fn stray_paths(&mut self, home: &Path, limit: usize) -> Result<Vec<String>, GitError> {
        let home = home.to_path_buf();
        self.blocking(move |repo| repo.stray_paths(&home, limit))
            .await
    }

    async fn begin_cycle(&mut self) -> Result<git::Snapshot, GitError> {
        self.blocking(|repo| repo.begin_cycle()).await
    }

    async fn checkpoint(&mut self) -> Result<git::Snapshot, GitError> {
        self.blocking(|repo| repo.checkpoint()).await
    }

    async fn measure_progress(&mut self, start: &git::Snapshot) -> Result<DiffStats, GitError> {
        let start = start.clone();
        self.blocking(move |repo| repo.measure_progress(&start))
            .await
    }

    async fn changed_files(&mut self, start: &git::Snapshot) -> Result<Vec<ChangedFile>, GitError> {
        let start = start.clone();
        self.blocking(move |repo| repo.changed_files(&start)).await
    }

    async fn scan_secrets(&mut self, start: &git::Snapshot) -> Result<Option<Violation>, GitError> {
        let start = start.clone();
        self.blocking(move |repo| scan_secrets(repo, &start)).await
    }

    async fn diff_summary(
        &mut self,
        start: &git::Snapshot,
        max_bytes: usize,
    ) -> Result<String, GitError> {
        let start = start.clone();
        self.blocking(move |repo| repo.diff_summary(&start, max_bytes))
            .await
    }

    async fn trespasses(&mut self, guard: &git::Snapshot) -> Result<Vec<Trespass>, GitError> {
        let guard = guard.clone();
        self.blocking(move |repo| repo.trespasses(&guard)).await
    }

    async fn save_attempt(
        &mut self,
        start: &git::Snapshot,
        cycle: u64,
        message: &str,
        author: (&str, &str),
        secret_scan: bool,
    ) -> Result<Option<String>, GitError> {
        let start = start.clone();
        let message = message.to_owned();
        let (name, email) = (author.0.to_owned(), author.1.to_owned());
        self.blocking(move |repo| {
            save_attempt_masking_secrets(
                repo,
                &start,
                cycle,
                &message,
                (&name, &email),
                secret_scan,
            )
        })
        .await
    }

    async fn rollback(&mut self, to: &git::Snapshot) -> Result<(), GitError> {
        let to = to.clone();
        self.blocking(move |repo| repo.rollback(&to)).await
    }

    async fn commit_rules(&mut self, committer: (&str, &str)) -> Result<CommitRules, GitError> {
        let (name, email) = (committer.0.to_owned(), committer.1.to_owned());
        self.blocking(move |repo| repo.commit_rules((&name, &email)))
            .await
    }

    async fn stage_commit(
        &mut self,
        start: &git::Snapshot,
        for_hooks: bool,
    ) -> Result<ToCommit<StagedCommit>, GitError> {
        let start = start.clone();
        let staged = self
            .blocking(move |repo| repo.stage_commit(&start, for_hooks))
            .await?;
        Ok(match staged {
            Staged::Nothing => ToCommit::Nothing,
            Staged::AgentCommitted(commit) => ToCommit::AgentCommitted(commit),
            Staged::Ready(staged) => ToCommit::Ready {
                hook_index: staged.hook_index().map(Path::to_path_buf),
                staged,
            },
        })
    }

    async fn write_commit_message(&mut self, message: &str) -> Result<PathBuf, GitError> {
        let message = message.to_owned();
        self.blocking(move |repo| repo.write_commit_message(&message))
            .await
    }

    async fn read_commit_message(&mut self) -> Result<String, GitError> {
        self.blocking(|repo| repo.read_commit_message()).await
    }

    async fn after_hooks(&mut self, staged: StagedCommit) -> Result<StagedCommit, GitError> {
        self.blocking(move |repo| repo.after_hooks(staged)).await
    }

    async fn discard_hook_index(&mut self) -> Result<(), GitError> {
        self.blocking(|repo| repo.discard_hook_index()).await
    }

    fn pending_commit(&self, staged: &StagedCommit) -> PendingCommit {
        staged.pending()
    }

    async fn commit_staged(
        &mut self,
        staged: &StagedCommit,
        message: &str,
        author: (&str, &str),
    ) -> Result<Oid, GitError> {
        let staged = staged.clone();
        let message = message.to_owned();
        let (name, email) = (author.0.to_owned(), author.1.to_owned());
        self.blocking(move |repo| repo.commit_staged(&staged, &message, &name, &email))
            .await
    }

    async fn commit_payload(
        &mut self,
        staged: &StagedCommit,
        message: &str,
        author: (&str, &str),
    ) -> Result<String, GitError> {
        let staged = staged.clone();
        let message = message.to_owned();
        let (name, email) = (author.0.to_owned(), author.1.to_owned());
        self.blocking(move |repo| repo.commit_payload(&staged, &message, &name, &email))
            .await
    }

    async fn commit_signed(
        &mut self,
        staged: &StagedCommit,
        payload: &str,
        signature: &str,
    ) -> Result<Oid, GitError> {
        let staged = staged.clone();
        let payload = payload.to_owned();
        let signature = signature.to_owned();
        self.blocking(move |repo| repo.commit_signed(&staged, &payload, &signature))
            .await
    }
}
