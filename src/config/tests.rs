//! Tests of the whole resolution: defaults, every kind of value, precedence,
//! and the one-line messages of every kind of mistake.

use std::collections::BTreeSet;
use std::fs;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::resolve::resolve;
use super::{AgentKind, Config, ConfigError, Env};
use crate::cli::{LogArgs, RunArgs};
use crate::logging::LogFormat;
use crate::phase::Phase;
use crate::state::OnCorrupt;

/// Every `(section, key)` and every variable name the resolver knows.
pub(crate) fn known_keys_and_variables() -> (Vec<(String, &'static str)>, BTreeSet<String>) {
    let home = TempDir::new().unwrap();
    let args = home_args(home.path());
    let (_, known) = resolve(&args, &Env::default(), home.path()).unwrap();
    (known.keys, known.variables)
}

fn home_args(home: &Path) -> RunArgs {
    RunArgs {
        home: Some(home.to_path_buf()),
        repo: Some(home.to_path_buf()),
        ..RunArgs::default()
    }
}

/// A temp home, optionally with a ralph.toml.
struct Fixture {
    home: TempDir,
}

impl Fixture {
    fn new(toml: Option<&str>) -> Fixture {
        let home = TempDir::new().unwrap();
        if let Some(toml) = toml {
            fs::write(home.path().join("ralph.toml"), toml).unwrap();
        }
        Fixture { home }
    }

    fn path(&self) -> PathBuf {
        self.home.path().canonicalize().unwrap()
    }

    fn load_with(&self, args: RunArgs, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = Env::from_pairs(env.iter().map(|(name, value)| (*name, *value)));
        Config::load_in(&args, &env, &self.path())
    }

    fn load(&self, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        self.load_with(home_args(&self.path()), env)
    }

    fn error(&self, env: &[(&str, &str)]) -> String {
        let error = self.load(env).expect_err("should fail");
        let message = error.to_string();
        assert!(!message.contains('\n'), "not one line: {message}");
        message
    }
}

fn error_of(toml: &str) -> String {
    let fixture = Fixture::new(Some(toml));
    let message = fixture.error(&[]);
    let file = fixture.path().join("ralph.toml");
    assert!(
        message.contains(&file.display().to_string()),
        "message does not name the file: {message}"
    );
    message
}

#[test]
fn every_default() {
    let fixture = Fixture::new(None);
    let config = fixture.load(&[]).unwrap();
    let home = fixture.path();
    assert_eq!(config.home, home);
    assert_eq!(config.repo, home);
    assert_eq!(config.config_file, None);
    assert_eq!(config.max_iterations, None);
    assert!(!config.allow_dirty);
    assert_eq!(config.sleep_between_iterations, Duration::from_secs(2));
    assert_eq!(config.verbosity, 0);

    let agent = &config.agent;
    assert_eq!(agent.kind, AgentKind::Claude);
    assert_eq!(agent.command, "claude");
    assert_eq!(agent.model, None);
    assert_eq!(agent.fallback_model, None);
    assert_eq!(agent.max_turns, None);
    assert_eq!(agent.phase_timeout, Duration::from_secs(1800));
    assert_eq!(agent.idle_timeout, Duration::from_secs(600));
    assert_eq!(agent.stop_grace, Duration::from_secs(10));
    assert_eq!(agent.max_attempts, 3);
    assert_eq!(agent.retry_base_delay, Duration::from_secs(5));
    assert_eq!(agent.retry_max_delay, Duration::from_secs(300));
    assert_eq!(agent.usage_limit_margin, Duration::from_secs(60));
    assert_eq!(agent.usage_limit_fallback_wait, Duration::from_secs(1800));
    assert_eq!(agent.cli_max_retries, 2);
    assert_eq!(agent.offline_complete_after, 2);
    assert!(!agent.allow_bypass_permissions);

    let read_only = ["Read", "Grep", "Glob"];
    let no_edits: [&str; 0] = [];
    for phase in [Phase::Scan, Phase::Idea, Phase::Report] {
        assert_eq!(config.phases[phase].permission_mode, None);
        assert_eq!(config.phases[phase].allowed_tools, read_only);
        assert_eq!(config.phases[phase].disallowed_tools, no_edits);
    }
    let code_edit = &config.phases[Phase::CodeEdit];
    assert_eq!(code_edit.permission_mode.as_deref(), Some("acceptEdits"));
    assert!(code_edit.allowed_tools.is_empty() && code_edit.disallowed_tools.is_empty());
    let backtest = &config.phases[Phase::Backtest];
    assert_eq!(backtest.permission_mode, None);
    assert_eq!(backtest.allowed_tools, ["Read", "Grep", "Glob", "Bash"]);
    assert_eq!(backtest.disallowed_tools, no_edits);

    assert!(config.backtest.checks.is_empty());
    assert_eq!(config.backtest.check_timeout, Duration::from_secs(1200));
    assert!(config.git.auto_commit);
    assert_eq!(config.git.author_name, "ralphd");
    assert_eq!(config.git.author_email, "ralphd@localhost");
    assert!(config.git.run_hooks);
    assert_eq!(config.gates.max_changed_files, 50);
    assert_eq!(config.gates.max_changed_lines, 2000);
    assert_eq!(config.gates.protected_paths, [".github/**", ".ralph/**"]);
    assert!(config.gates.secret_scan);
    assert_eq!(config.rate_limit.requests_per_minute.get(), 60);
    assert_eq!(config.rate_limit.requests_per_hour.get(), 1000);
    assert_eq!(config.breaker.settings.failure_threshold.get(), 5);
    assert_eq!(
        config.breaker.settings.recovery_timeout,
        Duration::from_secs(60)
    );
    assert_eq!(
        config.breaker.settings.max_recovery_timeout,
        Duration::from_secs(3600)
    );
    assert_eq!(config.breaker.settings.half_open_max_calls.get(), 1);
    assert!(!config.breaker.halt_on_open);
    assert_eq!(config.budget.max_cost_usd, None);
    assert_eq!(config.budget.max_cost_per_phase_usd, None);
    assert_eq!(config.logging.level, "info");
    assert_eq!(config.logging.format, LogFormat::Text);
    assert_eq!(config.logging.max_log_files, 14);
    assert_eq!(config.state.on_corrupt, OnCorrupt::Refuse);
    assert_eq!(config.state.keep_cycles, 500);
    assert_eq!(config.state.compress_after, 50);
    assert_eq!(config.state.max_transcript_mb, 64);
    assert_eq!(config.state.max_transcript_bytes(), 64 * 1024 * 1024);

    // `for_home` gives the same settings.
    let mut for_home = Config::for_home(&home, &home);
    for_home.inputs = config.inputs.clone();
    assert_eq!(for_home, config);
}

#[test]
fn a_full_file_sets_every_kind_of_value() {
    let fixture = Fixture::new(Some(
        r#"
        [loop]
        sleep_between_iterations = "1h 30m"
        max_iterations = 8

        [agent]
        kind = "offline"
        command = "bin/fake-claude"
        model = "sonnet"
        max_turns = 0x10
        max_attempts = 1
        cli_max_retries = 0

        [phases.code-edit]
        permission_mode = "plan"
        disallowed_tools = ["Bash(rm:*)"]

        [phases.scan]
        allowed_tools = []

        [backtest]
        checks = ["cargo test", "cargo clippy -- -D warnings"]

        [git]
        repo = "../target-repo"
        allow_dirty = true

        [budget]
        max_cost_usd = 20
        max_cost_per_phase_usd = 2.5

        [logging]
        format = "json"
        max_log_files = 1

        [state]
        on_corrupt = "move-aside"
        keep_cycles = 20
        compress_after = 0
        max_transcript_mb = 1
        "#,
    ));
    let home = fixture.path();
    let config = fixture
        .load_with(
            RunArgs {
                home: Some(home.clone()),
                ..RunArgs::default()
            },
            &[],
        )
        .unwrap();
    assert_eq!(config.config_file, Some(home.join("ralph.toml")));
    assert_eq!(config.sleep_between_iterations, Duration::from_secs(5400));
    assert_eq!(config.max_iterations, Some(8));
    assert_eq!(config.agent.kind, AgentKind::Offline);
    assert_eq!(
        config.agent.command,
        home.join("bin/fake-claude").display().to_string()
    );
    assert_eq!(config.agent.model.as_deref(), Some("sonnet"));
    assert_eq!(config.agent.max_turns, Some(16));
    assert_eq!(config.agent.max_attempts, 1);
    assert_eq!(config.agent.cli_max_retries, 0);
    let code_edit = &config.phases[Phase::CodeEdit];
    assert_eq!(code_edit.permission_mode.as_deref(), Some("plan"));
    assert_eq!(code_edit.disallowed_tools, ["Bash(rm:*)"]);
    assert!(config.phases[Phase::Scan].allowed_tools.is_empty());
    // Untouched fields of a phase table keep their defaults.
    assert!(config.phases[Phase::Scan].disallowed_tools.is_empty());
    assert_eq!(config.backtest.checks.len(), 2);
    assert_eq!(config.repo, home.join("../target-repo"));
    assert!(config.allow_dirty);
    assert_eq!(config.budget.max_cost_usd, Some(20.0));
    assert_eq!(config.budget.max_cost_per_phase_usd, Some(2.5));
    assert_eq!(config.logging.format, LogFormat::Json);
    assert_eq!(config.logging.max_log_files, 1);
    assert_eq!(config.state.on_corrupt, OnCorrupt::MoveAside);
    assert_eq!(config.state.keep_cycles, 20);
    assert_eq!(config.state.compress_after, 0);
    assert_eq!(config.state.max_transcript_mb, 1);
}

/// One row per kind of value: what the file, the variable and the flag
/// say, and which one wins.
#[test]
fn precedence_flag_over_env_over_file_over_default() {
    struct Row {
        file: &'static str,
        variable: (&'static str, &'static str),
        flag: fn(&mut RunArgs),
        read: fn(&Config) -> String,
        default: &'static str,
        from_file: &'static str,
        from_env: &'static str,
        from_flag: &'static str,
    }
    let rows = [
        Row {
            file: "[loop]\nsleep_between_iterations = \"3s\"",
            variable: ("RALPH_SLEEP", "4s"),
            flag: |args| args.sleep = Some(Duration::from_secs(5)),
            read: |config| format!("{:?}", config.sleep_between_iterations),
            default: "2s",
            from_file: "3s",
            from_env: "4s",
            from_flag: "5s",
        },
        Row {
            file: "[loop]\nmax_iterations = 3",
            variable: ("RALPH_MAX_ITERATIONS", "04"),
            flag: |args| args.max_iterations = Some(5),
            read: |config| format!("{:?}", config.max_iterations),
            default: "None",
            from_file: "Some(3)",
            from_env: "Some(4)",
            from_flag: "Some(5)",
        },
        Row {
            file: "[git]\nallow_dirty = false",
            variable: ("RALPH_ALLOW_DIRTY", "true"),
            flag: |args| args.allow_dirty = true,
            read: |config| config.allow_dirty.to_string(),
            default: "false",
            from_file: "false",
            from_env: "true",
            from_flag: "true",
        },
        Row {
            file: "[logging]\nformat = \"json\"",
            variable: ("RALPH_LOG_FORMAT", "text"),
            flag: |args| args.log.log_format = Some(LogFormat::Json),
            read: |config| config.logging.format.name().to_owned(),
            default: "text",
            from_file: "json",
            from_env: "text",
            from_flag: "json",
        },
        Row {
            file: "[git]\nrepo = \"/from/file\"",
            variable: ("RALPH_REPO", "/from/env"),
            flag: |args| args.repo = Some(PathBuf::from("/from/flag")),
            read: |config| config.repo.display().to_string(),
            default: "<cwd>",
            from_file: "/from/file",
            from_env: "/from/env",
            from_flag: "/from/flag",
        },
    ];
    for row in rows {
        let file_name = row.variable.0;
        let without_file = Fixture::new(None);
        let with_file = Fixture::new(Some(row.file));
        let base = |fixture: &Fixture| RunArgs {
            home: Some(fixture.path()),
            ..RunArgs::default()
        };
        let mut flagged = base(&with_file);
        (row.flag)(&mut flagged);
        let read = |config: Config| {
            (row.read)(&config).replace(&without_file.path().display().to_string(), "<cwd>")
        };
        let default = read(without_file.load_with(base(&without_file), &[]).unwrap());
        let from_file = read(with_file.load_with(base(&with_file), &[]).unwrap());
        let from_env = read(
            with_file
                .load_with(base(&with_file), &[row.variable])
                .unwrap(),
        );
        let from_flag = read(with_file.load_with(flagged, &[row.variable]).unwrap());
        let parse = |text: &str| text.to_owned();
        assert_eq!(default, parse(row.default), "{file_name}: default");
        assert_eq!(from_file, parse(row.from_file), "{file_name}: file");
        assert_eq!(from_env, parse(row.from_env), "{file_name}: env");
        assert_eq!(from_flag, parse(row.from_flag), "{file_name}: flag");
    }
}

#[test]
fn env_overrides_file_for_every_kind_of_key() {
    let fixture = Fixture::new(Some(
        "[agent]\nmodel = \"opus\"\nmax_attempts = 2\n[budget]\nmax_cost_usd = 5.0\n\
         [breaker]\nhalt_on_open = false\n[phases.scan]\nallowed_tools = [\"Read\"]\n\
         [gates]\nprotected_paths = [\"infra/**\"]\nmax_changed_files = 3\n",
    ));
    let config = fixture
        .load(&[
            ("RALPH_AGENT_MODEL", "haiku"),
            ("RALPH_AGENT_MAX_ATTEMPTS", "7"),
            ("RALPH_BUDGET_MAX_COST_USD", "1.5"),
            ("RALPH_BREAKER_HALT_ON_OPEN", "true"),
            ("RALPH_PHASES_SCAN_ALLOWED_TOOLS", "[\"Grep\", \"Glob\"]"),
            ("RALPH_PHASES_CODE_EDIT_PERMISSION_MODE", "dontAsk"),
            ("RALPH_LOOP_SLEEP_BETWEEN_ITERATIONS", "1m"),
            ("RALPH_AGENT_COMMAND", "/opt/claude"),
            ("RALPH_BACKTEST_CHECKS", "[\"make test\"]"),
            ("RALPH_GATES_PROTECTED_PATHS", "[\"*.lock\"]"),
            ("RALPH_GATES_MAX_CHANGED_FILES", "0"),
            ("RALPH_GATES_SECRET_SCAN", "false"),
            ("RALPH_GIT_RUN_HOOKS", "false"),
        ])
        .unwrap();
    assert_eq!(config.agent.model.as_deref(), Some("haiku"));
    assert_eq!(config.agent.max_attempts, 7);
    assert_eq!(config.budget.max_cost_usd, Some(1.5));
    assert!(config.breaker.halt_on_open);
    assert_eq!(config.phases[Phase::Scan].allowed_tools, ["Grep", "Glob"]);
    assert_eq!(
        config.phases[Phase::CodeEdit].permission_mode.as_deref(),
        Some("dontAsk")
    );
    assert_eq!(config.sleep_between_iterations, Duration::from_secs(60));
    assert_eq!(config.agent.command, "/opt/claude");
    assert_eq!(config.backtest.checks, ["make test"]);
    assert_eq!(config.gates.protected_paths, ["*.lock"]);
    assert_eq!(config.gates.max_changed_files, 0);
    assert!(!config.gates.secret_scan);
    assert!(!config.git.run_hooks);

    // An empty variable unsets an optional key that the file sets.
    let config = fixture
        .load(&[("RALPH_AGENT_MODEL", ""), ("RALPH_BUDGET_MAX_COST_USD", "")])
        .unwrap();
    assert_eq!(config.agent.model, None);
    assert_eq!(config.budget.max_cost_usd, None);
}

#[test]
fn home_config_and_verbosity_come_from_flags_and_env() {
    let home = Fixture::new(Some("[agent]\nmax_attempts = 4\n"));
    let other = Fixture::new(None);
    let elsewhere = other.path().join("custom.toml");
    fs::write(&elsewhere, "[agent]\nmax_attempts = 9\n").unwrap();

    let by_env = Config::load_in(
        &RunArgs::default(),
        &Env::from_pairs([("RALPH_HOME", home.path())]),
        &other.path(),
    )
    .unwrap();
    assert_eq!(by_env.home, home.path());
    assert_eq!(by_env.repo, other.path(), "repo defaults to the cwd");
    assert_eq!(by_env.agent.max_attempts, 4);

    let args = RunArgs {
        home: Some(home.path()),
        config: Some(PathBuf::from("custom.toml")),
        log: LogArgs {
            quiet: 2,
            ..LogArgs::default()
        },
        ..RunArgs::default()
    };
    let by_flag = Config::load_in(&args, &Env::default(), &other.path()).unwrap();
    assert_eq!(by_flag.config_file, Some(elsewhere.clone()));
    assert_eq!(by_flag.agent.max_attempts, 9);
    assert_eq!(by_flag.verbosity, -2);

    let by_config_env = Config::load_in(
        &home_args(&home.path()),
        &Env::from_pairs([("RALPH_CONFIG", elsewhere.as_os_str())]),
        &other.path(),
    )
    .unwrap();
    assert_eq!(by_config_env.agent.max_attempts, 9);

    // The runtime variables the daemon sets for its children are ignored.
    home.load(&[("RALPH_PHASE", "scan"), ("RALPH_CYCLE", "3")])
        .unwrap();
}

#[test]
fn explicit_config_file_must_exist() {
    let fixture = Fixture::new(None);
    let args = RunArgs {
        config: Some(PathBuf::from("nope.toml")),
        ..home_args(&fixture.path())
    };
    let message = fixture.load_with(args, &[]).unwrap_err().to_string();
    assert!(
        message.contains("nope.toml") && message.contains("--config"),
        "{message}"
    );
    let message = fixture.error(&[("RALPH_CONFIG", "/no/such.toml")]);
    assert!(
        message.contains("/no/such.toml") && message.contains("RALPH_CONFIG"),
        "{message}"
    );
}

#[test]
fn durations() {
    let cases = [
        ("90s", Some(90)),
        ("5m", Some(300)),
        ("1h 30m", Some(5400)),
        ("1h30m", Some(5400)),
        ("2 days", Some(172_800)),
        ("0s", Some(0)),
        ("soon", None),
        ("90", None),
        ("-5s", None),
        ("", None),
        ("400days", None),
    ];
    for (text, expected) in cases {
        let fixture = Fixture::new(Some(&format!(
            "[loop]\nsleep_between_iterations = \"{text}\"\n"
        )));
        match expected {
            Some(seconds) => assert_eq!(
                fixture.load(&[]).unwrap().sleep_between_iterations,
                Duration::from_secs(seconds),
                "{text:?}"
            ),
            None => {
                let message = fixture.error(&[]);
                assert!(
                    message.contains("expected a duration like \"90s\""),
                    "{message}"
                );
            }
        }
    }
    for (key, text) in [
        ("[loop]\nsleep_between_iterations", "-1s"),
        ("[agent]\nphase_timeout", "-5m"),
        ("[breaker]\nrecovery_timeout", " -1h"),
    ] {
        let message = error_of(&format!("{key} = \"{text}\"\n"));
        assert!(
            message.contains("durations cannot be negative"),
            "{message}"
        );
    }
    // A duration must be a string, and timeouts must be above zero.
    let message = error_of("[loop]\nsleep_between_iterations = 90\n");
    assert!(message.contains("invalid value 90"), "{message}");
    let message = error_of("[agent]\nphase_timeout = \"0s\"\n");
    assert!(message.contains("agent.phase_timeout") && message.contains("above zero"));
}

#[test]
fn unknown_key_in_each_table_names_key_table_and_file() {
    let tables: Vec<String> = ["loop", "agent", "backtest", "gates", "git", "rate_limit"]
        .into_iter()
        .chain(["breaker", "budget", "logging", "state", "http"])
        .map(str::to_owned)
        .chain(Phase::ALL.map(|phase| format!("phases.{phase}")))
        .collect();
    for table in tables {
        let message = error_of(&format!("[{table}]\n\nsleep_between_iteration = 1\n"));
        assert!(
            message.contains(&format!(
                "unknown key 'sleep_between_iteration' in [{table}] of"
            )),
            "{message}"
        );
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("expected one of: "), "{message}");
    }
    let message = error_of("[loop]\nsleep_between_iteration = \"2s\"\n");
    assert!(
        message.contains("(expected one of: sleep_between_iterations, max_iterations)"),
        "{message}"
    );
    // Dotted keys and inline tables are the same tables.
    let message = error_of("agent.modle = \"x\"\n");
    assert!(
        message.contains("unknown key 'modle' in [agent]"),
        "{message}"
    );
    let message = error_of("sleep = \"2s\"\n");
    assert!(
        message.contains("unknown key 'sleep' in the top level"),
        "{message}"
    );
    let message = error_of("[lop]\nsleep_between_iterations = \"2s\"\n");
    assert!(message.contains("unknown table [lop]") && message.contains("[loop]"));
    let message = error_of("loop = 3\n");
    assert!(message.contains("must be a table like [loop]"), "{message}");
}

#[test]
fn unknown_phase_table() {
    let message = error_of("[phases.plan]\nallowed_tools = []\n");
    assert!(
        message.contains("unknown phase 'plan'")
            && message.contains("scan, idea, code-edit, backtest, report"),
        "{message}"
    );
    let message = error_of("[phases]\npermission_mode = \"plan\"\n");
    assert!(
        message.contains("unknown phase 'permission_mode'"),
        "{message}"
    );
    let message = error_of("[phases]\nscan = 1\n");
    assert!(message.contains("'phases.scan'") && message.contains("must be a table"));
}

#[test]
fn bad_values_name_key_origin_and_expected_form() {
    let cases = [
        (
            "[agent]\nkind = \"gpt\"",
            "agent.kind",
            "one of \"claude\", \"offline\"",
        ),
        (
            "[agent]\nmax_attempts = 0",
            "agent.max_attempts",
            "a whole number ≥ 1",
        ),
        (
            "[agent]\nmax_attempts = -2",
            "agent.max_attempts",
            "a whole number ≥ 1",
        ),
        (
            "[agent]\nmax_attempts = \"3\"",
            "agent.max_attempts",
            "a whole number ≥ 1",
        ),
        (
            "[agent]\ncommand = \"\"",
            "agent.command",
            "a command name on PATH",
        ),
        ("[agent]\nmodel = \"\"", "agent.model", "a non-empty string"),
        (
            "[loop]\nmax_iterations = 0",
            "loop.max_iterations",
            "there is no 'unlimited'",
        ),
        (
            "[breaker]\nhalt_on_open = \"yes\"",
            "breaker.halt_on_open",
            "true or false",
        ),
        (
            "[gates]\nprotected_paths = [\"src/{a\"]",
            "gates.protected_paths",
            "a list of path globs",
        ),
        (
            "[gates]\nmax_changed_lines = -1",
            "gates.max_changed_lines",
            "a whole number ≥ 0",
        ),
        ("[git]\nrun_hooks = 1", "git.run_hooks", "true or false"),
        (
            "[budget]\nmax_cost_usd = 0",
            "budget.max_cost_usd",
            "above zero",
        ),
        (
            "[budget]\nmax_cost_usd = -1.0",
            "budget.max_cost_usd",
            "above zero",
        ),
        (
            "[budget]\nmax_cost_usd = nan",
            "budget.max_cost_usd",
            "above zero",
        ),
        (
            "[rate_limit]\nrequests_per_minute = 0",
            "rate_limit.requests_per_minute",
            "a whole number ≥ 1",
        ),
        ("[logging]\nlevel = \"loud\"", "logging.level", "\"warn\""),
        (
            "[logging]\nmax_log_files = 0",
            "logging.max_log_files",
            "≥ 1",
        ),
        (
            "[state]\non_corrupt = \"delete\"",
            "state.on_corrupt",
            "\"move-aside\"",
        ),
        (
            "[state]\nkeep_cycles = 0",
            "state.keep_cycles",
            "there is no 'keep everything'",
        ),
        (
            "[state]\ncompress_after = -1",
            "state.compress_after",
            "a whole number ≥ 0",
        ),
        (
            "[state]\nmax_transcript_mb = 0",
            "state.max_transcript_mb",
            "a whole number ≥ 1",
        ),
        (
            "[phases.idea]\npermission_mode = \"yolo\"",
            "phases.idea.permission_mode",
            "\"acceptEdits\"",
        ),
        (
            "[phases.idea]\nallowed_tools = \"Read\"",
            "phases.idea.allowed_tools",
            "a list",
        ),
        (
            "[backtest]\nchecks = [\"\"]",
            "backtest.checks",
            "a list of non-empty strings",
        ),
        (
            "[git]\nauthor_email = \"<x>\"",
            "git.author_email",
            "without '<'",
        ),
        (
            "[git]\nrepo = \"~/src/app\"",
            "git.repo",
            "\"~\" is not expanded",
        ),
    ];
    for (toml, key, expected) in cases {
        let message = error_of(toml);
        assert!(
            message.contains(&format!("for '{key}' in "))
                && message.contains("line 2: expected ")
                && message.contains(expected),
            "{toml:?}: {message}"
        );
    }
}

#[test]
fn bad_variables_name_the_variable() {
    let fixture = Fixture::new(None);
    let cases = [
        ("RALPH_SLEEP", "soon", "expected a duration"),
        ("RALPH_SLEEP", "-1s", "durations cannot be negative"),
        (
            "RALPH_AGENT_IDLE_TIMEOUT",
            "-1s",
            "durations cannot be negative",
        ),
        ("RALPH_MAX_ITERATIONS", "0", "there is no 'unlimited'"),
        ("RALPH_MAX_ITERATIONS", "-1", "there is no 'unlimited'"),
        (
            "RALPH_LOOP_MAX_ITERATIONS",
            "abc",
            "there is no 'unlimited'",
        ),
        ("RALPH_BREAKER_HALT_ON_OPEN", "yes", "true or false"),
        ("RALPH_BUDGET_MAX_COST_USD", "lots", "above zero"),
        (
            "RALPH_PHASES_SCAN_ALLOWED_TOOLS",
            "Read,Grep",
            "a TOML list",
        ),
        ("RALPH_AGENT_COMMAND", "", "a command name on PATH"),
    ];
    for (name, value, expected) in cases {
        let message = fixture.error(&[(name, value)]);
        assert!(
            message.contains(&format!("in environment variable {name}: expected"))
                && message.contains(expected),
            "{name}={value:?}: {message}"
        );
    }
    let empty_home = Env::from_pairs([("RALPH_HOME", "")]);
    let message = Config::load_in(&RunArgs::default(), &empty_home, &fixture.path())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("'home' in environment variable RALPH_HOME: expected a directory"),
        "{message}"
    );
    let message = fixture.error(&[
        ("RALPH_SLEEP", "1s"),
        ("RALPH_LOOP_SLEEP_BETWEEN_ITERATIONS", "2s"),
    ]);
    assert!(
        message.contains("both set") && message.contains("RALPH_SLEEP"),
        "{message}"
    );
}

#[test]
fn unknown_ralph_variable_is_an_error() {
    let fixture = Fixture::new(None);
    let message = fixture.error(&[("RALPH_SLEEEP", "5s")]);
    assert!(
        message.contains("unknown environment variable RALPH_SLEEEP")
            && message.contains("did you mean RALPH_SLEEP?"),
        "{message}"
    );
    let message = fixture.error(&[("RALPH_FOO", "1")]);
    assert!(message.contains("RALPH_FOO") && !message.contains("did you mean"));
    // Variables outside the RALPH_ namespace are none of our business.
    fixture.load(&[("RALPHD_X", "1"), ("HOME", "/")]).unwrap();
}

#[test]
fn bypass_permissions_needs_the_explicit_key() {
    let toml = "[phases.code-edit]\npermission_mode = \"bypassPermissions\"\n";
    let message = error_of(toml);
    assert!(
        message.contains("'phases.code-edit.permission_mode'")
            && message.contains("agent.allow_bypass_permissions = true")
            && message.contains("never a default"),
        "{message}"
    );
    let fixture = Fixture::new(None);
    let message = fixture.error(&[("RALPH_PHASES_SCAN_PERMISSION_MODE", "bypassPermissions")]);
    assert!(message.contains("environment variable RALPH_PHASES_SCAN_PERMISSION_MODE"));

    let allowed = Fixture::new(Some(&format!(
        "[agent]\nallow_bypass_permissions = true\n{toml}"
    )));
    let config = allowed.load(&[]).unwrap();
    assert_eq!(
        config.phases[Phase::CodeEdit].permission_mode.as_deref(),
        Some("bypassPermissions")
    );
}

#[test]
fn cross_key_rules() {
    let message = error_of("[breaker]\nmax_recovery_timeout = \"30s\"\n");
    assert!(
        message.contains("'breaker.max_recovery_timeout' (30s, from ")
            && message.contains("'breaker.recovery_timeout' (1m, from the defaults)"),
        "{message}"
    );
    let fixture = Fixture::new(None);
    let message = fixture.error(&[("RALPH_AGENT_RETRY_BASE_DELAY", "10m")]);
    assert!(
        message.contains("'agent.retry_max_delay'")
            && message.contains("RALPH_AGENT_RETRY_BASE_DELAY")
    );
}

#[test]
fn syntax_errors_are_one_line_with_position() {
    let message = error_of("[loop]\nsleep_between_iterations = \"2s\nx = 1\n");
    assert!(
        message.starts_with("invalid TOML in ") && message.contains("line 2"),
        "{message}"
    );
    let message = error_of("[loop]\nmax_iterations = 1\nmax_iterations = 2\n");
    assert!(message.starts_with("invalid TOML in "), "{message}");
}

#[test]
fn reload_reads_the_file_again_with_the_same_inputs() {
    let fixture = Fixture::new(Some("[agent]\nmax_attempts = 4\n"));
    let args = RunArgs {
        max_iterations: Some(3),
        ..home_args(&fixture.path())
    };
    let config = fixture
        .load_with(args, &[("RALPH_AGENT_MODEL", "haiku")])
        .unwrap();
    fs::write(
        fixture.path().join("ralph.toml"),
        "[agent]\nmax_attempts = 6\n",
    )
    .unwrap();
    let reloaded = config.reload().unwrap();
    assert_eq!(reloaded.agent.max_attempts, 6);
    assert_eq!(reloaded.max_iterations, Some(3));
    assert_eq!(reloaded.agent.model.as_deref(), Some("haiku"));

    fs::write(
        fixture.path().join("ralph.toml"),
        "[agent]\nmax_attempts = 0\n",
    )
    .unwrap();
    assert!(config.reload().is_err());

    // Without --repo, the file may name the repo, but not a new one on reload.
    let home = fixture.path();
    fs::write(home.join("ralph.toml"), "").unwrap();
    let home_only = RunArgs {
        home: Some(home.clone()),
        ..RunArgs::default()
    };
    let config = fixture.load_with(home_only, &[]).unwrap();
    fs::write(home.join("ralph.toml"), "[git]\nrepo = \"/elsewhere\"\n").unwrap();
    let message = config.reload().unwrap_err().to_string();
    assert!(message.contains("restart ralphd"), "{message}");

    // A `for_home` config reloads `<home>/ralph.toml`; its repo is a flag.
    let defaults = Config::for_home(&home, &home);
    fs::write(home.join("ralph.toml"), "[breaker]\nhalt_on_open = true\n").unwrap();
    assert!(defaults.reload().unwrap().breaker.halt_on_open);
}

#[test]
fn module_docs_list_every_variable() {
    let source = include_str!("env.rs");
    let (_, variables) = known_keys_and_variables();
    for variable in variables {
        let generic = Phase::ALL.iter().fold(variable.clone(), |name, phase| {
            let upper = phase.name().to_uppercase().replace('-', "_");
            name.replace(&format!("_PHASES_{upper}_"), "_PHASES_<PHASE>_")
        });
        assert!(
            source.contains(&format!("//! | `{generic}`"))
                || source.contains(&format!(", `{generic}` |")),
            "{variable} is not in the table of the module docs"
        );
    }
}

#[test]
fn nonzero_defaults_are_nonzero() {
    let config = Fixture::new(None).load(&[]).unwrap();
    assert_eq!(
        config.rate_limit.requests_per_minute,
        NonZeroU32::new(60).unwrap()
    );
}

#[test]
fn hooks_webhooks_and_notify_are_read_with_their_defaults() {
    let fixture = Fixture::new(Some(
        r#"
[notify]
heartbeat_url = "https://hc-ping.com/abc"
heartbeat_every = "1m"
stall_after = "2h"

[[hooks]]
command = ["notify-send", "ralphd"]

[[hooks]]
on = ["*"]
command = ["/bin/true"]
timeout = "5s"

[[webhooks]]
url = "https://hooks.slack.com/services/T/B/X"
on = ["cycle_finished", "stalled"]
format = "slack"
header_env = { Authorization = "RALPH_WEBHOOK_AUTH", X-Extra = "EXTRA" }
max_attempts = 2
"#,
    ));
    // The variable header_env names is not an unknown RALPH_* variable.
    let config = fixture.load(&[("RALPH_WEBHOOK_AUTH", "Bearer x")]).unwrap();
    let notify = &config.notify;
    assert_eq!(
        notify.heartbeat_url.as_deref(),
        Some("https://hc-ping.com/abc")
    );
    assert_eq!(notify.heartbeat_every, Duration::from_secs(60));
    assert_eq!(notify.stall_after, Duration::from_secs(7200));
    assert_eq!(notify.queue_size, 256);
    assert_eq!(notify.hooks.len(), 2);
    assert_eq!(
        notify.hooks[0].on,
        ["daemon_stopped", "stalled", "breaker_changed"]
    );
    assert_eq!(notify.hooks[0].timeout, Duration::from_secs(30));
    assert_eq!(notify.hooks[1].on, ["*"]);
    assert_eq!(notify.hooks[1].timeout, Duration::from_secs(5));
    let webhook = &notify.webhooks[0];
    assert_eq!(webhook.format, crate::config::WebhookFormat::Slack);
    assert_eq!(
        webhook.header_env,
        [
            ("Authorization".to_owned(), "RALPH_WEBHOOK_AUTH".to_owned()),
            ("X-Extra".to_owned(), "EXTRA".to_owned())
        ]
    );
    assert_eq!(webhook.timeout, Duration::from_secs(10));
    assert_eq!(webhook.max_attempts, 2);
}

#[test]
fn a_bad_hook_or_webhook_is_refused_naming_the_entry_the_key_and_the_fix() {
    let table: &[(&str, &[&str])] = &[
        (
            "[[hooks]]\non = [\"cycle_done\"]\ncommand = [\"x\"]\n",
            &[
                "[[hooks]] #1.on",
                "\"cycle_done\" is not one",
                "cycle_finished",
            ],
        ),
        (
            "[[hooks]]\ncommand = []\n",
            &["[[hooks]] #1.command", "the program, then its arguments"],
        ),
        (
            "[[hooks]]\non = [\"*\"]\n",
            &["[[hooks]] #1", "has no 'command'"],
        ),
        (
            "[[webhooks]]\nurl = \"https://a.example\"\n[[webhooks]]\nurl = \"ftp://x\"\n",
            &["[[webhooks]] #2.url", "http:// or https:// URL"],
        ),
        (
            "[[webhooks]]\nurl = \"https://a.example\"\nformat = \"teams\"\n",
            &[
                "[[webhooks]] #1.format",
                "\"json\", \"slack\", \"ntfy\", \"discord\"",
            ],
        ),
        (
            "[[webhooks]]\nurl = \"https://a.example\"\nheaders = { A = \"b\" }\n",
            &["unknown key 'headers' in [[webhooks]] #1", "header_env"],
        ),
        (
            "[[webhooks]]\nurl = \"https://a.example\"\nheader_env = { Authorization = \"Bearer abc\" }\n",
            &[
                "[[webhooks]] #1.header_env",
                "not an environment variable name",
            ],
        ),
        ("hooks = 3\n", &["'hooks'", "[[hooks]]"]),
        (
            "[notify]\nheartbeat_url = \"hc-ping.com/x\"\n",
            &["notify.heartbeat_url", "http:// or https:// URL"],
        ),
    ];
    for (toml, expected) in table {
        let message = error_of(toml);
        for part in *expected {
            assert!(message.contains(part), "{toml}: {message} lacks {part}");
        }
    }
}

#[test]
fn the_http_server_listens_on_loopback_by_default_and_empty_turns_it_off() {
    let fixture = Fixture::new(None);
    let config = fixture.load(&[]).unwrap();
    assert_eq!(config.http.listen, Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(config.http.token_file, None);
    let off = fixture.load(&[("RALPH_HTTP_LISTEN", "")]).unwrap();
    assert_eq!(off.http.listen, None);
    let fixture = Fixture::new(Some(
        "[http]\nlisten = \"[::1]:8080\"\ntoken_file = \"token\"\nallowed_hosts = [\"ralph.lan\"]\n",
    ));
    let config = fixture.load(&[]).unwrap();
    assert_eq!(config.http.listen, Some("[::1]:8080".parse().unwrap()));
    assert_eq!(config.http.token_file, Some(fixture.path().join("token")));
    assert_eq!(config.http.allowed_hosts, ["ralph.lan"]);
    let message = error_of("[http]\nlisten = \"localhost\"\n");
    assert!(
        message.contains("http.listen") && message.contains("IP address and port"),
        "{message}"
    );
}
