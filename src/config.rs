//! Turns `RunArgs`, the `RALPH_*` environment and `ralph.toml` into one
//! validated, immutable [`Config`]. Every default and every validation rule of
//! the daemon's settings lives here (docs/design.md §10).
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
//! Where a setting is a type of a leaf module below it
//! (`breaker::BreakerSettings`, `state::OnCorrupt`, `logging::LogFormat`),
//! `Config` holds that type itself, so nobody converts between look-alikes.
//!
//! The work is split by stage, as ripgrep splits its flags into low-level and
//! high-level arguments: [`file`](mod@file) reads and parses `ralph.toml` (keeping each
//! key's line), [`env`](mod@env) captures the `RALPH_*` variables (their table is in its
//! docs), [`values`] turns one written value into a typed one or says what form
//! was expected, [`keys`] lists every key on one line with its field and value
//! parser, [`resolve`] layers flag > variable > file > default for each of
//! them, and [`error`] holds [`ConfigError`]. This file holds what the rest of
//! the daemon sees: [`Config`] and its settings, `load`, `reload` and
//! [`resolve_home`].

mod destinations;
mod env;
mod error;
mod file;
mod keys;
mod resolve;
mod values;

#[cfg(test)]
pub(crate) mod tests;

use std::num::NonZeroU32;
use std::ops::Index;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::breaker::BreakerSettings;
use crate::cli::RunArgs;
use crate::logging::LogFormat;
use crate::phase::Phase;
use crate::state::OnCorrupt;

pub(crate) use env::Env;
pub(crate) use error::ConfigError;
use error::Origin;

/// The file read from the home when neither `--config` nor `RALPH_CONFIG` is given.
pub(crate) const CONFIG_FILE_NAME: &str = "ralph.toml";

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
    pub(crate) breaker: BreakerSection,
    pub(crate) budget: BudgetSettings,
    pub(crate) logging: LoggingSettings,
    pub(crate) state: StateSettings,
    pub(crate) notify: NotifySettings,
    pub(crate) http: HttpSettings,
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
    /// The built-in deterministic simulator (docs/design.md §9).
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
    /// docs/design.md §5: scan, idea and report are read-only, backtest is read-only
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

/// The diff gates applied to code-edit's work (docs/design.md §14).
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

/// `[breaker]`: the circuit breaker's own settings, and what the daemon does
/// when it opens.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BreakerSection {
    pub(crate) settings: BreakerSettings,
    /// Stop the run (exit 1) when the breaker opens, instead of waiting.
    pub(crate) halt_on_open: bool,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            settings: BreakerSettings {
                failure_threshold: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
                recovery_timeout: Duration::from_secs(60),
                max_recovery_timeout: Duration::from_secs(60 * 60),
                half_open_max_calls: NonZeroU32::MIN,
            },
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
    /// What to do with a state file that cannot be parsed.
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
            on_corrupt: OnCorrupt::Refuse,
            keep_cycles: 500,
            compress_after: 50,
            max_transcript_mb: 64,
        }
    }
}

/// `[notify]`, `[[hooks]]` and `[[webhooks]]`: how the daemon tells the
/// user what happens (docs/design.md §12).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NotifySettings {
    /// The dead-man's switch (healthchecks.io convention); `None` = off.
    pub(crate) heartbeat_url: Option<String>,
    pub(crate) heartbeat_every: Duration,
    /// `stalled` after this long without a verified commit; zero = never.
    pub(crate) stall_after: Duration,
    /// How many notifications may wait for one hook or webhook; past it the
    /// oldest is dropped (and counted).
    pub(crate) queue_size: u32,
    pub(crate) hooks: Vec<HookSettings>,
    pub(crate) webhooks: Vec<WebhookSettings>,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            heartbeat_url: None,
            heartbeat_every: Duration::from_secs(5 * 60),
            stall_after: Duration::from_secs(3 * 60 * 60),
            queue_size: 256,
            hooks: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

/// The event types a `[[hooks]]` or `[[webhooks]]` entry gets when it
/// names none: the ones worth waking up for.
pub(crate) const DEFAULT_NOTIFY_ON: [&str; 3] = ["daemon_stopped", "stalled", "breaker_changed"];

/// One `[[hooks]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HookSettings {
    /// Event types, or `*` for all.
    pub(crate) on: Vec<String>,
    /// The program and its arguments (no shell).
    pub(crate) command: Vec<String>,
    pub(crate) timeout: Duration,
}

/// One `[[webhooks]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WebhookSettings {
    /// An http or https URL.
    pub(crate) url: String,
    /// Event types, or `*` for all.
    pub(crate) on: Vec<String>,
    pub(crate) format: WebhookFormat,
    /// (header name, name of the environment variable holding its value).
    pub(crate) header_env: Vec<(String, String)>,
    /// Per request.
    pub(crate) timeout: Duration,
    /// Tries per event, the first included.
    pub(crate) max_attempts: u32,
}

/// The body a webhook receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WebhookFormat {
    /// The event's JSON line as is.
    Json,
    /// Slack incoming webhook: `{"text": …, "blocks": […]}`.
    Slack,
    /// ntfy: a plain-text body with `Title`, `Tags`, `Priority` headers.
    Ntfy,
    /// Discord webhook: `{"content": …, "embeds": […]}`.
    Discord,
}

impl WebhookFormat {
    pub(crate) const NAMES: [&str; 4] = ["json", "slack", "ntfy", "discord"];

    pub(crate) fn from_name(name: &str) -> Option<WebhookFormat> {
        match name {
            "json" => Some(WebhookFormat::Json),
            "slack" => Some(WebhookFormat::Slack),
            "ntfy" => Some(WebhookFormat::Ntfy),
            "discord" => Some(WebhookFormat::Discord),
            _ => None,
        }
    }
}

/// `[http]`: the dashboard and API server (docs/design.md §11).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HttpSettings {
    /// Where the server listens; `None` (`listen = ""`) turns it off. Port 0
    /// picks a free port.
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// The bearer token's file; required for a non-loopback `listen`.
    pub(crate) token_file: Option<PathBuf>,
    /// Host names (with or without a port) accepted besides the bound
    /// address, `localhost` and `127.0.0.1` (a reverse proxy's name, say).
    pub(crate) allowed_hosts: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            token_file: None,
            allowed_hosts: Vec::new(),
        }
    }
}

impl StateSettings {
    /// [`StateSettings::max_transcript_mb`] in bytes.
    pub(crate) fn max_transcript_bytes(&self) -> u64 {
        u64::from(self.max_transcript_mb) * 1024 * 1024
    }
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
        resolve::resolve(run_args, env, cwd).map(|(config, _known)| config)
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
            breaker: BreakerSection::default(),
            budget: BudgetSettings::default(),
            logging: LoggingSettings::default(),
            state: StateSettings::default(),
            notify: NotifySettings::default(),
            http: HttpSettings::default(),
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
/// (docs/design.md §2): a typo must not read as "ralphd has never run here".
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
