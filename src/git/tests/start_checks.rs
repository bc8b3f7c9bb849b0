//! Tests of `git/start_checks.rs` and `GitRepo::open`: the checks before the
//! daemon touches the repository, and the home kept out of git.

use std::fs;
use std::path::PathBuf;

use git2::Repository;

use crate::git::tests::{AUTHOR, Fixture};
use crate::git::{GitError, GitRepo};

#[test]
fn open_names_the_path_when_not_a_work_tree() {
    let plain = tempfile::tempdir().unwrap();
    let error = GitRepo::open(plain.path()).unwrap_err();
    assert!(matches!(error, GitError::NotAWorkTree { .. }));
    assert!(
        error
            .to_string()
            .contains(&plain.path().display().to_string()),
        "{error}"
    );

    let fixture = Fixture::new();
    fs::create_dir(fixture.path("sub")).unwrap();
    let error = GitRepo::open(&fixture.path("sub")).unwrap_err();
    assert!(
        error.to_string().contains("inside the work tree"),
        "{error}"
    );

    let bare = tempfile::tempdir().unwrap();
    Repository::init_bare(bare.path()).unwrap();
    let error = GitRepo::open(bare.path()).unwrap_err();
    assert!(error.to_string().contains("bare"), "{error}");
}

#[test]
fn dirty_paths_lists_changes_up_to_the_limit() {
    let fixture = Fixture::new();
    assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
    fixture.write("a.txt", "modified\n");
    fixture.write("new.txt", "untracked\n");
    fixture.write("more.log", "ignored\n");
    fixture.write("b.txt", "staged\n");
    fixture.stage("b.txt");
    let mut dirty = fixture.repo.dirty_paths(10).unwrap();
    dirty.sort();
    assert_eq!(dirty, ["a.txt", "b.txt", "new.txt"]);
    assert_eq!(fixture.repo.dirty_paths(2).unwrap().len(), 2);
}

#[test]
fn home_inside_the_repo_is_excluded() {
    let fixture = Fixture::new();
    // A tracked file inside the home's state dir, like the project's own.
    fixture.write(".ralph/state/README.md", "tracked\n");
    fixture.write(".ralph/ralph.toml", "# config\n");
    let first = fixture.commit_all("add home");
    let mut repo = fixture.repo.clone();
    let dirs = repo.home_dirs_in_repo(&fixture.path(".ralph"));
    assert_eq!(
        dirs,
        [".ralph/state", ".ralph/archive", ".ralph/logs"].map(PathBuf::from)
    );
    repo.ensure_excluded(&dirs).unwrap();
    repo.ensure_excluded(&dirs).unwrap();
    let exclude = fs::read_to_string(fixture.raw.path().join("info/exclude")).unwrap();
    assert_eq!(exclude.matches("/.ralph/state/\n").count(), 1, "{exclude}");
    assert!(exclude.contains("/.ralph/archive/\n") && exclude.contains("/.ralph/logs/\n"));
    // A fresh value sees the ignore rule too.
    fixture.write(".ralph/state/progress.json", "{\"version\":1}\n");
    assert!(
        GitRepo::open(fixture.dir.path())
            .unwrap()
            .dirty_paths(10)
            .unwrap()
            .is_empty()
    );

    let start = repo.begin_cycle().unwrap();
    fixture.write(".ralph/state/cycles/1/scan.md", "phase output\n");
    fixture.write(".ralph/state/README.md", "rewritten by the daemon\n");
    fixture.write(".ralph/logs/ralphd.log.2026-11-22", "log\n");
    assert!(repo.measure_progress(&start).unwrap().is_empty());
    assert!(repo.dirty_paths(10).unwrap().is_empty());

    fixture.write("a.txt", "agent\n");
    assert_eq!(repo.measure_progress(&start).unwrap().files_changed, 1);
    let committed = repo
        .commit_cycle(&start, "c", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    assert_eq!(
        fixture
            .file_in_commit(committed, ".ralph/state/README.md")
            .unwrap(),
        b"tracked\n"
    );
    assert_eq!(
        fixture.file_in_commit(committed, ".ralph/state/progress.json"),
        None
    );
    assert_eq!(
        fixture.file_in_commit(committed, ".ralph/state/cycles/1/scan.md"),
        None
    );

    let start = repo.begin_cycle().unwrap();
    fixture.write("b.txt", "agent\n");
    fixture.write(".ralph/state/status.json", "{}\n");
    repo.save_attempt(&start, 2, "x", AUTHOR.0, AUTHOR.1)
        .unwrap();
    repo.rollback(&start).unwrap();
    assert_eq!(fixture.read("b.txt"), "bravo\n");
    assert_eq!(fixture.read(".ralph/state/status.json"), "{}\n");
    assert_eq!(
        fixture.read(".ralph/state/README.md"),
        "rewritten by the daemon\n"
    );
    assert_eq!(
        fixture.read(".ralph/state/cycles/1/scan.md"),
        "phase output\n"
    );
    assert_ne!(fixture.head(), Some(first));
}

#[test]
fn home_outside_the_repo_excludes_nothing() {
    let fixture = Fixture::new();
    let elsewhere = tempfile::tempdir().unwrap();
    assert!(fixture.repo.home_dirs_in_repo(elsewhere.path()).is_empty());
    let same = fixture.repo.home_dirs_in_repo(fixture.dir.path());
    assert_eq!(same, ["state", "archive", "logs"].map(PathBuf::from));
    let mut repo = fixture.repo.clone();
    assert!(
        repo.ensure_excluded(&[PathBuf::from("../outside")])
            .is_err()
    );
}
