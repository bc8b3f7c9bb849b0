//! The HTTP server of docs/design.md §11 against the built binary: every
//! route, the event stream's replay, the control routes seen in the agent's
//! calls, `ralphd pause|resume|stop|watch`, and each security refusal.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Makes the agent block in `phase` (its `call`-th run, or every run) until
/// [`release`] is called for that phase.
fn gate(world: &World, phase: &str, call: Option<u32>) {
    let gate = world.fake.join(format!("go-{phase}"));
    world.script(
        phase,
        call,
        &format!("while [ ! -e '{}' ]; do sleep 0.02; done", gate.display()),
    );
}

fn release(world: &World, phase: &str) {
    std::fs::write(world.fake.join(format!("go-{phase}")), "").unwrap();
}

fn world_waiting_in(phase: &str) -> World {
    let world = World::new();
    gate(&world, phase, None);
    world
}

/// status.json as the daemon last wrote it.
fn status_file(world: &World) -> Value {
    std::fs::read_to_string(world.home.join("state/status.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// The CSRF token of the running daemon.
fn csrf(world: &World) -> String {
    read_json(&world.home.join("state/http.json"))["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn post(addr: &str, path: &str, token: &str) -> Reply {
    http(addr, "POST", path, &[&format!("X-CSRF-Token: {token}")], "")
}

/// `ralphd <words> --home H`.
fn ralphd_on_home(world: &World, words: &[&str]) -> Outcome {
    world
        .ralphd()
        .args(words)
        .arg("--home")
        .arg(&world.home)
        .output()
}

/// The ids of state/events.jsonl (and its rotated part), in order.
fn logged_ids(world: &World) -> Vec<u64> {
    let mut ids = Vec::new();
    for name in ["events.1.jsonl", "events.jsonl"] {
        let text = std::fs::read_to_string(world.home.join("state").join(name)).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter_map(|event| event["id"].as_u64()),
        );
    }
    ids
}

/// A Server-Sent Events client reading in the background: each event as
/// (id, type, data).
struct SseClient {
    stream: TcpStream,
    events: Arc<Mutex<Vec<(u64, String, Value)>>>,
    comments: Arc<Mutex<Vec<String>>>,
}

impl SseClient {
    /// `GET path` (`/api/events…`) with `extra_header` (`Name: value\r\n` or "").
    fn connect(addr: &str, path: &str, extra_header: &str) -> SseClient {
        let mut stream = TcpStream::connect(addr).unwrap();
        // HTTP/1.0: the body is the rest of the connection, not chunked.
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra_header}\r\n"
        )
        .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let comments = Arc::new(Mutex::new(Vec::new()));
        let reader = BufReader::new(stream.try_clone().unwrap());
        let (seen, said) = (events.clone(), comments.clone());
        std::thread::spawn(move || {
            let (mut id, mut kind) = (0, String::new());
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if let Some(value) = line.strip_prefix("id: ") {
                    id = value.parse().unwrap();
                } else if let Some(value) = line.strip_prefix("event: ") {
                    kind = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    let data: Value = serde_json::from_str(value).unwrap();
                    seen.lock().unwrap().push((id, kind.clone(), data));
                } else if let Some(comment) = line.strip_prefix(':') {
                    said.lock().unwrap().push(comment.trim().to_owned());
                }
            }
        });
        SseClient {
            stream,
            events,
            comments,
        }
    }

    fn events(&self) -> Vec<(u64, String, Value)> {
        self.events.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<u64> {
        self.events().iter().map(|(id, _, _)| *id).collect()
    }

    /// Waits until an event satisfies `found`.
    fn wait_for(&self, what: &str, found: impl Fn(&str, &Value) -> bool) {
        assert!(
            poll_until(LIMIT, || self
                .events()
                .iter()
                .any(|(_, kind, data)| found(kind, data))),
            "no {what} event on the stream; got {:?}",
            self.events()
                .iter()
                .map(|e| e.1.clone())
                .collect::<Vec<_>>()
        );
    }

    fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[test]
fn the_dashboard_url_is_in_status_and_the_log_line_and_health_says_ok() {
    let world = world_waiting_in("scan");
    let mut daemon = world.start(&["--max-iterations", "1"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let status = ralphd_on_home(&world, &["status"]);
    assert!(
        status
            .stdout
            .contains(&format!("dashboard: http://{addr}/")),
        "{}",
        status.stdout
    );
    let json = ralphd_on_home(&world, &["status", "--json"]);
    let json: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["status"]["dashboard"], format!("http://{addr}/"));
    let health = http(&addr, "GET", "/health", &[], "");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
    let started = std::fs::read_to_string(world.home.join("state/events.jsonl")).unwrap();
    let started: Value = serde_json::from_str(started.lines().next().unwrap()).unwrap();
    assert_eq!(started["dashboard"], format!("http://{addr}/"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(world.home.join("state/http.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "http.json holds the CSRF token");

    release(&world, "scan");
    let outcome = daemon.wait_for_exit(LIMIT).expect("ralphd exits");
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains(&format!("dashboard: http://{addr}/")),
        "the start-up log line names the URL: {}",
        outcome.stderr
    );
    assert_eq!(
        status_file(&world)["dashboard"],
        Value::Null,
        "no stale URL once stopped"
    );
    assert!(!world.home.join("state/http.json").exists());
}

#[test]
fn every_read_route_answers_with_the_runs_records_texts_and_transcripts() {
    let world = World::new();
    gate(&world, "scan", Some(2));
    let mut daemon = world.start(&["--max-iterations", "2"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    assert!(
        poll_until(LIMIT, || world.calls("scan") == 2),
        "cycle 2 starts"
    );
    // status.json is rewritten within 100 ms of a change.
    assert!(poll_until(LIMIT, || status_file(&world)["cycle"] == 2));

    let api = http(&addr, "GET", "/api/status", &[], "");
    assert_eq!(api.status, 200);
    let api = api.json();
    let cli: Value =
        serde_json::from_str(&ralphd_on_home(&world, &["status", "--json"]).stdout).unwrap();
    let keys = |value: &Value| {
        value
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&api),
        keys(&cli),
        "the object of `ralphd status --json`"
    );
    assert_eq!(api["running"], true);
    assert_eq!(api["cycles"], cli["cycles"]);
    assert_eq!(api["status"]["cycle"], 2);

    let list = http(&addr, "GET", "/api/cycles", &[], "").json();
    assert_eq!(list["cycles"][0]["cycle"], 1);
    assert_eq!(list["cycles"][0]["outcome"], "committed");
    assert_eq!(list["more"], false);
    let none = http(&addr, "GET", "/api/cycles?limit=5&before=1", &[], "").json();
    assert_eq!(none["cycles"], Value::Array(vec![]));

    let one = http(&addr, "GET", "/api/cycles/1", &[], "");
    assert_eq!(one.status, 200, "{}", one.body);
    let one = one.json();
    assert_eq!(one["record"]["outcome"], "committed");
    assert!(
        one["commit"].as_str().is_some_and(|sha| sha.len() == 40),
        "{one:#}"
    );
    assert!(
        one["report"]
            .as_str()
            .is_some_and(|report| !report.is_empty())
    );
    assert!(one["diff"].is_object(), "{one:#}");
    let idea = one["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|phase| phase["phase"] == "idea")
        .unwrap();
    assert!(
        idea["text"]
            .as_str()
            .unwrap()
            .contains("Add a line to work.txt")
    );
    assert_eq!(idea["transcript"], "/api/cycles/1/idea/transcript");

    let transcript = http(&addr, "GET", "/api/cycles/1/idea/transcript", &[], "");
    assert_eq!(transcript.status, 200);
    assert_eq!(
        transcript.header("content-type"),
        Some("application/x-ndjson")
    );
    let stored = std::fs::read_to_string(world.home.join("state/cycles/1/idea.jsonl")).unwrap();
    assert_eq!(transcript.body, stored);

    for missing in [
        "/api/cycles/99",
        "/api/cycles/1/deploy/transcript",
        "/api/cycles/1/..%2F..%2Fralph.toml/transcript",
        "/api/cycles/99/scan/transcript",
    ] {
        let reply = http(&addr, "GET", missing, &[], "");
        assert_eq!(reply.status, 404, "{missing}: {}", reply.body);
    }
    release(&world, "scan");
    daemon.wait_for_exit(LIMIT).expect("exits").assert_code(1);
}

#[test]
fn the_event_stream_replays_what_a_client_missed_then_goes_live_across_a_restart() {
    let world = World::new();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let first_run = logged_ids(&world);
    assert!(first_run.len() > 5);

    // Second run: a client that saw up to id 3 gets 4… from the log, then live.
    gate(&world, "scan", None);
    let mut daemon = world.start(&["--max-iterations", "1"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let client = SseClient::connect(&addr, "/api/events", "Last-Event-ID: 3\r\n");
    client.wait_for("live phase_started", |kind, data| {
        kind == "phase_started" && data["phase"] == "scan"
    });
    let seen_before = client.ids();
    client.close();
    release(&world, "scan");
    daemon.wait_for_exit(LIMIT).expect("exits").assert_code(1);

    // Third run: the client comes back with the last id it saw, this time
    // as `?last_event_id=` (for clients that cannot set the header).
    std::fs::remove_file(world.fake.join("go-scan")).unwrap();
    let mut daemon = world.start(&["--max-iterations", "1"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let last = *seen_before.last().unwrap();
    let client = SseClient::connect(&addr, &format!("/api/events?last_event_id={last}"), "");
    client.wait_for("the third run's scan", |kind, data| {
        kind == "phase_started" && data["phase"] == "scan" && data["cycle"] == 3
    });
    let logged = logged_ids(&world);
    let mut seen = seen_before.clone();
    seen.extend(client.ids());
    assert_eq!(
        seen,
        logged[3..seen.len() + 3].to_vec(),
        "every event after id 3, once, in order"
    );
    let (_, kind, data) = &client.events()[0];
    assert_eq!(kind, data["type"].as_str().unwrap(), "event: is the type");

    let whole = SseClient::connect(&addr, "/api/events", "Last-Event-ID: 0\r\n");
    whole.wait_for("the third run's scan", |kind, data| {
        kind == "phase_started" && data["cycle"] == 3
    });
    assert_eq!(
        whole.ids()[..first_run.len()],
        first_run[..],
        "Last-Event-ID: 0 replays the whole log"
    );

    release(&world, "scan");
    let outcome = daemon
        .wait_for_exit(LIMIT)
        .expect("an open stream does not hold the exit");
    outcome.assert_code(1);
    client.wait_for("daemon_stopped", |kind, _| kind == "daemon_stopped");
}

#[test]
fn pause_resume_and_stop_reach_the_loop_between_phase_runs() {
    let world = World::new();
    gate(&world, "scan", Some(1));
    gate(&world, "report", Some(1));
    let mut daemon = world.start(&[]);
    dashboard_addr(&world.home, LIMIT);
    assert!(poll_until(LIMIT, || world.calls("scan") == 1));

    let paused = ralphd_on_home(&world, &["pause"]);
    paused.assert_code(0);
    assert!(paused.stdout.contains("pausing"), "{}", paused.stdout);
    assert!(
        ralphd_on_home(&world, &["pause"])
            .stdout
            .contains("already paused")
    );
    release(&world, "scan");
    assert!(
        poll_until(LIMIT, || status_file(&world)["waiting"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("paused"))),
        "the daemon shows it is paused: {}",
        status_file(&world)
    );
    assert_eq!(world.calls("idea"), 0, "no phase run starts while paused");
    assert!(!world.calls_log().contains("phase=idea"));

    let resumed = ralphd_on_home(&world, &["resume"]);
    assert!(resumed.stdout.contains("resumed"), "{}", resumed.stdout);
    assert!(
        poll_until(LIMIT, || world.calls("report") == 1),
        "it goes on"
    );
    assert!(world.calls_log().contains("phase=idea"));

    let stop = ralphd_on_home(&world, &["stop"]);
    assert!(
        stop.stdout.contains("stopping after the current cycle"),
        "{}",
        stop.stdout
    );
    release(&world, "report");
    let outcome = daemon.wait_for_exit(LIMIT).expect("stops after the cycle");
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(world.outcomes(), ["committed"], "the cycle ran to its end");
    assert_eq!(world.calls("scan"), 1, "no second cycle");
    let log = std::fs::read_to_string(world.home.join("state/events.jsonl")).unwrap();
    let types: Vec<String> = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["type"].to_string())
        .collect();
    let asked = types.iter().position(|t| t == "\"stop_requested\"");
    let finished = types.iter().position(|t| t == "\"cycle_finished\"");
    assert!(
        asked.is_some() && asked < finished,
        "the stop is told when asked, before the cycle ends: {types:?}"
    );
}

#[test]
fn stop_now_terminates_and_a_home_without_a_daemon_or_server_is_refused() {
    let world = world_waiting_in("scan");
    let nobody = ralphd_on_home(&world, &["pause"]);
    nobody.assert_code(2);
    assert!(
        nobody.stderr.contains("no ralphd runs on the home"),
        "{}",
        nobody.stderr
    );

    world.config("\n[http]\nlisten = \"\"\n");
    gate(&world, "scan", None);
    let mut daemon = world.start(&[]);
    assert!(poll_until(LIMIT, || world.calls("scan") == 1));
    assert_eq!(status_file(&world)["dashboard"], Value::Null);
    let off = ralphd_on_home(&world, &["stop"]);
    off.assert_code(2);
    assert!(
        off.stderr.contains("without its HTTP server"),
        "{}",
        off.stderr
    );

    let now = ralphd_on_home(&world, &["stop", "--now"]);
    now.assert_code(0);
    assert!(now.stdout.contains("SIGTERM"), "{}", now.stdout);
    let outcome = daemon.wait_for_exit(LIMIT).expect("SIGTERM stops it");
    assert_eq!(outcome.code, 130, "{}", outcome.stderr);
}

#[test]
fn a_breaker_reset_over_http_ends_the_breaker_wait_and_health_follows_it() {
    let world = World::new();
    world.reply("code-edit", None, &answer("nothing to change"));
    world.config(
        "\n[breaker]\nfailure_threshold = 1\nrecovery_timeout = \"1h\"\nmax_recovery_timeout = \"1h\"\n",
    );
    let mut daemon = world.start(&["--max-iterations", "3"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    // The loop waits on the open breaker after `cycles` cycles, and health says so.
    let waiting_on_breaker = |cycles: usize| {
        poll_until(LIMIT, || {
            world.home.join("state/progress.json").exists()
                && world.progress()["cycles"].as_array().map(Vec::len) == Some(cycles)
                && status_file(&world)["waiting"]["reason"] == "circuit breaker open"
                && http(&addr, "GET", "/health", &[], "").status == 503
        })
    };
    assert!(
        waiting_on_breaker(1),
        "health is down while the breaker is open"
    );
    let down = http(&addr, "GET", "/health", &[], "").json();
    assert_eq!(down["status"], "down");
    assert_eq!(down["checks"]["breaker"], "open", "{down:#}");
    assert_eq!(world.calls("scan"), 1);

    // `ralphd reset-breaker` asks the running daemon.
    let reset = ralphd_on_home(&world, &["reset-breaker"]);
    reset.assert_code(0);
    assert!(reset.stdout.contains("reset"), "{}", reset.stdout);
    assert!(
        poll_until(LIMIT, || world.calls("scan") == 2),
        "cycle 2 starts at once"
    );

    assert!(waiting_on_breaker(2), "cycle 2 changed nothing either");
    let reset = post(&addr, "/api/breaker/reset", &csrf(&world));
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert!(reset.json()["answer"].as_str().unwrap().contains("reset"));
    assert!(
        poll_until(LIMIT, || world.calls("scan") == 3),
        "cycle 3 starts at once"
    );
    let outcome = daemon.wait_for_exit(LIMIT).expect("exits");
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
}

#[test]
fn foreign_hosts_missing_csrf_big_bodies_and_cors_are_refused() {
    let world = world_waiting_in("scan");
    let mut daemon = world.start(&["--max-iterations", "1"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let port = addr.rsplit(':').next().unwrap();
    let token = csrf(&world);

    let rebound = http(&addr, "GET", "/api/status", &["Host: evil.example"], "");
    assert_eq!(rebound.status, 421, "DNS rebinding: {}", rebound.body);
    let rebound = http(
        &addr,
        "GET",
        "/health",
        &[&format!("Host: evil.example:{port}")],
        "",
    );
    assert_eq!(rebound.status, 421);
    let local = http(
        &addr,
        "GET",
        "/api/status",
        &[&format!("Host: localhost:{port}")],
        "",
    );
    assert_eq!(local.status, 200);

    let bare = http(&addr, "POST", "/api/pause", &[], "");
    assert_eq!(bare.status, 403, "{}", bare.body);
    let wrong = post(&addr, "/api/pause", "0123456789abcdef0123456789abcdef");
    assert_eq!(wrong.status, 403);
    let form = http(
        &addr,
        "POST",
        "/api/stop",
        &[
            "Content-Type: application/x-www-form-urlencoded",
            "Origin: http://evil.example",
        ],
        "a=b",
    );
    assert_eq!(form.status, 403, "a cross-site form cannot stop it");

    let big = "x".repeat(20 * 1024);
    let oversized = http(
        &addr,
        "POST",
        "/api/pause",
        &[&format!("X-CSRF-Token: {token}")],
        &big,
    );
    assert_eq!(oversized.status, 413, "{}", oversized.body);

    for reply in [
        http(
            &addr,
            "GET",
            "/api/status",
            &["Origin: http://evil.example"],
            "",
        ),
        http(
            &addr,
            "OPTIONS",
            "/api/pause",
            &[
                "Origin: http://evil.example",
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: x-csrf-token",
            ],
            "",
        ),
    ] {
        assert!(
            !reply
                .headers
                .iter()
                .any(|(key, _)| key.starts_with("access-control-")),
            "no CORS header: {:?}",
            reply.headers
        );
    }
    let fine = post(&addr, "/api/pause", &token);
    assert_eq!(fine.status, 200, "{}", fine.body);
    assert!(
        fine.json()["answer"]
            .as_str()
            .unwrap()
            .starts_with("pausing"),
        "none of the refused requests paused it: {}",
        fine.body
    );
    release(&world, "scan");
    let resumed = post(&addr, "/api/resume", &token);
    assert_eq!(resumed.status, 200);
    daemon.wait_for_exit(LIMIT).expect("exits").assert_code(1);
}

#[test]
fn with_a_token_file_every_route_but_health_needs_the_bearer_token() {
    let world = world_waiting_in("scan");
    let token_file = world.root.join("token");
    let token = "s3cret-token-0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    world.config(&format!(
        "\n[http]\ntoken_file = \"{}\"\n",
        token_file.display()
    ));
    let mut daemon = world.start(&["--max-iterations", "1"]);
    let addr = dashboard_addr(&world.home, LIMIT);

    assert_eq!(http(&addr, "GET", "/health", &[], "").status, 200);
    let missing = http(&addr, "GET", "/api/status", &[], "");
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert_eq!(http(&addr, "GET", "/", &[], "").status, 401);
    let wrong = http(
        &addr,
        "GET",
        "/api/status",
        &["Authorization: Bearer nope"],
        "",
    );
    assert_eq!(wrong.status, 401);
    let right = http(
        &addr,
        "GET",
        "/api/status",
        &[&format!("Authorization: Bearer {token}")],
        "",
    );
    assert_eq!(right.status, 200);
    let no_csrf = http(
        &addr,
        "POST",
        "/api/pause",
        &[&format!("Authorization: Bearer {token}")],
        "",
    );
    assert_eq!(
        no_csrf.status, 403,
        "the bearer token does not replace CSRF"
    );
    assert!(
        !std::fs::read_to_string(world.home.join("state/http.json"))
            .unwrap()
            .contains(token),
        "http.json names the token file, never the token"
    );
    let paused = ralphd_on_home(&world, &["pause"]);
    assert!(
        paused.stdout.contains("pausing"),
        "the CLI sends the token: {}{}",
        paused.stdout,
        paused.stderr
    );
    ralphd_on_home(&world, &["resume"]).assert_code(0);
    release(&world, "scan");
    daemon.wait_for_exit(LIMIT).expect("exits").assert_code(1);
    let log = std::fs::read_dir(world.home.join("logs"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(!log.contains(token), "the token is never logged");
}

#[test]
fn a_public_address_without_a_private_token_file_or_a_busy_port_is_a_usage_error() {
    let world = World::new();
    world.config("\n[http]\nlisten = \"0.0.0.0:0\"\n");
    let open = world.run(&["--max-iterations", "1"]);
    open.assert_code(2);
    assert!(open.stderr.contains("[http] token_file"), "{}", open.stderr);

    let token_file = world.root.join("token");
    std::fs::write(&token_file, "a-token-that-is-long-enough\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    world.config(&format!(
        "\n[http]\nlisten = \"0.0.0.0:0\"\ntoken_file = \"{}\"\n",
        token_file.display()
    ));
    let readable = world.run(&["--max-iterations", "1"]);
    readable.assert_code(2);
    assert!(readable.stderr.contains("mode 0644"), "{}", readable.stderr);
    assert!(readable.stderr.contains("chmod 600"), "{}", readable.stderr);

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap();
    world.config(&format!("\n[http]\nlisten = \"{taken}\"\n"));
    let clash = world.run(&["--max-iterations", "1"]);
    clash.assert_code(2);
    assert!(clash.stderr.contains("[http] listen"), "{}", clash.stderr);
    assert!(
        clash.stderr.contains(&taken.to_string()),
        "{}",
        clash.stderr
    );
    assert_eq!(world.calls("scan"), 0, "nothing ran");
}

#[test]
fn a_client_that_never_reads_neither_slows_the_cycles_nor_holds_the_exit() {
    let world = World::new();
    // Many events: 3000 tool uses with long summaries in every scan.
    let tool_use = |n: usize| {
        serde_json::json!({"type": "assistant", "message": {"content": [{"type": "tool_use",
            "id": format!("t{n}"), "name": "Bash",
            "input": {"command": format!("echo {n} {}", "x".repeat(190))}}]}, "session_id": "s"})
        .to_string()
    };
    let mut lines = vec![init_line()];
    lines.extend((0..3000).map(tool_use));
    lines.push(result_line("scanned"));
    world.reply("scan", None, &lines);
    gate(&world, "idea", Some(1));
    let mut daemon = world.start(&["--max-iterations", "3"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    // Connects and asks for the stream, then never reads a byte.
    let mut stuck = TcpStream::connect(&addr).unwrap();
    write!(
        stuck,
        "GET /api/events?last_event_id=0 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let reader = SseClient::connect(&addr, "/api/events", "");
    release(&world, "idea");
    let started = Instant::now();
    let outcome = daemon.wait_for_exit(LIMIT).expect("the run ends");
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(world.outcomes().len(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "three cycles and the exit took {:?}",
        started.elapsed()
    );
    // A reading client kept up or was told it lagged; it never blocked anyone.
    assert!(
        reader
            .events()
            .iter()
            .any(|(_, kind, _)| kind == "daemon_stopped")
            || reader
                .comments
                .lock()
                .unwrap()
                .iter()
                .any(|c| c == "lagged"),
        "the reader saw the end or was dropped with `: lagged`"
    );
    drop(stuck);
}

#[test]
fn a_flood_of_connections_never_takes_the_descriptors_the_loop_needs() {
    // The server keeps 128 connections (docs/design.md §11.2); twice that
    // many idle sockets come in while a cycle waits.
    const CAP: usize = 128;
    let world = World::new();
    gate(&world, "idea", Some(1));
    let mut daemon = world.start(&["--max-iterations", "2"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let fds = format!("/proc/{}/fd", daemon.pid());
    let open = || std::fs::read_dir(&fds).map_or(0, |dir| dir.count());
    poll_until(LIMIT, || status_file(&world)["phase"] == "idea");
    let before = open();
    let flood: Vec<TcpStream> = (0..2 * CAP)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    assert!(
        poll_until(LIMIT, || open() >= before + CAP),
        "the server takes up to its cap: {} descriptors open, {before} before",
        open()
    );
    // The loop goes on under the flood, and at no time does the server
    // hold more than its cap.
    release(&world, "idea");
    let mut peak = open();
    let deadline = Instant::now() + LIMIT;
    let outcome = loop {
        assert!(
            Instant::now() < deadline,
            "the run did not end under the flood"
        );
        peak = peak.max(open());
        if let Some(outcome) = daemon.wait_for_exit(Duration::from_millis(20)) {
            break outcome;
        }
    };
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(world.outcomes().len(), 2, "both cycles ran");
    assert!(
        peak < before + CAP + 32,
        "{peak} descriptors open at the peak, {before} before the flood"
    );
    drop(flood);
}

#[test]
fn watch_shows_the_last_events_then_follows_a_new_run() {
    let world = World::new();
    world.run(&["--max-iterations", "1"]).assert_code(1);
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_ralphd"))
        .args(["watch", "--home"])
        .arg(&world.home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            seen.lock().unwrap().push(line);
        }
    });
    let shows = |needle: &str| {
        poll_until(LIMIT, || {
            lines
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains(needle))
        })
    };
    assert!(
        shows("cycle 1 committed: Add a line to work.txt"),
        "{:?}",
        lines.lock().unwrap()
    );
    assert!(
        shows("── ralphd is not running"),
        "{:?}",
        lines.lock().unwrap()
    );
    assert!(
        shows("cycle 1 · code-edit succeeded"),
        "{:?}",
        lines.lock().unwrap()
    );
    world.run(&["--max-iterations", "1"]).assert_code(1);
    assert!(shows("cycle 2 committed"), "{:?}", lines.lock().unwrap());
    assert!(
        shows("ralphd stopped: reached --max-iterations"),
        "{:?}",
        lines.lock().unwrap()
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let first = lines.lock().unwrap()[0].clone();
    assert!(
        first.len() > 9 && first.as_bytes()[2] == b':' && first.as_bytes()[5] == b':',
        "lines start with the local time: {first}"
    );
}

#[test]
fn a_compressed_cycle_still_shows_its_texts_and_transcripts() {
    let world = World::new();
    world.config("\n[state]\ncompress_after = 1\n");
    gate(&world, "scan", Some(3));
    let mut daemon = world.start(&["--max-iterations", "3"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let compressed = world.home.join("state/cycles/1/idea.jsonl.gz");
    assert!(
        poll_until(LIMIT, || compressed.exists()),
        "retention compressed cycle 1"
    );
    let mut stored = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&compressed).unwrap()),
        &mut stored,
    )
    .unwrap();
    let transcript = http(&addr, "GET", "/api/cycles/1/idea/transcript", &[], "");
    assert_eq!(transcript.status, 200);
    assert_eq!(transcript.body, stored);
    let one = http(&addr, "GET", "/api/cycles/1", &[], "").json();
    assert!(
        one["report"]
            .as_str()
            .is_some_and(|report| !report.is_empty()),
        "{one:#}"
    );
    release(&world, "scan");
    daemon.wait_for_exit(LIMIT).expect("exits").assert_code(1);
}
