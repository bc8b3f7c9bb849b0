//! The git safety net: typed, synchronous wrappers over git2 for the start
//! checks, the per-cycle snapshot, progress measurement, commit, saved attempts
//! and rollback (DESIGN §6).
//!
//! Every call blocks: the daemon runs them inside `spawn_blocking`. [`GitRepo`]
//! holds only paths and is `Send + Sync + Clone`; each call opens its own
//! `git2::Repository` (cheap), so no git2 state is shared between threads. This
//! module never spawns `git` and knows nothing of the agent, the state files or
//! the guards.
//!
//! The cycle protocol: [`GitRepo::begin_cycle`] before the agent runs records a
//! [`CycleStart`]; afterwards [`GitRepo::measure_progress`],
//! [`GitRepo::changed_files`], [`GitRepo::scan_added_lines`] and
//! [`GitRepo::diff_summary`] describe the cycle's work, and the cycle ends with
//! either a commit — [`GitRepo::stage_commit`], the hooks (run by the caller),
//! [`GitRepo::after_hooks`], then [`GitRepo::commit_staged`] or, signed,
//! [`GitRepo::commit_payload`] and [`GitRepo::commit_signed`] — or
//! [`GitRepo::save_attempt`] (masked: [`GitRepo::save_masked_attempt`])
//! followed by [`GitRepo::rollback`]. [`GitRepo::commit_rules`] reads which
//! hooks and which signing the repository's config asks for.
//!
//! While a cycle runs the repository is the cycle's (DESIGN §14):
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

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use git2::build::{CheckoutBuilder, TreeUpdateBuilder};
use git2::{
    Delta, DiffFormat, ErrorCode, FileMode, IndexAddOption, IndexMatchedPath, ObjectType, Oid,
    Repository, RepositoryOpenFlags, Signature, Status, StatusOptions,
};
use serde::{Deserialize, Serialize};

/// Where saved attempts live: `refs/ralph/attempts/<cycle>[-<n>]`.
const ATTEMPTS_PREFIX: &str = "refs/ralph/attempts/";

/// A ref pointing at the user's pre-existing changes of the current cycle, so
/// that `git gc` cannot prune the snapshot blobs and a crash mid-rollback
/// leaves them recoverable (`git checkout refs/ralph/dirty-start -- <path>`).
const DIRTY_START_REF: &str = "refs/ralph/dirty-start";

/// Likewise for the work tree after code-edit ([`GitRepo::checkpoint`]).
const CHECKPOINT_REF: &str = "refs/ralph/checkpoint";

/// The identity of the daemon's own bookkeeping commits (the dirty snapshot).
const BOOKKEEPING_NAME: &str = "ralphd";
const BOOKKEEPING_EMAIL: &str = "ralphd@localhost";

/// The index mode of a submodule entry (a gitlink).
const GITLINK_MODE: u32 = 0o160000;
/// The index file ralphd's hooks run against, in the git dir.
const HOOK_INDEX_FILE: &str = "ralphd-hook-index";

/// Home subdirectories kept out of git when the home lies inside the repo.
const HOME_DIRS: [&str; 3] = ["state", "archive", "logs"];

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

/// Changes made during a cycle, relative to its start state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) files_changed: usize,
    pub(crate) insertions: usize,
    pub(crate) deletions: usize,
    /// Commits reachable from HEAD but not from the start commit.
    pub(crate) agent_commits: usize,
}

impl Progress {
    /// No file changed and no commit made: outcome `no_changes`.
    pub(crate) fn is_empty(&self) -> bool {
        self.files_changed == 0 && self.agent_commits == 0
    }
}

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
    tree: Oid,
    /// The index file that holds exactly `tree`, for the hooks.
    hook_index: Option<PathBuf>,
}

impl StagedCommit {
    /// The index file the hooks get as `GIT_INDEX_FILE`, when staged for hooks.
    pub(crate) fn hook_index(&self) -> Option<&Path> {
        self.hook_index.as_deref()
    }
}

/// One changed path of the cycle, with its line counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChangedFile {
    /// Relative to the work tree.
    pub(crate) path: PathBuf,
    pub(crate) insertions: usize,
    pub(crate) deletions: usize,
}

/// Git's rules for a commit in this repository, read from its config.
#[derive(Clone, Debug, Default)]
pub(crate) struct CommitRules {
    /// The executable `pre-commit` hook, if there is one.
    pub(crate) pre_commit: Option<PathBuf>,
    /// The executable `commit-msg` hook, if there is one.
    pub(crate) commit_msg: Option<PathBuf>,
    /// `commit.gpgsign = true`: how to sign, or why it cannot work.
    pub(crate) signing: Option<std::result::Result<Signing, String>>,
}

/// How git would sign a commit (`gpg.format`, the program, the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Signing {
    pub(crate) format: SigningFormat,
    /// `gpg.program` (or the format's own key), a name on PATH or a path.
    pub(crate) program: String,
    /// The config key that named the program, for messages.
    pub(crate) program_key: &'static str,
    /// openpgp/x509: `user.signingkey`, else the committer (`Name <email>`).
    /// ssh: a key file, or the public key itself when `literal_key`.
    pub(crate) key: String,
    /// ssh: `key` is a public key (`key::…`, `ssh-…`) whose private half is in
    /// the ssh agent.
    pub(crate) literal_key: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SigningFormat {
    OpenPgp,
    X509,
    Ssh,
}

/// A failed cycle saved under `refs/ralph/attempts/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The full ref name, e.g. `refs/ralph/attempts/3` or `refs/ralph/attempts/3-2`.
    pub(crate) cycle_ref: String,
    pub(crate) oid: Oid,
    /// The first line of the commit message.
    pub(crate) summary: String,
    pub(crate) time: jiff::Timestamp,
}

/// A git operation left unfinished in the work tree. The daemon does not
/// start inside one (DESIGN §14): its commits would land in the middle of it.
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

/// Where HEAD pointed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum HeadState {
    /// On a branch (full ref name, usually `refs/heads/…`) with a commit.
    Branch {
        refname: Vec<u8>,
        #[serde(with = "oid_hex")]
        oid: Oid,
    },
    /// On a branch that has no commit yet (fresh `git init`).
    Unborn { refname: Vec<u8> },
    Detached {
        #[serde(with = "oid_hex")]
        oid: Oid,
    },
}

impl HeadState {
    fn oid(&self) -> Option<Oid> {
        match self {
            HeadState::Branch { oid, .. } | HeadState::Detached { oid } => Some(*oid),
            HeadState::Unborn { .. } => None,
        }
    }

    /// Whether HEAD points (symbolically) at `refname`.
    fn is_on(&self, refname: &[u8]) -> bool {
        match self {
            HeadState::Branch { refname: on, .. } | HeadState::Unborn { refname: on } => {
                on.as_slice() == refname
            }
            HeadState::Detached { .. } => false,
        }
    }

    fn label(&self) -> String {
        match self {
            HeadState::Branch { refname, .. } | HeadState::Unborn { refname } => {
                let short = refname.strip_prefix(b"refs/heads/").unwrap_or(refname);
                String::from_utf8_lossy(short).into_owned()
            }
            HeadState::Detached { oid } => format!("detached-{}", short_hex(*oid)),
        }
    }

    /// For messages: `branch main`, `a detached HEAD at 1a2b3c4`.
    fn describe(&self) -> String {
        match self {
            HeadState::Detached { oid } => format!("a detached HEAD at {}", short_hex(*oid)),
            _ => format!("branch {}", self.label()),
        }
    }
}

/// Something the agent did to the repository that a cycle may not do
/// (DESIGN §14), found by [`GitRepo::trespasses`]. Its text is the reason the
/// cycle gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Trespass {
    /// HEAD left the branch (or the detached HEAD) the cycle started on.
    LeftBranch { from: String, to: String },
    /// The cycle's branch no longer exists.
    DeletedBranch { branch: String },
    /// The branch (or the detached HEAD) no longer contains the commit where
    /// the cycle had it: a reset, an amend or a rebase took commits off it.
    RewroteHistory { branch: String, commit: Oid },
    /// Work inside submodules, one entry each: `lib (files edited, HEAD moved)`.
    ChangedSubmodules { changes: Vec<String> },
}

impl std::fmt::Display for Trespass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trespass::LeftBranch { from, to } => write!(
                f,
                "the agent switched from {from} to {to} (git checkout/switch)"
            ),
            Trespass::DeletedBranch { branch } => write!(f, "the agent deleted branch {branch}"),
            Trespass::RewroteHistory { branch, commit } => write!(
                f,
                "the agent moved {branch} off {}, where the cycle had it (git reset, --amend or rebase)",
                short_hex(*commit)
            ),
            Trespass::ChangedSubmodules { changes } => {
                let noun = if changes.len() == 1 {
                    "submodule"
                } else {
                    "submodules"
                };
                write!(
                    f,
                    "the agent changed {noun} {} (ralphd never keeps work inside a submodule)",
                    changes.join(", ")
                )
            }
        }
    }
}

/// How one of the user's pre-existing changes looked at cycle start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum SavedFile {
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserFile {
    /// Relative to the work tree.
    path: PathBuf,
    saved: SavedFile,
}

/// The state of the repository before the agent ran, captured by
/// [`GitRepo::begin_cycle`]. Only valid for the repo that made it. It is kept
/// in `state/in-flight.json` while the cycle runs, so that the start after a
/// crash can save and roll back what the dead daemon's cycle left behind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CycleStart {
    head: HeadState,
    /// The whole work tree at start (HEAD plus the user's changes, through git's
    /// filters), the baseline of progress and rollback.
    #[serde(with = "oid_hex")]
    start_tree: Oid,
    /// The user's index at start, restored by a rollback.
    #[serde(with = "oid_hex")]
    index_tree: Oid,
    /// The user's pre-existing changes, byte for byte, sorted by path.
    user_files: Vec<UserFile>,
    /// Ignored paths present at start (directories as one entry): a rollback
    /// never removes anything under them, even if the agent changed `.gitignore`.
    ignored_at_start: Vec<PathBuf>,
    /// Each checked-out submodule's own start state (empty without submodules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    submodules: Vec<SubmoduleStart>,
}

/// A checked-out submodule at cycle start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SubmoduleStart {
    /// Relative to the parent's work tree.
    path: PathBuf,
    /// The submodule's git dir, to give a removed work tree its repository back.
    git_dir: PathBuf,
    /// The submodule's own state, snapshotted like the parent's.
    start: CycleStart,
}

impl CycleStart {
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

    fn is_user_path(&self, path: &Path) -> bool {
        self.user_files
            .binary_search_by(|file| file.path.as_path().cmp(path))
            .is_ok()
    }

    fn ignored_at_start(&self, path: &Path) -> bool {
        self.ignored_at_start
            .iter()
            .any(|ignored| path.starts_with(ignored))
    }
}

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

    /// HEAD's commit (full hex) and the first line of its message, `None`
    /// on an unborn branch.
    pub(crate) fn head_commit(&self) -> Result<Option<(String, String)>> {
        const OP: &str = "read HEAD";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let Some(oid) = read_head(&repo).map_err(git_error)?.oid() else {
            return Ok(None);
        };
        let commit = repo.find_commit(oid).map_err(git_error)?;
        let summary =
            String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned();
        Ok(Some((oid.to_string(), summary)))
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

    /// The branch name (`main`, `feature/login`), `detached-<7 hex>` for a
    /// detached HEAD; for an unborn branch, the branch HEAD names.
    /// Non-UTF-8 names are converted lossily (U+FFFD).
    pub(crate) fn branch_label(&self) -> Result<String> {
        const OP: &str = "read HEAD";
        let repo = self.open_repo(OP)?;
        let head = read_head(&repo).map_err(|error| self.git_error(OP, error))?;
        Ok(head.label())
    }

    /// Whether the detached HEAD labelled `current` continues the detached line
    /// labelled `last`: both detached, and HEAD descends from `last`'s commit.
    /// Commits made on a detached HEAD move its label; that is not a branch change.
    pub(crate) fn continues_detached(&self, last: &str, current: &str) -> Result<bool> {
        const OP: &str = "compare detached HEADs";
        let (Some(last_hex), Some(_)) = (
            last.strip_prefix("detached-"),
            current.strip_prefix("detached-"),
        ) else {
            return Ok(false);
        };
        let repo = self.open_repo(OP)?;
        let Some(head) = read_head(&repo)
            .map_err(|error| self.git_error(OP, error))?
            .oid()
        else {
            return Ok(false);
        };
        let Ok(last_commit) = repo
            .revparse_single(last_hex)
            .and_then(|object| object.peel_to_commit())
        else {
            return Ok(false);
        };
        Ok(head == last_commit.id()
            || repo
                .graph_descendant_of(head, last_commit.id())
                .map_err(|error| self.git_error(OP, error))?)
    }

    /// Captures the state before the agent runs: the start commit and a byte
    /// for byte snapshot of the user's uncommitted changes (empty on a clean
    /// tree). The snapshot's blobs are kept alive by `refs/ralph/dirty-start`.
    pub(crate) fn begin_cycle(&self) -> Result<CycleStart> {
        self.snapshot("snapshot the cycle start", DIRTY_START_REF)
    }

    /// Captures the state after code-edit the same way, every uncommitted
    /// change (the agent's and the user's) counting as one to keep: what later
    /// phases change (the checks, the backtest agent's Bash) can then be undone
    /// with [`Self::rollback`] to this checkpoint, leaving the edit exactly as
    /// it was verified. Pinned by `refs/ralph/checkpoint`.
    pub(crate) fn checkpoint(&self) -> Result<CycleStart> {
        self.snapshot("snapshot the edit", CHECKPOINT_REF)
    }

    fn snapshot(&self, op: &'static str, pin_ref: &str) -> Result<CycleStart> {
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
        Ok(CycleStart {
            head,
            start_tree,
            index_tree,
            user_files,
            ignored_at_start,
            submodules,
        })
    }

    /// Snapshots every checked-out submodule (gitlinks of `index` whose work
    /// tree has a repository), recursively. A repository without submodules
    /// pays one pass over the index entries already in memory.
    fn snapshot_submodules(
        &self,
        index: &git2::Index,
        op: &'static str,
        pin_ref: &str,
    ) -> Result<Vec<SubmoduleStart>> {
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
            submodules.push(SubmoduleStart {
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

    /// What the agent did that a cycle may not do, relative to `start` (the
    /// cycle's start, or the state after its commit): HEAD off the start
    /// branch, the branch deleted, the start commit no longer its
    /// ancestor-or-self (commits taken off it), submodules changed. Empty when
    /// the repository is still the cycle's; commits that build on the start
    /// commit are fine. Cheap without submodules: a few ref lookups.
    pub(crate) fn trespasses(&self, start: &CycleStart) -> Result<Vec<Trespass>> {
        const OP: &str = "check the cycle's branch";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let head = read_head(&repo).map_err(git_error)?;
        let mut found = Vec::new();
        let left = match &start.head {
            HeadState::Detached { .. } => !matches!(head, HeadState::Detached { .. }),
            HeadState::Branch { refname, .. } | HeadState::Unborn { refname } => {
                !head.is_on(refname)
            }
        };
        if left {
            found.push(Trespass::LeftBranch {
                from: start.head.describe(),
                to: head.describe(),
            });
        }
        // Where the start commit must still be: the branch's tip, or the
        // detached HEAD.
        let (tip, holder) = match &start.head {
            HeadState::Branch { refname, .. } => {
                let tip = branch_tip(&repo, refname).map_err(git_error)?;
                if tip.is_none() {
                    found.push(Trespass::DeletedBranch {
                        branch: start.head.label(),
                    });
                }
                (tip, start.head.describe())
            }
            HeadState::Detached { .. } if !left => (head.oid(), "the detached HEAD".to_owned()),
            _ => (None, String::new()),
        };
        if let (Some(tip), Some(commit)) = (tip, start.start_commit())
            && tip != commit
            && !repo.graph_descendant_of(tip, commit).map_err(git_error)?
        {
            found.push(Trespass::RewroteHistory {
                branch: holder,
                commit,
            });
        }
        let changes = self.changed_submodules(start)?;
        if !changes.is_empty() {
            found.push(Trespass::ChangedSubmodules { changes });
        }
        Ok(found)
    }

    /// The submodules (recursively) whose files or HEAD changed since
    /// `start`, each as `path (what changed)`.
    fn changed_submodules(&self, start: &CycleStart) -> Result<Vec<String>> {
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

    fn head_state(&self, op: &'static str) -> Result<HeadState> {
        let repo = self.open_repo(op)?;
        read_head(&repo).map_err(|error| self.git_error(op, error))
    }

    /// Whether anything differs from `start`: files, commits, where HEAD is,
    /// submodules.
    fn changed_since(&self, start: &CycleStart) -> Result<bool> {
        Ok(!self.measure_progress(start)?.is_empty()
            || self.head_state("read HEAD")? != start.head
            || !self.changed_submodules(start)?.is_empty())
    }

    /// Files and lines changed since the cycle start (work tree and index,
    /// the user's pre-existing changes being the baseline), plus the commits
    /// the agent made (reachable from HEAD, not from the start commit).
    pub(crate) fn measure_progress(&self, start: &CycleStart) -> Result<Progress> {
        const OP: &str = "measure progress";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let current_tree = self.worktree_tree(OP)?;
        let diff = self
            .cycle_diff(&repo, start, current_tree)
            .map_err(git_error)?;
        let mut progress = Progress {
            agent_commits: agent_commits(&repo, start).map_err(git_error)?,
            ..Progress::default()
        };
        for (delta_idx, delta) in diff.deltas().enumerate() {
            if !self.counts(&delta) {
                continue;
            }
            progress.files_changed += 1;
            if let Some(patch) = git2::Patch::from_diff(&diff, delta_idx).map_err(git_error)? {
                let (_, insertions, deletions) = patch.line_stats().map_err(git_error)?;
                progress.insertions += insertions;
                progress.deletions += deletions;
            }
        }
        Ok(progress)
    }

    /// A short human summary of the cycle's changes for the backtest prompt:
    /// totals, one line per file with +/- counts, the agent's commits, then the
    /// patch, the whole cut at `max_bytes` (on a char boundary).
    pub(crate) fn diff_summary(&self, start: &CycleStart, max_bytes: usize) -> Result<String> {
        const OP: &str = "summarise the diff";
        const TRUNCATED: &str = "\n[… truncated]\n";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let current_tree = self.worktree_tree(OP)?;
        let diff = self
            .cycle_diff(&repo, start, current_tree)
            .map_err(git_error)?;

        let mut file_lines = String::new();
        let mut totals = Progress::default();
        for (delta_idx, delta) in diff.deltas().enumerate() {
            if !self.counts(&delta) {
                continue;
            }
            let (insertions, deletions) =
                match git2::Patch::from_diff(&diff, delta_idx).map_err(git_error)? {
                    Some(patch) => {
                        let (_, insertions, deletions) = patch.line_stats().map_err(git_error)?;
                        (insertions, deletions)
                    }
                    None => (0, 0),
                };
            totals.files_changed += 1;
            totals.insertions += insertions;
            totals.deletions += deletions;
            let path = delta_path(&delta).unwrap_or(Path::new("?"));
            let binary = if delta.new_file().is_binary() || delta.old_file().is_binary() {
                " (binary)"
            } else {
                ""
            };
            let _ = writeln!(
                file_lines,
                "  {} {} +{insertions} -{deletions}{binary}",
                status_letter(delta.status()),
                path.display()
            );
        }

        let mut commit_lines = String::new();
        if let Some(head) = read_head(&repo).map_err(git_error)?.oid() {
            let mut walk = repo.revwalk().map_err(git_error)?;
            walk.push(head).map_err(git_error)?;
            if let Some(start_commit) = start.start_commit() {
                walk.hide(start_commit).map_err(git_error)?;
            }
            for oid in walk {
                let oid = oid.map_err(git_error)?;
                let commit = repo.find_commit(oid).map_err(git_error)?;
                totals.agent_commits += 1;
                let summary = String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
                    .into_owned();
                let _ = writeln!(commit_lines, "  {} {summary}", short_hex(oid));
            }
        }

        let mut summary = format!(
            "{} file(s) changed, {} insertion(s)(+), {} deletion(s)(-); {} commit(s) by the agent\n",
            totals.files_changed, totals.insertions, totals.deletions, totals.agent_commits
        );
        summary.push_str(&file_lines);
        if !commit_lines.is_empty() {
            summary.push_str("agent commits:\n");
            summary.push_str(&commit_lines);
        }
        if summary.len() > max_bytes {
            truncate_at_char_boundary(&mut summary, max_bytes.saturating_sub(TRUNCATED.len()));
            summary.push_str(TRUNCATED);
            truncate_at_char_boundary(&mut summary, max_bytes);
            return Ok(summary);
        }

        // The patch fills what is left of the budget.
        let budget = max_bytes - summary.len();
        let mut patch = Vec::new();
        let mut cut = false;
        let print_result = diff.print(DiffFormat::Patch, |delta, _hunk, line| {
            if !self.counts(&delta) {
                return true;
            }
            if matches!(line.origin(), '+' | '-' | ' ') {
                patch.push(line.origin() as u8);
            }
            patch.extend_from_slice(line.content());
            if patch.len() > budget {
                cut = true;
                return false;
            }
            true
        });
        if !cut {
            print_result.map_err(git_error)?;
        }
        if !patch.is_empty() {
            let mut patch_text = String::from_utf8_lossy(&patch).into_owned();
            if cut || summary.len() + patch_text.len() > max_bytes {
                truncate_at_char_boundary(&mut patch_text, budget.saturating_sub(TRUNCATED.len()));
                patch_text.push_str(TRUNCATED);
            }
            summary.push_str(&patch_text);
        }
        truncate_at_char_boundary(&mut summary, max_bytes);
        Ok(summary)
    }

    #[cfg(test)]
    /// [`Self::stage_commit`] then [`Self::commit_staged`], no hooks: returns
    /// the new commit; HEAD itself when the agent already committed
    /// everything; `None` when there was nothing at all. An unborn branch gets
    /// its first commit. HEAD moving meanwhile is [`GitError::HeadMoved`].
    pub(crate) fn commit_cycle(
        &self,
        start: &CycleStart,
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
    pub(crate) fn stage_commit(&self, start: &CycleStart, for_hooks: bool) -> Result<Staged> {
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
    fn commit_on_head(
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

    /// The hooks and the signing this repository asks of a commit by
    /// `committer` (name, email): hooks from `core.hooksPath` (relative to
    /// the work tree, `~/` expanded) or `<common git dir>/hooks`, executable
    /// files only; signing as `git commit` does it when `commit.gpgsign` is
    /// true (`gpg.format`, `gpg.program`, `gpg.<format>.program`,
    /// `user.signingkey`).
    pub(crate) fn commit_rules(&self, committer: (&str, &str)) -> Result<CommitRules> {
        const OP: &str = "read the commit settings";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let mut config = repo.config().map_err(git_error)?;
        let config = config.snapshot().map_err(git_error)?;
        let string = |key: &str| -> Result<Option<String>> {
            match config.get_string(key) {
                Ok(value) => Ok(Some(value)),
                Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
                Err(error) => Err(git_error(error)),
            }
        };
        let hooks_dir = match config.get_path("core.hooksPath") {
            Ok(dir) => self.workdir.join(dir),
            Err(error) if error.code() == ErrorCode::NotFound => self.common_dir.join("hooks"),
            Err(error) => return Err(git_error(error)),
        };
        let executable = |name: &str| {
            let path = hooks_dir.join(name);
            let metadata = fs::metadata(&path).ok()?;
            (metadata.is_file() && metadata.permissions().mode() & 0o111 != 0).then_some(path)
        };
        let gpgsign = match config.get_bool("commit.gpgsign") {
            Ok(value) => value,
            Err(error) if error.code() == ErrorCode::NotFound => false,
            Err(error) => return Err(git_error(error)),
        };
        let signing = if gpgsign {
            Some(self.signing(&string, committer)?)
        } else {
            None
        };
        Ok(CommitRules {
            pre_commit: executable("pre-commit"),
            commit_msg: executable("commit-msg"),
            signing,
        })
    }

    fn signing(
        &self,
        string: &impl Fn(&str) -> Result<Option<String>>,
        committer: (&str, &str),
    ) -> Result<std::result::Result<Signing, String>> {
        let format_name = string("gpg.format")?.unwrap_or_else(|| "openpgp".to_owned());
        let (format, program_key, default_program) = match format_name.as_str() {
            "openpgp" => (SigningFormat::OpenPgp, "gpg.openpgp.program", "gpg"),
            "x509" => (SigningFormat::X509, "gpg.x509.program", "gpgsm"),
            "ssh" => (SigningFormat::Ssh, "gpg.ssh.program", "ssh-keygen"),
            other => {
                return Ok(Err(format!(
                    "gpg.format = {other:?} is not a format git knows (openpgp, x509, ssh)"
                )));
            }
        };
        let (program, program_key) = match string(program_key)? {
            Some(program) => (program, program_key),
            None if format == SigningFormat::OpenPgp => match string("gpg.program")? {
                Some(program) => (program, "gpg.program"),
                None => (default_program.to_owned(), "gpg.program"),
            },
            None => (default_program.to_owned(), program_key),
        };
        let configured_key = string("user.signingkey")?.filter(|key| !key.trim().is_empty());
        let (key, literal_key) = match (format, configured_key) {
            (SigningFormat::Ssh, None) => {
                return Ok(Err(
                    "gpg.format = \"ssh\" needs user.signingkey (ralphd does not run gpg.ssh.defaultKeyCommand)"
                        .to_owned(),
                ));
            }
            (SigningFormat::Ssh, Some(key)) => match key.strip_prefix("key::") {
                Some(literal) => (literal.to_owned(), true),
                None if key.starts_with("ssh-") => (key, true),
                None => {
                    let path = match key.strip_prefix("~/") {
                        Some(rest) => std::env::home_dir()
                            .map(|home| home.join(rest))
                            .unwrap_or_else(|| PathBuf::from(&key)),
                        None => self.workdir.join(&key),
                    };
                    (path.to_string_lossy().into_owned(), false)
                }
            },
            (_, Some(key)) => (key, false),
            (_, None) => (format!("{} <{}>", committer.0, committer.1), false),
        };
        Ok(Ok(Signing {
            format,
            program,
            program_key,
            key,
            literal_key,
        }))
    }

    /// Every path the cycle changed (as in [`Self::measure_progress`]), with
    /// its added and removed lines, in path order.
    pub(crate) fn changed_files(&self, start: &CycleStart) -> Result<Vec<ChangedFile>> {
        const OP: &str = "list the changed files";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let current_tree = self.worktree_tree(OP)?;
        let diff = self
            .cycle_diff(&repo, start, current_tree)
            .map_err(git_error)?;
        let mut files = Vec::new();
        for (delta_idx, delta) in diff.deltas().enumerate() {
            if !self.counts(&delta) {
                continue;
            }
            let Some(path) = delta_path(&delta) else {
                continue;
            };
            let (insertions, deletions) =
                match git2::Patch::from_diff(&diff, delta_idx).map_err(git_error)? {
                    Some(patch) => {
                        let (_, insertions, deletions) = patch.line_stats().map_err(git_error)?;
                        (insertions, deletions)
                    }
                    None => (0, 0),
                };
            files.push(ChangedFile {
                path: path.to_path_buf(),
                insertions,
                deletions,
            });
        }
        Ok(files)
    }

    /// Hands every line the cycle added to `on_line(commit, path, line
    /// number, content without the newline)`: first the lines of the work
    /// tree's diff against the start (`commit` = `None`), then those each of
    /// the agent's own commits added (`commit` = its short hash), even if a
    /// later commit removed them. Text files only; streamed, so memory does
    /// not grow with the diff.
    pub(crate) fn scan_added_lines(
        &self,
        start: &CycleStart,
        mut on_line: impl FnMut(Option<&str>, &Path, u32, &[u8]),
    ) -> Result<()> {
        const OP: &str = "scan the added lines";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let current_tree = self.worktree_tree(OP)?;
        let diff = self
            .cycle_diff(&repo, start, current_tree)
            .map_err(git_error)?;
        self.each_added_line(&diff, None, &mut on_line)
            .map_err(git_error)?;

        let Some(head) = read_head(&repo).map_err(git_error)?.oid() else {
            return Ok(());
        };
        let mut walk = repo.revwalk().map_err(git_error)?;
        walk.push(head).map_err(git_error)?;
        if let Some(start_commit) = start.start_commit() {
            walk.hide(start_commit).map_err(git_error)?;
        }
        for oid in walk {
            let commit = repo
                .find_commit(oid.map_err(git_error)?)
                .map_err(git_error)?;
            let tree = commit.tree().map_err(git_error)?;
            let parent_tree = match commit.parent(0) {
                Ok(parent) => parent.tree().map_err(git_error)?,
                Err(_) => empty_tree(&repo).map_err(git_error)?,
            };
            let diff = repo
                .diff_tree_to_tree(Some(&parent_tree), Some(&tree), None)
                .map_err(git_error)?;
            let short = short_hex(commit.id());
            self.each_added_line(&diff, Some(&short), &mut on_line)
                .map_err(git_error)?;
        }
        Ok(())
    }

    fn each_added_line(
        &self,
        diff: &git2::Diff<'_>,
        commit: Option<&str>,
        on_line: &mut impl FnMut(Option<&str>, &Path, u32, &[u8]),
    ) -> std::result::Result<(), git2::Error> {
        diff.foreach(
            &mut |_, _| true,
            None,
            None,
            Some(&mut |delta, _hunk, line| {
                if line.origin() != '+' || !self.counts(&delta) {
                    return true;
                }
                if let (Some(path), Some(number)) = (delta_path(&delta), line.new_lineno()) {
                    let content = line.content();
                    let content = content.strip_suffix(b"\n").unwrap_or(content);
                    on_line(commit, path, number, content);
                }
                true
            }),
        )
    }

    /// Saves the attempt like [`Self::save_attempt`], but with the given
    /// lines of each file (1-based) replaced by a mask, and on top of the
    /// start commit rather than HEAD, so that neither its tree nor its
    /// history holds a secret the agent wrote or committed. The agent's
    /// commits are named in the message only. Returns the ref name.
    pub(crate) fn save_masked_attempt(
        &self,
        start: &CycleStart,
        cycle: u64,
        message: &str,
        author: (&str, &str),
        masks: &[(PathBuf, Vec<u32>)],
    ) -> Result<String> {
        const OP: &str = "save attempt";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let tree = repo.find_tree(self.worktree_tree(OP)?).map_err(git_error)?;
        let mut update = TreeUpdateBuilder::new();
        for (path, lines) in masks {
            let Ok(entry) = tree.get_path(path) else {
                continue;
            };
            let blob = repo.find_blob(entry.id()).map_err(git_error)?;
            let masked = mask_lines(blob.content(), lines);
            let masked = repo.blob(&masked).map_err(git_error)?;
            update.upsert(path.as_path(), masked, file_mode(entry.filemode()));
        }
        let masked_tree = update.create_updated(&repo, &tree).map_err(git_error)?;
        let masked_tree = repo.find_tree(masked_tree).map_err(git_error)?;
        let start_commit = match start.start_commit() {
            Some(oid) => Some(repo.find_commit(oid).map_err(git_error)?),
            None => None,
        };
        let parents: Vec<&git2::Commit<'_>> = start_commit.iter().collect();
        let mut full_message = format!(
            "{}\n\nSecret lines masked: {}\n",
            message.trim_end(),
            masks
                .iter()
                .map(|(path, lines)| {
                    let lines: Vec<String> = lines.iter().map(u32::to_string).collect();
                    format!("{}:{}", path.display(), lines.join(","))
                })
                .collect::<Vec<_>>()
                .join(" ")
        );
        let agent_commits = agent_commits(&repo, start).map_err(git_error)?;
        if agent_commits > 0 {
            let _ = writeln!(
                full_message,
                "The agent's {agent_commits} commit(s) are not kept: they may hold the secret."
            );
        }
        let start_label = match start.start_commit() {
            Some(oid) => oid.to_string(),
            None => String::from("unborn"),
        };
        let _ = writeln!(full_message, "Cycle-Start: {start_label}");
        let signature = Signature::now(author.0, author.1).map_err(git_error)?;
        let oid = repo
            .commit(
                None,
                &signature,
                &signature,
                &full_message,
                &masked_tree,
                &parents,
            )
            .map_err(git_error)?;
        self.name_attempt(&repo, OP, cycle, oid)
    }

    /// Points `refs/ralph/attempts/<cycle>` (or the first free `-<n>`) at `oid`.
    fn name_attempt(
        &self,
        repo: &Repository,
        op: &'static str,
        cycle: u64,
        oid: Oid,
    ) -> Result<String> {
        for attempt_idx in 1u32.. {
            let name = if attempt_idx == 1 {
                format!("{ATTEMPTS_PREFIX}{cycle}")
            } else {
                format!("{ATTEMPTS_PREFIX}{cycle}-{attempt_idx}")
            };
            match repo.reference(&name, oid, false, "ralphd: save attempt") {
                Ok(_) => return Ok(name),
                Err(error) if error.code() == ErrorCode::Exists => continue,
                Err(error) => return Err(self.git_error(op, error)),
            }
        }
        unreachable!("u32 attempt suffixes ran out")
    }

    /// [`Self::save_attempt`] when the cycle changed anything (files,
    /// commits, where HEAD is, submodules); returns the attempt's ref, `None`
    /// when there was nothing to save. Callers roll back ([`Self::rollback`])
    /// only once this has succeeded.
    pub(crate) fn save_changes(
        &self,
        start: &CycleStart,
        cycle: u64,
        message: &str,
        author_name: &str,
        author_email: &str,
    ) -> Result<Option<String>> {
        if !self.changed_since(start)? {
            return Ok(None);
        }
        let (reference, _) = self.save_attempt(start, cycle, message, author_name, author_email)?;
        Ok(Some(reference))
    }

    /// Saves the whole attempt (every non-ignored file of the work tree, on
    /// top of HEAD, so the agent's commits are its ancestors) as a commit under
    /// `refs/ralph/attempts/<cycle>`, or `<cycle>-2`, `-3`… when that exists.
    /// When HEAD left the start branch and the branch moved, the branch's tip
    /// is a second parent, so what the agent committed there stays reachable
    /// too. Each changed submodule's work is saved first, the same way, in the
    /// submodule's own repository; the message names those refs
    /// (`Submodule-Attempt: <path> <ref>`). HEAD, the index and the work tree
    /// are not touched. Returns the ref name and the commit.
    pub(crate) fn save_attempt(
        &self,
        start: &CycleStart,
        cycle: u64,
        message: &str,
        author_name: &str,
        author_email: &str,
    ) -> Result<(String, Oid)> {
        const OP: &str = "save attempt";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let tree_oid = self.worktree_tree(OP)?;
        let tree = repo.find_tree(tree_oid).map_err(git_error)?;
        let submodule_lines =
            self.save_submodule_attempts(start, cycle, message, author_name, author_email)?;
        let head_oid = read_head(&repo).map_err(git_error)?.oid();
        let mut parent_oids: Vec<Oid> = head_oid.into_iter().collect();
        if let HeadState::Branch { refname, oid } = &start.head
            && let Some(tip) = branch_tip(&repo, refname).map_err(git_error)?
            && tip != *oid
            && Some(tip) != head_oid
        {
            parent_oids.push(tip);
        }
        let parent_commits = parent_oids
            .iter()
            .map(|oid| repo.find_commit(*oid))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(git_error)?;
        let parents: Vec<&git2::Commit<'_>> = parent_commits.iter().collect();
        let start_label = match start.start_commit() {
            Some(oid) => oid.to_string(),
            None => String::from("unborn"),
        };
        let mut full_message = format!("{}\n\nCycle-Start: {start_label}\n", message.trim_end());
        if !start.user_files.is_empty() {
            full_message.push_str("Pre-existing-Changes:");
            for file in &start.user_files {
                let _ = write!(full_message, " {}", file.path.display());
            }
            full_message.push('\n');
        }
        full_message.push_str(&submodule_lines);
        let signature = Signature::now(author_name, author_email).map_err(git_error)?;
        let oid = repo
            .commit(None, &signature, &signature, &full_message, &tree, &parents)
            .map_err(git_error)?;
        let name = self.name_attempt(&repo, OP, cycle, oid)?;
        Ok((name, oid))
    }

    /// Saves each changed submodule's work in its own repository
    /// ([`Self::save_changes`] there); returns one trailer line per submodule
    /// for the parent's attempt message.
    fn save_submodule_attempts(
        &self,
        start: &CycleStart,
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
    /// one (for instance [`GitError::Locked`]) can simply be retried.
    pub(crate) fn rollback(&self, start: &CycleStart) -> Result<()> {
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
        let current_tree = self.worktree_tree(OP)?;
        let diff = self
            .cycle_diff(&repo, start, current_tree)
            .map_err(git_error)?;
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

    /// Rolls a changed submodule back to its start (an unchanged one is not
    /// touched, so its index keeps its stat cache).
    fn restore_submodule(&self, op: &'static str, submodule: &SubmoduleStart) -> Result<()> {
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
    fn reattach_submodule(&self, op: &'static str, submodule: &SubmoduleStart) -> Result<GitRepo> {
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

    /// The saved attempts, oldest cycle first.
    pub(crate) fn list_attempts(&self) -> Result<Vec<Attempt>> {
        const OP: &str = "list attempts";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let mut attempts = Vec::new();
        let references = repo
            .references_glob(&format!("{ATTEMPTS_PREFIX}*"))
            .map_err(git_error)?;
        for reference in references {
            let reference = reference.map_err(git_error)?;
            let cycle_ref = String::from_utf8_lossy(reference.name_bytes()).into_owned();
            let commit = reference.peel_to_commit().map_err(git_error)?;
            let summary =
                String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned();
            let time = jiff::Timestamp::from_second(commit.time().seconds())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            attempts.push(Attempt {
                cycle_ref,
                oid: commit.id(),
                summary,
                time,
            });
        }
        attempts.sort_by_key(|attempt| attempt_sort_key(&attempt.cycle_ref));
        Ok(attempts)
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

    /// Whether a delta counts as the cycle's work: not in an excluded
    /// directory and not a submodule.
    fn counts(&self, delta: &git2::DiffDelta<'_>) -> bool {
        if delta.old_file().mode() == FileMode::Commit
            || delta.new_file().mode() == FileMode::Commit
        {
            return false;
        }
        delta_path(delta).is_some_and(|path| !self.is_excluded(path))
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

    fn cycle_diff<'repo>(
        &self,
        repo: &'repo Repository,
        start: &CycleStart,
        current_tree: Oid,
    ) -> std::result::Result<git2::Diff<'repo>, git2::Error> {
        let old = repo.find_tree(start.start_tree)?;
        let new = repo.find_tree(current_tree)?;
        let mut options = git2::DiffOptions::new();
        options.include_typechange(true);
        repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut options))
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
        let oid = repo.commit(
            None,
            &signature,
            &signature,
            "ralphd: uncommitted changes present at the start of the cycle\n",
            &tree,
            &parents,
        )?;
        repo.reference(pin_ref, oid, true, "ralphd: snapshot")?;
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

/// What replaces a line that held a secret in a saved attempt.
pub(crate) const MASKED_LINE: &str = "[a secret was here: masked by ralphd]";

/// `content` with the given 1-based lines replaced by [`MASKED_LINE`]
/// (line endings kept).
fn mask_lines(content: &[u8], lines: &[u32]) -> Vec<u8> {
    let mut masked = Vec::with_capacity(content.len());
    for (index, line) in content.split_inclusive(|byte| *byte == b'\n').enumerate() {
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        if lines.contains(&number) {
            masked.extend_from_slice(MASKED_LINE.as_bytes());
            if line.ends_with(b"\n") {
                masked.push(b'\n');
            }
        } else {
            masked.extend_from_slice(line);
        }
    }
    masked
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

fn read_head(repo: &Repository) -> std::result::Result<HeadState, git2::Error> {
    let head = repo.find_reference("HEAD")?;
    let Some(refname) = head.symbolic_target_bytes().map(<[u8]>::to_vec) else {
        let oid = head
            .target()
            .ok_or_else(|| git2::Error::from_str("HEAD has no target"))?;
        return Ok(HeadState::Detached { oid });
    };
    match repo.head() {
        Ok(resolved) => {
            let oid = resolved
                .target()
                .ok_or_else(|| git2::Error::from_str("HEAD does not resolve to a commit"))?;
            Ok(HeadState::Branch { refname, oid })
        }
        Err(error) if matches!(error.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
            Ok(HeadState::Unborn { refname })
        }
        Err(error) => Err(error),
    }
}

/// The tip of the branch `refname` (a full ref name), `None` if it does not exist.
fn branch_tip(repo: &Repository, refname: &[u8]) -> std::result::Result<Option<Oid>, git2::Error> {
    let name = std::str::from_utf8(refname)
        .map_err(|_| git2::Error::from_str("the start branch name is not UTF-8"))?;
    match repo.find_reference(name) {
        Ok(reference) => Ok(reference.resolve()?.target()),
        Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
        Err(error) => Err(error),
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

fn agent_commits(repo: &Repository, start: &CycleStart) -> std::result::Result<usize, git2::Error> {
    let Some(head) = read_head(repo)?.oid() else {
        return Ok(0);
    };
    if Some(head) == start.start_commit() {
        return Ok(0);
    }
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    if let Some(start_commit) = start.start_commit() {
        walk.hide(start_commit)?;
    }
    let mut n_commits = 0;
    for oid in walk {
        oid?;
        n_commits += 1;
    }
    Ok(n_commits)
}

fn empty_tree(repo: &Repository) -> std::result::Result<git2::Tree<'_>, git2::Error> {
    let oid = repo.treebuilder(None)?.write()?;
    repo.find_tree(oid)
}

fn delta_path<'a>(delta: &git2::DiffDelta<'a>) -> Option<&'a Path> {
    delta.new_file().path().or_else(|| delta.old_file().path())
}

fn status_letter(status: Delta) -> char {
    match status {
        Delta::Added | Delta::Untracked => 'A',
        Delta::Deleted => 'D',
        Delta::Renamed => 'R',
        Delta::Copied => 'C',
        Delta::Typechange => 'T',
        _ => 'M',
    }
}

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

fn short_hex(oid: Oid) -> String {
    let mut hex = oid.to_string();
    hex.truncate(7);
    hex
}

/// Cuts `text` to at most `max_bytes`, on a char boundary.
fn truncate_at_char_boundary(text: &mut String, max_bytes: usize) {
    if text.len() <= max_bytes {
        return;
    }
    let mut cut = max_bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
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

/// Sorts `refs/ralph/attempts/<cycle>[-<n>]` by cycle, then suffix, then name.
fn attempt_sort_key(cycle_ref: &str) -> (u64, u64, String) {
    let tail = cycle_ref.strip_prefix(ATTEMPTS_PREFIX).unwrap_or(cycle_ref);
    let (cycle, suffix) = tail.split_once('-').unwrap_or((tail, "1"));
    (
        cycle.parse().unwrap_or(u64::MAX),
        suffix.parse().unwrap_or(u64::MAX),
        cycle_ref.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use git2::{ErrorCode, IndexAddOption, Oid, Repository, RepositoryInitOptions, Signature};
    use tempfile::TempDir;

    use super::{GitError, GitRepo, MASKED_LINE, Progress, SigningFormat, Staged};

    const AUTHOR: (&str, &str) = ("ralphd", "ralphd@localhost");

    type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;
    type IndexEntries = Vec<(Vec<u8>, Oid, u32)>;
    /// HEAD, the branch label, the files and the index entries.
    type RepoState = (Option<Oid>, String, Files, IndexEntries);

    /// A temp repo with one commit on `main`: `a.txt`, `b.txt`, an executable
    /// `run.sh`, a `.gitignore` for `*.log`, and an ignored `keep.log`.
    struct Fixture {
        dir: TempDir,
        raw: Repository,
        repo: GitRepo,
    }

    impl Fixture {
        fn unborn() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let mut options = RepositoryInitOptions::new();
            options.initial_head("main");
            let raw = Repository::init_opts(dir.path(), &options).unwrap();
            let repo = GitRepo::open(dir.path()).unwrap();
            Fixture { dir, raw, repo }
        }

        fn new() -> Fixture {
            let fixture = Fixture::unborn();
            fixture.write("a.txt", "alpha\n");
            fixture.write("b.txt", "bravo\n");
            fixture.write("run.sh", "#!/bin/sh\necho hi\n");
            fixture.chmod("run.sh", 0o755);
            fixture.write(".gitignore", "*.log\n");
            fixture.write("keep.log", "ignored, never touched\n");
            fixture.commit_all("first");
            fixture
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, contents: &str) {
            let path = self.path(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.path(rel)).unwrap()
        }

        fn chmod(&self, rel: &str, mode: u32) {
            fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
        }

        fn mode(&self, rel: &str) -> u32 {
            fs::metadata(self.path(rel)).unwrap().permissions().mode() & 0o777
        }

        /// `git add -A && git commit` as the agent would do it.
        fn commit_all(&self, message: &str) -> Oid {
            let mut index = self.raw.index().unwrap();
            index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
            index.update_all(["*"], None).unwrap();
            index.write().unwrap();
            let tree = self.raw.find_tree(index.write_tree().unwrap()).unwrap();
            let signature = Signature::now("agent", "agent@example.com").unwrap();
            let parent = self
                .raw
                .head()
                .ok()
                .map(|head| head.peel_to_commit().unwrap());
            let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
            self.raw
                .commit(
                    Some("HEAD"),
                    &signature,
                    &signature,
                    message,
                    &tree,
                    &parents,
                )
                .unwrap()
        }

        fn stage(&self, rel: &str) {
            let mut index = self.raw.index().unwrap();
            index.read(true).unwrap();
            index.add_path(Path::new(rel)).unwrap();
            index.write().unwrap();
        }

        fn head(&self) -> Option<Oid> {
            self.raw.head().ok().and_then(|head| head.target())
        }

        /// Every file under the work tree except `.git`: content and mode.
        fn files(&self) -> Files {
            let mut files = BTreeMap::new();
            let mut pending = vec![self.dir.path().to_path_buf()];
            while let Some(dir) = pending.pop() {
                for entry in fs::read_dir(&dir).unwrap() {
                    let entry = entry.unwrap();
                    let path = entry.path();
                    if path.file_name().unwrap() == ".git" {
                        continue;
                    }
                    let metadata = fs::symlink_metadata(&path).unwrap();
                    let rel = path.strip_prefix(self.dir.path()).unwrap().to_path_buf();
                    if metadata.is_dir() {
                        pending.push(path);
                    } else if metadata.file_type().is_symlink() {
                        let target = fs::read_link(&path).unwrap();
                        files.insert(
                            rel,
                            (target.into_os_string().into_encoded_bytes(), 0o120000),
                        );
                    } else {
                        let mode = metadata.permissions().mode() & 0o777;
                        files.insert(rel, (fs::read(&path).unwrap(), mode));
                    }
                }
            }
            files
        }

        /// The index entries: path, blob and mode.
        fn index_entries(&self) -> IndexEntries {
            let mut index = self.raw.index().unwrap();
            index.read(true).unwrap();
            index
                .iter()
                .map(|entry| (entry.path, entry.id, entry.mode))
                .collect()
        }

        /// The whole observable state: HEAD, the branch, files and index.
        fn state(&self) -> RepoState {
            (
                self.head(),
                self.repo.branch_label().unwrap(),
                self.files(),
                self.index_entries(),
            )
        }

        fn file_in_commit(&self, commit: Oid, rel: &str) -> Option<Vec<u8>> {
            let tree = self.raw.find_commit(commit).unwrap().tree().unwrap();
            let entry = tree.get_path(Path::new(rel)).ok()?;
            Some(self.raw.find_blob(entry.id()).unwrap().content().to_vec())
        }
    }

    #[test]
    fn rollback_restores_the_start_state_and_the_attempt_holds_the_edit() {
        let fixture = Fixture::new();
        let before = fixture.state();
        let start = fixture.repo.begin_cycle().unwrap();

        fixture.write("a.txt", "alpha\nedited by the agent\n");
        fs::remove_file(fixture.path("b.txt")).unwrap();
        fixture.write("new/deep/c.txt", "created\n");
        fixture.write("new/agent.log", "ignored output of the agent\n");
        fixture.chmod("run.sh", 0o644);
        fixture.stage("a.txt");

        let progress = fixture.repo.measure_progress(&start).unwrap();
        assert_eq!(
            progress,
            Progress {
                files_changed: 4,
                insertions: 2,
                deletions: 1,
                agent_commits: 0
            }
        );
        let summary = fixture.repo.diff_summary(&start, 4096).unwrap();
        assert!(summary.contains("M a.txt +1 -0"), "{summary}");
        assert!(summary.contains("D b.txt"), "{summary}");
        assert!(summary.contains("A new/deep/c.txt"), "{summary}");
        assert!(summary.contains("+edited by the agent"), "{summary}");

        let (cycle_ref, attempt) = fixture
            .repo
            .save_attempt(
                &start,
                7,
                "ralphd: cycle 7 failed: checks",
                AUTHOR.0,
                AUTHOR.1,
            )
            .unwrap();
        assert_eq!(cycle_ref, "refs/ralph/attempts/7");
        assert_eq!(
            fixture.file_in_commit(attempt, "a.txt").unwrap(),
            b"alpha\nedited by the agent\n"
        );
        assert_eq!(
            fixture.file_in_commit(attempt, "new/deep/c.txt").unwrap(),
            b"created\n"
        );
        assert_eq!(fixture.file_in_commit(attempt, "b.txt"), None);
        assert_eq!(fixture.file_in_commit(attempt, "new/agent.log"), None);
        assert_eq!(
            fixture
                .raw
                .find_commit(attempt)
                .unwrap()
                .parent_id(0)
                .unwrap(),
            before.0.unwrap()
        );
        // Saving did not touch the work tree, the index or HEAD.
        assert_eq!(
            fixture
                .index_entries()
                .iter()
                .find(|e| e.0 == b"a.txt")
                .unwrap()
                .1,
            fixture.raw.blob(b"alpha\nedited by the agent\n").unwrap()
        );

        fixture.repo.rollback(&start).unwrap();
        let mut after = fixture.state();
        // The agent's ignored file is left alone; everything else is exact.
        assert_eq!(
            after.2.remove(Path::new("new/agent.log")).unwrap().0,
            b"ignored output of the agent\n"
        );
        assert_eq!(after, before);
        assert_eq!(fixture.mode("run.sh"), 0o755);
        assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());

        // A second attempt for the same cycle never overwrites the first.
        let (second_ref, _) = fixture
            .repo
            .save_attempt(&start, 7, "again", AUTHOR.0, AUTHOR.1)
            .unwrap();
        assert_eq!(second_ref, "refs/ralph/attempts/7-2");
        let attempts = fixture.repo.list_attempts().unwrap();
        let names: Vec<&str> = attempts.iter().map(|a| a.cycle_ref.as_str()).collect();
        assert_eq!(names, ["refs/ralph/attempts/7", "refs/ralph/attempts/7-2"]);
        assert_eq!(attempts[0].oid, attempt);
        assert_eq!(attempts[0].summary, "ralphd: cycle 7 failed: checks");
    }

    #[test]
    fn agent_commits_count_as_progress_and_are_kept() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("a.txt", "alpha\nby the agent\n");
        let agent_head = fixture.commit_all("agent: edit a");

        let progress = fixture.repo.measure_progress(&start).unwrap();
        assert_eq!(
            progress,
            Progress {
                files_changed: 1,
                insertions: 1,
                deletions: 0,
                agent_commits: 1
            }
        );
        assert!(
            fixture
                .repo
                .diff_summary(&start, 4096)
                .unwrap()
                .contains("agent: edit a")
        );
        // Everything is committed already: no empty commit, the agent's HEAD.
        let committed = fixture
            .repo
            .commit_cycle(&start, "ralphd: cycle 1: x", AUTHOR.0, AUTHOR.1)
            .unwrap();
        assert_eq!(committed, Some(agent_head));
        assert_eq!(fixture.head(), Some(agent_head));

        // Agent commits plus uncommitted work: one more commit on top.
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("b.txt", "bravo\ncommitted by the agent\n");
        let agent_head = fixture.commit_all("agent: edit b");
        fixture.write("c.txt", "left for the daemon\n");
        let committed = fixture
            .repo
            .commit_cycle(&start, "ralphd: cycle 2: y", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        let commit = fixture.raw.find_commit(committed).unwrap();
        assert_eq!(commit.parent_ids().collect::<Vec<_>>(), [agent_head]);
        assert_eq!(commit.author().name_bytes(), b"ralphd");
        assert_eq!(commit.message_bytes(), b"ralphd: cycle 2: y");
        assert_eq!(
            fixture.file_in_commit(committed, "c.txt").unwrap(),
            b"left for the daemon\n"
        );
        assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
    }

    #[test]
    fn commit_stages_deletions_and_respects_gitignore() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        fs::remove_file(fixture.path("b.txt")).unwrap();
        fixture.write("d.txt", "delta\n");
        fixture.write("build.log", "ignored\n");
        let committed = fixture
            .repo
            .commit_cycle(&start, "ralphd: cycle 1: z", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        assert_eq!(fixture.file_in_commit(committed, "b.txt"), None);
        assert_eq!(
            fixture.file_in_commit(committed, "d.txt").unwrap(),
            b"delta\n"
        );
        assert_eq!(fixture.file_in_commit(committed, "build.log"), None);
        assert_eq!(fixture.head(), Some(committed));
        assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
    }

    #[test]
    fn no_changes_is_empty_progress_and_no_commit() {
        let fixture = Fixture::new();
        let before = fixture.state();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("agent.log", "only ignored output\n");
        let progress = fixture.repo.measure_progress(&start).unwrap();
        assert!(progress.is_empty(), "{progress:?}");
        assert_eq!(progress, Progress::default());
        assert!(
            fixture
                .repo
                .diff_summary(&start, 4096)
                .unwrap()
                .starts_with("0 file(s) changed")
        );
        assert_eq!(
            fixture
                .repo
                .commit_cycle(&start, "m", AUTHOR.0, AUTHOR.1)
                .unwrap(),
            None
        );
        let mut after = fixture.state();
        after.2.remove(Path::new("agent.log"));
        assert_eq!(after, before);
    }

    /// `--allow-dirty`: the user's modified (unstaged and staged), untracked,
    /// executable and deleted files.
    fn make_user_changes(fixture: &Fixture) {
        fixture.write("a.txt", "alpha\nthe user's unsaved work\n");
        fixture.write("notes/todo.txt", "user's untracked notes\n");
        fixture.write("tool.sh", "#!/bin/sh\n# user's untracked script\n");
        fixture.chmod("tool.sh", 0o750);
        fs::remove_file(fixture.path("b.txt")).unwrap();
        fixture.write("run.sh", "#!/bin/sh\necho staged by the user\n");
        fixture.stage("run.sh");
        std::os::unix::fs::symlink("a.txt", fixture.path("link")).unwrap();
        fixture.write("readonly.txt", "user's read-only file\n");
        fixture.chmod("readonly.txt", 0o444);
    }

    #[test]
    fn allow_dirty_user_changes_survive_a_rollback_byte_for_byte() {
        let fixture = Fixture::new();
        make_user_changes(&fixture);
        let before = fixture.state();
        let start = fixture.repo.begin_cycle().unwrap();
        let user_paths: Vec<&Path> = start.user_paths().collect();
        assert_eq!(user_paths.len(), 7, "{user_paths:?}");
        // The snapshot is kept alive by a ref.
        let snapshot = fixture.raw.refname_to_id("refs/ralph/dirty-start").unwrap();
        assert_eq!(
            fixture.file_in_commit(snapshot, "notes/todo.txt").unwrap(),
            b"user's untracked notes\n"
        );

        // Not progress: the user's changes are the baseline.
        assert!(fixture.repo.measure_progress(&start).unwrap().is_empty());

        // The agent edits a user file, deletes one, recreates the deleted one,
        // changes a mode and adds its own file.
        fixture.write("a.txt", "agent overwrote everything\n");
        fs::remove_file(fixture.path("notes/todo.txt")).unwrap();
        fixture.write("b.txt", "recreated by the agent\n");
        fixture.chmod("tool.sh", 0o644);
        fixture.write("agent.txt", "new\n");
        fs::remove_file(fixture.path("link")).unwrap();
        fixture.write("link", "a file where the user's symlink was\n");
        fixture.chmod("readonly.txt", 0o644);
        fixture.write("readonly.txt", "changed\n");
        let progress = fixture.repo.measure_progress(&start).unwrap();
        assert_eq!(progress.files_changed, 7, "{progress:?}");

        fixture
            .repo
            .save_attempt(&start, 1, "ralphd: cycle 1 failed", AUTHOR.0, AUTHOR.1)
            .unwrap();
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.state(), before);
        assert_eq!(fixture.mode("tool.sh"), 0o750);
        assert!(!fixture.path("b.txt").exists());
    }

    #[test]
    fn allow_dirty_user_changes_are_never_committed() {
        let fixture = Fixture::new();
        let first = fixture.head().unwrap();
        make_user_changes(&fixture);
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("agent.txt", "the agent's work\n");
        fixture.write(
            "a.txt",
            "alpha\nthe user's unsaved work\nand the agent's line\n",
        );
        let user_files_before: Vec<_> = ["a.txt", "notes/todo.txt", "tool.sh", "run.sh"]
            .iter()
            .map(|rel| (fixture.read(rel), fixture.mode(rel)))
            .collect();

        let committed = fixture
            .repo
            .commit_cycle(&start, "ralphd: cycle 1: agent", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        assert_eq!(
            fixture.file_in_commit(committed, "agent.txt").unwrap(),
            b"the agent's work\n"
        );
        for rel in ["a.txt", "b.txt", "run.sh"] {
            assert_eq!(
                fixture.file_in_commit(committed, rel),
                fixture.file_in_commit(first, rel),
                "{rel}"
            );
        }
        assert_eq!(fixture.file_in_commit(committed, "notes/todo.txt"), None);
        assert_eq!(fixture.file_in_commit(committed, "tool.sh"), None);
        // The work tree is untouched and the user's changes are still pending,
        // the staged one still staged.
        let user_files_after: Vec<_> = ["a.txt", "notes/todo.txt", "tool.sh", "run.sh"]
            .iter()
            .map(|rel| (fixture.read(rel), fixture.mode(rel)))
            .collect();
        assert_eq!(user_files_after, user_files_before);
        assert!(!fixture.path("b.txt").exists());
        let mut dirty = fixture.repo.dirty_paths(10).unwrap();
        dirty.sort();
        assert_eq!(
            dirty,
            [
                "a.txt",
                "b.txt",
                "link",
                "notes/",
                "readonly.txt",
                "run.sh",
                "tool.sh"
            ]
        );
        let staged_run = fixture
            .raw
            .blob(b"#!/bin/sh\necho staged by the user\n")
            .unwrap();
        assert!(
            fixture
                .index_entries()
                .iter()
                .any(|e| e.0 == b"run.sh" && e.1 == staged_run)
        );
    }

    #[test]
    fn home_inside_the_repo_is_excluded() {
        let fixture = Fixture::new();
        // A tracked file inside the home's state dir, like the project's own.
        fixture.write(".ralph/state/README.md", "tracked\n");
        fixture.write(".ralph/ralph.toml", "# config\n");
        let first = fixture.commit_all("add home");
        let mut repo = fixture.repo.clone();
        let dirs = repo.home_dirs_in_repo(&fixture.path(".ralph"));
        assert_eq!(
            dirs,
            [".ralph/state", ".ralph/archive", ".ralph/logs"].map(PathBuf::from)
        );
        repo.ensure_excluded(&dirs).unwrap();
        repo.ensure_excluded(&dirs).unwrap();
        let exclude = fs::read_to_string(fixture.raw.path().join("info/exclude")).unwrap();
        assert_eq!(exclude.matches("/.ralph/state/\n").count(), 1, "{exclude}");
        assert!(exclude.contains("/.ralph/archive/\n") && exclude.contains("/.ralph/logs/\n"));
        // A fresh value sees the ignore rule too.
        fixture.write(".ralph/state/progress.json", "{\"version\":1}\n");
        assert!(
            GitRepo::open(fixture.dir.path())
                .unwrap()
                .dirty_paths(10)
                .unwrap()
                .is_empty()
        );

        let start = repo.begin_cycle().unwrap();
        fixture.write(".ralph/state/cycles/1/scan.md", "phase output\n");
        fixture.write(".ralph/state/README.md", "rewritten by the daemon\n");
        fixture.write(".ralph/logs/ralphd.log.2026-11-22", "log\n");
        assert!(repo.measure_progress(&start).unwrap().is_empty());
        assert!(repo.dirty_paths(10).unwrap().is_empty());

        fixture.write("a.txt", "agent\n");
        assert_eq!(repo.measure_progress(&start).unwrap().files_changed, 1);
        let committed = repo
            .commit_cycle(&start, "c", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        assert_eq!(
            fixture
                .file_in_commit(committed, ".ralph/state/README.md")
                .unwrap(),
            b"tracked\n"
        );
        assert_eq!(
            fixture.file_in_commit(committed, ".ralph/state/progress.json"),
            None
        );
        assert_eq!(
            fixture.file_in_commit(committed, ".ralph/state/cycles/1/scan.md"),
            None
        );

        let start = repo.begin_cycle().unwrap();
        fixture.write("b.txt", "agent\n");
        fixture.write(".ralph/state/status.json", "{}\n");
        repo.save_attempt(&start, 2, "x", AUTHOR.0, AUTHOR.1)
            .unwrap();
        repo.rollback(&start).unwrap();
        assert_eq!(fixture.read("b.txt"), "bravo\n");
        assert_eq!(fixture.read(".ralph/state/status.json"), "{}\n");
        assert_eq!(
            fixture.read(".ralph/state/README.md"),
            "rewritten by the daemon\n"
        );
        assert_eq!(
            fixture.read(".ralph/state/cycles/1/scan.md"),
            "phase output\n"
        );
        assert_ne!(fixture.head(), Some(first));
    }

    #[test]
    fn home_outside_the_repo_excludes_nothing() {
        let fixture = Fixture::new();
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(fixture.repo.home_dirs_in_repo(elsewhere.path()).is_empty());
        let same = fixture.repo.home_dirs_in_repo(fixture.dir.path());
        assert_eq!(same, ["state", "archive", "logs"].map(PathBuf::from));
        let mut repo = fixture.repo.clone();
        assert!(
            repo.ensure_excluded(&[PathBuf::from("../outside")])
                .is_err()
        );
    }

    #[test]
    fn unborn_branch_gets_its_first_commit() {
        let fixture = Fixture::unborn();
        assert_eq!(fixture.repo.branch_label().unwrap(), "main");
        assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
        let start = fixture.repo.begin_cycle().unwrap();
        assert_eq!(start.start_commit(), None);
        assert!(fixture.repo.measure_progress(&start).unwrap().is_empty());
        fixture.write("src/lib.rs", "fn main() {}\n");
        assert_eq!(
            fixture.repo.measure_progress(&start).unwrap().files_changed,
            1
        );
        let committed = fixture
            .repo
            .commit_cycle(&start, "ralphd: cycle 1: start", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        let commit = fixture.raw.find_commit(committed).unwrap();
        assert_eq!(commit.parent_count(), 0);
        assert_eq!(
            fixture.raw.refname_to_id("refs/heads/main").unwrap(),
            committed
        );
        assert_eq!(fixture.repo.branch_label().unwrap(), "main");
    }

    #[test]
    fn unborn_branch_rolls_back_to_unborn() {
        let fixture = Fixture::unborn();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("one.txt", "1\n");
        fixture.commit_all("agent commit on the unborn branch");
        fixture.write("two.txt", "2\n");
        fixture.stage("two.txt");
        let progress = fixture.repo.measure_progress(&start).unwrap();
        assert_eq!((progress.files_changed, progress.agent_commits), (2, 1));
        let (_, attempt) = fixture
            .repo
            .save_attempt(&start, 1, "x", AUTHOR.0, AUTHOR.1)
            .unwrap();
        assert_eq!(fixture.raw.find_commit(attempt).unwrap().parent_count(), 1);
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(
            fixture.raw.head().err().map(|e| e.code()),
            Some(ErrorCode::UnbornBranch)
        );
        assert!(fixture.files().is_empty(), "{:?}", fixture.files());
        assert!(fixture.index_entries().is_empty());
        assert_eq!(fixture.repo.branch_label().unwrap(), "main");
    }

    #[test]
    fn detached_head_label_and_rollback() {
        let fixture = Fixture::new();
        let first = fixture.head().unwrap();
        fixture.raw.set_head_detached(first).unwrap();
        let label = fixture.repo.branch_label().unwrap();
        assert_eq!(label, format!("detached-{}", &first.to_string()[..7]));
        let start = fixture.repo.begin_cycle().unwrap();
        assert_eq!(start.branch_label(), label);
        fixture.write("a.txt", "x\n");
        fixture.commit_all("agent on detached HEAD");
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.repo.branch_label().unwrap(), label);
        assert_eq!(fixture.read("a.txt"), "alpha\n");
    }

    #[test]
    fn rollback_drops_agent_commits_from_the_branch_and_the_attempt_keeps_them() {
        let fixture = Fixture::new();
        let before = fixture.state();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("a.txt", "committed by the agent\n");
        let agent_commit = fixture.commit_all("agent");
        fixture.write("b.txt", "uncommitted\n");
        let (_, attempt) = fixture
            .repo
            .save_attempt(&start, 3, "x", AUTHOR.0, AUTHOR.1)
            .unwrap();
        let attempt_commit = fixture.raw.find_commit(attempt).unwrap();
        assert_eq!(attempt_commit.parent_id(0).unwrap(), agent_commit);
        assert!(
            attempt_commit
                .message()
                .unwrap()
                .contains(&format!("Cycle-Start: {}", before.0.unwrap()))
        );
        assert_eq!(
            fixture.file_in_commit(attempt, "b.txt").unwrap(),
            b"uncommitted\n"
        );
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.state(), before);
        assert_eq!(
            fixture.repo.measure_progress(&start).unwrap(),
            Progress::default()
        );
    }

    #[test]
    fn rollback_undoes_a_branch_switch_by_the_agent() {
        let fixture = Fixture::new();
        let before = fixture.state();
        let start = fixture.repo.begin_cycle().unwrap();
        let first = fixture.raw.find_commit(fixture.head().unwrap()).unwrap();
        fixture.raw.branch("agent-branch", &first, false).unwrap();
        fixture.raw.set_head("refs/heads/agent-branch").unwrap();
        fixture.write("a.txt", "on the agent's branch\n");
        let agent_commit = fixture.commit_all("agent");
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.state(), before);
        // The other branch is left as the agent made it.
        assert_eq!(
            fixture
                .raw
                .refname_to_id("refs/heads/agent-branch")
                .unwrap(),
            agent_commit
        );
    }

    #[test]
    fn rollback_never_removes_files_that_were_ignored_at_start() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        // The agent un-ignores the user's ignored file and adds its own.
        fixture.write(".gitignore", "\n");
        fixture.write("agent.txt", "x\n");
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.read("keep.log"), "ignored, never touched\n");
        assert_eq!(fixture.read(".gitignore"), "*.log\n");
        assert!(!fixture.path("agent.txt").exists());
    }

    #[test]
    fn index_lock_is_a_locked_error_and_changes_nothing() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("a.txt", "agent\n");
        fixture.write("new.txt", "agent\n");
        let lock = fixture.raw.path().join("index.lock");
        fs::write(&lock, "").unwrap();
        let before = fixture.state();

        let error = fixture
            .repo
            .commit_cycle(&start, "m", AUTHOR.0, AUTHOR.1)
            .unwrap_err();
        assert!(matches!(error, GitError::Locked { .. }), "{error}");
        assert!(error.is_transient());
        let message = error.to_string();
        assert!(
            message.contains("index.lock")
                && message.contains(&fixture.repo.workdir().display().to_string()),
            "{message}"
        );
        let error = fixture.repo.rollback(&start).unwrap_err();
        assert!(matches!(error, GitError::Locked { .. }), "{error}");
        assert_eq!(fixture.state(), before);
        assert!(lock.exists());

        fs::remove_file(&lock).unwrap();
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.read("a.txt"), "alpha\n");
        assert!(!fixture.path("new.txt").exists());
    }

    #[test]
    fn head_moved_during_the_commit_is_an_error() {
        let fixture = Fixture::new();
        let repo = fixture.repo.open_repo("test").unwrap();
        let stale = repo.head().unwrap().peel_to_commit().unwrap();
        fixture.write("a.txt", "someone else\n");
        fixture.commit_all("someone else committed");
        let signature = Signature::now("ralphd", "ralphd@localhost").unwrap();
        let tree = stale.tree().unwrap();
        let error = fixture
            .repo
            .commit_on_head(&repo, "commit", &signature, "m", &tree, Some(&stale))
            .unwrap_err();
        assert!(matches!(error, GitError::HeadMoved { .. }), "{error}");
    }

    #[test]
    fn rollback_handles_odd_paths_and_leaves_nested_repositories_alone() {
        use std::os::unix::ffi::OsStrExt;
        let fixture = Fixture::new();
        fixture.write("dir/x.txt", "tracked in a directory\n");
        fixture.commit_all("add dir");
        // An untracked nested repository of the user's.
        let nested = Repository::init(fixture.path("vendor/lib")).unwrap();
        fs::write(fixture.path("vendor/lib/file.txt"), "nested\n").unwrap();
        drop(nested);
        let before = fixture.state();
        let start = fixture.repo.begin_cycle().unwrap();

        // The agent replaces a directory with a file, creates a file whose
        // name is not UTF-8 and one with spaces and glob characters.
        fs::remove_dir_all(fixture.path("dir")).unwrap();
        fixture.write("dir", "now a file\n");
        let odd = fixture
            .dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"bad-\xff.txt"));
        fs::write(&odd, "x\n").unwrap();
        fixture.write("sp ace [*].txt", "y\n");
        assert_eq!(
            fixture.repo.measure_progress(&start).unwrap().files_changed,
            4
        );
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.state(), before);
        assert_eq!(
            fs::read_to_string(fixture.path("vendor/lib/file.txt")).unwrap(),
            "nested\n"
        );
    }

    #[test]
    fn executable_bit_is_restored_for_tracked_files() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.chmod("run.sh", 0o644);
        assert_eq!(
            fixture.repo.measure_progress(&start).unwrap().files_changed,
            1
        );
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.mode("run.sh"), 0o755);
        assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
    }

    #[test]
    fn open_names_the_path_when_not_a_work_tree() {
        let plain = tempfile::tempdir().unwrap();
        let error = GitRepo::open(plain.path()).unwrap_err();
        assert!(matches!(error, GitError::NotAWorkTree { .. }));
        assert!(
            error
                .to_string()
                .contains(&plain.path().display().to_string()),
            "{error}"
        );

        let fixture = Fixture::new();
        fs::create_dir(fixture.path("sub")).unwrap();
        let error = GitRepo::open(&fixture.path("sub")).unwrap_err();
        assert!(
            error.to_string().contains("inside the work tree"),
            "{error}"
        );

        let bare = tempfile::tempdir().unwrap();
        Repository::init_bare(bare.path()).unwrap();
        let error = GitRepo::open(bare.path()).unwrap_err();
        assert!(error.to_string().contains("bare"), "{error}");
    }

    #[test]
    fn dirty_paths_lists_changes_up_to_the_limit() {
        let fixture = Fixture::new();
        assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
        fixture.write("a.txt", "modified\n");
        fixture.write("new.txt", "untracked\n");
        fixture.write("more.log", "ignored\n");
        fixture.write("b.txt", "staged\n");
        fixture.stage("b.txt");
        let mut dirty = fixture.repo.dirty_paths(10).unwrap();
        dirty.sort();
        assert_eq!(dirty, ["a.txt", "b.txt", "new.txt"]);
        assert_eq!(fixture.repo.dirty_paths(2).unwrap().len(), 2);
    }

    #[test]
    fn diff_summary_is_cut_on_a_char_boundary() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("a.txt", &"é".repeat(5000));
        for max_bytes in [0, 1, 40, 41, 200, 201, 1000] {
            let summary = fixture.repo.diff_summary(&start, max_bytes).unwrap();
            assert!(summary.len() <= max_bytes, "{max_bytes}: {}", summary.len());
        }
        let summary = fixture.repo.diff_summary(&start, 300).unwrap();
        assert!(
            summary.contains("a.txt") && summary.contains("truncated"),
            "{summary}"
        );
    }

    /// A Fixture whose repo has a checked-out submodule `lib` (one commit:
    /// `lib.txt`), committed on main. The origin dir must outlive the test.
    fn with_submodule() -> (Fixture, TempDir) {
        let fixture = Fixture::new();
        let origin = tempfile::tempdir().unwrap();
        let origin_repo = Repository::init(origin.path()).unwrap();
        fs::write(origin.path().join("lib.txt"), "library\n").unwrap();
        let mut index = origin_repo.index().unwrap();
        index.add_path(Path::new("lib.txt")).unwrap();
        let tree = origin_repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("t", "t@t").unwrap();
        origin_repo
            .commit(Some("HEAD"), &signature, &signature, "lib", &tree, &[])
            .unwrap();
        {
            let mut submodule = fixture
                .raw
                .submodule(origin.path().to_str().unwrap(), Path::new("lib"), true)
                .unwrap();
            submodule.clone(None).unwrap();
            submodule.add_finalize().unwrap();
        }
        fixture.commit_all("add the lib submodule");
        (fixture, origin)
    }

    fn lib_repo(fixture: &Fixture) -> Repository {
        Repository::open(fixture.path("lib")).unwrap()
    }

    fn commit_in(repo: &Repository, message: &str) -> Oid {
        let mut index = repo.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("agent", "agent@example.com").unwrap();
        let parent = repo.head().unwrap().peel_to_commit().unwrap();
        repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            message,
            &tree,
            &[&parent],
        )
        .unwrap()
    }

    #[test]
    fn commits_that_build_on_the_start_are_no_trespass() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
        fixture.write("a.txt", "agent\n");
        fixture.commit_all("agent");
        fixture.write("b.txt", "uncommitted\n");
        assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
    }

    #[test]
    fn a_reset_or_an_amend_moves_the_branch_off_the_start_commit() {
        let fixture = Fixture::new();
        let first = fixture.head().unwrap();
        fixture.write("a.txt", "user\n");
        let user_commit = fixture.commit_all("user work");
        let start = fixture.repo.begin_cycle().unwrap();
        // `git reset --hard HEAD~1`, then a commit of the agent's on top.
        fixture
            .raw
            .reference("refs/heads/main", first, true, "reset")
            .unwrap();
        fixture
            .raw
            .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .unwrap();
        fixture.write("agent.txt", "agent\n");
        let agent_commit = fixture.commit_all("agent rewrote history");
        let found = fixture.repo.trespasses(&start).unwrap();
        assert_eq!(
            found,
            [super::Trespass::RewroteHistory {
                branch: "branch main".to_owned(),
                commit: user_commit,
            }]
        );
        let text = found[0].to_string();
        assert!(
            text.starts_with("the agent moved branch main off ")
                && text.contains(&user_commit.to_string()[..7]),
            "{text}"
        );

        let reference = fixture
            .repo
            .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        let attempt = fixture.raw.refname_to_id(&reference).unwrap();
        assert!(
            fixture
                .raw
                .graph_descendant_of(attempt, agent_commit)
                .unwrap()
        );
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.head(), Some(user_commit));
        assert_eq!(fixture.read("a.txt"), "user\n");
        assert!(!fixture.path("agent.txt").exists());
        assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
    }

    #[test]
    fn a_switch_and_a_deleted_branch_are_named_and_undone() {
        let fixture = Fixture::new();
        let before = fixture.state();
        let start = fixture.repo.begin_cycle().unwrap();
        let first = fixture.raw.find_commit(fixture.head().unwrap()).unwrap();
        fixture.raw.branch("scratch", &first, false).unwrap();
        fixture.raw.set_head("refs/heads/scratch").unwrap();
        fixture
            .raw
            .find_reference("refs/heads/main")
            .unwrap()
            .delete()
            .unwrap();
        let found = fixture.repo.trespasses(&start).unwrap();
        let texts: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "the agent switched from branch main to branch scratch (git checkout/switch)",
                "the agent deleted branch main"
            ]
        );
        // Nothing else changed, yet there is something to save and undo.
        assert!(fixture.repo.measure_progress(&start).unwrap().is_empty());
        assert!(
            fixture
                .repo
                .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
                .unwrap()
                .is_some()
        );
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.state(), before);
        assert!(fixture.raw.find_reference("refs/heads/scratch").is_ok());
    }

    #[test]
    fn the_attempt_keeps_the_agents_commits_on_the_start_branch_and_on_its_own() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("a.txt", "on main\n");
        let on_main = fixture.commit_all("agent on main");
        let tip = fixture.raw.find_commit(on_main).unwrap();
        fixture.raw.branch("other", &tip, false).unwrap();
        fixture.raw.set_head("refs/heads/other").unwrap();
        fixture.write("b.txt", "on other\n");
        let on_other = fixture.commit_all("agent on other");
        // main moves back under the agent's commit while HEAD is elsewhere.
        fixture
            .raw
            .reference("refs/heads/main", start.start_commit().unwrap(), true, "")
            .unwrap();
        fixture.write("a.txt", "again\n");
        let (_, attempt) = fixture
            .repo
            .save_attempt(&start, 1, "m", AUTHOR.0, AUTHOR.1)
            .unwrap();
        assert_eq!(
            fixture
                .raw
                .find_commit(attempt)
                .unwrap()
                .parent_ids()
                .collect::<Vec<_>>(),
            [on_other]
        );

        // Now main carries an agent commit of its own that HEAD does not have.
        fixture
            .raw
            .reference("refs/heads/main", on_main, true, "")
            .unwrap();
        let main_tip = {
            let main = fixture.raw.find_commit(on_main).unwrap();
            let tree = main.tree().unwrap();
            let signature = Signature::now("agent", "a@a").unwrap();
            fixture
                .raw
                .commit(
                    Some("refs/heads/main"),
                    &signature,
                    &signature,
                    "agent again on main",
                    &tree,
                    &[&main],
                )
                .unwrap()
        };
        let (_, attempt) = fixture
            .repo
            .save_attempt(&start, 1, "m", AUTHOR.0, AUTHOR.1)
            .unwrap();
        assert_eq!(
            fixture
                .raw
                .find_commit(attempt)
                .unwrap()
                .parent_ids()
                .collect::<Vec<_>>(),
            [on_other, main_tip]
        );
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.head(), start.start_commit());
        assert_eq!(fixture.repo.branch_label().unwrap(), "main");
    }

    #[test]
    fn a_detached_head_moved_backwards_is_a_rewrite_and_a_branch_checkout_a_switch() {
        let fixture = Fixture::new();
        let first = fixture.head().unwrap();
        fixture.write("a.txt", "user\n");
        let user_commit = fixture.commit_all("user work");
        fixture.raw.set_head_detached(user_commit).unwrap();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("a.txt", "agent\n");
        fixture.commit_all("agent on the detached HEAD");
        assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
        fixture.raw.set_head_detached(first).unwrap();
        let texts: Vec<String> = fixture
            .repo
            .trespasses(&start)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(
            texts[0].starts_with("the agent moved the detached HEAD off "),
            "{texts:?}"
        );
        fixture.raw.set_head("refs/heads/main").unwrap();
        let texts: Vec<String> = fixture
            .repo
            .trespasses(&start)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            texts,
            [format!(
                "the agent switched from a detached HEAD at {} to branch main (git checkout/switch)",
                &user_commit.to_string()[..7]
            )]
        );
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.repo.branch_label().unwrap(), start.branch_label());
    }

    #[test]
    fn a_switch_on_an_unborn_branch_is_named() {
        let fixture = Fixture::unborn();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.raw.set_head("refs/heads/elsewhere").unwrap();
        let found = fixture.repo.trespasses(&start).unwrap();
        assert!(
            matches!(&found[..], [super::Trespass::LeftBranch { .. }]),
            "{found:?}"
        );
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.repo.branch_label().unwrap(), "main");
    }

    #[test]
    fn a_repository_without_submodules_records_none() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        assert!(start.submodules.is_empty());
        let json = serde_json::to_string(&start).unwrap();
        assert!(!json.contains("submodules"), "{json}");
        // An in-flight.json written before submodules were recorded still loads.
        let _: super::CycleStart = serde_json::from_str(&json).unwrap();
    }

    #[test]
    fn an_edit_inside_a_submodule_is_a_trespass_saved_there_and_undone() {
        let (fixture, _origin) = with_submodule();
        let lib = lib_repo(&fixture);
        let lib_head = lib.head().unwrap().target().unwrap();
        let start = fixture.repo.begin_cycle().unwrap();
        assert_eq!(start.submodules.len(), 1);
        assert!(fixture.repo.trespasses(&start).unwrap().is_empty());

        fixture.write("lib/lib.txt", "hacked\n");
        fixture.write("lib/new.txt", "new\n");
        // The parent sees no change of its own: today's blind spot.
        assert!(fixture.repo.measure_progress(&start).unwrap().is_empty());
        let found = fixture.repo.trespasses(&start).unwrap();
        assert_eq!(
            found,
            [super::Trespass::ChangedSubmodules {
                changes: vec!["lib (files edited)".to_owned()]
            }]
        );
        assert!(
            found[0]
                .to_string()
                .starts_with("the agent changed submodule lib (files edited)")
        );

        let reference = fixture
            .repo
            .save_changes(&start, 4, "m", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        let message = fixture
            .raw
            .find_reference(&reference)
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .message()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("Submodule-Attempt: lib refs/ralph/attempts/4"),
            "{message}"
        );
        let saved = lib
            .find_reference("refs/ralph/attempts/4")
            .unwrap()
            .peel_to_tree()
            .unwrap();
        assert!(saved.get_path(Path::new("new.txt")).is_ok());

        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.read("lib/lib.txt"), "library\n");
        assert!(!fixture.path("lib/new.txt").exists());
        assert_eq!(lib.head().unwrap().target(), Some(lib_head));
        assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
    }

    #[test]
    fn a_moved_submodule_head_is_a_trespass_and_is_put_back() {
        let (fixture, _origin) = with_submodule();
        let lib = lib_repo(&fixture);
        let lib_head = lib.head().unwrap().target().unwrap();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("lib/lib.txt", "committed by the agent\n");
        let agent_commit = commit_in(&lib, "agent inside lib");
        let found = fixture.repo.trespasses(&start).unwrap();
        assert_eq!(
            found,
            [super::Trespass::ChangedSubmodules {
                changes: vec!["lib (HEAD moved, files edited)".to_owned()]
            }]
        );
        fixture
            .repo
            .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        let saved = lib.refname_to_id("refs/ralph/attempts/1").unwrap();
        assert!(lib.graph_descendant_of(saved, agent_commit).unwrap());
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(lib.head().unwrap().target(), Some(lib_head));
        assert_eq!(fixture.read("lib/lib.txt"), "library\n");
    }

    #[test]
    fn a_removed_submodule_work_tree_is_reattached_and_restored() {
        let (fixture, _origin) = with_submodule();
        let lib_head = lib_repo(&fixture).head().unwrap().target().unwrap();
        let start = fixture.repo.begin_cycle().unwrap();
        fs::remove_dir_all(fixture.path("lib")).unwrap();
        let found = fixture.repo.trespasses(&start).unwrap();
        assert_eq!(
            found,
            [super::Trespass::ChangedSubmodules {
                changes: vec!["lib (its work tree was removed)".to_owned()]
            }]
        );
        fixture
            .repo
            .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.read("lib/lib.txt"), "library\n");
        assert_eq!(lib_repo(&fixture).head().unwrap().target(), Some(lib_head));
        assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
    }

    #[test]
    fn the_users_own_changes_inside_a_submodule_survive_the_rollback() {
        let (fixture, _origin) = with_submodule();
        fixture.write("lib/lib.txt", "the user's edit\n");
        let start = fixture.repo.begin_cycle().unwrap();
        assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
        fixture.write("lib/agent.txt", "agent\n");
        fixture.write("lib/lib.txt", "the agent's edit\n");
        assert_eq!(fixture.repo.trespasses(&start).unwrap().len(), 1);
        fixture
            .repo
            .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .unwrap();
        fixture.repo.rollback(&start).unwrap();
        assert_eq!(fixture.read("lib/lib.txt"), "the user's edit\n");
        assert!(!fixture.path("lib/agent.txt").exists());
    }

    /// The paths and blobs of a tree, sorted.
    fn tree_entries(fixture: &Fixture, tree: Oid) -> Vec<(String, Oid)> {
        let tree = fixture.raw.find_tree(tree).unwrap();
        let mut entries = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                entries.push((format!("{dir}{}", entry.name().unwrap()), entry.id()));
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        entries
    }

    #[test]
    fn the_hooks_index_holds_exactly_the_commit_even_beside_the_users_staged_change() {
        let fixture = Fixture::new();
        make_user_changes(&fixture);
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("agent.txt", "the agent's work\n");
        let Staged::Ready(staged) = fixture.repo.stage_commit(&start, true).unwrap() else {
            panic!("something to commit");
        };
        let hook_index_path = staged.hook_index().unwrap().to_path_buf();
        let mut hook_index = git2::Index::open(&hook_index_path).unwrap();
        hook_index.read(true).unwrap();
        let hook_tree = hook_index.write_tree_to(&fixture.raw).unwrap();
        assert_eq!(
            tree_entries(&fixture, hook_tree),
            tree_entries(&fixture, staged.tree),
            "the hooks see what will be committed"
        );
        assert!(
            hook_index.get_path(Path::new("agent.txt"), 0).is_some(),
            "with the agent's file"
        );
        let head_tree = fixture
            .raw
            .find_commit(fixture.head().unwrap())
            .unwrap()
            .tree_id();
        let run_sh = |tree| {
            tree_entries(&fixture, tree)
                .into_iter()
                .find(|(path, _)| path == "run.sh")
        };
        assert_eq!(
            run_sh(hook_tree),
            run_sh(head_tree),
            "not the user's staged run.sh"
        );

        let staged = fixture.repo.after_hooks(staged).unwrap();
        assert!(!hook_index_path.exists(), "the hooks' index is removed");
        let commit = fixture
            .repo
            .commit_staged(&staged, "ralphd: cycle 1: agent", AUTHOR.0, AUTHOR.1)
            .unwrap();
        assert_eq!(
            fixture.raw.find_commit(commit).unwrap().tree_id(),
            hook_tree
        );
    }

    #[test]
    fn what_a_hook_stages_is_committed_and_staged_in_the_real_index() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("a.txt", "alpha  \n");
        let Staged::Ready(staged) = fixture.repo.stage_commit(&start, true).unwrap() else {
            panic!("something to commit");
        };
        // A formatting hook: fixes the file and stages the fix in its index.
        fixture.write("a.txt", "alpha\n");
        let mut hook_index = git2::Index::open(staged.hook_index().unwrap()).unwrap();
        hook_index.read(true).unwrap();
        let blob = fixture.raw.blob(b"alpha\n").unwrap();
        let mut entry = hook_index.get_path(Path::new("a.txt"), 0).unwrap();
        entry.id = blob;
        entry.file_size = 6;
        hook_index.add(&entry).unwrap();
        hook_index.write().unwrap();

        let staged = fixture.repo.after_hooks(staged).unwrap();
        let commit = fixture
            .repo
            .commit_staged(&staged, "ralphd: cycle 1: format", AUTHOR.0, AUTHOR.1)
            .unwrap();
        assert_eq!(fixture.file_in_commit(commit, "a.txt").unwrap(), b"alpha\n");
        let staged_blob = fixture
            .index_entries()
            .into_iter()
            .find(|(path, _, _)| path == b"a.txt")
            .map(|(_, blob, _)| blob);
        assert_eq!(staged_blob, Some(blob), "the real index agrees with HEAD");
    }

    #[test]
    fn a_signed_commit_moves_the_branch_only_from_where_it_was() {
        let fixture = Fixture::new();
        let first = fixture.head().unwrap();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("agent.txt", "work\n");
        let Staged::Ready(staged) = fixture.repo.stage_commit(&start, false).unwrap() else {
            panic!("something to commit");
        };
        let payload = fixture
            .repo
            .commit_payload(&staged, "ralphd: cycle 1: signed", AUTHOR.0, AUTHOR.1)
            .unwrap();
        assert!(payload.contains(&format!("parent {first}")), "{payload}");
        let signature = "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n";
        let commit = fixture
            .repo
            .commit_signed(&staged, &payload, signature)
            .unwrap();
        assert_eq!(fixture.head(), Some(commit));
        assert_eq!(fixture.repo.branch_label().unwrap(), "main");
        let (stored, _) = fixture.raw.extract_signature(&commit, None).unwrap();
        assert_eq!(stored.as_str().unwrap(), signature);
        let reflog = fixture.raw.reflog("HEAD").unwrap();
        assert_eq!(
            reflog.get(0).unwrap().message().unwrap(),
            Some("commit: ralphd: cycle 1: signed")
        );

        // HEAD moved since staging: refused, the branch stays where it is.
        let error = fixture
            .repo
            .commit_signed(&staged, &payload, signature)
            .unwrap_err();
        assert!(matches!(error, GitError::HeadMoved { .. }), "{error}");
        assert_eq!(fixture.head(), Some(commit));
    }

    #[test]
    fn a_masked_attempt_holds_neither_the_secret_nor_the_agents_commits() {
        let fixture = Fixture::new();
        let first = fixture.head().unwrap();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("cfg.py", "a = 1\nkey = 'SECRET'\nb = 2");
        fixture.commit_all("the agent's commit");
        fixture.write("other.txt", "SECRET\nkept\n");
        let reference = fixture
            .repo
            .save_masked_attempt(
                &start,
                4,
                "ralphd: cycle 4 attempt",
                AUTHOR,
                &[
                    (PathBuf::from("cfg.py"), vec![2]),
                    (PathBuf::from("other.txt"), vec![1]),
                ],
            )
            .unwrap();
        assert_eq!(reference, "refs/ralph/attempts/4");
        let attempt = fixture.raw.refname_to_id(&reference).unwrap();
        assert_eq!(
            fixture.file_in_commit(attempt, "cfg.py").unwrap(),
            format!("a = 1\n{MASKED_LINE}\nb = 2").as_bytes()
        );
        assert_eq!(
            fixture.file_in_commit(attempt, "other.txt").unwrap(),
            format!("{MASKED_LINE}\nkept\n").as_bytes()
        );
        let commit = fixture.raw.find_commit(attempt).unwrap();
        assert_eq!(commit.parent_ids().collect::<Vec<_>>(), [first]);
        let message = commit.message().unwrap();
        assert!(message.contains("cfg.py:2 other.txt:1"), "{message}");
        assert!(message.contains("1 commit(s) are not kept"), "{message}");
    }

    #[test]
    fn changed_files_and_added_lines_cover_the_tree_and_the_agents_commits() {
        let fixture = Fixture::new();
        let start = fixture.repo.begin_cycle().unwrap();
        fixture.write("gone.txt", "committed then removed\n");
        let agent_commit = fixture.commit_all("agent adds");
        fs::remove_file(fixture.path("gone.txt")).unwrap();
        fixture.commit_all("agent removes");
        fixture.write("a.txt", "alpha\nnew line\n");
        fixture.write("bin.dat", "\0\0binary\0");
        let files = fixture.repo.changed_files(&start).unwrap();
        let summary: Vec<(String, usize, usize)> = files
            .iter()
            .map(|file| {
                (
                    file.path.display().to_string(),
                    file.insertions,
                    file.deletions,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [("a.txt".to_owned(), 1, 0), ("bin.dat".to_owned(), 0, 0)]
        );
        let mut lines = Vec::new();
        fixture
            .repo
            .scan_added_lines(&start, |commit, path, line, content| {
                lines.push((
                    commit.map(str::to_owned),
                    path.display().to_string(),
                    line,
                    String::from_utf8_lossy(content).into_owned(),
                ));
            })
            .unwrap();
        assert_eq!(
            lines,
            [
                (None, "a.txt".to_owned(), 2, "new line".to_owned()),
                (
                    Some(super::short_hex(agent_commit)),
                    "gone.txt".to_owned(),
                    1,
                    "committed then removed".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn commit_rules_follow_git_config() {
        let fixture = Fixture::new();
        let committer = ("ralphd", "ralphd@localhost");
        let rules = fixture.repo.commit_rules(committer).unwrap();
        assert_eq!(rules.pre_commit, None);
        assert_eq!(rules.signing, None);

        let hooks = fixture.dir.path().join(".git/hooks");
        fs::create_dir_all(&hooks).unwrap();
        fs::write(hooks.join("pre-commit"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(hooks.join("pre-commit"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(hooks.join("commit-msg"), "#!/bin/sh\n").unwrap();
        let rules = fixture.repo.commit_rules(committer).unwrap();
        assert_eq!(rules.pre_commit, Some(hooks.join("pre-commit")));
        assert_eq!(rules.commit_msg, None, "not executable");

        let mut config = fixture.raw.config().unwrap();
        config.set_str("core.hooksPath", "tools/hooks").unwrap();
        let rules = fixture.repo.commit_rules(committer).unwrap();
        assert_eq!(rules.pre_commit, None, "only core.hooksPath counts now");

        config.set_bool("commit.gpgsign", true).unwrap();
        let signing = |fixture: &Fixture| {
            fixture
                .repo
                .commit_rules(committer)
                .unwrap()
                .signing
                .unwrap()
        };
        let openpgp = signing(&fixture).unwrap();
        assert_eq!(openpgp.format, SigningFormat::OpenPgp);
        assert_eq!(
            (openpgp.program.as_str(), openpgp.program_key),
            ("gpg", "gpg.program")
        );
        assert_eq!(openpgp.key, "ralphd <ralphd@localhost>");
        config.set_str("gpg.program", "gpg2").unwrap();
        config.set_str("user.signingkey", "ABCD1234").unwrap();
        let openpgp = signing(&fixture).unwrap();
        assert_eq!(
            (openpgp.program.as_str(), openpgp.key.as_str()),
            ("gpg2", "ABCD1234")
        );

        config.set_str("gpg.format", "ssh").unwrap();
        config
            .set_str("user.signingkey", "keys/id_ed25519")
            .unwrap();
        let ssh = signing(&fixture).unwrap();
        assert_eq!(
            (ssh.program.as_str(), ssh.program_key),
            ("ssh-keygen", "gpg.ssh.program")
        );
        assert_eq!(
            Path::new(&ssh.key),
            fixture.repo.workdir().join("keys/id_ed25519")
        );
        assert!(!ssh.literal_key);
        config
            .set_str("user.signingkey", "key::ssh-ed25519 AAAAC3 me")
            .unwrap();
        let ssh = signing(&fixture).unwrap();
        assert!(ssh.literal_key && ssh.key == "ssh-ed25519 AAAAC3 me");
        config.remove("user.signingkey").unwrap();
        assert!(signing(&fixture).unwrap_err().contains("user.signingkey"));
        config.set_str("gpg.format", "pgp").unwrap();
        assert!(signing(&fixture).unwrap_err().contains("\"pgp\""));
    }
}
