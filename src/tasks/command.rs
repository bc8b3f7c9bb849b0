//! `ralphd task …`: resolves the home, calls the store, prints the result as
//! text for people or JSON (`--json`) for scripts.

use serde::Serialize;

use super::{Filter, NewTask, Store, Task, TaskPatch, render_list, render_task};
use crate::cli::{HomeArgs, TaskCommand};
use crate::config;

/// Runs one `ralphd task` subcommand; an error is printed by the caller
/// (exit 2).
pub(crate) fn run(command: TaskCommand) -> anyhow::Result<u8> {
    match command {
        TaskCommand::Add(args) => {
            let task = open(&args.home)?.add(NewTask {
                title: args.title,
                description: args.description,
                priority: args.priority,
                criteria: args.criteria,
                id: args.id,
            })?;
            print_task(args.json.json, &task, |task| {
                format!("added {}: {}\n", task.id, task.title)
            })
        }
        TaskCommand::List(args) => {
            let filter = match (args.open, args.done) {
                (true, _) => Filter::Open,
                (_, true) => Filter::Done,
                _ => Filter::All,
            };
            let tasks = open(&args.home)?.list(filter)?;
            if args.json.json {
                print_json(&tasks)?;
            } else {
                print!("{}", render_list(&tasks, filter));
            }
            Ok(0)
        }
        TaskCommand::Show(args) => {
            let task = open(&args.home)?.show(&args.id)?;
            print_task(args.json.json, &task, render_task)
        }
        TaskCommand::Edit(args) => {
            let patch = TaskPatch {
                title: args.title,
                description: args.description,
                priority: args.priority,
                criteria: (!args.criteria.is_empty()).then_some(args.criteria),
            };
            let task = open(&args.home)?.update(&args.id, patch)?;
            print_task(args.json.json, &task, |task| {
                format!("updated {}\n\n{}", task.id, render_task(task))
            })
        }
        TaskCommand::Done(args) => {
            let task = open(&args.home)?.set_done(&args.id, true)?;
            print_task(args.json.json, &task, |task| {
                format!("done {}: {}\n", task.id, task.title)
            })
        }
        TaskCommand::Reopen(args) => {
            let task = open(&args.home)?.set_done(&args.id, false)?;
            print_task(args.json.json, &task, |task| {
                format!("open again {}: {}\n", task.id, task.title)
            })
        }
        TaskCommand::Rm(args) => {
            let task = open(&args.home)?.remove(&args.id)?;
            print_task(args.json.json, &task, |task| {
                format!("removed {}: {}\n", task.id, task.title)
            })
        }
        TaskCommand::Import(args) => {
            let report = open(&args.home)?.import(&args.file)?;
            if args.json.json {
                print_json(&report)?;
                return Ok(0);
            }
            println!(
                "imported {} ({}): {} added, {} marked done, {} already there",
                args.file.display(),
                report.format,
                report.added.len(),
                report.marked_done.len(),
                report.unchanged.len()
            );
            for (what, tasks) in [("added", &report.added), ("done", &report.marked_done)] {
                for task in tasks {
                    println!("  {what:<5} {}: {}", task.id, task.title);
                }
            }
            Ok(0)
        }
    }
}

/// The store of the home `--home` or `RALPH_HOME` names (else the current
/// directory); a missing home is an error naming where it came from.
fn open(home: &HomeArgs) -> anyhow::Result<Store> {
    let home = config::resolve_home(home.home.as_deref(), &config::Env::from_process())?;
    Ok(Store::open(&home)?)
}

fn print_task(json: bool, task: &Task, text: impl FnOnce(&Task) -> String) -> anyhow::Result<u8> {
    if json {
        print_json(task)?;
    } else {
        print!("{}", text(task));
    }
    Ok(0)
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
