//! Tests of `git/trespass.rs`: what the agent may not do to the cycle's
//! branch is named, saved and undone.

use crate::git::tests::{AUTHOR, Fixture};
use crate::git::trespass::Trespass;

#[test]
fn commits_that_build_on_the_start_are_no_trespass() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
    fixture.write("a.txt", "agent\n");
    fixture.commit_all("agent");
    fixture.write("b.txt", "uncommitted\n");
    assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
}

#[test]
fn a_reset_or_an_amend_moves_the_branch_off_the_start_commit() {
    let fixture = Fixture::new();
    let first = fixture.head().unwrap();
    fixture.write("a.txt", "user\n");
    let user_commit = fixture.commit_all("user work");
    let start = fixture.repo.begin_cycle().unwrap();
    // `git reset --hard HEAD~1`, then a commit of the agent's on top.
    fixture
        .raw
        .reference("refs/heads/main", first, true, "reset")
        .unwrap();
    fixture
        .raw
        .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .unwrap();
    fixture.write("agent.txt", "agent\n");
    let agent_commit = fixture.commit_all("agent rewrote history");
    let found = fixture.repo.trespasses(&start).unwrap();
    assert_eq!(
        found,
        [Trespass::RewroteHistory {
            branch: "branch main".to_owned(),
            commit: user_commit,
        }]
    );
    let text = found[0].to_string();
    assert!(
        text.starts_with("the agent moved branch main off ")
            && text.contains(&user_commit.to_string()[..7]),
        "{text}"
    );

    let reference = fixture
        .repo
        .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
        .unwrap()
        .unwrap();
    let attempt = fixture.raw.refname_to_id(&reference).unwrap();
    assert!(
        fixture
            .raw
            .graph_descendant_of(attempt, agent_commit)
            .unwrap()
    );
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.head(), Some(user_commit));
    assert_eq!(fixture.read("a.txt"), "user\n");
    assert!(!fixture.path("agent.txt").exists());
    assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
}

#[test]
fn a_switch_and_a_deleted_branch_are_named_and_undone() {
    let fixture = Fixture::new();
    let before = fixture.state();
    let start = fixture.repo.begin_cycle().unwrap();
    let first = fixture.raw.find_commit(fixture.head().unwrap()).unwrap();
    fixture.raw.branch("scratch", &first, false).unwrap();
    fixture.raw.set_head("refs/heads/scratch").unwrap();
    fixture
        .raw
        .find_reference("refs/heads/main")
        .unwrap()
        .delete()
        .unwrap();
    let found = fixture.repo.trespasses(&start).unwrap();
    let texts: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            "the agent switched from branch main to branch scratch (git checkout/switch)",
            "the agent deleted branch main"
        ]
    );
    // Nothing else changed, yet there is something to save and undo.
    assert!(fixture.repo.measure_progress(&start).unwrap().is_empty());
    assert!(
        fixture
            .repo
            .save_changes(&start, 1, "m", AUTHOR.0, AUTHOR.1)
            .unwrap()
            .is_some()
    );
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.state(), before);
    assert!(fixture.raw.find_reference("refs/heads/scratch").is_ok());
}

#[test]
fn a_detached_head_moved_backwards_is_a_rewrite_and_a_branch_checkout_a_switch() {
    let fixture = Fixture::new();
    let first = fixture.head().unwrap();
    fixture.write("a.txt", "user\n");
    let user_commit = fixture.commit_all("user work");
    fixture.raw.set_head_detached(user_commit).unwrap();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("a.txt", "agent\n");
    fixture.commit_all("agent on the detached HEAD");
    assert!(fixture.repo.trespasses(&start).unwrap().is_empty());
    fixture.raw.set_head_detached(first).unwrap();
    let texts: Vec<String> = fixture
        .repo
        .trespasses(&start)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].starts_with("the agent moved the detached HEAD off "),
        "{texts:?}"
    );
    fixture.raw.set_head("refs/heads/main").unwrap();
    let texts: Vec<String> = fixture
        .repo
        .trespasses(&start)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        texts,
        [format!(
            "the agent switched from a detached HEAD at {} to branch main (git checkout/switch)",
            &user_commit.to_string()[..7]
        )]
    );
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.repo.branch_label().unwrap(), start.branch_label());
}

#[test]
fn a_switch_on_an_unborn_branch_is_named() {
    let fixture = Fixture::unborn();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.raw.set_head("refs/heads/elsewhere").unwrap();
    let found = fixture.repo.trespasses(&start).unwrap();
    assert!(
        matches!(&found[..], [Trespass::LeftBranch { .. }]),
        "{found:?}"
    );
    fixture.repo.rollback(&start).unwrap();
    assert_eq!(fixture.repo.branch_label().unwrap(), "main");
}
