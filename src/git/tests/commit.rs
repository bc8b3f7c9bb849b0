//! Tests of `git/commit.rs`: what ralphd commits, the hooks' index, signed
//! commits and HEAD moving meanwhile.

use std::fs;
use std::path::Path;

use git2::{Oid, Signature};

use crate::git::GitError;
use crate::git::commit::Staged;
use crate::git::diff::DiffStats;
use crate::git::tests::{AUTHOR, Fixture, make_user_changes};

#[test]
fn agent_commits_count_as_progress_and_are_kept() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("a.txt", "alpha\nby the agent\n");
    let agent_head = fixture.commit_all("agent: edit a");

    let progress = fixture.repo.measure_progress(&start).unwrap();
    assert_eq!(
        progress,
        DiffStats {
            files_changed: 1,
            insertions: 1,
            deletions: 0,
            agent_commits: 1
        }
    );
    assert!(
        fixture
            .repo
            .diff_summary(&start, 4096)
            .unwrap()
            .contains("agent: edit a")
    );
    // Everything is committed already: no empty commit, the agent's HEAD.
    let committed = fixture
        .repo
        .commit_cycle(&start, "ralphd: cycle 1: x", AUTHOR.0, AUTHOR.1)
        .unwrap();
    assert_eq!(committed, Some(agent_head));
    assert_eq!(fixture.head(), Some(agent_head));

    // Agent commits plus uncommitted work: one more commit on top.
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("b.txt", "bravo\ncommitted by the agent\n");
    let agent_head = fixture.commit_all("agent: edit b");
    fixture.write("c.txt", "left for the daemon\n");
    let committed = fixture
        .repo
        .commit_cycle(&start, "ralphd: cycle 2: y", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    let commit = fixture.raw.find_commit(committed).unwrap();
    assert_eq!(commit.parent_ids().collect::<Vec<_>>(), [agent_head]);
    assert_eq!(commit.author().name_bytes(), b"ralphd");
    assert_eq!(commit.message_bytes(), b"ralphd: cycle 2: y");
    assert_eq!(
        fixture.file_in_commit(committed, "c.txt").unwrap(),
        b"left for the daemon\n"
    );
    assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
}

#[test]
fn commit_stages_deletions_and_respects_gitignore() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fs::remove_file(fixture.path("b.txt")).unwrap();
    fixture.write("d.txt", "delta\n");
    fixture.write("build.log", "ignored\n");
    let committed = fixture
        .repo
        .commit_cycle(&start, "ralphd: cycle 1: z", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    assert_eq!(fixture.file_in_commit(committed, "b.txt"), None);
    assert_eq!(
        fixture.file_in_commit(committed, "d.txt").unwrap(),
        b"delta\n"
    );
    assert_eq!(fixture.file_in_commit(committed, "build.log"), None);
    assert_eq!(fixture.head(), Some(committed));
    assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
}

#[test]
fn allow_dirty_user_changes_are_never_committed() {
    let fixture = Fixture::new();
    let first = fixture.head().unwrap();
    make_user_changes(&fixture);
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("agent.txt", "the agent's work\n");
    fixture.write(
        "a.txt",
        "alpha\nthe user's unsaved work\nand the agent's line\n",
    );
    let user_files_before: Vec<_> = ["a.txt", "notes/todo.txt", "tool.sh", "run.sh"]
        .iter()
        .map(|rel| (fixture.read(rel), fixture.mode(rel)))
        .collect();

    let committed = fixture
        .repo
        .commit_cycle(&start, "ralphd: cycle 1: agent", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    assert_eq!(
        fixture.file_in_commit(committed, "agent.txt").unwrap(),
        b"the agent's work\n"
    );
    for rel in ["a.txt", "b.txt", "run.sh"] {
        assert_eq!(
            fixture.file_in_commit(committed, rel),
            fixture.file_in_commit(first, rel),
            "{rel}"
        );
    }
    assert_eq!(fixture.file_in_commit(committed, "notes/todo.txt"), None);
    assert_eq!(fixture.file_in_commit(committed, "tool.sh"), None);
    // The work tree is untouched and the user's changes are still pending,
    // the staged one still staged.
    let user_files_after: Vec<_> = ["a.txt", "notes/todo.txt", "tool.sh", "run.sh"]
        .iter()
        .map(|rel| (fixture.read(rel), fixture.mode(rel)))
        .collect();
    assert_eq!(user_files_after, user_files_before);
    assert!(!fixture.path("b.txt").exists());
    let mut dirty = fixture.repo.dirty_paths(10).unwrap();
    dirty.sort();
    assert_eq!(
        dirty,
        [
            "a.txt",
            "b.txt",
            "link",
            "notes/",
            "readonly.txt",
            "run.sh",
            "tool.sh"
        ]
    );
    let staged_run = fixture
        .raw
        .blob(b"#!/bin/sh\necho staged by the user\n")
        .unwrap();
    assert!(
        fixture
            .index_entries()
            .iter()
            .any(|e| e.0 == b"run.sh" && e.1 == staged_run)
    );
}

#[test]
fn unborn_branch_gets_its_first_commit() {
    let fixture = Fixture::unborn();
    assert_eq!(fixture.repo.branch_label().unwrap(), "main");
    assert!(fixture.repo.dirty_paths(10).unwrap().is_empty());
    let start = fixture.repo.begin_cycle().unwrap();
    assert_eq!(start.start_commit(), None);
    assert!(fixture.repo.measure_progress(&start).unwrap().is_empty());
    fixture.write("src/lib.rs", "fn main() {}\n");
    assert_eq!(
        fixture.repo.measure_progress(&start).unwrap().files_changed,
        1
    );
    let committed = fixture
        .repo
        .commit_cycle(&start, "ralphd: cycle 1: start", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    let commit = fixture.raw.find_commit(committed).unwrap();
    assert_eq!(commit.parent_count(), 0);
    assert_eq!(
        fixture.raw.refname_to_id("refs/heads/main").unwrap(),
        committed
    );
    assert_eq!(fixture.repo.branch_label().unwrap(), "main");
}

#[test]
fn head_moved_during_the_commit_is_an_error() {
    let fixture = Fixture::new();
    let repo = fixture.repo.open_repo("test").unwrap();
    let stale = repo.head().unwrap().peel_to_commit().unwrap();
    fixture.write("a.txt", "someone else\n");
    fixture.commit_all("someone else committed");
    let signature = Signature::now("ralphd", "ralphd@localhost").unwrap();
    let tree = stale.tree().unwrap();
    let error = fixture
        .repo
        .commit_on_head(&repo, "commit", &signature, "m", &tree, Some(&stale))
        .unwrap_err();
    assert!(matches!(error, GitError::HeadMoved { .. }), "{error}");
}

/// The paths and blobs of a tree, sorted.
fn tree_entries(fixture: &Fixture, tree: Oid) -> Vec<(String, Oid)> {
    let tree = fixture.raw.find_tree(tree).unwrap();
    let mut entries = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            entries.push((format!("{dir}{}", entry.name().unwrap()), entry.id()));
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    entries
}

#[test]
fn the_hooks_index_holds_exactly_the_commit_even_beside_the_users_staged_change() {
    let fixture = Fixture::new();
    make_user_changes(&fixture);
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("agent.txt", "the agent's work\n");
    let Staged::Ready(staged) = fixture.repo.stage_commit(&start, true).unwrap() else {
        panic!("something to commit");
    };
    let hook_index_path = staged.hook_index().unwrap().to_path_buf();
    let mut hook_index = git2::Index::open(&hook_index_path).unwrap();
    hook_index.read(true).unwrap();
    let hook_tree = hook_index.write_tree_to(&fixture.raw).unwrap();
    assert_eq!(
        tree_entries(&fixture, hook_tree),
        tree_entries(&fixture, staged.tree),
        "the hooks see what will be committed"
    );
    assert!(
        hook_index.get_path(Path::new("agent.txt"), 0).is_some(),
        "with the agent's file"
    );
    let head_tree = fixture
        .raw
        .find_commit(fixture.head().unwrap())
        .unwrap()
        .tree_id();
    let run_sh = |tree| {
        tree_entries(&fixture, tree)
            .into_iter()
            .find(|(path, _)| path == "run.sh")
    };
    assert_eq!(
        run_sh(hook_tree),
        run_sh(head_tree),
        "not the user's staged run.sh"
    );

    let staged = fixture.repo.after_hooks(staged).unwrap();
    assert!(!hook_index_path.exists(), "the hooks' index is removed");
    let commit = fixture
        .repo
        .commit_staged(&staged, "ralphd: cycle 1: agent", AUTHOR.0, AUTHOR.1)
        .unwrap();
    assert_eq!(
        fixture.raw.find_commit(commit).unwrap().tree_id(),
        hook_tree
    );
}

#[test]
fn what_a_hook_stages_is_committed_and_staged_in_the_real_index() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("a.txt", "alpha  \n");
    let Staged::Ready(staged) = fixture.repo.stage_commit(&start, true).unwrap() else {
        panic!("something to commit");
    };
    // A formatting hook: fixes the file and stages the fix in its index.
    fixture.write("a.txt", "alpha\n");
    let mut hook_index = git2::Index::open(staged.hook_index().unwrap()).unwrap();
    hook_index.read(true).unwrap();
    let blob = fixture.raw.blob(b"alpha\n").unwrap();
    let mut entry = hook_index.get_path(Path::new("a.txt"), 0).unwrap();
    entry.id = blob;
    entry.file_size = 6;
    hook_index.add(&entry).unwrap();
    hook_index.write().unwrap();

    let staged = fixture.repo.after_hooks(staged).unwrap();
    let commit = fixture
        .repo
        .commit_staged(&staged, "ralphd: cycle 1: format", AUTHOR.0, AUTHOR.1)
        .unwrap();
    assert_eq!(fixture.file_in_commit(commit, "a.txt").unwrap(), b"alpha\n");
    let staged_blob = fixture
        .index_entries()
        .into_iter()
        .find(|(path, _, _)| path == b"a.txt")
        .map(|(_, blob, _)| blob);
    assert_eq!(staged_blob, Some(blob), "the real index agrees with HEAD");
}

#[test]
fn a_signed_commit_moves_the_branch_only_from_where_it_was() {
    let fixture = Fixture::new();
    let first = fixture.head().unwrap();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("agent.txt", "work\n");
    let Staged::Ready(staged) = fixture.repo.stage_commit(&start, false).unwrap() else {
        panic!("something to commit");
    };
    let payload = fixture
        .repo
        .commit_payload(&staged, "ralphd: cycle 1: signed", AUTHOR.0, AUTHOR.1)
        .unwrap();
    assert!(payload.contains(&format!("parent {first}")), "{payload}");
    let signature = "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n";
    let commit = fixture
        .repo
        .commit_signed(&staged, &payload, signature)
        .unwrap();
    assert_eq!(fixture.head(), Some(commit));
    assert_eq!(fixture.repo.branch_label().unwrap(), "main");
    let (stored, _) = fixture.raw.extract_signature(&commit, None).unwrap();
    assert_eq!(stored.as_str().unwrap(), signature);
    let reflog = fixture.raw.reflog("HEAD").unwrap();
    assert_eq!(
        reflog.get(0).unwrap().message().unwrap(),
        Some("commit: ralphd: cycle 1: signed")
    );

    // HEAD moved since staging: refused, the branch stays where it is.
    let error = fixture
        .repo
        .commit_signed(&staged, &payload, signature)
        .unwrap_err();
    assert!(matches!(error, GitError::HeadMoved { .. }), "{error}");
    assert_eq!(fixture.head(), Some(commit));
}
