//! The web page in a real browser (docs/design.md §11): Debian's `chromium`,
//! headless, driven by `tests/browser/page.test.mjs` (playwright-core)
//! against the built daemon with the fake agent. The agent waits in each
//! phase for a gate file the script creates, so the page is seen following
//! the run step by step; the daemon's own record then shows what the
//! buttons did. Without chromium or `npm ci --prefix tests/browser` the test
//! says so and passes, except under `CI=true`, where it fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Running, World, answer, fake_claude_path, init_line, poll_until, result_line, verdict,
};

/// The browser the script drives: `RALPHD_CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("RALPHD_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    if !chromium().exists() {
        return Some(format!(
            "{} is missing (apt-get install chromium)",
            chromium().display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is missing".to_owned());
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some("playwright-core is not installed (npm ci --prefix tests/browser)".to_owned());
    }
    None
}

/// Shell for the fake agent: wait until the browser script lets this phase
/// call end (`gate.<phase>.<call>`) or opened every gate (`open`).
const GATE: &str = r#"while [ ! -e "$dir/open" ] && [ ! -e "$dir/gate.$phase.$n" ]; do sleep 0.05; done
"#;

fn tool_use(name: &str, input: Value) -> String {
    json!({"type": "assistant", "session_id": "s-1", "message": {"content": [
        {"type": "tool_use", "id": "t1", "name": name, "input": input}]}})
    .to_string()
}

fn text(words: &str) -> String {
    json!({"type": "assistant", "session_id": "s-1", "message": {"content": [
        {"type": "text", "text": words}]}})
    .to_string()
}

/// Whether the browser tests cannot run here: says so on stderr, and fails
/// under `CI=true`, where they must run.
fn skipped() -> bool {
    let Some(missing) = missing_tools() else {
        return false;
    };
    let hint = format!(
        "the browser tests (tests/it/browser.rs) did NOT run: {missing}. \
         .ci/run installs what they need"
    );
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("the browser tests cannot be skipped under CI=true: {hint}");
    }
    let _ = writeln!(std::io::stderr(), "\nNOTE: {hint}\n");
    true
}

/// The dashboard URL of the daemon started on `world`, from its
/// `daemon_started` event.
fn dashboard(world: &World, daemon: &mut Running) -> String {
    let mut url = None;
    assert!(
        poll_until(Duration::from_secs(20), || {
            url = world
                .logged_events()
                .iter()
                .find_map(|event| event["dashboard"].as_str().map(str::to_owned));
            url.is_some()
        }),
        "the daemon never published its dashboard URL: {}",
        daemon.kill().stderr
    );
    url.unwrap()
}

/// Runs `tests/browser/<script>` against `url` with `env`: whether it
/// passed, and what it printed.
fn run_script(script: &str, url: &str, env: &[(&str, &Path)]) -> (bool, String) {
    let mut command = Command::new("node");
    command
        .arg(browser_dir().join(script))
        .env("RALPHD_URL", url)
        .env("SHOTS_DIR", shots_dir())
        .env("CHROMIUM", chromium());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("node runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// Where the screenshots go: `target/`.
fn shots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

#[test]
fn the_page_follows_a_run_live_opens_a_report_and_its_buttons_pause_resume_and_stop_the_daemon() {
    if skipped() {
        return;
    }
    let world = World::new();
    // Phases wait for the browser, not the clock: generous agent timeouts.
    // The HTTP server is on by default, on a free loopback port.
    std::fs::write(
        world.home.join("ralph.toml"),
        format!(
            "[loop]\nsleep_between_iterations = \"0s\"\n\n[agent]\ncommand = \"{}\"\n\
             phase_timeout = \"10m\"\nidle_timeout = \"10m\"\nstop_grace = \"300ms\"\n",
            fake_claude_path().display()
        ),
    )
    .unwrap();
    for phase in ["scan", "idea", "code-edit", "backtest", "report"] {
        let edit = if phase == "code-edit" {
            "echo \"cycle $RALPH_CYCLE\" >> work.txt\n"
        } else {
            ""
        };
        world.script(phase, None, &format!("{GATE}{edit}"));
    }
    world.reply(
        "scan",
        None,
        &[
            init_line(),
            tool_use("Glob", json!({"pattern": "**/*.md"})),
            result_line("scan: a small project"),
        ],
    );
    // Five cycles run before the pause, with their own titles and costs,
    // two of them rolled back, so the table and the charts have a story.
    let titles = [
        "Add a line to work.txt",
        "Count the lines of work.txt",
        "Explain work.txt in the README",
        "Sort the lines of work.txt",
        "Number the lines of work.txt",
        "Trim trailing spaces in work.txt",
    ];
    let costs = [0.21, 0.34, 0.12, 0.27, 0.41, 0.18];
    for (index, (title, cost)) in titles.iter().zip(costs).enumerate() {
        let call = Some(index as u32 + 1);
        let mut idea = vec![
            init_line(),
            tool_use("Read", json!({"file_path": "README.md"})),
        ];
        if index == 0 {
            // Agent text is untrusted: the page must show this as text.
            idea.push(text(
                "Try <b>this</b> <img src=x onerror=\"window.pwned=true\"> next.",
            ));
        }
        idea.push(result_line(&format!("TITLE: {title}\n\nThe idea.")));
        world.reply("idea", call, &idea);
        let mut edited: Value = serde_json::from_str(&result_line("edited work.txt")).unwrap();
        edited["total_cost_usd"] = json!(cost);
        world.reply(
            "code-edit",
            call,
            &[
                init_line(),
                tool_use(
                    "Edit",
                    json!({"file_path": "work.txt", "old_string": "", "new_string": "x"}),
                ),
                edited.to_string(),
            ],
        );
    }
    world.reply("backtest", None, &answer(&verdict(true, "fine")));
    for call in [2, 5] {
        world.reply(
            "backtest",
            Some(call),
            &answer(&verdict(false, "the line is wrong")),
        );
    }
    world.reply(
        "report",
        None,
        // The write-up in report.md is agent text too.
        &answer("Done, **all good**. <img src=x onerror=\"window.pwned=true\"><script>window.pwned=true</script>\n\n```json\n{\"summary\":\"added a line\",\"learnings\":[\"work.txt grows\"],\"patterns\":[]}\n```"),
    );

    let mut daemon = world.start(&["--max-iterations", "9"]);
    let url = dashboard(&world, &mut daemon);
    let (passed, said) = run_script("page.test.mjs", &url, &[("FAKE_DIR", &world.fake)]);
    // Whatever the script saw, the daemon must not outlive the test.
    std::fs::write(world.fake.join("open"), "").unwrap();
    let exit = daemon.wait_for_exit(Duration::from_secs(30));
    assert!(passed, "the browser script failed:\n{said}");
    let exit = exit.expect("the daemon ends after the cycle Stop asked for");
    exit.assert_code(1);

    // The daemon's own record of what the buttons did.
    let all = world.logged_events();
    let position = |kind: &str| {
        all.iter()
            .position(|event| event["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event: {all:?}"))
    };
    let (paused, resumed) = (position("paused"), position("resumed"));
    assert!(paused < resumed);
    assert!(
        !all[paused..resumed]
            .iter()
            .any(|event| event["type"] == "phase_started"),
        "no phase run started while paused"
    );
    assert_eq!(
        all[paused - 1]["type"],
        "phase_finished",
        "the pause waited for the running phase: {:?}",
        all[paused - 1]
    );
    let stopped = all.last().unwrap();
    assert_eq!(stopped["type"], "daemon_stopped");
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap()
            .contains("stopped on request"),
        "{stopped}"
    );
    assert_eq!(
        world.outcomes(),
        [
            "committed",
            "rolled_back",
            "committed",
            "committed",
            "rolled_back",
            "committed"
        ]
    );
    for shot in ["page.png", "page-phone.png", "page-dark.png"] {
        assert!(shots_dir().join(shot).exists(), "{shot} was not saved");
    }
}

#[test]
fn the_page_says_why_the_loop_waits_and_until_when() {
    if skipped() {
        return;
    }
    let world = World::new();
    // Two phase runs an hour: scan and idea run, code-edit waits 30 min.
    world.config("\n[rate_limit]\nrequests_per_hour = 2\n");
    let mut daemon = world.start(&["--max-iterations", "1"]);
    let url = dashboard(&world, &mut daemon);
    assert!(
        poll_until(Duration::from_secs(20), || world
            .logged_events()
            .iter()
            .any(|event| event["type"] == "waiting")),
        "the limiter never held the loop: {}",
        daemon.kill().stderr
    );
    let (passed, said) = run_script("wait.test.mjs", &url, &[]);
    daemon.signal(libc::SIGTERM);
    daemon
        .wait_for_exit(Duration::from_secs(20))
        .expect("the daemon stops on SIGTERM");
    assert!(passed, "the browser script failed:\n{said}");
}

#[test]
fn the_page_comes_back_by_itself_after_a_daemon_restart_and_misses_nothing() {
    if skipped() {
        return;
    }
    let world = World::new();
    // The same address across the restart: a port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    world.config(&format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    world.script("scan", None, GATE);
    let mut first = world.start(&["--max-iterations", "9"]);
    let url = dashboard(&world, &mut first);
    let fake = world.fake.clone();
    let script = std::thread::spawn(move || {
        run_script("restart.test.mjs", &url, &[("FAKE_DIR", fake.as_path())])
    });
    // Whatever the script does, this test ends: it fails within its own timeouts.
    let loaded = poll_until(Duration::from_secs(40), || {
        world.fake.join("loaded").exists() || script.is_finished()
    });
    first.signal(libc::SIGTERM);
    first
        .wait_for_exit(Duration::from_secs(20))
        .expect("the first daemon stops on SIGTERM")
        .assert_code(130);
    let mut second = world.start(&["--max-iterations", "9"]);
    let (passed, said) = script.join().expect("the script's thread");
    second.signal(libc::SIGTERM);
    second.wait_for_exit(Duration::from_secs(20));
    assert!(loaded && passed, "the browser script failed:\n{said}");
}
