//! The record of a cycle (docs/design.md §3.4): the serde shapes that say why a
//! cycle ended as it did — the verdict and who decided it, each check with
//! its exit code and duration, the diff's size — shared by progress.json,
//! `status`, the cycle's human page and, later, the web page, notifications
//! and digest. Also the words built from them: a check's result as one line,
//! `checks.md` (every check's full output) and the recent outcomes the idea
//! prompt sees.
//!
//! It decides nothing: the cycle fills these in, the state files keep them.

use serde::{Deserialize, Serialize};

use crate::checks::CheckResult;
use crate::state::CycleRecord;

/// Who had the last word on the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DecidedBy {
    /// The configured checks: one failed (whatever the agent said), or all
    /// passed and the agent did not say fail.
    Checks,
    /// The backtest agent: its fail, or its pass when no checks are configured.
    Agent,
    /// A diff gate refused the edit before any verification.
    Gate,
    /// A git hook (`pre-commit`, `commit-msg`) refused the verified commit.
    Hook,
}

impl DecidedBy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DecidedBy::Checks => "checks",
            DecidedBy::Agent => "agent",
            DecidedBy::Gate => "gate",
            DecidedBy::Hook => "hook",
        }
    }
}

/// What the backtest agent said, when it said something valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AgentVerdict {
    Pass,
    Fail,
}

/// The verdict on a cycle's edit: kept or not, who decided and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Verdict {
    pub(crate) pass: bool,
    pub(crate) decided_by: DecidedBy,
    /// The backtest agent's own word, `None` when it gave no valid verdict
    /// (or did not run: a gate refused the edit first).
    #[serde(default)]
    pub(crate) agent_verdict: Option<AgentVerdict>,
    /// One line: why.
    pub(crate) reason: String,
}

/// One backtest check as the record keeps it; its full output is in
/// `cycles/<n>/checks.md`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckRecord {
    pub(crate) command: String,
    /// The exit code; `None` when it was killed (timeout) or could not start.
    #[serde(default)]
    pub(crate) exit: Option<i32>,
    #[serde(default)]
    pub(crate) duration_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) timed_out: bool,
    /// The last lines of its output (redacted).
    #[serde(default)]
    pub(crate) output_tail: String,
}

impl CheckRecord {
    /// What the record keeps of a check's result (the tail of its output).
    pub(crate) fn from_result(result: &CheckResult) -> CheckRecord {
        CheckRecord {
            command: result.command.clone(),
            exit: result.exit_code,
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            timed_out: result.timed_out,
            output_tail: result.output_tail.clone(),
        }
    }

    pub(crate) fn passed(&self) -> bool {
        !self.timed_out && self.exit == Some(0)
    }

    /// How it ended, in words: `exited 0`, `exited 1`, `timed out`, `did not run`.
    pub(crate) fn ending(&self) -> String {
        match (self.timed_out, self.exit) {
            (true, _) => "timed out".to_owned(),
            (false, Some(code)) => format!("exited {code}"),
            (false, None) => "could not run".to_owned(),
        }
    }
}

/// The size of the cycle's edit, as code-edit left it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DiffStat {
    pub(crate) files_changed: usize,
    pub(crate) insertions: usize,
    pub(crate) deletions: usize,
    /// Commits the agent made itself during the edit.
    #[serde(default)]
    pub(crate) agent_commits: usize,
}

impl std::fmt::Display for DiffStat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |count: usize| if count == 1 { "" } else { "s" };
        write!(
            f,
            "{} file{} changed, {} insertion{}(+), {} deletion{}(-)",
            self.files_changed,
            s(self.files_changed),
            self.insertions,
            s(self.insertions),
            self.deletions,
            s(self.deletions)
        )?;
        if self.agent_commits > 0 {
            let commits = self.agent_commits;
            write!(f, ", {commits} commit{} by the agent", s(commits))?;
        }
        Ok(())
    }
}

/// `cycles/<n>/checks.md`: each check's command, exit code, duration and full
/// output (as captured: capped, see `checks`). Redaction is the caller's.
pub(crate) fn checks_page(cycle: u64, checks: &[CheckResult]) -> String {
    let mut text = format!("# Cycle {cycle} — backtest checks\n");
    for check in checks {
        let record = CheckRecord::from_result(check);
        text.push_str(&format!(
            "\n## `{}` — {} in {}\n\n````text\n{}{}````\n",
            check.command,
            record.ending(),
            duration_words(record.duration_ms),
            check.output,
            if check.output.is_empty() || check.output.ends_with('\n') {
                ""
            } else {
                "\n"
            },
        ));
    }
    text
}

/// A duration in milliseconds as people read it: `850 ms`, `12.3 s`, `4 min 05 s`.
pub(crate) fn duration_words(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let seconds = ms / 1000;
        format!("{} min {:02} s", seconds / 60, seconds % 60)
    }
}

/// How many earlier cycles the idea prompt hears of.
pub(crate) const RECENT_OUTCOMES: usize = 5;

/// The last `limit` cycles as the idea prompt sees them, oldest first, one
/// line each: `cycle 3 — rolled_back: "Speed up parse" — checks failed: …`.
pub(crate) fn recent_outcomes(cycles: &[CycleRecord], limit: usize) -> Vec<String> {
    cycles[cycles.len().saturating_sub(limit)..]
        .iter()
        .map(|record| {
            let title = record
                .title
                .as_deref()
                .map_or_else(|| "(no title)".to_owned(), |title| format!("{title:?}"));
            let mut line = format!(
                "cycle {} — {}: {title}",
                record.cycle,
                record.outcome.name()
            );
            if let Some(reason) = record.reason.as_deref().or(record.error.as_deref()) {
                line.push_str(&format!(" — {reason}"));
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_words(850), "850 ms");
        assert_eq!(duration_words(12_340), "12.3 s");
        assert_eq!(duration_words(245_000), "4 min 05 s");
    }

    #[test]
    fn an_older_record_without_the_new_fields_still_loads() {
        let record: CycleRecord = serde_json::from_str(
            r#"{"cycle":1,"cycle_id":"c","started_at":"s","ended_at":"e","duration_seconds":1.0,
               "outcome":"rolled_back","success":false}"#,
        )
        .unwrap();
        assert_eq!(record.reason, None);
        assert_eq!(record.verdict, None);
        assert!(record.checks.is_empty());
    }
}
