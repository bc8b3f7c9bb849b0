//! The resolver: for every key, flag > `RALPH_*` variable > `ralph.toml` >
//! default, every layer validated even when a higher one wins; then the rules
//! that involve more than one key, and the refusal of unknown keys and
//! variables.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use super::destinations::read_destinations;
use super::env::{Env, RUNTIME_VARIABLES, variable_name};
use super::error::{ConfigError, Origin};
use super::file::{FileLayer, read_file};
use super::keys::read_keys;
use super::values::{Input, path_value};
use super::{CONFIG_FILE_NAME, Config, LoadInputs, absolute, resolve_home_in};
use crate::cli::RunArgs;
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

    let mut repo = cwd.to_path_buf();
    let repo_flag = Flag::new("--repo", "RALPH_REPO", run_args.repo.clone());
    resolver.set_flagged(&mut repo, "git", "repo", repo_flag, path_value)?;
    let mut config = Config::for_home(&home, &absolute(cwd, &repo));
    config.config_file = file.as_ref().map(|file| file.path.clone());
    config.verbosity = run_args.log.verbosity();
    config.inputs = LoadInputs {
        run_args: run_args.clone(),
        env: env.clone(),
        cwd: cwd.to_path_buf(),
    };
    read_keys(&mut resolver, &mut config, run_args)?;
    read_destinations(
        file.as_ref(),
        &mut config.notify,
        &mut resolver.known_variables,
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
            config.breaker.settings.max_recovery_timeout,
        ),
        (
            "breaker.recovery_timeout",
            config.breaker.settings.recovery_timeout,
        ),
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

/// A key's command-line flag, with the short variable that goes with it
/// (`--sleep` and `RALPH_SLEEP` for `loop.sleep_between_iterations`).
pub(super) struct Flag<T> {
    name: &'static str,
    variable: &'static str,
    /// `None` when the flag is not given.
    value: Option<T>,
}

impl<T> Flag<T> {
    pub(super) fn new(name: &'static str, variable: &'static str, value: Option<T>) -> Flag<T> {
        Flag {
            name,
            variable,
            value,
        }
    }
}

/// Looks up keys in the file and the environment, converts and validates
/// them, and remembers what it was asked for (to reject what it was not).
pub(super) struct Resolver<'a> {
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
    pub(super) fn set<T>(
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

    /// [`Resolver::get`] for a key with a flag and a flag-shaped variable:
    /// overwrites `target` with the flag's value when given, else with the
    /// lower layers' value when one sets it.
    pub(super) fn set_flagged<T>(
        &mut self,
        target: &mut T,
        section: &str,
        key: &'static str,
        flag: Flag<T>,
        convert: impl Fn(&Input<'_>) -> Result<T, String>,
    ) -> Result<(), ConfigError> {
        let below_flag = self.get(section, key, Some(flag.variable), convert)?;
        let dotted = format!("{section}.{key}");
        if let Some(value) = self.with_flag(&dotted, flag.name, flag.value, below_flag) {
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
