//! Branch changes: progress.json and prd.json are archived when HEAD moves
//! to another branch, and restored when a cycle's rollback undoes the move.

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::state::{self};
use crate::watch::HeadWatcher;

use super::Daemon;
use super::records::fresh_progress;

impl Daemon {
    /// Archives progress.json and prd.json when the branch changed since the
    /// last run or phase, and starts a fresh progress for the new branch.
    pub(super) async fn check_branch(&mut self) -> Result<()> {
        let current = self.git(|repo| repo.branch_label()).await?;
        // Mid-cycle, HEAD off the branch the cycle started on is the agent's
        // doing (docs/design.md §14): the cycle saves and undoes it after the phase
        // run; it is no branch change of the user's to archive.
        if let Some(start) = self
            .records
            .in_flight
            .as_ref()
            .and_then(|flight| flight.start.as_ref())
            && start.branch_label() != current
        {
            tracing::debug!(cycle_branch = %start.branch_label(), head = %current, "HEAD is off the cycle's branch; the cycle undoes it after the phase run");
            return Ok(());
        }
        let last = state::read_last_branch(&self.paths)?;
        let continues = match &last {
            Some(last) if last != &current => {
                let (last, label) = (last.clone(), current.clone());
                self.git(move |repo| repo.continues_detached(&last, &label))
                    .await?
            }
            _ => false,
        };
        // The cycle's own switch was undone (its rollback put HEAD back on the
        // branch an archive was just made for): that archive is taken back.
        let undone = match &last {
            Some(last) if !continues && *last != current => self
                .checkout
                .archived_this_cycle
                .take_if(|(left, ..)| *left == current),
            _ => None,
        };
        match (last, undone) {
            (Some(_), _) if continues => state::write_last_branch(&self.paths, &current)?,
            (Some(last), Some((_, dir, progress))) => {
                // The branch goes on with its history, not afresh.
                tracing::info!(from = %last, to = %current, "back on the cycle's branch: its progress is restored from the archive just made");
                self.records.progress = progress;
                state::save_json(&self.paths.progress(), &self.records.progress)?;
                state::write_last_branch(&self.paths, &current)?;
                if let Err(error) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(%error, archive = %dir.display(), "cannot remove the archive that was undone");
                }
            }
            (Some(last), None) if last != current => {
                let date = jiff::Zoned::now().date();
                // A file that cannot be read stops the archive (nothing is
                // reset); one that does not exist is simply not archived.
                let read_if_present = |path: std::path::PathBuf| match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(error) => Err(error).with_context(|| {
                        format!("cannot archive {}: cannot read it", path.display())
                    }),
                };
                let progress = read_if_present(self.paths.progress())?;
                let prd = read_if_present(self.paths.prd())?;
                let dir = crate::archive::archive_branch(
                    &self.paths.archive_dir(),
                    date,
                    &last,
                    &[
                        ("progress.json", progress.as_deref()),
                        ("prd.json", prd.as_deref()),
                    ],
                )?;
                tracing::info!(from = %last, to = %current, archive = %dir.display(), "branch changed: progress archived, starting fresh");
                let left = std::mem::replace(&mut self.records.progress, fresh_progress(&current));
                if self.records.in_flight.is_some() {
                    self.checkout.archived_this_cycle = Some((last, dir, left));
                }
                state::save_json(&self.paths.progress(), &self.records.progress)?;
                state::write_last_branch(&self.paths, &current)?;
            }
            (Some(_), _) => {}
            (None, _) => state::write_last_branch(&self.paths, &current)?,
        }
        self.checkout.branch = current.clone();
        self.set_status(|status| status.branch = current);
        Ok(())
    }
}

/// Resolves when the HEAD watcher reports a change; never without a watcher.
pub(super) async fn head_moved(watch: &mut Option<(HeadWatcher, watch::Receiver<u64>)>) {
    match watch {
        Some((_, receiver)) => {
            if receiver.changed().await.is_err() {
                // The watcher thread is gone: stop listening to it.
                *watch = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
