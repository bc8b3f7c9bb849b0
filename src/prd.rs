//! Reading the optional task list `state/prd.json` (user stories with
//! `passes`) for the daemon. Kept as a JSON value so fields ralphd does not
//! know survive every write; a corrupt file is refused, never overwritten.
//! Every edit of the file goes through `tasks::Store`.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state;

/// One story of prd.json, as the prompts, `ralphd task` (`tasks::Task`) and
/// the MCP tools see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Story {
    /// Short and stable, e.g. `T-7` (or whatever id a hand-written story has).
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) description: String,
    /// What must hold for the task to count as done.
    pub(crate) acceptance_criteria: Vec<String>,
    /// Lower is more urgent; the daemon takes the open task with the lowest first.
    pub(crate) priority: Option<i64>,
    /// True once done: by `ralphd task done`, or by the daemon when a cycle
    /// that worked on it was committed.
    pub(crate) passes: bool,
    pub(crate) notes: String,
    /// Where an imported task came from (`gh#12`, `md:fix the login page`);
    /// importing the same item again finds it by this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<String>,
}

impl Story {
    /// `open` or `done`.
    pub(crate) fn status(&self) -> &'static str {
        if self.passes { "done" } else { "open" }
    }

    /// Reads a story of prd.json; missing or odd fields read as empty.
    pub(crate) fn from_story(story: &Value) -> Story {
        let text = |key: &str| {
            story
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Story {
            id: story.get("id").map(id_text).unwrap_or_default(),
            title: text("title"),
            description: text("description"),
            acceptance_criteria: story
                .get("acceptanceCriteria")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
            priority: story.get("priority").and_then(Value::as_i64),
            passes: story.get("passes").and_then(Value::as_bool) == Some(true),
            notes: text("notes"),
            source: story
                .get("source")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// A story's id as text (a number or other JSON value as written).
pub(crate) fn id_text(id: &Value) -> String {
    id.as_str().map_or_else(|| id.to_string(), str::to_owned)
}

/// Loads prd.json; `Ok(None)` when there is none. Corrupt → error naming it.
pub(crate) fn load(path: &Path) -> Result<Option<Value>> {
    let value: Option<Value> = state::load_json(path, state::OnCorrupt::Refuse, "")?;
    if let Some(value) = &value
        && !value.get("userStories").is_none_or(Value::is_array)
    {
        anyhow::bail!(state::CorruptState {
            path: path.to_path_buf(),
            reason: "\"userStories\" must be a list".to_owned(),
        });
    }
    Ok(value)
}

/// The stories whose `passes` is not true, highest priority (lowest number) first.
pub(crate) fn open_stories(prd: &Value) -> Vec<Story> {
    let mut stories: Vec<Story> = prd
        .get("userStories")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(Story::from_story)
        .filter(|story| !story.passes)
        .collect();
    stories.sort_by_key(|story| story.priority.unwrap_or(i64::MAX));
    stories
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({"project": "p", "branchName": "b", "description": "d", "userStories": [
            {"id": "US-002", "title": "second", "priority": 2, "passes": false, "acceptanceCriteria": ["x"]},
            {"id": "US-001", "title": "first", "priority": 1, "passes": false, "notes": "keep me"},
            {"id": "US-003", "title": "done", "priority": 0, "passes": true}
        ]})
    }

    #[test]
    fn open_stories_sorted_by_priority_without_passing_ones() {
        let ids: Vec<String> = open_stories(&sample()).into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["US-001", "US-002"]);
    }

    #[test]
    fn corrupt_prd_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prd.json");
        std::fs::write(&path, "{\"userStories\": 5}").unwrap();
        let message = format!("{:#}", load(&path).unwrap_err());
        assert!(message.contains("prd.json"), "{message}");
    }
}
