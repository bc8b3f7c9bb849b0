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

/// Where the demo lives: the given directory, or a fresh one under the
/// system temp dir that is kept so the user can look at it afterwards.
pub(crate) fn scratch_dir(requested: Option<&Path>) -> Result<PathBuf> {
    match requested {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok(dir.to_path_buf())
        }
        None => Ok(tempfile::Builder::new()
            .prefix("ralphd-demo-")
            .tempdir()?
            .keep()),
    }
}

/// The closing words: where to look.
pub(crate) fn epilogue(repo: &Path, home: &Path) -> String {
    format!(
        "\nThe demo is done. Look around:\n  \
         git -C {repo} log --oneline          # the cycles' commits\n  \
         cat {home}/state/cycles/1/report.md   # a cycle's report\n  \
         ls {home}/state/cycles/1/             # each phase's transcript (.jsonl) and output (.md)\n  \
         cargo run --release -- status --home {home}\n",
        repo = repo.display(),
        home = home.display()
    )
}
