//! [`Snapshot`]: the repository at one moment of a cycle — HEAD, the whole
//! work tree, the user's index, the user's uncommitted changes byte for byte,
//! the ignored paths and each submodule's own snapshot. Taken at cycle start
//! ([`GitRepo::begin_cycle`]) and after code-edit ([`GitRepo::checkpoint`]); it
//! is the baseline of the diff and what a rollback restores.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::build::TreeUpdateBuilder;
use git2::{FileMode, Oid, Repository, Signature, Status, StatusOptions};
use serde::{Deserialize, Serialize};

use crate::git::head::{HeadState, read_head};
use crate::git::submodule::SubmoduleSnapshot;
use crate::git::{GitError, GitRepo, Result, empty_tree, oid_hex, path_from_bytes};

/// A ref pointing at the user's pre-existing changes of the current cycle, so
/// that `git gc` cannot prune the snapshot blobs and a crash mid-rollback
/// leaves them recoverable (`git checkout refs/ralph/dirty-start -- <path>`).
const DIRTY_START_REF: &str = "refs/ralph/dirty-start";

/// Likewise for the work tree after code-edit ([`GitRepo::checkpoint`]).
const CHECKPOINT_REF: &str = "refs/ralph/checkpoint";

/// The identity of the daemon's own bookkeeping commits (the dirty snapshot).
const BOOKKEEPING_NAME: &str = "ralphd";
const BOOKKEEPING_EMAIL: &str = "ralphd@localhost";

/// The state of the repository before the agent ran, captured by
/// [`GitRepo::begin_cycle`] (or after code-edit, by [`GitRepo::checkpoint`]:
/// "start" in the fields below is then the checkpoint). Only valid for the
/// repo that made it. The cycle's start is kept in `state/in-flight.json`
/// while the cycle runs, so that the start after a crash can save and roll
/// back what the dead daemon's cycle left behind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(super) head: HeadState,
    /// The whole work tree at start (HEAD plus the user's changes, through git's
    /// filters), the baseline of progress and rollback.
    #[serde(with = "oid_hex")]
    pub(super) start_tree: Oid,
    /// The user's index at start, restored by a rollback.
    #[serde(with = "oid_hex")]
    pub(super) index_tree: Oid,
    /// The user's pre-existing changes, byte for byte, sorted by path.
    pub(super) user_files: Vec<UserFile>,
    /// Ignored paths present at start (directories as one entry): a rollback
    /// never removes anything under them, even if the agent changed `.gitignore`.
    pub(super) ignored_at_start: Vec<PathBuf>,
    /// Each checked-out submodule's own start state (empty without submodules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) submodules: Vec<SubmoduleSnapshot>,
}

impl Snapshot {
    /// The start commit, `None` on an unborn branch.
    pub(crate) fn start_commit(&self) -> Option<Oid> {
        self.head.oid()
    }

    /// The branch label at start (`main`, `detached-1a2b3c4`).
    pub(crate) fn branch_label(&self) -> String {
        self.head.label()
    }

    #[cfg(test)]
    /// Paths the user had changed before the cycle (relative to the work tree),
    /// sorted.
    pub(crate) fn user_paths(&self) -> impl Iterator<Item = &Path> {
        self.user_files.iter().map(|file| file.path.as_path())
    }

    pub(super) fn is_user_path(&self, path: &Path) -> bool {
        self.user_files
            .binary_search_by(|file| file.path.as_path().cmp(path))
            .is_ok()
    }

    pub(super) fn ignored_at_start(&self, path: &Path) -> bool {
        self.ignored_at_start
            .iter()
            .any(|ignored| path.starts_with(ignored))
    }
}

/// One path the user had changed before the cycle, as it was then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct UserFile {
    /// Relative to the work tree.
    pub(super) path: PathBuf,
    pub(super) saved: SavedFile,
}

/// How one of the user's pre-existing changes looked at cycle start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum SavedFile {
    /// The path did not exist (the user deleted it).
    Absent,
    /// A regular file: raw bytes (no git filters) and permission bits.
    Regular {
        #[serde(with = "oid_hex")]
        blob: Oid,
        permissions: u32,
    },
    /// A symbolic link: the target's bytes.
    Symlink {
        #[serde(with = "oid_hex")]
        blob: Oid,
    },
}

impl GitRepo {
    /// Captures the state before the agent runs: the start commit and a byte
    /// for byte snapshot of the user's uncommitted changes (empty on a clean
    /// tree). The snapshot's blobs are kept alive by `refs/ralph/dirty-start`.
    pub(crate) fn begin_cycle(&self) -> Result<Snapshot> {
        self.snapshot("snapshot the cycle start", DIRTY_START_REF)
    }

    /// Captures the state after code-edit the same way, every uncommitted
    /// change (the agent's and the user's) counting as one to keep: what later
    /// phases change (the checks, the backtest agent's Bash) can then be undone
    /// with [`Self::rollback`] to this checkpoint, leaving the edit exactly as
    /// it was verified. Pinned by `refs/ralph/checkpoint`.
    pub(crate) fn checkpoint(&self) -> Result<Snapshot> {
        self.snapshot("snapshot the edit", CHECKPOINT_REF)
    }

    /// What [`Self::begin_cycle`] and [`Self::checkpoint`] do (`op` names it
    /// in errors): the user's changed files pinned by `pin_ref`, and each
    /// submodule snapshotted the same way.
    pub(super) fn snapshot(&self, op: &'static str, pin_ref: &str) -> Result<Snapshot> {
        let repo = self.open_repo(op)?;
        let git_error = |error| self.git_error(op, error);
        let head = read_head(&repo).map_err(git_error)?;
        let mut index = repo.index().map_err(git_error)?;
        if index.has_conflicts() {
            return Err(GitError::Conflicted {
                repo: self.workdir.clone(),
                op,
            });
        }
        let index_tree = index.write_tree().map_err(git_error)?;

        let mut options = StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(true)
            .recurse_ignored_dirs(false)
            .exclude_submodules(true);
        let statuses = repo.statuses(Some(&mut options)).map_err(git_error)?;
        let mut user_files = Vec::new();
        let mut ignored_at_start = Vec::new();
        for entry in statuses.iter() {
            let path = path_from_bytes(entry.path_bytes()).to_path_buf();
            if self.is_excluded(&path) {
                continue;
            }
            if entry.status().contains(Status::IGNORED) {
                ignored_at_start.push(path);
                continue;
            }
            if entry.status() == Status::CURRENT {
                continue;
            }
            if let Some(saved) = self.save_user_file(&repo, op, &path)? {
                user_files.push(UserFile { path, saved });
            }
        }
        user_files.sort_by(|left, right| left.path.cmp(&right.path));
        let start_tree = self.worktree_tree(op)?;
        if !user_files.is_empty() {
            self.pin_snapshot(&repo, &head, &user_files, pin_ref)
                .map_err(git_error)?;
        }
        let submodules = self.snapshot_submodules(&index, op, pin_ref)?;
        Ok(Snapshot {
            head,
            start_tree,
            index_tree,
            user_files,
            ignored_at_start,
            submodules,
        })
    }

    /// Reads one of the user's changed paths from disk, raw, into the object
    /// database. Directories (nested repositories) are not snapshotted.
    fn save_user_file(
        &self,
        repo: &Repository,
        op: &'static str,
        path: &Path,
    ) -> Result<Option<SavedFile>> {
        let full = self.workdir.join(path);
        let metadata = match fs::symlink_metadata(&full) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Some(SavedFile::Absent));
            }
            Err(error) => return Err(self.io_error(op, &full, error)),
        };
        if metadata.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(|error| self.io_error(op, &full, error))?;
            let blob = repo
                .blob(target.as_os_str().as_bytes())
                .map_err(|error| self.git_error(op, error))?;
            return Ok(Some(SavedFile::Symlink { blob }));
        }
        if !metadata.is_file() {
            return Ok(None);
        }
        let contents = fs::read(&full).map_err(|error| self.io_error(op, &full, error))?;
        let blob = repo
            .blob(&contents)
            .map_err(|error| self.git_error(op, error))?;
        Ok(Some(SavedFile::Regular {
            blob,
            permissions: metadata.permissions().mode() & 0o7777,
        }))
    }

    /// Points `pin_ref` at a commit holding HEAD's tree with the snapshot's
    /// uncommitted changes applied (raw bytes).
    fn pin_snapshot(
        &self,
        repo: &Repository,
        head: &HeadState,
        user_files: &[UserFile],
        pin_ref: &str,
    ) -> std::result::Result<(), git2::Error> {
        let head_commit = match head.oid() {
            Some(oid) => Some(repo.find_commit(oid)?),
            None => None,
        };
        let base = match &head_commit {
            Some(commit) => commit.tree()?,
            None => empty_tree(repo)?,
        };
        let mut update = TreeUpdateBuilder::new();
        for file in user_files {
            match &file.saved {
                SavedFile::Absent => {
                    if base.get_path(&file.path).is_ok() {
                        update.remove(file.path.as_path());
                    }
                }
                SavedFile::Regular { blob, permissions } => {
                    let mode = if permissions & 0o111 != 0 {
                        FileMode::BlobExecutable
                    } else {
                        FileMode::Blob
                    };
                    update.upsert(file.path.as_path(), *blob, mode);
                }
                SavedFile::Symlink { blob } => {
                    update.upsert(file.path.as_path(), *blob, FileMode::Link);
                }
            }
        }
        let tree = repo.find_tree(update.create_updated(repo, &base)?)?;
        let signature = Signature::now(BOOKKEEPING_NAME, BOOKKEEPING_EMAIL)?;
        let parents: Vec<&git2::Commit<'_>> = head_commit.iter().collect();
        // Each ref says what it holds (docs/design.md §3.4).
        let message = if pin_ref == CHECKPOINT_REF {
            "ralphd: the work tree after code-edit (the edit under verification, uncommitted changes included)\n"
        } else {
            "ralphd: uncommitted changes present at the start of the cycle\n"
        };
        let oid = repo.commit(None, &signature, &signature, message, &tree, &parents)?;
        repo.reference(pin_ref, oid, true, "ralphd: snapshot")?;
        Ok(())
    }
}
