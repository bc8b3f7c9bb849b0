//! Git's own rules for ralphd's commits, run as child processes: the
//! repository's `pre-commit` and `commit-msg` hooks, and the program that
//! signs a commit when `commit.gpgsign` asks for it (`gpg`, `gpgsm` or
//! `ssh-keygen`, invoked as `git commit -S` would). Each runs through
//! `supervise::run` like a backtest check: its own process group, a
//! deadline, reaped, cancellable.
//!
//! Which hooks exist and how to sign is read from the repository by `git`
//! ([`crate::git::CommitRules`]); the cycle stages, runs these, then commits.
//! This module only runs programs and says what came of them.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::checks::{self, CheckResult};
use crate::git::{Signing, SigningFormat};
use crate::supervise::{self, StopCause, Supervised};

/// How long a signing program may take (a hardware key may wait for a touch).
const SIGN_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// How much of a failing hook's output its reason keeps, from the end.
const REASON_TAIL_BYTES: usize = 1024;

/// The payload of the start-up check that signing works.
const TRIAL_PAYLOAD: &str = "ralphd: can this repository's commits be signed?\n";

/// Where and how a hook runs.
pub(crate) struct HookContext<'a> {
    /// The top of the work tree: the hook's working directory.
    pub(crate) workdir: &'a Path,
    /// The hook's `GIT_INDEX_FILE`: exactly what will be committed.
    pub(crate) index_file: &'a Path,
    /// The commit's author (name, email), exported as git does.
    pub(crate) author: (&'a str, &'a str),
    pub(crate) timeout: Duration,
    pub(crate) stop_grace: Duration,
}

/// Runs one hook with `args`, in the environment `git commit` gives it
/// (`GIT_INDEX_FILE`, `GIT_EDITOR=:`, `GIT_AUTHOR_NAME`/`_EMAIL`). Returns
/// `None` when cancelled; the result's `passed()` says whether the commit may
/// go on.
pub(crate) async fn run_hook(
    hook: &Path,
    args: &[OsString],
    context: &HookContext<'_>,
    cancel: &CancellationToken,
) -> Option<CheckResult> {
    let name = hook
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| hook.display().to_string());
    // Like git, run a script without `#!` with the shell rather than fail.
    let mut command = if starts_with_shebang(hook) {
        Command::new(hook)
    } else {
        let mut shell = Command::new("sh");
        shell.arg(hook);
        shell
    };
    command
        .args(args)
        .current_dir(context.workdir)
        .env("GIT_INDEX_FILE", context.index_file)
        .env("GIT_EDITOR", ":")
        .env("GIT_AUTHOR_NAME", context.author.0)
        .env("GIT_AUTHOR_EMAIL", context.author.1);
    let result =
        checks::run_one(command, &name, context.timeout, context.stop_grace, cancel).await?;
    tracing::info!(hook = %name, exit = ?result.exit_code, timed_out = result.timed_out, "git hook finished");
    Some(result)
}

fn starts_with_shebang(path: &Path) -> bool {
    let mut start = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut file| io::Read::read_exact(&mut file, &mut start))
        .is_ok_and(|()| &start == b"#!")
}

/// Why a failed hook refused the commit, for the cycle's record: the hook,
/// how it ended and the tail of its output (redacted, one line).
pub(crate) fn hook_refusal(hook: &CheckResult) -> String {
    let how = match (hook.timed_out, hook.exit_code) {
        (true, _) => "timed out".to_owned(),
        (false, Some(code)) => format!("exit {code}"),
        (false, None) => "could not start".to_owned(),
    };
    let output = crate::redact::redact(crate::text::tail_bytes(
        hook.output_tail.trim(),
        REASON_TAIL_BYTES,
    ))
    .lines()
    .map(str::trim)
    .filter(|line| !line.is_empty())
    .collect::<Vec<_>>()
    .join(" | ");
    if output.is_empty() {
        format!("the {} hook refused the commit ({how})", hook.command)
    } else {
        format!(
            "the {} hook refused the commit ({how}): {output}",
            hook.command
        )
    }
}

/// A commit message cleaned up as `git commit` cleans a message it did not
/// open in an editor (`--cleanup=whitespace`): trailing whitespace removed
/// from every line, runs of blank lines made one, blank lines at both ends
/// dropped, one final newline. Empty when nothing is left.
pub(crate) fn clean_message(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    let mut blank_run = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run = !cleaned.is_empty();
            continue;
        }
        if blank_run {
            cleaned.push('\n');
            blank_run = false;
        }
        cleaned.push_str(line);
        cleaned.push('\n');
    }
    cleaned
}

/// Signs `payload` (a raw commit object) the way git does and returns the
/// signature for the commit's `gpgsig` header; `None` when cancelled. The
/// error says, in one line, what went wrong and with which program.
pub(crate) async fn sign(
    signing: &Signing,
    payload: &str,
    stop_grace: Duration,
    cancel: &CancellationToken,
) -> Option<Result<String, String>> {
    match signing.format {
        SigningFormat::OpenPgp | SigningFormat::X509 => {
            sign_gpg(signing, payload, stop_grace, cancel).await
        }
        SigningFormat::Ssh => sign_ssh(signing, payload, stop_grace, cancel).await,
    }
}

/// Signs a small payload once, so that a setup that cannot sign (no
/// program, no key, a key that needs a passphrase nobody will type) stops
/// the start instead of every cycle of the night.
pub(crate) async fn check_signing(
    signing: &Signing,
    stop_grace: Duration,
    cancel: &CancellationToken,
) -> Result<(), String> {
    match sign(signing, TRIAL_PAYLOAD, stop_grace, cancel).await {
        Some(Ok(_)) => Ok(()),
        Some(Err(error)) => Err(error),
        None => Err("interrupted".to_owned()),
    }
}

/// `gpg --status-fd=2 -bsau <key>` (or gpgsm) with the payload on stdin,
/// the armored signature on stdout; success needs exit 0 and `SIG_CREATED`.
async fn sign_gpg(
    signing: &Signing,
    payload: &str,
    stop_grace: Duration,
    cancel: &CancellationToken,
) -> Option<Result<String, String>> {
    let mut command = Command::new(&signing.program);
    command.args(["--status-fd=2", "-bsau", &signing.key]);
    let mut signature = String::new();
    let finished = run_signer(
        command,
        Some(payload.to_owned()),
        stop_grace,
        cancel,
        |line| {
            if signature.len() < 64 * 1024 {
                signature.push_str(line);
                signature.push('\n');
            }
        },
    )
    .await;
    let finished = match finished? {
        Ok(finished) => finished,
        Err(error) => return Some(Err(start_error(signing, &error))),
    };
    let created = finished.stderr_tail.contains("[GNUPG:] SIG_CREATED ");
    if finished.exit_code() != 0 || !created || signature.is_empty() {
        return Some(Err(program_failed(signing, &finished)));
    }
    Some(Ok(signature))
}

/// `ssh-keygen -Y sign -n git -f <key> [-U] <file>`: the payload in a temp
/// file, the signature in `<file>.sig`.
async fn sign_ssh(
    signing: &Signing,
    payload: &str,
    stop_grace: Duration,
    cancel: &CancellationToken,
) -> Option<Result<String, String>> {
    let work = match tempfile::Builder::new().prefix("ralphd-sign").tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            return Some(Err(format!(
                "cannot create a temp directory to sign: {error}"
            )));
        }
    };
    let payload_file = work.path().join("commit");
    if let Err(error) = tokio::fs::write(&payload_file, payload).await {
        return Some(Err(format!("cannot write the commit to sign: {error}")));
    }
    let mut command = Command::new(&signing.program);
    command.args(["-Y", "sign", "-n", "git", "-f"]);
    if signing.literal_key {
        let key_file = work.path().join("key.pub");
        if let Err(error) = tokio::fs::write(&key_file, format!("{}\n", signing.key)).await {
            return Some(Err(format!(
                "cannot write the public key to sign with: {error}"
            )));
        }
        command.arg(&key_file).arg("-U");
    } else {
        command.arg(&signing.key);
    }
    command.arg(&payload_file);
    let finished = match run_signer(command, None, stop_grace, cancel, |_| {}).await? {
        Ok(finished) => finished,
        Err(error) => return Some(Err(start_error(signing, &error))),
    };
    if finished.exit_code() != 0 {
        return Some(Err(program_failed(signing, &finished)));
    }
    let signature_file = work.path().join("commit.sig");
    Some(match tokio::fs::read_to_string(&signature_file).await {
        Ok(signature) if !signature.trim().is_empty() => Ok(signature),
        Ok(_) | Err(_) => Err(format!(
            "{} {:?} left no signature in {}",
            signing.program_key,
            signing.program,
            signature_file.display()
        )),
    })
}

/// Runs a signing program under [`SIGN_TIMEOUT`]; `None` when cancelled.
async fn run_signer(
    mut command: Command,
    stdin: Option<String>,
    stop_grace: Duration,
    cancel: &CancellationToken,
    on_line: impl FnMut(&str),
) -> Option<io::Result<supervise::Finished>> {
    command.env_remove("NOTIFY_SOCKET");
    let spec = Supervised {
        command,
        stdin,
        transcript: None,
        wall_timeout: SIGN_TIMEOUT,
        idle_timeout: None,
        stop_grace,
    };
    match supervise::run(spec, cancel, on_line).await {
        Ok(finished) if finished.stopped == Some(StopCause::Cancelled) => None,
        other => Some(other),
    }
}

fn start_error(signing: &Signing, error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::NotFound {
        format!(
            "{} {:?} was not found",
            signing.program_key, signing.program
        )
    } else {
        format!(
            "cannot run {} {:?}: {error}",
            signing.program_key, signing.program
        )
    }
}

/// The program's failure in one line: how it ended and its last messages
/// (gpg's `[GNUPG:]` status lines left out).
fn program_failed(signing: &Signing, finished: &supervise::Finished) -> String {
    let how = match finished.stopped {
        Some(_) => format!(
            "timed out after {}",
            humantime::format_duration(SIGN_TIMEOUT)
        ),
        None => format!("exit {}", finished.exit_code()),
    };
    let messages: Vec<&str> = finished
        .stderr_tail
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("[GNUPG:]"))
        .collect();
    let last = &messages[messages.len().saturating_sub(3)..];
    let key = match signing.format {
        SigningFormat::Ssh => format!("key {}", signing.key),
        _ => format!("key {:?}", signing.key),
    };
    let mut text = format!(
        "{} {:?} could not sign with {key} ({how})",
        signing.program_key, signing.program
    );
    if !last.is_empty() {
        text.push_str(": ");
        text.push_str(&crate::redact::redact(&last.join(" | ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn messages_are_cleaned_like_git_commit_does() {
        let cases = [
            ("title", "title\n"),
            ("title\n\n\n\nbody  \n\n", "title\n\nbody\n"),
            ("\n\n  \ntitle\t\n", "title\n"),
            (
                "title\n\nReviewed-by: hook\n",
                "title\n\nReviewed-by: hook\n",
            ),
            ("  \n\n", ""),
        ];
        for (text, cleaned) in cases {
            assert_eq!(clean_message(text), cleaned, "{text:?}");
        }
    }

    fn hook(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("pre-commit");
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn a_hook_gets_gits_environment_and_a_hanging_one_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index");
        let context = HookContext {
            workdir: dir.path(),
            index_file: &index,
            author: ("A U Thor", "a@example.com"),
            timeout: Duration::from_millis(300),
            stop_grace: Duration::from_millis(100),
        };
        let cancel = CancellationToken::new();
        let path = hook(
            dir.path(),
            "echo \"$GIT_INDEX_FILE|$GIT_EDITOR|$GIT_AUTHOR_NAME|$1|$(pwd)\"\necho 'no ticket' >&2\nexit 1\n",
        );
        let run = run_hook(&path, &["msg".into()], &context, &cancel)
            .await
            .unwrap();
        assert!(!run.passed());
        let expected = format!(
            "{}|:|A U Thor|msg|{}",
            index.display(),
            dir.path().display()
        );
        assert!(run.output_tail.contains(&expected), "{}", run.output_tail);
        assert_eq!(
            hook_refusal(&run),
            format!("the pre-commit hook refused the commit (exit 1): {expected} | no ticket")
        );

        // No `#!` line: run by the shell, as git does.
        std::fs::write(&path, "echo plain script\n").unwrap();
        let run = run_hook(&path, &[], &context, &cancel).await.unwrap();
        assert!(run.passed(), "{}", run.output_tail);
        assert_eq!(run.output_tail.trim(), "plain script");

        let path = hook(dir.path(), "sleep 30\n");
        let started = std::time::Instant::now();
        let run = run_hook(&path, &[], &context, &cancel).await.unwrap();
        assert!(run.timed_out && !run.passed());
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(hook_refusal(&run).contains("(timed out)"));
    }

    #[tokio::test]
    async fn a_missing_signing_program_is_named() {
        let signing = Signing {
            format: SigningFormat::OpenPgp,
            program: "/nonexistent/gpg".to_owned(),
            program_key: "gpg.program",
            key: "ralphd <ralphd@localhost>".to_owned(),
            literal_key: false,
        };
        let error = check_signing(
            &signing,
            Duration::from_millis(100),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(error, "gpg.program \"/nonexistent/gpg\" was not found");
    }
}
