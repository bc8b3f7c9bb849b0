//! Shared harness of the daemon benchmarks (`benches/*.rs`, `harness = false`):
//! a throw-away git repo and home driven by the release `ralphd` binary, fake
//! agents written as small shell scripts, `/proc` readers and statistics.
//!
//! Nothing here runs under `cargo test`: a bench binary started without
//! cargo bench's `--bench` flag (e.g. by `cargo test --all-targets`) only
//! prints how to run it.

#![allow(dead_code)] // each bench uses its own part of the harness

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The release binary under test (cargo builds it for `cargo bench`);
/// `$BENCH_RALPHD` overrides it (to compare two builds with one harness).
pub(crate) fn ralphd_bin() -> PathBuf {
    std::env::var_os("BENCH_RALPHD").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_ralphd")),
        PathBuf::from,
    )
}

/// `false` when the binary was not started by `cargo bench` (which passes
/// `--bench`): then the bench prints a hint and exits, so `cargo test
/// --all-targets` never runs a benchmark.
pub(crate) fn bench_mode(name: &str) -> bool {
    if std::env::args().any(|arg| arg == "--bench") {
        return true;
    }
    println!("{name}: a benchmark; run it with `cargo bench --bench {name}`");
    false
}

/// Whether `BENCH_HTTP=off` asks for runs without the HTTP server.
pub(crate) fn http_off() -> bool {
    std::env::var("BENCH_HTTP").is_ok_and(|value| value == "off")
}

/// `server on` or `server off`, for the benchmarks' headers.
pub(crate) fn http_label() -> &'static str {
    if http_off() {
        "HTTP server off (BENCH_HTTP=off)"
    } else {
        "HTTP server on (default; BENCH_HTTP=off for off)"
    }
}

/// An environment variable read as a number, or `default`.
pub(crate) fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(default)
}

/// Where the temp worlds live: `$BENCH_DIR`, else the system temp dir.
pub(crate) fn bench_root() -> PathBuf {
    std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// What goes into `ralph.toml` besides the agent command.
pub(crate) struct Settings {
    /// `[loop] sleep_between_iterations`.
    pub sleep: &'static str,
    pub per_minute: u32,
    pub per_hour: u32,
    /// More tables (`[breaker]` …), appended as they are.
    pub extra: &'static str,
}

impl Default for Settings {
    /// No sleep, rate limits out of the way.
    fn default() -> Settings {
        Settings {
            sleep: "0s",
            per_minute: 100_000,
            per_hour: 100_000,
            extra: "",
        }
    }
}

/// One benchmark's world: `repo/` (a git repo with one commit), `home/`
/// (ralph.toml) and `fake/` (the fake agent and what it records).
pub(crate) struct World {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub home: PathBuf,
    pub fake: PathBuf,
    pub agent: PathBuf,
}

impl World {
    /// `agent_script` becomes `fake/agent` (mode 755); `settings` make
    /// `home/ralph.toml`.
    pub(crate) fn new(agent_script: &str, settings: &Settings) -> World {
        let dir = tempfile::Builder::new()
            .prefix("ralphd-bench-")
            .tempdir_in(bench_root())
            .expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let world = World {
            repo: root.join("repo"),
            home: root.join("home"),
            fake: root.join("fake"),
            agent: root.join("fake/agent"),
            root,
            _dir: dir,
        };
        for dir in [&world.repo, &world.home, &world.fake] {
            fs::create_dir_all(dir).expect("mkdir");
        }
        git(&world.repo, &["init", "-q", "-b", "main"]);
        fs::write(world.repo.join("README.md"), "# bench project\n").expect("write");
        git(&world.repo, &["add", "-A"]);
        git(
            &world.repo,
            &[
                "-c",
                "user.name=bench",
                "-c",
                "user.email=bench@localhost",
                "commit",
                "-q",
                "-m",
                "initial",
            ],
        );
        fs::write(&world.agent, agent_script).expect("write agent");
        fs::set_permissions(&world.agent, fs::Permissions::from_mode(0o755)).expect("chmod");
        world.config(settings);
        world
    }

    /// Writes `home/ralph.toml` from `settings`, `agent.command` = `fake/agent`.
    /// `BENCH_HTTP=off` turns the HTTP server off (`[http] listen = ""`; it is
    /// on by default, as in a user's run).
    pub(crate) fn config(&self, settings: &Settings) {
        let http = if http_off() {
            "[http]\nlisten = \"\"\n"
        } else {
            ""
        };
        let text = format!(
            "[loop]\nsleep_between_iterations = \"{}\"\n\n[agent]\ncommand = \"{}\"\nstop_grace = \"2s\"\nmax_attempts = 1\n\n[rate_limit]\nrequests_per_minute = {}\nrequests_per_hour = {}\n\n{}\n",
            settings.sleep,
            self.agent.display(),
            settings.per_minute,
            settings.per_hour,
            settings.extra,
        ) + http;
        fs::write(self.home.join("ralph.toml"), text).expect("write ralph.toml");
    }

    /// `ralphd run --repo R --home H <extra>`, output discarded, with the
    /// fake agent's directory in `BENCH_FAKE`.
    pub(crate) fn ralphd(&self, extra: &[&str]) -> Command {
        self.ralphd_under(&[], extra)
    }

    /// [`World::ralphd`] run by a tool (`wrapper`: its program and
    /// arguments, e.g. valgrind's), which gets ralphd's path and arguments.
    pub(crate) fn ralphd_under(&self, wrapper: &[&str], extra: &[&str]) -> Command {
        let mut command = match wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg(ralphd_bin());
                command
            }
            None => Command::new(ralphd_bin()),
        };
        command
            .args(["run", "--repo"])
            .arg(&self.repo)
            .arg("--home")
            .arg(&self.home)
            .args(extra)
            .current_dir(&self.root)
            .env("BENCH_FAKE", &self.fake)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("RALPH_") {
                command.env_remove(key);
            }
        }
        command
    }

    /// Reads a JSON file under `home/state/`.
    pub(crate) fn state_json(&self, name: &str) -> serde_json::Value {
        let path = self.home.join("state").join(name);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `status.json`'s `waiting.reason`, if the daemon is waiting.
    pub(crate) fn waiting_reason(&self) -> Option<String> {
        let bytes = fs::read(self.home.join("state/status.json")).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        value["waiting"]["reason"].as_str().map(str::to_owned)
    }

    /// The outcomes recorded in progress.json, oldest first.
    pub(crate) fn outcomes(&self) -> Vec<String> {
        self.state_json("progress.json")["cycles"]
            .as_array()
            .map(|cycles| {
                cycles
                    .iter()
                    .filter_map(|cycle| cycle["outcome"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn commits(&self) -> usize {
        git(&self.repo, &["rev-list", "--count", "HEAD"])
            .trim()
            .parse()
            .expect("a count")
    }
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The phase answers of the instant fake agent: one `system/init` line and one
/// `result` line per phase; code-edit appends a line to `work.txt`, backtest
/// passes, report writes the report block. POSIX sh (dash): no fork at all.
pub(crate) const INSTANT_AGENT: &str = r#"#!/bin/sh
# Instant fake `claude` for ralphd's benchmarks: init line + result line.
if [ "${1:-}" = "--version" ]; then echo "2.1.197 (Claude Code, bench fake)"; exit 0; fi
case "${RALPH_PHASE:-scan}" in
  scan) t='scan: the project is small' ;;
  idea) t='TITLE: Append a line to work.txt\n\nThe idea.' ;;
  code-edit) echo "cycle ${RALPH_CYCLE:-0}" >> work.txt; t='edited work.txt' ;;
  backtest) t='Looks right.\n\n```json\n{\"verdict\":\"pass\",\"reason\":\"fine\"}\n```' ;;
  *) t='Done.\n\n```json\n{\"summary\":\"added a line\",\"learnings\":[],\"patterns\":[]}\n```' ;;
esac
printf '%s\n' '{"type":"system","subtype":"init","session_id":"bench","model":"fake"}'
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"num_turns":1,"result":"'"$t"'","session_id":"bench","total_cost_usd":0,"permission_denials":[]}'
"#;

/// The five phase names, in cycle order.
pub(crate) const PHASES: [&str; 5] = ["scan", "idea", "code-edit", "backtest", "report"];

/// Exit status and resource usage of a waited child.
pub(crate) struct Reaped {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// `ru_maxrss` in KiB: the peak RSS of the process or of the largest of
    /// the descendants it waited for.
    pub max_rss_kib: i64,
    /// user + system CPU of the process and its waited-for descendants.
    pub cpu: Duration,
}

/// Waits for `child` with `wait4`, which also returns its resource usage.
pub(crate) fn wait4(child: std::process::Child) -> Reaped {
    let pid = i32::try_from(child.id()).expect("pid fits");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers point to live, writable locals.
        let result = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if result == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4({pid}): {error}"
        );
    }
    let time = |tv: libc::timeval| {
        Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
    };
    Reaped {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        max_rss_kib: usage.ru_maxrss,
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in KiB.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// `utime + stime` of the whole process from `/proc/<pid>/stat`, in clock
/// ticks (all threads, also those that exited).
pub(crate) fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); after the comm, index 0 is field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `sysconf(_SC_CLK_TCK)`.
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

/// One thread of a process, as `/proc/<pid>/task/<tid>` shows it.
#[derive(Clone, Debug)]
pub(crate) struct ThreadSample {
    pub tid: u32,
    pub name: String,
    /// Nanoseconds on a CPU (`schedstat`, first field).
    pub cpu_ns: u64,
    pub voluntary: u64,
    pub involuntary: u64,
}

/// Every thread of `pid` with its CPU time and context switches.
pub(crate) fn threads(pid: u32) -> Vec<ThreadSample> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut samples: Vec<ThreadSample> = entries
        .flatten()
        .filter_map(|entry| {
            let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path();
            let name = fs::read_to_string(dir.join("comm")).ok()?.trim().to_owned();
            let cpu_ns = fs::read_to_string(dir.join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let status = fs::read_to_string(dir.join("status")).ok()?;
            let field = |key: &str| -> Option<u64> {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix(key))
                    .and_then(|rest| rest.trim().parse().ok())
            };
            Some(ThreadSample {
                tid,
                name,
                cpu_ns,
                voluntary: field("voluntary_ctxt_switches:")?,
                involuntary: field("nonvoluntary_ctxt_switches:")?,
            })
        })
        .collect();
    samples.sort_by_key(|sample| sample.tid);
    samples
}

/// The change of each thread between two samples; threads born in between
/// count from zero, threads that ended are left out.
pub(crate) fn thread_deltas(before: &[ThreadSample], after: &[ThreadSample]) -> Vec<ThreadSample> {
    after
        .iter()
        .map(|now| {
            let then = before.iter().find(|old| old.tid == now.tid);
            ThreadSample {
                tid: now.tid,
                name: now.name.clone(),
                cpu_ns: now.cpu_ns - then.map_or(0, |t| t.cpu_ns),
                voluntary: now.voluntary - then.map_or(0, |t| t.voluntary),
                involuntary: now.involuntary - then.map_or(0, |t| t.involuntary),
            }
        })
        .collect()
}

/// Sends `signal` to `pid`.
pub(crate) fn kill(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).expect("pid fits");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) };
}

/// Polls `condition` every millisecond until it holds; panics after `timeout`.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Wall-clock seconds since the epoch (the clock of bash's `$EPOCHREALTIME`).
pub(crate) fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Reads a file holding one `$EPOCHREALTIME` value.
pub(crate) fn read_epoch(path: &Path) -> f64 {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim()
        .replace(',', ".")
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `median (min–max, n runs)` of `values`, each with `digits` decimals.
pub(crate) fn summary(values: &[f64], digits: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.digits$} (min {:.digits$}, max {:.digits$}, {} runs)",
        median(values),
        min,
        max,
        values.len()
    )
}

/// One line about the machine and what else runs on it, for the report.
pub(crate) fn machine_state() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let load = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            let parts: Vec<&str> = text.split_whitespace().take(3).collect();
            (parts.len() == 3).then(|| parts.join(" "))
        })
        .unwrap_or_else(|| "?".to_owned());
    let (busy, others) = cpu_busy_over_one_second();
    format!(
        "{cores} cores, load average {load}, CPU {busy:.0}% busy over 1 s (other work: {}), bench dir {} on {}",
        if others.is_empty() {
            "none".to_owned()
        } else {
            others.join(", ")
        },
        bench_root().display(),
        filesystem_of(&bench_root())
    )
}

/// The share of all CPUs in use over one second (from `/proc/stat`), and
/// the names of the other processes that used the most of it.
fn cpu_busy_over_one_second() -> (f64, Vec<String>) {
    let totals = || -> Option<(u64, u64)> {
        let text = fs::read_to_string("/proc/stat").ok()?;
        let values: Vec<u64> = text
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // idle + iowait count as not busy.
        let idle = values.get(3)? + values.get(4).unwrap_or(&0);
        Some((values.iter().sum(), idle))
    };
    let processes = || -> Vec<(u32, u64)> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                Some((pid, proc_cpu_ticks(pid)?))
            })
            .collect()
    };
    let (before, procs_before) = (totals(), processes());
    std::thread::sleep(Duration::from_secs(1));
    let (after, procs_after) = (totals(), processes());
    let busy = match (before, after) {
        (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => {
            100.0 * (1.0 - (i1 - i0) as f64 / (t1 - t0) as f64)
        }
        _ => f64::NAN,
    };
    let me = std::process::id();
    let mut used: Vec<(u64, String)> = procs_after
        .iter()
        .filter(|(pid, _)| *pid != me)
        .filter_map(|(pid, ticks)| {
            let (_, old) = procs_before.iter().find(|(old, _)| old == pid)?;
            let name = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (ticks > old).then(|| (ticks - old, name.trim().to_owned()))
        })
        .collect();
    used.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    let hz = clock_ticks_per_second().max(1);
    let others = used
        .into_iter()
        .take(4)
        .map(|(ticks, name)| format!("{name} {}%", ticks * 100 / hz))
        .collect();
    (busy, others)
}

/// The type of the filesystem holding `path` (longest mount-point prefix).
pub(crate) fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "?".to_owned(), |(_, kind)| kind)
}

/// Prints the bench's header.
pub(crate) fn header(name: &str, what: &str) {
    println!("== {name}: {what}");
    println!("   ralphd: {}", ralphd_bin().display());
    println!("   {}", http_label());
    println!("   machine: {}", machine_state());
}
