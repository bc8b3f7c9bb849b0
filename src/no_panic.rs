//! Property tests: no input makes ralphd panic (issue 11).
//!
//! Every reader of a home's state — progress.json, prd.json, breaker.json,
//! limiter.json, status.json, in-flight.json, last-branch, and the collector
//! behind `ralphd status` — gets arbitrary bytes, and JSON of the right shape
//! with arbitrary values (huge numbers, timestamps at the ends of time, wrong
//! types, missing fields) put into a valid sample. An error is fine: the
//! daemon refuses the file by name. A panic is not. The digest of `ralphd
//! report` reads the same files and `events.jsonl`. So do the parsers of
//! what the user and the agent write: ralph.toml, prompt templates, the
//! agent's stream lines and texts, `/proc` lines, and the log redaction.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::breaker::{Breaker, BreakerSettings, BreakerSnapshot};
use crate::limiter::{Limiter, LimiterSnapshot};
use crate::state::{self, HomePaths, InFlight, OnCorrupt, Progress, StatusFile};

/// Stands for "remove this field or item" in a mutated sample.
const REMOVED: &str = "\u{0}removed";

fn progress_sample() -> Value {
    json!({"version": 1, "branch": "main", "start_time": "2026-01-20T10:00:00Z",
        "cycles": [{"cycle": 1, "cycle_id": "cycle_1_1640000000", "started_at": "2026-01-20T10:00:00Z",
            "ended_at": "2026-01-20T10:00:45Z", "duration_seconds": 45.2,
            "phases_completed": ["scan", "idea", "code-edit", "backtest", "report"],
            "phases": [{"phase": "scan", "status": "ok", "duration_ms": 1200, "cost_usd": 0.02,
                "session_id": "s-1", "turns": 3, "attempts": 1, "permission_denials": ["Write"],
                "error": "none"}],
            "outcome": "rolled_back", "commit": "0123456789abcdef0123456789abcdef01234567",
            "attempt_ref": "refs/ralph/attempts/1", "success": false, "cost_usd": 0.11,
            "output": "summary", "learnings": ["a learning"], "title": "a title", "error": "why"}],
        "patterns": ["a pattern"], "total_cost_usd": 0.11})
}

fn breaker_sample() -> Value {
    json!({"version": 1,
        "state": {"kind": "open", "opened_at": "2026-11-22T10:00:00Z", "until": "2026-11-22T10:01:00Z"},
        "reopens": 2,
        "recent_failures": [{"at": "2026-11-22T10:00:00Z", "reason": "cycle 3: no_changes"}]})
}

fn limiter_sample() -> Value {
    json!({"version": 1, "calls": ["2026-11-22T10:00:00Z", "2026-11-22T10:00:30Z"],
        "per_minute_full_at": "2026-11-22T10:01:00Z", "per_hour_full_at": "2026-11-22T11:00:00Z"})
}

fn status_sample() -> Value {
    json!({"version": 1, "pid": 4242, "started_at": "2026-11-25T03:00:00Z",
        "heartbeat_at": "2026-11-25T04:00:00Z", "repo": "/nonexistent/repo", "branch": "main",
        "state": "waiting", "cycle": 7, "phase": "backtest", "phase_started_at": "2026-11-25T03:59:00Z",
        "waiting": {"reason": "usage limit", "until": "2026-11-25T05:00:00Z"},
        "breaker": "closed (0 consecutive failed cycles)", "spent_usd": 1.25, "max_cost_usd": 20.0,
        "last_error": "an error", "exit": "reached --max-iterations (exit 1)"})
}

fn prd_sample() -> Value {
    serde_json::from_str(crate::init::PRD_EXAMPLE).expect("the example is JSON")
}

/// A real in-flight.json: a cycle start taken on a repository with a user's
/// uncommitted change and an ignored file, so every part of it has content.
static IN_FLIGHT_SAMPLE: LazyLock<Value> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = git2::Repository::init(dir.path()).expect("git init");
    std::fs::write(dir.path().join(".gitignore"), "*.log\n").expect("write");
    std::fs::write(dir.path().join("a.txt"), "one\n").expect("write");
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("index write");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let signature = git2::Signature::now("t", "t@t").expect("signature");
    repo.commit(Some("HEAD"), &signature, &signature, "initial", &tree, &[])
        .expect("commit");
    std::fs::write(dir.path().join("a.txt"), "two\n").expect("write");
    std::fs::write(dir.path().join("b.log"), "ignored\n").expect("write");
    let start = crate::git::GitRepo::open(dir.path())
        .and_then(|repo| repo.begin_cycle())
        .expect("cycle start");
    serde_json::to_value(InFlight {
        version: state::VERSION,
        cycle: 3,
        started_at: "2026-11-25T03:00:00Z".to_owned(),
        branch: "main".to_owned(),
        start: Some(start),
        phases_completed: vec!["scan".to_owned(), "idea".to_owned()],
        cost_usd: 0.12,
        title: Some("Add a line".to_owned()),
        commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        attempt_ref: Some("refs/ralph/attempts/3".to_owned()),
        story: Some("US-1".to_owned()),
        summary: "added a line".to_owned(),
        learnings: vec!["work.txt grows".to_owned()],
        error: Some("interrupted".to_owned()),
        ..InFlight::default()
    })
    .expect("in-flight serialises")
});

/// Arbitrary bytes, or arbitrary text.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<String>().prop_map(String::into_bytes),
    ]
}

/// RFC 3339 texts over jiff's whole range, its ends, and just beyond them.
fn timestamp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (jiff::Timestamp::MIN.as_second()..=jiff::Timestamp::MAX.as_second()).prop_map(|second| {
            jiff::Timestamp::from_second(second)
                .map(|at| at.to_string())
                .unwrap_or_default()
        }),
        Just(jiff::Timestamp::MAX.to_string()),
        Just(jiff::Timestamp::MIN.to_string()),
        Just("+10000-01-01T00:00:00Z".to_owned()),
        Just("1969-12-31T23:59:59.999999999Z".to_owned()),
    ]
}

/// One JSON value that is no object or array.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(u64::MAX),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
            Just(0)
        ]
        .prop_map(Value::from),
        proptest::num::f64::ANY.prop_map(Value::from),
        timestamp_text().prop_map(Value::from),
        prop_oneof![
            Just("open"),
            Just("closed"),
            Just("half_open"),
            Just("committed"),
            Just("refs/ralph/attempts/1"),
            Just(""),
        ]
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

/// Any JSON value, a few levels deep, with keys the state files use.
fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("version".to_owned()),
        Just("kind".to_owned()),
        Just("cycle".to_owned()),
        Just("userStories".to_owned()),
        Just("passes".to_owned()),
        Just("id".to_owned()),
        any::<String>(),
    ];
    leaf().prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::vec((key.clone(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// How many nodes `value` has (itself included).
fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(entries) => entries.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Replaces the node at pre-order `index` (0: `value` itself); returns the
/// index left to count down when it lies beyond `value`'s nodes.
fn replace_nth(value: &mut Value, index: usize, replacement: &Value) -> Option<usize> {
    if index == 0 {
        *value = replacement.clone();
        return None;
    }
    let mut index = index - 1;
    let children: Vec<&mut Value> = match value {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(entries) => entries.values_mut().collect(),
        _ => Vec::new(),
    };
    for child in children {
        index = replace_nth(child, index, replacement)?;
    }
    Some(index)
}

/// Drops the fields and items marked [`REMOVED`].
fn drop_removed(value: &mut Value) {
    let removed = |value: &Value| value.as_str() == Some(REMOVED);
    match value {
        Value::Array(items) => {
            items.retain(|item| !removed(item));
            items.iter_mut().for_each(drop_removed);
        }
        Value::Object(entries) => {
            entries.retain(|_, item| !removed(item));
            entries.values_mut().for_each(drop_removed);
        }
        _ => {}
    }
}

/// `sample` with one to three of its nodes (a value or a whole sub-tree)
/// replaced by arbitrary JSON or removed: the right shape, wrong values.
fn mutated(sample: Value) -> impl Strategy<Value = Value> {
    let n_nodes = count_nodes(&sample);
    let edit = prop_oneof![
        4 => any_json(),
        1 => Just(Value::from(REMOVED)),
    ];
    proptest::collection::vec((0..n_nodes, edit), 1..4).prop_map(move |edits| {
        let mut value = sample.clone();
        for (index, replacement) in &edits {
            replace_nth(&mut value, *index, replacement);
        }
        drop_removed(&mut value);
        value
    })
}

/// The content of a state file: garbage, or a mutated `sample`.
fn content(sample: Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => bytes(),
        3 => mutated(sample).prop_map(|value| serde_json::to_vec(&value).expect("JSON")),
    ]
}

/// A home with `state/` and the given files in it.
fn home_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(home.path().join("state/cycles")).expect("state dir");
    for (name, bytes) in files {
        std::fs::write(home.path().join("state").join(name), bytes).expect("write");
    }
    home
}

/// Clocks the guards are restored at: now, and the earliest a clock reads.
/// (Their arithmetic is in nanoseconds since 1970 and ends in 2554: a clock,
/// not a file, would have to go there.)
fn times() -> [SystemTime; 2] {
    [SystemTime::now(), SystemTime::UNIX_EPOCH]
}

fn read_progress(home: &Path) {
    let paths = HomePaths::new(home);
    let _ = state::load_json::<Progress>(&paths.progress(), OnCorrupt::Refuse, "");
    let _ = state::load_json::<Progress>(&paths.progress(), OnCorrupt::MoveAside, "stamp");
}

fn read_prd(home: &Path) {
    let path = HomePaths::new(home).prd();
    if let Ok(Some(prd)) = crate::prd::load(&path) {
        let stories = crate::prd::open_stories(&prd);
        let Ok(store) = crate::tasks::Store::open(home) else {
            return;
        };
        let _ = store.list(crate::tasks::Filter::All);
        if let Some(story) = stories.first() {
            let _ = store.show(&story.id);
            let _ = store.set_done(&story.id, true);
            let _ = store.update(
                &story.id,
                crate::tasks::TaskPatch {
                    priority: Some(1),
                    ..crate::tasks::TaskPatch::default()
                },
            );
            let _ = store.remove(&story.id);
        }
        let _ = store.add(crate::tasks::NewTask {
            title: "t".to_owned(),
            ..crate::tasks::NewTask::default()
        });
    }
}

fn read_breaker(home: &Path) {
    let paths = HomePaths::new(home);
    let settings = BreakerSettings {
        failure_threshold: NonZeroU32::MIN,
        recovery_timeout: Duration::from_secs(60),
        max_recovery_timeout: Duration::from_secs(3600),
        half_open_max_calls: NonZeroU32::MIN,
    };
    if let Ok(Some(snapshot)) =
        state::load_json::<BreakerSnapshot>(&paths.breaker(), OnCorrupt::Refuse, "")
    {
        for now in times() {
            if let Ok(mut breaker) = Breaker::from_snapshot(settings, &snapshot, now) {
                breaker.admit(now);
                breaker.record_failure(now, "failed");
                breaker.admit(now);
                breaker.record_success();
                let _ = breaker.snapshot();
            }
        }
    }
    let _ = crate::daemon::reset_breaker(home);
}

fn read_limiter(home: &Path) {
    let paths = HomePaths::new(home);
    let Ok(Some(snapshot)) =
        state::load_json::<LimiterSnapshot>(&paths.limiter(), OnCorrupt::Refuse, "")
    else {
        return;
    };
    for now in times() {
        for (per_minute, per_hour) in [(1, 1), (60, 1000), (u32::MAX, u32::MAX)] {
            let (Some(per_minute), Some(per_hour)) =
                (NonZeroU32::new(per_minute), NonZeroU32::new(per_hour))
            else {
                continue;
            };
            if let Ok(mut limiter) = Limiter::from_snapshot(per_minute, per_hour, &snapshot, now) {
                let _ = limiter.try_acquire(now);
                let _ = limiter.snapshot();
            }
        }
    }
}

fn read_status_file(home: &Path) {
    let paths = HomePaths::new(home);
    let _ = state::load_json::<StatusFile>(&paths.status(), OnCorrupt::Refuse, "");
}

fn read_in_flight(home: &Path) {
    let paths = HomePaths::new(home);
    if let Ok(Some(in_flight)) =
        state::load_json::<InFlight>(&paths.in_flight(), OnCorrupt::MoveAside, "stamp")
    {
        let _ = in_flight
            .start
            .as_ref()
            .map(crate::git::Snapshot::start_commit);
    }
}

fn events_sample() -> Value {
    json!({"id": 3, "at": "2026-11-25T03:10:00.250Z", "type": "waiting", "reason": "usage_limit",
        "detail": "5-hour limit", "until": "2026-11-25T05:00:00Z", "cycle": 7, "exit_code": 3})
}

/// `ralphd report` over every range and both formats.
fn read_report_command(home: &Path) {
    use crate::digest::{CycleRange, Span};
    for span in [
        Span::LastRun,
        Span::Since(Duration::from_secs(12 * 3600)),
        Span::Since(Duration::MAX),
        Span::Cycles(CycleRange {
            first: 0,
            last: None,
        }),
    ] {
        if let Ok(digest) = crate::digest::collect(home, span) {
            let _ = crate::digest::render(&digest, &jiff::tz::TimeZone::UTC);
            let _ = serde_json::to_string(&digest);
        }
    }
}

fn read_status_command(home: &Path) {
    if let Ok(value) = crate::status::collect(home) {
        let _ = crate::status::render_text(&value);
    }
}

proptest! {
    #[test]
    fn progress_json(bytes in content(progress_sample())) {
        read_progress(home_with(&[("progress.json", &bytes)]).path());
    }

    #[test]
    fn prd_json(bytes in content(prd_sample())) {
        read_prd(home_with(&[("prd.json", &bytes)]).path());
    }

    #[test]
    fn breaker_json(bytes in content(breaker_sample())) {
        read_breaker(home_with(&[("breaker.json", &bytes)]).path());
    }

    #[test]
    fn limiter_json(bytes in content(limiter_sample())) {
        read_limiter(home_with(&[("limiter.json", &bytes)]).path());
    }

    #[test]
    fn status_json(bytes in content(status_sample())) {
        read_status_file(home_with(&[("status.json", &bytes)]).path());
    }

    #[test]
    fn in_flight_json(bytes in content(IN_FLIGHT_SAMPLE.clone())) {
        read_in_flight(home_with(&[("in-flight.json", &bytes)]).path());
    }

    #[test]
    fn last_branch(bytes in bytes()) {
        let home = home_with(&[("last-branch", &bytes)]);
        let _ = state::read_last_branch(&HomePaths::new(home.path()));
    }

    #[test]
    fn status_command(
        status in content(status_sample()),
        progress in content(progress_sample()),
        breaker in content(breaker_sample()),
    ) {
        let home = home_with(&[
            ("status.json", &status),
            ("progress.json", &progress),
            ("breaker.json", &breaker),
        ]);
        read_status_command(home.path());
    }

    #[test]
    fn report_command(
        status in content(status_sample()),
        progress in content(progress_sample()),
        started in content(json!({"id": 1, "at": "2026-11-25T03:00:00Z", "type": "daemon_started"})),
        waiting in content(events_sample()),
        stopped in content(json!({"id": 4, "at": "2026-11-25T04:00:00Z", "type": "daemon_stopped",
            "exit_code": 1, "reason": "reached --max-iterations"})),
    ) {
        let mut events = Vec::new();
        for line in [&started, &waiting, &stopped] {
            events.extend_from_slice(line);
            events.push(b'\n');
        }
        let home = home_with(&[
            ("status.json", &status),
            ("progress.json", &progress),
            ("events.jsonl", &events),
        ]);
        read_report_command(home.path());
    }
}

/// Text with pieces the parsers look for, glued with arbitrary text.
fn text_with(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        2 => proptest::sample::select(pieces).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => Just("\n".to_owned()),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// What the agent's texts are searched for.
const AGENT_PIECES: &[&str] = &[
    "```json\n",
    "```",
    "~~~",
    "{\"verdict\":\"pass\",\"reason\":\"ok\"}",
    "{\"summary\":\"s\",\"learnings\":[\"l\"],\"story\":{\"id\":\"US-1\",\"passes\":true}}",
    "TITLE:",
    "**Title:** ",
    "<promise>COMPLETE</promise>",
    "You've hit your ",
    "You\u{2019}ve hit your ",
    " limit",
    " limit reached",
    "usage limit reached|",
    "Claude AI usage limit reached|1764000000",
    "resets ",
    "5:42am",
    "12pm",
    "Nov 24, ",
    "Feb 30, ",
    " (Europe/Paris)",
    " (Nowhere/Zone)",
    "İ",
    "é",
    "api_key",
    "Authorization: Bearer ",
    "\"token\": \"",
    "=",
    ": ",
    "sk-ant-api03-",
    "ghp_",
    "AKIA",
    "xoxb-",
    "[REDACTED]",
];

const TEMPLATE_PIECES: &[&str] = &[
    "{{",
    "}}",
    "{{#",
    "{{/",
    "{{steering}}",
    "{{#scan}}",
    "{{/scan}}",
    "{{ scan }}",
    "#",
    "/",
    "scan",
    "steering",
    "checks",
    "\n",
    " ",
    "é",
];

const STREAM_PIECES: &[&str] = &[
    "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"done\",\"total_cost_usd\":0.01,\"num_turns\":1}",
    "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s\",\"model\":\"m\"}",
    "{\"type\":\"system\",\"subtype\":\"api_retry\",\"attempt\":1,\"error_status\":529}",
    "{\"type\":\"rate_limit_event\",\"rate_limit_info\":{\"status\":\"rejected\",\"resetsAt\":99999999999999}}",
    "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}",
    "{\"type\":",
    "\"subtype\":\"",
    "\"",
    "}",
];

const TOML_KEYS: &[&str] = &[
    "[loop]\nsleep_between_iterations",
    "[loop]\nmax_iterations",
    "[agent]\nphase_timeout",
    "[agent]\ncommand",
    "[agent]\nmax_turns",
    "[agent]\nmax_attempts",
    "[phases.scan]\nallowed_tools",
    "[backtest]\nchecks",
    "[rate_limit]\nrequests_per_minute",
    "[breaker]\nrecovery_timeout",
    "[budget]\nmax_cost_usd",
    "[logging]\nlevel",
    "[git]\nrepo",
    "[state]\non_corrupt",
];

const TOML_VALUES: &[&str] = &[
    "\"-1s\"",
    "\"400days\"",
    "\"\"",
    "0",
    "-1",
    "9223372036854775807",
    "1e400",
    "nan",
    "-0.0",
    "[]",
    "[\"\"]",
    "{}",
    "true",
    "0x10",
    "\"é\"",
    "'''\n'''",
];

proptest! {
    #[test]
    fn agent_texts(text in text_with(AGENT_PIECES)) {
        let _ = crate::blocks::is_completion(&text);
        let _ = crate::blocks::last_fenced_json_block(&text);
        let _ = crate::blocks::parse_backtest_verdict(&text);
        let _ = crate::blocks::parse_report_block(&text);
        let _ = crate::blocks::idea_title(&text);
        let _ = crate::agent::usage_limit::parse_usage_limit(&text, jiff::Timestamp::now());
        let _ = crate::agent::usage_limit::parse_usage_limit(&text, jiff::Timestamp::MAX);
        let _ = crate::redact::redact(&text);
    }

    #[test]
    fn stream_lines(lines in proptest::collection::vec(text_with(STREAM_PIECES), 0..6)) {
        let mut summary = crate::agent::stream::StreamSummary::default();
        for line in &lines {
            if let Ok(event) = crate::agent::stream::parse_line(line) {
                summary.record(event);
            }
        }
    }

    #[test]
    fn prompt_templates(
        template in text_with(TEMPLATE_PIECES),
        value in text_with(TEMPLATE_PIECES),
    ) {
        let context = crate::prompt::PromptContext {
            steering: value.repeat(50),
            scan: value.clone(),
            learnings: vec![value.clone(); 3],
            ..crate::prompt::PromptContext::default()
        };
        let _ = crate::prompt::render(&template, &context);
    }

    #[test]
    fn proc_stat_lines(text in text_with(&["(", ")", " ", "S", "1", "-1", "99999999999999999999"])) {
        let _ = crate::reaper::parse_stat(&text);
    }

    #[test]
    fn ralph_toml(
        entries in proptest::collection::vec(
            (proptest::sample::select(TOML_KEYS), prop_oneof![
                3 => proptest::sample::select(TOML_VALUES).prop_map(str::to_owned),
                1 => any::<String>().prop_map(|text| format!("{text:?}")),
            ]),
            0..4,
        ),
        garbage in proptest::option::weighted(0.2, any::<String>()),
    ) {
        let home = tempfile::tempdir().expect("temp dir");
        let mut text: String = entries
            .iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect();
        text.extend(garbage);
        std::fs::write(home.path().join("ralph.toml"), text).expect("write");
        let args = crate::cli::RunArgs {
            home: Some(home.path().to_path_buf()),
            ..crate::cli::RunArgs::default()
        };
        let _ = crate::config::Config::load_in(&args, &crate::config::Env::default(), home.path());
    }
}

/// The samples are valid files, so that their mutations reach past the parser.
#[test]
fn the_samples_are_read_without_error() {
    let home = home_with(&[
        (
            "progress.json",
            &serde_json::to_vec(&progress_sample()).unwrap(),
        ),
        ("prd.json", &serde_json::to_vec(&prd_sample()).unwrap()),
        (
            "breaker.json",
            &serde_json::to_vec(&breaker_sample()).unwrap(),
        ),
        (
            "limiter.json",
            &serde_json::to_vec(&limiter_sample()).unwrap(),
        ),
        (
            "status.json",
            &serde_json::to_vec(&status_sample()).unwrap(),
        ),
        (
            "in-flight.json",
            &serde_json::to_vec(&*IN_FLIGHT_SAMPLE).unwrap(),
        ),
        ("last-branch", b"main\n"),
    ]);
    let paths = HomePaths::new(home.path());
    let refuse = OnCorrupt::Refuse;
    assert!(
        state::load_json::<Progress>(&paths.progress(), refuse, "")
            .unwrap()
            .is_some()
    );
    assert!(crate::prd::load(&paths.prd()).unwrap().is_some());
    let breaker = state::load_json::<BreakerSnapshot>(&paths.breaker(), refuse, "").unwrap();
    assert!(breaker.is_some());
    let limiter = state::load_json::<LimiterSnapshot>(&paths.limiter(), refuse, "").unwrap();
    assert!(limiter.is_some());
    assert!(
        state::load_json::<StatusFile>(&paths.status(), refuse, "")
            .unwrap()
            .is_some()
    );
    let in_flight = state::load_json::<InFlight>(&paths.in_flight(), refuse, "").unwrap();
    assert!(in_flight.unwrap().start.is_some());
    assert_eq!(
        state::read_last_branch(&paths).unwrap().as_deref(),
        Some("main")
    );
    let collected = crate::status::collect(home.path()).unwrap();
    assert!(crate::status::render_text(&collected).contains("last cycles"));
    let event = crate::digest::LoggedEvent::parse(&events_sample().to_string()).unwrap();
    assert_eq!(event.reason.as_deref(), Some("usage_limit"));
    let digest = crate::digest::collect(home.path(), crate::digest::Span::LastRun).unwrap();
    assert_eq!(digest.run.exit_code, Some(1));
}

#[test]
fn mutation_replaces_and_removes_nodes() {
    let mut value = json!({"a": [1, 2], "b": {"c": 3}});
    assert_eq!(count_nodes(&value), 6);
    assert_eq!(replace_nth(&mut value, 4, &json!("x")), None);
    assert_eq!(value, json!({"a": [1, 2], "b": "x"}));
    replace_nth(&mut value, 2, &Value::from(REMOVED));
    drop_removed(&mut value);
    assert_eq!(value, json!({"a": [2], "b": "x"}));
    assert_eq!(replace_nth(&mut value, 9, &json!(0)), Some(5));
}
