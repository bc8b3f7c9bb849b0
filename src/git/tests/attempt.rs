//! Tests of `git/attempt.rs`: what a saved attempt holds.

use std::path::PathBuf;

use git2::Signature;

use crate::git::attempt::MASKED_LINE;
use crate::git::tests::{AUTHOR, Fixture};

#[test]
fn the_attempt_keeps_the_agents_commits_on_the_start_branch_and_on_its_own() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("a.txt", "on main\n");
    let on_main = fixture.commit_all("agent on main");
    let tip = fixture.raw.find_commit(on_main).unwrap();
    fixture.raw.branch("other", &tip, false).unwrap();
    fixture.raw.set_head("refs/heads/other").unwrap();
    fixture.write("b.txt", "on other\n");
    let on_other = fixture.commit_all("agent on other");
    // main moves back under the agent's commit while HEAD is elsewhere.
    fixture
        .raw
        .reference("refs/heads/main", start.start_commit().unwrap(), true, "")
        .unwrap();
    fixture.write("a.txt", "again\n");
    let (_, attempt) = fixture
        .repo
        .save_attempt(&start, 1, "m", AUTHOR.0, AUTHOR.1)
        .unwrap();
    assert_eq!(
        fixture
            .raw
            .find_commit(attempt)
            .unwrap()
            .parent_ids()
            .collect::<Vec<_>>(),
        [on_other]
    );

    // Now main carries an agent commit of its own that HEAD does not have.
    fixture
        .raw
        .reference("refs/heads/main", on_main, true, "")
        .unwrap();
    let main_tip = {
        let main = fixture.raw.find_commit(on_main).unwrap();
        let tree = main.tree().unwrap();
        let signature = Signature::now("agent", "a@a").unwrap();
        fixture
            .raw
            .commit(
                Some("refs/heads/main"),
                &signature,
                &signature,
                "agent again on main",
                &tree,
                &[&main],
            )
            .unwrap()
    };
    let (_, attempt) = fixture
        .repo
        .save_attempt(&start, 1, "m", AUTHOR.0, AUTHOR.1)
        .unwrap();
    assert_eq!(
        fixture
            .raw
            .find_commit(attempt)
            .unwrap()
            .parent_ids()
            .collect::<Vec<_>>(),
        [on_other, main_tip]
    );
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.head(), start.start_commit());
    assert_eq!(fixture.repo.branch_label().unwrap(), "main");
}

#[test]
fn a_masked_attempt_holds_neither_the_secret_nor_the_agents_commits() {
    let fixture = Fixture::new();
    let first = fixture.head().unwrap();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("cfg.py", "a = 1\nkey = 'SECRET'\nb = 2");
    fixture.commit_all("the agent's commit");
    fixture.write("other.txt", "SECRET\nkept\n");
    let reference = fixture
        .repo
        .save_masked_attempt(
            &start,
            4,
            "ralphd: cycle 4 attempt",
            AUTHOR,
            &[
                (PathBuf::from("cfg.py"), vec![2]),
                (PathBuf::from("other.txt"), vec![1]),
            ],
        )
        .unwrap();
    assert_eq!(reference, "refs/ralph/attempts/4");
    let attempt = fixture.raw.refname_to_id(&reference).unwrap();
    assert_eq!(
        fixture.file_in_commit(attempt, "cfg.py").unwrap(),
        format!("a = 1\n{MASKED_LINE}\nb = 2").as_bytes()
    );
    assert_eq!(
        fixture.file_in_commit(attempt, "other.txt").unwrap(),
        format!("{MASKED_LINE}\nkept\n").as_bytes()
    );
    let commit = fixture.raw.find_commit(attempt).unwrap();
    assert_eq!(commit.parent_ids().collect::<Vec<_>>(), [first]);
    let message = commit.message().unwrap();
    assert!(message.contains("cfg.py:2 other.txt:1"), "{message}");
    assert!(message.contains("1 commit(s) are not kept"), "{message}");
}
