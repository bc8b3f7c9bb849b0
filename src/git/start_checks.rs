//! What the daemon checks before it touches the repository, and again
//! between cycles: the dirty and the stray paths, an unfinished git operation
//! ([`Operation`]), and the home's `state`, `archive` and `logs` directories
//! kept out of git (`info/exclude`) when the home lies inside the work tree.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use git2::{Status, StatusOptions};

use crate::git::{GitError, GitRepo, Result, path_from_bytes};

/// Home subdirectories kept out of git when the home lies inside the repo.
const HOME_DIRS: [&str; 3] = ["state", "archive", "logs"];

/// A git operation left unfinished in the work tree. The daemon does not
/// start inside one (docs/design.md §14): its commits would land in the middle of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Merge,
    Rebase,
    CherryPick,
    Revert,
    Bisect,
    /// `git am`.
    ApplyMailbox,
}

impl Operation {
    /// What it is called, as in `git status`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Operation::Merge => "merge",
            Operation::Rebase => "rebase",
            Operation::CherryPick => "cherry-pick",
            Operation::Revert => "revert",
            Operation::Bisect => "bisect",
            Operation::ApplyMailbox => "`git am`",
        }
    }

    /// How to finish or abort it.
    pub(crate) fn advice(self) -> &'static str {
        match self {
            Operation::Merge => {
                "resolve the conflicts and finish it with `git merge --continue`, or abort it with `git merge --abort`"
            }
            Operation::Rebase => {
                "finish it with `git rebase --continue`, or abort it with `git rebase --abort`"
            }
            Operation::CherryPick => {
                "finish it with `git cherry-pick --continue`, or abort it with `git cherry-pick --abort`"
            }
            Operation::Revert => {
                "finish it with `git revert --continue`, or abort it with `git revert --abort`"
            }
            Operation::Bisect => "end it with `git bisect reset`",
            Operation::ApplyMailbox => {
                "finish it with `git am --continue`, or abort it with `git am --abort`"
            }
        }
    }
}

impl GitRepo {
    /// The home's `state`, `archive` and `logs` directories relative to the
    /// work tree when `home` lies inside it (also when home is the work tree
    /// itself), else nothing.
    pub(crate) fn home_dirs_in_repo(&self, home: &Path) -> Vec<PathBuf> {
        self.in_home(home, &HOME_DIRS)
    }

    /// The home's own files that the user may edit while the daemon runs
    /// (`ralph.toml`, `PROMPT.md`, `prompts/`), relative to the work tree,
    /// when the home lies inside it. They may be committed; ralphd never
    /// counts an edit of them as a stray change.
    pub(crate) fn steering_files_in_repo(&self, home: &Path) -> Vec<PathBuf> {
        self.in_home(home, &["ralph.toml", "PROMPT.md", "prompts"])
    }

    fn in_home(&self, home: &Path, names: &[&str]) -> Vec<PathBuf> {
        let home = fs::canonicalize(home)
            .or_else(|_| std::path::absolute(home))
            .unwrap_or_else(|_| home.to_path_buf());
        let Ok(relative) = home.strip_prefix(&self.workdir) else {
            return Vec::new();
        };
        names.iter().map(|name| relative.join(name)).collect()
    }

    /// Adds each directory (relative to the work tree) to `info/exclude`
    /// unless already there, and remembers it as excluded for every later
    /// call on this value.
    pub(crate) fn ensure_excluded(&mut self, dirs: &[PathBuf]) -> Result<()> {
        const OP: &str = "exclude home directories";
        let mut wanted = Vec::new();
        for dir in dirs {
            let normal = normalize_relative(dir).ok_or_else(|| GitError::Io {
                repo: self.workdir.clone(),
                op: OP,
                file: dir.clone(),
                error: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a relative path inside the work tree",
                ),
            })?;
            if normal.as_os_str().is_empty() {
                continue;
            }
            if !self.excluded.contains(&normal) {
                self.excluded.push(normal.clone());
            }
            wanted.push(exclude_pattern(&normal));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let exclude_file = self.common_dir.join("info").join("exclude");
        let io_error = |file: &Path, error: io::Error| GitError::Io {
            repo: self.workdir.clone(),
            op: OP,
            file: file.to_path_buf(),
            error,
        };
        let existing = match fs::read(&exclude_file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(io_error(&exclude_file, error)),
        };
        let present: Vec<&[u8]> = existing
            .split(|byte| *byte == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .collect();
        let missing: Vec<Vec<u8>> = wanted
            .into_iter()
            .filter(|pattern| !present.contains(&pattern.as_slice()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut contents = existing.clone();
        if !contents.is_empty() && !contents.ends_with(b"\n") {
            contents.push(b'\n');
        }
        contents.extend_from_slice(b"# ralphd: its state, archive and logs (never commit them)\n");
        for pattern in missing {
            contents.extend_from_slice(&pattern);
            contents.push(b'\n');
        }
        let info_dir = self.common_dir.join("info");
        fs::create_dir_all(&info_dir).map_err(|error| io_error(&info_dir, error))?;
        let mut temp = tempfile::NamedTempFile::new_in(&info_dir)
            .map_err(|error| io_error(&info_dir, error))?;
        io::Write::write_all(&mut temp, &contents).map_err(|error| io_error(temp.path(), error))?;
        // Keep the file's mode (a temp file is created 0600).
        let permissions = fs::metadata(&exclude_file)
            .map(|metadata| metadata.permissions())
            .unwrap_or_else(|_| fs::Permissions::from_mode(0o644));
        fs::set_permissions(temp.path(), permissions)
            .map_err(|error| io_error(temp.path(), error))?;
        temp.persist(&exclude_file)
            .map_err(|error| io_error(&exclude_file, error.error))?;
        Ok(())
    }

    /// Up to `limit` changed paths (modified, staged, deleted, or untracked and
    /// not ignored; untracked directories listed as one entry), outside the
    /// excluded directories. Empty means clean. Non-UTF-8 names are converted
    /// lossily. Submodules are not inspected.
    pub(crate) fn dirty_paths(&self, limit: usize) -> Result<Vec<String>> {
        const OP: &str = "status";
        let repo = self.open_repo(OP)?;
        let mut options = StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(false)
            .include_ignored(false)
            .exclude_submodules(true);
        let statuses = repo
            .statuses(Some(&mut options))
            .map_err(|error| self.git_error(OP, error))?;
        let mut paths = Vec::new();
        for entry in statuses.iter() {
            if paths.len() >= limit {
                break;
            }
            if entry.status() == Status::CURRENT || entry.status().contains(Status::IGNORED) {
                continue;
            }
            let path = path_from_bytes(entry.path_bytes());
            if self.is_excluded(path) {
                continue;
            }
            paths.push(String::from_utf8_lossy(entry.path_bytes()).into_owned());
        }
        Ok(paths)
    }

    /// [`Self::dirty_paths`] without the home's steering files
    /// ([`Self::steering_files_in_repo`]): the changes nobody announced.
    pub(crate) fn stray_paths(&self, home: &Path, limit: usize) -> Result<Vec<String>> {
        let steering = self.steering_files_in_repo(home);
        Ok(self
            .dirty_paths(usize::MAX)?
            .into_iter()
            .filter(|path| {
                !steering
                    .iter()
                    .any(|file| Path::new(path).starts_with(file))
            })
            .take(limit)
            .collect())
    }

    /// The merge, rebase, cherry-pick, revert, bisect or `git am` left in
    /// progress in this work tree, if any (what `git status` reports).
    pub(crate) fn operation_in_progress(&self) -> Result<Option<Operation>> {
        use git2::RepositoryState as State;
        let repo = self.open_repo("read the repository state")?;
        let operation = match repo.state() {
            State::Clean => None,
            State::Merge => Some(Operation::Merge),
            State::Revert | State::RevertSequence => Some(Operation::Revert),
            State::CherryPick | State::CherryPickSequence => Some(Operation::CherryPick),
            State::Bisect => Some(Operation::Bisect),
            State::Rebase | State::RebaseInteractive | State::RebaseMerge => {
                Some(Operation::Rebase)
            }
            State::ApplyMailbox | State::ApplyMailboxOrRebase => Some(Operation::ApplyMailbox),
        };
        if operation.is_some() {
            return Ok(operation);
        }
        // A cherry-pick or revert of several commits whose conflict was
        // committed by hand has no CHERRY_PICK_HEAD any more; only its
        // sequencer's to-do list says it goes on (git status reads it too).
        let todo = match fs::read(self.git_dir.join("sequencer").join("todo")) {
            Ok(todo) => todo,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(GitError::Io {
                    repo: self.workdir.clone(),
                    op: "read the repository state",
                    file: self.git_dir.join("sequencer").join("todo"),
                    error,
                });
            }
        };
        let command = todo
            .split(|byte| *byte == b'\n')
            .map(|line| line.trim_ascii())
            .find(|line| !line.is_empty() && !line.starts_with(b"#"))
            .and_then(|line| line.split(|byte| byte.is_ascii_whitespace()).next());
        Ok(match command {
            Some(b"revert" | b"r") => Some(Operation::Revert),
            Some(_) => Some(Operation::CherryPick),
            None => None,
        })
    }
}

/// A relative path without `.`, `..` or a root, or `None`.
fn normalize_relative(path: &Path) -> Option<PathBuf> {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(normal)
}

/// `/dir/sub/` with gitignore's special characters escaped, anchored at the
/// top of the work tree and matching only directories.
fn exclude_pattern(dir: &Path) -> Vec<u8> {
    let mut pattern = vec![b'/'];
    for (component_idx, component) in dir.components().enumerate() {
        if component_idx > 0 {
            pattern.push(b'/');
        }
        let bytes = component.as_os_str().as_bytes();
        for (byte_idx, &byte) in bytes.iter().enumerate() {
            let trailing_space = byte == b' ' && bytes[byte_idx..].iter().all(|b| *b == b' ');
            if matches!(byte, b'\\' | b'*' | b'?' | b'[') || trailing_space {
                pattern.push(b'\\');
            }
            pattern.push(byte);
        }
    }
    pattern.push(b'/');
    pattern
}
