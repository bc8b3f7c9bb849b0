//! Benchmark 2 of issue 7: stream throughput and memory of one phase.
//!
//! `cargo bench --bench stream` (env: `BENCH_STREAM_MIB`, default 256;
//! `BENCH_RUNS`, default 5; `BENCH_DIR`).
//!
//! A generator writes a stream-json file once: a `system/init` line, then
//! `assistant` lines that each carry one 64 KiB text block, then a `result`
//! line whose text declares completion. The fake agent `exec cat`s it in
//! the scan phase, so one `ralphd run` is: start-up, the big scan phase
//! (parsed line by line and written raw to `state/cycles/1/scan.jsonl`),
//! instant idea and report phases (code-edit and backtest are skipped after
//! the completion), exit 0. Throughput = stream bytes / wall time of the
//! whole `ralphd run`. In-run baselines on the same filesystem (the raw
//! stream is also written to disk): `cat file > copy`, and
//! `cat file | cat > copy` (one more pipe and process). Peak RSS is
//! `ru_maxrss` from `wait4` (ralphd or, if larger, a child it waited for)
//! and the last `VmHWM` read from `/proc` while it ran. A 16 MiB stream is
//! run once first, so that growth of the peak with the stream shows. The
//! transcript cap (`[state] max_transcript_mb`) is raised above the stream,
//! so every byte goes through redaction and is written, as at most 64 MiB
//! are by default.
//!
//! `BENCH_SSE_CLIENTS=10` connects that many clients to the HTTP server's
//! event stream (`/api/events`, reading everything) before the scan phase
//! starts streaming (the agent waits for them); the wall time is then taken
//! from the moment they are connected, and each client's bytes are shown.

mod support;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Settings, World, bench_mode, env_number, header, summary, wait4};

/// Length of the text of one assistant block, in bytes of JSON.
const BLOCK: usize = 64 * 1024;

const AGENT: &str = r#"#!/bin/sh
# Fake `claude` for the stream benchmark: scan prints $BENCH_STREAM.
if [ "${1:-}" = "--version" ]; then echo "2.1.197 (Claude Code, bench fake)"; exit 0; fi
if [ "${RALPH_PHASE:-}" = scan ]; then
  if [ -n "${BENCH_GO:-}" ]; then while [ ! -e "$BENCH_GO" ]; do sleep 0.01; done; fi
  exec cat "$BENCH_STREAM"
fi
printf '%s\n' '{"type":"system","subtype":"init","session_id":"bench","model":"fake"}'
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"Done.\n\n```json\n{\"summary\":\"streamed\",\"learnings\":[],\"patterns\":[]}\n```","session_id":"bench","total_cost_usd":0,"permission_denials":[]}'
"#;

fn main() {
    if !bench_mode("stream") {
        return;
    }
    let mib = env_number("BENCH_STREAM_MIB", 256);
    let runs = env_number("BENCH_RUNS", 5);
    header(
        "stream",
        &format!("one phase emitting {mib} MiB of stream-json (64 KiB text blocks)"),
    );
    let data = tempfile::Builder::new()
        .prefix("ralphd-bench-stream-")
        .tempdir_in(support::bench_root())
        .expect("temp dir");

    let small = data.path().join("small.jsonl");
    let small_bytes = generate(&small, 16 * 1024 * 1024);
    let small_run = run_ralphd(&small);
    println!(
        "   16 MiB stream: {:.0} MB/s, peak RSS {:.1} MiB (ru_maxrss), {:.1} MiB (VmHWM)",
        small_bytes as f64 / 1e6 / small_run.wall.as_secs_f64(),
        small_run.max_rss_kib as f64 / 1024.0,
        small_run.hwm_kib as f64 / 1024.0
    );
    std::fs::remove_file(&small).expect("rm");

    let big = data.path().join("big.jsonl");
    let bytes = generate(&big, mib * 1024 * 1024);
    println!("   stream file: {bytes} bytes");
    let mut mbps = Vec::new();
    let mut phase_mbps = Vec::new();
    let mut cat_mbps = Vec::new();
    let mut pipe_mbps = Vec::new();
    let mut ratio = Vec::new();
    let mut rss_mib = Vec::new();
    let mut hwm_mib = Vec::new();
    let mut cpu_share = Vec::new();
    let mb = bytes as f64 / 1e6;
    for run in 0..runs {
        let copy = data.path().join("copy.jsonl");
        let cat = time_shell(&format!("cat '{}' > '{}'", big.display(), copy.display()));
        std::fs::remove_file(&copy).expect("rm");
        let pipe = time_shell(&format!(
            "cat '{}' | cat > '{}'",
            big.display(),
            copy.display()
        ));
        std::fs::remove_file(&copy).expect("rm");
        let measured = run_ralphd(&big);
        let speed = mb / measured.wall.as_secs_f64();
        println!(
            "   run {}: ralphd {speed:.0} MB/s (scan phase alone {:.0} MB/s), cat>copy {:.0} MB/s, cat|cat>copy {:.0} MB/s, peak RSS {:.1} MiB, ralphd+agent CPU {:.2} s",
            run + 1,
            mb / measured.scan.as_secs_f64(),
            mb / cat.as_secs_f64(),
            mb / pipe.as_secs_f64(),
            measured.max_rss_kib as f64 / 1024.0,
            measured.cpu.as_secs_f64()
        );
        mbps.push(speed);
        phase_mbps.push(mb / measured.scan.as_secs_f64());
        cat_mbps.push(mb / cat.as_secs_f64());
        pipe_mbps.push(mb / pipe.as_secs_f64());
        ratio.push(speed / (mb / cat.as_secs_f64()));
        rss_mib.push(measured.max_rss_kib as f64 / 1024.0);
        hwm_mib.push(measured.hwm_kib as f64 / 1024.0);
        cpu_share.push(measured.cpu.as_secs_f64() / measured.wall.as_secs_f64());
    }
    println!(
        "   ralphd run (whole)   MB/s: {}  [target ≥ 400]",
        summary(&mbps, 0)
    );
    println!(
        "   scan phase (its own clock, progress.json) MB/s: {}",
        summary(&phase_mbps, 0)
    );
    println!("   baseline cat>copy    MB/s: {}", summary(&cat_mbps, 0));
    println!("   baseline cat|cat>copy MB/s: {}", summary(&pipe_mbps, 0));
    println!("   ratio ralphd / cat>copy:   {}", summary(&ratio, 2));
    println!(
        "   peak RSS MiB (ru_maxrss): {}  [target ≤ 32, ≤ 48 with 10 SSE clients]; VmHWM: {}",
        summary(&rss_mib, 1),
        summary(&hwm_mib, 1)
    );
    println!("   CPU (ralphd + agent) / wall: {}", summary(&cpu_share, 2));
    println!("   machine after: {}", support::machine_state());
}

/// Writes the stream (init, 64 KiB text blocks up to `target` bytes, result)
/// and returns its size.
fn generate(path: &Path, target: u64) -> u64 {
    let mut out = BufWriter::new(File::create(path).expect("create stream"));
    let mut written = 0u64;
    let mut put = |line: &str| {
        out.write_all(line.as_bytes()).expect("write");
        out.write_all(b"\n").expect("write");
        written += line.len() as u64 + 1;
        written
    };
    put(
        r#"{"type":"system","subtype":"init","cwd":"/w","session_id":"bench-stream","tools":["Bash","Edit","Read"],"model":"claude-opus-4-8[1m]","permissionMode":"default","apiKeySource":"none","claude_code_version":"2.1.197","uuid":"u0"}"#,
    );
    // Prose with JSON escapes, as model text has: `\n`, `\"`, unicode.
    let sentence = r#"The parser reads \"one line\" at a time; memory stays flat — déjà vu.\n"#;
    let mut text = String::with_capacity(BLOCK);
    while text.len() + sentence.len() <= BLOCK {
        text.push_str(sentence);
    }
    while text.len() < BLOCK {
        text.push('x');
    }
    let mut index = 0u64;
    loop {
        index += 1;
        let line = format!(
            r#"{{"type":"assistant","message":{{"id":"msg_{index}","type":"message","role":"assistant","model":"claude-opus-4-8","content":[{{"type":"text","text":"{text}"}}],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":19000,"output_tokens":16000}},"context_management":null}},"parent_tool_use_id":null,"session_id":"bench-stream","uuid":"u{index}","request_id":"req_{index}"}}"#
        );
        if put(&line) >= target {
            break;
        }
    }
    put(
        r#"{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"duration_ms":1000,"num_turns":1,"result":"Streamed everything.\n<promise>COMPLETE</promise>","stop_reason":"end_turn","session_id":"bench-stream","total_cost_usd":0,"permission_denials":[],"terminal_reason":"completed"}"#,
    );
    out.flush().expect("flush");
    drop(out);
    // Start every measurement with clean page-cache state for writes.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::metadata(path).expect("stat").len()
}

/// Times `sh -c script` (after a `sync`, so writeback of earlier runs does
/// not land in this one).
fn time_shell(script: &str) -> Duration {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", script])
        .status()
        .expect("sh runs");
    assert!(status.success());
    started.elapsed()
}

struct Measured {
    wall: Duration,
    /// The scan phase's `duration_ms` in progress.json.
    scan: Duration,
    max_rss_kib: i64,
    hwm_kib: u64,
    cpu: Duration,
}

fn run_ralphd(stream: &PathBuf) -> Measured {
    let world = World::new(
        AGENT,
        &Settings {
            extra: "[state]\nmax_transcript_mb = 4096\n",
            ..Settings::default()
        },
    );
    let clients = env_number("BENCH_SSE_CLIENTS", 0);
    let go = world.fake.join("go");
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let mut started = Instant::now();
    let mut command = world.ralphd(&["--max-iterations", "1"]);
    command.env("BENCH_STREAM", stream).stdin(Stdio::null());
    if clients > 0 {
        command.env("BENCH_GO", &go);
    }
    let child = command.spawn().expect("ralphd starts");
    let readers = if clients > 0 {
        let readers = connect_clients(&world, clients);
        std::fs::write(&go, "").expect("write go");
        started = Instant::now();
        readers
    } else {
        Vec::new()
    };
    let pid = child.id();
    let hwm = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let poller = {
        let (hwm, done) = (Arc::clone(&hwm), Arc::clone(&done));
        std::thread::spawn(move || {
            while done.load(Ordering::Relaxed) == 0 {
                if let Some(kib) = support::proc_status_kib(pid, "VmHWM") {
                    hwm.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let reaped = wait4(child);
    let wall = started.elapsed();
    done.store(1, Ordering::Relaxed);
    poller.join().expect("poller");
    if !readers.is_empty() {
        let bytes: Vec<String> = readers
            .into_iter()
            .map(|reader| format!("{:.1}", reader.join().expect("reader") as f64 / 1e6))
            .collect();
        println!("      SSE clients read MB: {}", bytes.join(" "));
    }
    assert_eq!(reaped.code, Some(0), "ralphd accepts the completion");
    let progress = world.state_json("progress.json");
    let scan = &progress["cycles"][0]["phases"][0];
    assert_eq!(scan["phase"], "scan");
    assert_eq!(scan["status"], "ok", "{scan}");
    let transcript = world.home.join("state/cycles/1/scan.jsonl");
    assert_eq!(
        std::fs::metadata(&transcript).expect("transcript").len(),
        std::fs::metadata(stream).expect("stream").len(),
        "the transcript holds every byte"
    );
    Measured {
        wall,
        scan: Duration::from_millis(scan["duration_ms"].as_u64().expect("duration_ms")),
        max_rss_kib: reaped.max_rss_kib,
        hwm_kib: hwm.load(Ordering::Relaxed),
        cpu: reaped.cpu,
    }
}

/// Connects `count` clients to the daemon's `/api/events` once status.json
/// names its URL; each reads until the stream ends and returns its bytes.
fn connect_clients(world: &World, count: u64) -> Vec<std::thread::JoinHandle<u64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let url = std::fs::read_to_string(world.home.join("state/status.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|status| status["dashboard"].as_str().map(str::to_owned));
        if let Some(url) = url {
            break url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the daemon names no dashboard (BENCH_HTTP=off?)"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    (0..count)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
            write!(stream, "GET /api/events HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("ask");
            // Counts and drops what it reads: a growing buffer here would
            // raise the next ralphd's ru_maxrss, which a fork inherits.
            std::thread::spawn(move || {
                let mut buffer = [0u8; 16 * 1024];
                let mut total = 0u64;
                while let Ok(read) = std::io::Read::read(&mut stream, &mut buffer) {
                    if read == 0 {
                        break;
                    }
                    total += read as u64;
                }
                total
            })
        })
        .collect()
}
