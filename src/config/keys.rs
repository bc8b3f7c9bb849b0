//! The list of `ralph.toml` keys: one line per key, naming the key, the
//! [`Config`] field it sets and the value parser that reads it (flag-backed
//! keys also name their flag and its short variable). The order is the
//! template's: it is the order in which keys are read, reported when two are
//! wrong, and listed in "expected one of" messages.
//!
//! Adding a key: add its field and default to the settings in `config.rs`,
//! one line here, a line in the table of `env.rs`'s docs, and the key to
//! `templates/ralph.toml` (tests check the last two against this list).

use super::Config;
use super::error::ConfigError;
use super::resolve::{Flag, Resolver};
use super::values::{
    agent_kind, boolean, command, dollars, duration, glob_list, http_url, keep_cycles,
    listen_address, log_file_count, log_format, log_level, max_iterations, nonzero_duration,
    nonzero_u32, on_corrupt, optional, path_value, permission_mode, signature_part, string_list,
    text, whole_number,
};
use crate::cli::RunArgs;
use crate::phase::Phase;

/// `key!(resolver, section.key => target, parser)` reads `section.key` into
/// `target` when a layer sets it; `key!(resolver, config.section.key, parser)`
/// is the same when the target is the field of that name;
/// `key!(resolver, (table).key => …)` names the table at run time; a last
/// `flag` argument adds a command-line flag above the variables.
macro_rules! key {
    ($resolver:ident, $config:ident . $section:ident . $key:ident, $parse:expr) => {
        key!($resolver, $section.$key => $config.$section.$key, $parse)
    };
    ($resolver:ident, $section:ident . $key:ident => $target:expr, $parse:expr) => {
        $resolver.set(&mut $target, stringify!($section), stringify!($key), $parse)?
    };
    ($resolver:ident, ($section:expr) . $key:ident => $target:expr, $parse:expr) => {
        $resolver.set(&mut $target, &$section, stringify!($key), $parse)?
    };
    ($resolver:ident, $section:ident . $key:ident => $target:expr, $parse:expr, $flag:expr) => {
        $resolver.set_flagged(&mut $target, stringify!($section), stringify!($key), $flag, $parse)?
    };
}

/// Reads every key but `git.repo` (which [`super::resolve::resolve`] needs
/// first) into `config`: flag > variable > file, else the default already in
/// `config`.
pub(super) fn read_keys(
    r: &mut Resolver<'_>,
    config: &mut Config,
    flags: &RunArgs,
) -> Result<(), ConfigError> {
    let sleep = Flag::new("--sleep", "RALPH_SLEEP", flags.sleep);
    let max_iterations_flag = Flag::new(
        "--max-iterations",
        "RALPH_MAX_ITERATIONS",
        flags.max_iterations.map(Some),
    );
    let allow_dirty = Flag::new(
        "--allow-dirty",
        "RALPH_ALLOW_DIRTY",
        flags.allow_dirty.then_some(true),
    );
    let format = Flag::new("--log-format", "RALPH_LOG_FORMAT", flags.log.log_format);

    key!(r, loop.sleep_between_iterations => config.sleep_between_iterations, duration, sleep);
    key!(r, loop.max_iterations => config.max_iterations, optional(max_iterations), max_iterations_flag);

    key!(r, config.agent.kind, agent_kind);
    key!(r, config.agent.command, command);
    key!(r, config.agent.model, optional(text));
    key!(r, config.agent.fallback_model, optional(text));
    key!(r, config.agent.max_turns, optional(whole_number(1)));
    key!(r, config.agent.phase_timeout, nonzero_duration);
    key!(r, config.agent.idle_timeout, nonzero_duration);
    key!(r, config.agent.stop_grace, duration);
    key!(r, config.agent.version_timeout, nonzero_duration);
    key!(r, config.agent.max_attempts, whole_number(1));
    key!(r, config.agent.retry_base_delay, duration);
    key!(r, config.agent.retry_max_delay, duration);
    key!(r, config.agent.usage_limit_margin, duration);
    key!(r, config.agent.usage_limit_fallback_wait, nonzero_duration);
    key!(r, config.agent.cli_max_retries, whole_number(0));
    key!(r, config.agent.offline_complete_after, whole_number(1));
    key!(r, config.agent.allow_bypass_permissions, boolean);

    for phase in Phase::ALL {
        let section = format!("phases.{}", phase.name());
        let phase = config.phases.get_mut(phase);
        key!(r, (section).permission_mode => phase.permission_mode, optional(permission_mode));
        key!(r, (section).allowed_tools => phase.allowed_tools, string_list);
        key!(r, (section).disallowed_tools => phase.disallowed_tools, string_list);
    }

    key!(r, config.backtest.checks, string_list);
    key!(r, config.backtest.check_timeout, nonzero_duration);

    key!(r, git.allow_dirty => config.allow_dirty, boolean, allow_dirty);
    key!(r, config.git.auto_commit, boolean);
    key!(r, config.git.author_name, signature_part);
    key!(r, config.git.author_email, signature_part);
    key!(r, config.git.run_hooks, boolean);

    key!(r, config.gates.max_changed_files, whole_number(0));
    key!(r, config.gates.max_changed_lines, whole_number(0));
    key!(r, config.gates.protected_paths, glob_list);
    key!(r, config.gates.secret_scan, boolean);

    key!(r, config.rate_limit.requests_per_minute, nonzero_u32);
    key!(r, config.rate_limit.requests_per_hour, nonzero_u32);

    let breaker = &mut config.breaker.settings;
    key!(r, breaker.failure_threshold => breaker.failure_threshold, nonzero_u32);
    key!(r, breaker.recovery_timeout => breaker.recovery_timeout, duration);
    key!(r, breaker.max_recovery_timeout => breaker.max_recovery_timeout, duration);
    key!(r, breaker.half_open_max_calls => breaker.half_open_max_calls, nonzero_u32);
    key!(r, config.breaker.halt_on_open, boolean);

    key!(r, config.budget.max_cost_usd, optional(dollars));
    key!(r, config.budget.max_cost_per_phase_usd, optional(dollars));

    key!(r, config.logging.level, log_level);
    key!(r, logging.format => config.logging.format, log_format, format);
    key!(r, config.logging.max_log_files, log_file_count);

    key!(r, config.state.on_corrupt, on_corrupt);
    key!(r, config.state.keep_cycles, keep_cycles);
    key!(r, config.state.compress_after, whole_number(0));
    key!(r, config.state.max_transcript_mb, whole_number(1));

    key!(r, config.notify.heartbeat_url, optional(http_url));
    key!(r, config.notify.heartbeat_every, nonzero_duration);
    key!(r, config.notify.stall_after, duration);
    key!(r, config.notify.queue_size, whole_number(1));
    key!(r, config.http.listen, listen_address);
    key!(r, config.http.token_file, optional(path_value));
    key!(r, config.http.allowed_hosts, string_list);
    Ok(())
}
