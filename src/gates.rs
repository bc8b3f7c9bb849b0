//! The diff gates of docs/design.md §14: the rules code-edit's work must pass before it
//! is verified — at most so many changed files and lines, no protected path
//! touched, no credential added. A violation is typed and names the gate; the
//! cycle rolls back with it as the reason.
//!
//! Pure: `git` provides the changed paths, their line counts and the added
//! lines; the credential shapes come from [`crate::redact::credential_spans`].
//! Nothing here reads files or logs, and a secret's value never leaves
//! [`SecretScan::added_line`]: findings hold only the file and the line.

use std::fmt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use crate::config::GateSettings;

/// How many paths or lines a violation's message lists before "and N more".
const LISTED: usize = 10;

/// Compiles one `protected_paths` glob: `*` and `?` stay within a directory,
/// `**` spans any number of them, `{a,b}` and `[…]` as usual.
pub(crate) fn compile_glob(glob: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(glob)
        .literal_separator(true)
        .build()?
        .compile_matcher())
}

/// The configured gates, ready to check a diff.
pub(crate) struct Gates {
    max_changed_files: u32,
    max_changed_lines: u32,
    protected: Vec<(String, GlobMatcher)>,
    secret_scan: bool,
}

impl Gates {
    /// Builds the gates from the validated settings (an invalid glob has
    /// already stopped the start-up in `config`).
    pub(crate) fn new(settings: &GateSettings) -> Result<Gates, globset::Error> {
        let protected = settings
            .protected_paths
            .iter()
            .map(|glob| Ok((glob.clone(), compile_glob(glob)?)))
            .collect::<Result<_, globset::Error>>()?;
        Ok(Gates {
            max_changed_files: settings.max_changed_files,
            max_changed_lines: settings.max_changed_lines,
            protected,
            secret_scan: settings.secret_scan,
        })
    }

    pub(crate) fn scans_secrets(&self) -> bool {
        self.secret_scan
    }

    /// The size and path gates over the changed files: each path (relative to
    /// the work tree) with its changed lines (added plus removed).
    pub(crate) fn check_changes<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a Path, usize)>,
    ) -> Vec<Violation> {
        let mut file_count = 0usize;
        let mut line_count = 0usize;
        let mut protected = Vec::new();
        for (path, lines) in files {
            file_count += 1;
            line_count += lines;
            if let Some(glob) = self.protecting(path) {
                protected.push((path.to_path_buf(), glob.to_owned()));
            }
        }
        let mut violations = Vec::new();
        let over = |count: usize, max: u32| max > 0 && count > max as usize;
        if over(file_count, self.max_changed_files) {
            violations.push(Violation::TooManyFiles {
                changed: file_count,
                max: self.max_changed_files,
            });
        }
        if over(line_count, self.max_changed_lines) {
            violations.push(Violation::TooManyLines {
                changed: line_count,
                max: self.max_changed_lines,
            });
        }
        if !protected.is_empty() {
            violations.push(Violation::ProtectedPaths { paths: protected });
        }
        violations
    }

    /// The first glob that matches `path` or one of its directories (a glob
    /// naming a directory protects everything in it).
    fn protecting(&self, path: &Path) -> Option<&str> {
        self.protected
            .iter()
            .find(|(_, matcher)| path.ancestors().any(|part| matcher.is_match(part)))
            .map(|(glob, _)| glob.as_str())
    }
}

/// Where an added line was found: the final work tree, or one of the
/// agent's own commits (which may have removed it again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    WorkTree,
    /// The commit's short hash.
    Commit(String),
}

/// One added line that holds a credential. Never holds the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SecretLine {
    pub(crate) path: PathBuf,
    /// 1-based, in the new version of the file.
    pub(crate) line: u32,
    pub(crate) found: Found,
}

impl fmt::Display for SecretLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)?;
        if let Found::Commit(commit) = &self.found {
            write!(f, " (in the agent's commit {commit})")?;
        }
        Ok(())
    }
}

/// The secret scan over added lines, fed one line at a time in diff order.
#[derive(Default)]
pub(crate) struct SecretScan {
    found: Vec<SecretLine>,
    /// Inside a private key block: its file and the last line seen, so the
    /// key's body lines count as secret too.
    key_block: Option<(Found, PathBuf, u32)>,
}

impl SecretScan {
    /// Looks at one added line (`content` without its newline).
    pub(crate) fn added_line(&mut self, found: Found, path: &Path, line: u32, content: &[u8]) {
        let text = String::from_utf8_lossy(content);
        let continues_block = self
            .key_block
            .as_ref()
            .is_some_and(|(in_found, in_path, last)| {
                *in_found == found && in_path == path && line == last + 1
            });
        let spans = crate::redact::credential_spans(&text);
        let lower = text.to_ascii_lowercase();
        if continues_block {
            self.key_block =
                (!lower.contains("-----end ")).then(|| (found.clone(), path.to_path_buf(), line));
        } else {
            self.key_block = None;
            if lower.contains("-----begin ") && lower.contains("private key") {
                self.key_block = Some((found.clone(), path.to_path_buf(), line));
            }
            if spans.is_empty() {
                return;
            }
        }
        self.found.push(SecretLine {
            path: path.to_path_buf(),
            line,
            found,
        });
    }

    /// The secret_scan violation, if any line held a credential.
    pub(crate) fn finish(self) -> Option<Violation> {
        (!self.found.is_empty()).then_some(Violation::Secrets { lines: self.found })
    }
}

/// A gate the diff does not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    TooManyFiles {
        changed: usize,
        max: u32,
    },
    TooManyLines {
        changed: usize,
        max: u32,
    },
    /// Each touched path with the glob that protects it.
    ProtectedPaths {
        paths: Vec<(PathBuf, String)>,
    },
    Secrets {
        lines: Vec<SecretLine>,
    },
    /// Paths holding the user's own uncommitted changes (`--allow-dirty`)
    /// that the agent changed: always refused, so that the rollback puts the
    /// user's work back.
    UserFiles {
        paths: Vec<PathBuf>,
    },
}

impl Violation {
    /// The gate's key in `[gates]` (`user_files`, always on, is not configurable).
    pub(crate) fn gate(&self) -> &'static str {
        match self {
            Violation::TooManyFiles { .. } => "max_changed_files",
            Violation::TooManyLines { .. } => "max_changed_lines",
            Violation::ProtectedPaths { .. } => "protected_paths",
            Violation::Secrets { .. } => "secret_scan",
            Violation::UserFiles { .. } => "user_files",
        }
    }

    /// The lines to mask in the saved attempt, by file: the secrets still in
    /// the work tree.
    pub(crate) fn lines_to_mask(&self) -> Vec<(PathBuf, Vec<u32>)> {
        let Violation::Secrets { lines } = self else {
            return Vec::new();
        };
        let mut masks: Vec<(PathBuf, Vec<u32>)> = Vec::new();
        for secret in lines
            .iter()
            .filter(|secret| secret.found == Found::WorkTree)
        {
            match masks.iter_mut().find(|(path, _)| *path == secret.path) {
                Some((_, numbers)) => numbers.push(secret.line),
                None => masks.push((secret.path.clone(), vec![secret.line])),
            }
        }
        masks
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gate = self.gate();
        match self {
            Violation::TooManyFiles { changed, max } => {
                write!(f, "{gate}: {changed} files changed, at most {max} allowed")
            }
            Violation::TooManyLines { changed, max } => {
                write!(f, "{gate}: {changed} lines changed, at most {max} allowed")
            }
            Violation::ProtectedPaths { paths } => {
                let listed = paths
                    .iter()
                    .map(|(path, glob)| format!("{} (matches {glob:?})", path.display()));
                write!(f, "{gate}: the agent changed {}", list(listed, paths.len()))
            }
            Violation::Secrets { lines } => {
                let listed = lines.iter().map(ToString::to_string);
                write!(
                    f,
                    "{gate}: a credential was added at {} (values not shown)",
                    list(listed, lines.len())
                )
            }
            Violation::UserFiles { paths } => {
                let listed = paths.iter().map(|path| path.display().to_string());
                write!(
                    f,
                    "{gate}: the agent changed the user's own uncommitted changes in {} (--allow-dirty)",
                    list(listed, paths.len())
                )
            }
        }
    }
}

/// The reason a cycle records for the violations: every gate, named.
pub(crate) fn reason(violations: &[Violation]) -> String {
    let parts: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!("diff gate failed: {}", parts.join("; "))
}

fn list(items: impl Iterator<Item = String>, total: usize) -> String {
    let mut shown: Vec<String> = items.take(LISTED).collect();
    if total > LISTED {
        shown.push(format!("and {} more", total - LISTED));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gates(configure: impl FnOnce(&mut GateSettings)) -> Gates {
        let mut settings = GateSettings::default();
        configure(&mut settings);
        Gates::new(&settings).unwrap()
    }

    fn check(gates: &Gates, files: &[(&str, usize)]) -> Vec<&'static str> {
        gates
            .check_changes(files.iter().map(|(path, lines)| (Path::new(*path), *lines)))
            .iter()
            .map(Violation::gate)
            .collect()
    }

    #[test]
    fn size_gates_count_files_and_lines_and_zero_means_no_limit() {
        let small = gates(|s| {
            s.max_changed_files = 2;
            s.max_changed_lines = 10;
        });
        type Case<'a> = (&'a [(&'a str, usize)], &'a [&'a str]);
        let cases: [Case<'_>; 5] = [
            (&[], &[]),
            (&[("a", 5), ("b", 5)], &[]),
            (&[("a", 1), ("b", 1), ("c", 1)], &["max_changed_files"]),
            (&[("a", 11)], &["max_changed_lines"]),
            (
                &[("a", 4), ("b", 4), ("c", 4)],
                &["max_changed_files", "max_changed_lines"],
            ),
        ];
        for (files, expected) in cases {
            assert_eq!(check(&small, files), expected, "{files:?}");
        }
        let unlimited = gates(|s| {
            s.max_changed_files = 0;
            s.max_changed_lines = 0;
        });
        let many: Vec<(String, usize)> = (0..500).map(|i| (format!("f{i}"), 100)).collect();
        let many: Vec<(&str, usize)> = many.iter().map(|(p, l)| (p.as_str(), *l)).collect();
        assert!(check(&unlimited, &many).is_empty());
    }

    #[test]
    fn protected_paths_match_globs_and_the_directories_they_name() {
        let protect = |globs: &[&str]| {
            gates(|s| s.protected_paths = globs.iter().map(|g| (*g).to_owned()).collect())
        };
        let cases: [(&[&str], &str, bool); 11] = [
            (&[".github/**"], ".github/workflows/ci.yml", true),
            (&[".github/**"], "src/.github", false),
            (&[".ralph/**"], ".ralph/PROMPT.md", true),
            (&[".ralph/**"], "docs/ralph.md", false),
            (&["*.lock"], "Cargo.lock", true),
            (&["*.lock"], "sub/Cargo.lock", false),
            (&["**/*.lock"], "sub/Cargo.lock", true),
            (&["migrations"], "migrations/001.sql", true),
            (&["migrations/*.sql"], "migrations/001.sql", true),
            (&["src/{a,b}.rs"], "src/b.rs", true),
            (&[], ".github/workflows/ci.yml", false),
        ];
        for (globs, path, protected) in cases {
            let found = check(&protect(globs), &[(path, 1)]);
            assert_eq!(
                found == ["protected_paths"],
                protected,
                "{globs:?} {path}: {found:?}"
            );
        }
        let violations = protect(&[".github/**"])
            .check_changes([(Path::new(".github/ci.yml"), 1), (Path::new("a"), 1)]);
        assert_eq!(
            violations[0].to_string(),
            "protected_paths: the agent changed .github/ci.yml (matches \".github/**\")"
        );
    }

    #[test]
    fn invalid_globs_are_errors() {
        for glob in ["src/[", "a{b", "x/**y/["] {
            assert!(compile_glob(glob).is_err(), "{glob}");
        }
    }

    fn scan(lines: &[(Found, &str, u32, &str)]) -> Option<Violation> {
        let mut scan = SecretScan::default();
        for (found, path, line, text) in lines {
            scan.added_line(found.clone(), Path::new(path), *line, text.as_bytes());
        }
        scan.finish()
    }

    #[test]
    fn secret_scan_names_file_and_line_and_never_the_value() {
        let token = format!("ghp_{}", "x1Y2".repeat(9));
        let key_line = format!("TOKEN = \"{token}\"");
        let found = scan(&[
            (Found::WorkTree, "a.py", 1, "import os"),
            (Found::WorkTree, "a.py", 2, &key_line),
            (Found::Commit("abc1234".to_owned()), "b.toml", 7, &key_line),
        ])
        .unwrap();
        let message = found.to_string();
        assert_eq!(
            message,
            "secret_scan: a credential was added at a.py:2, b.toml:7 (in the agent's commit abc1234) (values not shown)"
        );
        assert!(!message.contains(&token));
        assert_eq!(
            found.lines_to_mask(),
            [(PathBuf::from("a.py"), vec![2])],
            "only the work tree's lines are masked"
        );
        assert_eq!(
            scan(&[(Found::WorkTree, "a.py", 1, "let password = ask();")]),
            None
        );
    }

    #[test]
    fn a_private_key_block_is_secret_down_to_its_end_line() {
        let found = scan(&[
            (Found::WorkTree, "id", 1, "-----BEGIN RSA PRIVATE KEY-----"),
            (Found::WorkTree, "id", 2, "MIIEowIBAAKCAQEA"),
            (Found::WorkTree, "id", 3, "QkFTRTY0QkFTRTY0"),
            (Found::WorkTree, "id", 4, "-----END RSA PRIVATE KEY-----"),
            (Found::WorkTree, "id", 5, "not a key"),
            (Found::WorkTree, "other", 1, "plain"),
        ])
        .unwrap();
        assert_eq!(
            found.lines_to_mask(),
            [(PathBuf::from("id"), vec![1, 2, 3, 4])]
        );
        // A public key is no secret.
        assert_eq!(
            scan(&[(Found::WorkTree, "k", 1, "-----BEGIN PUBLIC KEY-----")]),
            None
        );
    }

    #[test]
    fn the_reason_names_every_gate_and_lists_at_most_ten_items() {
        let lines: Vec<SecretLine> = (1..=12)
            .map(|line| SecretLine {
                path: PathBuf::from("f"),
                line,
                found: Found::WorkTree,
            })
            .collect();
        let text = reason(&[
            Violation::TooManyFiles {
                changed: 51,
                max: 50,
            },
            Violation::Secrets { lines },
        ]);
        assert!(text.starts_with("diff gate failed: max_changed_files: 51 files changed, at most 50 allowed; secret_scan: "), "{text}");
        assert!(text.contains("f:10, and 2 more"), "{text}");
    }
}
