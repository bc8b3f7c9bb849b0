//! Putting the repository back: what the agent did to the branch or a
//! submodule is found and undone after each phase run, and whatever the cycle
//! does not keep is saved as an attempt before the tree is rolled back.

use super::*;

impl<E: PhaseExecutor> CycleRun<'_, E> {
    /// docs/design.md §14: after a phase run HEAD must still be on the branch of
    /// `guard`, that branch must still contain `guard`'s commit and no
    /// submodule may have changed. Returns the cycle's reason when not
    /// (`code-edit: the agent …`), also when the check itself fails: a
    /// repository that cannot be checked is not trusted.
    pub(super) async fn trespass_after(
        &mut self,
        guard: &Snapshot<E>,
        phase: Phase,
    ) -> Option<String> {
        match self.repo.trespasses(guard).await {
            Ok(found) if found.is_empty() => None,
            Ok(found) => {
                let what: Vec<String> = found.iter().map(ToString::to_string).collect();
                Some(format!("{phase}: {}", what.join("; ")))
            }
            Err(error) => Some(format!(
                "cannot check the repository after {phase}: {error}"
            )),
        }
    }

    /// Saves what the agent did (its commits, its branch, its submodule work)
    /// as an attempt and puts the repository back to `guard`. A committed
    /// cycle stays committed (its commit is kept); any other cycle fails with
    /// `reason`.
    pub(super) async fn undo_trespass(&mut self, guard: &Snapshot<E>, reason: String) {
        tracing::error!(cycle = self.input.cycle, %reason, "the agent touched what belongs to the cycle; saving its work and restoring the repository");
        // An attempt the verdict already saved stays the cycle's attempt: it
        // holds the edit; this one only what the agent did to git afterwards.
        let verdict_attempt = self.report.attempt_ref.take();
        if self.kept == Some(Outcome::Committed) {
            self.report.error = Some(reason.clone());
            self.save_and_roll_back(guard, &reason).await;
        } else {
            self.fail_and_roll_back(guard, reason).await;
        }
        if let Some(earlier) = verdict_attempt {
            if let (Some(later), Some(error)) =
                (self.report.attempt_ref.take(), self.report.error.as_mut())
            {
                error.push_str(&format!(" (saved as {later})"));
            }
            self.report.attempt_ref = Some(earlier);
        }
    }

    /// Records `error`, which is also why the cycle's work was not kept:
    /// saved as an attempt, then rolled back to `to`.
    pub(super) async fn fail_and_roll_back(&mut self, to: &Snapshot<E>, error: String) {
        self.report.error = Some(error.clone());
        self.save_and_roll_back(to, &error).await;
    }

    /// Saves whatever the cycle changed under `refs/ralph/attempts/<n>` and
    /// puts the repository back to `to` (the user's own changes included).
    pub(super) async fn save_and_roll_back(&mut self, to: &Snapshot<E>, why: &str) {
        let cycle = self.input.cycle;
        let reference = match self.save_attempt(to, why).await {
            Ok(Some(reference)) => reference,
            Ok(None) => return,
            Err(error) => {
                let message = format!(
                    "could not save the attempt ({error}); the work tree still holds the cycle's changes"
                );
                tracing::error!(cycle, %message);
                self.report.error.get_or_insert(message);
                return;
            }
        };
        // Never roll back what could not be saved: save first, record it, then reset.
        self.report.attempt_ref = Some(reference.clone());
        self.note_in_flight_at(to);
        match self.repo.rollback(to).await {
            Ok(()) => {
                tracing::info!(cycle, attempt = %reference, "attempt saved and the work tree rolled back to the cycle's start");
            }
            Err(error) => {
                let message = format!(
                    "attempt saved as {reference}, but the rollback failed ({error}); the work tree still holds the cycle's changes"
                );
                tracing::error!(cycle, %message);
                self.report.error.get_or_insert(message);
            }
        }
    }

    /// Saves what changed since `since` as the cycle's attempt, `why` in its
    /// message; `None` when nothing changed. With secret_scan on, no attempt
    /// keeps a credential the cycle added, whatever ended the cycle: its
    /// lines are masked.
    pub(super) async fn save_attempt(
        &mut self,
        since: &Snapshot<E>,
        why: &str,
    ) -> Result<Option<String>, GitError> {
        let cycle = self.input.cycle;
        let title = self
            .report
            .title
            .clone()
            .unwrap_or_else(|| "attempt".to_owned());
        let message = format!(
            "ralphd: cycle {cycle} attempt (not kept): {title}\n\nWhy it was not kept: {why}\n"
        );
        let (name, email) = self.executor.git_author();
        let secret_scan = self.executor.secret_scan();
        self.repo
            .save_attempt(since, cycle, &message, (&name, &email), secret_scan)
            .await
    }

    /// The daemon must stop: work not committed is saved and rolled back.
    pub(super) async fn stop(&mut self, stop: Stop) -> CutShort {
        let why = match &stop {
            Stop::Cancelled => "the daemon was stopped".to_owned(),
            Stop::Halt(reason) => reason.clone(),
        };
        if self.kept != Some(Outcome::Committed) {
            let start = self.start.clone();
            self.save_and_roll_back(&start, &why).await;
        }
        self.report.error.get_or_insert(why);
        CutShort::Stopped(stop)
    }
}
