//! Wakes the daemon when `HEAD` moves (a checkout, by the user or the agent).
//!
//! Watches the git dir non-recursively (git replaces `HEAD` through
//! `HEAD.lock` + rename, so watching the file itself misses every change after
//! the first), ignoring `Access` events (inotify reports every read of `HEAD`,
//! including our own). Events are hints only: the daemon re-reads the branch
//! at every phase boundary anyway. A burst of events needs no debouncer: the
//! watch channel keeps only the latest count, so the daemon wakes once per
//! burst it has not seen yet, and nothing ticks while the repository is quiet.
//! Knows nothing of git itself.

use std::path::Path;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::watch;

/// A running watcher on a git dir. Dropping it stops the watch.
pub(crate) struct HeadWatcher {
    /// Owns the notify watcher and its thread; the watch lives as long as
    /// this field.
    _watcher: RecommendedWatcher,
}

impl HeadWatcher {
    /// Starts watching `git_dir` (`GitRepo::git_dir`, also right for linked
    /// worktrees). The receiver's value counts the events that touched
    /// `HEAD`; await `changed()` and then re-read the branch.
    pub(crate) fn start(git_dir: &Path) -> notify::Result<(HeadWatcher, watch::Receiver<u64>)> {
        let (sender, receiver) = watch::channel(0u64);
        let handler = move |result: notify::Result<Event>| {
            // Runs on notify's thread. Errors (for example a queue overflow)
            // count as a possible change: a spurious wake-up is harmless.
            let head_touched = match result {
                Ok(event) => {
                    !matches!(event.kind, EventKind::Access(_))
                        && event
                            .paths
                            .iter()
                            .any(|path| path.file_name().is_some_and(|name| name == "HEAD"))
                }
                Err(_) => true,
            };
            if head_touched {
                sender.send_modify(|n_changes| *n_changes += 1);
            }
        };
        let mut watcher = notify::recommended_watcher(handler)?;
        watcher.watch(git_dir, RecursiveMode::NonRecursive)?;
        Ok((HeadWatcher { _watcher: watcher }, receiver))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::HeadWatcher;

    #[tokio::test]
    async fn reports_a_branch_switch() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let signature = git2::Signature::now("test", "test@example.com").unwrap();
        let tree_oid = repo.index().unwrap().write_tree().unwrap();
        let tree = repo.find_tree(tree_oid).unwrap();
        let commit_oid = repo
            .commit(Some("HEAD"), &signature, &signature, "first", &tree, &[])
            .unwrap();
        let commit = repo.find_commit(commit_oid).unwrap();

        let (_watcher, mut receiver) = HeadWatcher::start(repo.path()).unwrap();
        // Reading HEAD (an inotify Access event) is not a change.
        let _ = repo.head().unwrap();

        repo.branch("other", &commit, false).unwrap();
        repo.set_head("refs/heads/other").unwrap();
        tokio::time::timeout(Duration::from_secs(10), receiver.changed())
            .await
            .expect("no HEAD event within 10 s")
            .unwrap();
        assert!(*receiver.borrow_and_update() >= 1);
    }
}
