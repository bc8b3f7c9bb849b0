//! The value parsers: each turns one layer's value ([`Input`]: a file value
//! or a variable's text) into a typed value, or says what form was expected
//! (durations, whole numbers, dollars, choices, lists, paths…).

use std::ffi::OsStr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeValue;

use super::AgentKind;
use super::file::FileValue;
use crate::logging::LogFormat;
use crate::state::OnCorrupt;

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

/// One value as written in a layer, handed to a converter.
pub(super) enum Input<'a> {
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

    pub(super) fn describe(&self) -> String {
        let described = match self {
            Input::File { value, .. } => value.describe(),
            Input::Env { text, .. } => format!("{:?}", text.to_string_lossy()),
        };
        crate::text::head_chars_with_ellipsis(&described, 80)
    }
}

// Converters: each turns one layer's value into a typed value, or says what
// form was expected. `InvalidValue` adds the key, the origin and the value.

/// An optional key: an empty variable means "unset" (overriding the file).
pub(super) fn optional<T>(
    convert: impl Fn(&Input<'_>) -> Result<T, String>,
) -> impl Fn(&Input<'_>) -> Result<Option<T>, String> {
    move |input| {
        if input.is_empty_variable() {
            return Ok(None);
        }
        convert(input).map(Some)
    }
}

pub(super) fn duration(input: &Input<'_>) -> Result<Duration, String> {
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

pub(super) fn nonzero_duration(input: &Input<'_>) -> Result<Duration, String> {
    match duration(input) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Err(negative) if negative.contains(crate::cli::NEGATIVE_DURATION) => Err(negative),
        _ => Err(format!("{DURATION_FORM}, above zero")),
    }
}

pub(super) fn whole_number(minimum: u32) -> impl Fn(&Input<'_>) -> Result<u32, String> {
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

pub(super) fn nonzero_u32(input: &Input<'_>) -> Result<NonZeroU32, String> {
    whole_number(1)(input).and_then(|count| NonZeroU32::new(count).ok_or_else(String::new))
}

pub(super) fn max_iterations(input: &Input<'_>) -> Result<u32, String> {
    whole_number(1)(input).map_err(|_| {
        "a whole number ≥ 1 (there is no 'unlimited'; leave it unset to run until completion)"
            .to_owned()
    })
}

pub(super) fn boolean(input: &Input<'_>) -> Result<bool, String> {
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

pub(super) fn dollars(input: &Input<'_>) -> Result<f64, String> {
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

pub(super) fn text(input: &Input<'_>) -> Result<String, String> {
    match input.text() {
        Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
        _ => Err("a non-empty string".to_owned()),
    }
}

/// A git author name or email: what git2 accepts in a signature.
pub(super) fn signature_part(input: &Input<'_>) -> Result<String, String> {
    let text = text(input)?;
    if text.contains(['<', '>', '\n', '\r']) {
        return Err("a non-empty string without '<', '>' or line breaks".to_owned());
    }
    Ok(text)
}

pub(super) fn choice(input: &Input<'_>, choices: &[&'static str]) -> Result<&'static str, String> {
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

pub(super) fn string_list(input: &Input<'_>) -> Result<Vec<String>, String> {
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
pub(super) fn glob_list(input: &Input<'_>) -> Result<Vec<String>, String> {
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
pub(super) fn path_value(input: &Input<'_>) -> Result<PathBuf, String> {
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
pub(super) fn command(input: &Input<'_>) -> Result<String, String> {
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

/// `agent.kind`.
pub(super) fn agent_kind(input: &Input<'_>) -> Result<AgentKind, String> {
    choice(input, &["claude", "offline"]).map(|kind| match kind {
        "offline" => AgentKind::Offline,
        _ => AgentKind::Claude,
    })
}

/// `phases.<phase>.permission_mode`: a mode `claude --permission-mode` accepts.
pub(super) fn permission_mode(input: &Input<'_>) -> Result<String, String> {
    choice(input, PERMISSION_MODES).map(str::to_owned)
}

/// `logging.level`: a level name.
pub(super) fn log_level(input: &Input<'_>) -> Result<String, String> {
    choice(input, LOG_LEVELS).map(str::to_owned)
}

/// `logging.format`.
pub(super) fn log_format(input: &Input<'_>) -> Result<LogFormat, String> {
    choice(input, &["text", "json"]).map(|format| match format {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    })
}

/// `logging.max_log_files`.
pub(super) fn log_file_count(input: &Input<'_>) -> Result<usize, String> {
    whole_number(1)(input).map(|count| usize::try_from(count).unwrap_or(usize::MAX))
}

/// `state.on_corrupt`.
pub(super) fn on_corrupt(input: &Input<'_>) -> Result<OnCorrupt, String> {
    choice(input, &["refuse", "move-aside"]).map(|action| match action {
        "move-aside" => OnCorrupt::MoveAside,
        _ => OnCorrupt::Refuse,
    })
}

/// `state.keep_cycles`.
pub(super) fn keep_cycles(input: &Input<'_>) -> Result<u32, String> {
    whole_number(1)(input).map_err(|_| {
        "a whole number ≥ 1 (the cycles whose transcripts are kept; there is no \
         'keep everything': set a large number)"
            .to_owned()
    })
}

/// An `http://` or `https://` URL (webhooks, the heartbeat).
pub(super) fn http_url(input: &Input<'_>) -> Result<String, String> {
    const EXPECTED: &str = "an http:// or https:// URL like \"https://ntfy.sh/my-topic\"";
    let text = input.text().map(str::trim).unwrap_or_default();
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(text.to_owned())
        }
        _ => Err(EXPECTED.to_owned()),
    }
}

/// `on = [...]` of a hook or webhook: event types of docs/design.md §11,
/// or `"*"` for all.
pub(super) fn event_list(input: &Input<'_>) -> Result<Vec<String>, String> {
    let expected = || {
        format!(
            "a non-empty list of event types or [\"*\"]; the types are: {}",
            crate::events::EVENT_TYPES.join(", ")
        )
    };
    let names = string_list(input).map_err(|_| expected())?;
    if names.is_empty() {
        return Err(expected());
    }
    if let Some(unknown) = names
        .iter()
        .find(|name| *name != "*" && !crate::events::EVENT_TYPES.contains(&name.as_str()))
    {
        return Err(format!("{} ({unknown:?} is not one)", expected()));
    }
    Ok(names)
}

/// A hook's `command`: a program and its arguments, run without a shell.
pub(super) fn argv(input: &Input<'_>) -> Result<Vec<String>, String> {
    const EXPECTED: &str = "a non-empty list: the program, then its arguments, like \
                            [\"notify-send\", \"ralphd\"] (no shell; write [\"sh\", \"-c\", \"…\"] for one)";
    match string_list(input) {
        Ok(argv) if !argv.is_empty() => Ok(argv),
        _ => Err(EXPECTED.to_owned()),
    }
}

/// A webhook's `format`.
pub(super) fn webhook_format(input: &Input<'_>) -> Result<super::WebhookFormat, String> {
    choice(input, &super::WebhookFormat::NAMES)
        .map(|name| super::WebhookFormat::from_name(name).unwrap_or(super::WebhookFormat::Json))
}

/// A webhook's `header_env`: header names mapped to the names of the
/// environment variables that hold their values (values never come from
/// the file).
pub(super) fn header_env(input: &Input<'_>) -> Result<Vec<(String, String)>, String> {
    const EXPECTED: &str = "an inline table of header names and environment variable names, \
                            like { Authorization = \"NTFY_AUTH\" }";
    let Input::File {
        value: FileValue::Table(entries),
        ..
    } = input
    else {
        return Err(EXPECTED.to_owned());
    };
    entries
        .iter()
        .map(|(header, variable)| {
            let FileValue::Str(variable) = variable else {
                return Err(EXPECTED.to_owned());
            };
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(format!(
                    "{EXPECTED} ({header:?} is not a valid header name)"
                ));
            }
            let is_variable_name = !variable.is_empty()
                && variable
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
            if !is_variable_name {
                return Err(format!(
                    "{EXPECTED} ({variable:?} is not an environment variable name)"
                ));
            }
            Ok((header.clone(), variable.clone()))
        })
        .collect()
}

/// `http.listen`: an IP address and port (`"127.0.0.1:0"`, `"[::1]:8080"`),
/// or `""` for no server.
pub(super) fn listen_address(input: &Input<'_>) -> Result<Option<std::net::SocketAddr>, String> {
    const EXPECTED: &str = "an IP address and port like \"127.0.0.1:0\" (port 0 picks a free one), or \"\" for no server";
    let text = input.text().ok_or_else(|| EXPECTED.to_owned())?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| EXPECTED.to_owned())
}
