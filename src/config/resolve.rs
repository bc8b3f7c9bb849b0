//! The resolver: for every key, flag > `RALPH_*` variable > `ralph.toml` >
//! default, every layer validated even when a higher one wins; then the rules
//! that involve more than one key, and the refusal of unknown keys and
//! variables.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use super::env::{Env, RUNTIME_VARIABLES, variable_name};
use super::error::{ConfigError, Origin};
use super::file::{FileLayer, read_file};
use super::values::{
    Input, LOG_LEVELS, PERMISSION_MODES, boolean, choice, command, dollars, duration, glob_list,
    max_iterations, nonzero_duration, nonzero_u32, optional, path_value, signature_part,
    string_list, text, whole_number,
};
use super::{
    AgentKind, CONFIG_FILE_NAME, Config, LoadInputs, OnCorrupt, absolute, resolve_home_in,
};
use crate::cli::{LogFormat, RunArgs};
use crate::phase::Phase;

/// The keys and variables a resolution asked for; tests check the template
/// and the docs against it.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Known {
    pub(super) keys: Vec<(String, &'static str)>,
    pub(super) variables: BTreeSet<String>,
}

pub(super) fn resolve(
    run_args: &RunArgs,
    env: &Env,
    cwd: &Path,
) -> Result<(Config, Known), ConfigError> {
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
