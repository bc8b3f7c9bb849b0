//! `ralphd task`: each command through the binary, its errors (exit 2, one
//! line, nothing written), idempotent imports, and edits made while a daemon
//! runs cycles: the daemon sees new tasks at its next cycle, and no edit of
//! either side is lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Outcome, World, answer, poll_until, read_json, verdict};

/// `ralphd task <args> --home <home>`.
fn task(world: &World, args: &[&str]) -> Outcome {
    let mut command = world.ralphd();
    command
        .arg("task")
        .args(args)
        .arg("--home")
        .arg(&world.home);
    command.output()
}

/// `ralphd task <args> --home <home> --json`, parsed; the command must succeed.
fn task_json(world: &World, args: &[&str]) -> Value {
    let outcome = task(world, &[args, &["--json"][..]].concat());
    outcome.assert_code(0);
    serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", outcome.stdout))
}

fn prd(world: &World) -> Value {
    read_json(&world.home.join("state/prd.json"))
}

/// The exit is 2 with a one-line message containing every needle.
#[track_caller]
fn assert_refused(outcome: &Outcome, needles: &[&str]) {
    outcome.assert_code(2);
    let message = outcome.stderr.trim_end();
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    for needle in needles {
        assert!(message.contains(needle), "missing {needle:?} in: {message}");
    }
}

#[test]
fn add_list_show_edit_done_reopen_rm_through_the_binary() {
    let world = World::without_repo();
    let added = task(
        &world,
        &[
            "add",
            "Fix the login page",
            "--description",
            "It answers 500.",
            "--priority",
            "2",
            "--criteria",
            "returns 200",
            "--criteria",
            "a test covers it",
        ],
    );
    added.assert_code(0);
    assert_eq!(added.stdout, "added T-1: Fix the login page\n");
    let second = task_json(&world, &["add", "Speed up the build", "--priority", "1"]);
    assert_eq!(second["id"], "T-2");
    assert_eq!(second["passes"], false);
    let custom = task_json(&world, &["add", "Write docs", "--id", "DOC-1"]);
    assert_eq!(custom["id"], "DOC-1");
    assert_eq!(custom["priority"], 3, "queued after the others");

    let table = task(&world, &["list"]);
    table.assert_code(0);
    assert_eq!(
        table.stdout,
        "ID     STATUS  PRIORITY  TITLE\n\
         T-2    open           1  Speed up the build\n\
         T-1    open           2  Fix the login page\n\
         DOC-1  open           3  Write docs\n"
    );

    let shown = task(&world, &["show", "T-1"]);
    shown.assert_code(0);
    for needle in [
        "T-1  Fix the login page",
        "It answers 500.",
        "  - returns 200",
    ] {
        assert!(shown.stdout.contains(needle), "{needle}: {}", shown.stdout);
    }
    let json = task_json(&world, &["show", "t-1"]);
    assert_eq!(json["acceptanceCriteria"][1], "a test covers it");

    let edited = task_json(
        &world,
        &["edit", "T-1", "--title", "Fix login", "--priority", "0"],
    );
    assert_eq!(edited["title"], "Fix login");
    assert_eq!(edited["description"], "It answers 500.");

    task(&world, &["done", "T-2"]).assert_code(0);
    let open = task_json(&world, &["list", "--open"]);
    let open_ids: Vec<&str> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_str().unwrap())
        .collect();
    assert_eq!(open_ids, ["T-1", "DOC-1"]);
    let done = task(&world, &["list", "--done"]);
    assert!(done.stdout.contains("T-2  done"), "{}", done.stdout);
    task(&world, &["reopen", "T-2"]).assert_code(0);
    assert_eq!(task_json(&world, &["show", "T-2"])["passes"], false);

    let removed = task(&world, &["rm", "T-2"]);
    removed.assert_code(0);
    assert_eq!(removed.stdout, "removed T-2: Speed up the build\n");
    assert_eq!(
        task_json(&world, &["add", "Next"])["id"],
        "T-3",
        "T-2 is not reused"
    );

    // The file stays in the seed format the daemon reads.
    let saved = prd(&world);
    let story = &saved["userStories"][0];
    for key in [
        "id",
        "title",
        "description",
        "acceptanceCriteria",
        "priority",
        "passes",
        "notes",
    ] {
        assert!(story.get(key).is_some(), "missing {key}: {story}");
    }
}

#[test]
fn bad_input_exits_2_with_one_line_and_changes_nothing() {
    let world = World::without_repo();
    task(&world, &["add", "First", "--id", "A-1"]).assert_code(0);
    let before = std::fs::read(world.home.join("state/prd.json")).unwrap();

    assert_refused(&task(&world, &["add", "  "]), &["title is empty"]);
    assert_refused(
        &task(&world, &["add", "x", "--priority", "-1"]),
        &["-1", "0", "999"],
    );
    assert_refused(
        &task(&world, &["add", "x", "--priority", "1000"]),
        &["1000", "999"],
    );
    assert_refused(
        &task(&world, &["add", "x", "--id", "a-1"]),
        &["\"a-1\" already exists"],
    );
    for command in ["show", "done", "reopen", "rm"] {
        assert_refused(
            &task(&world, &[command, "T-404"]),
            &["\"T-404\"", "ralphd task list"],
        );
    }
    assert_refused(
        &task(&world, &["edit", "T-404", "--title", "y"]),
        &["\"T-404\"", "ralphd task list"],
    );
    assert_refused(&task(&world, &["edit", "A-1"]), &["nothing to change"]);
    assert_eq!(
        std::fs::read(world.home.join("state/prd.json")).unwrap(),
        before,
        "no refused command wrote prd.json"
    );
    // Usage errors are clap's, exit 2 too.
    task(&world, &["list", "--open", "--done"]).assert_code(2);
    task(&world, &["add", "x", "--priority", "high"]).assert_code(2);

    let mut missing = world.ralphd();
    missing
        .args(["task", "list", "--home"])
        .arg(world.root.join("nowhere"));
    assert_refused(&missing.output(), &["nowhere", "does not exist"]);

    // A corrupt prd.json is named and left exactly as it was.
    let corrupt = "{\"userStories\": [ oops";
    std::fs::write(world.home.join("state/prd.json"), corrupt).unwrap();
    for args in [&["add", "x"][..], &["list"], &["done", "A-1"]] {
        assert_refused(&task(&world, args), &["prd.json", "corrupt"]);
    }
    assert_eq!(
        std::fs::read_to_string(world.home.join("state/prd.json")).unwrap(),
        corrupt
    );
}

#[test]
fn importing_a_checklist_or_gh_issues_twice_adds_each_item_once() {
    let world = World::without_repo();
    let checklist = world.root.join("TODO.md");
    std::fs::write(
        &checklist,
        "# Tonight\n\n- [ ] Fix the login page\n  - returns 200\n  - [ ] logs the cause\n- [x] Bump the version\n",
    )
    .unwrap();
    let issues = world.root.join("issues.json");
    std::fs::write(
        &issues,
        r#"[{"body":"Builds take 4 minutes.","labels":[{"id":"x","name":"P1","description":"","color":"fff"}],"number":12,"title":"Slow build"},
            {"body":"","labels":[{"id":"y","name":"priority:3","description":"","color":"fff"}],"number":15,"title":"Typo in help"}]"#,
    )
    .unwrap();
    let checklist_arg = checklist.to_str().unwrap();
    let issues_arg = issues.to_str().unwrap();

    let first = task(&world, &["import", checklist_arg]);
    first.assert_code(0);
    assert!(
        first
            .stdout
            .contains("(markdown): 2 added, 0 marked done, 0 already there"),
        "{}",
        first.stdout
    );
    let report = task_json(&world, &["import", issues_arg]);
    assert_eq!(report["format"], "github");
    assert_eq!(report["added"].as_array().unwrap().len(), 2);
    for file in [checklist_arg, issues_arg] {
        let again = task_json(&world, &["import", file]);
        assert_eq!(again["added"], serde_json::json!([]), "{file}");
    }

    let tasks = task_json(&world, &["list"]);
    let by_source: BTreeMap<&str, &Value> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|task| (task["source"].as_str().unwrap(), task))
        .collect();
    assert_eq!(by_source.len(), 4, "{tasks}");
    assert_eq!(tasks.as_array().unwrap().len(), 4, "no duplicate: {tasks}");
    let login = by_source["md:fix the login page"];
    assert_eq!(
        login["acceptanceCriteria"],
        serde_json::json!(["returns 200", "logs the cause"])
    );
    assert_eq!(by_source["md:bump the version"]["passes"], true);
    let build = by_source["gh#12"];
    assert_eq!(build["description"], "Builds take 4 minutes.");
    assert_eq!(build["priority"], 1);
    assert_eq!(by_source["gh#15"]["priority"], 3);

    let notes = world.root.join("notes.txt");
    std::fs::write(&notes, "just prose, no checklist\n").unwrap();
    assert_refused(
        &task(&world, &["import", notes.to_str().unwrap()]),
        &["notes.txt", "Markdown checklist", "gh issue list"],
    );
}

/// The path of the built binary, for the fake agent's scripts.
fn ralphd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ralphd")
}

#[test]
fn a_task_added_while_the_daemon_runs_is_in_its_next_cycles_prompt() {
    let world = World::new();
    // During cycle 1 the user (here: the fake agent's script) queues a task.
    world.script(
        "code-edit",
        Some(1),
        &format!(
            "echo one >> work.txt; '{}' task add 'Queued mid-run' --priority 1 --home '{}' >/dev/null\n",
            ralphd_bin(),
            world.home.display()
        ),
    );
    world.run(&["--max-iterations", "2"]).assert_code(1);
    assert!(
        !world.stdin_of("idea", 1).contains("Queued mid-run"),
        "not there before it was added"
    );
    let idea = world.stdin_of("idea", 2);
    assert!(
        idea.contains("T-1") && idea.contains("Queued mid-run"),
        "{idea}"
    );
}

/// A report that names `story` as done.
fn report_naming(story: &str) -> String {
    format!(
        "ok\n```json\n{{\"summary\":\"s\",\"learnings\":[],\"patterns\":[],\"story\":{{\"id\":\"{story}\",\"passes\":true}}}}\n```"
    )
}

/// What the user's side expects of one of its tasks at the end.
#[derive(Debug, PartialEq)]
struct Expected {
    title: String,
    passes: bool,
}

/// The race of issue 16: a daemon runs cycles whose report marks a story
/// done (every fourth cycle is rolled back, so its story must stay open)
/// while the test adds, edits, finishes and removes its own tasks through
/// `ralphd task` as fast as it can. At the end every edit of both sides is
/// in prd.json.
#[test]
fn a_daemon_marking_stories_and_a_user_editing_tasks_lose_nothing() {
    const CYCLES: u32 = 12;
    let world = World::new();
    for cycle in 1..=CYCLES {
        let story = format!("US-{cycle}");
        task(&world, &["add", &format!("story {cycle}"), "--id", &story]).assert_code(0);
        world.reply("report", Some(cycle), &answer(&report_naming(&story)));
        if cycle.is_multiple_of(4) {
            world.reply("backtest", Some(cycle), &answer(&verdict(false, "broken")));
        }
    }
    let mut daemon = world.start(&["--max-iterations", &CYCLES.to_string()]);

    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let mut removed: Vec<String> = Vec::new();
    let mut edits_while_running = 0;
    let mut step = 0u32;
    let mut exit = None;
    let finished = poll_until(Duration::from_secs(180), || {
        step += 1;
        let title = format!("user task {step}");
        let added = task_json(&world, &["add", &title]);
        let id = added["id"].as_str().unwrap().to_owned();
        expected.insert(
            id,
            Expected {
                title,
                passes: false,
            },
        );
        let ids: Vec<String> = expected.keys().cloned().collect();
        let pick = |n: u32| ids[(n as usize) % ids.len()].clone();
        let renamed = pick(step * 7);
        let title = format!("edited in step {step}");
        task(&world, &["edit", &renamed, "--title", &title]).assert_code(0);
        expected.get_mut(&renamed).unwrap().title = title;
        if step.is_multiple_of(3) {
            let finished = pick(step * 5);
            task(&world, &["done", &finished]).assert_code(0);
            expected.get_mut(&finished).unwrap().passes = true;
        }
        if step.is_multiple_of(4) {
            let gone = pick(step * 3);
            task(&world, &["rm", &gone]).assert_code(0);
            expected.remove(&gone);
            removed.push(gone);
        }
        exit = daemon.wait_for_exit(Duration::ZERO);
        if exit.is_none() {
            edits_while_running += 1;
        }
        exit.is_some()
    });
    assert!(finished, "the daemon did not finish its {CYCLES} cycles");
    exit.unwrap().assert_code(1);
    assert!(
        edits_while_running >= 3,
        "the edits did not overlap the run ({edits_while_running})"
    );

    let outcomes = world.outcomes();
    let prd = prd(&world);
    let stories = prd["userStories"].as_array().unwrap();
    let find = |id: &str| stories.iter().find(|story| story["id"] == id);
    for cycle in 1..=CYCLES {
        let story = find(&format!("US-{cycle}")).expect("the daemon's story is kept");
        let committed = outcomes[cycle as usize - 1] == "committed";
        assert_eq!(
            committed,
            !cycle.is_multiple_of(4),
            "cycle {cycle}: {outcomes:?}"
        );
        assert_eq!(
            story["passes"], committed,
            "US-{cycle} is marked done exactly when its cycle was committed"
        );
    }
    let users: BTreeMap<String, Expected> = stories
        .iter()
        .filter(|story| !story["id"].as_str().unwrap().starts_with("US-"))
        .map(|story| {
            (
                story["id"].as_str().unwrap().to_owned(),
                Expected {
                    title: story["title"].as_str().unwrap().to_owned(),
                    passes: story["passes"].as_bool().unwrap(),
                },
            )
        })
        .collect();
    assert_eq!(users, expected, "every add, edit, done and rm of the user");
    for id in &removed {
        assert!(find(id).is_none(), "{id} was removed");
    }
    assert_lock_is_free(&world.home);
}

/// No process holds the edit lock once everyone is done.
fn assert_lock_is_free(home: &Path) {
    let lock = std::fs::File::open(home.join("state/prd.lock")).unwrap();
    lock.try_lock().expect("the edit lock is free");
}
