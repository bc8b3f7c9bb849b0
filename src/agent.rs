//! The seam between the daemon and the agent: one phase run in, one
//! [`PhaseRun`] out. Two implementations: the real `claude` CLI
//! (`agent/claude.rs`, supervised by `supervise.rs`) and the built-in offline
//! agent (`agent/offline.rs`). Both produce stream-json, which goes through
//! the same parser (`agent/stream.rs`), transcript and classification
//! (`agent/classify.rs`).
//!
//! Knows nothing of git, state files, the limiter or the breaker.

pub(crate) mod classify;
pub(crate) mod claude;
pub(crate) mod offline;
pub(crate) mod stream;
pub(crate) mod usage_limit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::config::{AgentKind, Config};
use crate::events::{EventKind, Events};
use crate::phase::Phase;
use crate::supervise::{self, StopCause, Supervised, TranscriptSpec};

use classify::{PhaseFailure, PhaseVerdict, ProcessEnd, TimeoutKind};
use stream::{Event, ParseError, StreamSummary};

/// One phase run to perform.
pub(crate) struct PhaseRequest<'a> {
    pub(crate) phase: Phase,
    pub(crate) cycle: u64,
    pub(crate) prompt: String,
    /// `state/cycles/<n>/<phase>.jsonl`: the stream is appended here, each
    /// line redacted, at most `[state] max_transcript_mb` per run.
    pub(crate) transcript: PathBuf,
    pub(crate) cancel: &'a CancellationToken,
    /// Where the agent's text blocks and tool calls are published.
    pub(crate) events: &'a Events,
}

/// How one phase run ended: either its output or why it failed, never both
/// and never neither.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PhaseOutcome {
    /// A result line with `is_error: false` arrived.
    Succeeded {
        /// The `result` text: the phase's output.
        result_text: String,
    },
    /// Anything else.
    Failed {
        /// What went wrong, in the terms the daemon branches on (wait, retry,
        /// stop, or count a failed phase).
        failure: PhaseFailure,
        /// The one-line description recorded as the phase's and the cycle's
        /// error (the failure's own wording unless the daemon gave a cause).
        message: String,
    },
}

impl PhaseOutcome {
    /// A failure described in its own words.
    pub(crate) fn failed(failure: PhaseFailure) -> PhaseOutcome {
        PhaseOutcome::Failed {
            message: failure.to_string(),
            failure,
        }
    }

    /// A phase that could not run or finish for a reason outside the agent
    /// (the command could not start, the disk is full): `message` says why.
    pub(crate) fn could_not_run(message: String) -> PhaseOutcome {
        PhaseOutcome::Failed {
            failure: PhaseFailure::ExecutionError {
                detail: message.clone(),
            },
            message,
        }
    }
}

/// What one phase run produced.
#[derive(Debug)]
pub(crate) struct PhaseRun {
    pub(crate) outcome: PhaseOutcome,
    pub(crate) session_id: Option<String>,
    pub(crate) cost_usd: f64,
    /// Tokens used, from the result line (all attempts, once the daemon
    /// has retried).
    pub(crate) tokens: stream::TokenUsage,
    pub(crate) turns: u64,
    pub(crate) permission_denials: Vec<String>,
    pub(crate) duration: Duration,
    /// How many times the phase was started (set by the daemon's retries).
    pub(crate) attempts: u32,
    pub(crate) cancelled: bool,
}

impl PhaseRun {
    fn from_summary(
        summary: StreamSummary,
        verdict: PhaseVerdict,
        duration: Duration,
        cancelled: bool,
    ) -> PhaseRun {
        let outcome = match verdict {
            PhaseVerdict::Success { result_text, .. } => PhaseOutcome::Succeeded { result_text },
            PhaseVerdict::Failed(failure) => PhaseOutcome::failed(failure),
        };
        PhaseRun {
            outcome,
            session_id: summary.session_id.clone(),
            cost_usd: summary.cost_usd(),
            tokens: summary.tokens(),
            turns: u64::from(summary.turns().unwrap_or(0)),
            permission_denials: summary.permission_denials().to_vec(),
            duration,
            attempts: 1,
            cancelled,
        }
    }
}

/// Feeds one stdout line to the summary, logs what deserves it and
/// publishes the agent's text and tool calls as events.
fn observe_line(
    summary: &mut StreamSummary,
    line: &str,
    (cycle, phase): (u64, Phase),
    events: &Events,
) {
    let event = match stream::parse_line(line) {
        Ok(event) => event,
        Err(ParseError::Blank) => return,
        Err(error) => {
            tracing::warn!(%phase, %error, "skipping a line that is not stream-json");
            return;
        }
    };
    match &event {
        Event::Init { session_id, model } => {
            tracing::info!(%phase, session_id = session_id.as_deref().unwrap_or("-"), model = model.as_deref().unwrap_or("-"), "agent session started");
        }
        Event::ApiRetry {
            attempt,
            error_status,
            error,
        } => {
            let status = error_status.map_or_else(|| "-".to_owned(), |status| status.to_string());
            tracing::warn!(%phase, attempt, %status, error = error.as_deref().unwrap_or("-"), "the CLI is retrying an API error");
        }
        Event::ModelFallback {
            original_model,
            fallback_model,
        } => {
            tracing::warn!(%phase, from = original_model.as_deref().unwrap_or("-"), to = fallback_model.as_deref().unwrap_or("-"), "the CLI switched to the fallback model");
        }
        Event::RateLimit(info) if info.is_rejected() => {
            let resets_at = info
                .resets_at
                .and_then(|epoch| jiff::Timestamp::from_second(epoch).ok())
                .map_or_else(|| "unknown".to_owned(), |at| at.to_string());
            tracing::warn!(%phase, %resets_at, kind = info.limit_type.as_deref().unwrap_or("-"), "usage limit reported by the CLI");
        }
        Event::Unknown(kind) => {
            tracing::debug!(%phase, event_type = %kind, "ignoring an unknown event type")
        }
        Event::Assistant {
            blocks,
            error: None,
        } if events.is_on() => publish_activity(events, cycle, phase, blocks),
        _ => tracing::trace!(%phase, ?event, "stream event"),
    }
    summary.record(event);
}

/// `agent_text` and `tool_use` events for the blocks of one assistant line.
fn publish_activity(events: &Events, cycle: u64, phase: Phase, blocks: &[stream::ContentBlock]) {
    for block in blocks {
        let kind = match block {
            stream::ContentBlock::Text(head) if !head.is_empty() => EventKind::AgentText {
                cycle,
                phase: phase.name().to_owned(),
                text: head.clone(),
            },
            stream::ContentBlock::ToolUse { name, summary } => EventKind::ToolUse {
                cycle,
                phase: phase.name().to_owned(),
                tool: name.clone(),
                summary: summary.clone(),
            },
            _ => continue,
        };
        events.publish(kind);
    }
}

/// Runs one phase with the configured agent.
pub(crate) async fn run_phase(config: &Config, request: PhaseRequest<'_>) -> Result<PhaseRun> {
    if let Some(dir) = request.transcript.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match config.agent.kind {
        AgentKind::Offline => run_offline(config, &request),
        AgentKind::Claude => run_claude(config, request).await,
    }
}

fn run_offline(config: &Config, request: &PhaseRequest<'_>) -> Result<PhaseRun> {
    let started = std::time::Instant::now();
    let lines = offline::run_phase(
        request.phase,
        request.cycle,
        &config.repo,
        config.agent.offline_complete_after,
    )?;
    let mut transcript = String::new();
    for line in &lines {
        transcript.push_str(&crate::redact::redact(line));
        transcript.push('\n');
    }
    append(&request.transcript, transcript.as_bytes())?;
    let mut summary = StreamSummary::default();
    for line in &lines {
        observe_line(
            &mut summary,
            line,
            (request.cycle, request.phase),
            request.events,
        );
    }
    let end = ProcessEnd {
        exit_code: Some(0),
        signal: None,
        timed_out: None,
        stderr_tail: String::new(),
    };
    let verdict = classify::classify(&summary, &end, jiff::Timestamp::now());
    Ok(PhaseRun::from_summary(
        summary,
        verdict,
        started.elapsed(),
        false,
    ))
}

async fn run_claude(config: &Config, request: PhaseRequest<'_>) -> Result<PhaseRun> {
    let started = std::time::Instant::now();
    let command = claude::command(
        &config.agent,
        config.phases.get(request.phase),
        config.budget.max_cost_per_phase_usd,
        request.phase,
        request.cycle,
        &config.repo,
        &config.home,
    );
    let spec = Supervised {
        command,
        stdin: Some(request.prompt),
        transcript: Some(TranscriptSpec {
            path: request.transcript.clone(),
            max_bytes: config.state.max_transcript_bytes(),
            redact: crate::redact::redact,
        }),
        wall_timeout: config.agent.phase_timeout,
        idle_timeout: Some(config.agent.idle_timeout),
        stop_grace: config.agent.stop_grace,
    };
    let mut summary = StreamSummary::default();
    let phase = request.phase;
    let events = request.events;
    let finished = supervise::run(spec, request.cancel, |line| {
        observe_line(&mut summary, line, (request.cycle, phase), events)
    })
    .await
    .with_context(|| format!("cannot run the agent command `{}`", config.agent.command))?;
    if finished.lines_too_long > 0 {
        tracing::warn!(%phase, count = finished.lines_too_long, limit_bytes = supervise::MAX_LINE_BYTES,
            "skipped over-long stream lines (the transcript notes their length)");
    }
    let (dropped_bytes, dropped_lines) = finished.transcript_dropped;
    if dropped_lines > 0 {
        tracing::warn!(%phase, dropped_bytes, dropped_lines, max_transcript_mb = config.state.max_transcript_mb,
            transcript = %request.transcript.display(), "the transcript reached its cap: the rest of the stream was read but not stored");
    }
    let end = ProcessEnd {
        exit_code: finished.status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&finished.status),
        timed_out: match finished.stopped {
            Some(StopCause::WallTimeout) => Some(TimeoutKind::WallClock),
            Some(StopCause::IdleTimeout) => Some(TimeoutKind::Idle),
            _ => None,
        },
        stderr_tail: crate::redact::redact(&finished.stderr_tail).into_owned(),
    };
    let verdict = classify::classify(&summary, &end, jiff::Timestamp::now());
    let cancelled = finished.stopped == Some(StopCause::Cancelled);
    tracing::info!(%phase, pid = finished.pgid, exit = finished.exit_code(), cost_usd = summary.cost_usd(),
        bytes = finished.stdout_bytes, "agent exited");
    Ok(PhaseRun::from_summary(
        summary,
        verdict,
        started.elapsed(),
        cancelled,
    ))
}

fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
