//! Tests of `git/diff.rs`: progress, the diff summary, changed files and
//! added lines.

use std::fs;
use std::path::Path;

use crate::git::diff::DiffStats;
use crate::git::short_hex;
use crate::git::snapshot::Snapshot;
use crate::git::tests::{AUTHOR, Fixture};

#[test]
fn no_changes_is_empty_progress_and_no_commit() {
    let fixture = Fixture::new();
    let before = fixture.state();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("agent.log", "only ignored output\n");
    let progress = fixture.repo.measure_progress(&start).unwrap();
    assert!(progress.is_empty(), "{progress:?}");
    assert_eq!(progress, DiffStats::default());
    assert!(
        fixture
            .repo
            .diff_summary(&start, 4096)
            .unwrap()
            .starts_with("0 file(s) changed")
    );
    assert_eq!(
        fixture
            .repo
            .commit_cycle(&start, "m", AUTHOR.0, AUTHOR.1)
            .unwrap(),
        None
    );
    let mut after = fixture.state();
    after.2.remove(Path::new("agent.log"));
    assert_eq!(after, before);
}

#[test]
fn diff_summary_is_cut_on_a_char_boundary() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("a.txt", &"é".repeat(5000));
    for max_bytes in [0, 1, 40, 41, 200, 201, 1000] {
        let summary = fixture.repo.diff_summary(&start, max_bytes).unwrap();
        assert!(summary.len() <= max_bytes, "{max_bytes}: {}", summary.len());
    }
    let summary = fixture.repo.diff_summary(&start, 300).unwrap();
    assert!(
        summary.contains("a.txt") && summary.contains("truncated"),
        "{summary}"
    );
}

/// [`GitRepo::changed_files`](crate::git::GitRepo::changed_files) as
/// (path, insertions, deletions).
fn changed_files(fixture: &Fixture, start: &Snapshot) -> Vec<(String, usize, usize)> {
    fixture
        .repo
        .changed_files(start)
        .unwrap()
        .iter()
        .map(|file| {
            (
                file.path.display().to_string(),
                file.insertions,
                file.deletions,
            )
        })
        .collect()
}

#[test]
fn changed_files_and_added_lines_cover_the_tree_and_the_agents_commits() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("gone.txt", "committed then removed\n");
    let agent_commit = fixture.commit_all("agent adds");
    fs::remove_file(fixture.path("gone.txt")).unwrap();
    fixture.commit_all("agent removes");
    fixture.write("a.txt", "alpha\nnew line\n");
    fixture.write("bin.dat", "\0\0binary\0");
    let summary = changed_files(&fixture, &start);
    assert_eq!(
        summary,
        [("a.txt".to_owned(), 1, 0), ("bin.dat".to_owned(), 0, 0)]
    );
    let mut lines = Vec::new();
    fixture
        .repo
        .scan_added_lines(&start, |commit, path, line, content| {
            lines.push((
                commit.map(str::to_owned),
                path.display().to_string(),
                line,
                String::from_utf8_lossy(content).into_owned(),
            ));
        })
        .unwrap();
    assert_eq!(
        lines,
        [
            (None, "a.txt".to_owned(), 2, "new line".to_owned()),
            (
                Some(short_hex(agent_commit)),
                "gone.txt".to_owned(),
                1,
                "committed then removed".to_owned()
            ),
        ]
    );
}

#[test]
fn progress_the_changed_files_and_the_summary_count_the_same_diff() {
    let fixture = Fixture::new();
    let start = fixture.repo.begin_cycle().unwrap();
    fixture.write("a.txt", "alpha\nsecond\nthird\n");
    fs::remove_file(fixture.path("b.txt")).unwrap();
    fixture.write("new.txt", "one\n");
    fixture.commit_all("agent: edit a, drop b, add new");
    fixture.write("bin.dat", "\0\0binary\0");
    fixture.write("c.txt", "uncommitted\n");

    let progress = fixture.repo.measure_progress(&start).unwrap();
    assert_eq!(
        progress,
        DiffStats {
            files_changed: 5,
            insertions: 4,
            deletions: 1,
            agent_commits: 1
        }
    );
    assert_eq!(
        changed_files(&fixture, &start),
        [
            ("a.txt".to_owned(), 2, 0),
            ("b.txt".to_owned(), 0, 1),
            ("bin.dat".to_owned(), 0, 0),
            ("c.txt".to_owned(), 1, 0),
            ("new.txt".to_owned(), 1, 0),
        ]
    );
    let summary = fixture.repo.diff_summary(&start, 4096).unwrap();
    assert!(
        summary.starts_with(
            "5 file(s) changed, 4 insertion(s)(+), 1 deletion(s)(-); 1 commit(s) by the agent\n  \
             M a.txt +2 -0\n  D b.txt +0 -1\n  A bin.dat +0 -0 (binary)\n  A c.txt +1 -0\n  \
             A new.txt +1 -0\nagent commits:\n"
        ),
        "{summary}"
    );
    assert!(
        summary.contains(" agent: edit a, drop b, add new\n"),
        "{summary}"
    );
}
