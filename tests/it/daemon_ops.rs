//! The daemon as a service: stop signals, no orphans, one daemon per home,
//! recovery after `kill -9`, `status` while it runs.

use std::time::Duration;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// A `sleep` command line no other process on the machine has.
fn unique_sleep(test: u32) -> String {
    format!("sleep 1000.{}{test}", std::process::id())
}

/// Pids of the live processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    processes_running(needle)
        .into_iter()
        .map(|process| process.pid)
        .collect()
}

#[track_caller]
fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(DEADLINE, condition),
        "timed out waiting for {what}"
    );
}

/// Scripts `phase` (call `call`, or every call) of the fake agent to run
/// `first`, start `sleep` under `setsid` (a tool that leaves the group), then
/// hang in `sleep` itself.
fn hang_with_a_setsid_tool(
    world: &World,
    phase: &str,
    call: Option<u32>,
    first: &str,
    sleep: &str,
) {
    world.script(
        phase,
        call,
        &format!("{first}\nsetsid {sleep} &\ntouch \"$FAKE_CLAUDE_DIR/started\"\n{sleep}\n"),
    );
}

/// Waits until the phase scripted by [`hang_with_a_setsid_tool`] hangs.
fn wait_until_hanging(world: &World, sleep: &str) {
    wait_for("the phase to start its tools", || {
        world.fake.join("started").exists()
    });
    wait_for("the setsid tool", || processes_with(sleep).len() == 2);
}

#[test]
fn sigterm_stops_the_agent_and_its_setsid_grandchild_and_saves_the_attempt() {
    let world = World::new();
    let sleep = unique_sleep(1);
    hang_with_a_setsid_tool(&world, "code-edit", None, "echo partial > work.txt", &sleep);
    let mut running = world.start(&["--max-iterations", "1"]);
    wait_until_hanging(&world, &sleep);

    running.signal(libc::SIGTERM);
    let outcome = running
        .wait_for_exit(DEADLINE)
        .expect("ralphd exits after SIGTERM");
    outcome.assert_code(130);
    assert_eq!(
        processes_with(&sleep),
        Vec::<i32>::new(),
        "no process of the phase outlives it"
    );
    assert_eq!(world.outcomes(), ["interrupted"]);
    assert_eq!(world.git_status(), "", "the partial edit is rolled back");
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:work.txt"]);
    assert_eq!(saved, "partial\n", "the partial edit is kept as an attempt");
    let status = read_json(&world.home.join("state/status.json"));
    assert_eq!(status["state"], "stopped");
}

#[test]
fn a_second_daemon_on_the_same_home_exits_2_naming_the_first() {
    let world = World::new();
    let sleep = unique_sleep(2);
    world.script(
        "scan",
        None,
        &format!("touch \"$FAKE_CLAUDE_DIR/started\"\n{sleep}\n"),
    );
    let mut first = world.start(&["--max-iterations", "1"]);
    wait_for("the first daemon's scan", || {
        world.fake.join("started").exists()
    });

    let second = world.run(&["--max-iterations", "1"]);
    second.assert_code(2);
    assert!(
        second.stderr.contains(&first.pid().to_string()),
        "{}",
        second.stderr
    );
    assert_eq!(
        second.stderr.trim().lines().count(),
        1,
        "one line: {}",
        second.stderr
    );
    assert_eq!(world.calls("scan"), 1, "the second daemon ran nothing");

    // status.json follows the daemon within a fraction of a second.
    let mut json = serde_json::Value::Null;
    wait_for("status to show the first daemon in scan", || {
        let mut status = world.ralphd();
        status.args(["status", "--json", "--home"]).arg(&world.home);
        json = serde_json::from_str(&status.output().stdout).unwrap();
        json["status"]["phase"] == "scan"
    });
    assert_eq!(json["running"], true, "{json}");

    first.signal(libc::SIGTERM);
    first
        .wait_for_exit(DEADLINE)
        .expect("ralphd exits after SIGTERM")
        .assert_code(130);
    assert!(processes_with(&sleep).is_empty());
}

/// A second home next to the world's, with the same test configuration.
fn other_home(world: &World, name: &str) -> std::path::PathBuf {
    let home = world.root.join(name);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(world.home.join("ralph.toml"), home.join("ralph.toml")).unwrap();
    home
}

/// `ralphd run --max-iterations 1` on `repo` with `home`.
fn run_on(world: &World, repo: &std::path::Path, home: &std::path::Path) -> Outcome {
    let mut command = world.ralphd();
    command
        .args(["run", "--max-iterations", "1", "--repo"])
        .arg(repo)
        .arg("--home")
        .arg(home);
    command.output()
}

/// Two homes on one repository (or `ralphd run` from two directories): the
/// second daemon exits 2 naming the first one's pid and home, and touches
/// nothing. The lock lives in the git dir, so it is never a change, and it
/// goes with the daemon that held it.
#[test]
fn a_second_daemon_on_the_same_repo_from_another_home_exits_2_naming_pid_and_home() {
    let world = World::new();
    let sleep = unique_sleep(5);
    world.script(
        "scan",
        Some(1),
        &format!("touch \"$FAKE_CLAUDE_DIR/started\"\n{sleep}\n"),
    );
    let mut first = world.start(&["--max-iterations", "1"]);
    wait_for("the first daemon's scan", || {
        world.fake.join("started").exists()
    });

    let home2 = other_home(&world, "home2");
    let second = run_on(&world, &world.repo, &home2);
    second.assert_code(2);
    let message = second.stderr.trim();
    assert!(
        message.contains(&format!("pid {}", first.pid())),
        "{message}"
    );
    assert!(
        message.contains(&world.home.display().to_string()),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert_eq!(world.calls("scan"), 1, "the second daemon ran nothing");
    assert!(world.repo.join(".git/ralphd.lock").exists());
    assert_eq!(world.git_status(), "", "the lock is no change");

    first.signal(libc::SIGTERM);
    first
        .wait_for_exit(DEADLINE)
        .expect("ralphd exits after SIGTERM")
        .assert_code(130);
    run_on(&world, &world.repo, &home2).assert_code(1);
    assert_eq!(world.git_status(), "");
    assert_eq!(
        world.git_log()[0],
        "ralphd: cycle 1: Add a line to work.txt",
        "the lock was released with the first daemon"
    );
}

/// The lock is per work tree: two worktrees of one repository each run a daemon.
#[test]
fn two_worktrees_of_one_repo_each_run_a_daemon() {
    let world = World::new();
    let sleep = unique_sleep(6);
    world.script(
        "scan",
        Some(1),
        &format!("touch \"$FAKE_CLAUDE_DIR/started\"\n{sleep}\n"),
    );
    let mut first = world.start(&["--max-iterations", "1"]);
    wait_for("the first daemon's scan", || {
        world.fake.join("started").exists()
    });

    let worktree = world.root.join("worktree");
    git(
        &world.repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "second",
            worktree.to_str().unwrap(),
        ],
    );
    let home2 = other_home(&world, "home2");
    run_on(&world, &worktree, &home2).assert_code(1);
    assert_eq!(
        git(&worktree, &["log", "-1", "--format=%s"]).trim(),
        "ralphd: cycle 1: Add a line to work.txt"
    );
    assert_eq!(git(&worktree, &["status", "--porcelain"]), "");

    first.signal(libc::SIGTERM);
    first
        .wait_for_exit(DEADLINE)
        .expect("ralphd exits after SIGTERM")
        .assert_code(130);
    assert_eq!(world.git_log(), ["initial"], "main is untouched");
}

/// A `claude --version` that hangs is stopped at `agent.version_timeout`
/// together with what it started (in its process group or detached with
/// `setsid`): exit 2 with one line saying so, and nothing of it left running.
#[test]
fn a_hanging_claude_version_is_stopped_with_its_children_and_exits_2() {
    use std::os::unix::fs::PermissionsExt as _;
    let world = World::new();
    let sleep = unique_sleep(7);
    let agent = world.root.join("hanging-claude");
    std::fs::write(
        &agent,
        format!("#!/bin/sh\n{sleep} &\nsetsid {sleep} &\n{sleep}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    world.config("version_timeout = \"500ms\"\n");

    let mut command = world.ralphd();
    command
        .env("RALPH_AGENT_COMMAND", &agent)
        .args(["run", "--max-iterations", "1", "--repo"])
        .arg(&world.repo)
        .arg("--home")
        .arg(&world.home);
    let outcome = command.output();
    outcome.assert_code(2);
    let message = outcome.stderr.trim();
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("--version` did not answer within 500ms"),
        "{message}"
    );
    wait_for("every process of the version check to be gone", || {
        processes_with(&sleep).is_empty()
    });
}

/// kill -9 at many moments of a run: every state file parses afterwards, and the
/// next start records the cycle that was running as interrupted, saves and rolls
/// back what it left in the tree, and runs on.
#[test]
fn after_kill_9_at_any_moment_every_state_file_parses_and_a_restart_runs_on() {
    let world = World::new();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for round in 0..15 {
        let mut running = world.start(&["--max-iterations", "2"]);
        // The moment of the kill is the point of the test, not a wait for something.
        std::thread::sleep(Duration::from_millis(rng.u64(0..60)));
        running.kill();

        // Killed before it made its state directory: nothing to check.
        let entries = std::fs::read_dir(world.home.join("state"))
            .into_iter()
            .flatten();
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "json") {
                read_json(&path);
            }
        }
        let restart = world.run(&["--max-iterations", "1"]);
        restart.assert_code(1);
        assert_eq!(
            world.git_status(),
            "",
            "round {round}: the tree is clean after a cycle"
        );
        let outcomes = world.outcomes();
        assert!(
            outcomes
                .iter()
                .all(|outcome| outcome == "committed" || outcome == "interrupted"),
            "round {round}: {outcomes:?}"
        );
        let cycles: Vec<u64> = world.progress()["cycles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cycle| cycle["cycle"].as_u64().unwrap())
            .collect();
        let mut sorted = cycles.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            cycles, sorted,
            "round {round}: every cycle is recorded once, in order"
        );
    }
}

/// kill -9 while the agent's tools run, one of them detached with `setsid`:
/// the restart stops every one of them before it rolls the tree back, keeps
/// the partial work as an attempt and records the cycle as interrupted.
#[test]
fn after_kill_9_during_code_edit_a_restart_stops_the_leftover_tools() {
    let world = World::new();
    let sleep = unique_sleep(3);
    hang_with_a_setsid_tool(
        &world,
        "code-edit",
        Some(1),
        "echo partial > work.txt",
        &sleep,
    );
    let mut running = world.start(&["--max-iterations", "1"]);
    wait_until_hanging(&world, &sleep);
    running.kill();
    assert!(
        !processes_with(&sleep).is_empty(),
        "the tools outlive a kill -9 of the daemon"
    );

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(
        processes_with(&sleep),
        Vec::<i32>::new(),
        "the restart stopped them"
    );
    assert_eq!(world.outcomes(), ["interrupted", "committed"]);
    assert_eq!(
        world.progress()["cycles"][0]["attempt_ref"],
        "refs/ralph/attempts/1"
    );
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:work.txt"]);
    assert_eq!(saved, "partial\n");
    assert_eq!(
        world.read_repo("work.txt").unwrap(),
        "cycle 2\n",
        "cycle 2 started from a clean tree"
    );
}

/// A second signal exits at once, and still takes the agent and its tools along,
/// even an agent that ignores SIGINT and SIGTERM.
#[test]
fn a_second_signal_exits_at_once_and_leaves_nothing_running() {
    let world = World::new();
    let sleep = unique_sleep(4);
    hang_with_a_setsid_tool(&world, "scan", None, "trap '' INT TERM", &sleep);
    let mut running = world.start(&["--max-iterations", "1"]);
    wait_until_hanging(&world, &sleep);
    running.signal(libc::SIGTERM);
    wait_for("the first signal to be logged", || {
        log_contains(&world, "stopping")
    });
    running.signal(libc::SIGTERM);
    let outcome = running
        .wait_for_exit(Duration::from_secs(10))
        .expect("exits long before the 20 s grace");
    outcome.assert_code(130);
    assert_eq!(processes_with(&sleep), Vec::<i32>::new());
}

/// Whether today's log file of the home mentions `text`.
fn log_contains(world: &World, text: &str) -> bool {
    std::fs::read_dir(world.home.join("logs"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|entry| std::fs::read_to_string(entry.path()).is_ok_and(|log| log.contains(text)))
}

/// SIGHUP re-reads ralph.toml at the next phase boundary, guards included; an
/// invalid file is refused and the running configuration kept.
#[test]
fn sighup_applies_a_new_budget_at_the_next_phase_and_refuses_a_broken_file() {
    let world = World::new();
    // Each of the first two phases says it started, then waits for its go file.
    let gate = |phase: &str| {
        let go = world.root.join(format!("go-{phase}"));
        world.script(
            phase,
            None,
            &format!(
                "touch \"$FAKE_CLAUDE_DIR/started-{phase}\"\nwhile [ ! -f '{}' ]; do sleep 0.02; done\n",
                go.display()
            ),
        );
        go
    };
    let (go_scan, go_idea) = (gate("scan"), gate("idea"));
    let mut running = world.start(&["--max-iterations", "1"]);
    wait_for("scan to start", || world.fake.join("started-scan").exists());

    // A broken file: refused at the next boundary, the old configuration kept.
    std::fs::write(world.home.join("ralph.toml"), "[agent\n").unwrap();
    running.signal(libc::SIGHUP);
    wait_for("the SIGHUP to be logged", || log_contains(&world, "SIGHUP"));
    std::fs::write(&go_scan, "").unwrap();
    wait_for("idea to start on the old configuration", || {
        world.fake.join("started-idea").exists()
    });
    assert!(log_contains(&world, "not reloaded"));

    // A valid file with a budget the run has already spent: no phase after idea.
    world.config("\n[budget]\nmax_cost_usd = 0.001\n");
    running.signal(libc::SIGHUP);
    wait_for("the second SIGHUP to be logged", || {
        log_count(&world, "SIGHUP") >= 2
    });
    std::fs::write(&go_idea, "").unwrap();
    let outcome = running.wait_for_exit(DEADLINE).expect("ralphd halts");
    outcome.assert_code(3);
    assert_eq!(
        world.calls("code-edit"),
        0,
        "no phase run after the new budget applied"
    );
}

/// How many lines of the home's log files mention `text`.
fn log_count(world: &World, text: &str) -> usize {
    std::fs::read_dir(world.home.join("logs"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .map(|log| log.lines().filter(|line| line.contains(text)).count())
        .sum()
}

/// The systemd notify protocol on a socket of the test's own: READY=1 after
/// the start-up checks, STATUS= lines, WATCHDOG=1 during a long phase (at half
/// WATCHDOG_USEC), STOPPING=1 at the end; the agent never sees NOTIFY_SOCKET.
#[test]
fn systemd_notify_ready_status_watchdog_stopping() {
    use std::os::unix::net::UnixDatagram;
    let world = World::new();
    let socket_path = world.root.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A scan long enough for two watchdog pings at a 1 s watchdog (0.5 s period).
    world.script("scan", None, "sleep 1.5\n");
    let mut running = world
        .run_command(&["--max-iterations", "1"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .spawn();

    let mut messages: Vec<String> = Vec::new();
    let mut buffer = [0u8; 4096];
    let exited = poll_until(DEADLINE, || {
        while let Ok(count) = socket.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..count]).into_owned());
        }
        messages
            .iter()
            .any(|message| message.contains("STOPPING=1"))
    });
    assert!(exited, "no STOPPING=1: {messages:?}");
    running
        .wait_for_exit(DEADLINE)
        .expect("ralphd exits")
        .assert_code(1);

    let first = |needle: &str| messages.iter().position(|message| message.contains(needle));
    let ready = first("READY=1").expect("READY=1");
    assert!(first("STATUS=cycle 1: scan").is_some(), "{messages:?}");
    let watchdogs = messages
        .iter()
        .filter(|message| message.contains("WATCHDOG=1"))
        .count();
    assert!(
        watchdogs >= 2,
        "WATCHDOG=1 during the 1.5 s phase: {messages:?}"
    );
    assert!(ready < first("STOPPING=1").unwrap());
    let env = std::fs::read_to_string(world.fake.join("env.scan.1")).unwrap();
    assert!(
        !env.contains("NOTIFY_SOCKET"),
        "the agent must not notify systemd"
    );
}

/// `--log-format json`: every stderr line is a JSON object with the cycle and
/// phase fields; an API key the agent prints never reaches stderr, the log
/// file or progress.json.
#[test]
fn json_logs_parse_line_by_line_and_never_carry_the_api_key() {
    let world = World::new();
    world.config("max_attempts = 1\n");
    world.script(
        "scan",
        None,
        "echo \"debug: using $ANTHROPIC_API_KEY via $MY_PROXY_TOKEN\" >&2\nEXIT=1\n",
    );
    world.reply("scan", None, &[init_line()]);
    let mut command = world.ralphd();
    command
        .env("ANTHROPIC_API_KEY", "sk-ant-api03-NEVERLOGGED42")
        .env("MY_PROXY_TOKEN", "plain-NEVERLOGGED43")
        .args([
            "run",
            "--max-iterations",
            "1",
            "--log-format",
            "json",
            "--repo",
        ]);
    let outcome = command
        .arg(&world.repo)
        .arg("--home")
        .arg(&world.home)
        .output();
    outcome.assert_code(1);

    for line in outcome.stderr.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(
            event.get("level").is_some() && event.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(
        outcome.stderr.contains("\"phase\":\"scan\""),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("[REDACTED]"),
        "the agent's stderr was logged, redacted: {}",
        outcome.stderr
    );
    let logs: String = std::fs::read_dir(world.home.join("logs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .collect();
    let progress = std::fs::read_to_string(world.home.join("state/progress.json")).unwrap();
    for (name, text) in [
        ("stderr", &outcome.stderr),
        ("log file", &logs),
        ("progress.json", &progress),
    ] {
        assert!(
            !text.contains("NEVERLOGGED"),
            "the key leaked into the {name}"
        );
    }
}

/// Killed between the cycle's commit and the record that it was committed:
/// the restart keeps the verified commit on the branch instead of rolling it
/// back. (The in-flight record is put back by hand as a kill in that narrow
/// window would leave it: the commit about to be made noted, not yet made.)
#[test]
fn a_crash_right_after_the_commit_keeps_the_commit() {
    let world = World::new();
    world.script(
        "code-edit",
        Some(1),
        "cp \"$RALPH_HOME/state/in-flight.json\" \"$FAKE_CLAUDE_DIR/in-flight.copy\"\n",
    );
    world.script("report", Some(1), "kill -9 $PPID\nsleep 5\n");
    let killed = world.run(&["--max-iterations", "1"]);
    assert_ne!(killed.code, 0, "ralphd was killed in report");
    assert_eq!(
        world.git_log()[0],
        "ralphd: cycle 1: Add a line to work.txt"
    );
    put_back_the_note_before_the_commit(&world);

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(
        world.git_log(),
        [
            "ralphd: cycle 2: Add a line to work.txt",
            "ralphd: cycle 1: Add a line to work.txt",
            "initial"
        ]
    );
    assert_eq!(
        git(&world.repo, &["for-each-ref", "refs/ralph/attempts"]),
        ""
    );
    assert_eq!(world.read_repo("work.txt").unwrap(), "cycle 1\ncycle 2\n");
    // Recorded as what it was: committed, with its commit.
    assert_eq!(world.outcomes(), ["committed", "committed"]);
    let first_commit = git(&world.repo, &["rev-parse", "HEAD~1"]);
    assert_eq!(world.progress()["cycles"][0]["commit"], first_commit.trim());
}

/// A `commit-msg` hook rewrote the summary of ralphd's commit, and ralphd
/// was killed before noting the commit: the restart still knows it for the
/// cycle's own and keeps it.
#[test]
fn a_crash_right_after_a_commit_whose_message_a_hook_rewrote_keeps_the_commit() {
    use std::os::unix::fs::PermissionsExt as _;
    let world = World::new();
    let hook = world.repo.join(".git/hooks/commit-msg");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\necho 'JIRA-1: work' > \"$1\"\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    world.script(
        "code-edit",
        Some(1),
        "cp \"$RALPH_HOME/state/in-flight.json\" \"$FAKE_CLAUDE_DIR/in-flight.copy\"\n",
    );
    world.script("report", Some(1), "kill -9 $PPID\nsleep 5\n");
    let killed = world.run(&["--max-iterations", "1"]);
    assert_ne!(killed.code, 0, "ralphd was killed in report");
    assert_eq!(world.git_log()[0], "JIRA-1: work");
    let commit = git(&world.repo, &["rev-parse", "HEAD"]);
    put_back_the_note_before_the_commit(&world);

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed", "committed"]);
    assert_eq!(world.git_log(), ["JIRA-1: work", "JIRA-1: work", "initial"]);
    assert_eq!(git(&world.repo, &["rev-parse", "HEAD~1"]), commit);
    assert_eq!(world.progress()["cycles"][0]["commit"], commit.trim());
    assert_eq!(
        git(&world.repo, &["for-each-ref", "refs/ralph/attempts"]),
        ""
    );
}

/// Puts in-flight.json back as a kill right after ralphd's commit leaves
/// it: as it was before the commit (code-edit saved a copy), plus the note
/// of the commit about to be made, taken from the record after it.
fn put_back_the_note_before_the_commit(world: &World) {
    let path = world.home.join("state/in-flight.json");
    let after = read_json(&path);
    assert!(after["committing"].is_object(), "{after}");
    let mut before = read_json(&world.fake.join("in-flight.copy"));
    assert!(
        before["start"].is_object() && before["commit"].is_null(),
        "{before}"
    );
    before["committing"] = after["committing"].clone();
    std::fs::write(&path, before.to_string()).unwrap();
}

/// Whether two dollar amounts are the same to a hundredth of a cent.
#[track_caller]
fn assert_usd(actual: &serde_json::Value, expected: f64) {
    let actual = actual.as_f64().expect("a number");
    assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
}

/// `kill -9` during the report of a committed cycle: the restart records the
/// cycle as committed, with its commit and the cost of its four finished
/// phase runs, and that cost counts in the budget's total.
#[test]
fn a_crash_after_the_commit_records_the_cycle_committed_with_its_commit_and_cost() {
    let world = World::new();
    world.script("report", Some(1), "kill -9 $PPID\nsleep 5\n");
    let killed = world.run(&["--max-iterations", "1"]);
    assert_ne!(killed.code, 0, "ralphd was killed in report");
    let commit = git(&world.repo, &["rev-parse", "HEAD"]).trim().to_owned();

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed", "committed"]);
    let progress = world.progress();
    let first = &progress["cycles"][0];
    assert_eq!(first["commit"], commit.as_str(), "{first}");
    assert_eq!(first["success"], true);
    assert_eq!(first["title"], "Add a line to work.txt");
    let phases: Vec<&str> = first["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["scan", "idea", "code-edit", "backtest"]);
    assert_usd(&first["cost_usd"], 0.04);
    assert_usd(&progress["total_cost_usd"], 0.04 + 0.05);
}

/// The writes at the end of a committed cycle fail (as on a full disk, here:
/// prd.json and progress.json are directories) after the report named its
/// story: the restart records the cycle as committed with its commit, cost
/// and story, and marks the story as passing in prd.json.
#[test]
fn a_failed_progress_write_after_the_report_records_the_commit_and_marks_the_story() {
    let world = World::new();
    let state = world.home.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let prd =
        r#"{"project":"p","userStories":[{"id":"US-1","title":"a","priority":1,"passes":false}]}"#;
    std::fs::write(state.join("prd.json"), prd).unwrap();
    let report = "ok\n```json\n{\"summary\":\"s\",\"learnings\":[\"l\"],\"patterns\":[],\"story\":{\"id\":\"US-1\",\"passes\":true}}\n```";
    world.reply("report", Some(1), &answer(report));
    world.script(
        "report",
        Some(1),
        "cd \"$RALPH_HOME/state\"\nmv prd.json prd.json.aside\nmkdir -p prd.json/x progress.json/x\ncd \"$RALPH_REPO\"\n",
    );
    let failed = world.run(&["--max-iterations", "1"]);
    assert_ne!(failed.code, 1, "the run died on the progress write");
    let commit = git(&world.repo, &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(
        git(&world.repo, &["log", "-1", "--format=%s"]).trim(),
        "ralphd: cycle 1: Add a line to work.txt"
    );
    // The disk has room again.
    std::fs::remove_dir_all(state.join("prd.json")).unwrap();
    std::fs::remove_dir_all(state.join("progress.json")).unwrap();
    std::fs::rename(state.join("prd.json.aside"), state.join("prd.json")).unwrap();
    assert_eq!(
        read_json(&state.join("prd.json"))["userStories"][0]["passes"],
        false
    );

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["committed", "committed"]);
    let progress = world.progress();
    let first = &progress["cycles"][0];
    assert_eq!(first["commit"], commit.as_str(), "{first}");
    assert_eq!(first["learnings"], serde_json::json!(["l"]));
    assert_usd(&first["cost_usd"], 0.04 + 0.02);
    assert_usd(&progress["total_cost_usd"], 0.06 + 0.05);
    assert_eq!(
        read_json(&state.join("prd.json"))["userStories"][0]["passes"],
        true
    );
}

/// `kill -9` after a failed verdict saved the attempt and rolled back: the
/// restart records the cycle with its attempt's ref and its cost.
#[test]
fn an_attempt_saved_before_a_crash_is_recorded_with_its_ref() {
    let world = World::new();
    world.reply("backtest", Some(1), &answer(&verdict(false, "not good")));
    world.script("report", Some(1), "kill -9 $PPID\nsleep 5\n");
    let killed = world.run(&["--max-iterations", "1"]);
    assert_ne!(killed.code, 0, "ralphd was killed in report");
    let saved = git(&world.repo, &["show", "refs/ralph/attempts/1:work.txt"]);
    assert_eq!(saved, "cycle 1\n");

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["interrupted", "committed"]);
    let progress = world.progress();
    let first = &progress["cycles"][0];
    assert_eq!(first["attempt_ref"], "refs/ralph/attempts/1", "{first}");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("death of the previous daemon"),
        "{first}"
    );
    assert_usd(&first["cost_usd"], 0.01 * 3.0 + 0.02);
    assert_eq!(
        git(
            &world.repo,
            &["for-each-ref", "--format=%(refname)", "refs/ralph/attempts"]
        )
        .trim(),
        "refs/ralph/attempts/1",
        "no second attempt for the same work"
    );
}

/// The agent commits with a message like ralphd's own, then ralphd is
/// killed before the verdict: the restart does not keep that unverified
/// commit; it saves it as the cycle's attempt and rolls the branch back.
#[test]
fn an_agent_commit_named_like_ralphds_is_not_kept_after_a_crash() {
    let world = World::new();
    world.script(
        "code-edit",
        Some(1),
        "echo agent > agent.txt; git add agent.txt; git -c user.name=a -c user.email=a@a commit -q -m 'ralphd: cycle 1: unverified'\n",
    );
    world.script("backtest", Some(1), "kill -9 $PPID\nsleep 5\n");
    let killed = world.run(&["--max-iterations", "1"]);
    assert_ne!(killed.code, 0, "ralphd was killed in backtest");

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["interrupted", "committed"]);
    assert_eq!(
        world.git_log(),
        ["ralphd: cycle 2: Add a line to work.txt", "initial"],
        "the unverified commit is off the branch"
    );
    assert_eq!(
        git(&world.repo, &["show", "refs/ralph/attempts/1:agent.txt"]),
        "agent\n",
        "the agent's work is saved as the attempt"
    );
    assert_eq!(
        world.progress()["cycles"][0]["attempt_ref"],
        "refs/ralph/attempts/1"
    );
}

/// A failed verdict saved the attempt but in-flight.json could not be
/// rewritten to name it (a full disk), then ralphd was killed: the restart
/// still records the cycle with the attempt's ref.
#[test]
fn an_attempt_in_flight_json_does_not_name_is_still_recorded_after_a_crash() {
    let world = World::new();
    world.reply("backtest", Some(1), &answer(&verdict(false, "not good")));
    world.script("report", Some(1), "kill -9 $PPID\nsleep 5\n");
    let killed = world.run(&["--max-iterations", "1"]);
    assert_ne!(killed.code, 0, "ralphd was killed in report");
    let path = world.home.join("state/in-flight.json");
    let mut in_flight = read_json(&path);
    in_flight
        .as_object_mut()
        .unwrap()
        .remove("attempt_ref")
        .expect("the attempt was noted");
    std::fs::write(&path, in_flight.to_string()).unwrap();

    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert_eq!(world.outcomes(), ["interrupted", "committed"]);
    assert_eq!(
        world.progress()["cycles"][0]["attempt_ref"],
        "refs/ralph/attempts/1"
    );
}
