use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::import::{label_priority, parse, parse_markdown};
use super::*;

fn home() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn store(home: &Path) -> Store {
    Store::open(home).unwrap()
}

fn new(title: &str) -> NewTask {
    NewTask {
        title: title.to_owned(),
        ..NewTask::default()
    }
}

fn prd_of(home: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(home.join("state/prd.json")).unwrap()).unwrap()
}

fn write_prd(home: &Path, text: &str) {
    std::fs::create_dir_all(home.join("state")).unwrap();
    std::fs::write(home.join("state/prd.json"), text).unwrap();
}

fn ids(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|task| task.id.as_str()).collect()
}

#[test]
fn the_first_add_creates_prd_json_in_the_seed_format() {
    let dir = home();
    let task = store(dir.path())
        .add(NewTask {
            title: "  Fix   the login page ".to_owned(),
            description: Some("It 500s.".to_owned()),
            priority: Some(2),
            criteria: vec!["a test".to_owned(), "  ".to_owned()],
            id: None,
        })
        .unwrap();
    assert_eq!(task.id, "T-1");
    assert_eq!(task.title, "Fix the login page");
    let prd = prd_of(dir.path());
    for key in ["project", "branchName", "description", "userStories"] {
        assert!(prd.get(key).is_some(), "missing {key}: {prd}");
    }
    assert_eq!(
        prd["userStories"][0],
        json!({"id": "T-1", "title": "Fix the login page", "description": "It 500s.",
            "acceptanceCriteria": ["a test"], "priority": 2, "passes": false, "notes": ""})
    );
    // The daemon's reader sees it as an open story.
    let open = crate::prd::open_stories(&prd);
    assert_eq!(open[0].id, "T-1");
}

#[test]
fn ids_are_short_and_never_reused_after_rm() {
    let dir = home();
    let store = store(dir.path());
    assert_eq!(store.add(new("a")).unwrap().id, "T-1");
    assert_eq!(store.add(new("b")).unwrap().id, "T-2");
    assert_eq!(store.remove("T-2").unwrap().title, "b");
    assert_eq!(store.add(new("c")).unwrap().id, "T-3");
    // A hand-written T-9 moves the counter past it.
    let added = store
        .add(NewTask {
            id: Some("T-9".to_owned()),
            ..new("d")
        })
        .unwrap();
    assert_eq!(added.id, "T-9");
    assert_eq!(store.add(new("e")).unwrap().id, "T-10");
}

#[test]
fn a_given_id_must_be_unique_and_usable() {
    let dir = home();
    let store = store(dir.path());
    store
        .add(NewTask {
            id: Some("FIX-1".to_owned()),
            ..new("a")
        })
        .unwrap();
    let error = store
        .add(NewTask {
            id: Some("fix-1".to_owned()),
            ..new("b")
        })
        .unwrap_err();
    assert!(matches!(error, TaskError::DuplicateId { .. }), "{error}");
    assert!(error.to_string().contains("fix-1"), "{error}");
    for bad in ["", "  ", "has space", &"x".repeat(65)] {
        let error = store
            .add(NewTask {
                id: Some(bad.to_owned()),
                ..new("b")
            })
            .unwrap_err();
        assert!(matches!(error, TaskError::BadId { .. }), "{bad:?}: {error}");
    }
    assert_eq!(store.list(Filter::All).unwrap().len(), 1);
}

#[test]
fn bad_input_is_refused_with_a_message_naming_the_fix() {
    let dir = home();
    let store = store(dir.path());
    let error = store.add(new(" \n ")).unwrap_err();
    assert!(matches!(error, TaskError::EmptyTitle), "{error}");
    for priority in [-1, 1000, i64::MAX] {
        let error = store
            .add(NewTask {
                priority: Some(priority),
                ..new("a")
            })
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&priority.to_string())
                && message.contains("0")
                && message.contains("999"),
            "{message}"
        );
    }
    assert!(
        !dir.path().join("state/prd.json").exists(),
        "nothing written"
    );
    store.add(new("a")).unwrap();
    for error in [
        store.show("T-7").unwrap_err(),
        store.set_done("T-7", true).unwrap_err(),
        store.remove("T-7").unwrap_err(),
        store
            .update(
                "T-7",
                TaskPatch {
                    title: Some("x".to_owned()),
                    ..TaskPatch::default()
                },
            )
            .unwrap_err(),
    ] {
        let message = error.to_string();
        assert!(
            message.contains("\"T-7\"") && message.contains("ralphd task list"),
            "{message}"
        );
    }
    let error = store.update("T-1", TaskPatch::default()).unwrap_err();
    assert!(
        matches!(error, TaskError::NothingToChange { .. }),
        "{error}"
    );
    let error = store
        .update(
            "T-1",
            TaskPatch {
                title: Some(String::new()),
                ..TaskPatch::default()
            },
        )
        .unwrap_err();
    assert!(matches!(error, TaskError::EmptyTitle), "{error}");
    let error = Store::open(&dir.path().join("missing")).unwrap_err();
    assert!(error.to_string().contains("--home"), "{error}");
}

#[test]
fn unknown_fields_and_the_users_key_order_survive_every_edit() {
    let dir = home();
    write_prd(
        dir.path(),
        r#"{"project":"p","custom":{"keep":1},"userStories":[
            {"passes":false,"id":"US-1","title":"mine","priority":1,"extra":"x"}]}"#,
    );
    let store = store(dir.path());
    store.add(new("a")).unwrap();
    store.set_done("US-1", true).unwrap();
    store
        .update(
            "us-1",
            TaskPatch {
                title: Some("renamed".to_owned()),
                ..TaskPatch::default()
            },
        )
        .unwrap();
    store.remove("T-1").unwrap();
    let prd = prd_of(dir.path());
    assert_eq!(prd["custom"], json!({"keep": 1}));
    let story = prd["userStories"][0].as_object().unwrap();
    let keys: Vec<&String> = story.keys().collect();
    assert_eq!(keys, ["passes", "id", "title", "priority", "extra"]);
    assert_eq!(story["passes"], json!(true));
    assert_eq!(story["title"], json!("renamed"));
}

#[test]
fn a_corrupt_prd_json_is_named_and_never_overwritten() {
    let dir = home();
    let store = store(dir.path());
    for text in ["{not json", "{\"userStories\": 5}", "[1,2]"] {
        write_prd(dir.path(), text);
        for error in [
            store.add(new("a")).unwrap_err(),
            store.list(Filter::All).unwrap_err(),
            store.set_done("T-1", true).unwrap_err(),
        ] {
            assert!(
                matches!(error, TaskError::Corrupt { .. }),
                "{text}: {error}"
            );
            assert!(error.to_string().contains("prd.json"), "{error}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("state/prd.json")).unwrap(),
            text
        );
    }
}

#[test]
fn list_is_in_the_order_the_daemon_takes_tasks_and_filters() {
    let dir = home();
    let store = store(dir.path());
    for (title, priority) in [("c", 3), ("a", 1), ("b", 2)] {
        store
            .add(NewTask {
                priority: Some(priority),
                ..new(title)
            })
            .unwrap();
    }
    store.set_done("T-2", true).unwrap();
    assert_eq!(
        ids(&store.list(Filter::All).unwrap()),
        ["T-3", "T-1", "T-2"]
    );
    assert_eq!(ids(&store.list(Filter::Open).unwrap()), ["T-3", "T-1"]);
    assert_eq!(ids(&store.list(Filter::Done).unwrap()), ["T-2"]);
    store.set_done("T-2", false).unwrap();
    assert_eq!(store.list(Filter::Done).unwrap(), []);
    // Without --priority a task queues after the others.
    assert_eq!(store.add(new("d")).unwrap().priority, Some(4));
}

#[test]
fn update_changes_only_what_it_is_given() {
    let dir = home();
    let store = store(dir.path());
    store
        .add(NewTask {
            description: Some("d".to_owned()),
            criteria: vec!["c1".to_owned()],
            ..new("t")
        })
        .unwrap();
    let task = store
        .update(
            "T-1",
            TaskPatch {
                priority: Some(7),
                criteria: Some(vec!["c2".to_owned(), "c3".to_owned()]),
                ..TaskPatch::default()
            },
        )
        .unwrap();
    assert_eq!(task.title, "t");
    assert_eq!(task.description, "d");
    assert_eq!(task.priority, Some(7));
    assert_eq!(task.acceptance_criteria, ["c2", "c3"]);
    assert_eq!(store.show("T-1").unwrap(), task);
}

/// The heart of the store: two writers (think `ralphd task` and the daemon)
/// editing at once lose nothing. Without the lock, edits read a stale file
/// and the last writer drops the other's change.
#[test]
fn concurrent_edits_from_two_writers_are_all_kept() {
    let dir = home();
    write_prd(
        dir.path(),
        &json!({"userStories": (0..40).map(|n| json!({"id": format!("US-{n}"), "title": "s", "passes": false})).collect::<Vec<_>>()})
            .to_string(),
    );
    let path = dir.path().to_path_buf();
    let daemon = std::thread::spawn(move || {
        let store = Store::open(&path).unwrap();
        for n in 0..40 {
            store.set_done(&format!("US-{n}"), true).unwrap();
        }
    });
    let user = store(dir.path());
    for n in 0..40 {
        user.add(new(&format!("user {n}"))).unwrap();
    }
    daemon.join().unwrap();
    let tasks = user.list(Filter::All).unwrap();
    assert_eq!(tasks.len(), 80);
    let done = tasks.iter().filter(|task| task.passes).count();
    assert_eq!(done, 40, "every story the daemon marked is still marked");
    let mut ids: Vec<&str> = ids(&tasks);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 80, "no id given out twice");
}

#[test]
fn an_edit_that_changes_nothing_does_not_rewrite_the_file() {
    let dir = home();
    let store = store(dir.path());
    store.add(new("a")).unwrap();
    store.set_done("T-1", true).unwrap();
    let before = std::fs::read_to_string(dir.path().join("state/prd.json")).unwrap();
    std::fs::write(
        dir.path().join("state/prd.json"),
        before.replace('\n', "\n\n"),
    )
    .unwrap();
    store.set_done("T-1", true).unwrap();
    let after = std::fs::read_to_string(dir.path().join("state/prd.json")).unwrap();
    assert!(after.contains("\n\n"), "the file was rewritten");
}

const CHECKLIST: &str = "\
# Tonight

- [ ] Fix the login page
  - [ ] returns 200
  - logs the error
    * deeper detail
- [x] Update  the README
* [ ] Speed up the build
Some text.
  - not a criterion: the paragraph ended the task

```
- [ ] inside a fence
```
1. [ ] Numbered item
- plain bullet
- [ ]
";

#[test]
fn a_markdown_checklist_becomes_tasks_with_nested_items_as_criteria() {
    let items = parse_markdown(CHECKLIST);
    let summary: Vec<(&str, bool, Vec<&str>)> = items
        .iter()
        .map(|item| {
            (
                item.title.as_str(),
                item.done,
                item.criteria.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "Fix the login page",
                false,
                vec!["returns 200", "logs the error", "deeper detail"]
            ),
            ("Update the README", true, vec![]),
            ("Speed up the build", false, vec![]),
            ("Numbered item", false, vec![]),
        ]
    );
    assert_eq!(items[1].source, "md:update the readme");
}

#[test]
fn importing_a_checklist_twice_adds_each_item_once() {
    let dir = home();
    let file = dir.path().join("todo.md");
    std::fs::write(&file, CHECKLIST).unwrap();
    let store = store(dir.path());
    let first = store.import(&file).unwrap();
    assert_eq!(first.format, "markdown");
    assert_eq!(ids(&first.added), ["T-1", "T-2", "T-3", "T-4"]);
    assert!(first.added[1].passes);
    assert_eq!(
        first.added[0].source.as_deref(),
        Some("md:fix the login page")
    );
    let bytes = std::fs::read(dir.path().join("state/prd.json")).unwrap();
    let second = store.import(&file).unwrap();
    assert_eq!(second.added, []);
    assert_eq!(second.unchanged.len(), 4);
    assert_eq!(
        std::fs::read(dir.path().join("state/prd.json")).unwrap(),
        bytes,
        "a re-import writes nothing"
    );
}

#[test]
fn a_re_import_keeps_the_users_edits_and_only_marks_checked_items_done() {
    let dir = home();
    let file = dir.path().join("todo.md");
    std::fs::write(&file, "- [ ] one\n- [ ] two\n- [x] three\n").unwrap();
    let store = store(dir.path());
    store.import(&file).unwrap();
    store
        .update(
            "T-1",
            TaskPatch {
                title: Some("one, as I renamed it".to_owned()),
                ..TaskPatch::default()
            },
        )
        .unwrap();
    store.set_done("T-2", true).unwrap();
    // The source now has one checked and three unchecked.
    std::fs::write(&file, "- [x] one\n- [ ] two\n- [ ] three\n- [ ] four\n").unwrap();
    let report = store.import(&file).unwrap();
    assert_eq!(ids(&report.marked_done), ["T-1"]);
    assert_eq!(ids(&report.added), ["T-4"]);
    let tasks = store.list(Filter::All).unwrap();
    let find = |id: &str| tasks.iter().find(|task| task.id == id).unwrap();
    assert_eq!(find("T-1").title, "one, as I renamed it");
    assert!(find("T-2").passes, "an import never reopens a task");
    assert!(find("T-3").passes, "an import never reopens a task");
}

const GH_ISSUES: &str = r#"[
  {"body":"The page 500s.\n","labels":[{"id":"L1","name":"bug","description":"","color":"d73a4a"},{"id":"L2","name":"priority:1","description":"","color":"fff"}],"number":12,"title":"Login fails"},
  {"body":"","labels":[{"id":"L3","name":"P3","description":"","color":"fff"}],"number":15,"title":"Faster build"},
  {"body":"x","labels":[],"number":17,"title":"Closed one","state":"CLOSED"}
]"#;

#[test]
fn gh_issue_json_becomes_tasks_with_body_and_label_priority_once() {
    let dir = home();
    let file = dir.path().join("issues.json");
    std::fs::write(&file, GH_ISSUES).unwrap();
    let store = store(dir.path());
    let report = store.import(&file).unwrap();
    assert_eq!(report.format, "github");
    let added = &report.added;
    assert_eq!(added.len(), 3);
    assert_eq!(added[0].title, "Login fails");
    assert_eq!(added[0].description, "The page 500s.");
    assert_eq!(added[0].priority, Some(1));
    assert_eq!(added[0].source.as_deref(), Some("gh#12"));
    assert_eq!(added[1].priority, Some(3));
    assert!(added[2].passes);
    let again = store.import(&file).unwrap();
    assert_eq!((again.added.len(), again.unchanged.len()), (0, 3));
    assert_eq!(store.list(Filter::All).unwrap().len(), 3);
}

#[test]
fn priority_labels() {
    for (label, expected) in [
        ("priority:1", Some(1)),
        ("Priority: 2", Some(2)),
        ("priority/0", Some(0)),
        ("priority-3", Some(3)),
        ("P1", Some(1)),
        ("p4", Some(4)),
        ("priority:99999", Some(999)),
        ("bug", None),
        ("p", None),
        ("priority:high", None),
        ("performance", None),
        ("P-1", None),
    ] {
        assert_eq!(label_priority(label), expected, "{label}");
    }
}

#[test]
fn a_file_that_is_neither_format_is_refused_by_name() {
    let dir = home();
    let store = store(dir.path());
    for (name, text, needle) in [
        ("notes.txt", "just some notes\n- a plain list\n", "neither"),
        ("obj.json", "{\"number\": 1}", "gh issue list"),
        ("bad.json", "[{\"title\": \"no number\"}]", "number"),
        ("empty.json", "[{\"number\": 3, \"title\": \" \"}]", "#3"),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let message = store.import(&file).unwrap_err().to_string();
        assert!(
            message.contains(name) && message.contains(needle),
            "{message}"
        );
    }
    let message = store
        .import(&dir.path().join("missing.md"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("missing.md"), "{message}");
    assert!(!dir.path().join("state/prd.json").exists());
}

#[test]
fn tables_for_people() {
    let task = Task {
        id: "T-12".to_owned(),
        title: "Fix it".to_owned(),
        description: "why".to_owned(),
        acceptance_criteria: vec!["c".to_owned()],
        priority: Some(2),
        passes: false,
        notes: String::new(),
        source: Some("gh#3".to_owned()),
    };
    assert_eq!(
        render_list(std::slice::from_ref(&task), Filter::All),
        "ID    STATUS  PRIORITY  TITLE\nT-12  open           2  Fix it\n"
    );
    assert!(render_list(&[], Filter::Open).contains("no open tasks"));
    let page = render_task(&task);
    for needle in ["T-12  Fix it", "status:   open", "gh#3", "why", "  - c"] {
        assert!(page.contains(needle), "{needle}: {page}");
    }
}

proptest! {
    #[test]
    fn any_text_parses_without_panic_and_imports_idempotently(text in "(\\PC|\n| |- \\[[ x]\\] |  |\t){0,200}") {
        if let Ok(parsed) = parse(&text) {
            let mut prd = json!({"userStories": []});
            let count = parsed.items.len();
            let first = super::import::apply(&mut prd, parsed).unwrap();
            let again = super::import::apply(&mut prd, parse(&text).unwrap()).unwrap();
            prop_assert!(again.added.is_empty());
            prop_assert_eq!(first.added.len() + first.unchanged.len() + first.marked_done.len(), count);
        }
    }
}

#[test]
fn huge_task_numbers_in_a_hand_edited_file_neither_panic_nor_collide() {
    let dir = home();
    write_prd(
        dir.path(),
        r#"{"nextTaskNumber": 18446744073709551615, "userStories": [
            {"id": "T-18446744073709551615", "title": "a", "passes": false},
            {"id": "T-99999999999999999999999", "title": "b", "passes": false}]}"#,
    );
    let store = store(dir.path());
    let first = store.add(new("c")).unwrap();
    let second = store.add(new("d")).unwrap();
    store.remove(&first.id).unwrap();
    store.remove("T-18446744073709551615").unwrap();
    let third = store.add(new("e")).unwrap();
    let mut all = ids(&store.list(Filter::All).unwrap())
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_ne!(first.id, second.id);
    assert_ne!(third.id, first.id);
}

/// One step of a user's session, for the model test below.
#[derive(Clone, Debug)]
enum Op {
    Add(String),
    Rename(usize, String),
    Done(usize, bool),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        "[a-z ]{0,8}".prop_map(Op::Add),
        (any::<usize>(), "[a-z]{1,8}").prop_map(|(n, title)| Op::Rename(n, title)),
        (any::<usize>(), any::<bool>()).prop_map(|(n, done)| Op::Done(n, done)),
        any::<usize>().prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any sequence of edits leaves prd.json as a plain map of id → task
    /// would be: ids unique and never reused, every change where it was made.
    #[test]
    fn the_store_behaves_like_a_map_of_tasks(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = home();
        let store = store(dir.path());
        let mut model: std::collections::BTreeMap<String, (String, bool)> = Default::default();
        let mut ever: Vec<String> = Vec::new();
        for op in ops {
            let pick = |n: usize| model.keys().nth(n % model.len().max(1)).cloned();
            match op {
                Op::Add(title) => match store.add(new(&title)) {
                    Ok(task) => {
                        prop_assert!(!ever.contains(&task.id), "{} reused", task.id);
                        ever.push(task.id.clone());
                        model.insert(task.id, (task.title, false));
                    }
                    Err(error) => {
                        prop_assert!(title.trim().is_empty());
                        let empty_title = matches!(error, TaskError::EmptyTitle);
                        prop_assert!(empty_title, "{}", error);
                    }
                },
                Op::Rename(n, title) => if let Some(id) = pick(n) {
                    store.update(&id, TaskPatch { title: Some(title.clone()), ..TaskPatch::default() }).unwrap();
                    model.get_mut(&id).unwrap().0 = title;
                },
                Op::Done(n, done) => if let Some(id) = pick(n) {
                    store.set_done(&id, done).unwrap();
                    model.get_mut(&id).unwrap().1 = done;
                },
                Op::Remove(n) => if let Some(id) = pick(n) {
                    store.remove(&id).unwrap();
                    model.remove(&id);
                    let gone = matches!(store.show(&id), Err(TaskError::UnknownId { .. }));
                    prop_assert!(gone, "{} still there", id);
                },
            }
        }
        let saved: std::collections::BTreeMap<String, (String, bool)> = store
            .list(Filter::All)
            .unwrap()
            .into_iter()
            .map(|task| (task.id, (task.title, task.passes)))
            .collect();
        prop_assert_eq!(saved, model);
    }
}

#[test]
fn an_exact_id_wins_over_one_that_differs_only_in_case() {
    let dir = home();
    write_prd(
        dir.path(),
        r#"{"userStories": [{"id": "fix-1", "title": "lower"}, {"id": "FIX-1", "title": "upper"}, {"id": 7, "title": "number"}]}"#,
    );
    let store = store(dir.path());
    assert_eq!(store.show("FIX-1").unwrap().title, "upper");
    assert_eq!(store.show("fix-1").unwrap().title, "lower");
    assert_eq!(store.show("Fix-1").unwrap().title, "lower");
    assert_eq!(store.set_done("FIX-1", true).unwrap().title, "upper");
    assert_eq!(store.show("7").unwrap().title, "number");
    assert_eq!(store.remove("FIX-1").unwrap().title, "upper");
    assert_eq!(store.list(Filter::All).unwrap().len(), 2);
}
