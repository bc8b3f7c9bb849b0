//! The HTTP server of docs/design.md §11 against the built binary: every
//! route, the event stream's replay, the control routes seen in the agent's
//! calls, and each security refusal.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// A world whose agent blocks in `phase` until `fake/go-<phase>` exists, so
/// a test can look at the daemon mid-run.
fn world_waiting_in(phase: &str) -> World {
    let world = World::new();
    let gate = world.fake.join(format!("go-{phase}"));
    world.script(
        phase,
        None,
        &format!("while [ ! -e '{}' ]; do sleep 0.02; done", gate.display()),
    );
    world
}

fn release(world: &World, phase: &str) {
    std::fs::write(world.fake.join(format!("go-{phase}")), "").unwrap();
}

#[test]
fn the_dashboard_url_is_in_status_and_the_log_line_and_health_says_ok() {
    let world = world_waiting_in("scan");
    let mut daemon = world.start(&["--max-iterations", "1"]);
    let addr = dashboard_addr(&world.home, LIMIT);
    let status = world
        .ralphd()
        .args(["status", "--home"])
        .arg(&world.home)
        .output();
    assert!(
        status
            .stdout
            .contains(&format!("dashboard: http://{addr}/")),
        "{}",
        status.stdout
    );
    let health = http(&addr, "GET", "/health", &[], "");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
    release(&world, "scan");
    let outcome = daemon.wait_for_exit(LIMIT).expect("ralphd exits");
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains(&format!("dashboard: http://{addr}/")),
        "{}",
        outcome.stderr
    );
    let stopped: Value = read_json(&world.home.join("state/status.json"));
    assert_eq!(
        stopped["dashboard"],
        Value::Null,
        "no stale URL once stopped"
    );
    assert!(!world.home.join("state/http.json").exists());
}
