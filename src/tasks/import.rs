//! `ralphd task import`: turns a Markdown checklist or the JSON of `gh issue
//! list --json number,title,body,labels` into tasks, idempotently: each item
//! carries a source key (`md:<title>`, `gh#<number>`) and an item whose key
//! is already in prd.json is not added again.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{MAX_PRIORITY, MIN_PRIORITY, StoryFields, Task, TaskError, insert_story};

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct ImportReport {
    /// Which format the file was read as: `markdown` or `github`.
    pub(crate) format: String,
    /// Tasks new to prd.json.
    pub(crate) added: Vec<Task>,
    /// Open tasks that the source now shows as checked or closed.
    pub(crate) marked_done: Vec<Task>,
    /// Items imported before, left as they are.
    pub(crate) unchanged: Vec<Task>,
}

/// One item of the source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Item {
    /// Stable across imports of the same item: `gh#12`, `md:<normalized title>`.
    pub(super) source: String,
    pub(super) title: String,
    pub(super) description: String,
    pub(super) criteria: Vec<String>,
    pub(super) priority: Option<i64>,
    /// Checked (`- [x]`) or a closed issue.
    pub(super) done: bool,
}

/// The items of a parsed file and its format's name.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) format: &'static str,
    pub(super) items: Vec<Item>,
}

/// Reads `text` as GitHub JSON (it starts with `[` or `{`) or as a Markdown
/// checklist; `Err` says why it is neither.
pub(super) fn parse(text: &str) -> Result<Parsed, String> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        return parse_github(trimmed).map(|items| Parsed {
            format: "github",
            items,
        });
    }
    let items = parse_markdown(text);
    if items.is_empty() {
        return Err(
            "it is neither a Markdown checklist (lines like `- [ ] Fix the login page`) \
             nor the JSON of `gh issue list --json number,title,body,labels`"
                .to_owned(),
        );
    }
    Ok(Parsed {
        format: "markdown",
        items,
    })
}

/// Adds the items prd.json does not have yet (found by source key), marks
/// done the open ones the source shows done, leaves everything else.
pub(super) fn apply(prd: &mut Value, parsed: Parsed) -> Result<ImportReport, TaskError> {
    let mut report = ImportReport {
        format: parsed.format.to_owned(),
        ..ImportReport::default()
    };
    for item in parsed.items {
        let known = super::stories_mut(prd)?
            .iter_mut()
            .find(|story| story.get("source").and_then(Value::as_str) == Some(&item.source));
        match known {
            Some(story) => {
                let open = story.get("passes").and_then(Value::as_bool) != Some(true);
                if item.done && open {
                    story["passes"] = Value::Bool(true);
                    report.marked_done.push(Task::from_story(story));
                } else {
                    report.unchanged.push(Task::from_story(story));
                }
            }
            None => {
                let fields = StoryFields {
                    title: item.title,
                    description: item.description,
                    criteria: item.criteria,
                    priority: item.priority,
                    passes: item.done,
                    source: Some(item.source),
                };
                report.added.push(insert_story(prd, None, fields)?);
            }
        }
    }
    Ok(report)
}

/// An issue as `gh issue list --json number,title,body,labels` prints it
/// (`state` too, when asked for).
#[derive(Deserialize)]
struct Issue {
    number: u64,
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
    #[serde(default)]
    state: Option<String>,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

fn parse_github(text: &str) -> Result<Vec<Item>, String> {
    const EXPECTED: &str =
        "expected the JSON list that `gh issue list --json number,title,body,labels` prints";
    let issues: Vec<Issue> =
        serde_json::from_str(text).map_err(|error| format!("{EXPECTED}: {error}"))?;
    issues
        .into_iter()
        .map(|issue| {
            let title = super::checked_title(&issue.title)
                .map_err(|_| format!("issue #{} has an empty title", issue.number))?;
            Ok(Item {
                source: format!("gh#{}", issue.number),
                title,
                description: issue.body.unwrap_or_default().trim().to_owned(),
                criteria: Vec::new(),
                priority: issue
                    .labels
                    .iter()
                    .filter_map(|label| label_priority(&label.name))
                    .min(),
                done: issue
                    .state
                    .is_some_and(|state| state.eq_ignore_ascii_case("closed")),
            })
        })
        .collect()
}

/// The priority a label names: `priority:1`, `priority/2`, `priority-0`,
/// `priority 3`, `P1`, `p2` (clamped to the allowed range).
pub(super) fn label_priority(label: &str) -> Option<i64> {
    let label = label.trim().to_ascii_lowercase();
    let digits = match label.strip_prefix("priority") {
        Some(rest) => rest.trim_start_matches([':', '/', '-', '=', '_', ' ']),
        None => label.strip_prefix('p')?,
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let number = digits.parse::<i64>().unwrap_or(MAX_PRIORITY);
    Some(number.clamp(MIN_PRIORITY, MAX_PRIORITY))
}

/// The tasks of a Markdown checklist. A checkbox item (`- [ ] title`,
/// `- [x] title`; `*`, `+` and `1.` bullets too) is a task; the list items
/// indented under it, checkbox or not, are its acceptance criteria. Text
/// inside fenced code blocks is skipped.
pub(super) fn parse_markdown(text: &str) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    // The indent of the current task's item, while lines may still nest under it.
    let mut open_indent: Option<usize> = None;
    let mut in_fence = false;
    for line in text.lines() {
        let indent = indent_of(line);
        let rest = line.trim();
        if rest.starts_with("```") || rest.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || rest.is_empty() {
            continue;
        }
        let nested = open_indent.is_some_and(|task_indent| indent > task_indent);
        let Some(item) = list_item(rest) else {
            // A paragraph or heading at the task's own level ends it.
            if !nested {
                open_indent = None;
            }
            continue;
        };
        match (nested, item.checkbox) {
            (true, _) => {
                if let Some(task) = items.last_mut()
                    && !item.text.is_empty()
                {
                    task.criteria.push(item.text.to_owned());
                }
            }
            (false, Some(done)) => {
                let Ok(title) = super::checked_title(item.text) else {
                    open_indent = None;
                    continue;
                };
                items.push(Item {
                    source: format!("md:{}", title.to_lowercase()),
                    title,
                    description: String::new(),
                    criteria: Vec::new(),
                    priority: None,
                    done,
                });
                open_indent = Some(indent);
            }
            (false, None) => open_indent = None,
        }
    }
    items
}

/// A Markdown list item: its text and, for a checkbox item, whether it is checked.
struct ListItem<'a> {
    text: &'a str,
    checkbox: Option<bool>,
}

/// Reads a trimmed line as a list item (`- `, `* `, `+ `, `1. `, `1) `).
fn list_item(line: &str) -> Option<ListItem<'_>> {
    let after_marker = if let Some(rest) = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))
        .or_else(|| line.strip_prefix("+ "))
    {
        rest
    } else {
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        line[digits..]
            .strip_prefix(". ")
            .or_else(|| line[digits..].strip_prefix(") "))?
    };
    let after_marker = after_marker.trim_start();
    let checkbox = [("[ ]", false), ("[x]", true), ("[X]", true)]
        .into_iter()
        .find_map(|(mark, done)| Some((after_marker.strip_prefix(mark)?, done)));
    Some(match checkbox {
        Some((text, done)) => ListItem {
            text: text.trim(),
            checkbox: Some(done),
        },
        None => ListItem {
            text: after_marker.trim(),
            checkbox: None,
        },
    })
}

/// Leading whitespace in columns (a tab counts 4).
fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| c.is_whitespace())
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}
