//! `cycles/<n>/report.md`, the human page of a cycle (docs/design.md §3.4): ralphd's
//! facts first (outcome and reason, verdict and who decided, each check with
//! its exit code and duration, the diff's size, the commit or saved attempt
//! with the command to look at it, cost and duration), then the report
//! agent's own prose, then the learnings and patterns.
//!
//! A pure function of the cycle's record and the agent's text: it reads and
//! writes nothing.

use crate::record::{CheckRecord, duration_words};
use crate::state::{CycleRecord, Outcome};

/// What the page shows beyond the record.
pub(crate) struct PageExtras<'a> {
    /// The branch the cycle ran on (for the `git log` of a saved attempt).
    pub(crate) branch: &'a str,
    /// The report phase's final text (redacted), empty when it did not run.
    pub(crate) agent_text: &'a str,
    /// The patterns the report agent named in this cycle.
    pub(crate) patterns: &'a [String],
}

/// The Markdown of `cycles/<n>/report.md`.
pub(crate) fn render(record: &CycleRecord, extras: &PageExtras<'_>) -> String {
    let title = record
        .title
        .as_deref()
        .unwrap_or("(no title: failed before idea)");
    let mut page = format!("# Cycle {} — {title}\n\n", record.cycle);
    page.push_str(&format!("**{}**", outcome_words(record.outcome)));
    if let Some(reason) = &record.reason {
        page.push_str(&format!(": {reason}"));
    }
    page.push_str("\n\n");

    match &record.verdict {
        Some(verdict) => {
            let said = match verdict.agent_verdict {
                Some(crate::record::AgentVerdict::Pass) => "said pass",
                Some(crate::record::AgentVerdict::Fail) => "said fail",
                None => "gave no verdict",
            };
            page.push_str(&format!(
                "- verdict: **{}**, decided by the {} (the backtest agent {said})\n",
                if verdict.pass { "pass" } else { "fail" },
                verdict.decided_by.name(),
            ));
        }
        None => page.push_str("- verdict: none reached\n"),
    }
    match &record.diff {
        Some(diff) => page.push_str(&format!("- diff: {diff}\n")),
        None => page.push_str("- diff: no change\n"),
    }
    if let Some(commit) = &record.commit {
        page.push_str(&format!(
            "- commit: `{commit}` — look at it: `{}`\n",
            look_at_commit(commit)
        ));
    }
    if let Some(attempt) = &record.attempt_ref {
        page.push_str(&format!(
            "- saved attempt (not kept): `{attempt}` — look at it: `{}`\n",
            look_at_attempt(extras.branch, attempt)
        ));
    }
    if let Some(error) = record
        .error
        .as_ref()
        .filter(|error| Some(*error) != record.reason.as_ref())
    {
        page.push_str(&format!("- problem: {error}\n"));
    }
    page.push_str(&format!("- cost: ${:.4}\n", record.cost_usd));
    page.push_str(&format!(
        "- duration: {} (started {}, ended {})\n",
        duration_words((record.duration_seconds * 1000.0) as u64),
        record.started_at,
        record.ended_at
    ));

    if !record.checks.is_empty() {
        page.push_str("\n## Checks\n\n");
        for check in &record.checks {
            page.push_str(&check_line(check));
        }
        page.push_str("\nThe full output of each check is in `checks.md`.\n");
    }

    if !record.phases.is_empty() {
        page.push_str("\n## Phases\n\n");
        for phase in &record.phases {
            page.push_str(&format!(
                "- {}: {} in {}, ${:.4}, {} turn{}{}\n",
                phase.phase,
                phase.status,
                duration_words(phase.duration_ms),
                phase.cost_usd,
                phase.turns,
                if phase.turns == 1 { "" } else { "s" },
                phase
                    .session_id
                    .as_deref()
                    .map(|id| format!(", session `{id}`"))
                    .unwrap_or_default(),
            ));
        }
    }

    let prose = agent_prose(extras.agent_text);
    page.push_str("\n## The report agent's write-up\n\n");
    if prose.is_empty() && record.output.is_empty() {
        page.push_str("(none: the report phase did not finish)\n");
    } else {
        if !record.output.is_empty() {
            page.push_str(&format!("Summary: {}\n\n", record.output));
        }
        if !prose.is_empty() {
            page.push_str(prose);
            page.push('\n');
        }
    }
    if !record.learnings.is_empty() {
        page.push_str("\n## Learnings\n\n");
        for learning in &record.learnings {
            page.push_str(&format!("- {learning}\n"));
        }
    }
    if !extras.patterns.is_empty() {
        page.push_str("\n## Patterns\n\n");
        for pattern in extras.patterns {
            page.push_str(&format!("- {pattern}\n"));
        }
    }
    page
}

/// The command that shows a commit ralphd made.
pub(crate) fn look_at_commit(commit: &str) -> String {
    format!("git show {commit}")
}

/// The command that shows a saved attempt's work: what it holds beyond the
/// branch the cycle ran on.
pub(crate) fn look_at_attempt(branch: &str, attempt: &str) -> String {
    format!("git log -p {branch}..{attempt}")
}

/// An outcome as the page says it.
pub(crate) fn outcome_words(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Committed => "committed",
        Outcome::RolledBack => "rolled back",
        Outcome::NoChanges => "no changes",
        Outcome::Failed => "failed",
        Outcome::Complete => "complete",
        Outcome::Interrupted => "interrupted",
    }
}

fn check_line(check: &CheckRecord) -> String {
    format!(
        "- {} `{}` — {} in {}\n",
        if check.passed() { "passed" } else { "FAILED" },
        check.command,
        check.ending(),
        duration_words(check.duration_ms)
    )
}

/// The agent's text without its trailing fenced `json` block (the summary,
/// learnings and patterns the page shows in their own sections).
fn agent_prose(text: &str) -> &str {
    let text = text.trim();
    match text.rfind("```json") {
        Some(start) if text.ends_with("```") => text[..start].trim_end(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AgentVerdict, DecidedBy, DiffStat, Verdict};
    use crate::state::PhaseRecord;

    fn phase(name: &str, status: &str) -> PhaseRecord {
        PhaseRecord {
            phase: name.to_owned(),
            status: status.to_owned(),
            duration_ms: 2300,
            cost_usd: 0.01,
            tokens: Default::default(),
            session_id: Some(format!("s-{name}")),
            turns: 3,
            attempts: 1,
            permission_denials: Vec::new(),
            error: None,
        }
    }

    fn record(outcome: Outcome) -> CycleRecord {
        CycleRecord {
            started_at: "2026-01-02T03:04:05Z".to_owned(),
            ended_at: "2026-01-02T03:05:17Z".to_owned(),
            duration_seconds: 72.0,
            phases: ["scan", "idea", "code-edit", "backtest", "report"]
                .iter()
                .map(|name| phase(name, "ok"))
                .collect(),
            success: false,
            cost_usd: 0.05,
            output: "tried a faster parser".to_owned(),
            learnings: vec!["the parser is hot".to_owned()],
            title: Some("Speed up parse".to_owned()),
            diff: Some(DiffStat {
                files_changed: 2,
                insertions: 10,
                deletions: 3,
                agent_commits: 0,
            }),
            ..CycleRecord::for_test(4, outcome)
        }
    }

    const AGENT: &str = "The parser change broke two tests.\n\nFollow-up: keep the old path for quoted input.\n\n```json\n{\"summary\":\"tried a faster parser\",\"learnings\":[\"the parser is hot\"],\"patterns\":[\"tests live in tests/\"]}\n```";

    #[test]
    fn a_rolled_back_cycle_says_the_checks_overruled_the_agent() {
        let mut record = record(Outcome::RolledBack);
        record.reason =
            Some("checks failed: pytest -q exited 1 (the backtest agent said pass)".to_owned());
        record.attempt_ref = Some("refs/ralph/attempts/4".to_owned());
        record.verdict = Some(Verdict {
            pass: false,
            decided_by: DecidedBy::Checks,
            agent_verdict: Some(AgentVerdict::Pass),
            reason: record.reason.clone().unwrap(),
        });
        record.checks = vec![
            CheckRecord {
                command: "ruff check".to_owned(),
                exit: Some(0),
                duration_ms: 850,
                timed_out: false,
                output_tail: String::new(),
            },
            CheckRecord {
                command: "pytest -q".to_owned(),
                exit: Some(1),
                duration_ms: 245_000,
                timed_out: false,
                output_tail: "2 failed".to_owned(),
            },
        ];
        let patterns = vec!["tests live in tests/".to_owned()];
        insta::assert_snapshot!(render(
            &record,
            &PageExtras {
                branch: "main",
                agent_text: AGENT,
                patterns: &patterns
            }
        ));
    }

    #[test]
    fn a_committed_cycle_names_its_commit_and_how_to_see_it() {
        let mut record = record(Outcome::Committed);
        record.reason = Some("the backtest agent's verdict: pass — fine".to_owned());
        record.commit = Some("0123abcd".to_owned());
        record.verdict = Some(Verdict {
            pass: true,
            decided_by: DecidedBy::Agent,
            agent_verdict: Some(AgentVerdict::Pass),
            reason: record.reason.clone().unwrap(),
        });
        insta::assert_snapshot!(render(
            &record,
            &PageExtras {
                branch: "main",
                agent_text: "All good.",
                patterns: &[]
            }
        ));
    }

    #[test]
    fn a_cycle_that_failed_before_idea_says_so() {
        let mut record = record(Outcome::Failed);
        record.title = None;
        record.diff = None;
        record.output = String::new();
        record.learnings = Vec::new();
        record.phases = vec![phase("scan", "failed")];
        record.reason = Some("scan failed: the API said 500".to_owned());
        record.error = record.reason.clone();
        insta::assert_snapshot!(render(
            &record,
            &PageExtras {
                branch: "main",
                agent_text: "",
                patterns: &[]
            }
        ));
    }
}
