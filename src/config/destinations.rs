//! The arrays of tables `[[hooks]]` and `[[webhooks]]` (docs/design.md §12):
//! each entry read from the file alone (they have no variables or flags),
//! every key validated with the same value parsers and messages as the
//! plain keys.

use std::collections::BTreeSet;
use std::time::Duration;

use super::error::{ConfigError, Origin};
use super::file::{FileItem, FileLayer};
use super::values::{
    Input, argv, event_list, header_env, http_url, nonzero_duration, webhook_format, whole_number,
};
use super::{DEFAULT_NOTIFY_ON, HookSettings, NotifySettings, WebhookFormat, WebhookSettings};

const HOOK_KEYS: [&str; 3] = ["on", "command", "timeout"];
const WEBHOOK_KEYS: [&str; 6] = [
    "url",
    "on",
    "format",
    "header_env",
    "timeout",
    "max_attempts",
];

/// Reads every `[[hooks]]` and `[[webhooks]]` of the file into `notify`.
/// The `RALPH_*` variables that `header_env` names become known, so that
/// the check of unknown variables lets them through.
pub(super) fn read_destinations(
    file: Option<&FileLayer>,
    notify: &mut NotifySettings,
    known_variables: &mut BTreeSet<String>,
) -> Result<(), ConfigError> {
    let Some(file) = file else { return Ok(()) };
    for item in &file.items {
        let reader = ItemReader { file, item };
        match item.array {
            "hooks" => {
                reader.check_keys(&HOOK_KEYS)?;
                notify.hooks.push(HookSettings {
                    on: reader.get("on", event_list)?.unwrap_or_else(default_on),
                    command: reader.require("command", argv)?,
                    timeout: reader
                        .get("timeout", nonzero_duration)?
                        .unwrap_or(Duration::from_secs(30)),
                });
            }
            _ => {
                reader.check_keys(&WEBHOOK_KEYS)?;
                let header_env = reader.get("header_env", header_env)?.unwrap_or_default();
                known_variables.extend(
                    header_env
                        .iter()
                        .map(|(_, variable)| variable.clone())
                        .filter(|variable| variable.starts_with("RALPH_")),
                );
                notify.webhooks.push(WebhookSettings {
                    url: reader.require("url", http_url)?,
                    on: reader.get("on", event_list)?.unwrap_or_else(default_on),
                    format: reader
                        .get("format", webhook_format)?
                        .unwrap_or(WebhookFormat::Json),
                    header_env,
                    timeout: reader
                        .get("timeout", nonzero_duration)?
                        .unwrap_or(Duration::from_secs(10)),
                    max_attempts: reader.get("max_attempts", whole_number(1))?.unwrap_or(5),
                });
            }
        }
    }
    Ok(())
}

fn default_on() -> Vec<String> {
    DEFAULT_NOTIFY_ON.map(str::to_owned).to_vec()
}

/// One entry of an array of tables, with what messages say of it.
struct ItemReader<'a> {
    file: &'a FileLayer,
    item: &'a FileItem,
}

impl ItemReader<'_> {
    /// `[[webhooks]] #2`.
    fn place(&self) -> String {
        format!("[[{}]] #{}", self.item.array, self.item.number)
    }

    fn check_keys(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self
            .item
            .entries
            .iter()
            .find(|entry| !known.contains(&entry.key.as_str()))
        {
            Some(entry) => Err(ConfigError::UnknownKey {
                key: entry.key.clone(),
                place: self.place(),
                path: self.file.path.clone(),
                line: entry.line,
                expected: known.join(", "),
            }),
            None => Ok(()),
        }
    }

    fn get<T>(
        &self,
        key: &str,
        convert: impl Fn(&Input<'_>) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(entry) = self.item.entries.iter().find(|entry| entry.key == key) else {
            return Ok(None);
        };
        let input = Input::File {
            value: &entry.value,
            dir: &self.file.dir,
        };
        let origin = Origin::File {
            path: self.file.path.clone(),
            line: entry.line,
        };
        convert(&input)
            .map(Some)
            .map_err(|expected| ConfigError::InvalidValue {
                key: format!("{}.{key}", self.place()),
                origin: origin.to_string(),
                got: input.describe(),
                expected,
            })
    }

    fn require<T>(
        &self,
        key: &str,
        convert: impl Fn(&Input<'_>) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.get(key, convert)?.ok_or_else(|| {
            ConfigError::Rule(format!(
                "{} in {} line {} has no '{key}'; add one (see the commented example in `ralphd init`'s ralph.toml)",
                self.place(),
                self.file.path.display(),
                self.item.line
            ))
        })
    }
}
