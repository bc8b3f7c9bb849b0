//! Turns `RunArgs`, the `RALPH_*` environment and `ralph.toml` into one
//! validated, immutable [`Config`]. Every default and every validation rule of
//! the daemon's settings lives here (DESIGN §10).
//!
//! Precedence, per key: flag > environment variable > config file > default.
//! Every layer that sets a key is validated, even when a higher layer wins, so a
//! broken file is reported now and not on the day the flag is dropped.
//!
//! This module reads the config file and nothing else: it does not create the
//! home, check that the repo is a git work tree or look for `claude` (the daemon
//! does). It knows nothing of the agent, git or state files, and it does not
//! use serde: the file is read with toml's spanned parser so that each message
//! names the key, the file and the line. Relative paths in the file are relative
//! to the file's directory; relative paths in flags and variables to the current
//! directory.
//!
//! # Environment variables
//!
//! Every key has a variable `RALPH_<SECTION>_<KEY>`: upper case, with `.` and
//! `-` turned into `_`. Values are written as on a command line (`90s`, `true`,
//! `3`, `sonnet`), except lists, which use TOML syntax (`'["cargo test"]'`). For
//! the optional keys, an empty value means "unset" (it overrides the file). An
//! unknown `RALPH_*` variable is an error, so that a typo cannot silently change
//! behaviour; only `RALPH_PHASE` and `RALPH_CYCLE`, which the daemon sets for its
//! children, are ignored (it sets `RALPH_HOME` and `RALPH_REPO` for them too,
//! with the meaning below). Two names for one key may not both be set.
//!
//! | variable | key | value |
//! |---|---|---|
//! | `RALPH_HOME` | the home (`--home`) | directory |
//! | `RALPH_CONFIG` | the config file (`--config`) | file, must exist |
//! | `RALPH_REPO`, `RALPH_GIT_REPO` | `git.repo` (`--repo`) | directory |
//! | `RALPH_MAX_ITERATIONS`, `RALPH_LOOP_MAX_ITERATIONS` | `loop.max_iterations` (`--max-iterations`) | whole number ≥ 1, optional |
//! | `RALPH_SLEEP`, `RALPH_LOOP_SLEEP_BETWEEN_ITERATIONS` | `loop.sleep_between_iterations` (`--sleep`) | duration |
//! | `RALPH_ALLOW_DIRTY`, `RALPH_GIT_ALLOW_DIRTY` | `git.allow_dirty` (`--allow-dirty`) | `true`/`false` |
//! | `RALPH_LOG_FORMAT`, `RALPH_LOGGING_FORMAT` | `logging.format` (`--log-format`) | `text`/`json` |
//! | `RALPH_AGENT_KIND` | `agent.kind` | `claude`/`offline` |
//! | `RALPH_AGENT_COMMAND` | `agent.command` | name on PATH or path |
//! | `RALPH_AGENT_MODEL` | `agent.model` | string, optional |
//! | `RALPH_AGENT_FALLBACK_MODEL` | `agent.fallback_model` | string, optional |
//! | `RALPH_AGENT_MAX_TURNS` | `agent.max_turns` | whole number ≥ 1, optional |
//! | `RALPH_AGENT_PHASE_TIMEOUT` | `agent.phase_timeout` | duration > 0 |
//! | `RALPH_AGENT_IDLE_TIMEOUT` | `agent.idle_timeout` | duration > 0 |
//! | `RALPH_AGENT_STOP_GRACE` | `agent.stop_grace` | duration |
//! | `RALPH_AGENT_VERSION_TIMEOUT` | `agent.version_timeout` | duration > 0 |
//! | `RALPH_AGENT_MAX_ATTEMPTS` | `agent.max_attempts` | whole number ≥ 1 |
//! | `RALPH_AGENT_RETRY_BASE_DELAY` | `agent.retry_base_delay` | duration |
//! | `RALPH_AGENT_RETRY_MAX_DELAY` | `agent.retry_max_delay` | duration ≥ base delay |
//! | `RALPH_AGENT_USAGE_LIMIT_MARGIN` | `agent.usage_limit_margin` | duration |
//! | `RALPH_AGENT_USAGE_LIMIT_FALLBACK_WAIT` | `agent.usage_limit_fallback_wait` | duration > 0 |
//! | `RALPH_AGENT_CLI_MAX_RETRIES` | `agent.cli_max_retries` | whole number ≥ 0 |
//! | `RALPH_AGENT_OFFLINE_COMPLETE_AFTER` | `agent.offline_complete_after` | whole number ≥ 1 |
//! | `RALPH_AGENT_ALLOW_BYPASS_PERMISSIONS` | `agent.allow_bypass_permissions` | `true`/`false` |
//! | `RALPH_PHASES_<PHASE>_PERMISSION_MODE` | `phases.<phase>.permission_mode` | a mode, optional |
//! | `RALPH_PHASES_<PHASE>_ALLOWED_TOOLS` | `phases.<phase>.allowed_tools` | list |
//! | `RALPH_PHASES_<PHASE>_DISALLOWED_TOOLS` | `phases.<phase>.disallowed_tools` | list |
//! | `RALPH_BACKTEST_CHECKS` | `backtest.checks` | list |
//! | `RALPH_BACKTEST_CHECK_TIMEOUT` | `backtest.check_timeout` | duration > 0 |
//! | `RALPH_GIT_AUTO_COMMIT` | `git.auto_commit` | `true`/`false` |
//! | `RALPH_GIT_AUTHOR_NAME` | `git.author_name` | string |
//! | `RALPH_GIT_AUTHOR_EMAIL` | `git.author_email` | string |
//! | `RALPH_GIT_RUN_HOOKS` | `git.run_hooks` | `true`/`false` |
//! | `RALPH_GATES_MAX_CHANGED_FILES` | `gates.max_changed_files` | whole number ≥ 0 (0 = no limit) |
//! | `RALPH_GATES_MAX_CHANGED_LINES` | `gates.max_changed_lines` | whole number ≥ 0 (0 = no limit) |
//! | `RALPH_GATES_PROTECTED_PATHS` | `gates.protected_paths` | list of globs |
//! | `RALPH_GATES_SECRET_SCAN` | `gates.secret_scan` | `true`/`false` |
//! | `RALPH_RATE_LIMIT_REQUESTS_PER_MINUTE` | `rate_limit.requests_per_minute` | whole number ≥ 1 |
//! | `RALPH_RATE_LIMIT_REQUESTS_PER_HOUR` | `rate_limit.requests_per_hour` | whole number ≥ 1 |
//! | `RALPH_BREAKER_FAILURE_THRESHOLD` | `breaker.failure_threshold` | whole number ≥ 1 |
//! | `RALPH_BREAKER_RECOVERY_TIMEOUT` | `breaker.recovery_timeout` | duration |
//! | `RALPH_BREAKER_MAX_RECOVERY_TIMEOUT` | `breaker.max_recovery_timeout` | duration ≥ recovery timeout |
//! | `RALPH_BREAKER_HALF_OPEN_MAX_CALLS` | `breaker.half_open_max_calls` | whole number ≥ 1 |
//! | `RALPH_BREAKER_HALT_ON_OPEN` | `breaker.halt_on_open` | `true`/`false` |
//! | `RALPH_BUDGET_MAX_COST_USD` | `budget.max_cost_usd` | dollars > 0, optional |
//! | `RALPH_BUDGET_MAX_COST_PER_PHASE_USD` | `budget.max_cost_per_phase_usd` | dollars > 0, optional |
//! | `RALPH_LOGGING_LEVEL` | `logging.level` | `trace`/`debug`/`info`/`warn`/`error`/`off` |
//! | `RALPH_LOGGING_MAX_LOG_FILES` | `logging.max_log_files` | whole number ≥ 1 |
//! | `RALPH_STATE_ON_CORRUPT` | `state.on_corrupt` | `refuse`/`move-aside` |
//! | `RALPH_STATE_KEEP_CYCLES` | `state.keep_cycles` | whole number ≥ 1 |
//! | `RALPH_STATE_COMPRESS_AFTER` | `state.compress_after` | whole number ≥ 0 (0 = never) |
//! | `RALPH_STATE_MAX_TRANSCRIPT_MB` | `state.max_transcript_mb` | whole number ≥ 1 (MiB) |
//!
//! `<PHASE>` is `SCAN`, `IDEA`, `CODE_EDIT`, `BACKTEST` or `REPORT`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::num::NonZeroU32;
use std::ops::Index;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::cli::{LogFormat, RunArgs};
use crate::phase::Phase;

/// The file read from the home when neither `--config` nor `RALPH_CONFIG` is given.
pub(crate) const CONFIG_FILE_NAME: &str = "ralph.toml";

/// The variables the daemon sets for its children; a ralphd started by one of
/// them (a check running ralphd's own tests, say) must not trip over them.
const RUNTIME_VARIABLES: [&str; 2] = ["RALPH_PHASE", "RALPH_CYCLE"];

/// The top-level tables of `ralph.toml`.
const SECTIONS: [&str; 11] = [
    "loop",
    "agent",
    "phases",
    "backtest",
    "gates",
    "git",
    "rate_limit",
    "breaker",
    "budget",
    "logging",
    "state",
];

/// The values `claude --permission-mode` accepts.
const PERMISSION_MODES: &[&str] = &[
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "default",
    "dontAsk",
    "plan",
];

const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// Longer durations are certainly typos, and would overflow `Instant` arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

const DURATION_FORM: &str = "a duration like \"90s\", \"5m\" or \"1h 30m\" (at most 365 days)";

/// Everything the daemon needs to know about its settings, resolved once at
/// startup (and again on SIGHUP through [`Config::reload`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Config {
    /// The home: absolute, canonical if it exists.
    pub(crate) home: PathBuf,
    /// The git work tree: absolute, canonical if it exists.
    pub(crate) repo: PathBuf,
    /// The config file that was read; `None` when the default one is absent.
    pub(crate) config_file: Option<PathBuf>,
    /// `None` runs until completion.
    pub(crate) max_iterations: Option<u32>,
    pub(crate) allow_dirty: bool,
    pub(crate) sleep_between_iterations: Duration,
    /// `-v` minus `-q`: 0 is `logging.level`, each step one level up or down.
    pub(crate) verbosity: i8,
    pub(crate) agent: AgentSettings,
    pub(crate) phases: PhasePermissions,
    pub(crate) backtest: BacktestSettings,
    pub(crate) gates: GateSettings,
    pub(crate) git: GitSettings,
    pub(crate) rate_limit: RateLimitSettings,
    pub(crate) breaker: BreakerSettings,
    pub(crate) budget: BudgetSettings,
    pub(crate) logging: LoggingSettings,
    pub(crate) state: StateSettings,
    /// What this config was resolved from, kept so that `reload` resolves the
    /// file again with the same flags and environment.
    inputs: LoadInputs,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AgentSettings {
    pub(crate) kind: AgentKind,
    /// A name looked up on PATH, or an absolute path.
    pub(crate) command: String,
    pub(crate) model: Option<String>,
    pub(crate) fallback_model: Option<String>,
    pub(crate) max_turns: Option<u32>,
    pub(crate) phase_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) stop_grace: Duration,
    /// How long `claude --version` may take at start-up before it is stopped.
    pub(crate) version_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) retry_base_delay: Duration,
    pub(crate) retry_max_delay: Duration,
    pub(crate) usage_limit_margin: Duration,
    /// How long to wait after a usage limit whose reset time cannot be parsed.
    pub(crate) usage_limit_fallback_wait: Duration,
    /// `CLAUDE_CODE_MAX_RETRIES` for the child: the CLI's own API retries.
    pub(crate) cli_max_retries: u32,
    /// The offline agent declares completion in this cycle.
    pub(crate) offline_complete_after: u32,
    /// Whether `permission_mode = "bypassPermissions"` may be configured.
    pub(crate) allow_bypass_permissions: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            kind: AgentKind::Claude,
            command: "claude".to_owned(),
            model: None,
            fallback_model: None,
            max_turns: None,
            phase_timeout: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
            stop_grace: Duration::from_secs(10),
            version_timeout: Duration::from_secs(30),
            max_attempts: 3,
            retry_base_delay: Duration::from_secs(5),
            retry_max_delay: Duration::from_secs(5 * 60),
            usage_limit_margin: Duration::from_secs(60),
            usage_limit_fallback_wait: Duration::from_secs(30 * 60),
            cli_max_retries: 2,
            offline_complete_after: 2,
            allow_bypass_permissions: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgentKind {
    /// The Claude Code CLI.
    Claude,
    /// The built-in deterministic simulator (DESIGN §9).
    Offline,
}

impl AgentKind {
    /// The spelling of `agent.kind` in `ralph.toml`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AgentKind::Claude => "claude",
            AgentKind::Offline => "offline",
        }
    }
}

/// The permission settings of each phase, indexed by [`Phase`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PhasePermissions {
    by_phase: [PhaseSettings; Phase::ALL.len()],
}

impl PhasePermissions {
    pub(crate) fn get(&self, phase: Phase) -> &PhaseSettings {
        &self.by_phase[phase_index(phase)]
    }

    pub(crate) fn get_mut(&mut self, phase: Phase) -> &mut PhaseSettings {
        &mut self.by_phase[phase_index(phase)]
    }
}

impl Default for PhasePermissions {
    fn default() -> Self {
        PhasePermissions {
            by_phase: Phase::ALL.map(PhaseSettings::default_for),
        }
    }
}

impl Index<Phase> for PhasePermissions {
    type Output = PhaseSettings;

    fn index(&self, phase: Phase) -> &PhaseSettings {
        self.get(phase)
    }
}

fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::Scan => 0,
        Phase::Idea => 1,
        Phase::CodeEdit => 2,
        Phase::Backtest => 3,
        Phase::Report => 4,
    }
}

/// The `claude` permission flags of one phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PhaseSettings {
    /// `--permission-mode`; `None` passes no flag (the CLI's default mode).
    pub(crate) permission_mode: Option<String>,
    /// `--allowedTools`: tools the phase may use without asking.
    pub(crate) allowed_tools: Vec<String>,
    /// `--disallowedTools`: tools the phase may never use.
    pub(crate) disallowed_tools: Vec<String>,
}

impl PhaseSettings {
    /// DESIGN §5: scan, idea and report are read-only, backtest is read-only
    /// plus Bash, code-edit accepts edits.
    fn default_for(phase: Phase) -> PhaseSettings {
        let strings = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
        let read_only: Vec<String> = strings(&["Read", "Grep", "Glob"]);
        // No disallowed tools by default: in the CLI's default mode a write
        // outside the allowed list is denied and shows up in the result's
        // `permission_denials`, which the progress file records.
        let no_edits: Vec<String> = Vec::new();
        match phase {
            Phase::Scan | Phase::Idea | Phase::Report => PhaseSettings {
                permission_mode: None,
                allowed_tools: read_only,
                disallowed_tools: no_edits,
            },
            Phase::CodeEdit => PhaseSettings {
                permission_mode: Some("acceptEdits".to_owned()),
                allowed_tools: Vec::new(),
                disallowed_tools: Vec::new(),
            },
            Phase::Backtest => PhaseSettings {
                permission_mode: None,
                allowed_tools: strings(&["Read", "Grep", "Glob", "Bash"]),
                disallowed_tools: no_edits,
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BacktestSettings {
    /// Shell commands run in the repo before the backtest phase; all must exit 0.
    pub(crate) checks: Vec<String>,
    pub(crate) check_timeout: Duration,
}

impl Default for BacktestSettings {
    fn default() -> Self {
        BacktestSettings {
            checks: Vec::new(),
            check_timeout: Duration::from_secs(20 * 60),
        }
    }
}

/// The diff gates applied to code-edit's work (DESIGN §14).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GateSettings {
    /// At most this many changed files; 0 = no limit.
    pub(crate) max_changed_files: u32,
    /// At most this many changed lines (added plus removed); 0 = no limit.
    pub(crate) max_changed_lines: u32,
    /// Globs (validated) of paths the agent may not touch.
    pub(crate) protected_paths: Vec<String>,
    /// Refuse a diff that adds a credential.
    pub(crate) secret_scan: bool,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            max_changed_files: 50,
            max_changed_lines: 2000,
            protected_paths: vec![".github/**".to_owned(), ".ralph/**".to_owned()],
            secret_scan: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GitSettings {
    pub(crate) auto_commit: bool,
    pub(crate) author_name: String,
    pub(crate) author_email: String,
    /// Run the repository's `pre-commit` and `commit-msg` hooks for ralphd's commits.
    pub(crate) run_hooks: bool,
}

impl Default for GitSettings {
    fn default() -> Self {
        GitSettings {
            auto_commit: true,
            author_name: "ralphd".to_owned(),
            author_email: "ralphd@localhost".to_owned(),
            run_hooks: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RateLimitSettings {
    pub(crate) requests_per_minute: NonZeroU32,
    pub(crate) requests_per_hour: NonZeroU32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            requests_per_minute: NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN),
            requests_per_hour: NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BreakerSettings {
    pub(crate) failure_threshold: u32,
    pub(crate) recovery_timeout: Duration,
    pub(crate) max_recovery_timeout: Duration,
    pub(crate) half_open_max_calls: u32,
    pub(crate) halt_on_open: bool,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(60),
            max_recovery_timeout: Duration::from_secs(60 * 60),
            half_open_max_calls: 1,
            halt_on_open: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BudgetSettings {
    /// The run stops (exit 3) when the summed cost reaches this.
    pub(crate) max_cost_usd: Option<f64>,
    /// Passed to the CLI as `--max-budget-usd`.
    pub(crate) max_cost_per_phase_usd: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LoggingSettings {
    /// One of trace, debug, info, warn, error, off; `RUST_LOG` wins.
    pub(crate) level: String,
    pub(crate) format: LogFormat,
    pub(crate) max_log_files: usize,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            level: "info".to_owned(),
            format: LogFormat::Text,
            max_log_files: 14,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StateSettings {
    pub(crate) on_corrupt: OnCorrupt,
    /// The transcripts and phase texts of this many newest cycles are kept;
    /// older cycle directories are deleted (progress.json keeps every record).
    /// At least 1: the cycle just finished is always kept.
    pub(crate) keep_cycles: u32,
    /// Cycle directories older than this many newest are gzip-compressed;
    /// 0 = never.
    pub(crate) compress_after: u32,
    /// The most one phase run stores in its transcript, in MiB.
    pub(crate) max_transcript_mb: u32,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            on_corrupt: OnCorrupt::default(),
            keep_cycles: 500,
            compress_after: 50,
            max_transcript_mb: 64,
        }
    }
}

impl StateSettings {
    /// [`StateSettings::max_transcript_mb`] in bytes.
    pub(crate) fn max_transcript_bytes(&self) -> u64 {
        u64::from(self.max_transcript_mb) * 1024 * 1024
    }
}

/// What to do with a state file that cannot be parsed (DESIGN §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum OnCorrupt {
    /// Refuse to start (exit 2), naming the file.
    #[default]
    Refuse,
    /// Rename it to `<name>.corrupt-<timestamp>` and start fresh.
    MoveAside,
}

/// The `RALPH_*` variables of the process, captured once. Injected so that
/// tests never touch the real environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Env {
    variables: BTreeMap<String, OsString>,
}

impl Env {
    /// The `RALPH_*` variables of this process.
    pub(crate) fn from_process() -> Env {
        // A name that is not UTF-8 is none of ralphd's variables (all are ASCII).
        Env::from_pairs(
            std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value))),
        )
    }

    /// The `RALPH_*` variables among `pairs`; other names are dropped.
    pub(crate) fn from_pairs<I, K, V>(pairs: I) -> Env
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<OsString>,
    {
        let variables = pairs
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .filter(|(name, _)| name.starts_with("RALPH_"))
            .collect();
        Env { variables }
    }

    fn get(&self, name: &str) -> Option<&OsStr> {
        self.variables.get(name).map(OsString::as_os_str)
    }
}

/// A configuration problem: bad flag value, bad file, bad variable. Each
/// message is one line naming the key, where it came from and what is
/// expected; the caller prints it and exits 2.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read the current directory: {error}")]
    CurrentDir { error: std::io::Error },

    #[error("config file {} does not exist (given by {given_by})", path.display())]
    FileMissing {
        path: PathBuf,
        given_by: &'static str,
    },

    #[error(
        "home directory {} does not exist (given by {given_by}); pass the home of a ralphd run, \
         or create one with `ralphd init DIR`",
        path.display()
    )]
    HomeMissing { path: PathBuf, given_by: String },

    #[error("home {} is not a directory (given by {given_by})", path.display())]
    HomeNotADirectory { path: PathBuf, given_by: String },

    #[error("cannot read config file {}: {error}", path.display())]
    FileUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("invalid TOML in {} line {line}, column {column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error(
        "unknown table [{table}] in {} line {line} (expected one of: {})",
        path.display(),
        table_list()
    )]
    UnknownTable {
        table: String,
        path: PathBuf,
        line: usize,
    },

    #[error(
        "unknown phase '{phase}' in [phases.{phase}] of {} line {line} (expected one of: {})",
        path.display(),
        Phase::ALL.map(Phase::name).join(", ")
    )]
    UnknownPhase {
        phase: String,
        path: PathBuf,
        line: usize,
    },

    #[error("'{name}' in {} line {line} must be a table like [{name}]", path.display())]
    NotATable {
        name: String,
        path: PathBuf,
        line: usize,
    },

    #[error("unknown key '{key}' in {place} of {} line {line} (expected one of: {expected})", path.display())]
    UnknownKey {
        key: String,
        /// `[loop]`, or "the top level".
        place: String,
        path: PathBuf,
        line: usize,
        expected: String,
    },

    #[error(
        "unknown environment variable {name}{}: ralphd refuses RALPH_* variables it does not know, \
         so that a typo cannot silently change its behaviour (each ralph.toml key has a variable \
         RALPH_<SECTION>_<KEY>)",
        suggestion.as_ref().map(|known| format!(" (did you mean {known}?)")).unwrap_or_default()
    )]
    UnknownVariable {
        name: String,
        suggestion: Option<String>,
    },

    #[error("invalid value {got} for '{key}' in {origin}: expected {expected}")]
    InvalidValue {
        key: String,
        origin: String,
        got: String,
        expected: String,
    },

    /// A rule that involves more than one value (or one value and a guard key).
    #[error("{0}")]
    Rule(String),
}

impl Config {
    /// Resolves the configuration of `ralphd run`: `<home>/ralph.toml` (or
    /// `--config`/`RALPH_CONFIG`, which must exist; a missing default file
    /// means all defaults), then the `RALPH_*` variables of `env` (see the
    /// module docs), then the flags of `run_args`.
    pub(crate) fn load(run_args: &RunArgs, env: &Env) -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().map_err(|error| ConfigError::CurrentDir { error })?;
        Config::load_in(run_args, env, &cwd)
    }

    /// [`Config::load`] with relative flags and variables resolved against `cwd`.
    pub(crate) fn load_in(
        run_args: &RunArgs,
        env: &Env,
        cwd: &Path,
    ) -> Result<Config, ConfigError> {
        resolve(run_args, env, cwd).map(|(config, _known)| config)
    }

    /// All defaults for `home` and `repo`, taken as given (tests and the demo
    /// pass absolute paths). `reload` then reads `<home>/ralph.toml`.
    pub(crate) fn for_home(home: &Path, repo: &Path) -> Config {
        Config {
            home: home.to_path_buf(),
            repo: repo.to_path_buf(),
            config_file: None,
            max_iterations: None,
            allow_dirty: false,
            sleep_between_iterations: Duration::from_secs(2),
            verbosity: 0,
            agent: AgentSettings::default(),
            phases: PhasePermissions::default(),
            backtest: BacktestSettings::default(),
            gates: GateSettings::default(),
            git: GitSettings::default(),
            rate_limit: RateLimitSettings::default(),
            breaker: BreakerSettings::default(),
            budget: BudgetSettings::default(),
            logging: LoggingSettings::default(),
            state: StateSettings::default(),
            inputs: LoadInputs {
                run_args: RunArgs {
                    home: Some(home.to_path_buf()),
                    repo: Some(repo.to_path_buf()),
                    ..RunArgs::default()
                },
                env: Env::default(),
                cwd: home.to_path_buf(),
            },
        }
    }

    /// Reads the config file again with the same flags and environment (on
    /// SIGHUP). The repo cannot change while the daemon runs: a file that now
    /// names another one is an error, and the caller keeps the old config.
    pub(crate) fn reload(&self) -> Result<Config, ConfigError> {
        let inputs = &self.inputs;
        let reloaded = Config::load_in(&inputs.run_args, &inputs.env, &inputs.cwd)?;
        if reloaded.repo != self.repo {
            return Err(ConfigError::Rule(format!(
                "the configuration now names the repo {}, but this daemon runs on {}; \
                 restart ralphd to switch repositories",
                reloaded.repo.display(),
                self.repo.display()
            )));
        }
        Ok(reloaded)
    }
}

/// Resolves the home of the commands that only look at a home (`status`,
/// `reset-breaker`) the way `run` does: `--home`, else `RALPH_HOME`, else the
/// current directory. Unlike `run`, which creates it, the home must exist
/// (DESIGN §2): a typo must not read as "ralphd has never run here".
pub(crate) fn resolve_home(flag: Option<&Path>, env: &Env) -> Result<PathBuf, ConfigError> {
    let cwd = std::env::current_dir().map_err(|error| ConfigError::CurrentDir { error })?;
    let home = resolve_home_in(flag, env, &cwd)?;
    let given_by = || match (flag, env.get("RALPH_HOME")) {
        (Some(_), _) => "--home".to_owned(),
        (None, Some(_)) => "RALPH_HOME".to_owned(),
        (None, None) => "the current directory".to_owned(),
    };
    match std::fs::metadata(&home) {
        Ok(metadata) if metadata.is_dir() => Ok(home),
        Ok(_) => Err(ConfigError::HomeNotADirectory {
            path: home,
            given_by: given_by(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(ConfigError::HomeMissing {
                path: home,
                given_by: given_by(),
            })
        }
        // Any other error (a parent without search permission, say) shows
        // up, naming the file, when the home's files are read.
        Err(_) => Ok(home),
    }
}

fn resolve_home_in(flag: Option<&Path>, env: &Env, cwd: &Path) -> Result<PathBuf, ConfigError> {
    if let Some(home) = flag {
        return Ok(absolute(cwd, home));
    }
    match env.get("RALPH_HOME") {
        Some(home) if home.is_empty() => Err(ConfigError::InvalidValue {
            key: "home".to_owned(),
            origin: Origin::Env("RALPH_HOME".to_owned()).to_string(),
            got: "\"\"".to_owned(),
            expected: "a directory".to_owned(),
        }),
        Some(home) => Ok(absolute(cwd, Path::new(home))),
        None => Ok(absolute(cwd, Path::new("."))),
    }
}

/// `base/path`, canonical if it exists (a missing home or repo is reported by
/// the daemon, with the operation that needed it).
fn absolute(base: &Path, path: &Path) -> PathBuf {
    let joined = base.join(path);
    joined.canonicalize().unwrap_or(joined)
}

#[derive(Clone, Debug, PartialEq)]
struct LoadInputs {
    run_args: RunArgs,
    env: Env,
    cwd: PathBuf,
}

/// The keys and variables a resolution asked for; tests check the template
/// and the docs against it.
#[cfg_attr(not(test), allow(dead_code))]
struct Known {
    keys: Vec<(String, &'static str)>,
    variables: BTreeSet<String>,
}

fn resolve(run_args: &RunArgs, env: &Env, cwd: &Path) -> Result<(Config, Known), ConfigError> {
    let home = resolve_home_in(run_args.home.as_deref(), env, cwd)?;
    let file = match (&run_args.config, env.get("RALPH_CONFIG")) {
        (Some(path), _) => read_file(&cwd.join(path), Some("--config"))?,
        (None, Some(path)) => read_file(&cwd.join(path), Some("RALPH_CONFIG"))?,
        (None, None) => read_file(&home.join(CONFIG_FILE_NAME), None)?,
    };
    let mut resolver = Resolver::new(file.as_ref(), env, cwd);
    resolver.known_variables.insert("RALPH_HOME".to_owned());
    resolver.known_variables.insert("RALPH_CONFIG".to_owned());

    let repo_below_flag = resolver.get("git", "repo", Some("RALPH_REPO"), path_value)?;
    let repo = resolver
        .with_flag("git.repo", "--repo", run_args.repo.clone(), repo_below_flag)
        .unwrap_or_else(|| cwd.to_path_buf());
    let mut config = Config::for_home(&home, &absolute(cwd, &repo));
    config.config_file = file.as_ref().map(|file| file.path.clone());
    config.verbosity = run_args.log.verbosity();
    config.inputs = LoadInputs {
        run_args: run_args.clone(),
        env: env.clone(),
        cwd: cwd.to_path_buf(),
    };
    let r = &mut resolver;

    let sleep = r.get(
        "loop",
        "sleep_between_iterations",
        Some("RALPH_SLEEP"),
        duration,
    )?;
    if let Some(sleep) = r.with_flag(
        "loop.sleep_between_iterations",
        "--sleep",
        run_args.sleep,
        sleep,
    ) {
        config.sleep_between_iterations = sleep;
    }
    let max_iterations = r.get(
        "loop",
        "max_iterations",
        Some("RALPH_MAX_ITERATIONS"),
        optional(max_iterations),
    )?;
    config.max_iterations = r
        .with_flag(
            "loop.max_iterations",
            "--max-iterations",
            run_args.max_iterations.map(Some),
            max_iterations,
        )
        .flatten();

    let agent = &mut config.agent;
    r.set(&mut agent.kind, "agent", "kind", |input| {
        choice(input, &["claude", "offline"]).map(|kind| match kind {
            "offline" => AgentKind::Offline,
            _ => AgentKind::Claude,
        })
    })?;
    r.set(&mut agent.command, "agent", "command", command)?;
    r.set(&mut agent.model, "agent", "model", optional(text))?;
    r.set(
        &mut agent.fallback_model,
        "agent",
        "fallback_model",
        optional(text),
    )?;
    r.set(
        &mut agent.max_turns,
        "agent",
        "max_turns",
        optional(whole_number(1)),
    )?;
    r.set(
        &mut agent.phase_timeout,
        "agent",
        "phase_timeout",
        nonzero_duration,
    )?;
    r.set(
        &mut agent.idle_timeout,
        "agent",
        "idle_timeout",
        nonzero_duration,
    )?;
    r.set(&mut agent.stop_grace, "agent", "stop_grace", duration)?;
    r.set(
        &mut agent.version_timeout,
        "agent",
        "version_timeout",
        nonzero_duration,
    )?;
    r.set(
        &mut agent.max_attempts,
        "agent",
        "max_attempts",
        whole_number(1),
    )?;
    r.set(
        &mut agent.retry_base_delay,
        "agent",
        "retry_base_delay",
        duration,
    )?;
    r.set(
        &mut agent.retry_max_delay,
        "agent",
        "retry_max_delay",
        duration,
    )?;
    r.set(
        &mut agent.usage_limit_margin,
        "agent",
        "usage_limit_margin",
        duration,
    )?;
    r.set(
        &mut agent.usage_limit_fallback_wait,
        "agent",
        "usage_limit_fallback_wait",
        nonzero_duration,
    )?;
    r.set(
        &mut agent.cli_max_retries,
        "agent",
        "cli_max_retries",
        whole_number(0),
    )?;
    r.set(
        &mut agent.offline_complete_after,
        "agent",
        "offline_complete_after",
        whole_number(1),
    )?;
    r.set(
        &mut agent.allow_bypass_permissions,
        "agent",
        "allow_bypass_permissions",
        boolean,
    )?;

    for phase in Phase::ALL {
        let section = format!("phases.{}", phase.name());
        let settings = config.phases.get_mut(phase);
        r.set(
            &mut settings.permission_mode,
            &section,
            "permission_mode",
            optional(|input| choice(input, PERMISSION_MODES).map(str::to_owned)),
        )?;
        r.set(
            &mut settings.allowed_tools,
            &section,
            "allowed_tools",
            string_list,
        )?;
        r.set(
            &mut settings.disallowed_tools,
            &section,
            "disallowed_tools",
            string_list,
        )?;
    }

    r.set(
        &mut config.backtest.checks,
        "backtest",
        "checks",
        string_list,
    )?;
    r.set(
        &mut config.backtest.check_timeout,
        "backtest",
        "check_timeout",
        nonzero_duration,
    )?;

    let allow_dirty = r.get("git", "allow_dirty", Some("RALPH_ALLOW_DIRTY"), boolean)?;
    let allow_dirty_flag = run_args.allow_dirty.then_some(true);
    if let Some(allow_dirty) = r.with_flag(
        "git.allow_dirty",
        "--allow-dirty",
        allow_dirty_flag,
        allow_dirty,
    ) {
        config.allow_dirty = allow_dirty;
    }
    r.set(&mut config.git.auto_commit, "git", "auto_commit", boolean)?;
    r.set(
        &mut config.git.author_name,
        "git",
        "author_name",
        signature_part,
    )?;
    r.set(
        &mut config.git.author_email,
        "git",
        "author_email",
        signature_part,
    )?;
    r.set(&mut config.git.run_hooks, "git", "run_hooks", boolean)?;

    let gates = &mut config.gates;
    r.set(
        &mut gates.max_changed_files,
        "gates",
        "max_changed_files",
        whole_number(0),
    )?;
    r.set(
        &mut gates.max_changed_lines,
        "gates",
        "max_changed_lines",
        whole_number(0),
    )?;
    r.set(
        &mut gates.protected_paths,
        "gates",
        "protected_paths",
        glob_list,
    )?;
    r.set(&mut gates.secret_scan, "gates", "secret_scan", boolean)?;

    let rate_limit = &mut config.rate_limit;
    r.set(
        &mut rate_limit.requests_per_minute,
        "rate_limit",
        "requests_per_minute",
        nonzero_u32,
    )?;
    r.set(
        &mut rate_limit.requests_per_hour,
        "rate_limit",
        "requests_per_hour",
        nonzero_u32,
    )?;

    let breaker = &mut config.breaker;
    r.set(
        &mut breaker.failure_threshold,
        "breaker",
        "failure_threshold",
        whole_number(1),
    )?;
    r.set(
        &mut breaker.recovery_timeout,
        "breaker",
        "recovery_timeout",
        duration,
    )?;
    r.set(
        &mut breaker.max_recovery_timeout,
        "breaker",
        "max_recovery_timeout",
        duration,
    )?;
    r.set(
        &mut breaker.half_open_max_calls,
        "breaker",
        "half_open_max_calls",
        whole_number(1),
    )?;
    r.set(
        &mut breaker.halt_on_open,
        "breaker",
        "halt_on_open",
        boolean,
    )?;

    r.set(
        &mut config.budget.max_cost_usd,
        "budget",
        "max_cost_usd",
        optional(dollars),
    )?;
    r.set(
        &mut config.budget.max_cost_per_phase_usd,
        "budget",
        "max_cost_per_phase_usd",
        optional(dollars),
    )?;

    r.set(&mut config.logging.level, "logging", "level", |input| {
        choice(input, LOG_LEVELS).map(str::to_owned)
    })?;
    let log_format = r.get("logging", "format", Some("RALPH_LOG_FORMAT"), |input| {
        choice(input, &["text", "json"]).map(|format| match format {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        })
    })?;
    if let Some(format) = r.with_flag(
        "logging.format",
        "--log-format",
        run_args.log.log_format,
        log_format,
    ) {
        config.logging.format = format;
    }
    r.set(
        &mut config.logging.max_log_files,
        "logging",
        "max_log_files",
        |input| whole_number(1)(input).map(|count| usize::try_from(count).unwrap_or(usize::MAX)),
    )?;

    r.set(
        &mut config.state.on_corrupt,
        "state",
        "on_corrupt",
        |input| {
            choice(input, &["refuse", "move-aside"]).map(|action| match action {
                "move-aside" => OnCorrupt::MoveAside,
                _ => OnCorrupt::Refuse,
            })
        },
    )?;
    r.set(
        &mut config.state.keep_cycles,
        "state",
        "keep_cycles",
        |input| {
            whole_number(1)(input).map_err(|_| {
                "a whole number ≥ 1 (the cycles whose transcripts are kept; there is no \
                 'keep everything': set a large number)"
                    .to_owned()
            })
        },
    )?;
    r.set(
        &mut config.state.compress_after,
        "state",
        "compress_after",
        whole_number(0),
    )?;
    r.set(
        &mut config.state.max_transcript_mb,
        "state",
        "max_transcript_mb",
        whole_number(1),
    )?;

    resolver.check_unknown()?;
    check_rules(&config, &resolver)?;
    let known = Known {
        keys: resolver.known_keys,
        variables: resolver.known_variables,
    };
    Ok((config, known))
}

/// The rules that involve more than one key.
fn check_rules(config: &Config, resolver: &Resolver<'_>) -> Result<(), ConfigError> {
    let at_least = |larger: (&str, Duration), smaller: (&str, Duration)| {
        if larger.1 >= smaller.1 {
            return Ok(());
        }
        Err(ConfigError::Rule(format!(
            "'{}' ({}, from {}) must be at least '{}' ({}, from {})",
            larger.0,
            humantime::format_duration(larger.1),
            resolver.origin_of(larger.0),
            smaller.0,
            humantime::format_duration(smaller.1),
            resolver.origin_of(smaller.0),
        )))
    };
    at_least(
        ("agent.retry_max_delay", config.agent.retry_max_delay),
        ("agent.retry_base_delay", config.agent.retry_base_delay),
    )?;
    at_least(
        (
            "breaker.max_recovery_timeout",
            config.breaker.max_recovery_timeout,
        ),
        ("breaker.recovery_timeout", config.breaker.recovery_timeout),
    )?;
    for phase in Phase::ALL {
        let is_bypass =
            config.phases[phase].permission_mode.as_deref() == Some("bypassPermissions");
        if is_bypass && !config.agent.allow_bypass_permissions {
            let key = format!("phases.{}.permission_mode", phase.name());
            return Err(ConfigError::Rule(format!(
                "'{key}' = \"bypassPermissions\" (from {}) is refused: it lets the agent run \
                 every tool without any permission check; it is never a default, and needs \
                 'agent.allow_bypass_permissions = true' set explicitly",
                resolver.origin_of(&key),
            )));
        }
    }
    Ok(())
}

/// Where a value came from, as named in messages.
#[derive(Clone, Debug, PartialEq)]
enum Origin {
    Default,
    File { path: PathBuf, line: usize },
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the defaults"),
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// The parsed config file: every key of every known table, in file order.
struct FileLayer {
    /// Absolute, canonical.
    path: PathBuf,
    /// The directory relative paths in the file are relative to.
    dir: PathBuf,
    entries: Vec<FileEntry>,
}

struct FileEntry {
    /// `loop`, `phases.code-edit`, …
    section: String,
    key: String,
    value: FileValue,
    line: usize,
}

/// A TOML value, detached from the parser's borrowed representation.
#[derive(Clone, Debug)]
enum FileValue {
    Str(String),
    /// The decoded digits (with sign) and their radix.
    Int {
        digits: String,
        radix: u32,
    },
    Float(String),
    Bool(bool),
    Datetime(String),
    Array(Vec<FileValue>),
    Table,
}

impl FileValue {
    fn from_toml(value: &DeValue<'_>) -> FileValue {
        match value {
            DeValue::String(text) => FileValue::Str(text.to_string()),
            DeValue::Integer(integer) => FileValue::Int {
                digits: integer.as_str().to_owned(),
                radix: integer.radix(),
            },
            DeValue::Float(float) => FileValue::Float(float.as_str().to_owned()),
            DeValue::Boolean(flag) => FileValue::Bool(*flag),
            DeValue::Datetime(datetime) => FileValue::Datetime(datetime.to_string()),
            DeValue::Array(items) => FileValue::Array(
                items
                    .iter()
                    .map(|item| FileValue::from_toml(item.get_ref()))
                    .collect(),
            ),
            DeValue::Table(_) => FileValue::Table,
        }
    }

    /// How the value is shown in a message.
    fn describe(&self) -> String {
        match self {
            FileValue::Str(text) => format!("{text:?}"),
            FileValue::Int { digits, radix } => match radix {
                16 => format!("0x{digits}"),
                8 => format!("0o{digits}"),
                2 => format!("0b{digits}"),
                _ => digits.clone(),
            },
            FileValue::Float(text) | FileValue::Datetime(text) => text.clone(),
            FileValue::Bool(flag) => flag.to_string(),
            FileValue::Array(items) => {
                let items: Vec<String> = items.iter().map(FileValue::describe).collect();
                format!("[{}]", items.join(", "))
            }
            FileValue::Table => "a table".to_owned(),
        }
    }
}

/// Reads and parses a config file. A missing file is `None` when it is the
/// default one and an error when a flag or variable named it.
fn read_file(
    path: &Path,
    given_by: Option<&'static str>,
) -> Result<Option<FileLayer>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return match given_by {
                None => Ok(None),
                Some(given_by) => Err(ConfigError::FileMissing {
                    path: path.to_path_buf(),
                    given_by,
                }),
            };
        }
        Err(error) => {
            return Err(ConfigError::FileUnreadable {
                path: path.to_path_buf(),
                error,
            });
        }
    };
    // Only for naming it and its directory: the file was just read.
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    parse_file(&path, &text).map(Some)
}

fn parse_file(path: &Path, text: &str) -> Result<FileLayer, ConfigError> {
    let root = DeTable::parse(text).map_err(|error| syntax_error(path, text, &error))?;
    let mut entries = Vec::new();
    for (name, value) in root.get_ref().iter() {
        let line = line_of(text, name.span().start);
        let name: &str = name.get_ref();
        if name == "phases" {
            let DeValue::Table(phases) = value.get_ref() else {
                return Err(ConfigError::NotATable {
                    name: "phases.scan".to_owned(),
                    path: path.to_path_buf(),
                    line,
                });
            };
            for (phase, keys) in phases.iter() {
                let line = line_of(text, phase.span().start);
                let phase: &str = phase.get_ref();
                if Phase::from_name(phase).is_none() {
                    return Err(ConfigError::UnknownPhase {
                        phase: phase.to_owned(),
                        path: path.to_path_buf(),
                        line,
                    });
                }
                let section = format!("phases.{phase}");
                let DeValue::Table(keys) = keys.get_ref() else {
                    return Err(ConfigError::NotATable {
                        name: section,
                        path: path.to_path_buf(),
                        line,
                    });
                };
                collect_entries(text, &section, keys, &mut entries);
            }
        } else if SECTIONS.contains(&name) {
            let DeValue::Table(keys) = value.get_ref() else {
                return Err(ConfigError::NotATable {
                    name: name.to_owned(),
                    path: path.to_path_buf(),
                    line,
                });
            };
            collect_entries(text, name, keys, &mut entries);
        } else if value.get_ref().is_table() {
            return Err(ConfigError::UnknownTable {
                table: name.to_owned(),
                path: path.to_path_buf(),
                line,
            });
        } else {
            return Err(ConfigError::UnknownKey {
                key: name.to_owned(),
                place: "the top level".to_owned(),
                path: path.to_path_buf(),
                line,
                expected: format!("the tables {}; every key belongs in one", table_list()),
            });
        }
    }
    entries.sort_by_key(|entry| entry.line);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(FileLayer {
        path: path.to_path_buf(),
        dir,
        entries,
    })
}

fn collect_entries(text: &str, section: &str, keys: &DeTable<'_>, entries: &mut Vec<FileEntry>) {
    for (key, value) in keys.iter() {
        entries.push(FileEntry {
            section: section.to_owned(),
            key: key.get_ref().to_string(),
            value: FileValue::from_toml(value.get_ref()),
            line: line_of(text, key.span().start),
        });
    }
}

fn syntax_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(0, |span| span.start).min(text.len());
    let line_start = text.as_bytes()[..offset]
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let column = String::from_utf8_lossy(&text.as_bytes()[line_start..offset])
        .chars()
        .count()
        + 1;
    let message: Vec<&str> = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line: line_of(text, offset),
        column,
        message: message.join("; "),
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

/// `[loop], [agent], [phases.<phase>], …` for messages.
fn table_list() -> String {
    SECTIONS
        .map(|section| match section {
            "phases" => "[phases.<phase>]".to_owned(),
            _ => format!("[{section}]"),
        })
        .join(", ")
}

/// `RALPH_<SECTION>_<KEY>`, upper case, `.` and `-` turned into `_`.
fn variable_name(section: &str, key: &str) -> String {
    format!("RALPH_{section}_{key}")
        .to_uppercase()
        .replace(['.', '-'], "_")
}

/// One value as written in a layer, handed to a converter.
enum Input<'a> {
    File { value: &'a FileValue, dir: &'a Path },
    Env { text: &'a OsStr, cwd: &'a Path },
}

impl Input<'_> {
    /// The value when it is a string (a file string, or a UTF-8 variable).
    fn text(&self) -> Option<&str> {
        match self {
            Input::File {
                value: FileValue::Str(text),
                ..
            } => Some(text),
            Input::File { .. } => None,
            Input::Env { text, .. } => text.to_str(),
        }
    }

    /// The directory a relative path in this value is relative to.
    fn base_dir(&self) -> &Path {
        match self {
            Input::File { dir, .. } => dir,
            Input::Env { cwd, .. } => cwd,
        }
    }

    fn is_empty_variable(&self) -> bool {
        matches!(self, Input::Env { text, .. } if text.is_empty())
    }

    fn describe(&self) -> String {
        let described = match self {
            Input::File { value, .. } => value.describe(),
            Input::Env { text, .. } => format!("{:?}", text.to_string_lossy()),
        };
        truncate(described, 80)
    }
}

fn truncate(text: String, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text;
    }
    let kept: String = text.chars().take(max_chars).collect();
    format!("{kept}…")
}

/// Looks up keys in the file and the environment, converts and validates
/// them, and remembers what it was asked for (to reject what it was not).
struct Resolver<'a> {
    file: Option<&'a FileLayer>,
    env: &'a Env,
    cwd: &'a Path,
    /// Every `(section, key)` asked for, in order.
    known_keys: Vec<(String, &'static str)>,
    known_variables: BTreeSet<String>,
    /// The layer each set key came from, by dotted key.
    origins: BTreeMap<String, Origin>,
}

impl<'a> Resolver<'a> {
    fn new(file: Option<&'a FileLayer>, env: &'a Env, cwd: &'a Path) -> Resolver<'a> {
        Resolver {
            file,
            env,
            cwd,
            known_keys: Vec::new(),
            known_variables: BTreeSet::new(),
            origins: BTreeMap::new(),
        }
    }

    /// The value of `section.key` from the environment, else from the file,
    /// else `None`. `alias` is a second, flag-shaped variable name.
    fn get<T>(
        &mut self,
        section: &str,
        key: &'static str,
        alias: Option<&'static str>,
        convert: impl Fn(&Input<'_>) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let dotted = format!("{section}.{key}");
        self.known_keys.push((section.to_owned(), key));
        let variable = variable_name(section, key);
        self.known_variables.insert(variable.clone());
        self.known_variables.extend(alias.map(str::to_owned));

        let mut found = None;
        let file_entry = self.file.and_then(|file| {
            let entry = file
                .entries
                .iter()
                .find(|entry| entry.section == section && entry.key == key)?;
            Some((file, entry))
        });
        if let Some((file, entry)) = file_entry {
            let input = Input::File {
                value: &entry.value,
                dir: &file.dir,
            };
            let origin = Origin::File {
                path: file.path.clone(),
                line: entry.line,
            };
            found = Some((convert_input(&dotted, &input, &origin, &convert)?, origin));
        }

        let set: Vec<(String, &OsStr)> = std::iter::once(variable)
            .chain(alias.map(str::to_owned))
            .filter_map(|name| self.env.get(&name).map(|value| (name, value)))
            .collect();
        if let [(first, _), (second, _)] = set.as_slice() {
            return Err(ConfigError::Rule(format!(
                "environment variables {second} and {first} are both set, and both set \
                 '{dotted}'; unset one of them"
            )));
        }
        if let Some((name, text)) = set.into_iter().next() {
            let input = Input::Env {
                text,
                cwd: self.cwd,
            };
            let origin = Origin::Env(name);
            found = Some((convert_input(&dotted, &input, &origin, &convert)?, origin));
        }

        let Some((value, origin)) = found else {
            return Ok(None);
        };
        self.origins.insert(dotted, origin);
        Ok(Some(value))
    }

    /// [`Resolver::get`] for a key without a flag: overwrites `target` when set.
    fn set<T>(
        &mut self,
        target: &mut T,
        section: &str,
        key: &'static str,
        convert: impl Fn(&Input<'_>) -> Result<T, String>,
    ) -> Result<(), ConfigError> {
        if let Some(value) = self.get(section, key, None, convert)? {
            *target = value;
        }
        Ok(())
    }

    /// The flag's value when given, else the value of the lower layers.
    fn with_flag<T>(
        &mut self,
        dotted: &str,
        flag_name: &'static str,
        flag: Option<T>,
        below_flag: Option<T>,
    ) -> Option<T> {
        if flag.is_some() {
            self.origins
                .insert(dotted.to_owned(), Origin::Flag(flag_name));
            return flag;
        }
        below_flag
    }

    fn origin_of(&self, dotted: &str) -> Origin {
        self.origins.get(dotted).cloned().unwrap_or(Origin::Default)
    }

    /// Rejects the file keys and `RALPH_*` variables nobody asked for.
    fn check_unknown(&self) -> Result<(), ConfigError> {
        if let Some(file) = self.file {
            for entry in &file.entries {
                let is_known = self
                    .known_keys
                    .iter()
                    .any(|(section, key)| *section == entry.section && *key == entry.key);
                if is_known {
                    continue;
                }
                let expected: Vec<&str> = self
                    .known_keys
                    .iter()
                    .filter(|(section, _)| *section == entry.section)
                    .map(|(_, key)| *key)
                    .collect();
                return Err(ConfigError::UnknownKey {
                    key: entry.key.clone(),
                    place: format!("[{}]", entry.section),
                    path: file.path.clone(),
                    line: entry.line,
                    expected: expected.join(", "),
                });
            }
        }
        for name in self.env.variables.keys() {
            if self.known_variables.contains(name) || RUNTIME_VARIABLES.contains(&name.as_str()) {
                continue;
            }
            return Err(ConfigError::UnknownVariable {
                name: name.clone(),
                suggestion: closest(name, &self.known_variables),
            });
        }
        Ok(())
    }
}

fn convert_input<T>(
    dotted: &str,
    input: &Input<'_>,
    origin: &Origin,
    convert: &impl Fn(&Input<'_>) -> Result<T, String>,
) -> Result<T, ConfigError> {
    convert(input).map_err(|expected| ConfigError::InvalidValue {
        key: dotted.to_owned(),
        origin: origin.to_string(),
        got: input.describe(),
        expected,
    })
}

/// The known name nearest to a misspelt one, if it is near enough: one edit
/// per four characters after `RALPH_`, at least one and at most three.
fn closest(name: &str, known: &BTreeSet<String>) -> Option<String> {
    let significant = name.trim_start_matches("RALPH_").chars().count();
    let tolerance = (significant / 4).clamp(1, 3);
    known
        .iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= tolerance)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.clone())
}

/// Levenshtein distance, by characters.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (i, left_char) in left.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, right_char) in right.iter().enumerate() {
            let substitution = previous[j] + usize::from(left_char != *right_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[right.len()]
}

// Converters: each turns one layer's value into a typed value, or says what
// form was expected. `InvalidValue` adds the key, the origin and the value.

/// An optional key: an empty variable means "unset" (overriding the file).
fn optional<T>(
    convert: impl Fn(&Input<'_>) -> Result<T, String>,
) -> impl Fn(&Input<'_>) -> Result<Option<T>, String> {
    move |input| {
        if input.is_empty_variable() {
            return Ok(None);
        }
        convert(input).map(Some)
    }
}

fn duration(input: &Input<'_>) -> Result<Duration, String> {
    if input
        .text()
        .is_some_and(|text| text.trim_start().starts_with('-'))
    {
        return Err(format!(
            "{DURATION_FORM}; {}",
            crate::cli::NEGATIVE_DURATION
        ));
    }
    let parsed = input
        .text()
        .and_then(|text| humantime::parse_duration(text.trim()).ok());
    match parsed {
        Some(duration) if duration <= MAX_DURATION => Ok(duration),
        _ => Err(DURATION_FORM.to_owned()),
    }
}

fn nonzero_duration(input: &Input<'_>) -> Result<Duration, String> {
    match duration(input) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Err(negative) if negative.contains(crate::cli::NEGATIVE_DURATION) => Err(negative),
        _ => Err(format!("{DURATION_FORM}, above zero")),
    }
}

fn whole_number(minimum: u32) -> impl Fn(&Input<'_>) -> Result<u32, String> {
    move |input| {
        let parsed = match input {
            Input::File {
                value: FileValue::Int { digits, radix },
                ..
            } => u32::from_str_radix(digits, *radix).ok(),
            Input::File { .. } => None,
            Input::Env { text, .. } => text
                .to_str()
                .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
                .and_then(|text| text.parse().ok()),
        };
        match parsed {
            Some(count) if count >= minimum => Ok(count),
            _ => Err(format!("a whole number ≥ {minimum} (at most {})", u32::MAX)),
        }
    }
}

fn nonzero_u32(input: &Input<'_>) -> Result<NonZeroU32, String> {
    whole_number(1)(input).and_then(|count| NonZeroU32::new(count).ok_or_else(String::new))
}

fn max_iterations(input: &Input<'_>) -> Result<u32, String> {
    whole_number(1)(input).map_err(|_| {
        "a whole number ≥ 1 (there is no 'unlimited'; leave it unset to run until completion)"
            .to_owned()
    })
}

fn boolean(input: &Input<'_>) -> Result<bool, String> {
    match input {
        Input::File {
            value: FileValue::Bool(flag),
            ..
        } => Ok(*flag),
        Input::Env { text, .. } if *text == "true" => Ok(true),
        Input::Env { text, .. } if *text == "false" => Ok(false),
        _ => Err("true or false".to_owned()),
    }
}

fn dollars(input: &Input<'_>) -> Result<f64, String> {
    let parsed = match input {
        Input::File {
            value: FileValue::Float(text),
            ..
        } => text.parse::<f64>().ok(),
        Input::File {
            value: FileValue::Int { digits, radix },
            ..
        } => i64::from_str_radix(digits, *radix)
            .ok()
            .map(|dollars| dollars as f64),
        Input::File { .. } => None,
        Input::Env { text, .. } => text
            .to_str()
            .and_then(|text| text.trim().parse::<f64>().ok()),
    };
    match parsed {
        Some(dollars) if dollars.is_finite() && dollars > 0.0 => Ok(dollars),
        _ => Err("an amount of US dollars above zero, like 20.0".to_owned()),
    }
}

fn text(input: &Input<'_>) -> Result<String, String> {
    match input.text() {
        Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
        _ => Err("a non-empty string".to_owned()),
    }
}

/// A git author name or email: what git2 accepts in a signature.
fn signature_part(input: &Input<'_>) -> Result<String, String> {
    let text = text(input)?;
    if text.contains(['<', '>', '\n', '\r']) {
        return Err("a non-empty string without '<', '>' or line breaks".to_owned());
    }
    Ok(text)
}

fn choice(input: &Input<'_>, choices: &[&'static str]) -> Result<&'static str, String> {
    input
        .text()
        .and_then(|text| choices.iter().find(|choice| **choice == text).copied())
        .ok_or_else(|| {
            let quoted: Vec<String> = choices
                .iter()
                .map(|choice| format!("\"{choice}\""))
                .collect();
            format!("one of {}", quoted.join(", "))
        })
}

fn string_list(input: &Input<'_>) -> Result<Vec<String>, String> {
    let from_env;
    let value = match input {
        Input::File { value, .. } => *value,
        Input::Env { text, .. } => {
            let parsed = text.to_str().and_then(|text| DeValue::parse(text).ok());
            from_env = parsed.map(|value| FileValue::from_toml(value.get_ref()));
            match &from_env {
                Some(value) => value,
                None => return Err(list_form(input)),
            }
        }
    };
    let FileValue::Array(items) = value else {
        return Err(list_form(input));
    };
    items
        .iter()
        .map(|item| match item {
            FileValue::Str(text) if !text.trim().is_empty() => Ok(text.clone()),
            _ => Err(list_form(input)),
        })
        .collect()
}

/// A list of globs in the syntax of the `globset` crate (`*`, `?`, `[…]`,
/// `{a,b}`, `**`), each checked here so that a broken one stops the start.
fn glob_list(input: &Input<'_>) -> Result<Vec<String>, String> {
    let globs = string_list(input)?;
    for glob in &globs {
        if let Err(error) = crate::gates::compile_glob(glob) {
            return Err(format!(
                "a list of path globs like [\".github/**\", \"*.lock\"] ({glob:?}: {})",
                error.kind()
            ));
        }
    }
    Ok(globs)
}

fn list_form(input: &Input<'_>) -> String {
    match input {
        Input::File { .. } => "a list of non-empty strings like [\"Read\", \"Grep\"]".to_owned(),
        Input::Env { .. } => {
            "a TOML list of non-empty strings like '[\"Read\", \"Grep\"]' or '[]'".to_owned()
        }
    }
}

/// A path, relative to the file's directory or to the current directory.
fn path_value(input: &Input<'_>) -> Result<PathBuf, String> {
    const EXPECTED: &str = "a path (\"~\" is not expanded; write the full path)";
    let path = match input {
        Input::File {
            value: FileValue::Str(text),
            ..
        } => PathBuf::from(text),
        Input::File { .. } => return Err(EXPECTED.to_owned()),
        Input::Env { text, .. } => PathBuf::from(text),
    };
    if path.as_os_str().is_empty() || path.starts_with("~") {
        return Err(EXPECTED.to_owned());
    }
    Ok(input.base_dir().join(path))
}

/// `agent.command`: a bare name is looked up on PATH by the runner; a relative
/// path is made absolute here, so that it does not depend on the child's cwd.
fn command(input: &Input<'_>) -> Result<String, String> {
    const EXPECTED: &str = "a command name on PATH or a path (\"~\" is not expanded)";
    let command = text(input).map_err(|_| EXPECTED.to_owned())?;
    if command.starts_with('~') {
        return Err(EXPECTED.to_owned());
    }
    if !command.contains('/') {
        return Ok(command);
    }
    Ok(input
        .base_dir()
        .join(&command)
        .to_string_lossy()
        .into_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::num::NonZeroU32;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use tempfile::TempDir;

    use super::{AgentKind, Config, ConfigError, Env, OnCorrupt, resolve};
    use crate::cli::{LogArgs, LogFormat, RunArgs};
    use crate::phase::Phase;

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
        assert_eq!(config.breaker.failure_threshold, 5);
        assert_eq!(config.breaker.recovery_timeout, Duration::from_secs(60));
        assert_eq!(
            config.breaker.max_recovery_timeout,
            Duration::from_secs(3600)
        );
        assert_eq!(config.breaker.half_open_max_calls, 1);
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
            .chain(["breaker", "budget", "logging", "state"])
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
        let source = include_str!("config.rs");
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
}
