//! The on-disk state of a home: its paths, the versioned serde schema of every
//! state file, atomic writes (temp file, fsync, rename, fsync of the
//! directory), loading that never overwrites a corrupt file, and the
//! single-instance locks (one daemon per home, one per repository work tree).
//! Every state file goes through it, except the phase
//! transcripts (`cycles/<n>/<phase>.jsonl`), which `supervise` appends to as
//! the stream arrives.
//!
//! It decides nothing: timestamps and contents are handed to it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::agent::stream::TokenUsage;
use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The schema version written into every state file.
pub(crate) const VERSION: u32 = 1;

/// Where everything of one home lives.
#[derive(Clone, Debug)]
pub(crate) struct HomePaths {
    pub(crate) home: PathBuf,
}

impl HomePaths {
    pub(crate) fn new(home: &Path) -> HomePaths {
        HomePaths {
            home: home.to_path_buf(),
        }
    }
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.home.join("state")
    }
    pub(crate) fn archive_dir(&self) -> PathBuf {
        self.home.join("archive")
    }
    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
    pub(crate) fn prompts_dir(&self) -> PathBuf {
        self.home.join("prompts")
    }
    pub(crate) fn steering_file(&self) -> PathBuf {
        self.home.join("PROMPT.md")
    }
    pub(crate) fn progress(&self) -> PathBuf {
        self.state_dir().join("progress.json")
    }
    pub(crate) fn prd(&self) -> PathBuf {
        self.state_dir().join("prd.json")
    }
    pub(crate) fn breaker(&self) -> PathBuf {
        self.state_dir().join("breaker.json")
    }
    pub(crate) fn limiter(&self) -> PathBuf {
        self.state_dir().join("limiter.json")
    }
    /// `state/events.jsonl`: the event log of docs/design.md §11.
    pub(crate) fn events(&self) -> PathBuf {
        self.state_dir().join("events.jsonl")
    }

    pub(crate) fn status(&self) -> PathBuf {
        self.state_dir().join("status.json")
    }
    pub(crate) fn in_flight(&self) -> PathBuf {
        self.state_dir().join("in-flight.json")
    }
    pub(crate) fn last_branch(&self) -> PathBuf {
        self.state_dir().join("last-branch")
    }
    pub(crate) fn lock(&self) -> PathBuf {
        self.state_dir().join("ralphd.lock")
    }
    pub(crate) fn cycles_dir(&self) -> PathBuf {
        self.state_dir().join("cycles")
    }
    pub(crate) fn cycle_dir(&self, cycle: u64) -> PathBuf {
        self.cycles_dir().join(cycle.to_string())
    }

    /// Creates `state/`, `state/cycles/`, `archive/` and `logs/`.
    pub(crate) fn create_dirs(&self) -> Result<()> {
        for dir in [self.cycles_dir(), self.archive_dir(), self.logs_dir()] {
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        Ok(())
    }

    /// The highest cycle number that has a folder under `state/cycles/`, so
    /// a fresh progress.json (after a branch change) never reuses a folder.
    pub(crate) fn highest_cycle_dir(&self) -> u64 {
        // The daemon creates the directory at start; if it cannot be listed,
        // writing the cycle's files into it fails next, naming it.
        let Ok(entries) = fs::read_dir(self.cycles_dir()) else {
            return 0;
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }
}

/// What a write must survive before it returns. Either way it is atomic:
/// readers see the old or the new content, never a mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Power loss: the file and its directory are fsynced. For everything a
    /// restart after a reboot needs (progress, breaker, prd, the cycle start).
    PowerLoss,
    /// The daemon's own death (kill -9, a crash), not power loss: no fsync.
    /// For what only matters while the machine stays up and is rewritten
    /// often: the live status, the running child's process group (dead after
    /// a reboot anyway), the limiter's recent calls.
    ProcessDeath,
}

/// A write under the home failed because its disk (or the user's quota) is
/// full. Said once, plainly, with the one thing to do, whatever was being
/// written: the daemon stops (exit 2) instead of failing cycle after cycle.
#[derive(Debug, thiserror::Error)]
#[error("the disk holding {} is full ({reason}); free space, then restart", path.display())]
pub(crate) struct DiskFull {
    pub(crate) path: PathBuf,
    /// The system's words for it.
    reason: &'static str,
}

impl DiskFull {
    /// `Some` when `error` says the disk (ENOSPC) or the quota (EDQUOT) is full.
    pub(crate) fn from_io(path: &Path, error: &io::Error) -> Option<DiskFull> {
        let reason = match (error.kind(), error.raw_os_error()) {
            (io::ErrorKind::StorageFull, _) | (_, Some(libc::ENOSPC)) => "No space left on device",
            (io::ErrorKind::QuotaExceeded, _) | (_, Some(libc::EDQUOT)) => "Disk quota exceeded",
            _ => return None,
        };
        Some(DiskFull {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The full disk behind `error`, if one of its causes is one; `path` names
    /// what was being written when the cause does not.
    pub(crate) fn find(path: &Path, error: &anyhow::Error) -> Option<DiskFull> {
        error.chain().find_map(|cause| {
            if let Some(full) = cause.downcast_ref::<DiskFull>() {
                return Some(DiskFull {
                    path: full.path.clone(),
                    reason: full.reason,
                });
            }
            DiskFull::from_io(path, cause.downcast_ref::<io::Error>()?)
        })
    }
}

/// An I/O error on `path` as the user should read it: a full disk as
/// [`DiskFull`], anything else as "cannot `<what>` `<path>`: cause".
fn io_error(path: &Path, what: &str, error: io::Error) -> anyhow::Error {
    match DiskFull::from_io(path, &error) {
        Some(full) => full.into(),
        None => anyhow::Error::new(error).context(format!("cannot {what} {}", path.display())),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new
/// content, never a mix: temp file in the same directory, (fsync,) rename,
/// (fsync of the directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let synced = durability == Durability::PowerLoss;
    let write = || -> io::Result<()> {
        let mut temp = tempfile::Builder::new()
            .prefix(".state.")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        temp.write_all(bytes)?;
        if synced {
            temp.as_file().sync_all()?;
        }
        temp.persist(path).map_err(|error| error.error)?;
        if synced {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|error| io_error(path, "write", error))
}

/// Serialises `value` as pretty JSON and writes it atomically, surviving
/// power loss.
pub(crate) fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    save_json_with(path, value, Durability::PowerLoss)
}

/// [`save_json`] with the durability of the caller's choice.
pub(crate) fn save_json_with<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<()> {
    // Fails on a path that is not UTF-8 (a file name in the repository).
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("cannot write {}", path.display()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, durability)
}

/// What to do with a state file that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnCorrupt {
    /// Refuse to start, naming the file (the default: a human looks first).
    Refuse,
    /// Move it aside to `<name>.corrupt-<timestamp>` and start fresh.
    MoveAside,
}

/// A state file that exists but cannot be used; the daemon exits 2 on it.
#[derive(Debug, thiserror::Error)]
#[error(
    "state file {path} is corrupt ({reason}); fix or remove it, or set [state] on_corrupt = \"move-aside\""
)]
pub(crate) struct CorruptState {
    pub(crate) path: PathBuf,
    pub(crate) reason: String,
}

/// Loads a JSON state file: `Ok(None)` when it does not exist; a corrupt file
/// is never overwritten (refused, or moved aside when configured).
pub(crate) fn load_json<T: DeserializeOwned>(
    path: &Path,
    on_corrupt: OnCorrupt,
    now_label: &str,
) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let parsed = serde_json::from_slice::<Versioned>(&bytes)
        .map_err(|error| error.to_string())
        .and_then(|versioned| match versioned.version {
            Some(version) if version > VERSION => Err(format!(
                "version {version} is newer than this ralphd understands ({VERSION})"
            )),
            _ => serde_json::from_slice::<T>(&bytes).map_err(|error| error.to_string()),
        });
    match (parsed, on_corrupt) {
        (Ok(value), _) => Ok(Some(value)),
        (Err(reason), OnCorrupt::Refuse) => Err(CorruptState {
            path: path.to_path_buf(),
            reason,
        }
        .into()),
        (Err(reason), OnCorrupt::MoveAside) => {
            let aside = path.with_file_name(format!(
                "{}.corrupt-{now_label}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
            fs::rename(path, &aside)
                .with_context(|| format!("cannot move corrupt {} aside", path.display()))?;
            tracing::warn!(file = %path.display(), moved_to = %aside.display(), %reason, "corrupt state file moved aside");
            Ok(None)
        }
    }
}

#[derive(Deserialize)]
struct Versioned {
    version: Option<u32>,
}

/// `progress.json`: the cycles of the current branch (docs/design.md §3).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub(crate) version: u32,
    pub(crate) branch: String,
    pub(crate) start_time: String,
    #[serde(default)]
    pub(crate) cycles: Vec<CycleRecord>,
    #[serde(default)]
    pub(crate) patterns: Vec<String>,
    #[serde(default)]
    pub(crate) total_cost_usd: f64,
}

/// How a cycle ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Committed,
    RolledBack,
    NoChanges,
    Failed,
    Complete,
    Interrupted,
}

impl Outcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled_back",
            Outcome::NoChanges => "no_changes",
            Outcome::Failed => "failed",
            Outcome::Complete => "complete",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One cycle in progress.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CycleRecord {
    pub(crate) cycle: u64,
    pub(crate) cycle_id: String,
    pub(crate) started_at: String,
    pub(crate) ended_at: String,
    pub(crate) duration_seconds: f64,
    #[serde(default)]
    pub(crate) phases_completed: Vec<String>,
    #[serde(default)]
    pub(crate) phases: Vec<PhaseRecord>,
    pub(crate) outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attempt_ref: Option<String>,
    pub(crate) success: bool,
    #[serde(default)]
    pub(crate) cost_usd: f64,
    #[serde(default)]
    pub(crate) output: String,
    #[serde(default)]
    pub(crate) learnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// One line: why the outcome is what it is (docs/design.md §3.4).
    #[serde(default)]
    pub(crate) reason: Option<String>,
    /// The verdict on the edit and who decided it; `None` when no verdict
    /// was reached (no edit, a failed phase, an interruption).
    #[serde(default)]
    pub(crate) verdict: Option<crate::record::Verdict>,
    /// The backtest checks that ran; their full output is in `cycles/<n>/checks.md`.
    #[serde(default)]
    pub(crate) checks: Vec<crate::record::CheckRecord>,
    /// The size of code-edit's change, when it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) diff: Option<crate::record::DiffStat>,
}

#[cfg(test)]
impl CycleRecord {
    /// A record with its number and outcome and nothing else, for a test to
    /// fill in what it looks at (`CycleRecord { cost_usd: 1.0, ..for_test(…) }`).
    pub(crate) fn for_test(cycle: u64, outcome: Outcome) -> CycleRecord {
        CycleRecord {
            cycle,
            cycle_id: format!("cycle_{cycle}_0"),
            started_at: String::new(),
            ended_at: String::new(),
            duration_seconds: 0.0,
            phases_completed: Vec::new(),
            phases: Vec::new(),
            outcome,
            commit: None,
            attempt_ref: None,
            success: outcome == Outcome::Committed,
            cost_usd: 0.0,
            output: String::new(),
            learnings: Vec::new(),
            title: None,
            error: None,
            reason: None,
            verdict: None,
            checks: Vec::new(),
            diff: None,
        }
    }
}

/// One phase run inside a cycle record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PhaseRecord {
    pub(crate) phase: String,
    /// `ok`, `failed`, or `interrupted` (a stop signal ended it).
    pub(crate) status: String,
    pub(crate) duration_ms: u64,
    #[serde(default)]
    pub(crate) cost_usd: f64,
    /// Tokens the run used, as flat `input_tokens`, `output_tokens`,
    /// `cache_read_input_tokens`, `cache_creation_input_tokens` (zeros left
    /// out, and in records older than these fields).
    #[serde(flatten)]
    pub(crate) tokens: TokenUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session_id: Option<String>,
    #[serde(default)]
    pub(crate) turns: u64,
    #[serde(default)]
    pub(crate) attempts: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) permission_denials: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// `in-flight.json`: the cycle that is running right now. It exists only
/// while a cycle runs, so finding it at start-up means the previous daemon
/// died mid-cycle. It is rewritten when something a restart must know
/// happens (a phase run ends, the work is committed, an attempt is saved),
/// so that the restart records the cycle as it was: committed with its
/// commit, cost and story, or interrupted with its attempt's ref and cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct InFlight {
    pub(crate) version: u32,
    pub(crate) cycle: u64,
    pub(crate) started_at: String,
    pub(crate) branch: String,
    /// The repository at cycle start, to save and roll back what the cycle
    /// left behind if the daemon died during it; `None` before the cycle
    /// began and once its work is committed.
    #[serde(default)]
    pub(crate) start: Option<crate::git::Snapshot>,
    /// The phase runs that ended, and their cost.
    #[serde(default)]
    pub(crate) phases: Vec<PhaseRecord>,
    #[serde(default)]
    pub(crate) phases_completed: Vec<String>,
    #[serde(default)]
    pub(crate) cost_usd: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<String>,
    /// The cycle's verified commit, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) commit: Option<String>,
    /// The commit ralphd was about to make of the verified work: a restart
    /// keeps HEAD as the cycle's commit only when HEAD is this commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) committing: Option<crate::git::PendingCommit>,
    /// The attempt the cycle saved, once saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attempt_ref: Option<String>,
    /// The story the report says the cycle made pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) story: Option<String>,
    #[serde(default)]
    pub(crate) summary: String,
    #[serde(default)]
    pub(crate) learnings: Vec<String>,
    /// What went wrong in the cycle before the daemon died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// `status.json`: what the daemon is doing, for `ralphd status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StatusFile {
    pub(crate) version: u32,
    pub(crate) pid: u32,
    pub(crate) started_at: String,
    pub(crate) heartbeat_at: String,
    pub(crate) repo: String,
    pub(crate) branch: String,
    pub(crate) state: DaemonState,
    #[serde(default)]
    pub(crate) cycle: Option<u64>,
    #[serde(default)]
    pub(crate) phase: Option<String>,
    #[serde(default)]
    pub(crate) phase_started_at: Option<String>,
    /// Why the daemon is waiting and until when (throttled, breaker open,
    /// usage limit, backoff, sleep).
    #[serde(default)]
    pub(crate) waiting: Option<Waiting>,
    #[serde(default)]
    pub(crate) breaker: String,
    #[serde(default)]
    pub(crate) spent_usd: f64,
    #[serde(default)]
    pub(crate) max_cost_usd: Option<f64>,
    #[serde(default)]
    pub(crate) last_error: Option<String>,
    #[serde(default)]
    pub(crate) exit: Option<String>,
    /// The live page's URL (`http://127.0.0.1:41234/`) while the HTTP
    /// server runs.
    #[serde(default)]
    pub(crate) dashboard: Option<String>,
}

/// Where the daemon is in its life, as status.json's `state` says it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DaemonState {
    /// Start-up: the checks run, no cycle yet.
    #[default]
    Starting,
    /// A cycle runs, or the loop is about to start one.
    Running,
    /// A wait of the loop (limiter, breaker, usage limit, backoff, sleep).
    Waiting,
    /// The daemon has exited; `exit` says why.
    Stopped,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Waiting {
    pub(crate) reason: String,
    pub(crate) until: String,
}

/// The single-instance lock on `state/ralphd.lock`, held for the process
/// lifetime; the OS releases it when the process dies, even by kill -9.
pub(crate) struct InstanceLock {
    /// Holds the flock; dropping it releases the lock.
    _file: File,
}

/// Another daemon holds the home's lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another ralphd (pid {pid}) is already running on home {home}; stop it first or use another --home"
)]
pub(crate) struct LockHeld {
    pub(crate) pid: String,
    pub(crate) home: PathBuf,
}

impl InstanceLock {
    pub(crate) fn acquire(paths: &HomePaths) -> Result<InstanceLock> {
        let path = paths.lock();
        match lock_naming_holder(&path, format!("{}\n", std::process::id()).as_bytes())? {
            Ok(file) => Ok(InstanceLock { _file: file }),
            Err(holder) => {
                // Only for the message: a holder whose pid cannot be read is "unknown".
                let pid = Some(holder.trim().to_owned())
                    .filter(|pid| !pid.is_empty())
                    .unwrap_or_else(|| "unknown".to_owned());
                bail!(LockHeld {
                    pid,
                    home: paths.home.clone(),
                })
            }
        }
    }

    /// Whether some process holds the lock right now (for `status`).
    pub(crate) fn is_held(paths: &HomePaths) -> bool {
        // Read-only is enough for flock, so a user who may only read the home
        // is told the truth. No lock file: no daemon ever ran here.
        let Ok(file) = OpenOptions::new().read(true).open(paths.lock()) else {
            return false;
        };
        match file.try_lock() {
            Ok(()) => false,
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(_)) => false,
        }
    }
}

/// Takes the flock on `path` (created if missing) and writes `holder` into
/// the file; when another process holds it, returns what that process wrote.
fn lock_naming_holder(path: &Path, holder: &[u8]) -> Result<Result<File, String>> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|error| io_error(path, "open lock file", error))?;
    match file.try_lock() {
        Ok(()) => {
            let write = |file: &mut File| -> io::Result<()> {
                file.set_len(0)?;
                file.write_all(holder)
            };
            write(&mut file).map_err(|error| io_error(path, "write", error))?;
            Ok(Ok(file))
        }
        // Only for the message: a holder that cannot be read is named "unknown".
        Err(TryLockError::WouldBlock) => Ok(Err(String::from_utf8_lossy(
            &fs::read(path).unwrap_or_default(),
        )
        .into_owned())),
        Err(TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The lock on a repository's work tree, held for the process lifetime like
/// [`InstanceLock`]: `ralphd.lock` in the work tree's git dir (a linked
/// worktree has its own git dir, so each worktree can have its daemon). It
/// holds the pid and home of the daemon that took it. Inside the git dir, it
/// is never part of the work tree: never a change, never committed.
pub(crate) struct RepoLock {
    /// Holds the flock; dropping it releases the lock.
    _file: File,
}

/// Another daemon, of another home, works on the same repository.
#[derive(Debug, thiserror::Error)]
#[error(
    "another ralphd (pid {pid}, home {home}) is already running on the repository {repo}; stop it first, or give this one its own clone or worktree (`git worktree add`)"
)]
pub(crate) struct RepoLockHeld {
    pub(crate) pid: String,
    pub(crate) home: String,
    pub(crate) repo: PathBuf,
}

impl RepoLock {
    /// The name of the lock file in the git dir.
    pub(crate) const FILE: &str = "ralphd.lock";

    /// Locks the work tree whose git dir is `git_dir` for the daemon of
    /// `home`; `repo` only names it in the error.
    pub(crate) fn acquire(git_dir: &Path, home: &Path, repo: &Path) -> Result<RepoLock> {
        use std::os::unix::ffi::OsStrExt as _;
        let mut holder = format!("{}\n", std::process::id()).into_bytes();
        holder.extend_from_slice(home.as_os_str().as_bytes());
        holder.push(b'\n');
        match lock_naming_holder(&git_dir.join(Self::FILE), &holder)? {
            Ok(file) => Ok(RepoLock { _file: file }),
            Err(holder) => {
                let mut lines = holder.lines().map(str::trim);
                let mut next = || {
                    lines
                        .next()
                        .filter(|line| !line.is_empty())
                        .unwrap_or("unknown")
                        .to_owned()
                };
                let (pid, home) = (next(), next());
                bail!(RepoLockHeld {
                    pid,
                    home,
                    repo: repo.to_path_buf(),
                })
            }
        }
    }
}

/// Reads `state/last-branch`: `None` when there is none (or it is empty).
/// ralphd writes it as UTF-8, so other bytes mean it is corrupt.
pub(crate) fn read_last_branch(paths: &HomePaths) -> Result<Option<String>> {
    let path = paths.last_branch();
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let text = String::from_utf8(bytes).map_err(|_| CorruptState {
        path: path.clone(),
        reason: "not UTF-8".to_owned(),
    })?;
    let branch = text.trim();
    Ok((!branch.is_empty()).then(|| branch.to_owned()))
}

pub(crate) fn write_last_branch(paths: &HomePaths, branch: &str) -> Result<()> {
    write_atomic(
        &paths.last_branch(),
        format!("{branch}\n").as_bytes(),
        Durability::PowerLoss,
    )
}

/// Writes a small text file (phase output, report) atomically.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|error| io_error(dir, "create", error))?;
    }
    write_atomic(path, text.as_bytes(), Durability::PowerLoss)
}

/// Removes `in-flight.json` once its cycle is recorded.
pub(crate) fn clear_in_flight(paths: &HomePaths) -> Result<()> {
    match fs::remove_file(paths.in_flight()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).context("cannot remove state/in-flight.json"),
    }
}

/// Deletes temp files left by a write that a crash interrupted. A leftover
/// is harmless (never read), so a failure is a warning, not a refusal.
pub(crate) fn remove_stale_temp_files(paths: &HomePaths) {
    let entries = match fs::read_dir(paths.state_dir()) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(dir = %paths.state_dir().display(), %error, "cannot look for temp files left by a crash");
            return;
        }
    };
    // An entry that vanished while listing needs no removal.
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".state.")
            && name.ends_with(".tmp")
            && let Err(error) = fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), %error, "cannot remove a temp file left by a crash");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_record_keeps_its_tokens_under_the_clis_names_and_an_older_one_loads_without() {
        let record = PhaseRecord {
            phase: "scan".to_owned(),
            status: "ok".to_owned(),
            duration_ms: 1,
            cost_usd: 0.0,
            tokens: TokenUsage {
                input: 39012,
                output: 79,
                cache_read: 0,
                cache_creation: 1200,
            },
            session_id: None,
            turns: 1,
            attempts: 1,
            permission_denials: Vec::new(),
            error: None,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["input_tokens"], 39012);
        assert_eq!(json["output_tokens"], 79);
        assert_eq!(json["cache_creation_input_tokens"], 1200);
        assert!(json.get("cache_read_input_tokens").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<PhaseRecord>(json).unwrap(), record);
        let older: PhaseRecord = serde_json::from_str(
            r#"{"phase":"scan","status":"ok","duration_ms":5,"cost_usd":0.1}"#,
        )
        .unwrap();
        assert_eq!(older.tokens, TokenUsage::default());
    }

    #[test]
    fn atomic_save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.json");
        let progress = Progress {
            version: VERSION,
            branch: "main".into(),
            start_time: "2026-01-20T10:00:00Z".into(),
            total_cost_usd: 0.5,
            ..Progress::default()
        };
        save_json(&path, &progress).unwrap();
        let loaded: Progress = load_json(&path, OnCorrupt::Refuse, "x").unwrap().unwrap();
        assert_eq!(loaded.branch, "main");
        assert_eq!(loaded.total_cost_usd, 0.5);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn corrupt_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.json");
        fs::write(&path, b"{\"version\":1, \"branch\": ").unwrap();
        let error = load_json::<Progress>(&path, OnCorrupt::Refuse, "x").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("progress.json is corrupt"), "{message}");
        assert_eq!(fs::read(&path).unwrap(), b"{\"version\":1, \"branch\": ");
    }

    #[test]
    fn corrupt_file_can_be_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("breaker.json");
        fs::write(&path, b"garbage").unwrap();
        let loaded =
            load_json::<Progress>(&path, OnCorrupt::MoveAside, "20260101T000000Z").unwrap();
        assert!(loaded.is_none());
        assert!(!path.exists());
        let aside = dir.path().join("breaker.json.corrupt-20260101T000000Z");
        assert_eq!(fs::read(aside).unwrap(), b"garbage");
    }

    #[test]
    fn newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.json");
        fs::write(&path, br#"{"version":9,"branch":"x","start_time":"y"}"#).unwrap();
        let message = format!(
            "{:#}",
            load_json::<Progress>(&path, OnCorrupt::Refuse, "x").unwrap_err()
        );
        assert!(message.contains("version 9"), "{message}");
    }

    #[test]
    fn seed_format_progress_loads() {
        let seed = r#"{"version":1, "branch":"main", "start_time":"2026-01-20T10:00:00Z",
 "cycles":[{"cycle":1, "cycle_id":"cycle_1_1640000000", "started_at":"a", "ended_at":"b",
   "duration_seconds":45.2, "phases_completed":["scan","idea","code-edit","backtest","report"],
   "phases":[{"phase":"scan","status":"ok","duration_ms":1200,"cost_usd":0.02,"session_id":"s","turns":3}],
   "outcome":"committed", "commit":"abc", "success":true, "cost_usd":0.11,
   "output":"<summary>", "learnings":["l"]}],
 "patterns":["p"], "total_cost_usd":0.11}"#;
        let progress: Progress = serde_json::from_str(seed).unwrap();
        assert_eq!(progress.cycles[0].outcome, Outcome::Committed);
        assert_eq!(progress.cycles[0].phases[0].turns, 3);
    }

    #[test]
    fn second_lock_on_the_same_home_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let paths = HomePaths::new(dir.path());
        paths.create_dirs().unwrap();
        let _held = InstanceLock::acquire(&paths).unwrap();
        assert!(InstanceLock::is_held(&paths));
        let message = format!("{:#}", InstanceLock::acquire(&paths).err().unwrap());
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
    }

    #[test]
    fn a_second_repo_lock_is_refused_naming_pid_and_home_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path();
        let (first_home, second_home) = (Path::new("/homes/first"), Path::new("/homes/second"));
        let held = RepoLock::acquire(git_dir, first_home, Path::new("/repo")).unwrap();
        let message = format!(
            "{:#}",
            RepoLock::acquire(git_dir, second_home, Path::new("/repo"))
                .err()
                .unwrap()
        );
        assert!(
            message.contains(&format!("pid {}, home /homes/first", std::process::id())),
            "{message}"
        );
        assert!(message.contains("/repo"), "{message}");
        drop(held);
        RepoLock::acquire(git_dir, second_home, Path::new("/repo"))
            .expect("the lock goes with its holder");
        let holder = fs::read_to_string(git_dir.join(RepoLock::FILE)).unwrap();
        assert_eq!(holder, format!("{}\n/homes/second\n", std::process::id()));
    }

    #[test]
    fn a_full_disk_or_quota_is_named_as_such_with_the_path() {
        let path = Path::new("/home/me/state/progress.json");
        let cases = [
            (
                io::Error::from_raw_os_error(libc::ENOSPC),
                Some("No space left on device"),
            ),
            (
                io::Error::from(io::ErrorKind::StorageFull),
                Some("No space left on device"),
            ),
            (
                io::Error::from_raw_os_error(libc::EDQUOT),
                Some("Disk quota exceeded"),
            ),
            (io::Error::from_raw_os_error(libc::EACCES), None),
            (io::Error::other("boom"), None),
        ];
        for (error, reason) in cases {
            let shown = format!("{:#}", io_error(path, "write", error));
            match reason {
                Some(reason) => assert_eq!(
                    shown,
                    format!(
                        "the disk holding /home/me/state/progress.json is full ({reason}); free space, then restart"
                    )
                ),
                None => assert!(
                    shown.starts_with("cannot write /home/me/state/progress.json: "),
                    "{shown}"
                ),
            }
        }
        // Found behind any context, naming the given path unless the cause
        // already names one.
        let behind = anyhow::Error::new(io::Error::from_raw_os_error(libc::ENOSPC))
            .context("cannot run the agent command `claude`");
        let full = DiskFull::find(Path::new("/h/state/cycles/1/scan.jsonl"), &behind).unwrap();
        assert_eq!(full.path, Path::new("/h/state/cycles/1/scan.jsonl"));
        let named = anyhow::Error::new(
            DiskFull::from_io(path, &io::Error::from(io::ErrorKind::StorageFull)).unwrap(),
        )
        .context("cycle 3");
        assert_eq!(
            DiskFull::find(Path::new("/else"), &named).unwrap().path,
            path
        );
        let other = anyhow::Error::new(io::Error::from_raw_os_error(libc::EIO));
        assert!(DiskFull::find(path, &other).is_none());
    }

    #[test]
    fn highest_cycle_dir_ignores_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let paths = HomePaths::new(dir.path());
        for name in ["1", "7", "notes"] {
            fs::create_dir_all(paths.cycles_dir().join(name)).unwrap();
        }
        assert_eq!(paths.highest_cycle_dir(), 7);
    }

    #[test]
    fn the_daemons_state_is_written_as_the_words_ralphd_status_reads() {
        use super::DaemonState;
        for (state, word) in [
            (DaemonState::Starting, "starting"),
            (DaemonState::Running, "running"),
            (DaemonState::Waiting, "waiting"),
            (DaemonState::Stopped, "stopped"),
        ] {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, serde_json::json!(word));
            assert_eq!(serde_json::from_value::<DaemonState>(json).unwrap(), state);
        }
    }
}
