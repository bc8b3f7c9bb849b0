//! Benchmark 1 of issue 7: orchestration overhead per phase run.
//!
//! `cargo bench --bench overhead` (env: `BENCH_N` cycles per run, default 20;
//! `BENCH_RUNS`, default 5; `BENCH_DIR`, where the temp repos live;
//! `BENCH_HTTP=off` runs ralphd without its HTTP server, which is on by default).
//!
//! Each run builds a fresh repo and home, spawns the instant fake agent
//! (`support::INSTANT_AGENT`: an init and a result line; code-edit appends a
//! line) 5·N times bare, then runs `ralphd run --max-iterations N` with that
//! agent: N cycles of five phases, N commits. The overhead per phase run is
//! (ralphd's wall time − the bare spawns' wall time) / 5N; start-up, git work
//! and state writes are included, amortised. The order of the two alternates
//! from run to run so that drift on a shared machine favours neither.
//!
//! `BENCH_CALLGRIND=1` counts instead the instructions ralphd itself
//! executes (valgrind's callgrind; the agents are not traced), with the HTTP
//! server on and off: a count the machine's load does not blur, where wall
//! and CPU times swing by milliseconds. A phase run's share is the
//! difference between runs of 12 and 2 cycles, over 50 phase runs.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    INSTANT_AGENT, PHASES, Settings, World, bench_mode, env_number, header, summary, wait4,
};

fn main() {
    if !bench_mode("overhead") {
        return;
    }
    if std::env::var_os("BENCH_CALLGRIND").is_some() {
        instructions();
        return;
    }
    let cycles = env_number("BENCH_N", 20);
    let runs = env_number("BENCH_RUNS", 5);
    let phases = 5 * cycles;
    header(
        "overhead",
        &format!(
            "ralphd run --max-iterations {cycles} ({phases} phase runs) vs {phases} bare spawns of the same agent"
        ),
    );

    let mut overhead_ms = Vec::new();
    let mut ratio = Vec::new();
    let mut bare_ms = Vec::new();
    let mut ralphd_ms = Vec::new();
    let mut own_cpu_ms = Vec::new();
    for run in 0..runs {
        let world = World::new(INSTANT_AGENT, &Settings::default());
        let scratch = world.root.join("bare");
        std::fs::create_dir_all(&scratch).expect("mkdir");
        let (bare, bare_cpu, daemon, daemon_cpu) = if run % 2 == 0 {
            let (bare, bare_cpu) = bare_spawns(&world, &scratch, phases);
            let (daemon, daemon_cpu) = ralphd_run(&world, cycles);
            (bare, bare_cpu, daemon, daemon_cpu)
        } else {
            let (daemon, daemon_cpu) = ralphd_run(&world, cycles);
            let (bare, bare_cpu) = bare_spawns(&world, &scratch, phases);
            (bare, bare_cpu, daemon, daemon_cpu)
        };
        let per_phase = |d: Duration| d.as_secs_f64() * 1e3 / phases as f64;
        let over = per_phase(daemon) - per_phase(bare);
        let cpu = per_phase(daemon_cpu.saturating_sub(bare_cpu));
        println!(
            "   run {}: bare {:.2} ms/spawn, ralphd {:.2} ms/phase, overhead {over:.2} ms/phase, ratio {:.2}, ralphd's own CPU {cpu:.2} ms/phase",
            run + 1,
            per_phase(bare),
            per_phase(daemon),
            daemon.as_secs_f64() / bare.as_secs_f64()
        );
        overhead_ms.push(over);
        ratio.push(daemon.as_secs_f64() / bare.as_secs_f64());
        bare_ms.push(per_phase(bare));
        ralphd_ms.push(per_phase(daemon));
        own_cpu_ms.push(cpu);
    }
    println!("   bare spawn           ms/phase: {}", summary(&bare_ms, 2));
    println!(
        "   ralphd               ms/phase: {}",
        summary(&ralphd_ms, 2)
    );
    println!(
        "   overhead (ralphd − bare) ms/phase: {}  [target ≤ 3]",
        summary(&overhead_ms, 2)
    );
    println!("   ratio ralphd / bare:           {}", summary(&ratio, 2));
    println!(
        "   ralphd's own CPU (user+sys, agents' excluded) ms/phase: {}",
        summary(&own_cpu_ms, 2)
    );
    println!("   machine after: {}", support::machine_state());
}

/// Spawns the agent `count` times as ralphd would, phase by phase; returns
/// the wall time and the children's CPU time.
fn bare_spawns(world: &World, scratch: &std::path::Path, count: u64) -> (Duration, Duration) {
    let cpu_before = children_cpu();
    let started = Instant::now();
    for index in 0..count {
        let output = Command::new(&world.agent)
            .current_dir(scratch)
            .env("RALPH_PHASE", PHASES[(index % 5) as usize])
            .env("RALPH_CYCLE", (index / 5 + 1).to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("agent runs");
        assert!(output.status.success() && output.stdout.ends_with(b"}\n"));
    }
    (started.elapsed(), children_cpu().saturating_sub(cpu_before))
}

/// `ralphd run --max-iterations cycles`; returns its wall time and the CPU
/// time of ralphd and everything it waited for.
fn ralphd_run(world: &World, cycles: u64) -> (Duration, Duration) {
    let commits_before = world.commits();
    let started = Instant::now();
    let child = world
        .ralphd(&["--max-iterations", &cycles.to_string()])
        .spawn()
        .expect("ralphd starts");
    let reaped = wait4(child);
    let elapsed = started.elapsed();
    assert_eq!(reaped.code, Some(1), "ralphd exits 1 at --max-iterations");
    assert_eq!(
        world.commits() - commits_before,
        usize::try_from(cycles).expect("fits"),
        "one commit per cycle"
    );
    (elapsed, reaped.cpu)
}

/// Prints the instructions of start-up and of one phase run, with the
/// HTTP server on and off (see the header).
fn instructions() {
    header(
        "overhead (instructions)",
        "ralphd's own instructions under callgrind, HTTP server on vs off",
    );
    let count = |http: &'static str, cycles: u64| -> f64 {
        let world = World::new(
            INSTANT_AGENT,
            &Settings {
                extra: http,
                ..Settings::default()
            },
        );
        let output = world
            .ralphd_under(
                &[
                    "valgrind",
                    "--tool=callgrind",
                    "--callgrind-out-file=/dev/null",
                ],
                &["--max-iterations", &cycles.to_string()],
            )
            .stderr(Stdio::piped())
            .output()
            .expect("valgrind runs (apt-get install valgrind)");
        let report = String::from_utf8_lossy(&output.stderr);
        let collected = report
            .lines()
            .find_map(|line| line.split("Collected : ").nth(1))
            .unwrap_or_else(|| panic!("no instruction count from valgrind:\n{report}"));
        collected.trim().parse().expect("a count")
    };
    for (name, http) in [("on", ""), ("off", "[http]\nlisten = \"\"\n")] {
        let (short, long) = (count(http, 2), count(http, 12));
        let per_phase = (long - short) / 50.0;
        println!(
            "   server {name}: {:.3} M instructions per phase run; start-up and 2 cycles {:.2} M",
            per_phase / 1e6,
            short / 1e6
        );
    }
}

/// user + system CPU of all waited-for children of this process so far.
fn children_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer points to a live, writable local.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let time = |tv: libc::timeval| {
        Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
