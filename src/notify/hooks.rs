//! Runs one `[[hooks]]` command for one event (docs/design.md §12): argv
//! without a shell, the event's redacted JSON line on stdin, `RALPH_EVENT`,
//! `RALPH_CYCLE`, `RALPH_HOME`, `RALPH_REPO` in its environment, in its own
//! process group beside the loop (`supervise::run_beside`), killed at its
//! timeout and reaped.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::HookSettings;
use crate::events::Published;
use crate::supervise::{self, StopCause, Supervised};

/// How long a hook past its timeout gets between SIGINT, SIGTERM and SIGKILL.
const HOOK_STOP_GRACE: Duration = Duration::from_secs(1);

/// Where the hooks run and what they are told.
pub(crate) struct HookPlace<'a> {
    pub(crate) home: &'a Path,
    pub(crate) repo: &'a Path,
}

/// Runs the hook; `Err` says why it failed, in one line.
pub(crate) async fn run(
    hook: &HookSettings,
    event: &Published,
    place: &HookPlace<'_>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let (program, arguments) = hook
        .command
        .split_first()
        .ok_or_else(|| "the hook has no command".to_owned())?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(arguments)
        .current_dir(place.home)
        .env_remove("NOTIFY_SOCKET")
        .env("RALPH_EVENT", event.event.kind.name())
        .env("RALPH_HOME", place.home)
        .env("RALPH_REPO", place.repo);
    match event.event.kind.cycle() {
        Some(cycle) => command.env("RALPH_CYCLE", cycle.to_string()),
        None => command.env_remove("RALPH_CYCLE"),
    };
    let spec = Supervised {
        command,
        stdin: Some(format!("{}\n", event.json)),
        transcript: None,
        wall_timeout: hook.timeout,
        idle_timeout: None,
        stop_grace: HOOK_STOP_GRACE,
    };
    let finished = supervise::run_beside(spec, cancel, |line| {
        tracing::debug!(hook = %program, output = %crate::redact::redact(line), "hook output");
    })
    .await
    .map_err(|error| format!("cannot start {program}: {error}"))?;
    match finished.stopped {
        Some(StopCause::WallTimeout | StopCause::IdleTimeout) => Err(format!(
            "{program} ran past its timeout of {} and was killed",
            humantime::format_duration(hook.timeout)
        )),
        Some(StopCause::Cancelled) => Err(format!("{program} was stopped")),
        None if finished.status.success() => Ok(()),
        None => Err(format!(
            "{program} exited with {}{}",
            finished.exit_code(),
            match finished.stderr_tail.trim() {
                "" => String::new(),
                tail => format!(
                    ": {}",
                    crate::redact::redact(crate::text::tail_chars(tail, 300))
                ),
            }
        )),
    }
}
