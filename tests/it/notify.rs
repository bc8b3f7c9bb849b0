//! Getting told (docs/design.md §12): hooks, webhooks in each format, a
//! receiver that hangs or fails, the bounded queue, the heartbeat and
//! `stalled`, against receivers the tests start on 127.0.0.1.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

use crate::support::*;

/// One request a [`Receiver`] got.
#[derive(Clone, Debug)]
struct Request {
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    at: Instant,
    /// Wall clock, to compare with times a fake phase wrote.
    wall: std::time::SystemTime,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("{} is not JSON: {error}", self.body))
    }
}

/// A tiny HTTP server: records every request; paths under `/hang/` never
/// get an answer, paths under `/fail/` get 500, the rest 200.
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Request>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(record).with_state(log.clone());
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = axum::serve(listener, app).into_future() => {}
                    _ = stop => {}
                }
            });
        });
        Receiver {
            url,
            log,
            _shutdown: shutdown,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    fn to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }
}

async fn record(
    State(log): State<Arc<Mutex<Vec<Request>>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    log.lock().unwrap().push(Request {
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
    });
    if path.starts_with("/hang/") {
        std::future::pending::<()>().await;
    }
    if path.starts_with("/fail/") {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::OK
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["type"] == kind)
        .collect()
}

/// Milliseconds between two events' `at`.
fn millis_between(from: &Value, to: &Value) -> i64 {
    let at = |event: &Value| {
        event["at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    at(to).as_millisecond() - at(from).as_millisecond()
}

#[test]
fn a_hook_gets_the_event_json_on_stdin_and_the_ralph_variables() {
    let world = World::new();
    let out = world.root.join("hook-out");
    std::fs::create_dir_all(&out).unwrap();
    world.config(&format!(
        r#"
[[hooks]]
on = ["cycle_finished", "daemon_stopped"]
command = ["sh", "-c", "cat > \"$0/$RALPH_EVENT.json\"; env | grep '^RALPH_' | sort > \"$0/$RALPH_EVENT.env\"", "{}"]
timeout = "10s"
"#,
        out.display()
    ));
    world.run(&["--max-iterations", "1"]).assert_code(1);

    let finished: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cycle_finished.json")).unwrap())
            .unwrap();
    assert_eq!(finished["type"], "cycle_finished");
    assert_eq!(finished["cycle"], 1);
    assert_eq!(finished["outcome"], "committed");
    assert_eq!(finished["title"], "Add a line to work.txt");
    let logged = of_type(&world.logged_events(), "cycle_finished")[0].clone();
    assert_eq!(finished, logged, "the hook gets the event line as logged");
    let env = std::fs::read_to_string(out.join("cycle_finished.env")).unwrap();
    assert!(env.contains("RALPH_EVENT=cycle_finished\n"), "{env}");
    assert!(env.contains("RALPH_CYCLE=1\n"), "{env}");
    assert!(
        env.contains(&format!("RALPH_HOME={}\n", world.home.display())),
        "{env}"
    );
    assert!(
        env.contains(&format!("RALPH_REPO={}\n", world.repo.display())),
        "{env}"
    );
    // The last event reaches the hook before the daemon exits.
    let stopped: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("daemon_stopped.json")).unwrap())
            .unwrap();
    assert_eq!(stopped["exit_code"], 1);
    let env = std::fs::read_to_string(out.join("daemon_stopped.env")).unwrap();
    assert!(!env.contains("RALPH_CYCLE="), "{env}");
}

#[test]
fn each_webhook_format_posts_what_its_service_accepts_with_headers_from_the_environment() {
    let world = World::new();
    let receiver = Receiver::start();
    let url = &receiver.url;
    world.config(&format!(
        r#"
[[webhooks]]
url = "{url}/json"
on = ["cycle_finished"]
format = "json"
header_env = {{ Authorization = "NOTIFY_TEST_AUTH" }}

[[webhooks]]
url = "{url}/slack"
on = ["cycle_finished"]
format = "slack"

[[webhooks]]
url = "{url}/ntfy"
on = ["cycle_finished"]
format = "ntfy"

[[webhooks]]
url = "{url}/discord"
on = ["cycle_finished"]
format = "discord"
header_env = {{ X-Missing = "NOTIFY_TEST_UNSET" }}
"#
    ));
    let secret = "Bearer s3cret-notify-value";
    let outcome = world
        .run_command(&["--max-iterations", "1"])
        .env("NOTIFY_TEST_AUTH", secret)
        .output();
    outcome.assert_code(1);

    let json = &receiver.to("/json")[..];
    assert_eq!(json.len(), 1, "{json:?}");
    assert_eq!(json[0].json()["type"], "cycle_finished");
    assert_eq!(json[0].json()["cycle"], 1);
    assert_eq!(json[0].headers["content-type"], "application/json");
    assert_eq!(json[0].headers["authorization"], secret);

    let slack = receiver.to("/slack")[0].json();
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("cycle 1 committed: Add a line to work.txt"),
        "{text}"
    );
    assert_eq!(slack["blocks"][0]["type"], "section");
    assert_eq!(slack["blocks"][0]["text"]["type"], "mrkdwn");
    assert!(
        slack["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("cost $")
    );

    let ntfy = &receiver.to("/ntfy")[0];
    assert!(ntfy.headers["content-type"].starts_with("text/plain"));
    assert!(
        ntfy.body
            .starts_with("cycle 1 committed: Add a line to work.txt\n"),
        "{}",
        ntfy.body
    );
    assert!(
        ntfy.headers["title"].starts_with("=?UTF-8?B?"),
        "{:?}",
        ntfy.headers
    );
    assert_eq!(ntfy.headers["priority"], "3");
    assert_eq!(ntfy.headers["tags"], "white_check_mark");

    let discord = &receiver.to("/discord")[0];
    let body = discord.json();
    assert!(
        body["content"]
            .as_str()
            .unwrap()
            .contains("cycle 1 committed"),
        "{body}"
    );
    assert_eq!(
        body["embeds"][0]["title"],
        "cycle 1 committed: Add a line to work.txt"
    );
    assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
    assert!(!discord.headers.contains_key("x-missing"));

    assert!(
        outcome.stderr.contains("NOTIFY_TEST_UNSET"),
        "an unset header variable is warned about: {}",
        outcome.stderr
    );
    let home_logs = std::fs::read_dir(world.home.join("logs"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
                .collect::<String>()
        })
        .unwrap_or_default();
    for text in [&outcome.stderr, &outcome.stdout, &home_logs] {
        assert!(
            !text.contains("s3cret"),
            "a header value was logged: {text}"
        );
    }
}

#[test]
fn a_receiver_that_hangs_or_fails_does_not_slow_the_cycles_and_is_retried_as_configured() {
    const CYCLES: usize = 3;
    const HANG_TIMEOUT_MS: i64 = 30_000;
    // Without receivers: how long the cycles take here.
    let baseline = World::new();
    baseline.run(&["--max-iterations", "3"]).assert_code(1);
    let plain = baseline.logged_events();
    let plain_span = millis_between(
        of_type(&plain, "daemon_started")[0],
        of_type(&plain, "cycle_finished")[CYCLES - 1],
    );

    let world = World::new();
    let receiver = Receiver::start();
    let url = &receiver.url;
    world.config(&format!(
        r#"
[[webhooks]]
url = "{url}/hang/x"
on = ["*"]
timeout = "30s"
max_attempts = 2

[[webhooks]]
url = "{url}/fail/x"
on = ["daemon_started"]
timeout = "5s"
max_attempts = 3
"#
    ));
    let started = Instant::now();
    let outcome = world.run(&["--max-iterations", "3"]);
    outcome.assert_code(1);
    let ran_for = started.elapsed();
    let with = world.logged_events();
    let cycles = of_type(&with, "cycle_finished");
    assert_eq!(cycles.len(), CYCLES);
    let hanging_span = millis_between(of_type(&with, "daemon_started")[0], cycles[CYCLES - 1]);
    eprintln!("cycles took {plain_span} ms without receivers, {hanging_span} ms with");
    // All cycles were done before the hanging receiver's first request could
    // even time out: nothing waited on it.
    assert!(
        hanging_span < HANG_TIMEOUT_MS,
        "the cycles took {hanging_span} ms"
    );
    // The exit waited a few seconds for the queues, not for the receiver.
    assert!(
        ran_for < Duration::from_millis(HANG_TIMEOUT_MS as u64),
        "{ran_for:?}"
    );
    assert_eq!(
        receiver.to("/hang/x").len(),
        1,
        "the hanging receiver holds the first request; the rest wait behind it"
    );
    assert!(
        outcome
            .stderr
            .contains("notifications not sent before the daemon stopped"),
        "{}",
        outcome.stderr
    );
    // max_attempts = 3 against a receiver that always fails.
    let failed = receiver.to("/fail/x");
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|request| request.json()["type"] == "daemon_started")
    );
    assert!(failed[1].at > failed[0].at && failed[2].at > failed[1].at);
    assert!(
        outcome.stderr.contains("notification failed"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_full_queue_drops_the_oldest_and_counts_it() {
    let world = World::new();
    world.config(
        r#"
[notify]
queue_size = 2

[[hooks]]
on = ["*"]
command = ["sh", "-c", "sleep 0.3"]
"#,
    );
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(1);
    // The hooks ran beside the phases: the sweeps after each phase left them
    // alone, and a hook's end took nothing of the agent's with it.
    assert_eq!(world.outcomes(), ["committed"]);
    assert!(
        !outcome.stderr.contains("notification failed"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains("notification queue full: the oldest notification was dropped"),
        "{}",
        outcome.stderr
    );
    let totals = outcome
        .stderr
        .lines()
        .find(|line| line.contains("notifications at exit"))
        .unwrap_or_else(|| panic!("no totals line: {}", outcome.stderr));
    let dropped: u64 = totals
        .split("dropped=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("{totals}"));
    assert!(dropped > 0, "{totals}");
}

#[test]
fn the_heartbeat_pings_start_while_running_and_the_exit_code() {
    let world = World::new();
    let receiver = Receiver::start();
    world.config(&format!(
        "[notify]\nheartbeat_url = \"{}/ping/abc\"\nheartbeat_every = \"200ms\"\n",
        receiver.url
    ));
    // A phase long enough for a few pings while it runs; it notes when it
    // slept (nanoseconds since the epoch).
    let window = world.root.join("phase-window");
    world.script(
        "code-edit",
        None,
        &format!(
            "date +%s%N >> '{0}'; sleep 1.5; date +%s%N >> '{0}'\n",
            window.display()
        ),
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let paths: Vec<String> = receiver
        .requests()
        .into_iter()
        .map(|request| request.path)
        .collect();
    assert_eq!(
        paths.first().map(String::as_str),
        Some("/ping/abc/start"),
        "{paths:?}"
    );
    assert_eq!(
        paths.last().map(String::as_str),
        Some("/ping/abc/1"),
        "{paths:?}"
    );
    // While the agent's phase ran, the loop (waiting on it) stayed alive.
    let times: Vec<u128> = std::fs::read_to_string(&window)
        .unwrap()
        .lines()
        .map(|line| line.trim().parse().unwrap())
        .collect();
    let during_phase = receiver
        .to("/ping/abc")
        .iter()
        .filter(|ping| {
            let at = ping
                .wall
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            times[0] < at && at < times[1]
        })
        .count();
    assert!(
        during_phase >= 3,
        "{during_phase} pings during a 1.5 s phase: {paths:?}"
    );
}

#[test]
fn a_daemon_killed_with_sigkill_stops_pinging() {
    let world = World::new();
    let receiver = Receiver::start();
    world.config(&format!(
        "[notify]\nheartbeat_url = \"{}/ping/k\"\nheartbeat_every = \"200ms\"\n",
        receiver.url
    ));
    world.script("code-edit", None, "sleep 20.4242\n");
    let mut daemon = world.start(&[]);
    let alive = || receiver.to("/ping/k").len();
    assert!(
        poll_until(Duration::from_secs(30), || alive() >= 3),
        "no pings while the phase runs: {:?}",
        receiver.requests()
    );
    daemon.kill();
    let after_kill = receiver.requests().len();
    // Three heartbeat periods without a new ping.
    let pinged_again = poll_until(Duration::from_millis(600), || {
        receiver.requests().len() > after_kill
    });
    assert!(!pinged_again, "{:?}", receiver.requests());
    assert!(receiver.to("/ping/k/start").len() == 1);
    assert!(
        receiver
            .requests()
            .iter()
            .all(|request| !request.path.ends_with("/0") && !request.path.ends_with("/1")),
        "a dead daemon sends no exit ping"
    );
    // The fake agent's sleep outlived the daemon (its shell died with it).
    for left in processes_under(&world.root) {
        // SAFETY: kill(2) takes plain integers; the pid is a process this test started.
        unsafe { libc::kill(left.pid, libc::SIGKILL) };
    }
}

#[test]
fn a_bad_webhook_stops_the_start_with_exit_2_naming_the_entry_and_the_fix() {
    let world = World::new();
    world.config("[[webhooks]]\nurl = \"https://ntfy.sh/t\"\non = [\"cycle_ended\"]\n");
    let outcome = world.run(&["--max-iterations", "1"]);
    outcome.assert_code(2);
    assert!(
        outcome.stderr.contains("[[webhooks]] #1.on")
            && outcome.stderr.contains("\"cycle_ended\" is not one")
            && outcome.stderr.contains("cycle_finished"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn stalled_fires_once_per_window_while_cycles_run_without_a_commit() {
    let world = World::new();
    let out = world.root.join("stalls");
    world.config(&format!(
        r#"
[notify]
stall_after = "3s"

[breaker]
failure_threshold = 100

[[hooks]]
on = ["stalled"]
command = ["sh", "-c", "cat >> \"$0\"", "{}"]
"#,
        out.display()
    ));
    // Every cycle changes nothing (no commit) and takes a while.
    world.script("scan", None, "sleep 0.4\n");
    world.reply("code-edit", None, &answer("nothing to change"));
    world.run(&["--max-iterations", "12"]).assert_code(1);

    let all = world.logged_events();
    let cycles = of_type(&all, "cycle_finished");
    assert_eq!(cycles.len(), 12);
    assert!(cycles.iter().all(|cycle| cycle["outcome"] != "committed"));
    let stalls = of_type(&all, "stalled");
    let span = millis_between(of_type(&all, "daemon_started")[0], cycles[11]);
    let windows = (span / 3000) as usize;
    assert!(!stalls.is_empty(), "no stalled event in {span} ms");
    assert!(
        stalls.len() <= windows + 1,
        "{} stalled events in {windows} windows",
        stalls.len()
    );
    // Not once per cycle: the cycles after the first alert mostly stay quiet.
    let first_alert = all
        .iter()
        .position(|event| event["type"] == "stalled")
        .unwrap();
    let cycles_after = all[first_alert..]
        .iter()
        .filter(|event| event["type"] == "cycle_finished")
        .count();
    assert!(
        stalls.len() < cycles_after,
        "{} alerts for {cycles_after} cycles",
        stalls.len()
    );
    let counts: Vec<u64> = stalls
        .iter()
        .map(|stall| stall["cycles_without_commit"].as_u64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|pair| pair[0] < pair[1]),
        "{counts:?}"
    );
    // The hook heard each of them.
    let told = std::fs::read_to_string(&out).unwrap();
    assert_eq!(told.lines().count(), stalls.len(), "{told}");
}
