//! The real MCP client: the pinned `claude` CLI, configured with the file
//! `ralphd mcp --print-config mcp-json` prints, runs a scripted model (the
//! [`FakeApi`]) that queues a task through `mcp__ralphd__add_task` and then
//! looks at the run through `mcp__ralphd__status`. Compiled only with
//! `RALPHD_REAL_CLAUDE` (build.rs), like `real_cli.rs`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::fake_api::{Block, FakeApi, RecordedRequest, Script, Step};
use crate::real_cli::{CliEnv, RealClaude};
use crate::support::{World, read_json};

/// The file for `--mcp-config` that starts `ralphd mcp` on `home`, as
/// `ralphd mcp --print-config mcp-json` prints it.
fn mcp_config_file(world: &World, dir: &Path) -> PathBuf {
    let printed = world
        .ralphd()
        .args(["mcp", "--print-config", "mcp-json", "--home"])
        .arg(&world.home)
        .output();
    printed.assert_code(0);
    let path = dir.join("mcp.json");
    std::fs::write(&path, &printed.stdout).unwrap();
    path
}

/// The one tool_result of a request, as JSON parsed from its text.
fn tool_result_json(request: &RecordedRequest) -> Value {
    assert_eq!(request.tool_results.len(), 1, "{:?}", request.tool_results);
    let result = &request.tool_results[0];
    assert!(!result.is_error, "{result:?}");
    serde_json::from_str(&result.content)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", result.content))
}

/// "Queue these three fixes for tonight": the scripted model asks for three
/// `add_task` calls in one message, then for `status`.
#[test]
fn real_claude_queues_three_fixes_and_reads_the_status_through_ralphd_mcp() {
    let claude = RealClaude::from_env();
    let world = World::without_repo();
    let fixes = [
        json!({"title": "Fix the flaky login test",
            "description": "tests/login.rs fails one run in ten",
            "priority": 1,
            "criteria": ["cargo test login passes 20 times in a row"]}),
        json!({"title": "Stop the 500 on an empty search", "priority": 2}),
        json!({"title": "Remove the unused config loader"}),
    ];
    let mut queue = vec![Block::Text(vec!["Queuing the three fixes.".to_owned()])];
    queue.extend(fixes.iter().map(|fix| Block::ToolUse {
        name: "mcp__ralphd__add_task".to_owned(),
        input: fix.clone(),
    }));
    let api = FakeApi::start(Script::per_session([
        Step::reply(queue),
        Step::tool_use("mcp__ralphd__status", json!({})),
        Step::text("Queued: the daemon picks them up at its next cycle."),
    ]));
    let sandbox = tempfile::tempdir().unwrap();
    let work = sandbox.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let config = mcp_config_file(&world, sandbox.path());
    let env = CliEnv::new(&api, sandbox.path());
    let debug_log = sandbox.path().join("debug.log");

    let run = claude.run(
        &work,
        &env,
        &[
            "--mcp-config",
            config.to_str().unwrap(),
            "--strict-mcp-config",
            "--allowedTools",
            "mcp__ralphd__add_task,mcp__ralphd__status",
            "--debug-file",
            debug_log.to_str().unwrap(),
        ],
        "queue these three fixes for tonight",
    );

    assert!(run.status.success(), "{run}");
    assert_eq!(
        run.result_text(),
        "Queued: the daemon picks them up at its next cycle.",
        "{run}"
    );
    assert_eq!(run.result()["permission_denials"], json!([]), "{run}");
    let init = &run.events_of("system", Some("init"))[0];
    assert_eq!(
        init["mcp_servers"],
        json!([{"name": "ralphd", "status": "connected"}]),
        "{run}"
    );

    // The three tasks are in prd.json, as the command line shows them.
    let prd = read_json(&world.home.join("state/prd.json"));
    let stories = prd["userStories"].as_array().expect("userStories");
    let mut titles: Vec<&str> = stories
        .iter()
        .map(|s| s["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    assert_eq!(
        titles,
        [
            "Fix the flaky login test",
            "Remove the unused config loader",
            "Stop the 500 on an empty search"
        ],
        "{prd}"
    );
    let login = stories
        .iter()
        .find(|story| story["title"] == "Fix the flaky login test")
        .unwrap();
    assert_eq!(login["description"], "tests/login.rs fails one run in ten");
    assert_eq!(login["priority"], 1);
    assert_eq!(
        login["acceptanceCriteria"],
        json!(["cargo test login passes 20 times in a row"])
    );
    assert!(
        stories.iter().all(|story| story["passes"] == false),
        "{prd}"
    );
    let listed = world
        .ralphd()
        .args(["task", "list", "--json", "--home"])
        .arg(&world.home)
        .output();
    listed.assert_code(0);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();

    // The tools the CLI offered carry ralphd's schemas and descriptions.
    let requests = api.requests();
    assert_eq!(requests.len(), 3, "{run}");
    let add_task = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tool| tool["name"] == "mcp__ralphd__add_task")
        .unwrap_or_else(|| panic!("no mcp__ralphd__add_task in {:?}", requests[0].tools));
    assert_eq!(add_task["input_schema"]["required"], json!(["title"]));
    assert!(
        add_task["description"]
            .as_str()
            .is_some_and(|text| text.contains("next cycle")),
        "{add_task}"
    );

    // What the CLI passed back to the model is what ralphd answered: each
    // added task as `ralphd task list --json` shows it, and the status as
    // `ralphd status --json` prints it.
    let added = &requests[1].tool_results;
    assert_eq!(added.len(), 3, "{added:?}");
    let mut answered: Vec<Value> = added
        .iter()
        .map(|result| {
            assert!(!result.is_error, "{result:?}");
            serde_json::from_str(&result.content)
                .unwrap_or_else(|error| panic!("not JSON ({error}): {}", result.content))
        })
        .collect();
    // The CLI may run the three calls in any order: compare by id.
    let by_id = |task: &Value| task["id"].as_str().unwrap_or_default().to_owned();
    answered.sort_by_key(by_id);
    let mut listed = listed.as_array().expect("a list").clone();
    listed.sort_by_key(by_id);
    assert_eq!(answered, listed);
    let status = tool_result_json(&requests[2]);
    let printed = world
        .ralphd()
        .args(["status", "--json", "--home"])
        .arg(&world.home)
        .output();
    printed.assert_code(0);
    let expected: Value = serde_json::from_str(&printed.stdout).unwrap();
    assert_eq!(status, expected);

    // At its exit the CLI sends SIGINT, then SIGTERM and SIGKILL to a server
    // that is still there 100 ms later (the wording is CLI 2.1.197's).
    let debug = std::fs::read_to_string(&debug_log).unwrap();
    assert!(
        debug.contains(r#"MCP server "ralphd": Sending SIGINT"#),
        "{debug}"
    );
    assert!(!debug.contains("SIGINT failed"), "{debug}");
}

/// Copies `contrib/claude/` (the skill and the `/ralph` command) into the
/// CLI's configuration directory, where Claude Code looks for a user's own.
fn install_contrib(config_dir: &Path) {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/claude");
    for (from, to) in [
        ("skills/ralphd/SKILL.md", "skills/ralphd/SKILL.md"),
        ("commands/ralph.md", "commands/ralph.md"),
    ] {
        let target = config_dir.join(to);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(contrib.join(from), target).unwrap();
    }
}

/// `/ralph queue …` with the contrib files installed: the CLI loads the skill
/// and the command, puts the request where the command says `$ARGUMENTS`,
/// and the command's `allowed-tools` let the model queue the task without a
/// permission prompt (no `--allowedTools` here).
#[test]
fn real_claude_runs_the_ralph_command_and_loads_the_skill_from_contrib() {
    let claude = RealClaude::from_env();
    let world = World::without_repo();
    let api = FakeApi::start(Script::per_session([
        Step::tool_use(
            "mcp__ralphd__add_task",
            json!({"title": "Fix the login page", "criteria": ["GET /login returns 200"]}),
        ),
        Step::text("Queued T-1."),
    ]));
    let sandbox = tempfile::tempdir().unwrap();
    let work = sandbox.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let config = mcp_config_file(&world, sandbox.path());
    let env = CliEnv::new(&api, sandbox.path());
    install_contrib(&env.config_dir);

    let run = claude.run(
        &work,
        &env,
        &[
            "--mcp-config",
            config.to_str().unwrap(),
            "--strict-mcp-config",
        ],
        "/ralph queue Fix the login page",
    );

    assert!(run.status.success(), "{run}");
    assert_eq!(run.result_text(), "Queued T-1.", "{run}");
    assert_eq!(run.result()["permission_denials"], json!([]), "{run}");
    let init = &run.events_of("system", Some("init"))[0];
    let named = |key: &str, name: &str| {
        init[key]
            .as_array()
            .is_some_and(|names| names.iter().any(|found| found == name))
    };
    assert!(named("skills", "ralphd"), "{}", init["skills"]);
    assert!(
        named("slash_commands", "ralph"),
        "{}",
        init["slash_commands"]
    );

    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{run}");
    let prompt = &requests[0].prompt;
    assert!(
        prompt.contains("for this request: queue Fix the login page"),
        "{prompt}"
    );
    assert!(!prompt.contains("$ARGUMENTS"), "{prompt}");
    assert!(
        !requests[1].tool_results[0].is_error,
        "{:?}",
        requests[1].tool_results
    );
    let prd = read_json(&world.home.join("state/prd.json"));
    assert_eq!(
        prd["userStories"][0]["title"], "Fix the login page",
        "{prd}"
    );
}
