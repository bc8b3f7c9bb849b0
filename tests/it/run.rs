use crate::support::*;

#[test]
fn five_phases_run_in_order_with_chained_outputs_and_a_commit() {
    let world = World::new();
    world.reply(
        "scan",
        None,
        &answer("SCAN-FINDING-42: the README is short"),
    );
    world.reply(
        "idea",
        None,
        &answer("TITLE: Expand the README\n\nBecause SCAN-FINDING-42."),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);

    let log = world.calls_log();
    let order: Vec<&str> = log
        .lines()
        .filter_map(|line| line.strip_prefix("call phase="))
        .map(|rest| rest.split(' ').next().unwrap())
        .collect();
    assert_eq!(order, ["scan", "idea", "code-edit", "backtest", "report"]);
    assert!(
        world.stdin_of("idea", 1).contains("SCAN-FINDING-42"),
        "idea sees scan's output"
    );
    assert!(
        world.stdin_of("code-edit", 1).contains("Expand the README"),
        "code-edit sees the idea"
    );
    assert!(
        world.stdin_of("backtest", 1).contains("work.txt"),
        "backtest sees the diff summary"
    );

    assert_eq!(world.git_log()[0], "ralphd: cycle 1: Expand the README");
    assert_eq!(world.read_repo("work.txt").unwrap(), "cycle 1\n");
    let progress = world.progress();
    let cycle = &progress["cycles"][0];
    assert_eq!(cycle["outcome"], "committed");
    assert_eq!(cycle["phases_completed"].as_array().unwrap().len(), 5);
    assert_eq!(cycle["phases"][0]["session_id"], "s-1");
    assert!(
        (progress["total_cost_usd"].as_f64().unwrap() - 0.07).abs() < 1e-9,
        "{progress}"
    );
    for phase in ["scan", "idea", "code-edit", "backtest", "report"] {
        assert!(
            world
                .home
                .join(format!("state/cycles/1/{phase}.jsonl"))
                .exists(),
            "{phase} transcript"
        );
        assert!(
            world
                .home
                .join(format!(
                    "state/cycles/1/{}.md",
                    if phase == "report" {
                        "report-agent"
                    } else {
                        phase
                    }
                ))
                .exists(),
            "{phase} output"
        );
    }
    assert!(
        std::fs::read_to_string(world.home.join("state/cycles/1/report.md"))
            .unwrap()
            .contains("committed")
    );
}

#[test]
fn environment_and_flags_reach_the_agent() {
    let world = World::new();
    let mut command = world.ralphd();
    command
        .env("CLAUDECODE", "1")
        .args(["run", "--max-iterations", "1", "--repo"]);
    command
        .arg(&world.repo)
        .arg("--home")
        .arg(&world.home)
        .output()
        .assert_code(1);
    let env = std::fs::read_to_string(world.fake.join("env.code-edit.1")).unwrap();
    assert!(env.contains("RALPH_PHASE=code-edit"));
    assert!(env.contains("RALPH_CYCLE=1"));
    assert!(env.contains(&format!("RALPH_REPO={}", world.repo.display())));
    assert!(!env.contains("CLAUDECODE="));
    let log = world.calls_log();
    assert!(log.contains("arg: --output-format\n  arg: stream-json\n  arg: --verbose"));
    assert!(log.contains("arg: acceptEdits"));
    assert!(!log.contains("dangerously"));
}

#[test]
fn completion_marker_on_its_own_line_ends_the_run_with_exit_0() {
    let world = World::new();
    world.reply(
        "report",
        None,
        &answer(&format!("All done.\n  {MARKER}  \n")),
    );
    world.run(&["--max-iterations", "5"]).assert_code(0);
    assert_eq!(world.outcomes(), ["committed"]);
}

#[test]
fn completion_in_idea_skips_code_edit_and_backtest_but_reports() {
    let world = World::new();
    world.reply(
        "idea",
        None,
        &answer(&format!("Nothing left to do.\n{MARKER}")),
    );
    world.run(&["--max-iterations", "5"]).assert_code(0);
    assert_eq!(world.calls("code-edit"), 0);
    assert_eq!(world.calls("backtest"), 0);
    assert_eq!(world.calls("report"), 1);
    assert_eq!(world.outcomes(), ["complete"]);
}

#[test]
fn completion_in_code_edit_still_verifies_and_commits_the_edit() {
    let world = World::new();
    world.script("code-edit", None, "echo done > work.txt\n");
    world.reply("code-edit", None, &answer(&format!("Edited.\n{MARKER}")));
    world.run(&["--max-iterations", "5"]).assert_code(0);
    assert_eq!(world.calls("backtest"), 1, "the edit is verified");
    assert_eq!(world.outcomes(), ["committed"]);
    assert_eq!(world.git_status(), "");
    assert_eq!(world.read_repo("work.txt").unwrap(), "done\n");
}

#[test]
fn a_failed_report_leaves_a_committed_cycle_committed() {
    let world = World::new();
    world.config("max_attempts = 1\n");
    world.reply(
        "report",
        None,
        &[
            init_line(),
            error_result_line(Some(500), "API Error: 500 boom"),
        ],
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    assert_eq!(
        world.git_log()[0],
        "ralphd: cycle 1: Add a line to work.txt"
    );
    assert!(
        world.progress()["cycles"][0]["error"]
            .as_str()
            .unwrap()
            .contains("report failed")
    );
}

#[test]
fn marker_quoted_mid_sentence_or_in_a_tool_result_is_not_completion() {
    let world = World::new();
    let tool_result = serde_json::json!({"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": format!("1\tprint {MARKER} when done")}]}}).to_string();
    world.reply(
        "scan",
        None,
        &[init_line(), tool_result, result_line("scanned")],
    );
    world.reply(
        "report",
        None,
        &answer(&format!("I will print {MARKER} later.")),
    );
    world.run(&["--max-iterations", "2"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed", "committed"]);
}

#[test]
fn completion_is_refused_while_prd_has_open_stories() {
    let world = World::new();
    std::fs::create_dir_all(world.home.join("state")).unwrap();
    std::fs::write(
        world.home.join("state/prd.json"),
        r#"{"project":"p","userStories":[{"id":"US-7","title":"t","priority":1,"passes":false}]}"#,
    )
    .unwrap();
    world.reply("report", None, &answer(&format!("done\n{MARKER}")));
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    assert!(
        outcome.stderr.contains("completion refused") && outcome.stderr.contains("US-7"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_passing_story_is_marked_only_when_the_cycle_is_committed() {
    let world = World::new();
    std::fs::create_dir_all(world.home.join("state")).unwrap();
    let prd = r#"{"project":"p","userStories":[{"id":"US-1","title":"a","priority":1,"passes":false,"notes":"n"}]}"#;
    std::fs::write(world.home.join("state/prd.json"), prd).unwrap();
    let report = "ok\n```json\n{\"summary\":\"s\",\"learnings\":[],\"patterns\":[],\"story\":{\"id\":\"US-1\",\"passes\":true}}\n```";
    world.reply("report", None, &answer(report));
    world.reply("backtest", Some(1), &answer(&verdict(false, "broken")));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(
        read_json(&world.home.join("state/prd.json"))["userStories"][0]["passes"],
        false
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let saved = read_json(&world.home.join("state/prd.json"));
    assert_eq!(saved["userStories"][0]["passes"], true);
    assert_eq!(saved["userStories"][0]["notes"], "n");
}

#[test]
fn stories_the_user_adds_during_a_run_survive_marking() {
    let world = World::new();
    std::fs::create_dir_all(world.home.join("state")).unwrap();
    let prd_path = world.home.join("state/prd.json");
    let prd =
        r#"{"project":"p","userStories":[{"id":"US-1","title":"a","priority":1,"passes":false}]}"#;
    std::fs::write(&prd_path, prd).unwrap();
    // The user edits prd.json while the agent works on US-1.
    let edited = r#"{"project":"p","userStories":[{"id":"US-1","title":"a","priority":1,"passes":false},{"id":"US-2","title":"new","priority":2,"passes":false}]}"#;
    world.script(
        "code-edit",
        None,
        &format!("echo '{edited}' > '{}'\n", prd_path.display()),
    );
    let report = "ok\n```json\n{\"summary\":\"s\",\"learnings\":[],\"patterns\":[],\"story\":{\"id\":\"US-1\",\"passes\":true}}\n```";
    world.reply("report", None, &answer(report));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let saved = read_json(&prd_path);
    let stories = saved["userStories"].as_array().unwrap();
    assert_eq!(stories.len(), 2, "{saved}");
    assert_eq!(stories[0]["passes"], true);
    assert_eq!(stories[1]["id"], "US-2");
    let keys: Vec<&String> = stories[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["id", "title", "priority", "passes"],
        "the user's key order is kept"
    );
}

#[test]
fn is_error_with_exit_0_and_a_missing_result_line_are_failures() {
    let world = World::new();
    world.config("max_attempts = 1\n");
    world.reply(
        "scan",
        Some(1),
        &[
            init_line(),
            error_result_line(Some(400), "API Error: 400 bad request"),
        ],
    );
    world.reply("scan", Some(2), &[init_line()]);
    world.run(&["--max-iterations", "2"]).assert_code(1);
    assert_eq!(world.outcomes(), ["failed", "failed"]);
    let progress = world.progress();
    let errors: Vec<&str> = progress["cycles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["error"].as_str().unwrap())
        .collect();
    assert!(errors[0].contains("400"), "{errors:?}");
    assert!(errors[1].contains("result"), "{errors:?}");
}

#[test]
fn malformed_and_huge_lines_are_skipped_and_the_result_still_counts() {
    let world = World::new();
    world.script(
        "scan",
        None,
        "printf 'not json at all\\n'; head -c 50000000 /dev/zero | tr '\\0' x; echo\n",
    );
    world.reply("scan", None, &answer("scan after noise"));
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
    assert!(
        outcome.stderr.contains("not stream-json"),
        "{}",
        outcome.stderr
    );
    // The huge line is counted in the transcript, not kept: memory and disk
    // stay bounded, and every kept line went through redaction.
    let transcript = std::fs::read_to_string(world.home.join("state/cycles/1/scan.jsonl")).unwrap();
    let lines: Vec<&str> = transcript.lines().collect();
    assert_eq!(lines[0], "not json at all");
    assert_eq!(
        lines[1],
        r#"{"type":"ralphd_line_too_long","bytes":50000001}"#
    );
    assert!(transcript.len() < 10_000, "{transcript:.2000}");
}

#[test]
fn unknown_event_types_are_tolerated() {
    let world = World::new();
    let unknown = serde_json::json!({"type": "future_event", "x": 1}).to_string();
    world.reply("scan", None, &[init_line(), unknown, result_line("ok")]);
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
}

#[test]
fn offline_agent_runs_the_loop_through_the_run_command() {
    let world = World::new();
    world.config("kind = \"offline\"\n");
    world.run(&["--max-iterations", "5"]).assert_code(0);
    assert_eq!(world.outcomes(), ["committed", "committed"]);
    assert_eq!(world.calls("scan"), 0, "the fake CLI is not used");
}

#[test]
fn rejected_credentials_stop_the_run_with_exit_2_instead_of_retrying_all_night() {
    let world = World::new();
    world.reply(
        "scan",
        None,
        &[
            init_line(),
            error_result_line(Some(401), "Invalid API key · Fix external API key"),
        ],
    );
    let outcome = world.run(&[]);
    outcome.assert_code(2);
    assert_eq!(world.calls("scan"), 1, "no retry, no next cycle");
    assert_eq!(world.outcomes(), ["failed"]);
    let last = outcome.stderr.trim().lines().last().unwrap();
    assert!(last.starts_with("error: authentication failed"), "{last}");
    assert!(
        last.contains("ANTHROPIC_API_KEY") || last.contains("login"),
        "says how to fix it: {last}"
    );
}
