//! ralphd's commit of a verified cycle: [`GitRepo::stage_commit`] stages the
//! cycle's work (never the user's pre-existing changes) and, for the hooks,
//! writes exactly the commit's tree to an index of its own; the caller runs
//! the hooks; [`GitRepo::after_hooks`] takes in what they staged; then
//! [`GitRepo::commit_staged`], or signed, [`GitRepo::commit_payload`] and
//! [`GitRepo::commit_signed`]. HEAD must not move meanwhile.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use git2::build::TreeUpdateBuilder;
use git2::{ErrorCode, ObjectType, Oid, Repository, Signature};

use crate::git::head::{HeadState, read_head};
use crate::git::snapshot::Snapshot;
use crate::git::{GitError, GitRepo, Result, delta_path, empty_tree, file_mode};

/// The index file ralphd's hooks run against, in the git dir.
const HOOK_INDEX_FILE: &str = "ralphd-hook-index";

/// What [`GitRepo::stage_commit`] found to commit.
#[derive(Debug)]
pub(crate) enum Staged {
    /// Nothing changed at all.
    Nothing,
    /// The agent committed everything itself: this is HEAD.
    AgentCommitted(Oid),
    Ready(StagedCommit),
}

/// A tree staged for ralphd's commit on HEAD, not committed yet.
#[derive(Clone, Debug)]
pub(crate) struct StagedCommit {
    /// HEAD at staging: the commit's parent, and where HEAD must still be.
    head: HeadState,
    pub(super) tree: Oid,
    /// The index file that holds exactly `tree`, for the hooks.
    hook_index: Option<PathBuf>,
}

impl StagedCommit {
    /// The index file the hooks get as `GIT_INDEX_FILE`, when staged for hooks.
    pub(crate) fn hook_index(&self) -> Option<&Path> {
        self.hook_index.as_deref()
    }

    /// What committing this will make, noted before the commit.
    pub(crate) fn pending(&self) -> PendingCommit {
        PendingCommit {
            parent: self.head.oid().map(|oid| oid.to_string()),
            tree: self.tree.to_string(),
        }
    }
}

/// The commit ralphd is about to make of a verified tree (its parent and
/// tree, full hex), noted in in-flight.json before committing: a restart
/// after a crash before the commit itself is noted keeps HEAD only when HEAD
/// is this commit ([`GitRepo::head_is_pending`]). Whatever its message says:
/// an agent can imitate ralphd's message, and a `commit-msg` hook rewrite it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PendingCommit {
    /// `None` on an unborn branch.
    pub(crate) parent: Option<String>,
    pub(crate) tree: String,
}

impl GitRepo {
    #[cfg(test)]
    /// [`Self::stage_commit`] then [`Self::commit_staged`], no hooks: returns
    /// the new commit; HEAD itself when the agent already committed
    /// everything; `None` when there was nothing at all. An unborn branch gets
    /// its first commit. HEAD moving meanwhile is [`GitError::HeadMoved`].
    pub(crate) fn commit_cycle(
        &self,
        start: &Snapshot,
        message: &str,
        author_name: &str,
        author_email: &str,
    ) -> Result<Option<Oid>> {
        match self.stage_commit(start, false)? {
            Staged::Nothing => Ok(None),
            Staged::AgentCommitted(oid) => Ok(Some(oid)),
            Staged::Ready(staged) => self
                .commit_staged(&staged, message, author_name, author_email)
                .map(Some),
        }
    }

    /// Stages the cycle's work for ralphd's commit, without committing: new,
    /// modified and deleted files (respecting `.gitignore`) go into the index,
    /// except the user's pre-existing changes and the excluded directories,
    /// which stay as they are in the work tree and index; the tree to commit
    /// keeps HEAD's version of the user's paths. [`Staged::AgentCommitted`]
    /// when the agent already committed everything, [`Staged::Nothing`] when
    /// there was nothing at all. With `for_hooks`, also writes that tree to an
    /// index file of its own ([`StagedCommit::hook_index`]) for the hooks'
    /// `GIT_INDEX_FILE`: exactly what will be committed, even when the
    /// user's own staged changes (`--allow-dirty`) stay out of the commit.
    pub(crate) fn stage_commit(&self, start: &Snapshot, for_hooks: bool) -> Result<Staged> {
        const OP: &str = "commit";
        self.check_index_unlocked(OP)?;
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let head = read_head(&repo).map_err(git_error)?;
        let head_commit = match head.oid() {
            Some(oid) => Some(repo.find_commit(oid).map_err(git_error)?),
            None => None,
        };
        let base_tree = match &head_commit {
            Some(commit) => commit.tree().map_err(git_error)?,
            None => empty_tree(&repo).map_err(git_error)?,
        };

        let mut index = repo.index().map_err(git_error)?;
        if index.has_conflicts() {
            return Err(GitError::Conflicted {
                repo: self.workdir.clone(),
                op: OP,
            });
        }
        self.stage_work_tree(&mut index, |path| start.is_user_path(path))
            .map_err(git_error)?;
        let staged_tree = index.write_tree().map_err(git_error)?;

        // The user's paths keep HEAD's version in the commit (their staged
        // changes, if any, stay staged in the index).
        let commit_tree = if start.user_files.is_empty() {
            staged_tree
        } else {
            let staged = repo.find_tree(staged_tree).map_err(git_error)?;
            let mut update = TreeUpdateBuilder::new();
            for file in &start.user_files {
                match base_tree.get_path(&file.path) {
                    Ok(entry) if entry.kind() == Some(ObjectType::Blob) => {
                        update.upsert(file.path.as_path(), entry.id(), file_mode(entry.filemode()));
                    }
                    _ => {
                        if staged.get_path(&file.path).is_ok() {
                            update.remove(file.path.as_path());
                        }
                    }
                }
            }
            update.create_updated(&repo, &staged).map_err(git_error)?
        };
        index.write().map_err(git_error)?;

        if commit_tree == base_tree.id() {
            return Ok(match head.oid() {
                Some(oid) if Some(oid) != start.start_commit() => Staged::AgentCommitted(oid),
                _ => Staged::Nothing,
            });
        }
        let hook_index = if for_hooks {
            let path = self.git_dir.join(HOOK_INDEX_FILE);
            let copied = index.path().map(|real| fs::copy(real, &path));
            if let Some(Err(error)) = copied {
                return Err(self.io_error(OP, &path, error));
            }
            // Entries the real index already has keep their stat data.
            let mut hook_index = git2::Index::open(&path).map_err(git_error)?;
            if copied.is_some() {
                hook_index.read(true).map_err(git_error)?;
            }
            let tree = repo.find_tree(commit_tree).map_err(git_error)?;
            hook_index.read_tree(&tree).map_err(git_error)?;
            hook_index.write().map_err(git_error)?;
            Some(path)
        } else {
            None
        };
        Ok(Staged::Ready(StagedCommit {
            head,
            tree: commit_tree,
            hook_index,
        }))
    }

    /// Takes in what the hooks staged: when they changed their index (a
    /// formatter that `git add`s its work), that index's tree is what gets
    /// committed, and the same entries are staged in the real index. Removes
    /// the hooks' index file.
    pub(crate) fn after_hooks(&self, mut staged: StagedCommit) -> Result<StagedCommit> {
        const OP: &str = "commit";
        let Some(path) = staged.hook_index.take() else {
            return Ok(staged);
        };
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let mut hook_index = git2::Index::open(&path).map_err(git_error)?;
        hook_index.read(true).map_err(git_error)?;
        if hook_index.has_conflicts() {
            return Err(GitError::Conflicted {
                repo: self.workdir.clone(),
                op: OP,
            });
        }
        let tree = hook_index.write_tree_to(&repo).map_err(git_error)?;
        if tree != staged.tree {
            let old = repo.find_tree(staged.tree).map_err(git_error)?;
            let new = repo.find_tree(tree).map_err(git_error)?;
            let diff = repo
                .diff_tree_to_tree(Some(&old), Some(&new), None)
                .map_err(git_error)?;
            let mut index = repo.index().map_err(git_error)?;
            for delta in diff.deltas() {
                let Some(changed) = delta_path(&delta) else {
                    continue;
                };
                match hook_index.get_path(changed, 0) {
                    Some(entry) => index.add(&entry).map_err(git_error)?,
                    None => index.remove_path(changed).map_err(git_error)?,
                }
            }
            index.write().map_err(git_error)?;
            staged.tree = tree;
        }
        self.discard_hook_index()?;
        Ok(staged)
    }

    /// Writes `message` to `<git dir>/COMMIT_EDITMSG`, where git keeps the
    /// message of the commit in progress, for the `commit-msg` hook; returns
    /// the file.
    pub(crate) fn write_commit_message(&self, message: &str) -> Result<PathBuf> {
        let path = self.git_dir.join("COMMIT_EDITMSG");
        fs::write(&path, message).map_err(|error| self.io_error("commit", &path, error))?;
        Ok(path)
    }

    /// The message in `<git dir>/COMMIT_EDITMSG`, as the `commit-msg` hook
    /// left it (lossily converted to UTF-8).
    pub(crate) fn read_commit_message(&self) -> Result<String> {
        let path = self.git_dir.join("COMMIT_EDITMSG");
        let bytes = fs::read(&path).map_err(|error| self.io_error("commit", &path, error))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Removes the hooks' index file, if any (after a failed hook).
    pub(crate) fn discard_hook_index(&self) -> Result<()> {
        let path = self.git_dir.join(HOOK_INDEX_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(self.io_error("commit", &path, error)),
        }
    }

    /// Commits what [`Self::stage_commit`] staged, unsigned, on HEAD (which
    /// must not have moved meanwhile: else [`GitError::HeadMoved`]).
    pub(crate) fn commit_staged(
        &self,
        staged: &StagedCommit,
        message: &str,
        author_name: &str,
        author_email: &str,
    ) -> Result<Oid> {
        const OP: &str = "commit";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        self.check_head_unmoved(&repo, OP, staged)?;
        let parent = match staged.head.oid() {
            Some(oid) => Some(repo.find_commit(oid).map_err(git_error)?),
            None => None,
        };
        let tree = repo.find_tree(staged.tree).map_err(git_error)?;
        let signature = Signature::now(author_name, author_email).map_err(git_error)?;
        self.commit_on_head(&repo, OP, &signature, message, &tree, parent.as_ref())
    }

    /// The raw commit object [`Self::commit_signed`] will write, for the
    /// signing program to sign.
    pub(crate) fn commit_payload(
        &self,
        staged: &StagedCommit,
        message: &str,
        author_name: &str,
        author_email: &str,
    ) -> Result<String> {
        const OP: &str = "commit";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let parent = match staged.head.oid() {
            Some(oid) => Some(repo.find_commit(oid).map_err(git_error)?),
            None => None,
        };
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let tree = repo.find_tree(staged.tree).map_err(git_error)?;
        let signature = Signature::now(author_name, author_email).map_err(git_error)?;
        let buffer = repo
            .commit_create_buffer(&signature, &signature, message, &tree, &parents)
            .map_err(git_error)?;
        String::from_utf8(buffer.to_vec()).map_err(|_| {
            self.git_error(
                OP,
                git2::Error::from_str("the commit is not valid UTF-8 and cannot be signed"),
            )
        })
    }

    /// Writes `payload` ([`Self::commit_payload`]) with its `signature` as a
    /// commit, then moves HEAD's branch (or a detached HEAD) to it, provided it
    /// is still where it was at staging, else [`GitError::HeadMoved`].
    pub(crate) fn commit_signed(
        &self,
        staged: &StagedCommit,
        payload: &str,
        signature: &str,
    ) -> Result<Oid> {
        const OP: &str = "commit";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        self.check_head_unmoved(&repo, OP, staged)?;
        let oid = repo
            .commit_signed(payload, signature, Some("gpgsig"))
            .map_err(git_error)?;
        let summary = repo
            .find_commit(oid)
            .ok()
            .map(|commit| {
                String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned()
            })
            .unwrap_or_default();
        let moved = |error: git2::Error| match error.code() {
            ErrorCode::Modified | ErrorCode::Exists => GitError::HeadMoved {
                repo: self.workdir.clone(),
                op: OP,
            },
            _ => self.git_error(OP, error),
        };
        match &staged.head {
            HeadState::Branch {
                refname,
                oid: parent,
            } => {
                let name = std::str::from_utf8(refname).map_err(|_| {
                    git_error(git2::Error::from_str("the branch name is not UTF-8"))
                })?;
                repo.reference_matching(name, oid, true, *parent, &format!("commit: {summary}"))
                    .map_err(moved)?;
            }
            HeadState::Unborn { refname } => {
                let name = std::str::from_utf8(refname).map_err(|_| {
                    git_error(git2::Error::from_str("the branch name is not UTF-8"))
                })?;
                repo.reference(name, oid, false, &format!("commit (initial): {summary}"))
                    .map_err(moved)?;
            }
            HeadState::Detached { .. } => repo.set_head_detached(oid).map_err(git_error)?,
        }
        Ok(oid)
    }

    /// [`GitError::HeadMoved`] unless HEAD is exactly as it was at staging.
    fn check_head_unmoved(
        &self,
        repo: &Repository,
        op: &'static str,
        staged: &StagedCommit,
    ) -> Result<()> {
        if read_head(repo).map_err(|error| self.git_error(op, error))? != staged.head {
            return Err(GitError::HeadMoved {
                repo: self.workdir.clone(),
                op,
            });
        }
        Ok(())
    }

    /// Commits on HEAD, which must still be at `parent` (libgit2 checks the
    /// tip under the ref lock), else [`GitError::HeadMoved`].
    pub(super) fn commit_on_head(
        &self,
        repo: &Repository,
        op: &'static str,
        signature: &Signature<'_>,
        message: &str,
        tree: &git2::Tree<'_>,
        parent: Option<&git2::Commit<'_>>,
    ) -> Result<Oid> {
        let parents: Vec<&git2::Commit<'_>> = parent.into_iter().collect();
        match repo.commit(Some("HEAD"), signature, signature, message, tree, &parents) {
            Ok(oid) => Ok(oid),
            Err(error) if error.code() == ErrorCode::Modified => Err(GitError::HeadMoved {
                repo: self.workdir.clone(),
                op,
            }),
            Err(error) => Err(self.git_error(op, error)),
        }
    }
}

impl GitRepo {
    /// HEAD's commit (full hex) when it is the commit `pending` notes: its
    /// only parent is the noted parent (none on an unborn branch) and its
    /// tree the noted tree. Parent and tree are enough: the tree is the one
    /// verified, and no agent runs between the note and the commit.
    pub(crate) fn head_is_pending(&self, pending: &PendingCommit) -> Result<Option<String>> {
        const OP: &str = "read HEAD";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let Some(oid) = read_head(&repo).map_err(git_error)?.oid() else {
            return Ok(None);
        };
        let commit = repo.find_commit(oid).map_err(git_error)?;
        let parents: Vec<String> = commit.parent_ids().map(|id| id.to_string()).collect();
        let is_pending = parents == pending.parent.iter().cloned().collect::<Vec<_>>()
            && commit.tree_id().to_string() == pending.tree;
        Ok(is_pending.then(|| oid.to_string()))
    }
}
