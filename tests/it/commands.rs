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
fn a_secret_in_what_an_error_quotes_is_masked_on_stderr() {
    let world = World::new();
    let token = "ghp_abcdefghijklmnopqrstuvwxyz0123";
    let outcome = world
        .ralphd()
        .args(["status", "--home", &format!("/nonexistent/{token}")])
        .output();
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("/nonexistent/[REDACTED]") && !outcome.stderr.contains(token),
        "{}",
        outcome.stderr
    );
    // A value clap refuses is quoted back the same way.
    let outcome = world
        .ralphd()
        .args(["run", "--max-iterations", token])
        .output();
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("[REDACTED]") && !outcome.stderr.contains(token),
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

/// A directory name that is not valid UTF-8 (Linux allows any bytes but `/` and NUL).
fn non_utf8_name() -> &'static std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::OsStr::from_bytes(b"home-\xff\xfe")
}

#[test]
fn status_of_a_home_whose_path_is_not_utf8_works_without_a_panic() {
    let world = World::new();
    let home = world.root.join(non_utf8_name());
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(world.home.join("ralph.toml"), home.join("ralph.toml")).unwrap();

    let mut command = world.ralphd();
    command.args(["status", "--home"]).arg(&home);
    let outcome = command.output();
    outcome.assert_code(0);
    assert!(outcome.stdout.contains("never run"), "{}", outcome.stdout);

    let mut command = world.ralphd();
    command
        .args(["run", "--max-iterations", "1", "--repo"])
        .arg(&world.repo)
        .arg("--home")
        .arg(&home);
    command.output().assert_code(1);
    for json in [false, true] {
        let mut command = world.ralphd();
        command.args(["status", "--home"]).arg(&home);
        if json {
            command.arg("--json");
        }
        let outcome = command.output();
        outcome.assert_code(0);
        assert!(outcome.stdout.contains("committed"), "{}", outcome.stdout);
    }
}

#[test]
fn a_home_command_on_a_missing_home_is_exit_2_saying_it_does_not_exist() {
    let world = World::without_repo();
    let missing = world.root.join("no-such-home");
    for command_words in [
        &["status"][..],
        &["status", "--json"],
        &["reset-breaker"],
        &["watch"],
        &["pause"],
        &["resume"],
        &["stop"],
        &["stop", "--now"],
    ] {
        let mut command = world.ralphd();
        command.args(command_words).arg("--home").arg(&missing);
        let outcome = command.output();
        outcome.assert_code(2);
        assert!(
            outcome.stderr.contains("does not exist")
                && outcome.stderr.contains(&missing.display().to_string()),
            "{command_words:?}: {}",
            outcome.stderr
        );
        assert_eq!(
            outcome.stderr.trim().lines().count(),
            1,
            "{}",
            outcome.stderr
        );
    }
    // The same through RALPH_HOME, which is the default of --home.
    let outcome = world
        .ralphd()
        .arg("status")
        .env("RALPH_HOME", &missing)
        .output();
    outcome.assert_code(2);
    assert!(outcome.stderr.contains("RALPH_HOME"), "{}", outcome.stderr);
    assert!(!missing.exists(), "status created the home");
}

#[test]
fn ralph_home_and_ralph_repo_are_the_defaults_of_home_and_repo() {
    let world = World::new();
    let outcome = world
        .ralphd()
        .args(["run", "--max-iterations", "1"])
        .env("RALPH_HOME", &world.home)
        .env("RALPH_REPO", &world.repo)
        .output();
    outcome.assert_code(1);
    assert_eq!(world.calls("scan"), 1);
    assert_eq!(world.outcomes(), ["committed"]);
    let outcome = world
        .ralphd()
        .arg("status")
        .env("RALPH_HOME", &world.home)
        .output();
    outcome.assert_code(0);
    assert!(outcome.stdout.contains("committed"), "{}", outcome.stdout);
}

#[test]
fn status_says_in_words_why_the_last_run_ended() {
    let world = World::new();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let mut command = world.ralphd();
    command.args(["status", "--home"]).arg(&world.home);
    let outcome = command.output();
    outcome.assert_code(0);
    assert!(
        outcome.stdout.contains("reached --max-iterations (exit 1)"),
        "{}",
        outcome.stdout
    );
    assert!(
        !outcome.stdout.contains("MaxIterations"),
        "{}",
        outcome.stdout
    );
}

#[test]
fn logs_show_values_not_rust_debug_syntax() {
    let world = World::new();
    world.config("\n[backtest]\nchecks = [\"true\"]\n");
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    assert!(outcome.stderr.contains("exit=0"), "{}", outcome.stderr);
    for debug_syntax in ["Some(", "None", "agent=Claude"] {
        assert!(
            !outcome.stderr.contains(debug_syntax),
            "{debug_syntax} in the log:\n{}",
            outcome.stderr
        );
    }
}

#[test]
fn a_negative_duration_is_refused_as_negative_everywhere() {
    let world = World::new();
    let negative = |outcome: &Outcome, what: &str| {
        outcome.assert_code(2);
        assert!(
            outcome.stderr.contains("durations cannot be negative"),
            "{what}: {}",
            outcome.stderr
        );
    };
    negative(&world.run(&["--sleep", "-1s"]), "--sleep -1s");
    negative(&world.run(&["--sleep=-1s"]), "--sleep=-1s");
    negative(
        &world
            .ralphd()
            .args(["run", "--repo"])
            .arg(&world.repo)
            .arg("--home")
            .arg(&world.home)
            .env("RALPH_SLEEP", "-1s")
            .output(),
        "RALPH_SLEEP",
    );
    world.config("[breaker]\nrecovery_timeout = \"-5m\"\n");
    negative(&world.run(&[]), "recovery_timeout");
    assert_eq!(world.calls("scan"), 0);
}

#[test]
fn a_log_file_that_cannot_be_opened_is_reported_once() {
    let world = World::new();
    // The appender's file for today (UTC) is a directory, so opening it fails;
    // tomorrow's too, in case the test runs across midnight.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    for date in [today, today.tomorrow().unwrap()] {
        std::fs::create_dir_all(world.home.join(format!("logs/ralphd.log.{date}"))).unwrap();
    }
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    assert_eq!(
        outcome.stderr.matches("Is a directory").count(),
        1,
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("log file"), "{}", outcome.stderr);
}

#[test]
fn init_says_how_to_install_and_log_in_to_claude() {
    let world = World::without_repo();
    let outcome = world
        .ralphd()
        .arg("init")
        .arg(world.root.join("h"))
        .output();
    outcome.assert_code(0);
    for needle in [
        "npm install -g @anthropic-ai/claude-code",
        "/login",
        "ANTHROPIC_API_KEY",
    ] {
        assert!(
            outcome.stdout.contains(needle),
            "{needle}: {}",
            outcome.stdout
        );
    }
}

#[test]
fn demo_without_dir_says_where_it_runs_and_removes_its_scratch_dir() {
    let world = World::without_repo();
    let tmp = world.root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let outcome = world.ralphd().arg("demo").env("TMPDIR", &tmp).output();
    outcome.assert_code(0);
    let scratch: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(scratch.is_empty(), "left behind: {scratch:?}");
    assert!(
        outcome.stdout.contains(&tmp.display().to_string()) && outcome.stdout.contains("removed"),
        "{}",
        outcome.stdout
    );
    // With --dir the scratch repository is kept (see demo_runs_the_offline_loop_to_completion).
    assert!(outcome.stdout.contains("--dir"), "{}", outcome.stdout);
}

#[test]
fn a_prompt_md_that_is_not_utf8_is_used_with_a_warning() {
    let world = World::new();
    std::fs::write(
        world.home.join("PROMPT.md"),
        b"Steer \xff\xfe towards tests.\n",
    )
    .unwrap();
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    let prompt = world.stdin_of("scan", 1);
    assert!(prompt.contains("towards tests."), "{prompt}");
    let warnings: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("PROMPT.md"))
        .collect();
    assert_eq!(warnings.len(), 1, "once per cycle:\n{}", outcome.stderr);
    assert!(warnings[0].contains("UTF-8"), "{}", warnings[0]);
}

#[test]
fn a_truncated_prompt_part_is_logged_once_per_cycle() {
    let world = World::new();
    let long = "A line of steering text.\n".repeat(2000);
    std::fs::write(world.home.join("PROMPT.md"), &long).unwrap();
    let outcome = world.run(&["--max-iterations", "2"]);
    outcome.assert_code(1);
    assert!(world.stdin_of("scan", 1).contains("[… truncated]"));
    let warnings: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("truncated"))
        .collect();
    assert_eq!(warnings.len(), 2, "once per cycle:\n{}", outcome.stderr);
    assert!(
        warnings.iter().all(|line| line.contains("PROMPT.md")),
        "{warnings:?}"
    );
}

#[test]
fn a_file_name_that_is_not_utf8_in_the_repo_is_no_crash() {
    use std::os::unix::ffi::OsStrExt as _;
    let world = World::new();
    world.write_repo(".gitignore", "*.log\n");
    world.commit_all("ignore logs");
    // Ignored at cycle start, so its name goes into the cycle's start state.
    std::fs::write(
        world
            .repo
            .join(std::ffi::OsStr::from_bytes(b"odd-\xff.log")),
        "x",
    )
    .unwrap();
    let outcome = world.run(&["--max-iterations", "1"]);
    assert_ne!(outcome.code, 101, "panic:\n{}", outcome.stderr);
    outcome.assert_code(1);
    assert_eq!(world.outcomes(), ["committed"]);
}

#[test]
fn status_says_when_it_cannot_list_the_saved_attempts() {
    let world = World::new();
    world.reply("backtest", None, &answer(&verdict(false, "no")));
    world.run(&["--max-iterations", "1"]).assert_code(1);
    std::fs::rename(&world.repo, world.root.join("moved")).unwrap();
    let mut command = world.ralphd();
    command.args(["status", "--home"]).arg(&world.home);
    let outcome = command.output();
    outcome.assert_code(0);
    assert!(
        outcome.stdout.contains("saved attempts: cannot list them")
            && outcome.stdout.contains(&world.repo.display().to_string()),
        "{}",
        outcome.stdout
    );
}

#[test]
fn a_last_branch_file_that_is_not_utf8_is_refused_by_name_and_kept() {
    let world = World::new();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let last_branch = world.home.join("state/last-branch");
    std::fs::write(&last_branch, b"ma\xffin\n").unwrap();
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("last-branch") && outcome.stderr.contains("not UTF-8"),
        "{}",
        outcome.stderr
    );
    assert_eq!(std::fs::read(&last_branch).unwrap(), b"ma\xffin\n");
}

#[test]
fn a_rust_log_that_is_not_utf8_is_an_error_not_ignored() {
    use std::os::unix::ffi::OsStrExt as _;
    let world = World::new();
    let mut command = world.ralphd();
    command
        .args(["run", "--max-iterations", "1", "--repo"])
        .arg(&world.repo)
        .arg("--home")
        .arg(&world.home)
        .env("RUST_LOG", std::ffi::OsStr::from_bytes(b"debug\xff"));
    let outcome = command.output();
    outcome.assert_code(2);
    assert!(outcome.stderr.contains("RUST_LOG"), "{}", outcome.stderr);
    assert_eq!(world.calls("scan"), 0);
}
