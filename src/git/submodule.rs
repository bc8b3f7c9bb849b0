//! Checked-out submodules, each handled as a repository of its own: its
//! snapshot inside the parent's ([`SubmoduleSnapshot`]), what changed in it,
//! its attempt saved in its own repository, and its rollback (re-attaching a
//! removed work tree to its git dir first). A repository without submodules
//! pays one pass over its index entries.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::git::snapshot::Snapshot;
use crate::git::{GitRepo, Result, path_from_bytes};

/// The index mode of a submodule entry (a gitlink).
const GITLINK_MODE: u32 = 0o160000;

/// A checked-out submodule at cycle start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct SubmoduleSnapshot {
    /// Relative to the parent's work tree.
    path: PathBuf,
    /// The submodule's git dir, to give a removed work tree its repository back.
    git_dir: PathBuf,
    /// The submodule's own state, snapshotted like the parent's.
    start: Snapshot,
}

impl GitRepo {
    /// Snapshots every checked-out submodule (gitlinks of `index` whose work
    /// tree has a repository), recursively. A repository without submodules
    /// pays one pass over the index entries already in memory.
    pub(super) fn snapshot_submodules(
        &self,
        index: &git2::Index,
        op: &'static str,
        pin_ref: &str,
    ) -> Result<Vec<SubmoduleSnapshot>> {
        let mut submodules = Vec::new();
        for entry in index.iter() {
            if entry.mode != GITLINK_MODE {
                continue;
            }
            let path = path_from_bytes(&entry.path).to_path_buf();
            if self.is_excluded(&path) {
                continue;
            }
            let Some(submodule) = self.open_submodule(&path) else {
                continue;
            };
            let git_dir =
                fs::canonicalize(&submodule.git_dir).unwrap_or_else(|_| submodule.git_dir.clone());
            submodules.push(SubmoduleSnapshot {
                start: submodule.snapshot(op, pin_ref)?,
                git_dir,
                path,
            });
        }
        Ok(submodules)
    }

    /// The submodule at `path` (relative), `None` when it is not checked out
    /// (no repository in its work tree).
    fn open_submodule(&self, path: &Path) -> Option<GitRepo> {
        let full = self.workdir.join(path);
        if fs::symlink_metadata(full.join(".git")).is_err() {
            return None;
        }
        GitRepo::open(&full).ok()
    }

    /// The submodules (recursively) whose files or HEAD changed since
    /// `start`, each as `path (what changed)`.
    pub(super) fn changed_submodules(&self, start: &Snapshot) -> Result<Vec<String>> {
        let mut changes = Vec::new();
        for submodule in &start.submodules {
            let label = submodule.path.display();
            let Some(repo) = self.open_submodule(&submodule.path) else {
                changes.push(format!("{label} (its work tree was removed)"));
                continue;
            };
            let mut what = Vec::new();
            if repo.head_state("read HEAD")? != submodule.start.head {
                what.push("HEAD moved");
            }
            if repo.measure_progress(&submodule.start)?.files_changed > 0 {
                what.push("files edited");
            }
            if !what.is_empty() {
                changes.push(format!("{label} ({})", what.join(", ")));
            }
            for nested in repo.changed_submodules(&submodule.start)? {
                changes.push(format!("{label}/{nested}"));
            }
        }
        Ok(changes)
    }

    /// Saves each changed submodule's work in its own repository
    /// ([`Self::save_changes`] there); returns one trailer line per submodule
    /// for the parent's attempt message.
    pub(super) fn save_submodule_attempts(
        &self,
        start: &Snapshot,
        cycle: u64,
        message: &str,
        author_name: &str,
        author_email: &str,
    ) -> Result<String> {
        let mut lines = String::new();
        for submodule in &start.submodules {
            let path = submodule.path.display();
            match self.open_submodule(&submodule.path) {
                Some(repo) => {
                    let saved = repo.save_changes(
                        &submodule.start,
                        cycle,
                        message,
                        author_name,
                        author_email,
                    )?;
                    if let Some(reference) = saved {
                        let _ = writeln!(lines, "Submodule-Attempt: {path} {reference}");
                    }
                }
                None => {
                    let _ = writeln!(lines, "Submodule-Removed: {path}");
                }
            }
        }
        Ok(lines)
    }

    /// Rolls a changed submodule back to its start (an unchanged one is not
    /// touched, so its index keeps its stat cache).
    pub(super) fn restore_submodule(
        &self,
        op: &'static str,
        submodule: &SubmoduleSnapshot,
    ) -> Result<()> {
        let repo = match self.open_submodule(&submodule.path) {
            Some(repo) => repo,
            None => self.reattach_submodule(op, submodule)?,
        };
        if repo.changed_since(&submodule.start)? {
            repo.rollback(&submodule.start)?;
        }
        Ok(())
    }

    /// Gives a submodule whose work tree (or its `.git` file) was removed its
    /// repository back: the directory and a `.git` file pointing at the
    /// submodule's git dir, as `git submodule` writes it. Its files are then
    /// restored by the rollback.
    fn reattach_submodule(
        &self,
        op: &'static str,
        submodule: &SubmoduleSnapshot,
    ) -> Result<GitRepo> {
        let full = self.workdir.join(&submodule.path);
        let gone = |error| self.io_error(op, &submodule.git_dir, error);
        if !submodule.git_dir.is_dir() {
            return Err(gone(io::Error::new(
                io::ErrorKind::NotFound,
                "the submodule's repository is gone; run `git submodule update --init`",
            )));
        }
        fs::create_dir_all(&full).map_err(|error| self.io_error(op, &full, error))?;
        let git_file = full.join(".git");
        let target = relative_path(&full, &submodule.git_dir);
        let contents = format!("gitdir: {}\n", target.display());
        fs::write(&git_file, contents).map_err(|error| self.io_error(op, &git_file, error))?;
        GitRepo::open(&full)
    }
}

/// `to` relative to the directory `from` (both absolute), or `to` itself
/// when they share nothing but the root.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to_parts: Vec<Component<'_>> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(left, right)| left == right)
        .count();
    if common <= 1 {
        return to.to_path_buf();
    }
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for part in &to_parts[common..] {
        relative.push(part.as_os_str());
    }
    relative
}
