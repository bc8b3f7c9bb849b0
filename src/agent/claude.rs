//! Runs one phase through the real `claude` CLI: builds its command line
//! (stream-json, per-phase permissions, model and budget flags), its
//! environment (minus `CLAUDECODE`, plus `RALPH_*`), and hands the process to
//! the supervisor with the prompt on stdin.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::config::{AgentSettings, PhaseSettings};
use crate::phase::Phase;

/// The install hint printed when the CLI cannot be found.
pub(crate) const INSTALL_HINT: &str = "install it with `npm install -g @anthropic-ai/claude-code` or set [agent] command in ralph.toml";

/// Checks at start-up that the CLI runs (`claude --version`); returns its version.
pub(crate) async fn check_installed(command: &str) -> Result<String> {
    let output = Command::new(command)
        .arg("--version")
        .stdin(Stdio::null())
        .env_remove("CLAUDECODE")
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(30), output).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("the agent command `{command}` was not found; {INSTALL_HINT}")
        }
        Ok(Err(error)) => {
            return Err(error).with_context(|| format!("cannot run `{command} --version`"));
        }
        Err(_) => bail!("`{command} --version` did not answer within 30s; check the installation"),
    };
    if !output.status.success() {
        bail!(
            "`{command} --version` failed ({}): {}; {INSTALL_HINT}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

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
            check_installed("/nonexistent/claude").await.unwrap_err()
        );
        assert!(
            message.contains("npm install -g @anthropic-ai/claude-code"),
            "{message}"
        );
    }
}
