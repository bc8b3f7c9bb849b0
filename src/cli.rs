//! The command line as clap derive types, one `Args` struct per subcommand.
//!
//! Only this module touches clap. It checks the *shape* of each argument (a
//! number is a number, a duration parses) and nothing more; where a value is
//! one of a few words it parses into the type of the module that uses it
//! (`logging::LogFormat`, `service::ServiceKind`). It knows nothing of
//! `ralph.toml` or of `RALPH_*` variables. `config.rs` resolves `RunArgs` against
//! those into one validated `Config` (flag > environment > file > default).

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::digest::{CycleRange, Format, Span};
use crate::logging::LogFormat;
use crate::service::ServiceKind;

/// Exit codes of `ralphd run`, shown by `ralphd run --help` (docs/design.md §2).
const RUN_AFTER_HELP: &str = "\
Exit codes:
  0    the agent declared completion and ralphd accepted it
  1    --max-iterations reached without completion
  2    usage, configuration or environment error (bad flag, bad config, not a git
       repository, dirty work tree, `claude` not found, another daemon holds the
       lock), with a one-line message naming the cause and the fix
  3    halted by a guard: budget exhausted, or breaker open with halt_on_open = true
  130  stopped by SIGINT/SIGTERM after saving state

Configuration: flag > RALPH_* environment variable > <home>/ralph.toml > default.
Every ralph.toml key has a variable RALPH_<SECTION>_<KEY> (upper case, '-' and '.'
become '_'), e.g. RALPH_AGENT_COMMAND=/opt/bin/claude or
RALPH_PHASES_CODE_EDIT_PERMISSION_MODE=acceptEdits. An unknown RALPH_* variable is
an error. `ralphd init` writes a ralph.toml that lists every key with its default.";

/// Improve a git repository unattended with the Claude Code CLI
///
/// ralphd runs the CLI through scan → idea → code-edit → backtest → report
/// cycles, keeps only the changes that pass verification, and stops when the
/// agent declares completion.
///
/// Start with `ralphd demo` (no `claude` needed), then `ralphd init` in a home
/// directory and `ralphd run --repo DIR --max-iterations 3`.
#[derive(Debug, Parser)]
#[command(name = "ralphd", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run cycles on a repository until the agent declares completion
    ///
    /// Runs in the foreground (systemd and launchd capture stderr). The home
    /// holds ralph.toml, PROMPT.md, prompts/, state/, archive/ and logs/.
    ///
    /// Examples:
    ///   ralphd run                                 # home and repo: the current directory
    ///   ralphd run --repo ~/src/app --max-iterations 3
    ///   ralphd run --home ~/ralph/app --repo ~/src/app --sleep 5m -v
    ///   RALPH_AGENT_KIND=offline ralphd run --max-iterations 1
    #[command(verbatim_doc_comment, after_help = RUN_AFTER_HELP)]
    Run(RunArgs),

    /// Show whether a daemon runs in a home, its cycle, phase, guards and costs
    ///
    /// Examples:
    ///   ralphd status
    ///   ralphd status --home ~/ralph/app --json | jq .breaker
    #[command(verbatim_doc_comment)]
    Status(StatusArgs),

    /// Print the morning digest: what landed, what was rejected and why, waits, cost
    ///
    /// One page: why the run stopped (and its exit code), time spent working and
    /// waiting (by reason), cycles by outcome, each commit, each saved attempt with
    /// why it was not kept and the `git` command to look at it, cost, learnings.
    /// Without a range it covers the last run. Every run also leaves its digest
    /// in state/digests/ of the home (the newest 100 runs are kept).
    ///
    /// Examples:
    ///   ralphd report
    ///   ralphd report --home ~/ralph/app --since 12h
    ///   ralphd report --cycles 3..17
    ///   ralphd report --format json | jq '.attempts[] | .look'
    #[command(verbatim_doc_comment)]
    Report(ReportArgs),

    /// Scaffold a home: a commented ralph.toml, prompts/ to edit, example files
    ///
    /// Writes ralph.toml (every key commented out, with its default),
    /// `prompts/<phase>.md` (copies of the built-in templates; a copy overrides
    /// the built-in one), PROMPT.md.example and state/prd.example.json. An
    /// existing file is never overwritten.
    ///
    /// Examples:
    ///   ralphd init
    ///   ralphd init ~/ralph/app
    #[command(verbatim_doc_comment)]
    Init(InitArgs),

    /// Run the whole loop on a scratch repository with the built-in offline agent
    ///
    /// Needs no `claude` and no network: the offline agent is a labelled,
    /// deterministic simulator that makes a real small edit each cycle.
    ///
    /// Examples:
    ///   ralphd demo
    ///   ralphd demo --dir /tmp/ralph-demo
    #[command(verbatim_doc_comment)]
    Demo(DemoArgs),

    /// Print (or install) a systemd user unit or a launchd agent for `ralphd run`
    ///
    /// Examples:
    ///   ralphd service systemd --repo ~/src/app --home ~/ralph/app
    ///   ralphd service systemd --repo ~/src/app --home ~/ralph/app --install
    ///   ralphd service launchd --repo ~/src/app --home ~/ralph/app > app.plist
    #[command(verbatim_doc_comment)]
    Service(ServiceArgs),

    /// Close an open circuit breaker by hand (after you have fixed the cause)
    ///
    /// Examples:
    ///   ralphd reset-breaker --home ~/ralph/app
    #[command(verbatim_doc_comment)]
    ResetBreaker(HomeArgs),

    /// Queue work for the daemon: add, list, show, edit, done, reopen, rm, import
    ///
    /// Tasks are the stories of state/prd.json in the home. Every edit is safe while
    /// the daemon runs: nothing either side writes is lost, and the daemon sees
    /// new tasks when its next cycle starts.
    ///
    /// Examples:
    ///   ralphd task add "Fix the login page" --priority 1 --criteria "returns 200"
    ///   ralphd task list --open
    ///   ralphd task done T-3
    ///   gh issue list --json number,title,body,labels > issues.json
    ///   ralphd task import issues.json
    #[command(verbatim_doc_comment)]
    Task(TaskArgs),

    /// Serve the home's tasks, status and cycles to Claude Code (or any MCP client) on stdio
    ///
    /// A Model Context Protocol server: an MCP client starts it and talks JSON-RPC
    /// on its stdin and stdout. Tools: add_task, list_tasks, update_task,
    /// complete_task, status, recent_cycles, cycle_report, pause, resume,
    /// request_stop. Works whether or not a daemon runs on the home.
    ///
    /// Examples:
    ///   claude mcp add-json ralphd "$(ralphd mcp --home ~/ralph/app --print-config)"
    ///   ralphd mcp --home ~/ralph/app --print-config mcp-json > .mcp.json
    #[command(verbatim_doc_comment)]
    Mcp(McpArgs),
    /// Follow a run's events in the terminal, one line each, with a status line
    ///
    /// Reads state/events.jsonl as it grows: works without the HTTP server and
    /// on a home whose daemon is not running (shows the last events, then
    /// waits). Ctrl-C ends it.
    ///
    /// Examples:
    ///   ralphd watch --home ~/ralph/app
    #[command(verbatim_doc_comment)]
    Watch(HomeArgs),

    /// Pause the running daemon: the running phase finishes, no new one starts
    ///
    /// Examples:
    ///   ralphd pause --home ~/ralph/app
    #[command(verbatim_doc_comment)]
    Pause(HomeArgs),

    /// Resume a paused daemon
    ///
    /// Examples:
    ///   ralphd resume --home ~/ralph/app
    #[command(verbatim_doc_comment)]
    Resume(HomeArgs),

    /// Stop the running daemon after its current cycle (exit 1), or at once with --now
    ///
    /// Examples:
    ///   ralphd stop --home ~/ralph/app
    ///   ralphd stop --now     # SIGTERM: the running phase stops, the cycle is recorded as interrupted
    #[command(verbatim_doc_comment)]
    Stop(StopArgs),
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct StopArgs {
    #[command(flatten)]
    pub(crate) home: HomeArgs,

    /// Stop now (SIGTERM) instead of after the current cycle
    #[arg(long)]
    pub(crate) now: bool,
}

/// The flags of `ralphd run`. Each has a `ralph.toml` key and a `RALPH_*`
/// variable; `config.rs` applies the precedence.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub(crate) struct RunArgs {
    /// The git work tree to improve [default: git.repo of ralph.toml, else the current directory]
    #[arg(long, value_name = "DIR")]
    pub(crate) repo: Option<PathBuf>,

    /// The home holding ralph.toml, prompts/, state/, archive/, logs/ [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,

    /// Read this config file instead of `<home>/ralph.toml` (it must exist)
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Stop after N cycles; exit 1 if the agent has not declared completion by then
    /// [default: run until completion]
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_max_iterations,
        allow_hyphen_values = true
    )]
    pub(crate) max_iterations: Option<u32>,

    /// Pause between cycles, e.g. 90s, 5m, "1h 30m" [default: 2s]
    // Hyphen values reach the parser, so `-1s` is "negative", not "unknown flag -1".
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_duration,
        allow_hyphen_values = true
    )]
    pub(crate) sleep: Option<Duration>,

    /// Start even if the work tree has uncommitted changes (rollbacks still keep them)
    #[arg(long)]
    pub(crate) allow_dirty: bool,

    #[command(flatten)]
    pub(crate) log: LogArgs,
}

/// Logging options, shared by the commands that run the loop.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub(crate) struct LogArgs {
    /// More log output: -v debug, -vv trace (RUST_LOG wins over both)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub(crate) verbose: u8,

    /// Less log output: -q warnings and errors, -qq errors only
    #[arg(short, long, action = ArgAction::Count)]
    pub(crate) quiet: u8,

    /// Format of log lines on stderr [default: logging.format of ralph.toml, else text]
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
}

impl LogArgs {
    /// `-v` counts up, `-q` counts down: 0 is the configured level.
    pub(crate) fn verbosity(&self) -> i8 {
        let net = i16::from(self.verbose) - i16::from(self.quiet);
        // The clamp makes the narrowing lossless.
        net.clamp(i16::from(i8::MIN), i16::from(i8::MAX)) as i8
    }
}

/// `--log-format` parses into logging's own type (the help of each value is
/// the one clap's derive would give).
impl ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Text, LogFormat::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            LogFormat::Text => PossibleValue::new("text").help("Human-readable lines"),
            LogFormat::Json => {
                PossibleValue::new("json").help("One JSON object per line, for log collectors")
            }
        })
    }
}

/// `--home`, shared by the commands that only look at a home.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub(crate) struct HomeArgs {
    /// The home to look at [default: $RALPH_HOME, else the current directory]
    #[arg(long, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) home: HomeArgs,

    /// Print one JSON object instead of text, for scripts
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    pub(crate) home: HomeArgs,

    /// Cover the cycles that started in this last span, e.g. 12h, "1h 30m", 2days
    /// [default: the last run]
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_duration,
        allow_hyphen_values = true,
        conflicts_with = "cycles"
    )]
    pub(crate) since: Option<Duration>,

    /// Cover these cycles: A..B (both included), A.. (to the newest) or N
    #[arg(long, value_name = "A..B", value_parser = CycleRange::parse)]
    pub(crate) cycles: Option<CycleRange>,

    /// md for people, json for scripts (the fields are listed in the README)
    #[arg(long, value_name = "FORMAT", default_value = "md")]
    pub(crate) format: Format,
}

impl ReportArgs {
    /// The part of the home's history the flags ask for.
    pub(crate) fn span(&self) -> Span {
        match (self.since, self.cycles) {
            (Some(since), _) => Span::Since(since),
            (None, Some(cycles)) => Span::Cycles(cycles),
            (None, None) => Span::LastRun,
        }
    }
}

/// `--format` parses into the digest's own type.
impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Markdown, Format::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Format::Markdown => PossibleValue::new("md").help("Markdown, to read"),
            Format::Json => PossibleValue::new("json").help("One JSON document, for scripts"),
        })
    }
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct TaskArgs {
    #[command(subcommand)]
    pub(crate) command: TaskCommand,
}

#[derive(Clone, Debug, PartialEq, Subcommand)]
pub(crate) enum TaskCommand {
    /// Add a task (it gets the next id, T-1, T-2, …, unless --id is given)
    ///
    /// Without --priority it queues after every task already there.
    ///
    /// Examples:
    ///   ralphd task add "Fix the login page"
    ///   ralphd task add "Speed up the build" --priority 1 \
    ///       --criteria "cargo build under 60 s" --criteria "no test removed"
    #[command(verbatim_doc_comment)]
    Add(TaskAddArgs),

    /// List tasks: open ones in the order the daemon takes them, then done ones
    List(TaskListArgs),

    /// Show every field of one task
    Show(TaskIdArgs),

    /// Change the title, description, priority or criteria of a task
    Edit(TaskEditArgs),

    /// Mark a task done (the daemon also does this when a cycle for it is committed)
    Done(TaskIdArgs),

    /// Mark a done task open again
    Reopen(TaskIdArgs),

    /// Remove a task (its id is not given out again)
    Rm(TaskIdArgs),

    /// Import a Markdown checklist or `gh issue list --json number,title,body,labels` output
    ///
    /// Markdown: `- [ ] title` is an open task, `- [x] title` a done one, and
    /// list items indented under it are its acceptance criteria. GitHub JSON:
    /// the body is the description, a label such as `priority:1` or `P1` the
    /// priority. Importing the same file again adds nothing twice: an item
    /// already imported is left as it is, except that one now checked (or
    /// closed) marks its task done.
    ///
    /// Examples:
    ///   ralphd task import TODO.md
    ///   gh issue list --json number,title,body,labels > issues.json
    ///   ralphd task import issues.json
    #[command(verbatim_doc_comment)]
    Import(TaskImportArgs),
}

/// `--json`, for the task commands that print tasks.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub(crate) struct JsonArg {
    /// Print JSON instead of text, for scripts
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct TaskAddArgs {
    /// A short title, e.g. "Fix the login page"
    #[arg(value_name = "TITLE")]
    pub(crate) title: String,

    /// What to do and why, in a few sentences
    #[arg(long, value_name = "TEXT")]
    pub(crate) description: Option<String>,

    /// 0 (most urgent) to 999 [default: after every task already queued]
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) priority: Option<i64>,

    /// What must hold for the task to be done (repeat for several)
    #[arg(long = "criteria", value_name = "TEXT")]
    pub(crate) criteria: Vec<String>,

    /// Use this id instead of the next T-n (it must be unique)
    #[arg(long, value_name = "ID")]
    pub(crate) id: Option<String>,

    #[command(flatten)]
    pub(crate) home: HomeArgs,

    #[command(flatten)]
    pub(crate) json: JsonArg,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct TaskListArgs {
    /// Only the tasks not done yet
    #[arg(long, conflicts_with = "done")]
    pub(crate) open: bool,

    /// Only the tasks done
    #[arg(long)]
    pub(crate) done: bool,

    #[command(flatten)]
    pub(crate) home: HomeArgs,

    #[command(flatten)]
    pub(crate) json: JsonArg,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct TaskIdArgs {
    /// The task's id, as `ralphd task list` shows it (e.g. T-3)
    #[arg(value_name = "ID")]
    pub(crate) id: String,

    #[command(flatten)]
    pub(crate) home: HomeArgs,

    #[command(flatten)]
    pub(crate) json: JsonArg,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct TaskEditArgs {
    /// The task's id, as `ralphd task list` shows it (e.g. T-3)
    #[arg(value_name = "ID")]
    pub(crate) id: String,

    /// The new title
    #[arg(long, value_name = "TEXT")]
    pub(crate) title: Option<String>,

    /// The new description
    #[arg(long, value_name = "TEXT")]
    pub(crate) description: Option<String>,

    /// The new priority, 0 (most urgent) to 999
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) priority: Option<i64>,

    /// Replace the acceptance criteria (repeat for several)
    #[arg(long = "criteria", value_name = "TEXT")]
    pub(crate) criteria: Vec<String>,

    #[command(flatten)]
    pub(crate) home: HomeArgs,

    #[command(flatten)]
    pub(crate) json: JsonArg,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct TaskImportArgs {
    /// A Markdown checklist, or the JSON of `gh issue list --json number,title,body,labels`
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,

    #[command(flatten)]
    pub(crate) home: HomeArgs,

    #[command(flatten)]
    pub(crate) json: JsonArg,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct McpArgs {
    #[command(flatten)]
    pub(crate) home: HomeArgs,

    /// Print the client configuration that starts this server, then exit:
    /// `add-json` (default) for `claude mcp add-json ralphd '<json>'`, `mcp-json`
    /// for a `.mcp.json` file, `--mcp-config` or Claude Desktop
    #[arg(
        long,
        value_name = "FORMAT",
        num_args = 0..=1,
        default_missing_value = "add-json"
    )]
    pub(crate) print_config: Option<McpConfigFormat>,
}

/// The shapes of MCP client configuration `ralphd mcp --print-config` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum McpConfigFormat {
    /// One server entry, `{"type":"stdio","command":…,"args":[…]}`, as
    /// `claude mcp add-json <name> <json>` takes it
    AddJson,
    /// `{"mcpServers":{"ralphd":{…}}}`, as `.mcp.json`, `claude --mcp-config` and
    /// Claude Desktop's configuration file hold it
    McpJson,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct InitArgs {
    /// The directory to scaffold; created if missing
    #[arg(value_name = "DIR", default_value = ".")]
    pub(crate) dir: PathBuf,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct DemoArgs {
    /// Create the scratch repository in DIR and keep it, to look around afterwards
    /// (without --dir: a temporary directory, printed, then removed at the end)
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub(crate) struct ServiceArgs {
    /// The service manager to write for
    #[arg(value_name = "MANAGER")]
    pub(crate) manager: ServiceKind,

    /// The git work tree the service improves [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub(crate) repo: Option<PathBuf>,

    /// The home of the service [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,

    /// Write the file into the user's service directory instead of printing it
    #[arg(long)]
    pub(crate) install: bool,
}

impl ServiceArgs {
    /// The `run` flags the service will start `ralphd run` with, so that the
    /// caller can resolve them with `Config::load` like `run` itself does.
    pub(crate) fn run_args(&self) -> RunArgs {
        RunArgs {
            repo: self.repo.clone(),
            home: self.home.clone(),
            ..RunArgs::default()
        }
    }
}

/// `ralphd service MANAGER` parses into service's own type.
impl ValueEnum for ServiceKind {
    fn value_variants<'a>() -> &'a [Self] {
        &[ServiceKind::Systemd, ServiceKind::Launchd]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            ServiceKind::Systemd => {
                PossibleValue::new("systemd").help("A systemd user unit (Linux)")
            }
            ServiceKind::Launchd => {
                PossibleValue::new("launchd").help("A launchd LaunchAgent plist (macOS)")
            }
        })
    }
}

/// Parses a `--max-iterations` value (also used for `RALPH_MAX_ITERATIONS`):
/// ASCII digits only, leading zeros allowed (`08` is 8), at least 1. There is no
/// "unlimited" value: leaving the option out means "run until completion".
pub(crate) fn parse_max_iterations(text: &str) -> Result<u32, String> {
    const EXPECTED: &str = "must be a whole number ≥ 1 (there is no 'unlimited'; \
                            omit the flag to run until completion)";
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(EXPECTED.to_owned());
    }
    match text.parse::<u32>() {
        Ok(0) => Err(EXPECTED.to_owned()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("{EXPECTED}; at most {}", u32::MAX)),
    }
}

/// What every duration flag, key and variable says about a leading minus.
pub(crate) const NEGATIVE_DURATION: &str = "durations cannot be negative";

/// Parses a humantime duration such as `90s`, `5m` or `1h 30m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!(
            "{NEGATIVE_DURATION}; expected a duration like \"90s\", \"5m\" or \"1h 30m\""
        ));
    }
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("{error}; expected a duration like \"90s\", \"5m\" or \"1h 30m\""))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::{Cli, Command, McpConfigFormat, RunArgs};
    use crate::digest::{CycleRange, Format, Span};
    use crate::logging::LogFormat;
    use crate::service::ServiceKind;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ralphd").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        match parse(&full).expect("parses").command {
            Command::Run(run_args) => run_args,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn max_iterations_table() {
        let cases: &[(&str, Option<u32>)] = &[
            ("08", Some(8)),
            ("1", Some(1)),
            ("3", Some(3)),
            ("4294967295", Some(u32::MAX)),
            ("0", None),
            ("00", None),
            ("-1", None),
            ("+1", None),
            ("abc", None),
            ("", None),
            (" 3", None),
            ("1.5", None),
            ("4294967296", None),
        ];
        for &(text, expected) in cases {
            let result = parse(&["run", "--max-iterations", text]);
            match expected {
                Some(count) => {
                    let Command::Run(args) = result.expect(text).command else {
                        panic!("not run")
                    };
                    assert_eq!(args.max_iterations, Some(count), "{text:?}");
                }
                None => {
                    let error = result.expect_err(text);
                    assert_eq!(error.exit_code(), 2, "{text:?}");
                    let message = error.to_string();
                    assert!(
                        message.contains("must be a whole number ≥ 1")
                            && message.contains("there is no 'unlimited'"),
                        "{text:?}: {message}"
                    );
                }
            }
        }
        // The `=` form reaches the same parser.
        assert_eq!(run_args(&["--max-iterations=08"]).max_iterations, Some(8));
        assert!(parse(&["run", "--max-iterations=-1"]).is_err());
        assert_eq!(run_args(&[]).max_iterations, None);
    }

    #[test]
    fn run_flags() {
        let args = run_args(&[
            "--repo",
            "r",
            "--home",
            "h",
            "--config",
            "c.toml",
            "--sleep",
            "1h 30m",
            "--allow-dirty",
            "-vv",
            "--log-format",
            "json",
        ]);
        assert_eq!(args.repo, Some(PathBuf::from("r")));
        assert_eq!(args.home, Some(PathBuf::from("h")));
        assert_eq!(args.config, Some(PathBuf::from("c.toml")));
        assert_eq!(args.sleep, Some(Duration::from_secs(5400)));
        assert!(args.allow_dirty);
        assert_eq!(args.log.verbosity(), 2);
        assert_eq!(args.log.log_format, Some(LogFormat::Json));
        assert_eq!(run_args(&["-qq"]).log.verbosity(), -2);
        assert_eq!(run_args(&[]), RunArgs::default());
    }

    #[test]
    fn run_flag_errors_are_usage_errors() {
        for args in [
            &["run", "--sleep", "soon"][..],
            &["run", "--sleep", "5"],
            &["run", "--log-format", "yaml"],
            &["run", "-v", "-q"],
            &["run", "--bogus"],
            &["service", "upstart"],
            &["report", "--since", "1h", "--cycles", "2"],
            &["report", "--cycles", "9..2"],
            &["report", "--since", "-1h"],
            &["report", "--format", "html"],
            &["frobnicate"],
        ] {
            let error = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
        let message = parse(&["run", "--sleep", "soon"]).unwrap_err().to_string();
        assert!(message.contains("expected a duration like"), "{message}");
        for negative in [
            &["run", "--sleep", "-1s"][..],
            &["run", "--sleep=-1s"],
            &["run", "--sleep", " -5m"],
        ] {
            let message = parse(negative).unwrap_err().to_string();
            assert!(
                message.contains("durations cannot be negative"),
                "{negative:?}: {message}"
            );
        }
    }

    #[test]
    fn run_help_documents_exit_codes() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("run")
            .expect("run exists")
            .render_long_help()
            .to_string();
        for needle in [
            "Exit codes:",
            "  0 ",
            "  1 ",
            "  2 ",
            "  3 ",
            "  130 ",
            "RALPH_",
        ] {
            assert!(help.contains(needle), "missing {needle:?} in:\n{help}");
        }
    }

    #[test]
    fn other_subcommands() {
        match parse(&["status", "--home", "h", "--json"]).unwrap().command {
            Command::Status(args) => {
                assert_eq!(args.home.home, Some(PathBuf::from("h")));
                assert!(args.json);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["init"]).unwrap().command {
            Command::Init(args) => assert_eq!(args.dir, PathBuf::from(".")),
            other => panic!("{other:?}"),
        }
        match parse(&["init", "x"]).unwrap().command {
            Command::Init(args) => assert_eq!(args.dir, PathBuf::from("x")),
            other => panic!("{other:?}"),
        }
        match parse(&["demo"]).unwrap().command {
            Command::Demo(args) => assert_eq!(args.dir, None),
            other => panic!("{other:?}"),
        }
        match parse(&["demo", "--dir", "d"]).unwrap().command {
            Command::Demo(args) => assert_eq!(args.dir, Some(PathBuf::from("d"))),
            other => panic!("{other:?}"),
        }
        match parse(&["service", "launchd", "--repo", "r", "--install"])
            .unwrap()
            .command
        {
            Command::Service(args) => {
                assert_eq!(args.manager, ServiceKind::Launchd);
                assert!(args.install);
                assert_eq!(args.run_args().repo, Some(PathBuf::from("r")));
                assert_eq!(args.run_args().home, None);
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "report", "--home", "h", "--cycles", "3..", "--format", "json",
        ])
        .unwrap()
        .command
        {
            Command::Report(args) => {
                assert_eq!(args.home.home, Some(PathBuf::from("h")));
                let range = CycleRange {
                    first: 3,
                    last: None,
                };
                assert_eq!(args.span(), Span::Cycles(range));
                assert_eq!(args.format, Format::Json);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["report", "--since", "12h"]).unwrap().command {
            Command::Report(args) => {
                assert_eq!(args.span(), Span::Since(Duration::from_secs(12 * 3600)));
                assert_eq!(args.format, Format::Markdown);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["report"]).unwrap().command {
            Command::Report(args) => assert_eq!(args.span(), Span::LastRun),
            other => panic!("{other:?}"),
        }
        match parse(&["reset-breaker", "--home", "h"]).unwrap().command {
            Command::ResetBreaker(args) => assert_eq!(args.home, Some(PathBuf::from("h"))),
            other => panic!("{other:?}"),
        }
        for (args, expected) in [
            (&["mcp", "--home", "h"][..], None),
            (&["mcp", "--print-config"], Some(McpConfigFormat::AddJson)),
            (
                &["mcp", "--print-config", "mcp-json"],
                Some(McpConfigFormat::McpJson),
            ),
        ] {
            match parse(args).unwrap().command {
                Command::Mcp(mcp) => assert_eq!(mcp.print_config, expected, "{args:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(parse(&["mcp", "--print-config", "yaml"]).is_err());
    }
}
