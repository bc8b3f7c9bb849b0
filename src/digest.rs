//! The morning digest (docs/design.md §12): what a run (or a time span, or a
//! range of cycles) did, in one page — why it stopped, time spent working
//! and waiting (by reason), cycles by outcome, each commit, each saved
//! attempt with why it was rejected and the `git` command to look at it,
//! cost and tokens, learnings.
//!
//! [`build`] is a pure function of what the home recorded ([`Sources`]: the
//! cycle records of progress.json, status.json, the event log) and of the
//! time it is asked at. `digest/event_log.rs` reads the event log's lines and
//! adds up the waits, `digest/markdown.rs` renders the page people read,
//! `digest/home.rs` reads a home and writes `state/digests/`. The JSON form
//! is [`Digest`] serialised as is; its field names are a promise to scripts
//! (README, "The morning digest").

mod event_log;
mod home;
mod markdown;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::record::DiffStat;
use crate::state::{CycleRecord, DaemonState, Outcome, Progress, StatusFile};

pub(crate) use self::event_log::LoggedEvent;
pub(crate) use self::home::{collect, for_run, write};
pub(crate) use self::markdown::render;

/// The version of the digest's JSON; it changes only when a field a script
/// reads changes meaning or goes away.
pub(crate) const VERSION: u32 = 1;

/// How `ralphd report` prints the digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// The Markdown page of [`render`].
    Markdown,
    /// [`Digest`] as pretty JSON.
    Json,
}

/// Which part of the home's history a digest covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Span {
    /// The last run: the cycles that started at or after its start.
    LastRun,
    /// The cycles that started in the last `Duration`.
    Since(Duration),
    /// The cycles numbered `first..=last` (`None`: up to the newest).
    Cycles(CycleRange),
}

/// `--cycles A..B`: cycle numbers, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CycleRange {
    pub(crate) first: u64,
    pub(crate) last: Option<u64>,
}

impl CycleRange {
    /// Parses `A..B`, `A..` (to the newest) or `N` (one cycle), with `A ≤ B`.
    pub(crate) fn parse(text: &str) -> Result<CycleRange, String> {
        const EXPECTED: &str = "expected cycle numbers like 3..17, 3.. or 5";
        let number = |part: &str| -> Result<u64, String> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(format!("{text:?} is not a range of cycles; {EXPECTED}"));
            }
            part.parse::<u64>()
                .map_err(|_| format!("{text:?}: {part} is too large; {EXPECTED}"))
        };
        let range = match text.split_once("..") {
            Some((first, "")) => CycleRange {
                first: number(first)?,
                last: None,
            },
            Some((first, last)) => CycleRange {
                first: number(first)?,
                last: Some(number(last)?),
            },
            None => {
                let only = number(text)?;
                CycleRange {
                    first: only,
                    last: Some(only),
                }
            }
        };
        match range.last {
            Some(last) if last < range.first => Err(format!(
                "{text:?} ends before it starts; write the smaller cycle first, e.g. {last}..{}",
                range.first
            )),
            _ => Ok(range),
        }
    }

    fn contains(self, cycle: u64) -> bool {
        cycle >= self.first && self.last.is_none_or(|last| cycle <= last)
    }
}

/// How a run ended, as the daemon knows it when it stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunStop {
    pub(crate) exit_code: u8,
    /// Why, in words, without the code (`reached --max-iterations`).
    pub(crate) reason: String,
}

/// Everything of the home a digest is built from; read by `home::read_sources`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources {
    /// progress.json; `None` when no cycle was ever recorded.
    pub(crate) progress: Option<Progress>,
    /// Tokens per cycle, from the phase records that carry them.
    pub(crate) tokens: BTreeMap<u64, Tokens>,
    pub(crate) status: Option<StatusFile>,
    /// The event log's lines that could be read, oldest first; `None` when
    /// the home has no event log (waits are then unknown, not zero).
    pub(crate) events: Option<Vec<LoggedEvent>>,
    /// Whether a daemon holds the home's lock now.
    pub(crate) running: bool,
    /// How the run ended, when the caller is the daemon that just stopped
    /// (it knows before status.json or the event log say so).
    pub(crate) stop: Option<RunStop>,
    /// The start of the last run when the caller knows it (the daemon that
    /// just stopped); else it is read from status.json and the event log.
    pub(crate) run_start: Option<Timestamp>,
}

/// The digest: serialised as is for `--format json`, `state/digests/*.json`
/// and the `daemon_stopped` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Digest {
    pub(crate) version: u32,
    /// RFC 3339: when the digest was made.
    pub(crate) generated_at: String,
    /// The branch of progress.json.
    pub(crate) branch: Option<String>,
    pub(crate) range: RangeFacts,
    pub(crate) run: RunFacts,
    pub(crate) time: TimeFacts,
    pub(crate) cycles: CycleCounts,
    pub(crate) commits: Vec<CommitFacts>,
    pub(crate) attempts: Vec<AttemptFacts>,
    /// Cycles that failed or were interrupted and saved no attempt.
    pub(crate) failures: Vec<FailureFacts>,
    pub(crate) cost: CostFacts,
    pub(crate) learnings: Vec<Learning>,
}

/// What the digest covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RangeFacts {
    /// `last_run`, `since` or `cycles`.
    pub(crate) kind: String,
    /// In words: `the last run`, `the last 12h`, `cycles 3..17`.
    pub(crate) words: String,
    /// RFC 3339; `None` when it is not known (no run recorded).
    pub(crate) from: Option<String>,
    /// RFC 3339.
    pub(crate) to: Option<String>,
    pub(crate) first_cycle: Option<u64>,
    pub(crate) last_cycle: Option<u64>,
}

/// The run the range ends in, and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunFacts {
    /// `stopped` (exit code and reason known), `running`, `died` (no exit
    /// was recorded and no daemon runs: killed, crashed, machine down) or
    /// `unknown` (nothing recorded about the run).
    pub(crate) state: String,
    /// RFC 3339.
    pub(crate) started_at: Option<String>,
    /// RFC 3339: the stop, or the last sign of life of a daemon that died.
    pub(crate) stopped_at: Option<String>,
    pub(crate) exit_code: Option<u8>,
    pub(crate) reason: Option<String>,
}

/// Where the time went, in whole seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TimeFacts {
    /// From the range's start to its end.
    pub(crate) span_seconds: u64,
    /// Time inside cycles, less the waits inside them (waits known) or
    /// including them (waits unknown).
    pub(crate) working_seconds: u64,
    /// `None` when the home has no event log: unknown, not zero.
    pub(crate) waiting_seconds: Option<u64>,
    /// By reason (`limiter`, `usage_limit`, `breaker`, `backoff`, `sleep`,
    /// `paused`); `None` when unknown.
    pub(crate) waiting_by_reason: Option<BTreeMap<String, u64>>,
}

/// How many cycles, and how they ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CycleCounts {
    pub(crate) total: usize,
    /// Outcome (`committed`, `rolled_back`, …) → count; outcomes that did
    /// not happen are left out.
    pub(crate) by_outcome: BTreeMap<String, usize>,
}

/// One commit that landed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CommitFacts {
    pub(crate) cycle: u64,
    pub(crate) title: Option<String>,
    /// The full sha.
    pub(crate) commit: String,
    pub(crate) short_sha: String,
    pub(crate) diff: Option<DiffStat>,
    /// The diff in words (`2 files changed, 10 insertions(+), 3 deletions(-)`).
    pub(crate) diff_stat: Option<String>,
    /// The command to look at it.
    pub(crate) look: String,
}

/// One saved attempt: work that was tried, not kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AttemptFacts {
    pub(crate) cycle: u64,
    pub(crate) title: Option<String>,
    pub(crate) outcome: Outcome,
    #[serde(rename = "ref")]
    pub(crate) reference: String,
    /// Why it was rejected (the record's reason).
    pub(crate) reason: String,
    /// `checks`, `agent`, `gate` or `hook`; `None` when no verdict was reached.
    pub(crate) decided_by: Option<String>,
    pub(crate) diff_stat: Option<String>,
    /// The command to look at it.
    pub(crate) look: String,
}

/// A cycle that failed without saving an attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct FailureFacts {
    pub(crate) cycle: u64,
    pub(crate) title: Option<String>,
    pub(crate) outcome: Outcome,
    pub(crate) reason: String,
}

/// What the range cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CostFacts {
    pub(crate) usd: f64,
    /// `None` when no phase record of the range carries token counts.
    pub(crate) tokens: Option<Tokens>,
}

/// Token counts of phase runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tokens {
    pub(crate) input: u64,
    pub(crate) output: u64,
}

/// One learning the report agent wrote down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Learning {
    pub(crate) cycle: u64,
    pub(crate) text: String,
}

/// Builds the digest of `span` from what the home recorded, as of `now`.
pub(crate) fn build(sources: &Sources, span: Span, now: Timestamp) -> Digest {
    let empty = Vec::new();
    let all_cycles = sources.progress.as_ref().map_or(&empty, |p| &p.cycles);
    let events = sources.events.as_deref();
    let run_start = last_run_start(sources);

    let (from, cycles): (Option<Timestamp>, Vec<&CycleRecord>) = match span {
        Span::LastRun => {
            // The event log numbers the run's cycles, when it holds the
            // run's start; else the records' start times (whole seconds)
            // decide.
            let first_of_run = events.and_then(|events| {
                let start = events
                    .iter()
                    .rposition(|event| event.kind == "daemon_started")?;
                if !run_start.is_some_and(|run_start| same_run(events[start].at, run_start)) {
                    return None;
                }
                Some(
                    events[start..]
                        .iter()
                        .filter(|event| event.kind == "cycle_started")
                        .find_map(|event| event.cycle)
                        .unwrap_or(u64::MAX),
                )
            });
            (
                run_start,
                all_cycles
                    .iter()
                    .filter(|record| match (first_of_run, run_start) {
                        (Some(first), _) => record.cycle >= first,
                        (None, Some(start)) => {
                            parse_time(&record.started_at).is_some_and(|started| started >= start)
                        }
                        (None, None) => true,
                    })
                    .collect(),
            )
        }
        Span::Since(length) => {
            let from = jiff::SignedDuration::try_from(length)
                .ok()
                .and_then(|length| now.checked_sub(length).ok())
                .unwrap_or(Timestamp::MIN);
            (
                Some(from),
                all_cycles
                    .iter()
                    .filter(|record| parse_time(&record.started_at).is_some_and(|at| at >= from))
                    .collect(),
            )
        }
        Span::Cycles(range) => {
            let cycles: Vec<&CycleRecord> = all_cycles
                .iter()
                .filter(|record| range.contains(record.cycle))
                .collect();
            let from = cycles
                .iter()
                .filter_map(|record| parse_time(&record.started_at))
                .min();
            (from, cycles)
        }
    };

    let cycles_end = cycles
        .iter()
        .filter_map(|record| parse_time(&record.ended_at))
        .max();
    let run = run_facts(sources, span, cycles_end.unwrap_or(now), now);
    let to = match span {
        Span::Cycles(_) => cycles_end,
        Span::LastRun => run.stopped_at.as_deref().and_then(parse_time).or(Some(now)),
        Span::Since(_) => Some(now),
    };

    let waits = events.map(|events| event_log::waits(events, from, to.unwrap_or(now)));
    let time = time_facts(&cycles, waits.as_ref(), from, to);

    let branch = sources
        .progress
        .as_ref()
        .map(|progress| progress.branch.clone());
    let branch_name = branch.as_deref().unwrap_or("HEAD");
    let mut counts = BTreeMap::new();
    let mut commits = Vec::new();
    let mut attempts = Vec::new();
    let mut failures = Vec::new();
    let mut learnings = Vec::new();
    let mut usd = 0.0;
    let mut tokens: Option<Tokens> = None;
    for record in &cycles {
        *counts.entry(record.outcome.name().to_owned()).or_insert(0) += 1;
        usd += record.cost_usd;
        if let Some(cycle_tokens) = sources.tokens.get(&record.cycle) {
            let sum = tokens.get_or_insert_with(Tokens::default);
            sum.input = sum.input.saturating_add(cycle_tokens.input);
            sum.output = sum.output.saturating_add(cycle_tokens.output);
        }
        let reason = || {
            record
                .reason
                .clone()
                .or_else(|| record.error.clone())
                .unwrap_or_else(|| "no reason recorded".to_owned())
        };
        if let Some(commit) = &record.commit {
            commits.push(CommitFacts {
                cycle: record.cycle,
                title: record.title.clone(),
                commit: commit.clone(),
                short_sha: commit.get(..7).unwrap_or(commit).to_owned(),
                diff: record.diff,
                diff_stat: record.diff.map(|diff| diff.to_string()),
                look: crate::cycle_page::look_at_commit(commit),
            });
        }
        if let Some(reference) = &record.attempt_ref {
            attempts.push(AttemptFacts {
                cycle: record.cycle,
                title: record.title.clone(),
                outcome: record.outcome,
                reference: reference.clone(),
                reason: reason(),
                decided_by: record
                    .verdict
                    .as_ref()
                    .map(|verdict| verdict.decided_by.name().to_owned()),
                diff_stat: record.diff.map(|diff| diff.to_string()),
                look: crate::cycle_page::look_at_attempt(branch_name, reference),
            });
        } else if matches!(record.outcome, Outcome::Failed | Outcome::Interrupted) {
            failures.push(FailureFacts {
                cycle: record.cycle,
                title: record.title.clone(),
                outcome: record.outcome,
                reason: reason(),
            });
        }
        learnings.extend(record.learnings.iter().map(|text| Learning {
            cycle: record.cycle,
            text: text.clone(),
        }));
    }

    Digest {
        version: VERSION,
        generated_at: rfc3339(now),
        branch,
        range: RangeFacts {
            kind: match span {
                Span::LastRun => "last_run",
                Span::Since(_) => "since",
                Span::Cycles(_) => "cycles",
            }
            .to_owned(),
            words: span_words(span),
            from: from.map(rfc3339),
            to: to.map(rfc3339),
            first_cycle: cycles.iter().map(|record| record.cycle).min(),
            last_cycle: cycles.iter().map(|record| record.cycle).max(),
        },
        run,
        time,
        cycles: CycleCounts {
            total: cycles.len(),
            by_outcome: counts,
        },
        commits,
        attempts,
        failures,
        // Whole micro-dollars: a sum of floats is not printed as 0.11000000000000001.
        cost: CostFacts {
            usd: (usd * 1e6).round() / 1e6,
            tokens,
        },
        learnings,
    }
}

/// The start of the last run: the caller's, else status.json's
/// `started_at` or the last `daemon_started` event, whichever is later.
fn last_run_start(sources: &Sources) -> Option<Timestamp> {
    if sources.run_start.is_some() {
        return sources.run_start;
    }
    let from_status = sources
        .status
        .as_ref()
        .and_then(|status| parse_time(&status.started_at));
    let from_events = sources.events.as_deref().and_then(|events| {
        events
            .iter()
            .rev()
            .find(|event| event.kind == "daemon_started")
            // Records keep whole seconds (rounded): so must the start they
            // are compared with.
            .map(|event| event.at.round(jiff::Unit::Second).unwrap_or(event.at))
    });
    from_status.max(from_events)
}

/// How the run the range ends in ended: the caller's stop, else the
/// `daemon_stopped` event that follows the run's `daemon_started`, else
/// status.json's `exit` when status.json is that run's.
fn run_facts(sources: &Sources, span: Span, range_end: Timestamp, now: Timestamp) -> RunFacts {
    let status = sources.status.as_ref();
    let status_start = status.and_then(|status| parse_time(&status.started_at));
    let run_start = match span {
        Span::LastRun | Span::Since(_) => last_run_start(sources),
        // The run the range ends in.
        Span::Cycles(_) => sources
            .events
            .as_deref()
            .and_then(|events| {
                events
                    .iter()
                    .filter(|event| event.kind == "daemon_started" && event.at <= range_end)
                    .map(|event| event.at)
                    .next_back()
            })
            .or(status_start.filter(|start| *start <= range_end)),
    };
    let started_at = run_start.map(rfc3339);
    if let Some(stop) = &sources.stop {
        return RunFacts {
            state: "stopped".to_owned(),
            started_at,
            stopped_at: Some(rfc3339(now)),
            exit_code: Some(stop.exit_code),
            reason: Some(stop.reason.clone()),
        };
    }
    let unknown = |started_at| RunFacts {
        state: "unknown".to_owned(),
        started_at,
        stopped_at: None,
        exit_code: None,
        reason: None,
    };
    let Some(start) = run_start else {
        return unknown(started_at);
    };
    // The event log: the first stop after the run's start, unless the next
    // run started first (this one then died without a word).
    if let Some(events) = sources.events.as_deref() {
        let after = events.iter().filter(|event| event.at > start);
        for event in after {
            match event.kind.as_str() {
                "daemon_stopped" => {
                    return RunFacts {
                        state: "stopped".to_owned(),
                        started_at,
                        stopped_at: Some(rfc3339(event.at)),
                        exit_code: event.exit_code,
                        reason: event.reason.clone(),
                    };
                }
                "daemon_started" if !same_run(event.at, start) => {
                    return RunFacts {
                        state: "died".to_owned(),
                        started_at,
                        stopped_at: None,
                        exit_code: None,
                        reason: Some(format!(
                            "the daemon ended without recording why (killed, crashed, or the machine went down); the next run started at {}",
                            rfc3339(event.at)
                        )),
                    };
                }
                _ => {}
            }
        }
    }
    // status.json speaks of the latest run only.
    let status =
        status.filter(|_| status_start.is_some_and(|status_start| same_run(status_start, start)));
    let Some(status) = status else {
        return unknown(started_at);
    };
    match (&status.exit, status.state) {
        (Some(exit), _) => {
            let (exit_code, reason) = split_exit(exit);
            RunFacts {
                state: "stopped".to_owned(),
                started_at,
                stopped_at: Some(status.heartbeat_at.clone()),
                exit_code,
                reason: Some(reason),
            }
        }
        (None, _) if sources.running => RunFacts {
            state: "running".to_owned(),
            started_at,
            stopped_at: None,
            exit_code: None,
            reason: None,
        },
        (None, state) => RunFacts {
            state: "died".to_owned(),
            started_at,
            stopped_at: Some(status.heartbeat_at.clone()),
            exit_code: None,
            reason: Some(format!(
                "the daemon ended without recording why while {} (killed, crashed, or the machine went down); its last sign of life was {}",
                match state {
                    DaemonState::Starting => "starting",
                    DaemonState::Waiting => "waiting",
                    _ => "running",
                },
                status.heartbeat_at
            )),
        },
    }
}

/// Whether two start times are the same run's: status.json's `started_at`
/// is rounded to the second, the `daemon_started` event's is not, and they
/// are taken a moment apart.
fn same_run(a: Timestamp, b: Timestamp) -> bool {
    a.duration_since(b).abs() <= jiff::SignedDuration::from_secs(2)
}

/// status.json's `exit` (`reached --max-iterations (exit 1)`, `stopped by
/// an error (exit 2): …`) as its code and the words without the code.
fn split_exit(exit: &str) -> (Option<u8>, String) {
    let Some(open) = exit.find(" (exit ") else {
        return (None, exit.to_owned());
    };
    let rest = &exit[open + " (exit ".len()..];
    let Some(close) = rest.find(')') else {
        return (None, exit.to_owned());
    };
    let code = rest[..close].parse::<u8>().ok();
    let words = format!("{}{}", &exit[..open], &rest[close + 1..]);
    (code, words)
}

/// Working time: each cycle's duration less the waits inside it.
fn time_facts(
    cycles: &[&CycleRecord],
    waits: Option<&event_log::Waits>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> TimeFacts {
    let span_seconds = match (from, to) {
        (Some(from), Some(to)) if to > from => whole_seconds(to.duration_since(from)),
        _ => 0,
    };
    let mut working = 0u64;
    for record in cycles {
        let length = record.duration_seconds.max(0.0).round() as u64;
        let inside = match (
            waits,
            parse_time(&record.started_at),
            parse_time(&record.ended_at),
        ) {
            (Some(waits), Some(start), Some(end)) => waits.seconds_within(start, end),
            _ => 0,
        };
        working = working.saturating_add(length.saturating_sub(inside));
    }
    TimeFacts {
        span_seconds,
        working_seconds: working,
        waiting_seconds: waits.map(|waits| {
            waits
                .by_reason
                .values()
                .fold(0u64, |sum, seconds| sum.saturating_add(*seconds))
        }),
        waiting_by_reason: waits.map(|waits| waits.by_reason.clone()),
    }
}

fn span_words(span: Span) -> String {
    match span {
        Span::LastRun => "the last run".to_owned(),
        Span::Since(length) => format!("the last {}", humantime::format_duration(length)),
        Span::Cycles(CycleRange { first, last: None }) => format!("cycles {first}.."),
        Span::Cycles(CycleRange {
            first,
            last: Some(last),
        }) if first == last => format!("cycle {first}"),
        Span::Cycles(CycleRange {
            first,
            last: Some(last),
        }) => format!("cycles {first}..{last}"),
    }
}

pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

fn rfc3339(time: Timestamp) -> String {
    time.round(jiff::Unit::Second).unwrap_or(time).to_string()
}

fn whole_seconds(duration: jiff::SignedDuration) -> u64 {
    u64::try_from(duration.as_secs()).unwrap_or(0)
}
