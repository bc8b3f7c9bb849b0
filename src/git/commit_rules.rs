//! Which hooks and which signing the repository's git config asks of a
//! commit ([`CommitRules`], [`Signing`]), read as `git commit` reads them.
//! Running the hooks and the signing program is `git_rules`' job.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use git2::ErrorCode;

use crate::git::{GitRepo, Result};

/// Git's rules for a commit in this repository, read from its config.
#[derive(Clone, Debug, Default)]
pub(crate) struct CommitRules {
    /// The executable `pre-commit` hook, if there is one.
    pub(crate) pre_commit: Option<PathBuf>,
    /// The executable `commit-msg` hook, if there is one.
    pub(crate) commit_msg: Option<PathBuf>,
    /// `commit.gpgsign = true`: how to sign, or why it cannot work.
    pub(crate) signing: Option<std::result::Result<Signing, String>>,
}

/// How git would sign a commit (`gpg.format`, the program, the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Signing {
    pub(crate) format: SigningFormat,
    /// `gpg.program` (or the format's own key), a name on PATH or a path.
    pub(crate) program: String,
    /// The config key that named the program, for messages.
    pub(crate) program_key: &'static str,
    /// openpgp/x509: `user.signingkey`, else the committer (`Name <email>`).
    /// ssh: a key file, or the public key itself when `literal_key`.
    pub(crate) key: String,
    /// ssh: `key` is a public key (`key::…`, `ssh-…`) whose private half is in
    /// the ssh agent.
    pub(crate) literal_key: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SigningFormat {
    OpenPgp,
    X509,
    Ssh,
}

impl GitRepo {
    /// The hooks and the signing this repository asks of a commit by
    /// `committer` (name, email): hooks from `core.hooksPath` (relative to
    /// the work tree, `~/` expanded) or `<common git dir>/hooks`, executable
    /// files only; signing as `git commit` does it when `commit.gpgsign` is
    /// true (`gpg.format`, `gpg.program`, `gpg.<format>.program`,
    /// `user.signingkey`).
    pub(crate) fn commit_rules(&self, committer: (&str, &str)) -> Result<CommitRules> {
        const OP: &str = "read the commit settings";
        let repo = self.open_repo(OP)?;
        let git_error = |error| self.git_error(OP, error);
        let mut config = repo.config().map_err(git_error)?;
        let config = config.snapshot().map_err(git_error)?;
        let string = |key: &str| -> Result<Option<String>> {
            match config.get_string(key) {
                Ok(value) => Ok(Some(value)),
                Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
                Err(error) => Err(git_error(error)),
            }
        };
        let hooks_dir = match config.get_path("core.hooksPath") {
            Ok(dir) => self.workdir.join(dir),
            Err(error) if error.code() == ErrorCode::NotFound => self.common_dir.join("hooks"),
            Err(error) => return Err(git_error(error)),
        };
        // A hook that is missing is no hook; one that cannot be checked
        // (permissions) is an error, never silently skipped.
        let executable = |name: &str| -> Result<Option<PathBuf>> {
            let path = hooks_dir.join(name);
            match fs::metadata(&path) {
                Ok(metadata) => Ok((metadata.is_file()
                    && metadata.permissions().mode() & 0o111 != 0)
                    .then_some(path)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(self.io_error(OP, &path, error)),
            }
        };
        let gpgsign = match config.get_bool("commit.gpgsign") {
            Ok(value) => value,
            Err(error) if error.code() == ErrorCode::NotFound => false,
            Err(error) => return Err(git_error(error)),
        };
        let signing = if gpgsign {
            Some(self.signing(&string, committer)?)
        } else {
            None
        };
        Ok(CommitRules {
            pre_commit: executable("pre-commit")?,
            commit_msg: executable("commit-msg")?,
            signing,
        })
    }

    fn signing(
        &self,
        string: &impl Fn(&str) -> Result<Option<String>>,
        committer: (&str, &str),
    ) -> Result<std::result::Result<Signing, String>> {
        let format_name = string("gpg.format")?.unwrap_or_else(|| "openpgp".to_owned());
        let (format, program_key, default_program) = match format_name.as_str() {
            "openpgp" => (SigningFormat::OpenPgp, "gpg.openpgp.program", "gpg"),
            "x509" => (SigningFormat::X509, "gpg.x509.program", "gpgsm"),
            "ssh" => (SigningFormat::Ssh, "gpg.ssh.program", "ssh-keygen"),
            other => {
                return Ok(Err(format!(
                    "gpg.format = {other:?} is not a format git knows (openpgp, x509, ssh)"
                )));
            }
        };
        let (program, program_key) = match string(program_key)? {
            Some(program) => (program, program_key),
            None if format == SigningFormat::OpenPgp => match string("gpg.program")? {
                Some(program) => (program, "gpg.program"),
                None => (default_program.to_owned(), "gpg.program"),
            },
            None => (default_program.to_owned(), program_key),
        };
        let configured_key = string("user.signingkey")?.filter(|key| !key.trim().is_empty());
        let (key, literal_key) = match (format, configured_key) {
            (SigningFormat::Ssh, None) => {
                return Ok(Err(
                    "gpg.format = \"ssh\" needs user.signingkey (ralphd does not run gpg.ssh.defaultKeyCommand)"
                        .to_owned(),
                ));
            }
            (SigningFormat::Ssh, Some(key)) => match key.strip_prefix("key::") {
                Some(literal) => (literal.to_owned(), true),
                None if key.starts_with("ssh-") => (key, true),
                None => {
                    let path = match key.strip_prefix("~/") {
                        Some(rest) => std::env::home_dir()
                            .map(|home| home.join(rest))
                            .unwrap_or_else(|| PathBuf::from(&key)),
                        None => self.workdir.join(&key),
                    };
                    (path.to_string_lossy().into_owned(), false)
                }
            },
            (_, Some(key)) => (key, false),
            (_, None) => (format!("{} <{}>", committer.0, committer.1), false),
        };
        Ok(Ok(Signing {
            format,
            program,
            program_key,
            key,
            literal_key,
        }))
    }
}
