//! Saved attempts: the work of a cycle that is not committed, kept as a
//! commit under `refs/ralph/attempts/<cycle>[-<n>]` before the rollback
//! ([`GitRepo::save_changes`], [`GitRepo::save_attempt`]), with the lines
//! that hold a secret masked ([`GitRepo::save_masked_attempt`]), and the list
//! of them for `ralphd status` ([`GitRepo::list_attempts`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use git2::build::TreeUpdateBuilder;
use git2::{ErrorCode, Oid, Repository, Signature};

use crate::git::diff::agent_commit_ids;
use crate::git::head::{HeadState, branch_tip, read_head};
use crate::git::snapshot::Snapshot;
use crate::git::{GitRepo, Result, file_mode};

/// Where saved attempts live: `refs/ralph/attempts/<cycle>[-<n>]`.
const ATTEMPTS_PREFIX: &str = "refs/ralph/attempts/";

/// What replaces a line that held a secret in a saved attempt.
pub(crate) const MASKED_LINE: &str = "[a secret was here: masked by ralphd]";

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

impl GitRepo {
    /// [`Self::save_attempt`] when the cycle changed anything (files,
    /// commits, where HEAD is, submodules); returns the attempt's ref, `None`
    /// when there was nothing to save. Callers roll back ([`Self::rollback`])
    /// only once this has succeeded.
    pub(crate) fn save_changes(
        &self,
        start: &Snapshot,
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
        start: &Snapshot,
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

    /// Saves the attempt like [`Self::save_attempt`], but with the given
    /// lines of each file (1-based) replaced by a mask, and on top of the
    /// start commit rather than HEAD, so that neither its tree nor its
    /// history holds a secret the agent wrote or committed. The agent's
    /// commits are named in the message only. Each changed submodule's work
    /// is saved in its own repository, as by [`Self::save_attempt`]
    /// (`Submodule-Attempt:` lines). Returns the ref name.
    pub(crate) fn save_masked_attempt(
        &self,
        start: &Snapshot,
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
        let submodule_lines =
            self.save_submodule_attempts(start, cycle, message, author.0, author.1)?;
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
        let agent_commits = agent_commit_ids(&repo, start).map_err(git_error)?.len();
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
        full_message.push_str(&submodule_lines);
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
}

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
