//! Benchmark 5 of issue 7: stop latency.
//!
//! `cargo bench --bench stop` (env: `BENCH_RUNS`, default 7; `BENCH_DIR`).
//!
//! The fake agent (bash) prints an init line and waits; on SIGINT it writes
//! `$EPOCHREALTIME` (a builtin, no fork) and exits. 200 ms after the agent
//! started, the bench sends SIGTERM to ralphd (t0) and waits for its exit
//! (t2); the agent's own exit is t1. Reported: t2 − t1, ralphd's time beyond
//! the agent's exit (target ≤ 200 ms), the whole t2 − t0, and t1 − t0 (the
//! SIGTERM → SIGINT forwarding plus the agent's reaction). Each run checks
//! exit 130 and the cycle recorded as `interrupted` in progress.json. In-run
//! baseline: the same agent started bare in its own process group and
//! stopped with SIGINT by the bench, signal to exit.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    Settings, World, bench_mode, env_number, epoch_seconds, header, kill, read_epoch, summary,
    wait_for, wait4,
};

const AGENT: &str = r#"#!/bin/bash
# Fake `claude` for the stop benchmark: waits until SIGINT, then exits.
if [ "${1:-}" = "--version" ]; then echo "2.1.197 (Claude Code, bench fake)"; exit 0; fi
trap 'echo "$EPOCHREALTIME" > "$BENCH_FAKE/agent-exit"; exit 130' INT
printf '%s\n' '{"type":"system","subtype":"init","session_id":"bench-stop","model":"fake"}'
echo "$EPOCHREALTIME" > "$BENCH_FAKE/agent-started"
sleep 1000 </dev/null >/dev/null 2>&1 &
wait $!
"#;

fn main() {
    if !bench_mode("stop") {
        return;
    }
    let runs = env_number("BENCH_RUNS", 7);
    header(
        "stop",
        "SIGTERM to ralphd while the agent runs → ralphd exit (state saved)",
    );
    let mut beyond = Vec::new();
    let mut total = Vec::new();
    let mut forward = Vec::new();
    let mut bare = Vec::new();
    let mut ratio = Vec::new();
    for run in 0..runs {
        let world = World::new(AGENT, &Settings::default());
        let started = world.fake.join("agent-started");
        let exited = world.fake.join("agent-exit");

        // Baseline: the agent alone, stopped by SIGINT to its group.
        let bare_child = Command::new(&world.agent)
            .env("BENCH_FAKE", &world.fake)
            .env("RALPH_PHASE", "scan")
            .current_dir(&world.repo)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("agent starts");
        let bare_pgid = i32::try_from(bare_child.id()).expect("pid");
        wait_for("the bare agent", Duration::from_secs(10), || {
            started.exists()
        });
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        // SAFETY: killpg has no memory-safety preconditions.
        unsafe { libc::killpg(bare_pgid, libc::SIGINT) };
        let reaped = wait4(bare_child);
        let bare_ms = t0.elapsed().as_secs_f64() * 1e3;
        // Its background `sleep` ignores SIGINT (bash does that to `&` jobs).
        // SAFETY: killpg has no memory-safety preconditions.
        unsafe { libc::killpg(bare_pgid, libc::SIGKILL) };
        assert_eq!(reaped.code, Some(130));
        std::fs::remove_file(&started).expect("rm");
        std::fs::remove_file(&exited).expect("rm");

        let child = world.ralphd(&[]).spawn().expect("ralphd starts");
        wait_for("the agent under ralphd", Duration::from_secs(30), || {
            started.exists()
        });
        std::thread::sleep(Duration::from_millis(200));
        let t0 = epoch_seconds();
        kill(child.id(), libc::SIGTERM);
        let reaped = wait4(child);
        let t2 = epoch_seconds();
        let t1 = read_epoch(&exited);
        assert_eq!(reaped.code, Some(130), "exit 130 after SIGTERM");
        assert_eq!(
            world.outcomes().last().map(String::as_str),
            Some("interrupted"),
            "the cycle is recorded as interrupted"
        );
        let run_beyond = (t2 - t1) * 1e3;
        let run_total = (t2 - t0) * 1e3;
        println!(
            "   run {}: beyond the agent's exit {run_beyond:.1} ms, SIGTERM→exit {run_total:.1} ms, SIGTERM→agent exit {:.1} ms; bare agent SIGINT→exit {bare_ms:.1} ms",
            run + 1,
            (t1 - t0) * 1e3
        );
        beyond.push(run_beyond);
        total.push(run_total);
        forward.push((t1 - t0) * 1e3);
        bare.push(bare_ms);
        ratio.push(run_total / bare_ms);
    }
    println!(
        "   ralphd exit − agent exit ms: {}  [target ≤ 200]",
        summary(&beyond, 1)
    );
    println!("   SIGTERM → ralphd exit ms:   {}", summary(&total, 1));
    println!("   SIGTERM → agent exit ms:    {}", summary(&forward, 1));
    println!(
        "   baseline: bare agent SIGINT → exit ms: {}",
        summary(&bare, 1)
    );
    println!(
        "   ratio (SIGTERM → ralphd exit) / bare: {}",
        summary(&ratio, 2)
    );
    println!("   machine after: {}", support::machine_state());
}
