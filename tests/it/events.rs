//! The event stream of docs/design.md §11 as `state/events.jsonl` shows it.

use serde_json::Value;

use crate::support::*;

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect()
}

#[test]
fn a_run_tells_its_story_as_events_and_a_second_run_numbers_on() {
    let world = World::new();
    let tool_use = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Editing the parser."},{"type":"tool_use","id":"t1","name":"Edit","input":{"file_path":"src/parse.rs","old_string":"a","new_string":"b"}}]},"session_id":"s"}"#;
    let mut lines = vec![init_line(), tool_use.to_owned()];
    lines.extend(answer("TITLE: Expand the README"));
    world.reply("idea", None, &lines);
    world.run(&["--max-iterations", "1"]).assert_code(1);

    let first = world.logged_events();
    let kinds = types(&first);
    assert_eq!(kinds.first(), Some(&"daemon_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"daemon_stopped"), "{kinds:?}");
    let position = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
    assert!(position("cycle_started") < position("phase_started"));
    assert!(position("phase_finished") < position("cycle_finished"));
    let edit = first
        .iter()
        .find(|event| event["type"] == "tool_use")
        .expect("the agent's Edit is an event");
    assert_eq!(edit["tool"], "Edit");
    assert_eq!(edit["summary"], "src/parse.rs");
    assert_eq!(edit["phase"], "idea");
    assert_eq!(edit["cycle"], 1);
    assert!(
        first
            .iter()
            .any(|event| event["type"] == "agent_text" && event["text"] == "Editing the parser.")
    );
    let finished = first
        .iter()
        .find(|event| event["type"] == "cycle_finished")
        .unwrap();
    assert_eq!(finished["outcome"], "committed");
    assert_eq!(finished["title"], "Expand the README");
    assert!(
        finished["commit"]
            .as_str()
            .is_some_and(|sha| sha.len() >= 7)
    );
    let stopped = first.last().unwrap();
    assert_eq!(stopped["exit_code"], 1);
    assert_eq!(
        stopped["digest"]["commits"][0]["title"], "Expand the README",
        "daemon_stopped carries the run's digest: {stopped}"
    );
    assert!(stopped["at"].as_str().unwrap().contains('T'));

    let ids: Vec<u64> = first
        .iter()
        .map(|event| event["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let both = world.logged_events();
    let ids: Vec<u64> = both
        .iter()
        .map(|event| event["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "ids go on across a restart, never reused"
    );
    assert_eq!(both[first.len()]["type"], "daemon_started");
}
