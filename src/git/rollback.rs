//! [`GitRepo::rollback`]: the repository put back as a [`Snapshot`] found it
//! — HEAD on its branch at its commit, tracked files as they were, files the
//! cycle created removed (never ignored ones, never the excluded
//! directories), the user's own changes and index restored byte for byte,
//! each changed submodule rolled back the same way.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{ErrorCode, ObjectType, Oid, Repository};

use crate::git::head::{HeadState, read_head};
use crate::git::snapshot::{SavedFile, Snapshot, UserFile};
use crate::git::{GitRepo, Result, delta_path};

impl GitRepo {
    /// Puts the repository back as it was at cycle start: HEAD on the start
    /// branch at the start commit (unborn again for an unborn start), tracked
    /// files as in the start commit, files created by the cycle removed
    /// (never ignored files, never the excluded directories), then the user's
    /// pre-existing changes restored byte for byte (content and permission
    /// bits; files the user had deleted stay deleted) and the user's index.
    ///
    /// A deleted start branch is recreated; a branch the agent created is left
    /// as it is. Each changed submodule is rolled back to its own start the
    /// same way (a removed submodule work tree is re-attached to its git dir
    /// first).
    ///
    /// Commits the agent made are dropped from the branch: call
    /// [`GitRepo::save_attempt`] first. Rollback is idempotent, so a failed
    /// one (for instance [`GitError::Locked`](crate::git::GitError::Locked))
    /// can simply be retried.
    pub(crate) fn rollback(&self, start: &Snapshot) -> Result<()> {
        const OP: &str = "rollback";
        self.check_index_unlocked(OP)?;
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        self.restore_head(&repo, &start.head).map_err(git_error)?;

        let start_commit_tree = match start.start_commit() {
            Some(oid) => Some(
                repo.find_commit(oid)
                    .and_then(|commit| commit.tree())
                    .map_err(git_error)?,
            ),
            None => None,
        };
        let diff = self.cycle_diff(&repo, OP, start)?;
        let mut to_remove = Vec::new();
        let mut to_checkout = Vec::new();
        for delta in diff.deltas() {
            if !self.counts(&delta) {
                continue;
            }
            let Some(path) = delta_path(&delta) else {
                continue;
            };
            if start.is_user_path(path) {
                continue;
            }
            let tracked_at_start = start_commit_tree
                .as_ref()
                .and_then(|tree| tree.get_path(path).ok())
                .is_some_and(|entry| entry.kind() == Some(ObjectType::Blob));
            if tracked_at_start {
                to_checkout.push(path.to_path_buf());
            } else if delta.new_file().exists() {
                to_remove.push(path.to_path_buf());
            }
        }

        for path in &to_remove {
            if start.ignored_at_start(path) || repo.is_path_ignored(path).map_err(git_error)? {
                continue;
            }
            self.remove_created_file(OP, path)?;
        }
        if let (Some(tree), false) = (&start_commit_tree, to_checkout.is_empty()) {
            let mut checkout = CheckoutBuilder::new();
            checkout.force().disable_pathspec_match(true);
            for path in &to_checkout {
                checkout.path(path.as_path());
            }
            repo.checkout_tree(tree.as_object(), Some(&mut checkout))
                .map_err(git_error)?;
        }
        for file in &start.user_files {
            self.restore_user_file(&repo, OP, file)?;
        }

        let mut index = repo.index().map_err(git_error)?;
        index.read(true).map_err(git_error)?;
        let index_tree = repo.find_tree(start.index_tree).map_err(git_error)?;
        index.read_tree(&index_tree).map_err(git_error)?;
        index.write().map_err(git_error)?;
        for submodule in &start.submodules {
            self.restore_submodule(OP, submodule)?;
        }
        Ok(())
    }

    /// Puts HEAD back on the start branch at the start commit (or detached at
    /// it, or on the unborn branch again).
    fn restore_head(
        &self,
        repo: &Repository,
        start: &HeadState,
    ) -> std::result::Result<(), git2::Error> {
        let current = read_head(repo)?;
        if &current == start {
            return Ok(());
        }
        match start {
            HeadState::Branch { refname, oid } => {
                let name = std::str::from_utf8(refname)
                    .map_err(|_| git2::Error::from_str("the start branch name is not UTF-8"))?;
                if repo.refname_to_id(name).ok() != Some(*oid) {
                    repo.reference(name, *oid, true, "ralphd: rollback")?;
                }
                if !current.is_on(refname) {
                    repo.set_head_bytes(refname)?;
                }
            }
            HeadState::Detached { oid } => repo.set_head_detached(*oid)?,
            HeadState::Unborn { refname } => {
                let name = std::str::from_utf8(refname)
                    .map_err(|_| git2::Error::from_str("the start branch name is not UTF-8"))?;
                match repo.find_reference(name) {
                    Ok(mut reference) => reference.delete()?,
                    Err(error) if error.code() == ErrorCode::NotFound => {}
                    Err(error) => return Err(error),
                }
                if !current.is_on(refname) {
                    repo.set_head_bytes(refname)?;
                }
            }
        }
        Ok(())
    }

    /// Removes a file the cycle created, then the directories that became
    /// empty (never the work tree itself).
    fn remove_created_file(&self, op: &'static str, path: &Path) -> Result<()> {
        let full = self.workdir.join(path);
        match fs::symlink_metadata(&full) {
            Ok(metadata) if metadata.is_dir() => return Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(self.io_error(op, &full, error)),
        }
        fs::remove_file(&full).map_err(|error| self.io_error(op, &full, error))?;
        let mut parent = path.parent();
        while let Some(dir) = parent {
            if dir.as_os_str().is_empty() || self.is_excluded(dir) {
                break;
            }
            if fs::remove_dir(self.workdir.join(dir)).is_err() {
                break;
            }
            parent = dir.parent();
        }
        Ok(())
    }

    /// Writes one of the user's pre-existing changes back, unless the work
    /// tree already holds exactly that.
    fn restore_user_file(
        &self,
        repo: &Repository,
        op: &'static str,
        file: &UserFile,
    ) -> Result<()> {
        let full = self.workdir.join(&file.path);
        let io_error = |error| self.io_error(op, &full, error);
        let metadata = match fs::symlink_metadata(&full) {
            Ok(metadata) => Some(metadata),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error(error)),
        };
        let blob_bytes = |blob: Oid| -> Result<Vec<u8>> {
            Ok(repo
                .find_blob(blob)
                .map_err(|error| self.git_error(op, error))?
                .content()
                .to_vec())
        };
        match &file.saved {
            SavedFile::Absent => {
                if let Some(metadata) = metadata
                    && !metadata.is_dir()
                {
                    fs::remove_file(&full).map_err(io_error)?;
                }
            }
            SavedFile::Regular { blob, permissions } => {
                let contents = blob_bytes(*blob)?;
                if let Some(metadata) = &metadata
                    && metadata.is_file()
                    && metadata.permissions().mode() & 0o7777 == *permissions
                    && fs::read(&full).map_err(io_error)? == contents
                {
                    return Ok(());
                }
                make_room(&full, metadata.as_ref()).map_err(io_error)?;
                fs::write(&full, &contents).map_err(io_error)?;
                fs::set_permissions(&full, fs::Permissions::from_mode(*permissions))
                    .map_err(io_error)?;
            }
            SavedFile::Symlink { blob } => {
                let target = PathBuf::from(OsStr::from_bytes(&blob_bytes(*blob)?));
                if let Some(metadata) = &metadata
                    && metadata.file_type().is_symlink()
                    && fs::read_link(&full).map_err(io_error)? == target
                {
                    return Ok(());
                }
                make_room(&full, metadata.as_ref()).map_err(io_error)?;
                std::os::unix::fs::symlink(&target, &full).map_err(io_error)?;
            }
        }
        Ok(())
    }
}

/// Clears `path` for a file about to be written there: what is there is removed
/// rather than overwritten (it may be read-only, a symlink that must never be
/// written through, or an empty directory), and missing parents are created.
fn make_room(path: &Path, existing: Option<&fs::Metadata>) -> io::Result<()> {
    match existing {
        Some(metadata) if metadata.is_dir() => fs::remove_dir(path)?,
        Some(_) => fs::remove_file(path)?,
        None => {}
    }
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}
