//! Runs one phase through the real `claude` CLI: builds its command line
//! (stream-json, per-phase permissions, model and budget flags), its
//! environment (minus `CLAUDECODE`, plus `RALPH_*`), and hands the process to
//! the supervisor with the prompt on stdin. Also checks at start-up that the
//! CLI runs at all (`claude --version`, supervised the same way).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentSettings, PhaseSettings};
use crate::phase::Phase;
use crate::supervise::{self, Supervised};

/// The install hint printed when the CLI cannot be found.
pub(crate) const INSTALL_HINT: &str = "install it with `npm install -g @anthropic-ai/claude-code` or set [agent] command in ralph.toml";

/// Checks at start-up that the CLI runs (`claude --version`); returns its
/// version. The check is supervised like a phase run (its own process group,
/// killed with the daemon): one that does not answer within `timeout` is
/// stopped with its whole group and is an error.
pub(crate) async fn check_installed(command: &str, timeout: Duration) -> Result<String> {
    let mut version = Command::new(command);
    version
        .arg("--version")
        .env_remove("CLAUDECODE")
        .env_remove("NOTIFY_SOCKET");
    let spec = Supervised {
        command: version,
        stdin: None,
        transcript: None,
        wall_timeout: timeout,
        idle_timeout: None,
        stop_grace: VERSION_STOP_GRACE,
    };
    let mut stdout = String::new();
    let finished = supervise::run(spec, &CancellationToken::new(), |line| {
        if stdout.len() < supervise::TAIL_BYTES {
            stdout.push_str(line);
            stdout.push('\n');
        }
    })
    .await;
    let finished = match finished {
        Ok(finished) => finished,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("the agent command `{command}` was not found; {INSTALL_HINT}")
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot run `{command} --version`"));
        }
    };
    if finished.stopped.is_some() {
        bail!(
            "`{command} --version` did not answer within {} and was stopped; check the installation (run `{command} --version` yourself) or raise [agent] version_timeout",
            humantime::format_duration(timeout)
        );
    }
    if !finished.status.success() {
        bail!(
            "`{command} --version` failed ({}): {}; {INSTALL_HINT}",
            finished.status,
            finished.stderr_tail.trim()
        );
    }
    Ok(stdout.trim().to_owned())
}

/// Pause between SIGINT, SIGTERM and SIGKILL when a hanging version check
/// is stopped: it has no work to save.
const VERSION_STOP_GRACE: Duration = Duration::from_millis(500);

/// The argument list for one phase run (without the program name).
pub(crate) fn arguments(
    agent: &AgentSettings,
    permissions: &PhaseSettings,
    max_cost_per_phase_usd: Option<f64>,
) -> Vec<String> {
    let mut args: Vec<String> = ["-p", "--output-format", "stream-json", "--verbose"]
        .map(str::to_owned)
        .to_vec();
    if let Some(mode) = &permissions.permission_mode {
        args.extend(["--permission-mode".to_owned(), mode.clone()]);
    }
    if !permissions.allowed_tools.is_empty() {
        args.push("--allowedTools".to_owned());
        args.push(permissions.allowed_tools.join(","));
    }
    if !permissions.disallowed_tools.is_empty() {
        args.push("--disallowedTools".to_owned());
        args.push(permissions.disallowed_tools.join(","));
    }
    if let Some(model) = &agent.model {
        args.extend(["--model".to_owned(), model.clone()]);
    }
    if let Some(model) = &agent.fallback_model {
        args.extend(["--fallback-model".to_owned(), model.clone()]);
    }
    if let Some(turns) = agent.max_turns {
        args.extend(["--max-turns".to_owned(), turns.to_string()]);
    }
    if let Some(budget) = max_cost_per_phase_usd {
        args.extend(["--max-budget-usd".to_owned(), format!("{budget}")]);
    }
    args
}

/// Set on every agent process to the home it works for, and inherited by the
/// tools it starts (even those that leave its process group): after a crash,
/// the next daemon of that home finds and stops them by it.
pub(crate) const AGENT_MARKER: &str = "RALPHD_AGENT_OF";

/// The command for one phase run: arguments, cwd and environment.
pub(crate) fn command(
    agent: &AgentSettings,
    permissions: &PhaseSettings,
    max_cost_per_phase_usd: Option<f64>,
    phase: Phase,
    cycle: u64,
    repo: &Path,
    home: &Path,
) -> Command {
    let mut command = Command::new(&agent.command);
    command
        .args(arguments(agent, permissions, max_cost_per_phase_usd))
        .current_dir(repo)
        // The CLI refuses to run nested inside another Claude Code session.
        .env_remove("CLAUDECODE")
        // The systemd socket is ours; a child must not send READY or WATCHDOG.
        .env_remove("NOTIFY_SOCKET")
        .env("RALPH_PHASE", phase.name())
        .env("RALPH_CYCLE", cycle.to_string())
        .env("RALPH_HOME", home)
        .env("RALPH_REPO", repo)
        .env(AGENT_MARKER, home);
    // Keep the CLI's own retries short so that minutes of retrying are not
    // hidden from us; an explicit setting in the environment wins.
    if std::env::var_os("CLAUDE_CODE_MAX_RETRIES").is_none() {
        command.env("CLAUDE_CODE_MAX_RETRIES", agent.cli_max_retries.to_string());
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn read_only_phases_never_get_write_permissions_by_default() {
        let config = Config::for_home(Path::new("/h"), Path::new("/r"));
        let scan = arguments(&config.agent, config.phases.get(Phase::Scan), None);
        assert_eq!(
            scan,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--allowedTools",
                "Read,Grep,Glob"
            ]
        );
        let edit = arguments(&config.agent, config.phases.get(Phase::CodeEdit), Some(2.5));
        assert_eq!(
            edit,
            [
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
                "acceptEdits",
                "--max-budget-usd",
                "2.5"
            ]
        );
        for phase in Phase::ALL {
            let args = arguments(&config.agent, config.phases.get(phase), None);
            assert!(!args.iter().any(|arg| arg.contains("dangerously")));
        }
    }

    #[tokio::test]
    async fn a_missing_cli_gives_the_install_hint() {
        let message = format!(
            "{:#}",
            check_installed("/nonexistent/claude", Duration::from_secs(30))
                .await
                .unwrap_err()
        );
        assert!(
            message.contains("npm install -g @anthropic-ai/claude-code"),
            "{message}"
        );
    }
}
