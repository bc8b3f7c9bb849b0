//! The loop: asks the budget and the breaker, runs one cycle, records it in
//! progress.json and report.md, and decides whether to go on.

use std::time::SystemTime;

use anyhow::Result;
use tracing::Instrument;

use crate::breaker::Admission;
use crate::cycle::{self, CycleEnd, CycleInput, CycleReport, Stop};
use crate::events::{EventKind, WaitReason};
use crate::prd;
use crate::prompt::StoryBrief;
use crate::retention::{self, Retention};
use crate::state::{self, CycleRecord, DaemonState, InFlight, Outcome, Progress, VERSION, Waiting};
use crate::tasks;

use super::branch::head_moved;
use super::records::{recent_learnings, redact_report};
use super::status_board::breaker_reasons;
use super::{Daemon, RunExit, UsageError, now_rfc3339, rfc3339};

impl Daemon {
    pub(super) async fn main_loop(&mut self) -> Result<RunExit> {
        let mut cycles_run: u32 = 0;
        loop {
            self.liveness.beat();
            self.take_requests();
            if self.control.0.requests().stop_after_cycle {
                tracing::info!("stopping on request");
                return Ok(RunExit::StopRequested);
            }
            if self.wait_while_paused().await.is_err() {
                return Ok(RunExit::Interrupted);
            }
            if let Some(max) = self.config.max_iterations
                && cycles_run >= max
            {
                tracing::info!(
                    max_iterations = max,
                    "max iterations reached without completion"
                );
                return Ok(RunExit::MaxIterations);
            }
            if let Some(reason) = self.budget_exhausted() {
                tracing::warn!(%reason, "halting: budget exhausted");
                return Ok(RunExit::Halted);
            }
            match self.guards.breaker.admit(SystemTime::now()) {
                Admission::Go => {}
                Admission::Probe => {
                    tracing::info!("circuit breaker half-open: running a probe cycle")
                }
                Admission::WaitUntil(until) => {
                    self.save_guards()?;
                    if self.config.breaker.halt_on_open {
                        tracing::warn!(until = %rfc3339(until), "circuit breaker is open and halt_on_open = true: halting");
                        return Ok(RunExit::Halted);
                    }
                    tracing::warn!(until = %rfc3339(until), reasons = %breaker_reasons(&self.guards.breaker), "circuit breaker open: waiting");
                    if self
                        .wait_until(until, WaitReason::Breaker, "circuit breaker open")
                        .await
                        .is_err()
                    {
                        return Ok(RunExit::Interrupted);
                    }
                    continue;
                }
            }
            let cycle = self.next_cycle_number();
            let (end, report) = self.run_cycle(cycle).await?;
            if let Some(message) = self.disk_full.take() {
                return Err(UsageError(message).into());
            }
            cycles_run += 1;
            let outcome = match &end {
                CycleEnd::Interrupted { .. } => return Ok(RunExit::Interrupted),
                CycleEnd::Halted { reason, .. } => {
                    tracing::warn!(%reason, "halting");
                    return Ok(RunExit::Halted);
                }
                CycleEnd::Ran(outcome) | CycleEnd::Complete(outcome) => *outcome,
            };
            let now = SystemTime::now();
            match outcome {
                Outcome::Committed | Outcome::Complete => self.guards.breaker.record_success(),
                // Not reached: an interrupted cycle ends as CycleEnd::Interrupted
                // above; the breaker counts nothing for it either way.
                Outcome::Interrupted => {}
                Outcome::Failed | Outcome::NoChanges | Outcome::RolledBack => {
                    let reason = format!(
                        "cycle {cycle}: {}{}",
                        outcome.name(),
                        report
                            .error
                            .as_deref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    );
                    if let Some(opened) = self.guards.breaker.record_failure(now, &reason) {
                        tracing::warn!(until = %rfc3339(opened.until), %reason, "circuit breaker opened");
                        if self.config.breaker.halt_on_open {
                            self.save_guards()?;
                            return Ok(RunExit::Halted);
                        }
                    }
                }
            }
            self.save_guards()?;
            if let Some(message) = self.fatal.take() {
                return Err(UsageError(message).into());
            }
            if let CycleEnd::Complete(_) = end {
                tracing::info!(cycle, "completion accepted: stopping");
                return Ok(RunExit::Complete);
            }
            if let Some(max) = self.config.max_iterations
                && cycles_run >= max
            {
                continue;
            }
            let sleep = self.config.sleep_between_iterations;
            if !sleep.is_zero()
                && self
                    .wait_until(
                        SystemTime::now() + sleep,
                        WaitReason::Sleep,
                        "sleep between iterations",
                    )
                    .await
                    .is_err()
            {
                return Ok(RunExit::Interrupted);
            }
        }
    }

    pub(super) fn next_cycle_number(&self) -> u64 {
        cycle_after(&self.records.progress, self.paths.highest_cycle_dir())
    }

    pub(super) async fn run_cycle(&mut self, cycle: u64) -> Result<(CycleEnd, CycleReport)> {
        let started_at = now_rfc3339();
        let started = std::time::Instant::now();
        let in_flight = InFlight {
            version: VERSION,
            cycle,
            started_at: started_at.clone(),
            branch: self.checkout.branch.clone(),
            ..InFlight::default()
        };
        state::save_json(&self.paths.in_flight(), &in_flight)?;
        self.records.in_flight = Some(in_flight);
        self.checkout.archived_this_cycle = None;
        self.warned_this_cycle.clear();
        self.set_status(|status| {
            status.cycle = Some(cycle);
            status.state = DaemonState::Running;
        });
        // Outside systemd this does nothing; a failed notification harms no run.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!("cycle {cycle}"))]);

        self.reload_prd();
        let input = CycleInput {
            cycle,
            repo: self.config.repo.clone(),
            branch: self.checkout.branch.clone(),
            learnings: recent_learnings(&self.records.progress, 15),
            patterns: self.records.progress.patterns.clone(),
            recent_outcomes: crate::record::recent_outcomes(
                &self.records.progress.cycles,
                crate::record::RECENT_OUTCOMES,
            ),
            open_stories: self.open_stories(),
            auto_commit: self.config.git.auto_commit,
            checks_configured: !self.config.backtest.checks.is_empty(),
            allow_dirty: self.config.allow_dirty,
            home: self.config.home.clone(),
            gates: self.config.gates.clone(),
        };
        tracing::info!(cycle, branch = %self.checkout.branch, "cycle started");
        self.events.publish(EventKind::CycleStarted { cycle });
        let (end, mut report) = cycle::run(&input, self)
            .instrument(tracing::info_span!("cycle", cycle))
            .await;
        redact_report(&mut report);
        // Settle the branch before the cycle is recorded: a rollback at its
        // end may have put HEAD back on the branch an archive was made for.
        if let Err(error) = self.check_branch().await {
            tracing::error!(cycle, error = %format!("{error:#}"), "branch check failed");
        }
        let outcome = end.outcome();

        if outcome == Outcome::Committed
            && let Some(story) = &report.story_passed
        {
            self.mark_story_passed(cycle, story);
        }
        let record = CycleRecord::from_report(
            cycle,
            started_at,
            started.elapsed(),
            outcome,
            &report,
            jiff::Timestamp::now(),
        );
        self.records.progress.total_cost_usd += self.records.unrecorded_cost_usd;
        self.records.unrecorded_cost_usd = 0.0;
        for pattern in &report.patterns {
            if !self.records.progress.patterns.contains(pattern) {
                self.records.progress.patterns.push(pattern.clone());
            }
        }
        self.records.progress.cycles.push(record.clone());
        state::save_json(&self.paths.progress(), &self.records.progress)?;
        if !report.checks.is_empty() {
            state::write_text(
                &self.paths.cycle_dir(cycle).join("checks.md"),
                &crate::redact::redact(&crate::record::checks_page(cycle, &report.checks)),
            )?;
        }
        let extras = crate::cycle_page::PageExtras {
            branch: &self.checkout.branch,
            agent_text: &report.output(crate::phase::Phase::Report),
            patterns: &report.patterns,
        };
        state::write_text(
            &self.paths.cycle_dir(cycle).join("report.md"),
            &crate::cycle_page::render(&record, &extras),
        )?;
        state::clear_in_flight(&self.paths)?;
        self.records.in_flight = None;
        self.events.publish(EventKind::CycleFinished {
            cycle,
            outcome,
            title: record.title.clone(),
            reason: record.reason.clone(),
            commit: record.commit.clone(),
            attempt_ref: record.attempt_ref.clone(),
            cost_usd: record.cost_usd,
            duration_ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
        });
        if !self.signals.shutdown.is_cancelled() {
            self.prune_cycles().await;
        }
        let spent = self.records.progress.total_cost_usd + self.records.unrecorded_cost_usd;
        self.set_status(|status| {
            status.phase = None;
            status.phase_started_at = None;
            status.spent_usd = spent;
            status.last_error = report.error.clone().or(status.last_error.take());
        });
        tracing::info!(
            cycle,
            outcome = outcome.name(),
            cost_usd = report.cost_usd,
            commit = report.commit.as_deref().unwrap_or("-"),
            "cycle finished"
        );
        Ok((end, report))
    }

    /// Marks `story` as passing in prd.json, for the committed `cycle` whose
    /// report named it. Failures are logged: the commit stands either way.
    /// The edit goes through the task store: under its lock, on the file as
    /// it is now, so a task the user added or edited meanwhile is kept.
    pub(super) fn mark_story_passed(&mut self, cycle: u64, story: &str) {
        let marked =
            tasks::Store::open(&self.paths.home).and_then(|store| store.set_done(story, true));
        match marked {
            Ok(_) => {
                tracing::info!(cycle, story = %story, "story marked as passing in prd.json")
            }
            Err(tasks::TaskError::UnknownId { .. }) => {
                tracing::warn!(cycle, story = %story, "the report names a story that prd.json does not have")
            }
            Err(error) => {
                tracing::error!(cycle, story = %story, error = %error, "cannot mark the story as passing in prd.json; it is left as it is")
            }
        }
        self.reload_prd();
    }

    /// Deletes and compresses the directories of old cycles (`[state]
    /// keep_cycles`, `compress_after`) on a blocking thread, while the
    /// heartbeat goes on (a first pass over a big home may take minutes); a
    /// stop signal interrupts it between files. Problems are logged, never
    /// fatal.
    pub(super) async fn prune_cycles(&self) {
        let retention = Retention {
            keep_cycles: self.config.state.keep_cycles,
            compress_after: self.config.state.compress_after,
        };
        let dir = self.paths.cycles_dir();
        let in_flight = self
            .records
            .in_flight
            .as_ref()
            .map(|in_flight| in_flight.cycle);
        let shutdown = self.signals.shutdown.clone();
        // Bounded: one pass over the cycle directories, stoppable.
        let pruned = self
            .liveness
            .during(crate::cycle::off_thread(move || {
                retention::apply(&dir, retention, in_flight, || shutdown.is_cancelled())
            }))
            .await;
        if pruned.deleted > 0 || pruned.compressed_files > 0 {
            tracing::info!(
                deleted_cycles = pruned.deleted,
                compressed_files = pruned.compressed_files,
                keep_cycles = retention.keep_cycles,
                compress_after = retention.compress_after,
                "old cycles pruned"
            );
        }
        for problem in &pruned.problems {
            tracing::warn!(%problem, "cannot prune an old cycle");
        }
    }

    /// prd.json is the user's file too: it is re-read before each use, so that
    /// edits made during a run are seen and never overwritten by an older copy.
    /// A file that has become unreadable is left alone: the copy read before
    /// still decides which stories are open (completion stays refused), and
    /// no story is marked. Returns whether the file could be read.
    pub(super) fn reload_prd(&mut self) -> bool {
        match prd::load(&self.paths.prd()) {
            Ok(prd) => {
                self.records.prd = prd;
                true
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "cannot read prd.json; it is left as it is and no story is marked until it is fixed");
                false
            }
        }
    }

    pub(super) fn open_stories(&self) -> Vec<StoryBrief> {
        self.records
            .prd
            .as_ref()
            .map(prd::open_stories)
            .unwrap_or_default()
            .into_iter()
            .map(|story| StoryBrief {
                id: story.id,
                title: story.title,
                description: story.description,
                acceptance_criteria: story.acceptance_criteria,
                priority: story.priority,
            })
            .collect()
    }

    /// Waits until `until` (wall clock), visible in status and as a
    /// `waiting` event; `Err` on shutdown. A breaker reset ends a breaker
    /// wait, and a stop request ends a wait between cycles (breaker, sleep).
    pub(super) async fn wait_until(
        &mut self,
        until: SystemTime,
        reason: WaitReason,
        detail: &str,
    ) -> Result<(), Stop> {
        let duration = until.duration_since(SystemTime::now()).unwrap_or_default();
        self.set_status(|status| {
            status.state = DaemonState::Waiting;
            status.waiting = Some(Waiting {
                reason: detail.to_owned(),
                until: rfc3339(until),
            });
        });
        self.events.publish(EventKind::Waiting {
            reason,
            detail: detail.to_owned(),
            until: rfc3339(until),
        });
        let deadline = tokio::time::Instant::now() + duration;
        // A wait is the loop at work: it stamps its liveness as it goes.
        let mut alive = self.liveness.ticker();
        let result = loop {
            tokio::select! {
                _ = alive.tick() => self.liveness.beat(),
                () = tokio::time::sleep_until(deadline) => break Ok(()),
                () = self.signals.shutdown.cancelled() => break Err(Stop::Cancelled),
                () = head_moved(&mut self.checkout.head_watch) => {
                    if let Err(error) = self.check_branch().await {
                        tracing::error!(error = %format!("{error:#}"), "branch check failed");
                    }
                }
                changed = self.control.1.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let breaker_reset = self.take_requests();
                    let between_cycles = matches!(reason, WaitReason::Breaker | WaitReason::Sleep);
                    if (breaker_reset && reason == WaitReason::Breaker)
                        || (between_cycles && self.control.0.requests().stop_after_cycle)
                    {
                        break Ok(());
                    }
                }
            }
        };
        self.set_status(|status| {
            status.state = DaemonState::Running;
            status.waiting = None;
        });
        result
    }
}

impl Daemon {
    /// Acts on the requests that need no boundary (a breaker reset) and
    /// tells whether the breaker was reset.
    pub(super) fn take_requests(&mut self) -> bool {
        let requests = *self.control.1.borrow_and_update();
        if requests.breaker_resets == self.breaker_resets_handled {
            return false;
        }
        self.breaker_resets_handled = requests.breaker_resets;
        self.guards.breaker.reset();
        tracing::info!("circuit breaker reset on request");
        if let Err(error) = self.save_guards() {
            tracing::warn!(error = %format!("{error:#}"), "cannot save the reset breaker");
        }
        true
    }

    /// While paused, waits (visible as `waiting`/`paused`) until resumed;
    /// `Err` on shutdown. Returns at once when not paused.
    pub(super) async fn wait_while_paused(&mut self) -> Result<(), Stop> {
        if !self.control.0.requests().paused {
            return Ok(());
        }
        tracing::info!("paused on request: no new phase run starts until resumed");
        self.events.publish(EventKind::Paused {});
        self.set_status(|status| {
            status.state = DaemonState::Waiting;
            status.waiting = Some(Waiting {
                reason: "paused (resume with `ralphd resume` or the page)".to_owned(),
                until: String::new(),
            });
        });
        let mut alive = self.liveness.ticker();
        let result = loop {
            if !self.control.1.borrow_and_update().paused {
                break Ok(());
            }
            tokio::select! {
                _ = alive.tick() => self.liveness.beat(),
                () = self.signals.shutdown.cancelled() => break Err(Stop::Cancelled),
                changed = self.control.1.changed() => {
                    if changed.is_err() {
                        break Ok(());
                    }
                    self.take_requests();
                }
            }
        };
        self.set_status(|status| {
            status.state = DaemonState::Running;
            status.waiting = None;
        });
        if result.is_ok() {
            tracing::info!("resumed");
            self.events.publish(EventKind::Resumed {});
        }
        result
    }
}

/// The next cycle's number: one past the highest recorded in progress.json
/// and the highest with a directory under `state/cycles/` (a cycle may have
/// left its directory without its record, and progress.json starts afresh
/// on a new branch), so no cycle ever reuses another's directory.
fn cycle_after(progress: &Progress, highest_cycle_dir: u64) -> u64 {
    let recorded = progress
        .cycles
        .iter()
        .map(|record| record.cycle)
        .max()
        .unwrap_or(0);
    recorded.max(highest_cycle_dir) + 1
}

#[cfg(test)]
mod tests {
    use super::cycle_after;
    use crate::state::{CycleRecord, Outcome, Progress};

    fn progress_with_cycles(cycles: &[u64]) -> Progress {
        Progress {
            cycles: cycles
                .iter()
                .map(|&cycle| CycleRecord::for_test(cycle, Outcome::NoChanges))
                .collect(),
            ..Progress::default()
        }
    }

    #[test]
    fn a_cycle_number_is_never_reused_neither_from_progress_nor_from_a_directory() {
        // (recorded cycles, highest directory under state/cycles/, next cycle)
        let table: &[(&[u64], u64, u64)] = &[
            (&[], 0, 1),
            (&[1, 2, 3], 3, 4),
            (&[3, 1, 2], 0, 4),
            // A fresh progress after a branch change: the directories go on.
            (&[], 7, 8),
            // A cycle that died before its record left its directory.
            (&[1, 2], 3, 4),
        ];
        for &(recorded, highest_dir, next) in table {
            assert_eq!(
                cycle_after(&progress_with_cycles(recorded), highest_dir),
                next,
                "recorded {recorded:?}, highest directory {highest_dir}"
            );
        }
    }
}
