//! ralphd improves a git repository unattended by running the Claude Code CLI
//! through scan → idea → code-edit → backtest → report cycles.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod phase;

/// Runs the command line and returns the process exit code.
pub fn run<I, T>(_args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    std::process::ExitCode::SUCCESS
}
