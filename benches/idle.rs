//! Benchmark 4 of issue 7: the cost of a daemon that waits.
//!
//! `cargo bench --bench idle` (env: `BENCH_IDLE_SECS`, default 10;
//! `BENCH_RUNS` per wait, default 3; `BENCH_DIR`; `BENCH_HTTP=off` without the
//! HTTP server, on by default with no client connected).
//!
//! Three waits, each reached through the real loop with a fake agent:
//! - **breaker**: the agent fails (no result line), `failure_threshold = 1`,
//!   `recovery_timeout = "1h"`, `halt_on_open = false` → "circuit breaker open";
//! - **limiter**: `requests_per_minute = requests_per_hour = 1` → the second
//!   phase waits for the rate limiter;
//! - **sleep**: `sleep_between_iterations = "1h"` after one good cycle.
//!
//! Once `status.json` shows the wait, and one settling second later, the bench
//! samples every thread of ralphd (`/proc/<pid>/task/*/schedstat` for CPU in
//! ns, `…/status` for voluntary and involuntary context switches), waits the
//! window, samples again, and reads `VmRSS`. `/proc/<pid>/stat` utime+stime
//! (clock ticks, whole process) is printed too. Wake-ups = context switches.

mod support;

use std::time::Duration;

use support::{
    INSTANT_AGENT, Settings, World, bench_mode, env_number, header, kill, summary, thread_deltas,
    threads, wait_for, wait4,
};

/// Fails every phase: an init line, then exit 1 without a result.
const FAILING_AGENT: &str = r#"#!/bin/sh
if [ "${1:-}" = "--version" ]; then echo "2.1.197 (Claude Code, bench fake)"; exit 0; fi
printf '%s\n' '{"type":"system","subtype":"init","session_id":"bench","model":"fake"}'
exit 1
"#;

struct Scenario {
    name: &'static str,
    agent: &'static str,
    settings: Settings,
    args: &'static [&'static str],
    /// The start of `status.json`'s `waiting.reason`.
    reason: &'static str,
}

fn main() {
    if !bench_mode("idle") {
        return;
    }
    let seconds = env_number("BENCH_IDLE_SECS", 10);
    let runs = env_number("BENCH_RUNS", 3);
    header(
        "idle",
        &format!("CPU, wake-ups and RSS of a waiting daemon over {seconds} s"),
    );
    let scenarios = [
        Scenario {
            name: "breaker open",
            agent: FAILING_AGENT,
            settings: Settings {
                extra: "[breaker]\nfailure_threshold = 1\nrecovery_timeout = \"1h\"\nmax_recovery_timeout = \"2h\"\nhalt_on_open = false\n",
                ..Settings::default()
            },
            args: &[],
            reason: "circuit breaker open",
        },
        Scenario {
            name: "limiter wait",
            agent: INSTANT_AGENT,
            settings: Settings {
                per_minute: 1,
                per_hour: 1,
                ..Settings::default()
            },
            args: &[],
            reason: "throttled",
        },
        Scenario {
            name: "sleep between iterations",
            agent: INSTANT_AGENT,
            settings: Settings {
                sleep: "1h",
                ..Settings::default()
            },
            args: &["--max-iterations", "2"],
            reason: "sleep between iterations",
        },
    ];
    let ticks_per_second = support::clock_ticks_per_second() as f64;
    for scenario in &scenarios {
        let mut cpu_s = Vec::new();
        let mut tick_cpu_s = Vec::new();
        let mut wakeups_per_s = Vec::new();
        let mut rss_mib = Vec::new();
        for run in 0..runs {
            let world = World::new(scenario.agent, &scenario.settings);
            let child = world.ralphd(scenario.args).spawn().expect("ralphd starts");
            let pid = child.id();
            wait_for(scenario.reason, Duration::from_secs(60), || {
                world
                    .waiting_reason()
                    .is_some_and(|reason| reason.starts_with(scenario.reason))
            });
            std::thread::sleep(Duration::from_secs(1));
            let ticks_before = support::proc_cpu_ticks(pid).expect("stat");
            let before = threads(pid);
            std::thread::sleep(Duration::from_secs(seconds));
            let after = threads(pid);
            let ticks_after = support::proc_cpu_ticks(pid).expect("stat");
            let rss = support::proc_status_kib(pid, "VmRSS").expect("VmRSS");
            let still = world.waiting_reason();
            kill(pid, libc::SIGTERM);
            let reaped = wait4(child);
            assert!(
                still.is_some_and(|reason| reason.starts_with(scenario.reason)),
                "ralphd left the wait during the window"
            );
            assert_eq!(reaped.code, Some(130), "SIGTERM ends the wait with 130");

            let deltas = thread_deltas(&before, &after);
            let cpu: f64 = deltas.iter().map(|t| t.cpu_ns as f64 / 1e9).sum();
            let switches: u64 = deltas.iter().map(|t| t.voluntary + t.involuntary).sum();
            let busy: Vec<String> = deltas
                .iter()
                .filter(|t| t.voluntary + t.involuntary > 0)
                .map(|t| {
                    format!(
                        "{}:{} wake-ups/{:.1} ms",
                        t.name,
                        t.voluntary + t.involuntary,
                        t.cpu_ns as f64 / 1e6
                    )
                })
                .collect();
            println!(
                "   {} run {}: CPU {cpu:.4} s, {switches} context switches ({:.1}/s), RSS {:.1} MiB, {} threads [{}]",
                scenario.name,
                run + 1,
                switches as f64 / seconds as f64,
                rss as f64 / 1024.0,
                after.len(),
                busy.join(", ")
            );
            cpu_s.push(cpu);
            tick_cpu_s.push((ticks_after - ticks_before) as f64 / ticks_per_second);
            wakeups_per_s.push(switches as f64 / seconds as f64);
            rss_mib.push(rss as f64 / 1024.0);
        }
        println!(
            "   {}: CPU s/{seconds} s {} [target < 0.01]; utime+stime {}",
            scenario.name,
            summary(&cpu_s, 4),
            summary(&tick_cpu_s, 2)
        );
        println!(
            "   {}: wake-ups/s {} [target ≤ 1]; RSS MiB {} [target ≤ 15]",
            scenario.name,
            summary(&wakeups_per_s, 1),
            summary(&rss_mib, 1)
        );
    }
    println!("   machine after: {}", support::machine_state());
}
