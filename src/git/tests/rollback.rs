//! Tests of `git/rollback.rs`: the repository comes back exactly as it was,
//! the user's own changes byte for byte, and the attempt saved before holds
//! the cycle's work.

use std::fs;
use std::path::Path;

use git2::{ErrorCode, Repository};

use crate::git::GitError;
use crate::git::diff::DiffStats;
use crate::git::tests::{AUTHOR, Fixture, make_user_changes};

#[test]
fn rollback_restores_the_start_state_and_the_attempt_holds_the_edit() {
    let fixture = Fixture::new();
    let before = fixture.state();
    let start = fixture.repo.begin_cycle().unwrap();

    fixture.write("a.txt", "alpha\nedited by the agent\n");
    fs::remove_file(fixture.path("b.txt")).unwrap();
    fixture.write("new/deep/c.txt", "created\n");
    fixture.write("new/agent.log", "ignored output of the agent\n");
    fixture.chmod("run.sh", 0o644);
    fixture.stage("a.txt");

    let progress = fixture.repo.measure_progress(&start).unwrap();
    assert_eq!(
        progress,
        DiffStats {
            files_changed: 4,
            insertions: 2,
            deletions: 1,
            agent_commits: 0
        }
    );
    let summary = fixture.repo.diff_summary(&start, 4096).unwrap();
    assert!(summary.contains("M a.txt +1 -0"), "{summary}");
    assert!(summary.contains("D b.txt"), "{summary}");
    assert!(summary.contains("A new/deep/c.txt"), "{summary}");
    assert!(summary.contains("+edited by the agent"), "{summary}");

    let (cycle_ref, attempt) = fixture
        .repo
        .save_attempt(
            &start,
            7,
            "ralphd: cycle 7 failed: checks",
            AUTHOR.0,
            AUTHOR.1,
        )
        .unwrap();
    assert_eq!(cycle_ref, "refs/ralph/attempts/7");
    assert_eq!(
        fixture.file_in_commit(attempt, "a.txt").unwrap(),
        b"alpha\nedited by the agent\n"
    );
    assert_eq!(
        fixture.file_in_commit(attempt, "new/deep/c.txt").unwrap(),
        b"created\n"
    );
    assert_eq!(fixture.file_in_commit(attempt, "b.txt"), None);
    assert_eq!(fixture.file_in_commit(attempt, "new/agent.log"), None);
    assert_eq!(
        fixture
            .raw
            .find_commit(attempt)
            .unwrap()
            .parent_id(0)
            .unwrap(),
        before.0.unwrap()
    );
    // Saving did not touch the work tree, the index or HEAD.
    assert_eq!(
        fixture
            .index_entries()
            .iter()
            .find(|e| e.0 == b"a.txt")
            .unwrap()
            .1,
        fixture.raw.blob(b"alpha\nedited by the agent\n").unwrap()
    );

    fixture.repo.rollback(&start).unwrap();
    let mut after = fixture.state();
    // The agent's ignored file is left alone; everything else is exact.
    assert_eq!(
        after.2.remove(Path::new("new/agent.log")).unwrap().0,
        b"ignored output of the agent\n"
    );
    assert_eq!(after, before);
    assert_eq!(fixture.mode("run.sh"), 0o755);
    assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());

    // A second attempt for the same cycle never overwrites the first.
    let (second_ref, _) = fixture
        .repo
        .save_attempt(&start, 7, "again", AUTHOR.0, AUTHOR.1)
        .unwrap();
    assert_eq!(second_ref, "refs/ralph/attempts/7-2");
    let attempts = fixture.repo.list_attempts().unwrap();
    let names: Vec<&str> = attempts.iter().map(|a| a.cycle_ref.as_str()).collect();
    assert_eq!(names, ["refs/ralph/attempts/7", "refs/ralph/attempts/7-2"]);
    assert_eq!(attempts[0].oid, attempt);
    assert_eq!(attempts[0].summary, "ralphd: cycle 7 failed: checks");
}

#[test]
fn allow_dirty_user_changes_survive_a_rollback_byte_for_byte() {
    let fixture = Fixture::new();
    make_user_changes(&fixture);
    let before = fixture.state();
    let start = fixture.repo.begin_cycle().unwrap();
    let user_paths: Vec<&Path> = start.user_paths().collect();
    assert_eq!(user_paths.len(), 7, "{user_paths:?}");
    // The snapshot is kept alive by a ref.
    let snapshot = fixture.raw.refname_to_id("refs/ralph/dirty-start").unwrap();
    assert_eq!(
        fixture.file_in_commit(snapshot, "notes/todo.txt").unwrap(),
        b"user's untracked notes\n"
    );

    // Not progress: the user's changes are the baseline.
    assert!(fixture.repo.measure_progress(&start).unwrap().is_empty());

    // The agent edits a user file, deletes one, recreates the deleted one,
    // changes a mode and adds its own file.
    fixture.write("a.txt", "agent overwrote everything\n");
    fs::remove_file(fixture.path("notes/todo.txt")).unwrap();
    fixture.write("b.txt", "recreated by the agent\n");
    fixture.chmod("tool.sh", 0o644);
    fixture.write("agent.txt", "new\n");
    fs::remove_file(fixture.path("link")).unwrap();
    fixture.write("link", "a file where the user's symlink was\n");
    fixture.chmod("readonly.txt", 0o644);
    fixture.write("readonly.txt", "changed\n");
    let progress = fixture.repo.measure_progress(&start).unwrap();
    assert_eq!(progress.files_changed, 7, "{progress:?}");

    fixture
        .repo
        .save_attempt(&start, 1, "ralphd: cycle 1 failed", AUTHOR.0, AUTHOR.1)
        .unwrap();
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.state(), before);
    assert_eq!(fixture.mode("tool.sh"), 0o750);
    assert!(!fixture.path("b.txt").exists());
}

#[test]
fn rollback_drops_agent_commits_from_the_branch_and_the_attempt_keeps_them() {
    let fixture = Fixture::new();
    let before = fixture.state();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("a.txt", "committed by the agent\n");
    let agent_commit = fixture.commit_all("agent");
    fixture.write("b.txt", "uncommitted\n");
    let (_, attempt) = fixture
        .repo
        .save_attempt(&start, 3, "x", AUTHOR.0, AUTHOR.1)
        .unwrap();
    let attempt_commit = fixture.raw.find_commit(attempt).unwrap();
    assert_eq!(attempt_commit.parent_id(0).unwrap(), agent_commit);
    assert!(
        attempt_commit
            .message()
            .unwrap()
            .contains(&format!("Cycle-Start: {}", before.0.unwrap()))
    );
    assert_eq!(
        fixture.file_in_commit(attempt, "b.txt").unwrap(),
        b"uncommitted\n"
    );
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.state(), before);
    assert_eq!(
        fixture.repo.measure_progress(&start).unwrap(),
        DiffStats::default()
    );
}

#[test]
fn rollback_undoes_a_branch_switch_by_the_agent() {
    let fixture = Fixture::new();
    let before = fixture.state();
    let start = fixture.repo.begin_cycle().unwrap();
    let first = fixture.raw.find_commit(fixture.head().unwrap()).unwrap();
    fixture.raw.branch("agent-branch", &first, false).unwrap();
    fixture.raw.set_head("refs/heads/agent-branch").unwrap();
    fixture.write("a.txt", "on the agent's branch\n");
    let agent_commit = fixture.commit_all("agent");
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.state(), before);
    // The other branch is left as the agent made it.
    assert_eq!(
        fixture
            .raw
            .refname_to_id("refs/heads/agent-branch")
            .unwrap(),
        agent_commit
    );
}

#[test]
fn rollback_never_removes_files_that_were_ignored_at_start() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    // The agent un-ignores the user's ignored file and adds its own.
    fixture.write(".gitignore", "\n");
    fixture.write("agent.txt", "x\n");
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.read("keep.log"), "ignored, never touched\n");
    assert_eq!(fixture.read(".gitignore"), "*.log\n");
    assert!(!fixture.path("agent.txt").exists());
}

#[test]
fn rollback_handles_odd_paths_and_leaves_nested_repositories_alone() {
    use std::os::unix::ffi::OsStrExt;
    let fixture = Fixture::new();
    fixture.write("dir/x.txt", "tracked in a directory\n");
    fixture.commit_all("add dir");
    // An untracked nested repository of the user's.
    let nested = Repository::init(fixture.path("vendor/lib")).unwrap();
    fs::write(fixture.path("vendor/lib/file.txt"), "nested\n").unwrap();
    drop(nested);
    let before = fixture.state();
    let start = fixture.repo.begin_cycle().unwrap();

    // The agent replaces a directory with a file, creates a file whose
    // name is not UTF-8 and one with spaces and glob characters.
    fs::remove_dir_all(fixture.path("dir")).unwrap();
    fixture.write("dir", "now a file\n");
    let odd = fixture
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"bad-\xff.txt"));
    fs::write(&odd, "x\n").unwrap();
    fixture.write("sp ace [*].txt", "y\n");
    assert_eq!(
        fixture.repo.measure_progress(&start).unwrap().files_changed,
        4
    );
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.state(), before);
    assert_eq!(
        fs::read_to_string(fixture.path("vendor/lib/file.txt")).unwrap(),
        "nested\n"
    );
}

#[test]
fn executable_bit_is_restored_for_tracked_files() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.chmod("run.sh", 0o644);
    assert_eq!(
        fixture.repo.measure_progress(&start).unwrap().files_changed,
        1
    );
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.mode("run.sh"), 0o755);
    assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
}

#[test]
fn unborn_branch_rolls_back_to_unborn() {
    let fixture = Fixture::unborn();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("one.txt", "1\n");
    fixture.commit_all("agent commit on the unborn branch");
    fixture.write("two.txt", "2\n");
    fixture.stage("two.txt");
    let progress = fixture.repo.measure_progress(&start).unwrap();
    assert_eq!((progress.files_changed, progress.agent_commits), (2, 1));
    let (_, attempt) = fixture
        .repo
        .save_attempt(&start, 1, "x", AUTHOR.0, AUTHOR.1)
        .unwrap();
    assert_eq!(fixture.raw.find_commit(attempt).unwrap().parent_count(), 1);
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(
        fixture.raw.head().err().map(|e| e.code()),
        Some(ErrorCode::UnbornBranch)
    );
    assert!(fixture.files().is_empty(), "{:?}", fixture.files());
    assert!(fixture.index_entries().is_empty());
    assert_eq!(fixture.repo.branch_label().unwrap(), "main");
}

#[test]
fn detached_head_label_and_rollback() {
    let fixture = Fixture::new();
    let first = fixture.head().unwrap();
    fixture.raw.set_head_detached(first).unwrap();
    let label = fixture.repo.branch_label().unwrap();
    assert_eq!(label, format!("detached-{}", &first.to_string()[..7]));
    let start = fixture.repo.begin_cycle().unwrap();
    assert_eq!(start.branch_label(), label);
    fixture.write("a.txt", "x\n");
    fixture.commit_all("agent on detached HEAD");
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.repo.branch_label().unwrap(), label);
    assert_eq!(fixture.read("a.txt"), "alpha\n");
}

#[test]
fn index_lock_is_a_locked_error_and_changes_nothing() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("a.txt", "agent\n");
    fixture.write("new.txt", "agent\n");
    let lock = fixture.raw.path().join("index.lock");
    fs::write(&lock, "").unwrap();
    let before = fixture.state();

    let error = fixture
        .repo
        .commit_cycle(&start, "m", AUTHOR.0, AUTHOR.1)
        .unwrap_err();
    assert!(matches!(error, GitError::Locked { .. }), "{error}");
    assert!(error.is_transient());
    let message = error.to_string();
    assert!(
        message.contains("index.lock")
            && message.contains(&fixture.repo.workdir().display().to_string()),
        "{message}"
    );
    let error = fixture.repo.rollback(&start).unwrap_err();
    assert!(matches!(error, GitError::Locked { .. }), "{error}");
    assert_eq!(fixture.state(), before);
    assert!(lock.exists());

    fs::remove_file(&lock).unwrap();
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.read("a.txt"), "alpha\n");
    assert!(!fixture.path("new.txt").exists());
}
