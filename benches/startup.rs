//! Benchmark 6 of issue 7: start-up, from `ralphd run` to the first agent spawn.
//!
//! `cargo bench --bench startup` (env: `BENCH_RUNS`, default 9; `BENCH_DIR`).
//!
//! The fake agent (bash) writes `$EPOCHREALTIME` (a builtin) when it is
//! started for `--version` (ralphd's check that the CLI runs) and when it is
//! started for the first phase, then answers instantly. The home is warmed
//! first by a 3-cycle run, so a start-up reads a real progress.json and
//! replays a limiter history. Each run: t0 = just before the bench spawns
//! `ralphd run --max-iterations 1`, t1 = the first phase's timestamp.
//! In-run baseline: the same agent spawned bare by the bench, spawn to its
//! timestamp (exec + bash start-up), which t1 − t0 also contains; ralphd's
//! own start-up = (t1 − t0) − baseline.

mod support;

use std::process::{Command, Stdio};

use support::{
    Settings, World, bench_mode, env_number, epoch_seconds, header, read_epoch, summary, wait4,
};

const AGENT: &str = r#"#!/bin/bash
# Fake `claude` for the start-up benchmark: timestamps, then instant answers.
if [ "${1:-}" = "--version" ]; then
  echo "$EPOCHREALTIME" > "$BENCH_FAKE/version-at"; echo "2.1.197 (Claude Code, bench fake)"; exit 0
fi
[ -e "$BENCH_FAKE/phase-at" ] || echo "$EPOCHREALTIME" > "$BENCH_FAKE/phase-at"
case "${RALPH_PHASE:-scan}" in
  scan) t='scan: the project is small' ;;
  idea) t='TITLE: Append a line to work.txt\n\nThe idea.' ;;
  code-edit) echo "cycle ${RALPH_CYCLE:-0}" >> work.txt; t='edited work.txt' ;;
  backtest) t='Looks right.\n\n```json\n{\"verdict\":\"pass\",\"reason\":\"fine\"}\n```' ;;
  *) t='Done.\n\n```json\n{\"summary\":\"added a line\",\"learnings\":[\"one\"],\"patterns\":[]}\n```' ;;
esac
printf '%s\n' '{"type":"system","subtype":"init","session_id":"bench","model":"fake"}'
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"'"$t"'","session_id":"bench","total_cost_usd":0,"permission_denials":[]}'
"#;

fn main() {
    if !bench_mode("startup") {
        return;
    }
    let runs = env_number("BENCH_RUNS", 9);
    header(
        "startup",
        "`ralphd run` start → first agent spawn (config, lock, state, limiter replay, git checks, `claude --version`)",
    );
    let world = World::new(AGENT, &Settings::default());
    let version_at = world.fake.join("version-at");
    let phase_at = world.fake.join("phase-at");
    let warm = world
        .ralphd(&["--max-iterations", "3"])
        .spawn()
        .expect("ralphd starts");
    assert_eq!(wait4(warm).code, Some(1), "warm-up run");

    let mut own = Vec::new();
    let mut raw = Vec::new();
    let mut to_version = Vec::new();
    let mut baseline = Vec::new();
    let mut ratio = Vec::new();
    for run in 0..runs {
        // Baseline: spawn → the bare agent's timestamp.
        let _ = std::fs::remove_file(&phase_at);
        let t0 = epoch_seconds();
        let status = Command::new(&world.agent)
            .env("BENCH_FAKE", &world.fake)
            .env("RALPH_PHASE", "scan")
            .current_dir(&world.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("agent runs");
        assert!(status.success());
        let base = (read_epoch(&phase_at) - t0) * 1e3;

        let _ = std::fs::remove_file(&phase_at);
        let _ = std::fs::remove_file(&version_at);
        let t0 = epoch_seconds();
        let child = world
            .ralphd(&["--max-iterations", "1"])
            .spawn()
            .expect("ralphd starts");
        let reaped = wait4(child);
        assert_eq!(reaped.code, Some(1), "one cycle, then exit 1");
        let first = (read_epoch(&phase_at) - t0) * 1e3;
        let version = (read_epoch(&version_at) - t0) * 1e3;
        println!(
            "   run {}: start → first phase spawn {first:.1} ms (→ `--version` spawn {version:.1} ms), bare agent spawn {base:.1} ms, own {:.1} ms",
            run + 1,
            first - base
        );
        own.push(first - base);
        raw.push(first);
        to_version.push(version);
        baseline.push(base);
        ratio.push(first / base);
    }
    println!(
        "   start → first phase spawn, minus the bare spawn ms: {}  [target ≤ 50]",
        summary(&own, 1)
    );
    println!(
        "   start → first phase spawn (raw) ms: {}",
        summary(&raw, 1)
    );
    println!(
        "   start → `claude --version` spawn ms: {}",
        summary(&to_version, 1)
    );
    println!(
        "   baseline: bare agent spawn ms: {}",
        summary(&baseline, 1)
    );
    println!("   ratio raw / baseline: {}", summary(&ratio, 2));
    println!("   machine after: {}", support::machine_state());
}
