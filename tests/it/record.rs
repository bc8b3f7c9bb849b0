//! The record of a cycle (docs/design.md §3.4): every outcome says why, who decided,
//! what the checks said; `report.md` is the cycle's human page; the next idea
//! hears of rejected attempts; `status` and the logs speak words.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn cycle(world: &World, index: usize) -> Value {
    world.progress()["cycles"][index].clone()
}

fn page(world: &World, cycle: u64) -> String {
    std::fs::read_to_string(world.home.join(format!("state/cycles/{cycle}/report.md"))).unwrap()
}

#[track_caller]
fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "{part:?} not in:\n{text}");
}

#[test]
fn checks_that_overrule_the_agents_pass_say_so_with_their_exit_codes_and_output() {
    let world = World::new();
    world.config(
        "\n[backtest]\nchecks = [\"echo lint clean\", \"echo 'FAILED test_parse - 2 failed'; exit 1\"]\n",
    );
    world.reply("backtest", None, &answer(&verdict(true, "looks right")));
    world.reply(
        "report",
        None,
        &answer("The parser change broke a test. Follow-up: keep the slow path.\n\n```json\n{\"summary\":\"tried a faster parser\",\"learnings\":[\"parse is hot\"],\"patterns\":[\"tests in tests/\"]}\n```"),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);

    let record = cycle(&world, 0);
    assert_eq!(record["outcome"], "rolled_back");
    assert_eq!(
        record["reason"],
        "checks failed: echo 'FAILED test_parse - 2 failed'; exit 1 exited 1 (the backtest agent said pass)"
    );
    assert_eq!(record["verdict"]["pass"], false);
    assert_eq!(record["verdict"]["decided_by"], "checks");
    assert_eq!(record["verdict"]["agent_verdict"], "pass");
    let checks = record["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["exit"], 0);
    assert_eq!(checks[1]["exit"], 1);
    assert!(checks[1]["duration_ms"].is_u64(), "{record}");
    assert_contains(checks[1]["output_tail"].as_str().unwrap(), "2 failed");
    assert_eq!(record["diff"]["files_changed"], 1);

    let checks_md = std::fs::read_to_string(world.home.join("state/cycles/1/checks.md")).unwrap();
    assert_contains(&checks_md, "lint clean");
    assert_contains(&checks_md, "FAILED test_parse - 2 failed");
    assert_contains(&checks_md, "exited 1");

    let page = page(&world, 1);
    for part in [
        "# Cycle 1 — Add a line to work.txt",
        "**rolled back**: checks failed:",
        "decided by the checks (the backtest agent said pass)",
        "- diff: 1 file changed, 1 insertion(+), 0 deletions(-)",
        "`git log -p main..refs/ralph/attempts/1`",
        "FAILED `echo 'FAILED test_parse - 2 failed'; exit 1` — exited 1 in",
        "## The report agent's write-up",
        "Follow-up: keep the slow path.",
        "## Learnings\n\n- parse is hot",
        "## Patterns\n\n- tests in tests/",
    ] {
        assert_contains(&page, part);
    }
    let facts = page.find("decided by").unwrap();
    let prose = page.find("Follow-up").unwrap();
    let learnings = page.find("## Learnings").unwrap();
    assert!(facts < prose && prose < learnings, "{page}");
    let agent_text =
        std::fs::read_to_string(world.home.join("state/cycles/1/report-agent.md")).unwrap();
    assert_contains(&agent_text, "```json");
}

#[test]
fn the_agents_fail_the_commit_and_an_unchanged_edit_each_say_why() {
    let world = World::new();
    world.reply(
        "backtest",
        Some(1),
        &answer(&verdict(false, "breaks the API")),
    );
    world.reply("code-edit", Some(3), &answer("nothing to do"));
    world.run(&["--max-iterations", "3"]).assert_code(1);

    let rolled_back = cycle(&world, 0);
    assert_eq!(rolled_back["outcome"], "rolled_back");
    assert_eq!(
        rolled_back["reason"],
        "the backtest agent's verdict: fail — breaks the API"
    );
    assert_eq!(rolled_back["verdict"]["decided_by"], "agent");
    assert_eq!(rolled_back["verdict"]["agent_verdict"], "fail");
    assert_eq!(rolled_back["checks"], serde_json::json!([]));

    let committed = cycle(&world, 1);
    assert_eq!(committed["outcome"], "committed");
    assert_eq!(committed["verdict"]["pass"], true);
    assert_eq!(committed["verdict"]["decided_by"], "agent");
    let sha = committed["commit"].as_str().unwrap();
    assert_contains(&page(&world, 2), &format!("`git show {sha}`"));

    let unchanged = cycle(&world, 2);
    assert_eq!(unchanged["outcome"], "no_changes");
    assert_eq!(unchanged["reason"], "code-edit changed nothing");
    assert_eq!(unchanged["verdict"], Value::Null);
    assert_contains(
        &page(&world, 3),
        "**no changes**: code-edit changed nothing",
    );

    // The next idea hears of the rejected attempt and why.
    let idea = world.stdin_of("idea", 2);
    assert_contains(
        &idea,
        "cycle 1 — rolled_back: \"Add a line to work.txt\" — the backtest agent's verdict: fail — breaks the API",
    );
}

#[test]
fn a_failed_cycle_shows_its_reason_in_status_and_report() {
    let world = World::new();
    world.reply(
        "scan",
        None,
        &[
            init_line(),
            error_result_line(Some(400), "the request is malformed"),
        ],
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let record = cycle(&world, 0);
    assert_eq!(record["outcome"], "failed");
    let reason = record["reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("scan failed:"), "{reason}");

    let mut command = world.ralphd();
    command.args(["status", "--home"]).arg(&world.home);
    let text = command.output().stdout;
    assert_contains(&text, "(no title: failed before idea)");
    assert_contains(&text, &format!("why: {reason}"));
    let mut command = world.ralphd();
    command
        .args(["status", "--json", "--home"])
        .arg(&world.home);
    let json: Value = serde_json::from_str(&command.output().stdout).unwrap();
    assert_eq!(json["cycles"][0]["reason"].as_str(), Some(reason.as_str()));
    assert_contains(
        &page(&world, 1),
        "# Cycle 1 — (no title: failed before idea)",
    );
}

#[test]
fn an_interrupted_phase_run_stays_in_the_record_with_its_session() {
    let world = World::new();
    let sleep = format!("sleep 1000.{}7", std::process::id());
    world.script(
        "code-edit",
        None,
        &format!(
            "echo partial > work.txt\nprintf '%s\\n' '{}'\ntouch \"$FAKE_CLAUDE_DIR/started\"\n{sleep}\n",
            init_line().replace("s-1", "s-edit")
        ),
    );
    let mut running = world.start(&["--max-iterations", "1"]);
    assert!(poll_until(Duration::from_secs(30), || world
        .fake
        .join("started")
        .exists()));
    running.signal(libc::SIGTERM);
    let outcome = running
        .wait_for_exit(Duration::from_secs(30))
        .expect("ralphd exits after SIGTERM");
    outcome.assert_code(130);
    let record = cycle(&world, 0);
    assert_eq!(record["outcome"], "interrupted");
    assert_eq!(record["reason"], "interrupted by SIGTERM during code-edit");
    let phases = record["phases"].as_array().unwrap();
    let last = phases.last().unwrap();
    assert_eq!(last["phase"], "code-edit", "{record}");
    assert_eq!(last["status"], "interrupted");
    assert_eq!(last["session_id"], "s-edit");
    assert!(last["duration_ms"].as_u64().unwrap() > 0, "{record}");
    let last_line = outcome.stderr.trim_end().lines().last().unwrap_or_default();
    assert_contains(last_line, "exit 130");
}

#[test]
fn completion_ends_with_a_final_line_and_the_reason() {
    let world = World::new();
    world.reply(
        "scan",
        None,
        &answer("All done.\n<promise>COMPLETE</promise>"),
    );
    let outcome = world.run(&["--max-iterations", "3"]);
    outcome.assert_code(0);
    let record = cycle(&world, 0);
    assert_eq!(record["outcome"], "complete");
    assert_eq!(record["reason"], "the agent declared completion in scan");
    let last_line = outcome.stderr.trim_end().lines().last().unwrap_or_default();
    assert_contains(last_line, "exit 0");
    assert_contains(last_line, "the agent declared completion");
}

/// The last log line of a run that says `exit <code>: …`.
#[track_caller]
fn final_line(outcome: &Outcome, code: i32) -> String {
    let prefix = format!("exit {code}: ");
    outcome
        .stderr
        .lines()
        .rfind(|line| line.contains(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", outcome.stderr))
        .to_owned()
}

#[test]
fn exits_1_2_and_3_end_with_a_line_saying_the_code_and_why() {
    let world = World::new();
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    assert_contains(&final_line(&outcome, 1), "--max-iterations reached");
    let last_line = outcome.stderr.trim_end().lines().last().unwrap_or_default();
    assert_contains(last_line, "exit 1: ");

    let world = World::new();
    world.reply(
        "scan",
        None,
        &[
            init_line(),
            error_result_line(Some(401), "invalid x-api-key"),
        ],
    );
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    let last_line = outcome.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last_line.starts_with("error: authentication failed"),
        "{last_line}"
    );
    let log = std::fs::read_dir(world.home.join("logs"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect::<String>();
    let last_logged = log.trim_end().lines().last().unwrap_or_default();
    assert_contains(last_logged, "exit 2: authentication failed");

    let world = World::new();
    world.config("\n[budget]\nmax_cost_usd = 0.02\n");
    let outcome = world.run(&["--max-iterations", "3"]);
    outcome.assert_code(3);
    assert_contains(&final_line(&outcome, 3), "halted");
}

#[test]
fn the_checkpoint_ref_left_after_a_cycle_says_what_it_holds() {
    let world = World::new();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let message = git(
        &world.repo,
        &["log", "-1", "--format=%B", "refs/ralph/checkpoint"],
    );
    assert!(
        !message.contains("start of the cycle"),
        "the checkpoint misdescribes itself: {message}"
    );
    assert_contains(&message, "after code-edit");
}

#[test]
fn the_warning_about_a_file_the_checks_wrote_names_it() {
    let world = World::new();
    world.config("\n[backtest]\nchecks = [\"echo report > check-report.txt\"]\n");
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    let warning = outcome
        .stderr
        .lines()
        .find(|line| line.contains("the checks or the backtest agent changed"))
        .unwrap_or_else(|| panic!("no warning in:\n{}", outcome.stderr));
    assert_contains(warning, "check-report.txt");
}
