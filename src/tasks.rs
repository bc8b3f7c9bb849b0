//! The task queue: the one place that edits the stories of `state/prd.json`
//! (docs/design.md §13). `ralphd task`, `ralphd mcp` and the daemon's own
//! `passes` updates all go through [`Store`].
//!
//! No edit is lost, whichever side writes last: every edit takes an exclusive
//! lock on `state/prd.lock`, re-reads prd.json, applies only its own change
//! and writes the file atomically before it lets go. Readers need no lock
//! (the write is a rename). The file keeps the seed format and every field
//! ralphd does not know; a corrupt file is refused by name, never overwritten.

pub(crate) mod command;
mod import;
mod render;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::state::{self, HomePaths};

pub(crate) use crate::prd::Story as Task;
use crate::prd::id_text;
pub(crate) use import::ImportReport;
pub(crate) use render::{render_list, render_task};

/// The lowest (most urgent) priority a task may have.
pub(crate) const MIN_PRIORITY: i64 = 0;
/// The highest (least urgent) priority a task may have.
pub(crate) const MAX_PRIORITY: i64 = 999;

/// The top-level field of prd.json that remembers the next `T-n` number, so
/// an id is never reused after `rm`.
const NEXT_NUMBER_KEY: &str = "nextTaskNumber";

/// The largest `n` of a `T-n` id ralphd counts from; an id or counter beyond
/// it (a hand edit) is kept but not counted, so the next number never overflows.
const MAX_TASK_NUMBER: u64 = 999_999_999_999;

/// How long an edit waits for another process's edit to finish. Edits hold
/// the lock for milliseconds; a holder that is stopped (Ctrl-Z) must not hang
/// the daemon for good.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A task to add. Only `title` is required.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NewTask {
    pub(crate) title: String,
    pub(crate) description: Option<String>,
    /// `None`: after every task already queued (highest priority number + 1).
    pub(crate) priority: Option<i64>,
    pub(crate) criteria: Vec<String>,
    /// `None`: the next free `T-n`.
    pub(crate) id: Option<String>,
}

/// The fields of a task to change; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskPatch {
    pub(crate) title: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) priority: Option<i64>,
    /// Replaces all acceptance criteria.
    pub(crate) criteria: Option<Vec<String>>,
}

impl TaskPatch {
    fn is_empty(&self) -> bool {
        self == &TaskPatch::default()
    }
}

/// Which tasks `list` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Filter {
    #[default]
    All,
    Open,
    Done,
}

/// Why a task command did nothing. Each message is one line that names the
/// cause and the fix; the command line exits 2 on any of them.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TaskError {
    #[error("home {} does not exist; give an existing directory with --home (or RALPH_HOME)", path.display())]
    NoHome { path: PathBuf },
    #[error("no task with id \"{id}\"; `ralphd task list` shows the ids")]
    UnknownId { id: String },
    #[error(
        "a task with id \"{id}\" already exists; choose another --id, or leave --id out for the next T-n"
    )]
    DuplicateId { id: String },
    #[error(
        "task id {id:?} is not usable: use 1 to 64 characters without spaces or control characters, e.g. FIX-12"
    )]
    BadId { id: String },
    #[error("the task title is empty; give a short title such as \"Fix the login page\"")]
    EmptyTitle,
    #[error(
        "priority {got} is out of range: use a whole number from {MIN_PRIORITY} (most urgent) to {MAX_PRIORITY}"
    )]
    BadPriority { got: i64 },
    #[error("nothing to change for task \"{id}\"; give a title, description, priority or criteria")]
    NothingToChange { id: String },
    #[error(
        "{} is corrupt ({reason}); it is left as it is: fix it by hand (or move it away) and try again",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{} is locked by another ralphd process for more than {}s; try again (a stopped `ralphd task` may hold it: resume or end it)",
        path.display(),
        LOCK_WAIT.as_secs()
    )]
    Busy { path: PathBuf },
    #[error("cannot import {}: {reason}", path.display())]
    Import { path: PathBuf, reason: String },
    /// Reading or writing a file failed (the message names it).
    #[error("{0:#}")]
    Io(anyhow::Error),
}

/// The tasks of one home: reads and edits `state/prd.json` under
/// `state/prd.lock`. Cheap to open; holds no file between calls.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    paths: HomePaths,
}

impl Store {
    /// The store of the home `home`, which must be an existing directory
    /// (prd.json and `state/` are created on the first edit).
    pub(crate) fn open(home: &Path) -> Result<Store, TaskError> {
        if !home.is_dir() {
            return Err(TaskError::NoHome {
                path: home.to_path_buf(),
            });
        }
        Ok(Store {
            paths: HomePaths::new(home),
        })
    }

    /// Adds a task and returns it as saved.
    pub(crate) fn add(&self, new: NewTask) -> Result<Task, TaskError> {
        let title = checked_title(&new.title)?;
        if let Some(priority) = new.priority {
            check_priority(priority)?;
        }
        if let Some(id) = &new.id {
            check_id(id)?;
        }
        self.edit(|prd| {
            let fields = StoryFields {
                title,
                description: new.description.as_deref().unwrap_or("").trim().to_owned(),
                criteria: clean_criteria(new.criteria),
                priority: new.priority,
                passes: false,
                source: None,
            };
            insert_story(prd, new.id.map(|id| id.trim().to_owned()), fields)
        })
    }

    /// The tasks in the order the daemon takes them: open ones by priority
    /// (lowest number first, ties in file order), then the done ones.
    pub(crate) fn list(&self, filter: Filter) -> Result<Vec<Task>, TaskError> {
        let prd = self.read()?;
        let mut tasks: Vec<Task> = stories(prd.as_ref())
            .map(Task::from_story)
            .filter(|task| match filter {
                Filter::All => true,
                Filter::Open => !task.passes,
                Filter::Done => task.passes,
            })
            .collect();
        tasks.sort_by_key(|task| (task.passes, task.priority.unwrap_or(i64::MAX)));
        Ok(tasks)
    }

    /// The task with `id`.
    pub(crate) fn show(&self, id: &str) -> Result<Task, TaskError> {
        let prd = self.read()?;
        let stories: Vec<&Value> = stories(prd.as_ref()).collect();
        let index = position_of(&stories, id)?;
        Ok(Task::from_story(stories[index]))
    }

    /// Changes the fields `patch` gives; the others stay as they are.
    pub(crate) fn update(&self, id: &str, patch: TaskPatch) -> Result<Task, TaskError> {
        if patch.is_empty() {
            return Err(TaskError::NothingToChange { id: id.to_owned() });
        }
        let title = patch.title.as_deref().map(checked_title).transpose()?;
        if let Some(priority) = patch.priority {
            check_priority(priority)?;
        }
        self.edit(|prd| {
            let story = find_story_mut(prd, id)?;
            if let Some(title) = title {
                story["title"] = json!(title);
            }
            if let Some(description) = &patch.description {
                story["description"] = json!(description.trim());
            }
            if let Some(priority) = patch.priority {
                story["priority"] = json!(priority);
            }
            if let Some(criteria) = patch.criteria {
                story["acceptanceCriteria"] = json!(clean_criteria(criteria));
            }
            Ok(Task::from_story(story))
        })
    }

    /// Marks the task done (`true`) or open again (`false`). The daemon marks
    /// a story done through this too, after its cycle was committed.
    pub(crate) fn set_done(&self, id: &str, done: bool) -> Result<Task, TaskError> {
        self.edit(|prd| {
            let story = find_story_mut(prd, id)?;
            story["passes"] = json!(done);
            Ok(Task::from_story(story))
        })
    }

    /// Removes the task; its `T-n` id is never given out again.
    pub(crate) fn remove(&self, id: &str) -> Result<Task, TaskError> {
        self.edit(|prd| {
            let removed = {
                let list = stories_mut(prd)?;
                let index = position_of(list, id)?;
                list.remove(index)
            };
            let task = Task::from_story(&removed);
            if let Some(number) = task_number(&task.id) {
                let next = next_number(prd).max(number.saturating_add(1));
                prd[NEXT_NUMBER_KEY] = json!(next);
            }
            Ok(task)
        })
    }

    /// Imports a Markdown checklist or the JSON of `gh issue list --json
    /// number,title,body,labels` (told apart by content). An item imported
    /// before is found by its source key and not added again; an item that is
    /// checked (or closed) at the source marks its open task done. Nothing
    /// else of an existing task changes.
    pub(crate) fn import(&self, path: &Path) -> Result<ImportReport, TaskError> {
        let bytes = std::fs::read(path).map_err(|error| TaskError::Import {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|_| TaskError::Import {
            path: path.to_path_buf(),
            reason: "it is not UTF-8 text".to_owned(),
        })?;
        let items = import::parse(&text).map_err(|reason| TaskError::Import {
            path: path.to_path_buf(),
            reason,
        })?;
        self.edit(|prd| import::apply(prd, items))
    }

    /// Waits until no edit is under way and keeps others from starting until
    /// the returned guard is dropped. The daemon holds it while it deletes
    /// the temp files a crash left in `state/`, so that it never deletes the
    /// one a `ralphd task` running at that moment is about to rename.
    pub(crate) fn hold_edits(&self) -> Result<EditLock, TaskError> {
        self.lock().map(|file| EditLock { _file: file })
    }

    /// Reads prd.json without the lock (a write is an atomic rename);
    /// `None` when there is none yet.
    fn read(&self) -> Result<Option<Value>, TaskError> {
        let path = self.paths.prd();
        let value = crate::prd::load(&path).map_err(|error| {
            match error.downcast_ref::<state::CorruptState>() {
                Some(corrupt) => TaskError::Corrupt {
                    path: corrupt.path.clone(),
                    reason: corrupt.reason.clone(),
                },
                None => TaskError::Io(error),
            }
        })?;
        match value {
            Some(value) if !value.is_object() => Err(TaskError::Corrupt {
                path,
                reason: "it must be a JSON object with \"userStories\"".to_owned(),
            }),
            other => Ok(other),
        }
    }

    /// Applies `change` to the current prd.json under the lock and saves the
    /// result atomically, unless `change` fails or changed nothing.
    fn edit<T>(
        &self,
        change: impl FnOnce(&mut Value) -> Result<T, TaskError>,
    ) -> Result<T, TaskError> {
        let _lock = self.lock()?;
        let before = self.read()?;
        let mut prd = before.clone().unwrap_or_else(|| self.fresh_prd());
        let result = change(&mut prd)?;
        if before.as_ref() != Some(&prd) {
            state::save_json(&self.paths.prd(), &prd).map_err(TaskError::Io)?;
        }
        Ok(result)
    }

    /// Takes the exclusive edit lock `state/prd.lock`, waiting for another
    /// edit to finish; released when the returned file is dropped.
    fn lock(&self) -> Result<File, TaskError> {
        let dir = self.paths.state_dir();
        let path = dir.join("prd.lock");
        let io = |what: &str, error: std::io::Error| {
            TaskError::Io(anyhow::Error::new(error).context(format!("cannot {what}")))
        };
        std::fs::create_dir_all(&dir)
            .map_err(|error| io(&format!("create directory {}", dir.display()), error))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| io(&format!("open {}", path.display()), error))?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(TryLockError::WouldBlock) => return Err(TaskError::Busy { path }),
                Err(TryLockError::Error(error)) => {
                    return Err(io(&format!("lock {}", path.display()), error));
                }
            }
        }
    }

    /// A new prd.json in the seed format, named after the home.
    fn fresh_prd(&self) -> Value {
        let project = self
            .paths
            .home
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        json!({
            "project": project,
            "branchName": "",
            "description": "Tasks for ralphd: `ralphd task add TITLE`, `ralphd task list`.",
            "userStories": [],
        })
    }
}

/// Held while no one may edit prd.json (see [`Store::hold_edits`]).
#[derive(Debug)]
pub(crate) struct EditLock {
    _file: File,
}

/// The fields of a story to insert.
struct StoryFields {
    title: String,
    description: String,
    criteria: Vec<String>,
    /// `None`: after every task already queued.
    priority: Option<i64>,
    passes: bool,
    source: Option<String>,
}

/// Appends a story with `id` (or the next `T-n`) and returns it as a task.
fn insert_story(
    prd: &mut Value,
    id: Option<String>,
    fields: StoryFields,
) -> Result<Task, TaskError> {
    let existing: Vec<Task> = stories(Some(prd)).map(Task::from_story).collect();
    let mut next = next_number(prd).max(
        existing
            .iter()
            .filter_map(|task| task_number(&task.id))
            .max()
            .map_or(1, |highest| highest.saturating_add(1)),
    );
    let id = match id {
        Some(id) => {
            if existing
                .iter()
                .any(|task| task.id.eq_ignore_ascii_case(&id))
            {
                return Err(TaskError::DuplicateId { id });
            }
            if let Some(number) = task_number(&id) {
                next = next.max(number.saturating_add(1));
            }
            id
        }
        // The loop only matters after hand edits beyond MAX_TASK_NUMBER.
        None => loop {
            let id = format!("T-{next}");
            next = next.saturating_add(1);
            if !existing
                .iter()
                .any(|task| task.id.eq_ignore_ascii_case(&id))
            {
                break id;
            }
        },
    };
    let priority = fields.priority.unwrap_or_else(|| {
        existing
            .iter()
            .filter_map(|task| task.priority)
            .max()
            .map_or(1, |highest| highest.saturating_add(1))
            .clamp(MIN_PRIORITY, MAX_PRIORITY)
    });
    let mut story = json!({
        "id": id,
        "title": fields.title,
        "description": fields.description,
        "acceptanceCriteria": fields.criteria,
        "priority": priority,
        "passes": fields.passes,
        "notes": "",
    });
    if let Some(source) = fields.source {
        story["source"] = json!(source);
    }
    let task = Task::from_story(&story);
    stories_mut(prd)?.push(story);
    prd[NEXT_NUMBER_KEY] = json!(next);
    Ok(task)
}

/// The stories of `prd` (none when there is no file yet).
fn stories(prd: Option<&Value>) -> impl Iterator<Item = &Value> {
    prd.and_then(|prd| prd.get("userStories"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The story list of `prd`, created when the file has none yet.
fn stories_mut(prd: &mut Value) -> Result<&mut Vec<Value>, TaskError> {
    let Some(object) = prd.as_object_mut() else {
        return Err(TaskError::Io(anyhow::anyhow!(
            "prd.json is not a JSON object"
        )));
    };
    object
        .entry("userStories")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| TaskError::Io(anyhow::anyhow!("\"userStories\" must be a list")))
}

fn find_story_mut<'a>(prd: &'a mut Value, id: &str) -> Result<&'a mut Value, TaskError> {
    let list = stories_mut(prd)?;
    let index = position_of(list, id)?;
    Ok(&mut list[index])
}

fn unknown(id: &str) -> TaskError {
    TaskError::UnknownId { id: id.to_owned() }
}

/// A story id as text: hand-written files may use numbers.
/// Where the story with `id` is: the one with exactly that id, else the
/// first that has it ignoring ASCII case (`t-3` finds `T-3`).
fn position_of(stories: &[impl std::borrow::Borrow<Value>], id: &str) -> Result<usize, TaskError> {
    let wanted = id.trim();
    let ids: Vec<Option<String>> = stories
        .iter()
        .map(|story| story.borrow().get("id").map(id_text))
        .collect();
    ids.iter()
        .position(|found| found.as_deref() == Some(wanted))
        .or_else(|| {
            ids.iter().position(|found| {
                found
                    .as_deref()
                    .is_some_and(|found| found.eq_ignore_ascii_case(wanted))
            })
        })
        .ok_or_else(|| unknown(id))
}

/// `n` of an id `T-n`.
fn task_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("T-").or_else(|| id.strip_prefix("t-"))?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|number| *number <= MAX_TASK_NUMBER)
}

fn next_number(prd: &Value) -> u64 {
    prd.get(NEXT_NUMBER_KEY)
        .and_then(Value::as_u64)
        .filter(|number| *number <= MAX_TASK_NUMBER + 1)
        .unwrap_or(1)
}

fn checked_title(title: &str) -> Result<String, TaskError> {
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    if title.is_empty() {
        return Err(TaskError::EmptyTitle);
    }
    Ok(title)
}

fn check_priority(priority: i64) -> Result<(), TaskError> {
    if (MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        Ok(())
    } else {
        Err(TaskError::BadPriority { got: priority })
    }
}

fn check_id(id: &str) -> Result<(), TaskError> {
    let trimmed = id.trim();
    let usable = !trimmed.is_empty()
        && trimmed.chars().count() <= 64
        && !trimmed.chars().any(|c| c.is_whitespace() || c.is_control());
    if usable {
        Ok(())
    } else {
        Err(TaskError::BadId { id: id.to_owned() })
    }
}

/// Criteria trimmed, the empty ones dropped.
fn clean_criteria(criteria: Vec<String>) -> Vec<String> {
    criteria
        .into_iter()
        .map(|criterion| criterion.trim().to_owned())
        .filter(|criterion| !criterion.is_empty())
        .collect()
}
