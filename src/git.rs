//! The git safety net: typed, synchronous wrappers over git2 for the start
//! checks, the per-cycle snapshot, progress measurement, commit, saved attempts
//! and rollback (docs/design.md §6).
//!
//! Every call blocks: the daemon runs them inside `spawn_blocking`. [`GitRepo`]
//! holds only paths and is `Send + Sync + Clone`; each call opens its own
//! `git2::Repository` (cheap), so no git2 state is shared between threads. This
//! module never spawns `git` and knows nothing of the agent, the state files or
//! the guards.
//!
//! The cycle protocol: [`GitRepo::begin_cycle`] before the agent runs records a
//! [`Snapshot`]; afterwards [`GitRepo::measure_progress`],
//! [`GitRepo::changed_files`], [`GitRepo::scan_added_lines`] and
//! [`GitRepo::diff_summary`] describe the cycle's work, and the cycle ends with
//! either a commit — [`GitRepo::stage_commit`], the hooks (run by the caller),
//! [`GitRepo::after_hooks`], then [`GitRepo::commit_staged`] or, signed,
//! [`GitRepo::commit_payload`] and [`GitRepo::commit_signed`] — or
//! [`GitRepo::save_attempt`] (masked: [`GitRepo::save_masked_attempt`])
//! followed by [`GitRepo::rollback`]. [`GitRepo::commit_rules`] reads which
//! hooks and which signing the repository's config asks for.
//!
//! While a cycle runs the repository is the cycle's (docs/design.md §14):
//! [`GitRepo::trespasses`] finds what the agent may not do — leave or delete
//! the cycle's branch, take commits off it (reset, amend, rebase), change a
//! submodule — and the saved attempt and the rollback cover all of it: the
//! start branch is restored at its start commit and each submodule's work is
//! saved in the submodule's own repository, then rolled back the same way.
//!
//! Paths the user had changed before the cycle started (`--allow-dirty`) are
//! snapshotted byte for byte at cycle start, are the baseline for progress,
//! are never committed by the daemon and are restored exactly by a rollback.
//! Paths under the excluded home directories ([`GitRepo::ensure_excluded`])
//! are never counted, committed, restored or removed.
//!
//! This file holds [`GitRepo`], [`GitError`] and the small helpers every
//! operation shares. Each operation has a file of its own under `git/`:
//!
//! - `start_checks`: what the daemon checks before it touches the repository
//!   (dirty and stray paths, an unfinished git operation) and the home's
//!   directories kept out of git.
//! - `head`: where HEAD points and the branch's label.
//! - `snapshot`: [`Snapshot`], taken at cycle start and after code-edit.
//! - `diff`: what the cycle changed: [`DiffStats`], the summary for the
//!   backtest prompt, the changed files and the added lines for the gates.
//! - `commit`: staging, the hooks' index, unsigned and signed commits;
//!   `commit_rules`: which hooks and which signing git's config asks for.
//! - `attempt`: a failed cycle's work saved under `refs/ralph/attempts/`
//!   (masked when it holds a secret), and the list of them.
//! - `rollback`: the repository put back as a snapshot found it.
//! - `trespass`: what the agent did that a cycle may not do.
//! - `submodule`: each checked-out submodule, snapshotted, checked, saved and
//!   rolled back as a repository of its own.
//! - `tests`: the shared test `Fixture`; each file's tests are in
//!   `tests/<file>.rs`.

mod attempt;
mod commit;
mod commit_rules;
mod diff;
mod head;
mod rollback;
mod snapshot;
mod start_checks;
mod submodule;
mod trespass;

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use git2::{
    ErrorCode, FileMode, IndexAddOption, IndexMatchedPath, Oid, Repository, RepositoryOpenFlags,
};

pub(crate) use crate::git::attempt::Attempt;
pub(crate) use crate::git::commit::{PendingCommit, Staged, StagedCommit};
pub(crate) use crate::git::commit_rules::{CommitRules, Signing, SigningFormat};
pub(crate) use crate::git::diff::{ChangedFile, DiffStats};
pub(crate) use crate::git::snapshot::Snapshot;
pub(crate) use crate::git::trespass::Trespass;

/// A failed git operation. Every variant names the repository and the
/// operation; `Locked` and `HeadMoved` are transient (fail this cycle, retry
/// the next one).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    #[error("{} is not a git work tree{hint}", .path.display())]
    NotAWorkTree { path: PathBuf, hint: String },
    #[error(
        "git {op} in {}: the repository is locked by another git process ({detail})",
        .repo.display()
    )]
    Locked {
        repo: PathBuf,
        op: &'static str,
        detail: String,
    },
    #[error("git {op} in {}: HEAD moved while the daemon was updating it", .repo.display())]
    HeadMoved { repo: PathBuf, op: &'static str },
    #[error(
        "git {op} in {}: the index has unresolved merge conflicts; resolve or abort the merge first",
        .repo.display()
    )]
    Conflicted { repo: PathBuf, op: &'static str },
    #[error("git {op} in {}: {}", .repo.display(), .error.message())]
    Git {
        repo: PathBuf,
        op: &'static str,
        error: git2::Error,
    },
    #[error("git {op} in {}: {}: {error}", .repo.display(), .file.display())]
    Io {
        repo: PathBuf,
        op: &'static str,
        file: PathBuf,
        error: io::Error,
    },
}

impl GitError {
    #[cfg(test)]
    /// True for errors that another git process caused and that the next
    /// cycle may not see again.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, GitError::Locked { .. } | GitError::HeadMoved { .. })
    }
}

type Result<T, E = GitError> = std::result::Result<T, E>;

/// A git work tree the daemon improves. Holds paths only; every call opens
/// the repository afresh.
#[derive(Clone, Debug)]
pub(crate) struct GitRepo {
    /// The top of the work tree, canonical, without a trailing slash.
    workdir: PathBuf,
    /// The git dir (`.git`, or `.git/worktrees/<name>` for a linked worktree).
    git_dir: PathBuf,
    /// The common git dir (holds `info/exclude`).
    common_dir: PathBuf,
    /// Directories relative to `workdir` that the daemon never counts,
    /// commits, restores or removes (the home's state, archive and logs).
    excluded: Vec<PathBuf>,
}

impl GitRepo {
    /// Opens the work tree whose top directory is `path`. A directory inside
    /// a work tree, a bare repository or no repository at all is an error that
    /// names the path.
    pub(crate) fn open(path: &Path) -> Result<GitRepo> {
        let repo = match Repository::open_ext(
            path,
            RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&OsStr>(),
        ) {
            Ok(repo) => repo,
            Err(error) if error.code() == ErrorCode::NotFound => {
                let hint = match Repository::discover(path) {
                    _ if !path.is_dir() => String::from(
                        " (no such directory; check the --repo path or git.repo in ralph.toml)",
                    ),
                    Ok(outer) => match outer.workdir() {
                        Some(top) => format!(
                            " (it lies inside the work tree {}; pass that directory as --repo)",
                            top.display()
                        ),
                        None => String::from(" (run `git init` there)"),
                    },
                    Err(_) => String::from(" (run `git init` there)"),
                };
                return Err(GitError::NotAWorkTree {
                    path: path.to_path_buf(),
                    hint,
                });
            }
            Err(error) => {
                return Err(GitError::Git {
                    repo: path.to_path_buf(),
                    op: "open",
                    error,
                });
            }
        };
        let Some(workdir) = repo.workdir() else {
            return Err(GitError::NotAWorkTree {
                path: path.to_path_buf(),
                hint: String::from(" (it is a bare repository)"),
            });
        };
        let workdir = fs::canonicalize(workdir).map_err(|error| GitError::Io {
            repo: path.to_path_buf(),
            op: "open",
            file: workdir.to_path_buf(),
            error,
        })?;
        Ok(GitRepo {
            workdir,
            git_dir: repo.path().to_path_buf(),
            common_dir: repo.commondir().to_path_buf(),
            excluded: Vec::new(),
        })
    }

    #[cfg(test)]
    /// The top of the work tree (canonical).
    pub(crate) fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The git dir, where `HEAD` lives (what the HEAD watcher watches).
    pub(crate) fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    fn open_repo(&self, op: &'static str) -> Result<Repository> {
        Repository::open_ext(
            &self.workdir,
            RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&OsStr>(),
        )
        .map_err(|error| self.git_error(op, error))
    }

    fn git_error(&self, op: &'static str, error: git2::Error) -> GitError {
        if error.code() == ErrorCode::Locked {
            return GitError::Locked {
                repo: self.workdir.clone(),
                op,
                detail: error.message().to_owned(),
            };
        }
        GitError::Git {
            repo: self.workdir.clone(),
            op,
            error,
        }
    }

    fn io_error(&self, op: &'static str, file: &Path, error: io::Error) -> GitError {
        GitError::Io {
            repo: self.workdir.clone(),
            op,
            file: file.to_path_buf(),
            error,
        }
    }

    /// Fails with [`GitError::Locked`] while another process holds the index
    /// lock, before anything is changed. Never removes the lock.
    fn check_index_unlocked(&self, op: &'static str) -> Result<()> {
        let lock = self.git_dir.join("index.lock");
        if lock.exists() {
            return Err(GitError::Locked {
                repo: self.workdir.clone(),
                op,
                detail: format!("{} exists", lock.display()),
            });
        }
        Ok(())
    }

    fn is_excluded(&self, path: &Path) -> bool {
        self.excluded.iter().any(|dir| path.starts_with(dir))
    }

    /// Paths `add_all` must skip: the excluded directories, and untracked
    /// nested repositories (reported as `dir/`, which libgit2 refuses to add).
    fn skip_when_staging(&self, path: &Path) -> bool {
        path.as_os_str().as_bytes().ends_with(b"/") || self.is_excluded(path)
    }

    /// The tree of every non-ignored file in the work tree, as `git add -A`
    /// would stage it, outside the excluded directories. Uses a private
    /// in-memory index: the user's index file is not written.
    fn worktree_tree(&self, op: &'static str) -> Result<Oid> {
        let repo = self.open_repo(op)?;
        let git_error = |error| self.git_error(op, error);
        let mut index = repo.index().map_err(git_error)?;
        self.stage_work_tree(&mut index, |_| false)
            .map_err(git_error)?;
        index.write_tree().map_err(git_error)
    }

    /// Stages every new, modified and deleted file of the work tree into
    /// `index` (respecting `.gitignore`), except what
    /// [`Self::skip_when_staging`] or `also_skip` leaves out.
    fn stage_work_tree(
        &self,
        index: &mut git2::Index,
        also_skip: impl Fn(&Path) -> bool,
    ) -> std::result::Result<(), git2::Error> {
        let mut skip = |path: &Path, _: &[u8]| -> i32 {
            i32::from(self.skip_when_staging(path) || also_skip(path))
        };
        index.add_all(
            ["*"],
            IndexAddOption::DEFAULT,
            Some(&mut skip as &mut IndexMatchedPath),
        )?;
        index.update_all(["*"], Some(&mut skip as &mut IndexMatchedPath))
    }
}

/// Object ids as hex strings in JSON.
mod oid_hex {
    use git2::Oid;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(oid: &Oid, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(oid)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Oid, D::Error> {
        let text = String::deserialize(deserializer)?;
        Oid::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// The empty tree, the parent tree of a root commit.
fn empty_tree(repo: &Repository) -> std::result::Result<git2::Tree<'_>, git2::Error> {
    let oid = repo.treebuilder(None)?.write()?;
    repo.find_tree(oid)
}

/// The path a delta touches: its new side's, else its old side's.
fn delta_path<'a>(delta: &git2::DiffDelta<'a>) -> Option<&'a Path> {
    delta.new_file().path().or_else(|| delta.old_file().path())
}

/// A tree entry's raw mode as a [`FileMode`] (a plain blob when unknown).
fn file_mode(raw: i32) -> FileMode {
    match raw {
        0o100755 => FileMode::BlobExecutable,
        0o120000 => FileMode::Link,
        0o160000 => FileMode::Commit,
        0o040000 => FileMode::Tree,
        _ => FileMode::Blob,
    }
}

fn path_from_bytes(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// The abbreviated hash, as `git log --oneline` shows it.
fn short_hex(oid: Oid) -> String {
    let mut hex = oid.to_string();
    hex.truncate(7);
    hex
}
