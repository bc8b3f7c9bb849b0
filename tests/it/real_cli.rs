//! Tests against the **real** Claude Code CLI, talking to the scripted [`FakeApi`].
//!
//! The CLI is found through `RALPHD_REAL_CLAUDE` (`export RALPHD_REAL_CLAUDE=$(.ci/install-claude)`).
//! This module and `real_loop.rs` are compiled only when the variable is set at build
//! time (build.rs); without it `real_cli_skipped::…` stands in for them (tests/it/main.rs).
//!
//! Helpers for reuse by the ralphd end-to-end scenarios:
//! * [`RealClaude::from_env`]: the CLI named by `RALPHD_REAL_CLAUDE`;
//! * [`CliEnv`]: the offline environment for a child (`CliEnv::new(&api, dir).apply(&mut cmd)`),
//!   which clears the inherited environment so that a developer's own credentials,
//!   `CLAUDECODE` or `~/.claude` never leak in;
//! * [`RealClaude::run`]: one `claude -p --output-format stream-json --verbose` run with the
//!   prompt on stdin, a wall-clock limit, and the parsed events ([`CliRun`]).
//!
//! The smoke tests here run the CLI directly, not through ralphd.

// Test support shared by several test modules: not every item is used by every module yet.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::fake_api::{BreakAt, FakeApi, Script, Step};

/// The variable naming the CLI executable.
pub(crate) const REAL_CLAUDE_VAR: &str = "RALPHD_REAL_CLAUDE";

/// A fake API key; any string works with the fake.
pub(crate) const FAKE_API_KEY: &str = "sk-ant-api03-fake-000";

/// A fake subscriber token (`CLAUDE_CODE_OAUTH_TOKEN`).
pub(crate) const FAKE_OAUTH_TOKEN: &str = "sk-ant-oat01-fake-000";

/// The wall-clock limit for one smoke run; runs take about a second.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The installed CLI.
pub(crate) struct RealClaude {
    pub path: PathBuf,
}

impl RealClaude {
    /// The CLI named by `RALPHD_REAL_CLAUDE`. The tests were compiled because it
    /// was set at build time; it must still be set when they run.
    pub(crate) fn from_env() -> RealClaude {
        let path = std::env::var_os(REAL_CLAUDE_VAR).filter(|p| !p.is_empty());
        let Some(path) = path else {
            panic!(
                "{REAL_CLAUDE_VAR} was set when the tests were built but is not set now: \
                 export {REAL_CLAUDE_VAR}=$(.ci/install-claude), or unset it and rebuild to skip \
                 the real-CLI tests"
            );
        };
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{REAL_CLAUDE_VAR}={} is not a file (run .ci/install-claude)",
            path.display()
        );
        RealClaude { path }
    }

    /// Runs `claude -p --output-format stream-json --verbose <args>` in `workdir`, with
    /// `prompt` on stdin (then closed) and the environment of `env`. Kills the process
    /// group and panics if it takes longer than a minute.
    pub(crate) fn run(&self, workdir: &Path, env: &CliEnv, args: &[&str], prompt: &str) -> CliRun {
        let mut command = Command::new(&self.path);
        command
            .args(["-p", "--output-format", "stream-json", "--verbose"])
            .args(args)
            .current_dir(workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        env.apply(&mut command);
        run_to_end(command, prompt, RUN_LIMIT)
    }
}

/// Which credentials the CLI gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `ANTHROPIC_API_KEY` (sent as `x-api-key`).
    ApiKey,
    /// `CLAUDE_CODE_OAUTH_TOKEN` (subscriber mode: `rate_limit_event`s, usage limits).
    OAuth,
}

/// The environment that keeps the CLI offline and isolated, pointed at a [`FakeApi`].
#[derive(Clone, Debug)]
pub(crate) struct CliEnv {
    pub base_url: String,
    pub auth: Auth,
    /// `CLAUDE_CONFIG_DIR`: transcripts, `.claude.json`, session ids live here.
    pub config_dir: PathBuf,
    /// `HOME`, so that nothing of the developer's home is read or written.
    pub home: PathBuf,
    /// `CLAUDE_CODE_MAX_RETRIES` (the CLI's default is 10, about 3 minutes of backoff).
    pub max_retries: u32,
    /// `API_TIMEOUT_MS` (the CLI's default is 10 minutes per request).
    pub api_timeout: Duration,
    /// More variables, set last.
    pub extra: Vec<(String, String)>,
}

impl CliEnv {
    /// API-key auth, 1 retry, 20 s per request; config and home under `dir` (created).
    pub(crate) fn new(api: &FakeApi, dir: &Path) -> CliEnv {
        let config_dir = dir.join("claude-config");
        let home = dir.join("home");
        std::fs::create_dir_all(&config_dir).expect("create CLAUDE_CONFIG_DIR");
        std::fs::create_dir_all(&home).expect("create HOME");
        CliEnv {
            base_url: api.base_url(),
            auth: Auth::ApiKey,
            config_dir,
            home,
            max_retries: 1,
            api_timeout: Duration::from_secs(20),
            extra: Vec::new(),
        }
    }

    pub(crate) fn auth(mut self, auth: Auth) -> CliEnv {
        self.auth = auth;
        self
    }

    pub(crate) fn max_retries(mut self, max_retries: u32) -> CliEnv {
        self.max_retries = max_retries;
        self
    }

    pub(crate) fn api_timeout(mut self, api_timeout: Duration) -> CliEnv {
        self.api_timeout = api_timeout;
        self
    }

    pub(crate) fn var(mut self, name: &str, value: &str) -> CliEnv {
        self.extra.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The variables, without the inherited `PATH`.
    pub(crate) fn vars(&self) -> Vec<(String, String)> {
        let (auth_var, token) = match self.auth {
            Auth::ApiKey => ("ANTHROPIC_API_KEY", FAKE_API_KEY),
            Auth::OAuth => ("CLAUDE_CODE_OAUTH_TOKEN", FAKE_OAUTH_TOKEN),
        };
        let mut vars: Vec<(String, String)> = [
            ("ANTHROPIC_BASE_URL", self.base_url.as_str()),
            (auth_var, token),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_ERROR_REPORTING", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        vars.extend([
            (
                "CLAUDE_CONFIG_DIR".to_owned(),
                self.config_dir.display().to_string(),
            ),
            ("HOME".to_owned(), self.home.display().to_string()),
            (
                "CLAUDE_CODE_MAX_RETRIES".to_owned(),
                self.max_retries.to_string(),
            ),
            (
                "API_TIMEOUT_MS".to_owned(),
                self.api_timeout.as_millis().to_string(),
            ),
        ]);
        vars.extend(self.extra.iter().cloned());
        vars
    }

    /// Clears `command`'s environment, keeps `PATH` (and `SHELL`, `TZ` when set: the
    /// Bash tool and the "resets <time>" text use them) and sets [`CliEnv::vars`].
    pub(crate) fn apply(&self, command: &mut Command) {
        command.env_clear();
        for name in ["PATH", "SHELL", "TZ"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.envs(self.vars());
    }
}

/// The outcome of one CLI run.
#[derive(Debug)]
pub(crate) struct CliRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// stdout's JSON lines (non-JSON lines are skipped).
    pub events: Vec<Value>,
    pub elapsed: Duration,
}

impl CliRun {
    /// The final `result` event; panics with the whole output when there is none.
    pub(crate) fn result(&self) -> &Value {
        self.events
            .iter()
            .rev()
            .find(|e| e["type"] == "result")
            .unwrap_or_else(|| panic!("no result event\n{self}"))
    }

    /// The result text (`""` when absent).
    pub(crate) fn result_text(&self) -> &str {
        self.result()["result"].as_str().unwrap_or_default()
    }

    /// Events with this `type` (and this `subtype`, if given).
    pub(crate) fn events_of(&self, kind: &str, subtype: Option<&str>) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == kind && subtype.is_none_or(|s| e["subtype"] == s))
            .collect()
    }
}

impl std::fmt::Display for CliRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {}, after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Spawns `command` (stdin, stdout and stderr piped, in its own process group), writes
/// `input` and closes stdin, reads both outputs concurrently, and waits for the exit by
/// polling until `limit`; past it, kills the group and panics.
pub(crate) fn run_to_end(mut command: Command, input: &str, limit: Duration) -> CliRun {
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn the CLI");
    let mut stdin = child.stdin.take().expect("piped stdin");
    // A closed pipe (the child exited early) is not our failure; the output tells why.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = started + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the CLI") {
            break status;
        }
        if Instant::now() >= deadline {
            let pid = i32::try_from(child.id()).expect("pid fits i32");
            // SAFETY: kill(2) with a negative pid signals the group we created for the child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let status = child.wait().expect("reap the CLI");
            let run = finish(status, stdout, stderr, started);
            panic!("the CLI did not finish within {limit:?}\n{run}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    finish(status, stdout, stderr, started)
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn finish(
    status: ExitStatus,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
    started: Instant,
) -> CliRun {
    // The pipes close when the CLI exits, unless a tool process it left behind holds them.
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let events = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    CliRun {
        status,
        stdout,
        stderr,
        events,
        elapsed: started.elapsed(),
    }
}

/// A temp dir with `work/` (the CLI's cwd) and the config and home of [`CliEnv`].
struct Sandbox {
    dir: tempfile::TempDir,
    work: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).expect("create work dir");
        // The CLI reports its cwd with symlinks resolved (e.g. macOS /var -> /private/var).
        let work = work.canonicalize().expect("canonical work dir");
        Sandbox { dir, work }
    }

    fn env(&self, api: &FakeApi) -> CliEnv {
        CliEnv::new(api, self.dir.path())
    }
}

const MARKER: &str = "<promise>COMPLETE</promise>";

#[test]
fn real_cli_text_answer_with_split_marker() {
    let claude = RealClaude::from_env();
    let api = FakeApi::start(Script::global([Step::text_deltas([
        "All done.\n<promise>COMP",
        "LETE</promise>",
    ])]));
    let sandbox = Sandbox::new();

    let run = claude.run(&sandbox.work, &sandbox.env(&api), &[], "say the marker");

    assert!(run.status.success(), "{run}");
    let result = run.result();
    assert_eq!(result["subtype"], "success", "{run}");
    assert_eq!(result["is_error"], false, "{run}");
    assert!(
        run.result_text().lines().any(|l| l.trim() == MARKER),
        "{run}"
    );
    let cost = result["total_cost_usd"].as_f64().expect("total_cost_usd");
    assert!(cost > 0.0 && cost < 0.05, "cost {cost}\n{run}");
    let init = &run.events_of("system", Some("init"))[0];
    assert_eq!(init["cwd"], json!(sandbox.work), "{run}");

    let requests = api.requests();
    assert_eq!(requests.len(), 1, "{run}");
    let request = &requests[0];
    assert_eq!(request.path, "/v1/messages?beta=true");
    assert!(request.stream);
    assert_eq!(request.header("x-api-key"), Some(FAKE_API_KEY));
    assert_eq!(request.session_id, init["session_id"].as_str().unwrap());
    assert_eq!(request.cwd.as_deref(), Some(sandbox.work.as_path()));
    assert!(
        request.prompt.contains("say the marker"),
        "{}",
        request.prompt
    );
    assert!(
        request.tools.iter().any(|t| t == "Write"),
        "{:?}",
        request.tools
    );
}

/// The model asks for Write, then says it is done.
fn write_then_done() -> Script {
    Script::per_session([
        Step::text("Writing the file.").then_tool_use(
            "Write",
            json!({"file_path": "{cwd}/out.txt", "content": "written by the fake model\n"}),
        ),
        Step::text("done"),
    ])
}

#[test]
fn real_cli_write_is_denied_in_default_mode_with_read_allowed() {
    let claude = RealClaude::from_env();
    let api = FakeApi::start(write_then_done());
    let sandbox = Sandbox::new();

    let run = claude.run(
        &sandbox.work,
        &sandbox.env(&api),
        &["--allowedTools", "Read"],
        "write out.txt",
    );

    assert!(run.status.success(), "{run}");
    let result = run.result();
    assert_eq!(result["is_error"], false, "{run}");
    assert_eq!(result["result"], "done", "{run}");
    let denials = result["permission_denials"].as_array().expect("denials");
    assert_eq!(denials.len(), 1, "{run}");
    assert_eq!(denials[0]["tool_name"], "Write");
    assert_eq!(
        denials[0]["tool_input"]["file_path"],
        json!(sandbox.work.join("out.txt"))
    );
    assert!(!sandbox.work.join("out.txt").exists());

    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{run}");
    let denial = &requests[1].tool_results[0];
    assert!(denial.is_error, "{denial:?}");
    assert!(denial.content.contains("haven't granted"), "{denial:?}");
}

#[test]
fn real_cli_write_is_allowed_with_accept_edits() {
    let claude = RealClaude::from_env();
    let api = FakeApi::start(write_then_done());
    let sandbox = Sandbox::new();

    let run = claude.run(
        &sandbox.work,
        &sandbox.env(&api),
        &["--permission-mode", "acceptEdits"],
        "write out.txt",
    );

    assert!(run.status.success(), "{run}");
    let result = run.result();
    assert_eq!(result["is_error"], false, "{run}");
    assert_eq!(result["permission_denials"], json!([]), "{run}");
    let written = std::fs::read_to_string(sandbox.work.join("out.txt")).expect("out.txt");
    assert_eq!(written, "written by the fake model\n");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{run}");
    assert!(!requests[1].tool_results[0].is_error, "{:?}", requests[1]);
}

#[test]
fn real_cli_429_beyond_retries_is_an_error() {
    let claude = RealClaude::from_env();
    let api = FakeApi::start(Script::responder(|_| Step::rate_limited()));
    let sandbox = Sandbox::new();

    let run = claude.run(&sandbox.work, &sandbox.env(&api).max_retries(1), &[], "hi");

    assert_eq!(run.status.code(), Some(1), "{run}");
    let result = run.result();
    assert_eq!(result["is_error"], true, "{run}");
    assert_eq!(result["api_error_status"], 429, "{run}");
    assert!(run.result_text().contains("429"), "{run}");
    let retries = run.events_of("system", Some("api_retry"));
    assert_eq!(retries.len(), 1, "{run}");
    assert_eq!(retries[0]["error_status"], 429);
    assert_eq!(api.requests().len(), 2, "{run}");
}

#[test]
fn real_cli_oauth_usage_limit_reports_resets_at() {
    let claude = RealClaude::from_env();
    let resets_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let api = FakeApi::start(Script::responder(move |_| Step::usage_limit(resets_at)));
    let sandbox = Sandbox::new();

    let env = sandbox.env(&api).auth(Auth::OAuth).max_retries(1);
    let run = claude.run(&sandbox.work, &env, &[], "hi");

    assert_eq!(run.status.code(), Some(1), "{run}");
    let result = run.result();
    assert_eq!(result["is_error"], true, "{run}");
    assert_eq!(result["api_error_status"], 429, "{run}");
    assert!(run.result_text().contains("limit"), "{run}");
    let limits = run.events_of("rate_limit_event", None);
    let rejected = limits
        .iter()
        .find(|e| e["rate_limit_info"]["status"] == "rejected")
        .unwrap_or_else(|| panic!("no rejected rate_limit_event\n{run}"));
    assert_eq!(rejected["rate_limit_info"]["resetsAt"], resets_at, "{run}");
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "a usage limit is not retried\n{run}");
    let bearer = format!("Bearer {FAKE_OAUTH_TOKEN}");
    assert_eq!(requests[0].header("authorization"), Some(bearer.as_str()));
}

#[test]
fn real_cli_401_says_invalid_api_key() {
    let claude = RealClaude::from_env();
    let api = FakeApi::start(Script::responder(|_| Step::unauthorized()));
    let sandbox = Sandbox::new();

    let run = claude.run(&sandbox.work, &sandbox.env(&api).max_retries(1), &[], "hi");

    assert_eq!(run.status.code(), Some(1), "{run}");
    let result = run.result();
    assert_eq!(result["is_error"], true, "{run}");
    assert_eq!(result["api_error_status"], 401, "{run}");
    assert!(run.result_text().contains("Invalid API key"), "{run}");
    // With an API key the CLI retries a 401 like a 5xx.
    assert_eq!(api.requests().len(), 2, "{run}");
}

#[test]
fn real_cli_broken_stream_falls_back_to_non_streaming() {
    let claude = RealClaude::from_env();
    let api = FakeApi::start(Script::global([
        Step::stream_error(),
        Step::text("recovered"),
    ]));
    let sandbox = Sandbox::new();

    let run = claude.run(&sandbox.work, &sandbox.env(&api), &[], "hi");

    assert!(run.status.success(), "{run}");
    assert_eq!(run.result()["is_error"], false, "{run}");
    assert_eq!(run.result_text(), "recovered", "{run}");
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{run}");
    assert!(requests[0].stream);
    assert!(!requests[1].stream, "the fallback is non-streaming");
}

#[test]
fn real_cli_stream_error_after_a_finished_block_ends_the_run() {
    let claude = RealClaude::from_env();
    let api = FakeApi::start(Script::global([
        Step::stream_error_at(BreakAt::AfterBlockStop),
        Step::text("never asked for"),
    ]));
    let sandbox = Sandbox::new();

    let run = claude.run(&sandbox.work, &sandbox.env(&api), &[], "hi");

    assert_eq!(run.status.code(), Some(1), "{run}");
    let result = run.result();
    assert_eq!(result["is_error"], true, "{run}");
    assert_eq!(result["api_error_status"], Value::Null, "{run}");
    assert_eq!(run.result_text(), "API Error: Overloaded", "{run}");
    assert_eq!(api.requests().len(), 1, "{run}");
}

#[test]
fn real_cli_hung_request_times_out() {
    let claude = RealClaude::from_env();
    let api = FakeApi::start(Script::responder(|_| Step::Hang));
    let sandbox = Sandbox::new();

    let env = sandbox
        .env(&api)
        .max_retries(0)
        .api_timeout(Duration::from_millis(1500));
    let run = claude.run(&sandbox.work, &env, &[], "hi");

    assert_eq!(run.status.code(), Some(1), "{run}");
    let result = run.result();
    assert_eq!(result["is_error"], true, "{run}");
    assert!(run.result_text().contains("timed out"), "{run}");
    assert_eq!(api.requests().len(), 1, "{run}");
}
