//! `ralphd demo`: the whole loop on a scratch repository with the built-in
//! offline agent, so a newcomer sees real cycles (phases, a real edit,
//! commits, reports) on a machine without `claude`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The tiny project the demo improves.
const FILES: [(&str, &str); 2] = [
    (
        "README.md",
        "# demo project\n\nA scratch repository created by `ralphd demo`.\n",
    ),
    ("hello.sh", "#!/bin/sh\necho hello\n"),
];

/// Creates `<dir>/repo` (a git repo with one commit) and `<dir>/home`.
pub(crate) fn create_scratch(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let repo_dir = dir.join("repo");
    let home_dir = dir.join("home");
    std::fs::create_dir_all(&repo_dir)
        .with_context(|| format!("cannot create {}", repo_dir.display()))?;
    std::fs::create_dir_all(&home_dir)
        .with_context(|| format!("cannot create {}", home_dir.display()))?;
    for (name, content) in FILES {
        std::fs::write(repo_dir.join(name), content)
            .with_context(|| format!("cannot write {name}"))?;
    }
    let repo =
        git2::Repository::init(&repo_dir).context("cannot create the demo git repository")?;
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let signature = git2::Signature::now("ralphd demo", "demo@localhost")?;
    repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        "demo project",
        &tree,
        &[],
    )?;
    Ok((repo_dir.canonicalize()?, home_dir.canonicalize()?))
}

/// Where the demo runs: the user's `--dir`, kept afterwards, or a fresh
/// directory under the system temp dir, removed at the end.
pub(crate) enum ScratchDir {
    Given(PathBuf),
    /// Removed when dropped, even when the demo fails.
    Temporary(tempfile::TempDir),
}

impl ScratchDir {
    pub(crate) fn path(&self) -> &Path {
        match self {
            ScratchDir::Given(dir) => dir,
            ScratchDir::Temporary(dir) => dir.path(),
        }
    }

    /// What the user is told about the directory before the demo starts.
    pub(crate) fn announcement(&self) -> String {
        match self {
            ScratchDir::Given(dir) => format!("scratch directory {} (kept)", dir.display()),
            ScratchDir::Temporary(dir) => format!(
                "scratch directory {} (removed at the end; pass --dir DIR to keep it)",
                dir.path().display()
            ),
        }
    }

    /// The closing words: where to look, or that the directory is gone.
    /// Removes a temporary directory.
    pub(crate) fn finish(self, repo: &Path, home: &Path) -> String {
        match self {
            ScratchDir::Given(_) => epilogue(repo, home),
            ScratchDir::Temporary(dir) => {
                let path = dir.path().to_path_buf();
                match dir.close() {
                    Ok(()) => format!(
                        "\nThe demo is done; its scratch directory {} was removed.\n\
                         Run `ralphd demo --dir DIR` to keep the repository, its commits and the \
                         cycle reports to look at.\n",
                        path.display()
                    ),
                    Err(error) => format!(
                        "\nThe demo is done, but its scratch directory {} could not be removed \
                         ({error}); remove it by hand.\n",
                        path.display()
                    ),
                }
            }
        }
    }
}

/// Creates the requested directory, or a temporary one.
pub(crate) fn scratch_dir(requested: Option<&Path>) -> Result<ScratchDir> {
    match requested {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok(ScratchDir::Given(dir.to_path_buf()))
        }
        None => Ok(ScratchDir::Temporary(
            tempfile::Builder::new()
                .prefix("ralphd-demo-")
                .tempdir()
                .context("cannot create a scratch directory in the system temp dir")?,
        )),
    }
}

/// The closing words of a kept demo: where to look.
fn epilogue(repo: &Path, home: &Path) -> String {
    format!(
        "\nThe demo is done. Look around:\n  \
         git -C {repo} log --oneline          # the cycles' commits\n  \
         cat {home}/state/cycles/1/report.md   # a cycle's report\n  \
         ls {home}/state/cycles/1/             # each phase's transcript (.jsonl) and output (.md)\n  \
         ralphd status --home {home}\n",
        repo = repo.display(),
        home = home.display()
    )
}
