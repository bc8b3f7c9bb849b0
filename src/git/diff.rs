//! What the cycle changed, relative to a [`Snapshot`]: [`DiffStats`]
//! ([`GitRepo::measure_progress`]), the summary for the backtest prompt
//! ([`GitRepo::diff_summary`]), the changed files and the added lines the
//! gates check. All of them walk the same diff ([`GitRepo::each_changed_file`]):
//! the work tree against the snapshot's tree, without the excluded
//! directories and submodules.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use git2::{Delta, DiffFormat, FileMode, Oid, Repository};

use crate::git::head::read_head;
use crate::git::snapshot::Snapshot;
use crate::git::{GitRepo, Result, delta_path, empty_tree, short_hex};

/// Changes made during a cycle, relative to its start state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DiffStats {
    pub(crate) files_changed: usize,
    pub(crate) insertions: usize,
    pub(crate) deletions: usize,
    /// Commits reachable from HEAD but not from the start commit.
    pub(crate) agent_commits: usize,
}

impl DiffStats {
    /// No file changed and no commit made: outcome `no_changes`.
    pub(crate) fn is_empty(&self) -> bool {
        self.files_changed == 0 && self.agent_commits == 0
    }
}

/// One changed path of the cycle, with its line counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChangedFile {
    /// Relative to the work tree.
    pub(crate) path: PathBuf,
    pub(crate) insertions: usize,
    pub(crate) deletions: usize,
    /// The user had uncommitted changes in this path when the cycle started
    /// (`--allow-dirty`): the agent changed the user's own work.
    pub(crate) user_had_changed: bool,
}

impl GitRepo {
    /// Files and lines changed since the cycle start (work tree and index,
    /// the user's pre-existing changes being the baseline), plus the commits
    /// the agent made (reachable from HEAD, not from the start commit).
    pub(crate) fn measure_progress(&self, start: &Snapshot) -> Result<DiffStats> {
        const OP: &str = "measure progress";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let diff = self.cycle_diff(&repo, OP, start)?;
        let agent_commits = agent_commit_ids(&repo, start).map_err(git_error)?.len();
        let progress = self
            .each_changed_file(&diff, |_, _, _, _| {})
            .map_err(git_error)?;
        Ok(DiffStats {
            agent_commits,
            ..progress
        })
    }

    /// Whether anything differs from `start`: files, commits, where HEAD is,
    /// submodules.
    pub(super) fn changed_since(&self, start: &Snapshot) -> Result<bool> {
        Ok(!self.measure_progress(start)?.is_empty()
            || self.head_state("read HEAD")? != start.head
            || !self.changed_submodules(start)?.is_empty())
    }

    /// A short human summary of the cycle's changes for the backtest prompt:
    /// totals, one line per file with +/- counts, the agent's commits, then the
    /// patch, the whole cut at `max_bytes` (on a char boundary).
    pub(crate) fn diff_summary(&self, start: &Snapshot, max_bytes: usize) -> Result<String> {
        const OP: &str = "summarise the diff";
        const TRUNCATED: &str = "\n[… truncated]\n";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let diff = self.cycle_diff(&repo, OP, start)?;

        let mut file_lines = String::new();
        let mut totals = self
            .each_changed_file(&diff, |delta, path, insertions, deletions| {
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
            })
            .map_err(git_error)?;

        let mut commit_lines = String::new();
        for oid in agent_commit_ids(&repo, start).map_err(git_error)? {
            let commit = repo.find_commit(oid).map_err(git_error)?;
            totals.agent_commits += 1;
            let summary =
                String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned();
            let _ = writeln!(commit_lines, "  {} {summary}", short_hex(oid));
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

    /// Every path the cycle changed (as in [`Self::measure_progress`]), with
    /// its added and removed lines, in path order.
    pub(crate) fn changed_files(&self, start: &Snapshot) -> Result<Vec<ChangedFile>> {
        const OP: &str = "list the changed files";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let diff = self.cycle_diff(&repo, OP, start)?;
        let mut files = Vec::new();
        self.each_changed_file(&diff, |_, path, insertions, deletions| {
            files.push(ChangedFile {
                path: path.to_path_buf(),
                insertions,
                deletions,
                user_had_changed: start.is_user_path(path),
            });
        })
        .map_err(git_error)?;
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
        start: &Snapshot,
        mut on_line: impl FnMut(Option<&str>, &Path, u32, &[u8]),
    ) -> Result<()> {
        const OP: &str = "scan the added lines";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let diff = self.cycle_diff(&repo, OP, start)?;
        self.each_added_line(&diff, None, &mut on_line)
            .map_err(git_error)?;

        for oid in agent_commit_ids(&repo, start).map_err(git_error)? {
            let commit = repo.find_commit(oid).map_err(git_error)?;
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

    /// Whether a delta counts as the cycle's work: not in an excluded
    /// directory and not a submodule.
    pub(super) fn counts(&self, delta: &git2::DiffDelta<'_>) -> bool {
        if delta.old_file().mode() == FileMode::Commit
            || delta.new_file().mode() == FileMode::Commit
        {
            return false;
        }
        delta_path(delta).is_some_and(|path| !self.is_excluded(path))
    }

    /// The cycle's diff: the work tree now (as `git add -A` would stage it)
    /// against the tree of `start`.
    pub(super) fn cycle_diff<'repo>(
        &self,
        repo: &'repo Repository,
        op: &'static str,
        start: &Snapshot,
    ) -> Result<git2::Diff<'repo>> {
        let current_tree = self.worktree_tree(op)?;
        let diff = || -> std::result::Result<git2::Diff<'repo>, git2::Error> {
            let old = repo.find_tree(start.start_tree)?;
            let new = repo.find_tree(current_tree)?;
            let mut options = git2::DiffOptions::new();
            options.include_typechange(true);
            repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut options))
        };
        diff().map_err(|error| self.git_error(op, error))
    }

    /// The one walk over the cycle's diff: calls `on_file(delta, path,
    /// insertions, deletions)` for each path that counts as the cycle's work
    /// ([`Self::counts`]), in path order, and returns the totals (without
    /// the agent's commits).
    fn each_changed_file(
        &self,
        diff: &git2::Diff<'_>,
        mut on_file: impl FnMut(&git2::DiffDelta<'_>, &Path, usize, usize),
    ) -> std::result::Result<DiffStats, git2::Error> {
        let mut totals = DiffStats::default();
        for (delta_idx, delta) in diff.deltas().enumerate() {
            if !self.counts(&delta) {
                continue;
            }
            let Some(path) = delta_path(&delta) else {
                continue;
            };
            let (insertions, deletions) = match git2::Patch::from_diff(diff, delta_idx)? {
                Some(patch) => {
                    let (_, insertions, deletions) = patch.line_stats()?;
                    (insertions, deletions)
                }
                None => (0, 0),
            };
            totals.files_changed += 1;
            totals.insertions += insertions;
            totals.deletions += deletions;
            on_file(&delta, path, insertions, deletions);
        }
        Ok(totals)
    }
}

/// The agent's commits: reachable from HEAD but not from the start commit
/// (none on an unborn branch), in the order git's revwalk gives them.
pub(super) fn agent_commit_ids(
    repo: &Repository,
    start: &Snapshot,
) -> std::result::Result<Vec<Oid>, git2::Error> {
    let Some(head) = read_head(repo)?.oid() else {
        return Ok(Vec::new());
    };
    if Some(head) == start.start_commit() {
        return Ok(Vec::new());
    }
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    if let Some(start_commit) = start.start_commit() {
        walk.hide(start_commit)?;
    }
    walk.collect()
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

/// Cuts `text` to at most `max_bytes`, keeping its beginning (see
/// [`crate::text::head_bytes`]).
fn truncate_at_char_boundary(text: &mut String, max_bytes: usize) {
    text.truncate(crate::text::head_bytes(text, max_bytes).len());
}
