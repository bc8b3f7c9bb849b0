//! Tests of `git/diff.rs`: progress, the diff summary, changed files and
//! added lines.

use std::fs;
use std::path::Path;

use crate::git::diff::DiffStats;
use crate::git::short_hex;
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
    let files = fixture.repo.changed_files(&start).unwrap();
    let summary: Vec<(String, usize, usize)> = files
        .iter()
        .map(|file| {
            (
                file.path.display().to_string(),
                file.insertions,
                file.deletions,
            )
        })
        .collect();
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
