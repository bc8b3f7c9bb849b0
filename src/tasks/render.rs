//! Tasks as people read them: the table of `ralphd task list` and the page
//! of `ralphd task show` (scripts use `--json`).

use std::fmt::Write as _;

use super::{Filter, Task};

/// A table of `tasks` (id, status, priority, title), or a line saying there
/// are none and how to add one.
pub(crate) fn render_list(tasks: &[Task], filter: Filter) -> String {
    if tasks.is_empty() {
        let which = match filter {
            Filter::All => "no tasks",
            Filter::Open => "no open tasks",
            Filter::Done => "no done tasks",
        };
        return format!("{which}; add one with `ralphd task add TITLE`\n");
    }
    let id_width = tasks
        .iter()
        .map(|task| task.id.chars().count())
        .max()
        .unwrap_or(0)
        .max("ID".len());
    let mut out = format!("{:<id_width$}  STATUS  PRIORITY  TITLE\n", "ID");
    for task in tasks {
        let priority = task
            .priority
            .map_or_else(|| "-".to_owned(), |priority| priority.to_string());
        let _ = writeln!(
            out,
            "{:<id_width$}  {:<6}  {:>8}  {}",
            task.id,
            task.status(),
            priority,
            task.title
        );
    }
    out
}

/// Every field of one task, one block.
pub(crate) fn render_task(task: &Task) -> String {
    let mut out = format!("{}  {}\n", task.id, task.title);
    let priority = task
        .priority
        .map_or_else(|| "none".to_owned(), |priority| priority.to_string());
    let _ = writeln!(out, "status:   {}\npriority: {priority}", task.status());
    if let Some(source) = &task.source {
        let _ = writeln!(out, "source:   {source}");
    }
    if !task.description.is_empty() {
        let _ = writeln!(out, "\n{}", task.description);
    }
    if !task.acceptance_criteria.is_empty() {
        out.push_str("\nacceptance criteria:\n");
        for criterion in &task.acceptance_criteria {
            let _ = writeln!(out, "  - {criterion}");
        }
    }
    if !task.notes.is_empty() {
        let _ = writeln!(out, "\nnotes: {}", task.notes);
    }
    out
}
