//! `ralphd init [DIR]`: scaffolds a home with files meant for editing.
//!
//! It writes `ralph.toml` (every key commented out with its default),
//! `prompts/<phase>.md` (copies of the built-in templates: a copy overrides the
//! built-in one), `PROMPT.md.example` and `state/prd.example.json`. The two
//! examples are not active until renamed, so that `init` followed by `run`
//! never steers the agent with example text. An existing file is never
//! overwritten: it is kept and reported. This module writes nothing else and
//! prints nothing; the caller prints the returned list.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::phase::Phase;

/// `ralph.toml` with every key commented out; a test keeps it equal to the defaults.
pub(crate) const RALPH_TOML_TEMPLATE: &str = include_str!("../templates/ralph.toml");

/// An example task list in the seed format of docs/design.md §6.
pub(crate) const PRD_EXAMPLE: &str = include_str!("../templates/prd.json");

/// An example of steering text.
pub(crate) const PROMPT_EXAMPLE: &str = include_str!("../templates/PROMPT.md");

/// What the caller may print after the list of files.
pub(crate) const NEXT_STEPS: &str = "\
Next:
  1. Install the Claude Code CLI: npm install -g @anthropic-ai/claude-code
     and log in once: run `claude` and type /login (a Claude subscription),
     or export ANTHROPIC_API_KEY=... (an API key) where ralphd runs.
  2. Edit ralph.toml if the defaults do not suit you; rename PROMPT.md.example
     to PROMPT.md to steer the agent. Queue tasks with
     `ralphd task add \"Fix the login page\" --home <this dir>` (or rename
     state/prd.example.json to state/prd.json for a whole task list).
  3. Run `ralphd run --home <this dir> --repo <your repo> --max-iterations 3`.
     (`ralphd demo` shows a whole run first, without `claude`.)";

/// What `init` did with one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scaffolded {
    Created,
    /// The file existed and was left as it was.
    Kept,
}

impl fmt::Display for Scaffolded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scaffolded::Created => "created",
            Scaffolded::Kept => "kept",
        })
    }
}

/// Writes the scaffold into `dir` (created if missing) and returns each file
/// with what happened to it, in a stable order.
pub(crate) fn init(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Scaffolded)>> {
    let mut files: Vec<(PathBuf, &str)> = vec![
        (PathBuf::from("ralph.toml"), RALPH_TOML_TEMPLATE),
        (PathBuf::from("PROMPT.md.example"), PROMPT_EXAMPLE),
    ];
    for phase in Phase::ALL {
        let path = Path::new("prompts").join(format!("{}.md", phase.name()));
        files.push((path, phase.builtin_template()));
    }
    files.push((PathBuf::from("state/prd.example.json"), PRD_EXAMPLE));

    files
        .into_iter()
        .map(|(relative, contents)| {
            let path = dir.join(relative);
            let outcome = write_new(&path, contents)?;
            Ok((path, outcome))
        })
        .collect()
}

/// Creates `path` with `contents` unless something already exists there.
fn write_new(path: &Path, contents: &str) -> anyhow::Result<Scaffolded> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    // `create_new` makes "exists" and "create" one step: nothing is ever overwritten.
    let mut file = match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok(Scaffolded::Kept);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot create {}", path.display()));
        }
    };
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Scaffolded::Created)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use tempfile::TempDir;

    use super::{PRD_EXAMPLE, RALPH_TOML_TEMPLATE, Scaffolded, init};
    use crate::cli::RunArgs;
    use crate::config::{Config, Env};
    use crate::phase::Phase;

    /// The template with its key lines and table headers uncommented: a line
    /// `# key = value` or `# [table]`. Prose comments stay comments.
    fn uncommented_template() -> String {
        let is_key = |text: &str| {
            text.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty()
                    && key
                        .bytes()
                        .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
            })
        };
        let is_header = |text: &str| {
            let text = text
                .strip_prefix("[[")
                .and_then(|rest| rest.strip_suffix("]]"))
                .map_or(text.to_owned(), |name| format!("[{name}]"));
            text.strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .is_some_and(|(name, after)| {
                    after.is_empty()
                        && name.bytes().all(|byte| {
                            byte.is_ascii_lowercase() || matches!(byte, b'_' | b'.' | b'-')
                        })
                })
        };
        RALPH_TOML_TEMPLATE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(text) if is_key(text) || is_header(text) => text,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn load(home: &std::path::Path) -> Config {
        let args = RunArgs {
            home: Some(home.to_path_buf()),
            ..RunArgs::default()
        };
        Config::load_in(&args, &Env::default(), home).expect("loads")
    }

    #[test]
    fn template_is_all_comments() {
        let home = TempDir::new().unwrap();
        let home = home.path().canonicalize().unwrap();
        fs::write(home.join("ralph.toml"), RALPH_TOML_TEMPLATE).unwrap();
        let mut from_template = load(&home);
        from_template.config_file = None;
        fs::remove_file(home.join("ralph.toml")).unwrap();
        assert_eq!(from_template, load(&home));
    }

    #[test]
    fn uncommented_template_equals_the_defaults_except_the_examples() {
        let home = TempDir::new().unwrap();
        let home = home.path().canonicalize().unwrap();
        let defaults = load(&home);
        fs::write(home.join("ralph.toml"), uncommented_template()).unwrap();
        let loaded = load(&home);

        let mut expected = defaults;
        expected.config_file = Some(home.join("ralph.toml"));
        // The keys without a default show an example value.
        expected.max_iterations = Some(10);
        expected.agent.model = Some("sonnet".to_owned());
        expected.agent.fallback_model = Some("haiku".to_owned());
        expected.agent.max_turns = Some(50);
        for phase in [Phase::Scan, Phase::Idea, Phase::Backtest, Phase::Report] {
            let settings = expected.phases.get_mut(phase);
            assert_eq!(settings.permission_mode, None);
            settings.permission_mode = Some("default".to_owned());
        }
        expected.repo = PathBuf::from("/srv/my-project");
        expected.budget.max_cost_usd = Some(20.0);
        expected.budget.max_cost_per_phase_usd = Some(2.0);
        expected.notify.heartbeat_url = Some("https://hc-ping.com/<uuid>".to_owned());
        expected.notify.hooks = vec![crate::config::HookSettings {
            on: vec!["cycle_finished".to_owned(), "daemon_stopped".to_owned()],
            command: vec!["notify-send".to_owned(), "ralphd".to_owned()],
            timeout: std::time::Duration::from_secs(30),
        }];
        expected.notify.webhooks = vec![crate::config::WebhookSettings {
            url: "https://ntfy.sh/my-topic".to_owned(),
            on: ["daemon_stopped", "stalled", "breaker_changed"]
                .map(str::to_owned)
                .to_vec(),
            format: crate::config::WebhookFormat::Ntfy,
            header_env: vec![("Authorization".to_owned(), "NTFY_AUTH".to_owned())],
            timeout: std::time::Duration::from_secs(10),
            max_attempts: 5,
        }];
        expected.http.token_file = Some(PathBuf::from("/home/me/.config/ralphd/token"));
        assert_eq!(loaded, expected);
    }

    #[test]
    fn template_lists_every_key() {
        let table: toml::Table = toml::from_str(&uncommented_template()).expect("valid TOML");
        let (keys, _) = crate::config::tests::known_keys_and_variables();
        for (section, key) in keys {
            let mut value = Some(&table);
            for part in section.split('.') {
                value = value.and_then(|table| table.get(part)?.as_table());
            }
            assert!(
                value.is_some_and(|table| table.contains_key(key)),
                "{section}.{key} is missing from templates/ralph.toml"
            );
        }
    }

    #[test]
    fn prd_example_is_in_the_seed_format() {
        let prd: serde_json::Value = serde_json::from_str(PRD_EXAMPLE).expect("valid JSON");
        for key in ["project", "branchName", "description", "userStories"] {
            assert!(prd.get(key).is_some(), "missing {key}");
        }
        let stories = prd["userStories"].as_array().unwrap();
        assert_eq!(stories.len(), 2);
        for story in stories {
            for key in [
                "id",
                "title",
                "description",
                "acceptanceCriteria",
                "priority",
                "passes",
                "notes",
            ] {
                assert!(story.get(key).is_some(), "story misses {key}");
            }
            assert_eq!(story["passes"], false);
            assert!(story["acceptanceCriteria"].is_array());
        }
    }

    #[test]
    fn init_creates_the_scaffold_then_keeps_it() {
        let dir = TempDir::new().unwrap();
        let home = dir.path().join("new-home");
        let first = init(&home).unwrap();
        let relative: Vec<String> = first
            .iter()
            .map(|(path, _)| path.strip_prefix(&home).unwrap().display().to_string())
            .collect();
        assert_eq!(
            relative,
            [
                "ralph.toml",
                "PROMPT.md.example",
                "prompts/scan.md",
                "prompts/idea.md",
                "prompts/code-edit.md",
                "prompts/backtest.md",
                "prompts/report.md",
                "state/prd.example.json",
            ]
        );
        assert!(
            first
                .iter()
                .all(|(_, outcome)| *outcome == Scaffolded::Created)
        );
        assert_eq!(
            fs::read_to_string(home.join("ralph.toml")).unwrap(),
            RALPH_TOML_TEMPLATE
        );
        for phase in Phase::ALL {
            let copy = fs::read_to_string(home.join(format!("prompts/{phase}.md"))).unwrap();
            assert_eq!(copy, phase.builtin_template());
        }

        // A second run, after the user edited a file, keeps everything.
        fs::write(home.join("prompts/scan.md"), "my own scan").unwrap();
        let second = init(&home).unwrap();
        assert!(
            second
                .iter()
                .all(|(_, outcome)| *outcome == Scaffolded::Kept)
        );
        assert_eq!(
            fs::read_to_string(home.join("prompts/scan.md")).unwrap(),
            "my own scan"
        );
    }

    #[test]
    fn init_fills_in_what_is_missing() {
        let home = TempDir::new().unwrap();
        fs::write(home.path().join("ralph.toml"), "[loop]\n").unwrap();
        let outcomes = init(home.path()).unwrap();
        assert_eq!(
            outcomes[0],
            (home.path().join("ralph.toml"), Scaffolded::Kept)
        );
        assert!(
            outcomes[1..]
                .iter()
                .all(|(_, outcome)| *outcome == Scaffolded::Created)
        );
        assert_eq!(
            fs::read_to_string(home.path().join("ralph.toml")).unwrap(),
            "[loop]\n"
        );
        assert_eq!(Scaffolded::Kept.to_string(), "kept");
    }
}
