//! [`ConfigError`], the one-line messages of a bad configuration, and
//! [`Origin`], how they name the layer a value came from.

use std::fmt;
use std::path::PathBuf;

use super::file::table_list;
use crate::phase::Phase;

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

    #[error(
        "'{name}' in {} line {line} must be an array of tables: write each as [[{name}]] followed by its keys",
        path.display()
    )]
    NotATableArray {
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

/// Where a value came from, as named in messages.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Origin {
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
