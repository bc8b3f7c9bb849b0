use crate::support::*;

#[test]
fn max_iterations_must_be_a_positive_number() {
    let world = World::new();
    for bad in ["0", "-1", "abc", ""] {
        let outcome = world.run(&["--max-iterations", bad]);
        outcome.assert_code(2);
        assert_eq!(
            world.calls("scan"),
            0,
            "no agent call for --max-iterations {bad:?}"
        );
    }
    world.run(&["--max-iterations", "02"]).assert_code(1);
    assert_eq!(world.calls("scan"), 2);
}

#[test]
fn a_missing_claude_is_exit_2_with_the_install_hint() {
    let world = World::new();
    world.config("command = \"/nonexistent/claude\"\n");
    let text = std::fs::read_to_string(world.home.join("ralph.toml")).unwrap();
    // The test default sets `command` first; the later key would be a duplicate.
    let text = text.replacen(
        &format!("command = \"{}\"\n", fake_claude_path().display()),
        "",
        1,
    );
    std::fs::write(world.home.join("ralph.toml"), text).unwrap();
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    assert!(
        outcome
            .stderr
            .contains("npm install -g @anthropic-ai/claude-code"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn not_a_git_repo_is_exit_2_naming_the_path() {
    let world = World::without_repo();
    std::fs::create_dir_all(&world.repo).unwrap();
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains(&world.repo.display().to_string()),
        "{}",
        outcome.stderr
    );
}

#[test]
fn an_unknown_config_key_is_exit_2_naming_key_and_file() {
    let world = World::new();
    world.config("phase_timout = \"1m\"\n");
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("phase_timout"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("ralph.toml"), "{}", outcome.stderr);
    assert_eq!(
        outcome.stderr.trim().lines().count(),
        1,
        "one line: {}",
        outcome.stderr
    );
}

#[test]
fn demo_runs_the_offline_loop_to_completion() {
    let world = World::without_repo();
    let dir = world.root.join("demo");
    let outcome = world.ralphd().args(["demo", "--dir"]).arg(&dir).output();
    outcome.assert_code(0);
    assert!(outcome.stdout.contains("offline"), "{}", outcome.stdout);
    let log = git(&dir.join("repo"), &["log", "--format=%s"]);
    assert_eq!(
        log.lines()
            .filter(|line| line.starts_with("ralphd: cycle"))
            .count(),
        2,
        "{log}"
    );
    assert!(dir.join("home/state/cycles/2/report.md").exists());
    for phase in ["scan", "idea", "code-edit", "backtest", "report"] {
        assert!(
            outcome.stderr.contains(phase),
            "the demo shows phase {phase}: {}",
            outcome.stderr
        );
    }
}

#[test]
fn init_scaffolds_a_home_without_overwriting() {
    let world = World::without_repo();
    let dir = world.root.join("newhome");
    std::fs::create_dir_all(dir.join("prompts")).unwrap();
    std::fs::write(dir.join("prompts/scan.md"), "mine").unwrap();
    world.ralphd().arg("init").arg(&dir).output().assert_code(0);
    assert_eq!(
        std::fs::read_to_string(dir.join("prompts/scan.md")).unwrap(),
        "mine"
    );
    for file in [
        "ralph.toml",
        "prompts/idea.md",
        "prompts/report.md",
        "state/prd.example.json",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
    // The scaffolded home is a valid home: `run` accepts its ralph.toml.
    let repo = World::new();
    let mut command = repo.ralphd();
    command
        .args(["run", "--max-iterations", "1", "--repo"])
        .arg(&repo.repo)
        .arg("--home")
        .arg(&dir);
    command.env("RALPH_AGENT_COMMAND", fake_claude_path());
    let outcome = command.output();
    assert!(outcome.code == 1 || outcome.code == 0, "{outcome:?}");
}

#[test]
fn status_reports_a_finished_run_and_saved_attempts() {
    let world = World::new();
    world.reply("backtest", Some(1), &answer(&verdict(false, "no")));
    world.run(&["--max-iterations", "2"]).assert_code(1);
    let mut command = world.ralphd();
    command.args(["status", "--home"]).arg(&world.home);
    let outcome = command.output();
    outcome.assert_code(0);
    assert!(outcome.stdout.contains("not running"), "{}", outcome.stdout);
    assert!(
        outcome.stdout.contains("rolled_back") && outcome.stdout.contains("committed"),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.contains("refs/ralph/attempts/1"),
        "{}",
        outcome.stdout
    );
    let mut command = world.ralphd();
    command
        .args(["status", "--json", "--home"])
        .arg(&world.home);
    let json: serde_json::Value = serde_json::from_str(&command.output().stdout).unwrap();
    assert_eq!(json["running"], false);
    assert_eq!(json["cycles"].as_array().unwrap().len(), 2);
}
