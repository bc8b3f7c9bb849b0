//! The diff gates of docs/design.md §14 through the binary: each one rolls the cycle
//! back with the gate named as the reason, saves the attempt, and never lets
//! the change reach the branch.

use crate::support::*;

/// The cycle was rolled back by a gate before backtest: the branch still ends
/// at the user's commit, the tree is clean, the attempt is saved, and the
/// recorded reason names the gate.
#[track_caller]
fn assert_gated(world: &World, gate: &str) -> String {
    assert_eq!(world.outcomes(), ["rolled_back"]);
    let cycle = &world.progress()["cycles"][0];
    let error = cycle["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains(gate), "the reason names {gate}: {error}");
    let reason = cycle["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(&format!("gate {gate}: ")),
        "the record's reason names the gate: {reason}"
    );
    assert_eq!(cycle["verdict"]["decided_by"], "gate");
    assert_eq!(cycle["verdict"]["pass"], false);
    assert_eq!(cycle["verdict"]["agent_verdict"], serde_json::Value::Null);
    assert_eq!(cycle["attempt_ref"], "refs/ralph/attempts/1");
    assert_eq!(world.git_log()[0], "initial", "nothing reached the branch");
    assert_eq!(world.git_status(), "", "the tree is back to the start");
    assert_eq!(world.calls("backtest"), 0, "a gated edit is not verified");
    let message = git(
        &world.repo,
        &["log", "-1", "--format=%B", "refs/ralph/attempts/1"],
    );
    assert!(message.contains(gate), "the attempt says why: {message}");
    error
}

#[test]
fn more_files_than_max_changed_files_roll_the_cycle_back() {
    let world = World::new();
    // The default limit is 50 files.
    world.script(
        "code-edit",
        None,
        "for i in $(seq 1 51); do echo x > \"file$i.txt\"; done\n",
    );
    world.reply("code-edit", None, &answer("added 51 files"));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let error = assert_gated(&world, "max_changed_files");
    assert!(error.contains("51"), "{error}");
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:file51.txt"]);
    assert_eq!(saved, "x\n");
}

#[test]
fn more_lines_than_max_changed_lines_roll_the_cycle_back() {
    let world = World::new();
    world.config("\n[gates]\nmax_changed_lines = 100\n");
    world.script("code-edit", None, "seq 1 101 > numbers.txt\n");
    world.reply("code-edit", None, &answer("added 101 lines"));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let error = assert_gated(&world, "max_changed_lines");
    assert!(error.contains("101"), "{error}");

    // Within the limit the same edit is committed.
    let world = World::new();
    world.config("\n[gates]\nmax_changed_lines = 101\n");
    world.script("code-edit", None, "seq 1 101 > numbers.txt\n");
    world.reply("code-edit", None, &answer("added 101 lines"));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
}

#[test]
fn a_protected_path_rolls_the_cycle_back() {
    let world = World::new();
    world.write_repo(".github/workflows/ci.yml", "on: push\n");
    world.commit_all("initial");
    world.script(
        "code-edit",
        None,
        "echo 'on: [push, pull_request]' > .github/workflows/ci.yml; echo more >> README.md\n",
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let error = assert_gated(&world, "protected_paths");
    assert!(error.contains(".github/workflows/ci.yml"), "{error}");
    assert_eq!(
        world.read_repo(".github/workflows/ci.yml").unwrap(),
        "on: push\n"
    );

    // A glob of the user's own.
    let world = World::new();
    world.config("\n[gates]\nprotected_paths = [\"migrations/*.sql\"]\n");
    world.script(
        "code-edit",
        None,
        "mkdir -p migrations; echo 'drop table users;' > migrations/001.sql\n",
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let error = assert_gated(&world, "protected_paths");
    assert!(error.contains("migrations/001.sql"), "{error}");
}

/// A throwaway credential of each shape, built at run time.
fn github_token() -> String {
    format!("ghp_{}", "a1B2c3D4e5F6".repeat(3))
}

fn private_key_body() -> String {
    format!("MIIEow{}", "QkFTRTY0".repeat(8))
}

#[test]
fn a_secret_in_the_diff_is_never_committed_and_the_attempt_keeps_it_masked() {
    let world = World::new();
    let token = github_token();
    let body = private_key_body();
    world.script(
        "code-edit",
        None,
        &format!(
            "printf 'import os\\nTOKEN = \"{token}\"\\nprint(TOKEN)\\n' > config.py\n\
             mkdir -p deploy\n\
             printf -- '-----BEGIN RSA PRIVATE KEY-----\\n{body}\\n{body}\\n-----END RSA PRIVATE KEY-----\\n' > deploy/id_rsa\n"
        ),
    );
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    let error = assert_gated(&world, "secret_scan");
    assert!(error.contains("config.py:2"), "{error}");
    assert!(error.contains("deploy/id_rsa:1"), "{error}");

    // Never on the branch, never in the attempt (tree or history), never in
    // the reason, the attempt's message or the logs.
    let everything = git(&world.repo, &["log", "-p", "--all", "--format=%B"]);
    assert!(!everything.contains(&token), "{everything}");
    assert!(!everything.contains(&body), "{everything}");
    let progress = std::fs::read_to_string(world.home.join("state/progress.json")).unwrap();
    assert!(!progress.contains(&token) && !progress.contains(&body));
    assert!(!outcome.stderr.contains(&token) && !outcome.stderr.contains(&body));
    assert!(
        outcome.stderr.contains("config.py:2"),
        "the log names file and line: {}",
        outcome.stderr
    );

    // The attempt keeps the rest of the work, with the secret's lines masked.
    let config = git(&world.repo, &["show", "refs/ralph/attempts/1:config.py"]);
    let lines: Vec<&str> = config.lines().collect();
    assert_eq!(lines.len(), 3, "{config}");
    assert_eq!(lines[0], "import os");
    assert!(lines[1].contains("masked"), "{config}");
    assert_eq!(lines[2], "print(TOKEN)");
    let key = git(
        &world.repo,
        &["show", "refs/ralph/attempts/1:deploy/id_rsa"],
    );
    assert_eq!(key.lines().count(), 4, "{key}");
    assert!(key.lines().all(|line| line.contains("masked")), "{key}");
    assert!(world.read_repo("config.py").is_none(), "rolled back");
}

#[test]
fn a_secret_the_agent_committed_itself_never_stays_on_the_branch() {
    let world = World::new();
    let token = github_token();
    world.script(
        "code-edit",
        None,
        &format!(
            "echo 'key = \"{token}\"' > settings.toml\n\
             git add settings.toml\n\
             git -c user.name=a -c user.email=a@a commit -q -m 'add settings'\n\
             echo 'key = \"read from the environment\"' > settings.toml\n\
             git -c user.name=a -c user.email=a@a commit -q -am 'no secret after all'\n"
        ),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let error = assert_gated(&world, "secret_scan");
    assert!(error.contains("settings.toml:1"), "{error}");
    let everything = git(&world.repo, &["log", "-p", "--all", "--format=%B"]);
    assert!(!everything.contains(&token), "{everything}");
    let saved = git(
        &world.repo,
        &["show", "refs/ralph/attempts/1:settings.toml"],
    );
    assert_eq!(saved, "key = \"read from the environment\"\n");
}

#[test]
fn gates_can_be_switched_off() {
    let world = World::new();
    world.config(
        "\n[gates]\nmax_changed_files = 0\nmax_changed_lines = 0\nprotected_paths = []\nsecret_scan = false\n",
    );
    let token = github_token();
    world.script(
        "code-edit",
        None,
        &format!(
            "mkdir -p .github; echo '{token}' > .github/token; seq 1 3000 > big.txt; for i in $(seq 1 60); do echo x > \"f$i\"; done\n"
        ),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
}

#[test]
fn a_bad_gate_setting_is_refused_at_start() {
    let world = World::new();
    world.config("\n[gates]\nprotected_paths = [\"src/[\"]\n");
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("gates.protected_paths") && outcome.stderr.contains("src/["),
        "{}",
        outcome.stderr
    );
    assert_eq!(world.calls("scan"), 0);
}

#[test]
fn a_cycle_that_fails_for_another_reason_saves_no_secret_either() {
    let world = World::new();
    world.config("max_attempts = 1\n");
    let token = github_token();
    world.script(
        "code-edit",
        None,
        &format!("printf 'ok\\nTOKEN={token}\\n' > config.env\n"),
    );
    world.reply(
        "code-edit",
        None,
        &[
            init_line(),
            error_result_line(Some(400), "API Error: 400 bad request"),
        ],
    );
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    assert_eq!(world.outcomes(), ["failed"]);
    assert_eq!(
        world.progress()["cycles"][0]["attempt_ref"],
        "refs/ralph/attempts/1"
    );
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:config.env"]);
    assert_eq!(saved.lines().next(), Some("ok"));
    assert!(saved.lines().nth(1).unwrap().contains("masked"), "{saved}");
    let everything = git(&world.repo, &["log", "-p", "--all", "--format=%B"]);
    assert!(!everything.contains(&token), "{everything}");
    assert!(
        outcome.stderr.contains("config.env:2"),
        "the log names file and line: {}",
        outcome.stderr
    );
}

/// `kill -9` while code-edit has just written a credential: the restart saves
/// what the cycle left with the credential's line masked, like every attempt
/// a cycle saves.
#[test]
fn the_attempt_crash_recovery_saves_keeps_no_secret_either() {
    let world = World::new();
    let token = github_token();
    world.script(
        "code-edit",
        Some(1),
        &format!("printf 'ok\\nTOKEN={token}\\n' > config.env\nkill -9 $PPID\nsleep 5\n"),
    );
    let killed = world.run(&["--max-iterations", "1"]);
    assert_ne!(killed.code, 0, "ralphd was killed in code-edit");

    let restart = world.run(&["--max-iterations", "1"]);
    assert_eq!(world.outcomes()[0], "interrupted");
    assert_eq!(
        world.progress()["cycles"][0]["attempt_ref"],
        "refs/ralph/attempts/1"
    );
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:config.env"]);
    assert_eq!(saved.lines().next(), Some("ok"), "{saved}");
    assert!(saved.lines().nth(1).unwrap().contains("masked"), "{saved}");
    let everything = git(&world.repo, &["log", "-p", "--all", "--format=%B"]);
    assert!(!everything.contains(&token), "{everything}");
    assert!(!restart.stderr.contains(&token), "{}", restart.stderr);
    assert!(world.read_repo("config.env").is_none(), "rolled back");
}
