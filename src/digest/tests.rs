//! The digest of a recorded night (fixed dates, no clock): the Markdown page
//! as a snapshot, the JSON fields scripts read, the ranges, and what is said
//! when something is not known.

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::*;
use crate::record::{AgentVerdict, CheckRecord, DecidedBy, Verdict};
use crate::state::{PhaseRecord, StatusFile};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn record(cycle: u64, started_at: &str, seconds: i64, outcome: Outcome) -> CycleRecord {
    let ended_at = at(started_at)
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap()
        .to_string();
    CycleRecord {
        started_at: started_at.to_owned(),
        ended_at,
        duration_seconds: seconds as f64,
        phases: vec![PhaseRecord {
            phase: "scan".to_owned(),
            status: "ok".to_owned(),
            duration_ms: 1000,
            cost_usd: 0.1,
            session_id: None,
            turns: 1,
            attempts: 1,
            permission_denials: Vec::new(),
            error: None,
            tokens: Default::default(),
        }],
        cost_usd: 0.25,
        ..CycleRecord::for_test(cycle, outcome)
    }
}

fn verdict(decided_by: DecidedBy, agent: Option<AgentVerdict>, reason: &str) -> Verdict {
    Verdict {
        pass: false,
        decided_by,
        agent_verdict: agent,
        reason: reason.to_owned(),
    }
}

fn diff(files: usize, insertions: usize, deletions: usize) -> DiffStat {
    DiffStat {
        files_changed: files,
        insertions,
        deletions,
        agent_commits: 0,
    }
}

/// A night: an earlier run's cycle 1, then a run from 22:00 to 23:45:30
/// with two commits, three attempts (the agent's fail, failed checks, a
/// gate), a failed scan, a limiter wait, a usage-limit wait inside cycle 4,
/// a breaker wait, and a halt (exit 3).
fn night() -> Sources {
    let mut earlier = record(1, "2026-03-09T21:00:00Z", 600, Outcome::Committed);
    earlier.commit = Some("ffff0000aaaa".to_owned());
    earlier.title = Some("An earlier run's change".to_owned());

    let mut c2 = record(2, "2026-03-10T22:00:10Z", 720, Outcome::Committed);
    c2.title = Some("Speed up the parser".to_owned());
    c2.commit = Some("0123abcd4567ef890123abcd4567ef8901234567".to_owned());
    c2.diff = Some(diff(2, 10, 3));
    c2.learnings = vec!["the parser is hot".to_owned()];
    c2.reason = Some("the backtest agent's verdict: pass — faster and green".to_owned());

    let mut c3 = record(3, "2026-03-10T22:20:00Z", 900, Outcome::RolledBack);
    c3.title = Some("Inline the tokenizer".to_owned());
    c3.attempt_ref = Some("refs/ralph/attempts/3".to_owned());
    c3.diff = Some(diff(1, 40, 12));
    c3.reason = Some("the backtest agent's verdict: fail — breaks the public API".to_owned());
    c3.verdict = Some(verdict(
        DecidedBy::Agent,
        Some(AgentVerdict::Fail),
        "breaks the public API",
    ));

    let mut c4 = record(4, "2026-03-10T22:35:05Z", 1800, Outcome::RolledBack);
    c4.title = Some("Cache the lexer".to_owned());
    c4.attempt_ref = Some("refs/ralph/attempts/4".to_owned());
    c4.diff = Some(diff(3, 25, 2));
    c4.reason = Some("checks failed: pytest -q exited 1 (the backtest agent said pass)".to_owned());
    c4.verdict = Some(verdict(
        DecidedBy::Checks,
        Some(AgentVerdict::Pass),
        "pytest -q exited 1",
    ));
    c4.checks = vec![CheckRecord {
        command: "pytest -q".to_owned(),
        exit: Some(1),
        duration_ms: 245_000,
        timed_out: false,
        output_tail: "2 failed".to_owned(),
    }];

    let mut c5 = record(5, "2026-03-10T23:05:10Z", 300, Outcome::RolledBack);
    c5.title = Some("Run the tests on every push".to_owned());
    c5.attempt_ref = Some("refs/ralph/attempts/5".to_owned());
    c5.diff = Some(diff(1, 8, 0));
    c5.reason = Some("gate protected_paths: .github/workflows/ci.yml".to_owned());
    c5.verdict = Some(verdict(DecidedBy::Gate, None, "protected path"));

    let mut c6 = record(6, "2026-03-10T23:10:15Z", 60, Outcome::Failed);
    c6.reason = Some("scan failed: the API said 500 (3 tries)".to_owned());
    c6.error = c6.reason.clone();
    c6.cost_usd = 0.0;

    let mut c7 = record(7, "2026-03-10T23:11:20Z", 1080, Outcome::Committed);
    c7.title = Some("Cache compiled regexes".to_owned());
    c7.commit = Some("89ab4567cdef0123".to_owned());
    c7.diff = Some(diff(1, 6, 1));
    c7.learnings = vec![
        "the parser is hot".to_owned(),
        "compiling regexes dominated start-up".to_owned(),
    ];

    let events = [
        r#"{"id":1,"at":"2026-03-09T20:59:59Z","type":"daemon_started","pid":1}"#,
        r#"{"id":2,"at":"2026-03-09T21:10:05Z","type":"daemon_stopped","exit_code":1,"reason":"reached --max-iterations"}"#,
        r#"{"id":3,"at":"2026-03-10T22:00:00.120Z","type":"daemon_started","pid":2}"#,
        r#"{"id":4,"at":"2026-03-10T22:00:10Z","type":"cycle_started","cycle":2}"#,
        r#"{"id":5,"at":"2026-03-10T22:12:10Z","type":"waiting","reason":"limiter","detail":"throttled (5 per hour)","until":"2026-03-10T22:20:00Z"}"#,
        r#"{"id":6,"at":"2026-03-10T22:20:00Z","type":"cycle_started","cycle":3}"#,
        r#"{"id":7,"at":"2026-03-10T22:40:00Z","type":"waiting","reason":"usage_limit","detail":"5-hour limit","until":"2026-03-10T23:00:00Z"}"#,
        "not an event",
        r#"{"id":8,"at":"2026-03-10T23:00:00Z","type":"phase_started","cycle":4,"phase":"code-edit","attempt":2}"#,
        r#"{"id":9,"at":"2026-03-10T23:30:00Z","type":"waiting","reason":"breaker","detail":"open","until":"2026-03-10T23:45:00Z"}"#,
        r#"{"id":10,"at":"2026-03-10T23:45:30Z","type":"daemon_stopped","exit_code":3,"reason":"halted by a guard (budget or circuit breaker)"}"#,
    ];
    Sources {
        progress: Some(Progress {
            version: 1,
            branch: "main".to_owned(),
            start_time: "2026-03-09T21:00:00Z".to_owned(),
            cycles: vec![earlier, c2, c3, c4, c5, c6, c7],
            patterns: Vec::new(),
            total_cost_usd: 0.0,
        }),
        tokens: BTreeMap::new(),
        status: Some(StatusFile {
            version: 1,
            started_at: "2026-03-10T22:00:00Z".to_owned(),
            heartbeat_at: "2026-03-10T23:45:30Z".to_owned(),
            state: DaemonState::Stopped,
            exit: Some("halted by a guard (budget or circuit breaker) (exit 3)".to_owned()),
            ..StatusFile::default()
        }),
        events: Some(
            events
                .iter()
                .filter_map(|line| LoggedEvent::parse(line))
                .collect(),
        ),
        running: false,
        stop: None,
        run_start: None,
    }
}

const MORNING: &str = "2026-03-11T07:00:00Z";

#[test]
fn the_morning_page_of_a_night_with_commits_attempts_waits_and_a_halt() {
    let digest = build(&night(), Span::LastRun, at(MORNING));
    insta::assert_snapshot!(render(&digest, &TimeZone::UTC));
}

#[test]
fn the_last_run_adds_up_its_time_waits_cycles_and_cost() {
    let digest = build(&night(), Span::LastRun, at(MORNING));
    assert_eq!(digest.range.first_cycle, Some(2));
    assert_eq!(digest.range.last_cycle, Some(7));
    assert_eq!(digest.run.exit_code, Some(3));
    assert_eq!(
        digest.run.stopped_at.as_deref(),
        Some("2026-03-10T23:45:30Z")
    );
    // 22:00:00 → 23:45:30.
    assert_eq!(digest.time.span_seconds, 6330);
    let waits = digest.time.waiting_by_reason.clone().unwrap();
    assert_eq!(waits["limiter"], 470);
    assert_eq!(waits["usage_limit"], 1200);
    assert_eq!(waits["breaker"], 900);
    assert_eq!(digest.time.waiting_seconds, Some(2570));
    // Cycle 4's 30 minutes held 20 of waiting on the usage limit.
    assert_eq!(
        digest.time.working_seconds,
        720 + 900 + 600 + 300 + 60 + 1080
    );
    assert_eq!(digest.cycles.total, 6);
    assert_eq!(digest.cycles.by_outcome["rolled_back"], 3);
    assert_eq!(digest.cost.usd, 1.25);
    // A sum of floats is printed as people write it.
    let mut sources = night();
    for record in &mut sources.progress.as_mut().unwrap().cycles {
        record.cost_usd = 0.01;
    }
    let json = serde_json::to_string(&build(&sources, Span::LastRun, at(MORNING))).unwrap();
    assert!(json.contains(r#""usd":0.06"#), "{json}");
    assert_eq!(digest.attempts[2].decided_by.as_deref(), Some("gate"));
    assert_eq!(digest.failures.len(), 1);
}

#[test]
fn the_event_log_says_which_cycles_are_the_last_runs_even_within_one_second() {
    let mut sources = night();
    // The earlier run's cycle 1 ended and the last run started in one second.
    let progress = sources.progress.as_mut().unwrap();
    progress.cycles[0].started_at = "2026-03-10T22:00:00Z".to_owned();
    let digest = build(&sources, Span::LastRun, at(MORNING));
    assert_eq!(digest.range.first_cycle, Some(2));
    // A log that missed the last run's start (a failed write) is not
    // trusted for it: the start times decide.
    let mut stale = sources.clone();
    stale.status.as_mut().unwrap().started_at = "2026-03-10T23:05:10Z".to_owned();
    let digest = build(&stale, Span::LastRun, at(MORNING));
    assert_eq!(digest.range.first_cycle, Some(5));
    // Without the log, the start times decide: same second, same run.
    sources.events = None;
    let digest = build(&sources, Span::LastRun, at(MORNING));
    assert_eq!(digest.range.first_cycle, Some(1));
}

#[test]
fn the_json_fields_scripts_read_keep_their_names_and_types() {
    let mut sources = night();
    sources.tokens.insert(
        2,
        Tokens {
            input: 1200,
            output: 340,
        },
    );
    let json = serde_json::to_value(build(&sources, Span::LastRun, at(MORNING))).unwrap();
    /// What a field holds: a string, a whole number, a decimal.
    #[derive(Debug)]
    enum Kind {
        Text,
        Whole,
        Decimal,
    }
    use Kind::{Decimal, Text, Whole};
    let checks = [
        ("/version", Whole),
        ("/generated_at", Text),
        ("/branch", Text),
        ("/range/kind", Text),
        ("/range/words", Text),
        ("/range/from", Text),
        ("/range/to", Text),
        ("/range/first_cycle", Whole),
        ("/range/last_cycle", Whole),
        ("/run/state", Text),
        ("/run/started_at", Text),
        ("/run/stopped_at", Text),
        ("/run/exit_code", Whole),
        ("/run/reason", Text),
        ("/time/span_seconds", Whole),
        ("/time/working_seconds", Whole),
        ("/time/waiting_seconds", Whole),
        ("/time/waiting_by_reason/usage_limit", Whole),
        ("/cycles/total", Whole),
        ("/cycles/by_outcome/committed", Whole),
        ("/commits/0/cycle", Whole),
        ("/commits/0/title", Text),
        ("/commits/0/commit", Text),
        ("/commits/0/short_sha", Text),
        ("/commits/0/diff/files_changed", Whole),
        ("/commits/0/diff/insertions", Whole),
        ("/commits/0/diff/deletions", Whole),
        ("/commits/0/diff_stat", Text),
        ("/commits/0/look", Text),
        ("/attempts/0/cycle", Whole),
        ("/attempts/0/title", Text),
        ("/attempts/0/outcome", Text),
        ("/attempts/0/ref", Text),
        ("/attempts/0/reason", Text),
        ("/attempts/0/decided_by", Text),
        ("/attempts/0/diff_stat", Text),
        ("/attempts/0/look", Text),
        ("/failures/0/cycle", Whole),
        ("/failures/0/outcome", Text),
        ("/failures/0/reason", Text),
        ("/cost/usd", Decimal),
        ("/cost/tokens/input", Whole),
        ("/cost/tokens/output", Whole),
        ("/learnings/0/cycle", Whole),
        ("/learnings/0/text", Text),
    ];
    for (pointer, kind) in checks {
        let value = json
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{pointer} missing in {json:#}"));
        let right = match kind {
            Text => value.is_string(),
            Whole => value.is_u64(),
            Decimal => value.is_f64(),
        };
        assert!(right, "{pointer} is not {kind:?}: {value}");
    }
    assert_eq!(json["version"], 1);
    assert_eq!(json["range"]["kind"], "last_run");
    assert_eq!(json["run"]["state"], "stopped");
    assert_eq!(json["commits"][0]["short_sha"], "0123abc");
    assert_eq!(
        json["commits"][0]["look"],
        "git show 0123abcd4567ef890123abcd4567ef8901234567"
    );
    assert_eq!(json["attempts"][0]["ref"], "refs/ralph/attempts/3");
    assert_eq!(json["attempts"][0]["outcome"], "rolled_back");
    assert_eq!(
        json["attempts"][0]["look"],
        "git log -p main..refs/ralph/attempts/3"
    );
    // What the coordinator puts into daemon_stopped reads back the same.
    let back: Digest = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(back).unwrap(), json);
}

#[test]
fn without_an_event_log_waits_are_unknown_not_zero() {
    let mut sources = night();
    sources.events = None;
    let digest = build(&sources, Span::LastRun, at(MORNING));
    assert_eq!(digest.time.waiting_seconds, None);
    assert_eq!(digest.time.waiting_by_reason, None);
    // Cycle 4's inner wait cannot be told apart from its work.
    assert_eq!(
        digest.time.working_seconds,
        720 + 900 + 1800 + 300 + 60 + 1080
    );
    // The stop comes from status.json then.
    assert_eq!(digest.run.exit_code, Some(3));
    assert_eq!(
        digest.run.reason.as_deref(),
        Some("halted by a guard (budget or circuit breaker)")
    );
    let page = render(&digest, &TimeZone::UTC);
    assert!(page.contains("waiting unknown (no event log)"), "{page}");
    assert!(page.contains("— exit 3"), "{page}");
}

#[test]
fn since_and_cycles_choose_the_cycles_they_name() {
    let since = build(
        &night(),
        Span::Since(Duration::from_secs(12 * 3600)),
        at(MORNING),
    );
    assert_eq!(
        (since.range.first_cycle, since.range.last_cycle),
        (Some(2), Some(7))
    );
    assert_eq!(since.range.words, "the last 12h");
    assert_eq!(since.range.to.as_deref(), Some(MORNING));
    let short = build(&night(), Span::Since(Duration::from_secs(60)), at(MORNING));
    assert_eq!(short.cycles.total, 0);
    assert!(render(&short, &TimeZone::UTC).contains("- cycles: none"));

    let range = |first, last| Span::Cycles(CycleRange { first, last });
    let some = build(&night(), range(1, Some(3)), at(MORNING));
    let numbers: Vec<u64> = some.commits.iter().map(|commit| commit.cycle).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(some.range.words, "cycles 1..3");
    assert_eq!(some.range.from.as_deref(), Some("2026-03-09T21:00:00Z"));
    assert_eq!(some.range.to.as_deref(), Some("2026-03-10T22:35:00Z"));
    // The run the range ends in is the last one; cycle 1 alone is the
    // earlier run's.
    assert_eq!(some.run.exit_code, Some(3));
    let first = build(&night(), range(1, Some(1)), at(MORNING));
    assert_eq!(first.run.exit_code, Some(1));
    assert_eq!(
        first.run.started_at.as_deref(),
        Some("2026-03-09T20:59:59Z")
    );
    let open = build(&night(), range(6, None), at(MORNING));
    assert_eq!(open.cycles.total, 2);
    assert_eq!(open.range.words, "cycles 6..");
}

#[test]
fn a_running_daemon_and_one_that_died_without_a_word_are_told_apart() {
    let mut sources = night();
    sources.events = None;
    let status = sources.status.as_mut().unwrap();
    status.exit = None;
    status.state = DaemonState::Running;
    sources.running = true;
    let running = build(&sources, Span::LastRun, at(MORNING));
    assert_eq!(running.run.state, "running");
    assert_eq!(running.range.to.as_deref(), Some(MORNING));
    assert!(render(&running, &TimeZone::UTC).contains("still running"));

    sources.running = false;
    let died = build(&sources, Span::LastRun, at(MORNING));
    assert_eq!(died.run.state, "died");
    assert_eq!(died.run.exit_code, None);
    let page = render(&died, &TimeZone::UTC);
    assert!(
        page.contains("**died**: the daemon ended without recording why while running"),
        "{page}"
    );
    assert!(page.contains("2026-03-10T23:45:30Z"), "{page}");
}

#[test]
fn the_daemon_that_just_stopped_says_how_and_covers_its_own_run() {
    let mut sources = night();
    sources.status = None;
    sources.events = None;
    sources.run_start = Some(at("2026-03-10T23:00:00Z"));
    sources.stop = Some(RunStop {
        exit_code: 130,
        reason: "stopped by a signal".to_owned(),
    });
    let digest = build(&sources, Span::LastRun, at("2026-03-10T23:50:00Z"));
    assert_eq!(digest.run.exit_code, Some(130));
    assert_eq!(
        digest.run.stopped_at.as_deref(),
        Some("2026-03-10T23:50:00Z")
    );
    assert_eq!(digest.range.first_cycle, Some(5));
}

#[test]
fn an_empty_home_says_there_is_nothing_rather_than_failing() {
    let digest = build(&Sources::default(), Span::LastRun, at(MORNING));
    assert_eq!(digest.run.state, "unknown");
    let page = render(&digest, &TimeZone::UTC);
    assert!(page.contains("- cycles: none"), "{page}");
    assert!(page.contains("no commits"), "{page}");
}

#[test]
fn long_lists_show_the_newest_and_say_where_the_rest_is() {
    let mut sources = night();
    let progress = sources.progress.as_mut().unwrap();
    for cycle in 8..=30 {
        let mut attempt = record(cycle, "2026-03-10T23:40:00Z", 10, Outcome::RolledBack);
        attempt.attempt_ref = Some(format!("refs/ralph/attempts/{cycle}"));
        attempt.reason = Some(format!("reason {cycle}"));
        progress.cycles.push(attempt);
    }
    let page = render(&build(&sources, Span::LastRun, at(MORNING)), &TimeZone::UTC);
    assert!(page.contains("26 saved attempts"), "{page}");
    assert!(
        page.contains("The newest 10; 16 more in `ralphd report --format json | jq .attempts`."),
        "{page}"
    );
    assert!(page.contains("refs/ralph/attempts/30"), "{page}");
    assert!(!page.contains("refs/ralph/attempts/20`"), "{page}");
}

#[test]
fn agent_text_with_line_breaks_stays_one_list_item() {
    let mut sources = night();
    let progress = sources.progress.as_mut().unwrap();
    progress.cycles[2].reason =
        Some("the backtest agent's verdict: fail —\nbreaks\n\nthe API".to_owned());
    progress.cycles[6].learnings = vec!["two\nlines".to_owned()];
    let page = render(&build(&sources, Span::LastRun, at(MORNING)), &TimeZone::UTC);
    assert!(
        page.contains(": the backtest agent's verdict: fail — breaks the API\n  look:"),
        "{page}"
    );
    assert!(page.contains("- two lines (cycle 7)\n"), "{page}");
}

#[test]
fn cycle_ranges_parse_and_bad_ones_say_how_to_write_them() {
    let ok = |first, last| Ok(CycleRange { first, last });
    assert_eq!(CycleRange::parse("3..17"), ok(3, Some(17)));
    assert_eq!(CycleRange::parse("3.."), ok(3, None));
    assert_eq!(CycleRange::parse("5"), ok(5, Some(5)));
    assert_eq!(CycleRange::parse("5..5"), ok(5, Some(5)));
    for bad in [
        "17..3",
        "a..b",
        "",
        "..3",
        "3...5",
        "-1..2",
        "1..99999999999999999999",
    ] {
        let error = CycleRange::parse(bad).expect_err(bad);
        assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
    }
    assert!(
        CycleRange::parse("17..3")
            .unwrap_err()
            .contains("e.g. 3..17")
    );
}

#[test]
fn the_exit_line_of_status_splits_into_code_and_words() {
    assert_eq!(
        split_exit("reached --max-iterations (exit 1)"),
        (Some(1), "reached --max-iterations".to_owned())
    );
    assert_eq!(
        split_exit("stopped by an error (exit 2): the disk is full"),
        (Some(2), "stopped by an error: the disk is full".to_owned())
    );
    assert_eq!(split_exit("odd"), (None, "odd".to_owned()));
}
