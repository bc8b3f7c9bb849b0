//! Tests of `git/submodule.rs`: work inside a submodule is seen, saved in the
//! submodule's own repository and undone.

use std::fs;
use std::path::Path;

use git2::{IndexAddOption, Oid, Repository, Signature};
use tempfile::TempDir;

use crate::git::snapshot::Snapshot;
use crate::git::tests::{AUTHOR, Fixture};
use crate::git::trespass::Trespass;

/// A Fixture whose repo has a checked-out submodule `lib` (one commit:
/// `lib.txt`), committed on main. The origin dir must outlive the test.
fn with_submodule() -> (Fixture, TempDir) {
    let fixture = Fixture::new();
    let origin = tempfile::tempdir().unwrap();
    let origin_repo = Repository::init(origin.path()).unwrap();
    fs::write(origin.path().join("lib.txt"), "library\n").unwrap();
    let mut index = origin_repo.index().unwrap();
    index.add_path(Path::new("lib.txt")).unwrap();
    let tree = origin_repo.find_tree(index.write_tree().unwrap()).unwrap();
    let signature = Signature::now("t", "t@t").unwrap();
    origin_repo
        .commit(Some("HEAD"), &signature, &signature, "lib", &tree, &[])
        .unwrap();
    {
        let mut submodule = fixture
            .raw
            .submodule(origin.path().to_str().unwrap(), Path::new("lib"), true)
            .unwrap();
        submodule.clone(None).unwrap();
        submodule.add_finalize().unwrap();
    }
    fixture.commit_all("add the lib submodule");
    (fixture, origin)
}

fn lib_repo(fixture: &Fixture) -> Repository {
    Repository::open(fixture.path("lib")).unwrap()
}

fn commit_in(repo: &Repository, message: &str) -> Oid {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let signature = Signature::now("agent", "agent@example.com").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        message,
        &tree,
        &[&parent],
    )
    .unwrap()
}

#[test]
fn a_repository_without_submodules_records_none() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    assert!(start.submodules.is_empty());
    let json = serde_json::to_string(&start).unwrap();
    assert!(!json.contains("submodules"), "{json}");
    // An in-flight.json written before submodules were recorded still loads.
    let _: Snapshot = serde_json::from_str(&json).unwrap();
}

#[test]
fn an_edit_inside_a_submodule_is_a_trespass_saved_there_and_undone() {
    let (fixture, _origin) = with_submodule();
    let lib = lib_repo(&fixture);
    let lib_head = lib.head().unwrap().target().unwrap();
    let start = fixture.repo.begin_cycle().unwrap();
    assert_eq!(start.submodules.len(), 1);
    assert!(fixture.repo.trespasses(&start).unwrap().is_empty());

    fixture.write("lib/lib.txt", "hacked\n");
    fixture.write("lib/new.txt", "new\n");
    // The parent sees no change of its own: today's blind spot.
    assert!(fixture.repo.measure_progress(&start).unwrap().is_empty());
    let found = fixture.repo.trespasses(&start).unwrap();
    assert_eq!(
        found,
        [Trespass::ChangedSubmodules {
            changes: vec!["lib (files edited)".to_owned()]
        }]
    );
    assert!(
        found[0]
            .to_string()
            .starts_with("the agent changed submodule lib (files edited)")
    );

    let reference = fixture
        .repo
        .save_changes(&start, 4, "m", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    let message = fixture
        .raw
        .find_reference(&reference)
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .message()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("Submodule-Attempt: lib refs/ralph/attempts/4"),
        "{message}"
    );
    let saved = lib
        .find_reference("refs/ralph/attempts/4")
        .unwrap()
        .peel_to_tree()
        .unwrap();
    assert!(saved.get_path(Path::new("new.txt")).is_ok());

    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.read("lib/lib.txt"), "library\n");
    assert!(!fixture.path("lib/new.txt").exists());
    assert_eq!(lib.head().unwrap().target(), Some(lib_head));
    assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
}

#[test]
fn a_moved_submodule_head_is_a_trespass_and_is_put_back() {
    let (fixture, _origin) = with_submodule();
    let lib = lib_repo(&fixture);
    let lib_head = lib.head().unwrap().target().unwrap();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("lib/lib.txt", "committed by the agent\n");
    let agent_commit = commit_in(&lib, "agent inside lib");
    let found = fixture.repo.trespasses(&start).unwrap();
    assert_eq!(
        found,
        [Trespass::ChangedSubmodules {
            changes: vec!["lib (HEAD moved, files edited)".to_owned()]
        }]
    );
    fixture
        .repo
        .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    let saved = lib.refname_to_id("refs/ralph/attempts/1").unwrap();
    assert!(lib.graph_descendant_of(saved, agent_commit).unwrap());
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(lib.head().unwrap().target(), Some(lib_head));
    assert_eq!(fixture.read("lib/lib.txt"), "library\n");
}

#[test]
fn a_removed_submodule_work_tree_is_reattached_and_restored() {
    let (fixture, _origin) = with_submodule();
    let lib_head = lib_repo(&fixture).head().unwrap().target().unwrap();
    let start = fixture.repo.begin_cycle().unwrap();
    fs::remove_dir_all(fixture.path("lib")).unwrap();
    let found = fixture.repo.trespasses(&start).unwrap();
    assert_eq!(
        found,
        [Trespass::ChangedSubmodules {
            changes: vec!["lib (its work tree was removed)".to_owned()]
        }]
    );
    fixture
        .repo
        .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.read("lib/lib.txt"), "library\n");
    assert_eq!(lib_repo(&fixture).head().unwrap().target(), Some(lib_head));
    assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
}

#[test]
fn the_users_own_changes_inside_a_submodule_survive_the_rollback() {
    let (fixture, _origin) = with_submodule();
    fixture.write("lib/lib.txt", "the user's edit\n");
    let start = fixture.repo.begin_cycle().unwrap();
    assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
    fixture.write("lib/agent.txt", "agent\n");
    fixture.write("lib/lib.txt", "the agent's edit\n");
    assert_eq!(fixture.repo.trespasses(&start).unwrap().len(), 1);
    fixture
        .repo
        .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.read("lib/lib.txt"), "the user's edit\n");
    assert!(!fixture.path("lib/agent.txt").exists());
}

#[test]
fn a_masked_attempt_keeps_the_agents_submodule_work_too() {
    let (fixture, _origin) = with_submodule();
    let lib = lib_repo(&fixture);
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("config.txt", "token = hunter2\n");
    fixture.write("lib/new.txt", "submodule work\n");

    let masks = vec![(Path::new("config.txt").to_path_buf(), vec![1])];
    let reference = fixture
        .repo
        .save_masked_attempt(&start, 4, "m", AUTHOR, &masks)
        .unwrap();
    let message = fixture
        .raw
        .find_reference(&reference)
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .message()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("Submodule-Attempt: lib refs/ralph/attempts/4"),
        "{message}"
    );

    fixture.repo.rollback(&start).unwrap();
    assert!(!fixture.path("lib/new.txt").exists());
    let saved = lib
        .find_reference("refs/ralph/attempts/4")
        .expect("the submodule work is saved in the submodule")
        .peel_to_tree()
        .unwrap();
    let entry = saved.get_path(Path::new("new.txt")).unwrap();
    let blob = lib.find_blob(entry.id()).unwrap();
    assert_eq!(blob.content(), b"submodule work\n");
}
