//! Reading the optional task list `state/prd.json` (user stories with
//! `passes`) for the daemon. Kept as a JSON value so fields ralphd does not
//! know survive every write; a corrupt file is refused, never overwritten.
//! Every edit of the file goes through `tasks::Store`.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::state;

/// A story that still has `"passes": false`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OpenStory {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) acceptance_criteria: Vec<String>,
    pub(crate) priority: Option<i64>,
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
pub(crate) fn open_stories(prd: &Value) -> Vec<OpenStory> {
    let mut stories: Vec<OpenStory> = prd
        .get("userStories")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|story| story.get("passes").and_then(Value::as_bool) != Some(true))
        .map(|story| {
            let text = |key: &str| {
                story
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            OpenStory {
                id: story
                    .get("id")
                    .map(|id| id.as_str().map_or_else(|| id.to_string(), str::to_owned))
                    .unwrap_or_default(),
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
            }
        })
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
