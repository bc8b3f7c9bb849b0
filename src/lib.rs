//! ralphd improves a git repository unattended: it runs the Claude Code CLI
//! through scan → idea → code-edit → backtest → report cycles, keeps only
//! verified changes, and stops when the agent declares the work complete.
//!
//! This file is the composition root: it parses the command line, builds the
//! configuration, installs logging and signal handling, runs the subcommand
//! and maps the outcome to an exit code (the only place that does).
//! ARCHITECTURE.md has the code map; modules in reading order:
//!
//! - `cli`, `config`, `init`: the command line, `ralph.toml`, `ralphd init`.
//! - `daemon`: the loop, the guards' use, the state of the home, every wait.
//! - `cycle`: the five phases of one cycle and the commit/rollback rule.
//! - `phase`, `prompt`, `blocks`: phase list, prompt rendering, agent text rules.
//! - `agent` (+ `claude`, `offline`, `stream`, `classify`): one phase run.
//! - `supervise`, `checks`, `reaper`: child processes.
//! - `notify`: hooks, webhooks, the heartbeat and `stalled`, fed by the events.
//! - `git`, `watch`, `archive`: the repository and the branch archive.
//! - `limiter`, `breaker`, `backoff`: the pure guards.
//! - `state`, `prd`, `status`, `retention`: files of the home, `ralphd status`,
//!   and which old cycles are compressed or deleted.
//! - `digest`: `ralphd report`, the morning digest, and `state/digests/`.
//! - `tasks`: the task queue in prd.json (`ralphd task`, the MCP tools, the
//!   daemon's `passes` updates), every edit under one lock.
//! - `mcp`: `ralphd mcp`, the MCP server on stdio over the same code.
//! - `events`, `control`, `http`, `terminal`: watching and steering a run —
//!   the event stream, requests to the loop, the HTTP server, `ralphd watch`.
//! - `logging`, `redact`, `service`, `demo`: operations; `redact` masks
//!   secrets in everything logged or saved.
//! - `events`, `metrics`: the event stream watchers see, and the Prometheus
//!   metrics it feeds.
//! - `text`: cutting a text to a size, on character boundaries.
//! - `no_panic` (tests only): no state file content makes a reader panic.

mod agent;
mod archive;
mod backoff;
mod blocks;
mod breaker;
mod checks;
mod cli;
mod config;
mod control;
mod cycle;
mod cycle_page;
mod daemon;
mod demo;
mod digest;
mod events;
mod gates;
mod git;
mod git_rules;
mod http;
mod init;
mod limiter;
mod logging;
mod mcp;
mod metrics;
#[cfg(test)]
mod no_panic;
mod notify;
pub mod phase;
mod prd;
mod prompt;
mod reaper;
mod record;
mod redact;
mod retention;
mod service;
mod state;
mod status;
mod supervise;
mod tasks;
mod terminal;
mod text;
mod watch;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::daemon::{RunExit, Signals};

/// Runs the command line and returns the process exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            // A bad argument is quoted back: redacted, as every error line.
            redact::remember_secret_values();
            eprint!("{}", redact::redact(&error.render().to_string()));
            return ExitCode::from(2);
        }
        Err(help) => {
            // Nothing is left to tell the user if stdout itself is gone.
            let _ = help.print();
            return ExitCode::SUCCESS;
        }
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            // An error may quote what the user typed or a file held: no
            // secret of those reaches the terminal or a service's journal.
            redact::remember_secret_values();
            eprintln!("error: {}", redact::redact(&one_line(&error)));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, as `{:#}` prints them, except that a
/// cause its wrapper already ends with is said once: tracing-appender's
/// "failed to create log file: Is a directory (os error 21)" has that io error
/// as its source too.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => {
            let config = config::Config::load(&args, &config::Env::from_process())?;
            run_daemon(config, false)
        }
        Command::Demo(args) => {
            let dir = demo::scratch_dir(args.dir.as_deref())?;
            let (repo, home) = demo::create_scratch(dir.path())?;
            println!(
                "ralphd demo: offline agent on a scratch repo at {}\n  {}",
                repo.display(),
                dir.announcement()
            );
            let mut config = config::Config::for_home(&home, &repo);
            config.agent.kind = config::AgentKind::Offline;
            config.max_iterations = Some(config.agent.offline_complete_after + 1);
            config.sleep_between_iterations = std::time::Duration::ZERO;
            let code = run_daemon(config, true)?;
            println!("{}", dir.finish(&repo, &home));
            Ok(code)
        }
        Command::Status(args) => {
            let home =
                config::resolve_home(args.home.home.as_deref(), &config::Env::from_process())?;
            let value = status::collect(&home)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", status::render_text(&value));
            }
            Ok(0)
        }
        Command::Report(args) => {
            let home =
                config::resolve_home(args.home.home.as_deref(), &config::Env::from_process())?;
            let digest = digest::collect(&home, args.span())?;
            let text = match args.format {
                digest::Format::Json => serde_json::to_string_pretty(&digest)? + "\n",
                digest::Format::Markdown => digest::render(&digest, &jiff::tz::TimeZone::system()),
            };
            print_to_stdout(&text)?;
            Ok(0)
        }
        Command::Init(args) => {
            for (path, what) in init::init(&args.dir)? {
                println!("{what:<8} {}", path.display());
            }
            println!("\n{}", init::NEXT_STEPS);
            Ok(0)
        }
        Command::Service(args) => {
            let config = config::Config::load(&args.run_args(), &config::Env::from_process())?;
            let kind = args.manager;
            let spec = service::ServiceSpec {
                name: service::service_name(&config.repo),
                binary: std::env::current_exe()?,
                repo: config.repo.clone(),
                home: config.home.clone(),
                stop_grace: config.agent.stop_grace,
                path_env: std::env::var("PATH")
                    .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
            };
            if !args.install {
                print!("{}", service::render(kind, &spec)?);
                return Ok(0);
            }
            let user_home = std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .ok_or_else(|| {
                    anyhow::anyhow!("HOME is not set; cannot find the user's service directory")
                })?;
            let report = service::install(kind, &spec, &user_home)?;
            let what = match report.previous {
                service::Previous::None => "wrote",
                service::Previous::Replaced => "replaced",
                service::Previous::Identical => "unchanged:",
            };
            println!("{what} {}\nnext:", report.path.display());
            for command in report.commands {
                println!("  {command}");
            }
            Ok(0)
        }
        Command::Watch(args) => {
            let home = config::resolve_home(args.home.as_deref(), &config::Env::from_process())?;
            terminal::watch(&home)?;
            Ok(0)
        }
        Command::Pause(args) => ask_daemon(args.home.as_deref(), control::Action::Pause),
        Command::Resume(args) => ask_daemon(args.home.as_deref(), control::Action::Resume),
        Command::Stop(args) if args.now => {
            let home =
                config::resolve_home(args.home.home.as_deref(), &config::Env::from_process())?;
            println!("{}", control::terminate(&home)?);
            Ok(0)
        }
        Command::Stop(args) => ask_daemon(args.home.home.as_deref(), control::Action::Stop),
        Command::Mcp(args) => {
            let home =
                config::resolve_home(args.home.home.as_deref(), &config::Env::from_process())?;
            if let Some(format) = args.print_config {
                let binary = std::env::current_exe()
                    .context("cannot find the path of this ralphd binary")?;
                let config = mcp::client_config(&binary, &home, format);
                println!("{}", serde_json::to_string_pretty(&config)?);
                return Ok(0);
            }
            // Logs go to stderr only: stdout is the protocol.
            let _log_guard = logging::init(logging::LogOptions {
                // rmcp logs every error answer as a WARN; the client has it already.
                level: "warn,rmcp=error".to_owned(),
                verbosity: 0,
                format: logging::LogFormat::Text,
                dir: None,
                max_files: 0,
            })?;
            mcp::serve(home)
        }
        Command::ResetBreaker(args) => {
            let home = config::resolve_home(args.home.as_deref(), &config::Env::from_process())?;
            if state::InstanceLock::is_held(&state::HomePaths::new(&home)) {
                // The running daemon keeps its breaker in memory: ask it.
                return ask_daemon(Some(&home), control::Action::ResetBreaker);
            }
            println!("{}", daemon::reset_breaker(&home)?);
            Ok(0)
        }
        Command::Task(args) => tasks::command::run(args.command),
    }
}

/// Prints `text` to stdout; a reader that went away (`ralphd report | head`)
/// is no error.
fn print_to_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(error).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// `ralphd pause|resume|stop`: sends the request to the home's running
/// daemon and prints its answer.
fn ask_daemon(home: Option<&std::path::Path>, action: control::Action) -> anyhow::Result<u8> {
    let home = config::resolve_home(home, &config::Env::from_process())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("{}", runtime.block_on(control::send(&home, action))?);
    Ok(0)
}

/// Installs logging, the runtime and the signal handlers, then runs the daemon.
fn run_daemon(config: config::Config, demo: bool) -> anyhow::Result<u8> {
    let _log_guard = logging::init(logging::LogOptions {
        level: if demo {
            "info".to_owned()
        } else {
            config.logging.level.clone()
        },
        verbosity: config.verbosity,
        format: config.logging.format,
        dir: Some(config.home.join("logs")),
        max_files: config.logging.max_log_files,
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::watch::channel(0u64);
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let signal_token = shutdown.clone();
        let received = std::sync::Arc::new(std::sync::OnceLock::new());
        let signal_name = received.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                    _ = hangup.recv() => {
                        tracing::info!("SIGHUP: ralph.toml and prompts are reloaded at the next phase boundary");
                        reload_tx.send_modify(|generation| *generation += 1);
                        continue;
                    }
                };
                if signal_token.is_cancelled() {
                    // State is consistent at every await point: leave now, but
                    // take the agent and its tools along (nothing may outlive us).
                    eprintln!("ralphd: second {name}: exiting at once");
                    reaper::kill_descendants(libc::SIGKILL);
                    std::process::exit(130);
                }
                tracing::warn!(signal = name, "stopping: the current phase is stopped and the cycle recorded as interrupted");
                // Only the first stop signal names the interruption.
                let _ = signal_name.set(name);
                signal_token.cancel();
            }
        });
        let exit = daemon::run(config, Signals {
                shutdown,
                reload: reload_rx,
                received,
            }).await;
        Ok::<_, anyhow::Error>(exit)
    })?
    .inspect(|&exit| log_final_line(exit))
    // stderr says it as `error: …` (see `run`); the log file gets it here.
    .inspect_err(|error| tracing::error!(target: logging::FILE_ONLY, "exit 2: {}", one_line(error)))
    .map(RunExit::code)
}

/// The daemon's last log line (docs/design.md §3.4): its exit code and why.
fn log_final_line(exit: RunExit) {
    let why = match exit {
        RunExit::Complete => "the agent declared completion and it was accepted",
        RunExit::MaxIterations => "--max-iterations reached without completion",
        RunExit::Halted => {
            "halted by a guard (budget spent or circuit breaker open); see the line above"
        }
        RunExit::Interrupted => "stopped by SIGINT/SIGTERM; the cycle is recorded as interrupted",
        RunExit::StopRequested => "stopped on request (`ralphd stop` or the page) after the cycle",
    };
    let code = exit.code();
    match exit {
        RunExit::Complete | RunExit::MaxIterations | RunExit::StopRequested => {
            tracing::info!("exit {code}: {why}")
        }
        RunExit::Halted | RunExit::Interrupted => tracing::warn!("exit {code}: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_cause_its_wrapper_already_quotes_is_said_once() {
        let io = std::io::Error::from_raw_os_error(libc::EISDIR);
        #[derive(Debug, thiserror::Error)]
        #[error("failed to create log file: {0}")]
        struct Quoting(#[source] std::io::Error);
        let error = anyhow::Error::new(Quoting(io)).context("cannot open a log file in /h/logs");
        assert_eq!(
            one_line(&error),
            "cannot open a log file in /h/logs: failed to create log file: Is a directory (os error 21)"
        );
        let plain = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT))
            .context("cannot read /h/x");
        assert_eq!(
            one_line(&plain),
            "cannot read /h/x: No such file or directory (os error 2)"
        );
    }
}
