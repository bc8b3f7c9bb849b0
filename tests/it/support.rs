//! The harness: a temp git repo, a home, and the fake `claude` of
//! `tests/fixtures/fake-claude` scripted per phase; a builder that runs the
//! built `ralphd` binary against them; helpers to read what it left behind.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const MARKER: &str = "<promise>COMPLETE</promise>";

/// One test's world: `repo/`, `home/`, `fake/` (the fake agent's script and logs).
pub(crate) struct World {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub home: PathBuf,
    pub fake: PathBuf,
}

impl World {
    /// A repo with one commit (`README.md`), an empty home, default config
    /// tuned for tests (no sleeps, millisecond timeouts).
    pub(crate) fn new() -> World {
        let world = World::without_repo();
        std::fs::create_dir_all(&world.repo).unwrap();
        git(&world.repo, &["init", "-q", "-b", "main"]);
        world.write_repo("README.md", "# test project\n");
        world.commit_all("initial");
        world
    }

    pub(crate) fn without_repo() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let world = World {
            repo: root.join("repo"),
            home: root.join("home"),
            fake: root.join("fake"),
            root,
            _dir: dir,
        };
        std::fs::create_dir_all(&world.home).unwrap();
        std::fs::create_dir_all(&world.fake).unwrap();
        world.config("");
        world
    }

    /// Writes `home/ralph.toml`: the test defaults plus `extra` (TOML).
    pub(crate) fn config(&self, extra: &str) {
        let agent = fake_claude_path();
        let text = format!(
            "[loop]\nsleep_between_iterations = \"0s\"\n\n[agent]\ncommand = \"{}\"\nphase_timeout = \"30s\"\nidle_timeout = \"20s\"\nstop_grace = \"300ms\"\nretry_base_delay = \"10ms\"\nretry_max_delay = \"50ms\"\nusage_limit_margin = \"0s\"\n{extra}\n",
            agent.display()
        );
        std::fs::write(self.home.join("ralph.toml"), text).unwrap();
    }

    pub(crate) fn write_repo(&self, name: &str, content: &str) {
        let path = self.repo.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub(crate) fn read_repo(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.repo.join(name)).ok()
    }

    pub(crate) fn commit_all(&self, message: &str) {
        git(&self.repo, &["add", "-A"]);
        git(
            &self.repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                message,
            ],
        );
    }

    /// The fake agent prints `lines` for `phase` (every call, or call `n`).
    pub(crate) fn reply(&self, phase: &str, call: Option<u32>, lines: &[String]) {
        let name = match call {
            Some(n) => format!("{phase}.{n}.jsonl"),
            None => format!("{phase}.jsonl"),
        };
        std::fs::write(self.fake.join(name), lines.join("\n") + "\n").unwrap();
    }

    /// Shell code the fake agent sources before printing, in the repo as cwd.
    pub(crate) fn script(&self, phase: &str, call: Option<u32>, shell: &str) {
        let name = match call {
            Some(n) => format!("{phase}.{n}.sh"),
            None => format!("{phase}.sh"),
        };
        std::fs::write(self.fake.join(name), shell).unwrap();
    }

    /// How often `phase` was called so far (0 while the fake agent is
    /// rewriting its count: a poll reads it again).
    pub(crate) fn calls(&self, phase: &str) -> u32 {
        std::fs::read_to_string(self.fake.join(format!("count.{phase}")))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn stdin_of(&self, phase: &str, call: u32) -> String {
        std::fs::read_to_string(self.fake.join(format!("stdin.{phase}.{call}"))).unwrap()
    }

    pub(crate) fn calls_log(&self) -> String {
        std::fs::read_to_string(self.fake.join("calls.log")).unwrap_or_default()
    }

    pub(crate) fn ralphd(&self) -> RalphdCommand {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ralphd"));
        command
            .env("FAKE_CLAUDE_DIR", &self.fake)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .current_dir(&self.root);
        for (key, _) in std::env::vars() {
            if key.starts_with("RALPH_") {
                command.env_remove(key);
            }
        }
        RalphdCommand { command }
    }

    /// The command `ralphd run --repo R --home H <extra args>`, for a test
    /// to add to (an environment variable) before it runs it.
    pub(crate) fn run_command(&self, extra: &[&str]) -> RalphdCommand {
        let mut command = self.ralphd();
        command
            .args(["run", "--repo"])
            .arg(&self.repo)
            .arg("--home")
            .arg(&self.home)
            .args(extra);
        command
    }

    /// `ralphd run --repo R --home H <extra args>`.
    pub(crate) fn run(&self, extra: &[&str]) -> Outcome {
        self.run_command(extra).output()
    }

    /// Starts `ralphd run --repo R --home H <extra args>` in the background.
    pub(crate) fn start(&self, extra: &[&str]) -> Running {
        self.run_command(extra).spawn()
    }

    pub(crate) fn progress(&self) -> Value {
        read_json(&self.home.join("state/progress.json"))
    }

    /// The events of `state/events.jsonl` so far (a line still being
    /// written is left out).
    pub(crate) fn logged_events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.home.join("state/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    pub(crate) fn outcomes(&self) -> Vec<String> {
        self.progress()["cycles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cycle| cycle["outcome"].as_str().unwrap().to_owned())
            .collect()
    }

    pub(crate) fn git_log(&self) -> Vec<String> {
        let text = git(&self.repo, &["log", "--format=%s"]);
        text.lines().map(str::to_owned).collect()
    }

    pub(crate) fn git_status(&self) -> String {
        git(&self.repo, &["status", "--porcelain"])
    }
}

pub(crate) struct RalphdCommand {
    pub command: Command,
}

impl RalphdCommand {
    pub(crate) fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }
    pub(crate) fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.command.arg(arg);
        self
    }
    pub(crate) fn env(&mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.command.env(key, value);
        self
    }
    pub(crate) fn output(&mut self) -> Outcome {
        let output = self.command.output().expect("ralphd runs");
        Outcome::from(output)
    }

    /// Starts ralphd in the background (stdin null, stdout and stderr captured).
    pub(crate) fn spawn(&mut self) -> Running {
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ralphd starts");
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Running {
            child: Some(child),
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }
}

/// A ralphd started with [`RalphdCommand::spawn`]; killed (SIGKILL) if dropped unfinished.
pub(crate) struct Running {
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    pub(crate) fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("still running");
        i32::try_from(child.id()).expect("pid fits i32")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to ralphd itself.
    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits up to `limit` for ralphd to exit; `None` if it is still running then.
    pub(crate) fn wait_for_exit(&mut self, limit: Duration) -> Option<Outcome> {
        let child = self.child.as_mut().expect("still running");
        let mut status = None;
        poll_until(limit, || {
            status = child.try_wait().expect("wait for ralphd");
            status.is_some()
        });
        let status = status?;
        self.child = None;
        Some(self.collect(status.code().unwrap_or(-1)))
    }

    /// Kills ralphd (SIGKILL) and returns what it printed so far.
    pub(crate) fn kill(&mut self) -> Outcome {
        let mut child = self.child.take().expect("still running");
        let _ = child.kill();
        let status = child.wait().expect("reap ralphd");
        self.collect(status.code().unwrap_or(-1))
    }

    fn collect(&mut self, code: i32) -> Outcome {
        // A tool process that outlived ralphd and still holds the pipes would block here:
        // the tests check for such leftovers separately, so give up on the output instead.
        let join = |handle: Option<JoinHandle<String>>| {
            let handle = handle.expect("output not collected yet");
            if poll_until(Duration::from_secs(5), || handle.is_finished()) {
                handle.join().expect("output reader")
            } else {
                "<output pipe still held open by another process>".to_owned()
            }
        };
        Outcome {
            code,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Checks `done` every 20 ms until it holds (true) or `limit` has passed (false).
pub(crate) fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A live process seen in `/proc`.
#[derive(Clone, Debug)]
pub(crate) struct ProcInfo {
    pub pid: i32,
    /// The arguments, joined with spaces.
    pub cmdline: String,
    /// The working directory, when readable.
    #[cfg_attr(not(real_claude), allow(dead_code))] // Read by real_loop.rs only.
    pub cwd: Option<PathBuf>,
}

/// Every process in `/proc` (Linux) except zombies, with its command line and cwd.
pub(crate) fn processes() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path();
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // The state letter follows the parenthesised command name.
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            if state == "Z" || state == "X" {
                return None;
            }
            let raw = std::fs::read(dir.join("cmdline")).ok()?;
            let cmdline = raw
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            Some(ProcInfo {
                pid,
                cmdline,
                cwd: std::fs::read_link(dir.join("cwd")).ok(),
            })
        })
        .collect()
}

/// Live processes whose command line contains `needle` (e.g. `"sleep 300.123"`).
pub(crate) fn processes_running(needle: &str) -> Vec<ProcInfo> {
    processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(needle))
        .collect()
}

/// Live processes whose working directory lies under `dir`.
pub(crate) fn processes_under(dir: &Path) -> Vec<ProcInfo> {
    processes()
        .into_iter()
        .filter(|p| p.cwd.as_deref().is_some_and(|cwd| cwd.starts_with(dir)))
        .collect()
}

/// What a finished `ralphd` printed and returned.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Outcome {
    fn from(output: Output) -> Outcome {
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Outcome {
    #[track_caller]
    pub(crate) fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

pub(crate) fn fake_claude_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-claude")
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

/// A `system/init` line.
pub(crate) fn init_line() -> String {
    json!({"type": "system", "subtype": "init", "session_id": "s-1", "model": "fake"}).to_string()
}

/// A successful `result` line with `text`.
pub(crate) fn result_line(text: &str) -> String {
    json!({"type": "result", "subtype": "success", "is_error": false, "api_error_status": null,
        "num_turns": 2, "result": text, "session_id": "s-1", "total_cost_usd": 0.02,
        "permission_denials": []})
    .to_string()
}

/// An error `result` line as the CLI prints it for API errors.
pub(crate) fn error_result_line(status: Option<u16>, text: &str) -> String {
    json!({"type": "result", "subtype": "success", "is_error": true, "api_error_status": status,
        "num_turns": 1, "result": text, "session_id": "s-1", "total_cost_usd": 0.0})
    .to_string()
}

/// A successful phase answer: init + result.
pub(crate) fn answer(text: &str) -> Vec<String> {
    vec![init_line(), result_line(text)]
}

pub(crate) fn verdict(pass: bool, reason: &str) -> String {
    format!(
        "Judged.\n\n```json\n{}\n```",
        json!({"verdict": if pass { "pass" } else { "fail" }, "reason": reason})
    )
}

/// An HTTP answer as the test client read it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// A minimal HTTP/1.1 client over a plain socket, so that tests control
/// every header (Host, Origin…) and can hold a connection without reading.
pub(crate) fn http_request(addr: &str, request: &str) -> Reply {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to ralphd");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    parse_reply(&raw)
}

/// `method path` with `Host: addr`, `Connection: close` and `headers`
/// (each `Name: value`), and a body when given.
pub(crate) fn http(addr: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    http_request(addr, &request)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete answer head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(key, value)| key == "transfer-encoding" && value.contains("chunked"))
    {
        body = unchunk(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

/// The `host:port` of a running daemon's server, once status.json names it.
pub(crate) fn dashboard_addr(home: &Path, limit: Duration) -> String {
    let mut url = None;
    poll_until(limit, || {
        url = std::fs::read_to_string(home.join("state/status.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|status| status["dashboard"].as_str().map(str::to_owned));
        url.is_some()
    });
    let url = url.expect("status.json names the dashboard");
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}
