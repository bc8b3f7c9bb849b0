//! The shared test fixture of `git`: a temp repository ([`Fixture`]) and the
//! observable state a rollback must restore exactly. The tests themselves sit
//! in `tests/<file>.rs`, beside the file of `git/` they test.

mod attempt;
mod commit;
mod commit_rules;
mod diff;
mod rollback;
mod start_checks;
mod submodule;
mod trespass;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Oid, Repository, RepositoryInitOptions, Signature};
use tempfile::TempDir;

use crate::git::GitRepo;

const AUTHOR: (&str, &str) = ("ralphd", "ralphd@localhost");

type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

type IndexEntries = Vec<(Vec<u8>, Oid, u32)>;

/// HEAD, the branch label, the files and the index entries.
type RepoState = (Option<Oid>, String, Files, IndexEntries);

/// A temp repo with one commit on `main`: `a.txt`, `b.txt`, an executable
/// `run.sh`, a `.gitignore` for `*.log`, and an ignored `keep.log`.
struct Fixture {
    dir: TempDir,
    raw: Repository,
    repo: GitRepo,
}

impl Fixture {
    fn unborn() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut options = RepositoryInitOptions::new();
        options.initial_head("main");
        let raw = Repository::init_opts(dir.path(), &options).unwrap();
        let repo = GitRepo::open(dir.path()).unwrap();
        Fixture { dir, raw, repo }
    }

    fn new() -> Fixture {
        let fixture = Fixture::unborn();
        fixture.write("a.txt", "alpha\n");
        fixture.write("b.txt", "bravo\n");
        fixture.write("run.sh", "#!/bin/sh\necho hi\n");
        fixture.chmod("run.sh", 0o755);
        fixture.write(".gitignore", "*.log\n");
        fixture.write("keep.log", "ignored, never touched\n");
        fixture.commit_all("first");
        fixture
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap()
    }

    fn chmod(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(&self, rel: &str) -> u32 {
        fs::metadata(self.path(rel)).unwrap().permissions().mode() & 0o777
    }

    /// `git add -A && git commit` as the agent would do it.
    fn commit_all(&self, message: &str) -> Oid {
        let mut index = self.raw.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.raw.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = Signature::now("agent", "agent@example.com").unwrap();
        let parent = self
            .raw
            .head()
            .ok()
            .map(|head| head.peel_to_commit().unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.raw
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .unwrap()
    }

    fn stage(&self, rel: &str) {
        let mut index = self.raw.index().unwrap();
        index.read(true).unwrap();
        index.add_path(Path::new(rel)).unwrap();
        index.write().unwrap();
    }

    fn head(&self) -> Option<Oid> {
        self.raw.head().ok().and_then(|head| head.target())
    }

    /// Every file under the work tree except `.git`: content and mode.
    fn files(&self) -> Files {
        let mut files = BTreeMap::new();
        let mut pending = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if path.file_name().unwrap() == ".git" {
                    continue;
                }
                let metadata = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(self.dir.path()).unwrap().to_path_buf();
                if metadata.is_dir() {
                    pending.push(path);
                } else if metadata.file_type().is_symlink() {
                    let target = fs::read_link(&path).unwrap();
                    files.insert(
                        rel,
                        (target.into_os_string().into_encoded_bytes(), 0o120000),
                    );
                } else {
                    let mode = metadata.permissions().mode() & 0o777;
                    files.insert(rel, (fs::read(&path).unwrap(), mode));
                }
            }
        }
        files
    }

    /// The index entries: path, blob and mode.
    fn index_entries(&self) -> IndexEntries {
        let mut index = self.raw.index().unwrap();
        index.read(true).unwrap();
        index
            .iter()
            .map(|entry| (entry.path, entry.id, entry.mode))
            .collect()
    }

    /// The whole observable state: HEAD, the branch, files and index.
    fn state(&self) -> RepoState {
        (
            self.head(),
            self.repo.branch_label().unwrap(),
            self.files(),
            self.index_entries(),
        )
    }

    fn file_in_commit(&self, commit: Oid, rel: &str) -> Option<Vec<u8>> {
        let tree = self.raw.find_commit(commit).unwrap().tree().unwrap();
        let entry = tree.get_path(Path::new(rel)).ok()?;
        Some(self.raw.find_blob(entry.id()).unwrap().content().to_vec())
    }
}

/// `--allow-dirty`: the user's modified (unstaged and staged), untracked,
/// executable and deleted files.
fn make_user_changes(fixture: &Fixture) {
    fixture.write("a.txt", "alpha\nthe user's unsaved work\n");
    fixture.write("notes/todo.txt", "user's untracked notes\n");
    fixture.write("tool.sh", "#!/bin/sh\n# user's untracked script\n");
    fixture.chmod("tool.sh", 0o750);
    fs::remove_file(fixture.path("b.txt")).unwrap();
    fixture.write("run.sh", "#!/bin/sh\necho staged by the user\n");
    fixture.stage("run.sh");
    std::os::unix::fs::symlink("a.txt", fixture.path("link")).unwrap();
    fixture.write("readonly.txt", "user's read-only file\n");
    fixture.chmod("readonly.txt", 0o444);
}
