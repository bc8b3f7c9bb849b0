//! The morning digest (docs/design.md §12): `ralphd report` says what landed,
//! what was tried and why it was rejected (with the `git` command to look),
//! what it cost and why the run stopped; every run leaves its digest in
//! `state/digests/`.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

#[track_caller]
fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "{part:?} not in:\n{text}");
}

fn report(world: &World, extra: &[&str]) -> Outcome {
    let mut command = world.ralphd();
    command
        .args(["report", "--home"])
        .arg(&world.home)
        .args(extra);
    command.output()
}

#[test]
fn after_a_run_the_report_names_the_commit_the_attempt_and_why_it_stopped() {
    let world = World::new();
    // Cycle 1: the agent says fail → a saved attempt; cycle 2: committed.
    world.reply(
        "backtest",
        Some(1),
        &answer(&verdict(false, "breaks the API")),
    );
    world.run(&["--max-iterations", "2"]).assert_code(1);
    let progress = world.progress();
    let sha = progress["cycles"][1]["commit"].as_str().unwrap().to_owned();
    let attempt = progress["cycles"][0]["attempt_ref"]
        .as_str()
        .unwrap()
        .to_owned();

    let text = report(&world, &[]).assert_code(0).stdout.clone();
    for part in [
        "reached --max-iterations",
        "exit 1",
        "cycles: 2",
        "1 committed",
        "1 rolled back",
        &sha[..7],
        "Add a line to work.txt",
        "1 file changed, 1 insertion(+)",
        &attempt,
        "the backtest agent's verdict: fail — breaks the API",
        &format!("git log -p main..{attempt}"),
        "work.txt grows",
    ] {
        assert_contains(&text, part);
    }

    let json: Value =
        serde_json::from_str(&report(&world, &["--format", "json"]).assert_code(0).stdout)
            .expect("--format json prints one JSON document");
    assert_eq!(json["run"]["exit_code"], 1);
    assert_eq!(json["commits"][0]["commit"], sha.as_str());
    assert_eq!(json["attempts"][0]["ref"], attempt.as_str());
    assert_eq!(json["cycles"]["total"], 2);

    // The run left its digest beside the state, as Markdown and JSON.
    let digests: Vec<String> = std::fs::read_dir(world.home.join("state/digests"))
        .expect("state/digests exists after a run")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let markdown = digests
        .iter()
        .find(|name| name.ends_with(".md"))
        .unwrap_or_else(|| panic!("no .md digest in {digests:?}"));
    assert!(
        digests.contains(&markdown.replace(".md", ".json")),
        "{digests:?}"
    );
    let written = std::fs::read_to_string(world.home.join("state/digests").join(markdown)).unwrap();
    assert_contains(&written, &sha[..7]);
    assert_contains(&written, &attempt);

    // A second run: the report (no range) covers only the last run, and
    // --cycles reaches back to the first. Records keep whole seconds, so
    // without an event log the second run must start in a later second
    // than the first run's last cycle.
    let ended: jiff::Timestamp = progress["cycles"][1]["ended_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let next_second = ended + jiff::SignedDuration::from_millis(1500);
    assert!(poll_until(Duration::from_secs(5), || {
        jiff::Timestamp::now() > next_second
    }));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let last = report(&world, &["--format", "json"])
        .assert_code(0)
        .stdout
        .clone();
    let last: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["cycles"]["total"], 1, "{last:#}");
    let all = report(&world, &["--cycles", "1..3", "--format", "json"]);
    let all: Value = serde_json::from_str(&all.assert_code(0).stdout).unwrap();
    assert_eq!(all["cycles"]["total"], 3, "{all:#}");
    let count = std::fs::read_dir(world.home.join("state/digests"))
        .unwrap()
        .count();
    assert_eq!(count, 4, "one .md and one .json per run");
}

#[test]
fn bad_report_flags_exit_2_with_one_line_naming_the_cause() {
    let world = World::new();
    for (args, needle) in [
        (
            &["--since", "12h", "--cycles", "1..2"][..],
            "cannot be used with",
        ),
        (&["--cycles", "17..3"], "17..3"),
        (&["--cycles", "a..b"], "a..b"),
        (&["--since", "soon"], "expected a duration"),
        (&["--format", "yaml"], "yaml"),
    ] {
        let outcome = report(&world, args);
        outcome.assert_code(2);
        let first = outcome.stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error:"), "{args:?}: {}", outcome.stderr);
        assert_contains(first, needle);
    }
    let mut command = world.ralphd();
    command
        .args(["report", "--home"])
        .arg(world.root.join("no-such-home"));
    let outcome = command.output();
    outcome.assert_code(2);
    assert_contains(&outcome.stderr, "no-such-home");
}

#[test]
fn a_digest_that_cannot_be_written_is_a_warning_and_the_exit_code_stays() {
    let world = World::new();
    std::fs::create_dir_all(world.home.join("state")).unwrap();
    std::fs::write(world.home.join("state/digests"), "a file in the way").unwrap();
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    let warning = outcome
        .stderr
        .lines()
        .find(|line| line.contains("cannot write the run's digest"))
        .unwrap_or_else(|| panic!("no warning in:\n{}", outcome.stderr));
    assert_contains(warning, "WARN");
    assert_contains(warning, "digests");
    // The exit's own last line still comes last.
    let last = outcome.stderr.trim_end().lines().last().unwrap_or_default();
    assert_contains(last, "exit 1");
}

#[test]
fn a_reader_that_stops_early_is_no_error() {
    let world = World::new();
    world.run(&["--max-iterations", "3"]).assert_code(1);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ralphd"))
        .args(["report", "--format", "json", "--home"])
        .arg(&world.home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the pipe before ralphd writes, like `| head -0` would.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
