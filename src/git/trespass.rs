//! What the agent did to the repository that a cycle may not do
//! (docs/design.md §14): leave or delete the cycle's branch, take commits off it (reset,
//! amend, rebase), change a submodule ([`Trespass`],
//! [`GitRepo::trespasses`]).

use git2::Oid;

use crate::git::head::{HeadState, branch_tip, read_head};
use crate::git::snapshot::Snapshot;
use crate::git::{GitRepo, Result, short_hex};

/// Something the agent did to the repository that a cycle may not do
/// (docs/design.md §14), found by [`GitRepo::trespasses`]. Its text is the reason the
/// cycle gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Trespass {
    /// HEAD left the branch (or the detached HEAD) the cycle started on.
    LeftBranch { from: String, to: String },
    /// The cycle's branch no longer exists.
    DeletedBranch { branch: String },
    /// The branch (or the detached HEAD) no longer contains the commit where
    /// the cycle had it: a reset, an amend or a rebase took commits off it.
    RewroteHistory { branch: String, commit: Oid },
    /// Work inside submodules, one entry each: `lib (files edited, HEAD moved)`.
    ChangedSubmodules { changes: Vec<String> },
}

impl std::fmt::Display for Trespass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trespass::LeftBranch { from, to } => write!(
                f,
                "the agent switched from {from} to {to} (git checkout/switch)"
            ),
            Trespass::DeletedBranch { branch } => write!(f, "the agent deleted branch {branch}"),
            Trespass::RewroteHistory { branch, commit } => write!(
                f,
                "the agent moved {branch} off {}, where the cycle had it (git reset, --amend or rebase)",
                short_hex(*commit)
            ),
            Trespass::ChangedSubmodules { changes } => {
                let noun = if changes.len() == 1 {
                    "submodule"
                } else {
                    "submodules"
                };
                write!(
                    f,
                    "the agent changed {noun} {} (ralphd never keeps work inside a submodule)",
                    changes.join(", ")
                )
            }
        }
    }
}

impl GitRepo {
    /// What the agent did that a cycle may not do, relative to `start` (the
    /// cycle's start, or the state after its commit): HEAD off the start
    /// branch, the branch deleted, the start commit no longer its
    /// ancestor-or-self (commits taken off it), submodules changed. Empty when
    /// the repository is still the cycle's; commits that build on the start
    /// commit are fine. Cheap without submodules: a few ref lookups.
    pub(crate) fn trespasses(&self, start: &Snapshot) -> Result<Vec<Trespass>> {
        const OP: &str = "check the cycle's branch";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let head = read_head(&repo).map_err(git_error)?;
        let mut found = Vec::new();
        let left = match &start.head {
            HeadState::Detached { .. } => !matches!(head, HeadState::Detached { .. }),
            HeadState::Branch { refname, .. } | HeadState::Unborn { refname } => {
                !head.is_on(refname)
            }
        };
        if left {
            found.push(Trespass::LeftBranch {
                from: start.head.describe(),
                to: head.describe(),
            });
        }
        // Where the start commit must still be: the branch's tip, or the
        // detached HEAD.
        let (tip, holder) = match &start.head {
            HeadState::Branch { refname, .. } => {
                let tip = branch_tip(&repo, refname).map_err(git_error)?;
                if tip.is_none() {
                    found.push(Trespass::DeletedBranch {
                        branch: start.head.label(),
                    });
                }
                (tip, start.head.describe())
            }
            HeadState::Detached { .. } if !left => (head.oid(), "the detached HEAD".to_owned()),
            _ => (None, String::new()),
        };
        if let (Some(tip), Some(commit)) = (tip, start.start_commit())
            && tip != commit
            && !repo.graph_descendant_of(tip, commit).map_err(git_error)?
        {
            found.push(Trespass::RewroteHistory {
                branch: holder,
                commit,
            });
        }
        let changes = self.changed_submodules(start)?;
        if !changes.is_empty() {
            found.push(Trespass::ChangedSubmodules { changes });
        }
        Ok(found)
    }
}
