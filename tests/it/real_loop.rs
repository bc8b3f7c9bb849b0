//! End-to-end scenarios: the built `ralphd` drives the **real** Claude Code CLI, which
//! talks to the scripted [`FakeApi`], on a temp git repo (issue 6).
//!
//! Compiled only when `RALPHD_REAL_CLAUDE` is set at build time, like `real_cli.rs`.
//!
//! The fake model answers by the phase named on the first line of ralphd's prompt
//! (`# ralphd · cycle <n> · <phase>`), see [`Turn`]. ralph.toml uses second-scale
//! timeouts and millisecond-scale backoff; the CLI gets `CLAUDE_CODE_MAX_RETRIES` and
//! `API_TIMEOUT_MS` from [`CliEnv`], set on ralphd's own environment (ralphd passes it
//! through to the child). Every test ends by checking that no process is left whose
//! working directory lies in the test's temp dir.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::fake_api::{FakeApi, RecordedRequest, Script, Step};
use crate::real_cli::{Auth, CliEnv, RealClaude};
use crate::support::{
    MARKER, Outcome, RalphdCommand, World, git, poll_until, processes_running, processes_under,
    read_json,
};

/// How long one ralphd run may take before the test kills it and fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The phase and cycle a request belongs to, read from ralphd's prompt heading.
struct Turn<'a> {
    cycle: u64,
    phase: String,
    request: &'a RecordedRequest,
}

impl<'a> Turn<'a> {
    fn of(request: &'a RecordedRequest) -> Turn<'a> {
        const HEADING: &str = "# ralphd · cycle ";
        let start = request
            .prompt
            .find(HEADING)
            .unwrap_or_else(|| panic!("no ralphd heading in the prompt:\n{}", request.prompt));
        let line = request.prompt[start + HEADING.len()..]
            .lines()
            .next()
            .unwrap_or_default();
        let (cycle, phase) = line.split_once(" · ").expect("`<n> · <phase>`");
        Turn {
            cycle: cycle.trim().parse().expect("cycle number"),
            phase: phase.trim().to_owned(),
            request,
        }
    }

    /// The model's first turn of this CLI run (no tool result to answer yet).
    fn first(&self) -> bool {
        self.request.tool_results.is_empty()
    }

    fn is(&self, phase: &str) -> bool {
        self.phase == phase
    }
}

/// A well-formed final answer for each phase (idea titled, backtest passing,
/// report with its json block).
fn answer(phase: &str) -> Step {
    Step::text(match phase {
        "scan" => "The repository has a README and nothing else worth noting.".to_owned(),
        "idea" => "TITLE: Add notes.txt\n\nCreate notes.txt with one line.".to_owned(),
        "code-edit" => "Done.".to_owned(),
        "backtest" => format!(
            "The change matches the idea.\n\n```json\n{}\n```",
            json!({"verdict": "pass", "reason": "notes.txt added as planned"})
        ),
        "report" => format!(
            "Cycle summary.\n\n```json\n{}\n```",
            json!({"summary": "added notes.txt", "learnings": ["small steps work"], "patterns": []})
        ),
        other => panic!("unknown phase {other}"),
    })
}

/// The usual model: writes `notes.txt` in code-edit, answers every phase well.
fn usual(turn: &Turn) -> Step {
    if turn.is("code-edit") && turn.first() {
        Step::text("Writing notes.txt.").then_tool_use(
            "Write",
            json!({"file_path": "{cwd}/notes.txt", "content": "a note\n"}),
        )
    } else {
        answer(&turn.phase)
    }
}

/// Answers each request with `model(turn)`.
fn model(model: impl Fn(&Turn) -> Step + Send + Sync + 'static) -> Script {
    Script::responder(move |request| model(&Turn::of(request)))
}

/// One test: a world (repo + home), the fake API, the CLI's environment.
struct Scene {
    world: World,
    claude: RealClaude,
    api: FakeApi,
    env: CliEnv,
}

impl Scene {
    fn new(script: Script) -> Scene {
        let claude = RealClaude::from_env();
        let world = World::new();
        let api = FakeApi::start(script);
        // Config and HOME of the CLI live next to the repo, not inside it.
        let env = CliEnv::new(&api, &world.root.join("cli"));
        let scene = Scene {
            world,
            claude,
            api,
            env,
        };
        scene.config(&[], "");
        scene
    }

    /// Writes ralph.toml: the test defaults, `[agent]` keys overridden or added by
    /// `agent` (values in TOML syntax), then `extra` (more tables).
    fn config(&self, agent: &[(&str, &str)], extra: &str) {
        let command = format!("{:?}", self.claude.path.display().to_string());
        let mut keys: Vec<(&str, String)> = [
            ("command", command.as_str()),
            ("phase_timeout", "\"60s\""),
            ("idle_timeout", "\"45s\""),
            ("stop_grace", "\"500ms\""),
            ("max_attempts", "3"),
            ("retry_base_delay", "\"200ms\""),
            ("retry_max_delay", "\"1s\""),
            ("usage_limit_margin", "\"0s\""),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
        for (key, value) in agent {
            match keys.iter_mut().find(|(k, _)| k == key) {
                Some(entry) => entry.1 = (*value).to_owned(),
                None => keys.push((key, (*value).to_owned())),
            }
        }
        let agent: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let text =
            format!("[loop]\nsleep_between_iterations = \"0s\"\n\n[agent]\n{agent}\n{extra}\n");
        std::fs::write(self.world.home.join("ralph.toml"), text).expect("write ralph.toml");
    }

    /// `ralphd run --repo R --home H <args>` with the CLI's environment (and nothing
    /// else of ours: the developer's credentials never reach the CLI).
    fn ralphd(&self, args: &[&str]) -> RalphdCommand {
        let mut command = self.world.ralphd();
        self.env.apply(&mut command.command);
        command
            .env("NO_COLOR", "1")
            .args(["run", "--repo"])
            .arg(&self.world.repo)
            .arg("--home")
            .arg(&self.world.home)
            .args(args);
        command
    }

    /// Runs ralphd to its exit (killing it and failing after [`RUN_LIMIT`]).
    fn run(&self, args: &[&str]) -> Outcome {
        let mut running = self.ralphd(args).spawn();
        match running.wait_for_exit(RUN_LIMIT) {
            Some(outcome) => outcome,
            None => panic!(
                "ralphd did not exit within {RUN_LIMIT:?}\n{}",
                describe(&running.kill())
            ),
        }
    }

    fn progress(&self) -> Value {
        self.world.progress()
    }

    fn cycle(&self, n: usize) -> Value {
        self.progress()["cycles"][n - 1].clone()
    }

    /// The record of `phase` in cycle `n` of progress.json.
    fn phase_record(&self, n: usize, phase: &str) -> Value {
        let cycle = self.cycle(n);
        cycle["phases"]
            .as_array()
            .expect("phases")
            .iter()
            .find(|p| p["phase"] == phase)
            .cloned()
            .unwrap_or_else(|| panic!("no {phase} in cycle {n}: {cycle:#}"))
    }

    /// The JSON lines of `state/cycles/<n>/<phase>.jsonl`.
    fn transcript(&self, n: u64, phase: &str) -> Vec<Value> {
        let path = self
            .world
            .home
            .join(format!("state/cycles/{n}/{phase}.jsonl"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The requests of one phase (all cycles), in arrival order.
    fn requests_of(&self, phase: &str) -> Vec<RecordedRequest> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| Turn::of(r).is(phase))
            .collect()
    }

    /// The phases the CLI asked the model about, in order, without repeats in a row.
    fn phases_asked(&self) -> Vec<String> {
        let mut phases: Vec<String> = Vec::new();
        for request in self.api.requests() {
            let phase = Turn::of(&request).phase;
            if phases.last() != Some(&phase) {
                phases.push(phase);
            }
        }
        phases
    }

    /// Nothing started by this test's ralphd (CLI, tools) is still alive.
    #[track_caller]
    fn assert_nothing_left(&self) {
        let left = processes_under(&self.world.root);
        assert!(left.is_empty(), "processes left behind: {left:#?}");
    }
}

fn describe(outcome: &Outcome) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}",
        outcome.code, outcome.stdout, outcome.stderr
    )
}

/// The distinct CLI sessions of `requests`, in order, with their request counts.
fn sessions(requests: &[RecordedRequest]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for request in requests {
        match out.iter_mut().find(|(id, _)| *id == request.session_id) {
            Some(entry) => entry.1 += 1,
            None => out.push((request.session_id.clone(), 1)),
        }
    }
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

const PHASES: [&str; 5] = ["scan", "idea", "code-edit", "backtest", "report"];

/// Scenario 1: Write in every phase: only code-edit may write, the others' denials are recorded,
/// the cycle is committed, and its costs are the result events' `total_cost_usd`.
#[test]
fn real_loop_write_in_every_phase_only_code_edit_writes() {
    let scene = Scene::new(model(|turn| {
        if turn.first() {
            Step::text(format!("{}: writing a file.", turn.phase)).then_tool_use(
                "Write",
                json!({"file_path": format!("{{cwd}}/from-{}.txt", turn.phase),
                       "content": format!("written in {}\n", turn.phase)}),
            )
        } else if turn.is("idea") {
            Step::text("TITLE: Add from-code-edit.txt\n\nWrite one file.")
        } else {
            answer(&turn.phase)
        }
    }));

    let outcome = scene.run(&["--max-iterations", "1"]);

    assert_eq!(outcome.code, 1, "{}", describe(&outcome));
    assert_eq!(
        scene.world.outcomes(),
        ["committed"],
        "{}",
        describe(&outcome)
    );
    assert_eq!(
        scene.world.git_log(),
        ["ralphd: cycle 1: Add from-code-edit.txt", "initial"]
    );
    let tracked = git(&scene.world.repo, &["ls-files"]);
    assert_eq!(
        tracked.lines().collect::<Vec<_>>(),
        ["README.md", "from-code-edit.txt"]
    );
    assert_eq!(
        scene.world.read_repo("from-code-edit.txt").as_deref(),
        Some("written in code-edit\n")
    );
    assert_eq!(scene.world.git_status(), "");

    let mut sum = 0.0;
    for phase in PHASES {
        let record = scene.phase_record(1, phase);
        assert_eq!(record["status"], "ok", "{record:#}");
        let denials = strings(&record["permission_denials"]);
        if phase == "code-edit" {
            assert!(denials.is_empty(), "{record:#}");
        } else {
            assert_eq!(denials, ["Write"], "{phase}: {record:#}");
            assert!(!scene.world.repo.join(format!("from-{phase}.txt")).exists());
            // What the model was told about its denied Write.
            let requests = scene.requests_of(phase);
            let told = &requests.last().unwrap().tool_results[0];
            assert!(
                told.is_error && told.content.contains("haven't granted"),
                "{told:?}"
            );
        }
        // The cost ralphd recorded is the one the CLI's result event reported.
        let transcript = scene.transcript(1, phase);
        let result = transcript
            .iter()
            .rev()
            .find(|e| e["type"] == "result")
            .expect("a result line in the transcript");
        let reported = result["total_cost_usd"].as_f64().expect("total_cost_usd");
        let recorded = record["cost_usd"].as_f64().expect("cost_usd");
        assert!(reported > 0.0, "{result}");
        assert!(
            (recorded - reported).abs() < 1e-9,
            "{phase}: {recorded} vs {reported}"
        );
        sum += recorded;
    }
    let cycle_cost = scene.cycle(1)["cost_usd"].as_f64().unwrap();
    assert!((cycle_cost - sum).abs() < 1e-9, "{cycle_cost} vs {sum}");
    let total = scene.progress()["total_cost_usd"].as_f64().unwrap();
    assert!((total - sum).abs() < 1e-9, "{total} vs {sum}");
    scene.assert_nothing_left();
}

/// Scenario 2: The marker on its own line of the result is completion: the cycle ends with its
/// report (code-edit and backtest skipped) and ralphd exits 0 before its iteration cap.
#[test]
fn real_loop_completion_marker_ends_the_run_with_exit_0() {
    let scene = Scene::new(model(|turn| {
        if turn.is("scan") {
            Step::text_deltas(["Every item is done.\n<promise>COMP", "LETE</promise>\n"])
        } else {
            answer(&turn.phase)
        }
    }));

    let outcome = scene.run(&["--max-iterations", "3"]);

    assert_eq!(outcome.code, 0, "{}", describe(&outcome));
    assert_eq!(
        scene.world.outcomes(),
        ["complete"],
        "{}",
        describe(&outcome)
    );
    assert_eq!(scene.phases_asked(), ["scan", "idea", "report"]);
    assert_eq!(scene.world.git_log(), ["initial"]);
    scene.assert_nothing_left();
}

/// Scenario 3: The marker inside a Read tool_result (a repo file contains it) is not completion.
#[test]
fn real_loop_marker_in_a_read_tool_result_is_not_completion() {
    let scene = Scene::new(model(|turn| {
        if turn.is("scan") && turn.first() {
            Step::tool_use("Read", json!({"file_path": "{cwd}/TODO.md"}))
        } else if turn.is("scan") {
            Step::text("TODO.md still lists open work.")
        } else if turn.is("code-edit") {
            Step::text("Nothing to change this time.")
        } else {
            answer(&turn.phase)
        }
    }));
    scene.world.write_repo(
        "TODO.md",
        &format!("# TODO\n\n- [ ] everything\n\nWhen every item is done, answer:\n{MARKER}\n"),
    );
    scene.world.commit_all("todo");

    let outcome = scene.run(&["--max-iterations", "1"]);

    assert_eq!(outcome.code, 1, "{}", describe(&outcome));
    assert_eq!(
        scene.world.outcomes(),
        ["no_changes"],
        "{}",
        describe(&outcome)
    );
    // The marker did reach the stream, inside the Read tool_result.
    let scan = scene.requests_of("scan");
    assert!(
        scan[1].tool_results[0].content.contains(MARKER),
        "{:?}",
        scan[1].tool_results
    );
    let tool_result_lines = scene
        .transcript(1, "scan")
        .into_iter()
        .filter(|e| e["type"] == "user" && e.to_string().contains(MARKER))
        .count();
    assert!(
        tool_result_lines > 0,
        "the marker is in a user line of scan.jsonl"
    );
    assert!(
        !outcome.stderr.contains("declared completion"),
        "{}",
        outcome.stderr
    );
    scene.assert_nothing_left();
}

/// Scenario 4: In code-edit the model writes a value and runs the project's check command with
/// its Bash tool (allowed for that command in ralph.toml); ralphd's own run of the
/// checks then decides: pass without a verdict block → committed; a failing check
/// overrides the agent's `pass` → rolled back, the attempt saved.
#[test]
fn real_loop_bash_runs_the_checks_and_checks_decide_the_verdict() {
    let scene = Scene::new(model(|turn| match turn.phase.as_str() {
        "idea" => Step::text(format!("TITLE: Set the answer (cycle {})", turn.cycle)),
        // The CLI's Write refuses to overwrite a file this session has not read.
        "code-edit" => match turn.request.session_seq {
            0 => Step::tool_use("Read", json!({"file_path": "{cwd}/answer.txt"})),
            1 => {
                let content = format!("answer={}\n", if turn.cycle == 1 { 42 } else { 41 });
                Step::tool_use(
                    "Write",
                    json!({"file_path": "{cwd}/answer.txt", "content": content}),
                )
            }
            2 => Step::tool_use(
                "Bash",
                json!({"command": "sh check.sh", "description": "run the project's checks"}),
            ),
            _ => Step::text("Done; see the check output."),
        },
        // Cycle 1: no verdict block at all; cycle 2: an (over-)confident pass.
        "backtest" if turn.cycle == 1 => Step::text("I had a look."),
        _ => answer(&turn.phase),
    }));
    scene.world.write_repo(
        "check.sh",
        "if grep -qx 'answer=42' answer.txt; then echo 'check: answer ok'; \
         else echo 'check: wrong answer'; exit 1; fi\n",
    );
    scene.world.write_repo("answer.txt", "answer=0\n");
    scene.world.commit_all("the check");
    scene.config(
        &[],
        "[phases.code-edit]\npermission_mode = \"acceptEdits\"\n\
         allowed_tools = [\"Bash(sh check.sh)\"]\n\n\
         [backtest]\nchecks = [\"sh check.sh\"]\ncheck_timeout = \"20s\"\n",
    );

    let outcome = scene.run(&["--max-iterations", "2"]);

    assert_eq!(outcome.code, 1, "{}", describe(&outcome));
    assert_eq!(
        scene.world.outcomes(),
        ["committed", "rolled_back"],
        "{}",
        describe(&outcome)
    );
    // The model's Bash call really ran the check, and saw its output.
    let edits = scene.requests_of("code-edit");
    let results: Vec<&str> = edits
        .iter()
        .flat_map(|r| r.tool_results.iter())
        .filter(|t| t.content.contains("check:"))
        .map(|t| t.content.as_str())
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].contains("check: answer ok"), "{results:?}");
    assert!(results[1].contains("check: wrong answer"), "{results:?}");
    // Cycle 2's backtest prompt shows ralphd's own run of the failing check.
    let backtests = scene.requests_of("backtest");
    let cycle2 = backtests
        .iter()
        .find(|r| Turn::of(r).cycle == 2)
        .expect("cycle 2 backtest");
    assert!(
        cycle2.prompt.contains("check: wrong answer"),
        "{}",
        cycle2.prompt
    );
    // Committed value kept, rejected one saved aside.
    assert_eq!(
        scene.world.git_log()[0],
        "ralphd: cycle 1: Set the answer (cycle 1)"
    );
    assert_eq!(
        scene.world.read_repo("answer.txt").as_deref(),
        Some("answer=42\n")
    );
    assert_eq!(scene.world.git_status(), "");
    let saved = git(
        &scene.world.repo,
        &["show", "refs/ralph/attempts/2:answer.txt"],
    );
    assert_eq!(saved, "answer=41\n");
    scene.assert_nothing_left();
}

/// Scenario 5: A subscriber usage limit (OAuth, 429 with the unified headers, reset 3 s ahead):
/// ralphd shows the wait in its status, sleeps until `resetsAt`, re-runs the same phase,
/// and neither an iteration nor a breaker failure is spent on it.
#[test]
fn real_loop_usage_limit_waits_for_the_reset_and_reruns_the_phase() {
    // The reset is 3 s after the CLI first asks, not after the test starts: a
    // CLI slow to start on a busy machine must still meet a limit in the future.
    let first_reset = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let noted = std::sync::Arc::clone(&first_reset);
    let mut scene = Scene::new(Script::responder(move |request| {
        if request.seq == 0 {
            let resets_at = now_secs() + 3;
            noted.store(resets_at, std::sync::atomic::Ordering::SeqCst);
            Step::usage_limit(resets_at)
        } else {
            usual(&Turn::of(request))
        }
    }));
    scene.env = scene.env.clone().auth(Auth::OAuth);

    let mut running = scene.ralphd(&["--max-iterations", "1"]).spawn();
    let status_path = scene.world.home.join("state/status.json");
    let waited = poll_until(Duration::from_secs(30), || {
        std::fs::read(&status_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .is_some_and(|status| status["waiting"]["reason"] == "usage limit")
    });
    let outcome = running
        .wait_for_exit(RUN_LIMIT)
        .unwrap_or_else(|| panic!("ralphd did not exit\n{}", describe(&running.kill())));
    let resets_at = first_reset.load(std::sync::atomic::Ordering::SeqCst);

    assert!(
        waited,
        "status.json never showed the usage-limit wait\n{}",
        describe(&outcome)
    );
    assert_eq!(outcome.code, 1, "{}", describe(&outcome));
    assert_eq!(
        scene.world.outcomes(),
        ["committed"],
        "{}",
        describe(&outcome)
    );
    let scan = scene.requests_of("scan");
    let runs = sessions(&scan);
    assert_eq!(runs.len(), 2, "the scan ran twice: {runs:?}");
    assert_eq!(
        runs[0].1, 1,
        "the CLI does not retry a usage limit: {runs:?}"
    );
    // The re-run started no earlier than the reset.
    let rerun = scan.iter().find(|r| r.session_id == runs[1].0).unwrap();
    let rerun_at = SystemTime::now() - rerun.at.elapsed();
    assert!(
        rerun_at >= UNIX_EPOCH + Duration::from_secs(resets_at),
        "re-run {:?} before the reset {resets_at}",
        rerun_at.duration_since(UNIX_EPOCH)
    );
    assert_eq!(scene.phase_record(1, "scan")["attempts"], 1);
    assert!(scene.transcript(1, "scan").iter().any(|e| {
        e["type"] == "rate_limit_event" && e["rate_limit_info"]["resetsAt"] == resets_at
    }));
    let breaker = read_json(&scene.world.home.join("state/breaker.json"));
    assert_eq!(breaker["state"]["consecutive_failures"], 0, "{breaker:#}");
    scene.assert_nothing_left();
}

/// Scenario 6: API-key 429s and 529s beyond the CLI's own retries: ralphd backs off and runs
/// the phase again, until it succeeds.
#[test]
fn real_loop_api_errors_beyond_cli_retries_are_retried_by_ralphd() {
    let scene = Scene::new(Script::responder(|request| match request.seq {
        0 | 1 => Step::rate_limited(),
        2 | 3 => Step::overloaded(),
        _ => usual(&Turn::of(request)),
    }));
    scene.config(&[("retry_base_delay", "\"400ms\"")], "");

    let outcome = scene.run(&["--max-iterations", "1"]);

    assert_eq!(outcome.code, 1, "{}", describe(&outcome));
    assert_eq!(
        scene.world.outcomes(),
        ["committed"],
        "{}",
        describe(&outcome)
    );
    let scan = scene.requests_of("scan");
    let runs = sessions(&scan);
    let counts: Vec<usize> = runs.iter().map(|(_, n)| *n).collect();
    // CLAUDE_CODE_MAX_RETRIES=1: two requests per CLI run, then ralphd's retry.
    assert_eq!(counts, [2, 2, 1], "{runs:?}");
    assert_eq!(scene.phase_record(1, "scan")["attempts"], 3);
    // ralphd's backoff: at least half of retry_base_delay between two CLI runs.
    let gap = scan[2].at.duration_since(scan[1].at);
    assert!(gap >= Duration::from_millis(200), "gap {gap:?}");
    let transcript = scene.transcript(1, "scan");
    let statuses: Vec<&Value> = transcript
        .iter()
        .filter(|e| e["type"] == "result")
        .map(|e| &e["api_error_status"])
        .collect();
    assert_eq!(statuses, [&json!(429), &json!(529), &Value::Null]);
    assert!(
        outcome.stderr.contains("retrying the phase"),
        "{}",
        outcome.stderr
    );
    scene.assert_nothing_left();
}

/// Scenario 6b: When the errors outlast ralphd's `max_attempts`, the phase and the cycle fail.
#[test]
fn real_loop_api_errors_beyond_max_attempts_fail_the_cycle() {
    let scene = Scene::new(Script::responder(|_| Step::overloaded()));
    scene.config(&[("max_attempts", "2")], "");

    let outcome = scene.run(&["--max-iterations", "1"]);

    assert_eq!(outcome.code, 1, "{}", describe(&outcome));
    assert_eq!(scene.world.outcomes(), ["failed"], "{}", describe(&outcome));
    let counts: Vec<usize> = sessions(&scene.api.requests())
        .iter()
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(counts, [2, 2], "two CLI runs of two requests each");
    let scan = scene.phase_record(1, "scan");
    assert_eq!(scan["status"], "failed", "{scan:#}");
    assert_eq!(scan["attempts"], 2, "{scan:#}");
    assert!(scan["error"].as_str().unwrap().contains("529"), "{scan:#}");
    scene.assert_nothing_left();
}

/// Scenario 7: `fallback_model` reaches the CLI as `--fallback-model`: after 529s of the primary
/// model the CLI switches, and the phase succeeds without a ralphd retry.
#[test]
fn real_loop_fallback_model_is_used_on_overload() {
    const PRIMARY: &str = "primary-model-x";
    const FALLBACK: &str = "fallback-model-x";
    let mut scene = Scene::new(model(|turn| {
        if turn.is("scan") && turn.request.model == PRIMARY {
            Step::overloaded()
        } else {
            usual(turn)
        }
    }));
    scene.env = scene.env.clone().max_retries(3);
    scene.config(
        &[
            ("model", &format!("{PRIMARY:?}")),
            ("fallback_model", &format!("{FALLBACK:?}")),
        ],
        "",
    );

    let outcome = scene.run(&["--max-iterations", "1"]);

    assert_eq!(outcome.code, 1, "{}", describe(&outcome));
    assert_eq!(
        scene.world.outcomes(),
        ["committed"],
        "{}",
        describe(&outcome)
    );
    let models: Vec<String> = scene
        .requests_of("scan")
        .into_iter()
        .map(|r| r.model)
        .collect();
    assert_eq!(models, [PRIMARY, PRIMARY, PRIMARY, FALLBACK]);
    assert_eq!(scene.phase_record(1, "scan")["attempts"], 1);
    let fallback = scene
        .transcript(1, "scan")
        .into_iter()
        .find(|e| e["type"] == "system" && e["subtype"] == "model_fallback")
        .expect("a model_fallback line in scan.jsonl");
    assert_eq!(fallback["fallback_model"], FALLBACK, "{fallback}");
    assert!(
        outcome.stderr.contains("fallback model"),
        "{}",
        outcome.stderr
    );
    // The other phases keep asking for the primary model.
    assert!(scene.requests_of("idea").iter().all(|r| r.model == PRIMARY));
    scene.assert_nothing_left();
}

/// Scenario 8: SIGTERM while the model's Bash tool runs `sleep`: ralphd stops the CLI and its
/// tool, records the cycle as interrupted (the edit saved aside, the tree reset) and
/// exits 130 with no `sleep` left anywhere.
#[test]
fn real_loop_sigterm_during_a_bash_sleep_exits_130_and_leaves_nothing() {
    const SLEEP: &str = "sleep 300.123";
    let scene = Scene::new(model(|turn| {
        if !turn.is("code-edit") {
            return answer(&turn.phase);
        }
        match turn.request.session_seq {
            0 => Step::tool_use(
                "Write",
                json!({"file_path": "{cwd}/notes.txt", "content": "a note\n"}),
            ),
            1 => Step::tool_use(
                "Bash",
                json!({"command": SLEEP, "description": "wait a long time"}),
            ),
            _ => answer("code-edit"),
        }
    }));
    scene.config(
        &[],
        "[phases.code-edit]\npermission_mode = \"acceptEdits\"\nallowed_tools = [\"Bash\"]\n",
    );

    let mut running = scene.ralphd(&[]).spawn();
    let sleeping = poll_until(Duration::from_secs(60), || {
        processes_running(SLEEP)
            .iter()
            .any(|p| p.cmdline.starts_with("sleep"))
    });
    if !sleeping {
        panic!(
            "the Bash tool never ran `{SLEEP}`\n{}",
            describe(&running.kill())
        );
    }
    assert!(scene.world.repo.join("notes.txt").exists());
    let stopping = Instant::now();
    running.signal(libc::SIGTERM);
    let outcome = running
        .wait_for_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("ralphd ignored SIGTERM\n{}", describe(&running.kill())));

    assert_eq!(outcome.code, 130, "{}", describe(&outcome));
    let left = processes_running(SLEEP);
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        scene.world.outcomes(),
        ["interrupted"],
        "{}",
        describe(&outcome)
    );
    assert_eq!(
        scene.world.git_status(),
        "",
        "the tree is back at the cycle's start"
    );
    assert_eq!(scene.world.git_log(), ["initial"]);
    let saved = git(
        &scene.world.repo,
        &["show", "refs/ralph/attempts/1:notes.txt"],
    );
    assert_eq!(saved, "a note\n");
    scene.assert_nothing_left();
}

/// Scenario 9: A server that never answers: `phase_timeout` ends the phase (the CLI's own request
/// timeout is far away), the cycle fails, and no CLI process outlives it.
#[test]
fn real_loop_hung_server_is_ended_by_phase_timeout() {
    let mut scene = Scene::new(Script::responder(|_| Step::Hang));
    scene.env = scene
        .env
        .clone()
        .max_retries(0)
        .api_timeout(Duration::from_secs(120));
    scene.config(
        &[("phase_timeout", "\"3s\""), ("idle_timeout", "\"30s\"")],
        "",
    );

    let started = Instant::now();
    let outcome = scene.run(&["--max-iterations", "1"]);
    let took = started.elapsed();

    assert_eq!(outcome.code, 1, "{}", describe(&outcome));
    assert_eq!(scene.world.outcomes(), ["failed"], "{}", describe(&outcome));
    let scan = scene.phase_record(1, "scan");
    assert!(
        scan["error"].as_str().unwrap().contains("phase_timeout"),
        "{scan:#}"
    );
    // Far below the CLI's own 120 s request timeout, with room for a slow CLI
    // start on a busy machine: the phase timeout ended it.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(60),
        "took {took:?}"
    );
    assert_eq!(
        scene.api.requests().len(),
        1,
        "no retry of a timed-out phase"
    );
    scene.assert_nothing_left();
}

/// Scenario 10: A 401: ralphd stops with a message that says how to fix the credentials, after
/// one CLI run (no retries by ralphd, no further cycles hammering the API).
#[test]
fn real_loop_401_stops_with_a_credentials_message() {
    let scene = Scene::new(Script::responder(|_| Step::unauthorized()));
    scene.config(
        &[],
        "[breaker]\nfailure_threshold = 3\nrecovery_timeout = \"1s\"\n",
    );

    // No --max-iterations: only ralphd's own judgement can end this run.
    let mut running = scene.ralphd(&[]).spawn();
    let outcome = match running.wait_for_exit(Duration::from_secs(20)) {
        Some(outcome) => outcome,
        None => {
            let outcome = running.kill();
            let runs = sessions(&scene.api.requests()).len();
            panic!(
                "ralphd kept going after a 401 ({runs} CLI runs so far)\n{}",
                describe(&outcome)
            );
        }
    };

    assert_eq!(outcome.code, 2, "{}", describe(&outcome));
    let last_line = outcome.stderr.lines().rev().find(|l| !l.trim().is_empty());
    let last_line = last_line.unwrap_or_default();
    assert!(
        last_line.contains("authentication failed") && last_line.contains("ANTHROPIC_API_KEY"),
        "{}",
        describe(&outcome)
    );
    let runs = sessions(&scene.api.requests());
    assert_eq!(runs.len(), 1, "one CLI run only: {runs:?}");
    assert!(runs[0].1 <= 2, "CLAUDE_CODE_MAX_RETRIES=1: {runs:?}");
    assert_eq!(scene.world.outcomes(), ["failed"], "{}", describe(&outcome));
    scene.assert_nothing_left();
}
