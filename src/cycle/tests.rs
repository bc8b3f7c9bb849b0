//! The cycle's rules (docs/design.md §5, §6 and §14), played through the scripted
//! executor of `cycle/script.rs`: which phases run, how the cycle ends, where
//! it rolls back to, why, and what each prompt sees.

use std::path::PathBuf;

use crate::config::GateSettings;
use crate::gates::{Found, SecretLine, Violation};
use crate::phase::Phase::{self, Backtest, CodeEdit, Idea, Report, Scan};
use crate::state::Outcome;

use super::script::{
    AGENT_COMMIT, Answer, COMMIT, COMPLETE, InFlightNote, Script, Staging, changed_file, check,
    report_passing, verdict,
};
use super::{CycleEnd, Stop, decide};
use crate::record::DecidedBy;

const ALL: &[Phase] = &[Scan, Idea, CodeEdit, Backtest, Report];
const NO_BACKTEST: &[Phase] = &[Scan, Idea, CodeEdit, Report];
const NO_EDIT: &[Phase] = &[Scan, Idea, Report];
const UP_TO_EDIT: &[Phase] = &[Scan, Idea, CodeEdit];
const UP_TO_BACKTEST: &[Phase] = &[Scan, Idea, CodeEdit, Backtest];

/// One rule: a script, and what the cycle must do with it.
struct Rule {
    rule: &'static str,
    script: Script,
    end: CycleEnd,
    /// The phases the agent was started for.
    ran: &'static [Phase],
    /// The snapshot the cycle last rolled back to, if it rolled back.
    rolled_back_to: Option<&'static str>,
    /// A part of the recorded error, if the cycle records one.
    error: Option<&'static str>,
}

#[track_caller]
fn check_rules(rules: Vec<Rule>) {
    for rule in rules {
        let played = rule.script.play();
        let name = rule.rule;
        assert_eq!(played.end, rule.end, "{name}: how the cycle ended");
        assert_eq!(played.ran, rule.ran, "{name}: the phases run");
        assert_eq!(
            played.rolled_back_to(),
            rule.rolled_back_to,
            "{name}: the rollback (git: {:?})",
            played.git
        );
        match (rule.error, played.report.error.as_deref()) {
            (None, None) => {}
            (Some(expected), Some(error)) if error.contains(expected) => {}
            (expected, error) => {
                panic!("{name}: the error is {error:?}, expected one with {expected:?}")
            }
        }
    }
}

fn committed() -> CycleEnd {
    CycleEnd::Ran(Outcome::Committed)
}

fn ran(outcome: Outcome) -> CycleEnd {
    CycleEnd::Ran(outcome)
}

#[test]
fn completion_in_scan_or_idea_skips_the_edit_and_no_changes_skips_the_backtest() {
    check_rules(vec![
        Rule {
            rule: "a verified edit is committed, every phase runs",
            script: Script::default(),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "completion in scan skips code-edit and backtest; report runs",
            script: Script::default().text(Scan, COMPLETE),
            end: CycleEnd::Complete(Outcome::Complete),
            ran: NO_EDIT,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "completion in idea skips code-edit and backtest; report runs",
            script: Script::default()
                .text(Idea, "TITLE: Nothing left\n<promise>COMPLETE</promise>"),
            end: CycleEnd::Complete(Outcome::Complete),
            ran: NO_EDIT,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "completion in code-edit never skips verifying the edit",
            script: Script::default().text(CodeEdit, COMPLETE),
            end: CycleEnd::Complete(Outcome::Committed),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "an edit that changes nothing skips backtest; report runs",
            script: Script::default().repo(|repo| repo.edit.clear()),
            end: ran(Outcome::NoChanges),
            ran: NO_BACKTEST,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "completion with no changes ends complete, recorded no_changes",
            script: Script::default()
                .repo(|repo| repo.edit.clear())
                .text(Report, COMPLETE),
            end: CycleEnd::Complete(Outcome::NoChanges),
            ran: NO_BACKTEST,
            rolled_back_to: None,
            error: None,
        },
    ]);
}

#[test]
fn the_verdict_decides_between_commit_and_rollback() {
    check_rules(vec![
        Rule {
            rule: "the agent's fail rolls back to the start",
            script: Script::default().answer(Backtest, verdict("fail", "the cache is stale")),
            end: ran(Outcome::RolledBack),
            ran: ALL,
            rolled_back_to: Some("start"),
            error: None,
        },
        Rule {
            rule: "a failing check rolls back whatever the agent says",
            script: Script::default().checks(vec![
                check("cargo fmt --check", 0, ""),
                check("cargo test", 101, "1 failed"),
            ]),
            end: ran(Outcome::RolledBack),
            ran: ALL,
            rolled_back_to: Some("start"),
            error: None,
        },
        Rule {
            rule: "passing checks and no verdict block commit",
            script: Script::default()
                .checks(vec![check("cargo test", 0, "ok")])
                .text(Backtest, "Looks fine."),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "no checks and no verdict block roll back",
            script: Script::default().text(Backtest, "Looks fine."),
            end: ran(Outcome::RolledBack),
            ran: ALL,
            rolled_back_to: Some("start"),
            error: None,
        },
        Rule {
            rule: "what the backtest agent wrote is undone before the verdict is applied",
            script: Script::default().repo(|repo| repo.writes_in = vec![Backtest]),
            end: committed(),
            ran: ALL,
            rolled_back_to: Some("checkpoint 1"),
            error: None,
        },
        Rule {
            rule: "with auto_commit = false a pass stays in the tree, recorded committed",
            script: Script::default().auto_commit(false),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
    ]);
}

#[test]
fn the_verdict_rule_says_who_decided_and_why() {
    #[track_caller]
    fn check_verdict(
        backtest: &str,
        checks: &[(&str, i32)],
        configured: bool,
        expected: (bool, DecidedBy, &str),
    ) {
        let checks: Vec<_> = checks
            .iter()
            .map(|(command, exit)| check(command, *exit, ""))
            .collect();
        let verdict = decide(backtest, &checks, configured);
        assert_eq!(
            (verdict.pass, verdict.decided_by, verdict.reason.as_str()),
            expected,
            "backtest {backtest:?}, checks {checks:?}"
        );
    }
    let pass = "```json\n{\"verdict\":\"pass\",\"reason\":\"works\"}\n```";
    let fail = "```json\n{\"verdict\":\"FAIL\",\"reason\":\"breaks the API\"}\n```";
    let none = "I think it is fine.";

    // Failing checks fail the verdict whatever the agent says, and say when
    // they overruled its pass.
    check_verdict(
        pass,
        &[("fmt", 0), ("test", 1), ("lint", 2)],
        true,
        (
            false,
            DecidedBy::Checks,
            "checks failed: test exited 1, lint exited 2 (the backtest agent said pass)",
        ),
    );
    check_verdict(
        none,
        &[("test", 1)],
        true,
        (false, DecidedBy::Checks, "checks failed: test exited 1"),
    );
    // The agent's fail fails the verdict, with checks or without.
    check_verdict(
        fail,
        &[("test", 0)],
        true,
        (
            false,
            DecidedBy::Agent,
            "the backtest agent's verdict: fail — breaks the API",
        ),
    );
    check_verdict(
        fail,
        &[],
        false,
        (
            false,
            DecidedBy::Agent,
            "the backtest agent's verdict: fail — breaks the API",
        ),
    );
    // Without checks the agent's pass is required.
    check_verdict(
        pass,
        &[],
        false,
        (
            true,
            DecidedBy::Agent,
            "the backtest agent's verdict: pass — works",
        ),
    );
    check_verdict(
        none,
        &[],
        false,
        (
            false,
            DecidedBy::Agent,
            "no checks are configured and the backtest agent gave no valid pass (no fenced ```json backtest verdict block at the end of the answer)",
        ),
    );
    // Passing checks and no block: the checks decide.
    check_verdict(
        none,
        &[("test", 0)],
        true,
        (
            true,
            DecidedBy::Checks,
            "the check passed (no valid verdict block from the backtest agent)",
        ),
    );
    check_verdict(
        pass,
        &[("test", 0)],
        true,
        (
            true,
            DecidedBy::Checks,
            "the check passed; the backtest agent's verdict: pass — works",
        ),
    );
}

#[test]
fn completion_is_accepted_only_without_open_stories() {
    check_rules(vec![
        Rule {
            rule: "completion is refused while a story is open",
            script: Script::default().open_stories(&["S1"]).text(Scan, COMPLETE),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "a story the committed cycle's report marks passing counts as closed",
            script: Script::default()
                .open_stories(&["S1"])
                .answer(Report, report_passing("S1", true)),
            end: CycleEnd::Complete(Outcome::Committed),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "a story the report marks passing stays open when the cycle rolled back",
            script: Script::default()
                .open_stories(&["S1"])
                .answer(Backtest, verdict("fail", "no"))
                .answer(Report, report_passing("S1", true)),
            end: ran(Outcome::RolledBack),
            ran: ALL,
            rolled_back_to: Some("start"),
            error: None,
        },
        Rule {
            rule: "another open story still refuses completion",
            script: Script::default()
                .open_stories(&["S1", "S2"])
                .answer(Report, report_passing("S1", true)),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
    ]);
}

#[test]
fn a_failing_phase_fails_the_cycle_and_a_failing_report_keeps_the_verdict() {
    check_rules(vec![
        Rule {
            rule: "a failing scan fails the cycle; nothing to roll back",
            script: Script::default().fail(Scan, "max turns reached"),
            end: ran(Outcome::Failed),
            ran: &[Scan],
            rolled_back_to: None,
            error: Some("scan failed: max turns reached"),
        },
        Rule {
            rule: "a failing idea fails the cycle; nothing to roll back",
            script: Script::default().fail(Idea, "overloaded"),
            end: ran(Outcome::Failed),
            ran: &[Scan, Idea],
            rolled_back_to: None,
            error: Some("idea failed: overloaded"),
        },
        Rule {
            rule: "a failing code-edit saves the attempt and rolls back",
            script: Script::default().fail(CodeEdit, "timed out"),
            end: ran(Outcome::Failed),
            ran: UP_TO_EDIT,
            rolled_back_to: Some("start"),
            error: Some("code-edit failed: timed out"),
        },
        Rule {
            rule: "a failing backtest saves the attempt and rolls back",
            script: Script::default().fail(Backtest, "no result"),
            end: ran(Outcome::Failed),
            ran: UP_TO_BACKTEST,
            rolled_back_to: Some("start"),
            error: Some("backtest failed: no result"),
        },
        Rule {
            rule: "a failing report leaves a committed cycle committed",
            script: Script::default()
                .repo(|repo| repo.writes_in = vec![Report])
                .fail(Report, "overloaded"),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: Some("report failed: overloaded"),
        },
        Rule {
            rule: "a failing report leaves a rolled-back cycle rolled back",
            script: Script::default()
                .repo(|repo| repo.writes_in = vec![Report])
                .answer(Backtest, verdict("fail", "no"))
                .fail(Report, "overloaded"),
            end: ran(Outcome::RolledBack),
            ran: ALL,
            rolled_back_to: Some("start"),
            error: Some("report failed: overloaded"),
        },
    ]);
}

#[test]
fn a_stop_saves_and_rolls_back_what_is_not_committed() {
    let budget = "budget exhausted before backtest: $5.00 of $5.00 spent";
    check_rules(vec![
        Rule {
            rule: "a cancel during code-edit interrupts the cycle and rolls it back",
            script: Script::default().answer(CodeEdit, Answer::Stop(Stop::Cancelled)),
            end: CycleEnd::Interrupted { committed: false },
            ran: UP_TO_EDIT,
            rolled_back_to: Some("start"),
            error: Some("the daemon was stopped"),
        },
        Rule {
            rule: "a cancel while the checks run interrupts the cycle and rolls it back",
            script: Script::default().checks_cancelled(),
            end: CycleEnd::Interrupted { committed: false },
            ran: UP_TO_EDIT,
            rolled_back_to: Some("start"),
            error: Some("the daemon was stopped"),
        },
        Rule {
            rule: "a halt fails the cycle and rolls it back",
            script: Script::default().stop_before(Backtest, Stop::Halt(budget.to_owned())),
            end: CycleEnd::Halted {
                reason: budget.to_owned(),
                committed: false,
            },
            ran: UP_TO_EDIT,
            rolled_back_to: Some("start"),
            error: Some(budget),
        },
        Rule {
            rule: "a cancel during the report keeps the commit",
            script: Script::default()
                .repo(|repo| repo.writes_in = vec![Report])
                .answer(Report, Answer::Stop(Stop::Cancelled)),
            end: CycleEnd::Interrupted { committed: true },
            ran: ALL,
            rolled_back_to: None,
            error: Some("the daemon was stopped"),
        },
        Rule {
            rule: "a cancel during a report that reset the branch puts the branch back to the commit",
            script: Script::default()
                .repo(|repo| repo.trespass_after = Some(Report))
                .answer(Report, Answer::Stop(Stop::Cancelled)),
            end: CycleEnd::Interrupted { committed: true },
            ran: ALL,
            rolled_back_to: Some("checkpoint 2"),
            error: Some("report: the agent deleted branch main"),
        },
        Rule {
            rule: "a halt before the report keeps the commit",
            script: Script::default().stop_before(Report, Stop::Halt(budget.to_owned())),
            end: CycleEnd::Halted {
                reason: budget.to_owned(),
                committed: true,
            },
            ran: UP_TO_BACKTEST,
            rolled_back_to: None,
            error: Some(budget),
        },
    ]);
}

#[test]
fn gates_trespasses_and_hooks_decide_what_is_kept() {
    let secret = Violation::Secrets {
        lines: vec![SecretLine {
            path: PathBuf::from("src/config.rs"),
            line: 3,
            found: Found::WorkTree,
        }],
    };
    check_rules(vec![
        Rule {
            rule: "too many changed files roll back with the gate as reason",
            script: Script::default()
                .gates(GateSettings {
                    max_changed_files: 1,
                    ..GateSettings::default()
                })
                .repo(|repo| {
                    repo.edit = vec![changed_file("a.rs", 1), changed_file("b.rs", 1)];
                }),
            end: ran(Outcome::RolledBack),
            ran: NO_BACKTEST,
            rolled_back_to: Some("start"),
            error: Some("diff gate failed: max_changed_files: 2 files changed, at most 1 allowed"),
        },
        Rule {
            rule: "a protected path rolls back with the gate as reason",
            script: Script::default().repo(|repo| {
                repo.edit = vec![changed_file(".github/workflows/ci.yml", 2)];
            }),
            end: ran(Outcome::RolledBack),
            ran: NO_BACKTEST,
            rolled_back_to: Some("start"),
            error: Some(
                "diff gate failed: protected_paths: the agent changed .github/workflows/ci.yml",
            ),
        },
        Rule {
            rule: "a secret rolls back with the gate as reason",
            script: Script::default().repo(|repo| repo.secret = Some(secret.clone())),
            end: ran(Outcome::RolledBack),
            ran: NO_BACKTEST,
            rolled_back_to: Some("start"),
            error: Some("diff gate failed: secret_scan: a credential was added at src/config.rs:3"),
        },
        Rule {
            rule: "a trespass in code-edit fails the cycle with its reason",
            script: Script::default().repo(|repo| repo.trespass_after = Some(CodeEdit)),
            end: ran(Outcome::Failed),
            ran: UP_TO_EDIT,
            rolled_back_to: Some("start"),
            error: Some("code-edit: the agent deleted branch main"),
        },
        Rule {
            rule: "a trespass in scan fails the cycle with its reason",
            script: Script::default().repo(|repo| repo.trespass_after = Some(Scan)),
            end: ran(Outcome::Failed),
            ran: &[Scan],
            rolled_back_to: Some("start"),
            error: Some("scan: the agent deleted branch main"),
        },
        Rule {
            rule: "a trespass in the report of a committed cycle goes back to the verified state and keeps the commit",
            script: Script::default().repo(|repo| repo.trespass_after = Some(Report)),
            end: committed(),
            ran: ALL,
            rolled_back_to: Some("checkpoint 2"),
            error: Some("report: the agent deleted branch main"),
        },
        Rule {
            rule: "a repository that cannot be checked is not trusted",
            script: Script::default().repo(|repo| repo.trespass_check_fails = true),
            end: ran(Outcome::Failed),
            ran: &[Scan],
            rolled_back_to: None,
            error: Some("cannot check the repository after scan: git check the branch"),
        },
        Rule {
            rule: "a failing pre-commit hook rolls back with its output as reason",
            script: Script::default().pre_commit(check(
                "pre-commit",
                1,
                "lint: trailing whitespace\n",
            )),
            end: ran(Outcome::RolledBack),
            ran: ALL,
            rolled_back_to: Some("start"),
            error: Some(
                "the pre-commit hook refused the commit (exit 1): lint: trailing whitespace",
            ),
        },
        Rule {
            rule: "a passing pre-commit hook lets the commit through",
            script: Script::default().pre_commit(check("pre-commit", 0, "")),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "a commit git refuses fails the cycle and rolls back; report still runs",
            script: Script::default().repo(|repo| repo.commit_fails = true),
            end: ran(Outcome::Failed),
            ran: ALL,
            rolled_back_to: Some("start"),
            error: Some("commit failed: git commit in /work/repo: scripted failure"),
        },
        Rule {
            rule: "a staging that fails fails the cycle and rolls back",
            script: Script::default().repo(|repo| repo.staging = Staging::Fails),
            end: ran(Outcome::Failed),
            ran: ALL,
            rolled_back_to: Some("start"),
            error: Some("commit failed: git stage the commit"),
        },
        Rule {
            rule: "staging that finds nothing to commit is no change; nothing is rolled back",
            script: Script::default().repo(|repo| repo.staging = Staging::Nothing),
            end: ran(Outcome::NoChanges),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "what the agent committed itself is the cycle's commit",
            script: Script::default().repo(|repo| repo.staging = Staging::AgentCommitted),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
    ]);
}

#[test]
fn a_cycle_that_cannot_start_runs_no_phase() {
    check_rules(vec![
        Rule {
            rule: "changes ralphd did not start with fail the cycle before it starts",
            script: Script::default().repo(|repo| repo.stray = vec!["notes.txt".to_owned()]),
            end: ran(Outcome::Failed),
            ran: &[],
            rolled_back_to: None,
            error: Some("uncommitted changes that ralphd did not start with (notes.txt)"),
        },
        Rule {
            rule: "with auto_commit = false changes in the tree are expected",
            script: Script::default()
                .auto_commit(false)
                .repo(|repo| repo.stray = vec!["notes.txt".to_owned()]),
            end: committed(),
            ran: ALL,
            rolled_back_to: None,
            error: None,
        },
        Rule {
            rule: "a start that cannot be snapshotted fails the cycle",
            script: Script::default().repo(|repo| repo.begin_cycle_fails = true),
            end: ran(Outcome::Failed),
            ran: &[],
            rolled_back_to: None,
            error: Some("git begin the cycle in /work/repo: scripted failure"),
        },
        Rule {
            rule: "invalid protected paths fail the cycle",
            script: Script::default().gates(GateSettings {
                protected_paths: vec!["src/[".to_owned()],
                ..GateSettings::default()
            }),
            end: ran(Outcome::Failed),
            ran: &[],
            rolled_back_to: None,
            error: Some("invalid gates.protected_paths"),
        },
    ]);
}

#[test]
fn each_prompt_sees_the_earlier_outputs() {
    let played = Script::default()
        .checks(vec![check("cargo test", 0, "test result: ok")])
        .play();
    assert_eq!(played.context(Idea).scan, "The parser is slow.");
    assert_eq!(
        played.context(CodeEdit).idea,
        "TITLE: Cache the parsed config"
    );
    let backtest = played.context(Backtest);
    assert_eq!(backtest.code_edit, "Added a cache.");
    assert!(backtest.diff_summary.contains("src/config.rs"));
    assert_eq!(backtest.checks.len(), 1);
    assert_eq!(backtest.checks[0].output_tail, "test result: ok");
    let report = played.context(Report);
    assert_eq!(
        report.verdict,
        "pass: the check passed; the backtest agent's verdict: pass — the cache works"
    );
    assert!(report.backtest.contains("\"verdict\":\"pass\""));
    assert_eq!(
        played.report.title.as_deref(),
        Some("Cache the parsed config")
    );
    assert!(
        played
            .git
            .contains(&"commit \"ralphd: cycle 7: Cache the parsed config\"".to_owned()),
        "{:?}",
        played.git
    );
    assert_eq!(played.report.summary, "cached the config");
    assert_eq!(played.report.learnings, ["caches help"]);
}

#[test]
fn a_diff_that_breaks_a_gate_is_never_shown_nor_pinned_and_its_secret_is_masked() {
    let played = Script::default()
        .repo(|repo| {
            repo.secret = Some(Violation::Secrets {
                lines: vec![SecretLine {
                    path: PathBuf::from("src/config.rs"),
                    line: 3,
                    found: Found::WorkTree,
                }],
            });
        })
        .play();
    assert_eq!(
        played.git,
        [
            "save since start masking src/config.rs:[3]",
            "rollback to start"
        ],
        "no diff summary, no checkpoint, and the attempt is masked"
    );
    assert!(
        played
            .context(Report)
            .verdict
            .starts_with("fail: diff gate failed: secret_scan")
    );
    assert_eq!(
        played.report.attempt_ref.as_deref(),
        Some("refs/ralph/attempts/7")
    );
}

#[test]
fn a_refusing_hook_is_the_verdict_the_report_sees() {
    let played = Script::default()
        .pre_commit(check("pre-commit", 1, "lint: trailing whitespace"))
        .play();
    assert_eq!(
        played.context(Report).verdict,
        "fail: the pre-commit hook refused the commit (exit 1): lint: trailing whitespace"
    );
    assert!(
        played.git.contains(&"discard the hooks' index".to_owned()),
        "{:?}",
        played.git
    );
    assert_eq!(played.report.commit, None);
}

#[test]
fn a_hook_run_the_daemon_stopped_leaves_no_index_file_of_ralphd_behind() {
    let played = Script::default().pre_commit_cancelled().play();
    assert_eq!(played.end, CycleEnd::Interrupted { committed: false });
    assert!(
        played.git.contains(&"discard the hooks' index".to_owned()),
        "{:?}",
        played.git
    );
    assert_eq!(played.rolled_back_to(), Some("start"));
}

#[test]
fn the_in_flight_notes_drop_the_rollback_point_once_the_commit_is_made() {
    let played = Script::default().play();
    let start = InFlightNote {
        rollback_point: Some("start".to_owned()),
        commit: None,
        committing: None,
        attempt_ref: None,
    };
    let committing = InFlightNote {
        committing: Some("staged tree".to_owned()),
        ..start.clone()
    };
    let committed = InFlightNote {
        rollback_point: None,
        commit: Some(COMMIT.to_owned()),
        ..committing.clone()
    };
    // At the start, after scan, idea and code-edit; right before the
    // commit; after backtest and report.
    assert_eq!(
        played.in_flight,
        [
            start.clone(),
            start.clone(),
            start.clone(),
            start,
            committing,
            committed.clone(),
            committed
        ]
    );

    let played = Script::default()
        .repo(|repo| repo.staging = Staging::AgentCommitted)
        .play();
    assert_eq!(played.report.commit.as_deref(), Some(AGENT_COMMIT));
    assert_eq!(played.in_flight.last().unwrap().rollback_point, None);
}

#[test]
fn a_saved_attempt_is_noted_before_the_rollback_and_kept_over_a_later_trespass() {
    let played = Script::default()
        .answer(Backtest, verdict("fail", "no"))
        .repo(|repo| repo.trespass_after = Some(Report))
        .play();
    // The verdict's attempt holds the edit: it stays the cycle's attempt;
    // what the report's agent did is saved too, and named in the reason.
    assert_eq!(
        played.report.attempt_ref.as_deref(),
        Some("refs/ralph/attempts/7")
    );
    assert_eq!(
        played.report.error.as_deref(),
        Some("report: the agent deleted branch main (saved as refs/ralph/attempts/7-2)")
    );
    assert_eq!(played.end, ran(Outcome::Failed));
    let noted = InFlightNote {
        rollback_point: Some("start".to_owned()),
        commit: None,
        committing: None,
        attempt_ref: Some("refs/ralph/attempts/7".to_owned()),
    };
    assert!(played.in_flight.contains(&noted), "{:?}", played.in_flight);
}

#[test]
fn every_phase_run_is_recorded_with_its_cost_failed_ones_too() {
    let played = Script::default()
        .cost(Scan, 0.5)
        .cost(CodeEdit, 1.0)
        .fail(CodeEdit, "max turns reached")
        .play();
    assert!((played.report.cost_usd - 1.75).abs() < 1e-9);
    let statuses: Vec<(&str, &str)> = played
        .report
        .phases
        .iter()
        .map(|record| (record.phase.as_str(), record.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [("scan", "ok"), ("idea", "ok"), ("code-edit", "failed")]
    );
    assert_eq!(played.report.phases_completed, ["scan", "idea"]);
}

#[test]
fn the_recorded_outcome_of_each_end() {
    let halt = |committed| CycleEnd::Halted {
        reason: "budget".to_owned(),
        committed,
    };
    for (end, outcome) in [
        (ran(Outcome::RolledBack), Outcome::RolledBack),
        (CycleEnd::Complete(Outcome::Complete), Outcome::Complete),
        (CycleEnd::Complete(Outcome::Committed), Outcome::Committed),
        (
            CycleEnd::Interrupted { committed: false },
            Outcome::Interrupted,
        ),
        (
            CycleEnd::Interrupted { committed: true },
            Outcome::Committed,
        ),
        (halt(false), Outcome::Failed),
        (halt(true), Outcome::Committed),
    ] {
        assert_eq!(end.outcome(), outcome, "{end:?}");
    }
}

#[test]
fn a_phase_run_is_recorded_as_ok_or_as_failed_with_its_message() {
    use crate::agent::classify::PhaseFailure;
    use crate::agent::{PhaseOutcome, PhaseRun};
    let run = |outcome| PhaseRun {
        outcome,
        session_id: None,
        cost_usd: 0.0,
        tokens: Default::default(),
        turns: 0,
        permission_denials: Vec::new(),
        duration: std::time::Duration::ZERO,
        attempts: 1,
        cancelled: false,
    };
    for (outcome, status, error) in [
        (
            PhaseOutcome::Succeeded {
                result_text: "scanned".to_owned(),
            },
            "ok",
            None,
        ),
        (
            PhaseOutcome::failed(PhaseFailure::MaxTurns { turns: Some(30) }),
            "failed",
            Some("the agent hit the turn limit (max_turns) after 30 turns"),
        ),
        (
            PhaseOutcome::could_not_run("cannot run the agent command `claude`".to_owned()),
            "failed",
            Some("cannot run the agent command `claude`"),
        ),
    ] {
        let record = serde_json::to_value(super::phase_record(Scan, &run(outcome))).unwrap();
        assert_eq!(record["status"], status, "{record}");
        assert_eq!(
            record.get("error").and_then(|e| e.as_str()),
            error,
            "{record}"
        );
    }
}
