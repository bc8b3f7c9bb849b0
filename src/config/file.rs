//! Reads and parses `ralph.toml` with toml's spanned parser into a
//! [`FileLayer`]: every key of every known table, with its line, so that each
//! message names the key, the file and the line. Unknown tables and top-level
//! keys are refused here; unknown keys inside a table by the resolver.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::error::ConfigError;
use crate::phase::Phase;

/// The top-level tables of `ralph.toml`.
const SECTIONS: [&str; 13] = [
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
    "notify",
    "http",
];

/// The arrays of tables of `ralph.toml`, any number of each (docs/design.md §12).
pub(super) const TABLE_ARRAYS: [&str; 2] = ["hooks", "webhooks"];

/// The parsed config file: every key of every known table, in file order.
pub(super) struct FileLayer {
    /// Absolute, canonical.
    pub(super) path: PathBuf,
    /// The directory relative paths in the file are relative to.
    pub(super) dir: PathBuf,
    pub(super) entries: Vec<FileEntry>,
    /// Each `[[hooks]]` and `[[webhooks]]` table, in file order.
    pub(super) items: Vec<FileItem>,
}

/// One table of an array of tables (`[[hooks]]`): its keys, kept apart from
/// the keys of the plain tables.
pub(super) struct FileItem {
    /// `hooks` or `webhooks`.
    pub(super) array: &'static str,
    /// 1-based, in file order.
    pub(super) number: usize,
    pub(super) line: usize,
    pub(super) entries: Vec<FileEntry>,
}

pub(super) struct FileEntry {
    /// `loop`, `phases.code-edit`, …
    pub(super) section: String,
    pub(super) key: String,
    pub(super) value: FileValue,
    pub(super) line: usize,
}

/// A TOML value, detached from the parser's borrowed representation.
#[derive(Clone, Debug)]
pub(super) enum FileValue {
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
    /// An inline table's keys and values (`{ Authorization = "VAR" }`).
    Table(Vec<(String, FileValue)>),
}

impl FileValue {
    pub(super) fn from_toml(value: &DeValue<'_>) -> FileValue {
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
            DeValue::Table(table) => FileValue::Table(
                table
                    .iter()
                    .map(|(key, value)| {
                        (
                            key.get_ref().to_string(),
                            FileValue::from_toml(value.get_ref()),
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// How the value is shown in a message.
    pub(super) fn describe(&self) -> String {
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
            FileValue::Table(_) => "a table".to_owned(),
        }
    }
}

/// Reads and parses a config file. A missing file is `None` when it is the
/// default one and an error when a flag or variable named it.
pub(super) fn read_file(
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
    let mut items = Vec::new();
    for (name, value) in root.get_ref().iter() {
        let line = line_of(text, name.span().start);
        let name: &str = name.get_ref();
        if let Some(array) = TABLE_ARRAYS.iter().find(|array| **array == name) {
            let tables = match value.get_ref() {
                DeValue::Array(tables) => tables,
                _ => {
                    return Err(ConfigError::NotATableArray {
                        name: name.to_owned(),
                        path: path.to_path_buf(),
                        line,
                    });
                }
            };
            for (index, table) in tables.iter().enumerate() {
                let DeValue::Table(keys) = table.get_ref() else {
                    return Err(ConfigError::NotATableArray {
                        name: name.to_owned(),
                        path: path.to_path_buf(),
                        line,
                    });
                };
                let mut item = FileItem {
                    array,
                    number: index + 1,
                    line: line_of(text, table.span().start),
                    entries: Vec::new(),
                };
                collect_entries(text, name, keys, &mut item.entries);
                items.push(item);
            }
        } else if name == "phases" {
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
        items,
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

/// `[loop], [agent], [phases.<phase>], …, [[hooks]], [[webhooks]]` for messages.
pub(super) fn table_list() -> String {
    SECTIONS
        .map(|section| match section {
            "phases" => "[phases.<phase>]".to_owned(),
            _ => format!("[{section}]"),
        })
        .into_iter()
        .chain(TABLE_ARRAYS.map(|array| format!("[[{array}]]")))
        .collect::<Vec<_>>()
        .join(", ")
}
