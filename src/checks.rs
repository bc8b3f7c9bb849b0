//! Runs the backtest `checks` (shell commands from `[backtest] checks`) in
//! the repo, each under `check_timeout` in its own process group, and keeps
//! the tail of each one's output for the backtest prompt and the verdict,
//! its whole output (up to [`FULL_OUTPUT_BYTES`]) for `cycles/<n>/checks.md`,
//! and its duration.
//! [`run_one`] runs any such command (`git_rules` runs the git hooks with it).

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::supervise::{self, StopCause, Supervised};

/// How much of a check's output the backtest prompt sees, from the end.
const OUTPUT_TAIL_BYTES: usize = 4 * 1024;

/// How much of a check's output `checks.md` keeps, from the end (a test
/// suite's summary is at its end).
pub(crate) const FULL_OUTPUT_BYTES: usize = 1024 * 1024;

/// The result of one check command.
#[derive(Clone, Debug)]
pub(crate) struct CheckResult {
    pub(crate) command: String,
    pub(crate) exit_code: Option<i32>,
    pub(crate) timed_out: bool,
    /// The last few KiB of stdout and stderr (stderr after stdout).
    pub(crate) output_tail: String,
    /// Stdout then stderr, the last [`FULL_OUTPUT_BYTES`] of each at most.
    pub(crate) output: String,
    /// From its start to its end.
    pub(crate) duration: Duration,
}

impl CheckResult {
    pub(crate) fn passed(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
}

/// Runs every check in order (all of them, even after a failure, so the
/// agent sees the whole picture). Returns `None` when cancelled.
pub(crate) async fn run_all(
    commands: &[String],
    repo: &Path,
    timeout: Duration,
    stop_grace: Duration,
    cancel: &CancellationToken,
) -> Option<Vec<CheckResult>> {
    let mut results = Vec::with_capacity(commands.len());
    for command_line in commands {
        let mut command = Command::new("sh");
        command.arg("-c").arg(command_line).current_dir(repo);
        let result = run_one(command, command_line, timeout, stop_grace, cancel).await?;
        let exit = result
            .exit_code
            .map_or_else(|| "none".to_owned(), |code| code.to_string());
        tracing::info!(check = %result.command, %exit, timed_out = result.timed_out, "check finished");
        results.push(result);
    }
    Some(results)
}

/// Runs one command as a check (no stdin, `timeout`, own process group),
/// keeping the tail of its output; `label` names it in the result. Returns
/// `None` when cancelled. Also runs the repository's git hooks.
pub(crate) async fn run_one(
    mut command: Command,
    label: &str,
    timeout: Duration,
    stop_grace: Duration,
    cancel: &CancellationToken,
) -> Option<CheckResult> {
    command.env_remove("NOTIFY_SOCKET");
    let started = std::time::Instant::now();
    let mut stdout_tail = String::new();
    let mut stdout_full = String::new();
    let spec = Supervised {
        command,
        stdin: None,
        transcript: None,
        wall_timeout: timeout,
        idle_timeout: None,
        stop_grace,
    };
    let finished = supervise::run(spec, cancel, |line| {
        stdout_tail.push_str(line);
        stdout_tail.push('\n');
        if stdout_tail.len() > 2 * OUTPUT_TAIL_BYTES {
            stdout_tail = crate::text::tail_bytes(&stdout_tail, OUTPUT_TAIL_BYTES).to_owned();
        }
        stdout_full.push_str(line);
        stdout_full.push('\n');
        if stdout_full.len() > 2 * FULL_OUTPUT_BYTES {
            stdout_full = crate::text::tail_bytes(&stdout_full, FULL_OUTPUT_BYTES).to_owned();
        }
    })
    .await;
    Some(match finished {
        Ok(finished) => {
            if finished.stopped == Some(StopCause::Cancelled) {
                return None;
            }
            let combined = format!("{stdout_tail}{}", finished.stderr_tail);
            let timed_out = finished.stopped.is_some();
            CheckResult {
                command: label.to_owned(),
                exit_code: Some(finished.exit_code()),
                timed_out,
                output_tail: crate::text::tail_bytes(&combined, OUTPUT_TAIL_BYTES).to_owned(),
                output: format!(
                    "{}{}",
                    crate::text::tail_bytes(&stdout_full, FULL_OUTPUT_BYTES),
                    finished.stderr_tail
                ),
                duration: started.elapsed(),
            }
        }
        Err(error) => CheckResult {
            command: label.to_owned(),
            exit_code: None,
            timed_out: false,
            output_tail: format!("ralphd could not start it: {error}"),
            output: format!("ralphd could not start it: {error}"),
            duration: started.elapsed(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_check_runs_and_failures_are_reported_with_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("marker"), "present").unwrap();
        let commands = vec![
            "cat marker".to_owned(),
            "echo broken >&2; exit 4".to_owned(),
            "sleep 5".to_owned(),
        ];
        let results = run_all(
            &commands,
            dir.path(),
            Duration::from_millis(300),
            Duration::from_millis(100),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(results[0].passed());
        assert_eq!(results[0].output_tail.trim(), "present");
        assert_eq!(results[1].exit_code, Some(4));
        assert_eq!(results[1].output_tail.trim(), "broken");
        assert!(results[2].timed_out && !results[2].passed());
    }
}
