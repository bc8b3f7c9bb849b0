//! The guards through the built binary (docs/design.md §4 usage limits and API
//! errors, §7 guards): usage-limit waits, API retries, auth failures, the
//! circuit breaker, the budget and the rate limiter that survives restarts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// `ralphd status --home H --json`, parsed.
fn status_json(world: &World) -> Value {
    let mut command = world.ralphd();
    command
        .args(["status", "--json", "--home"])
        .arg(&world.home);
    let outcome = command.output();
    outcome.assert_code(0);
    serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|error| panic!("status --json is not JSON ({error}): {}", outcome.stdout))
}

/// `state/breaker.json`.
fn breaker(world: &World) -> Value {
    read_json(&world.home.join("state/breaker.json"))
}

/// Polls `ralphd status --json` until `condition` holds for it; returns it.
#[track_caller]
fn wait_for_status(world: &World, what: &str, mut condition: impl FnMut(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = poll_until(DEADLINE, || {
        last = status_json(world);
        condition(&last)
    });
    assert!(
        found,
        "timed out waiting for status to show {what}; last: {last:#}"
    );
    last
}

/// The reason of the wait `status --json` shows, if any.
fn waiting_reason(status: &Value) -> Option<&str> {
    status["status"]["waiting"]["reason"].as_str()
}

/// Seconds since the Unix epoch, as a float.
fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Makes the fake agent write the time of a call (epoch seconds) to `fake/<name>`.
fn record_time(world: &World, phase: &str, call: u32, name: &str) {
    world.script(
        phase,
        Some(call),
        &format!("date +%s.%N > \"$FAKE_CLAUDE_DIR/{name}\"\n"),
    );
}

fn recorded_time(world: &World, name: &str) -> f64 {
    let text = std::fs::read_to_string(world.fake.join(name))
        .unwrap_or_else(|error| panic!("no recorded time {name}: {error}"));
    text.trim()
        .parse()
        .unwrap_or_else(|error| panic!("bad recorded time {text:?}: {error}"))
}

/// A `rate_limit_event` line as the CLI prints it when a subscription limit is hit.
fn rejected_rate_limit_line(resets_at: u64) -> String {
    json!({"type": "rate_limit_event", "rate_limit_info": {"status": "rejected",
        "resetsAt": resets_at, "rateLimitType": "five_hour", "overageStatus": "rejected",
        "isUsingOverage": false}, "uuid": "rl-1", "session_id": "s-1"})
    .to_string()
}

/// The failure reasons kept in breaker.json, oldest first.
fn breaker_reasons(world: &World) -> Vec<String> {
    breaker(world)["recent_failures"]
        .as_array()
        .map(|failures| {
            failures
                .iter()
                .map(|failure| failure["reason"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_usage_limit_is_waited_out_visibly_and_the_same_phase_runs_again() {
    let world = World::new();
    // Whole seconds, as the CLI reports them: at least 2 s ahead.
    let resets_at = epoch_now().ceil() as u64 + 2;
    world.reply(
        "scan",
        Some(1),
        &[
            init_line(),
            rejected_rate_limit_line(resets_at),
            // The message's own time must not win over the event's epoch.
            error_result_line(
                Some(429),
                "You've hit your session limit · resets 5:42am (UTC)",
            ),
        ],
    );
    record_time(&world, "scan", 2, "scan2.time");
    world.config("\n[breaker]\nfailure_threshold = 1\nhalt_on_open = true\n");

    let started = Instant::now();
    let mut running = world.start(&["--max-iterations", "1"]);
    let status = wait_for_status(&world, "the usage-limit wait", |status| {
        waiting_reason(status) == Some("usage limit")
    });
    assert_eq!(status["running"], true, "{status:#}");
    assert_eq!(status["status"]["state"], "waiting", "{status:#}");
    assert_eq!(status["status"]["cycle"], 1, "{status:#}");
    let until: jiff::Timestamp = status["status"]["waiting"]["until"]
        .as_str()
        .expect("waiting.until")
        .parse()
        .expect("waiting.until is RFC 3339");
    assert_eq!(until.as_second(), resets_at as i64, "{status:#}");
    assert_eq!(world.calls("scan"), 1, "nothing runs during the wait");
    assert_eq!(world.calls("idea"), 0, "nothing runs during the wait");

    let outcome = running.wait_for_exit(DEADLINE).expect("ralphd finishes");
    outcome.assert_code(1);
    let rerun_at = recorded_time(&world, "scan2.time");
    assert!(
        rerun_at >= resets_at as f64 - 0.05,
        "scan re-ran at {rerun_at}, before the reset at {resets_at}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the wait took {:?}",
        started.elapsed()
    );
    assert_eq!(world.calls("scan"), 2, "the same phase is re-run");
    assert_eq!(world.calls("idea"), 1);
    assert_eq!(world.calls("report"), 1);
    assert_eq!(
        world.outcomes(),
        ["committed"],
        "the wait consumed no iteration and failed nothing"
    );
    let progress = world.progress();
    let scan = &progress["cycles"][0]["phases"][0];
    assert_eq!(scan["phase"], "scan");
    assert_eq!(scan["status"], "ok");
    assert_eq!(scan["attempts"], 1, "a usage-limit wait is not an attempt");
    let breaker = breaker(&world);
    assert_eq!(breaker["state"]["kind"], "closed", "{breaker:#}");
    assert_eq!(breaker["state"]["consecutive_failures"], 0, "{breaker:#}");
    assert!(
        outcome.stderr.contains("usage limit"),
        "the log tells about the wait:\n{}",
        outcome.stderr
    );
}

#[test]
fn api_errors_429_529_and_500_are_retried_and_the_cycle_commits() {
    let world = World::new();
    world.reply(
        "scan",
        Some(1),
        &[
            init_line(),
            error_result_line(
                Some(429),
                r#"API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
            ),
        ],
    );
    world.reply(
        "idea",
        Some(1),
        &[
            init_line(),
            error_result_line(
                Some(529),
                r#"API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
        ],
    );
    world.reply(
        "code-edit",
        Some(1),
        &[
            init_line(),
            error_result_line(
                Some(500),
                r#"API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
            ),
        ],
    );
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);

    for phase in ["scan", "idea", "code-edit"] {
        assert_eq!(world.calls(phase), 2, "{phase} is retried once");
    }
    assert_eq!(world.calls("backtest"), 1);
    assert_eq!(world.calls("report"), 1);
    assert_eq!(world.outcomes(), ["committed"]);
    assert_eq!(
        world.git_log()[0],
        "ralphd: cycle 1: Add a line to work.txt"
    );
    let progress = world.progress();
    let attempts: Vec<&Value> = progress["cycles"][0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| &phase["attempts"])
        .collect();
    assert_eq!(
        attempts,
        [&json!(2), &json!(2), &json!(2), &json!(1), &json!(1)]
    );
    assert!(
        outcome.stderr.contains("retrying"),
        "the log says the phase is retried:\n{}",
        outcome.stderr
    );
}

#[test]
fn a_429_on_every_attempt_fails_the_phase_after_max_attempts() {
    let world = World::new();
    world.reply(
        "scan",
        None,
        &[
            init_line(),
            error_result_line(Some(429), "API Error: 429 rate_limit_error"),
        ],
    );
    world.config("max_attempts = 2\n");
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);

    assert_eq!(world.calls("scan"), 2, "exactly max_attempts calls");
    assert_eq!(
        world.calls("idea"),
        0,
        "the cycle stops at the failed phase"
    );
    assert_eq!(world.outcomes(), ["failed"]);
    let progress = world.progress();
    let cycle = &progress["cycles"][0];
    assert_eq!(cycle["success"], false);
    assert_eq!(cycle["phases"][0]["status"], "failed");
    assert_eq!(cycle["phases"][0]["attempts"], 2);
    let error = cycle["error"].as_str().unwrap_or("");
    assert!(error.contains("429"), "the cycle says why: {error}");
    let breaker = breaker(&world);
    assert_eq!(breaker["state"]["consecutive_failures"], 1, "{breaker:#}");
}

#[test]
fn a_401_is_not_retried_and_the_log_says_how_to_fix_credentials() {
    let world = World::new();
    let secret = "sk-ant-api03-guards-test-secret-0123456789";
    world.reply(
        "scan",
        None,
        &[
            init_line(),
            error_result_line(Some(401), "Invalid API key · Fix external API key"),
        ],
    );
    let mut command = world.ralphd();
    command
        .env("ANTHROPIC_API_KEY", secret)
        .args(["run", "--max-iterations", "3", "--repo"])
        .arg(&world.repo)
        .arg("--home")
        .arg(&world.home);
    let outcome = command.output();
    outcome.assert_code(2);

    assert_eq!(world.calls("scan"), 1, "an auth failure is not retried");
    assert_eq!(world.calls("idea"), 0);
    assert_eq!(world.outcomes(), ["failed"]);
    assert!(
        outcome.stderr.contains("claude /login") && outcome.stderr.contains("ANTHROPIC_API_KEY"),
        "the log tells how to fix the credentials:\n{}",
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains(secret),
        "the key never appears in the log"
    );
    let progress = world.progress();
    let error = progress["cycles"][0]["error"].as_str().unwrap_or("");
    assert!(error.contains("claude /login"), "{error}");
}

#[test]
fn not_logged_in_is_not_retried() {
    let world = World::new();
    let lines: Vec<String> = std::fs::read_to_string(
        fake_claude_path()
            .with_file_name("stream")
            .join("not-logged-in.jsonl"),
    )
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect();
    world.reply("scan", None, &lines);
    let outcome = world.run(&["--max-iterations", "3"]);
    outcome.assert_code(2);
    assert_eq!(world.calls("scan"), 1, "no retry, no next cycle");
    assert_eq!(world.outcomes(), ["failed"]);
    let last = outcome.stderr.trim().lines().last().unwrap_or("");
    assert!(
        last.contains("claude /login"),
        "the last log line tells how to log in:\n{}",
        outcome.stderr
    );
}

/// code-edit answers but changes nothing: the cycle ends `no_changes`.
fn code_edit_changes_nothing(world: &World, call: Option<u32>) {
    world.script("code-edit", call, ":\n");
    world.reply("code-edit", call, &answer("I changed nothing."));
}

#[test]
fn the_breaker_halts_with_exit_3_stays_open_across_a_restart_and_a_reset_closes_it() {
    let world = World::new();
    code_edit_changes_nothing(&world, None);
    world.config("\n[breaker]\nfailure_threshold = 2\nhalt_on_open = true\n");

    let outcome = world.run(&["--max-iterations", "5"]);
    outcome.assert_code(3);
    assert_eq!(world.outcomes(), ["no_changes", "no_changes"]);
    assert_eq!(
        world.calls("scan"),
        2,
        "it halts right after the breaker opens"
    );
    let state = breaker(&world);
    assert_eq!(state["state"]["kind"], "open", "{state:#}");
    let reasons = breaker_reasons(&world);
    assert_eq!(reasons.len(), 2, "{state:#}");
    assert!(
        reasons.iter().all(|reason| reason.contains("no_changes")),
        "{reasons:?}"
    );
    let status = status_json(&world);
    let shown = status["status"]["breaker"].as_str().unwrap_or("");
    assert!(
        shown.starts_with("open until") && shown.contains("no_changes"),
        "status shows the open breaker and why: {shown:?}"
    );

    // A restart honours the open breaker: exit 3 at once, no agent call.
    let started = Instant::now();
    let outcome = world.run(&["--max-iterations", "5"]);
    outcome.assert_code(3);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        world.calls("scan"),
        2,
        "no agent call while the breaker is open"
    );
    assert_eq!(world.outcomes().len(), 2, "no cycle was started");
    assert!(
        outcome.stderr.contains("breaker"),
        "the log names the breaker:\n{}",
        outcome.stderr
    );

    // A human closes it; then a run proceeds.
    let mut command = world.ralphd();
    command.args(["reset-breaker", "--home"]).arg(&world.home);
    let reset = command.output();
    reset.assert_code(0);
    assert!(reset.stdout.contains("closed"), "{}", reset.stdout);
    assert_eq!(breaker(&world)["state"]["kind"], "closed");

    std::fs::remove_file(world.fake.join("code-edit.sh")).unwrap();
    std::fs::remove_file(world.fake.join("code-edit.jsonl")).unwrap();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.calls("scan"), 3);
    assert_eq!(world.outcomes(), ["no_changes", "no_changes", "committed"]);
    let state = breaker(&world);
    assert_eq!(state["state"]["kind"], "closed", "{state:#}");
    assert_eq!(state["state"]["consecutive_failures"], 0, "{state:#}");
}

#[test]
fn an_open_breaker_without_halt_waits_then_a_committed_probe_closes_it() {
    let world = World::new();
    code_edit_changes_nothing(&world, Some(1));
    record_time(&world, "report", 1, "report1.time");
    record_time(&world, "scan", 2, "scan2.time");
    world.config(
        "\n[breaker]\nfailure_threshold = 1\nrecovery_timeout = \"1s\"\nhalt_on_open = false\n",
    );

    let mut running = world.start(&["--max-iterations", "2"]);
    let status = wait_for_status(&world, "the open breaker", |status| {
        waiting_reason(status) == Some("circuit breaker open")
    });
    let shown = status["status"]["breaker"].as_str().unwrap_or("");
    assert!(
        shown.starts_with("open until") && shown.contains("no_changes"),
        "status shows the breaker open until when and why: {shown:?}"
    );
    assert_eq!(breaker(&world)["state"]["kind"], "open");
    let outcome = running.wait_for_exit(DEADLINE).expect("ralphd finishes");
    outcome.assert_code(1);

    assert_eq!(world.outcomes(), ["no_changes", "committed"]);
    let gap = recorded_time(&world, "scan2.time") - recorded_time(&world, "report1.time");
    assert!(
        gap >= 0.95,
        "the probe cycle started {gap:.3}s after the failed cycle, before recovery_timeout"
    );
    let state = breaker(&world);
    assert_eq!(
        state["state"]["kind"], "closed",
        "the probe closed it: {state:#}"
    );
    assert_eq!(state["state"]["consecutive_failures"], 0, "{state:#}");
    assert_eq!(state["reopens"], 0, "{state:#}");
    assert!(
        outcome.stderr.contains("probe"),
        "the log tells about the probe:\n{}",
        outcome.stderr
    );
}

#[test]
fn waiting_on_an_open_breaker_makes_no_calls_and_sigterm_exits_130() {
    let world = World::new();
    code_edit_changes_nothing(&world, None);
    world.config(
        "\n[breaker]\nfailure_threshold = 1\nrecovery_timeout = \"1h\"\nhalt_on_open = false\n",
    );
    let mut running = world.start(&[]);
    wait_for_status(&world, "the open breaker", |status| {
        waiting_reason(status) == Some("circuit breaker open")
    });
    assert_eq!(world.calls("scan"), 1);

    running.signal(libc::SIGTERM);
    let outcome = running.wait_for_exit(DEADLINE).expect("ralphd stops");
    outcome.assert_code(130);
    assert_eq!(
        world.calls("scan"),
        1,
        "no agent call while the breaker is open"
    );
    assert_eq!(world.outcomes(), ["no_changes"], "no cycle was started");
    assert_eq!(
        breaker(&world)["state"]["kind"],
        "open",
        "the open breaker is saved"
    );
    let status = read_json(&world.home.join("state/status.json"));
    assert_eq!(status["state"], "stopped");
}

#[test]
fn the_budget_halts_with_exit_3_before_the_next_phase_run_and_across_a_restart() {
    let world = World::new();
    // Every phase run costs $0.02.
    for phase in ["scan", "idea", "backtest", "report"] {
        world.reply(phase, None, &answer(&format!("{phase} done")));
    }
    world.script("code-edit", None, "echo edit >> work.txt\n");
    world.reply("code-edit", None, &answer("edited"));
    world.config("\n[budget]\nmax_cost_usd = 0.05\nmax_cost_per_phase_usd = 0.5\n");

    let outcome = world.run(&["--max-iterations", "5"]);
    outcome.assert_code(3);
    // scan, idea, code-edit: $0.06 >= $0.05, so backtest never starts.
    assert_eq!(world.calls("scan"), 1);
    assert_eq!(world.calls("idea"), 1);
    assert_eq!(world.calls("code-edit"), 1);
    assert_eq!(
        world.calls("backtest"),
        0,
        "no phase run starts past the budget"
    );
    assert_eq!(
        world.calls("report"),
        0,
        "no phase run starts past the budget"
    );
    let progress = world.progress();
    let total = progress["total_cost_usd"].as_f64().unwrap();
    assert!(total >= 0.05 && (total - 0.06).abs() < 1e-9, "{progress:#}");
    assert_eq!(world.outcomes().len(), 1);
    assert_eq!(
        world.git_status(),
        "",
        "the unverified edit is not left in the tree"
    );
    assert!(
        outcome.stderr.contains("budget"),
        "the log says the budget stopped it:\n{}",
        outcome.stderr
    );
    let log = world.calls_log();
    assert!(
        log.contains("  arg: --max-budget-usd\n  arg: 0.5\n"),
        "max_cost_per_phase_usd reaches the CLI:\n{log}"
    );
    assert_eq!(
        log.matches("--max-budget-usd").count(),
        3,
        "on every phase run"
    );
    let status = status_json(&world);
    assert_eq!(status["total_cost_usd"].as_f64(), Some(total), "{status:#}");
    assert_eq!(
        status["status"]["max_cost_usd"].as_f64(),
        Some(0.05),
        "{status:#}"
    );

    // The spent budget persists: a restart halts before any phase run.
    let outcome = world.run(&["--max-iterations", "5"]);
    outcome.assert_code(3);
    assert_eq!(
        world.calls("scan"),
        1,
        "no agent call once the budget is spent"
    );
    assert_eq!(world.outcomes().len(), 1, "no cycle was started");
}

#[test]
fn status_json_reports_the_money_actually_spent() {
    let world = World::new();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let progress = world.progress();
    let total = progress["total_cost_usd"].as_f64().unwrap();
    assert!(
        (total - 0.05).abs() < 1e-9,
        "five runs at $0.01: {progress:#}"
    );
    let status = status_json(&world);
    let spent = status["status"]["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - total).abs() < 1e-9,
        "status.json spent_usd {spent} differs from the phase costs {total}: {status:#}"
    );
}

#[test]
fn error_max_budget_usd_fails_the_phase_with_a_clear_log_line() {
    let world = World::new();
    world.reply(
        "scan",
        None,
        &[
            init_line(),
            json!({"type": "result", "subtype": "error_max_budget_usd", "is_error": true,
                "num_turns": 3, "session_id": "s-1", "total_cost_usd": 0.31,
                "errors": ["Reached maximum budget ($0.3)"]})
            .to_string(),
        ],
    );
    world.config("\n[budget]\nmax_cost_per_phase_usd = 0.3\n");
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    assert_eq!(
        world.calls("scan"),
        1,
        "a spent phase budget is not retried"
    );
    assert_eq!(world.outcomes(), ["failed"]);
    assert!(
        outcome.stderr.contains("max_cost_per_phase_usd"),
        "the log names the setting:\n{}",
        outcome.stderr
    );
    let total = world.progress()["total_cost_usd"].as_f64().unwrap();
    assert!((total - 0.31).abs() < 1e-9, "its cost is counted: {total}");
}

#[test]
fn the_rate_limiter_remembers_calls_across_a_restart_and_throttles_visibly() {
    let world = World::new();
    world.config("\n[rate_limit]\nrequests_per_minute = 5\n");
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    assert_eq!(world.calls_log().matches("call phase=").count(), 5);
    let limiter = read_json(&world.home.join("state/limiter.json"));
    assert_eq!(
        limiter["calls"].as_array().map(Vec::len),
        Some(5),
        "{limiter:#}"
    );

    // A restart must not hand out a fresh burst: it waits for the quota.
    let mut running = world.start(&["--max-iterations", "1"]);
    let status = wait_for_status(&world, "the throttle", |status| {
        waiting_reason(status).is_some_and(|reason| reason.starts_with("throttled"))
    });
    assert_eq!(
        waiting_reason(&status),
        Some("throttled (per-minute)"),
        "{status:#}"
    );
    let until: jiff::Timestamp = status["status"]["waiting"]["until"]
        .as_str()
        .expect("waiting.until")
        .parse()
        .expect("waiting.until is RFC 3339");
    assert!(
        until > jiff::Timestamp::now(),
        "the throttle lasts until a future time: {until}"
    );
    assert_eq!(
        world.calls_log().matches("call phase=").count(),
        5,
        "no agent call while throttled"
    );
    let mut text = world.ralphd();
    text.args(["status", "--home"]).arg(&world.home);
    let text = text.output();
    assert!(
        text.stdout
            .contains("waiting: throttled (per-minute) until"),
        "{}",
        text.stdout
    );

    running.signal(libc::SIGTERM);
    let outcome = running.wait_for_exit(DEADLINE).expect("ralphd stops");
    outcome.assert_code(130);
    assert!(
        outcome.stderr.contains("throttled by the rate limiter")
            && outcome.stderr.contains("per-minute"),
        "the log says which quota:\n{}",
        outcome.stderr
    );
    assert_eq!(world.calls_log().matches("call phase=").count(), 5);
}
