//! The cycle's record in progress.json: how a finished cycle's
//! report, or the in-flight note of a cycle a dead daemon left, becomes a
//! `CycleRecord` (one conversion per source), and the redaction of the agent
//! text it carries.

use std::time::Duration;

use crate::cycle::{self, CycleReport};
use crate::state::{CycleRecord, InFlight, Outcome, Progress, VERSION};

use super::now_rfc3339;
use super::recovery::Recovered;

impl CycleRecord {
    /// The record of a cycle that ran to its end in this daemon: `started_at`
    /// and `duration` are the cycle's, `now` is when it is recorded.
    pub(super) fn from_report(
        cycle: u64,
        started_at: String,
        duration: Duration,
        outcome: Outcome,
        report: &CycleReport,
        now: jiff::Timestamp,
    ) -> CycleRecord {
        CycleRecord {
            cycle,
            cycle_id: cycle_id(cycle, now),
            started_at,
            ended_at: rounded(now),
            duration_seconds: cycle::seconds(duration),
            phases_completed: report.phases_completed.clone(),
            phases: report.phases.clone(),
            outcome,
            commit: report.commit.clone(),
            attempt_ref: report.attempt_ref.clone(),
            success: matches!(outcome, Outcome::Committed | Outcome::Complete),
            cost_usd: report.cost_usd,
            output: report.summary.clone(),
            learnings: report.learnings.clone(),
            title: report.title.clone(),
            error: report.error.clone(),
            reason: report.reason.clone(),
            verdict: report.verdict.clone(),
            checks: report
                .checks
                .iter()
                .map(crate::record::CheckRecord::from_result)
                .collect(),
            diff: report.diff,
        }
    }

    /// The record of a cycle that was running when the previous daemon died,
    /// as far as it got: `committed` with its commit (its own note, or HEAD
    /// kept by [`super::recovery::recover_repo`]) when the work was
    /// committed, else `interrupted` with the attempt it saved (else the one
    /// the recovery saved). Its duration is that of its phase runs.
    pub(super) fn from_in_flight(
        in_flight: InFlight,
        recovered: Recovered,
        now: jiff::Timestamp,
    ) -> CycleRecord {
        let cycle = in_flight.cycle;
        let commit = in_flight.commit.or(recovered.kept_commit);
        let attempt_ref = in_flight
            .attempt_ref
            .or(recovered.unnoted_attempt)
            .or(recovered.attempt_ref);
        let committed = commit.is_some();
        let output = if !in_flight.summary.is_empty() {
            in_flight.summary
        } else if committed {
            "the daemon stopped after this cycle's commit, before its record was written (crash, kill -9, power loss or a full disk)".to_owned()
        } else {
            "the daemon stopped during this cycle (crash, kill -9, power loss or a full disk)"
                .to_owned()
        };
        let error = (!committed).then(|| match &in_flight.error {
            Some(error) => {
                format!("interrupted by the death of the previous daemon, after: {error}")
            }
            None => "interrupted by the death of the previous daemon".to_owned(),
        });
        let phases_ms: u64 = in_flight.phases.iter().map(|phase| phase.duration_ms).sum();
        CycleRecord {
            cycle,
            cycle_id: cycle_id(cycle, now),
            started_at: in_flight.started_at,
            ended_at: rounded(now),
            duration_seconds: cycle::seconds(Duration::from_millis(phases_ms)),
            phases_completed: in_flight.phases_completed,
            phases: in_flight.phases,
            outcome: if committed {
                Outcome::Committed
            } else {
                Outcome::Interrupted
            },
            commit,
            attempt_ref,
            success: committed,
            cost_usd: in_flight.cost_usd,
            output,
            learnings: in_flight.learnings,
            title: in_flight.title,
            reason: error.clone().or_else(|| {
                Some("committed; the daemon stopped before recording the cycle".to_owned())
            }),
            error,
            verdict: None,
            checks: Vec::new(),
            diff: None,
        }
    }
}

/// `now` to the second, as every time in the state files.
fn rounded(now: jiff::Timestamp) -> String {
    now.round(jiff::Unit::Second).unwrap_or(now).to_string()
}

pub(super) fn fresh_progress(branch: &str) -> Progress {
    Progress {
        version: VERSION,
        branch: branch.to_owned(),
        start_time: now_rfc3339(),
        ..Progress::default()
    }
}

/// A cycle's id in progress.json: its number and when it was recorded.
fn cycle_id(cycle: u64, now: jiff::Timestamp) -> String {
    format!("cycle_{cycle}_{}", now.as_second())
}

pub(super) fn recent_learnings(progress: &Progress, limit: usize) -> Vec<String> {
    let all: Vec<String> = progress
        .cycles
        .iter()
        .flat_map(|record| record.learnings.iter().cloned())
        .collect();
    all[all.len().saturating_sub(limit)..].to_vec()
}

/// Agent text reaches progress.json, report.md, status.json and the
/// breaker's reasons through the report: it is redacted once, here, as the
/// logs are (and in `save_in_flight` for in-flight.json).
pub(super) fn redact_report(report: &mut CycleReport) {
    redact_text(&mut report.summary);
    report.learnings.iter_mut().for_each(redact_text);
    report.patterns.iter_mut().for_each(redact_text);
    report
        .outputs
        .iter_mut()
        .for_each(|(_, text)| redact_text(text));
    report.title.iter_mut().for_each(redact_text);
    report.error.iter_mut().for_each(redact_text);
    report.reason.iter_mut().for_each(redact_text);
    if let Some(verdict) = report.verdict.as_mut() {
        redact_text(&mut verdict.reason);
    }
    for check in &mut report.checks {
        redact_text(&mut check.output_tail);
        redact_text(&mut check.output);
    }
    redact_phases(&mut report.phases);
}

/// The failure texts and permission denials of phase records.
pub(super) fn redact_phases(phases: &mut [crate::state::PhaseRecord]) {
    for phase in phases {
        phase.error.iter_mut().for_each(redact_text);
        phase.permission_denials.iter_mut().for_each(redact_text);
    }
}

pub(super) fn redact_text(text: &mut String) {
    if let std::borrow::Cow::Owned(clean) = crate::redact::redact(text) {
        *text = clean;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::cycle::CycleReport;
    use crate::daemon::recovery::Recovered;
    use crate::state::{CycleRecord, InFlight, Outcome, PhaseRecord};

    /// 2026-01-01T00:00:00.600Z: recorded times are rounded to the second.
    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(1_767_225_600_600).unwrap()
    }

    fn phase(name: &str, duration_ms: u64) -> PhaseRecord {
        PhaseRecord {
            phase: name.to_owned(),
            status: "ok".to_owned(),
            duration_ms,
            cost_usd: 0.5,
            tokens: Default::default(),
            session_id: None,
            turns: 1,
            attempts: 1,
            permission_denials: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn a_finished_cycle_is_recorded_with_what_its_report_says() {
        let report = CycleReport {
            phases: vec![phase("scan", 1_000), phase("idea", 2_000)],
            phases_completed: vec!["scan".to_owned(), "idea".to_owned()],
            title: Some("faster parser".to_owned()),
            commit: Some("abc123".to_owned()),
            cost_usd: 1.25,
            summary: "made the parser faster".to_owned(),
            learnings: vec!["the cache helps".to_owned()],
            error: None,
            ..CycleReport::default()
        };
        let record = CycleRecord::from_report(
            7,
            "2026-01-01T00:00:00Z".to_owned(),
            Duration::from_millis(2_500),
            Outcome::Committed,
            &report,
            now(),
        );
        assert_eq!(record.cycle, 7);
        assert_eq!(record.cycle_id, "cycle_7_1767225600");
        assert_eq!(record.ended_at, "2026-01-01T00:00:01Z");
        assert_eq!(record.duration_seconds, 2.5);
        assert_eq!(record.phases, report.phases);
        assert_eq!(record.phases_completed, ["scan", "idea"]);
        assert_eq!(record.outcome, Outcome::Committed);
        assert!(record.success);
        assert_eq!(record.commit.as_deref(), Some("abc123"));
        assert_eq!(record.cost_usd, 1.25);
        assert_eq!(record.output, "made the parser faster");
        assert_eq!(record.learnings, ["the cache helps"]);
        assert_eq!(record.title.as_deref(), Some("faster parser"));

        // (outcome, counts as a success)
        for (outcome, success) in [
            (Outcome::Complete, true),
            (Outcome::RolledBack, false),
            (Outcome::NoChanges, false),
            (Outcome::Failed, false),
            (Outcome::Interrupted, false),
        ] {
            let record = CycleRecord::from_report(
                1,
                String::new(),
                Duration::ZERO,
                outcome,
                &CycleReport {
                    error: Some("the backtest failed".to_owned()),
                    attempt_ref: Some("refs/ralph/attempts/1".to_owned()),
                    ..CycleReport::default()
                },
                now(),
            );
            assert_eq!((record.outcome, record.success), (outcome, success));
            assert_eq!(record.error.as_deref(), Some("the backtest failed"));
            assert_eq!(record.attempt_ref.as_deref(), Some("refs/ralph/attempts/1"));
        }
    }

    fn in_flight() -> InFlight {
        InFlight {
            cycle: 4,
            started_at: "2026-01-01T00:00:00Z".to_owned(),
            phases: vec![phase("scan", 1_000), phase("idea", 500)],
            phases_completed: vec!["scan".to_owned()],
            cost_usd: 0.75,
            title: Some("an idea".to_owned()),
            learnings: vec!["learnt".to_owned()],
            ..InFlight::default()
        }
    }

    #[test]
    fn a_cycle_a_dead_daemon_left_is_committed_only_with_a_commit_else_interrupted() {
        struct Case {
            what: &'static str,
            in_flight: InFlight,
            recovered: Recovered,
            outcome: Outcome,
            commit: Option<&'static str>,
            attempt_ref: Option<&'static str>,
            output: &'static str,
            error: Option<&'static str>,
        }
        let cases = [
            Case {
                what: "died during a phase, nothing saved",
                in_flight: in_flight(),
                recovered: Recovered::default(),
                outcome: Outcome::Interrupted,
                commit: None,
                attempt_ref: None,
                output: "the daemon stopped during this cycle (crash, kill -9, power loss or a full disk)",
                error: Some("interrupted by the death of the previous daemon"),
            },
            Case {
                what: "the recovery saved the tree",
                in_flight: InFlight {
                    error: Some("the backtest failed".to_owned()),
                    summary: "what the report said".to_owned(),
                    ..in_flight()
                },
                recovered: Recovered {
                    kept_commit: None,
                    attempt_ref: Some("refs/ralph/attempts/4-b".to_owned()),
                    ..Recovered::default()
                },
                outcome: Outcome::Interrupted,
                commit: None,
                attempt_ref: Some("refs/ralph/attempts/4-b"),
                output: "what the report said",
                error: Some(
                    "interrupted by the death of the previous daemon, after: the backtest failed",
                ),
            },
            Case {
                what: "the cycle's own attempt wins over the recovery's",
                in_flight: InFlight {
                    attempt_ref: Some("refs/ralph/attempts/4".to_owned()),
                    ..in_flight()
                },
                recovered: Recovered {
                    kept_commit: None,
                    attempt_ref: Some("refs/ralph/attempts/4-b".to_owned()),
                    ..Recovered::default()
                },
                outcome: Outcome::Interrupted,
                commit: None,
                attempt_ref: Some("refs/ralph/attempts/4"),
                output: "the daemon stopped during this cycle (crash, kill -9, power loss or a full disk)",
                error: Some("interrupted by the death of the previous daemon"),
            },
            Case {
                what: "its note says it committed",
                in_flight: InFlight {
                    commit: Some("abc123".to_owned()),
                    error: Some("ignored once committed".to_owned()),
                    ..in_flight()
                },
                recovered: Recovered::default(),
                outcome: Outcome::Committed,
                commit: Some("abc123"),
                attempt_ref: None,
                output: "the daemon stopped after this cycle's commit, before its record was written (crash, kill -9, power loss or a full disk)",
                error: None,
            },
            Case {
                what: "HEAD is its commit, the note did not say so yet",
                in_flight: in_flight(),
                recovered: Recovered {
                    kept_commit: Some("def456".to_owned()),
                    ..Recovered::default()
                },
                outcome: Outcome::Committed,
                commit: Some("def456"),
                attempt_ref: None,
                output: "the daemon stopped after this cycle's commit, before its record was written (crash, kill -9, power loss or a full disk)",
                error: None,
            },
        ];
        for case in cases {
            let record = CycleRecord::from_in_flight(case.in_flight, case.recovered, now());
            let what = case.what;
            assert_eq!(record.outcome, case.outcome, "{what}");
            assert_eq!(record.success, case.outcome == Outcome::Committed, "{what}");
            assert_eq!(record.commit.as_deref(), case.commit, "{what}");
            assert_eq!(record.attempt_ref.as_deref(), case.attempt_ref, "{what}");
            assert_eq!(record.output, case.output, "{what}");
            assert_eq!(record.error.as_deref(), case.error, "{what}");
            // What the note kept is recorded as it was.
            assert_eq!(record.cycle, 4, "{what}");
            assert_eq!(record.cycle_id, "cycle_4_1767225600", "{what}");
            assert_eq!(record.started_at, "2026-01-01T00:00:00Z", "{what}");
            assert_eq!(record.ended_at, "2026-01-01T00:00:01Z", "{what}");
            assert_eq!(record.duration_seconds, 1.5, "{what}");
            assert_eq!(record.phases.len(), 2, "{what}");
            assert_eq!(record.phases_completed, ["scan"], "{what}");
            assert_eq!(record.cost_usd, 0.75, "{what}");
            assert_eq!(record.title.as_deref(), Some("an idea"), "{what}");
            assert_eq!(record.learnings, ["learnt"], "{what}");
        }
    }
}
