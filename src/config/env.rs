//! The `RALPH_*` environment variables: [`Env`] captures them once, and
//! [`variable_name`] names the variable of each `ralph.toml` key.
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
//! | `RALPH_NOTIFY_HEARTBEAT_URL` | `notify.heartbeat_url` | http(s) URL, optional |
//! | `RALPH_NOTIFY_HEARTBEAT_EVERY` | `notify.heartbeat_every` | duration > 0 |
//! | `RALPH_NOTIFY_STALL_AFTER` | `notify.stall_after` | duration (0 = never) |
//! | `RALPH_NOTIFY_QUEUE_SIZE` | `notify.queue_size` | whole number ≥ 1 |
//!
//! `[[hooks]]` and `[[webhooks]]` are read from the file only. A `RALPH_*`
//! variable a webhook's `header_env` names is not an unknown variable.
//! | `RALPH_HTTP_LISTEN` | `http.listen` | `IP:port`, or empty for no server |
//! | `RALPH_HTTP_TOKEN_FILE` | `http.token_file` | file (mode 0600), optional |
//! | `RALPH_HTTP_ALLOWED_HOSTS` | `http.allowed_hosts` | list of host names |
//!
//! `<PHASE>` is `SCAN`, `IDEA`, `CODE_EDIT`, `BACKTEST` or `REPORT`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// The variables the daemon sets for its children; a ralphd started by one of
/// them (a check running ralphd's own tests, say) must not trip over them.
pub(super) const RUNTIME_VARIABLES: [&str; 2] = ["RALPH_PHASE", "RALPH_CYCLE"];

/// The `RALPH_*` variables of the process, captured once. Injected so that
/// tests never touch the real environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Env {
    pub(super) variables: BTreeMap<String, OsString>,
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

    pub(super) fn get(&self, name: &str) -> Option<&OsStr> {
        self.variables.get(name).map(OsString::as_os_str)
    }
}

/// `RALPH_<SECTION>_<KEY>`, upper case, `.` and `-` turned into `_`.
pub(super) fn variable_name(section: &str, key: &str) -> String {
    format!("RALPH_{section}_{key}")
        .to_uppercase()
        .replace(['.', '-'], "_")
}
