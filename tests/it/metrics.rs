//! The metrics of docs/design.md §11 against the built binary and the real
//! Prometheus tools (Debian's `prometheus` package): a scrape passes
//! `promtool check metrics`, the counters go on across a restart, the alert
//! rules load and pass their unit tests, and a real Prometheus server
//! scrapes the daemon. Without the tools the tests say so and pass, except
//! under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// A Prometheus tool from PATH; `None` (after saying so) when it is not
/// installed, which fails the test under `CI=true`.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let hint = format!(
            "`{name}` is not installed (apt-get install prometheus): the real-Prometheus test did not run"
        );
        if std::env::var("CI").is_ok_and(|value| value == "true") {
            panic!("{hint}");
        }
        eprintln!("NOTICE: {hint}");
    }
    found
}

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The value of one series in a scrape (`name{labels}` exactly as
/// rendered), `None` without such a line.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

/// A world whose agent blocks in scan call `call` until `fake/go` exists.
fn world_blocking_in_scan(call: u32) -> World {
    let world = World::new();
    let gate = world.fake.join("go");
    world.script(
        "scan",
        Some(call),
        &format!("while [ ! -e '{}' ]; do sleep 0.02; done", gate.display()),
    );
    world
}

fn release(world: &World) {
    std::fs::write(world.fake.join("go"), "").unwrap();
}

/// GET /metrics until `ready` holds for the scrape (the daemon is up and
/// its metrics follow what the test waits for).
fn scrape_until(addr: &str, accept: &str, ready: impl Fn(&str) -> bool) -> Reply {
    let mut last = None;
    let done = poll_until(LIMIT, || {
        let reply = http(addr, "GET", "/metrics", &[accept], "");
        let ok = reply.status == 200 && ready(&reply.body);
        last = Some(reply);
        ok
    });
    let last = last.expect("at least one scrape");
    assert!(done, "the scrape never got there: {last:?}");
    last
}

#[test]
fn a_scrape_passes_promtool_and_a_restart_goes_on_from_the_last_runs_counts() {
    let world = world_blocking_in_scan(2);
    // The first run: one committed cycle, five phase runs of 0.01 USD each.
    world.run(&["--max-iterations", "1"]).assert_code(1);

    // The second run is held in its scan, before its cycle ends.
    let mut daemon = world.start(&["--max-iterations", "1"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let reply = scrape_until(&addr, "Accept: */*", |scrape| {
        value(scrape, "ralphd_heartbeat_timestamp_seconds").is_some_and(|beat| beat > 0.0)
    });
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let scrape = &reply.body;
    let get = |series: &str| value(scrape, series).unwrap_or_else(|| panic!("{series}:\n{scrape}"));
    assert_eq!(get(r#"ralphd_cycles_total{outcome="committed"}"#), 1.0);
    assert_eq!(get("ralphd_commits_total"), 1.0);
    assert_eq!(
        get(r#"ralphd_phase_runs_total{phase="report",status="succeeded"}"#),
        1.0
    );
    assert!(
        (get("ralphd_cost_usd_total") - 0.05).abs() < 1e-9,
        "{scrape}"
    );
    assert_eq!(get(r#"ralphd_tokens_total{kind="output"}"#), 100.0);
    let committed_at = world.progress()["cycles"][0]["ended_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_second() as f64;
    assert_eq!(get("ralphd_last_commit_timestamp_seconds"), committed_at);
    assert_eq!(
        get(&format!(
            r#"ralphd_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    if let Some(promtool) = tool("promtool") {
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut check.stdin.take().unwrap(), scrape.as_bytes()).unwrap();
        let checked = check.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&checked.stdout).into_owned()
            + &String::from_utf8_lossy(&checked.stderr);
        assert!(
            checked.status.success() && said.trim().is_empty(),
            "promtool check metrics: {said}\n{scrape}"
        );
    }

    // Prometheus asks for OpenMetrics and gets it.
    let open = http(
        &addr,
        "GET",
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"],
        "",
    );
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    assert!(open.body.contains("# TYPE ralphd_cycles counter\n"));

    // The cycle of this run counts on top of the last run's.
    release(&world);
    let outcome = daemon.wait_for_exit(LIMIT).expect("ralphd exits");
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert_eq!(world.outcomes(), ["committed", "committed"]);
}

#[test]
fn a_wait_between_cycles_shows_while_it_lasts_and_its_seconds_count_up() {
    let world = World::new();
    let mut daemon = world.start(&["--max-iterations", "2", "--sleep", "1h"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let sleeping = r#"ralphd_waiting{reason="sleep"}"#;
    let waited = r#"ralphd_wait_seconds_total{reason="sleep"}"#;
    let first = scrape_until(&addr, "Accept: */*", |scrape| {
        value(scrape, sleeping) == Some(1.0)
    });
    assert_eq!(
        value(&first.body, r#"ralphd_waiting{reason="limiter"}"#),
        Some(0.0)
    );
    let before = value(&first.body, waited).unwrap();
    let later = scrape_until(&addr, "Accept: */*", |scrape| {
        value(scrape, waited).is_some_and(|seconds| seconds > before)
    });
    assert_eq!(value(&later.body, sleeping), Some(1.0));
    daemon.signal(libc::SIGTERM);
    daemon
        .wait_for_exit(LIMIT)
        .expect("ralphd exits after SIGTERM")
        .assert_code(130);
}

#[test]
fn the_alert_rules_load_and_pass_their_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let checked = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(contrib("contrib/prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let tested = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(contrib("contrib/prometheus/alerts.test.yml"))
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
}

/// A Prometheus server, killed and reaped when dropped.
struct PrometheusServer {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusServer {
    /// Starts Prometheus scraping `target` every second with the bearer
    /// token in `token_file` (as README says to), with the alert rules of
    /// contrib/ loaded, and waits until it is ready.
    fn start(binary: &Path, target: &str, token_file: &Path) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: ralphd\n    static_configs:\n      - targets: ['{target}']\n    authorization:\n      credentials_file: {}\n",
                contrib("contrib/prometheus/alerts.yml").display(),
                token_file.display()
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let server = PrometheusServer {
            child,
            addr,
            _dir: dir,
        };
        let ready = poll_until(LIMIT, || {
            std::net::TcpStream::connect(&server.addr).is_ok()
                && http(&server.addr, "GET", "/-/ready", &[], "").status == 200
        });
        assert!(ready, "prometheus is not ready: {}", server.log());
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/query` of an (URL-encoded) expression.
    fn query(&self, encoded: &str) -> Value {
        http(
            &self.addr,
            "GET",
            &format!("/api/v1/query?query={encoded}"),
            &[],
            "",
        )
        .json()
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_with_its_token_and_sees_its_cycles() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    // Cycle 1 commits; cycle 2 is held in its scan, so the daemon stays up.
    let world = world_blocking_in_scan(2);
    let token_file = world.root.join("token");
    std::fs::write(&token_file, "metrics-token-0123456789abcdef\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    world.config(&format!(
        "\n[http]\ntoken_file = \"{}\"\n",
        token_file.display()
    ));
    let mut daemon = world.start(&["--max-iterations", "2"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    assert_eq!(
        http(&addr, "GET", "/metrics", &[], "").status,
        401,
        "with a token file, a scrape needs the bearer token"
    );
    let prometheus = PrometheusServer::start(&binary, &addr, &token_file);

    // ralphd_cycles_total{outcome="committed"}
    let query = "ralphd_cycles_total%7Boutcome%3D%22committed%22%7D";
    let mut last = Value::Null;
    let seen = poll_until(Duration::from_secs(60), || {
        last = prometheus.query(query);
        last["data"]["result"][0]["value"][1] == "1"
    });
    assert!(
        seen,
        "prometheus never saw the committed cycle: {last}\n{}",
        prometheus.log()
    );
    let sample = &last["data"]["result"][0]["metric"];
    assert_eq!(sample["job"], "ralphd");
    assert_eq!(sample["instance"], addr.as_str());

    // The alert rules loaded in the server.
    let rules = http(&prometheus.addr, "GET", "/api/v1/rules", &[], "").json();
    let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "RalphdHeartbeatStale",
            "RalphdBreakerOpen",
            "RalphdNoCommit",
            "RalphdCostRateHigh"
        ]
    );
    drop(prometheus);
    release(&world);
    let outcome = daemon.wait_for_exit(LIMIT).expect("ralphd exits");
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
}
