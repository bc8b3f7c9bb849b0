//! Where HEAD points ([`HeadState`]): on a branch, on an unborn branch or
//! detached, and the questions the daemon asks about it (the branch's label,
//! HEAD's commit, whether a detached HEAD only moved forward).

use git2::{ErrorCode, Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::git::{GitRepo, Result, oid_hex, short_hex};

/// Where HEAD pointed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum HeadState {
    /// On a branch (full ref name, usually `refs/heads/…`) with a commit.
    Branch {
        refname: Vec<u8>,
        #[serde(with = "oid_hex")]
        oid: Oid,
    },
    /// On a branch that has no commit yet (fresh `git init`).
    Unborn { refname: Vec<u8> },
    Detached {
        #[serde(with = "oid_hex")]
        oid: Oid,
    },
}

impl HeadState {
    pub(super) fn oid(&self) -> Option<Oid> {
        match self {
            HeadState::Branch { oid, .. } | HeadState::Detached { oid } => Some(*oid),
            HeadState::Unborn { .. } => None,
        }
    }

    /// Whether HEAD points (symbolically) at `refname`.
    pub(super) fn is_on(&self, refname: &[u8]) -> bool {
        match self {
            HeadState::Branch { refname: on, .. } | HeadState::Unborn { refname: on } => {
                on.as_slice() == refname
            }
            HeadState::Detached { .. } => false,
        }
    }

    pub(super) fn label(&self) -> String {
        match self {
            HeadState::Branch { refname, .. } | HeadState::Unborn { refname } => {
                let short = refname.strip_prefix(b"refs/heads/").unwrap_or(refname);
                String::from_utf8_lossy(short).into_owned()
            }
            HeadState::Detached { oid } => format!("detached-{}", short_hex(*oid)),
        }
    }

    /// For messages: `branch main`, `a detached HEAD at 1a2b3c4`.
    pub(super) fn describe(&self) -> String {
        match self {
            HeadState::Detached { oid } => format!("a detached HEAD at {}", short_hex(*oid)),
            _ => format!("branch {}", self.label()),
        }
    }
}

impl GitRepo {
    /// The branch name (`main`, `feature/login`), `detached-<7 hex>` for a
    /// detached HEAD; for an unborn branch, the branch HEAD names.
    /// Non-UTF-8 names are converted lossily (U+FFFD).
    pub(crate) fn branch_label(&self) -> Result<String> {
        const OP: &str = "read HEAD";
        let repo = self.open_repo(OP)?;
        let head = read_head(&repo).map_err(|error| self.git_error(OP, error))?;
        Ok(head.label())
    }

    /// Whether the detached HEAD labelled `current` continues the detached line
    /// labelled `last`: both detached, and HEAD descends from `last`'s commit.
    /// Commits made on a detached HEAD move its label; that is not a branch change.
    pub(crate) fn continues_detached(&self, last: &str, current: &str) -> Result<bool> {
        const OP: &str = "compare detached HEADs";
        let (Some(last_hex), Some(_)) = (
            last.strip_prefix("detached-"),
            current.strip_prefix("detached-"),
        ) else {
            return Ok(false);
        };
        let repo = self.open_repo(OP)?;
        let Some(head) = read_head(&repo)
            .map_err(|error| self.git_error(OP, error))?
            .oid()
        else {
            return Ok(false);
        };
        let Ok(last_commit) = repo
            .revparse_single(last_hex)
            .and_then(|object| object.peel_to_commit())
        else {
            return Ok(false);
        };
        Ok(head == last_commit.id()
            || repo
                .graph_descendant_of(head, last_commit.id())
                .map_err(|error| self.git_error(OP, error))?)
    }

    pub(super) fn head_state(&self, op: &'static str) -> Result<HeadState> {
        let repo = self.open_repo(op)?;
        read_head(&repo).map_err(|error| self.git_error(op, error))
    }
}

pub(super) fn read_head(repo: &Repository) -> std::result::Result<HeadState, git2::Error> {
    let head = repo.find_reference("HEAD")?;
    let Some(refname) = head.symbolic_target_bytes().map(<[u8]>::to_vec) else {
        let oid = head
            .target()
            .ok_or_else(|| git2::Error::from_str("HEAD has no target"))?;
        return Ok(HeadState::Detached { oid });
    };
    match repo.head() {
        Ok(resolved) => {
            let oid = resolved
                .target()
                .ok_or_else(|| git2::Error::from_str("HEAD does not resolve to a commit"))?;
            Ok(HeadState::Branch { refname, oid })
        }
        Err(error) if matches!(error.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => {
            Ok(HeadState::Unborn { refname })
        }
        Err(error) => Err(error),
    }
}

/// The tip of the branch `refname` (a full ref name), `None` if it does not exist.
pub(super) fn branch_tip(
    repo: &Repository,
    refname: &[u8],
) -> std::result::Result<Option<Oid>, git2::Error> {
    let name = std::str::from_utf8(refname)
        .map_err(|_| git2::Error::from_str("the start branch name is not UTF-8"))?;
    match repo.find_reference(name) {
        Ok(reference) => Ok(reference.resolve()?.target()),
        Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
