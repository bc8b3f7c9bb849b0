//! Crash recovery: what a daemon that died mid-cycle left behind (its agent's
//! processes, its work in the tree, its in-flight note) is stopped, saved and
//! recorded at the next start.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::cycle::save_attempt_masking_secrets;
use crate::git::{GitRepo, PendingCommit};
use crate::state::{self, CycleRecord, InFlight};

use super::Daemon;

impl Daemon {
    /// Records the cycle that was running when the previous daemon died (if
    /// one was), as far as it got (see [`CycleRecord::from_in_flight`]), and
    /// marks its story in prd.json when its work was committed.
    pub(super) fn record_interrupted_cycle(
        &mut self,
        interrupted: Option<InFlight>,
        recovered: Recovered,
    ) -> Result<()> {
        let Some(in_flight) = interrupted else {
            return Ok(());
        };
        let cycle = in_flight.cycle;
        if self
            .records
            .progress
            .cycles
            .iter()
            .any(|record| record.cycle == cycle)
        {
            // It died after recording the cycle, before removing in-flight.json.
            return state::clear_in_flight(&self.paths);
        }
        if let (Some(own), Some(later)) = (&in_flight.attempt_ref, &recovered.attempt_ref) {
            tracing::warn!(cycle, attempt = %own, leftovers = %later, "the interrupted cycle had saved its attempt; what its tree still held is saved too");
        }
        let story = in_flight.story.clone();
        let record = CycleRecord::from_in_flight(in_flight, recovered, jiff::Timestamp::now());
        if let Some(commit) = &record.commit {
            tracing::warn!(
                cycle,
                commit = commit.as_str(),
                "the previous run ended after this cycle's commit without recording it; recording it as committed"
            );
        } else {
            tracing::warn!(
                cycle,
                "the previous run ended during this cycle without recording it; recording it as interrupted"
            );
        }
        if record.commit.is_some()
            && let Some(story) = &story
        {
            self.mark_story_passed(cycle, story);
        }
        self.records.progress.total_cost_usd += record.cost_usd;
        self.records.progress.cycles.push(record);
        state::save_json(&self.paths.progress(), &self.records.progress)?;
        state::clear_in_flight(&self.paths)
    }
}

/// Kills what is left of the agents of a daemon of this home that died:
/// every process carrying the home's agent marker in its environment (the
/// agent itself if it outlived the daemon, and its tools, also those that
/// left its process group with `setsid`). The home's lock is held, so no
/// live daemon owns them.
pub(super) fn stop_leftover_agents(home: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let leftovers = || {
        crate::reaper::processes_with_env(
            crate::agent::claude::AGENT_MARKER,
            home.as_os_str().as_bytes(),
        )
    };
    let mut pids = leftovers();
    if pids.is_empty() {
        return;
    }
    tracing::warn!(
        processes = pids.len(),
        "stopping the agent processes left over from the previous run"
    );
    // They must be gone before the repository is rolled back under them.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !pids.is_empty() && std::time::Instant::now() < deadline {
        for pid in &pids {
            // SAFETY: kill takes plain integers; each pid was seen a moment ago
            // carrying this home's marker.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
        pids = leftovers();
    }
}

/// What the start-up found of an interrupted cycle in the repository.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// HEAD is the cycle's own commit: the daemon died right after making it.
    pub(super) kept_commit: Option<String>,
    /// What the cycle left in the tree, saved before the rollback.
    pub(super) attempt_ref: Option<String>,
    /// The newest attempt of the cycle's number saved since it started,
    /// found before recovery saved anything: the cycle's own attempt when
    /// in-flight.json could not be written to name it (a full disk).
    pub(super) unnoted_attempt: Option<String>,
}

/// The newest of `attempts` saved for `cycle` (`refs/ralph/attempts/<cycle>`
/// or `<cycle>-<k>`) no earlier than `started_at` (RFC 3339; the cycle's
/// start): another home's daemon on the same repository numbers its cycles
/// too.
pub(super) fn newest_attempt_of(
    attempts: &[crate::git::Attempt],
    cycle: u64,
    started_at: &str,
) -> Option<String> {
    let started: jiff::Timestamp = started_at.parse().ok()?;
    let own = format!("refs/ralph/attempts/{cycle}");
    attempts
        .iter()
        .filter(|attempt| {
            let suffix = attempt.cycle_ref.strip_prefix(&own);
            let of_cycle = suffix.is_some_and(|rest| {
                rest.is_empty()
                    || rest
                        .strip_prefix('-')
                        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
            });
            // Both are whole seconds and started_at is rounded to the nearest
            // one: an attempt saved in the cycle's first half second may read
            // one second earlier than its start.
            of_cycle && attempt.time.as_second() + 1 >= started.as_second()
        })
        .max_by_key(|attempt| {
            attempt
                .cycle_ref
                .rsplit_once('-')
                .and_then(|(_, k)| k.parse::<u64>().ok())
                .unwrap_or(1)
        })
        .map(|attempt| attempt.cycle_ref.clone())
}

/// Saves what an interrupted cycle left in the repository as an attempt and
/// rolls the tree back to the cycle's start, unless HEAD is the commit the
/// cycle noted it was about to make of its verified work (`committing`),
/// which is kept. With `secret_scan` on, the attempt is saved like a
/// cycle's, with the lines that hold a credential masked
/// ([`save_attempt_masking_secrets`]). A commit's message proves nothing: the agent can write
/// ralphd's, a `commit-msg` hook can rewrite it.
pub(super) fn recover_repo(
    repo: &GitRepo,
    cycle: u64,
    start: &crate::git::Snapshot,
    committing: Option<&PendingCommit>,
    (name, email): &(String, String),
    secret_scan: bool,
) -> Result<Recovered> {
    // Died between the cycle's commit and the note that it was committed:
    // the verified commit stays.
    if let Some(pending) = committing
        && let Some(commit) = repo.head_is_pending(pending)?
    {
        tracing::info!(
            cycle,
            %commit,
            "the interrupted cycle had already committed its verified work; kept"
        );
        return Ok(Recovered {
            kept_commit: Some(commit),
            ..Recovered::default()
        });
    }
    let message = format!(
        "ralphd: cycle {cycle} attempt (not kept): interrupted\n\nWhy it was not kept: the daemon died during this cycle (crash, kill -9 or power loss)\n"
    );
    let attempt_ref = save_attempt_masking_secrets(
        repo,
        start,
        cycle,
        &message,
        (name, email),
        secret_scan,
    )
    .and_then(|saved| {
        if saved.is_some() {
            repo.rollback(start)?;
        }
        Ok(saved)
    })
    .with_context(|| {
        format!(
            "cannot save and roll back cycle {cycle}, which the previous daemon left unfinished"
        )
    })?;
    if let Some(reference) = &attempt_ref {
        tracing::warn!(cycle, attempt = %reference, "the interrupted cycle's work was saved and the tree rolled back to its start");
    }
    Ok(Recovered {
        attempt_ref,
        ..Recovered::default()
    })
}

#[cfg(test)]
mod tests {
    use super::newest_attempt_of;
    use crate::git::Attempt;

    fn attempt(cycle_ref: &str, second: i64) -> Attempt {
        Attempt {
            cycle_ref: cycle_ref.to_owned(),
            oid: git2::Oid::ZERO_SHA1,
            summary: String::new(),
            time: jiff::Timestamp::from_second(second).unwrap(),
        }
    }

    #[test]
    fn the_unnoted_attempt_is_the_newest_of_the_cycle_since_it_started() {
        let started = jiff::Timestamp::from_second(1_000).unwrap().to_string();
        let attempts = [
            attempt("refs/ralph/attempts/3", 1_000),
            attempt("refs/ralph/attempts/3-2", 1_001),
            attempt("refs/ralph/attempts/3-10", 1_002),
            attempt("refs/ralph/attempts/30", 1_003),
            attempt("refs/ralph/attempts/3-x", 1_004),
        ];
        assert_eq!(
            newest_attempt_of(&attempts, 3, &started).as_deref(),
            Some("refs/ralph/attempts/3-10")
        );
        assert_eq!(newest_attempt_of(&attempts, 4, &started), None);
        // Saved before the cycle started: another cycle 3 (another home).
        let later = jiff::Timestamp::from_second(2_000).unwrap().to_string();
        assert_eq!(newest_attempt_of(&attempts, 3, &later), None);
        assert_eq!(newest_attempt_of(&attempts, 3, "not a time"), None);
        // started_at is rounded to the nearest second: one second earlier counts.
        let rounded_up = jiff::Timestamp::from_second(1_004).unwrap().to_string();
        assert_eq!(
            newest_attempt_of(&attempts[3..4], 30, &rounded_up).as_deref(),
            Some("refs/ralph/attempts/30")
        );
        let too_early = jiff::Timestamp::from_second(1_005).unwrap().to_string();
        assert_eq!(newest_attempt_of(&attempts[3..4], 30, &too_early), None);
    }
}
